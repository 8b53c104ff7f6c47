#include "runtime/backend/cpu/cpu_ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/backend/backend.h"

namespace arbor::runtime {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// max|a - b| / max|b|: the error measure used across the engine's tests.
double RelError(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - b[i]));
    max_ref = std::max(max_ref, std::abs(b[i]));
  }
  return max_ref == 0.0 ? max_diff : max_diff / max_ref;
}

TEST(ThreadPoolTest, RunsEveryItemOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      for (int repeat = 0; repeat < 20; ++repeat) {
        std::vector<std::atomic<int>> hits(n);
        pool.ParallelFor(n, [&](int64_t i) { hits[i].fetch_add(1); });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << n;
      }
    }
  }
}

TEST(CpuOpsTest, RmsNormMatchesNaive) {
  ThreadPool pool(3);
  for (int rows : {1, 5, 300}) {
    const int dim = 72;
    const float eps = 1e-5f;
    std::vector<float> x = Random(rows * dim, 1, -3, 3), w = Random(dim, 2, 0.5f, 1.5f);
    std::vector<float> residual = Random(rows * dim, 3);
    std::vector<double> ref(rows * dim), ref_fused(rows * dim);
    for (int r = 0; r < rows; ++r) {
      double ss = 0, ss_fused = 0;
      for (int i = 0; i < dim; ++i) {
        ss += double{x[r * dim + i]} * x[r * dim + i];
        const double s = double{x[r * dim + i]} + residual[r * dim + i];
        ss_fused += s * s;
      }
      for (int i = 0; i < dim; ++i) {
        ref[r * dim + i] = x[r * dim + i] / std::sqrt(ss / dim + eps) * w[i];
        ref_fused[r * dim + i] = (double{x[r * dim + i]} + residual[r * dim + i]) /
                                 std::sqrt(ss_fused / dim + eps) * w[i];
      }
    }
    std::vector<float> out(rows * dim);
    RmsNorm(x.data(), w.data(), rows, dim, eps, out.data(), &pool);
    EXPECT_LT(RelError(out, ref), 1e-6);
    // In place.
    std::vector<float> inplace = x;
    RmsNorm(inplace.data(), w.data(), rows, dim, eps, inplace.data(), nullptr);
    EXPECT_EQ(inplace, out);

    std::vector<float> res = residual;
    AddRmsNorm(res.data(), x.data(), w.data(), rows, dim, eps, out.data(), &pool);
    EXPECT_LT(RelError(out, ref_fused), 1e-6);
    for (int i = 0; i < rows * dim; ++i) ASSERT_FLOAT_EQ(res[i], residual[i] + x[i]);
  }
}

TEST(CpuOpsTest, RopeInvFreqDefaultAndLinear) {
  RopeScaling none;
  std::vector<float> f = RopeInvFreq(16, 10000.0f, none);
  ASSERT_EQ(f.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(f[i], std::pow(10000.0, -2.0 * i / 16), 1e-7);
  RopeScaling linear;
  linear.type = "linear";
  linear.factor = 4.0f;
  std::vector<float> g = RopeInvFreq(16, 10000.0f, linear);
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(g[i], f[i] / 4.0f);
}

// transformers' _compute_llama3_parameters, transcribed with torch.where.
TEST(CpuOpsTest, RopeInvFreqLlama3MatchesTransformersFormula) {
  RopeScaling s;
  s.type = "llama3";
  s.factor = 8.0f;
  s.low_freq_factor = 1.0f;
  s.high_freq_factor = 4.0f;
  s.original_max_position_embeddings = 64;
  const int dim = 128;
  const double theta = 500000.0;
  std::vector<float> got = RopeInvFreq(dim, static_cast<float>(theta), s);
  const double low_wl = 64.0 / 1.0, high_wl = 64.0 / 4.0;
  int low = 0, mid = 0, high = 0;
  for (int i = 0; i < dim / 2; ++i) {
    const double inv = 1.0 / std::pow(theta, 2.0 * i / dim);
    const double wl = 2 * M_PI / inv;
    double llama = wl > low_wl ? inv / 8.0 : inv;
    const double smooth = (64.0 / wl - 1.0) / (4.0 - 1.0);
    const double smoothed = (1 - smooth) * llama / 8.0 + smooth * llama;
    const bool medium = !(wl < high_wl) && !(wl > low_wl);
    if (medium) llama = smoothed;
    low += wl > low_wl;
    high += wl < high_wl;
    mid += medium;
    EXPECT_NEAR(got[i], llama, 1e-6 * llama) << i;
  }
  // The case exercises all three bands.
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
  EXPECT_GT(high, 0);
}

TEST(CpuOpsTest, ApplyRopeMatchesComplexRotation) {
  ThreadPool pool(2);
  const int tokens = 9, heads = 3, dim = 16, stride = heads * dim + 5;
  std::vector<float> x = Random(tokens * stride, 4);
  std::vector<int32_t> positions = {0, 1, 2, 3, 17, 100, 1000, 4095, 7};
  std::vector<float> inv_freq = RopeInvFreq(dim, 10000.0f, RopeScaling());
  std::vector<double> ref(x.begin(), x.end());
  for (int t = 0; t < tokens; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < dim / 2; ++i) {
        // (a + ib) * e^{i theta}: element i is the real part, i + dim/2 the imaginary.
        // The angle is formed in fp32 as transformers does (position * inv_freq).
        const double angle = static_cast<float>(positions[t]) * inv_freq[i];
        const double a = x[t * stride + h * dim + i], b = x[t * stride + h * dim + i + dim / 2];
        ref[t * stride + h * dim + i] = a * std::cos(angle) - b * std::sin(angle);
        ref[t * stride + h * dim + i + dim / 2] = a * std::sin(angle) + b * std::cos(angle);
      }
    }
  }
  ApplyRope(x.data(), tokens, heads, dim, stride, positions.data(), inv_freq.data(), &pool);
  EXPECT_LT(RelError(x, ref), 1e-5);
  // Padding between rows is untouched.
  std::vector<float> orig = Random(tokens * stride, 4);
  for (int t = 0; t < tokens; ++t) {
    for (int i = heads * dim; i < stride; ++i) EXPECT_EQ(x[t * stride + i], orig[t * stride + i]);
  }
}

TEST(CpuOpsTest, SiluMulMatchesNaive) {
  const int rows = 7, inter = 40;
  std::vector<float> gu = Random(rows * 2 * inter, 5, -6, 6);
  std::vector<double> ref(rows * inter);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < inter; ++i) {
      const double g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i];
      ref[r * inter + i] = g / (1 + std::exp(-g)) * u;
    }
  }
  std::vector<float> out(rows * inter);
  SiluMul(gu.data(), rows, inter, out.data());
  EXPECT_LT(RelError(out, ref), 1e-6);
}

TEST(CpuOpsTest, LinearMatchesNaive) {
  for (int rows : {1, 3, 64}) {
    const int in = 37, out = 29;
    std::vector<float> x = Random(rows * in, 6), w = Random(out * in, 7), b = Random(out, 8);
    std::vector<double> ref(rows * out), ref_bias(rows * out);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < out; ++o) {
        double acc = 0;
        for (int i = 0; i < in; ++i) acc += double{x[r * in + i]} * w[o * in + i];
        ref[r * out + o] = acc;
        ref_bias[r * out + o] = acc + b[o];
      }
    }
    std::vector<float> y(rows * out, 123.0f);
    Linear(x.data(), rows, in, w.data(), nullptr, out, y.data());
    EXPECT_LT(RelError(y, ref), 1e-6);
    Linear(x.data(), rows, in, w.data(), b.data(), out, y.data());
    EXPECT_LT(RelError(y, ref_bias), 1e-6);
  }
}

// Paged attention against dense causal attention over each sequence's full
// K/V, with blocks scattered through the pool in random order.
TEST(CpuOpsTest, PagedAttentionMatchesDenseReference) {
  const int num_heads = 6, num_kv_heads = 2, head_dim = 20, num_blocks = 40;
  const int group = num_heads / num_kv_heads;
  // (context length, new tokens) per sequence: decode, prefill, chunk, block edges.
  const std::vector<std::pair<int, int>> seqs = {{1, 1},   {37, 1}, {33, 33}, {50, 18},
                                                 {16, 16}, {17, 1}, {64, 5}};
  std::mt19937 rng(9);
  std::vector<int32_t> block_ids(num_blocks);
  std::iota(block_ids.begin(), block_ids.end(), 0);
  std::shuffle(block_ids.begin(), block_ids.end(), rng);
  const int max_blocks = 4;
  std::vector<int32_t> tables(seqs.size() * max_blocks, -1);
  int next_block = 0;
  const int64_t kv_width = int64_t{num_kv_heads} * head_dim;
  std::vector<float> k_pool = Random(num_blocks * kKvBlockSize * kv_width, 10);
  std::vector<float> v_pool = Random(num_blocks * kKvBlockSize * kv_width, 11);
  std::vector<int32_t> row_positions, row_seqs;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int b = 0; b < (seqs[s].first + kKvBlockSize - 1) / kKvBlockSize; ++b) {
      tables[s * max_blocks + b] = block_ids[next_block++];
    }
    for (int i = 0; i < seqs[s].second; ++i) {
      row_positions.push_back(seqs[s].first - seqs[s].second + i);
      row_seqs.push_back(static_cast<int32_t>(s));
    }
  }
  const int rows = static_cast<int>(row_positions.size());
  const int64_t q_stride = int64_t{num_heads} * head_dim + 3;  // strided like the qkv buffer
  std::vector<float> q = Random(rows * q_stride, 12);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  std::vector<double> ref(rows * num_heads * head_dim);
  for (int r = 0; r < rows; ++r) {
    const int32_t* table = tables.data() + row_seqs[r] * max_blocks;
    const int len = row_positions[r] + 1;
    for (int h = 0; h < num_heads; ++h) {
      const int kh = h / group;
      auto kv_at = [&](const std::vector<float>& pool, int j, int d) {
        return double{
            pool[(int64_t{table[j / kKvBlockSize]} * kKvBlockSize + j % kKvBlockSize) * kv_width +
                 kh * head_dim + d]};
      };
      std::vector<double> scores(len);
      double max_score = -1e300;
      for (int j = 0; j < len; ++j) {
        double dot = 0;
        for (int d = 0; d < head_dim; ++d)
          dot += q[r * q_stride + h * head_dim + d] * kv_at(k_pool, j, d);
        scores[j] = dot * scale;
        max_score = std::max(max_score, scores[j]);
      }
      double sum = 0;
      for (double& s : scores) sum += (s = std::exp(s - max_score));
      for (int d = 0; d < head_dim; ++d) {
        double acc = 0;
        for (int j = 0; j < len; ++j) acc += scores[j] / sum * kv_at(v_pool, j, d);
        ref[(r * num_heads + h) * head_dim + d] = acc;
      }
    }
  }

  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    PagedAttentionArgs args;
    args.q = q.data();
    args.q_row_stride = q_stride;
    args.num_rows = rows;
    args.row_positions = row_positions.data();
    args.row_seqs = row_seqs.data();
    args.k_pool = k_pool.data();
    args.v_pool = v_pool.data();
    args.block_tables = tables.data();
    args.max_blocks_per_seq = max_blocks;
    args.num_heads = num_heads;
    args.num_kv_heads = num_kv_heads;
    args.head_dim = head_dim;
    args.scale = scale;
    std::vector<float> out(rows * num_heads * head_dim, -99.0f);
    args.out = out.data();
    args.out_row_stride = int64_t{num_heads} * head_dim;
    PagedAttention(args, &pool);
    EXPECT_LT(RelError(out, ref), 1e-6) << threads << " threads";
  }
}

TEST(CpuOpsTest, WriteKvPlacesRowsInTheirSlots) {
  const int num_kv_heads = 2, head_dim = 4, num_blocks = 6, max_blocks = 3;
  const int64_t width = num_kv_heads * head_dim;
  std::vector<int32_t> tables = {5, 2, -1, /*seq 1*/ 0, 3, 4};
  std::vector<int32_t> positions = {15, 16, 17, 33};
  std::vector<int32_t> seqs = {0, 0, 0, 1};
  const int64_t stride = 3 * width;  // k and v inside wider rows
  std::vector<float> rows = Random(positions.size() * stride, 13);
  std::vector<float> k_pool(num_blocks * kKvBlockSize * width, 0.0f), v_pool = k_pool;
  WriteKv(rows.data(), rows.data() + width, stride, 4, positions.data(), seqs.data(), tables.data(),
          max_blocks, num_kv_heads, head_dim, k_pool.data(), v_pool.data());
  auto slot = [&](int block, int s) { return (int64_t{block} * kKvBlockSize + s) * width; };
  const int64_t expected_slots[] = {slot(5, 15), slot(2, 0), slot(2, 1), slot(4, 1)};
  for (int t = 0; t < 4; ++t) {
    for (int i = 0; i < width; ++i) {
      EXPECT_EQ(k_pool[expected_slots[t] + i], rows[t * stride + i]);
      EXPECT_EQ(v_pool[expected_slots[t] + i], rows[t * stride + width + i]);
    }
  }
  // Nothing else written.
  int nonzero = 0;
  for (float f : k_pool) nonzero += f != 0.0f;
  EXPECT_EQ(nonzero, 4 * width);
}

}  // namespace
}  // namespace arbor::runtime
