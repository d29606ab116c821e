"""LMQL-like query scripts: prompts as programs, with holes the model fills under constraints.

    >>> from decoding.query import query
    >>> r = query('"Say hello:[GREETING]" where len(TOKENS(GREETING)) < 5 and STOPS_AT(GREETING, ".")')
    >>> r.variables["GREETING"], r.prompt, r.stats.model_calls

Both forms of LMQL (Beurer-Kellner, Fischer, Vechev, "Prompting Is Programming: A Query Language
for Large Language Models", PLDI 2023) are accepted: the standalone form
``DECODER "prompt [HOLE]" from "model" where CONSTRAINTS distribution VAR in VALUES`` (paper-era
``distribute VAR over VALUES`` too) and the modern form, a Python program whose top-level strings
are prompt statements (``for``/``if``/functions, ``{expr}`` interpolation, ``"..." where ...``).
Hole constraints compile into token automata (:mod:`decoding.query.constraints`), the interpreter
(:mod:`decoding.query.runtime`) masks eagerly, feeds fixed text without sampling and reuses the KV
cache across holes. Errors are typed (:mod:`decoding.query.errors`) and carry line and column.
"""

from typing import Any

from decoding.query.errors import (
    ContradictoryConstraintError,
    ExternalToolError,
    HostedModelError,
    NotAHoleError,
    QueryError,
    QueryRuntimeError,
    QuerySyntaxError,
    UnknownVariableError,
    UnsupportedConstraintError,
)
from decoding.query.parser import Query, parse
from decoding.query.runner import query
from decoding.query.runtime import HoleRecord, QueryResult, QueryStats

__all__ = [
    "ContradictoryConstraintError",
    "ExternalToolError",
    "HoleRecord",
    "HostedModelError",
    "NotAHoleError",
    "Query",
    "QueryError",
    "QueryResult",
    "QueryRuntimeError",
    "QueryStats",
    "QuerySyntaxError",
    "UnknownVariableError",
    "UnsupportedConstraintError",
    "parse",
    "query",
]


def _make_callable() -> None:
    """Make the package itself callable, so ``decoding.query(source, ...)`` runs a query while
    ``decoding.query.parse`` and ``from decoding.query import ...`` keep working."""
    import sys
    import types

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return query(*args, **kwargs)

    sys.modules[__name__].__class__ = _CallableModule


_make_callable()
