// arbor-allinone end to end, as real processes: the all-in-one service on the
// bundled models (models/policy, models/prm) and arborctl as the client. One
// held-out problem is solved with greedy and with best-of-N over the PRM; the
// answers come back with usage accounting, the PRM's per-step scores, and the
// service drains cleanly on SIGTERM. The certainty probe (its phrase sent as
// text to the worker) and strategy auto run on the same models; the policy
// served as an LLM judge decides a best-of-N tournament. A missing model
// folder is a clear error.
#include <signal.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/subprocess.h"

namespace arbor::testing {
namespace {

std::string SourcePath(const std::string& relative) {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  return absl::StrCat(dir == nullptr ? "." : dir, "/", relative);
}

nlohmann::json FirstHeldOutProblem() {
  std::ifstream in(SourcePath("models/data/heldout.jsonl"));
  std::string line;
  EXPECT_TRUE(std::getline(in, line)) << "models/data/heldout.jsonl is missing or empty";
  return nlohmann::json::parse(line);
}

class AllInOneTest : public ::testing::Test {
 protected:
  void SetUp() override { StartService({}); }

  void StartService(const std::vector<std::string>& extra_flags) {
    std::vector<std::string> argv = {BinaryPath("arbor-allinone"), "--port=0", "--metrics_port=-1",
                                     "--threads=2", "--kv_cache_tokens=16384",
                                     "--reward_kv_cache_tokens=16384"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    auto started = Subprocess::Start(argv);
    ASSERT_TRUE(started.ok()) << started.status();
    service_ = std::move(*started);
    auto address = service_->WaitForLine("listening on ", absl::Seconds(60));
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = std::string(absl::StripAsciiWhitespace(*address));
  }

  // Runs `arborctl solve --json` with `flags`; returns the parsed response.
  nlohmann::json Solve(const std::vector<std::string>& flags, const std::string& question) {
    std::vector<std::string> argv = {BinaryPath("arborctl"), "solve",
                                     "--target=" + address_, "--json",
                                     "--stream=false",       "--timeout_ms=120000"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back(question);
    auto client = Subprocess::Start(argv);
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return {};
    std::string out = (*client)->ReadAll(absl::Seconds(150));
    EXPECT_EQ((*client)->Wait(), 0) << out;
    return nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  }

  std::unique_ptr<Subprocess> service_;
  std::string address_;
};

int64_t Int(const nlohmann::json& j, const char* key) {
  // proto3 JSON writes int64 as a string.
  if (!j.contains(key)) return 0;
  if (j[key].is_number()) return j[key].get<int64_t>();
  int64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(j[key].get<std::string>(), &v)) << key;
  return v;
}

TEST_F(AllInOneTest, SolvesAHeldOutProblemWithGreedyAndBestOfN) {
  const nlohmann::json problem = FirstHeldOutProblem();
  const std::string question = problem["question"].get<std::string>();

  nlohmann::json greedy = Solve({"--strategy=greedy"}, question);
  ASSERT_FALSE(greedy.is_discarded());
  EXPECT_EQ(greedy["strategy"], "greedy");
  int64_t answer;
  EXPECT_TRUE(absl::SimpleAtoi(greedy["answer"].get<std::string>(), &answer))
      << "greedy answer is not a number: " << greedy.dump();
  EXPECT_THAT(greedy["text"].get<std::string>(), ::testing::HasSubstr("The answer is"));
  EXPECT_GT(Int(greedy["usage"], "generated_tokens"), 0);
  EXPECT_EQ(Int(greedy["usage"], "reward_tokens"), 0);

  // Best-of-4 over the PRM: the verifier of the same process scored every step.
  nlohmann::json best = Solve(
      {"--strategy=best_of_n", "--n=4", "--selection=reward", "--max_candidates=4"}, question);
  ASSERT_FALSE(best.is_discarded());
  EXPECT_EQ(best["strategy"], "best_of_n");
  EXPECT_TRUE(absl::SimpleAtoi(best["answer"].get<std::string>(), &answer)) << best.dump();
  const nlohmann::json& usage = best["usage"];
  EXPECT_GT(Int(usage, "generated_tokens"), Int(greedy["usage"], "generated_tokens"));
  EXPECT_GT(Int(usage, "reward_tokens"), 0);
  EXPECT_GT(Int(usage, "reward_calls"), 0);
  EXPECT_GT(Int(usage, "wall_time_ms"), 0);
  ASSERT_TRUE(best["candidates"].is_array());
  ASSERT_FALSE(best["candidates"].empty());
  for (const nlohmann::json& c : best["candidates"]) {
    ASSERT_EQ(c["steps"].size(), c["step_scores"].size()) << c.dump();
    for (const nlohmann::json& s : c["step_scores"]) {
      EXPECT_GE(s.get<double>(), 0.0);
      EXPECT_LE(s.get<double>(), 1.0);
    }
  }

  service_->Signal(SIGTERM);
  EXPECT_EQ(service_->Wait(), 0);
}

// The certainty probe on the bundled policy, through the worker's
// suffix_text: the probe phrase "The answer is " is tokenized by the worker
// after each sample's tokens and the policy completes it. With a window of
// one probe (k = 1) the first probe that names a number stops its sample, so
// every sample stops after its first step: fewer tokens than the same job
// unprobed (the policy names its running value there, so this says nothing
// about accuracy; docs/SCALING.md measures that). Then strategy auto names
// its choice.
TEST_F(AllInOneTest, CertaintyProbeAndAutoOnTheBundledModels) {
  const std::string question = FirstHeldOutProblem()["question"].get<std::string>();
  const std::vector<std::string> best_of_4 = {"--strategy=best_of_n", "--n=4", "--seed=3",
                                              "--max_candidates=4"};
  nlohmann::json plain = Solve(best_of_4, question);
  std::vector<std::string> flags = best_of_4;
  flags.insert(flags.end(), {"--certainty=high", "--probe_window=1", "--probe_interval=4",
                             "--probe_text=The answer is "});
  nlohmann::json probed = Solve(flags, question);
  ASSERT_FALSE(plain.is_discarded() || probed.is_discarded());
  EXPECT_EQ(plain["stop_reason"], "completed") << plain.dump();
  EXPECT_EQ(probed["stop_reason"], "certainty") << probed.dump();
  EXPECT_EQ(Int(probed["usage"], "certain_branches"), 4) << probed.dump();
  EXPECT_EQ(Int(probed["usage"], "probes"), 4) << probed.dump();
  EXPECT_GT(Int(probed["usage"], "probe_generated_tokens"), 0);
  EXPECT_LT(Int(probed["usage"], "generated_tokens"), Int(plain["usage"], "generated_tokens"));
  for (const nlohmann::json& c : probed["candidates"]) {
    const std::vector<std::string> steps = c["steps"];
    ASSERT_EQ(steps.size(), 2u) << c.dump();  // one step, then the probe's
    EXPECT_THAT(steps[1], ::testing::StartsWith("The answer is ")) << c.dump();
    int64_t value;
    EXPECT_TRUE(absl::SimpleAtoi(c["answer"].get<std::string>(), &value)) << c.dump();
  }

  nlohmann::json automatic = Solve({"--strategy=auto", "--n=8", "--seed=3"}, question);
  ASSERT_FALSE(automatic.is_discarded());
  EXPECT_EQ(automatic["strategy"], "auto");
  const nlohmann::json& choice = automatic["usage"]["auto_choice"];
  ASSERT_TRUE(choice.is_object()) << automatic.dump();
  EXPECT_THAT(choice["band"].get<std::string>(), ::testing::AnyOf("easy", "medium", "hard"));
  EXPECT_EQ(Int(choice, "first_round_samples"), 4);
}

// The bundled policy as the in-process verifier, an LLM judge (--reward_kind
// llm_judge; "Y"/"N" for Score, the default "A"/"B" for Compare), and a
// best-of-16 tournament over the distinct answers through arborctl.
class AllInOneJudgeTest : public AllInOneTest {
 protected:
  void SetUp() override {
    StartService({"--reward_model=" + SourcePath("models/policy"), "--reward_kind=llm_judge",
                  "--positive_token=Y", "--negative_token=N"});
  }
};

TEST_F(AllInOneJudgeTest, ATournamentThroughArborctlIsJudgedByThePolicy) {
  nlohmann::json result = Solve(
      {"--strategy=best_of_n", "--n=16", "--selection=tournament", "--temperature=1.5",
       "--seed=3", "--max_candidates=16"},
      "Start with 838. Subtract 630, add 631, add 605, multiply by 3, subtract 663. What is the "
      "result?");
  ASSERT_FALSE(result.is_discarded());
  EXPECT_EQ(result["strategy"], "best_of_n");
  ASSERT_FALSE(result["candidates"].empty());
  EXPECT_EQ(result["answer"], result["candidates"][0]["answer"]);
  const nlohmann::json& usage = result["usage"];
  EXPECT_GT(Int(usage, "compare_calls"), 0) << result.dump();
  EXPECT_EQ(Int(usage, "tournament_rounds"), Int(usage, "compare_calls"));
  EXPECT_GE(Int(usage, "compared_pairs"), Int(usage, "compare_calls"));
  EXPECT_EQ(Int(usage, "reward_calls"), Int(usage, "compare_calls"));
  EXPECT_GT(Int(usage, "reward_tokens"), 0);
  service_->Signal(SIGTERM);
  EXPECT_EQ(service_->Wait(), 0);
}

TEST(AllInOneFlagsTest, MissingModelFolderIsNamed) {
  const std::string stderr_path = ::testing::TempDir() + "/allinone_missing_model.err";
  auto service = Subprocess::Start(
      {BinaryPath("arbor-allinone"), "--port=0", "--metrics_port=-1", "--model=/no/such/model"},
      stderr_path);
  ASSERT_TRUE(service.ok()) << service.status();
  EXPECT_EQ((*service)->Wait(), 2);
  std::ifstream err(stderr_path);
  std::string text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, ::testing::HasSubstr("/no/such/model"));
}

}  // namespace
}  // namespace arbor::testing
