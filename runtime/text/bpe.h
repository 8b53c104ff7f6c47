// Internal to the tokenizer: the byte-level alphabet (GPT-2's
// bytes_to_unicode) and the BPE model that turns one pre-tokenized word into
// ids: byte-level, or SentencePiece-style over characters with byte fallback.
//
// Contract: the parser (tokenizer_json.cc) fills a BpeModel's public fields
// once; afterwards it is only read. EncodeWord gives `tokenizers`' ids for the
// word: lowest-rank merge first, leftmost among equal ranks.
//
// Thread-safety: the alphabet functions are stateless. After it is filled, a
// BpeModel's const methods may be called from any thread; the word cache they
// share is sharded, each shard behind its own mutex.
#ifndef ARBOR_RUNTIME_TEXT_BPE_H_
#define ARBOR_RUNTIME_TEXT_BPE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace arbor::runtime::tokenizer_internal {

// This Abseil does not alias std::string_view; its containers and StrCat
// take absl::string_view.
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

// Printable bytes stand for themselves, the others map to U+0100 onwards in
// byte order.
struct ByteLevelAlphabet {
  std::string byte_to_utf8[256];
  absl::flat_hash_map<char32_t, uint8_t> char_to_byte;
};
const ByteLevelAlphabet& Alphabet();

// Raw bytes in the alphabet's characters (what vocabulary entries hold).
std::string ToByteLevel(std::string_view bytes);

// The bytes a token stands for under the ByteLevel decoder: every character
// mapped back to its byte, or the token's own UTF-8 when some character is
// not in the alphabet.
std::string FromByteLevel(std::string_view token);

class BpeModel {
 public:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t MergeKey(int32_t left, int32_t right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
  }

  BpeModel() = default;
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Filled by the parser.
  absl::flat_hash_map<std::string, int32_t> vocab;  // byte-level token -> id
  absl::flat_hash_map<uint64_t, Merge> merges;      // MergeKey(left id, right id) -> merge
  int32_t byte_ids[256];                            // id of each single-byte token, or -1
  // SentencePiece-style BPE (no ByteLevel pre-tokenizer): a word's symbols
  // are its characters, not its bytes, and the vocabulary holds raw UTF-8; a
  // character outside it becomes the <0xXX> tokens of its bytes when
  // byte_fallback, else unk_token.
  bool byte_level = true;
  bool byte_fallback = false;
  int32_t fallback_ids[256];  // id of "<0xXX>" for each byte, or -1
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;

  // Appends the ids of `word` (raw bytes, one pre-tokenized piece) to `ids`.
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;

 private:
  void BytePairMerge(std::string_view word, std::vector<int32_t>* ids) const;

  // BPE results per word (raw bytes), bounded; sharded by hash so that
  // threads encoding at once rarely wait on one another.
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kMaxEntriesPerShard = 4096;
  static constexpr size_t kMaxCachedWordBytes = 256;
  struct CacheShard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> words ABSL_GUARDED_BY(mu);
  };
  mutable CacheShard cache_[kCacheShards];
};

}  // namespace arbor::runtime::tokenizer_internal

#endif  // ARBOR_RUNTIME_TEXT_BPE_H_
