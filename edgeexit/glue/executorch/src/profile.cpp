#include "profile.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <functional>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

#include "error.h"

#ifndef EDGEEXIT_EXECUTORCH_VERSION
#define EDGEEXIT_EXECUTORCH_VERSION ""  // CMake passes the version of the ExecuTorch package it linked
#endif

namespace edgeexit {
namespace {

using Json = nlohmann::ordered_json;  // keys in the order written, as the Python runner writes them

std::vector<float> normal(size_t count, std::mt19937_64& gen) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(count);
  for (float& v : x) v = dist(gen);
  return x;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The CPU's name as the Python runner finds it: /proc/cpuinfo's "model name" (x86), else "Hardware" or "Model"
// (Arm boards, phones).
std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, found[3];
  const char* keys[3] = {"model name", "hardware", "model"};
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    auto trim = [](std::string& t) {
      t.erase(0, t.find_first_not_of(" \t"));
      t.erase(t.find_last_not_of(" \t") + 1);
    };
    trim(key);
    trim(value);
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    for (int i = 0; i < 3; ++i) {
      if (key == keys[i] && found[i].empty()) found[i] = value;
    }
  }
  for (const std::string& f : found) {
    if (!f.empty()) return f;
  }
  struct utsname u {};
  return ::uname(&u) == 0 && u.machine[0] ? u.machine : "unknown";  // Python's platform.processor() fallback
}

Json device() {
  Json d;
  struct utsname u {};
  const bool ok = ::uname(&u) == 0;
  d["hostname"] = ok ? u.nodename : "unknown";
  d["system"] = ok ? u.sysname : "unknown";
  d["machine"] = ok ? u.machine : "unknown";
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  d["cpus"] = cpus > 0 ? cpus : 1;
  d["cpu"] = cpu_name();
  return d;
}

Json peak_rss_mb() {
  struct rusage usage {};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return nullptr;
#if defined(__APPLE__)
  return double(usage.ru_maxrss) / (1024.0 * 1024.0);  // bytes on Darwin
#else
  return double(usage.ru_maxrss) / 1024.0;  // kilobytes on Linux and Android
#endif
}

// Records what a profile entry ran, in the runtime's trace when one is set (see Runtime::trace).
void note(Runtime& rt, const std::string& what) {
  if (rt.trace != nullptr) rt.trace->push_back(what);
}

// What one batch size times: name -> one call. The inputs live in `inputs` (stable addresses).
struct Entries {
  std::vector<std::pair<std::string, std::function<void()>>> calls;
  std::vector<std::vector<float>> inputs;
  std::vector<int64_t> predictions;
  std::vector<int32_t> exits;
  std::vector<float> logits;
};

void make_entries(Runtime& rt, int64_t batch, std::mt19937_64& gen, Entries* out) {
  const Bundle& b = rt.bundle();
  const size_t n = b.exits.size();
  out->inputs.reserve(2 * n + 1);  // no reallocation: the calls hold pointers into it
  const int64_t sample = b.input_shape[0] * b.input_shape[1] * b.input_shape[2];
  out->inputs.push_back(normal(size_t(batch * sample), gen));  // the images: full, the exit loop, static models
  float* x = out->inputs.back().data();
  out->predictions.resize(size_t(batch));
  out->exits.resize(size_t(batch));
  out->logits.resize(size_t(batch * b.num_classes));

  // Each segment's real input: the previous segment's features on these images (as the Python runner feeds them).
  std::vector<float*> feeds = {x};
  std::vector<BoundMethod*> segments;
  for (size_t k = 0; k < n; ++k) {
    BoundMethod& seg = rt.method(b.exits[k]);
    segments.push_back(&seg);
    seg.execute(feeds.back(), batch);
    const int features = b.exits[k].output_index("features");
    if (k + 1 < n) {
      const float* f = seg.output(size_t(features));
      out->inputs.emplace_back(f, f + batch * seg.output_numel(size_t(features)));
      feeds.push_back(out->inputs.back().data());
    }
  }

  BoundMethod& full = rt.method(b.reference);
  // Twice the same work: their ratio is the measurement's own noise (the host reads it as such).
  out->calls.emplace_back("full", [&rt, &full, x, batch] { full.execute(x, batch), note(rt, "full"); });
  out->calls.emplace_back("full_repeat", [&rt, &full, x, batch] { full.execute(x, batch), note(rt, "full"); });
  for (size_t k = 0; k < n; ++k) {
    out->calls.emplace_back("exit" + std::to_string(k), [&rt, out, x, batch, k] {
      rt.run(x, batch, out->predictions.data(), out->exits.data(), out->logits.data(), int(k));
    });
  }
  for (size_t k = 0; k + 1 < n; ++k) {
    out->calls.emplace_back("answer" + std::to_string(k), [&rt, out, x, batch, k] {
      rt.run_answering(x, batch, out->predictions.data(), out->exits.data(), out->logits.data(), int(k));
    });
  }
  for (size_t k = 0; k < n; ++k) {
    BoundMethod* seg = segments[k];
    float* in = feeds[k];
    out->calls.emplace_back("segment" + std::to_string(k), [&rt, seg, in, batch, k] {
      seg->execute(in, batch), note(rt, "segment" + std::to_string(k));
    });
  }
  for (size_t k = 0; k < n; ++k) {
    if (!b.exits[k].head) continue;
    BoundMethod& head = rt.method(*b.exits[k].head);
    // A head takes its segment's features; random ones where the segment has none of the head's size.
    float* in = nullptr;
    if (k + 1 < n && head.input_numel() == segments[k]->output_numel(size_t(b.exits[k].output_index("features")))) {
      in = feeds[k + 1];
    } else {
      out->inputs.push_back(normal(size_t(batch * head.input_numel()), gen));
      in = out->inputs.back().data();
    }
    out->calls.emplace_back("head" + std::to_string(k), [&rt, &head, in, batch, k] {
      head.execute(in, batch), note(rt, "head" + std::to_string(k));
    });
  }
  for (size_t k = 0; k < n; ++k) {
    if (!b.exits[k].static_model) continue;
    BoundMethod& net = rt.method(*b.exits[k].static_model);
    out->calls.emplace_back("static" + std::to_string(k), [&rt, &net, x, batch, k] {
      net.execute(x, batch), note(rt, "static" + std::to_string(k));
    });
  }
  // full_repeat half a round away from full: right after it, it would find the weights still in cache and come out
  // faster (25 % at batch 1 on a 2-core x86 box), so the pair would measure the cache, not the noise.
  auto rep = std::find_if(out->calls.begin(), out->calls.end(), [](const auto& c) { return c.first == "full_repeat"; });
  auto moved = std::move(*rep);
  out->calls.erase(rep);
  out->calls.insert(out->calls.begin() + std::ptrdiff_t(out->calls.size() / 2), std::move(moved));
}

}  // namespace

// edgeexit.timing.PRIME_MS and MAX_PRIME: one call of the entry before its figure left ExecuTorch's unsplit model
// 70 % slower than back to back (cold caches, sleeping XNNPACK threads); 20 ms of calls brings it within a few %
constexpr double kPrimeMs = 20.0;
constexpr int kMaxPrime = 1000;

std::string profile_json(Runtime& rt, const ProfileOptions& o) {
  const Bundle& b = rt.bundle();
  if (o.rounds < 1 || o.calls < 1 || o.warmup < 0) {
    throw ArgumentError("profile: rounds and calls must be >= 1, warmup >= 0",
                        std::to_string(o.rounds) + ", " + std::to_string(o.calls) + ", " + std::to_string(o.warmup),
                        "rounds >= 1, calls >= 1, warmup >= 0");
  }
  std::vector<int64_t> batches = o.batches;
  if (batches.empty()) batches = b.max_batch > 1 ? std::vector<int64_t>{1, b.max_batch} : std::vector<int64_t>{1};
  for (int64_t batch : batches) {
    if (batch < b.min_batch || batch > b.max_batch) {
      throw ArgumentError("profile: batch " + std::to_string(batch) + " is outside the bundle's batch range",
                          std::to_string(batch),
                          std::to_string(b.min_batch) + " <= batch <= " + std::to_string(b.max_batch),
                          "the programs are exported for that range (manifest batch)");
    }
  }
  std::mt19937_64 gen(o.seed);
  Json by_batch = Json::object();
  Json executed = Json::object();
  for (int64_t batch : batches) {
    Entries entries;
    make_entries(rt, batch, gen, &entries);
    auto& calls = entries.calls;
    if (executed.empty()) {  // what each entry runs (the same at every batch size): one traced call each
      for (auto& entry : calls) {
        std::vector<std::string> trace;
        rt.trace = &trace;
        try {
          entry.second();
        } catch (...) {
          rt.trace = nullptr;
          throw;
        }
        rt.trace = nullptr;
        executed[entry.first] = trace;
      }
    }
    for (auto& entry : calls) {
      for (int w = 0; w < o.warmup; ++w) entry.second();
    }
    std::vector<std::vector<double>> figures(calls.size());
    std::vector<double> times(size_t(o.calls));
    for (int r = 0; r < o.rounds; ++r) {
      // Every entry in turn, the order rotated each round, so that drift (clock, heat, other load) hits all alike.
      for (size_t i = 0; i < calls.size(); ++i) {
        const size_t e = (i + size_t(r)) % calls.size();
        // Prime: untimed calls of the same entry for kPrimeMs (at least one), so that each figure starts from its
        // own warm caches and awake worker threads whatever ran before it (edgeexit.timing.PRIME_MS, the same)
        const auto p0 = std::chrono::steady_clock::now();
        for (int p = 0; p < kMaxPrime; ++p) {
          calls[e].second();
          const std::chrono::duration<double, std::milli> primed = std::chrono::steady_clock::now() - p0;
          if (primed.count() >= kPrimeMs) break;
        }
        for (int c = 0; c < o.calls; ++c) {
          auto t0 = std::chrono::steady_clock::now();
          calls[e].second();
          times[size_t(c)] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        }
        figures[e].push_back(median(times));
      }
    }
    Json table = Json::object();
    for (size_t e = 0; e < calls.size(); ++e) table[calls[e].first] = figures[e];
    by_batch[std::to_string(batch)] = table;
  }

  Json out;
  out["format"] = "edgeexit-device-profile/1";
  out["runner"] = "cpp";
  out["backend"] = "executorch";
  out["bundle_checksum"] = b.checksum;
  out["device"] = device();
  const std::string et_version = EDGEEXIT_EXECUTORCH_VERSION;
  out["versions"] = {{"executorch", et_version.empty() ? "unknown" : et_version}, {"runner", b.edgeexit_version}};
  out["warmup"] = o.warmup;
  out["rounds"] = o.rounds;
  out["calls"] = o.calls;
  out["prime_ms"] = kPrimeMs;
  out["batches"] = by_batch;
  out["peak_rss_mb"] = peak_rss_mb();
  out["executed"] = executed;
  return out.dump() + "\n";
}

}  // namespace edgeexit
