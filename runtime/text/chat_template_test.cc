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
  EXPECT_EQ(tmpl->Apply("What is 2+2?"),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  ChatTemplateOptions math;
  math.system_prompt = "Please reason step by step.";
  EXPECT_EQ(ChatTemplate::ByName("chatml", math)->Apply("Q"),
            "<|im_start|>system\nPlease reason step by step.<|im_end|>\n"
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
  ChatTemplateOptions none;
  none.system_prompt = "";
  EXPECT_EQ(ChatTemplate::ByName("chatml", none)->Apply("Q"),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_FALSE(tmpl->renders_bos());
}

TEST(ChatTemplateTest, Llama3MatchesMetaFormat) {
  auto tmpl = ChatTemplate::ByName("llama3");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(tmpl->Apply("  What is 2+2?\n"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  ChatTemplateOptions sys;
  sys.system_prompt = "Be brief.";
  EXPECT_EQ(ChatTemplate::ByName("llama3", sys)->Apply("Q"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_TRUE(tmpl->renders_bos());
}

TEST(ChatTemplateTest, RawKeepsQuestionAndAddsSuffix) {
  EXPECT_EQ(ChatTemplate::ByName("raw")->Apply("Question: 1+1?"), "Question: 1+1?");
  ChatTemplateOptions options;
  options.raw_suffix = "\nAnswer:";
  EXPECT_EQ(ChatTemplate::ByName("raw", options)->Apply("Q"), "Q\nAnswer:");
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
  EXPECT_THAT(tmpl.status().message(), HasSubstr("chatml, llama3, raw"));
  for (const std::string& name : ChatTemplate::KnownNames()) {
    EXPECT_EQ(ChatTemplate::ByName(name)->name(), name);
  }
}

TEST(ChatTemplateTest, DefaultFromModelFolder) {
  EXPECT_EQ(ChatTemplate::DetectName("{% for m in messages %}<|im_start|>..."), "chatml");
  EXPECT_EQ(ChatTemplate::DetectName("{{ '<|start_header_id|>' + role }}"), "llama3");
  EXPECT_EQ(ChatTemplate::DetectName("{{ bos_token }}[INST]"), "raw");

  EXPECT_EQ(ChatTemplate::ForModelDir(Golden("llama"))->name(), "llama3");
  EXPECT_EQ(ChatTemplate::ForModelDir(Golden("qwen2"))->name(), "chatml");
  EXPECT_EQ(ChatTemplate::ForModelDir("/nonexistent/model")->name(), "raw");

  ScratchDir listed(R"({"chat_template": [{"name": "tool_use", "template": "x"},
                                          {"name": "default", "template": "<|im_start|>"}]})");
  EXPECT_EQ(ChatTemplate::ForModelDir(listed.path())->name(), "chatml");
  ScratchDir none(R"({"eos_token": "</s>"})");
  EXPECT_EQ(ChatTemplate::ForModelDir(none.path())->name(), "raw");

  ScratchDir broken("{\"chat_template\": ");
  auto bad = ChatTemplate::ForModelDir(broken.path());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("not valid JSON"));
  ScratchDir wrong_type(R"({"chat_template": 7})");
  EXPECT_FALSE(ChatTemplate::ForModelDir(wrong_type.path()).ok());

  EXPECT_EQ(ChatTemplate::Select("auto", Golden("qwen2"))->name(), "chatml");
  EXPECT_EQ(ChatTemplate::Select("", Golden("llama"))->name(), "llama3");
  EXPECT_EQ(ChatTemplate::Select("raw", Golden("llama"))->name(), "raw");
  EXPECT_FALSE(ChatTemplate::Select("nope", Golden("llama")).ok());
}

// The templates' markers are single special tokens of the models' tokenizers.
TEST(ChatTemplateTest, PromptsEncodeWithSpecialTokens) {
  auto qwen = Tokenizer::FromModelDir(Golden("qwen2"));
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  auto chatml = ChatTemplate::ForModelDir(Golden("qwen2"));
  const std::string prompt = chatml->Apply("What is 2+2?");
  auto ids = (*qwen)->Encode(prompt, !chatml->renders_bos());
  ASSERT_TRUE(ids.ok()) << ids.status();
  const int32_t im_start = *(*qwen)->TokenToId("<|im_start|>");
  EXPECT_EQ(std::count(ids->begin(), ids->end(), im_start), 3);
  EXPECT_EQ(ids->front(), im_start);
  EXPECT_EQ((*qwen)->Decode(*ids), prompt);

  auto llama = Tokenizer::FromModelDir(Golden("llama"));
  ASSERT_TRUE(llama.ok()) << llama.status();
  auto llama3 = ChatTemplate::ForModelDir(Golden("llama"));
  auto llama_ids = (*llama)->Encode(llama3->Apply("Hi"), !llama3->renders_bos());
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
