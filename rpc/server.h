// Server: the gRPC server every Arbor role runs (coordinator, worker,
// verifier). It hosts the role's callback-API services plus
//  - grpc.health.v1 (grpc::EnableDefaultHealthCheckService) answering for the
//    server overall ("") and for every hosted service by its full name
//    ("arbor.v1.Reasoning", ...), so probes and `arborctl health --service`
//    can ask for one; Drain flips them all to NOT_SERVING,
//  - server reflection, so `grpcurl -plaintext host:port list` works,
//  - TLS or mutual TLS when options.tls names the files (rpc/tls.h); then
//    /metrics, when not bound to loopback, is HTTPS with the same files
//    (rpc/tls_metrics_endpoint.h),
//  - a Prometheus /metrics HTTP endpoint (rpc/metrics_endpoint.h) exposing
//    one shared registry, which also carries per-method request counters and
//    latency histograms (arbor_grpc_server_handled_total,
//    arbor_grpc_server_handling_seconds), arbor_build_info and the process_*
//    metrics (rpc/process_metrics.h),
//  - graceful drain: NOT_SERVING, keep serving new calls for a drain delay
//    (while load balancers and health-checking clients move away), stop
//    accepting, let in-flight calls finish within a grace period, then
//    cancel what is left (docs/DEPLOY.md: the rolling update).
// A port already in use is an UNAVAILABLE error naming it (SO_REUSEPORT is
// off: two processes never share a port silently). Port 0 picks a free
// port; Start prints "listening on 127.0.0.1:PORT" (and "metrics on
// 127.0.0.1:PORT") to stdout so scripts and tests can parse it.
// Thread-safety: all methods are thread-safe; Drain may be called once or
// more (later calls are no-ops) from any thread, Wait from any thread.
#ifndef ARBOR_RPC_SERVER_H_
#define ARBOR_RPC_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rpc/tls.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace arbor::rpc {

class MetricsEndpoint;
class TlsMetricsEndpoint;

struct ServerOptions {
  // Role name for logs ("coordinator", "worker", ...).
  std::string name = "arbor";
  // gRPC bind address and port; port 0 picks a free port. Loopback unless
  // told otherwise, so an internal port is not reachable by accident.
  std::string host = "127.0.0.1";
  int port = 0;
  // /metrics bind address and port; 0 picks a free port, -1 disables it.
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;
  // How long Drain keeps accepting new calls after turning NOT_SERVING.
  absl::Duration drain_delay = absl::ZeroDuration();
  // How long Drain then lets in-flight calls run before cancelling them.
  absl::Duration drain_grace = absl::Seconds(10);
  // Largest message received or sent, in bytes.
  int max_message_bytes = 64 << 20;
  // TLS (mutual when tls.ca is set) on the gRPC port; default plaintext.
  TlsServerFiles tls;
  // Print "listening on ..." / "metrics on ..." to stdout.
  bool announce = true;
};

// Validates ranges (ports in [-1, 65535], positive message size, ...).
absl::Status ValidateServerOptions(const ServerOptions& options);

class Server {
 public:
  // Starts serving `services` (each must outlive the server). `registry` is
  // the shared metrics registry the services registered their families in;
  // null creates one.
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerOptions& options, const std::vector<grpc::Service*>& services,
      std::shared_ptr<prometheus::Registry> registry = nullptr);

  ~Server();  // drains with a zero grace period if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const { return port_; }
  // -1 when /metrics is disabled.
  int metrics_port() const { return metrics_port_; }
  // "127.0.0.1:PORT" when bound to all interfaces, else "host:PORT".
  std::string address() const;
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  const ServerOptions& options() const { return options_; }

  // Sets the overall health status ("" service) and every registered service's.
  void SetServing(bool serving);
  // The names the health service answers for besides "": each hosted
  // service's full name, sorted.
  const std::vector<std::string>& health_service_names() const { return health_names_; }

  // Graceful drain: NOT_SERVING, keep serving new calls for `delay`, stop
  // accepting new calls, wait up to `grace` for in-flight calls (cancelling
  // the rest), then return. Idempotent: a second call returns at once.
  void Drain(absl::Duration delay, absl::Duration grace);
  // Drain with no delay and `grace`.
  void Drain(absl::Duration grace) { Drain(absl::ZeroDuration(), grace); }
  // Drain with options.drain_delay and options.drain_grace.
  void Drain();

  // Blocks until the server has shut down (after Drain).
  void Wait();

  grpc::Server* grpc_server() { return server_.get(); }

 private:
  Server() = default;

  ServerOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsEndpoint> metrics_;
  std::unique_ptr<TlsMetricsEndpoint> tls_metrics_;  // instead of metrics_: TLS off loopback
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  int metrics_port_ = -1;
  std::vector<std::string> health_names_;
  absl::Mutex drain_mu_;
  bool drained_ ABSL_GUARDED_BY(drain_mu_) = false;
};

// Shutdown signals (SIGTERM, SIGINT) handled without async-signal hazards:
// BlockShutdownSignals must run at the start of main, before any thread is
// created (gRPC's included), so every thread inherits the mask; then
// WaitForShutdownSignal blocks in sigwait and returns the signal number.
void BlockShutdownSignals();
int WaitForShutdownSignal();

// The usual main loop of a role: waits for SIGTERM/SIGINT, logs it, drains
// the server and waits for it to stop. SIGTERM (Kubernetes, systemd) drains
// with the drain delay; SIGINT (Ctrl-C) skips it.
void RunUntilShutdownSignal(Server& server);

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_SERVER_H_
