#include "runtime/engine/request_tree.h"

#include <algorithm>
#include <climits>
#include <map>
#include <utility>

namespace arbor::runtime {

RequestTree::RequestTree(EngineState* state, RadixKvCache* cache, const Tokenizer* tokenizer,
                         int max_context, int output_dim, bool prefix_cache)
    : state_(state),
      cache_(cache),
      tokenizer_(tokenizer),
      max_context_(max_context),
      output_dim_(output_dim),
      prefix_cache_(prefix_cache) {}

void RequestTree::StartGenerate(RequestState* r) {
  const GenerateRequest& g = r->gen;
  // Outputs, ordered by branch then sample.
  int total = 0;
  for (size_t b = 0; b < g.branches.size(); ++b) {
    r->output_offset.push_back(total);
    for (int s = 0; s < g.branches[b].num_samples; ++s) {
      SampleOutput out;
      out.branch_index = static_cast<int>(b);
      out.sample_index = s;
      r->gen_result.outputs.push_back(std::move(out));
    }
    total += g.branches[b].num_samples;
  }
  r->output_final.assign(total, 0);
  r->open_outputs = total;
  // Branches with the same suffix share one prefill.
  std::map<std::vector<int32_t>, int> by_suffix;
  for (size_t b = 0; b < g.branches.size(); ++b) {
    auto [it, inserted] = by_suffix.emplace(g.branches[b].suffix_tokens, r->groups.size());
    if (inserted) r->groups.push_back({g.branches[b].suffix_tokens, {}});
    r->groups[it->second].branches.push_back(static_cast<int>(b));
  }
  const int prompt_len = static_cast<int>(g.prompt_tokens.size());
  std::vector<int> live_groups;
  for (size_t gi = 0; gi < r->groups.size(); ++gi) {
    const int len = prompt_len + static_cast<int>(r->groups[gi].suffix.size());
    if (len >= max_context_) {
      // Nothing can be generated: the branch is finished.
      for (int b : r->groups[gi].branches) {
        for (int s = 0; s < g.branches[b].num_samples; ++s) {
          FinishOutput(r, r->output_offset[b] + s, FinishReason::kContext);
        }
      }
    } else {
      live_groups.push_back(static_cast<int>(gi));
    }
  }
  if (live_groups.size() == 1) {
    Seq* seq = state_->NewSeq(r, SeqKind::kBranch);
    seq->group = live_groups[0];
    seq->tokens = g.prompt_tokens;
    const auto& suffix = r->groups[live_groups[0]].suffix;
    seq->tokens.insert(seq->tokens.end(), suffix.begin(), suffix.end());
  } else if (live_groups.size() > 1) {
    Seq* seq = state_->NewSeq(r, SeqKind::kPrompt);
    seq->tokens = g.prompt_tokens;
    // The prompt's own row is only drawn from by groups with no suffix.
    seq->wants_last_row = false;
    for (int gi : live_groups) {
      if (r->groups[gi].suffix.empty()) seq->wants_last_row = true;
    }
  }
}

void RequestTree::StartScore(RequestState* r) {
  const ScoreRequest& sr = r->score;
  const int width = sr.columns.empty() ? output_dim_ : static_cast<int>(sr.columns.size());
  r->score_result.row_width = width;
  r->score_result.rows.resize(sr.sequences.size());
  r->open_outputs = static_cast<int>(sr.sequences.size());
  for (size_t i = 0; i < sr.sequences.size(); ++i) {
    const ScoreSequence& s = sr.sequences[i];
    r->score_result.rows[i].assign(s.positions.size() * static_cast<size_t>(width), 0.0f);
    Seq* seq = state_->NewSeq(r, SeqKind::kScore);
    seq->score_index = static_cast<int>(i);
    seq->tokens = s.tokens;
    for (size_t k = 0; k < s.positions.size(); ++k) {
      seq->wanted.emplace_back(s.positions[k], static_cast<int32_t>(k));
    }
    std::sort(seq->wanted.begin(), seq->wanted.end());
    seq->wants_last_row =
        !seq->wanted.empty() && seq->wanted.back().first == static_cast<int>(s.tokens.size()) - 1;
  }
}

bool RequestTree::GroupFits(const Seq& prompt, int group) const {
  const RequestState* r = prompt.request;
  return static_cast<int>(prompt.tokens.size() + r->groups[group].suffix.size()) < max_context_;
}

void RequestTree::ForkChildren(Seq* parent, std::vector<Seq*>* samples) {
  RequestState* r = parent->request;
  if (parent->kind == SeqKind::kBranch) {
    SpawnSamples(parent, parent->group, samples);
    return;
  }
  ARBOR_CHECK(parent->kind == SeqKind::kPrompt);
  for (size_t gi = 0; gi < r->groups.size(); ++gi) {
    if (!GroupFits(*parent, static_cast<int>(gi))) continue;  // finished at start
    if (r->groups[gi].suffix.empty()) {
      SpawnSamples(parent, static_cast<int>(gi), samples);
    } else {
      ForkBranch(parent, static_cast<int>(gi));
    }
  }
}

void RequestTree::PlanDraws(const Seq& seq, std::vector<RowSampling>* out) const {
  const RequestState* r = seq.request;
  // As SampleStep draws them: a new sample's tokens are its parent's.
  auto add = [&](int output) {
    const SampleOutput& o = r->gen_result.outputs[output];
    RowSampling spec;
    spec.params = r->gen.sampling;
    spec.seed = r->gen.branches[o.branch_index].seed;
    spec.stream = static_cast<uint64_t>(o.sample_index);
    spec.position = static_cast<uint64_t>(seq.tokens.size());
    out->push_back(spec);
  };
  auto add_group = [&](int group) {  // SpawnSamples' order
    for (int b : r->groups[group].branches) {
      for (int i = 0; i < r->gen.branches[b].num_samples; ++i) add(r->output_offset[b] + i);
    }
  };
  switch (seq.kind) {
    case SeqKind::kPrompt:  // ForkChildren's loop
      for (size_t gi = 0; gi < r->groups.size(); ++gi) {
        if (GroupFits(seq, static_cast<int>(gi)) && r->groups[gi].suffix.empty()) {
          add_group(static_cast<int>(gi));
        }
      }
      break;
    case SeqKind::kBranch:
      add_group(seq.group);
      break;
    case SeqKind::kSample:
      add(seq.output);
      break;
    case SeqKind::kScore:
      break;
  }
}

void RequestTree::ForkBranch(Seq* prompt, int group) {
  RequestState* r = prompt->request;
  Seq* branch = state_->NewSeq(r, SeqKind::kBranch);
  branch->group = group;
  branch->tokens = prompt->tokens;
  const auto& suffix = r->groups[group].suffix;
  branch->tokens.insert(branch->tokens.end(), suffix.begin(), suffix.end());
  // The suffix may be cached from an earlier call (the previous step of this
  // branch); otherwise share the prompt's blocks, its partial block copy-on-write.
  const int len = static_cast<int>(branch->tokens.size());
  auto match = cache_->MatchPrefix(absl::MakeConstSpan(branch->tokens).first(len - 1));
  if (match.num_tokens > prompt->num_computed) {
    branch->blocks = std::move(match.blocks);
    branch->num_computed = match.num_tokens;
    r->usage.prefix_cache_hit_tokens += match.num_tokens - prompt->num_computed;
    state_->counters.prefix_hit_tokens += match.num_tokens - prompt->num_computed;
  } else {
    cache_->Release(match.blocks);
    branch->blocks = prompt->blocks;
    cache_->Retain(branch->blocks);
    branch->num_computed = prompt->num_computed;
  }
  branch->running = true;
  ++state_->counters.running_seqs;
}

void RequestTree::SpawnSamples(Seq* parent, int group, std::vector<Seq*>* samples) {
  RequestState* r = parent->request;
  for (int b : r->groups[group].branches) {
    for (int i = 0; i < r->gen.branches[b].num_samples; ++i) {
      Seq* s = state_->NewSeq(r, SeqKind::kSample);
      s->output = r->output_offset[b] + i;
      s->tokens = parent->tokens;
      s->blocks = parent->blocks;
      cache_->Retain(s->blocks);
      s->num_computed = parent->num_computed;
      s->running = true;
      ++state_->counters.running_seqs;
      if (tokenizer_ != nullptr) s->text = std::make_unique<IncrementalDecoder>(tokenizer_);
      samples->push_back(s);
    }
  }
}

void RequestTree::SpawnProbes(Seq* seq) {
  auto& wanted = seq->wanted;
  auto w = std::lower_bound(wanted.begin(), wanted.end(),
                            std::make_pair(seq->rows_done_below, INT32_MIN));
  const auto end =
      std::lower_bound(wanted.begin(), wanted.end(), std::make_pair(seq->num_computed, INT32_MIN));
  std::vector<std::vector<std::pair<int32_t, int32_t>>> probes;
  // (After a preemption the match may end below rows_done_below: no probes.)
  while (w < end) {
    const int pos = w->first;
    probes.emplace_back();
    for (; w < end && w->first == pos; ++w) probes.back().push_back(*w);
  }
  seq->rows_done_below = std::max(seq->rows_done_below, seq->num_computed);
  for (auto& probe_wanted : probes) {
    Seq* probe = state_->NewSeq(seq->request, SeqKind::kScore);
    probe->probe = true;
    probe->score_index = seq->score_index;
    probe->tokens.assign(seq->tokens.begin(), seq->tokens.begin() + probe_wanted[0].first + 1);
    probe->wanted = std::move(probe_wanted);
    probe->wants_last_row = true;
  }
}

void RequestTree::PublishBlocks(Seq* seq) {
  if (!prefix_cache_) return;
  cache_->Insert(absl::MakeConstSpan(seq->tokens).first(seq->num_computed), &seq->blocks);
}

void RequestTree::ReleaseSeq(Seq* seq) {
  if (!seq->running) return;
  cache_->Release(seq->blocks);
  seq->blocks.clear();
  seq->num_computed = 0;
  seq->running = false;
  --state_->counters.running_seqs;
}

}  // namespace arbor::runtime
