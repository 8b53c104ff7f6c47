// Strategy auto: compute-optimal allocation per prompt (Snell et al. 2024,
// "Scaling LLM test-time compute optimally"). Their finding: which search
// buys the most accuracy per token depends on the prompt's difficulty (easy
// prompts: sampling in parallel and picking by verifier; harder ones: PRM beam
// search), and a difficulty estimate from the verifier's scores of a few
// samples is enough to choose. Here a first round of PRM-scored samples gives
// that estimate (answer agreement and mean score, see AutoConfig), and the
// rest of the job's n goes to the strategy of its band. docs/SCALING.md
// ("Auto") gives the bands and the measurements behind them.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "search/search_run.h"

namespace arbor::search::internal {

absl::StatusOr<SolveResult> RunAuto(SearchRun& run, const AutoConfig& config) {
  std::vector<Branch> branches;
  int iteration = 0;
  BestOfNConfig vote;
  vote.n = config.n;
  vote.selection = BestOfNConfig::Selection::kWeightedVote;
  vote.aggregation = Aggregation::kLast;

  absl::StatusOr<bool> drawn = DrawSamples(run, config.first_round_samples, run.config().sampling,
                                           nullptr, branches, iteration);
  if (!drawn.ok()) return drawn.status();
  absl::StatusOr<bool> scored = ScoreSamples(run, branches, vote.aggregation);
  if (!scored.ok()) return scored.status();

  AutoChoice choice;
  choice.first_round_samples = static_cast<int32_t>(branches.size());
  choice.agreement = run.Agreement(branches);
  double total = 0.0;
  for (const Branch& b : branches) total += b.score;
  choice.mean_score = branches.empty() ? 0.0 : total / static_cast<double>(branches.size());
  choice.difficulty = 1.0 - (choice.agreement + choice.mean_score) / 2.0;
  const int rest = config.n - static_cast<int>(branches.size());
  const bool easy =
      choice.agreement >= config.easy_agreement && choice.mean_score >= config.easy_score;
  const bool hard =
      !easy && (choice.agreement <= config.hard_agreement || choice.mean_score < config.hard_score);
  choice.band = easy ? "easy" : hard ? "hard" : "medium";

  // A budget that ended the first round, or a reward budget that could not
  // score it, leaves nothing to allocate: the first round's vote answers.
  if (easy || !*drawn || !*scored || run.budget().exhausted() || rest <= 0) {
    choice.strategy = "stop";
    run.budget().SetAutoChoice(choice);
    return FinishSamples(run, std::move(branches), vote, *scored);
  }
  if (!hard) {
    choice.strategy = "best_of_n";
    choice.n = rest;
    run.budget().SetAutoChoice(choice);
    drawn = DrawSamples(run, rest, run.config().sampling, nullptr, branches, iteration);
    if (!drawn.ok()) return drawn.status();
    scored = ScoreSamples(run, branches, vote.aggregation);
    if (!scored.ok()) return scored.status();
    bool any = false;
    for (const Branch& b : branches) any = any || b.scored;
    return FinishSamples(run, std::move(branches), vote, any);
  }
  BeamSearchConfig beam;
  beam.beam_width = std::min(config.beam_width, rest);
  beam.n = rest / beam.beam_width * beam.beam_width;
  choice.strategy = "beam_search";
  choice.n = beam.n;
  run.budget().SetAutoChoice(choice);
  // The first round's samples stay candidates, ranked with the beams by
  // their (last-step) PRM score.
  return RunBeamSearch(run, beam, std::move(branches));
}

}  // namespace arbor::search::internal
