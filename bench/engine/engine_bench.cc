// Engine benchmark: what the prefix cache and forking save on a search-shaped
// workload, and the scheduler's throughput on many concurrent samples.
//
//   build/bin/engine_bench [--model DIR] [--threads N] [--blocks N]
//
// Workloads (each on a fresh engine over the CPU backend):
//  * beam:     a 200-token prompt, 16 branches x 4 samples, 5 steps of 24
//              tokens; each step's branches continue the previous step's
//              samples (suffix = earlier steps), as a beam search sends them.
//              Run once with the engine's sharing and once "unshared": every
//              (branch, sample) as its own request on an emptied cache.
//  * decode:   256 samples of one prompt decoding 64 tokens together.
// Prints a table last: wall time, tokens computed, prefix-cache hits,
// generated tokens, forward steps and generated tokens per second.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/backend/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"

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
    } else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 1;
    }
  }
  std::vector<Row> rows = {Beam(args, true), Beam(args, false), Decode(args)};
  std::printf("\n%-18s %9s %10s %10s %10s %8s %12s\n", "workload", "wall s", "computed",
              "cache hit", "generated", "steps", "gen tok/s");
  for (const Row& r : rows) {
    std::printf("%-18s %9.3f %10lld %10lld %10lld %8lld %12.0f\n", r.name.c_str(), r.seconds,
                static_cast<long long>(r.computed), static_cast<long long>(r.hits),
                static_cast<long long>(r.generated), static_cast<long long>(r.steps),
                r.generated / r.seconds);
  }
  return 0;
}
