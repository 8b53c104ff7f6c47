#include "serving/prompt_renderer.h"

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/text/chat_template.h"

namespace arbor::serving {

namespace {

// Whether the named chatml/llama3 overrides write their default system turn:
// when the model's own template has one (Qwen2.5's: "<|im_start|>system\nYou
// are ..."). A template that only renders the given messages (as the bundled
// reference models', trained without a system turn) does not, and neither
// should the overrides. The model's own template needs no such guess.
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
  auto own = std::make_shared<const runtime::ChatTemplate>(*std::move(model_template));
  rendering.render = [options, own, model_dir](
                         absl::string_view name,
                         absl::string_view question) -> absl::StatusOr<RenderedPrompt> {
    absl::StatusOr<runtime::ChatTemplate> named;
    const runtime::ChatTemplate* chat = own.get();
    if (name != "model" || own->kind() != runtime::ChatTemplate::Kind::kModel) {
      if (name == "model") {
        return absl::InvalidArgumentError(absl::StrCat(
            "chat template \"model\": ", model_dir,
            "/tokenizer_config.json has no chat_template; use chatml, llama3 or raw"));
      }
      named = runtime::ChatTemplate::ByName(std::string_view(name.data(), name.size()), options);
      if (!named.ok()) return named.status();
      chat = &*named;
    }
    auto text = chat->Apply(std::string_view(question.data(), question.size()));
    if (!text.ok()) return text.status();
    return RenderedPrompt{*std::move(text), /*add_special_tokens=*/!chat->renders_bos()};
  };
  return rendering;
}

}  // namespace arbor::serving
