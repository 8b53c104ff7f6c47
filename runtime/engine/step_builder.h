// StepBuilder: turns the scheduler's chunks into the backend's ForwardBatch.
// It lays out tokens, positions and block tables, chooses the output rows (the
// wanted rows of score sequences, the last row of a sequence whose completion
// draws from it), and charges each request the tokens it computes. When the
// engine samples on the backend and no score rows are wanted, each output row
// is repeated once per planned draw and the draws' RNG keys are listed, so the
// backend returns tokens instead of logits (RequestTree::PlanDraws).
//
// Thread-safety: none; owned and driven by the engine's scheduler thread.
#ifndef ARBOR_RUNTIME_ENGINE_STEP_BUILDER_H_
#define ARBOR_RUNTIME_ENGINE_STEP_BUILDER_H_

#include <cstddef>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/engine/request.h"
#include "runtime/engine/request_tree.h"

namespace arbor::runtime {

// One forward step, ready to run.
struct BuiltStep {
  // An output row the step returns: of chunks[chunk] at token `position`.
  struct RowWant {
    int chunk;
    int position;
  };
  ForwardBatch batch;
  std::vector<ScheduledChunk> chunks;  // the live ones, in batch order
  std::vector<RowWant> wants;          // in output row order, grouped by chunk
  // Whether the step asks the backend for draws (ForwardSample); then
  // draws[first_draw[j], first_draw[j + 1]) are those of wants[j].
  bool backend_draws = false;
  std::vector<RowSampling> draws;
  std::vector<size_t> first_draw;
  int prefill_tokens = 0;
  int decode_tokens = 0;
};

class StepBuilder {
 public:
  // `backend_sampling`: see EngineOptions::sampling. `tree` must outlive it.
  StepBuilder(const RequestTree* tree, int max_batch_tokens, bool backend_sampling);

  // Builds the step of `planned` (chunks with a null seq are skipped) and
  // charges the requests' usage. The result is valid until the next Build;
  // its chunks are empty when nothing is to be computed.
  const BuiltStep& Build(const std::vector<ScheduledChunk>& planned);

 private:
  void PlanBackendDraws();

  const RequestTree* const tree_;
  const int max_batch_tokens_;
  const bool backend_sampling_;
  BuiltStep step_;  // reused across steps, for its buffers
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_ENGINE_STEP_BUILDER_H_
