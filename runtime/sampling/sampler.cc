#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "kernels/sampling_math.h"

namespace arbor::runtime {

using kernels::DrawTarget;
using kernels::SamplingKey;
using kernels::SamplingMass;
using kernels::TopPTarget;

absl::Status ValidateSamplingParams(const SamplingParams& params, int vocab_size) {
  if (!(params.temperature >= 0.0f && params.temperature <= 10.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.temperature must be in [0, 10], got ", params.temperature));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_p must be in (0, 1], got ", params.top_p));
  }
  if (params.top_k < 0 || params.top_k > vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_k must be in [0, ", vocab_size, "], got ", params.top_k));
  }
  return absl::OkStatus();
}

namespace {

struct RowSummary {
  float max_logit = -std::numeric_limits<float>::infinity();
  int32_t argmax = 0;  // lowest id on ties
  double log_z = 0.0;  // log(sum(exp(logits)))
};

// Tokens further than this below the max add under 1e-13 each to the
// partition sum: invisible in a float logprob.
constexpr float kLogZCutoff = -30.0f;

RowSummary Summarize(absl::Span<const float> logits) {
  RowSummary s;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > s.max_logit) {
      s.max_logit = logits[i];
      s.argmax = static_cast<int32_t>(i);
    }
  }
  double sum = 0.0;
  for (float v : logits) {
    const float x = v - s.max_logit;
    if (x > kLogZCutoff) sum += std::exp(x);
  }
  s.log_z = s.max_logit + std::log(sum);
  return s;
}

float LogProb(absl::Span<const float> logits, const RowSummary& s, int32_t token) {
  return static_cast<float>(logits[token] - s.log_z);
}

// kernels::SamplingMass for x = (logit - max) * inv_t in (-23, 0]: the same
// operations (sampling_math.h's Cody-Waite reduction and polynomial), with
// ldexpf replaced by a multiplication by 2^n built from its bits, which is
// exact because every result here is a normal float. Below x = -23, exp(x) <
// 2^-32 even with the polynomial's 2 ulp, so the mass is exactly 0.
template <bool kFma>
inline uint64_t MassAt(float x) {
  if (!(x > -23.0f)) return 0;
  const float n =
      kFma ? __builtin_rintf(x * 1.44269504088896341f) : std::rint(x * 1.44269504088896341f);
  float r = std::fma(n, -0.693145751953125f, x);
  r = std::fma(n, -1.42860682030941723212e-6f, r);
  float p = 1.0f / 720.0f;
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return static_cast<uint64_t>((p * scale) * 4294967296.0f);
}

template <bool kFma>
inline uint64_t MassLoop(const float* logits, int vocab, float max_logit, float inv_t,
                         uint64_t* masses) {
  uint64_t total = 0;
  for (int i = 0; i < vocab; ++i) {
    const uint64_t m = MassAt<kFma>((logits[i] - max_logit) * inv_t);
    masses[i] = m;
    total += m;
  }
  return total;
}

// With FMA hardware, std::fma is one instruction instead of a libm call; both
// are exactly rounded, so the masses are identical.
__attribute__((target("fma,sse4.1"))) uint64_t MassLoopFma(const float* logits, int vocab,
                                                           float max_logit, float inv_t,
                                                           uint64_t* masses) {
  return MassLoop<true>(logits, vocab, max_logit, inv_t, masses);
}

}  // namespace

namespace internal {

uint64_t ComputeSamplingMasses(const float* logits, int vocab, float max_logit, float inv_t,
                               uint64_t* masses) {
  static const bool has_fma = __builtin_cpu_supports("fma") && __builtin_cpu_supports("sse4.1");
  if (has_fma) return MassLoopFma(logits, vocab, max_logit, inv_t, masses);
  return MassLoop<false>(logits, vocab, max_logit, inv_t, masses);
}

}  // namespace internal

namespace {}  // namespace

float LogSoftmaxAt(absl::Span<const float> logits, int32_t token) {
  ARBOR_CHECK(token >= 0 && static_cast<size_t>(token) < logits.size());
  return LogProb(logits, Summarize(logits), token);
}

SampledToken Sampler::Sample(absl::Span<const float> logits, const SamplingParams& params,
                             uint64_t seed, uint64_t stream, uint64_t position) {
  ARBOR_CHECK(!logits.empty());
  const int vocab = static_cast<int>(logits.size());
  const RowSummary row = Summarize(logits);
  SampledToken out;
  if (!(params.temperature > 0.0f)) {
    out.token = row.argmax;
    out.logprob = LogProb(logits, row, out.token);
    return out;
  }
  const float inv_t = 1.0f / params.temperature;
  masses_.resize(vocab);
  const uint64_t total_mass =
      internal::ComputeSamplingMasses(logits.data(), vocab, row.max_logit, inv_t, masses_.data());
  const uint64_t* mass = masses_.data();

  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  const bool use_top_p = params.top_p < 1.0f;

  if (!use_top_k && !use_top_p) {
    // Every token is kept: walk the ids in order.
    const uint64_t draw = DrawTarget(seed, stream, position, total_mass);
    uint64_t running = 0;
    out.token = vocab - 1;
    for (int i = 0; i < vocab; ++i) {
      running += mass[i];
      if (running > draw) {
        out.token = i;
        break;
      }
    }
    out.logprob = LogProb(logits, row, out.token);
    return out;
  }

  // The kept set. keys_ orders tokens best first as plain integers
  // (SamplingKey: logit, then lower id; the id is in the low 32 bits).
  keys_.resize(vocab);
  for (int i = 0; i < vocab; ++i) keys_[i] = SamplingKey(logits[i], i);
  auto id_of = [](uint64_t key) { return static_cast<int32_t>(~static_cast<uint32_t>(key)); };
  auto best_first = std::greater<uint64_t>();
  int kept = vocab;
  uint64_t kept_mass = total_mass;
  if (use_top_k) {
    std::nth_element(keys_.begin(), keys_.begin() + params.top_k, keys_.end(), best_first);
    kept = params.top_k;
    kept_mass = 0;
    for (int i = 0; i < kept; ++i) kept_mass += mass[id_of(keys_[i])];
  }
  if (use_top_p) {
    // The shortest best-first run reaching the target. Ordering only the best
    // `window` candidates is enough when their mass reaches it, which a
    // peaked distribution does at once; widen until it does.
    const uint64_t target = TopPTarget(params.top_p, kept_mass);
    int window = std::min(kept, 64);
    while (true) {
      if (window < kept) {
        std::nth_element(keys_.begin(), keys_.begin() + window, keys_.begin() + kept, best_first);
      }
      std::sort(keys_.begin(), keys_.begin() + window, best_first);
      uint64_t running = 0;
      int n = 0;
      while (n < window && running < target) running += mass[id_of(keys_[n++])];
      if (running >= target || window == kept) {
        kept = n;
        kept_mass = running;
        break;
      }
      window = std::min(kept, window * 8);
    }
  }
  candidates_.resize(kept);
  for (int i = 0; i < kept; ++i) candidates_[i] = id_of(keys_[i]);
  std::sort(candidates_.begin(), candidates_.begin() + kept);  // ascending id
  const uint64_t draw = DrawTarget(seed, stream, position, kept_mass);
  uint64_t running = 0;
  out.token = candidates_[kept - 1];
  for (int i = 0; i < kept; ++i) {
    running += mass[candidates_[i]];
    if (running > draw) {
      out.token = candidates_[i];
      break;
    }
  }
  out.logprob = LogProb(logits, row, out.token);
  return out;
}

}  // namespace arbor::runtime
