"""Numba kernels that walk the flat token trie through a byte DFA.

``fill_rows`` computes, for DFA states, the bitmask row of tokens whose whole byte string the DFA
can read from that state (pruning a trie subtree the moment the DFA dies; tokens known to be
readable from a JSON string-body loop are set without a walk). ``walk_token`` advances
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

__all__ = ["accept_nodes", "accepts_inside", "child_bytes", "entry_bytes", "fill_rows", "loop_like", "outside_prefix",
           "split_ends", "token_table", "walk_bytes", "walk_states", "walk_token"]


@njit(cache=True, nogil=True)
def _fill_row(trans, start, tb, tdepth, tend, tok_ptr, tok_ids, tfirst, row, stack, first_ok):
    """OR into ``row`` the tokens readable from ``start``, walking only the subtrees whose first
    byte ``b`` has ``first_ok[b]`` and a move from ``start``."""
    stack[0] = start
    for b in range(256):
        r = tfirst[b]
        if r < 0 or not first_ok[b]:
            continue
        s1 = trans[start, b]
        if s1 < 0:
            continue
        stack[1] = s1
        for k in range(tok_ptr[r], tok_ptr[r + 1]):
            t = tok_ids[k]
            row[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
        n = r + 1
        e = tend[r]
        while n < e:
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


@njit(cache=True, nogil=True)
def _fill_state(i, trans, states, whole, direct, plain_mask, first_mask, first_ptr, first_ids, tb,
                tdepth, tend, tok_ptr, tok_ids, tfirst, ob, odepth, oend, optr, oids, ofirst, out,
                max_depth):  # pragma: no cover - numba
    """Row ``out[states[i]]`` (see :func:`fill_rows`)."""
    stack = np.empty(max_depth + 1, dtype=np.int32)
    row = out[states[i]]
    if whole[i]:
        for w in range(row.shape[0]):
            row[w] |= plain_mask[w]
        every = np.ones(256, dtype=np.bool_)
        _fill_row(trans, states[i], ob, odepth, oend, optr, oids, ofirst, row, stack, every)
        return
    walk_all = np.empty(256, dtype=np.bool_)
    n_direct = 0
    n_first = 0  # first bytes that have plain tokens
    for b in range(256):
        walk_all[b] = not direct[i, b]
        if first_ptr[b + 1] > first_ptr[b]:
            n_first += 1
            if direct[i, b]:
                n_direct += 1
    if 2 * n_direct > n_first:
        # most first bytes are direct: copy all the plain tokens that have a first byte
        # listed, then clear those of the first bytes that are not direct
        for w in range(row.shape[0]):
            row[w] |= first_mask[w]
        for b in range(256):
            if not direct[i, b]:
                for k in range(first_ptr[b], first_ptr[b + 1]):
                    t = first_ids[k]
                    row[t >> 5] &= ~(np.uint32(1) << np.uint32(t & 31))
    else:
        for b in range(256):
            if direct[i, b]:
                for k in range(first_ptr[b], first_ptr[b + 1]):
                    t = first_ids[k]
                    row[t >> 5] |= np.uint32(1) << np.uint32(t & 31)
    _fill_row(trans, states[i], tb, tdepth, tend, tok_ptr, tok_ids, tfirst, row, stack, walk_all)
    if n_direct > 0:
        _fill_row(trans, states[i], ob, odepth, oend, optr, oids, ofirst, row, stack, direct[i])


@njit(cache=True, parallel=True, nogil=True)
def _fill_rows_parallel(trans, states, whole, direct, plain_mask, first_mask, first_ptr, first_ids,
                        tb, tdepth, tend, tok_ptr, tok_ids, tfirst, ob, odepth, oend, optr, oids,
                        ofirst, out, max_depth):  # pragma: no cover - numba
    for i in prange(states.shape[0]):
        _fill_state(i, trans, states, whole, direct, plain_mask, first_mask, first_ptr, first_ids,
                    tb, tdepth, tend, tok_ptr, tok_ids, tfirst, ob, odepth, oend, optr, oids, ofirst,
                    out, max_depth)


@njit(cache=True, nogil=True)
def _fill_rows_serial(trans, states, whole, direct, plain_mask, first_mask, first_ptr, first_ids,
                      tb, tdepth, tend, tok_ptr, tok_ids, tfirst, ob, odepth, oend, optr, oids,
                      ofirst, out, max_depth):  # pragma: no cover - numba
    for i in range(states.shape[0]):
        _fill_state(i, trans, states, whole, direct, plain_mask, first_mask, first_ptr, first_ids,
                    tb, tdepth, tend, tok_ptr, tok_ids, tfirst, ob, odepth, oend, optr, oids, ofirst,
                    out, max_depth)


# launching the parallel region costs ~0.2-0.3 ms (workqueue layer): a few rows go serially
# (measured: the 68 terminal states of the JSON grammar 0.17 ms serially, 0.42 in parallel;
# SQL's 306, 22 against 16 ms; JSON Schema DFAs broke even at a few hundred states)
SERIAL_ROWS = 128


def fill_rows(trans: np.ndarray, states: np.ndarray, whole: np.ndarray, direct: np.ndarray,
              plain_mask: np.ndarray, first_mask: np.ndarray, first_ptr: np.ndarray,
              first_ids: np.ndarray, trie, other_trie, out: np.ndarray) -> None:
    """OR into ``out[states[i]]`` (uint32 words, distinct states) the tokens readable from
    ``states[i]``, walking the token trie only where a row is not known without it (the tokens
    are split into "plain" ones, ``plain_mask``, and the rest, ``other_trie``; ``trie`` has them
    all). When ``whole[i]``, every plain token is readable from ``states[i]`` and only ``other_trie``
    is walked. Otherwise, for every first byte ``b`` with ``direct[i, b]`` the plain tokens
    ``first_ids[first_ptr[b]:first_ptr[b + 1]]`` are readable (set without a walk) and
    ``other_trie`` holds the rest of the tokens starting with ``b``; the other first bytes walk
    ``trie``. ``first_mask`` holds the tokens of ``first_ids`` as bits; the rows of ``out`` must
    start at zero. Exact when the caller's claims hold (see ``CompiledGrammar.compute_masks``)."""
    depth = max(trie.max_depth, other_trie.max_depth)
    args = (trans, states.astype(np.int64), whole, direct, plain_mask, first_mask, first_ptr,
            first_ids, trie.byte, trie.depth, trie.end, trie.tok_ptr, trie.tok_ids, trie.first,
            other_trie.byte, other_trie.depth, other_trie.end, other_trie.tok_ptr,
            other_trie.tok_ids, other_trie.first, out, depth)
    if len(states) <= SERIAL_ROWS:
        _fill_rows_serial(*args)
        return
    with _PARALLEL_LOCK:
        _fill_rows_parallel(*args)


@njit(cache=True, nogil=True)
def entry_bytes(trans, states, loops, plain_bytes):  # pragma: no cover - numba
    """``out[i, b]``: byte ``b`` of ``plain_bytes`` leads from ``states[i]`` into a state with
    ``loops`` (the ``direct`` argument of :func:`fill_rows`)."""
    out = np.zeros((states.shape[0], 256), dtype=np.bool_)
    for i in range(states.shape[0]):
        row = trans[states[i]]
        for b in plain_bytes:
            t = row[b]
            if t >= 0 and loops[t]:
                out[i, b] = True
    return out


@njit(cache=True, nogil=True)
def loop_like(trans, canon, loop_bytes):
    """Which states of ``trans`` read every byte string the DFA ``canon`` reads from its state 0,
    state for state: from ``(0, s)`` the two walk in lockstep, each ``canon`` state mapped to one
    state of ``trans`` that is alive wherever ``canon`` is. Only states that return to
    themselves on every byte of ``loop_bytes`` are candidates (the others are False)."""
    n = trans.shape[0]
    nc = canon.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    mapping = np.empty(nc, dtype=np.int32)
    stack = np.empty(nc, dtype=np.int32)
    for s in range(n):
        cand = True
        for b in loop_bytes:
            if trans[s, b] != s:
                cand = False
                break
        if not cand:
            continue
        mapping[:] = -1
        mapping[0] = s
        stack[0] = 0
        top = 1
        ok = True
        while top > 0 and ok:
            top -= 1
            c = stack[top]
            o = mapping[c]
            for b in range(256):
                c2 = canon[c, b]
                if c2 < 0:
                    continue
                o2 = trans[o, b]
                if o2 < 0:
                    ok = False
                    break
                if mapping[c2] < 0:
                    mapping[c2] = o2
                    stack[top] = c2
                    top += 1
                elif mapping[c2] != o2:
                    ok = False
                    break
        out[s] = ok
    return out


@njit(cache=True, nogil=True)
def walk_token(trans, state, data, offsets, token):
    """DFA state after reading token ``token``'s bytes from ``state`` (-1 if it dies)."""
    for k in range(offsets[token], offsets[token + 1]):
        state = trans[state, data[k]]
        if state < 0:
            return -1
    return state


@njit(cache=True, nogil=True)
def walk_tokens(trans, state, data, offsets, out):  # pragma: no cover - numba
    """``out[t]``: :func:`walk_token` of every token ``t < len(out)`` from ``state``."""
    for t in range(out.shape[0]):
        s = state
        for k in range(offsets[t], offsets[t + 1]):
            s = trans[s, data[k]]
            if s < 0:
                break
        out[t] = s


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
def outside_prefix(row, tok_ids, pre):  # pragma: no cover - numba
    """``pre[k]``: how many of the trie's tokens ``tok_ids[:k]`` (preorder) are not in ``row``
    (uint32 words). Node ``n``'s subtree holds such a token exactly when
    ``pre[tok_ptr[end[n]]] > pre[tok_ptr[n]]``, strictly below ``n`` when
    ``pre[tok_ptr[end[n]]] > pre[tok_ptr[n + 1]]`` (one pass over the tokens, no branches)."""
    acc = 0
    pre[0] = 0
    for k in range(tok_ids.shape[0]):
        x = tok_ids[k]
        acc += 1 - ((row[x >> 5] >> (x & 31)) & 1)
        pre[k + 1] = acc


@njit(cache=True, nogil=True)
def accepts_inside(trans, accepting, start, tb, tdepth, tend, stack):  # pragma: no cover - numba
    """Whether the DFA ``trans``, reading the token trie from ``start`` at the root, accepts at
    some node that has children (where a lexeme could end inside a token)."""
    total = tb.shape[0]
    stack[0] = start
    # the nodes one and two bytes deep first: the usual witness is there (a closing quote, or
    # quote and colon, with tokens going on after it), and preorder may reach it only after
    # whole large subtrees; then every node
    for shallow in (True, False):
        n = 1
        while n < total:
            s = trans[stack[tdepth[n] - 1], tb[n]]
            if s < 0:
                n = tend[n]
                continue
            if accepting[s] and tend[n] > n + 1:
                return True
            if shallow and tdepth[n] >= 2:
                n = tend[n]
                continue
            stack[tdepth[n]] = s
            n += 1
    return False


@njit(cache=True, nogil=True)
def accept_nodes(trans, accepting, start, tb, tdepth, tend, tok_ptr, pre, stack,
                 out):  # pragma: no cover - numba
    """Read the token trie through the DFA ``trans`` from ``start`` at the root; write into
    ``out`` the nodes where the DFA accepts and that have a token strictly below them not counted
    in ``pre`` (:func:`outside_prefix`), in preorder. Subtrees without such tokens are skipped.
    Returns how many were written."""
    total = tb.shape[0]
    stack[0] = start
    cnt = 0
    n = 1
    while n < total:
        e = tend[n]
        if pre[tok_ptr[e]] == pre[tok_ptr[n + 1]]:
            n = e
            continue
        s = trans[stack[tdepth[n] - 1], tb[n]]
        if s < 0:
            n = e
            continue
        stack[tdepth[n]] = s
        if accepting[s]:
            out[cnt] = n
            cnt += 1
        n += 1
    return cnt


@njit(cache=True, nogil=True)
def walk_states(trans, live, accepts, roots, tb, tdepth, tend, tok_ptr, tok_ids, bnodes, bstates,
                sets, mark, sidx, used, srows, pre, prune, counts):  # pragma: no cover - numba
    """Read the token trie through a lexer (``trans``, -1 dead) from the *roots*: below trie node
    ``roots[r]`` (sorted) a lexeme starts in lexer state 0. Every node gets the set of lexer
    states the input can be in there (one per root above it, deduplicated, kept to the ``live``
    ones), so nested roots are read in one pass.

    Each token whose node has states is ORed into the row (``srows``) of each of those states:
    the states met are ``used[:counts[0]]``, state ``used[r]`` has row ``srows[r]`` (``sidx``:
    state -> row, -1 elsewhere; back to -1 for the used states on return). The nodes with
    children where a state ``accepts`` (some terminal accepts) are recorded with that state in
    ``bnodes``/``bstates`` (``counts[1]`` of them). ``sets`` (trie depth + 2, lexer states) and
    ``mark`` (lexer states, zeros) are scratch. Returns 0, or 1 when ``bnodes`` is too small, 2
    when ``srows`` is (walk again with more room: the rows are rebuilt).

    With ``prune``, only tokens counted in ``pre`` (:func:`outside_prefix`) matter: subtrees
    without one are skipped (their tokens may or may not be set) and a node is recorded only
    when one lies strictly below it."""
    cnt = np.zeros(sets.shape[0], dtype=np.int32)
    seed = np.full(sets.shape[0], -1, dtype=np.int32)  # per depth on the path: root or -1
    n_used = 0
    words = srows.shape[1]
    cap = bnodes.shape[0]
    total = tb.shape[0]
    nb = 0
    gen = 0
    ri = 0
    status = 0
    n_roots = roots.shape[0]
    while ri < n_roots and status == 0:
        top = roots[ri]
        cnt[tdepth[top]] = 0
        seed[tdepth[top]] = 0
        ri += 1
        stop = total if top == 0 else tend[top]
        n = top + 1
        while n < stop:
            if prune and pre[tok_ptr[tend[n]]] == pre[tok_ptr[n]]:
                e = tend[n]
                while ri < n_roots and roots[ri] < e:  # no root lies there (callers' roots
                    ri += 1  # have such tokens below them), but stay in step if one did
                n = e
                continue
            d = tdepth[n]
            b = tb[n]
            gen += 1
            c = 0
            if seed[d - 1] >= 0:
                ns = trans[seed[d - 1], b]
                if ns >= 0 and live[ns]:
                    mark[ns] = gen
                    sets[d, 0] = ns
                    c = 1
            for k in range(cnt[d - 1]):
                ns = trans[sets[d - 1, k], b]
                if ns >= 0 and live[ns] and mark[ns] != gen:
                    mark[ns] = gen
                    sets[d, c] = ns
                    c += 1
            cnt[d] = c
            if ri < n_roots and roots[ri] == n:
                seed[d] = 0
                ri += 1
            else:
                seed[d] = -1
            if c == 0 and seed[d] < 0:
                if ri < n_roots and roots[ri] < tend[n]:
                    # nothing alive here, but a root lies below: go straight to it (the nodes in
                    # between have no state either)
                    r = roots[ri]
                    cnt[tdepth[r] - 1] = 0
                    seed[tdepth[r] - 1] = -1
                    n = r
                else:
                    n = tend[n]
                continue
            if c > 0 and tok_ptr[n] < tok_ptr[n + 1]:
                for j in range(c):
                    st = sets[d, j]
                    r = sidx[st]
                    if r < 0:
                        if n_used == srows.shape[0]:
                            status = 2
                            break
                        r = sidx[st] = n_used
                        used[n_used] = st
                        n_used += 1
                        for w in range(words):
                            srows[r, w] = 0
                    for k in range(tok_ptr[n], tok_ptr[n + 1]):
                        tok = tok_ids[k]
                        srows[r, tok >> 5] |= np.uint32(1) << np.uint32(tok & 31)
                if status:
                    break
            if c > 0 and tend[n] > n + 1 and not (
                    prune and pre[tok_ptr[tend[n]]] == pre[tok_ptr[n + 1]]):
                for j in range(c):
                    st = sets[d, j]
                    if accepts[st]:
                        if nb == cap:
                            status = 1
                            break
                        bnodes[nb] = n
                        bstates[nb] = st
                        nb += 1
                if status:
                    break
            n += 1
    for r in range(n_used):
        sidx[used[r]] = -1
    counts[0] = n_used
    counts[1] = nb
    return status


@njit(cache=True, nogil=True)
def split_ends(bnodes, bstates, accept_ptr, accept_terms, slot, n_wanted):
    """Group the nodes recorded by :func:`walk_states` by wanted terminal. Returns
    ``(stop, start, nodes)``: the nodes where the terminal in slot ``i`` accepts are
    ``nodes[start[i]:stop[i]]``, in node order, each once."""
    counts = np.zeros(n_wanted + 1, dtype=np.int64)
    for k in range(bnodes.shape[0]):
        st = bstates[k]
        for a in range(accept_ptr[st], accept_ptr[st + 1]):
            i = slot[accept_terms[a]]
            if i >= 0:
                counts[i + 1] += 1
    ptr = np.cumsum(counts)
    nodes = np.empty(ptr[n_wanted], dtype=np.int64)
    fill = ptr[:n_wanted].copy()
    for k in range(bnodes.shape[0]):
        st = bstates[k]
        n = bnodes[k]
        for a in range(accept_ptr[st], accept_ptr[st + 1]):
            i = slot[accept_terms[a]]
            if i >= 0 and (fill[i] == ptr[i] or nodes[fill[i] - 1] != n):
                nodes[fill[i]] = n
                fill[i] += 1
    return fill, ptr, nodes


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
