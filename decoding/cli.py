"""Command line: ``python -m decoding generate|query|bench ...``.

    python -m decoding generate --schema person.json "Describe a person."
    python -m decoding generate --regex "[0-9]{5}" --stats "A zip code:"
    python -m decoding generate --choices red,green,blue "Pick a color."
    python -m decoding bench jsonschemabench --subset Glaiveai2K --limit 10 --engine ours

``generate`` prints the output to stdout (the JSON text for a schema); ``--stats`` writes compile
time, time to first token and tokens per second to stderr. Exit codes: 0 success; 1 output cut by
``--max-tokens`` (printed, with a note on stderr); 2 a usage or constraint error (one line on
stderr: ``error: <ErrorType>: <message>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_LENGTH = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m decoding", description="Constrained decoding from the command line.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="generate text under a constraint")
    g.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    c = g.add_mutually_exclusive_group()
    c.add_argument("--schema", help="JSON Schema: a file path or inline JSON text")
    c.add_argument("--regex", help="a regular expression the whole output must match")
    c.add_argument(
        "--choices",
        action="append",
        help="allowed outputs, comma-separated and/or repeated (--choices a --choices b)",
    )
    c.add_argument("--grammar", help="a Lark grammar: a file path or inline text")
    g.add_argument("--model", default=None, help="local model folder or .gguf file (default: embedded SmolLM2)")
    g.add_argument(
        "--sampler",
        choices=["greedy", "sample", "awrs", "smc", "asap"],
        default="greedy",
        help="greedy/sample: token masking; awrs: adaptive weighted rejection sampling; smc: "
        "sequential Monte Carlo (--particles, --ess-threshold); asap: grammar-aligned sampling (-n)",
    )
    g.add_argument("--particles", type=int, default=8, help="SMC particles (--sampler smc)")
    g.add_argument(
        "--ess-threshold",
        type=float,
        default=0.5,
        help="SMC resamples when ESS < threshold * particles (--sampler smc)",
    )
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--max-tokens", type=int, default=256)
    g.add_argument("-n", type=int, default=1, help="number of samples (printed one per line)")
    g.add_argument("--whitespace", choices=["compact", "flexible"], default="compact")
    g.add_argument("--property-order", choices=["schema", "any"], default="schema")
    g.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    g.add_argument(
        "--long-context",
        choices=["auto", "lambda", "none"],
        default=None,
        help="go through the long-context backend (chunked prefill, KV prefix cache; 'auto' and "
        "'lambda' use LM-Infinite attention past the trained length). Default: only for prompts "
        "longer than the model's trained length, with 'auto'",
    )
    g.add_argument("--stats", action="store_true", help="print timings to stderr")

    from decoding.query.cli import add_arguments as _add_query_arguments

    _add_query_arguments(sub.add_parser("query", help="run an LMQL-like query script"))
    b = sub.add_parser("bench", help="run a benchmark from bench/ (from the repository root)")
    b.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    b.add_argument("args", nargs=argparse.REMAINDER, help="its options (see NAME --help)")
    return p


#: ``python -m decoding bench NAME``: the modules under bench/ (a folder of the repository, not of
#: the installed packages, so these run from a checkout).
BENCHMARKS = {
    "jsonschemabench": "bench.jsonschemabench",
    "json-schema-test-suite": "bench.json_schema_test_suite",
    "masks": "bench.masks",
    "cfg": "bench.cfg",
    "e2e": "bench.e2e",
    "samplers": "bench.samplers",
    "alignment": "bench.alignment",
    "longctx": "bench.longctx",
    "kernels": "bench.kernels",
}


def _bench(args: argparse.Namespace) -> int:
    import importlib

    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(BENCHMARKS[args.name])
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", BENCHMARKS[args.name]):
            raise
        return _fail("ModuleNotFoundError", "bench/ is not importable: run from the repository root")
    return int(module.main(args.args) or 0)


def _fail(kind: str, message: str) -> int:
    print(f"error: {kind}: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_USAGE


def _read_text_or_file(value: str) -> str:
    path = Path(value)
    try:
        if len(value) < 4096 and path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError:
        pass
    return value


def _load_schema(value: str) -> Any:
    text = _read_text_or_file(value)
    stripped = text.strip()
    if not stripped.startswith(("{", "[")) and stripped not in ("true", "false"):
        raise FileNotFoundError(f"schema file {value!r} not found (and it is not inline JSON)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"schema {value!r} is not valid JSON: {exc}") from exc


def _generate(args: argparse.Namespace) -> int:
    import grammars
    from decoding.generator import build_grammar

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        schema = _load_schema(args.schema) if args.schema is not None else None
    except (OSError, ValueError) as exc:
        return _fail(type(exc).__name__, str(exc))
    choices = None
    if args.choices is not None:
        choices = [c for item in args.choices for c in item.split(",")]
    grammar_text = _read_text_or_file(args.grammar) if args.grammar is not None else None
    try:
        # constraint errors surface here, before the model is loaded
        grammar = build_grammar(
            schema=schema,
            regex=args.regex,
            grammar=grammar_text,
            choices=choices,
            whitespace=args.whitespace,
            property_order=args.property_order,
        )
    except grammars.GrammarError as exc:
        return _fail(type(exc).__name__, str(exc))
    except (ValueError, TypeError) as exc:
        return _fail(type(exc).__name__, str(exc))

    from decoding.generator import DecodingError, Generator
    from decoding.model import ModelNotFoundError, load_model

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        model = load_model(args.model)
        gen = Generator(model, grammar, long_context=args.long_context)
        out = gen.generate(
            prompt,
            sampler=args.sampler,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            n=args.n,
            chat=not args.no_chat,
            n_particles=args.particles,
            ess_threshold=args.ess_threshold,
        )
    except ModelNotFoundError as exc:
        return _fail(type(exc).__name__, str(exc))
    except grammars.GrammarError as exc:
        return _fail(type(exc).__name__, str(exc))
    except (ValueError, DecodingError) as exc:
        return _fail(type(exc).__name__, str(exc))
    completions = out if isinstance(out, list) else [out]
    for comp in completions:
        sys.stdout.write(comp.text + "\n")
    sys.stdout.flush()
    code = EXIT_OK
    cut = sum(1 for comp in completions if comp.finish_reason == "length")
    if cut:
        print(
            f"note: {cut} output(s) cut by --max-tokens {args.max_tokens} (finish_reason=length): "
            "not a complete match of the constraint",
            file=sys.stderr,
        )
        code = EXIT_LENGTH
    if args.stats:
        st = completions[0].stats
        print(f"model: {model.name} (loaded in {model.load_seconds:.1f} s)", file=sys.stderr)
        print(st.summary(), file=sys.stderr)
        for comp in completions:  # the weighted samplers' numbers, one line per output
            extra = {
                k: getattr(comp, k)
                for k in ("log_prob", "log_weight", "log_ml")
                if getattr(comp, k, None) is not None
            }
            if extra:
                print(" ".join(f"{k}={v:.4f}" for k, v in extra.items()), file=sys.stderr)
    return code


def _quiet_transformers() -> None:
    """Keep stderr to our own lines: no progress bars or advisory warnings from the loaders."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m decoding`` and the ``decoding`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return _bench(args)  # benchmarks keep their progress bars
    _quiet_transformers()
    if args.command == "generate":
        return _generate(args)
    from decoding.query.cli import run as _run_query

    return _run_query(args)
