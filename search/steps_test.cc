// SplitAtDelimiters, and every strategy scoring a step generated to EOS in
// one piece as the steps it holds (SearchRun::ScoreBranches with
// StrategyConfig::split_whole_steps), against the fake world.
#include "search/steps.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/types/span.h"
#include "search/scorer.h"
#include "search/selection.h"
#include "search/strategy.h"
#include "search/strategy_test_util.h"
#include "search/testing/fake_world.h"

namespace arbor::search {
namespace {

using testing::FakeGenerator;
using testing::FakeProblem;
using testing::FakeScorer;

TEST(StepsTest, SplitAtDelimitersCutsAfterEachDelimiter) {
  const std::vector<std::string> nl = {"\n\n"};
  EXPECT_EQ(SplitAtDelimiters("a = 1\n\nb = 2\n\nThe answer is 2", nl),
            (std::vector<std::string>{"a = 1\n\n", "b = 2\n\n", "The answer is 2"}));
  // A trailing delimiter ends the last piece; no empty piece after it.
  EXPECT_EQ(SplitAtDelimiters("a\n\nb\n\n", nl), (std::vector<std::string>{"a\n\n", "b\n\n"}));
  EXPECT_EQ(SplitAtDelimiters("no delimiter", nl), (std::vector<std::string>{"no delimiter"}));
  EXPECT_EQ(SplitAtDelimiters("a\n\nb", {}), (std::vector<std::string>{"a\n\nb"}));
  EXPECT_EQ(SplitAtDelimiters("", nl), (std::vector<std::string>{""}));
  // Several delimiters: the earliest match, the longest among equals.
  EXPECT_EQ(SplitAtDelimiters("a;b\n\nc", {"\n\n", ";"}),
            (std::vector<std::string>{"a;", "b\n\n", "c"}));
  EXPECT_EQ(SplitAtDelimiters("a\n\nb", {"\n", "\n\n"}),
            (std::vector<std::string>{"a\n\n", "b"}));
}

// The fake PRM, recording the step lists (and the mode) it was asked to score.
class RecordingScorer : public Scorer {
 public:
  absl::StatusOr<ScoreResult> Score(const ScoreRequest& request) override {
    for (absl::Span<const std::string> c : request.candidates) {
      seen.emplace_back(c.begin(), c.end());
      last_only.push_back(request.last_step_only);
    }
    return inner.Score(request);
  }
  FakeScorer inner{0.5, 11};
  std::vector<std::vector<std::string>> seen;
  std::vector<bool> last_only;
};

// A step holding more than one step: a delimiter with text after it.
bool HoldsSeveralSteps(const std::string& step) {
  const size_t at = step.find("\n\n");
  return at != std::string::npos && at + 2 < step.size();
}

// The candidate's steps with its multi-step ones cut at "\n\n".
std::vector<std::string> Cut(const Candidate& c) {
  std::vector<std::string> cut;
  for (const std::string& step : c.steps) {
    for (std::string& piece : SplitAtDelimiters(step, {"\n\n"})) cut.push_back(std::move(piece));
  }
  return cut;
}

// What the fake PRM says of `steps`: every step's score.
std::vector<float> FakeScores(const FakeProblem& problem, const std::vector<std::string>& steps) {
  FakeScorer check(0.5, 11);
  const std::string question = problem.Question();
  ScoreRequest request{.question = question, .last_step_only = false};
  request.candidates.push_back(steps);
  auto scores = check.Score(request);
  EXPECT_TRUE(scores.ok());
  return scores.ok() ? scores->scores[0] : std::vector<float>{};
}

struct Case {
  std::string name;
  StrategyConfig config;
};

// Every strategy in a shape where a multi-step chunk is generated to EOS in
// one piece: the tree strategies' last iteration comes after one step of a
// 5-step solution; MCTS expands to EOS at depth 2 (no rollouts); best-of-N
// plays its endgame under a tight token budget.
std::vector<Case> Cases() {
  std::vector<Case> cases;
  cases.push_back({"beam_search", Config(BeamSearchConfig{.n = 4, .beam_width = 2,
                                                          .num_iterations = 2})});
  cases.push_back({"beam_search_min",
                   Config(BeamSearchConfig{.n = 4, .beam_width = 2, .num_iterations = 2,
                                           .aggregation = Aggregation::kMin})});
  cases.push_back({"dvts", Config(DvtsConfig{.n = 4, .beam_width = 2, .num_iterations = 2})});
  cases.push_back({"particle_filter", Config(ParticleFilterConfig{.n = 4, .num_iterations = 2})});
  ParticleGibbsConfig gibbs;
  gibbs.filter.n = 4;
  gibbs.filter.num_iterations = 2;
  gibbs.num_sweeps = 2;
  cases.push_back({"particle_gibbs", Config(gibbs)});
  cases.push_back({"mcts", Config(MctsConfig{.num_simulations = 8, .max_width = 2,
                                             .max_depth = 2})});
  StrategyConfig bon = Config(BestOfNConfig{.n = 8});
  bon.stop.max_step_tokens = 32;
  bon.budget.max_generated_tokens = 300;
  cases.push_back({"best_of_n_endgame", bon});
  return cases;
}

// With split_whole_steps (the default) the scorer never receives a step that
// holds several; the candidate keeps the chunk as generated, one score per
// step, the chunk's being its pieces' aggregate over the split list. Off, the
// chunk goes to the scorer as one step (the old behaviour).
TEST(StepsTest, WholeStepsAreScoredAsTheStepsTheyHold) {
  const FakeProblem problem{.id = 4, .p = 0.7, .num_steps = 5};
  for (const Case& c : Cases()) {
    for (bool split : {true, false}) {
      SCOPED_TRACE(c.name + (split ? " split" : " unsplit"));
      StrategyConfig config = c.config;
      config.split_whole_steps = split;
      FakeGenerator generator;
      RecordingScorer scorer;
      auto result = RunStrategy(config, Job(problem, 3), generator, &scorer);
      ASSERT_TRUE(result.ok()) << result.status();
      int several = 0;
      for (const std::vector<std::string>& steps : scorer.seen) {
        for (const std::string& step : steps) several += HoldsSeveralSteps(step) ? 1 : 0;
      }
      EXPECT_EQ(several == 0, split) << several;
      // The candidates that hold a chunk of several steps, scored on it.
      int chunks = 0;
      const Aggregation aggregation =
          c.name == "beam_search_min" ? Aggregation::kMin : Aggregation::kLast;
      for (const Candidate& cand : result->candidates) {
        if (cand.step_scores.size() != cand.steps.size() ||
            !HoldsSeveralSteps(cand.steps.back())) {
          continue;
        }
        ++chunks;
        if (!split) continue;
        const std::vector<std::string> cut = Cut(cand);
        const std::vector<float> want = FakeScores(problem, cut);
        ASSERT_EQ(want.size(), cut.size());
        const size_t pieces = SplitAtDelimiters(cand.steps.back(), {"\n\n"}).size();
        const float chunk = static_cast<float>(AggregateScores(
            absl::Span<const float>(want).last(pieces), aggregation));
        EXPECT_FLOAT_EQ(cand.step_scores.back(), chunk);
        if (aggregation == Aggregation::kLast) EXPECT_FLOAT_EQ(chunk, want.back());
      }
      EXPECT_GT(chunks, 0) << "no candidate holds a multi-step chunk";
    }
  }
}

// With an aggregation over all steps the scorer is asked for every step's
// score when a split chunk is the newest step; with kLast, the last only.
TEST(StepsTest, SplitChunksAskForEveryScoreOnlyWhenTheAggregationNeedsThem) {
  const FakeProblem problem{.id = 4, .p = 0.7, .num_steps = 5};
  for (Aggregation aggregation : {Aggregation::kLast, Aggregation::kMin}) {
    FakeGenerator generator;
    RecordingScorer scorer;
    auto result = RunStrategy(Config(BeamSearchConfig{.n = 4, .beam_width = 2,
                                                      .num_iterations = 2,
                                                      .aggregation = aggregation}),
                              Job(problem, 3), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_FALSE(scorer.seen.empty());
    // The last call scores the final iteration's children, split.
    EXPECT_EQ(scorer.last_only.back(), aggregation == Aggregation::kLast);
    EXPECT_TRUE(scorer.last_only.front());  // the first step: last step only either way
  }
}

// MCTS's own flag keeps working: split_rollout_steps off scores rollouts
// whole while the job's split_whole_steps stays on.
TEST(StepsTest, MctsRolloutFlagStillTurnsTheRolloutSplitOff) {
  const FakeProblem problem{.id = 9, .p = 0.7, .num_steps = 6};
  FakeGenerator generator;
  RecordingScorer scorer;
  auto result = RunStrategy(
      Config(MctsConfig{.num_simulations = 3, .max_width = 2, .rollouts = true,
                        .sampled_rollouts = false, .split_rollout_steps = false}),
      Job(problem, 5), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  int several = 0;
  for (const std::vector<std::string>& steps : scorer.seen) {
    for (const std::string& step : steps) several += HoldsSeveralSteps(step) ? 1 : 0;
  }
  EXPECT_GT(several, 0);
}

}  // namespace
}  // namespace arbor::search
