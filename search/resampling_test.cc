#include "search/resampling.h"

#include <gtest/gtest.h>

#include <cmath>

namespace arbor::search {
namespace {

using Resampling = ParticleFilterConfig::Resampling;

TEST(ResamplingTest, LogitAndSoftmax) {
  EXPECT_NEAR(ScoreLogit(0.5), 0.0, 1e-12);
  EXPECT_NEAR(ScoreLogit(0.9), std::log(9.0), 1e-12);
  EXPECT_TRUE(std::isfinite(ScoreLogit(0.0)));
  EXPECT_TRUE(std::isfinite(ScoreLogit(1.0)));
  EXPECT_NEAR(ScoreLogit(1.0), -ScoreLogit(0.0), 1e-9);

  const std::vector<double> lw = {std::log(1.0), std::log(3.0)};
  auto w = SoftmaxWeights(lw, 1.0);
  EXPECT_NEAR(w[0], 0.25, 1e-12);
  EXPECT_NEAR(w[1], 0.75, 1e-12);
  // Temperature 2 flattens: weights proportional to sqrt.
  w = SoftmaxWeights(lw, 2.0);
  EXPECT_NEAR(w[1] / w[0], std::sqrt(3.0), 1e-12);
  // Huge log-weights do not overflow.
  w = SoftmaxWeights(std::vector<double>{1000.0, 999.0}, 1.0);
  EXPECT_NEAR(w[0] / w[1], std::exp(1.0), 1e-9);
}

TEST(ResamplingTest, EffectiveSampleSize) {
  EXPECT_NEAR(EffectiveSampleSize(std::vector<double>(8, 0.125)), 8.0, 1e-12);
  EXPECT_NEAR(EffectiveSampleSize(std::vector<double>{1.0, 0.0, 0.0}), 1.0, 1e-12);
  EXPECT_NEAR(EffectiveSampleSize(std::vector<double>{0.5, 0.5, 0.0}), 2.0, 1e-12);
}

// Draw counts follow the weights: a chi-square test over many draws with fixed
// seeds. 5 categories (4 degrees of freedom): the 99.9% quantile is 18.47.
void ExpectFollowsWeights(Resampling method) {
  const std::vector<double> weights = {0.05, 0.10, 0.20, 0.25, 0.40};
  std::vector<double> counts(weights.size(), 0.0);
  size_t total = 0;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    JobRandom rng(seed, RandomStream::kResample);
    const auto picks = Resample(weights, 50, method, rng);
    ASSERT_EQ(picks.size(), 50u);
    ASSERT_TRUE(std::is_sorted(picks.begin(), picks.end()));
    for (size_t p : picks) counts[p] += 1.0;
    total += picks.size();
  }
  double chi2 = 0.0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const double expected = weights[i] * static_cast<double>(total);
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 18.47);
}

TEST(ResamplingTest, MultinomialFollowsTheWeights) {
  ExpectFollowsWeights(Resampling::kMultinomial);
}

TEST(ResamplingTest, SystematicFollowsTheWeights) { ExpectFollowsWeights(Resampling::kSystematic); }

TEST(ResamplingTest, SystematicHasLowVariance) {
  // Each ancestor gets floor or ceil of N * w copies.
  const std::vector<double> weights = {0.1, 0.3, 0.6};
  for (uint64_t seed = 0; seed < 50; ++seed) {
    JobRandom rng(seed, RandomStream::kResample);
    const auto picks = Resample(weights, 10, Resampling::kSystematic, rng);
    std::vector<int> counts(3, 0);
    for (size_t p : picks) counts[p]++;
    EXPECT_EQ(counts[0], 1);
    EXPECT_EQ(counts[1], 3);
    EXPECT_EQ(counts[2], 6);
  }
}

TEST(ResamplingTest, ZeroWeightsAreNeverPicked) {
  const std::vector<double> weights = {0.0, 0.5, 0.0, 0.5, 0.0};
  for (Resampling method : {Resampling::kMultinomial, Resampling::kSystematic}) {
    JobRandom rng(7, RandomStream::kResample);
    for (size_t p : Resample(weights, 1000, method, rng)) EXPECT_TRUE(p == 1 || p == 3) << p;
  }
}

TEST(ResamplingTest, SameSeedSameDraws) {
  const std::vector<double> weights = {0.3, 0.3, 0.4};
  JobRandom a(11, RandomStream::kResample), b(11, RandomStream::kResample);
  EXPECT_EQ(Resample(weights, 20, Resampling::kMultinomial, a),
            Resample(weights, 20, Resampling::kMultinomial, b));
}

}  // namespace
}  // namespace arbor::search
