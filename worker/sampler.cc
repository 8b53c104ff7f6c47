#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "kernels/sampling_math.h"

namespace arbor::worker {

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

RowSummary Summarize(absl::Span<const float> logits) {
  RowSummary s;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > s.max_logit) {
      s.max_logit = logits[i];
      s.argmax = static_cast<int32_t>(i);
    }
  }
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - s.max_logit);
  s.log_z = s.max_logit + std::log(sum);
  return s;
}

float LogProb(absl::Span<const float> logits, const RowSummary& s, int32_t token) {
  return static_cast<float>(logits[token] - s.log_z);
}

}  // namespace

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
  auto mass = [&](int32_t id) { return SamplingMass(logits[id], row.max_logit, inv_t); };
  auto better = [&](int32_t a, int32_t b) {
    return SamplingKey(logits[a], a) > SamplingKey(logits[b], b);
  };
  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  const bool use_top_p = params.top_p < 1.0f;

  // The kept set, as ids in candidates_[0, kept).
  int kept = vocab;
  uint64_t kept_mass = 0;
  candidates_.resize(vocab);
  for (int i = 0; i < vocab; ++i) candidates_[i] = i;
  if (!use_top_k && !use_top_p) {
    for (int i = 0; i < vocab; ++i) kept_mass += mass(i);
  } else {
    if (use_top_k) {
      std::nth_element(candidates_.begin(), candidates_.begin() + params.top_k, candidates_.end(),
                       better);
      kept = params.top_k;
    }
    for (int i = 0; i < kept; ++i) kept_mass += mass(candidates_[i]);
    if (use_top_p) {
      // The shortest best-first run reaching the target. Sorting only the
      // best `window` candidates is enough when their mass reaches it, which
      // a peaked distribution does at once; widen until it does.
      const uint64_t target = TopPTarget(params.top_p, kept_mass);
      int window = std::min(kept, 64);
      while (true) {
        std::partial_sort(candidates_.begin(), candidates_.begin() + window,
                          candidates_.begin() + kept, better);
        uint64_t running = 0;
        int n = 0;
        while (n < window && running < target) running += mass(candidates_[n++]);
        if (running >= target || window == kept) {
          kept = n;
          kept_mass = running;
          break;
        }
        window = std::min(kept, window * 8);
      }
    }
    std::sort(candidates_.begin(), candidates_.begin() + kept);  // ascending id
  }
  const uint64_t draw = DrawTarget(seed, stream, position, kept_mass);
  uint64_t running = 0;
  out.token = candidates_[kept - 1];
  for (int i = 0; i < kept; ++i) {
    running += mass(candidates_[i]);
    if (running > draw) {
      out.token = candidates_[i];
      break;
    }
  }
  out.logprob = LogProb(logits, row, out.token);
  return out;
}

}  // namespace arbor::worker
