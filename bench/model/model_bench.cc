// Whole-model GPU benchmark: CudaBackend on a Hugging Face model
// folder, driven directly with ForwardBatch (no scheduler, no radix cache),
// against the device's limits measured in the same run.
//
//   decode   B sequences of --prompt_tokens random ids are prefilled (not
//            timed; the prefill draws each sequence's first token), then
//            --decode_tokens - 1 greedy decode steps of one token per
//            sequence run under a wall clock (ForwardSample: the logits stay
//            on the GPU), so every sequence generates exactly --decode_tokens
//            tokens; EOS is ignored. tokens/s = B * steps / time. This is
//            what hf_baseline.py's generate(N) - generate(1) difference times.
//   prefill  one sequence of --prefill_tokens ids in one pass, last row out.
//   shared   --branches sequences decoding --shared_steps greedy tokens after
//            one shared prompt of P tokens (each of --shared_prompts; P a
//            multiple of 16): the prompt is prefilled once, every branch's
//            block table starts with the prompt's blocks and grows its own,
//            as the engine's radix cache lays them out. Timed with cascade
//            attention (the prompt's K/V read once for all branches) and with
//            plain per-branch paged attention (cascade off); KV blocks in use
//            are counted against per-branch copies of the prompt.
//
// Each figure is the median of --repeats runs after a warm-up, and is given
// as a fraction of its limit:
//   decode   B / ((W + KV) / copy bandwidth): W = the bf16 parameter bytes a
//            step reads (every layer, the final norm, the LM head once even
//            when tied to the embedding, and B embedding rows); KV = the K/V
//            bytes of all B contexts at the timed steps' mean context length.
//   prefill  GEMM rate / F, F = FLOPs per token = 2 * (layer parameters)
//            + 4 * layers * heads * head_dim * (T + 1) / 2   (QK^T and PV,
//            causal: the mean token attends to (T + 1) / 2 keys)
//            + 2 * vocab * hidden / T   (the LM head runs on the last row only)
// Limits: device-to-device cudaMemcpy of 1 GiB (bytes read + written), and
// cuBLAS bf16 GEMM 8192^3 (as bench/kernels/kernels_bench.cc measures them).
//
// Usage: model_bench --model=DIR [--batches=1,8,64,256] [--prompt_tokens=128]
//          [--decode_tokens=128] [--prefill_tokens=8192] [--repeats=3]
//          [--json_out=FILE] [--fp8_kv_cache]
// Prints a markdown table last; --json_out gets the same rows as JSON.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/gpu_util/gpu_bench_util.h"
#include "kernels/kernels.h"
#include "nlohmann/json.hpp"
#include "runtime/backend/backend.h"
#include "runtime/backend/cuda/cuda_backend.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model folder (config.json + safetensors)");
ABSL_FLAG(std::string, batches, "1,8,64,256", "Comma-separated decode batch sizes");
ABSL_FLAG(int, prompt_tokens, 128, "Prompt length of every decode sequence");
ABSL_FLAG(int, decode_tokens, 128, "Tokens every decode sequence generates");
ABSL_FLAG(int, prefill_tokens, 8192, "Length of the prefill sequence");
ABSL_FLAG(int, repeats, 3, "Timed repeats per figure (the median is reported)");
ABSL_FLAG(std::string, shared_prompts, "1024,4096,16384",
          "Shared-prompt lengths for the shared-prefix benchmark (multiples of 16; empty: skip)");
ABSL_FLAG(int, branches, 64, "Branches decoding after each shared prompt");
ABSL_FLAG(int, shared_steps, 64, "Decode steps of every branch after the shared prompt");
ABSL_FLAG(std::string, json_out, "", "Where to write the rows as JSON (empty: nowhere)");
ABSL_FLAG(bool, fp8_kv_cache, false,
          "KV pool in fp8 e4m3 (CudaBackendOptions::fp8_kv_cache; the decode limit counts "
          "1-byte K/V)");

namespace arbor::runtime {
namespace {

using Clock = std::chrono::steady_clock;

#define CHECK_CUDA ARBOR_CHECK_CUDA

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "model_bench: %s: %s\n", what, std::string(s.message()).c_str());
    std::exit(1);
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- model arithmetic --------------------------------------------------------

// Parameters of the decoder layers (projections, biases, norms).
double LayerParams(const ModelConfig& c) {
  const double h = c.hidden_size, inter = c.intermediate_size;
  const double q = static_cast<double>(c.num_heads) * c.head_dim;
  const double kv = static_cast<double>(c.num_kv_heads) * c.head_dim;
  double per_layer = h * (q + 2 * kv) + q * h + 3 * h * inter + 2 * h;
  if (c.attention_bias) per_layer += q + 2 * kv;
  if (c.o_proj_bias) per_layer += h;
  if (c.mlp_bias) per_layer += 2 * inter + h;
  return per_layer * c.num_layers;
}

// bf16 bytes of parameters one decode step of `batch` sequences reads.
double DecodeWeightBytes(const ModelConfig& c, int batch) {
  const double lm_head = static_cast<double>(c.vocab_size) * c.hidden_size;
  return 2.0 * (LayerParams(c) + c.hidden_size + lm_head + double{1} * batch * c.hidden_size);
}

// bf16 K and V bytes of one token over all layers.
// K and V of every layer: 2 bytes an element, 1 with --fp8_kv_cache.
double KvBytesPerToken(const ModelConfig& c, bool fp8) {
  return 2.0 * (fp8 ? 1.0 : 2.0) * c.num_layers * c.num_kv_heads * c.head_dim;
}

double PrefillFlopsPerToken(const ModelConfig& c, int tokens) {
  const double q = static_cast<double>(c.num_heads) * c.head_dim;
  return 2.0 * LayerParams(c) + 4.0 * c.num_layers * q * (tokens + 1) / 2.0 +
         2.0 * c.vocab_size * c.hidden_size / tokens;
}

// ---- driving the backend -------------------------------------------------------

struct Seq {
  std::vector<int32_t> blocks;
  int context_len = 0;
};

// One step over `seqs`, sequence s adding tokens[s] (block ids handed out in
// order from *next_block); one output row per sequence, its last token.
ForwardBatch MakeBatch(std::vector<Seq>& seqs, const std::vector<std::vector<int32_t>>& tokens,
                       int32_t* next_block) {
  ForwardBatch b;
  b.seq_starts.push_back(0);
  int max_blocks = 1;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const int ctx = seqs[s].context_len + static_cast<int>(tokens[s].size());
    while (static_cast<int>(seqs[s].blocks.size()) * kKvBlockSize < ctx) {
      seqs[s].blocks.push_back((*next_block)++);
    }
    max_blocks = std::max<int>(max_blocks, seqs[s].blocks.size());
  }
  b.max_blocks_per_seq = max_blocks;
  b.block_tables.reserve(seqs.size() * max_blocks);
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (size_t i = 0; i < tokens[s].size(); ++i) {
      b.tokens.push_back(tokens[s][i]);
      b.positions.push_back(seqs[s].context_len + static_cast<int>(i));
    }
    seqs[s].context_len += static_cast<int>(tokens[s].size());
    b.output_rows.push_back(b.num_tokens() - 1);
    b.seq_starts.push_back(b.num_tokens());
    b.context_lens.push_back(seqs[s].context_len);
    b.block_tables.insert(b.block_tables.end(), seqs[s].blocks.begin(), seqs[s].blocks.end());
    b.block_tables.resize(b.block_tables.size() + max_blocks - seqs[s].blocks.size(), -1);
  }
  return b;
}

std::vector<int32_t> RandomIds(int n, int vocab, std::mt19937* rng) {
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = dist(*rng);
  return ids;
}

// Seconds of `steps` timed greedy decode steps of `batch` sequences after an
// untimed prefill of their prompts.
double TimeDecode(ModelBackend* backend, int batch, int prompt_tokens, int steps, uint32_t seed) {
  const int vocab = backend->config().vocab_size;
  std::mt19937 rng(seed);
  std::vector<Seq> seqs(batch);
  std::vector<std::vector<int32_t>> next(batch);
  for (auto& ids : next) ids = RandomIds(prompt_tokens, vocab, &rng);
  std::vector<RowSampling> greedy(batch);
  for (RowSampling& r : greedy) r.params.temperature = 0.0f;
  std::vector<SampledToken> drawn;
  int32_t next_block = 0;
  // The prefill (split into passes of max_batch_tokens by the backend).
  Check(backend->ForwardSample(MakeBatch(seqs, next, &next_block), greedy, &drawn), "prefill");
  const Clock::time_point start = Clock::now();
  for (int step = 0; step < steps; ++step) {
    for (int s = 0; s < batch; ++s) next[s].assign(1, drawn[s].token);
    Check(backend->ForwardSample(MakeBatch(seqs, next, &next_block), greedy, &drawn), "decode");
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double TimePrefill(ModelBackend* backend, int tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Seq> seqs(1);
  const std::vector<std::vector<int32_t>> ids = {
      RandomIds(tokens, backend->config().vocab_size, &rng)};
  int32_t next_block = 0;
  const ForwardBatch batch = MakeBatch(seqs, ids, &next_block);
  std::vector<RowSampling> greedy(1);
  greedy[0].params.temperature = 0.0f;
  std::vector<SampledToken> drawn;
  const Clock::time_point start = Clock::now();
  Check(backend->ForwardSample(batch, greedy, &drawn), "prefill");
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr int kPrefillChunk = 8192;  // within max_batch_tokens

struct SharedRun {
  double seconds = 0;   // the timed decode steps
  int blocks_used = 0;  // KV blocks the prompt and every branch hold
};

// `branches` sequences after one shared prompt of `prompt` tokens (prefilled
// once, not timed), each decoding `steps` greedy tokens from its own first
// token; the branches sit next to each other in the batch, as the engine
// keeps a job's branches.
SharedRun TimeSharedDecode(ModelBackend* backend, int prompt, int branches, int steps,
                           uint32_t seed) {
  const int vocab = backend->config().vocab_size;
  std::mt19937 rng(seed);
  std::vector<Seq> trunk(1);
  int32_t next_block = 0;
  std::vector<RowSampling> greedy(branches);
  for (RowSampling& r : greedy) r.params.temperature = 0.0f;
  std::vector<SampledToken> drawn;
  const std::vector<int32_t> ids = RandomIds(prompt, vocab, &rng);
  for (int begin = 0; begin < prompt; begin += kPrefillChunk) {  // as the engine chunks it
    const int end = std::min(prompt, begin + kPrefillChunk);
    Check(backend->ForwardSample(
              MakeBatch(trunk, {std::vector<int32_t>(ids.begin() + begin, ids.begin() + end)},
                        &next_block),
              absl::MakeConstSpan(greedy).first(1), &drawn),
          "shared prompt");
  }
  std::vector<Seq> seqs(branches, trunk[0]);  // the prompt's blocks, shared
  std::vector<std::vector<int32_t>> next(branches);
  for (auto& ids : next) ids = RandomIds(1, vocab, &rng);
  const Clock::time_point start = Clock::now();
  for (int step = 0; step < steps; ++step) {
    Check(backend->ForwardSample(MakeBatch(seqs, next, &next_block), greedy, &drawn),
          "shared decode");
    for (int s = 0; s < branches; ++s) next[s].assign(1, drawn[s].token);
  }
  SharedRun run;
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  run.blocks_used = next_block;
  return run;
}

// The group-attention kernels the shared-prefix rows measure the cascade
// with; the first is the default that cascade_tokens_per_s reports.
constexpr std::pair<kernels::GroupAttentionKernel, const char*> kGroupKernels[] = {
    {kernels::GroupAttentionKernel::kWgmma, "wgmma"},
    {kernels::GroupAttentionKernel::kMmaSync, "mma.sync"}};

struct SharedRow {
  int prompt = 0;
  double cascade_tokens_per_s = 0, plain_tokens_per_s = 0;
  double cascade_eager_tokens_per_s = 0;  // the default kernel without CUDA graphs
  std::vector<double> cascade_by_kernel;  // per kGroupKernels entry
  int blocks_used = 0, blocks_if_copied = 0;
};

struct Row {
  std::string name;  // "decode" or "prefill"
  int batch = 1;
  int tokens = 0;  // decode: tokens generated per sequence; prefill: sequence length
  double seconds = 0;
  double tokens_per_s = 0;
  double limit_tokens_per_s = 0;
  double eager_tokens_per_s = 0;   // decode without CUDA graphs (0: not measured)
  double serial_tokens_per_s = 0;  // decode in graphs without dependent launch
  std::vector<double> all_seconds;
};

int Main() {
  const std::string model = absl::GetFlag(FLAGS_model);
  const int prompt = absl::GetFlag(FLAGS_prompt_tokens);
  const int decode = absl::GetFlag(FLAGS_decode_tokens);
  const int prefill = absl::GetFlag(FLAGS_prefill_tokens);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  std::vector<int> batches;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int b = 0;
    if (!absl::SimpleAtoi(part, &b) || b < 1) {
      std::fprintf(stderr, "model_bench: bad --batches entry '%.*s'\n",
                   static_cast<int>(part.size()), part.data());
      return 2;
    }
    batches.push_back(b);
  }
  std::vector<int> shared_prompts;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_shared_prompts), ',', absl::SkipEmpty())) {
    int p = 0;
    if (!absl::SimpleAtoi(part, &p) || p < kKvBlockSize || p % kKvBlockSize != 0) {
      std::fprintf(stderr, "model_bench: --shared_prompts entry '%.*s' is not a multiple of %d\n",
                   static_cast<int>(part.size()), part.data(), kKvBlockSize);
      return 2;
    }
    shared_prompts.push_back(p);
  }
  const int branches = absl::GetFlag(FLAGS_branches);
  const int shared_steps = absl::GetFlag(FLAGS_shared_steps);
  if (branches < 1 || shared_steps < 1) {
    std::fprintf(stderr, "model_bench: --branches and --shared_steps must be >= 1\n");
    return 2;
  }
  if (model.empty() || prompt < 1 || decode < 2 || prefill < 1 || repeats < 1) {
    std::fprintf(stderr,
                 "model_bench: needs --model, --prompt_tokens >= 1, --decode_tokens >= 2, "
                 "--prefill_tokens >= 1, --repeats >= 1\n");
    return 2;
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "model_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("model_bench: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::fflush(stdout);

  // Limits first, while the whole memory is free.
  const bench::DeviceLimits limits = bench::MeasureDeviceLimits();
  std::printf(
      "limits: copy %.0f GB/s (read + write, 1 GiB cudaMemcpy), bf16 GEMM %.0f TFLOP/s "
      "(cuBLAS 8192^3)\n",
      limits.copy_gbps, limits.gemm_tflops);
  std::fflush(stdout);

  // KV for the largest decode batch or the prefill sequence, whichever needs more.
  const int decode_blocks_per_seq = (prompt + decode + kKvBlockSize - 1) / kKvBlockSize;
  int num_blocks = (prefill + kKvBlockSize - 1) / kKvBlockSize;
  for (int b : batches) num_blocks = std::max(num_blocks, b * decode_blocks_per_seq);
  for (int p : shared_prompts) {
    num_blocks =
        std::max(num_blocks, p / kKvBlockSize + branches * (shared_steps / kKvBlockSize + 1));
  }
  CudaBackendOptions options;
  options.num_kv_blocks = num_blocks;
  options.max_batch_tokens = std::max(8192, prefill);
  const bool fp8_kv = absl::GetFlag(FLAGS_fp8_kv_cache);
  options.fp8_kv_cache = fp8_kv;
  const Clock::time_point load_start = Clock::now();
  absl::StatusOr<std::unique_ptr<CudaBackend>> created = CudaBackend::Create(model, options);
  Check(created.status(), "loading the model");
  CudaBackend* backend = created->get();
  const ModelConfig& c = backend->config();
  std::printf(
      "model: %s, %d layers, hidden %d, %d/%d heads x %d, intermediate %d, vocab %d, "
      "tied %d; %.3f B layer + %.3f B LM-head parameters; loaded in %.1f s; "
      "%d KV blocks (%s)\n",
      c.architecture.c_str(), c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
      c.intermediate_size, c.vocab_size, c.tie_word_embeddings ? 1 : 0, LayerParams(c) / 1e9,
      double{1} * c.vocab_size * c.hidden_size / 1e9,
      std::chrono::duration<double>(Clock::now() - load_start).count(), num_blocks,
      fp8_kv ? "fp8 e4m3" : "bf16");
  std::fflush(stdout);

  std::vector<Row> rows;
  const int steps = decode - 1;  // the prefill draws each sequence's first token
  const double mean_context = prompt + decode / 2.0;  // context_len P+1 .. P+decode-1
  for (int b : batches) {
    TimeDecode(backend, b, prompt, std::min(steps, 8), 100);  // warm-up
    Row row;
    row.name = "decode";
    row.batch = b;
    row.tokens = decode;
    for (int r = 0; r < repeats; ++r) {
      row.all_seconds.push_back(TimeDecode(backend, b, prompt, steps, 1 + r));
    }
    row.seconds = Median(row.all_seconds);
    row.tokens_per_s = double{1} * b * steps / row.seconds;
    // The same steps launched kernel by kernel: what the graphs buy.
    backend->set_cuda_graphs(false);
    TimeDecode(backend, b, prompt, std::min(steps, 8), 100);
    std::vector<double> eager;
    for (int r = 0; r < repeats; ++r) eager.push_back(TimeDecode(backend, b, prompt, steps, 1 + r));
    row.eager_tokens_per_s = double{1} * b * steps / Median(eager);
    // Graphs again, captured without programmatic dependent launch: what
    // overlapping each kernel's launch with its predecessor's tail buys.
    kernels::SetDependentLaunch(false);
    backend->set_cuda_graphs(true);
    TimeDecode(backend, b, prompt, std::min(steps, 8), 100);
    std::vector<double> serial;
    for (int r = 0; r < repeats; ++r) {
      serial.push_back(TimeDecode(backend, b, prompt, steps, 1 + r));
    }
    row.serial_tokens_per_s = double{1} * b * steps / Median(serial);
    kernels::SetDependentLaunch(true);
    backend->set_cuda_graphs(false);  // drops the graphs captured without it
    backend->set_cuda_graphs(true);
    const double step_bytes =
        DecodeWeightBytes(c, b) + double{1} * b * mean_context * KvBytesPerToken(c, fp8_kv);
    row.limit_tokens_per_s = b / (step_bytes / (limits.copy_gbps * 1e9));
    std::printf(
        "decode batch %4d: %9.0f tok/s  (%.3f ms/step, %.1f MB/step, limit %.0f tok/s, "
        "%.1f%%; without CUDA graphs %.0f tok/s, without dependent launch %.0f tok/s)\n",
        b, row.tokens_per_s, row.seconds / steps * 1e3, step_bytes / 1e6, row.limit_tokens_per_s,
        100 * row.tokens_per_s / row.limit_tokens_per_s, row.eager_tokens_per_s,
        row.serial_tokens_per_s);
    std::fflush(stdout);
    rows.push_back(row);
  }
  {
    for (int i = 0; i < 2; ++i) TimePrefill(backend, prefill, 200 + i);  // warm-up
    Row row;
    row.name = "prefill";
    row.tokens = prefill;
    for (int r = 0; r < std::max(repeats, 5); ++r) {
      row.all_seconds.push_back(TimePrefill(backend, prefill, 300 + r));
    }
    row.seconds = Median(row.all_seconds);
    row.tokens_per_s = prefill / row.seconds;
    const double flops = PrefillFlopsPerToken(c, prefill);
    row.limit_tokens_per_s = limits.gemm_tflops * 1e12 / flops;
    std::printf(
        "prefill %d tokens: %9.0f tok/s  (%.2f ms, %.1f TFLOP/s at %.3f GFLOP/token, "
        "%.1f%% of GEMM)\n",
        prefill, row.tokens_per_s, row.seconds * 1e3, flops * row.tokens_per_s / 1e12, flops / 1e9,
        100 * row.tokens_per_s / row.limit_tokens_per_s);
    // Some MFU figures count the LM head on every token, which a prefill
    // that outputs only its last row does not compute.
    const double with_head =
        flops - 2.0 * c.vocab_size * c.hidden_size / prefill + 2.0 * c.vocab_size * c.hidden_size;
    std::printf("  (counting the LM head on every token: %.3f GFLOP/token, %.1f%% of GEMM)\n",
                with_head / 1e9, 100 * row.tokens_per_s * with_head / (limits.gemm_tflops * 1e12));
    std::fflush(stdout);
    rows.push_back(row);
  }

  std::vector<SharedRow> shared_rows;
  for (int p : shared_prompts) {
    SharedRow row;
    row.prompt = p;
    auto measure = [&] {
      TimeSharedDecode(backend, p, branches, std::min(shared_steps, 4), 400);  // warm-up
      std::vector<double> seconds;
      for (int r = 0; r < repeats; ++r) {
        const SharedRun run = TimeSharedDecode(backend, p, branches, shared_steps, 500 + r);
        seconds.push_back(run.seconds);
        row.blocks_used = run.blocks_used;
      }
      return double{1} * branches * shared_steps / Median(seconds);
    };
    backend->set_cascade_min_shared_tokens(256);
    const kernels::GroupAttentionKernel default_kernel =
        kernels::SetGroupAttentionKernel(kGroupKernels[0].first);
    for (const auto& [kernel, name] : kGroupKernels) {
      kernels::SetGroupAttentionKernel(kernel);
      row.cascade_by_kernel.push_back(measure());
    }
    kernels::SetGroupAttentionKernel(default_kernel);
    row.cascade_tokens_per_s = row.cascade_by_kernel[0];
    backend->set_cuda_graphs(false);  // what the cascade's graphs buy
    row.cascade_eager_tokens_per_s = measure();
    backend->set_cuda_graphs(true);
    backend->set_cascade_min_shared_tokens(0);
    row.plain_tokens_per_s = measure();
    backend->set_cascade_min_shared_tokens(256);
    row.blocks_if_copied = branches * ((p + shared_steps + kKvBlockSize - 1) / kKvBlockSize);
    std::printf(
        "shared prompt %5d, %d branches x %d steps: cascade %8.0f tok/s (%s %.0f; without CUDA "
        "graphs %.0f), plain %8.0f tok/s; %d KV blocks (per-branch copies: %d)\n",
        p, branches, shared_steps, row.cascade_tokens_per_s, kGroupKernels[1].second,
        row.cascade_by_kernel[1], row.cascade_eager_tokens_per_s, row.plain_tokens_per_s,
        row.blocks_used, row.blocks_if_copied);
    std::fflush(stdout);
    shared_rows.push_back(row);
  }

  const char* decode_formula =
      "decode limit = B / ((W + KV) / copy): W = bf16 bytes of layer params + final norm + "
      "LM head (once) + B embedding rows; KV = B * mean context * K/V bytes per token";
  const char* prefill_formula =
      "prefill limit = GEMM rate / F, F = 2 * layer params + 4 * layers * heads * head_dim * "
      "(T + 1) / 2 + 2 * vocab * hidden / T (LM head on the last row only)";
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    nlohmann::json j;
    j["device"] = prop.name;
    j["limits"] = {{"copy_gbps", limits.copy_gbps}, {"gemm_tflops", limits.gemm_tflops}};
    j["model"] = {{"dir", model},
                  {"layers", c.num_layers},
                  {"hidden", c.hidden_size},
                  {"vocab", c.vocab_size},
                  {"layer_params", LayerParams(c)},
                  {"tie_word_embeddings", c.tie_word_embeddings}};
    j["prompt_tokens"] = prompt;
    j["formulas"] = {decode_formula, prefill_formula};
    for (const Row& r : rows) {
      j["rows"].push_back({{"kind", r.name},
                           {"batch", r.batch},
                           {"tokens", r.tokens},
                           {"seconds", r.seconds},
                           {"all_seconds", r.all_seconds},
                           {"tokens_per_s", r.tokens_per_s},
                           {"eager_tokens_per_s", r.eager_tokens_per_s},
                           {"serial_tokens_per_s", r.serial_tokens_per_s},
                           {"limit_tokens_per_s", r.limit_tokens_per_s},
                           {"fraction_of_limit", r.tokens_per_s / r.limit_tokens_per_s}});
    }
    j["shared_prefix"] = {{"branches", branches},
                          {"steps", shared_steps},
                          {"default_kernel", kGroupKernels[0].second}};
    for (const SharedRow& r : shared_rows) {
      nlohmann::json by_kernel;
      for (size_t k = 0; k < r.cascade_by_kernel.size(); ++k) {
        by_kernel[kGroupKernels[k].second] = r.cascade_by_kernel[k];
      }
      j["shared_prefix"]["rows"].push_back(
          {{"prompt", r.prompt},
           {"cascade_tokens_per_s", r.cascade_tokens_per_s},
           {"cascade_by_kernel", by_kernel},
           {"cascade_eager_tokens_per_s", r.cascade_eager_tokens_per_s},
           {"plain_tokens_per_s", r.plain_tokens_per_s},
           {"blocks_used", r.blocks_used},
           {"blocks_if_copied", r.blocks_if_copied}});
    }
    std::ofstream(path) << j.dump(2) << "\n";
  }

  std::printf("\n%s\n%s\n\n", decode_formula, prefill_formula);
  std::printf("| measurement | tok/s | limit tok/s | of limit |\n|---|---|---|---|\n");
  for (const Row& r : rows) {
    const std::string what = r.name == "decode" ? "decode batch " + std::to_string(r.batch) + " (" +
                                                      std::to_string(prompt) + " + " +
                                                      std::to_string(r.tokens) + ")"
                                                : "prefill " + std::to_string(r.tokens);
    std::printf("| %s | %.0f | %.0f | %.1f%% |\n", what.c_str(), r.tokens_per_s,
                r.limit_tokens_per_s, 100 * r.tokens_per_s / r.limit_tokens_per_s);
  }
  if (!shared_rows.empty()) {
    std::printf(
        "\n| shared prompt (%d branches x %d steps) | cascade tok/s | without CUDA graphs | "
        "plain tok/s | speed-up | KV blocks | per-branch copies |\n|---|---|---|---|---|---|---|\n",
        branches, shared_steps);
    for (const SharedRow& r : shared_rows) {
      std::printf("| %d | %.0f | %.0f | %.0f | %.2fx | %d | %d |\n", r.prompt,
                  r.cascade_tokens_per_s, r.cascade_eager_tokens_per_s, r.plain_tokens_per_s,
                  r.cascade_tokens_per_s / r.plain_tokens_per_s, r.blocks_used, r.blocks_if_copied);
    }
    const SharedRow &first = shared_rows.front(), &last = shared_rows.back();
    std::printf("from %d to %d shared tokens: cascade throughput falls %.1f%%, plain %.1f%%\n",
                first.prompt, last.prompt,
                100 * (1 - last.cascade_tokens_per_s / first.cascade_tokens_per_s),
                100 * (1 - last.plain_tokens_per_s / first.plain_tokens_per_s));
    for (size_t k = 1; k < std::size(kGroupKernels); ++k) {
      std::printf("  with the %s kernel: %.0f -> %.0f tok/s, falls %.1f%%\n",
                  kGroupKernels[k].second, first.cascade_by_kernel[k], last.cascade_by_kernel[k],
                  100 * (1 - last.cascade_by_kernel[k] / first.cascade_by_kernel[k]));
    }
  }
  std::printf("\nlimits: copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s on %s\n", limits.copy_gbps,
              limits.gemm_tflops, prop.name);
  return 0;
}

}  // namespace
}  // namespace arbor::runtime

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return arbor::runtime::Main();
}
