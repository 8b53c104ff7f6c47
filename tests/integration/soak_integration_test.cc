// Soak: many small jobs through real arbor-coordinator, arbor-worker and
// arbor-verifier processes on loopback (bundled tiny models, CPU backend),
// then checks that nothing leaked: every job succeeded, the worker's and
// verifier's KV blocks in use are back to 0 with no active request, and the
// processes' open files and resident memory did not grow beyond a bound.
// ARBOR_SOAK_JOBS sets the number of jobs (default 1000; bench/soak/run.sh
// runs a longer one). Figures (printed as "figure: ...") go to
// docs/RELIABILITY.md.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/services.h"

namespace arbor::testing {
namespace {

struct Usage {
  int fds = -1;
  int64_t rss_kib = -1;
};

Usage UsageOf(const Service& s) { return {OpenFds(s.process->pid()), RssKib(s.process->pid())}; }

int JobsFromEnv() {
  int jobs = 1000;
  if (const char* v = std::getenv("ARBOR_SOAK_JOBS"); v != nullptr) {
    if (!absl::SimpleAtoi(v, &jobs) || jobs < 1) jobs = 1000;
  }
  return jobs;
}

// Job i: alternately greedy, best-of-2 scored by the PRM, and a two-step
// beam search; tiny budgets so a thousand fit in well under a minute.
arbor::v1::SolveRequest Job(int i) {
  arbor::v1::SolveRequest request;
  request.set_question(absl::StrCat("What is ", i % 50, " + ", i % 7, "?"));
  request.set_seed(i);
  request.mutable_stop()->set_max_step_tokens(6);
  request.mutable_budget()->set_max_generated_tokens(24);
  switch (i % 3) {
    case 0:
      request.mutable_greedy();
      break;
    case 1:
      request.mutable_best_of_n()->set_n(2);
      break;
    default:
      request.mutable_beam_search()->set_n(2);
      request.mutable_beam_search()->set_beam_width(1);
      request.mutable_beam_search()->set_num_iterations(2);
      break;
  }
  return request;
}

TEST(SoakTest, ThousandJobsLeakNothing) {
  setenv("ARBOR_LOG_LEVEL", "ERROR", 1);
  const int jobs = JobsFromEnv();
  auto worker = StartService({BinaryPath("arbor-worker"), "--model=" + ModelsDir() + "/policy",
                              "--threads=1", "--kv_cache_tokens=8192"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto verifier = StartService({BinaryPath("arbor-verifier"), "--model=" + ModelsDir() + "/prm",
                                "--threads=1", "--kv_cache_tokens=8192"});
  ASSERT_TRUE(verifier.ok()) << verifier.status();
  auto coordinator = StartService({BinaryPath("arbor-coordinator"), "--workers=" + worker->address,
                                   "--verifiers=" + verifier->address, "--health_interval_ms=200",
                                   "--max_concurrent_jobs=8"});
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  auto stub = arbor::v1::Reasoning::NewStub(
      grpc::CreateChannel(coordinator->address, grpc::InsecureChannelCredentials()));

  constexpr int kClients = 4;
  auto run = [&](int first, int count, std::atomic<int>& failed) {
    std::atomic<int> next = first;
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&] {
        for (int i = next++; i < first + count; i = next++) {
          grpc::ClientContext context;
          context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
          arbor::v1::SolveResponse response;
          grpc::Status status = stub->Solve(&context, Job(i), &response);
          if (!status.ok() || response.candidates_size() == 0) {
            if (failed++ < 5) ADD_FAILURE() << "job " << i << ": " << status.error_message();
          }
        }
      });
    }
    for (auto& t : clients) t.join();
  };
  // Blocks idle; the caches may keep unreferenced (cached) blocks.
  auto wait_idle = [](const Service& s, std::string* metrics) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (true) {
      *metrics = HttpGet(s.metrics, "/metrics");
      const double used = MetricValue(*metrics, "arbor_engine_kv_blocks", {"state=\"used\""});
      const double active = MetricValue(*metrics, "arbor_engine_active_requests", {});
      if ((used == 0 && active == 0) || absl::Now() >= deadline) return used + active;
      absl::SleepFor(absl::Milliseconds(20));
    }
  };

  // Warm up: the caches fill, gRPC's threads and connections exist.
  std::atomic<int> failed = 0;
  run(0, 60, failed);
  ASSERT_EQ(failed.load(), 0);
  std::string metrics;
  ASSERT_EQ(wait_idle(*worker, &metrics), 0) << metrics;
  ASSERT_EQ(wait_idle(*verifier, &metrics), 0) << metrics;
  const Service* services[] = {&*coordinator, &*worker, &*verifier};
  const char* names[] = {"coordinator", "worker", "verifier"};
  Usage before[3];
  for (int i = 0; i < 3; ++i) before[i] = UsageOf(*services[i]);

  const absl::Time start = absl::Now();
  run(1000, jobs, failed);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(failed.load(), 0) << "of " << jobs << " jobs";

  EXPECT_EQ(wait_idle(*worker, &metrics), 0) << "worker KV blocks in use or requests active\n"
                                             << metrics;
  const double worker_blocks = MetricValue(metrics, "arbor_engine_kv_blocks", {"state=\"used\""});
  EXPECT_EQ(wait_idle(*verifier, &metrics), 0) << "verifier KV blocks in use or requests active\n"
                                               << metrics;
  const double verifier_blocks = MetricValue(metrics, "arbor_engine_kv_blocks", {"state=\"used\""});
  const std::string coordinator_metrics = HttpGet(coordinator->metrics, "/metrics");
  EXPECT_EQ(MetricValue(coordinator_metrics, "arbor_coordinator_jobs_in_flight", {}), 0);
  std::printf(
      "figure: soak: %d jobs in %.1f s, %d failed; KV blocks in use after: worker %.0f, "
      "verifier %.0f\n",
      jobs, absl::ToDoubleSeconds(took), failed.load(), worker_blocks, verifier_blocks);
  for (int i = 0; i < 3; ++i) {
    const Usage after = UsageOf(*services[i]);
    ASSERT_GT(before[i].fds, 0);
    ASSERT_GT(before[i].rss_kib, 0);
    // A leaked connection or file per job would add hundreds of fds, a
    // leaked request or KV block per job tens of MiB; allocator and gRPC
    // pools may move a little.
    EXPECT_LE(after.fds, before[i].fds + 4) << names[i];
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    // (Under AddressSanitizer freed memory waits in its quarantine, up to
    // 256 MiB, so RSS grows without a leak; LeakSanitizer checks instead.
    // ThreadSanitizer's shadow and access history grow with every page and
    // thread the process touches, so there too.)
    EXPECT_LE(after.rss_kib, before[i].rss_kib + 24 * 1024) << names[i];
#endif
    std::printf("figure: soak: %s fds %d -> %d, RSS %.1f -> %.1f MiB\n", names[i], before[i].fds,
                after.fds, before[i].rss_kib / 1024.0, after.rss_kib / 1024.0);
  }
  KillService(*coordinator);
  KillService(*worker);
  KillService(*verifier);
}

}  // namespace
}  // namespace arbor::testing
