// EndpointPool: the workers (or verifiers) a coordinator can call.
//  - Endpoints come from a static list "host:port,host:port" or from a DNS
//    name "dns:///name:port" re-resolved every resolve_interval (a Kubernetes
//    headless Service gives one address per pod).
//  - Each endpoint has its own checker thread that checks it with
//    grpc.health.v1 every health_interval and asks its Info which model it
//    serves (ModelProbe), so one slow or hung endpoint never delays the
//    checks of the others.
//  - An endpoint is routable while its last health check passed and no call
//    has reported it Lost since. A failed health check or Lost() ejects it
//    (and wakes its checker); its first passing health check re-admits it,
//    with no back-off: a restarted worker is used again within about one
//    health interval.
//  - WatchEndpoint lets an in-flight call learn that its endpoint was
//    ejected, so it can hedge the call elsewhere at once.
//  - Route orders the healthy endpoints serving a model by rendezvous
//    (highest-random-weight) hashing of a key (the job id): a job sticks to
//    one endpoint and its prefix cache, and when that endpoint fails, the
//    next one in the order takes over, while other jobs do not move.
// Thread-safety: all methods are thread-safe.
#ifndef ARBOR_COORDINATOR_ENDPOINT_POOL_H_
#define ARBOR_COORDINATOR_ENDPOINT_POOL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace grpc {
class Channel;
class ChannelCredentials;
}  // namespace grpc

namespace prometheus {
class Counter;
class Gauge;
template <typename T>
class Family;
}  // namespace prometheus

namespace arbor::coordinator {

struct PoolOptions {
  // "workers" or "verifiers": for logs, errors and metric labels.
  std::string name = "workers";
  // "host:port,host:port,..." or "dns:///name:port".
  std::string targets;
  absl::Duration health_interval = absl::Seconds(1);
  absl::Duration health_timeout = absl::Seconds(1);
  absl::Duration resolve_interval = absl::Seconds(5);
  // Channel security (rpc/tls.h: MakeChannelCredentials); null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // TLS name checked against the endpoints' certificates; "": the address's host.
  std::string tls_server_name;
};

// Metric handles a pool updates (all may be null).
struct PoolMetrics {
  prometheus::Counter* ejections = nullptr;
  prometheus::Gauge* healthy = nullptr;
  prometheus::Gauge* endpoints = nullptr;
  // errors by grpc code name, label pool fixed by the caller
  std::function<void(std::string_view code)> on_error;
};

// Asks an endpoint which model it serves (Generator.Info / Verifier.Info).
using ModelProbe = std::function<absl::StatusOr<std::string>(
    const std::shared_ptr<grpc::Channel>& channel, absl::Time deadline)>;

// Parses a target list; INVALID_ARGUMENT naming `flag` on a bad entry.
// Returns either static addresses or one "dns:///" entry.
absl::StatusOr<std::vector<std::string>> ParseTargets(std::string_view targets,
                                                      std::string_view flag);

// Rendezvous order of `addresses` for `key` (highest weight first).
std::vector<std::string> RendezvousOrder(std::string_view key, std::vector<std::string> addresses);

class EndpointPool {
 public:
  struct Endpoint {
    std::string address;
    std::string model;
    std::shared_ptr<grpc::Channel> channel;
  };
  struct EndpointState {
    std::string address;
    std::string model;     // "" until Info answered
    bool healthy = false;  // routable
    bool ejected = false;  // was routable, lost since (by a check or a call)
    int consecutive_failures = 0;
    int64_t ejections = 0;  // times it went from routable to ejected
  };

  // Registration of a callback run when one endpoint is ejected; the
  // destructor unregisters it and waits for a callback in progress.
  class EndpointWatch {
   public:
    ~EndpointWatch();
    EndpointWatch(const EndpointWatch&) = delete;
    EndpointWatch& operator=(const EndpointWatch&) = delete;

   private:
    friend class EndpointPool;
    EndpointWatch(EndpointPool& pool, std::string address, uint64_t id)
        : pool_(pool), address_(std::move(address)), id_(id) {}
    EndpointPool& pool_;
    const std::string address_;
    const uint64_t id_;
  };

  // Starts the health thread after one synchronous round of checks.
  static absl::StatusOr<std::unique_ptr<EndpointPool>> Create(PoolOptions options, ModelProbe probe,
                                                              PoolMetrics metrics = {});
  ~EndpointPool();
  EndpointPool(const EndpointPool&) = delete;
  EndpointPool& operator=(const EndpointPool&) = delete;

  const std::string& name() const { return options_.name; }

  // Healthy endpoints serving `model` in rendezvous order for `key`.
  std::vector<Endpoint> Route(std::string_view key, std::string_view model) const;

  // Models served by endpoints currently in the pool (healthy or not), sorted.
  std::vector<std::string> KnownModels() const;
  // Models served by healthy endpoints, sorted.
  std::vector<std::string> HealthyModels() const;

  // A call to `address` failed in a way that says the endpoint is gone or
  // hung (UNAVAILABLE, a per-call deadline, ...; the caller decides): eject it
  // now and check it again at once. Counts `status` in the error metric.
  void Lost(const std::string& address, const absl::Status& status);
  // Whether `address` is in the pool and may be routed to now.
  bool Routable(const std::string& address) const;
  // Runs `on_lost` each time `address` goes from routable to ejected, on the
  // thread that ejects it (a checker thread or a Lost caller), and once at
  // once on this thread when it is not routable now. `on_lost` must be quick
  // and must not call back into the pool's watch methods.
  std::unique_ptr<EndpointWatch> WatchEndpoint(const std::string& address,
                                               std::function<void()> on_lost);

  // Runs one resolution + a round of health checks of every endpoint, in
  // parallel, now, and returns when all have answered or timed out (the
  // background threads also do it).
  void RefreshNow();
  // Waits until some endpoint is healthy; false on timeout.
  bool WaitForHealthy(absl::Duration timeout) const;

  std::vector<EndpointState> Snapshot() const;

 private:
  struct Entry {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::string model;
    bool healthy = false;
    bool ejected = false;
    int consecutive_failures = 0;
    int64_t ejections = 0;
    bool check_now = false;  // Lost() asks the checker for a check at once
    bool stop = false;       // removed from the pool: the checker ends
    std::thread checker;
  };

  EndpointPool(PoolOptions options, ModelProbe probe, PoolMetrics metrics);
  // Updates entries_ from the targets; returns the removed entries, whose
  // checkers are told to stop (the caller joins them, without mu_).
  std::vector<std::shared_ptr<Entry>> Resolve();
  void StartChecker(const std::shared_ptr<Entry>& entry, bool check_first)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckerLoop(const std::shared_ptr<Entry>& entry, bool check_first);
  // One health check (+ model probe) of `entry`; applies the result.
  void CheckOne(const std::shared_ptr<Entry>& entry);
  // Marks `entry` ejected; true when it was routable (the caller then
  // notifies the watchers of its address, without mu_).
  bool Eject(Entry& entry, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NotifyLost(const std::string& address);
  void UpdateGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();
  void Unwatch(const std::string& address, uint64_t id);

  const PoolOptions options_;
  const ModelProbe probe_;
  const PoolMetrics metrics_;
  std::vector<std::string> static_targets_;
  std::string dns_host_;  // set for "dns:///" targets
  std::string dns_port_;
  absl::Time next_resolve_ = absl::InfinitePast();

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // checker threads run
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex refresh_mu_;  // one resolution at a time
  absl::Notification stop_;
  std::thread thread_;  // resolution
  // Held while watchers run, so ~EndpointWatch waits for a running callback.
  absl::Mutex watch_mu_;
  uint64_t next_watch_ ABSL_GUARDED_BY(watch_mu_) = 0;
  absl::flat_hash_map<std::string, absl::flat_hash_map<uint64_t, std::function<void()>>> watches_
      ABSL_GUARDED_BY(watch_mu_);
};

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_ENDPOINT_POOL_H_
