#include "runtime.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/backend/interface.h>

#include "error.h"

namespace edgeexit {
namespace {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::runtime::EValue;
using executorch::runtime::MethodMeta;
using executorch::runtime::TensorInfo;

std::string et_error(executorch::runtime::Error err) {
  return std::string(executorch::runtime::to_string(err)) + " (ExecuTorch error " + std::to_string(int(err)) + ")";
}

std::string sizes_str(const TensorInfo& t) {
  std::string s = "[";
  for (size_t i = 0; i < t.sizes().size(); ++i) s += (i ? ", " : "") + std::to_string(t.sizes()[i]);
  return s + "]";
}

// The program's tensor must be the manifest's: float32, same dims but the batch, batch bound >= batch.max, and not
// memory-planned (the exit loop binds its own buffers; a planned tensor would be copied or refuse our buffer).
void check_tensor(const TensorInfo& got, const TensorSpec& want, int64_t max_batch, const std::string& where) {
  bool same = got.scalar_type() == ScalarType::Float && got.sizes().size() == want.shape.size();
  for (size_t d = 1; same && d < want.shape.size(); ++d) same = got.sizes()[d] == want.shape[d];
  if (!same) {
    throw BundleError(where + " differs from the manifest", sizes_str(got), "float32 with dims [batch, ...] of " +
                      want.name, "the manifest and program.pte disagree; rebuild the bundle");
  }
  if (got.sizes()[0] < max_batch) {
    throw BundleError(where + " is bounded below the manifest's batch.max", sizes_str(got),
                      "batch bound >= " + std::to_string(max_batch), kReexportHint);
  }
  if (got.is_memory_planned()) {
    throw BundleError(where + " is memory-planned", "alloc_graph_input/output=True",
                      "unplanned method I/O (the runner binds its own buffers)",
                      "re-export with this edgeexit: `edgeexit export --run-dir RUN --target android`");
  }
}

}  // namespace

Runtime::Runtime(Bundle bundle) : bundle_(std::move(bundle)) {
  for (const ExitSpec& e : bundle_.exits) open_segment(e);
  segment_ms_.assign(segments_.size(), 0.0);
  live_.reserve(size_t(bundle_.max_batch));
}

void Runtime::open_segment(const ExitSpec& e) {
  auto& module = programs_[e.file];
  const std::string path = bundle_.root + "/" + e.file;
  if (!module) {
    module = std::make_unique<Module>(path, Module::LoadMode::Mmap);
    auto err = module->load();
    if (err != executorch::runtime::Error::Ok) {
      throw RuntimeError("ExecuTorch cannot load " + e.file, et_error(err), "a .pte program of ExecuTorch 1.5",
                         "was the bundle exported with the ExecuTorch version this runner links?");
    }
  }
  Segment s;
  s.module = module.get();
  s.method = e.method;
  const std::string where = e.file + " method " + e.method;
  auto meta = module->method_meta(e.method);
  if (!meta.ok()) {
    throw BundleError(e.file + " has no method " + e.method, et_error(meta.error()), "method " + e.method,
                      kReexportHint);
  }
  for (size_t i = 0; i < meta->num_backends(); ++i) {
    const char* name = meta->get_backend_name(i).get();
    if (("," + s.delegates + ",").find("," + std::string(name) + ",") == std::string::npos) {
      s.delegates += (s.delegates.empty() ? "" : ",") + std::string(name);  // one entry per backend
    }
    if (executorch::runtime::get_backend_class(name) == nullptr) {
      std::string registered;
      for (size_t b = 0; b < executorch::runtime::get_num_registered_backends(); ++b) {
        registered += (b ? ", " : "") + std::string(executorch::runtime::get_backend_name(b).get());
      }
      throw RuntimeError(where + " is delegated to " + name + ", which is not registered",
                         "registered: [" + registered + "]", name,
                         "link the backend library without --as-needed (executorch::backend_xnnpack does)");
    }
  }
  if (meta->num_inputs() != e.inputs.size() || meta->num_outputs() != e.outputs.size()) {
    throw BundleError(where + " has another number of inputs/outputs than the manifest",
                      std::to_string(meta->num_inputs()) + " in, " + std::to_string(meta->num_outputs()) + " out",
                      std::to_string(e.inputs.size()) + " in, " + std::to_string(e.outputs.size()) + " out",
                      kReexportHint);
  }
  const int64_t max_batch = bundle_.max_batch;
  TensorInfo in = meta->input_tensor_meta(0).get();
  check_tensor(in, e.inputs[0], max_batch, where + " input " + e.inputs[0].name);
  for (size_t d = 1; d < e.inputs[0].shape.size(); ++d) s.sample_sizes.push_back(int32_t(e.inputs[0].shape[d]));

  auto err = module->load_method(e.method);
  if (err != executorch::runtime::Error::Ok) {
    throw RuntimeError("ExecuTorch cannot load method " + e.method + " of " + e.file, et_error(err),
                       "a loadable method", "an operator or delegate may be missing from this build");
  }
  for (size_t i = 0; i < e.outputs.size(); ++i) {
    TensorInfo out = meta->output_tensor_meta(i).get();
    check_tensor(out, e.outputs[i], max_batch, where + " output " + e.outputs[i].name);
    // Rows up to the program's batch bound: ExecuTorch checks a bound buffer against the tensor's largest size.
    std::vector<int32_t> sizes(out.sizes().begin(), out.sizes().end());
    s.output_numel.push_back(e.outputs[i].sample_numel());
    s.outputs.emplace_back(size_t(sizes[0]) * size_t(s.output_numel.back()));
    auto buffer = executorch::extension::from_blob(s.outputs.back().data(), sizes);
    err = module->set_output(e.method, EValue(*buffer), i);
    if (err != executorch::runtime::Error::Ok) {
      throw RuntimeError("cannot bind the output buffer of " + where + " output " + e.outputs[i].name,
                         et_error(err), "an unplanned output", kReexportHint);
    }
  }
  s.features = e.output_index("features");
  s.logits = e.output_index("logits");
  s.score = e.output_index("score");
  s.has_threshold = e.threshold.has_value();
  s.threshold = s.has_threshold ? float(*e.threshold) : 0.0f;
  segments_.push_back(std::move(s));
}

void Runtime::run(const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits) {
  const int64_t sample = bundle_.input_shape[0] * bundle_.input_shape[1] * bundle_.input_shape[2];
  double sum = 0;
  for (int64_t i = 0; i < n * sample; ++i) sum += x[i];  // one pass; NaN or inf anywhere makes it non-finite
  if (!std::isfinite(sum)) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n * sample; ++i) bad += !std::isfinite(x[i]);
    throw ArgumentError("input holds NaN or inf", std::to_string(bad) + " non-finite values", "finite values",
                        "check the preprocessing of these images");
  }
  std::fill(segment_ms_.begin(), segment_ms_.end(), 0.0);
  const int64_t classes = bundle_.num_classes;
  for (int64_t s = 0; s < n; s += bundle_.max_batch) {
    int64_t m = std::min(bundle_.max_batch, n - s);
    run_chunk(x + s * sample, m, logits + s * classes, exits + s);
  }
  for (int64_t i = 0; i < n; ++i) {  // argmax, first maximum on ties (as numpy's argmax)
    const float* row = logits + i * classes;
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c) best = row[c] > row[best] ? c : best;
    predictions[i] = best;
  }
}

void Runtime::run_chunk(const float* x, int64_t n, float* logits_out, int32_t* exits_out) {
  const int64_t classes = bundle_.num_classes;
  live_.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) live_[i] = i;
  float* cur = const_cast<float*>(x);  // ExecuTorch takes a mutable pointer; inputs are only read
  int64_t m = n;
  const size_t last = segments_.size() - 1;
  for (size_t k = 0; k < segments_.size(); ++k) {
    Segment& seg = segments_[k];
    std::vector<int32_t> sizes = {int32_t(m)};
    sizes.insert(sizes.end(), seg.sample_sizes.begin(), seg.sample_sizes.end());
    auto input = executorch::extension::from_blob(cur, sizes);
    auto err = seg.module->set_input(seg.method, EValue(*input), 0);
    if (err != executorch::runtime::Error::Ok) {
      throw RuntimeError("cannot set the input of method " + seg.method, et_error(err),
                         "a float32 batch of " + std::to_string(m));
    }
    auto t0 = std::chrono::steady_clock::now();
    auto outs = seg.module->execute(seg.method);
    segment_ms_[k] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!outs.ok()) {
      throw RuntimeError("ExecuTorch failed to execute method " + seg.method, et_error(outs.error()),
                         "a successful run on a batch of " + std::to_string(m));
    }
    for (size_t i = 0; i < seg.outputs.size(); ++i) {  // the outputs must be in our buffers, m rows
      const auto& t = (*outs)[i].toTensor();
      if (t.const_data_ptr() != seg.outputs[i].data() || t.size(0) != m) {
        throw RuntimeError("method " + seg.method + " did not write output " + std::to_string(i) +
                           " into the bound buffer", "batch " + std::to_string(t.size(0)),
                           "batch " + std::to_string(m) + " in the runner's buffer", kReexportHint);
      }
    }
    const float* lg = seg.outputs[seg.logits].data();
    if (k == last) {
      for (int64_t i = 0; i < m; ++i) {
        std::memcpy(logits_out + live_[i] * classes, lg + i * classes, sizeof(float) * classes);
        exits_out[live_[i]] = int32_t(k);
      }
      return;
    }
    float* features = seg.outputs[seg.features].data();
    if (!seg.has_threshold) {  // never exits here: not even scored
      cur = features;
      continue;
    }
    // Exiting rows answer now; the others move up in place (row i to row kept <= i), so the features buffer
    // becomes the next segment's input with no gather buffer.
    const float* score = seg.outputs[seg.score].data();
    const int64_t row = seg.output_numel[seg.features];
    int64_t kept = 0;
    for (int64_t i = 0; i < m; ++i) {
      if (score[i] >= seg.threshold) {
        std::memcpy(logits_out + live_[i] * classes, lg + i * classes, sizeof(float) * classes);
        exits_out[live_[i]] = int32_t(k);
        continue;
      }
      if (kept != i) std::memcpy(features + kept * row, features + i * row, sizeof(float) * row);
      live_[kept++] = live_[i];
    }
    if (kept == 0) return;
    m = kept;
    cur = features;
  }
}

}  // namespace edgeexit
