#include "bundled_program.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include "bundled_program_schema_generated.h"  // flatc of ExecuTorch's bundled_program_schema.fbs (CMakeLists.txt)
#include "error.h"

namespace edgeexit {
namespace {

namespace bp = bundled_program_flatbuffer;

std::string dims_str(const std::vector<int32_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// A test vector's value as a float32 tensor; "" or what is wrong with it.
std::string read_value(const bp::Value* value, VectorTensor* out) {
  const bp::Tensor* t = value ? value->val_as_Tensor() : nullptr;
  if (t == nullptr) return "is not a tensor";
  if (t->scalar_type() != executorch_flatbuffer::ScalarType_FLOAT) {
    return std::string("has dtype ") + executorch_flatbuffer::EnumNameScalarType(t->scalar_type()) + ", not FLOAT";
  }
  if (t->sizes()) out->dims.assign(t->sizes()->begin(), t->sizes()->end());
  size_t numel = 1;
  for (int32_t d : out->dims) {
    numel *= d < 0 ? 0 : size_t(d);
    if (numel > (size_t(1) << 28)) return "has absurd dims " + dims_str(out->dims);  // no product overflows
  }
  const size_t bytes = t->data() ? t->data()->size() : 0;
  if (out->dims.empty() || bytes != numel * sizeof(float)) {
    return "holds " + std::to_string(bytes) + " bytes for dims " + dims_str(out->dims);
  }
  out->data.resize(numel);
  if (numel) std::memcpy(out->data.data(), t->data()->data(), bytes);  // no alignment assumed
  return "";
}

std::string read_values(const flatbuffers::Vector<flatbuffers::Offset<bp::Value>>* values, const std::string& what,
                        std::vector<VectorTensor>* out) {
  if (values == nullptr) return "";
  for (flatbuffers::uoffset_t i = 0; i < values->size(); ++i) {
    out->emplace_back();
    std::string bad = read_value(values->Get(i), &out->back());
    if (!bad.empty()) return what + " " + std::to_string(i) + " " + bad;
  }
  return "";
}

}  // namespace

std::vector<TestSuite> read_bundled_program(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BundleError("cannot read the test vectors", path, "a BundledProgram (.bpte) file");
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  flatbuffers::Verifier verifier(data.data(), data.size());
  if (data.size() < 8 || !bp::BundledProgramBufferHasIdentifier(data.data()) ||
      !bp::VerifyBundledProgramBuffer(verifier)) {
    throw BundleError("the test vectors are not a BundledProgram", path + " (" + std::to_string(data.size()) +
                      " bytes)", "a flatbuffer with identifier BP08", "the file is damaged; re-export the bundle");
  }
  std::vector<TestSuite> suites;
  const auto* all = bp::GetBundledProgram(data.data())->method_test_suites();
  if (all == nullptr) return suites;
  for (const bp::BundledMethodTestSuite* s : *all) {
    TestSuite suite;
    suite.method = s->method_name() ? s->method_name()->str() : "";
    if (s->test_cases()) {
      for (flatbuffers::uoffset_t c = 0; c < s->test_cases()->size() && suite.problem.empty(); ++c) {
        const bp::BundledMethodTestCase* tc = s->test_cases()->Get(c);
        suite.cases.emplace_back();
        const std::string where = "case " + std::to_string(c);
        suite.problem = read_values(tc->inputs(), where + " input", &suite.cases.back().inputs);
        if (suite.problem.empty()) {
          suite.problem = read_values(tc->expected_outputs(), where + " output", &suite.cases.back().expected_outputs);
        }
      }
    }
    suites.push_back(std::move(suite));
  }
  return suites;
}

}  // namespace edgeexit
