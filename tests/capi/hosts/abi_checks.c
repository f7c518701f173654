/* abi_checks.c - every bad input, NULL and garbage argument through the C ABI, plus cancel and open/close loops.
 *
 *   abi_checks TARGET_DIR CORRUPT_DIR LOOPS
 *
 * One line per check: "CHECK <name> <status name> <t2v_last_error()>"; tests/capi/test_capi.py holds the expected
 * statuses. Also "CANCEL ...", "REUSE ..." and "LOOP ..." lines. Exit 0 unless the host itself cannot go on.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "t2vtrt.h"

static void report(const char* name, t2v_status status) {
    printf("CHECK %s %s %s\n", name, t2v_status_name(status), t2v_last_error());
    fflush(stdout);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    int calls;
    int cancel_at;
    double cancelled_at;
} progress_state;

static int on_progress(void* user, int step, int total) {
    progress_state* state = (progress_state*)user;
    (void)total;
    state->calls++;
    if (state->cancel_at > 0 && step >= state->cancel_at) {
        state->cancelled_at = now_s();
        return 1;
    }
    return 0;
}

/* A generation with params changed by `edit`; frees the video. */
static t2v_status try_generate(t2v_pipeline* p, void (*edit)(t2v_generate_params*)) {
    t2v_generate_params params;
    t2v_video video;
    t2v_generate_params_init(&params);
    params.prompt = "a red circle";
    params.steps = 2;
    edit(&params);
    t2v_status status = t2v_generate(p, &params, &video);
    t2v_video_free(&video);
    return status;
}

static void empty_prompt(t2v_generate_params* g) { g->prompt = ""; }
static void blank_prompt(t2v_generate_params* g) { g->prompt = "   "; }
static void null_prompt(t2v_generate_params* g) { g->prompt = NULL; }
static void bad_utf8(t2v_generate_params* g) { g->prompt = "caf\xc3\x28 \xff"; }
static void bad_utf8_negative(t2v_generate_params* g) { g->negative_prompt = "\xfe\xfe"; }
static void steps_zero(t2v_generate_params* g) { g->steps = 0; }
static void steps_negative(t2v_generate_params* g) { g->steps = -7; }
static void steps_huge(t2v_generate_params* g) { g->steps = 100000; }
static void frames_high(t2v_generate_params* g) { g->frames = 999; }
static void frames_zero(t2v_generate_params* g) { g->frames = 0; }
static void height_high(t2v_generate_params* g) { g->height = 4096; }
static void width_low(t2v_generate_params* g) { g->width = 8; }
static void size_not_multiple(t2v_generate_params* g) { g->width = 33; }
static void sampler_unknown(t2v_generate_params* g) { g->sampler = "euler-magic"; }
static void sampler_empty(t2v_generate_params* g) { g->sampler = ""; }
static void guidance_inf(t2v_generate_params* g) { g->guidance = INFINITY; }
static void seed_negative(t2v_generate_params* g) { g->seed = -5; }
static void fps_zero(t2v_generate_params* g) { g->fps = 0; }
static void struct_garbage(t2v_generate_params* g) { g->struct_size = 0xABABABABu; }
static void struct_zero(t2v_generate_params* g) { memset(g, 0, sizeof(*g)); }

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s TARGET_DIR CORRUPT_DIR LOOPS\n", argv[0]);
        return 1;
    }
    const char* target = argv[1];
    const char* corrupt = argv[2];
    int loops = atoi(argv[3]);
    printf("ABI %d %d\n", t2v_abi_version(), T2V_ABI_VERSION);

    /* NULL and garbage arguments before anything is open */
    t2v_pipeline* p = (t2v_pipeline*)0x1;
    t2v_open_options options;
    report("open_null_out", t2v_pipeline_open(target, NULL, NULL));
    report("open_null_dir", t2v_pipeline_open(NULL, NULL, &p));
    printf("OUT_RESET %d\n", p == NULL);
    report("open_empty_dir", t2v_pipeline_open("", NULL, &p));
    report("options_init_null", t2v_open_options_init(NULL));
    report("params_init_null", t2v_generate_params_init(NULL));
    memset(&options, 0xAB, sizeof(options));
    report("open_options_garbage", t2v_pipeline_open(target, &options, &p));
    t2v_open_options_init(&options);
    options.threads = -3;
    report("open_threads_negative", t2v_pipeline_open(target, &options, &p));
    report("close_null", t2v_pipeline_close(NULL));
    int not_a_pipeline = 42;
    report("close_garbage", t2v_pipeline_close((t2v_pipeline*)&not_a_pipeline));
    report("video_free_null", t2v_video_free(NULL));
    t2v_video garbage_video;
    memset(&garbage_video, 0, sizeof(garbage_video));
    garbage_video.data = (uint8_t*)&not_a_pipeline;
    report("video_free_garbage", t2v_video_free(&garbage_video));
    t2v_video zero_video;
    memset(&zero_video, 0, sizeof(zero_video));
    report("video_free_zeroed", t2v_video_free(&zero_video));

    /* targets that cannot open */
    report("open_missing_dir", t2v_pipeline_open("/nonexistent/t2vtrt/engines/cpu", NULL, &p));
    report("open_corrupt_manifest", t2v_pipeline_open(corrupt, NULL, &p));
    t2v_open_options_init(&options);
    options.precision = "fp8-magic";
    report("open_unknown_precision", t2v_pipeline_open(target, &options, &p));
    options.precision = "";
    report("open_empty_precision", t2v_pipeline_open(target, &options, &p));

    t2v_status status = t2v_pipeline_open(target, NULL, &p);
    report("open_ok", status);
    if (status != T2V_OK) return 2;

    /* generate: NULLs and garbage */
    t2v_generate_params params;
    t2v_video video;
    t2v_generate_params_init(&params);
    params.prompt = "a red circle";
    params.steps = 2;
    report("generate_null_pipeline", t2v_generate(NULL, &params, &video));
    report("generate_garbage_pipeline", t2v_generate((t2v_pipeline*)&not_a_pipeline, &params, &video));
    report("generate_null_params", t2v_generate(p, NULL, &video));
    report("generate_null_out", t2v_generate(p, &params, NULL));
    report("generate_params_garbage", try_generate(p, struct_garbage));
    report("generate_params_uninitialised", try_generate(p, struct_zero));

    /* bad request values */
    report("empty_prompt", try_generate(p, empty_prompt));
    report("blank_prompt", try_generate(p, blank_prompt));
    report("null_prompt", try_generate(p, null_prompt));
    report("invalid_utf8_prompt", try_generate(p, bad_utf8));
    report("invalid_utf8_negative", try_generate(p, bad_utf8_negative));
    report("steps_zero", try_generate(p, steps_zero));
    report("steps_negative", try_generate(p, steps_negative));
    report("steps_too_many", try_generate(p, steps_huge));
    report("frames_above_range", try_generate(p, frames_high));
    report("frames_zero", try_generate(p, frames_zero));
    report("height_above_range", try_generate(p, height_high));
    report("width_below_range", try_generate(p, width_low));
    report("width_not_multiple", try_generate(p, size_not_multiple));
    report("sampler_unknown", try_generate(p, sampler_unknown));
    report("sampler_empty", try_generate(p, sampler_empty));
    report("guidance_infinite", try_generate(p, guidance_inf));
    report("seed_negative", try_generate(p, seed_negative));
    report("fps_zero", try_generate(p, fps_zero));

    /* cancel: a reference run, a run cancelled at step 2 of 10, then the reference again on the same pipeline */
    t2v_video reference, again;
    progress_state state = {0, 0, 0.0};
    t2v_generate_params_init(&params);
    params.prompt = "a blue square moving up";
    params.steps = 10;
    params.progress = on_progress;
    params.progress_user = &state;
    report("reference_ok", t2v_generate(p, &params, &reference));
    int reference_calls = state.calls;
    state.calls = 0;
    state.cancel_at = 2;
    status = t2v_generate(p, &params, &video);
    double returned = now_s();
    report("cancelled", status);
    printf("CANCEL calls=%d reference_calls=%d data_null=%d return_ms=%.3f\n", state.calls, reference_calls,
           video.data == NULL, (returned - state.cancelled_at) * 1e3);
    report("video_free_after_cancel", t2v_video_free(&video));
    state.cancel_at = 0;
    report("after_cancel_ok", t2v_generate(p, &params, &again));
    printf("REUSE identical=%d size=%zu\n",
           again.size == reference.size && reference.data && again.data && memcmp(again.data, reference.data, reference.size) == 0,
           reference.size);
    t2v_video copy = again;
    report("video_free_ok", t2v_video_free(&again));
    report("video_free_twice", t2v_video_free(&again));
    report("video_free_stale_copy", t2v_video_free(&copy));
    t2v_video_free(&reference);
    /* a successful call clears this thread's error */
    t2v_generate_params_init(&params);
    params.prompt = "";
    t2v_generate(p, &params, &video);
    params.prompt = "a red circle";
    params.steps = 1;
    t2v_generate(p, &params, &video);
    printf("CLEARED %d\n", t2v_last_error()[0] == '\0');
    t2v_video_free(&video);

    report("close_ok", t2v_pipeline_close(p));
    report("close_twice", t2v_pipeline_close(p));
    report("generate_closed", t2v_generate(p, &params, &video));

    /* open/close in a loop, one generation each (leaks show up under LeakSanitizer) */
    for (int i = 0; i < loops; ++i) {
        t2v_pipeline* q = NULL;
        if (t2v_pipeline_open(target, NULL, &q) != T2V_OK) {
            printf("LOOP failed at %d: %s\n", i, t2v_last_error());
            return 3;
        }
        status = t2v_generate(q, &params, &video);
        t2v_video_free(&video);
        if (status != T2V_OK || t2v_pipeline_close(q) != T2V_OK) {
            printf("LOOP failed at %d: %s\n", i, t2v_last_error());
            return 3;
        }
    }
    printf("LOOP ok %d\n", loops);
    return 0;
}
