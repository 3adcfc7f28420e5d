#include "runtime.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/backend/interface.h>

#include "error.h"
#include "program_check.h"

namespace edgeexit {
namespace {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::runtime::EValue;
using executorch::runtime::MethodMeta;
using executorch::runtime::TensorInfo;

// The most floats one bound output buffer may hold (1 GiB): far above what an edgeexit bundle needs (batch.max
// times a feature map), far below what would exhaust a phone.
constexpr int64_t kMaxBufferFloats = int64_t(1) << 28;
// More bytes than any buffer of a process can hold (64 TiB, a quarter of a 48-bit address space).
constexpr int64_t kMaxInputBytes = int64_t(1) << 46;

std::string et_error(executorch::runtime::Error err) {
  return std::string(executorch::runtime::to_string(err)) + " (ExecuTorch error " + std::to_string(int(err)) + ")";
}

std::string sizes_str(const TensorInfo& t) {
  std::string s = "[";
  for (size_t i = 0; i < t.sizes().size(); ++i) s += (i ? ", " : "") + std::to_string(t.sizes()[i]);
  return s + "]";
}

std::string spec_str(const TensorSpec& t) {
  std::string s = "[";
  for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

}  // namespace

BoundMethod::BoundMethod(Module& module, const std::string& file, const std::string& method)
    : module_(&module), file_(file), method_(method), where_(file + " method " + method) {
  auto meta = module.method_meta(method);
  if (!meta.ok()) {
    throw BundleError(file + " has no method " + method, et_error(meta.error()), "method " + method, kReexportHint);
  }
  for (size_t i = 0; i < meta->num_backends(); ++i) {
    auto backend = meta->get_backend_name(i);
    if (!backend.ok()) {
      throw BundleError(where_ + " names a backend that cannot be read", et_error(backend.error()),
                        "a program edgeexit wrote", kReexportHint);
    }
    const char* name = backend.get();
    if (("," + delegates_ + ",").find("," + std::string(name) + ",") == std::string::npos) {
      delegates_ += (delegates_.empty() ? "" : ",") + std::string(name);  // one entry per backend
    }
    if (executorch::runtime::get_backend_class(name) == nullptr) {
      std::string registered;
      for (size_t b = 0; b < executorch::runtime::get_num_registered_backends(); ++b) {
        registered += (b ? ", " : "") + std::string(executorch::runtime::get_backend_name(b).get());
      }
      throw RuntimeError(where_ + " is delegated to " + name + ", which is not registered",
                         "registered: [" + registered + "]", name,
                         "link the backend library without --as-needed (executorch::backend_xnnpack does)");
    }
  }
  if (meta->num_inputs() != 1) {
    throw BundleError(where_ + " does not take one input", std::to_string(meta->num_inputs()) + " inputs",
                      "one float32 tensor", kReexportHint);
  }
  // Method I/O must not be memory-planned: the runner binds its own buffers (a planned output refuses them).
  auto unplanned = [&](const TensorInfo& t, const std::string& what) {
    if (t.scalar_type() != ScalarType::Float || t.sizes().empty()) {
      throw BundleError(where_ + " " + what + " is not a float32 batch", sizes_str(t), "float32 [batch, ...]",
                        kReexportHint);
    }
    if (t.is_memory_planned()) {
      throw BundleError(where_ + " " + what + " is memory-planned", "alloc_graph_input/output=True",
                        "unplanned method I/O (the runner binds its own buffers)",
                        "re-export with this edgeexit: `edgeexit export --run-dir RUN --target android`");
    }
  };
  // A damaged program can have a method whose tensor metadata cannot be read: Result::get() would abort.
  auto tensor_meta = [&](bool input, size_t i) {
    auto t = input ? meta->input_tensor_meta(i) : meta->output_tensor_meta(i);
    if (!t.ok()) {
      throw BundleError(where_ + " has unreadable " + (input ? "input " : "output ") + std::to_string(i) + " metadata",
                        et_error(t.error()), "a program edgeexit wrote", kReexportHint);
    }
    return t.get();
  };
  TensorInfo in = tensor_meta(true, 0);
  unplanned(in, "input");
  for (int32_t d : in.sizes()) {
    if (d < 1) {
      throw BundleError(where_ + " input has a dim < 1", sizes_str(in), "positive dims", kReexportHint);
    }
  }
  batch_bound_ = in.sizes()[0];
  input_sample_.assign(in.sizes().begin() + 1, in.sizes().end());

  auto err = module.load_method(method);
  if (err != executorch::runtime::Error::Ok) {
    throw RuntimeError("ExecuTorch cannot load method " + method + " of " + file, et_error(err),
                       "a loadable method", "an operator or delegate may be missing from this build");
  }
  for (size_t i = 0; i < meta->num_outputs(); ++i) {
    TensorInfo out = tensor_meta(false, i);
    unplanned(out, "output " + std::to_string(i));
    // Rows up to the program's batch bound: ExecuTorch checks a bound buffer against the tensor's largest size.
    std::vector<int32_t> sizes(out.sizes().begin(), out.sizes().end());
    output_sample_.emplace_back(sizes.begin() + 1, sizes.end());
    // The buffer is allocated here, so its size is checked first: a hostile program may state any dims.
    int64_t numel = 1;
    bool absurd = sizes[0] < 1;
    for (int32_t d : output_sample_.back()) {
      absurd |= d < 1;
      if (!absurd) numel *= d;
      absurd |= numel > kMaxBufferFloats;
    }
    if (absurd || sizes[0] > kMaxBufferFloats / numel) {
      throw BundleError(where_ + " output " + std::to_string(i) + " has absurd dims", sizes_str(out),
                        "positive dims, at most " + std::to_string(kMaxBufferFloats) + " floats per buffer",
                        "the program is damaged or was not written by edgeexit; rebuild the bundle");
    }
    output_numel_.push_back(numel);
    outputs_.emplace_back(size_t(sizes[0]) * size_t(numel));
    auto buffer = executorch::extension::from_blob(outputs_.back().data(), sizes);
    err = module.set_output(method, EValue(*buffer), i);
    if (err != executorch::runtime::Error::Ok) {
      throw RuntimeError("cannot bind the output buffer of " + where_ + " output " + std::to_string(i),
                         et_error(err), "an unplanned output", kReexportHint);
    }
  }
}

int64_t BoundMethod::input_numel() const {
  int64_t n = 1;
  for (int32_t d : input_sample_) n *= d;
  return n;
}

void BoundMethod::check_against(const MethodSpec& spec, int64_t max_batch) const {
  if (spec.inputs.size() != 1 || spec.outputs.size() != outputs_.size()) {
    throw BundleError(where_ + " has another number of inputs/outputs than the manifest",
                      "1 in, " + std::to_string(outputs_.size()) + " out",
                      std::to_string(spec.inputs.size()) + " in, " + std::to_string(spec.outputs.size()) + " out",
                      kReexportHint);
  }
  auto same = [&](const std::vector<int32_t>& sample, const TensorSpec& want, const std::string& what) {
    bool ok = sample.size() + 1 == want.shape.size();
    for (size_t d = 1; ok && d < want.shape.size(); ++d) ok = sample[d - 1] == want.shape[d];
    if (!ok) {
      std::string got = "[batch";
      for (int32_t d : sample) got += ", " + std::to_string(d);
      throw BundleError(where_ + " " + what + " " + want.name + " differs from the manifest", got + "]",
                        spec_str(want), "the manifest and " + file_ + " disagree; rebuild the bundle");
    }
  };
  same(input_sample_, spec.inputs[0], "input");
  for (size_t i = 0; i < outputs_.size(); ++i) same(output_sample_[i], spec.outputs[i], "output");
  if (batch_bound_ < max_batch) {
    throw BundleError(where_ + " is bounded below the manifest's batch.max", std::to_string(batch_bound_),
                      "batch bound >= " + std::to_string(max_batch), kReexportHint);
  }
}

void BoundMethod::execute(float* x, int64_t rows) {
  std::vector<int32_t> sizes = {int32_t(rows)};
  sizes.insert(sizes.end(), input_sample_.begin(), input_sample_.end());
  auto input = executorch::extension::from_blob(x, sizes);
  auto err = module_->set_input(method_, EValue(*input), 0);
  if (err != executorch::runtime::Error::Ok) {
    throw RuntimeError("cannot set the input of method " + method_, et_error(err),
                       "a float32 batch of " + std::to_string(rows));
  }
  auto outs = module_->execute(method_);
  if (!outs.ok()) {
    throw RuntimeError("ExecuTorch failed to execute method " + method_, et_error(outs.error()),
                       "a successful run on a batch of " + std::to_string(rows));
  }
  for (size_t i = 0; i < outputs_.size(); ++i) {  // the outputs must be in our buffers, `rows` rows
    const auto& t = (*outs)[i].toTensor();
    if (t.const_data_ptr() != outputs_[i].data() || t.size(0) != rows) {
      throw RuntimeError("method " + method_ + " did not write output " + std::to_string(i) +
                         " into the bound buffer", "batch " + std::to_string(t.size(0)),
                         "batch " + std::to_string(rows) + " in the runner's buffer", kReexportHint);
    }
  }
}

Runtime::Runtime(Bundle bundle) : bundle_(std::move(bundle)) {
  for (const ExitSpec& e : bundle_.exits) {
    Segment s;
    s.method = &method(e);
    s.features = e.output_index("features");
    s.logits = e.output_index("logits");
    s.score = e.output_index("score");
    s.has_threshold = e.threshold.has_value();
    s.threshold = s.has_threshold ? float(*e.threshold) : 0.0f;
    segments_.push_back(s);
  }
  segment_ms_.assign(segments_.size(), 0.0);
  live_.reserve(size_t(bundle_.max_batch));
}

BoundMethod& Runtime::method(const std::string& file, const std::string& name) {
  const std::string key = file + "\n" + name;
  auto found = methods_.find(key);
  if (found != methods_.end()) return *found->second;
  auto& module = programs_[file];
  if (!module) {
    const std::string path = bundle_.root + "/" + file;
    check_program(path, file);  // what ExecuTorch's verification leaves unchecked (program_check.h)
    auto loaded = std::make_unique<Module>(path, Module::LoadMode::Mmap);
    // InternalConsistency: ExecuTorch's flatbuffer verifier and its semantic checks (tensor numel overflow, list
    // element types) before anything in the program is read; Minimal (the default) only looks at the header, and a
    // damaged or hostile program then crashes the process instead of failing here.
    auto err = loaded->load(executorch::runtime::Program::Verification::InternalConsistency);
    if (err != executorch::runtime::Error::Ok) {
      throw RuntimeError("ExecuTorch cannot load " + file, et_error(err), "a .pte program of ExecuTorch 1.5",
                         "was the bundle exported with the ExecuTorch version this runner links?");
    }
    module = std::move(loaded);
  }
  auto bound = std::make_unique<BoundMethod>(*module, file, name);
  return *methods_.emplace(key, std::move(bound)).first->second;
}

BoundMethod& Runtime::method(const MethodSpec& spec) {
  const bool fresh = methods_.count(spec.file + "\n" + spec.method) == 0;
  try {
    BoundMethod& m = method(spec.file, spec.method);
    if (fresh) m.check_against(spec, bundle_.max_batch);
    return m;
  } catch (...) {
    if (fresh) methods_.erase(spec.file + "\n" + spec.method);  // a failed check must not stay loaded as valid
    throw;
  }
}

void Runtime::run(const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits, int answer_at) {
  if (answer_at >= int(segments_.size())) {
    throw ArgumentError("no exit " + std::to_string(answer_at), std::to_string(answer_at),
                        "0 <= k < " + std::to_string(segments_.size()));
  }
  const int64_t sample = bundle_.input_shape[0] * bundle_.input_shape[1] * bundle_.input_shape[2];
  const int64_t classes = bundle_.num_classes;
  // No buffer of this process can hold more than kMaxInputBytes: a larger n is a caller's mistake (or an
  // overflow), refused before x is read or anything is allocated.
  if (n < 1 || n > kMaxInputBytes / int64_t(sizeof(float)) / std::max(sample, classes)) {
    throw ArgumentError("n is not a batch size this runtime can take", std::to_string(n),
                        "1 <= n <= " + std::to_string(kMaxInputBytes / int64_t(sizeof(float)) / std::max(sample, classes)) +
                            " (n x C x H x W float32 must fit in memory)",
                        "pass the number of samples in x");
  }
  double sum = 0;
  for (int64_t i = 0; i < n * sample; ++i) sum += x[i];  // one pass; NaN or inf anywhere makes it non-finite
  if (!std::isfinite(sum)) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n * sample; ++i) bad += !std::isfinite(x[i]);
    throw ArgumentError("input holds NaN or inf", std::to_string(bad) + " non-finite values", "finite values",
                        "check the preprocessing of these images");
  }
  std::fill(segment_ms_.begin(), segment_ms_.end(), 0.0);
  const bool forced = answer_at >= 0;
  const size_t stop = forced ? size_t(answer_at) : segments_.size() - 1;
  if (logits == nullptr) scratch_.resize(size_t(bundle_.max_batch * classes));  // one chunk's logits, not n's
  for (int64_t s = 0; s < n; s += bundle_.max_batch) {
    const int64_t m = std::min(bundle_.max_batch, n - s);
    float* out = logits ? logits + s * classes : scratch_.data();
    run_chunk(x + s * sample, m, out, exits + s, stop, forced);
    for (int64_t i = 0; i < m; ++i) {  // argmax, first maximum on ties (as numpy's argmax)
      const float* row = out + i * classes;
      int64_t best = 0;
      for (int64_t c = 1; c < classes; ++c) best = row[c] > row[best] ? c : best;
      predictions[s + i] = best;
    }
  }
}

void Runtime::run_answering(const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits, int k) {
  if (k < 0 || k + 1 >= int(segments_.size())) {
    throw ArgumentError("exit " + std::to_string(k) + " has no exit test to answer by", std::to_string(k),
                        "0 <= k < " + std::to_string(segments_.size() - 1));
  }
  std::vector<Segment> kept = segments_;  // the bundle's rules, put back however run() ends
  struct Restore {
    std::vector<Segment>& to;
    std::vector<Segment>& from;
    ~Restore() { to.swap(from); }
  } restore{segments_, kept};
  for (int i = 0; i < k; ++i) segments_[i].threshold = std::numeric_limits<float>::max();
  segments_[k].has_threshold = true;
  segments_[k].threshold = -std::numeric_limits<float>::infinity();
  for (size_t i = size_t(k) + 1; i < segments_.size(); ++i) segments_[i].has_threshold = false;
  run(x, n, predictions, exits, logits, -1);
}

void Runtime::run_chunk(const float* x, int64_t n, float* logits_out, int32_t* exits_out, size_t answer_at,
                        bool forced) {
  const int64_t classes = bundle_.num_classes;
  live_.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) live_[i] = i;
  float* cur = const_cast<float*>(x);  // ExecuTorch takes a mutable pointer; inputs are only read
  int64_t m = n;
  // Forced to answer at `answer_at`: the exit tests before it still run, but nobody leaves there.
  for (size_t k = 0; k <= answer_at; ++k) {
    Segment& seg = segments_[k];
    auto t0 = std::chrono::steady_clock::now();
    seg.method->execute(cur, m);
    segment_ms_[k] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (trace != nullptr) trace->push_back("segment" + std::to_string(k));
    const float* lg = seg.method->output(size_t(seg.logits));
    if (k == answer_at) {
      for (int64_t i = 0; i < m; ++i) {
        std::memcpy(logits_out + live_[i] * classes, lg + i * classes, sizeof(float) * classes);
        exits_out[live_[i]] = int32_t(k);
      }
      return;
    }
    float* features = seg.method->output(size_t(seg.features));
    if (!seg.has_threshold) {  // never exits here: not even scored
      cur = features;
      continue;
    }
    // Exiting rows answer now; the others move up in place (row i to row kept <= i), so the features buffer
    // becomes the next segment's input with no gather buffer.
    // The exit test runs forced or not (a sample that answers at a later exit paid for it in the real loop);
    // forced, nobody leaves.
    if (trace != nullptr) trace->push_back("test" + std::to_string(k));
    const float* score = seg.method->output(size_t(seg.score));
    const int64_t row = seg.method->output_numel(size_t(seg.features));
    int64_t kept = 0;
    for (int64_t i = 0; i < m; ++i) {
      if ((score[i] >= seg.threshold) & !forced) {
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
