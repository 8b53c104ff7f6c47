// Step-score aggregation, voting and ranking of final candidates.
// Pure functions; thread-safe (the JobRandom passed in is the caller's).
#ifndef ARBOR_SEARCH_SELECTION_H_
#define ARBOR_SEARCH_SELECTION_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "search/random.h"
#include "search/strategy.h"

namespace arbor::search {

// last / min / prod / mean of per-step scores; 0 for no scores.
double AggregateScores(absl::Span<const float> scores, Aggregation aggregation);

enum class VoteRule {
  kNone,            // rank by score
  kMajority,        // most candidates per answer (self-consistency)
  kWeighted,        // largest sum of vote weights per answer
  kBestOfMajority,  // among answers with >= min_votes candidates, top score
};

struct RankOptions {
  VoteRule rule = VoteRule::kNone;
  // Per candidate, for kWeighted (the aggregated score, or a particle's weight).
  absl::Span<const double> vote_weights;
  // For kBestOfMajority: an answer needs at least this many candidates.
  int min_votes = 1;
  // Optional per-candidate tier: a lower tier always ranks first (e.g. finished
  // before cut, scored before unscored). Empty: all tier 0.
  absl::Span<const int> tiers;
};

// Fills every candidate's `votes` (candidates sharing its non-empty answer)
// and returns the indices of `candidates`, best first. Equal keys are ordered
// by random keys from `rng` (per answer for votes, per candidate otherwise), so
// ties break at random but reproducibly for a seed. Candidates without an
// answer never win a vote over ones with an answer in the same tier.
std::vector<size_t> RankCandidates(std::vector<Candidate>& candidates, const RankOptions& options,
                                   JobRandom& rng);

// P(X > 1/2) for X ~ Beta(a, b), a, b > 0: 1 - I_{1/2}(a, b), the regularized
// incomplete beta function by its continued fraction (Numerical Recipes 6.4).
double BetaAboveHalf(double a, double b);

// Adaptive best-of-N's stopping test: Adaptive-Consistency's Beta criterion
// (Aggarwal et al. 2023, "Let's Sample Step by Step") on weighted votes. With
// W1 >= W2 the two largest per-answer sums of `weights` (answers "" do not
// vote), the leader's share p of the two has the posterior Beta(W1 + 1,
// W2 + 1) under a uniform prior; returns P(p > 1/2), in [0.5, 1). The weights
// are PRM scores (votes of 1 without a reward model): a sample the PRM
// believes wrong is little evidence for its answer, so a majority of
// low-scored samples leaves the vote open, where the share of raw votes
// would call it decided (docs/SCALING.md, "Adaptive best-of-N").
double LeaderConfidence(absl::Span<const std::string> answers, absl::Span<const double> weights);

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_SELECTION_H_
