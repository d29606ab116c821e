"""The one grammar form every constraint lowers into.

A grammar is a set of named rules over byte-level expression nodes. JSON Schemas, regexes, choices
and (later) Lark/GBNF grammars all lower into it; the automaton builders consume only this form.

Nodes are immutable and compared by identity (``eq=False``): the compilers share sub-nodes on
purpose, and the NFA builder shares the automaton of a node wherever it reappears with the same
continuation. ``fingerprint()`` gives a structural hash for caching.

Node kinds:
- ``Lit(data)``: the exact byte string ``data`` (``Lit(b"")`` is the empty string).
- ``Bytes(ranges)``: one byte in any of the inclusive ranges ``((lo, hi), ...)``.
- ``Seq(items)``: concatenation. ``Alt(items)``: union (``Alt(())`` is the empty language).
- ``Repeat(item, lo, hi)``: ``lo`` to ``hi`` copies (``hi=None``: unbounded).
- ``Ref(name)``: the rule ``name``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EMPTY",
    "NOTHING",
    "Alt",
    "Automaton",
    "Bytes",
    "Lit",
    "Node",
    "Ref",
    "Repeat",
    "Rules",
    "Seq",
    "alt",
    "fingerprint",
    "lit",
    "opt",
    "plus",
    "repeat",
    "seq",
    "star",
]


class Node:
    """Base class of grammar expression nodes."""

    __slots__ = ()


@dataclass(frozen=True, eq=False, slots=True)
class Lit(Node):
    data: bytes


@dataclass(frozen=True, eq=False, slots=True)
class Bytes(Node):
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, eq=False, slots=True)
class Seq(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Alt(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Repeat(Node):
    item: Node
    lo: int
    hi: int | None


@dataclass(frozen=True, eq=False, slots=True)
class Ref(Node):
    name: str


@dataclass(frozen=True, eq=False, slots=True)
class Automaton(Node):
    """A byte DFA embedded as a node (``trans`` int32 (n, 256), -1 dead; state 0 start).

    Used for languages built by automaton operations (intersection, difference) that have no
    compact expression form: several ``pattern``s on one string, a pattern with a length bound.
    """

    trans: Any
    accepting: Any


EMPTY: Node = Lit(b"")
NOTHING: Node = Alt(())


def _is_nothing(n: Node) -> bool:
    return isinstance(n, Alt) and not n.items


def _is_empty(n: Node) -> bool:
    return isinstance(n, Lit) and not n.data


def lit(data: bytes | str) -> Node:
    return Lit(data.encode("utf-8") if isinstance(data, str) else bytes(data))


def seq(*items: Node) -> Node:
    """Concatenation with flattening, literal merging and NOTHING absorption."""
    out: list[Node] = []
    for it in items:
        parts: Iterable[Node] = it.items if type(it) is Seq else (it,)  # type: ignore[attr-defined]
        for p in parts:
            kind = type(p)
            if kind is Lit:
                if not p.data:  # type: ignore[attr-defined]
                    continue
                if out and type(out[-1]) is Lit:
                    out[-1] = Lit(out[-1].data + p.data)  # type: ignore[attr-defined]
                    continue
            elif kind is Alt and not p.items:  # type: ignore[attr-defined]
                return NOTHING
            out.append(p)
    if not out:
        return EMPTY
    if len(out) == 1:
        return out[0]
    return Seq(tuple(out))


def alt(*items: Node) -> Node:
    """Union with flattening; drops NOTHING and identical (same object) duplicates."""
    out: list[Node] = []
    seen: set[int] = set()
    for it in items:
        parts: Iterable[Node] = it.items if isinstance(it, Alt) else (it,)
        for p in parts:
            if id(p) in seen:
                continue
            seen.add(id(p))
            out.append(p)
    if len(out) == 1:
        return out[0]
    return Alt(tuple(out))


def repeat(item: Node, lo: int, hi: int | None) -> Node:
    if hi is not None and hi < lo:
        return NOTHING
    if hi == 0 or _is_empty(item):
        return EMPTY
    if _is_nothing(item):
        return EMPTY if lo == 0 else NOTHING
    if lo == 1 and hi == 1:
        return item
    return Repeat(item, lo, hi)


def opt(item: Node) -> Node:
    return repeat(item, 0, 1)


def star(item: Node) -> Node:
    return repeat(item, 0, None)


def plus(item: Node) -> Node:
    return repeat(item, 1, None)


@dataclass
class Rules:
    """Named rules plus the start rule: the one grammar form."""

    rules: dict[str, Node] = field(default_factory=dict)
    start: str = "start"

    def walk(self) -> Iterator[Node]:
        """Every node reachable from every rule (each object once)."""
        seen: set[int] = set()
        stack = list(self.rules.values())
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            yield n
            if isinstance(n, (Seq, Alt)):
                stack.extend(n.items)
            elif isinstance(n, Repeat):
                stack.append(n.item)


def fingerprint(rules: Rules) -> str:
    """Structural sha256 of a grammar (equal structure -> equal fingerprint, sharing ignored)."""
    h = hashlib.sha256()
    memo: dict[int, bytes] = {}

    def digest(n: Node) -> bytes:
        key = id(n)
        if key in memo:
            return memo[key]
        if isinstance(n, Lit):
            d = b"L" + n.data
        elif isinstance(n, Bytes):
            d = b"B" + repr(n.ranges).encode()
        elif isinstance(n, Seq):
            d = b"S" + b"".join(digest(i) for i in n.items)
        elif isinstance(n, Alt):
            d = b"A" + b"".join(digest(i) for i in n.items)
        elif isinstance(n, Repeat):
            d = b"R" + f"{n.lo},{n.hi}".encode() + digest(n.item)
        elif isinstance(n, Ref):
            d = b"F" + n.name.encode()
        elif isinstance(n, Automaton):
            d = b"D" + n.trans.tobytes() + n.accepting.tobytes()
        else:  # pragma: no cover
            raise TypeError(type(n))
        out = hashlib.sha256(d).digest()
        memo[key] = out
        return out

    h.update(rules.start.encode() + b"\0")
    for name in sorted(rules.rules):
        h.update(name.encode() + b"\0" + digest(rules.rules[name]))
    return h.hexdigest()
