"""The user-facing layer: load a model, generate under a constraint, the CLI (``python -m decoding``).

    >>> from decoding import generate
    >>> c = generate("Name a color.", choices=["red", "green", "blue"])
    >>> c.text, c.finish_reason

``generate`` is a thin wrapper over :class:`Generator` (compile once, generate many times);
:class:`GrammarLogitsProcessor` plugs a grammar into transformers' ``model.generate``.
torch and transformers are imported lazily (``import decoding`` stays light).
"""

from decoding import query
from decoding.completion import Completion, GenerationStats
from decoding.generator import DecodingError, Generator, build_grammar, generate
from decoding.model import DecodeState, Model, ModelNotFoundError, default_model_path, load_model


def __getattr__(name: str):
    if name == "GrammarLogitsProcessor":
        from decoding.logits_processor import GrammarLogitsProcessor

        return GrammarLogitsProcessor
    if name in ("BatchedLM", "PromptedLM", "LambdaPattern"):
        from decoding import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'decoding' has no attribute {name!r}")


__all__ = [
    "BatchedLM",
    "Completion",
    "DecodeState",
    "DecodingError",
    "GenerationStats",
    "Generator",
    "GrammarLogitsProcessor",
    "LambdaPattern",
    "Model",
    "ModelNotFoundError",
    "PromptedLM",
    "build_grammar",
    "default_model_path",
    "generate",
    "load_model",
    "query",
]
