// Tokenizer: a Hugging Face `tokenizer.json` BPE tokenizer, giving the same
// ids as the `tokenizers` library: byte-level BPE (the kind GPT-2, Llama 3
// and Qwen2 ship) and SentencePiece-style BPE over characters with byte
// fallback (Llama-2, Mistral, Gemma: any pipeline without a ByteLevel step).
//
// Supported pipeline (anything else is an INVALID_ARGUMENT naming the field):
//  - normalizer: null, NFC, Prepend, Replace of a string, or a Sequence;
//  - added tokens (special or not, with lstrip / rstrip / single_word /
//    normalized), matched leftmost-longest before pre-tokenization;
//  - pre_tokenizer: null, ByteLevel (add_prefix_space, use_regex with the
//    GPT-2 regex), Split (Regex or String pattern, behavior Isolated),
//    Metaspace (replacement, prepend_scheme always / first / never or the
//    older add_prefix_space, split), or a Sequence of those. Oniguruma
//    regexes run on RE2: \s is translated to Unicode White_Space, possessive
//    quantifiers become greedy ones, and the look-ahead alternative
//    `\s+(?!\S)` is emulated exactly (the run gives back its last character
//    when a non-space follows);
//  - model: BPE over the byte-level alphabet, or over characters with
//    byte_fallback (<0xXX> tokens for a character outside the vocabulary);
//    merges as "a b" strings or [a, b] pairs; ignore_merges; unk_token /
//    fuse_unk (Unigram and WordPiece models are refused);
//  - post_processor: null, ByteLevel, TemplateProcessing (its `single`
//    template's special tokens, added when add_special_tokens), or Sequence;
//  - decoder: ByteLevel (or a Sequence holding only ByteLevel) for
//    byte-level BPE; Replace("\u2581", " "), ByteFallback, Fuse, Strip of
//    leading spaces and Metaspace, in a Sequence, for SentencePiece-style.
//
// Thread-safety: immutable after creation except for an internal BPE cache
// behind a mutex; every const method may be called from any thread.
#ifndef ARBOR_RUNTIME_TEXT_TOKENIZER_H_
#define ARBOR_RUNTIME_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace arbor::runtime {

// One entry of tokenizer.json's "added_tokens".
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class Tokenizer {
 public:
  // Parses tokenizer.json text. `config_json`, when not empty, is the text of
  // tokenizer_config.json: its "bos_token" / "eos_token" name bos_id / eos_id.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json,
                                                             std::string_view config_json = {});
  // Reads and parses a tokenizer.json file.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Reads <dir>/tokenizer.json and, when present, <dir>/tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromModelDir(const std::string& dir);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text` (which must be valid UTF-8, else INVALID_ARGUMENT with
  // the byte offset). Added tokens in the text are always matched; the
  // post-processor's tokens (e.g. BOS) are added when `add_special_tokens`.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens = true) const;

  // The pieces of `text` after added-token matching, normalization and
  // pre-tokenization, as raw bytes (added tokens as their own pieces): what
  // BPE sees. For debugging and for tests of the pre-tokenizer.
  absl::StatusOr<std::vector<std::string>> PreTokenize(std::string_view text) const;

  // Text of `ids` as tokenizers' decode(ids, skip_special_tokens): byte-level
  // bytes concatenated, invalid UTF-8 replaced by U+FFFD. Ids outside the
  // vocabulary are skipped (as `tokenizers` does).
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens = false) const;

  // The decoded bytes of one token (possibly part of a UTF-8 character);
  // empty for an unknown id.
  std::string_view TokenBytes(int32_t id) const;
  // Vocabulary entry of `id` (byte-level form, e.g. "Ġthe"), or nullopt.
  std::optional<std::string_view> IdToToken(int32_t id) const;
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // True for added tokens marked "special".
  bool IsSpecial(int32_t id) const;

  // One more than the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const;
  // From tokenizer_config.json when given; else bos is the post-processor's
  // leading special token and eos the first special added token among
  // <|eot_id|>, <|im_end|>, <|endoftext|>, <|end_of_text|>, </s>.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  const std::vector<AddedToken>& added_tokens() const;

  // Hex SHA-256 of the tokenizer.json bytes.
  const std::string& Fingerprint() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Decodes a token stream one id at a time and returns only complete UTF-8
// text: the bytes of a character split over tokens come out with the token
// that completes it. The concatenation of every Add() and the final Finish()
// equals Tokenizer::Decode of all the ids, except that a SentencePiece-style
// decoder's leading-space strip is not applied: a stream continues a prompt,
// and its first token's space is part of the text.
//
// Thread-safety: none; one per stream. The tokenizer must outlive it.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer* tokenizer, bool skip_special_tokens = false);

  // Feeds one id; returns the text it completes (empty while a character is
  // still incomplete).
  std::string Add(int32_t id);
  // Returns what is held back (an incomplete character, as U+FFFD) and resets.
  std::string Finish();
  // Bytes held back now, waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_TEXT_TOKENIZER_H_
