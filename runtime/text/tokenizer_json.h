// Internal to the tokenizer: parsing and checking tokenizer.json (the
// pipeline runtime/text/tokenizer.h lists) and tokenizer_config.json.
//
// Contract: every unsupported or malformed field is an INVALID_ARGUMENT that
// names it ("tokenizer.json: model.merges[3]: ..."); fields are checked in the
// order normalizer, model, pre_tokenizer, post_processor, decoder,
// added_tokens, so the first problem found is the one reported.
//
// Thread-safety: stateless functions; all thread-safe. A TokenizerSpec is
// immutable once parsed (its BpeModel's word cache aside, see bpe.h).
#ifndef ARBOR_RUNTIME_TEXT_TOKENIZER_JSON_H_
#define ARBOR_RUNTIME_TEXT_TOKENIZER_JSON_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "runtime/text/bpe.h"
#include "runtime/text/regex_split.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime::tokenizer_internal {

// One step of the normalizer, applied in order.
struct NormalizerStep {
  enum Kind { kNfc, kPrepend, kReplace } kind = kNfc;
  std::string text;         // Prepend: what is prepended (to non-empty text); Replace: the pattern
  std::string replacement;  // Replace only
};

// One step of the pre-tokenizer: a ByteLevel, Split or Metaspace pre-tokenizer.
struct PreTokenizerStep {
  std::unique_ptr<RegexSplitter> splitter;  // null: no splitting
  bool add_prefix_space = false;            // ByteLevel only
  // Metaspace: spaces become `replacement`, which is prepended (unless the
  // piece starts with it) always, or only to the text's first piece (not
  // after an added token), or never; `split` cuts before each replacement.
  bool metaspace = false;
  std::string replacement;
  enum Prepend { kAlways, kFirst, kNever } prepend = kAlways;
  bool split = false;
};

// What tokenizer.json describes.
struct TokenizerSpec {
  BpeModel model;
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  // The SentencePiece-style decoder (model.byte_level false): `decode_space`
  // (e.g. "\u2581") stands for a space, <0xXX> tokens for their byte when
  // `decode_byte_fallback`, and up to `strip_leading_spaces` spaces are
  // stripped from the start of a decoded text (Strip, or Metaspace's prefix).
  std::string decode_space;
  bool decode_byte_fallback = false;
  int strip_leading_spaces = 0;
  std::vector<int32_t> prefix_ids;  // post-processor, when add_special_tokens
  std::vector<int32_t> suffix_ids;
  std::vector<AddedToken> added;  // in file order; contents are valid UTF-8
};

// Parses tokenizer.json text into `spec` (a freshly constructed one). The
// post-processor's ids are not checked against the vocabulary here.
absl::Status ParseTokenizerJson(std::string_view json, TokenizerSpec* spec);

// Reads "bos_token" / "eos_token" (a string or {"content": string}) of
// tokenizer_config.json text and sets *bos / *eos to the added token, or else
// the vocabulary entry, of that content; an absent or null field leaves its
// target as is, and so does an empty `config_json`.
absl::Status ParseTokenizerConfig(std::string_view config_json,
                                  const absl::flat_hash_map<std::string, int32_t>& added_ids,
                                  const absl::flat_hash_map<std::string, int32_t>& vocab,
                                  std::optional<int32_t>* bos, std::optional<int32_t>* eos);

}  // namespace arbor::runtime::tokenizer_internal

#endif  // ARBOR_RUNTIME_TEXT_TOKENIZER_JSON_H_
