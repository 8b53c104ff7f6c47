// GPU sampler: one block per row, bit-identical to reference::Sample.
// Integer masses (kernels/sampling_math.h) make every sum exact, so the
// top-k / top-p cuts are found by radix selection over the 64-bit keys
// (logit, id) without a sort, and the draw walks the kept tokens in id order
// through a block-wide prefix sum.
#include "kernels/common.cuh"
#include "kernels/launchers.h"
#include "kernels/sampling_math.h"

namespace arbor::kernels {
namespace {

constexpr int kSampleThreads = 1024;
constexpr int kSampleWarps = kSampleThreads / 32;

struct SampleShared {
  unsigned long long hist[256];
  unsigned long long warp_u64[kSampleWarps];
  float warp_f[kSampleWarps];
  int warp_i[kSampleWarps];
  unsigned long long selected_prefix;
  unsigned long long selected_need;
  int result_token;
};

__device__ __forceinline__ unsigned long long WarpSumU64(unsigned long long v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ unsigned long long BlockSumU64(unsigned long long v, SampleShared& sh) {
  v = WarpSumU64(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.warp_u64[threadIdx.x >> 5] = v;
  __syncthreads();
  v = (threadIdx.x & 31) < kSampleWarps ? sh.warp_u64[threadIdx.x & 31] : 0ull;
  return WarpSumU64(v);
}

// Radix selection of the key K* such that the weight (count or mass) of keys
// strictly above K* is < need <= the weight of keys >= K*, among keys >= floor.
template <bool kByMass>
__device__ uint64_t RadixSelect(const float* __restrict__ logits, int vocab, float max_logit,
                                float inv_t, uint64_t floor_key, unsigned long long need,
                                SampleShared& sh) {
  uint64_t prefix = 0, mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) sh.hist[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float l = logits[i];
      const uint64_t key = SamplingKey(l, i);
      if ((key & mask) != prefix || key < floor_key) continue;
      const unsigned long long w = kByMass ? SamplingMass(l, max_logit, inv_t) : 1ull;
      if (w != 0) atomicAdd(&sh.hist[(key >> shift) & 0xFF], w);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long above = 0;
      int bucket = 0;
      for (int bkt = 255; bkt >= 0; --bkt) {
        if (above + sh.hist[bkt] >= need) {
          bucket = bkt;
          break;
        }
        above += sh.hist[bkt];
      }
      sh.selected_prefix = prefix | (static_cast<uint64_t>(bucket) << shift);
      sh.selected_need = need - above;
    }
    __syncthreads();
    prefix = sh.selected_prefix;
    need = sh.selected_need;
    mask |= 0xFFull << shift;
  }
  return prefix;
}

__global__ void __launch_bounds__(kSampleThreads)
    SampleKernel(const float* __restrict__ all_logits, const SampleParams* __restrict__ params,
                 int32_t* __restrict__ tokens, float* __restrict__ logprobs, int vocab) {
  __shared__ SampleShared sh;
  const int row = blockIdx.x;
  const float* logits = all_logits + static_cast<size_t>(row) * vocab;
  const SampleParams p = params[row];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // Max and argmax (lowest id on ties).
  float best = -INFINITY;
  int best_id = vocab;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float l = logits[i];
    if (l > best) {
      best = l;
      best_id = i;
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, offset);
    const int oi = __shfl_xor_sync(0xffffffffu, best_id, offset);
    if (ob > best || (ob == best && oi < best_id)) {
      best = ob;
      best_id = oi;
    }
  }
  if (lane == 0) {
    sh.warp_f[warp] = best;
    sh.warp_i[warp] = best_id;
  }
  __syncthreads();
  best = sh.warp_f[0];
  best_id = sh.warp_i[0];
  for (int w = 1; w < kSampleWarps; ++w) {
    if (sh.warp_f[w] > best || (sh.warp_f[w] == best && sh.warp_i[w] < best_id)) {
      best = sh.warp_f[w];
      best_id = sh.warp_i[w];
    }
  }
  if (best_id >= vocab) best_id = 0;  // all NaN
  const float max_logit = best;

  float sum = 0.0f;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) sum += expf(logits[i] - max_logit);
  __shared__ float scratch[32];
  const float log_z = max_logit + logf(detail::BlockSum(sum, scratch));

  if (!(p.temperature > 0.0f)) {
    if (threadIdx.x == 0) {
      tokens[row] = best_id;
      logprobs[row] = logits[best_id] - log_z;
    }
    return;
  }
  const float inv_t = 1.0f / p.temperature;

  uint64_t floor_key = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    floor_key = RadixSelect<false>(logits, vocab, max_logit, inv_t, 0, p.top_k, sh);
  }
  auto kept_mass_above = [&](uint64_t threshold) {
    unsigned long long mass = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float l = logits[i];
      if (SamplingKey(l, i) >= threshold) mass += SamplingMass(l, max_logit, inv_t);
    }
    return BlockSumU64(mass, sh);
  };
  unsigned long long kept_mass = kept_mass_above(floor_key);
  if (p.top_p < 1.0f) {
    const unsigned long long target = TopPTarget(p.top_p, kept_mass);
    floor_key = RadixSelect<true>(logits, vocab, max_logit, inv_t, floor_key, target, sh);
    kept_mass = kept_mass_above(floor_key);
  }
  const unsigned long long draw = DrawTarget(p.seed, p.stream, p.position, kept_mass);

  // Kept mass of this thread's contiguous chunk of ids, then an exclusive
  // block scan: the thread whose chunk straddles `draw` walks it.
  const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const int lo = min(vocab, static_cast<int>(threadIdx.x) * chunk);
  const int hi = min(vocab, lo + chunk);
  unsigned long long mine = 0;
  int last_kept = -1;
  for (int i = lo; i < hi; ++i) {
    const float l = logits[i];
    if (SamplingKey(l, i) >= floor_key) {
      mine += SamplingMass(l, max_logit, inv_t);
      last_kept = i;
    }
  }
  unsigned long long incl = mine;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const unsigned long long v = __shfl_up_sync(0xffffffffu, incl, offset);
    if (lane >= offset) incl += v;
  }
  if (threadIdx.x == 0) sh.result_token = -1;
  __syncthreads();
  if (lane == 31) sh.warp_u64[warp] = incl;
  __syncthreads();
  unsigned long long warp_offset = 0;
  for (int w = 0; w < warp; ++w) warp_offset += sh.warp_u64[w];
  const unsigned long long before = warp_offset + incl - mine;
  if (mine > 0 && before <= draw && draw < before + mine) {
    unsigned long long running = before;
    for (int i = lo; i < hi; ++i) {
      const float l = logits[i];
      if (SamplingKey(l, i) < floor_key) continue;
      running += SamplingMass(l, max_logit, inv_t);
      if (running > draw) {
        sh.result_token = i;
        break;
      }
    }
  }
  // Fallback (never expected): the last kept id.
  int last = last_kept;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    last = max(last, __shfl_xor_sync(0xffffffffu, last, offset));
  }
  if (lane == 0) sh.warp_i[warp] = last;
  __syncthreads();
  if (threadIdx.x == 0) {
    int token = sh.result_token;
    if (token < 0) {
      for (int w = 0; w < kSampleWarps; ++w) token = max(token, sh.warp_i[w]);
    }
    if (token < 0) token = best_id;
    tokens[row] = token;
    logprobs[row] = logits[token] - log_z;
  }
}

}  // namespace

cudaError_t LaunchSampleTokens(const float* logits, const SampleParams* params, int32_t* tokens,
                               float* logprobs, int num_rows, int vocab, cudaStream_t stream) {
  if (num_rows < 0 || vocab <= 0) return cudaErrorInvalidValue;
  if (num_rows == 0) return cudaSuccess;
  SampleKernel<<<num_rows, kSampleThreads, 0, stream>>>(logits, params, tokens, logprobs, vocab);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
