#include "coordinator/remote_backends.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "arbor/v1/verifier.grpc.pb.h"
#include "common/log.h"
#include "grpcpp/grpcpp.h"
#include "rpc/status_util.h"

namespace arbor::coordinator {
namespace {

// Errors that belong to the endpoint (try another one) rather than to the request.
bool IsEndpointFailure(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

// Runs `call(endpoint, context)` on the job's endpoints in rendezvous order
// until one succeeds, an error is the request's own, the job is cancelled or
// its deadline passes.
template <typename Call>
absl::Status CallWithFailover(EndpointPool& pool, CallCanceller& canceller,
                              const RemoteJobOptions& options, absl::Time job_deadline,
                              RemoteCallStats& stats, const char* what, Call&& call) {
  const absl::Time deadline = std::min(job_deadline, options.rpc_deadline);
  // Routing: the job's router when it has one (sticky placement, policy order).
  std::vector<EndpointPool::Endpoint> endpoints =
      options.router != nullptr
          ? options.router->Route(
                pool, RouteRequest{options.job_id, options.chat_template, options.question},
                options.model)
          : pool.Route(options.job_id, options.model);
  if (endpoints.empty()) {
    return absl::UnavailableError(
        absl::StrCat("no healthy ", pool.name(), " serve model '", options.model, "'"));
  }
  absl::Status last;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const EndpointPool::Endpoint& endpoint = endpoints[i];
    if (canceller.cancelled()) return absl::CancelledError("job cancelled");
    const absl::Time now = absl::Now();
    if (now >= deadline) return absl::DeadlineExceededError("job deadline passed");
    const bool per_call_timeout = now + options.call_timeout < deadline;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(std::min(deadline, now + options.call_timeout)));
    grpc::Status grpc_status;
    {
      CallCanceller::Scope scope(canceller, &context);
      ++stats.calls;
      grpc_status = call(endpoint, context);
    }
    absl::Status status = rpc::ToAbslStatus(grpc_status);
    if (status.ok()) {
      pool.ReportSuccess(endpoint.address);
      if (options.router != nullptr) options.router->CallSucceeded(options.job_id, endpoint.address);
      stats.last_endpoint = endpoint.address;
      return status;
    }
    if (canceller.cancelled()) return absl::CancelledError("job cancelled");
    if (status.code() == absl::StatusCode::kDeadlineExceeded && !per_call_timeout) {
      return status;  // the job's own deadline: the search ends with its best so far
    }
    if (!IsEndpointFailure(status.code())) {
      return absl::Status(status.code(),
                          absl::StrCat(what, " on ", endpoint.address, ": ", status.message()));
    }
    ARBOR_LOG(WARNING) << "job " << options.job_id << ": " << what << " on " << endpoint.address
                       << " failed (" << status << ")"
                       << (i + 1 < endpoints.size() ? ", retrying on the next endpoint" : "");
    // An overloaded endpoint is healthy: move on without ejecting it.
    if (status.code() != absl::StatusCode::kResourceExhausted) {
      pool.ReportFailure(endpoint.address, status);
      if (options.router != nullptr) options.router->CallFailed(options.job_id, endpoint.address);
    }
    last = status;
    if (i + 1 < endpoints.size()) ++stats.retries;
  }
  return absl::UnavailableError(absl::StrCat("all ", endpoints.size(), " ", pool.name(),
                                             " serving '", options.model, "' failed ", what,
                                             "; last error: ", last.ToString()));
}

search::FinishReason FromProto(arbor::v1::FinishReason reason) {
  switch (reason) {
    case arbor::v1::FINISH_REASON_EOS:
      return search::FinishReason::kEos;
    case arbor::v1::FINISH_REASON_LENGTH:
      return search::FinishReason::kLength;
    case arbor::v1::FINISH_REASON_CONTEXT:
      return search::FinishReason::kContext;
    case arbor::v1::FINISH_REASON_CANCELLED:
      return search::FinishReason::kCancelled;
    default:
      return search::FinishReason::kStep;
  }
}

}  // namespace

void CallCanceller::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (grpc::ClientContext* context : active_) context->TryCancel();
}

bool CallCanceller::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

CallCanceller::Scope::Scope(CallCanceller& canceller, grpc::ClientContext* context)
    : canceller_(canceller), context_(context) {
  absl::MutexLock lock(&canceller_.mu_);
  canceller_.active_.insert(context_);
  if (canceller_.cancelled_) context_->TryCancel();
}

CallCanceller::Scope::~Scope() {
  absl::MutexLock lock(&canceller_.mu_);
  canceller_.active_.erase(context_);
}

RemoteGenerator::~RemoteGenerator() {
  if (options_.router != nullptr) options_.router->JobDone(options_.job_id);
}

absl::StatusOr<std::vector<int32_t>> RemoteGenerator::EncodePrompt(std::string_view question) {
  // The worker templates and tokenizes the question on the first Extend.
  return prompt_tokens_;
}

absl::StatusOr<search::ExtendResult> RemoteGenerator::Extend(const search::ExtendRequest& request) {
  const absl::Time call_start = absl::Now();
  arbor::v1::ExtendRequest proto;
  proto.set_job_id(options_.job_id);
  proto.set_model(options_.model);
  if (!request.prompt_tokens.empty()) {
    proto.mutable_prompt_tokens()->Add(request.prompt_tokens.begin(), request.prompt_tokens.end());
  } else if (!prompt_tokens_.empty()) {
    proto.mutable_prompt_tokens()->Add(prompt_tokens_.begin(), prompt_tokens_.end());
  } else {
    proto.set_prompt_text(options_.question);
    proto.set_chat_template(options_.chat_template);
  }
  for (const search::BranchInput& branch : request.branches) {
    arbor::v1::BranchInput* input = proto.add_branches();
    input->mutable_suffix_tokens()->Add(branch.suffix_tokens.begin(), branch.suffix_tokens.end());
    input->set_num_samples(branch.num_samples);
    input->set_seed(branch.seed);
  }
  proto.mutable_sampling()->set_temperature(request.sampling.temperature);
  proto.mutable_sampling()->set_top_p(request.sampling.top_p);
  proto.mutable_sampling()->set_top_k(request.sampling.top_k);
  arbor::v1::StopRules* stop = proto.mutable_stop();
  for (const std::string& d : request.stop.step_delimiters) stop->add_step_delimiters(d);
  stop->set_no_step_delimiter(request.stop.step_delimiters.empty());
  stop->set_max_step_tokens(request.stop.max_step_tokens);
  stop->set_ignore_eos(request.stop.ignore_eos);

  arbor::v1::ExtendResponse response;
  absl::Status status = CallWithFailover(
      pool_, canceller_, options_, request.deadline, stats_, "Generator.Extend",
      [&](const EndpointPool::Endpoint& endpoint, grpc::ClientContext& context) {
        response.Clear();
        return arbor::v1::Generator::NewStub(endpoint.channel)->Extend(&context, proto, &response);
      });
  if (!status.ok()) return status;
  if (prompt_tokens_.empty() && response.prompt_tokens_size() > 0) {
    prompt_tokens_.assign(response.prompt_tokens().begin(), response.prompt_tokens().end());
    if (options_.router != nullptr) {
      options_.router->ObservePromptTokens(options_.question.size(), prompt_tokens_.size());
    }
  }
  search::ExtendResult result;
  result.outputs.reserve(response.outputs_size());
  for (const arbor::v1::BranchOutput& out : response.outputs()) {
    search::StepOutput step;
    step.branch_index = out.branch_index();
    step.sample_index = out.sample_index();
    step.tokens.assign(out.tokens().begin(), out.tokens().end());
    step.text = out.text();
    step.logprob = out.logprob();
    step.finish_reason = FromProto(out.finish_reason());
    result.outputs.push_back(std::move(step));
  }
  result.usage.generated_tokens = response.usage().generated_tokens();
  result.usage.prefill_tokens = response.usage().prefill_tokens();
  result.usage.prefix_cache_hit_tokens = response.usage().prefix_cache_hit_tokens();
  result.usage.queue_us = response.usage().worker_queue_us();
  result.usage.compute_us = response.usage().worker_compute_us();
  result.usage.call_us = absl::ToInt64Microseconds(absl::Now() - call_start);
  return result;
}

absl::StatusOr<search::ScoreResult> RemoteScorer::Score(const search::ScoreRequest& request) {
  const absl::Time call_start = absl::Now();
  arbor::v1::ScoreRequest proto;
  proto.set_job_id(options_.job_id);
  proto.set_model(options_.model);
  proto.set_question(std::string(request.question));
  proto.set_last_step_only(request.last_step_only);
  for (const auto& steps : request.candidates) {
    arbor::v1::ScoreCandidate* candidate = proto.add_candidates();
    for (const std::string& s : steps) candidate->add_steps(s);
  }
  arbor::v1::ScoreResponse response;
  absl::Status status = CallWithFailover(
      pool_, canceller_, options_, request.deadline, stats_, "Verifier.Score",
      [&](const EndpointPool::Endpoint& endpoint, grpc::ClientContext& context) {
        response.Clear();
        return arbor::v1::Verifier::NewStub(endpoint.channel)->Score(&context, proto, &response);
      });
  if (!status.ok()) return status;
  if (response.results_size() != proto.candidates_size()) {
    return absl::InternalError(absl::StrCat("Verifier.Score on ", stats_.last_endpoint,
                                            " returned ", response.results_size(), " results for ",
                                            proto.candidates_size(), " candidates"));
  }
  search::ScoreResult result;
  result.scores.reserve(response.results_size());
  for (const arbor::v1::StepScores& s : response.results()) {
    result.scores.emplace_back(s.scores().begin(), s.scores().end());
  }
  result.usage.reward_tokens = response.usage().reward_tokens();
  result.usage.reward_cache_hit_tokens = response.usage().reward_cache_hit_tokens();
  result.usage.queue_us = response.usage().verifier_queue_us();
  result.usage.compute_us = response.usage().verifier_compute_us();
  result.usage.call_us = absl::ToInt64Microseconds(absl::Now() - call_start);
  return result;
}

ModelProbe GeneratorModelProbe() {
  return [](const std::shared_ptr<grpc::Channel>& channel,
            absl::Time deadline) -> absl::StatusOr<std::string> {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    arbor::v1::InfoRequest request;
    arbor::v1::GeneratorInfo info;
    grpc::Status status = arbor::v1::Generator::NewStub(channel)->Info(&context, request, &info);
    if (!status.ok()) return rpc::ToAbslStatus(status);
    if (info.model().empty()) return absl::InternalError("Generator.Info returned no model");
    return info.model();
  };
}

ModelProbe VerifierModelProbe() {
  return [](const std::shared_ptr<grpc::Channel>& channel,
            absl::Time deadline) -> absl::StatusOr<std::string> {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    arbor::v1::VerifierInfoRequest request;
    arbor::v1::VerifierInfo info;
    grpc::Status status = arbor::v1::Verifier::NewStub(channel)->Info(&context, request, &info);
    if (!status.ok()) return rpc::ToAbslStatus(status);
    if (info.model().empty()) return absl::InternalError("Verifier.Info returned no model");
    return info.model();
  };
}

}  // namespace arbor::coordinator
