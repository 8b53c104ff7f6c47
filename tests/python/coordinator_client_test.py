"""A user's Python client against a real arbor-coordinator: the arbor-client
package (clients/python) on Debian's python3-grpcio. The workers behind it
are arbor-test-world processes (the ArithWorld test double of the GPU worker
and reward model). Also checks that `pip install clients/python` works
offline on the Debian packages, and that its checked-in stubs match proto/."""
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SOURCE_DIR = os.environ.get(
    "ARBOR_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BINARY_DIR = os.environ.get("ARBOR_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
CLIENT_DIR = os.path.join(SOURCE_DIR, "clients", "python")
sys.path.insert(0, CLIENT_DIR)

import grpc  # noqa: E402

import arbor_client  # noqa: E402
from arbor_client import (Accepted, AsyncClient, Budget, Client, InvalidArgumentError,  # noqa: E402
                          ResourceExhaustedError, SolveResult, Step)

QUESTION = "add 3 5 7 11"  # 26


def start_server(argv):
    env = dict(os.environ, ARBOR_LOG_LEVEL="WARNING")
    process = subprocess.Popen(argv + ["--port=0", "--host=127.0.0.1", "--metrics_port=-1"],
                               stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.match(r"listening on (\S+)", line)
        if match:
            return process, match.group(1)
    process.kill()
    raise RuntimeError("%s did not start" % argv[0])


def binary(name):
    return os.path.join(BINARY_DIR, "bin", name)


class CoordinatorClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.processes = []
        cls.world, world = start_server([binary("arbor-test-world")])
        cls.coordinator, cls.address = start_server(
            [binary("arbor-coordinator"), "--workers=" + world, "--verifiers=" + world])
        # One job at a time, one queued, slow workers: for the capacity test.
        cls.slow_world, slow_world = start_server([binary("arbor-test-world"),
                                                   "--extend_delay_ms=300"])
        cls.small, cls.small_address = start_server(
            [binary("arbor-coordinator"), "--workers=" + slow_world, "--verifiers=" + slow_world,
             "--max_concurrent_jobs=1", "--max_queued_jobs=1"])
        cls.client = Client(cls.address, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        for process in (cls.coordinator, cls.small, cls.world, cls.slow_world):
            process.terminate()
            process.wait(timeout=30)

    def test_solve_beam_search(self):
        result = self.client.solve(QUESTION, strategy="beam_search", n=8, beam_width=4, seed=7)
        self.assertIsInstance(result, SolveResult)
        self.assertEqual(result.answer, "26")
        self.assertEqual(result.strategy, "beam_search")
        self.assertGreater(result.usage.generated_tokens, 0)
        self.assertGreater(result.usage.reward_calls, 0)
        self.assertGreater(result.usage.worker_calls, 0)
        self.assertGreaterEqual(len(result.candidates), 1)
        self.assertEqual(result.candidates[0].answer, "26")
        self.assertFalse(result.budget_exhausted)

    def test_solve_best_of_n_majority_vote(self):
        result = self.client.solve(QUESTION, n=8, selection="majority_vote", seed=7,
                                   max_candidates=8)
        self.assertEqual(result.strategy, "best_of_n")
        self.assertEqual(len(result.candidates), 8)
        self.assertEqual(result.usage.reward_calls, 0)  # voting needs no reward model
        self.assertGreater(result.candidates[0].votes, 0)

    def test_solve_stream_events(self):
        events = list(self.client.solve_stream(QUESTION, strategy="particle_filter", n=4, seed=7))
        self.assertIsInstance(events[0], Accepted)
        self.assertIsInstance(events[-1], SolveResult)
        steps = events[1:-1]
        self.assertTrue(all(isinstance(e, Step) for e in steps))
        self.assertEqual([s.iteration for s in steps], list(range(len(steps))))
        self.assertEqual(events[-1].answer, "26")
        self.assertEqual(events[-1].usage.steps, len(steps))
        self.assertEqual(len(steps[-1].branch_scores), steps[-1].live_branches)

    def test_leaving_a_stream_early_ends_it(self):
        stream = self.client.solve_stream(QUESTION, strategy="beam_search", n=4, beam_width=2)
        first = next(stream)
        self.assertIsInstance(first, Accepted)
        stream.close()  # cancels the call (and so the job)
        self.assertRaises(StopIteration, next, stream)

    def test_budget_is_honoured(self):
        result = self.client.solve(QUESTION, n=16, budget=Budget(max_generated_tokens=200))
        self.assertTrue(result.budget_exhausted)
        self.assertEqual(result.exhausted_by, "generated_tokens")
        self.assertLessEqual(result.usage.generated_tokens, 200)
        capped = self.client.solve(QUESTION, strategy="beam_search", n=4, beam_width=2,
                                   budget={"max_steps": 2})
        self.assertEqual(capped.exhausted_by, "steps")
        self.assertEqual(capped.usage.steps, 2)

    def test_round_two_strategies(self):
        mcts = self.client.solve(QUESTION, strategy="mcts", num_simulations=8, max_width=3, seed=7)
        self.assertEqual(mcts.strategy, "mcts")
        self.assertEqual(mcts.answer, "26")
        self.assertIn(mcts.stop_reason, ("completed", "iterations"))
        # The final pick and the rollouts' decoding by their proto names.
        argmax = self.client.solve(QUESTION, strategy="mcts", num_simulations=6, max_width=2,
                                   rollouts=True, greedy_rollouts=True,
                                   final_selection="argmax", seed=7)
        self.assertEqual(argmax.answer, "26")
        with self.assertRaises(ValueError):
            self.client.solve(QUESTION, strategy="mcts", final_selection="sample")
        gibbs = self.client.solve(QUESTION, strategy="particle_gibbs", n=4, num_sweeps=2,
                                  entropic=True, seed=7)
        self.assertEqual(gibbs.strategy, "particle_gibbs")
        self.assertEqual(gibbs.answer, "26")
        capped = self.client.solve(QUESTION, strategy="particle_filter", n=4,
                                   budget=Budget(max_reward_calls=2, finish_branches=2))
        self.assertEqual(capped.stop_reason, "reward_calls")
        self.assertTrue(capped.candidates[0].finished)
        self.assertGreaterEqual(capped.usage.reserve_finished_branches, 1)

    def test_auto_and_the_certainty_probe(self):
        auto = self.client.solve(QUESTION, strategy="auto", n=8, seed=5)
        self.assertEqual(auto.strategy, "auto")
        self.assertEqual(auto.answer, "26")
        choice = auto.usage.auto_choice
        self.assertIsNotNone(choice)
        self.assertIn((choice.band, choice.strategy),
                      [("easy", "stop"), ("medium", "best_of_n"), ("hard", "beam_search")])
        self.assertEqual(choice.first_round_samples, 4)
        # Forced easy: the first round answers.
        easy = self.client.solve(QUESTION, strategy="auto", n=8, easy_agreement=0.0,
                                 easy_score=0.0, seed=5)
        self.assertEqual((easy.usage.auto_choice.band, easy.usage.auto_choice.strategy),
                         ("easy", "stop"))
        self.assertIsNone(self.client.solve(QUESTION, n=2, seed=5).usage.auto_choice)

        question = "add 3 5 7 11 13 17 19 23"
        plain = self.client.solve(question, n=4, seed=7)
        probed = self.client.solve(question, n=4, seed=7,
                                   certainty={"effort": "high", "interval_tokens": 16})
        self.assertEqual(probed.stop_reason, "certainty")
        self.assertGreater(probed.usage.probes, 0)
        self.assertGreaterEqual(probed.usage.certain_branches, 1)
        self.assertLess(probed.usage.generated_tokens, plain.usage.generated_tokens)
        # An effort name alone: Dynasor's high preset (2 probes, every 64 tokens).
        self.assertGreater(self.client.solve(question, n=4, seed=7, certainty="high").usage.probes,
                           0)
        with self.assertRaises(InvalidArgumentError) as caught:
            self.client.solve(QUESTION, certainty={"window": 100})
        self.assertEqual(caught.exception.field, "best_of_n.certainty.window")
        with self.assertRaises(InvalidArgumentError) as caught:
            self.client.solve(QUESTION, strategy="auto", n=1)
        self.assertEqual(caught.exception.field, "auto.n")
        with self.assertRaises(ValueError):
            self.client.solve(QUESTION, certainty="extreme")

    def test_bad_field_is_an_exception_naming_it(self):
        with self.assertRaises(InvalidArgumentError) as caught:
            self.client.solve(QUESTION, strategy="beam_search", n=6, beam_width=4)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(caught.exception.field, "beam_search.n")
        self.assertIn("must be divisible by beam_width (4)", caught.exception.details)
        with self.assertRaises(InvalidArgumentError) as caught:
            self.client.solve("")
        self.assertEqual(caught.exception.field, "question")
        # Caught before the call: parameters the strategy does not have.
        with self.assertRaises(TypeError):
            self.client.solve(QUESTION, strategy="best_of_n", beam_width=2)
        with self.assertRaises(ValueError):
            self.client.solve(QUESTION, selection="best")

    def test_at_capacity_and_past_the_deadline(self):
        # The small coordinator: one job runs, one waits, more are refused.
        with Client(self.small_address, timeout=60) as small:
            running = threading.Event()
            errors = []

            def slow():
                # Retried while an earlier job still holds the one slot.
                for _ in range(100):
                    try:
                        for event in small.solve_stream(QUESTION, strategy="beam_search", n=4,
                                                        beam_width=2):
                            if isinstance(event, Accepted):
                                running.set()
                        return
                    except ResourceExhaustedError:
                        time.sleep(0.1)

            def queued():
                try:
                    small.solve(QUESTION, strategy="greedy", timeout=0.5)
                except arbor_client.ArborError as e:
                    errors.append(e)

            threads = [threading.Thread(target=slow)]
            threads[0].start()
            try:
                self.assertTrue(running.wait(timeout=20))
                threads.append(threading.Thread(target=queued))
                threads[1].start()
                time.sleep(0.2)  # the queued job takes the one queue slot
                with self.assertRaises(ResourceExhaustedError) as caught:
                    small.solve(QUESTION, strategy="greedy")
                self.assertEqual(caught.exception.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIsInstance(caught.exception, arbor_client.ArborError)
            finally:
                for thread in threads:
                    thread.join()
            self.assertEqual(len(errors), 1)
            self.assertIsInstance(errors[0], arbor_client.DeadlineExceededError)
            self.assertEqual(errors[0].code, grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_async_client(self):
        async def run():
            async with AsyncClient(self.address, timeout=60) as client:
                self.assertTrue(await client.health())
                result, events = await asyncio.gather(
                    client.solve(QUESTION, strategy="dvts", n=8, beam_width=2, seed=3),
                    collect(client.solve_stream(QUESTION, strategy="beam_search", n=4,
                                                beam_width=2)))
                with self.assertRaises(InvalidArgumentError):
                    await client.solve(QUESTION, strategy="dvts", n=3, beam_width=2)
                return result, events

        async def collect(stream):
            return [event async for event in stream]

        result, events = asyncio.run(run())
        self.assertEqual(result.answer, "26")
        self.assertEqual(result.strategy, "dvts")
        self.assertIsInstance(events[0], Accepted)
        self.assertIsInstance(events[-1], SolveResult)
        self.assertEqual(events[-1].answer, "26")

    def test_invalid_utf8_is_named(self):
        # Python's protobuf refuses to build such a message; send the bytes raw.
        channel = grpc.insecure_channel(self.address)
        raw = channel.unary_unary("/arbor.v1.Reasoning/Solve")
        question = b"add \xff 1"
        with self.assertRaises(grpc.RpcError) as caught:
            raw(b"\x12" + bytes([len(question)]) + question, timeout=30)
        channel.close()
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(caught.exception.details(), "question: is not valid UTF-8")

    def test_health(self):
        self.assertTrue(self.client.health())

    def test_checked_in_stubs_match_the_protos(self):
        done = subprocess.run([sys.executable, os.path.join(CLIENT_DIR, "generate_stubs.py"),
                               "--check"], capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_pip_install_on_debian_packages(self):
        # Offline, into a venv that sees Debian's grpcio and protobuf: what
        # `pip install clients/python` does on a Debian machine.
        with tempfile.TemporaryDirectory() as tmp:
            venv = os.path.join(tmp, "venv")
            made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                                  capture_output=True, text=True, timeout=120)
            if made.returncode != 0:
                self.skipTest("python3 -m venv is unavailable (apt-get install python3-venv): "
                              + made.stderr.strip())
            python = os.path.join(venv, "bin", "python")
            # From a copy: setuptools writes build/ and *.egg-info beside the sources.
            source = os.path.join(tmp, "python")
            shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns(
                "build", "*.egg-info", "__pycache__"))
            install = subprocess.run(
                [python, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--quiet",
                 source], capture_output=True, text=True, timeout=300, cwd=tmp)
            self.assertEqual(install.returncode, 0, install.stdout + install.stderr)
            script = ("import arbor_client, sys\n"
                      "assert 'site-packages' in arbor_client.__file__, arbor_client.__file__\n"
                      "with arbor_client.Client(sys.argv[1], timeout=60) as c:\n"
                      "    print(c.solve(sys.argv[2], strategy='beam_search', n=4, beam_width=2)"
                      ".answer)\n")
            run = subprocess.run([python, "-c", script, self.address, QUESTION], cwd=tmp,
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertEqual(run.stdout.strip(), "26")


if __name__ == "__main__":
    unittest.main(verbosity=2)
