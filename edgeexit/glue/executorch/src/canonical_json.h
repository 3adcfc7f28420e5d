// The manifest's seal, computed exactly as Python computes it (edgeexit.bundle.manifest.digest): the sha256 of
//   json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)      (ensure_ascii=True, the default)
// where body is json.loads(manifest.json) without its top-level "checksum". The canonical text is produced here
// from the manifest's own bytes, not from a parsed nlohmann::json, because only the text keeps what Python keeps:
// integers of any size, lone surrogates in \u escapes, the last of two equal keys.
#pragma once

#include <string>

namespace edgeexit {

// Python's json.dumps text (as above) of the JSON document `text`, with the top-level key "checksum" dropped when
// the document is an object. Throws edgeexit::Error (EE_ERR_BUNDLE) where Python's json.loads / json.dumps would
// raise: not JSON, invalid UTF-8, a number out of double range (json.dumps refuses inf), nesting deeper than
// kMaxDepth.
std::string canonical_manifest_json(const std::string& text);

// repr(float(x)) for a finite double, as Python prints it ("0.1", "1e-05", "1e+16", "-0.0", "5e-324").
std::string python_float_repr(double x);

constexpr int kMaxDepth = 256;

}  // namespace edgeexit
