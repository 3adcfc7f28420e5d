// A verified bundle: what the exit loop needs from manifest.json (schema v2), read only after the manifest
// matched its checksum and the compiled-in schema and every listed file matched its sha256.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace edgeexit {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // -1 for the batch dimension (first)
  std::string dtype;

  int64_t sample_numel() const;  // elements of one sample (the batch dimension dropped)
};

// One method of a .pte program and its I/O as the manifest states them.
struct MethodSpec {
  std::string file;    // the .pte, relative to the bundle root
  std::string method;  // the method of that program
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;

  int output_index(const std::string& name) const;  // -1 when absent
};

struct ExitSpec : MethodSpec {  // the segment that ends at this exit
  int index = 0;
  // outputs: intermediate exits features, logits, score; the final exit logits, score
  std::optional<double> threshold;  // exit when score >= threshold; none: never exits here (always at the last)
  std::optional<MethodSpec> head;          // the exit's head alone: the segment's features -> (logits, score)
  std::optional<MethodSpec> static_model;  // the network truncated at this exit, run alone: x -> logits
};

struct Bundle {
  std::string root;  // the real directory (links resolved)
  std::array<int64_t, 3> input_shape{};  // C, H, W
  // how an image becomes the input (edgeexit/images.py does the same): converted to C channels, resized to H x W by
  // `resize` ("bilinear" | "bilinear_antialias"), scaled to [0, 1], then (x - mean[c]) / std[c]
  std::vector<float> mean, std;
  std::string resize;
  std::vector<std::string> class_names;
  int64_t num_classes = 0;
  int64_t min_batch = 0;
  int64_t max_batch = 0;
  std::vector<ExitSpec> exits;
  MethodSpec reference;  // the unsplit model (x -> logits)
  std::string precision;         // fp32 / int8 (what the test vectors' tolerance depends on)
  std::string checksum;          // the manifest's seal
  std::string edgeexit_version;  // of the edgeexit that wrote the bundle
  std::string bundled;           // the BundledProgram with the test vectors (relative); "" when the bundle has none
};

// Verifies the bundle at `dir` in the Python loader's order: the manifest's checksum (recomputed exactly as Python's
// digest does), the manifest against the schema compiled into this runner, the consistency rules of the schema's
// model, every listed path (relative, inside the bundle), every listed file's sha256, and no file the manifest does
// not list. Throws edgeexit::Error.
Bundle load_bundle(const std::string& dir);

}  // namespace edgeexit
