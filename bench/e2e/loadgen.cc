// arbor-loadgen: drives a coordinator with search jobs over the public
// arbor.v1.Reasoning API and reports what a user of the service sees: jobs per
// minute, generated and reward tokens per second, job latency percentiles and
// the prefix-cache hit ratio, from the jobs' own usage accounting.
//
// Two arrival models (docs/E2E.md):
//   --mode=closed  --concurrency jobs in flight at once; a finished job starts
//                  the next, until --jobs have finished.
//   --mode=open    Poisson arrivals at --rate jobs/s for --duration_s seconds,
//                  however many are in flight; then waits for all of them.
// Every job has its own question (a numbered problem over about
// --prompt_words words of filler), so jobs share no prompt prefix; with
// --system_prompts=K each question opens with one of K shared system prompts
// (Zipf-skewed by --system_skew), and --long_fraction of the jobs get
// --long_words words (bench/routing). Per worker (SolveResponse.worker) the
// row counts jobs and tokens; load_spread is the busiest one's tokens over
// the mean of the workers that ran jobs.
//
//   arbor-loadgen --target 127.0.0.1:50051 --strategy beam_search --n 16 \
//       --mode closed --concurrency 8 --jobs 32 --label beam16_c8 --out e2e.jsonl
//
// --driver=stepwise runs the same jobs as the search-and-learn baseline: the
// load generator runs each search itself, one Generator.Extend per branch
// and one Verifier.Score per step against --worker and --verifier
// (bench/e2e/stepwise_search.h), instead of one Solve to --target.
//
// --out appends one JSON object per run (the case, its figures and the totals
// of the jobs' usage); --answers_out writes one line per job (job index,
// answer, text, usage) so that two runs with the same seed can be compared.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "bench/e2e/stepwise_search.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "rpc/auth.h"
#include "rpc/tls.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Coordinator address host:port");
ABSL_FLAG(std::string, driver, "coordinator",
          "coordinator (one Solve per job) or stepwise (the search-and-learn baseline: the "
          "search runs here, over --worker and --verifier)");
ABSL_FLAG(std::string, worker, "127.0.0.1:50061", "--driver=stepwise: Generator address");
ABSL_FLAG(std::string, verifier, "127.0.0.1:50062", "--driver=stepwise: Verifier address");
ABSL_FLAG(std::string, strategy, "beam_search",
          "beam_search, dvts, particle_filter or best_of_n (reward selection)");
ABSL_FLAG(int, n, 16, "N: beams, particles or samples per job");
ABSL_FLAG(int, beam_width, 4, "Beam width M of beam_search and dvts");
ABSL_FLAG(int, iterations, 8, "Search iterations (steps) of beam_search, dvts, particle_filter");
ABSL_FLAG(int, step_tokens, 64, "max_step_tokens of every step");
ABSL_FLAG(bool, ignore_eos, false, "StopRules.ignore_eos of every step");
ABSL_FLAG(std::string, question_salt, "",
          "Put in every question, so that cases on the same services share no prompt");
ABSL_FLAG(int, prompt_words, 512, "Words of each job's question (about one token each)");
ABSL_FLAG(std::string, mode, "closed", "closed (fixed concurrency) or open (Poisson arrivals)");
ABSL_FLAG(int, concurrency, 1, "--mode=closed: jobs in flight");
ABSL_FLAG(int, jobs, 8, "--mode=closed: jobs to finish");
ABSL_FLAG(double, rate, 1.0, "--mode=open: mean arrivals per second");
ABSL_FLAG(double, duration_s, 60, "--mode=open: how long jobs arrive");
ABSL_FLAG(uint64_t, seed, 1, "Seed of job i is seed + i (same seed, same answers)");
ABSL_FLAG(int, timeout_s, 600, "Deadline of one job");
ABSL_FLAG(std::string, model, "", "SolveRequest.model (empty: the coordinator's default)");
ABSL_FLAG(std::string, reward_model, "", "SolveRequest.reward_model");
ABSL_FLAG(std::string, label, "", "Name of this case in --out");
ABSL_FLAG(std::string, out, "", "JSONL file the case's figures are appended to");
ABSL_FLAG(std::string, answers_out, "", "JSONL file of every job's answer and usage");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA verifying the servers: connect over TLS");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (servers requiring mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "", "Name the servers' certificates are checked against");
ABSL_FLAG(std::string, token_file, "", "Bearer token for the coordinator (--driver=coordinator)");
// A prompt mix for routing (bench/routing): questions that open with one of a
// few shared system prompts, picked with a Zipf skew, and skewed lengths.
ABSL_FLAG(int, system_prompts, 0,
          "Shared system prompts the questions open with (0: none, every prompt its own)");
ABSL_FLAG(int, system_prompt_words, 200, "Words of each shared system prompt");
ABSL_FLAG(double, system_skew, 1.0,
          "Zipf exponent of the system prompt choice (0: uniform; 1: prompt k has weight 1/(k+1))");
ABSL_FLAG(double, long_fraction, 0.0,
          "Fraction of jobs whose own question has --long_words words instead of --prompt_words");
ABSL_FLAG(int, long_words, 0, "Words of a long job's own question");
ABSL_FLAG(int, max_solution_tokens, 0,
          "SolveRequest.max_solution_tokens (0: the service's default); with best_of_n and "
          "--iterations=1 a job is then one Extend");
ABSL_FLAG(std::string, selection, "reward",
          "best_of_n selection: reward (needs a reward model) or majority_vote (needs none)");

namespace {

using Clock = std::chrono::steady_clock;

// Common words that are one token each in Llama-3 and most BPE vocabularies.
constexpr const char* kWords[] = {
    "the",   "number", "of",    "apples", "in",    "a",     "basket", "is",    "twice",
    "three", "more",   "than",  "seven",  "and",   "each",  "box",    "holds", "four",
    "how",   "many",   "there", "if",     "we",    "add",   "five",   "to",    "total",
    "then",  "take",   "away",  "half",   "what",  "left",  "after",  "days",  "water",
    "price", "costs",  "money", "every",  "week",  "train", "runs",   "miles", "hour"};

std::string Question(int index, int words) {
  std::mt19937_64 rng(0x5eed + index);
  std::string text = absl::StrCat("Problem ", absl::GetFlag(FLAGS_question_salt), index, ":");
  for (int i = 0; i < words; ++i) {
    absl::StrAppend(&text, " ", kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))]);
  }
  absl::StrAppend(&text, ". Solve it step by step.");
  return text;
}

// Shared system prompt k (the same text for every job that picks it).
std::string SystemPrompt(int k, int words) {
  std::mt19937_64 rng(0x5157e3 + k);
  std::string text = absl::StrCat("System ", absl::GetFlag(FLAGS_question_salt), k,
                                  ": you are a careful tutor. Rules:");
  for (int i = 0; i < words; ++i) {
    absl::StrAppend(&text, " ", kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))]);
  }
  absl::StrAppend(&text, ".\n\n");
  return text;
}

// Job `index`'s question: maybe a shared system prompt, then its own problem.
// The choices are drawn from the job index alone, so every run (and policy)
// gets the same mix.
std::string JobQuestion(int index) {
  std::mt19937_64 rng(0x9e3779b9ull * (index + 1) ^ absl::GetFlag(FLAGS_seed));
  std::uniform_real_distribution<double> unit(0, 1);
  int words = absl::GetFlag(FLAGS_prompt_words);
  if (unit(rng) < absl::GetFlag(FLAGS_long_fraction)) words = absl::GetFlag(FLAGS_long_words);
  const int prompts = absl::GetFlag(FLAGS_system_prompts);
  if (prompts <= 0) return Question(index, words);
  std::vector<double> weights(prompts);
  for (int k = 0; k < prompts; ++k) {
    weights[k] = std::pow(k + 1.0, -absl::GetFlag(FLAGS_system_skew));
  }
  std::discrete_distribution<int> pick(weights.begin(), weights.end());
  const int k = pick(rng);
  return SystemPrompt(k, absl::GetFlag(FLAGS_system_prompt_words)) + Question(index, words);
}

arbor::v1::SolveRequest MakeRequest(int index) {
  arbor::v1::SolveRequest req;
  req.set_job_id(absl::StrCat("loadgen-", absl::GetFlag(FLAGS_label), "-", index));
  req.set_question(JobQuestion(index));
  req.set_model(absl::GetFlag(FLAGS_model));
  req.set_reward_model(absl::GetFlag(FLAGS_reward_model));
  req.set_seed(absl::GetFlag(FLAGS_seed) + index);
  if (absl::GetFlag(FLAGS_max_solution_tokens) > 0) {
    req.set_max_solution_tokens(absl::GetFlag(FLAGS_max_solution_tokens));
  }
  req.mutable_stop()->set_max_step_tokens(absl::GetFlag(FLAGS_step_tokens));
  req.mutable_stop()->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  const std::string strategy = absl::GetFlag(FLAGS_strategy);
  const int n = absl::GetFlag(FLAGS_n);
  const int iterations = absl::GetFlag(FLAGS_iterations);
  if (strategy == "beam_search") {
    auto* s = req.mutable_beam_search();
    s->set_n(n);
    s->set_beam_width(absl::GetFlag(FLAGS_beam_width));
    s->set_num_iterations(iterations);
  } else if (strategy == "dvts") {
    auto* s = req.mutable_dvts();
    s->set_n(n);
    s->set_beam_width(absl::GetFlag(FLAGS_beam_width));
    s->set_num_iterations(iterations);
  } else if (strategy == "particle_filter") {
    auto* s = req.mutable_particle_filter();
    s->set_n(n);
    s->set_num_iterations(iterations);
  } else {
    req.mutable_best_of_n()->set_n(n);
    if (absl::GetFlag(FLAGS_selection) == "majority_vote") {
      req.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE);
    }
    // One step of up to iterations * step_tokens tokens: the same generated
    // length as the step-wise strategies.
    req.mutable_stop()->set_no_step_delimiter(true);
    req.mutable_stop()->set_max_step_tokens(iterations * absl::GetFlag(FLAGS_step_tokens));
  }
  return req;
}

struct JobResult {
  int index = 0;
  bool ok = false;
  std::string error;
  double latency_s = 0;
  arbor::v1::SolveResponse response;
};

// Runs jobs on the callback API: Start() never blocks, so the open loop can
// keep its arrival times whatever the number of jobs in flight.
class JobRunner {
 public:
  JobRunner(std::shared_ptr<grpc::Channel> channel, std::string authorization)
      : stub_(arbor::v1::Reasoning::NewStub(std::move(channel))),
        authorization_(std::move(authorization)) {}
  // --driver=stepwise: each job runs its search on a thread of its own.
  explicit JobRunner(arbor::bench::StepwiseTargets targets) : stepwise_(std::move(targets)) {}

  ~JobRunner() {
    for (std::thread& t : threads_) t.join();
  }

  void Start(int index) {
    if (stepwise_.has_value()) return StartStepwise(index);
    auto call = std::make_shared<Call>();
    call->result.index = index;
    call->request = MakeRequest(index);
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
    if (!authorization_.empty()) call->context.AddMetadata("authorization", authorization_);
    call->start = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++in_flight_;
    }
    stub_->async()->Solve(&call->context, &call->request, &call->result.response,
                          [this, call](grpc::Status status) {
                            call->result.latency_s =
                                std::chrono::duration<double>(Clock::now() - call->start).count();
                            call->result.ok = status.ok();
                            if (!status.ok()) {
                              call->result.error = absl::StrCat(static_cast<int>(status.error_code()),
                                                                ": ", status.error_message());
                            }
                            std::lock_guard<std::mutex> lock(mu_);
                            done_.push_back(std::move(call->result));
                            --in_flight_;
                            cv_.notify_all();
                          });
  }

  // Blocks until at most `in_flight` jobs remain; returns how many finished so far.
  size_t WaitUntilInFlightAtMost(int in_flight) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ <= in_flight; });
    return done_.size();
  }

  std::vector<JobResult> TakeResults() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(done_);
  }

 private:
  void StartStepwise(int index) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++in_flight_;
    }
    threads_.emplace_back([this, index] {
      JobResult result;
      result.index = index;
      const Clock::time_point start = Clock::now();
      absl::StatusOr<arbor::v1::SolveResponse> response = arbor::bench::RunStepwiseJob(
          MakeRequest(index), *stepwise_,
          absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout_s)));
      result.latency_s = std::chrono::duration<double>(Clock::now() - start).count();
      result.ok = response.ok();
      if (response.ok()) {
        result.response = *std::move(response);
      } else {
        result.error = response.status().ToString();
      }
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(std::move(result));
      --in_flight_;
      cv_.notify_all();
    });
  }

  struct Call {
    grpc::ClientContext context;
    arbor::v1::SolveRequest request;
    JobResult result;
    Clock::time_point start;
  };
  std::unique_ptr<arbor::v1::Reasoning::Stub> stub_;
  const std::string authorization_;  // "Bearer TOKEN", or "" for none
  std::optional<arbor::bench::StepwiseTargets> stepwise_;
  std::vector<std::thread> threads_;  // stepwise jobs; touched by the driving thread only
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;
  std::vector<JobResult> done_;
};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p * (values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(values.size() - 1, lo + 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - lo);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Drives a coordinator with search jobs and reports throughput");
  absl::ParseCommandLine(argc, argv);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const std::string strategy = absl::GetFlag(FLAGS_strategy);
  if (mode != "closed" && mode != "open") {
    std::fprintf(stderr, "arbor-loadgen: --mode must be closed or open, not '%s'\n", mode.c_str());
    return 2;
  }
  if (strategy != "beam_search" && strategy != "dvts" && strategy != "particle_filter" &&
      strategy != "best_of_n") {
    std::fprintf(stderr,
                 "arbor-loadgen: --strategy must be beam_search, dvts, particle_filter or "
                 "best_of_n, not '%s'\n",
                 strategy.c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_concurrency) < 1 || absl::GetFlag(FLAGS_jobs) < 1 ||
      !(absl::GetFlag(FLAGS_rate) > 0) || !(absl::GetFlag(FLAGS_duration_s) > 0)) {
    std::fprintf(stderr, "arbor-loadgen: --concurrency, --jobs, --rate and --duration_s must "
                         "be positive\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_selection) != "reward" &&
      absl::GetFlag(FLAGS_selection) != "majority_vote") {
    std::fprintf(stderr, "arbor-loadgen: --selection must be reward or majority_vote\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_system_prompts) < 0 || absl::GetFlag(FLAGS_long_fraction) < 0 ||
      absl::GetFlag(FLAGS_long_fraction) > 1) {
    std::fprintf(stderr,
                 "arbor-loadgen: --system_prompts must be >= 0, --long_fraction in [0, 1]\n");
    return 2;
  }
  const std::string driver = absl::GetFlag(FLAGS_driver);
  if (driver != "coordinator" && driver != "stepwise") {
    std::fprintf(stderr, "arbor-loadgen: --driver must be coordinator or stepwise, not '%s'\n",
                 driver.c_str());
    return 2;
  }
  arbor::rpc::TlsClientFiles tls;
  tls.ca = absl::GetFlag(FLAGS_tls_ca);
  tls.cert = absl::GetFlag(FLAGS_tls_cert);
  tls.key = absl::GetFlag(FLAGS_tls_key);
  tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  auto credentials = arbor::rpc::MakeChannelCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "arbor-loadgen: %s\n", credentials.status().ToString().c_str());
    return 2;
  }
  std::string authorization;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    auto token = arbor::rpc::ReadBearerToken(absl::GetFlag(FLAGS_token_file));
    if (!token.ok()) {
      std::fprintf(stderr, "arbor-loadgen: %s\n", token.status().ToString().c_str());
      return 2;
    }
    authorization = *std::move(token);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  arbor::rpc::ApplyTlsChannelArgs(tls, args);
  auto channel = [&](const std::string& target) {
    return grpc::CreateCustomChannel(target, *credentials, args);
  };
  std::unique_ptr<JobRunner> runner_owner;
  if (driver == "stepwise") {
    arbor::bench::StepwiseTargets targets;
    targets.generator = channel(absl::GetFlag(FLAGS_worker));
    targets.verifier = channel(absl::GetFlag(FLAGS_verifier));
    if (absl::Status st = arbor::bench::ResolveModels(&targets, absl::Now() + absl::Seconds(30));
        !st.ok()) {
      std::fprintf(stderr, "arbor-loadgen: %s\n", st.ToString().c_str());
      return 1;
    }
    runner_owner = std::make_unique<JobRunner>(std::move(targets));
  } else {
    runner_owner = std::make_unique<JobRunner>(channel(absl::GetFlag(FLAGS_target)), authorization);
  }
  JobRunner& runner = *runner_owner;

  const Clock::time_point start = Clock::now();
  int submitted = 0;
  if (mode == "closed") {
    const int jobs = absl::GetFlag(FLAGS_jobs);
    const int concurrency = std::min(absl::GetFlag(FLAGS_concurrency), jobs);
    while (submitted < jobs) {
      runner.WaitUntilInFlightAtMost(concurrency - 1);
      runner.Start(submitted++);
    }
  } else {
    std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
    std::exponential_distribution<double> gap(absl::GetFlag(FLAGS_rate));
    const double duration = absl::GetFlag(FLAGS_duration_s);
    double at = gap(rng);
    while (at < duration) {
      std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(at)));
      runner.Start(submitted++);
      at += gap(rng);
    }
  }
  runner.WaitUntilInFlightAtMost(0);
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<JobResult> results = runner.TakeResults();
  std::sort(results.begin(), results.end(),
            [](const JobResult& a, const JobResult& b) { return a.index < b.index; });
  std::vector<double> latencies;
  arbor::v1::Usage total;
  // Per worker (SolveResponse.worker): jobs and the tokens they ran there.
  std::map<std::string, std::pair<int, int64_t>> per_worker;
  int failed = 0;
  std::ofstream answers;
  if (!absl::GetFlag(FLAGS_answers_out).empty()) answers.open(absl::GetFlag(FLAGS_answers_out));
  for (const JobResult& r : results) {
    if (!r.ok) {
      ++failed;
      std::fprintf(stderr, "arbor-loadgen: job %d failed: %s\n", r.index, r.error.c_str());
      continue;
    }
    latencies.push_back(r.latency_s);
    const arbor::v1::Usage& u = r.response.usage();
    auto& worker = per_worker[r.response.worker()];
    ++worker.first;
    worker.second += u.prefill_tokens() + u.prefix_cache_hit_tokens() + u.generated_tokens();
    total.set_generated_tokens(total.generated_tokens() + u.generated_tokens());
    total.set_prefill_tokens(total.prefill_tokens() + u.prefill_tokens());
    total.set_prefix_cache_hit_tokens(total.prefix_cache_hit_tokens() + u.prefix_cache_hit_tokens());
    total.set_reward_tokens(total.reward_tokens() + u.reward_tokens());
    total.set_reward_cache_hit_tokens(total.reward_cache_hit_tokens() +
                                      u.reward_cache_hit_tokens());
    total.set_reward_calls(total.reward_calls() + u.reward_calls());
    total.set_worker_calls(total.worker_calls() + u.worker_calls());
    total.set_retries(total.retries() + u.retries());
    total.set_steps(total.steps() + u.steps());
    total.set_wall_time_ms(total.wall_time_ms() + u.wall_time_ms());
    total.set_coordinator_us(total.coordinator_us() + u.coordinator_us());
    total.set_network_us(total.network_us() + u.network_us());
    total.set_worker_queue_us(total.worker_queue_us() + u.worker_queue_us());
    total.set_worker_compute_us(total.worker_compute_us() + u.worker_compute_us());
    total.set_verifier_queue_us(total.verifier_queue_us() + u.verifier_queue_us());
    total.set_verifier_compute_us(total.verifier_compute_us() + u.verifier_compute_us());
    if (answers.is_open()) {
      answers << nlohmann::json{{"job", r.index},
                                {"answer", r.response.answer()},
                                {"text", r.response.text()},
                                {"generated_tokens", u.generated_tokens()},
                                {"prefill_tokens", u.prefill_tokens()},
                                {"prefix_cache_hit_tokens", u.prefix_cache_hit_tokens()},
                                {"reward_tokens", u.reward_tokens()},
                                {"reward_cache_hit_tokens", u.reward_cache_hit_tokens()}}
                     .dump()
              << "\n";
    }
  }
  const int done = static_cast<int>(latencies.size());
  // A job's time by phase, as fractions of the jobs' summed wall time.
  const double job_us = 1000.0 * total.wall_time_ms();
  auto share = [&](int64_t us) { return job_us > 0 ? us / job_us : 0.0; };
  const nlohmann::json phases = {
      {"coordinator", share(total.coordinator_us())},
      {"network", share(total.network_us())},
      {"worker_queue", share(total.worker_queue_us())},
      {"worker_compute", share(total.worker_compute_us())},
      {"verifier_queue", share(total.verifier_queue_us())},
      {"verifier_compute", share(total.verifier_compute_us())},
  };
  const double worker_in = total.prefill_tokens() + total.prefix_cache_hit_tokens();
  const double reward_in = total.reward_tokens() + total.reward_cache_hit_tokens();
  // Load spread: the busiest worker's tokens over the mean (1 = even).
  nlohmann::json workers = nlohmann::json::object();
  double max_tokens = 0, sum_tokens = 0;
  for (const auto& [address, w] : per_worker) {
    workers[address.empty() ? "?" : address] = {{"jobs", w.first}, {"tokens", w.second}};
    max_tokens = std::max<double>(max_tokens, w.second);
    sum_tokens += w.second;
  }
  const double load_spread =
      sum_tokens > 0 ? max_tokens / (sum_tokens / static_cast<double>(per_worker.size())) : 0.0;
  nlohmann::json row = {
      {"label", absl::GetFlag(FLAGS_label)},
      {"driver", driver},
      {"strategy", strategy},
      {"n", absl::GetFlag(FLAGS_n)},
      {"prompt_words", absl::GetFlag(FLAGS_prompt_words)},
      {"step_tokens", absl::GetFlag(FLAGS_step_tokens)},
      {"mode", mode},
      {"concurrency", mode == "closed" ? absl::GetFlag(FLAGS_concurrency) : 0},
      {"rate", mode == "open" ? absl::GetFlag(FLAGS_rate) : 0.0},
      {"jobs", done},
      {"failed", failed},
      {"wall_s", wall_s},
      {"jobs_per_min", done * 60.0 / wall_s},
      {"generated_tok_s", total.generated_tokens() / wall_s},
      {"reward_tok_s", total.reward_tokens() / wall_s},
      {"p50_s", Percentile(latencies, 0.5)},
      {"p99_s", Percentile(latencies, 0.99)},
      {"prefix_hit_ratio", worker_in > 0 ? total.prefix_cache_hit_tokens() / worker_in : 0.0},
      {"reward_hit_ratio", reward_in > 0 ? total.reward_cache_hit_tokens() / reward_in : 0.0},
      {"generated_tokens", total.generated_tokens()},
      {"prefill_tokens", total.prefill_tokens()},
      {"prefix_cache_hit_tokens", total.prefix_cache_hit_tokens()},
      {"reward_tokens", total.reward_tokens()},
      {"reward_cache_hit_tokens", total.reward_cache_hit_tokens()},
      {"worker_calls", total.worker_calls()},
      {"reward_calls", total.reward_calls()},
      {"retries", total.retries()},
      {"time_shares", phases},
      {"system_prompts", absl::GetFlag(FLAGS_system_prompts)},
      {"workers", workers},
      {"load_spread", load_spread},
  };
  std::printf("%s\n", row.dump().c_str());
  if (!absl::GetFlag(FLAGS_out).empty()) {
    std::ofstream out(absl::GetFlag(FLAGS_out), std::ios::app);
    out << row.dump() << "\n";
    if (!out) {
      std::fprintf(stderr, "arbor-loadgen: cannot write %s\n", absl::GetFlag(FLAGS_out).c_str());
      return 1;
    }
  }
  return failed == 0 ? 0 : 1;
}
