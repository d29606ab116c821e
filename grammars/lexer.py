"""The lexer of a context-free grammar: one byte DFA that runs every terminal's DFA at once.

A lexer state is the tuple of the terminals' DFA states (product construction from the tuple of
start states, built breadth-first; byte classes with identical columns are handled together).
Per state it records, as bitsets over terminals, which terminals are still *alive* (can still
complete) and which *accept* here. State 0 is the start of a lexeme (no terminal accepts the empty
string).

The per-state alive and accepting terminals are also kept as uint64 words, and the alive ones
as lists (``alive_ptr``/``alive_terms``, CSR) for
the token-trie walk (:func:`grammars.tokenwalk.walk_terminals`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grammars.automaton import DEFAULT_MAX_STATES, Dfa, _unique_columns, check_deadline
from grammars.errors import GrammarTooLargeError

__all__ = ["Lexer", "build_lexer"]


@dataclass(eq=False)
class Lexer:
    """Product DFA of the terminals (see the module docstring)."""

    trans: np.ndarray  # int32 (n, 256), -1 dead
    alive: list[int]  # per state: bitset of terminals still alive
    accepts: list[int]  # per state: bitset of terminals accepting
    n_terminals: int
    accept_words: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    alive_words: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    alive_ptr: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    alive_terms: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.accept_words = _words(self.accepts, self.n_terminals)
        self.alive_words = _words(self.alive, self.n_terminals)
        lists = [_bit_list(a) for a in self.alive]
        self.alive_ptr = np.zeros(len(lists) + 1, dtype=np.int64)
        self.alive_ptr[1:] = np.cumsum([len(x) for x in lists])
        self.alive_terms = np.array([t for x in lists for t in x], dtype=np.int32)

    @property
    def n_states(self) -> int:
        return int(self.trans.shape[0])

    def first_bytes(self, terminals: int) -> np.ndarray:
        """bool (256,): the bytes that can start a lexeme of one of ``terminals`` (a bitset)."""
        nxt = self.trans[0]
        live = (self.alive_words & _words([terminals], self.n_terminals)[0]).any(axis=1)
        return (nxt >= 0) & live[np.maximum(nxt, 0)]


def _bit_list(x: int) -> list[int]:
    out = []
    while x:
        low = x & -x
        out.append(low.bit_length() - 1)
        x ^= low
    return out


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
