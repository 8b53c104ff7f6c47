// TLS for Arbor's gRPC servers and channels, from PEM files.
//
// Server side: a certificate and key turn TLS on; a CA besides makes it
// mutual (every client must present a certificate that CA signed, else the
// handshake fails). Client side: a CA to verify the server with (else the
// system roots), and a certificate and key to present where the server asks
// for them (mutual TLS). Nothing given means plaintext, as before.
// Files are read once, when the credentials are made: a rotated certificate
// takes a restart. Thread-safety: the functions are thread-safe.
#ifndef ARBOR_RPC_TLS_H_
#define ARBOR_RPC_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ChannelArguments;
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace arbor::rpc {

struct TlsServerFiles {
  std::string cert;  // PEM certificate chain; empty: plaintext
  std::string key;   // PEM private key of `cert`
  std::string ca;    // PEM CA bundle; non-empty: clients must present a cert it signed
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

struct TlsClientFiles {
  std::string ca;    // PEM roots that verify the server; empty: the system roots
  std::string cert;  // PEM certificate presented to servers asking for one (mutual TLS)
  std::string key;   // PEM private key of `cert`
  // Name checked against the server's certificate instead of the target's
  // host (for targets given as IP addresses or resolved by DNS).
  std::string server_name;
  // TLS is on when any file is given.
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// The whole file; NOT_FOUND / PERMISSION_DENIED name `what` and the path.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& what);

// Insecure credentials when !files.enabled(). INVALID_ARGUMENT when a key is
// given without a certificate (or the reverse) or a file is not PEM.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsServerFiles& files);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsClientFiles& files);

// Sets the TLS target name override on `args` when files.server_name is set.
void ApplyTlsChannelArgs(const TlsClientFiles& files, grpc::ChannelArguments& args);

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_TLS_H_
