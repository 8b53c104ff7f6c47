#include "runtime/text/chat_template.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime {
namespace {

using ::testing::HasSubstr;

std::string SourceDir() {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}
std::string Golden(const std::string& name) {
  return SourceDir() + "/tests/fixtures/golden/" + name;
}

// A scratch model folder holding only a tokenizer_config.json.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& config_text) {
    path_ = std::filesystem::temp_directory_path() /
            ("chat_template_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
    std::ofstream(path_ / "tokenizer_config.json") << config_text;
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

TEST(ChatTemplateTest, ChatMlMatchesQwenFormat) {
  auto tmpl = ChatTemplate::ByName("chatml");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(tmpl->kind(), ChatTemplate::Kind::kChatMl);
  EXPECT_EQ(*tmpl->Apply("What is 2+2?"),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  ChatTemplateOptions math;
  math.system_prompt = "Please reason step by step.";
  EXPECT_EQ(*ChatTemplate::ByName("chatml", math)->Apply("Q"),
            "<|im_start|>system\nPlease reason step by step.<|im_end|>\n"
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
  ChatTemplateOptions none;
  none.system_prompt = "";
  EXPECT_EQ(*ChatTemplate::ByName("chatml", none)->Apply("Q"),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_FALSE(tmpl->renders_bos());
}

TEST(ChatTemplateTest, Llama3MatchesMetaFormat) {
  auto tmpl = ChatTemplate::ByName("llama3");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(*tmpl->Apply("  What is 2+2?\n"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  ChatTemplateOptions sys;
  sys.system_prompt = "Be brief.";
  EXPECT_EQ(*ChatTemplate::ByName("llama3", sys)->Apply("Q"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_TRUE(tmpl->renders_bos());
}

TEST(ChatTemplateTest, RawKeepsQuestionAndAddsSuffix) {
  EXPECT_EQ(*ChatTemplate::ByName("raw")->Apply("Question: 1+1?"), "Question: 1+1?");
  ChatTemplateOptions options;
  options.raw_suffix = "\nAnswer:";
  EXPECT_EQ(*ChatTemplate::ByName("raw", options)->Apply("Q"), "Q\nAnswer:");
}

TEST(ChatTemplateTest, RenderConversation) {
  const std::vector<ChatMessage> messages = {
      {"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}};
  EXPECT_EQ(*ChatTemplate::ByName("chatml")->Render(messages, /*add_generation_prompt=*/false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
            "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n");
  EXPECT_EQ(*ChatTemplate::ByName("llama3")->Render(messages, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(*ChatTemplate::ByName("raw")->Render(messages, true), "S\n\nU1\n\nA1\n\nU2");

  auto bad = ChatTemplate::ByName("chatml")->Render({{"tool", "x"}}, true);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("messages[0].role \"tool\""));
  EXPECT_FALSE(ChatTemplate::ByName("raw")->Render({}, true).ok());
}

TEST(ChatTemplateTest, UnknownNameListsKnownOnes) {
  auto tmpl = ChatTemplate::ByName("vicuna");
  ASSERT_FALSE(tmpl.ok());
  EXPECT_EQ(tmpl.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tmpl.status().message(), HasSubstr("\"vicuna\""));
  EXPECT_THAT(tmpl.status().message(), HasSubstr("chatml, llama3, raw, model"));
  for (const std::string& name : ChatTemplate::KnownNames()) {
    if (name != "model") EXPECT_EQ(ChatTemplate::ByName(name)->name(), name);
  }
}

TEST(ChatTemplateTest, DefaultFromModelFolderIsItsOwnTemplate) {
  auto llama = ChatTemplate::ForModelDir(Golden("llama"));
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->name(), "model");
  EXPECT_EQ(*llama->Apply(" Hi "),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  auto qwen = ChatTemplate::ForModelDir(Golden("qwen2"));
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->name(), "model");
  EXPECT_EQ(*qwen->Apply("Q"), "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::ForModelDir("/nonexistent/model")->name(), "raw");
  ScratchDir none(R"({"eos_token": "</s>"})");
  EXPECT_EQ(ChatTemplate::ForModelDir(none.path())->name(), "raw");

  // The list form: the "default" entry, else the first.
  ScratchDir listed(R"({"chat_template": [{"name": "tool_use", "template": "tools {{ messages|length }}"},
                                          {"name": "default", "template": "default {{ messages[0].content }}"}]})");
  EXPECT_EQ(*ChatTemplate::ForModelDir(listed.path())->Apply("Q"), "default Q");
  ScratchDir first(R"({"chat_template": [{"name": "rag", "template": "rag {{ messages[0].content }}"}]})");
  EXPECT_EQ(*ChatTemplate::ForModelDir(first.path())->Apply("Q"), "rag Q");

  // Special tokens reach the template, AddedToken objects by their content.
  ScratchDir tokens(R"({"chat_template": "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ pad_token is defined }}",
                        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
                        "eos_token": "</s>", "pad_token": null})");
  EXPECT_EQ(*ChatTemplate::ForModelDir(tokens.path())->Apply("Q"), "<s>|</s>|True|False");

  ScratchDir broken("{\"chat_template\": ");
  auto bad = ChatTemplate::ForModelDir(broken.path());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("not valid JSON"));
  ScratchDir wrong_type(R"({"chat_template": 7})");
  EXPECT_FALSE(ChatTemplate::ForModelDir(wrong_type.path()).ok());

  EXPECT_EQ(ChatTemplate::Select("auto", Golden("qwen2"))->name(), "model");
  EXPECT_EQ(ChatTemplate::Select("", Golden("llama"))->name(), "model");
  EXPECT_EQ(ChatTemplate::Select("model", Golden("llama"))->name(), "model");
  EXPECT_EQ(ChatTemplate::Select("raw", Golden("llama"))->name(), "raw");
  EXPECT_EQ(ChatTemplate::Select("chatml", Golden("llama"))->name(), "chatml");
  EXPECT_FALSE(ChatTemplate::Select("nope", Golden("llama")).ok());
  auto no_own = ChatTemplate::Select("model", none.path());
  EXPECT_EQ(no_own.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_own.status().message(), HasSubstr("has no chat_template"));
  EXPECT_FALSE(ChatTemplate::ByName("model").ok());  // needs the folder
}

TEST(ChatTemplateTest, ModelTemplateErrorsNameTheFileAndNeverFallBack) {
  ScratchDir syntax(R"({"chat_template": "{% for m in messages %}\n{{ m.content }"})");
  auto bad = ChatTemplate::ForModelDir(syntax.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr(syntax.path() + "/tokenizer_config.json: chat_template: line 2"));

  ScratchDir raises(R"({"chat_template": "{% if messages[0].role != 'system' %}{{ raise_exception('a system message is required') }}{% endif %}ok"})");
  auto tmpl = ChatTemplate::ForModelDir(raises.path());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();  // parses; fails per conversation
  auto text = tmpl->Apply("Q");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr(raises.path() + "/tokenizer_config.json"));
  EXPECT_THAT(text.status().message(), HasSubstr("a system message is required"));
  EXPECT_THAT(text.status().message(), HasSubstr("line 1, column"));
  const std::vector<ChatMessage> with_system = {{"system", "S"}, {"user", "U"}};
  EXPECT_EQ(*tmpl->Render(with_system, true), "ok");

  ScratchDir unsupported(R"({"chat_template": "{% include 'other.jinja' %}"})");
  auto include = ChatTemplate::ForModelDir(unsupported.path());
  ASSERT_FALSE(include.ok());
  EXPECT_THAT(include.status().message(), HasSubstr("unsupported statement 'include'"));
}

TEST(ChatTemplateTest, ModelTemplateSystemPromptOption) {
  ScratchDir dir(R"({"chat_template": "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"})");
  ChatTemplateOptions sys;
  sys.system_prompt = "Be brief.";
  EXPECT_EQ(*ChatTemplate::ForModelDir(dir.path(), sys)->Apply("Q"), "[system:Be brief.][user:Q]");
  ChatTemplateOptions none;
  none.system_prompt = "";
  EXPECT_EQ(*ChatTemplate::ForModelDir(dir.path(), none)->Apply("Q"), "[user:Q]");
  const std::vector<ChatMessage> own = {{"system", "Mine."}, {"user", "Q"}};
  EXPECT_EQ(*ChatTemplate::ForModelDir(dir.path(), sys)->Render(own, false), "[system:Mine.][user:Q]");
}

// The templates' markers are single special tokens of the models' tokenizers.
TEST(ChatTemplateTest, PromptsEncodeWithSpecialTokens) {
  auto qwen = Tokenizer::FromModelDir(Golden("qwen2"));
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  auto chatml = ChatTemplate::ByName("chatml");
  const std::string prompt = *chatml->Apply("What is 2+2?");
  auto ids = (*qwen)->Encode(prompt, !chatml->renders_bos());
  ASSERT_TRUE(ids.ok()) << ids.status();
  const int32_t im_start = *(*qwen)->TokenToId("<|im_start|>");
  EXPECT_EQ(std::count(ids->begin(), ids->end(), im_start), 3);
  EXPECT_EQ(ids->front(), im_start);
  EXPECT_EQ((*qwen)->Decode(*ids), prompt);

  auto llama = Tokenizer::FromModelDir(Golden("llama"));
  ASSERT_TRUE(llama.ok()) << llama.status();
  auto llama3 = ChatTemplate::ForModelDir(Golden("llama"));  // the model's own: writes BOS
  ASSERT_EQ(llama3->kind(), ChatTemplate::Kind::kModel);
  auto llama_ids = (*llama)->Encode(*llama3->Apply("Hi"), !llama3->renders_bos());
  ASSERT_TRUE(llama_ids.ok());
  const int32_t bos = *(*llama)->bos_id();
  EXPECT_EQ(llama_ids->front(), bos);
  EXPECT_EQ(std::count(llama_ids->begin(), llama_ids->end(), bos), 1);  // not doubled
  EXPECT_EQ(
      std::count(llama_ids->begin(), llama_ids->end(), *(*llama)->TokenToId("<|start_header_id|>")),
      2);
}

}  // namespace
}  // namespace arbor::runtime
