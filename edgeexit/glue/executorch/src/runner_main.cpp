// edgeexit_runner BUNDLE INPUT.f32 N [--repeat R] [--logits OUT.f32] [--force-exit K]
// edgeexit_runner BUNDLE --verify [--bpte FILE]
// edgeexit_runner BUNDLE --profile [--batches 1,8] [--rounds R] [--calls C] [--warmup W] [--seed S] [--out FILE]
//
// Runs N samples of raw float32 NCHW (normalised as the manifest's input section says) through the bundle's exit
// loop and prints one JSON object: predictions, exit_index, per-segment milliseconds and the total. With --repeat R
// it runs R times and reports the mean per run (the first run included). --logits writes the answering exits'
// logits (N x num_classes float32). --force-exit K makes every sample answer at exit K (ee_run_forced).
// --verify runs the bundle's test vectors (pte/program.bpte, or FILE) through its program and prints per method
// the cases, the largest errors and pass/fail; exit status 1 when one fails.
// --profile writes the on-device profile JSON (edgeexit-device-profile/1) to FILE or stdout.
// Uses the C API only, as the Android and iOS wrappers do.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "edgeexit.h"

namespace {

bool parse_count(const char* text, long long* out) {
  char* end = nullptr;
  *out = std::strtoll(text, &end, 10);
  return end != text && *end == '\0' && *out >= 1;
}

int usage(const char* message) {
  std::fprintf(stderr, "edgeexit_runner: %s\nusage: edgeexit_runner BUNDLE INPUT.f32 N [--repeat R] "
               "[--logits OUT.f32] [--force-exit K]\n       edgeexit_runner BUNDLE --verify [--bpte FILE]\n"
               "       edgeexit_runner BUNDLE --profile [--batches 1,8] [--rounds R] [--calls C] [--warmup W] "
               "[--seed S] [--out FILE]\n", message);
  return 2;
}

std::string json_string(const std::string& text) {
  std::string s = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      s += '\\';
      s += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      s += buf;
    } else {
      s += c;
    }
  }
  return s + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

ee_runtime* open_or_report(const char* dir) {
  ee_runtime* rt = ee_open(dir);
  if (!rt) std::fprintf(stderr, "edgeexit_runner: %s\n", ee_last_error());
  return rt;
}

int verify_main(const char* bundle, int argc, char** argv) {
  const char* bpte = nullptr;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bpte") == 0 && i + 1 < argc) {
      bpte = argv[++i];
    } else {
      return usage((std::string("unknown argument ") + argv[i]).c_str());
    }
  }
  ee_runtime* rt = open_or_report(bundle);
  if (!rt) return 1;
  const int status = ee_verify(rt, bpte);
  if (status != EE_OK && status != EE_ERR_VERIFY) {  // the vectors could not be read: nothing to print
    std::fprintf(stderr, "edgeexit_runner: %s\n", ee_last_error());
    ee_close(rt);
    return 1;
  }
  std::string methods = "[";
  for (int i = 0; i < ee_verify_count(rt); ++i) {
    ee_method_check m;
    ee_verify_result(rt, i, &m);
    methods += std::string(i ? ", " : "") + "{\"method\": " + json_string(m.method) + ", \"cases\": " +
               std::to_string(m.cases) + ", \"max_abs_error\": " + json_number(m.max_abs_error) +
               ", \"max_error\": " + json_number(m.max_error) + ", \"passed\": " + (m.passed ? "true" : "false") +
               ", \"detail\": " + json_string(m.detail) + "}";
  }
  std::printf("{\"passed\": %s, \"tolerance\": %s, \"methods\": %s]}\n", status == EE_OK ? "true" : "false",
              json_number(ee_verify_tolerance(rt)).c_str(), methods.c_str());
  if (status != EE_OK) std::fprintf(stderr, "edgeexit_runner: %s\n", ee_last_error());
  ee_close(rt);
  return status == EE_OK ? 0 : 1;
}

bool parse_batches(const char* text, std::vector<int64_t>* out) {
  std::string s(text);
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    long long b = 0;
    if (!parse_count(s.substr(start, end - start).c_str(), &b)) return false;
    out->push_back(b);
    start = end + 1;
  }
  return !out->empty();
}

int profile_main(const char* bundle, int argc, char** argv) {
  std::vector<int64_t> batches;
  long long rounds = 30, calls = 5, warmup = 5, seed = 0;
  const char* out_path = nullptr;
  for (int i = 0; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--batches") == 0 && has_value) {
      if (!parse_batches(argv[++i], &batches)) return usage("--batches needs integers >= 1, e.g. 1,8");
    } else if (std::strcmp(argv[i], "--rounds") == 0 && has_value) {
      if (!parse_count(argv[++i], &rounds)) return usage("--rounds needs an integer >= 1");
    } else if (std::strcmp(argv[i], "--calls") == 0 && has_value) {
      if (!parse_count(argv[++i], &calls)) return usage("--calls needs an integer >= 1");
    } else if (std::strcmp(argv[i], "--warmup") == 0 && has_value) {
      char* end = nullptr;
      warmup = std::strtoll(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || warmup < 0) return usage("--warmup needs an integer >= 0");
    } else if (std::strcmp(argv[i], "--seed") == 0 && has_value) {
      char* end = nullptr;
      seed = std::strtoll(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || seed < 0) return usage("--seed needs an integer >= 0");
    } else if (std::strcmp(argv[i], "--out") == 0 && has_value) {
      out_path = argv[++i];
    } else {
      return usage((std::string("unknown argument ") + argv[i]).c_str());
    }
  }
  ee_runtime* rt = open_or_report(bundle);
  if (!rt) return 1;
  const char* json = ee_profile(rt, batches.empty() ? nullptr : batches.data(), int(batches.size()), int(rounds),
                                int(calls), int(warmup), uint64_t(seed));
  if (json == nullptr) {
    std::fprintf(stderr, "edgeexit_runner: %s\n", ee_last_error());
    ee_close(rt);
    return 1;
  }
  std::FILE* f = out_path ? std::fopen(out_path, "w") : stdout;
  const size_t size = std::strlen(json);
  const bool ok = f != nullptr && std::fwrite(json, 1, size, f) == size;
  if (out_path && f) std::fclose(f);
  ee_close(rt);
  if (!ok) {
    std::fprintf(stderr, "edgeexit_runner: cannot write the profile to %s\n", out_path ? out_path : "stdout");
    return 1;
  }
  return 0;
}

std::string json_list(const std::vector<double>& values) {
  std::string s = "[";
  char buf[32];
  for (size_t i = 0; i < values.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "%s%.6f", i ? ", " : "", values[i]);
    s += buf;
  }
  return s + "]";
}

template <typename T>
std::string json_ints(const std::vector<T>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + "]";
}

// Reads exactly `count` floats; the file must hold exactly that many.
bool read_input(const char* path, size_t count, std::vector<float>* x, std::string* problem) {
  std::FILE* f = std::fopen(path, "rb");
  if (!f) {
    *problem = std::string("cannot open input ") + path;
    return false;
  }
  std::fseek(f, 0, SEEK_END);
  long size = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  // The file's size is checked before anything is allocated: N comes from the command line.
  bool ok = size >= 0 && count != 0 && size_t(size) / sizeof(float) == count && size_t(size) % sizeof(float) == 0;
  if (ok) {
    x->resize(count);
    ok = std::fread(x->data(), sizeof(float), count, f) == count;
  }
  std::fclose(f);
  if (!ok) {
    *problem = std::string("input ") + path + " has the wrong size | got: " + std::to_string(size) +
               " bytes | expected: " + (count ? std::to_string(count * sizeof(float)) : std::string("N x C x H x W x 4")) +
               " bytes (N x C x H x W float32) | hint: write it with numpy: x.astype('<f4').tofile(path)";
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[2], "--verify") == 0) return verify_main(argv[1], argc - 3, argv + 3);
  if (argc >= 3 && std::strcmp(argv[2], "--profile") == 0) return profile_main(argv[1], argc - 3, argv + 3);
  if (argc < 4) return usage("expected BUNDLE INPUT.f32 N");
  long long n = 0, repeat = 1;
  if (!parse_count(argv[3], &n)) return usage("N must be an integer >= 1");
  const char* logits_path = nullptr;
  long long force_exit = -1;
  for (int i = 4; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      if (!parse_count(argv[++i], &repeat)) return usage("--repeat needs an integer >= 1");
    } else if (std::strcmp(argv[i], "--logits") == 0 && i + 1 < argc) {
      logits_path = argv[++i];
    } else if (std::strcmp(argv[i], "--force-exit") == 0 && i + 1 < argc) {
      char* end = nullptr;
      force_exit = std::strtoll(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || force_exit < 0) return usage("--force-exit needs an exit index >= 0");
    } else {
      return usage((std::string("unknown argument ") + argv[i]).c_str());
    }
  }

  ee_runtime* rt = open_or_report(argv[1]);
  if (!rt) return 1;
  int64_t chw[3];
  ee_input_shape(rt, chw);
  std::vector<float> x;
  std::string problem;
  const long long sample = chw[0] * chw[1] * chw[2];
  // n x C x H x W overflowing is as wrong as a file of the wrong size (count 0 never matches a file)
  const size_t count = n > (1LL << 46) / (long long)sizeof(float) / sample ? 0 : size_t(n * sample);
  if (!read_input(argv[2], count, &x, &problem)) {
    std::fprintf(stderr, "edgeexit_runner: %s\n", problem.c_str());
    ee_close(rt);
    return 1;
  }
  const int exits_count = ee_num_exits(rt);
  std::vector<int64_t> predictions(static_cast<size_t>(n));
  std::vector<int32_t> exits(static_cast<size_t>(n));
  std::vector<float> logits(size_t(n * ee_num_classes(rt)));
  std::vector<double> segment_ms(size_t(exits_count), 0.0);
  double total_ms = 0;
  for (long long r = 0; r < repeat; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    int status = force_exit < 0
                     ? ee_run(rt, x.data(), n, predictions.data(), exits.data(), logits.data())
                     : ee_run_forced(rt, int(force_exit), x.data(), n, predictions.data(), exits.data(), logits.data());
    total_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (status != EE_OK) {
      std::fprintf(stderr, "edgeexit_runner: %s\n", ee_last_error());
      ee_close(rt);
      return 1;
    }
    for (int k = 0; k < exits_count; ++k) segment_ms[size_t(k)] += ee_segment_ms(rt, k);
  }
  for (double& ms : segment_ms) ms /= double(repeat);
  std::string delegates = "[";
  for (int k = 0; k < exits_count; ++k) {
    delegates += std::string(k ? ", " : "") + "\"" + ee_segment_delegates(rt, k) + "\"";
  }
  delegates += "]";
  ee_close(rt);

  if (logits_path) {
    std::FILE* f = std::fopen(logits_path, "wb");
    if (!f || std::fwrite(logits.data(), sizeof(float), logits.size(), f) != logits.size()) {
      std::fprintf(stderr, "edgeexit_runner: cannot write logits to %s\n", logits_path);
      if (f) std::fclose(f);
      return 1;
    }
    std::fclose(f);
  }
  std::printf("{\"predictions\": %s, \"exit_index\": %s, \"segment_ms\": %s, \"total_ms\": %.6f, "
              "\"repeat\": %lld, \"delegates\": %s}\n",
              json_ints(predictions).c_str(), json_ints(exits).c_str(), json_list(segment_ms).c_str(),
              total_ms / double(repeat), repeat, delegates.c_str());
  return 0;
}
