#!/usr/bin/python3
"""Hung-worker latency, before/after figure of docs/RELIABILITY.md ("Faults").

Starts two arbor-worker processes, one arbor-verifier and one
arbor-coordinator from --bin (real processes on loopback, the bundled tiny
models on the CPU backend), streams one beam-search job, SIGSTOPs the worker
the job was routed to after its first step, and prints how long the job took
from the stop to its end, and how it ended. The coordinator of any revision
can be measured (the flags used exist in all of them):

  /usr/bin/python3 bench/faults/hung_worker.py --bin build/bin
  /usr/bin/python3 bench/faults/hung_worker.py --bin /path/to/old/build/bin
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

import grpc  # noqa: E402
from arbor_client.v1 import reasoning_pb2, reasoning_pb2_grpc  # noqa: E402


def start(argv):
    proc = subprocess.Popen(argv + ["--port=0", "--host=127.0.0.1", "--metrics_port=-1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        m = re.match(r"listening on (\S+)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("%s did not start" % argv[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    parser.add_argument("--models", default=os.path.join(ROOT, "models"))
    parser.add_argument("--health_interval_ms", type=int, default=200)
    parser.add_argument("--timeout_s", type=float, default=150)
    args = parser.parse_args()
    os.environ["ARBOR_LOG_LEVEL"] = "ERROR"
    procs = []
    try:
        workers = []
        for _ in range(2):
            p, a = start([os.path.join(args.bin, "arbor-worker"), "--model=%s/policy" % args.models,
                          "--threads=1", "--kv_cache_tokens=8192"])
            procs.append(p)
            workers.append((p, a))
        p, verifier = start([os.path.join(args.bin, "arbor-verifier"),
                             "--model=%s/prm" % args.models, "--threads=1",
                             "--kv_cache_tokens=8192"])
        procs.append(p)
        p, coordinator = start([os.path.join(args.bin, "arbor-coordinator"),
                                "--workers=%s,%s" % (workers[0][1], workers[1][1]),
                                "--verifiers=%s" % verifier,
                                "--health_interval_ms=%d" % args.health_interval_ms])
        procs.append(p)
        time.sleep(3 * args.health_interval_ms / 1000)
        stub = reasoning_pb2_grpc.ReasoningStub(grpc.insecure_channel(coordinator))
        request = reasoning_pb2.SolveRequest(question="What is 12 + 7?", seed=9)
        request.stop.max_step_tokens = 16
        request.beam_search.n = 4
        request.beam_search.beam_width = 2
        request.beam_search.num_iterations = 6
        stream = stub.SolveStream(request, timeout=args.timeout_s)
        routed = next(stream).accepted.worker
        next(stream)  # the first step
        victim = next(p for p, a in workers if a == routed)
        stopped = time.monotonic()
        victim.send_signal(signal.SIGSTOP)
        outcome = "no result"
        try:
            for event in stream:
                if event.HasField("result"):
                    outcome = "OK on %s, retries %d" % (event.result.worker,
                                                        event.result.usage.retries)
        except grpc.RpcError as e:
            outcome = "%s: %s" % (e.code().name, e.details())
        took = time.monotonic() - stopped
        victim.send_signal(signal.SIGCONT)
        print("hung worker %s: job ended %.2f s after SIGSTOP: %s" % (routed, took, outcome))
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
