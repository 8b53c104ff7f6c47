#include "runtime/text/added_tokens.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "common/utf8.h"
#include "re2/re2.h"

namespace arbor::runtime::tokenizer_internal {
namespace {

bool IsWordChar(std::string_view text, size_t pos) {
  const Utf8Unit unit = ReadUtf8Unit(text, pos);
  if (unit.kind != Utf8Unit::kValid) return false;
  const char32_t cp = unit.code_point;
  if (cp < 0x80) return std::isalnum(static_cast<int>(cp)) != 0;
  static const RE2* alnum = new RE2("[\\p{L}\\p{N}\\p{Mn}\\p{Mc}]");
  return RE2::FullMatch(text.substr(pos, unit.length), *alnum);
}

size_t PrevCharStart(std::string_view text, size_t pos) {
  size_t p = pos - 1;
  while (p > 0 && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
  return p;
}

}  // namespace

void AddedTokenMatcher::Add(const AddedToken* token, std::string pattern) {
  if (pattern.empty()) return;
  const uint8_t first = static_cast<uint8_t>(pattern[0]);
  entries_.push_back({token, std::move(pattern)});
  by_first_byte_[first].push_back(entries_.size() - 1);
}

void AddedTokenMatcher::Finalize() {
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return entries_[a].pattern.size() > entries_[b].pattern.size();
    });
  }
}

void AddedTokenMatcher::Split(std::string_view text, std::vector<Segment>* out) const {
  size_t offset = 0;  // start of the text not yet emitted
  size_t pos = 0;
  while (pos < text.size()) {
    const Entry* found = nullptr;
    for (size_t index : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      const Entry& e = entries_[index];
      if (text.compare(pos, e.pattern.size(), e.pattern) == 0) {
        found = &e;  // longest first
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + found->pattern.size();
    pos = stop;
    const AddedToken& token = *found->token;
    if (token.single_word && ((start > 0 && IsWordChar(text, PrevCharStart(text, start))) ||
                              (stop < text.size() && IsWordChar(text, stop)))) {
      continue;
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > offset) {
        const size_t p = PrevCharStart(text, s);
        const Utf8Unit unit = ReadUtf8Unit(text, p);
        if (unit.kind != Utf8Unit::kValid || !IsUnicodeWhitespace(unit.code_point)) break;
        s = p;
      }
      start = s;
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        const Utf8Unit unit = ReadUtf8Unit(text, stop);
        if (unit.kind != Utf8Unit::kValid || !IsUnicodeWhitespace(unit.code_point)) break;
        stop += unit.length;
      }
      pos = stop;
    }
    if (start > offset) out->push_back({text.substr(offset, start - offset), -1});
    out->push_back({text.substr(start, stop - start), token.id});
    offset = stop;
  }
  if (offset < text.size()) out->push_back({text.substr(offset), -1});
}

}  // namespace arbor::runtime::tokenizer_internal
