#!/usr/bin/env python3
"""Where the PRM is right and wrong: reads the per-sample dump of eval_reference.py --dump and
prints, for each kind of first mistake the policy made (and for the steps after a mistake), how
many there are, their mean PRM score, and the AUROC of correct steps against them.

Pure Python (no torch), runs anywhere:
    python3 tools/train_reference/analyze_samples.py tools/train_reference/work/eval_samples.json
"""
import bisect
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task  # noqa: E402


def mistake_kind(step, reference, i):
    if i >= len(reference):
        return "extra step after the answer"
    if step.startswith(task.ANSWER_PREFIX):
        if reference[i].startswith(task.ANSWER_PREFIX):
            return "wrong final answer"
        return "answers before the last operation"
    if reference[i].startswith(task.ANSWER_PREFIX):
        return "operation past the last one"
    lhs, ref_lhs = step.split(" = ")[0], reference[i].split(" = ")[0]
    if lhs == ref_lhs:
        return "wrong result (arithmetic)"
    if lhs.split(" ")[0] != ref_lhs.split(" ")[0]:
        return "miscopied previous value"
    return "wrong operation or operand"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tools/train_reference/work/eval_samples.json"
    with open(path) as f:
        dump = json.load(f)
    groups = collections.defaultdict(list)
    for item in dump:
        reference = task.solve(item["question"])
        for text, scores, labels in zip(item["samples"], item["prm_scores"], item["labels"]):
            seen_mistake = False
            for i, (step, score, ok) in enumerate(zip(task.split_steps(text), scores, labels)):
                if ok:
                    groups["correct"].append(score)
                elif not seen_mistake:
                    seen_mistake = True
                    groups["first mistake: " + mistake_kind(step, reference, i)].append(score)
                else:
                    groups["after a mistake"].append(score)
    positives = sorted(groups["correct"])

    def auroc_against(negatives):
        total = 0.0
        for n in negatives:
            lo, hi = bisect.bisect_left(positives, n), bisect.bisect_right(positives, n)
            total += len(positives) - hi + 0.5 * (hi - lo)
        return total / (len(positives) * len(negatives))

    print(f"{'steps':45s} {'count':>7s} {'mean P(+)':>10s} {'AUROC vs correct':>17s}")
    for name in sorted(groups, key=lambda k: (k != "correct", -len(groups[k]))):
        v = groups[name]
        auc = "" if name == "correct" else f"{auroc_against(v):.3f}"
        print(f"{name:45s} {len(v):7d} {sum(v) / len(v):10.3f} {auc:>17s}")


if __name__ == "__main__":
    main()
