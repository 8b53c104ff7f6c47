// Tournament selection for best-of-N (BestOfNConfig::Selection::kTournament):
// a single-elimination knockout over the samples' distinct final answers,
// judged pairwise by the reward model's PairwiseJudge (pairwise reward models
// and LLM-as-a-judge selection, e.g. "pairwise RM + knockout tournament").
//
//  - Entrants: one per distinct non-empty answer. Its representative is the
//    answer's best sample: finished before cut, then the highest aggregated
//    reward score when the samples were scored, then the first drawn.
//  - Seeds: by votes (samples holding the answer), most first; equal votes in
//    a random order from the job's seed.
//  - Each round pairs the entrants still in, in seed order, first against
//    last (seed 1 v N, 2 v N-1, ...); with an odd count the top seed gets a
//    bye. The round's matches go to the judge as ONE Compare call (split only
//    at the service's limit of kMaxPairsPerCompare pairs). P(a) > 1/2 wins
//    for a, < 1/2 for b; exactly 1/2 goes to the higher seed. Winners keep
//    their seed order into the next round. One distinct answer needs no call.
//  - Anytime: a round is sent only when the budget affords it whole (reward
//    calls, the judge's reward-token bound, deadline); when it cannot, the
//    bracket stops there and the majority vote picks among the entrants still
//    in (the top seed left; Usage::tournament_fallback, exhausted_by says which cap).
//  - Ranking: the winner's answer first, then answers by the round they lost
//    in (later first; the entrants still in at a fallback rank above every
//    eliminated one), equal rounds by seed. Within an answer the
//    representative leads, then its other samples (finished first, in draw
//    order); samples without an answer come last (finished first).
#include <algorithm>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "search/search_run.h"

namespace arbor::search::internal {

namespace {

struct Entrant {
  std::string answer;
  std::vector<size_t> members;  // branch indices, representative first
  uint64_t tie = 0;
  // Rounds survived; INT_MAX - 1 for those still in when the bracket ended.
  int survived = 0;
};

}  // namespace

absl::StatusOr<SolveResult> FinishTournament(SearchRun& run, std::vector<Branch> branches) {
  // Group the samples by answer (in draw order).
  std::vector<Entrant> entrants;
  std::vector<size_t> no_answer;
  absl::flat_hash_map<std::string, size_t> by_answer;
  for (size_t i = 0; i < branches.size(); ++i) {
    std::string answer = run.AnswerOf(branches[i]);
    if (answer.empty()) {
      no_answer.push_back(i);
      continue;
    }
    auto [it, inserted] = by_answer.try_emplace(answer, entrants.size());
    if (inserted) entrants.push_back({.answer = std::move(answer)});
    entrants[it->second].members.push_back(i);
  }
  // Representative first: finished, then scored higher, then drawn earlier.
  auto better_sample = [&](size_t a, size_t b) {
    const Branch& x = branches[a];
    const Branch& y = branches[b];
    if (x.finished != y.finished) return x.finished;
    const double sx = x.scored ? x.score : -1.0, sy = y.scored ? y.score : -1.0;
    if (sx != sy) return sx > sy;
    return a < b;
  };
  for (Entrant& e : entrants) {
    std::stable_sort(e.members.begin(), e.members.end(), better_sample);
    e.tie = run.tie_rng().NextBits();
  }
  // Seeds: most votes first, equal votes by the random key.
  std::sort(entrants.begin(), entrants.end(), [](const Entrant& a, const Entrant& b) {
    if (a.members.size() != b.members.size()) return a.members.size() > b.members.size();
    return a.tie < b.tie;
  });

  std::vector<size_t> alive(entrants.size());  // seed indices, in seed order
  std::iota(alive.begin(), alive.end(), 0);
  int round = 0;
  while (alive.size() > 1) {
    const size_t byes = alive.size() % 2;
    const size_t matches = (alive.size() - byes) / 2;
    std::vector<std::pair<const SearchRun::StepList*, const SearchRun::StepList*>> pairs;
    for (size_t k = 0; k < matches; ++k) {
      const Entrant& a = entrants[alive[byes + k]];
      const Entrant& b = entrants[alive[alive.size() - 1 - k]];
      pairs.emplace_back(&branches[a.members.front()].steps, &branches[b.members.front()].steps);
    }
    absl::StatusOr<std::optional<std::vector<float>>> probs = run.ComparePairs(pairs);
    if (!probs.ok()) return probs.status();
    if (!probs->has_value()) {
      // The budget cannot afford this round: the majority vote among those
      // still in, i.e. the top seed left (seeds are ordered by votes).
      run.budget().MarkTournamentFallback();
      break;
    }
    run.budget().CountTournamentRound();
    ++round;
    std::vector<bool> won(alive.size(), false);
    if (byes > 0) won[0] = true;
    for (size_t k = 0; k < matches; ++k) {
      const float p = (**probs)[k];
      // A tie goes to the higher seed, a.
      won[p >= 0.5f ? byes + k : alive.size() - 1 - k] = true;
    }
    std::vector<size_t> next;
    for (size_t i = 0; i < alive.size(); ++i) {
      if (won[i]) {
        entrants[alive[i]].survived = round;
        next.push_back(alive[i]);
      }
    }
    alive = std::move(next);
  }
  for (size_t i = 0; i < alive.size(); ++i) {
    // Still in (the winner, or everyone left at a fallback): above all the
    // eliminated, in seed order (the winner is alive[0]).
    entrants[alive[i]].survived = std::numeric_limits<int>::max();
  }

  // The order: entrants by the round they lost in (later first), then seed.
  std::vector<size_t> entrant_order(entrants.size());
  std::iota(entrant_order.begin(), entrant_order.end(), 0);
  std::stable_sort(entrant_order.begin(), entrant_order.end(), [&](size_t a, size_t b) {
    return entrants[a].survived > entrants[b].survived;
  });
  std::vector<int> tiers(branches.size(), 0);
  int position = 0;
  for (size_t e : entrant_order) {
    for (size_t i : entrants[e].members) tiers[i] = position++;
  }
  std::stable_sort(no_answer.begin(), no_answer.end(), [&](size_t a, size_t b) {
    return branches[a].finished && !branches[b].finished;
  });
  for (size_t i : no_answer) tiers[i] = position++;
  RankOptions rank;
  rank.rule = VoteRule::kNone;  // the tiers are the whole order
  rank.tiers = tiers;
  return run.Finish(std::move(branches), rank);
}

}  // namespace arbor::search::internal
