#include "verifier/reward_input.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::verifier {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A byte-level encoder (one token per byte) that knows one special token, as
// byte-level BPE tokenizers treat added tokens: "<extra_0>" -> 300.
constexpr int kVocab = 301;
constexpr int32_t kExtra0 = 300;
// With add_special_tokens it prepends a BOS (id 1), as Llama tokenizers do.
constexpr int32_t kBos = 1;
absl::StatusOr<std::vector<int32_t>> ByteEncode(absl::string_view text, bool add_special_tokens) {
  std::vector<int32_t> out;
  if (add_special_tokens) out.push_back(kBos);
  const absl::string_view special = "<extra_0>";
  while (!text.empty()) {
    if (text.substr(0, special.size()) == special) {
      out.push_back(kExtra0);
      text.remove_prefix(special.size());
    } else {
      out.push_back(static_cast<unsigned char>(text[0]));
      text.remove_prefix(1);
    }
  }
  return out;
}

std::vector<int32_t> Bytes(absl::string_view text) { return *ByteEncode(text, false); }
std::vector<int32_t> BosBytes(absl::string_view text) { return *ByteEncode(text, true); }

// A chat renderer in ChatML form.
absl::StatusOr<ChatPrompt> ChatMl(absl::string_view question) {
  return ChatPrompt{
      absl::StrCat("<|im_start|>user\n", question, "<|im_end|>\n<|im_start|>assistant\n"),
      /*add_special_tokens=*/false};
}

std::vector<int32_t> Concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

RewardInput MakeInput(const RewardConfig& config, bool value_head = false, int num_labels = 0) {
  auto input = RewardInput::Create(
      config, ByteEncode, ChatMl,
      {.vocab_size = kVocab, .has_value_head = value_head, .num_labels = num_labels});
  EXPECT_TRUE(input.ok()) << input.status();
  return *std::move(input);
}

TEST(RewardInputTest, TokenLogitPrmReadsEveryStepTag) {
  RewardConfig config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  config.prompt_template = "Q:{question}|";
  config.step_tag = "#";
  config.step_separator = "~";
  RewardInput input = MakeInput(config);
  EXPECT_THAT(input.columns(), ElementsAre('+', '-'));
  auto prompt = input.EncodePrompt("1+1");
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(*prompt, BosBytes("Q:1+1|"));
  const std::vector<std::string> steps = {"ab \n\n", "\nc\t"};
  auto seqs = input.Build(*prompt, steps, false);
  ASSERT_TRUE(seqs.ok()) << seqs.status();
  ASSERT_EQ(seqs->size(), 1u);
  // Surrounding whitespace of each step is stripped; the tag follows each step.
  EXPECT_EQ((*seqs)[0].tokens, BosBytes("Q:1+1|ab#~c#"));
  EXPECT_THAT((*seqs)[0].positions, ElementsAre(9, 12));

  auto last = input.Build(*prompt, steps, true);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ((*last)[0].tokens, (*seqs)[0].tokens);
  EXPECT_THAT((*last)[0].positions, ElementsAre(12));
}

TEST(RewardInputTest, ReferencePrmFormatWithAChatTemplate) {
  // tools/train_reference/common.py prm_text: the ChatML prompt, each step
  // stripped and followed by <|step|>, steps joined by "\n\n".
  RewardConfig config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  auto parsed = ParseRewardConfig(R"({"kind": "token_logit", "step_tag": "<extra_0>",
      "step_tag_id": 300, "step_separator": "\n\n", "prompt_template": "chatml"})",
                                  config, false);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->chat_template, "chatml");
  RewardInput input = MakeInput(*parsed);
  auto prompt = input.EncodePrompt("Start with 17.");
  ASSERT_TRUE(prompt.ok());
  // A chat template writes its own special tokens: no BOS is added.
  EXPECT_EQ(*prompt, Bytes("<|im_start|>user\nStart with 17.<|im_end|>\n<|im_start|>assistant\n"));
  auto seqs = *input.Build(
      *prompt, std::vector<std::string>{" 17 + 25 = 42\n\n", "The answer is 42"}, false);
  EXPECT_EQ(seqs[0].tokens, Concat({*prompt,
                                    Bytes("17 + 25 = 42"),
                                    {kExtra0},
                                    Bytes("\n\n"),
                                    Bytes("The answer is 42"),
                                    {kExtra0}}));
  for (int32_t p : seqs[0].positions) EXPECT_EQ(seqs[0].tokens[p], kExtra0);

  parsed->step_tag_id = 299;
  auto mismatch = RewardInput::Create(*parsed, ByteEncode, ChatMl, {.vocab_size = kVocab});
  EXPECT_THAT(mismatch.status().message(), HasSubstr("but step_tag_id is 299"));
  auto no_renderer =
      RewardInput::Create(*parsed, ByteEncode, ChatRenderFn(), {.vocab_size = kVocab});
  EXPECT_THAT(no_renderer.status().message(), HasSubstr("no chat renderer"));
}

TEST(RewardInputTest, ALongerCandidateExtendsTheShorterOnesTokens) {
  RewardConfig config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  RewardInput input = MakeInput(config);
  auto prompt = *input.EncodePrompt("question");
  std::vector<std::string> steps = {"one", "two"};
  auto shorter = *input.Build(prompt, steps, false);
  steps.push_back("three");
  auto longer = *input.Build(prompt, steps, false);
  const auto& a = shorter[0].tokens;
  const auto& b = longer[0].tokens;
  ASSERT_LT(a.size(), b.size());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
  EXPECT_EQ(longer[0].positions.size(), 3u);
  EXPECT_EQ(longer[0].positions[1], shorter[0].positions[1]);
}

TEST(RewardInputTest, ValueHeadPrmUsesQwenFormat) {
  RewardConfig config = DefaultRewardConfig(RewardKind::kValueHeadPrm, true);
  RewardInput input = MakeInput(config, true, 2);
  EXPECT_TRUE(input.columns().empty());
  auto prompt = *input.EncodePrompt("What is 2+2?");
  auto seqs = *input.Build(prompt, std::vector<std::string>{"2+2=4", "The answer is 4"}, false);
  ASSERT_EQ(seqs.size(), 1u);
  const auto& seq = seqs[0];
  ASSERT_EQ(seq.positions.size(), 2u);
  for (int32_t p : seq.positions) EXPECT_EQ(seq.tokens[p], kExtra0);
  EXPECT_EQ(seq.positions[1] + 1, static_cast<int32_t>(seq.tokens.size()));
  EXPECT_EQ(seq.tokens,
            Concat({prompt, Bytes("2+2=4"), {kExtra0}, Bytes("The answer is 4"), {kExtra0}}));
}

TEST(RewardInputTest, OrmScoresEachCutSolution) {
  RewardConfig config = DefaultRewardConfig(RewardKind::kOrm, false);
  config.prompt_template = "{question}:";
  config.step_separator = "/";
  config.step_tag = "=";
  RewardInput input = MakeInput(config);
  auto prompt = *input.EncodePrompt("q");
  const std::vector<std::string> steps = {"a", "b", "c"};
  auto all = *input.Build(prompt, steps, false);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].tokens, BosBytes("q:a="));
  EXPECT_EQ(all[1].tokens, BosBytes("q:a/b="));
  EXPECT_EQ(all[2].tokens, BosBytes("q:a/b/c="));
  for (const auto& seq : all) {
    EXPECT_THAT(seq.positions, ElementsAre(static_cast<int32_t>(seq.tokens.size()) - 1));
  }
  auto last = *input.Build(prompt, steps, true);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].tokens, all[2].tokens);

  // A value-head ORM with no tag reads at the last token of the solution.
  RewardConfig value = DefaultRewardConfig(RewardKind::kOrm, true);
  RewardInput value_input = MakeInput(value, true, 1);
  auto seqs =
      *value_input.Build(*value_input.EncodePrompt("q"), std::vector<std::string>{"x"}, true);
  EXPECT_EQ(seqs[0].tokens, BosBytes("q\n\nx"));
  EXPECT_THAT(seqs[0].positions, ElementsAre(4));
}

TEST(RewardInputTest, LlmJudgeAsksInOneUserTurnForEachCut) {
  RewardConfig config = DefaultRewardConfig(RewardKind::kLlmJudge, false);
  EXPECT_EQ(config.positive_token, "Yes");
  config.prompt_template = "Q: {question}\n";
  config.step_separator = "/";
  config.step_tag = " ok?";
  config.chat_template = "chatml";
  config.verdict_prefix = "V:";
  config.positive_token = "Y";  // one byte: one token of the byte encoder
  config.negative_token = "N";
  RewardInput input = MakeInput(config);
  EXPECT_EQ(input.columns(), (std::vector<int32_t>{'Y', 'N'}));
  auto prompt = input.EncodePrompt("q");
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(*prompt, Bytes("<|im_start|>user\nQ: q\n"));
  auto all = input.Build(*prompt, std::vector<std::string>{" a ", "b"}, false);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  const std::string close = " ok?<|im_end|>\n<|im_start|>assistant\nV:";
  EXPECT_EQ((*all)[0].tokens, Bytes(absl::StrCat("<|im_start|>user\nQ: q\na", close)));
  EXPECT_EQ((*all)[1].tokens, Bytes(absl::StrCat("<|im_start|>user\nQ: q\na/b", close)));
  for (const auto& seq : *all) {
    EXPECT_THAT(seq.positions, ElementsAre(static_cast<int32_t>(seq.tokens.size()) - 1));
  }
  // Without a chat template the message is the whole text (a base model).
  config.chat_template.clear();
  RewardInput raw = MakeInput(config);
  auto seqs = *raw.Build(*raw.EncodePrompt("q"), std::vector<std::string>{"a"}, true);
  EXPECT_EQ(seqs[0].tokens, BosBytes("Q: q\na ok?V:"));
}

TEST(RewardInputTest, LlmJudgeNeedsATemplateThatKeepsTheMessage) {
  RewardConfig config = DefaultRewardConfig(RewardKind::kLlmJudge, false);
  config.chat_template = "lossy";
  config.positive_token = "Y";
  config.negative_token = "N";
  auto input = RewardInput::Create(
      config, ByteEncode,
      [](absl::string_view question) -> absl::StatusOr<ChatPrompt> {
        return ChatPrompt{absl::StrCat("<s>", absl::AsciiStrToLower(question)), false};
      },
      {.vocab_size = kVocab});
  ASSERT_FALSE(input.ok());
  EXPECT_THAT(input.status().message(), HasSubstr("does not write the user message verbatim"));
}

TEST(RewardInputTest, RejectsBadLabelTokens) {
  RewardConfig config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  config.positive_token = "++";
  const RewardModelShape shape = {.vocab_size = kVocab};
  auto input = RewardInput::Create(config, ByteEncode, ChatMl, shape);
  EXPECT_THAT(input.status().message(), HasSubstr("positive_token \"++\" encodes to 2 tokens"));
  config.positive_token = "+";
  config.negative_token = "+";
  EXPECT_THAT(RewardInput::Create(config, ByteEncode, ChatMl, shape).status().message(),
              HasSubstr("the same token"));
  config.negative_token_id = 5000;
  EXPECT_THAT(RewardInput::Create(config, ByteEncode, ChatMl, shape).status().message(),
              HasSubstr("negative_token id 5000 is outside the vocabulary [0, 301)"));
  config.negative_token_id = 7;
  auto ok = RewardInput::Create(config, ByteEncode, ChatMl, shape);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->negative_token_id(), 7);
  EXPECT_THAT(RewardInput::Create(config, EncodeFn(), ChatMl, shape).status().message(),
              HasSubstr("encode function is empty"));
}

TEST(RewardInputTest, RejectsACandidateWithoutSteps) {
  RewardInput input = MakeInput(DefaultRewardConfig(RewardKind::kTokenLogitPrm, false));
  EXPECT_FALSE(input.Build(Bytes("q"), {}, false).ok());
}

TEST(RewardScoreTest, LabelTokensAreATwoWaySoftmax) {
  EXPECT_FLOAT_EQ(LabelTokenScore(0.0f, 0.0f), 0.5f);
  EXPECT_NEAR(LabelTokenScore(2.0f, -1.0f), std::exp(2.0) / (std::exp(2.0) + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(LabelTokenScore(-1000.0f, 1000.0f), 0.0f, 1e-6);  // no overflow
  EXPECT_NEAR(LabelTokenScore(1000.0f, -1000.0f), 1.0f, 1e-6);
}

TEST(RewardScoreTest, ValueHeadSoftmaxOrSigmoid) {
  const std::vector<float> two = {0.5f, 2.0f};
  EXPECT_NEAR(ValueHeadScore(two, 1), std::exp(2.0) / (std::exp(0.5) + std::exp(2.0)), 1e-6);
  EXPECT_NEAR(ValueHeadScore(two, 0), std::exp(0.5) / (std::exp(0.5) + std::exp(2.0)), 1e-6);
  const std::vector<float> one = {1.5f};
  EXPECT_NEAR(ValueHeadScore(one, 0), 1.0 / (1.0 + std::exp(-1.5)), 1e-6);

  RewardInput input = MakeInput(DefaultRewardConfig(RewardKind::kValueHeadPrm, true), true, 2);
  EXPECT_NEAR(input.ScoreFromRow(two), ValueHeadScore(two, 1), 1e-7);
  RewardInput tokens = MakeInput(DefaultRewardConfig(RewardKind::kTokenLogitPrm, false));
  EXPECT_NEAR(tokens.ScoreFromRow(two), LabelTokenScore(0.5f, 2.0f), 1e-7);
}

}  // namespace
}  // namespace arbor::verifier
