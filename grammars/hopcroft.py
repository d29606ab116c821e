"""Hopcroft's DFA minimization (numba): the coarsest partition of states with equal futures.

J. Hopcroft, "An n log n algorithm for minimizing states in a finite automaton", Theory of
Machines and Computations, 1971. The transition table may be partial (no sink state). Blocks are kept contiguous in one array of states (Valmari and
Lehtinen's refinable partition, 2008); the worklist holds splitter blocks, each processed for every
symbol against a snapshot of its states; when a block splits, the new part joins the worklist if
the block was waiting there, otherwise the smaller part does. A splitter is processed through
the moves into its states, grouped by symbol, so the cost is O(m log n) for n states and m
moves (a partial table has far fewer moves than n times its k symbols), where Moore's
round-based refinement needs as many rounds as the longest chain of distinguishable states (a
``maxLength: 1024`` string is a chain of 1024).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["coarsest_partition", "quotient"]


@njit(cache=True, nogil=True)
def _hopcroft(cols: np.ndarray, init: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    n, k = cols.shape
    # incoming moves per target state (CSR): symbol isym[j] from state isrc[j]. Only the moves
    # that exist are listed (a partial table has few per state: ~8 of ~70 classes), so a
    # splitter costs its incoming moves, not its states times the symbols
    iptr = np.zeros(n + 1, dtype=np.int64)
    for s in range(n):
        for a in range(k):
            if cols[s, a] >= 0:
                iptr[cols[s, a] + 1] += 1
    for t in range(n):
        iptr[t + 1] += iptr[t]
    n_moves = iptr[n]
    fill = iptr[:-1].copy()
    isym = np.empty(max(n_moves, 1), dtype=np.int32)
    isrc = np.empty(max(n_moves, 1), dtype=np.int32)
    for s in range(n):
        for a in range(k):
            t = cols[s, a]
            if t >= 0:
                isym[fill[t]] = a
                isrc[fill[t]] = s
                fill[t] += 1
    # refinable partition: the states of block b are elems[first[b]:end[b]]
    n_blocks = int(init.max()) + 1
    block = init.astype(np.int64)
    counts = np.zeros(n_blocks + 1, dtype=np.int64)
    for s in range(n):
        counts[block[s] + 1] += 1
    for b in range(n_blocks):
        counts[b + 1] += counts[b]
    cap = n + n_blocks  # block ids: the initial ones (some may be empty) and one per split
    first = np.zeros(cap, dtype=np.int64)
    end = np.zeros(cap, dtype=np.int64)
    for b in range(n_blocks):
        first[b] = counts[b]
        end[b] = counts[b + 1]
    elems = np.empty(n, dtype=np.int64)
    loc = np.empty(n, dtype=np.int64)
    pos = counts[:-1].copy()
    for s in range(n):
        b = block[s]
        elems[pos[b]] = s
        loc[s] = pos[b]
        pos[b] += 1
    marked = np.zeros(cap, dtype=np.int64)
    waiting = np.zeros(cap, dtype=np.bool_)
    work = np.empty(cap, dtype=np.int64)
    n_work = 0
    for b in range(n_blocks):
        if end[b] > first[b]:
            work[n_work] = b
            n_work += 1
            waiting[b] = True
    touched = np.empty(cap, dtype=np.int64)
    # the splitter's incoming moves grouped by symbol: sources of symbol syms[i] are
    # bsrc[bstart[syms[i]]:bfill[syms[i]]]
    bcount = np.zeros(k, dtype=np.int64)
    bstart = np.zeros(k, dtype=np.int64)
    bfill = np.zeros(k, dtype=np.int64)
    syms = np.empty(k, dtype=np.int64)
    bsrc = np.empty(max(n_moves, 1), dtype=np.int64)
    while n_work > 0:
        n_work -= 1
        sb = work[n_work]
        waiting[sb] = False
        n_syms = 0
        for x in range(first[sb], end[sb]):
            t = elems[x]
            for j in range(iptr[t], iptr[t + 1]):
                a = isym[j]
                if bcount[a] == 0:
                    syms[n_syms] = a
                    n_syms += 1
                bcount[a] += 1
        total = 0
        for i in range(n_syms):
            a = syms[i]
            bstart[a] = total
            bfill[a] = total
            total += bcount[a]
            bcount[a] = 0
        for x in range(first[sb], end[sb]):
            t = elems[x]
            for j in range(iptr[t], iptr[t + 1]):
                a = isym[j]
                bsrc[bfill[a]] = isrc[j]
                bfill[a] += 1
        for i in range(n_syms):
            a = syms[i]
            n_touched = 0
            for j in range(bstart[a], bfill[a]):
                s = bsrc[j]
                b = block[s]
                p = first[b] + marked[b]
                q = loc[s]
                if q < p:
                    continue  # already marked (cannot happen: one successor per symbol)
                other = elems[p]
                elems[p] = s
                loc[s] = p
                elems[q] = other
                loc[other] = q
                if marked[b] == 0:
                    touched[n_touched] = b
                    n_touched += 1
                marked[b] += 1
            for i2 in range(n_touched):
                b = touched[i2]
                nm = marked[b]
                marked[b] = 0
                size = end[b] - first[b]
                if nm == size:
                    continue
                nb = n_blocks
                n_blocks += 1
                first[nb] = first[b]
                end[nb] = first[b] + nm
                first[b] = end[nb]
                for x in range(first[nb], end[nb]):
                    block[elems[x]] = nb
                if waiting[b] or nm <= size - nm:
                    add = nb
                else:
                    add = b
                work[n_work] = add
                n_work += 1
                waiting[add] = True
    return block


def coarsest_partition(cols: np.ndarray, init: np.ndarray) -> np.ndarray:
    """Block id per state of the coarsest partition that refines ``init`` and is stable under the
    partial transition table ``cols`` (``(n, k)`` int32, a state in ``[0, n)`` or -1 for no
    move): states in one block move on each symbol into one block, or all have no move.
    Block ids are arbitrary non-negative integers.

    Partial tables follow Valmari and Lehtinen ("Efficient minimization of DFAs with partial
    transition functions", STACS 2008): missing moves need no sink state (whose predecessor
    lists would hold every missing move), since every initial block starts on the worklist."""
    return _hopcroft(np.ascontiguousarray(cols, dtype=np.int32), np.ascontiguousarray(init, dtype=np.int64))


@njit(cache=True, nogil=True)
def quotient(trans: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """The DFA whose states are the blocks of ``blocks`` (a partition stable under ``trans``),
    numbered by their first state in state order (so state 0's block is 0): ``(table, rep)``
    with ``table`` the transitions of each block's first state ``rep[c]`` mapped to blocks."""
    n, k = trans.shape
    label = np.full(blocks.max() + 1, -1, dtype=np.int64)
    cls = np.empty(n, dtype=np.int64)
    rep = np.empty(n, dtype=np.int64)
    m = 0
    for s in range(n):
        b = blocks[s]
        if label[b] < 0:
            label[b] = m
            rep[m] = s
            m += 1
        cls[s] = label[b]
    out = np.empty((m, k), dtype=np.int32)
    for c in range(m):
        s = rep[c]
        for a in range(k):
            t = trans[s, a]
            out[c, a] = cls[t] if t >= 0 else -1
    return out, rep[:m]
