"""``Grammar``: the one grammar form, with a constructor per kind of constraint."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any, Literal

from grammars.errors import EmptyLanguageError, InvalidGrammarError
from grammars.ir import Node, Rules, alt, fingerprint, lit

#: Seconds a JSON Schema's lowering may take by default; past it the grammar is the fallback (any
#: value of the root's types, exact through strict semantic checks).
LOWERING_TIMEOUT = 4.0

__all__ = ["Grammar", "builtin_names", "builtin_text"]


class Grammar:
    """A constraint lowered into named byte-level rules (see :mod:`grammars.ir`).

    Build with ``Grammar.from_json_schema``, ``from_regex``, ``from_choices`` (and, for the
    context-free path, ``from_lark``); compile against a vocabulary with :func:`grammars.compile`.
    ``kind`` and ``source`` describe where it came from (for messages and caching).
    """

    def __init__(self, rules: Rules, *, kind: str = "rules", source: Any = None) -> None:
        self.rules = rules
        self.kind = kind
        self.source = source
        self.json_schema: Any = None  # the (resolved) schema when built from one
        self.semantic: Any = None  # json_semantic.SchemaChecks when the grammar alone is not exact

    def __repr__(self) -> str:
        src = repr(self.source)
        if len(src) > 60:
            src = src[:57] + "..."
        return f"Grammar.{self.kind}({src})"

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.rules)

    @classmethod
    def from_node(cls, node: Node, *, kind: str = "rules", source: Any = None) -> Grammar:
        return cls(Rules({"start": node}, "start"), kind=kind, source=source)

    @classmethod
    def from_regex(cls, pattern: str) -> Grammar:
        """Strings that ``pattern`` (Python ``re`` syntax, see :mod:`grammars.regex`) fully matches."""
        from grammars.regex import regex_to_node

        if not isinstance(pattern, str):
            raise InvalidGrammarError(f"a regex must be a str, got {type(pattern).__name__}")
        return cls.from_node(regex_to_node(pattern, mode="fullmatch"), kind="regex", source=pattern)

    @classmethod
    def from_choices(cls, strings: Iterable[str]) -> Grammar:
        """Exactly one of ``strings`` (non-empty list; duplicates are merged)."""
        items = list(strings)
        if not items:
            raise EmptyLanguageError("no choices given")
        for s in items:
            if not isinstance(s, str):
                raise InvalidGrammarError(f"choices must be strings, got {s!r}")
        uniq = list(dict.fromkeys(items))
        return cls.from_node(alt(*(lit(s) for s in uniq)), kind="choices", source=uniq)

    @classmethod
    def from_json_schema(
        cls,
        schema: Any,
        *,
        whitespace: Literal["compact", "flexible"] = "compact",
        property_order: Literal["schema", "any"] = "schema",
        registry: dict[str, Any] | None = None,
        timeout: float | None = LOWERING_TIMEOUT,
    ) -> Grammar:
        """JSON texts that validate against ``schema`` (a dict, a bool, a JSON string, or a pydantic
        model class). See :mod:`grammars.json_schema` for the keywords and the exact semantics.
        Lowering past ``timeout`` seconds gives the fallback grammar (any value of the root's
        types, every keyword checked when its value completes); ``compile`` counts the lowering
        time against its own limit."""
        from grammars.automaton import gc_paused
        from grammars.json_schema import schema_to_grammar

        with gc_paused():
            return schema_to_grammar(
                schema, whitespace=whitespace, property_order=property_order,
                registry=registry, timeout=timeout,
            )

    @classmethod
    def from_lark(cls, text: str, start: str = "start") -> Grammar:
        """A Lark grammar (see :mod:`grammars.lark_grammar`): rules, terminals, string and regex
        literals, ``?rule`` inlining, ``%import common.*``, ``%ignore``, ``* + ? ~n..m``. Recursive
        rules compile to the context-free path."""
        from grammars.automaton import gc_paused
        from grammars.lark_grammar import lark_to_grammar

        with gc_paused():
            return lark_to_grammar(text, start=start)

    @classmethod
    def from_gbnf(cls, text: str) -> Grammar:
        """A llama.cpp GBNF grammar (start rule ``root``); see :mod:`grammars.gbnf`."""
        from grammars.gbnf import gbnf_to_grammar

        return gbnf_to_grammar(text)

    @classmethod
    def builtin(cls, name: str) -> Grammar:
        """One of the grammars shipped in ``grammars/builtin/``: ``"json"``, ``"arithmetic"``,
        ``"sql"`` (a SQLite SELECT subset), ``"python_expr"``; :func:`builtin_names` lists them."""
        text = builtin_text(name)
        g = cls.from_lark(text)
        g.source = f"builtin:{name}"
        return g


def builtin_names() -> list[str]:
    """The names of the built-in Lark grammars."""
    from importlib import resources

    files = resources.files("grammars").joinpath("builtin").iterdir()
    return sorted(f.name.removesuffix(".lark") for f in files if f.name.endswith(".lark"))


def builtin_text(name: str) -> str:
    """The Lark text of built-in grammar ``name``."""
    from importlib import resources

    names = builtin_names()
    if name not in names:
        raise InvalidGrammarError(f"no built-in grammar {name!r}; there are {names}")
    return resources.files("grammars").joinpath("builtin", f"{name}.lark").read_text("utf-8")
