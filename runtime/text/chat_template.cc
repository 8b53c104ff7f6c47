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

using Json = nlohmann::ordered_json;  // key order kept, as the template sees it

constexpr char kChatMlDefaultSystem[] = "You are a helpful assistant.";

absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

std::string_view Trim(std::string_view s) {
  const absl::string_view t = absl::StripAsciiWhitespace(AbslView(s));
  return {t.data(), t.size()};
}

bool KnownRole(std::string_view role) {
  return role == "system" || role == "user" || role == "assistant";
}

// A special token as tokenizer_config.json writes it: a string, or an
// AddedToken object ({"content": ..., "lstrip": ...}).
std::optional<std::string> TokenText(const Json& token) {
  if (token.is_string()) return token.get<std::string>();
  if (token.is_object()) {
    auto it = token.find("content");
    if (it != token.end() && it->is_string()) return it->get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> ChatTemplate::KnownNames() {
  return {"chatml", "llama3", "raw", "model"};
}

std::string_view ChatTemplate::name() const {
  switch (kind_) {
    case Kind::kChatMl:
      return "chatml";
    case Kind::kLlama3:
      return "llama3";
    case Kind::kRaw:
      return "raw";
    case Kind::kModel:
      return "model";
  }
  return "raw";
}

absl::StatusOr<ChatTemplate> ChatTemplate::ByName(std::string_view name,
                                                  ChatTemplateOptions options) {
  if (name == "chatml") return ChatTemplate(Kind::kChatMl, std::move(options));
  if (name == "llama3") return ChatTemplate(Kind::kLlama3, std::move(options));
  if (name == "raw") return ChatTemplate(Kind::kRaw, std::move(options));
  if (name == "model") {
    return absl::InvalidArgumentError(
        "chat template \"model\" is the model folder's own: select it with the folder");
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown chat template \"", AbslView(name),
                                                 "\"; known: ", absl::StrJoin(KnownNames(), ", ")));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromJinja(std::string_view source,
                                                     jinja::ValueDict special_tokens,
                                                     std::string origin,
                                                     ChatTemplateOptions options) {
  auto parsed = jinja::Template::Parse(AbslView(source));
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(), absl::StrCat(origin, ": chat_template: ",
                                                             parsed.status().message()));
  }
  ChatTemplate tmpl(Kind::kModel, std::move(options));
  tmpl.jinja_ = std::make_shared<const jinja::Template>(*std::move(parsed));
  tmpl.special_tokens_ = std::move(special_tokens);
  tmpl.origin_ = std::move(origin);
  return tmpl;
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
  if (it == config.end() || it->is_null()) return ChatTemplate(Kind::kRaw, std::move(options));
  jinja::ValueDict special_tokens;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    auto token = config.find(key);
    if (token == config.end()) continue;
    if (std::optional<std::string> text = TokenText(*token)) {
      special_tokens.emplace_back(key, jinja::Value(*std::move(text)));
    }
  }
  return FromJinja(jinja, std::move(special_tokens), path, std::move(options));
}

absl::StatusOr<ChatTemplate> ChatTemplate::Select(std::string_view flag,
                                                  const std::string& model_dir,
                                                  ChatTemplateOptions options) {
  if (flag.empty() || flag == "auto") return ForModelDir(model_dir, std::move(options));
  if (flag == "model") {
    absl::StatusOr<ChatTemplate> tmpl = ForModelDir(model_dir, std::move(options));
    if (tmpl.ok() && tmpl->kind() != Kind::kModel) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat template \"model\": ", model_dir,
          "/tokenizer_config.json has no chat_template; use chatml, llama3 or raw"));
    }
    return tmpl;
  }
  return ByName(flag, std::move(options));
}

absl::StatusOr<std::string> ChatTemplate::Apply(std::string_view question) const {
  const ChatMessage message{"user", std::string(question)};
  return Render(absl::MakeConstSpan(&message, 1), true);
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
    case Kind::kModel: {
      jinja::ValueList list;
      const auto add = [&list](std::string_view role, std::string_view content) {
        list.emplace_back(jinja::ValueDict{{"role", jinja::Value(std::string(role))},
                                           {"content", jinja::Value(std::string(content))}});
      };
      if (!has_system && options_.system_prompt.has_value() && !options_.system_prompt->empty()) {
        add("system", *options_.system_prompt);
      }
      for (const ChatMessage& m : messages) add(m.role, m.content);
      jinja::ValueDict context = special_tokens_;
      context.emplace_back("messages", jinja::Value(std::move(list)));
      context.emplace_back("add_generation_prompt", jinja::Value(add_generation_prompt));
      absl::StatusOr<std::string> text = jinja_->Render(context);
      if (!text.ok()) {
        return absl::Status(text.status().code(),
                            absl::StrCat(origin_, ": chat_template failed to render: ",
                                         text.status().message()));
      }
      return text;
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
