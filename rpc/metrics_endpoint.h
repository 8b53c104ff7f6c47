// MetricsEndpoint: serves GET /metrics (Prometheus text format 0.0.4) of one
// prometheus::Registry plus the process_* metrics (rpc/process_metrics.h) on
// prometheus-cpp's own Exposer (civetweb, HTTP/1.1 with keep-alive).
//
// civetweb starts its threads with a fixed 100 KiB stack, and glibc carves a
// thread's static TLS out of its stack (glibc bug 11787): cuBLAS, linked by
// the CUDA backend, holds about 110 KiB of static TLS, so without help every
// civetweb thread fails to start in such a process. This library therefore
// interposes pthread_attr_setstacksize for the whole process, adding the
// static TLS size to every explicitly requested stack size, so that a thread
// gets the stack its creator asked for on top of its TLS (a default-sized
// thread is unchanged). rpc_server_test checks it with a library holding
// 256 KiB of static TLS.
//
// Thread-safety: Start and the destructor are called from one thread; the
// Exposer's threads only read the registry (prometheus::Registry::Collect is
// thread-safe).
#ifndef ARBOR_RPC_METRICS_ENDPOINT_H_
#define ARBOR_RPC_METRICS_ENDPOINT_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace arbor::rpc {

class ProcessCollector;

class MetricsEndpoint {
 public:
  // Binds host:port (port 0 picks a free one; host "0.0.0.0", "::" (every
  // address), an IPv4 address or a name; Debian's civetweb takes no other
  // IPv6 address) and starts serving. UNAVAILABLE names the address when it
  // cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry);

  // Stops the Exposer's threads and closes the socket.
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ProcessCollector> process_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::string knock_host_;  // where the destructor connects to wake civetweb
};

// The static TLS bytes every thread of this process carries (the sum of the
// loaded modules' PT_TLS segments, aligned), which glibc takes from the
// thread's stack.
size_t StaticTlsBytes();

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_METRICS_ENDPOINT_H_
