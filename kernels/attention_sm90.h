// Host side of the sm_90 group-attention kernel (attention_sm90.cu), for
// attention.cu's dispatcher only: same parameters as GroupAttentionMmaKernel.
#ifndef ARBOR_KERNELS_ATTENTION_SM90_H_
#define ARBOR_KERNELS_ATTENTION_SM90_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernels.h"

namespace arbor::kernels {

// Query rows per CTA of the sm_90 kernel (two warpgroups of 64), keys per
// shared-memory tile, and CTAs resident per SM (128 registers, two K/V
// stages each).
inline constexpr int kSm90GroupRows = 128;
inline constexpr int kSm90TileKeys = 128;
inline constexpr int kSm90CtasPerSm = 2;

// Whether the current device runs the sm_90 kernel for this head size
// (compute capability 9.0 and head_dim 64; cached per device).
bool Sm90GroupAttentionSupported(int head_dim);

// grid: (tiles_per_group * num_groups, num_kv_heads, num_splits), where a
// tile is kSm90GroupRows query rows. Asynchronous; errors as
// cudaGetLastError.
cudaError_t LaunchGroupAttentionSm90(dim3 grid, cudaStream_t stream, const Bf16* q,
                                     const int32_t* positions, const int32_t* group_starts,
                                     const int32_t* block_tables, const int32_t* kv_len,
                                     const Bf16* k_cache, const Bf16* v_cache, float* o_part,
                                     float* lse_part, Bf16* out_bf16, int num_tokens,
                                     const AttentionShape& shape, float scale_log2, int split_len,
                                     int tiles_per_group);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_ATTENTION_SM90_H_
