#include "coordinator/testing/arith_world.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "arbor/v1/generator.pb.h"
#include "arbor/v1/verifier.pb.h"
#include "common/counter_rng.h"
#include "common/utf8.h"

namespace arbor::testing {
namespace {

constexpr size_t kBlock = 16;
constexpr char kStepEnd[] = "\n\n";

struct Claim {
  int64_t value = 0;
  int64_t addend = 0;
  bool is_add = false;
  bool is_answer = false;
};

// Parses "Add X to get T." or "The answer is \boxed{T}." (trailing space ignored).
bool ParseStep(std::string_view step, Claim* claim) {
  absl::string_view s =
      absl::StripTrailingAsciiWhitespace(absl::string_view(step.data(), step.size()));
  if (absl::ConsumePrefix(&s, "Add ")) {
    const size_t to = s.find(" to get ");
    if (to == absl::string_view::npos || !absl::ConsumeSuffix(&s, ".")) return false;
    claim->is_add = true;
    return absl::SimpleAtoi(s.substr(0, to), &claim->addend) &&
           absl::SimpleAtoi(s.substr(to + 8), &claim->value);
  }
  if (absl::ConsumePrefix(&s, "The answer is \\boxed{") && absl::ConsumeSuffix(&s, "}.")) {
    claim->is_answer = true;
    return absl::SimpleAtoi(s, &claim->value);
  }
  return false;
}

// Where a branch stands, re-read from its text.
struct BranchState {
  size_t next_number = 0;  // numbers added so far
  int64_t claimed = 0;     // the running total claimed so far
  bool finished = false;
  bool dangling = false;  // ends inside a step (cut by a length cap)
};

BranchState ReadState(std::string_view text) {
  BranchState state;
  std::vector<absl::string_view> chunks =
      absl::StrSplit(absl::string_view(text.data(), text.size()), "\n\n");
  // The last chunk is what follows the last step end: "" unless a step was cut.
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    Claim claim;
    if (ParseStep(std::string_view(chunks[i].data(), chunks[i].size()), &claim)) {
      if (claim.is_answer) state.finished = true;
      state.claimed = claim.value;
      if (claim.is_add) ++state.next_number;
    } else {
      state.claimed += 1000;  // garbage spoils the solution
    }
  }
  const absl::string_view tail = chunks.back();
  Claim claim;
  if (ParseStep(std::string_view(tail.data(), tail.size()), &claim) && claim.is_answer) {
    state.finished = true;
  } else if (!tail.empty()) {
    state.dangling = true;
  }
  return state;
}

uint64_t HashTokens(uint64_t h, const int32_t* tokens, size_t n) {
  for (size_t i = 0; i < n; ++i) h = Mix64(h ^ static_cast<uint64_t>(tokens[i] + 1));
  return h;
}

}  // namespace

std::vector<int64_t> ArithWorld::Numbers(std::string_view question) {
  std::vector<int64_t> numbers;
  size_t i = 0;
  while (i < question.size()) {
    if (std::isdigit(static_cast<unsigned char>(question[i]))) {
      size_t j = i;
      while (j < question.size() && std::isdigit(static_cast<unsigned char>(question[j]))) ++j;
      int64_t v = 0;
      if (j - i <= 9 && absl::SimpleAtoi(absl::string_view(question.data() + i, j - i), &v)) {
        numbers.push_back(v);
      }
      i = j;
    } else {
      ++i;
    }
  }
  return numbers;
}

absl::StatusOr<std::string> ArithWorld::ApplyTemplate(std::string_view question,
                                                      std::string_view chat_template) const {
  if (chat_template == "raw") return std::string(question);
  if (chat_template.empty() || chat_template == "chatml") {
    return absl::StrCat("<|im_start|>user\n", absl::string_view(question.data(), question.size()),
                        "<|im_end|>\n<|im_start|>assistant\n");
  }
  return absl::InvalidArgumentError(absl::StrCat("chat_template: unknown template '",
                                                 std::string(chat_template),
                                                 "' (this model knows chatml, raw)"));
}

int64_t ArithWorld::CacheLookupAndInsert(absl::flat_hash_set<uint64_t>& cache,
                                         const std::vector<int32_t>& sequence, size_t insert_upto) {
  if (cache.size() > (1u << 20)) cache.clear();  // bounded, like a real cache
  uint64_t h = 0x5eed;
  size_t hit = 0;
  bool hitting = true;
  for (size_t end = kBlock; end <= std::max(sequence.size(), insert_upto); end += kBlock) {
    if (end > sequence.size() && end > insert_upto) break;
    if (end > sequence.size()) break;
    h = HashTokens(h, sequence.data() + end - kBlock, kBlock);
    if (hitting && cache.contains(h)) {
      hit = end;
    } else {
      hitting = false;
    }
    if (end <= insert_upto) cache.insert(h);
  }
  return static_cast<int64_t>(hit);
}

absl::Status ArithWorld::Extend(const arbor::v1::ExtendRequest& request,
                                arbor::v1::ExtendResponse* out) {
  if (!request.model().empty() && request.model() != options_.model) {
    return absl::InvalidArgumentError(absl::StrCat("model: this worker serves '", options_.model,
                                                   "', not '", request.model(), "'"));
  }
  const bool has_text = !request.prompt_text().empty();
  if (has_text == (request.prompt_tokens_size() > 0)) {
    return absl::InvalidArgumentError("prompt_tokens / prompt_text: set exactly one");
  }
  if (request.branches_size() < 1 || request.branches_size() > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("branches: ", request.branches_size(), " given; must be 1 to 1024"));
  }
  std::vector<int32_t> prompt;
  if (has_text) {
    if (!arbor::IsValidUtf8(request.prompt_text())) {
      return absl::InvalidArgumentError("prompt_text: is not valid UTF-8");
    }
    auto templated = ApplyTemplate(request.prompt_text(), request.chat_template());
    if (!templated.ok()) return templated.status();
    for (unsigned char c : *templated) prompt.push_back(c);
    out->mutable_prompt_tokens()->Add(prompt.begin(), prompt.end());
  } else {
    prompt.assign(request.prompt_tokens().begin(), request.prompt_tokens().end());
  }
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt_tokens[", i, "] (", prompt[i], ") is not a byte token in [0, 256)"));
    }
  }
  const int max_step_tokens =
      request.stop().max_step_tokens() == 0 ? 256 : request.stop().max_step_tokens();
  if (max_step_tokens < 1 || max_step_tokens > 32768) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop.max_step_tokens (", max_step_tokens, ") must be in [1, 32768]"));
  }
  std::vector<std::string> delimiters(request.stop().step_delimiters().begin(),
                                      request.stop().step_delimiters().end());
  if (delimiters.empty() && !request.stop().no_step_delimiter()) delimiters = {"\n\n"};
  const float temperature =
      request.sampling().has_temperature() ? request.sampling().temperature() : 0.8f;
  int total_outputs = 0;
  for (int b = 0; b < request.branches_size(); ++b) {
    const arbor::v1::BranchInput& branch = request.branches(b);
    const int samples = branch.num_samples();
    if (samples < 1 || samples > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("branches[", b, "].num_samples (", samples, ") must be in [1, 256]"));
    }
    total_outputs += samples;
    for (int t = 0; t < branch.suffix_tokens_size(); ++t) {
      const int32_t token = branch.suffix_tokens(t);
      if (token < 0 || token >= 256) {
        return absl::InvalidArgumentError(absl::StrCat("branches[", b, "].suffix_tokens[", t, "] (",
                                                       token, ") is out of vocabulary [0, 256)"));
      }
    }
    if (static_cast<int>(prompt.size()) + branch.suffix_tokens_size() >=
        options_.max_context_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "branches[", b, "]: prompt + suffix (", prompt.size() + branch.suffix_tokens_size(),
          " tokens) fill the context window (", options_.max_context_tokens, ")"));
    }
  }
  if (total_outputs > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("branches: ", total_outputs, " outputs requested; at most 4096"));
  }

  const std::string prompt_text(prompt.begin(), prompt.end());
  const std::vector<int64_t> numbers = Numbers(prompt_text);
  const double p = options_.step_accuracy;
  arbor::v1::Usage* usage = out->mutable_usage();
  usage->set_worker_calls(1);
  for (int b = 0; b < request.branches_size(); ++b) {
    const arbor::v1::BranchInput& branch = request.branches(b);
    std::vector<int32_t> sequence = prompt;
    sequence.insert(sequence.end(), branch.suffix_tokens().begin(), branch.suffix_tokens().end());
    const std::string suffix_text(branch.suffix_tokens().begin(), branch.suffix_tokens().end());
    {
      absl::MutexLock lock(&mu_);
      const int64_t hit = CacheLookupAndInsert(kv_blocks_, sequence, sequence.size());
      usage->set_prefix_cache_hit_tokens(usage->prefix_cache_hit_tokens() + hit);
      usage->set_prefill_tokens(usage->prefill_tokens() + static_cast<int64_t>(sequence.size()) -
                                hit);
    }
    const BranchState start = ReadState(suffix_text);
    const int context_left = options_.max_context_tokens - static_cast<int>(sequence.size());
    const int cap = std::min(max_step_tokens, context_left);
    if (!branch.suffix_text().empty()) {
      // A certainty probe (the phrase, e.g. "... \boxed{", as byte tokens):
      // the answer the branch is heading for (its running total plus the
      // numbers still to add) once half of them are added; a hedge before.
      if (!arbor::IsValidUtf8(branch.suffix_text()) || branch.suffix_text().size() > 4096) {
        return absl::InvalidArgumentError(
            absl::StrCat("branches[", b, "].suffix_text: must be valid UTF-8, at most 4096 bytes"));
      }
      int64_t heading = start.claimed;
      for (size_t i = start.next_number; i < numbers.size(); ++i) heading += numbers[i];
      const bool sure = 2 * start.next_number >= numbers.size();
      std::string text = sure ? absl::StrCat(heading, "}\n") : std::string("hmm}\n");
      if (static_cast<int>(text.size()) > cap) text.resize(cap);
      for (int s = 0; s < branch.num_samples(); ++s) {
        arbor::v1::BranchOutput* output = out->add_outputs();
        output->set_branch_index(b);
        output->set_sample_index(s);
        for (unsigned char c : text) output->add_tokens(c);
        output->set_text(text);
        output->set_finish_reason(text.back() == '\n' ? arbor::v1::FINISH_REASON_STEP
                                                      : arbor::v1::FINISH_REASON_LENGTH);
        usage->set_generated_tokens(usage->generated_tokens() + static_cast<int64_t>(text.size()));
      }
      usage->set_prefill_tokens(usage->prefill_tokens() +
                                static_cast<int64_t>(branch.suffix_text().size()));
      continue;
    }
    for (int s = 0; s < branch.num_samples(); ++s) {
      // The continuation this sample would write, step by step.
      std::string text;
      double logprob = 0.0;
      bool eos = start.finished;
      BranchState state = start;
      if (state.dangling) text += kStepEnd;  // close the cut step; it spoils the solution
      if (state.dangling) state.claimed += 1000;
      size_t cut = std::string::npos;
      while (!eos && static_cast<int>(text.size()) < cap) {
        const uint64_t position = suffix_text.size() + text.size();
        if (state.next_number < numbers.size()) {
          const double u = temperature == 0.0f ? (p > 0.5 ? 0.0 : 1.0)
                                               : CounterUniform(branch.seed(), s, position);
          const bool right = u < p;
          int64_t error = 0;
          if (!right) {
            const uint64_t bits = CounterRandomBits(branch.seed(), s, position + 1);
            error = (1 + static_cast<int64_t>(bits % 3)) * ((bits >> 8) & 1 ? 1 : -1);
          }
          logprob += std::log(right ? p : (1.0 - p) / 6.0);
          const int64_t a = numbers[state.next_number++];
          state.claimed += a + error;
          text += absl::StrCat("Add ", a, " to get ", state.claimed, ".", kStepEnd);
        } else {
          text += absl::StrCat("The answer is \\boxed{", state.claimed, "}.");
          eos = true;
        }
        if (!delimiters.empty() && cut == std::string::npos) {
          for (const std::string& d : delimiters) {
            const size_t at = text.find(d);
            if (at != std::string::npos) cut = std::min(cut, at + d.size());
          }
          if (cut != std::string::npos) break;
        }
      }
      arbor::v1::FinishReason reason = arbor::v1::FINISH_REASON_EOS;
      if (cut != std::string::npos) {
        text.resize(cut);
        reason = arbor::v1::FINISH_REASON_STEP;
      }
      if (static_cast<int>(text.size()) > cap) {
        text.resize(cap);
        reason = cap == context_left ? arbor::v1::FINISH_REASON_CONTEXT
                                     : arbor::v1::FINISH_REASON_LENGTH;
      } else if (reason == arbor::v1::FINISH_REASON_EOS && !eos) {
        reason = cap == context_left ? arbor::v1::FINISH_REASON_CONTEXT
                                     : arbor::v1::FINISH_REASON_LENGTH;
      }
      arbor::v1::BranchOutput* output = out->add_outputs();
      output->set_branch_index(b);
      output->set_sample_index(s);
      for (unsigned char c : text) output->add_tokens(c);
      output->set_text(text);
      output->set_logprob(logprob);
      output->set_finish_reason(reason);
      usage->set_generated_tokens(usage->generated_tokens() + static_cast<int64_t>(text.size()));
      std::vector<int32_t> full = sequence;
      full.insert(full.end(), output->tokens().begin(), output->tokens().end());
      absl::MutexLock lock(&mu_);
      CacheLookupAndInsert(kv_blocks_, full, full.size());
    }
  }
  return absl::OkStatus();
}

absl::Status ArithWorld::Score(const arbor::v1::ScoreRequest& request,
                               arbor::v1::ScoreResponse* out) {
  if (!request.model().empty() && request.model() != options_.reward_model) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model: this verifier serves '", options_.reward_model, "', not '", request.model(), "'"));
  }
  if (request.question().empty() || !arbor::IsValidUtf8(request.question())) {
    return absl::InvalidArgumentError("question: must be non-empty valid UTF-8");
  }
  if (request.candidates_size() < 1 || request.candidates_size() > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("candidates: ", request.candidates_size(), " given; must be 1 to 1024"));
  }
  const std::vector<int64_t> numbers = Numbers(request.question());
  int64_t total = 0;
  for (int64_t n : numbers) total += n;
  arbor::v1::Usage* usage = out->mutable_usage();
  usage->set_reward_calls(1);
  for (int c = 0; c < request.candidates_size(); ++c) {
    const auto& steps = request.candidates(c).steps();
    if (steps.empty() || steps.size() > 512) {
      return absl::InvalidArgumentError(
          absl::StrCat("candidates[", c, "].steps: ", steps.size(), " given; must be 1 to 512"));
    }
    std::vector<int32_t> sequence;
    for (unsigned char ch : request.question()) sequence.push_back(ch);
    arbor::v1::StepScores* scores = out->add_results();
    bool right = true;
    size_t k = 0;
    int64_t prefix = 0;
    for (int i = 0; i < steps.size(); ++i) {
      if (!arbor::IsValidUtf8(steps[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("candidates[", c, "].steps[", i, "]: is not valid UTF-8"));
      }
      for (unsigned char ch : steps[i]) sequence.push_back(ch);
      const absl::string_view step = steps[i];
      const size_t boxed = step.rfind("\\boxed{");
      if (boxed != absl::string_view::npos && !absl::StartsWith(step, "Add ") &&
          !absl::StartsWith(step, "The answer is ")) {
        // Another phrase stating a final answer (a certainty probe's step):
        // right when the answer is.
        absl::string_view digits = step.substr(boxed + 7);
        digits = digits.substr(0, digits.find('}'));
        int64_t value = 0;
        right = right && absl::SimpleAtoi(digits, &value) && value == total;
      } else {
        // A step generated to EOS may hold several of the world's steps.
        for (absl::string_view part : absl::StrSplit(step, "\n\n", absl::SkipWhitespace())) {
          Claim claim;
          if (!ParseStep(std::string_view(part.data(), part.size()), &claim)) {
            right = false;
          } else if (claim.is_add) {
            prefix += k < numbers.size() ? numbers[k] : 0;
            right =
                right && k < numbers.size() && claim.addend == numbers[k] && claim.value == prefix;
            ++k;
          } else {
            right = right && k == numbers.size() && claim.value == total;
          }
        }
      }
      double score = right ? 0.9 : 0.1;
      if (options_.prm_noise > 0) {
        const uint64_t h =
            Mix64(static_cast<uint64_t>(HashTokens(0x9e37, sequence.data(), sequence.size())));
        score +=
            options_.prm_noise * (2.0 * (static_cast<double>(h >> 11) / 9007199254740992.0) - 1.0);
        score = std::clamp(score, 0.001, 0.999);
      }
      if (!request.last_step_only() || i + 1 == steps.size()) {
        scores->add_scores(static_cast<float>(score));
      }
    }
    absl::MutexLock lock(&mu_);
    const int64_t hit = CacheLookupAndInsert(reward_blocks_, sequence, sequence.size());
    usage->set_reward_cache_hit_tokens(usage->reward_cache_hit_tokens() + hit);
    usage->set_reward_tokens(usage->reward_tokens() + static_cast<int64_t>(sequence.size()) - hit);
  }
  return absl::OkStatus();
}

void ArithWorld::FillGeneratorInfo(arbor::v1::GeneratorInfo* info) const {
  info->set_model(options_.model);
  info->set_architecture("ArithWorld (test double)");
  info->set_max_context_tokens(options_.max_context_tokens);
  info->set_vocab_size(kVocab);
  info->set_tokenizer_fingerprint("bytes-v1");
  info->set_backend("cpu");
  info->set_kv_block_size(kBlock);
  info->set_chat_template("chatml");
  info->add_eos_token_ids(kEos);
}

void ArithWorld::FillVerifierInfo(arbor::v1::VerifierInfo* info) const {
  info->set_model(options_.reward_model);
  info->set_architecture("ArithWorld (test double)");
  info->set_kind("value_head_prm");
  info->set_max_context_tokens(options_.max_context_tokens);
  info->set_backend("cpu");
}

}  // namespace arbor::testing
