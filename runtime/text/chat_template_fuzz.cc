// Fuzzes chat templates: a model's own Jinja template (parsed and rendered
// within the engine's limits, any error a Status) and the named ones, over
// arbitrary conversations. Input: a byte choosing the template and options,
// then '\0'-separated fields: the Jinja source, the system prompt, the raw
// suffix, then (role byte, content) pairs.
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
  const std::string_view source = input.Field();

  ChatTemplateOptions options;
  const std::string_view system = input.Field();
  if (choice & 0x10) options.system_prompt = std::string(system);
  options.raw_suffix = std::string(input.Field());
  absl::StatusOr<ChatTemplate> tmpl;
  if (choice & 0x20) {
    tmpl = ChatTemplate::FromJinja(source, {{"bos_token", "<s>"}, {"eos_token", "</s>"}},
                                   "fuzz", options);
    if (!tmpl.ok()) return 0;  // a template that does not parse is an error, not a crash
  } else {
    static const char* kNames[] = {"chatml", "llama3", "raw"};
    tmpl = ChatTemplate::ByName(kNames[choice % 3], options);
    if (!tmpl.ok()) arbor::fuzz::Fail("ByName refused a named template");
  }

  std::vector<ChatMessage> messages;
  static constexpr const char* kRoles[] = {"system", "user", "assistant", "tool", ""};
  while (!input.empty() && messages.size() < 64) {
    const uint8_t role = input.Byte();
    messages.push_back(ChatMessage{kRoles[role % 5], std::string(input.Field())});
  }
  absl::StatusOr<std::string> prompt =
      tmpl->Apply(messages.empty() ? "" : messages.back().content);
  if (!(choice & 0x20) && !prompt.ok()) arbor::fuzz::Fail("a named template failed Apply");
  absl::StatusOr<std::string> rendered = tmpl->Render(messages, (choice & 0x40) != 0);
  if (messages.empty() && rendered.ok()) arbor::fuzz::Fail("an empty conversation rendered");
  return 0;
}
