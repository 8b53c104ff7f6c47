// SHA-256 (FIPS 180-4), for fingerprints of model files such as
// tokenizer.json, computed by OpenSSL's libcrypto (EVP).
//
// Thread-safety: a Sha256 object is not thread-safe; the free function is.
#ifndef ARBOR_COMMON_SHA256_H_
#define ARBOR_COMMON_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace arbor {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256& other);
  Sha256& operator=(const Sha256& other);

  // Adds bytes to the message; may be called any number of times.
  void Update(std::string_view bytes);
  // Finishes the message and returns its digest. The object is reset after.
  std::array<uint8_t, 32> Finish();

 private:
  struct CtxFree {
    void operator()(EVP_MD_CTX* ctx) const;
  };
  void Reset();

  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx_;
};

// Lower-case hex SHA-256 digest of `bytes` (64 characters).
std::string Sha256Hex(std::string_view bytes);

}  // namespace arbor

#endif  // ARBOR_COMMON_SHA256_H_
