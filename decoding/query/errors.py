"""Typed errors of the query language. Every static error is raised before any model call and
names the line and column (1-based) of the offending source text."""

from __future__ import annotations

__all__ = [
    "ContradictoryConstraintError",
    "ExternalToolError",
    "HostedModelError",
    "NotAHoleError",
    "QueryError",
    "QueryRuntimeError",
    "QuerySyntaxError",
    "UnknownVariableError",
    "UnsupportedConstraintError",
]


class QueryError(ValueError):
    """Base class. ``line``/``column`` locate the problem in the query source (None if unknown)."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = ""
        if line is not None:
            where = f"line {line}" + (f", column {column}" if column is not None else "") + ": "
        super().__init__(where + message)


class QuerySyntaxError(QueryError):
    """The script does not parse (unbalanced brackets, a bad hole, a misplaced clause...)."""


class UnknownVariableError(QueryError):
    """A name that is neither defined by the script, a hole, a builtin nor a given input."""

    def __init__(self, name: str, message: str, **kw: int | None) -> None:
        self.name = name
        super().__init__(message, **kw)


class NotAHoleError(QueryError):
    """A constraint targets a variable that is not a hole of the prompt it is attached to."""

    def __init__(self, name: str, message: str, **kw: int | None) -> None:
        self.name = name
        super().__init__(message, **kw)


class UnsupportedConstraintError(QueryError):
    """A constraint this engine cannot compile into a token mask (it is never ignored)."""


class ContradictoryConstraintError(QueryError):
    """A hole's constraints admit no value at all (their automaton product is empty)."""

    def __init__(self, variable: str, message: str, **kw: int | None) -> None:
        self.variable = variable
        super().__init__(message, **kw)


class ExternalToolError(QueryError):
    """The script needs an external tool or remote service (named in ``function``)."""

    def __init__(self, function: str, message: str, **kw: int | None) -> None:
        self.function = function
        super().__init__(message, **kw)


class HostedModelError(QueryError):
    """The ``from`` clause names a hosted model; this engine never calls remote services."""


class QueryRuntimeError(QueryError):
    """The query failed while running (a constraint evaluated at run time, a dead end...)."""
