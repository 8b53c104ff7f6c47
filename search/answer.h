// Answer extraction and normalisation for voting (arbor.v1.AnswerExtraction).
//
// Built-in chain, first hit wins: the last \boxed{...} (nested braces kept
// balanced), the last "The answer is ...", the last "#### ...", then (for a
// finished solution) the last number. A user pattern replaces the chain: RE2, the first capture
// group of the LAST match in the text is the answer (answers come at the end). Normalisation makes
// equal answers compare equal: see NormalizeAnswer. Thread-safety: AnswerExtractor is immutable
// after Create; Extract is const and thread-safe.
#ifndef ARBOR_SEARCH_ANSWER_H_
#define ARBOR_SEARCH_ANSWER_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace re2 {
class RE2;
}

namespace arbor::search {

// Raw (unnormalised) content of the last \boxed{...}; nullopt when there is
// none or its braces never close.
std::optional<std::string> ExtractBoxed(std::string_view text);

// Canonical form: trimmed; $...$, \left/\right, thin spaces, \text{..},
// degree and percent marks, a leading "x =" and a trailing period removed;
// \dfrac/\tfrac -> \frac; spaces removed; numbers canonical ("1,000.50" ->
// "1000.5", "+3.0" -> "3"); \frac{a}{b} of integers -> "a/b".
std::string NormalizeAnswer(std::string_view answer);

class AnswerExtractor {
 public:
  // `pattern` empty: the built-in chain. Otherwise INVALID_ARGUMENT naming
  // answer_extraction.pattern when it does not compile or has no capture group.
  static absl::StatusOr<std::unique_ptr<AnswerExtractor>> Create(std::string_view pattern);
  ~AnswerExtractor();

  // The normalised answer of `text`; "" when none is found. Without
  // `finished` (a solution cut short) the last-number fallback is skipped: a
  // number in unfinished reasoning is not an answer.
  std::string Extract(std::string_view text, bool finished = true) const;

 private:
  explicit AnswerExtractor(std::unique_ptr<re2::RE2> user_pattern);
  std::unique_ptr<re2::RE2> user_pattern_;
};

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_ANSWER_H_
