"""Subset construction (NFA -> DFA) in numba, over byte classes.

The NFA comes as flat arrays (:class:`FlatNfa`): epsilon moves and byte-range edges, each sorted
by source state (CSR). A DFA state is the set of "important" NFA states (those with edges,
and the final state 0) its input can be in; sets are kept in one growing pool and interned in an
open-addressing hash table. Bytes that every edge treats alike share a class, so a DFA row is
computed per class (the caller expands it to 256 bytes, after minimizing). The target set of a class (before its
epsilon closure) is interned too, so a target set met again is not closed again.

The work runs in slices of DFA states (:func:`subset_slice`), so the caller can check its time
limit between slices. The result is the raw (untrimmed, unminimized) DFA:
:func:`grammars.automaton.build_dfa` trims and minimizes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["FlatNfa", "TooManyStates", "hash_weights", "subset_construction"]


class TooManyStates(Exception):
    """The DFA would exceed the state limit given to :func:`subset_construction`."""


@dataclass(frozen=True)
class FlatNfa:
    """An NFA as arrays. States ``0..n-1``; state 0 is the only final state. Epsilon moves of
    state ``s``: ``eps_dst[eps_ptr[s]:eps_ptr[s + 1]]``; byte edges of ``s``: indices
    ``edge_ptr[s]`` to ``edge_ptr[s + 1]`` of ``edge_lo``/``edge_hi`` (inclusive bytes) and
    ``edge_dst``."""

    n: int
    eps_ptr: np.ndarray
    eps_dst: np.ndarray
    edge_ptr: np.ndarray
    edge_lo: np.ndarray
    edge_hi: np.ndarray
    edge_dst: np.ndarray

    @classmethod
    def from_lists(cls, n: int, eps: list[int], edges: list[int]) -> FlatNfa:
        """From flat Python lists: ``eps`` holds pairs ``(src, dst)``, ``edges`` quadruples
        ``(src, lo, hi, dst)``."""
        return cls.from_arrays(n, np.array(eps, dtype=np.int32), np.array(edges, dtype=np.int32))

    @classmethod
    def from_arrays(cls, n: int, eps: np.ndarray, edges: np.ndarray) -> FlatNfa:
        """From flat int32 arrays: ``eps`` holds pairs ``(src, dst)``, ``edges`` quadruples
        ``(src, lo, hi, dst)`` (each state's moves kept in their order)."""
        eps_ptr, eps_dst, edge_ptr, edge_lo, edge_hi, edge_dst = _csr(
            n, np.ascontiguousarray(eps, dtype=np.int32), np.ascontiguousarray(edges, dtype=np.int32))
        return cls(n=n, eps_ptr=eps_ptr, eps_dst=eps_dst, edge_ptr=edge_ptr, edge_lo=edge_lo,
                   edge_hi=edge_hi, edge_dst=edge_dst)


@njit(cache=True, nogil=True)
def _csr(n, eps, edges):  # pragma: no cover - numba
    """Counting sort of the moves by source state (stable): pointers and columns."""
    ne, nq = eps.shape[0] // 2, edges.shape[0] // 4
    eps_ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(ne):
        eps_ptr[eps[2 * i] + 1] += 1
    edge_ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(nq):
        edge_ptr[edges[4 * i] + 1] += 1
    for s in range(n):
        eps_ptr[s + 1] += eps_ptr[s]
        edge_ptr[s + 1] += edge_ptr[s]
    fill = eps_ptr[:n].copy()
    eps_dst = np.empty(ne, dtype=np.int32)
    for i in range(ne):
        src = eps[2 * i]
        eps_dst[fill[src]] = eps[2 * i + 1]
        fill[src] += 1
    fill = edge_ptr[:n].copy()
    edge_lo = np.empty(nq, dtype=np.int32)
    edge_hi = np.empty(nq, dtype=np.int32)
    edge_dst = np.empty(nq, dtype=np.int32)
    for i in range(nq):
        src = edges[4 * i]
        j = fill[src]
        edge_lo[j] = edges[4 * i + 1]
        edge_hi[j] = edges[4 * i + 2]
        edge_dst[j] = edges[4 * i + 3]
        fill[src] = j + 1
    return eps_ptr, eps_dst, edge_ptr, edge_lo, edge_hi, edge_dst


@njit(cache=True, nogil=True)
def _hash(key, weights):  # pragma: no cover - numba
    """Order-independent hash of a set of states: the wrapping sum of their random weights."""
    h = np.uint64(0)
    for x in key:
        h += weights[x]
    return h


@njit(cache=True, nogil=True)
def _find(table, hashes, pool, ptr, size, h, mark, stamp):  # pragma: no cover - numba
    """Slot of the set whose ``size`` members carry ``mark[x] == stamp`` in ``table`` (value =
    its id, whose members are ``pool[ptr[id]:ptr[id + 1]]``) or of the empty slot where it would
    go; returns ``(slot, id or -1)``. Sets are compared through the marks, so members need no
    order."""
    mask = table.shape[0] - 1
    j = np.int64(h & np.uint64(mask))
    while True:
        v = table[j]
        if v < 0:
            return j, -1
        if hashes[v] == h and ptr[v + 1] - ptr[v] == size:
            same = True
            for k in range(ptr[v], ptr[v + 1]):
                if mark[pool[k]] != stamp:
                    same = False
                    break
            if same:
                return j, v
        j = (j + 1) & mask


@njit(cache=True, nogil=True)
def _store(table, hashes, pool, ptr, idx, key, h, slot):  # pragma: no cover - numba
    """Add ``key`` as set ``idx`` (the next one) at ``slot`` of ``table`` (from :func:`_find`);
    the caller has made room."""
    base = ptr[idx]
    for x in range(key.shape[0]):
        pool[base + x] = key[x]
    ptr[idx + 1] = base + key.shape[0]
    hashes[idx] = h
    table[slot] = idx


@njit(cache=True, nogil=True)
def _rehash(table, hashes, count):  # pragma: no cover - numba
    new = np.full(table.shape[0] * 2, -1, dtype=np.int32)
    mask = new.shape[0] - 1
    for v in range(count):
        j = np.int64(hashes[v] & np.uint64(mask))
        while new[j] >= 0:
            j = (j + 1) & mask
        new[j] = v
    return new


@njit(cache=True, nogil=True)
def _close(seg, eps_ptr, eps_dst, important, mark, gen, stack, out):  # pragma: no cover - numba
    """The important states epsilon-reachable from ``seg`` into ``out`` (in no order); returns
    how many. Every state reached gets ``mark[x] = gen`` (``gen`` must be new)."""
    top = 0
    m = 0
    for x in range(seg.shape[0]):
        t = seg[x]
        if mark[t] != gen:
            mark[t] = gen
            stack[top] = t
            top += 1
    while top > 0:
        top -= 1
        t = stack[top]
        if important[t]:
            out[m] = t
            m += 1
        for q in range(eps_ptr[t], eps_ptr[t + 1]):
            u = eps_dst[q]
            if mark[u] != gen:
                mark[u] = gen
                stack[top] = u
                top += 1
    return m


# slice outcomes
_DONE, _GROW, _LIMIT = 0, 1, 2


@njit(cache=True, nogil=True)
def subset_slice(eps_ptr, eps_dst, edge_ptr, edge_cl, edge_ch, edge_dst, important, weights,
                 n_cls, max_states, budget, counts, tables, hashes, pools, ptrs, rows, pval,
                 accepting, marks, stack, closed):  # pragma: no cover - numba
    """Process DFA states from ``counts[0]`` on, at most ``budget`` of them. ``counts``: [next
    DFA state to process, DFA states, target sets, stamp]. Index 0 of ``tables``/``hashes``/
    ``pools``/``ptrs`` holds the DFA states' sets of NFA states, index 1 the target sets
    before closure (their DFA state in ``pval``); ``marks`` are the stamps for comparing them.
    Returns ``_DONE`` (slice finished), ``_GROW`` (an array is full: the caller grows it and
    calls again; the state being processed restarts and finds what it added) or ``_LIMIT``
    (over ``max_states``)."""
    cnt = np.zeros(n_cls + 1, dtype=np.int64)
    i = counts[0]
    done = 0
    while i < counts[1] and done < budget:
        base, stop = ptrs[0, i], ptrs[0, i + 1]
        for k in range(n_cls + 1):
            cnt[k] = 0
        for p in range(base, stop):
            s = pools[0, p]
            for e in range(edge_ptr[s], edge_ptr[s + 1]):
                for k in range(edge_cl[e], edge_ch[e] + 1):
                    cnt[k + 1] += 1
        for k in range(n_cls):
            cnt[k + 1] += cnt[k]
        bdst = np.empty(cnt[n_cls], dtype=np.int32)
        fill = np.empty(n_cls, dtype=np.int64)
        for k in range(n_cls):
            fill[k] = cnt[k]
        for p in range(base, stop):
            s = pools[0, p]
            for e in range(edge_ptr[s], edge_ptr[s + 1]):
                d = edge_dst[e]
                for k in range(edge_cl[e], edge_ch[e] + 1):
                    bdst[fill[k]] = d
                    fill[k] += 1
        for k in range(n_cls):
            lo, hi = cnt[k], cnt[k + 1]
            if lo == hi:
                rows[i, k] = -1
                continue
            # the distinct targets, in place
            counts[3] += 1
            stamp = counts[3]
            m = 0
            for x in range(lo, hi):
                t = bdst[x]
                if marks[1, t] != stamp:
                    marks[1, t] = stamp
                    bdst[lo + m] = t
                    m += 1
            seg = bdst[lo: lo + m]
            h = _hash(seg, weights)
            pslot, j = _find(tables[1], hashes[1], pools[1], ptrs[1], m, h, marks[1], stamp)
            if j >= 0:
                rows[i, k] = pval[j]
                continue
            mc = _close(seg, eps_ptr, eps_dst, important, marks[0], stamp, stack, closed)
            key = closed[:mc]
            hk = _hash(key, weights)
            slot, j = _find(tables[0], hashes[0], pools[0], ptrs[0], mc, hk, marks[0], stamp)
            n_pre = counts[2]
            if (n_pre + 2 > pval.shape[0] or ptrs[1, n_pre] + m > pools.shape[1]
                    or 2 * (n_pre + 1) > tables.shape[1]):
                return _GROW
            if j < 0:
                n = counts[1]
                if n >= max_states:
                    return _LIMIT
                if (n + 2 > rows.shape[0] or ptrs[0, n] + mc > pools.shape[1]
                        or 2 * (n + 1) > tables.shape[1]):
                    return _GROW
                _store(tables[0], hashes[0], pools[0], ptrs[0], n, key, hk, slot)
                accepting[n] = marks[0, 0] == stamp
                j = n
                counts[1] = n + 1
            _store(tables[1], hashes[1], pools[1], ptrs[1], n_pre, seg, h, pslot)
            pval[n_pre] = j
            counts[2] = n_pre + 1
            rows[i, k] = j
        i += 1
        counts[0] = i
        done += 1
    return _DONE


@njit(cache=True, nogil=True)
def _prepare(eps_ptr, eps_dst, edge_ptr, edge_lo, edge_hi, raw_weights, start,
             max_states, min_pool):  # pragma: no cover - numba
    """The arrays :func:`subset_construction` starts from, with DFA state 0 (the closure of
    ``start``) stored (one call: building them with numpy took ~25 us of a small DFA's ~45)."""
    n = eps_ptr.shape[0] - 1
    important = np.zeros(n, dtype=np.bool_)
    important[0] = True
    for s in range(n):
        if edge_ptr[s + 1] > edge_ptr[s]:
            important[s] = True
    # byte classes: a new class starts at every edge's lo and after every edge's hi
    starts = np.zeros(257, dtype=np.bool_)
    starts[0] = True
    for e in range(edge_lo.shape[0]):
        starts[edge_lo[e]] = True
        starts[edge_hi[e] + 1] = True
    cls = np.empty(256, dtype=np.int32)
    c = -1
    for b in range(256):
        if starts[b]:
            c += 1
        cls[b] = c
    edge_cl = np.empty(edge_lo.shape[0], dtype=np.int32)
    edge_ch = np.empty(edge_lo.shape[0], dtype=np.int32)
    for e in range(edge_lo.shape[0]):
        edge_cl[e] = cls[edge_lo[e]]
        edge_ch[e] = cls[edge_hi[e]]
    weights = np.empty(n, dtype=np.uint64)
    for x in range(n):
        weights[x] = np.uint64(raw_weights[x]) * np.uint64(2) + np.uint64(1)  # odd
    marks = np.zeros((2, n), dtype=np.int64)
    stack = np.empty(n, dtype=np.int32)
    closed = np.empty(n, dtype=np.int32)
    seed = np.empty(1, dtype=np.int32)
    seed[0] = start
    m = _close(seed, eps_ptr, eps_dst, important, marks[0], 1, stack, closed)
    # raw DFAs of JSON Schemas have ~n/6 states (Thompson NFAs are mostly chains): start there,
    # never past the state limit, since growing the tables costs a copy of each
    bits_n = 0
    while (n // 4) >> bits_n:
        bits_n += 1
    bits_max = 0
    while (max_states + 2) >> bits_max:
        bits_max += 1
    cap_sets = 1 << max(10, min(bits_n, bits_max))
    cap_pool = max(min_pool, 4 * m, 8 * cap_sets)
    tables = np.full((2, 2 * cap_sets), -1, dtype=np.int32)
    hashes = np.zeros((2, cap_sets), dtype=np.uint64)
    pools = np.empty((2, cap_pool), dtype=np.int32)
    ptrs = np.zeros((2, cap_sets + 1), dtype=np.int64)
    rows = np.empty((cap_sets, c + 1), dtype=np.int32)
    pval = np.empty(cap_sets, dtype=np.int32)
    accepting = np.zeros(cap_sets, dtype=np.bool_)
    accepting[0] = marks[0, 0] == 1
    first = closed[:m]
    h = _hash(first, weights)
    tables[0, np.int64(h & np.uint64(tables.shape[1] - 1))] = 0
    hashes[0, 0] = h
    pools[0, :m] = first
    ptrs[0, 1] = m
    return (important, cls, edge_cl, edge_ch, weights, marks, stack, closed, tables, hashes,
            pools, ptrs, rows, pval, accepting)


def subset_construction(nfa: FlatNfa, start: int, *, max_states: int,
                        check: Callable[[], None] | None = None,
                        slice_states: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The DFA of ``nfa`` from ``start`` over byte classes: ``(trans, cls, accepting)`` with
    ``trans`` int32 ``(n, classes)`` (-1 = no move), ``cls[byte]`` the class of each byte (classes
    are runs of consecutive bytes, numbered in byte order; ``trans[:, cls]`` is the byte table)
    and state 0 the start. Calls ``check()`` between slices of
    ``slice_states`` DFA states (it may raise, e.g. past a time limit); raises
    :class:`TooManyStates` when the DFA would exceed ``max_states`` states."""
    n = nfa.n
    (important, cls, edge_cl, edge_ch, weights, marks, stack, closed, tables, hashes, pools, ptrs,
     rows, pval, accepting) = _prepare(nfa.eps_ptr, nfa.eps_dst, nfa.edge_ptr, nfa.edge_lo,
                                       nfa.edge_hi, hash_weights(n), start, max_states, 1 << 16)
    n_cls = int(cls[-1]) + 1
    counts = np.array([0, 1, 0, 1], dtype=np.int64)  # next, DFA states, target sets, generation
    while True:
        status = subset_slice(nfa.eps_ptr, nfa.eps_dst, nfa.edge_ptr, edge_cl, edge_ch,
                              nfa.edge_dst, important, weights, n_cls, max_states, slice_states,
                              counts, tables, hashes, pools, ptrs, rows, pval, accepting, marks,
                              stack, closed)
        if status == _LIMIT:
            raise TooManyStates(max_states)
        if status == _GROW:
            used = max(int(ptrs[0, counts[1]]), int(ptrs[1, counts[2]]))
            if used + n > pools.shape[1]:
                pools = _grown(pools, used + n, axis=1)
            if max(counts[1], counts[2]) + 2 > hashes.shape[1]:
                size = 2 * hashes.shape[1]
                hashes = _grown(hashes, size, axis=1)
                ptrs = _grown(ptrs, size + 1, axis=1)
                rows = _grown(rows, size, axis=0)
                pval = _grown(pval, size, axis=0)
                accepting = _grown(accepting, size, axis=0)
                tables = np.stack([_rehash(tables[0], hashes[0], counts[1]),
                                   _rehash(tables[1], hashes[1], counts[2])])
            continue
        if counts[0] >= counts[1]:
            break
        if check is not None:
            check()
    n_dfa = int(counts[1])
    return np.ascontiguousarray(rows[:n_dfa]), cls, accepting[:n_dfa].copy()


_WEIGHTS: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]


def hash_weights(n: int) -> np.ndarray:
    """``n`` fixed random int64 weights in ``[1, 2**62)`` (one draw, extended as needed) for
    order-free hashes of sets and columns."""
    w = _WEIGHTS[0]
    if len(w) < n:
        rng = np.random.default_rng(0xC01 + len(w))
        w = _WEIGHTS[0] = np.concatenate(
            [w, rng.integers(1, 2**62, size=max(n, 2 * len(w)) - len(w), dtype=np.int64)])
    return w[:n]


def _grown(a: np.ndarray, size: int, *, axis: int) -> np.ndarray:
    """``a`` with axis ``axis`` enlarged to at least ``size`` (doubling), the old entries kept."""
    new = a.shape[axis]
    while new < size:
        new *= 2
    shape = list(a.shape)
    shape[axis] = new
    out = np.empty(shape, dtype=a.dtype)
    out[(slice(None),) * axis + (slice(0, a.shape[axis]),)] = a
    return out
