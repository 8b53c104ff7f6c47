#include "verifier/reward_config.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::verifier {
namespace {

using ::testing::HasSubstr;

TEST(RewardKindTest, NamesRoundTrip) {
  for (RewardKind kind :
       {RewardKind::kTokenLogitPrm, RewardKind::kValueHeadPrm, RewardKind::kOrm,
        RewardKind::kLlmJudge}) {
    auto parsed = ParseRewardKind(RewardKindName(kind));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, kind);
  }
  EXPECT_THAT(ParseRewardKind("prm").status().message(), HasSubstr("unknown reward model kind"));
}

TEST(RewardConfigTest, DefaultsFollowTheKind) {
  RewardConfig token = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  EXPECT_EQ(token.score_head(), ScoreHead::kLabelTokens);
  EXPECT_EQ(token.positive_token, "+");
  EXPECT_EQ(token.negative_token, "-");
  EXPECT_EQ(token.step_tag, " \u043a\u0438");  // Math-Shepherd's " ки"
  EXPECT_EQ(token.step_separator, "\n");
  RewardConfig value = DefaultRewardConfig(RewardKind::kValueHeadPrm, true);
  EXPECT_EQ(value.score_head(), ScoreHead::kValueHead);
  EXPECT_EQ(value.step_tag, "<extra_0>");
  EXPECT_THAT(value.prompt_template, HasSubstr("<|im_start|>user\n{question}<|im_end|>"));
  EXPECT_EQ(DefaultRewardConfig(RewardKind::kOrm, true).score_head(), ScoreHead::kValueHead);
  EXPECT_EQ(DefaultRewardConfig(RewardKind::kOrm, false).score_head(), ScoreHead::kLabelTokens);
}

TEST(RewardConfigTest, ParsesEveryKey) {
  const RewardConfig base = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  auto config = ParseRewardConfig(R"({"step_tag": " ки", "positive_token": "good",
      "negative_token": "bad", "prompt_template": "Q: {question}\n", "step_template": "S: {step}",
      "step_separator": "\n", "positive_token_id": 7, "negative_token_id": 9,
      "trained_steps": 3000})",
                                  base, false);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kind, RewardKind::kTokenLogitPrm);
  EXPECT_EQ(config->step_tag, " ки");
  EXPECT_EQ(config->positive_token, "good");
  EXPECT_EQ(config->negative_token, "bad");
  EXPECT_EQ(config->prompt_template, "Q: {question}\n");
  EXPECT_EQ(config->step_template, "S: {step}");
  EXPECT_EQ(config->step_separator, "\n");
  EXPECT_EQ(config->positive_token_id, 7);
  EXPECT_EQ(config->negative_token_id, 9);
  EXPECT_TRUE(config->chat_template.empty());
}

TEST(RewardConfigTest, AnLlmJudgeKeepsItsPromptAsTheUserMessage) {
  const RewardConfig base = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  auto config = ParseRewardConfig(
      R"({"kind": "judge", "prompt_template": "Grade: {question}\n", "chat_template": "llama3",
          "verdict_prefix": "Verdict:"})",
      base, false);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kind, RewardKind::kLlmJudge);
  EXPECT_EQ(config->score_head(), ScoreHead::kLabelTokens);
  EXPECT_EQ(config->prompt_template, "Grade: {question}\n");
  EXPECT_EQ(config->chat_template, "llama3");
  EXPECT_EQ(config->verdict_prefix, "Verdict:");
  EXPECT_EQ(config->positive_token, "Yes");
  EXPECT_EQ(config->negative_token, "No");
  EXPECT_THAT(config->step_tag, HasSubstr("Answer Yes or No"));
  EXPECT_TRUE(ValidateRewardConfig(*config, false, 0).ok());
  // Its prompt must still hold the question, whatever template wraps it.
  config->prompt_template = "no placeholder";
  EXPECT_THAT(ValidateRewardConfig(*config, false, 0).message(), HasSubstr("{question}"));
  // A judge reads verdict tokens, so a value-head checkpoint cannot be one.
  EXPECT_THAT(ValidateRewardConfig(DefaultRewardConfig(RewardKind::kLlmJudge, true), true, 2)
                  .message(),
              HasSubstr("reads label-token logits"));
}

TEST(RewardConfigTest, AnLlmJudgeComparesWithItsCompareTemplateAndVerdicts) {
  const RewardConfig judge = DefaultRewardConfig(RewardKind::kLlmJudge, false);
  EXPECT_EQ(judge.compare_template, kJudgeCompareTemplate);
  EXPECT_EQ(judge.compare_a_token, "A");
  EXPECT_EQ(judge.compare_b_token, "B");
  auto config = ParseRewardConfig(
      R"({"compare_template": "Q: {question}\n1) {a}\n2) {b}\nBetter:",
          "compare_a_token": "1", "compare_b_token": "2", "compare_b_token_id": 7})",
      judge, false);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->compare_template, "Q: {question}\n1) {a}\n2) {b}\nBetter:");
  EXPECT_EQ(config->compare_a_token, "1");
  EXPECT_EQ(config->compare_b_token_id, 7);
  EXPECT_TRUE(ValidateRewardConfig(*config, false, 0).ok());
  for (const char* bad : {"{question} {a}", "{a} {question} {b}", "{question} {b} {a}",
                          "{question} {a} {b} {b}"}) {
    config->compare_template = bad;
    EXPECT_THAT(ValidateRewardConfig(*config, false, 0).message(),
                HasSubstr("compare_template must contain"))
        << bad;
  }
  // Other kinds do not compare: their compare_template is not checked.
  EXPECT_TRUE(ValidateRewardConfig(DefaultRewardConfig(RewardKind::kTokenLogitPrm, false), false, 0)
                  .ok());
}

TEST(RewardConfigTest, ReadsTheReferencePrmConfig) {
  // As tools/train_reference/train_prm.py writes it.
  const RewardConfig base = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  auto config = ParseRewardConfig(R"({"kind": "token_logit", "step_tag": "<|step|>",
      "step_tag_id": 3, "positive_token": "+", "positive_token_id": 17,
      "negative_token": "-", "negative_token_id": 19, "step_separator": "\n\n",
      "prompt_template": "chatml", "format": "...", "example": "...", "score": "...",
      "aggregation": "min"})",
                                  base, false);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kind, RewardKind::kTokenLogitPrm);
  EXPECT_EQ(config->chat_template, "chatml");
  EXPECT_EQ(config->step_tag, "<|step|>");
  EXPECT_EQ(config->step_tag_id, 3);
  EXPECT_EQ(config->step_separator, "\n\n");
  EXPECT_EQ(config->positive_token_id, 17);
  EXPECT_EQ(config->negative_token_id, 19);
  EXPECT_TRUE(ValidateRewardConfig(*config, false, 0).ok());
}

TEST(RewardConfigTest, KindInTheFileResetsToItsDefaults) {
  const RewardConfig base = DefaultRewardConfig(RewardKind::kTokenLogitPrm, true);
  auto config = ParseRewardConfig(R"({"kind": "orm", "head": "value_head"})", base, true);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kind, RewardKind::kOrm);
  EXPECT_EQ(config->score_head(), ScoreHead::kValueHead);
}

TEST(RewardConfigTest, ErrorsNameTheKey) {
  const RewardConfig base;
  EXPECT_THAT(ParseRewardConfig("{", base, false).status().message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseRewardConfig("[1]", base, false).status().message(),
              HasSubstr("not a JSON object"));
  EXPECT_THAT(ParseRewardConfig(R"({"step_tag": 3})", base, false).status().message(),
              HasSubstr("prm_config.step_tag: must be a string"));
  EXPECT_THAT(ParseRewardConfig(R"({"kind": "magic"})", base, false).status().message(),
              HasSubstr("prm_config.kind"));
  EXPECT_THAT(ParseRewardConfig(R"({"head": "x"})", base, false).status().message(),
              HasSubstr("prm_config.head"));
  EXPECT_THAT(ParseRewardConfig(R"({"positive_token_id": -4})", base, false).status().message(),
              HasSubstr("prm_config.positive_token_id"));
  EXPECT_THAT(ParseRewardConfig(R"({"positive_label": "1"})", base, false).status().message(),
              HasSubstr("prm_config.positive_label"));
}

TEST(RewardConfigTest, ValidationNamesTheField) {
  RewardConfig config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  EXPECT_TRUE(ValidateRewardConfig(config, false, 0).ok());
  config.prompt_template = "no placeholder";
  EXPECT_THAT(ValidateRewardConfig(config, false, 0).message(), HasSubstr("prompt_template"));
  config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  config.step_template = "{step}{step}";
  EXPECT_THAT(ValidateRewardConfig(config, false, 0).message(), HasSubstr("step_template"));
  config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  config.step_tag = "";
  EXPECT_THAT(ValidateRewardConfig(config, false, 0).message(), HasSubstr("step_tag"));
  // A label-token PRM on a value-head checkpoint, and the reverse.
  config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  EXPECT_THAT(ValidateRewardConfig(config, true, 2).message(), HasSubstr("value head"));
  config = DefaultRewardConfig(RewardKind::kValueHeadPrm, true);
  EXPECT_THAT(ValidateRewardConfig(config, false, 0).message(), HasSubstr("has none"));
  config.positive_label = 2;
  EXPECT_THAT(ValidateRewardConfig(config, true, 2).message(), HasSubstr("positive_label 2"));
  EXPECT_TRUE(ValidateRewardConfig(config, true, 1).ok());  // one output: a sigmoid
  // An ORM may read at the last token, with no tag.
  config = DefaultRewardConfig(RewardKind::kOrm, true);
  EXPECT_TRUE(config.step_tag.empty());
  EXPECT_TRUE(ValidateRewardConfig(config, true, 1).ok());
}

TEST(RewardConfigTest, LoadsPrmConfigJsonFromTheModelFolder) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "reward_config_test_model";
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / "prm_config.json");
  auto defaults = LoadRewardConfig(dir.string(), false);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->kind, RewardKind::kTokenLogitPrm);
  auto value_defaults = LoadRewardConfig(dir.string(), true);
  ASSERT_TRUE(value_defaults.ok());
  EXPECT_EQ(value_defaults->kind, RewardKind::kValueHeadPrm);

  std::ofstream(dir / "prm_config.json") << R"({"step_tag": "\n\n", "positive_token": " +"})";
  auto loaded = LoadRewardConfig(dir.string(), false);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->positive_token, " +");

  std::ofstream(dir / "prm_config.json") << R"({"step_tag": null})";
  auto bad = LoadRewardConfig(dir.string(), false);
  EXPECT_THAT(bad.status().message(), HasSubstr("prm_config.json: prm_config.step_tag"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace arbor::verifier
