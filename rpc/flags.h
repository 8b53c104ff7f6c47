// Command-line flags shared by every Arbor server binary (absl flags):
//   --host, --port (0 = pick a free port), --metrics_host, --metrics_port
//   (0 = pick, -1 = off), --drain_delay_ms, --drain_grace_ms, --max_message_mb,
//   --tls_cert, --tls_key, --tls_ca (rpc/tls.h). Hosts default to loopback.
// Binaries link arbor_server, call ParseServerCommandLine, then
// ServerOptionsFromFlags. Thread-safety: read flags after parsing only.
#ifndef ARBOR_RPC_FLAGS_H_
#define ARBOR_RPC_FLAGS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/declare.h"
#include "rpc/server.h"

ABSL_DECLARE_FLAG(std::string, host);
ABSL_DECLARE_FLAG(int, port);
ABSL_DECLARE_FLAG(std::string, metrics_host);
ABSL_DECLARE_FLAG(int, metrics_port);
ABSL_DECLARE_FLAG(int, drain_grace_ms);
ABSL_DECLARE_FLAG(int, drain_delay_ms);
ABSL_DECLARE_FLAG(int, max_message_mb);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_ca);

namespace arbor::rpc {

// Sets the usage message and parses argv; returns the positional arguments
// (argv[0] first).
std::vector<char*> ParseServerCommandLine(int argc, char** argv, std::string_view usage);

// ServerOptions from the flags above, for the role `name`.
ServerOptions ServerOptionsFromFlags(std::string_view name);

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_FLAGS_H_
