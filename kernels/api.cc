// kernels/kernels.h on top of the CUDA-typed launchers: casts the opaque
// stream, maps cudaError_t to KernelStatus, and composes the multi-kernel
// operations (plain paged decode = split decode + merge).
#include <algorithm>
#include <atomic>

#include "kernels/kernels.h"
#include "kernels/launchers.h"

namespace arbor::kernels {
namespace {

inline cudaStream_t AsStream(Stream stream) { return static_cast<cudaStream_t>(stream); }
inline KernelStatus ToStatus(cudaError_t error) { return KernelStatus(static_cast<int>(error)); }

}  // namespace

const char* KernelStatus::message() const {
  return cudaGetErrorString(static_cast<cudaError_t>(code_));
}

DeviceCapability CurrentDeviceCapability() {
  static thread_local int cached_device = -1;
  static thread_local DeviceCapability cached;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return DeviceCapability{};
  if (device != cached_device) {
    DeviceCapability c;
    int value = 0;
    if (cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, device) == cudaSuccess) {
      c.sm_count = std::max(value, 1);
    }
    if (cudaDeviceGetAttribute(&value, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess) {
      c.major = value;
    }
    if (cudaDeviceGetAttribute(&value, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess) {
      c.minor = value;
    }
    cached_device = device;
    cached = c;
  }
  return cached;
}

int DeviceSmCount() { return CurrentDeviceCapability().sm_count; }

namespace {
std::atomic<bool> dependent_launch_requested{true};
}  // namespace

void SetDependentLaunch(bool enabled) { dependent_launch_requested.store(enabled); }

bool DependentLaunchEnabled() {
  return dependent_launch_requested.load(std::memory_order_relaxed) &&
         CurrentDeviceCapability().major >= 9;
}

namespace {
std::atomic<GroupAttentionKernel> group_attention_kernel{GroupAttentionKernel::kWgmma};
}  // namespace

GroupAttentionKernel SetGroupAttentionKernel(GroupAttentionKernel kernel) {
  return group_attention_kernel.exchange(kernel);
}

GroupAttentionKernel RequestedGroupAttentionKernel() {
  return group_attention_kernel.load(std::memory_order_relaxed);
}

SplitPlan PlanSplits(int max_len, int num_rows_ctas, int granule, int ctas_per_sm) {
  SplitPlan plan;
  const int max_granules = std::max(1, (max_len + granule - 1) / granule);
  // About one wave of CTAs (ctas_per_sm: what the kernel's registers and
  // shared memory allow); splits not so short that the merge and the
  // per-split setup dominate.
  const int want_ctas = std::max(ctas_per_sm, 1) * DeviceSmCount();
  int splits = std::max(1, want_ctas / std::max(num_rows_ctas, 1));
  // At least 16 decode pages (below that the merge launch costs more than
  // the split saves: a 256-key split takes a CTA about as long as the merge
  // kernel), or 2 group-attention tiles (whose loads overlap).
  const int min_granules = granule >= 64 ? 2 : 16;
  splits = std::min(splits, std::max(1, max_granules / min_granules));
  const int granules_per_split = (max_granules + splits - 1) / splits;
  plan.split_len = granules_per_split * granule;
  plan.num_splits = (max_granules + granules_per_split - 1) / granules_per_split;
  return plan;
}

SplitPlan PlanGroupAttentionSplits(int max_kv_len, int max_group_tokens, int num_groups,
                                   const AttentionShape& shape) {
  const GroupAttentionGeometry g = GroupAttentionGeometryFor(shape);
  const int gqa = shape.num_kv_heads > 0 ? std::max(shape.num_heads / shape.num_kv_heads, 1) : 1;
  const long long row_ctas =
      static_cast<long long>((std::max(max_group_tokens, 1) * gqa + g.rows_per_cta - 1) /
                             g.rows_per_cta) *
      std::max(num_groups, 1) * std::max(shape.num_kv_heads, 1);
  return PlanSplits(std::max(max_kv_len, 1),
                    static_cast<int>(std::min<long long>(row_ctas, 1 << 30)), g.tile_keys,
                    g.ctas_per_sm);
}

KernelStatus EmbeddingGather(const int32_t* tokens, const Bf16* table, Bf16* out, int num_tokens,
                             int hidden, int vocab, Stream stream) {
  return ToStatus(
      LaunchEmbeddingGather(tokens, table, out, num_tokens, hidden, vocab, AsStream(stream)));
}

KernelStatus RmsNormResidual(const Bf16* x, Bf16* residual, const Bf16* weight, Bf16* out,
                             int num_tokens, int hidden, float eps, Stream stream) {
  return ToStatus(
      LaunchRmsNormResidual(x, residual, weight, out, num_tokens, hidden, eps, AsStream(stream)));
}

KernelStatus ApplyRope(Bf16* q, Bf16* k, const int32_t* positions, const float* inv_freq,
                       int num_tokens, int num_heads, int num_kv_heads, int head_dim,
                       Stream stream) {
  return ToStatus(LaunchApplyRope(q, k, positions, inv_freq, num_tokens, num_heads, num_kv_heads,
                                  head_dim, AsStream(stream)));
}

KernelStatus SwiGlu(const Bf16* gate_up, Bf16* out, int num_tokens, int inter, Stream stream) {
  return ToStatus(LaunchSwiGlu(gate_up, out, num_tokens, inter, AsStream(stream)));
}

KernelStatus AddBias(Bf16* x, const Bf16* bias, int num_rows, int dim, Stream stream) {
  return ToStatus(LaunchAddBias(x, bias, num_rows, dim, AsStream(stream)));
}

KernelStatus CopyKvBlocks(Bf16* k_cache, Bf16* v_cache, const int32_t* src_dst, int num_pairs,
                          int block_elems, Stream stream) {
  return ToStatus(
      LaunchCopyKvBlocks(k_cache, v_cache, src_dst, num_pairs, block_elems, AsStream(stream)));
}

KernelStatus KvAppend(const Bf16* k, const Bf16* v, const int32_t* positions,
                      const int32_t* seq_starts, const int32_t* block_tables, Bf16* k_cache,
                      Bf16* v_cache, int num_tokens, int num_seqs, int max_blocks, int num_kv_heads,
                      int head_dim, Stream stream) {
  return ToStatus(LaunchKvAppend(k, v, positions, seq_starts, block_tables, k_cache, v_cache,
                                 num_tokens, num_seqs, max_blocks, num_kv_heads, head_dim,
                                 AsStream(stream)));
}

KernelStatus DecodeAttentionPartial(const Bf16* q, const Bf16* k_cache, const Bf16* v_cache,
                                    const int32_t* block_tables, const int32_t* kv_begin,
                                    const int32_t* kv_end, float* o_part, float* lse_part,
                                    int num_seqs, const AttentionShape& shape, int split_len,
                                    int num_splits, Stream stream) {
  return ToStatus(LaunchDecodeAttention(q, k_cache, v_cache, block_tables, kv_begin, kv_end, o_part,
                                        lse_part, nullptr, num_seqs, shape, split_len, num_splits,
                                        AsStream(stream)));
}

KernelStatus MergeAttentionStates(const float* o_parts, const float* lse_parts, Bf16* out,
                                  float* lse_out, int num_parts, int num_rows, int num_heads,
                                  int head_dim, Stream stream) {
  return ToStatus(LaunchMergeAttentionStates(o_parts, lse_parts, out, lse_out, num_parts, num_rows,
                                             num_heads, head_dim, AsStream(stream)));
}

KernelStatus GroupAttentionPartial(const Bf16* q, const int32_t* positions,
                                   const int32_t* group_starts, const int32_t* block_tables,
                                   const int32_t* kv_len, const Bf16* k_cache, const Bf16* v_cache,
                                   float* o_part, float* lse_part, int num_tokens, int num_groups,
                                   int max_group_tokens, const AttentionShape& shape, int split_len,
                                   int num_splits, Stream stream) {
  return ToStatus(LaunchGroupAttention(
      q, positions, group_starts, block_tables, kv_len, k_cache, v_cache, o_part, lse_part, nullptr,
      num_tokens, num_groups, max_group_tokens, shape, split_len, num_splits, AsStream(stream)));
}

KernelStatus PrefillAttention(const Bf16* q, const int32_t* positions, const int32_t* seq_starts,
                              const int32_t* block_tables, const int32_t* context_lens,
                              const Bf16* k_cache, const Bf16* v_cache, Bf16* out, int num_tokens,
                              int num_seqs, int max_seq_tokens, const AttentionShape& shape,
                              Stream stream) {
  return ToStatus(LaunchGroupAttention(
      q, positions, seq_starts, block_tables, context_lens, k_cache, v_cache, nullptr, nullptr, out,
      num_tokens, num_seqs, max_seq_tokens, shape, 1 << 30, 1, AsStream(stream)));
}

namespace {
SplitPlan DecodePlan(int num_seqs, const AttentionShape& shape, int max_context_len) {
  return PlanSplits(max_context_len, num_seqs * std::max(shape.num_kv_heads, 1), kKvBlockSize);
}
}  // namespace

size_t PagedDecodeWorkspaceBytes(int num_seqs, const AttentionShape& shape, int max_context_len) {
  const SplitPlan plan = DecodePlan(num_seqs, shape, max_context_len);
  const size_t rows = static_cast<size_t>(plan.num_splits) * num_seqs * shape.num_heads;
  return rows * (shape.head_dim + 1) * sizeof(float);
}

KernelStatus PagedDecodeAttention(const Bf16* q, const Bf16* k_cache, const Bf16* v_cache,
                                  const int32_t* block_tables, const int32_t* context_lens,
                                  Bf16* out, void* workspace, int num_seqs, int max_context_len,
                                  const AttentionShape& shape, Stream stream) {
  const SplitPlan plan = DecodePlan(num_seqs, shape, max_context_len);
  if (plan.num_splits == 1) {  // enough sequences to fill the device: no merge
    return ToStatus(LaunchDecodeAttention(q, k_cache, v_cache, block_tables, nullptr, context_lens,
                                          nullptr, nullptr, out, num_seqs, shape, plan.split_len, 1,
                                          AsStream(stream)));
  }
  const size_t rows = static_cast<size_t>(plan.num_splits) * num_seqs * shape.num_heads;
  float* o_part = static_cast<float*>(workspace);
  float* lse_part = o_part + rows * shape.head_dim;
  cudaError_t error = LaunchDecodeAttention(
      q, k_cache, v_cache, block_tables, nullptr, context_lens, o_part, lse_part, nullptr, num_seqs,
      shape, plan.split_len, plan.num_splits, AsStream(stream));
  if (error != cudaSuccess) return ToStatus(error);
  return ToStatus(LaunchMergeAttentionStates(o_part, lse_part, out, nullptr, plan.num_splits,
                                             num_seqs, shape.num_heads, shape.head_dim,
                                             AsStream(stream)));
}

KernelStatus SmallBatchGemm(const Bf16* x, const Bf16* w, void* y, int m, int n, int k,
                            bool fp32_out, Stream stream) {
  return ToStatus(LaunchSmallBatchGemm(x, w, y, m, n, k, fp32_out, AsStream(stream)));
}

KernelStatus SmallBatchGemm(const SmallBatchInput& input, const Bf16* w, void* y, int m, int n,
                            int k, bool fp32_out, Stream stream) {
  return ToStatus(LaunchSmallBatchGemmInput(input, w, y, m, n, k, fp32_out, AsStream(stream)));
}

KernelStatus SmallBatchGateUpSwiGlu(const SmallBatchInput& input, const Bf16* w_gate_up, Bf16* out,
                                    int m, int inter, int k, Stream stream) {
  return ToStatus(
      LaunchSmallBatchGateUpSwiGlu(input, w_gate_up, out, m, inter, k, AsStream(stream)));
}

KernelStatus SmallBatchQkvRope(const SmallBatchInput& input, const Bf16* w_qkv, Bf16* q,
                               const QkvRopeKv& rope, int m, int k, Stream stream) {
  return ToStatus(LaunchSmallBatchQkvRope(input, w_qkv, q, rope, m, k, AsStream(stream)));
}

KernelStatus RopeKvAppend(const Bf16* qkv, Bf16* q, const int32_t* positions, const float* inv_freq,
                          const int32_t* seq_starts, const int32_t* block_tables, Bf16* k_cache,
                          Bf16* v_cache, int num_tokens, int num_seqs, int max_blocks,
                          int num_heads, int num_kv_heads, int head_dim, Stream stream) {
  return ToStatus(LaunchRopeKvAppend(qkv, q, positions, inv_freq, seq_starts, block_tables, k_cache,
                                     v_cache, num_tokens, num_seqs, max_blocks, num_heads,
                                     num_kv_heads, head_dim, AsStream(stream)));
}

KernelStatus SampleTokens(const float* logits, const SampleParams* params, int32_t* tokens,
                          float* logprobs, int num_rows, int vocab, void* workspace,
                          Stream stream) {
  return ToStatus(LaunchSampleTokens(logits, params, tokens, logprobs, num_rows, vocab, workspace,
                                     AsStream(stream)));
}

}  // namespace arbor::kernels
