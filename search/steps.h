// Step text: a chunk generated to EOS in one piece (no step delimiter: the
// last iteration of beam search, DVTS and particle filtering, best-of-N's
// endgame, MCTS's deepest expansion, rollouts and finishes) cut into the
// steps a step-by-step generation would have written, so that the PRM, which
// scores a step at the tag after it (verifier/reward_input.h), reads them as
// the steps they are (docs/SCALING.md, rounds 6 and 7). SearchRun::
// ScoreBranches applies it to such steps (search_run.h).
// Pure function; thread-safe.
#ifndef ARBOR_SEARCH_STEPS_H_
#define ARBOR_SEARCH_STEPS_H_

#include <string>
#include <string_view>
#include <vector>

namespace arbor::search {

// `text` cut after each occurrence of any of `delimiters` (the delimiter stays
// with the piece before it, as a generated step ends with its delimiter; the
// earliest match wins, the longest among matches at the same place); a
// trailing delimiter ends the last piece. No delimiter found (or none given,
// or empty text): the text as one piece.
std::vector<std::string> SplitAtDelimiters(std::string_view text,
                                           const std::vector<std::string>& delimiters);

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_STEPS_H_
