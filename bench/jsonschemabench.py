"""JSONSchemaBench-style compliance runs over ../shared/data/jsonschemabench-dev.

    python -m decoding bench jsonschemabench [--subset NAME ...] [--limit N]
        [--engine ours|llguidance|xgrammar|xgrammar-strict ...] [--max-tokens 512]
        [--compile-timeout 10]
        [--compile-only] [--out bench/results/jsonschemabench]

Metrics (the paper's definitions, Geng et al. 2025, arXiv 2501.10868):
- declared coverage: the schema compiles without an error within ``--compile-timeout`` seconds
  (+ ``HANG_GRACE``);
- empirical coverage: SmolLM2's greedy output, with a fixed short prompt that shows the schema
  (chat template applied), is JSON that validates under jsonschema (the schema's ``$schema``
  dialect, Draft 2020-12 when none, with the format checker);
- compliance: empirical over declared;
- for ours, whether the schema compiled to the fallback grammar (``fallback``);
- medians of compile time (GCT), time to first token (TTFT, compile included, as in the paper)
  and time per output token after the first (TPOT).

Every engine runs through a transformers ``LogitsProcessor`` in ``model.generate`` with the same
model, prompt and greedy decoding: ours is :class:`decoding.GrammarLogitsProcessor`, xgrammar its
own ``xgrammar.contrib.hf.LogitsProcessor``; llguidance ships none, so a ten-line processor calls
its ``LLMatcher`` and torch bitmask helpers. Output cut by ``--max-tokens`` counts as invalid.
``xgrammar`` compiles the schema's own language (``strict_mode=False``); ``xgrammar-strict`` is
xgrammar's default ``strict_mode=True``, which allows no undeclared properties or items where the
schema allows them (a smaller language than the schema's, see :mod:`bench.peers`).

Results are appended as JSON lines (``<out>.jsonl``, one per engine and schema; a rerun skips
what is there, so an interrupted run resumes), then summarized into ``<out>.json``, ``<out>.md``
and ``<out>.png``. ``--compile-only`` measures declared coverage and compile times without the
model (the whole dev slice in minutes).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["PROMPT", "iter_schemas", "main", "summarize"]

ENGINES = ("ours", "llguidance", "xgrammar", "xgrammar-strict")
PROMPT = (
    "Reply with one JSON value that validates against the JSON Schema below, and nothing else.\n\n"
    "JSON Schema:\n{schema}"
)
MAX_SCHEMA_CHARS = 4000
#: Every engine's compile is interrupted after ``--compile-timeout`` + this many seconds (hang
#: protection, checked when control returns to Python); ours also gets ``--compile-timeout`` as
#: its own limit (``grammars.compile(timeout=...)``).
HANG_GRACE = 5.0


def data_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "jsonschemabench-dev"


def iter_schemas(subsets: Sequence[str] | None = None, limit: int | None = None
                 ) -> Iterator[tuple[str, str, Path]]:
    """(subset, schema file name, path) in a fixed order; ``limit`` per subset."""
    root = data_dir()
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    for sub in subsets or names:
        if sub not in names:
            raise SystemExit(f"unknown subset {sub!r}; known: {', '.join(names)}")
        files = sorted((root / sub).glob("*.json"))
        for path in files[:limit]:
            yield sub, path.name, path


def prompt_for(schema: Any) -> str:
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_SCHEMA_CHARS:
        text = text[:MAX_SCHEMA_CHARS] + " ...(truncated)"
    return PROMPT.format(schema=text)


class CompileTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``CompileTimeout`` in the main thread after ``seconds`` (checked when control is in
    Python; native code finishes its current call first)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CompileTimeout(f"compile took longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- engines: compile(schema) -> a fresh LogitsProcessor factory ---------------------------------
def _ours(model: Any, compile_timeout: float) -> Callable[[Any], Callable[[], Any]]:
    import grammars
    from decoding.logits_processor import GrammarLogitsProcessor

    def compile_schema(schema: Any) -> Callable[[], Any]:
        g = grammars.Grammar.from_json_schema(schema)
        # cold compile, as the peers; past 60% of the limit a schema falls back to checks
        cg = grammars.compile(g, model.vocab, cache=False, timeout=compile_timeout)

        def factory() -> Any:
            return GrammarLogitsProcessor(cg, model.vocab)

        checks = getattr(cg, "checks", None)
        factory.fallback = bool(checks is not None and checks.strict)  # type: ignore[attr-defined]
        return factory

    return compile_schema


def _xgrammar(model: Any, compile_timeout: float, *, strict: bool = False
              ) -> Callable[[Any], Callable[[], Any]]:
    import xgrammar as xgr
    import xgrammar.contrib.hf

    info = xgr.TokenizerInfo.from_huggingface(model.tokenizer, vocab_size=model.vocab.size)
    compiler = xgr.GrammarCompiler(info, cache_enabled=False)

    def compile_schema(schema: Any) -> Callable[[], Any]:
        cg = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                          separators=(",", ":"), strict_mode=strict)
        return lambda: xgrammar.contrib.hf.LogitsProcessor(cg)

    return compile_schema


def _xgrammar_strict(model: Any, compile_timeout: float) -> Callable[[Any], Callable[[], Any]]:
    return _xgrammar(model, compile_timeout, strict=True)


def _llguidance(model: Any, compile_timeout: float) -> Callable[[Any], Callable[[], Any]]:
    import llguidance
    import llguidance.hf
    import llguidance.torch
    import torch
    from transformers import LogitsProcessor

    tok = llguidance.hf.from_tokenizer(model.tokenizer, n_vocab=model.vocab.size)
    options = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

    class LlgProcessor(LogitsProcessor):
        def __init__(self, grammar: str) -> None:
            self.m = llguidance.LLMatcher(tok, grammar, log_level=0)
            self.mask = llguidance.torch.allocate_token_bitmask(1, model.vocab.size)
            self.start: int | None = None

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if self.start is None:
                self.start = input_ids.shape[1]
            else:
                self.m.consume_token(int(input_ids[0, -1]))
            llguidance.torch.fill_next_token_bitmask(self.m, self.mask, 0)
            llguidance.torch.apply_token_bitmask_inplace(scores, self.mask.to(scores.device))
            return scores

    def compile_schema(schema: Any) -> Callable[[], Any]:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=dict(options))
        first = llguidance.LLMatcher(tok, grammar, log_level=0)  # building it is the compile
        if first.is_error():
            raise ValueError(first.get_error())
        return lambda: LlgProcessor(grammar)

    return compile_schema


_ENGINE_FACTORIES = {"ours": _ours, "xgrammar": _xgrammar, "xgrammar-strict": _xgrammar_strict,
                     "llguidance": _llguidance}


def _validator(schema: Any) -> Any:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _valid(schema: Any, text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    try:
        return bool(_validator(schema).is_valid(value))
    except Exception:  # noqa: BLE001 - a schema jsonschema itself cannot evaluate
        return False


def run_one(engine: str, compile_schema: Callable[[Any], Callable[[], Any]], schema: Any,
            model: Any, *, compile_timeout: float, max_tokens: int, generate: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"declared": False}
    t0 = time.perf_counter()
    try:
        with time_limit(compile_timeout + HANG_GRACE):
            factory = compile_schema(schema)
    except Exception as e:  # noqa: BLE001 - every compile failure is "not declared", with its type
        rec["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        rec["compile_s"] = time.perf_counter() - t0
        return rec
    rec["compile_s"] = time.perf_counter() - t0
    rec["declared"] = True
    if hasattr(factory, "fallback"):  # ours: the schema compiled to the fallback grammar
        rec["fallback"] = factory.fallback
    if not generate:
        return rec
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            stamps.append(time.perf_counter())
            return scores

    ids = model.encode(prompt_for(schema))
    eos = list(model.eos_token_ids)
    g0 = time.perf_counter()
    try:
        with torch.inference_mode():
            out = model.hf_model.generate(
                torch.tensor([ids]), logits_processor=LogitsProcessorList([factory(), Stamp()]),
                max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos[0],
                attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    except Exception as e:  # noqa: BLE001 - a processor error during generation
        rec["gen_error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        rec["valid"] = False
        return rec
    new = out[0, len(ids):].tolist()
    finished = bool(new) and new[-1] in eos
    body = new[:-1] if finished else new
    text = model.vocab.decode(body).decode("utf-8", errors="replace")
    rec.update(
        finish="stop" if finished else "length", tokens=len(new), text=text,
        ttft_s=rec["compile_s"] + (stamps[0] - g0 if stamps else float("nan")),
        tpot_s=(stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None,
        valid=finished and _valid(schema, text),
    )
    return rec


# ---- summary ------------------------------------------------------------------------------------
def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(records: list[dict[str, Any]], engines: Sequence[str]) -> dict[str, Any]:
    """Per engine: counts, coverage, compliance, medians (also over the schemas every engine
    declared, the paper's intersection)."""
    by = {e: {(r["subset"], r["schema"]): r for r in records if r["engine"] == e} for e in engines}
    keys = set.intersection(*(set(v) for v in by.values())) if by else set()
    common = {k for k in keys if all(by[e][k]["declared"] for e in engines)}
    out: dict[str, Any] = {"schemas": len(keys), "engines": {}}
    for e in engines:
        rs = [by[e][k] for k in sorted(keys)]
        declared = [r for r in rs if r["declared"]]
        generated = [r for r in declared if "valid" in r]
        finished = [r for r in generated if r.get("finish") == "stop"]
        valid = [r for r in generated if r.get("valid")]
        cs = [by[e][k] for k in sorted(common)]
        errors: dict[str, int] = {}
        for r in rs:
            if not r["declared"]:
                kind = r["error"].split(":", 1)[0]
                errors[kind] = errors.get(kind, 0) + 1
        out["engines"][e] = {
            "schemas": len(rs),
            "declared": len(declared),
            "declared_coverage": len(declared) / len(rs) if rs else None,
            "generated": len(generated),
            "finished": len(finished),
            "finished_valid": sum(1 for r in finished if r.get("valid")),
            "empirical_coverage": len(valid) / len(generated) * len(declared) / len(rs)
            if generated else None,
            "compliance": len(valid) / len(generated) if generated else None,
            "median_compile_s": _median([r["compile_s"] for r in declared]),
            "median_compile_s_common": _median([r["compile_s"] for r in cs]),
            "median_ttft_s_common": _median([r.get("ttft_s") for r in cs]),
            "median_tpot_s_common": _median([r.get("tpot_s") for r in cs]),
            "errors": errors,
            "fallback": sum(1 for r in declared if r.get("fallback")),
            "fallback_recorded": sum(1 for r in declared if "fallback" in r),
        }
    out["common"] = len(common)
    return out


def _fmt(x: Any, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}"


def render_markdown(summary: dict[str, Any], command: str) -> str:
    lines = ["# JSONSchemaBench compliance (dev slice, SmolLM2-135M-Instruct, greedy)", "",
             f"`{command}`", "",
             (f"{summary['schemas']} schemas; medians over the {summary['common']} every engine "
             "declared. Empirical coverage = valid outputs / schemas; compliance = valid / "
             "declared (outputs cut by max tokens count as invalid)."), "",
             "| engine | declared coverage | empirical coverage | compliance | finished outputs valid | GCT ms | TTFT ms | TPOT ms |",
             "|---|---|---|---|---|---|---|---|"]
    for e, s in summary["engines"].items():
        fin = f"{s['finished_valid']}/{s['finished']}" if s["generated"] else "-"
        lines.append(
            f"| {e} | {s['declared']}/{s['schemas']} ({_fmt(s['declared_coverage'], 100)}%) | "
            f"{_fmt(s['empirical_coverage'], 100)}% | {_fmt(s['compliance'], 100)}% | {fin} | "
            f"{_fmt(s['median_compile_s_common'], 1000)} | {_fmt(s['median_ttft_s_common'], 1000)} | "
            f"{_fmt(s['median_tpot_s_common'], 1000)} |")
    lines += ["", "Compile errors by type:", ""]
    for e, s in summary["engines"].items():
        errs = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- {e}: {errs or 'none'}")
    fb = [(e, s) for e, s in summary["engines"].items() if s.get("fallback_recorded")]
    if fb:
        lines += ["", ("Compiled to the fallback grammar (any value of the root's types, every "
                       "keyword checked as values complete; exact, but guides generation less):"), ""]
        lines += [f"- {e}: {s['fallback']} of the {s['fallback_recorded']} declared schemas that record it"
                  for e, s in fb]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = list(summary["engines"])
    metrics = [("declared_coverage", "declared coverage"), ("empirical_coverage", "empirical coverage"),
               ("compliance", "compliance")]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(engines)
    for i, e in enumerate(engines):
        vals = [(summary["engines"][e][k] or 0) * 100 for k, _ in metrics]
        ax.bar([j + i * width for j in range(len(metrics))], vals, width, label=e)
    ax.set_xticks([j + width * (len(engines) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([m for _, m in metrics])
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend()
    ax.set_title(f"JSONSchemaBench dev slice ({summary['schemas']} schemas)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m decoding bench jsonschemabench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", action="append", help="subset folder (repeatable; default all)")
    ap.add_argument("--limit", type=int, default=None, help="schemas per subset")
    ap.add_argument("--engine", action="append", choices=ENGINES, help="default: ours")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--compile-timeout", type=float, default=10.0)
    ap.add_argument("--compile-only", action="store_true", help="declared coverage and compile times only")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--out", default="bench/results/jsonschemabench")
    args = ap.parse_args(argv)
    engines = args.engine or ["ours"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out.with_suffix(".jsonl")
    mode = "compile" if args.compile_only else "generate"
    done: dict[tuple, dict] = {}
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            done[(r["mode"], r["engine"], r["subset"], r["schema"])] = r
    todo = list(iter_schemas(args.subset, args.limit))

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from decoding import load_model

    model = load_model()
    from tqdm import tqdm

    records: list[dict[str, Any]] = []
    with jsonl.open("a") as f:
        for engine in engines:
            compile_schema = _ENGINE_FACTORIES[engine](model, args.compile_timeout)
            for sub, name, path in tqdm(todo, desc=engine, unit="schema", file=sys.stderr):
                key = (mode, engine, sub, name)
                if key in done:
                    records.append(done[key])
                    continue
                schema = json.loads(path.read_text())
                rec = run_one(engine, compile_schema, schema, model,
                              compile_timeout=args.compile_timeout, max_tokens=args.max_tokens,
                              generate=not args.compile_only)
                rec.update(mode=mode, engine=engine, subset=sub, schema=name)
                f.write(json.dumps(rec) + "\n")
                f.flush()
                records.append(rec)
    summary = summarize(records, engines)
    command = "python -m decoding bench jsonschemabench " + " ".join(argv if argv is not None else sys.argv[1:])
    summary["command"] = command
    summary["mode"] = mode
    suffix = "_compile" if args.compile_only else ""
    Path(f"{out}{suffix}.json").write_text(json.dumps(summary, indent=1))
    md = render_markdown(summary, command)
    Path(f"{out}{suffix}.md").write_text(md)
    plot(summary, Path(f"{out}{suffix}.png"))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
