// The CUDA-typed launchers behind kernels/kernels.h: raw device pointers and
// a cudaStream_t in, cudaError_t out. For CUDA code (tests, benchmarks, a
// CUDA backend that already includes the runtime); the engine uses
// kernels/kernels.h. Same contracts as there; stateless, thread-safe.
#ifndef ARBOR_KERNELS_LAUNCHERS_H_
#define ARBOR_KERNELS_LAUNCHERS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/kernels.h"

namespace arbor::kernels {

cudaError_t LaunchEmbeddingGather(const int32_t* tokens,  // [num_tokens]
                                  const Bf16* table,      // [vocab, hidden]
                                  Bf16* out,              // [num_tokens, hidden]
                                  int num_tokens, int hidden, int vocab, cudaStream_t stream);

cudaError_t LaunchRmsNormResidual(const Bf16* x,       // [num_tokens, hidden] or nullptr
                                  Bf16* residual,      // [num_tokens, hidden]
                                  const Bf16* weight,  // [hidden]
                                  Bf16* out,           // [num_tokens, hidden]
                                  int num_tokens, int hidden, float eps, cudaStream_t stream);

cudaError_t LaunchApplyRope(Bf16* q,                   // [num_tokens, num_heads, head_dim]
                            Bf16* k,                   // [num_tokens, num_kv_heads, head_dim]
                            const int32_t* positions,  // [num_tokens]
                            const float* inv_freq,     // [head_dim / 2]
                            int num_tokens, int num_heads, int num_kv_heads, int head_dim,
                            cudaStream_t stream);

cudaError_t LaunchSwiGlu(const Bf16* gate_up,  // [num_tokens, 2 * inter]
                         Bf16* out,            // [num_tokens, inter]
                         int num_tokens, int inter, cudaStream_t stream);

cudaError_t LaunchAddBias(Bf16* x,           // [num_rows, dim]
                          const Bf16* bias,  // [dim]
                          int num_rows, int dim, cudaStream_t stream);

cudaError_t LaunchCopyKvBlocks(Bf16* k_cache,           // [num_blocks, 16, num_kv_heads, head_dim]
                               Bf16* v_cache,           // [num_blocks, 16, num_kv_heads, head_dim]
                               const int32_t* src_dst,  // [num_pairs, 2]
                               int num_pairs, int block_elems, cudaStream_t stream);

cudaError_t LaunchKvAppend(const Bf16* k,                // [num_tokens, num_kv_heads, head_dim]
                           const Bf16* v,                // [num_tokens, num_kv_heads, head_dim]
                           const int32_t* positions,     // [num_tokens]
                           const int32_t* seq_starts,    // [num_seqs + 1]
                           const int32_t* block_tables,  // [num_seqs, max_blocks]
                           Bf16* k_cache,                // [num_blocks, 16, num_kv_heads, head_dim]
                           Bf16* v_cache,                // [num_blocks, 16, num_kv_heads, head_dim]
                           int num_tokens, int num_seqs, int max_blocks, int num_kv_heads,
                           int head_dim, cudaStream_t stream);

// Decode attention; writes partials (o_part/lse_part) or, when out_bf16 is
// not null (num_splits must be 1), the final bf16 output.
cudaError_t LaunchDecodeAttention(const Bf16* q,                // [num_seqs, num_heads, head_dim]
                                  const Bf16* k_cache,          // [num_blocks, 16, kvh, head_dim]
                                  const Bf16* v_cache,          // [num_blocks, 16, kvh, head_dim]
                                  const int32_t* block_tables,  // [num_seqs, max_blocks]
                                  const int32_t* kv_begin,      // [num_seqs] or nullptr
                                  const int32_t* kv_end,        // [num_seqs]
                                  float* o_part,    // [num_splits, num_seqs, num_heads, head_dim]
                                  float* lse_part,  // [num_splits, num_seqs, num_heads]
                                  Bf16* out_bf16,   // [num_seqs, num_heads, head_dim] or nullptr
                                  int num_seqs, const AttentionShape& shape, int split_len,
                                  int num_splits, cudaStream_t stream);

cudaError_t LaunchMergeAttentionStates(
    const float* o_parts,    // [num_parts, num_rows, num_heads, head_dim]
    const float* lse_parts,  // [num_parts, num_rows, num_heads]
    Bf16* out,               // [num_rows, num_heads, head_dim]
    float* lse_out,          // [num_rows, num_heads] or nullptr
    int num_parts, int num_rows, int num_heads, int head_dim, cudaStream_t stream);

// Group attention on tensor cores; writes partials (o_part/lse_part) or,
// when out_bf16 is not null (num_splits must be 1), the final bf16 output.
cudaError_t LaunchGroupAttention(const Bf16* q,                // [num_tokens, num_heads, head_dim]
                                 const int32_t* positions,     // [num_tokens]
                                 const int32_t* group_starts,  // [num_groups + 1]
                                 const int32_t* block_tables,  // [num_groups, max_blocks]
                                 const int32_t* kv_len,        // [num_groups]
                                 const Bf16* k_cache,          // [num_blocks, 16, kvh, head_dim]
                                 const Bf16* v_cache,          // [num_blocks, 16, kvh, head_dim]
                                 float* o_part,    // [num_splits, num_tokens, num_heads, head_dim]
                                 float* lse_part,  // [num_splits, num_tokens, num_heads]
                                 Bf16* out_bf16,   // [num_tokens, num_heads, head_dim] or nullptr
                                 int num_tokens, int num_groups, int max_group_tokens,
                                 const AttentionShape& shape, int split_len, int num_splits,
                                 cudaStream_t stream);

cudaError_t LaunchSmallBatchGemm(const Bf16* x,  // [m, k]
                                 const Bf16* w,  // [n, k]
                                 void* y,        // [m, n], bf16 or fp32
                                 int m, int n, int k, bool fp32_out, cudaStream_t stream);

cudaError_t LaunchSmallBatchGemmInput(const SmallBatchInput& input, const Bf16* w, void* y, int m,
                                      int n, int k, bool fp32_out, cudaStream_t stream);

cudaError_t LaunchSmallBatchGateUpSwiGlu(const SmallBatchInput& input, const Bf16* w_gate_up,
                                         Bf16* out, int m, int inter, int k, cudaStream_t stream);

cudaError_t LaunchSmallBatchQkvRope(const SmallBatchInput& input, const Bf16* w_qkv, Bf16* q,
                                    const QkvRopeKv& rope, int m, int k, cudaStream_t stream);

cudaError_t LaunchRopeKvAppend(const Bf16* qkv, Bf16* q, const int32_t* positions,
                               const float* inv_freq, const int32_t* seq_starts,
                               const int32_t* block_tables, Bf16* k_cache, Bf16* v_cache,
                               int num_tokens, int num_seqs, int max_blocks, int num_heads,
                               int num_kv_heads, int head_dim, cudaStream_t stream);

cudaError_t LaunchSampleTokens(const float* logits,         // [num_rows, vocab]
                               const SampleParams* params,  // [num_rows]
                               int32_t* tokens,             // [num_rows]
                               float* logprobs,             // [num_rows]
                               int num_rows, int vocab,
                               void* workspace,  // SampleWorkspaceBytes(num_rows, vocab)
                               cudaStream_t stream);

// What the launchers need to know of the current device (cached per device
// and thread); a failed query leaves the defaults.
struct DeviceCapability {
  int sm_count = 1;
  int major = 0, minor = 0;  // compute capability
};
DeviceCapability CurrentDeviceCapability();

// Number of SMs of the current device (cached per device).
int DeviceSmCount();

// Whether kernels launch as programmatic dependent launches: SetDependentLaunch
// (default on) and the current device can (compute capability 9.0 or newer;
// cached per device).
bool DependentLaunchEnabled();

// How the group-attention kernel that runs for this shape on the current
// device tiles its work.
struct GroupAttentionGeometry {
  int rows_per_cta;  // (token, GQA head) rows
  int ctas_per_sm;   // resident at once
  int tile_keys;     // keys per shared-memory tile
};
GroupAttentionGeometry GroupAttentionGeometryFor(const AttentionShape& shape);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_LAUNCHERS_H_
