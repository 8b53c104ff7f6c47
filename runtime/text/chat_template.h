// ChatTemplate: turns a question (or a short conversation) into the prompt
// text a model was tuned on. Named templates stand in for the Jinja
// templates of Hugging Face checkpoints:
//   "chatml" (Qwen2 / Qwen2.5):
//     <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n
//     <|im_start|>assistant\n
//   "llama3" (Llama 3 / 3.1 Instruct, contents trimmed as its template does):
//     <|begin_of_text|>[<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>]
//     <|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>
//     <|start_header_id|>assistant<|end_header_id|>\n\n
//   "raw": the question as is, followed by a configurable suffix (several
//     messages: their contents joined by blank lines).
// The default for a model folder comes from tokenizer_config.json's
// "chat_template": one containing "<|im_start|>" is chatml, one containing
// "<|start_header_id|>" is llama3, anything else (or none) is raw.
//
// Thread-safety: immutable value type; const methods are thread-safe.
#ifndef ARBOR_RUNTIME_TEXT_CHAT_TEMPLATE_H_
#define ARBOR_RUNTIME_TEXT_CHAT_TEMPLATE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace arbor::runtime {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatTemplateOptions {
  // System turn. nullopt: the template's default (chatml: "You are a helpful
  // assistant.", llama3: none); empty: no system turn. Ignored by raw.
  std::optional<std::string> system_prompt;
  // raw only: appended after the question (e.g. "\nAnswer:").
  std::string raw_suffix;
};

class ChatTemplate {
 public:
  enum class Kind { kChatMl, kLlama3, kRaw };

  // "chatml", "llama3", "raw".
  static std::vector<std::string> KnownNames();
  // INVALID_ARGUMENT listing the known names when `name` is not one of them.
  static absl::StatusOr<ChatTemplate> ByName(std::string_view name,
                                             ChatTemplateOptions options = {});
  // The name a Jinja chat template corresponds to (see the header comment).
  static std::string DetectName(std::string_view jinja_template);
  // The default for a model folder from its tokenizer_config.json (raw when the
  // file or its chat_template is missing; INVALID_ARGUMENT when it is malformed).
  static absl::StatusOr<ChatTemplate> ForModelDir(const std::string& model_dir,
                                                  ChatTemplateOptions options = {});
  // A flag's value: a known name, or "" / "auto" for ForModelDir(model_dir).
  static absl::StatusOr<ChatTemplate> Select(std::string_view flag, const std::string& model_dir,
                                             ChatTemplateOptions options = {});

  Kind kind() const { return kind_; }
  std::string_view name() const;
  const ChatTemplateOptions& options() const { return options_; }

  // The prompt for one user question, ending where the assistant's reply
  // starts.
  std::string Apply(std::string_view question) const;
  // A conversation; with `add_generation_prompt` the assistant header follows.
  // INVALID_ARGUMENT for an unknown role or an empty conversation.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;
  // True when the rendered text already begins with BOS (llama3): encode it
  // with add_special_tokens = false so that BOS is not doubled.
  bool renders_bos() const { return kind_ == Kind::kLlama3; }

 private:
  ChatTemplate(Kind kind, ChatTemplateOptions options)
      : kind_(kind), options_(std::move(options)) {}

  Kind kind_;
  ChatTemplateOptions options_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_TEXT_CHAT_TEMPLATE_H_
