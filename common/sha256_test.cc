// SHA-256 over OpenSSL: the FIPS 180-2 test vectors, streamed and one-shot.
#include "common/sha256.h"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace arbor {
namespace {

std::string Hex(const std::array<uint8_t, 32>& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (uint8_t b : digest) {
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  return hex;
}

constexpr char kMessage448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

TEST(Sha256Test, Fips180Vectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(kMessage448),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, StreamingMatchesOneShotAndResets) {
  Sha256 hasher;
  const std::string_view message(kMessage448);
  for (size_t i = 0; i < message.size(); i += 5) hasher.Update(message.substr(i, 5));
  EXPECT_EQ(Hex(hasher.Finish()), Sha256Hex(message));
  // Finish() reset the object: it now hashes a fresh message.
  hasher.Update("abc");
  EXPECT_EQ(Hex(hasher.Finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex(hasher.Finish()), Sha256Hex(""));
}

TEST(Sha256Test, CopyContinuesIndependently) {
  Sha256 a;
  a.Update("ab");
  Sha256 b = a;
  a.Update("c");
  b.Update("d");
  EXPECT_EQ(Hex(a.Finish()), Sha256Hex("abc"));
  EXPECT_EQ(Hex(b.Finish()), Sha256Hex("abd"));
}

}  // namespace
}  // namespace arbor
