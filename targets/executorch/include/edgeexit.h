/* edgeexit: run an early-exit bundle (ExecuTorch .pte, XNNPACK) from C, Kotlin (JNI) or Swift.
 *
 * A runtime is opened once per bundle; ee_open verifies the bundle first (manifest against its JSON Schema,
 * relative paths only, every listed file's sha256) and loads nothing it has not verified.
 *
 *   ee_runtime* rt = ee_open("/data/bundle");
 *   if (!rt) { fprintf(stderr, "%s\n", ee_last_error()); ... }
 *   ee_run(rt, x, n, predictions, exits, NULL);   // x: n samples, float32 NCHW, normalised as the manifest says
 *   ee_close(rt);
 *
 * A runtime is not thread-safe (it owns the segments' buffers): use one per thread, or serialise calls.
 * Error messages read "what failed | got: ... | expected: ... | hint: ...", like the Python package's errors.
 */
#ifndef EDGEEXIT_H
#define EDGEEXIT_H

#include <stdint.h>

#if defined(_WIN32)
#define EE_API __declspec(dllexport)
#else
#define EE_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ee_runtime ee_runtime;

enum {
  EE_OK = 0,
  EE_ERR_ARGUMENT = 1, /* a NULL pointer, n < 1, an input holding NaN or inf, k out of range */
  EE_ERR_BUNDLE = 2,   /* the bundle is missing, malformed, tampered with or does not match its program */
  EE_ERR_RUNTIME = 3,  /* ExecuTorch failed to load or execute a method */
  EE_ERR_INTERNAL = 4  /* anything else (out of memory, ...) */
};

/* Verifies and opens the bundle directory; NULL on failure (see ee_last_error). */
EE_API ee_runtime* ee_open(const char* bundle_dir);

/* Runs the exit loop on n samples of x (n x C x H x W float32, NCHW). Writes per sample the predicted class
 * (argmax of the answering exit's logits), the exit that answered and, when logits is not NULL, those logits
 * (n x num_classes). Any n >= 1 works: batches larger than the bundle's batch.max run in chunks.
 * Returns EE_OK or an EE_ERR_* code. */
EE_API int ee_run(ee_runtime* rt, const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits);

EE_API int64_t ee_num_classes(const ee_runtime* rt);        /* -1 when rt is NULL */
EE_API int ee_input_shape(const ee_runtime* rt, int64_t chw[3]); /* one sample's C, H, W; EE_OK or an error */
EE_API int ee_num_exits(const ee_runtime* rt);              /* -1 when rt is NULL */
EE_API int64_t ee_max_batch(const ee_runtime* rt);          /* the bundle's batch.max (the chunk size); -1 on NULL */

/* Milliseconds segment k took in the last ee_run (summed over its chunks); -1 when rt is NULL or k out of range. */
EE_API double ee_segment_ms(const ee_runtime* rt, int k);

/* The delegates segment k's method runs on, comma-separated ("XnnpackBackend"; "" when none); NULL on bad k.
 * Valid until ee_close. */
EE_API const char* ee_segment_delegates(const ee_runtime* rt, int k);

/* The message of this thread's last failed ee_open / ee_run / ee_input_shape ("" once one of them succeeds).
 * Valid until this thread's next such call. */
EE_API const char* ee_last_error(void);

EE_API void ee_close(ee_runtime* rt);

#ifdef __cplusplus
}
#endif

#endif /* EDGEEXIT_H */
