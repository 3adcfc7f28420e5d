// Validation of manifest.json against the bundle's manifest.schema.json with valijson.
//
// valijson speaks draft 7; the schema says draft 2020-12. What the manifest's schema uses ($defs reached through
// "#/$defs/..." JSON pointers, const, enum, anyOf, propertyNames, numeric exclusiveMinimum, additionalProperties)
// means the same in both drafts, and valijson ignores $schema and $id, so the schema is parsed as written.
#pragma once

#include <nlohmann/json_fwd.hpp>

namespace edgeexit {

// Throws edgeexit::Error (EE_ERR_BUNDLE) naming the first failing JSON paths and the value found at the first.
void validate_manifest(const nlohmann::json& manifest, const nlohmann::json& schema);

}  // namespace edgeexit
