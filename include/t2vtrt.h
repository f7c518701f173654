/* t2vtrt.h - the stable C ABI of t2v-trt: text -> video over a built target directory.
 *
 * C99, no C++ types. Reference, threading and ownership rules: docs/embedding.md.
 *
 *   t2v_pipeline* p = NULL;
 *   if (t2v_pipeline_open("artifacts/shapes/engines/cpu", NULL, &p) != T2V_OK) { puts(t2v_last_error()); ... }
 *   t2v_generate_params g; t2v_generate_params_init(&g); g.prompt = "a red circle moving left";
 *   t2v_video v;
 *   if (t2v_generate(p, &g, &v) == T2V_OK) { ... v.data: v.frames x v.height x v.width x 3 uint8 ...; t2v_video_free(&v); }
 *   t2v_pipeline_close(p);
 *
 * Every function returns a t2v_status (or a value that cannot fail); on a status other than T2V_OK,
 * t2v_last_error() holds one line naming the problem and the fix (the line the CLI prints after "error: ").
 */
#ifndef T2VTRT_H
#define T2VTRT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(T2VTRT_BUILDING)
#    define T2V_API __declspec(dllexport)
#  else
#    define T2V_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define T2V_API __attribute__((visibility("default")))
#else
#  define T2V_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change of a type or function below; structs grow only at their end and carry
 * struct_size, so a host built against an older header keeps working with a newer library. */
#define T2V_ABI_VERSION 1

/* "Use the manifest's default" for the integer fields of t2v_generate_params. */
#define T2V_DEFAULT (-1)

typedef enum t2v_status {
    T2V_OK = 0,
    T2V_INVALID_ARGUMENT = 1,   /* NULL / garbage pointer, uninitialised struct, empty prompt, unknown sampler or precision */
    T2V_NOT_FOUND = 2,          /* the target directory (its manifest.json) does not exist */
    T2V_CORRUPT_ARTIFACT = 3,   /* manifest invalid / not JSON, a file missing or not matching its hash */
    T2V_OUT_OF_RANGE = 4,       /* steps, frames, height, width, guidance, seed, fps outside what the build takes */
    T2V_CANCELLED = 5,          /* the progress callback returned non-zero */
    T2V_BACKEND_FAILURE = 6,    /* an engine failed to open or run */
    T2V_RUNTIME_UNAVAILABLE = 7,/* the embedded Python runtime (the project's environment) was not found or failed to start */
    T2V_OUT_OF_MEMORY = 8,
    T2V_BUSY = 9,               /* t2v_pipeline_close while calls on that pipeline are still running */
    T2V_INTERNAL = 10           /* a bug: please report it with t2v_last_error() */
} t2v_status;

/* Opaque: one opened target directory with its engines. Thread-safe: many threads may call
 * t2v_generate on one pipeline at once; outputs equal serial calls bit for bit. */
typedef struct t2v_pipeline t2v_pipeline;

typedef struct t2v_open_options {
    uint32_t struct_size;      /* sizeof(t2v_open_options): set by t2v_open_options_init */
    const char* precision;     /* "fp32", "int8", ... NULL = the manifest's default */
    int low_vram;              /* non-zero: load each stage's engine only while it runs */
    int threads;               /* intra-op threads per engine; 0 = the backend's default */
    int verify_hashes;         /* non-zero (default): check every file against the manifest's sha256 */
    const char* python_env;    /* the Python environment (virtualenv) that has t2v-trt installed; NULL = $T2VTRT_PYTHON_ENV,
                                  then <prefix>/share/t2vtrt/venv beside the installed library, then the build's own */
} t2v_open_options;

/* (void* user, int step, int total): called after each denoising step (step = 1..total); return non-zero to cancel.
 * Runs on the thread that called t2v_generate, without the library's locks held. */
typedef int (*t2v_progress_fn)(void* user, int step, int total);

typedef struct t2v_generate_params {
    uint32_t struct_size;        /* sizeof(t2v_generate_params): set by t2v_generate_params_init */
    const char* prompt;          /* UTF-8, required, not blank */
    const char* negative_prompt; /* UTF-8; NULL = "" */
    int steps;                   /* T2V_DEFAULT = the manifest's */
    double guidance;             /* NaN (the init value) = the manifest's; <= 1 turns guidance off */
    int frames;                  /* T2V_DEFAULT = the manifest's */
    int height;                  /* T2V_DEFAULT = the manifest's */
    int width;                   /* T2V_DEFAULT = the manifest's */
    int64_t seed;                /* >= 0; default 0 */
    const char* sampler;         /* "ddim", "dpm++", ...; NULL = the manifest's */
    int fps;                     /* T2V_DEFAULT = the manifest's; only reported back in t2v_video.fps */
    t2v_progress_fn progress;    /* NULL = none */
    void* progress_user;         /* passed to progress as is */
} t2v_generate_params;

typedef struct t2v_timings {
    double total_s;          /* the whole call inside the runtime */
    double loop_s;           /* the sampler loop */
    double text_encoder_s;   /* engine time per component */
    double denoiser_s;
    double vae_decoder_s;
    double call_s;           /* t2v_generate wall time, ABI included: call_s - total_s is the ABI's overhead */
} t2v_timings;

typedef struct t2v_video {
    uint8_t* data;           /* frames x height x width x channels bytes, owned by the library: t2v_video_free */
    size_t size;             /* bytes in data */
    int frames, height, width, channels; /* channels is 3 (RGB) */
    int fps;
    t2v_timings timings;
} t2v_video;

/* T2V_ABI_VERSION of the library actually loaded. */
T2V_API int t2v_abi_version(void);
/* A static string such as "T2V_OUT_OF_RANGE" (never NULL). */
T2V_API const char* t2v_status_name(t2v_status status);
/* This thread's last error line. t2v_pipeline_open / t2v_generate / t2v_pipeline_close clear it when they succeed;
 * the init and free helpers only set it when they fail, so freeing a video after a failed call keeps the line.
 * The pointer is valid until this thread's next call into the library. */
T2V_API const char* t2v_last_error(void);

T2V_API t2v_status t2v_open_options_init(t2v_open_options* options);
/* options may be NULL (all defaults). *out is set to NULL on failure. */
T2V_API t2v_status t2v_pipeline_open(const char* target_dir, const t2v_open_options* options, t2v_pipeline** out);
/* Releases the engines. T2V_BUSY while calls on it are running; a closed or unknown handle is T2V_INVALID_ARGUMENT. */
T2V_API t2v_status t2v_pipeline_close(t2v_pipeline* pipeline);

T2V_API t2v_status t2v_generate_params_init(t2v_generate_params* params);
/* On success *out holds the video; on failure *out is zeroed (t2v_video_free on it is harmless). */
T2V_API t2v_status t2v_generate(t2v_pipeline* pipeline, const t2v_generate_params* params, t2v_video* out);
/* Frees out->data and zeroes *out; freeing twice, or a zeroed video, is harmless. */
T2V_API t2v_status t2v_video_free(t2v_video* video);

#ifdef __cplusplus
}
#endif

#endif /* T2VTRT_H */
