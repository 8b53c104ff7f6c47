#include "common/prefix_hash.h"

#include <algorithm>

#include "common/counter_rng.h"

namespace arbor {
namespace {

uint64_t Fnv1a(uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::vector<uint64_t> PrefixChunkKeys(std::string_view chat_template, std::string_view text) {
  const size_t chunks =
      std::min<size_t>(text.size() / kPrefixChunkBytes, static_cast<size_t>(kMaxPrefixChunks));
  std::vector<uint64_t> keys;
  keys.reserve(chunks);
  // The template name seeds the chain: the same question under another
  // template renders (and caches) other tokens.
  uint64_t h = Fnv1a(1469598103934665603ull, chat_template);
  h = Fnv1a(h, std::string_view("\0", 1));
  for (size_t i = 0; i < chunks; ++i) {
    h = Fnv1a(h, text.substr(i * kPrefixChunkBytes, kPrefixChunkBytes));
    keys.push_back(Mix64(h ^ (i + 1)));
  }
  return keys;
}

}  // namespace arbor
