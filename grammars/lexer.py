"""The lexer of a context-free grammar: one byte DFA that runs every terminal's DFA at once.

A lexer state is the tuple of the terminals' DFA states (product construction from the tuple of
start states, built breadth-first; byte classes with identical columns are handled together).
Per state it records, as bitsets over terminals, which terminals are still *alive* (can still
complete) and which *accept* here, and each terminal's own DFA state (``components``). State 0 is the start of a lexeme (no terminal accepts the empty
string).

The per-state alive and accepting terminals are also kept as uint64 words and as lists (``alive_ptr``/``alive_terms``, CSR) for
the token-trie walk (:func:`grammars.tokenwalk.walk_terminals`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grammars.automaton import DEFAULT_MAX_STATES, Dfa, check_deadline
from grammars.errors import GrammarTooLargeError

__all__ = ["Lexer", "bit_list", "bitset_words", "build_lexer"]


@dataclass(eq=False)
class Lexer:
    """Product DFA of the terminals (see the module docstring)."""

    trans: np.ndarray  # int32 (n, 256), -1 dead
    alive: list[int]  # per state: bitset of terminals still alive
    accepts: list[int]  # per state: bitset of terminals accepting
    n_terminals: int
    #: int32 (n, terminals): each terminal's own DFA state in this lexer state (-1: dead)
    components: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    accept_words: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    alive_words: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    alive_ptr: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    alive_terms: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    accept_ptr: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    accept_terms: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.accept_words = bitset_words(self.accepts, self.n_terminals)
        self.alive_words = bitset_words(self.alive, self.n_terminals)
        self.alive_ptr, self.alive_terms = _csr(self.alive)
        self.accept_ptr, self.accept_terms = _csr(self.accepts)

    @property
    def n_states(self) -> int:
        return int(self.trans.shape[0])


def _csr(bitsets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-state bitsets as lists: the members of state ``s`` are ``terms[ptr[s]:ptr[s + 1]]``."""
    lists = [bit_list(b) for b in bitsets]
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    return ptr, np.array([t for x in lists for t in x], dtype=np.int32)


def bit_list(x: int) -> list[int]:
    """The members of a bitset (a Python int), lowest first."""
    out = []
    while x:
        low = x & -x
        out.append(low.bit_length() - 1)
        x ^= low
    return out


def bitset_words(bitsets: list[int], n: int) -> np.ndarray:
    """Bitsets (Python ints over n bits) as a (len, ceil(n/64)) uint64 array."""
    w = max(1, (n + 63) // 64)
    out = np.zeros((len(bitsets), w), dtype=np.uint64)
    mask = (1 << 64) - 1
    for i, b in enumerate(bitsets):
        for k in range(w):
            out[i, k] = (b >> (64 * k)) & mask
    return out


#: Frontier states expanded together (bounds the (states, 256, terminals) array of successors).
_BLOCK_ENTRIES = 1 << 22


def build_lexer(terminals: list[Dfa], *, max_states: int = DEFAULT_MAX_STATES) -> Lexer:
    """The product DFA of ``terminals`` (each with start state 0, none accepting the empty
    string). Raises :class:`GrammarTooLargeError` past ``max_states`` states.

    Breadth-first and vectorized: a block of frontier states is expanded over all 256 bytes at
    once (the terminals' tables stacked into one, a dead row at the end), and the new state
    vectors are found by deduplicating rows."""
    k = len(terminals)
    sizes = [t.trans.shape[0] for t in terminals]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    dead = int(offs[-1])
    table = np.full((dead + 1, 256), dead, dtype=np.int32)
    for t, term in enumerate(terminals):
        table[offs[t]:offs[t + 1]] = np.where(term.trans >= 0, term.trans + offs[t], dead)
    accepting = np.concatenate([t.accepting for t in terminals] + [np.zeros(1, dtype=bool)])
    vecs: list[np.ndarray] = [offs[:-1].copy()]
    ids: dict[bytes, int] = {vecs[0].tobytes(): 0}
    rows: list[np.ndarray] = []
    frontier = [0]
    block = max(1, _BLOCK_ENTRIES // (256 * max(k, 1)))
    row_type = np.dtype((np.void, 4 * max(k, 1)))
    while frontier:
        nxt_frontier: list[int] = []
        for b0 in range(0, len(frontier), block):
            check_deadline()
            states = np.stack([vecs[i] for i in frontier[b0:b0 + block]])  # (m, k)
            succ = table[states].transpose(0, 2, 1)  # (m, 256, k)
            live = (succ != dead).any(axis=2)  # (m, 256)
            out = np.full(live.shape, -1, dtype=np.int32)
            found = np.ascontiguousarray(succ[live])  # (x, k)
            if len(found):
                uniq, first, inverse = np.unique(found.view(row_type).ravel(), return_index=True,
                                                 return_inverse=True)
                sid = np.empty(len(uniq), dtype=np.int32)
                for j in range(len(uniq)):
                    key = found[first[j]].tobytes()
                    hit = ids.get(key)
                    if hit is None:
                        hit = ids[key] = len(vecs)
                        vecs.append(found[first[j]])
                        nxt_frontier.append(hit)
                        if len(vecs) > max_states:
                            raise GrammarTooLargeError(
                                f"the lexer of this grammar needs more than {max_states} states")
                    sid[j] = hit
                out[live] = sid[inverse.ravel()]
            rows.extend(out)
        frontier = nxt_frontier
    states = np.stack(vecs)  # (n, k); state ids are in BFS order, as rows were appended
    alive_bits = _bitsets(states != dead)
    accept_bits = _bitsets(accepting[states])
    components = np.where(states != dead, states - offs[:-1], -1).astype(np.int32)
    return Lexer(np.stack(rows), alive_bits, accept_bits, k, components)


def _bitsets(flags: np.ndarray) -> list[int]:
    """Rows of a bool (n, k) array as Python-int bitsets (bit t = column t)."""
    packed = np.packbits(flags, axis=1, bitorder="little")
    return [int.from_bytes(r.tobytes(), "little") for r in packed]
