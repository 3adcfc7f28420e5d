// The C API of include/edgeexit.h over edgeexit::Runtime: no exception crosses it; failures set a thread-local
// message and return NULL or an EE_ERR_* code.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "edgeexit.h"
#include "error.h"
#include "profile.h"
#include "runtime.h"
#include "verify.h"

struct ee_runtime {
  std::unique_ptr<edgeexit::Runtime> runtime;
  std::unique_ptr<edgeexit::Verification> verification;  // of the last ee_verify
  std::string profile;                                   // of the last ee_profile
};

namespace {

thread_local std::string g_last_error;

// A message can quote bytes from a damaged bundle (a method name of a flipped program): keep ASCII text and valid
// 2- and 3-byte UTF-8, write anything else as \xNN, so that ee_last_error is always valid (modified) UTF-8; JNI's
// NewStringUTF aborts the JVM on invalid bytes, and Swift's String(cString:) would replace them silently.
std::string printable(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : 0;
    bool ok = n > 0 && i + n <= in.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(in[i + k]) & 0xC0) == 0x80;
    if (ok && n == 3) {  // no overlong form, no surrogate
      const unsigned c1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
    }
    if (ok) {
      out.append(in, i, n);
      i += n;
    } else if ((c >= 0x20 && c < 0x7F) || c == '\n' || c == '\t') {
      out += char(c);
      ++i;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
      ++i;
    }
  }
  return out;
}

int fail(int code, const std::string& message) {
  g_last_error = printable(message);
  return code;
}

// Runs `body`, mapping every exception to a status code and this thread's last error.
template <typename Body>
int guarded(Body&& body) {
  g_last_error.clear();
  try {
    body();
    return EE_OK;
  } catch (const edgeexit::Error& err) {
    return fail(err.code(), err.what());
  } catch (const std::bad_alloc&) {
    return fail(EE_ERR_INTERNAL, "out of memory | hint: use a smaller batch or a smaller model");
  } catch (const std::exception& err) {
    return fail(EE_ERR_INTERNAL, std::string("unexpected error: ") + err.what());
  }
}

// ee_run and ee_run_forced (answer_at = k; -1: the real exit loop).
int run(ee_runtime* rt, const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits,
        int answer_at) {
  return guarded([&] {
    if (rt == nullptr || x == nullptr || predictions == nullptr || exits == nullptr) {
      throw edgeexit::ArgumentError("ee_run: a required pointer is NULL", "rt, x, predictions or exits NULL",
                                    "all four non-NULL (logits may be NULL)");
    }
    if (n < 1) {
      throw edgeexit::ArgumentError("ee_run: n must be at least 1", std::to_string(n), "n >= 1");
    }
    rt->runtime->run(x, n, predictions, exits, logits, answer_at);  // logits NULL: a chunk's scratch, not n's
  });
}

}  // namespace

extern "C" {

ee_runtime* ee_open(const char* bundle_dir) {
  ee_runtime* handle = nullptr;
  guarded([&] {
    if (bundle_dir == nullptr) throw edgeexit::ArgumentError("ee_open: bundle_dir is NULL", "NULL", "a directory");
    auto rt = std::make_unique<edgeexit::Runtime>(edgeexit::load_bundle(bundle_dir));
    handle = new ee_runtime{std::move(rt), nullptr, {}};
  });
  return handle;
}

int ee_run(ee_runtime* rt, const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits) {
  return run(rt, x, n, predictions, exits, logits, -1);
}

int ee_run_forced(ee_runtime* rt, int k, const float* x, int64_t n, int64_t* predictions, int32_t* exits,
                  float* logits) {
  if (rt != nullptr && (k < 0 || k >= ee_num_exits(rt))) {
    return fail(EE_ERR_ARGUMENT, "ee_run_forced: no exit " + std::to_string(k) + " | expected: 0 <= k < " +
                                 std::to_string(ee_num_exits(rt)));
  }
  return run(rt, x, n, predictions, exits, logits, k);
}

int64_t ee_num_classes(const ee_runtime* rt) { return rt ? rt->runtime->bundle().num_classes : -1; }

int ee_input_shape(const ee_runtime* rt, int64_t chw[3]) {
  return guarded([&] {
    if (rt == nullptr || chw == nullptr) {
      throw edgeexit::ArgumentError("ee_input_shape: NULL argument", "NULL", "a runtime and int64_t[3]");
    }
    for (int i = 0; i < 3; ++i) chw[i] = rt->runtime->bundle().input_shape[i];
  });
}

const char* ee_input_resize(const ee_runtime* rt) { return rt ? rt->runtime->bundle().resize.c_str() : nullptr; }

int ee_input_normalisation(const ee_runtime* rt, float* mean, float* std) {
  return guarded([&] {
    if (rt == nullptr || mean == nullptr || std == nullptr) {
      throw edgeexit::ArgumentError("ee_input_normalisation: NULL argument", "NULL", "a runtime and two float[C]");
    }
    const edgeexit::Bundle& b = rt->runtime->bundle();
    std::copy(b.mean.begin(), b.mean.end(), mean);
    std::copy(b.std.begin(), b.std.end(), std);
  });
}

const char* ee_class_name(const ee_runtime* rt, int64_t k) {
  if (rt == nullptr || k < 0 || k >= ee_num_classes(rt)) return nullptr;
  return rt->runtime->bundle().class_names[size_t(k)].c_str();
}

int ee_num_exits(const ee_runtime* rt) { return rt ? int(rt->runtime->bundle().exits.size()) : -1; }

int64_t ee_max_batch(const ee_runtime* rt) { return rt ? rt->runtime->bundle().max_batch : -1; }

double ee_segment_ms(const ee_runtime* rt, int k) {
  if (rt == nullptr || k < 0 || k >= ee_num_exits(rt)) return -1.0;
  return rt->runtime->segment_ms()[size_t(k)];
}

const char* ee_segment_delegates(const ee_runtime* rt, int k) {
  if (rt == nullptr || k < 0 || k >= ee_num_exits(rt)) return nullptr;
  return rt->runtime->delegates(k).c_str();
}

int ee_verify(ee_runtime* rt, const char* bpte_path) {
  int status = guarded([&] {
    if (rt == nullptr) throw edgeexit::ArgumentError("ee_verify: rt is NULL", "NULL", "an open runtime");
    rt->verification.reset();
    rt->verification = std::make_unique<edgeexit::Verification>(
        edgeexit::verify_bundled(*rt->runtime, bpte_path ? bpte_path : ""));
  });
  if (status != EE_OK || rt->verification->passed()) return status;
  std::string failed;
  for (const auto& m : rt->verification->methods) {
    if (!m.passed) failed += (failed.empty() ? "" : "; ") + m.method + ": " + m.detail;
  }
  return fail(EE_ERR_VERIFY, "the bundle's test vectors fail on this device | got: " + failed +
                             " | expected: every output within the tolerance of a " +
                             rt->runtime->bundle().precision + " bundle | hint: do not use this bundle on this " +
                             "device; re-export it, or report the device and backend");
}

int ee_verify_count(const ee_runtime* rt) {
  if (rt == nullptr) return -1;
  return rt->verification ? int(rt->verification->methods.size()) : 0;
}

int ee_verify_result(const ee_runtime* rt, int i, ee_method_check* out) {
  if (rt == nullptr || out == nullptr || i < 0 || i >= ee_verify_count(rt)) return EE_ERR_ARGUMENT;
  const edgeexit::MethodCheck& m = rt->verification->methods[size_t(i)];
  *out = ee_method_check{m.method.c_str(), m.cases, m.passed ? 1 : 0, m.max_abs_error, m.max_error,
                         m.detail.c_str()};
  return EE_OK;
}

double ee_verify_tolerance(const ee_runtime* rt) {
  return rt && rt->verification ? rt->verification->tolerance : -1.0;
}

const char* ee_profile(ee_runtime* rt, const int64_t* batches, int num_batches, int rounds, int calls, int warmup,
                       uint64_t seed) {
  int status = guarded([&] {
    if (rt == nullptr) throw edgeexit::ArgumentError("ee_profile: rt is NULL", "NULL", "an open runtime");
    if (num_batches < 0 || (num_batches > 0 && batches == nullptr)) {
      throw edgeexit::ArgumentError("ee_profile: bad batch list", std::to_string(num_batches) + " batches",
                                    "num_batches >= 0 and batches non-NULL when > 0");
    }
    edgeexit::ProfileOptions options;
    if (num_batches > 0) options.batches.assign(batches, batches + num_batches);
    options.rounds = rounds;
    options.calls = calls;
    options.warmup = warmup;
    options.seed = seed;
    rt->profile = edgeexit::profile_json(*rt->runtime, options);
  });
  return status == EE_OK ? rt->profile.c_str() : nullptr;
}

const char* ee_last_error(void) { return g_last_error.c_str(); }

void ee_close(ee_runtime* rt) { delete rt; }

}  // extern "C"
