"""A user's Python client against a real arbor-coordinator: Debian's
python3-grpcio and stubs generated from proto/. The workers behind it are
arbor-test-world processes (the ArithWorld test double of the GPU worker and
reward model)."""
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arbor_stubs  # noqa: E402

import grpc  # noqa: E402

S = arbor_stubs.load()


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


class CoordinatorClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = lambda name: os.path.join(arbor_stubs.BINARY_DIR, "bin", name)
        cls.world, world = start_server([binary("arbor-test-world")])
        cls.coordinator, cls.address = start_server(
            [binary("arbor-coordinator"), "--workers=" + world, "--verifiers=" + world])
        cls.channel = grpc.insecure_channel(cls.address)
        cls.stub = S.reasoning_pb2_grpc.ReasoningStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        for process in (cls.coordinator, cls.world):
            process.terminate()
            process.wait(timeout=30)
        arbor_stubs.cleanup()

    def request(self, **kwargs):
        return S.reasoning_pb2.SolveRequest(question="add 3 5 7 11", seed=7, **kwargs)

    def test_solve_beam_search(self):
        response = self.stub.Solve(
            self.request(beam_search=S.reasoning_pb2.BeamSearch(n=8, beam_width=4)), timeout=60)
        self.assertEqual(response.answer, "26")
        self.assertEqual(response.strategy, "beam_search")
        self.assertGreater(response.usage.generated_tokens, 0)
        self.assertGreater(response.usage.reward_calls, 0)
        self.assertGreater(response.usage.worker_calls, 0)
        self.assertGreaterEqual(len(response.candidates), 1)
        self.assertFalse(response.budget_exhausted)

    def test_solve_stream_events(self):
        events = list(self.stub.SolveStream(
            self.request(particle_filter=S.reasoning_pb2.ParticleFilter(n=4)), timeout=60))
        self.assertEqual(events[0].WhichOneof("event"), "accepted")
        self.assertEqual(events[-1].WhichOneof("event"), "result")
        steps = [e.step for e in events[1:-1]]
        self.assertTrue(all(e.WhichOneof("event") == "step" for e in events[1:-1]))
        self.assertEqual([s.iteration for s in steps], list(range(len(steps))))
        self.assertEqual(events[-1].result.answer, "26")
        self.assertEqual(events[-1].result.usage.steps, len(steps))

    def test_budget_is_honoured(self):
        response = self.stub.Solve(
            self.request(best_of_n=S.reasoning_pb2.BestOfN(n=16),
                         budget=S.reasoning_pb2.Budget(max_generated_tokens=200)), timeout=60)
        self.assertTrue(response.budget_exhausted)
        self.assertEqual(response.exhausted_by, "generated_tokens")
        self.assertLessEqual(response.usage.generated_tokens, 200)

    def test_bad_field_is_named(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.Solve(self.request(beam_search=S.reasoning_pb2.BeamSearch(n=6, beam_width=4)),
                            timeout=30)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("beam_search.n (6) must be divisible by beam_width (4)",
                      caught.exception.details())
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.Solve(S.reasoning_pb2.SolveRequest(question=""), timeout=30)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("question", caught.exception.details())

    def test_invalid_utf8_is_named(self):
        # Python's protobuf refuses to build such a message; send the bytes raw.
        raw = self.channel.unary_unary("/arbor.v1.Reasoning/Solve")
        question = b"add \xff 1"
        with self.assertRaises(grpc.RpcError) as caught:
            raw(b"\x12" + bytes([len(question)]) + question, timeout=30)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(caught.exception.details(), "question: is not valid UTF-8")

    def test_step_cap_returns_best_so_far(self):
        response = self.stub.Solve(
            self.request(beam_search=S.reasoning_pb2.BeamSearch(n=4, beam_width=2),
                         budget=S.reasoning_pb2.Budget(max_steps=2)), timeout=60)
        self.assertTrue(response.budget_exhausted)
        self.assertEqual(response.exhausted_by, "steps")
        self.assertEqual(response.usage.steps, 2)

    def test_health(self):
        health = S.health_pb2_grpc.HealthStub(self.channel)
        reply = health.Check(S.health_pb2.HealthCheckRequest(), timeout=10)
        self.assertEqual(reply.status, S.health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    unittest.main(verbosity=2)
