#include "coordinator/endpoint_pool.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/counter_rng.h"
#include "common/log.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "rpc/status_util.h"

namespace arbor::coordinator {
namespace {

constexpr std::string_view kDnsPrefix = "dns:///";

uint64_t Fnv1a(std::string_view text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

absl::Status CheckHostPort(std::string_view entry, std::string_view flag) {
  const size_t colon = entry.rfind(':');
  int port = 0;
  if (colon == std::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(entry.data() + colon + 1, entry.size() - colon - 1),
                        &port) ||
      port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(flag), ": '", std::string(entry),
                                                   "' is not host:port (port in [1, 65535])"));
  }
  return absl::OkStatus();
}

// The one place the pool's channels are made: plaintext, or TLS when the
// options carry credentials.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, const PoolOptions& pool) {
  grpc::ChannelArguments args;
  if (pool.credentials != nullptr && !pool.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(pool.tls_server_name);
  }
  // A restarted endpoint should be reconnected to quickly once it is back.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return grpc::CreateCustomChannel(
      address, pool.credentials ? pool.credentials : grpc::InsecureChannelCredentials(), args);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseTargets(std::string_view targets,
                                                      std::string_view flag) {
  std::vector<std::string> out;
  const absl::string_view text =
      absl::StripAsciiWhitespace(absl::string_view(targets.data(), targets.size()));
  if (text.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::string_view(flag.data(), flag.size()),
                     ": empty; give host:port,host:port or dns:///name:port"));
  }
  if (absl::StartsWith(text, absl::string_view(kDnsPrefix.data(), kDnsPrefix.size()))) {
    const absl::string_view rest = text.substr(kDnsPrefix.size());
    if (absl::Status s = CheckHostPort(std::string_view(rest.data(), rest.size()), flag); !s.ok()) {
      return s;
    }
    out.emplace_back(text);
    return out;
  }
  absl::flat_hash_set<std::string> seen;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::Status s = CheckHostPort(std::string_view(part.data(), part.size()), flag); !s.ok()) {
      return s;
    }
    if (seen.insert(std::string(part)).second) out.emplace_back(part);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::string_view(flag.data(), flag.size()), ": no endpoints"));
  }
  return out;
}

std::vector<std::string> RendezvousOrder(std::string_view key, std::vector<std::string> addresses) {
  const uint64_t key_hash = Fnv1a(key);
  std::vector<std::pair<uint64_t, std::string>> weighted;
  weighted.reserve(addresses.size());
  for (std::string& a : addresses) {
    weighted.emplace_back(Mix64(key_hash ^ Mix64(Fnv1a(a))), std::move(a));
  }
  std::sort(weighted.begin(), weighted.end(), [](const auto& x, const auto& y) {
    return x.first != y.first ? x.first > y.first : x.second < y.second;
  });
  std::vector<std::string> out;
  out.reserve(weighted.size());
  for (auto& w : weighted) out.push_back(std::move(w.second));
  return out;
}

EndpointPool::EndpointPool(PoolOptions options, ModelProbe probe, PoolMetrics metrics)
    : options_(std::move(options)), probe_(std::move(probe)), metrics_(std::move(metrics)) {}

absl::StatusOr<std::unique_ptr<EndpointPool>> EndpointPool::Create(PoolOptions options,
                                                                   ModelProbe probe,
                                                                   PoolMetrics metrics) {
  auto targets = ParseTargets(options.targets, options.name);
  if (!targets.ok()) return targets.status();
  if (options.health_interval <= absl::ZeroDuration() ||
      options.health_timeout <= absl::ZeroDuration() ||
      options.resolve_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.name, ": health interval/timeout and resolve interval must be positive"));
  }
  std::unique_ptr<EndpointPool> pool(
      new EndpointPool(std::move(options), std::move(probe), std::move(metrics)));
  const std::string& first = targets->front();
  if (absl::StartsWith(first, absl::string_view(kDnsPrefix.data(), kDnsPrefix.size()))) {
    const std::string rest = first.substr(kDnsPrefix.size());
    const size_t colon = rest.rfind(':');
    pool->dns_host_ = rest.substr(0, colon);
    pool->dns_port_ = rest.substr(colon + 1);
  } else {
    pool->static_targets_ = *targets;
  }
  pool->RefreshNow();
  {
    absl::MutexLock lock(&pool->mu_);
    pool->started_ = true;
    // Each was checked just now by RefreshNow.
    for (auto& [address, entry] : pool->entries_) pool->StartChecker(entry, /*check_first=*/false);
  }
  pool->thread_ = std::thread([p = pool.get()] { p->Loop(); });
  return pool;
}

EndpointPool::~EndpointPool() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [address, entry] : entries_) {
      entry->stop = true;
      entries.push_back(entry);
    }
  }
  for (auto& entry : entries) {
    if (entry->checker.joinable()) entry->checker.join();
  }
}

void EndpointPool::Loop() {
  // Static targets never change; DNS names are re-resolved every resolve_interval.
  if (dns_host_.empty()) return;
  while (!stop_.WaitForNotificationWithTimeout(options_.resolve_interval)) {
    absl::MutexLock refresh(&refresh_mu_);
    for (auto& removed : Resolve()) {
      if (removed->checker.joinable()) removed->checker.join();
    }
  }
}

void EndpointPool::RefreshNow() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock refresh(&refresh_mu_);
    for (auto& removed : Resolve()) {
      if (removed->checker.joinable()) removed->checker.join();
    }
    absl::MutexLock lock(&mu_);
    for (auto& [address, entry] : entries_) entries.push_back(entry);
  }
  // All endpoints at once: the round takes as long as the slowest check, not the sum.
  std::vector<std::thread> checks;
  checks.reserve(entries.size());
  for (const auto& entry : entries) checks.emplace_back([this, entry] { CheckOne(entry); });
  for (std::thread& t : checks) t.join();
}

void EndpointPool::StartChecker(const std::shared_ptr<Entry>& entry, bool check_first) {
  if (!started_ || stopping_ || entry->checker.joinable()) return;
  entry->checker = std::thread([this, entry, check_first] { CheckerLoop(entry, check_first); });
}

void EndpointPool::CheckerLoop(const std::shared_ptr<Entry>& entry, bool check_first) {
  bool check = check_first;
  while (true) {
    if (check) CheckOne(entry);
    absl::MutexLock lock(&mu_);
    const Entry* e = entry.get();
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](const Entry* e) ABSL_NO_THREAD_SAFETY_ANALYSIS { return e->stop || e->check_now; },
            e),
        options_.health_interval);
    if (entry->stop) return;
    entry->check_now = false;
    check = true;
  }
}

std::vector<std::shared_ptr<EndpointPool::Entry>> EndpointPool::Resolve() {
  std::vector<std::shared_ptr<Entry>> removed;
  std::vector<std::string> addresses;
  if (dns_host_.empty()) {
    addresses = static_targets_;
  } else {
    const absl::Time now = absl::Now();
    if (now < next_resolve_) return removed;
    next_resolve_ = now + options_.resolve_interval;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* result = nullptr;
    const int rc = getaddrinfo(dns_host_.c_str(), dns_port_.c_str(), &hints, &result);
    if (rc != 0) {
      // Keep the last known endpoints: a DNS hiccup must not empty the pool.
      ARBOR_LOG(WARNING) << options_.name << ": cannot resolve " << dns_host_ << ": "
                         << gai_strerror(rc);
      return removed;
    }
    for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
      char host[INET6_ADDRSTRLEN] = {0};
      if (ai->ai_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, host,
                  sizeof(host));
        addresses.push_back(absl::StrCat(host, ":", dns_port_));
      } else if (ai->ai_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, host,
                  sizeof(host));
        addresses.push_back(absl::StrCat("[", host, "]:", dns_port_));
      }
    }
    freeaddrinfo(result);
    std::sort(addresses.begin(), addresses.end());
    addresses.erase(std::unique(addresses.begin(), addresses.end()), addresses.end());
  }
  std::vector<std::string> lost;
  {
    absl::MutexLock lock(&mu_);
    absl::flat_hash_set<std::string> wanted(addresses.begin(), addresses.end());
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (!wanted.contains(it->first)) {
        ARBOR_LOG(INFO) << options_.name << ": endpoint " << it->first << " left";
        it->second->stop = true;
        if (it->second->healthy) lost.push_back(it->first);
        removed.push_back(it->second);
        entries_.erase(it++);
      } else {
        ++it;
      }
    }
    for (const std::string& a : addresses) {
      if (entries_.contains(a)) continue;
      auto entry = std::make_shared<Entry>();
      entry->address = a;
      entry->channel = MakeChannel(a, options_);
      // Not checked yet: its checker starts with a check.
      StartChecker(entry, /*check_first=*/true);
      entries_.emplace(a, std::move(entry));
      ARBOR_LOG(INFO) << options_.name << ": endpoint " << a << " added";
    }
    UpdateGauges();
  }
  for (const std::string& a : lost) NotifyLost(a);
  return removed;
}

void EndpointPool::CheckOne(const std::shared_ptr<Entry>& entry) {
  const absl::Time deadline = absl::Now() + options_.health_timeout;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  bool routable = false;
  {
    absl::MutexLock lock(&mu_);
    routable = entry->healthy;
  }
  if (!routable) {
    // Without this, gRPC's reconnect back-off (up to its max) would decide
    // when a restarted endpoint is seen again, not the health interval: try
    // to connect now, and let the check wait for that connection.
    grpc::experimental::ChannelResetConnectionBackoff(entry->channel.get());
    context.set_wait_for_ready(true);
  }
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  auto stub = grpc::health::v1::Health::NewStub(entry->channel);
  grpc::Status status = stub->Check(&context, request, &response);
  absl::Status check = rpc::ToAbslStatus(status);
  if (check.ok() && response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    check = absl::UnavailableError(
        absl::StrCat("health status ",
                     grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
  std::string model;
  bool need_model = false;
  {
    absl::MutexLock lock(&mu_);
    need_model = entry->model.empty();
  }
  if (check.ok() && need_model) {
    auto probed = probe_(entry->channel, absl::Now() + options_.health_timeout);
    if (probed.ok()) {
      model = *probed;
    } else {
      check = probed.status();
    }
  }
  bool notify = false;
  {
    absl::MutexLock lock(&mu_);
    if (entry->stop) return;
    if (check.ok()) {
      if (!model.empty()) entry->model = model;
      if (!entry->healthy) {
        ARBOR_LOG(INFO) << options_.name << ": endpoint " << entry->address << " routable (model "
                        << entry->model << ")";
      }
      entry->healthy = true;
      entry->ejected = false;
      entry->consecutive_failures = 0;
    } else {
      notify = Eject(*entry, check);
    }
    UpdateGauges();
  }
  if (notify) NotifyLost(entry->address);
}

bool EndpointPool::Eject(Entry& entry, const absl::Status& status) {
  const bool was_healthy = entry.healthy;
  entry.healthy = false;
  entry.consecutive_failures = std::min(entry.consecutive_failures + 1, 1 << 20);
  if (!was_healthy) return false;
  entry.ejected = true;
  ++entry.ejections;
  if (metrics_.ejections != nullptr) metrics_.ejections->Increment();
  ARBOR_LOG(WARNING) << options_.name << ": ejected " << entry.address
                     << " until it passes a health check: " << status;
  return true;
}

void EndpointPool::NotifyLost(const std::string& address) {
  absl::MutexLock lock(&watch_mu_);
  auto it = watches_.find(address);
  if (it == watches_.end()) return;
  for (auto& [id, on_lost] : it->second) on_lost();
}

void EndpointPool::UpdateGauges() {
  int healthy = 0;
  for (const auto& [address, entry] : entries_) healthy += entry->healthy ? 1 : 0;
  if (metrics_.healthy != nullptr) metrics_.healthy->Set(healthy);
  if (metrics_.endpoints != nullptr) metrics_.endpoints->Set(static_cast<double>(entries_.size()));
}

void EndpointPool::Lost(const std::string& address, const absl::Status& status) {
  if (metrics_.on_error) {
    const grpc::StatusCode code = static_cast<grpc::StatusCode>(status.code());
    metrics_.on_error(rpc::GrpcCodeName(code));
  }
  bool notify = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(address);
    if (it == entries_.end()) return;
    notify = Eject(*it->second, status);
    // Check again at once: a transient failure is re-admitted quickly.
    it->second->check_now = true;
    UpdateGauges();
  }
  if (notify) NotifyLost(address);
}

bool EndpointPool::Routable(const std::string& address) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(address);
  return it != entries_.end() && it->second->healthy;
}

std::unique_ptr<EndpointPool::EndpointWatch> EndpointPool::WatchEndpoint(
    const std::string& address, std::function<void()> on_lost) {
  uint64_t id = 0;
  {
    absl::MutexLock lock(&watch_mu_);
    id = next_watch_++;
    watches_[address].emplace(id, std::move(on_lost));
  }
  // Registered first, checked second: an ejection in between is not missed.
  if (!Routable(address)) {
    absl::MutexLock lock(&watch_mu_);
    auto it = watches_.find(address);
    if (it != watches_.end()) {
      auto w = it->second.find(id);
      if (w != it->second.end()) w->second();
    }
  }
  return std::unique_ptr<EndpointWatch>(new EndpointWatch(*this, address, id));
}

EndpointPool::EndpointWatch::~EndpointWatch() { pool_.Unwatch(address_, id_); }

void EndpointPool::Unwatch(const std::string& address, uint64_t id) {
  absl::MutexLock lock(&watch_mu_);
  auto it = watches_.find(address);
  if (it == watches_.end()) return;
  it->second.erase(id);
  if (it->second.empty()) watches_.erase(it);
}

std::vector<EndpointPool::Endpoint> EndpointPool::Route(std::string_view key,
                                                        std::string_view model) const {
  absl::flat_hash_map<std::string, Endpoint> candidates;
  std::vector<std::string> addresses;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [address, entry] : entries_) {
      if (!entry->healthy || entry->model != model) continue;
      addresses.push_back(address);
      candidates[address] = Endpoint{address, entry->model, entry->channel};
    }
  }
  std::vector<Endpoint> out;
  for (const std::string& a : RendezvousOrder(key, std::move(addresses))) {
    out.push_back(std::move(candidates[a]));
  }
  return out;
}

std::vector<std::string> EndpointPool::KnownModels() const {
  absl::flat_hash_set<std::string> models;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [address, entry] : entries_) {
      if (!entry->model.empty()) models.insert(entry->model);
    }
  }
  std::vector<std::string> out(models.begin(), models.end());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> EndpointPool::HealthyModels() const {
  absl::flat_hash_set<std::string> models;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [address, entry] : entries_) {
      if (entry->healthy && !entry->model.empty()) models.insert(entry->model);
    }
  }
  std::vector<std::string> out(models.begin(), models.end());
  std::sort(out.begin(), out.end());
  return out;
}

bool EndpointPool::WaitForHealthy(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [address, entry] : entries_) {
        if (entry->healthy) return true;
      }
    }
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

std::vector<EndpointPool::EndpointState> EndpointPool::Snapshot() const {
  std::vector<EndpointState> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [address, entry] : entries_) {
    out.push_back(EndpointState{address, entry->model, entry->healthy, entry->ejected,
                                entry->consecutive_failures, entry->ejections});
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.address < b.address; });
  return out;
}

}  // namespace arbor::coordinator
