"""Bitmask layout helpers (numpy and torch), the one layout every part of the engine uses.

int32 words, shape ``(batch, ceil(vocab / 32))``; bit ``i % 32`` of word ``i // 32`` set = token
``i`` allowed. Identical to XGrammar's and llguidance's layout, so masks interoperate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["allocate_token_bitmask", "bitmask_row", "bitmask_size", "bitmask_to_bool", "bool_to_bitmask",
           "write_bitmask_row"]


def bitmask_size(vocab_size: int) -> int:
    """Number of int32 words per row for ``vocab_size`` tokens."""
    if vocab_size < 0:
        raise ValueError(f"vocab_size must be >= 0, got {vocab_size}")
    return (vocab_size + 31) // 32


_LAST_VIEW: tuple[Any, np.ndarray] | None = None


def bitmask_row(bitmask: Any, row: int, n_words: int) -> np.ndarray | None:
    """``bitmask[row]`` as uint32 words sharing its memory (``bitmask`` a 2-D int32 numpy array
    or CPU torch tensor ``n_words`` wide), or None when it cannot be written in place (another
    device, dtype or width). The view of the last bitmask seen is kept, so a decoding loop that
    reuses one bitmask pays for the view once (~3 us of torch calls per fill otherwise)."""
    last = _LAST_VIEW
    if last is not None and last[0] is bitmask:
        return last[1][row]
    return _new_view(bitmask, n_words, row)


def _new_view(bitmask: Any, n_words: int, row: int) -> np.ndarray | None:
    global _LAST_VIEW
    if isinstance(bitmask, np.ndarray):
        arr = bitmask
    elif getattr(bitmask, "device", None) is not None and bitmask.device.type == "cpu" \
            and not bitmask.requires_grad:
        arr = bitmask.numpy()
    else:
        return None
    if arr.dtype != np.int32 or arr.ndim != 2 or arr.shape[1] != n_words:
        return None
    arr = arr.view(np.uint32)
    _LAST_VIEW = (bitmask, arr)
    return arr[row]


def write_bitmask_row(bitmask: Any, row: int, words: np.ndarray) -> None:
    """Copy ``words`` (a row of int32 or uint32 words) into ``bitmask[row]`` (numpy array or torch
    tensor on any device)."""
    dst = bitmask_row(bitmask, row, words.shape[0])
    if dst is not None:
        dst[:] = words.view(np.uint32)
    elif isinstance(bitmask, np.ndarray):
        bitmask[row] = words.view(bitmask.dtype)
    else:
        import torch

        bitmask[row].copy_(torch.from_numpy(words.view(np.int32)))


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
