#include "coordinator/routing_policy.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "common/log.h"
#include "common/prefix_hash.h"
#include "grpcpp/grpcpp.h"

namespace arbor::coordinator {
namespace {

constexpr std::pair<std::string_view, RoutingPolicy> kPolicies[] = {
    {"rendezvous", RoutingPolicy::kRendezvous},
    {"round_robin", RoutingPolicy::kRoundRobin},
    {"least_loaded", RoutingPolicy::kLeastLoaded},
    {"prefix_load", RoutingPolicy::kPrefixLoad},
};

// Tokens a chat template adds around the question (a rough constant: the
// score compares workers for one prompt, so it only shifts every load alike).
constexpr double kTemplateTokens = 16;

// Tokens per KV block of a worker that has not reported its own yet (the
// engine's, kernels::kKvBlockSize).
constexpr double kDefaultKvBlockTokens = 16;

}  // namespace

absl::StatusOr<RoutingPolicy> ParseRoutingPolicy(std::string_view name) {
  for (const auto& [n, p] : kPolicies) {
    if (n == name) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--routing: unknown policy '", std::string(name),
                   "'; choose rendezvous, round_robin, least_loaded or prefix_load"));
}

std::string_view RoutingPolicyName(RoutingPolicy policy) {
  for (const auto& [n, p] : kPolicies) {
    if (p == policy) return n;
  }
  return "unknown";
}

WorkerLoad WorkerLoadFromInfo(const arbor::v1::GeneratorInfo& info) {
  WorkerLoad load;
  load.queued_tokens = info.queued_tokens();
  load.running_seqs = info.running_seqs();
  load.waiting_seqs = info.waiting_seqs();
  load.active_requests = info.active_requests();
  load.kv_blocks_free = info.kv_blocks_free();
  load.kv_blocks_cached = info.kv_blocks_cached();
  load.kv_block_size = info.kv_block_size();
  load.has_summary = info.prefix_key_chunk_bytes() == kPrefixChunkBytes;
  if (load.has_summary) {
    load.cached_prefix_keys.assign(info.cached_prefix_keys().begin(),
                                   info.cached_prefix_keys().end());
  }
  return load;
}

Router::Router(RouterOptions options, EndpointPool* pool)
    : options_(std::move(options)), pool_(pool) {}

absl::StatusOr<std::unique_ptr<Router>> Router::Create(RouterOptions options, EndpointPool* pool) {
  if (!(options.load_weight >= 0)) {
    return absl::InvalidArgumentError("--routing_load_weight must be >= 0");
  }
  if (options.poll_interval <= absl::ZeroDuration() ||
      options.poll_timeout <= absl::ZeroDuration() ||
      options.summary_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "routing: poll interval and timeout must be positive, summary grace >= 0");
  }
  if (options.split_outputs < 0) {
    return absl::InvalidArgumentError("--routing_split_outputs must be >= 0 (0: off)");
  }
  if (!(options.initial_tokens_per_byte > 0) || options.max_keys_per_worker < 1) {
    return absl::InvalidArgumentError(
        "routing: initial tokens per byte and keys per worker must be positive");
  }
  return std::unique_ptr<Router>(new Router(std::move(options), pool));
}

Router::~Router() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void Router::Start() {
  if (pool_ == nullptr || thread_.joinable()) return;
  PollNow();
  thread_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(options_.poll_interval)) PollNow();
  });
}

void Router::PollNow() {
  if (pool_ == nullptr) return;
  absl::MutexLock poll(&poll_mu_);
  for (const std::string& model : pool_->HealthyModels()) {
    for (const EndpointPool::Endpoint& endpoint : pool_->Route("", model)) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + options_.poll_timeout));
      arbor::v1::InfoRequest request;
      arbor::v1::GeneratorInfo info;
      grpc::Status status =
          arbor::v1::Generator::NewStub(endpoint.channel)->Info(&context, request, &info);
      // A failing worker is the pool's business (health checks, ejection).
      if (status.ok()) UpdateLoad(endpoint.address, WorkerLoadFromInfo(info));
    }
  }
}

Router::Worker& Router::WorkerAt(const std::string& address) { return workers_[address]; }

void Router::UpdateLoad(const std::string& address, WorkerLoad load) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  Worker& worker = WorkerAt(address);
  if (load.has_summary) {
    const absl::flat_hash_set<uint64_t> listed(load.cached_prefix_keys.begin(),
                                               load.cached_prefix_keys.end());
    const absl::Time sent_before = now - options_.summary_grace;
    absl::erase_if(worker.keys, [&](const auto& entry) {
      return entry.second < sent_before && !listed.contains(entry.first);
    });
    // Listed keys count even when another coordinator sent them; they get no
    // grace: the next summary without them drops them.
    for (uint64_t key : load.cached_prefix_keys) worker.keys.try_emplace(key, absl::InfinitePast());
    TrimKeys(worker);
  }
  load.cached_prefix_keys.clear();
  worker.load = std::move(load);
}

void Router::TrimKeys(Worker& worker) {
  const size_t max = static_cast<size_t>(options_.max_keys_per_worker);
  // Trim in batches (to 7/8 of the bound) so that the sort is rare.
  if (worker.keys.size() <= max) return;
  std::vector<absl::Time> times;
  times.reserve(worker.keys.size());
  for (const auto& [key, t] : worker.keys) times.push_back(t);
  const size_t drop = worker.keys.size() - max * 7 / 8;
  std::nth_element(times.begin(), times.begin() + (drop - 1), times.end());
  const absl::Time cutoff = times[drop - 1];
  size_t dropped = 0;
  absl::erase_if(worker.keys, [&](const auto& entry) {
    if (dropped < drop && entry.second <= cutoff) {
      ++dropped;
      return true;
    }
    return false;
  });
}

int Router::MatchedChunks(const std::vector<uint64_t>& keys, const Worker& worker) const {
  int matched = 0;
  while (matched < static_cast<int>(keys.size()) && worker.keys.contains(keys[matched])) {
    ++matched;
  }
  return matched;
}

double Router::PromptTokens(const RouteRequest& request) const {
  const double per_byte = prompt_bytes_seen_ > 0 ? prompt_tokens_seen_ / prompt_bytes_seen_
                                                 : options_.initial_tokens_per_byte;
  return kTemplateTokens + per_byte * static_cast<double>(request.prompt_text.size());
}

double Router::LoadTokens(const Worker& worker, double job_tokens) const {
  // Jobs this router placed there, or the requests the worker reports when it
  // has more (other coordinators' jobs): not their sum, which would count
  // this router's own running calls twice.
  return std::max<double>(worker.active_jobs, worker.load.active_requests) * job_tokens;
}

double Router::ExpectedHitTokens(const RouteRequest& request, const std::string& address) const {
  const std::vector<uint64_t> keys = PrefixChunkKeys(request.chat_template, request.prompt_text);
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(address);
  if (it == workers_.end()) return 0;
  const double per_byte = PromptTokens(request) - kTemplateTokens;
  const double bytes = std::max<double>(1, request.prompt_text.size());
  return MatchedChunks(keys, it->second) * kPrefixChunkBytes * (per_byte / bytes);
}

std::vector<std::string> Router::PolicyOrder(const RouteRequest& request,
                                             const std::vector<uint64_t>& keys,
                                             std::vector<std::string> healthy) {
  switch (options_.policy) {
    case RoutingPolicy::kRendezvous:
      return RendezvousOrder(request.job_id, std::move(healthy));
    case RoutingPolicy::kRoundRobin: {
      std::sort(healthy.begin(), healthy.end());
      if (!healthy.empty()) {
        std::rotate(healthy.begin(), healthy.begin() + (next_round_robin_ % healthy.size()),
                    healthy.end());
      }
      return healthy;
    }
    case RoutingPolicy::kLeastLoaded:
    case RoutingPolicy::kPrefixLoad:
      break;
  }
  std::vector<std::string> order = RendezvousOrder(request.job_id, std::move(healthy));
  const double job_tokens = PromptTokens(request);
  const double hit_per_chunk =
      (job_tokens - kTemplateTokens) / std::max<double>(1, request.prompt_text.size()) *
      kPrefixChunkBytes;
  std::vector<std::pair<double, std::string>> scored;
  scored.reserve(order.size());
  for (std::string& address : order) {
    const Worker& worker = WorkerAt(address);
    double score = -LoadTokens(worker, job_tokens);
    if (options_.policy == RoutingPolicy::kPrefixLoad) {
      // The radix cache shares whole KV blocks only: a match shorter than a
      // block (a chat template's header every prompt opens with) saves
      // nothing and must not outweigh load.
      const double block = worker.load.kv_block_size > 0 ? worker.load.kv_block_size
                                                          : kDefaultKvBlockTokens;
      const double hit = std::floor(MatchedChunks(keys, worker) * hit_per_chunk / block) * block;
      score = hit + options_.load_weight * score;
    }
    // Between equal scores, the shorter reported queue.
    score -= 1e-6 * static_cast<double>(worker.load.queued_tokens);
    scored.emplace_back(score, std::move(address));
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  order.clear();
  for (auto& [score, address] : scored) order.push_back(std::move(address));
  return order;
}

void Router::Place(Job& job, const std::string& address) {
  const absl::Time now = absl::Now();
  if (job.address != address) {
    Unplace(job);
    job.address = address;
    ++WorkerAt(address).active_jobs;
  }
  Worker& worker = WorkerAt(address);
  for (uint64_t key : job.keys) worker.keys[key] = now;
  TrimKeys(worker);
}

void Router::Unplace(Job& job) {
  if (job.address.empty()) return;
  auto it = workers_.find(job.address);
  if (it != workers_.end() && it->second.active_jobs > 0) --it->second.active_jobs;
  job.address.clear();
}

std::vector<std::string> Router::Order(const RouteRequest& request,
                                       std::vector<std::string> healthy, RouteReason* reason) {
  if (healthy.empty()) return healthy;
  std::vector<uint64_t> keys = PrefixChunkKeys(request.chat_template, request.prompt_text);
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(request.job_id);
  if (it != jobs_.end() && !it->second.address.empty()) {
    const std::string placed = it->second.address;
    auto at = std::find(healthy.begin(), healthy.end(), placed);
    if (at != healthy.end()) {
      healthy.erase(at);
      std::vector<std::string> order = PolicyOrder(request, keys, std::move(healthy));
      order.insert(order.begin(), placed);
      if (reason != nullptr) *reason = RouteReason::kSticky;
      return order;
    }
  }
  const bool moved = it != jobs_.end();
  std::vector<std::string> order = PolicyOrder(request, keys, std::move(healthy));
  if (options_.policy == RoutingPolicy::kRoundRobin) ++next_round_robin_;
  Job& job = jobs_[request.job_id];
  job.keys = std::move(keys);
  Place(job, order.front());
  if (reason != nullptr) *reason = moved ? RouteReason::kMoved : RouteReason::kNew;
  return order;
}

std::vector<EndpointPool::Endpoint> Router::Route(EndpointPool& pool, const RouteRequest& request,
                                                  std::string_view model) {
  std::vector<EndpointPool::Endpoint> endpoints = pool.Route(request.job_id, model);
  std::vector<std::string> addresses;
  addresses.reserve(endpoints.size());
  for (const auto& e : endpoints) addresses.push_back(e.address);
  const std::vector<std::string> order = Order(request, std::move(addresses));
  std::vector<EndpointPool::Endpoint> out;
  out.reserve(order.size());
  for (const std::string& address : order) {
    auto at = std::find_if(endpoints.begin(), endpoints.end(),
                           [&](const auto& e) { return e.address == address; });
    out.push_back(*at);
  }
  return out;
}

void Router::CallSucceeded(const std::string& job_id, const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  Place(it->second, address);
}

void Router::CallFailed(const std::string& job_id, const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto w = workers_.find(address);
  if (w != workers_.end()) w->second.keys.clear();
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  if (it->second.address == address) Unplace(it->second);
  ReleaseSubtreeWorker(it->second, address);
}

void Router::ReleaseSubtreeWorker(Job& job, const std::string& address) {
  auto at = std::find(job.subtree_workers.begin(), job.subtree_workers.end(), address);
  if (at == job.subtree_workers.end()) return;
  job.subtree_workers.erase(at);
  auto w = workers_.find(address);
  if (w != workers_.end() && w->second.active_jobs > 0) --w->second.active_jobs;
}

std::vector<std::string> Router::SubtreeWorkers(const std::string& job_id,
                                                const std::string& primary, int64_t outputs,
                                                int64_t kv_tokens,
                                                std::vector<std::string> healthy,
                                                int max_workers) {
  if (options_.split_outputs <= 0 || outputs <= 1 || max_workers < 1) return {};
  absl::MutexLock lock(&mu_);
  const Worker& home = WorkerAt(primary);
  const int64_t evictable_tokens =
      (home.load.kv_blocks_free + home.load.kv_blocks_cached) * home.load.kv_block_size;
  const bool too_many = outputs > options_.split_outputs;
  const bool kv_short = home.load.kv_block_size > 0 && kv_tokens > evictable_tokens;
  if (!too_many && !kv_short) return {};
  Job& job = jobs_[job_id];
  const int64_t num_healthy = static_cast<int64_t>(healthy.size());
  // Idle: nothing of this router's there (jobs or lent sub-trees) and nothing
  // reported running or queued, so the lent work delays no other job.
  std::vector<std::string> idle;
  for (std::string& address : healthy) {
    if (address == primary) continue;
    if (std::find(job.subtree_workers.begin(), job.subtree_workers.end(), address) !=
        job.subtree_workers.end()) {
      continue;
    }
    const Worker& w = WorkerAt(address);
    if (w.active_jobs == 0 && w.load.active_requests == 0 && w.load.queued_tokens == 0 &&
        w.load.waiting_seqs == 0) {
      idle.push_back(std::move(address));
    }
  }
  if (idle.empty()) return {};
  // Those that hold more of the job's prompt first (prefix_load's index; no
  // effect for the other policies, whose jobs' keys are the same), then
  // rendezvous order.
  idle = RendezvousOrder(job_id, std::move(idle));
  std::stable_sort(idle.begin(), idle.end(), [&](const std::string& a, const std::string& b) {
    return MatchedChunks(job.keys, WorkerAt(a)) > MatchedChunks(job.keys, WorkerAt(b));
  });
  int64_t wanted = 1;
  if (too_many) {
    wanted = std::max<int64_t>(
        1, (outputs + options_.split_outputs - 1) / options_.split_outputs - 1);
  }
  // At most the job's equal share of the healthy workers (its own counted)
  // beside this router's other running jobs: the first wide job to ask must
  // not take every idle worker from those that outgrow theirs a step later.
  const int64_t jobs = std::max<int64_t>(1, static_cast<int64_t>(jobs_.size()));
  const int64_t share = (num_healthy + jobs - 1) / jobs;
  wanted = std::min<int64_t>(
      {wanted, static_cast<int64_t>(max_workers),
       share - 1 - static_cast<int64_t>(job.subtree_workers.size())});
  if (wanted <= 0) return {};
  if (static_cast<int64_t>(idle.size()) > wanted) idle.resize(static_cast<size_t>(wanted));
  for (const std::string& address : idle) {
    ++WorkerAt(address).active_jobs;
    job.subtree_workers.push_back(address);
  }
  return idle;
}

int Router::KvBlockTokens(const std::string& address) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(address);
  return it == workers_.end() ? 0 : it->second.load.kv_block_size;
}

std::vector<std::string> Router::SubtreeWorkersOf(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? std::vector<std::string>{} : it->second.subtree_workers;
}

void Router::ObservePromptTokens(size_t prompt_bytes, size_t tokens) {
  if (prompt_bytes == 0 || tokens == 0) return;
  absl::MutexLock lock(&mu_);
  // A running sum, decayed so that the estimate follows the current prompts.
  prompt_bytes_seen_ = 0.99 * prompt_bytes_seen_ + static_cast<double>(prompt_bytes);
  prompt_tokens_seen_ = 0.99 * prompt_tokens_seen_ +
                        std::max(0.0, static_cast<double>(tokens) - kTemplateTokens);
}

void Router::JobDone(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  Unplace(it->second);
  while (!it->second.subtree_workers.empty()) {
    ReleaseSubtreeWorker(it->second, it->second.subtree_workers.back());
  }
  jobs_.erase(it);
}

std::string Router::PlacementOf(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? "" : it->second.address;
}

absl::flat_hash_map<std::string, int> Router::ActiveJobs() const {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_map<std::string, int> out;
  for (const auto& [address, worker] : workers_) {
    if (worker.active_jobs > 0) out[address] = worker.active_jobs;
  }
  return out;
}

}  // namespace arbor::coordinator
