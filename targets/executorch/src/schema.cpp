// Kept apart from bundle.cpp: valijson's templates are most of the build time, and a separate file compiles in
// parallel with the rest.
#include "schema.h"

#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

#include "error.h"

namespace edgeexit {
namespace {

using nlohmann::json;

constexpr const char* kSchema = "manifest.schema.json";

// The JSON pointer of the value an error is about, from valijson's context ("<root>", "[exits]", "[0]", ...).
std::string json_path(const valijson::ValidationResults::Error& e) {
  std::string where;
  for (const std::string& c : e.context) {
    if (c == "<root>") continue;
    std::string name = c;
    if (name.size() >= 2 && name.front() == '[' && name.back() == ']') name = name.substr(1, name.size() - 2);
    if (name.size() >= 2 && name.front() == '"' && name.back() == '"') name = name.substr(1, name.size() - 2);
    std::string escaped;  // as a JSON pointer token: ~ -> ~0, / -> ~1
    for (char ch : name) escaped += ch == '~' ? "~0" : ch == '/' ? "~1" : std::string(1, ch);
    where += "/" + escaped;
  }
  return where;
}

// What sits at a JSON pointer of the manifest, shortened, for the message ("" when it cannot be read).
std::string value_at(const json& manifest, const std::string& pointer) {
  try {
    std::string v = manifest.at(json::json_pointer(pointer)).dump();
    return v.size() > 60 ? v.substr(0, 57) + "..." : v;
  } catch (const std::exception&) {
    return "";
  }
}

}  // namespace

void validate_manifest(const json& manifest, const json& schema_doc) {
  valijson::Schema schema;
  valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
  valijson::adapters::NlohmannJsonAdapter schema_adapter(schema_doc);
  try {
    parser.populateSchema(schema_adapter, schema);
  } catch (const std::exception& err) {
    throw BundleError(std::string("cannot read ") + kSchema, err.what(), "a JSON Schema edgeexit wrote",
                      kReexportHint);
  }
  valijson::Validator validator(valijson::Validator::kStrongTypes);
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter target(manifest);
  if (validator.validate(schema, target, &results)) return;
  // valijson reports the deepest problem first, then each enclosing object again: show the first error of each
  // distinct path, the value found at the first one, at most three paths.
  size_t count = results.numErrors();
  std::vector<std::string> seen;
  std::string problems;
  valijson::ValidationResults::Error e;
  while (results.popError(e) && seen.size() < 3) {
    std::string where = json_path(e);
    if (std::find(seen.begin(), seen.end(), where) != seen.end()) continue;
    std::string value = seen.empty() && !where.empty() ? value_at(manifest, where) : "";
    problems += (seen.empty() ? "" : "; ") + (where.empty() ? "/" : where) + (value.empty() ? "" : " = " + value) +
                ": " + e.description;
    seen.push_back(where);
  }
  throw BundleError("manifest.json does not match the v2 schema (manifest.schema.json)",
                    std::to_string(count) + " problem(s): " + problems, "a manifest edgeexit wrote",
                    kReexportHint);
}

}  // namespace edgeexit
