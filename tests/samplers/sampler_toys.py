"""Toy matchers and models for the sampler tests (no grammars package, no real model).

- :class:`SetMatcher`: a one-step constraint with a fixed allowed set.
- :class:`TrieMatcher`: a finite language of token sequences (a trie); EOS is allowed exactly at
  the end of a word.
- :class:`TableModel`: a ``LanguageModel`` given by a function from the prefix to next-token
  probabilities; it records every batched call.
- ``toy_a`` / ``toy_b`` / ``toy_c``: the models and languages the tests measure against.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from kernels import bool_to_bitmask

END = "$"


def _write_row(bitmask: Any, row: int, words: torch.Tensor) -> None:
    """Write packed int32 ``words`` into ``bitmask[row]`` (torch or numpy), zero-padding."""
    n = words.shape[0]
    if isinstance(bitmask, np.ndarray):
        bitmask[row, :] = 0
        bitmask[row, :n] = words.numpy()
    else:
        if bitmask.shape[1] == n:
            bitmask[row] = words
        else:
            bitmask[row, :] = 0
            bitmask[row, :n] = words


class CallCounter:
    """Shared counters of constraint work (checks, mask fills, forks)."""

    def __init__(self) -> None:
        self.checks = 0
        self.fills = 0
        self.forks = 0


class SetMatcher:
    """Allows exactly ``allowed`` (EOS included when listed); never advances."""

    def __init__(self, allowed: Iterable[int], vocab_size: int, *, eos: int | None = None) -> None:
        self.vocab_size = vocab_size
        self.allowed_ids = frozenset(int(a) for a in allowed)
        self.eos = eos
        self.bool_mask = np.zeros(vocab_size, dtype=bool)
        self.bool_mask[list(self.allowed_ids)] = True
        self.words = torch.from_numpy(bool_to_bitmask(self.bool_mask))
        self.counter = CallCounter()

    def check_token(self, token_id: int) -> bool:
        self.counter.checks += 1
        return token_id in self.allowed_ids

    def accept_token(self, token_id: int) -> bool:
        return token_id in self.allowed_ids

    def is_accepting(self) -> bool:
        return self.eos is not None and self.eos in self.allowed_ids

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> None:
        self.counter.fills += 1
        _write_row(bitmask, row, self.words)

    def fork(self) -> SetMatcher:
        self.counter.forks += 1
        return self

    def is_terminated(self) -> bool:
        return False


class TrieMatcher:
    """A finite language of token sequences; EOS is allowed exactly after a complete word."""

    def __init__(
        self,
        language: Iterable[Sequence[int]],
        vocab_size: int,
        eos: int,
        *,
        _root: dict | None = None,
        _node: dict | None = None,
        _counter: CallCounter | None = None,
        _masks: dict | None = None,
    ) -> None:
        self.vocab_size = vocab_size
        self.eos = eos
        if _root is None:
            _root = {}
            for word in language:
                node = _root
                for t in word:
                    if t == eos:
                        raise ValueError("words must not contain EOS")
                    node = node.setdefault(int(t), {})
                node[END] = True
        self.root = _root
        self.node: dict | None = _root if _node is None else _node
        self.counter = CallCounter() if _counter is None else _counter
        self._masks: dict[int, tuple[np.ndarray, torch.Tensor]] = {} if _masks is None else _masks
        self.terminated = False

    def __deepcopy__(self, memo: dict) -> TrieMatcher:
        raise AssertionError("SMC must fork matchers, never deep-copy them")

    def __copy__(self) -> TrieMatcher:
        raise AssertionError("SMC must fork matchers, never copy them")

    def _allowed(self, token_id: int) -> bool:
        if self.terminated or self.node is None:
            return False
        if token_id == self.eos:
            return END in self.node
        return token_id in self.node

    def check_token(self, token_id: int) -> bool:
        self.counter.checks += 1
        return self._allowed(token_id)

    def accept_token(self, token_id: int) -> bool:
        if not self._allowed(token_id):
            return False
        if token_id == self.eos:
            self.terminated = True
        else:
            assert self.node is not None
            self.node = self.node[token_id]
        return True

    def is_accepting(self) -> bool:
        return not self.terminated and self.node is not None and END in self.node

    def _mask(self) -> tuple[np.ndarray, torch.Tensor]:
        node = {} if self.terminated or self.node is None else self.node
        key = id(node) if node else -1
        cached = self._masks.get(key)
        if cached is None:
            mask = np.zeros(self.vocab_size, dtype=bool)
            for t in node:
                mask[self.eos if t == END else t] = True
            cached = (mask, torch.from_numpy(bool_to_bitmask(mask)))
            self._masks[key] = cached
        return cached

    def bool_mask(self) -> np.ndarray:
        return self._mask()[0]

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> None:
        self.counter.fills += 1
        _write_row(bitmask, row, self._mask()[1])

    def fork(self) -> TrieMatcher:
        self.counter.forks += 1
        m = TrieMatcher(
            (),
            self.vocab_size,
            self.eos,
            _root=self.root,
            _node=self.node,
            _counter=self.counter,
            _masks=self._masks,
        )
        m.terminated = self.terminated
        return m

    def is_terminated(self) -> bool:
        return self.terminated


class TableModel:
    """``LanguageModel`` from ``probs(prefix) -> np.ndarray`` (next-token probabilities)."""

    def __init__(
        self,
        probs: Callable[[tuple[int, ...]], np.ndarray],
        vocab_size: int,
        eos_token_id: int,
        *,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.probs = probs
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.dtype = dtype
        self.calls: list[int] = []  # batch size of every call

    def next_token_logprobs(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        self.calls.append(len(sequences))
        rows = np.stack([np.asarray(self.probs(tuple(s)), dtype=np.float64) for s in sequences])
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(rows)).to(self.dtype)


# Toy A: uniform bits, length 3; language {000, 100, 101, 110, 111}; tokens '0', '1', EOS.
A_ZERO, A_ONE, A_EOS = 0, 1, 2
TOY_A_LANGUAGE = [(0, 0, 0), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]


def toy_a() -> tuple[TableModel, TrieMatcher]:
    def probs(prefix: tuple[int, ...]) -> np.ndarray:
        return np.array([0.5, 0.5, 0.0]) if len(prefix) < 3 else np.array([0.0, 0.0, 1.0])

    return TableModel(probs, 3, A_EOS), TrieMatcher(TOY_A_LANGUAGE, 3, A_EOS)


# Toy B: P(a)=.9, P(b)=.1; P(.|a)=(.01,.99); P(.|b)=(.5,.5); then EOS; language {aa, ba, bb}.
B_A, B_B, B_EOS = 0, 1, 2
TOY_B_LANGUAGE = [(0, 0), (1, 0), (1, 1)]
TOY_B_Z = 0.9 * 0.01 + 0.1 * 0.5 + 0.1 * 0.5  # 0.109


def toy_b(*, dtype: torch.dtype = torch.float64) -> tuple[TableModel, TrieMatcher]:
    table = {
        (): [0.9, 0.1, 0.0],
        (0,): [0.01, 0.99, 0.0],
        (1,): [0.5, 0.5, 0.0],
    }

    def probs(prefix: tuple[int, ...]) -> np.ndarray:
        return np.array(table.get(prefix, [0.0, 0.0, 1.0]))

    return TableModel(probs, 3, B_EOS, dtype=dtype), TrieMatcher(TOY_B_LANGUAGE, 3, B_EOS)


# Toy C: a random (but fixed) model over 3 symbols + EOS; language: words of length 1..4 with no
# two equal neighbours that do not end with symbol 2. Weights vary at every step, so resampling
# decisions matter for the marginal-likelihood estimate.
C_EOS = 3


def _toy_c_language() -> list[tuple[int, ...]]:
    import itertools

    words = []
    for n in range(1, 5):
        for w in itertools.product(range(3), repeat=n):
            if all(a != b for a, b in itertools.pairwise(w)) and w[-1] != 2:
                words.append(w)
    return words


def toy_c() -> tuple[TableModel, TrieMatcher]:
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def probs(prefix: tuple[int, ...]) -> np.ndarray:
        if prefix not in cache:
            seed = 1 + sum((t + 1) * 5**i for i, t in enumerate(prefix))
            rng = np.random.default_rng(seed)
            cache[prefix] = rng.dirichlet(np.full(4, 0.7))
        return cache[prefix]

    return TableModel(probs, 4, C_EOS), TrieMatcher(_toy_c_language(), 4, C_EOS)


def deepcopy_forbidden(obj: Any) -> None:
    """Assert that ``obj`` refuses deep copies (sanity check of the toy matchers)."""
    try:
        copy.deepcopy(obj)
    except AssertionError:
        return
    raise AssertionError("deepcopy unexpectedly succeeded")
