// Budget shaping and the anytime reserve in a scripted world whose steps are
// as long as a real model's: a generated-token cap shrinks the expansions of
// beam search, DVTS and particle filtering (never the step), and a capped tree
// search still returns finished answers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "search/strategy.h"
#include "search/strategy_test_util.h"

namespace arbor::search {
namespace {

// A policy whose every step is `step_tokens` tokens ending with "\n\n"
// (token 2), whose solutions have `num_steps` steps, the last ending with
// EOS; token values are a hash of (seed, sample, position), so siblings
// differ. Step k's text is "s<k>:<hash> ...\n\n"; the last says "\boxed{42}".
class ScriptedGenerator : public Generator {
 public:
  ScriptedGenerator(int step_tokens, int num_steps)
      : step_tokens_(step_tokens), num_steps_(num_steps) {}

  absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view) override {
    return std::vector<int32_t>{1, 2, 3};
  }

  absl::StatusOr<ExtendResult> Extend(const ExtendRequest& request) override {
    Call call;
    call.max_step_tokens = request.stop.max_step_tokens;
    call.to_eos = request.stop.step_delimiters.empty();
    call.temperature = request.sampling.temperature;
    ExtendResult result;
    for (size_t b = 0; b < request.branches.size(); ++b) {
      const BranchInput& branch = request.branches[b];
      for (int s = 0; s < branch.num_samples; ++s) {
        ++call.outputs;
        StepOutput out;
        out.branch_index = static_cast<int32_t>(b);
        out.sample_index = s;
        size_t pos = branch.suffix_tokens.size();
        const uint64_t key = request.sampling.temperature == 0.0f ? 0 : branch.seed * 131 + s;
        while (static_cast<int>(out.tokens.size()) < request.stop.max_step_tokens) {
          const int step = static_cast<int>(pos / step_tokens_);
          const bool step_end = pos % step_tokens_ == static_cast<size_t>(step_tokens_ - 1);
          const int32_t token = step_end ? 2 : 10 + static_cast<int32_t>((key + pos * 7) % 1000);
          out.tokens.push_back(token);
          ++pos;
          if (!step_end) continue;
          out.text += absl::StrCat("s", step, ":", key % 97, step + 1 == num_steps_ ? " \\boxed{42}" : "",
                                   "\n\n");
          if (step + 1 == num_steps_) {
            out.finish_reason = FinishReason::kEos;
            break;
          }
          if (!call.to_eos) break;
        }
        if (out.finish_reason != FinishReason::kEos &&
            static_cast<int>(out.tokens.size()) >= request.stop.max_step_tokens &&
            out.tokens.back() != 2) {
          out.finish_reason = FinishReason::kLength;
        }
        result.usage.generated_tokens += static_cast<int64_t>(out.tokens.size());
        result.outputs.push_back(std::move(out));
      }
    }
    calls_.push_back(call);
    return result;
  }

  struct Call {
    int outputs = 0;
    int max_step_tokens = 0;
    bool to_eos = false;
    float temperature = 0;
  };
  const std::vector<Call>& calls() const { return calls_; }

 private:
  int step_tokens_;
  int num_steps_;
  std::vector<Call> calls_;
};

// Scores a prefix by a hash of its last step's text.
class ScriptedScorer : public Scorer {
 public:
  absl::StatusOr<ScoreResult> Score(const ScoreRequest& request) override {
    ScoreResult result;
    for (absl::Span<const std::string> steps : request.candidates) {
      std::vector<float> scores;
      for (size_t i = request.last_step_only ? steps.size() - 1 : 0; i < steps.size(); ++i) {
        scores.push_back(0.1f + 0.8f * static_cast<float>(std::hash<std::string>()(steps[i]) % 100) /
                                    100.0f);
      }
      result.scores.push_back(std::move(scores));
      result.usage.reward_tokens += 10;
    }
    ++calls;
    return result;
  }
  int calls = 0;
};

JobContext ScriptedJob() {
  JobContext job;
  job.question = "what is 6 x 7?";
  job.seed = 11;
  return job;
}

// The README's example: beam search, n=16, beam width 4, 2000 tokens. Steps
// of 80 tokens, solutions of 12 steps (960 tokens).
TEST(BudgetShapingTest, ReadmeBeamSearchSpendsItsBudgetOverSeveralFullSizeSteps) {
  StrategyConfig config = Config(BeamSearchConfig{.n = 16, .beam_width = 4});
  config.budget.max_generated_tokens = 2000;
  ScriptedGenerator generator(/*step_tokens=*/80, /*num_steps=*/12);
  ScriptedScorer scorer;
  auto result = RunStrategy(config, ScriptedJob(), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  const Usage& u = result->usage;
  std::string outputs;
  for (const auto& call : generator.calls()) absl::StrAppend(&outputs, call.outputs, call.to_eos ? "e " : " ");
  RecordProperty("generated_tokens", static_cast<int>(u.generated_tokens));
  RecordProperty("steps", static_cast<int>(u.steps));
  RecordProperty("reserve_generated_tokens", static_cast<int>(u.reserve_generated_tokens));
  RecordProperty("outputs_per_call", outputs);
  EXPECT_LE(u.generated_tokens, 2000);
  EXPECT_GE(u.generated_tokens, 1400) << "most of the budget is spent";
  EXPECT_GE(u.steps, 4) << "several steps, not one-shot sampling";
  EXPECT_GT(u.shaped_steps, 0);
  // Every search step kept the full step cap and its delimiter; only the
  // reserve finish generates to EOS, greedily.
  int search_calls = 0;
  for (const auto& call : generator.calls()) {
    if (call.to_eos) {
      EXPECT_EQ(call.temperature, 0.0f);
      continue;
    }
    ++search_calls;
    EXPECT_EQ(call.max_step_tokens, 256);
    EXPECT_GE(call.outputs, 1);
  }
  EXPECT_GE(search_calls, 4);
  EXPECT_TRUE(result->budget_exhausted);
  EXPECT_EQ(result->exhausted_by, "generated_tokens");
  EXPECT_EQ(result->stop_reason, "generated_tokens");
  ASSERT_FALSE(result->candidates.empty());
  EXPECT_TRUE(result->candidates[0].finished);
  EXPECT_EQ(result->answer, "42");
  EXPECT_GT(u.reserve_generated_tokens, 0);
  EXPECT_GE(u.reserve_finished_branches, 1);
}

TEST(BudgetShapingTest, EveryTreeStrategyKeepsFullStepsUnderATokenCap) {
  using PF = ParticleFilterConfig;
  const std::vector<StrategyVariant> strategies = {
      BeamSearchConfig{.n = 16, .beam_width = 4},
      DvtsConfig{.n = 16, .beam_width = 4},
      PF{.n = 16},
      ParticleGibbsConfig{.filter = PF{.n = 8}, .num_sweeps = 3},
      MctsConfig{.num_simulations = 40, .max_width = 2},
  };
  for (const StrategyVariant& strategy : strategies) {
    StrategyConfig config = Config(strategy);
    SCOPED_TRACE(std::string(StrategyName(config)));
    config.budget.max_generated_tokens = 2000;
    ScriptedGenerator generator(80, 12);
    ScriptedScorer scorer;
    auto result = RunStrategy(config, ScriptedJob(), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_LE(result->usage.generated_tokens, 2000);
    EXPECT_GE(result->usage.generated_tokens, 1000);
    EXPECT_GE(result->usage.steps, 3);
    for (const auto& call : generator.calls()) {
      if (!call.to_eos) EXPECT_EQ(call.max_step_tokens, 256);
    }
    ASSERT_FALSE(result->candidates.empty());
    // MCTS spreads the budget over the width of its tree: here its principal
    // path is too short for the reserve to finish (960-token solutions).
    if (std::string(StrategyName(config)) == "mcts") continue;
    EXPECT_EQ(result->answer, "42")
        << result->usage.generated_tokens << " tokens, " << result->usage.steps << " steps, "
        << result->usage.reserve_generated_tokens << " reserve tokens, best "
        << result->candidates[0].num_tokens << " tokens";
  }
}

// A particle filter or beam search stopped by a step or reward-call cap
// returns a finished answer (the anytime reserve), and says so.
TEST(BudgetShapingTest, CappedSearchesReturnAnAnswer) {
  struct Cap {
    std::string name;
    BudgetLimits limits;
  };
  const std::vector<Cap> caps = {
      {"steps", BudgetLimits{.max_steps = 2}},
      {"steps", BudgetLimits{.max_steps = 1}},
      {"reward_calls", BudgetLimits{.max_reward_calls = 2}},
      {"reward_calls", BudgetLimits{.max_reward_calls = 1}},
      {"generated_tokens", BudgetLimits{.max_generated_tokens = 400}},
  };
  const std::vector<StrategyVariant> strategies = {
      BeamSearchConfig{.n = 8, .beam_width = 4}, ParticleFilterConfig{.n = 8},
      DvtsConfig{.n = 8, .beam_width = 4}, MctsConfig{.max_width = 4},
      ParticleGibbsConfig{.filter = ParticleFilterConfig{.n = 4}}};
  for (const StrategyVariant& strategy : strategies) {
    for (const Cap& cap : caps) {
      StrategyConfig config = Config(strategy);
      SCOPED_TRACE(absl::StrCat(std::string(StrategyName(config)), " ", cap.name, " ", cap.limits.max_steps,
                                cap.limits.max_reward_calls));
      config.budget = cap.limits;
      ScriptedGenerator generator(30, 6);
      ScriptedScorer scorer;
      auto result = RunStrategy(config, ScriptedJob(), generator, &scorer);
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_TRUE(result->budget_exhausted);
      EXPECT_EQ(result->exhausted_by, cap.name);
      EXPECT_EQ(result->stop_reason, cap.name);
      ASSERT_FALSE(result->candidates.empty());
      EXPECT_TRUE(result->candidates[0].finished) << result->candidates[0].text;
      EXPECT_EQ(result->answer, "42");
      EXPECT_GE(result->usage.reserve_finished_branches, 1);
      if (cap.limits.max_steps > 0) EXPECT_LE(result->usage.steps, cap.limits.max_steps);
      if (cap.limits.max_reward_calls > 0) {
        EXPECT_LE(scorer.calls, cap.limits.max_reward_calls);
      }
      if (cap.limits.max_generated_tokens > 0) {
        EXPECT_LE(result->usage.generated_tokens, cap.limits.max_generated_tokens);
      }
    }
  }
}

TEST(BudgetShapingTest, NoReserveLeavesTheFinishOnlyWhatTheSearchLeft) {
  StrategyConfig config = Config(BeamSearchConfig{.n = 16, .beam_width = 4});
  config.budget.max_generated_tokens = 2000;
  config.budget.reserve_fraction = 0.0f;
  ScriptedGenerator generator(80, 12);
  ScriptedScorer scorer;
  auto result = RunStrategy(config, ScriptedJob(), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LE(result->usage.generated_tokens, 2000);
  EXPECT_LT(result->usage.reserve_generated_tokens, 256);
}

TEST(BudgetShapingTest, ReserveSettingsAreValidated) {
  StrategyConfig config = Config(BeamSearchConfig{});
  config.budget.reserve_fraction = 0.95f;
  EXPECT_THAT(ValidateStrategyConfig(config).message(),
              ::testing::HasSubstr("budget.reserve_fraction"));
  config.budget.reserve_fraction = 0.2f;
  config.budget.finish_branches = 0;
  EXPECT_THAT(ValidateStrategyConfig(config).message(),
              ::testing::HasSubstr("budget.finish_branches"));
}

}  // namespace
}  // namespace arbor::search
