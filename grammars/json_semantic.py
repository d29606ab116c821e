"""Exact JSON Schema checks where a grammar cannot be exact: the semantic half of the compiler.

:mod:`grammars.json_schema` lowers what a grammar expresses exactly and *relaxes* what it cannot
into a superset it can (``uniqueItems``, ``not``, ``if``/``then``/``else`` -> ``anyOf[if and then,
else]``, ``contains``, ``dependentRequired``/``dependentSchemas``/``dependencies``,
``unevaluatedProperties``/``unevaluatedItems``, overlapping ``oneOf`` -> ``anyOf``,
``$dynamicRef``, conflicting ``allOf`` values, ...), recording each relaxation. Exactness is
then restored here, when values complete:

- :class:`SchemaChecks` knows, for a JSON path, the subschemas that *must* apply to the value
  there (followed through ``properties``, ``patternProperties``, ``additionalProperties``,
  ``prefixItems``/``items``, ``allOf`` and ``$ref``; conditional applicators such as ``anyOf`` stop
  the walk) and that carry a keyword the grammar relaxed. A completed value at that path is
  validated against each of them with python-jsonschema (verdicts are cached by path and text).
  The whole document is validated against the root schema before EOS is allowed, so on complete
  texts accept/reject equals jsonschema's verdict.
- Arrays under ``uniqueItems`` or ``maxContains`` are also checked at every completed item: both
  fail on a prefix exactly when they fail on every extension, so a duplicate is refused when it is
  written, not at ``]``. Duplicate object keys are refused.
- :class:`CheckedMatcher` wraps the grammar's matcher. A small byte scanner follows the JSON
  structure of the text; the token that would complete an invalid value is rejected by
  ``check_token``, ``accept_token``, ``accept_bytes`` and the masks alike (the mask re-checks only
  the allowed tokens that can complete a value from the current scanner state).

When the schema (or a registered remote document) uses ``$dynamicRef``/``$recursiveRef``, a
subschema validated on its own could resolve differently than in place, so only the whole
document is checked (at EOS).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernels.bitmask import write_bitmask_row

__all__ = ["SEMANTIC_KEYWORDS", "CheckedCompiledGrammar", "CheckedMatcher", "SchemaChecks"]

#: Keywords whose subschema gets a semantic check when a value at its location completes.
SEMANTIC_KEYWORDS = frozenset(
    ["uniqueItems", "not", "if", "contains", "minContains", "maxContains", "dependentRequired",
     "dependentSchemas", "dependencies", "unevaluatedProperties", "unevaluatedItems", "oneOf",
     "$dynamicRef", "$recursiveRef"]
)

_OBJ, _ARR = 0, 1
_WS = frozenset(b" \t\n\r")
_NUM = frozenset(b"0123456789+-.eE")
_LIT_LEN = {ord("t"): 4, ord("f"): 5, ord("n"): 4}
_COMPLETING = frozenset(b'"}],el \t\n\r')  # bytes at which some value can complete

# scanner state: (text, frames, scalar)
#   frame: (kind, start, path, n_items, key, keys)   key: the object's current key (None between)
#   scalar: None | ("str" | "key", start, escaped) | ("num", start) | ("lit", start, end)
State = tuple[bytes, tuple, tuple | None]
START: State = (b"", (), None)


def _walk(value: Any, keys: frozenset[str]) -> bool:
    """Whether ``value`` (a JSON document) uses any of ``keys`` as an object key, anywhere."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if keys & v.keys():
                return True
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


class SchemaChecks:
    """The semantic checks of one schema (see the module docstring).

    ``root`` is the schema with absolute ``$ref`` s, ``lookup(uri)`` resolves one, ``relaxed`` lists
    the ``(keyword, pointer)`` s the grammar could not express exactly.
    """

    def __init__(self, root: Any, *, validator_cls: Any, registry: Any, lookup: Any, draft: int,
                 relaxed: list[tuple[str, str]], documents: list[Any], strict: bool = False) -> None:
        self.root = root
        self.validator_cls = validator_cls
        self.registry = registry
        self.lookup = lookup
        self.draft = draft
        self.relaxed = relaxed
        # subschemas carrying one of these are checked where their value completes: the
        # keywords no grammar expresses, and those this grammar relaxed (a length bound next to
        # a format, anyOf past its branch limit, conflicting allOf values, ...)
        self.keywords = SEMANTIC_KEYWORDS | {k for k, _ in relaxed if k not in ("$ref", "*")}
        # strict: the grammar enforces (almost) nothing (the fallback): every subschema that must
        # apply is checked when its value completes, and undeclared keys under
        # additionalProperties: false are refused when the key completes
        self.strict = strict
        self.per_path = not any(_walk(d, frozenset(["$dynamicRef", "$recursiveRef"])) for d in documents)
        self._validators: dict[int, Any] = {}
        self._at: dict[tuple, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}
        self._verdicts: dict[tuple, bool] = {}

    # ---- which subschemas must apply where ---------------------------------------------------
    def _expand(self, s: Any, out: list[Any], seen: set[int]) -> None:
        if not isinstance(s, dict) or id(s) in seen:
            if s is False:
                out.append(s)
            return
        seen.add(id(s))
        ref = s.get("$ref")
        if isinstance(ref, str):
            try:
                target = self.lookup(ref)
            except Exception:  # noqa: BLE001 - unresolvable refs were reported at compile time
                target = True
            self._expand(target, out, seen)
            if self.draft <= 7:
                return  # siblings of $ref are ignored before 2019-09
        out.append(s)
        for b in s.get("allOf", ()):
            self._expand(b, out, seen)

    def _children(self, s: dict, step: Any) -> list[Any]:
        if isinstance(step, str):
            props = s.get("properties") or {}
            out = [props[step]] if step in props else []
            for pat, sub in (s.get("patternProperties") or {}).items():
                try:
                    if re.search(pat, step):
                        out.append(sub)
                except re.error:
                    pass
            if not out and "additionalProperties" in s:
                out.append(s["additionalProperties"])
            return out
        items = s.get("items")
        if self.draft >= 2020:
            prefix = s.get("prefixItems") or []
            if step < len(prefix):
                return [prefix[step]]
            return [items] if items is not None else []
        if isinstance(items, list):
            if step < len(items):
                return [items[step]]
            return [s["additionalItems"]] if "additionalItems" in s else []
        return [items] if items is not None else []

    def _must_apply(self, path: tuple) -> list[Any]:
        cur: list[Any] = []
        self._expand(self.root, cur, set())
        for step in path:
            nxt: list[Any] = []
            seen: set[int] = set()
            for s in cur:
                if isinstance(s, dict):
                    for c in self._children(s, step):
                        self._expand(c, nxt, seen)
            cur = nxt
            if not cur:
                break
        return cur

    def schemas_at(self, path: tuple) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """(subschemas to validate a completed value at ``path`` against, reduced array-prefix
        schemas to validate the array at ``path`` against after each completed item)."""
        hit = self._at.get(path)
        if hit is not None:
            return hit
        whole: list[Any] = []
        prefix: list[Any] = []
        if self.per_path:
            for s in self._must_apply(path):
                if s is False:
                    whole.append(s)
                    continue
                if not (self.keywords & s.keys() or (self.strict and s)):
                    continue
                whole.append(s)
                if s.get("uniqueItems") is True:
                    prefix.append({"uniqueItems": True})
                if "contains" in s and isinstance(s.get("maxContains"), int):
                    prefix.append({"contains": s["contains"], "minContains": 0,
                                   "maxContains": s["maxContains"]})
        out = (tuple(whole), tuple(prefix))
        self._at[path] = out
        return out

    # ---- verdicts -----------------------------------------------------------------------------
    def _validator(self, s: Any) -> Any:
        v = self._validators.get(id(s))
        if v is None:
            v = self.validator_cls(s, registry=self.registry)
            self._validators[id(s)] = v
        return v

    def _valid(self, schemas: tuple[Any, ...], raw: bytes, key: tuple) -> bool:
        hit = self._verdicts.get(key)
        if hit is None:
            try:
                value = json.loads(raw)
            except ValueError:
                hit = False
            else:
                hit = all(self._validator(s).is_valid(value) for s in schemas)
            self._verdicts[key] = hit
        return hit

    def value_ok(self, path: tuple, raw: bytes) -> bool:
        """Whether the completed value ``raw`` at ``path`` passes the checks there."""
        if not path:
            return self.document_ok(raw)
        schemas = self.schemas_at(path)[0]
        return not schemas or self._valid(schemas, raw, (0, path, raw))

    def array_prefix_ok(self, path: tuple, raw_prefix: bytes) -> bool:
        """Whether the array at ``path``, written up to a completed item (``raw_prefix`` starts
        at ``[``), can still pass its prefix-closed checks (uniqueItems, maxContains)."""
        schemas = self.schemas_at(path)[1]
        return not schemas or self._valid(schemas, raw_prefix + b"]", (1, path, raw_prefix))

    def key_ok(self, path: tuple, key: str) -> bool:
        """Whether the object at ``path`` may hold ``key`` (``additionalProperties: false``)."""
        hit = self._verdicts.get((3, path, key))
        if hit is None:
            hit = True
            for s in self._must_apply(path) if self.per_path else ():
                if isinstance(s, dict) and s.get("additionalProperties") is False:
                    declared = key in (s.get("properties") or {})
                    patterned = any(_search(p, key) for p in (s.get("patternProperties") or {}))
                    if not (declared or patterned):
                        hit = False
                        break
            self._verdicts[(3, path, key)] = hit
        return hit

    def document_ok(self, raw: bytes) -> bool:
        """Whether the whole text ``raw`` is a JSON document valid against the root schema."""
        return self._valid((self.root,), raw, (2, raw.strip()))

    # ---- the scanner --------------------------------------------------------------------------
    def advance(self, state: State, data: bytes) -> State | None:
        """The scanner state after ``data``, or None when a value completed in ``data`` fails
        its checks (or repeats an object key). ``data`` must keep the text a JSON prefix."""
        text, frames, scal = state
        p0 = len(text)
        text = text + data
        for j in range(p0, len(text)):
            b = text[j]
            if scal is not None:
                kind = scal[0]
                if kind == "str" or kind == "key":
                    if scal[2]:
                        scal = (kind, scal[1], False)
                    elif b == 0x5C:
                        scal = (kind, scal[1], True)
                    elif b == 0x22:
                        start = scal[1]
                        scal = None
                        if kind == "key":
                            k = json.loads(text[start:j + 1])
                            top = frames[-1]
                            if k in top[5] or (self.strict and not self.key_ok(top[2], k)):
                                return None
                            frames = frames[:-1] + ((top[0], top[1], top[2], top[3], k, top[5] | {k}),)
                        elif not self._done(frames, text, start, j + 1):
                            return None
                    continue
                if kind == "lit":
                    if j + 1 == scal[2]:
                        start = scal[1]
                        scal = None
                        if not self._done(frames, text, start, j + 1):
                            return None
                    continue
                if b in _NUM:  # kind == "num"
                    continue
                start = scal[1]
                scal = None
                if not self._done(frames, text, start, j):
                    return None
            if b in _WS or b == 0x3A:  # whitespace, ':'
                continue
            if b == 0x22:
                top = frames[-1] if frames else None
                if top is not None and top[0] == _OBJ and top[4] is None:
                    scal = ("key", j, False)
                else:
                    scal = ("str", j, False)
            elif b == 0x7B or b == 0x5B:  # '{' '['
                frames = frames + ((_OBJ if b == 0x7B else _ARR, j, _child(frames), 0, None,
                                    frozenset()),)
            elif b == 0x2C:  # ','
                top = frames[-1]
                if top[0] == _OBJ:
                    frames = frames[:-1] + ((top[0], top[1], top[2], top[3], None, top[5]),)
                else:
                    frames = frames[:-1] + ((top[0], top[1], top[2], top[3] + 1, None, top[5]),)
            elif b == 0x7D or b == 0x5D:  # '}' ']'
                top = frames[-1]
                frames = frames[:-1]
                if not self.value_ok(top[2], text[top[1]:j + 1]):
                    return None
                if frames and frames[-1][0] == _ARR and not self._item_done(frames, text, j + 1):
                    return None
            elif b in _LIT_LEN:
                scal = ("lit", j, j + _LIT_LEN[b])
            else:
                scal = ("num", j)
        return (text, frames, scal)

    def _done(self, frames: tuple, text: bytes, start: int, end: int) -> bool:
        """A scalar value ``text[start:end]`` completed inside ``frames``."""
        if not self.value_ok(_child(frames), text[start:end]):
            return False
        return not frames or frames[-1][0] != _ARR or self._item_done(frames, text, end)

    def _item_done(self, frames: tuple, text: bytes, end: int) -> bool:
        top = frames[-1]
        return self.array_prefix_ok(top[2], text[top[1]:end])

    def can_complete(self, state: State, token_classes: TokenClasses) -> np.ndarray:
        """Which tokens may complete a value (or a key) from ``state``: the only ones whose
        check can differ from the grammar's."""
        scal = state[2]
        if scal is None:
            return token_classes.completing
        if scal[0] == "num":
            return token_classes.non_number
        if scal[0] == "lit":
            return token_classes.any
        return token_classes.quote


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return True  # unknown to Python: do not refuse on it


def _child(frames: tuple) -> tuple:
    """The path of the value that starts next inside ``frames``."""
    if not frames:
        return ()
    top = frames[-1]
    return top[2] + ((top[4],) if top[0] == _OBJ else (top[3],))


@dataclass(frozen=True)
class TokenClasses:
    """Per-vocabulary token classes for :meth:`SchemaChecks.can_complete` (bool per token id)."""

    any: np.ndarray
    quote: np.ndarray
    completing: np.ndarray
    non_number: np.ndarray


_CLASSES: dict[str, TokenClasses] = {}


def token_classes(vocab: Any) -> TokenClasses:
    hit = _CLASSES.get(vocab.fingerprint)
    if hit is not None:
        return hit
    n = vocab.size
    any_ = np.zeros(n, dtype=bool)
    quote = np.zeros(n, dtype=bool)
    completing = np.zeros(n, dtype=bool)
    non_number = np.zeros(n, dtype=bool)
    for t, tok in enumerate(vocab.tokens):
        if not tok or vocab.special[t]:
            continue
        any_[t] = True
        quote[t] = 0x22 in tok
        completing[t] = any(b in _COMPLETING for b in tok)
        non_number[t] = any(b not in _NUM for b in tok)
    out = TokenClasses(any_, quote, completing, non_number)
    _CLASSES[vocab.fingerprint] = out
    return out


_AUTOMATON_LEVEL = frozenset(
    ["dfa", "masks", "mask_row", "next_state", "token_transitions", "torch_masks",
     "compute_masks", "few_allowed_tokens", "cfg", "fill"])


class CheckedCompiledGrammar:
    """A compiled JSON Schema grammar whose matchers also run the schema's semantic checks.
    Every other attribute is the inner compiled grammar's (``vocab``, ``compile_seconds``...)."""

    def __init__(self, inner: Any, checks: SchemaChecks, grammar: Any) -> None:
        self.inner = inner
        self.checks = checks
        self.grammar = grammar
        self.classes = token_classes(inner.vocab)

    def __getattr__(self, name: str) -> Any:
        if name in _AUTOMATON_LEVEL:
            # reading the automaton directly would skip the checks: only matchers are exact
            raise AttributeError(
                f"{name!r}: a JSON Schema with semantic checks ({self.checks.relaxed[0][0]!r} at "
                f"{self.checks.relaxed[0][1] or '/'!r}) is only exact through .matcher()")
        return getattr(self.inner, name)

    def matcher(self) -> CheckedMatcher:
        return CheckedMatcher(self, self.inner.matcher())


class CheckedMatcher:
    """The grammar's matcher plus the semantic checks (same interface as
    :class:`grammars.compiled.Matcher`; ``fork`` is O(1), history is a persistent list)."""

    __slots__ = ("_g", "_hist", "_inner", "_state")

    def __init__(self, compiled: CheckedCompiledGrammar, inner: Any) -> None:
        self._g = compiled
        self._inner = inner
        self._state: State = START
        self._hist: tuple | None = None

    # ---- queries ------------------------------------------------------------------------------
    def is_accepting(self) -> bool:
        return self._inner.is_accepting() and self._g.checks.document_ok(self._state[0])

    def is_terminated(self) -> bool:
        return self._inner.is_terminated()

    def is_error(self) -> bool:
        if self._inner.is_terminated():
            return False
        row = np.zeros((1, (self._g.vocab.size + 31) // 32), dtype=np.int32)
        self.fill_next_token_bitmask(row)
        return not row.any()

    def check_token(self, token_id: int) -> bool:
        if not self._inner.check_token(token_id):
            return False
        g = self._g
        if token_id in g.vocab.eos_token_ids:
            return g.checks.document_ok(self._state[0])
        return g.checks.advance(self._state, g.vocab.tokens[token_id]) is not None

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> None:
        g = self._g
        words = np.zeros((1, (g.vocab.size + 31) // 32), dtype=np.int32)
        self._inner.fill_next_token_bitmask(words, 0)
        if not self._inner.is_terminated():
            flat = words[0].view(np.uint32)
            bits = np.unpackbits(flat.view(np.uint8), bitorder="little")[: g.vocab.size]
            ids = np.flatnonzero(bits)
            cand = ids[g.checks.can_complete(self._state, g.classes)[ids]]
            for t in cand.tolist():
                if g.checks.advance(self._state, g.vocab.tokens[t]) is None:
                    flat[t >> 5] &= np.uint32(~(1 << (t & 31)) & 0xFFFFFFFF)
            if self._inner.is_accepting() and not g.checks.document_ok(self._state[0]):
                for e in g.vocab.eos_token_ids:
                    flat[e >> 5] &= np.uint32(~(1 << (e & 31)) & 0xFFFFFFFF)
        write_bitmask_row(bitmask, row, words[0])

    def few_allowed_tokens(self) -> tuple[int, ...] | None:
        inner = getattr(self._inner, "few_allowed_tokens", None)
        few = inner() if inner is not None else None
        if few is None:
            return None
        return tuple(t for t in few if self.check_token(t))

    def forced_bytes(self) -> bytes:
        forced = self._inner.forced_bytes()
        if forced and self._g.checks.advance(self._state, forced) is None:
            return b""
        return forced

    # ---- updates ------------------------------------------------------------------------------
    def accept_token(self, token_id: int) -> bool:
        g = self._g
        if token_id in g.vocab.eos_token_ids:
            if not g.checks.document_ok(self._state[0]):
                return False
            nxt: State | None = self._state
        else:
            if not self._inner.check_token(token_id):
                return False
            nxt = g.checks.advance(self._state, g.vocab.tokens[token_id])
            if nxt is None:
                return False
        if not self._inner.accept_token(token_id):
            return False
        self._hist = (self._state, self._hist)
        self._state = nxt
        return True

    def accept_bytes(self, data: bytes) -> bool:
        if self._inner.is_terminated():
            return False
        try:
            nxt = self._g.checks.advance(self._state, data)
        except (IndexError, ValueError):  # not a JSON prefix: the grammar refuses it too
            nxt = None
        if nxt is None or not self._inner.accept_bytes(data):
            return False
        self._hist = (self._state, self._hist)
        self._state = nxt
        return True

    def accept_string(self, text: str) -> bool:
        return self.accept_bytes(text.encode("utf-8"))

    def rollback(self, n_tokens: int = 1) -> None:
        self._inner.rollback(n_tokens)
        for _ in range(n_tokens):
            assert self._hist is not None
            self._state, self._hist = self._hist

    def reset(self) -> None:
        self._inner.reset()
        self._state = START
        self._hist = None

    def fork(self) -> CheckedMatcher:
        m = CheckedMatcher.__new__(CheckedMatcher)
        m._g = self._g
        m._inner = self._inner.fork()
        m._state = self._state
        m._hist = self._hist
        return m
