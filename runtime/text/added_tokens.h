// Internal to the tokenizer: matching tokenizer.json's added tokens in text,
// leftmost-longest as `tokenizers`' Aho-Corasick matcher, with the tokens'
// single_word / lstrip / rstrip rules.
//
// Contract: Add every token, then Finalize once, then only Split. The
// AddedToken objects must outlive the matcher (it keeps pointers to them).
//
// Thread-safety: once finalized, a matcher is immutable; Split may be called
// from any thread.
#ifndef ARBOR_RUNTIME_TEXT_ADDED_TOKENS_H_
#define ARBOR_RUNTIME_TEXT_ADDED_TOKENS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/text/tokenizer.h"

namespace arbor::runtime::tokenizer_internal {

// A piece of text: an added token, or text between added tokens.
struct Segment {
  std::string_view text;
  int32_t added_id = -1;  // >= 0: the segment is this added token
};

class AddedTokenMatcher {
 public:
  // Matches `token` where `pattern` (its content, normalized or not) occurs.
  // An empty pattern never matches.
  void Add(const AddedToken* token, std::string pattern);
  // Longest patterns first among those sharing a first byte.
  void Finalize();
  bool empty() const { return entries_.empty(); }

  // Splits `text` (valid UTF-8) into added-token segments and the text
  // between them; the segments view `text`.
  void Split(std::string_view text, std::vector<Segment>* out) const;

 private:
  struct Entry {
    const AddedToken* token;
    std::string pattern;
  };
  std::vector<Entry> entries_;
  std::vector<size_t> by_first_byte_[256];
};

}  // namespace arbor::runtime::tokenizer_internal

#endif  // ARBOR_RUNTIME_TEXT_ADDED_TOKENS_H_
