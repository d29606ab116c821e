"""Token-mask kernels: the bitmask layout shared with XGrammar and llguidance, and the kernels that
apply masks to logits (torch reference, CPU, Triton on CUDA) behind one dispatcher.

Bitmask layout: int32, shape ``(batch, ceil(vocab / 32))``; bit ``i % 32`` of word ``i // 32`` set
means token ``i`` is allowed.

This module is deliberately free of side effects and heavy imports: transformers probes for an
unrelated PyPI package also named ``kernels``, and torch/triton are imported lazily where used.
"""

from kernels.bitmask import (
    allocate_token_bitmask,
    bitmask_size,
    bitmask_to_bool,
    bool_to_bitmask,
)
from kernels.dispatch import apply_token_bitmask_inplace, masked_logsumexp

__all__ = [
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "bitmask_size",
    "bitmask_to_bool",
    "bool_to_bitmask",
    "masked_logsumexp",
]
