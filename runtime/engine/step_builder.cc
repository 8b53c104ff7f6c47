#include "runtime/engine/step_builder.h"

#include <algorithm>
#include <limits>

namespace arbor::runtime {

StepBuilder::StepBuilder(const RequestTree* tree, int max_batch_tokens, bool backend_sampling)
    : tree_(tree), max_batch_tokens_(max_batch_tokens), backend_sampling_(backend_sampling) {}

const BuiltStep& StepBuilder::Build(const std::vector<ScheduledChunk>& planned) {
  BuiltStep& step = step_;
  ForwardBatch& b = step.batch;
  b.tokens.clear();
  b.positions.clear();
  b.seq_starts.assign(1, 0);
  b.context_lens.clear();
  b.block_tables.clear();
  b.output_rows.clear();
  b.max_blocks_per_seq = 0;
  step.chunks.clear();
  step.wants.clear();
  step.backend_draws = false;
  step.draws.clear();
  step.first_draw.clear();
  step.prefill_tokens = 0;
  step.decode_tokens = 0;
  for (const ScheduledChunk& c : planned) {
    if (c.seq != nullptr) step.chunks.push_back(c);
  }
  if (step.chunks.empty()) return step;

  bool score_rows = false;
  for (size_t i = 0; i < step.chunks.size(); ++i) {
    const ScheduledChunk& c = step.chunks[i];
    const Seq& s = *c.seq;
    b.max_blocks_per_seq = std::max(b.max_blocks_per_seq, static_cast<int>(s.blocks.size()));
    const int base = b.num_tokens();
    for (int p = c.start; p < c.start + c.n; ++p) {
      b.tokens.push_back(s.tokens[p]);
      b.positions.push_back(p);
    }
    b.seq_starts.push_back(b.num_tokens());
    b.context_lens.push_back(c.start + c.n);
    const int end = c.start + c.n;
    if (s.kind == SeqKind::kScore) {
      score_rows = score_rows || !s.wanted.empty();
      auto lo = std::lower_bound(s.wanted.begin(), s.wanted.end(),
                                 std::make_pair(c.start, std::numeric_limits<int32_t>::min()));
      int last_pos = -1;
      for (auto w = lo; w != s.wanted.end() && w->first < end; ++w) {
        if (w->first == last_pos) continue;  // one row serves every slot of a position
        last_pos = w->first;
        b.output_rows.push_back(base + (w->first - c.start));
        step.wants.push_back({static_cast<int>(i), w->first});
      }
    } else if (end == static_cast<int>(s.tokens.size()) && s.wants_last_row) {
      b.output_rows.push_back(base + c.n - 1);
      step.wants.push_back({static_cast<int>(i), end - 1});
    }
    RequestUsage& u = s.request->usage;
    if (s.kind == SeqKind::kSample) {
      const int prefill = std::max(0, std::min(end, s.prefill_until) - c.start);
      u.prefill_tokens += prefill;
      step.prefill_tokens += prefill;
      step.decode_tokens += c.n - prefill;
    } else {
      u.prefill_tokens += c.n;
      step.prefill_tokens += c.n;
    }
  }
  b.block_tables.assign(step.chunks.size() * static_cast<size_t>(b.max_blocks_per_seq), -1);
  for (size_t i = 0; i < step.chunks.size(); ++i) {
    const auto& blocks = step.chunks[i].seq->blocks;
    std::copy(blocks.begin(), blocks.end(),
              b.block_tables.begin() + static_cast<long>(i * b.max_blocks_per_seq));
  }
  // Score rows need their logits, so a step with any takes the host path.
  if (backend_sampling_ && !score_rows) PlanBackendDraws();
  return step;
}

void StepBuilder::PlanBackendDraws() {
  BuiltStep& step = step_;
  // One output row per planned draw (a prompt's row once per sample it spawns).
  for (const BuiltStep::RowWant& w : step.wants) {
    step.first_draw.push_back(step.draws.size());
    tree_->PlanDraws(*step.chunks[w.chunk].seq, &step.draws);
  }
  step.first_draw.push_back(step.draws.size());
  // Output rows are bounded by the step's token budget (backend scratch).
  step.backend_draws = step.draws.size() <= static_cast<size_t>(max_batch_tokens_);
  if (!step.backend_draws) return;
  std::vector<int32_t> rows;
  rows.swap(step.batch.output_rows);
  for (size_t j = 0; j < step.wants.size(); ++j) {
    step.batch.output_rows.resize(step.first_draw[j + 1], rows[j]);
  }
}

}  // namespace arbor::runtime
