#include "verify.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "bundled_program.h"
#include "error.h"

namespace edgeexit {
namespace {

std::string dims_str(const std::vector<int32_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// One method's test cases through `method`; fills `check` (a case that does not fit the method throws).
void run_suite(BoundMethod& method, const TestSuite& suite, double tolerance, MethodCheck* check) {
  if (!suite.problem.empty()) throw BundleError("the test vectors of " + suite.method + ": " + suite.problem);
  if (suite.cases.empty()) throw BundleError("the test suite of " + suite.method + " has no test cases");
  std::string failure;
  for (size_t c = 0; c < suite.cases.size(); ++c) {
    const TestCase& tc = suite.cases[c];
    const std::string where = "case " + std::to_string(c);
    if (tc.inputs.size() != 1) {
      throw BundleError(where + " does not have one input", std::to_string(tc.inputs.size()) + " inputs",
                        "one float32 tensor, as the method takes");
    }
    std::vector<int32_t> dims = tc.inputs[0].dims;
    std::vector<int32_t> sample(dims.begin() + 1, dims.end());
    if (sample != method.input_sample() || dims[0] < 1 || dims[0] > method.batch_bound()) {
      std::vector<int32_t> bound = {int32_t(method.batch_bound())};
      bound.insert(bound.end(), method.input_sample().begin(), method.input_sample().end());
      throw BundleError(where + " input does not fit the method", dims_str(dims), "dims up to " + dims_str(bound));
    }
    const int64_t rows = dims[0];
    std::vector<float> input = tc.inputs[0].data;  // ExecuTorch takes a mutable buffer
    method.execute(input.data(), rows);
    if (tc.expected_outputs.size() != method.num_outputs()) {
      throw BundleError(where + " expects another number of outputs than the method has",
                        std::to_string(tc.expected_outputs.size()), std::to_string(method.num_outputs()));
    }
    for (size_t i = 0; i < method.num_outputs(); ++i) {
      const VectorTensor& want = tc.expected_outputs[i];
      const std::string out = where + " output " + std::to_string(i);
      std::vector<int32_t> got_dims = {int32_t(rows)};
      got_dims.insert(got_dims.end(), method.output_sample(i).begin(), method.output_sample(i).end());
      if (want.dims != got_dims) {
        throw BundleError(out + " has other dims than the method's", dims_str(want.dims), dims_str(got_dims));
      }
      const float* got = method.output(i);
      for (size_t j = 0; j < want.data.size(); ++j) {
        const double diff = std::fabs(double(got[j]) - double(want.data[j]));
        const double error = diff / (1.0 + std::fabs(double(want.data[j])));
        if (!(error <= tolerance) && failure.empty()) {  // NaN fails too
          char buf[160];
          std::snprintf(buf, sizeof(buf), " element %zu: got %.7g, expected %.7g (error %.3g > tolerance %.3g)", j,
                        double(got[j]), double(want.data[j]), error, tolerance);
          failure = out + buf;
        }
        if (std::isnan(diff) || std::isnan(check->max_error)) {
          check->max_abs_error = check->max_error = NAN;
        } else {
          check->max_abs_error = std::max(check->max_abs_error, diff);
          check->max_error = std::max(check->max_error, error);
        }
      }
    }
    ++check->cases;
  }
  check->passed = failure.empty();
  check->detail = failure;
}

}  // namespace

bool Verification::passed() const {
  if (methods.empty()) return false;
  for (const MethodCheck& m : methods) {
    if (!m.passed) return false;
  }
  return true;
}

double tolerance_for(const std::string& precision) {
  if (precision == "fp32") return 1e-4;
  // int8 XNNPACK kernels round differently from the converted module's reference kernels (lower_pte.py)
  if (precision == "int8") return 0.1;
  throw BundleError("no tolerance for the test vectors of a " + precision + " bundle", precision, "fp32 or int8",
                    "ExecuTorch bundles are exported as fp32 or int8");
}

Verification verify_bundled(Runtime& runtime, const std::string& bpte_path) {
  const Bundle& b = runtime.bundle();
  Verification result;
  result.tolerance = tolerance_for(b.precision);
  if (bpte_path.empty()) {
    if (b.bundled.empty()) {
      // a deployable bundle (export --slim) carries them only with --slim-vectors: its development bundle's
      // vectors hold for it (the same program.pte), so say how to use those
      throw BundleError("the bundle has no test vectors", "no pte/program.bpte in its files",
                        "pte/program.bpte (ExecuTorch's BundledProgram)",
                        "a deployable bundle carries them only when exported with --slim-vectors; verify it with "
                        "its development bundle's: --bpte RUN/bundle/pte/program.bpte (ee_verify's bpte_path), or "
                        "re-export: `edgeexit export --run-dir RUN --target android --slim-vectors`");
    }
    result.path = b.root + "/" + b.bundled;
  } else {
    result.path = bpte_path;
  }
  const std::vector<TestSuite> all = read_bundled_program(result.path);

  // The methods the manifest names, with their I/O; the exits' segments and the reference must have vectors.
  std::map<std::string, const MethodSpec*> named;
  std::vector<std::string> required;
  for (const ExitSpec& e : b.exits) {
    named[e.method] = &e;
    required.push_back(e.method);
    if (e.head) named[e.head->method] = &*e.head;
    if (e.static_model) named[e.static_model->method] = &*e.static_model;
  }
  named[b.reference.method] = &b.reference;
  required.push_back(b.reference.method);

  std::map<std::string, const TestSuite*> suites;
  std::vector<std::string> order = required;
  for (const TestSuite& s : all) {
    if (suites.count(s.method)) throw BundleError("the test vectors hold two suites for method " + s.method);
    suites[s.method] = &s;
    if (std::find(order.begin(), order.end(), s.method) == order.end()) order.push_back(s.method);
  }
  for (const std::string& name : order) {
    MethodCheck check;
    check.method = name;
    auto suite = suites.find(name);
    if (suite == suites.end()) {
      check.detail = "no test vectors for this method";
    } else {
      try {
        auto spec = named.find(name);
        // A suite of a method the manifest does not name runs on the segments' program (program.pte).
        BoundMethod& method = spec != named.end() ? runtime.method(*spec->second)
                                                  : runtime.method(b.exits[0].file, name);
        run_suite(method, *suite->second, result.tolerance, &check);
      } catch (const Error& err) {
        check.passed = false;
        check.detail = err.what();
      }
    }
    result.methods.push_back(check);
  }
  return result;
}

}  // namespace edgeexit
