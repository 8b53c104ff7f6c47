#include "common/utf8.h"

#include <algorithm>
#include <vector>

namespace arbor {
namespace {

struct CccEntry {
  char32_t cp;
  uint8_t ccc;
};
struct DecompEntry {
  char32_t cp;
  uint16_t offset;
  uint8_t length;
};
struct CompEntry {
  char32_t first;
  char32_t second;
  char32_t composite;
};

#include "common/utf8_nfc_tables.inc"

// Hangul syllables compose and decompose algorithmically (Unicode ch. 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
              kSCount = kLCount * kNCount;

inline bool InRange(uint8_t b, uint8_t lo, uint8_t hi) { return b >= lo && b <= hi; }

int CombiningClass(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* end = kCcc + sizeof(kCcc) / sizeof(kCcc[0]);
  const auto* it =
      std::lower_bound(kCcc, end, cp, [](const CccEntry& e, char32_t c) { return e.cp < c; });
  return (it != end && it->cp == cp) ? it->ccc : 0;
}

void Decompose(char32_t cp, std::vector<char32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const int s = static_cast<int>(cp - kSBase);
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0) {
    const auto* end = kDecomp + sizeof(kDecomp) / sizeof(kDecomp[0]);
    const auto* it = std::lower_bound(kDecomp, end, cp,
                                      [](const DecompEntry& e, char32_t c) { return e.cp < c; });
    if (it != end && it->cp == cp) {
      out->insert(out->end(), kDecompData + it->offset, kDecompData + it->offset + it->length);
      return;
    }
  }
  out->push_back(cp);
}

// The primary composite of (first, second), or 0 when there is none.
char32_t Compose(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase &&
      second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const auto* end = kComp + sizeof(kComp) / sizeof(kComp[0]);
  const auto* it = std::lower_bound(kComp, end, std::make_pair(first, second),
                                    [](const CompEntry& e, std::pair<char32_t, char32_t> key) {
                                      return std::make_pair(e.first, e.second) < key;
                                    });
  return (it != end && it->first == first && it->second == second) ? it->composite : 0;
}

}  // namespace

Utf8Unit ReadUtf8Unit(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(pos);
  Utf8Unit unit;
  if (b0 < 0x80) {
    unit.kind = Utf8Unit::kValid;
    unit.code_point = b0;
    return unit;
  }
  int needed;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  char32_t cp;
  if (InRange(b0, 0xC2, 0xDF)) {
    needed = 1;
    cp = b0 & 0x1F;
  } else if (InRange(b0, 0xE0, 0xEF)) {
    needed = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (InRange(b0, 0xF0, 0xF4)) {
    needed = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return unit;  // a continuation byte or a byte that never starts a sequence
  }
  for (int i = 1; i <= needed; ++i) {
    if (pos + i >= text.size()) {
      unit.kind = Utf8Unit::kIncomplete;
      unit.length = i;
      return unit;
    }
    const uint8_t b = byte(pos + i);
    if (!InRange(b, i == 1 ? lo : 0x80, i == 1 ? hi : 0xBF)) {
      unit.length = i;  // the lead and the continuation bytes accepted so far
      return unit;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  unit.kind = Utf8Unit::kValid;
  unit.length = needed + 1;
  unit.code_point = cp;
  return unit;
}

size_t FirstInvalidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Utf8Unit unit = ReadUtf8Unit(text, pos);
    if (unit.kind != Utf8Unit::kValid) return pos;
    pos += unit.length;
  }
  return text.size();
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Utf8Unit unit = ReadUtf8Unit(bytes, pos);
    if (unit.kind == Utf8Unit::kValid) {
      out.append(bytes.substr(pos, unit.length));
    } else {
      out.append("\xEF\xBF\xBD");
    }
    pos += unit.length;
  }
  return out;
}

size_t Utf8CompletePrefixLength(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Utf8Unit unit = ReadUtf8Unit(bytes, pos);
    if (unit.kind == Utf8Unit::kIncomplete) return pos;
    pos += unit.length;
  }
  return pos;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsUnicodeWhitespace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string NormalizeNfc(std::string_view text) {
  // Characters below U+0300 other than Latin-1 letters neither decompose nor
  // combine, so pure ASCII is already NFC.
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<uint8_t>(c) < 0x80; })) {
    return std::string(text);
  }
  // 1. Full canonical decomposition.
  std::vector<char32_t> chars;
  chars.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Unit unit = ReadUtf8Unit(text, pos);
    Decompose(unit.kind == Utf8Unit::kValid ? unit.code_point : 0xFFFD, &chars);
    pos += unit.length;
  }
  // 2. Canonical ordering: a stable sort of each run of non-starters by class.
  for (size_t i = 0; i < chars.size();) {
    if (CombiningClass(chars[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < chars.size() && CombiningClass(chars[j]) != 0) ++j;
    std::stable_sort(chars.begin() + i, chars.begin() + j,
                     [](char32_t a, char32_t b) { return CombiningClass(a) < CombiningClass(b); });
    i = j;
  }
  // 3. Canonical composition (the algorithm of UAX #15's sample code).
  if (!chars.empty()) {
    size_t starter = 0;
    char32_t starter_ch = chars[0];
    int last_class = CombiningClass(starter_ch) == 0 ? 0 : 256;
    size_t write = 1;
    for (size_t read = 1; read < chars.size(); ++read) {
      const char32_t ch = chars[read];
      const int ch_class = CombiningClass(ch);
      const char32_t composite = last_class == 256 ? 0 : Compose(starter_ch, ch);
      if (composite != 0 && (last_class < ch_class || last_class == 0)) {
        chars[starter] = composite;
        starter_ch = composite;
      } else {
        if (ch_class == 0) {
          starter = write;
          starter_ch = ch;
        }
        last_class = ch_class;
        chars[write++] = ch;
      }
    }
    chars.resize(write);
  }
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : chars) AppendUtf8(cp, &out);
  return out;
}

}  // namespace arbor
