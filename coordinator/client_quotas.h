// ClientQuotas: per-client admission limits, so that one client cannot take
// every job slot or the whole token throughput. A client is the identity the
// Reasoning service authenticated (rpc/auth.h: token:NAME, cert:CN,
// peer:IP). Two limits, each off at 0:
//  - max_jobs: jobs of one client admitted and not finished (queued or running),
//  - max_tokens_per_minute: tokens (generated + reward-model) charged to one
//    client in the trailing 60 s; a job is charged when it ends, and a client
//    at or over the limit is refused new jobs until enough of its recent
//    usage is older than a minute.
// A refusal is RESOURCE_EXHAUSTED at once, naming the quota and the client.
// Memory: one entry per client with a job in flight or tokens charged in the
// last minute; idle entries are dropped.
// Thread-safety: all methods are thread-safe; a Lease may be released on any
// thread, but must not outlive its ClientQuotas.
#ifndef ARBOR_COORDINATOR_CLIENT_QUOTAS_H_
#define ARBOR_COORDINATOR_CLIENT_QUOTAS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace arbor::coordinator {

struct ClientQuotaOptions {
  int max_jobs = 0;                   // per client, concurrent; 0: no limit
  int64_t max_tokens_per_minute = 0;  // per client; 0: no limit
  bool enabled() const { return max_jobs > 0 || max_tokens_per_minute > 0; }
};

class ClientQuotas {
 public:
  // One admitted job: holds its slot until destroyed; Charge adds its tokens.
  class Lease {
   public:
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    void Charge(int64_t tokens);
    const std::string& client() const { return client_; }

   private:
    friend class ClientQuotas;
    Lease(ClientQuotas* quotas, std::string client) : quotas_(quotas), client_(std::move(client)) {}
    ClientQuotas* quotas_;
    std::string client_;
  };

  // INVALID_ARGUMENT for negative limits.
  static absl::StatusOr<std::unique_ptr<ClientQuotas>> Create(ClientQuotaOptions options);

  // A lease for one more job of `client`, or RESOURCE_EXHAUSTED naming the
  // quota that is full.
  absl::StatusOr<std::unique_ptr<Lease>> Admit(const std::string& client);

  // Jobs of `client` holding a lease; tokens charged to it in the last minute.
  int jobs(const std::string& client) const;
  int64_t tokens_last_minute(const std::string& client) const;
  // Clients tracked (for tests: idle ones are dropped).
  size_t tracked_clients() const;

  const ClientQuotaOptions& options() const { return options_; }

  // The clock (tests replace it before use).
  void set_clock_for_testing(std::function<absl::Time()> clock) { clock_ = std::move(clock); }

 private:
  struct Client {
    int jobs = 0;
    std::deque<std::pair<absl::Time, int64_t>> charges;  // oldest first
    int64_t window_tokens = 0;
  };
  explicit ClientQuotas(ClientQuotaOptions options) : options_(options) {}
  void Release(const std::string& client);
  void Charge(const std::string& client, int64_t tokens);
  static void DropOld(Client& c, absl::Time now);
  // Drops charges older than a minute; erases `it` when idle.
  void Expire(absl::flat_hash_map<std::string, Client>::iterator it, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClientQuotaOptions options_;
  std::function<absl::Time()> clock_ = [] { return absl::Now(); };
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Client> clients_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_CLIENT_QUOTAS_H_
