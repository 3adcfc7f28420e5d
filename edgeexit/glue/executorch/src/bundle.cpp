#include "bundle.h"

#include <algorithm>
#include <dirent.h>
#include <sys/stat.h>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "canonical_json.h"
#include "error.h"
#include "schema.h"
#include "sha256.h"

namespace edgeexit {
namespace {

using nlohmann::json;

constexpr const char* kManifest = "manifest.json";
constexpr size_t kMaxManifestBytes = 16 << 20;  // a manifest is a few kB; refuse to parse a huge one
constexpr const char* kBundled = "pte/program.bpte";  // edgeexit.export.lower_pte.BUNDLED
constexpr int kSchemaVersion = 2;

// The absolute path with links resolved; "" when it does not exist.
std::string real_path(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (real == nullptr) return "";
  std::string out(real);
  std::free(real);
  return out;
}

std::string read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw BundleError("not a bundle: " + what + " is missing", path, what + " in the bundle directory",
                      "point at the directory `edgeexit export` wrote");
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

json parse_json(const std::string& text, const std::string& path) {
  try {
    return json::parse(text);
  } catch (const json::exception& err) {
    throw BundleError(path + " is not valid JSON", err.what(), "the file edgeexit wrote",
                      "the file was edited or truncated; rebuild the bundle");
  }
}

// The checksum exactly as Python's edgeexit.bundle.manifest.digest computes it (canonical_json.h).
void check_checksum(const std::string& text, const json& manifest) {
  const std::string want = sha256_hex(canonical_manifest_json(text));
  auto got = manifest.find("checksum");
  const std::string have = got != manifest.end() && got->is_string() ? got->get<std::string>() : "";
  if (have != want) {
    throw BundleError("manifest.json was modified after the bundle was written",
                      "checksum " + (have.empty() ? std::string("none") : have.substr(0, 12) + "..."),
                      "checksum " + want.substr(0, 12) + "...",
                      "thresholds and exits must come from `edgeexit calibrate` / `edgeexit export`; rebuild the "
                      "bundle instead of editing it");
  }
}

// Every file under the bundle must be listed in `files` (manifest.json aside), as the Python loader requires: an
// unlisted file was not written by edgeexit. Directories are walked without following links.
void check_no_unlisted(const std::string& root, const std::string& rel, const json& files, int depth = 0) {
  const std::string dir = rel.empty() ? root : root + "/" + rel;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw BundleError("cannot list the bundle directory", dir, "a readable directory");
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string child = rel.empty() ? name : rel + "/" + name;
    struct stat st {};
    if (::lstat((root + "/" + child).c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode) && depth < 32) {
      check_no_unlisted(root, child, files, depth + 1);
    } else if (child != kManifest && !files.contains(child)) {
      throw BundleError("the bundle holds a file its manifest does not list", child,
                        "only the files in manifest.json's `files` (and manifest.json)",
                        "edgeexit did not write it: remove it, or copy the bundle again from its source");
    }
  }
}

// Refuses what the Python loader refuses: absolute paths, '..', '~', backslashes, drive letters, and links that
// lead out of the bundle. Returns the absolute path.
std::string check_relative(const std::string& rel, const std::string& root) {
  bool bad = rel.empty() || rel[0] == '/' || rel[0] == '~' || rel.find('\\') != std::string::npos;
  std::stringstream parts(rel);
  std::string part;
  bool first = true;
  while (std::getline(parts, part, '/')) {
    if (part == ".." || (first && part.find(':') != std::string::npos)) bad = true;
    first = false;
  }
  if (bad) {
    throw BundleError("manifest names a path outside the bundle", rel,
                      "a relative path inside the bundle, without '..'", kReexportHint);
  }
  std::string full = root + "/" + rel;
  std::string real = real_path(full);
  if (!real.empty() && real.compare(0, root.size() + 1, root + "/") != 0) {
    throw BundleError("manifest names a path that leads outside the bundle", rel + " -> " + real,
                      "a file under " + root, "a link inside the bundle points out of it");
  }
  return full;
}

void check_sha256(const std::string& root, const std::string& rel, const std::string& want) {
  std::string path = check_relative(rel, root);
  std::ifstream probe(path, std::ios::binary);
  if (!probe) {
    throw BundleError("bundle file is missing: " + rel, "no such file", "sha256 " + want.substr(0, 12) + "...",
                      "copy the whole bundle directory, or rebuild it");
  }
  std::string got = sha256_file(path);
  if (got != want) {
    throw BundleError("bundle file was modified: " + rel, "sha256 " + got.substr(0, 12) + "...",
                      "sha256 " + want.substr(0, 12) + "...",
                      "the bundle was tampered with or damaged in transfer; rebuild or copy it again");
  }
}

TensorSpec read_tensor(const json& j) {
  TensorSpec t;
  t.name = j.at("name").get<std::string>();
  t.shape = j.at("shape").get<std::vector<int64_t>>();
  t.dtype = j.value("dtype", std::string("float32"));
  return t;
}

// segment.pte = {file, method} and the I/O of a manifest entry (an exit, the reference, a head or static model).
MethodSpec read_method(const json& j, const std::string& where) {
  auto pte = j.at("segment").find("pte");
  if (pte == j.at("segment").end() || !(*pte).value("method", json()).is_string()) {
    throw BundleError(where + " has no .pte method", j.at("segment").dump(), "segment.pte = {file, method}",
                      "export for target android or ios");
  }
  MethodSpec m;
  m.file = pte->at("file").get<std::string>();
  m.method = pte->at("method").get<std::string>();
  for (const json& t : j.at("inputs")) m.inputs.push_back(read_tensor(t));
  for (const json& t : j.at("outputs")) m.outputs.push_back(read_tensor(t));
  return m;
}

// An optional method of an exit (`head`, `static`): absent or null in older bundles.
std::optional<MethodSpec> read_optional_method(const json& e, const char* key, const std::string& where) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return std::nullopt;
  return read_method(*it, where + " " + key);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The rules of the Python model that a JSON Schema cannot say, and what this runner needs of a pte bundle.
void check_consistency(const Bundle& b, const json& m) {
  if (m.at("batch").at("min").get<int64_t>() > b.max_batch) {
    throw BundleError("manifest batch range is empty", m.at("batch").dump(), "min <= max", kReexportHint);
  }
  const std::vector<int64_t> sample(b.input_shape.begin(), b.input_shape.end());
  std::vector<int64_t> want_in = {-1};
  want_in.insert(want_in.end(), sample.begin(), sample.end());
  for (size_t k = 0; k < b.exits.size(); ++k) {
    const ExitSpec& e = b.exits[k];
    const std::string where = "exit " + std::to_string(k) + " (" + e.method + ")";
    const bool last = k + 1 == b.exits.size();
    if (e.index != int(k)) {
      throw BundleError("manifest exits are out of order", where + " has index " + std::to_string(e.index),
                        "index " + std::to_string(k), kReexportHint);
    }
    if (last && e.threshold) {
      throw BundleError("the final exit always answers: its threshold must be null",
                        where + " threshold " + std::to_string(*e.threshold), "null", kReexportHint);
    }
    if (e.inputs.size() != 1 || e.inputs[0].shape != want_in || e.inputs[0].dtype != "float32") {
      throw BundleError(where + " has another input than the exit loop feeds it",
                        e.inputs.empty() ? "no inputs" : shape_str(e.inputs[0].shape) + " " + e.inputs[0].dtype,
                        "one float32 input " + shape_str(want_in), kReexportHint);
    }
    for (const TensorSpec& o : e.outputs) {
      if (o.dtype != "float32" || o.shape.empty() || o.shape[0] != -1) {
        throw BundleError(where + " output " + o.name + " is not a float32 batch",
                          shape_str(o.shape) + " " + o.dtype, "float32 [-1, ...]", kReexportHint);
      }
    }
    int logits = e.output_index("logits");
    if (logits < 0 || e.outputs[logits].shape != std::vector<int64_t>{-1, b.num_classes}) {
      throw BundleError(where + " has no logits output of one value per class",
                        logits < 0 ? "no logits" : shape_str(e.outputs[logits].shape),
                        "logits [-1, " + std::to_string(b.num_classes) + "]", kReexportHint);
    }
    if (!last) {
      int score = e.output_index("score"), features = e.output_index("features");
      if (score < 0 || e.outputs[score].shape != std::vector<int64_t>{-1}) {
        throw BundleError(where + " has no score output [-1]", "outputs without it", "score [-1]", kReexportHint);
      }
      if (features < 0) {
        throw BundleError(where + " has no features output for the next segment", "outputs without it",
                          "features [-1, ...]", kReexportHint);
      }
      want_in = e.outputs[features].shape;  // what the next segment must take
    }
  }
  std::vector<int64_t> x = {-1};
  x.insert(x.end(), sample.begin(), sample.end());
  const std::vector<int64_t> logits_shape = {-1, b.num_classes};
  auto check_method = [&](const MethodSpec& m, const std::string& where, bool takes_x) {
    if (m.inputs.size() != 1 || m.inputs[0].dtype != "float32" || m.inputs[0].shape.empty() ||
        m.inputs[0].shape[0] != -1 || (takes_x && m.inputs[0].shape != x)) {
      throw BundleError(where + " has another input than the runner feeds it",
                        m.inputs.empty() ? "no inputs" : shape_str(m.inputs[0].shape) + " " + m.inputs[0].dtype,
                        "one float32 input " + (takes_x ? shape_str(x) : std::string("[-1, ...]")), kReexportHint);
    }
    int logits = m.output_index("logits");
    if (logits < 0 || m.outputs[logits].shape != logits_shape) {
      throw BundleError(where + " has no logits output of one value per class",
                        logits < 0 ? "no logits" : shape_str(m.outputs[logits].shape),
                        "logits " + shape_str(logits_shape), kReexportHint);
    }
  };
  check_method(b.reference, "the reference (" + b.reference.method + ")", true);
  for (const ExitSpec& e : b.exits) {
    const std::string where = "exit " + std::to_string(e.index);
    if (e.head) check_method(*e.head, where + " head (" + e.head->method + ")", false);
    if (e.static_model) check_method(*e.static_model, where + " static (" + e.static_model->method + ")", true);
  }
}

}  // namespace

int64_t TensorSpec::sample_numel() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

int MethodSpec::output_index(const std::string& name) const {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].name == name) return int(i);
  }
  return -1;
}

Bundle load_bundle(const std::string& dir) {
  std::string root = real_path(dir);
  if (root.empty()) {
    throw BundleError("bundle not found", dir, "a bundle directory", "run `edgeexit export` first");
  }
  const std::string text = read_text(root + "/" + kManifest, kManifest);
  if (text.size() > kMaxManifestBytes) {
    throw BundleError("manifest.json is too large", std::to_string(text.size()) + " bytes",
                      "at most " + std::to_string(kMaxManifestBytes) + " bytes", kReexportHint);
  }
  canonical_manifest_json(text);  // refuses what Python's json cannot read (and bounds the nesting) first
  const json manifest = parse_json(text, root + "/" + kManifest);
  if (!manifest.is_object()) {
    throw BundleError("manifest.json is not a JSON object", manifest.type_name(), "object", kReexportHint);
  }
  auto version = manifest.find("schema_version");
  if (version == manifest.end() || *version != kSchemaVersion) {
    throw BundleError("bundle has an unknown schema version",
                      version == manifest.end() ? "none" : version->dump(), std::to_string(kSchemaVersion),
                      "a newer edgeexit wrote it, or it was edited; " + std::string(kReexportHint));
  }
  // The Python loader's order: checksum, types (the compiled-in schema), paths, then every file's sha256.
  check_checksum(text, manifest);
  validate_manifest(manifest);

  const json& formats = manifest.at("formats");
  if (std::find(formats.begin(), formats.end(), json("pte")) == formats.end()) {
    throw BundleError("this runner runs .pte (ExecuTorch) bundles; this bundle holds none", formats.dump(),
                      "\"pte\" among formats", "export for target android or ios");
  }
  Bundle b;
  b.root = root;
  const json& input = manifest.at("input");
  for (int i = 0; i < 3; ++i) b.input_shape[i] = input.at("shape").at(i).get<int64_t>();
  b.num_classes = int64_t(manifest.at("class_names").size());
  b.class_names = manifest.at("class_names").get<std::vector<std::string>>();
  // float, as torch holds them (torch.tensor(mean, dtype=float32)): the same rounding as training's normalisation
  for (const json& m : input.at("mean")) b.mean.push_back(float(m.get<double>()));
  for (const json& s : input.at("std")) b.std.push_back(float(s.get<double>()));
  b.resize = input.value("resize", std::string("bilinear"));  // bundles written before the field: "bilinear"
  b.min_batch = manifest.at("batch").at("min").get<int64_t>();
  b.max_batch = manifest.at("batch").at("max").get<int64_t>();
  b.precision = manifest.at("precision").get<std::string>();
  b.checksum = manifest.at("checksum").get<std::string>();
  b.edgeexit_version = manifest.at("edgeexit_version").get<std::string>();
  for (const json& e : manifest.at("exits")) {
    ExitSpec x;
    x.index = e.at("index").get<int>();
    const std::string where = "exit " + std::to_string(x.index);
    static_cast<MethodSpec&>(x) = read_method(e, where);
    if (!e.at("threshold").is_null()) x.threshold = e.at("threshold").get<double>();
    x.head = read_optional_method(e, "head", where);
    x.static_model = read_optional_method(e, "static", where);
    b.exits.push_back(x);
  }
  b.reference = read_method(manifest.at("reference"), "the reference");
  check_consistency(b, manifest);

  const json& files = manifest.at("files");
  for (auto it = files.begin(); it != files.end(); ++it) check_relative(it.key(), root);
  std::vector<const MethodSpec*> methods = {&b.reference};
  for (const ExitSpec& e : b.exits) {
    methods.push_back(&e);
    if (e.head) methods.push_back(&*e.head);
    if (e.static_model) methods.push_back(&*e.static_model);
  }
  for (const MethodSpec* m : methods) {
    if (!files.contains(m->file)) {
      throw BundleError("manifest refers to a file it does not list (with its sha256) in `files`", m->file,
                        "every program file in files", kReexportHint);
    }
  }
  if (files.contains(kBundled)) b.bundled = kBundled;
  for (auto it = files.begin(); it != files.end(); ++it) check_sha256(root, it.key(), it.value().get<std::string>());
  check_no_unlisted(root, "", files);
  return b;
}

}  // namespace edgeexit
