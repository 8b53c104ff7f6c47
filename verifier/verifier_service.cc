#include "verifier/verifier_service.h"

#include <utility>

#include "rpc/status_util.h"
#include "serving/engine_call.h"

namespace arbor::verifier {

namespace {

using serving::EngineCall;

class ScoreReactor final : public grpc::ServerUnaryReactor {
 public:
  ScoreReactor(const VerifierService* service, grpc::CallbackServerContext* context,
               const arbor::v1::ScoreRequest* request, arbor::v1::ScoreResponse* response)
      : service_(service),
        response_(response),
        call_(std::make_shared<EngineCall>(service->scorer()->engine())) {
    Start(context, *request);
  }

  void OnCancel() override { call_->Cancel(); }
  void OnDone() override { delete this; }

 private:
  void Start(grpc::CallbackServerContext* context, const arbor::v1::ScoreRequest& request) {
    if (absl::Status st = ValidateScoreRequest(request, service_->limits()); !st.ok()) {
      Finish(arbor::rpc::ToGrpcStatus(st));
      return;
    }
    ScoreJob job = ToScoreJob(request);
    job.deadline = serving::CallDeadline(*context);
    RewardScorer* scorer = service_->scorer();
    absl::StatusOr<std::unique_ptr<PreparedScore>> prepared = scorer->Prepare(job);
    if (!prepared.ok()) {
      Finish(arbor::rpc::ToGrpcStatus(prepared.status()));
      return;
    }
    serving::EngineMetrics* metrics = service_->metrics();
    if (!(*prepared)->needs_engine()) {
      Reply(scorer->Complete(**prepared, nullptr), metrics);
      return;
    }
    runtime::ScoreRequest engine_request = (*prepared)->TakeEngineRequest();
    std::shared_ptr<PreparedScore> shared_prepared(std::move(*prepared));
    std::shared_ptr<EngineCall> call = call_;
    absl::Status submitted = call->Submit([&] {
      return scorer->engine()->SubmitScore(
          std::move(engine_request),
          [this, call, scorer, metrics, shared_prepared](absl::StatusOr<runtime::ScoreResult> r) {
            call->WaitForSubmitter();
            if (!r.ok()) {
              Finish(arbor::rpc::ToGrpcStatus(r.status()));
              return;
            }
            Reply(scorer->Complete(*shared_prepared, &*r), metrics);
          });
    });
    // On success `this` may already be finished and gone: touch nothing.
    if (!submitted.ok()) Finish(arbor::rpc::ToGrpcStatus(submitted));
  }

  void Reply(const ScoreOutcome& outcome, serving::EngineMetrics* metrics) {
    FillScoreResponse(outcome, response_);
    if (metrics != nullptr) metrics->AddTokensIn(outcome.reward_tokens + outcome.cache_hit_tokens);
    Finish(grpc::Status::OK);
  }

  const VerifierService* service_;
  arbor::v1::ScoreResponse* response_;
  std::shared_ptr<EngineCall> call_;
};

// Compare: both orders of every pair in one engine request (RewardScorer::PrepareCompare).
class CompareReactor final : public grpc::ServerUnaryReactor {
 public:
  CompareReactor(const VerifierService* service, grpc::CallbackServerContext* context,
                 const arbor::v1::CompareRequest* request, arbor::v1::CompareResponse* response)
      : service_(service),
        response_(response),
        call_(std::make_shared<EngineCall>(service->scorer()->engine())) {
    Start(context, *request);
  }

  void OnCancel() override { call_->Cancel(); }
  void OnDone() override { delete this; }

 private:
  void Start(grpc::CallbackServerContext* context, const arbor::v1::CompareRequest& request) {
    RewardScorer* scorer = service_->scorer();
    // The kind first: a PRM asked to compare is the caller's setup, not its request.
    if (!scorer->input().supports_compare()) {
      Finish(arbor::rpc::ToGrpcStatus(scorer->input().compare_status()));
      return;
    }
    if (absl::Status st = ValidateCompareRequest(request, service_->limits()); !st.ok()) {
      Finish(arbor::rpc::ToGrpcStatus(st));
      return;
    }
    CompareJob job = ToCompareJob(request);
    job.deadline = serving::CallDeadline(*context);
    absl::StatusOr<runtime::ScoreRequest> engine_request = scorer->PrepareCompare(job);
    if (!engine_request.ok()) {
      Finish(arbor::rpc::ToGrpcStatus(engine_request.status()));
      return;
    }
    serving::EngineMetrics* metrics = service_->metrics();
    const int pairs = request.pairs_size();
    std::shared_ptr<EngineCall> call = call_;
    absl::Status submitted = call->Submit([&] {
      return scorer->engine()->SubmitScore(
          *std::move(engine_request),
          [this, call, metrics, pairs](absl::StatusOr<runtime::ScoreResult> r) {
            call->WaitForSubmitter();
            if (!r.ok()) {
              Finish(arbor::rpc::ToGrpcStatus(r.status()));
              return;
            }
            const CompareOutcome outcome = RewardScorer::CompleteCompare(*r);
            FillCompareResponse(outcome, pairs, response_);
            if (metrics != nullptr) {
              metrics->AddTokensIn(outcome.reward_tokens + outcome.cache_hit_tokens);
            }
            Finish(grpc::Status::OK);
          });
    });
    // On success `this` may already be finished and gone: touch nothing.
    if (!submitted.ok()) Finish(arbor::rpc::ToGrpcStatus(submitted));
  }

  const VerifierService* service_;
  arbor::v1::CompareResponse* response_;
  std::shared_ptr<EngineCall> call_;
};

}  // namespace

CompareJob ToCompareJob(const arbor::v1::CompareRequest& request) {
  CompareJob job;
  job.job_id = request.job_id();
  job.question = request.question();
  job.pairs.reserve(request.pairs_size());
  for (const arbor::v1::ComparePair& pair : request.pairs()) {
    job.pairs.emplace_back(
        std::vector<std::string>(pair.a().steps().begin(), pair.a().steps().end()),
        std::vector<std::string>(pair.b().steps().begin(), pair.b().steps().end()));
  }
  return job;
}

void FillCompareResponse(const CompareOutcome& outcome, int pairs,
                         arbor::v1::CompareResponse* response) {
  response->mutable_results()->Reserve(static_cast<int>(outcome.prob_a.size()));
  for (size_t p = 0; p < outcome.prob_a.size(); ++p) {
    arbor::v1::CompareResult* result = response->add_results();
    result->set_prob_a(outcome.prob_a[p]);
    result->set_a_first(outcome.a_first[p]);
    result->set_b_first(outcome.b_first[p]);
  }
  arbor::v1::Usage* usage = response->mutable_usage();
  usage->set_reward_tokens(outcome.reward_tokens);
  usage->set_reward_cache_hit_tokens(outcome.cache_hit_tokens);
  usage->set_reward_calls(1);
  usage->set_compare_calls(1);
  usage->set_compared_pairs(pairs);
  usage->set_verifier_queue_us(outcome.queue_us);
  usage->set_verifier_compute_us(outcome.compute_us);
}

ScoreJob ToScoreJob(const arbor::v1::ScoreRequest& request) {
  ScoreJob job;
  job.job_id = request.job_id();
  job.question = request.question();
  job.last_step_only = request.last_step_only();
  job.candidates.reserve(request.candidates_size());
  for (const arbor::v1::ScoreCandidate& candidate : request.candidates()) {
    job.candidates.emplace_back(candidate.steps().begin(), candidate.steps().end());
  }
  return job;
}

void FillScoreResponse(const ScoreOutcome& outcome, arbor::v1::ScoreResponse* response) {
  response->mutable_results()->Reserve(static_cast<int>(outcome.scores.size()));
  for (const std::vector<float>& scores : outcome.scores) {
    response->add_results()->mutable_scores()->Add(scores.begin(), scores.end());
  }
  arbor::v1::Usage* usage = response->mutable_usage();
  usage->set_reward_tokens(outcome.reward_tokens);
  usage->set_reward_cache_hit_tokens(outcome.cache_hit_tokens);
  usage->set_reward_calls(1);
  usage->set_verifier_queue_us(outcome.queue_us);
  usage->set_verifier_compute_us(outcome.compute_us);
}

absl::StatusOr<std::unique_ptr<VerifierService>> VerifierService::Create(
    VerifierServiceOptions options, RewardScorer* scorer, serving::EngineMetrics* metrics) {
  if (scorer == nullptr) return absl::InvalidArgumentError("VerifierService: scorer is null");
  return std::unique_ptr<VerifierService>(new VerifierService(std::move(options), scorer, metrics));
}

VerifierService::VerifierService(VerifierServiceOptions options, RewardScorer* scorer,
                                 serving::EngineMetrics* metrics)
    : options_(std::move(options)), scorer_(scorer), metrics_(metrics) {
  limits_.model_name = options_.model_name;
}

arbor::v1::VerifierInfo VerifierService::MakeInfo() const {
  arbor::v1::VerifierInfo info;
  const runtime::Engine* engine = scorer_->engine();
  const RewardConfig& config = scorer_->input().config();
  info.set_model(options_.model_name);
  info.set_architecture(engine->model_config().architecture);
  info.set_kind(std::string(RewardKindName(config.kind)));
  info.set_max_context_tokens(engine->max_context_tokens());
  info.set_backend(engine->backend_name());
  info.set_step_tag(config.step_tag);
  if (config.score_head() == ScoreHead::kLabelTokens) {
    info.set_positive_token(config.positive_token);
    info.set_negative_token(config.negative_token);
  }
  if (scorer_->input().supports_compare()) {
    info.set_supports_compare(true);
    info.set_compare_a_token(config.compare_a_token);
    info.set_compare_b_token(config.compare_b_token);
  }
  return info;
}

grpc::ServerUnaryReactor* VerifierService::Score(grpc::CallbackServerContext* context,
                                                 const arbor::v1::ScoreRequest* request,
                                                 arbor::v1::ScoreResponse* response) {
  return new ScoreReactor(this, context, request, response);
}

grpc::ServerUnaryReactor* VerifierService::Compare(grpc::CallbackServerContext* context,
                                                   const arbor::v1::CompareRequest* request,
                                                   arbor::v1::CompareResponse* response) {
  return new CompareReactor(this, context, request, response);
}

grpc::ServerUnaryReactor* VerifierService::Info(grpc::CallbackServerContext* context,
                                                const arbor::v1::VerifierInfoRequest* /*request*/,
                                                arbor::v1::VerifierInfo* response) {
  *response = MakeInfo();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace arbor::verifier
