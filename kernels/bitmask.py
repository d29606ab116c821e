"""Bitmask layout helpers (numpy and torch), the one layout every part of the engine uses.

int32 words, shape ``(batch, ceil(vocab / 32))``; bit ``i % 32`` of word ``i // 32`` set = token
``i`` allowed. Identical to XGrammar's and llguidance's layout, so masks interoperate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["allocate_token_bitmask", "bitmask_size", "bitmask_to_bool", "bool_to_bitmask"]


def bitmask_size(vocab_size: int) -> int:
    """Number of int32 words per row for ``vocab_size`` tokens."""
    if vocab_size < 0:
        raise ValueError(f"vocab_size must be >= 0, got {vocab_size}")
    return (vocab_size + 31) // 32


def allocate_token_bitmask(batch: int, vocab_size: int) -> Any:
    """A torch int32 tensor of shape ``(batch, ceil(vocab_size/32))`` with every token allowed (-1)."""
    import torch

    return torch.full((batch, bitmask_size(vocab_size)), -1, dtype=torch.int32)


def bitmask_to_bool(bitmask: Any, vocab_size: int) -> Any:
    """Unpack a bitmask (numpy array or torch tensor, 1-D or 2-D) into booleans of width vocab_size."""
    if isinstance(bitmask, np.ndarray):
        words = bitmask.astype(np.int32, copy=False).view(np.uint32)
        bits = (words[..., :, None] >> np.arange(32, dtype=np.uint32)) & 1
        flat = bits.reshape(*words.shape[:-1], words.shape[-1] * 32).astype(bool)
        return flat[..., :vocab_size]
    import torch

    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    bits = (bitmask.to(torch.int32)[..., :, None] >> shifts) & 1
    flat = bits.reshape(*bitmask.shape[:-1], bitmask.shape[-1] * 32).bool()
    return flat[..., :vocab_size]


def bool_to_bitmask(allowed: Any) -> Any:
    """Pack booleans (numpy or torch, last axis = vocab) into the int32 bitmask layout."""
    if isinstance(allowed, np.ndarray):
        n = allowed.shape[-1]
        words = bitmask_size(n)
        pad = np.zeros((*allowed.shape[:-1], words * 32), dtype=np.uint32)
        pad[..., :n] = allowed
        w = (pad.reshape(*allowed.shape[:-1], words, 32) << np.arange(32, dtype=np.uint32)).sum(
            axis=-1, dtype=np.uint64
        )
        return w.astype(np.uint32).view(np.int32)
    import torch

    n = allowed.shape[-1]
    words = bitmask_size(n)
    pad = torch.zeros((*allowed.shape[:-1], words * 32), dtype=torch.int64, device=allowed.device)
    pad[..., :n] = allowed.to(torch.int64)
    shifts = torch.arange(32, dtype=torch.int64, device=allowed.device)
    w = (pad.reshape(*allowed.shape[:-1], words, 32) << shifts).sum(dim=-1)
    w = torch.where(w >= 2**31, w - 2**32, w)
    return w.to(torch.int32)
