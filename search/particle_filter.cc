// Particle filtering for inference-time scaling (Puri et al. 2025; its_hub).
// N particles advance one step per iteration; the PRM's score of the partial
// trajectory sets the log-weight (replace, its_hub) or adds to it (cumulative,
// textbook SMC: weights reset to equal after each resampling). Before every
// iteration but the first the pool is resampled from softmax(log_w / T),
// multinomial or systematic, every time or only when ESS/N < threshold.
// Finished particles stay in the pool with their weight (and may be
// duplicated) or are absorbed (set aside). Copies of one particle are sent as
// one branch with several samples, so the worker's prefix cache serves them.
#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "search/extend_and_score.h"
#include "search/resampling.h"
#include "search/search_run.h"

namespace arbor::search::internal {
namespace {

struct Particle {
  Branch branch;
  double log_weight = 0.0;
  // Resampled copies of one ancestor share a family (>= 0) until extended.
  long family = -1;
};

std::vector<double> LogWeights(const std::vector<Particle>& particles) {
  std::vector<double> lw;
  lw.reserve(particles.size());
  for (const Particle& p : particles) lw.push_back(p.log_weight);
  return lw;
}

}  // namespace

absl::StatusOr<SolveResult> RunParticleFilter(SearchRun& run, const ParticleFilterConfig& config) {
  using WeightUpdate = ParticleFilterConfig::WeightUpdate;
  const double temperature = config.temperature;
  const Branch root;
  std::vector<Particle> pool;
  std::vector<Particle> absorbed;
  auto update_weight = [&](Particle& p) {
    const double logit = ScoreLogit(p.branch.step_scores.back());
    p.log_weight = config.weight_update == WeightUpdate::kReplace ? logit : p.log_weight + logit;
  };

  for (int iteration = 0; iteration < config.num_iterations; ++iteration) {
    absl::StatusOr<bool> go = run.BeginIteration();
    if (!go.ok()) return go.status();
    if (!*go) break;
    const bool final_iteration = iteration == config.num_iterations - 1;

    if (iteration > 0 && !pool.empty()) {
      const std::vector<double> weights = SoftmaxWeights(LogWeights(pool), temperature);
      const bool resample =
          config.ess_threshold <= 0.0f ||
          EffectiveSampleSize(weights) / static_cast<double>(pool.size()) < config.ess_threshold;
      if (resample) {
        const std::vector<size_t> picks =
            Resample(weights, pool.size(), config.resampling, run.resample_rng());
        std::vector<Particle> next;
        next.reserve(picks.size());
        for (size_t a : picks) {
          next.push_back(pool[a]);
          next.back().family = static_cast<long>(a);
          if (config.weight_update == WeightUpdate::kCumulative) next.back().log_weight = 0.0;
        }
        pool = std::move(next);
      }
    }

    // Live particles grouped by family: one branch, several samples.
    std::vector<const Branch*> parents;
    std::vector<int> samples;
    std::vector<std::vector<size_t>> members;  // parent -> pool positions
    if (iteration == 0) {
      parents.push_back(&root);
      samples.push_back(config.n);
    } else {
      std::map<long, size_t> group_of_family;
      for (size_t i = 0; i < pool.size(); ++i) {
        if (pool[i].branch.done) continue;
        size_t group = parents.size();
        if (pool[i].family >= 0) {
          auto [it, inserted] = group_of_family.try_emplace(pool[i].family, parents.size());
          group = it->second;
          if (!inserted) {
            samples[group] += 1;
            members[group].push_back(i);
            continue;
          }
        }
        parents.push_back(&pool[i].branch);
        samples.push_back(1);
        members.push_back({i});
      }
      // Heaviest first, as the budget endgame wants them.
      std::vector<size_t> order(parents.size());
      for (size_t g = 0; g < order.size(); ++g) order[g] = g;
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return pool[members[a][0]].log_weight > pool[members[b][0]].log_weight;
      });
      std::vector<const Branch*> ranked_parents;
      std::vector<int> ranked_samples;
      std::vector<std::vector<size_t>> ranked_members;
      for (size_t g : order) {
        ranked_parents.push_back(parents[g]);
        ranked_samples.push_back(samples[g]);
        ranked_members.push_back(std::move(members[g]));
      }
      parents = std::move(ranked_parents);
      samples = std::move(ranked_samples);
      members = std::move(ranked_members);
    }
    StepOptions options;
    options.final_iteration = final_iteration;
    options.aggregation = Aggregation::kLast;
    absl::StatusOr<StepResult> step = ExtendAndScore(run, parents, std::move(samples), options);
    if (!step.ok()) return step.status();
    std::vector<Child>& children = step->children;
    if (children.empty()) break;
    const bool last = step->last;
    if (!step->scored) {
      // Reward budget spent: the pool before this step is the best so far, or,
      // in the first iteration, the unscored new particles with equal weights.
      if (iteration == 0) {
        for (Child& c : children) pool.push_back(Particle{std::move(c.branch), 0.0, -1});
      }
      break;
    }

    if (iteration == 0) {
      for (Child& c : children) {
        Particle p;
        p.branch = std::move(c.branch);
        update_weight(p);
        pool.push_back(std::move(p));
      }
    } else {
      for (Child& c : children) {
        Particle& p = pool[members[c.parent][static_cast<size_t>(c.sample)]];
        p.branch = std::move(c.branch);
        update_weight(p);
      }
    }
    for (Particle& p : pool) p.family = -1;
    if (config.absorb_finished) {
      std::vector<Particle> live;
      for (Particle& p : pool) (p.branch.done ? absorbed : live).push_back(std::move(p));
      pool = std::move(live);
    }
    std::vector<const Branch*> live_view, done_view;
    for (const Particle& p : pool) (p.branch.done ? done_view : live_view).push_back(&p.branch);
    for (const Particle& p : absorbed) done_view.push_back(&p.branch);
    run.Report(iteration, live_view, done_view);
    if (live_view.empty() || last) break;
  }

  // Final pick over every particle, pool and absorbed.
  std::vector<Particle> all = std::move(pool);
  for (Particle& p : absorbed) all.push_back(std::move(p));
  std::erase_if(all, [](const Particle& p) { return p.branch.steps.empty(); });
  const std::vector<double> weights = SoftmaxWeights(LogWeights(all), temperature);
  std::vector<Branch> candidates;
  std::vector<int> tiers;
  for (size_t i = 0; i < all.size(); ++i) {
    all[i].branch.score = weights[i];
    tiers.push_back(all[i].branch.done ? 0 : 1);
    candidates.push_back(std::move(all[i].branch));
  }
  RankOptions rank;
  switch (config.final_selection) {
    case ParticleFilterConfig::FinalSelection::kArgmaxWeight:
      break;
    case ParticleFilterConfig::FinalSelection::kSample:
      if (!candidates.empty()) {
        const size_t pick = SampleIndex(weights, run.final_rng());
        for (size_t i = 0; i < tiers.size(); ++i) tiers[i] = i == pick ? 0 : 1 + tiers[i];
      }
      break;
    case ParticleFilterConfig::FinalSelection::kWeightedVote:
      rank.rule = VoteRule::kWeighted;
      rank.vote_weights = weights;
      break;
  }
  rank.tiers = tiers;
  return run.Finish(std::move(candidates), rank);
}

}  // namespace arbor::search::internal
