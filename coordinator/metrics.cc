#include "coordinator/metrics.h"

#include <string>
#include <utility>

#include "search/budget.h"

namespace arbor::coordinator {
namespace {

const prometheus::Histogram::BucketBoundaries& JobBuckets() {
  static const auto* kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800};
  return *kBuckets;
}

const prometheus::Histogram::BucketBoundaries& StepBuckets() {
  static const auto* kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *kBuckets;
}

std::string S(std::string_view v) { return std::string(v); }

// search::StrategyName's values (search/strategy.h) and the outcomes of
// jobs_total (metrics.h).
constexpr const char* kStrategies[] = {"greedy",          "best_of_n",      "beam_search", "dvts",
                                       "particle_filter", "particle_gibbs", "mcts",        "auto"};
constexpr const char* kOutcomes[] = {"ok",       "budget_exhausted", "cancelled", "deadline_exceeded",
                                     "failed",   "invalid",          "rejected"};
constexpr const char* kPhases[] = {"coordinator",    "network",         "worker_queue",
                                   "worker_compute", "verifier_queue", "verifier_compute"};
// The codes of endpoint_errors_total that the dashboard and alerts show.
constexpr const char* kEndpointCodes[] = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED",
                                          "INTERNAL"};

}  // namespace

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& registry)
    : jobs_(prometheus::BuildCounter()
                .Name("arbor_coordinator_jobs_total")
                .Help("Jobs by strategy and outcome (ok, budget_exhausted, cancelled, "
                      "deadline_exceeded, failed, invalid, rejected)")
                .Register(registry)),
      job_seconds_(prometheus::BuildHistogram()
                       .Name("arbor_coordinator_job_seconds")
                       .Help("Job latency from acceptance to result, by strategy")
                       .Register(registry)),
      step_seconds_(prometheus::BuildHistogram()
                        .Name("arbor_coordinator_step_seconds")
                        .Help("Latency of one strategy iteration (generate + score), by strategy")
                        .Register(registry)),
      queue_wait_seconds_(prometheus::BuildHistogram()
                              .Name("arbor_coordinator_queue_wait_seconds")
                              .Help("Time a job waited for a job slot")
                              .Register(registry)
                              .Add({}, StepBuckets())),
      job_phase_seconds_(prometheus::BuildHistogram()
                             .Name("arbor_coordinator_job_phase_seconds")
                             .Help("A finished job's time by phase: coordinator, network, "
                                   "worker_queue, worker_compute, verifier_queue, "
                                   "verifier_compute (docs/E2E.md)")
                             .Register(registry)),
      tokens_(prometheus::BuildCounter()
                  .Name("arbor_coordinator_tokens_total")
                  .Help("Tokens spent by finished jobs, by kind (generated, prefill, "
                        "prefix_cache_hit, reward, reward_cache_hit)")
                  .Register(registry)),
      reward_calls_(prometheus::BuildCounter()
                        .Name("arbor_coordinator_reward_calls_total")
                        .Help("Verifier.Score calls of finished jobs")
                        .Register(registry)
                        .Add({})),
      worker_calls_(prometheus::BuildCounter()
                        .Name("arbor_coordinator_worker_calls_total")
                        .Help("Generator.Extend calls of finished jobs")
                        .Register(registry)
                        .Add({})),
      budget_exhausted_(prometheus::BuildCounter()
                            .Name("arbor_coordinator_budget_exhausted_total")
                            .Help("Jobs stopped early by a budget cap, by cap")
                            .Register(registry)),
      endpoint_errors_(prometheus::BuildCounter()
                           .Name("arbor_coordinator_endpoint_errors_total")
                           .Help("Failed worker/verifier calls, by pool and gRPC code")
                           .Register(registry)),
      ejections_(prometheus::BuildCounter()
                     .Name("arbor_coordinator_endpoint_ejections_total")
                     .Help("Endpoints ejected after a failure, by pool")
                     .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("arbor_coordinator_endpoint_retries_total")
                   .Help("Calls retried on another endpoint, by pool")
                   .Register(registry)),
      hedges_(prometheus::BuildCounter()
                  .Name("arbor_coordinator_endpoint_hedges_total")
                  .Help("Calls also sent to another endpoint while running, by pool and "
                        "reason (ejected: its endpoint was ejected; slow: past --hedge_after_ms)")
                  .Register(registry)),
      subtree_placements_(prometheus::BuildCounter()
                              .Name("arbor_coordinator_subtree_placements_total")
                              .Help("Sub-trees of a job's branches sent to another worker than "
                                    "the job's (--routing_split_outputs)")
                              .Register(registry)
                              .Add({})),
      healthy_(prometheus::BuildGauge()
                   .Name("arbor_coordinator_endpoints_healthy")
                   .Help("Healthy endpoints, by pool")
                   .Register(registry)),
      endpoints_(prometheus::BuildGauge()
                     .Name("arbor_coordinator_endpoints")
                     .Help("Known endpoints (healthy or not), by pool")
                     .Register(registry)),
      in_flight_(prometheus::BuildGauge()
                     .Name("arbor_coordinator_jobs_in_flight")
                     .Help("Jobs running now")
                     .Register(registry)
                     .Add({})),
      queued_(prometheus::BuildGauge()
                  .Name("arbor_coordinator_jobs_queued")
                  .Help("Jobs waiting for a job slot")
                  .Register(registry)
                  .Add({})) {
  // Every series a dashboard panel or alert selects exists from the start at
  // zero, so rate() and absent-versus-zero behave before the first event
  // (deploy/prometheus/arbor_rules.yml, deploy/grafana).
  for (const char* strategy : kStrategies) {
    for (const char* outcome : kOutcomes) jobs_.Add({{"strategy", strategy}, {"outcome", outcome}});
    job_seconds_.Add({{"strategy", strategy}}, JobBuckets());
    step_seconds_.Add({{"strategy", strategy}}, StepBuckets());
  }
  for (const char* outcome : {"invalid", "rejected"}) {
    jobs_.Add({{"strategy", "unknown"}, {"outcome", outcome}});
  }
  for (const char* phase : kPhases) job_phase_seconds_.Add({{"phase", phase}}, JobBuckets());
  for (const char* kind :
       {"generated", "prefill", "prefix_cache_hit", "reward", "reward_cache_hit"}) {
    tokens_.Add({{"kind", kind}});
  }
  for (std::string_view cap : {search::kCapGeneratedTokens, search::kCapRewardTokens,
                               search::kCapRewardCalls, search::kCapSteps, search::kCapDeadline}) {
    budget_exhausted_.Add({{"cap", S(cap)}});
  }
}

void CoordinatorMetrics::JobFinished(std::string_view strategy, std::string_view outcome,
                                     absl::Duration latency) {
  jobs_.Add({{"strategy", S(strategy)}, {"outcome", S(outcome)}}).Increment();
  if (outcome != "invalid" && outcome != "rejected") {
    job_seconds_.Add({{"strategy", S(strategy)}}, JobBuckets())
        .Observe(absl::ToDoubleSeconds(latency));
  }
}

void CoordinatorMetrics::QueueWait(absl::Duration wait) {
  queue_wait_seconds_.Observe(absl::ToDoubleSeconds(wait));
}

void CoordinatorMetrics::Step(std::string_view strategy, absl::Duration latency) {
  step_seconds_.Add({{"strategy", S(strategy)}}, StepBuckets())
      .Observe(absl::ToDoubleSeconds(latency));
}

void CoordinatorMetrics::AddUsage(const search::Usage& usage) {
  tokens_.Add({{"kind", "generated"}}).Increment(static_cast<double>(usage.generated_tokens));
  tokens_.Add({{"kind", "prefill"}}).Increment(static_cast<double>(usage.prefill_tokens));
  tokens_.Add({{"kind", "prefix_cache_hit"}})
      .Increment(static_cast<double>(usage.prefix_cache_hit_tokens));
  tokens_.Add({{"kind", "reward"}}).Increment(static_cast<double>(usage.reward_tokens));
  tokens_.Add({{"kind", "reward_cache_hit"}})
      .Increment(static_cast<double>(usage.reward_cache_hit_tokens));
  reward_calls_.Increment(static_cast<double>(usage.reward_calls));
  worker_calls_.Increment(static_cast<double>(usage.worker_calls));
}

void CoordinatorMetrics::JobPhases(absl::Duration coordinator, absl::Duration network,
                                   absl::Duration worker_queue, absl::Duration worker_compute,
                                   absl::Duration verifier_queue, absl::Duration verifier_compute) {
  for (const auto& [phase, time] :
       {std::pair<const char*, absl::Duration>{"coordinator", coordinator},
        {"network", network},
        {"worker_queue", worker_queue},
        {"worker_compute", worker_compute},
        {"verifier_queue", verifier_queue},
        {"verifier_compute", verifier_compute}}) {
    job_phase_seconds_.Add({{"phase", phase}}, JobBuckets()).Observe(absl::ToDoubleSeconds(time));
  }
}

void CoordinatorMetrics::BudgetExhausted(std::string_view cap) {
  budget_exhausted_.Add({{"cap", S(cap)}}).Increment();
}

void CoordinatorMetrics::Retries(std::string_view pool, int64_t retries) {
  if (retries > 0) retries_.Add({{"pool", S(pool)}}).Increment(static_cast<double>(retries));
}

void CoordinatorMetrics::Hedged(std::string_view pool, std::string_view reason) {
  hedges_.Add({{"pool", S(pool)}, {"reason", S(reason)}}).Increment();
}

void CoordinatorMetrics::SubtreesPlaced(int count) {
  if (count > 0) subtree_placements_.Increment(count);
}

void CoordinatorMetrics::SetJobs(int running, int queued) {
  in_flight_.Set(running);
  queued_.Set(queued);
}

PoolMetrics CoordinatorMetrics::ForPool(std::string_view pool) {
  PoolMetrics m;
  m.ejections = &ejections_.Add({{"pool", S(pool)}});
  m.healthy = &healthy_.Add({{"pool", S(pool)}});
  m.endpoints = &endpoints_.Add({{"pool", S(pool)}});
  retries_.Add({{"pool", S(pool)}});
  for (const char* reason : {"ejected", "slow"}) {
    hedges_.Add({{"pool", S(pool)}, {"reason", reason}});
  }
  for (const char* code : kEndpointCodes) endpoint_errors_.Add({{"pool", S(pool)}, {"code", code}});
  m.on_error = [this, p = S(pool)](std::string_view code) {
    endpoint_errors_.Add({{"pool", p}, {"code", S(code)}}).Increment();
  };
  return m;
}

}  // namespace arbor::coordinator
