// RewardConfig: how a reward model reads a (question, steps) pair and where its
// scores come from. Three kinds are served:
//
//  * token-logit PRM (Math-Shepherd, RLHFlow): the input is the question, then
//    each step followed by a step tag; the model's output row at the last
//    token of every tag is read at the "+"/"-" label columns and the step's
//    score is softmax([pos, neg])[0] = sigmoid(pos - neg).
//  * value-head PRM (Qwen2.5-Math-PRM): the checkpoint carries a `score` head
//    of num_labels outputs; the row at every tag (e.g. "<extra_0>") gives
//    softmax(row)[positive_label] (sigmoid(row[0]) when num_labels == 1).
//  * ORM: scores a solution as a whole, at the tag after its last step. Each
//    step's score is the score of the solution cut after that step.
//  * LLM judge: any causal LM, asked in one user turn of its chat template
//    whether the solution so far is correct; the score of a cut is
//    softmax([yes, no])[0] over the verdict tokens' logits at the first
//    position of the assistant's answer (after `verdict_prefix`). The cut
//    solutions are scored like an ORM's. A judge also compares two whole
//    solutions (Verifier.Compare): `compare_template` with the question and
//    both solutions is the user message, and P(A) = softmax([A, B])[0] over
//    the compare verdict tokens' logits at the same answer position.
//
// The text of one candidate is, with S_i the i-th step stripped of surrounding
// whitespace:
//     prompt_template(question) step_template(S_0) step_tag
//     step_separator step_template(S_1) step_tag ...
// For an ORM the step tag comes only after the last step. For an LLM judge,
// the prompt_template (the question) and the steps form the user message
// that chat_template wraps, and step_tag closes it:
//     <chat head> prompt_template(question) S_0 step_separator ... S_i
//     step_tag <chat tail and generation prompt> verdict_prefix
// A comparison (LLM judge) is, with {question}, {a} and {b} replaced and the
// template cut at them into pieces P0 {question} P1 {a} P2 {b} P3:
//     <chat head> P0 question P1 A_0 step_separator A_1 ... P2 B_0 ... P3
//     <chat tail and generation prompt> verdict_prefix
// Every piece is
// tokenized on its own and the pieces' tokens are concatenated, so the tokens
// of a candidate are a prefix of the tokens of any longer version of it: the
// prefix cache then serves everything but the new steps.
//
// The config comes from `prm_config.json` in the model folder (every key
// optional; tools/train_reference/train_prm.py writes the reference PRM's),
// overridden by command-line flags; defaults follow the kind:
//     {"kind": "token_logit_prm" | "value_head_prm" | "orm" | "llm_judge"
//              (also "token_logit", "value_head", "judge"),
//      "prompt_template": "{question} ",  // "{question}" is replaced; or the
//                                        // name of a chat template ("chatml",
//                                        // "llama3", "raw") applied to the
//                                        // question as one user message
//      "chat_template": "chatml",         // the same, explicitly
//      "step_template": "{step}",         // "{step}" is replaced
//      "step_tag": " ки", "step_tag_id": 3,  // the id, when given, is checked
//      "step_separator": "\n",
//      "positive_token": "+", "negative_token": "-",   // label-token heads
//      "positive_token_id": 10, "negative_token_id": 11, // win over the strings
//      "positive_label": 1,                             // value heads
//      "verdict_prefix": "",             // LLM judge: the answer's start
//      "compare_template": "...{question}...{a}...{b}...",  // LLM judge: Compare
//      "compare_a_token": "A", "compare_b_token": "B",       // its verdicts
//      "compare_a_token_id": 32, "compare_b_token_id": 33,   // win over the strings
//      "head": "label_tokens" | "value_head"}           // ORMs
// Other keys (documentation such as "format", "example", "aggregation") are
// ignored.
//
// Plain value types and pure functions; thread-compatible.
#ifndef ARBOR_VERIFIER_REWARD_CONFIG_H_
#define ARBOR_VERIFIER_REWARD_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbor::verifier {

enum class RewardKind { kTokenLogitPrm, kValueHeadPrm, kOrm, kLlmJudge };

// "token_logit_prm", "value_head_prm", "orm", "llm_judge" (the names of
// VerifierInfo.kind).
absl::string_view RewardKindName(RewardKind kind);
absl::StatusOr<RewardKind> ParseRewardKind(absl::string_view name);

// How the scores are read from an output row.
enum class ScoreHead {
  kLabelTokens,  // an LM head: softmax over the positive/negative token logits
  kValueHead,    // a value head of num_labels outputs
};

struct RewardConfig {
  RewardKind kind = RewardKind::kTokenLogitPrm;
  // For an ORM: whether it reads label tokens or a value head (the two PRM
  // kinds imply theirs).
  ScoreHead head = ScoreHead::kLabelTokens;
  std::string prompt_template = "{question} ";
  // When set, the question is rendered by this chat template instead of
  // prompt_template (one user message plus the assistant generation prompt).
  std::string chat_template;
  std::string step_template = "{step}";
  std::string step_tag = " \u043a\u0438";  // " ки", Math-Shepherd's tag
  // When set, step_tag must encode to exactly this one token.
  std::optional<int32_t> step_tag_id;
  std::string step_separator = "\n";
  // Label tokens (kLabelTokens): as text, each must encode to exactly one
  // token; or as ids, which win when set.
  std::string positive_token = "+";
  std::string negative_token = "-";
  std::optional<int32_t> positive_token_id;
  std::optional<int32_t> negative_token_id;
  // Value head (kValueHead): the output index of "correct".
  int positive_label = 1;
  // LLM judge: text after the chat template's generation prompt, before the
  // verdict token (e.g. "Verdict:"); empty reads the answer's first token.
  std::string verdict_prefix;
  // LLM judge, pairwise (Verifier.Compare): the user message, holding
  // "{question}", "{a}" and "{b}" once each, in that order; and the verdict
  // tokens naming the first and the second solution (each one token; ids win).
  std::string compare_template;
  std::string compare_a_token = "A";
  std::string compare_b_token = "B";
  std::optional<int32_t> compare_a_token_id;
  std::optional<int32_t> compare_b_token_id;

  ScoreHead score_head() const {
    switch (kind) {
      case RewardKind::kTokenLogitPrm:
        return ScoreHead::kLabelTokens;
      case RewardKind::kValueHeadPrm:
        return ScoreHead::kValueHead;
      case RewardKind::kOrm:
        return head;
      case RewardKind::kLlmJudge:
        return ScoreHead::kLabelTokens;
    }
    return head;
  }
};

// The defaults of a kind: token-logit PRMs follow Math-Shepherd ("{question} ",
// steps joined by "\n", " ки" after each, "+"/"-" labels); value-head PRMs
// follow Qwen2.5-Math-PRM (ChatML prompt with its system message, "<extra_0>"
// after every step); ORMs read the model's value head when it has one; LLM
// judges ask "Is the last step of the solution correct? Answer Yes or No." in
// the model's own chat template (chat_template left empty here: the verifier
// fills in the model's) and read "Yes" against "No"; their comparisons ask
// "Which solution is correct? Answer A or B." (kJudgeCompareTemplate) and
// read "A" against "B".
RewardConfig DefaultRewardConfig(RewardKind kind, bool model_has_value_head);

// The default compare_template of an LLM judge.
inline constexpr absl::string_view kJudgeCompareTemplate =
    "Here is a math problem and two candidate solutions.\n\nProblem: {question}\n\n"
    "Solution A:\n{a}\n\nSolution B:\n{b}\n\n"
    "Which solution is correct? Answer A or B.";

// Parses prm_config.json text over `base` (keys present replace base's
// values; "kind" given in the file resets the other keys to that kind's
// defaults first). Unknown keys are ignored. Errors name the key.
absl::StatusOr<RewardConfig> ParseRewardConfig(absl::string_view json_text,
                                               const RewardConfig& base, bool model_has_value_head);

// The config of the model in `model_dir`: the kind's defaults (value-head PRM
// when the checkpoint has a value head, else token-logit PRM), then
// <model_dir>/prm_config.json when it exists. Errors name the file and key.
absl::StatusOr<RewardConfig> LoadRewardConfig(const std::string& model_dir,
                                              bool model_has_value_head);

// Checks the templates and the kind against the model. Errors: INVALID_ARGUMENT
// naming the field (a template without its placeholder, a value-head kind on a
// model without a value head, positive_label outside [0, num_labels), ...).
absl::Status ValidateRewardConfig(const RewardConfig& config, bool model_has_value_head,
                                  int num_labels);

}  // namespace arbor::verifier

#endif  // ARBOR_VERIFIER_REWARD_CONFIG_H_
