// The chat templates a served model offers to prompt_text requests (and to
// reward models whose prm_config.json names one), over worker/chat_template.h.
// Thread-safety: the returned renderer is immutable and thread-safe.
#ifndef ARBOR_WORKER_SERVER_PROMPT_RENDERER_H_
#define ARBOR_WORKER_SERVER_PROMPT_RENDERER_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/server/generator_service.h"

namespace arbor::worker::server {

struct PromptRendering {
  // (template name, question) -> the prompt text: one user message plus the
  // assistant generation prompt. Unknown names are INVALID_ARGUMENT.
  PromptRenderer render;
  // The model's own template (from its tokenizer_config.json), else "chatml".
  std::string default_template;
};

absl::StatusOr<PromptRendering> MakePromptRenderer(const std::string& model_dir);

}  // namespace arbor::worker::server

#endif  // ARBOR_WORKER_SERVER_PROMPT_RENDERER_H_
