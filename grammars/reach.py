"""Reachability in a byte DFA (numba), for trimming: which states can still reach an accepting
state, and the breadth-first order of the states reachable from the start through those."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["live_order", "renumber"]


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
