// SHA-256 (FIPS 180-4), for the commit records of checkpoints: each file's digest is stored when it is
// written and compared when a run resumes, so a damaged file is found before it is trained on.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lora {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  // The digest as 64 lowercase hex digits; the object is spent afterwards.
  std::string hex();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// SHA-256 of a whole file, read in pieces; lora::Error naming the path if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace lora
