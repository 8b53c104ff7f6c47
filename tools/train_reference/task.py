#!/usr/bin/env python3
"""Chained integer arithmetic: a multi-step task whose every step can be checked exactly.

A problem:   "Start with 417. Add 325, multiply by 3, subtract 96. What is the result?"
Its solution, one step per paragraph (steps joined by "\\n\\n"), then EOS:
    417 + 325 = 742

    742 * 3 = 2226

    2226 - 96 = 2130

    The answer is 2130

Rules (what the generator draws and the checker enforces):
- 3 to 7 operations; the start value is in [10, 999];
- "add N" with N in [10, 999], "subtract N" with N in [10, 999], "multiply by M" with M in
  [2, 9]; every intermediate value stays in [1, 9999] (an operation that would leave that range
  is not drawn);
- step i (0-based, i < number of operations) must read exactly "A OP B = C" with A the true value
  before operation i, OP/B operation i of the question, and C the true value after it; the step
  after the last operation must read "The answer is N" with N the true result; any further step is
  wrong. A step counts as correct only if it and every step before it are correct (Math-Shepherd
  labels: after the first mistake everything is wrong).

Pure Python, no dependencies. `python3 task.py --out models/data` writes the fixed splits:
    train.jsonl.gz   100000 problems, seed 1 (no question also in held-out)
    heldout.jsonl    500 problems, seed 2
Each line: {"question": str, "steps": [str], "answer": int}.
"""
import argparse
import gzip
import json
import os
import random
import re

MIN_OPS, MAX_OPS = 3, 7
MAX_VALUE = 9999
STEP_SEPARATOR = "\n\n"
ANSWER_PREFIX = "The answer is "

TRAIN_SEED, HELDOUT_SEED = 1, 2
NUM_TRAIN, NUM_HELDOUT = 100_000, 500

_SYMBOL = {"add": "+", "subtract": "-", "multiply": "*"}
_WORDS = {"add": "add", "subtract": "subtract", "multiply": "multiply by"}
_STEP_RE = re.compile(r"^(\d+) ([-+*]) (\d+) = (\d+)$")
_QUESTION_RE = re.compile(r"^Start with (\d+)\. (.+)\. What is the result\?$")
_OP_RE = re.compile(r"^(add|subtract|multiply by) (\d+)$")
_ANSWER_RE = re.compile(r"The answer is (-?\d+)\s*$")


def apply_op(value, kind, operand):
    if kind == "add":
        return value + operand
    if kind == "subtract":
        return value - operand
    if kind == "multiply":
        return value * operand
    raise ValueError(f"unknown operation kind {kind!r}")


def _draw_op(rng, value):
    """One operation that keeps the value in [1, MAX_VALUE]."""
    kinds = []
    if value + 10 <= MAX_VALUE:
        kinds.append("add")
    if value - 10 >= 1:
        kinds.append("subtract")
    if value * 2 <= MAX_VALUE:
        kinds.append("multiply")
    kind = rng.choice(kinds)
    if kind == "add":
        return kind, rng.randint(10, min(999, MAX_VALUE - value))
    if kind == "subtract":
        return kind, rng.randint(10, min(999, value - 1))
    return kind, rng.randint(2, min(9, MAX_VALUE // value))


def make_problem(rng):
    """Draws one problem; returns {"question", "steps", "answer"}."""
    value = rng.randint(10, 999)
    start = value
    ops, steps = [], []
    for _ in range(rng.randint(MIN_OPS, MAX_OPS)):
        kind, operand = _draw_op(rng, value)
        new_value = apply_op(value, kind, operand)
        steps.append(f"{value} {_SYMBOL[kind]} {operand} = {new_value}")
        ops.append((kind, operand))
        value = new_value
    words = [f"{_WORDS[k]} {n}" for k, n in ops]
    words[0] = words[0][0].upper() + words[0][1:]
    question = f"Start with {start}. {', '.join(words)}. What is the result?"
    steps.append(f"{ANSWER_PREFIX}{value}")
    return {"question": question, "steps": steps, "answer": value}


def parse_question(question):
    """Returns (start, [(kind, operand)]) of a question made by make_problem."""
    m = _QUESTION_RE.match(question.strip())
    if not m:
        raise ValueError(f"not a chained-arithmetic question: {question!r}")
    ops = []
    for part in m.group(2).split(", "):
        om = _OP_RE.match(part.lower())
        if not om:
            raise ValueError(f"bad operation {part!r} in question {question!r}")
        kind = {"add": "add", "subtract": "subtract", "multiply by": "multiply"}[om.group(1)]
        ops.append((kind, int(om.group(2))))
    return int(m.group(1)), ops


def solve(question):
    """The reference steps of a question."""
    value, ops = parse_question(question)
    steps = []
    for kind, operand in ops:
        new_value = apply_op(value, kind, operand)
        steps.append(f"{value} {_SYMBOL[kind]} {operand} = {new_value}")
        value = new_value
    steps.append(f"{ANSWER_PREFIX}{value}")
    return steps


def check_steps(question, steps):
    """Per-step labels (list of bool, one per step) with the prefix rule of the module doc.

    Steps are compared after stripping surrounding whitespace.
    """
    reference = solve(question)
    labels, ok = [], True
    for i, step in enumerate(steps):
        ok = ok and i < len(reference) and step.strip() == reference[i]
        labels.append(ok)
    return labels


def check_step(question, previous_steps, step):
    """Whether `step` is correct given the steps before it (all of which must be correct)."""
    return check_steps(question, list(previous_steps) + [step])[-1]


def _change_digit(rng, n):
    """n with one digit changed (the leading digit never becomes 0); or n +- 1 / 10 sometimes."""
    if rng.random() < 0.3:
        return max(0, n + rng.choice([-10, -1, 1, 10]))
    s = list(str(n))
    i = rng.randrange(len(s))
    choices = [d for d in "0123456789" if d != s[i] and not (i == 0 and d == "0" and len(s) > 1)]
    s[i] = rng.choice(choices)
    return int("".join(s))


def corrupt(rng, problem):
    """A plausible wrong solution of `problem`: one mistake of the kinds a policy makes (a wrong
    result digit, a miscopied value or operand, a skipped or repeated operation, a wrong final
    answer), after which the solution goes on consistently from the wrong value. Labels come
    from check_steps. Returns the steps."""
    for _ in range(20):
        steps = _corrupt_once(rng, problem)
        if "-" not in "".join(s.split("=")[-1] for s in steps):  # no negative values
            return steps
    return list(problem["steps"])


def _corrupt_once(rng, problem):
    start, ops = parse_question(problem["question"])
    k = rng.randrange(len(ops))
    kind = rng.choices(["result", "copy", "operand", "skip", "repeat", "answer"],
                       weights=[50, 10, 15, 8, 5, 12])[0]
    ops = list(ops)
    if kind == "skip" and len(ops) > 1:
        del ops[k]
    elif kind == "repeat":
        ops.insert(k, ops[k])
    steps, value = [], start
    for i, (op, operand) in enumerate(ops):
        a = _change_digit(rng, value) if (kind == "copy" and i == k) else value
        if kind == "operand" and i == k:
            operand = max(1, _change_digit(rng, operand)) if rng.random() < 0.7 else \
                rng.choice([o for _, o in ops])
        c = apply_op(a, op, operand)
        if kind == "result" and i == k:
            c = _change_digit(rng, c)
        steps.append(f"{a} {_SYMBOL[op]} {operand} = {c}")
        value = c
    if kind == "answer":
        value = _change_digit(rng, value)
    steps.append(f"{ANSWER_PREFIX}{value}")
    return steps


def extract_answer(text):
    """The integer after the last "The answer is", or None."""
    m = _ANSWER_RE.search(text.strip())
    return int(m.group(1)) if m else None


def is_correct_solution(question, text):
    """A whole solution text is right iff its final answer equals the true result."""
    answer = extract_answer(text)
    return answer is not None and answer == int(solve(question)[-1][len(ANSWER_PREFIX):])


def split_steps(text):
    """Splits a solution text into stripped, non-empty steps."""
    return [s.strip() for s in text.split(STEP_SEPARATOR) if s.strip()]


def generate(seed, count, exclude=()):
    rng = random.Random(seed)
    seen = set(exclude)
    out = []
    while len(out) < count:
        p = make_problem(rng)
        if p["question"] in seen:
            continue
        seen.add(p["question"])
        out.append(p)
    return out


def heldout_problems():
    return generate(HELDOUT_SEED, NUM_HELDOUT)


def train_problems(count=NUM_TRAIN):
    held = {p["question"] for p in heldout_problems()}
    return generate(TRAIN_SEED, count, exclude=held)


def load_jsonl(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_jsonl(path, problems):
    opener = (lambda p: gzip.GzipFile(p, "wb", mtime=0)) if path.endswith(".gz") else (
        lambda p: open(p, "wb"))
    with opener(path) as f:
        for p in problems:
            f.write((json.dumps(p, ensure_ascii=False) + "\n").encode("utf-8"))


def _self_check(problems):
    for p in problems:
        assert solve(p["question"]) == p["steps"], p
        assert all(check_steps(p["question"], p["steps"])), p
        assert is_correct_solution(p["question"], STEP_SEPARATOR.join(p["steps"])), p
        bad = list(p["steps"])
        bad[1] = bad[1][:-1] + str((int(bad[1][-1]) + 1) % 10)
        labels = check_steps(p["question"], bad)
        assert labels[0] and not any(labels[1:]), (p, labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="models/data")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    held = heldout_problems()
    train = train_problems()
    _self_check(held)
    _self_check(train[:2000])
    assert not ({p["question"] for p in held} & {p["question"] for p in train})
    _write_jsonl(os.path.join(args.out, "heldout.jsonl"), held)
    _write_jsonl(os.path.join(args.out, "train.jsonl.gz"), train)
    ops = [len(p["steps"]) - 1 for p in held]
    print(f"wrote {len(train)} train and {len(held)} held-out problems to {args.out}; "
          f"held-out ops per problem: mean {sum(ops) / len(ops):.2f}")


if __name__ == "__main__":
    main()
