#include "serving/request_checks.h"

#include <string>
#include <vector>

#include "common/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::serving {
namespace {

using ::testing::HasSubstr;

TEST(Utf8Test, CheckNamesTheField) {
  EXPECT_TRUE(CheckUtf8("ok", "question").ok());
  absl::Status st = CheckUtf8("ab\xFF", "candidates[1].steps[2]");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "candidates[1].steps[2]: invalid UTF-8 at byte 2");
}

TEST(Utf8Test, SanitizeReplacesBadBytes) {
  EXPECT_EQ(SanitizeUtf8("fine \xE2\x82\xAC"), "fine \xE2\x82\xAC");
  EXPECT_EQ(SanitizeUtf8("a\xFF"
                         "b\xE2\x82"),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(IsValidUtf8(SanitizeUtf8("\xC0\xAF\xED\xA0\x80")));
}

TEST(TokenIdsTest, NamesTheIndexAndTheVocabulary) {
  const std::vector<int32_t> good = {0, 5, 599};
  EXPECT_TRUE(CheckTokenIds(good, 600, "prompt_tokens").ok());
  const std::vector<int32_t> bad = {1, 2, 3, 4, 5, 6, 7, 70000};
  absl::Status st = CheckTokenIds(bad, 600, "branches[3].suffix_tokens");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "branches[3].suffix_tokens[7]: token id 70000 outside vocabulary [0, 600)");
  const std::vector<int32_t> negative = {-1};
  EXPECT_THAT(CheckTokenIds(negative, 600, "prompt_tokens").message(),
              HasSubstr("prompt_tokens[0]: token id -1"));
}

TEST(OtherChecksTest, LengthAndModel) {
  EXPECT_TRUE(CheckMaxBytes(std::string(128, 'x'), 128, "job_id").ok());
  EXPECT_EQ(CheckMaxBytes(std::string(129, 'x'), 128, "job_id").message(),
            "job_id: 129 bytes, at most 128");
  EXPECT_TRUE(CheckModelName("", "qwen2").ok());
  EXPECT_TRUE(CheckModelName("qwen2", "qwen2").ok());
  EXPECT_EQ(CheckModelName("llama", "qwen2").message(),
            "model: this server serves \"qwen2\", not \"llama\"");
}

}  // namespace
}  // namespace arbor::serving
