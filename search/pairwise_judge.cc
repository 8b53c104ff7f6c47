#include "search/pairwise_judge.h"

namespace arbor::search {

int64_t PairwiseJudge::MaxRewardTokens(const PairwiseRequest& request) const {
  int64_t total = 0;
  for (const PairwiseMatch& pair : request.pairs) {
    int64_t sequence = static_cast<int64_t>(request.question.size()) + kTemplateTokensPerSequence;
    for (absl::Span<const std::string> steps : {pair.a, pair.b}) {
      for (const std::string& step : steps) {
        sequence += static_cast<int64_t>(step.size()) + kTemplateTokensPerStep;
      }
    }
    total += 2 * sequence;  // both orders
  }
  return total;
}

}  // namespace arbor::search
