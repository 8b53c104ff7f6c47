// CPU tests of the kernel references: each checked against an independent
// formulation or a mathematical property, since the GPU tests trust them.
#include "kernels/reference.h"

#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/sampling_math.h"

namespace arbor::kernels::reference {
namespace {

std::vector<float> RandomVector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(Bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(-2.5f)), -2.5f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 1.0f / 256)), 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
}

TEST(Fp8E4m3Test, DecodesTheFormatsCornersAndRoundTripsEveryCode) {
  EXPECT_EQ(Fp8E4m3ToFloat(0x00), 0.0f);
  EXPECT_EQ(Fp8E4m3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Fp8E4m3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(Fp8E4m3ToFloat(0x38), 1.0f);
  EXPECT_EQ(Fp8E4m3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(Fp8E4m3ToFloat(0xfe), -448.0f);
  EXPECT_TRUE(std::isnan(Fp8E4m3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(Fp8E4m3ToFloat(0xff)));
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;
    EXPECT_EQ(FloatToFp8E4m3(Fp8E4m3ToFloat(static_cast<uint8_t>(code))), code) << code;
  }
}

TEST(Fp8E4m3Test, RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(FloatToFp8E4m3(1.0625f), 0x38);   // halfway 1 and 1.125: to even (1)
  EXPECT_EQ(FloatToFp8E4m3(1.1875f), 0x3a);   // halfway 1.125 and 1.25: to even (1.25)
  EXPECT_EQ(FloatToFp8E4m3(1.07f), 0x39);     // nearer 1.125
  EXPECT_EQ(FloatToFp8E4m3(1000.0f), 0x7e);   // saturated, not NaN
  EXPECT_EQ(FloatToFp8E4m3(-1e30f), 0xfe);
  EXPECT_EQ(FloatToFp8E4m3(std::ldexp(1.0f, -11)), 0x00);  // under half the smallest
  EXPECT_EQ(FloatToFp8E4m3(-0.0f), 0x80);
  EXPECT_EQ(FloatToFp8E4m3(std::nanf("")) & 0x7f, 0x7f);
  EXPECT_FLOAT_EQ(RoundToFp8E4m3(3.3f), 3.25f);
}

TEST(LinearTest, MultipliesByTheTransposedWeight) {
  // x [2, 3], W [2, 3] (Linear layout: one row per output).
  const float x[] = {1, 2, 3, -1, 0, 2};
  const float w[] = {1, 0, -1, 0.5f, 0.5f, 0.5f};
  float y[4];
  reference::Linear(x, w, y, 2, 2, 3);
  EXPECT_FLOAT_EQ(y[0], 1 - 3);
  EXPECT_FLOAT_EQ(y[1], 3);
  EXPECT_FLOAT_EQ(y[2], -1 - 2);
  EXPECT_FLOAT_EQ(y[3], 0.5f);
}

TEST(EmbeddingGatherTest, CopiesRowsAndZeroesInvalidIds) {
  const int vocab = 5, hidden = 3;
  std::vector<float> table(vocab * hidden);
  std::iota(table.begin(), table.end(), 0.0f);
  const std::vector<int32_t> tokens = {4, 0, 7, -1};
  std::vector<float> out(tokens.size() * hidden, -1.0f);
  EmbeddingGather(tokens.data(), table.data(), out.data(), 4, hidden, vocab);
  EXPECT_EQ(out, (std::vector<float>{12, 13, 14, 0, 1, 2, 0, 0, 0, 0, 0, 0}));
}

TEST(RmsNormResidualTest, AddsResidualAndNormalises) {
  std::mt19937 rng(1);
  const int n = 3, hidden = 64;
  auto x = RandomVector(n * hidden, rng), residual = RandomVector(n * hidden, rng);
  auto weight = RandomVector(hidden, rng);
  const auto residual_before = residual;
  std::vector<float> out(n * hidden);
  RmsNormResidual(x.data(), residual.data(), weight.data(), out.data(), n, hidden, 1e-6f);
  for (int t = 0; t < n; ++t) {
    double sum_sq = 0.0;
    for (int i = 0; i < hidden; ++i) {
      const int k = t * hidden + i;
      EXPECT_FLOAT_EQ(residual[k], residual_before[k] + x[k]);
      sum_sq += residual[k] * residual[k];
    }
    const double rms = std::sqrt(sum_sq / hidden + 1e-6);
    for (int i = 0; i < hidden; ++i) {
      const int k = t * hidden + i;
      EXPECT_NEAR(out[k], residual[k] / rms * weight[i], 1e-5);
    }
  }
  // Without x the residual is untouched.
  const auto kept = residual;
  RmsNormResidual(nullptr, residual.data(), weight.data(), out.data(), n, hidden, 1e-6f);
  EXPECT_EQ(residual, kept);
}

TEST(RopeTest, DefaultFrequenciesArePowersOfTheta) {
  const auto inv_freq = RopeInvFreq(RopeParams{.theta = 10000.0f}, 8);
  ASSERT_EQ(inv_freq.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(inv_freq[i], std::pow(10000.0, -2.0 * i / 8), 1e-7);
}

TEST(RopeTest, Llama3ScalingMatchesTransformers) {
  // Llama-3.2 rope_scaling; expected values from transformers'
  // _compute_llama3_parameters formula.
  RopeParams params{.theta = 500000.0f,
                    .llama3 = true,
                    .factor = 32.0f,
                    .low_freq_factor = 1.0f,
                    .high_freq_factor = 4.0f,
                    .original_max_position_embeddings = 8192};
  const auto inv_freq = RopeInvFreq(params, 64);
  const std::map<int, double> expected = {{0, 1.0},
                                          {10, 0.016560440080994446},  // high frequency: kept
                                          {14, 0.0032114459947525913},
                                          {15, 0.001290547928209264},  // medium: smoothed
                                          {16, 0.00042955679655936815},
                                          {17, 9.70828780262767e-05},
                                          {20, 8.570255489881478e-06},
                                          {31, 9.418306725434909e-08}};  // low: divided by 32
  for (const auto& [i, value] : expected) {
    EXPECT_NEAR(inv_freq[i], value, value * 2e-5) << "i=" << i;
  }
}

TEST(RopeTest, RotationKeepsNormsAndDependsOnRelativePosition) {
  std::mt19937 rng(2);
  const int d = 16;
  const auto inv_freq = RopeInvFreq(RopeParams{}, d);
  const auto q0 = RandomVector(d, rng), k0 = RandomVector(d, rng);
  auto dot_at = [&](int pq, int pk) {
    auto q = q0, k = k0;
    ApplyRope(q.data(), nullptr, &pq, inv_freq.data(), 1, 1, 0, d);
    ApplyRope(k.data(), nullptr, &pk, inv_freq.data(), 1, 1, 0, d);
    double dot = 0, nq = 0, nq0 = 0;
    for (int i = 0; i < d; ++i) {
      dot += q[i] * k[i];
      nq += q[i] * q[i];
      nq0 += q0[i] * q0[i];
    }
    EXPECT_NEAR(nq, nq0, 1e-4);
    return dot;
  };
  EXPECT_NEAR(dot_at(7, 3), dot_at(104, 100), 1e-4);
  // Position 0 is the identity.
  auto q = q0;
  const int zero = 0;
  ApplyRope(q.data(), nullptr, &zero, inv_freq.data(), 1, 1, 0, d);
  EXPECT_EQ(q, q0);
}

TEST(SwiGluTest, SiluOfGateTimesUp) {
  const std::vector<float> gate_up = {0.0f, 1.0f, -2.0f, 3.0f, 0.5f, 2.0f};  // inter = 3
  std::vector<float> out(3);
  SwiGlu(gate_up.data(), out.data(), 1, 3);
  EXPECT_FLOAT_EQ(out[0], 0.0f);
  EXPECT_NEAR(out[1], 1.0 / (1.0 + std::exp(-1.0)) * 0.5, 1e-6);
  EXPECT_NEAR(out[2], -2.0 / (1.0 + std::exp(2.0)) * 2.0, 1e-6);
}

TEST(KvAppendTest, WritesTokensToTheirBlockSlots) {
  const int kvh = 1, d = 8, num_blocks = 4, max_blocks = 2;
  std::vector<float> k_cache(num_blocks * kKvBlockSize * kvh * d, 0.0f), v_cache = k_cache;
  // Sequence 0: tokens at positions 15, 16 (blocks 3 then 1); sequence 1: position 0 (block 2).
  const std::vector<int32_t> positions = {15, 16, 0}, seq_starts = {0, 2, 3};
  const std::vector<int32_t> tables = {3, 1, 2, -1};
  std::vector<float> k(3 * d), v(3 * d);
  for (int i = 0; i < 3 * d; ++i) {
    k[i] = 1 + i;
    v[i] = -1 - i;
  }
  KvAppend(k.data(), v.data(), positions.data(), seq_starts.data(), tables.data(), k_cache.data(),
           v_cache.data(), 2, max_blocks, kvh, d);
  auto slot = [&](int block, int offset) { return (block * kKvBlockSize + offset) * d; };
  EXPECT_EQ(k_cache[slot(3, 15)], 1);
  EXPECT_EQ(k_cache[slot(1, 0)], 1 + d);
  EXPECT_EQ(v_cache[slot(2, 0) + 1], -2 - 2 * d);
  EXPECT_EQ(k_cache[slot(0, 0)], 0);
}

TEST(PagedAttentionTest, MatchesContiguousSoftmaxAttention) {
  std::mt19937 rng(3);
  const AttentionShape shape{.num_heads = 4,
                             .num_kv_heads = 2,
                             .head_dim = 8,
                             .scale = 1.0f / std::sqrt(8.0f),
                             .max_blocks = 3};
  const int num_blocks = 6, ctx = 37;
  auto k_cache = RandomVector(num_blocks * kKvBlockSize * 2 * 8, rng);
  auto v_cache = RandomVector(k_cache.size(), rng);
  const std::vector<int32_t> table = {4, 0, 5};
  const auto q = RandomVector(4 * 8, rng);
  const int pos = ctx - 1;
  const int32_t seq_starts[] = {0, 1};
  const int32_t ctx_lens[] = {ctx};
  std::vector<float> out(4 * 8);
  PagedAttention(q.data(), &pos, seq_starts, table.data(), ctx_lens, k_cache.data(), v_cache.data(),
                 out.data(), 1, shape);
  for (int h = 0; h < 4; ++h) {
    const int kvh = h / 2;
    std::vector<double> w(ctx);
    double total = 0;
    for (int p = 0; p < ctx; ++p) {
      const size_t off = ((table[p / 16] * 16 + p % 16) * 2 + kvh) * 8;
      double dot = 0;
      for (int i = 0; i < 8; ++i) dot += q[h * 8 + i] * k_cache[off + i];
      w[p] = std::exp(dot * shape.scale);
      total += w[p];
    }
    for (int i = 0; i < 8; ++i) {
      double acc = 0;
      for (int p = 0; p < ctx; ++p) {
        acc += w[p] / total * v_cache[((table[p / 16] * 16 + p % 16) * 2 + kvh) * 8 + i];
      }
      EXPECT_NEAR(out[h * 8 + i], acc, 1e-5);
    }
  }
}

TEST(MergeAttentionStatesTest, MergedPartialsEqualTheWholeRange) {
  std::mt19937 rng(4);
  const AttentionShape shape{
      .num_heads = 2, .num_kv_heads = 1, .head_dim = 16, .scale = 0.25f, .max_blocks = 4};
  auto k_cache = RandomVector(4 * kKvBlockSize * 16, rng);
  auto v_cache = RandomVector(k_cache.size(), rng);
  const std::vector<int32_t> table = {2, 3, 0, 1};
  const auto q = RandomVector(16, rng);
  // Cut [0, 60) at 23 and 40, plus an empty part.
  const int cuts[] = {0, 23, 40, 60, 60};
  std::vector<float> o_parts(4 * 16), lse_parts(4);
  for (int j = 0; j < 4; ++j) {
    AttentionPartialRow(q.data(), 1, table.data(), cuts[j], cuts[j + 1], k_cache.data(),
                        v_cache.data(), shape, &o_parts[j * 16], &lse_parts[j]);
  }
  EXPECT_EQ(lse_parts[3], -INFINITY);
  std::vector<float> merged(16), whole(16);
  float merged_lse, whole_lse;
  MergeAttentionStates(o_parts.data(), lse_parts.data(), merged.data(), &merged_lse, 4, 1, 1, 16);
  AttentionPartialRow(q.data(), 1, table.data(), 0, 60, k_cache.data(), v_cache.data(), shape,
                      whole.data(), &whole_lse);
  EXPECT_NEAR(merged_lse, whole_lse, 1e-5);
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(merged[i], whole[i], 1e-5);
}

TEST(SamplingMathTest, ExpIsAccurateAndKeysOrderTokens) {
  for (float x = -103.0f; x <= 0.0f; x += 0.37f) {
    EXPECT_NEAR(SamplingExp(x), std::exp(x), 4e-7 * std::exp(x)) << x;
  }
  EXPECT_EQ(SamplingExp(-INFINITY), 0.0f);
  EXPECT_EQ(SamplingExp(0.0f), 1.0f);
  EXPECT_GT(SamplingKey(1.0f, 5), SamplingKey(-1.0f, 0));
  EXPECT_GT(SamplingKey(-1.0f, 5), SamplingKey(-2.0f, 0));
  EXPECT_GT(SamplingKey(2.0f, 3), SamplingKey(2.0f, 4));  // tie: lower id first
  EXPECT_GT(SamplingKey(-INFINITY, 0), 0u);
}

TEST(SampleTest, GreedyTakesTheLowestArgmaxAndReportsRawLogprob) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, -2.0f};
  const SampledToken s = Sample(logits.data(), 4, SampleParams{.temperature = 0.0f});
  EXPECT_EQ(s.token, 1);
  double z = 0;
  for (float l : logits) z += std::exp(l);
  EXPECT_NEAR(s.logprob, 3.0 - std::log(z), 1e-6);
}

TEST(SampleTest, TopKAndTopPRestrictTheDraw) {
  std::mt19937 rng(5);
  const auto logits = RandomVector(50, rng, 2.0f);
  const int argmax =
      static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int> order(50);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  for (uint64_t pos = 0; pos < 200; ++pos) {
    SampleParams p{.temperature = 1.0f, .top_k = 1, .seed = 9, .stream = 1, .position = pos};
    EXPECT_EQ(Sample(logits.data(), 50, p).token, argmax);
    p.top_k = 3;
    const int t = Sample(logits.data(), 50, p).token;
    EXPECT_TRUE(t == order[0] || t == order[1] || t == order[2]);
    p.top_k = 0;
    p.top_p = 1e-6f;
    EXPECT_EQ(Sample(logits.data(), 50, p).token, argmax);
  }
}

TEST(SampleTest, FrequenciesFollowTheTemperedDistribution) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, -1.0f};
  const float temperature = 0.7f;
  std::vector<double> p(4);
  double z = 0;
  for (int i = 0; i < 4; ++i) z += p[i] = std::exp(logits[i] / temperature);
  std::vector<int> counts(4, 0);
  const int n = 40000;
  for (int pos = 0; pos < n; ++pos) {
    SampleParams params{
        .temperature = temperature, .seed = 3, .stream = 7, .position = static_cast<uint64_t>(pos)};
    ++counts[Sample(logits.data(), 4, params).token];
  }
  for (int i = 0; i < 4; ++i) {
    const double expected = p[i] / z;
    // 5 standard deviations of a binomial proportion.
    EXPECT_NEAR(counts[i] / static_cast<double>(n), expected,
                5 * std::sqrt(expected * (1 - expected) / n))
        << i;
  }
}

TEST(SampleTest, SameKeysDrawTheSameToken) {
  std::mt19937 rng(6);
  const auto logits = RandomVector(1000, rng, 3.0f);
  SampleParams params{
      .temperature = 0.9f, .top_p = 0.95f, .top_k = 100, .seed = 1, .stream = 2, .position = 3};
  const SampledToken a = Sample(logits.data(), 1000, params);
  const SampledToken b = Sample(logits.data(), 1000, params);
  EXPECT_EQ(a.token, b.token);
  EXPECT_EQ(a.logprob, b.logprob);
}

}  // namespace
}  // namespace arbor::kernels::reference
