// The UTF-8 validator every folder uses (serving's CheckUtf8 / SanitizeUtf8,
// the coordinator's request checks, the tokenizer).
#include "common/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace arbor {
namespace {

TEST(Utf8ValidatorTest, AcceptsWellFormedText) {
  for (const std::string text : {"", "plain ascii", "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80",
                                 "\xC3\xA9t\xC3\xA9", "\xF4\x8F\xBF\xBF" /* U+10FFFF */}) {
    EXPECT_EQ(FirstInvalidUtf8(text), text.size()) << text;
    EXPECT_TRUE(IsValidUtf8(text)) << text;
  }
}

TEST(Utf8ValidatorTest, FindsTheFirstBadByte) {
  EXPECT_EQ(FirstInvalidUtf8("\xFF"), 0u);
  EXPECT_EQ(FirstInvalidUtf8("ab\xFF"), 2u);
  EXPECT_EQ(FirstInvalidUtf8("a\x80"), 1u);             // lone continuation byte
  EXPECT_EQ(FirstInvalidUtf8("\xC3"), 0u);              // truncated 2-byte character
  EXPECT_EQ(FirstInvalidUtf8("ab\xE2\x82"), 2u);        // truncated 3-byte character
  EXPECT_EQ(FirstInvalidUtf8("\xC0\xAF"), 0u);          // overlong '/'
  EXPECT_EQ(FirstInvalidUtf8("x\xED\xA0\x80"), 1u);     // surrogate U+D800
  EXPECT_EQ(FirstInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(FirstInvalidUtf8("\xC3"
                             "A"),
            0u);  // bad continuation
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));
  EXPECT_FALSE(IsValidUtf8("\xF8\x88\x80\x80\x80"));  // 5-byte form
}

}  // namespace
}  // namespace arbor
