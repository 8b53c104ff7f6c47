#include "verifier/reward_config.h"

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace arbor::verifier {

namespace {

// Qwen2.5-Math-PRM's input: the ChatML conversation with its system prompt,
// steps joined by "<extra_0>" and one more after the last.
constexpr absl::string_view kQwenPrmPrompt =
    "<|im_start|>system\nPlease reason step by step, and put your final answer within "
    "\\boxed{}.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n";

// An LLM judge's user message: the question and the solution so far, then the
// verdict asked for.
constexpr absl::string_view kJudgePrompt =
    "Here is a math problem and the first steps of a solution.\n\nProblem: {question}\n\n"
    "Solution so far:\n";
constexpr absl::string_view kJudgeQuestion =
    "\n\nIs the last step of the solution correct? Answer Yes or No.";

int CountOccurrences(absl::string_view text, absl::string_view what) {
  int n = 0;
  for (size_t pos = text.find(what); pos != absl::string_view::npos;
       pos = text.find(what, pos + what.size())) {
    ++n;
  }
  return n;
}

// A bare identifier ("chatml") names a chat template; anything else is a
// format string.
bool IsTemplateName(absl::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

absl::Status KeyError(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("prm_config.", key, ": ", what));
}

absl::Status ReadString(const nlohmann::json& json, const char* key, std::string* out) {
  auto it = json.find(key);
  if (it == json.end()) return absl::OkStatus();
  if (!it->is_string()) return KeyError(key, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ReadTokenId(const nlohmann::json& json, const char* key, std::optional<int32_t>* out) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return KeyError(key, "must be an integer token id");
  const int64_t id = it->get<int64_t>();
  if (id < 0 || id > INT32_MAX)
    return KeyError(key, absl::StrCat("token id ", id, " is negative or too large"));
  *out = static_cast<int32_t>(id);
  return absl::OkStatus();
}

}  // namespace

absl::string_view RewardKindName(RewardKind kind) {
  switch (kind) {
    case RewardKind::kTokenLogitPrm:
      return "token_logit_prm";
    case RewardKind::kValueHeadPrm:
      return "value_head_prm";
    case RewardKind::kOrm:
      return "orm";
    case RewardKind::kLlmJudge:
      return "llm_judge";
  }
  return "unknown";
}

absl::StatusOr<RewardKind> ParseRewardKind(absl::string_view name) {
  if (name == "token_logit_prm" || name == "token_logit") return RewardKind::kTokenLogitPrm;
  if (name == "value_head_prm" || name == "value_head") return RewardKind::kValueHeadPrm;
  if (name == "orm") return RewardKind::kOrm;
  if (name == "llm_judge" || name == "judge") return RewardKind::kLlmJudge;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown reward model kind \"", name,
                   "\" (want token_logit_prm, value_head_prm, orm or llm_judge)"));
}

RewardConfig DefaultRewardConfig(RewardKind kind, bool model_has_value_head) {
  RewardConfig config;
  config.kind = kind;
  switch (kind) {
    case RewardKind::kTokenLogitPrm:
      config.head = ScoreHead::kLabelTokens;
      break;
    case RewardKind::kValueHeadPrm:
      config.head = ScoreHead::kValueHead;
      config.prompt_template = std::string(kQwenPrmPrompt);
      config.step_tag = "<extra_0>";
      config.step_separator = "";
      break;
    case RewardKind::kOrm:
      config.head = model_has_value_head ? ScoreHead::kValueHead : ScoreHead::kLabelTokens;
      config.prompt_template = "{question}\n\n";
      config.step_separator = "\n\n";
      config.step_tag = model_has_value_head ? "" : "\n\n";
      break;
    case RewardKind::kLlmJudge:
      config.head = ScoreHead::kLabelTokens;
      config.prompt_template = std::string(kJudgePrompt);
      config.step_separator = "\n";
      config.step_tag = std::string(kJudgeQuestion);
      config.positive_token = "Yes";
      config.negative_token = "No";
      config.compare_template = std::string(kJudgeCompareTemplate);
      break;
  }
  return config;
}

absl::StatusOr<RewardConfig> ParseRewardConfig(absl::string_view json_text,
                                               const RewardConfig& base,
                                               bool model_has_value_head) {
  nlohmann::json json = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError("prm_config: not valid JSON");
  if (!json.is_object()) return absl::InvalidArgumentError("prm_config: not a JSON object");
  RewardConfig config = base;
  if (auto it = json.find("kind"); it != json.end()) {
    if (!it->is_string()) return KeyError("kind", "must be a string");
    auto kind = ParseRewardKind(it->get<std::string>());
    if (!kind.ok()) return KeyError("kind", kind.status().message());
    config = DefaultRewardConfig(*kind, model_has_value_head);
  }
  if (auto it = json.find("head"); it != json.end()) {
    if (!it->is_string()) return KeyError("head", "must be a string");
    const std::string head = it->get<std::string>();
    if (head == "label_tokens") {
      config.head = ScoreHead::kLabelTokens;
    } else if (head == "value_head") {
      config.head = ScoreHead::kValueHead;
    } else {
      return KeyError(
          "head", absl::StrCat("unknown head \"", head, "\" (want label_tokens or value_head)"));
    }
  }
  if (auto it = json.find("prompt_template"); it != json.end()) {
    if (!it->is_string()) return KeyError("prompt_template", "must be a string");
    std::string tmpl = it->get<std::string>();
    if (config.kind == RewardKind::kLlmJudge) {
      // A judge's prompt_template is the start of its user message, always
      // a format string; chat_template wraps it.
      config.prompt_template = std::move(tmpl);
    } else if (IsTemplateName(tmpl)) {
      config.chat_template = std::move(tmpl);
    } else {
      config.prompt_template = std::move(tmpl);
      config.chat_template.clear();
    }
  }
  for (const auto& [key, field] :
       {std::pair<const char*, std::string*>{"chat_template", &config.chat_template},
        {"step_template", &config.step_template},
        {"step_tag", &config.step_tag},
        {"step_separator", &config.step_separator},
        {"positive_token", &config.positive_token},
        {"negative_token", &config.negative_token},
        {"verdict_prefix", &config.verdict_prefix},
        {"compare_template", &config.compare_template},
        {"compare_a_token", &config.compare_a_token},
        {"compare_b_token", &config.compare_b_token}}) {
    if (auto st = ReadString(json, key, field); !st.ok()) return st;
  }
  if (auto st = ReadTokenId(json, "step_tag_id", &config.step_tag_id); !st.ok()) return st;
  if (auto st = ReadTokenId(json, "positive_token_id", &config.positive_token_id); !st.ok()) {
    return st;
  }
  if (auto st = ReadTokenId(json, "negative_token_id", &config.negative_token_id); !st.ok()) {
    return st;
  }
  if (auto st = ReadTokenId(json, "compare_a_token_id", &config.compare_a_token_id); !st.ok()) {
    return st;
  }
  if (auto st = ReadTokenId(json, "compare_b_token_id", &config.compare_b_token_id); !st.ok()) {
    return st;
  }
  if (auto it = json.find("positive_label"); it != json.end()) {
    if (!it->is_number_integer()) return KeyError("positive_label", "must be an integer");
    config.positive_label = it->get<int>();
  }
  return config;
}

absl::StatusOr<RewardConfig> LoadRewardConfig(const std::string& model_dir,
                                              bool model_has_value_head) {
  RewardConfig config = DefaultRewardConfig(
      model_has_value_head ? RewardKind::kValueHeadPrm : RewardKind::kTokenLogitPrm,
      model_has_value_head);
  const std::filesystem::path path = std::filesystem::path(model_dir) / "prm_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return config;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = ParseRewardConfig(text.str(), config, model_has_value_head);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat(path.string(), ": ", parsed.status().message()));
  }
  return parsed;
}

absl::Status ValidateRewardConfig(const RewardConfig& config, bool model_has_value_head,
                                  int num_labels) {
  const bool judge = config.kind == RewardKind::kLlmJudge;
  if ((judge || config.chat_template.empty()) &&
      CountOccurrences(config.prompt_template, "{question}") != 1) {
    return absl::InvalidArgumentError(
        "prompt_template must contain \"{question}\" exactly once, got \"" +
        config.prompt_template + "\"");
  }
  if (judge) {
    const absl::string_view t = config.compare_template;
    const size_t q = t.find("{question}"), a = t.find("{a}"), b = t.find("{b}");
    if (CountOccurrences(t, "{question}") != 1 || CountOccurrences(t, "{a}") != 1 ||
        CountOccurrences(t, "{b}") != 1 || !(q < a && a < b)) {
      return absl::InvalidArgumentError(
          "compare_template must contain \"{question}\", \"{a}\" and \"{b}\" once each, in "
          "that order, got \"" +
          config.compare_template + "\"");
    }
  }
  if (CountOccurrences(config.step_template, "{step}") != 1) {
    return absl::InvalidArgumentError("step_template must contain \"{step}\" exactly once, got \"" +
                                      config.step_template + "\"");
  }
  const bool is_prm = config.kind == RewardKind::kTokenLogitPrm ||
                      config.kind == RewardKind::kValueHeadPrm;
  if (is_prm && config.step_tag.empty()) {
    // Without a tag after each step there is nothing that marks where a
    // step's score is read (an ORM may read at the last token).
    return absl::InvalidArgumentError(
        absl::StrCat("step_tag must not be empty for a ", RewardKindName(config.kind)));
  }
  switch (config.score_head()) {
    case ScoreHead::kValueHead:
      if (!model_has_value_head) {
        return absl::InvalidArgumentError(absl::StrCat(
            "kind ", RewardKindName(config.kind),
            " reads a value head, but the model has none (no num_labels / score head)"));
      }
      // One output is read through a sigmoid; positive_label picks among several.
      if (num_labels > 1 && (config.positive_label < 0 || config.positive_label >= num_labels)) {
        return absl::InvalidArgumentError(absl::StrCat("positive_label ", config.positive_label,
                                                       " is outside [0, ", num_labels, ")"));
      }
      break;
    case ScoreHead::kLabelTokens:
      if (model_has_value_head) {
        return absl::InvalidArgumentError(absl::StrCat(
            "kind ", RewardKindName(config.kind),
            " reads label-token logits, but the model has a value head of ", num_labels,
            " outputs (use kind value_head_prm, or orm with head value_head)"));
      }
      if (!config.positive_token_id && config.positive_token.empty()) {
        return absl::InvalidArgumentError("positive_token is empty");
      }
      if (!config.negative_token_id && config.negative_token.empty()) {
        return absl::InvalidArgumentError("negative_token is empty");
      }
      break;
  }
  return absl::OkStatus();
}

}  // namespace arbor::verifier
