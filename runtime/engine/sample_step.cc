#include "runtime/engine/sample_step.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "common/check.h"

namespace arbor::runtime {

SampleStep::SampleStep(EngineState* state, RequestTree* tree, int output_dim, int max_context,
                       const std::vector<int32_t>& eos_token_ids, int num_sampler_threads,
                       std::function<void()> on_request_closed)
    : state_(state),
      tree_(tree),
      output_dim_(output_dim),
      max_context_(max_context),
      on_request_closed_(std::move(on_request_closed)) {
  eos_ids_.insert(eos_token_ids.begin(), eos_token_ids.end());
  runner_ = std::make_unique<ParallelRunner>(num_sampler_threads - 1);
  samplers_.resize(runner_->num_workers());
}

void SampleStep::ApplyStep(const BuiltStep& step, const std::vector<float>& out,
                           const std::vector<SampledToken>& drawn) {
  // Advance, publish full blocks, deliver rows.
  size_t next_want = 0;
  for (size_t i = 0; i < step.chunks.size(); ++i) {
    Seq* s = step.chunks[i].seq;
    const int before = s->num_computed;
    s->num_computed = step.chunks[i].start + step.chunks[i].n;
    if (s->num_computed / kKvBlockSize > before / kKvBlockSize) tree_->PublishBlocks(s);
    s->rows_done_below = std::max(s->rows_done_below, s->num_computed);
    const float* last_row = nullptr;
    const SampledToken* last_draws = nullptr;
    for (; next_want < step.wants.size() && step.wants[next_want].chunk == static_cast<int>(i);
         ++next_want) {
      const int pos = step.wants[next_want].position;
      if (step.backend_draws) {  // only last rows of sample-bearing sequences are wanted
        last_draws = drawn.data() + step.first_draw[next_want];
        continue;
      }
      const float* row = out.data() + next_want * static_cast<size_t>(output_dim_);
      if (s->kind == SeqKind::kScore) DeliverScoreRow(*s, pos, row);
      if (pos == static_cast<int>(s->tokens.size()) - 1) last_row = row;
    }
    if (s->num_computed == static_cast<int>(s->tokens.size())) OnComputed(s, last_row, last_draws);
  }
  RunSampleJobs();
}

void SampleStep::DeliverScoreRow(const Seq& seq, int pos, const float* row) {
  RequestState* r = seq.request;
  const auto& columns = r->score.columns;
  const int width = r->score_result.row_width;
  auto& rows = r->score_result.rows[seq.score_index];
  auto lo = std::lower_bound(seq.wanted.begin(), seq.wanted.end(),
                             std::make_pair(pos, std::numeric_limits<int32_t>::min()));
  for (auto w = lo; w != seq.wanted.end() && w->first == pos; ++w) {
    float* dst = rows.data() + static_cast<size_t>(w->second) * width;
    if (columns.empty()) {
      std::copy(row, row + output_dim_, dst);
    } else {
      for (int c = 0; c < width; ++c) dst[c] = row[columns[c]];
    }
  }
}

void SampleStep::OnComputed(Seq* seq, const float* last_row, const SampledToken* draws) {
  switch (seq->kind) {
    case SeqKind::kPrompt:
    case SeqKind::kBranch: {
      std::vector<Seq*> samples;
      tree_->ForkChildren(seq, &samples);
      // Each new sample draws its first token from the parent's last row.
      ARBOR_CHECK(samples.empty() || last_row != nullptr || draws != nullptr);
      for (Seq* s : samples) {
        if (draws != nullptr) {
          sample_jobs_.push_back({s, nullptr, *draws++});
        } else {
          sample_jobs_.push_back({s, last_row, {}});
        }
      }
      FinishSeq(seq);
      break;
    }
    case SeqKind::kSample:
      ARBOR_CHECK(last_row != nullptr || draws != nullptr);
      sample_jobs_.push_back(
          {seq, draws != nullptr ? nullptr : last_row, draws != nullptr ? *draws : SampledToken()});
      break;
    case SeqKind::kScore:
      if (!seq->probe) --seq->request->open_outputs;
      FinishSeq(seq);
      break;
  }
}

void SampleStep::RunSampleJobs() {
  if (sample_jobs_.empty()) return;
  const std::function<void(int, int)> draw = [this](int worker, int i) {
    SampleJob& job = sample_jobs_[i];
    if (job.row != nullptr) job.token = Draw(samplers_[worker], *job.seq, job.row);
  };
  // Small steps are drawn on this thread: waking the pool costs more.
  const int64_t work = static_cast<int64_t>(sample_jobs_.size()) * output_dim_;
  if (work >= (int64_t{1} << 18)) {
    runner_->Run(static_cast<int>(sample_jobs_.size()), draw);
  } else {
    for (size_t i = 0; i < sample_jobs_.size(); ++i) draw(0, static_cast<int>(i));
  }
  std::vector<SampleJob> jobs;
  jobs.swap(sample_jobs_);
  for (const SampleJob& job : jobs) {
    if (ApplySample(job.seq, job.token)) FinishSeq(job.seq);
  }
}

SampledToken SampleStep::Draw(Sampler& sampler, const Seq& seq, const float* row) const {
  ARBOR_CHECK(row != nullptr);
  const RequestState* r = seq.request;
  const SampleOutput& out = r->gen_result.outputs[seq.output];
  const BranchSpec& branch = r->gen.branches[out.branch_index];
  return sampler.Sample(absl::MakeConstSpan(row, output_dim_), r->gen.sampling, branch.seed,
                        static_cast<uint64_t>(out.sample_index),
                        static_cast<uint64_t>(seq.tokens.size()));
}

bool SampleStep::ApplySample(Seq* seq, const SampledToken& t) {
  RequestState* r = seq->request;
  SampleOutput& out = r->gen_result.outputs[seq->output];
  if (r->usage.generated_tokens == 0) r->first_token = absl::Now();
  ++r->usage.generated_tokens;
  ++state_->counters.generated_tokens;
  out.logprob += t.logprob;
  const StopRules& stop = r->gen.stop;
  if (!stop.ignore_eos && eos_ids_.contains(t.token)) {
    FinishOutput(r, seq->output, FinishReason::kEos);
    return true;
  }
  seq->tokens.push_back(t.token);
  out.tokens.push_back(t.token);
  if (r->gen.return_token_logprobs) out.token_logprobs.push_back(t.logprob);
  bool delimiter = false;
  if (seq->text != nullptr) {
    const size_t before = out.text.size();
    out.text += seq->text->Add(t.token);
    for (const std::string& d : stop.step_delimiters) {
      // Only a match that ends in the new text is new.
      const size_t from = before >= d.size() - 1 ? before - (d.size() - 1) : 0;
      if (out.text.find(d, from) != std::string::npos) {
        delimiter = true;
        break;
      }
    }
  }
  if (delimiter) {
    FinishOutput(r, seq->output, FinishReason::kStep);
  } else if (static_cast<int>(seq->tokens.size()) >= max_context_) {
    FinishOutput(r, seq->output, FinishReason::kContext);
  } else if (static_cast<int>(out.tokens.size()) >= stop.max_step_tokens) {
    FinishOutput(r, seq->output, FinishReason::kLength);
  } else {
    return false;
  }
  return true;
}

void SampleStep::FinishSeq(Seq* seq) {
  RequestState* r = seq->request;
  if (seq->kind == SeqKind::kSample && seq->text != nullptr) {
    r->gen_result.outputs[seq->output].text += seq->text->Finish();
  }
  tree_->ReleaseSeq(seq);
  --r->live_seqs;
  state_->seqs.erase(seq->order);  // destroys seq
  MaybeCompleteRequest(r);
}

void SampleStep::MaybeCompleteRequest(RequestState* r) {
  if (r->finished || r->live_seqs > 0) return;
  ARBOR_CHECK(r->open_outputs == 0 || r->cancelled);
  r->finished = true;
  const absl::Time now = absl::Now();
  const absl::Time first_step = r->started ? r->first_step : now;
  r->usage.queue_us = absl::ToInt64Microseconds(first_step - r->submitted);
  r->usage.compute_us = absl::ToInt64Microseconds(now - first_step);
  if (r->first_token != absl::InfinitePast()) {
    r->usage.first_token_us = absl::ToInt64Microseconds(r->first_token - r->submitted);
  }
  auto owned = std::move(state_->requests[r->id]);
  state_->requests.erase(r->id);
  if (r->is_score) {
    if (r->cancelled) {
      callbacks_.push_back([done = std::move(r->score_done), st = r->cancel_status] { done(st); });
    } else {
      r->score_result.computed_tokens = r->usage.prefill_tokens;
      r->score_result.cached_tokens = r->usage.prefix_cache_hit_tokens;
      r->score_result.queue_us = r->usage.queue_us;
      r->score_result.compute_us = r->usage.compute_us;
      callbacks_.push_back(
          [done = std::move(r->score_done), result = std::move(r->score_result)]() mutable {
            done(std::move(result));
          });
    }
  } else {
    r->gen_result.usage = r->usage;
    callbacks_.push_back(
        [done = std::move(r->gen_done), result = std::move(r->gen_result)]() mutable {
          done(std::move(result));
        });
  }
  on_request_closed_();
}

void SampleStep::DropRequestSeqs(RequestState* r) {
  std::vector<uint64_t> ids;
  for (auto& [order, s] : state_->seqs) {
    if (s->request == r) ids.push_back(order);
  }
  for (uint64_t order : ids) {
    Seq* s = state_->seqs[order].get();
    if (s->kind == SeqKind::kSample && s->text != nullptr) {
      r->gen_result.outputs[s->output].text += s->text->Finish();
    }
    tree_->ReleaseSeq(s);
    state_->seqs.erase(order);
  }
  r->live_seqs = 0;
}

void SampleStep::CancelRequest(RequestState* r, absl::Status why) {
  if (r->finished) return;
  r->cancelled = true;
  r->cancel_status = std::move(why);
  DropRequestSeqs(r);
  if (!r->is_score) {
    for (size_t o = 0; o < r->output_final.size(); ++o) {
      FinishOutput(r, static_cast<int>(o), FinishReason::kCancelled);
    }
  }
  MaybeCompleteRequest(r);
}

void SampleStep::FailRequest(RequestState* r, absl::Status status) {
  if (r->finished) return;
  DropRequestSeqs(r);
  r->finished = true;
  auto owned = std::move(state_->requests[r->id]);
  state_->requests.erase(r->id);
  if (r->is_score) {
    callbacks_.push_back([done = std::move(r->score_done), status] { done(status); });
  } else {
    callbacks_.push_back([done = std::move(r->gen_done), status] { done(status); });
  }
  on_request_closed_();
}

std::vector<std::function<void()>> SampleStep::TakeCallbacks() {
  std::vector<std::function<void()>> callbacks;
  callbacks.swap(callbacks_);
  return callbacks;
}

}  // namespace arbor::runtime
