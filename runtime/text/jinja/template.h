// A Jinja template engine for the chat templates of Hugging Face checkpoints
// (tokenizer_config.json's "chat_template"), rendered as transformers renders
// them: Jinja2 with trim_blocks and lstrip_blocks, no autoescaping, the loop
// controls extension, and the globals raise_exception and strftime_now.
//
// Supported: {{ }}, {# #}, whitespace control ("-"), if/elif/else, for (with
// else, a loop filter `if`, unpacking, loop.index/index0/revindex/revindex0/
// first/last/length/previtem/nextitem), break/continue, set (also `ns.x =`,
// `a, b =` and block set), macros, {% generation %}; literals, lists, dicts,
// tuples, arithmetic, comparisons, in, and/or/not, conditional expressions,
// ~, slicing (also [::-1]); filters abs, capitalize, count, default (d),
// escape (e), first, float, indent, int, items, join, last, length, list,
// lower, map, reject, rejectattr, replace, reverse, safe, select, selectattr,
// sort, string, sum, title, tojson, trim, unique, upper; tests boolean,
// callable, defined, divisibleby, eq/equalto/==, even, false, float, ge, gt,
// in, integer, iterable, le, lower, lt, mapping, ne, none, number, odd,
// sequence, string, true, undefined, upper; string methods capitalize,
// count, endswith, find, join, lower, lstrip, replace, rstrip, split,
// startswith, strip, title, upper; dict methods get, items, keys, values;
// globals namespace, range, dict, raise_exception, strftime_now.
// Not supported (a clear error at parse or render time): include/extends/
// import, call blocks, filter blocks, recursive loops, `%` string formatting.
//
// Errors: INVALID_ARGUMENT "line L, column C: ..." for a syntax error, an
// unknown filter/test/function, a type error or raise_exception (its message
// kept); RESOURCE_EXHAUSTED when a template passes a limit below.
//
// Thread-safety: a parsed Template is immutable; Render is const and may run
// concurrently from several threads.
#ifndef ARBOR_RUNTIME_TEXT_JINJA_TEMPLATE_H_
#define ARBOR_RUNTIME_TEXT_JINJA_TEMPLATE_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"
#include "runtime/text/jinja/value.h"

namespace arbor::runtime::jinja {

struct Limits {
  size_t max_template_bytes = 1 << 20;
  int max_nesting = 200;               // nested blocks and expressions
  size_t max_output_bytes = 1 << 20;   // the output, and any one string built
  int64_t max_loop_iterations = 1 << 20;  // all loops of one render together
  int max_call_depth = 64;             // macro calls in progress
};

class Template {
 public:
  static absl::StatusOr<Template> Parse(absl::string_view source, const Limits& limits = {});

  // `context` holds the template's variables (messages, add_generation_prompt,
  // bos_token, ...); names not in it are undefined.
  absl::StatusOr<std::string> Render(const ValueDict& context) const;
  // The same with a JSON object as the context (key order kept, as tojson
  // writes it).
  absl::StatusOr<std::string> RenderJson(const nlohmann::ordered_json& context) const;

  const Limits& limits() const { return limits_; }

 private:
  struct Parsed;
  Template(std::shared_ptr<const Parsed> parsed, Limits limits)
      : parsed_(std::move(parsed)), limits_(limits) {}

  std::shared_ptr<const Parsed> parsed_;
  Limits limits_;
};

}  // namespace arbor::runtime::jinja

#endif  // ARBOR_RUNTIME_TEXT_JINJA_TEMPLATE_H_
