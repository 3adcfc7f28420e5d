// The device's check of itself: the bundle's test vectors (pte/program.bpte, ExecuTorch's BundledProgram: one
// MethodTestSuite per method) run through the methods of the program the runtime actually runs (program.pte, same
// method names), compared with the tolerance of the bundle's precision.
#pragma once

#include <string>
#include <vector>

#include "runtime.h"

namespace edgeexit {

struct MethodCheck {
  std::string method;
  int cases = 0;             // test cases run
  bool passed = false;       // every case ran and every output element is within the tolerance
  double max_abs_error = 0;  // max |got - want| over the cases' outputs
  double max_error = 0;      // max |got - want| / (1 + |want|): what the tolerance bounds
  std::string detail;        // why it failed (the first failure); "" when passed
};

struct Verification {
  std::string path;  // the .bpte read
  double tolerance = 0;
  std::vector<MethodCheck> methods;  // the exits' segments, the reference, then any other suite, in the file's order

  bool passed() const;
};

// The tolerance the export checked the program with (edgeexit.export.lower_pte.TOLERANCE): an element passes when
// |got - want| <= tolerance * (1 + |want|), as BundledProgram's own check with rtol = atol = tolerance.
double tolerance_for(const std::string& precision);

// Runs every test case of the BundledProgram at `bpte_path` ("" : the bundle's own, listed in its `files` and so
// checked against its sha256 when the bundle was opened). A method the manifest needs (every exit's segment and
// the reference) without test vectors fails. Throws edgeexit::Error when the file is missing or not a
// BundledProgram; failures of single methods (a wrong value, a method that does not run) are reported in the result.
Verification verify_bundled(Runtime& runtime, const std::string& bpte_path);

}  // namespace edgeexit
