#include "search/scorer.h"

namespace arbor::search {

int64_t Scorer::MaxRewardTokens(const ScoreRequest& request) const {
  int64_t total = 0;
  for (absl::Span<const std::string> steps : request.candidates) {
    total += static_cast<int64_t>(request.question.size()) + kTemplateTokensPerCandidate;
    for (const std::string& step : steps) {
      total += static_cast<int64_t>(step.size()) + kTemplateTokensPerStep;
    }
  }
  return total;
}

}  // namespace arbor::search
