#include "search/answer.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "re2/re2.h"

namespace arbor::search {
namespace {

// Abseil here is built with its own string_view type.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Index just past the '}' matching the '{' at `open`, or npos.
size_t MatchBrace(std::string_view text, size_t open) {
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      ++i;  // an escaped brace (\{ or \}) does not count
      continue;
    }
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

// All matches of `re` in `text`; returns the first group of the last one.
std::optional<std::string> LastMatch(std::string_view text, const re2::RE2& re) {
  re2::StringPiece input(text.data(), text.size());
  re2::StringPiece group;
  std::optional<std::string> last;
  re2::StringPiece previous = input;
  while (re2::RE2::FindAndConsume(&input, re, &group)) {
    last = std::string(group.data(), group.size());
    if (input.size() == previous.size()) {  // empty match: step one byte to make progress
      if (input.empty()) break;
      input.remove_prefix(1);
    }
    previous = input;
  }
  return last;
}

// Removes every "\cmd{...}" wrapper, keeping its content.
std::string Unwrap(std::string s, std::string_view command) {
  const std::string head = absl::StrCat(AsAbsl(command), "{");
  size_t pos;
  while ((pos = s.find(head)) != std::string::npos) {
    const size_t open = pos + head.size() - 1;
    const size_t end = MatchBrace(s, open);
    if (end == std::string::npos) break;
    s = absl::StrCat(s.substr(0, pos), s.substr(open + 1, end - open - 2), s.substr(end));
  }
  return s;
}

// "1,000.50" -> "1000.5"; nullopt when `s` is not a plain decimal number.
std::optional<std::string> CanonicalNumber(std::string_view s) {
  static const re2::RE2 kNumber(R"(([+-]?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d*))?|([+-]?)\.(\d+))");
  std::string sign, integer, fraction, sign2, fraction2;
  if (!re2::RE2::FullMatch(re2::StringPiece(s.data(), s.size()), kNumber, &sign, &integer,
                           &fraction, &sign2, &fraction2)) {
    return std::nullopt;
  }
  if (integer.empty()) {
    sign = sign2;
    integer.assign(1, '0');
    fraction = fraction2;
  }
  integer = absl::StrReplaceAll(integer, {{",", ""}});
  while (integer.size() > 1 && integer[0] == '0') integer.erase(0, 1);
  while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
  std::string out = integer;
  if (!fraction.empty()) absl::StrAppend(&out, ".", fraction);
  if (sign == "-" && out != "0") out = absl::StrCat("-", out);
  return out;
}

}  // namespace

std::optional<std::string> ExtractBoxed(std::string_view text) {
  const size_t pos = text.rfind("\\boxed");
  if (pos == std::string_view::npos) return std::nullopt;
  size_t i = pos + 6;
  while (i < text.size() && text[i] == ' ') ++i;
  if (i >= text.size()) return std::nullopt;
  if (text[i] != '{') {
    // "\boxed 5": the rest of the token.
    size_t end = i;
    while (end < text.size() && !absl::ascii_isspace(static_cast<unsigned char>(text[end])) &&
           text[end] != '$') {
      ++end;
    }
    if (end == i) return std::nullopt;
    return std::string(text.substr(i, end - i));
  }
  const size_t end = MatchBrace(text, i);
  if (end == std::string_view::npos) return std::nullopt;
  return std::string(text.substr(i + 1, end - i - 2));
}

std::string NormalizeAnswer(std::string_view answer) {
  std::string s(absl::StripAsciiWhitespace(AsAbsl(answer)));
  // Enclosing math delimiters.
  for (int round = 0; round < 2; ++round) {
    if (s.size() >= 2 && s.front() == '$' && s.back() == '$') s = s.substr(1, s.size() - 2);
    if (absl::StartsWith(s, "\\(") && absl::EndsWith(s, "\\)")) s = s.substr(2, s.size() - 4);
    if (absl::StartsWith(s, "\\[") && absl::EndsWith(s, "\\]")) s = s.substr(2, s.size() - 4);
    s = std::string(absl::StripAsciiWhitespace(s));
  }
  if (auto boxed = ExtractBoxed(s); boxed && absl::StartsWith(s, "\\boxed")) s = *boxed;
  s = Unwrap(std::move(s), "\\text");
  s = Unwrap(std::move(s), "\\textbf");
  s = Unwrap(std::move(s), "\\mathrm");
  s = Unwrap(std::move(s), "\\mbox");
  s = absl::StrReplaceAll(s, {{"\\left", ""},
                              {"\\right", ""},
                              {"\\!", ""},
                              {"\\,", ""},
                              {"\\;", ""},
                              {"\\:", ""},
                              {"\\ ", ""},
                              {"\\dfrac", "\\frac"},
                              {"\\tfrac", "\\frac"},
                              {"^{\\circ}", ""},
                              {"^\\circ", ""},
                              {"\\%", ""},
                              {"%", ""},
                              {"\\$", ""},
                              {"$", ""}});
  s.erase(std::remove_if(s.begin(), s.end(),
                         [](char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); }),
          s.end());
  // A leading "x=" (one variable name) and trailing periods.
  static const re2::RE2 kAssignment(R"([A-Za-z]=(.+))");
  std::string rhs;
  if (re2::RE2::FullMatch(s, kAssignment, &rhs)) s = rhs;
  while (!s.empty() && s.back() == '.') s.pop_back();
  if (auto number = CanonicalNumber(s)) return *number;
  static const re2::RE2 kFrac(R"(\\frac\{?([+-]?\d+)\}?\{?(\d+)\}?)");
  std::string num, den;
  if (re2::RE2::FullMatch(s, kFrac, &num, &den)) return absl::StrCat(num, "/", den);
  return s;
}

absl::StatusOr<std::unique_ptr<AnswerExtractor>> AnswerExtractor::Create(std::string_view pattern) {
  if (pattern.empty()) return std::unique_ptr<AnswerExtractor>(new AnswerExtractor(nullptr));
  auto re =
      std::make_unique<re2::RE2>(re2::StringPiece(pattern.data(), pattern.size()), re2::RE2::Quiet);
  if (!re->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("answer_extraction.pattern does not compile: ", re->error()));
  }
  if (re->NumberOfCapturingGroups() < 1) {
    return absl::InvalidArgumentError(
        "answer_extraction.pattern must have a capture group (the answer)");
  }
  return std::unique_ptr<AnswerExtractor>(new AnswerExtractor(std::move(re)));
}

AnswerExtractor::AnswerExtractor(std::unique_ptr<re2::RE2> user_pattern)
    : user_pattern_(std::move(user_pattern)) {}

AnswerExtractor::~AnswerExtractor() = default;

std::string AnswerExtractor::Extract(std::string_view text, bool finished) const {
  std::optional<std::string> raw;
  if (user_pattern_ != nullptr) {
    raw = LastMatch(text, *user_pattern_);
  } else {
    static const re2::RE2 kAnswerIs(R"((?i)answer\s+is\s*:?\s*([^\n]+))");
    static const re2::RE2 kHashes(R"(####\s*([^\n]+))");
    static const re2::RE2 kNumber(R"((-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?))");
    raw = ExtractBoxed(text);
    if (!raw) {
      raw = LastMatch(text, kAnswerIs);
      if (raw) raw = std::string(absl::StripAsciiWhitespace(*raw));
    }
    if (!raw) raw = LastMatch(text, kHashes);
    if (!raw && finished) raw = LastMatch(text, kNumber);
  }
  if (!raw) return "";
  return NormalizeAnswer(*raw);
}

}  // namespace arbor::search
