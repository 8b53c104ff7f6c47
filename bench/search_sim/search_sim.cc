// search_sim: accuracy against compute for every strategy in the fake world
// (search/testing/fake_world.h: each step right with probability p, a PRM with
// Gaussian logit noise). Prints markdown tables; --out=FILE also writes them.
//
//   search_sim [--problems=200] [--out=docs/SEARCH_SIM.md]
//
// Table 1/2: N (samples, beams, particles) from 4 to 64 at two PRM noise
// levels; each cell is accuracy (selected answer right) and the mean tokens
// generated per problem. Table 3: a generated-token cap per problem at N = 16,
// the anytime behaviour (the best so far when the budget runs out).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/counter_rng.h"
#include "search/strategy.h"
#include "search/testing/fake_world.h"

namespace arbor::search {
namespace {

using testing::FakeGenerator;
using testing::FakeProblem;
using testing::FakeScorer;

struct Row {
  std::string name;
  std::function<StrategyVariant(int n)> make;
  bool needs_scorer = true;
};

std::vector<Row> Rows() {
  using S = BestOfNConfig::Selection;
  using PF = ParticleFilterConfig;
  return {
      {"greedy (N ignored)", [](int) { return GreedyConfig{}; }, false},
      {"best-of-N, majority vote",
       [](int n) { return BestOfNConfig{.n = n, .selection = S::kMajorityVote}; }, false},
      {"best-of-N, reward (last)", [](int n) { return BestOfNConfig{.n = n}; }},
      {"best-of-N, reward (min)",
       [](int n) { return BestOfNConfig{.n = n, .aggregation = Aggregation::kMin}; }},
      {"best-of-N, weighted vote",
       [](int n) { return BestOfNConfig{.n = n, .selection = S::kWeightedVote}; }},
      {"best-of-N, best-of-majority",
       [](int n) { return BestOfNConfig{.n = n, .selection = S::kBestOfMajority}; }},
      {"beam search (M=4)", [](int n) { return BeamSearchConfig{.n = n, .beam_width = 4}; }},
      {"beam search (M=4, lookahead 1)",
       [](int n) { return BeamSearchConfig{.n = n, .beam_width = 4, .lookahead = 1}; }},
      {"DVTS (M=4)", [](int n) { return DvtsConfig{.n = n, .beam_width = 4}; }},
      {"particle filter", [](int n) { return PF{.n = n}; }},
      {"particle filter (systematic, ESS<0.5)",
       [](int n) {
         return PF{.n = n, .resampling = PF::Resampling::kSystematic, .ess_threshold = 0.5f};
       }},
      {"particle filter (cumulative, weighted vote)",
       [](int n) {
         return PF{.n = n,
                   .weight_update = PF::WeightUpdate::kCumulative,
                   .final_selection = PF::FinalSelection::kWeightedVote};
       }},
  };
}

// A fixed mix of difficulties: per-step accuracy in [0.5, 0.95), 3 to 8 steps.
std::vector<FakeProblem> Problems(int count) {
  std::vector<FakeProblem> problems;
  for (int i = 0; i < count; ++i) {
    FakeProblem p;
    p.id = i;
    p.p = 0.5 + 0.45 * CounterUniform(2024, 0, static_cast<uint64_t>(i));
    p.num_steps = 3 + static_cast<int>(CounterRandomBits(2024, 1, static_cast<uint64_t>(i)) % 6);
    problems.push_back(p);
  }
  return problems;
}

// Fake steps are 4 to 15 tokens; a 32-token step cap keeps the ratio of real
// workloads (steps of ~100 tokens under the default 256 cap).
StrategyConfig BaseConfig() {
  StrategyConfig config;
  config.stop.max_step_tokens = 32;
  return config;
}

struct Cell {
  double accuracy = 0.0;
  double tokens = 0.0;
  double exhausted = 0.0;
};

Cell Evaluate(const StrategyConfig& config, const std::vector<FakeProblem>& problems, double noise,
              bool needs_scorer) {
  Cell cell;
  for (const FakeProblem& problem : problems) {
    FakeGenerator generator;
    FakeScorer scorer(noise, /*seed=*/static_cast<uint64_t>(problem.id) * 31 + 7);
    JobContext job;
    job.question = problem.Question();
    job.seed = static_cast<uint64_t>(problem.id) + 1;
    auto result = RunStrategy(config, job, generator, needs_scorer ? &scorer : nullptr);
    if (!result.ok()) {
      std::cerr << "search_sim: " << result.status() << "\n";
      std::exit(1);
    }
    cell.accuracy += testing::IsRightAnswer(problem, result->answer) ? 1.0 : 0.0;
    cell.tokens += static_cast<double>(result->usage.generated_tokens);
    cell.exhausted += result->budget_exhausted ? 1.0 : 0.0;
  }
  const double n = static_cast<double>(problems.size());
  cell.accuracy /= n;
  cell.tokens /= n;
  cell.exhausted /= n;
  return cell;
}

std::string Table(const std::vector<FakeProblem>& problems, double noise) {
  const std::vector<int> ns = {4, 8, 16, 32, 64};
  std::ostringstream out;
  out << "| strategy |";
  for (int n : ns) out << " N=" << n << " |";
  out << "\n|---|";
  for (size_t i = 0; i < ns.size(); ++i) out << "---|";
  out << "\n";
  for (const Row& row : Rows()) {
    out << "| " << row.name << " |";
    for (int n : ns) {
      StrategyConfig config = BaseConfig();
      config.strategy = row.make(n);
      const Cell cell = Evaluate(config, problems, noise, row.needs_scorer);
      out << absl::StrFormat(" %.1f%% (%.0f tok) |", 100.0 * cell.accuracy, cell.tokens);
    }
    out << "\n";
  }
  return out.str();
}

std::string BudgetTable(const std::vector<FakeProblem>& problems, double noise) {
  const std::vector<int64_t> caps = {300, 600, 1200, 2400, 4800};
  std::ostringstream out;
  out << "| strategy (N=16) |";
  for (int64_t cap : caps) out << " " << cap << " tok |";
  out << "\n|---|";
  for (size_t i = 0; i < caps.size(); ++i) out << "---|";
  out << "\n";
  for (const Row& row : Rows()) {
    out << "| " << row.name << " |";
    for (int64_t cap : caps) {
      StrategyConfig config = BaseConfig();
      config.strategy = row.make(16);
      config.budget.max_generated_tokens = cap;
      const Cell cell = Evaluate(config, problems, noise, row.needs_scorer);
      out << absl::StrFormat(" %.1f%% (%.0f%% cut) |", 100.0 * cell.accuracy,
                             100.0 * cell.exhausted);
    }
    out << "\n";
  }
  return out.str();
}

int Main(int argc, char** argv) {
  int num_problems = 200;
  std::string out_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--problems=", 0) == 0) {
      num_problems = std::atoi(arg.c_str() + 11);
    } else if (arg.rfind("--out=", 0) == 0) {
      out_path = arg.substr(6);
    } else {
      std::cerr << "usage: search_sim [--problems=200] [--out=FILE]\n";
      return 2;
    }
  }
  if (num_problems < 1) {
    std::cerr << "search_sim: --problems must be >= 1\n";
    return 2;
  }
  const std::vector<FakeProblem> problems = Problems(num_problems);
  double base_rate = 0.0;
  for (const FakeProblem& p : problems) base_rate += std::pow(p.p, p.num_steps);
  base_rate /= static_cast<double>(problems.size());

  std::ostringstream doc;
  doc << "# Search strategies in the fake world\n\n"
      << "Generated by `bench/search_sim` (`build-search/bin/search_sim "
         "--out=docs/SEARCH_SIM.md`); "
         "do not edit by hand.\n\n"
      << "The fake world (`search/testing/fake_world.h`): " << num_problems
      << " problems; each step of a solution is right with probability p (uniform in "
         "[0.5, 0.95) per problem), a solution has 3 to 8 steps, one wrong step spoils it, and a "
         "spoiled solution ends with one of three wrong answers. The PRM scores a prefix "
         "sigmoid(+-3 + noise * z), z ~ N(0, 1). A single sample is right "
      << absl::StrFormat("%.1f%%", 100.0 * base_rate)
      << " of the time on average. Step cap 32 tokens (fake steps are 4 to 15 tokens); default "
         "parameters otherwise (temperature 0.8, 40 iterations, `\\n\\n` steps). Cells: accuracy "
         "of the selected answer (mean tokens "
         "generated per problem).\n\n";
  for (double noise : {1.5, 4.0}) {
    doc << "## PRM noise " << noise << "\n\n" << Table(problems, noise) << "\n";
  }
  doc << "## Anytime: generated-token cap per problem (PRM noise 1.5)\n\n"
      << "Cells: accuracy (share of problems where the cap stopped the search and the best "
         "candidate so far was returned).\n\n"
      << BudgetTable(problems, 1.5);
  std::cout << doc.str();
  if (!out_path.empty()) {
    std::ofstream file(out_path);
    file << doc.str();
    if (!file) {
      std::cerr << "search_sim: cannot write " << out_path << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace arbor::search

int main(int argc, char** argv) { return arbor::search::Main(argc, argv); }
