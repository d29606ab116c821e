"""Typed errors raised by the constraint compilers, always before any generation starts.

Every error names what is wrong: the schema keyword and its JSON pointer, the grammar rule, or the
line and column of grammar text. A dead end during matching is a *state* (``Matcher.is_error()``),
never an exception.
"""

from __future__ import annotations

__all__ = [
    "CompileTimeoutError",
    "EmptyLanguageError",
    "GrammarError",
    "GrammarTooLargeError",
    "InvalidGrammarError",
    "InvalidSchemaError",
    "UnsupportedSchemaError",
]


class GrammarError(ValueError):
    """Base class of every error a constraint compiler raises."""


class InvalidSchemaError(GrammarError):
    """The JSON Schema is not a valid schema (it fails its metaschema, or a value is malformed).

    ``pointer`` is the JSON pointer of the offending subschema ("" for the root).
    """

    def __init__(self, message: str, *, pointer: str = "", keyword: str | None = None) -> None:
        self.pointer = pointer
        self.keyword = keyword
        where = f" at {pointer or '#'}" if pointer is not None else ""
        super().__init__(f"invalid schema{where}: {message}")


class UnsupportedSchemaError(GrammarError):
    """The schema uses a keyword (or keyword value) this engine cannot enforce exactly.

    Raised instead of compiling a looser grammar. ``keyword`` and ``pointer`` say where.
    """

    def __init__(self, keyword: str, pointer: str, reason: str = "") -> None:
        self.keyword = keyword
        self.pointer = pointer
        self.reason = reason
        msg = f"unsupported keyword {keyword!r} at {pointer or '#'}"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)


class InvalidGrammarError(GrammarError):
    """Grammar or regex text that cannot be read: names the rule, or the line and column."""

    def __init__(
        self,
        message: str,
        *,
        rule: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.rule = rule
        self.line = line
        self.column = column
        where = []
        if rule is not None:
            where.append(f"rule {rule!r}")
        if line is not None:
            where.append(f"line {line}" + (f", column {column}" if column is not None else ""))
        super().__init__(("in " + ", ".join(where) + ": " if where else "") + message)


class EmptyLanguageError(GrammarError):
    """The constraint admits no string at all (e.g. minLength > maxLength, an empty enum)."""

    def __init__(self, message: str, *, pointer: str | None = None) -> None:
        self.pointer = pointer
        where = f" at {pointer or '#'}" if pointer is not None else ""
        super().__init__(f"the constraint admits no output{where}: {message}")


class GrammarTooLargeError(GrammarError):
    """The automaton would exceed the configured state budget (reported, never silently cut)."""


class CompileTimeoutError(GrammarTooLargeError):
    """Compiling took longer than the time limit (``compile(..., timeout=...)``)."""
