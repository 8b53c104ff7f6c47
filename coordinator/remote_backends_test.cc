// RemoteGenerator/RemoteScorer against real in-process gRPC servers on
// loopback: a call on a slow endpoint is hedged after hedge_after, a call on
// an endpoint that is ejected while it runs is hedged at once, the loser is
// cancelled, and a pool with no routable verifier fails Score at once.
#include "coordinator/remote_backends.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "coordinator/testing/black_hole.h"
#include "coordinator/testing/world_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::coordinator {
namespace {

using testing::ArithServiceOptions;
using testing::BlackHole;
using ::testing::HasSubstr;
using testing::WorldServer;

PoolOptions FastPool(const std::string& targets) {
  PoolOptions options;
  options.targets = targets;
  options.health_interval = absl::Milliseconds(50);
  options.health_timeout = absl::Milliseconds(300);
  return options;
}

// A job id whose rendezvous order puts `first` first.
std::string JobIdFirstOn(const std::string& first, const std::vector<std::string>& all) {
  for (int i = 0;; ++i) {
    const std::string id = "job-" + std::to_string(i);
    if (RendezvousOrder(id, all).front() == first) return id;
  }
}

ArithServiceOptions Slow(absl::Duration delay) {
  ArithServiceOptions options;
  options.extend_delay = delay;
  options.score_delay = delay;
  return options;
}

class HedgingTest : public ::testing::Test {
 protected:
  // `slow` answers after 30 s; `fast` at once. Jobs start on `slow`.
  void SetUp() override {
    slow_ = std::make_unique<WorldServer>(Slow(absl::Seconds(30)));
    fast_ = std::make_unique<WorldServer>();
    auto pool = EndpointPool::Create(FastPool(slow_->address() + "," + fast_->address()),
                                     GeneratorModelProbe());
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_EQ(pool_->Route("x", "arith-1").size(), 2u);
    options_.job_id = JobIdFirstOn(slow_->address(), {slow_->address(), fast_->address()});
    options_.model = "arith-1";
    options_.question = "add 3 5 7 11";
    options_.call_timeout = absl::Seconds(60);
    options_.on_hedge = [this](std::string_view reason) { reasons_.emplace_back(reason); };
  }

  static search::ExtendRequest Request() {
    search::ExtendRequest request;
    request.branches.push_back(search::BranchInput{{}, 2, 7});
    request.sampling.temperature = 0;
    return request;
  }

  // Waits until the slow server saw the cancellation of a call.
  bool SlowSawCancel() {
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (slow_->services->cancelled_calls() < 1 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return slow_->services->cancelled_calls() >= 1;
  }

  std::unique_ptr<WorldServer> slow_, fast_;
  std::unique_ptr<EndpointPool> pool_;
  CallCanceller canceller_;
  RemoteJobOptions options_;
  std::vector<std::string> reasons_;
};

TEST_F(HedgingTest, SlowCallIsHedgedAfterHedgeAfter) {
  options_.hedge_after = absl::Milliseconds(100);
  RemoteGenerator generator(*pool_, canceller_, options_);
  const absl::Time start = absl::Now();
  auto result = generator.Extend(Request());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));  // not the slow server's 30 s
  EXPECT_EQ(result->outputs.size(), 2u);
  EXPECT_EQ(generator.stats().last_endpoint, fast_->address());
  EXPECT_EQ(generator.stats().hedges, 1);
  EXPECT_EQ(generator.stats().calls, 2);
  EXPECT_EQ(reasons_, std::vector<std::string>{"slow"});
  EXPECT_TRUE(SlowSawCancel()) << "the losing call was not cancelled";
  // Both endpoints stay routable: slow is not failed.
  EXPECT_TRUE(pool_->Routable(slow_->address()));

  // The hedged answer is the one the fast endpoint gives alone.
  RemoteJobOptions direct = options_;
  direct.job_id = JobIdFirstOn(fast_->address(), {slow_->address(), fast_->address()});
  RemoteGenerator alone(*pool_, canceller_, direct);
  auto expected = alone.Extend(Request());
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(expected->outputs.size(), result->outputs.size());
  for (size_t i = 0; i < expected->outputs.size(); ++i) {
    EXPECT_EQ(expected->outputs[i].text, result->outputs[i].text);
  }
  EXPECT_EQ(alone.stats().hedges, 0);
}

TEST_F(HedgingTest, CallOnAnEjectedEndpointIsHedgedAtOnce) {
  options_.hedge_after = absl::ZeroDuration();  // only ejection hedges
  RemoteGenerator generator(*pool_, canceller_, options_);
  std::thread ejector([this] {
    absl::SleepFor(absl::Milliseconds(200));
    pool_->Lost(slow_->address(), absl::DeadlineExceededError("another call timed out"));
  });
  const absl::Time start = absl::Now();
  auto result = generator.Extend(Request());
  ejector.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_EQ(generator.stats().last_endpoint, fast_->address());
  EXPECT_EQ(generator.stats().hedges, 1);
  EXPECT_EQ(reasons_, std::vector<std::string>{"ejected"});
  EXPECT_TRUE(SlowSawCancel());
}

TEST_F(HedgingTest, ScoreIsHedgedToo) {
  PoolOptions verifiers = FastPool(slow_->address() + "," + fast_->address());
  verifiers.name = "verifiers";
  auto pool = EndpointPool::Create(verifiers, VerifierModelProbe());
  ASSERT_TRUE(pool.ok()) << pool.status();
  options_.model = "arith-prm";
  options_.hedge_after = absl::Milliseconds(100);
  RemoteScorer scorer(**pool, canceller_, options_);
  search::ScoreRequest request;
  request.question = "add 3 5 7 11";
  const std::vector<std::string> steps = {"3 + 5 = 8", "8 + 7 = 15"};
  request.candidates.push_back(steps);
  auto result = scorer.Score(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(SlowSawCancel());
  ASSERT_EQ(result->scores.size(), 1u);
  EXPECT_EQ(result->scores[0].size(), 2u);
  EXPECT_EQ(scorer.stats().last_endpoint, fast_->address());
  EXPECT_EQ(scorer.stats().hedges, 1);
}

TEST_F(HedgingTest, CancellingTheJobCancelsEveryAttempt) {
  options_.hedge_after = absl::ZeroDuration();
  RemoteGenerator generator(*pool_, canceller_, options_);
  std::thread cancel([this] {
    absl::SleepFor(absl::Milliseconds(200));
    canceller_.Cancel();
  });
  const absl::Time start = absl::Now();
  auto result = generator.Extend(Request());
  cancel.join();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_TRUE(pool_->Routable(slow_->address()));  // a cancel is not the endpoint's failure
}

TEST(RemoteBackendsTest, HungEndpointIsHedgedWhenItsHealthChecksFail) {
  // Two endpoints, one of which hangs after the pool admitted it: modelled
  // by a slow server whose health checks then stop passing when it is gone.
  auto hung = std::make_unique<WorldServer>(Slow(absl::Seconds(30)));
  WorldServer fast;
  const std::string hung_address = hung->address();
  auto pool =
      EndpointPool::Create(FastPool(hung_address + "," + fast.address()), GeneratorModelProbe());
  ASSERT_TRUE(pool.ok()) << pool.status();
  CallCanceller canceller;
  RemoteJobOptions options;
  options.job_id = JobIdFirstOn(hung_address, {hung_address, fast.address()});
  options.model = "arith-1";
  options.question = "add 3 5 7 11";
  RemoteGenerator generator(**pool, canceller, options);
  std::thread stop([&] {
    absl::SleepFor(absl::Milliseconds(200));
    // Shutting down waits for the in-flight call; health checks fail meanwhile.
    hung->server->Drain(absl::Seconds(10));
  });
  const absl::Time start = absl::Now();
  search::ExtendRequest request;
  request.branches.push_back(search::BranchInput{{}, 1, 3});
  auto result = generator.Extend(request);
  const absl::Duration took = absl::Now() - start;
  stop.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(took, absl::Seconds(10));
  EXPECT_EQ(generator.stats().last_endpoint, fast.address());
  EXPECT_GE(generator.stats().hedges + generator.stats().retries, 1);
}

TEST(RemoteBackendsTest, NoRoutableVerifierFailsAtOnceNamingIt) {
  BlackHole gone;
  PoolOptions options = FastPool(gone.address());
  options.name = "verifiers";
  auto pool = EndpointPool::Create(options, VerifierModelProbe());
  ASSERT_TRUE(pool.ok()) << pool.status();
  CallCanceller canceller;
  RemoteJobOptions job;
  job.job_id = "job-1";
  job.model = "prm";
  RemoteScorer scorer(**pool, canceller, job);
  search::ScoreRequest request;
  request.question = "q";
  const std::vector<std::string> steps = {"s"};
  request.candidates.push_back(steps);
  const absl::Time start = absl::Now();
  auto result = scorer.Score(request);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("no routable verifiers serve model 'prm'"));
  EXPECT_THAT(result.status().message(), HasSubstr(gone.address() + " not routable"));
}

}  // namespace
}  // namespace arbor::coordinator
