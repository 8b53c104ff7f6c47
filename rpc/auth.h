// Caller authentication for the client-facing API (the coordinator's
// Reasoning service and its HTTP API).
//
// A token file holds one token per line, optionally named: "NAME:TOKEN"
// (blank lines and lines starting with '#' are skipped; a line without ':'
// is a token named "default", or "line<N>" when there are several). A caller
// presents "authorization: Bearer TOKEN"; tokens are compared as SHA-256
// digests in constant time, so neither the content nor the length of a
// configured token leaks through timing.
//
// Every call gets an identity, the key of the per-client quotas:
//   token:<name>  when tokens are configured (then a call without a valid
//                 token is refused with UNAUTHENTICATED),
//   cert:<CN>     else, the common name of a verified client certificate
//                 (mutual TLS),
//   peer:<ip>     else, the caller's address (without its port).
// Thread-safety: a TokenSet is immutable after creation; all functions are
// thread-safe.
#ifndef ARBOR_RPC_AUTH_H_
#define ARBOR_RPC_AUTH_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace grpc {
class ServerContextBase;
}  // namespace grpc

namespace arbor::rpc {

// Equal contents, in time that depends only on the lengths (never on where
// the first difference is).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

class TokenSet {
 public:
  // INVALID_ARGUMENT naming `source` and the line for an empty token, a
  // duplicate name or a file without tokens.
  static absl::StatusOr<std::unique_ptr<TokenSet>> Parse(std::string_view text,
                                                         std::string_view source);
  static absl::StatusOr<std::unique_ptr<TokenSet>> FromFile(const std::string& path);

  // The name of the token `authorization` carries ("Bearer TOKEN", the scheme
  // case-insensitive); UNAUTHENTICATED saying what is missing or wrong, never
  // echoing the token.
  absl::StatusOr<std::string> Check(std::string_view authorization) const;

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string name;
    std::array<uint8_t, 32> digest;
  };
  TokenSet() = default;
  std::vector<Entry> entries_;
};

// "ipv4:10.0.0.7:5123" -> "10.0.0.7", "ipv6:[::1]:5123" -> "::1"; anything
// else unchanged.
std::string PeerHost(std::string_view grpc_peer);

// The identity of a gRPC call (see above); `tokens` may be null (no tokens
// required). UNAUTHENTICATED when tokens are configured and the call carries
// none or a wrong one.
absl::StatusOr<std::string> AuthenticateCall(const TokenSet* tokens,
                                             const grpc::ServerContextBase& context);

// The same for a caller of another protocol (HTTP): its Authorization header
// ("" when absent), the CN of its verified certificate ("" when none) and
// its address.
absl::StatusOr<std::string> Authenticate(const TokenSet* tokens, std::string_view authorization,
                                         std::string_view cert_common_name,
                                         std::string_view peer_host);

// Client side: the "authorization" metadata value ("Bearer TOKEN") for the
// token in `path` (its first line that is neither blank nor a '#' comment,
// whitespace trimmed). Errors name the file.
absl::StatusOr<std::string> ReadBearerToken(const std::string& path);

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_AUTH_H_
