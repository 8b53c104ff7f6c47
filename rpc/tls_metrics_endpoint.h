// TlsMetricsEndpoint: GET /metrics (the same text MetricsEndpoint serves)
// over HTTPS, on cpp-httplib's SSLServer, with the server's certificate and
// key; with a CA, scrapers must present a certificate it signed (mutual
// TLS). rpc::Server uses it instead of MetricsEndpoint when TLS is on and
// /metrics is not bound to loopback (prometheus-cpp's civetweb exposer has
// no usable TLS in Debian's build).
// Thread-safety: Start and the destructor are called from one thread; the
// server's threads only read the registry (Collect is thread-safe).
#ifndef ARBOR_RPC_TLS_METRICS_ENDPOINT_H_
#define ARBOR_RPC_TLS_METRICS_ENDPOINT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "rpc/tls.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace arbor::rpc {

class TlsMetricsEndpoint {
 public:
  // Binds host:port (0 picks a free port; a port in use is UNAVAILABLE
  // naming it). INVALID_ARGUMENT when the certificate or key cannot be used.
  static absl::StatusOr<std::unique_ptr<TlsMetricsEndpoint>> Start(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry,
      const TlsServerFiles& tls);
  ~TlsMetricsEndpoint();
  TlsMetricsEndpoint(const TlsMetricsEndpoint&) = delete;
  TlsMetricsEndpoint& operator=(const TlsMetricsEndpoint&) = delete;

  int port() const { return port_; }

 private:
  struct Impl;
  explicit TlsMetricsEndpoint(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_TLS_METRICS_ENDPOINT_H_
