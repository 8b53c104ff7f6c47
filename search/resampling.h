// Particle weights and resampling for the particle filter (Puri et al. 2025,
// its_hub): log-weight = logit(clip(score)), softmax with a temperature,
// effective sample size, multinomial and systematic resampling.
// Pure functions; thread-safe (the JobRandom is the caller's).
#ifndef ARBOR_SEARCH_RESAMPLING_H_
#define ARBOR_SEARCH_RESAMPLING_H_

#include <cstddef>
#include <vector>

#include "absl/types/span.h"
#include "search/random.h"
#include "search/strategy.h"

namespace arbor::search {

// logit(clip(score, 1e-7, 1 - 1e-7)).
double ScoreLogit(double score);

// softmax(log_weights / temperature); uniform when every weight is -inf.
std::vector<double> SoftmaxWeights(absl::Span<const double> log_weights, double temperature);

// 1 / sum(w^2) of normalised weights: N for uniform weights, 1 for a point mass.
double EffectiveSampleSize(absl::Span<const double> weights);

// `count` ancestor indices drawn from normalised `weights`, in ascending order
// (so copies of one ancestor are adjacent). Multinomial: independent draws;
// systematic: one uniform offset and `count` evenly spaced points.
std::vector<size_t> Resample(absl::Span<const double> weights, size_t count,
                             ParticleFilterConfig::Resampling method, JobRandom& rng);

// Entropic resampling's temperature (its_hub): `base` while ess_ratio >=
// threshold, else base x max(1, (1 / ess_ratio) x (1 - progress)), progress
// in [0, 1] being the share of the iterations already played.
double EntropicTemperature(double base, double ess_ratio, double progress, double threshold);

// One index drawn from normalised `weights`.
size_t SampleIndex(absl::Span<const double> weights, JobRandom& rng);

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_RESAMPLING_H_
