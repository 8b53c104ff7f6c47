#include "runtime/text/regex_split.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/utf8.h"
#include "re2/re2.h"

namespace arbor::runtime::tokenizer_internal {
namespace {

// Unicode White_Space as an RE2 class body (Oniguruma's \s on UTF-8).
constexpr char kWhitespaceClass[] = "\\t-\\r\\x{85}\\p{Z}";
constexpr char kWordClass[] = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

// The one look-ahead the byte-level regexes use, emulated by RegexSplitter.
constexpr char kLookaheadAlternative[] = "\\s+(?!\\S)";

// Splits `pattern` at its top-level '|' (outside groups and classes).
absl::StatusOr<std::vector<std::string>> SplitAlternatives(std::string_view pattern) {
  std::vector<std::string> alternatives;
  std::string current;
  int depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      current += pattern.substr(i, 2);
      ++i;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      current += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      current += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') current += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') current += pattern[++i];
      continue;
    }
    if (c == '(') ++depth;
    if (c == ')' && --depth < 0) {
      return absl::InvalidArgumentError(absl::StrCat("unbalanced ')' at offset ", i));
    }
    if (c == '|' && depth == 0) {
      alternatives.push_back(std::move(current));
      current.clear();
      continue;
    }
    current += c;
  }
  if (depth != 0 || in_class) {
    return absl::InvalidArgumentError("unterminated group or character class");
  }
  alternatives.push_back(std::move(current));
  return alternatives;
}

// Translates one alternative of an Oniguruma regex to RE2 syntax: Unicode
// \s \S \d \w, possessive quantifiers and atomic groups as greedy ones (the
// same matches for these patterns, which never need to backtrack into them).
absl::StatusOr<std::string> TranslateAlternative(std::string_view alt) {
  std::string out;
  bool in_class = false;
  bool after_quantifier = false;
  for (size_t i = 0; i < alt.size();) {
    const char c = alt[i];
    if (c == '\\') {
      if (i + 1 >= alt.size()) return absl::InvalidArgumentError("trailing backslash");
      const char d = alt[i + 1];
      after_quantifier = false;
      const auto outside_only = [&](const char* what) -> absl::Status {
        if (in_class) {
          return absl::InvalidArgumentError(
              absl::StrCat("\\", what, " inside a character class is not supported"));
        }
        return absl::OkStatus();
      };
      switch (d) {
        case 's':
          absl::StrAppend(&out, in_class ? "" : "[", kWhitespaceClass, in_class ? "" : "]");
          i += 2;
          continue;
        case 'S':
          if (auto s = outside_only("S"); !s.ok()) return s;
          absl::StrAppend(&out, "[^", kWhitespaceClass, "]");
          i += 2;
          continue;
        case 'd':
          out += "\\p{Nd}";
          i += 2;
          continue;
        case 'D':
          if (auto s = outside_only("D"); !s.ok()) return s;
          out += "\\P{Nd}";
          i += 2;
          continue;
        case 'w':
          absl::StrAppend(&out, in_class ? "" : "[", kWordClass, in_class ? "" : "]");
          i += 2;
          continue;
        case 'W':
          if (auto s = outside_only("W"); !s.ok()) return s;
          absl::StrAppend(&out, "[^", kWordClass, "]");
          i += 2;
          continue;
        case 'p':
        case 'P':
        case 'x': {
          size_t end = i + 2;
          if (end < alt.size() && alt[end] == '{') {
            end = alt.find('}', end);
            if (end == std::string_view::npos) {
              return absl::InvalidArgumentError("unterminated \\p{...} or \\x{...}");
            }
            ++end;
          } else {
            end = std::min(alt.size(), end + (d == 'x' ? 2 : 1));
          }
          out += alt.substr(i, end - i);
          i = end;
          continue;
        }
        default:
          out += alt.substr(i, 2);
          i += 2;
          continue;
      }
    }
    if (in_class) {
      if (c == '[') {
        return absl::InvalidArgumentError("nested character classes are not supported");
      }
      if (c == ']') in_class = false;
      out += c;
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      after_quantifier = false;
      out += c;
      ++i;
      if (i < alt.size() && alt[i] == '^') out += alt[i++];
      if (i < alt.size() && alt[i] == ']') out += "\\]", ++i;
      continue;
    }
    if (c == '(') {
      after_quantifier = false;
      if (i + 1 < alt.size() && alt[i + 1] == '?') {
        const std::string_view rest = alt.substr(i + 2);
        if (rest.starts_with("=") || rest.starts_with("!") || rest.starts_with("<=") ||
            rest.starts_with("<!")) {
          return absl::InvalidArgumentError(
              "look-around is not supported except as the alternative \\s+(?!\\S)");
        }
        if (rest.starts_with(">")) {  // atomic group
          out += "(?:";
          i += 3;
          continue;
        }
        out += "(?";
        i += 2;
        continue;
      }
      out += c;
      ++i;
      continue;
    }
    if (c == '*' || c == '+' || c == '?') {
      if (after_quantifier && c == '+') {  // possessive: drop the '+'
        after_quantifier = false;
        ++i;
        continue;
      }
      out += c;
      after_quantifier = !after_quantifier;  // a '?' after a quantifier makes it lazy
      ++i;
      continue;
    }
    if (c == '{') {
      const size_t end = alt.find('}', i);
      if (end != std::string_view::npos &&
          alt.substr(i + 1, end - i - 1).find_first_not_of("0123456789,") ==
              std::string_view::npos) {
        out += alt.substr(i, end - i + 1);
        i = end + 1;
        after_quantifier = true;
        continue;
      }
    }
    after_quantifier = false;
    out += c;
    ++i;
  }
  return out;
}

std::unique_ptr<RE2> CompileRe2(const std::string& pattern, absl::Status* status) {
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(int64_t{64} << 20);
  auto re = std::make_unique<RE2>(pattern, options);
  if (!re->ok()) {
    *status = absl::InvalidArgumentError(
        absl::StrCat("RE2 rejects the translated regex /", pattern, "/: ", re->error()));
    return nullptr;
  }
  return re;
}

char32_t CharAt(std::string_view text, size_t pos) {
  const Utf8Unit unit = ReadUtf8Unit(text, pos);
  return unit.kind == Utf8Unit::kValid ? unit.code_point : 0xFFFD;
}

bool IsAllWhitespace(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Unit unit = ReadUtf8Unit(text, pos);
    if (unit.kind != Utf8Unit::kValid || !IsUnicodeWhitespace(unit.code_point)) return false;
    pos += unit.length;
  }
  return true;
}

size_t LastCharStart(std::string_view text, size_t start, size_t end) {
  size_t p = end - 1;
  while (p > start && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
  return p;
}

}  // namespace

RegexSplitter::RegexSplitter() = default;
RegexSplitter::~RegexSplitter() = default;

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::FromOniguruma(
    std::string_view pattern) {
  auto splitter = std::unique_ptr<RegexSplitter>(new RegexSplitter());
  absl::StatusOr<std::vector<std::string>> alternatives = SplitAlternatives(pattern);
  if (!alternatives.ok()) return alternatives.status();
  std::vector<std::string> translated;
  int lookahead_index = -1;
  for (size_t i = 0; i < alternatives->size(); ++i) {
    const std::string& alt = (*alternatives)[i];
    if (alt == kLookaheadAlternative) {
      if (lookahead_index >= 0) {
        return absl::InvalidArgumentError("more than one \\s+(?!\\S) alternative");
      }
      lookahead_index = static_cast<int>(i);
      translated.push_back(absl::StrCat("[", kWhitespaceClass, "]+"));
      continue;
    }
    absl::StatusOr<std::string> t = TranslateAlternative(alt);
    if (!t.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("alternative '", alt, "': ", t.status().message()));
    }
    translated.push_back(*std::move(t));
  }
  absl::Status status;
  splitter->full_ = CompileRe2(absl::StrJoin(translated, "|"), &status);
  if (!status.ok()) return status;
  if (lookahead_index >= 0) {
    splitter->lookahead_ = true;
    if (lookahead_index > 0) {
      splitter->head_ = CompileRe2(
          absl::StrJoin(translated.begin(), translated.begin() + lookahead_index, "|"), &status);
    }
    if (lookahead_index + 1 < static_cast<int>(translated.size())) {
      splitter->tail_ = CompileRe2(
          absl::StrJoin(translated.begin() + lookahead_index + 1, translated.end(), "|"), &status);
    }
    if (!status.ok()) return status;
  }
  return splitter;
}

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::FromLiteral(
    std::string_view literal) {
  if (literal.empty()) return absl::InvalidArgumentError("empty Split string pattern");
  auto splitter = std::unique_ptr<RegexSplitter>(new RegexSplitter());
  absl::Status status;
  splitter->full_ = CompileRe2(RE2::QuoteMeta(literal), &status);
  if (!status.ok()) return status;
  return splitter;
}

void RegexSplitter::Split(std::string_view text, std::vector<std::string_view>* out) const {
  size_t last = 0;  // end of the previous piece
  size_t pos = 0;   // where the next search starts
  re2::StringPiece match;
  // Anchored first: these regexes cover nearly every character, so a match
  // usually starts right here, and an anchored search skips RE2's reverse
  // scan for the start.
  while (pos < text.size() && (full_->Match(text, pos, text.size(), RE2::ANCHOR_START, &match, 1) ||
                               full_->Match(text, pos, text.size(), RE2::UNANCHORED, &match, 1))) {
    size_t start = match.data() - text.data();
    size_t end = start + match.size();
    if (end == start) {  // empty match: no piece, move on by one character
      pos = start + ReadUtf8Unit(text, start).length;
      continue;
    }
    if (lookahead_ && end < text.size() && !IsUnicodeWhitespace(CharAt(text, end)) &&
        IsAllWhitespace(text.substr(start, end - start)) &&
        (head_ == nullptr ||
         !head_->Match(text, start, text.size(), RE2::ANCHOR_START, nullptr, 0))) {
      // The match came from \s+(?!\S) and a non-space follows: Oniguruma
      // backtracks one character, or on to the next alternatives when the
      // run is one character long.
      const size_t last_char = LastCharStart(text, start, end);
      if (last_char > start) {
        end = last_char;
      } else if (tail_ != nullptr &&
                 tail_->Match(text, start, text.size(), RE2::ANCHOR_START, &match, 1) &&
                 !match.empty()) {
        end = start + match.size();
      } else {
        pos = end;  // no match starts here
        continue;
      }
    }
    if (start > last) out->push_back(text.substr(last, start - last));
    out->push_back(text.substr(start, end - start));
    last = pos = end;
  }
  if (last < text.size()) out->push_back(text.substr(last));
}

}  // namespace arbor::runtime::tokenizer_internal
