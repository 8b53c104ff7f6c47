// EndpointPool: target parsing, rendezvous order, health checks against real
// in-process servers, ejection and return, DNS targets.
#include "coordinator/endpoint_pool.h"

#include <map>
#include <memory>
#include <set>

#include "coordinator/remote_backends.h"
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

using testing::WorldServer;

PoolOptions FastPool(const std::string& targets) {
  PoolOptions options;
  options.targets = targets;
  options.health_interval = absl::Milliseconds(50);
  options.health_timeout = absl::Milliseconds(500);
  options.ejection = absl::Milliseconds(100);
  options.max_ejection = absl::Milliseconds(200);
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

  // A reported failure ejects at once; the next health round re-admits it.
  (*pool)->ReportFailure(route[0].address, absl::UnavailableError("connection reset"));
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

  // Back on the same port: re-admitted after its ejection ends.
  WorldServer again(WorldServer::Model("arith-1"), a_port);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((*pool)->Route("job-7", "arith-1").size() < 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ((*pool)->Route("job-7", "arith-1").size(), 2u);
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
