"""Small numeric helpers shared by the samplers (numpy float64 on CPU; torch only for random draws,
so a ``torch.Generator`` drives every random choice)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from samplers.protocols import RandomGenerator

NEG_INF = float("-inf")


def as_logprob_array(logprobs: Any, temperature: float = 1.0) -> np.ndarray:
    """A 1-D float64 numpy copy-free view of ``logprobs`` (torch tensor or numpy array).

    With ``temperature != 1`` the result is ``log_softmax(logprobs / temperature)``: the tempered
    next-token distribution, normalized over the vocabulary. Treat the result as read-only.
    """
    if isinstance(logprobs, np.ndarray):
        lp = logprobs.astype(np.float64, copy=False)
    else:
        try:  # CPU tensor without grad, numpy-compatible dtype: a zero-copy view
            lp = logprobs.numpy()
        except (RuntimeError, TypeError):
            import torch

            t = logprobs.detach().cpu()
            if t.dtype not in (torch.float64, torch.float32, torch.float16):
                t = t.float()  # bfloat16 and friends have no numpy dtype
            lp = t.numpy()
        # numpy's cast is much cheaper than torch's ``.to`` for one row on a busy CPU
        lp = lp.astype(np.float64, copy=False)
    if lp.ndim != 1:
        raise ValueError(f"logprobs must be 1-D (one entry per token), got shape {lp.shape}")
    if temperature != 1.0:
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        scaled = lp / temperature
        lp = scaled - logsumexp(scaled)
    return lp


def logsumexp(a: np.ndarray) -> float:
    """log(sum(exp(a))), -inf for an empty or all -inf array."""
    if a.size == 0:
        return NEG_INF
    m = float(np.max(a))
    if m == NEG_INF:
        return NEG_INF
    if m == float("inf"):
        return m
    return m + float(np.log(np.sum(np.exp(a - m))))


_TINY = float(np.finfo(np.float64).tiny)


def uniforms(n: int, generator: RandomGenerator) -> np.ndarray:
    """``n`` float64 uniforms in (0, 1) from ``generator``."""
    if isinstance(generator, np.random.Generator):
        u = generator.random(n)
    else:
        import torch

        u = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
    return np.maximum(u, _TINY, out=u)


def exponentials(n: int, generator: RandomGenerator) -> np.ndarray:
    """``n`` standard exponential draws (rate 1), strictly positive."""
    if isinstance(generator, np.random.Generator):
        e = generator.standard_exponential(n)
    else:
        import torch

        e = torch.empty(n, dtype=torch.float64).exponential_(generator=generator).numpy()
    return np.maximum(e, _TINY, out=e)


def exponential_list(n: int, generator: RandomGenerator) -> list[float]:
    """Like :func:`exponentials`, as a Python list (for the small-vocabulary paths)."""
    return exponentials(n, generator).tolist()


def gumbels(n: int, generator: RandomGenerator) -> np.ndarray:
    """``n`` standard Gumbel draws, as ``-log(E)`` with ``E`` standard exponential (one log per
    draw instead of the two of ``-log(-log(U))``)."""
    g = exponentials(n, generator)
    np.log(g, out=g)
    return np.negative(g, out=g)


class DescendingOrder:
    """Token ids by descending key, computed lazily; ids whose key is -inf are never listed.

    ``order[i]`` is the id with the ``i``-th largest key, or ``None`` past the last finite key.
    ``keys`` is a numpy array, or a Python list for small vocabularies (sorted at once: cheaper
    than numpy's per-call overhead). For arrays, walks almost always stop within the first few
    ids, so only a top-``k`` slice is sorted (an ``argpartition``), widened (x4) on demand. Ties
    go to the lower id.
    """

    __slots__ = ("_full", "_k", "_keys", "_n", "_order")

    def __init__(self, keys: np.ndarray | list[float], *, k: int = 32) -> None:
        self._keys = keys
        self._n = len(keys)
        if isinstance(keys, list):
            self._order: Any = sorted(range(self._n), key=keys.__getitem__, reverse=True)
            self._k = self._n
            self._full = True
        else:
            self._k = 0
            self._full = False
            self._grow(k)

    def _grow(self, k: int) -> None:
        keys = self._keys
        assert isinstance(keys, np.ndarray)
        n = self._n
        if k * 4 >= n:
            self._order = np.argsort(-keys, kind="stable")
            self._full = True
            self._k = n
        else:
            top = np.argpartition(keys, n - k)[n - k :]
            self._order = top[np.lexsort((top, -keys[top]))]
            self._k = k

    def __getitem__(self, i: int) -> int | None:
        if i >= self._k:
            if self._full:
                return None
            self._grow(max(4 * self._k, i + 1))
            if i >= self._k:
                return None
        tok = int(self._order[i])
        if self._keys[tok] == NEG_INF:
            return None
        return tok
