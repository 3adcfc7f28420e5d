// The one error type of the C++ side: message = what failed | got | expected | hint (like edgeexit.errors),
// plus the C API status code it maps to.
#pragma once

#include <stdexcept>
#include <string>

#include "edgeexit.h"

namespace edgeexit {

class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& what, const std::string& got = "", const std::string& expected = "",
        const std::string& hint = "")
      : std::runtime_error(format(what, got, expected, hint)), code_(code) {}

  int code() const { return code_; }

 private:
  static std::string format(const std::string& what, const std::string& got, const std::string& expected,
                            const std::string& hint) {
    std::string s = what;
    if (!got.empty()) s += " | got: " + got;
    if (!expected.empty()) s += " | expected: " + expected;
    if (!hint.empty()) s += " | hint: " + hint;
    return s;
  }

  int code_;
};

inline Error BundleError(const std::string& what, const std::string& got = "", const std::string& expected = "",
                         const std::string& hint = "") {
  return Error(EE_ERR_BUNDLE, what, got, expected, hint);
}

inline Error ArgumentError(const std::string& what, const std::string& got = "", const std::string& expected = "",
                           const std::string& hint = "") {
  return Error(EE_ERR_ARGUMENT, what, got, expected, hint);
}

inline Error RuntimeError(const std::string& what, const std::string& got = "", const std::string& expected = "",
                          const std::string& hint = "") {
  return Error(EE_ERR_RUNTIME, what, got, expected, hint);
}

constexpr const char* kReexportHint = "re-export it from its run directory: `edgeexit export --run-dir RUN`";

}  // namespace edgeexit
