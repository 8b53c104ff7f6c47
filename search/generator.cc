#include "search/generator.h"

namespace arbor::search {

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStep:
      return "step";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kContext:
      return "context";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

}  // namespace arbor::search
