#include "coordinator/client_quotas.h"

#include "absl/strings/str_cat.h"

namespace arbor::coordinator {
namespace {
constexpr absl::Duration kWindow = absl::Minutes(1);
}  // namespace

ClientQuotas::Lease::~Lease() { quotas_->Release(client_); }

void ClientQuotas::Lease::Charge(int64_t tokens) { quotas_->Charge(client_, tokens); }

absl::StatusOr<std::unique_ptr<ClientQuotas>> ClientQuotas::Create(ClientQuotaOptions options) {
  if (options.max_jobs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_jobs_per_client (", options.max_jobs, ") must be >= 0 (0: no limit)"));
  }
  if (options.max_tokens_per_minute < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens_per_minute_per_client (",
                                                   options.max_tokens_per_minute,
                                                   ") must be >= 0 (0: no limit)"));
  }
  return std::unique_ptr<ClientQuotas>(new ClientQuotas(options));
}

void ClientQuotas::DropOld(Client& c, absl::Time now) {
  while (!c.charges.empty() && c.charges.front().first <= now - kWindow) {
    c.window_tokens -= c.charges.front().second;
    c.charges.pop_front();
  }
}

void ClientQuotas::Expire(absl::flat_hash_map<std::string, Client>::iterator it, absl::Time now) {
  DropOld(it->second, now);
  if (it->second.jobs == 0 && it->second.charges.empty()) clients_.erase(it);
}

absl::StatusOr<std::unique_ptr<ClientQuotas::Lease>> ClientQuotas::Admit(
    const std::string& client) {
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  auto it = clients_.try_emplace(client).first;
  Client& c = it->second;
  DropOld(c, now);
  auto refuse = [&](absl::Status status) {
    Expire(it, now);
    return status;
  };
  if (options_.max_jobs > 0 && c.jobs >= options_.max_jobs) {
    return refuse(absl::ResourceExhaustedError(
        absl::StrCat("client quota: ", client, " has ", c.jobs,
                     " jobs in flight, the most --max_jobs_per_client (", options_.max_jobs,
                     ") allows; retry when one finishes")));
  }
  if (options_.max_tokens_per_minute > 0 && c.window_tokens >= options_.max_tokens_per_minute) {
    const absl::Duration wait = c.charges.front().first + kWindow - now;
    return refuse(absl::ResourceExhaustedError(
        absl::StrCat("client quota: ", client, " used ", c.window_tokens,
                     " tokens in the last minute, --max_tokens_per_minute_per_client is ",
                     options_.max_tokens_per_minute, "; retry in ",
                     absl::FormatDuration(absl::Ceil(wait, absl::Seconds(1))))));
  }
  ++c.jobs;
  return std::unique_ptr<Lease>(new Lease(this, client));
}

void ClientQuotas::Release(const std::string& client) {
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end()) return;
  --it->second.jobs;
  Expire(it, now);
}

void ClientQuotas::Charge(const std::string& client, int64_t tokens) {
  if (tokens <= 0) return;
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  // The lease holds the entry (jobs > 0), so it exists.
  Client& c = clients_[client];
  c.charges.emplace_back(now, tokens);
  c.window_tokens += tokens;
}

int ClientQuotas::jobs(const std::string& client) const {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  return it == clients_.end() ? 0 : it->second.jobs;
}

int64_t ClientQuotas::tokens_last_minute(const std::string& client) const {
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end()) return 0;
  int64_t total = 0;
  for (const auto& charge : it->second.charges) {
    if (charge.first > now - kWindow) total += charge.second;
  }
  return total;
}

size_t ClientQuotas::tracked_clients() const {
  absl::MutexLock lock(&mu_);
  return clients_.size();
}

}  // namespace arbor::coordinator
