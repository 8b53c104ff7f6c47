#include "bench/e2e/stepwise_search.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "arbor/v1/reasoning.pb.h"
#include "arbor/v1/verifier.grpc.pb.h"
#include "coordinator/solve_request.h"
#include "grpcpp/grpcpp.h"
#include "rpc/status_util.h"
#include "search/generator.h"
#include "search/scorer.h"
#include "search/strategy.h"

namespace arbor::bench {
namespace {

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

void SetSamplingAndStop(const search::ExtendRequest& request, arbor::v1::ExtendRequest* proto) {
  proto->mutable_sampling()->set_temperature(request.sampling.temperature);
  proto->mutable_sampling()->set_top_p(request.sampling.top_p);
  proto->mutable_sampling()->set_top_k(request.sampling.top_k);
  arbor::v1::StopRules* stop = proto->mutable_stop();
  for (const std::string& d : request.stop.step_delimiters) stop->add_step_delimiters(d);
  stop->set_no_step_delimiter(request.stop.step_delimiters.empty());
  stop->set_max_step_tokens(request.stop.max_step_tokens);
  stop->set_ignore_eos(request.stop.ignore_eos);
}

// One Extend per branch, each with the branch's whole prefix as its prompt.
class StatelessGenerator : public search::Generator {
 public:
  StatelessGenerator(const arbor::v1::SolveRequest& job, const StepwiseTargets& targets,
                     absl::Time deadline)
      : stub_(arbor::v1::Generator::NewStub(targets.generator)),
        job_id_(job.job_id()),
        model_(job.model().empty() ? targets.model : job.model()),
        question_(job.question()),
        chat_template_(job.chat_template()),
        deadline_(deadline) {}

  // The prompt is templated by the worker: the first Extend sends the text
  // and every later one the tokens it returned (as the coordinator does).
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view) override {
    return std::vector<int32_t>();
  }

  absl::StatusOr<search::ExtendResult> Extend(const search::ExtendRequest& request) override {
    const absl::Time start = absl::Now();
    std::vector<arbor::v1::ExtendRequest> calls;
    if (prompt_tokens_.empty()) {
      // Nothing generated yet: one call with the question text, as a search
      // loop's first generate() of n samples.
      arbor::v1::ExtendRequest& proto = calls.emplace_back();
      proto.set_prompt_text(question_);
      proto.set_chat_template(chat_template_);
      for (const search::BranchInput& branch : request.branches) {
        if (!branch.suffix_tokens.empty()) {
          return absl::InternalError("stepwise: a branch has steps before the prompt is known");
        }
        arbor::v1::BranchInput* input = proto.add_branches();
        input->set_num_samples(branch.num_samples);
        input->set_seed(branch.seed);
      }
    } else {
      for (const search::BranchInput& branch : request.branches) {
        arbor::v1::ExtendRequest& proto = calls.emplace_back();
        proto.mutable_prompt_tokens()->Reserve(prompt_tokens_.size() + branch.suffix_tokens.size());
        proto.mutable_prompt_tokens()->Add(prompt_tokens_.begin(), prompt_tokens_.end());
        proto.mutable_prompt_tokens()->Add(branch.suffix_tokens.begin(),
                                           branch.suffix_tokens.end());
        arbor::v1::BranchInput* input = proto.add_branches();
        input->set_num_samples(branch.num_samples);
        input->set_seed(branch.seed);
      }
    }
    for (arbor::v1::ExtendRequest& proto : calls) {
      proto.set_job_id(job_id_);
      proto.set_model(model_);
      SetSamplingAndStop(request, &proto);
    }

    // All calls at once; the step waits for the last (the loop's barrier).
    std::vector<arbor::v1::ExtendResponse> responses(calls.size());
    std::vector<grpc::ClientContext> contexts(calls.size());
    std::vector<grpc::Status> statuses(calls.size());
    absl::Mutex mu;
    size_t pending = calls.size();
    size_t last_done = 0;
    const absl::Time call_deadline = std::min(deadline_, request.deadline);
    for (size_t i = 0; i < calls.size(); ++i) {
      contexts[i].set_deadline(absl::ToChronoTime(call_deadline));
      stub_->async()->Extend(&contexts[i], &calls[i], &responses[i],
                             [&, i](grpc::Status status) {
                               absl::MutexLock lock(&mu);
                               statuses[i] = std::move(status);
                               last_done = i;
                               --pending;
                             });
    }
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](size_t* left) { return *left == 0; }, &pending));
    }
    for (size_t i = 0; i < calls.size(); ++i) {
      if (!statuses[i].ok()) {
        absl::Status status = rpc::ToAbslStatus(statuses[i]);
        return absl::Status(status.code(), absl::StrCat("Generator.Extend: ", status.message()));
      }
    }
    if (prompt_tokens_.empty()) {
      prompt_tokens_.assign(responses[0].prompt_tokens().begin(),
                            responses[0].prompt_tokens().end());
    }

    search::ExtendResult result;
    const bool one_call = calls.size() == 1;
    for (size_t i = 0; i < responses.size(); ++i) {
      const arbor::v1::ExtendResponse& response = responses[i];
      for (const arbor::v1::BranchOutput& out : response.outputs()) {
        search::StepOutput step;
        step.branch_index = one_call ? out.branch_index() : static_cast<int32_t>(i);
        step.sample_index = out.sample_index();
        step.tokens.assign(out.tokens().begin(), out.tokens().end());
        step.text = out.text();
        step.logprob = out.logprob();
        step.finish_reason = FromProto(out.finish_reason());
        result.outputs.push_back(std::move(step));
      }
      result.usage.generated_tokens += response.usage().generated_tokens();
      result.usage.prefill_tokens += response.usage().prefill_tokens();
      result.usage.prefix_cache_hit_tokens += response.usage().prefix_cache_hit_tokens();
    }
    // The step's time is the critical path: the call that finished last.
    result.usage.queue_us = responses[last_done].usage().worker_queue_us();
    result.usage.compute_us = responses[last_done].usage().worker_compute_us();
    result.usage.call_us = absl::ToInt64Microseconds(absl::Now() - start);
    return result;
  }

 private:
  std::unique_ptr<arbor::v1::Generator::Stub> stub_;
  const std::string job_id_;
  const std::string model_;
  const std::string question_;
  const std::string chat_template_;
  const absl::Time deadline_;
  std::vector<int32_t> prompt_tokens_;
};

// Verifier.Score with the question and every step as text (the service's API
// is stateless already; the verifier's own prefix cache is what differs).
class TextScorer : public search::Scorer {
 public:
  TextScorer(const arbor::v1::SolveRequest& job, const StepwiseTargets& targets,
             absl::Time deadline)
      : stub_(arbor::v1::Verifier::NewStub(targets.verifier)),
        job_id_(job.job_id()),
        model_(job.reward_model().empty() ? targets.reward_model : job.reward_model()),
        deadline_(deadline) {}

  absl::StatusOr<search::ScoreResult> Score(const search::ScoreRequest& request) override {
    const absl::Time start = absl::Now();
    arbor::v1::ScoreRequest proto;
    proto.set_job_id(job_id_);
    proto.set_model(model_);
    proto.set_question(std::string(request.question));
    proto.set_last_step_only(request.last_step_only);
    for (const auto& steps : request.candidates) {
      arbor::v1::ScoreCandidate* candidate = proto.add_candidates();
      for (const std::string& s : steps) candidate->add_steps(s);
    }
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(std::min(deadline_, request.deadline)));
    arbor::v1::ScoreResponse response;
    const grpc::Status status = stub_->Score(&context, proto, &response);
    if (!status.ok()) {
      absl::Status s = rpc::ToAbslStatus(status);
      return absl::Status(s.code(), absl::StrCat("Verifier.Score: ", s.message()));
    }
    if (response.results_size() != proto.candidates_size()) {
      return absl::InternalError(absl::StrCat("Verifier.Score returned ", response.results_size(),
                                              " results for ", proto.candidates_size(),
                                              " candidates"));
    }
    search::ScoreResult result;
    for (const arbor::v1::StepScores& s : response.results()) {
      result.scores.emplace_back(s.scores().begin(), s.scores().end());
    }
    result.usage.reward_tokens = response.usage().reward_tokens();
    result.usage.reward_cache_hit_tokens = response.usage().reward_cache_hit_tokens();
    result.usage.queue_us = response.usage().verifier_queue_us();
    result.usage.compute_us = response.usage().verifier_compute_us();
    result.usage.call_us = absl::ToInt64Microseconds(absl::Now() - start);
    return result;
  }

 private:
  std::unique_ptr<arbor::v1::Verifier::Stub> stub_;
  const std::string job_id_;
  const std::string model_;
  const absl::Time deadline_;
};

}  // namespace

absl::Status ResolveModels(StepwiseTargets* targets, absl::Time deadline) {
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    arbor::v1::GeneratorInfo info;
    const grpc::Status status = arbor::v1::Generator::NewStub(targets->generator)
                                    ->Info(&context, arbor::v1::InfoRequest(), &info);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat("Generator.Info: ", status.error_message()));
    }
    targets->model = info.model();
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  arbor::v1::VerifierInfo info;
  const grpc::Status status = arbor::v1::Verifier::NewStub(targets->verifier)
                                  ->Info(&context, arbor::v1::VerifierInfoRequest(), &info);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("Verifier.Info: ", status.error_message()));
  }
  targets->reward_model = info.model();
  return absl::OkStatus();
}

absl::StatusOr<arbor::v1::SolveResponse> RunStepwiseJob(const arbor::v1::SolveRequest& request,
                                                        const StepwiseTargets& targets,
                                                        absl::Time deadline) {
  absl::StatusOr<search::StrategyConfig> config = coordinator::StrategyConfigFromRequest(request);
  if (!config.ok()) return config.status();
  const absl::Time start = absl::Now();
  search::JobContext job;
  job.question = request.question();
  job.seed = request.seed();
  job.start = start;
  StatelessGenerator generator(request, targets, deadline);
  TextScorer scorer(request, targets, deadline);
  absl::StatusOr<search::SolveResult> result = search::RunStrategy(
      *config, job, generator, coordinator::NeedsRewardModel(*config) ? &scorer : nullptr);
  if (!result.ok()) return result.status();
  coordinator::JobAccounting accounting;
  accounting.wall_time = absl::Now() - start;
  arbor::v1::SolveResponse response;
  coordinator::FillSolveResponse(request.job_id(), *result, accounting, &response);
  return response;
}

}  // namespace arbor::bench
