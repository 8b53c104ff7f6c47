// Router: which generation worker a job's Generator.Extend calls go to.
//
// Policies (--routing):
//  - rendezvous: highest-random-weight hashing of the job id over the healthy
//    workers (EndpointPool::Route); blind to load and to what workers cache.
//  - round_robin: a new job takes the next worker in turn.
//  - least_loaded: a new job takes the worker with the least load (below).
//  - prefix_load (default): a new job takes the worker with the highest
//        expected prefix-hit tokens - load_weight * load tokens,
//    where the expected hit is the longest run of the prompt's prefix keys
//    (common/prefix_hash.h: chained hashes of its 64-byte text chunks) in an
//    approximate index of what was sent to that worker, in tokens rounded
//    down to whole KV blocks (the cache shares nothing shorter). The index
//    is the router's guess, kept in step with evictions by the worker's cache
//    summary (GeneratorInfo.cached_prefix_keys, polled every poll_interval):
//    a key the worker no longer lists is dropped unless it was sent within
//    summary_grace (its prefill may still be queued), and keys the worker
//    lists are added (another coordinator may have warmed them).
//  Load tokens of a worker = the new job's prompt tokens * max(jobs this
//  router placed there and not finished, requests the worker reports active);
//  least_loaded and prefix_load break ties by the reported queued_tokens.
//
// Every policy is sticky: once a job is placed, its calls go to the same
// worker while that worker is healthy; the other healthy workers follow in
// the policy's order, so a failed call is retried on the next one (the
// request carries the job's full text, so any worker can serve it; only the
// cache is lost) and the job then sticks to the worker that answered.
//
// Ties (and prefix_load between equal scores) break by rendezvous order, so
// placement is deterministic given the same worker states.
//
// Sub-trees (off unless split_outputs > 0): when one call of a job asks its
// worker for more than split_outputs outputs, or for more new KV than that
// worker can free, while other healthy workers are idle (no job of this
// router there, no request or queued token reported), SubtreeWorkers lends
// the job some of them; the job's RemoteGenerator sends them whole sub-trees
// of its branches (coordinator/subtree_split.h), sticky from then on. A job
// holds at most its equal share of the healthy workers beside the router's
// other jobs, so that the first wide job does not take every idle worker. A
// lent worker counts as one job's load until the job ends.
//
// Thread-safety: all methods are thread-safe. The poll thread (Start) runs
// until the Router is destroyed; the pool must outlive the Router.
#ifndef ARBOR_COORDINATOR_ROUTING_POLICY_H_
#define ARBOR_COORDINATOR_ROUTING_POLICY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "coordinator/endpoint_pool.h"

namespace arbor::v1 {
class GeneratorInfo;
}  // namespace arbor::v1

namespace arbor::coordinator {

enum class RoutingPolicy { kRendezvous, kRoundRobin, kLeastLoaded, kPrefixLoad };

// "rendezvous", "round_robin", "least_loaded", "prefix_load"; INVALID_ARGUMENT
// naming --routing and the choices otherwise.
absl::StatusOr<RoutingPolicy> ParseRoutingPolicy(std::string_view name);
std::string_view RoutingPolicyName(RoutingPolicy policy);

struct RouterOptions {
  RoutingPolicy policy = RoutingPolicy::kPrefixLoad;
  // prefix_load: tokens of expected prefix hit worth one token of load.
  double load_weight = 0.15;
  // Generator.Info polls of every healthy worker (load and cache summary).
  absl::Duration poll_interval = absl::Milliseconds(250);
  absl::Duration poll_timeout = absl::Seconds(1);
  // A prefix key sent to a worker this recently is kept though its summary
  // does not list it yet.
  absl::Duration summary_grace = absl::Seconds(5);
  // Tokens per prompt byte until a prompt's token count is observed.
  double initial_tokens_per_byte = 0.5;
  // Keys remembered per worker (least recently sent dropped first).
  int max_keys_per_worker = 16384;
  // Sub-tree placement: outputs of one call a worker takes before the job's
  // other sub-trees go to idle workers; 0 keeps every job on one worker.
  int split_outputs = 0;
};

// What a worker last reported through Generator.Info.
struct WorkerLoad {
  int64_t queued_tokens = 0;
  int running_seqs = 0;
  int waiting_seqs = 0;
  int active_requests = 0;
  int64_t kv_blocks_free = 0;
  int64_t kv_blocks_cached = 0;
  int kv_block_size = 0;  // 0: not reported yet
  // Set when the worker sends a cache summary (prefix_key_chunk_bytes matches).
  bool has_summary = false;
  std::vector<uint64_t> cached_prefix_keys;
};

// WorkerLoad from Info; has_summary only when its chunk size is ours.
WorkerLoad WorkerLoadFromInfo(const arbor::v1::GeneratorInfo& info);

// A job's prompt, as the coordinator knows it before the worker tokenizes it.
struct RouteRequest {
  std::string job_id;
  std::string chat_template;
  std::string prompt_text;
};

// Why a route's first worker was chosen (for tests, logs and metrics).
enum class RouteReason { kSticky, kNew, kMoved };

class Router {
 public:
  // `pool` (may be null: tests drive Order and UpdateLoad by hand) is polled
  // by Start's thread. INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<Router>> Create(RouterOptions options,
                                                        EndpointPool* pool);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Starts polling the pool's healthy workers (after one synchronous round).
  void Start();
  // One round of Info polls now (Start's thread does it every poll_interval).
  void PollNow();

  const RouterOptions& options() const { return options_; }

  // `healthy` (addresses) in the order the job should try them: its worker
  // first while healthy, then the policy's order. A job seen for the first
  // time (or whose worker is gone) is placed on the first one, at once, so
  // that concurrent placements see each other's load. `reason` may be null.
  std::vector<std::string> Order(const RouteRequest& request, std::vector<std::string> healthy,
                                 RouteReason* reason = nullptr);
  // Order over the pool's healthy workers serving `model`.
  std::vector<EndpointPool::Endpoint> Route(EndpointPool& pool, const RouteRequest& request,
                                            std::string_view model);

  // A call of the job answered on `address`: the job now sticks there.
  void CallSucceeded(const std::string& job_id, const std::string& address);
  // A call of the job failed on `address` with an endpoint failure: its cache
  // is presumed lost (a restarted worker holds nothing).
  void CallFailed(const std::string& job_id, const std::string& address);
  // The job's prompt had `tokens` tokens for `prompt_bytes` bytes of text.
  void ObservePromptTokens(size_t prompt_bytes, size_t tokens);
  // The job ended: its placement no longer counts as load.
  void JobDone(const std::string& job_id);

  // Sub-trees: the workers to lend job `job_id` for a call whose branches on
  // its worker `primary` ask `outputs` outputs and about `kv_tokens` tokens of
  // new KV; `healthy` (addresses) are the candidates. Empty unless
  // split_outputs > 0 and the call outgrows `primary` (outputs > split_outputs,
  // or kv_tokens beyond primary's free and cached blocks as last reported).
  // Then up to ceil(outputs / split_outputs) - 1 (at least 1, at most
  // `max_workers`) idle workers, in the policy's order, and never more than
  // the job's equal share of `healthy` beside this router's other running
  // jobs (ceil(healthy / jobs), its own worker and those lent before
  // included); each counts as the job's load until JobDone (or a failed call
  // there).
  std::vector<std::string> SubtreeWorkers(const std::string& job_id, const std::string& primary,
                                          int64_t outputs, int64_t kv_tokens,
                                          std::vector<std::string> healthy, int max_workers);
  // The KV block size `address` last reported (0: none yet).
  int KvBlockTokens(const std::string& address) const;
  // Workers lent to the job and not given back (in the order lent).
  std::vector<std::string> SubtreeWorkersOf(const std::string& job_id) const;

  // A worker's report (PollNow calls it; tests call it directly).
  void UpdateLoad(const std::string& address, WorkerLoad load);

  // The worker a job is placed on, or "".
  std::string PlacementOf(const std::string& job_id) const;
  // Jobs placed and not done, per address.
  absl::flat_hash_map<std::string, int> ActiveJobs() const;
  // Expected prefix-hit tokens of `request` on `address` (0 for an unknown one).
  double ExpectedHitTokens(const RouteRequest& request, const std::string& address) const;

 private:
  struct Worker {
    WorkerLoad load;
    int active_jobs = 0;
    // Prefix key -> when it was last sent there (or listed by the worker).
    absl::flat_hash_map<uint64_t, absl::Time> keys;
  };
  struct Job {
    std::string address;
    std::vector<uint64_t> keys;
    std::vector<std::string> subtree_workers;  // lent by SubtreeWorkers
  };

  Router(RouterOptions options, EndpointPool* pool);
  Worker& WorkerAt(const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Place(Job& job, const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unplace(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseSubtreeWorker(Job& job, const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TrimKeys(Worker& worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int MatchedChunks(const std::vector<uint64_t>& keys, const Worker& worker) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double PromptTokens(const RouteRequest& request) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double LoadTokens(const Worker& worker, double job_tokens) const;
  // The policy's order of `healthy` for a job not (or no longer) placed.
  std::vector<std::string> PolicyOrder(const RouteRequest& request,
                                       const std::vector<uint64_t>& keys,
                                       std::vector<std::string> healthy)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RouterOptions options_;
  EndpointPool* const pool_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);
  uint64_t next_round_robin_ ABSL_GUARDED_BY(mu_) = 0;
  double prompt_bytes_seen_ ABSL_GUARDED_BY(mu_) = 0;
  double prompt_tokens_seen_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex poll_mu_;  // one poll round at a time
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_ROUTING_POLICY_H_
