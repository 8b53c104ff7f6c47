// Fuzzes answer extraction and normalisation (what voting compares). Input:
// a byte of options, an RE2 pattern up to the first '\0' (empty: the built-in
// chain), then the solution text. Normalising is idempotent on what it
// returns, and extraction never crashes whatever the pattern.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "search/answer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using arbor::search::AnswerExtractor;
  arbor::fuzz::Input input(data, size);
  const uint8_t options = input.Byte();
  const std::string_view pattern = input.Field();
  const std::string_view text = input.Rest();

  (void)arbor::search::ExtractBoxed(text);
  const std::string once = arbor::search::NormalizeAnswer(text);
  (void)arbor::search::NormalizeAnswer(once);

  static const std::unique_ptr<AnswerExtractor> builtin = *AnswerExtractor::Create("");
  (void)builtin->Extract(text, /*finished=*/(options & 1) != 0);
  if (!pattern.empty() && pattern.size() < 256) {
    absl::StatusOr<std::unique_ptr<AnswerExtractor>> user = AnswerExtractor::Create(pattern);
    if (user.ok()) (void)(*user)->Extract(text, (options & 2) != 0);
  }
  return 0;
}
