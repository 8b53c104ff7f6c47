// The coordinator's Prometheus metrics (all prefixed arbor_coordinator_):
//   jobs_total{strategy,outcome}          outcome: ok, budget_exhausted, cancelled,
//                                          deadline_exceeded, failed, invalid, rejected
//   job_seconds{strategy}                 histogram, acceptance to result
//   step_seconds{strategy}                histogram, one strategy iteration
//   queue_wait_seconds                    histogram, acceptance to start
//   job_phase_seconds{phase}              histogram, a finished job's time by phase:
//                                          coordinator, network, worker_queue,
//                                          worker_compute, verifier_queue, verifier_compute
//   tokens_total{kind}                    generated, prefill, prefix_cache_hit, reward,
//                                          reward_cache_hit
//   reward_calls_total, worker_calls_total
//   budget_exhausted_total{cap}
//   endpoint_errors_total{pool,code}, endpoint_ejections_total{pool},
//   endpoint_retries_total{pool}, endpoints_healthy{pool}, endpoints{pool}
//   endpoint_hedges_total{pool,reason}    calls also sent to another endpoint while
//                                          running; reason: ejected, slow
//   subtree_placements_total              sub-trees of a job's branches sent to a
//                                          second worker (--routing_split_outputs)
//   jobs_in_flight, jobs_queued           gauges
// Thread-safety: all methods are thread-safe (prometheus-cpp metrics are).
#ifndef ARBOR_COORDINATOR_METRICS_H_
#define ARBOR_COORDINATOR_METRICS_H_

#include <string_view>

#include "absl/time/time.h"
#include "coordinator/endpoint_pool.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "search/budget.h"

namespace arbor::coordinator {

class CoordinatorMetrics {
 public:
  explicit CoordinatorMetrics(prometheus::Registry& registry);

  void JobFinished(std::string_view strategy, std::string_view outcome, absl::Duration latency);
  void QueueWait(absl::Duration wait);
  void Step(std::string_view strategy, absl::Duration latency);
  // Adds a finished job's usage to the token and call counters.
  void AddUsage(const search::Usage& usage);
  // Observes a finished job's time by phase (BreakDownJobTime).
  void JobPhases(absl::Duration coordinator, absl::Duration network, absl::Duration worker_queue,
                 absl::Duration worker_compute, absl::Duration verifier_queue,
                 absl::Duration verifier_compute);
  void BudgetExhausted(std::string_view cap);
  void Retries(std::string_view pool, int64_t retries);
  // One call hedged on another endpoint; reason "ejected" or "slow".
  void Hedged(std::string_view pool, std::string_view reason);
  // A job's call sent `count` sub-trees to other workers than the job's.
  void SubtreesPlaced(int count);
  void SetJobs(int running, int queued);
  // Handles an EndpointPool updates.
  PoolMetrics ForPool(std::string_view pool);

 private:
  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Family<prometheus::Histogram>& job_seconds_;
  prometheus::Family<prometheus::Histogram>& step_seconds_;
  prometheus::Histogram& queue_wait_seconds_;
  prometheus::Family<prometheus::Histogram>& job_phase_seconds_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Counter& reward_calls_;
  prometheus::Counter& worker_calls_;
  prometheus::Family<prometheus::Counter>& budget_exhausted_;
  prometheus::Family<prometheus::Counter>& endpoint_errors_;
  prometheus::Family<prometheus::Counter>& ejections_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Counter>& hedges_;
  prometheus::Counter& subtree_placements_;
  prometheus::Family<prometheus::Gauge>& healthy_;
  prometheus::Family<prometheus::Gauge>& endpoints_;
  prometheus::Gauge& in_flight_;
  prometheus::Gauge& queued_;
};

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_METRICS_H_
