// On-device profile of a bundle (issue 11, the `adb://` and `ssh://` device path): per batch size, the time of the
// unsplit model (twice: `full` and `full_repeat`, whose ratio is the measurement's own noise), of answering at
// each exit through the real exit loop, of each segment (on its real input), head and static model alone, in
// alternating rounds. Writes the JSON that the Python device runner writes
// ("edgeexit-device-profile/1"); the host turns it into the report.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime.h"

namespace edgeexit {

struct ProfileOptions {
  std::vector<int64_t> batches;  // empty: 1 and the bundle's batch.max
  int rounds = 30;               // figures per entry: each the median of `calls` back-to-back calls
  int calls = 5;
  int warmup = 5;                // calls of every entry before the first round
  uint64_t seed = 0;             // of the random normal inputs
};

// The profile as JSON text. Throws edgeexit::Error (a batch outside the bundle's range, counts < 1, ...).
std::string profile_json(Runtime& runtime, const ProfileOptions& options);

}  // namespace edgeexit
