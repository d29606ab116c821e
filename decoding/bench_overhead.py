"""``python -m decoding.bench_overhead``: per-token time, constrained vs unconstrained, same process.

Runs interleaved rounds on the embedded model: unconstrained text, the demo's JSON Schema and a
regex, each ``--tokens`` decode steps (greedy), and prints the median decode ms/token of each plus
the constraint's own time per token (mask fill + apply + matcher advance, measured inside the
loop). Ratios, not absolute times, are what to compare: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m decoding.bench_overhead")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    from decoding import Generator, load_model
    from decoding.demo import PROMPT, SCHEMA

    model = load_model(num_threads=args.threads)
    cases = {
        "unconstrained": Generator(model, max_tokens=args.tokens),
        "json schema": Generator(model, schema=SCHEMA, max_tokens=args.tokens),
        "regex": Generator(model, regex=r"[A-Za-z ,.]{200}", max_tokens=args.tokens),
    }
    prompts = {
        "unconstrained": "Write a long story about a lighthouse keeper.",
        "json schema": PROMPT,
        "regex": "Write a long story about a lighthouse keeper.",
    }
    for gen in cases.values():  # warm up (first-call costs)
        gen.generate("Hi", max_tokens=2)
    per_token: dict[str, list[float]] = {k: [] for k in cases}
    overhead: dict[str, list[float]] = {k: [] for k in cases}
    steps: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, gen in cases.items():
            c = gen.generate(prompts[name])
            per_token[name].append(c.stats.ms_per_token)
            overhead[name].append(c.stats.constraint_ms_per_token)
            steps[name] = len(c.stats.token_seconds)
    base = statistics.median(per_token["unconstrained"])
    print(f"model: {model.name}, {args.rounds} interleaved rounds, greedy")
    for name in cases:
        med = statistics.median(per_token[name])
        oh = statistics.median(overhead[name])
        print(
            f"{name:14s} {med:8.2f} ms/token ({steps[name]} tokens)  ratio {med / base:5.3f}  "
            f"constraint {oh:.3f} ms/token ({100 * oh / med:.2f}% of a step)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
