/* generate.c - one video through the C ABI, written as raw RGB24 frames.
 *
 *   t2v_generate_example TARGET_DIR PROMPT OUT.rgb [--steps N] [--seed N] [--sampler S] [--precision P]
 *                        [--frames N] [--height N] [--width N] [--guidance G] [--negative TEXT] [--threads N]
 *                        [--cancel-at STEP] [--repeat N]
 *   ffmpeg -f rawvideo -pix_fmt rgb24 -s WxH -r FPS -i OUT.rgb out.mp4
 *
 * Prints "frames height width fps total_s call_s" per generation; on failure the status name and
 * t2v_last_error() on stderr, exit 2 (like the CLI). --repeat N times N generations (the last one is written).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t2vtrt.h"

static int cancel_at = -1;

static int on_progress(void* user, int step, int total) {
    (void)user;
    (void)total;
    return cancel_at > 0 && step >= cancel_at;
}

static int failed(t2v_status status) {
    fprintf(stderr, "%s: %s\n", t2v_status_name(status), t2v_last_error());
    return 2;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s TARGET_DIR PROMPT OUT.rgb [--steps N] [--seed N] [--sampler S] [--precision P] ...\n", argv[0]);
        return 1;
    }
    t2v_open_options options;
    t2v_generate_params params;
    t2v_open_options_init(&options);
    t2v_generate_params_init(&params);
    params.prompt = argv[2];
    int repeat = 1;
    for (int i = 4; i + 1 < argc; i += 2) {
        const char* key = argv[i];
        const char* value = argv[i + 1];
        if (!strcmp(key, "--steps")) params.steps = atoi(value);
        else if (!strcmp(key, "--seed")) params.seed = atoll(value);
        else if (!strcmp(key, "--sampler")) params.sampler = value;
        else if (!strcmp(key, "--precision")) options.precision = value;
        else if (!strcmp(key, "--frames")) params.frames = atoi(value);
        else if (!strcmp(key, "--height")) params.height = atoi(value);
        else if (!strcmp(key, "--width")) params.width = atoi(value);
        else if (!strcmp(key, "--guidance")) params.guidance = atof(value);
        else if (!strcmp(key, "--negative")) params.negative_prompt = value;
        else if (!strcmp(key, "--threads")) options.threads = atoi(value);
        else if (!strcmp(key, "--cancel-at")) cancel_at = atoi(value);
        else if (!strcmp(key, "--repeat")) repeat = atoi(value);
        else {
            fprintf(stderr, "unknown option %s\n", key);
            return 1;
        }
    }
    params.progress = on_progress;
    t2v_pipeline* pipeline = NULL;
    t2v_status status = t2v_pipeline_open(argv[1], &options, &pipeline);
    if (status != T2V_OK) return failed(status);
    t2v_video video = {0};
    for (int r = 0; r < repeat; ++r) {
        t2v_video_free(&video);
        status = t2v_generate(pipeline, &params, &video);
        if (status != T2V_OK) {
            t2v_pipeline_close(pipeline);
            return failed(status);
        }
        printf("%d %d %d %d %.6f %.6f\n", video.frames, video.height, video.width, video.fps, video.timings.total_s,
               video.timings.call_s);
    }
    FILE* file = fopen(argv[3], "wb");
    if (file == NULL || fwrite(video.data, 1, video.size, file) != video.size || fclose(file) != 0) {
        fprintf(stderr, "writing %s failed\n", argv[3]);
        t2v_video_free(&video);
        t2v_pipeline_close(pipeline);
        return 1;
    }
    t2v_video_free(&video);
    status = t2v_pipeline_close(pipeline);
    return status == T2V_OK ? 0 : failed(status);
}
