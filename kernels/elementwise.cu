// Memory-bound per-token kernels: embedding gather, residual add + RMSNorm,
// RoPE, SwiGLU, bias add, KV append, KV block copies. 128-bit loads wherever
// the row width allows.
#include "kernels/common.cuh"
#include "kernels/device.h"

namespace arbor::kernels {
namespace {

using detail::Aligned16;
using detail::KvSlot;
using detail::Pack8;
using detail::SequenceOf;
using detail::Silu;
using detail::Unpack8;

// ---- Embedding -------------------------------------------------------------

template <bool kVec>
__global__ void EmbeddingGatherKernel(const int32_t* __restrict__ tokens,
                                      const Bf16* __restrict__ table, Bf16* __restrict__ out,
                                      int hidden, int vocab) {
  detail::AwaitPriorKernels();
  const int t = blockIdx.x;
  const int token = tokens[t];
  const bool valid = token >= 0 && token < vocab;
  const Bf16* src = table + static_cast<size_t>(valid ? token : 0) * hidden;
  Bf16* dst = out + static_cast<size_t>(t) * hidden;
  if constexpr (kVec) {
    const uint4* s = reinterpret_cast<const uint4*>(src);
    uint4* d = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) {
      d[i] = valid ? __ldg(s + i) : make_uint4(0, 0, 0, 0);
    }
  } else {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = valid ? src[i] : Bf16{0};
  }
}

// ---- Residual add + RMSNorm --------------------------------------------------

// One block per token. Pass 1 adds x into the residual (rounded to bf16, as
// the model stores it) and sums squares; pass 2 normalises.
template <bool kVec>
__global__ void RmsNormResidualKernel(const Bf16* __restrict__ x, Bf16* __restrict__ residual,
                                      const Bf16* __restrict__ weight, Bf16* __restrict__ out,
                                      int hidden, float eps) {
  detail::AwaitPriorKernels();
  __shared__ float scratch[32];
  const size_t row = static_cast<size_t>(blockIdx.x) * hidden;
  float sum_sq = 0.0f;
  if constexpr (kVec) {
    uint4* r4 = reinterpret_cast<uint4*>(residual + row);
    const uint4* x4 = x ? reinterpret_cast<const uint4*>(x + row) : nullptr;
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) {
      float r[8];
      Unpack8(r4[i], r);
      if (x4) {
        float xv[8];
        Unpack8(__ldg(x4 + i), xv);
#pragma unroll
        for (int j = 0; j < 8; ++j) r[j] += xv[j];
        const uint4 packed = Pack8(r);
        r4[i] = packed;
        Unpack8(packed, r);  // normalise what is stored
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) sum_sq += r[j] * r[j];
    }
  } else {
    __nv_bfloat162* r2 = reinterpret_cast<__nv_bfloat162*>(residual + row);
    const __nv_bfloat162* x2 = x ? reinterpret_cast<const __nv_bfloat162*>(x + row) : nullptr;
    for (int i = threadIdx.x; i < hidden / 2; i += blockDim.x) {
      float2 r = __bfloat1622float2(r2[i]);
      if (x2) {
        const float2 xv = __bfloat1622float2(x2[i]);
        const __nv_bfloat162 packed = __floats2bfloat162_rn(r.x + xv.x, r.y + xv.y);
        r2[i] = packed;
        r = __bfloat1622float2(packed);
      }
      sum_sq += r.x * r.x + r.y * r.y;
    }
  }
  const float inv_rms = rsqrtf(detail::BlockSum(sum_sq, scratch) / hidden + eps);
  if constexpr (kVec) {
    const uint4* r4 = reinterpret_cast<const uint4*>(residual + row);
    const uint4* w4 = reinterpret_cast<const uint4*>(weight);
    uint4* o4 = reinterpret_cast<uint4*>(out + row);
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) {
      float r[8], w[8];
      Unpack8(r4[i], r);
      Unpack8(__ldg(w4 + i), w);
#pragma unroll
      for (int j = 0; j < 8; ++j) r[j] = r[j] * inv_rms * w[j];
      o4[i] = Pack8(r);
    }
  } else {
    const __nv_bfloat162* r2 = reinterpret_cast<const __nv_bfloat162*>(residual + row);
    const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(weight);
    __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(out + row);
    for (int i = threadIdx.x; i < hidden / 2; i += blockDim.x) {
      const float2 r = __bfloat1622float2(r2[i]);
      const float2 w = __bfloat1622float2(w2[i]);
      o2[i] = __floats2bfloat162_rn(r.x * inv_rms * w.x, r.y * inv_rms * w.y);
    }
  }
}

// ---- RoPE ----------------------------------------------------------------------

// One block per token; thread j handles pair (i, i + half) of head h, for the
// q heads then the k heads.
__global__ void RopeKernel(__nv_bfloat16* __restrict__ q, __nv_bfloat16* __restrict__ k,
                           const int32_t* __restrict__ positions,
                           const float* __restrict__ inv_freq, int num_heads, int num_kv_heads,
                           int head_dim) {
  detail::AwaitPriorKernels();
  const int t = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  const int total = (num_heads + num_kv_heads) * half;
  for (int j = threadIdx.x; j < total; j += blockDim.x) {
    const int head = j / half, i = j % half;
    __nv_bfloat16* vec =
        head < num_heads
            ? q + (static_cast<size_t>(t) * num_heads + head) * head_dim
            : k + (static_cast<size_t>(t) * num_kv_heads + (head - num_heads)) * head_dim;
    detail::RotatePair(__bfloat162float(vec[i]), __bfloat162float(vec[i + half]), pos, inv_freq[i],
                       &vec[i], &vec[i + half]);
  }
}

// ---- SwiGLU ----------------------------------------------------------------------

template <bool kVec>
__global__ void SwiGluKernel(const Bf16* __restrict__ gate_up, Bf16* __restrict__ out,
                             int num_tokens, int inter) {
  detail::AwaitPriorKernels();
  constexpr int kWidth = kVec ? 8 : 2;
  const int per_row = inter / kWidth;
  const size_t total = static_cast<size_t>(num_tokens) * per_row;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t t = idx / per_row;
    const int c = static_cast<int>(idx % per_row) * kWidth;
    const Bf16* gate = gate_up + t * 2 * inter + c;
    const Bf16* up = gate + inter;
    Bf16* dst = out + t * inter + c;
    if constexpr (kVec) {
      float g[8], u[8];
      Unpack8(__ldg(reinterpret_cast<const uint4*>(gate)), g);
      Unpack8(__ldg(reinterpret_cast<const uint4*>(up)), u);
#pragma unroll
      for (int j = 0; j < 8; ++j) g[j] = Silu(g[j]) * u[j];
      *reinterpret_cast<uint4*>(dst) = Pack8(g);
    } else {
      const float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(gate));
      const float2 u = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(up));
      *reinterpret_cast<__nv_bfloat162*>(dst) =
          __floats2bfloat162_rn(Silu(g.x) * u.x, Silu(g.y) * u.y);
    }
  }
}

// ---- KV append ----------------------------------------------------------------

// One block per token; eight elements per copy (head_dim is a multiple of 8):
// 128-bit loads, 128-bit (bf16) or 64-bit (fp8) stores.
template <class KvT>
__global__ void KvAppendKernel(const uint4* __restrict__ k, const uint4* __restrict__ v,
                               const int32_t* __restrict__ positions,
                               const int32_t* __restrict__ seq_starts,
                               const int32_t* __restrict__ block_tables, KvT* __restrict__ k_cache,
                               KvT* __restrict__ v_cache, int num_seqs, int max_blocks,
                               int row_vecs) {
  detail::AwaitPriorKernels();
  const int t = blockIdx.x;
  const int64_t slot =
      KvSlot(block_tables, SequenceOf(seq_starts, num_seqs, t), positions[t], max_blocks);
  if (slot < 0) return;
  for (int i = threadIdx.x; i < row_vecs; i += blockDim.x) {
    const size_t at = (slot * row_vecs + i) * 8;
    detail::StoreKv8(k_cache + at, __ldg(k + static_cast<size_t>(t) * row_vecs + i));
    detail::StoreKv8(v_cache + at, __ldg(v + static_cast<size_t>(t) * row_vecs + i));
  }
}

// RopeKernel and KvAppendKernel in one launch over the stacked Q/K/V
// projection, one block per token: q rotated into its own buffer, k rotated
// straight into its pool slot, v copied there.
template <class KvT>
__global__ void RopeKvAppendKernel(
    const __nv_bfloat16* __restrict__ qkv, __nv_bfloat16* __restrict__ q,
    const int32_t* __restrict__ positions, const float* __restrict__ inv_freq,
    const int32_t* __restrict__ seq_starts, const int32_t* __restrict__ block_tables,
    KvT* __restrict__ k_cache, KvT* __restrict__ v_cache, int num_heads, int num_kv_heads,
    int head_dim, int num_seqs, int max_blocks) {
  detail::AwaitPriorKernels();
  const int t = blockIdx.x;
  const int pos_int = positions[t];
  const int64_t slot =
      KvSlot(block_tables, SequenceOf(seq_starts, num_seqs, t), pos_int, max_blocks);
  const int half = head_dim / 2;
  const int q_dim = num_heads * head_dim, kv_dim = num_kv_heads * head_dim;
  const __nv_bfloat16* row = qkv + static_cast<size_t>(t) * (q_dim + 2 * kv_dim);
  const float pos = static_cast<float>(pos_int);
  // K heads only when the token has a slot.
  const int total = (num_heads + (slot >= 0 ? num_kv_heads : 0)) * half;
  for (int j = threadIdx.x; j < total; j += blockDim.x) {
    const int head = j / half, i = j % half;
    const __nv_bfloat16* src = row + head * head_dim;  // K heads follow the Q heads
    __nv_bfloat16 lo, hi;
    detail::RotatePair(__bfloat162float(src[i]), __bfloat162float(src[i + half]), pos, inv_freq[i],
                       &lo, &hi);
    if (head < num_heads) {
      __nv_bfloat16* dst = q + (static_cast<size_t>(t) * num_heads + head) * head_dim;
      dst[i] = lo;
      dst[i + half] = hi;
    } else {
      KvT* dst = k_cache + slot * kv_dim + (head - num_heads) * head_dim;
      detail::StoreKv(dst + i, lo);
      detail::StoreKv(dst + i + half, hi);
    }
  }
  if (slot < 0) return;
  const int row_vecs = kv_dim / 8;
  const uint4* v = reinterpret_cast<const uint4*>(row + q_dim + kv_dim);
  for (int i = threadIdx.x; i < row_vecs; i += blockDim.x) {
    detail::StoreKv8(v_cache + (slot * row_vecs + i) * 8, __ldg(v + i));
  }
}

// ---- Bias, block copies ---------------------------------------------------------

__global__ void AddBiasKernel(__nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ bias,
                              size_t total, int dim) {
  detail::AwaitPriorKernels();
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    x[i] = __float2bfloat16_rn(__bfloat162float(x[i]) + __bfloat162float(bias[i % dim]));
  }
}

// blockIdx.y = pair; 128-bit copies (block_elems is a multiple of 8).
__global__ void CopyKvBlocksKernel(uint4* __restrict__ k_cache, uint4* __restrict__ v_cache,
                                   const int32_t* __restrict__ src_dst, int block_vecs) {
  detail::AwaitPriorKernels();
  const size_t src = static_cast<size_t>(src_dst[2 * blockIdx.y]) * block_vecs;
  const size_t dst = static_cast<size_t>(src_dst[2 * blockIdx.y + 1]) * block_vecs;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < block_vecs; i += gridDim.x * blockDim.x) {
    k_cache[dst + i] = k_cache[src + i];
    v_cache[dst + i] = v_cache[src + i];
  }
}

int ThreadsFor(int work_items) {
  int threads = 32;
  while (threads < work_items && threads < 1024) threads *= 2;
  return threads;
}

}  // namespace

KernelStatus EmbeddingGather(const int32_t* tokens, const Bf16* table, Bf16* out, int num_tokens,
                             int hidden, int vocab, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_tokens < 0 || hidden <= 0 || vocab <= 0) return cudaErrorInvalidValue;
  if (num_tokens == 0) return cudaSuccess;
  const bool vec = hidden % 8 == 0 && Aligned16(table) && Aligned16(out);
  const int threads = std::min(256, ThreadsFor(vec ? hidden / 8 : hidden));
  if (vec) {
    detail::LaunchKernel(EmbeddingGatherKernel<true>, num_tokens, threads, 0, stream, tokens, table,
                         out, hidden, vocab);
  } else {
    detail::LaunchKernel(EmbeddingGatherKernel<false>, num_tokens, threads, 0, stream, tokens,
                         table, out, hidden, vocab);
  }
  return cudaGetLastError();
}

KernelStatus RmsNormResidual(const Bf16* x, Bf16* residual, const Bf16* weight, Bf16* out,
                             int num_tokens, int hidden, float eps, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_tokens < 0 || hidden <= 0 || hidden % 2 != 0) return cudaErrorInvalidValue;
  if (num_tokens == 0) return cudaSuccess;
  const bool vec = hidden % 8 == 0 && Aligned16(residual) && Aligned16(weight) && Aligned16(out) &&
                   (x == nullptr || Aligned16(x));
  const int threads = std::min(1024, ThreadsFor(vec ? hidden / 8 : hidden / 2));
  if (vec) {
    detail::LaunchKernel(RmsNormResidualKernel<true>, num_tokens, threads, 0, stream, x, residual,
                         weight, out, hidden, eps);
  } else {
    detail::LaunchKernel(RmsNormResidualKernel<false>, num_tokens, threads, 0, stream, x, residual,
                         weight, out, hidden, eps);
  }
  return cudaGetLastError();
}

KernelStatus ApplyRope(Bf16* q, Bf16* k, const int32_t* positions, const float* inv_freq,
                       int num_tokens, int num_heads, int num_kv_heads, int head_dim,
                       Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_tokens < 0 || num_heads <= 0 || num_kv_heads < 0 || head_dim <= 0 || head_dim % 2) {
    return cudaErrorInvalidValue;
  }
  if (num_tokens == 0) return cudaSuccess;
  const int threads = std::min(512, ThreadsFor((num_heads + num_kv_heads) * head_dim / 2));
  detail::LaunchKernel(RopeKernel, num_tokens, threads, 0, stream,
                       reinterpret_cast<__nv_bfloat16*>(q), reinterpret_cast<__nv_bfloat16*>(k),
                       positions, inv_freq, num_heads, num_kv_heads, head_dim);
  return cudaGetLastError();
}

KernelStatus SwiGlu(const Bf16* gate_up, Bf16* out, int num_tokens, int inter,
                    Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_tokens < 0 || inter <= 0 || inter % 2 != 0) return cudaErrorInvalidValue;
  if (num_tokens == 0) return cudaSuccess;
  const bool vec = inter % 8 == 0 && Aligned16(gate_up) && Aligned16(out);
  const size_t work = static_cast<size_t>(num_tokens) * (inter / (vec ? 8 : 2));
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((work + threads - 1) / threads, 65535));
  if (vec) {
    detail::LaunchKernel(SwiGluKernel<true>, blocks, threads, 0, stream, gate_up, out, num_tokens,
                         inter);
  } else {
    detail::LaunchKernel(SwiGluKernel<false>, blocks, threads, 0, stream, gate_up, out, num_tokens,
                         inter);
  }
  return cudaGetLastError();
}

KernelStatus AddBias(Bf16* x, const Bf16* bias, int num_rows, int dim, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_rows < 0 || dim <= 0) return cudaErrorInvalidValue;
  if (num_rows == 0) return cudaSuccess;
  const size_t total = static_cast<size_t>(num_rows) * dim;
  const int blocks = static_cast<int>(std::min<size_t>((total + 255) / 256, 65535));
  detail::LaunchKernel(AddBiasKernel, blocks, 256, 0, stream, reinterpret_cast<__nv_bfloat16*>(x),
                       reinterpret_cast<const __nv_bfloat16*>(bias), total, dim);
  return cudaGetLastError();
}

namespace {

// Both pools' element sizes: 16-byte copies of block_bytes per block.
KernelStatus CopyKvBlockBytes(void* k_cache, void* v_cache, const int32_t* src_dst, int num_pairs,
                              int block_bytes, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_pairs < 0 || block_bytes <= 0 || block_bytes % 16 != 0 || num_pairs > 65535 ||
      !Aligned16(k_cache) || !Aligned16(v_cache)) {
    return cudaErrorInvalidValue;
  }
  if (num_pairs == 0) return cudaSuccess;
  const int block_vecs = block_bytes / 16;
  const int threads = std::min(256, ThreadsFor(block_vecs));
  const dim3 grid((block_vecs + threads - 1) / threads, num_pairs);
  detail::LaunchKernel(CopyKvBlocksKernel, grid, threads, 0, stream,
                       reinterpret_cast<uint4*>(k_cache), reinterpret_cast<uint4*>(v_cache),
                       src_dst, block_vecs);
  return cudaGetLastError();
}

template <class KvT>
KernelStatus KvAppendImpl(const Bf16* k, const Bf16* v, const int32_t* positions,
                          const int32_t* seq_starts, const int32_t* block_tables, KvT* k_cache,
                          KvT* v_cache, int num_tokens, int num_seqs, int max_blocks,
                          int num_kv_heads, int head_dim, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_tokens < 0 || num_seqs <= 0 || max_blocks <= 0 || num_kv_heads <= 0 ||
      head_dim % 8 != 0 || !Aligned16(k) || !Aligned16(v) || !Aligned16(k_cache) ||
      !Aligned16(v_cache)) {
    return cudaErrorInvalidValue;
  }
  if (num_tokens == 0) return cudaSuccess;
  const int row_vecs = num_kv_heads * head_dim / 8;
  detail::LaunchKernel(KvAppendKernel<KvT>, num_tokens, std::min(256, ThreadsFor(row_vecs)), 0,
                       stream, reinterpret_cast<const uint4*>(k), reinterpret_cast<const uint4*>(v),
                       positions, seq_starts, block_tables, k_cache, v_cache, num_seqs, max_blocks,
                       row_vecs);
  return cudaGetLastError();
}

template <class KvT>
KernelStatus RopeKvAppendImpl(const Bf16* qkv, Bf16* q, const int32_t* positions,
                              const float* inv_freq, const int32_t* seq_starts,
                              const int32_t* block_tables, KvT* k_cache, KvT* v_cache,
                              int num_tokens, int num_seqs, int max_blocks, int num_heads,
                              int num_kv_heads, int head_dim, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  // head_dim % 8 == 0 keeps every V row 16-byte (bf16) or 8-byte (fp8) aligned.
  if (num_tokens < 0 || num_seqs <= 0 || max_blocks <= 0 || num_heads <= 0 || num_kv_heads <= 0 ||
      head_dim % 8 != 0 || !Aligned16(qkv) || !Aligned16(v_cache)) {
    return cudaErrorInvalidValue;
  }
  if (num_tokens == 0) return cudaSuccess;
  const int threads = std::min(512, ThreadsFor((num_heads + num_kv_heads) * head_dim / 2));
  detail::LaunchKernel(RopeKvAppendKernel<KvT>, num_tokens, threads, 0, stream,
                       reinterpret_cast<const __nv_bfloat16*>(qkv),
                       reinterpret_cast<__nv_bfloat16*>(q), positions, inv_freq, seq_starts,
                       block_tables, k_cache, v_cache, num_heads, num_kv_heads, head_dim, num_seqs,
                       max_blocks);
  return cudaGetLastError();
}

}  // namespace

KernelStatus CopyKvBlocks(Bf16* k_cache, Bf16* v_cache, const int32_t* src_dst, int num_pairs,
                          int block_elems, Stream stream) {
  if (block_elems <= 0 || block_elems % 8 != 0) return cudaErrorInvalidValue;
  return CopyKvBlockBytes(k_cache, v_cache, src_dst, num_pairs, block_elems * 2, stream);
}
KernelStatus CopyKvBlocks(Fp8E4m3* k_cache, Fp8E4m3* v_cache, const int32_t* src_dst, int num_pairs,
                          int block_elems, Stream stream) {
  if (block_elems <= 0 || block_elems % 16 != 0) return cudaErrorInvalidValue;
  return CopyKvBlockBytes(k_cache, v_cache, src_dst, num_pairs, block_elems, stream);
}

KernelStatus KvAppend(const Bf16* k, const Bf16* v, const int32_t* positions,
                      const int32_t* seq_starts, const int32_t* block_tables, Bf16* k_cache,
                      Bf16* v_cache, int num_tokens, int num_seqs, int max_blocks, int num_kv_heads,
                      int head_dim, Stream stream) {
  return KvAppendImpl(k, v, positions, seq_starts, block_tables, k_cache, v_cache, num_tokens,
                      num_seqs, max_blocks, num_kv_heads, head_dim, stream);
}
KernelStatus KvAppend(const Bf16* k, const Bf16* v, const int32_t* positions,
                      const int32_t* seq_starts, const int32_t* block_tables, Fp8E4m3* k_cache,
                      Fp8E4m3* v_cache, int num_tokens, int num_seqs, int max_blocks,
                      int num_kv_heads, int head_dim, Stream stream) {
  return KvAppendImpl(k, v, positions, seq_starts, block_tables, k_cache, v_cache, num_tokens,
                      num_seqs, max_blocks, num_kv_heads, head_dim, stream);
}

KernelStatus RopeKvAppend(const Bf16* qkv, Bf16* q, const int32_t* positions, const float* inv_freq,
                          const int32_t* seq_starts, const int32_t* block_tables, Bf16* k_cache,
                          Bf16* v_cache, int num_tokens, int num_seqs, int max_blocks,
                          int num_heads, int num_kv_heads, int head_dim, Stream stream) {
  return RopeKvAppendImpl(qkv, q, positions, inv_freq, seq_starts, block_tables, k_cache, v_cache,
                          num_tokens, num_seqs, max_blocks, num_heads, num_kv_heads, head_dim,
                          stream);
}
KernelStatus RopeKvAppend(const Bf16* qkv, Bf16* q, const int32_t* positions, const float* inv_freq,
                          const int32_t* seq_starts, const int32_t* block_tables, Fp8E4m3* k_cache,
                          Fp8E4m3* v_cache, int num_tokens, int num_seqs, int max_blocks,
                          int num_heads, int num_kv_heads, int head_dim, Stream stream) {
  return RopeKvAppendImpl(qkv, q, positions, inv_freq, seq_starts, block_tables, k_cache, v_cache,
                          num_tokens, num_seqs, max_blocks, num_heads, num_kv_heads, head_dim,
                          stream);
}

}  // namespace arbor::kernels
