// A verified bundle: what the exit loop needs from manifest.json (schema v2), read only after the manifest
// matched the bundle's manifest.schema.json and every listed file matched its sha256.
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

struct ExitSpec {
  int index = 0;
  std::string file;    // the .pte, relative to the bundle root
  std::string method;  // the method of that program that computes this segment
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;  // intermediate exits: features, logits, score; the final exit: logits, score
  std::optional<double> threshold;  // exit when score >= threshold; none: never exits here (always at the last)

  int output_index(const std::string& name) const;  // -1 when absent
};

struct Bundle {
  std::string root;  // the real directory (links resolved)
  std::array<int64_t, 3> input_shape{};  // C, H, W
  int64_t num_classes = 0;
  int64_t max_batch = 0;
  std::vector<ExitSpec> exits;
};

// Verifies the bundle at `dir` in the Python loader's order (the checksum aside): the manifest against
// manifest.schema.json (itself checked against its sha256 first), the consistency rules of the schema's model,
// every listed path (relative, inside the bundle), then every listed file's sha256. Throws edgeexit::Error.
Bundle load_bundle(const std::string& dir);

}  // namespace edgeexit
