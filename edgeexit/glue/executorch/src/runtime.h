// The early-exit loop on ExecuTorch (the C++ twin of edgeexit/runtime/loop.py): run segment k on the live batch,
// samples whose score >= threshold[k] answer at k, the others are compacted in place and go to segment k+1; the
// last exit answers all that remain.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>

#include "bundle.h"

namespace edgeexit {

// One loaded method of a program with unplanned I/O: a buffer per output, bound once with set_output and sized to
// the method's batch bound. execute() runs it on the first `rows` samples of a caller's buffer, in place.
class BoundMethod {
 public:
  BoundMethod(executorch::extension::Module& module, const std::string& file, const std::string& method);

  // The program's tensors must be the manifest's: float32, same dims but the batch, a batch bound >= max_batch,
  // not memory-planned. Throws BundleError otherwise.
  void check_against(const MethodSpec& spec, int64_t max_batch) const;

  // Runs the method on `rows` samples of x (rows x input sample, float32; only read); the outputs land in
  // output(i), `rows` rows each.
  void execute(float* x, int64_t rows);

  const std::string& name() const { return method_; }
  const std::string& delegates() const { return delegates_; }  // comma-separated backend names
  int64_t batch_bound() const { return batch_bound_; }          // the most rows one call takes
  const std::vector<int32_t>& input_sample() const { return input_sample_; }  // one input sample's dims
  int64_t input_numel() const;                                               // elements of one input sample
  size_t num_outputs() const { return outputs_.size(); }
  float* output(size_t i) { return outputs_[i].data(); }
  const std::vector<int32_t>& output_sample(size_t i) const { return output_sample_[i]; }
  int64_t output_numel(size_t i) const { return output_numel_[i]; }

 private:
  executorch::extension::Module* module_;
  std::string file_, method_, where_;
  std::string delegates_;
  int64_t batch_bound_ = 0;
  std::vector<int32_t> input_sample_;
  std::vector<std::vector<float>> outputs_;           // capacity rows each
  std::vector<std::vector<int32_t>> output_sample_;   // one output sample's dims
  std::vector<int64_t> output_numel_;
};

class Runtime {
 public:
  explicit Runtime(Bundle bundle);  // loads every segment's method and binds the output buffers it owns

  // x: n samples (n x C x H x W); writes predictions [n], exits [n] and logits [n x num_classes] (logits may be
  // NULL: a chunk-sized scratch buffer is used). With answer_at = k >= 0 the loop runs as usual up to exit k (the
  // exit tests of the exits that have a threshold included, but no sample leaves before k) and all answer at k,
  // without a test there: the cost of answering at exit k, as the profile measures it. The Python runtime's
  // forced(k) does the same work (tests/test_cpp_trust.py compares the traces).
  void run(const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits, int answer_at = -1);

  // Every sample answers at exit k (not the last) through k's exit test, as a sample that leaves there does: the
  // earlier exits that have a threshold are tested and nobody passes them, k's test passes everyone. The profile's
  // answer{k}; the Python runtime's answering(k) does the same work.
  void run_answering(const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits, int k);

  // A method of a program of the bundle, loaded (and its outputs bound) on first use: the reference, heads and
  // static models for the profile, any method with test vectors for the self-check.
  BoundMethod& method(const std::string& file, const std::string& name);
  BoundMethod& method(const MethodSpec& spec);  // ... checked against the manifest's I/O on first use

  const Bundle& bundle() const { return bundle_; }
  const std::vector<double>& segment_ms() const { return segment_ms_; }  // of the last run, per segment

  // When set, run() appends what it executes: "segmentK" per segment run, "testK" per exit test (the profile's
  // record of what each entry did; the Python runtime writes the same names).
  std::vector<std::string>* trace = nullptr;
  const std::string& delegates(int k) const { return segments_[k].method->delegates(); }

 private:
  struct Segment {
    BoundMethod* method = nullptr;
    int features = -1, logits = -1, score = -1;  // output indices
    bool has_threshold = false;
    float threshold = 0;  // compared in float32, as the Python backends compare a float32 score
  };

  void run_chunk(const float* x, int64_t n, float* logits, int32_t* exits, size_t answer_at, bool forced);

  Bundle bundle_;
  std::map<std::string, std::unique_ptr<executorch::extension::Module>> programs_;  // by relative file
  std::map<std::string, std::unique_ptr<BoundMethod>> methods_;                     // by file + "\n" + method
  std::vector<Segment> segments_;
  std::vector<int64_t> live_;  // output row of each sample still running
  std::vector<double> segment_ms_;
  std::vector<float> scratch_;  // one chunk's logits when the caller passes none
};

}  // namespace edgeexit
