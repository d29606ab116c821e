"""A tiny deterministic backend for tests and examples without a model: a byte-level bigram model
over a training text (``Vocabulary.byte_level()``: 256 one-byte tokens, EOS = 256)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from decoding.query.backend import Backend
from grammars import Vocabulary

__all__ = ["BigramBackend"]

_TEXT = (
    "Hello world. The sky is blue. Q: What is the capital of France?\nA: Paris is the capital.\n"
    "The answer is 42. A list of things: Sunscreen, Volleyball, Bathing Suit.\n"
    "It was a sunny day on 30/06 and the sentiment is positive. Pick the odd word out.\n"
)


class BigramBackend(Backend):
    """``logits[next] = log(count(prev, next) + alpha)`` with an EOS weight after ``eos_after``."""

    name = "toy-bigram"

    def __init__(self, text: str = _TEXT, *, alpha: float = 0.01, eos_after: bytes = b"\n",
                 eos_weight: float = 2.0) -> None:
        super().__init__()
        self.vocab = Vocabulary.byte_level()
        data = text.encode("utf-8")
        counts = np.full((257, 257), alpha, dtype=np.float64)
        for a, b in itertools.pairwise(data):
            counts[a, b] += 1.0
        for a in eos_after:
            counts[a, 256] += eos_weight
        counts[256, :256] += 0.1
        self.table = np.log(counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def new_state(self) -> list[int]:
        return []

    def _row(self, prev: int) -> Any:
        import torch

        return torch.from_numpy(self.table[prev].copy())

    def _feed(self, state: list[int], ids: list[int]) -> Any:
        state.extend(ids)
        return self._row(state[-1])

    def _feed_all(self, state: list[int], ids: list[int]) -> Any:
        import torch

        state.extend(ids)
        return torch.stack([self._row(t) for t in ids])

    def length(self, state: list[int]) -> int:
        return len(state)

    def crop(self, state: list[int], n: int) -> None:
        del state[n:]

    def copy(self, state: list[int]) -> list[int]:
        return list(state)
