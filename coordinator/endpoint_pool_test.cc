// EndpointPool: target parsing, rendezvous order, health checks against real
// in-process servers, ejection and return, DNS targets, re-admission with no
// back-off, parallel checks past a hung endpoint, endpoint watches.
#include "coordinator/endpoint_pool.h"

#include <atomic>
#include <map>
#include <memory>
#include <set>

#include "coordinator/remote_backends.h"
#include "coordinator/testing/black_hole.h"
#include "coordinator/testing/world_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "rpc/server.h"

namespace arbor::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseTargetsTest, StaticListsAndDns) {
  auto targets = ParseTargets(" 10.0.0.1:5000, worker-2:5001,10.0.0.1:5000 ", "workers");
  ASSERT_TRUE(targets.ok());
  EXPECT_THAT(*targets, ElementsAre("10.0.0.1:5000", "worker-2:5001"));
  targets = ParseTargets("dns:///arbor-worker.default.svc:50052", "workers");
  ASSERT_TRUE(targets.ok());
  EXPECT_THAT(*targets, ElementsAre("dns:///arbor-worker.default.svc:50052"));
  EXPECT_THAT(ParseTargets("", "workers").status().message(), HasSubstr("workers: empty"));
  EXPECT_THAT(ParseTargets("host", "workers").status().message(),
              HasSubstr("'host' is not host:port"));
  EXPECT_THAT(ParseTargets("a:1,b:99999", "verifiers").status().message(),
              HasSubstr("verifiers: 'b:99999'"));
}

TEST(RendezvousTest, StableAndMinimallyDisruptive) {
  const std::vector<std::string> all = {"a:1", "b:1", "c:1", "d:1", "e:1"};
  std::map<std::string, int> first_counts;
  for (int job = 0; job < 2000; ++job) {
    const std::string key = "job-" + std::to_string(job);
    const auto order = RendezvousOrder(key, all);
    ASSERT_EQ(order.size(), all.size());
    EXPECT_EQ(std::set<std::string>(order.begin(), order.end()),
              std::set<std::string>(all.begin(), all.end()));
    EXPECT_EQ(order, RendezvousOrder(key, {"e:1", "d:1", "c:1", "b:1", "a:1"}));
    ++first_counts[order[0]];
    // Removing the first choice promotes the second; the rest keep their order.
    std::vector<std::string> rest(all);
    rest.erase(std::find(rest.begin(), rest.end(), order[0]));
    const auto after = RendezvousOrder(key, rest);
    EXPECT_EQ(after, std::vector<std::string>(order.begin() + 1, order.end()));
  }
  for (const auto& [address, count] : first_counts) {
    EXPECT_GT(count, 300) << address;  // 400 expected each
    EXPECT_LT(count, 500) << address;
  }
}

using testing::ArithServiceOptions;
using testing::BlackHole;
using testing::WorldServer;

PoolOptions FastPool(const std::string& targets) {
  PoolOptions options;
  options.targets = targets;
  options.health_interval = absl::Milliseconds(50);
  options.health_timeout = absl::Milliseconds(500);
  return options;
}

TEST(EndpointPoolTest, HealthChecksEjectsAndReadmits) {
  auto a = std::make_unique<WorldServer>(WorldServer::Model("arith-1"));
  WorldServer b(WorldServer::Model("arith-1"));
  WorldServer other(WorldServer::Model("arith-2"));
  auto pool = EndpointPool::Create(
      FastPool(a->address() + "," + b.address() + "," + other.address()), GeneratorModelProbe());
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_THAT((*pool)->KnownModels(), ElementsAre("arith-1", "arith-2"));
  auto route = (*pool)->Route("job-7", "arith-1");
  ASSERT_EQ(route.size(), 2u);
  EXPECT_EQ((*pool)->Route("job-7", "arith-1")[0].address, route[0].address);
  ASSERT_EQ((*pool)->Route("job-7", "arith-2").size(), 1u);
  EXPECT_TRUE((*pool)->Route("job-7", "nope").empty());

  // A lost endpoint is ejected at once; its next passing check re-admits it.
  (*pool)->Lost(route[0].address, absl::UnavailableError("connection reset"));
  auto after = (*pool)->Route("job-7", "arith-1");
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].address, route[1].address);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ((*pool)->Route("job-7", "arith-1").size(), 2u);

  // A server that goes away fails its health check and leaves the routes.
  const std::string a_address = a->address();
  const int a_port = a->server->port();
  a.reset();
  (*pool)->RefreshNow();
  for (const auto& e : (*pool)->Route("job-7", "arith-1")) EXPECT_NE(e.address, a_address);
  auto snapshot = (*pool)->Snapshot();
  bool saw_ejected = false;
  for (const auto& s : snapshot) saw_ejected |= s.address == a_address && !s.healthy;
  EXPECT_TRUE(saw_ejected);

  // Back on the same port: re-admitted at its next passing check.
  WorldServer again(WorldServer::Model("arith-1"), a_port);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((*pool)->Route("job-7", "arith-1").size() < 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ((*pool)->Route("job-7", "arith-1").size(), 2u);
}

// Waits until `address` is routable (true) or `timeout` passes (false).
bool WaitRoutable(const EndpointPool& pool, const std::string& address, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!pool.Routable(address)) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

TEST(EndpointPoolTest, ReadmitsAtTheFirstPassingCheckWithNoBackOff) {
  auto a = std::make_unique<WorldServer>();
  const std::string address = a->address();
  const int port = a->server->port();
  auto pool = EndpointPool::Create(FastPool(address), GeneratorModelProbe());
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->Routable(address));
  // Many failures in a row: each ejects, none lengthens the next ejection.
  auto ejections = [&] {
    for (const auto& s : (*pool)->Snapshot()) {
      if (s.address == address) return s.ejections;
    }
    return int64_t{-1};
  };
  for (int i = 0; i < 20; ++i) {
    const int64_t before = ejections();
    (*pool)->Lost(address, absl::UnavailableError("connection reset"));
    // Lost ejects at once and asks for a check, which may pass before this
    // thread looks again: count the ejection rather than race the check.
    EXPECT_EQ(ejections(), before + 1) << "round " << i;
    ASSERT_TRUE(WaitRoutable(**pool, address, absl::Seconds(5))) << "round " << i;
  }
  // Killed: ejected by its checks. Restarted on its port: routable again at
  // its first passing check (50 ms interval; 2 s is a loose bound).
  a.reset();
  const absl::Time gone = absl::Now() + absl::Seconds(5);
  while ((*pool)->Routable(address) && absl::Now() < gone) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_FALSE((*pool)->Routable(address));
  absl::SleepFor(absl::Milliseconds(500));  // ten failed checks
  WorldServer again(ArithServiceOptions{}, port);
  EXPECT_TRUE(WaitRoutable(**pool, address, absl::Seconds(2)));
  const auto snapshot = (*pool)->Snapshot();
  ASSERT_EQ(snapshot.size(), 1u);
  EXPECT_GE(snapshot[0].ejections, 21);
  EXPECT_TRUE(snapshot[0].healthy);
  EXPECT_FALSE(snapshot[0].ejected);
}

TEST(EndpointPoolTest, AHungEndpointDoesNotDelayTheOthersChecks) {
  BlackHole hung;
  WorldServer good;
  PoolOptions options = FastPool(hung.address() + "," + good.address());
  // Each check of the hung endpoint waits 3 s; checked one after another,
  // the good endpoint could not be re-checked sooner.
  options.health_timeout = absl::Seconds(3);
  const absl::Time start = absl::Now();
  auto pool = EndpointPool::Create(options, GeneratorModelProbe());
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));  // one parallel round, not two
  EXPECT_FALSE((*pool)->Routable(hung.address()));
  ASSERT_TRUE((*pool)->Routable(good.address()));
  for (int i = 0; i < 3; ++i) {
    (*pool)->Lost(good.address(), absl::DeadlineExceededError("call timed out"));
    EXPECT_TRUE(WaitRoutable(**pool, good.address(), absl::Milliseconds(1500))) << "round " << i;
  }
  EXPECT_FALSE((*pool)->Routable(hung.address()));
}

TEST(EndpointPoolTest, WatchesSeeEjections) {
  BlackHole hung;
  WorldServer good;
  auto pool =
      EndpointPool::Create(FastPool(hung.address() + "," + good.address()), GeneratorModelProbe());
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::atomic<int> hung_lost = 0, good_lost = 0;
  // Not routable now: called at once.
  auto hung_watch = (*pool)->WatchEndpoint(hung.address(), [&] { ++hung_lost; });
  EXPECT_EQ(hung_lost.load(), 1);
  auto good_watch = (*pool)->WatchEndpoint(good.address(), [&] { ++good_lost; });
  EXPECT_EQ(good_lost.load(), 0);
  (*pool)->Lost(good.address(), absl::UnavailableError("reset"));
  EXPECT_EQ(good_lost.load(), 1);
  (*pool)->Lost(good.address(), absl::UnavailableError("reset"));  // already ejected
  EXPECT_EQ(good_lost.load(), 1);
  ASSERT_TRUE(WaitRoutable(**pool, good.address(), absl::Seconds(5)));
  (*pool)->Lost(good.address(), absl::UnavailableError("reset"));
  EXPECT_EQ(good_lost.load(), 2);
  good_watch.reset();  // unwatched: no more calls
  ASSERT_TRUE(WaitRoutable(**pool, good.address(), absl::Seconds(5)));
  (*pool)->Lost(good.address(), absl::UnavailableError("reset"));
  EXPECT_EQ(good_lost.load(), 2);
}

TEST(EndpointPoolTest, ResolvesDnsNames) {
  WorldServer a;
  auto pool = EndpointPool::Create(FastPool("dns:///localhost:" + std::to_string(a.server->port())),
                                   GeneratorModelProbe());
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->WaitForHealthy(absl::Seconds(5)));
  auto route = (*pool)->Route("job", "arith-1");
  ASSERT_GE(route.size(), 1u);
  EXPECT_EQ(route[0].address, "127.0.0.1:" + std::to_string(a.server->port()));
}

}  // namespace
}  // namespace arbor::coordinator
