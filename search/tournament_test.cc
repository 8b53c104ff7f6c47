// Tournament selection for best-of-N against a scripted world: a generator
// whose samples say "The answer is X" with chosen answers, and a judge that
// prefers answers by fixed strengths (Bradley-Terry: P(a) = s_a / (s_a + s_b))
// and records every Compare call. Bracket order, byes, ties, the budget
// fallback and the ranking by elimination round.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "search/answer.h"
#include "search/pairwise_judge.h"
#include "search/strategy.h"
#include "search/testing/fake_world.h"

namespace arbor::search {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Match = std::pair<std::string, std::string>;

// Every sample is one finished step: texts[sample], 3 tokens.
class ScriptedGenerator : public Generator {
 public:
  explicit ScriptedGenerator(std::vector<std::string> texts) : texts_(std::move(texts)) {}
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view) override {
    return std::vector<int32_t>{1, 2};
  }
  absl::StatusOr<ExtendResult> Extend(const ExtendRequest& request) override {
    ExtendResult result;
    for (size_t b = 0; b < request.branches.size(); ++b) {
      for (int s = 0; s < request.branches[b].num_samples; ++s) {
        StepOutput out;
        out.branch_index = static_cast<int32_t>(b);
        out.sample_index = s;
        out.tokens = {7, 8, 9};
        out.text = texts_.at(static_cast<size_t>(s));
        out.finish_reason = FinishReason::kEos;
        result.outputs.push_back(std::move(out));
        result.usage.generated_tokens += 3;
      }
    }
    return result;
  }

 private:
  std::vector<std::string> texts_;
};

// The answer a sample text states ("... The answer is 4" -> "4").
std::string Stated(absl::Span<const std::string> steps) {
  const std::string& last = steps.back();
  return last.substr(last.rfind(' ') + 1);
}

class ScriptedJudge : public Scorer, public PairwiseJudge {
 public:
  explicit ScriptedJudge(std::map<std::string, double> strength) : strength_(std::move(strength)) {}
  absl::StatusOr<ScoreResult> Score(const ScoreRequest&) override {
    return absl::InternalError("a tournament must not score samples");
  }
  PairwiseJudge* pairwise_judge() override { return this; }
  absl::StatusOr<PairwiseResult> Compare(const PairwiseRequest& request) override {
    PairwiseResult result;
    std::vector<Match> call;
    for (const PairwiseMatch& m : request.pairs) {
      const std::string a = Stated(m.a), b = Stated(m.b);
      call.emplace_back(a, b);
      texts_.push_back(m.a.back());
      texts_.push_back(m.b.back());
      const double sa = strength_.at(a), sb = strength_.at(b);
      result.prob_a.push_back(static_cast<float>(sa / (sa + sb)));
      result.usage.reward_tokens += 10;
    }
    calls_.push_back(std::move(call));
    return result;
  }
  const std::vector<std::vector<Match>>& calls() const { return calls_; }
  // The step texts shown to the judge, a then b per pair.
  const std::vector<std::string>& texts() const { return texts_; }

 private:
  std::map<std::string, double> strength_;
  std::vector<std::vector<Match>> calls_;
  std::vector<std::string> texts_;
};

// Samples with `votes[i]` copies of answer i + 1 (in that order), then `blank`
// samples stating no answer.
std::vector<std::string> Samples(const std::vector<int>& votes, int blank = 0) {
  std::vector<std::string> texts;
  for (size_t a = 0; a < votes.size(); ++a) {
    for (int k = 0; k < votes[a]; ++k) {
      texts.push_back(absl::StrCat("Sample ", texts.size(), ". The answer is ", a + 1));
    }
  }
  for (int k = 0; k < blank; ++k) texts.push_back("I cannot tell.");
  return texts;
}

StrategyConfig Tournament(int n) {
  StrategyConfig config;
  config.strategy = BestOfNConfig{.n = n, .selection = BestOfNConfig::Selection::kTournament};
  config.max_candidates = 1024;
  return config;
}

JobContext Job(uint64_t seed = 1) {
  JobContext job;
  job.question = "What is the number?";
  job.seed = seed;
  return job;
}

// The answers of the ranked candidates, one per run of equal answers.
std::vector<std::string> AnswerOrder(const SolveResult& result) {
  std::vector<std::string> order;
  for (const Candidate& c : result.candidates) {
    if (order.empty() || order.back() != c.answer) order.push_back(c.answer);
  }
  return order;
}

// Five answers seeded by votes 5, 4, 3, 2, 1; "4" is the strongest, then "5".
const std::map<std::string, double> kStrength = {
    {"1", 1.0}, {"2", 2.0}, {"3", 3.0}, {"4", 10.0}, {"5", 5.0}};

TEST(TournamentTest, SeedsByVotesPairsFirstAgainstLastAndGivesTheTopSeedTheBye) {
  ScriptedGenerator generator(Samples({5, 4, 3, 2, 1}));
  ScriptedJudge judge(kStrength);
  auto result = RunStrategy(Tournament(15), Job(), generator, &judge);
  ASSERT_TRUE(result.ok()) << result.status();
  // Round 1: "1" has the bye; 2 v 5 and 3 v 4 in one call. Round 2: "1"'s
  // bye again, 4 v 5. Final: 1 v 4.
  EXPECT_THAT(judge.calls(),
              ElementsAre(ElementsAre(Match{"2", "5"}, Match{"3", "4"}),
                          ElementsAre(Match{"4", "5"}), ElementsAre(Match{"1", "4"})));
  EXPECT_EQ(result->answer, "4");
  EXPECT_EQ(result->strategy, "best_of_n");
  // Winner, final loser, round-2 loser, round-1 losers by seed.
  EXPECT_THAT(AnswerOrder(*result), ElementsAre("4", "1", "5", "2", "3"));
  ASSERT_EQ(result->candidates.size(), 15u);
  EXPECT_EQ(result->candidates[0].votes, 2);
  // Each answer's representative is its first drawn (all finished, unscored).
  EXPECT_EQ(judge.texts()[0], "Sample 5. The answer is 2");
  EXPECT_EQ(judge.texts()[1], "Sample 14. The answer is 5");
  EXPECT_EQ(result->candidates[0].text, "Sample 12. The answer is 4");
  EXPECT_EQ(result->usage.compare_calls, 3);
  EXPECT_EQ(result->usage.compared_pairs, 4);
  EXPECT_EQ(result->usage.tournament_rounds, 3);
  EXPECT_FALSE(result->usage.tournament_fallback);
  EXPECT_EQ(result->usage.reward_calls, 3);
  EXPECT_EQ(result->usage.reward_tokens, 40);
  EXPECT_FALSE(result->budget_exhausted);
  EXPECT_EQ(result->stop_reason, "completed");
}

TEST(TournamentTest, AnEvenFieldHasNoByes) {
  ScriptedGenerator generator(Samples({4, 3, 2, 1}));
  ScriptedJudge judge(kStrength);
  auto result = RunStrategy(Tournament(10), Job(), generator, &judge);
  ASSERT_TRUE(result.ok()) << result.status();
  // The winners keep their seed order: "3" (seed 3) before "4" (seed 4).
  EXPECT_THAT(judge.calls(), ElementsAre(ElementsAre(Match{"1", "4"}, Match{"2", "3"}),
                                         ElementsAre(Match{"3", "4"})));
  EXPECT_THAT(AnswerOrder(*result), ElementsAre("4", "3", "1", "2"));
}

TEST(TournamentTest, OneDistinctAnswerNeedsNoCallAndSamplesWithoutAnAnswerRankLast) {
  ScriptedGenerator generator(Samples({3}, /*blank=*/2));
  ScriptedJudge judge(kStrength);
  auto result = RunStrategy(Tournament(5), Job(), generator, &judge);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(judge.calls().empty());
  EXPECT_EQ(result->answer, "1");
  EXPECT_THAT(AnswerOrder(*result), ElementsAre("1", ""));
  EXPECT_EQ(result->usage.compare_calls, 0);
  EXPECT_EQ(result->usage.reward_calls, 0);
  EXPECT_EQ(result->usage.tournament_rounds, 0);
}

TEST(TournamentTest, AnEvenVerdictGoesToTheHigherSeed) {
  ScriptedGenerator generator(Samples({1, 2}));
  ScriptedJudge judge({{"1", 1.0}, {"2", 1.0}});
  auto result = RunStrategy(Tournament(3), Job(), generator, &judge);
  ASSERT_TRUE(result.ok()) << result.status();
  // "2" has more votes: it is seed 1, shown as a, and keeps the tie.
  EXPECT_THAT(judge.calls(), ElementsAre(ElementsAre(Match{"2", "1"})));
  EXPECT_EQ(result->answer, "2");
}

TEST(TournamentTest, EqualVotesAreSeededAtRandomButReproduciblyForASeed) {
  std::set<std::string> first_seeds;
  for (uint64_t seed = 1; seed <= 16; ++seed) {
    std::vector<std::string> seen;
    for (int rep = 0; rep < 2; ++rep) {
      ScriptedGenerator generator(Samples({1, 1}));
      ScriptedJudge judge({{"1", 1.0}, {"2", 1.0}});
      auto result = RunStrategy(Tournament(2), Job(seed), generator, &judge);
      ASSERT_TRUE(result.ok()) << result.status();
      ASSERT_EQ(judge.calls().size(), 1u);
      // An even verdict: the random top seed wins.
      EXPECT_EQ(result->answer, judge.calls()[0][0].first);
      seen.push_back(result->answer);
    }
    EXPECT_EQ(seen[0], seen[1]) << "seed " << seed;
    first_seeds.insert(seen[0]);
  }
  EXPECT_EQ(first_seeds.size(), 2u);  // both orders occur over 16 seeds
}

TEST(TournamentTest, ARoundTheBudgetCannotAffordFallsBackToTheMajorityAmongThoseStillIn) {
  StrategyConfig config = Tournament(15);
  config.budget.max_reward_calls = 1;
  ScriptedGenerator generator(Samples({5, 4, 3, 2, 1}));
  ScriptedJudge judge(kStrength);
  auto result = RunStrategy(config, Job(), generator, &judge);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(judge.calls().size(), 1u);  // round 1 only
  // Still in: "1" (bye), "5" and "4"; the majority vote among them is "1".
  EXPECT_EQ(result->answer, "1");
  EXPECT_THAT(AnswerOrder(*result), ElementsAre("1", "4", "5", "2", "3"));
  EXPECT_TRUE(result->usage.tournament_fallback);
  EXPECT_EQ(result->usage.tournament_rounds, 1);
  EXPECT_EQ(result->usage.compare_calls, 1);
  EXPECT_TRUE(result->budget_exhausted);
  EXPECT_EQ(result->exhausted_by, "reward_calls");
  EXPECT_EQ(result->stop_reason, "reward_calls");
}

TEST(TournamentTest, ARewardTokenCapTooSmallForTheFirstRoundIsAPlainMajorityVote) {
  StrategyConfig config = Tournament(15);
  config.budget.max_reward_tokens = 50;  // below the judge's bound for two pairs
  ScriptedGenerator generator(Samples({5, 4, 3, 2, 1}));
  ScriptedJudge judge(kStrength);
  auto result = RunStrategy(config, Job(), generator, &judge);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(judge.calls().empty());
  EXPECT_EQ(result->answer, "1");
  EXPECT_THAT(AnswerOrder(*result), ElementsAre("1", "2", "3", "4", "5"));
  EXPECT_TRUE(result->usage.tournament_fallback);
  EXPECT_EQ(result->usage.reward_calls, 0);
  EXPECT_EQ(result->exhausted_by, "reward_tokens");
}

TEST(TournamentTest, NeedsAScorerThatJudgesPairs) {
  ScriptedGenerator generator(Samples({1, 1}));
  testing::FakeScorer scorer;  // scores only
  auto no_judge = RunStrategy(Tournament(2), Job(), generator, &scorer);
  ASSERT_FALSE(no_judge.ok());
  EXPECT_EQ(no_judge.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(no_judge.status().message(), HasSubstr("tournament"));
  auto none = RunStrategy(Tournament(2), Job(), generator, nullptr);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TournamentTest, TheFakeWorldsBestAnswerWinsAgainstAnHonestJudge) {
  // The fake world's samples, judged by a judge that knows the right answer:
  // the tournament finds it whenever one sample has it.
  const testing::FakeProblem problem{.id = 5, .p = 0.5, .num_steps = 3};
  testing::FakeGenerator generator;
  class Honest : public Scorer, public PairwiseJudge {
   public:
    explicit Honest(const testing::FakeProblem& p)
        : problem_(p), extractor_(*AnswerExtractor::Create("")) {}
    absl::StatusOr<ScoreResult> Score(const ScoreRequest&) override {
      return absl::InternalError("unexpected Score");
    }
    PairwiseJudge* pairwise_judge() override { return this; }
    absl::StatusOr<PairwiseResult> Compare(const PairwiseRequest& request) override {
      PairwiseResult r;
      for (const PairwiseMatch& m : request.pairs) {
        const bool a = Right(m.a), b = Right(m.b);
        r.prob_a.push_back(a == b ? 0.5f : (a ? 0.9f : 0.1f));
      }
      return r;
    }

   private:
    bool Right(absl::Span<const std::string> steps) const {
      return testing::IsRightAnswer(problem_, extractor_->Extract(absl::StrJoin(steps, ""), true));
    }
    testing::FakeProblem problem_;
    std::unique_ptr<AnswerExtractor> extractor_;
  } judge(problem);
  JobContext job;
  job.question = problem.Question();
  job.seed = 11;
  auto result = RunStrategy(Tournament(16), job, generator, &judge);
  ASSERT_TRUE(result.ok()) << result.status();
  bool any_right = false;
  for (const Candidate& c : result->candidates) {
    any_right = any_right || testing::IsRightAnswer(problem, c.answer);
  }
  ASSERT_TRUE(any_right);
  EXPECT_TRUE(testing::IsRightAnswer(problem, result->answer));
  EXPECT_GT(result->usage.compare_calls, 0);
}

}  // namespace
}  // namespace arbor::search
