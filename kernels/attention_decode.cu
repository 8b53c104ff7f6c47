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
    for (int i = threadIdx.x; i < gqa * D; i += blockDim.x) {
      if (out_bf16) {
        out_bf16[out_row0 * D + i] = 0;
      } else {
        o_part[out_row0 * D + i] = 0.0f;
      }
    }
    if (!out_bf16 && threadIdx.x < gqa) lse_part[out_row0 + threadIdx.x] = NegInf();
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
