"""Grammar nodes -> byte NFA -> trimmed byte DFA (the regular path).

The NFA is built by :mod:`grammars.nfabuild` (Thompson's construction in continuation-passing
style, memoized on ``(node, continuation)``, in numba).

The DFA is the subset construction (numba, over byte classes: :mod:`grammars.subset`), trimmed to states from which an accepting
state is reachable (so every live state can still finish: a mask never allows a dead end). It is a
dense ``int32`` table ``trans[state, byte]`` (-1 = dead) and a boolean ``accepting`` vector; state 0
is the start state.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from grammars.errors import CompileTimeoutError, EmptyLanguageError, GrammarTooLargeError
from grammars.ir import Alt, Bytes, Lit, Node, Ref, Repeat, Rules, Seq
from grammars.nfabuild import NotRegularError, build_nfa, flatten
from grammars.smalldfa import OK as SMALL_OK
from grammars.smalldfa import small_dfas
from grammars.subset import FlatNfa, TooManyStates, hash_weights, subset_construction

__all__ = ["DEFAULT_MAX_STATES", "Dfa", "NotRegularError", "build_dfa", "build_dfas", "dfa_of",
           "minimize", "product"]

DEFAULT_MAX_STATES = 200_000


@dataclass
class Dfa:
    """A trimmed byte DFA: ``trans`` int32 (n_states, 256) with -1 = dead; state 0 = start."""

    trans: np.ndarray
    accepting: np.ndarray

    @property
    def n_states(self) -> int:
        return int(self.trans.shape[0])

    def walk(self, state: int, data: bytes) -> int:
        """State after ``data`` from ``state`` (-1 once dead)."""
        trans = self.trans
        for b in data:
            if state < 0:
                return -1
            state = int(trans[state, b])
        return state

    def matches(self, data: bytes) -> bool:
        s = self.walk(0, data)
        return s >= 0 and bool(self.accepting[s])


_DEADLINE = threading.local()


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Within the block, automaton construction raises ``CompileTimeoutError`` once ``seconds``
    have passed (checked cooperatively in the NFA, subset and minimization loops). The first
    time limit of a process first compiles the numba kernels (:func:`warm_jit`)."""
    warm_jit()
    old = getattr(_DEADLINE, "at", None)
    _DEADLINE.at = None if seconds is None else time.perf_counter() + seconds
    if old is not None and _DEADLINE.at is not None:
        _DEADLINE.at = min(old, _DEADLINE.at)
    elif old is not None:
        _DEADLINE.at = old
    try:
        yield
    finally:
        _DEADLINE.at = old


_JIT_READY: list[bool] = []


def warm_jit() -> None:
    """Compile the numba kernels of DFA construction (or load them from numba's on-disk cache:
    compiling them takes seconds on a fresh checkout) by building a one-byte DFA, so that their
    compile time never counts against a grammar's time limit."""
    if _JIT_READY:
        return
    _JIT_READY.append(True)
    one = build_dfa(Rules({"s": Lit(b"a")}, "s"))
    product(one, one)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Within the block, Python's cyclic garbage collector does not run (re-enabled after, if it
    was on). Compiling builds hundreds of thousands of short-lived lists and tuples (NFA states,
    items) that reference counting frees; without the pause the collector rescans the whole heap
    (a loaded tokenizer or model included) many times over them: 20-30% of a JSON Schema's
    compile time. The little cyclic garbage made meanwhile is collected after the block."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def check_deadline() -> None:
    at = getattr(_DEADLINE, "at", None)
    if at is not None and time.perf_counter() > at:
        raise CompileTimeoutError("compiling the grammar took longer than its time limit")


def build_dfa(rules: Rules, *, max_states: int = DEFAULT_MAX_STATES) -> Dfa:
    """Subset construction of the grammar's start rule. Raises NotRegularError if recursive,
    EmptyLanguageError if it matches nothing, GrammarTooLargeError past ``max_states``."""
    nfa, start = build_nfa(flatten(rules), max_states=8 * max_states)
    return _dfa_of_nfa(nfa, start, max_states)


def build_dfas(rules: Rules, nodes: list[Node], *,
               max_states: int = DEFAULT_MAX_STATES) -> list[Dfa]:
    """The DFA of each of ``nodes`` (whose references resolve in ``rules``), as
    :func:`build_dfa` would give it, with one flattening of the node graph for all (a
    grammar's terminals share most of their nodes: the ``%ignore`` prefix, the literals)."""
    # equal nodes built once (the same literal after the same %ignore, in several rules)
    index: dict[object, int] = {}
    unique: list[Node] = []
    slot = []
    for n in nodes:
        k = _shape(n)
        if k not in index:
            index[k] = len(unique)
            unique.append(n)
        slot.append(index[k])
    prog = flatten(rules, unique)
    # small ones in one numba call; any other (large, empty, not regular) the general way
    trans, accepting, offsets, status = small_dfas(prog, list(prog.roots), max_states=max_states)
    check_deadline()
    built = []
    for i, top in enumerate(prog.roots):
        if status[i] == SMALL_OK:
            a, b = offsets[i], offsets[i + 1]
            built.append(Dfa(trans=trans[a:b], accepting=accepting[a:b]))
            continue
        nfa, start = build_nfa(prog, max_states=8 * max_states, top=top)
        built.append(_dfa_of_nfa(nfa, start, max_states))
    return [built[k] for k in slot]


def _shape(n: Node) -> object:
    """A key equal for nodes that match the same strings by construction: same literals, same
    rule names, same structure (any other node: itself)."""
    t = type(n)
    if t is Lit:
        return n.data  # type: ignore[attr-defined]
    if t is Ref:
        return ("ref", n.name)  # type: ignore[attr-defined]
    if t is Seq or t is Alt:
        return (t.__name__, *(_shape(x) for x in n.items))  # type: ignore[attr-defined]
    if t is Repeat:
        return ("repeat", _shape(n.item), n.lo, n.hi)  # type: ignore[attr-defined]
    if t is Bytes:
        return ("bytes", n.ranges)  # type: ignore[attr-defined]
    return ("node", id(n))


def _dfa_of_nfa(nfa: FlatNfa, start: int, max_states: int) -> Dfa:
    """The trimmed, minimized DFA of ``nfa`` from ``start`` (accepting in state 0)."""
    try:
        trans, cls, accepting = subset_construction(nfa, start, max_states=max_states,
                                                    check=check_deadline)
    except TooManyStates:
        raise GrammarTooLargeError(f"the grammar's DFA exceeds {max_states} states") from None
    # trimmed and minimized over byte classes (classes are byte runs in byte order, so the
    # breadth-first numbering is the one of the byte table), then expanded to bytes
    small = minimize(_trim(trans, accepting))
    return Dfa(trans=np.take(small.trans, cls, axis=1), accepting=small.accepting)  # take: 5x faster than [:, cls]


def _trim(trans: np.ndarray, accepting: np.ndarray) -> Dfa:
    """Keep the states reachable from 0 that can reach an accepting state, numbered breadth-first
    (:func:`grammars.reach.live_order`). Raises EmptyLanguageError when 0 cannot."""
    from grammars.reach import live_order, renumber

    trans = np.ascontiguousarray(trans, dtype=np.int32)
    live, keep = live_order(trans, np.ascontiguousarray(accepting, dtype=np.bool_))
    if not len(keep):
        raise EmptyLanguageError("the grammar matches no string")
    return Dfa(trans=renumber(trans, live, keep), accepting=accepting[keep].copy())


def dfa_of(node: Node, *, max_states: int = DEFAULT_MAX_STATES) -> Dfa:
    """The trimmed DFA of a single node (no rules)."""
    return build_dfa(Rules({"start": node}, "start"), max_states=max_states)


def product(a: Dfa, b: Dfa, *, op: str = "and", max_states: int = DEFAULT_MAX_STATES) -> Dfa:
    """Product automaton: ``op="and"`` intersection, ``op="diff"`` a minus b.

    Raises EmptyLanguageError if the result is empty.
    """
    from grammars.reach import pair_product

    check_deadline()
    nb = b.n_states
    rows, pairs = pair_product(a.trans, b.trans, op != "and", max_states)
    if not len(rows):
        raise GrammarTooLargeError(f"automaton product exceeds {max_states} states")
    acc_b = np.append(b.accepting, False)
    pa_arr, pb_arr = pairs // (nb + 1), pairs % (nb + 1)
    if op == "and":
        acc = a.accepting[pa_arr] & acc_b[pb_arr]
    else:
        acc = a.accepting[pa_arr] & ~acc_b[pb_arr]
    return minimize(_trim(rows, acc))


def without_words(dfa: Dfa, words: list[bytes]) -> Dfa:
    """The trimmed DFA of ``dfa``'s language minus the byte strings ``words`` (not minimized):
    the trie of the words walked through ``dfa``, each trie node paired with the state ``dfa``
    reaches on its prefix, and a free copy of ``dfa`` entered where a byte leaves the trie.
    Much cheaper than a product with the words' DFA when there are few words (the declared
    property names of an object, say). Raises EmptyLanguageError when nothing is left."""
    trans, acc = dfa.trans, dfa.accepting
    state = [0]  # the dfa state of each trie node
    children: list[dict[int, int]] = [{}]
    word_end = [False]
    for w in words:
        t = s = 0
        for b in w:
            s = int(trans[s, b])
            if s < 0:
                break  # not in the language: nothing to take out
            c = children[t].get(b)
            if c is None:
                c = len(state)
                children[t][b] = c
                children.append({})
                state.append(s)
                word_end.append(False)
            t = c
        else:
            word_end[t] = True
    n_trie = len(state)
    free = np.where(trans >= 0, trans + n_trie, -1).astype(np.int32)
    out = np.concatenate([free[np.array(state)], free])
    for t, kids in enumerate(children):
        for b, c in kids.items():
            out[t, b] = c
    accepting = np.concatenate([acc[np.array(state)] & ~np.array(word_end), acc])
    return _trim(out, accepting)


def bounded_repeat(body: Dfa, lo: int, hi: int) -> Dfa | None:
    """DFA of ``lo`` to ``hi`` repetitions of ``body`` built directly as a chain of copies (a
    ``maxLength: 1024`` string without unrolling 1024 NFA fragments), or None when ``body`` is not
    a single unit: its start must not accept and its accepting states must have no way out (one
    character, say), so that each copy ends exactly where the next begins."""
    trans, acc = body.trans, body.accepting
    if acc[0] or (trans[acc] >= 0).any() or not 0 <= lo <= hi or hi == 0:
        return None
    inner = np.flatnonzero(~acc)  # start first (index 0 is the start state)
    m = len(inner)
    local = np.full(trans.shape[0] + 1, -1, dtype=np.int64)  # body state -> code (+1 for dead)
    local[inner] = np.arange(m)
    local[np.flatnonzero(acc)] = -2  # a unit completes: the next copy's start
    t = local[trans[inner]]  # (m, 256) codes: >= 0 inner, -2 next copy, -1 dead
    offs = (np.arange(hi, dtype=np.int64) * m)[:, None, None]
    chain = np.where(t >= 0, t + offs, np.where(t == -2, offs + m, -1))  # (hi, m, 256)
    n = hi * m + 1
    out = np.full((n, 256), -1, dtype=np.int32)
    out[: hi * m] = chain.reshape(hi * m, 256)
    accepting = np.zeros(n, dtype=bool)
    accepting[np.arange(lo, hi + 1) * m] = True
    return minimize(_trim(out, accepting))


def _unique_columns(trans: np.ndarray) -> np.ndarray:
    """The distinct columns of ``trans`` (bytes every state treats alike share one).

    Columns are grouped by a wrapping int64 hash, then verified equal exactly; a collision (never
    observed) falls back to numpy's exact (slow) column sort.
    """
    w = hash_weights(trans.shape[0])
    with np.errstate(over="ignore"):
        h = (trans.astype(np.int64) + 1).T @ w
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    cols = trans[:, first]
    if not (trans == cols[:, inv.ravel()]).all():  # pragma: no cover - hash collision
        cols = np.unique(trans, axis=1)
    return cols


def minimize(dfa: Dfa) -> Dfa:
    """Merge states with the same future (so identical masks too): Hopcroft's algorithm
    (:mod:`grammars.hopcroft`) on the partial table (missing transitions need no dead state),
    with bytes that every state treats alike sharing a column."""
    trans, acc = dfa.trans, dfa.accepting
    n = trans.shape[0]
    if n <= 1:
        return dfa
    from grammars.hopcroft import coarsest_partition, quotient

    check_deadline()
    trans = np.ascontiguousarray(trans, dtype=np.int32)
    # a byte table (256 columns) first loses its duplicate columns; a class table has few
    cols = _unique_columns(trans) if trans.shape[1] > 128 else trans
    blocks = coarsest_partition(cols, acc.astype(np.int64))
    mapped, rep = quotient(trans, blocks)
    if len(rep) == n:
        return dfa
    return _trim(mapped, acc[rep])
