// Router's choices on scripted worker states (no processes: Order,
// UpdateLoad and the call reports are driven by hand).
#include "coordinator/routing_policy.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "arbor/v1/generator.pb.h"
#include "common/prefix_hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

const std::vector<std::string> kWorkers = {"w0:1", "w1:1", "w2:1", "w3:1"};

std::unique_ptr<Router> MakeRouter(RoutingPolicy policy, absl::Duration grace = absl::Seconds(5)) {
  RouterOptions options;
  options.policy = policy;
  options.summary_grace = grace;
  // The expectations below are worked out for this weight: one job of load
  // costs half its prompt, so a cached worker wins by one job, not by two.
  options.load_weight = 0.5;
  auto router = Router::Create(options, nullptr);
  EXPECT_TRUE(router.ok()) << router.status();
  return *std::move(router);
}

// A long shared system prompt (`system` picks one of several) and a short
// question of its own.
RouteRequest Job(const std::string& id, int system, const std::string& question = "") {
  std::string text = absl::StrCat("System prompt ", system, ":");
  while (text.size() < 8 * kPrefixChunkBytes) absl::StrAppend(&text, " rules of system ", system);
  return RouteRequest{id, "chatml", absl::StrCat(text, "\n", question.empty() ? id : question)};
}

std::string First(Router& router, const RouteRequest& request,
                  const std::vector<std::string>& healthy = kWorkers,
                  RouteReason* reason = nullptr) {
  return router.Order(request, healthy, reason).front();
}

TEST(RoutingPolicyTest, ParsesPolicyNamesAndRejectsOthersNamingTheFlag) {
  for (const char* name : {"rendezvous", "round_robin", "least_loaded", "prefix_load"}) {
    auto policy = ParseRoutingPolicy(name);
    ASSERT_TRUE(policy.ok()) << name;
    EXPECT_EQ(RoutingPolicyName(*policy), name);
  }
  auto bad = ParseRoutingPolicy("random");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--routing"));
  EXPECT_THAT(bad.status().message(), HasSubstr("prefix_load"));
  RouterOptions options;
  options.load_weight = -1;
  EXPECT_EQ(Router::Create(options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RoutingPolicyTest, RendezvousIsTodaysJobIdHashWhateverTheLoad) {
  auto router = MakeRouter(RoutingPolicy::kRendezvous);
  for (int i = 0; i < 20; ++i) {
    const RouteRequest job = Job(absl::StrCat("job-", i), 0);
    EXPECT_EQ(router->Order(job, kWorkers), RendezvousOrder(job.job_id, kWorkers));
  }
  // Load does not move it.
  const RouteRequest job = Job("job-x", 0);
  const std::string first = RendezvousOrder(job.job_id, kWorkers).front();
  router->UpdateLoad(first, WorkerLoad{.queued_tokens = 1 << 20, .active_requests = 50});
  EXPECT_EQ(First(*router, job), first);
}

TEST(RoutingPolicyTest, RoundRobinTakesTurnsAndStaysPut) {
  auto router = MakeRouter(RoutingPolicy::kRoundRobin);
  std::vector<std::string> firsts;
  for (int i = 0; i < 8; ++i) firsts.push_back(First(*router, Job(absl::StrCat("j", i), 0)));
  EXPECT_THAT(firsts, ElementsAre("w0:1", "w1:1", "w2:1", "w3:1", "w0:1", "w1:1", "w2:1", "w3:1"));
  // A placed job's later calls do not advance the turn.
  RouteReason reason;
  EXPECT_EQ(First(*router, Job("j1", 0), kWorkers, &reason), "w1:1");
  EXPECT_EQ(reason, RouteReason::kSticky);
  EXPECT_EQ(First(*router, Job("j8", 0)), "w0:1");
}

TEST(RoutingPolicyTest, LeastLoadedCountsPlacedJobsAndReportedQueues) {
  auto router = MakeRouter(RoutingPolicy::kLeastLoaded);
  // Four jobs at once spread over the four workers: each placement counts.
  std::vector<std::string> firsts;
  for (int i = 0; i < 4; ++i) firsts.push_back(First(*router, Job(absl::StrCat("j", i), i)));
  EXPECT_THAT(firsts, UnorderedElementsAreArray(kWorkers));
  // A worker reporting requests of other coordinators is avoided by the next job.
  router->JobDone("j0");
  router->JobDone("j1");
  const std::string freed0 = firsts[0], freed1 = firsts[1];
  router->UpdateLoad(freed0, WorkerLoad{.queued_tokens = 100000, .active_requests = 3});
  EXPECT_EQ(First(*router, Job("j4", 0)), freed1);
  EXPECT_EQ(router->ActiveJobs()[freed1], 1);
  EXPECT_EQ(router->ActiveJobs().count(freed0), 0u);
  // Between equal counts the shorter reported queue wins.
  router->JobDone("j2");
  router->JobDone("j3");
  router->JobDone("j4");
  for (const auto& w : kWorkers) {
    router->UpdateLoad(w, WorkerLoad{.queued_tokens = w == firsts[3] ? 0 : 500});
  }
  EXPECT_EQ(First(*router, Job("j5", 0)), firsts[3]);
}

TEST(RoutingPolicyTest, PrefixLoadSendsASharedSystemPromptToOneWorker) {
  auto router = MakeRouter(RoutingPolicy::kPrefixLoad);
  const std::string home = First(*router, Job("a0", 7));
  router->JobDone("a0");
  // Later jobs with the same system prompt (other questions) follow it ...
  for (int i = 1; i < 6; ++i) {
    EXPECT_EQ(First(*router, Job(absl::StrCat("a", i), 7)), home) << i;
    EXPECT_GT(router->ExpectedHitTokens(Job("probe", 7), home), 0);
    router->JobDone(absl::StrCat("a", i));
  }
  EXPECT_EQ(router->ExpectedHitTokens(Job("probe", 7), "w9:1"), 0);
  // ... and a job with another system prompt goes elsewhere while a7 runs.
  EXPECT_EQ(First(*router, Job("a7", 7)), home);
  EXPECT_NE(First(*router, Job("b0", 3)), home);
}

TEST(RoutingPolicyTest, PrefixLoadWithoutSharedPrefixesBalancesLikeLeastLoaded) {
  // Questions that share nothing: prefix_load is load alone, and between
  // equal counts the shorter reported queue wins (not rendezvous order,
  // which would pile every tie onto the same worker).
  auto router = MakeRouter(RoutingPolicy::kPrefixLoad);
  std::vector<std::string> firsts;
  for (int i = 0; i < 4; ++i) {
    firsts.push_back(First(*router, RouteRequest{absl::StrCat("u", i), "chatml",
                                                 absl::StrCat("Problem ", i, ": unique")}));
  }
  EXPECT_THAT(firsts, UnorderedElementsAreArray(kWorkers));
  for (int i = 0; i < 4; ++i) router->JobDone(absl::StrCat("u", i));
  for (const auto& w : kWorkers) {
    router->UpdateLoad(w, WorkerLoad{.queued_tokens = w == firsts[2] ? 0 : 500});
  }
  EXPECT_EQ(First(*router, RouteRequest{"u4", "chatml", "Problem 4: unique"}), firsts[2]);
}

TEST(RoutingPolicyTest, PrefixLoadIgnoresMatchesShorterThanAKvBlock) {
  // One 64-byte chunk at 0.2 tokens a byte is under a 16-token block: the
  // worker's cache could share none of it, so the idle worker wins.
  RouterOptions options;
  options.policy = RoutingPolicy::kPrefixLoad;
  options.load_weight = 0.5;
  options.initial_tokens_per_byte = 0.2;
  auto created = Router::Create(options, nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  Router& router = **created;
  const std::string text(2 * kPrefixChunkBytes, 'x');
  const std::vector<uint64_t> keys = PrefixChunkKeys("chatml", text);
  ASSERT_EQ(keys.size(), 2u);
  arbor::v1::GeneratorInfo info;
  info.set_prefix_key_chunk_bytes(kPrefixChunkBytes);
  info.set_kv_block_size(16);
  info.add_cached_prefix_keys(keys[0]);
  info.set_active_requests(1);
  router.UpdateLoad("w0:1", WorkerLoadFromInfo(info));
  for (const char* w : {"w1:1", "w2:1", "w3:1"}) {
    router.UpdateLoad(w, WorkerLoad{.queued_tokens = 0, .active_requests = 1});
  }
  // Equal load everywhere: the sub-block match alone does not pick w0 ...
  const std::vector<std::string> order =
      router.Order(RouteRequest{"s0", "chatml", text + " tail"}, kWorkers);
  EXPECT_EQ(order, RendezvousOrder("s0", kWorkers));
  // ... while two chunks (25.6 tokens: one whole block) do.
  info.add_cached_prefix_keys(keys[1]);
  router.UpdateLoad("w0:1", WorkerLoadFromInfo(info));
  EXPECT_EQ(First(router, RouteRequest{"s1", "chatml", text + " tail"}), "w0:1");
}

TEST(RoutingPolicyTest, PrefixLoadSpillsWhenTheCachedWorkerIsTooBusy) {
  auto router = MakeRouter(RoutingPolicy::kPrefixLoad);
  const std::string home = First(*router, Job("a0", 1));
  // While a0 runs, a1 still prefers the cache (hit ~ prompt > 0.5 * one job).
  EXPECT_EQ(First(*router, Job("a1", 1)), home);
  // With two jobs there the load penalty (0.5 * 2 jobs) outweighs the hit.
  const std::string spill = First(*router, Job("a2", 1));
  EXPECT_NE(spill, home);
  // Requests the workers report (other coordinators') count as load too.
  router->JobDone("a0");
  router->JobDone("a1");
  router->JobDone("a2");
  router->UpdateLoad(home, WorkerLoad{.queued_tokens = 5000, .active_requests = 20});
  router->UpdateLoad(spill, WorkerLoad{.queued_tokens = 5000, .active_requests = 20});
  const std::string third = First(*router, Job("a3", 1));
  EXPECT_NE(third, home);
  EXPECT_NE(third, spill);
  // Once the queue drains the cached workers win again.
  router->JobDone("a3");
  router->UpdateLoad(home, WorkerLoad{});
  router->UpdateLoad(spill, WorkerLoad{});
  router->UpdateLoad(third, WorkerLoad{});
  const std::string again = First(*router, Job("a4", 1));
  EXPECT_TRUE(again == home || again == spill || again == third);
  EXPECT_GT(router->ExpectedHitTokens(Job("probe", 1), again), 0);
}

TEST(RoutingPolicyTest, TheWorkersCacheSummaryCorrectsTheIndex) {
  auto router = MakeRouter(RoutingPolicy::kPrefixLoad, /*grace=*/absl::ZeroDuration());
  const std::string home = First(*router, Job("a0", 5));
  router->JobDone("a0");
  ASSERT_GT(router->ExpectedHitTokens(Job("probe", 5), home), 0);
  // The worker lists only the first two chunks: it evicted the rest.
  const std::vector<uint64_t> keys = PrefixChunkKeys("chatml", Job("probe", 5).prompt_text);
  router->UpdateLoad(home, WorkerLoad{.has_summary = true,
                                      .cached_prefix_keys = {keys[0], keys[1]}});
  const double partial = router->ExpectedHitTokens(Job("probe", 5), home);
  EXPECT_GT(partial, 0);
  // Then nothing: the index forgets it, and a worker without the summary
  // field changes nothing.
  router->UpdateLoad(home, WorkerLoad{.has_summary = true});
  EXPECT_EQ(router->ExpectedHitTokens(Job("probe", 5), home), 0);
  // A worker listing keys this router never sent (another coordinator did)
  // attracts the job.
  const std::string other = home == "w0:1" ? "w1:1" : "w0:1";
  router->UpdateLoad(other, WorkerLoad{.has_summary = true, .cached_prefix_keys = keys});
  EXPECT_EQ(First(*router, Job("a1", 5)), other);
}

TEST(RoutingPolicyTest, SummaryGraceKeepsPrefixesStillBeingPrefilled) {
  auto router = MakeRouter(RoutingPolicy::kPrefixLoad, /*grace=*/absl::Hours(1));
  const std::string home = First(*router, Job("a0", 2));
  router->UpdateLoad(home, WorkerLoad{.has_summary = true});  // not cached yet
  EXPECT_GT(router->ExpectedHitTokens(Job("probe", 2), home), 0);
}

TEST(RoutingPolicyTest, StickyWhileHealthyAndFailoverMovesTheJob) {
  for (RoutingPolicy policy : {RoutingPolicy::kRendezvous, RoutingPolicy::kRoundRobin,
                               RoutingPolicy::kLeastLoaded, RoutingPolicy::kPrefixLoad}) {
    SCOPED_TRACE(RoutingPolicyName(policy));
    auto router = MakeRouter(policy);
    RouteReason reason;
    const std::vector<std::string> order = router->Order(Job("job", 0), kWorkers, &reason);
    EXPECT_EQ(reason, RouteReason::kNew);
    EXPECT_THAT(order, UnorderedElementsAreArray(kWorkers));
    const std::string placed = order.front();
    router->CallSucceeded("job", placed);
    // Other jobs and load reports do not move it.
    for (int i = 0; i < 6; ++i) First(*router, Job(absl::StrCat("other", i), 0));
    router->UpdateLoad(placed, WorkerLoad{.queued_tokens = 1 << 20, .active_requests = 50});
    for (int step = 0; step < 3; ++step) {
      EXPECT_EQ(First(*router, Job("job", 0), kWorkers, &reason), placed);
      EXPECT_EQ(reason, RouteReason::kSticky);
    }
    // Its worker fails: the order's next worker is tried and, once it
    // answers, the job sticks there.
    router->CallFailed("job", placed);
    std::vector<std::string> healthy;
    for (const auto& w : kWorkers) {
      if (w != placed) healthy.push_back(w);
    }
    const std::vector<std::string> failover = router->Order(Job("job", 0), healthy, &reason);
    EXPECT_EQ(reason, RouteReason::kMoved);
    EXPECT_THAT(failover, UnorderedElementsAreArray(healthy));
    router->CallSucceeded("job", failover[1]);  // failover[0] failed too
    EXPECT_EQ(router->PlacementOf("job"), failover[1]);
    // The first worker is back: the job stays where it is.
    EXPECT_EQ(First(*router, Job("job", 0), kWorkers, &reason), failover[1]);
    EXPECT_EQ(reason, RouteReason::kSticky);
    router->JobDone("job");
    EXPECT_EQ(router->PlacementOf("job"), "");
  }
}

TEST(RoutingPolicyTest, AFailedWorkerLosesItsIndexedPrefixes) {
  auto router = MakeRouter(RoutingPolicy::kPrefixLoad);
  const std::string home = First(*router, Job("a0", 4));
  ASSERT_GT(router->ExpectedHitTokens(Job("probe", 4), home), 0);
  router->CallFailed("a0", home);
  EXPECT_EQ(router->ExpectedHitTokens(Job("probe", 4), home), 0);
  EXPECT_EQ(router->PlacementOf("a0"), "");
  EXPECT_TRUE(router->ActiveJobs().empty());
}

TEST(RoutingPolicyTest, WorkerLoadFromInfoReadsTheNewFields) {
  arbor::v1::GeneratorInfo info;
  info.set_queued_tokens(120);
  info.set_running_seqs(3);
  info.set_waiting_seqs(2);
  info.set_active_requests(4);
  info.set_kv_blocks_free(10);
  info.set_kv_blocks_cached(7);
  info.add_cached_prefix_keys(11);
  info.add_cached_prefix_keys(12);
  info.set_prefix_key_chunk_bytes(kPrefixChunkBytes);
  // Through the wire format, as a poll receives it.
  arbor::v1::GeneratorInfo parsed;
  ASSERT_TRUE(parsed.ParseFromString(info.SerializeAsString()));
  WorkerLoad load = WorkerLoadFromInfo(parsed);
  EXPECT_EQ(load.queued_tokens, 120);
  EXPECT_EQ(load.running_seqs, 3);
  EXPECT_EQ(load.waiting_seqs, 2);
  EXPECT_EQ(load.active_requests, 4);
  EXPECT_EQ(load.kv_blocks_free, 10);
  EXPECT_EQ(load.kv_blocks_cached, 7);
  EXPECT_TRUE(load.has_summary);
  EXPECT_THAT(load.cached_prefix_keys, ElementsAreArray({11ull, 12ull}));
  // Another chunk size (or none: an older worker) is no summary at all.
  parsed.set_prefix_key_chunk_bytes(0);
  load = WorkerLoadFromInfo(parsed);
  EXPECT_FALSE(load.has_summary);
  EXPECT_TRUE(load.cached_prefix_keys.empty());
}

}  // namespace
}  // namespace arbor::coordinator
