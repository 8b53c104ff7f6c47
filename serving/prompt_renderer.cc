#include "serving/prompt_renderer.h"

#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "nlohmann/json.hpp"
#include "runtime/text/chat_template.h"

namespace arbor::serving {

namespace {

// Whether the model's own Jinja template writes a system turn when the
// conversation has none (Qwen2.5's does: "<|im_start|>system\nYou are ...").
// A template that only renders the given messages (as the bundled reference
// models', trained without a system turn) does not, and neither should we.
bool TemplateAddsDefaultSystem(const std::string& model_dir) {
  std::ifstream in(model_dir + "/tokenizer_config.json", std::ios::binary);
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json config = nlohmann::json::parse(text.str(), nullptr, false);
  if (!config.is_object()) return false;
  auto it = config.find("chat_template");
  if (it == config.end()) return false;
  const std::string jinja = it->is_string() ? it->get<std::string>() : it->dump();
  return jinja.find("<|im_start|>system") != std::string::npos ||
         jinja.find("<|start_header_id|>system") != std::string::npos;
}

}  // namespace

absl::StatusOr<PromptRendering> MakePromptRenderer(const std::string& model_dir) {
  runtime::ChatTemplateOptions options;
  if (!TemplateAddsDefaultSystem(model_dir)) options.system_prompt = "";
  auto model_template = runtime::ChatTemplate::ForModelDir(model_dir, options);
  if (!model_template.ok()) return model_template.status();
  PromptRendering rendering;
  rendering.default_template = std::string(model_template->name());
  rendering.render = [options](absl::string_view name,
                               absl::string_view question) -> absl::StatusOr<RenderedPrompt> {
    auto chat = runtime::ChatTemplate::ByName(std::string_view(name.data(), name.size()), options);
    if (!chat.ok()) return chat.status();
    return RenderedPrompt{chat->Apply(std::string_view(question.data(), question.size())),
                          /*add_special_tokens=*/!chat->renders_bos()};
  };
  return rendering;
}

}  // namespace arbor::serving
