// Paged group attention on tensor cores:
//  - GroupAttentionMmaKernel: many query rows against one paged KV range on
//    tensor cores (mma.sync m16n8k16 bf16, FlashAttention-2 register layout,
//    cp.async double buffering). Rows are (token, GQA head) pairs of a group,
//    so K/V are read once per group and KV head: the shared-prefix (cascade)
//    stage and causal prefill. On sm_90 a wgmma kernel (attention_sm90.cu)
//    can take its place.
// Decode attention and the partial-state merge are in attention_decode.cu.

#include <type_traits>

#include "kernels/attention_sm90.h"
#include "kernels/common.cuh"
#include "kernels/device.h"
#include "kernels/group_attention.cuh"

namespace arbor::kernels {
namespace {

using detail::CpAsync16;
using detail::CpAsyncCommit;
using detail::CpAsyncWait;
using detail::FastExp2;
using detail::kLog2e;
using detail::NegInf;
using detail::PackBf16;

// ---- Group attention on tensor cores -------------------------------------------

// Warps per CTA: each owns 16 query rows. (Eight warps, 128-row CTAs,
// measured no faster on an H200 for decode groups or prefill.)
constexpr int kGroupWarps = 4;
constexpr int kGroupKeys = 64;  // keys per tile
// Resident CTAs per SM that split plans aim at (registers allow about four).
constexpr int kGroupCtasPerSm = 4;

using detail::MmaBf16;

template <int D>
__host__ __device__ constexpr int GroupSmemStride() {
  return D + 8;  // bf16 elements per smem row: 16 bytes of padding kill bank conflicts
}
template <int D, int kWarps>
constexpr size_t GroupSmemBytes() {
  constexpr int kRows = 16 * kWarps;
  return (static_cast<size_t>(kRows) + 4 * kGroupKeys) * GroupSmemStride<D>() * sizeof(Bf16) +
         kRows * sizeof(int);
}

template <int D, int kWarps, class KvT>
__global__ void __launch_bounds__(kWarps * 32)
    GroupAttentionMmaKernel(const Bf16* __restrict__ q, const int32_t* __restrict__ positions,
                            const int32_t* __restrict__ group_starts,
                            const int32_t* __restrict__ block_tables,
                            const int32_t* __restrict__ kv_len, const KvT* __restrict__ k_cache,
                            const KvT* __restrict__ v_cache, float* __restrict__ o_part,
                            float* __restrict__ lse_part, Bf16* __restrict__ out_bf16,
                            int num_tokens, int num_heads, int num_kv_heads, int max_blocks,
                            float scale_log2, int split_len, int tiles_per_group, int gqa) {
  detail::AwaitPriorKernels();
  constexpr int kGroupRows = 16 * kWarps;  // query rows per CTA
  constexpr int SD = GroupSmemStride<D>();
  constexpr int KSTEPS = D / 16;  // k-steps of Q K^T
  constexpr int DT = D / 8;       // n-tiles of P V
  constexpr int CHUNKS = D / 8;   // 16-byte chunks per row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Bf16* q_s = reinterpret_cast<Bf16*>(smem_raw);
  Bf16* kv_s = q_s + kGroupRows * SD;  // [stage][K|V][kGroupKeys][SD]
  int* row_pos = reinterpret_cast<int*>(kv_s + 4 * kGroupKeys * SD);

  const int group = blockIdx.x / tiles_per_group, tile = blockIdx.x % tiles_per_group;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int tok_begin = group_starts[group], tok_end = group_starts[group + 1];
  const int num_rows = (tok_end - tok_begin) * gqa;
  const int row0 = tile * kGroupRows;
  if (row0 >= num_rows) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gq = lane >> 2, t4 = lane & 3;

  const detail::SplitKeys keys = detail::BeginGroupTile<D>(
      row_pos, kGroupRows, [&](int r, int ch) { return q_s + r * SD + ch * 8; }, q, positions,
      tok_begin, row0, num_rows, num_heads, kvh, gqa, split, split_len, kv_len[group]);
  const int b = keys.begin, e = keys.end, min_pos = keys.min_pos;

  const int32_t* table = block_tables + static_cast<size_t>(group) * max_blocks;
  const size_t slot_stride = static_cast<size_t>(num_kv_heads) * D;
  auto load_tile = [&](int key0, int stage) {
    Bf16* k_dst = kv_s + (stage * 2) * kGroupKeys * SD;
    Bf16* v_dst = k_dst + kGroupKeys * SD;
    for (int i = threadIdx.x; i < kGroupKeys * CHUNKS; i += blockDim.x) {
      const int j = i / CHUNKS, ch = i % CHUNKS;
      const int key = key0 + j;
      const bool valid = key < e;
      const size_t off = valid ? detail::PagedKvOffset<D>(table, key, kvh, slot_stride, ch) : 0;
      CpAsync16(k_dst + j * SD + ch * 8, k_cache + off, valid);
      CpAsync16(v_dst + j * SD + ch * 8, v_cache + off, valid);
    }
  };
  // An fp8 pool's tiles travel through registers, widened to bf16 on their
  // way to shared memory (cp.async cannot convert): the next tile's loads are
  // issued where the copies would be, and stored after this tile's math.
  constexpr int kFetches = kGroupKeys * CHUNKS / (kWarps * 32);  // chunks per thread
  static_assert(kGroupKeys * CHUNKS % (kWarps * 32) == 0, "whole chunks per thread");
  uint2 k_fetched[kFetches], v_fetched[kFetches];
  auto fetch_tile = [&](int key0) {
#pragma unroll
    for (int f = 0; f < kFetches; ++f) {
      const int i = threadIdx.x + f * kWarps * 32;
      const int j = i / CHUNKS, ch = i % CHUNKS;
      const int key = key0 + j;
      k_fetched[f] = v_fetched[f] = make_uint2(0, 0);
      if (key < e) {
        const size_t off = detail::PagedKvOffset<D>(table, key, kvh, slot_stride, ch);
        k_fetched[f] = detail::LoadKvRaw8(reinterpret_cast<const Fp8E4m3*>(k_cache) + off);
        v_fetched[f] = detail::LoadKvRaw8(reinterpret_cast<const Fp8E4m3*>(v_cache) + off);
      }
    }
  };
  auto stash_tile = [&](int stage) {
    Bf16* k_dst = kv_s + (stage * 2) * kGroupKeys * SD;
    Bf16* v_dst = k_dst + kGroupKeys * SD;
#pragma unroll
    for (int f = 0; f < kFetches; ++f) {
      const int i = threadIdx.x + f * kWarps * 32;
      const int j = i / CHUNKS, ch = i % CHUNKS;
      *reinterpret_cast<uint4*>(k_dst + j * SD + ch * 8) = detail::KvRaw8AsBf16(k_fetched[f]);
      *reinterpret_cast<uint4*>(v_dst + j * SD + ch * 8) = detail::KvRaw8AsBf16(v_fetched[f]);
    }
  };
  constexpr bool kFp8 = std::is_same_v<KvT, Fp8E4m3>;

  const int num_tiles = b < e ? (e - b + kGroupKeys - 1) / kGroupKeys : 0;
  if (num_tiles > 0) {
    if constexpr (kFp8) {
      fetch_tile(b);
      stash_tile(0);
    } else {
      load_tile(b, 0);
    }
  }
  CpAsyncCommit();

  CpAsyncWait<1>();  // the Q group is complete
  __syncthreads();
  uint32_t qa[KSTEPS][4];
  {
    const Bf16* base = q_s + (warp * 16) * SD;
#pragma unroll
    for (int kk = 0; kk < KSTEPS; ++kk) {
      qa[kk][0] = *reinterpret_cast<const uint32_t*>(base + gq * SD + kk * 16 + 2 * t4);
      qa[kk][1] = *reinterpret_cast<const uint32_t*>(base + (gq + 8) * SD + kk * 16 + 2 * t4);
      qa[kk][2] = *reinterpret_cast<const uint32_t*>(base + gq * SD + kk * 16 + 8 + 2 * t4);
      qa[kk][3] = *reinterpret_cast<const uint32_t*>(base + (gq + 8) * SD + kk * 16 + 8 + 2 * t4);
    }
  }
  const int pos_lo = row_pos[warp * 16 + gq], pos_hi = row_pos[warp * 16 + gq + 8];

  float oacc[DT][4];
#pragma unroll
  for (int n = 0; n < DT; ++n) oacc[n][0] = oacc[n][1] = oacc[n][2] = oacc[n][3] = 0.0f;
  detail::SoftmaxRows st{NegInf(), NegInf(), 0.0f, 0.0f};

  for (int it = 0; it < num_tiles; ++it) {
    const int key0 = b + it * kGroupKeys;
    CpAsyncWait<0>();  // this thread's copies of tile `it` have landed
    __syncthreads();   // everyone's, and every warp is done with tile it - 1
    // Prefetch tile it + 1 into the stage tile it - 1 used; it lands while
    // this tile is computed.
    if (it + 1 < num_tiles) {
      if constexpr (kFp8) {
        fetch_tile(key0 + kGroupKeys);
      } else {
        load_tile(key0 + kGroupKeys, (it + 1) & 1);
      }
    }
    CpAsyncCommit();
    const Bf16* k_s = kv_s + ((it & 1) * 2) * kGroupKeys * SD;
    const Bf16* v_s = k_s + kGroupKeys * SD;

    float sacc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.0f;
      // K rows are the B operand ("col" layout) as stored: ldmatrix without
      // transpose yields b0/b1 of two k-steps at once.
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk += 2) {
        if constexpr (KSTEPS >= 2) {
          const Bf16* src = k_s + (nt * 8 + (lane & 7)) * SD + kk * 16 + (lane >> 3) * 8;
          uint32_t r0, r1, r2, r3;
          asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                       : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                       : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(src))));
          MmaBf16(sacc[nt], qa[kk], r0, r1);
          MmaBf16(sacc[nt], qa[kk + 1], r2, r3);
        } else {
          const Bf16* krow = k_s + (nt * 8 + gq) * SD + kk * 16 + 2 * t4;
          MmaBf16(sacc[nt], qa[kk], *reinterpret_cast<const uint32_t*>(krow),
                  *reinterpret_cast<const uint32_t*>(krow + 8));
        }
      }
    }
    // Online softmax for rows gq (lo) and gq + 8 (hi). Scores stay unscaled
    // (scale > 0 keeps their order); the scale folds into one FFMA before
    // each exp2.
    float mx_lo = NegInf(), mx_hi = NegInf();
    if (key0 + kGroupKeys <= e && key0 + kGroupKeys - 1 <= min_pos) {
      // Every key of the tile is visible to every row (the shared-prefix case).
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        mx_lo = fmaxf(mx_lo, fmaxf(sacc[nt][0], sacc[nt][1]));
        mx_hi = fmaxf(mx_hi, fmaxf(sacc[nt][2], sacc[nt][3]));
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int key = key0 + nt * 8 + 2 * t4 + j;
          const bool in_range = key < e;
          if (!(in_range && key <= pos_lo)) sacc[nt][j] = NegInf();
          if (!(in_range && key <= pos_hi)) sacc[nt][2 + j] = NegInf();
          mx_lo = fmaxf(mx_lo, sacc[nt][j]);
          mx_hi = fmaxf(mx_hi, sacc[nt][2 + j]);
        }
      }
    }
#pragma unroll
    for (int offset = 1; offset < 4; offset <<= 1) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, offset));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, offset));
    }
    const float new_lo = fmaxf(st.m_lo, mx_lo), new_hi = fmaxf(st.m_hi, mx_hi);
    // A row with nothing visible yet keeps m = -inf; guard the -inf - -inf.
    const float alpha_lo = new_lo == NegInf() ? 1.0f : FastExp2((st.m_lo - new_lo) * scale_log2);
    const float alpha_hi = new_hi == NegInf() ? 1.0f : FastExp2((st.m_hi - new_hi) * scale_log2);
    const float sub_lo = new_lo == NegInf() ? 0.0f : new_lo * scale_log2;
    const float sub_hi = new_hi == NegInf() ? 0.0f : new_hi * scale_log2;
    st.m_lo = new_lo;
    st.m_hi = new_hi;
    st.l_lo *= alpha_lo;
    st.l_hi *= alpha_hi;
#pragma unroll
    for (int n = 0; n < DT; ++n) {
      oacc[n][0] *= alpha_lo;
      oacc[n][1] *= alpha_lo;
      oacc[n][2] *= alpha_hi;
      oacc[n][3] *= alpha_hi;
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      sacc[nt][0] = FastExp2(fmaf(sacc[nt][0], scale_log2, -sub_lo));
      sacc[nt][1] = FastExp2(fmaf(sacc[nt][1], scale_log2, -sub_lo));
      sacc[nt][2] = FastExp2(fmaf(sacc[nt][2], scale_log2, -sub_hi));
      sacc[nt][3] = FastExp2(fmaf(sacc[nt][3], scale_log2, -sub_hi));
      st.l_lo += sacc[nt][0] + sacc[nt][1];
      st.l_hi += sacc[nt][2] + sacc[nt][3];
    }
    // O += P V: the S accumulators are already the A fragments of P.
#pragma unroll
    for (int ks = 0; ks < kGroupKeys / 16; ++ks) {
      uint32_t pa[4];
      pa[0] = PackBf16(sacc[2 * ks][0], sacc[2 * ks][1]);
      pa[1] = PackBf16(sacc[2 * ks][2], sacc[2 * ks][3]);
      pa[2] = PackBf16(sacc[2 * ks + 1][0], sacc[2 * ks + 1][1]);
      pa[3] = PackBf16(sacc[2 * ks + 1][2], sacc[2 * ks + 1][3]);
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        const Bf16* src = v_s + (ks * 16 + (lane & 15)) * SD + dn * 16 + (lane >> 4) * 8;
        const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(src));
        uint32_t r0, r1, r2, r3;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                     : "r"(addr));
        MmaBf16(oacc[2 * dn], pa, r0, r1);
        MmaBf16(oacc[2 * dn + 1], pa, r2, r3);
      }
    }
    if constexpr (kFp8) {
      // Into the stage tile it - 1 used (every warp left it at the barrier
      // above); the next iteration's barrier publishes it.
      if (it + 1 < num_tiles) stash_tile((it + 1) & 1);
    }
  }
  CpAsyncWait<0>();

  detail::WriteGroupRows<D>(
      &oacc[0][0], st, row0 + warp * 16 + gq, t4, scale_log2,
      {o_part, lse_part, out_bf16, num_tokens, num_heads, split, tok_begin, num_rows, kvh, gqa});
}

// ---- Dispatch -----------------------------------------------------------------------

// The group-attention kernel that runs: the requested one where it can.
GroupAttentionKernel KernelFor(const AttentionShape& shape) {
  const GroupAttentionKernel requested = RequestedGroupAttentionKernel();
  if (requested == GroupAttentionKernel::kMmaSync || shape.kv_dtype != KvDtype::kBf16 ||
      !Sm90GroupAttentionSupported(shape.head_dim)) {
    return GroupAttentionKernel::kMmaSync;
  }
  return requested;
}

template <int D, int kWarps, class KvT>
cudaError_t LaunchGroupForDim(dim3 grid, cudaStream_t stream, const Bf16* q,
                              const int32_t* positions, const int32_t* group_starts,
                              const int32_t* block_tables, const int32_t* kv_len,
                              const KvT* k_cache, const KvT* v_cache, float* o_part,
                              float* lse_part, Bf16* out_bf16, int num_tokens,
                              const AttentionShape& s, float scale_log2, int split_len,
                              int tiles_per_group) {
  constexpr size_t kSmem = GroupSmemBytes<D, kWarps>();
  const cudaError_t error =
      detail::AllowDynamicSmem<GroupAttentionMmaKernel<D, kWarps, KvT>>(kSmem);
  if (error != cudaSuccess) return error;
  detail::LaunchKernel(GroupAttentionMmaKernel<D, kWarps, KvT>, grid, kWarps * 32, kSmem, stream, q,
                       positions, group_starts, block_tables, kv_len, k_cache, v_cache, o_part,
                       lse_part, out_bf16, num_tokens, s.num_heads, s.num_kv_heads, s.max_blocks,
                       scale_log2, split_len, tiles_per_group, s.num_heads / s.num_kv_heads);
  return cudaGetLastError();
}

GroupAttentionGeometry GeometryOf(GroupAttentionKernel kernel) {
  switch (kernel) {
    case GroupAttentionKernel::kWgmma:
      return {kSm90GroupRows, kSm90CtasPerSm, kSm90TileKeys};
    case GroupAttentionKernel::kMmaSync:
      break;
  }
  return {16 * kGroupWarps, kGroupCtasPerSm, kGroupKeys};
}

}  // namespace

GroupAttentionGeometry GroupAttentionGeometryFor(const AttentionShape& shape) {
  return GeometryOf(KernelFor(shape));
}

namespace {

// Group attention on tensor cores; writes partials (o_part/lse_part) or,
// when out_bf16 is not null (num_splits must be 1), the final bf16 output.
template <class KvT>
cudaError_t LaunchGroupAttention(const Bf16* q, const int32_t* positions,
                                 const int32_t* group_starts, const int32_t* block_tables,
                                 const int32_t* kv_len, const KvT* k_cache, const KvT* v_cache,
                                 float* o_part, float* lse_part, Bf16* out_bf16, int num_tokens,
                                 int num_groups, int max_group_tokens, const AttentionShape& shape,
                                 int split_len, int num_splits, cudaStream_t stream) {
  if (!detail::ValidAttentionShape(shape) || num_tokens < 0 || num_groups < 0 ||
      max_group_tokens < 0 || num_splits <= 0 || split_len <= 0 || split_len % kGroupKeys != 0 ||
      (out_bf16 != nullptr && num_splits != 1) ||
      (out_bf16 == nullptr && (o_part == nullptr || lse_part == nullptr)) ||
      shape.kv_dtype != detail::KvDtypeOf<KvT>()) {
    return cudaErrorInvalidValue;
  }
  if (num_tokens == 0 || num_groups == 0 || max_group_tokens == 0) return cudaSuccess;
  const int gqa = shape.num_heads / shape.num_kv_heads;
  const GroupAttentionKernel kernel = KernelFor(shape);
  const int rows_per_cta = GeometryOf(kernel).rows_per_cta;
  const int tiles_per_group = (max_group_tokens * gqa + rows_per_cta - 1) / rows_per_cta;
  const long long ctas_x = static_cast<long long>(tiles_per_group) * num_groups;
  if (ctas_x > 0x7fffffffLL) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(ctas_x), shape.num_kv_heads, num_splits);
  const float scale_log2 = shape.scale * kLog2e;
  if constexpr (std::is_same_v<KvT, Bf16>) {  // KernelFor: fp8 pools run mma.sync
    if (kernel != GroupAttentionKernel::kMmaSync) {
      return LaunchGroupAttentionSm90(grid, stream, q, positions, group_starts, block_tables,
                                      kv_len, k_cache, v_cache, o_part, lse_part, out_bf16,
                                      num_tokens, shape, scale_log2, split_len, tiles_per_group);
    }
  }
#define ARBOR_GROUP(D)                                                                          \
  LaunchGroupForDim<D, kGroupWarps, KvT>(                                                       \
      grid, stream, q, positions, group_starts, block_tables, kv_len, k_cache, v_cache, o_part, \
      lse_part, out_bf16, num_tokens, shape, scale_log2, split_len, tiles_per_group)
  switch (shape.head_dim) {
    case 16:
      return ARBOR_GROUP(16);
    case 32:
      return ARBOR_GROUP(32);
    case 64:
      return ARBOR_GROUP(64);
    default:
      return ARBOR_GROUP(128);
  }
#undef ARBOR_GROUP
}

}  // namespace

KernelStatus GroupAttentionPartial(const Bf16* q, const int32_t* positions,
                                   const int32_t* group_starts, const int32_t* block_tables,
                                   const int32_t* kv_len, const Bf16* k_cache, const Bf16* v_cache,
                                   float* o_part, float* lse_part, int num_tokens, int num_groups,
                                   int max_group_tokens, const AttentionShape& shape, int split_len,
                                   int num_splits, Stream stream) {
  return LaunchGroupAttention(q, positions, group_starts, block_tables, kv_len, k_cache, v_cache,
                              o_part, lse_part, nullptr, num_tokens, num_groups, max_group_tokens,
                              shape, split_len, num_splits, detail::AsStream(stream));
}
KernelStatus GroupAttentionPartial(const Bf16* q, const int32_t* positions,
                                   const int32_t* group_starts, const int32_t* block_tables,
                                   const int32_t* kv_len, const Fp8E4m3* k_cache,
                                   const Fp8E4m3* v_cache, float* o_part, float* lse_part,
                                   int num_tokens, int num_groups, int max_group_tokens,
                                   const AttentionShape& shape, int split_len, int num_splits,
                                   Stream stream) {
  return LaunchGroupAttention(q, positions, group_starts, block_tables, kv_len, k_cache, v_cache,
                              o_part, lse_part, nullptr, num_tokens, num_groups, max_group_tokens,
                              shape, split_len, num_splits, detail::AsStream(stream));
}

KernelStatus PrefillAttention(const Bf16* q, const int32_t* positions, const int32_t* seq_starts,
                              const int32_t* block_tables, const int32_t* context_lens,
                              const Bf16* k_cache, const Bf16* v_cache, Bf16* out, int num_tokens,
                              int num_seqs, int max_seq_tokens, const AttentionShape& shape,
                              Stream stream) {
  return LaunchGroupAttention(q, positions, seq_starts, block_tables, context_lens, k_cache,
                              v_cache, nullptr, nullptr, out, num_tokens, num_seqs, max_seq_tokens,
                              shape, 1 << 30, 1, detail::AsStream(stream));
}
KernelStatus PrefillAttention(const Bf16* q, const int32_t* positions, const int32_t* seq_starts,
                              const int32_t* block_tables, const int32_t* context_lens,
                              const Fp8E4m3* k_cache, const Fp8E4m3* v_cache, Bf16* out,
                              int num_tokens, int num_seqs, int max_seq_tokens,
                              const AttentionShape& shape, Stream stream) {
  return LaunchGroupAttention(q, positions, seq_starts, block_tables, context_lens, k_cache,
                              v_cache, nullptr, nullptr, out, num_tokens, num_seqs, max_seq_tokens,
                              shape, 1 << 30, 1, detail::AsStream(stream));
}

}  // namespace arbor::kernels
