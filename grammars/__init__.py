"""Constraint compilers: JSON Schema, regex, choices (and grammars) -> one grammar form -> token
automaton over a model's vocabulary, and the Matcher that fills next-token bitmasks.

``import grammars`` stays light: numpy only; numba loads when the first grammar compiles.
"""

from grammars.errors import (
    CompileTimeoutError,
    EmptyLanguageError,
    GrammarError,
    GrammarTooLargeError,
    InvalidGrammarError,
    InvalidSchemaError,
    UnsupportedSchemaError,
)
from grammars.grammar import Grammar
from grammars.vocab import Vocabulary


def __getattr__(name: str):
    if name in ("compile", "CompiledGrammar", "Matcher", "clear_cache"):
        from grammars import compiled

        return getattr(compiled, name)
    raise AttributeError(f"module 'grammars' has no attribute {name!r}")


__all__ = [
    "CompileTimeoutError",
    "CompiledGrammar",
    "EmptyLanguageError",
    "Grammar",
    "GrammarError",
    "GrammarTooLargeError",
    "InvalidGrammarError",
    "InvalidSchemaError",
    "Matcher",
    "UnsupportedSchemaError",
    "Vocabulary",
    "clear_cache",
    "compile",
]
