"""The long-context model backend: batched next-token log-probabilities over a KV prefix cache.

- :class:`BatchedLM` (``batched.py``): any transformers causal LM; many sequences per forward
  pass, prepacked (Zhao et al. 2024) and chunked; keys and values shared through a radix trie.
- :class:`PromptedLM`: the ``samplers.protocols.LanguageModel`` protocol (SMC runs on it).
- :class:`PrefixCache` (``prefix_cache.py``): the trie, with copy-on-write branches, LRU
  eviction under a memory budget, and statistics.
- :class:`LambdaPattern`, :func:`enable_lambda` (``lambda_attention.py``): LM-Infinite's
  Lambda-shaped attention (Han et al. 2023) past the trained length, in the backend and over
  transformers' own caches.
- ``prefill.py``: the packing and padding helpers the benchmarks compare.

torch and transformers are imported lazily: importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BatchedLM",
    "CacheStats",
    "KVNode",
    "LambdaPattern",
    "PrefixCache",
    "PromptedLM",
    "disable_lambda",
    "enable_lambda",
    "resolve_pattern",
    "trained_length",
]

_WHERE = {
    "BatchedLM": "decoding.backend.batched",
    "PromptedLM": "decoding.backend.batched",
    "CacheStats": "decoding.backend.prefix_cache",
    "KVNode": "decoding.backend.prefix_cache",
    "PrefixCache": "decoding.backend.prefix_cache",
    "LambdaPattern": "decoding.backend.lambda_attention",
    "disable_lambda": "decoding.backend.lambda_attention",
    "enable_lambda": "decoding.backend.lambda_attention",
    "resolve_pattern": "decoding.backend.lambda_attention",
    "trained_length": "decoding.backend.lambda_attention",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'decoding.backend' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
