// The C API of include/edgeexit.h over edgeexit::Runtime: no exception crosses it; failures set a thread-local
// message and return NULL or an EE_ERR_* code.
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "edgeexit.h"
#include "error.h"
#include "runtime.h"

struct ee_runtime {
  std::unique_ptr<edgeexit::Runtime> runtime;
  std::vector<float> logits;  // scratch for ee_run calls that pass logits = NULL
};

namespace {

thread_local std::string g_last_error;

int fail(int code, const std::string& message) {
  g_last_error = message;
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

}  // namespace

extern "C" {

ee_runtime* ee_open(const char* bundle_dir) {
  ee_runtime* handle = nullptr;
  guarded([&] {
    if (bundle_dir == nullptr) throw edgeexit::ArgumentError("ee_open: bundle_dir is NULL", "NULL", "a directory");
    auto rt = std::make_unique<edgeexit::Runtime>(edgeexit::load_bundle(bundle_dir));
    handle = new ee_runtime{std::move(rt), {}};
  });
  return handle;
}

int ee_run(ee_runtime* rt, const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits) {
  return guarded([&] {
    if (rt == nullptr || x == nullptr || predictions == nullptr || exits == nullptr) {
      throw edgeexit::ArgumentError("ee_run: a required pointer is NULL", "rt, x, predictions or exits NULL",
                                    "all four non-NULL (logits may be NULL)");
    }
    if (n < 1) {
      throw edgeexit::ArgumentError("ee_run: n must be at least 1", std::to_string(n), "n >= 1");
    }
    float* out = logits;
    if (out == nullptr) {
      rt->logits.resize(size_t(n * rt->runtime->bundle().num_classes));
      out = rt->logits.data();
    }
    rt->runtime->run(x, n, predictions, exits, out);
  });
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

const char* ee_last_error(void) { return g_last_error.c_str(); }

void ee_close(ee_runtime* rt) { delete rt; }

}  // extern "C"
