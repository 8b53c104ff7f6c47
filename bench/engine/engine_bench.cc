// Engine benchmark: what the prefix cache and forking save on a search-shaped
// workload, and the scheduler's throughput on many concurrent samples.
//
//   build/bin/engine_bench [--model DIR] [--threads N] [--blocks N] [--only WORKLOAD]
//                          [--overhead_jobs N] [--overhead_prompt TOKENS] [--overhead_steps N]
//
// Workloads (each on a fresh engine over the CPU backend):
//  * beam:     a 200-token prompt, 16 branches x 4 samples, 5 steps of 24
//              tokens; each step's branches continue the previous step's
//              samples (suffix = earlier steps), as a beam search sends them.
//              Run once with the engine's sharing and once "unshared": every
//              (branch, sample) as its own request on an emptied cache.
//  * decode:   256 samples of one prompt decoding 64 tokens together.
//  * overhead: the engine's own time per step, on a backend that computes
//              nothing (its draws come back at once): --overhead_jobs
//              closed-loop jobs shaped like bench/e2e's beam search (a
//              --overhead_prompt-token prompt, 4 branches x 4 samples, steps
//              of 64 tokens cut at "\n\n" by the bundled tokenizer), each
//              resubmitting its branches' grown suffixes for --overhead_steps
//              steps. Everything but the forward pass: scheduling, radix
//              cache, batch building, stop rules, detokenizing, callbacks.
// Prints a table last: wall time, tokens computed, prefix-cache hits,
// generated tokens, forward steps and generated tokens per second.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "runtime/backend/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/model/model_config.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime {
namespace {

struct Row {
  std::string name;
  double seconds = 0;
  int64_t computed = 0;
  int64_t hits = 0;
  int64_t generated = 0;
  int64_t steps = 0;
};

struct Args {
  std::string model = "tests/fixtures/golden/llama";
  int threads = 0;
  int blocks = 4096;
  int overhead_jobs = 32;
  int overhead_prompt = 700;
  int overhead_steps = 8;
  std::string only;  // one workload: beam, decode or overhead; empty: all
};

std::unique_ptr<Engine> MakeEngine(const Args& args, int max_batch_tokens) {
  auto backend = CpuBackend::Create(args.model, {args.blocks, args.threads});
  if (!backend.ok()) {
    std::fprintf(stderr, "backend: %s\n", backend.status().ToString().c_str());
    std::exit(1);
  }
  EngineOptions options;
  options.max_batch_tokens = max_batch_tokens;
  auto engine = Engine::Create(options, *std::move(backend), nullptr);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(engine);
}

std::vector<int32_t> Prompt(int n, int vocab, int salt) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = (i * 131 + salt * 17 + 7) % vocab;
  return p;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Row Beam(const Args& args, bool shared) {
  auto engine = MakeEngine(args, 512);
  const int vocab = engine->output_dim();
  const auto prompt = Prompt(200, vocab, 1);
  const int branches = 16, samples = 4, steps = 5, step_tokens = 24;
  std::vector<std::vector<int32_t>> suffixes(branches);
  Row row{shared ? "beam (shared)" : "beam (unshared)"};
  double unshared_seconds = 0;  // Generate calls only, not engine creation
  const double start = Now();
  for (int step = 0; step < steps; ++step) {
    GenerateRequest request;
    request.prompt_tokens = prompt;
    request.sampling = {0.8f, 1.0f, 0};
    request.stop.max_step_tokens = step_tokens;
    request.stop.ignore_eos = true;
    for (int b = 0; b < branches; ++b) {
      request.branches.push_back({suffixes[b], samples, static_cast<uint64_t>(step * 100 + b)});
    }
    std::vector<SampleOutput> outputs;
    if (shared) {
      auto result = engine->Generate(request);
      if (!result.ok()) std::exit(2);
      row.computed += result->usage.prefill_tokens;
      row.hits += result->usage.prefix_cache_hit_tokens;
      outputs = result->outputs;
    } else {
      for (int b = 0; b < branches; ++b) {
        for (int s = 0; s < samples; ++s) {
          // Each sample alone, prompt and suffix recomputed from scratch.
          engine.reset();
          engine = MakeEngine(args, 512);
          GenerateRequest one = request;
          one.branches = {request.branches[b]};
          one.branches[0].num_samples = s + 1;  // sample s is stream s
          const double t0 = Now();
          auto result = engine->Generate(one);
          unshared_seconds += Now() - t0;
          if (!result.ok()) std::exit(2);
          row.computed += result->usage.prefill_tokens;
          row.steps += engine->stats().steps;
          outputs.push_back(result->outputs[s]);
        }
      }
    }
    for (const auto& o : outputs) row.generated += static_cast<int64_t>(o.tokens.size());
    // Keep sample 0 of each branch (a stand-in for the verifier's choice).
    for (int b = 0; b < branches; ++b) {
      const auto& t = outputs[b * samples].tokens;
      suffixes[b].insert(suffixes[b].end(), t.begin(), t.end());
    }
  }
  row.seconds = shared ? Now() - start : unshared_seconds;
  if (shared) row.steps = engine->stats().steps;
  return row;
}

Row Decode(const Args& args) {
  auto engine = MakeEngine(args, 2048);
  GenerateRequest request;
  request.prompt_tokens = Prompt(64, engine->output_dim(), 2);
  request.branches.push_back({{}, 256, 9});
  request.sampling = {1.0f, 1.0f, 0};
  request.stop.max_step_tokens = 64;
  request.stop.ignore_eos = true;
  const double start = Now();
  auto result = engine->Generate(request);
  if (!result.ok()) std::exit(2);
  Row row{"decode 256 x 64"};
  row.seconds = Now() - start;
  row.computed = result->usage.prefill_tokens;
  row.hits = result->usage.prefix_cache_hit_tokens;
  row.generated = result->usage.generated_tokens;
  row.steps = engine->stats().steps;
  return row;
}

// A backend that computes nothing: every draw is a fixed word token, so only
// max_step_tokens ends a step. What the engine spends around it is its own.
class NullBackend : public ModelBackend {
 public:
  NullBackend(ModelConfig config, int num_blocks, int32_t token)
      : config_(std::move(config)), num_blocks_(num_blocks), token_(token) {}
  const ModelConfig& config() const override { return config_; }
  std::string name() const override { return "null"; }
  int num_kv_blocks() const override { return num_blocks_; }
  int output_dim() const override { return config_.vocab_size; }
  absl::Status Forward(const ForwardBatch& batch, std::vector<float>* out) override {
    out->assign(batch.output_rows.size() * static_cast<size_t>(config_.vocab_size), 0.0f);
    return absl::OkStatus();
  }
  absl::Status ForwardSample(const ForwardBatch& batch, absl::Span<const RowSampling>,
                             std::vector<SampledToken>* out) override {
    out->assign(batch.output_rows.size(), SampledToken{token_, -1.0f});
    return absl::OkStatus();
  }
  bool samples_on_device() const override { return true; }
  absl::Status CopyBlocks(absl::Span<const std::pair<int32_t, int32_t>>) override {
    return absl::OkStatus();
  }

 private:
  ModelConfig config_;
  int num_blocks_;
  int32_t token_;
};

Row Overhead(const Args& args) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(args.model);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromModelDir(args.model);
  if (!config.ok() || !tokenizer.ok()) {
    std::fprintf(stderr, "overhead: %s\n",
                 (config.ok() ? tokenizer.status() : config.status()).ToString().c_str());
    std::exit(1);
  }
  const absl::StatusOr<std::vector<int32_t>> word = (*tokenizer)->Encode(" seven");
  // The tiny bundled model's window is smaller than the jobs: the null model has none.
  config->max_position_embeddings = 1 << 20;
  const int jobs = args.overhead_jobs, steps = args.overhead_steps;
  const int branches = 4, samples = 4, step_tokens = 64;
  // Room for every job's prompt and its 16 beams' steps, twice over.
  const int blocks = 2 * jobs * (args.overhead_prompt + 16 * steps * step_tokens) / kKvBlockSize;
  EngineOptions options;
  options.max_batch_tokens = 8192;
  options.max_running_seqs = 1024;
  auto engine = Engine::Create(
      options, std::make_unique<NullBackend>(*config, blocks, word.ok() && !word->empty() ? word->back() : 1),
      tokenizer->get());
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    std::exit(1);
  }
  // Each job: step k's request carries the suffixes kept after step k-1
  // (sample 0 of each branch, as a beam search keeps its best).
  struct Job {
    std::vector<int32_t> prompt;
    std::vector<std::vector<int32_t>> suffixes;
    int step = 0;
  };
  std::vector<Job> state(jobs);
  absl::Mutex mu;
  int running = jobs;
  int64_t generated = 0;
  std::function<void(int)> submit = [&](int j) {
    Job& job = state[j];
    GenerateRequest request;
    request.prompt_tokens = job.prompt;
    request.sampling = {0.8f, 1.0f, 0};
    request.stop.max_step_tokens = step_tokens;
    request.stop.step_delimiters = {"\n\n"};
    request.stop.ignore_eos = true;
    for (int b = 0; b < branches; ++b) {
      request.branches.push_back(
          {job.suffixes[b], samples, static_cast<uint64_t>(j * 1000 + job.step * 10 + b)});
    }
    auto id = (*engine)->SubmitGenerate(std::move(request), [&, j](absl::StatusOr<GenerateResult> r) {
      if (!r.ok()) {
        std::fprintf(stderr, "overhead: %s\n", r.status().ToString().c_str());
        std::exit(2);
      }
      Job& done = state[j];
      absl::MutexLock lock(&mu);
      for (const SampleOutput& o : r->outputs) generated += static_cast<int64_t>(o.tokens.size());
      for (int b = 0; b < branches; ++b) {
        const std::vector<int32_t>& t = r->outputs[b * samples].tokens;
        done.suffixes[b].insert(done.suffixes[b].end(), t.begin(), t.end());
      }
      if (++done.step < steps) {
        submit(j);
      } else {
        --running;
      }
    });
    if (!id.ok()) std::exit(2);
  };
  const double start = Now();
  for (int j = 0; j < jobs; ++j) {
    state[j].prompt = Prompt(args.overhead_prompt, config->vocab_size, 100 + j);
    state[j].suffixes.resize(branches);
    absl::MutexLock lock(&mu);
    submit(j);
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(+[](int* n) { return *n == 0; }, &running));
  }
  Row row{"overhead (null model)"};
  row.seconds = Now() - start;
  const EngineStats stats = (*engine)->stats();
  row.computed = stats.prefill_tokens;
  row.hits = stats.prefix_hit_tokens;
  row.generated = generated;
  row.steps = stats.steps;
  return row;
}

}  // namespace
}  // namespace arbor::runtime

int main(int argc, char** argv) {
  using namespace arbor::runtime;
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) {
      args.model = argv[i + 1];
    } else if (!std::strcmp(argv[i], "--threads")) {
      args.threads = std::atoi(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--blocks")) {
      args.blocks = std::atoi(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--overhead_jobs")) {
      args.overhead_jobs = std::atoi(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--overhead_prompt")) {
      args.overhead_prompt = std::atoi(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--overhead_steps")) {
      args.overhead_steps = std::atoi(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--only")) {
      args.only = argv[i + 1];
    } else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 1;
    }
  }
  std::vector<Row> rows;
  if (args.only.empty() || args.only == "beam") {
    rows.push_back(Beam(args, true));
    rows.push_back(Beam(args, false));
  }
  if (args.only.empty() || args.only == "decode") rows.push_back(Decode(args));
  if (args.only.empty() || args.only == "overhead") rows.push_back(Overhead(args));
  std::printf("\n%-22s %9s %10s %10s %10s %8s %12s %10s\n", "workload", "wall s", "computed",
              "cache hit", "generated", "steps", "gen tok/s", "ms/step");
  for (const Row& r : rows) {
    std::printf("%-22s %9.3f %10lld %10lld %10lld %8lld %12.0f %10.3f\n", r.name.c_str(),
                r.seconds, static_cast<long long>(r.computed), static_cast<long long>(r.hits),
                static_cast<long long>(r.generated), static_cast<long long>(r.steps),
                r.generated / r.seconds, r.steps ? 1000 * r.seconds / r.steps : 0.0);
  }
  return 0;
}
