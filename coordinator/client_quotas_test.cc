#include "coordinator/client_quotas.h"

#include <memory>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::coordinator {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<ClientQuotas> Make(int max_jobs, int64_t max_tokens, absl::Time* now) {
  auto quotas = ClientQuotas::Create({max_jobs, max_tokens});
  EXPECT_TRUE(quotas.ok()) << quotas.status();
  (*quotas)->set_clock_for_testing([now] { return *now; });
  return *std::move(quotas);
}

TEST(ClientQuotasTest, ConcurrentJobsPerClientAreCappedAndReleased) {
  absl::Time now = absl::FromUnixSeconds(1000);
  auto quotas = Make(2, 0, &now);
  auto a1 = quotas->Admit("token:alice");
  auto a2 = quotas->Admit("token:alice");
  ASSERT_TRUE(a1.ok() && a2.ok());
  const absl::Status third = quotas->Admit("token:alice").status();
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.message(), HasSubstr("--max_jobs_per_client (2)"));
  EXPECT_THAT(third.message(), HasSubstr("token:alice"));
  // Another client is not affected by alice's jobs.
  auto b1 = quotas->Admit("token:bob");
  EXPECT_TRUE(b1.ok());
  EXPECT_EQ(quotas->jobs("token:alice"), 2);
  a1->reset();
  EXPECT_EQ(quotas->jobs("token:alice"), 1);
  EXPECT_TRUE(quotas->Admit("token:alice").ok());  // released again at once
}

TEST(ClientQuotasTest, TokensPerMinuteSlideOut) {
  absl::Time now = absl::FromUnixSeconds(1000);
  auto quotas = Make(0, 100, &now);
  {
    auto lease = quotas->Admit("peer:10.0.0.1");
    ASSERT_TRUE(lease.ok());
    (*lease)->Charge(60);
  }
  now += absl::Seconds(20);
  {
    auto lease = quotas->Admit("peer:10.0.0.1");  // 60 < 100: admitted
    ASSERT_TRUE(lease.ok());
    (*lease)->Charge(50);
  }
  EXPECT_EQ(quotas->tokens_last_minute("peer:10.0.0.1"), 110);
  const absl::Status over = quotas->Admit("peer:10.0.0.1").status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("used 110 tokens in the last minute"));
  EXPECT_THAT(over.message(), HasSubstr("--max_tokens_per_minute_per_client is 100"));
  EXPECT_THAT(over.message(), HasSubstr("retry in 40s"));
  EXPECT_TRUE(quotas->Admit("peer:10.0.0.2").ok());
  // The first charge leaves the window after 60 s: 50 < 100.
  now += absl::Seconds(41);
  EXPECT_EQ(quotas->tokens_last_minute("peer:10.0.0.1"), 50);
  EXPECT_TRUE(quotas->Admit("peer:10.0.0.1").ok());
}

TEST(ClientQuotasTest, IdleClientsAreForgotten) {
  absl::Time now = absl::FromUnixSeconds(1000);
  auto quotas = Make(1, 1000, &now);
  for (int i = 0; i < 100; ++i) {
    auto lease = quotas->Admit("peer:10.0.0." + std::to_string(i));
    ASSERT_TRUE(lease.ok());
    if (i % 2 == 0) (*lease)->Charge(5);
  }
  EXPECT_EQ(quotas->tracked_clients(), 50u);  // those with tokens in the window
  now += absl::Minutes(2);
  auto lease = quotas->Admit("peer:10.0.0.0");  // expires its own charges
  ASSERT_TRUE(lease.ok());
  lease->reset();
  EXPECT_EQ(quotas->tokens_last_minute("peer:10.0.0.2"), 0);
  EXPECT_LE(quotas->tracked_clients(), 50u);
  EXPECT_EQ(quotas->jobs("peer:10.0.0.0"), 0);
}

TEST(ClientQuotasTest, RefusalsDoNotLeakEntries) {
  absl::Time now = absl::FromUnixSeconds(1000);
  auto quotas = Make(1, 0, &now);
  auto held = quotas->Admit("a");
  ASSERT_TRUE(held.ok());
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(quotas->Admit("a").ok());
  EXPECT_EQ(quotas->jobs("a"), 1);
  held->reset();
  EXPECT_EQ(quotas->tracked_clients(), 0u);
}

TEST(ClientQuotasTest, NegativeLimitsAreRefused) {
  EXPECT_THAT(ClientQuotas::Create({-1, 0}).status().message(),
              HasSubstr("max_jobs_per_client (-1)"));
  EXPECT_THAT(ClientQuotas::Create({0, -5}).status().message(),
              HasSubstr("max_tokens_per_minute_per_client (-5)"));
}

TEST(ClientQuotasTest, ConcurrentAdmitsNeverExceedTheCap) {
  auto quotas = *ClientQuotas::Create({3, 0});
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto lease = quotas->Admit("c");
        if (!lease.ok()) continue;
        const int n = ++inside;
        int seen = most.load();
        while (n > seen && !most.compare_exchange_weak(seen, n)) {
        }
        --inside;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(quotas->tracked_clients(), 0u);
}

}  // namespace
}  // namespace arbor::coordinator
