"""Numba kernels that walk the flat token trie through a byte DFA.

``fill_rows`` computes, for DFA states, the bitmask row of tokens whose whole byte string the DFA
can read from that state (pruning a trie subtree the moment the DFA dies). ``walk_token`` advances
one state over one token's bytes. Compiled with ``cache=True`` so the JIT cost is paid once per
machine, not per process.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange

# numba's default OpenMP layer shares libgomp with torch: it resets torch's thread count and makes
# forked workers abort. The workqueue layer shares nothing; it does not allow concurrent parallel
# launches, so they are serialized with a lock.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"
_PARALLEL_LOCK = threading.Lock()

__all__ = ["child_bytes", "fill_rows", "token_table", "walk_bytes", "walk_lexemes", "walk_token"]


@njit(cache=True, nogil=True)
def _fill_row(trans, start, tb, tdepth, tend, tok_ptr, tok_ids, row, stack):
    stack[0] = start
    n = 1
    nn = tb.shape[0]
    while n < nn:
        d = tdepth[n]
        ns = trans[stack[d - 1], tb[n]]
        if ns < 0:
            n = tend[n]
            continue
        stack[d] = ns
        for k in range(tok_ptr[n], tok_ptr[n + 1]):
            t = tok_ids[k]
            row[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
        n += 1


@njit(cache=True, parallel=True, nogil=True)
def _fill_rows_parallel(trans, states, tb, tdepth, tend, tok_ptr, tok_ids, out, max_depth):
    for i in prange(states.shape[0]):
        stack = np.empty(max_depth + 1, dtype=np.int32)
        _fill_row(trans, states[i], tb, tdepth, tend, tok_ptr, tok_ids, out[i], stack)


def fill_rows(trans: np.ndarray, states: np.ndarray, trie, out: np.ndarray) -> None:
    """OR into ``out[i]`` (uint32 words) the tokens readable from ``states[i]``."""
    with _PARALLEL_LOCK:
        _fill_rows_parallel(
            trans, states.astype(np.int32), trie.byte, trie.depth, trie.end, trie.tok_ptr,
            trie.tok_ids, out, trie.max_depth,
        )


@njit(cache=True, nogil=True)
def walk_token(trans, state, data, offsets, token):
    """DFA state after reading token ``token``'s bytes from ``state`` (-1 if it dies)."""
    for k in range(offsets[token], offsets[token + 1]):
        state = trans[state, data[k]]
        if state < 0:
            return -1
    return state


@njit(cache=True, nogil=True)
def walk_bytes(trans, state, data):
    """DFA state after ``data`` (uint8 array) from ``state`` (-1 if it dies)."""
    for k in range(data.shape[0]):
        state = trans[state, data[k]]
        if state < 0:
            return -1
    return state


@njit(cache=True, nogil=True)
def token_table(trans, data, offsets, special, out):
    """``out[s, t]`` = DFA state after token t from state s (-1: dead, special tokens, EOS)."""
    for s in range(out.shape[0]):
        for t in range(out.shape[1]):
            if special[t] or offsets[t] == offsets[t + 1]:
                out[s, t] = -1
                continue
            st = s
            for k in range(offsets[t], offsets[t + 1]):
                st = trans[st, data[k]]
                if st < 0:
                    break
            out[s, t] = st


@njit(cache=True, nogil=True)
def walk_lexemes(trans, accepts, roots, root_states, tb, tdepth, tend, tok_ptr, tok_ids, row,
                 bnodes, max_depth):
    """For each ``(roots[r], root_states[r])``: walk the subtree below trie node ``roots[r]``
    through ``trans`` from ``root_states[r]`` (the DFA state at that node), OR into ``row`` the
    tokens it can read, and record the nodes below the root where ``accepts`` holds and the trie
    goes deeper (a lexeme may end there and a next one start): ``bnodes``. Returns
    how many were recorded, or -1 if ``bnodes`` is too small."""
    stack = np.empty(max_depth + 2, dtype=np.int32)
    nb = 0
    cap = bnodes.shape[0]
    total = tb.shape[0]
    for r in range(roots.shape[0]):
        root = roots[r]
        stack[tdepth[root]] = root_states[r]
        n = root + 1
        stop = total if root == 0 else tend[root]
        while n < stop:
            d = tdepth[n]
            ns = trans[stack[d - 1], tb[n]]
            if ns < 0:
                n = tend[n]
                continue
            stack[d] = ns
            for k in range(tok_ptr[n], tok_ptr[n + 1]):
                t = tok_ids[k]
                row[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
            if accepts[ns] and tend[n] > n + 1:
                if nb == cap:
                    return -1
                bnodes[nb] = n
                nb += 1
            n += 1
    return nb


@njit(cache=True, nogil=True)
def child_bytes(roots, tb, tdepth, tend, out):
    """Set ``out[b]`` for every byte ``b`` on an edge from a node of ``roots`` to a child."""
    total = tb.shape[0]
    for r in range(roots.shape[0]):
        root = roots[r]
        n = root + 1
        stop = total if root == 0 else tend[root]
        d = tdepth[root] + 1
        while n < stop:
            if tdepth[n] == d:
                out[tb[n]] = True
            n = tend[n] if tend[n] > n else n + 1
