#include "verifier/score_request.h"

#include "absl/strings/str_cat.h"
#include "serving/request_checks.h"

namespace arbor::verifier {

using serving::CheckMaxBytes;
using serving::CheckModelName;
using serving::CheckUtf8;

namespace {

// A candidate's steps: 1 to max_steps, valid UTF-8; errors name `field`.
absl::Status CheckCandidate(const arbor::v1::ScoreCandidate& candidate, const std::string& field,
                            const VerifierLimits& limits) {
  if (candidate.steps_size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".steps: empty; a candidate needs at least one step"));
  }
  if (candidate.steps_size() > limits.max_steps) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".steps: ", candidate.steps_size(),
                                                   " steps, at most ", limits.max_steps));
  }
  for (int s = 0; s < candidate.steps_size(); ++s) {
    if (auto st = CheckUtf8(candidate.steps(s), absl::StrCat(field, ".steps[", s, "]"));
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateScoreRequest(const arbor::v1::ScoreRequest& request,
                                  const VerifierLimits& limits) {
  if (auto st = CheckMaxBytes(request.job_id(), limits.max_job_id_bytes, "job_id"); !st.ok()) {
    return st;
  }
  if (auto st = CheckUtf8(request.job_id(), "job_id"); !st.ok()) return st;
  if (auto st = CheckModelName(request.model(), limits.model_name); !st.ok()) return st;
  if (request.question().empty()) return absl::InvalidArgumentError("question: empty");
  if (auto st = CheckUtf8(request.question(), "question"); !st.ok()) return st;
  if (request.candidates_size() == 0) {
    return absl::InvalidArgumentError("candidates: empty; send at least one candidate");
  }
  if (request.candidates_size() > limits.max_candidates) {
    return absl::InvalidArgumentError(absl::StrCat("candidates: ", request.candidates_size(),
                                                   " candidates, at most ", limits.max_candidates));
  }
  for (int c = 0; c < request.candidates_size(); ++c) {
    if (auto st = CheckCandidate(request.candidates(c), absl::StrCat("candidates[", c, "]"),
                                 limits);
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateCompareRequest(const arbor::v1::CompareRequest& request,
                                    const VerifierLimits& limits) {
  if (auto st = CheckMaxBytes(request.job_id(), limits.max_job_id_bytes, "job_id"); !st.ok()) {
    return st;
  }
  if (auto st = CheckUtf8(request.job_id(), "job_id"); !st.ok()) return st;
  if (auto st = CheckModelName(request.model(), limits.model_name); !st.ok()) return st;
  if (request.question().empty()) return absl::InvalidArgumentError("question: empty");
  if (auto st = CheckUtf8(request.question(), "question"); !st.ok()) return st;
  if (request.pairs_size() == 0) {
    return absl::InvalidArgumentError("pairs: empty; send at least one pair");
  }
  if (request.pairs_size() > limits.max_pairs) {
    return absl::InvalidArgumentError(
        absl::StrCat("pairs: ", request.pairs_size(), " pairs, at most ", limits.max_pairs));
  }
  for (int p = 0; p < request.pairs_size(); ++p) {
    if (auto st = CheckCandidate(request.pairs(p).a(), absl::StrCat("pairs[", p, "].a"), limits);
        !st.ok()) {
      return st;
    }
    if (auto st = CheckCandidate(request.pairs(p).b(), absl::StrCat("pairs[", p, "].b"), limits);
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

}  // namespace arbor::verifier
