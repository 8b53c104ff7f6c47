// The chat templates a served model offers to prompt_text requests (and to
// reward models whose prm_config.json names one), over runtime/text/chat_template.h.
// Thread-safety: the returned renderer is immutable and thread-safe.
#ifndef ARBOR_SERVING_PROMPT_RENDERER_H_
#define ARBOR_SERVING_PROMPT_RENDERER_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbor::serving {

// A question rendered by a chat template, and how to tokenize it: a template
// that writes its own BOS (llama3) must be encoded without the tokenizer's
// special tokens, the others with them (a no-op for Qwen2-style tokenizers).
struct RenderedPrompt {
  std::string text;
  bool add_special_tokens = false;
};

// Renders a question as the prompt of the named chat template (one user
// message plus the assistant generation prompt); an unknown name is
// INVALID_ARGUMENT.
using PromptRenderer = std::function<absl::StatusOr<RenderedPrompt>(absl::string_view template_name,
                                                                    absl::string_view question)>;

struct PromptRendering {
  // (template name, question) -> the prompt text: one user message plus the
  // assistant generation prompt. Unknown names are INVALID_ARGUMENT.
  PromptRenderer render;
  // The model's own template (from its tokenizer_config.json), else "chatml".
  std::string default_template;
};

absl::StatusOr<PromptRendering> MakePromptRenderer(const std::string& model_dir);

}  // namespace arbor::serving

#endif  // ARBOR_SERVING_PROMPT_RENDERER_H_
