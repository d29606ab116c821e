"""Kernel benchmark: applying a token bitmask to logits, ours against the peers' kernels.

CPU (default): ``kernels.apply_token_bitmask_inplace`` on CPU tensors (the numba kernel) against
xgrammar's CPU kernel (``xgrammar.apply_token_bitmask_inplace`` on CPU tensors) and llguidance's
torch kernel (``llguidance.torch.apply_token_bitmask_inplace``, a ``torch.compile``d function:
its one-time compilation is reported separately and excluded), over a (batch, vocab, dtype, mask)
grid, all in the same process run. For every cell the implementations are interleaved round by
round (rotating their order) so machine noise hits them alike; before each timed call the logits
are restored from a pristine copy (not timed). Reported: median and p90 in microseconds, and the
ratio of ours to the best peer (by median, and by p90); below 1.0 ours is faster. Outputs of all
implementations are checked equal once per cell.

Masks: ``random`` (uniform random bits: every word mixed, the worst case) and ``sparse`` (0.5% of
tokens allowed, as in most grammar states: most words are 0).

A second table times the fused constrained sampler (``kernels.sample_constrained``: temperature,
mask, Gumbel-max and the log allowed mass in one pass) against the unfused torch sequence it
replaces (mask, ``softmax``, ``multinomial``, ``logsumexp``), measured in the same run.

``--device cuda``: the Triton kernel against xgrammar's Triton kernel and llguidance's compiled
torch kernel on the GPU, timed with CUDA events over ``--inner`` back-to-back launches; reports the
achieved memory bandwidth of ours as a fraction of the device's peak (from the device properties,
or ``--peak-gbps``). Bytes counted: the bitmask read plus the logits row written (the traffic of
an unmasked write; a store-only kernel writes only masked elements, so this is an upper bound on
what it needs, and the usual convention for these kernels).

Threads: ``--threads`` sets torch's intra-op threads (which also bound ours) for every
implementation; default 1. On a shared 2-core machine, two-thread timings mostly measured the
neighbours (OpenMP workers spin-waiting or descheduled for milliseconds); pass 2 on a quiet machine
to let llguidance's compiled kernel and ours split large inputs over both cores (xgrammar's CPU
kernel is single-threaded either way).

    python -m bench.kernels [--device cpu|cuda] [--batches 1,8,64] [--vocabs 32000,128256]
        [--dtypes float32,bfloat16] [--masks random,sparse] [--repeats 30] [--threads 1]
        [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = ["main", "run_cpu", "run_cuda"]


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _make(batch: int, vocab: int, dtype: Any, mask: str, device: str, seed: int = 0) -> tuple:
    import torch

    import kernels

    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=gen).to(dtype)
    if mask == "random":
        words = (vocab + 31) // 32
        bitmask = torch.randint(-(2**31), 2**31, (batch, words), generator=gen,
                                dtype=torch.int64).to(torch.int32)
    elif mask == "sparse":
        bitmask = kernels.bool_to_bitmask(torch.rand(batch, vocab, generator=gen) < 0.005)
    else:
        raise ValueError(mask)
    return logits.to(device), bitmask.to(device)


def _peers(device: str) -> dict[str, Callable[[Any, Any], None]]:
    out: dict[str, Callable[[Any, Any], None]] = {}
    try:
        import xgrammar

        out["xgrammar"] = lambda lg, bm: xgrammar.apply_token_bitmask_inplace(lg, bm)
    except ImportError:
        print("xgrammar not installed: skipped", file=sys.stderr)
    try:
        import llguidance.torch as llg_torch

        out["llguidance"] = lambda lg, bm: llg_torch.apply_token_bitmask_inplace(lg, bm)
    except ImportError:
        print("llguidance not installed: skipped", file=sys.stderr)
    return out


def _summary(times: dict[str, list[float]]) -> dict[str, Any]:
    stats = {k: {"median_us": statistics.median(v) * 1e6, "p90_us": _percentile(v, 0.9) * 1e6,
                 "n": len(v)} for k, v in times.items()}
    peers = [k for k in stats if k != "ours"]
    if peers:
        best = min(peers, key=lambda k: stats[k]["median_us"])
        best_p90 = min(peers, key=lambda k: stats[k]["p90_us"])
        stats["best_peer"] = best
        stats["ratio_median"] = stats["ours"]["median_us"] / stats[best]["median_us"]
        stats["ratio_p90"] = stats["ours"]["p90_us"] / stats[best_p90]["p90_us"]
    return stats


def run_cpu(batches: list[int], vocabs: list[int], dtypes: list[str], masks: list[str],
            repeats: int) -> dict[str, Any]:
    import torch

    import kernels

    impls: dict[str, Callable[[Any, Any], None]] = {
        "ours": lambda lg, bm: kernels.apply_token_bitmask_inplace(lg, bm)}
    impls.update(_peers("cpu"))
    compile_s: dict[str, float] = {}
    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for mask in masks:
            for vocab in vocabs:
                for batch in batches:
                    pristine, bitmask = _make(batch, vocab, dtype, mask, "cpu")
                    work = pristine.clone()
                    results = {}
                    failed = {}
                    for name, fn in impls.items():  # warm up (llguidance compiles here)
                        t0 = time.perf_counter()
                        work.copy_(pristine)
                        try:
                            fn(work, bitmask)
                        except Exception as e:  # noqa: BLE001 - a peer failing is reported
                            failed[name] = f"{type(e).__name__}: {e}"[:200]
                            print(f"{name} failed: {failed[name]}", file=sys.stderr)
                            continue
                        dt = time.perf_counter() - t0
                        if name not in compile_s:
                            compile_s[name] = dt
                        results[name] = work.clone()
                        for _ in range(2):
                            work.copy_(pristine)
                            fn(work, bitmask)
                    for name, res in results.items():
                        if not torch.equal(res, results["ours"]):
                            raise AssertionError(f"{name} disagrees with ours at {batch}x{vocab}")
                    times: dict[str, list[float]] = {k: [] for k in impls if k not in failed}
                    names = list(times)
                    for r in range(repeats):
                        for name in names[r % len(names):] + names[: r % len(names)]:
                            work.copy_(pristine)
                            fn = impls[name]
                            t0 = time.perf_counter()
                            fn(work, bitmask)
                            times[name].append(time.perf_counter() - t0)
                    row = {"batch": batch, "vocab": vocab, "dtype": dtype_name, "mask": mask,
                           **_summary(times)}
                    if failed:
                        row["failed"] = failed
                    rows.append(row)
                    _print_row(row)
    return {"apply": rows, "first_call_s": compile_s, "sampler": _sampler_rows(batches, vocabs,
                                                                                repeats)}


def _sampler_rows(batches: list[int], vocabs: list[int], repeats: int) -> list[dict[str, Any]]:
    """Fused sampler (ours) against the unfused torch sequence it replaces, float32, sparse."""
    import torch

    import kernels

    def unfused(lg: Any, bm: Any, gen: Any) -> Any:
        x = lg / 0.8
        masked = x.clone()
        kernels.apply_token_bitmask_inplace(masked, bm)
        probs = torch.softmax(masked, dim=-1)
        tok = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        return tok, masked.logsumexp(-1) - x.logsumexp(-1)

    rows = []
    for vocab in vocabs:
        for batch in batches:
            logits, bitmask = _make(batch, vocab, torch.float32, "sparse", "cpu", seed=1)
            seeds = torch.arange(batch)
            gen = torch.Generator().manual_seed(0)
            impls = {
                "ours": lambda lg=logits, bm=bitmask, sd=seeds: kernels.sample_constrained(
                    lg, bm, sd, temperature=0.8),
                "torch_unfused": lambda lg=logits, bm=bitmask, g=gen: unfused(lg, bm, g),
            }
            for fn in impls.values():
                fn()
            times: dict[str, list[float]] = {k: [] for k in impls}
            names = list(impls)
            for r in range(max(5, repeats // 2)):
                for name in names[r % 2:] + names[: r % 2]:
                    t0 = time.perf_counter()
                    impls[name]()
                    times[name].append(time.perf_counter() - t0)
            row = {"batch": batch, "vocab": vocab, "dtype": "float32", "mask": "sparse",
                   **_summary(times)}
            rows.append(row)
            _print_row(row, label="sample")
    return rows


def _print_row(row: dict[str, Any], label: str = "apply") -> None:
    cells = "  ".join(f"{k} {row[k]['median_us']:.1f}/{row[k]['p90_us']:.1f}"
                      for k in row if isinstance(row[k], dict))
    ratio = f"  ratio {row['ratio_median']:.2f} (p90 {row['ratio_p90']:.2f})" \
        if "ratio_median" in row else ""
    print(f"{label} {row['dtype']:>8} {row['mask']:>6} b={row['batch']:<3} V={row['vocab']:<7} "
          f"{cells}{ratio}", flush=True)


# -- CUDA ---------------------------------------------------------------------------------------


def _peak_gbps(override: float | None) -> float | None:
    if override:
        return override
    import torch

    props = torch.cuda.get_device_properties(0)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        clock = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)  # MHz
        bus = pynvml.nvmlDeviceGetMemoryBusWidth(h)
        return 2 * clock * 1e6 * bus / 8 / 1e9
    except Exception:  # noqa: BLE001 - pynvml missing or no NVML: no peak known
        return None


def run_cuda(batches: list[int], vocabs: list[int], dtypes: list[str], masks: list[str],
             repeats: int, inner: int, peak_override: float | None) -> dict[str, Any]:
    import torch

    import kernels

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    peak = _peak_gbps(peak_override)
    impls: dict[str, Callable[[Any, Any], None]] = {
        "ours": lambda lg, bm: kernels.apply_token_bitmask_inplace(lg, bm)}
    impls.update(_peers("cuda"))
    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for mask in masks:
            for vocab in vocabs:
                for batch in batches:
                    logits, bitmask = _make(batch, vocab, dtype, mask, "cuda")
                    ref = logits.clone()
                    kernels.apply_token_bitmask_inplace(ref, bitmask, backend="torch")
                    for name, fn in impls.items():
                        work = logits.clone()
                        fn(work, bitmask)
                        fn(work, bitmask)
                        if not torch.equal(work, ref):
                            raise AssertionError(f"{name} disagrees with the reference")
                    times: dict[str, list[float]] = {k: [] for k in impls}
                    work = logits.clone()
                    names = list(impls)
                    for r in range(repeats):
                        for name in names[r % len(names):] + names[: r % len(names)]:
                            fn = impls[name]
                            start = torch.cuda.Event(enable_timing=True)
                            end = torch.cuda.Event(enable_timing=True)
                            torch.cuda.synchronize()
                            start.record()
                            for _ in range(inner):
                                fn(work, bitmask)
                            end.record()
                            torch.cuda.synchronize()
                            times[name].append(start.elapsed_time(end) / 1e3 / inner)
                    row = {"batch": batch, "vocab": vocab, "dtype": dtype_name, "mask": mask,
                           **_summary(times)}
                    moved = bitmask.numel() * 4 + logits.numel() * logits.element_size()
                    gbps = moved / (row["ours"]["median_us"] * 1e-6) / 1e9
                    row["ours"]["bandwidth_gbps"] = gbps
                    if peak:
                        row["ours"]["fraction_of_peak"] = gbps / peak
                    rows.append(row)
                    _print_row(row)
                    if peak:
                        print(f"    ours: {gbps:.0f} GB/s = {gbps / peak:.0%} of {peak:.0f} GB/s")
    return {"apply": rows, "peak_gbps": peak, "device_name": torch.cuda.get_device_name(0),
            "inner": inner}


# -- report -----------------------------------------------------------------------------------------


def _markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        "# Kernel benchmark: apply_token_bitmask_inplace",
        "",
        f"Command: `{meta['command']}`  ",
        (f"Device: {meta['device']} ({meta.get('device_name', meta['machine'])}), torch "
         f"{meta['torch']}, torch threads {meta['torch_threads']}, {meta['repeats']} interleaved "
         f"rounds per cell; times in microseconds, median / p90. Ratio = ours / best peer (below "
         f"1.0: ours is faster), by median and by p90, peers measured in the same run."),
        "",
        ("| dtype | mask | batch | vocab | ours | xgrammar | llguidance | ratio (median) | "
         "ratio (p90) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict[str, Any], k: str) -> str:
        if k not in row:
            return "-"
        extra = ""
        if "fraction_of_peak" in row[k]:
            extra = f" ({row[k]['fraction_of_peak']:.0%} peak)"
        return f"{row[k]['median_us']:.1f} / {row[k]['p90_us']:.1f}{extra}"

    for row in result["apply"]:
        lines.append(
            f"| {row['dtype']} | {row['mask']} | {row['batch']} | {row['vocab']} | "
            f"{cell(row, 'ours')} | {cell(row, 'xgrammar')} | {cell(row, 'llguidance')} | "
            f"{row.get('ratio_median', float('nan')):.2f} | {row.get('ratio_p90', float('nan')):.2f} |"
        )
    ratios = [r["ratio_median"] for r in result["apply"] if "ratio_median" in r]
    if ratios:
        lines += ["", (f"Ratio to the best peer (median): worst {max(ratios):.2f}, geometric "
                       f"mean {statistics.geometric_mean(ratios):.2f} over {len(ratios)} cells.")]
    if result.get("first_call_s"):
        firsts = ", ".join(f"{k} {v:.2f} s" for k, v in result["first_call_s"].items())
        lines += ["", ("First call (excluded above; llguidance compiles its kernel with "
                       "torch.compile here, ours loads numba's on-disk cache): " + firsts)]
    if result.get("sampler"):
        lines += ["", "## Fused constrained sampler vs the unfused torch sequence", "",
                  ("`kernels.sample_constrained` (temperature, mask, Gumbel-max, log allowed "
                   "mass in one pass) against mask + softmax + `multinomial` + `logsumexp`; "
                   "float32, sparse masks."), "",
                  "| batch | vocab | ours | torch unfused | ratio |", "|---|---|---|---|---|"]
        for row in result["sampler"]:
            lines.append(f"| {row['batch']} | {row['vocab']} | {cell(row, 'ours')} | "
                         f"{cell(row, 'torch_unfused')} | {row['ratio_median']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--vocabs", default="32000,128256")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--masks", default="random,sparse")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--inner", type=int, default=50, help="launches per CUDA timing")
    ap.add_argument("--peak-gbps", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    ap.add_argument("--out-dir", default=str(RESULTS))
    args = ap.parse_args(argv)
    batches = [int(x) for x in args.batches.split(",")]
    vocabs = [int(x) for x in args.vocabs.split(",")]
    dtypes = args.dtypes.split(",")
    masks = args.masks.split(",")

    import torch

    if args.device == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        result = run_cpu(batches, vocabs, dtypes, masks, args.repeats)
    else:
        result = run_cuda(batches, vocabs, dtypes, masks, args.repeats, args.inner,
                          args.peak_gbps)
    result["meta"] = {
        "command": "python -m bench.kernels " + " ".join(argv if argv is not None
                                                         else sys.argv[1:]),
        "device": args.device,
        "machine": f"{platform.machine()} {platform.processor() or ''} "
                   f"{os.cpu_count()} CPUs".strip(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if "device_name" in result:
        result["meta"]["device_name"] = result["device_name"]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else "_cuda"
    (out / f"kernels{suffix}.json").write_text(json.dumps(result, indent=1))
    (out / f"kernels{suffix}.md").write_text(_markdown(result))
    print(f"wrote {out / f'kernels{suffix}.json'} and .md")


if __name__ == "__main__":
    main()
