// Each strategy family's own behaviour in the fake world
// (search/testing/fake_world.h): greedy, best-of-N, beam search, DVTS and the
// particle filter. What every strategy does is in strategy_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "search/resampling.h"
#include "search/selection.h"
#include "search/strategy.h"
#include "search/strategy_test_util.h"
#include "search/testing/fake_world.h"

namespace arbor::search {
namespace {

using ::arbor::search::testing::FakeGenerator;
using ::arbor::search::testing::FakeProblem;
using ::arbor::search::testing::FakeScorer;
using ::arbor::search::testing::IsRightAnswer;

TEST(GreedyTest, TemperatureZeroFollowsTheMode) {
  for (auto [p, right] : {std::pair{0.9999, true}, {0.0001, false}}) {
    FakeGenerator generator;
    const FakeProblem problem{.id = 4, .p = p, .num_steps = 3};
    auto result = RunStrategy(Config(GreedyConfig{}), Job(problem, 1), generator, nullptr);
    ASSERT_TRUE(result.ok());
    ASSERT_EQ(result->candidates.size(), 1u);
    EXPECT_EQ(IsRightAnswer(problem, result->answer), right) << result->text;
    EXPECT_TRUE(result->candidates[0].finished);
    EXPECT_TRUE(result->candidates[0].step_scores.empty());
    for (const auto& call : generator.call_log()) EXPECT_EQ(call.temperature, 0.0f);
  }
}

TEST(BestOfNTest, RewardBudgetScoresTheCandidatesThatFit) {
  StrategyConfig config = Config(BestOfNConfig{.n = 8});
  config.budget.max_reward_tokens = 1000;  // the byte bound fits two or three solutions
  FakeGenerator generator;
  FakeScorer scorer(0.0);
  auto result = RunStrategy(config, Job(kProblem, 2), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->budget_exhausted);
  EXPECT_EQ(result->exhausted_by, "reward_tokens");
  EXPECT_LE(result->usage.reward_tokens, 1000);
  EXPECT_EQ(result->usage.reward_calls, 1);
  int scored = 0;
  for (const Candidate& c : result->candidates) scored += c.step_scores.empty() ? 0 : 1;
  EXPECT_GT(scored, 0);
  EXPECT_LT(scored, 8);
  EXPECT_FALSE(result->candidates[0].step_scores.empty());  // scored ones rank first
}

TEST(BestOfNTest, MajorityVotePicksThePlurality) {
  int contested = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const FakeProblem problem{.id = 1, .p = 0.55, .num_steps = 2};
    FakeGenerator generator;
    auto result = RunStrategy(
        Config(BestOfNConfig{.n = 9, .selection = BestOfNConfig::Selection::kMajorityVote}),
        Job(problem, seed), generator, nullptr);
    ASSERT_TRUE(result.ok());
    ASSERT_EQ(result->candidates.size(), 9u);
    std::map<std::string, int> counts;
    for (const Candidate& c : result->candidates) counts[c.answer]++;
    int most = 0;
    for (const auto& [answer, count] : counts) most = std::max(most, count);
    EXPECT_EQ(counts[result->answer], most);
    EXPECT_EQ(result->candidates[0].votes, most);
    if (counts.size() > 1) ++contested;
  }
  EXPECT_GT(contested, 10);
}

TEST(BeamSearchTest, KeepsTheTopNOverMBeamsEachIteration) {
  // Long solutions and few iterations: no beam finishes before the last one,
  // so the survivors must be exactly the best N/M of the N scores returned.
  const FakeProblem problem{.id = 2, .p = 0.6, .num_steps = 40};
  for (uint64_t seed : {1, 2, 3}) {
    FakeGenerator generator;
    FakeScorer scorer(/*noise=*/1.5, seed);
    int checked = 0;
    JobContext job = Job(problem, seed);
    job.on_progress = [&](const IterationProgress& p) {
      std::vector<double> all(scorer.last_call_scores().begin(), scorer.last_call_scores().end());
      ASSERT_EQ(all.size(), 12u);
      if (p.live == 0) return;  // the last iteration ends every beam
      std::sort(all.rbegin(), all.rend());
      std::vector<double> kept = p.branch_scores;
      std::sort(kept.rbegin(), kept.rend());
      ASSERT_EQ(kept.size(), 3u);
      for (size_t i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(kept[i], all[i]);
      ++checked;
    };
    auto result =
        RunStrategy(Config(BeamSearchConfig{.n = 12, .beam_width = 4, .num_iterations = 5}), job,
                    generator, &scorer);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(checked, 4);
    // Each iteration extends the 3 survivors by 4 samples each.
    for (const auto& call : generator.call_log()) {
      EXPECT_EQ(call.outputs, 12);
    }
  }
}

TEST(BeamSearchTest, LastIterationGeneratesToEosAndFinishedBeamsAreKept) {
  FakeGenerator generator;
  FakeScorer scorer(0.5);
  const FakeProblem problem{.id = 2, .p = 0.6, .num_steps = 8};
  auto result = RunStrategy(Config(BeamSearchConfig{.n = 8, .beam_width = 4, .num_iterations = 3}),
                            Job(problem, 1), generator, &scorer);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(generator.call_log().size(), 3u);
  EXPECT_FALSE(generator.call_log()[1].to_eos);
  EXPECT_TRUE(generator.call_log()[2].to_eos);
  EXPECT_GE(generator.call_log()[2].max_step_tokens, 256);
  EXPECT_EQ(result->candidates.size(), 8u);
  for (const Candidate& c : result->candidates) {
    EXPECT_TRUE(c.finished);
    EXPECT_FALSE(c.answer.empty());
    EXPECT_EQ(c.step_scores.size(), c.steps.size());
    EXPECT_EQ(c.steps.size(), 3u);  // the last "step" holds the rest of the solution
  }
}

TEST(DvtsTest, ReturnsTheLastMCandidatesOfEverySubtree) {
  FakeGenerator generator;
  FakeScorer scorer(0.5);
  auto result = RunStrategy(Config(DvtsConfig{.n = 12, .beam_width = 4, .num_iterations = 20}),
                            Job(kProblem, 3), generator, &scorer);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->candidates.size(), 12u);
  // Subtrees end at the final answer (EOS with \boxed), before the iteration cap.
  EXPECT_LT(result->usage.steps, 20);
  // 3 subtrees x 4 samples per call.
  EXPECT_EQ(generator.call_log().front().outputs, 12);
  EXPECT_EQ(generator.call_log().front().seeds.size(), 3u);  // one root branch per subtree
}

TEST(ParticleFilterTest, CopiesOfAParticleShareOneBranch) {
  // After resampling, duplicates are sent as one branch with several samples.
  FakeGenerator generator;
  FakeScorer scorer(0.0);
  auto result =
      RunStrategy(Config(ParticleFilterConfig{.n = 16, .num_iterations = 6}),
                  Job(FakeProblem{.id = 1, .p = 0.5, .num_steps = 8}, 3), generator, &scorer);
  ASSERT_TRUE(result.ok());
  ASSERT_GE(generator.call_log().size(), 2u);
  EXPECT_EQ(generator.call_log()[0].outputs, 16);
  EXPECT_LT(generator.call_log()[1].seeds.size(), 16u);
  EXPECT_EQ(generator.call_log()[1].outputs, 16);
}

TEST(ParticleFilterTest, EssThresholdSkipsResamplingWhileWeightsAreEven) {
  // A threshold near 0 never resamples: every particle stays its own branch.
  FakeGenerator generator;
  FakeScorer scorer(0.0);
  auto result = RunStrategy(
      Config(ParticleFilterConfig{.n = 16, .ess_threshold = 1e-6f, .num_iterations = 3}),
      Job(FakeProblem{.id = 1, .p = 0.5, .num_steps = 8}, 3), generator, &scorer);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(generator.call_log().size(), 3u);
  EXPECT_EQ(generator.call_log()[1].seeds.size(), 16u);
  EXPECT_EQ(generator.call_log()[2].seeds.size(), 16u);
}

// End to end, the particle filter resamples from softmax(logit(score) / T):
// after the first step the right particles (score 0.953, logit +3) and the
// wrong ones (0.047, -3) are drawn in proportion r e^(3/T) : w e^(-3/T).
TEST(ParticleFilterTest, ResamplingFollowsTheSoftmaxOfTheScoreLogits) {
  const double temperature = 6.0;
  double observed = 0.0, expected = 0.0, variance = 0.0, unweighted = 0.0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    FakeGenerator generator;
    FakeScorer scorer(0.0);
    int right = 0, wrong = 0;
    JobContext job = Job(FakeProblem{.id = static_cast<int>(seed), .p = 0.5, .num_steps = 8}, seed);
    job.on_progress = [&](const IterationProgress& p) {
      if (p.iteration != 0) return;
      for (double s : p.branch_scores) (s > 0.5 ? right : wrong)++;
    };
    auto result = RunStrategy(
        Config(ParticleFilterConfig{
            .n = 64, .temperature = static_cast<float>(temperature), .num_iterations = 2}),
        job, generator, &scorer);
    ASSERT_TRUE(result.ok());
    ASSERT_EQ(right + wrong, 64);
    ASSERT_EQ(generator.call_log().size(), 2u);
    const auto& call = generator.call_log()[1];
    for (size_t b = 0; b < call.samples.size(); ++b) {
      if (call.prefix_right[b]) observed += call.samples[b];
    }
    const double up = right * std::exp(3.0 / temperature);
    const double down = wrong * std::exp(-3.0 / temperature);
    const double q = up / (up + down);
    expected += 64 * q;
    unweighted += right;
    variance += 64 * q * (1 - q);
  }
  EXPECT_LT(std::abs(observed - expected), 4.0 * std::sqrt(variance))
      << "observed " << observed << " expected " << expected;
  // And clearly not the unweighted proportion: the weights matter.
  EXPECT_GT(observed, unweighted + 8.0 * std::sqrt(variance))
      << "observed " << observed << " unweighted " << unweighted;
}

// Without resampling the final weights show the update rule: replace keeps
// logit(last score), cumulative sums logit(score) over the particle's steps.
TEST(ParticleFilterTest, WeightUpdateReplaceOrCumulative) {
  using PF = ParticleFilterConfig;
  for (PF::WeightUpdate update : {PF::WeightUpdate::kReplace, PF::WeightUpdate::kCumulative}) {
    FakeGenerator generator;
    FakeScorer scorer(1.0, 5);
    const double temperature = 2.0;
    auto result =
        RunStrategy(Config(PF{.n = 8,
                              .temperature = static_cast<float>(temperature),
                              .ess_threshold = 1e-9f,
                              .weight_update = update,
                              .num_iterations = 6}),
                    Job(FakeProblem{.id = 1, .p = 0.7, .num_steps = 4}, 1), generator, &scorer);
    ASSERT_TRUE(result.ok());
    ASSERT_EQ(result->candidates.size(), 8u);
    auto log_weight = [&](const Candidate& c) {
      double lw = 0.0;
      for (size_t i = 0; i < c.step_scores.size(); ++i) {
        const double s = std::clamp<double>(c.step_scores[i], 1e-7, 1 - 1e-7);
        const double logit = std::log(s / (1 - s));
        if (update == PF::WeightUpdate::kCumulative || i + 1 == c.step_scores.size()) lw += logit;
      }
      return lw;
    };
    const Candidate& ref = result->candidates[0];
    for (const Candidate& c : result->candidates) {
      EXPECT_NEAR(std::log(c.score / ref.score), (log_weight(c) - log_weight(ref)) / temperature,
                  1e-4);
    }
  }
}

// Entropic resampling's schedule (its_hub): T = base x max(1, (1/ess) x (1 -
// progress)) while ESS/N < threshold, base otherwise.
TEST(ParticleFilterTest, EntropicTemperatureSchedule) {
  EXPECT_DOUBLE_EQ(EntropicTemperature(1.0, 0.6, 0.0, 0.5), 1.0);   // ESS high enough
  EXPECT_DOUBLE_EQ(EntropicTemperature(1.0, 0.25, 0.0, 0.5), 4.0);  // 1/0.25
  EXPECT_DOUBLE_EQ(EntropicTemperature(1.0, 0.25, 0.5, 0.5), 2.0);  // halfway
  EXPECT_DOUBLE_EQ(EntropicTemperature(2.0, 0.25, 0.5, 0.5), 4.0);  // scales the base
  EXPECT_DOUBLE_EQ(EntropicTemperature(1.0, 0.25, 0.9, 0.5), 1.0);  // late: never below base
  EXPECT_DOUBLE_EQ(EntropicTemperature(1.0, 0.1, 1.0, 0.5), 1.0);
}

// With a noiseless PRM the first step's weights are e^3 : e^-3; with few
// right particles (p = 0.2) the ESS ratio is low, and the entropic
// temperature keeps more of the wrong particles alive early on than the
// plain filter does (its_hub's point: overconfident early scores).
TEST(ParticleFilterTest, EntropicResamplingKeepsMoreDiversityEarly) {
  double plain_wrong = 0, entropic_wrong = 0;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    for (bool entropic : {false, true}) {
      FakeGenerator generator;
      FakeScorer scorer(0.0);
      auto result = RunStrategy(
          Config(ParticleFilterConfig{.n = 32,
                                      .resampling = ParticleFilterConfig::Resampling::kSystematic,
                                      .num_iterations = 10,
                                      .entropic = entropic}),
          Job(FakeProblem{.id = static_cast<int>(seed), .p = 0.2, .num_steps = 8}, seed),
          generator, &scorer);
      ASSERT_TRUE(result.ok());
      ASSERT_GE(generator.call_log().size(), 2u);
      const auto& call = generator.call_log()[1];
      for (size_t b = 0; b < call.samples.size(); ++b) {
        if (!call.prefix_right[b]) (entropic ? entropic_wrong : plain_wrong) += call.samples[b];
      }
    }
  }
  EXPECT_GT(entropic_wrong, plain_wrong);
}

// Particle Gibbs: from the second sweep on, the reference particle is not
// generated (n - 1 outputs from the root) and its trajectory survives every
// resampling to the final pool.
TEST(ParticleGibbsTest, ReferenceParticlesAreRetained) {
  FakeGenerator generator;
  FakeScorer scorer(0.5, 2);
  const FakeProblem problem{.id = 4, .p = 0.6, .num_steps = 4};
  JobContext job = Job(problem, 9);
  std::vector<int> pool_sizes;
  job.on_progress = [&](const IterationProgress& p) { pool_sizes.push_back(p.live + p.finished); };
  auto result = RunStrategy(
      Config(ParticleGibbsConfig{.filter = ParticleFilterConfig{.n = 6, .num_iterations = 8},
                                 .num_sweeps = 3,
                                 .num_ref_particles = 1}),
      job, generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->strategy, "particle_gibbs");
  std::vector<int> root_calls;  // outputs of each sweep's first call
  int outputs = 0;
  for (const auto& call : generator.call_log()) {
    if (call.suffix_lengths == std::vector<size_t>{0}) root_calls.push_back(call.outputs);
    outputs += call.outputs;
  }
  EXPECT_EQ(root_calls, (std::vector<int>{6, 5, 5}));
  // Each solution has 4 steps: 4 iterations per sweep; the reference is in
  // the pool at every one of them but never generated.
  EXPECT_EQ(result->usage.steps, 12);
  EXPECT_EQ(outputs, 6 * 4 + 5 * 4 + 5 * 4);
  EXPECT_EQ(pool_sizes, std::vector<int>(12, 6));
  // 3 sweeps x 6 particles, each reference counted once (in its own sweep).
  EXPECT_EQ(result->candidates.size(), 6u + 5u + 5u);
}

TEST(ParticleGibbsTest, InvalidRefCountNamesTheField) {
  StrategyConfig config = Config(
      ParticleGibbsConfig{.filter = ParticleFilterConfig{.n = 4}, .num_ref_particles = 4});
  EXPECT_NE(ValidateStrategyConfig(config).message().find("particle_gibbs.num_ref_particles"),
            std::string::npos);
}

// Adaptive best-of-N: rounds of round_size until LeaderConfidence of the
// votes so far reaches stop_agreement. An easy problem stops after one round;
// a hard one draws all n.
TEST(BestOfNTest, AdaptiveRoundsStopOnceTheVoteIsDecided) {
  const BestOfNConfig adaptive{.n = 16,
                               .selection = BestOfNConfig::Selection::kMajorityVote,
                               .round_size = 4,
                               .stop_agreement = 0.9f};
  {
    FakeGenerator generator;
    auto result = RunStrategy(Config(adaptive), Job(FakeProblem{.id = 1, .p = 0.99, .num_steps = 3}, 1),
                              generator, nullptr);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->candidates.size(), 4u);
    EXPECT_EQ(result->stop_reason, "agreement");
    EXPECT_EQ(generator.call_log().front().outputs, 4);
  }
  {
    FakeGenerator generator;
    auto result = RunStrategy(Config(adaptive), Job(FakeProblem{.id = 2, .p = 0.3, .num_steps = 6}, 1),
                              generator, nullptr);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->candidates.size(), 16u);
    EXPECT_EQ(result->stop_reason, "completed");
  }
}

// With a reward model the votes are PRM-weighted. A problem whose samples
// all go wrong (p = 0.1 over 4 steps) splits them over the fake's three
// wrong answers, up to 10 of 16 on one; the PRM scores each 0.047, so the
// weighted vote stays open (LeaderConfidence <= 0.58) and adaptive best-of-N
// draws all 16. An easy problem, 0.953 per right sample, stops after its
// first round. (selection_test has a wrong raw majority of 4 of 4 that the
// old rule, a raw share of 0.75, called decided.)
TEST(BestOfNTest, AdaptiveWeightedVoteKeepsGrowingOnAnUndecidedVote) {
  const BestOfNConfig adaptive{.n = 16,
                               .selection = BestOfNConfig::Selection::kWeightedVote,
                               .round_size = 4};  // default stop_agreement
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    const FakeProblem hard{.id = 5, .p = 0.1, .num_steps = 4};
    FakeGenerator generator;
    FakeScorer scorer;
    auto result = RunStrategy(Config(adaptive), Job(hard, seed), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->stop_reason, "completed") << seed;
    EXPECT_EQ(generator.call_log().front().outputs, 4);
    std::vector<std::string> answers;
    std::vector<double> weights;
    for (const Candidate& c : result->candidates) {
      answers.push_back(c.answer);
      weights.push_back(c.score);
      EXPECT_FALSE(IsRightAnswer(hard, c.answer));
    }
    EXPECT_EQ(answers.size(), 16u);
    EXPECT_LT(LeaderConfidence(answers, weights), adaptive.stop_agreement);
  }

  const FakeProblem easy{.id = 6, .p = 0.99, .num_steps = 3};
  FakeGenerator generator;
  FakeScorer scorer;
  auto result = RunStrategy(Config(adaptive), Job(easy, 1), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->stop_reason, "agreement");
  EXPECT_EQ(result->candidates.size(), 4u);
  EXPECT_TRUE(IsRightAnswer(easy, result->answer));
  // Scored once each: 4 samples of 3 steps, no rescoring at the end.
  EXPECT_EQ(scorer.calls(), 1);
}

}  // namespace
}  // namespace arbor::search
