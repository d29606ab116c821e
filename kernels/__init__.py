"""Token-mask kernels: the bitmask layout shared with XGrammar and llguidance, and the kernels that
apply masks to logits, reduce and sample under them, and run regular constraints on the device
(torch reference, numba CPU, Triton on CUDA) behind one dispatcher (:mod:`kernels.dispatch`).

Bitmask layout: int32, shape ``(batch, ceil(vocab / 32))``; bit ``i % 32`` of word ``i // 32`` set
means token ``i`` is allowed.

This module is deliberately free of side effects and heavy imports: transformers probes for an
unrelated PyPI package also named ``kernels``, and torch/triton/numba are imported lazily where
used. (No ``__version__`` here, on purpose.)
"""

from kernels.bitmask import (
    allocate_token_bitmask,
    bitmask_size,
    bitmask_to_bool,
    bool_to_bitmask,
)
from kernels.dispatch import (
    advance_dfa_states,
    apply_token_bitmask_inplace,
    fill_bitmask_from_dfa_states,
    masked_logsumexp,
    sample_constrained,
)

__all__ = [
    "advance_dfa_states",
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "bitmask_size",
    "bitmask_to_bool",
    "bool_to_bitmask",
    "fill_bitmask_from_dfa_states",
    "masked_logsumexp",
    "sample_constrained",
]
