#include "runtime/text/bpe.h"

#include <functional>
#include <queue>
#include <utility>

#include "absl/hash/hash.h"
#include "common/utf8.h"

namespace arbor::runtime::tokenizer_internal {

const ByteLevelAlphabet& Alphabet() {
  static const ByteLevelAlphabet* alphabet = [] {
    auto* a = new ByteLevelAlphabet;
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp =
          printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      AppendUtf8(cp, &a->byte_to_utf8[b]);
      a->char_to_byte[cp] = static_cast<uint8_t>(b);
    }
    return a;
  }();
  return *alphabet;
}

std::string ToByteLevel(std::string_view bytes) {
  const ByteLevelAlphabet& alphabet = Alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += alphabet.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

// The bytes a token stands for under the ByteLevel decoder: every character
// mapped back to its byte, or the token's own UTF-8 when some character is
// not in the alphabet (as `tokenizers` does, e.g. for "<|im_start|>" it is
// the same either way).
std::string FromByteLevel(std::string_view token) {
  const ByteLevelAlphabet& alphabet = Alphabet();
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    const Utf8Unit unit = ReadUtf8Unit(token, pos);
    if (unit.kind != Utf8Unit::kValid) return std::string(token);
    auto it = alphabet.char_to_byte.find(unit.code_point);
    if (it == alphabet.char_to_byte.end()) return std::string(token);
    out.push_back(static_cast<char>(it->second));
    pos += unit.length;
  }
  return out;
}

void BpeModel::BytePairMerge(std::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int prev;
    int next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto push = [&](int32_t id) {
    if (id < 0) {
      // Not in the vocabulary: `tokenizers` uses unk_token, or drops the symbol.
      if (unk_id < 0) return;
      if (fuse_unk && !symbols.empty() && symbols.back().id == unk_id) return;
      id = unk_id;
    }
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  };
  if (byte_level) {
    for (char c : word) push(byte_ids[static_cast<uint8_t>(c)]);
  } else {
    size_t pos = 0;
    while (pos < word.size()) {
      const Utf8Unit unit = ReadUtf8Unit(word, pos);
      const size_t length = unit.length > 0 ? static_cast<size_t>(unit.length) : 1;
      const std::string_view character = word.substr(pos, length);
      pos += length;
      if (auto it = vocab.find(AbslView(character)); it != vocab.end()) {
        push(it->second);
        continue;
      }
      bool bytes_known = byte_fallback;
      for (char c : character) bytes_known = bytes_known && fallback_ids[static_cast<uint8_t>(c)] >= 0;
      if (bytes_known) {
        for (char c : character) push(fallback_ids[static_cast<uint8_t>(c)]);
      } else {
        push(-1);
      }
    }
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const auto find_merge = [&](int32_t left, int32_t right) -> const Merge* {
    auto it = merges.find(MergeKey(left, right));
    return it == merges.end() ? nullptr : &it->second;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push({m->rank, static_cast<int>(i), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* m = find_merge(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale candidate
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* pm = find_merge(symbols[left.prev].id, left.id)) {
        queue.push({pm->rank, left.prev, pm->new_id});
      }
    }
    if (left.next >= 0) {
      if (const Merge* nm = find_merge(left.id, symbols[left.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (int i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges) {
    auto it = vocab.find(byte_level ? ToByteLevel(word) : std::string(word));
    if (it != vocab.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  if (byte_level && word.size() == 1) {  // the most common case needs neither merges nor the cache
    const int32_t id = byte_ids[static_cast<uint8_t>(word[0])];
    if (id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  // High bits pick the shard: the map itself uses the low ones.
  CacheShard& shard = cache_[(absl::HashOf(AbslView(word)) >> 48) % kCacheShards];
  if (cacheable) {
    absl::MutexLock lock(&shard.mu);
    auto it = shard.words.find(AbslView(word));
    if (it != shard.words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  BytePairMerge(word, ids);
  if (cacheable) {
    std::vector<int32_t> result(ids->begin() + first, ids->end());
    absl::MutexLock lock(&shard.mu);
    if (shard.words.size() >= kMaxEntriesPerShard) shard.words.clear();
    shard.words.emplace(std::string(word), std::move(result));
  }
}

}  // namespace arbor::runtime::tokenizer_internal
