// Fuzzes chat templates: detection from a tokenizer_config.json template and
// rendering of arbitrary conversations. Input: a byte choosing the template
// and options, then '\0'-separated fields: the Jinja text to detect, the
// system prompt, the raw suffix, then (role byte, content) pairs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/text/chat_template.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using arbor::runtime::ChatMessage;
  using arbor::runtime::ChatTemplate;
  using arbor::runtime::ChatTemplateOptions;
  arbor::fuzz::Input input(data, size);
  const uint8_t choice = input.Byte();
  const std::string detected = ChatTemplate::DetectName(input.Field());
  const std::vector<std::string> names = ChatTemplate::KnownNames();
  bool known = false;
  for (const std::string& n : names) known |= n == detected;
  if (!known) arbor::fuzz::Fail("DetectName returned an unknown name");

  ChatTemplateOptions options;
  const std::string_view system = input.Field();
  if (choice & 0x10) options.system_prompt = std::string(system);
  options.raw_suffix = std::string(input.Field());
  const std::string name = (choice & 0x20) ? detected : names[choice % names.size()];
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::ByName(name, options);
  if (!tmpl.ok()) arbor::fuzz::Fail("ByName refused a known name");

  std::vector<ChatMessage> messages;
  static constexpr const char* kRoles[] = {"system", "user", "assistant", "tool", ""};
  while (!input.empty() && messages.size() < 64) {
    const uint8_t role = input.Byte();
    messages.push_back(ChatMessage{kRoles[role % 5], std::string(input.Field())});
  }
  const std::string prompt = tmpl->Apply(messages.empty() ? "" : messages.back().content);
  (void)prompt;
  absl::StatusOr<std::string> rendered = tmpl->Render(messages, (choice & 0x40) != 0);
  if (messages.empty() && rendered.ok()) arbor::fuzz::Fail("an empty conversation rendered");
  return 0;
}
