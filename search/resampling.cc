#include "search/resampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/check.h"

namespace arbor::search {
namespace {

// Index of the first cumulative weight above `u` (clamped to the last).
size_t Lookup(const std::vector<double>& cdf, double u) {
  const auto it = std::upper_bound(cdf.begin(), cdf.end(), u);
  return std::min(static_cast<size_t>(it - cdf.begin()), cdf.size() - 1);
}

std::vector<double> Cumulative(absl::Span<const double> weights) {
  std::vector<double> cdf(weights.size());
  double sum = 0.0;
  for (size_t i = 0; i < weights.size(); ++i) {
    sum += weights[i];
    cdf[i] = sum;
  }
  // Normalise away rounding so that u in [0, 1) always lands.
  for (double& c : cdf) c /= sum;
  return cdf;
}

}  // namespace

double EntropicTemperature(double base, double ess_ratio, double progress, double threshold) {
  if (!(ess_ratio < threshold) || ess_ratio <= 0.0) return base;
  const double raise = (1.0 / ess_ratio) * (1.0 - std::clamp(progress, 0.0, 1.0));
  return base * std::max(1.0, raise);
}

double ScoreLogit(double score) {
  constexpr double kEps = 1e-7;
  const double s = std::clamp(score, kEps, 1.0 - kEps);
  return std::log(s / (1.0 - s));
}

std::vector<double> SoftmaxWeights(absl::Span<const double> log_weights, double temperature) {
  ARBOR_CHECK(temperature > 0.0);
  std::vector<double> w(log_weights.size());
  if (w.empty()) return w;
  double max = -std::numeric_limits<double>::infinity();
  for (double lw : log_weights) max = std::max(max, lw / temperature);
  if (!std::isfinite(max)) {
    std::fill(w.begin(), w.end(), 1.0 / static_cast<double>(w.size()));
    return w;
  }
  double sum = 0.0;
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = std::exp(log_weights[i] / temperature - max);
    sum += w[i];
  }
  for (double& x : w) x /= sum;
  return w;
}

double EffectiveSampleSize(absl::Span<const double> weights) {
  double sum = 0.0, squares = 0.0;
  for (double w : weights) {
    sum += w;
    squares += w * w;
  }
  return squares > 0.0 ? sum * sum / squares : 0.0;
}

std::vector<size_t> Resample(absl::Span<const double> weights, size_t count,
                             ParticleFilterConfig::Resampling method, JobRandom& rng) {
  ARBOR_CHECK(!weights.empty());
  const std::vector<double> cdf = Cumulative(weights);
  std::vector<size_t> picks(count);
  if (method == ParticleFilterConfig::Resampling::kSystematic) {
    const double offset = rng.NextUniform();
    for (size_t k = 0; k < count; ++k) {
      picks[k] = Lookup(cdf, (offset + static_cast<double>(k)) / static_cast<double>(count));
    }
  } else {
    for (size_t k = 0; k < count; ++k) picks[k] = Lookup(cdf, rng.NextUniform());
    std::sort(picks.begin(), picks.end());
  }
  return picks;
}

size_t SampleIndex(absl::Span<const double> weights, JobRandom& rng) {
  ARBOR_CHECK(!weights.empty());
  return Lookup(Cumulative(weights), rng.NextUniform());
}

}  // namespace arbor::search
