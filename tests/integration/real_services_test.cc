// The real services end to end on loopback: arbor-coordinator in front of two
// arbor-worker processes and one arbor-verifier on the bundled tiny models
// (CPU backend). Every strategy runs; a worker killed mid-job costs a retry,
// not the job; a cancelled job's worker calls are cancelled and their KV
// blocks released; an LLM judge (the policy served by arbor-verifier
// --kind=llm_judge) stands in for the PRM and judges a best-of-N tournament
// pairwise (Verifier.Compare). (Answers of the tiny models are not asserted: the
// arithmetic correctness checks run against the ArithWorld double.)
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/services.h"
#include "tests/integration/subprocess.h"

namespace arbor::testing {
namespace {

constexpr char kQuestion[] = "What is 12 + 7?";

class RealServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("ARBOR_LOG_LEVEL", "WARNING", 1);
    const std::string models = ModelsDir();
    for (int i = 0; i < 2; ++i) {
      workers_.push_back(
          StartServiceOrFail({BinaryPath("arbor-worker"), "--model=" + models + "/policy",
                              "--threads=1", "--kv_cache_tokens=16384"}));
      ASSERT_FALSE(workers_.back().address.empty());
    }
    verifier_ = StartServiceOrFail({BinaryPath("arbor-verifier"), "--model=" + models + "/prm",
                                    "--threads=1", "--kv_cache_tokens=16384"});
    ASSERT_FALSE(verifier_.address.empty());
    coordinator_ =
        StartServiceOrFail({BinaryPath("arbor-coordinator"),
                            "--workers=" + workers_[0].address + "," + workers_[1].address,
                            "--verifiers=" + verifier_.address, "--health_interval_ms=200"});
    ASSERT_FALSE(coordinator_.address.empty());
    stub_ = arbor::v1::Reasoning::NewStub(
        grpc::CreateChannel(coordinator_.address, grpc::InsecureChannelCredentials()));
  }

  static arbor::v1::SolveRequest Request() {
    arbor::v1::SolveRequest request;
    request.set_question(kQuestion);
    request.set_seed(3);
    request.mutable_stop()->set_max_step_tokens(24);
    return request;
  }

  std::vector<Service> workers_;
  Service verifier_;
  Service coordinator_;
  std::unique_ptr<arbor::v1::Reasoning::Stub> stub_;
};

TEST_F(RealServicesTest, EveryStrategyRuns) {
  std::vector<arbor::v1::SolveRequest> requests(5, Request());
  requests[0].mutable_greedy();
  requests[1].mutable_best_of_n()->set_n(4);
  requests[2].mutable_beam_search()->set_n(4);
  requests[2].mutable_beam_search()->set_beam_width(2);
  requests[2].mutable_beam_search()->set_num_iterations(3);
  requests[3].mutable_dvts()->set_n(4);
  requests[3].mutable_dvts()->set_beam_width(2);
  requests[3].mutable_dvts()->set_num_iterations(3);
  requests[4].mutable_particle_filter()->set_n(4);
  requests[4].mutable_particle_filter()->set_num_iterations(3);
  for (auto& request : requests) {
    request.mutable_budget()->set_max_generated_tokens(1500);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    arbor::v1::SolveResponse response;
    grpc::Status status = stub_->Solve(&context, request, &response);
    ASSERT_TRUE(status.ok()) << request.ShortDebugString() << ": " << status.error_message();
    EXPECT_GE(response.candidates_size(), 1) << response.strategy();
    EXPECT_GT(response.usage().generated_tokens(), 0) << response.strategy();
    EXPECT_LE(response.usage().generated_tokens(), 1500) << response.strategy();
    EXPECT_GT(response.usage().prefill_tokens() + response.usage().prefix_cache_hit_tokens(), 0);
    EXPECT_TRUE(response.worker() == workers_[0].address ||
                response.worker() == workers_[1].address);
    if (response.strategy() != "greedy") {
      EXPECT_GT(response.usage().reward_calls(), 0) << response.strategy();
      EXPECT_EQ(response.verifier(), verifier_.address);
    }
  }
}

TEST_F(RealServicesTest, WorkerKilledMidJobStillAnswers) {
  arbor::v1::SolveRequest request = Request();
  request.set_job_id("real-kill-1");
  request.mutable_beam_search()->set_n(4);
  request.mutable_beam_search()->set_beam_width(2);
  request.mutable_beam_search()->set_num_iterations(6);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto reader = stub_->SolveStream(&context, request);
  arbor::v1::SolveEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  const int victim = event.accepted().worker() == workers_[0].address ? 0 : 1;
  ASSERT_EQ(workers_[victim].address, event.accepted().worker());
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_step());
  workers_[victim].process->Signal(SIGKILL);
  workers_[victim].process->Wait();
  arbor::v1::SolveResponse result;
  while (reader->Read(&event)) {
    if (event.has_result()) result = event.result();
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(result.worker(), workers_[1 - victim].address);
  EXPECT_GE(result.usage().retries(), 1);
  EXPECT_GE(result.candidates_size(), 1);
}

TEST_F(RealServicesTest, CancelledJobReleasesItsKvBlocks) {
  // 64 beams of 200-token steps: the first Extend alone runs for seconds.
  arbor::v1::SolveRequest request = Request();
  request.mutable_beam_search()->set_n(64);
  request.mutable_beam_search()->set_beam_width(4);
  request.mutable_stop()->set_max_step_tokens(200);
  request.mutable_stop()->set_ignore_eos(true);
  request.set_job_id("real-cancel-1");
  grpc::ClientContext context;
  auto reader = stub_->SolveStream(&context, request);
  arbor::v1::SolveEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  const std::string routed = event.accepted().worker();
  const Service& worker = routed == workers_[0].address ? workers_[0] : workers_[1];
  // Cancel while one of the job's Extend calls holds KV blocks on the worker.
  double used_before = 0;
  const absl::Time busy_deadline = absl::Now() + absl::Seconds(30);
  while (used_before == 0 && absl::Now() < busy_deadline) {
    used_before = MetricValue(HttpGet(worker.metrics, "/metrics"), "arbor_engine_kv_blocks",
                              {"state=\"used\""});
  }
  ASSERT_GT(used_before, 0) << "never saw the job's blocks in use";
  context.TryCancel();
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  std::string metrics;
  double used = -1, active = -1;
  while (absl::Now() < deadline) {
    metrics = HttpGet(worker.metrics, "/metrics");
    used = MetricValue(metrics, "arbor_engine_kv_blocks", {"state=\"used\""});
    active = MetricValue(metrics, "arbor_engine_active_requests", {});
    if (used == 0 && active == 0) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(used, 0) << metrics;
  EXPECT_EQ(active, 0) << metrics;
}

TEST_F(RealServicesTest, AnLlmJudgeScoresWhereAPrmWould) {
  // The policy model itself, served by arbor-verifier as a judge (its
  // single-letter tokens stand in for "Yes"/"No", which its vocabulary lacks).
  const std::string models = ModelsDir();
  Service judge = StartServiceOrFail(
      {BinaryPath("arbor-verifier"), "--model=" + models + "/policy", "--kind=llm_judge",
       "--positive_token=Y", "--negative_token=N", "--threads=1", "--kv_cache_tokens=16384"});
  ASSERT_FALSE(judge.address.empty());
  Service coordinator =
      StartServiceOrFail({BinaryPath("arbor-coordinator"), "--workers=" + workers_[0].address,
                          "--verifiers=" + judge.address, "--health_interval_ms=200"});
  ASSERT_FALSE(coordinator.address.empty());
  auto stub = arbor::v1::Reasoning::NewStub(
      grpc::CreateChannel(coordinator.address, grpc::InsecureChannelCredentials()));
  arbor::v1::SolveRequest request = Request();
  request.mutable_beam_search()->set_n(4);
  request.mutable_beam_search()->set_beam_width(2);
  request.mutable_beam_search()->set_num_iterations(3);
  request.mutable_budget()->set_max_generated_tokens(1000);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  arbor::v1::SolveResponse response;
  grpc::Status status = stub->Solve(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.verifier(), judge.address);
  EXPECT_GT(response.usage().reward_calls(), 0);
  EXPECT_GT(response.usage().reward_tokens(), 0);
  ASSERT_GE(response.candidates_size(), 1);
  for (const auto& candidate : response.candidates()) {
    for (float score : candidate.step_scores()) {
      EXPECT_GT(score, 0.0f);
      EXPECT_LT(score, 1.0f);
    }
  }
}

TEST_F(RealServicesTest, ATournamentIsJudgedPairwiseByAnLlmJudgesCompare) {
  // best_of_n with tournament selection: the policy served as an LLM judge
  // (Verifier.Compare, "A"/"B" verdicts) plays a knockout over the samples'
  // distinct answers, one Compare call per round.
  const std::string models = ModelsDir();
  Service judge = StartServiceOrFail(
      {BinaryPath("arbor-verifier"), "--model=" + models + "/policy", "--kind=llm_judge",
       "--positive_token=Y", "--negative_token=N", "--threads=1", "--kv_cache_tokens=16384"});
  ASSERT_FALSE(judge.address.empty());
  Service coordinator =
      StartServiceOrFail({BinaryPath("arbor-coordinator"), "--workers=" + workers_[0].address,
                          "--verifiers=" + judge.address, "--health_interval_ms=200"});
  ASSERT_FALSE(coordinator.address.empty());
  auto stub = arbor::v1::Reasoning::NewStub(
      grpc::CreateChannel(coordinator.address, grpc::InsecureChannelCredentials()));
  // A problem of the policy's training format, sampled hot so that the
  // samples disagree (the counter RNG makes the samples the same every run).
  arbor::v1::SolveRequest request;
  request.set_question(
      "Start with 838. Subtract 630, add 631, add 605, multiply by 3, subtract 663. What is the "
      "result?");
  request.set_seed(3);
  request.mutable_sampling()->set_temperature(1.5f);
  request.mutable_best_of_n()->set_n(16);
  request.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_TOURNAMENT);
  request.set_max_candidates(16);
  auto solve = [&](const arbor::v1::SolveRequest& r, arbor::v1::SolveResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    return stub->Solve(&context, r, response);
  };
  arbor::v1::SolveResponse response;
  grpc::Status status = solve(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.strategy(), "best_of_n");
  EXPECT_EQ(response.verifier(), judge.address);
  ASSERT_GE(response.candidates_size(), 1);
  EXPECT_FALSE(response.answer().empty());
  EXPECT_EQ(response.answer(), response.candidates(0).answer());
  const arbor::v1::Usage& usage = response.usage();
  std::set<std::string> answers;
  for (const auto& c : response.candidates()) {
    if (!c.answer().empty()) answers.insert(c.answer());
  }
  ASSERT_GE(answers.size(), 3u) << "the samples should disagree";
  // A knockout of k entrants plays k - 1 matches in ceil(log2 k) rounds, one
  // Compare each; nothing else calls the verifier.
  EXPECT_EQ(usage.compared_pairs(), static_cast<int64_t>(answers.size()) - 1);
  EXPECT_EQ(usage.compare_calls(), usage.tournament_rounds());
  EXPECT_LT(1 << (usage.tournament_rounds() - 1), static_cast<int>(answers.size()));
  EXPECT_LE(static_cast<int>(answers.size()), 1 << usage.tournament_rounds());
  EXPECT_EQ(usage.reward_calls(), usage.compare_calls());
  EXPECT_GT(usage.reward_tokens(), 0);
  EXPECT_GT(usage.reward_cache_hit_tokens(), 0);  // the shared question prefix
  EXPECT_FALSE(usage.tournament_fallback());
  EXPECT_EQ(response.stop_reason(), "completed");

  // One reward call affords the first round only: the majority vote picks
  // among the answers still in, and the usage says so.
  arbor::v1::SolveRequest capped = request;
  capped.mutable_budget()->set_max_reward_calls(1);
  arbor::v1::SolveResponse fallback;
  status = solve(capped, &fallback);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(fallback.usage().compare_calls(), 1);
  EXPECT_EQ(fallback.usage().tournament_rounds(), 1);
  EXPECT_TRUE(fallback.usage().tournament_fallback());
  EXPECT_TRUE(fallback.budget_exhausted());
  EXPECT_EQ(fallback.exhausted_by(), "reward_calls");
  EXPECT_FALSE(fallback.answer().empty());

  // The PRM cannot compare: the coordinator refuses the job up front.
  arbor::v1::SolveResponse refused;
  grpc::ClientContext context;
  status = stub_->Solve(&context, request, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("supports_compare"));
}

}  // namespace
}  // namespace arbor::testing
