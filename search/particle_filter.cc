// Particle filtering for inference-time scaling (Puri et al. 2025; its_hub).
// N particles advance one step per iteration; the PRM's score of the partial
// trajectory sets the log-weight (replace, its_hub) or adds to it (cumulative,
// textbook SMC: weights reset to equal after each resampling). Before every
// iteration but the first the pool is resampled from softmax(log_w / T),
// multinomial or systematic, every time or only when ESS/N < threshold; with
// entropic resampling T is raised while the ESS ratio is low early on.
// Finished particles stay in the pool with their weight (and may be
// duplicated) or are absorbed (set aside). Copies of one particle are sent as
// one branch with several samples, so the worker's prefix cache serves them.
// Particle Gibbs runs several such sweeps, each keeping reference particles
// from the previous one.
#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "common/status_macros.h"
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
  // A reference particle (particle Gibbs): the index of the trajectory it
  // follows, else -1.
  int ref = -1;
};

std::vector<double> LogWeights(const std::vector<Particle>& particles) {
  std::vector<double> lw;
  lw.reserve(particles.size());
  for (const Particle& p : particles) lw.push_back(p.log_weight);
  return lw;
}

// The first `steps` steps of a recorded trajectory (all of it when longer).
Branch Prefix(const Branch& full, size_t steps) {
  if (steps >= full.steps.size() || full.step_ends.size() != full.steps.size()) return full;
  Branch b;
  b.tokens.assign(full.tokens.begin(), full.tokens.begin() + static_cast<long>(full.step_ends[steps - 1]));
  b.steps.assign(full.steps.begin(), full.steps.begin() + static_cast<long>(steps));
  b.step_ends.assign(full.step_ends.begin(), full.step_ends.begin() + static_cast<long>(steps));
  b.step_scores.assign(full.step_scores.begin(),
                       full.step_scores.begin() +
                           static_cast<long>(std::min(steps, full.step_scores.size())));
  b.score = b.step_scores.empty() ? 0.0 : b.step_scores.back();
  b.logprob = full.logprob;
  b.scored = !b.step_scores.empty();
  return b;
}

// One particle-filter sweep. `refs` are the reference trajectories (empty for
// a plain particle filter). Returns every particle (pool and absorbed) with
// its log-weight; sets *finish when a cap ended the sweep (the best live
// particles were then finished greedily).
absl::StatusOr<std::vector<Particle>> RunSweep(SearchRun& run, const ParticleFilterConfig& config,
                                               const std::vector<Branch>& refs, bool* finish) {
  using WeightUpdate = ParticleFilterConfig::WeightUpdate;
  Branch root;
  std::vector<Particle> pool;
  std::vector<Particle> absorbed;
  auto update_weight = [&](Particle& p) {
    const double logit = ScoreLogit(p.branch.step_scores.back());
    p.log_weight = config.weight_update == WeightUpdate::kReplace ? logit : p.log_weight + logit;
  };
  // A reference particle at `steps` steps of its trajectory.
  auto advance_ref = [&](Particle& p, size_t steps) {
    const Branch& full = refs[static_cast<size_t>(p.ref)];
    p.branch = Prefix(full, steps);
    if (p.branch.steps.size() >= full.steps.size()) p.branch.done = true;
    if (!p.branch.step_scores.empty()) update_weight(p);
  };
  const int free_particles = config.n - static_cast<int>(refs.size());
  bool root_finish = false;

  for (int iteration = 0; iteration < config.num_iterations; ++iteration) {
    absl::StatusOr<SearchRun::Iteration> gate = run.BeginTreeIteration();
    if (!gate.ok()) return gate.status();
    if (*gate != SearchRun::Iteration::kPlay) {
      *finish = *gate != SearchRun::Iteration::kStop;
      root_finish = *gate == SearchRun::Iteration::kCapNear && iteration == 0;
      break;
    }
    const bool final_iteration = iteration == config.num_iterations - 1;

    if (iteration > 0 && !pool.empty()) {
      std::vector<double> weights = SoftmaxWeights(LogWeights(pool), config.temperature);
      double ess_ratio = EffectiveSampleSize(weights) / static_cast<double>(pool.size());
      if (config.entropic) {
        const double t = EntropicTemperature(
            config.temperature, ess_ratio,
            static_cast<double>(iteration) / static_cast<double>(config.num_iterations),
            config.entropic_ess_threshold);
        if (t != config.temperature) {
          weights = SoftmaxWeights(LogWeights(pool), t);
          ess_ratio = EffectiveSampleSize(weights) / static_cast<double>(pool.size());
        }
      }
      const bool resample = config.ess_threshold <= 0.0f || ess_ratio < config.ess_threshold;
      if (resample) {
        // Reference particles are kept; the free slots are drawn over all.
        std::vector<Particle> next;
        size_t kept = 0;
        for (const Particle& p : pool) {
          if (p.ref >= 0) {
            next.push_back(p);
            ++kept;
          }
        }
        const std::vector<size_t> picks =
            Resample(weights, pool.size() - kept, config.resampling, run.resample_rng());
        for (size_t a : picks) {
          next.push_back(pool[a]);
          next.back().family = static_cast<long>(a);
          next.back().ref = -1;  // a copy of a reference particle goes its own way
        }
        if (config.weight_update == WeightUpdate::kCumulative) {
          for (Particle& p : next) p.log_weight = 0.0;
        }
        pool = std::move(next);
      }
    }

    // Live free particles grouped by family: one branch, several samples.
    std::vector<const Branch*> parents;
    std::vector<int> samples;
    std::vector<std::vector<size_t>> members;  // parent -> pool positions
    if (iteration == 0) {
      for (size_t r = 0; r < refs.size(); ++r) {
        Particle p;
        p.ref = static_cast<int>(r);
        pool.push_back(std::move(p));
      }
      if (free_particles > 0) {
        parents.push_back(&root);
        samples.push_back(free_particles);
      }
    } else {
      std::map<long, size_t> group_of_family;
      for (size_t i = 0; i < pool.size(); ++i) {
        if (pool[i].branch.done || pool[i].ref >= 0) continue;
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
      // Heaviest first: a budget-shaped step takes samples from the lightest.
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
    bool last = final_iteration;
    if (!parents.empty()) {
      StepOptions options;
      options.final_iteration = final_iteration;
      options.aggregation = Aggregation::kLast;
      absl::StatusOr<StepResult> step = ExtendAndScore(run, parents, std::move(samples), options);
      if (!step.ok()) return step.status();
      std::vector<Child>& children = step->children;
      if (children.empty()) {
        *finish = run.budget().exhausted();
        root_finish = iteration == 0;
        break;
      }
      if (!step->scored) {
        // Reward budget spent: the pool before this step is the best so far,
        // or, in the first iteration, the unscored new particles with equal
        // weights. Either is finished greedily.
        if (iteration == 0) {
          for (Child& c : children) pool.push_back(Particle{std::move(c.branch), 0.0, -1, -1});
        }
        *finish = true;
        break;
      }
      std::vector<bool> extended(pool.size(), false);
      for (Child& c : children) {
        if (iteration == 0) {
          Particle p;
          p.branch = std::move(c.branch);
          update_weight(p);
          pool.push_back(std::move(p));
          extended.push_back(true);
        } else {
          const size_t at = members[c.parent][static_cast<size_t>(c.sample)];
          Particle& p = pool[at];
          p.branch = std::move(c.branch);
          update_weight(p);
          extended[at] = true;
        }
      }
      // A budget-shaped step drops the live free particles it did not extend.
      std::vector<Particle> kept;
      for (size_t i = 0; i < pool.size(); ++i) {
        if (extended[i] || pool[i].branch.done || pool[i].ref >= 0) kept.push_back(std::move(pool[i]));
      }
      pool = std::move(kept);
    }
    if (final_iteration) run.set_stop_reason(kStopIterations);
    for (Particle& p : pool) {
      if (p.ref >= 0 && !p.branch.done) {
        advance_ref(p, static_cast<size_t>(iteration) + 1);
        if (final_iteration) p.branch = refs[static_cast<size_t>(p.ref)];
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

  if (*finish) {
    // Reference particles take their whole trajectory; the heaviest live
    // free particles are finished greedily.
    for (Particle& p : pool) {
      if (p.ref >= 0) p.branch = refs[static_cast<size_t>(p.ref)];
    }
    if (root_finish && pool.empty()) pool.push_back(Particle{});
    std::vector<size_t> order;
    for (size_t i = 0; i < pool.size(); ++i) {
      if (pool[i].ref < 0 && !pool[i].branch.done) order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return pool[a].log_weight > pool[b].log_weight; });
    std::vector<Branch*> ranked;
    for (size_t i : order) ranked.push_back(&pool[i].branch);
    ARBOR_RETURN_IF_ERROR(run.FinishBranches(ranked));
  }
  std::vector<Particle> all = std::move(pool);
  for (Particle& p : absorbed) all.push_back(std::move(p));
  std::erase_if(all, [](const Particle& p) { return p.branch.steps.empty(); });
  return all;
}

// The final pick over `all` particles with the filter's selection rule.
SolveResult FinalPick(SearchRun& run, const ParticleFilterConfig& config, std::vector<Particle> all) {
  const std::vector<double> weights = SoftmaxWeights(LogWeights(all), config.temperature);
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

}  // namespace

absl::StatusOr<SolveResult> RunParticleFilter(SearchRun& run, const ParticleFilterConfig& config) {
  bool finish = false;
  absl::StatusOr<std::vector<Particle>> all = RunSweep(run, config, {}, &finish);
  if (!all.ok()) return all.status();
  return FinalPick(run, config, *std::move(all));
}

absl::StatusOr<SolveResult> RunParticleGibbs(SearchRun& run, const ParticleGibbsConfig& config) {
  std::vector<Branch> refs;
  std::vector<Particle> all;
  for (int sweep = 0; sweep < config.num_sweeps; ++sweep) {
    if (sweep > 0 && run.budget().exhausted()) break;
    bool finish = false;
    absl::StatusOr<std::vector<Particle>> particles = RunSweep(run, config.filter, refs, &finish);
    if (!particles.ok()) return particles.status();
    if (particles->empty()) break;
    // The next references: drawn by final weight, without replacement, among
    // the finished particles (all of them when none finished).
    std::vector<size_t> eligible;
    for (size_t i = 0; i < particles->size(); ++i) {
      if ((*particles)[i].branch.finished) eligible.push_back(i);
    }
    if (eligible.empty()) {
      for (size_t i = 0; i < particles->size(); ++i) eligible.push_back(i);
    }
    std::vector<Branch> next_refs;
    while (static_cast<int>(next_refs.size()) < config.num_ref_particles && !eligible.empty()) {
      std::vector<double> lw;
      for (size_t i : eligible) lw.push_back((*particles)[i].log_weight);
      const size_t pick =
          SampleIndex(SoftmaxWeights(lw, config.filter.temperature), run.resample_rng());
      next_refs.push_back((*particles)[eligible[pick]].branch);
      eligible.erase(eligible.begin() + static_cast<long>(pick));
    }
    // A reference's trajectory is already a candidate from its own sweep.
    for (Particle& p : *particles) {
      if (p.ref < 0) all.push_back(std::move(p));
    }
    refs = std::move(next_refs);
    if (finish) break;
  }
  return FinalPick(run, config.filter, std::move(all));
}

}  // namespace arbor::search::internal
