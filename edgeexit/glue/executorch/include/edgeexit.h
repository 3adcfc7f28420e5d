/* edgeexit: run an early-exit bundle (ExecuTorch .pte, XNNPACK) from C, Kotlin (JNI) or Swift.
 *
 * A runtime is opened once per bundle; ee_open verifies the bundle first, in the Python loader's order (the
 * manifest's checksum, the manifest against the JSON Schema compiled into this library, relative paths only, every
 * listed file's sha256, no unlisted file), and loads nothing it has not verified; programs are loaded with
 * ExecuTorch's InternalConsistency verification.
 *
 *   ee_runtime* rt = ee_open("/data/bundle");
 *   if (!rt) { fprintf(stderr, "%s\n", ee_last_error()); ... }
 *   if (ee_verify(rt, NULL) != EE_OK) { ... }       // the bundle's test vectors through this device's program
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
  EE_ERR_ARGUMENT = 1, /* a NULL pointer, n < 1 or absurdly large, an input holding NaN or inf, k out of range */
  EE_ERR_BUNDLE = 2,   /* the bundle is missing, malformed, tampered with or does not match its program */
  EE_ERR_RUNTIME = 3,  /* ExecuTorch failed to load or execute a method */
  EE_ERR_INTERNAL = 4, /* anything else (out of memory, ...) */
  EE_ERR_VERIFY = 5    /* ee_verify ran and a test vector failed (or a method has none) */
};

/* Verifies and opens the bundle directory; NULL on failure (see ee_last_error). */
EE_API ee_runtime* ee_open(const char* bundle_dir);

/* Runs the exit loop on n samples of x (n x C x H x W float32, NCHW). Writes per sample the predicted class
 * (argmax of the answering exit's logits), the exit that answered and, when logits is not NULL, those logits
 * (n x num_classes). Any n >= 1 works: batches larger than the bundle's batch.max run in chunks.
 * Returns EE_OK or an EE_ERR_* code. */
EE_API int ee_run(ee_runtime* rt, const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits);

/* ee_run with every sample answering at exit k: segments 0..k run, and the exit tests of the earlier exits that
 * have a threshold (no sample leaves there), no test at k: the cost of answering at exit k, as the profile measures
 * it. The Python runtime's forced(k) does the same work. */
EE_API int ee_run_forced(ee_runtime* rt, int k, const float* x, int64_t n, int64_t* predictions, int32_t* exits,
                         float* logits);

EE_API int64_t ee_num_classes(const ee_runtime* rt);        /* -1 when rt is NULL */
EE_API int ee_input_shape(const ee_runtime* rt, int64_t chw[3]); /* one sample's C, H, W; EE_OK or an error */
EE_API int ee_num_exits(const ee_runtime* rt);              /* -1 when rt is NULL */
EE_API int64_t ee_max_batch(const ee_runtime* rt);          /* the bundle's batch.max (the chunk size); -1 on NULL */

/* What an image must become before ee_run (the manifest's `input` and `class_names`; edgeexit/images.py, the
 * Kotlin and the Swift helpers do this): converted to the input's channels (1: grayscale, PIL's "L"; 3: RGB), resized
 * to H x W by ee_input_resize's method, scaled to [0, 1] (value / 255), then (x - mean[c]) / std[c], NCHW. */
EE_API const char* ee_input_resize(const ee_runtime* rt);  /* "bilinear" | "bilinear_antialias"; NULL on NULL */
/* Copies the C per-channel means and standard deviations into mean and std; EE_OK or EE_ERR_ARGUMENT. */
EE_API int ee_input_normalisation(const ee_runtime* rt, float* mean, float* std);
/* Class k's name (UTF-8), what prediction k means; NULL when rt is NULL or k is out of range. Valid until ee_close. */
EE_API const char* ee_class_name(const ee_runtime* rt, int64_t k);

/* Milliseconds segment k took in the last ee_run (summed over its chunks); -1 when rt is NULL or k out of range. */
EE_API double ee_segment_ms(const ee_runtime* rt, int k);

/* The delegates segment k's method runs on, comma-separated ("XnnpackBackend"; "" when none); NULL on bad k.
 * Valid until ee_close. */
EE_API const char* ee_segment_delegates(const ee_runtime* rt, int k);

/* Self-verification, before use: runs every test case of the bundle's BundledProgram (pte/program.bpte: one
 * MethodTestSuite per method, made at export) through the methods of the program this runtime runs
 * (pte/program.pte, same names), and compares each output element with the tolerance of the bundle's precision:
 * |got - want| <= tol * (1 + |want|), tol = 1e-4 for fp32 and 0.1 for int8 (what the export checked with).
 * Every exit's segment and the reference must have test vectors. bpte_path NULL: the bundle's own file (its
 * sha256 was checked by ee_open); otherwise that file. Returns EE_OK when every method passed, EE_ERR_VERIFY when
 * one failed (ee_last_error names the first; the per-method results say more), another EE_ERR_* when the vectors
 * cannot be read. */
EE_API int ee_verify(ee_runtime* rt, const char* bpte_path);

/* One method's result of the last ee_verify. Strings are valid until the next ee_verify or ee_close. */
typedef struct ee_method_check {
  const char* method;
  int32_t cases;        /* test cases run */
  int32_t passed;       /* 1: every case ran and every element is within the tolerance */
  double max_abs_error; /* max |got - want| */
  double max_error;     /* max |got - want| / (1 + |want|), what the tolerance bounds (NaN when an output is NaN) */
  const char* detail;   /* why it failed ("" when passed) */
} ee_method_check;

EE_API int ee_verify_count(const ee_runtime* rt);  /* methods in the last ee_verify (0 before one); -1 on NULL */
EE_API int ee_verify_result(const ee_runtime* rt, int i, ee_method_check* out);  /* EE_OK or EE_ERR_ARGUMENT */
EE_API double ee_verify_tolerance(const ee_runtime* rt);  /* the tolerance of the last ee_verify; -1 before/NULL */

/* On-device profile (the JSON "edgeexit-device-profile/1" the host's `edgeexit profile --device` reads): for each
 * batch size (NULL / 0: 1 and batch.max), `rounds` figures per entry, each the median of `calls` back-to-back
 * calls after 20 ms of untimed calls of the same entry ("prime_ms", as edgeexit.timing.PRIME_MS), entries
 * alternating with the order rotated every round, after `warmup` calls of each. Entries: full and
 * full_repeat (the reference method twice: their ratio is the measurement's noise), exitK (the exit loop forced to
 * answer at exit K), segmentK (on its real input), headK and staticK (when the manifest names those methods).
 * Images are random normal (seeded). "executed" lists per entry what one call ran ("full", "segmentK", "testK",
 * "headK", "staticK"), as the Python device runner lists it. Returns the JSON text, valid until the next ee_profile or ee_close; NULL on
 * failure (see ee_last_error). */
EE_API const char* ee_profile(ee_runtime* rt, const int64_t* batches, int num_batches, int rounds, int calls,
                              int warmup, uint64_t seed);

/* The message of this thread's last failed ee_open / ee_run(_forced) / ee_input_shape / ee_verify / ee_profile
 * ("" once one of them succeeds). Valid until this thread's next such call. */
EE_API const char* ee_last_error(void);

EE_API void ee_close(ee_runtime* rt);

#ifdef __cplusplus
}
#endif

#endif /* EDGEEXIT_H */
