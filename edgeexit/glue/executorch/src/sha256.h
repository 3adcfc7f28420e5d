// SHA-256 (FIPS 180-4), self-contained so that the runner needs no OpenSSL on Android or iOS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgeexit {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::string hexdigest();  // finishes the hash; call once

 private:
  void block(const uint8_t* p);

  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes hashed so far
};

// The lowercase hex sha256 of a file's bytes; throws edgeexit::Error (EE_ERR_BUNDLE) when it cannot be read.
std::string sha256_file(const std::string& path);

// The lowercase hex sha256 of bytes in memory.
std::string sha256_hex(const std::string& bytes);

}  // namespace edgeexit
