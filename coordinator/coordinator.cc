#include "coordinator/coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.pb.h"
#include "common/counter_rng.h"
#include "common/log.h"
#include "coordinator/remote_backends.h"
#include "coordinator/solve_request.h"
#include "prometheus/registry.h"

namespace arbor::coordinator {
namespace {

// Time kept back from the client's gRPC deadline to send the answer.
absl::Duration ResponseMargin(absl::Duration left) {
  return std::min(absl::Milliseconds(200), left / 10);
}

std::string Outcome(const absl::Status& status, bool budget_exhausted) {
  if (status.ok()) return budget_exhausted ? "budget_exhausted" : "ok";
  switch (status.code()) {
    case absl::StatusCode::kCancelled:
      return "cancelled";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline_exceeded";
    case absl::StatusCode::kInvalidArgument:
      return "invalid";
    default:
      return "failed";
  }
}

}  // namespace

struct Coordinator::Job : public JobHandle {
  std::string id;
  arbor::v1::SolveRequest request;
  search::StrategyConfig config;
  std::string strategy;
  std::string model;
  std::string reward_model;  // "" when the strategy needs none
  absl::Time accepted;
  absl::Time rpc_deadline;
  Callbacks callbacks;
  CallCanceller canceller;
  // This job's slot in its client's quota; released when the job ends.
  std::unique_ptr<ClientQuotas::Lease> quota;

  const std::string& job_id() const override { return id; }
  void Cancel() override { canceller.Cancel(); }
};

Coordinator::Coordinator(CoordinatorOptions options)
    : options_(std::move(options)),
      instance_tag_(Mix64(static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^
                          static_cast<uint64_t>(getpid()))) {}

Coordinator::~Coordinator() { Shutdown(); }

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    CoordinatorOptions options, std::shared_ptr<prometheus::Registry> registry) {
  if (registry == nullptr) registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options)));
  c->registry_ = std::move(registry);
  c->metrics_ = std::make_unique<CoordinatorMetrics>(*c->registry_);
  PoolOptions workers = c->options_.workers;
  workers.name = "workers";
  auto worker_pool =
      EndpointPool::Create(workers, GeneratorModelProbe(), c->metrics_->ForPool("workers"));
  if (!worker_pool.ok()) return worker_pool.status();
  c->workers_ = *std::move(worker_pool);
  auto router = Router::Create(c->options_.routing, c->workers_.get());
  if (!router.ok()) return router.status();
  c->router_ = *std::move(router);
  c->router_->Start();
  if (!c->options_.verifiers.targets.empty()) {
    PoolOptions verifiers = c->options_.verifiers;
    verifiers.name = "verifiers";
    auto verifier_pool =
        EndpointPool::Create(verifiers, VerifierModelProbe(c->verifier_capabilities_),
                             c->metrics_->ForPool("verifiers"));
    if (!verifier_pool.ok()) return verifier_pool.status();
    c->verifiers_ = *std::move(verifier_pool);
  }
  CoordinatorMetrics* metrics = c->metrics_.get();
  auto jobs =
      JobManager::Create(c->options_.max_concurrent_jobs, c->options_.max_queued_jobs,
                         [metrics](int running, int queued) { metrics->SetJobs(running, queued); });
  if (!jobs.ok()) return jobs.status();
  c->jobs_ = *std::move(jobs);
  if (c->options_.client_quotas.enabled()) {
    auto quotas = ClientQuotas::Create(c->options_.client_quotas);
    if (!quotas.ok()) return quotas.status();
    c->quotas_ = *std::move(quotas);
  }
  return c;
}

void Coordinator::Shutdown() {
  if (jobs_ != nullptr) jobs_->Shutdown();
}

absl::StatusOr<std::string> Coordinator::ResolveModel(const EndpointPool& pool,
                                                      const std::string& requested,
                                                      const std::string& fallback,
                                                      std::string_view field) const {
  const std::vector<std::string> known = pool.KnownModels();
  const std::string wanted = requested.empty() ? fallback : requested;
  if (known.empty()) {
    return absl::UnavailableError(absl::StrCat("no healthy ", pool.name(), " yet"));
  }
  if (wanted.empty()) {
    // The healthy pool's model, else any known one: sorted, so stable.
    const std::vector<std::string> healthy = pool.HealthyModels();
    return healthy.empty() ? known.front() : healthy.front();
  }
  if (std::find(known.begin(), known.end(), wanted) == known.end()) {
    return absl::InvalidArgumentError(absl::StrCat(absl::string_view(field.data(), field.size()),
                                                   ": unknown model '", wanted, "'; ", pool.name(),
                                                   " serve: ", absl::StrJoin(known, ", ")));
  }
  return wanted;
}

absl::StatusOr<std::shared_ptr<JobHandle>> Coordinator::Submit(
    const arbor::v1::SolveRequest& request, absl::Time rpc_deadline, Callbacks callbacks,
    const std::string& client) {
  auto job = std::make_shared<Job>();
  job->accepted = absl::Now();
  auto config = StrategyConfigFromRequest(request);
  if (!config.ok()) {
    metrics_->JobFinished("unknown", "invalid", absl::ZeroDuration());
    return config.status();
  }
  job->config = *std::move(config);
  job->strategy = std::string(search::StrategyName(job->config));
  auto model = ResolveModel(*workers_, request.model(), options_.default_model, "model");
  if (!model.ok()) {
    metrics_->JobFinished(job->strategy, Outcome(model.status(), false), absl::ZeroDuration());
    return model.status();
  }
  job->model = *std::move(model);
  if (NeedsRewardModel(job->config)) {
    if (verifiers_ == nullptr) {
      metrics_->JobFinished(job->strategy, "invalid", absl::ZeroDuration());
      return absl::FailedPreconditionError(
          absl::StrCat("reward_model: strategy ", job->strategy,
                       " needs a reward model, and this coordinator has no --verifiers"));
    }
    auto reward = ResolveModel(*verifiers_, request.reward_model(), options_.default_reward_model,
                               "reward_model");
    if (!reward.ok()) {
      metrics_->JobFinished(job->strategy, Outcome(reward.status(), false), absl::ZeroDuration());
      return reward.status();
    }
    job->reward_model = *std::move(reward);
    if (NeedsPairwiseJudge(job->config) &&
        !verifier_capabilities_->SupportsCompare(job->reward_model)) {
      metrics_->JobFinished(job->strategy, "invalid", absl::ZeroDuration());
      return absl::FailedPreconditionError(absl::StrCat(
          "best_of_n.selection: tournament needs a reward model that compares solutions "
          "(Verifier.Compare: an llm_judge), and reward_model \"",
          job->reward_model, "\" does not report supports_compare"));
    }
  }
  job->request = request;
  job->id = request.job_id().empty()
                ? absl::StrFormat("job-%016x-%d", instance_tag_, next_job_.fetch_add(1))
                : request.job_id();
  job->rpc_deadline = rpc_deadline;
  job->callbacks = std::move(callbacks);
  if (quotas_ != nullptr) {
    auto lease = quotas_->Admit(client);
    if (!lease.ok()) {
      metrics_->JobFinished(job->strategy, "rejected", absl::ZeroDuration());
      return lease.status();
    }
    job->quota = *std::move(lease);
  }

  JobManager::Task task;
  task.run = [this, job] { Run(job); };
  task.on_rejected = [job] {
    job->quota.reset();
    // Taken out for their last call: what they capture (the HTTP API's call
    // state, which holds the JobHandle) is freed when on_done returns
    // instead of living on in a cycle with the job.
    Callbacks callbacks = std::exchange(job->callbacks, {});
    callbacks.on_done(absl::UnavailableError("coordinator shut down before the job started"),
                      nullptr);
  };
  if (absl::Status admitted = jobs_->Submit(std::move(task)); !admitted.ok()) {
    metrics_->JobFinished(job->strategy, "rejected", absl::ZeroDuration());
    job->quota.reset();
    return admitted;
  }
  return std::shared_ptr<JobHandle>(job);
}

void Coordinator::Run(const std::shared_ptr<Job>& job) {
  const absl::Time started = absl::Now();
  metrics_->QueueWait(started - job->accepted);
  auto finish = [&](const absl::Status& status, const arbor::v1::SolveResponse* response,
                    bool budget_exhausted) {
    const std::string outcome = Outcome(status, budget_exhausted);
    metrics_->JobFinished(job->strategy, outcome, absl::Now() - job->accepted);
    ARBOR_LOG(INFO) << "job " << job->id << " (" << job->strategy << ") " << outcome
                    << (status.ok() ? "" : absl::StrCat(": ", status.ToString())) << " in "
                    << absl::FormatDuration(absl::Now() - job->accepted);
    // The client's slot frees before it hears the answer, so its next job
    // is admitted.
    job->quota.reset();
    // Taken out for their last call (see on_rejected above).
    Callbacks callbacks = std::exchange(job->callbacks, {});
    callbacks.on_done(status, response);
  };
  if (job->canceller.cancelled())
    return finish(absl::CancelledError("job cancelled"), nullptr, false);
  if (started >= job->rpc_deadline) {
    return finish(absl::DeadlineExceededError("deadline passed while the job was queued"), nullptr,
                  false);
  }

  // The client's deadline bounds the search, so it returns its best in time.
  search::StrategyConfig config = job->config;
  if (job->rpc_deadline != absl::InfiniteFuture()) {
    const absl::Duration left = job->rpc_deadline - job->accepted;
    const absl::Duration usable = std::max(absl::Milliseconds(1), left - ResponseMargin(left));
    if (config.budget.deadline == absl::ZeroDuration() || config.budget.deadline > usable) {
      config.budget.deadline = usable;
    }
  }

  RemoteJobOptions generator_options;
  generator_options.job_id = job->id;
  generator_options.model = job->model;
  generator_options.chat_template = job->request.chat_template();
  generator_options.question = job->request.question();
  generator_options.rpc_deadline = job->rpc_deadline;
  generator_options.call_timeout = options_.call_timeout;
  generator_options.hedge_after = options_.hedge_after;
  generator_options.on_hedge = [this](std::string_view reason) {
    metrics_->Hedged("workers", reason);
  };
  generator_options.on_subtrees = [this](int workers) { metrics_->SubtreesPlaced(workers); };
  generator_options.router = router_.get();
  RemoteGenerator generator(*workers_, job->canceller, generator_options);
  std::unique_ptr<RemoteScorer> scorer;
  if (!job->reward_model.empty()) {
    RemoteJobOptions scorer_options = generator_options;
    scorer_options.model = job->reward_model;
    scorer_options.on_hedge = [this](std::string_view reason) {
      metrics_->Hedged("verifiers", reason);
    };
    scorer_options.router = nullptr;  // verifiers keep rendezvous order
    scorer = std::make_unique<RemoteScorer>(*verifiers_, job->canceller, scorer_options);
  }

  auto accounting = [&] {
    JobAccounting a;
    a.retries = generator.stats().retries + (scorer ? scorer->stats().retries : 0);
    a.wall_time = absl::Now() - job->accepted;
    a.worker = generator.stats().last_endpoint;
    a.verifier = scorer ? scorer->stats().last_endpoint : "";
    return a;
  };

  if (job->callbacks.on_event) {
    arbor::v1::SolveEvent accepted;
    accepted.mutable_accepted()->set_job_id(job->id);
    accepted.mutable_accepted()->set_strategy(job->strategy);
    // The router places the job here already; its first Extend goes there.
    const auto route = router_->Route(
        *workers_,
        RouteRequest{job->id, job->request.chat_template(), job->request.question()},
        job->model);
    if (!route.empty()) accepted.mutable_accepted()->set_worker(route.front().address);
    job->callbacks.on_event(accepted);
  }

  search::JobContext context;
  context.question = job->request.question();
  context.seed = job->request.seed();
  context.start = job->accepted;
  absl::Time last_step = started;
  context.on_progress = [&](const search::IterationProgress& progress) {
    const absl::Time now = absl::Now();
    metrics_->Step(job->strategy, now - last_step);
    last_step = now;
    if (!job->callbacks.on_event) return;
    arbor::v1::SolveEvent event;
    FillStep(progress, accounting(), event.mutable_step());
    job->callbacks.on_event(event);
  };
  context.is_cancelled = [&] { return job->canceller.cancelled(); };

  absl::StatusOr<search::SolveResult> result =
      search::RunStrategy(config, context, generator, scorer.get());
  metrics_->Retries("workers", generator.stats().retries);
  if (scorer) metrics_->Retries("verifiers", scorer->stats().retries);
  if (!result.ok()) {
    absl::Status status = result.status();
    if (job->canceller.cancelled()) status = absl::CancelledError("job cancelled");
    return finish(status, nullptr, false);
  }
  metrics_->AddUsage(result->usage);
  if (job->quota) job->quota->Charge(result->usage.generated_tokens + result->usage.reward_tokens);
  if (result->budget_exhausted) metrics_->BudgetExhausted(result->exhausted_by);
  arbor::v1::SolveResponse response;
  const JobAccounting final_accounting = accounting();
  const JobTimeBreakdown time = BreakDownJobTime(result->usage, final_accounting.wall_time);
  metrics_->JobPhases(time.coordinator, time.network, time.worker_queue, time.worker_compute,
                      time.verifier_queue, time.verifier_compute);
  FillSolveResponse(job->id, *result, final_accounting, &response);
  finish(absl::OkStatus(), &response, result->budget_exhausted);
}

}  // namespace arbor::coordinator
