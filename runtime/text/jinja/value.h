// Value: the data a Jinja template computes with, Python-flavoured as the
// Hugging Face chat templates expect (they are written for Jinja2): undefined,
// none, bool, int, float, string, list, dict (insertion-ordered), namespace
// (a dict whose attributes `set ns.x = ...` may assign) and callable (macros,
// builtins such as raise_exception). Lists, dicts and namespaces are shared by
// reference, as in Python.
//
// Thread-safety: a Value is not synchronized; values built for one render are
// used by that render only. Values built before and only read (a context passed
// to several renders) may be shared.
#ifndef ARBOR_RUNTIME_TEXT_JINJA_VALUE_H_
#define ARBOR_RUNTIME_TEXT_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace arbor::runtime::jinja {

class Value;
using ValueList = std::vector<Value>;
// Insertion-ordered; chat messages have a handful of keys, so lookups scan.
using ValueDict = std::vector<std::pair<std::string, Value>>;

// Positional and keyword arguments of a call.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using Callable = std::function<absl::StatusOr<Value>(const CallArgs& args)>;

class Value {
 public:
  enum class Type { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace,
                    kCallable };

  Value() = default;  // undefined
  static Value None();
  Value(bool b);                 // NOLINT: implicit, as Python literals
  Value(int64_t i);              // NOLINT
  Value(int i) : Value(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double d);               // NOLINT
  Value(std::string s);          // NOLINT
  Value(const char* s) : Value(std::string(s)) {}  // NOLINT
  Value(ValueList list);         // NOLINT
  Value(ValueDict dict);         // NOLINT
  static Value Namespace(ValueDict attributes);
  static Value Function(Callable fn);
  // JSON null -> none, objects -> dicts (key order kept), numbers -> int when
  // integral in the source.
  static Value FromJson(const nlohmann::json& json);
  static Value FromJson(const nlohmann::ordered_json& json);

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_none() const { return type_ == Type::kNone; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_number() const { return type_ == Type::kInt || type_ == Type::kFloat; }
  bool is_list() const { return type_ == Type::kList; }
  // Dicts and namespaces.
  bool is_mapping() const { return type_ == Type::kDict || type_ == Type::kNamespace; }
  bool is_callable() const { return type_ == Type::kCallable; }

  bool as_bool() const { return std::get<bool>(scalar_); }
  int64_t as_int() const { return std::get<int64_t>(scalar_); }
  double as_number() const;  // int or float
  const std::string& as_string() const { return *string_; }
  const ValueList& as_list() const { return *list_; }
  ValueList& mutable_list() const { return *list_; }
  const ValueDict& as_dict() const { return *dict_; }
  ValueDict& mutable_dict() const { return *dict_; }
  const Callable& as_callable() const { return *callable_; }

  // Dict/namespace member, nullptr when absent.
  const Value* Find(absl::string_view key) const;
  // Sets (or adds) a dict/namespace member.
  void Set(absl::string_view key, Value value) const;

  // Python truthiness: undefined, none, false, 0, "" and empty containers are
  // false.
  bool Truthy() const;
  // What `{{ value }}` prints (Python's str(): None, True, 1.5, ['a', 1],
  // {'k': 'v'}; undefined prints nothing).
  std::string ToString() const;
  // Python repr() (strings quoted), used inside lists and dicts.
  std::string Repr() const;
  // JSON text as Hugging Face's `tojson` writes it: ", " and ": " separators
  // (or "," and newlines with `indent`), non-ASCII kept, undefined as null.
  std::string ToJson(int indent = -1, bool sort_keys = false) const;
  // Python ==.
  bool Equals(const Value& other) const;

  absl::string_view TypeName() const;

 private:
  Type type_ = Type::kUndefined;
  std::variant<std::monostate, bool, int64_t, double> scalar_;
  std::shared_ptr<const std::string> string_;
  std::shared_ptr<ValueList> list_;
  std::shared_ptr<ValueDict> dict_;
  std::shared_ptr<const Callable> callable_;
};

// Unicode code point boundaries of a UTF-8 string (Python indexes strings by
// code point): offsets of each code point's first byte, plus s.size().
std::vector<size_t> CodePointOffsets(absl::string_view s);

}  // namespace arbor::runtime::jinja

#endif  // ARBOR_RUNTIME_TEXT_JINJA_VALUE_H_
