// Field checks shared by the Generator and Verifier services. Each returns
// INVALID_ARGUMENT whose message starts with the field's path in the request
// (e.g. "branches[3].suffix_tokens[7]: token id 70000 outside vocabulary
// [0, 600)"), so a client sees exactly what to fix. Pure functions.
#ifndef ARBOR_SERVING_REQUEST_CHECKS_H_
#define ARBOR_SERVING_REQUEST_CHECKS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace arbor::serving {

// `text` with every byte that is not part of well-formed UTF-8 (as
// arbor::FirstInvalidUtf8 judges it) replaced by U+FFFD, so it can travel in a
// proto3 string field.
std::string SanitizeUtf8(absl::string_view text);

// "<field>: invalid UTF-8 at byte N" (N from arbor::FirstInvalidUtf8).
absl::Status CheckUtf8(absl::string_view text, absl::string_view field);

// "<field>[i]: token id X outside vocabulary [0, vocab_size)".
absl::Status CheckTokenIds(absl::Span<const int32_t> tokens, int vocab_size,
                           absl::string_view field);

// "<field>: N bytes, at most max_bytes".
absl::Status CheckMaxBytes(absl::string_view text, size_t max_bytes, absl::string_view field);

// "model: this server serves \"x\", not \"y\"" unless `requested` is empty or
// equals `served`.
absl::Status CheckModelName(absl::string_view requested, absl::string_view served);

}  // namespace arbor::serving

#endif  // ARBOR_SERVING_REQUEST_CHECKS_H_
