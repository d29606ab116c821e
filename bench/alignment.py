"""Faithfulness on the real model: KL(empirical || exact) against the number of samples.

With SmolLM2-135M-Instruct (the embedded default) and a constraint whose language is finite and
small, the exact target ``pi(x) = P(x) c(x) / Z`` (the model conditioned on the constraint) is
computed by enumeration (:func:`samplers.enumerate_distributions`: every allowed token sequence,
one batched model call per prefix depth). Then each sampler draws ``--samples`` outputs and the
KL divergence of its empirical distribution from ``pi`` is recorded after every draw:

- ``masked``: locally constrained decoding (token masking), independent draws. It converges to
  LCD's own distribution, not to ``pi``; its KL levels off at about ``KL(LCD || pi)``.
- ``asap``: ASAp (Park et al., NeurIPS 2024), successive draws from one trie (each draw tightens
  the trie); converges to ``pi``.
- ``smc``: SMC with the masked proposal, runs of ``--particles`` particles; the empirical
  distribution after ``k`` samples is the mixture of the first ``k / particles`` runs' posteriors,
  each run weighted by its marginal-likelihood estimate (the standard way to combine independent
  SMC runs: consistent as runs accumulate).
- ``awrs_smc``: the same with the AWRS proposal (Lipkin et al., COLM 2025).

Every curve is the mean over ``--repeats`` independent repetitions (different seeds). The language
is finite, so every prefix's next-token distribution is computed once and memoized; every sampler
and the enumeration see exactly the same numbers (this only saves model calls).

The default constraint is the regex ``00000|1[01]{4}``: 17 strings, one behind the prefix ``0``
and sixteen behind ``1``, the shape where masking is most distorted (it gives ``00000`` all the
probability of a first ``0``). SmolLM2 writes every digit as its own token, so each string has one
tokenization.

    python -m bench.alignment [--samples 1000] [--repeats 5] [--particles 10] [--out-dir bench/results]

Writes ``alignment.json``, ``alignment.md`` and ``alignment.png`` (log-log KL against samples).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
REGEX = "00000|1[01]{4}"
PROMPT = "Write one random binary string of exactly five digits, and nothing else."
SAMPLERS = ("masked", "asap", "smc", "awrs_smc")
CHECKPOINTS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

__all__ = ["MemoLM", "kl_curve", "main"]


class MemoLM:
    """A ``samplers.LanguageModel`` that memoizes rows by token prefix (exact: same numbers).

    ``inner`` answers the misses of each call in one batch. ``n_rows`` counts the rows computed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.vocab_size, self.eos_token_id = inner.vocab_size, inner.eos_token_id
        self.memo: dict[tuple[int, ...], Any] = {}
        self.n_rows = 0

    def next_token_logprobs(self, sequences: Sequence[Sequence[int]]) -> Any:
        import torch

        keys = [tuple(int(t) for t in s) for s in sequences]
        missing = list(dict.fromkeys(k for k in keys if k not in self.memo))
        if missing:
            rows = self.inner.next_token_logprobs([list(k) for k in missing])
            for k, row in zip(missing, rows, strict=True):
                self.memo[k] = row.detach().clone()
            self.n_rows += len(missing)
        return torch.stack([self.memo[k] for k in keys])


def kl_curve(draws: Sequence[tuple[dict[tuple[int, ...], float], float]],
             exact: dict[tuple[int, ...], float]) -> list[float]:
    """KL(empirical || exact) after each draw.

    ``draws``: (distribution over outputs, weight) per draw; a plain sample is ``({x: 1}, 1)``,
    an SMC run is ``(posterior, Z-hat)``. The empirical distribution after ``j`` draws is the
    weight-normalized mixture of the first ``j``; the curve has one point per draw."""
    mix: Counter[tuple[int, ...]] = Counter()
    total = 0.0
    out: list[float] = []
    for dist, w in draws:
        if w > 0.0:
            for x, q in dist.items():
                mix[x] += w * q
            total += w
        if total == 0.0:
            out.append(math.nan)
            continue
        kl = 0.0
        for x, m in mix.items():
            p = m / total
            if p > 0.0:
                kl += p * math.log(p / exact[x])  # KeyError = a sample outside the language
        out.append(max(kl, 0.0))
    return out


def _run_sampler(name: str, lm: MemoLM, matcher: Any, *, samples: int, particles: int,
                 max_tokens: int, seed: int) -> list[tuple[dict[tuple[int, ...], float], float]]:
    import numpy as np

    from samplers import ASApSampler, AWRSSampler, MaskedSampler, smc

    rng = np.random.default_rng(seed)
    draws: list[tuple[dict[tuple[int, ...], float], float]] = []
    if name == "asap":
        asap = ASApSampler(lm, matcher, max_tokens=max_tokens, generator=rng)
        for s in asap.sample_many(samples):
            draws.append(({s.tokens: 1.0}, 1.0))
        return draws
    if name == "masked":
        for _ in range(samples):
            res = smc(lm, matcher, n_particles=1, max_tokens=max_tokens, sampler=MaskedSampler(),
                      ess_threshold=0.0, generator=rng)
            draws.append(({p.output: 1.0 for p in res.finished}, 1.0))
        return draws
    proposal = MaskedSampler() if name == "smc" else AWRSSampler()
    for _ in range(samples // particles):
        res = smc(lm, matcher, n_particles=particles, max_tokens=max_tokens, sampler=proposal,
                  ess_threshold=0.5, generator=rng)
        draws.append((dict(res.posterior), math.exp(res.log_ml) if res.log_ml > -math.inf else 0.0))
    return draws


def _plot(curves: dict[str, list[float]], lcd_kl: float, path: Path, *, particles: int,
          title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, ys in curves.items():
        step = particles if name in ("smc", "awrs_smc") else 1
        xs = [step * (i + 1) for i in range(len(ys))]
        ax.plot(xs, [max(y, 1e-6) for y in ys], label=name)
    ax.axhline(lcd_kl, color="grey", linestyle=":", label="KL(LCD || exact)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples")
    ax.set_ylabel("KL(empirical || exact) [nats]")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--particles", type=int, default=10)
    p.add_argument("--regex", default=REGEX)
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--max-tokens", type=int, default=8, help="tokens per output, EOS included")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.samples % args.particles:
        p.error("--samples must be a multiple of --particles")

    import numpy as np
    import torch
    from tqdm import tqdm

    import grammars
    from decoding import load_model
    from decoding.lm_adapter import PromptLM
    from samplers import enumerate_distributions, kl_divergence

    t_bench = time.perf_counter()
    model = load_model()
    compiled = grammars.compile(grammars.Grammar.from_regex(args.regex), model.vocab)
    matcher = compiled.matcher()
    ids = model.encode(args.prompt)
    with torch.inference_mode():
        lm = MemoLM(PromptLM(model, ids))
        t0 = time.perf_counter()
        ex = enumerate_distributions(lm, matcher, max_tokens=args.max_tokens)
        enum_s = time.perf_counter() - t0
        exact = ex.exact
        lcd_kl = kl_divergence(ex.lcd, exact)
        curves: dict[str, list[list[float]]] = {name: [] for name in SAMPLERS}
        wall: dict[str, float] = dict.fromkeys(SAMPLERS, 0.0)
        bar = tqdm(total=args.repeats * len(SAMPLERS), desc="alignment", file=sys.stderr)
        for rep in range(args.repeats):
            for name in SAMPLERS:
                t0 = time.perf_counter()
                draws = _run_sampler(name, lm, matcher, samples=args.samples,
                                     particles=args.particles, max_tokens=args.max_tokens,
                                     seed=args.seed + 1000 * rep + SAMPLERS.index(name))
                wall[name] += time.perf_counter() - t0
                curves[name].append(kl_curve(draws, exact))
                bar.update()
        bar.close()
    mean_curves = {name: np.nanmean(np.array(c), axis=0).tolist() for name, c in curves.items()}

    def at(name: str, k: int) -> float | None:
        per = args.particles if name in ("smc", "awrs_smc") else 1
        i = k // per - 1
        ys = mean_curves[name]
        return ys[i] if 0 <= i < len(ys) and k % per == 0 else None

    checkpoints = [k for k in CHECKPOINTS if k <= args.samples]
    table = {name: {str(k): at(name, k) for k in checkpoints} for name in SAMPLERS}
    decode = model.vocab.decode
    meta = {
        "command": "python -m bench.alignment " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": model.name, "regex": args.regex, "prompt": args.prompt,
        "max_tokens": args.max_tokens, "samples": args.samples, "repeats": args.repeats,
        "particles": args.particles, "seed": args.seed, "platform": platform.platform(),
        "enumeration_seconds": enum_s, "model_rows": lm.n_rows,
        "bench_seconds": time.perf_counter() - t_bench,
        "sampler_seconds": wall,
    }
    strings = {decode(list(k)).decode(): v for k, v in sorted(exact.items(), key=lambda kv: -kv[1])}
    lcd = {decode(list(k)).decode(): v for k, v in sorted(ex.lcd.items(), key=lambda kv: -kv[1])}
    result = {"meta": meta, "log_z": ex.log_z, "exact": strings, "lcd": lcd,
              "kl_lcd_exact": lcd_kl, "kl_at": table, "curves": mean_curves}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "alignment.json").write_text(json.dumps(result, indent=1) + "\n")
    _plot(mean_curves, lcd_kl, args.out_dir / "alignment.png", particles=args.particles,
          title=f"SmolLM2-135M, regex {args.regex!r}, mean of {args.repeats} runs")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [
        "# Grammar-aligned sampling on the real model (bench/alignment.py)",
        "",
        f"Command: `{meta['command']}`",
        "",
        (f"Model: {model.name}. Constraint: regex `{args.regex}` ({len(exact)} strings), prompt "
         f"{args.prompt!r} (chat template). Exact target by enumeration "
         f"(log Z = {ex.log_z:.3f}, {lm.n_rows} model rows, {enum_s:.1f} s). "
         f"KL(LCD || exact) = {lcd_kl:.4f} nats: what token masking converges to. "
         f"Mean over {args.repeats} repetitions; SMC runs have {args.particles} particles "
         f"(ESS threshold 0.5) and count as {args.particles} samples each."),
        "",
        "KL(empirical || exact) in nats after k samples:",
        "",
        "| sampler | " + " | ".join(f"k={k}" for k in checkpoints) + " |",
        "|---|" + "---|" * len(checkpoints),
    ]
    for name in SAMPLERS:
        lines.append(f"| {name} | " + " | ".join(fmt(table[name][str(k)]) for k in checkpoints)
                     + " |")
    lines += [
        "",
        "The strings with the most probability under the target or under LCD (masking):",
        "",
        "| string | exact | LCD |",
        "|---|---|---|",
    ]
    top = sorted(set(strings) | set(lcd), key=lambda x: -max(strings.get(x, 0.0), lcd.get(x, 0.0)))
    for s in top[:8]:
        lines.append(f"| {s} | {strings.get(s, 0.0):.4f} | {lcd.get(s, 0.0):.4f} |")
    lines += ["", "![KL against samples](alignment.png)", ""]
    (args.out_dir / "alignment.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
