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

__all__ = ["child_bytes", "fill_rows", "token_table", "walk_bytes", "walk_terminals", "walk_token"]


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
def walk_terminals(trans, alive_ptr, alive_terms, live, slot, accepts, roots, root_states, tb,
                   tdepth, tend, tok_ptr, tok_ids, rows, bnodes, bstates, max_depth):
    """Walk the subtree below each trie node ``roots[r]`` through a lexer (``trans``) from
    ``root_states[r]``, the lexer state at that node, keeping to states where a wanted terminal
    is alive (``live``). For every token read, OR it into ``rows[slot[t]]`` for each wanted
    terminal ``t`` (``slot[t] >= 0``) still alive after it (``alive_terms`` from
    ``alive_ptr[state]`` to ``alive_ptr[state + 1]``). Record the nodes below a root where a wanted terminal
    accepts (``accepts``) and the trie goes deeper, with their lexer state: ``bnodes`` and
    ``bstates``. Returns how many were recorded, or -1 if ``bnodes`` is too small."""
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
            if ns < 0 or not live[ns]:
                n = tend[n]
                continue
            stack[d] = ns
            for k in range(tok_ptr[n], tok_ptr[n + 1]):
                tok = tok_ids[k]
                w = tok >> 5
                bit = np.uint32(1) << np.uint32(tok & 31)
                for j in range(alive_ptr[ns], alive_ptr[ns + 1]):
                    i = slot[alive_terms[j]]
                    if i >= 0:
                        rows[i, w] |= bit
            if accepts[ns] and tend[n] > n + 1:
                if nb == cap:
                    return -1
                bnodes[nb] = n
                bstates[nb] = ns
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
