"""Token choice over the allowed tokens: greedy, or sampling with temperature, top-k and top-p.

The grammar mask is applied first (disallowed logits are -inf), so temperature, top-k and top-p
only ever reshape the distribution over allowed tokens: the model conditioned token by token on
the constraint (locally constrained decoding; the properly weighted samplers live in ``samplers``).

:data:`SamplerName` also names the weighted samplers the generator runs through ``samplers``
(``"awrs"``, ``"smc"``, ``"asap"``; see :mod:`decoding.generator`): they take ``temperature > 0``
and no ``top_k`` / ``top_p`` (truncation would change the distribution they are exact for).
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["SAMPLERS", "WEIGHTED_SAMPLERS", "SamplerName", "choose_tokens", "validate_sampling"]

SamplerName = Literal["greedy", "sample", "awrs", "smc", "asap"]
SAMPLERS: tuple[str, ...] = ("greedy", "sample", "awrs", "smc", "asap")
#: the samplers that run through ``samplers`` (a ``PromptLM`` and a token sampler), not the mask loop
WEIGHTED_SAMPLERS: tuple[str, ...] = ("awrs", "smc", "asap")


def validate_sampling(
    sampler: str, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}, got {sampler!r}")
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if sampler in WEIGHTED_SAMPLERS:
        if not temperature > 0.0:
            raise ValueError(f"sampler={sampler!r} needs temperature > 0, got {temperature!r}")
        if top_k is not None or top_p is not None:
            raise ValueError(f"top_k and top_p apply to sampler='sample' only, not {sampler!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


def choose_tokens(
    logits: Any,
    *,
    sampler: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: Any = None,
) -> Any:
    """One token id per row of ``logits`` (``(batch, V)``, already masked; modified in place).

    ``greedy`` (or ``temperature == 0``) takes the arg-max. ``sample`` draws from
    softmax(logits / temperature) restricted to the ``top_k`` highest logits and then to the
    smallest set of tokens whose probability reaches ``top_p`` (at least one token is kept).
    """
    import torch

    if sampler == "greedy" or temperature == 0.0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:
        logits.div_(temperature)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits.masked_fill_(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the mass before it already reaches top_p (the first one always stays)
        before = probs.cumsum(dim=-1) - probs
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits.masked_fill_(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
