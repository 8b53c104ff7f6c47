// Coordinator: what the Reasoning service runs. Submit validates a
// SolveRequest (INVALID_ARGUMENT naming the field), resolves its policy and
// reward models against what the worker and verifier pools serve, admits it
// into the JobManager (RESOURCE_EXHAUSTED when full) and runs the strategy on
// a job thread over RemoteGenerator/RemoteScorer. The gRPC deadline of the
// call bounds the job (it becomes the budget deadline, less a margin to send
// the answer, so the job returns its best so far in time); JobHandle::Cancel
// stops the job and cancels its in-flight worker and verifier calls.
// Thread-safety: all methods are thread-safe; callbacks of one job run on its
// job thread, in order, and on_done exactly once (also for a job that never
// starts because the coordinator shuts down).
#ifndef ARBOR_COORDINATOR_COORDINATOR_H_
#define ARBOR_COORDINATOR_COORDINATOR_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/client_quotas.h"
#include "coordinator/endpoint_pool.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/remote_backends.h"
#include "coordinator/routing_policy.h"

namespace arbor::v1 {
class SolveRequest;
class SolveResponse;
class SolveEvent;
}  // namespace arbor::v1

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace arbor::rpc {
class TokenSet;
}  // namespace arbor::rpc

namespace arbor::coordinator {

struct CoordinatorOptions {
  PoolOptions workers;    // targets required
  PoolOptions verifiers;  // targets may be empty: no reward model strategies then
  // Models used when a request names none; "" takes the only (or the
  // alphabetically first) model the pool serves.
  std::string default_model;
  std::string default_reward_model;
  int max_concurrent_jobs = 8;
  int max_queued_jobs = 64;
  // Cap on one worker/verifier call; a call past it counts as an endpoint failure.
  absl::Duration call_timeout = absl::Seconds(120);
  // A call unanswered this long is also sent to another endpoint (the first
  // answer wins); zero: hedge only calls whose endpoint is ejected.
  absl::Duration hedge_after = absl::Seconds(10);
  // Bearer tokens the client API (gRPC and HTTP) requires; null: none
  // (rpc/auth.h). Callers are identified by token, certificate or address.
  std::shared_ptr<const rpc::TokenSet> client_tokens;
  // Per-client limits, keyed by that identity (coordinator/client_quotas.h).
  ClientQuotaOptions client_quotas;
  // Which worker a job goes to (coordinator/routing_policy.h, docs/ROUTING.md).
  RouterOptions routing;
};

class JobHandle {
 public:
  virtual ~JobHandle() = default;
  virtual const std::string& job_id() const = 0;
  // Stops the job between steps and cancels its in-flight calls. Idempotent.
  virtual void Cancel() = 0;
};

class Coordinator {
 public:
  struct Callbacks {
    // Accepted and Step events (may be empty: Solve needs only the result).
    std::function<void(const arbor::v1::SolveEvent& event)> on_event;
    // The result, or the error that ended the job; `response` is null on error.
    // Called last and once; the callbacks are destroyed after it returns, so
    // they may capture what holds the job's JobHandle.
    std::function<void(const absl::Status& status, const arbor::v1::SolveResponse* response)>
        on_done;
  };

  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(
      CoordinatorOptions options, std::shared_ptr<prometheus::Registry> registry);
  ~Coordinator();

  // Validates and admits the job. On OK the job runs later and reports
  // through `callbacks`; on error no callback is called. `client` is the
  // caller's identity (rpc/auth.h), the key of the per-client quotas.
  absl::StatusOr<std::shared_ptr<JobHandle>> Submit(const arbor::v1::SolveRequest& request,
                                                    absl::Time rpc_deadline, Callbacks callbacks,
                                                    const std::string& client = "local");

  // Rejects queued jobs (UNAVAILABLE) and waits for the running ones.
  void Shutdown();

  const CoordinatorOptions& options() const { return options_; }
  EndpointPool& workers() { return *workers_; }
  EndpointPool* verifiers() { return verifiers_.get(); }
  Router& router() { return *router_; }
  JobManager& jobs() { return *jobs_; }

 private:
  struct Job;
  explicit Coordinator(CoordinatorOptions options);
  void Run(const std::shared_ptr<Job>& job);
  absl::StatusOr<std::string> ResolveModel(const EndpointPool& pool, const std::string& requested,
                                           const std::string& fallback,
                                           std::string_view field) const;

  const CoordinatorOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::unique_ptr<EndpointPool> workers_;
  // What the verifiers' Info reports (supports_compare), filled by their
  // pool's model probe; checked when a job needs a pairwise judge.
  std::shared_ptr<VerifierCapabilities> verifier_capabilities_ =
      std::make_shared<VerifierCapabilities>();
  std::unique_ptr<EndpointPool> verifiers_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<ClientQuotas> quotas_;  // null when no per-client limit is set
  std::atomic<uint64_t> next_job_ = 0;
  const uint64_t instance_tag_;
};

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_COORDINATOR_H_
