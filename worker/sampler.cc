#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/counter_rng.h"

namespace arbor::worker {

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

// Index of the largest value, lowest index on ties; NaNs never win.
int32_t ArgMax(absl::Span<const float> logits) {
  int32_t best = 0;
  float best_value = -std::numeric_limits<float>::infinity();
  bool found = false;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!found || logits[i] > best_value) {
      if (std::isnan(logits[i])) continue;
      best = static_cast<int32_t>(i);
      best_value = logits[i];
      found = true;
    }
  }
  return best;
}

float MaxOf(absl::Span<const float> logits) {
  float m = -std::numeric_limits<float>::infinity();
  for (float v : logits) m = std::max(m, v);
  return m;
}

}  // namespace

float LogSoftmaxAt(absl::Span<const float> logits, int32_t token) {
  ARBOR_CHECK(token >= 0 && static_cast<size_t>(token) < logits.size());
  const float max_logit = MaxOf(logits);
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v - max_logit));
  return static_cast<float>(static_cast<double>(logits[token] - max_logit) - std::log(sum));
}

SampledToken Sampler::Sample(absl::Span<const float> logits, const SamplingParams& params,
                             uint64_t seed, uint64_t stream, uint64_t position) {
  ARBOR_CHECK(!logits.empty());
  const int vocab = static_cast<int>(logits.size());
  SampledToken out;
  if (params.temperature == 0.0f) {
    out.token = ArgMax(logits);
    out.logprob = LogSoftmaxAt(logits, out.token);
    return out;
  }

  // Candidates: every token, or the top-k by logit (ties to the lower id).
  candidates_.resize(vocab);
  for (int i = 0; i < vocab; ++i) candidates_[i] = i;
  auto by_logit_desc = [&logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  const bool use_top_p = params.top_p < 1.0f;
  int kept = vocab;
  if (use_top_k) {
    std::nth_element(candidates_.begin(), candidates_.begin() + params.top_k, candidates_.end(),
                     by_logit_desc);
    kept = params.top_k;
  }
  if (use_top_p) std::sort(candidates_.begin(), candidates_.begin() + kept, by_logit_desc);

  const float max_logit = MaxOf(logits);
  const float inv_t = 1.0f / params.temperature;
  probs_.resize(kept);
  double total = 0.0;
  for (int i = 0; i < kept; ++i) {
    probs_[i] = std::exp((logits[candidates_[i]] - max_logit) * inv_t);
    total += probs_[i];
  }
  if (use_top_p) {
    // Smallest descending prefix whose mass reaches top_p of the total.
    const double target = static_cast<double>(params.top_p) * total;
    double mass = 0.0;
    int n = 0;
    while (n < kept) {
      mass += probs_[n];
      ++n;
      if (mass >= target) break;
    }
    kept = n;
    total = mass;
  }
  // Walk the kept set in ascending id order (the order a GPU sampler can use
  // without a sort).
  if (use_top_k || use_top_p) {
    std::vector<std::pair<int32_t, float>> pairs(kept);
    for (int i = 0; i < kept; ++i) pairs[i] = {candidates_[i], probs_[i]};
    std::sort(pairs.begin(), pairs.end());
    for (int i = 0; i < kept; ++i) {
      candidates_[i] = pairs[i].first;
      probs_[i] = pairs[i].second;
    }
  }
  const double threshold = static_cast<double>(CounterUniform(seed, stream, position)) * total;
  double running = 0.0;
  out.token = candidates_[kept - 1];
  for (int i = 0; i < kept; ++i) {
    running += probs_[i];
    if (running > threshold) {
      out.token = candidates_[i];
      break;
    }
  }
  out.logprob = LogSoftmaxAt(logits, out.token);
  return out;
}

}  // namespace arbor::worker
