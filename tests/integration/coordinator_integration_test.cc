// End to end with real processes on loopback: arbor-coordinator in front of
// two generator workers and one verifier (arbor-test-world, the ArithWorld
// test double), driven through arborctl and a C++ gRPC client. Every
// strategy, a worker killed mid-job, each kind of bad field, health, info,
// /metrics and a graceful drain on SIGTERM.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/services.h"
#include "tests/integration/subprocess.h"

namespace arbor::testing {
namespace {

using ::testing::HasSubstr;

struct CtlResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class IntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("ARBOR_LOG_LEVEL", "WARNING", 1);
    for (int i = 0; i < 2; ++i) {
      workers_.push_back(StartServiceOrFail(
          {BinaryPath("arbor-test-world"), "--serve=generator", "--extend_delay_ms=40"}));
    }
    verifier_ = StartServiceOrFail({BinaryPath("arbor-test-world"), "--serve=verifier"});
    ASSERT_FALSE(workers_[1].address.empty());
    ASSERT_FALSE(verifier_.address.empty());
    coordinator_ = StartServiceOrFail(
        {BinaryPath("arbor-coordinator"),
         "--workers=" + workers_[0].address + "," + workers_[1].address,
         "--verifiers=" + verifier_.address, "--health_interval_ms=200", "--drain_grace_ms=10000"});
    ASSERT_FALSE(coordinator_.address.empty());
    stub_ = arbor::v1::Reasoning::NewStub(
        grpc::CreateChannel(coordinator_.address, grpc::InsecureChannelCredentials()));
  }

  CtlResult Ctl(std::vector<std::string> args) {
    const std::string err_path =
        absl::StrCat(::testing::TempDir(), "/arborctl_", getpid(), "_", ctl_calls_++, ".err");
    args.insert(args.begin(), BinaryPath("arborctl"));
    CtlResult result;
    auto process = Subprocess::Start(args, err_path);
    if (!process.ok()) {
      ADD_FAILURE() << process.status();
      return result;
    }
    result.out = (*process)->ReadAll(absl::Seconds(60));
    result.exit_code = (*process)->Wait();
    FILE* f = fopen(err_path.c_str(), "r");
    if (f != nullptr) {
      char buffer[4096];
      size_t n;
      while ((n = fread(buffer, 1, sizeof(buffer), f)) > 0) result.err.append(buffer, n);
      fclose(f);
      unlink(err_path.c_str());
    }
    return result;
  }

  std::vector<Service> workers_;
  Service verifier_;
  Service coordinator_;
  std::unique_ptr<arbor::v1::Reasoning::Stub> stub_;
  int ctl_calls_ = 0;
};

TEST_F(IntegrationTest, EveryStrategyEndToEndThroughArborctl) {
  for (const std::string strategy :
       {"greedy", "best_of_n", "beam_search", "dvts", "particle_filter"}) {
    CtlResult r = Ctl({"solve", "--target=" + coordinator_.address, "--strategy=" + strategy,
                       "--n=8", "--seed=5", "--json", "add 3 5 7 11"});
    ASSERT_EQ(r.exit_code, 0) << strategy << ": " << r.err;
    // Streaming: the accepted line and the live progress went to stderr.
    EXPECT_THAT(r.err, HasSubstr("accepted job")) << strategy;
    EXPECT_THAT(r.err, HasSubstr("step 0:")) << strategy;
    const nlohmann::json response = nlohmann::json::parse(r.out);
    EXPECT_EQ(response["answer"], "26") << strategy << ": " << r.out;
    EXPECT_EQ(response["strategy"], strategy);
    const nlohmann::json& usage = response["usage"];
    // int64 counters are JSON numbers (proto3 JSON would write strings).
    ASSERT_TRUE(usage["generated_tokens"].is_number_integer()) << r.out;
    EXPECT_GT(usage["generated_tokens"].get<int64_t>(), 0) << strategy;
    EXPECT_GT(usage["worker_calls"].get<int64_t>(), 0) << strategy;
    EXPECT_TRUE(response["worker"] == workers_[0].address ||
                response["worker"] == workers_[1].address);
  }
  // The human-readable form carries the answer and the usage line.
  CtlResult r = Ctl({"solve", "--target=" + coordinator_.address, "--strategy=beam_search", "--n=4",
                     "--beam_width=2", "--stream=false", "add 1 2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("answer: 3"));
  EXPECT_THAT(r.out, HasSubstr("usage: "));

  const std::string metrics = HttpGet(coordinator_.metrics, "/metrics");
  EXPECT_THAT(metrics,
              HasSubstr("arbor_coordinator_jobs_total{outcome=\"ok\",strategy=\"dvts\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("arbor_coordinator_job_seconds_bucket"));
  EXPECT_THAT(metrics, HasSubstr("arbor_coordinator_step_seconds_bucket"));
  EXPECT_THAT(metrics, HasSubstr("arbor_coordinator_tokens_total{kind=\"generated\"}"));
  EXPECT_THAT(metrics, HasSubstr("arbor_coordinator_endpoints_healthy{pool=\"workers\"} 2"));
  EXPECT_THAT(metrics, HasSubstr("arbor_grpc_server_handled_total"));
}

// The round-2 strategies, one job each through arborctl and the service: MCTS,
// particle Gibbs, entropic particle filtering and adaptive best-of-N. The
// response says why each stopped.
TEST_F(IntegrationTest, MctsParticleGibbsEntropicAndAdaptiveBestOfN) {
  struct Case {
    std::string name;  // the response's strategy
    std::vector<std::string> flags;
  };
  const std::vector<Case> cases = {
      {"mcts", {"--strategy=mcts", "--iterations=12", "--max_width=3"}},
      {"mcts", {"--strategy=mcts", "--iterations=6", "--max_width=2", "--rollouts"}},
      {"mcts",
       {"--strategy=mcts", "--iterations=6", "--max_width=2", "--rollouts", "--greedy_rollouts",
        "--mcts_selection=argmax"}},
      {"particle_gibbs", {"--strategy=particle_gibbs", "--n=4", "--sweeps=2"}},
      {"particle_filter", {"--strategy=particle_filter", "--n=8", "--entropic"}},
      {"best_of_n",
       {"--strategy=best_of_n", "--n=16", "--round_size=4", "--max_candidates=16",
        "--selection=majority_vote"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"solve", "--target=" + coordinator_.address, "--seed=5",
                                     "--json"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    args.push_back("add 3 5 7 11");
    CtlResult r = Ctl(args);
    const std::string trace = absl::StrJoin(c.flags, " ");
    ASSERT_EQ(r.exit_code, 0) << trace << ": " << r.err;
    const nlohmann::json response = nlohmann::json::parse(r.out);
    EXPECT_EQ(response["answer"], "26") << trace << ": " << r.out;
    EXPECT_EQ(response["strategy"], c.name) << trace;
    EXPECT_FALSE(response["stop_reason"].get<std::string>().empty()) << trace << ": " << r.out;
    EXPECT_GT(response["usage"]["generated_tokens"].get<int64_t>(), 0) << trace;
    if (c.name == "best_of_n") {
      // Rounds of 4: stopped by agreement after some, or all 16 drawn.
      const size_t drawn = response["candidates"].size();
      if (response["stop_reason"] == "agreement") {
        EXPECT_TRUE(drawn < 16 && drawn % 4 == 0) << r.out;
      } else {
        EXPECT_EQ(response["stop_reason"], "completed") << r.out;
      }
    }
  }
  const std::string metrics = HttpGet(coordinator_.metrics, "/metrics");
  EXPECT_THAT(metrics,
              HasSubstr("arbor_coordinator_jobs_total{outcome=\"ok\",strategy=\"mcts\"} 3"));
  EXPECT_THAT(
      metrics,
      HasSubstr("arbor_coordinator_jobs_total{outcome=\"ok\",strategy=\"particle_gibbs\"} 1"));
}

// Strategy auto through arborctl and the service: the usage names the band
// the first round measured and what it chose, consistently with each other.
// Then each band forced through the thresholds (the C++ client): easy stops
// with the first round, medium draws the rest as samples, hard runs a beam
// search with the rest.
TEST_F(IntegrationTest, AutoReportsItsChoice) {
  CtlResult r = Ctl({"solve", "--target=" + coordinator_.address, "--strategy=auto", "--n=8",
                     "--seed=5", "--json", "add 3 5 7 11"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json response = nlohmann::json::parse(r.out);
  EXPECT_EQ(response["strategy"], "auto") << r.out;
  EXPECT_EQ(response["answer"], "26") << r.out;
  const nlohmann::json& choice = response["usage"]["auto_choice"];
  ASSERT_TRUE(choice.is_object()) << r.out;
  EXPECT_EQ(choice["first_round_samples"], 4) << r.out;
  const std::string band = choice["band"];
  const std::string chosen = choice["strategy"];
  if (band == "easy") {
    EXPECT_EQ(chosen, "stop") << r.out;
  } else if (band == "medium") {
    EXPECT_EQ(chosen, "best_of_n") << r.out;
    EXPECT_EQ(choice["n"], 4) << r.out;
  } else {
    EXPECT_EQ(band, "hard") << r.out;
    EXPECT_EQ(chosen, "beam_search") << r.out;
    EXPECT_EQ(choice["n"], 4) << r.out;
  }
  const double agreement = choice["agreement"], score = choice["mean_score"];
  EXPECT_NEAR(choice["difficulty"].get<double>(), 1.0 - (agreement + score) / 2.0, 1e-9);
  // The human-readable form says it too.
  r = Ctl({"solve", "--target=" + coordinator_.address, "--strategy=auto", "--n=8", "--seed=5",
           "--stream=false", "add 3 5 7 11"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("auto: " + band + " band"));

  struct Forced {
    std::string band, strategy;
    float easy_agreement, easy_score, hard_agreement, hard_score;
    int candidates;  // all of them are returned (max_candidates 16)
  };
  const std::vector<Forced> forced = {
      // Every first round is easy when the easy thresholds are 0.
      {"easy", "stop", 0.0f, 0.0f, 0.0f, 0.0f, 4},
      // Never easy (the world's PRM scores at most 0.9) and never hard.
      {"medium", "best_of_n", 1.0f, 1.0f, 0.0f, 0.0f, 8},
      // Never easy, always hard (every mean score is below 1).
      {"hard", "beam_search", 1.0f, 1.0f, 0.0f, 1.0f, 0},
  };
  for (const Forced& f : forced) {
    arbor::v1::SolveRequest request;
    request.set_question("add 3 5 7 11");
    request.set_seed(5);
    request.set_max_candidates(16);
    arbor::v1::Auto* a = request.mutable_auto_();
    a->set_n(8);
    a->set_easy_agreement(f.easy_agreement);
    a->set_easy_score(f.easy_score);
    a->set_hard_agreement(f.hard_agreement);
    a->set_hard_score(f.hard_score);
    arbor::v1::SolveResponse result;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    grpc::Status status = stub_->Solve(&context, request, &result);
    ASSERT_TRUE(status.ok()) << f.band << ": " << status.error_message();
    EXPECT_EQ(result.strategy(), "auto");
    ASSERT_TRUE(result.usage().has_auto_choice()) << f.band;
    const arbor::v1::AutoChoice& c = result.usage().auto_choice();
    EXPECT_EQ(c.band(), f.band);
    EXPECT_EQ(c.strategy(), f.strategy) << f.band;
    EXPECT_EQ(c.n(), f.band == "easy" ? 0 : 4) << f.band;
    EXPECT_EQ(c.first_round_samples(), 4) << f.band;
    EXPECT_FALSE(result.answer().empty()) << f.band;
    if (f.candidates > 0) {
      EXPECT_EQ(result.candidates_size(), f.candidates) << f.band;
    } else {
      // The first round's 4 samples stay candidates beside the beams.
      EXPECT_GT(result.candidates_size(), 4) << f.band;
      EXPECT_GT(result.usage().steps(), 1) << f.band;
    }
  }
}

// The certainty probe through arborctl, the coordinator and the world's
// worker: best-of-4 and a beam search of 4 on an 8-number sum, with and
// without probing. The world's probes name the answer a branch is heading
// for from the middle of the solution on, so two agreeing probes stop a
// branch before it writes its last steps: fewer tokens, probes included, and
// the response says why it stopped. Probing never changes the sampled text:
// best-of-N's stopped samples are prefixes of the unprobed job's.
TEST_F(IntegrationTest, CertaintyProbeStopsSamplesEarly) {
  const std::string question = "add 3 5 7 11 13 17 19 23";
  auto solve = [&](const std::vector<std::string>& flags) {
    std::vector<std::string> args = {
        "solve", "--target=" + coordinator_.address, "--n=4", "--seed=7", "--max_candidates=4",
        "--json"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back(question);
    CtlResult r = Ctl(args);
    EXPECT_EQ(r.exit_code, 0) << absl::StrJoin(flags, " ") << ": " << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
  };
  for (const std::string strategy : {"best_of_n", "beam_search"}) {
    std::vector<std::string> plain_flags = {"--strategy=" + strategy};
    if (strategy == "beam_search") plain_flags.push_back("--beam_width=2");
    // High effort: two agreeing probes; one every step (16 tokens).
    std::vector<std::string> probe_flags = plain_flags;
    probe_flags.push_back("--certainty=high");
    probe_flags.push_back("--probe_interval=16");
    const nlohmann::json plain = solve(plain_flags);
    const nlohmann::json probed = solve(probe_flags);
    ASSERT_TRUE(plain.contains("usage") && probed.contains("usage")) << strategy;
    const std::string trace =
        absl::StrCat(strategy, "\nplain: ", plain.dump(), "\nprobed: ", probed.dump());
    EXPECT_EQ(plain["usage"]["probes"], 0) << trace;
    EXPECT_EQ(plain["stop_reason"], "completed") << trace;
    EXPECT_EQ(probed["stop_reason"], "certainty") << trace;
    EXPECT_GT(probed["usage"]["probes"].get<int64_t>(), 0) << trace;
    EXPECT_GT(probed["usage"]["probe_generated_tokens"].get<int64_t>(), 0) << trace;
    EXPECT_GE(probed["usage"]["certain_branches"].get<int64_t>(), 1) << trace;
    EXPECT_LT(probed["usage"]["generated_tokens"].get<int64_t>(),
              plain["usage"]["generated_tokens"].get<int64_t>())
        << trace;
    EXPECT_FALSE(probed["answer"].get<std::string>().empty()) << trace;
    int stopped = 0;
    for (const nlohmann::json& c : probed["candidates"]) {
      std::vector<std::string> steps = c["steps"];
      if (steps.back().find("**Final Answer**") == std::string::npos) continue;
      // Stopped by its probe: the last step is the phrase and the answer.
      ++stopped;
      EXPECT_THAT(steps.back(), HasSubstr("\\boxed{" + c["answer"].get<std::string>() + "}"))
          << trace;
      EXPECT_LT(steps.size(), 9u) << trace;  // 8 sums and the answer, unprobed
      if (strategy != "best_of_n") continue;
      steps.pop_back();
      bool prefix = false;
      for (const nlohmann::json& p : plain["candidates"]) {
        const std::vector<std::string> full = p["steps"];
        prefix = prefix || (steps.size() <= full.size() &&
                            std::equal(steps.begin(), steps.end(), full.begin()));
      }
      EXPECT_TRUE(prefix) << trace;
    }
    EXPECT_GE(stopped, 1) << trace;
  }
}

// A beam search or particle filter stopped by a step or reward-call cap still
// answers: the anytime reserve finishes its best branches greedily.
TEST_F(IntegrationTest, CappedTreeSearchesStillAnswer) {
  for (const std::string strategy : {"beam_search", "particle_filter"}) {
    for (const std::string cap : {"--max_steps=2", "--max_reward_calls=2"}) {
      CtlResult r =
          Ctl({"solve", "--target=" + coordinator_.address, "--strategy=" + strategy, "--n=4",
               "--beam_width=2", "--seed=3", "--json", cap, "add 3 5 7 11 13 17"});
      ASSERT_EQ(r.exit_code, 0) << strategy << " " << cap << ": " << r.err;
      const nlohmann::json response = nlohmann::json::parse(r.out);
      EXPECT_FALSE(response["answer"].get<std::string>().empty())
          << strategy << " " << cap << ": " << r.out;
      EXPECT_TRUE(response["candidates"][0]["finished"].get<bool>()) << r.out;
      EXPECT_TRUE(response["budget_exhausted"].get<bool>()) << r.out;
      EXPECT_EQ(response["stop_reason"], response["exhausted_by"]) << r.out;
      EXPECT_GE(response["usage"]["reserve_finished_branches"].get<int64_t>(), 1) << r.out;
    }
  }
}

TEST_F(IntegrationTest, WorkerKilledMidJobStillAnswers) {
  arbor::v1::SolveRequest request;
  request.set_question("add 3 5 7 11 13 17");
  request.set_job_id("kill-test-1");
  request.mutable_beam_search()->set_n(4);
  request.mutable_beam_search()->set_beam_width(2);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = stub_->SolveStream(&context, request);
  arbor::v1::SolveEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  const std::string routed = event.accepted().worker();
  const int victim = routed == workers_[0].address ? 0 : 1;
  ASSERT_EQ(workers_[victim].address, routed);
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_step());
  workers_[victim].process->Signal(SIGKILL);
  workers_[victim].process->Wait();
  arbor::v1::SolveResponse result;
  bool have_result = false;
  while (reader->Read(&event)) {
    if (event.has_result()) {
      result = event.result();
      have_result = true;
    }
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(have_result);
  EXPECT_EQ(result.answer(), "56");
  EXPECT_EQ(result.worker(), workers_[1 - victim].address);
  EXPECT_GE(result.usage().retries(), 1);
  const std::string metrics = HttpGet(coordinator_.metrics, "/metrics");
  EXPECT_THAT(metrics, HasSubstr("arbor_coordinator_endpoint_ejections_total{pool=\"workers\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("arbor_coordinator_endpoint_errors_total{"));
}

TEST_F(IntegrationTest, EachKindOfBadFieldIsRejectedByName) {
  struct Case {
    std::vector<std::string> flags;
    std::string question;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{}, "", "question: must not be empty"},
      {{}, "add \xff 1", "question: is not valid UTF-8"},
      {{"--strategy=beam_search", "--n=6", "--beam_width=4"},
       "add 1",
       "beam_search.n (6) must be divisible by beam_width (4)"},
      {{"--max_tokens=-5"}, "add 1", "budget.max_generated_tokens (-5)"},
      {{"--deadline_ms=-1"}, "add 1", "budget.deadline_ms"},
      {{"--top_p=2"}, "add 1", "sampling.top_p"},
      {{"--temperature=20"}, "add 1", "sampling.temperature"},
      {{"--max_step_tokens=40000"}, "add 1", "stop.max_step_tokens"},
      {{"--model=no-such-model"}, "add 1", "model: unknown model 'no-such-model'"},
      {{"--reward_model=no-prm"}, "add 1", "reward_model: unknown model 'no-prm'"},
      {{"--chat_template=alpaca"}, "add 1", "chat_template"},
      {{"--job_id=bad id"}, "add 1", "job_id"},
      {{"--strategy=particle_filter", "--n=2000"}, "add 1", "particle_filter.n (2000)"},
      {{"--strategy=auto", "--n=1"}, "add 1", "auto.n (1) must be in [2, 1024]"},
      {{"--strategy=auto", "--n=8", "--first_round=8"},
       "add 1",
       "auto.first_round_samples (8) must be in [2, 7]"},
      {{"--certainty=mid", "--probe_window=100"},
       "add 1",
       "best_of_n.certainty.window (100) must be in [1, 64]"},
      {{"--strategy=beam_search", "--certainty=low", "--probe_max_tokens=999"},
       "add 1",
       "beam_search.certainty.max_probe_tokens (999)"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"solve", "--target=" + coordinator_.address};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    args.push_back(c.question);
    CtlResult r = Ctl(args);
    EXPECT_EQ(r.exit_code, 1) << c.expected;
    EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT")) << c.expected;
    EXPECT_THAT(r.err, HasSubstr(c.expected));
  }
}

// Flags arborctl itself refuses, before any call.
TEST_F(IntegrationTest, BadCertaintyFlagsAreRefusedByArborctl) {
  CtlResult r = Ctl({"solve", "--target=" + coordinator_.address, "--certainty=extreme", "add 1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--certainty: unknown 'extreme'"));
  r = Ctl(
      {"solve", "--target=" + coordinator_.address, "--strategy=dvts", "--certainty=mid", "add 1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--certainty: only best_of_n and beam_search probe, not dvts"));
}

TEST_F(IntegrationTest, HealthAndInfo) {
  CtlResult r = Ctl({"health", "--target=" + coordinator_.address});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");
  r = Ctl({"info", "--json", "--target=" + workers_[0].address});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json info = nlohmann::json::parse(r.out);
  EXPECT_EQ(info["generator"]["model"], "arith-1");
  r = Ctl({"info", "--target=" + verifier_.address});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("verifier: "));
  EXPECT_THAT(r.out, HasSubstr("arith-prm"));
  r = Ctl({"health", "--target=127.0.0.1:1", "--timeout_ms=500"});
  EXPECT_EQ(r.exit_code, 1);
  // The wrong kind of server: a failure that says so.
  r = Ctl({"info", "--target=" + coordinator_.address});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("serves neither arbor.v1.Generator nor arbor.v1.Verifier"));
  r = Ctl({"info", "--json", "--target=" + workers_[0].address});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(r.out)["generator"]["kv_capacity_tokens"].is_number_integer())
      << r.out;
}

TEST_F(IntegrationTest, SigtermDrainsInFlightJobs) {
  arbor::v1::SolveRequest request;
  request.set_question("add 1 2 3 4 5 6");
  request.mutable_beam_search()->set_n(4);
  request.mutable_beam_search()->set_beam_width(2);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = stub_->SolveStream(&context, request);
  arbor::v1::SolveEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  coordinator_.process->Signal(SIGTERM);
  bool have_result = false;
  while (reader->Read(&event)) have_result |= event.has_result();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(have_result);
  EXPECT_EQ(coordinator_.process->Wait(), 0);
  // Drained: new calls are refused.
  arbor::v1::SolveResponse response;
  grpc::ClientContext late;
  late.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  EXPECT_FALSE(stub_->Solve(&late, request, &response).ok());
}

}  // namespace
}  // namespace arbor::testing
