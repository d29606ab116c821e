"""Where-clauses -> one constraint per hole, compiled into byte automata (grammars.automaton).

Every hole gets a :class:`HoleSpec`: a byte-level language (a trimmed DFA built with
``grammars.automaton.dfa_of`` / ``product``: regex AND choices AND length AND stops...), token-count
bounds, the STOPS_BEFORE phrases to strip from the value, and the value's type. The language is the
exact set of values the hole may take, so its token mask is exact and computed eagerly.

Semantics (``X`` a hole, ``s`` a string, ``n`` an int, ``Σ*`` any text):

- ``X in [s1, s2, ...]`` / ``X in set(...)``: one of the strings. ``X == s``: exactly ``s``.
- ``REGEX(X, r)``: ``r`` matches the whole value. ``INT(X)`` / ``[X: int]``: `` ?-?[0-9]+`` (an
  optional leading space, as models write numbers after a word), the value is an ``int``.
- ``s in X``: ``Σ* s Σ*``. ``len(X) op n``: the number of characters. ``len(WORDS(X)) op n``: the
  number of maximal runs of non-white-space characters.
- ``STOPS_AT(X, s)``: the hole ends right after the first ``s`` (or at EOS): the language is
  ``Σ* − Σ* s Σ+``, so once ``s`` is written no token may follow (tokens that would run past ``s``
  are masked). ``STOPS_BEFORE(X, s)``: the same, and ``s`` is removed from the value and the prompt.
- ``len(TOKENS(X)) op n``: bounds on the number of generated tokens (EOS excluded); enforced by the
  runner's mask (see :class:`decoding.query.runtime.HoleMatcher`), not by the byte language.
- ``type(X) is T`` / ``[X: T]``: JSON for the schema of ``T`` (pydantic model, dataclass, or a JSON
  Schema dict); the value is parsed into ``T``.
- ``and`` / ``or`` / ``not`` combine languages of one hole (product / union / difference of
  automata). STOPS_*, TOKENS bounds and types are only allowed in top-level conjunctions, and a
  disjunction must talk about one hole: anything else raises :class:`UnsupportedConstraintError`.

An empty language raises :class:`ContradictoryConstraintError` (e.g. ``X in ["a"] and len(X) > 3``).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from decoding.query.errors import (
    ContradictoryConstraintError,
    ExternalToolError,
    NotAHoleError,
    QueryError,
    UnknownVariableError,
    UnsupportedConstraintError,
)
from grammars import EmptyLanguageError
from grammars import charclass as cc
from grammars.automaton import Dfa, build_dfa, dfa_of, product
from grammars.ir import Automaton, Node, alt, lit, repeat, seq, star

__all__ = [
    "ANY",
    "CONSTRAINT_FUNCTIONS",
    "Deferred",
    "HoleSpec",
    "Lang",
    "Opaque",
    "compile_where",
    "int_lang",
    "literal_env",
    "opaque_env",
    "regex_lang",
    "schema_lang",
]

# ---- languages: a Dfa, ANY (every text) or EMPTY ----------------------------------------------------


class _Special:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ANY = _Special("ANY")
EMPTY = _Special("EMPTY")
Lang = Any  # Dfa | ANY | EMPTY

_CHAR: Node = cc.utf8_node(cc.ANY)
_ANYSTAR: Node = star(_CHAR)
_WS_SET = cc.normalize([(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
                        (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
                        (0x3000, 0x3000)])  # Python's str.isspace() for the non-control ranges
_WS: Node = cc.utf8_node(_WS_SET)
_NWS: Node = cc.utf8_node(cc.complement(_WS_SET))
_ANY_DFA: list[Dfa] = []


def _any_dfa() -> Dfa:
    if not _ANY_DFA:
        _ANY_DFA.append(dfa_of(_ANYSTAR))
    return _ANY_DFA[0]


def of_node(node: Node) -> Lang:
    try:
        return dfa_of(node)
    except EmptyLanguageError:
        return EMPTY


def land(a: Lang, b: Lang) -> Lang:
    if a is EMPTY or b is EMPTY:
        return EMPTY
    if a is ANY:
        return b
    if b is ANY:
        return a
    try:
        return product(a, b, op="and")
    except EmptyLanguageError:
        return EMPTY


def lor(a: Lang, b: Lang) -> Lang:
    if a is ANY or b is ANY:
        return ANY
    if a is EMPTY:
        return b
    if b is EMPTY:
        return a
    return of_node(alt(as_node(a), as_node(b)))


def lnot(a: Lang) -> Lang:
    if a is ANY:
        return EMPTY
    if a is EMPTY:
        return ANY
    try:
        return product(_any_dfa(), a, op="diff")
    except EmptyLanguageError:
        return EMPTY


def as_node(a: Lang) -> Node:
    if a is ANY:
        return _ANYSTAR
    if a is EMPTY:
        return alt()
    return Automaton(a.trans, a.accepting)


def regex_lang(pattern: str) -> Lang:
    from grammars.regex import regex_to_node

    return of_node(regex_to_node(pattern, mode="fullmatch"))


INT_PATTERN = r" ?-?[0-9]+"


def int_lang() -> Lang:
    return regex_lang(INT_PATTERN)


def schema_lang(schema: Any) -> Lang:
    """The JSON texts of ``schema`` (dict, pydantic model, or dataclass) as a byte DFA."""
    from grammars import Grammar

    if isinstance(schema, type):
        # a class means exactly its fields (as LMQL's type constraints): no extra properties
        if hasattr(schema, "model_json_schema"):
            schema = schema.model_json_schema()
        else:
            from pydantic import TypeAdapter

            schema = TypeAdapter(schema).json_schema()
        schema = _closed(schema)
    g = Grammar.from_json_schema(schema)
    if g.semantic is not None:
        keyword, pointer = g.semantic.relaxed[0]
        raise UnsupportedConstraintError(
            f"a query hole's type must be a regular language: the schema's {keyword!r} at "
            f"{pointer or '/'!r} needs the semantic checks of generate(schema=...)")
    try:
        return build_dfa(g.rules)
    except EmptyLanguageError:
        return EMPTY


def _closed(schema: Any) -> Any:
    """``additionalProperties: false`` on every object schema that does not say otherwise."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _count_lang(kind: str, lo: int, hi: int | None) -> Lang:
    """Values whose length (characters or words) lies in [lo, hi]."""
    if hi is not None and hi < lo:
        return EMPTY
    if kind == "chars":
        return of_node(repeat(_CHAR, lo, hi))
    # words: ws* (word ws+)* [word ws*]  with the number of words in [lo, hi]
    word = repeat(_NWS, 1, None)
    ws0 = star(_WS)
    ws1 = repeat(_WS, 1, None)
    if hi == 0:
        return of_node(ws0)
    # k words = ws0 (word ws1){k-1} word ws0 for k >= 1
    def exactly_up(lo_: int, hi_: int | None) -> Node:
        inner = repeat(seq(word, ws1), max(lo_ - 1, 0), None if hi_ is None else hi_ - 1)
        return seq(ws0, inner, word, ws0)

    parts = [exactly_up(max(lo, 1), hi)]
    if lo == 0:
        parts.append(ws0)
    return of_node(alt(*parts))


def contains_lang(s: str) -> Lang:
    return of_node(seq(_ANYSTAR, lit(s), _ANYSTAR))


def stop_lang(s: str) -> Lang:
    """Texts in which ``s`` occurs at most at the very end: ``Σ* − Σ* s Σ+``."""
    if not s:
        raise UnsupportedConstraintError("a stop phrase must not be empty")
    return lnot(of_node(seq(_ANYSTAR, lit(s), repeat(_CHAR, 1, None))))


# ---- hole specs --------------------------------------------------------------------------------


@dataclass
class HoleSpec:
    """Everything the runner needs to decode one hole."""

    name: str
    lang: Lang = ANY
    min_tokens: int = 0
    max_tokens: int | None = None  # inclusive
    stops_at: list[str] = field(default_factory=list)
    stops_before: list[str] = field(default_factory=list)
    value_type: Any = None  # None (str) | int | a schema type / dict
    line: int | None = None
    column: int | None = None

    def check(self) -> None:
        if self.lang is EMPTY:
            raise ContradictoryConstraintError(
                self.name,
                f"the constraints on {self.name} contradict each other: no value satisfies them "
                "(their automaton product is empty)",
                line=self.line,
                column=self.column,
            )
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ContradictoryConstraintError(
                self.name,
                f"the token-length bounds on {self.name} are contradictory "
                f"(at least {self.min_tokens}, at most {self.max_tokens})",
                line=self.line,
                column=self.column,
            )
        if (self.max_tokens is not None and self.max_tokens == 0 and isinstance(self.lang, Dfa)
                and not self.lang.accepting[0]):
            raise ContradictoryConstraintError(
                self.name, f"{self.name} must be empty (0 tokens) but its language excludes ''",
                line=self.line, column=self.column)

    @property
    def stops(self) -> list[str]:
        return list(self.stops_at) + list(self.stops_before)

    def generation_lang(self) -> Lang:
        """The language of the generated text: the value language, or a value that ends with a
        stop phrase followed by anything (the rest of the token that completed the phrase: the
        runner ends the hole there and cuts the text, as LMQL does)."""
        if not self.stops or self.lang is EMPTY:
            return self.lang
        ends = of_node(alt(*(seq(_ANYSTAR, lit(s)) for s in self.stops)))
        stopped = land(self.lang, ends)
        if stopped is EMPTY:
            return self.lang
        return lor(self.lang, of_node(seq(as_node(stopped), _ANYSTAR)))

    def key(self) -> tuple:
        lang = self.lang if not isinstance(self.lang, Dfa) else (
            self.lang.trans.tobytes(), self.lang.accepting.tobytes())
        return (repr(lang) if isinstance(lang, _Special) else lang, self.min_tokens,
                self.max_tokens, tuple(self.stops_before))


class Opaque:
    """An operand known only at run time (static checks of targets and function names only)."""

    def __repr__(self) -> str:
        return "<run-time value>"


def opaque_env(node: ast.expr) -> Any:
    return Opaque()


class Deferred(Exception):
    """An operand needs run-time values (a variable of the program); compile when the hole runs."""


# ---- the compiler ------------------------------------------------------------------------------

#: constraint functions (lower-case) -> arity description, for messages and static checks
CONSTRAINT_FUNCTIONS = {
    "stops_at": 2, "stops_before": 2, "int": 1, "regex": 2, "tokens": 1, "words": 1, "len": 1,
    "type": 1,
}

#: functions of LMQL's library that call external tools or services
EXTERNAL_FUNCTIONS = {"inline_use", "calc", "wiki", "wikipedia", "search", "bing", "google",
                      "chatgpt", "openai", "gpt4"}


def _loc(node: ast.AST, shift: Callable[[int, int], tuple[int, int]] | None) -> dict[str, int]:
    line, col = getattr(node, "lineno", None), getattr(node, "col_offset", None)
    if line is None:
        return {}
    if shift is not None:
        line, col = shift(line, col)
        return {"line": line, "column": col}
    return {"line": line, "column": (col or 0) + 1}


def _fname(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            return f.id.lower()
        if isinstance(f, ast.Attribute):
            return f.attr.lower()
    return None


class _Compiler:
    def __init__(
        self,
        holes: dict[str, tuple[int, int]],
        env: Callable[[ast.expr], Any],
        known: Callable[[str], bool],
        shift: Callable[[int, int], tuple[int, int]] | None,
        imported_from: dict[str, str],
    ) -> None:
        self.holes = holes
        self.env = env
        self.known = known
        self.shift = shift
        self.imported_from = imported_from
        self.specs: dict[str, HoleSpec] = {}

    # -- helpers --
    def err(self, cls: type[QueryError], msg: str, node: ast.AST, **kw: Any) -> QueryError:
        return cls(msg, **kw, **_loc(node, self.shift)) if kw else cls(msg, **_loc(node, self.shift))

    def spec(self, name: str) -> HoleSpec:
        s = self.specs.get(name)
        if s is None:
            line, col = self.holes[name]
            s = self.specs[name] = HoleSpec(name, line=line, column=col)
        return s

    def target(self, node: ast.AST, what: str) -> str:
        """The hole a constraint function or operator talks about (a Name that is a hole)."""
        if isinstance(node, ast.Name):
            if node.id in self.holes:
                return node.id
            if self.known(node.id):
                raise NotAHoleError(
                    node.id,
                    f"{what} constrains {node.id!r}, which is not a hole of this prompt "
                    f"(holes here: {', '.join(sorted(self.holes)) or 'none'})",
                    **_loc(node, self.shift),
                )
            raise UnknownVariableError(
                node.id,
                f"unknown variable {node.id!r} in {what} (holes here: "
                f"{', '.join(sorted(self.holes)) or 'none'})",
                **_loc(node, self.shift),
            )
        raise self.err(UnsupportedConstraintError,
                       f"{what} must apply to a hole variable, got {ast.unparse(node)!r}", node)

    def value(self, node: ast.expr) -> Any:
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in self.holes:
                raise self.err(UnsupportedConstraintError,
                               f"a constraint cannot compare two holes ({ast.unparse(node)!r})", n)
        return self.env(node)

    def const_str(self, node: ast.expr, what: str) -> str:
        v = self.value(node)
        if isinstance(v, Opaque):
            return "\0"
        if not isinstance(v, str):
            raise self.err(UnsupportedConstraintError, f"{what} needs a string, got {v!r}", node)
        return v

    def const_int(self, node: ast.expr, what: str) -> int:
        v = self.value(node)
        if isinstance(v, Opaque):
            return 1
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(UnsupportedConstraintError, f"{what} needs an integer, got {v!r}", node)
        return v

    def unknown_call(self, node: ast.Call) -> QueryError:
        f = node.func
        name = f.id if isinstance(f, ast.Name) else ast.unparse(f)
        src = self.imported_from.get(name)
        if src == "<nested query>":
            return ExternalToolError(
                name,
                f"the constraint {ast.unparse(node)!r} uses the nested query {name!r} as a "
                "constraint function: a model-evaluated check (a call to another LLM) that this "
                f"engine does not provide (missing function: {name})",
                **_loc(node, self.shift),
            )
        if (src is not None and src.startswith("lmql")) or name.lower() in EXTERNAL_FUNCTIONS:
            return ExternalToolError(
                name,
                f"the constraint {ast.unparse(node)!r} calls {name!r}"
                + (f" (from {src})" if src else "")
                + ", an external tool/service function that this engine does not provide",
                **_loc(node, self.shift),
            )
        return UnsupportedConstraintError(
            f"unknown constraint function {name!r} in {ast.unparse(node)!r} (supported: "
            "STOPS_AT, STOPS_BEFORE, INT, REGEX, len(TOKENS(X)), len(WORDS(X)), len(X), "
            "X in [...], X == '...', 's' in X, type(X) is T)",
            **_loc(node, self.shift),
        )

    # -- top level --
    def compile(self, expr: ast.expr) -> dict[str, HoleSpec]:
        for c in self.conjuncts(expr):
            self.conjunct(c)
        return self.specs

    def conjuncts(self, e: ast.expr) -> list[ast.expr]:
        if isinstance(e, ast.BoolOp) and isinstance(e.op, ast.And):
            return [c for v in e.values for c in self.conjuncts(v)]
        if isinstance(e, ast.Compare) and len(e.ops) > 1:
            parts: list[ast.expr] = []
            left = e.left
            for op, right in zip(e.ops, e.comparators):
                parts.append(ast.copy_location(ast.Compare(left, [op], [right]), e))
                left = right
            return parts
        return [e]

    def conjunct(self, c: ast.expr) -> None:
        f = _fname(c)
        if f in ("stops_at", "stops_before"):
            assert isinstance(c, ast.Call)
            if len(c.args) != 2:
                raise self.err(UnsupportedConstraintError, f"{f.upper()}(X, s) takes 2 arguments", c)
            var = self.target(c.args[0], f.upper())
            s = self.const_str(c.args[1], f.upper())
            sp = self.spec(var)
            sp.lang = land(sp.lang, stop_lang(s))
            (sp.stops_at if f == "stops_at" else sp.stops_before).append(s)
            return
        tok = self.token_bound(c)
        if tok is not None:
            var, lo, hi = tok
            sp = self.spec(var)
            sp.min_tokens = max(sp.min_tokens, lo)
            if hi is not None:
                sp.max_tokens = hi if sp.max_tokens is None else min(sp.max_tokens, hi)
            return
        if (isinstance(c, ast.Compare) and isinstance(c.ops[0], (ast.Is, ast.Eq))
                and _fname(c.left) == "type"):
            assert isinstance(c.left, ast.Call)
            var = self.target(c.left.args[0], "type(X) is T")
            t = self.value(c.comparators[0])
            sp = self.spec(var)
            if isinstance(t, Opaque):
                return
            lang = int_lang() if t is int else (ANY if t is str else schema_lang(t))
            sp.lang = land(sp.lang, lang)
            sp.value_type = t
            return
        var, lang = self.lang(c, positive=True)
        sp = self.spec(var)
        sp.lang = land(sp.lang, lang)
        if _fname(c) == "int":
            sp.value_type = int

    def token_bound(self, c: ast.expr) -> tuple[str, int, int | None] | None:
        """``len(TOKENS(X)) op n`` (either side) -> (X, min, max)."""
        if not isinstance(c, ast.Compare) or len(c.ops) != 1:
            return None
        left, op, right = c.left, c.ops[0], c.comparators[0]
        flip = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.Eq}

        def is_tok(n: ast.expr) -> bool:
            return (_fname(n) == "len" and isinstance(n, ast.Call) and len(n.args) == 1
                    and _fname(n.args[0]) == "tokens")

        if is_tok(right) and type(op) in flip:
            left, right, op = right, left, flip[type(op)]()
        if not is_tok(left):
            return None
        assert isinstance(left, ast.Call) and isinstance(left.args[0], ast.Call)
        var = self.target(left.args[0].args[0], "len(TOKENS(...))")
        n = self.const_int(right, "len(TOKENS(X))")
        if isinstance(op, ast.Lt):
            return var, 0, n - 1
        if isinstance(op, ast.LtE):
            return var, 0, n
        if isinstance(op, ast.Gt):
            return var, n + 1, None
        if isinstance(op, ast.GtE):
            return var, n, None
        if isinstance(op, ast.Eq):
            return var, n, n
        raise self.err(UnsupportedConstraintError, "len(TOKENS(X)) supports <, <=, >, >=, ==", c)

    def lang(self, e: ast.expr, positive: bool) -> tuple[str, Lang]:
        """A single-hole language expression (and/or/not allowed)."""
        if isinstance(e, ast.BoolOp):
            parts = [self.lang(v, positive) for v in e.values]
            names = {p[0] for p in parts}
            if len(names) > 1:
                raise self.err(UnsupportedConstraintError,
                               f"'{type(e.op).__name__.lower()}' across several holes "
                               f"({', '.join(sorted(names))}) cannot be compiled per hole", e)
            acc = parts[0][1]
            for _, lg in parts[1:]:
                acc = land(acc, lg) if isinstance(e.op, ast.And) else lor(acc, lg)
            return parts[0][0], acc
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            var, lg = self.lang(e.operand, not positive)
            return var, lnot(lg)
        if isinstance(e, ast.Compare):
            if len(e.ops) > 1:
                parts = self.conjuncts(e)
                return self.lang(ast.copy_location(ast.BoolOp(ast.And(), parts), e), positive)
            return self.compare(e)
        if isinstance(e, ast.Call):
            f = _fname(e)
            if f == "int":
                if len(e.args) != 1:
                    raise self.err(UnsupportedConstraintError, "INT(X) takes 1 argument", e)
                return self.target(e.args[0], "INT"), int_lang()
            if f == "regex":
                if len(e.args) != 2:
                    raise self.err(UnsupportedConstraintError, "REGEX(X, pattern) takes 2 arguments", e)
                var = self.target(e.args[0], "REGEX")
                return var, self.regex(self.const_str(e.args[1], "REGEX"), e.args[1])
            if f in ("startswith", "endswith") and isinstance(e.func, ast.Attribute):
                var = self.target(e.func.value, f)
                s = self.const_str(e.args[0], f)
                node = seq(lit(s), _ANYSTAR) if f == "startswith" else seq(_ANYSTAR, lit(s))
                return var, of_node(node)
            if f in ("stops_at", "stops_before", "tokens", "type"):
                raise self.err(UnsupportedConstraintError,
                               f"{f.upper()} is only supported in a top-level conjunction (not under "
                               "'or' or 'not')", e)
            raise self.unknown_call(e)
        raise self.err(UnsupportedConstraintError,
                       f"cannot compile {ast.unparse(e)!r} into a constraint", e)

    def regex(self, pattern: str, node: ast.AST) -> Lang:
        from grammars import GrammarError

        try:
            return regex_lang(pattern)
        except GrammarError as exc:
            raise self.err(UnsupportedConstraintError, str(exc), node) from None

    def compare(self, e: ast.Compare) -> tuple[str, Lang]:
        left, op, right = e.left, e.ops[0], e.comparators[0]
        # X in [...] / X not in [...]
        if isinstance(op, (ast.In, ast.NotIn)) and isinstance(left, ast.Name) and left.id in self.holes:
            vals = self.value(right)
            if isinstance(vals, Opaque):
                vals = ["\0"]
            if isinstance(vals, str):
                raise self.err(UnsupportedConstraintError,
                               "X in 'text' (X a substring) is not supported; use X in [...]", e)
            try:
                items = list(vals)
            except TypeError:
                raise self.err(UnsupportedConstraintError, f"X in ... needs a list, got {vals!r}",
                               right) from None
            if not all(isinstance(v, str) for v in items):
                raise self.err(UnsupportedConstraintError, "X in [...] needs strings", right)
            lg = of_node(alt(*(lit(v) for v in dict.fromkeys(items)))) if items else EMPTY
            return left.id, (lg if isinstance(op, ast.In) else lnot(lg))
        # "s" in X / "s" not in X
        if isinstance(op, (ast.In, ast.NotIn)):
            var = self.target(right, "'...' in X")
            lg = contains_lang(self.const_str(left, "'...' in X"))
            return var, (lg if isinstance(op, ast.In) else lnot(lg))
        # X == "s" / X != "s"
        if isinstance(op, (ast.Eq, ast.NotEq)):
            if isinstance(right, ast.Name) and right.id in self.holes and not (
                isinstance(left, ast.Name) and left.id in self.holes
            ):
                left, right = right, left
            if isinstance(left, ast.Name):
                var = self.target(left, "X == ...")
                lg = of_node(lit(self.const_str(right, "X == ...")))
                return var, (lg if isinstance(op, ast.Eq) else lnot(lg))
        # len(X) op n / len(WORDS(X)) op n
        flip = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.Eq,
                ast.NotEq: ast.NotEq}
        if _fname(right) == "len" and _fname(left) != "len" and type(op) in flip:
            left, right, op = right, left, flip[type(op)]()
        if _fname(left) == "len" and isinstance(left, ast.Call) and len(left.args) == 1:
            arg = left.args[0]
            kind = "chars"
            if _fname(arg) == "words" and isinstance(arg, ast.Call):
                kind, arg = "words", arg.args[0]
            elif _fname(arg) == "tokens":
                raise self.err(UnsupportedConstraintError,
                               "len(TOKENS(X)) is only supported in a top-level conjunction", e)
            var = self.target(arg, f"len({'WORDS(X)' if kind == 'words' else 'X'})")
            n = self.const_int(right, "len(...)")
            bounds = {ast.Lt: (0, n - 1), ast.LtE: (0, n), ast.Gt: (n + 1, None),
                      ast.GtE: (n, None), ast.Eq: (n, n)}
            if isinstance(op, ast.NotEq):
                return var, lnot(_count_lang(kind, n, n))
            if type(op) not in bounds:
                raise self.err(UnsupportedConstraintError, "unsupported comparison of a length", e)
            lo, hi = bounds[type(op)]
            return var, _count_lang(kind, max(lo, 0), hi) if hi is None or hi >= 0 else EMPTY
        raise self.err(UnsupportedConstraintError,
                       f"cannot compile {ast.unparse(e)!r} into a constraint", e)


def compile_where(
    expr: ast.expr,
    holes: dict[str, tuple[int, int]],
    *,
    env: Callable[[ast.expr], Any],
    known: Callable[[str], bool] = lambda name: False,
    shift: Callable[[int, int], tuple[int, int]] | None = None,
    imported_from: dict[str, str] | None = None,
) -> dict[str, HoleSpec]:
    """Compile a where-expression over ``holes`` (name -> (line, column)) into hole specs.

    ``env(node)`` evaluates an operand (raise :class:`Deferred` when it needs run-time values);
    ``known(name)`` tells whether a non-hole name exists (for NotAHoleError vs UnknownVariable).
    Raises the typed errors of :mod:`decoding.query.errors`; does not check emptiness (call
    ``HoleSpec.check()``).
    """
    return _Compiler(holes, env, known, shift, imported_from or {}).compile(expr)


def literal_env(names: dict[str, Any]) -> Callable[[ast.expr], Any]:
    """An operand evaluator over ``names`` and the builtins; unknown names -> :class:`Deferred`."""

    def env(node: ast.expr) -> Any:
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id not in names and not hasattr(builtins, n.id):
                raise Deferred(n.id)
        code = compile(ast.fix_missing_locations(ast.Expression(node)), "<constraint>", "eval")
        try:
            return eval(code, {"__builtins__": builtins}, dict(names))
        except Exception as exc:  # noqa: BLE001
            raise UnsupportedConstraintError(
                f"cannot evaluate {ast.unparse(node)!r}: {type(exc).__name__}: {exc}",
                line=getattr(node, "lineno", None),
            ) from None

    return env
