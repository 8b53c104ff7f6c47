// arbor-loadgen (bench/e2e) against arbor-allinone on the bundled models, as
// real processes on loopback: a small closed-loop and open-loop case finish
// every job with usage accounted, and the prefix-cache-off baseline
// (--prefix_cache=false) gives the same answers as the default for the same
// seeds while serving no token from either cache; the search-and-learn
// baseline (--driver=stepwise, the search run by the load generator over
// arbor-worker and arbor-verifier) gives the coordinator's answers.
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/services.h"
#include "tests/integration/subprocess.h"

namespace arbor::testing {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return absl::StrCat(dir == nullptr ? "/tmp" : dir, "/arbor_loadgen_test_", getpid(), "_", name);
}

std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

Service StartAllInOne(const std::vector<std::string>& extra_flags) {
  std::vector<std::string> argv = {BinaryPath("arbor-allinone"), "--threads=1",
                                   "--kv_cache_tokens=16384", "--reward_kv_cache_tokens=16384"};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  return StartServiceOrFail(std::move(argv));
}

// Runs arbor-loadgen with `flags` against `address`; returns its JSON summary.
nlohmann::json RunLoadgen(const std::string& address, std::vector<std::string> flags) {
  std::vector<std::string> argv = {BinaryPath("arbor-loadgen"),
                                   "--target=" + address,
                                   "--n=4",
                                   "--beam_width=2",
                                   "--iterations=2",
                                   "--step_tokens=16",
                                   "--prompt_words=8"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto client = Subprocess::Start(argv);
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return {};
  const std::string out = (*client)->ReadAll(absl::Seconds(240));
  EXPECT_EQ((*client)->Wait(), 0) << out;
  return nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
}

TEST(LoadgenTest, ClosedAndOpenLoopFinishEveryJob) {
  Service service = StartAllInOne({});
  ASSERT_FALSE(service.address.empty());
  const nlohmann::json closed = RunLoadgen(
      service.address,
      {"--strategy=beam_search", "--mode=closed", "--concurrency=2", "--jobs=4", "--label=closed"});
  ASSERT_TRUE(closed.is_object()) << closed;
  EXPECT_EQ(closed["jobs"], 4);
  EXPECT_EQ(closed["failed"], 0);
  EXPECT_GT(closed["generated_tokens"].get<int64_t>(), 0);
  EXPECT_GT(closed["reward_tokens"].get<int64_t>(), 0);
  // The second step of every beam reuses the first step's blocks.
  EXPECT_GT(closed["prefix_hit_ratio"].get<double>(), 0.0);
  EXPECT_LE(closed["p50_s"].get<double>(), closed["p99_s"].get<double>());
  // The usage's time breakdown accounts for the jobs' wall time (the phases
  // are disjoint; rounding and clocks may leave a little over or under).
  double shares = 0;
  for (const auto& [phase, share] : closed["time_shares"].items()) shares += share.get<double>();
  EXPECT_GT(closed["time_shares"]["worker_compute"].get<double>(), 0.0);
  EXPECT_GT(shares, 0.8);
  EXPECT_LT(shares, 1.1);

  const nlohmann::json open = RunLoadgen(
      service.address,
      {"--strategy=particle_filter", "--mode=open", "--rate=4", "--duration_s=2", "--label=open"});
  ASSERT_TRUE(open.is_object()) << open;
  EXPECT_GT(open["jobs"].get<int>(), 0);
  EXPECT_EQ(open["failed"], 0);
  EXPECT_GT(open["jobs_per_min"].get<double>(), 0.0);
}

TEST(LoadgenTest, PrefixCacheOffGivesTheSameAnswersWithNoCacheHits) {
  const std::string cached_answers = TempPath("cached.jsonl");
  const std::string uncached_answers = TempPath("uncached.jsonl");
  const std::vector<std::string> job = {"--strategy=beam_search", "--mode=closed",
                                        "--concurrency=2", "--jobs=3", "--seed=7"};
  {
    Service service = StartAllInOne({});
    ASSERT_FALSE(service.address.empty());
    std::vector<std::string> flags = job;
    flags.push_back("--answers_out=" + cached_answers);
    const nlohmann::json summary = RunLoadgen(service.address, flags);
    ASSERT_TRUE(summary.is_object()) << summary;
    EXPECT_GT(summary["prefix_cache_hit_tokens"].get<int64_t>(), 0);
  }
  {
    Service service = StartAllInOne({"--prefix_cache=false"});
    ASSERT_FALSE(service.address.empty());
    std::vector<std::string> flags = job;
    flags.push_back("--answers_out=" + uncached_answers);
    const nlohmann::json summary = RunLoadgen(service.address, flags);
    ASSERT_TRUE(summary.is_object()) << summary;
    EXPECT_EQ(summary["failed"], 0);
    EXPECT_EQ(summary["prefix_cache_hit_tokens"], 0);
    EXPECT_EQ(summary["reward_cache_hit_tokens"], 0);
  }
  const std::vector<nlohmann::json> cached = ReadJsonLines(cached_answers);
  const std::vector<nlohmann::json> uncached = ReadJsonLines(uncached_answers);
  ASSERT_EQ(cached.size(), 3u);
  ASSERT_EQ(uncached.size(), 3u);
  int64_t cached_prefill = 0, uncached_prefill = 0;
  for (size_t i = 0; i < cached.size(); ++i) {
    EXPECT_EQ(cached[i]["job"], uncached[i]["job"]);
    EXPECT_EQ(cached[i]["text"], uncached[i]["text"]) << "job " << i;
    EXPECT_EQ(cached[i]["answer"], uncached[i]["answer"]) << "job " << i;
    EXPECT_EQ(cached[i]["generated_tokens"], uncached[i]["generated_tokens"]) << "job " << i;
    // Without the caches every prompt token is computed (a job whose beams all
    // ended in their first step had nothing to reuse).
    EXPECT_GE(uncached[i]["prefill_tokens"].get<int64_t>(),
              cached[i]["prefill_tokens"].get<int64_t>());
    cached_prefill += cached[i]["prefill_tokens"].get<int64_t>();
    uncached_prefill += uncached[i]["prefill_tokens"].get<int64_t>();
  }
  EXPECT_GT(uncached_prefill, cached_prefill);
  std::remove(cached_answers.c_str());
  std::remove(uncached_answers.c_str());
}

TEST(LoadgenTest, StepwiseBaselineGivesTheCoordinatorsAnswers) {
  const std::string models = ModelsDir();
  Service worker = StartServiceOrFail({BinaryPath("arbor-worker"), "--model=" + models + "/policy",
                                       "--threads=1", "--kv_cache_tokens=16384"});
  Service verifier = StartServiceOrFail({BinaryPath("arbor-verifier"), "--model=" + models + "/prm",
                                         "--threads=1", "--kv_cache_tokens=16384"});
  ASSERT_FALSE(worker.address.empty());
  ASSERT_FALSE(verifier.address.empty());
  Service coordinator =
      StartServiceOrFail({BinaryPath("arbor-coordinator"), "--workers=" + worker.address,
                          "--verifiers=" + verifier.address, "--health_interval_ms=200"});
  ASSERT_FALSE(coordinator.address.empty());

  for (const std::string strategy : {"beam_search", "particle_filter"}) {
    SCOPED_TRACE(strategy);
    const std::string via_coordinator = TempPath(strategy + "_coordinator.jsonl");
    const std::string stepwise = TempPath(strategy + "_stepwise.jsonl");
    const std::vector<std::string> job = {"--strategy=" + strategy, "--mode=closed",
                                          "--concurrency=2", "--jobs=3", "--seed=11"};
    std::vector<std::string> flags = job;
    flags.push_back("--answers_out=" + via_coordinator);
    const nlohmann::json a = RunLoadgen(coordinator.address, flags);
    ASSERT_TRUE(a.is_object()) << a;
    EXPECT_EQ(a["driver"], "coordinator");
    flags = job;
    flags.insert(flags.end(), {"--driver=stepwise", "--worker=" + worker.address,
                               "--verifier=" + verifier.address, "--answers_out=" + stepwise});
    const nlohmann::json b = RunLoadgen("unused:1", flags);
    ASSERT_TRUE(b.is_object()) << b;
    EXPECT_EQ(b["driver"], "stepwise");
    EXPECT_EQ(b["failed"], 0);
    EXPECT_GT(b["reward_calls"].get<int64_t>(), 0);
    EXPECT_EQ(b["generated_tokens"], a["generated_tokens"]);

    const std::vector<nlohmann::json> expected = ReadJsonLines(via_coordinator);
    const std::vector<nlohmann::json> actual = ReadJsonLines(stepwise);
    ASSERT_EQ(expected.size(), 3u);
    ASSERT_EQ(actual.size(), 3u);
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(expected[i]["text"], actual[i]["text"]) << "job " << i;
      EXPECT_EQ(expected[i]["answer"], actual[i]["answer"]) << "job " << i;
      EXPECT_EQ(expected[i]["generated_tokens"], actual[i]["generated_tokens"]) << "job " << i;
    }
    std::remove(via_coordinator.c_str());
    std::remove(stepwise.c_str());
  }
}

}  // namespace
}  // namespace arbor::testing
