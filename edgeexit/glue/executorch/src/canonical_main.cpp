// edgeexit_canonical FILE: prints the canonical JSON text of FILE that the runner hashes for the manifest's checksum
// (canonical_json.h), for tests/test_cpp_trust.py to compare byte for byte with Python's json.dumps. Exit status 1
// and the error on stderr where the runner would refuse the manifest.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "canonical_json.h"
#include "error.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: edgeexit_canonical FILE\n");
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  try {
    const std::string out = edgeexit::canonical_manifest_json(text.str());
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  } catch (const edgeexit::Error& err) {
    std::fprintf(stderr, "%s\n", err.what());
    return 1;
  }
}
