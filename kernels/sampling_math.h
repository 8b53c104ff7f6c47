// Arithmetic shared bit-for-bit by the CPU reference sampler and the GPU
// sampler (kernels/sampling.cu). Every rounding step is explicit (fmaf, and
// plain + and * that are never contracted into an FMA), so both devices
// produce identical weights, identical integer masses and hence the identical
// token. Header-only, host and device; stateless.
#ifndef ARBOR_KERNELS_SAMPLING_MATH_H_
#define ARBOR_KERNELS_SAMPLING_MATH_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/counter_rng.h"

namespace arbor::kernels {

#if defined(__CUDA_ARCH__)
#define ARBOR_FMUL(a, b) __fmul_rn(a, b)
#define ARBOR_FADD(a, b) __fadd_rn(a, b)
#define ARBOR_FSUB(a, b) __fsub_rn(a, b)
#else
#define ARBOR_FMUL(a, b) ((a) * (b))
#define ARBOR_FADD(a, b) ((a) + (b))
#define ARBOR_FSUB(a, b) ((a) - (b))
#endif

// exp(x) for x <= 0 to about 2 ulp, from IEEE operations only (Cody-Waite
// reduction + degree-6 polynomial). exp(-inf) and anything below -104 is 0.
ARBOR_HOST_DEVICE float SamplingExp(float x) {
  if (!(x > -104.0f)) return 0.0f;  // also NaN
  const float n = rintf(ARBOR_FMUL(x, 1.44269504088896341f));
  float r = fmaf(n, -0.693145751953125f, x);    // ln2 high part (exact product)
  r = fmaf(n, -1.42860682030941723212e-6f, r);  // ln2 low part
  float p = 1.0f / 720.0f;
  p = fmaf(p, r, 1.0f / 120.0f);
  p = fmaf(p, r, 1.0f / 24.0f);
  p = fmaf(p, r, 1.0f / 6.0f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  return ldexpf(p, static_cast<int>(n));
}

// Integer mass of a token: floor(2^32 * exp((logit - max_logit) / T)). Sums
// of masses are exact and independent of summation order.
ARBOR_HOST_DEVICE uint64_t SamplingMass(float logit, float max_logit, float inv_temperature) {
  const float w = SamplingExp(ARBOR_FMUL(ARBOR_FSUB(logit, max_logit), inv_temperature));
  return static_cast<uint64_t>(ARBOR_FMUL(w, 4294967296.0f));
}

// A total order on (logit, id): larger logit first, lower id first on ties.
// Larger key = preferred token.
ARBOR_HOST_DEVICE uint64_t SamplingKey(float logit, int32_t id) {
#if defined(__CUDA_ARCH__)
  uint32_t bits = __float_as_uint(logit);
#else
  uint32_t bits;
  std::memcpy(&bits, &logit, sizeof(bits));
#endif
  // Map IEEE floats to unsigned integers with the same order.
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(~static_cast<uint32_t>(id));
}

// Mass the top-p cut must reach: ceil(top_p * kept_mass), at least 1.
ARBOR_HOST_DEVICE uint64_t TopPTarget(float top_p, uint64_t kept_mass) {
  const double t = ceil(static_cast<double>(top_p) * static_cast<double>(kept_mass));
  const uint64_t target = static_cast<uint64_t>(t);
  return target == 0 ? 1 : (target > kept_mass ? kept_mass : target);
}

// The draw: the first kept token (ascending id) whose running mass exceeds
// this value.
ARBOR_HOST_DEVICE uint64_t DrawTarget(uint64_t seed, uint64_t stream, uint64_t position,
                                      uint64_t kept_mass) {
  const double u = static_cast<double>(CounterUniform(seed, stream, position));
  return static_cast<uint64_t>(floor(u * static_cast<double>(kept_mass)));
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_SAMPLING_MATH_H_
