// Routing across real workers on loopback: arbor-coordinator --routing in
// front of three arbor-worker processes on the bundled tiny policy (CPU, no
// verifier: best-of-N by majority vote). Under prefix_load, jobs that open
// with the same system prompt land on the worker that caches it and hit its
// cache; a worker killed mid-job moves the job to another worker with the
// same answer for the same seed, and so do a job split into sub-trees over
// several workers and one whose sub-tree's worker is killed; a bad --routing
// is refused at start.
#include <signal.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/services.h"
#include "tests/integration/subprocess.h"

namespace arbor::testing {
namespace {

// A shared system prompt (about 200 bytes) and a short question of its own.
std::string Question(int system, int question) {
  return absl::StrCat("System ", system,
                      ": you are a careful tutor. Read the problem, add the numbers one at a "
                      "time, write each partial sum on its own line, check the total twice and "
                      "give the final answer at the end.\n\nProblem ",
                      question, ": what is ", 10 + question, " + ", 3 * question, "?");
}

// Reads a SolveStream to its end: the final status, and the result event's
// response in `result`.
grpc::Status FinishSolveStream(grpc::ClientReader<arbor::v1::SolveEvent>* reader,
                               arbor::v1::SolveResponse* result) {
  arbor::v1::SolveEvent event;
  while (reader->Read(&event)) {
    if (event.has_result()) *result = event.result();
  }
  return reader->Finish();
}

class RoutingIntegrationTest : public ::testing::Test {
 protected:
  void StartAll(const std::string& routing, const std::vector<std::string>& flags = {}) {
    setenv("ARBOR_LOG_LEVEL", "WARNING", 1);
    std::vector<std::string> addresses;
    for (int i = 0; i < 3; ++i) {
      workers_.push_back(
          StartServiceOrFail({BinaryPath("arbor-worker"), "--model=" + ModelsDir() + "/policy",
                              "--threads=1", "--kv_cache_tokens=8192"}));
      ASSERT_FALSE(workers_.back().address.empty());
      addresses.push_back(workers_.back().address);
    }
    std::vector<std::string> argv = {
        BinaryPath("arbor-coordinator"), "--workers=" + absl::StrJoin(addresses, ","),
        "--routing=" + routing, "--routing_poll_ms=100", "--health_interval_ms=200"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    coordinator_ = StartServiceOrFail(argv);
    ASSERT_FALSE(coordinator_.address.empty());
    stub_ = arbor::v1::Reasoning::NewStub(
        grpc::CreateChannel(coordinator_.address, grpc::InsecureChannelCredentials()));
  }

  // Best-of-N by majority vote: no reward model needed.
  static arbor::v1::SolveRequest Request(const std::string& job_id, const std::string& question) {
    arbor::v1::SolveRequest request;
    request.set_job_id(job_id);
    request.set_question(question);
    request.set_seed(5);
    request.mutable_best_of_n()->set_n(3);
    request.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE);
    return request;
  }

  arbor::v1::SolveResponse Solve(const arbor::v1::SolveRequest& request,
                                 arbor::v1::Reasoning::Stub* stub = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    arbor::v1::SolveResponse response;
    grpc::Status status = (stub ? stub : stub_.get())->Solve(&context, request, &response);
    EXPECT_TRUE(status.ok()) << request.job_id() << ": " << status.error_message();
    return response;
  }

  std::vector<Service> workers_;
  Service coordinator_;
  std::unique_ptr<arbor::v1::Reasoning::Stub> stub_;
};

TEST_F(RoutingIntegrationTest, PrefixLoadSendsASharedSystemPromptToTheWorkerThatCachesIt) {
  StartAll("prefix_load");
  std::set<std::string> workers;
  for (int i = 0; i < 4; ++i) {
    arbor::v1::SolveRequest request = Request(absl::StrCat("shared-", i), Question(1, i));
    // One step per job: its only cache hits are other jobs' prefixes.
    request.mutable_stop()->set_no_step_delimiter(true);
    request.mutable_stop()->set_max_step_tokens(12);
    const arbor::v1::SolveResponse response = Solve(request);
    workers.insert(response.worker());
    if (i == 0) {
      EXPECT_EQ(response.usage().prefix_cache_hit_tokens(), 0);
    } else {
      // The system prompt's blocks (about 200 bytes: several 16-token blocks).
      EXPECT_GE(response.usage().prefix_cache_hit_tokens(), 64) << "job " << i;
    }
  }
  EXPECT_EQ(workers.size(), 1u) << absl::StrJoin(workers, ", ");
  EXPECT_FALSE(workers.begin()->empty());
}

TEST_F(RoutingIntegrationTest, AKilledWorkerKeepsTheAnswerOfTheSeed) {
  StartAll("prefix_load");
  // Several steps of a few tokens, EOS ignored, so that the job outlives the kill.
  auto request = [](const std::string& id) {
    arbor::v1::SolveRequest r = Request(id, Question(2, 7));
    r.mutable_stop()->set_max_step_tokens(8);
    r.mutable_stop()->set_ignore_eos(true);
    r.mutable_budget()->set_max_generated_tokens(3 * 8 * 6);
    return r;
  };
  const arbor::v1::SolveResponse reference = Solve(request("reference"));
  ASSERT_GE(reference.candidates_size(), 1);

  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto reader = stub_->SolveStream(&context, request("failover"));
  arbor::v1::SolveEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  const std::string placed = event.accepted().worker();
  // The reference warmed this worker's cache with the same prompt.
  EXPECT_EQ(placed, reference.worker());
  int victim = -1;
  for (int i = 0; i < 3; ++i) {
    if (workers_[i].address == placed) victim = i;
  }
  ASSERT_GE(victim, 0) << placed;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_step());
  workers_[victim].process->Signal(SIGKILL);
  workers_[victim].process->Wait();
  arbor::v1::SolveResponse result;
  grpc::Status status = FinishSolveStream(reader.get(), &result);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(result.worker(), placed);
  EXPECT_GE(result.usage().retries(), 1);
  // The same tokens, whichever worker drew them.
  EXPECT_EQ(result.text(), reference.text());
  EXPECT_EQ(result.answer(), reference.answer());
  ASSERT_EQ(result.candidates_size(), reference.candidates_size());
  for (int i = 0; i < result.candidates_size(); ++i) {
    EXPECT_EQ(result.candidates(i).text(), reference.candidates(i).text()) << "candidate " << i;
  }
  EXPECT_EQ(result.usage().generated_tokens(), reference.usage().generated_tokens());
}

TEST_F(RoutingIntegrationTest, SplitSubTreesAndAKilledSubTreeWorkerKeepTheAnswerOfTheSeed) {
  // Sub-trees beyond one output a worker: from the second step on (three
  // branches), the job's worker keeps one and lends the two idle workers one
  // each.
  StartAll("prefix_load", {"--routing_split_outputs=1"});
  // The same workers behind a coordinator that keeps each job on one worker.
  std::vector<std::string> addresses;
  for (const Service& w : workers_) addresses.push_back(w.address);
  Service whole = StartServiceOrFail({BinaryPath("arbor-coordinator"),
                                      "--workers=" + absl::StrJoin(addresses, ","),
                                      "--routing=prefix_load", "--health_interval_ms=200"});
  ASSERT_FALSE(whole.address.empty());
  auto whole_stub = arbor::v1::Reasoning::NewStub(
      grpc::CreateChannel(whole.address, grpc::InsecureChannelCredentials()));
  auto request = [](const std::string& id) {
    arbor::v1::SolveRequest r = Request(id, Question(3, 4));
    r.mutable_stop()->set_max_step_tokens(8);
    r.mutable_stop()->set_ignore_eos(true);
    r.mutable_budget()->set_max_generated_tokens(3 * 8 * 6);
    return r;
  };
  const arbor::v1::SolveResponse reference = Solve(request("one-worker"), whole_stub.get());
  ASSERT_GE(reference.candidates_size(), 1);
  EXPECT_EQ(reference.usage().retries(), 0);
  const arbor::v1::SolveResponse split = Solve(request("split"));
  EXPECT_EQ(split.text(), reference.text());
  ASSERT_EQ(split.candidates_size(), reference.candidates_size());
  for (int i = 0; i < split.candidates_size(); ++i) {
    EXPECT_EQ(split.candidates(i).text(), reference.candidates(i).text()) << "candidate " << i;
  }
  EXPECT_EQ(split.usage().generated_tokens(), reference.usage().generated_tokens());
  absl::SleepFor(absl::Milliseconds(500));  // the workers report idle again

  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto reader = stub_->SolveStream(&context, request("split-failover"));
  arbor::v1::SolveEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  const std::string home = event.accepted().worker();
  // After the second step both other workers hold a sub-tree: kill one.
  for (int step = 0; step < 2; ++step) {
    ASSERT_TRUE(reader->Read(&event));
    ASSERT_TRUE(event.has_step());
  }
  int victim = -1;
  for (int i = 0; i < 3; ++i) {
    if (workers_[i].address != home && victim < 0) victim = i;
  }
  ASSERT_GE(victim, 0) << home;
  workers_[victim].process->Signal(SIGKILL);
  workers_[victim].process->Wait();
  arbor::v1::SolveResponse result;
  grpc::Status status = FinishSolveStream(reader.get(), &result);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // Its sub-tree's next call failed there and was retried elsewhere: it was
  // split. The tokens are the one-worker job's.
  EXPECT_GE(result.usage().retries(), 1);
  EXPECT_EQ(result.text(), reference.text());
  EXPECT_EQ(result.answer(), reference.answer());
  ASSERT_EQ(result.candidates_size(), reference.candidates_size());
  for (int i = 0; i < result.candidates_size(); ++i) {
    EXPECT_EQ(result.candidates(i).text(), reference.candidates(i).text()) << "candidate " << i;
  }
  EXPECT_EQ(result.usage().generated_tokens(), reference.usage().generated_tokens());
}

TEST(RoutingFlagTest, AnUnknownPolicyIsRefusedAtStart) {
  auto process =
      Subprocess::Start({BinaryPath("arbor-coordinator"), "--workers=127.0.0.1:1",
                         "--routing=random", "--port=0", "--host=127.0.0.1", "--metrics_port=-1"},
                        ::testing::TempDir() + "/routing_flag.err");
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_EQ((*process)->Wait(), 2);
}

}  // namespace
}  // namespace arbor::testing
