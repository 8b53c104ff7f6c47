// Parity with the reference: tests/fixtures/chat_templates/<model>/ holds a
// real model's tokenizer_config.json and expected.json, the outputs (or
// errors) of @huggingface/jinja for every conversation of conversations.json,
// written by tools/chat_template_fixtures/render_expected.cjs. Arbor's engine
// must match them byte for byte, both called directly (with tools and tool
// calls in the context) and through ChatTemplate::ForModelDir.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/chat_template.h"
#include "runtime/text/jinja/template.h"

namespace arbor::runtime {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;

std::string FixtureRoot() {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  return std::string(dir != nullptr ? dir : ".") + "/tests/fixtures/chat_templates";
}

Json ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return Json::parse(text.str());
}

std::vector<std::string> ModelNames() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(FixtureRoot())) {
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(ChatTemplateParityTest, CoversTheCommonModelFamilies) {
  const std::vector<std::string> names = ModelNames();
  for (const char* family : {"llama3", "llama3_1_instruct", "qwen2", "qwen2_5", "qwen3",
                             "mistral_instruct_v0_2", "phi3", "gemma3", "deepseek_v3"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), family), names.end()) << family;
  }
}

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, MatchesHuggingFaceJinja) {
  const std::string dir = FixtureRoot() + "/" + GetParam();
  const Json config = ReadJson(dir + "/tokenizer_config.json");
  const Json expected = ReadJson(dir + "/expected.json");
  Json conversations;
  for (const Json& c : ReadJson(FixtureRoot() + "/conversations.json")) {
    conversations[c["name"].get<std::string>()] = c;
  }
  auto engine = jinja::Template::Parse(config["chat_template"].get<std::string>());
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto chat = ChatTemplate::ForModelDir(dir);
  ASSERT_TRUE(chat.ok()) << chat.status();
  ASSERT_EQ(chat->kind(), ChatTemplate::Kind::kModel);

  int compared = 0, through_chat_template = 0;
  for (const Json& c : expected["cases"]) {
    const std::string name = c["conversation"].get<std::string>();
    const bool add_generation_prompt = c["add_generation_prompt"].get<bool>();
    SCOPED_TRACE(name + (add_generation_prompt ? " +generation prompt" : ""));
    const Json& conversation = conversations[name];
    Json context = {{"messages", conversation["messages"]},
                    {"add_generation_prompt", add_generation_prompt}};
    if (conversation.contains("tools")) context["tools"] = conversation["tools"];
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
      if (!config.contains(key)) continue;
      const Json& token = config[key];
      if (token.is_string()) context[key] = token;
      if (token.is_object() && token.contains("content")) context[key] = token["content"];
    }
    absl::StatusOr<std::string> out = engine->RenderJson(context);
    if (c.contains("error")) {
      ASSERT_FALSE(out.ok()) << "rendered where the reference failed: " << *out;
      EXPECT_THAT(std::string(out.status().message()), HasSubstr(c["error"].get<std::string>()));
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, c["output"].get<std::string>());
    }
    ++compared;

    // The same through ChatTemplate where the messages are plain role/content.
    std::vector<ChatMessage> messages;
    bool plain = !conversation.contains("tools");
    for (const Json& m : conversation["messages"]) {
      plain = plain && m.size() == 2 && m["content"].is_string();
      if (plain) messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    if (!plain) continue;
    absl::StatusOr<std::string> rendered = chat->Render(messages, add_generation_prompt);
    if (c.contains("error")) {
      ASSERT_FALSE(rendered.ok());
      EXPECT_THAT(std::string(rendered.status().message()), HasSubstr(dir + "/tokenizer_config.json"));
      EXPECT_THAT(std::string(rendered.status().message()), HasSubstr(c["error"].get<std::string>()));
    } else {
      ASSERT_TRUE(rendered.ok()) << rendered.status();
      EXPECT_EQ(*rendered, c["output"].get<std::string>());
    }
    ++through_chat_template;
  }
  EXPECT_GE(compared, 12);
  EXPECT_GE(through_chat_template, 10);
}

INSTANTIATE_TEST_SUITE_P(Models, ParityTest, ::testing::ValuesIn(ModelNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace arbor::runtime
