// RewardInput: turns (question, steps) into the token sequences a reward model
// runs and the positions whose output rows hold the step scores, and turns
// those rows into scores in [0, 1]. See reward_config.h for the format.
//
// Every piece (prompt, each step, tag, separator) is encoded on its own, so a
// candidate's tokens are a prefix of those of any longer version of it and the
// engine's prefix cache serves all but the new steps.
//
// Thread-safety: immutable after Create; const methods are thread-safe when
// the encode function is.
#ifndef ARBOR_VERIFIER_REWARD_INPUT_H_
#define ARBOR_VERIFIER_REWARD_INPUT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "verifier/reward_config.h"

namespace arbor::verifier {

// The reward model's tokenizer: text (added/special tokens in it recognised)
// to ids; `add_special_tokens` adds the post-processor's tokens (e.g. BOS).
using EncodeFn = std::function<absl::StatusOr<std::vector<int32_t>>(absl::string_view text,
                                                                    bool add_special_tokens)>;
// A question rendered by a chat template (one user message and the generation
// prompt), and whether to encode it with the tokenizer's special tokens (false
// when the template writes its own BOS).
struct ChatPrompt {
  std::string text;
  bool add_special_tokens = false;
};
// Used when RewardConfig::chat_template is set.
using ChatRenderFn = std::function<absl::StatusOr<ChatPrompt>(absl::string_view question)>;

// What RewardInput needs to know about the served model.
struct RewardModelShape {
  int vocab_size = 0;
  bool has_value_head = false;
  int num_labels = 0;
};

struct RewardSequence {
  std::vector<int32_t> tokens;
  // Indices into tokens whose output rows give scores, one per scored step,
  // in step order.
  std::vector<int32_t> positions;
};

// A step as the model reads it: surrounding whitespace removed.
std::string NormalizeStep(absl::string_view step);

class RewardInput {
 public:
  // Resolves the label tokens and encodes the fixed pieces. `render_chat` is
  // needed when config.chat_template is set. Errors: INVALID_ARGUMENT when a
  // label token is not exactly one token or outside [0, vocab_size), the step
  // tag does not match step_tag_id, or the config is invalid for the model
  // (see ValidateRewardConfig).
  static absl::StatusOr<RewardInput> Create(const RewardConfig& config, EncodeFn encode,
                                            ChatRenderFn render_chat,
                                            const RewardModelShape& model);

  // The question rendered through the chat template or prompt_template,
  // encoded (with the tokenizer's special tokens for a format string; for a
  // chat template as the renderer says).
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(absl::string_view question) const;

  // The sequences of one candidate, given its encoded prompt. A PRM gives one
  // sequence with a position after every step (or after the last only); an
  // ORM or LLM judge gives one sequence per scored step (the solution cut
  // after it), each with one position. `steps` must be non-empty.
  absl::StatusOr<std::vector<RewardSequence>> Build(absl::Span<const int32_t> prompt_tokens,
                                                    absl::Span<const std::string> steps,
                                                    bool last_step_only) const;

  // Pairwise judgement (LLM judges; reward_config.h): whether comparisons are
  // served, and why not (FAILED_PRECONDITION: not a judge, or a compare
  // verdict token that is not exactly one token).
  bool supports_compare() const { return compare_status_.ok(); }
  const absl::Status& compare_status() const { return compare_status_; }
  // The comparison prompt up to the first solution: chat head and
  // compare_template's text through "{question}" and up to "{a}", encoded.
  absl::StatusOr<std::vector<int32_t>> EncodeComparePrompt(absl::string_view question) const;
  // One comparison, `first` shown as Solution A and `second` as Solution B,
  // after the encoded compare prompt; one position (the verdict). Both step
  // lists must be non-empty.
  absl::StatusOr<RewardSequence> BuildComparison(absl::Span<const int32_t> compare_prompt_tokens,
                                                 absl::Span<const std::string> first,
                                                 absl::Span<const std::string> second) const;
  // {A, B} verdict token ids (empty unless supports_compare()).
  const std::vector<int32_t>& compare_columns() const { return compare_columns_; }

  // Output columns the engine should return per row: {positive, negative}
  // token ids for label-token heads, empty (the whole row) for value heads.
  const std::vector<int32_t>& columns() const { return columns_; }
  // The score of one returned row (columns().size() values, or num_labels).
  float ScoreFromRow(absl::Span<const float> row) const;

  const RewardConfig& config() const { return config_; }
  int32_t positive_token_id() const { return columns_.empty() ? -1 : columns_[0]; }
  int32_t negative_token_id() const { return columns_.empty() ? -1 : columns_[1]; }

 private:
  RewardInput() = default;
  absl::StatusOr<std::vector<int32_t>> EncodeStep(absl::string_view step) const;
  // Resolves the compare pieces and verdict tokens; sets compare_status_.
  absl::Status InitCompare(absl::string_view judge_tail, int vocab_size);
  // The steps encoded and joined by step_separator.
  absl::Status AppendSolution(absl::Span<const std::string> steps,
                              std::vector<int32_t>* out) const;

  RewardConfig config_;
  EncodeFn encode_;
  ChatRenderFn render_chat_;
  std::vector<int32_t> tag_tokens_;
  std::vector<int32_t> separator_tokens_;
  std::vector<int32_t> columns_;
  int num_labels_ = 0;
  // LLM judge: the chat template's text before the user message, and how to
  // encode it.
  std::string judge_head_;
  bool judge_add_special_tokens_ = false;
  // Pairwise judgement: compare_template's text before "{a}" (the question
  // rendered later), between "{a}" and "{b}", and the tokens of the text
  // after "{b}" with the chat tail and verdict_prefix.
  absl::Status compare_status_;
  std::string compare_head_;
  std::vector<int32_t> compare_middle_tokens_;
  std::vector<int32_t> compare_tail_tokens_;
  std::vector<int32_t> compare_columns_;
};

// sigmoid(positive - negative) = softmax([positive, negative])[0].
float LabelTokenScore(float positive_logit, float negative_logit);
// softmax(row)[positive_label]; sigmoid(row[0]) for a single output.
float ValueHeadScore(absl::Span<const float> row, int positive_label);

}  // namespace arbor::verifier

#endif  // ARBOR_VERIFIER_REWARD_INPUT_H_
