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

// A question rendered by a chat template, and how to tokenize it: the model's
// own template ("model", as transformers' apply_chat_template) and one that
// writes its own BOS (llama3) are encoded without the tokenizer's special
// tokens, the others with them (a no-op for Qwen2-style tokenizers).
struct RenderedPrompt {
  std::string text;
  bool add_special_tokens = false;
};

// Renders a question as the prompt of the named chat template (one user
// message plus the assistant generation prompt): "model" (the folder's own
// Jinja template), "chatml", "llama3" or "raw". An unknown name, "model" for a
// folder without a chat_template, and a model template that fails to render
// are INVALID_ARGUMENT naming the cause.
using PromptRenderer = std::function<absl::StatusOr<RenderedPrompt>(absl::string_view template_name,
                                                                    absl::string_view question)>;

struct PromptRendering {
  // (template name, question) -> the prompt text: one user message plus the
  // assistant generation prompt. Unknown names are INVALID_ARGUMENT.
  PromptRenderer render;
  // "model" when tokenizer_config.json has a chat_template, else "raw".
  std::string default_template;
};

absl::StatusOr<PromptRendering> MakePromptRenderer(const std::string& model_dir);

}  // namespace arbor::serving

#endif  // ARBOR_SERVING_PROMPT_RENDERER_H_
