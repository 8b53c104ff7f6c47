#!/usr/bin/env python3
"""Drives the real arbor-worker and arbor-verifier binaries from Python, as a user's client would.

The stubs are the arbor-client package's (clients/python, arbor_client.v1 and
arbor_client.health), imported from the source tree as an installed package would be. Both servers run the bundled reference models
(models/policy, models/prm) on loopback with free ports, and the test checks Extend, Info, Score,
grpc.health.v1, /metrics and the SIGTERM drain. The verifier's scores are checked against an
independent NumPy reading of the PRM (tools/train_reference/numpy_reference.py).

    python3 tests/python/grpc_worker_verifier_client.py --build-dir build
"""
import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

SOURCE_DIR = os.environ.get("ARBOR_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("ARBOR_BINARY_DIR") or os.path.join(SOURCE_DIR, "build")
QUESTION = "Start with 417. Add 325, multiply by 3, subtract 96. What is the result?"
GOOD_STEPS = ["417 + 325 = 742", "742 * 3 = 2226", "2226 - 96 = 2130", "The answer is 2130"]


class Server:
    """A server binary started with --port 0 --metrics_port 0; reads its announced ports."""

    def __init__(self, binary, model, extra=()):
        self.binary = binary
        self.proc = subprocess.Popen(
            [binary, "--model", os.path.join(SOURCE_DIR, model), "--host", "127.0.0.1",
             "--port", "0", "--metrics_host", "127.0.0.1", "--metrics_port", "0", "--threads",
             "2", "--drain_grace_ms", "5000", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout], daemon=True).start()
        self.stderr = []
        threading.Thread(target=lambda: [self.stderr.append(l) for l in self.proc.stderr],
                         daemon=True).start()
        self.address = self.metrics = None
        deadline = time.time() + 60
        while (self.address is None or self.metrics is None) and time.time() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("listening on "):
                self.address = line.split()[-1]
            elif line.startswith("metrics on "):
                self.metrics = line.split()[-1]
        if self.address is None:
            self.kill()
            raise RuntimeError("%s did not start: %s" % (binary, "".join(self.stderr[-20:])))

    def terminate(self, timeout=30):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class WorkerVerifierClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))
        global grpc, common_pb2, generator_pb2, generator_pb2_grpc, verifier_pb2
        global verifier_pb2_grpc, health_pb2, health_pb2_grpc
        import grpc  # noqa: F401
        from arbor_client.v1 import common_pb2, generator_pb2, generator_pb2_grpc  # noqa: F401
        from arbor_client.v1 import verifier_pb2, verifier_pb2_grpc  # noqa: F401
        from arbor_client.health import health_pb2, health_pb2_grpc  # noqa: F401
        bin_dir = os.path.join(BUILD_DIR, "bin")
        cls.worker = Server(os.path.join(bin_dir, "arbor-worker"), "models/policy")
        try:
            cls.verifier = Server(os.path.join(bin_dir, "arbor-verifier"), "models/prm")
        except Exception:
            cls.worker.kill()
            raise
        cls.worker_channel = grpc.insecure_channel(cls.worker.address)
        cls.verifier_channel = grpc.insecure_channel(cls.verifier.address)
        cls.generator = generator_pb2_grpc.GeneratorStub(cls.worker_channel)
        cls.scorer = verifier_pb2_grpc.VerifierStub(cls.verifier_channel)

    @classmethod
    def tearDownClass(cls):
        cls.worker_channel.close()
        cls.verifier_channel.close()
        for server in (cls.worker, cls.verifier):
            server.kill()

    def extend(self, **fields):
        return self.generator.Extend(generator_pb2.ExtendRequest(**fields), timeout=60)

    def score(self, question, candidates, **fields):
        request = verifier_pb2.ScoreRequest(
            question=question,
            candidates=[verifier_pb2.ScoreCandidate(steps=c) for c in candidates], **fields)
        return self.scorer.Score(request, timeout=60)

    def test_health_of_both_servers(self):
        for channel in (self.worker_channel, self.verifier_channel):
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=10)
            self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)

    def test_generator_info(self):
        info = self.generator.Info(generator_pb2.InfoRequest(), timeout=10)
        self.assertEqual(info.model, "policy")
        self.assertEqual(info.architecture, "LlamaForCausalLM")
        self.assertEqual(info.max_context_tokens, 512)
        self.assertEqual(info.backend, "cpu")
        self.assertEqual(info.kv_block_size, 16)
        self.assertEqual(info.kv_capacity_tokens, info.kv_blocks_total * 16)
        self.assertEqual(info.chat_template, "model")  # its own tokenizer_config.json template
        self.assertEqual(len(info.tokenizer_fingerprint), 64)
        self.assertGreater(len(info.eos_token_ids), 0)

    def test_extend_branches_and_a_greedy_solution(self):
        greedy = common_pb2.SamplingParams(temperature=0.0)
        first = self.extend(job_id="py", prompt_text=QUESTION, sampling=greedy,
                            branches=[generator_pb2.BranchInput(num_samples=2),
                                      generator_pb2.BranchInput(num_samples=1, seed=5)])
        self.assertGreater(len(first.prompt_tokens), 10)
        self.assertEqual([(o.branch_index, o.sample_index) for o in first.outputs],
                         [(0, 0), (0, 1), (1, 0)])
        step = first.outputs[0]
        self.assertEqual(step.finish_reason, common_pb2.FINISH_REASON_STEP)
        self.assertTrue(step.text.endswith("\n\n"), step.text)
        self.assertLess(step.logprob, 0.0)
        self.assertEqual(first.usage.worker_calls, 1)
        self.assertEqual(first.usage.generated_tokens, 3 * len(step.tokens))
        # Greedy samples agree, whatever their seed.
        self.assertEqual([o.text for o in first.outputs], [step.text] * 3)

        # Grow one branch step by step with the prompt's tokens, until EOS.
        prompt = list(first.prompt_tokens)
        suffix, texts = list(step.tokens), [step.text]
        for _ in range(12):
            r = self.extend(prompt_tokens=prompt, sampling=greedy,
                            branches=[generator_pb2.BranchInput(suffix_tokens=suffix)])
            self.assertEqual(len(r.prompt_tokens), 0)
            self.assertGreater(r.usage.prefix_cache_hit_tokens, 0)
            out = r.outputs[0]
            suffix += list(out.tokens)
            texts.append(out.text)
            if out.finish_reason != common_pb2.FINISH_REASON_STEP:
                break
        self.assertEqual(out.finish_reason, common_pb2.FINISH_REASON_EOS)
        self.assertIn("The answer is", texts[-1])

    def test_sampling_is_reproducible(self):
        request = dict(prompt_text=QUESTION,
                       branches=[generator_pb2.BranchInput(num_samples=4, seed=11)],
                       sampling=common_pb2.SamplingParams(temperature=1.0))
        a, b = self.extend(**request), self.extend(**request)
        self.assertEqual([list(o.tokens) for o in a.outputs], [list(o.tokens) for o in b.outputs])

    def test_bad_requests_name_the_field(self):
        cases = [
            (dict(prompt_tokens=[1, 2], branches=[generator_pb2.BranchInput(
                suffix_tokens=[3, 70000])]), "branches[0].suffix_tokens[1]: token id 70000"),
            (dict(prompt_tokens=[1] * 600, branches=[generator_pb2.BranchInput()]),
             "context window of 512"),
            (dict(prompt_text=QUESTION), "branches: empty"),
            (dict(prompt_text=QUESTION, branches=[generator_pb2.BranchInput(num_samples=300)]),
             "branches[0].num_samples"),
            (dict(prompt_text=QUESTION, chat_template="alpaca",
                  branches=[generator_pb2.BranchInput()]), "chat_template"),
        ]
        for fields, message in cases:
            with self.assertRaises(grpc.RpcError) as raised:
                self.extend(**fields)
            self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(message, raised.exception.details())
        with self.assertRaises(grpc.RpcError) as raised:
            self.score("", [GOOD_STEPS])
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("question: empty", raised.exception.details())
        with self.assertRaises(grpc.RpcError) as raised:
            self.score(QUESTION, [GOOD_STEPS, []])
        self.assertIn("candidates[1].steps: empty", raised.exception.details())

    def test_verifier_info(self):
        info = self.scorer.Info(verifier_pb2.VerifierInfoRequest(), timeout=10)
        self.assertEqual(info.model, "prm")
        self.assertEqual(info.kind, "token_logit_prm")
        self.assertEqual(info.step_tag, "<|step|>")
        self.assertEqual((info.positive_token, info.negative_token), ("+", "-"))

    def test_scores_match_a_numpy_reading_of_the_prm(self):
        try:
            import numpy as np
        except ImportError:
            self.skipTest("numpy is not installed")
        sys.path.insert(0, os.path.join(SOURCE_DIR, "tools", "train_reference"))
        import numpy_reference
        prm_dir = os.path.join(SOURCE_DIR, "models", "prm")
        with open(os.path.join(prm_dir, "prm_config.json")) as f:
            cfg = json.load(f)
        tok = numpy_reference.BpeTokenizer(os.path.join(prm_dir, "tokenizer.json"))
        model = numpy_reference.Llama(prm_dir)
        head = model.w["lm_head.weight"][[cfg["positive_token_id"], cfg["negative_token_id"]]]
        with open(os.path.join(SOURCE_DIR, "models", "data", "heldout.jsonl")) as f:
            problems = [json.loads(line) for _, line in zip(range(4), f)]
        wrong = ["417 + 325 = 742", "742 * 3 = 2236", "The answer is 2140"]
        items = [(p["question"], p["steps"]) for p in problems] + [(QUESTION, wrong)]
        for question, steps in items:
            ids = tok.encode(numpy_reference.prm_text(question, steps, cfg))
            hidden = model.hidden(np.array([ids]))
            tags = [i for i, t in enumerate(ids) if t == cfg["step_tag_id"]]
            logits = hidden[0, tags] @ head.T
            expected = 1 / (1 + np.exp(-(logits[:, 0] - logits[:, 1])))
            got = self.score(question, [steps]).results[0].scores
            self.assertEqual(len(got), len(steps))
            np.testing.assert_allclose(got, expected, atol=2e-3)

    def test_rescoring_a_longer_candidate_costs_only_its_new_tokens(self):
        question = QUESTION.replace("417", "418")  # not scored by another test
        steps = ["418 + 325 = 743", "743 * 3 = 2229"]
        first = self.score(question, [steps])
        second = self.score(question, [steps + ["2229 - 96 = 2133"]])
        self.assertEqual(list(second.results[0].scores)[:2], list(first.results[0].scores))
        self.assertEqual(first.usage.reward_calls, 1)
        # "\n\n" + "2229 - 96 = 2133" + "<|step|>" (at most one token per byte of
        # the step, one each for separator and tag), plus at most 15 re-run
        # tokens of a partly filled cache block.
        self.assertLessEqual(second.usage.reward_tokens, len("2229 - 96 = 2133") + 2 + 15)
        self.assertGreaterEqual(second.usage.reward_cache_hit_tokens,
                                first.usage.reward_tokens - 15)
        last = self.score(question, [steps + ["2229 - 96 = 2133"]], last_step_only=True)
        self.assertEqual(len(last.results[0].scores), 1)
        self.assertAlmostEqual(last.results[0].scores[0], second.results[0].scores[2], places=5)

    def test_metrics_endpoints(self):
        self.extend(prompt_text=QUESTION, branches=[generator_pb2.BranchInput()])
        self.score(QUESTION, [GOOD_STEPS])
        for server, role, model, method in (
                (self.worker, "worker", "policy", "Generator/Extend"),
                (self.verifier, "verifier", "prm", "Verifier/Score")):
            text = urllib.request.urlopen("http://%s/metrics" % server.metrics,
                                          timeout=10).read().decode()
            self.assertIn('arbor_engine_kv_blocks{model="%s",role="%s",state="total"}'
                          % (model, role), text)
            self.assertIn("arbor_engine_step_seconds_bucket", text)
            self.assertIn('method="/arbor.v1.%s"' % method, text)

    def test_zz_sigterm_drains_and_exits(self):
        # Runs last (unittest sorts by name): the servers stop cleanly on SIGTERM.
        for server in (self.worker, self.verifier):
            self.assertEqual(server.terminate(), 0, "".join(server.stderr[-20:]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=None)
    args, rest = parser.parse_known_args()
    if args.build_dir:
        BUILD_DIR = os.path.abspath(args.build_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
