// MetricsEndpoint: serves GET /metrics (Prometheus text format 0.0.4) of one
// prometheus::Registry over plain HTTP/1.1, one connection at a time, each
// answered and closed.
//
// Why not prometheus-cpp's Exposer: its civetweb server starts worker threads
// with a fixed small stack (about 100 KiB in Debian's build), and glibc puts a
// thread's static TLS on its stack; cuBLAS (linked by the CUDA backend) brings
// about 106 KiB of static TLS, so every civetweb thread fails to start in a
// process that links it. This endpoint's one thread has the default stack.
//
// Thread-safety: Start and the destructor are called from one thread; the
// serving thread only reads the registry (prometheus::Registry::Collect is
// thread-safe).
#ifndef ARBOR_RPC_METRICS_ENDPOINT_H_
#define ARBOR_RPC_METRICS_ENDPOINT_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace arbor::rpc {

class MetricsEndpoint {
 public:
  // Binds host:port (port 0 picks a free one; host "0.0.0.0", "::", an
  // address or a name) and starts serving. UNAVAILABLE names the address when
  // it cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry);

  // Stops the serving thread (within one poll period) and closes the socket.
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  int port() const { return port_; }

 private:
  MetricsEndpoint(int listen_fd, int port, std::shared_ptr<prometheus::Registry> registry);
  void Serve();
  void Answer(int fd) const;

  const int listen_fd_;
  const int port_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_METRICS_ENDPOINT_H_
