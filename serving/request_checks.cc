#include "serving/request_checks.h"

#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace arbor::serving {

namespace {
// This Abseil does not alias std::string_view.
std::string_view StdView(absl::string_view s) { return {s.data(), s.size()}; }
}  // namespace

std::string SanitizeUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const size_t bad = FirstInvalidUtf8(StdView(text));
    if (bad == text.size()) {
      out.append(text.data(), text.size());
      break;
    }
    out.append(text.data(), bad);
    out.append("\xEF\xBF\xBD");
    text.remove_prefix(bad + 1);
  }
  return out;
}

absl::Status CheckUtf8(absl::string_view text, absl::string_view field) {
  const size_t at = FirstInvalidUtf8(StdView(text));
  if (at == text.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, ": invalid UTF-8 at byte ", at));
}

absl::Status CheckTokenIds(absl::Span<const int32_t> tokens, int vocab_size,
                           absl::string_view field) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "]: token id ", tokens[i],
                                                     " outside vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckMaxBytes(absl::string_view text, size_t max_bytes, absl::string_view field) {
  if (text.size() <= max_bytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", text.size(), " bytes, at most ", max_bytes));
}

absl::Status CheckModelName(absl::string_view requested, absl::string_view served) {
  if (requested.empty() || requested == served) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("model: this server serves \"", served, "\", not \"", requested, "\""));
}

}  // namespace arbor::serving
