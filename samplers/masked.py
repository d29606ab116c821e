"""Locally constrained decoding: sample from the model's next-token distribution with the
disallowed tokens masked out (and its greedy variant).

Masking is what most constrained-decoding engines do (Outlines, XGrammar, llguidance,
transformers-CFG). Alone, it samples each token from ``p`` restricted to the allowed tokens, which
*distorts* the distribution over whole strings: strings behind a narrow allowed prefix get the
prefix's full probability (see Lipkin, LeBrun et al. 2025, arXiv:2504.05410, and Loula et al. 2025,
"Syntactic and Semantic Control of Large Language Models via Sequential Monte Carlo"). Used as an
SMC proposal with the weight below, the distortion is corrected (``samplers.smc``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from samplers._oracle import ConstraintOracle, full_mask
from samplers._util import NEG_INF, DescendingOrder, as_logprob_array, gumbels, logsumexp
from samplers.protocols import Matcher, RandomGenerator, SampleResult

if TYPE_CHECKING:
    import torch

__all__ = ["GreedySampler", "MaskedSampler"]


class MaskedSampler:
    """Locally constrained decoding (LCD): one full mask per token, exact sampling within it.

    With ``p`` the next-token distribution (tempered by ``temperature``, see below), ``c`` the
    constraint's verdicts from one ``fill_next_token_bitmask`` call and ``Z = sum_y p(y) c(y)``:

        x ~ q(x) = p(x) c(x) / Z,        log_weight = log Z.

    Properly weighted for ``p * c``: ``E[Z f(x)] = sum_y f(y) p(y) c(y)``; the weight is exact
    (zero variance). With ``Z = 0`` (nothing allowed has positive probability) the result is
    ``(None, -inf)``. ``n_checks`` is the vocabulary size (the mask decides every token).

    ``temperature``: ``p = softmax(logprobs / temperature)``; the weight is then the allowed mass
    of the tempered distribution (properly weighted for ``p_T * c``). With the default 1.0 the
    log-probabilities are used as given (not renormalized), so ``Z`` is their allowed mass.
    """

    def __init__(self, *, temperature: float = 1.0) -> None:
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __repr__(self) -> str:
        return f"MaskedSampler(temperature={self.temperature})"

    def sample(
        self, logprobs: torch.Tensor, matcher: Matcher, *, generator: RandomGenerator = None
    ) -> SampleResult:
        """Sample ``x ~ p c / Z`` and return ``(x, log Z)``; see the class docstring."""
        lp = as_logprob_array(logprobs, self.temperature)
        vocab = lp.shape[0]
        mask = full_mask(matcher, vocab)
        masked = np.where(mask, lp, NEG_INF)
        log_z = logsumexp(masked)
        if log_z == NEG_INF:
            return SampleResult(None, NEG_INF, vocab)
        token = int(np.argmax(masked + gumbels(vocab, generator)))
        return SampleResult(token, log_z, vocab)


class GreedySampler:
    """Greedy constrained decoding: the most probable allowed token, ``argmax_y p(y) c(y)``.

    Deterministic, hence *not* properly weighted: ``log_weight`` is the model log-probability of
    the chosen token, ``log p(x)`` (what a sequence score accumulates). ``(None, -inf)`` when no
    allowed token has positive probability. Ties go to the lower token id.

    ``lazy=True`` (default) checks tokens one by one in decreasing probability and stops at the
    first allowed one, usually after a single ``check_token``; after ``max_rejects`` rejections it
    fills the full mask instead. ``lazy=False`` always fills the full mask.
    """

    def __init__(self, *, lazy: bool = True, max_rejects: int = 64) -> None:
        if max_rejects < 0:
            raise ValueError(f"max_rejects must be >= 0, got {max_rejects}")
        self.lazy = lazy
        self.max_rejects = max_rejects

    def __repr__(self) -> str:
        return f"GreedySampler(lazy={self.lazy}, max_rejects={self.max_rejects})"

    def sample(
        self, logprobs: torch.Tensor, matcher: Matcher, *, generator: RandomGenerator = None
    ) -> SampleResult:
        """Return ``(argmax_y p(y) c(y), log p(x))``; ``generator`` is unused."""
        lp = as_logprob_array(logprobs)
        vocab = lp.shape[0]
        oracle = ConstraintOracle(matcher, vocab, self.max_rejects if self.lazy else 0)
        if self.lazy:
            order = DescendingOrder(lp)
            i = 0
            while not oracle.budget_exhausted():
                token = order[i]
                if token is None:
                    return SampleResult(None, NEG_INF, oracle.n_checks)
                if oracle(token):
                    return SampleResult(token, float(lp[token]), oracle.n_checks)
                i += 1
        masked = np.where(oracle.fill(), lp, NEG_INF)
        token = int(np.argmax(masked))
        if masked[token] == NEG_INF:
            return SampleResult(None, NEG_INF, oracle.n_checks)
        return SampleResult(token, float(lp[token]), oracle.n_checks)
