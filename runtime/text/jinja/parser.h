// Lexer and parser for the Jinja subset Hugging Face chat templates use
// (internal to runtime/text/jinja; see template.h for the public API).
// Whitespace follows transformers' environment: trim_blocks and lstrip_blocks
// on, "-" on a tag strips the whitespace beside it, and a single trailing
// newline of the template is dropped.
// Thread-safety: stateless functions.
#ifndef ARBOR_RUNTIME_TEXT_JINJA_PARSER_H_
#define ARBOR_RUNTIME_TEXT_JINJA_PARSER_H_

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "runtime/text/jinja/ast.h"

namespace arbor::runtime::jinja {

struct ParseLimits {
  size_t max_source_bytes = 1 << 20;
  int max_nesting = 200;  // nested expressions and blocks
};

// The template's statements; INVALID_ARGUMENT "line L, column C: ..." for a
// syntax error, RESOURCE_EXHAUSTED when a limit is passed.
absl::StatusOr<Body> ParseTemplate(absl::string_view source, const ParseLimits& limits);

}  // namespace arbor::runtime::jinja

#endif  // ARBOR_RUNTIME_TEXT_JINJA_PARSER_H_
