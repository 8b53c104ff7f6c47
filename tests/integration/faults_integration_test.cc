// Faults, with the real arbor-worker, arbor-verifier and arbor-coordinator
// processes on loopback and the bundled tiny models (CPU backend):
//  - a worker killed mid-job: the job completes with the answer of a
//    fault-free run for the same seed;
//  - a worker that hangs (SIGSTOP): its job's calls are hedged on another
//    worker once it is ejected, so the job finishes in about a health
//    interval, not --call_timeout_ms;
//  - the verifier killed: a job that needs it fails at once with UNAVAILABLE
//    naming the verifiers; one that does not still runs;
//  - a worker restarted on its port: routable again within a couple of
//    health intervals;
//  - chaos: three workers, one killed and restarted in a loop while a stream
//    of jobs runs: every job completes with the fault-free answer.
// Figures (printed as "figure: ...") go to docs/RELIABILITY.md.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/services.h"

namespace arbor::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kQuestion[] = "What is 12 + 7?";
constexpr int kHealthIntervalMs = 200;

class FaultsTest : public ::testing::Test {
 protected:
  void SetUp() override { setenv("ARBOR_LOG_LEVEL", "ERROR", 1); }
  void TearDown() override {
    // Stopped processes would not die of the Subprocess destructor's SIGKILL
    // until continued; KillService continues them first.
    for (Service& w : workers_) KillService(w);
    KillService(verifier_);
    KillService(coordinator_);
  }

  void Start(int num_workers, std::vector<std::string> coordinator_flags = {}) {
    for (int i = 0; i < num_workers; ++i) {
      auto worker = StartService({BinaryPath("arbor-worker"), "--model=" + ModelsDir() + "/policy",
                                  "--threads=1", "--kv_cache_tokens=8192"});
      ASSERT_TRUE(worker.ok()) << worker.status();
      workers_.push_back(*std::move(worker));
    }
    auto verifier = StartService({BinaryPath("arbor-verifier"), "--model=" + ModelsDir() + "/prm",
                                  "--threads=1", "--kv_cache_tokens=8192"});
    ASSERT_TRUE(verifier.ok()) << verifier.status();
    verifier_ = *std::move(verifier);
    std::string targets;
    for (const Service& w : workers_) targets += (targets.empty() ? "" : ",") + w.address;
    std::vector<std::string> argv = {BinaryPath("arbor-coordinator"),
                                     "--workers=" + targets,
                                     "--verifiers=" + verifier_.address,
                                     absl::StrCat("--health_interval_ms=", kHealthIntervalMs),
                                     "--health_timeout_ms=500",
                                     "--max_concurrent_jobs=8"};
    argv.insert(argv.end(), coordinator_flags.begin(), coordinator_flags.end());
    auto coordinator = StartService(argv);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    stub_ = arbor::v1::Reasoning::NewStub(
        grpc::CreateChannel(coordinator_.address, grpc::InsecureChannelCredentials()));
    ASSERT_TRUE(WaitForHealthyWorkers(num_workers, absl::Seconds(10)));
  }

  double HealthyWorkers() {
    return MetricValue(HttpGet(coordinator_.metrics, "/metrics"),
                       "arbor_coordinator_endpoints_healthy", {"pool=\"workers\""});
  }
  bool WaitForHealthyWorkers(int n, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (HealthyWorkers() != n) {
      if (absl::Now() >= deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }
  int WorkerIndex(const std::string& address) const {
    for (size_t i = 0; i < workers_.size(); ++i) {
      if (workers_[i].address == address) return static_cast<int>(i);
    }
    return -1;
  }

  // Beam search: deterministic for a seed (seeded sampling, PRM scores).
  static arbor::v1::SolveRequest Request(uint64_t seed, int iterations = 4) {
    arbor::v1::SolveRequest request;
    request.set_question(kQuestion);
    request.set_seed(seed);
    request.mutable_stop()->set_max_step_tokens(16);
    request.mutable_beam_search()->set_n(4);
    request.mutable_beam_search()->set_beam_width(2);
    request.mutable_beam_search()->set_num_iterations(iterations);
    return request;
  }

  grpc::Status Solve(const arbor::v1::SolveRequest& request, arbor::v1::SolveResponse* response,
                     absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Solve(&context, request, response);
  }

  // Streams `request`; calls `fault(worker)` after its first step (or, with
  // after_first_step false, as soon as the job is accepted: then every step
  // is still ahead of the fault, however fast the rest of the job would run);
  // returns the final status and fills `result`, `fault_to_result`.
  grpc::Status SolveWithFault(const arbor::v1::SolveRequest& request,
                              const std::function<void(int worker)>& fault,
                              arbor::v1::SolveResponse* result, absl::Duration* fault_to_result,
                              bool after_first_step = true) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    auto reader = stub_->SolveStream(&context, request);
    arbor::v1::SolveEvent event;
    EXPECT_TRUE(reader->Read(&event));
    EXPECT_TRUE(event.has_accepted());
    const int victim = WorkerIndex(event.accepted().worker());
    EXPECT_GE(victim, 0) << event.accepted().worker();
    if (after_first_step) {
      EXPECT_TRUE(reader->Read(&event));
      EXPECT_TRUE(event.has_step());
    }
    const absl::Time fault_at = absl::Now();
    if (victim >= 0) fault(victim);
    while (reader->Read(&event)) {
      if (event.has_result()) *result = event.result();
    }
    grpc::Status status = reader->Finish();
    *fault_to_result = absl::Now() - fault_at;
    return status;
  }

  std::vector<Service> workers_;
  Service verifier_;
  Service coordinator_;
  std::unique_ptr<arbor::v1::Reasoning::Stub> stub_;
};

TEST_F(FaultsTest, WorkerKilledMidJobGivesTheFaultFreeAnswer) {
  Start(2);
  arbor::v1::SolveResponse expected;
  ASSERT_TRUE(Solve(Request(5, 6), &expected).ok());
  arbor::v1::SolveResponse result;
  absl::Duration took;
  grpc::Status status = SolveWithFault(
      Request(5, 6),
      [&](int victim) {
        workers_[victim].process->Signal(SIGKILL);
        workers_[victim].process->Wait();
      },
      // After the first step the rest of this small job can finish before
      // the kill lands on a loaded machine (then nothing is retried).
      &result, &took, /*after_first_step=*/false);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(result.usage().retries(), 1);
  EXPECT_EQ(result.text(), expected.text());
  EXPECT_EQ(result.answer(), expected.answer());
  std::printf("figure: worker killed mid-job: completed %.2f s after the kill, retries %ld\n",
              absl::ToDoubleSeconds(took), static_cast<long>(result.usage().retries()));
}

TEST_F(FaultsTest, HungWorkerJobFinishesInAboutAHealthInterval) {
  // No slow-call hedging and a long call timeout: only the ejection of the
  // hung worker can end its calls early.
  Start(2, {"--hedge_after_ms=0", "--call_timeout_ms=100000"});
  arbor::v1::SolveResponse expected;
  ASSERT_TRUE(Solve(Request(9, 6), &expected).ok());
  arbor::v1::SolveResponse result;
  absl::Duration took;
  int stopped = -1;
  grpc::Status status = SolveWithFault(
      Request(9, 6),
      [&](int victim) {
        stopped = victim;
        workers_[victim].process->Signal(SIGSTOP);
      },
      &result, &took);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(result.worker(), workers_[1 - stopped].address);
  EXPECT_EQ(result.text(), expected.text());
  // The call timeout is 100 s; ejection takes a health interval plus a
  // health timeout (0.7 s). 20 s is a loose bound for a loaded CI machine.
  EXPECT_LT(took, absl::Seconds(20));
  const std::string metrics = HttpGet(coordinator_.metrics, "/metrics");
  const double hedges = MetricValue(metrics, "arbor_coordinator_endpoint_hedges_total",
                                    {"pool=\"workers\"", "reason=\"ejected\""});
  const double retries =
      MetricValue(metrics, "arbor_coordinator_endpoint_retries_total", {"pool=\"workers\""});
  // Which of the two ends the stall depends on where the stop landed: a call
  // in flight on the worker is hedged, a later one routes around it.
  EXPECT_THAT(metrics, HasSubstr("arbor_coordinator_endpoint_hedges_total{pool=\"workers\","
                                 "reason=\"slow\"} 0"));
  std::printf(
      "figure: hung (SIGSTOPped) worker: job finished %.2f s after the stop "
      "(hedges %.0f, retries %.0f)\n",
      absl::ToDoubleSeconds(took), hedges, retries);
  workers_[stopped].process->Signal(SIGCONT);
}

TEST_F(FaultsTest, VerifierKilledFailsAtOnceWithUnavailable) {
  Start(1);
  KillService(verifier_);
  for (int round = 0; round < 2; ++round) {
    // Round 0: the coordinator has not noticed yet (the call fails);
    // round 1: the verifier is ejected (no call is made).
    if (round == 1) absl::SleepFor(absl::Milliseconds(3 * kHealthIntervalMs));
    arbor::v1::SolveResponse response;
    const absl::Time start = absl::Now();
    grpc::Status status = Solve(Request(1), &response);
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("verifiers"));
    EXPECT_THAT(status.error_message(), HasSubstr(verifier_.address));
    EXPECT_LT(took, absl::Seconds(5));
    std::printf("figure: verifier gone (%s): UNAVAILABLE in %.3f s: %s\n",
                round == 0 ? "not yet ejected" : "ejected", absl::ToDoubleSeconds(took),
                status.error_message().c_str());
  }
  // Strategies without a reward model still run.
  arbor::v1::SolveRequest greedy = Request(1);
  greedy.mutable_greedy();
  arbor::v1::SolveResponse response;
  grpc::Status status = Solve(greedy, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(FaultsTest, RestartedWorkerIsRoutableWithinTwoHealthIntervals) {
  Start(2);
  std::vector<double> seconds;
  for (int round = 0; round < 3; ++round) {
    KillService(workers_[1]);
    ASSERT_TRUE(WaitForHealthyWorkers(1, absl::Seconds(10)));
    absl::Status restarted = RestartService(workers_[1]);
    ASSERT_TRUE(restarted.ok()) << restarted;
    // Timed from the restarted worker's "listening on" line.
    const absl::Time listening = absl::Now();
    ASSERT_TRUE(WaitForHealthyWorkers(2, absl::Seconds(10)));
    seconds.push_back(absl::ToDoubleSeconds(absl::Now() - listening));
    // And it is used again: a job routed to it by its id runs there.
    bool used = false;
    for (int i = 0; i < 16 && !used; ++i) {
      arbor::v1::SolveRequest request = Request(2, 1);
      request.set_job_id(absl::StrCat("restart-", round, "-", i));
      arbor::v1::SolveResponse response;
      ASSERT_TRUE(Solve(request, &response).ok());
      used = response.worker() == workers_[1].address;
    }
    EXPECT_TRUE(used) << "no job ran on the restarted worker";
  }
  for (double s : seconds) {
    EXPECT_LT(s, 10.0 * kHealthIntervalMs / 1000);  // loose: about one interval expected
    std::printf("figure: restarted worker routable %.3f s after it listened (interval %d ms)\n", s,
                kHealthIntervalMs);
  }
}

TEST_F(FaultsTest, ChaosEveryJobCompletesWithTheFaultFreeAnswer) {
  Start(3);
  constexpr int kJobs = 90;
  constexpr int kClients = 6;
  auto run_all = [&](std::vector<arbor::v1::SolveResponse>& out, std::vector<grpc::Status>& st,
                     const std::atomic<bool>* stop_faults) {
    out.assign(kJobs, {});
    st.assign(kJobs, grpc::Status::OK);
    std::atomic<int> next = 0;
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&] {
        for (int i = next++; i < kJobs; i = next++) {
          // Smaller than Request(): a stream of quick jobs.
          arbor::v1::SolveRequest request = Request(1000 + i, 2);
          request.mutable_stop()->set_max_step_tokens(8);
          request.mutable_beam_search()->set_n(2);
          request.mutable_beam_search()->set_beam_width(1);
          request.set_job_id(absl::StrCat("chaos-", stop_faults ? "f" : "r", "-", i));
          st[i] = Solve(request, &out[i], absl::Seconds(60));
        }
      });
    }
    for (auto& t : clients) t.join();
  };
  std::vector<arbor::v1::SolveResponse> expected, got;
  std::vector<grpc::Status> expected_status, status;
  run_all(expected, expected_status, nullptr);
  for (int i = 0; i < kJobs; ++i) ASSERT_TRUE(expected_status[i].ok()) << i;

  std::atomic<bool> done = false;
  std::atomic<int> kills = 0;
  std::thread chaos([&] {
    while (!done) {
      KillService(workers_[0]);
      ++kills;
      absl::SleepFor(absl::Milliseconds(300));
      if (absl::Status s = RestartService(workers_[0]); !s.ok()) {
        ADD_FAILURE() << s;
        return;
      }
      for (int i = 0; i < 10 && !done; ++i) absl::SleepFor(absl::Milliseconds(50));
    }
  });
  const absl::Time start = absl::Now();
  run_all(got, status, &done);
  const absl::Duration took = absl::Now() - start;
  done = true;
  chaos.join();
  int completed = 0, identical = 0;
  for (int i = 0; i < kJobs; ++i) {
    EXPECT_TRUE(status[i].ok()) << "job " << i << ": " << status[i].error_message();
    if (!status[i].ok()) continue;
    ++completed;
    EXPECT_EQ(got[i].text(), expected[i].text()) << "job " << i;
    identical += got[i].text() == expected[i].text() ? 1 : 0;
  }
  EXPECT_GE(kills.load(), 2);
  std::printf(
      "figure: chaos: %d/%d jobs completed, %d/%d identical to the fault-free run, "
      "%d kills of 1 of 3 workers, %.1f s\n",
      completed, kJobs, identical, kJobs, kills.load(), absl::ToDoubleSeconds(took));
}

}  // namespace
}  // namespace arbor::testing
