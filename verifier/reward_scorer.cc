#include "verifier/reward_scorer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/text/tokenizer.h"

namespace arbor::verifier {

namespace {

// splitmix64's finalizer: a strong 64-bit mix.
uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Two independent chains over the token ids: a 128-bit key per prefix.
struct PrefixHasher {
  uint64_t a = 0x243f6a8885a308d3ULL;
  uint64_t b = 0x13198a2e03707344ULL;
  void Add(int32_t token) {
    const uint64_t t = static_cast<uint32_t>(token);
    a = Mix64(a ^ (t + 0x9e3779b97f4a7c15ULL));
    b = Mix64(b + (t ^ 0xa4093822299f31d0ULL) * 0x2545f4914f6cdd1dULL);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<RewardScorer>> RewardScorer::Create(runtime::Engine* engine,
                                                                   RewardInput input,
                                                                   RewardScorerOptions options) {
  if (engine == nullptr) return absl::InvalidArgumentError("RewardScorer: engine is null");
  if (options.score_cache_entries < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("score_cache_entries must be >= 0, got ", options.score_cache_entries));
  }
  for (int32_t c : input.columns()) {
    if (c < 0 || c >= engine->output_dim()) {
      return absl::InvalidArgumentError(
          absl::StrCat("label token id ", c, " is outside [0, ", engine->output_dim(), ")"));
    }
  }
  return std::unique_ptr<RewardScorer>(new RewardScorer(engine, std::move(input), options));
}

absl::StatusOr<std::unique_ptr<RewardScorer>> RewardScorer::ForModel(
    runtime::Engine* engine, const runtime::Tokenizer* tokenizer, const RewardConfig& config,
    serving::PromptRenderer render_prompt, RewardScorerOptions options) {
  if (engine == nullptr) return absl::InvalidArgumentError("RewardScorer: engine is null");
  if (tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        "RewardScorer: the reward model has no tokenizer (tokenizer.json), and candidates come "
        "as text");
  }
  const runtime::ModelConfig& model = engine->model_config();
  ChatRenderFn render_chat;
  if (!config.chat_template.empty()) {
    if (!render_prompt) {
      return absl::InvalidArgumentError(absl::StrCat("chat_template \"", config.chat_template,
                                                     "\" is set but no prompt renderer was given"));
    }
    render_chat = [render_prompt, name = config.chat_template](
                      absl::string_view question) -> absl::StatusOr<ChatPrompt> {
      auto prompt = render_prompt(name, question);
      if (!prompt.ok()) return prompt.status();
      return ChatPrompt{prompt->text, prompt->add_special_tokens};
    };
  }
  auto input = RewardInput::Create(
      config,
      [tokenizer](absl::string_view text, bool add_special_tokens) {
        return tokenizer->Encode(std::string_view(text.data(), text.size()), add_special_tokens);
      },
      std::move(render_chat),
      {.vocab_size = model.is_value_head() ? tokenizer->vocab_size() : engine->output_dim(),
       .has_value_head = model.is_value_head(),
       .num_labels = model.num_labels});
  if (!input.ok()) return input.status();
  return Create(engine, *std::move(input), options);
}

bool RewardScorer::LookupScore(const PreparedScore::Key& key, float* score) const {
  if (options_.score_cache_entries == 0) return false;
  absl::MutexLock lock(&cache_mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  lru_.splice(lru_.begin(), lru_, it->second);
  *score = it->second->second;
  return true;
}

void RewardScorer::RememberScore(const PreparedScore::Key& key, float score) {
  if (options_.score_cache_entries == 0) return;
  absl::MutexLock lock(&cache_mu_);
  auto it = index_.find(key);
  if (it != index_.end()) {
    it->second->second = score;
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.emplace_front(key, score);
  index_.emplace(key, lru_.begin());
  while (static_cast<int>(lru_.size()) > options_.score_cache_entries) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

absl::StatusOr<std::unique_ptr<PreparedScore>> RewardScorer::Prepare(const ScoreJob& job) const {
  auto prepared = std::make_unique<PreparedScore>();
  auto prompt = input_.EncodePrompt(job.question);
  if (!prompt.ok()) {
    return absl::Status(prompt.status().code(),
                        absl::StrCat("question: ", prompt.status().message()));
  }
  runtime::ScoreRequest& request = prepared->engine_request_;
  request.job_id = job.job_id;
  request.columns = input_.columns();
  request.deadline = job.deadline;
  const size_t window = static_cast<size_t>(engine_->max_context_tokens());
  prepared->slots_.resize(job.candidates.size());
  for (size_t c = 0; c < job.candidates.size(); ++c) {
    auto sequences = input_.Build(*prompt, job.candidates[c], job.last_step_only);
    if (!sequences.ok()) {
      return absl::Status(sequences.status().code(),
                          absl::StrCat("candidates[", c, "]: ", sequences.status().message()));
    }
    for (RewardSequence& seq : *sequences) {
      if (seq.tokens.size() > window) {
        return absl::InvalidArgumentError(
            absl::StrCat("candidates[", c, "]: the reward model's input is ", seq.tokens.size(),
                         " tokens, longer than its context window of ", window, " tokens"));
      }
      // Keys of every scored position, from one pass over the tokens.
      std::vector<PreparedScore::Slot> slots(seq.positions.size());
      PrefixHasher hasher;
      size_t next = 0;
      for (size_t k = 0; k < seq.positions.size(); ++k) {
        for (; next <= static_cast<size_t>(seq.positions[k]); ++next) hasher.Add(seq.tokens[next]);
        slots[k].key = {hasher.a, hasher.b};
      }
      runtime::ScoreSequence engine_seq;
      int32_t last_wanted = -1;
      for (size_t k = 0; k < slots.size(); ++k) {
        if (LookupScore(slots[k].key, &slots[k].cached)) continue;
        slots[k].sequence = static_cast<int>(request.sequences.size());
        slots[k].row = static_cast<int>(engine_seq.positions.size());
        engine_seq.positions.push_back(seq.positions[k]);
        last_wanted = std::max(last_wanted, seq.positions[k]);
      }
      if (last_wanted < 0) {
        prepared->fully_cached_tokens_ += static_cast<int64_t>(seq.tokens.size());
      } else {
        // Nothing after the last wanted row matters to this call.
        seq.tokens.resize(static_cast<size_t>(last_wanted) + 1);
        engine_seq.tokens = std::move(seq.tokens);
        request.sequences.push_back(std::move(engine_seq));
      }
      for (auto& slot : slots) prepared->slots_[c].push_back(slot);
    }
  }
  return prepared;
}

ScoreOutcome RewardScorer::Complete(const PreparedScore& prepared,
                                    const runtime::ScoreResult* result) {
  ScoreOutcome outcome;
  outcome.scores.resize(prepared.slots_.size());
  const int width = result != nullptr ? result->row_width : 0;
  for (size_t c = 0; c < prepared.slots_.size(); ++c) {
    std::vector<float>& scores = outcome.scores[c];
    scores.reserve(prepared.slots_[c].size());
    for (const PreparedScore::Slot& slot : prepared.slots_[c]) {
      if (slot.sequence < 0) {
        scores.push_back(slot.cached);
        continue;
      }
      const std::vector<float>& rows = result->rows[slot.sequence];
      const float score = input_.ScoreFromRow(
          absl::MakeConstSpan(rows).subspan(static_cast<size_t>(slot.row) * width, width));
      RememberScore(slot.key, score);
      scores.push_back(score);
    }
  }
  if (result != nullptr) {
    outcome.reward_tokens = result->computed_tokens;
    outcome.cache_hit_tokens = result->cached_tokens;
    outcome.queue_us = result->queue_us;
    outcome.compute_us = result->compute_us;
  }
  outcome.cache_hit_tokens += prepared.fully_cached_tokens_;
  return outcome;
}

absl::StatusOr<ScoreOutcome> RewardScorer::Score(const ScoreJob& job,
                                                 const std::function<bool()>& is_cancelled) {
  auto prepared = Prepare(job);
  if (!prepared.ok()) return prepared.status();
  if (!(*prepared)->needs_engine()) return Complete(**prepared, nullptr);
  auto result = engine_->Score((*prepared)->TakeEngineRequest(), is_cancelled);
  if (!result.ok()) return result.status();
  return Complete(**prepared, &*result);
}

absl::StatusOr<runtime::ScoreRequest> RewardScorer::PrepareCompare(const CompareJob& job) const {
  if (!input_.supports_compare()) return input_.compare_status();
  auto prompt = input_.EncodeComparePrompt(job.question);
  if (!prompt.ok()) {
    return absl::Status(prompt.status().code(),
                        absl::StrCat("question: ", prompt.status().message()));
  }
  runtime::ScoreRequest request;
  request.job_id = job.job_id;
  request.columns = input_.compare_columns();
  request.deadline = job.deadline;
  request.sequences.reserve(2 * job.pairs.size());
  const size_t window = static_cast<size_t>(engine_->max_context_tokens());
  for (size_t p = 0; p < job.pairs.size(); ++p) {
    const auto& [a, b] = job.pairs[p];
    for (int order = 0; order < 2; ++order) {
      auto seq = order == 0 ? input_.BuildComparison(*prompt, a, b)
                            : input_.BuildComparison(*prompt, b, a);
      if (!seq.ok()) {
        return absl::Status(seq.status().code(),
                            absl::StrCat("pairs[", p, "]: ", seq.status().message()));
      }
      if (seq->tokens.size() > window) {
        return absl::InvalidArgumentError(absl::StrCat(
            "pairs[", p, "]: the judge's input is ", seq->tokens.size(),
            " tokens, longer than its context window of ", window, " tokens"));
      }
      request.sequences.push_back(
          {.tokens = std::move(seq->tokens), .positions = std::move(seq->positions)});
    }
  }
  return request;
}

CompareOutcome RewardScorer::CompleteCompare(const runtime::ScoreResult& result) {
  CompareOutcome outcome;
  const size_t pairs = result.rows.size() / 2;
  for (size_t p = 0; p < pairs; ++p) {
    // Column 0 is the first-shown solution's verdict, column 1 the second's.
    const std::vector<float>& ab = result.rows[2 * p];
    const std::vector<float>& ba = result.rows[2 * p + 1];
    const float a_first = LabelTokenScore(ab[0], ab[1]);
    const float b_first = LabelTokenScore(ba[1], ba[0]);
    outcome.a_first.push_back(a_first);
    outcome.b_first.push_back(b_first);
    outcome.prob_a.push_back(0.5f * (a_first + b_first));
  }
  outcome.reward_tokens = result.computed_tokens;
  outcome.cache_hit_tokens = result.cached_tokens;
  outcome.queue_us = result.queue_us;
  outcome.compute_us = result.compute_us;
  return outcome;
}

absl::StatusOr<CompareOutcome> RewardScorer::Compare(const CompareJob& job,
                                                     const std::function<bool()>& is_cancelled) {
  auto request = PrepareCompare(job);
  if (!request.ok()) return request.status();
  auto result = engine_->Score(*std::move(request), is_cancelled);
  if (!result.ok()) return result.status();
  return CompleteCompare(*result);
}

}  // namespace arbor::verifier
