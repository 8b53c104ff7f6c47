// ModelBackend: one model's forward pass over a batch of sequences whose KV
// lives in a paged pool. The scheduler, RadixKvCache and sampler are shared by
// every backend; a backend owns only the weights and the KV memory.
//
// KV layout (every backend): per layer, one K pool and one V pool, each
// [num_blocks, kKvBlockSize, num_kv_heads, head_dim]. Block ids are handed out
// by RadixKvCache; the backend never allocates blocks itself.
//
// Thread-safety: a backend is driven by one scheduler thread; its methods are
// not safe to call concurrently.
#ifndef ARBOR_RUNTIME_BACKEND_BACKEND_H_
#define ARBOR_RUNTIME_BACKEND_BACKEND_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "runtime/kv/kv_block.h"
#include "runtime/model/model_config.h"
#include "runtime/sampling/sampler.h"

namespace arbor::runtime {

// One forward step over several sequences. Sequence s owns new tokens
// tokens[seq_starts[s] .. seq_starts[s+1]); their absolute positions are
// positions[...]; before the step it had context_lens[s] - (new tokens) tokens
// of KV already in its blocks. The backend writes the new tokens' K/V into
// block_tables[s][position / kKvBlockSize] at slot position % kKvBlockSize,
// then attends causally over the whole context.
struct ForwardBatch {
  std::vector<int32_t> tokens;        // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens]
  std::vector<int32_t> seq_starts;    // [num_seqs + 1]
  std::vector<int32_t> context_lens;  // [num_seqs] KV length after this step
  int max_blocks_per_seq = 0;
  std::vector<int32_t> block_tables;  // [num_seqs, max_blocks_per_seq], -1 padded
  // Indices into `tokens` whose output rows are wanted (usually each
  // sequence's last token); a row may be listed more than once (one draw per
  // listing in ModelBackend::ForwardSample), at most max_batch_tokens in all.
  std::vector<int32_t> output_rows;  // [num_outputs]

  int num_seqs() const { return static_cast<int>(context_lens.size()); }
  int num_tokens() const { return static_cast<int>(tokens.size()); }
};

// INVALID_ARGUMENT ("ForwardBatch: ..." naming the field, sequence, token or
// entry at fault) unless `batch` is well formed for a model of `config` over a
// KV pool of `num_kv_blocks` blocks: the shapes above agree, every token is
// in the vocabulary, every sequence has new tokens at the positions that
// follow its cached context, its context fits its block-table row and the
// blocks it uses are in the pool, and every output row is a token of the
// batch. The checks every backend shares; a backend adds its own limits
// (e.g. tokens per device pass) after these. Stateless: safe to call from any
// thread.
absl::Status ValidateForwardBatch(const ForwardBatch& batch, const ModelConfig& config,
                                  int num_kv_blocks);

// How to draw the token of one output row (see runtime/sampling/sampler.h): the
// parameters and the counter-based RNG's key.
struct RowSampling {
  SamplingParams params;
  uint64_t seed = 0;
  uint64_t stream = 0;    // branch / sample index
  uint64_t position = 0;  // the drawn token's position
};

// INVALID_ARGUMENT unless there is one valid RowSampling per output row of a
// language model (not a value head), naming the row at fault. Stateless:
// safe to call from any thread.
absl::Status ValidateRowSampling(const ModelConfig& config, int num_output_rows,
                                 absl::Span<const RowSampling> sampling);

// What a backend's decode steps (one new token per sequence) have done so
// far, cumulative: how each ran (a CUDA graph replayed, captured, or an eager
// pass), and the attention keys they read. `context_keys` is what attention
// once per sequence reads (every sequence's whole context); a cascade step
// (kernels/cascade_plan.h) reads instead each group's shared keys once
// (`prompt_shared_keys` at the prompt level, `tree_shared_keys` at the levels
// below it) and each sequence's own suffix (`own_keys`; every key of a step
// without a cascade). The CPU backend has neither graphs nor cascades: its
// steps are all eager, its keys all own.
struct DecodeStats {
  int64_t graph_replays = 0;
  int64_t graph_captures = 0;  // steps that ran eagerly and were then captured
  int64_t eager_steps = 0;
  int64_t context_keys = 0;
  int64_t prompt_shared_keys = 0;
  int64_t tree_shared_keys = 0;
  int64_t own_keys = 0;
};

class ModelBackend {
 public:
  virtual ~ModelBackend() = default;

  virtual const ModelConfig& config() const = 0;
  // "cpu" or "cuda".
  virtual std::string name() const = 0;
  // Blocks in the KV pool (per layer; every layer has the same count).
  virtual int num_kv_blocks() const = 0;
  // Width of an output row: vocab_size for a language model, num_labels for a
  // value-head model.
  virtual int output_dim() const = 0;

  // Runs the model on `batch` and writes [output_rows.size(), output_dim()]
  // fp32 rows (logits or head outputs) to `out` (resized). Errors: a malformed
  // batch (INVALID_ARGUMENT) or a device failure (INTERNAL).
  virtual absl::Status Forward(const ForwardBatch& batch, std::vector<float>* out) = 0;

  // Runs the model on `batch` and draws one token per output row, with
  // sampling[i] for batch.output_rows[i]; `out` is resized to match. A draw
  // is the one Sampler::Sample makes from the row's logits (token exact,
  // logprob to float rounding), wherever it runs: the CUDA backend samples
  // on the device so that only tokens and logprobs leave the GPU; the default
  // runs Forward and the host Sampler. Errors: as Forward, plus
  // INVALID_ARGUMENT from ValidateRowSampling.
  virtual absl::Status ForwardSample(const ForwardBatch& batch,
                                     absl::Span<const RowSampling> sampling,
                                     std::vector<SampledToken>* out);
  // True when ForwardSample draws where the logits are (the engine then asks
  // for draws instead of logits); false when it is Forward + the host Sampler.
  virtual bool samples_on_device() const { return false; }

  // Copies the K/V contents of block `first` into block `second` in every
  // layer: the copy-on-write of a shared partial block when branches fork.
  virtual absl::Status CopyBlocks(absl::Span<const std::pair<int32_t, int32_t>> src_dst) = 0;

  // The decode steps so far (see DecodeStats); the default: none counted.
  virtual DecodeStats decode_stats() const { return {}; }
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_BACKEND_BACKEND_H_
