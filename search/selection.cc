#include "search/selection.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "common/check.h"

namespace arbor::search {

double AggregateScores(absl::Span<const float> scores, Aggregation aggregation) {
  if (scores.empty()) return 0.0;
  switch (aggregation) {
    case Aggregation::kLast:
      return scores.back();
    case Aggregation::kMin:
      return *std::min_element(scores.begin(), scores.end());
    case Aggregation::kProd: {
      double product = 1.0;
      for (float s : scores) product *= s;
      return product;
    }
    case Aggregation::kMean: {
      double sum = 0.0;
      for (float s : scores) sum += s;
      return sum / static_cast<double>(scores.size());
    }
  }
  return scores.back();
}

std::vector<size_t> RankCandidates(std::vector<Candidate>& candidates, const RankOptions& options,
                                   JobRandom& rng) {
  const size_t n = candidates.size();
  ARBOR_CHECK(options.tiers.empty() || options.tiers.size() == n);
  ARBOR_CHECK(options.rule != VoteRule::kWeighted || options.vote_weights.size() == n);

  struct AnswerStats {
    int count = 0;
    double weight = 0.0;
    uint64_t tie_key = 0;
  };
  absl::flat_hash_map<std::string, AnswerStats> answers;
  std::vector<uint64_t> tie_keys(n);
  for (size_t i = 0; i < n; ++i) {
    tie_keys[i] = rng.NextBits();
    const std::string& answer = candidates[i].answer;
    if (answer.empty()) continue;
    auto [it, inserted] = answers.try_emplace(answer);
    if (inserted) it->second.tie_key = rng.NextBits();
    it->second.count += 1;
    if (options.rule == VoteRule::kWeighted) it->second.weight += options.vote_weights[i];
  }
  for (Candidate& c : candidates) {
    auto it = answers.find(c.answer);
    c.votes = (c.answer.empty() || it == answers.end()) ? 0 : it->second.count;
  }

  // Sort key, smaller first: (tier, -answer_strength, answer_tie, -score, tie).
  constexpr double kNoAnswer = std::numeric_limits<double>::infinity();
  struct Key {
    int tier;
    double answer_rank;  // negated strength; +inf without an answer
    uint64_t answer_tie;
    double neg_score;
    uint64_t tie;
  };
  std::vector<Key> keys(n);
  for (size_t i = 0; i < n; ++i) {
    const Candidate& c = candidates[i];
    Key& k = keys[i];
    k.tier = options.tiers.empty() ? 0 : options.tiers[i];
    k.neg_score = -c.score;
    k.tie = tie_keys[i];
    k.answer_rank = 0.0;
    k.answer_tie = 0;
    if (options.rule == VoteRule::kNone) continue;
    auto it = answers.find(c.answer);
    if (c.answer.empty() || it == answers.end()) {
      k.answer_rank = kNoAnswer;
      continue;
    }
    const AnswerStats& stats = it->second;
    switch (options.rule) {
      case VoteRule::kMajority:
        k.answer_rank = -static_cast<double>(stats.count);
        k.answer_tie = stats.tie_key;
        break;
      case VoteRule::kWeighted:
        k.answer_rank = -stats.weight;
        k.answer_tie = stats.tie_key;
        break;
      case VoteRule::kBestOfMajority:
        // Eligible answers first; within them, candidates by score alone.
        k.answer_rank = stats.count >= options.min_votes ? 0.0 : 1.0;
        break;
      case VoteRule::kNone:
        break;
    }
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const Key& x = keys[a];
    const Key& y = keys[b];
    return std::tie(x.tier, x.answer_rank, x.answer_tie, x.neg_score, x.tie) <
           std::tie(y.tier, y.answer_rank, y.answer_tie, y.neg_score, y.tie);
  });
  return order;
}

}  // namespace arbor::search
