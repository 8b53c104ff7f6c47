// arbor-scaling-bench: accuracy against compute for every search strategy,
// measured through a running coordinator (arbor-allinone or a full stack).
// Sends held-out problems (JSONL: question, answer) as Reasoning.Solve jobs
// for each strategy and N, checks each answer against the known one, and
// writes one CSV row per (strategy, N): accuracy, mean generated tokens,
// reward tokens and job wall time per problem. Optionally dumps the
// candidates (steps and per-step PRM scores) of one configuration as JSONL,
// for the PRM step-level AUROC (bench/quality/prm_auroc.py).
//   arbor-scaling-bench --target 127.0.0.1:50051 --problems models/data/heldout.jsonl
//       --num_problems 300 --ns 1,2,4,8,16,32 --concurrency 16 --out docs/scaling.csv
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Coordinator address host:port");
ABSL_FLAG(std::string, problems, "models/data/heldout.jsonl",
          "JSONL file of problems with \"question\" and \"answer\"");
ABSL_FLAG(int, num_problems, 300, "Problems used (the first ones of the file)");
ABSL_FLAG(std::string, strategies,
          "greedy,best_of_n_reward,best_of_n_weighted_vote,majority_vote,beam_search,dvts,"
          "particle_filter",
          "Comma-separated strategies");
ABSL_FLAG(std::string, ns, "1,2,4,8,16,32", "Comma-separated N (samples/beams/particles)");
ABSL_FLAG(int, concurrency, 16, "Jobs in flight at once");
ABSL_FLAG(int, beam_width, 4, "Beam width M of beam search and DVTS (capped at N)");
ABSL_FLAG(int, mcts_width, 2, "Children per MCTS expansion (capped at N)");
ABSL_FLAG(bool, mcts_greedy_rollouts, false, "MCTS rollouts at temperature 0 (default: sampled)");
ABSL_FLAG(bool, mcts_argmax, false,
          "MCTS picks the top-scored candidate (default: the PRM-weighted vote)");
ABSL_FLAG(int, iterations, 0,
          "num_iterations of beam_search, dvts and the particle filters (particle_gibbs: per "
          "sweep); 0: the service default (40). A small value makes the last iteration, "
          "generated to EOS in one piece, write several steps (docs/SCALING.md, round 7)");
ABSL_FLAG(uint64_t, seed, 1, "Seed of every job (same seed, same results)");
ABSL_FLAG(int, timeout_ms, 600000, "Deadline of one job");
ABSL_FLAG(std::string, out, "", "CSV written (appended rows keep a header once); empty: stdout");
ABSL_FLAG(int, probe_interval, 16,
          "best_of_n_certainty / beam_search_certainty: tokens between certainty probes");
ABSL_FLAG(std::string, probe_text, "The answer is ",
          "best_of_n_certainty / beam_search_certainty: the probe phrase");
ABSL_FLAG(std::string, dump_candidates, "",
          "STRATEGY:N whose candidates (steps, step scores) are written to --candidates_out");
ABSL_FLAG(std::string, candidates_out, "", "JSONL file of the dumped candidates");
ABSL_FLAG(std::string, answers_out, "",
          "JSONL file, one line per job: strategy, n, problem, answer, correct, and oracle (some "
          "returned candidate has the right answer), for paired comparisons; empty: none");

namespace {

struct Problem {
  std::string question;
  std::string answer;
};

std::vector<Problem> LoadProblems(const std::string& path, int limit) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "arbor-scaling-bench: cannot read --problems %s\n", path.c_str());
    std::exit(2);
  }
  std::vector<Problem> problems;
  std::string line;
  int line_number = 0;
  while (static_cast<int>(problems.size()) < limit && std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("question") || !j.contains("answer")) {
      std::fprintf(stderr, "arbor-scaling-bench: %s:%d: not a JSON object with question/answer\n",
                   path.c_str(), line_number);
      std::exit(2);
    }
    Problem p;
    p.question = j["question"].get<std::string>();
    p.answer = j["answer"].is_string() ? j["answer"].get<std::string>() : j["answer"].dump();
    problems.push_back(std::move(p));
  }
  return problems;
}

// Answers compare as integers when both parse, else as stripped strings.
bool SameAnswer(absl::string_view got, absl::string_view want) {
  got = absl::StripAsciiWhitespace(got);
  want = absl::StripAsciiWhitespace(want);
  int64_t a, b;
  if (absl::SimpleAtoi(got, &a) && absl::SimpleAtoi(want, &b)) return a == b;
  return !got.empty() && got == want;
}

bool FillStrategy(const std::string& strategy, int n, int beam_width, int mcts_width,
                  arbor::v1::SolveRequest& r) {
  const int m = std::max(1, std::min(beam_width, n));
  if (strategy == "greedy") {
    r.mutable_greedy();
  } else if (strategy == "best_of_n_reward") {
    r.mutable_best_of_n()->set_n(n);
    r.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_REWARD);
  } else if (strategy == "best_of_n_weighted_vote") {
    r.mutable_best_of_n()->set_n(n);
    r.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_WEIGHTED_VOTE);
  } else if (strategy == "best_of_n_tournament") {
    // A knockout over the distinct answers judged by the verifier's Compare
    // (it must be an llm_judge: run.sh REWARD_KIND=llm_judge; docs/SCALING.md).
    r.mutable_best_of_n()->set_n(n);
    r.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_TOURNAMENT);
  } else if (strategy == "majority_vote") {
    r.mutable_best_of_n()->set_n(n);
    r.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE);
  } else if (strategy == "beam_search") {
    if (n % m != 0) return false;
    r.mutable_beam_search()->set_n(n);
    r.mutable_beam_search()->set_beam_width(m);
  } else if (strategy == "dvts") {
    if (n % m != 0) return false;
    r.mutable_dvts()->set_n(n);
    r.mutable_dvts()->set_beam_width(m);
  } else if (strategy == "particle_filter") {
    r.mutable_particle_filter()->set_n(n);
  } else if (strategy == "particle_filter_entropic") {
    r.mutable_particle_filter()->set_n(n);
    r.mutable_particle_filter()->set_entropic(true);
  } else if (strategy == "particle_gibbs") {
    // N particles in all: 2 sweeps of N/2, one reference particle from N = 4.
    if (n < 2) return false;
    r.mutable_particle_gibbs()->mutable_filter()->set_n(n / 2);
    r.mutable_particle_gibbs()->set_num_sweeps(2);
    r.mutable_particle_gibbs()->set_num_ref_particles(n >= 4 ? 1 : 0);
  } else if (strategy == "mcts") {
    // N simulations of width min(2, N), each evaluated by a rollout to EOS
    // (sampled at the job's temperature; the PRM-weighted vote picks: the
    // search library's defaults): every simulation gives a finished,
    // scored candidate. Width 2 met the goal at more N than width 4, which
    // spent its tokens on siblings never visited (docs/SCALING.md, round 5).
    r.mutable_mcts()->set_num_simulations(n);
    r.mutable_mcts()->set_max_width(std::max(1, std::min(mcts_width, n)));
    r.mutable_mcts()->set_rollouts(true);
    r.mutable_mcts()->set_greedy_rollouts(absl::GetFlag(FLAGS_mcts_greedy_rollouts));
    if (absl::GetFlag(FLAGS_mcts_argmax)) {
      r.mutable_mcts()->set_final_selection(arbor::v1::Mcts::FINAL_SELECTION_ARGMAX);
    }
  } else if (strategy == "best_of_n_adaptive_weighted_vote" ||
             strategy == "best_of_n_adaptive_reward") {
    // Rounds of max(4, N/8) samples up to N, until the PRM-weighted vote is
    // decided (the service's default stop_agreement; search/strategy.h).
    r.mutable_best_of_n()->set_n(n);
    r.mutable_best_of_n()->set_selection(strategy == "best_of_n_adaptive_reward"
                                             ? arbor::v1::BestOfN::SELECTION_REWARD
                                             : arbor::v1::BestOfN::SELECTION_WEIGHTED_VOTE);
    r.mutable_best_of_n()->set_round_size(std::max(1, std::min(n, std::max(4, n / 8))));
  } else if (strategy == "auto") {
    // A first round of min(4, N/2) samples, the rest by the prompt's band.
    if (n < 4) return false;
    r.mutable_auto_()->set_n(n);
    r.mutable_auto_()->set_first_round_samples(std::min(4, n / 2));
    r.mutable_auto_()->set_beam_width(std::min(4, n - std::min(4, n / 2)));
  } else if (strategy == "best_of_n_certainty" || strategy == "beam_search_certainty") {
    // The certainty probe sized for the bundled policy (docs/SCALING.md,
    // "Certainty probe"): it writes "The answer is N" in solutions of about
    // 75 tokens, so the probe phrase is its own and K = 16; k = 2 (high).
    arbor::v1::Certainty* c;
    if (strategy == "best_of_n_certainty") {
      r.mutable_best_of_n()->set_n(n);
      r.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_WEIGHTED_VOTE);
      c = r.mutable_best_of_n()->mutable_certainty();
    } else {
      if (n % m != 0) return false;
      r.mutable_beam_search()->set_n(n);
      r.mutable_beam_search()->set_beam_width(m);
      c = r.mutable_beam_search()->mutable_certainty();
    }
    c->set_effort(arbor::v1::Certainty::EFFORT_HIGH);
    c->set_interval_tokens(absl::GetFlag(FLAGS_probe_interval));
    c->set_probe_text(absl::GetFlag(FLAGS_probe_text));
  } else {
    std::fprintf(stderr, "arbor-scaling-bench: unknown strategy '%s' in --strategies\n",
                 strategy.c_str());
    std::exit(2);
  }
  return true;
}

struct Totals {
  int64_t correct = 0, answered = 0, failed = 0, exhausted = 0;
  int64_t generated = 0, reward = 0, wall_ms = 0;
  // The certainty probe's tokens and the jobs it stopped; strategy auto's
  // bands (easy, medium, hard) and the accuracy within each.
  int64_t probe_tokens = 0, certain_jobs = 0, certain_branches = 0;
  // Tournament selection: compare calls, pairs judged, jobs that fell back.
  int64_t compare_calls = 0, compared_pairs = 0, tournament_fallbacks = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> bands;  // band: (jobs, correct)
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "arbor-scaling-bench --target HOST:PORT [--problems FILE] [--num_problems N] "
      "[--strategies a,b] [--ns 1,2,4] [--out FILE.csv]");
  absl::ParseCommandLine(argc, argv);
  const std::vector<Problem> problems =
      LoadProblems(absl::GetFlag(FLAGS_problems), absl::GetFlag(FLAGS_num_problems));
  if (problems.empty()) {
    std::fprintf(stderr, "arbor-scaling-bench: no problems in %s\n",
                 absl::GetFlag(FLAGS_problems).c_str());
    return 2;
  }
  std::vector<int> ns;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_ns), ',', absl::SkipEmpty())) {
    int n;
    if (!absl::SimpleAtoi(s, &n) || n < 1) {
      std::fprintf(stderr, "arbor-scaling-bench: bad --ns entry '%s'\n", std::string(s).c_str());
      return 2;
    }
    ns.push_back(n);
  }
  const std::vector<std::string> strategies =
      absl::StrSplit(absl::GetFlag(FLAGS_strategies), ',', absl::SkipEmpty());

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target),
                                           grpc::InsecureChannelCredentials(), args);
  auto stub = arbor::v1::Reasoning::NewStub(channel);

  const std::string out_path = absl::GetFlag(FLAGS_out);
  std::FILE* out = stdout;
  if (!out_path.empty()) {
    bool fresh = !std::ifstream(out_path).good();
    out = std::fopen(out_path.c_str(), "a");
    if (out == nullptr) {
      std::fprintf(stderr, "arbor-scaling-bench: cannot write --out %s\n", out_path.c_str());
      return 2;
    }
    if (fresh) {
      std::fprintf(out,
                   "strategy,n,problems,accuracy,generated_tokens_per_problem,"
                   "reward_tokens_per_problem,wall_ms_per_problem,sweep_wall_s,failed,"
                   "budget_exhausted\n");
    }
  } else {
    std::fprintf(out,
                 "strategy,n,problems,accuracy,generated_tokens_per_problem,"
                 "reward_tokens_per_problem,wall_ms_per_problem,sweep_wall_s,failed,"
                 "budget_exhausted\n");
  }
  std::fflush(out);

  std::ofstream dump;
  const std::string dump_key = absl::GetFlag(FLAGS_dump_candidates);
  if (!dump_key.empty()) {
    dump.open(absl::GetFlag(FLAGS_candidates_out));
    if (!dump) {
      std::fprintf(stderr, "arbor-scaling-bench: cannot write --candidates_out '%s'\n",
                   absl::GetFlag(FLAGS_candidates_out).c_str());
      return 2;
    }
  }

  std::ofstream answers_out;
  if (!absl::GetFlag(FLAGS_answers_out).empty()) {
    answers_out.open(absl::GetFlag(FLAGS_answers_out), std::ios::app);
    if (!answers_out) {
      std::fprintf(stderr, "arbor-scaling-bench: cannot write --answers_out '%s'\n",
                   absl::GetFlag(FLAGS_answers_out).c_str());
      return 2;
    }
  }

  // N-major order (every strategy at N=1, then N=2, ...): a sweep cut short
  // by a time limit still has every strategy at the smaller budgets.
  std::vector<std::pair<std::string, int>> configs;
  for (int n : ns) {
    for (const std::string& strategy : strategies) {
      if (strategy == "greedy" && n != ns.front()) continue;  // greedy has no N
      configs.emplace_back(strategy, n);
    }
  }
  for (const auto& config : configs) {
    {
      const std::string& strategy = config.first;
      const int n = config.second;
      const int row_n = strategy == "greedy" ? 1 : n;
      arbor::v1::SolveRequest base;
      if (!FillStrategy(strategy, n, absl::GetFlag(FLAGS_beam_width),
                        absl::GetFlag(FLAGS_mcts_width), base)) continue;
      base.set_seed(absl::GetFlag(FLAGS_seed));
      if (const int it = absl::GetFlag(FLAGS_iterations); it > 0) {
        if (base.has_beam_search()) base.mutable_beam_search()->set_num_iterations(it);
        if (base.has_dvts()) base.mutable_dvts()->set_num_iterations(it);
        if (base.has_particle_filter()) base.mutable_particle_filter()->set_num_iterations(it);
        if (base.has_particle_gibbs()) {
          base.mutable_particle_gibbs()->mutable_filter()->set_num_iterations(it);
        }
      }
      base.set_max_candidates(std::max(1, n));
      const bool dumping = dump_key == absl::StrCat(strategy, ":", row_n);

      Totals totals;
      std::mutex mu;
      std::atomic<size_t> next{0};
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::thread> threads;
      for (int t = 0; t < std::max(1, absl::GetFlag(FLAGS_concurrency)); ++t) {
        threads.emplace_back([&] {
          for (size_t i = next++; i < problems.size(); i = next++) {
            arbor::v1::SolveRequest request = base;
            request.set_question(problems[i].question);
            request.set_job_id(absl::StrCat(strategy, "-", row_n, "-", i));
            arbor::v1::SolveResponse response;
            grpc::ClientContext context;
            context.set_deadline(std::chrono::system_clock::now() +
                                 std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
            grpc::Status status = stub->Solve(&context, request, &response);
            std::lock_guard<std::mutex> lock(mu);
            if (!status.ok()) {
              ++totals.failed;
              std::fprintf(stderr, "arbor-scaling-bench: %s problem %zu: %s\n",
                           request.job_id().c_str(), i, status.error_message().c_str());
              continue;
            }
            ++totals.answered;
            const bool correct = SameAnswer(response.answer(), problems[i].answer);
            totals.correct += correct;
            totals.probe_tokens += response.usage().probe_generated_tokens();
            totals.certain_jobs += response.stop_reason() == "certainty";
            totals.certain_branches += response.usage().certain_branches();
            totals.compare_calls += response.usage().compare_calls();
            totals.compared_pairs += response.usage().compared_pairs();
            totals.tournament_fallbacks += response.usage().tournament_fallback();
            if (answers_out.is_open()) {
              bool oracle = false;
              for (const arbor::v1::Candidate& c : response.candidates()) {
                oracle = oracle || SameAnswer(c.answer(), problems[i].answer);
              }
              nlohmann::json j;
              j["strategy"] = strategy;
              j["n"] = row_n;
              j["problem"] = i;
              j["answer"] = response.answer();
              j["correct"] = correct;
              j["oracle"] = oracle;
              answers_out << j.dump() << "\n";
            }
            if (response.usage().has_auto_choice()) {
              auto& band = totals.bands[response.usage().auto_choice().band()];
              band.first += 1;
              band.second += correct;
            }
            totals.exhausted += response.budget_exhausted();
            totals.generated += response.usage().generated_tokens();
            totals.reward += response.usage().reward_tokens();
            totals.wall_ms += response.usage().wall_time_ms();
            if (dumping) {
              for (const arbor::v1::Candidate& c : response.candidates()) {
                nlohmann::json j;
                j["problem"] = i;
                j["question"] = problems[i].question;
                j["steps"] = std::vector<std::string>(c.steps().begin(), c.steps().end());
                j["step_scores"] =
                    std::vector<float>(c.step_scores().begin(), c.step_scores().end());
                j["answer"] = c.answer();
                j["finished"] = c.finished();
                dump << j.dump() << "\n";
              }
            }
          }
        });
      }
      for (std::thread& t : threads) t.join();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double count = static_cast<double>(problems.size());
      // Failed jobs count as wrong: accuracy is over all problems sent.
      std::fprintf(
          out, "%s,%d,%zu,%.4f,%.1f,%.1f,%.1f,%.1f,%lld,%lld\n", strategy.c_str(), row_n,
          problems.size(), totals.correct / count, totals.generated / count, totals.reward / count,
          totals.answered ? static_cast<double>(totals.wall_ms) / totals.answered : 0.0, seconds,
          static_cast<long long>(totals.failed), static_cast<long long>(totals.exhausted));
      std::fflush(out);
      if (dumping) dump.flush();
      std::fprintf(stderr, "%-24s N=%-3d accuracy %.3f  gen %.0f tok  reward %.0f tok  (%.1f s)\n",
                   strategy.c_str(), row_n, totals.correct / count, totals.generated / count,
                   totals.reward / count, seconds);
      if (totals.probe_tokens > 0 || totals.certain_jobs > 0) {
        std::fprintf(stderr,
                     "  certainty: %.1f probe tok/problem, %.2f branches/problem stopped by it, "
                     "%lld jobs ended by it\n",
                     totals.probe_tokens / count, totals.certain_branches / count,
                     static_cast<long long>(totals.certain_jobs));
      }
      if (totals.compare_calls > 0 || totals.tournament_fallbacks > 0) {
        std::fprintf(stderr,
                     "  tournament: %.2f compare calls/problem, %.2f pairs/problem, %lld jobs "
                     "fell back to the majority vote\n",
                     totals.compare_calls / count, totals.compared_pairs / count,
                     static_cast<long long>(totals.tournament_fallbacks));
      }
      if (answers_out.is_open()) answers_out.flush();
      for (const auto& [band, jobs_correct] : totals.bands) {
        std::fprintf(stderr, "  auto band %-6s %lld jobs, accuracy %.3f\n", band.c_str(),
                     static_cast<long long>(jobs_correct.first),
                     static_cast<double>(jobs_correct.second) /
                         static_cast<double>(std::max<int64_t>(1, jobs_correct.first)));
      }
    }
  }
  if (out != stdout) std::fclose(out);
  return 0;
}
