// The certainty probe (CertaintyConfig; Dynasor's Certaindex) in the fake
// world (search/testing/fake_world.h), whose probes hedge ("hmm") until half
// of a solution's steps are written and then name the answer the branch is
// heading for.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "search/search_run.h"
#include "search/strategy.h"
#include "search/strategy_test_util.h"
#include "search/testing/fake_world.h"

namespace arbor::search {
namespace {

using ::arbor::search::testing::FakeGenerator;
using ::arbor::search::testing::FakeProblem;
using ::arbor::search::testing::FakeScorer;
using ::arbor::search::testing::IsRightAnswer;

// Long solutions whose answer is readable from the fifth step on.
const FakeProblem kLong{.id = 5, .p = 0.95, .num_steps = 10};

CertaintyConfig Probe(int interval, int window) {
  CertaintyConfig c;
  c.enabled = true;
  c.interval_tokens = interval;
  c.window = window;
  return c;
}

int64_t CandidateTokens(const SolveResult& r) {
  int64_t total = 0;
  for (const Candidate& c : r.candidates) total += c.num_tokens;
  return total;
}

TEST(HedgeWordTest, WholeWordsCaseInsensitive) {
  const std::vector<std::string> words = {"wait", "but", "no", "not sure"};
  EXPECT_TRUE(internal::HasHedgeWord("Wait, 12}", words));
  EXPECT_TRUE(internal::HasHedgeWord("12 BUT maybe", words));
  EXPECT_TRUE(internal::HasHedgeWord("I am not sure", words));
  EXPECT_TRUE(internal::HasHedgeWord("no", words));
  EXPECT_FALSE(internal::HasHedgeWord("nothing butter awaits", words));
  EXPECT_FALSE(internal::HasHedgeWord("42}", words));
  EXPECT_FALSE(internal::HasHedgeWord("wait", {}));
}

TEST(CertaintyTest, EffortPresetsAreDynasors) {
  const std::vector<std::pair<CertaintyEffort, std::pair<int, int>>> presets = {
      {CertaintyEffort::kMild, {8, 64}}, {CertaintyEffort::kLow, {5, 64}},
      {CertaintyEffort::kMid, {3, 64}},  {CertaintyEffort::kHigh, {2, 64}},
      {CertaintyEffort::kCrazy, {2, 32}}};
  for (const auto& [effort, expected] : presets) {
    CertaintyConfig c;
    ApplyCertaintyEffort(effort, c);
    EXPECT_EQ(c.window, expected.first);
    EXPECT_EQ(c.interval_tokens, expected.second);
  }
}

TEST(CertaintyTest, BestOfNStopsSamplesWhoseProbesAgree) {
  FakeScorer scorer(0.0);
  FakeGenerator plain_generator;
  auto plain = RunStrategy(Config(BestOfNConfig{.n = 8}), Job(kLong, 3), plain_generator, &scorer);
  ASSERT_TRUE(plain.ok()) << plain.status();

  BestOfNConfig bon{.n = 8};
  bon.certainty = Probe(/*interval=*/8, /*window=*/2);
  FakeGenerator generator;
  auto result = RunStrategy(Config(bon), Job(kLong, 3), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->stop_reason, "certainty");
  EXPECT_TRUE(IsRightAnswer(kLong, result->answer)) << result->text;
  EXPECT_EQ(result->usage.certain_branches, 8);
  EXPECT_GT(result->usage.probes, 0);
  EXPECT_GT(result->usage.probe_generated_tokens, 0);
  // The probes' tokens are charged but never kept in a candidate.
  ASSERT_EQ(result->candidates.size(), 8u);
  EXPECT_EQ(result->usage.generated_tokens,
            CandidateTokens(*result) + result->usage.probe_generated_tokens);
  EXPECT_EQ(generator.generated_tokens(), result->usage.generated_tokens);
  // Stopped early, probes included, and each ends with the probe's answer.
  EXPECT_LT(result->usage.generated_tokens, plain->usage.generated_tokens);
  for (const Candidate& c : result->candidates) {
    EXPECT_TRUE(c.finished);
    EXPECT_EQ(c.steps.back().rfind(kDynasorProbeText, 0), 0u) << c.steps.back();
    EXPECT_FALSE(c.answer.empty());
  }
  // Every probe is greedy and sends the probe text; none is made before a
  // sample has 8 new tokens.
  int probes = 0;
  for (const auto& call : generator.call_log()) {
    if (!call.probe) continue;
    ++probes;
    EXPECT_EQ(call.temperature, 0.0f);
    for (size_t len : call.suffix_lengths) EXPECT_GE(len, 8u);
  }
  EXPECT_GT(probes, 0);
}

TEST(CertaintyTest, HedgingProbesNeverStopABranch) {
  // Probes hedge until half of the steps are written: with a window as long
  // as the whole solution's probes, none can stop a branch, and the result is
  // the plain run's plus the probes' tokens.
  FakeScorer scorer(0.0);
  FakeGenerator plain_generator;
  auto plain = RunStrategy(Config(BestOfNConfig{.n = 4}), Job(kLong, 9), plain_generator, &scorer);
  ASSERT_TRUE(plain.ok());
  BestOfNConfig bon{.n = 4};
  bon.certainty = Probe(/*interval=*/1, /*window=*/12);
  FakeGenerator generator;
  auto result = RunStrategy(Config(bon), Job(kLong, 9), generator, &scorer);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->usage.certain_branches, 0);
  EXPECT_EQ(result->stop_reason, "completed");
  EXPECT_EQ(result->answer, plain->answer);
  EXPECT_EQ(result->text, plain->text);
  EXPECT_EQ(result->usage.generated_tokens,
            plain->usage.generated_tokens + result->usage.probe_generated_tokens);
}

TEST(CertaintyTest, ProbesStayWithinTheTokenBudget) {
  for (int64_t cap : {60, 150, 400}) {
    BestOfNConfig bon{.n = 8};
    bon.certainty = Probe(4, 2);
    StrategyConfig config = Config(bon);
    config.budget.max_generated_tokens = cap;
    FakeGenerator generator;
    FakeScorer scorer(0.0);
    auto result = RunStrategy(config, Job(kLong, 4), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_LE(result->usage.generated_tokens, cap);
    EXPECT_LE(generator.max_planned_tokens(), cap);
  }
}

TEST(CertaintyTest, BeamSearchSetsCertainBeamsAside) {
  FakeScorer scorer(0.0);
  FakeGenerator plain_generator;
  auto plain = RunStrategy(Config(BeamSearchConfig{.n = 8, .beam_width = 4}), Job(kLong, 2),
                           plain_generator, &scorer);
  ASSERT_TRUE(plain.ok());
  BeamSearchConfig beam{.n = 8, .beam_width = 4};
  beam.certainty = Probe(8, 2);
  FakeGenerator generator;
  auto result = RunStrategy(Config(beam), Job(kLong, 2), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->stop_reason, "certainty");
  EXPECT_GT(result->usage.certain_branches, 0);
  EXPECT_TRUE(IsRightAnswer(kLong, result->answer)) << result->text;
  EXPECT_TRUE(result->candidates[0].finished);
  EXPECT_LT(result->usage.generated_tokens, plain->usage.generated_tokens);
}

TEST(CertaintyTest, SameSeedSameResult) {
  BestOfNConfig bon{.n = 6};
  bon.certainty = Probe(6, 2);
  FakeScorer scorer(0.3, 1);
  const FakeProblem problem{.id = 8, .p = 0.7, .num_steps = 8};
  FakeGenerator g1, g2;
  auto a = RunStrategy(Config(bon), Job(problem, 11), g1, &scorer);
  auto b = RunStrategy(Config(bon), Job(problem, 11), g2, &scorer);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->text, b->text);
  EXPECT_EQ(a->usage.generated_tokens, b->usage.generated_tokens);
  EXPECT_EQ(a->usage.probes, b->usage.probes);
}

TEST(CertaintyTest, InvalidSettingsNameTheField) {
  BestOfNConfig bon{.n = 4};
  bon.certainty = Probe(64, 0);
  auto status = ValidateStrategyConfig(Config(bon));
  EXPECT_THAT(status.message(), ::testing::HasSubstr("best_of_n.certainty.window"));
  BeamSearchConfig beam{.n = 4, .beam_width = 2};
  beam.certainty = Probe(0, 2);
  status = ValidateStrategyConfig(Config(beam));
  EXPECT_THAT(status.message(), ::testing::HasSubstr("beam_search.certainty.interval_tokens"));
  beam.certainty = Probe(8, 2);
  beam.certainty.hedge_words = {""};
  status = ValidateStrategyConfig(Config(beam));
  EXPECT_THAT(status.message(), ::testing::HasSubstr("beam_search.certainty.hedge_words[0]"));
}

}  // namespace
}  // namespace arbor::search
