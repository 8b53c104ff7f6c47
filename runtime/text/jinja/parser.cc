#include "runtime/text/jinja/parser.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace arbor::runtime::jinja {
namespace {

enum class Tok {
  kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof
};

struct Token {
  Tok type;
  std::string text;
  size_t offset;
};

class Lines {
 public:
  explicit Lines(absl::string_view source) {
    starts_.push_back(0);
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\n') starts_.push_back(i + 1);
    }
  }
  Pos At(size_t offset) const {
    auto it = std::upper_bound(starts_.begin(), starts_.end(), offset);
    const size_t line = static_cast<size_t>(it - starts_.begin());
    return Pos{static_cast<int>(line), static_cast<int>(offset - starts_[line - 1] + 1)};
  }

 private:
  std::vector<size_t> starts_;
};

absl::Status ErrorAt(Pos pos, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("line ", pos.line, ", column ", pos.column, ": ", message));
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Splits the source into text and tag tokens, applying whitespace control.
class Lexer {
 public:
  Lexer(absl::string_view source, const Lines& lines) : src_(source), lines_(lines) {}

  absl::StatusOr<std::vector<Token>> Run() {
    // Text between tags: [start, end) of the source, and what bounds it.
    struct Pending {
      size_t text_begin;
      size_t token_index;  // where its text token goes
    };
    size_t i = 0;
    bool prev_rstrip = false;   // previous tag ended with "-"
    bool prev_is_block = false; // previous tag was a block or comment (trim_blocks)
    while (i <= src_.size()) {
      const size_t open = FindOpen(i);
      const size_t text_end = open == absl::string_view::npos ? src_.size() : open;
      char kind = 0;
      bool lstrip = false;
      if (open != absl::string_view::npos) {
        kind = src_[open + 1];
        lstrip = open + 2 < src_.size() && src_[open + 2] == '-';
      }
      // The text before the tag.
      size_t b = i, e = text_end;
      if (prev_rstrip) {
        while (b < e && IsSpace(src_[b])) ++b;
      } else if (prev_is_block && b < e && src_[b] == '\n') {
        ++b;
      } else if (prev_is_block && b + 1 < e && src_[b] == '\r' && src_[b + 1] == '\n') {
        b += 2;
      }
      if (open != absl::string_view::npos) {
        if (lstrip) {
          while (e > b && IsSpace(src_[e - 1])) --e;
        } else if (kind == '%' || kind == '#') {
          // lstrip_blocks: spaces and tabs from the start of the line.
          size_t p = text_end;
          while (p > i && (src_[p - 1] == ' ' || src_[p - 1] == '\t')) --p;
          if ((p == 0 || src_[p - 1] == '\n') && p >= b) e = std::min(e, p);
        }
      }
      if (e > b) tokens_.push_back({Tok::kText, std::string(src_.substr(b, e - b)), b});
      if (open == absl::string_view::npos) break;
      size_t j = open + 2 + (lstrip ? 1 : 0);
      if (kind == '#') {
        const size_t close = src_.find("#}", j);
        if (close == absl::string_view::npos) {
          return ErrorAt(lines_.At(open), "unterminated comment (no \"#}\")");
        }
        prev_rstrip = close > j && src_[close - 1] == '-';
        prev_is_block = true;
        i = close + 2;
        continue;
      }
      const bool is_block = kind == '%';
      tokens_.push_back({is_block ? Tok::kBlockBegin : Tok::kVarBegin, "", open});
      ARBOR_ASSIGN_OR_RETURN(const size_t after, LexTag(j, is_block, open, &prev_rstrip));
      prev_is_block = is_block;
      i = after;
    }
    tokens_.push_back({Tok::kEof, "", src_.size()});
    return std::move(tokens_);
  }

 private:
  size_t FindOpen(size_t from) const {
    while (true) {
      const size_t p = src_.find('{', from);
      if (p == absl::string_view::npos || p + 1 >= src_.size()) return absl::string_view::npos;
      const char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      from = p + 1;
    }
  }

  // Tokenizes a tag's expression up to its closing delimiter; returns the
  // offset after it.
  absl::StatusOr<size_t> LexTag(size_t i, bool is_block, size_t open, bool* rstrip) {
    const char close0 = is_block ? '%' : '}';
    int brackets = 0;
    while (true) {
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      if (i >= src_.size()) {
        return ErrorAt(lines_.At(open),
                       is_block ? "unterminated block (no \"%}\")" : "unterminated \"{{\" (no \"}}\")");
      }
      const char c = src_[i];
      if (c == '-' && i + 2 < src_.size() + 0 && src_[i + 1] == close0 && i + 2 < src_.size() &&
          src_[i + 2] == '}' && brackets == 0) {
        *rstrip = true;
        tokens_.push_back({is_block ? Tok::kBlockEnd : Tok::kVarEnd, "", i});
        return i + 3;
      }
      if (c == close0 && i + 1 < src_.size() && src_[i + 1] == '}' && (is_block || brackets == 0)) {
        *rstrip = false;
        tokens_.push_back({is_block ? Tok::kBlockEnd : Tok::kVarEnd, "", i});
        return i + 2;
      }
      if (IsNameStart(c)) {
        size_t j = i;
        while (j < src_.size() && IsNameChar(src_[j])) ++j;
        tokens_.push_back({Tok::kName, std::string(src_.substr(i, j - i)), i});
        i = j;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t j = i;
        while (j < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) ++j;
        bool is_float = false;
        if (j + 1 < src_.size() && src_[j] == '.' && std::isdigit(static_cast<unsigned char>(src_[j + 1]))) {
          is_float = true;
          ++j;
          while (j < src_.size() && std::isdigit(static_cast<unsigned char>(src_[j]))) ++j;
        }
        if (j < src_.size() && (src_[j] == 'e' || src_[j] == 'E')) {
          size_t k = j + 1;
          if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
          if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
            is_float = true;
            j = k;
            while (j < src_.size() && std::isdigit(static_cast<unsigned char>(src_[j]))) ++j;
          }
        }
        std::string digits;
        for (char d : src_.substr(i, j - i)) {
          if (d != '_') digits.push_back(d);
        }
        tokens_.push_back({is_float ? Tok::kFloat : Tok::kInt, digits, i});
        i = j;
      } else if (c == '\'' || c == '"') {
        ARBOR_ASSIGN_OR_RETURN(i, LexString(i));
      } else {
        static constexpr absl::string_view kTwo[] = {"==", "!=", "<=", ">=", "//", "**"};
        std::string op(1, c);
        for (absl::string_view two : kTwo) {
          if (src_.substr(i, 2) == two) op = std::string(two);
        }
        if (op.size() == 1 && absl::string_view("()[]{},.:|~+-*/%<>=").find(c) == absl::string_view::npos) {
          return ErrorAt(lines_.At(i), absl::StrCat("unexpected character '", std::string(1, c), "'"));
        }
        if (c == '(' || c == '[' || c == '{') ++brackets;
        if ((c == ')' || c == ']' || c == '}') && brackets > 0) --brackets;
        tokens_.push_back({Tok::kOp, op, i});
        i += op.size();
      }
    }
  }

  absl::StatusOr<size_t> LexString(size_t i) {
    const char quote = src_[i];
    std::string out;
    size_t j = i + 1;
    while (true) {
      if (j >= src_.size()) return ErrorAt(lines_.At(i), "unterminated string literal");
      const char c = src_[j];
      if (c == quote) break;
      if (c == '\\' && j + 1 < src_.size()) {
        const char n = src_[j + 1];
        j += 2;
        switch (n) {
          case 'n': out.push_back('\n'); break;
          case 't': out.push_back('\t'); break;
          case 'r': out.push_back('\r'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case '0': out.push_back('\0'); break;
          case '\\': out.push_back('\\'); break;
          case '\'': out.push_back('\''); break;
          case '"': out.push_back('"'); break;
          case '\n': break;
          case 'u':
          case 'x': {
            const size_t len = n == 'u' ? 4 : 2;
            if (j + len > src_.size()) return ErrorAt(lines_.At(j - 2), "bad escape in string");
            const std::string hex(src_.substr(j, len));
            char* end = nullptr;
            const unsigned long cp = std::strtoul(hex.c_str(), &end, 16);
            if (end != hex.c_str() + len) return ErrorAt(lines_.At(j - 2), "bad escape in string");
            AppendUtf8(static_cast<uint32_t>(cp), &out);
            j += len;
            break;
          }
          default:  // Python keeps unknown escapes as written
            out.push_back('\\');
            out.push_back(n);
        }
        continue;
      }
      out.push_back(c);
      ++j;
    }
    tokens_.push_back({Tok::kString, std::move(out), i});
    return j + 1;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  absl::string_view src_;
  const Lines& lines_;
  std::vector<Token> tokens_;
};

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Lines& lines, const ParseLimits& limits)
      : tokens_(std::move(tokens)), lines_(lines), limits_(limits) {}

  absl::StatusOr<Body> Run() {
    std::string end;
    ARBOR_ASSIGN_OR_RETURN(Body body, ParseBody({}, &end));
    return body;
  }

 private:
  // RAII nesting counter.
  class Nest {
   public:
    explicit Nest(Parser* p) : p_(p) { ++p_->depth_; }
    ~Nest() { --p_->depth_; }
    bool too_deep() const { return p_->depth_ > p_->limits_.max_nesting; }

   private:
    Parser* p_;
  };

  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Peek(size_t k = 1) const { return tokens_[std::min(pos_ + k, tokens_.size() - 1)]; }
  Pos PosOf(const Token& t) const { return lines_.At(t.offset); }
  Pos Here() const { return PosOf(Cur()); }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(absl::string_view op) const { return Cur().type == Tok::kOp && Cur().text == op; }
  bool IsName(absl::string_view name) const { return Cur().type == Tok::kName && Cur().text == name; }
  absl::Status Error(absl::string_view message) const { return ErrorAt(Here(), message); }
  std::string Describe(const Token& t) const {
    switch (t.type) {
      case Tok::kText: return "text";
      case Tok::kVarBegin: return "'{{'";
      case Tok::kVarEnd: return "'}}'";
      case Tok::kBlockBegin: return "'{%'";
      case Tok::kBlockEnd: return "'%}'";
      case Tok::kString: return "a string";
      case Tok::kEof: return "the end of the template";
      default: return absl::StrCat("'", t.text, "'");
    }
  }
  absl::Status Unexpected(absl::string_view wanted) const {
    return Error(absl::StrCat("expected ", wanted, ", found ", Describe(Cur())));
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!IsOp(op)) return Unexpected(absl::StrCat("'", op, "'"));
    Next();
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Cur().type != Tok::kBlockEnd) return Unexpected("'%}'");
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Cur().type != Tok::kName) return Unexpected("a name");
    std::string name = Cur().text;
    Next();
    return name;
  }

  ExprPtr NewExpr(Expr::Kind kind, Pos pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  // Sets e's depth from its operands; chains (a + b + ..., x|f|g|...) nest
  // without recursing in the parser, so their depth is checked here.
  absl::StatusOr<ExprPtr> Finish(ExprPtr e) {
    int depth = 0;
    for (const ExprPtr& a : e->args) {
      if (a != nullptr) depth = std::max(depth, a->depth);
    }
    for (const auto& kv : e->kwargs) depth = std::max(depth, kv.second->depth);
    e->depth = depth + 1;
    if (e->depth > limits_.max_nesting) {
      return absl::ResourceExhaustedError(absl::StrCat("line ", e->pos.line, ", column ",
                                                       e->pos.column, ": expression nested deeper than ",
                                                       limits_.max_nesting));
    }
    return e;
  }

  // Statements until one of `ends` ({% end... %}); `*end` gets which, with the
  // parser on the token after that keyword. At top level (ends empty) runs to
  // the end of the template.
  absl::StatusOr<Body> ParseBody(std::initializer_list<absl::string_view> ends, std::string* end,
                                 Pos opened = Pos{}) {
    Nest nest(this);
    if (nest.too_deep()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "line ", Here().line, ", column ", Here().column, ": blocks nested deeper than ",
          limits_.max_nesting));
    }
    Body body;
    while (true) {
      const Token& t = Cur();
      if (t.type == Tok::kEof) {
        if (ends.size() == 0) return body;
        return ErrorAt(opened, absl::StrCat("block not closed: expected '{% ", *(ends.end() - 1),
                                           " %}' before the end of the template"));
      }
      if (t.type == Tok::kText) {
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kText;
        node->pos = PosOf(t);
        node->text = t.text;
        body.push_back(std::move(node));
        Next();
        continue;
      }
      if (t.type == Tok::kVarBegin) {
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kOutput;
        node->pos = PosOf(t);
        Next();
        ARBOR_ASSIGN_OR_RETURN(node->expr, ParseExpression());
        if (Cur().type != Tok::kVarEnd) return Unexpected("'}}'");
        Next();
        body.push_back(std::move(node));
        continue;
      }
      if (t.type != Tok::kBlockBegin) return Unexpected("text or a tag");
      const Pos tag_pos = PosOf(t);
      Next();
      if (Cur().type != Tok::kName) return Unexpected("a statement name");
      const std::string keyword = Cur().text;
      if (std::find(ends.begin(), ends.end(), keyword) != ends.end()) {
        Next();
        *end = keyword;
        return body;
      }
      ARBOR_ASSIGN_OR_RETURN(NodePtr node, ParseStatement(keyword, tag_pos));
      body.push_back(std::move(node));
    }
  }

  absl::StatusOr<NodePtr> ParseStatement(const std::string& keyword, Pos pos) {
    auto node = std::make_unique<Node>();
    node->pos = pos;
    Next();  // the keyword
    std::string end;
    if (keyword == "if") {
      node->kind = Node::Kind::kIf;
      ARBOR_ASSIGN_OR_RETURN(ExprPtr cond, ParseExpression());
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      while (true) {
        ARBOR_ASSIGN_OR_RETURN(Body body, ParseBody({"elif", "else", "endif"}, &end, pos));
        node->branches.emplace_back(std::move(cond), std::move(body));
        if (end == "elif") {
          ARBOR_ASSIGN_OR_RETURN(cond, ParseExpression());
          ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
          continue;
        }
        break;
      }
      if (end == "else") {
        ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
        ARBOR_ASSIGN_OR_RETURN(node->else_body, ParseBody({"endif"}, &end, pos));
      }
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (keyword == "for") {
      node->kind = Node::Kind::kFor;
      ARBOR_RETURN_IF_ERROR(ParseTargets(&node->targets));
      if (!IsName("in")) return Unexpected("'in'");
      Next();
      ARBOR_ASSIGN_OR_RETURN(node->expr, ParseOr());
      if (IsName("if")) {
        Next();
        ARBOR_ASSIGN_OR_RETURN(node->condition, ParseOr());
      }
      if (IsName("recursive")) return Error("recursive loops are not supported");
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      ARBOR_ASSIGN_OR_RETURN(node->body, ParseBody({"else", "endfor"}, &end, pos));
      if (end == "else") {
        ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
        ARBOR_ASSIGN_OR_RETURN(node->else_body, ParseBody({"endfor"}, &end, pos));
      }
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (keyword == "set") {
      ARBOR_RETURN_IF_ERROR(ParseTargets(&node->targets));
      if (node->targets.size() == 1 && IsOp(".")) {
        Next();
        ARBOR_ASSIGN_OR_RETURN(node->attribute, ExpectName());
      }
      if (IsOp("=")) {
        node->kind = Node::Kind::kSet;
        Next();
        ARBOR_ASSIGN_OR_RETURN(node->expr, ParseTuple());
        ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
        return node;
      }
      if (node->targets.size() != 1 || !node->attribute.empty()) {
        return Unexpected("'='");
      }
      node->kind = Node::Kind::kSetBlock;
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      ARBOR_ASSIGN_OR_RETURN(node->body, ParseBody({"endset"}, &end, pos));
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (keyword == "macro") {
      node->kind = Node::Kind::kMacro;
      ARBOR_ASSIGN_OR_RETURN(node->name, ExpectName());
      ARBOR_RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        ARBOR_ASSIGN_OR_RETURN(std::string param, ExpectName());
        ExprPtr def;
        if (IsOp("=")) {
          Next();
          ARBOR_ASSIGN_OR_RETURN(def, ParseExpression());
        }
        node->params.emplace_back(std::move(param), std::move(def));
        if (!IsOp(",")) break;
        Next();
      }
      ARBOR_RETURN_IF_ERROR(ExpectOp(")"));
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      ARBOR_ASSIGN_OR_RETURN(node->body, ParseBody({"endmacro"}, &end, pos));
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (keyword == "break" || keyword == "continue") {
      node->kind = keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (keyword == "generation") {
      // transformers' AssistantTracker marks assistant text; it renders as is.
      node->kind = Node::Kind::kScope;
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      ARBOR_ASSIGN_OR_RETURN(node->body, ParseBody({"endgeneration"}, &end, pos));
      ARBOR_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    return ErrorAt(pos, absl::StrCat("unknown or unsupported statement '", keyword, "'"));
  }

  absl::Status ParseTargets(std::vector<std::string>* targets) {
    const bool paren = IsOp("(");
    if (paren) Next();
    while (true) {
      ARBOR_ASSIGN_OR_RETURN(std::string name, ExpectName());
      targets->push_back(std::move(name));
      if (!IsOp(",")) break;
      Next();
    }
    if (paren) return ExpectOp(")");
    return absl::OkStatus();
  }

  // An expression, or several separated by commas (a tuple, as `set a, b = 1, 2`).
  absl::StatusOr<ExprPtr> ParseTuple() {
    const Pos pos = Here();
    ARBOR_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
    if (!IsOp(",")) return first;
    ExprPtr tuple = NewExpr(Expr::Kind::kTuple, pos);
    tuple->args.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Cur().type == Tok::kBlockEnd || IsOp(")")) break;
      ARBOR_ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
      tuple->args.push_back(std::move(e));
    }
    return Finish(std::move(tuple));
  }

  absl::StatusOr<ExprPtr> ParseExpression() {
    Nest nest(this);
    if (nest.too_deep()) {
      return absl::ResourceExhaustedError(absl::StrCat("line ", Here().line, ", column ",
                                                       Here().column,
                                                       ": expression nested deeper than ",
                                                       limits_.max_nesting));
    }
    const Pos pos = Here();
    ARBOR_ASSIGN_OR_RETURN(ExprPtr value, ParseOr());
    while (IsName("if")) {
      Next();
      ExprPtr cond = NewExpr(Expr::Kind::kCondition, pos);
      ARBOR_ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
      ExprPtr otherwise;
      if (IsName("else")) {
        Next();
        ARBOR_ASSIGN_OR_RETURN(otherwise, ParseExpression());
      }
      cond->args.push_back(std::move(value));
      cond->args.push_back(std::move(test));
      cond->args.push_back(std::move(otherwise));
      ARBOR_ASSIGN_OR_RETURN(value, Finish(std::move(cond)));
    }
    return value;
  }

  absl::StatusOr<ExprPtr> Binary(std::string op, Pos pos, ExprPtr a, ExprPtr b) {
    ExprPtr e = NewExpr(Expr::Kind::kBinary, pos);
    e->name = std::move(op);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return Finish(std::move(e));
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ARBOR_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      const Pos pos = Here();
      Next();
      ARBOR_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      ARBOR_ASSIGN_OR_RETURN(left, Binary("or", pos, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ARBOR_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      const Pos pos = Here();
      Next();
      ARBOR_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      ARBOR_ASSIGN_OR_RETURN(left, Binary("and", pos, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      Nest nest(this);
      if (nest.too_deep()) return absl::ResourceExhaustedError("expression nested too deeply");
      const Pos pos = Here();
      Next();
      ExprPtr e = NewExpr(Expr::Kind::kUnary, pos);
      e->name = "not";
      ARBOR_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      e->args.push_back(std::move(operand));
      return Finish(std::move(e));
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    ARBOR_ASSIGN_OR_RETURN(ExprPtr left, ParseMath1());
    while (true) {
      const Pos pos = Here();
      std::string op;
      if (Cur().type == Tok::kOp &&
          (Cur().text == "==" || Cur().text == "!=" || Cur().text == "<" || Cur().text == ">" ||
           Cur().text == "<=" || Cur().text == ">=")) {
        op = Cur().text;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && Peek().type == Tok::kName && Peek().text == "in") {
        op = "not in";
        Next();
        Next();
      } else {
        return left;
      }
      ARBOR_ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      ARBOR_ASSIGN_OR_RETURN(left, Binary(op, pos, std::move(left), std::move(right)));
    }
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    ARBOR_ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const Pos pos = Here();
      std::string op = Cur().text;
      Next();
      ARBOR_ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      ARBOR_ASSIGN_OR_RETURN(left, Binary(op, pos, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    ARBOR_ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      const Pos pos = Here();
      Next();
      ARBOR_ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      ARBOR_ASSIGN_OR_RETURN(left, Binary("~", pos, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    ARBOR_ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Pos pos = Here();
      std::string op = Cur().text;
      Next();
      ARBOR_ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      ARBOR_ASSIGN_OR_RETURN(left, Binary(op, pos, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    ARBOR_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      const Pos pos = Here();
      Next();
      ARBOR_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      ARBOR_ASSIGN_OR_RETURN(left, Binary("**", pos, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    Nest nest(this);
    if (nest.too_deep()) {
      return absl::ResourceExhaustedError(absl::StrCat("line ", Here().line, ", column ",
                                                       Here().column,
                                                       ": expression nested deeper than ",
                                                       limits_.max_nesting));
    }
    const Pos pos = Here();
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node = NewExpr(Expr::Kind::kUnary, pos);
      node->name = Cur().text;
      Next();
      ARBOR_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      node->args.push_back(std::move(operand));
      ARBOR_ASSIGN_OR_RETURN(node, Finish(std::move(node)));
    } else {
      ARBOR_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    ARBOR_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      ARBOR_ASSIGN_OR_RETURN(node, ParseFilters(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Cur();
    const Pos pos = Here();
    switch (t.type) {
      case Tok::kName: {
        const std::string& n = t.text;
        ExprPtr e = NewExpr(Expr::Kind::kLiteral, pos);
        if (n == "true" || n == "True") {
          e->literal = Value(true);
        } else if (n == "false" || n == "False") {
          e->literal = Value(false);
        } else if (n == "none" || n == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = n;
        }
        Next();
        return e;
      }
      case Tok::kString: {
        std::string s;
        while (Cur().type == Tok::kString) {  // adjacent literals concatenate
          s += Cur().text;
          Next();
        }
        ExprPtr e = NewExpr(Expr::Kind::kLiteral, pos);
        e->literal = Value(std::move(s));
        return e;
      }
      case Tok::kInt: {
        ExprPtr e = NewExpr(Expr::Kind::kLiteral, pos);
        errno = 0;
        const long long v = std::strtoll(t.text.c_str(), nullptr, 10);
        if (errno == ERANGE) return Error("integer literal out of range");
        e->literal = Value(static_cast<int64_t>(v));
        Next();
        return e;
      }
      case Tok::kFloat: {
        ExprPtr e = NewExpr(Expr::Kind::kLiteral, pos);
        e->literal = Value(std::strtod(t.text.c_str(), nullptr));
        Next();
        return e;
      }
      case Tok::kOp:
        if (t.text == "(") {
          Next();
          if (IsOp(")")) {
            Next();
            return NewExpr(Expr::Kind::kTuple, pos);
          }
          ARBOR_ASSIGN_OR_RETURN(ExprPtr inner, ParseTuple());
          ARBOR_RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (t.text == "[") {
          Next();
          ExprPtr list = NewExpr(Expr::Kind::kList, pos);
          while (!IsOp("]")) {
            ARBOR_ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
            list->args.push_back(std::move(e));
            if (!IsOp(",")) break;
            Next();
          }
          ARBOR_RETURN_IF_ERROR(ExpectOp("]"));
          return Finish(std::move(list));
        }
        if (t.text == "{") {
          Next();
          ExprPtr dict = NewExpr(Expr::Kind::kDict, pos);
          while (!IsOp("}")) {
            ARBOR_ASSIGN_OR_RETURN(ExprPtr k, ParseExpression());
            ARBOR_RETURN_IF_ERROR(ExpectOp(":"));
            ARBOR_ASSIGN_OR_RETURN(ExprPtr v, ParseExpression());
            dict->args.push_back(std::move(k));
            dict->args.push_back(std::move(v));
            if (!IsOp(",")) break;
            Next();
          }
          ARBOR_RETURN_IF_ERROR(ExpectOp("}"));
          return Finish(std::move(dict));
        }
        break;
      default:
        break;
    }
    return Unexpected("an expression");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      const Pos pos = Here();
      if (IsOp(".")) {
        Next();
        ExprPtr e = NewExpr(Expr::Kind::kGetAttr, pos);
        if (Cur().type == Tok::kName) {
          e->name = Cur().text;
        } else if (Cur().type == Tok::kInt) {  // x.0 is x[0]
          e->kind = Expr::Kind::kGetItem;
          ExprPtr index = NewExpr(Expr::Kind::kLiteral, pos);
          index->literal = Value(static_cast<int64_t>(std::strtoll(Cur().text.c_str(), nullptr, 10)));
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(index));
          Next();
          ARBOR_ASSIGN_OR_RETURN(node, Finish(std::move(e)));
          continue;
        } else {
          return Unexpected("an attribute name");
        }
        Next();
        e->args.push_back(std::move(node));
        ARBOR_ASSIGN_OR_RETURN(node, Finish(std::move(e)));
      } else if (IsOp("[")) {
        Next();
        ARBOR_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node), pos));
      } else if (IsOp("(")) {
        ExprPtr call = NewExpr(Expr::Kind::kCall, node->pos);  // errors point at the callee
        call->args.push_back(std::move(node));
        ARBOR_RETURN_IF_ERROR(ParseCallArgs(call.get()));
        ARBOR_ASSIGN_OR_RETURN(node, Finish(std::move(call)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr target, Pos pos) {
    ExprPtr parts[3];
    int colons = 0;
    for (int part = 0; part < 3; ++part) {
      if (!IsOp(":") && !IsOp("]")) {
        ARBOR_ASSIGN_OR_RETURN(parts[part], ParseExpression());
      }
      if (IsOp(":") && colons < 2) {
        ++colons;
        Next();
        continue;
      }
      break;
    }
    ARBOR_RETURN_IF_ERROR(ExpectOp("]"));
    if (colons == 0) {
      if (parts[0] == nullptr) return ErrorAt(pos, "empty subscript");
      ExprPtr e = NewExpr(Expr::Kind::kGetItem, pos);
      e->args.push_back(std::move(target));
      e->args.push_back(std::move(parts[0]));
      return Finish(std::move(e));
    }
    ExprPtr e = NewExpr(Expr::Kind::kSlice, pos);
    e->args.push_back(std::move(target));
    for (auto& p : parts) e->args.push_back(std::move(p));
    return Finish(std::move(e));
  }

  // "(" args ")" appended to e->args / e->kwargs.
  absl::Status ParseCallArgs(Expr* e) {
    ARBOR_RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == "=") {
        std::string name = Cur().text;
        Next();
        Next();
        ARBOR_ASSIGN_OR_RETURN(ExprPtr v, ParseExpression());
        e->kwargs.emplace_back(std::move(name), std::move(v));
      } else {
        if (!e->kwargs.empty()) return Error("positional argument after a keyword argument");
        ARBOR_ASSIGN_OR_RETURN(ExprPtr v, ParseExpression());
        e->args.push_back(std::move(v));
      }
      if (!IsOp(",")) break;
      Next();
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParseFilters(ExprPtr node) {
    while (true) {
      const Pos pos = Here();
      if (IsOp("|")) {
        Next();
        ExprPtr f = NewExpr(Expr::Kind::kFilter, pos);
        ARBOR_ASSIGN_OR_RETURN(f->name, ExpectName());
        while (IsOp(".")) {  // dotted filter names are not a thing here
          return Error("unexpected '.' after a filter name");
        }
        f->args.push_back(std::move(node));
        if (IsOp("(")) ARBOR_RETURN_IF_ERROR(ParseCallArgs(f.get()));
        ARBOR_ASSIGN_OR_RETURN(node, Finish(std::move(f)));
      } else if (IsName("is")) {
        Next();
        ExprPtr t = NewExpr(Expr::Kind::kTest, pos);
        if (IsName("not")) {
          t->negated = true;
          Next();
        }
        if (Cur().type == Tok::kName) {
          t->name = Cur().text;
          Next();
        } else if (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp(">") || IsOp("<=") || IsOp(">=")) {
          t->name = Cur().text;
          Next();
        } else {
          return Unexpected("a test name");
        }
        if (t->name == "none" || t->name == "None") t->name = "none";
        if (t->name == "True") t->name = "true";
        if (t->name == "False") t->name = "false";
        t->args.push_back(std::move(node));
        if (IsOp("(")) {
          ARBOR_RETURN_IF_ERROR(ParseCallArgs(t.get()));
        } else if ((Cur().type == Tok::kString || Cur().type == Tok::kInt ||
                    Cur().type == Tok::kFloat || IsOp("[") || IsOp("{") ||
                    (Cur().type == Tok::kName && Cur().text != "else" && Cur().text != "or" &&
                     Cur().text != "and" && Cur().text != "if" && Cur().text != "not" &&
                     Cur().text != "in" && Cur().text != "is"))) {
          ARBOR_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
          ARBOR_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
          t->args.push_back(std::move(arg));
        }
        ARBOR_ASSIGN_OR_RETURN(node, Finish(std::move(t)));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  const Lines& lines_;
  const ParseLimits& limits_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<Body> ParseTemplate(absl::string_view source, const ParseLimits& limits) {
  if (source.size() > limits.max_source_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("template has ", source.size(),
                                                     " bytes; at most ", limits.max_source_bytes));
  }
  // Jinja drops a single trailing newline (keep_trailing_newline is off).
  if (!source.empty() && source.back() == '\n') source.remove_suffix(1);
  const Lines lines(source);
  ARBOR_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lexer(source, lines).Run());
  return Parser(std::move(tokens), lines, limits).Run();
}

}  // namespace arbor::runtime::jinja
