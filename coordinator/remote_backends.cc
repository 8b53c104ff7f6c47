#include "coordinator/remote_backends.h"

#include <algorithm>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "arbor/v1/verifier.grpc.pb.h"
#include "common/log.h"
#include "coordinator/subtree_split.h"
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

// One attempt of a call on one endpoint. The gRPC callback, the endpoint
// watch and the job thread share it; `done`, `status` and `lost` are guarded
// by the call's HedgeState::mu.
template <typename Response>
struct Attempt {
  std::string address;
  grpc::ClientContext context;
  Response response;
  grpc::Status status;
  bool done = false;
  bool lost = false;     // its endpoint was ejected while it ran
  bool handled = false;  // job thread only: its result was acted on
  bool hedged = false;   // job thread only: its loss was acted on
  bool capped = false;   // its deadline is the per-call timeout, not the job's
  std::shared_ptr<void> stub;
  std::unique_ptr<CallCanceller::Scope> scope;
  std::unique_ptr<EndpointPool::EndpointWatch> watch;
};

struct HedgeState {
  absl::Mutex mu;
  int pending ABSL_GUARDED_BY(mu) = 0;
  bool changed ABSL_GUARDED_BY(mu) = false;  // an attempt finished or lost its endpoint
};

std::string DescribeEndpoints(const EndpointPool& pool, const std::string& model) {
  std::vector<std::string> parts;
  for (const auto& s : pool.Snapshot()) {
    if (!s.model.empty() && s.model != model) continue;
    parts.push_back(absl::StrCat(s.address, s.healthy ? " routable" : " not routable"));
  }
  return parts.empty() ? "none known" : absl::StrJoin(parts, ", ");
}

// Runs a call on the job's endpoints: `start(endpoint, attempt, done)` starts
// the async call of `attempt` on `endpoint` and returns what must outlive it
// (the stub); `done` is its completion callback. See the header for the
// failover and hedging rules. Returns the winning attempt.
//
// `first` (may be empty): the endpoints to try first, in order, instead of the
// job's route: a sub-tree's worker. A sub-tree call that succeeds does not
// move the job's own placement (Router::CallSucceeded).
template <typename Response, typename Start>
absl::StatusOr<std::shared_ptr<Attempt<Response>>> CallWithHedging(
    EndpointPool& pool, CallCanceller& canceller, const RemoteJobOptions& options,
    absl::Time job_deadline, RemoteCallStats& stats, const char* what, Start&& start,
    std::vector<EndpointPool::Endpoint> first = {}) {
  using AttemptPtr = std::shared_ptr<Attempt<Response>>;
  const absl::Time deadline = std::min(job_deadline, options.rpc_deadline);
  const bool subtree = !first.empty();
  // Routing: the job's router when it has one (sticky placement, policy order).
  std::vector<EndpointPool::Endpoint> endpoints =
      subtree ? std::move(first)
      : options.router != nullptr
          ? options.router->Route(
                pool, RouteRequest{options.job_id, options.chat_template, options.question},
                options.model)
          : pool.Route(options.job_id, options.model);
  if (endpoints.empty()) {
    return absl::UnavailableError(absl::StrCat("no routable ", pool.name(), " serve model '",
                                               options.model, "' for ", what, " (",
                                               DescribeEndpoints(pool, options.model), ")"));
  }
  auto state = std::make_shared<HedgeState>();
  std::vector<AttemptPtr> attempts;
  absl::flat_hash_set<std::string> tried;
  size_t next = 0;
  // The next routable endpoint not tried yet: rendezvous order first, then
  // any that became routable since (a restarted worker).
  auto pick = [&]() -> const EndpointPool::Endpoint* {
    for (; next < endpoints.size(); ++next) {
      if (!tried.contains(endpoints[next].address) && pool.Routable(endpoints[next].address)) {
        return &endpoints[next++];
      }
    }
    for (EndpointPool::Endpoint& e :
         options.router != nullptr
             ? options.router->Route(
                   pool, RouteRequest{options.job_id, options.chat_template, options.question},
                   options.model)
             : pool.Route(options.job_id, options.model)) {
      if (!tried.contains(e.address)) {
        endpoints.push_back(std::move(e));
        next = endpoints.size();
        return &endpoints.back();
      }
    }
    return nullptr;
  };
  absl::Time last_launch;
  auto launch = [&](const EndpointPool::Endpoint& endpoint) {
    auto attempt = std::make_shared<Attempt<Response>>();
    attempt->address = endpoint.address;
    const absl::Time now = absl::Now();
    attempt->capped = now + options.call_timeout < deadline;
    attempt->context.set_deadline(absl::ToChronoTime(std::min(deadline, now + options.call_timeout)));
    attempt->scope = std::make_unique<CallCanceller::Scope>(canceller, &attempt->context);
    tried.insert(endpoint.address);
    ++stats.calls;
    last_launch = now;
    {
      absl::MutexLock lock(&state->mu);
      ++state->pending;
    }
    attempts.push_back(attempt);
    Attempt<Response>* raw = attempt.get();
    // The watch is destroyed before the attempt, so `raw` outlives it.
    attempt->watch = pool.WatchEndpoint(endpoint.address, [state, raw] {
      absl::MutexLock lock(&state->mu);
      if (!raw->done) {
        raw->lost = true;
        state->changed = true;
      }
    });
    attempt->stub = start(endpoint, *attempt, [state, attempt](grpc::Status status) {
      absl::MutexLock lock(&state->mu);
      attempt->status = std::move(status);
      attempt->done = true;
      --state->pending;
      state->changed = true;
    });
  };

  launch(endpoints[next++]);
  bool slow_hedged = options.hedge_after <= absl::ZeroDuration();
  AttemptPtr winner;
  absl::Status result;
  absl::Status last;
  while (true) {
    const absl::Time hedge_at =
        slow_hedged ? absl::InfiniteFuture() : last_launch + options.hedge_after;
    std::vector<AttemptPtr> finished;
    std::vector<Attempt<Response>*> lost;
    bool in_flight_live = false;  // an attempt still running on a routable endpoint
    {
      absl::MutexLock lock(&state->mu);
      state->mu.AwaitWithDeadline(absl::Condition(&state->changed), hedge_at);
      state->changed = false;
      for (const AttemptPtr& a : attempts) {
        if (a->done) {
          if (!a->handled) finished.push_back(a);
        } else if (a->lost) {
          if (!a->hedged) lost.push_back(a.get());
        } else {
          in_flight_live = true;
        }
      }
    }
    bool stop = false;
    for (const AttemptPtr& a : finished) {
      a->handled = true;
      absl::Status status = rpc::ToAbslStatus(a->status);
      if (status.ok()) {
        winner = a;
        stop = true;
        break;
      }
      if (canceller.cancelled()) {
        result = absl::CancelledError("job cancelled");
        stop = true;
        break;
      }
      if (status.code() == absl::StatusCode::kDeadlineExceeded && !a->capped) {
        result = status;  // the job's own deadline: the search ends with its best so far
        stop = true;
        break;
      }
      if (!IsEndpointFailure(status.code())) {
        result = absl::Status(status.code(),
                              absl::StrCat(what, " on ", a->address, ": ", status.message()));
        stop = true;
        break;
      }
      ARBOR_LOG(WARNING) << "job " << options.job_id << ": " << what << " on " << a->address
                         << " failed (" << status << ")";
      // An overloaded endpoint is healthy: move on without ejecting it.
      if (status.code() != absl::StatusCode::kResourceExhausted) {
        pool.Lost(a->address, status);
        if (options.router != nullptr) options.router->CallFailed(options.job_id, a->address);
      }
      last = absl::Status(status.code(), absl::StrCat(a->address, ": ", status.message()));
    }
    if (stop) break;
    // Each lost attempt gets one hedge; it keeps running, and may still win.
    for (Attempt<Response>* a : lost) {
      a->hedged = true;
      if (const EndpointPool::Endpoint* e = pick(); e != nullptr && !canceller.cancelled()) {
        ARBOR_LOG(WARNING) << "job " << options.job_id << ": " << what << " on " << a->address
                           << " hedged on " << e->address << ": the endpoint was ejected";
        ++stats.hedges;
        if (options.on_hedge) options.on_hedge("ejected");
        launch(*e);
        in_flight_live = true;
      }
    }
    int pending = 0;
    {
      absl::MutexLock lock(&state->mu);
      pending = state->pending;
    }
    if (!in_flight_live && !canceller.cancelled()) {
      // Nothing is running on a routable endpoint: retry on the next one.
      if (const EndpointPool::Endpoint* e = pick(); e != nullptr) {
        ++stats.retries;
        launch(*e);
        continue;
      }
      if (pending == 0) {
        result = absl::UnavailableError(absl::StrCat("all ", tried.size(), " ", pool.name(),
                                                     " serving '", options.model, "' failed ",
                                                     what, "; last error: ", last.ToString()));
        break;
      }
    }
    if (pending == 0 && canceller.cancelled()) {
      result = absl::CancelledError("job cancelled");
      break;
    }
    if (!slow_hedged && absl::Now() >= hedge_at) {
      slow_hedged = true;
      if (const EndpointPool::Endpoint* e = pick(); e != nullptr && !canceller.cancelled()) {
        ARBOR_LOG(INFO) << "job " << options.job_id << ": " << what << " unanswered after "
                        << absl::FormatDuration(options.hedge_after) << ", hedged on "
                        << e->address;
        ++stats.hedges;
        if (options.on_hedge) options.on_hedge("slow");
        launch(*e);
      }
    }
  }
  // The losers are cancelled; a client-side cancel completes at once, even
  // on a hung endpoint.
  for (const AttemptPtr& a : attempts) {
    if (a != winner) a->context.TryCancel();
  }
  {
    absl::MutexLock lock(&state->mu);
    state->mu.Await(absl::Condition(
        +[](HedgeState* s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s->pending == 0; },
        state.get()));
  }
  for (const AttemptPtr& a : attempts) {
    a->watch.reset();
    a->scope.reset();
  }
  if (winner == nullptr) return result;
  stats.last_endpoint = winner->address;
  if (options.router != nullptr && !subtree) {
    options.router->CallSucceeded(options.job_id, winner->address);
  }
  return winner;
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

std::vector<RemoteGenerator::Part> RemoteGenerator::PlaceBranches(
    const search::ExtendRequest& request) {
  std::vector<Part> parts(1);
  const int num_branches = static_cast<int>(request.branches.size());
  auto everything_home = [&] {
    parts[0].branches.resize(num_branches);
    for (int b = 0; b < num_branches; ++b) parts[0].branches[b] = b;
    return parts;
  };
  Router* router = options_.router;
  if (router == nullptr || router->options().split_outputs <= 0) return everything_home();
  const std::vector<EndpointPool::Endpoint> route = router->Route(
      pool_, RouteRequest{options_.job_id, options_.chat_template, options_.question},
      options_.model);
  if (route.empty()) return everything_home();  // the call reports UNAVAILABLE
  const std::string& home = route.front().address;
  auto routed = [&](const std::string& address) {
    return std::find_if(route.begin(), route.end(),
                        [&](const auto& e) { return e.address == address; });
  };
  // Each branch where its sub-tree is (sticky), else on the job's worker.
  std::vector<std::string> where(num_branches);
  std::vector<int> at_home;
  for (int b = 0; b < num_branches; ++b) {
    std::string address = subtrees_.Find(request.branches[b].suffix_tokens);
    if (address.empty() || routed(address) == route.end()) address = home;
    if (address == home) at_home.push_back(b);
    where[b] = std::move(address);
  }
  // The job's worker's share: does it outgrow that worker?
  int64_t outputs = 0;
  int64_t kv_tokens = 0;
  for (int b : at_home) {
    const search::BranchInput& branch = request.branches[b];
    outputs += branch.num_samples;
    kv_tokens += static_cast<int64_t>(branch.suffix_tokens.size()) +
                 static_cast<int64_t>(branch.num_samples) * request.stop.max_step_tokens;
  }
  if (at_home.size() >= 2) {
    std::vector<std::string> healthy;
    for (const auto& e : route) healthy.push_back(e.address);
    const std::vector<std::string> lent =
        router->SubtreeWorkers(options_.job_id, home, outputs, kv_tokens, std::move(healthy),
                               static_cast<int>(at_home.size()) - 1);
    if (!lent.empty()) {
      std::vector<absl::Span<const int32_t>> suffixes;
      std::vector<int> weights;
      for (int b : at_home) {
        suffixes.push_back(request.branches[b].suffix_tokens);
        weights.push_back(request.branches[b].num_samples);
      }
      // Cuts count shared whole KV blocks of the home worker's cache.
      const size_t prompt =
          !request.prompt_tokens.empty() ? request.prompt_tokens.size() : prompt_tokens_.size();
      const std::vector<std::vector<int>> split =
          SplitSubtrees(suffixes, weights, 1 + static_cast<int>(lent.size()),
                        static_cast<int64_t>(prompt), router->KvBlockTokens(home));
      // The first part stays home; the others go to the lent workers.
      for (size_t p = 1; p < split.size(); ++p) {
        for (int i : split[p]) where[at_home[i]] = lent[p - 1];
      }
      split_ = true;
      if (options_.on_subtrees) options_.on_subtrees(static_cast<int>(split.size()) - 1);
    }
  }
  // Parts by worker: home first (the job's own route), then in branch order.
  parts[0].address = home;
  for (int b = 0; b < num_branches; ++b) {
    auto part = std::find_if(parts.begin(), parts.end(),
                             [&](const Part& p) { return p.address == where[b]; });
    if (part == parts.end()) {
      parts.push_back(Part{where[b], {}, {}});
      part = parts.end() - 1;
      // A sub-tree's worker first, then the job's route for failover.
      part->first.push_back(*routed(where[b]));
      for (const auto& e : route) {
        if (e.address != where[b]) part->first.push_back(e);
      }
    }
    part->branches.push_back(b);
  }
  if (parts[0].branches.empty()) parts.erase(parts.begin());
  return parts;
}

absl::StatusOr<search::ExtendResult> RemoteGenerator::Extend(const search::ExtendRequest& request) {
  const absl::Time call_start = absl::Now();
  arbor::v1::ExtendRequest base;  // all but the branches
  base.set_job_id(options_.job_id);
  base.set_model(options_.model);
  if (!request.prompt_tokens.empty()) {
    base.mutable_prompt_tokens()->Add(request.prompt_tokens.begin(), request.prompt_tokens.end());
  } else if (!prompt_tokens_.empty()) {
    base.mutable_prompt_tokens()->Add(prompt_tokens_.begin(), prompt_tokens_.end());
  } else {
    base.set_prompt_text(options_.question);
    base.set_chat_template(options_.chat_template);
  }
  base.mutable_sampling()->set_temperature(request.sampling.temperature);
  base.mutable_sampling()->set_top_p(request.sampling.top_p);
  base.mutable_sampling()->set_top_k(request.sampling.top_k);
  arbor::v1::StopRules* stop = base.mutable_stop();
  for (const std::string& d : request.stop.step_delimiters) stop->add_step_delimiters(d);
  stop->set_no_step_delimiter(request.stop.step_delimiters.empty());
  stop->set_max_step_tokens(request.stop.max_step_tokens);
  stop->set_ignore_eos(request.stop.ignore_eos);

  const std::vector<Part> parts = PlaceBranches(request);
  struct PartCall {
    arbor::v1::ExtendRequest proto;
    RemoteCallStats stats;
    absl::StatusOr<std::shared_ptr<Attempt<arbor::v1::ExtendResponse>>> answered =
        absl::UnknownError("not run");
  };
  std::vector<PartCall> calls(parts.size());
  for (size_t p = 0; p < parts.size(); ++p) {
    calls[p].proto = base;
    for (int b : parts[p].branches) {
      const search::BranchInput& branch = request.branches[b];
      arbor::v1::BranchInput* input = calls[p].proto.add_branches();
      input->mutable_suffix_tokens()->Add(branch.suffix_tokens.begin(),
                                          branch.suffix_tokens.end());
      input->set_num_samples(branch.num_samples);
      input->set_seed(branch.seed);
      input->set_suffix_text(branch.suffix_text);
    }
  }
  using ExtendAttempt = Attempt<arbor::v1::ExtendResponse>;
  auto run = [&](size_t p) {
    PartCall& call = calls[p];
    call.answered = CallWithHedging<arbor::v1::ExtendResponse>(
        pool_, canceller_, options_, request.deadline, call.stats, "Generator.Extend",
        [&call](const EndpointPool::Endpoint& endpoint, ExtendAttempt& attempt,
                std::function<void(grpc::Status)> done) -> std::shared_ptr<void> {
          std::shared_ptr<arbor::v1::Generator::Stub> stub =
              arbor::v1::Generator::NewStub(endpoint.channel);
          stub->async()->Extend(&attempt.context, &call.proto, &attempt.response,
                                std::move(done));
          return stub;
        },
        parts[p].first);
  };
  // The sub-trees' calls run at the same time as the job's own (each blocks
  // on its attempts; the strategy waits for all of them).
  std::vector<std::thread> threads;
  for (size_t p = 1; p < parts.size(); ++p) threads.emplace_back(run, p);
  run(0);
  for (std::thread& t : threads) t.join();

  search::ExtendResult result;
  absl::Status failed;
  for (size_t p = 0; p < parts.size(); ++p) {
    const RemoteCallStats& s = calls[p].stats;
    stats_.calls += s.calls;
    stats_.retries += s.retries;
    stats_.hedges += s.hedges;
    if (!calls[p].answered.ok()) {
      if (failed.ok()) failed = calls[p].answered.status();
      continue;
    }
    const std::string& answered_on = (*calls[p].answered)->address;
    if (p == 0 || stats_.last_endpoint.empty()) stats_.last_endpoint = answered_on;
    if (!parts[p].first.empty() && answered_on != parts[p].first.front().address) {
      subtrees_.Forget(parts[p].first.front().address);  // its worker failed
    }
    const arbor::v1::ExtendResponse& response = (*calls[p].answered)->response;
    if (prompt_tokens_.empty() && response.prompt_tokens_size() > 0) {
      prompt_tokens_.assign(response.prompt_tokens().begin(), response.prompt_tokens().end());
      if (options_.router != nullptr) {
        options_.router->ObservePromptTokens(options_.question.size(), prompt_tokens_.size());
      }
    }
    for (const arbor::v1::BranchOutput& out : response.outputs()) {
      search::StepOutput step;
      const int local = out.branch_index();
      step.branch_index = local >= 0 && local < static_cast<int>(parts[p].branches.size())
                              ? parts[p].branches[local]
                              : -1;  // the strategy refuses an output it did not ask for
      step.sample_index = out.sample_index();
      step.tokens.assign(out.tokens().begin(), out.tokens().end());
      step.text = out.text();
      step.logprob = out.logprob();
      step.finish_reason = FromProto(out.finish_reason());
      // A probe's output continues its suffix_text, whose tokens it does not
      // hold: no branch grows from it, so there is nothing to record.
      if (split_ && step.branch_index >= 0 &&
          request.branches[step.branch_index].suffix_text.empty()) {
        // Where this branch's newest KV is: its descendants follow it there.
        const auto& parent = request.branches[step.branch_index].suffix_tokens;
        std::vector<int32_t> suffix(parent.begin(), parent.end());
        suffix.insert(suffix.end(), step.tokens.begin(), step.tokens.end());
        subtrees_.Record(suffix, answered_on);
      }
      result.outputs.push_back(std::move(step));
    }
    result.usage.generated_tokens += response.usage().generated_tokens();
    result.usage.prefill_tokens += response.usage().prefill_tokens();
    result.usage.prefix_cache_hit_tokens += response.usage().prefix_cache_hit_tokens();
    result.usage.queue_us += response.usage().worker_queue_us();
    result.usage.compute_us += response.usage().worker_compute_us();
  }
  if (!failed.ok()) return failed;
  if (parts.size() > 1) {
    // Branch-major, as one worker would have answered.
    std::stable_sort(result.outputs.begin(), result.outputs.end(),
                     [](const search::StepOutput& a, const search::StepOutput& b) {
                       return std::tie(a.branch_index, a.sample_index) <
                              std::tie(b.branch_index, b.sample_index);
                     });
  }
  result.usage.call_us = absl::ToInt64Microseconds(absl::Now() - call_start);
  return result;
}

namespace {

// A Verifier call's usage as the search sees it; call_us counts from
// call_start (retries and hedges included).
search::ScoringUsage ScoringUsageOf(const arbor::v1::Usage& usage, absl::Time call_start) {
  search::ScoringUsage out;
  out.reward_tokens = usage.reward_tokens();
  out.reward_cache_hit_tokens = usage.reward_cache_hit_tokens();
  out.queue_us = usage.verifier_queue_us();
  out.compute_us = usage.verifier_compute_us();
  out.call_us = absl::ToInt64Microseconds(absl::Now() - call_start);
  return out;
}

}  // namespace

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
  using ScoreAttempt = Attempt<arbor::v1::ScoreResponse>;
  auto answered = CallWithHedging<arbor::v1::ScoreResponse>(
      pool_, canceller_, options_, request.deadline, stats_, "Verifier.Score",
      [&](const EndpointPool::Endpoint& endpoint, ScoreAttempt& attempt,
          std::function<void(grpc::Status)> done) -> std::shared_ptr<void> {
        std::shared_ptr<arbor::v1::Verifier::Stub> stub =
            arbor::v1::Verifier::NewStub(endpoint.channel);
        stub->async()->Score(&attempt.context, &proto, &attempt.response, std::move(done));
        return stub;
      });
  if (!answered.ok()) return answered.status();
  const arbor::v1::ScoreResponse& response = (*answered)->response;
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
  result.usage = ScoringUsageOf(response.usage(), call_start);
  return result;
}

absl::StatusOr<search::PairwiseResult> RemoteScorer::Compare(
    const search::PairwiseRequest& request) {
  const absl::Time call_start = absl::Now();
  arbor::v1::CompareRequest proto;
  proto.set_job_id(options_.job_id);
  proto.set_model(options_.model);
  proto.set_question(std::string(request.question));
  for (const search::PairwiseMatch& match : request.pairs) {
    arbor::v1::ComparePair* pair = proto.add_pairs();
    for (const std::string& s : match.a) pair->mutable_a()->add_steps(s);
    for (const std::string& s : match.b) pair->mutable_b()->add_steps(s);
  }
  using CompareAttempt = Attempt<arbor::v1::CompareResponse>;
  auto answered = CallWithHedging<arbor::v1::CompareResponse>(
      pool_, canceller_, options_, request.deadline, stats_, "Verifier.Compare",
      [&](const EndpointPool::Endpoint& endpoint, CompareAttempt& attempt,
          std::function<void(grpc::Status)> done) -> std::shared_ptr<void> {
        std::shared_ptr<arbor::v1::Verifier::Stub> stub =
            arbor::v1::Verifier::NewStub(endpoint.channel);
        stub->async()->Compare(&attempt.context, &proto, &attempt.response, std::move(done));
        return stub;
      });
  if (!answered.ok()) return answered.status();
  const arbor::v1::CompareResponse& response = (*answered)->response;
  if (response.results_size() != proto.pairs_size()) {
    return absl::InternalError(absl::StrCat("Verifier.Compare on ", stats_.last_endpoint,
                                            " returned ", response.results_size(),
                                            " results for ", proto.pairs_size(), " pairs"));
  }
  search::PairwiseResult result;
  result.prob_a.reserve(response.results_size());
  for (const arbor::v1::CompareResult& r : response.results()) result.prob_a.push_back(r.prob_a());
  result.usage = ScoringUsageOf(response.usage(), call_start);
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

void VerifierCapabilities::Report(const std::string& model, bool supports_compare) {
  absl::MutexLock lock(&mu_);
  supports_compare_[model] = supports_compare;
}

bool VerifierCapabilities::SupportsCompare(const std::string& model) const {
  absl::MutexLock lock(&mu_);
  auto it = supports_compare_.find(model);
  return it != supports_compare_.end() && it->second;
}

ModelProbe VerifierModelProbe(std::shared_ptr<VerifierCapabilities> capabilities) {
  return [capabilities](const std::shared_ptr<grpc::Channel>& channel,
                        absl::Time deadline) -> absl::StatusOr<std::string> {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    arbor::v1::VerifierInfoRequest request;
    arbor::v1::VerifierInfo info;
    grpc::Status status = arbor::v1::Verifier::NewStub(channel)->Info(&context, request, &info);
    if (!status.ok()) return rpc::ToAbslStatus(status);
    if (info.model().empty()) return absl::InternalError("Verifier.Info returned no model");
    if (capabilities != nullptr) capabilities->Report(info.model(), info.supports_compare());
    return info.model();
  };
}

}  // namespace arbor::coordinator
