"""The query interpreter: runs a parsed :class:`~decoding.query.parser.Query` on a backend.

The script's Python code runs as Python (``exec`` of the rewritten module); each prompt statement
calls :meth:`Runtime.prompt`, which appends fixed text to the context (tokenized, fed to the model
later in one chunk: never sampled), evaluates ``{expr}`` interpolations, and decodes each hole:

- The hole's constraint (:class:`~decoding.query.constraints.HoleSpec`) is compiled into a token
  automaton (``grammars.compile``: one mask row per DFA state, computed eagerly), and
  :class:`HoleMatcher` adds the token-count bounds. A token that can no longer lead to a valid value
  is never sampled.
- Bytes the constraint forces (``Matcher.forced_bytes``, e.g. the rest of a choice) are appended
  without a model call; a hole whose constraint allows nothing more ends without a model call.
- The KV cache is reused across holes (one context per query run; nested queries crop it back).
- Decoders: ``argmax``, ``sample`` (temperature/top_k/top_p), ``beam(n)`` (over the whole
  program, see :func:`decoding.query.runner.query`: the runtime replays the hole values of a beam
  (``replay``) and, at the next hole, returns its ``n`` best continuations by raising
  :class:`BeamExpansion`), ``smc(n)`` (``samplers.smc`` with AWRS
  proposals, per hole: the maximum-posterior value), ``awrs`` (``samplers.AWRSSampler`` per token).
- ``distribution VAR in VALUES``: each value is scored by one forward pass over the shared prefix
  (log P(value | prompt)), the probabilities are normalized over the values, VAR takes the argmax.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import grammars
from decoding.query.backend import Backend
from decoding.query.constraints import (
    ANY,
    Deferred,
    HoleSpec,
    as_node,
    compile_where,
    int_lang,
    land,
    literal_env,
    regex_lang,
    schema_lang,
)
from decoding.query.errors import QueryError, QueryRuntimeError
from decoding.query.parser import RUNTIME_NAME, PromptStatement, Query
from decoding.query.template import Hole, Interp, Text

__all__ = ["BeamExpansion", "HoleMatcher", "HoleRecord", "QueryResult", "Runtime", "Settings"]

NEG_INF = float("-inf")


# ---- per-grammar tables ----------------------------------------------------------------------------


class _Tables:
    """Per compiled grammar: unpacked mask rows, terminal states, byte distance to acceptance, and
    per-state successor states of the allowed tokens (all lazily cached)."""

    def __init__(self, cg: Any) -> None:
        self.cg = cg
        self.vocab = cg.vocab
        trans = cg.dfa.trans
        acc = cg.dfa.accepting
        self.terminal = acc & (trans < 0).all(axis=1)
        dist = np.where(acc, 0, 10**9).astype(np.int64)
        while True:
            nxt = np.where(trans >= 0, dist[np.maximum(trans, 0)], 10**9).min(axis=1) + 1
            new = np.minimum(dist, nxt)
            if (new == dist).all():
                break
            dist = new
        self.dist = dist
        self.max_dist = int(dist.max())
        self._rows: dict[int, np.ndarray] = {}
        self._succ: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def row(self, state: int) -> np.ndarray:
        r = self._rows.get(state)
        if r is None:
            words = self.cg.mask_row(state)
            r = np.unpackbits(words.view(np.uint8), bitorder="little")[: self.vocab.size].astype(bool)
            self._rows[state] = r
        return r

    def successors(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, next states) of the non-EOS tokens allowed in ``state``."""
        hit = self._succ.get(state)
        if hit is None:
            row = self.row(state).copy()
            row[list(self.vocab.eos_token_ids)] = False
            ids = np.nonzero(row)[0]
            hit = self._succ[state] = (ids, self._walk(state, ids))
        return hit

    def _walk(self, state: int, ids: np.ndarray) -> np.ndarray:
        """DFA state after each token of ``ids`` from ``state`` (-1 dead), vectorized by byte
        position over the tokens."""
        data, offsets = self.vocab.token_offsets
        trans = self.cg.dfa.trans
        start = offsets[ids]
        length = offsets[ids + 1] - start
        cur = np.full(len(ids), state, dtype=np.int64)
        for pos in range(int(length.max()) if len(ids) else 0):
            live = (length > pos) & (cur >= 0)
            if not live.any():
                break
            b = data[start[live] + pos]
            cur[live] = trans[cur[live], b]
        return cur


_TABLES: dict[int, tuple[Any, _Tables]] = {}


def tables_for(cg: Any) -> _Tables:
    """The (process-wide cached) tables of a compiled grammar."""
    hit = _TABLES.get(id(cg))
    if hit is None or hit[0] is not cg:
        hit = _TABLES[id(cg)] = (cg, _Tables(cg))
    return hit[1]


class HoleMatcher:
    """A hole's matcher: the compiled byte language plus token-count bounds (``min_tokens`` <=
    tokens <= ``max_tokens``, EOS excluded). Satisfies ``samplers.Matcher``.

    Exactness of the bounds: at the last allowed token only tokens that land in an accepting state
    are allowed; with ``r`` tokens left, a token is allowed only if its state can accept within
    ``r`` more bytes (one byte per token always exists in byte-level vocabularies), so the hole can
    always finish; before ``min_tokens``, tokens that would force the hole to end are masked.
    """

    __slots__ = ("_done", "_eos", "_m", "_t", "_tail", "cap", "max_tokens", "min_tokens", "n",
                 "stopped", "stops")

    def __init__(self, tables: _Tables, min_tokens: int = 0, max_tokens: int | None = None,
                 eos_ids: tuple[int, ...] | None = None, cap: int | None = None,
                 stops: tuple[bytes, ...] = ()) -> None:
        self.stops = stops  # a token completing one of these ends the hole (STOPS_AT/BEFORE)
        self._tail = b""
        self.stopped = False
        self._t = tables
        self._m = tables.cg.matcher()
        self.n = 0
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens  # the constraint's bound: enforced exactly (see above)
        self.cap = cap  # a safety cap: generation stops there (the hole may then be incomplete)
        self._eos = eos_ids if eos_ids is not None else tables.vocab.eos_token_ids
        self._done = False

    def _capped(self) -> bool:
        return self.stopped or (self.max_tokens is not None and self.n >= self.max_tokens) or (
            self.cap is not None and self.n >= self.cap)

    # -- queries --
    @property
    def state(self) -> int:
        return self._m.state

    def grammar_terminal(self) -> bool:
        return bool(self._t.terminal[self._m.state])

    def is_terminal(self) -> bool:
        """Nothing but the end may follow (no model call needed to end the hole)."""
        if self._done or self._capped():
            return True
        return self.grammar_terminal() and self.n >= self.min_tokens

    def is_accepting(self) -> bool:
        return not self._done and self._m.is_accepting() and self.n >= self.min_tokens

    def is_terminated(self) -> bool:
        return self._done

    def allowed(self) -> np.ndarray:
        """Boolean vector over the vocabulary (EOS ids included when the hole may end)."""
        t = self._t
        size = t.vocab.size
        if self._done:
            return np.zeros(size, dtype=bool)
        state = self._m.state
        eos_ok = self.is_accepting()
        if self._capped():
            out = np.zeros(size, dtype=bool)
        else:
            out = t.row(state).copy()
            out[list(t.vocab.eos_token_ids)] = False
            left = None if self.max_tokens is None else self.max_tokens - self.n - 1
            need_min = self.n + 1 < self.min_tokens
            if (left is not None and left < t.max_dist) or need_min:
                ids, nxt = t.successors(state)
                bad = np.zeros(len(ids), dtype=bool)
                if left is not None and left < t.max_dist:
                    bad |= t.dist[nxt] > left
                if need_min:
                    bad |= t.terminal[nxt]
                    if self.stops:  # a token completing a stop phrase would end the hole early
                        toks = t.vocab.tokens
                        bad |= np.fromiter((self._completes_stop(toks[i]) for i in ids), dtype=bool,
                                           count=len(ids))
                out[ids[bad]] = False
        if eos_ok:
            out[list(self._eos)] = True
        return out

    def check_token(self, token_id: int) -> bool:
        if self._done:
            return False
        if token_id in self._eos:
            return self.is_accepting()
        if token_id in self._t.vocab.eos_token_ids:
            return False
        if self._capped():
            return False
        if not self._m.check_token(token_id):
            return False
        left = None if self.max_tokens is None else self.max_tokens - self.n - 1
        need_min = self.n + 1 < self.min_tokens
        if (left is not None and left < self._t.max_dist) or need_min:
            nxt = self._t.cg.next_state(self._m.state, token_id)
            if left is not None and self._t.dist[nxt] > left:
                return False
            if need_min and self._t.terminal[nxt]:
                return False
        return not (need_min and self.stops
                    and self._completes_stop(self._t.vocab.tokens[token_id]))

    def _completes_stop(self, tok: bytes) -> bool:
        buf = self._tail + tok
        return any(s in buf for s in self.stops)

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> None:
        words = np.packbits(self.allowed(), bitorder="little")
        pad = (-len(words)) % 4
        words = np.concatenate([words, np.zeros(pad, dtype=np.uint8)]).view(np.int32)
        if isinstance(bitmask, np.ndarray):
            bitmask[row, : len(words)] = words
        else:
            import torch

            bitmask[row, : len(words)].copy_(torch.from_numpy(words))

    def forced_bytes(self) -> bytes:
        if self._done or self.is_terminal():
            return b""
        return self._m.forced_bytes()

    # -- updates --
    def accept_token(self, token_id: int) -> bool:
        if not self.check_token(token_id):
            return False
        if token_id in self._eos:
            self._done = True
            return True
        ok = self._m.accept_token(token_id)
        assert ok
        self.n += 1
        if self.stops:
            tok = self._t.vocab.tokens[token_id]
            keep = max(len(s) for s in self.stops) - 1
            buf = self._tail + tok
            if any(s in buf for s in self.stops):
                self.stopped = True
            self._tail = buf[-keep:] if keep > 0 else b""
        return True

    def fork(self) -> HoleMatcher:
        h = HoleMatcher.__new__(HoleMatcher)
        h._t = self._t
        h._m = self._m.fork()
        h.n = self.n
        h.min_tokens = self.min_tokens
        h.max_tokens = self.max_tokens
        h.cap = self.cap
        h.stops = self.stops
        h._tail = self._tail
        h.stopped = self.stopped
        h._eos = self._eos
        h._done = self._done
        return h


# ---- results ----------------------------------------------------------------------------------------


@dataclass
class HoleRecord:
    """One decoded hole occurrence."""

    name: str
    value: Any
    text: str  # the text placed in the prompt
    raw: str  # the generated text (before STOPS_BEFORE stripping)
    tokens: int  # tokens of the value (EOS excluded)
    finish_reason: str  # "stop" | "length" (the per-hole token cap ended it) | "distribution" | "nested"
    model_calls: int
    forced_tokens: int  # tokens appended without a model call (forced by the constraint)
    constraint_checks: int
    spec: HoleSpec | None = None
    nested_in: str | None = None
    distribution: dict[str, float] | None = None
    prompt_id: int = -1
    seconds: float = 0.0
    prefix: str = ""  # the context text when the hole started (for baselines and debugging)


@dataclass
class QueryStats:
    model_calls: int = 0
    tokens_processed: int = 0  # tokens fed through the model (prompt chunks and generated tokens)
    generated_tokens: int = 0
    forced_tokens: int = 0
    seconds: float = 0.0


class BeamExpansion(BaseException):
    """Raised by a program-level beam run at the hole it expands: ``candidates`` are the hole's
    best ``(log-probability, tokens)`` continuations. A ``BaseException`` so that a script's own
    ``except Exception`` cannot swallow it."""

    def __init__(self, candidates: list[tuple[float, list[int]]]) -> None:
        super().__init__(len(candidates))
        self.candidates = candidates


@dataclass
class QueryResult:
    """What a query run returns: the variables (last value of each top-level hole, plus the
    script's other top-level variables in ``scope``), the final prompt, every hole occurrence
    with its statistics, and the distributions."""

    variables: dict[str, Any]
    prompt: str
    holes: list[HoleRecord]
    distributions: dict[str, dict[str, float]]
    stats: QueryStats
    decoder: str
    model: str
    scope: dict[str, Any] = field(default_factory=dict, repr=False)
    #: ``beam(n)``: the total log-probability of the generated tokens of this beam, and the other
    #: final beams (best first, this one excluded).
    score: float | None = None
    beams: list[QueryResult] = field(default_factory=list, repr=False)

    def __getitem__(self, name: str) -> Any:
        return self.variables[name]

    def records(self, name: str) -> list[HoleRecord]:
        return [h for h in self.holes if h.name == name]

    def summary(self) -> str:
        lines = [f"decoder: {self.decoder}   model: {self.model}"]
        if self.score is not None:
            others = ", ".join(f"{b.score:.3f}" for b in self.beams)
            lines.append(f"beam: total log-probability {self.score:.3f} (other final beams: "
                         f"{others or 'none'})")
        for h in self.holes:
            where = f" (in {h.nested_in})" if h.nested_in else ""
            lines.append(
                f"{h.name}{where} = {h.value!r}  [{h.tokens} tokens, {h.finish_reason}, "
                f"{h.model_calls} model calls, {h.forced_tokens} forced]"
            )
            if h.distribution:
                for v, p in sorted(h.distribution.items(), key=lambda kv: -kv[1]):
                    lines.append(f"    P({h.name} = {v!r}) = {p:.6f}")
        s = self.stats
        lines.append(
            f"total: {s.model_calls} model calls, {s.tokens_processed} tokens processed, "
            f"{s.generated_tokens} generated ({s.forced_tokens} forced), {s.seconds:.2f} s"
        )
        return "\n".join(lines)


# ---- the context ------------------------------------------------------------------------------------


def _stops(spec: HoleSpec) -> tuple[bytes, ...]:
    return tuple(s.encode("utf-8") for s in spec.stops)


class Context:
    """The token ids of the text so far, and the KV state holding a prefix of them."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend
        self.ids: list[int] = []
        self.state = backend.new_state()
        self.fed = 0
        self.logits: Any = None

    def append_text(self, text: str) -> None:
        self.ids.extend(self.b.encode(text))

    def append_ids(self, ids: list[int]) -> None:
        self.ids.extend(ids)

    def logits_now(self) -> Any:
        if not self.ids:
            self.ids.append(self.b.start_token_id)
        if self.fed < len(self.ids) or self.logits is None:
            if self.fed >= len(self.ids):  # logits lost by a crop: re-feed the last token
                self.b.crop(self.state, len(self.ids) - 1)
                self.fed = len(self.ids) - 1
            self.logits = self.b.feed(self.state, self.ids[self.fed :])
            self.fed = len(self.ids)
        return self.logits

    def truncate(self, n: int) -> None:
        if n >= len(self.ids):
            return
        del self.ids[n:]
        if self.fed > n:
            self.b.crop(self.state, n)
            self.fed = n
            self.logits = None

    def text(self) -> str:
        return self.b.vocab.decode(self.ids).decode("utf-8", errors="replace")


# ---- settings -----------------------------------------------------------------------------------------


@dataclass
class Settings:
    decoder: str = "argmax"
    n: int = 1
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_len: int = 2048  # LMQL's meaning: the most tokens the whole context may hold
    max_tokens: int = 128  # our per-hole cap (a hole that reaches it ends: finish_reason "length")
    seed: int | None = None
    ess_threshold: float = 0.5
    resampling: str = "systematic"


_ANY_KEY = ("ANY",)


class _LmqlStub(types.ModuleType):
    """``import lmql`` inside a script: only what a script may reference without a service."""

    def __init__(self) -> None:
        super().__init__("lmql")

        def query(fn: Any = None, **kw: Any) -> Any:
            return fn if fn is not None else (lambda f: f)

        self.query = query


class Runtime:
    """Runs one query program (create one per run)."""

    def __init__(self, query: Query, backend: Backend, settings: Settings,
                 inputs: dict[str, Any], generator: Any, *,
                 replay: list[list[int]] | None = None) -> None:
        """``replay`` (program-level beam search): the generated tokens of the first holes, in
        the order the program reaches them; they are placed in the context instead of decoding,
        and the next hole raises :class:`BeamExpansion` with its ``settings.n`` best
        continuations."""
        self.replay = replay
        self._hole_index = 0
        self.q = query
        self.b = backend
        self.s = settings
        self.inputs = inputs
        self.gen = generator
        self.ctx = Context(backend)
        self.records: list[HoleRecord] = []
        self.distributions: dict[str, dict[str, float]] = {}
        self.function_stack: list[str] = []
        self._compiled: dict[Any, tuple[Any, _Tables]] = {}
        self.globals: dict[str, Any] = {}
        self.forced = 0
        self.generated = 0

    # -- the program --
    def run(self) -> dict[str, Any]:
        g = self.globals
        real_import = builtins.__import__

        def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
                    level: int = 0) -> Any:
            if name == "lmql" or name.startswith("lmql."):
                if name != "lmql":
                    raise QueryRuntimeError(f"module {name!r} (LMQL's library) is not available")
                return _LmqlStub()
            return real_import(name, globals, locals, fromlist, level)

        bdict = dict(vars(builtins))
        bdict["__import__"] = _import
        # a real module (dataclasses and pydantic look the script's classes up in sys.modules)
        modname = f"__lmql_query_{id(self):x}__"
        module = types.ModuleType(modname)
        self.globals = g = module.__dict__
        g.update({"__builtins__": bdict, RUNTIME_NAME: self})
        g.update(self.inputs)
        code = compile(self.q.module, self.q.filename, "exec")
        sys.modules[modname] = module
        try:
            exec(code, g)  # noqa: S102 - the query is a program by design
        except QueryError:
            raise
        except Exception as exc:
            line = None
            tb = exc.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == self.q.filename:
                    line = tb.tb_lineno
                tb = tb.tb_next
            raise QueryRuntimeError(f"{type(exc).__name__}: {exc}", line=line) from exc
        finally:
            sys.modules.pop(modname, None)
        return g

    def nested_query(self, fn: Any) -> Any:
        name = fn.__name__
        runtime = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            runtime.function_stack.append(name)
            try:
                return fn(*args, **kwargs)
            finally:
                runtime.function_stack.pop()

        wrapper.__lmql_nested__ = True  # type: ignore[attr-defined]
        wrapper.__name__ = name
        return wrapper

    # -- one prompt statement --
    def prompt(self, pid: int, scope: dict[str, Any]) -> tuple[Any, ...]:
        p = self.q.prompts[pid]
        values: dict[str, Any] = {}
        for seg in p.segments:
            if isinstance(seg, Text):
                self.ctx.append_text(seg.text)
            elif isinstance(seg, Interp):
                code = compile(seg.expr, self.q.filename, "eval")
                try:
                    v = eval(code, self.globals, {**scope, **values})
                except QueryError:
                    raise
                except Exception as exc:
                    raise QueryRuntimeError(
                        f"interpolation {{{seg.source}}} failed: {type(exc).__name__}: {exc}",
                        line=seg.line, column=seg.column) from exc
                self.ctx.append_text(str(v))
            else:
                self._check_budget(seg)
                values[seg.name] = self.hole(p, seg, {**self.globals, **scope, **values})
        return tuple(values[h] for h in p.holes)

    def _check_budget(self, h: Hole) -> None:
        if len(self.ctx.ids) >= self.s.max_len:
            raise QueryRuntimeError(
                f"max_len {self.s.max_len} reached before hole [{h.name}] (the context holds "
                f"{len(self.ctx.ids)} tokens)", line=h.line, column=h.column)

    # -- holes --
    def hole(self, p: PromptStatement, h: Hole, ns: dict[str, Any]) -> Any:
        if h.type_kind == "name":
            target = self._resolve(h, ns)
            if getattr(target, "__lmql_nested__", False):
                return self._nested_hole(p, h, target)
        if p.distribution is not None and p.distribution[0] == h.name:
            return self._distribution_hole(p, h, ns)
        spec = self.spec_for(p, h, ns)
        return self._decode_hole(p, h, spec)

    def _resolve(self, h: Hole, ns: dict[str, Any]) -> Any:
        parts = (h.type_value or "").split(".")
        if parts[0] not in ns and not hasattr(builtins, parts[0]):
            raise QueryRuntimeError(f"hole [{h.name}: {h.type_source}]: {parts[0]!r} is not defined",
                                    line=h.line, column=h.column)
        obj = ns[parts[0]] if parts[0] in ns else getattr(builtins, parts[0])
        for a in parts[1:]:
            obj = getattr(obj, a)
        return obj

    def spec_for(self, p: PromptStatement, h: Hole, ns: dict[str, Any]) -> HoleSpec:
        if p.where is not None and p.deferred:
            try:
                specs = compile_where(p.where, p.holes, env=literal_env(ns),
                                      known=lambda n: n in ns, shift=p.shift,
                                      imported_from=self.q.imported_from)
            except Deferred as d:
                raise QueryRuntimeError(f"the constraint on {h.name} uses {d.args[0]!r}, which is "
                                        "not defined when the hole is reached",
                                        line=h.line, column=h.column) from None
            base = specs.get(h.name)
        else:
            base = p.specs.get(h.name)
        spec = HoleSpec(h.name, line=h.line, column=h.column)
        if base is not None:
            spec.lang, spec.min_tokens, spec.max_tokens = base.lang, base.min_tokens, base.max_tokens
            spec.stops_at, spec.stops_before = list(base.stops_at), list(base.stops_before)
            spec.value_type = base.value_type
        if h.type_kind == "int":
            spec.lang, spec.value_type = land(spec.lang, int_lang()), int
        elif h.type_kind == "regex":
            spec.lang = land(spec.lang, regex_lang(h.type_value or ""))
        elif h.type_kind == "name":
            t = self._resolve(h, ns)
            if t is int:
                spec.lang, spec.value_type = land(spec.lang, int_lang()), int
            elif t is not str:
                if not isinstance(t, (dict, bool, type)):
                    raise QueryRuntimeError(
                        f"hole [{h.name}: {h.type_source}]: {t!r} is not a type, a JSON Schema or a "
                        "nested query", line=h.line, column=h.column)
                spec.lang, spec.value_type = land(spec.lang, schema_lang(t)), t
        if (p.where is not None and p.deferred) or h.type_kind is not None:
            spec.check()
        return spec

    def _compiled_for(self, spec: HoleSpec) -> tuple[Any, _Tables]:
        lang = spec.generation_lang()
        key = _ANY_KEY if lang is ANY else (lang.trans.tobytes(), lang.accepting.tobytes())
        hit = self._compiled.get(key)
        if hit is None:
            g = grammars.Grammar.from_node(as_node(lang), kind="query-hole", source=spec.name)
            cg = grammars.compile(g, self.b.vocab)
            hit = self._compiled[key] = (cg, tables_for(cg))
        return hit

    def _cap(self) -> int:
        return max(0, min(self.s.max_tokens, self.s.max_len - len(self.ctx.ids)))

    def _decode_hole(self, p: PromptStatement, h: Hole, spec: HoleSpec) -> Any:
        t0 = time.perf_counter()
        prefix = self.ctx.text()
        calls0, checks = self.b.calls, 0
        _, tables = self._compiled_for(spec)
        cap = self._cap()
        start = len(self.ctx.ids)
        dec = self.s.decoder
        forced = 0
        index = self._hole_index
        self._hole_index += 1
        if self.replay is not None and index < len(self.replay):
            toks = list(self.replay[index])
            self.ctx.append_ids(toks)
        elif dec == "beam":
            if self.replay is None:
                raise QueryRuntimeError("beam decoding runs through decoding.query.query")
            raise BeamExpansion(self._beam(tables, spec, cap))
        elif dec in ("argmax", "sample"):
            toks, forced = self._greedy_or_sample(tables, spec, cap)
        elif dec == "awrs":
            toks, checks = self._awrs(tables, spec, cap)
        elif dec == "smc":
            toks, checks = self._smc(tables, spec, cap)
        else:  # pragma: no cover - the parser rejects other names
            raise QueryRuntimeError(f"unknown decoder {dec!r}")
        hm = HoleMatcher(tables, spec.min_tokens, spec.max_tokens, cap=cap, stops=_stops(spec))
        for t in toks:
            hm.accept_token(t)
        by_cap = (len(toks) >= cap and (spec.max_tokens is None or cap < spec.max_tokens)
                  and not hm.grammar_terminal())
        if not hm.is_accepting():
            text = self.b.vocab.decode(toks).decode("utf-8", errors="replace")
            raise QueryRuntimeError(
                f"hole {h.name} was cut by the token cap ({cap} tokens) before its constraint was "
                f"satisfied ({text!r}); raise max_tokens (the output is never passed off as valid)",
                line=h.line, column=h.column)
        raw_bytes = self.b.vocab.decode(toks)
        raw = raw_bytes.decode("utf-8", errors="replace")
        text = raw
        # the first stop phrase ends the value (STOPS_AT keeps it, STOPS_BEFORE drops it); the
        # rest of the token that completed it is cut from the value and from the prompt
        cut = None
        for s in spec.stops_at:
            i = raw.find(s)
            if i >= 0 and (cut is None or i + len(s) < cut):
                cut = i + len(s)
        for s in spec.stops_before:
            i = raw.find(s)
            if i >= 0 and (cut is None or i + len(s) <= cut):
                cut = i
        if cut is not None and cut < len(raw):
            text = raw[:cut]
            new = self.b.encode(text)
            k = 0
            while k < min(len(new), len(toks)) and new[k] == toks[k]:
                k += 1
            self.ctx.truncate(start + k)
            self.ctx.append_ids(new[k:])
        value = self._convert(text, spec, h)
        self.generated += len(toks)
        self.forced += forced
        self.records.append(HoleRecord(
            name=h.name, value=value, text=text, raw=raw, tokens=len(toks),
            finish_reason="length" if by_cap else "stop", model_calls=self.b.calls - calls0,
            forced_tokens=forced, constraint_checks=checks, spec=spec,
            nested_in=self.function_stack[-1] if self.function_stack else None, prompt_id=p.id,
            seconds=time.perf_counter() - t0, prefix=prefix,
        ))
        return value

    def _convert(self, text: str, spec: HoleSpec, h: Hole) -> Any:
        t = spec.value_type
        if t is None or t is str:
            return text
        try:
            if t is int:
                return int(text)
            if isinstance(t, (dict, bool)):
                return json.loads(text)
            if hasattr(t, "model_validate_json"):
                return t.model_validate_json(text)
            from pydantic import TypeAdapter

            return TypeAdapter(t).validate_json(text)
        except Exception as exc:
            raise QueryRuntimeError(f"the value of {h.name} ({text!r}) does not parse as {t!r}: "
                                    f"{exc}", line=h.line, column=h.column) from exc

    # -- decoders --
    def _choose(self, logits: Any, allowed: np.ndarray) -> int:
        import torch

        from decoding.sampling import choose_tokens

        mask = torch.from_numpy(allowed)
        width = logits.shape[-1]
        if width != mask.shape[0]:
            m2 = torch.zeros(width, dtype=torch.bool)
            n = min(width, mask.shape[0])
            m2[:n] = mask[:n]
            mask = m2
        lg = logits.masked_fill(~mask, NEG_INF)[None].clone()
        if self.s.decoder == "argmax":
            return int(lg.argmax(dim=-1)[0])
        return int(choose_tokens(lg, sampler="sample", temperature=self.s.temperature,
                                 top_k=self.s.top_k, top_p=self.s.top_p, generator=self.gen)[0])

    def _dead_end(self, toks: list[int], spec: HoleSpec,
                  hm: HoleMatcher | None = None) -> QueryRuntimeError:
        text = self.b.vocab.decode(toks).decode("utf-8", errors="replace")
        if hm is not None and hm.max_tokens is not None and (
            hm._t.dist[hm.state] > hm.max_tokens - hm.n
        ):
            return QueryRuntimeError(
                f"hole {spec.name} cannot be completed within its token budget ({hm.max_tokens} "
                f"tokens; {text!r} so far needs at least {int(hm._t.dist[hm.state])} more bytes): "
                "raise max_tokens", line=spec.line, column=spec.column)
        return QueryRuntimeError(
            f"dead end in hole {spec.name}: the constraint allows no token after {text!r}",
            line=spec.line, column=spec.column)

    def _greedy_or_sample(self, tables: _Tables, spec: HoleSpec, cap: int) -> tuple[list[int], int]:
        hm = HoleMatcher(tables, spec.min_tokens, spec.max_tokens, cap=cap, stops=_stops(spec))
        eos = set(self.b.vocab.eos_token_ids)
        toks: list[int] = []
        forced = 0
        while not hm.is_terminal():
            fb = hm.forced_bytes()
            if fb:
                ids = self._forced_ids(hm, fb)
                if ids:
                    self.ctx.append_ids(ids)
                    toks.extend(ids)
                    forced += len(ids)
                    continue
            logits = self.ctx.logits_now()
            allowed = hm.allowed()
            if not allowed.any():
                raise self._dead_end(toks, spec, hm)
            t = self._choose(logits, allowed)
            if t in eos:
                break
            if not hm.accept_token(t):
                raise self._dead_end(toks, spec)
            self.ctx.append_ids([t])
            toks.append(t)
        return toks, forced

    def _forced_ids(self, hm: HoleMatcher, fb: bytes) -> list[int]:
        """Tokens for the forced bytes (longest valid UTF-8 prefix), accepted into ``hm``; [] if
        they do not fit the token budget or the matcher rejects them (then nothing changes)."""
        for cut in range(len(fb), max(len(fb) - 4, 0), -1):
            try:
                text = fb[:cut].decode("utf-8")
                break
            except UnicodeDecodeError:
                continue
        else:
            return []
        ids = self.b.encode(text)
        limit = min(x for x in (hm.max_tokens, hm.cap, 10**9) if x is not None)
        if not ids or hm.n + len(ids) > limit:
            return []
        trial = hm.fork()
        for t in ids:
            if not trial.accept_token(t):
                return []
        for t in ids:
            hm.accept_token(t)
        return ids

    def _beam(self, tables: _Tables, spec: HoleSpec, cap: int) -> list[tuple[float, list[int]]]:
        """Beam search of width ``settings.n`` over one hole: its complete continuations,
        ``(log-probability of the generated tokens, tokens)``, best first (at most ``n``)."""
        import torch

        width = int(self.s.n)
        eos = set(self.b.vocab.eos_token_ids)
        root_logits = self.ctx.logits_now()
        # a beam: (score, tokens, matcher, state or None (= the context's), logits, done)
        beams: list[tuple[float, list[int], HoleMatcher, Any, Any, bool]] = [
            (0.0, [], HoleMatcher(tables, spec.min_tokens, spec.max_tokens, cap=cap,
                                  stops=_stops(spec)), None,
             root_logits, False)]
        for _ in range(cap + 1):
            cands: list[tuple[float, int, int | None]] = []
            for bi, (score, toks, hm, _st, logits, done) in enumerate(beams):
                if done or hm.is_terminal():
                    cands.append((score, bi, None))
                    continue
                allowed = torch.from_numpy(hm.allowed())
                lp = torch.log_softmax(logits.float(), dim=-1)[: allowed.shape[0]]
                lp = lp.masked_fill(~allowed[: lp.shape[0]], NEG_INF)
                k = min(width, int(allowed.sum()))
                if k == 0:
                    continue
                vals, idx = torch.topk(lp, k)
                for v, t in zip(vals.tolist(), idx.tolist()):
                    if v > NEG_INF:
                        cands.append((score + v, bi, t))
            if not cands:
                raise self._dead_end([], spec)
            cands.sort(key=lambda c: -c[0])
            kept = cands[:width]
            if all(t is None for _, _, t in kept):
                beams = [beams[bi] for _, bi, _ in kept]
                break
            uses: dict[int, int] = {}
            for _, bi, t in kept:
                if t is not None and t not in eos:
                    uses[bi] = uses.get(bi, 0) + 1
            new: list[tuple[float, list[int], HoleMatcher, Any, Any, bool]] = []
            for score, bi, t in kept:
                _s, toks, hm, st, logits, done = beams[bi]
                if t is None:
                    new.append((score, toks, hm, st, logits, True))
                    continue
                hm2 = hm.fork()
                hm2.accept_token(t)
                if t in eos:
                    new.append((score, toks, hm2, st, logits, True))
                    continue
                uses[bi] -= 1
                base = st if st is not None else self.ctx.state
                st2 = base if (uses[bi] == 0 and st is not None) else self.b.copy(base)
                lg2 = self.b.feed(st2, [t])
                new.append((score, toks + [t], hm2, st2, lg2, False))
            beams = new
        beams.sort(key=lambda b: -b[0])
        return [(score, toks) for score, toks, _hm, _st, _lg, _done in beams]

    def _awrs(self, tables: _Tables, spec: HoleSpec, cap: int) -> tuple[list[int], int]:
        import torch

        from samplers import AWRSSampler

        sampler = AWRSSampler(proper_weights=False, temperature=self.s.temperature, max_rejects=256)
        hm = HoleMatcher(tables, spec.min_tokens, spec.max_tokens, eos_ids=(self.b.eos_token_id,),
                         cap=cap, stops=_stops(spec))
        toks: list[int] = []
        checks = 0
        while not hm.is_terminal():
            lp = torch.log_softmax(self.ctx.logits_now().float(), dim=-1)
            r = sampler.sample(lp, hm, generator=self.gen)
            checks += r.n_checks
            if r.token is None:
                raise self._dead_end(toks, spec)
            if r.token == self.b.eos_token_id:
                break
            hm.accept_token(r.token)
            self.ctx.append_ids([r.token])
            toks.append(r.token)
        return toks, checks

    def _smc(self, tables: _Tables, spec: HoleSpec, cap: int) -> tuple[list[int], int]:
        from samplers import AWRSSampler, smc

        self.ctx.logits_now()
        lm = _ContextLM(self.b, self.ctx)
        hm = HoleMatcher(tables, spec.min_tokens, spec.max_tokens, eos_ids=(self.b.eos_token_id,),
                         cap=cap, stops=_stops(spec))
        res = smc(lm, hm, n_particles=int(self.s.n), max_tokens=cap + 1,
                  sampler=AWRSSampler(temperature=self.s.temperature, max_rejects=256),
                  ess_threshold=self.s.ess_threshold, resampling=self.s.resampling,  # type: ignore[arg-type]
                  generator=self.gen)
        out = res.map_output
        if out is None:
            raise QueryRuntimeError(f"SMC: no particle of hole {spec.name} finished",
                                    line=spec.line, column=spec.column)
        toks = list(out)
        self.ctx.append_ids(toks)
        return toks, res.n_checks

    # -- nested queries and distributions --
    def _nested_hole(self, p: PromptStatement, h: Hole, fn: Any) -> Any:
        t0 = time.perf_counter()
        calls0 = self.b.calls
        mark = len(self.ctx.ids)
        value = fn()
        self.ctx.truncate(mark)  # the nested query's own prompt is removed from the trace
        text = "" if value is None else str(value)
        self.ctx.append_text(text)
        self.records.append(HoleRecord(
            name=h.name, value=value, text=text, raw=text, tokens=0, finish_reason="nested",
            model_calls=self.b.calls - calls0, forced_tokens=0, constraint_checks=0,
            nested_in=self.function_stack[-1] if self.function_stack else None, prompt_id=p.id,
            seconds=time.perf_counter() - t0))
        return value

    def _distribution_hole(self, p: PromptStatement, h: Hole, ns: dict[str, Any]) -> Any:
        import torch

        t0 = time.perf_counter()
        calls0 = self.b.calls
        assert p.distribution is not None
        expr = p.distribution[1]
        code = compile(ast.Expression(expr), self.q.filename, "eval")
        try:
            values = list(eval(code, self.globals, ns))
        except Exception as exc:
            raise QueryRuntimeError(f"the distribution values of {h.name} failed: "
                                    f"{type(exc).__name__}: {exc}", line=h.line,
                                    column=h.column) from exc
        if not values or not all(isinstance(v, str) for v in values):
            raise QueryRuntimeError(f"the distribution of {h.name} needs a non-empty list of strings",
                                    line=h.line, column=h.column)
        values = list(dict.fromkeys(values))
        logits = self.ctx.logits_now()
        lp0 = torch.log_softmax(logits.float(), dim=-1)
        base = self.b.length(self.ctx.state)
        scores = []
        for v in values:
            ids = self.b.encode(v)
            if not ids:
                scores.append(0.0)
                continue
            total = float(lp0[ids[0]])
            if len(ids) > 1:
                rows = self.b.feed_all(self.ctx.state, ids[:-1])
                lps = torch.log_softmax(rows.float(), dim=-1)
                total += float(sum(lps[i, ids[i + 1]] for i in range(len(ids) - 1)))
                self.b.crop(self.ctx.state, base)
            scores.append(total)
        m = max(scores)
        z = sum(math.exp(s - m) for s in scores)
        probs = {v: math.exp(s - m) / z for v, s in zip(values, scores)}
        best = max(values, key=lambda v: probs[v])
        self.ctx.append_text(best)
        self.distributions[h.name] = probs
        self.records.append(HoleRecord(
            name=h.name, value=best, text=best, raw=best, tokens=len(self.b.encode(best)),
            finish_reason="distribution", model_calls=self.b.calls - calls0, forced_tokens=0,
            constraint_checks=0, distribution=probs, prompt_id=p.id,
            nested_in=self.function_stack[-1] if self.function_stack else None,
            seconds=time.perf_counter() - t0))
        return best


class _ContextLM:
    """``samplers.LanguageModel`` over the continuations of a context: each requested sequence's KV
    state extends its parent's (copied when a parent has several children)."""

    def __init__(self, backend: Backend, ctx: Context) -> None:
        self.b = backend
        self.vocab_size = backend.vocab.size
        self.eos_token_id = backend.eos_token_id
        self.cache: dict[tuple[int, ...], tuple[Any, Any]] = {(): (ctx.state, ctx.logits)}
        self.root = ctx

    def next_token_logprobs(self, sequences: Any) -> Any:
        import torch

        rows = []
        new: dict[tuple[int, ...], tuple[Any, Any]] = {}
        for seq in sequences:
            key = tuple(int(t) for t in seq)
            hit = new.get(key) or self.cache.get(key)
            if hit is None:
                pst, _ = self.cache[key[:-1]]
                st = self.b.copy(pst)
                hit = (st, self.b.feed(st, [key[-1]]))
            new[key] = hit
            rows.append(torch.log_softmax(hit[1].float(), dim=-1))
        self.cache = new
        return torch.stack(rows)

