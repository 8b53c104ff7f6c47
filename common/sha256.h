// SHA-256 (FIPS 180-4), for fingerprints of model files such as
// tokenizer.json. Small and dependency-free; not meant for bulk hashing speed.
//
// Thread-safety: a Sha256 object is not thread-safe; the free function is.
#ifndef ARBOR_COMMON_SHA256_H_
#define ARBOR_COMMON_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace arbor {

class Sha256 {
 public:
  Sha256();
  // Adds bytes to the message; may be called any number of times.
  void Update(std::string_view bytes);
  // Finishes the message and returns its digest. The object is reset after.
  std::array<uint8_t, 32> Finish();

 private:
  void Reset();
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Lower-case hex SHA-256 digest of `bytes` (64 characters).
std::string Sha256Hex(std::string_view bytes);

}  // namespace arbor

#endif  // ARBOR_COMMON_SHA256_H_
