#include "rpc/flags.h"

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address the gRPC server binds; loopback by default, 0.0.0.0 (or ::) for every "
          "interface");
ABSL_FLAG(int, port, 0, "gRPC port; 0 picks a free port (printed as 'listening on HOST:PORT')");
ABSL_FLAG(std::string, metrics_host, "127.0.0.1",
          "Address the Prometheus /metrics endpoint binds; loopback by default");
ABSL_FLAG(int, metrics_port, 0,
          "Prometheus /metrics port; 0 picks a free port (printed as 'metrics on HOST:PORT'), "
          "-1 disables it");
ABSL_FLAG(int, drain_grace_ms, 10000,
          "On SIGTERM/SIGINT: how long in-flight calls may run before they are cancelled (after "
          "--drain_delay_ms)");
ABSL_FLAG(int, drain_delay_ms, 0,
          "On SIGTERM: how long to keep serving new calls after health turns NOT_SERVING, "
          "so that load balancers and clients move away first (SIGINT skips it)");
ABSL_FLAG(int, max_message_mb, 64, "Largest gRPC message sent or received, in MiB");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key); empty: plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle: require mutual TLS, refusing clients without a certificate it signed");

namespace arbor::rpc {

std::vector<char*> ParseServerCommandLine(int argc, char** argv, std::string_view usage) {
  absl::SetProgramUsageMessage(std::string(usage));
  return absl::ParseCommandLine(argc, argv);
}

ServerOptions ServerOptionsFromFlags(std::string_view name) {
  ServerOptions options;
  options.name = std::string(name);
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.drain_grace = absl::Milliseconds(absl::GetFlag(FLAGS_drain_grace_ms));
  options.drain_delay = absl::Milliseconds(absl::GetFlag(FLAGS_drain_delay_ms));
  const int mb = absl::GetFlag(FLAGS_max_message_mb);
  options.max_message_bytes = mb > 0 && mb <= 2047 ? mb << 20 : -1;
  options.tls.cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key = absl::GetFlag(FLAGS_tls_key);
  options.tls.ca = absl::GetFlag(FLAGS_tls_ca);
  return options;
}

}  // namespace arbor::rpc
