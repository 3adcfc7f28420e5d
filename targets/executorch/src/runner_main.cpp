// edgeexit_runner BUNDLE INPUT.f32 N [--repeat R] [--logits OUT.f32]
//
// Runs N samples of raw float32 NCHW (normalised as the manifest's input section says) through the bundle's exit
// loop and prints one JSON object: predictions, exit_index, per-segment milliseconds and the total. With --repeat R
// it runs R times and reports the mean per run (the first run included). --logits writes the answering exits'
// logits (N x num_classes float32). Uses the C API only, as the Android and iOS wrappers do.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "edgeexit.h"

namespace {

int usage(const char* message) {
  std::fprintf(stderr, "edgeexit_runner: %s\nusage: edgeexit_runner BUNDLE INPUT.f32 N [--repeat R] "
               "[--logits OUT.f32]\n", message);
  return 2;
}

bool parse_count(const char* text, long long* out) {
  char* end = nullptr;
  *out = std::strtoll(text, &end, 10);
  return end != text && *end == '\0' && *out >= 1;
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
  x->resize(count);
  bool ok = size >= 0 && size_t(size) == count * sizeof(float) &&
            std::fread(x->data(), sizeof(float), count, f) == count;
  std::fclose(f);
  if (!ok) {
    *problem = std::string("input ") + path + " has the wrong size | got: " + std::to_string(size) +
               " bytes | expected: " + std::to_string(count * sizeof(float)) +
               " bytes (N x C x H x W float32) | hint: write it with numpy: x.astype('<f4').tofile(path)";
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage("expected BUNDLE INPUT.f32 N");
  long long n = 0, repeat = 1;
  if (!parse_count(argv[3], &n)) return usage("N must be an integer >= 1");
  const char* logits_path = nullptr;
  for (int i = 4; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      if (!parse_count(argv[++i], &repeat)) return usage("--repeat needs an integer >= 1");
    } else if (std::strcmp(argv[i], "--logits") == 0 && i + 1 < argc) {
      logits_path = argv[++i];
    } else {
      return usage((std::string("unknown argument ") + argv[i]).c_str());
    }
  }

  ee_runtime* rt = ee_open(argv[1]);
  if (!rt) {
    std::fprintf(stderr, "edgeexit_runner: %s\n", ee_last_error());
    return 1;
  }
  int64_t chw[3];
  ee_input_shape(rt, chw);
  std::vector<float> x;
  std::string problem;
  if (!read_input(argv[2], size_t(n * chw[0] * chw[1] * chw[2]), &x, &problem)) {
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
    int status = ee_run(rt, x.data(), n, predictions.data(), exits.data(), logits.data());
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
