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

class Runtime {
 public:
  explicit Runtime(Bundle bundle);  // loads every segment's method and binds the output buffers it owns

  // x: n samples (n x C x H x W); writes predictions [n], exits [n] and logits [n x num_classes].
  void run(const float* x, int64_t n, int64_t* predictions, int32_t* exits, float* logits);

  const Bundle& bundle() const { return bundle_; }
  const std::vector<double>& segment_ms() const { return segment_ms_; }  // of the last run, per segment
  const std::string& delegates(int k) const { return segments_[k].delegates; }

 private:
  struct Segment {
    executorch::extension::Module* module = nullptr;
    std::string method;
    std::vector<int32_t> sample_sizes;          // one input sample's dims (C, H, W or the features' dims)
    std::vector<std::vector<float>> outputs;    // our buffers, bound with set_output: capacity rows each
    std::vector<int64_t> output_numel;          // elements per sample of each output
    int features = -1, logits = -1, score = -1;  // output indices
    bool has_threshold = false;
    float threshold = 0;  // compared in float32, as the Python backends compare a float32 score
    std::string delegates;
  };

  void open_segment(const ExitSpec& e);
  void run_chunk(const float* x, int64_t n, float* logits, int32_t* exits);

  Bundle bundle_;
  std::map<std::string, std::unique_ptr<executorch::extension::Module>> programs_;  // by relative file
  std::vector<Segment> segments_;
  std::vector<int64_t> live_;  // output row of each sample still running
  std::vector<double> segment_ms_;
};

}  // namespace edgeexit
