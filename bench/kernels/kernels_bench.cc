// Benchmark of Arbor's CUDA kernels on Llama-3.2-1B shapes (hidden 2048,
// 32 query / 8 KV heads, head_dim 64, intermediate 8192, vocabulary 128256).
// Each kernel is timed with CUDA events after a warm-up (median of 20 runs)
// on random inputs, and reported against its limit: compulsory bytes over the
// device's measured copy bandwidth (read + write of a 1 GiB cudaMemcpy), or
// FLOPs over the measured cuBLAS bf16 GEMM rate. Prints a table last.
//
// Usage: kernels_bench [--quick]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/gpu_util/gpu_bench_util.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"

namespace arbor::kernels {
namespace {

#define CHECK_CUDA ARBOR_CHECK_CUDA
#define CHECK_KERNEL(expr)                                                             \
  do {                                                                                 \
    const KernelStatus s_ = (expr);                                                    \
    if (!s_.ok()) {                                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, s_.message()); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

constexpr int kHidden = 2048, kHeads = 32, kKvHeads = 8, kHeadDim = 64, kInter = 8192;
constexpr int kVocab = 128256;

using bench::DeviceBuffer;
using bench::FillBf16;

template <typename T>
void Upload(void* dst, const std::vector<T>& host) {
  CHECK_CUDA(cudaMemcpy(dst, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
}

int g_iters = 20;

// Median milliseconds of `fn` over g_iters timed runs after 3 warm-ups.
double TimeMs(const std::function<void()>& fn) { return bench::TimeMs(fn, g_iters); }

struct Row {
  std::string kernel, shape;
  double us;
  double rate;  // GB/s or TFLOP/s
  const char* unit;
  double fraction;  // of the limit
};
std::vector<Row> g_rows;
double g_copy_gbps = 0, g_gemm_tflops = 0;

void AddBandwidthRow(const std::string& kernel, const std::string& shape, double ms, double bytes) {
  const double gbps = bytes / (ms * 1e-3) / 1e9;
  g_rows.push_back({kernel, shape, ms * 1e3, gbps, "GB/s", gbps / g_copy_gbps});
  std::printf("  %-28s %-40s %10.1f us %8.0f GB/s  %5.1f%% of copy\n", kernel.c_str(),
              shape.c_str(), ms * 1e3, gbps, 100 * gbps / g_copy_gbps);
  std::fflush(stdout);
}
void AddFlopRow(const std::string& kernel, const std::string& shape, double ms, double flops) {
  const double tflops = flops / (ms * 1e-3) / 1e12;
  g_rows.push_back({kernel, shape, ms * 1e3, tflops, "TFLOP/s", tflops / g_gemm_tflops});
  std::printf("  %-28s %-40s %10.1f us %8.1f TFLOP/s  %5.1f%% of GEMM\n", kernel.c_str(),
              shape.c_str(), ms * 1e3, tflops, 100 * tflops / g_gemm_tflops);
  std::fflush(stdout);
}

void MeasureLimits() {
  const bench::DeviceLimits limits = bench::MeasureDeviceLimits(g_iters);
  g_copy_gbps = limits.copy_gbps;
  g_gemm_tflops = limits.gemm_tflops;
  std::printf("limits: copy %.0f GB/s (read + write), bf16 GEMM %.0f TFLOP/s (8192^3 cuBLAS)\n",
              g_copy_gbps, g_gemm_tflops);
}

void BenchElementwise() {
  const int n = 8192;  // tokens: a prefill chunk
  const size_t act = size_t{1} * n * kHidden;
  DeviceBuffer x(act * 2), res(act * 2), out(act * 2), w(kHidden * 2);
  FillBf16(x.ptr, act, 1.0f, 3);
  FillBf16(res.ptr, act, 1.0f, 4);
  FillBf16(w.ptr, kHidden, 1.0f, 5);
  std::vector<int32_t> tokens(n), positions(n);
  std::mt19937 rng(6);
  for (int i = 0; i < n; ++i) {
    tokens[i] = static_cast<int32_t>(rng() % kVocab);
    positions[i] = i;
  }
  DeviceBuffer d_tokens(n * 4), d_pos(n * 4), table(size_t{2} * kVocab * kHidden);
  Upload(d_tokens.ptr, tokens);
  Upload(d_pos.ptr, positions);
  FillBf16(table.ptr, size_t{1} * kVocab * kHidden, 1.0f, 7);
  const std::string shape = std::to_string(n) + " tok x " + std::to_string(kHidden);

  double ms = TimeMs([&] {
    CHECK_KERNEL(EmbeddingGather(d_tokens.as<int32_t>(), table.as<Bf16>(), out.as<Bf16>(), n,
                                 kHidden, kVocab, nullptr));
  });
  AddBandwidthRow("embedding_gather", shape, ms, 2.0 * act * 2);
  ms = TimeMs([&] {
    CHECK_KERNEL(RmsNormResidual(x.as<Bf16>(), res.as<Bf16>(), w.as<Bf16>(), out.as<Bf16>(), n,
                                 kHidden, 1e-5f, nullptr));
  });
  AddBandwidthRow("rmsnorm_residual", shape, ms, 4.0 * act * 2);

  const reference::RopeParams rope{.theta = 500000.0f, .llama3 = true, .factor = 32.0f};
  const auto inv_freq = reference::RopeInvFreq(rope, kHeadDim);
  DeviceBuffer d_freq(inv_freq.size() * 4), q(size_t{2} * n * kHeads * kHeadDim),
      k(size_t{2} * n * kKvHeads * kHeadDim), v(size_t{2} * n * kKvHeads * kHeadDim);
  Upload(d_freq.ptr, inv_freq);
  FillBf16(q.ptr, size_t{1} * n * kHeads * kHeadDim, 1.0f, 8);
  FillBf16(k.ptr, size_t{1} * n * kKvHeads * kHeadDim, 1.0f, 9);
  FillBf16(v.ptr, size_t{1} * n * kKvHeads * kHeadDim, 1.0f, 10);
  ms = TimeMs([&] {
    CHECK_KERNEL(ApplyRope(q.as<Bf16>(), k.as<Bf16>(), d_pos.as<int32_t>(), d_freq.as<float>(), n,
                           kHeads, kKvHeads, kHeadDim, nullptr));
  });
  AddBandwidthRow("rope_llama3", std::to_string(n) + " tok x (32+8) x 64", ms,
                  2.0 * n * (kHeads + kKvHeads) * kHeadDim * 2);

  DeviceBuffer gate_up(size_t{2} * n * 2 * kInter), act_out(size_t{2} * n * kInter);
  FillBf16(gate_up.ptr, size_t{2} * n * kInter, 1.0f, 11);
  ms = TimeMs(
      [&] { CHECK_KERNEL(SwiGlu(gate_up.as<Bf16>(), act_out.as<Bf16>(), n, kInter, nullptr)); });
  AddBandwidthRow("swiglu", std::to_string(n) + " tok x " + std::to_string(kInter), ms,
                  3.0 * n * kInter * 2);

  const int max_blocks = n / kKvBlockSize;
  std::vector<int32_t> table_ids(max_blocks), starts = {0, n};
  std::iota(table_ids.begin(), table_ids.end(), 0);
  std::shuffle(table_ids.begin(), table_ids.end(), rng);
  DeviceBuffer d_table(max_blocks * 4), d_starts(8);
  DeviceBuffer kc(size_t{2} * n * kKvHeads * kHeadDim), vc(size_t{2} * n * kKvHeads * kHeadDim);
  Upload(d_table.ptr, table_ids);
  Upload(d_starts.ptr, starts);
  ms = TimeMs([&] {
    CHECK_KERNEL(KvAppend(k.as<Bf16>(), v.as<Bf16>(), d_pos.as<int32_t>(), d_starts.as<int32_t>(),
                          d_table.as<int32_t>(), kc.as<Bf16>(), vc.as<Bf16>(), n, 1, max_blocks,
                          kKvHeads, kHeadDim, nullptr));
  });
  AddBandwidthRow("kv_append", std::to_string(n) + " tok x 8 x 64", ms,
                  2.0 * 2 * n * kKvHeads * kHeadDim * 2);
}

// A KV pool with `num_blocks` random blocks (one layer).
// [num_blocks, 16, kv_heads, head_dim] K and V pools of random values: bf16,
// or fp8 e4m3 of magnitude below 2 (the top exponent bit clear, so never
// e4m3's NaN; one 1 MiB random block copied over the pool).
struct KvPool {
  DeviceBuffer k, v;
  explicit KvPool(int num_blocks, int kv_heads = kKvHeads, int head_dim = kHeadDim,
                  KvDtype dtype = KvDtype::kBf16)
      : k(ElementBytes(dtype) * num_blocks * kKvBlockSize * kv_heads * head_dim),
        v(ElementBytes(dtype) * num_blocks * kKvBlockSize * kv_heads * head_dim) {
    const size_t n = size_t{1} * num_blocks * kKvBlockSize * kv_heads * head_dim;
    if (dtype == KvDtype::kBf16) {
      FillBf16(k.ptr, n, 1.0f, 21);
      FillBf16(v.ptr, n, 1.0f, 22);
      return;
    }
    std::vector<uint8_t> block(std::min<size_t>(n, size_t{1} << 20));
    std::mt19937 rng(25);
    for (uint8_t& b : block) b = static_cast<uint8_t>(rng() & 0xbf);
    for (DeviceBuffer* pool : {&k, &v}) {
      for (size_t at = 0; at < n; at += block.size()) {
        CHECK_CUDA(cudaMemcpy(static_cast<uint8_t*>(pool->ptr) + at, block.data(),
                              std::min(block.size(), n - at), cudaMemcpyHostToDevice));
      }
    }
  }
  static size_t ElementBytes(KvDtype dtype) { return dtype == KvDtype::kBf16 ? 2 : 1; }
};
// K + V bytes of one token, bf16.
constexpr double KvBytesPerToken(int kv_heads, int head_dim) {
  return 2.0 * kv_heads * head_dim * 2;
}
constexpr double kKvBytesPerToken = KvBytesPerToken(kKvHeads, kHeadDim);

// Paged decode attention of the 1B model's shape, then of two larger
// models' (Llama-3.1-8B: 32/8 heads x 128; 64/8 x 64, GQA 8), batch
// 1 also at a short context (grids smaller than the GPU: wide CTAs).
void BenchDecode() {
  struct Case {
    int heads, kv_heads, dim, batch, ctx;
  };
  const Case cases[] = {{kHeads, kKvHeads, kHeadDim, 1, 16384},
                        {kHeads, kKvHeads, kHeadDim, 8, 4096},
                        {kHeads, kKvHeads, kHeadDim, 64, 2048},
                        {kHeads, kKvHeads, kHeadDim, 256, 1024},
                        {kHeads, kKvHeads, kHeadDim, 1, 2048},
                        {32, 8, 128, 1, 16384},
                        {32, 8, 128, 1, 2048},
                        {32, 8, 128, 8, 4096},
                        {64, 8, 64, 1, 2048}};
  for (const Case& c : cases) {
    const int batch = c.batch, ctx = c.ctx;
    const int max_blocks = ctx / kKvBlockSize;
    const int num_blocks = batch * max_blocks;
    KvPool pool(num_blocks, c.kv_heads, c.dim);
    std::vector<int32_t> ids(num_blocks), lens(batch, ctx);
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937 rng(23);
    std::shuffle(ids.begin(), ids.end(), rng);
    const AttentionShape shape{.num_heads = c.heads,
                               .num_kv_heads = c.kv_heads,
                               .head_dim = c.dim,
                               .scale = 1.0f / std::sqrt(static_cast<float>(c.dim)),
                               .max_blocks = max_blocks};
    DeviceBuffer d_tables(ids.size() * 4), d_lens(batch * 4);
    Upload(d_tables.ptr, ids);
    Upload(d_lens.ptr, lens);
    const size_t q_elems = size_t{1} * batch * c.heads * c.dim;
    DeviceBuffer q(2 * q_elems), out(2 * q_elems);
    FillBf16(q.ptr, q_elems, 1.0f, 24);
    DeviceBuffer ws(PagedDecodeWorkspaceBytes(batch, shape, ctx));
    const double ms = TimeMs([&] {
      CHECK_KERNEL(PagedDecodeAttention(q.as<Bf16>(), pool.k.as<Bf16>(), pool.v.as<Bf16>(),
                                        d_tables.as<int32_t>(), d_lens.as<int32_t>(),
                                        out.as<Bf16>(), ws.ptr, batch, ctx, shape, nullptr));
    });
    const bool model_shape = c.heads == kHeads && c.kv_heads == kKvHeads && c.dim == kHeadDim;
    const std::string heads = model_shape
                                  ? ""
                                  : ", " + std::to_string(c.heads) + "/" +
                                        std::to_string(c.kv_heads) + " x " + std::to_string(c.dim);
    const std::string shape_text =
        "batch " + std::to_string(batch) + " x ctx " + std::to_string(ctx) + heads;
    AddBandwidthRow("paged_decode_attention", shape_text, ms,
                    batch * (ctx * KvBytesPerToken(c.kv_heads, c.dim) + 2.0 * 2 * c.heads * c.dim));
    // The same over fp8 pools (half the K/V bytes), both fp8 kernels.
    KvPool pool8(num_blocks, c.kv_heads, c.dim, KvDtype::kFp8E4m3);
    AttentionShape shape8 = shape;
    shape8.kv_dtype = KvDtype::kFp8E4m3;
    for (const auto& [kernel, name] :
         {std::pair{Fp8DecodeKernel::kCudaCores, "paged_decode fp8 (CUDA cores)"},
          std::pair{Fp8DecodeKernel::kMmaSync, "paged_decode fp8 (mma.sync)"}}) {
      const Fp8DecodeKernel previous = SetFp8DecodeKernel(kernel);
      const double ms8 = TimeMs([&] {
        CHECK_KERNEL(PagedDecodeAttention(q.as<Bf16>(), pool8.k.as<Fp8E4m3>(),
                                          pool8.v.as<Fp8E4m3>(), d_tables.as<int32_t>(),
                                          d_lens.as<int32_t>(), out.as<Bf16>(), ws.ptr, batch, ctx,
                                          shape8, nullptr));
      });
      SetFp8DecodeKernel(previous);
      AddBandwidthRow(name, shape_text, ms8,
                      batch * (ctx * KvBytesPerToken(c.kv_heads, c.dim) / 2 +
                               2.0 * 2 * c.heads * c.dim));
    }
  }
}

// 64 branches after a shared prompt, each with its own 256-token suffix:
// plain per-branch attention reads the prompt 64 times, the cascade once.
void BenchSharedPrefix() {
  const int branches = 64, suffix = 256;
  for (int prefix : {1024, 4096, 16384}) {
    const int ctx = prefix + suffix;
    const int max_blocks = ctx / kKvBlockSize;
    const int prefix_blocks = prefix / kKvBlockSize, suffix_blocks = suffix / kKvBlockSize;
    // Unique blocks: the prompt once plus each branch's suffix.
    const int num_blocks = prefix_blocks + branches * suffix_blocks;
    KvPool pool(num_blocks);
    std::vector<int32_t> tables(size_t{1} * branches * max_blocks), lens(branches, ctx),
        begins(branches, prefix), positions(branches, ctx - 1), group_starts = {0, branches},
                                                                group_len = {prefix};
    for (int b = 0; b < branches; ++b) {
      for (int i = 0; i < prefix_blocks; ++i) tables[b * max_blocks + i] = i;
      for (int i = 0; i < suffix_blocks; ++i) {
        tables[b * max_blocks + prefix_blocks + i] = prefix_blocks + b * suffix_blocks + i;
      }
    }
    AttentionShape shape{.num_heads = kHeads,
                         .num_kv_heads = kKvHeads,
                         .head_dim = kHeadDim,
                         .scale = 0.125f,
                         .max_blocks = max_blocks};
    DeviceBuffer d_tables(tables.size() * 4), d_lens(branches * 4), d_begins(branches * 4),
        d_pos(branches * 4), d_gstarts(8), d_glen(4);
    Upload(d_tables.ptr, tables);
    Upload(d_lens.ptr, lens);
    Upload(d_begins.ptr, begins);
    Upload(d_pos.ptr, positions);
    Upload(d_gstarts.ptr, group_starts);
    Upload(d_glen.ptr, group_len);
    const size_t rows = size_t{1} * branches * kHeads;
    DeviceBuffer q(rows * kHeadDim * 2), out(rows * kHeadDim * 2);
    FillBf16(q.ptr, rows * kHeadDim, 1.0f, 25);

    DeviceBuffer ws(PagedDecodeWorkspaceBytes(branches, shape, ctx));
    const double plain_ms = TimeMs([&] {
      CHECK_KERNEL(PagedDecodeAttention(q.as<Bf16>(), pool.k.as<Bf16>(), pool.v.as<Bf16>(),
                                        d_tables.as<int32_t>(), d_lens.as<int32_t>(),
                                        out.as<Bf16>(), ws.ptr, branches, ctx, shape, nullptr));
    });
    const std::string shape_text = "64 br, prefix " + std::to_string(prefix) + " + 256 own";
    // Both rows count the UNIQUE KV bytes (prompt once + suffixes): the plain
    // kernel re-reads the shared blocks per branch, mostly from L2.
    const double unique_bytes = (prefix + branches * suffix) * kKvBytesPerToken;
    AddBandwidthRow("plain_decode (per branch)", shape_text + ", unique bytes", plain_ms,
                    unique_bytes);
    double cascade_ms = 0;
    // The cascade with each group-attention kernel, the default first (on a
    // GPU other than sm_90 both rows run the mma.sync kernel).
    const GroupAttentionKernel default_kernel =
        SetGroupAttentionKernel(GroupAttentionKernel::kWgmma);
    for (const auto& [kernel, name] : {std::pair{GroupAttentionKernel::kWgmma, "wgmma"},
                                       std::pair{GroupAttentionKernel::kMmaSync, "mma.sync"}}) {
      SetGroupAttentionKernel(kernel);
      const SplitPlan prefix_plan = PlanGroupAttentionSplits(prefix, branches, 1, shape);
      const SplitPlan suffix_plan = PlanSplits(suffix, branches * kKvHeads, kKvBlockSize);
      const int parts = prefix_plan.num_splits + suffix_plan.num_splits;
      DeviceBuffer o_parts(parts * rows * kHeadDim * 4), lse_parts(parts * rows * 4);
      auto prefix_stage = [&] {
        CHECK_KERNEL(GroupAttentionPartial(
            q.as<Bf16>(), d_pos.as<int32_t>(), d_gstarts.as<int32_t>(), d_tables.as<int32_t>(),
            d_glen.as<int32_t>(), pool.k.as<Bf16>(), pool.v.as<Bf16>(), o_parts.as<float>(),
            lse_parts.as<float>(), branches, 1, branches, shape, prefix_plan.split_len,
            prefix_plan.num_splits, nullptr));
      };
      auto suffix_stage = [&] {
        CHECK_KERNEL(DecodeAttentionPartial(
            q.as<Bf16>(), pool.k.as<Bf16>(), pool.v.as<Bf16>(), d_tables.as<int32_t>(),
            d_begins.as<int32_t>(), d_lens.as<int32_t>(),
            o_parts.as<float>() + prefix_plan.num_splits * rows * kHeadDim,
            lse_parts.as<float>() + prefix_plan.num_splits * rows, branches, shape,
            suffix_plan.split_len, suffix_plan.num_splits, nullptr));
      };
      auto merge_stage = [&] {
        CHECK_KERNEL(MergeAttentionStates(o_parts.as<float>(), lse_parts.as<float>(),
                                          out.as<Bf16>(), nullptr, parts, branches, kHeads,
                                          kHeadDim, nullptr));
      };
      const double ms = TimeMs([&] {
        prefix_stage();
        suffix_stage();
        merge_stage();
      });
      if (kernel == GroupAttentionKernel::kWgmma) cascade_ms = ms;
      const std::string with = std::string(", ") + name;
      AddBandwidthRow("cascade_decode (prefix once)" + with, shape_text + ", unique bytes", ms,
                      unique_bytes);
      AddFlopRow("  cascade: prefix stage" + with,
                 shape_text + " (" + std::to_string(prefix_plan.num_splits) + " splits)",
                 TimeMs(prefix_stage), 4.0 * kHeadDim * kHeads * branches * prefix);
      if (kernel == GroupAttentionKernel::kWgmma) {
        AddBandwidthRow("  cascade: suffix stage", shape_text, TimeMs(suffix_stage),
                        branches * suffix * kKvBytesPerToken);
      }
      AddBandwidthRow("  cascade: merge" + with, std::to_string(parts) + " parts",
                      TimeMs(merge_stage),
                      parts * rows * (kHeadDim + 1) * 4.0 + rows * kHeadDim * 2.0);
      // The longest prompt's prefix stage at other split counts than the
      // plan's, to check PlanGroupAttentionSplits against (the merge grows
      // with the splits: rows above).
      if (prefix == 16384) {
        constexpr int kMaxSplits = 32;
        DeviceBuffer sweep_o(size_t{kMaxSplits} * rows * kHeadDim * 4),
            sweep_lse(size_t{kMaxSplits} * rows * 4);
        for (int splits : {4, 8, 16, kMaxSplits}) {
          if (splits == prefix_plan.num_splits) continue;
          const int split_len = prefix / splits;
          const double split_ms = TimeMs([&] {
            CHECK_KERNEL(GroupAttentionPartial(
                q.as<Bf16>(), d_pos.as<int32_t>(), d_gstarts.as<int32_t>(), d_tables.as<int32_t>(),
                d_glen.as<int32_t>(), pool.k.as<Bf16>(), pool.v.as<Bf16>(), sweep_o.as<float>(),
                sweep_lse.as<float>(), branches, 1, branches, shape, split_len, splits, nullptr));
          });
          AddFlopRow("    prefix stage" + with,
                     shape_text + " (" + std::to_string(splits) + " splits, not the plan's)",
                     split_ms, 4.0 * kHeadDim * kHeads * branches * prefix);
        }
      }
    }
    SetGroupAttentionKernel(default_kernel);
    std::printf(
        "    -> cascade (wgmma) %.2fx faster than plain; %d unique KV blocks (plain layout "
        "would need %d)\n",
        plain_ms / cascade_ms, num_blocks, branches * max_blocks);
  }
}

void BenchPrefill() {
  for (int dim : {64, 128}) {
    const int n = 8192, heads = dim == 64 ? kHeads : 16, kv_heads = dim == 64 ? kKvHeads : 8;
    const int max_blocks = n / kKvBlockSize;
    const size_t kv_elems = size_t{1} * max_blocks * kKvBlockSize * kv_heads * dim;
    DeviceBuffer k(kv_elems * 2), v(kv_elems * 2), q(size_t{2} * n * heads * dim),
        out(size_t{2} * n * heads * dim);
    FillBf16(k.ptr, kv_elems, 1.0f, 31);
    FillBf16(v.ptr, kv_elems, 1.0f, 32);
    FillBf16(q.ptr, size_t{1} * n * heads * dim, 1.0f, 33);
    std::vector<int32_t> ids(max_blocks), positions(n), starts = {0, n}, lens = {n};
    std::iota(ids.begin(), ids.end(), 0);
    std::iota(positions.begin(), positions.end(), 0);
    DeviceBuffer d_tables(max_blocks * 4), d_pos(n * 4), d_starts(8), d_lens(4);
    Upload(d_tables.ptr, ids);
    Upload(d_pos.ptr, positions);
    Upload(d_starts.ptr, starts);
    Upload(d_lens.ptr, lens);
    const AttentionShape shape{.num_heads = heads,
                               .num_kv_heads = kv_heads,
                               .head_dim = dim,
                               .scale = 1.0f / std::sqrt(static_cast<float>(dim)),
                               .max_blocks = max_blocks};
    auto prefill = [&] {
      CHECK_KERNEL(PrefillAttention(q.as<Bf16>(), d_pos.as<int32_t>(), d_starts.as<int32_t>(),
                                    d_tables.as<int32_t>(), d_lens.as<int32_t>(), k.as<Bf16>(),
                                    v.as<Bf16>(), out.as<Bf16>(), n, 1, n, shape, nullptr));
    };
    // Causal: n (n + 1) / 2 query-key pairs, 4 * dim FLOPs each (QK^T and PV).
    const double flops = 4.0 * dim * heads * (n * (n + 1.0) / 2);
    const std::string shape_text = "8192 tok, " + std::to_string(heads) + "/" +
                                   std::to_string(kv_heads) + " x " + std::to_string(dim);
    AddFlopRow("prefill_attention (causal)", shape_text, TimeMs(prefill), flops);
    if (dim == 64) {  // where the default is the wgmma kernel on sm_90
      const GroupAttentionKernel default_kernel =
          SetGroupAttentionKernel(GroupAttentionKernel::kMmaSync);
      AddFlopRow("  prefill_attention, mma.sync", shape_text, TimeMs(prefill), flops);
      SetGroupAttentionKernel(default_kernel);
    }
  }
}

// Decode-sized linear layers of the 1B model: SmallBatchGemm against cuBLAS
// on the same operands; bytes = the weight matrix (x and y are noise).
void BenchSmallBatchGemm() {
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) std::exit(1);
  struct Shape {
    const char* name;
    int n, k;
    bool fp32_out;
  };
  const Shape shapes[] = {{"q_proj", 2048, kHidden, false},
                          {"k_proj", 512, kHidden, false},
                          {"gate_up", 2 * kInter, kHidden, false},
                          {"down", kHidden, kInter, false},
                          {"lm_head (fp32 out)", kVocab, kHidden, true}};
  for (const Shape& sh : shapes) {
    DeviceBuffer w(size_t{2} * sh.n * sh.k), x(size_t{2} * 4 * sh.k), y(size_t{4} * 4 * sh.n);
    FillBf16(w.ptr, size_t{1} * sh.n * sh.k, 0.05f, 21);
    FillBf16(x.ptr, size_t{4} * sh.k, 1.0f, 22);
    for (int m : {1, 4}) {
      const std::string shape = std::string(sh.name) + " " + std::to_string(m) + " x " +
                                std::to_string(sh.n) + " x " + std::to_string(sh.k);
      const double bytes = 2.0 * sh.n * sh.k;
      double ms = TimeMs([&] {
        CHECK_KERNEL(SmallBatchGemm(static_cast<const Bf16*>(x.ptr),
                                    static_cast<const Bf16*>(w.ptr), y.ptr, m, sh.n, sh.k,
                                    sh.fp32_out, nullptr));
      });
      AddBandwidthRow("small_batch_gemm", shape, ms, bytes);
      const float alpha = 1.0f, beta = 0.0f;
      ms = TimeMs([&] {
        cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, sh.n, m, sh.k, &alpha, w.ptr, CUDA_R_16BF,
                     sh.k, x.ptr, CUDA_R_16BF, sh.k, &beta, y.ptr,
                     sh.fp32_out ? CUDA_R_32F : CUDA_R_16BF, sh.n, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
      });
      AddBandwidthRow("  cublasGemmEx (same)", shape, ms, bytes);
    }
  }
  cublasDestroy(handle);

  // The fused gate/up + SwiGLU epilogue against the two launches it replaces,
  // one row.
  DeviceBuffer w(size_t{2} * 2 * kInter * kHidden), x(size_t{2} * kHidden),
      y(size_t{2} * 2 * kInter), act(size_t{2} * kInter);
  FillBf16(w.ptr, size_t{2} * kInter * kHidden, 0.05f, 23);
  FillBf16(x.ptr, kHidden, 1.0f, 24);
  const auto* wp = static_cast<const Bf16*>(w.ptr);
  const auto* xp = static_cast<const Bf16*>(x.ptr);
  auto* yp = static_cast<Bf16*>(y.ptr);
  const double gate_up_bytes = 2.0 * 2 * kInter * kHidden;
  SmallBatchInput in;
  in.x = xp;
  double ms = TimeMs([&] {
    CHECK_KERNEL(
        SmallBatchGateUpSwiGlu(in, wp, static_cast<Bf16*>(act.ptr), 1, kInter, kHidden, nullptr));
  });
  AddBandwidthRow("small_batch_gate_up_swiglu", "1 x 16384 x 2048", ms, gate_up_bytes);
  ms = TimeMs([&] {
    CHECK_KERNEL(SmallBatchGemm(xp, wp, yp, 1, 2 * kInter, kHidden, false, nullptr));
    CHECK_KERNEL(SwiGlu(yp, static_cast<Bf16*>(act.ptr), 1, kInter, nullptr));
  });
  AddBandwidthRow("  small_batch_gemm + swiglu", "1 x 16384 x 2048", ms, gate_up_bytes);
}

void BenchSampling() {
  const int rows = 64;
  std::vector<float> logits(size_t{1} * rows * kVocab);
  std::mt19937 rng(41);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (float& x : logits) x = dist(rng);
  DeviceBuffer d_logits(logits.size() * 4), d_params(rows * sizeof(SampleParams)),
      d_tokens(rows * 4), d_logprobs(rows * 4);
  Upload(d_logits.ptr, logits);
  struct Case {
    const char* name;
    float temperature, top_p;
    int top_k;
  };
  for (const Case& c : {Case{"greedy", 0.0f, 1.0f, 0}, Case{"temperature 0.8", 0.8f, 1.0f, 0},
                        Case{"T 0.8, top-p 0.95", 0.8f, 0.95f, 0},
                        Case{"T 0.8, top-k 50, top-p 0.9", 0.8f, 0.9f, 50}}) {
    std::vector<SampleParams> params(rows);
    for (int r = 0; r < rows; ++r) {
      params[r] = SampleParams{.temperature = c.temperature,
                               .top_p = c.top_p,
                               .top_k = c.top_k,
                               .seed = 7,
                               .stream = static_cast<uint64_t>(r),
                               .position = 100};
    }
    Upload(d_params.ptr, params);
    DeviceBuffer workspace(std::max<size_t>(SampleWorkspaceBytes(rows, kVocab), 1));
    const double ms = TimeMs([&] {
      CHECK_KERNEL(SampleTokens(d_logits.as<float>(), d_params.as<SampleParams>(),
                                d_tokens.as<int32_t>(), d_logprobs.as<float>(), rows, kVocab,
                                workspace.ptr, nullptr));
    });
    AddBandwidthRow(std::string("sample: ") + c.name, "64 rows x 128256 (logits read once)", ms,
                    4.0 * rows * kVocab);
  }
}

}  // namespace
}  // namespace arbor::kernels

int main(int argc, char** argv) {
  using namespace arbor::kernels;
  // --only=a,b runs just those sections: elementwise, decode, shared_prefix,
  // prefill, small_batch_gemm, sampling.
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      g_iters = 5;
    } else if (std::strncmp(argv[i], "--only=", 7) == 0) {
      only = std::string(",") + (argv[i] + 7) + ",";
    } else {
      const bool help = std::strcmp(argv[i], "--help") == 0;
      if (!help) std::fprintf(stderr, "kernels_bench: unknown flag %s\n", argv[i]);
      std::fprintf(help ? stdout : stderr,
                   "usage: kernels_bench [--quick] [--only=SECTION,...]\n  sections: elementwise, "
                   "decode, shared_prefix, prefill, small_batch_gemm, sampling\n");
      return help ? 0 : 2;
    }
  }
  auto wanted = [&](const char* section) {
    return only.empty() || only.find(std::string(",") + section + ",") != std::string::npos;
  };
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("kernels_bench: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  MeasureLimits();
  if (wanted("elementwise")) BenchElementwise();
  if (wanted("decode")) BenchDecode();
  if (wanted("shared_prefix")) BenchSharedPrefix();
  if (wanted("prefill")) BenchPrefill();
  if (wanted("small_batch_gemm")) BenchSmallBatchGemm();
  if (wanted("sampling")) BenchSampling();
  std::printf("\n| kernel | shape | time (us) | achieved | of limit |\n|---|---|---|---|---|\n");
  for (const Row& r : g_rows) {
    std::printf("| %s | %s | %.1f | %.0f %s | %.0f%% |\n", r.kernel.c_str(), r.shape.c_str(), r.us,
                r.rate, r.unit, 100 * r.fraction);
  }
  std::printf("\nlimits: copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s on %s\n", g_copy_gbps,
              g_gemm_tflops, prop.name);
  return 0;
}
