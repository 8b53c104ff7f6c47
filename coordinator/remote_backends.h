// search::Generator and search::Scorer over gRPC: the coordinator's view of
// the arbor.v1.Generator workers and arbor.v1.Verifier reward models.
//
// Each job gets its own RemoteGenerator/RemoteScorer. Every call:
//  - routes by rendezvous hashing of the job id over the pool's healthy
//    endpoints serving the job's model (so a job's branches share one prefix
//    cache), or, for the generator, in the order of the job's Router
//    (RemoteJobOptions::router, coordinator/routing_policy.h);
//  - carries a deadline: the earliest of the job's budget deadline, the
//    client's gRPC deadline and a per-call timeout;
//  - is registered with the job's CallCanceller, so a cancelled job
//    TryCancels its in-flight calls at once;
//  - on an endpoint failure (UNAVAILABLE, INTERNAL, a per-call timeout, ...)
//    reports that endpoint Lost and retries on the next routable endpoint in
//    rendezvous order, counting the retry; errors that are the request's own
//    (INVALID_ARGUMENT, ...) are returned as they are;
//  - for the generator with a router that splits jobs (--routing_split_outputs),
//    may go as several calls at once, one per worker holding a sub-tree of
//    the job's branches (coordinator/subtree_split.h); their outputs are
//    merged in branch order, so the strategy sees one worker's answer;
//  - is hedged: when its endpoint is ejected while the call runs (a hung
//    worker fails its health checks), or when it is still unanswered after
//    hedge_after, the same request is also sent to the next routable
//    endpoint; the first answer wins and the other calls are cancelled. So a
//    hung worker costs about a health interval, not the call timeout. The
//    strategies send seeded requests, so either answer is the same.
// Prompt: EncodePrompt returns no tokens (the proto has no tokenize call);
// the first Extend sends the question as prompt_text with the chat template,
// and the templated prompt tokens the worker returns are sent afterwards.
// Thread-safety: RemoteGenerator/RemoteScorer are used by one job thread;
// CallCanceller is thread-safe.
#ifndef ARBOR_COORDINATOR_REMOTE_BACKENDS_H_
#define ARBOR_COORDINATOR_REMOTE_BACKENDS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/endpoint_pool.h"
#include "coordinator/routing_policy.h"
#include "coordinator/subtree_split.h"
#include "search/generator.h"
#include "search/pairwise_judge.h"
#include "search/scorer.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace arbor::coordinator {

// The in-flight client calls of one job; Cancel reaches all of them.
class CallCanceller {
 public:
  void Cancel();
  bool cancelled() const;

  // Registers `context` while a call runs; cancels it at once when the job is
  // already cancelled.
  class Scope {
   public:
    Scope(CallCanceller& canceller, grpc::ClientContext* context);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    CallCanceller& canceller_;
    grpc::ClientContext* context_;
  };

 private:
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<grpc::ClientContext*> active_ ABSL_GUARDED_BY(mu_);
};

// What a job's remote calls cost beyond the search's own usage.
struct RemoteCallStats {
  int64_t calls = 0;
  int64_t retries = 0;
  int64_t hedges = 0;         // calls also sent to another endpoint while running
  std::string last_endpoint;  // the endpoint that answered last
};

struct RemoteJobOptions {
  std::string job_id;
  std::string model;          // resolved model name (never empty)
  std::string chat_template;  // generator only; "" = the model's default
  std::string question;       // generator: the prompt text
  absl::Time rpc_deadline = absl::InfiniteFuture();
  absl::Duration call_timeout = absl::Seconds(120);
  // A call unanswered after this long is also sent to one more endpoint;
  // zero: only calls on an ejected endpoint are hedged.
  absl::Duration hedge_after = absl::ZeroDuration();
  // Called on the job thread for each hedge; reason "ejected" or "slow".
  std::function<void(std::string_view reason)> on_hedge;
  // Generator only: orders the workers (coordinator/routing_policy.h) instead
  // of rendezvous hashing of the job id; null keeps the pool's order.
  Router* router = nullptr;
  // Generator only: called on the job thread when a call's sub-trees go to
  // `workers` more workers (Router::SubtreeWorkers).
  std::function<void(int workers)> on_subtrees;
};

class RemoteGenerator : public search::Generator {
 public:
  RemoteGenerator(EndpointPool& pool, CallCanceller& canceller, RemoteJobOptions options)
      : pool_(pool), canceller_(canceller), options_(std::move(options)) {}
  // Tells the router (if any) that the job is over.
  ~RemoteGenerator() override;

  absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view question) override;
  absl::StatusOr<search::ExtendResult> Extend(const search::ExtendRequest& request) override;

  const RemoteCallStats& stats() const { return stats_; }

 private:
  // The branches one worker gets in one call.
  struct Part {
    std::string address;
    std::vector<int> branches;  // into ExtendRequest::branches, ascending
    // Empty: the job's own route; else the sub-tree's worker, then the rest.
    std::vector<EndpointPool::Endpoint> first;
  };
  // One part unless the router splits the job (RemoteJobOptions::router,
  // Router::SubtreeWorkers): then the sub-trees already placed keep their
  // workers, and the job's worker's share is split when it outgrows it.
  std::vector<Part> PlaceBranches(const search::ExtendRequest& request);

  EndpointPool& pool_;
  CallCanceller& canceller_;
  const RemoteJobOptions options_;
  std::vector<int32_t> prompt_tokens_;  // from the first response
  RemoteCallStats stats_;
  // Sub-trees: which worker holds which branch (kept once the job is split).
  bool split_ = false;
  SubtreeMap subtrees_;
};

// Verifier.Score, and Verifier.Compare as the scorer's pairwise judge (for
// tournament selection; routed, retried and hedged the same way).
class RemoteScorer : public search::Scorer, public search::PairwiseJudge {
 public:
  RemoteScorer(EndpointPool& pool, CallCanceller& canceller, RemoteJobOptions options)
      : pool_(pool), canceller_(canceller), options_(std::move(options)) {}

  absl::StatusOr<search::ScoreResult> Score(const search::ScoreRequest& request) override;
  absl::StatusOr<search::PairwiseResult> Compare(const search::PairwiseRequest& request) override;
  // The verifier decides at the call whether it compares (FAILED_PRECONDITION
  // when not); the coordinator checks VerifierInfo.supports_compare first.
  search::PairwiseJudge* pairwise_judge() override { return this; }

  const RemoteCallStats& stats() const { return stats_; }

 private:
  EndpointPool& pool_;
  CallCanceller& canceller_;
  const RemoteJobOptions options_;
  RemoteCallStats stats_;
};

// What the verifiers' Info says about each reward model beyond its name:
// whether it serves Compare (VerifierInfo.supports_compare), as last
// reported by an endpoint serving it. Thread-safe.
class VerifierCapabilities {
 public:
  void Report(const std::string& model, bool supports_compare);
  // False for a model no endpoint has reported yet.
  bool SupportsCompare(const std::string& model) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, bool> supports_compare_ ABSL_GUARDED_BY(mu_);
};

// Model probes for EndpointPool: Generator.Info / Verifier.Info's model. The
// verifier probe also reports each answer to `capabilities` when set.
ModelProbe GeneratorModelProbe();
ModelProbe VerifierModelProbe(std::shared_ptr<VerifierCapabilities> capabilities = nullptr);

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_REMOTE_BACKENDS_H_
