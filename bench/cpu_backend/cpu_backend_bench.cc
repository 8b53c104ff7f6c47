// CPU backend throughput: one long prefill, and decode steps of B sequences
// batched together over a shared 256-token prompt (the shape of a tree
// search step), plus decode mixed with a prefill chunk.
//
//   cpu_backend_bench [--model=DIR] [--threads=N]
//
// Without --model it writes a random Llama-shaped model (hidden 512, 8
// layers, 8 heads / 2 KV heads, intermediate 1536, vocab 8192) to a temporary
// directory, and also runs the bundled models/policy when it is present.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "runtime/backend/cpu/cpu_backend.h"
#include "runtime/testing/tiny_model.h"

namespace arbor::runtime {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Seq {
  std::vector<int32_t> blocks;
  int context_len = 0;
};

// Builds a batch of `chunks` (seq, new token count) with fresh blocks from
// *next_block where a sequence outgrows its table; outputs each chunk's last row.
ForwardBatch MakeBatch(std::vector<std::pair<Seq*, int>> chunks, int32_t* next_block, int vocab) {
  ForwardBatch b;
  b.seq_starts.push_back(0);
  int max_blocks = 1;
  for (auto& [seq, n] : chunks) {
    while (static_cast<int>(seq->blocks.size()) * kKvBlockSize < seq->context_len + n) {
      seq->blocks.push_back((*next_block)++);
    }
    max_blocks = std::max<int>(max_blocks, seq->blocks.size());
  }
  b.max_blocks_per_seq = max_blocks;
  for (auto& [seq, n] : chunks) {
    for (int i = 0; i < n; ++i) {
      b.tokens.push_back((seq->context_len * 31 + i * 7 + 3) % vocab);
      b.positions.push_back(seq->context_len + i);
    }
    seq->context_len += n;
    b.output_rows.push_back(b.num_tokens() - 1);
    b.seq_starts.push_back(b.num_tokens());
    b.context_lens.push_back(seq->context_len);
    std::vector<int32_t> table = seq->blocks;
    table.resize(max_blocks, -1);
    b.block_tables.insert(b.block_tables.end(), table.begin(), table.end());
  }
  return b;
}

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    std::exit(1);
  }
}

void Run(const std::string& label, const std::string& model_dir, int threads) {
  constexpr int kPrompt = 256;
  constexpr int kDecodeSteps = 16;
  const int batch_sizes[] = {1, 8, 32, 64};
  CpuBackendOptions options;
  options.num_threads = threads;
  options.num_kv_blocks = 64 * ((kPrompt + kDecodeSteps) / kKvBlockSize + 1) + 64;
  absl::StatusOr<std::unique_ptr<CpuBackend>> created = CpuBackend::Create(model_dir, options);
  Check(created.status());
  CpuBackend& backend = **created;
  const ModelConfig& c = backend.config();
  std::printf("\n%s: %s, hidden %d, %d layers, %d/%d heads, vocab %d, %d threads\n", label.c_str(),
              c.architecture.c_str(), c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads,
              c.vocab_size, threads);
  std::vector<float> out;

  // Prefill of 512 tokens in one step (best of 3).
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    int32_t next_block = 0;
    Seq s;
    ForwardBatch b = MakeBatch({{&s, 512}}, &next_block, c.vocab_size);
    const Clock::time_point t0 = Clock::now();
    Check(backend.Forward(b, &out));
    best = std::min(best, Seconds(t0, Clock::now()));
  }
  std::printf("  prefill 512 tokens            %8.1f ms  %9.0f tok/s\n", best * 1e3, 512 / best);

  // Shared prompt, then B sequences decoding together.
  int32_t next_block = 0;
  Seq prompt;
  Check(backend.Forward(MakeBatch({{&prompt, kPrompt}}, &next_block, c.vocab_size), &out));
  const int32_t first_private = next_block;
  for (int batch : batch_sizes) {
    next_block = first_private;
    std::vector<Seq> seqs(batch, prompt);  // shares the prompt's (full) blocks
    double total = 0.0;
    for (int step = 0; step < kDecodeSteps; ++step) {
      std::vector<std::pair<Seq*, int>> chunks;
      for (Seq& s : seqs) chunks.emplace_back(&s, 1);
      ForwardBatch b = MakeBatch(chunks, &next_block, c.vocab_size);
      const Clock::time_point t0 = Clock::now();
      Check(backend.Forward(b, &out));
      total += Seconds(t0, Clock::now());
    }
    std::printf("  decode batch %3d (ctx %d)     %8.2f ms/step %7.0f tok/s\n", batch, kPrompt,
                total / kDecodeSteps * 1e3, batch * kDecodeSteps / total);
  }

  // 32 decode tokens plus a 256-token prefill chunk of another sequence.
  next_block = first_private;
  std::vector<Seq> seqs(32, prompt);
  Seq fresh;
  std::vector<std::pair<Seq*, int>> chunks;
  for (Seq& s : seqs) chunks.emplace_back(&s, 1);
  chunks.emplace_back(&fresh, 256);
  ForwardBatch b = MakeBatch(chunks, &next_block, c.vocab_size);
  const Clock::time_point t0 = Clock::now();
  Check(backend.Forward(b, &out));
  const double mixed = Seconds(t0, Clock::now());
  std::printf("  32 decode + 256 prefill       %8.1f ms  %9.0f tok/s\n", mixed * 1e3, 288 / mixed);
}

}  // namespace
}  // namespace arbor::runtime

int main(int argc, char** argv) {
  std::string model;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--model=", 8) == 0) {
      model = argv[i] + 8;
    } else if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else {
      std::fprintf(stderr, "usage: %s [--model=DIR] [--threads=N]\n", argv[0]);
      return 2;
    }
  }
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  if (!model.empty()) {
    arbor::runtime::Run(model, model, threads);
    return 0;
  }
  arbor::runtime::test_util::TempDir dir;
  arbor::runtime::test_util::TinyModelSpec spec;
  spec.vocab_size = 8192;
  spec.hidden_size = 512;
  spec.intermediate_size = 1536;
  spec.num_layers = 8;
  spec.num_heads = 8;
  spec.num_kv_heads = 2;
  arbor::runtime::test_util::WriteTinyModel(dir.path(), spec);
  arbor::runtime::Run("random 512x8", dir.path(), threads);
  if (std::filesystem::exists("models/policy/config.json")) {
    arbor::runtime::Run("models/policy", "models/policy", threads);
  }
  return 0;
}
