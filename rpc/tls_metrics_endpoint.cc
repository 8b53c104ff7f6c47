#include "rpc/tls_metrics_endpoint.h"

#include <signal.h>
#include <sys/socket.h>

#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "httplib.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "rpc/process_metrics.h"

namespace arbor::rpc {

struct TlsMetricsEndpoint::Impl {
  Impl(const TlsServerFiles& tls)
      : server(tls.cert.c_str(), tls.key.c_str(), tls.ca.empty() ? nullptr : tls.ca.c_str()) {}
  httplib::SSLServer server;
  std::shared_ptr<prometheus::Registry> registry;
  std::shared_ptr<ProcessCollector> process;
  std::thread listener;
};

TlsMetricsEndpoint::TlsMetricsEndpoint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<TlsMetricsEndpoint>> TlsMetricsEndpoint::Start(
    const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry,
    const TlsServerFiles& tls) {
  // OpenSSL writes with write(2): a scraper that hangs up mid-reply would
  // raise SIGPIPE and end the process. civetweb (the plain endpoint) ignores
  // it process-wide the same way; gRPC never raises it.
  signal(SIGPIPE, SIG_IGN);
  auto impl = std::make_unique<Impl>(tls);
  if (!impl->server.is_valid()) {
    return absl::InvalidArgumentError(absl::StrCat("/metrics over TLS: cannot use --tls_cert ",
                                                   tls.cert, " and --tls_key ", tls.key,
                                                   tls.ca.empty() ? "" : " and --tls_ca ", tls.ca));
  }
  impl->registry = std::move(registry);
  impl->process = std::make_shared<ProcessCollector>();
  Impl* p = impl.get();
  p->server.Get("/metrics", [p](const httplib::Request&, httplib::Response& res) {
    std::vector<prometheus::MetricFamily> families = p->registry->Collect();
    std::vector<prometheus::MetricFamily> process = p->process->Collect();
    families.insert(families.end(), process.begin(), process.end());
    res.set_content(prometheus::TextSerializer().Serialize(families),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  // httplib's default sets SO_REUSEPORT; a port in use must fail to bind.
  p->server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  const std::string bind_host = host.empty() ? "0.0.0.0" : host;
  int bound = -1;
  if (port == 0) {
    bound = p->server.bind_to_any_port(bind_host);
  } else if (p->server.bind_to_port(bind_host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics over TLS on ", bind_host, ":",
                                               port, " (port in use?)"));
  }
  p->listener = std::thread([p] { p->server.listen_after_bind(); });
  while (!p->server.is_running()) absl::SleepFor(absl::Milliseconds(1));
  std::unique_ptr<TlsMetricsEndpoint> endpoint(new TlsMetricsEndpoint(std::move(impl)));
  endpoint->port_ = bound;
  return endpoint;
}

TlsMetricsEndpoint::~TlsMetricsEndpoint() {
  impl_->server.stop();
  if (impl_->listener.joinable()) impl_->listener.join();
}

}  // namespace arbor::rpc
