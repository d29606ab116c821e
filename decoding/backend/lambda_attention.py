"""LM-Infinite's Lambda-shaped attention, for running a model past its trained length.

Implements C. Han, Q. Wang, H. Peng, W. Xiong, Y. Chen, H. Ji, S. Wang, "LM-Infinite: Zero-Shot
Extreme Length Generalization for Large Language Models" (2023; arXiv:2308.16137). A model trained
on sequences of ``L`` tokens fails past ``L`` because (1) it meets relative distances it never
saw, (2) it attends to more tokens than it ever did, and (3) the first tokens, which earlier
layers use as an implicit absolute-position anchor, fall out of view. The fix needs no training:

- a Lambda-shaped mask: query ``p`` attends to the ``n_global`` first tokens and to the
  ``window`` most recent ones (itself included);
- a distance limit: a global key ``j`` out of the window is scored with the query rotated back to
  position ``min(p, max_distance)``, so its relative distance is ``min(p, max_distance) - j``,
  never more than ``max_distance`` (RoPE models only: the rotation is exact for rotate-half RoPE).

**Contract.** For query position ``p`` and key position ``j <= p``:
visible iff ``p - j < window`` (local: plain score, exact distance) or ``j < n_global`` (global:
score ``<R(min(p, D) - p) q_p, k_j>`` with ``D = max_distance``). A key in both sets is scored
once, as local. Hence when every position is below ``window`` the pattern *is* plain causal
attention (bit for bit up to float rounding); this is what makes ``long_context="auto"`` safe: it
is the pattern with ``window = max_distance = trained length``, exact inside the trained length.

The same pattern runs in two places: inside the prefix-cache backend (segments of the KV trie,
:mod:`decoding.backend.attention`), and over transformers' own caches (``DynamicCache``, for
``model.generate`` or ``decoding.Model.step``) after :func:`enable_lambda`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

__all__ = [
    "LambdaPattern",
    "LongContext",
    "disable_lambda",
    "enable_lambda",
    "lambda_cache_attention",
    "resolve_pattern",
    "trained_length",
]

#: ``"auto"``: the Lambda pattern with window = distance limit = the trained length (identical to
#: plain attention inside the trained length); ``"lambda"``: the same, with the caller's sizes;
#: ``"none"``: plain causal attention at every length.
LongContext = Literal["auto", "lambda", "none"]

#: LM-Infinite keeps "a few" starting tokens; the official code's default global branch is 100.
DEFAULT_N_GLOBAL = 100


@dataclass(frozen=True)
class LambdaPattern:
    """The Lambda pattern's sizes (see the module docstring for the exact contract).

    ``n_global``: leading tokens every query sees. ``window``: the local branch (a query sees
    the ``window`` most recent positions, itself included). ``max_distance``: the largest
    relative distance a global key is scored at (default: ``window``).
    """

    n_global: int
    window: int
    max_distance: int = 0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.n_global < 0:
            raise ValueError(f"n_global must be >= 0, got {self.n_global}")
        if self.max_distance <= 0:
            object.__setattr__(self, "max_distance", self.window)


def trained_length(config: Any) -> int | None:
    """The context length the model was trained with (``max_position_embeddings``, or the
    original length before a RoPE scaling), or None when the config does not say."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if isinstance(rope, dict) and rope.get("original_max_position_embeddings"):
        return int(rope["original_max_position_embeddings"])
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


def resolve_pattern(
    long_context: LongContext,
    config: Any,
    *,
    n_global: int | None = None,
    window: int | None = None,
    max_distance: int | None = None,
) -> LambdaPattern | None:
    """The pattern a ``long_context`` option means for a model config (None: plain attention)."""
    if long_context == "none":
        return None
    if long_context not in ("auto", "lambda"):
        raise ValueError(f"long_context must be 'auto', 'lambda' or 'none', got {long_context!r}")
    length = trained_length(config)
    if window is None:
        if length is None:
            if long_context == "auto":
                return None
            raise ValueError("the model config has no max_position_embeddings: pass window=")
        window = length
    return LambdaPattern(
        n_global=DEFAULT_N_GLOBAL if n_global is None else n_global,
        window=window,
        max_distance=max_distance or min(window, length or window),
    )


def enable_lambda(hf_model: Any, pattern: LambdaPattern) -> None:
    """Run ``hf_model``'s attention with ``pattern`` over transformers' caches (``DynamicCache``
    and the like, filled from position 0, no left padding). Installs the backend attention."""
    from decoding.backend.attention import attention_modules, find_inv_freq, install

    install(hf_model)
    inv = find_inv_freq(hf_model)
    for module in attention_modules(hf_model):
        module._decoding_inv_freq = inv
        module._decoding_lambda = pattern


def disable_lambda(hf_model: Any) -> None:
    """Back to plain attention (the delegated implementation)."""
    from decoding.backend.attention import attention_modules

    for module in attention_modules(hf_model):
        module._decoding_lambda = None


def lambda_cache_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    pattern: LambdaPattern,
    position_ids: torch.Tensor | None,
) -> torch.Tensor:
    """The pattern over a transformers cache: ``key``/``value`` ``(B, Hkv, S, D)`` hold positions
    ``0..S-1``; the queries are at ``position_ids[0]`` (default: the last ``n`` positions).
    ``attention_mask`` (bool, True = attend; or additive float, 0 = attend), when given, is
    combined with the pattern; without it the pattern is causal."""
    import torch

    from decoding.backend.attention import Segment, segmented_attention

    n, s = query.shape[2], key.shape[2]
    if position_ids is not None:
        qpos = position_ids.reshape(-1, position_ids.shape[-1])[0].to(torch.long)
    else:
        qpos = torch.arange(s - n, s, device=query.device)
    kpos = torch.arange(s, device=query.device)
    if attention_mask is not None and attention_mask.dim() == 4:
        vis = attention_mask[:, 0, :, :s]
        if vis.dtype != torch.bool:
            vis = vis == 0
    else:
        vis = (kpos[None, :] <= qpos[:, None])[None]
    inv = getattr(module, "_decoding_inv_freq", None)
    seg = Segment(key, value, kpos, vis)
    return segmented_attention(query, qpos, [seg], scaling=scaling, pattern=pattern, inv_freq=inv)
