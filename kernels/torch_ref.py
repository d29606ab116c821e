"""Torch reference kernels: the semantics every other backend is tested against."""

from __future__ import annotations

from typing import Any

__all__ = ["apply_token_bitmask_inplace_torch", "masked_logsumexp_torch"]


def _allowed(bitmask: Any, width: int, vocab_size: int | None) -> Any:
    import torch

    from kernels.bitmask import bitmask_to_bool

    words = bitmask.shape[-1]
    vocab = min(width, words * 32) if vocab_size is None else min(vocab_size, width, words * 32)
    allowed = bitmask_to_bool(bitmask, vocab)
    if vocab < width:
        pad = torch.zeros((*allowed.shape[:-1], width - vocab), dtype=torch.bool, device=allowed.device)
        allowed = torch.cat([allowed, pad], dim=-1)
    return allowed


def apply_token_bitmask_inplace_torch(
    logits: Any, bitmask: Any, *, indices: Any = None, vocab_size: int | None = None
) -> None:
    """Reference: masked logits become -inf (see kernels.dispatch for the contract)."""
    import torch

    squeeze = logits.dim() == 1
    lg = logits.unsqueeze(0) if squeeze else logits
    bm = bitmask.unsqueeze(0) if bitmask.dim() == 1 else bitmask
    allowed = _allowed(bm.to(lg.device), lg.shape[-1], vocab_size)
    if indices is None:
        if allowed.shape[0] != lg.shape[0]:
            raise ValueError(f"bitmask has {allowed.shape[0]} rows, logits have {lg.shape[0]}")
        lg.masked_fill_(~allowed, float("-inf"))
    else:
        idx = torch.as_tensor(indices, dtype=torch.long, device=lg.device)
        rows = lg[idx]
        rows.masked_fill_(~allowed[: len(idx)], float("-inf"))
        lg[idx] = rows


def masked_logsumexp_torch(logits: Any, bitmask: Any) -> Any:
    """log of the allowed probability mass (unnormalized: logsumexp of the allowed logits)."""
    squeeze = logits.dim() == 1
    lg = logits.unsqueeze(0) if squeeze else logits
    bm = bitmask.unsqueeze(0) if bitmask.dim() == 1 else bitmask
    allowed = _allowed(bm.to(lg.device), lg.shape[-1], None)
    out = lg.float().masked_fill(~allowed, float("-inf")).logsumexp(dim=-1)
    return out[0] if squeeze else out
