// Sampler: draws one token from a row of fp32 logits with temperature, top-k
// and top-p, using the counter-based RNG (common/counter_rng.h) keyed by
// (seed, stream, position), so that a sample's tokens never depend on what it
// was batched with. The returned logprob is that of the drawn token under the
// UNMODIFIED model distribution (log_softmax of the raw logits), as vLLM and
// the search strategies expect.
//
// The algorithm is kernels::reference::Sample's, which the GPU sampler
// (kernels/sampling.cu) reproduces bit for bit, on the integer arithmetic of
// kernels/sampling_math.h (same token; logprob equal to float rounding):
//   temperature == 0: argmax (lowest id on ties); no random number is drawn.
//   otherwise token i weighs SamplingMass(l_i, max l, 1/T) (an integer, so
//   sums are exact in any order); top-k keeps the k best by SamplingKey
//   (larger logit, then lower id); top-p then keeps the shortest best-first
//   run whose mass reaches TopPTarget(top_p, mass kept by top-k); walking the
//   kept tokens in ascending id order, the first whose running mass exceeds
//   DrawTarget(seed, stream, position, kept mass) is drawn.
//
// Thread-safety: a Sampler holds scratch buffers; use one per thread.
#ifndef ARBOR_RUNTIME_SAMPLING_SAMPLER_H_
#define ARBOR_RUNTIME_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace arbor::runtime {

struct SamplingParams {
  // 0 is greedy. Valid range [0, 10].
  float temperature = 0.8f;
  // Nucleus mass in (0, 1]; 1 disables.
  float top_p = 1.0f;
  // Keep the k most likely tokens; 0 disables. Valid range [0, vocab_size].
  int top_k = 0;
};

// INVALID_ARGUMENT naming the field that is out of range.
absl::Status ValidateSamplingParams(const SamplingParams& params, int vocab_size);

struct SampledToken {
  int32_t token = -1;
  // log_softmax(raw logits)[token].
  float logprob = 0.0f;
};

class Sampler {
 public:
  // `logits` is one row of vocab_size values; params must be valid.
  SampledToken Sample(absl::Span<const float> logits, const SamplingParams& params, uint64_t seed,
                      uint64_t stream, uint64_t position);

 private:
  std::vector<int32_t> candidates_;
  std::vector<uint64_t> masses_;
  std::vector<uint64_t> keys_;
};

namespace internal {
// masses[i] = kernels::SamplingMass(logits[i], max_logit, inv_t) for i in
// [0, vocab), computed faster (exposed for the test that pins it); returns
// their sum.
uint64_t ComputeSamplingMasses(const float* logits, int vocab, float max_logit, float inv_t,
                               uint64_t* masses);
}  // namespace internal

// log_softmax(logits)[token], computed stably.
float LogSoftmaxAt(absl::Span<const float> logits, int32_t token);

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_SAMPLING_SAMPLER_H_
