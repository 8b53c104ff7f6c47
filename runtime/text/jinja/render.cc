// The interpreter: walks the parsed template with one Renderer per render.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/text/jinja/ast.h"
#include "runtime/text/jinja/parser.h"
#include "runtime/text/jinja/template.h"

namespace arbor::runtime::jinja {

struct Template::Parsed {
  Body body;
};

namespace {

using Status = absl::Status;
template <typename T>
using StatusOr = absl::StatusOr<T>;

Status ErrorAt(Pos pos, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("line ", pos.line, ", column ", pos.column, ": ", message));
}
Status LimitAt(Pos pos, absl::string_view message) {
  return absl::ResourceExhaustedError(
      absl::StrCat("line ", pos.line, ", column ", pos.column, ": ", message));
}
// Integers are 64-bit here (Python's are unbounded): a result that does not
// fit is an error, never wrapped.
Status Overflow(Pos pos, absl::string_view op) {
  return ErrorAt(pos, absl::StrCat("integer overflow in '", op, "' (integers are 64-bit)"));
}
// A builtin's error gets the position of the call (errors from macros have
// their own already).
Status AtCall(Pos pos, const Status& s) {
  if (absl::StartsWith(s.message(), "line ")) return s;
  return Status(s.code(), absl::StrCat("line ", pos.line, ", column ", pos.column, ": ",
                                       s.message()));
}

std::string Quoted(absl::string_view s) { return absl::StrCat("'", s, "'"); }

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string StripChars(absl::string_view s, absl::string_view chars, bool left, bool right) {
  auto strip = [&](char c) {
    return chars.empty() ? IsWs(c) : chars.find(c) != absl::string_view::npos;
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && strip(s[b])) ++b;
  }
  if (right) {
    while (e > b && strip(s[e - 1])) --e;
  }
  return std::string(s.substr(b, e - b));
}

std::string Title(absl::string_view s) {
  std::string out(s);
  bool prev_letter = false;
  for (char& c : out) {
    const bool letter = absl::ascii_isalpha(static_cast<unsigned char>(c));
    if (letter) c = prev_letter ? absl::ascii_tolower(c) : absl::ascii_toupper(c);
    prev_letter = letter;
  }
  return out;
}

std::string Capitalize(absl::string_view s) {
  std::string out = absl::AsciiStrToLower(std::string(s));
  if (!out.empty()) out[0] = absl::ascii_toupper(out[0]);
  return out;
}

std::vector<std::string> Split(absl::string_view s, const Value* sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep == nullptr || sep->is_none()) {  // runs of whitespace, no empty parts
    size_t i = 0;
    while (true) {
      while (i < s.size() && IsWs(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        parts.emplace_back(StripChars(s.substr(i), "", false, true));
        break;
      }
      size_t j = i;
      while (j < s.size() && !IsWs(s[j])) ++j;
      parts.emplace_back(s.substr(i, j - i));
      i = j;
    }
    return parts;
  }
  const std::string& d = sep->as_string();
  size_t start = 0;
  while (true) {
    const size_t p = (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)
                         ? absl::string_view::npos
                         : s.find(d, start);
    if (p == absl::string_view::npos) {
      parts.emplace_back(s.substr(start));
      return parts;
    }
    parts.emplace_back(s.substr(start, p - start));
    start = p + d.size();
  }
}

std::string Replace(absl::string_view s, absl::string_view from, absl::string_view to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` between every character
    int64_t n = 0;
    const std::vector<size_t> cps = CodePointOffsets(s);
    for (size_t i = 0; i + 1 < cps.size(); ++i) {
      if (count < 0 || n < count) {
        absl::StrAppend(&out, to);
        ++n;
      }
      absl::StrAppend(&out, s.substr(cps[i], cps[i + 1] - cps[i]));
    }
    if (count < 0 || n < count) absl::StrAppend(&out, to);
    return out;
  }
  size_t start = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t p = s.find(from, start);
    if (p == absl::string_view::npos) break;
    absl::StrAppend(&out, s.substr(start, p - start));
    absl::StrAppend(&out, to);
    start = p + from.size();
    ++n;
  }
  absl::StrAppend(&out, s.substr(start));
  return out;
}

// Python slice bounds for a sequence of `n` items.
std::vector<int64_t> SliceIndices(int64_t n, const Value& start, const Value& stop, const Value& step_v,
                                  Status* error) {
  int64_t step = 1;
  if (!step_v.is_undefined() && !step_v.is_none()) {
    if (step_v.type() != Value::Type::kInt) {
      *error = absl::InvalidArgumentError("slice step must be an integer");
      return {};
    }
    step = step_v.as_int();
  }
  if (step == 0) {
    *error = absl::InvalidArgumentError("slice step cannot be zero");
    return {};
  }
  auto bound = [&](const Value& v, int64_t def) -> int64_t {
    if (v.is_undefined() || v.is_none()) return def;
    int64_t i = v.as_int();
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  for (const Value* v : {&start, &stop}) {
    if (!v->is_undefined() && !v->is_none() && v->type() != Value::Type::kInt) {
      *error = absl::InvalidArgumentError("slice indices must be integers");
      return {};
    }
  }
  const int64_t b = bound(start, step > 0 ? 0 : n - 1);
  const int64_t e = bound(stop, step > 0 ? n : -1);
  std::vector<int64_t> out;
  if (step > 0) {
    for (int64_t i = b; i < e; i += step) out.push_back(i);
  } else {
    for (int64_t i = b; i > e; i += step) out.push_back(i);
  }
  return out;
}

const Value* Kwarg(const CallArgs& args, absl::string_view name) {
  for (const auto& [k, v] : args.keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}
// Argument `i` by position, else by keyword `name`; nullptr when absent.
const Value* Arg(const CallArgs& args, size_t i, absl::string_view name) {
  if (i < args.positional.size()) return &args.positional[i];
  return Kwarg(args, name);
}

Status WantString(absl::string_view what, const Value* v) {
  if (v == nullptr || !v->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " wants a string, got ", v == nullptr ? "nothing" : v->TypeName()));
  }
  return absl::OkStatus();
}

int Compare(const Value& a, const Value& b, Status* error) {
  if ((a.is_number() || a.type() == Value::Type::kBool) &&
      (b.is_number() || b.type() == Value::Type::kBool)) {
    if (a.type() == Value::Type::kInt && b.type() == Value::Type::kInt) {
      return a.as_int() < b.as_int() ? -1 : (a.as_int() > b.as_int() ? 1 : 0);
    }
    const double x = a.as_number(), y = b.as_number();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list()) {
    const ValueList& x = a.as_list();
    const ValueList& y = b.as_list();
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      const int c = Compare(x[i], y[i], error);
      if (c != 0 || !error->ok()) return c;
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  *error = absl::InvalidArgumentError(absl::StrCat("cannot compare ", a.TypeName(), " with ",
                                                   b.TypeName()));
  return 0;
}

// How deep containers nest in v, counting at most to limit + 1 (so a
// namespace that holds itself stops).
int NestingDepth(const Value& v, int limit) {
  if (limit < 0 || !(v.is_list() || v.is_mapping())) return 0;
  int deepest = 0;
  if (v.is_list()) {
    for (const Value& x : v.as_list()) deepest = std::max(deepest, NestingDepth(x, limit - 1));
  } else {
    for (const auto& kv : v.as_dict()) deepest = std::max(deepest, NestingDepth(kv.second, limit - 1));
  }
  return deepest + 1;
}

class Renderer {
 public:
  Renderer(const Limits& limits, const ValueDict& context) : limits_(limits), context_(context) {
    frames_.emplace_back();
  }

  StatusOr<std::string> Run(const Body& body) {
    ARBOR_ASSIGN_OR_RETURN(Flow flow, ExecBody(body));
    (void)flow;
    return std::move(out_);
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  // --- variables ---------------------------------------------------------
  const Value* Lookup(absl::string_view name) const {
    for (auto f = frames_.rbegin(); f != frames_.rend(); ++f) {
      for (auto it = f->rbegin(); it != f->rend(); ++it) {
        if (it->first == name) return &it->second;
      }
    }
    for (const auto& [k, v] : context_) {
      if (k == name) return &v;
    }
    return nullptr;
  }
  void Assign(const std::string& name, Value value) {
    ValueDict& frame = frames_.back();
    for (auto& [k, v] : frame) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
    frame.emplace_back(name, std::move(value));
  }

  Status CheckSize(Pos pos, size_t n) const {
    if (n > limits_.max_output_bytes) {
      return LimitAt(pos, absl::StrCat("a string of ", n, " bytes passes the limit of ",
                                       limits_.max_output_bytes));
    }
    return absl::OkStatus();
  }

  // Lists built inside loops could nest without bound (and then overflow the
  // stack when printed or freed).
  Status CheckNesting(Pos pos, const Value& v) const {
    if (NestingDepth(v, limits_.max_nesting) > limits_.max_nesting) {
      return LimitAt(pos, absl::StrCat("values nested deeper than ", limits_.max_nesting));
    }
    return absl::OkStatus();
  }

  Status Emit(Pos pos, absl::string_view s) {
    if (out_.size() + s.size() > limits_.max_output_bytes) {
      return LimitAt(pos, absl::StrCat("output passes the limit of ", limits_.max_output_bytes,
                                       " bytes"));
    }
    absl::StrAppend(&out_, s);
    return absl::OkStatus();
  }

  Status CountIteration(Pos pos) {
    if (++iterations_ > limits_.max_loop_iterations) {
      return LimitAt(pos, absl::StrCat("loops ran more than ", limits_.max_loop_iterations,
                                       " iterations"));
    }
    return absl::OkStatus();
  }

  // --- statements --------------------------------------------------------
  StatusOr<Flow> ExecBody(const Body& body) {
    for (const NodePtr& node : body) {
      ARBOR_ASSIGN_OR_RETURN(Flow flow, Exec(*node));
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  StatusOr<Flow> Exec(const Node& node) {
    switch (node.kind) {
      case Node::Kind::kText:
        ARBOR_RETURN_IF_ERROR(Emit(node.pos, node.text));
        return Flow::kNormal;
      case Node::Kind::kOutput: {
        ARBOR_ASSIGN_OR_RETURN(Value v, Eval(*node.expr));
        ARBOR_RETURN_IF_ERROR(Emit(node.pos, v.ToString()));
        return Flow::kNormal;
      }
      case Node::Kind::kIf:
        for (const auto& [cond, body] : node.branches) {
          ARBOR_ASSIGN_OR_RETURN(Value c, Eval(*cond));
          if (c.Truthy()) return ExecBody(body);
        }
        return ExecBody(node.else_body);
      case Node::Kind::kFor:
        return ExecFor(node);
      case Node::Kind::kSet: {
        ARBOR_ASSIGN_OR_RETURN(Value v, Eval(*node.expr));
        if (!node.attribute.empty()) {
          const Value* ns = Lookup(node.targets[0]);
          if (ns == nullptr || ns->type() != Value::Type::kNamespace) {
            return ErrorAt(node.pos, absl::StrCat("cannot set attribute ", Quoted(node.attribute),
                                                  " of ", Quoted(node.targets[0]),
                                                  ": not a namespace()"));
          }
          ns->Set(node.attribute, std::move(v));
          if (NestingDepth(*ns, limits_.max_nesting) > limits_.max_nesting) {
            ns->Set(node.attribute, Value());  // no namespace may hold itself
            return LimitAt(node.pos, absl::StrCat("values nested deeper than ",
                                                  limits_.max_nesting));
          }
          return Flow::kNormal;
        }
        ARBOR_RETURN_IF_ERROR(AssignTargets(node.pos, node.targets, std::move(v)));
        return Flow::kNormal;
      }
      case Node::Kind::kSetBlock: {
        std::string saved = std::move(out_);
        out_.clear();
        StatusOr<Flow> flow = ExecBody(node.body);
        std::string captured = std::move(out_);
        out_ = std::move(saved);
        if (!flow.ok()) return flow.status();
        Assign(node.targets[0], Value(std::move(captured)));
        return Flow::kNormal;
      }
      case Node::Kind::kMacro:
        Assign(node.name, MakeMacro(node));
        return Flow::kNormal;
      case Node::Kind::kBreak:
        if (loop_depth_ == 0) return ErrorAt(node.pos, "'break' outside a loop");
        return Flow::kBreak;
      case Node::Kind::kContinue:
        if (loop_depth_ == 0) return ErrorAt(node.pos, "'continue' outside a loop");
        return Flow::kContinue;
      case Node::Kind::kScope:
        return ExecBody(node.body);
    }
    return Flow::kNormal;
  }

  Status AssignTargets(Pos pos, const std::vector<std::string>& targets, Value v) {
    if (targets.size() == 1) {
      Assign(targets[0], std::move(v));
      return absl::OkStatus();
    }
    if (!v.is_list() || v.as_list().size() != targets.size()) {
      return ErrorAt(pos, absl::StrCat("cannot unpack ", v.TypeName(), " into ", targets.size(),
                                       " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) Assign(targets[i], v.as_list()[i]);
    return absl::OkStatus();
  }

  StatusOr<ValueList> Iterate(Pos pos, const Value& v) {
    switch (v.type()) {
      case Value::Type::kUndefined:
        return ValueList{};
      case Value::Type::kList:
        return v.as_list();
      case Value::Type::kDict:
      case Value::Type::kNamespace: {
        ValueList keys;
        for (const auto& [k, unused] : v.as_dict()) keys.emplace_back(k);
        return keys;
      }
      case Value::Type::kString: {
        const std::string& s = v.as_string();
        const std::vector<size_t> cps = CodePointOffsets(s);
        ValueList chars;
        for (size_t i = 0; i + 1 < cps.size(); ++i) chars.emplace_back(s.substr(cps[i], cps[i + 1] - cps[i]));
        return chars;
      }
      default:
        return ErrorAt(pos, absl::StrCat(v.TypeName(), " is not iterable"));
    }
  }

  StatusOr<Flow> ExecFor(const Node& node) {
    ARBOR_ASSIGN_OR_RETURN(Value iterable, Eval(*node.expr));
    ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(node.expr->pos, iterable));
    if (node.condition != nullptr) {  // the loop filter counts toward loop.length
      ValueList kept;
      for (Value& item : items) {
        ARBOR_RETURN_IF_ERROR(CountIteration(node.pos));
        frames_.emplace_back();
        Status s = AssignTargets(node.pos, node.targets, item);
        StatusOr<Value> keep = s.ok() ? Eval(*node.condition) : StatusOr<Value>(s);
        frames_.pop_back();
        if (!keep.ok()) return keep.status();
        if (keep->Truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return ExecBody(node.else_body);
    const int64_t n = static_cast<int64_t>(items.size());
    ++loop_depth_;
    for (int64_t i = 0; i < n; ++i) {
      Status s = CountIteration(node.pos);
      if (!s.ok()) {
        --loop_depth_;
        return s;
      }
      frames_.emplace_back();
      ValueDict loop = {
          {"index", Value(i + 1)},
          {"index0", Value(i)},
          {"revindex", Value(n - i)},
          {"revindex0", Value(n - i - 1)},
          {"first", Value(i == 0)},
          {"last", Value(i == n - 1)},
          {"length", Value(n)},
          {"previtem", i > 0 ? items[i - 1] : Value()},
          {"nextitem", i + 1 < n ? items[i + 1] : Value()},
      };
      Assign("loop", Value(std::move(loop)));
      s = AssignTargets(node.pos, node.targets, items[i]);
      StatusOr<Flow> flow = s.ok() ? ExecBody(node.body) : StatusOr<Flow>(s);
      frames_.pop_back();
      if (!flow.ok()) {
        --loop_depth_;
        return flow.status();
      }
      if (*flow == Flow::kBreak) break;
    }
    --loop_depth_;
    return Flow::kNormal;
  }

  Value MakeMacro(const Node& node) {
    return Value::Function([this, &node](const CallArgs& args) -> StatusOr<Value> {
      if (call_depth_ >= limits_.max_call_depth) {
        return LimitAt(node.pos, absl::StrCat("macro calls nested deeper than ",
                                              limits_.max_call_depth));
      }
      if (args.positional.size() > node.params.size()) {
        return ErrorAt(node.pos, absl::StrCat("macro ", Quoted(node.name), " takes ",
                                              node.params.size(), " arguments, got ",
                                              args.positional.size()));
      }
      ValueDict frame;
      for (size_t i = 0; i < node.params.size(); ++i) {
        const auto& [name, def] = node.params[i];
        const Value* given = Arg(args, i, name);
        if (given != nullptr) {
          frame.emplace_back(name, *given);
        } else if (def != nullptr) {
          ARBOR_ASSIGN_OR_RETURN(Value d, Eval(*def));
          frame.emplace_back(name, std::move(d));
        } else {
          frame.emplace_back(name, Value());
        }
      }
      // The macro sees the template's top-level names and its arguments.
      std::vector<ValueDict> saved = std::move(frames_);
      frames_.clear();
      frames_.push_back(saved.front());
      frames_.push_back(std::move(frame));
      std::string saved_out = std::move(out_);
      out_.clear();
      const int saved_loops = loop_depth_;
      loop_depth_ = 0;
      ++call_depth_;
      StatusOr<Flow> flow = ExecBody(node.body);
      --call_depth_;
      loop_depth_ = saved_loops;
      std::string result = std::move(out_);
      out_ = std::move(saved_out);
      // Assignments made by the macro stay in its own scope.
      frames_ = std::move(saved);
      if (!flow.ok()) return flow.status();
      return Value(std::move(result));
    });
  }

  // --- expressions -------------------------------------------------------
  StatusOr<Value> Eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName: {
        const Value* v = Lookup(e.name);
        if (v != nullptr) return *v;
        return Builtin(e.name);
      }
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        ValueList list;
        for (const ExprPtr& a : e.args) {
          ARBOR_ASSIGN_OR_RETURN(Value v, Eval(*a));
          list.push_back(std::move(v));
        }
        Value value(std::move(list));
        ARBOR_RETURN_IF_ERROR(CheckNesting(e.pos, value));
        return value;
      }
      case Expr::Kind::kDict: {
        Value dict{ValueDict{}};
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          ARBOR_ASSIGN_OR_RETURN(Value k, Eval(*e.args[i]));
          if (!k.is_string()) return ErrorAt(e.args[i]->pos, "dict keys must be strings");
          ARBOR_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i + 1]));
          dict.Set(k.as_string(), std::move(v));
        }
        ARBOR_RETURN_IF_ERROR(CheckNesting(e.pos, dict));
        return dict;
      }
      case Expr::Kind::kGetAttr: {
        ARBOR_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        return GetAttr(e.pos, obj, e.name, *e.args[0]);
      }
      case Expr::Kind::kGetItem: {
        ARBOR_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        ARBOR_ASSIGN_OR_RETURN(Value key, Eval(*e.args[1]));
        return GetItem(e.pos, obj, key, *e.args[0]);
      }
      case Expr::Kind::kSlice:
        return EvalSlice(e);
      case Expr::Kind::kCall: {
        ARBOR_ASSIGN_OR_RETURN(Value callee, Eval(*e.args[0]));
        if (!callee.is_callable()) {
          return ErrorAt(e.pos, absl::StrCat(Describe(*e.args[0]), " is not callable (it is ",
                                             callee.TypeName(), ")"));
        }
        ARBOR_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
        StatusOr<Value> r = callee.as_callable()(args);
        if (!r.ok()) return AtCall(e.pos, r.status());
        return r;
      }
      case Expr::Kind::kFilter: {
        ARBOR_ASSIGN_OR_RETURN(Value subject, Eval(*e.args[0]));
        ARBOR_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
        StatusOr<Value> r = Filter(e.pos, e.name, subject, args);
        if (!r.ok()) return AtCall(e.pos, r.status());
        return r;
      }
      case Expr::Kind::kTest: {
        ARBOR_ASSIGN_OR_RETURN(Value subject, Eval(*e.args[0]));
        ARBOR_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
        StatusOr<bool> r = Test(e.name, subject, args);
        if (!r.ok()) return AtCall(e.pos, r.status());
        return Value(*r != e.negated);
      }
      case Expr::Kind::kUnary: {
        ARBOR_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        if (e.name == "not") return Value(!v.Truthy());
        if (v.type() == Value::Type::kInt) return e.name == "-" ? Value(-v.as_int()) : v;
        if (v.type() == Value::Type::kFloat) return e.name == "-" ? Value(-v.as_number()) : v;
        return ErrorAt(e.pos, absl::StrCat("bad operand type for unary ", e.name, ": ",
                                           v.TypeName()));
      }
      case Expr::Kind::kBinary:
        return EvalBinary(e);
      case Expr::Kind::kCondition: {
        ARBOR_ASSIGN_OR_RETURN(Value c, Eval(*e.args[1]));
        if (c.Truthy()) return Eval(*e.args[0]);
        if (e.args[2] == nullptr) return Value();
        return Eval(*e.args[2]);
      }
    }
    return Value();
  }

  std::string Describe(const Expr& e) const {
    if (e.kind == Expr::Kind::kName) return Quoted(e.name);
    if (e.kind == Expr::Kind::kGetAttr) return absl::StrCat(Describe(*e.args[0]), ".", e.name);
    return "the value";
  }

  StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first) {
    CallArgs args;
    for (size_t i = first; i < e.args.size(); ++i) {
      ARBOR_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [k, ex] : e.kwargs) {
      ARBOR_ASSIGN_OR_RETURN(Value v, Eval(*ex));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  StatusOr<Value> GetAttr(Pos pos, const Value& obj, const std::string& name, const Expr& of) {
    if (obj.is_undefined()) {
      return ErrorAt(pos, absl::StrCat(Describe(of), " is undefined (reading ", Quoted(name), ")"));
    }
    if (obj.is_string()) {
      if (Value m = StringMethod(obj, name); !m.is_undefined()) return m;
      return Value();
    }
    if (obj.type() == Value::Type::kDict) {
      if (Value m = DictMethod(obj, name); !m.is_undefined()) return m;
    }
    if (obj.is_mapping()) {
      const Value* v = obj.Find(name);
      return v != nullptr ? *v : Value();
    }
    return Value();
  }

  StatusOr<Value> GetItem(Pos pos, const Value& obj, const Value& key, const Expr& of) {
    if (obj.is_undefined()) {
      return ErrorAt(pos, absl::StrCat(Describe(of), " is undefined (reading [", key.Repr(), "])"));
    }
    if (obj.is_mapping()) {
      if (!key.is_string()) return Value();
      const Value* v = obj.Find(key.as_string());
      if (v != nullptr) return *v;
      if (obj.type() == Value::Type::kDict) return DictMethod(obj, key.as_string());
      return Value();
    }
    if (obj.is_list() || obj.is_string()) {
      if (key.is_string()) return obj.is_string() ? StringMethod(obj, key.as_string()) : Value();
      if (key.type() != Value::Type::kInt) {
        return ErrorAt(pos, absl::StrCat("indices must be integers, not ", key.TypeName()));
      }
      int64_t i = key.as_int();
      if (obj.is_list()) {
        const int64_t n = static_cast<int64_t>(obj.as_list().size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value();
        return obj.as_list()[i];
      }
      const std::vector<size_t> cps = CodePointOffsets(obj.as_string());
      const int64_t n = static_cast<int64_t>(cps.size()) - 1;
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return Value(obj.as_string().substr(cps[i], cps[i + 1] - cps[i]));
    }
    return Value();
  }

  StatusOr<Value> EvalSlice(const Expr& e) {
    ARBOR_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
    Value parts[3];
    for (int i = 0; i < 3; ++i) {
      if (e.args[i + 1] != nullptr) {
        ARBOR_ASSIGN_OR_RETURN(parts[i], Eval(*e.args[i + 1]));
      }
    }
    Status error;
    if (obj.is_list()) {
      const ValueList& list = obj.as_list();
      std::vector<int64_t> idx =
          SliceIndices(static_cast<int64_t>(list.size()), parts[0], parts[1], parts[2], &error);
      if (!error.ok()) return AtCall(e.pos, error);
      ValueList out;
      out.reserve(idx.size());
      for (int64_t i : idx) out.push_back(list[i]);
      return Value(std::move(out));
    }
    if (obj.is_string()) {
      const std::string& s = obj.as_string();
      const std::vector<size_t> cps = CodePointOffsets(s);
      std::vector<int64_t> idx =
          SliceIndices(static_cast<int64_t>(cps.size()) - 1, parts[0], parts[1], parts[2], &error);
      if (!error.ok()) return AtCall(e.pos, error);
      std::string out;
      for (int64_t i : idx) out.append(s, cps[i], cps[i + 1] - cps[i]);
      return Value(std::move(out));
    }
    if (obj.is_undefined()) return ErrorAt(e.pos, absl::StrCat(Describe(*e.args[0]), " is undefined"));
    return ErrorAt(e.pos, absl::StrCat("cannot slice ", obj.TypeName()));
  }

  StatusOr<Value> EvalBinary(const Expr& e) {
    const std::string& op = e.name;
    ARBOR_ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
    if (op == "and") {
      if (!a.Truthy()) return a;
      return Eval(*e.args[1]);
    }
    if (op == "or") {
      if (a.Truthy()) return a;
      return Eval(*e.args[1]);
    }
    ARBOR_ASSIGN_OR_RETURN(Value b, Eval(*e.args[1]));
    if (op == "==") return Value(a.Equals(b));
    if (op == "!=") return Value(!a.Equals(b));
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      Status error;
      const int c = Compare(a, b, &error);
      if (!error.ok()) return AtCall(e.pos, error);
      if (op == "<") return Value(c < 0);
      if (op == ">") return Value(c > 0);
      if (op == "<=") return Value(c <= 0);
      return Value(c >= 0);
    }
    if (op == "in" || op == "not in") {
      ARBOR_ASSIGN_OR_RETURN(bool in, Contains(e.pos, b, a));
      return Value(in == (op == "in"));
    }
    if (op == "~") {
      std::string s = a.ToString() + b.ToString();
      ARBOR_RETURN_IF_ERROR(CheckSize(e.pos, s.size()));
      return Value(std::move(s));
    }
    const bool ints = a.type() == Value::Type::kInt && b.type() == Value::Type::kInt;
    const bool nums = (a.is_number() || a.type() == Value::Type::kBool) &&
                      (b.is_number() || b.type() == Value::Type::kBool);
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        ARBOR_RETURN_IF_ERROR(CheckSize(e.pos, a.as_string().size() + b.as_string().size()));
        return Value(a.as_string() + b.as_string());
      }
      if (a.is_list() && b.is_list()) {
        ValueList out = a.as_list();
        out.insert(out.end(), b.as_list().begin(), b.as_list().end());
        return Value(std::move(out));
      }
      if (ints) {
        int64_t r;
        if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) return Overflow(e.pos, op);
        return Value(r);
      }
      if (nums) return Value(a.as_number() + b.as_number());
    } else if (op == "-") {
      if (ints) {
        int64_t r;
        if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) return Overflow(e.pos, op);
        return Value(r);
      }
      if (nums) return Value(a.as_number() - b.as_number());
    } else if (op == "*") {
      if ((a.is_string() || a.is_list()) && b.type() == Value::Type::kInt) std::swap(a, b);
      if ((b.is_string() || b.is_list()) && a.type() == Value::Type::kInt) {
        const int64_t times = std::max<int64_t>(0, a.as_int());
        const size_t unit = b.is_string() ? b.as_string().size() : b.as_list().size();
        // An empty unit repeats to itself at once, however large the count.
        if (unit == 0) return b;
        if (static_cast<uint64_t>(times) > limits_.max_output_bytes / unit) {
          return LimitAt(e.pos, "repetition passes the output limit");
        }
        if (b.is_string()) {
          std::string out;
          for (int64_t i = 0; i < times; ++i) out += b.as_string();
          return Value(std::move(out));
        }
        ValueList out;
        for (int64_t i = 0; i < times; ++i) out.insert(out.end(), b.as_list().begin(), b.as_list().end());
        return Value(std::move(out));
      }
      if (ints) {
        int64_t r;
        if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) return Overflow(e.pos, op);
        return Value(r);
      }
      if (nums) return Value(a.as_number() * b.as_number());
    } else if (op == "/") {
      if (nums) {
        if (b.as_number() == 0) return ErrorAt(e.pos, "division by zero");
        return Value(a.as_number() / b.as_number());
      }
    } else if (op == "//" || op == "%") {
      if (nums) {
        if (b.as_number() == 0) return ErrorAt(e.pos, "division by zero");
        if (ints) {
          const int64_t x = a.as_int(), y = b.as_int();
          if (x == INT64_MIN && y == -1) return Overflow(e.pos, op);
          int64_t q = x / y;
          if ((x % y != 0) && ((x < 0) != (y < 0))) --q;  // Python floors
          return op == "//" ? Value(q) : Value(x - q * y);
        }
        const double x = a.as_number(), y = b.as_number();
        const double q = std::floor(x / y);
        return op == "//" ? Value(q) : Value(x - q * y);
      }
      if (op == "%" && a.is_string()) return ErrorAt(e.pos, "'%' string formatting is not supported");
    } else if (op == "**") {
      if (ints && b.as_int() >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < b.as_int() && i < 64; ++i) {
          if (__builtin_mul_overflow(r, a.as_int(), &r)) return Overflow(e.pos, op);
        }
        return Value(r);
      }
      if (nums) return Value(std::pow(a.as_number(), b.as_number()));
    }
    return ErrorAt(e.pos, absl::StrCat("unsupported operand types for ", op, ": ", a.TypeName(),
                                       " and ", b.TypeName()));
  }

  StatusOr<bool> Contains(Pos pos, const Value& container, const Value& item) {
    if (container.is_string()) {
      if (!item.is_string()) {
        return ErrorAt(pos, absl::StrCat("'in <string>' needs a string on the left, not ",
                                         item.TypeName()));
      }
      return absl::StrContains(container.as_string(), item.as_string());
    }
    if (container.is_list()) {
      for (const Value& v : container.as_list()) {
        if (v.Equals(item)) return true;
      }
      return false;
    }
    if (container.is_mapping()) {
      return item.is_string() && container.Find(item.as_string()) != nullptr;
    }
    if (container.is_undefined()) return false;
    return ErrorAt(pos, absl::StrCat("argument of type ", container.TypeName(), " is not iterable"));
  }

  // --- builtins ----------------------------------------------------------
  StatusOr<Value> Builtin(const std::string& name) {
    if (name == "raise_exception") {
      return Value::Function([](const CallArgs& args) -> StatusOr<Value> {
        const std::string message =
            args.positional.empty() ? "(no message)" : args.positional[0].ToString();
        return absl::InvalidArgumentError(absl::StrCat("raise_exception: ", message));
      });
    }
    if (name == "namespace") {
      return Value::Function([](const CallArgs& args) -> StatusOr<Value> {
        ValueDict attrs;
        for (const Value& p : args.positional) {
          if (!p.is_mapping()) return absl::InvalidArgumentError("namespace() takes a dict");
          attrs.insert(attrs.end(), p.as_dict().begin(), p.as_dict().end());
        }
        for (const auto& kv : args.keyword) attrs.push_back(kv);
        return Value::Namespace(std::move(attrs));
      });
    }
    if (name == "dict") {
      return Value::Function([](const CallArgs& args) -> StatusOr<Value> {
        Value d{ValueDict{}};
        for (const auto& [k, v] : args.keyword) d.Set(k, v);
        return d;
      });
    }
    if (name == "range") {
      const int64_t cap = limits_.max_loop_iterations;
      return Value::Function([cap](const CallArgs& args) -> StatusOr<Value> {
        int64_t v[3] = {0, 0, 1};
        const size_t n = args.positional.size();
        if (n < 1 || n > 3) return absl::InvalidArgumentError("range() takes 1 to 3 integers");
        for (size_t i = 0; i < n; ++i) {
          if (args.positional[i].type() != Value::Type::kInt) {
            return absl::InvalidArgumentError("range() takes integers");
          }
        }
        if (n == 1) {
          v[1] = args.positional[0].as_int();
        } else {
          v[0] = args.positional[0].as_int();
          v[1] = args.positional[1].as_int();
          if (n == 3) v[2] = args.positional[2].as_int();
        }
        if (v[2] == 0) return absl::InvalidArgumentError("range() step must not be zero");
        ValueList out;
        for (int64_t i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2]) {
          if (static_cast<int64_t>(out.size()) >= cap) {
            return absl::ResourceExhaustedError(absl::StrCat("range() longer than ", cap));
          }
          out.emplace_back(i);
        }
        return Value(std::move(out));
      });
    }
    if (name == "strftime_now") {
      return Value::Function([](const CallArgs& args) -> StatusOr<Value> {
        if (args.positional.empty() || !args.positional[0].is_string()) {
          return absl::InvalidArgumentError("strftime_now() takes a format string");
        }
        const std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        char buf[256];
        const size_t n = std::strftime(buf, sizeof(buf), args.positional[0].as_string().c_str(), &tm);
        return Value(std::string(buf, n));
      });
    }
    return Value();  // undefined
  }

  static Value Bound(Callable fn) { return Value::Function(std::move(fn)); }

  Value StringMethod(const Value& obj, const std::string& name) {
    const std::string s = obj.as_string();
    const size_t cap = limits_.max_output_bytes;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool l = name != "rstrip", r = name != "lstrip";
      return Bound([s, l, r](const CallArgs& args) -> StatusOr<Value> {
        const Value* chars = Arg(args, 0, "chars");
        if (chars != nullptr && !chars->is_none()) {
          ARBOR_RETURN_IF_ERROR(WantString("strip()", chars));
          return Value(StripChars(s, chars->as_string(), l, r));
        }
        return Value(StripChars(s, "", l, r));
      });
    }
    if (name == "startswith" || name == "endswith") {
      const bool start = name == "startswith";
      return Bound([s, start](const CallArgs& args) -> StatusOr<Value> {
        const Value* p = Arg(args, 0, "prefix");
        std::vector<std::string> options;
        if (p != nullptr && p->is_list()) {
          for (const Value& v : p->as_list()) {
            ARBOR_RETURN_IF_ERROR(WantString(start ? "startswith()" : "endswith()", &v));
            options.push_back(v.as_string());
          }
        } else {
          ARBOR_RETURN_IF_ERROR(WantString(start ? "startswith()" : "endswith()", p));
          options.push_back(p->as_string());
        }
        for (const std::string& o : options) {
          if (start ? absl::StartsWith(s, o) : absl::EndsWith(s, o)) return Value(true);
        }
        return Value(false);
      });
    }
    if (name == "split") {
      return Bound([s](const CallArgs& args) -> StatusOr<Value> {
        const Value* sep = Arg(args, 0, "sep");
        const Value* maxsplit = Arg(args, 1, "maxsplit");
        if (sep != nullptr && !sep->is_none()) {
          ARBOR_RETURN_IF_ERROR(WantString("split()", sep));
          if (sep->as_string().empty()) return absl::InvalidArgumentError("split(): empty separator");
        }
        const int64_t max = maxsplit != nullptr && maxsplit->type() == Value::Type::kInt
                                ? maxsplit->as_int()
                                : -1;
        ValueList out;
        for (std::string& part : Split(s, sep, max)) out.emplace_back(std::move(part));
        return Value(std::move(out));
      });
    }
    if (name == "replace") {
      return Bound([s, cap](const CallArgs& args) -> StatusOr<Value> {
        const Value* from = Arg(args, 0, "old");
        const Value* to = Arg(args, 1, "new");
        const Value* count = Arg(args, 2, "count");
        ARBOR_RETURN_IF_ERROR(WantString("replace()", from));
        ARBOR_RETURN_IF_ERROR(WantString("replace()", to));
        std::string out = Replace(s, from->as_string(), to->as_string(),
                                  count != nullptr && count->type() == Value::Type::kInt ? count->as_int() : -1);
        if (out.size() > cap) return absl::ResourceExhaustedError("replace() passes the output limit");
        return Value(std::move(out));
      });
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      return Bound([s, name](const CallArgs&) -> StatusOr<Value> {
        if (name == "upper") return Value(absl::AsciiStrToUpper(s));
        if (name == "lower") return Value(absl::AsciiStrToLower(s));
        if (name == "title") return Value(Title(s));
        return Value(Capitalize(s));
      });
    }
    if (name == "find" || name == "count") {
      const bool find = name == "find";
      return Bound([s, find](const CallArgs& args) -> StatusOr<Value> {
        const Value* sub = Arg(args, 0, "sub");
        ARBOR_RETURN_IF_ERROR(WantString(find ? "find()" : "count()", sub));
        const std::string& t = sub->as_string();
        if (find) {
          const size_t p = s.find(t);
          if (p == std::string::npos) return Value(int64_t{-1});
          return Value(static_cast<int64_t>(CodePointOffsets(s.substr(0, p)).size() - 1));
        }
        if (t.empty()) return Value(static_cast<int64_t>(CodePointOffsets(s).size()));
        int64_t n = 0;
        for (size_t p = s.find(t); p != std::string::npos; p = s.find(t, p + t.size())) ++n;
        return Value(n);
      });
    }
    if (name == "join") {
      return Bound([s, cap](const CallArgs& args) -> StatusOr<Value> {
        const Value* items = Arg(args, 0, "iterable");
        if (items == nullptr || !items->is_list()) {
          return absl::InvalidArgumentError("join() takes a list of strings");
        }
        std::string out;
        for (size_t i = 0; i < items->as_list().size(); ++i) {
          const Value& v = items->as_list()[i];
          ARBOR_RETURN_IF_ERROR(WantString("join()", &v));
          if (i > 0) out += s;
          out += v.as_string();
          if (out.size() > cap) return absl::ResourceExhaustedError("join() passes the output limit");
        }
        return Value(std::move(out));
      });
    }
    return Value();
  }

  static Value DictMethod(const Value& obj, const std::string& name) {
    if (name == "items" || name == "keys" || name == "values") {
      return Bound([obj, name](const CallArgs&) -> StatusOr<Value> {
        ValueList out;
        for (const auto& [k, v] : obj.as_dict()) {
          if (name == "items") {
            out.emplace_back(ValueList{Value(k), v});
          } else {
            out.push_back(name == "keys" ? Value(k) : v);
          }
        }
        return Value(std::move(out));
      });
    }
    if (name == "get") {
      return Bound([obj](const CallArgs& args) -> StatusOr<Value> {
        const Value* key = Arg(args, 0, "key");
        ARBOR_RETURN_IF_ERROR(WantString("get()", key));
        const Value* v = obj.Find(key->as_string());
        if (v != nullptr) return *v;
        const Value* def = Arg(args, 1, "default");
        return def != nullptr ? *def : Value::None();
      });
    }
    return Value();
  }

  // --- filters and tests ---------------------------------------------------
  StatusOr<Value> Attribute(Pos pos, const Value& v, const std::string& path) {
    Value cur = v;
    for (absl::string_view part : absl::StrSplit(path, '.')) {
      if (cur.is_undefined()) return cur;
      const std::string p(part);
      if (cur.is_list() && !p.empty() && absl::ascii_isdigit(p[0])) {
        ARBOR_ASSIGN_OR_RETURN(cur, GetItem(pos, cur, Value(static_cast<int64_t>(std::stoll(p))), Expr{}));
      } else if (cur.is_mapping()) {
        const Value* f = cur.Find(p);
        cur = f != nullptr ? *f : Value();
      } else {
        cur = Value();
      }
    }
    return cur;
  }

  StatusOr<Value> Filter(Pos pos, const std::string& name, const Value& v, const CallArgs& args) {
    if (name == "safe" || (name == "list" && v.is_list())) return v;
    if (name == "trim") {
      ARBOR_RETURN_IF_ERROR(WantString("trim", &v));
      const Value* chars = Arg(args, 0, "chars");
      return Value(StripChars(v.as_string(), chars != nullptr && chars->is_string() ? chars->as_string() : "",
                              true, true));
    }
    if (name == "length" || name == "count") {
      if (v.is_string()) return Value(static_cast<int64_t>(CodePointOffsets(v.as_string()).size() - 1));
      if (v.is_list()) return Value(static_cast<int64_t>(v.as_list().size()));
      if (v.is_mapping()) return Value(static_cast<int64_t>(v.as_dict().size()));
      if (v.is_undefined()) return Value(int64_t{0});
      return absl::InvalidArgumentError(absl::StrCat("length of ", v.TypeName()));
    }
    if (name == "tojson") {
      const Value* indent = Arg(args, 0, "indent");
      const Value* sort = Kwarg(args, "sort_keys");
      std::string s = v.ToJson(indent != nullptr && indent->type() == Value::Type::kInt ? indent->as_int() : -1,
                               sort != nullptr && sort->Truthy());
      ARBOR_RETURN_IF_ERROR(CheckSize(pos, s.size()));
      return Value(std::move(s));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      const std::string s = v.ToString();
      if (name == "upper") return Value(absl::AsciiStrToUpper(s));
      if (name == "lower") return Value(absl::AsciiStrToLower(s));
      if (name == "title") return Value(Title(s));
      return Value(Capitalize(s));
    }
    if (name == "default" || name == "d") {
      const Value* def = Arg(args, 0, "default_value");
      const Value* boolean = Arg(args, 1, "boolean");
      const bool use_default =
          v.is_undefined() || (boolean != nullptr && boolean->Truthy() && !v.Truthy());
      if (use_default) return def != nullptr ? *def : Value("");
      return v;
    }
    if (name == "join") {
      const Value* sep = Arg(args, 0, "d");
      const Value* attribute = Arg(args, 1, "attribute");
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0 && sep != nullptr) out += sep->ToString();
        if (attribute != nullptr && attribute->is_string()) {
          ARBOR_ASSIGN_OR_RETURN(Value a, Attribute(pos, items[i], attribute->as_string()));
          out += a.ToString();
        } else {
          out += items[i].ToString();
        }
        ARBOR_RETURN_IF_ERROR(CheckSize(pos, out.size()));
      }
      return Value(std::move(out));
    }
    if (name == "first" || name == "last") {
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      if (items.empty()) return Value();
      return name == "first" ? items.front() : items.back();
    }
    if (name == "items") {
      if (v.is_undefined()) return Value(ValueList{});
      if (!v.is_mapping()) return absl::InvalidArgumentError(absl::StrCat("items of ", v.TypeName()));
      ValueList out;
      for (const auto& [k, x] : v.as_dict()) out.emplace_back(ValueList{Value(k), x});
      return Value(std::move(out));
    }
    if (name == "list") {
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      return Value(std::move(items));
    }
    if (name == "string") return Value(v.ToString());
    if (name == "int") {
      const Value* def = Arg(args, 0, "default");
      if (v.type() == Value::Type::kInt) return v;
      if (v.type() == Value::Type::kBool) return Value(static_cast<int64_t>(v.as_bool()));
      if (v.type() == Value::Type::kFloat) return Value(static_cast<int64_t>(v.as_number()));
      if (v.is_string()) {
        const std::string t = StripChars(v.as_string(), "", true, true);
        char* end = nullptr;
        errno = 0;
        const long long i = std::strtoll(t.c_str(), &end, 10);
        if (!t.empty() && end == t.c_str() + t.size() && errno == 0) return Value(static_cast<int64_t>(i));
        const double d = std::strtod(t.c_str(), &end);
        if (!t.empty() && end == t.c_str() + t.size()) return Value(static_cast<int64_t>(d));
      }
      return def != nullptr ? *def : Value(int64_t{0});
    }
    if (name == "float") {
      if (v.is_number()) return Value(v.as_number());
      if (v.is_string()) {
        char* end = nullptr;
        const double d = std::strtod(v.as_string().c_str(), &end);
        if (!v.as_string().empty() && end == v.as_string().c_str() + v.as_string().size()) return Value(d);
      }
      const Value* def = Arg(args, 0, "default");
      return def != nullptr ? *def : Value(0.0);
    }
    if (name == "abs") {
      if (v.type() == Value::Type::kInt) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
      if (v.is_number()) return Value(std::fabs(v.as_number()));
      return absl::InvalidArgumentError(absl::StrCat("abs of ", v.TypeName()));
    }
    if (name == "replace") {
      ARBOR_RETURN_IF_ERROR(WantString("replace", &v));
      const Value* from = Arg(args, 0, "old");
      const Value* to = Arg(args, 1, "new");
      const Value* count = Arg(args, 2, "count");
      ARBOR_RETURN_IF_ERROR(WantString("replace", from));
      ARBOR_RETURN_IF_ERROR(WantString("replace", to));
      std::string out = Replace(v.as_string(), from->as_string(), to->as_string(),
                                count != nullptr && count->type() == Value::Type::kInt ? count->as_int() : -1);
      ARBOR_RETURN_IF_ERROR(CheckSize(pos, out.size()));
      return Value(std::move(out));
    }
    if (name == "reverse") {
      if (v.is_string()) {
        const std::string& s = v.as_string();
        const std::vector<size_t> cps = CodePointOffsets(s);
        std::string out;
        for (size_t i = cps.size() - 1; i > 0; --i) out.append(s, cps[i - 1], cps[i] - cps[i - 1]);
        return Value(std::move(out));
      }
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      std::reverse(items.begin(), items.end());
      return Value(std::move(items));
    }
    if (name == "escape" || name == "e") {
      std::string out;
      for (char c : v.ToString()) {
        switch (c) {
          case '&': out += "&amp;"; break;
          case '<': out += "&lt;"; break;
          case '>': out += "&gt;"; break;
          case '"': out += "&#34;"; break;
          case '\'': out += "&#39;"; break;
          default: out.push_back(c);
        }
      }
      return Value(std::move(out));
    }
    if (name == "indent") {
      const Value* width = Arg(args, 0, "width");
      const Value* first = Arg(args, 1, "first");
      const Value* blank = Arg(args, 2, "blank");
      std::string pad = width == nullptr ? "    "
                        : width->is_string() ? width->as_string()
                                             : std::string(std::clamp<int64_t>(width->as_int(), 0, 1000), ' ');
      const std::string s = v.ToString();
      std::string out;
      bool line_start = first != nullptr && first->Truthy();
      for (size_t i = 0; i < s.size(); ++i) {
        if (line_start && (s[i] != '\n' || (blank != nullptr && blank->Truthy()))) out += pad;
        line_start = false;
        out.push_back(s[i]);
        if (s[i] == '\n') line_start = true;
      }
      ARBOR_RETURN_IF_ERROR(CheckSize(pos, out.size()));
      return Value(std::move(out));
    }
    if (name == "sum") {
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      bool all_int = true;
      int64_t is = 0;
      double ds = 0;
      for (const Value& x : items) {
        if (!x.is_number()) return absl::InvalidArgumentError("sum of non-numbers");
        all_int = all_int && x.type() == Value::Type::kInt;
        if (x.type() == Value::Type::kInt) is += x.as_int();
        ds += x.as_number();
      }
      return all_int ? Value(is) : Value(ds);
    }
    if (name == "unique") {
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      ValueList out;
      for (const Value& x : items) {
        if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return y.Equals(x); })) {
          out.push_back(x);
        }
      }
      return Value(std::move(out));
    }
    if (name == "sort") {
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      const Value* reverse = Arg(args, 0, "reverse");
      const Value* attribute = Kwarg(args, "attribute");
      std::vector<std::pair<Value, Value>> keyed;
      for (Value& x : items) {
        Value key = x;
        if (attribute != nullptr && attribute->is_string()) {
          ARBOR_ASSIGN_OR_RETURN(key, Attribute(pos, x, attribute->as_string()));
        }
        keyed.emplace_back(std::move(key), std::move(x));
      }
      Status error;
      std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
        return Compare(a.first, b.first, &error) < 0;
      });
      if (!error.ok()) return error;
      ValueList out;
      for (auto& [k, x] : keyed) out.push_back(std::move(x));
      if (reverse != nullptr && reverse->Truthy()) std::reverse(out.begin(), out.end());
      return Value(std::move(out));
    }
    if (name == "map") {
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      const Value* attribute = Kwarg(args, "attribute");
      ValueList out;
      if (attribute != nullptr) {
        ARBOR_RETURN_IF_ERROR(WantString("map(attribute=)", attribute));
        const Value* def = Kwarg(args, "default");
        for (const Value& x : items) {
          ARBOR_ASSIGN_OR_RETURN(Value a, Attribute(pos, x, attribute->as_string()));
          out.push_back(a.is_undefined() && def != nullptr ? *def : a);
        }
        return Value(std::move(out));
      }
      if (args.positional.empty() || !args.positional[0].is_string()) {
        return absl::InvalidArgumentError("map() takes a filter name or attribute=");
      }
      CallArgs rest;
      rest.positional.assign(args.positional.begin() + 1, args.positional.end());
      for (const Value& x : items) {
        ARBOR_ASSIGN_OR_RETURN(Value y, Filter(pos, args.positional[0].as_string(), x, rest));
        out.push_back(std::move(y));
      }
      return Value(std::move(out));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool by_attr = name == "selectattr" || name == "rejectattr";
      const bool keep_if = name == "select" || name == "selectattr";
      ARBOR_ASSIGN_OR_RETURN(ValueList items, Iterate(pos, v));
      size_t next = 0;
      std::string attribute;
      if (by_attr) {
        if (args.positional.empty() || !args.positional[0].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(name, "() takes an attribute name"));
        }
        attribute = args.positional[0].as_string();
        next = 1;
      }
      std::string test;
      if (next < args.positional.size()) {
        ARBOR_RETURN_IF_ERROR(WantString(absl::StrCat(name, "() test"), &args.positional[next]));
        test = args.positional[next].as_string();
        ++next;
      }
      CallArgs test_args;
      test_args.positional.assign(args.positional.begin() + std::min(next, args.positional.size()),
                                  args.positional.end());
      ValueList out;
      for (const Value& x : items) {
        Value subject = x;
        if (by_attr) {
          ARBOR_ASSIGN_OR_RETURN(subject, Attribute(pos, x, attribute));
        }
        bool pass = subject.Truthy();
        if (!test.empty()) {
          ARBOR_ASSIGN_OR_RETURN(pass, Test(test, subject, test_args));
        }
        if (pass == keep_if) out.push_back(x);
      }
      return Value(std::move(out));
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown filter ", Quoted(name)));
  }

  StatusOr<bool> Test(const std::string& name, const Value& v, const CallArgs& args) {
    const Value* arg = Arg(args, 0, "value");
    using T = Value::Type;
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.type() == T::kBool;
    if (name == "true") return v.type() == T::kBool && v.as_bool();
    if (name == "false") return v.type() == T::kBool && !v.as_bool();
    if (name == "integer") return v.type() == T::kInt;
    if (name == "float") return v.type() == T::kFloat;
    if (name == "number") return v.is_number();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.is_mapping();
    if (name == "iterable") return v.is_list() || v.is_string() || v.is_mapping();
    if (name == "sequence") return v.is_list() || v.is_string() || v.is_mapping();
    if (name == "callable") return v.is_callable();
    if (name == "lower") return v.is_string() && absl::AsciiStrToLower(v.as_string()) == v.as_string();
    if (name == "upper") return v.is_string() && absl::AsciiStrToUpper(v.as_string()) == v.as_string();
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (v.type() != T::kInt) return absl::InvalidArgumentError(absl::StrCat("'", name, "' test of ", v.TypeName()));
      if (name == "divisibleby") {
        if (arg == nullptr || arg->type() != T::kInt || arg->as_int() == 0) {
          return absl::InvalidArgumentError("'divisibleby' takes a non-zero integer");
        }
        return v.as_int() % arg->as_int() == 0;
      }
      return (v.as_int() % 2 != 0) == (name == "odd");
    }
    if (arg == nullptr && (name == "eq" || name == "equalto" || name == "==" || name == "ne" ||
                           name == "!=" || name == "lt" || name == "<" || name == "gt" ||
                           name == ">" || name == "le" || name == "<=" || name == "ge" ||
                           name == ">=" || name == "in" || name == "sameas")) {
      return absl::InvalidArgumentError(absl::StrCat("test ", Quoted(name), " takes an argument"));
    }
    if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") return v.Equals(*arg);
    if (name == "ne" || name == "!=") return !v.Equals(*arg);
    if (name == "in") return Contains(Pos{}, *arg, v);
    if (name == "lt" || name == "<" || name == "gt" || name == ">" || name == "le" ||
        name == "<=" || name == "ge" || name == ">=") {
      Status error;
      const int c = Compare(v, *arg, &error);
      if (!error.ok()) return error;
      if (name == "lt" || name == "<") return c < 0;
      if (name == "gt" || name == ">") return c > 0;
      if (name == "le" || name == "<=") return c <= 0;
      return c >= 0;
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown test ", Quoted(name)));
  }

  const Limits& limits_;
  const ValueDict& context_;
  std::vector<ValueDict> frames_;
  std::string out_;
  int64_t iterations_ = 0;
  int loop_depth_ = 0;
  int call_depth_ = 0;
};

}  // namespace

absl::StatusOr<Template> Template::Parse(absl::string_view source, const Limits& limits) {
  ParseLimits parse_limits;
  parse_limits.max_source_bytes = limits.max_template_bytes;
  parse_limits.max_nesting = limits.max_nesting;
  ARBOR_ASSIGN_OR_RETURN(Body body, ParseTemplate(source, parse_limits));
  auto parsed = std::make_shared<Parsed>();
  parsed->body = std::move(body);
  return Template(std::move(parsed), limits);
}

absl::StatusOr<std::string> Template::Render(const ValueDict& context) const {
  Renderer renderer(limits_, context);
  return renderer.Run(parsed_->body);
}

absl::StatusOr<std::string> Template::RenderJson(const nlohmann::ordered_json& context) const {
  if (!context.is_object()) return absl::InvalidArgumentError("template context must be an object");
  const Value v = Value::FromJson(context);
  return Render(v.as_dict());
}

}  // namespace arbor::runtime::jinja
