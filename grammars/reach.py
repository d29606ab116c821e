"""Reachability in a byte DFA (numba), for trimming: which states can still reach an accepting
state, and the breadth-first order of the states reachable from the start through those; the
reachable product of two DFAs."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["forced_bytes", "live_order", "pair_product", "renumber"]

_MIX = 0x5851F42D4C957F2D  # odd multiplier of the pair hash


@njit(cache=True, nogil=True)
def live_order(trans: np.ndarray, accepting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """``(live, order)``: ``live[s]`` when an accepting state is reachable from ``s``; ``order``:
    the live states reachable from state 0 through live states, breadth-first from 0 with each
    state's successors taken in byte order (empty when state 0 is not live)."""
    n, k = trans.shape
    ptr = np.zeros(n + 1, dtype=np.int64)
    for s in range(n):
        for b in range(k):
            t = trans[s, b]
            if t >= 0:
                ptr[t + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    src = np.empty(ptr[n], dtype=np.int64)
    for s in range(n):
        for b in range(k):
            t = trans[s, b]
            if t >= 0:
                src[fill[t]] = s
                fill[t] += 1
    live = accepting.copy()
    stack = np.empty(n, dtype=np.int64)
    top = 0
    for s in range(n):
        if live[s]:
            stack[top] = s
            top += 1
    while top:
        top -= 1
        x = stack[top]
        for j in range(ptr[x], ptr[x + 1]):
            y = src[j]
            if not live[y]:
                live[y] = True
                stack[top] = y
                top += 1
    order = np.empty(n, dtype=np.int64)
    if n == 0 or not live[0]:
        return live, order[:0]
    seen = np.zeros(n, dtype=np.bool_)
    seen[0] = True
    order[0] = 0
    size = 1
    i = 0
    while i < size:
        x = order[i]
        i += 1
        for b in range(k):
            y = trans[x, b]
            if y >= 0 and live[y] and not seen[y]:
                seen[y] = True
                order[size] = y
                size += 1
    return live, order[:size]


@njit(cache=True, nogil=True)
def renumber(trans: np.ndarray, live: np.ndarray, order: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """The rows of ``order`` (see :func:`live_order`), states renumbered by their position in it
    and moves into states that are not live dropped (-1)."""
    n, k = trans.shape
    new_id = np.full(n, -1, dtype=np.int32)
    for i in range(order.shape[0]):
        new_id[order[i]] = i
    out = np.full((order.shape[0], k), -1, dtype=np.int32)
    for i in range(order.shape[0]):
        x = order[i]
        for b in range(k):
            y = trans[x, b]
            if y >= 0 and live[y]:
                out[i, b] = new_id[y]
    return out


@njit(cache=True, nogil=True)
def pair_product(ta: np.ndarray, tb: np.ndarray, keep_a_only: bool, max_states: int
                 ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """The reachable part of the product of DFAs ``ta`` and ``tb`` (start ``(0, 0)``).
    Returns ``(rows, pairs)``: ``rows[i, c]`` the state after byte ``c`` (-1: none) and
    ``pairs[i] = a * (nb + 1) + b`` the pair of state ``i``, with ``b == nb`` once ``tb`` is
    dead (followed only when ``keep_a_only``; otherwise a dead side ends the move). Empty
    ``rows`` (0 states) when the product would exceed ``max_states`` states."""
    nb = tb.shape[0]
    width = nb + 1
    cap = 256
    pairs = np.empty(cap, dtype=np.int64)
    rows = np.empty((cap, 256), dtype=np.int32)
    table = np.full(2 * cap, -1, dtype=np.int64)
    pairs[0] = 0
    table[0] = 0
    n = 1
    i = 0
    while i < n:
        pa = pairs[i] // width
        pb = pairs[i] % width
        for c in range(256):
            x = ta[pa, c]
            y = tb[pb, c] if pb < nb else -1
            if x < 0 or (y < 0 and not keep_a_only):
                rows[i, c] = -1
                continue
            if y < 0:
                y = nb
            if n == cap:  # room for one more pair before probing
                cap *= 2
                p2 = np.empty(cap, dtype=np.int64)
                p2[:n] = pairs[:n]
                pairs = p2
                r2 = np.empty((cap, 256), dtype=np.int32)
                r2[:n] = rows[:n]
                rows = r2
                table = np.full(2 * cap, -1, dtype=np.int64)
                for v in range(n):
                    h = (pairs[v] * _MIX) & (table.shape[0] - 1)
                    while table[h] >= 0:
                        h = (h + 1) & (table.shape[0] - 1)
                    table[h] = v
            key = x * width + y
            mask = table.shape[0] - 1
            j = (key * _MIX) & mask
            while table[j] >= 0 and pairs[table[j]] != key:
                j = (j + 1) & mask
            if table[j] >= 0:
                rows[i, c] = table[j]
                continue
            if n >= max_states:
                return np.empty((0, 256), dtype=np.int32), pairs[:0]
            pairs[n] = key
            table[j] = n
            rows[i, c] = n
            n += 1
        i += 1
    return rows[:n], pairs[:n]


@njit(cache=True, nogil=True)
def forced_bytes(trans: np.ndarray, accepting: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Per state, the one byte it can read when it has exactly one and does not accept (the
    grammar forces that byte), else -1."""
    n = trans.shape[0]
    out = np.full(n, -1, dtype=np.int32)
    for s in range(n):
        if accepting[s]:
            continue
        only = -1
        for b in range(256):
            if trans[s, b] >= 0:
                if only >= 0:
                    only = -2
                    break
                only = b
        if only >= 0:
            out[s] = only
    return out
