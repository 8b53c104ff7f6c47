// Fuzzes tokenizer.json parsing: the input is the file's text (optionally a
// tokenizer_config.json after a '\0'). Whatever parses must encode and
// decode a few texts without crashing, and its ids stay in the vocabulary.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "runtime/text/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using arbor::runtime::Tokenizer;
  arbor::fuzz::Input input(data, size);
  const std::string_view json = input.Field();
  const std::string_view config = input.Rest();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(json, config);
  if (!tok.ok()) return 0;
  const int32_t vocab = (*tok)->vocab_size();
  for (std::string_view text :
       {"", "Hello world", "  12 + 34 = 46\n\n", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac",
        "<|im_start|>user<|im_end|>", "<s></s>"}) {
    for (bool special : {false, true}) {
      absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text, special);
      if (!ids.ok()) continue;
      for (int32_t id : *ids) {
        if (id < 0 || id >= vocab)
          arbor::fuzz::Fail("Encode returned an id outside the vocabulary");
      }
      (void)(*tok)->Decode(*ids, /*skip_special_tokens=*/false);
      (void)(*tok)->Decode(*ids, /*skip_special_tokens=*/true);
    }
  }
  std::vector<int32_t> all;
  for (int32_t id = -2; id < vocab + 2 && id < 512; ++id) all.push_back(id);
  (void)(*tok)->Decode(all);
  return 0;
}
