#include "common/prefix_hash.h"

#include <string>

#include "gtest/gtest.h"

namespace arbor {
namespace {

TEST(PrefixChunkKeysTest, OneKeyPerFullChunkChained) {
  const std::string a = std::string(kPrefixChunkBytes * 3, 'x') + "tail";
  std::string b = a;
  b[kPrefixChunkBytes * 2 + 5] = 'y';  // differs in the third chunk
  const auto ka = PrefixChunkKeys("chatml", a);
  const auto kb = PrefixChunkKeys("chatml", b);
  ASSERT_EQ(ka.size(), 3u);  // the partial tail has no key
  ASSERT_EQ(kb.size(), 3u);
  EXPECT_EQ(ka[0], kb[0]);
  EXPECT_EQ(ka[1], kb[1]);
  EXPECT_NE(ka[2], kb[2]);
  // Same bytes in every chunk, still distinct keys: the chain position counts.
  EXPECT_NE(ka[0], ka[1]);
}

TEST(PrefixChunkKeysTest, TemplateNameSeparatesKeysAndLengthIsBounded) {
  const std::string q(kPrefixChunkBytes * 2, 'q');
  EXPECT_NE(PrefixChunkKeys("chatml", q)[0], PrefixChunkKeys("llama3", q)[0]);
  EXPECT_NE(PrefixChunkKeys("", q)[0], PrefixChunkKeys("chatml", q)[0]);
  EXPECT_TRUE(PrefixChunkKeys("chatml", "short").empty());
  const std::string huge(kPrefixChunkBytes * (kMaxPrefixChunks + 10), 'z');
  EXPECT_EQ(PrefixChunkKeys("", huge).size(), static_cast<size_t>(kMaxPrefixChunks));
}

}  // namespace
}  // namespace arbor
