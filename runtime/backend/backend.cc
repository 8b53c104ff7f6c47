#include "runtime/backend/backend.h"

#include "absl/strings/str_cat.h"

namespace arbor::runtime {

absl::Status ValidateRowSampling(const ModelConfig& config, int num_output_rows,
                                 absl::Span<const RowSampling> sampling) {
  if (config.is_value_head()) {
    return absl::InvalidArgumentError(
        "ForwardSample: a value-head model has no token distribution to sample");
  }
  if (sampling.size() != static_cast<size_t>(num_output_rows)) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardSample: ", sampling.size(),
                                                   " sampling entries for ", num_output_rows,
                                                   " output rows"));
  }
  for (size_t i = 0; i < sampling.size(); ++i) {
    if (absl::Status s = ValidateSamplingParams(sampling[i].params, config.vocab_size); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("ForwardSample: row ", i, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status ModelBackend::ForwardSample(const ForwardBatch& batch,
                                         absl::Span<const RowSampling> sampling,
                                         std::vector<SampledToken>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("ForwardSample: out is null");
  if (absl::Status s =
          ValidateRowSampling(config(), static_cast<int>(batch.output_rows.size()), sampling);
      !s.ok()) {
    return s;
  }
  std::vector<float> logits;
  if (absl::Status s = Forward(batch, &logits); !s.ok()) return s;
  const size_t dim = output_dim();
  Sampler sampler;
  out->resize(sampling.size());
  for (size_t i = 0; i < sampling.size(); ++i) {
    const RowSampling& r = sampling[i];
    (*out)[i] = sampler.Sample(absl::MakeConstSpan(logits.data() + i * dim, dim), r.params, r.seed,
                               r.stream, r.position);
  }
  return absl::OkStatus();
}

}  // namespace arbor::runtime
