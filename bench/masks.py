"""Mask benchmark: compile time and per-step mask-fill time, ours against the peer engines.

On real-world schemas of JSONSchemaBench (the dev sample in ``../shared/data/jsonschemabench-dev``)
and SmolLM2's tokenizer, every engine (ours, ours-strict, xgrammar, xgrammar-strict, llguidance,
outlines-core; adapters in :mod:`bench.peers`) compiles each schema and walks one valid instance
token by token: fill the mask, check that the instance's next token is allowed in it, accept the
token; the last step checks that EOS is allowed. Only the fill call is timed.

- compile: wall time from the schema to the first matcher (ours: ``from_json_schema`` +
  ``compile(cache=False)`` with ``STRUCTURED_DECODING_CACHE=""``; xgrammar: ``compile_json_schema``
  without its cache; llguidance: building the ``LLMatcher``, whose grammar is compiled lazily;
  outlines-core: regex + ``Index``); per schema the median of ``--repeats`` compiles (default 3:
  the first with the walk, the others alone, the engines taking turns in a rotated order); the
  first compile alone is reported too.
- first mask: the first fill of the walk (where llguidance pays for its lazy compilation); time to
  first mask (TTFM) = compile (the median) + that first mask.
- mask fill: every later fill of the walk, pooled over the schemas (mean, median, p99).

Instances come from ``hypothesis-jsonschema`` with a fixed seed: from the schema made strict first
(``additionalProperties: false`` where the schema leaves it absent or ``true``, free-form values
made scalar: the engines treat undeclared properties and deep free-form values differently),
several examples are drawn, characters outside printable ASCII in strings are replaced by ASCII
digits and letters (where the schema still validates), object keys are put in the schema's
property order, and the longest example (up to ``--max-chars``) that ``jsonschema`` validates
against the original schema is kept. It is serialized compactly
(``json.dumps(x, separators=(",", ":"), ensure_ascii=False)``) and tokenized with the model's
tokenizer.

Summary numbers are over the schemas that every selected engine compiled and walked (the common
set); the rest are listed with the reason. Compiles and walks run in a forked worker process so a
compile that exceeds ``--compile-timeout`` (or crashes) is killed and counted as a failure.

    python -m bench.masks [--subset Github_easy ...] [--limit 10] [--engines ours,xgrammar,...]
        [--compile-timeout 60] [--repeats 3] [--seed 0] [--out-dir bench/results]
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
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ["STRUCTURED_DECODING_CACHE"] = ""  # no on-disk grammar cache: every compile from scratch
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jsonschemabench-dev"
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SUBSETS = ("Github_easy", "Glaiveai2K", "Kubernetes", "Snowplow")

__all__ = [
    "generate_instance",
    "load_schemas",
    "measure",
    "reorder_keys",
    "serialize",
    "strictify",
    "summarize",
]


# ---- instances ------------------------------------------------------------------------------------
def serialize(value: Any) -> str:
    """Compact JSON, the form every engine is configured for."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_NOT_SCHEMA_MAPS = ("enum", "const", "default", "examples", "required", "not", "description",
                    "title", "$comment")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


_ANNOTATIONS = ("description", "title", "$comment", "default", "examples", "deprecated", "readOnly",
                "writeOnly")
_SUBSCHEMA_KEYS = ("items", "additionalItems", "prefixItems", "contains", "additionalProperties",
                   "anyOf", "oneOf", "if", "then", "else", "propertyNames", "unevaluatedItems",
                   "unevaluatedProperties")
_SCALAR = {"type": ["string", "number", "boolean", "null"]}


def strictify(schema: Any, _in_all_of: bool = False) -> Any:
    """A copy of ``schema`` whose instances are instances of ``schema`` without free-form parts:
    objects whose ``additionalProperties`` is absent or ``true`` get ``additionalProperties:
    false``, arrays without ``items`` get scalar items, and a free-form subschema (``true``, or
    annotations only) becomes a scalar. The engines differ on undeclared properties and on how
    deep a free-form value may nest; instances stay clear of both.

    Every instance of the result is an instance of ``schema`` except through ``not`` (left alone)
    and ``$ref`` siblings (left open); instances are validated against the original anyway.
    Objects that are direct ``allOf`` members are left open (closing them would make the
    intersection empty).
    """
    if isinstance(schema, list):
        return [strictify(x) for x in schema]
    if schema is True or (isinstance(schema, dict) and all(k in _ANNOTATIONS for k in schema)):
        return dict(_SCALAR)  # a free-form value: a scalar
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for k, v in schema.items():
        if k in _SCHEMA_MAPS and isinstance(v, dict):
            out[k] = {kk: strictify(vv) for kk, vv in v.items()}
        elif k == "allOf" and isinstance(v, list):
            out[k] = [strictify(x, True) for x in v]
        elif k in _NOT_SCHEMA_MAPS or k not in _SUBSCHEMA_KEYS:
            out[k] = v
        else:
            out[k] = strictify(v)
    t = schema.get("type")
    is_array = t == "array" or (isinstance(t, list) and "array" in t)
    if is_array and not any(k in schema for k in ("items", "prefixItems", "contains", "$ref", "allOf")):
        out["items"] = dict(_SCALAR)
    is_object = "properties" in schema or t == "object" or (isinstance(t, list) and "object" in t)
    open_keys = ("patternProperties", "unevaluatedProperties", "allOf", "$ref")
    if (is_object and not _in_all_of and not any(k in schema for k in open_keys)
            and schema.get("additionalProperties", True) is True):
        out["additionalProperties"] = False
    return out


def _deref(schema: Any, root: Any, depth: int = 0) -> Any:
    """Follow local ``$ref``s ("#", "#/definitions/x", "#/$defs/x", ...)."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and depth < 32:
        ref = schema["$ref"]
        if not ref.startswith("#"):
            return schema
        target: Any = root
        for part in ref[1:].lstrip("/").split("/") if ref not in ("#", "#/") else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                return schema
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {"allOf": [target, rest]} if any(k not in ("description", "title") for k in rest) else target
        depth += 1
    return schema


def _applicable(schema: Any, root: Any, value: Any, is_valid: Callable[[Any, Any], bool],
                depth: int = 0) -> list[dict]:
    """The (dereferenced) subschemas that apply to ``value``: the schema, its ``allOf`` members,
    the first ``anyOf``/``oneOf`` branch that ``value`` satisfies, ``then``/``else``."""
    schema = _deref(schema, root)
    if not isinstance(schema, dict) or depth > 16:
        return []
    out = [schema]
    for sub in schema.get("allOf", []) or []:
        out += _applicable(sub, root, value, is_valid, depth + 1)
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []) or []:
            if is_valid(value, sub):
                out += _applicable(sub, root, value, is_valid, depth + 1)
                break
    if "if" in schema:
        branch = schema.get("then") if is_valid(value, schema["if"]) else schema.get("else")
        if branch is not None:
            out += _applicable(branch, root, value, is_valid, depth + 1)
    return out


def reorder_keys(value: Any, schema: Any, root: Any, is_valid: Callable[[Any, Any], bool],
                 depth: int = 0) -> Any:
    """``value`` with every object's keys in the order of its schema's ``properties`` (those of
    the schema itself, then of its ``allOf`` members, then of the matching ``anyOf``/``oneOf``
    branch); undeclared keys keep their order after the declared ones."""
    if depth > 64:
        return value
    subs = _applicable(schema, root, value, is_valid)
    if isinstance(value, dict):
        order: list[str] = []
        child: dict[str, list[Any]] = {}
        extra: list[Any] = []
        for s in subs:
            props = s.get("properties")
            if isinstance(props, dict):
                for k, v in props.items():
                    if k not in child:
                        order.append(k)
                        child[k] = []
                    child[k].append(v)
            add = s.get("additionalProperties")
            if isinstance(add, dict):
                extra.append(add)
        keys = [k for k in order if k in value] + [k for k in value if k not in child]
        out = {}
        for k in keys:
            sub = child.get(k) or extra
            out[k] = reorder_keys(value[k], {"allOf": sub} if sub else True, root, is_valid, depth + 1)
        return out
    if isinstance(value, list):
        prefix: list[Any] = []
        items: list[Any] = []
        for s in subs:
            if isinstance(s.get("prefixItems"), list):
                prefix = s["prefixItems"]
            it = s.get("items")
            if isinstance(it, list):
                prefix = it
            elif isinstance(it, dict):
                items.append(it)
        out_list = []
        for i, v in enumerate(value):
            sub = [prefix[i]] if i < len(prefix) else items
            out_list.append(reorder_keys(v, {"allOf": sub} if sub else True, root, is_valid, depth + 1))
        return out_list
    return value


def _ascii_char(c: str) -> str:
    if " " <= c <= "~":
        return c
    import unicodedata

    d = unicodedata.digit(c, None)
    return str(d) if d is not None else chr(ord("a") + ord(c) % 26)


def _sanitize(value: Any) -> Any:
    """Replace characters outside printable ASCII in strings (and keys): digits by the ASCII digit
    of the same value (Python's ``\\d`` matches any Unicode digit, ECMA-262's and the engines'
    only 0-9), others by letters. Keeps lengths; avoids \\u escapes and control characters that
    some engines' string rules reject."""
    if isinstance(value, str):
        return "".join(_ascii_char(c) for c in value)
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    if isinstance(value, dict):
        return {_sanitize(k): _sanitize(v) for k, v in value.items()}
    return value


def _validator(schema: Any) -> Any:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _draw_examples(schema: Any, n: int, seed: int) -> list[Any]:
    import warnings

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis_jsonschema import from_schema

    strategy = from_schema(schema, allow_x00=False)
    examples: list[Any] = []

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False, print_blob=False)
    @given(strategy)
    def collect(x: Any) -> None:
        examples.append(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collect()
    return examples


def generate_instance(schema: Any, *, seed: int = 0, n_examples: int = 12,
                      max_chars: int = 3000) -> tuple[str | None, str]:
    """One valid instance of ``schema`` as compact JSON, or ``(None, reason)``.

    See the module docstring. Deterministic for a given seed.
    """
    try:
        validator = _validator(schema)
    except Exception as e:  # noqa: BLE001
        return None, f"jsonschema cannot load the schema: {type(e).__name__}: {str(e)[:120]}"

    def is_valid(value: Any, sub: Any) -> bool:
        try:
            return bool(validator.evolve(schema=sub).is_valid(value))
        except Exception:  # noqa: BLE001
            return False

    reasons: list[str] = []
    for candidate in (strictify(schema), schema):
        try:
            examples = _draw_examples(candidate, n_examples, seed)
        except Exception as e:  # noqa: BLE001 - unsatisfiable, unsupported by hypothesis-jsonschema
            reasons.append(f"{type(e).__name__}: {str(e)[:120]}")
            continue
        # the longest valid sanitized example; a raw one (non-ASCII text) only when none is valid
        best: tuple[int, int, str] | None = None
        for x in examples:
            for rank, y in ((0, _sanitize(x)), (1, x)):
                try:
                    if not validator.is_valid(y):
                        continue
                    z = reorder_keys(y, schema, schema, is_valid)
                    if not validator.is_valid(z):
                        continue
                except Exception:  # noqa: BLE001, S112 - e.g. a regex jsonschema cannot compile
                    continue
                text = serialize(z)
                if len(text) <= max_chars and (best is None or (rank, -len(text)) < best[:2]):
                    best = (rank, -len(text), text)
                break
        if best is not None:
            return best[2], "ok" if best[0] == 0 else "ok (non-ASCII text)"
        reasons.append(f"no valid example among {len(examples)}")
    return None, "; ".join(reasons) or "no instance"


# ---- measurement ----------------------------------------------------------------------------------
def measure(engine: Any, schema: Any, tokens: Sequence[int], eos_token_id: int,
            vocab_size: int, *, walk: bool = True) -> dict[str, Any]:
    """Compile ``schema`` with ``engine`` and walk ``tokens`` (then EOS), timing each mask fill
    (``walk=False``: compile and build the matcher only; then ``fill_us`` is empty).

    Returns ``{"status": "ok" | "compile_error" | "rejected", "compile_ms", "first_fill_us",
    "fill_us" (every fill, the first included, in microseconds), "n_tokens", "error"}``. A walk is
    ``rejected`` when a token of the instance is masked out or not accepted, or EOS is not allowed
    at the end.
    """
    import numpy as np

    from bench.peers import CompileError
    from kernels import allocate_token_bitmask

    t0 = time.perf_counter()
    try:
        factory = engine.compile(schema)
        matcher = factory()
    except CompileError as e:
        return {"status": "compile_error", "error": str(e)[:300],
                "compile_ms": (time.perf_counter() - t0) * 1e3}
    compile_ms = (time.perf_counter() - t0) * 1e3
    if not walk:
        return {"status": "ok", "error": "", "compile_ms": compile_ms,
                "first_fill_us": float("nan"), "fill_us": [], "n_tokens": len(tokens)}
    bitmask = allocate_token_bitmask(1, vocab_size)
    words = bitmask.numpy().view(np.uint32)[0]
    fills: list[float] = []
    clock = time.perf_counter_ns
    status, error = "ok", ""
    steps = list(tokens) + [eos_token_id]
    for i, tid in enumerate(steps):
        t = clock()
        matcher.fill(bitmask)
        fills.append((clock() - t) / 1e3)
        allowed = bool((int(words[tid >> 5]) >> (tid & 31)) & 1)
        if i == len(tokens):
            if not allowed or not matcher.is_accepting():
                status, error = "rejected", f"EOS not allowed at the end (in mask: {allowed})"
            break
        if not allowed:
            status, error = "rejected", f"token {i} (id {tid}) masked out"
            break
        if not matcher.accept(tid):
            status, error = "rejected", f"token {i} (id {tid}) not accepted"
            break
    return {
        "status": status,
        "error": error,
        "compile_ms": compile_ms,
        "first_fill_us": fills[0] if fills else float("nan"),
        "fill_us": [round(f, 3) for f in fills],
        "n_tokens": len(tokens),
    }


# ---- worker process (timeouts, crashes) -----------------------------------------------------------
class Worker:
    """A forked process that runs one request at a time; killed and re-forked on timeout/crash.

    Forking after the engines are built in the parent means a new worker starts in a moment with
    the tokenizer and vocabularies already in memory; ``init`` (the warm-up) runs in the worker,
    because numba's OpenMP threads must not be started before a fork.
    """

    def __init__(self, handlers: dict[str, Callable[..., Any]],
                 init: Callable[[], None] | None = None) -> None:
        import multiprocessing as mp

        self._ctx = mp.get_context("fork")
        self._handlers = handlers
        self._init = init
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=self._serve, args=(child, self._handlers, self._init),
                                       daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(600):
            self.close()
            raise RuntimeError("the benchmark worker did not start within 600 s")
        kind, msg = parent.recv()
        if kind != "ready":
            self.close()
            raise RuntimeError(f"the benchmark worker failed to start: {msg}")

    @staticmethod
    def _serve(conn: Any, handlers: dict[str, Callable[..., Any]],
               init: Callable[[], None] | None) -> None:
        try:
            if init is not None:
                init()
            conn.send(("ready", None))
        except Exception as e:  # noqa: BLE001
            conn.send(("failed", f"{type(e).__name__}: {e}"))
            return
        while True:
            try:
                kind, args = conn.recv()
            except EOFError:
                return
            try:
                conn.send(("ok", handlers[kind](*args)))
            except Exception as e:  # noqa: BLE001
                conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()[-800:]}"))

    def call(self, kind: str, *args: Any, timeout: float) -> tuple[str, Any]:
        """("ok", result) | ("error", message) | ("timeout", None) | ("crash", exitcode)."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((kind, args))
        if self._conn.poll(timeout):
            try:
                return self._conn.recv()
            except EOFError:
                pass
        alive = self._proc.is_alive()
        code = self._proc.exitcode
        self.close()
        return ("timeout", None) if alive else ("crash", code)

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ---- summary --------------------------------------------------------------------------------------
def _pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(records: list[dict[str, Any]], engines: Sequence[str]) -> dict[str, Any]:
    """Per-engine coverage, and compile / first-mask / mask-fill statistics over the common set
    (schemas with an instance that every engine compiled and walked), with ratios ours / peer."""
    with_instance = [r for r in records if r.get("instance") is not None]
    common = [r for r in with_instance
              if all(r["engines"].get(e, {}).get("status") == "ok" for e in engines)]
    per: dict[str, Any] = {}
    for e in engines:
        runs = [r["engines"].get(e, {}) for r in with_instance]
        counts: dict[str, int] = {}
        for x in runs:
            counts[x.get("status", "missing")] = counts.get(x.get("status", "missing"), 0) + 1
        comp = [r["engines"][e]["compile_ms"] for r in common]
        comp1 = [r["engines"][e].get("first_compile_ms", r["engines"][e]["compile_ms"])
                 for r in common]
        first = [r["engines"][e]["first_fill_us"] for r in common]
        ttfm = [c + f / 1e3 for c, f in zip(comp, first)]
        warm = [f for r in common for f in r["engines"][e]["fill_us"][1:]]
        per[e] = {
            "status_counts": counts,
            "compile_ms": {"median": _pct(comp, 0.5), "p90": _pct(comp, 0.9),
                           "mean": statistics.fmean(comp) if comp else float("nan")},
            "first_compile_ms": {"median": _pct(comp1, 0.5), "p90": _pct(comp1, 0.9)},
            "first_fill_us": {"median": _pct(first, 0.5), "p90": _pct(first, 0.9)},
            "ttfm_ms": {"median": _pct(ttfm, 0.5), "p90": _pct(ttfm, 0.9)},
            "fill_us": {"mean": statistics.fmean(warm) if warm else float("nan"),
                        "median": _pct(warm, 0.5), "p99": _pct(warm, 0.99),
                        "max": max(warm) if warm else float("nan"), "n_steps": len(warm)},
        }
    def r(a: float, b: float) -> float:
        return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")

    # ours against every peer; ours-strict only against the peer compiling the same language
    pairs = [("ours", e) for e in engines if not e.startswith("ours")]
    pairs += [("ours-strict", e) for e in engines if e.endswith("-strict") and e != "ours-strict"]
    ratios: dict[str, Any] = {}
    for a, b in pairs:
        if a not in per:
            continue
        o, p = per[a], per[b]
        ratios[f"{a} / {b}"] = {
            "compile_median": r(o["compile_ms"]["median"], p["compile_ms"]["median"]),
            "first_compile_median": r(o["first_compile_ms"]["median"],
                                      p["first_compile_ms"]["median"]),
            "compile_p90": r(o["compile_ms"]["p90"], p["compile_ms"]["p90"]),
            "ttfm_median": r(o["ttfm_ms"]["median"], p["ttfm_ms"]["median"]),
            "fill_mean": r(o["fill_us"]["mean"], p["fill_us"]["mean"]),
            "fill_median": r(o["fill_us"]["median"], p["fill_us"]["median"]),
            "fill_p99": r(o["fill_us"]["p99"], p["fill_us"]["p99"]),
        }
    return {
        "n_schemas": len(records),
        "n_with_instance": len(with_instance),
        "n_common": len(common),
        "common_tokens": sum(r["n_tokens"] for r in common),
        "engines": per,
        "ratios": ratios,
    }


def render_markdown(result: dict[str, Any]) -> str:
    cfg, summ = result["config"], result["summary"]
    engines = cfg["engines"]
    lines = [
        "# Mask benchmark (bench/masks.py)",
        "",
        (f"Run {cfg['date']} on {cfg['machine']}; tokenizer SmolLM2-135M-Instruct "
         f"({cfg['vocab_size']} tokens); subsets {', '.join(cfg['subsets'])}, at most "
         f"{cfg['limit']} schemas each; seed {cfg['seed']}; compile timeout {cfg['compile_timeout']} s; "
         f"{cfg.get('repeats', 1)} compiles per schema and engine."),
        f"Versions: {', '.join(f'{k} {v}' for k, v in cfg['versions'].items())}.",
        "",
        (f"Schemas: {summ['n_schemas']} read, {summ['n_with_instance']} with a valid instance, "
         f"**{summ['n_common']} compiled and walked by every engine** (the common set, "
         f"{summ['common_tokens']} instance tokens). All numbers below are over the common set, "
         "measured in this one run. Compile = schema to first matcher, per schema the median of "
         "its compiles (the engines take turns, in a rotated order each round, so machine noise "
         "hits them alike); first compile = the first of them alone; TTFM = compile + first "
         "mask; mask fill = every fill after the first (pooled over steps), only the fill call "
         "timed."),
        "",
        ("Engines: compact JSON (separators `,` `:`), properties in schema order; ours "
         "`from_json_schema(whitespace=\"compact\", property_order=\"schema\")` + "
         "`compile(cache=False)`; xgrammar `compile_json_schema(any_whitespace=False, "
         "separators=(\",\", \":\"), strict_mode=False)` (the schema's language), compiler cache "
         "off; xgrammar-strict the same with its default `strict_mode=True` (a smaller language: "
         "no undeclared properties or items where the schema allows them); ours-strict ours on "
         "that smaller language (`bench.peers.strict_schema`: the schema closed, timed with the "
         "compile); llguidance `whitespace_flexible: False`; "
         "outlines-core `build_regex_from_schema(whitespace_pattern=\"\")` + `Index`. Instances: "
         "hypothesis-jsonschema (fixed seed) on the schema with free-form parts removed (undeclared "
         "properties closed, free-form values made scalar), printable ASCII strings where the "
         "schema allows, keys in schema order, validated by jsonschema against the original "
         "schema, tokenized with the model's tokenizer."),
        "",
        ("| engine | compile median (ms) | compile p90 (ms) | first compile median (ms) "
         "| TTFM median (ms) | fill mean (us) | fill median (us) | fill p99 (us) "
         "| compiled+walked / with instance |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in engines:
        p = summ["engines"][e]
        ok = p["status_counts"].get("ok", 0)
        lines.append(
            f"| {e} | {p['compile_ms']['median']:.2f} | {p['compile_ms']['p90']:.2f} | "
            f"{p['first_compile_ms']['median']:.2f} | {p['ttfm_ms']['median']:.2f} | {p['fill_us']['mean']:.2f} | "
            f"{p['fill_us']['median']:.2f} | {p['fill_us']['p99']:.2f} | {ok} / {summ['n_with_instance']} |"
        )
    if summ["ratios"]:
        lines += [
            "",
            ("Ratios (same run; below 1 = ours faster; ours-strict only against the peer that "
             "compiles its language):"),
            "",
            ("| ratio | compile median | compile p90 | first compile median | TTFM median "
             "| fill mean | fill median | fill p99 |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e, r in summ["ratios"].items():
            lines.append(
                f"| {e} | {r['compile_median']:.3g} | {r['compile_p90']:.3g} | "
                f"{r['first_compile_median']:.3g} | {r['ttfm_median']:.3g} | "
                f"{r['fill_mean']:.3g} | {r['fill_median']:.3g} | {r['fill_p99']:.3g} |"
            )
    lines += ["", "Status per engine (over schemas with an instance):", ""]
    for e in engines:
        counts = summ["engines"][e]["status_counts"]
        lines.append(f"- {e}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    excluded = [r for r in result["schemas"]
                if r.get("instance") is None
                or any(r["engines"].get(e, {}).get("status") != "ok" for e in engines)]
    if excluded:
        lines += ["", "## Excluded schemas", ""]
        no_inst = [r for r in excluded if r.get("instance") is None]
        if no_inst:
            lines.append(f"No valid instance generated ({len(no_inst)}): "
                         + ", ".join(f"{r['subset']}/{r['name']}" for r in no_inst) + ".")
            lines.append("")
        for r in excluded:
            if r.get("instance") is None:
                continue
            bad = [f"{e} {r['engines'].get(e, {}).get('status', 'missing')}"
                   + (f" ({_short(r['engines'][e].get('error', ''))})"
                      if r["engines"].get(e, {}).get("error") else "")
                   for e in engines if r["engines"].get(e, {}).get("status") != "ok"]
            lines.append(f"- {r['subset']}/{r['name']}: " + "; ".join(bad))
    return "\n".join(lines) + "\n"


def _short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


# ---- driver ---------------------------------------------------------------------------------------
def load_schemas(subsets: Sequence[str], limit: int | None) -> list[tuple[str, str, Any]]:
    """(subset, file stem, schema) for the first ``limit`` files (sorted) of each subset."""
    out = []
    for subset in subsets:
        files = sorted((DATA / subset).glob("*.json"))
        if not files:
            raise SystemExit(f"no schemas in {DATA / subset}")
        for p in files[: limit or None]:
            out.append((subset, p.stem, json.loads(p.read_text())))
    return out


def _versions(engines: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    dists = {"ours": "structured-decoding", "ours-strict": "structured-decoding",
             "xgrammar": "xgrammar", "xgrammar-strict": "xgrammar",
             "llguidance": "llguidance", "outlines": "outlines-core"}
    out = {}
    for e in engines:
        try:
            out[e] = version(dists[e])
        except PackageNotFoundError:
            out[e] = "?"
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from bench.peers import ENGINES, load_tokenizer, make_engine

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            raise SystemExit(f"unknown engine {e!r}; choose from {', '.join(ENGINES)}")
    subsets = args.subset or list(DEFAULT_SUBSETS)
    schemas = load_schemas(subsets, args.limit)

    print(f"loading the tokenizer and building {len(engines)} engines...", file=sys.stderr)
    import grammars

    tok = load_tokenizer()
    vocab = grammars.Vocabulary.from_tokenizer(tok)
    vocab_size = vocab.size
    eos = int(tok.eos_token_id)
    built = {e: make_engine(e, tok, vocab=vocab, vocab_size=vocab_size) for e in engines}
    # every worker warms every engine up (JIT, lazy tables) before its first timed request; not in
    # this process: numba's OpenMP runtime would make the forked workers abort
    warm_schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                   "required": ["a", "b"], "additionalProperties": False}
    warm_tokens = tok.encode('{"a":1,"b":"x"}', add_special_tokens=False)

    def warm_up() -> None:
        for e in engines:
            w = measure(built[e], warm_schema, warm_tokens, eos, vocab_size)
            if w["status"] != "ok":
                raise RuntimeError(f"engine {e} failed the warm-up schema: {w}")

    import hypothesis_jsonschema  # noqa: F401 - imported before forking

    handlers: dict[str, Callable[..., Any]] = {
        "instance": lambda schema: generate_instance(
            schema, seed=args.seed, n_examples=args.examples, max_chars=args.max_chars),
        "measure": lambda e, schema, tokens, walk: measure(built[e], schema, tokens, eos,
                                                           vocab_size, walk=walk),
    }
    worker = Worker(handlers, init=warm_up)
    records: list[dict[str, Any]] = []
    try:
        for subset, name, schema in tqdm(schemas, desc="schemas", unit="schema"):
            rec: dict[str, Any] = {"subset": subset, "name": name, "instance": None, "engines": {}}
            records.append(rec)
            kind, res = worker.call("instance", schema, timeout=args.gen_timeout)
            if kind != "ok" or res[0] is None:
                rec["instance_error"] = res[1] if kind == "ok" else f"{kind}: {str(res)[:200]}"
                continue
            text = res[0]
            tokens = tok.encode(text, add_special_tokens=False)
            rec.update(instance=text, n_tokens=len(tokens))
            for e in engines:
                kind, out = worker.call("measure", e, schema, tokens, True,
                                        timeout=args.compile_timeout + args.walk_timeout)
                if kind == "ok":
                    rec["engines"][e] = out
                elif kind == "error":
                    rec["engines"][e] = {"status": "error", "error": str(out)[:400]}
                elif kind == "timeout":
                    rec["engines"][e] = {"status": "timeout",
                                         "error": f"over {args.compile_timeout + args.walk_timeout:.0f} s"}
                else:
                    rec["engines"][e] = {"status": "crash", "error": f"worker exit code {out}"}
            _repeat_compiles(worker, rec, schema, tokens, engines, args)
    finally:
        worker.close()

    config = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "engines": engines,
        "subsets": subsets,
        "limit": args.limit,
        "seed": args.seed,
        "repeats": args.repeats,
        "compile_timeout": args.compile_timeout,
        "vocab_size": vocab_size,
        "versions": _versions(engines),
        "command": "python -m bench.masks " + " ".join(sys.argv[1:]),
    }
    return {"config": config, "summary": summarize(records, engines), "schemas": records}


def _repeat_compiles(worker: Worker, rec: dict[str, Any], schema: Any, tokens: Sequence[int],
                     engines: Sequence[str], args: argparse.Namespace) -> None:
    """Compile the schema ``args.repeats - 1`` more times with every engine that compiled and
    walked it, the engines in a rotated order each round (each leads one round, so no engine
    always runs first, right after the walks), and record ``compile_ms`` as the median of all the compiles, the first kept as
    ``first_compile_ms`` and all of them as ``compile_runs_ms``."""
    ok = [e for e in engines if rec["engines"].get(e, {}).get("status") == "ok"]
    for e in ok:
        first = rec["engines"][e]["compile_ms"]
        rec["engines"][e].update(first_compile_ms=first, compile_runs_ms=[first])
    for r in range(1, args.repeats if ok else 0):
        for e in ok[r % len(ok):] + ok[:r % len(ok)]:
            kind, out = worker.call("measure", e, schema, tokens, False,
                                    timeout=args.compile_timeout)
            if kind == "ok" and out["status"] == "ok":
                rec["engines"][e]["compile_runs_ms"].append(out["compile_ms"])
    for e in ok:
        rec["engines"][e]["compile_ms"] = statistics.median(rec["engines"][e]["compile_runs_ms"])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.masks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", action="append", help=f"repeatable; default {', '.join(DEFAULT_SUBSETS)}")
    ap.add_argument("--limit", type=int, default=10, help="schemas per subset (0 = all)")
    ap.add_argument("--engines",
                    default="ours,ours-strict,xgrammar,xgrammar-strict,llguidance,outlines")
    ap.add_argument("--compile-timeout", type=float, default=60.0, help="seconds per compile")
    ap.add_argument("--walk-timeout", type=float, default=20.0, help="extra seconds for the walk")
    ap.add_argument("--gen-timeout", type=float, default=60.0, help="seconds to generate an instance")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3,
                    help="compiles per schema and engine (engines interleaved); the median is kept")
    ap.add_argument("--examples", type=int, default=12, help="hypothesis examples drawn per schema")
    ap.add_argument("--max-chars", type=int, default=3000, help="longest instance kept")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--name", default="masks", help="output file stem")
    args = ap.parse_args(argv)
    from bench.peers import write_results

    result = run(args)
    write_results(args.out_dir, args.name, result, render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
