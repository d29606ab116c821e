"""The lexer of a context-free grammar: one byte DFA that runs every terminal's DFA at once.

A lexer state is the tuple of the terminals' DFA states (product construction from the tuple of
start states, built breadth-first; byte classes with identical columns are handled together).
Per state it records, as bitsets over terminals, which terminals are still *alive* (can still
complete) and which *accept* here. State 0 is the start of a lexeme (no terminal accepts the empty
string).

:meth:`Lexer.restricted` gives, for a set ``A`` of terminals the parser allows, the transition
table that keeps only states where a terminal of ``A`` is alive, and the states where one of them
accepts: the table the token-trie walk uses (cached per ``A``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grammars.automaton import DEFAULT_MAX_STATES, Dfa, _unique_columns, check_deadline
from grammars.errors import GrammarTooLargeError

__all__ = ["Lexer", "Restricted", "build_lexer"]


@dataclass(frozen=True, eq=False)
class Restricted:
    """The lexer restricted to a set of terminals (see :meth:`Lexer.restricted`)."""

    trans: np.ndarray  # int32 (n, 256): -1 where no allowed terminal stays alive
    accepts: np.ndarray  # bool (n,): some allowed terminal accepts here


@dataclass(eq=False)
class Lexer:
    """Product DFA of the terminals (see the module docstring)."""

    trans: np.ndarray  # int32 (n, 256), -1 dead
    alive: list[int]  # per state: bitset of terminals still alive
    accepts: list[int]  # per state: bitset of terminals accepting
    n_terminals: int
    _alive_words: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    _accept_words: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    _restricted: dict[int, Restricted] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._alive_words = _words(self.alive, self.n_terminals)
        self._accept_words = _words(self.accepts, self.n_terminals)

    @property
    def n_states(self) -> int:
        return int(self.trans.shape[0])

    def restricted(self, allowed: int) -> Restricted:
        hit = self._restricted.get(allowed)
        if hit is None:
            a = _words([allowed], self.n_terminals)[0]
            live = (self._alive_words & a).any(axis=1)
            trans = np.where((self.trans >= 0) & live[np.maximum(self.trans, 0)], self.trans, -1)
            acc = (self._accept_words & a).any(axis=1)
            hit = self._restricted[allowed] = Restricted(trans.astype(np.int32), acc)
        return hit


def _words(bitsets: list[int], n: int) -> np.ndarray:
    """Bitsets (Python ints over n bits) as a (len, ceil(n/64)) uint64 array."""
    w = max(1, (n + 63) // 64)
    out = np.zeros((len(bitsets), w), dtype=np.uint64)
    mask = (1 << 64) - 1
    for i, b in enumerate(bitsets):
        for k in range(w):
            out[i, k] = (b >> (64 * k)) & mask
    return out


def build_lexer(terminals: list[Dfa], *, max_states: int = DEFAULT_MAX_STATES) -> Lexer:
    """The product DFA of ``terminals`` (each with start state 0, none accepting the empty
    string). Raises :class:`GrammarTooLargeError` past ``max_states`` states."""
    k = len(terminals)
    trans_of = [t.trans for t in terminals]
    acc_of = [t.accepting for t in terminals]
    start = tuple(0 for _ in range(k))
    ids: dict[tuple[int, ...], int] = {start: 0}
    order: list[tuple[int, ...]] = [start]
    rows: list[np.ndarray] = []
    alive: list[int] = []
    accepts: list[int] = []
    i = 0
    while i < len(order):
        if not i & 255:
            check_deadline()
        cur = order[i]
        i += 1
        live = [t for t in range(k) if cur[t] >= 0]
        alive.append(sum(1 << t for t in live))
        accepts.append(sum(1 << t for t in live if acc_of[t][cur[t]]))
        row = np.full(256, -1, dtype=np.int32)
        if live:
            cols = np.stack([trans_of[t][cur[t]] for t in live])  # (len(live), 256)
            uniq, inverse = _unique_columns(cols)
            for c in range(uniq.shape[1]):
                col = uniq[:, c]
                if (col < 0).all():
                    continue
                nxt = [-1] * k
                for j, t in enumerate(live):
                    nxt[t] = int(col[j])
                key = tuple(nxt)
                sid = ids.get(key)
                if sid is None:
                    sid = ids[key] = len(order)
                    order.append(key)
                    if len(order) > max_states:
                        raise GrammarTooLargeError(
                            f"the lexer of this grammar needs more than {max_states} states")
                row[inverse == c] = sid
        rows.append(row)
    return Lexer(np.stack(rows), alive, accepts, k)
