"""Many small DFAs in one numba call: a context-free grammar's terminals.

For each requested node of a flattened program (:class:`grammars.nfabuild.Program`) this runs,
without returning to Python, what :func:`grammars.automaton.build_dfa` runs step by step: the
Thompson NFA (:mod:`grammars.nfabuild`), the subset construction over byte classes
(:mod:`grammars.subset`), trimming (:mod:`grammars.reach`), Hopcroft's minimization
(:mod:`grammars.hopcroft`) and the expansion of the class table to 256 bytes. The kernels are
the same, so the DFAs are identical to ``build_dfa``'s; what goes away is the Python glue
between them (~10 numba dispatches and a few numpy calls per DFA: ~45 us of a JSON terminal's
~50). A node whose NFA or DFA would outgrow the small tables this path uses, or whose language
is empty, or that is not regular, is reported back (``status``) so that the caller builds it the
general way, with its time limit checks and typed errors.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from grammars.hopcroft import _hopcroft, quotient
from grammars.nfabuild import _GROW as _NFA_GROW
from grammars.nfabuild import _OK, Program, _build_all
from grammars.reach import live_order, renumber
from grammars.subset import _DONE, _csr, _prepare, hash_weights, subset_slice

__all__ = ["SMALL_NFA_STATES", "small_dfas"]

#: NFA states up to which a node is built here (its DFA: at most 1024 states, the subset
#: construction's first table size); larger ones are left to the general path.
SMALL_NFA_STATES = 4096
_SMALL_DFA_STATES = 1024

# status per node
OK, GENERAL = 0, 1


def small_dfas(prog: Program, tops: list[int], *, max_states: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(trans, accepting, offsets, status)``: for the ``i``-th of ``tops`` with
    ``status[i] == OK``, its trimmed, minimized DFA is ``trans[offsets[i]:offsets[i + 1]]``
    (int32, 256 columns, -1 for no move, state 0 the start) with ``accepting`` likewise; the
    others (``GENERAL``) must be built by :func:`grammars.automaton.build_dfa`'s path (those
    too whose raw DFA would exceed ``max_states`` states, so that it raises as it does)."""
    return _small_dfas(np.asarray(tops, dtype=np.int64), prog.kind, prog.f, prog.data, prog.ints,
                       prog.auto, prog.rule_body, hash_weights(SMALL_NFA_STATES),
                       min(max_states, _SMALL_DFA_STATES))


@njit(cache=True, nogil=True)
def _small_dfas(tops, kind, f, data, ints, auto, rule_body, weights, max_dfa):  # pragma: no cover - numba
    n_tops = tops.shape[0]
    status = np.zeros(n_tops, dtype=np.int8)
    offsets = np.zeros(n_tops + 1, dtype=np.int64)
    out = np.empty((64, 256), dtype=np.int32)
    out_acc = np.empty(64, dtype=np.bool_)
    used = 0
    cap_eps, cap_edges = 1 << 10, 1 << 12
    for i in range(n_tops):
        offsets[i] = used
        # the NFA (state 0 final), grown until it fits or is too large
        while True:
            eps = np.empty(cap_eps, dtype=np.int32)
            edges = np.empty(cap_edges, dtype=np.int32)
            cnt = np.zeros(5, dtype=np.int64)
            start = _build_all(tops[i], kind, f, data, ints, auto, rule_body, eps, edges, cnt,
                               SMALL_NFA_STATES)
            if cnt[3] != _NFA_GROW:
                break
            cap_eps = max(cap_eps, 2 * cnt[1] + 2)
            cap_edges = max(cap_edges, 2 * cnt[2] + 8)
        if cnt[3] != _OK:
            status[i] = GENERAL
            offsets[i + 1] = used
            continue
        n = cnt[0]
        eps_ptr, eps_dst, edge_ptr, edge_lo, edge_hi, edge_dst = _csr(n, eps[: cnt[1]],
                                                                      edges[: cnt[2]])
        (important, cls, edge_cl, edge_ch, w, marks, stack, closed, tables, hashes, pools, ptrs,
         rows, pval, accepting) = _prepare(eps_ptr, eps_dst, edge_ptr, edge_lo, edge_hi, weights,
                                           start, max_dfa, 0)
        n_cls = cls[255] + 1
        counts = np.zeros(4, dtype=np.int64)
        counts[1] = 1
        counts[3] = 1
        st = subset_slice(eps_ptr, eps_dst, edge_ptr, edge_cl, edge_ch, edge_dst, important, w,
                          n_cls, max_dfa, max_dfa + 1, counts, tables, hashes,
                          pools, ptrs, rows, pval, accepting, marks, stack, closed)
        if st != _DONE or counts[0] < counts[1]:
            status[i] = GENERAL
            offsets[i + 1] = used
            continue
        m = counts[1]
        trans = rows[:m]
        acc = accepting[:m]
        live, keep = live_order(trans, acc)
        if keep.shape[0] == 0:
            status[i] = GENERAL  # empty language: the general path raises
            offsets[i + 1] = used
            continue
        trans = renumber(trans, live, keep)
        acc = acc[keep]
        if trans.shape[0] > 1:
            blocks = _hopcroft(trans, acc.astype(np.int64))
            mapped, rep = quotient(trans, blocks)
            if rep.shape[0] < trans.shape[0]:
                acc = acc[rep]
                live, keep = live_order(mapped, acc)
                trans = renumber(mapped, live, keep)
                acc = acc[keep]
        k = trans.shape[0]
        if used + k > out.shape[0]:
            size = out.shape[0]
            while used + k > size:
                size *= 2
            grown = np.empty((size, 256), dtype=np.int32)
            grown[:used] = out[:used]
            out = grown
            grown_acc = np.empty(size, dtype=np.bool_)
            grown_acc[:used] = out_acc[:used]
            out_acc = grown_acc
        for s in range(k):
            for b in range(256):
                out[used + s, b] = trans[s, cls[b]]
            out_acc[used + s] = acc[s]
        used += k
        offsets[i + 1] = used
    return out[:used], out_acc[:used], offsets, status
