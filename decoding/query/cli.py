"""``python -m decoding query FILE [--var NAME=VALUE ...]``: run a query script, print its variables,
the final prompt and per-variable statistics.

Exit codes: 0 success; 2 a query error (one line on stderr: ``error: <ErrorType>: <message>`` with
the line and column for static errors; nothing is loaded before static errors are reported).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the query script (.lmql), '-' reads it from stdin")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="an input variable of the script (repeatable; VALUE is JSON if it parses, "
                   "else a string)")
    p.add_argument("--model", default=None,
                   help="local model folder or .gguf file, or 'default' (the embedded SmolLM2); "
                   "overrides the script's from clause")
    p.add_argument("--max-tokens", type=int, default=None, help="per-hole token cap (default 128)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--decoder", default=None, choices=["argmax", "sample", "beam", "smc", "awrs"],
                   help="override the script's decoder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--check", action="store_true", help="parse and check only (no model)")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if hasattr(v, "model_dump"):
        return v.model_dump()
    import dataclasses

    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.asdict(v)
    return repr(v)


def run(args: argparse.Namespace) -> int:
    from decoding.query import QueryError, parse, query

    def fail(exc: BaseException) -> int:
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2

    try:
        source = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        return fail(exc)
    inputs: dict[str, Any] = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            return fail(ValueError(f"--var needs NAME=VALUE, got {item!r}"))
        inputs[name] = _value(value)
    filename = "<stdin>" if args.file == "-" else args.file
    try:
        q = parse(source, filename=filename)
        q.validate(inputs)
        if args.check:
            print(f"ok: {q.form} form, decoder {q.decoder.name}, holes: "
                  f"{', '.join(q.hole_names) or 'none'}")
            return 0
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        result = query(q, model=args.model, max_tokens=args.max_tokens, seed=args.seed,
                       decoder=args.decoder, inputs=inputs)
    except QueryError as exc:
        return fail(exc)
    except (OSError, ValueError) as exc:
        return fail(exc)
    results = result if isinstance(result, list) else [result]
    if args.json:
        out = [{
            "variables": _jsonable(r.variables),
            "prompt": r.prompt,
            "distributions": r.distributions,
            "holes": [{"name": h.name, "value": _jsonable(h.value), "tokens": h.tokens,
                       "finish_reason": h.finish_reason, "model_calls": h.model_calls,
                       "forced_tokens": h.forced_tokens, "nested_in": h.nested_in}
                      for h in r.holes],
            "stats": vars(r.stats),
        } for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2, ensure_ascii=False))
        return 0
    for i, r in enumerate(results):
        if len(results) > 1:
            print(f"=== sample {i}")
        for name, v in r.variables.items():
            print(f"{name} = {v!r}")
        print("--- prompt")
        print(r.prompt)
        print("--- stats")
        print(r.summary())
    return 0
