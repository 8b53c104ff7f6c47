// GPU kernels against their CPU references on fresh random inputs.
// Tolerances: bf16 outputs max|gpu - ref| / max|ref| <= 1e-2; fp32 outputs
// (partial attention states, logprobs) 1e-4 relative; copies and sampled
// tokens exactly. Every test skips when no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"

namespace arbor::kernels {
namespace {

using reference::Bf16ToFloat;
using reference::FloatToBf16;

constexpr double kBf16Tolerance = 1e-2;
constexpr double kFp32Tolerance = 1e-4;

bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define REQUIRE_GPU()                                           \
  do {                                                          \
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device available"; \
  } while (0)

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(expr)
#define ASSERT_KERNEL_OK(expr)                      \
  do {                                              \
    const KernelStatus status_ = (expr);            \
    ASSERT_TRUE(status_.ok()) << status_.message(); \
    ASSERT_CUDA(cudaDeviceSynchronize());           \
  } while (0)

// Owning device array.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : size_(n) {
    if (cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) ptr_ = nullptr;
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return ptr_; }
  std::vector<T> ToHost() const {
    std::vector<T> host(size_);
    cudaMemcpy(host.data(), ptr_, size_ * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t size_;
};

// Random bf16 tensor and the exact float values it holds.
struct Bf16Tensor {
  std::vector<Bf16> bits;
  std::vector<float> values;
};
Bf16Tensor RandomBf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  Bf16Tensor t;
  t.bits.resize(n);
  t.values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    t.bits[i] = FloatToBf16(dist(rng));
    t.values[i] = Bf16ToFloat(t.bits[i]);
  }
  return t;
}
std::vector<float> ToFloat(const std::vector<Bf16>& bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = Bf16ToFloat(bits[i]);
  return out;
}

// max |got - want| / max |want|.
double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double max_err = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    max_err = std::max(max_err, std::fabs(static_cast<double>(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

// Distinct random block ids for each sequence's blocks.
std::vector<int32_t> RandomBlockTables(int num_seqs, int max_blocks, int num_blocks,
                                       std::mt19937& rng) {
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks);
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = ids[i];
  return tables;
}

AttentionShape Shape(int heads, int kv_heads, int dim, int max_blocks) {
  return AttentionShape{.num_heads = heads,
                        .num_kv_heads = kv_heads,
                        .head_dim = dim,
                        .scale = 1.0f / std::sqrt(static_cast<float>(dim)),
                        .max_blocks = max_blocks};
}

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

struct AttentionCase {
  int heads, kv_heads, dim;
};

// Paged KV of several sequences: block tables and the K and V pools.
struct PagedKv {
  std::vector<int32_t> tables;
  Bf16Tensor k, v;
  int max_blocks, num_blocks;
};
// What a kernel must never use: a sequence's slots past its context (stale
// pool bytes, here NaN) and its table entries past its last block (-1).
void PoisonPastContext(PagedKv& kv, const std::vector<int32_t>& context_lens,
                       const AttentionCase& c) {
  const size_t slot_elems = static_cast<size_t>(c.kv_heads) * c.dim;
  const Bf16 nan_bits = 0x7fc0;
  for (size_t seq = 0; seq < context_lens.size(); ++seq) {
    int32_t* table = &kv.tables[seq * kv.max_blocks];
    const int len = context_lens[seq], used_blocks = (len + kKvBlockSize - 1) / kKvBlockSize;
    for (int pos = len; pos < used_blocks * kKvBlockSize; ++pos) {
      const size_t first =
          (static_cast<size_t>(table[pos / kKvBlockSize]) * kKvBlockSize + pos % kKvBlockSize) *
          slot_elems;
      for (Bf16Tensor* t : {&kv.k, &kv.v}) {
        std::fill_n(t->bits.begin() + first, slot_elems, nan_bits);
        std::fill_n(t->values.begin() + first, slot_elems, std::nanf(""));
      }
    }
    std::fill(table + used_blocks, table + kv.max_blocks, -1);
  }
}

// Random paged KV for `num_seqs` sequences of `context_lens` tokens,
// poisoned past each context (PoisonPastContext).
PagedKv RandomPagedKv(const std::vector<int32_t>& context_lens, const AttentionCase& c,
                      std::mt19937& rng) {
  PagedKv kv;
  const int max_len = *std::max_element(context_lens.begin(), context_lens.end());
  kv.max_blocks = (max_len + kKvBlockSize - 1) / kKvBlockSize;
  kv.num_blocks = static_cast<int>(context_lens.size()) * kv.max_blocks + 3;
  kv.tables =
      RandomBlockTables(static_cast<int>(context_lens.size()), kv.max_blocks, kv.num_blocks, rng);
  const size_t size = static_cast<size_t>(kv.num_blocks) * kKvBlockSize * c.kv_heads * c.dim;
  kv.k = RandomBf16(size, rng);
  kv.v = RandomBf16(size, rng);
  PoisonPastContext(kv, context_lens, c);
  return kv;
}

TEST(KernelsGpuTest, PagedDecodeAttentionMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(16);
  // Long contexts run split-K with a merge; short ones as a single split
  // written straight to bf16.
  for (const std::vector<int32_t>& context_lens :
       {std::vector<int32_t>{1, 16, 17, 300, 2500, 4097}, std::vector<int32_t>{1, 5, 30, 64}}) {
    for (const AttentionCase& c :
         {AttentionCase{32, 8, 64}, AttentionCase{32, 8, 128}, AttentionCase{4, 2, 16},
          AttentionCase{14, 2, 64}, AttentionCase{4, 4, 32}}) {
      const int num_seqs = static_cast<int>(context_lens.size());
      const PagedKv kv = RandomPagedKv(context_lens, c, rng);
      const AttentionShape shape = Shape(c.heads, c.kv_heads, c.dim, kv.max_blocks);
      const auto q = RandomBf16(static_cast<size_t>(num_seqs) * c.heads * c.dim, rng);
      const int max_ctx = *std::max_element(context_lens.begin(), context_lens.end());
      DeviceArray<Bf16> d_q(q.bits), d_k(kv.k.bits), d_v(kv.v.bits);
      DeviceArray<Bf16> d_out(q.bits.size());
      DeviceArray<int32_t> d_tables(kv.tables), d_ctx(context_lens);
      DeviceArray<unsigned char> d_ws(PagedDecodeWorkspaceBytes(num_seqs, shape, max_ctx));
      ASSERT_KERNEL_OK(PagedDecodeAttention(d_q.get(), d_k.get(), d_v.get(), d_tables.get(),
                                            d_ctx.get(), d_out.get(), d_ws.get(), num_seqs, max_ctx,
                                            shape, nullptr));
      std::vector<int32_t> positions(num_seqs), starts(num_seqs + 1);
      for (int s = 0; s < num_seqs; ++s) positions[s] = context_lens[s] - 1;
      std::iota(starts.begin(), starts.end(), 0);
      std::vector<float> want(q.values.size());
      reference::PagedAttention(q.values.data(), positions.data(), starts.data(), kv.tables.data(),
                                context_lens.data(), kv.k.values.data(), kv.v.values.data(),
                                want.data(), num_seqs, shape);
      EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance)
          << "heads=" << c.heads << " kv_heads=" << c.kv_heads << " dim=" << c.dim
          << " max context " << max_ctx;
    }
  }
}

TEST(KernelsGpuTest, DecodePartialStatesMatchReferenceInFp32) {
  REQUIRE_GPU();
  std::mt19937 rng(17);
  const AttentionCase c{8, 2, 64};
  const std::vector<int32_t> kv_begin = {0, 5, 40}, kv_end = {33, 200, 41};
  const PagedKv kv = RandomPagedKv(kv_end, c, rng);
  const AttentionShape shape = Shape(c.heads, c.kv_heads, c.dim, kv.max_blocks);
  const int num_seqs = 3, split_len = 64, num_splits = 4;
  const auto q = RandomBf16(static_cast<size_t>(num_seqs) * c.heads * c.dim, rng);
  const size_t rows = static_cast<size_t>(num_splits) * num_seqs * c.heads;
  DeviceArray<Bf16> d_q(q.bits), d_k(kv.k.bits), d_v(kv.v.bits);
  DeviceArray<int32_t> d_tables(kv.tables), d_begin(kv_begin), d_end(kv_end);
  DeviceArray<float> d_o(rows * c.dim), d_lse(rows);
  ASSERT_KERNEL_OK(DecodeAttentionPartial(d_q.get(), d_k.get(), d_v.get(), d_tables.get(),
                                          d_begin.get(), d_end.get(), d_o.get(), d_lse.get(),
                                          num_seqs, shape, split_len, num_splits, nullptr));
  const auto o = d_o.ToHost(), lse = d_lse.ToHost();
  for (int j = 0; j < num_splits; ++j) {
    for (int s = 0; s < num_seqs; ++s) {
      const int b = kv_begin[s] + j * split_len, e = std::min(kv_end[s], b + split_len);
      for (int h = 0; h < c.heads; ++h) {
        std::vector<float> want(c.dim);
        float want_lse;
        reference::AttentionPartialRow(&q.values[(s * c.heads + h) * c.dim], h,
                                       &kv.tables[s * kv.max_blocks], b, e, kv.k.values.data(),
                                       kv.v.values.data(), shape, want.data(), &want_lse);
        const size_t row = (static_cast<size_t>(j) * num_seqs + s) * c.heads + h;
        std::vector<float> got(o.begin() + row * c.dim, o.begin() + (row + 1) * c.dim);
        if (b >= e) {
          EXPECT_EQ(lse[row], -INFINITY);
          continue;
        }
        EXPECT_NEAR(lse[row], want_lse, kFp32Tolerance * std::max(1.0f, std::fabs(want_lse)));
        EXPECT_LE(RelativeError(got, want), kFp32Tolerance) << "split " << j << " seq " << s;
      }
    }
  }
}

// Every group-attention kernel; on a GPU other than sm_90 (or a head size
// other than 64) the wgmma one runs the mma.sync kernel.
constexpr GroupAttentionKernel kGroupKernels[] = {GroupAttentionKernel::kMmaSync,
                                                  GroupAttentionKernel::kWgmma};

// Selects a group-attention kernel for one scope.
class ScopedGroupKernel {
 public:
  explicit ScopedGroupKernel(GroupAttentionKernel kernel)
      : previous_(SetGroupAttentionKernel(kernel)) {}
  ~ScopedGroupKernel() { SetGroupAttentionKernel(previous_); }
  ScopedGroupKernel(const ScopedGroupKernel&) = delete;
  ScopedGroupKernel& operator=(const ScopedGroupKernel&) = delete;

 private:
  const GroupAttentionKernel previous_;
};

// Groups of branches that share a prompt (prefix_lens[g] tokens, shared
// blocks), each branch with 1-40 tokens of its own.
struct CascadeCase {
  std::vector<int> prefix_lens, branches_per_group;
  int prefix_split, prefix_splits;  // must cover the longest prefix
};

// Prefix attention once per group (GroupAttentionPartial), suffix attention
// per branch, merged, against full per-branch attention.
void CheckSharedPrefixCascade(const AttentionCase& c, const CascadeCase& cc, std::mt19937& rng) {
  const int num_groups = static_cast<int>(cc.prefix_lens.size());
  std::vector<int32_t> context_lens, group_of_branch, group_starts = {0};
  std::uniform_int_distribution<int> suffix(1, 40);
  for (int g = 0; g < num_groups; ++g) {
    for (int i = 0; i < cc.branches_per_group[g]; ++i) {
      context_lens.push_back(cc.prefix_lens[g] + suffix(rng));
      group_of_branch.push_back(g);
    }
    group_starts.push_back(group_starts.back() + cc.branches_per_group[g]);
  }
  const int num_branches = static_cast<int>(context_lens.size());
  const int max_group =
      *std::max_element(cc.branches_per_group.begin(), cc.branches_per_group.end());
  PagedKv kv = RandomPagedKv(context_lens, c, rng);
  // Share the prompt: branches of a group take the first branch's full
  // prefix blocks; a partially filled last prefix block is a per-branch
  // copy (copy-on-write) of the first branch's.
  const size_t slot = static_cast<size_t>(c.kv_heads) * c.dim;
  for (int g = 0; g < num_groups; ++g) {
    const int first = group_starts[g];
    const int full = cc.prefix_lens[g] / kKvBlockSize, rem = cc.prefix_lens[g] % kKvBlockSize;
    for (int i = 1; i < cc.branches_per_group[g]; ++i) {
      int32_t* table = &kv.tables[(first + i) * kv.max_blocks];
      const int32_t* leader = &kv.tables[first * kv.max_blocks];
      for (int blk = 0; blk < full; ++blk) table[blk] = leader[blk];
      for (int r = 0; r < rem; ++r) {
        const size_t src = (static_cast<size_t>(leader[full]) * kKvBlockSize + r) * slot;
        const size_t dst = (static_cast<size_t>(table[full]) * kKvBlockSize + r) * slot;
        std::copy_n(kv.k.bits.begin() + src, slot, kv.k.bits.begin() + dst);
        std::copy_n(kv.v.bits.begin() + src, slot, kv.v.bits.begin() + dst);
        std::copy_n(kv.k.values.begin() + src, slot, kv.k.values.begin() + dst);
        std::copy_n(kv.v.values.begin() + src, slot, kv.v.values.begin() + dst);
      }
    }
  }
  const AttentionShape shape = Shape(c.heads, c.kv_heads, c.dim, kv.max_blocks);
  const auto q = RandomBf16(static_cast<size_t>(num_branches) * c.heads * c.dim, rng);
  std::vector<int32_t> positions(num_branches);
  for (int b = 0; b < num_branches; ++b) positions[b] = context_lens[b] - 1;
  std::vector<int32_t> group_tables, group_kv_len(cc.prefix_lens.begin(), cc.prefix_lens.end());
  std::vector<int32_t> suffix_begin(num_branches);
  for (int g = 0; g < num_groups; ++g) {
    const int leader = group_starts[g];
    group_tables.insert(group_tables.end(), kv.tables.begin() + leader * kv.max_blocks,
                        kv.tables.begin() + (leader + 1) * kv.max_blocks);
  }
  for (int b = 0; b < num_branches; ++b) suffix_begin[b] = cc.prefix_lens[group_of_branch[b]];

  const int suffix_split = 16, suffix_splits = 3;  // covers 40
  const int parts = cc.prefix_splits + suffix_splits;
  const size_t rows = static_cast<size_t>(num_branches) * c.heads;
  DeviceArray<Bf16> d_q(q.bits), d_k(kv.k.bits), d_v(kv.v.bits), d_out(q.bits.size());
  DeviceArray<int32_t> d_pos(positions), d_gstarts(group_starts), d_gtables(group_tables),
      d_glen(group_kv_len), d_tables(kv.tables), d_begin(suffix_begin), d_end(context_lens);
  DeviceArray<float> d_o(parts * rows * c.dim), d_lse(parts * rows);
  ASSERT_KERNEL_OK(GroupAttentionPartial(d_q.get(), d_pos.get(), d_gstarts.get(), d_gtables.get(),
                                         d_glen.get(), d_k.get(), d_v.get(), d_o.get(), d_lse.get(),
                                         num_branches, num_groups, max_group, shape,
                                         cc.prefix_split, cc.prefix_splits, nullptr));
  ASSERT_KERNEL_OK(DecodeAttentionPartial(
      d_q.get(), d_k.get(), d_v.get(), d_tables.get(), d_begin.get(), d_end.get(),
      d_o.get() + cc.prefix_splits * rows * c.dim, d_lse.get() + cc.prefix_splits * rows,
      num_branches, shape, suffix_split, suffix_splits, nullptr));
  ASSERT_KERNEL_OK(MergeAttentionStates(d_o.get(), d_lse.get(), d_out.get(), nullptr, parts,
                                        num_branches, c.heads, c.dim, nullptr));
  std::vector<int32_t> starts(num_branches + 1);
  std::iota(starts.begin(), starts.end(), 0);
  std::vector<float> want(q.values.size());
  reference::PagedAttention(q.values.data(), positions.data(), starts.data(), kv.tables.data(),
                            context_lens.data(), kv.k.values.data(), kv.v.values.data(),
                            want.data(), num_branches, shape);
  EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance)
      << "heads=" << c.heads << " dim=" << c.dim << " prefix splits " << cc.prefix_splits << " x "
      << cc.prefix_split;
}

TEST(KernelsGpuTest, SharedPrefixCascadeMatchesPerBranchAttention) {
  REQUIRE_GPU();
  std::mt19937 rng(18);
  const CascadeCase cases[] = {
      // 5 branches after a 1000-token prompt (ends mid-block and mid-tile),
      // 3 after 64; splits of a few tiles.
      {{1000, 64}, {5, 3}, 256, 4},
      // The same prompts in one split of many tiles (the pipelines wrap
      // around their shared-memory stages).
      {{1000, 64}, {5, 3}, 1024, 1},
      // 40 branches x 4 GQA heads = 160 rows: several row tiles, the last
      // one mostly padding; short splits, some of them empty for group 1.
      {{700, 300}, {40, 1}, 128, 6},
  };
  for (const GroupAttentionKernel kernel : kGroupKernels) {
    ScopedGroupKernel scoped(kernel);
    SCOPED_TRACE("group attention kernel " + std::to_string(static_cast<int>(kernel)));
    for (const AttentionCase& c :
         {AttentionCase{32, 8, 64}, AttentionCase{16, 2, 128}, AttentionCase{4, 2, 16}}) {
      for (const CascadeCase& cc : cases) CheckSharedPrefixCascade(c, cc, rng);
    }
  }
}

TEST(KernelsGpuTest, PrefillAttentionWithCachedPrefixMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(19);
  // (cached prefix, new tokens) per sequence.
  const std::vector<std::pair<int, int>> seqs = {{0, 100}, {37, 50}, {130, 1}, {0, 200}, {500, 77}};
  for (const GroupAttentionKernel kernel : kGroupKernels) {
    ScopedGroupKernel scoped(kernel);
    SCOPED_TRACE("group attention kernel " + std::to_string(static_cast<int>(kernel)));
    for (const AttentionCase& c : {AttentionCase{32, 8, 64}, AttentionCase{8, 8, 128},
                                   AttentionCase{14, 2, 16}, AttentionCase{4, 1, 32}}) {
      std::vector<int32_t> context_lens, positions, starts = {0};
      int max_new = 0;
      for (const auto& [cached, fresh] : seqs) {
        context_lens.push_back(cached + fresh);
        for (int i = 0; i < fresh; ++i) positions.push_back(cached + i);
        starts.push_back(starts.back() + fresh);
        max_new = std::max(max_new, fresh);
      }
      const int num_seqs = static_cast<int>(seqs.size()), n = starts.back();
      const PagedKv kv = RandomPagedKv(context_lens, c, rng);
      const AttentionShape shape = Shape(c.heads, c.kv_heads, c.dim, kv.max_blocks);
      const auto q = RandomBf16(static_cast<size_t>(n) * c.heads * c.dim, rng);
      DeviceArray<Bf16> d_q(q.bits), d_k(kv.k.bits), d_v(kv.v.bits), d_out(q.bits.size());
      DeviceArray<int32_t> d_pos(positions), d_starts(starts), d_tables(kv.tables),
          d_ctx(context_lens);
      ASSERT_KERNEL_OK(PrefillAttention(d_q.get(), d_pos.get(), d_starts.get(), d_tables.get(),
                                        d_ctx.get(), d_k.get(), d_v.get(), d_out.get(), n, num_seqs,
                                        max_new, shape, nullptr));
      std::vector<float> want(q.values.size());
      reference::PagedAttention(q.values.data(), positions.data(), starts.data(), kv.tables.data(),
                                context_lens.data(), kv.k.values.data(), kv.v.values.data(),
                                want.data(), num_seqs, shape);
      EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance)
          << "heads=" << c.heads << " kv_heads=" << c.kv_heads << " dim=" << c.dim;

      // The same through split partials + merge (causal masking across splits).
      const int split_len = 128, num_splits = 5;
      const size_t rows = static_cast<size_t>(n) * c.heads;
      DeviceArray<float> d_o(num_splits * rows * c.dim), d_lse(num_splits * rows);
      DeviceArray<Bf16> d_merged(q.bits.size());
      ASSERT_KERNEL_OK(GroupAttentionPartial(
          d_q.get(), d_pos.get(), d_starts.get(), d_tables.get(), d_ctx.get(), d_k.get(), d_v.get(),
          d_o.get(), d_lse.get(), n, num_seqs, max_new, shape, split_len, num_splits, nullptr));
      ASSERT_KERNEL_OK(MergeAttentionStates(d_o.get(), d_lse.get(), d_merged.get(), nullptr,
                                            num_splits, n, c.heads, c.dim, nullptr));
      EXPECT_LE(RelativeError(ToFloat(d_merged.ToHost()), want), kBf16Tolerance) << "split";
    }
  }
}

TEST(KernelsGpuTest, MergeAttentionStatesMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(20);
  const int parts = 5, rows = 7, heads = 4, dim = 64;
  const size_t n = static_cast<size_t>(parts) * rows * heads;
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> o(n * dim), lse(n);
  for (float& x : o) x = dist(rng);
  for (float& x : lse) x = dist(rng);
  for (size_t i = 0; i < n; i += 3) lse[i] = -INFINITY;                   // empty parts
  for (int j = 0; j < parts; ++j) lse[j * rows * heads + 1] = -INFINITY;  // an all-empty row
  for (int j = 0; j < parts; ++j) {
    std::fill_n(o.begin() + (j * rows * heads + 1) * dim, dim, 0.0f);
  }
  DeviceArray<float> d_o(o), d_lse(lse), d_lse_out(rows * heads);
  DeviceArray<Bf16> d_out(static_cast<size_t>(rows) * heads * dim);
  ASSERT_KERNEL_OK(MergeAttentionStates(d_o.get(), d_lse.get(), d_out.get(), d_lse_out.get(), parts,
                                        rows, heads, dim, nullptr));
  std::vector<float> want(static_cast<size_t>(rows) * heads * dim), want_lse(rows * heads);
  reference::MergeAttentionStates(o.data(), lse.data(), want.data(), want_lse.data(), parts, rows,
                                  heads, dim);
  EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance);
  const auto got_lse = d_lse_out.ToHost();
  for (int r = 0; r < rows * heads; ++r) {
    if (std::isinf(want_lse[r])) {
      EXPECT_EQ(got_lse[r], want_lse[r]);
    } else {
      EXPECT_NEAR(got_lse[r], want_lse[r], kFp32Tolerance * std::max(1.0f, std::fabs(want_lse[r])));
    }
  }
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
  AttentionShape bad = Shape(6, 4, 64, 1);  // heads not a multiple of kv heads
  EXPECT_FALSE(DecodeAttentionPartial(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                      nullptr, 1, bad, 16, 1, nullptr)
                   .ok());
  bad = Shape(4, 4, 80, 1);  // head_dim
  EXPECT_FALSE(PrefillAttention(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                nullptr, 1, 1, 1, bad, nullptr)
                   .ok());
  EXPECT_FALSE(SwiGlu(nullptr, nullptr, 1, 3, nullptr).ok());  // odd inter
  cudaGetLastError();
}

}  // namespace
}  // namespace arbor::kernels
