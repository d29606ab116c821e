"""Grammar nodes -> byte NFA, in numba.

The construction is Thompson's, in continuation-passing style: each node is compiled *before a
known continuation state*, memoized on ``(node, continuation)``, so a node object that reappears
with the same continuation shares its states (the JSON Schema compiler relies on this: e.g. the
"remaining properties" automata of any-order objects are shared, not copied). Right-linear
recursion (a rule that recurs only in tail position, with the same continuation) closes a loop
through a placeholder state; any other recursion is not regular.

The node graph is first flattened into arrays (:func:`flatten`; one Python step per distinct
node object), then :func:`build_nfa` runs the construction in numba (a node is typically built
under many continuations: a string body once per property). The result is a :class:`FlatNfa`
whose state 0 is the final state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.typed import Dict

from grammars.errors import GrammarTooLargeError, InvalidGrammarError
from grammars.ir import Alt, Automaton, Bytes, Lit, Node, Ref, Repeat, Rules, Seq
from grammars.subset import FlatNfa

__all__ = ["NotRegularError", "Program", "build_nfa", "flatten"]

# node kinds
_LIT, _BYTES, _SEQ, _ALT, _REPEAT, _REF, _AUTO = range(7)
# error codes (cnt[3])
_OK, _GROW, _TOO_LARGE, _RECURSIVE, _UNDEFINED = range(5)


class NotRegularError(Exception):
    """The grammar is recursive: it needs the context-free path."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        super().__init__(f"rule {rule!r} is recursive")


@dataclass(frozen=True)
class Program:
    """A node graph as arrays. Node ``i`` has kind ``kind[i]`` and fields ``f[i, 0..4]``:

    - Lit: bytes ``data[f0 : f0 + f1]``;
    - Bytes: ``f1`` inclusive ranges, pairs at ``ints[f0 : f0 + 2 * f1]``;
    - Seq, Alt: ``f1`` child nodes at ``ints[f0 : f0 + f1]``;
    - Repeat: child node ``f0``, ``lo = f1``, ``hi = f2`` (-1: unbounded);
    - Ref: rule ``f0`` (its body is node ``rule_body[f0]``, -1 when the rule is undefined);
    - Automaton: ``f0`` states, ``f2`` edge quadruples ``(src, lo, hi, dst)`` (states relative to
      the automaton) at ``auto[f1 : f1 + 4 * f2]``, ``f4`` accepting states at ``auto[f3 : f3 + f4]``.

    Node 0 is the start: a Ref to the start rule.
    """

    kind: np.ndarray
    f: np.ndarray
    data: np.ndarray
    ints: np.ndarray
    auto: np.ndarray
    rule_body: np.ndarray
    rule_names: tuple[str, ...]
    roots: tuple[int, ...] = ()


def flatten(rules: Rules, roots: Sequence[Node] = ()) -> Program:
    """The node graph reachable from the start rule, and from the extra ``roots``, as a
    :class:`Program` (each node object once; node 0 is ``Ref(rules.start)``, the roots' nodes
    are ``Program.roots``)."""
    ids: dict[int, int] = {}
    kind: list[int] = []
    fields: list[int] = []  # five per node
    data = bytearray()
    ints: list[int] = []
    autos: list[np.ndarray] = []
    auto_len = [0]
    rule_index: dict[str, int] = {}
    names: list[str] = []

    def node(n: Node) -> int:  # one branch per node kind, dispatched on type() for speed
        i = ids.get(id(n))
        if i is not None:
            return i
        t = type(n)
        if t is Lit:
            kind.append(_LIT)
            fields.extend((len(data), len(n.data), 0, 0, 0))  # type: ignore[attr-defined]
            data.extend(n.data)  # type: ignore[attr-defined]
        elif t is Seq or t is Alt:
            kids = [node(x) for x in n.items]  # type: ignore[attr-defined]
            kind.append(_SEQ if t is Seq else _ALT)
            fields.extend((len(ints), len(kids), 0, 0, 0))
            ints.extend(kids)
        elif t is Bytes:
            kind.append(_BYTES)
            fields.extend((len(ints), len(n.ranges), 0, 0, 0))  # type: ignore[attr-defined]
            for lo, hi in n.ranges:  # type: ignore[attr-defined]
                ints.append(lo)
                ints.append(hi)
        elif t is Repeat:
            child = node(n.item)  # type: ignore[attr-defined]
            kind.append(_REPEAT)
            fields.extend((child, n.lo, -1 if n.hi is None else n.hi, 0, 0))  # type: ignore[attr-defined]
        elif t is Ref:
            r = rule_index.get(n.name)  # type: ignore[attr-defined]
            if r is None:
                r = rule_index[n.name] = len(names)  # type: ignore[attr-defined]
                names.append(n.name)  # type: ignore[attr-defined]
            kind.append(_REF)
            fields.extend((r, 0, 0, 0, 0))
        elif t is Automaton:
            quads, acc = _automaton_edges(n)  # type: ignore[arg-type]
            kind.append(_AUTO)
            fields.extend((int(n.trans.shape[0]), auto_len[0], len(quads) // 4,  # type: ignore[attr-defined]
                           auto_len[0] + len(quads), len(acc)))
            autos.append(quads)
            autos.append(acc)
            auto_len[0] += len(quads) + len(acc)
        else:
            raise TypeError(f"unknown node {type(n).__name__}")
        i = len(kind) - 1
        ids[id(n)] = i
        return i

    root = Ref(rules.start)  # kept alive while ids are in use
    node(root)  # node 0
    extra = tuple(node(r) for r in roots)
    bodies: list[int] = []
    while len(bodies) < len(names):  # rule bodies, including rules first referenced by a body
        name = names[len(bodies)]
        body = rules.rules.get(name)
        bodies.append(-1)
        if body is not None:
            bodies[-1] = node(body)
    node = None  # type: ignore[assignment]  # it refers to itself: break the cycle (no garbage)
    return Program(
        kind=np.array(kind, dtype=np.int8),
        f=np.array(fields, dtype=np.int64).reshape(-1, 5),
        data=np.frombuffer(bytes(data), dtype=np.uint8),
        ints=np.array(ints, dtype=np.int64),
        auto=np.concatenate(autos).astype(np.int64) if autos else np.zeros(0, dtype=np.int64),
        rule_body=np.array(bodies, dtype=np.int64),
        rule_names=tuple(names),
        roots=extra,
    )


def _automaton_edges(n: Automaton) -> tuple[np.ndarray, np.ndarray]:
    """Edge quadruples (one per run of equal targets in a row) and accepting states of an
    embedded DFA, both flat, states relative to the DFA."""
    trans = np.asarray(n.trans)
    starts = np.ones(trans.shape, dtype=bool)
    starts[:, 1:] = trans[:, 1:] != trans[:, :-1]
    rows, los = np.nonzero(starts)
    his = np.empty_like(los)
    his[:-1] = np.where(rows[1:] == rows[:-1], los[1:] - 1, 255)
    if len(his):
        his[-1] = 255
    targets = trans[rows, los]
    keep = targets >= 0
    quads = np.stack([rows[keep], los[keep], his[keep], targets[keep]], axis=1).ravel()
    return quads.astype(np.int64), np.flatnonzero(np.asarray(n.accepting)).astype(np.int64)


def build_nfa(prog: Program, *, max_states: int, top: int = 0) -> tuple[FlatNfa, int]:
    """The NFA of the program's node ``top`` (default: the start) before the final state 0,
    and its start state.

    Raises :class:`NotRegularError` for recursion other than right-linear,
    ``InvalidGrammarError`` for a reference to an undefined rule and ``GrammarTooLargeError``
    past ``max_states`` NFA states."""
    cap_eps, cap_edges = 1 << 14, 1 << 16
    while True:
        eps = np.empty(cap_eps, dtype=np.int32)
        edges = np.empty(cap_edges, dtype=np.int32)
        cnt = np.zeros(5, dtype=np.int64)
        start = _build_all(top, prog.kind, prog.f, prog.data, prog.ints, prog.auto,
                           prog.rule_body, eps, edges, cnt, max_states)
        err = int(cnt[3])
        if err == _OK:
            break
        if err == _GROW:
            cap_eps = max(cap_eps, 2 * int(cnt[1]) + 2)
            cap_edges = max(cap_edges, 2 * int(cnt[2]) + 8)
            continue
        if err == _TOO_LARGE:
            raise GrammarTooLargeError(f"the grammar's automaton exceeds {max_states} NFA states")
        name = prog.rule_names[int(cnt[4])]
        if err == _RECURSIVE:
            raise NotRegularError(name)
        raise InvalidGrammarError("undefined rule", rule=name)
    n = int(cnt[0])
    return FlatNfa.from_arrays(n, eps[: cnt[1]], edges[: cnt[2]]), int(start)


@njit(cache=True, nogil=True)
def _room(cnt, arr, idx, need):  # pragma: no cover - numba
    """False (and the grow error set) when ``arr`` cannot take ``need`` more entries."""
    if cnt[idx] + need > arr.shape[0]:
        cnt[idx] += need  # tell the caller how much was needed
        cnt[3] = _GROW
        return False
    return True


@njit(cache=True, nogil=True)
def _new(cnt, k, max_states):  # pragma: no cover - numba
    """``k`` new consecutive states (the first), or -1 past the limit."""
    s = cnt[0]
    if s + k > max_states:
        cnt[3] = _TOO_LARGE
        return -1
    cnt[0] = s + k
    return s


@njit(cache=True, nogil=True)
def _leaf(x, cont, kind, f, data, ints, auto, eps, edges, cnt, max_states):  # pragma: no cover - numba
    """Start state of a Lit, Bytes or Automaton node before ``cont`` (-1 on error)."""
    k = kind[x]
    a = f[x, 0]
    b = f[x, 1]
    if k == _LIT:
        if b == 0:
            return cont
        first = _new(cnt, b, max_states)
        if first < 0 or not _room(cnt, edges, 2, 4 * b):
            return -1
        e = cnt[2]
        for i in range(b):
            byte = data[a + i]
            edges[e] = first + i
            edges[e + 1] = byte
            edges[e + 2] = byte
            edges[e + 3] = first + i + 1 if i + 1 < b else cont
            e += 4
        cnt[2] = e
        return first
    if k == _BYTES:
        s = _new(cnt, 1, max_states)
        if s < 0 or not _room(cnt, edges, 2, 4 * b):
            return -1
        e = cnt[2]
        for i in range(b):
            edges[e] = s
            edges[e + 1] = ints[a + 2 * i]
            edges[e + 2] = ints[a + 2 * i + 1]
            edges[e + 3] = cont
            e += 4
        cnt[2] = e
        return s
    # an embedded automaton: a states, edges at auto[b:], accepting states at auto[f3:]
    nq = f[x, 2]
    a0 = f[x, 3]
    na = f[x, 4]
    base = _new(cnt, a, max_states)
    if base < 0 or not _room(cnt, eps, 1, 2 * na) or not _room(cnt, edges, 2, 4 * nq):
        return -1
    e = cnt[1]
    for i in range(na):
        eps[e] = base + auto[a0 + i]
        eps[e + 1] = cont
        e += 2
    cnt[1] = e
    e = cnt[2]
    for i in range(nq):
        edges[e] = base + auto[b + 4 * i]
        edges[e + 1] = auto[b + 4 * i + 1]
        edges[e + 2] = auto[b + 4 * i + 2]
        edges[e + 3] = base + auto[b + 4 * i + 3]
        e += 4
    cnt[2] = e
    return base


@njit(cache=True, nogil=True)
def _eps(cnt, eps, src, dst):  # pragma: no cover - numba
    """Append the epsilon move ``src -> dst`` (False when out of room)."""
    if not _room(cnt, eps, 1, 2):
        return False
    eps[cnt[1]] = src
    eps[cnt[1] + 1] = dst
    cnt[1] += 2
    return True


@njit(cache=True, nogil=True)
def _build_all(top, kind, f, data, ints, auto, rule_body, eps, edges, cnt,
               max_states):  # pragma: no cover - numba
    """Start state of node ``top`` before the final state 0; -1 with ``cnt[3]`` (and the rule,
    ``cnt[4]``) set on error. ``cnt[0..2]``: states, entries of ``eps`` and of ``edges`` used.

    The recursion of the construction runs on an explicit stack of frames (node, continuation,
    step, running state, extra state). A composite node builds its children one step at a time:
    Seq its items last to first, each before the previous result; Alt its items before the
    continuation from a new state; Repeat first its optional copies (a new state each, or the
    one loop state when unbounded) then its required ones; Ref its rule's body (the placeholder
    state of the rule and continuation closes a right-linear loop)."""
    memo = Dict.empty(key_type=types.int64, value_type=types.int64)
    placeholders = Dict.empty(key_type=types.int64, value_type=types.int64)
    active = np.zeros(rule_body.shape[0] + 1, dtype=np.bool_)
    depth = kind.shape[0] + 2
    fx = np.empty(depth, dtype=np.int64)
    fc = np.empty(depth, dtype=np.int64)
    fj = np.empty(depth, dtype=np.int64)
    fs = np.empty(depth, dtype=np.int64)
    ft = np.empty(depth, dtype=np.int64)
    cnt[0] = 1  # state 0: the final state
    fx[0] = top
    fc[0] = 0
    fj[0] = -1
    sp = 1
    ret = np.int64(-1)
    while sp > 0:
        i = sp - 1
        x = fx[i]
        cont = fc[i]
        k = kind[x]
        a = f[x, 0]
        b = f[x, 1]
        key = (x << 32) | cont
        if fj[i] < 0:  # first visit
            if key in memo:
                ret = memo[key]
                sp -= 1
                continue
            if k == _LIT or k == _BYTES or k == _AUTO:
                ret = _leaf(x, cont, kind, f, data, ints, auto, eps, edges, cnt, max_states)
                if ret < 0:
                    return -1
                memo[key] = ret
                sp -= 1
                continue
            if k == _REF:
                pkey = (a << 32) | cont
                if pkey in placeholders:
                    ret = placeholders[pkey]
                    memo[key] = ret
                    sp -= 1
                    continue
                if active[a]:
                    cnt[3] = _RECURSIVE
                    cnt[4] = a
                    return -1
                if rule_body[a] < 0:
                    cnt[3] = _UNDEFINED
                    cnt[4] = a
                    return -1
            fs[i] = cont
            if k == _ALT or k == _REF:
                fs[i] = _new(cnt, 1, max_states)
                if fs[i] < 0:
                    return -1
                if k == _REF:
                    placeholders[(a << 32) | cont] = fs[i]
                    active[a] = True
            fj[i] = 0
        else:  # a child has returned ``ret``: finish step fj[i]
            j = fj[i]
            if k == _SEQ:
                fs[i] = ret
            elif k == _ALT:
                if not _eps(cnt, eps, fs[i], ret):
                    return -1
            elif k == _REF:
                active[a] = False
                del placeholders[(a << 32) | cont]
                if not _eps(cnt, eps, fs[i], ret):
                    return -1
            else:  # _REPEAT
                n_opt = 1 if f[x, 2] < 0 else f[x, 2] - b
                if j < n_opt:
                    if not _eps(cnt, eps, ft[i], ret) or not _eps(cnt, eps, ft[i], cont):
                        return -1
                    fs[i] = ft[i]
                else:
                    fs[i] = ret
            fj[i] = j + 1
        # the next step, or done
        j = fj[i]
        child = np.int64(-1)
        child_cont = np.int64(0)
        if k == _SEQ:
            if j < b:
                child = ints[a + b - 1 - j]
                child_cont = fs[i]
        elif k == _ALT:
            if j < b:
                child = ints[a + j]
                child_cont = cont
        elif k == _REF:
            if j < 1:
                child = rule_body[a]
                child_cont = cont
        else:  # _REPEAT: a = item, b = lo, f2 = hi (-1 unbounded)
            n_opt = 1 if f[x, 2] < 0 else f[x, 2] - b
            if j < n_opt:
                ft[i] = _new(cnt, 1, max_states)
                if ft[i] < 0:
                    return -1
                child = a
                child_cont = ft[i] if f[x, 2] < 0 else fs[i]
            elif j < n_opt + b:
                child = a
                child_cont = fs[i]
        if child >= 0:
            fx[sp] = child
            fc[sp] = child_cont
            fj[sp] = -1
            sp += 1
        else:
            ret = fs[i]
            memo[key] = ret
            sp -= 1
    return ret
