#include "search/search_run.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "common/check.h"
#include "search/pairwise_judge.h"
#include "search/steps.h"

namespace arbor::search::internal {

std::string Branch::Text() const { return absl::StrJoin(steps, ""); }

SearchRun::SearchRun(const StrategyConfig& config, const JobContext& job, Generator& generator,
                     Scorer* scorer)
    : config_(config),
      job_(job),
      generator_(generator),
      scorer_(scorer),
      budget_(config.budget, job.start, job.now),
      tie_rng_(job.seed, RandomStream::kTieBreak),
      resample_rng_(job.seed, RandomStream::kResample),
      final_rng_(job.seed, RandomStream::kFinalPick) {}

absl::Status SearchRun::Start() {
  auto extractor = AnswerExtractor::Create(config_.answer_extraction.pattern);
  if (!extractor.ok()) return extractor.status();
  extractor_ = *std::move(extractor);
  if (Cancelled()) return absl::CancelledError("job cancelled");
  auto prompt = generator_.EncodePrompt(job_.question);
  if (!prompt.ok()) return prompt.status();
  prompt_ = *std::move(prompt);
  return absl::OkStatus();
}

bool SearchRun::Cancelled() const { return job_.is_cancelled && job_.is_cancelled(); }

bool SearchRun::EndedByDeadline(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kDeadlineExceeded &&
      status.code() != absl::StatusCode::kCancelled) {
    return false;
  }
  // An RPC deadline set to the job's may fire a hair before our clock agrees.
  return budget_.DeadlinePassed(absl::Milliseconds(20));
}

absl::StatusOr<bool> SearchRun::BeginIteration() {
  if (Cancelled()) return absl::CancelledError("job cancelled");
  return budget_.BeginStep();
}

StopOptions SearchRun::StepStop() const { return config_.stop; }

StopOptions SearchRun::FinalStop(const std::vector<const Branch*>& branches) const {
  StopOptions stop = config_.stop;
  stop.step_delimiters.clear();
  size_t shortest = 0;
  if (!branches.empty()) {
    shortest = branches.front()->tokens.size();
    for (const Branch* b : branches) shortest = std::min(shortest, b->tokens.size());
  }
  const int64_t left =
      static_cast<int64_t>(config_.max_solution_tokens) - static_cast<int64_t>(shortest);
  constexpr int64_t kMaxStepTokens = 32768;  // StopRules.max_step_tokens range
  stop.max_step_tokens = static_cast<int32_t>(
      std::min(kMaxStepTokens, std::max<int64_t>(config_.stop.max_step_tokens, left)));
  return stop;
}

std::optional<std::vector<int>> SearchRun::PlanEndgame(const std::vector<int>& samples) {
  int64_t wanted = 0;
  for (int s : samples) wanted += s;
  const int64_t left = budget_.RemainingGeneratedTokens();
  const int64_t step_cap = config_.stop.max_step_tokens;
  if (wanted == 0 || left / wanted >= step_cap) return std::nullopt;
  const int64_t outputs =
      std::clamp<int64_t>(left / (kEndgameStepCapsPerBranch * step_cap), 1, wanted);
  std::vector<int> granted(samples.size(), 0);
  int64_t given = 0;
  while (given < outputs) {
    for (size_t i = 0; i < samples.size() && given < outputs; ++i) {
      if (granted[i] < samples[i]) {
        ++granted[i];
        ++given;
      }
    }
  }
  // The budget ended the step-by-step search, even if everything finishes.
  budget_.MarkExhausted(kCapGeneratedTokens);
  return granted;
}

absl::StatusOr<std::vector<Child>> SearchRun::Extend(const std::vector<const Branch*>& parents,
                                                     const std::vector<int>& samples,
                                                     const ExtendOptions& options) {
  ARBOR_CHECK(parents.size() == samples.size());
  std::vector<Child> children;
  int64_t desired = 0;
  for (int s : samples) desired += s;
  if (desired == 0) return children;
  const int32_t step_cap = options.stop.max_step_tokens;
  std::optional<GenerationPlan> plan;
  if (options.shaped) {
    const int64_t afford = budget_.SearchGeneratedTokens() / step_cap;
    if (afford <= 0) {
      budget_.MarkExhausted(kCapGeneratedTokens);
      return children;
    }
    plan = GenerationPlan{static_cast<int32_t>(std::min(desired, afford)), step_cap};
    if (plan->num_outputs < desired) budget_.CountShapedStep();
  } else {
    plan = budget_.PlanGeneration(desired, step_cap, std::min(kMinUsefulStepTokens, step_cap));
  }
  if (!plan.has_value()) return children;

  // What each parent gets (shaped: round-robin, best parents first; else
  // trailing samples dropped first); then pieces of at most
  // kMaxSamplesPerBranch samples, grouped into calls within the limits.
  std::vector<int> granted(parents.size(), 0);
  if (options.shaped) {
    int64_t given = 0;
    while (given < plan->num_outputs) {
      for (size_t p = 0; p < parents.size() && given < plan->num_outputs; ++p) {
        if (granted[p] < samples[p]) {
          ++granted[p];
          ++given;
        }
      }
    }
  } else {
    int64_t grant_left = plan->num_outputs;
    for (size_t p = 0; p < parents.size() && grant_left > 0; ++p) {
      granted[p] = static_cast<int>(std::min<int64_t>(samples[p], grant_left));
      grant_left -= granted[p];
    }
  }
  struct Piece {
    size_t parent;
    int first_sample;
    int count;
  };
  std::vector<Piece> pieces;
  for (size_t p = 0; p < parents.size(); ++p) {
    for (int first = 0; first < granted[p]; first += kMaxSamplesPerBranch) {
      pieces.push_back({p, first, std::min(kMaxSamplesPerBranch, granted[p] - first)});
    }
  }
  ExtendRequest request;
  request.prompt_tokens = prompt_;
  request.sampling = options.sampling;
  request.stop = options.stop;
  request.stop.max_step_tokens = plan->max_step_tokens;
  request.deadline = budget_.deadline();

  bool cut_by_budget = false;
  size_t next = 0;
  while (next < pieces.size()) {
    // One call: as many pieces as the limits allow.
    size_t end = next;
    int outputs = 0;
    while (end < pieces.size() && static_cast<int>(end - next) < kMaxBranchesPerCall &&
           outputs + pieces[end].count <= kMaxOutputsPerCall) {
      outputs += pieces[end].count;
      ++end;
    }
    const uint64_t call = call_index_++;
    request.branches.clear();
    for (size_t i = next; i < end; ++i) {
      BranchInput input;
      input.suffix_tokens = parents[pieces[i].parent]->tokens;
      input.num_samples = pieces[i].count;
      input.seed = BranchSeed(job_.seed, call, i - next);
      request.branches.push_back(input);
    }
    if (Cancelled()) return absl::CancelledError("job cancelled");
    absl::StatusOr<ExtendResult> result = generator_.Extend(request);
    if (!result.ok()) {
      if (EndedByDeadline(result.status())) return children;
      if (Cancelled()) return absl::CancelledError("job cancelled");
      return result.status();
    }
    budget_.ChargeGeneration(result->usage);
    if (static_cast<int>(result->outputs.size()) != outputs) {
      return absl::InternalError(absl::StrCat("generator returned ", result->outputs.size(),
                                              " outputs for ", outputs, " requested"));
    }
    bool deadline_hit = false;
    size_t k = 0;
    for (size_t i = next; i < end; ++i) {
      const Piece& piece = pieces[i];
      for (int s = 0; s < piece.count; ++s, ++k) {
        StepOutput& out = result->outputs[k];
        if (out.branch_index != static_cast<int>(i - next) || out.sample_index != s) {
          return absl::InternalError(absl::StrCat("generator output ", k, " is (branch ",
                                                  out.branch_index, ", sample ", out.sample_index,
                                                  "), expected (", i - next, ", ", s, ")"));
        }
        if (static_cast<int>(out.tokens.size()) > plan->max_step_tokens) {
          return absl::InternalError(absl::StrCat("generator returned ", out.tokens.size(),
                                                  " tokens for a step capped at ",
                                                  plan->max_step_tokens));
        }
        if (out.finish_reason == FinishReason::kCancelled) {
          if (Cancelled()) return absl::CancelledError("job cancelled");
          if (!budget_.DeadlinePassed()) {
            return absl::AbortedError("generator cancelled a step the job did not cancel");
          }
          deadline_hit = true;
          continue;  // a cut-off step is dropped
        }
        if (out.finish_reason == FinishReason::kLength && plan->max_step_tokens < step_cap &&
            !options.finishing) {
          cut_by_budget = true;
        }
        Child child;
        child.parent = piece.parent;
        child.sample = piece.first_sample + s;
        Branch& b = child.branch;
        b = *parents[piece.parent];
        b.tokens.insert(b.tokens.end(), out.tokens.begin(), out.tokens.end());
        b.logprob += out.logprob;
        b.scored = false;
        switch (out.finish_reason) {
          case FinishReason::kEos:
            b.done = b.finished = true;
            break;
          case FinishReason::kContext:
            b.done = true;
            break;
          case FinishReason::kStep:
          case FinishReason::kLength:
          case FinishReason::kCancelled:
            break;
        }
        if (out.tokens.empty() || options.final_iteration ||
            static_cast<int64_t>(b.tokens.size()) >= config_.max_solution_tokens ||
            static_cast<int>(b.steps.size()) + 1 >= kMaxStepsPerCandidate) {
          b.done = true;
        }
        if (options.final_answer_ends && absl::StrContains(out.text, "\\boxed")) {
          b.done = b.finished = true;
        }
        b.whole_steps.resize(b.steps.size(), false);
        b.whole_steps.push_back(options.stop.step_delimiters.empty());
        b.steps.push_back(std::move(out.text));
        b.step_ends.push_back(b.tokens.size());
        children.push_back(std::move(child));
      }
    }
    if (deadline_hit) return children;
    next = end;
  }
  // A budget that dropped samples or cut a step short has ended the search
  // (a shaped step drops samples by design and never cuts a step).
  if ((!options.shaped && plan->num_outputs < desired) || cut_by_budget) {
    budget_.MarkExhausted(kCapGeneratedTokens);
  }
  return children;
}

absl::StatusOr<SearchRun::Iteration> SearchRun::BeginTreeIteration() {
  absl::StatusOr<bool> go = BeginIteration();
  if (!go.ok()) return go.status();
  if (!*go) return budget_.exhausted() ? Iteration::kCapReached : Iteration::kStop;
  return NearCap().empty() ? Iteration::kPlay : Iteration::kCapNear;
}

std::string_view SearchRun::NearCap() {
  std::string_view cap;
  if (budget_.RemainingSteps() <= 0) {
    cap = kCapSteps;
  } else if (scorer_ != nullptr && budget_.RemainingRewardCalls() <= 0) {
    cap = kCapRewardCalls;
  } else if (budget_.DeadlineNear()) {
    cap = kCapDeadline;
  }
  if (!cap.empty()) budget_.MarkExhausted(cap);
  return cap;
}

absl::Status SearchRun::FinishBranches(const std::vector<Branch*>& ranked) {
  std::vector<Branch*> todo;
  for (Branch* b : ranked) {
    if (static_cast<int>(todo.size()) >= config_.budget.finish_branches) break;
    if (!b->done && !b->steps.empty()) todo.push_back(b);
  }
  if (todo.empty() && !ranked.empty() && ranked.front()->steps.empty() && !ranked.front()->done) {
    todo.push_back(ranked.front());  // the root: nothing was generated yet
  }
  if (todo.empty() || budget_.DeadlinePassed()) return absl::OkStatus();
  const int64_t before = budget_.usage().generated_tokens;
  ExtendOptions options;
  options.sampling = config_.sampling;
  options.sampling.temperature = 0.0f;
  options.finishing = true;
  auto run_round = [&](const std::vector<Branch*>& branches) -> absl::StatusOr<bool> {
    std::vector<const Branch*> parents(branches.begin(), branches.end());
    options.stop = FinalStop(parents);
    const std::vector<int> samples(parents.size(), 1);
    absl::StatusOr<std::vector<Child>> children = Extend(parents, samples, options);
    if (!children.ok()) return children.status();
    for (Child& c : *children) {
      const double score = branches[c.parent]->score;
      const bool scored = branches[c.parent]->scored;
      *branches[c.parent] = std::move(c.branch);
      // The finish is not scored: the branch keeps its prefix's score.
      branches[c.parent]->score = score;
      branches[c.parent]->scored = scored;
    }
    return !children->empty();
  };
  // All at once when the budget lets every branch run to max_solution_tokens;
  // else best first, one at a time, each with all that is left, so that the
  // best branch finishes if anything can.
  std::vector<const Branch*> view(todo.begin(), todo.end());
  const int64_t full = FinalStop(view).max_step_tokens;
  const bool together = budget_.RemainingGeneratedTokens() / static_cast<int64_t>(todo.size()) >= full;
  if (together) {
    absl::StatusOr<bool> progressed = run_round(todo);
    if (!progressed.ok()) return progressed.status();
  }
  for (size_t i = 0; i < todo.size(); ++i) {
    while (!todo[i]->done && budget_.RemainingGeneratedTokens() > 0 && !budget_.DeadlinePassed()) {
      absl::StatusOr<bool> progressed = run_round({todo[i]});
      if (!progressed.ok()) return progressed.status();
      if (!*progressed) break;
    }
  }
  int64_t finished = 0;
  for (const Branch* b : todo) finished += b->finished ? 1 : 0;
  budget_.ChargeReserve(budget_.usage().generated_tokens - before, finished);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> SearchRun::ScoreSteps(
    const std::vector<const std::vector<std::string>*>& candidates, bool last_step_only,
    bool allow_partial) {
  ARBOR_CHECK(scorer_ != nullptr);
  auto make_request = [&](size_t begin, size_t end) {
    ScoreRequest request;
    request.question = job_.question;
    request.last_step_only = last_step_only;
    request.deadline = budget_.deadline();
    for (size_t i = begin; i < end; ++i) request.candidates.push_back(*candidates[i]);
    return request;
  };
  auto bound = [&](size_t begin, size_t end) {
    return scorer_->MaxRewardTokens(make_request(begin, end));
  };
  std::vector<std::vector<float>> scores;
  if (!allow_partial) {
    // All or nothing: the whole job must fit before the first call.
    int64_t tokens = 0, calls = 0;
    for (size_t next = 0; next < candidates.size(); next += kMaxCandidatesPerScore) {
      tokens += bound(next, std::min(candidates.size(), next + kMaxCandidatesPerScore));
      ++calls;
    }
    if (budget_.DeadlinePassed()) return scores;
    if (calls > budget_.RemainingRewardCalls()) {
      budget_.MarkExhausted(kCapRewardCalls);
      return scores;
    }
    if (tokens > budget_.RemainingRewardTokens()) {
      budget_.MarkExhausted(kCapRewardTokens);
      return scores;
    }
  }
  scores.reserve(candidates.size());
  for (size_t next = 0; next < candidates.size(); next += kMaxCandidatesPerScore) {
    const size_t chunk_end = std::min(candidates.size(), next + kMaxCandidatesPerScore);
    size_t end = chunk_end;
    int64_t max_tokens = bound(next, end);
    if (allow_partial && max_tokens > budget_.RemainingRewardTokens()) {
      // The longest prefix of this chunk that fits.
      size_t lo = next, hi = end - 1;
      while (lo < hi) {
        const size_t mid = (lo + hi + 1) / 2;
        if (bound(next, mid) <= budget_.RemainingRewardTokens()) {
          lo = mid;
        } else {
          hi = mid - 1;
        }
      }
      if (lo > next) {
        end = lo;
        max_tokens = bound(next, end);
      }
    }
    if (!budget_.CanScore(max_tokens)) return scores;
    const ScoreRequest request = make_request(next, end);
    if (Cancelled()) return absl::CancelledError("job cancelled");
    absl::StatusOr<ScoreResult> result = scorer_->Score(request);
    if (!result.ok()) {
      if (EndedByDeadline(result.status())) return scores;
      if (Cancelled()) return absl::CancelledError("job cancelled");
      return result.status();
    }
    budget_.ChargeScoring(result->usage);
    if (result->scores.size() != end - next) {
      return absl::InternalError(absl::StrCat("scorer returned ", result->scores.size(),
                                              " results for ", end - next, " candidates"));
    }
    for (size_t i = next; i < end; ++i) {
      std::vector<float>& s = result->scores[i - next];
      const size_t expected = last_step_only ? 1 : candidates[i]->size();
      if (s.size() != expected) {
        return absl::InternalError(absl::StrCat("scorer returned ", s.size(),
                                                " scores for a candidate of ", expected,
                                                " scored steps"));
      }
      for (float& v : s) {
        if (!std::isfinite(v) || v < -1e-4f || v > 1.0f + 1e-4f) {
          return absl::InternalError(absl::StrCat("scorer returned score ", v, " outside [0, 1]"));
        }
        v = std::clamp(v, 0.0f, 1.0f);
      }
      scores.push_back(std::move(s));
    }
    if (end < chunk_end) {
      budget_.MarkExhausted(kCapRewardTokens);
      return scores;
    }
  }
  return scores;
}

absl::StatusOr<std::optional<std::vector<float>>> SearchRun::ComparePairs(
    const std::vector<std::pair<const StepList*, const StepList*>>& pairs) {
  ARBOR_CHECK(scorer_ != nullptr && scorer_->pairwise_judge() != nullptr);
  PairwiseJudge& judge = *scorer_->pairwise_judge();
  std::vector<PairwiseRequest> requests;
  int64_t tokens = 0;
  for (size_t next = 0; next < pairs.size(); next += kMaxPairsPerCompare) {
    PairwiseRequest request;
    request.question = job_.question;
    request.deadline = budget_.deadline();
    for (size_t i = next; i < std::min(pairs.size(), next + kMaxPairsPerCompare); ++i) {
      request.pairs.push_back({*pairs[i].first, *pairs[i].second});
    }
    tokens += judge.MaxRewardTokens(request);
    requests.push_back(std::move(request));
  }
  std::optional<std::vector<float>> none;
  if (budget_.DeadlinePassed()) return none;
  if (static_cast<int64_t>(requests.size()) > budget_.RemainingRewardCalls()) {
    budget_.MarkExhausted(kCapRewardCalls);
    return none;
  }
  if (tokens > budget_.RemainingRewardTokens()) {
    budget_.MarkExhausted(kCapRewardTokens);
    return none;
  }
  std::vector<float> probs;
  probs.reserve(pairs.size());
  for (const PairwiseRequest& request : requests) {
    if (Cancelled()) return absl::CancelledError("job cancelled");
    absl::StatusOr<PairwiseResult> result = judge.Compare(request);
    if (!result.ok()) {
      if (EndedByDeadline(result.status())) return none;
      if (Cancelled()) return absl::CancelledError("job cancelled");
      return result.status();
    }
    budget_.ChargeComparison(result->usage, static_cast<int64_t>(request.pairs.size()));
    if (result->prob_a.size() != request.pairs.size()) {
      return absl::InternalError(absl::StrCat("judge returned ", result->prob_a.size(),
                                              " results for ", request.pairs.size(), " pairs"));
    }
    for (float p : result->prob_a) {
      if (!std::isfinite(p) || p < -1e-4f || p > 1.0f + 1e-4f) {
        return absl::InternalError(absl::StrCat("judge returned probability ", p,
                                                " outside [0, 1]"));
      }
      probs.push_back(std::clamp(p, 0.0f, 1.0f));
    }
  }
  return std::optional<std::vector<float>>(std::move(probs));
}

absl::StatusOr<bool> SearchRun::ScoreBranches(const std::vector<Branch*>& branches, bool full,
                                              Aggregation aggregation, bool allow_partial,
                                              bool split_whole_steps) {
  if (branches.empty()) return true;
  const bool split = split_whole_steps && config_.split_whole_steps;
  // Per branch: the step list the scorer reads (its steps, or, with a whole
  // step split, split_lists[i]) and, when split, the pieces per step.
  std::vector<std::vector<std::string>> split_lists(branches.size());
  std::vector<std::vector<size_t>> pieces(branches.size());
  std::vector<const std::vector<std::string>*> candidates;
  candidates.reserve(branches.size());
  bool every_step = full;
  for (size_t i = 0; i < branches.size(); ++i) {
    const Branch* b = branches[i];
    ARBOR_CHECK(!b->steps.empty());
    candidates.push_back(&b->steps);
    if (!split) continue;
    std::vector<std::string> list;
    std::vector<size_t> count;
    bool cut = false;
    for (size_t k = 0; k < b->steps.size(); ++k) {
      if (k < b->whole_steps.size() && b->whole_steps[k]) {
        std::vector<std::string> p = SplitAtDelimiters(b->steps[k], config_.stop.step_delimiters);
        cut = cut || p.size() > 1;
        count.push_back(p.size());
        for (std::string& piece : p) list.push_back(std::move(piece));
      } else {
        count.push_back(1);
        list.push_back(b->steps[k]);
      }
    }
    if (!cut || list.size() > static_cast<size_t>(kMaxStepsPerCandidate)) continue;
    // The newest step's aggregate over its pieces needs them all, but with kLast.
    if (count.back() > 1 && aggregation != Aggregation::kLast) every_step = true;
    split_lists[i] = std::move(list);
    pieces[i] = std::move(count);
    candidates[i] = &split_lists[i];
  }
  auto scores = ScoreSteps(candidates, /*last_step_only=*/!every_step, allow_partial);
  if (!scores.ok()) return scores.status();
  for (size_t i = 0; i < scores->size(); ++i) {
    Branch& b = *branches[i];
    std::vector<float>& s = (*scores)[i];
    if (every_step && !pieces[i].empty()) {
      // Back to one score per step: a whole step's is its pieces' aggregate.
      std::vector<float> per_step;
      per_step.reserve(b.steps.size());
      size_t at = 0;
      for (size_t n : pieces[i]) {
        per_step.push_back(static_cast<float>(
            AggregateScores(absl::Span<const float>(s).subspan(at, n), aggregation)));
        at += n;
      }
      s = std::move(per_step);
    }
    if (full) {
      b.step_scores = std::move(s);
    } else {
      // Earlier steps keep their scores (causal PRM); a gap (never scored)
      // takes the new score. Last step only, a split newest step's score is
      // its last piece's: its aggregate with kLast.
      const float newest = s.back();
      b.step_scores.resize(b.steps.size() - 1, newest);
      b.step_scores.push_back(newest);
    }
    b.score = AggregateScores(b.step_scores, aggregation);
    b.scored = true;
  }
  return scores->size() == branches.size();
}

void SearchRun::Report(int iteration, const std::vector<const Branch*>& live,
                       const std::vector<const Branch*>& finished) {
  if (!job_.on_progress) return;
  IterationProgress progress;
  progress.iteration = iteration;
  progress.live = static_cast<int32_t>(live.size());
  progress.finished = static_cast<int32_t>(finished.size());
  const Branch* best = nullptr;
  for (const auto* group : {&live, &finished}) {
    for (const Branch* b : *group) {
      if (best == nullptr || (b->scored && (!best->scored || b->score > best->score))) best = b;
    }
  }
  if (best != nullptr) {
    progress.best_score = best->score;
    progress.best_text = best->Text();
  }
  progress.branch_scores.reserve(live.size());
  for (const Branch* b : live) progress.branch_scores.push_back(b->score);
  progress.usage = budget_.usage();
  job_.on_progress(progress);
}

bool HasHedgeWord(std::string_view text, const std::vector<std::string>& words) {
  const std::string lower = absl::AsciiStrToLower(absl::string_view(text.data(), text.size()));
  auto is_word = [](char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); };
  for (const std::string& word : words) {
    const std::string w = absl::AsciiStrToLower(word);
    for (size_t at = lower.find(w); at != std::string::npos; at = lower.find(w, at + 1)) {
      const bool starts = at == 0 || !is_word(lower[at - 1]);
      const size_t end = at + w.size();
      const bool ends = end >= lower.size() || !is_word(lower[end]);
      if (starts && ends) return true;
    }
  }
  return false;
}

absl::StatusOr<int> SearchRun::ProbeBranches(const std::vector<Branch*>& branches,
                                             const CertaintyConfig& certainty) {
  if (!certainty.enabled || budget_.DeadlinePassed()) return 0;
  const int64_t interval = certainty.interval_tokens;
  const int64_t afford = budget_.SearchGeneratedTokens() / certainty.max_probe_tokens;
  std::vector<Branch*> due;
  for (Branch* b : branches) {
    if (static_cast<int64_t>(due.size()) >= std::min<int64_t>(afford, kMaxBranchesPerCall)) break;
    if (b->done || b->steps.empty()) continue;
    if (static_cast<int64_t>(b->tokens.size() - b->probed_at) < interval) continue;
    due.push_back(b);
  }
  if (due.empty()) return 0;
  const std::string& probe_text =
      certainty.probe_text.empty() ? std::string(kDynasorProbeText) : certainty.probe_text;
  ExtendRequest request;
  request.prompt_tokens = prompt_;
  request.sampling = config_.sampling;
  request.sampling.temperature = 0.0f;  // read the answer greedily
  // To the end of the line: an answer never spans lines, and the probe
  // costs a few tokens rather than all max_probe_tokens.
  request.stop.step_delimiters = {"\n"};
  request.stop.max_step_tokens = certainty.max_probe_tokens;
  request.stop.ignore_eos = false;
  request.deadline = budget_.deadline();
  // Probes draw their (unused: greedy) seeds from their own call count, so
  // that probing leaves the samples' seeds, and so their text, as they were.
  const uint64_t call = probe_call_index_++;
  for (size_t i = 0; i < due.size(); ++i) {
    BranchInput input;
    input.suffix_tokens = due[i]->tokens;
    input.suffix_text = probe_text;
    input.num_samples = 1;
    input.seed = BranchSeed(job_.seed ^ 0x9B0BE5EEDull, call, i);
    request.branches.push_back(std::move(input));
  }
  if (Cancelled()) return absl::CancelledError("job cancelled");
  absl::StatusOr<ExtendResult> result = generator_.Extend(request);
  if (!result.ok()) {
    if (EndedByDeadline(result.status())) return 0;
    if (Cancelled()) return absl::CancelledError("job cancelled");
    return result.status();
  }
  budget_.ChargeGeneration(result->usage);
  if (result->outputs.size() != due.size()) {
    return absl::InternalError(absl::StrCat("generator returned ", result->outputs.size(),
                                            " outputs for ", due.size(), " probes"));
  }
  int stopped = 0;
  for (size_t i = 0; i < due.size(); ++i) {
    Branch& b = *due[i];
    const StepOutput& out = result->outputs[i];
    if (out.branch_index != static_cast<int>(i) || out.sample_index != 0) {
      return absl::InternalError(absl::StrCat("generator output ", i, " is (branch ",
                                              out.branch_index, ", sample ", out.sample_index,
                                              "), expected (", i, ", 0)"));
    }
    b.probed_at = b.tokens.size();
    if (out.finish_reason == FinishReason::kCancelled) continue;  // deadline: no reading
    const bool hedged = HasHedgeWord(
        out.text, certainty.hedge_words.empty() ? DynasorHedgeWords() : certainty.hedge_words);
    b.probe_answers.push_back(hedged ? std::string()
                                     : extractor_->Extract(probe_text + out.text, true));
    const size_t k = static_cast<size_t>(certainty.window);
    if (b.probe_answers.size() < k) continue;
    const std::string& last = b.probe_answers.back();
    bool agree = !last.empty();
    for (size_t j = b.probe_answers.size() - k; agree && j < b.probe_answers.size(); ++j) {
      agree = b.probe_answers[j] == last;
    }
    if (!agree) continue;
    b.steps.push_back(probe_text + out.text);
    b.step_ends.push_back(b.tokens.size());
    b.done = b.finished = b.certain = true;
    ++stopped;
  }
  budget_.CountProbes(static_cast<int64_t>(due.size()), result->usage.generated_tokens, stopped);
  return stopped;
}

std::string SearchRun::AnswerOf(const Branch& branch) const {
  return extractor_->Extract(branch.Text(), branch.finished);
}

double SearchRun::Agreement(const std::vector<Branch>& branches) const {
  if (branches.empty()) return 0.0;
  absl::flat_hash_map<std::string, int> votes;
  int top = 0;
  for (const Branch& b : branches) {
    std::string answer = extractor_->Extract(b.Text(), b.finished);
    if (answer.empty()) continue;
    top = std::max(top, ++votes[answer]);
  }
  return static_cast<double>(top) / static_cast<double>(branches.size());
}

SolveResult SearchRun::Finish(std::vector<Branch> branches, RankOptions options) {
  SolveResult result;
  result.strategy = std::string(StrategyName(config_));
  std::vector<Candidate> candidates;
  candidates.reserve(branches.size());
  for (Branch& b : branches) {
    Candidate c;
    c.text = b.Text();
    c.answer = extractor_->Extract(c.text, b.finished);
    c.steps = std::move(b.steps);
    c.step_scores = std::move(b.step_scores);
    c.score = b.score;
    c.logprob = b.logprob;
    c.finished = b.finished;
    c.num_tokens = static_cast<int32_t>(b.tokens.size());
    candidates.push_back(std::move(c));
  }
  const std::vector<size_t> order = RankCandidates(candidates, options, tie_rng_);
  const size_t keep = std::min(order.size(), static_cast<size_t>(config_.max_candidates));
  result.candidates.reserve(keep);
  for (size_t i = 0; i < keep; ++i) result.candidates.push_back(std::move(candidates[order[i]]));
  if (!result.candidates.empty()) {
    result.answer = result.candidates.front().answer;
    result.text = result.candidates.front().text;
  }
  result.usage = budget_.usage();
  result.budget_exhausted = budget_.exhausted();
  result.exhausted_by = budget_.exhausted_by();
  result.stop_reason = result.budget_exhausted ? result.exhausted_by : stop_reason_;
  return result;
}

}  // namespace arbor::search::internal
