// Reading ExecuTorch's BundledProgram (.bpte): the test vectors of each method, as plain floats.
//
// Its own translation unit on purpose: ExecuTorch's public headers forward-declare flatbuffers::Vector with the
// template parameters of the FlatBuffers release ExecuTorch was built with (v24: <T, SizeT>), which clash with
// another release's headers (Debian's 2.0.8: <T>). Nothing here includes ExecuTorch, and nothing else includes
// FlatBuffers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgeexit {

struct VectorTensor {
  std::vector<int32_t> dims;
  std::vector<float> data;
};

struct TestCase {
  std::vector<VectorTensor> inputs;
  std::vector<VectorTensor> expected_outputs;
};

struct TestSuite {
  std::string method;
  std::vector<TestCase> cases;
  std::string problem;  // why the suite cannot be used (a value that is not a float32 tensor, ...); "" when fine
};

// The suites of the BundledProgram at `path`, in the file's order. Throws edgeexit::Error (EE_ERR_BUNDLE) when the
// file cannot be read or is not a valid BundledProgram flatbuffer (checked with the FlatBuffers verifier first).
std::vector<TestSuite> read_bundled_program(const std::string& path);

}  // namespace edgeexit
