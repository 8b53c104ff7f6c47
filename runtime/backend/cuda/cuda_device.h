// Internal to the CUDA backend (CUDA builds only): the state behind a
// CudaBackend (CudaBackend::Device: stream, cuBLAS handle, weights, KV pool,
// scratch, decode graphs) and the pass-planning helpers that the forward
// pass (forward_pass.cc), the CUDA graphs (cuda_graphs.cc) and Create
// (cuda_backend.cc) share.
//
// Thread-safety: a Device belongs to one CudaBackend and is used only from the
// thread that drives it; the helpers are pure functions.
#ifndef ARBOR_RUNTIME_BACKEND_CUDA_CUDA_DEVICE_H_
#define ARBOR_RUNTIME_BACKEND_CUDA_CUDA_DEVICE_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cascade_plan.h"
#include "kernels/kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/backend/cuda/device_memory.h"
#include "runtime/backend/cuda/weight_upload.h"

// The runtime's blocks are the kernels' blocks: the backend hands RadixKvCache
// block ids and positions straight to kernels that index the pools with
// their own constant (kernels/ cannot include runtime/, so it has its own).
static_assert(arbor::runtime::kKvBlockSize == arbor::kernels::kKvBlockSize,
              "runtime/kv/kv_block.h and kernels/kernels.h disagree on the KV block size");

namespace arbor::runtime {
namespace cuda_internal {

using kernels::Bf16;

inline constexpr int kLogitRowsPerGemm = 256;  // bounds the fp32 logits scratch
// Decode steps plan their attention splits for the context rounded up to
// this (the kernels take it as a bound), so that one CUDA graph serves every
// step of a bucket and the eager path draws exactly what a replay draws.
inline constexpr int kDecodeContextBucket = 256;
inline constexpr int kDecodeBlockBucket = kDecodeContextBucket / kKvBlockSize;
// cuBLAS workspace set explicitly, so that it never allocates inside a capture.
inline constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

inline int RoundUp(int x, int to) { return (x + to - 1) / to * to; }

// A decode step: one new token per sequence (every sequence has at least one).
inline bool IsDecodeStep(const ForwardBatch& b) { return b.num_tokens() == b.num_seqs(); }

// Past the prompt level, a run of branches shares a level of its own when it
// shares at least this many more tokens (one 64-token search step: four
// siblings then read a step's K/V once instead of four times, for one more
// launch per layer).
inline constexpr int kCascadeMinLevelTokens = 64;

// The groups of a decode step whose consecutive sequences share enough of a
// prompt (and, up to max_levels, of their search tree below it) for cascade
// attention; empty (not worthwhile) for other batches.
inline kernels::CascadePlan DecodeCascadePlan(const ForwardBatch& b, int min_shared_tokens,
                                              int max_levels) {
  if (!IsDecodeStep(b) || min_shared_tokens <= 0 || b.num_seqs() < 2) return {};
  return kernels::CascadePlan::Plan(b.block_tables, b.context_lens, b.max_blocks_per_seq,
                                    min_shared_tokens, std::max(max_levels, 1),
                                    kCascadeMinLevelTokens);
}

// Adds a decode step's attention keys under `plan` to `stats` (DecodeStats).
inline void CountDecodeKeys(const ForwardBatch& b, const kernels::CascadePlan& plan,
                            DecodeStats* stats) {
  for (int32_t len : b.context_lens) stats->context_keys += len;
  if (!plan.worthwhile) {
    for (int32_t len : b.context_lens) stats->own_keys += len;
    return;
  }
  for (size_t level = 0; level < plan.levels.size(); ++level) {
    int64_t& shared = level == 0 ? stats->prompt_shared_keys : stats->tree_shared_keys;
    for (int32_t len : plan.levels[level].group_kv_len) shared += len;
  }
  for (int s = 0; s < b.num_seqs(); ++s) stats->own_keys += b.context_lens[s] - plan.suffix_begin[s];
}

// A decode step a CUDA graph can replay: every row wanted, in order.
inline bool IsGraphableDecode(const ForwardBatch& b) {
  const int n = b.num_tokens();
  if (!IsDecodeStep(b) || b.output_rows.size() != static_cast<size_t>(n)) return false;
  for (int s = 0; s < n; ++s) {
    if (b.output_rows[s] != s) return false;
  }
  return true;
}

// What a captured decode step bakes in besides its buffers' addresses: the
// batch shape and padded table width, and for a cascade step the plan's grid
// and split lengths (per level its groups, largest group and longest shared
// run; the group-attention kernel chosen; the suffix bound rounded up to
// kDecodeContextBucket). The plan's groups, lengths and every table ride in
// the uploaded metadata.
struct GraphKey {
  int num_seqs = 0, max_blocks = 0;
  std::vector<int> cascade_levels;  // per level: groups, largest group, max kv_len; empty: none
  int suffix_bound = 0;
  kernels::GroupAttentionKernel group_kernel = kernels::GroupAttentionKernel::kMmaSync;
  auto operator<=>(const GraphKey&) const = default;
};

// Cascade steps bound their suffixes by the longest one rounded up to this,
// so that one graph serves every step of a bucket (see kDecodeContextBucket).
inline int SuffixBound(const kernels::CascadePlan& plan) {
  return RoundUp(std::max(plan.max_suffix, 1), kDecodeContextBucket);
}

}  // namespace cuda_internal

// What a pass uploads to and draws into: the batch metadata, the split
// attention's partials, the sampled tokens (+ the sampler's workspace).
struct CudaBackend::PassBuffers {
  cuda_internal::DeviceBuffer meta, decode_workspace, sampled;
};

// A decode shape's graph (see CudaBackendOptions::cuda_graphs; cuda_graphs.cc).
struct CudaBackend::DecodeGraph {
  PassBuffers buffers;  // its own: a graph holds their addresses
  cudaGraphExec_t exec = nullptr;
  int runs = 0;           // eager runs of this shape before capture
  uint64_t last_use = 0;  // for eviction
  ~DecodeGraph() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
  }
};

// See the header comment.
struct CudaBackend::Device {
  int device = 0;
  int max_batch_tokens = 0;
  int cascade_min_shared_tokens = 0;
  int cascade_max_levels = 1;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cuda_internal::DeviceWeights weights;
  cuda_internal::DeviceBuffer kv_pool;  // [num_layers][K, V][num_blocks * block_elems]
  kernels::KvDtype kv_dtype = kernels::KvDtype::kBf16;  // the pool's elements
  size_t block_elems = 0;                               // kKvBlockSize * num_kv_heads * head_dim
  size_t pool_elems = 0;                                // num_blocks * block_elems
  // Scratch for max_batch_tokens tokens.
  // residual and residual_alt: the residual stream; a decode step's fused
  // GEMV prologues move it from one to the other (see ForwardPass).
  // qkv_rows: the stacked Q/K/V projection of passes too large to fuse it.
  cuda_internal::DeviceBuffer residual, residual_alt, normed, qkv_rows, q, attn, proj, gate_up, act,
      out_rows, logits;
  PassBuffers shared;  // meta, decode workspace, draws of eager passes
  cuda_internal::DeviceBuffer pairs, cublas_workspace;
  cuda_internal::PinnedMeta host_meta;
  std::vector<int32_t> host_sampled;
  std::vector<kernels::Bf16> host_rows;
  bool cuda_graphs = true;
  DecodeStats decode_stats;
  std::map<cuda_internal::GraphKey, std::unique_ptr<DecodeGraph>> graphs;
  uint64_t graph_clock = 0;

  ~Device() {
    graphs.clear();
    if (cublas != nullptr) cublasDestroy(cublas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
  // kernel(k_pool, v_pool) on layer `layer`'s pools as typed pointers
  // (kernels::Bf16* or kernels::Fp8E4m3*, as kv_dtype says): the kernels
  // have an overload for each.
  template <class Kernel>
  auto WithKvPools(int layer, Kernel&& kernel) const {
    if (kv_dtype == kernels::KvDtype::kBf16) {
      kernels::Bf16* base = kv_pool.get<kernels::Bf16>();
      return kernel(base + 2 * layer * pool_elems, base + (2 * layer + 1) * pool_elems);
    }
    kernels::Fp8E4m3* base = kv_pool.get<kernels::Fp8E4m3>();
    return kernel(base + 2 * layer * pool_elems, base + (2 * layer + 1) * pool_elems);
  }

  // Decode-sized GEMMs stream W instead of tiling it (measured on an H200:
  // faster than cuBLAS at one row, and at up to four rows for layers up to
  // 8192 wide).
  static bool StreamsWeights(int m, int n) {
    return m == 1 || (m <= kernels::kSmallBatchGemmMaxRows && n <= 8192);
  }

  // y[m, n] = x[m, k] W[n, k]^T in the Hugging Face Linear layout; bf16 in,
  // bf16 or fp32 out, fp32 accumulation (forward_pass.cc).
  absl::Status Gemm(const kernels::Bf16* x, const kernels::Bf16* w, void* y, int m, int n, int k,
                    bool fp32_out);
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_BACKEND_CUDA_CUDA_DEVICE_H_
