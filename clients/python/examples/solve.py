#!/usr/bin/env python3
"""Solve one question with beam search, then watch a particle filter's steps.

    arbor-allinone --port 50051 &          # or a deployed arbor-coordinator
    python3 clients/python/examples/solve.py localhost:50051 "What is 12 * 7?"
"""
import asyncio
import sys

import arbor_client
from arbor_client import AsyncClient, Client, Step


def main(target, question):
    with Client(target, timeout=300) as client:
        try:
            result = client.solve(question, strategy="beam_search", n=8, beam_width=4,
                                  max_tokens=256, budget=arbor_client.Budget(max_steps=8))
        except arbor_client.InvalidArgumentError as e:
            sys.exit("bad request field %s: %s" % (e.field, e.details))
        except arbor_client.ResourceExhaustedError:
            sys.exit("the coordinator is at capacity; retry later")
        print("answer:", result.answer or "(none extracted)")
        print("text:", result.text)
        u = result.usage
        print("generated %d tokens, %d prefix-cache hits, %d reward calls, %d ms"
              % (u.generated_tokens, u.prefix_cache_hit_tokens, u.reward_calls, u.wall_time_ms))

        for event in client.solve_stream(question, strategy="particle_filter", n=8,
                                         max_tokens=256):
            if isinstance(event, Step):
                print("step %d: %d live, best score %.3f"
                      % (event.iteration, event.live_branches, event.best_score))
            elif isinstance(event, arbor_client.SolveResult):
                print("particle filter answer:", event.answer)

    async def majority_votes():
        async with AsyncClient(target, timeout=300) as client:
            results = await asyncio.gather(*[
                client.solve(question, n=8, selection="majority_vote", seed=seed, max_tokens=256)
                for seed in range(3)])
            return [r.answer for r in results]

    print("three majority votes:", asyncio.run(majority_votes()))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
