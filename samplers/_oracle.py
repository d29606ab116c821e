"""Constraint evaluation for the lazy samplers: per-token checks with a budget, then one full mask.

Counts what the samplers report as ``n_checks``: one per ``matcher.check_token`` call, plus the
vocabulary size for a full-mask fill (``fill_next_token_bitmask`` decides every token).
"""

from __future__ import annotations

import numpy as np

from samplers.protocols import Matcher


def full_mask(matcher: Matcher, vocab_size: int) -> np.ndarray:
    """The matcher's allowed set as a numpy bool array of length ``vocab_size`` (one mask fill)."""
    from kernels import allocate_token_bitmask, bitmask_to_bool

    bitmask = allocate_token_bitmask(1, vocab_size)
    bitmask.zero_()  # whatever the matcher does not write (e.g. padding ids) stays disallowed
    matcher.fill_next_token_bitmask(bitmask, 0)
    return bitmask_to_bool(bitmask[0].cpu().numpy(), vocab_size)


class ConstraintOracle:
    """``oracle(token) -> bool`` with a cache, a check counter and a rejection budget.

    Once ``max_rejects`` checks have failed, :meth:`budget_exhausted` fills the full mask (once) and
    every later query is answered from it. ``known`` lets a caller seed answers it already has
    (e.g. AWRS's second round reuses the first round's accepted token) so they cost nothing.
    """

    __slots__ = ("known", "mask", "matcher", "max_rejects", "n_checks", "n_rejects", "vocab_size")

    def __init__(self, matcher: Matcher, vocab_size: int, max_rejects: int | None) -> None:
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.max_rejects = max_rejects
        self.n_checks = 0
        self.n_rejects = 0
        self.mask: np.ndarray | None = None
        self.known: dict[int, bool] = {}

    def budget_exhausted(self) -> bool:
        """True when the full mask is known (filling it now if the rejection budget is spent)."""
        if (
            self.mask is None
            and self.max_rejects is not None
            and self.n_rejects >= self.max_rejects
        ):
            self.fill()
        return self.mask is not None

    def fill(self) -> np.ndarray:
        """Fill (once) and return the full allowed mask."""
        if self.mask is None:
            self.mask = full_mask(self.matcher, self.vocab_size)
            self.n_checks += self.vocab_size
        return self.mask

    def __call__(self, token: int) -> bool:
        known = self.known.get(token)
        if known is not None:
            return known
        if self.mask is not None:
            return bool(self.mask[token])
        self.n_checks += 1
        ok = bool(self.matcher.check_token(token))
        if not ok:
            self.n_rejects += 1
        self.known[token] = ok
        return ok
