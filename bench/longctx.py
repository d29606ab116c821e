"""Long-context backend benchmark on the embedded SmolLM2-135M (decoding.backend).

Sections (all in one run, same machine state; ratios are what to quote, not absolute times):

- ``memory``: peak memory of N sequences (SMC particles) sharing one prompt of ``--prompt-tokens``
  tokens through :class:`decoding.backend.BatchedLM`, against one sequence, against N sequences
  without sharing (transformers ``DynamicCache`` holding N copies of the prompt's KV: prefilled
  once and replicated, which is the memory a non-sharing engine holds, without paying N
  prefills). Each configuration runs in its own subprocess; reported: the KV bytes held and the
  peak resident set size above the process's RSS after loading the model (sampled every 2 ms).
- ``prefill``: 8 prompts of lengths evenly spaced in ``--prefill-lengths`` (min,max), prefilled
  padded (one batch padded to the longest, transformers sdpa), prepacked through BatchedLM
  (packed and chunked; its KV lands in the prefix cache) and prepacked bins through sdpa
  (``decoding.backend.prefill.prepacked_prefill``, the paper's dense form); outputs checked equal.
- ``reuse``: five ``decoding.generate(..., long_context="auto")`` calls, each a ``--doc-tokens``
  document followed by a request for a record of a different JSON Schema (greedy, up to
  ``--reuse-max-tokens`` tokens): call 1 prefills the document into the model's KV prefix cache,
  calls 2-5 find it there; per-call times (whole calls, generation included), their ratio, the
  prompt tokens served from the cache and the outputs (validated when finished).
- ``ppl``: perplexity of the first ``--ppl-context`` tokens of a long-text document, per
  1024-token position bucket, with ``long_context="auto"`` (LM-Infinite Lambda pattern past the
  8,192-token trained length) and ``"none"`` (plain attention); the plot
  ``longctx_ppl.png`` shows both curves.

    python -m bench.longctx [--sections memory,prefill,reuse,ppl] [--prompt-tokens 4000]
        [--particles 16] [--decode-steps 4] [--prefill-lengths 200,4000] [--doc-tokens 6000]
        [--ppl-context 16384] [--chunk 512] [--reuse-max-tokens 48] [--threads 1]
        [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "long-text"
ROOT = Path(__file__).resolve().parents[1]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a thread; ``peak - base`` is the work's footprint."""

    def __enter__(self) -> PeakRSS:  # noqa: PYI034
        self.base = _rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta(self) -> int:
        return self.peak - self.base


def _doc_tokens(tok, n: int, index: int = 0) -> list[int]:
    files = sorted(DATA.glob("*.txt"))
    ids: list[int] = []
    k = index
    while len(ids) < n:
        ids += tok(files[k % len(files)].read_text())["input_ids"]
        k += 1
    return ids[:n]


def _load(threads: int):
    import torch

    torch.set_num_threads(threads)
    from decoding import load_model

    return load_model()


# ---- memory ----------------------------------------------------------------------------------------
def memory_worker(config: str, args: argparse.Namespace) -> dict:
    import gc

    import torch

    model = _load(args.threads)
    from decoding.backend import BatchedLM

    prompt = _doc_tokens(model.tokenizer, args.prompt_tokens)
    n = args.particles if config != "one" else 1
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # fault in the (memory-mapped) weights before measuring
        model.hf_model(input_ids=torch.tensor([prompt[:16]]), use_cache=False)
    gc.collect()
    t0 = time.perf_counter()
    with PeakRSS() as rss:
        if config in ("one", "shared"):
            backend = BatchedLM(model, prefill_chunk=args.chunk, long_context="none")
            lm = backend.lm(prompt)
            particles: list[list[int]] = [[] for _ in range(n)]
            for _ in range(args.decode_steps):
                lp = lm.next_token_logprobs(particles)
                for i, p in enumerate(particles):
                    p.append(int(torch.multinomial(lp[i].exp(), 1, generator=gen)))
            lm.next_token_logprobs(particles)
            kv_bytes = backend.stats.bytes_held
        else:  # no sharing: N copies of the prompt's KV in a DynamicCache batch
            from transformers import DynamicCache

            hf = model.hf_model
            cache = DynamicCache(config=hf.config)
            with torch.inference_mode():
                for a in range(0, len(prompt), args.chunk):
                    chunk = torch.tensor([prompt[a : a + args.chunk]])
                    pos = torch.arange(a, a + chunk.shape[1])
                    hf(input_ids=chunk, past_key_values=cache, use_cache=True,
                       cache_position=pos, position_ids=pos[None], logits_to_keep=1)
                cache.batch_repeat_interleave(n)
                length = len(prompt)
                tokens = torch.randint(0, 1000, (n, 1), generator=gen)
                for _ in range(args.decode_steps + 1):
                    pos = torch.tensor([length])
                    hf(input_ids=tokens, past_key_values=cache, use_cache=True,
                       cache_position=pos, position_ids=pos[None].expand(n, 1), logits_to_keep=1)
                    length += 1
            kv_bytes = sum(
                layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers
            )
    return {
        "config": config,
        "sequences": n,
        "prompt_tokens": len(prompt),
        "decode_steps": args.decode_steps,
        "kv_bytes": int(kv_bytes),
        "peak_rss_delta_bytes": int(rss.delta),
        "seconds": time.perf_counter() - t0,
    }


def section_memory(args: argparse.Namespace) -> dict:
    out = {}
    for config in ("one", "shared", "unshared"):
        cmd = [sys.executable, "-m", "bench.longctx", "--memory-worker", config,
               "--prompt-tokens", str(args.prompt_tokens), "--particles", str(args.particles),
               "--decode-steps", str(args.decode_steps), "--chunk", str(args.chunk),
               "--threads", str(args.threads)]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        out[config] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  memory {config}: {out[config]}", flush=True)
    one = out["one"]
    for key in ("shared", "unshared"):
        out[key]["kv_ratio_to_one"] = out[key]["kv_bytes"] / one["kv_bytes"]
        out[key]["peak_ratio_to_one"] = out[key]["peak_rss_delta_bytes"] / max(
            1, one["peak_rss_delta_bytes"]
        )
    return out


# ---- prefill -----------------------------------------------------------------------------------------
def section_prefill(model, args: argparse.Namespace) -> dict:
    import torch

    from decoding.backend import BatchedLM
    from decoding.backend.prefill import padded_prefill, prepacked_prefill

    lo, hi = (int(x) for x in args.prefill_lengths.split(","))
    lengths = [round(lo + (hi - lo) * i / 7) for i in range(8)]
    prompts = [_doc_tokens(model.tokenizer, n, index=i) for i, n in enumerate(lengths)]
    times: dict[str, float] = {}
    outs = {}
    for name in ("padded", "prepacked_backend", "prepacked_bins"):
        t0 = time.perf_counter()
        if name == "padded":
            outs[name] = padded_prefill(model, prompts)
        elif name == "prepacked_backend":
            outs[name] = BatchedLM(model, prefill_chunk=args.chunk, long_context="none").prefill(
                prompts
            )
        else:
            outs[name] = prepacked_prefill(model, prompts)
        times[name] = time.perf_counter() - t0
        print(f"  prefill {name}: {times[name]:.1f} s", flush=True)
    diff = max(float((outs[k] - outs["padded"]).abs().max()) for k in outs)
    del torch
    return {
        "lengths": lengths,
        "total_tokens": sum(lengths),
        "padded_tokens": len(lengths) * max(lengths),
        "seconds": times,
        "speedup_backend_vs_padded": times["padded"] / times["prepacked_backend"],
        "speedup_bins_vs_padded": times["padded"] / times["prepacked_bins"],
        "max_abs_logit_diff": diff,
    }


# ---- reuse ---------------------------------------------------------------------------------------------
REUSE_SCHEMAS = [
    {"type": "object", "properties": {"title": {"type": "string", "maxLength": 60},
                                      "year": {"type": "integer", "minimum": 1000}},
     "required": ["title", "year"], "additionalProperties": False},
    {"type": "object", "properties": {"author": {"type": "string", "maxLength": 40},
                                      "genre": {"enum": ["novel", "essay", "poetry", "other"]}},
     "required": ["author", "genre"], "additionalProperties": False},
    {"type": "object", "properties": {"characters": {"type": "array", "maxItems": 3,
                                                     "items": {"type": "string", "maxLength": 24}}},
     "required": ["characters"], "additionalProperties": False},
    {"type": "object", "properties": {"setting": {"type": "string", "maxLength": 40},
                                      "century": {"type": "integer", "minimum": 1,
                                                  "maximum": 21}},
     "required": ["setting", "century"], "additionalProperties": False},
    {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 80},
                                      "sad": {"type": "boolean"}},
     "required": ["summary", "sad"], "additionalProperties": False},
]


def section_reuse(model, args: argparse.Namespace) -> dict:
    """Five ``decoding.generate`` calls (five schemas, greedy) over one long document: the first
    prefills it into the model's KV prefix cache, the next four find it there."""
    import jsonschema

    from decoding import generate

    doc = model.tokenizer.decode(_doc_tokens(model.tokenizer, args.doc_tokens, index=1))
    times, outputs, cached = [], [], []
    for k, schema in enumerate(REUSE_SCHEMAS):
        prompt = f"{doc}\n\nExtract this JSON record from the text above: {json.dumps(schema)}"
        t0 = time.perf_counter()
        out = generate(prompt, schema=schema, model=model, long_context="auto",
                       max_tokens=args.reuse_max_tokens)
        times.append(time.perf_counter() - t0)
        if out.finish_reason == "stop":
            jsonschema.validate(out.value, schema)
        outputs.append({"finish_reason": out.finish_reason, "text": out.text,
                        "generated_tokens": out.stats.generated_tokens,
                        "prompt_tokens": out.stats.prompt_tokens})
        cached.append(out.stats.prompt_tokens_cached)
        print(f"  reuse call {k + 1}: {times[-1]:.2f} s, {out.stats.prompt_tokens} prompt tokens "
              f"({cached[-1]} cached), {out.finish_reason}: {out.text[:60]!r}", flush=True)
    later = sum(times[1:]) / len(times[1:])
    return {
        "doc_tokens": args.doc_tokens,
        "call_seconds": times,
        "mean_later_over_first": later / times[0],
        "prompt_tokens_cached": cached,
        "outputs": outputs,
        "max_tokens": args.reuse_max_tokens,
    }


# ---- perplexity --------------------------------------------------------------------------------------
def section_ppl(model, args: argparse.Namespace) -> dict:
    import math

    from decoding.backend import BatchedLM

    tokens = _doc_tokens(model.tokenizer, args.ppl_context)
    bucket = 1024
    curves = {}
    seconds = {}
    for mode in ("auto", "none"):
        backend = BatchedLM(model, prefill_chunk=args.chunk, long_context=mode)
        t0 = time.perf_counter()
        lp = backend.score(tokens)  # lp[i] = log p(tokens[i+1] | tokens[:i+1])
        seconds[mode] = time.perf_counter() - t0
        nll = (-lp).tolist()
        curves[mode] = [
            math.exp(sum(nll[a : a + bucket]) / len(nll[a : a + bucket]))
            for a in range(0, len(nll), bucket)
        ]
        del backend
        print(f"  ppl {mode}: {seconds[mode]:.0f} s, {[round(x, 1) for x in curves[mode]]}",
              flush=True)

    def ppl_range(mode: str, lo: int, hi: int) -> float:
        a, b = lo // bucket, hi // bucket
        vals = curves[mode][a:b]
        return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")

    n = len(tokens)
    far_lo = max(8192, n - 4096)
    far_lo -= far_lo % bucket
    res = {
        "tokens": n,
        "bucket": bucket,
        "trained_length": 8192,
        "curves": curves,
        "seconds": seconds,
        "near_range": [1024, 4096],
        "far_range": [far_lo, n],
    }
    for mode in curves:
        near, far = ppl_range(mode, 1024, 4096), ppl_range(mode, far_lo, n)
        res[mode] = {"ppl_near": near, "ppl_far": far, "far_over_near": far / near}
    return res


def plot_ppl(ppl: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    b = ppl["bucket"]
    labels = {"auto": "Lambda pattern (LM-Infinite)", "none": "plain attention"}
    for mode, curve in ppl["curves"].items():
        xs = [(i + 0.5) * b for i in range(len(curve))]
        ax.plot(xs, curve, marker="o", label=labels[mode])
    ax.axvline(ppl["trained_length"], color="grey", linestyle="--", label="trained length")
    ax.set_yscale("log")
    ax.set_xlabel("token position")
    ax.set_ylabel(f"perplexity (per {b}-token bucket)")
    ax.set_title("SmolLM2-135M over long-text")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_markdown(results: dict, path: Path) -> None:
    lines = ["# Long-context backend benchmark (SmolLM2-135M, CPU)", ""]
    lines.append(f"Threads: {results['threads']}. Machine: shared 2-core CPU (noisy; quote ratios). "
                 "Each section was last run by the command under its heading.")
    lines.append("")
    mem = results.get("memory")
    if mem:
        lines += ["## Memory: sequences sharing one prompt", "", f"Command: `{mem.get('command', '?')}`", "",
                  "| config | sequences | prompt tokens | KV bytes | KV / one | peak RSS delta | peak / one |",
                  "|---|---|---|---|---|---|---|"]
        for key in ("one", "shared", "unshared"):
            r = mem[key]
            lines.append(
                f"| {key} | {r['sequences']} | {r['prompt_tokens']} | {r['kv_bytes'] / 2**20:.1f} MiB"
                f" | {r.get('kv_ratio_to_one', 1.0):.2f}x | {r['peak_rss_delta_bytes'] / 2**20:.1f} MiB"
                f" | {r.get('peak_ratio_to_one', 1.0):.2f}x |"
            )
        lines.append("")
    pre = results.get("prefill")
    if pre:
        s = pre["seconds"]
        lines += [
            "## Prefill of 8 mixed-length prompts",
            "",
            f"Command: `{pre.get('command', '?')}`",
            "",
            (
                f"Lengths {pre['lengths']} ({pre['total_tokens']} tokens; "
                f"padded: {pre['padded_tokens']})."
            ),
            "",
            "| method | seconds | speedup vs padded |",
            "|---|---|---|",
            f"| padded (sdpa) | {s['padded']:.1f} | 1.00x |",
            (
                f"| prepacked, BatchedLM (chunked, cached) | {s['prepacked_backend']:.1f} | "
                f"{pre['speedup_backend_vs_padded']:.2f}x |"
            ),
            (
                f"| prepacked bins (sdpa) | {s['prepacked_bins']:.1f} | "
                f"{pre['speedup_bins_vs_padded']:.2f}x |"
            ),
            "",
            f"Max abs logit difference between methods: {pre['max_abs_logit_diff']:.2e}.",
            "",
        ]
    reuse = results.get("reuse")
    if reuse:
        lines += ["## One document, five requests", "", f"Command: `{reuse.get('command', '?')}`", "",
                  f"Document: {reuse['doc_tokens']} tokens. Call times (s): "
                  + ", ".join(f"{t:.2f}" for t in reuse["call_seconds"])
                  + f". Mean of calls 2-5 / call 1: {reuse['mean_later_over_first']:.3f}.", ""]
    ppl = results.get("ppl")
    if ppl:
        lines += ["## Perplexity against position", "", f"Command: `{ppl.get('command', '?')}`", "",
                  f"{ppl['tokens']} tokens of one long-text document, buckets of {ppl['bucket']}.",
                  "", "| attention | ppl 1k-4k | ppl far | far / near |", "|---|---|---|---|"]
        for mode, label in (("auto", "Lambda (auto)"), ("none", "plain")):
            r = ppl[mode]
            lines.append(f"| {label} | {r['ppl_near']:.2f} | {r['ppl_far']:.2f} "
                         f"| {r['far_over_near']:.2f}x |")
        lo, hi = ppl["far_range"]
        lines += ["", f"Far range: positions {lo}-{hi}. Plot: `longctx_ppl.png`.", ""]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", default="memory,prefill,reuse,ppl")
    p.add_argument("--prompt-tokens", type=int, default=4000)
    p.add_argument("--particles", type=int, default=16)
    p.add_argument("--decode-steps", type=int, default=4)
    p.add_argument("--prefill-lengths", default="200,4000")
    p.add_argument("--doc-tokens", type=int, default=6000)
    p.add_argument("--ppl-context", type=int, default=16384)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--reuse-max-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args)))
        return
    sections = args.sections.split(",")
    command = "python -m bench.longctx " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # sections not run now keep their last results (each section records its own command)
    previous = out / "longctx.json"
    results: dict = json.loads(previous.read_text()) if previous.exists() else {}
    results.update({"threads": args.threads, "args": vars(args)})
    results.pop("command", None)
    fresh: dict = {}
    if "memory" in sections:
        fresh["memory"] = section_memory(args)
    model = None
    if any(s in sections for s in ("prefill", "reuse", "ppl")):
        model = _load(args.threads)
    if "prefill" in sections:
        fresh["prefill"] = section_prefill(model, args)
    if "reuse" in sections:
        fresh["reuse"] = section_reuse(model, args)
    if "ppl" in sections:
        fresh["ppl"] = section_ppl(model, args)
        plot_ppl(fresh["ppl"], out / "longctx_ppl.png")
    for name, section in fresh.items():
        section["command"] = command
        results[name] = section
    (out / "longctx.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, out / "longctx.md")
    print(json.dumps({k: v for k, v in fresh.items()}, indent=1)[:4000])


if __name__ == "__main__":
    main()
