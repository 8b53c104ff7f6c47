#include "common/sha256.h"

#include <openssl/evp.h>

#include "common/check.h"

namespace arbor {

void Sha256::CtxFree::operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  ARBOR_CHECK(ctx_ != nullptr);
  Reset();
}

Sha256::~Sha256() = default;

Sha256::Sha256(const Sha256& other) : ctx_(EVP_MD_CTX_new()) {
  ARBOR_CHECK(ctx_ != nullptr);
  ARBOR_CHECK(EVP_MD_CTX_copy_ex(ctx_.get(), other.ctx_.get()) == 1);
}

Sha256& Sha256::operator=(const Sha256& other) {
  if (this != &other) ARBOR_CHECK(EVP_MD_CTX_copy_ex(ctx_.get(), other.ctx_.get()) == 1);
  return *this;
}

void Sha256::Reset() { ARBOR_CHECK(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1); }

void Sha256::Update(std::string_view bytes) {
  ARBOR_CHECK(EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) == 1);
}

std::array<uint8_t, 32> Sha256::Finish() {
  std::array<uint8_t, 32> digest;
  unsigned int length = 0;
  ARBOR_CHECK(EVP_DigestFinal_ex(ctx_.get(), digest.data(), &length) == 1);
  ARBOR_CHECK(length == digest.size());
  Reset();
  return digest;
}

std::string Sha256Hex(std::string_view bytes) {
  std::array<uint8_t, 32> digest;
  unsigned int length = 0;
  ARBOR_CHECK(
      EVP_Digest(bytes.data(), bytes.size(), digest.data(), &length, EVP_sha256(), nullptr) == 1);
  ARBOR_CHECK(length == digest.size());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(64);
  for (uint8_t b : digest) {
    hex.push_back(kHex[b >> 4]);
    hex.push_back(kHex[b & 0xF]);
  }
  return hex;
}

}  // namespace arbor
