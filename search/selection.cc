#include "search/selection.h"

#include <algorithm>
#include <cmath>
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

namespace {

// The continued fraction of I_x(a, b) by the modified Lentz method; converges
// fast for x < (a + 1) / (a + b + 2).
double BetaContinuedFraction(double a, double b, double x) {
  constexpr int kMaxIterations = 500;
  constexpr double kEpsilon = 1e-13;
  constexpr double kTiny = 1e-300;
  const double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0;
  double d = 1.0 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= kMaxIterations; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < kEpsilon) break;
  }
  return h;
}

}  // namespace

double BetaAboveHalf(double a, double b) {
  ARBOR_CHECK(a > 0.0 && b > 0.0);
  constexpr double x = 0.5;
  const double log_front =
      std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + (a + b) * std::log(x);
  const double front = std::exp(log_front);
  // I_x(a, b) directly where the fraction converges, else by the symmetry
  // I_x(a, b) = 1 - I_{1-x}(b, a) (x = 1 - x = 1/2 here).
  if (x < (a + 1.0) / (a + b + 2.0)) return 1.0 - front * BetaContinuedFraction(a, b, x) / a;
  return front * BetaContinuedFraction(b, a, x) / b;
}

double LeaderConfidence(absl::Span<const std::string> answers, absl::Span<const double> weights) {
  ARBOR_CHECK(answers.size() == weights.size());
  absl::flat_hash_map<std::string, double> sums;
  for (size_t i = 0; i < answers.size(); ++i) {
    if (!answers[i].empty()) sums[answers[i]] += std::max(0.0, weights[i]);
  }
  double first = 0.0, second = 0.0;
  for (const auto& [answer, w] : sums) {
    if (w > first) {
      second = first;
      first = w;
    } else if (w > second) {
      second = w;
    }
  }
  return BetaAboveHalf(first + 1.0, second + 1.0);
}

}  // namespace arbor::search
