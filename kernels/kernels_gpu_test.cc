// GPU kernels other than attention against their CPU references on fresh
// random inputs (attention: kernels_attention_gpu_test.cc).
// Tolerances: bf16 outputs max|gpu - ref| / max|ref| <= 1e-2; fp32 outputs
// (logprobs) 1e-4 relative; copies and sampled tokens exactly. Every test
// skips when no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/testing/gpu_test_util.h"

namespace arbor::kernels {
namespace {

using test_util::DeviceArray;
using test_util::kBf16Tolerance;
using test_util::kFp32Tolerance;
using test_util::RandomBf16;
using test_util::RandomBlockTables;
using test_util::RelativeError;
using test_util::Shape;
using test_util::ToFloat;

TEST(KernelsGpuTest, EmbeddingGatherCopiesRows) {
  REQUIRE_GPU();
  std::mt19937 rng(11);
  for (int hidden : {2048, 100}) {
    const int vocab = 1000, n = 37;
    const auto table = RandomBf16(static_cast<size_t>(vocab) * hidden, rng);
    std::vector<int32_t> tokens(n);
    std::uniform_int_distribution<int> pick(0, vocab - 1);
    for (int& t : tokens) t = pick(rng);
    tokens[3] = -1;
    tokens[5] = vocab;
    DeviceArray<Bf16> d_table(table.bits), d_out(static_cast<size_t>(n) * hidden);
    DeviceArray<int32_t> d_tokens(tokens);
    ASSERT_KERNEL_OK(
        EmbeddingGather(d_tokens.get(), d_table.get(), d_out.get(), n, hidden, vocab, nullptr));
    std::vector<float> want(static_cast<size_t>(n) * hidden);
    reference::EmbeddingGather(tokens.data(), table.values.data(), want.data(), n, hidden, vocab);
    EXPECT_EQ(ToFloat(d_out.ToHost()), want) << "hidden=" << hidden;
  }
}

TEST(KernelsGpuTest, RmsNormResidualMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(12);
  for (int hidden : {2048, 100}) {
    for (bool with_x : {true, false}) {
      const int n = 9;
      const size_t size = static_cast<size_t>(n) * hidden;
      const auto x = RandomBf16(size, rng), residual = RandomBf16(size, rng, 3.0f);
      const auto weight = RandomBf16(hidden, rng);
      DeviceArray<Bf16> d_x(x.bits), d_res(residual.bits), d_w(weight.bits), d_out(size);
      ASSERT_KERNEL_OK(RmsNormResidual(with_x ? d_x.get() : nullptr, d_res.get(), d_w.get(),
                                       d_out.get(), n, hidden, 1e-5f, nullptr));
      // The model stores the sum in bf16, then normalises what it stored.
      std::vector<float> want_res = residual.values, want_out(size);
      if (with_x) {
        for (size_t i = 0; i < size; ++i)
          want_res[i] = reference::RoundBf16(want_res[i] + x.values[i]);
      }
      reference::RmsNormResidual(nullptr, want_res.data(), weight.values.data(), want_out.data(), n,
                                 hidden, 1e-5f);
      EXPECT_LE(RelativeError(ToFloat(d_res.ToHost()), want_res), kBf16Tolerance);
      EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want_out), kBf16Tolerance)
          << "hidden=" << hidden << " with_x=" << with_x;
    }
  }
}

// Llama-3.2-1B's RoPE: Llama-3 scaling.
reference::RopeParams Llama3Rope() {
  return reference::RopeParams{.theta = 500000.0f,
                               .llama3 = true,
                               .factor = 32.0f,
                               .low_freq_factor = 1.0f,
                               .high_freq_factor = 4.0f,
                               .original_max_position_embeddings = 8192};
}

TEST(KernelsGpuTest, RopeWithLlama3ScalingMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(13);
  const reference::RopeParams params = Llama3Rope();
  for (int dim : {64, 128, 16}) {
    const int n = 33, heads = 8, kv_heads = 2;
    const auto inv_freq = reference::RopeInvFreq(params, dim);
    std::vector<int32_t> positions(n);
    std::uniform_int_distribution<int> pick(0, 131071);
    for (int& p : positions) p = pick(rng);
    positions[0] = 0;
    auto q = RandomBf16(static_cast<size_t>(n) * heads * dim, rng);
    auto k = RandomBf16(static_cast<size_t>(n) * kv_heads * dim, rng);
    DeviceArray<Bf16> d_q(q.bits), d_k(k.bits);
    DeviceArray<int32_t> d_pos(positions);
    DeviceArray<float> d_freq(inv_freq);
    ASSERT_KERNEL_OK(ApplyRope(d_q.get(), d_k.get(), d_pos.get(), d_freq.get(), n, heads, kv_heads,
                               dim, nullptr));
    reference::ApplyRope(q.values.data(), k.values.data(), positions.data(), inv_freq.data(), n,
                         heads, kv_heads, dim);
    EXPECT_LE(RelativeError(ToFloat(d_q.ToHost()), q.values), kBf16Tolerance) << dim;
    EXPECT_LE(RelativeError(ToFloat(d_k.ToHost()), k.values), kBf16Tolerance) << dim;
  }
}

TEST(KernelsGpuTest, SwiGluMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(14);
  for (int inter : {8192, 10}) {
    const int n = 5;
    const auto gate_up = RandomBf16(static_cast<size_t>(n) * 2 * inter, rng, 2.0f);
    DeviceArray<Bf16> d_in(gate_up.bits), d_out(static_cast<size_t>(n) * inter);
    ASSERT_KERNEL_OK(SwiGlu(d_in.get(), d_out.get(), n, inter, nullptr));
    std::vector<float> want(static_cast<size_t>(n) * inter);
    reference::SwiGlu(gate_up.values.data(), want.data(), n, inter);
    EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance) << inter;
  }
}

// Decode-sized linear layers, bf16 and fp32 out, against the fp32 reference
// on the same bf16 inputs; shapes with n not a multiple of the 8 columns of
// a block and k not a multiple of the unrolled 1024; bad shapes refused.
TEST(KernelsGpuTest, SmallBatchGemmMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(16);
  struct Case {
    int n, k;
  };
  for (const Case& c :
       {Case{2048, 2048}, Case{3000, 8192}, Case{512, 2048}, Case{13, 8}, Case{7, 1032}}) {
    for (int m = 1; m <= kSmallBatchGemmMaxRows; ++m) {
      const auto x = RandomBf16(static_cast<size_t>(m) * c.k, rng);
      const auto w = RandomBf16(static_cast<size_t>(c.n) * c.k, rng, 0.05f);
      DeviceArray<Bf16> d_x(x.bits), d_w(w.bits), d_y(static_cast<size_t>(m) * c.n);
      DeviceArray<float> d_y32(static_cast<size_t>(m) * c.n);
      std::vector<float> want(static_cast<size_t>(m) * c.n);
      reference::Linear(x.values.data(), w.values.data(), want.data(), m, c.n, c.k);
      ASSERT_KERNEL_OK(
          SmallBatchGemm(d_x.get(), d_w.get(), d_y.get(), m, c.n, c.k, false, nullptr));
      EXPECT_LE(RelativeError(ToFloat(d_y.ToHost()), want), kBf16Tolerance)
          << "m " << m << " n " << c.n << " k " << c.k;
      ASSERT_KERNEL_OK(
          SmallBatchGemm(d_x.get(), d_w.get(), d_y32.get(), m, c.n, c.k, true, nullptr));
      EXPECT_LE(RelativeError(d_y32.ToHost(), want), 1e-4)
          << "fp32 out, m " << m << " n " << c.n << " k " << c.k;
    }
  }
  DeviceArray<Bf16> d(64);
  EXPECT_FALSE(
      SmallBatchGemm(d.get(), d.get(), d.get(), kSmallBatchGemmMaxRows + 1, 8, 8, false, nullptr)
          .ok());
  EXPECT_FALSE(SmallBatchGemm(d.get(), d.get(), d.get(), 1, 8, 12, false, nullptr).ok());
}

// Three sequences appending to a 40-block pool: a prefill of 70 tokens, one
// decode token at 17 whose block is missing (-1: skipped), 20 tokens from 100.
struct AppendBatch {
  int num_seqs = 3, max_blocks = 8, num_blocks = 40;
  std::vector<int32_t> seq_starts = {0, 70, 71, 91}, positions, tables;
};
AppendBatch MakeAppendBatch(std::mt19937& rng) {
  AppendBatch batch;
  for (int p = 0; p < 70; ++p) batch.positions.push_back(p);
  batch.positions.push_back(17);
  for (int p = 100; p < 120; ++p) batch.positions.push_back(p);
  batch.tables = RandomBlockTables(batch.num_seqs, batch.max_blocks, batch.num_blocks, rng);
  batch.tables[1 * batch.max_blocks + 1] = -1;
  return batch;
}

TEST(KernelsGpuTest, KvAppendWritesThePagedSlots) {
  REQUIRE_GPU();
  std::mt19937 rng(15);
  const int kv_heads = 8, dim = 64;
  const AppendBatch batch = MakeAppendBatch(rng);
  const int num_blocks = batch.num_blocks, max_blocks = batch.max_blocks, num_seqs = batch.num_seqs;
  const std::vector<int32_t>&seq_starts = batch.seq_starts, &positions = batch.positions,
        &tables = batch.tables;
  const int n = static_cast<int>(positions.size());
  const size_t cache_size = static_cast<size_t>(num_blocks) * kKvBlockSize * kv_heads * dim;
  auto k_cache = RandomBf16(cache_size, rng), v_cache = RandomBf16(cache_size, rng);
  const auto k = RandomBf16(static_cast<size_t>(n) * kv_heads * dim, rng);
  const auto v = RandomBf16(k.bits.size(), rng);
  DeviceArray<Bf16> d_k(k.bits), d_v(v.bits), d_kc(k_cache.bits), d_vc(v_cache.bits);
  DeviceArray<int32_t> d_pos(positions), d_starts(seq_starts), d_tables(tables);
  ASSERT_KERNEL_OK(KvAppend(d_k.get(), d_v.get(), d_pos.get(), d_starts.get(), d_tables.get(),
                            d_kc.get(), d_vc.get(), n, num_seqs, max_blocks, kv_heads, dim,
                            nullptr));
  reference::KvAppend(k.values.data(), v.values.data(), positions.data(), seq_starts.data(),
                      tables.data(), k_cache.values.data(), v_cache.values.data(), num_seqs,
                      max_blocks, kv_heads, dim);
  EXPECT_EQ(ToFloat(d_kc.ToHost()), k_cache.values);
  EXPECT_EQ(ToFloat(d_vc.ToHost()), v_cache.values);
}

// The fused decode kernels against the launches they replace: the same bits.

// Fused-GEMV inputs: x as is, or the residual add + RMSNorm (eps 1e-5).
SmallBatchInput PlainInput(const Bf16* x) {
  SmallBatchInput in;
  in.x = x;
  return in;
}
SmallBatchInput NormedInput(const Bf16* delta, const Bf16* residual, Bf16* residual_out,
                            const Bf16* norm_weight) {
  SmallBatchInput in;
  in.delta = delta;
  in.residual = residual;
  in.residual_out = residual_out;
  in.norm_weight = norm_weight;
  in.eps = 1e-5f;
  return in;
}

TEST(KernelsGpuTest, SmallBatchQkvRopeEqualsItsUnfusedKernels) {
  REQUIRE_GPU();
  std::mt19937 rng(23);
  const int hidden = 2048, dim = 64, heads = 8, kv_heads = 2, num_blocks = 12, max_blocks = 4;
  const int q_dim = heads * dim, kv_dim = kv_heads * dim, qkv_n = q_dim + 2 * kv_dim;
  const auto w = RandomBf16(static_cast<size_t>(qkv_n) * hidden, rng, 0.05f);
  const auto bias = RandomBf16(qkv_n, rng, 0.5f);
  const auto norm_weight = RandomBf16(hidden, rng, 1.0f);
  const auto inv_freq = reference::RopeInvFreq(Llama3Rope(), dim);
  DeviceArray<Bf16> d_w(w.bits), d_bias(bias.bits), d_norm(norm_weight.bits);
  DeviceArray<float> d_freq(inv_freq);
  for (const bool norm : {false, true}) {
    for (const bool with_bias : {false, true}) {
      for (int m = 1; m <= kSmallBatchGemmMaxRows; ++m) {
        SCOPED_TRACE(testing::Message() << "norm " << norm << " bias " << with_bias << " m " << m);
        // m decode sequences, one token each; the last has no slot.
        std::vector<int32_t> seq_starts(m + 1), positions(m);
        std::iota(seq_starts.begin(), seq_starts.end(), 0);
        for (int i = 0; i < m; ++i) positions[i] = 5 + 17 * i;
        auto tables = RandomBlockTables(m, max_blocks, num_blocks, rng);
        tables[static_cast<size_t>(m - 1) * max_blocks + positions[m - 1] / kKvBlockSize] = -1;
        const auto x = RandomBf16(static_cast<size_t>(m) * hidden, rng);
        const auto delta = RandomBf16(x.bits.size(), rng);
        const size_t cache_size = static_cast<size_t>(num_blocks) * kKvBlockSize * kv_dim;
        const auto cache = RandomBf16(cache_size, rng);
        DeviceArray<int32_t> d_pos(positions), d_starts(seq_starts), d_tables(tables);
        DeviceArray<Bf16> d_x(x.bits), d_delta(delta.bits);

        // Fused.
        DeviceArray<Bf16> d_res(x.bits), d_res_out(x.bits.size()), d_q(m * q_dim), d_kc(cache.bits),
            d_vc(cache.bits);
        const SmallBatchInput in =
            norm ? NormedInput(d_delta.get(), d_res.get(), d_res_out.get(), d_norm.get())
                 : PlainInput(d_x.get());
        QkvRopeKv rope;
        rope.positions = d_pos.get();
        rope.inv_freq = d_freq.get();
        rope.seq_starts = d_starts.get();
        rope.block_tables = d_tables.get();
        rope.k_cache = d_kc.get();
        rope.v_cache = d_vc.get();
        rope.bias = with_bias ? d_bias.get() : nullptr;
        rope.num_seqs = m;
        rope.max_blocks = max_blocks;
        rope.num_heads = heads;
        rope.num_kv_heads = kv_heads;
        rope.head_dim = dim;
        ASSERT_KERNEL_OK(SmallBatchQkvRope(in, d_w.get(), d_q.get(), rope, m, hidden, nullptr));

        // Unfused.
        DeviceArray<Bf16> d_res2(x.bits), d_normed(x.bits.size()), d_q2(m * q_dim),
            d_k2(m * kv_dim), d_v2(m * kv_dim), d_kc2(cache.bits), d_vc2(cache.bits);
        const Bf16* input = d_x.get();
        if (norm) {
          ASSERT_KERNEL_OK(RmsNormResidual(d_delta.get(), d_res2.get(), d_norm.get(),
                                           d_normed.get(), m, hidden, 1e-5f, nullptr));
          input = d_normed.get();
        }
        ASSERT_KERNEL_OK(
            SmallBatchGemm(input, d_w.get(), d_q2.get(), m, q_dim, hidden, false, nullptr));
        ASSERT_KERNEL_OK(SmallBatchGemm(input, d_w.get() + static_cast<size_t>(q_dim) * hidden,
                                        d_k2.get(), m, kv_dim, hidden, false, nullptr));
        ASSERT_KERNEL_OK(SmallBatchGemm(input,
                                        d_w.get() + static_cast<size_t>(q_dim + kv_dim) * hidden,
                                        d_v2.get(), m, kv_dim, hidden, false, nullptr));
        if (with_bias) {
          ASSERT_KERNEL_OK(AddBias(d_q2.get(), d_bias.get(), m, q_dim, nullptr));
          ASSERT_KERNEL_OK(AddBias(d_k2.get(), d_bias.get() + q_dim, m, kv_dim, nullptr));
          ASSERT_KERNEL_OK(AddBias(d_v2.get(), d_bias.get() + q_dim + kv_dim, m, kv_dim, nullptr));
        }
        ASSERT_KERNEL_OK(ApplyRope(d_q2.get(), d_k2.get(), d_pos.get(), d_freq.get(), m, heads,
                                   kv_heads, dim, nullptr));
        ASSERT_KERNEL_OK(KvAppend(d_k2.get(), d_v2.get(), d_pos.get(), d_starts.get(),
                                  d_tables.get(), d_kc2.get(), d_vc2.get(), m, m, max_blocks,
                                  kv_heads, dim, nullptr));
        EXPECT_EQ(d_q.ToHost(), d_q2.ToHost());
        EXPECT_EQ(d_kc.ToHost(), d_kc2.ToHost());
        EXPECT_EQ(d_vc.ToHost(), d_vc2.ToHost());
        if (norm) {
          EXPECT_EQ(d_res_out.ToHost(), d_res2.ToHost());  // the residual moved
          EXPECT_EQ(d_res.ToHost(), x.bits);               // and its source is intact
        }
      }
    }
  }
}

// The norm prologue reading gathered rows (the embedding table at layer 0),
// fp32 out as the LM head uses it: EmbeddingGather, RmsNormResidual and
// SmallBatchGemm, bit for bit; an out-of-range id reads zeros.
TEST(KernelsGpuTest, SmallBatchGemmNormOfGatheredRowsEqualsUnfused) {
  REQUIRE_GPU();
  std::mt19937 rng(26);
  const int hidden = 2048, vocab = 50, n = 1000;
  const auto table = RandomBf16(static_cast<size_t>(vocab) * hidden, rng);
  const auto w = RandomBf16(static_cast<size_t>(n) * hidden, rng, 0.05f);
  const auto norm_weight = RandomBf16(hidden, rng, 1.0f);
  DeviceArray<Bf16> d_table(table.bits), d_w(w.bits), d_norm(norm_weight.bits);
  for (int m = 1; m <= kSmallBatchGemmMaxRows; ++m) {
    SCOPED_TRACE(testing::Message() << "m " << m);
    std::vector<int32_t> ids(m);
    for (int i = 0; i < m; ++i) ids[i] = (7 * i + 3) % vocab;
    if (m == 3) ids[1] = vocab + 5;
    DeviceArray<int32_t> d_ids(ids);
    DeviceArray<Bf16> d_res_out(static_cast<size_t>(m) * hidden), d_gathered(m * hidden),
        d_normed(m * hidden);
    DeviceArray<float> d_got(static_cast<size_t>(m) * n), d_want(static_cast<size_t>(m) * n);
    SmallBatchInput in;
    in.residual = d_table.get();
    in.residual_rows = d_ids.get();
    in.residual_rows_limit = vocab;
    in.residual_out = d_res_out.get();
    in.norm_weight = d_norm.get();
    in.eps = 1e-5f;
    ASSERT_KERNEL_OK(SmallBatchGemm(in, d_w.get(), d_got.get(), m, n, hidden, true, nullptr));
    ASSERT_KERNEL_OK(
        EmbeddingGather(d_ids.get(), d_table.get(), d_gathered.get(), m, hidden, vocab, nullptr));
    ASSERT_KERNEL_OK(RmsNormResidual(nullptr, d_gathered.get(), d_norm.get(), d_normed.get(), m,
                                     hidden, 1e-5f, nullptr));
    ASSERT_KERNEL_OK(
        SmallBatchGemm(d_normed.get(), d_w.get(), d_want.get(), m, n, hidden, true, nullptr));
    EXPECT_EQ(d_got.ToHost(), d_want.ToHost());
    EXPECT_EQ(d_res_out.ToHost(), d_gathered.ToHost());
  }
}

TEST(KernelsGpuTest, SmallBatchGateUpSwiGluEqualsGemmThenSwiGlu) {
  REQUIRE_GPU();
  std::mt19937 rng(24);
  for (const auto& [inter, k] : {std::pair{8192, 2048}, std::pair{13, 1032}}) {
    const auto w = RandomBf16(static_cast<size_t>(2) * inter * k, rng, 0.05f);
    const auto norm_weight = RandomBf16(k, rng, 1.0f);
    DeviceArray<Bf16> d_w(w.bits), d_norm(norm_weight.bits);
    for (const bool norm : {false, true}) {
      for (int m = 1; m <= kSmallBatchGemmMaxRows; ++m) {
        SCOPED_TRACE(testing::Message() << "inter " << inter << " norm " << norm << " m " << m);
        const auto x = RandomBf16(static_cast<size_t>(m) * k, rng);
        const auto delta = RandomBf16(x.bits.size(), rng);
        DeviceArray<Bf16> d_x(x.bits), d_delta(delta.bits), d_res_out(x.bits.size()),
            d_res2(x.bits), d_normed(x.bits.size()), d_gate_up(static_cast<size_t>(m) * 2 * inter),
            d_want(static_cast<size_t>(m) * inter), d_got(static_cast<size_t>(m) * inter);
        const SmallBatchInput in =
            norm ? NormedInput(d_delta.get(), d_x.get(), d_res_out.get(), d_norm.get())
                 : PlainInput(d_x.get());
        const Bf16* input = d_x.get();
        if (norm) {
          ASSERT_KERNEL_OK(RmsNormResidual(d_delta.get(), d_res2.get(), d_norm.get(),
                                           d_normed.get(), m, k, 1e-5f, nullptr));
          input = d_normed.get();
        }
        ASSERT_KERNEL_OK(SmallBatchGateUpSwiGlu(in, d_w.get(), d_got.get(), m, inter, k, nullptr));
        ASSERT_KERNEL_OK(
            SmallBatchGemm(input, d_w.get(), d_gate_up.get(), m, 2 * inter, k, false, nullptr));
        if (norm && k == 2048) {
          EXPECT_EQ(d_res_out.ToHost(), d_res2.ToHost());
        }
        // inter = 13 is odd and k = 1032 reduces in another order than
        // RmsNormResidual: the reference on the GEMM's bf16 output stands in.
        if (inter % 2 == 0 && k == 2048) {
          ASSERT_KERNEL_OK(SwiGlu(d_gate_up.get(), d_want.get(), m, inter, nullptr));
          EXPECT_EQ(d_got.ToHost(), d_want.ToHost());
        } else {
          std::vector<float> want(static_cast<size_t>(m) * inter);
          reference::SwiGlu(ToFloat(d_gate_up.ToHost()).data(), want.data(), m, inter);
          EXPECT_LE(RelativeError(ToFloat(d_got.ToHost()), want), kBf16Tolerance);
        }
      }
    }
  }
  // Bad inputs are refused: no x, an aliased residual, rows too wide for
  // shared memory.
  DeviceArray<Bf16> d(64 * 1024);
  EXPECT_FALSE(SmallBatchGateUpSwiGlu(SmallBatchInput{}, d.get(), d.get(), 1, 8, 8, nullptr).ok());
  SmallBatchInput aliased;
  aliased.residual = aliased.residual_out = d.get();
  aliased.norm_weight = d.get();
  EXPECT_FALSE(SmallBatchGateUpSwiGlu(aliased, d.get(), d.get(), 1, 8, 8, nullptr).ok());
  SmallBatchInput wide;
  wide.residual = d.get();
  wide.residual_out = d.get() + 32 * 1024;
  wide.norm_weight = d.get();
  EXPECT_FALSE(SmallBatchGateUpSwiGlu(wide, d.get(), d.get(), 4, 8, 8192, nullptr).ok());
}

TEST(KernelsGpuTest, RopeKvAppendEqualsRopeThenKvAppend) {
  REQUIRE_GPU();
  std::mt19937 rng(25);
  const reference::RopeParams params = Llama3Rope();
  const int heads = 8, kv_heads = 2, dim = 64;
  const AppendBatch batch = MakeAppendBatch(rng);
  const int num_blocks = batch.num_blocks, max_blocks = batch.max_blocks, num_seqs = batch.num_seqs;
  const std::vector<int32_t>&seq_starts = batch.seq_starts, &positions = batch.positions,
        &tables = batch.tables;
  const int n = static_cast<int>(positions.size());
  const auto inv_freq = reference::RopeInvFreq(params, dim);
  const size_t cache_size = static_cast<size_t>(num_blocks) * kKvBlockSize * kv_heads * dim;
  const auto cache = RandomBf16(cache_size, rng);
  const auto q = RandomBf16(static_cast<size_t>(n) * heads * dim, rng);
  const auto k = RandomBf16(static_cast<size_t>(n) * kv_heads * dim, rng);
  const auto v = RandomBf16(k.bits.size(), rng);
  DeviceArray<int32_t> d_pos(positions), d_starts(seq_starts), d_tables(tables);
  DeviceArray<float> d_freq(inv_freq);
  // Fused, over the stacked rows [q | k | v] of each token.
  const int q_dim = heads * dim, kv_dim = kv_heads * dim, row = q_dim + 2 * kv_dim;
  std::vector<Bf16> qkv(static_cast<size_t>(n) * row);
  for (int t = 0; t < n; ++t) {
    std::copy_n(q.bits.begin() + t * q_dim, q_dim, qkv.begin() + t * row);
    std::copy_n(k.bits.begin() + t * kv_dim, kv_dim, qkv.begin() + t * row + q_dim);
    std::copy_n(v.bits.begin() + t * kv_dim, kv_dim, qkv.begin() + t * row + q_dim + kv_dim);
  }
  DeviceArray<Bf16> d_qkv(qkv), d_q(q.bits.size()), d_kc(cache.bits), d_vc(cache.bits);
  ASSERT_KERNEL_OK(RopeKvAppend(d_qkv.get(), d_q.get(), d_pos.get(), d_freq.get(), d_starts.get(),
                                d_tables.get(), d_kc.get(), d_vc.get(), n, num_seqs, max_blocks,
                                heads, kv_heads, dim, nullptr));
  // Unfused.
  DeviceArray<Bf16> d_q2(q.bits), d_k2(k.bits), d_v(v.bits), d_kc2(cache.bits), d_vc2(cache.bits);
  ASSERT_KERNEL_OK(ApplyRope(d_q2.get(), d_k2.get(), d_pos.get(), d_freq.get(), n, heads, kv_heads,
                             dim, nullptr));
  ASSERT_KERNEL_OK(KvAppend(d_k2.get(), d_v.get(), d_pos.get(), d_starts.get(), d_tables.get(),
                            d_kc2.get(), d_vc2.get(), n, num_seqs, max_blocks, kv_heads, dim,
                            nullptr));
  EXPECT_EQ(d_q.ToHost(), d_q2.ToHost());
  EXPECT_EQ(d_kc.ToHost(), d_kc2.ToHost());
  EXPECT_EQ(d_vc.ToHost(), d_vc2.ToHost());
  EXPECT_EQ(d_qkv.ToHost(), qkv);  // the input is left as it was
  EXPECT_NE(d_q.ToHost(), q.bits);
}

TEST(KernelsGpuTest, AddBiasAndCopyKvBlocks) {
  REQUIRE_GPU();
  std::mt19937 rng(22);
  const int rows = 7, dim = 320;
  const auto x = RandomBf16(rows * dim, rng), bias = RandomBf16(dim, rng);
  DeviceArray<Bf16> d_x(x.bits), d_bias(bias.bits);
  ASSERT_KERNEL_OK(AddBias(d_x.get(), d_bias.get(), rows, dim, nullptr));
  std::vector<float> want(rows * dim);
  for (int i = 0; i < rows * dim; ++i) want[i] = x.values[i] + bias.values[i % dim];
  EXPECT_LE(RelativeError(ToFloat(d_x.ToHost()), want), kBf16Tolerance);

  const int num_blocks = 6, block_elems = kKvBlockSize * 2 * 16;
  auto k = RandomBf16(num_blocks * block_elems, rng), v = RandomBf16(num_blocks * block_elems, rng);
  const std::vector<int32_t> pairs = {4, 1, 0, 5};  // 4 -> 1, 0 -> 5
  DeviceArray<Bf16> d_k(k.bits), d_v(v.bits);
  DeviceArray<int32_t> d_pairs(pairs);
  ASSERT_KERNEL_OK(CopyKvBlocks(d_k.get(), d_v.get(), d_pairs.get(), 2, block_elems, nullptr));
  for (int p = 0; p < 2; ++p) {
    std::copy_n(k.bits.begin() + pairs[2 * p] * block_elems, block_elems,
                k.bits.begin() + pairs[2 * p + 1] * block_elems);
    std::copy_n(v.bits.begin() + pairs[2 * p] * block_elems, block_elems,
                v.bits.begin() + pairs[2 * p + 1] * block_elems);
  }
  EXPECT_EQ(d_k.ToHost(), k.bits);
  EXPECT_EQ(d_v.ToHost(), v.bits);
}

// An fp8 pool holds, element for element, the bf16 pool's value rounded to
// fp8 (kernels.h Fp8E4m3), whichever kernel writes or copies it.
std::vector<Fp8E4m3> Fp8Of(const std::vector<Bf16>& bf16) {
  std::vector<Fp8E4m3> out(bf16.size());
  for (size_t i = 0; i < bf16.size(); ++i) {
    out[i].bits = reference::FloatToFp8E4m3(reference::Bf16ToFloat(bf16[i]));
  }
  return out;
}
void ExpectFp8Of(const std::vector<Fp8E4m3>& got, const std::vector<Bf16>& bf16) {
  const std::vector<Fp8E4m3> want = Fp8Of(bf16);
  ASSERT_EQ(got.size(), want.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) mismatches += got[i].bits != want[i].bits;
  EXPECT_EQ(mismatches, 0u) << "of " << got.size() << " elements";
}

TEST(KernelsGpuTest, Fp8PoolsHoldTheRoundedBf16Values) {
  REQUIRE_GPU();
  std::mt19937 rng(27);
  const int heads = 8, kv_heads = 2, dim = 64;
  const AppendBatch batch = MakeAppendBatch(rng);
  const int num_blocks = batch.num_blocks, max_blocks = batch.max_blocks, num_seqs = batch.num_seqs;
  const int n = static_cast<int>(batch.positions.size());
  const int q_dim = heads * dim, kv_dim = kv_heads * dim, row = q_dim + 2 * kv_dim;
  const size_t cache_size = static_cast<size_t>(num_blocks) * kKvBlockSize * kv_dim;
  // Values up to ~1e3 exercise saturation at 448.
  const auto cache = RandomBf16(cache_size, rng, 200.0f);
  const auto qkv = RandomBf16(static_cast<size_t>(n) * row, rng, 200.0f);
  const auto inv_freq = reference::RopeInvFreq(Llama3Rope(), dim);
  DeviceArray<int32_t> d_pos(batch.positions), d_starts(batch.seq_starts), d_tables(batch.tables);
  DeviceArray<float> d_freq(inv_freq);
  DeviceArray<Bf16> d_qkv(qkv.bits), d_q(static_cast<size_t>(n) * q_dim), d_kc(cache.bits),
      d_vc(cache.bits);
  DeviceArray<Fp8E4m3> d_kc8(Fp8Of(cache.bits)), d_vc8(Fp8Of(cache.bits));

  // KvAppend of the rows' K and V parts (any bf16 rows will do).
  const Bf16* k_rows = d_qkv.get();
  const Bf16* v_rows = d_qkv.get() + static_cast<size_t>(n) * kv_dim;
  ASSERT_KERNEL_OK(KvAppend(k_rows, v_rows, d_pos.get(), d_starts.get(), d_tables.get(), d_kc.get(),
                            d_vc.get(), n, num_seqs, max_blocks, kv_heads, dim, nullptr));
  ASSERT_KERNEL_OK(KvAppend(k_rows, v_rows, d_pos.get(), d_starts.get(), d_tables.get(),
                            d_kc8.get(), d_vc8.get(), n, num_seqs, max_blocks, kv_heads, dim,
                            nullptr));
  ExpectFp8Of(d_kc8.ToHost(), d_kc.ToHost());
  ExpectFp8Of(d_vc8.ToHost(), d_vc.ToHost());

  // RopeKvAppend over the stacked rows: the same q either way.
  DeviceArray<Bf16> d_q8(static_cast<size_t>(n) * q_dim);
  ASSERT_KERNEL_OK(RopeKvAppend(d_qkv.get(), d_q.get(), d_pos.get(), d_freq.get(), d_starts.get(),
                                d_tables.get(), d_kc.get(), d_vc.get(), n, num_seqs, max_blocks,
                                heads, kv_heads, dim, nullptr));
  ASSERT_KERNEL_OK(RopeKvAppend(d_qkv.get(), d_q8.get(), d_pos.get(), d_freq.get(), d_starts.get(),
                                d_tables.get(), d_kc8.get(), d_vc8.get(), n, num_seqs, max_blocks,
                                heads, kv_heads, dim, nullptr));
  EXPECT_EQ(d_q8.ToHost(), d_q.ToHost());
  ExpectFp8Of(d_kc8.ToHost(), d_kc.ToHost());
  ExpectFp8Of(d_vc8.ToHost(), d_vc.ToHost());

  // SmallBatchQkvRope: three decode tokens of the first sequences.
  {
    const int m = 3, hidden = 256;
    const auto w = RandomBf16(static_cast<size_t>(row) * hidden, rng, 0.5f);
    const auto x = RandomBf16(static_cast<size_t>(m) * hidden, rng, 4.0f);
    std::vector<int32_t> starts(m + 1), positions = {3, 20, 41};
    std::iota(starts.begin(), starts.end(), 0);
    const auto tables = RandomBlockTables(m, max_blocks, num_blocks, rng);
    DeviceArray<Bf16> d_w(w.bits), d_x(x.bits), d_qa(m * q_dim), d_qb(m * q_dim);
    DeviceArray<int32_t> d_p(positions), d_s(starts), d_t(tables);
    QkvRopeKv rope;
    rope.positions = d_p.get();
    rope.inv_freq = d_freq.get();
    rope.seq_starts = d_s.get();
    rope.block_tables = d_t.get();
    rope.num_seqs = m;
    rope.max_blocks = max_blocks;
    rope.num_heads = heads;
    rope.num_kv_heads = kv_heads;
    rope.head_dim = dim;
    SmallBatchInput in;
    in.x = d_x.get();
    QkvRopeKv bf16_rope = rope;
    bf16_rope.k_cache = d_kc.get();
    bf16_rope.v_cache = d_vc.get();
    ASSERT_KERNEL_OK(SmallBatchQkvRope(in, d_w.get(), d_qa.get(), bf16_rope, m, hidden, nullptr));
    QkvRopeKv fp8_rope = rope;
    fp8_rope.k_cache_fp8 = d_kc8.get();
    fp8_rope.v_cache_fp8 = d_vc8.get();
    ASSERT_KERNEL_OK(SmallBatchQkvRope(in, d_w.get(), d_qb.get(), fp8_rope, m, hidden, nullptr));
    EXPECT_EQ(d_qb.ToHost(), d_qa.ToHost());
    ExpectFp8Of(d_kc8.ToHost(), d_kc.ToHost());
    ExpectFp8Of(d_vc8.ToHost(), d_vc.ToHost());
    fp8_rope.k_cache = d_kc.get();  // both pairs: refused
    fp8_rope.v_cache = d_vc.get();
    EXPECT_FALSE(SmallBatchQkvRope(in, d_w.get(), d_qb.get(), fp8_rope, m, hidden, nullptr).ok());
  }

  // CopyKvBlocks moves the bytes of whole fp8 blocks.
  const std::vector<int32_t> pairs = {4, 1, 0, 5};
  DeviceArray<int32_t> d_pairs(pairs);
  const int block_elems = kKvBlockSize * kv_dim;
  ASSERT_KERNEL_OK(CopyKvBlocks(d_kc.get(), d_vc.get(), d_pairs.get(), 2, block_elems, nullptr));
  ASSERT_KERNEL_OK(CopyKvBlocks(d_kc8.get(), d_vc8.get(), d_pairs.get(), 2, block_elems, nullptr));
  ExpectFp8Of(d_kc8.ToHost(), d_kc.ToHost());
  ExpectFp8Of(d_vc8.ToHost(), d_vc.ToHost());

  // Attention refuses pools whose type is not the shape's.
  AttentionShape shape = Shape(heads, kv_heads, dim, max_blocks);
  DeviceArray<float> d_o(static_cast<size_t>(num_seqs) * heads * dim), d_lse(num_seqs * heads);
  std::vector<int32_t> ends(num_seqs, 1);
  DeviceArray<int32_t> d_end(ends);
  EXPECT_FALSE(DecodeAttentionPartial(d_q.get(), d_kc8.get(), d_vc8.get(), d_tables.get(), nullptr,
                                      d_end.get(), d_o.get(), d_lse.get(), num_seqs, shape, 16, 1,
                                      nullptr)
                   .ok());
  shape.kv_dtype = KvDtype::kFp8E4m3;
  EXPECT_FALSE(DecodeAttentionPartial(d_q.get(), d_kc.get(), d_vc.get(), d_tables.get(), nullptr,
                                      d_end.get(), d_o.get(), d_lse.get(), num_seqs, shape, 16, 1,
                                      nullptr)
                   .ok());
  ASSERT_KERNEL_OK(DecodeAttentionPartial(d_q.get(), d_kc8.get(), d_vc8.get(), d_tables.get(),
                                          nullptr, d_end.get(), d_o.get(), d_lse.get(), num_seqs,
                                          shape, 16, 1, nullptr));
}

TEST(KernelsGpuTest, SamplerDrawsExactlyTheReferenceTokens) {
  REQUIRE_GPU();
  std::mt19937 rng(21);
  for (int vocab : {1000, 128256}) {
    const int rows = vocab == 1000 ? 256 : 8;
    std::normal_distribution<float> dist(0.0f, 3.0f);
    std::vector<float> logits(static_cast<size_t>(rows) * vocab);
    for (float& x : logits) x = dist(rng);
    // Some rows with many exact ties.
    for (int r = 0; r < rows; r += 4) {
      for (int i = 0; i < vocab; ++i) {
        float& x = logits[static_cast<size_t>(r) * vocab + i];
        x = std::round(x * 2.0f) / 2.0f;
      }
    }
    // Some rows with masked (-inf) tokens.
    for (int r = 3; r < rows; r += 7) {
      for (int i = 0; i < vocab; i += 3) logits[static_cast<size_t>(r) * vocab + i] = -INFINITY;
    }
    std::vector<SampleParams> params(rows);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    for (int r = 0; r < rows; ++r) {
      SampleParams& p = params[r];
      p.temperature = r % 8 == 0 ? 0.0f : 0.3f + 1.2f * unit(rng);
      p.top_k = r % 3 == 0 ? 0 : 1 + static_cast<int>(unit(rng) * 60);
      p.top_p = r % 5 == 0 ? 1.0f : 0.5f + 0.5f * unit(rng);
      p.seed = rng();
      p.stream = r;
      p.position = 1000 + r;
    }
    DeviceArray<float> d_logits(logits), d_logprobs(rows);
    DeviceArray<SampleParams> d_params(params);
    DeviceArray<int32_t> d_tokens(rows);
    // 8 rows of a large vocabulary take the many-CTA first pass.
    DeviceArray<unsigned char> d_workspace(SampleWorkspaceBytes(rows, vocab));
    if (vocab > 100000) EXPECT_GT(SampleWorkspaceBytes(rows, vocab), 0u);
    ASSERT_KERNEL_OK(SampleTokens(d_logits.get(), d_params.get(), d_tokens.get(), d_logprobs.get(),
                                  rows, vocab, d_workspace.get(), nullptr));
    const auto tokens = d_tokens.ToHost();
    const auto logprobs = d_logprobs.ToHost();
    for (int r = 0; r < rows; ++r) {
      const auto want =
          reference::Sample(&logits[static_cast<size_t>(r) * vocab], vocab, params[r]);
      EXPECT_EQ(tokens[r], want.token) << "row " << r << " vocab " << vocab;
      EXPECT_NEAR(logprobs[r], want.logprob,
                  kFp32Tolerance * std::max(1.0f, std::fabs(want.logprob)))
          << "row " << r;
    }
  }
}

TEST(KernelsGpuTest, LaunchersRejectUnsupportedShapes) {
  REQUIRE_GPU();
  const Bf16* no_pool = nullptr;
  AttentionShape bad = Shape(6, 4, 64, 1);  // heads not a multiple of kv heads
  EXPECT_FALSE(DecodeAttentionPartial(nullptr, no_pool, no_pool, nullptr, nullptr, nullptr, nullptr,
                                      nullptr, 1, bad, 16, 1, nullptr)
                   .ok());
  bad = Shape(4, 4, 80, 1);  // head_dim
  EXPECT_FALSE(PrefillAttention(nullptr, nullptr, nullptr, nullptr, nullptr, no_pool, no_pool,
                                nullptr, 1, 1, 1, bad, nullptr)
                   .ok());
  EXPECT_FALSE(SwiGlu(nullptr, nullptr, 1, 3, nullptr).ok());  // odd inter
  cudaGetLastError();
}

}  // namespace
}  // namespace arbor::kernels
