// Paged decode attention kernels:
//  - DecodeKernel: one query token per sequence on CUDA cores. A CTA owns
//    (sequence, KV head, split); the GQA query heads of the KV head share every
//    K/V load; L = head_dim / 8 lanes cover one key with 128-bit loads, so a
//    warp streams whole 16-token pages; online softmax in the log2 domain.
//  - MergeKernel: log-sum-exp merge of partial states (split-K decode, and the
//    cascade's prefix and suffix stages).
// The tensor-core group attention (cascade prefix stage, prefill) is in
// attention.cu.

#include <algorithm>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/device.h"

namespace arbor::kernels {
namespace {

using detail::kLn2;
using detail::kLog2e;
using detail::NegInf;

// ---- Decode --------------------------------------------------------------------

// Warps per CTA: 4 where the grid fills the GPU; 16 where it does not (a
// batch of one or two: 8 KV heads make 8 CTAs), so that a short context's
// pages, one per warp, are fetched at once instead of four after each other.
constexpr int kDecodeWarps = 4;
constexpr int kWideDecodeWarps = 16;

// The last step of a decode CTA: merges its warps' online-softmax states (in
// shared memory, written before a __syncthreads) and writes the split's
// partial, or with out_bf16 (a single split) the final output.
template <int kWarps, int kRows, int D>
__device__ __forceinline__ void StoreMergedWarpStates(const float (&sm_m)[kWarps][kRows],
                                                      const float (&sm_l)[kWarps][kRows],
                                                      const float (&sm_o)[kWarps][kRows][D],
                                                      int gqa, size_t out_row0, float* o_part,
                                                      float* lse_part, Bf16* out_bf16) {
  for (int i = threadIdx.x; i < gqa * D; i += blockDim.x) {
    const int h = i / D, d = i % D;
    float mx = NegInf();
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sm_m[w][h]);
    float total = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (sm_m[w][h] == NegInf()) continue;  // warp saw no page
      const float wt = exp2f(sm_m[w][h] - mx);
      total += sm_l[w][h] * wt;
      acc += sm_o[w][h][d] * wt;
    }
    if (out_bf16) {  // a single split: the final output
      reinterpret_cast<__nv_bfloat16*>(out_bf16)[(out_row0 + h) * D + d] =
          __float2bfloat16_rn(acc / total);
      continue;
    }
    o_part[(out_row0 + h) * D + d] = acc / total;
    if (d == 0) lse_part[out_row0 + h] = (mx + log2f(total)) * kLn2;
  }
}

// Zeroes an empty split's output (its partial's lse is -inf).
template <int D>
__device__ __forceinline__ void StoreEmptySplit(int gqa, size_t out_row0, float* o_part,
                                                float* lse_part, Bf16* out_bf16) {
  for (int i = threadIdx.x; i < gqa * D; i += blockDim.x) {
    if (out_bf16) {
      out_bf16[out_row0 * D + i] = 0;
    } else {
      o_part[out_row0 * D + i] = 0.0f;
    }
  }
  if (!out_bf16 && threadIdx.x < gqa) lse_part[out_row0 + threadIdx.x] = NegInf();
}

template <int D, int G, int kWarps, class KvT>
__global__ void __launch_bounds__(kWarps * 32)
    DecodeKernel(const Bf16* __restrict__ q, const KvT* __restrict__ k_cache,
                 const KvT* __restrict__ v_cache, const int32_t* __restrict__ block_tables,
                 const int32_t* __restrict__ kv_begin, const int32_t* __restrict__ kv_end,
                 float* __restrict__ o_part, float* __restrict__ lse_part,
                 Bf16* __restrict__ out_bf16, int num_seqs, int num_heads, int num_kv_heads,
                 int max_blocks, float scale_log2, int split_len, int gqa) {
  detail::AwaitPriorKernels();
  constexpr int L = D / 8;      // lanes per key
  constexpr int KPW = 32 / L;   // keys per warp pass
  constexpr int NK = 16 / KPW;  // keys of a page per lane
  const int kvh = blockIdx.x, seq = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int c = lane % L, g = lane / L;

  const int seq_begin = kv_begin ? kv_begin[seq] : 0;
  const int b = seq_begin + split * split_len;
  const int e = min(kv_end[seq], b + split_len);
  const size_t out_row0 = (static_cast<size_t>(split) * num_seqs + seq) * num_heads + kvh * gqa;

  if (b >= e) {  // empty split
    StoreEmptySplit<D>(gqa, out_row0, o_part, lse_part, out_bf16);
    return;
  }

  // Query chunk c of each GQA head, pre-scaled into the log2 domain.
  float qv[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    if (h < gqa) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(
          q + (static_cast<size_t>(seq) * num_heads + kvh * gqa + h) * D + c * 8));
      detail::Unpack8(raw, qv[h]);
#pragma unroll
      for (int j = 0; j < 8; ++j) qv[h][j] *= scale_log2;
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) qv[h][j] = 0.0f;
    }
  }

  float m[G], l[G], o[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    m[h] = NegInf();
    l[h] = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) o[h][j] = 0.0f;
  }

  const int32_t* table = block_tables + static_cast<size_t>(seq) * max_blocks;
  const size_t key_stride = static_cast<size_t>(num_kv_heads) * D;  // elements per slot
  const int first_page = b / kKvBlockSize, last_page = (e - 1) / kKvBlockSize;
  for (int page = first_page + warp; page <= last_page; page += kWarps) {
    const size_t base = static_cast<size_t>(table[page]) * kKvBlockSize * key_stride +
                        static_cast<size_t>(kvh) * D + c * 8;
    // An fp8 lane loads 8 bytes and widens them with the cvt units; two
    // pages in flight per pass and widening by integer ops both measured
    // slower on an H100 (docs/KERNELS.md, "fp8 KV cache").
    typename detail::KvRaw8<KvT>::Type kr[NK], vr[NK];
#pragma unroll
    for (int i = 0; i < NK; ++i) {
      const size_t off = base + static_cast<size_t>(g + i * KPW) * key_stride;
      kr[i] = detail::LoadKvRaw8(k_cache + off);
      vr[i] = detail::LoadKvRaw8(v_cache + off);
    }
    float s[G][NK];
#pragma unroll
    for (int i = 0; i < NK; ++i) {
      float kf[8];
      detail::UnpackKv8(kr[i], kf);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) dot = fmaf(qv[h][j], kf[j], dot);
        s[h][i] = dot;
      }
    }
    // Finish the dot products across the L lanes of a key.
#pragma unroll
    for (int offset = 1; offset < L; offset <<= 1) {
#pragma unroll
      for (int h = 0; h < G; ++h) {
#pragma unroll
        for (int i = 0; i < NK; ++i) s[h][i] += __shfl_xor_sync(0xffffffffu, s[h][i], offset);
      }
    }
    const int key0 = page * kKvBlockSize + g;
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float page_max = NegInf();
#pragma unroll
      for (int i = 0; i < NK; ++i) {
        const int key = key0 + i * KPW;
        if (key < b || key >= e) s[h][i] = NegInf();
        page_max = fmaxf(page_max, s[h][i]);
      }
#pragma unroll
      for (int offset = L; offset < 32; offset <<= 1) {
        page_max = fmaxf(page_max, __shfl_xor_sync(0xffffffffu, page_max, offset));
      }
      const float m_new = fmaxf(m[h], page_max);  // finite: a page holds a key of [b, e)
      const float alpha = exp2f(m[h] - m_new);
      m[h] = m_new;
      l[h] *= alpha;
#pragma unroll
      for (int j = 0; j < 8; ++j) o[h][j] *= alpha;
#pragma unroll
      for (int i = 0; i < NK; ++i) s[h][i] = exp2f(s[h][i] - m_new);
    }
    // A slot outside [b, e) may hold anything (a stale or never written slot
    // can be NaN, and 0 * NaN is NaN): its V counts as zero. Only the first
    // and last pages have such slots.
    if (page == first_page || page == last_page) {
#pragma unroll
      for (int i = 0; i < NK; ++i) {
        const int key = key0 + i * KPW;
        if (key < b || key >= e) vr[i] = {};
      }
    }
#pragma unroll
    for (int i = 0; i < NK; ++i) {
      float vf[8];
      detail::UnpackKv8(vr[i], vf);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        l[h] += s[h][i];
#pragma unroll
        for (int j = 0; j < 8; ++j) o[h][j] = fmaf(s[h][i], vf[j], o[h][j]);
      }
    }
  }

  // Sum the key groups of the warp (m is warp-uniform).
#pragma unroll
  for (int offset = L; offset < 32; offset <<= 1) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], offset);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[h][j] += __shfl_xor_sync(0xffffffffu, o[h][j], offset);
    }
  }

  __shared__ float sm_m[kWarps][G], sm_l[kWarps][G];
  __shared__ float sm_o[kWarps][G][D];
  if (g == 0) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
#pragma unroll
      for (int j = 0; j < 8; ++j) sm_o[warp][h][c * 8 + j] = o[h][j];
      if (c == 0) {
        sm_m[warp][h] = m[h];
        sm_l[warp][h] = l[h];
      }
    }
  }
  __syncthreads();
  StoreMergedWarpStates<kWarps, G, D>(sm_m, sm_l, sm_o, gqa, out_row0, o_part, lse_part, out_bf16);
}

// ---- Decode over fp8 pools on tensor cores -------------------------------------
//
// Fp8DecodeMmaKernel: the CUDA-core kernel above spends most of its issue
// slots on fp8 pools widening elements to fp32 and on four FMAs per element
// and query head, not on loads (docs/KERNELS.md, "fp8 KV cache"). Here a
// warp computes a page's S = Q K^T and O += P V as mma.sync m16n8k16 fp16
// (fp32 accumulate): rows are the KV head's GQA query heads (zero past
// gqa), e4m3 widens exactly to fp16 with one cvt per two elements, and only
// the query (pre-scaled into the log2 domain) and the probabilities are
// rounded to fp16. Each lane loads its operands straight from the pool into
// the mma fragment registers, which the layout below allows without shared
// memory: attention is invariant under a permutation of the head dimension
// applied to Q and K alike, and of a page's keys applied to P and V alike.
//  - QK (k = head dims): lane (g, t) of the fragment layout owns, in k-step
//    kk, the logical dims {2t, 2t+1, 2t+8, 2t+9}, mapped to memory dims
//    (D/4) t + 4 kk + {0,1,2,3}: its D/4 bytes of a key are contiguous.
//  - Keys: column c of S's n-tile j is the page's key 4 (c / 2) + 2 j + c % 2,
//    so lane (g, t) holds S (and P) for keys 4t..4t+3, the keys whose V
//    rows it loads for the PV product's k dimension (PV's A operand is P in
//    S's accumulator layout, as in FlashAttention-2).
//  - PV (n = head dims): column g of d-tile nt is memory dim (D/8) g + nt,
//    so a lane's V bytes of a key are contiguous too, and its outputs of a
//    head row are the contiguous dims [2t D/8, (2t + 2) D/8).


__device__ __forceinline__ uint32_t PackHalf2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

using detail::Fp8x2ToHalf2Bits;
using detail::MmaF16;

// One page's K and V bytes as a lane loads them.
template <int D>
struct Fp8PageFragments {
  uint32_t k[2][D / 16];  // keys 4 (g / 2) + g % 2 and that + 2: D/4 bytes each
  uint32_t v[4][D / 32];  // keys 4t..4t+3: D/8 bytes each
};

template <int D>
__device__ __forceinline__ void LoadFp8Page(const Fp8E4m3* k_page, const Fp8E4m3* v_page,
                                            size_t key_stride, int g, int t,
                                            Fp8PageFragments<D>& f) {
  const int key_a = 4 * (g >> 1) + (g & 1);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const uint4* src =
        reinterpret_cast<const uint4*>(k_page + (key_a + 2 * j) * key_stride + (D / 4) * t);
#pragma unroll
    for (int w = 0; w < D / 64; ++w) {
      const uint4 raw = __ldg(src + w);
      f.k[j][4 * w] = raw.x;
      f.k[j][4 * w + 1] = raw.y;
      f.k[j][4 * w + 2] = raw.z;
      f.k[j][4 * w + 3] = raw.w;
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const Fp8E4m3* src = v_page + (4 * t + i) * key_stride + (D / 8) * g;
    if constexpr (D == 64) {
      const uint2 raw = __ldg(reinterpret_cast<const uint2*>(src));
      f.v[i][0] = raw.x;
      f.v[i][1] = raw.y;
    } else {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(src));
      f.v[i][0] = raw.x;
      f.v[i][1] = raw.y;
      f.v[i][2] = raw.z;
      f.v[i][3] = raw.w;
    }
  }
}

// gqa <= 16 query heads per KV head; D = 64 or 128.
template <int D, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    Fp8DecodeMmaKernel(const Bf16* __restrict__ q, const Fp8E4m3* __restrict__ k_cache,
                       const Fp8E4m3* __restrict__ v_cache, const int32_t* __restrict__ block_tables,
                       const int32_t* __restrict__ kv_begin, const int32_t* __restrict__ kv_end,
                       float* __restrict__ o_part, float* __restrict__ lse_part,
                       Bf16* __restrict__ out_bf16, int num_seqs, int num_heads, int num_kv_heads,
                       int max_blocks, float scale_log2, int split_len, int gqa) {
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  detail::AwaitPriorKernels();
  constexpr int KS = D / 16;  // QK k-steps
  constexpr int NT = D / 8;   // PV d-tiles
  const int kvh = blockIdx.x, seq = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;

  const int seq_begin = kv_begin ? kv_begin[seq] : 0;
  const int b = seq_begin + split * split_len;
  const int e = min(kv_end[seq], b + split_len);
  const size_t out_row0 = (static_cast<size_t>(split) * num_seqs + seq) * num_heads + kvh * gqa;
  if (b >= e) {
    StoreEmptySplit<D>(gqa, out_row0, o_part, lse_part, out_bf16);
    return;
  }

  // Q as the A operand: rows g and g + 8 are query heads, memory dims
  // (D/4) t + 4 kk + {0..3} in k-step kk. fp16 holds bf16's 8 bits exactly;
  // the clamp keeps an out-of-range query finite.
  uint32_t qa[KS][4];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int h = g + 8 * r;
    float vals[D / 4];
    if (h < gqa) {
      const uint4* src = reinterpret_cast<const uint4*>(
          q + (static_cast<size_t>(seq) * num_heads + kvh * gqa + h) * D + (D / 4) * t);
#pragma unroll
      for (int w = 0; w < D / 32; ++w) detail::Unpack8(__ldg(src + w), vals + 8 * w);
    } else {
#pragma unroll
      for (int i = 0; i < D / 4; ++i) vals[i] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      float x[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) x[i] = fminf(fmaxf(vals[4 * kk + i] * scale_log2, -65504.0f), 65504.0f);
      qa[kk][r] = PackHalf2(x[0], x[1]);
      qa[kk][2 + r] = PackHalf2(x[2], x[3]);
    }
  }

  float m[2] = {NegInf(), NegInf()}, l[2] = {0.0f, 0.0f};
  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;

  const int32_t* table = block_tables + static_cast<size_t>(seq) * max_blocks;
  const size_t key_stride = static_cast<size_t>(num_kv_heads) * D;  // bytes per slot
  const int first_page = b / kKvBlockSize, last_page = (e - 1) / kKvBlockSize;
  auto page_base = [&](int page) {
    return static_cast<size_t>(table[page]) * kKvBlockSize * key_stride +
           static_cast<size_t>(kvh) * D;
  };
  // One page in flight ahead of the one computed.
  Fp8PageFragments<D> cur;
  int page = first_page + warp;
  if (page <= last_page) {
    const size_t base = page_base(page);
    LoadFp8Page<D>(k_cache + base, v_cache + base, key_stride, g, t, cur);
  }
  for (; page <= last_page; page += kWarps) {
    Fp8PageFragments<D> next;
    if (page + kWarps <= last_page) {
      const size_t base = page_base(page + kWarps);
      LoadFp8Page<D>(k_cache + base, v_cache + base, key_stride, g, t, next);
    }
    // S for keys 4t + 2j + {0, 1} (rows g: s[j][0..1], g + 8: s[j][2..3]).
    float s[2][4];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        const uint32_t word = cur.k[j][kk];
        MmaF16(s[j], qa[kk], Fp8x2ToHalf2Bits(word), Fp8x2ToHalf2Bits(word >> 16));
      }
    }
    const int key0 = page * kKvBlockSize + 4 * t;
    const bool edge = page == first_page || page == last_page;
    if (edge) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int key = key0 + 2 * j + c;
          if (key < b || key >= e) s[j][c] = s[j][2 + c] = NegInf();
        }
      }
      // A slot outside [b, e) may hold anything (NaN included): its V is 0.
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = key0 + i;
        if (key < b || key >= e) {
#pragma unroll
          for (int w = 0; w < D / 32; ++w) cur.v[i][w] = 0u;
        }
      }
    }
    // Online softmax per row, over the quad of lanes that shares it.
    uint32_t pa[4];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float page_max = fmaxf(fmaxf(s[0][2 * r], s[0][2 * r + 1]), fmaxf(s[1][2 * r], s[1][2 * r + 1]));
      page_max = fmaxf(page_max, __shfl_xor_sync(0xffffffffu, page_max, 1));
      page_max = fmaxf(page_max, __shfl_xor_sync(0xffffffffu, page_max, 2));
      const float m_new = fmaxf(m[r], page_max);  // finite: a page holds a key of [b, e)
      const float alpha = exp2f(m[r] - m_new);
      m[r] = m_new;
      float p[2][2];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        p[j][0] = exp2f(s[j][2 * r] - m_new);
        p[j][1] = exp2f(s[j][2 * r + 1] - m_new);
      }
      l[r] = l[r] * alpha + (p[0][0] + p[0][1]) + (p[1][0] + p[1][1]);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        o[nt][2 * r] *= alpha;
        o[nt][2 * r + 1] *= alpha;
      }
      pa[r] = PackHalf2(p[0][0], p[0][1]);      // row g (+8), keys 2t, 2t+1 of the k dim
      pa[2 + r] = PackHalf2(p[1][0], p[1][1]);  // keys 2t+8, 2t+9
    }
    // O += P V: b0 = V of keys 4t, 4t+1 at dim (D/8) g + nt, b1 = keys 4t+2, 4t+3.
#pragma unroll
    for (int w = 0; w < D / 32; ++w) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint32_t sel = half == 0 ? 0x5140u : 0x7362u;
        const uint32_t v01 = __byte_perm(cur.v[0][w], cur.v[1][w], sel);
        const uint32_t v23 = __byte_perm(cur.v[2][w], cur.v[3][w], sel);
        const int nt = 4 * w + 2 * half;
        MmaF16(o[nt], pa, Fp8x2ToHalf2Bits(v01), Fp8x2ToHalf2Bits(v23));
        MmaF16(o[nt + 1], pa, Fp8x2ToHalf2Bits(v01 >> 16), Fp8x2ToHalf2Bits(v23 >> 16));
      }
    }
    cur = next;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }

  __shared__ float sm_m[kWarps][16], sm_l[kWarps][16];
  __shared__ float sm_o[kWarps][16][D];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int h = g + 8 * r;
    if (h >= gqa) continue;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      sm_o[warp][h][(D / 8) * (2 * t) + nt] = o[nt][2 * r];
      sm_o[warp][h][(D / 8) * (2 * t + 1) + nt] = o[nt][2 * r + 1];
    }
    if (t == 0) {
      sm_m[warp][h] = m[r];
      sm_l[warp][h] = l[r];
    }
  }
  __syncthreads();
  StoreMergedWarpStates<kWarps, 16, D>(sm_m, sm_l, sm_o, gqa, out_row0, o_part, lse_part,
                                       out_bf16);
}

// ---- Merge ---------------------------------------------------------------------

// One block per (row, head): the part weights are computed once into shared
// memory, then (head_dim / 4) float4 columns x (128 / that) part groups
// accumulate in parallel and are summed through shared memory.
constexpr int kMergeThreads = 128;

__global__ void __launch_bounds__(kMergeThreads)
    MergeKernel(const float* __restrict__ o_parts, const float* __restrict__ lse_parts,
                Bf16* __restrict__ out, float* __restrict__ lse_out, int num_parts, size_t rows,
                int head_dim) {
  detail::AwaitPriorKernels();
  extern __shared__ float merge_smem[];  // [num_parts] weights, then [kMergeThreads][4]
  float* weight = merge_smem;
  float4* partial = reinterpret_cast<float4*>(merge_smem + ((num_parts + 3) & ~3));
  __shared__ float max_lse, inv_total;
  const size_t r = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31;
  if (tid < 32) {
    float mx = NegInf();
    for (int j = lane; j < num_parts; j += 32) mx = fmaxf(mx, lse_parts[j * rows + r]);
    mx = detail::WarpMax(mx);
    float total = 0.0f;
    for (int j = lane; j < num_parts; j += 32) {
      const float lse = lse_parts[j * rows + r];
      const float w = (mx == NegInf() || lse == NegInf()) ? 0.0f : __expf(lse - mx);
      weight[j] = w;
      total += w;
    }
    total = detail::WarpSum(total);
    if (lane == 0) {
      max_lse = mx;
      inv_total = total > 0.0f ? 1.0f / total : 0.0f;
    }
  }
  __syncthreads();
  const int columns = head_dim / 4, groups = kMergeThreads / columns;
  const int column = tid % columns, group = tid / columns;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (group < groups) {
    for (int j = group; j < num_parts; j += groups) {
      const float w = weight[j];
      if (w == 0.0f) continue;
      const float4 o =
          __ldg(reinterpret_cast<const float4*>(o_parts + (j * rows + r) * head_dim) + column);
      acc.x = fmaf(w, o.x, acc.x);
      acc.y = fmaf(w, o.y, acc.y);
      acc.z = fmaf(w, o.z, acc.z);
      acc.w = fmaf(w, o.w, acc.w);
    }
  }
  partial[tid] = acc;
  __syncthreads();
  if (tid < columns) {
    for (int g = 1; g < groups; ++g) {
      const float4 o = partial[g * columns + tid];
      acc.x += o.x;
      acc.y += o.y;
      acc.z += o.z;
      acc.w += o.w;
    }
    const float s = inv_total;
    __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out + r * head_dim) + 2 * tid;
    dst[0] = __floats2bfloat162_rn(acc.x * s, acc.y * s);
    dst[1] = __floats2bfloat162_rn(acc.z * s, acc.w * s);
  }
  if (lse_out != nullptr && tid == 0) {
    lse_out[r] = inv_total > 0.0f ? max_lse - logf(inv_total) : NegInf();
  }
}

// ---- Dispatch -----------------------------------------------------------------------

template <int D, class KvT>
cudaError_t LaunchDecodeForDim(int g, dim3 grid, cudaStream_t stream, const Bf16* q,
                               const KvT* k_cache, const KvT* v_cache, const int32_t* block_tables,
                               const int32_t* kv_begin, const int32_t* kv_end, float* o_part,
                               float* lse_part, Bf16* out_bf16, int num_seqs,
                               const AttentionShape& s, float scale_log2, int split_len, int gqa) {
  // Wide CTAs only where a thread's state fits the 128 registers 512
  // threads leave it (G * D <= 256; G * D = 512 spilled up to 1 KiB per
  // thread and ran 28% slower at GQA 8 x 64, batch 1, on the H200).
  const bool wide = static_cast<long long>(grid.x) * grid.y * grid.z < DeviceSmCount();
  if constexpr (std::is_same_v<KvT, Fp8E4m3> && (D == 64 || D == 128)) {
    if (gqa <= 16 && RequestedFp8DecodeKernel() == Fp8DecodeKernel::kMmaSync) {
      detail::LaunchKernel(Fp8DecodeMmaKernel<D, kDecodeWarps>, grid, kDecodeWarps * 32, 0,
                           stream, q, k_cache, v_cache, block_tables, kv_begin, kv_end, o_part,
                           lse_part, out_bf16, num_seqs, s.num_heads, s.num_kv_heads,
                           s.max_blocks, scale_log2, split_len, gqa);
      return cudaGetLastError();
    }
  }
#define ARBOR_DECODE_WARPS(G, W)                                                                 \
  detail::LaunchKernel(DecodeKernel<D, G, W, KvT>, grid, W * 32, 0, stream, q, k_cache, v_cache, \
                       block_tables, kv_begin, kv_end, o_part, lse_part, out_bf16, num_seqs,     \
                       s.num_heads, s.num_kv_heads, s.max_blocks, scale_log2, split_len, gqa)
#define ARBOR_DECODE(G)                          \
  do {                                           \
    if constexpr (D >= 64 && G * D <= 256) {     \
      if (wide) {                                \
        ARBOR_DECODE_WARPS(G, kWideDecodeWarps); \
        break;                                   \
      }                                          \
    }                                            \
    ARBOR_DECODE_WARPS(G, kDecodeWarps);         \
  } while (0)
  if (g <= 1)
    ARBOR_DECODE(1);
  else if (g <= 2)
    ARBOR_DECODE(2);
  else if (g <= 4)
    ARBOR_DECODE(4);
  else
    ARBOR_DECODE(8);
#undef ARBOR_DECODE_WARPS
#undef ARBOR_DECODE
  return cudaGetLastError();
}

// Decode attention; writes partials (o_part/lse_part) or, when out_bf16 is
// not null (num_splits must be 1), the final bf16 output.
template <class KvT>
cudaError_t LaunchDecodeAttention(const Bf16* q, const KvT* k_cache, const KvT* v_cache,
                                  const int32_t* block_tables, const int32_t* kv_begin,
                                  const int32_t* kv_end, float* o_part, float* lse_part,
                                  Bf16* out_bf16, int num_seqs, const AttentionShape& shape,
                                  int split_len, int num_splits, cudaStream_t stream) {
  if (!detail::ValidAttentionShape(shape) || num_seqs < 0 || num_splits <= 0 || split_len <= 0 ||
      split_len % kKvBlockSize != 0 || (out_bf16 != nullptr && num_splits != 1) ||
      (out_bf16 == nullptr && (o_part == nullptr || lse_part == nullptr)) ||
      shape.kv_dtype != detail::KvDtypeOf<KvT>()) {
    return cudaErrorInvalidValue;
  }
  if (num_seqs == 0) return cudaSuccess;
  const int gqa = shape.num_heads / shape.num_kv_heads;
  const dim3 grid(shape.num_kv_heads, num_seqs, num_splits);
  const float scale_log2 = shape.scale * kLog2e;
  switch (shape.head_dim) {
    case 16:
      return LaunchDecodeForDim<16>(gqa, grid, stream, q, k_cache, v_cache, block_tables, kv_begin,
                                    kv_end, o_part, lse_part, out_bf16, num_seqs, shape, scale_log2,
                                    split_len, gqa);
    case 32:
      return LaunchDecodeForDim<32>(gqa, grid, stream, q, k_cache, v_cache, block_tables, kv_begin,
                                    kv_end, o_part, lse_part, out_bf16, num_seqs, shape, scale_log2,
                                    split_len, gqa);
    case 64:
      return LaunchDecodeForDim<64>(gqa, grid, stream, q, k_cache, v_cache, block_tables, kv_begin,
                                    kv_end, o_part, lse_part, out_bf16, num_seqs, shape, scale_log2,
                                    split_len, gqa);
    default:
      return LaunchDecodeForDim<128>(gqa, grid, stream, q, k_cache, v_cache, block_tables, kv_begin,
                                     kv_end, o_part, lse_part, out_bf16, num_seqs, shape,
                                     scale_log2, split_len, gqa);
  }
}

SplitPlan DecodePlan(int num_seqs, const AttentionShape& shape, int max_context_len) {
  return PlanSplits(max_context_len, num_seqs * std::max(shape.num_kv_heads, 1), kKvBlockSize);
}

}  // namespace

KernelStatus MergeAttentionStates(const float* o_parts, const float* lse_parts, Bf16* out,
                                  float* lse_out, int num_parts, int num_rows, int num_heads,
                                  int head_dim, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_parts <= 0 || num_rows < 0 || num_heads <= 0 || head_dim <= 0) {
    return cudaErrorInvalidValue;
  }
  if (num_rows == 0) return cudaSuccess;
  if (head_dim % 4 != 0 || head_dim / 4 > kMergeThreads || num_parts > 8192) {
    return cudaErrorInvalidValue;
  }
  const size_t rows = static_cast<size_t>(num_rows) * num_heads;
  if (rows > 0x7fffffffu) return cudaErrorInvalidValue;
  const size_t smem = (((num_parts + 3) & ~3) + 4 * kMergeThreads) * sizeof(float);
  detail::LaunchKernel(MergeKernel, static_cast<unsigned>(rows), kMergeThreads, smem, stream,
                       o_parts, lse_parts, out, lse_out, num_parts, rows, head_dim);
  return cudaGetLastError();
}

namespace {

template <class KvT>
KernelStatus PagedDecodeAttentionImpl(const Bf16* q, const KvT* k_cache, const KvT* v_cache,
                                      const int32_t* block_tables, const int32_t* context_lens,
                                      Bf16* out, void* workspace, int num_seqs, int max_context_len,
                                      const AttentionShape& shape, Stream stream) {
  const SplitPlan plan = DecodePlan(num_seqs, shape, max_context_len);
  if (plan.num_splits == 1) {  // enough sequences to fill the device: no merge
    return LaunchDecodeAttention(q, k_cache, v_cache, block_tables, nullptr, context_lens, nullptr,
                                 nullptr, out, num_seqs, shape, plan.split_len, 1,
                                 detail::AsStream(stream));
  }
  const size_t rows = static_cast<size_t>(plan.num_splits) * num_seqs * shape.num_heads;
  float* o_part = static_cast<float*>(workspace);
  float* lse_part = o_part + rows * shape.head_dim;
  const cudaError_t error = LaunchDecodeAttention(
      q, k_cache, v_cache, block_tables, nullptr, context_lens, o_part, lse_part, nullptr, num_seqs,
      shape, plan.split_len, plan.num_splits, detail::AsStream(stream));
  if (error != cudaSuccess) return error;
  return MergeAttentionStates(o_part, lse_part, out, nullptr, plan.num_splits, num_seqs,
                              shape.num_heads, shape.head_dim, stream);
}

}  // namespace

KernelStatus DecodeAttentionPartial(const Bf16* q, const Bf16* k_cache, const Bf16* v_cache,
                                    const int32_t* block_tables, const int32_t* kv_begin,
                                    const int32_t* kv_end, float* o_part, float* lse_part,
                                    int num_seqs, const AttentionShape& shape, int split_len,
                                    int num_splits, Stream stream) {
  return LaunchDecodeAttention(q, k_cache, v_cache, block_tables, kv_begin, kv_end, o_part,
                               lse_part, nullptr, num_seqs, shape, split_len, num_splits,
                               detail::AsStream(stream));
}
KernelStatus DecodeAttentionPartial(const Bf16* q, const Fp8E4m3* k_cache, const Fp8E4m3* v_cache,
                                    const int32_t* block_tables, const int32_t* kv_begin,
                                    const int32_t* kv_end, float* o_part, float* lse_part,
                                    int num_seqs, const AttentionShape& shape, int split_len,
                                    int num_splits, Stream stream) {
  return LaunchDecodeAttention(q, k_cache, v_cache, block_tables, kv_begin, kv_end, o_part,
                               lse_part, nullptr, num_seqs, shape, split_len, num_splits,
                               detail::AsStream(stream));
}

size_t PagedDecodeWorkspaceBytes(int num_seqs, const AttentionShape& shape, int max_context_len) {
  const SplitPlan plan = DecodePlan(num_seqs, shape, max_context_len);
  const size_t rows = static_cast<size_t>(plan.num_splits) * num_seqs * shape.num_heads;
  return rows * (shape.head_dim + 1) * sizeof(float);
}

KernelStatus PagedDecodeAttention(const Bf16* q, const Bf16* k_cache, const Bf16* v_cache,
                                  const int32_t* block_tables, const int32_t* context_lens,
                                  Bf16* out, void* workspace, int num_seqs, int max_context_len,
                                  const AttentionShape& shape, Stream stream) {
  return PagedDecodeAttentionImpl(q, k_cache, v_cache, block_tables, context_lens, out, workspace,
                                  num_seqs, max_context_len, shape, stream);
}
KernelStatus PagedDecodeAttention(const Bf16* q, const Fp8E4m3* k_cache, const Fp8E4m3* v_cache,
                                  const int32_t* block_tables, const int32_t* context_lens,
                                  Bf16* out, void* workspace, int num_seqs, int max_context_len,
                                  const AttentionShape& shape, Stream stream) {
  return PagedDecodeAttentionImpl(q, k_cache, v_cache, block_tables, context_lens, out, workspace,
                                  num_seqs, max_context_len, shape, stream);
}

}  // namespace arbor::kernels
