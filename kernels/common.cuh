// Device helpers shared by kernels/*.cu: bf16 vectors, warp reductions.
#ifndef ARBOR_KERNELS_COMMON_CUH_
#define ARBOR_KERNELS_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <utility>

#include "kernels/device.h"
#include "kernels/kernels.h"

namespace arbor::kernels::detail {

// The cudaStream_t behind kernels.h's opaque Stream.
inline cudaStream_t AsStream(Stream stream) { return static_cast<cudaStream_t>(stream); }

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024).
// `scratch` holds 32 floats; every thread gets the result.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int num_warps = blockDim.x >> 5;
  v = lane < num_warps ? scratch[lane] : 0.0f;
  return WarpSum(v);
}

// 8 bf16 values in one 128-bit word.
union Bf16x8 {
  uint4 raw;
  __nv_bfloat162 pair[4];
};

__device__ __forceinline__ void Unpack8(const uint4& raw, float* out) {
  Bf16x8 v;
  v.raw = raw;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(v.pair[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ uint4 Pack8(const float* in) {
  Bf16x8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) v.pair[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  return v.raw;
}

// ---- KV pool elements (kernels.h: Bf16 or Fp8E4m3) ---------------------------
// Eight consecutive elements of a pool row travel as one raw word: 16 bytes
// of bf16 or 8 of fp8. Widening fp8 is exact (every e4m3 value is a half and
// a bf16 value); narrowing rounds to nearest even and saturates (Fp8E4m3).

template <class KvT>
struct KvRaw8;
template <>
struct KvRaw8<Bf16> {
  using Type = uint4;
};
template <>
struct KvRaw8<Fp8E4m3> {
  using Type = uint2;
};

__device__ __forceinline__ uint4 LoadKvRaw8(const Bf16* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ uint2 LoadKvRaw8(const Fp8E4m3* p) {
  return __ldg(reinterpret_cast<const uint2*>(p));
}

// Two e4m3 values (the low 16 bits, low byte first) as an fp16x2 register:
// exact (every e4m3 value is an fp16 value).
__device__ __forceinline__ uint32_t Fp8x2ToHalf2Bits(uint32_t two) {
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two & 0xffffu), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
}

// Two fp8 values (low byte first) as floats.
__device__ __forceinline__ float2 Fp8x2ToFloat2(uint32_t two) {
  const uint32_t bits = Fp8x2ToHalf2Bits(two);
  return __half22float2(*reinterpret_cast<const __half2*>(&bits));
}

__device__ __forceinline__ void UnpackKv8(const uint4& raw, float* out) { Unpack8(raw, out); }
__device__ __forceinline__ void UnpackKv8(const uint2& raw, float* out) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = Fp8x2ToFloat2((i < 2 ? raw.x : raw.y) >> (16 * (i & 1)));
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// Eight pool elements as eight bf16 in one 128-bit word.
__device__ __forceinline__ uint4 KvRaw8AsBf16(const uint4& raw) { return raw; }
__device__ __forceinline__ uint4 KvRaw8AsBf16(const uint2& raw) {
  Bf16x8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v.pair[i] = __float22bfloat162_rn(Fp8x2ToFloat2((i < 2 ? raw.x : raw.y) >> (16 * (i & 1))));
  }
  return v.raw;
}

__device__ __forceinline__ uint8_t BfloatToFp8(__nv_bfloat16 v) {
  return __nv_cvt_float_to_fp8(__bfloat162float(v), __NV_SATFINITE, __NV_E4M3);
}

// One element into a pool.
__device__ __forceinline__ void StoreKv(Bf16* dst, __nv_bfloat16 v) {
  *reinterpret_cast<__nv_bfloat16*>(dst) = v;
}
__device__ __forceinline__ void StoreKv(Fp8E4m3* dst, __nv_bfloat16 v) {
  dst->bits = BfloatToFp8(v);
}

// Eight bf16 (one 128-bit word) into eight consecutive pool elements.
__device__ __forceinline__ void StoreKv8(Bf16* dst, const uint4& bf16x8) {
  *reinterpret_cast<uint4*>(dst) = bf16x8;
}
__device__ __forceinline__ void StoreKv8(Fp8E4m3* dst, const uint4& bf16x8) {
  Bf16x8 v;
  v.raw = bf16x8;
  uint32_t word[2] = {0, 0};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const __nv_bfloat16 e = i % 2 == 0 ? v.pair[i / 2].x : v.pair[i / 2].y;
    word[i / 4] |= static_cast<uint32_t>(BfloatToFp8(e)) << (8 * (i % 4));
  }
  *reinterpret_cast<uint2*>(dst) = make_uint2(word[0], word[1]);
}

// The pool element type behind a KvDtype.
template <class KvT>
constexpr KvDtype KvDtypeOf();
template <>
constexpr KvDtype KvDtypeOf<Bf16>() {
  return KvDtype::kBf16;
}
template <>
constexpr KvDtype KvDtypeOf<Fp8E4m3>() {
  return KvDtype::kFp8E4m3;
}

// SiLU as the SwiGLU kernels compute it (gate in fp32).
__device__ __forceinline__ float Silu(float g) { return g / (1.0f + __expf(-g)); }

// The sequence of token t: the last s with seq_starts[s] <= t.
__device__ __forceinline__ int SequenceOf(const int32_t* __restrict__ seq_starts, int num_seqs,
                                          int t) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (seq_starts[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// The pool slot of token t at `pos` in sequence `seq`, or -1 (skipped).
__device__ __forceinline__ int64_t KvSlot(const int32_t* __restrict__ block_tables, int seq,
                                          int pos, int max_blocks) {
  const int block_index = pos / kKvBlockSize;
  if (pos < 0 || block_index >= max_blocks) return -1;
  const int block = block_tables[static_cast<size_t>(seq) * max_blocks + block_index];
  if (block < 0) return -1;
  return static_cast<int64_t>(block) * kKvBlockSize + pos % kKvBlockSize;
}

// RoPE (rotate_half) of the pair (x0, x1) = (dims i, i + head_dim / 2) at a
// position: every kernel that rotates calls this, so that they agree bit for
// bit. sincosf: accurate for large angles.
__device__ __forceinline__ void RotatePair(float x0, float x1, float position, float inv_freq,
                                           __nv_bfloat16* lo, __nv_bfloat16* hi) {
  float s, c;
  sincosf(position * inv_freq, &s, &c);
  *lo = __float2bfloat16_rn(x0 * c - x1 * s);
  *hi = __float2bfloat16_rn(x1 * c + x0 * s);
}

// ---- Attention helpers (attention.cu, attention_decode.cu, attention_sm90.cu) -

// A shape the attention kernels take: GQA of at most 8, head_dim 16/32/64/128.
inline bool ValidAttentionShape(const AttentionShape& s) {
  return s.scale > 0.0f && s.num_heads > 0 && s.num_kv_heads > 0 &&
         s.num_heads % s.num_kv_heads == 0 && s.num_heads / s.num_kv_heads <= 8 &&
         s.max_blocks > 0 &&
         (s.head_dim == 16 || s.head_dim == 32 || s.head_dim == 64 || s.head_dim == 128);
}

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float NegInf() { return __int_as_float(0xff800000); }

// 2^x in one MUFU op; tiny results flush to zero, which softmax weights
// tolerate; exp2(-inf) = 0.
__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// 16 bytes global -> shared without registers; invalid: zero-fill, nothing read.
__device__ __forceinline__ void CpAsync16(uint32_t smem_addr, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  CpAsync16(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), gmem, valid);
}
// The same, with L2 fetching the whole 256-byte run around the 16 bytes: for
// copies whose neighbours (other threads' chunks of the row, the next row)
// are asked for at the same time.
__device__ __forceinline__ void CpAsync16L2Run256(uint32_t smem_addr, const void* gmem,
                                                  bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(smem_addr),
               "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- Tensor cores: mma.sync m16n8k16, fp32 accumulate ----------------------
// c (16x8) += a (16x16, row) b (16x8, col) in the PTX fragment layout.
// Register-only, so not volatile: the compiler may interleave them with loads.
#define ARBOR_MMA_M16N8K16(NAME, TYPE)                                                   \
  __device__ __forceinline__ void NAME(float* c, const uint32_t* a, uint32_t b0,         \
                                       uint32_t b1) {                                    \
    asm("mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE ".f32 {%0,%1,%2,%3}, "   \
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                                       \
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                 \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                 \
  }
ARBOR_MMA_M16N8K16(MmaBf16, "bf16")
ARBOR_MMA_M16N8K16(MmaF16, "f16")
#undef ARBOR_MMA_M16N8K16

// ---- Programmatic dependent launch (sm_90) ---------------------------------
// Every Arbor kernel is launched by LaunchKernel, which, where
// DependentLaunchEnabled(), lets it start while the kernel before it on the
// stream drains: its CTAs get resident and its launch latency hides behind
// that kernel's tail. In return every kernel calls AwaitPriorKernels() before
// it touches global memory that another kernel writes or reads; only reads of
// memory no kernel writes (weights: prefetch) may come first. Because each
// kernel waits for the one before it to complete, completion is transitive
// down the stream.

// Waits for the grids this one depends on to complete (their writes visible),
// then lets the next grid on the stream launch.
__device__ __forceinline__ void AwaitPriorKernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Brings the 128-byte line at `p` into L2 (a hint; no fault on any address).
__device__ __forceinline__ void PrefetchL2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
}

// kernel<<<grid, block, smem, stream>>>(args...), as a dependent launch where
// enabled. Errors surface through cudaGetLastError(), as with <<<>>>.
template <typename... Params, typename... Args>
inline void LaunchKernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                         cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = DependentLaunchEnabled() ? 1 : 0;
  (void)cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// Lets kKernel use `bytes` of dynamic shared memory on the current device
// (the attribute is per device: set once for each device the process uses).
template <auto kKernel>
cudaError_t AllowDynamicSmem(size_t bytes) {
  static std::mutex mu;
  static unsigned configured_mask = 0;
  int device = 0;
  const cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= 32 || (configured_mask & (1u << device))) return cudaSuccess;
  const cudaError_t set = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(bytes));
  if (set == cudaSuccess) configured_mask |= 1u << device;
  return set;
}

inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace arbor::kernels::detail

#endif  // ARBOR_KERNELS_COMMON_CUH_
