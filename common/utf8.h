// UTF-8 helpers: validation (the one validator; serving's request checks,
// the coordinator and the tokenizer all use it), the lossy conversion of
// Rust's String::from_utf8_lossy (each maximal invalid subpart becomes one
// U+FFFD, as the Unicode standard recommends and as Hugging Face `tokenizers`
// decodes), the Unicode White_Space set (what Oniguruma's \s and Rust's
// char::is_whitespace match), and NFC normalization.
//
// Thread-safety: stateless functions; all thread-safe.
#ifndef ARBOR_COMMON_UTF8_H_
#define ARBOR_COMMON_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace arbor {

// What the bytes at one position of a string are.
struct Utf8Unit {
  enum Kind {
    kValid,       // one complete scalar value of `length` bytes, in `code_point`
    kInvalid,     // a maximal invalid subpart of `length` bytes (one U+FFFD)
    kIncomplete,  // a valid but unfinished sequence running to the end of input
  };
  Kind kind = kInvalid;
  int length = 1;
  char32_t code_point = 0;
};

// Reads the unit starting at `text[pos]` (pos < text.size()).
Utf8Unit ReadUtf8Unit(std::string_view text, size_t pos);

// Byte offset of the first invalid or incomplete sequence, or text.size() when
// `text` is entirely valid UTF-8.
size_t FirstInvalidUtf8(std::string_view text);
inline bool IsValidUtf8(std::string_view text) { return FirstInvalidUtf8(text) == text.size(); }

// `bytes` with every maximal invalid subpart (an incomplete tail included)
// replaced by U+FFFD.
std::string Utf8Lossy(std::string_view bytes);

// Length of the longest prefix of `bytes` that holds no incomplete sequence at
// its end: what can be emitted now while more bytes may still follow.
size_t Utf8CompletePrefixLength(std::string_view bytes);

// Appends the UTF-8 encoding of `cp` (a valid scalar value).
void AppendUtf8(char32_t cp, std::string* out);

// Unicode White_Space: U+0009..U+000D, U+0020, U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
bool IsUnicodeWhitespace(char32_t cp);

// Unicode Normalization Form C of valid UTF-8 `text` (Unicode 14 tables).
std::string NormalizeNfc(std::string_view text);

}  // namespace arbor

#endif  // ARBOR_COMMON_UTF8_H_
