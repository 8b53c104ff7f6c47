// The official OpenAI SDK (npm `openai`, pinned in package.json) against a
// real arbor-allinone on loopback, as a user of vLLM or SGLang would call it:
// chat completion, completion, streaming, `n`, an Arbor extension request,
// and the errors the SDK turns into its exception classes (400, 404, 429,
// 504). Run by run_sdk_test.sh, which installs the SDK and sets
// ARBOR_BINARY_DIR; node's built-in test runner, every test bounded in time.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const OpenAI = require('openai');

const binary = path.join(process.env.ARBOR_BINARY_DIR, 'bin', 'arbor-allinone');
let server;
let client;

// Starts arbor-allinone (one job at a time, one queued: the 429 and 504
// tests rely on it) and resolves with its HTTP address.
function startServer() {
  return new Promise((resolve, reject) => {
    server = spawn(binary, ['--host=127.0.0.1', '--port=0', '--metrics_port=-1', '--http_port=0',
                            '--threads=2', '--max_concurrent_jobs=1', '--max_queued_jobs=1'],
                   { stdio: ['ignore', 'pipe', 'inherit'],
                     env: { ...process.env, ARBOR_LOG_LEVEL: 'WARNING' } });
    const timer = setTimeout(() => reject(new Error('arbor-allinone did not start in 60 s')), 60000);
    server.on('exit', (code) => reject(new Error(`arbor-allinone exited with ${code}`)));
    readline.createInterface({ input: server.stdout }).on('line', (line) => {
      const match = /^http listening on (\S+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
}

before(async () => {
  const address = await startServer();
  // No retries: the SDK would otherwise retry 429 and 5xx and hide them.
  client = new OpenAI({ baseURL: `http://${address}/v1`, apiKey: 'unused', maxRetries: 0,
                        timeout: 120000 });
});

after(() => {
  if (server && server.exitCode === null) server.kill('SIGTERM');
});

const question = [{ role: 'user', content: 'What is 2 + 3?' }];

test('models lists the policy', { timeout: 30000 }, async () => {
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  assert.deepEqual(ids, ['policy']);
  assert.equal(models.data[0].object, 'model');
});

test('chat completion', { timeout: 60000 }, async () => {
  const completion = await client.chat.completions.create({
    model: 'policy', messages: question, max_tokens: 16, seed: 1,
  });
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.model, 'policy');
  assert.match(completion.id, /^chatcmpl-/);
  assert.equal(completion.choices.length, 1);
  const choice = completion.choices[0];
  assert.equal(choice.index, 0);
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(choice.message.content.length > 0);
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  const usage = completion.usage;
  assert.ok(usage.completion_tokens > 0);
  // max_tokens is one solution's cap, and no step runs past it: at most
  // one step more than the cap (docs/HTTP.md).
  assert.ok(usage.completion_tokens < 2 * 16, `completion_tokens ${usage.completion_tokens}`);
  assert.ok(usage.prompt_tokens > 0);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  assert.equal(typeof usage.prefill_tokens, 'number');  // int64 counters are numbers
  assert.equal(completion.arbor.strategy, 'greedy');
});

test('streamed chat completion matches the non-streamed one', { timeout: 60000 }, async () => {
  const request = { model: 'policy', messages: question, max_tokens: 24, seed: 5 };
  const whole = await client.chat.completions.create(request);
  const stream = await client.chat.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  const events = [];
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.arbor) events.push(chunk.arbor.event);
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? '';
      finish = choice.finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  // Greedy with the same seed: the same text, streamed.
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.equal(events[0], 'accepted');
  assert.ok(events.includes('step'), `events: ${events}`);
  assert.equal(events[events.length - 1], 'result');
  assert.ok(usage && usage.completion_tokens === whole.usage.completion_tokens);
});

test('n returns n ranked choices (best-of-N)', { timeout: 90000 }, async () => {
  const completion = await client.chat.completions.create({
    model: 'policy', messages: question, n: 3, max_tokens: 16, seed: 2,
  });
  assert.equal(completion.choices.length, 3);
  completion.choices.forEach((choice, i) => {
    assert.equal(choice.index, i);
    assert.equal(typeof choice.message.content, 'string');
  });
  assert.equal(completion.arbor.strategy, 'best_of_n');
  assert.ok(completion.usage.reward_calls > 0);  // ranked by the reward model
  const scores = completion.choices.map((c) => c.arbor.score);
  assert.deepEqual([...scores].sort((a, b) => b - a), scores);
});

test('an Arbor extension request: beam search with a budget', { timeout: 90000 }, async () => {
  const completion = await client.chat.completions.create({
    model: 'policy', messages: question, max_tokens: 32, seed: 3,
    arbor: { strategy: 'beam_search', n: 4, beam_width: 2, num_iterations: 2,
             stop: { max_step_tokens: 8 }, budget: { max_generated_tokens: 4000 } },
  });
  assert.equal(completion.arbor.strategy, 'beam_search');
  assert.ok(completion.usage.reward_calls > 0);
  assert.ok(completion.usage.steps >= 1 && completion.usage.steps <= 2);
  assert.ok(completion.usage.completion_tokens <= 4000);
  assert.equal(typeof completion.usage.budget_exhausted, 'boolean');
});

test('completion (text continuation)', { timeout: 60000 }, async () => {
  const completion = await client.completions.create({
    model: 'policy', prompt: '1 + 1 =', max_tokens: 8, seed: 4,
  });
  assert.equal(completion.object, 'text_completion');
  assert.match(completion.id, /^cmpl-/);
  assert.equal(typeof completion.choices[0].text, 'string');
});

test('a bad field is a BadRequestError naming it', { timeout: 30000 }, async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'policy', messages: question, arbor: { strategy: 'beam_search', n: 6, beam_width: 4 },
    }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.status, 400);
      assert.equal(error.param, 'arbor.n');
      assert.equal(error.type, 'invalid_request_error');
      return true;
    });
  await assert.rejects(
    client.chat.completions.create({ model: 'policy', messages: question, logprobs: true }),
    (error) => error instanceof OpenAI.BadRequestError && error.param === 'logprobs');
});

test('an unknown model is a NotFoundError', { timeout: 30000 }, async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: question }),
    (error) => {
      assert.ok(error instanceof OpenAI.NotFoundError, String(error));
      assert.equal(error.code, 'model_not_found');
      return true;
    });
});

test('at capacity: 429 with Retry-After, and 504 for a deadline passed in the queue',
     { timeout: 120000 }, async () => {
  // One job runs, one waits (--max_concurrent_jobs=1 --max_queued_jobs=1).
  const slow = client.chat.completions.create({
    model: 'policy', messages: question, n: 8, max_tokens: 256, seed: 6,
    arbor: { stop: { no_step_delimiter: true, ignore_eos: true } },
  });
  await new Promise((r) => setTimeout(r, 300));
  const queued = client.chat.completions.create({
    model: 'policy', messages: question, max_tokens: 8, arbor: { timeout_ms: 100 },
  });
  await new Promise((r) => setTimeout(r, 100));
  await assert.rejects(
    client.chat.completions.create({ model: 'policy', messages: question, max_tokens: 8 }),
    (error) => {
      assert.ok(error instanceof OpenAI.RateLimitError, String(error));
      assert.equal(error.status, 429);
      assert.equal(error.headers.get('retry-after'), '1');
      return true;
    });
  await assert.rejects(queued, (error) => {
    assert.ok(error instanceof OpenAI.APIError, String(error));
    assert.equal(error.status, 504);
    return true;
  });
  const done = await slow;
  assert.equal(done.choices.length, 8);
});
