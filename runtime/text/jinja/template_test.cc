#include "runtime/text/jinja/template.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor::runtime::jinja {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

// Renders `source` with `context`; the error text when it fails.
std::string R(const std::string& source, const Json& context = Json::object(),
              const Limits& limits = {}) {
  auto tmpl = Template::Parse(source, limits);
  if (!tmpl.ok()) return "PARSE ERROR: " + std::string(tmpl.status().message());
  auto out = tmpl->RenderJson(context);
  if (!out.ok()) return "RENDER ERROR: " + std::string(out.status().message());
  return *out;
}

absl::Status RenderStatus(const std::string& source, const Json& context = Json::object(),
                          const Limits& limits = {}) {
  auto tmpl = Template::Parse(source, limits);
  if (!tmpl.ok()) return tmpl.status();
  return tmpl->RenderJson(context).status();
}

TEST(JinjaTest, TextOutputAndComments) {
  EXPECT_EQ(R("hello"), "hello");
  EXPECT_EQ(R("a{# note #}b"), "ab");
  EXPECT_EQ(R("{{ 'x' + \"y\" }}"), "xy");
  EXPECT_EQ(R("{{ name }}!", {{"name", "Ada"}}), "Ada!");
  EXPECT_EQ(R("[{{ missing }}]"), "[]");
  EXPECT_EQ(R("{{ none }} {{ true }} {{ 1.5 }} {{ 2.0 }} {{ [1, 'a'] }} {{ {'k': 'v'} }}"),
            "None True 1.5 2.0 [1, 'a'] {'k': 'v'}");
  EXPECT_EQ(R("line\n"), "line");  // one trailing newline is dropped
  EXPECT_EQ(R("{{ 'a\\nb\\t\\'c\\'' }}"), "a\nb\t'c'");
}

TEST(JinjaTest, WhitespaceControlMatchesTransformers) {
  // trim_blocks: the newline after a block tag goes.
  EXPECT_EQ(R("{% if true %}\nyes\n{% endif %}\nend"), "yes\nend");
  // lstrip_blocks: indentation before a block tag goes, not before {{ }}.
  EXPECT_EQ(R("  {% if true %}x{% endif %}\n  {{ 'y' }}"), "x  y");
  // "-" strips all whitespace on its side.
  EXPECT_EQ(R("a  \n {{- 'b' -}} \n c"), "abc");
  EXPECT_EQ(R("a\n{%- if true -%}\n  b\n{%- endif %}"), "ab");
  // lstrip only from the start of a line.
  EXPECT_EQ(R("{{ 'a' }}  {% if true %}b{% endif %}"), "a  b");
}

TEST(JinjaTest, IfElifElse) {
  const std::string t = "{% if x > 2 %}big{% elif x == 2 %}two{% else %}small{% endif %}";
  EXPECT_EQ(R(t, {{"x", 3}}), "big");
  EXPECT_EQ(R(t, {{"x", 2}}), "two");
  EXPECT_EQ(R(t, {{"x", 1}}), "small");
  EXPECT_EQ(R("{% if not x %}no{% endif %}"), "no");
  EXPECT_EQ(R("{{ 'a' if x else 'b' }}{{ 'c' if x }}", {{"x", false}}), "b");
  EXPECT_EQ(R("{{ x or 'dflt' }} {{ x and 'no' }}", {{"x", ""}}), "dflt ");
}

TEST(JinjaTest, ForLoopVariables) {
  EXPECT_EQ(R("{% for m in ms %}{{ loop.index }}/{{ loop.length }}:{{ m }}"
              "{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %};{% endfor %}",
              {{"ms", {"a", "b", "c"}}}),
            "1/3:aF;2/3:b;3/3:cL;");
  EXPECT_EQ(R("{% for m in ms %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
              "{{ loop.previtem }}{{ loop.nextitem }},{% endfor %}",
              {{"ms", {"a", "b"}}}),
            "021b,110a,");
  EXPECT_EQ(R("{% for m in ms %}x{% else %}empty{% endfor %}", {{"ms", Json::array()}}), "empty");
  EXPECT_EQ(R("{% for m in ms if m != 'b' %}{{ m }}{{ loop.length }}{% endfor %}",
              {{"ms", {"a", "b", "c"}}}),
            "a2c2");
  EXPECT_EQ(R("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
              {{"d", {{"x", 1}, {"y", 2}}}}),
            "x=1;y=2;");
  EXPECT_EQ(R("{% for k in d %}{{ k }}{% endfor %}", {{"d", {{"x", 1}, {"y", 2}}}}), "xy");
  EXPECT_EQ(R("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}"
              "{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "02");
  EXPECT_EQ(R("{% for m in ms[::-1] %}{{ m }}{% endfor %}", {{"ms", {1, 2, 3}}}), "321");
}

TEST(JinjaTest, SetScopesAndNamespace) {
  EXPECT_EQ(R("{% set x = 1 %}{% for i in [1, 2] %}{% set x = i %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(R("{% set ns = namespace(x=1, found=false) %}{% for i in [1, 2] %}"
              "{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }} {{ ns.found }}"),
            "4 False");
  EXPECT_EQ(R("{% set a, b = 1, 2 %}{{ a }}{{ b }}"), "12");
  EXPECT_EQ(R("{% set block %}in {{ 'side' }}{% endset %}[{{ block }}]"), "[in side]");
  EXPECT_THAT(R("{% set x = 1 %}{% set x.y = 2 %}"), HasSubstr("not a namespace()"));
}

TEST(JinjaTest, Macros) {
  EXPECT_EQ(R("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
              "{{ greet('Ada') }} {{ greet('Bob', punct='?') }}"),
            "Hi Ada! Hi Bob?");
  EXPECT_EQ(R("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}"),
            "321");
}

TEST(JinjaTest, OperatorsAndLiterals) {
  EXPECT_EQ(R("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}"),
            "3 -4 1 2 3.5 1024");
  EXPECT_EQ(R("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'ab' * 2 }} {{ 'a' ~ 1 ~ none }}"),
            "7 9 abab a1None");
  EXPECT_EQ(R("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}"),
            "True True True True");
  EXPECT_EQ(R("{{ [1, 2] + [3] }} {{ (1, 2) }} {{ 1 < 2 and 'a' < 'b' }}"), "[1, 2, 3] [1, 2] True");
  EXPECT_EQ(R("{{ d.a }}{{ d['a'] }}{{ l[0] }}{{ l[-1] }}{{ l.1 }}",
              {{"d", {{"a", "A"}}}, {"l", {"x", "y"}}}),
            "AAxyy");
}

TEST(JinjaTest, Slicing) {
  EXPECT_EQ(R("{{ s[1:] }}|{{ s[:2] }}|{{ s[::-1] }}|{{ s[-2:] }}|{{ s[::2] }}", {{"s", "abcde"}}),
            "bcde|ab|edcba|de|ace");
  EXPECT_EQ(R("{{ l[1:] }} {{ l[:-1] }}", {{"l", {1, 2, 3}}}), "[2, 3] [1, 2]");
  EXPECT_EQ(R("{{ s[0] }}{{ s[1:3] }}{{ s|length }}", {{"s", "héllo"}}), "hél5");  // code points
}

TEST(JinjaTest, Filters) {
  EXPECT_EQ(R("[{{ '  x \\n'|trim }}] {{ 'Ab'|upper }}{{ 'Ab'|lower }} {{ 'hello world'|title }}"),
            "[x] ABab Hello World");
  EXPECT_EQ(R("{{ l|length }} {{ l|first }} {{ l|last }} {{ l|join(', ') }} {{ l|reverse|list }}",
              {{"l", {"a", "b", "c"}}}),
            "3 a c a, b, c ['c', 'b', 'a']");
  EXPECT_EQ(R("{{ x|default('d') }} {{ ''|default('e', true) }} {{ 'v'|d('f') }}"), "d e v");
  EXPECT_EQ(R("{{ 3|string + '!' }} {{ '42'|int + 1 }} {{ 'x'|int }} {{ 2|float }} {{ -3|abs }}"),
            "3! 43 0 2.0 3");
  EXPECT_EQ(R("{{ '<b>'|safe }} {{ '<b>'|e }} {{ 'a-b'|replace('-', '+') }}"), "<b> &lt;b&gt; a+b");
  EXPECT_EQ(R("{% for k, v in d|items %}{{ k }}{{ v }}{% endfor %}", {{"d", {{"a", 1}, {"b", 2}}}}),
            "a1b2");
  const Json msgs = {{"ms", {{{"role", "system"}, {"content", "S"}},
                             {{"role", "user"}, {"content", "U"}},
                             {{"role", "assistant"}, {"content", "A"}}}}};
  EXPECT_EQ(R("{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|join }}", msgs),
            "U");
  EXPECT_EQ(R("{{ ms|rejectattr('role', 'eq', 'system')|map(attribute='role')|list }}", msgs),
            "['user', 'assistant']");
  EXPECT_EQ(R("{{ ['a', 'b']|map('upper')|join }} {{ [3, 1, 2]|sort|list }} {{ [1, 1, 2]|unique|list }}"),
            "AB [1, 2, 3] [1, 2]");
  EXPECT_EQ(R("{{ [0, 1, 2]|select('odd')|list }} {{ [0, 1, 2]|reject|list }} {{ [1, 2]|sum }}"),
            "[1] [0] 3");
  EXPECT_EQ(R("{{ 'a\\nb'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}"), "a\n  b|  a\n  b");
}

TEST(JinjaTest, ToJsonMatchesHuggingFace) {
  const Json tool = {{"name", "get_weather"},
                     {"parameters", {{"type", "object"}, {"required", {"city"}}}},
                     {"strict", true},
                     {"n", nullptr},
                     {"text", "é \"q\"\n"}};
  EXPECT_EQ(R("{{ t|tojson }}", {{"t", tool}}),
            "{\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"required\": "
            "[\"city\"]}, \"strict\": true, \"n\": null, \"text\": \"é \\\"q\\\"\\n\"}");
  EXPECT_EQ(R("{{ {'a': [1, 2]}|tojson(indent=2) }}"), "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
  EXPECT_EQ(R("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}"), "{\"a\": 2, \"b\": 1}");
}

TEST(JinjaTest, Tests) {
  EXPECT_EQ(R("{{ x is defined }} {{ x is undefined }} {{ n is none }} {{ n is not none }}",
              {{"n", nullptr}}),
            "False True True False");
  EXPECT_EQ(R("{{ 's' is string }} {{ 1 is string }} {{ d is mapping }} {{ l is iterable }} "
              "{{ l is sequence }} {{ 'x' is iterable }} {{ 1 is iterable }}",
              {{"d", Json::object()}, {"l", Json::array()}}),
            "True False True True True True False");
  EXPECT_EQ(R("{{ 1 is equalto 1 }} {{ 2 is eq(3) }} {{ 4 is divisibleby 2 }} {{ 3 is odd }} "
              "{{ false is false }} {{ true is true }} {{ 1 is number }} {{ 1.5 is float }}"),
            "True False True True True True True True");
}

TEST(JinjaTest, StringMethods) {
  EXPECT_EQ(R("[{{ '  a  '.strip() }}][{{ 'xxaxx'.strip('x') }}][{{ '\\n\\na'.lstrip('\\n') }}]"
              "[{{ 'a  '.rstrip() }}]"),
            "[a][a][a][a]");
  EXPECT_EQ(R("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith('bc') }} {{ 'abc'.startswith(('x', 'a')) }}"),
            "True True True");
  EXPECT_EQ(R("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a,b,c'.split(',', 1) }}"),
            "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b,c']");
  EXPECT_EQ(R("{{ 'a-b-c'.replace('-', '') }} {{ 'hi there'.title() }} {{ 'Ab'.upper() }}"
              "{{ 'Ab'.lower() }} {{ 'aBC'.capitalize() }} {{ '-'.join(['x', 'y']) }} {{ 'abcb'.find('b') }}"),
            "abc Hi There ABab Abc x-y 1");
  EXPECT_EQ(R("{{ c.split('</think>')[-1].lstrip('\\n') }}", {{"c", "<think>r</think>\n\nans"}}),
            "ans");
}

TEST(JinjaTest, DictMethodsAndGlobals) {
  EXPECT_EQ(R("{{ d.get('a') }} {{ d.get('z', 'dz') }} {{ d.get('y') }} {{ d.keys()|list }} {{ d.values()|list }}",
              {{"d", {{"a", 1}}}}),
            "1 dz None ['a'] [1]");
  EXPECT_EQ(R("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ dict(a=1) }}"),
            "[0, 1, 2] [1, 3, 5] {'a': 1}");
  auto date = Template::Parse("{{ strftime_now('%Y') }}");
  ASSERT_TRUE(date.ok());
  auto year = date->Render({});
  ASSERT_TRUE(year.ok()) << year.status();
  EXPECT_EQ(year->size(), 4u);
}

TEST(JinjaTest, GenerationBlockRendersItsBody) {
  EXPECT_EQ(R("a{% generation %}b{% endgeneration %}c"), "abc");
}

TEST(JinjaTest, RaiseExceptionKeepsItsMessageAndPosition) {
  const absl::Status s = RenderStatus("x\n  {{ raise_exception('roles must alternate') }}");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("line 2, column 6: raise_exception: roles must alternate"));
  EXPECT_THAT(s.message(), HasSubstr("roles must alternate"));
}

TEST(JinjaTest, SyntaxErrorsNameLineAndColumn) {
  struct Case {
    std::string source;
    std::string want;
  };
  const Case cases[] = {
      {"{% for m in ms %}x", "line 1, column 1: block not closed: expected '{% endfor %}'"},
      {"ok\n{{ a + }}", "line 2, column 8: expected an expression"},
      {"{% if x %}a{% endfor %}", "line 1, column 12: unknown or unsupported statement 'endfor'"},
      {"{{ 'abc }}", "line 1, column 4: unterminated string literal"},
      {"{{ x ", "line 1, column 1: unterminated"},
      {"{# never closed", "line 1, column 1: unterminated comment"},
      {"{% include 'x' %}", "unknown or unsupported statement 'include'"},
      {"a\nb\n  {{ x $ y }}", "line 3, column 8: unexpected character '$'"},
      {"{% set %}", "expected a name"},
  };
  for (const Case& c : cases) {
    auto t = Template::Parse(c.source);
    ASSERT_FALSE(t.ok()) << c.source;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.source;
    EXPECT_THAT(t.status().message(), HasSubstr(c.want)) << c.source;
  }
}

TEST(JinjaTest, RenderErrorsNameLineAndColumn) {
  EXPECT_THAT(R("\n{{ 'a' + 1 }}"), HasSubstr("line 2, column 8: unsupported operand types for +"));
  EXPECT_THAT(R("{{ x.y }}"), HasSubstr("line 1, column 5: 'x' is undefined"));
  EXPECT_THAT(R("{{ 1|frobnicate }}"), HasSubstr("line 1, column 5: unknown filter 'frobnicate'"));
  EXPECT_THAT(R("{{ 1 is frob }}"), HasSubstr("unknown test 'frob'"));
  EXPECT_THAT(R("{{ nothing() }}"), HasSubstr("'nothing' is not callable"));
  EXPECT_THAT(R("{{ 1 // 0 }}"), HasSubstr("division by zero"));
  EXPECT_THAT(R("{% for x in 3 %}{% endfor %}"), HasSubstr("int is not iterable"));
}

// Found by chat_template_fuzz: an empty string or list repeated a huge number
// of times looped that many times; it is empty at once.
TEST(JinjaTest, EmptyRepetitionIsEmptyAtOnce) {
  EXPECT_EQ(R("[{{ '' * 41111111112 }}]"), "[]");
  EXPECT_EQ(R("{{ ([] * 41111111112) | length }}"), "0");
}

// Found by chat_template_fuzz: 64-bit integer arithmetic that does not fit
// was undefined behaviour; it is an error naming the operator.
TEST(JinjaTest, IntegerOverflowIsAnError) {
  EXPECT_THAT(R("{{ 4937777296321 * 2222111 }}"), HasSubstr("integer overflow in '*'"));
  EXPECT_THAT(R("{{ 4937777296321 ** 3 }}"), HasSubstr("integer overflow in '**'"));
  EXPECT_THAT(R("{{ 9223372036854775807 + 1 }}"), HasSubstr("integer overflow in '+'"));
  EXPECT_THAT(R("{{ -9223372036854775807 - 2 }}"), HasSubstr("integer overflow in '-'"));
  EXPECT_EQ(R("{{ 3037000499 * 3037000499 }}"), "9223372030926249001");
  EXPECT_EQ(R("{{ 2 ** 62 }}"), "4611686018427387904");
}

TEST(JinjaTest, ResourceLimits) {
  Limits small;
  small.max_output_bytes = 100;
  small.max_loop_iterations = 50;
  small.max_call_depth = 8;
  small.max_nesting = 20;
  small.max_template_bytes = 64;
  auto code = [&](const std::string& src) {
    return RenderStatus(src, Json::object(), small).code();
  };
  EXPECT_EQ(code("{% for i in range(40) %}xxxxx{% endfor %}"), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code("{% for i in range(30) %}{% for j in range(2) %}{% endfor %}{% endfor %}"),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code("{{ ((((((((((((((((((((((1)))))))))))))))))))))) }}"),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code(std::string(65, 'a')), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code("{{ 'x' * 1000 }}"), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code("{% set s = 'xxxxxxxxxx' %}{% for i in range(5) %}{% set s = s + s %}{% endfor %}"),
            absl::StatusCode::kResourceExhausted);
  // Values nested without bound (and a namespace holding itself) would
  // overflow the stack when printed or freed.
  Limits chain_limits;
  chain_limits.max_nesting = 20;
  const absl::Status nested = RenderStatus(
      "{% set ns = namespace(x=[]) %}{% for i in range(40) %}{% set ns.x = [ns.x] %}{% endfor %}", Json::object(),
      chain_limits);
  EXPECT_EQ(nested.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(nested.message(), HasSubstr("values nested deeper than 20"));
  const absl::Status cycle = RenderStatus(
      "{% set ns = namespace(x=1) %}{% set ns.x = [ns] %}", Json::object(), chain_limits);
  EXPECT_THAT(cycle.message(), HasSubstr("values nested deeper than 20"));
  EXPECT_EQ(R("{% set ns = namespace(x=[]) %}{% for i in range(3) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
              Json::object(), chain_limits),
            "[[[[]]]]");
  // Long chains nest without parser recursion; they are bounded too.
  std::string chain = "{{ 1";
  for (int i = 0; i < 30; ++i) chain += " + 1";
  EXPECT_EQ(RenderStatus(chain + " }}", Json::object(), chain_limits).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RenderStatus("{{ 'a'" + std::string(30 * 6, ' ') + " }}", Json::object(), chain_limits).code(),
            absl::StatusCode::kOk);
  std::string filters = "{{ 'a'";
  for (int i = 0; i < 30; ++i) filters += "|upper";
  EXPECT_EQ(RenderStatus(filters + " }}", Json::object(), chain_limits).code(),
            absl::StatusCode::kResourceExhausted);
  const absl::Status s = RenderStatus("\n{% for i in range(40) %}xxxxx{% endfor %}", Json::object(), small);
  EXPECT_THAT(s.message(), HasSubstr("line 2"));
  EXPECT_THAT(s.message(), HasSubstr("limit of 100"));
  EXPECT_EQ(R("{% for i in range(10) %}x{% endfor %}", Json::object(), small), "xxxxxxxxxx");
}

TEST(JinjaTest, ParsedTemplateRendersManyContexts) {
  auto t = Template::Parse("{{ a }}-{{ b|default('none') }}");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t->RenderJson({{"a", 1}}), "1-none");
  EXPECT_EQ(*t->RenderJson({{"a", 2}, {"b", "x"}}), "2-x");
  ValueDict ctx = {{"a", Value("v")}};
  EXPECT_EQ(*t->Render(ctx), "v-none");
}

}  // namespace
}  // namespace arbor::runtime::jinja
