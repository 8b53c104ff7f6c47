#include "verifier/reward_input.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace arbor::verifier {

namespace {

// Replaces the one `placeholder` of `tmpl` by `value` (value is inserted
// verbatim: braces in it are not placeholders).
std::string Render(absl::string_view tmpl, absl::string_view placeholder, absl::string_view value) {
  const size_t at = tmpl.find(placeholder);
  if (at == absl::string_view::npos) return std::string(tmpl);
  return absl::StrCat(tmpl.substr(0, at), value, tmpl.substr(at + placeholder.size()));
}

absl::StatusOr<int32_t> ResolveLabelToken(const EncodeFn& encode, absl::string_view name,
                                          const std::string& text, const std::optional<int32_t>& id,
                                          int vocab_size) {
  int32_t token = -1;
  if (id.has_value()) {
    token = *id;
  } else {
    auto ids = encode(text, /*add_special_tokens=*/false);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " \"", text, "\": ", ids.status().message()));
    }
    if (ids->size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " \"", text, "\" encodes to ", ids->size(),
                       " tokens; a label must be exactly one token (set ", name, "_id instead)"));
    }
    token = (*ids)[0];
  }
  if (token < 0 || token >= vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " id ", token, " is outside the vocabulary [0, ", vocab_size, ")"));
  }
  return token;
}

// Stands for a judge's user message while its chat template is rendered, to
// find the text the template writes before and after the message.
constexpr absl::string_view kJudgeMessagePlaceholder = "ARBOR_JUDGE_USER_MESSAGE";

void Append(std::vector<int32_t>* out, absl::Span<const int32_t> tokens) {
  out->insert(out->end(), tokens.begin(), tokens.end());
}

}  // namespace

std::string NormalizeStep(absl::string_view step) {
  return std::string(absl::StripAsciiWhitespace(step));
}

float LabelTokenScore(float positive_logit, float negative_logit) {
  const double d = static_cast<double>(negative_logit) - static_cast<double>(positive_logit);
  return static_cast<float>(1.0 / (1.0 + std::exp(d)));
}

float ValueHeadScore(absl::Span<const float> row, int positive_label) {
  if (row.size() == 1) return static_cast<float>(1.0 / (1.0 + std::exp(-double{row[0]})));
  const float max = *std::max_element(row.begin(), row.end());
  double sum = 0.0;
  for (float v : row) sum += std::exp(double{v} - max);
  return static_cast<float>(std::exp(double{row[positive_label]} - max) / sum);
}

absl::StatusOr<RewardInput> RewardInput::Create(const RewardConfig& config, EncodeFn encode,
                                                ChatRenderFn render_chat,
                                                const RewardModelShape& model) {
  if (!encode) return absl::InvalidArgumentError("RewardInput: encode function is empty");
  if (!config.chat_template.empty() && !render_chat) {
    return absl::InvalidArgumentError(absl::StrCat("chat_template \"", config.chat_template,
                                                   "\" is set but no chat renderer was given"));
  }
  if (auto st = ValidateRewardConfig(config, model.has_value_head, model.num_labels); !st.ok()) {
    return st;
  }
  const int vocab_size = model.vocab_size;
  RewardInput input;
  input.config_ = config;
  input.encode_ = std::move(encode);
  input.render_chat_ = std::move(render_chat);
  input.num_labels_ = model.num_labels;
  std::string tag_text = config.step_tag;
  // The chat template's text after the user message (judges).
  std::string judge_tail;
  input.compare_status_ = absl::FailedPreconditionError(
      absl::StrCat("the reward model is a ", RewardKindName(config.kind),
                   "; only an llm_judge compares solutions"));
  if (config.kind == RewardKind::kLlmJudge) {
    // The question and steps go inside one user message; the template's text
    // after the message (end of turn, generation prompt) closes every cut.
    if (!config.chat_template.empty()) {
      auto rendered = input.render_chat_(kJudgeMessagePlaceholder);
      if (!rendered.ok()) return rendered.status();
      const absl::string_view text = rendered->text;
      const size_t at = text.find(kJudgeMessagePlaceholder);
      if (at == absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("chat_template \"", config.chat_template,
                         "\" does not write the user message verbatim; an LLM judge needs one "
                         "that does (or chat_template \"raw\")"));
      }
      input.judge_head_ = std::string(text.substr(0, at));
      input.judge_add_special_tokens_ = rendered->add_special_tokens;
      judge_tail = std::string(text.substr(at + kJudgeMessagePlaceholder.size()));
      absl::StrAppend(&tag_text, judge_tail);
    } else {
      input.judge_add_special_tokens_ = true;
    }
    absl::StrAppend(&tag_text, config.verdict_prefix);
  }
  auto tag = input.encode_(tag_text, /*add_special_tokens=*/false);
  if (!tag.ok()) return tag.status();
  input.tag_tokens_ = *std::move(tag);
  if (config.step_tag_id.has_value() &&
      (input.tag_tokens_.size() != 1 || input.tag_tokens_[0] != *config.step_tag_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("step_tag \"", config.step_tag, "\" encodes to ", input.tag_tokens_.size(),
                     " token(s) starting with id ",
                     input.tag_tokens_.empty() ? -1 : input.tag_tokens_[0], ", but step_tag_id is ",
                     *config.step_tag_id, ": the tokenizer does not match this prm_config.json"));
  }
  auto separator = input.encode_(config.step_separator, /*add_special_tokens=*/false);
  if (!separator.ok()) return separator.status();
  input.separator_tokens_ = *std::move(separator);
  if (config.score_head() == ScoreHead::kLabelTokens) {
    auto positive = ResolveLabelToken(input.encode_, "positive_token", config.positive_token,
                                      config.positive_token_id, vocab_size);
    if (!positive.ok()) return positive.status();
    auto negative = ResolveLabelToken(input.encode_, "negative_token", config.negative_token,
                                      config.negative_token_id, vocab_size);
    if (!negative.ok()) return negative.status();
    if (*positive == *negative) {
      return absl::InvalidArgumentError(absl::StrCat(
          "positive_token and negative_token are the same token (id ", *positive, ")"));
    }
    input.columns_ = {*positive, *negative};
  }
  if (config.kind == RewardKind::kLlmJudge) {
    // Comparisons are an extra: a judge whose vocabulary lacks the compare
    // verdicts still scores; its Compare says why it cannot.
    absl::Status st = input.InitCompare(judge_tail, vocab_size);
    if (!st.ok()) {
      input.compare_status_ = absl::FailedPreconditionError(
          absl::StrCat("this llm_judge cannot compare: ", st.message()));
    }
  }
  return input;
}

absl::Status RewardInput::InitCompare(absl::string_view judge_tail, int vocab_size) {
  const absl::string_view t = config_.compare_template;
  const size_t a = t.find("{a}"), b = t.find("{b}");
  // Validated: {question} < {a} < {b}, each once.
  compare_head_ = std::string(t.substr(0, a));
  auto middle = encode_(t.substr(a + 3, b - a - 3), /*add_special_tokens=*/false);
  if (!middle.ok()) return middle.status();
  compare_middle_tokens_ = *std::move(middle);
  auto tail = encode_(absl::StrCat(t.substr(b + 3), judge_tail, config_.verdict_prefix),
                      /*add_special_tokens=*/false);
  if (!tail.ok()) return tail.status();
  if (tail->empty()) return absl::InvalidArgumentError("compare_template ends with \"{b}\"");
  compare_tail_tokens_ = *std::move(tail);
  auto first = ResolveLabelToken(encode_, "compare_a_token", config_.compare_a_token,
                                 config_.compare_a_token_id, vocab_size);
  if (!first.ok()) return first.status();
  auto second = ResolveLabelToken(encode_, "compare_b_token", config_.compare_b_token,
                                  config_.compare_b_token_id, vocab_size);
  if (!second.ok()) return second.status();
  if (*first == *second) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compare_a_token and compare_b_token are the same token (id ", *first, ")"));
  }
  compare_columns_ = {*first, *second};
  compare_status_ = absl::OkStatus();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> RewardInput::EncodeComparePrompt(
    absl::string_view question) const {
  if (!compare_status_.ok()) return compare_status_;
  return encode_(absl::StrCat(judge_head_, Render(compare_head_, "{question}", question)),
                 judge_add_special_tokens_);
}

absl::Status RewardInput::AppendSolution(absl::Span<const std::string> steps,
                                         std::vector<int32_t>* out) const {
  for (size_t i = 0; i < steps.size(); ++i) {
    if (i > 0) Append(out, separator_tokens_);
    auto step = EncodeStep(steps[i]);
    if (!step.ok()) return step.status();
    Append(out, *step);
  }
  return absl::OkStatus();
}

absl::StatusOr<RewardSequence> RewardInput::BuildComparison(
    absl::Span<const int32_t> compare_prompt_tokens, absl::Span<const std::string> first,
    absl::Span<const std::string> second) const {
  if (!compare_status_.ok()) return compare_status_;
  if (first.empty() || second.empty()) {
    return absl::InvalidArgumentError("a compared solution needs at least one step");
  }
  RewardSequence seq;
  seq.tokens.assign(compare_prompt_tokens.begin(), compare_prompt_tokens.end());
  if (auto st = AppendSolution(first, &seq.tokens); !st.ok()) return st;
  Append(&seq.tokens, compare_middle_tokens_);
  if (auto st = AppendSolution(second, &seq.tokens); !st.ok()) return st;
  Append(&seq.tokens, compare_tail_tokens_);
  seq.positions.push_back(static_cast<int32_t>(seq.tokens.size()) - 1);
  return seq;
}

absl::StatusOr<std::vector<int32_t>> RewardInput::EncodePrompt(absl::string_view question) const {
  if (config_.kind == RewardKind::kLlmJudge) {
    return encode_(absl::StrCat(judge_head_, Render(config_.prompt_template, "{question}", question)),
                   judge_add_special_tokens_);
  }
  if (!config_.chat_template.empty()) {
    auto prompt = render_chat_(question);
    if (!prompt.ok()) return prompt.status();
    return encode_(prompt->text, prompt->add_special_tokens);
  }
  return encode_(Render(config_.prompt_template, "{question}", question),
                 /*add_special_tokens=*/true);
}

absl::StatusOr<std::vector<int32_t>> RewardInput::EncodeStep(absl::string_view step) const {
  return encode_(Render(config_.step_template, "{step}", NormalizeStep(step)),
                 /*add_special_tokens=*/false);
}

absl::StatusOr<std::vector<RewardSequence>> RewardInput::Build(
    absl::Span<const int32_t> prompt_tokens, absl::Span<const std::string> steps,
    bool last_step_only) const {
  if (steps.empty()) return absl::InvalidArgumentError("a candidate needs at least one step");
  std::vector<RewardSequence> out;
  if (config_.kind != RewardKind::kOrm && config_.kind != RewardKind::kLlmJudge) {
    RewardSequence seq;
    seq.tokens.assign(prompt_tokens.begin(), prompt_tokens.end());
    for (size_t i = 0; i < steps.size(); ++i) {
      if (i > 0) Append(&seq.tokens, separator_tokens_);
      auto step = EncodeStep(steps[i]);
      if (!step.ok()) return step.status();
      Append(&seq.tokens, *step);
      Append(&seq.tokens, tag_tokens_);
      if (seq.tokens.empty()) return absl::InvalidArgumentError("the reward input is empty");
      if (!last_step_only || i + 1 == steps.size()) {
        seq.positions.push_back(static_cast<int32_t>(seq.tokens.size()) - 1);
      }
    }
    out.push_back(std::move(seq));
    return out;
  }
  // ORM and judge: the solution cut after each scored step, closed by the tag
  // (for a judge: the verdict question, the end of the user turn and the
  // generation prompt). The sequences share their prefixes, so the cache runs
  // each step once and only the closing tokens again.
  std::vector<int32_t> body(prompt_tokens.begin(), prompt_tokens.end());
  for (size_t i = 0; i < steps.size(); ++i) {
    if (i > 0) Append(&body, separator_tokens_);
    auto step = EncodeStep(steps[i]);
    if (!step.ok()) return step.status();
    Append(&body, *step);
    if (last_step_only && i + 1 != steps.size()) continue;
    RewardSequence seq;
    seq.tokens = body;
    Append(&seq.tokens, tag_tokens_);
    if (seq.tokens.empty()) return absl::InvalidArgumentError("the reward input is empty");
    seq.positions.push_back(static_cast<int32_t>(seq.tokens.size()) - 1);
    out.push_back(std::move(seq));
  }
  return out;
}

float RewardInput::ScoreFromRow(absl::Span<const float> row) const {
  if (config_.score_head() == ScoreHead::kLabelTokens) return LabelTokenScore(row[0], row[1]);
  return ValueHeadScore(row, num_labels_ > 1 ? config_.positive_label : 0);
}

}  // namespace arbor::verifier
