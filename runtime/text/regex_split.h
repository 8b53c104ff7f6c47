// Internal to the tokenizer: Split pre-tokenizers (behavior "Isolated") whose
// Oniguruma regexes, as tokenizer.json writes them, run on RE2.
//
// Contract: FromOniguruma translates the regex (Unicode \s \S \d \w \D \W,
// possessive quantifiers and atomic groups as greedy ones) and emulates the
// one look-ahead alternative `\s+(?!\S)` exactly; any other look-around, or
// what RE2 rejects, is an INVALID_ARGUMENT. Split cuts text into the regex's
// matches and the gaps between them, as `tokenizers` does.
//
// Thread-safety: a RegexSplitter is immutable once built; Split may be called
// from any thread.
#ifndef ARBOR_RUNTIME_TEXT_REGEX_SPLIT_H_
#define ARBOR_RUNTIME_TEXT_REGEX_SPLIT_H_

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace arbor::runtime::tokenizer_internal {

// The GPT-2 regex a ByteLevel pre-tokenizer with use_regex applies.
inline constexpr char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class RegexSplitter {
 public:
  // `pattern` in Oniguruma syntax (a Split pre-tokenizer's {"Regex": ...}).
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> FromOniguruma(std::string_view pattern);
  // `literal` matched as is (a Split pre-tokenizer's {"String": ...}).
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> FromLiteral(std::string_view literal);
  ~RegexSplitter();

  // Appends the non-empty pieces of `text` (valid UTF-8) to `out`; they view
  // `text`.
  void Split(std::string_view text, std::vector<std::string_view>* out) const;

 private:
  RegexSplitter();

  std::unique_ptr<re2::RE2> full_;
  bool lookahead_ = false;
  std::unique_ptr<re2::RE2> head_;  // alternatives before \s+(?!\S); null when none
  std::unique_ptr<re2::RE2> tail_;  // alternatives after it; null when none
};

}  // namespace arbor::runtime::tokenizer_internal

#endif  // ARBOR_RUNTIME_TEXT_REGEX_SPLIT_H_
