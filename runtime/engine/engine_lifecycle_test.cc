// A request's life in the engine: preemption under a tight KV pool, parallel
// and backend sampling, cancellation and deadlines, the stop rules (length,
// context, EOS, step delimiters), rejected requests, stats and shutdown
// (helpers in engine_test_util.h).
#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/engine_test_util.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime {
namespace {

using ::testing::HasSubstr;

TEST_F(EngineTest, PreemptionUnderATinyPoolGivesIdenticalOutput) {
  const auto prompts = GoldenPrompts("llama");
  auto make_requests = [&] {
    std::vector<GenerateRequest> requests;
    for (size_t i = 0; i < prompts.size(); ++i) {
      requests.push_back(Sampled(prompts[i], 40, 50 + i, 3));
    }
    return requests;
  };
  auto run_all = [&](Engine* engine) {
    std::vector<absl::StatusOr<GenerateResult>> results(prompts.size(),
                                                        absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    auto requests = make_requests();
    for (size_t i = 0; i < requests.size(); ++i) {
      threads.emplace_back([&, i] { results[i] = engine->Generate(requests[i]); });
    }
    for (auto& t : threads) t.join();
    return results;
  };
  auto roomy = MakeEngine(EngineSetup().Blocks(512));
  auto reference = run_all(roomy.get());
  EXPECT_EQ(roomy->stats().preemptions, 0);
  // 15 samples of up to 80 tokens need ~70 blocks at once; give 8.
  auto tiny = MakeEngine(EngineSetup().Blocks(8).BatchTokens(32));
  auto squeezed = run_all(tiny.get());
  EXPECT_GT(tiny->stats().preemptions, 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(reference[i].ok()) << reference[i].status();
    ASSERT_TRUE(squeezed[i].ok()) << squeezed[i].status();
    ASSERT_EQ(reference[i]->outputs.size(), squeezed[i]->outputs.size());
    for (size_t k = 0; k < reference[i]->outputs.size(); ++k) {
      ExpectSameOutput(reference[i]->outputs[k], squeezed[i]->outputs[k],
                       "request " + std::to_string(i) + " output " + std::to_string(k));
    }
  }
  ExpectAllBlocksReturned(*tiny);
  ExpectAllBlocksReturned(*roomy);
}

// Many threads submit a random mix of Generate (branches, shared suffixes,
// samples) and Score requests to an engine whose pool holds a few sequences:
// every result equals the one a roomy engine gives, and every block comes back.
TEST_F(EngineTest, MixedWorkloadUnderPressureMatchesARoomyEngine) {
  const auto prompts = GoldenPrompts("llama");
  struct Job {
    bool score = false;
    GenerateRequest gen;
    ScoreRequest sc;
  };
  std::vector<Job> jobs;
  std::mt19937 rng(99);
  for (int j = 0; j < 16; ++j) {
    Job job;
    const auto& prompt = prompts[rng() % prompts.size()];
    if (j % 4 == 3) {
      job.score = true;
      for (int k = 0; k < 3; ++k) {
        ScoreSequence seq;
        seq.tokens = prompt;
        for (int i = 0; i < static_cast<int>(rng() % 20); ++i) seq.tokens.push_back(rng() % 600);
        seq.positions = {static_cast<int32_t>(seq.tokens.size()) - 1, 2};
        job.sc.sequences.push_back(seq);
      }
      job.sc.columns = {1, 2, 3};
    } else {
      job.gen = Sampled(prompt, 5 + static_cast<int>(rng() % 25), rng());
      job.gen.branches.clear();
      std::vector<int32_t> shared_suffix;
      for (int i = 0; i < 17; ++i) shared_suffix.push_back(rng() % 600);
      for (int b = 0; b < 1 + static_cast<int>(rng() % 3); ++b) {
        BranchSpec branch;
        if (rng() % 2) branch.suffix_tokens = shared_suffix;
        branch.num_samples = 1 + static_cast<int>(rng() % 3);
        branch.seed = rng();
        job.gen.branches.push_back(branch);
      }
    }
    jobs.push_back(std::move(job));
  }
  auto run = [&](Engine* engine, bool concurrently) {
    std::vector<absl::StatusOr<GenerateResult>> gens(jobs.size(), absl::UnknownError("-"));
    std::vector<absl::StatusOr<ScoreResult>> scores(jobs.size(), absl::UnknownError("-"));
    auto one = [&](size_t j) {
      if (jobs[j].score) {
        scores[j] = engine->Score(jobs[j].sc);
      } else {
        gens[j] = engine->Generate(jobs[j].gen);
      }
    };
    if (concurrently) {
      std::vector<std::thread> threads;
      for (size_t j = 0; j < jobs.size(); ++j) threads.emplace_back(one, j);
      for (auto& t : threads) t.join();
    } else {
      for (size_t j = 0; j < jobs.size(); ++j) one(j);
    }
    return std::make_pair(std::move(gens), std::move(scores));
  };
  auto roomy = MakeEngine(EngineSetup());
  auto expected = run(roomy.get(), /*concurrently=*/false);
  // Under pressure, with host sampling and with backend sampling (whose steps
  // fall back to logits whenever a score row is in the batch).
  for (const bool backend_sampling : {false, true}) {
    SCOPED_TRACE(backend_sampling ? "backend sampling" : "host sampling");
    EngineSetup setup = EngineSetup().Blocks(10).BatchTokens(24);
    if (backend_sampling) setup.BackendSampling();
    auto tight = MakeEngine(setup);
    auto got = run(tight.get(), /*concurrently=*/true);
    EXPECT_GT(tight->stats().preemptions, 0);
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (jobs[j].score) {
        ASSERT_TRUE(expected.second[j].ok()) << expected.second[j].status();
        ASSERT_TRUE(got.second[j].ok()) << got.second[j].status();
        ASSERT_EQ(expected.second[j]->rows.size(), got.second[j]->rows.size());
        for (size_t k = 0; k < got.second[j]->rows.size(); ++k) {
          ASSERT_EQ(expected.second[j]->rows[k].size(), got.second[j]->rows[k].size());
          for (size_t c = 0; c < got.second[j]->rows[k].size(); ++c) {
            EXPECT_NEAR(expected.second[j]->rows[k][c], got.second[j]->rows[k][c], 1e-4);
          }
        }
      } else {
        ASSERT_TRUE(expected.first[j].ok()) << expected.first[j].status();
        ASSERT_TRUE(got.first[j].ok()) << got.first[j].status();
        ASSERT_EQ(expected.first[j]->outputs.size(), got.first[j]->outputs.size());
        for (size_t k = 0; k < got.first[j]->outputs.size(); ++k) {
          ExpectSameOutput(expected.first[j]->outputs[k], got.first[j]->outputs[k],
                           "job " + std::to_string(j) + " output " + std::to_string(k));
        }
      }
    }
    ExpectAllBlocksReturned(*tight);
  }
  ExpectAllBlocksReturned(*roomy);
}

TEST_F(EngineTest, ParallelSamplingDrawsTheSameTokens) {
  // 600 samples per step: enough work for the sampler threads to share.
  GenerateRequest r = Sampled(GoldenPrompts("llama")[2], 6, 77, 300);
  r.branches.push_back({{5, 6, 7}, 300, 78});
  auto serial = MakeEngine(EngineSetup().SamplerThreads(1).Blocks(1024));
  auto parallel = MakeEngine(EngineSetup().SamplerThreads(4).Blocks(1024));
  // The prompt's one row is drawn from 300 times per branch: 600 output rows.
  auto backend = MakeEngine(EngineSetup().BackendSampling().Blocks(1024));
  auto a = serial->Generate(r);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->outputs.size(), 600u);
  for (Engine* engine : {parallel.get(), backend.get()}) {
    auto b = engine->Generate(r);
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(b->outputs.size(), 600u);
    for (size_t k = 0; k < a->outputs.size(); ++k) {
      ExpectSameOutput(a->outputs[k], b->outputs[k], "output " + std::to_string(k));
    }
    ExpectAllBlocksReturned(*engine);
  }
}

TEST_F(EngineTest, CancellationStopsTheRequestAndReleasesItsBlocks) {
  auto engine = MakeEngine(EngineSetup());
  GenerateRequest r = Sampled(GoldenPrompts("llama")[0], 900, 1, 4);
  absl::Notification done;
  absl::StatusOr<GenerateResult> result;
  auto id = engine->SubmitGenerate(r, [&](absl::StatusOr<GenerateResult> res) {
    result = std::move(res);
    done.Notify();
  });
  ASSERT_TRUE(id.ok()) << id.status();
  // Let it generate a little, then cancel.
  while (engine->stats().generated_tokens < 8) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_GT(engine->stats().kv_blocks_used, 0);
  engine->Cancel(*id);
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  ASSERT_TRUE(result.ok()) << result.status();
  for (const auto& o : result->outputs) {
    EXPECT_EQ(o.finish_reason, FinishReason::kCancelled);
    EXPECT_LT(o.tokens.size(), 900u);
  }
  ExpectAllBlocksReturned(*engine);

  // The blocking form with a cancellation predicate; and a deadline.
  std::atomic<bool> flag{false};
  std::thread tripper([&] {
    while (engine->stats().generated_tokens < 40) absl::SleepFor(absl::Milliseconds(1));
    flag = true;
  });
  auto blocking = engine->Generate(r, [&] { return flag.load(); });
  tripper.join();
  ASSERT_TRUE(blocking.ok());
  EXPECT_EQ(blocking->outputs[0].finish_reason, FinishReason::kCancelled);
  GenerateRequest late = r;
  late.deadline = absl::Now() + absl::Milliseconds(30);
  auto timed = engine->Generate(late);
  ASSERT_TRUE(timed.ok());
  EXPECT_EQ(timed->outputs[0].finish_reason, FinishReason::kCancelled);
  // A cancelled Score completes with CANCELLED.
  ScoreRequest score;
  score.sequences.push_back({GoldenPrompts("llama")[4], {39}});
  score.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(engine->Score(score).status().code(), absl::StatusCode::kDeadlineExceeded);
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, MaxStepTokensAndContextLimit) {
  const auto prompt = GoldenPrompts("llama")[2];  // 8 tokens
  auto engine = MakeEngine(EngineSetup().Context(20));
  auto r = engine->Generate(Sampled(prompt, 5, 1, 2));
  ASSERT_TRUE(r.ok());
  for (const auto& o : r->outputs) {
    EXPECT_EQ(o.tokens.size(), 5u);
    EXPECT_EQ(o.finish_reason, FinishReason::kLength);
  }
  auto c = engine->Generate(Sampled(prompt, 100, 1, 2));
  ASSERT_TRUE(c.ok());
  for (const auto& o : c->outputs) {
    EXPECT_EQ(o.tokens.size(), 12u) << "8 prompt tokens + 12 fill the 20-token window";
    EXPECT_EQ(o.finish_reason, FinishReason::kContext);
  }
  // A branch already at the limit finishes at once.
  GenerateRequest full = Sampled(prompt, 5, 1);
  full.branches[0].suffix_tokens.assign(12, 7);
  auto f = engine->Generate(full);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->outputs[0].tokens.empty());
  EXPECT_EQ(f->outputs[0].finish_reason, FinishReason::kContext);
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, ContextLargerThanTheModelWindowIsInvalidArgument) {
  // The golden llama's window is 1024 tokens.
  EXPECT_EQ(MakeEngine(EngineSetup().Context(1024))->max_context_tokens(), 1024);
  for (int context : {1025, 2000000000}) {
    auto backend = CpuBackend::Create(FixtureDir("llama"), CpuBackendOptions());
    ASSERT_TRUE(backend.ok()) << backend.status();
    EngineOptions options;
    options.max_context_tokens = context;
    auto engine = Engine::Create(options, *std::move(backend), nullptr);
    ASSERT_FALSE(engine.ok()) << context;
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(engine.status().message(), HasSubstr("max_context_tokens"));
    EXPECT_THAT(engine.status().message(), HasSubstr("1024"));
  }
}

TEST_F(EngineTest, EosEndsTheStepAndIsNotReturned) {
  const auto prompt = GoldenPrompts("llama")[3];
  auto engine = MakeEngine(EngineSetup());
  const int32_t eos = engine->model_config().eos_token_ids.at(0);
  // Hot sampling with EOS ignored: find samples that emit EOS somewhere.
  GenerateRequest hot = Sampled(prompt, 60, 5, 48);
  hot.sampling = {1.5f, 1.0f, 0};
  auto ignored = engine->Generate(hot);
  ASSERT_TRUE(ignored.ok());
  hot.stop.ignore_eos = false;
  auto stopped = engine->Generate(hot);
  ASSERT_TRUE(stopped.ok());
  int hits = 0;
  for (size_t k = 0; k < ignored->outputs.size(); ++k) {
    const auto& full = ignored->outputs[k].tokens;
    const auto& cut = stopped->outputs[k];
    auto at = std::find(full.begin(), full.end(), eos);
    if (at == full.end()) {
      EXPECT_EQ(cut.tokens, full);
      EXPECT_EQ(cut.finish_reason, FinishReason::kLength);
      continue;
    }
    ++hits;
    EXPECT_EQ(cut.finish_reason, FinishReason::kEos);
    EXPECT_EQ(cut.tokens, std::vector<int32_t>(full.begin(), at));
    // The step's logprob includes the EOS token's.
    double sum = 0;
    for (size_t i = 0; i <= static_cast<size_t>(at - full.begin()); ++i) {
      sum += ignored->outputs[k].token_logprobs[i];
    }
    EXPECT_NEAR(cut.logprob, sum, 1e-3);
  }
  EXPECT_GT(hits, 0) << "no sample emitted EOS; pick another seed";
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, StepDelimiterEndsTheStepAndIsKept) {
  auto engine = MakeEngine(EngineSetup().WithTokenizer());
  const Tokenizer* tok = engine->tokenizer();
  ASSERT_NE(tok, nullptr);
  const auto prompt = GoldenPrompts("llama")[0];
  GenerateRequest r = Sampled(prompt, 40, 21, 16);
  r.sampling.temperature = 1.2f;
  auto free_run = engine->Generate(r);
  ASSERT_TRUE(free_run.ok());
  // Use as delimiter the text of a token that some sample emits mid-step.
  std::string delimiter;
  for (const auto& o : free_run->outputs) {
    EXPECT_EQ(o.finish_reason, FinishReason::kLength);
    for (size_t i = 3; i < o.tokens.size() && delimiter.empty(); ++i) {
      std::string t = tok->Decode({o.tokens[i]});
      if (t.size() >= 2 && t.size() <= 4 && (unsigned char)t[0] < 0x80) delimiter = t;
    }
  }
  ASSERT_FALSE(delimiter.empty());
  r.stop.step_delimiters = {delimiter};
  auto stepped = engine->Generate(r);
  ASSERT_TRUE(stepped.ok());
  int steps = 0;
  for (size_t k = 0; k < stepped->outputs.size(); ++k) {
    const auto& full = free_run->outputs[k];
    const auto& cut = stepped->outputs[k];
    // The cut output is a prefix of the free run (same seed and positions) ...
    ASSERT_LE(cut.tokens.size(), full.tokens.size());
    EXPECT_TRUE(std::equal(cut.tokens.begin(), cut.tokens.end(), full.tokens.begin()));
    EXPECT_EQ(cut.text, tok->Decode(cut.tokens));
    if (cut.finish_reason == FinishReason::kStep) {
      ++steps;
      // ... ending at the first token that completes the delimiter, which is kept.
      EXPECT_THAT(cut.text, HasSubstr(delimiter));
      std::vector<int32_t> shorter(cut.tokens.begin(), cut.tokens.end() - 1);
      EXPECT_EQ(tok->Decode(shorter).find(delimiter), std::string::npos);
    } else {
      EXPECT_EQ(cut.finish_reason, FinishReason::kLength);
      EXPECT_EQ(cut.text.find(delimiter), std::string::npos);
    }
  }
  EXPECT_GT(steps, 0);
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, RejectsBadRequestsWithClearErrors) {
  auto engine = MakeEngine(EngineSetup().Blocks(16).QueueLimit(1));
  const auto prompt = GoldenPrompts("llama")[0];
  auto expect_error = [&](GenerateRequest r, absl::StatusCode code, const std::string& needle) {
    auto result = engine->Generate(std::move(r));
    EXPECT_EQ(result.status().code(), code) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(needle));
  };
  GenerateRequest r = Sampled(prompt, 4, 1);
  r.prompt_tokens.clear();
  expect_error(r, absl::StatusCode::kInvalidArgument, "prompt_tokens");
  r = Sampled(prompt, 4, 1);
  r.prompt_tokens[2] = 600;
  expect_error(r, absl::StatusCode::kInvalidArgument, "prompt_tokens[2]");
  r = Sampled(prompt, 4, 1);
  r.branches.push_back({{-1}, 1, 0});
  expect_error(r, absl::StatusCode::kInvalidArgument, "branches[1].suffix_tokens[0]");
  r = Sampled(prompt, 4, 1);
  r.branches[0].num_samples = 0;
  expect_error(r, absl::StatusCode::kInvalidArgument, "num_samples");
  r = Sampled(prompt, 4, 1);
  r.sampling.top_p = 0;
  expect_error(r, absl::StatusCode::kInvalidArgument, "top_p");
  r = Sampled(prompt, 4, 1);
  r.stop.max_step_tokens = 0;
  expect_error(r, absl::StatusCode::kInvalidArgument, "max_step_tokens");
  r = Sampled(prompt, 4, 1);
  r.stop.step_delimiters = {"\n\n"};
  expect_error(r, absl::StatusCode::kInvalidArgument, "tokenizer");
  r = Sampled(prompt, 500, 1);  // needs 33 blocks, the pool has 16
  expect_error(r, absl::StatusCode::kResourceExhausted, "KV blocks");
  ScoreRequest s;
  EXPECT_EQ(engine->Score(s).status().code(), absl::StatusCode::kInvalidArgument);
  s.sequences.push_back({prompt, {static_cast<int32_t>(prompt.size())}});
  EXPECT_THAT(std::string(engine->Score(s).status().message()), HasSubstr("positions[0]"));
  s.sequences[0].positions = {0};
  s.columns = {600};
  EXPECT_THAT(std::string(engine->Score(s).status().message()), HasSubstr("columns[0]"));

  // A full queue is RESOURCE_EXHAUSTED.
  absl::Notification done;
  auto id = engine->SubmitGenerate(Sampled(prompt, 200, 1),
                                   [&](absl::StatusOr<GenerateResult>) { done.Notify(); });
  ASSERT_TRUE(id.ok());
  auto second = engine->SubmitGenerate(Sampled(prompt, 4, 1), [](auto) {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  engine->Cancel(*id);
  done.WaitForNotification();
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, StatsAndStepObserver) {
  std::atomic<int> steps{0};
  std::atomic<int> max_tokens{0};
  EngineSetup setup;
  setup.options.max_batch_tokens = 16;
  setup.options.step_observer = [&](const StepInfo& info) {
    ++steps;
    max_tokens = std::max(max_tokens.load(), info.batch_tokens);
    EXPECT_EQ(info.batch_tokens, info.prefill_tokens + info.decode_tokens);
  };
  auto engine = MakeEngine(setup);
  auto r = engine->Generate(Sampled(GoldenPrompts("llama")[4], 10, 1, 3));
  ASSERT_TRUE(r.ok());
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.steps, steps.load());
  EXPECT_LE(max_tokens.load(), 16);
  EXPECT_EQ(s.generated_tokens, 30);
  EXPECT_EQ(s.prefill_tokens, 40);
  EXPECT_EQ(s.kv_blocks_total, 256);
  EXPECT_GT(s.kv_blocks_cached, 0);
  ExpectAllBlocksReturned(*engine);
  // Destroying an engine with work in flight completes it with UNAVAILABLE.
  absl::Notification done;
  absl::Status status;
  ASSERT_TRUE(engine
                  ->SubmitGenerate(Sampled(GoldenPrompts("llama")[4], 900, 1, 2),
                                   [&](absl::StatusOr<GenerateResult> res) {
                                     status = res.status();
                                     done.Notify();
                                   })
                  .ok());
  engine.reset();
  ASSERT_TRUE(done.HasBeenNotified());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, PrefixWatchesListWhatTheCacheStillHolds) {
  // 8 blocks: a second long request must evict the first one's prompt.
  auto engine = MakeEngine(EngineSetup().Blocks(8).BatchTokens(64));
  std::vector<int32_t> prompt = GoldenPrompts("llama")[4];
  while (prompt.size() < 32) prompt.push_back(prompt[prompt.size() % 8]);
  std::vector<int32_t> other(prompt.rbegin(), prompt.rend());
  other[0] = (other[0] + 1) % 100;  // shares no first block with `prompt`
  engine->WatchPrefix(1, prompt);
  engine->WatchPrefix(2, other);
  engine->WatchPrefix(3, {prompt.begin(), prompt.begin() + 8});  // under a block: ignored
  EXPECT_TRUE(engine->CachedPrefixKeys().empty());
  ASSERT_TRUE(engine->Generate(Sampled(prompt, 4, 1)).ok());
  EXPECT_THAT(engine->CachedPrefixKeys(), ::testing::ElementsAre(1));
  EXPECT_EQ(engine->stats().queued_tokens, 0);
  // `other` and its long step fill the pool: the first prompt's blocks go.
  ASSERT_TRUE(engine->Generate(Sampled(other, 8 * 16 - 8 - static_cast<int>(other.size()), 2)).ok());
  EXPECT_THAT(engine->CachedPrefixKeys(), ::testing::ElementsAre(2));
  // Rewatching moves a key to the front once it is cached again.
  engine->WatchPrefix(1, prompt);
  ASSERT_TRUE(engine->Generate(Sampled(prompt, 4, 1)).ok());
  EXPECT_EQ(engine->CachedPrefixKeys().front(), 1u);
  ExpectAllBlocksReturned(*engine);
}

}  // namespace
}  // namespace arbor::runtime
