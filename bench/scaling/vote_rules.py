#!/usr/bin/env python3
"""Replays final-selection rules on dumped candidates (no model runs):

    bench/scaling/vote_rules.py CANDIDATES.jsonl [PROBLEMS.jsonl]

CANDIDATES.jsonl is what run.sh's DUMP=STRATEGY:N writes (every returned
candidate of every problem: steps, step scores, answer, finished); PROBLEMS
defaults to models/data/heldout.jsonl (the same problems, in order). Prints,
in problems right of all problems: the oracle (some candidate right), the
majority vote, and the weighted vote with each candidate weighing
aggregate(step scores) ** power, for aggregation last / min / prod / mean and
a few powers (a large power approaches the argmax). Ties go to the answer of
the best-scored candidate. Only the dumped candidates count (the job returns
at most max_candidates, N in the bench), so a rule replayed here matches the
service's pick only where no candidate was cut (docs/SCALING.md, round 6).
"""
import collections
import json
import math
import sys


def same(got, want):
    got, want = str(got).strip(), str(want).strip()
    try:
        return int(got) == int(want)
    except ValueError:
        return got != "" and got == want


def aggregate(scores, how):
    if not scores:
        return 0.0
    return {"last": scores[-1], "min": min(scores), "prod": math.prod(scores),
            "mean": sum(scores) / len(scores)}[how]


def main():
    dump = sys.argv[1]
    problems = sys.argv[2] if len(sys.argv) > 2 else "models/data/heldout.jsonl"
    gold = [json.loads(line)["answer"] for line in open(problems)]
    by_problem = collections.defaultdict(list)
    for line in open(dump):
        c = json.loads(line)
        by_problem[c["problem"]].append(c)

    def right(how, power, majority=False):
        total = 0
        for p, cands in by_problem.items():
            weight, best = collections.defaultdict(float), {}
            for c in cands:
                if not c["finished"] or not c["answer"]:
                    continue
                s = aggregate(c["step_scores"], how)
                weight[c["answer"]] += 1.0 if majority else s ** power
                best[c["answer"]] = max(best.get(c["answer"], -1.0), s)
            if weight:
                pick = max(weight, key=lambda a: (weight[a], best[a]))
                total += same(pick, gold[p])
        return total

    n = len(by_problem)
    oracle = sum(any(same(c["answer"], gold[p]) for c in cs) for p, cs in by_problem.items())
    print(f"problems {n}, candidates/problem {sum(map(len, by_problem.values())) / n:.2f}")
    print(f"oracle {oracle}, majority vote {right('last', 1, majority=True)}")
    powers = [0.5, 1, 2, 4, 8, 100]
    print("weighted vote, power: " + " ".join(f"{p:>5}" for p in powers))
    for how in ["last", "min", "prod", "mean"]:
        print(f"  {how:<19}" + " ".join(f"{right(how, p):>5}" for p in powers))


if __name__ == "__main__":
    main()
