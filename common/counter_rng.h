// Counter-based random numbers: a pure function of (seed, stream, position),
// so a branch's samples never depend on what it was batched with, and the CPU
// and CUDA samplers draw the very same numbers. Header-only; usable from
// host and device code (ARBOR_HOST_DEVICE); stateless, hence thread-safe.
#ifndef ARBOR_COMMON_COUNTER_RNG_H_
#define ARBOR_COMMON_COUNTER_RNG_H_

#include <cstdint>

#if defined(__CUDACC__)
#define ARBOR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define ARBOR_HOST_DEVICE inline
#endif

namespace arbor {

// SplitMix64 finaliser: a bijective 64-bit mixer with full avalanche.
ARBOR_HOST_DEVICE uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// 64 random bits for (seed, stream, position). `stream` is the branch/sample
// index, `position` the token position (or any other counter).
ARBOR_HOST_DEVICE uint64_t CounterRandomBits(uint64_t seed, uint64_t stream, uint64_t position) {
  return Mix64(Mix64(Mix64(seed) ^ stream) ^ (position * 0xD1B54A32D192ED03ull));
}

// Uniform float in [0, 1) with 24 random bits: exactly representable, so the
// same on every device.
ARBOR_HOST_DEVICE float CounterUniform(uint64_t seed, uint64_t stream, uint64_t position) {
  return static_cast<float>(CounterRandomBits(seed, stream, position) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace arbor

#endif  // ARBOR_COMMON_COUNTER_RNG_H_
