"""Dispatcher: picks the kernel backend for the logits' device (CPU now; Triton on CUDA later)."""

from __future__ import annotations

from typing import Any

__all__ = ["apply_token_bitmask_inplace", "masked_logsumexp"]


def apply_token_bitmask_inplace(
    logits: Any, bitmask: Any, *, indices: Any = None, vocab_size: int | None = None
) -> None:
    """Set disallowed logits to -inf in place.

    ``logits``: float tensor ``(batch, width)`` or ``(width,)``; ``bitmask``: int32 ``(batch or
    len(indices), ceil(vocab/32))``. ``indices`` picks which logits rows the bitmask rows apply to.
    Columns at or past ``vocab_size`` (default: ``min(width, 32 * words)``) are masked too, so logits
    wider than the vocabulary never sample a padding token.
    """
    from kernels.torch_ref import apply_token_bitmask_inplace_torch

    apply_token_bitmask_inplace_torch(logits, bitmask, indices=indices, vocab_size=vocab_size)


def masked_logsumexp(logits: Any, bitmask: Any) -> Any:
    """log(sum over allowed tokens of exp(logit)) per row; -inf for a row with nothing allowed."""
    from kernels.torch_ref import masked_logsumexp_torch

    return masked_logsumexp_torch(logits, bitmask)
