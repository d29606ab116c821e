"""The lexer of a context-free grammar: one byte DFA that runs every terminal's DFA at once.

A lexer state is the tuple of the terminals' DFA states (product construction from the tuple of
start states, built breadth-first in numba over the byte classes the terminals share). Per state
it records, as bitsets over terminals, which terminals are still *alive* (can still complete)
and which *accept* here, and each terminal's own DFA state (``components``). State 0 is the
start of a lexeme (no terminal accepts the empty string).

The per-state alive and accepting terminals are also kept as uint64 words, and the accepting
ones as lists (``accept_ptr``/``accept_terms``, CSR), for the token-trie walk
(:func:`grammars.tokenwalk.walk_states`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from grammars.automaton import DEFAULT_MAX_STATES, Dfa, check_deadline
from grammars.errors import GrammarTooLargeError
from grammars.subset import _grown, _rehash, hash_weights

__all__ = ["Lexer", "bit_list", "bitset_words", "build_lexer"]


@dataclass(eq=False)
class Lexer:
    """Product DFA of the terminals (see the module docstring). Made by :func:`build_lexer`,
    which derives every per-state form of the alive and accepting terminals at once."""

    trans: np.ndarray  # int32 (n, 256), -1 dead
    alive: list[int]  # per state: bitset of terminals still alive
    accepts: list[int]  # per state: bitset of terminals accepting
    n_terminals: int
    #: int32 (n, terminals): each terminal's own DFA state in this lexer state (-1: dead)
    components: np.ndarray = field(repr=False)
    alive_words: np.ndarray = field(repr=False)  # uint64 (n, words): ``alive`` as words
    accept_words: np.ndarray = field(repr=False)  # uint64 (n, words): ``accepts`` as words
    accept_ptr: np.ndarray = field(repr=False)  # CSR of ``accepts``: the terminals accepting
    accept_terms: np.ndarray = field(repr=False)  # in state s are terms[ptr[s]:ptr[s + 1]]
    #: int32 (total terminal states, 256): every terminal's DFA in one table, terminal t's state
    #: s as global state offs[t] + s (offsets: cumulative state counts in terminal order)
    stacked: np.ndarray = field(repr=False)
    stacked_accepting: np.ndarray = field(repr=False)  # bool per global terminal state

    @property
    def n_states(self) -> int:
        return int(self.trans.shape[0])


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


def _flag_words(flags: np.ndarray) -> np.ndarray:
    """Rows of a bool (n, k) array as (n, ceil(k/64)) uint64 words (bit t = column t)."""
    n, k = flags.shape
    w = max(1, (k + 63) // 64)
    padded = np.zeros((n, 64 * w), dtype=bool)
    padded[:, :k] = flags
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(np.uint64)


_DONE, _GROW, _LIMIT = 0, 1, 2


@njit(cache=True, nogil=True)
def _product_slice(table, max_states, slice_states, counts, htable, hashes, pool, ptr, rows,
                   scratch):  # pragma: no cover - numba
    """Expand up to ``slice_states`` queued lexer states (breadth-first). A lexer state is the
    sorted list of its terminals' live DFA states, as ids into the stacked class ``table``
    (``-1``: no move); they are stored in ``pool`` (``ptr``: CSR) and found again through the
    open-addressing ``htable`` (``hashes`` per state). ``counts``: next state to expand, states,
    pool entries used. Returns ``_DONE`` (``counts`` updated), ``_GROW`` (the arrays are too
    small for the next state; nothing of it is kept) or ``_LIMIT`` (past ``max_states``)."""
    head, n, used = counts[0], counts[1], counts[2]
    n_cls = table.shape[1]
    mask = htable.shape[0] - 1
    done = 0
    while head < n and done < slice_states:
        a, b = ptr[head], ptr[head + 1]
        if (used + n_cls * (b - a) > pool.shape[0] or n + n_cls + 1 > rows.shape[0]
                or 2 * (n + n_cls) > htable.shape[0]):
            counts[0], counts[1], counts[2] = head, n, used
            return _GROW
        for c in range(n_cls):
            m = 0
            h = np.uint64(1469598103934665603)
            for i in range(a, b):
                g = table[pool[i], c]
                if g >= 0:
                    scratch[m] = g
                    m += 1
                    h = (h ^ np.uint64(g)) * np.uint64(1099511628211)
            if m == 0:
                rows[head, c] = -1
                continue
            j = np.int64(h & np.uint64(mask))
            while True:
                s = htable[j]
                if s < 0:
                    if n >= max_states:
                        return _LIMIT
                    htable[j] = n
                    hashes[n] = h
                    for i in range(m):
                        pool[used + i] = scratch[i]
                    used += m
                    ptr[n + 1] = used
                    rows[head, c] = n
                    n += 1
                    break
                if hashes[s] == h and ptr[s + 1] - ptr[s] == m:
                    same = True
                    for i in range(m):
                        if pool[ptr[s] + i] != scratch[i]:
                            same = False
                            break
                    if same:
                        rows[head, c] = s
                        break
                j = (j + 1) & mask
        head += 1
        done += 1
    counts[0], counts[1], counts[2] = head, n, used
    return _DONE


def _byte_classes(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, cls)``: the distinct columns of the (states, 256) ``table`` and the class of
    each byte (``classes[:, cls] == table``). Columns are told apart by a random-weight hash
    and the result is checked (``np.unique`` over columns sorts them: 5 ms for SQL's lexer)."""
    w = hash_weights(table.shape[0]).view(np.uint64)
    h = (table.T.astype(np.uint64) + np.uint64(1)) @ w if table.shape[0] else np.zeros(256, np.uint64)
    _, first, cls = np.unique(h, return_index=True, return_inverse=True)
    classes = np.ascontiguousarray(table[:, first])
    if not np.array_equal(classes[:, cls], table):  # a hash collision: sort the columns
        cols, cls = np.unique(table, axis=1, return_inverse=True)
        classes = np.ascontiguousarray(cols)
    return classes.astype(np.int32), np.asarray(cls, dtype=np.int64).ravel()


def build_lexer(terminals: list[Dfa], *, max_states: int = DEFAULT_MAX_STATES) -> Lexer:
    """The product DFA of ``terminals`` (each with start state 0, none accepting the empty
    string). Raises :class:`GrammarTooLargeError` past ``max_states`` states.

    The terminals' tables are stacked over the byte classes they share (bytes whose columns
    agree in every table), and a lexer state keeps only its live terminals: breadth-first, in
    numba. A lexer of at most ``SMALL_LEXER_STATES`` states is built in one numba call
    (:func:`_small_lexer`); a larger one in slices between which the compile deadline is
    checked."""
    k = len(terminals)
    if k:
        sizes = np.array([t.trans.shape[0] for t in terminals], dtype=np.int64)
        accepting = np.concatenate([t.accepting for t in terminals])
        small = _small_lexer(np.concatenate([t.trans for t in terminals]), accepting, sizes,
                             hash_weights(int(sizes.sum())).view(np.uint64),
                             min(max_states, SMALL_LEXER_STATES))
        check_deadline()
        if small[0]:
            _, trans, components, alive_words, accept_words, accept_ptr, accept_terms, stacked = small
            return Lexer(trans, _word_bitsets(alive_words), _word_bitsets(accept_words), k,
                         components, alive_words=alive_words, accept_words=accept_words,
                         accept_ptr=accept_ptr, accept_terms=accept_terms, stacked=stacked,
                         stacked_accepting=accepting)
    return _sliced_lexer(terminals, max_states=max_states)


def _word_bitsets(words: np.ndarray) -> list[int]:
    """Rows of (n, w) uint64 words as Python-int bitsets."""
    if words.shape[1] == 1:
        return words[:, 0].tolist()
    return [sum(int(x) << (64 * i) for i, x in enumerate(row)) for row in words]


#: Lexers up to this many states are built in one numba call (:func:`_small_lexer`).
SMALL_LEXER_STATES = 1024


@njit(cache=True, nogil=True)
def _small_lexer(cat, cat_acc, sizes, w, max_states):  # pragma: no cover - numba
    """:func:`_sliced_lexer`'s result in one call, for a lexer of at most ``max_states`` states:
    ``(True, trans, components, alive_words, accept_words, accept_ptr, accept_terms, stacked)``
    (``stacked``: the terminals' tables in one, global state numbers), or
    ``(False, ...)`` (empty arrays) when it would be larger or two byte columns collide in
    their hash: the caller then builds it the sliced way. ``cat``: the terminals' tables one
    after the other (their own state numbers), ``sizes`` their state counts."""
    k = sizes.shape[0]
    total = cat.shape[0]
    offs = np.zeros(k + 1, dtype=np.int64)
    for i in range(k):
        offs[i + 1] = offs[i] + sizes[i]
    term_of = np.empty(total, dtype=np.int64)
    stacked = np.empty((total, 256), dtype=np.int32)
    for i in range(k):
        for s in range(offs[i], offs[i + 1]):
            term_of[s] = i
            for b in range(256):
                t = cat[s, b]
                stacked[s, b] = t + offs[i] if t >= 0 else -1
    # byte classes as _byte_classes makes them: by column hash (weights ``w``), in hash order
    h = np.empty(256, dtype=np.uint64)
    for b in range(256):
        acc = np.uint64(0)
        for s in range(total):
            acc += (np.uint64(stacked[s, b] + 1)) * w[s]
        h[b] = acc
    order = np.argsort(h, kind="mergesort")
    byte_cls = np.empty(256, dtype=np.int64)
    first = np.empty(256, dtype=np.int64)
    n_cls = 0
    for j in range(256):
        b = order[j]
        if j == 0 or h[b] != h[order[j - 1]]:
            first[n_cls] = b
            n_cls += 1
        byte_cls[b] = n_cls - 1
    table = np.empty((total, n_cls), dtype=np.int32)
    for s in range(total):
        for c in range(n_cls):
            table[s, c] = stacked[s, first[c]]
    empty2 = np.zeros((0, 0), dtype=np.int32)
    emptyw = np.zeros((0, 0), dtype=np.uint64)
    empty1 = np.zeros(0, dtype=np.int64)
    empty1i = np.zeros(0, dtype=np.int32)
    for s in range(total):
        for b in range(256):
            if stacked[s, b] != table[s, byte_cls[b]]:
                return False, empty2, empty2, emptyw, emptyw, empty1, empty1i, empty2  # collision
    # the product, breadth-first (the arrays sized for max_states: no growing)
    cap = max_states + n_cls + 2
    pool = np.empty(cap * k + k, dtype=np.int32)
    for i in range(k):
        pool[i] = offs[i]
    ptr = np.zeros(cap + 1, dtype=np.int64)
    ptr[1] = k
    rows = np.empty((cap, n_cls), dtype=np.int32)
    hashes = np.zeros(cap, dtype=np.uint64)
    hsize = 4
    while hsize < 2 * cap:
        hsize *= 2
    htable = np.full(hsize, -1, dtype=np.int32)
    h0 = np.uint64(1469598103934665603)  # FNV-1a over the members, as _product_slice hashes them
    for i in range(k):
        h0 = (h0 ^ np.uint64(offs[i])) * np.uint64(1099511628211)
    hashes[0] = h0
    htable[np.int64(h0 & np.uint64(hsize - 1))] = 0
    counts = np.zeros(3, dtype=np.int64)
    counts[1] = 1
    counts[2] = k
    scratch = np.empty(max(k, 1), dtype=np.int32)
    status = _product_slice(table, max_states, cap, counts, htable, hashes, pool, ptr, rows,
                            scratch)
    if status != _DONE or counts[0] < counts[1]:
        return False, empty2, empty2, emptyw, emptyw, empty1, empty1i, empty2
    n = counts[1]
    trans = np.empty((n, 256), dtype=np.int32)
    for s in range(n):
        for b in range(256):
            trans[s, b] = rows[s, byte_cls[b]]
    n_words = max(1, (k + 63) // 64)
    components = np.full((n, k), -1, dtype=np.int32)
    alive_words = np.zeros((n, n_words), dtype=np.uint64)
    accept_words = np.zeros((n, n_words), dtype=np.uint64)
    accept_ptr = np.zeros(n + 1, dtype=np.int64)
    accept = np.zeros((n, k), dtype=np.bool_)
    for s in range(n):
        for p in range(ptr[s], ptr[s + 1]):
            g = pool[p]
            t = term_of[g]
            components[s, t] = g - offs[t]
            alive_words[s, t >> 6] |= np.uint64(1) << np.uint64(t & 63)
            if cat_acc[g]:
                accept[s, t] = True
                accept_words[s, t >> 6] |= np.uint64(1) << np.uint64(t & 63)
        c = 0
        for t in range(k):
            if accept[s, t]:
                c += 1
        accept_ptr[s + 1] = accept_ptr[s] + c
    accept_terms = np.empty(accept_ptr[n], dtype=np.int32)
    j = 0
    for s in range(n):
        for t in range(k):
            if accept[s, t]:
                accept_terms[j] = t
                j += 1
    return True, trans, components, alive_words, accept_words, accept_ptr, accept_terms, stacked


def _sliced_lexer(terminals: list[Dfa], *, max_states: int) -> Lexer:
    """:func:`build_lexer` in slices of 256 states, the deadline checked between them."""
    k = len(terminals)
    sizes = [t.trans.shape[0] for t in terminals]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    stacked = np.concatenate(
        [np.where(t.trans >= 0, t.trans + offs[i], -1) for i, t in enumerate(terminals)]
    ).astype(np.int32) if k else np.zeros((0, 256), dtype=np.int32)
    table, byte_cls = _byte_classes(stacked)
    accepting = np.concatenate([t.accepting for t in terminals]) if k else np.zeros(0, bool)
    term_of = np.repeat(np.arange(k, dtype=np.int32), sizes)
    cap = 64
    pool = np.empty(max(256, 4 * k), dtype=np.int32)
    pool[:k] = offs[:-1]
    ptr = np.zeros(cap + 1, dtype=np.int64)
    ptr[1] = k
    rows = np.empty((cap, table.shape[1]), dtype=np.int32)
    hashes = np.zeros(cap, dtype=np.uint64)
    htable = np.full(4 * cap, -1, dtype=np.int32)
    h = 1469598103934665603  # FNV-1a over the members, as _product_slice hashes them
    for g in offs[:-1].tolist():
        h = ((h ^ g) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    hashes[0] = h
    htable[h & (len(htable) - 1)] = 0
    counts = np.array([0, 1, k], dtype=np.int64)
    scratch = np.empty(max(k, 1), dtype=np.int32)
    while counts[0] < counts[1]:
        status = _product_slice(table, max_states, 256, counts, htable, hashes, pool, ptr, rows,
                                scratch)
        if status == _LIMIT:
            raise GrammarTooLargeError(f"the lexer of this grammar needs more than {max_states} states")
        if status == _GROW:
            n, used = int(counts[1]), int(counts[2])
            pool = _grown(pool, used + table.shape[1] * k + 1, axis=0)
            if n + table.shape[1] + 1 > rows.shape[0]:
                rows = _grown(rows, 2 * (n + table.shape[1] + 1), axis=0)
                hashes = _grown(hashes, rows.shape[0], axis=0)
                ptr = _grown(ptr, rows.shape[0] + 1, axis=0)
            while 2 * (n + table.shape[1]) > htable.shape[0]:
                htable = _rehash(htable, hashes, n)
            continue
        check_deadline()
    n = int(counts[1])
    trans = np.ascontiguousarray(rows[:n][:, byte_cls])
    members = pool[:int(counts[2])]
    owner = np.repeat(np.arange(n), np.diff(ptr[:n + 1]))
    components = np.full((n, k), -1, dtype=np.int32)
    components[owner, term_of[members]] = members - offs[term_of[members]]
    accept = np.zeros((n, k), dtype=bool)
    accept[owner, term_of[members]] = accepting[members]
    alive = components >= 0
    counts = accept.sum(axis=1)
    accept_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=accept_ptr[1:])
    return Lexer(trans, _bitsets(alive), _bitsets(accept), k, components,
                 alive_words=_flag_words(alive), accept_words=_flag_words(accept),
                 accept_ptr=accept_ptr,
                 accept_terms=np.nonzero(accept)[1].astype(np.int32), stacked=stacked,
                 stacked_accepting=accepting)


def _bitsets(flags: np.ndarray) -> list[int]:
    """Rows of a bool (n, k) array as Python-int bitsets (bit t = column t)."""
    packed = np.packbits(flags, axis=1, bitorder="little")
    return [int.from_bytes(r.tobytes(), "little") for r in packed]
