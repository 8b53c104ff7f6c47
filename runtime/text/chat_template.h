// ChatTemplate: turns a question (or a short conversation) into the prompt
// text a model was tuned on.
//   "model": the model's own Jinja chat_template from its tokenizer_config.json
//     (a string, or the list of named templates whose "default" entry is
//     used, else the first), rendered by runtime/text/jinja as transformers
//     renders it, with messages, add_generation_prompt and the config's
//     bos_token / eos_token / unk_token / pad_token.
//   Named overrides, Arbor's own renderings of two common formats:
//   "chatml" (Qwen2 / Qwen2.5):
//     <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n
//     <|im_start|>assistant\n
//   "llama3" (Llama 3 / 3.1 Instruct, contents trimmed as its template does):
//     <|begin_of_text|>[<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>]
//     <|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>
//     <|start_header_id|>assistant<|end_header_id|>\n\n
//   "raw": the question as is, followed by a configurable suffix (several
//     messages: their contents joined by blank lines).
// A model folder's default is "model" when its tokenizer_config.json has a
// chat_template and "raw" when it has none. A template that does not parse is
// an error when the folder is loaded, one that fails to render (say, it calls
// raise_exception) an error for that request; both name the file. Neither
// falls back to another template.
//
// Thread-safety: immutable value type; const methods are thread-safe.
#ifndef ARBOR_RUNTIME_TEXT_CHAT_TEMPLATE_H_
#define ARBOR_RUNTIME_TEXT_CHAT_TEMPLATE_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/text/jinja/template.h"
#include "runtime/text/jinja/value.h"

namespace arbor::runtime {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatTemplateOptions {
  // System turn. nullopt: the template's default (chatml: "You are a helpful
  // assistant.", llama3: none, model: whatever its template writes); empty: no
  // system turn (model: the template's default). Ignored by raw. For model, a
  // non-empty prompt becomes a leading system message when the conversation
  // has none.
  std::optional<std::string> system_prompt;
  // raw only: appended after the question (e.g. "\nAnswer:").
  std::string raw_suffix;
};

class ChatTemplate {
 public:
  enum class Kind { kChatMl, kLlama3, kRaw, kModel };

  // "chatml", "llama3", "raw", "model".
  static std::vector<std::string> KnownNames();
  // A named override ("chatml", "llama3", "raw"); INVALID_ARGUMENT listing the
  // known names otherwise ("model" needs the folder: see Select).
  static absl::StatusOr<ChatTemplate> ByName(std::string_view name,
                                             ChatTemplateOptions options = {});
  // A Jinja chat template with its special tokens (name: value, e.g.
  // bos_token); `origin` names it in errors (the tokenizer_config.json path).
  // INVALID_ARGUMENT "<origin>: chat_template: line L, column C: ..." when it
  // does not parse.
  static absl::StatusOr<ChatTemplate> FromJinja(std::string_view source,
                                                jinja::ValueDict special_tokens,
                                                std::string origin,
                                                ChatTemplateOptions options = {});
  // The default for a model folder (see the header comment): model, or raw when
  // tokenizer_config.json or its chat_template is missing. INVALID_ARGUMENT
  // naming the file when it is malformed or its template does not parse.
  static absl::StatusOr<ChatTemplate> ForModelDir(const std::string& model_dir,
                                                  ChatTemplateOptions options = {});
  // A flag's value: "" / "auto" for ForModelDir(model_dir); "model" for the
  // model's own template (INVALID_ARGUMENT when the folder has none); else a
  // named override.
  static absl::StatusOr<ChatTemplate> Select(std::string_view flag, const std::string& model_dir,
                                             ChatTemplateOptions options = {});

  Kind kind() const { return kind_; }
  std::string_view name() const;
  const ChatTemplateOptions& options() const { return options_; }

  // The prompt for one user question, ending where the assistant's reply
  // starts. Fails only as Render does.
  absl::StatusOr<std::string> Apply(std::string_view question) const;
  // A conversation; with `add_generation_prompt` the assistant header follows.
  // INVALID_ARGUMENT for an unknown role, an empty conversation, or a model
  // template that fails (its message, with line and column, and the file);
  // RESOURCE_EXHAUSTED when a model template passes the engine's limits.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;
  // True when the rendered text is to be encoded with add_special_tokens =
  // false: llama3 writes BOS itself, and a model template is tokenized as
  // transformers' apply_chat_template does (its own special tokens only).
  bool renders_bos() const { return kind_ == Kind::kLlama3 || kind_ == Kind::kModel; }

 private:
  ChatTemplate(Kind kind, ChatTemplateOptions options)
      : kind_(kind), options_(std::move(options)) {}

  Kind kind_;
  ChatTemplateOptions options_;
  // kModel only.
  std::shared_ptr<const jinja::Template> jinja_;
  jinja::ValueDict special_tokens_;
  std::string origin_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_TEXT_CHAT_TEMPLATE_H_
