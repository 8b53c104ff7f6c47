// Prompt-prefix keys shared by the coordinator's router and the workers' cache
// summary. A prompt sent as text (a question and a chat-template name) is cut
// into fixed chunks of kPrefixChunkBytes bytes; key i hashes the template name
// and the first (i + 1) chunks, chained, so two questions share key i exactly
// when they share their first (i + 1) * kPrefixChunkBytes bytes (up to hash
// collisions) and use the same template name. The coordinator has no
// tokenizer, so both sides key prefixes by text; the worker maps each key to
// the KV blocks of the tokens it covers (worker/generator_service.cc).
// Thread-safety: pure functions.
#ifndef ARBOR_COMMON_PREFIX_HASH_H_
#define ARBOR_COMMON_PREFIX_HASH_H_

#include <cstdint>
#include <string_view>
#include <vector>

namespace arbor {

inline constexpr int kPrefixChunkBytes = 64;
// Keys per prompt at most: prefixes past 64 chunks (4 KiB) are not told apart.
inline constexpr int kMaxPrefixChunks = 64;

// Keys of the full chunks of `text` (a trailing partial chunk has none), at
// most kMaxPrefixChunks; key i covers bytes [0, (i + 1) * kPrefixChunkBytes).
std::vector<uint64_t> PrefixChunkKeys(std::string_view chat_template, std::string_view text);

}  // namespace arbor

#endif  // ARBOR_COMMON_PREFIX_HASH_H_
