"""Prompt strings -> segments: fixed text, ``{expr}`` interpolations and ``[VAR]`` / ``[VAR: type]``
holes. ``[[``, ``]]``, ``{{`` and ``}}`` are literal brackets; any other lone bracket is an error
(with its line and column), so an unbalanced hole never silently becomes prompt text.

Hole types: ``int``, ``str``, ``r"regex"`` (or ``r'regex'``), or a name in scope (a pydantic model, a
dataclass, a JSON Schema dict, or a nested query function).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from decoding.query.errors import QuerySyntaxError

__all__ = ["Hole", "Interp", "Position", "Segment", "Text", "parse_template"]


@dataclass(frozen=True)
class Position:
    """Where a string literal starts in the query source, and how to map offsets in its value."""

    line: int
    column: int  # 1-based column of the literal's first character

    def at(self, value: str, offset: int) -> tuple[int, int]:
        """Approximate (line, column) of ``value[offset]`` (exact without escape sequences)."""
        before = value[:offset]
        nl = before.count("\n")
        if nl == 0:
            return self.line, self.column + 1 + offset  # +1: the opening quote
        return self.line + nl, offset - before.rfind("\n")


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Interp:
    source: str
    expr: ast.Expression
    line: int
    column: int


@dataclass(frozen=True)
class Hole:
    name: str
    type_source: str | None  # the text after ':' (None: untyped)
    type_kind: str | None  # None | "int" | "str" | "regex" | "name"
    type_value: str | None  # regex pattern or the (dotted) name
    line: int
    column: int


Segment = Text | Interp | Hole


def _err(msg: str, pos: Position, value: str, offset: int) -> QuerySyntaxError:
    line, col = pos.at(value, offset)
    return QuerySyntaxError(msg, line=line, column=col)


def _scan_closing(value: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one before ``i`` (quotes and nesting respected), or -1."""
    depth = 1
    quote: str | None = None
    while i < len(value):
        ch = value[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _hole(body: str, pos: Position, value: str, offset: int) -> Hole:
    line, col = pos.at(value, offset)
    name, sep, typ = body.partition(":")
    name = name.strip()
    if not name.isidentifier():
        raise _err(
            f"invalid hole [{body}]: a hole is [NAME] or [NAME: type] (write [[ and ]] for literal "
            "brackets)",
            pos,
            value,
            offset,
        )
    if not sep:
        return Hole(name, None, None, None, line, col)
    typ = typ.strip()
    if not typ:
        raise _err(f"hole [{body}] has an empty type", pos, value, offset)
    if typ in ("int", "str"):
        return Hole(name, typ, typ, None, line, col)
    if typ[:2] in ("r'", 'r"') or typ[:1] in ("'", '"'):
        try:
            pattern = ast.literal_eval(typ)
        except (ValueError, SyntaxError):
            raise _err(f"hole [{body}]: the regex type is not a valid string literal", pos, value,
                       offset) from None
        if not isinstance(pattern, str):
            raise _err(f"hole [{body}]: the regex type must be a string", pos, value, offset)
        return Hole(name, typ, "regex", pattern, line, col)
    if all(p.isidentifier() for p in typ.split(".")):
        return Hole(name, typ, "name", typ, line, col)
    raise _err(
        f"hole [{body}]: unknown type {typ!r} (use int, str, r\"regex\", or a name in scope)",
        pos,
        value,
        offset,
    )


def parse_template(value: str, pos: Position) -> list[Segment]:
    """Split a prompt string's value into segments (adjacent text merged)."""
    out: list[Segment] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            out.append(Text("".join(buf)))
            buf.clear()

    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        nxt = value[i + 1] if i + 1 < n else ""
        if ch in "[{" and nxt == ch:
            buf.append(ch)
            i += 2
            continue
        if ch in "]}" and nxt == ch:
            buf.append(ch)
            i += 2
            continue
        if ch == "[":
            j = _scan_closing(value, i + 1, "[", "]")
            if j < 0:
                raise _err("unbalanced '[': a hole is never closed (write [[ for a literal '[')",
                           pos, value, i)
            flush()
            out.append(_hole(value[i + 1 : j], pos, value, i))
            i = j + 1
            continue
        if ch == "{":
            j = _scan_closing(value, i + 1, "{", "}")
            if j < 0:
                raise _err("unbalanced '{': an interpolation is never closed (write {{ for a "
                           "literal '{')", pos, value, i)
            src = value[i + 1 : j].strip()
            line, col = pos.at(value, i)
            if not src:
                raise QuerySyntaxError("empty interpolation {}", line=line, column=col)
            try:
                expr = ast.parse(src, mode="eval")
            except SyntaxError as e:
                raise QuerySyntaxError(f"invalid interpolation {{{src}}}: {e.msg}", line=line,
                                       column=col) from None
            flush()
            out.append(Interp(src, expr, line, col))
            i = j + 1
            continue
        if ch in "]}":
            raise _err(f"unbalanced {ch!r} (write {ch}{ch} for a literal {ch!r})", pos, value, i)
        buf.append(ch)
        i += 1
    flush()
    return out
