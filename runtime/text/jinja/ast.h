// The parsed form of a template (internal to runtime/text/jinja): expressions
// and statements, each with the line and column it starts at, for errors.
// Immutable once parsed; shared read-only by concurrent renders.
#ifndef ARBOR_RUNTIME_TEXT_JINJA_AST_H_
#define ARBOR_RUNTIME_TEXT_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/text/jinja/value.h"

namespace arbor::runtime::jinja {

struct Pos {
  int line = 1;
  int column = 1;
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // args: the elements
    kTuple,     // args: the elements (evaluates to a list)
    kDict,      // args: key0, value0, key1, value1, ...
    kGetAttr,   // args[0].name
    kGetItem,   // args[0][args[1]]
    kSlice,     // args[0][args[1]:args[2]:args[3]], null pointers for omitted parts
    kCall,      // args[0](args[1..], kwargs)
    kFilter,    // args[0] | name(args[1..], kwargs)
    kTest,      // args[0] is [not] name(args[1..])
    kUnary,     // name is "not", "-" or "+"; args[0]
    kBinary,    // name is the operator; args[0], args[1]
    kCondition  // args[0] if args[1] else args[2] (null: undefined)
  };
  Kind kind = Kind::kLiteral;
  Pos pos;
  Value literal;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // kTest: "is not"
  int depth = 1;         // 1 + the deepest operand: bounds the interpreter's recursion
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (condition, body); else_body
    kFor,       // for targets in expr [if condition]: body; else_body
    kSet,       // set targets[0][.attribute] = expr, or set a, b = expr
    kSetBlock,  // set targets[0] %}body{% endset
    kMacro,     // macro name(params): body
    kBreak,
    kContinue,
    kScope      // a body rendered as is ({% generation %})
  };
  Kind kind = Kind::kText;
  Pos pos;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<std::string> targets;
  std::string attribute;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // defaults may be null
};

}  // namespace arbor::runtime::jinja

#endif  // ARBOR_RUNTIME_TEXT_JINJA_AST_H_
