#include "runtime/text/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace arbor::runtime {
namespace {

using Json = nlohmann::json;

constexpr char kChatMlDefaultSystem[] = "You are a helpful assistant.";

absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

std::string_view Trim(std::string_view s) {
  const absl::string_view t = absl::StripAsciiWhitespace(AbslView(s));
  return {t.data(), t.size()};
}

bool KnownRole(std::string_view role) {
  return role == "system" || role == "user" || role == "assistant";
}

}  // namespace

std::vector<std::string> ChatTemplate::KnownNames() { return {"chatml", "llama3", "raw"}; }

std::string_view ChatTemplate::name() const {
  switch (kind_) {
    case Kind::kChatMl:
      return "chatml";
    case Kind::kLlama3:
      return "llama3";
    case Kind::kRaw:
      return "raw";
  }
  return "raw";
}

absl::StatusOr<ChatTemplate> ChatTemplate::ByName(std::string_view name,
                                                  ChatTemplateOptions options) {
  if (name == "chatml") return ChatTemplate(Kind::kChatMl, std::move(options));
  if (name == "llama3") return ChatTemplate(Kind::kLlama3, std::move(options));
  if (name == "raw") return ChatTemplate(Kind::kRaw, std::move(options));
  return absl::InvalidArgumentError(absl::StrCat("unknown chat template \"", AbslView(name),
                                                 "\"; known: ", absl::StrJoin(KnownNames(), ", ")));
}

std::string ChatTemplate::DetectName(std::string_view jinja_template) {
  if (jinja_template.find("<|im_start|>") != std::string_view::npos) return "chatml";
  if (jinja_template.find("<|start_header_id|>") != std::string_view::npos) return "llama3";
  return "raw";
}

absl::StatusOr<ChatTemplate> ChatTemplate::ForModelDir(const std::string& model_dir,
                                                       ChatTemplateOptions options) {
  const std::string path = model_dir + "/tokenizer_config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return ChatTemplate(Kind::kRaw, std::move(options));
  std::ostringstream text;
  text << in.rdbuf();
  Json config;
  try {
    config = Json::parse(text.str());
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
  if (!config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": must be a JSON object"));
  }
  std::string jinja;
  auto it = config.find("chat_template");
  if (it != config.end() && it->is_string()) {
    jinja = it->get<std::string>();
  } else if (it != config.end() && it->is_array()) {
    // [{"name": ..., "template": ...}]: the "default" entry, else the first.
    for (const Json& entry : *it) {
      if (!entry.is_object() || !entry.contains("template") || !entry["template"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": chat_template entries need a string \"template\""));
      }
      if (jinja.empty() || entry.value("name", "") == "default") {
        jinja = entry["template"].get<std::string>();
      }
    }
  } else if (it != config.end() && !it->is_null()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": chat_template must be a string or a list of templates"));
  }
  return ByName(DetectName(jinja), std::move(options));
}

absl::StatusOr<ChatTemplate> ChatTemplate::Select(std::string_view flag,
                                                  const std::string& model_dir,
                                                  ChatTemplateOptions options) {
  if (flag.empty() || flag == "auto") return ForModelDir(model_dir, std::move(options));
  return ByName(flag, std::move(options));
}

std::string ChatTemplate::Apply(std::string_view question) const {
  const ChatMessage message{"user", std::string(question)};
  absl::StatusOr<std::string> text = Render(absl::MakeConstSpan(&message, 1), true);
  return text.ok() ? *std::move(text) : std::string(question);  // a user turn always renders
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  if (messages.empty()) return absl::InvalidArgumentError("chat template: no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!KnownRole(messages[i].role)) {
      return absl::InvalidArgumentError(absl::StrCat("chat template: messages[", i, "].role \"",
                                                     messages[i].role,
                                                     "\" is not system, user or assistant"));
    }
  }
  const bool has_system = messages[0].role == "system";
  std::string out;
  switch (kind_) {
    case Kind::kChatMl: {
      if (!has_system) {
        const std::string system = options_.system_prompt.value_or(kChatMlDefaultSystem);
        if (!system.empty()) absl::StrAppend(&out, "<|im_start|>system\n", system, "<|im_end|>\n");
      }
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    }
    case Kind::kLlama3: {
      out = "<|begin_of_text|>";
      const auto turn = [&out](std::string_view role, std::string_view content) {
        absl::StrAppend(&out, "<|start_header_id|>", AbslView(role), "<|end_header_id|>\n\n",
                        AbslView(Trim(content)), "<|eot_id|>");
      };
      if (!has_system && options_.system_prompt.has_value() && !options_.system_prompt->empty()) {
        turn("system", *options_.system_prompt);
      }
      for (const ChatMessage& m : messages) turn(m.role, m.content);
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    }
    case Kind::kRaw: {
      for (const ChatMessage& m : messages) {
        if (!out.empty()) out += "\n\n";
        out += m.content;
      }
      if (add_generation_prompt) out += options_.raw_suffix;
      return out;
    }
  }
  return out;
}

}  // namespace arbor::runtime
