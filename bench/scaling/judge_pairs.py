#!/usr/bin/env python3
"""How well an LLM judge's Verifier.Compare tells a right solution from a wrong
one, on the policy's own samples: for every problem whose dumped candidates
(arbor-scaling-bench --dump_candidates S:N --candidates_out FILE) hold both a
right and a wrong answer, one right and one wrong candidate (the first of
each) are compared, the right one shown as `a` in even problems and as `b` in
odd ones. Prints the pairwise accuracy (P(right) > 1/2) with its Wilson 95%
interval, the mean P(right), and the position bias: the mean P(verdict A) over
both orders, 0.5 for a judge without one.

    bench/scaling/judge_pairs.py --verifier HOST:PORT --candidates FILE \
        [--problems models/data/heldout.jsonl]
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import grpc  # noqa: E402
from arbor_client.v1 import verifier_pb2, verifier_pb2_grpc  # noqa: E402


def wilson(k, n, z=1.959964):
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verifier", required=True)
    ap.add_argument("--candidates", required=True)
    ap.add_argument("--problems", default="models/data/heldout.jsonl")
    args = ap.parse_args()
    truth = [json.loads(line) for line in open(args.problems)]
    by_problem = {}
    for line in open(args.candidates):
        c = json.loads(line)
        by_problem.setdefault(c["problem"], []).append(c)
    stub = verifier_pb2_grpc.VerifierStub(grpc.insecure_channel(args.verifier))
    right_wins = total = 0
    p_right = 0.0
    p_verdict_a = 0.0
    for problem, cands in sorted(by_problem.items()):
        answer = str(truth[problem]["answer"])
        right = [c for c in cands if c["answer"] == answer]
        wrong = [c for c in cands if c["answer"] and c["answer"] != answer]
        if not right or not wrong:
            continue
        r, w = right[0], wrong[0]
        a, b = (r, w) if problem % 2 == 0 else (w, r)
        request = verifier_pb2.CompareRequest(
            job_id="judge-pairs-%d" % problem, question=cands[0]["question"],
            pairs=[verifier_pb2.ComparePair(a=verifier_pb2.ScoreCandidate(steps=a["steps"]),
                                            b=verifier_pb2.ScoreCandidate(steps=b["steps"]))])
        result = stub.Compare(request, timeout=60).results[0]
        pr = result.prob_a if a is r else 1.0 - result.prob_a
        p_right += pr
        right_wins += pr > 0.5
        total += 1
        # P(verdict A) in each order: a_first, and 1 - b_first.
        p_verdict_a += (result.a_first + 1.0 - result.b_first) / 2
    if total == 0:
        print("no problem has both a right and a wrong candidate")
        return
    lo, hi = wilson(right_wins, total)
    print("pairs: %d (problems with a right and a wrong sample)" % total)
    print("judge picks the right one: %.1f%% [%.1f, %.1f]" % (100 * right_wins / total, 100 * lo,
                                                              100 * hi))
    print("mean P(right): %.3f" % (p_right / total))
    print("mean P(verdict A) over both orders (position bias; 0.5 = none): %.3f"
          % (p_verdict_a / total))


if __name__ == "__main__":
    main()
