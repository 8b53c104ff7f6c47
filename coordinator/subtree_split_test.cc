// Sub-tree placement: SplitSubtrees and SubtreeMap on given branches, the
// Router's lending of idle workers on scripted worker states, and a job's
// RemoteGenerator split over real in-process ArithWorld servers on loopback
// (the same outputs as on one worker, sticky sub-trees, a lent worker lost).
#include "coordinator/subtree_split.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/remote_backends.h"
#include "coordinator/routing_policy.h"
#include "coordinator/testing/world_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

std::vector<absl::Span<const int32_t>> Spans(const std::vector<std::vector<int32_t>>& suffixes) {
  return std::vector<absl::Span<const int32_t>>(suffixes.begin(), suffixes.end());
}

TEST(SplitSubtreesTest, KeepsEachSubTreeTogetherWhateverTheBranchOrder) {
  // Two sub-trees (first step 1 or 5), their branches interleaved.
  const std::vector<std::vector<int32_t>> suffixes = {{1, 2, 3}, {5, 6, 7}, {1, 2, 4},
                                                      {5, 6, 8}, {1, 9},    {5, 0}};
  const auto parts = SplitSubtrees(Spans(suffixes), {1, 1, 1, 1, 1, 1}, 2);
  EXPECT_THAT(parts, UnorderedElementsAre(ElementsAre(0, 2, 4), ElementsAre(1, 3, 5)));
}

TEST(SplitSubtreesTest, CutsHighInTheTree) {
  // Sub-trees 1.1 and 1.2 under 1: the cut between them shares one token, the
  // cuts inside them two.
  const std::vector<std::vector<int32_t>> suffixes = {{1, 1, 1}, {1, 1, 2}, {1, 2, 1}, {1, 2, 2}};
  EXPECT_THAT(SplitSubtrees(Spans(suffixes), {1, 1, 1, 1}, 2),
              ElementsAre(ElementsAre(0, 1), ElementsAre(2, 3)));
  // Three parts of four: the top cut, then the balanced one inside a sub-tree.
  const auto three = SplitSubtrees(Spans(suffixes), {1, 1, 1, 1}, 3);
  ASSERT_EQ(three.size(), 3u);
  EXPECT_EQ(three[0].size() + three[1].size() + three[2].size(), 4u);
}

TEST(SplitSubtreesTest, ALoneSubTreeDoesNotUnbalanceTheParts) {
  // Seven branches under 1 and one under 2: the cut at the top would leave
  // 7 against 1, beyond half a share from the balance, so the cut is balanced.
  std::vector<std::vector<int32_t>> suffixes;
  for (int i = 1; i <= 7; ++i) suffixes.push_back({1, i});
  suffixes.push_back({2, 1});
  const auto parts = SplitSubtrees(Spans(suffixes), std::vector<int>(8, 1), 2);
  EXPECT_THAT(parts, ElementsAre(ElementsAre(0, 1, 2, 3), ElementsAre(4, 5, 6, 7)));
}

TEST(SplitSubtreesTest, CountsSharedWholeBlocksOnly) {
  // Five branches under 1 1 and three under 1 2: eight of weight 1, so the
  // balanced cut is after four, and any cut within half a share (2..6) may go.
  std::vector<std::vector<int32_t>> suffixes;
  for (int i = 1; i <= 5; ++i) suffixes.push_back({1, 1, i});
  for (int i = 1; i <= 3; ++i) suffixes.push_back({1, 2, i});
  const std::vector<int> weights(8, 1);
  const auto five_three = ElementsAre(ElementsAre(0, 1, 2, 3, 4), ElementsAre(5, 6, 7));
  const auto balanced = ElementsAre(ElementsAre(0, 1, 2, 3), ElementsAre(4, 5, 6, 7));
  // Counting tokens, the cut between the sub-trees (one shared token) wins.
  EXPECT_THAT(SplitSubtrees(Spans(suffixes), weights, 2), five_three);
  // A 30-token prompt and blocks of 16: two shared suffix tokens fill a
  // block, one does not, so the sub-trees' cut still saves a block.
  EXPECT_THAT(SplitSubtrees(Spans(suffixes), weights, 2, 30, 16), five_three);
  // A 32-token prompt: no branch shares a block beyond the prompt's, every
  // cut costs the same, and the balanced one goes.
  EXPECT_THAT(SplitSubtrees(Spans(suffixes), weights, 2, 32, 16), balanced);
}

TEST(SplitSubtreesTest, WeighsBranchesBySamples) {
  // Branch 0 asks 6 samples, the others 2 each: 6 | 2 + 2 + 2 is the balance.
  const std::vector<std::vector<int32_t>> suffixes = {{1}, {2}, {3}, {4}};
  EXPECT_THAT(SplitSubtrees(Spans(suffixes), {6, 2, 2, 2}, 2),
              ElementsAre(ElementsAre(0), ElementsAre(1, 2, 3)));
}

TEST(SplitSubtreesTest, EveryBranchInOnePartAndNoEmptyPart) {
  const std::vector<std::vector<int32_t>> suffixes = {{}, {}, {3}};
  const auto parts = SplitSubtrees(Spans(suffixes), {1, 1, 1}, 8);  // more parts than branches
  ASSERT_EQ(parts.size(), 3u);
  std::vector<int> all;
  for (const auto& p : parts) {
    EXPECT_FALSE(p.empty());
    all.insert(all.end(), p.begin(), p.end());
  }
  EXPECT_THAT(all, UnorderedElementsAre(0, 1, 2));
  EXPECT_THAT(SplitSubtrees(Spans(suffixes), {1, 1, 1}, 1), ElementsAre(ElementsAre(0, 1, 2)));
  EXPECT_THAT(SplitSubtrees({}, {}, 2), IsEmpty());
}

TEST(SubtreeMapTest, ABranchFollowsItsLongestRecordedAncestor) {
  SubtreeMap map;
  EXPECT_EQ(map.Find(std::vector<int32_t>{1, 2}), "");
  map.Record(std::vector<int32_t>{1, 2}, "a:1");
  map.Record(std::vector<int32_t>{1, 2, 3, 4}, "b:1");
  map.Record(std::vector<int32_t>{}, "c:1");  // a prefix of everything: not kept
  EXPECT_EQ(map.size(), 2u);
  EXPECT_EQ(map.Find(std::vector<int32_t>{1, 2}), "a:1");           // itself
  EXPECT_EQ(map.Find(std::vector<int32_t>{1, 2, 3}), "a:1");        // a child of 1 2
  EXPECT_EQ(map.Find(std::vector<int32_t>{1, 2, 3, 4, 5}), "b:1");  // the longer one wins
  EXPECT_EQ(map.Find(std::vector<int32_t>{1, 3}), "");
  EXPECT_EQ(map.Find(std::vector<int32_t>{}), "");
  map.Forget("b:1");
  EXPECT_EQ(map.Find(std::vector<int32_t>{1, 2, 3, 4, 5}), "a:1");
}

TEST(SubtreeMapTest, KeepsTheNewestEntriesWithinItsBound) {
  SubtreeMap map(/*max_entries=*/8);
  for (int32_t i = 0; i < 40; ++i) map.Record(std::vector<int32_t>{i}, absl::StrCat("w", i));
  EXPECT_LE(map.size(), 8u);
  EXPECT_EQ(map.Find(std::vector<int32_t>{39}), "w39");
  EXPECT_EQ(map.Find(std::vector<int32_t>{0}), "");
}

// The router's side on scripted worker states.
const std::vector<std::string> kWorkers = {"w0:1", "w1:1", "w2:1", "w3:1"};

std::unique_ptr<Router> SplittingRouter(int split_outputs) {
  RouterOptions options;
  options.split_outputs = split_outputs;
  auto router = Router::Create(options, nullptr);
  EXPECT_TRUE(router.ok()) << router.status();
  return *std::move(router);
}

RouteRequest Job(const std::string& id) { return RouteRequest{id, "chatml", "add 1 2 3 " + id}; }

TEST(SubtreeWorkersTest, OffByDefaultAndBelowTheThreshold) {
  EXPECT_EQ(RouterOptions().split_outputs, 0);
  auto off = SplittingRouter(0);
  const std::string home = off->Order(Job("a"), kWorkers).front();
  EXPECT_THAT(off->SubtreeWorkers("a", home, 1000, 1 << 20, kWorkers, 3), IsEmpty());

  auto router = SplittingRouter(8);
  const std::string placed = router->Order(Job("b"), kWorkers).front();
  EXPECT_THAT(router->SubtreeWorkers("b", placed, 8, 64, kWorkers, 3), IsEmpty());
  EXPECT_THAT(router->SubtreeWorkersOf("b"), IsEmpty());
  RouterOptions bad;
  bad.split_outputs = -1;
  EXPECT_EQ(Router::Create(bad, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SubtreeWorkersTest, LendsOnlyIdleWorkersAndCountsThemAsTheJobsLoad) {
  auto router = SplittingRouter(8);
  const std::string home = router->Order(Job("big"), kWorkers).front();
  std::vector<std::string> others;
  for (const std::string& w : kWorkers) {
    if (w != home) others.push_back(w);
  }
  // others[0] runs a request of another coordinator, others[1] has queued
  // tokens; only others[2] is idle.
  router->UpdateLoad(others[0], WorkerLoad{.active_requests = 1});
  router->UpdateLoad(others[1], WorkerLoad{.queued_tokens = 300});
  // 40 outputs: 5 shares of 8, but one idle worker.
  EXPECT_THAT(router->SubtreeWorkers("big", home, 40, 40 * 16, kWorkers, 10),
              ElementsAre(others[2]));
  EXPECT_THAT(router->SubtreeWorkersOf("big"), ElementsAre(others[2]));
  // The lent worker is the job's load: not idle for the next job, and a new
  // job avoids it like any busy worker.
  EXPECT_EQ(router->ActiveJobs()[others[2]], 1);
  const std::string home2 = router->Order(Job("big2"), {home, others[2]}).front();
  EXPECT_THAT(router->SubtreeWorkers("big2", home2, 40, 640, kWorkers, 10), IsEmpty());
  // Once the others are idle again and big2 is over, the job gets more
  // (never the same twice).
  router->JobDone("big2");
  router->UpdateLoad(others[0], WorkerLoad{});
  router->UpdateLoad(others[1], WorkerLoad{});
  const auto more = router->SubtreeWorkers("big", home, 40, 640, kWorkers, 10);
  EXPECT_THAT(more, UnorderedElementsAre(others[0], others[1]));
  // The job's end gives them back.
  router->JobDone("big");
  EXPECT_TRUE(router->ActiveJobs().empty());
}

TEST(SubtreeWorkersTest, AJobTakesNoMoreThanItsShareBesideOtherJobs) {
  // Two jobs on four workers: each may hold two workers, its own and one
  // lent, however many outputs it asks, so the one that outgrows its worker
  // first leaves an idle worker to the other.
  auto router = SplittingRouter(8);
  const std::string home_a = router->Order(Job("a"), kWorkers).front();
  const std::string home_b = router->Order(Job("b"), kWorkers).front();
  ASSERT_NE(home_a, home_b);  // the second job avoids the first's worker
  const auto lent_a = router->SubtreeWorkers("a", home_a, 64, 64 * 16, kWorkers, 10);
  ASSERT_EQ(lent_a.size(), 1u);
  EXPECT_THAT(router->SubtreeWorkers("a", home_a, 64, 64 * 16, kWorkers, 10), IsEmpty());
  const auto lent_b = router->SubtreeWorkers("b", home_b, 64, 64 * 16, kWorkers, 10);
  ASSERT_EQ(lent_b.size(), 1u);
  EXPECT_NE(lent_b[0], lent_a[0]);
  // Alone again, a job's share is the whole pool: b's worker and the one lent
  // to it are idle now, and a takes both.
  router->JobDone("b");
  EXPECT_THAT(router->SubtreeWorkers("a", home_a, 64, 64 * 16, kWorkers, 10),
              UnorderedElementsAre(home_b, lent_b[0]));
  EXPECT_EQ(router->SubtreeWorkersOf("a").size(), 3u);
}

TEST(SubtreeWorkersTest, AsManyWorkersAsShares) {
  auto router = SplittingRouter(8);
  const std::string home = router->Order(Job("j"), kWorkers).front();
  // 17 outputs = 3 shares of 8: two more workers, though three are idle.
  EXPECT_EQ(router->SubtreeWorkers("j", home, 17, 17 * 16, kWorkers, 10).size(), 2u);
  auto capped = SplittingRouter(8);
  const std::string home2 = capped->Order(Job("k"), kWorkers).front();
  // No more than the caller can use (its branches less one).
  EXPECT_EQ(capped->SubtreeWorkers("k", home2, 64, 1024, kWorkers, 1).size(), 1u);
}

TEST(SubtreeWorkersTest, AShortKvPoolSplitsBelowTheOutputThreshold) {
  auto router = SplittingRouter(64);
  const std::string home = router->Order(Job("kv"), kWorkers).front();
  // 10 free + 6 cached blocks of 16 tokens: 256 tokens it can take.
  router->UpdateLoad(home,
                     WorkerLoad{.kv_blocks_free = 10, .kv_blocks_cached = 6, .kv_block_size = 16});
  EXPECT_THAT(router->SubtreeWorkers("kv", home, 8, 256, kWorkers, 7), IsEmpty());
  EXPECT_EQ(router->SubtreeWorkers("kv", home, 8, 257, kWorkers, 7).size(), 1u);
}

TEST(SubtreeWorkersTest, AFailedLentWorkerIsGivenBack) {
  auto router = SplittingRouter(2);
  const std::string home = router->Order(Job("f"), kWorkers).front();
  const auto lent = router->SubtreeWorkers("f", home, 4, 64, kWorkers, 1);
  ASSERT_EQ(lent.size(), 1u);
  router->CallFailed("f", lent[0]);
  EXPECT_THAT(router->SubtreeWorkersOf("f"), IsEmpty());
  EXPECT_EQ(router->ActiveJobs().count(lent[0]), 0u);
  EXPECT_EQ(router->PlacementOf("f"), home);  // the job itself stays
}

// RemoteGenerator over three ArithWorld servers.
class SplitGeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string targets;
    for (int i = 0; i < 3; ++i) {
      worlds_.push_back(std::make_unique<testing::WorldServer>());
      targets += (i ? "," : "") + worlds_.back()->address();
    }
    PoolOptions pool_options;
    pool_options.targets = targets;
    pool_options.health_interval = absl::Milliseconds(50);
    pool_options.health_timeout = absl::Milliseconds(300);
    auto pool = EndpointPool::Create(pool_options, GeneratorModelProbe());
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_EQ(pool_->Route("x", "arith-1").size(), 3u);
  }

  RemoteJobOptions Options(const std::string& job_id, Router* router) {
    RemoteJobOptions options;
    options.job_id = job_id;
    options.model = "arith-1";
    options.question = "add 3 5 7 11 13";
    options.router = router;
    options.on_subtrees = [this](int n) { subtrees_ += n; };
    return options;
  }

  std::vector<double> ExtendCalls() const {
    std::vector<double> calls;
    for (const auto& w : worlds_) calls.push_back(w->services->calls("Extend"));
    return calls;
  }

  // Three steps of a tree under four roots (first steps of their own, so
  // that the sub-trees differ however the samples come out): two samples of
  // each root, then one of each child and grandchild; a branch's suffix is
  // its tokens so far. Returns every step's outputs as text, in order.
  absl::StatusOr<std::vector<std::string>> Grow(RemoteGenerator& generator,
                                                const std::function<void(int step)>& between = {}) {
    std::vector<std::string> texts;
    std::vector<std::vector<int32_t>> branches;
    for (int root = 0; root < 4; ++root) {
      const std::string step = absl::StrCat("Add 3 to get ", 3 + root, ".\n\n");
      branches.emplace_back(step.begin(), step.end());  // tokens are bytes
    }
    int samples = 2;
    for (int step = 0; step < 3; ++step) {
      if (between) between(step);
      search::ExtendRequest request;
      request.sampling.temperature = 1.0f;
      request.stop.max_step_tokens = 24;
      for (size_t b = 0; b < branches.size(); ++b) {
        request.branches.push_back(
            search::BranchInput{branches[b], samples, 1000 * static_cast<uint64_t>(step) + b});
      }
      absl::StatusOr<search::ExtendResult> result = generator.Extend(request);
      if (!result.ok()) return result.status();
      std::vector<std::vector<int32_t>> next;
      for (const search::StepOutput& out : result->outputs) {
        texts.push_back(absl::StrCat(out.branch_index, "/", out.sample_index, ": ", out.text));
        std::vector<int32_t> child = branches[out.branch_index];
        child.insert(child.end(), out.tokens.begin(), out.tokens.end());
        next.push_back(std::move(child));
      }
      branches = std::move(next);
      samples = 1;
    }
    return texts;
  }

  std::vector<std::unique_ptr<testing::WorldServer>> worlds_;
  std::unique_ptr<EndpointPool> pool_;
  CallCanceller canceller_;
  int subtrees_ = 0;
};

TEST_F(SplitGeneratorTest, SplitSubTreesGiveTheOneWorkerAnswerAndStayPut) {
  auto one = SplittingRouter(0);
  std::vector<std::string> reference;
  {
    RemoteGenerator generator(*pool_, canceller_, Options("tree-ref", one.get()));
    auto texts = Grow(generator);
    ASSERT_TRUE(texts.ok()) << texts.status();
    reference = *texts;
  }
  EXPECT_EQ(subtrees_, 0);
  const std::vector<double> before = ExtendCalls();
  int on_one = 0;
  for (size_t i = 0; i < before.size(); ++i) on_one += before[i] > 0;
  EXPECT_EQ(on_one, 1);  // unsplit: one worker served all three steps

  // Split beyond 2 outputs a worker: step 1 (4 roots, 8 outputs) goes to the
  // job's worker and the two idle ones, each a run of whole sub-trees.
  auto router = SplittingRouter(2);
  RemoteGenerator generator(*pool_, canceller_, Options("tree", router.get()));
  std::vector<std::string> lent_after_step1;
  std::vector<double> calls_after_step1;
  auto texts = Grow(generator, [&](int step) {
    if (step != 1) return;
    lent_after_step1 = router->SubtreeWorkersOf("tree");
    calls_after_step1 = ExtendCalls();
  });
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_EQ(*texts, reference);  // seeds, not workers, decide the tokens
  EXPECT_EQ(lent_after_step1.size(), 2u);
  EXPECT_EQ(subtrees_, 2);
  // Steps 2 and 3: every sub-tree stayed where it was, nothing more was lent
  // (the lent workers are busy with this job): one call a worker a step.
  EXPECT_EQ(router->SubtreeWorkersOf("tree"), lent_after_step1);
  const std::vector<double> after = ExtendCalls();
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(calls_after_step1[i] - before[i], 1) << "worker " << i;
    EXPECT_EQ(after[i] - calls_after_step1[i], 2) << "worker " << i;
  }
  EXPECT_EQ(generator.stats().calls, 3 * 3);
  // The job's end gives the lent workers back.
  router->JobDone("tree");
  EXPECT_TRUE(router->ActiveJobs().empty());
}

TEST_F(SplitGeneratorTest, ALostSubTreeWorkerKeepsTheAnswer) {
  auto one = SplittingRouter(0);
  std::vector<std::string> reference;
  {
    RemoteGenerator generator(*pool_, canceller_, Options("lost-ref", one.get()));
    auto texts = Grow(generator);
    ASSERT_TRUE(texts.ok()) << texts.status();
    reference = *texts;
  }
  auto router = SplittingRouter(2);
  RemoteGenerator generator(*pool_, canceller_, Options("lost", router.get()));
  std::string killed;
  auto texts = Grow(generator, [&](int step) {
    if (step != 1) return;
    // A worker holding a sub-tree goes away before the sub-tree's next step.
    const auto lent = router->SubtreeWorkersOf("lost");
    ASSERT_FALSE(lent.empty());
    killed = lent.front();
    for (auto& w : worlds_) {
      if (w->address() == killed) w->server.reset();
    }
  });
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_FALSE(killed.empty());
  // Whether the call failed there (a retry elsewhere) or the pool ejected the
  // worker first (its sub-tree goes home), the tokens are the same.
  EXPECT_EQ(*texts, reference);
}

}  // namespace
}  // namespace arbor::coordinator
