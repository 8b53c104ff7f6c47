// VerifierService: arbor.v1.Verifier (Score, Compare, Info) over a RewardScorer, with
// the gRPC callback API. All calls share the scorer's engine (one batch, one
// prefix cache) and its step-score cache.
//
// Score: validates the request (INVALID_ARGUMENT naming the field), tokenizes
// the candidates (reward model's own tokenizer), runs only the rows not
// already known on the engine's prefill path, and replies with one score per
// step (or per candidate with last_step_only) and the reward tokens run /
// served from cache. Compare (LLM judges; FAILED_PRECONDITION for other
// kinds) judges pairs of whole solutions, both orders in one engine batch
// (RewardScorer::PrepareCompare). A full engine queue is RESOURCE_EXHAUSTED; a cancelled
// call or a passed deadline cancels the engine request.
//
// Thread-safety: safe for the gRPC library's threads. The scorer (and its
// engine) and metrics must outlive the service, which must outlive the server.
#ifndef ARBOR_VERIFIER_VERIFIER_SERVICE_H_
#define ARBOR_VERIFIER_VERIFIER_SERVICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "arbor/v1/verifier.grpc.pb.h"
#include "serving/engine_metrics.h"
#include "verifier/reward_scorer.h"
#include "verifier/score_request.h"

namespace arbor::verifier {

struct VerifierServiceOptions {
  // VerifierInfo.model; requests naming another model are rejected.
  std::string model_name;
};

class VerifierService final : public arbor::v1::Verifier::CallbackService {
 public:
  // `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<VerifierService>> Create(VerifierServiceOptions options,
                                                                 RewardScorer* scorer,
                                                                 serving::EngineMetrics* metrics);

  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const arbor::v1::ScoreRequest* request,
                                  arbor::v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* Compare(grpc::CallbackServerContext* context,
                                    const arbor::v1::CompareRequest* request,
                                    arbor::v1::CompareResponse* response) override;
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const arbor::v1::VerifierInfoRequest* request,
                                 arbor::v1::VerifierInfo* response) override;

  arbor::v1::VerifierInfo MakeInfo() const;
  const VerifierLimits& limits() const { return limits_; }
  RewardScorer* scorer() const { return scorer_; }
  serving::EngineMetrics* metrics() const { return metrics_; }

 private:
  VerifierService(VerifierServiceOptions options, RewardScorer* scorer,
                  serving::EngineMetrics* metrics);

  VerifierServiceOptions options_;
  RewardScorer* scorer_;
  serving::EngineMetrics* metrics_;
  VerifierLimits limits_;
};

// ScoreJob of a validated request.
ScoreJob ToScoreJob(const arbor::v1::ScoreRequest& request);
// CompareJob of a validated request.
CompareJob ToCompareJob(const arbor::v1::CompareRequest& request);
// Fills results and usage (reward_calls = compare_calls = 1, compared_pairs).
void FillCompareResponse(const CompareOutcome& outcome, int pairs,
                         arbor::v1::CompareResponse* response);
// Fills results and usage (reward_calls = 1).
void FillScoreResponse(const ScoreOutcome& outcome, arbor::v1::ScoreResponse* response);

}  // namespace arbor::verifier

#endif  // ARBOR_VERIFIER_VERIFIER_SERVICE_H_
