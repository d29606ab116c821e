"""Prefilling many prompts of mixed lengths: prepacked (bin-packed, block-diagonal) against padded.

Implements the dense form of S. Zhao, D. Israel, G. Van den Broeck, A. Grover, "Prepacking: A
Simple Method for Fast Prefilling and Increased Throughput in Large Language Models" (2024):
padding every prompt to the longest one wastes compute on pad tokens (MLPs) and on pad rows of
the attention; instead the prompts are packed, first-fit decreasing, into bins of at most
``capacity`` tokens (default: the longest prompt), each bin is one row of the batch, the
attention mask is block-diagonal causal (a token sees only the earlier tokens of its own prompt)
and positions restart at 0 for each prompt. The next-token logits of each prompt are read at its
last token. These functions run through transformers' standard attention (sdpa), without the
prefix cache: they are the reference and the baseline for the benchmark.
:class:`~decoding.backend.batched.BatchedLM` does the same packing inside its chunked, cached
forward passes (``BatchedLM.prefill``).

**Contract.** ``prepacked_prefill(m, prompts)[i]`` and ``padded_prefill(m, prompts)[i]`` equal
the logits of a forward pass over ``prompts[i]`` alone (up to fp32 rounding), for every mix of
lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["pack_bins", "padded_prefill", "prepacked_prefill", "sequential_prefill"]


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of ``lengths`` grouped into bins of total ``<= capacity``
    (a prompt longer than ``capacity`` gets a bin of its own)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


def _hf(model: Any) -> Any:
    return getattr(model, "hf_model", model)


def prepacked_prefill(
    model: Any, prompts: Sequence[Sequence[int]], *, capacity: int | None = None
) -> torch.Tensor:
    """Next-token logits ``(len(prompts), V)`` (fp32) of every prompt, prefilled as bins of
    packed prompts (module docstring)."""
    import torch

    hf = _hf(model)
    lengths = [len(p) for p in prompts]
    if min(lengths) < 1:
        raise ValueError("every prompt needs at least one token")
    capacity = capacity or max(lengths)
    bins = pack_bins(lengths, capacity)
    width = max(sum(lengths[i] for i in b) for b in bins)
    nb = len(bins)
    ids = torch.zeros(nb, width, dtype=torch.long)
    pos = torch.zeros(nb, width, dtype=torch.long)
    seg = torch.full((nb, width), -1, dtype=torch.long)
    last = torch.zeros(nb, width, dtype=torch.bool)
    where: list[tuple[int, int]] = [(0, 0)] * len(prompts)
    for r, b in enumerate(bins):
        off = 0
        for i in b:
            n = lengths[i]
            ids[r, off : off + n] = torch.tensor(list(prompts[i]), dtype=torch.long)
            pos[r, off : off + n] = torch.arange(n)
            seg[r, off : off + n] = i
            last[r, off + n - 1] = True
            where[i] = (r, off + n - 1)
            off += n
        pos[r, off:] = torch.arange(width - off)  # pad tail: its own segment, never seen
    idx = torch.arange(width)
    causal = idx[None, :] <= idx[:, None]
    same = seg[:, :, None] == seg[:, None, :]
    pad_self = (seg[:, :, None] < 0) & (idx[None, :, None] == idx[None, None, :])
    mask = ((same & causal[None] & (seg[:, :, None] >= 0)) | pad_self)[:, None]
    device = hf.device
    with torch.inference_mode():
        out = hf(
            input_ids=ids.to(device),
            position_ids=pos.to(device),
            attention_mask=mask.to(device),
            use_cache=False,
            logits_to_keep=last.to(device),
        )
    flat = out.logits.float()
    if flat.dim() == 3:
        flat = flat[0]
    # the kept positions come out flattened in row-major order
    flat_index = {}
    for r in range(nb):
        for c in torch.nonzero(last[r]).flatten().tolist():
            flat_index[(r, c)] = len(flat_index)
    rows = [flat_index[w] for w in where]
    return flat[rows]


def padded_prefill(model: Any, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
    """Next-token logits ``(len(prompts), V)`` (fp32): every prompt right-padded to the longest,
    one batch, a padding attention mask (the usual way)."""
    import torch

    hf = _hf(model)
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    att = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : lengths[i]] = torch.tensor(list(p), dtype=torch.long)
        att[i, : lengths[i]] = 1
    device = hf.device
    with torch.inference_mode():
        out = hf(
            input_ids=ids.to(device),
            attention_mask=att.to(device),
            use_cache=False,
            logits_to_keep=torch.tensor(lengths, device=device)[:, None] - 1,
        )
    return out.logits[:, 0].float()


def sequential_prefill(model: Any, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
    """Reference: one unpadded forward pass per prompt."""
    import torch

    hf = _hf(model)
    rows = []
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([list(p)], dtype=torch.long, device=hf.device)
            rows.append(hf(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].float())
    return torch.stack(rows)
