#include "runtime/text/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace arbor::runtime::jinja {
namespace {

std::string FormatFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d);
  std::string s(buf, end);
  // Python writes 1.0, not 1, and 1e+16 as 1e+16.
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

std::string PyQuote(absl::string_view s) {
  // Python picks single quotes unless the text holds one and no double quote.
  const bool use_double =
      s.find('\'') != absl::string_view::npos && s.find('"') == absl::string_view::npos;
  const char q = use_double ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out.push_back(c);
    }
  }
  out.push_back(q);
  return out;
}

void ToJsonImpl(const Value& v, int indent, bool sort_keys, int depth, std::string* out) {
  if (depth > 256 && (v.is_list() || v.is_mapping())) {  // a namespace holding itself
    *out += "null";
    return;
  }
  const std::string pad = indent >= 0 ? "\n" + std::string(indent * depth, ' ') : "";
  const std::string child_pad = indent >= 0 ? "\n" + std::string(indent * (depth + 1), ' ') : "";
  const char* item_sep = indent >= 0 ? "," : ", ";
  switch (v.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone:
    case Value::Type::kCallable:
      *out += "null";
      return;
    case Value::Type::kBool:
      *out += v.as_bool() ? "true" : "false";
      return;
    case Value::Type::kInt:
      *out += std::to_string(v.as_int());
      return;
    case Value::Type::kFloat: {
      const double d = v.as_number();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e16) {
        // JSON.stringify (the reference engine) drops the ".0".
        *out += std::to_string(static_cast<int64_t>(d));
      } else if (!std::isfinite(d)) {
        *out += "null";
      } else {
        char buf[64];
        auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d);
        out->append(buf, end);
      }
      return;
    }
    case Value::Type::kString:
      AppendJsonString(v.as_string(), out);
      return;
    case Value::Type::kList: {
      const ValueList& list = v.as_list();
      *out += "[";
      for (size_t i = 0; i < list.size(); ++i) {
        if (i > 0) *out += item_sep;
        *out += child_pad;
        ToJsonImpl(list[i], indent, sort_keys, depth + 1, out);
      }
      if (!list.empty()) *out += pad;
      *out += "]";
      return;
    }
    case Value::Type::kDict:
    case Value::Type::kNamespace: {
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : v.as_dict()) entries.push_back(&e);
      if (sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      *out += "{";
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) *out += item_sep;
        *out += child_pad;
        AppendJsonString(entries[i]->first, out);
        *out += ": ";
        ToJsonImpl(entries[i]->second, indent, sort_keys, depth + 1, out);
      }
      if (!entries.empty()) *out += pad;
      *out += "}";
      return;
    }
  }
}

template <typename JsonT>
Value ValueFromJson(const JsonT& json) {
  switch (json.type()) {
    case JsonT::value_t::null:
      return Value::None();
    case JsonT::value_t::boolean:
      return Value(json.template get<bool>());
    case JsonT::value_t::number_integer:
      return Value(json.template get<int64_t>());
    case JsonT::value_t::number_unsigned:
      return Value(static_cast<int64_t>(json.template get<uint64_t>()));
    case JsonT::value_t::number_float:
      return Value(json.template get<double>());
    case JsonT::value_t::string:
      return Value(json.template get<std::string>());
    case JsonT::value_t::array: {
      ValueList list;
      list.reserve(json.size());
      for (const auto& e : json) list.push_back(ValueFromJson(e));
      return Value(std::move(list));
    }
    case JsonT::value_t::object: {
      ValueDict dict;
      for (auto it = json.begin(); it != json.end(); ++it) {
        dict.emplace_back(it.key(), ValueFromJson(it.value()));
      }
      return Value(std::move(dict));
    }
    default:
      return Value();
  }
}

}  // namespace

Value Value::None() {
  Value v;
  v.type_ = Type::kNone;
  return v;
}
Value::Value(bool b) : type_(Type::kBool), scalar_(b) {}
Value::Value(int64_t i) : type_(Type::kInt), scalar_(i) {}
Value::Value(double d) : type_(Type::kFloat), scalar_(d) {}
Value::Value(std::string s)
    : type_(Type::kString), string_(std::make_shared<const std::string>(std::move(s))) {}
Value::Value(ValueList list)
    : type_(Type::kList), list_(std::make_shared<ValueList>(std::move(list))) {}
Value::Value(ValueDict dict)
    : type_(Type::kDict), dict_(std::make_shared<ValueDict>(std::move(dict))) {}

Value Value::Namespace(ValueDict attributes) {
  Value v(std::move(attributes));
  v.type_ = Type::kNamespace;
  return v;
}

Value Value::Function(Callable fn) {
  Value v;
  v.type_ = Type::kCallable;
  v.callable_ = std::make_shared<const Callable>(std::move(fn));
  return v;
}

Value Value::FromJson(const nlohmann::json& json) { return ValueFromJson(json); }
Value Value::FromJson(const nlohmann::ordered_json& json) { return ValueFromJson(json); }

double Value::as_number() const {
  if (type_ == Type::kInt) return static_cast<double>(std::get<int64_t>(scalar_));
  if (type_ == Type::kBool) return std::get<bool>(scalar_) ? 1.0 : 0.0;
  return std::get<double>(scalar_);
}

const Value* Value::Find(absl::string_view key) const {
  if (!is_mapping()) return nullptr;
  for (const auto& [k, v] : *dict_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::Set(absl::string_view key, Value value) const {
  if (!is_mapping()) return;
  for (auto& [k, v] : *dict_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  dict_->emplace_back(std::string(key), std::move(value));
}

bool Value::Truthy() const {
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone:
      return false;
    case Type::kBool:
      return as_bool();
    case Type::kInt:
      return as_int() != 0;
    case Type::kFloat:
      return as_number() != 0.0;
    case Type::kString:
      return !string_->empty();
    case Type::kList:
      return !list_->empty();
    case Type::kDict:
      return !dict_->empty();
    case Type::kNamespace:
    case Type::kCallable:
      return true;
  }
  return false;
}

std::string Value::ToString() const {
  switch (type_) {
    case Type::kUndefined:
      return "";
    case Type::kString:
      return *string_;
    default:
      return Repr();
  }
}

namespace {
// Containers nested deeper than this (or a namespace that holds itself) print
// as "[...]" / "{...}", as Python prints a list that contains itself.
constexpr int kMaxPrintDepth = 256;
thread_local int print_depth = 0;
struct PrintDepth {
  PrintDepth() { ++print_depth; }
  ~PrintDepth() { --print_depth; }
};
}  // namespace

std::string Value::Repr() const {
  const PrintDepth guard;
  if (print_depth > kMaxPrintDepth) {
    if (type_ == Type::kList) return "[...]";
    if (is_mapping()) return "{...}";
  }
  switch (type_) {
    case Type::kUndefined:
      return "";
    case Type::kNone:
      return "None";
    case Type::kBool:
      return as_bool() ? "True" : "False";
    case Type::kInt:
      return std::to_string(as_int());
    case Type::kFloat:
      return FormatFloat(as_number());
    case Type::kString:
      return PyQuote(*string_);
    case Type::kList: {
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i > 0) out += ", ";
        out += (*list_)[i].Repr();
      }
      return out + "]";
    }
    case Type::kDict:
    case Type::kNamespace: {
      std::string out = type_ == Type::kNamespace ? "<Namespace {" : "{";
      for (size_t i = 0; i < dict_->size(); ++i) {
        if (i > 0) out += ", ";
        absl::StrAppend(&out, PyQuote((*dict_)[i].first), ": ", (*dict_)[i].second.Repr());
      }
      return out + (type_ == Type::kNamespace ? "}>" : "}");
    }
    case Type::kCallable:
      return "<function>";
  }
  return "";
}

std::string Value::ToJson(int indent, bool sort_keys) const {
  std::string out;
  ToJsonImpl(*this, indent, sort_keys, 0, &out);
  return out;
}

bool Value::Equals(const Value& other) const {
  const PrintDepth guard;
  if (print_depth > kMaxPrintDepth) return false;
  if (is_number() || type_ == Type::kBool) {
    if (!(other.is_number() || other.type_ == Type::kBool)) return false;
    if (type_ == Type::kInt && other.type_ == Type::kInt) return as_int() == other.as_int();
    return as_number() == other.as_number();
  }
  if (type_ != other.type_) return false;
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone:
      return true;
    case Type::kString:
      return *string_ == *other.string_;
    case Type::kList: {
      if (list_->size() != other.list_->size()) return false;
      for (size_t i = 0; i < list_->size(); ++i) {
        if (!(*list_)[i].Equals((*other.list_)[i])) return false;
      }
      return true;
    }
    case Type::kDict:
    case Type::kNamespace: {
      if (dict_->size() != other.dict_->size()) return false;
      for (const auto& [k, v] : *dict_) {
        const Value* o = other.Find(k);
        if (o == nullptr || !v.Equals(*o)) return false;
      }
      return true;
    }
    case Type::kCallable:
      return callable_ == other.callable_;
    default:
      return false;
  }
}

absl::string_view Value::TypeName() const {
  switch (type_) {
    case Type::kUndefined: return "undefined";
    case Type::kNone: return "none";
    case Type::kBool: return "bool";
    case Type::kInt: return "int";
    case Type::kFloat: return "float";
    case Type::kString: return "string";
    case Type::kList: return "list";
    case Type::kDict: return "dict";
    case Type::kNamespace: return "namespace";
    case Type::kCallable: return "callable";
  }
  return "?";
}

std::vector<size_t> CodePointOffsets(absl::string_view s) {
  std::vector<size_t> offsets;
  offsets.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) offsets.push_back(i);
  }
  offsets.push_back(s.size());
  return offsets;
}

}  // namespace arbor::runtime::jinja
