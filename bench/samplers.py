"""Weighted samplers on the real model: AWRS against masking, SMC with 8 particles against 1.

JSON generation with the embedded SmolLM2-135M-Instruct (fp32, CPU) on JSONSchemaBench dev-slice
schemas that our compiler accepts (the first ``--schemas`` in a fixed subset order), compiled with
``whitespace="flexible"``: the model writes JSON with newlines and indents, and a compact grammar
rejects those (with compact whitespace AWRS spends most of its checks on whitespace tokens, 5.5
per token instead of about 2.5 on the same schemas; masking hides that cost). Every mode
runs the same loop: :func:`samplers.smc` over a :class:`decoding.lm_adapter.PromptLM` (one batched
forward per step, the prompt prefilled once and excluded from the times), temperature 1, so the
modes differ only in the token sampler and the number of particles:

- ``masked``: ``samplers.MaskedSampler`` (one full mask per token: |V| checks), 1 particle;
- ``awrs``: ``samplers.AWRSSampler`` (the API's setting: ``max_rejects=256``, then one full mask),
  1 particle;
- ``smc1`` / ``smc8``: SMC with the AWRS proposal, ``ess_threshold=0.5``, 1 and 8 particles.

Per schema the modes run back to back in a rotating order, so a slow spell of the shared machine
hits them alike; ratios are of sums over the same schemas in this one run. Reported: AWRS's
constraint checks per token (mean, median, p90, share of tokens that hit the full-mask fallback;
a fallback counts |V| checks) and ms per token against masked; SMC's wall time with 8 particles
against 1 (and per decoding step). Outputs are sampled at temperature 1 from a 135M model, so most
runs are cut by ``--max-tokens``: the measure is per token, and finished outputs are validated
with jsonschema.

    python -m bench.samplers [--schemas 20] [--max-tokens 32] [--threads 1] [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jsonschemabench-dev"
RESULTS = Path(__file__).resolve().parent / "results"
SUBSETS = ["Glaiveai2K", "Github_easy", "Github_trivial", "Snowplow", "Kubernetes", "Github_medium"]
PROMPT = ("Reply with only a JSON object (no prose) that is a realistic example for this JSON "
          "Schema:\n{schema}")
MODES = ("masked", "awrs", "smc1", "smc8")

__all__ = ["main", "pick_schemas", "run_mode"]


class _Timed:
    """A LanguageModel wrapper: time inside the model and rows asked for."""

    def __init__(self, lm: Any) -> None:
        self.lm, self.vocab_size, self.eos_token_id = lm, lm.vocab_size, lm.eos_token_id
        self.model_seconds = 0.0
        self.rows = 0

    def next_token_logprobs(self, sequences: Any) -> Any:
        t0 = time.perf_counter()
        out = self.lm.next_token_logprobs(sequences)
        self.model_seconds += time.perf_counter() - t0
        self.rows += len(sequences)
        return out


class _Counting:
    """A token sampler wrapper that keeps every call's ``n_checks``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.checks: list[int] = []

    def sample(self, logprobs: Any, matcher: Any, *, generator: Any = None) -> Any:
        result = self.inner.sample(logprobs, matcher, generator=generator)
        self.checks.append(int(result.n_checks))
        return result


def pick_schemas(n: int, model: Any, *, whitespace: str = "flexible",
                 ) -> tuple[list[tuple[str, Any, Any]], int]:
    """The first ``n`` dev-slice schemas (``SUBSETS`` order) that compile; and how many did not."""
    import grammars

    picked: list[tuple[str, Any, Any]] = []
    rejected = 0
    for subset in SUBSETS:
        for path in sorted((DATA / subset).glob("*.json")):
            if len(picked) == n:
                return picked, rejected
            schema = json.loads(path.read_text())
            try:
                compiled = grammars.compile(
                    grammars.Grammar.from_json_schema(schema, whitespace=whitespace), model.vocab)
            except grammars.GrammarError:
                rejected += 1
                continue
            picked.append((f"{subset}/{path.name}", schema, compiled))
    return picked, rejected


def run_mode(model: Any, ids: list[int], compiled: Any, mode: str, *, max_tokens: int,
             seed: int) -> dict[str, Any]:
    """One run of ``mode`` (see the module docstring); times exclude the prompt's prefill."""
    import numpy as np

    from decoding.generator import AWRS_MAX_REJECTS
    from decoding.lm_adapter import PromptLM
    from samplers import AWRSSampler, MaskedSampler, smc

    lm = PromptLM(model, ids, max_new_tokens=max_tokens)
    lm.prefill()
    timed = _Timed(lm)
    inner = MaskedSampler() if mode == "masked" else AWRSSampler(max_rejects=AWRS_MAX_REJECTS)
    counting = _Counting(inner)
    particles = 8 if mode == "smc8" else 1
    t0 = time.perf_counter()
    res = smc(timed, compiled.matcher(), n_particles=particles, max_tokens=max_tokens,
              sampler=counting, ess_threshold=0.5 if mode.startswith("smc") else 0.0,
              generator=np.random.default_rng(seed))
    wall = time.perf_counter() - t0
    finished = [p.output for p in res.finished]
    return {
        "mode": mode,
        "particles": particles,
        "wall_s": wall,
        "steps": res.n_steps,
        "tokens": timed.rows,
        "model_s": timed.model_seconds,
        "sampler_s": wall - timed.model_seconds,
        "checks": counting.checks,
        "finished": len(finished),
        "resamples": len(res.resampled_at),
        "log_ml": res.log_ml,
        "outputs": [model.vocab.decode(list(o)).decode("utf-8", "replace") for o in finished[:2]],
    }


def _valid(schema: Any, text: str) -> bool:
    import jsonschema

    try:
        value = json.loads(text)
    except ValueError:
        return False
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return not list(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(value))


def summarize(runs: list[dict[str, Any]], vocab_size: int) -> dict[str, Any]:
    by = {m: [r for r in runs if r["mode"] == m] for m in MODES}

    def tot(mode: str, key: str) -> float:
        return float(sum(r[key] for r in by[mode]))

    checks = [c for r in by["awrs"] for c in r["checks"]]
    masked_ms = 1000 * tot("masked", "wall_s") / tot("masked", "tokens")
    awrs_ms = 1000 * tot("awrs", "wall_s") / tot("awrs", "tokens")
    out: dict[str, Any] = {
        "awrs_checks_per_token_mean": statistics.fmean(checks),
        "awrs_checks_per_token_median": statistics.median(checks),
        "awrs_checks_per_token_p90": sorted(checks)[int(0.9 * (len(checks) - 1))],
        "awrs_checks_per_token_mean_without_fallback": statistics.fmean(
            [c for c in checks if c < vocab_size] or [float("nan")]),
        "awrs_fallback_share": sum(c >= vocab_size for c in checks) / len(checks),
        "awrs_tokens": len(checks),
        "masked_checks_per_token": vocab_size,
        "masked_ms_per_token": masked_ms,
        "awrs_ms_per_token": awrs_ms,
        "awrs_over_masked_time": awrs_ms / masked_ms,
        "masked_sampler_ms_per_token": 1000 * tot("masked", "sampler_s") / tot("masked", "tokens"),
        "awrs_sampler_ms_per_token": 1000 * tot("awrs", "sampler_s") / tot("awrs", "tokens"),
        "smc1_wall_s": tot("smc1", "wall_s"),
        "smc8_wall_s": tot("smc8", "wall_s"),
        "smc8_over_smc1_wall": tot("smc8", "wall_s") / tot("smc1", "wall_s"),
        "smc1_ms_per_step": 1000 * tot("smc1", "wall_s") / tot("smc1", "steps"),
        "smc8_ms_per_step": 1000 * tot("smc8", "wall_s") / tot("smc8", "steps"),
        "smc1_steps": tot("smc1", "steps"),
        "smc8_steps": tot("smc8", "steps"),
        "smc8_model_share": tot("smc8", "model_s") / tot("smc8", "wall_s"),
        "smc8_resamples": tot("smc8", "resamples"),
    }
    out["smc8_over_smc1_per_step"] = out["smc8_ms_per_step"] / out["smc1_ms_per_step"]
    return out


def _markdown(meta: dict[str, Any], s: dict[str, Any], per_schema: list[dict[str, Any]]) -> str:
    lines = [
        "# Weighted samplers on the real model (bench/samplers.py)",
        "",
        f"Command: `{meta['command']}`",
        "",
        (f"Model: {meta['model']}, CPU, {meta['torch_threads']} torch threads, load average "
        f"{meta['load_average']} at start (shared machine: ratios of this run, not absolute times). "
        f"{meta['n_schemas']} dev-slice schemas ({meta['rejected']} rejected by our compiler "
        f"before these were found), `--max-tokens {meta['max_tokens']}`, temperature 1, seed "
        f"{meta['seed']}. Total bench time {meta['bench_seconds']:.0f} s."),
        "",
        "## AWRS against masking (1 sequence, the same loop)",
        "",
        "| | masked | AWRS |",
        "|---|---|---|",
        (f"| constraint checks / token (mean) | {s['masked_checks_per_token']} | "
        f"{s['awrs_checks_per_token_mean']:.2f} |"),
        (f"| checks / token: median, p90 | {s['masked_checks_per_token']} | "
        f"{s['awrs_checks_per_token_median']:.0f}, {s['awrs_checks_per_token_p90']:.0f} |"),
        (f"| checks / token, tokens without the full-mask fallback | - | "
        f"{s['awrs_checks_per_token_mean_without_fallback']:.2f} |"),
        (f"| tokens that hit the fallback (max_rejects=256) | all | "
        f"{100 * s['awrs_fallback_share']:.2f}% |"),
        (f"| ms / token (all of it) | {s['masked_ms_per_token']:.1f} | "
        f"{s['awrs_ms_per_token']:.1f} ({s['awrs_over_masked_time']:.2f}x) |"),
        (f"| ms / token outside the model (sampler) | {s['masked_sampler_ms_per_token']:.2f} | "
        f"{s['awrs_sampler_ms_per_token']:.2f} |"),
        "",
        f"Target: mean checks per token under 3 (over {s['awrs_tokens']} AWRS tokens).",
        "",
        "## SMC (AWRS proposal, ESS threshold 0.5): 8 particles against 1",
        "",
        "| | 1 particle | 8 particles | ratio |",
        "|---|---|---|---|",
        (f"| wall time, all schemas (s) | {s['smc1_wall_s']:.1f} | {s['smc8_wall_s']:.1f} | "
        f"{s['smc8_over_smc1_wall']:.2f}x |"),
        (f"| ms per decoding step | {s['smc1_ms_per_step']:.1f} | {s['smc8_ms_per_step']:.1f} | "
        f"{s['smc8_over_smc1_per_step']:.2f}x |"),
        f"| decoding steps | {s['smc1_steps']:.0f} | {s['smc8_steps']:.0f} | |",
        "",
        (f"Target: at most 2.5x in wall time. With 8 particles {100 * s['smc8_model_share']:.0f}% "
        f"of the time is in the model; {s['smc8_resamples']:.0f} resamplings in total."),
        "",
        "## Per schema",
        "",
        ("| schema | masked ms/tok | AWRS ms/tok | AWRS checks/tok | SMC1 s | SMC8 s | "
        "finished (m/a/1/8) | valid |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in per_schema:
        r = {x["mode"]: x for x in row["runs"]}
        fin = "/".join(str(r[m]["finished"]) for m in MODES)
        lines.append(
            f"| {row['schema']} | {1000 * r['masked']['wall_s'] / r['masked']['tokens']:.0f} | "
            f"{1000 * r['awrs']['wall_s'] / r['awrs']['tokens']:.0f} | "
            f"{statistics.fmean(r['awrs']['checks']):.1f} | {r['smc1']['wall_s']:.1f} | "
            f"{r['smc8']['wall_s']:.1f} | {fin} | {row['valid']}/{row['checked']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--schemas", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (on a loaded 2-core machine, 1 avoids OpenMP thrashing)")
    args = p.parse_args(argv)

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from decoding import load_model

    t_bench = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    model = load_model()
    schemas, rejected = pick_schemas(args.schemas, model)
    runs: list[dict[str, Any]] = []
    per_schema: list[dict[str, Any]] = []
    with torch.inference_mode():
        for k, (name, schema, compiled) in enumerate(schemas):
            ids = model.encode(PROMPT.format(schema=json.dumps(schema)[:1500]))
            rot = k % len(MODES)
            order = MODES[rot:] + MODES[:rot]
            row_runs = []
            for mode in order:
                r = run_mode(model, ids, compiled, mode, max_tokens=args.max_tokens,
                             seed=args.seed + k)
                row_runs.append(r)
            valid = checked = 0
            for r in row_runs:
                for text in r["outputs"]:
                    checked += 1
                    valid += _valid(schema, text)
            runs.extend(row_runs)
            per_schema.append({"schema": name, "prompt_tokens": len(ids), "runs": row_runs,
                               "valid": valid, "checked": checked})
            print(f"[{k + 1}/{len(schemas)}] {name}: " + ", ".join(
                f"{r['mode']} {r['wall_s']:.1f}s/{r['steps']} steps" for r in row_runs),
                file=sys.stderr, flush=True)
    summary = summarize(runs, model.vocab.size)
    meta = {
        "command": "python -m bench.samplers " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": model.name,
        "torch_threads": torch.get_num_threads(),
        "load_average": round(load, 2),
        "platform": platform.platform(),
        "n_schemas": len(schemas),
        "rejected": rejected,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "bench_seconds": time.perf_counter() - t_bench,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "samplers.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "per_schema": per_schema}, indent=1) + "\n")
    (args.out_dir / "samplers.md").write_text(_markdown(meta, summary, per_schema))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
