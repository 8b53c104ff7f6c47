#include "runtime/backend/backend.h"

#include <algorithm>
#include <cstddef>

#include "absl/strings/str_cat.h"

namespace arbor::runtime {

absl::Status ValidateForwardBatch(const ForwardBatch& b, const ModelConfig& config,
                                  int num_kv_blocks) {
  auto error = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: ", parts...));
  };
  if (b.context_lens.size() + 1 != b.seq_starts.size()) {
    return error("seq_starts has ", b.seq_starts.size(), " entries for ", b.context_lens.size(),
                 " sequences (context_lens)");
  }
  const int num_seqs = b.num_seqs();
  const int num_tokens = b.num_tokens();
  if (num_tokens == 0 || num_seqs == 0) return error("no tokens or no sequences");
  if (b.positions.size() != b.tokens.size()) {
    return error("positions has ", b.positions.size(), " entries for ", num_tokens, " tokens");
  }
  if (b.seq_starts.size() != static_cast<size_t>(num_seqs) + 1 || b.seq_starts[0] != 0 ||
      b.seq_starts[num_seqs] != num_tokens) {
    return error("seq_starts must have num_seqs + 1 = ", num_seqs + 1,
                 " entries from 0 to num_tokens = ", num_tokens);
  }
  if (b.max_blocks_per_seq < 1 ||
      b.block_tables.size() != static_cast<size_t>(num_seqs) * b.max_blocks_per_seq) {
    return error("block_tables has ", b.block_tables.size(), " entries, expected num_seqs (",
                 num_seqs, ") * max_blocks_per_seq (", b.max_blocks_per_seq, ")");
  }
  const int vocab = config.vocab_size;
  for (int t = 0; t < num_tokens; ++t) {
    if (b.tokens[t] < 0 || b.tokens[t] >= vocab) {
      return error("token ", t, " is id ", b.tokens[t], ", outside the vocabulary [0, ", vocab,
                   ")");
    }
  }
  for (int s = 0; s < num_seqs; ++s) {
    const int begin = b.seq_starts[s], end = b.seq_starts[s + 1];
    if (end <= begin) return error("sequence ", s, " has no new tokens");
    const int ctx = b.context_lens[s];
    if (ctx < end - begin) {
      return error("sequence ", s, " has context_len ", ctx, " < its ", end - begin, " new tokens");
    }
    if (ctx > b.max_blocks_per_seq * kKvBlockSize) {
      return error("sequence ", s, " has context_len ", ctx, " beyond its ", b.max_blocks_per_seq,
                   " blocks");
    }
    // New tokens continue the cached context: positions ctx - n .. ctx - 1.
    const int first = ctx - (end - begin);
    for (int t = begin; t < end; ++t) {
      if (b.positions[t] != first + (t - begin)) {
        return error("sequence ", s, " token ", t, " has position ", b.positions[t], ", expected ",
                     first + (t - begin), " (new tokens follow the cached context)");
      }
    }
    // The tables are most of a long-context batch: a pass over each row with
    // four independent flags (one unsigned compare catches both ends), the
    // culprit searched for only on error.
    const int blocks_needed = (ctx + kKvBlockSize - 1) / kKvBlockSize;
    const int32_t* row = b.block_tables.data() + static_cast<size_t>(s) * b.max_blocks_per_seq;
    const uint32_t limit = static_cast<uint32_t>(num_kv_blocks);
    auto outside = [limit](int32_t block) { return static_cast<uint32_t>(block) >= limit; };
    bool bad[4] = {false, false, false, false};
    int i = 0;
    for (; i + 4 <= blocks_needed; i += 4) {
      for (int k = 0; k < 4; ++k) bad[k] |= outside(row[i + k]);
    }
    for (; i < blocks_needed; ++i) bad[0] |= outside(row[i]);
    if (bad[0] || bad[1] || bad[2] || bad[3]) {
      const int at = static_cast<int>(std::find_if(row, row + blocks_needed, outside) - row);
      return error("sequence ", s, " block ", at, " is id ", row[at], ", outside the pool [0, ",
                   num_kv_blocks, ")");
    }
  }
  for (size_t i = 0; i < b.output_rows.size(); ++i) {
    if (b.output_rows[i] < 0 || b.output_rows[i] >= num_tokens) {
      return error("output_rows[", i, "] = ", b.output_rows[i], " is outside [0, ", num_tokens,
                   ")");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRowSampling(const ModelConfig& config, int num_output_rows,
                                 absl::Span<const RowSampling> sampling) {
  if (config.is_value_head()) {
    return absl::InvalidArgumentError(
        "ForwardSample: a value-head model has no token distribution to sample");
  }
  if (sampling.size() != static_cast<size_t>(num_output_rows)) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardSample: ", sampling.size(),
                                                   " sampling entries for ", num_output_rows,
                                                   " output rows"));
  }
  for (size_t i = 0; i < sampling.size(); ++i) {
    if (absl::Status s = ValidateSamplingParams(sampling[i].params, config.vocab_size); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("ForwardSample: row ", i, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status ModelBackend::ForwardSample(const ForwardBatch& batch,
                                         absl::Span<const RowSampling> sampling,
                                         std::vector<SampledToken>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("ForwardSample: out is null");
  if (absl::Status s =
          ValidateRowSampling(config(), static_cast<int>(batch.output_rows.size()), sampling);
      !s.ok()) {
    return s;
  }
  std::vector<float> logits;
  if (absl::Status s = Forward(batch, &logits); !s.ok()) return s;
  const size_t dim = output_dim();
  Sampler sampler;
  out->resize(sampling.size());
  for (size_t i = 0; i < sampling.size(); ++i) {
    const RowSampling& r = sampling[i];
    (*out)[i] = sampler.Sample(absl::MakeConstSpan(logits.data() + i * dim, dim), r.params, r.seed,
                               r.stream, r.position);
  }
  return absl::OkStatus();
}

}  // namespace arbor::runtime
