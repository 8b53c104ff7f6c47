// EndpointPool: the workers (or verifiers) a coordinator can call.
//  - Endpoints come from a static list "host:port,host:port" or from a DNS
//    name "dns:///name:port" re-resolved every resolve_interval (a Kubernetes
//    headless Service gives one address per pod).
//  - A background thread checks each endpoint with grpc.health.v1 every
//    health_interval and asks its Info which model it serves (ModelProbe).
//  - A failing endpoint (failed health check or a failed call reported with
//    ReportFailure) is ejected: not routed to until its ejection time, which
//    doubles with consecutive failures (base .. max_ejection); then it is
//    health-checked again and returns when it answers SERVING.
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
  absl::Duration ejection = absl::Seconds(2);
  absl::Duration max_ejection = absl::Seconds(30);
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
    std::string model;  // "" until Info answered
    bool healthy = false;
    bool ejected = false;
    int consecutive_failures = 0;
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

  // A call to `address` failed: eject it (unless the error is the caller's,
  // which the caller decides).
  void ReportFailure(const std::string& address, const absl::Status& status);
  void ReportSuccess(const std::string& address);

  // Runs one resolution + health round now (the thread also does it).
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
    int consecutive_failures = 0;
    absl::Time ejected_until = absl::InfinitePast();
  };

  EndpointPool(PoolOptions options, ModelProbe probe, PoolMetrics metrics);
  void Resolve();
  void CheckAll();
  void Eject(Entry& entry, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();

  const PoolOptions options_;
  const ModelProbe probe_;
  const PoolMetrics metrics_;
  std::vector<std::string> static_targets_;
  std::string dns_host_;  // set for "dns:///" targets
  std::string dns_port_;
  absl::Time next_resolve_ = absl::InfinitePast();

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  absl::Mutex refresh_mu_;  // one refresh round at a time
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_ENDPOINT_POOL_H_
