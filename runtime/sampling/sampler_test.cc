#include "runtime/sampling/sampler.h"

#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/sampling_math.h"
#if defined(ARBOR_HAVE_CUDA)
#include "kernels/reference.h"
#endif

namespace arbor::runtime {
namespace {

std::vector<float> RandomLogits(int vocab, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(vocab);
  for (float& v : logits) v = normal(rng);
  return logits;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i)
    sum += p[i] = std::exp((logits[i] - max) / temperature);
  for (double& v : p) v /= sum;
  return p;
}

TEST(SamplerTest, ValidateNamesTheBadField) {
  EXPECT_TRUE(ValidateSamplingParams({0.8f, 1.0f, 0}, 100).ok());
  EXPECT_TRUE(ValidateSamplingParams({0.0f, 0.5f, 100}, 100).ok());
  auto bad_t = ValidateSamplingParams({-1.0f, 1.0f, 0}, 100);
  EXPECT_EQ(bad_t.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_t.message()), ::testing::HasSubstr("temperature"));
  EXPECT_THAT(std::string(ValidateSamplingParams({1.0f, 0.0f, 0}, 100).message()),
              ::testing::HasSubstr("top_p"));
  EXPECT_THAT(std::string(ValidateSamplingParams({1.0f, 1.5f, 0}, 100).message()),
              ::testing::HasSubstr("top_p"));
  EXPECT_THAT(std::string(ValidateSamplingParams({1.0f, 1.0f, 101}, 100).message()),
              ::testing::HasSubstr("top_k"));
  EXPECT_FALSE(ValidateSamplingParams({NAN, 1.0f, 0}, 100).ok());
}

TEST(SamplerTest, GreedyIsArgmaxWithRawLogprob) {
  Sampler sampler;
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto logits = RandomLogits(257, seed);
    const int argmax =
        static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    const auto p = Softmax(logits);
    for (uint64_t pos = 0; pos < 3; ++pos) {
      auto s = sampler.Sample(logits, {0.0f, 0.3f, 5}, seed, pos, pos);
      EXPECT_EQ(s.token, argmax);
      EXPECT_NEAR(s.logprob, std::log(p[argmax]), 1e-5);
    }
  }
  // Ties go to the lowest id.
  std::vector<float> tied = {1.0f, 3.0f, 3.0f, -2.0f};
  EXPECT_EQ(sampler.Sample(tied, {0.0f, 1.0f, 0}, 0, 0, 0).token, 1);
}

TEST(SamplerTest, LogprobIsUnderTheUnmodifiedDistribution) {
  Sampler sampler;
  const auto logits = RandomLogits(50, 3);
  const auto p = Softmax(logits);
  for (uint64_t pos = 0; pos < 200; ++pos) {
    auto s = sampler.Sample(logits, {0.5f, 0.7f, 10}, 11, 0, pos);
    ASSERT_GE(s.token, 0);
    ASSERT_LT(s.token, 50);
    EXPECT_NEAR(s.logprob, std::log(p[s.token]), 1e-5);
  }
}

TEST(SamplerTest, TopKDrawsOnlyFromTheKLargest) {
  Sampler sampler;
  const auto logits = RandomLogits(100, 5);
  std::vector<int> order(100);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const std::set<int> top5(order.begin(), order.begin() + 5);
  std::set<int> seen;
  for (uint64_t pos = 0; pos < 2000; ++pos) {
    auto s = sampler.Sample(logits, {5.0f, 1.0f, 5}, 1, 0, pos);  // hot: spreads over all k
    EXPECT_TRUE(top5.count(s.token)) << s.token;
    seen.insert(s.token);
  }
  EXPECT_EQ(seen, top5);
  // k = 1 is greedy.
  for (uint64_t pos = 0; pos < 20; ++pos) {
    EXPECT_EQ(sampler.Sample(logits, {2.0f, 1.0f, 1}, 9, 0, pos).token, order[0]);
  }
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  Sampler sampler;
  // Probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 (ids shuffled).
  std::vector<float> logits(5);
  const std::vector<double> p = {0.0625, 0.5, 0.125, 0.0625, 0.25};
  for (int i = 0; i < 5; ++i) logits[i] = static_cast<float>(std::log(p[i]));
  auto draw_set = [&](float top_p) {
    std::set<int> seen;
    for (uint64_t pos = 0; pos < 3000; ++pos) {
      seen.insert(sampler.Sample(logits, {1.0f, top_p, 0}, 4, 2, pos).token);
    }
    return seen;
  };
  EXPECT_EQ(draw_set(0.45f), (std::set<int>{1}));
  EXPECT_EQ(draw_set(0.6f), (std::set<int>{1, 4}));
  EXPECT_EQ(draw_set(0.74f), (std::set<int>{1, 4}));
  EXPECT_EQ(draw_set(0.8f), (std::set<int>{1, 2, 4}));
  EXPECT_EQ(draw_set(1.0f), (std::set<int>{0, 1, 2, 3, 4}));
}

// Chi-square goodness of fit of 40000 draws against the (tempered, truncated)
// distribution; the threshold is far above the 99.9% quantile for these
// degrees of freedom, and far below what a wrong distribution gives.
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& expected_p, int n) {
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected_p[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has zero probability";
      continue;
    }
    const double e = expected_p[i] * n;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi2;
}

TEST(SamplerTest, DrawsMatchTheDistributionStatistically) {
  Sampler sampler;
  const int vocab = 20;
  const auto logits = RandomLogits(vocab, 21, 1.0f);
  const int n = 40000;
  for (const SamplingParams params :
       {SamplingParams{1.0f, 1.0f, 0}, SamplingParams{0.7f, 1.0f, 0}, SamplingParams{1.3f, 1.0f, 8},
        SamplingParams{1.0f, 0.8f, 0}}) {
    auto p = Softmax(logits, params.temperature);
    std::vector<int> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    std::vector<double> q(vocab, 0.0);
    const int k = params.top_k > 0 ? params.top_k : vocab;
    double kept_mass = 0;
    for (int i = 0; i < k; ++i) kept_mass += p[order[i]];
    double mass = 0;
    for (int i = 0; i < k; ++i) {
      q[order[i]] = p[order[i]];
      mass += p[order[i]];
      if (mass >= params.top_p * kept_mass) break;
    }
    const double total = std::accumulate(q.begin(), q.end(), 0.0);
    for (double& v : q) v /= total;
    std::vector<int> counts(vocab, 0);
    for (int i = 0; i < n; ++i) ++counts[sampler.Sample(logits, params, 99, 3, i).token];
    const double chi2 = ChiSquare(counts, q, n);
    EXPECT_LT(chi2, 60.0) << "T=" << params.temperature << " top_k=" << params.top_k
                          << " top_p=" << params.top_p;
  }
}

TEST(SamplerTest, DrawDependsOnlyOnSeedStreamAndPosition) {
  // The same (seed, stream, position) gives the same token whatever was drawn
  // before or around it (a fresh sampler, other rows in between): this is what
  // makes a branch's tokens independent of its batch.
  const auto logits = RandomLogits(300, 8, 1.0f);
  std::vector<int32_t> alone;
  {
    Sampler sampler;
    for (uint64_t pos = 0; pos < 64; ++pos) {
      alone.push_back(sampler.Sample(logits, {0.9f, 0.95f, 50}, 1234, 7, pos).token);
    }
  }
  Sampler batched;
  std::vector<int32_t> interleaved;
  for (uint64_t pos = 0; pos < 64; ++pos) {
    for (uint64_t other = 0; other < 5; ++other) {
      batched.Sample(RandomLogits(300, 100 + other), {1.0f, 0.5f, 0}, 77, other, pos);
    }
    interleaved.push_back(batched.Sample(logits, {0.9f, 0.95f, 50}, 1234, 7, pos).token);
  }
  EXPECT_EQ(alone, interleaved);
  // And different streams or seeds give different sequences.
  Sampler sampler;
  std::vector<int32_t> other_stream, other_seed;
  for (uint64_t pos = 0; pos < 64; ++pos) {
    other_stream.push_back(sampler.Sample(logits, {0.9f, 0.95f, 50}, 1234, 8, pos).token);
    other_seed.push_back(sampler.Sample(logits, {0.9f, 0.95f, 50}, 1235, 7, pos).token);
  }
  EXPECT_NE(alone, other_stream);
  EXPECT_NE(alone, other_seed);
}

// The documented algorithm written plainly (a full sort, no shortcuts), to pin
// the optimised Sampler to it token for token.
int32_t PlainSample(const std::vector<float>& logits, const SamplingParams& p, uint64_t seed,
                    uint64_t stream, uint64_t position) {
  using namespace kernels;
  const int vocab = static_cast<int>(logits.size());
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  const float inv_t = 1.0f / p.temperature;
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return SamplingKey(logits[a], a) > SamplingKey(logits[b], b);
  });
  int kept = p.top_k > 0 && p.top_k < vocab ? p.top_k : vocab;
  uint64_t mass = 0;
  for (int i = 0; i < kept; ++i) mass += SamplingMass(logits[order[i]], max_logit, inv_t);
  if (p.top_p < 1.0f) {
    const uint64_t target = TopPTarget(p.top_p, mass);
    uint64_t run = 0;
    int n = 0;
    while (n < kept && run < target) run += SamplingMass(logits[order[n++]], max_logit, inv_t);
    kept = n;
    mass = run;
  }
  std::vector<int32_t> ids(order.begin(), order.begin() + kept);
  std::sort(ids.begin(), ids.end());
  const uint64_t draw = DrawTarget(seed, stream, position, mass);
  uint64_t run = 0;
  for (int32_t id : ids) {
    run += SamplingMass(logits[id], max_logit, inv_t);
    if (run > draw) return id;
  }
  return ids.back();
}

TEST(SamplerTest, MatchesTheDocumentedAlgorithmTokenForToken) {
  Sampler sampler;
  std::mt19937 rng(17);
  int cases = 0;
  for (int vocab : {7, 100, 3000}) {
    for (float scale : {0.3f, 2.0f, 8.0f}) {  // flat to very peaked
      for (const SamplingParams params :
           {SamplingParams{1.0f, 1.0f, 0}, SamplingParams{0.7f, 0.9f, 0},
            SamplingParams{1.3f, 0.5f, 0}, SamplingParams{0.9f, 0.999f, 0},
            SamplingParams{1.0f, 1.0f, 5}, SamplingParams{2.0f, 0.8f, std::min(50, vocab)},
            SamplingParams{0.5f, 0.95f, vocab}}) {
        ASSERT_TRUE(ValidateSamplingParams(params, vocab).ok());
        auto logits = RandomLogits(vocab, rng(), scale);
        if (vocab == 100) logits[3] = logits[9];  // an exact tie
        for (uint64_t pos = 0; pos < 20; ++pos) {
          const auto s = sampler.Sample(logits, params, 5, 1, pos);
          ASSERT_EQ(s.token, PlainSample(logits, params, 5, 1, pos))
              << "vocab " << vocab << " scale " << scale << " T " << params.temperature << " top_p "
              << params.top_p << " top_k " << params.top_k << " pos " << pos;
#if defined(ARBOR_HAVE_CUDA)
          kernels::SampleParams kp;
          kp.temperature = params.temperature;
          kp.top_p = params.top_p;
          kp.top_k = params.top_k;
          kp.seed = 5;
          kp.stream = 1;
          kp.position = pos;
          const auto ref = kernels::reference::Sample(logits.data(), vocab, kp);
          ASSERT_EQ(s.token, ref.token);
          ASSERT_NEAR(s.logprob, ref.logprob, 1e-5);  // log Z summed in another order
#endif
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, 3 * 3 * 7 * 20);
}

TEST(SamplerTest, FastMassesEqualTheSharedSamplingMass) {
  // Every x = (logit - max) * inv_t in [-30, 0] on a dense grid, then random
  // rows at several temperatures: identical integer masses, so the CPU draw
  // is the GPU draw.
  std::vector<float> logits;
  for (int i = 0; i <= 3000000; ++i) logits.push_back(-30.0f * static_cast<float>(i) / 3000000);
  logits.push_back(0.0f);
  std::vector<uint64_t> masses(logits.size());
  internal::ComputeSamplingMasses(logits.data(), static_cast<int>(logits.size()), 0.0f, 1.0f,
                                  masses.data());
  for (size_t i = 0; i < logits.size(); ++i) {
    ASSERT_EQ(masses[i], kernels::SamplingMass(logits[i], 0.0f, 1.0f)) << "x = " << logits[i];
  }
  std::mt19937 rng(3);
  for (float t : {0.1f, 0.7f, 1.0f, 1.9f, 10.0f}) {
    auto row = RandomLogits(5000, rng(), 6.0f);
    const float max_logit = *std::max_element(row.begin(), row.end());
    std::vector<uint64_t> m(row.size());
    uint64_t total = internal::ComputeSamplingMasses(row.data(), static_cast<int>(row.size()),
                                                     max_logit, 1.0f / t, m.data());
    uint64_t expected_total = 0;
    for (size_t i = 0; i < row.size(); ++i) {
      const uint64_t want = kernels::SamplingMass(row[i], max_logit, 1.0f / t);
      ASSERT_EQ(m[i], want) << "T " << t << " logit " << row[i];
      expected_total += want;
    }
    EXPECT_EQ(total, expected_total);
  }
}

TEST(SamplerTest, LogSoftmaxIsStableForHugeLogits) {
  std::vector<float> logits = {1e30f, 1e30f - 1e25f, -1e30f};
  EXPECT_NEAR(LogSoftmaxAt(logits, 0), 0.0f, 1e-6);
  EXPECT_TRUE(std::isfinite(LogSoftmaxAt({1000.0f, 0.0f}, 1)));
  EXPECT_NEAR(LogSoftmaxAt({1000.0f, 0.0f}, 1), -1000.0f, 1e-3);
}

}  // namespace
}  // namespace arbor::runtime
