#include "rpc/auth.h"

#include <openssl/crypto.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/sha256.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/auth_context.h"
#include "rpc/tls.h"

namespace arbor::rpc {
namespace {

std::array<uint8_t, 32> Digest(std::string_view text) {
  Sha256 hash;
  hash.Update(text);
  return hash.Finish();
}

}  // namespace

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Digests first: equal lengths, so the comparison time does not depend on
  // either input's length, then OpenSSL's constant-time compare.
  const std::array<uint8_t, 32> da = Digest(a);
  const std::array<uint8_t, 32> db = Digest(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

absl::StatusOr<std::unique_ptr<TokenSet>> TokenSet::Parse(std::string_view text,
                                                          std::string_view source_view) {
  const std::string source(source_view);
  struct Raw {
    int line;
    std::string name;
    std::string token;
  };
  std::vector<Raw> raws;
  int line_number = 0;
  int unnamed = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    Raw raw{line_number, "", ""};
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) {
      raw.token = std::string(line);
      ++unnamed;
    } else {
      raw.name = std::string(absl::StripAsciiWhitespace(line.substr(0, colon)));
      raw.token = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      if (raw.name.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, " line ", line_number, ": empty name before ':'"));
      }
    }
    if (raw.token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, " line ", line_number, ": empty token"));
    }
    raws.push_back(std::move(raw));
  }
  if (raws.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": no tokens"));
  std::unique_ptr<TokenSet> set(new TokenSet());
  for (Raw& raw : raws) {
    if (raw.name.empty()) raw.name = unnamed == 1 ? "default" : absl::StrCat("line", raw.line);
    for (const Entry& e : set->entries_) {
      if (e.name == raw.name) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, " line ", raw.line, ": token name '", raw.name, "' repeated"));
      }
    }
    set->entries_.push_back({raw.name, Digest(raw.token)});
  }
  return set;
}

absl::StatusOr<std::unique_ptr<TokenSet>> TokenSet::FromFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadPemFile(path, "--auth_token_file");
  if (!text.ok()) return text.status();
  return Parse(*text, path);
}

absl::StatusOr<std::string> TokenSet::Check(std::string_view authorization) const {
  absl::string_view value =
      absl::StripAsciiWhitespace(absl::string_view(authorization.data(), authorization.size()));
  if (value.empty()) {
    return absl::UnauthenticatedError(
        "missing credentials: send 'authorization: Bearer TOKEN' (arborctl --token_file)");
  }
  if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
    return absl::UnauthenticatedError("authorization: expected 'Bearer TOKEN'");
  }
  const absl::string_view token = absl::StripLeadingAsciiWhitespace(value.substr(7));
  const std::array<uint8_t, 32> digest = Digest(std::string_view(token.data(), token.size()));
  // Every entry is compared, so the time does not say which one matched.
  const Entry* match = nullptr;
  for (const Entry& e : entries_) {
    if (CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0) match = &e;
  }
  if (match == nullptr) return absl::UnauthenticatedError("authorization: invalid token");
  return match->name;
}

std::string PeerHost(std::string_view grpc_peer) {
  absl::string_view peer(grpc_peer.data(), grpc_peer.size());
  if (absl::ConsumePrefix(&peer, "ipv4:")) {
    const size_t colon = peer.rfind(':');
    return std::string(colon == absl::string_view::npos ? peer : peer.substr(0, colon));
  }
  if (absl::ConsumePrefix(&peer, "ipv6:")) {
    if (!peer.empty() && peer.front() == '[') {
      const size_t close = peer.find(']');
      if (close != absl::string_view::npos) return std::string(peer.substr(1, close - 1));
    }
    return std::string(peer);
  }
  return std::string(grpc_peer);
}

absl::StatusOr<std::string> Authenticate(const TokenSet* tokens, std::string_view authorization,
                                         std::string_view cert_common_name,
                                         std::string_view peer_host) {
  if (tokens != nullptr) {
    absl::StatusOr<std::string> name = tokens->Check(authorization);
    if (!name.ok()) return name.status();
    return absl::StrCat("token:", *name);
  }
  if (!cert_common_name.empty()) return absl::StrCat("cert:", std::string(cert_common_name));
  return absl::StrCat("peer:", std::string(peer_host));
}

absl::StatusOr<std::string> AuthenticateCall(const TokenSet* tokens,
                                             const grpc::ServerContextBase& context) {
  std::string authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization.assign(it->second.data(), it->second.size());
  }
  std::string common_name;
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  // Only a certificate the server verified (mutual TLS) gives an identity.
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const grpc::string_ref& cn : auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
      common_name.assign(cn.data(), cn.size());
      break;
    }
  }
  return Authenticate(tokens, authorization, common_name, PeerHost(context.peer()));
}

absl::StatusOr<std::string> ReadBearerToken(const std::string& path) {
  absl::StatusOr<std::string> text = ReadPemFile(path, "token file");
  if (!text.ok()) return text.status();
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    return absl::StrCat("Bearer ", line);
  }
  return absl::InvalidArgumentError(absl::StrCat("token file ", path, ": no token"));
}

}  // namespace arbor::rpc
