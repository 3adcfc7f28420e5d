// Validation of manifest.json against the schema compiled into this runner (schema/manifest.schema.json, which a
// test keeps equal to Python's edgeexit.bundle.manifest.json_schema()), with valijson, JSON Schema draft 7 (the
// draft the schema states). The manifest.schema.json a bundle ships is never what the runner trusts: a forger who
// replaces it (with `{}`, say) and re-seals the manifest changes nothing here.
#pragma once

#include <nlohmann/json_fwd.hpp>

namespace edgeexit {

// Throws edgeexit::Error (EE_ERR_BUNDLE) naming the first failing JSON paths and the value found at the first.
void validate_manifest(const nlohmann::json& manifest);

}  // namespace edgeexit
