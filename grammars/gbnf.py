"""llama.cpp GBNF grammar text -> the one grammar form.

GBNF (llama.cpp's ``grammars/README.md``): rules ``name ::= alternatives`` (names of letters,
digits and ``-``; the start rule is ``root``), alternatives ``|``, sequences, string literals
``"..."`` and character classes ``[a-z]`` / ``[^...]`` with the escapes ``\\n \\r \\t \\\\ \\"
\\] \\- \\xHH \\uHHHH \\UHHHHHHHH``, ``.`` (any character), grouping ``( )``, repetition ``* + ?``
and ``{m}``, ``{m,}``, ``{m,n}``, comments from ``#`` to the end of the line. A rule may continue
on the next lines; a new rule starts at ``name ::=``.

The text is read with lark (an Earley parser over a small GBNF grammar, so a rule's end is decided
by the ``::=`` that follows, whatever the line breaks); the tree is lowered to grammar nodes:
literals and classes become UTF-8 byte sequences, rules become named rules (``Ref``), so a
recursive GBNF grammar compiles to the context-free path. Errors are
:class:`~grammars.errors.InvalidGrammarError` with the line and column (syntax, bad escapes,
empty or reversed ranges), naming the rule (undefined rule, missing ``root``), and
:class:`~grammars.errors.EmptyLanguageError` when ``root`` derives no string.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from grammars import charclass as cc
from grammars.errors import EmptyLanguageError, InvalidGrammarError
from grammars.grammar import Grammar
from grammars.ir import Node, Ref, Rules, alt, lit, opt, repeat, seq, star

__all__ = ["gbnf_to_grammar"]

_META = r"""
start: _sep? (rule _sep?)*
rule: NAME _sep? "::=" _sep? alternatives
alternatives: sequence (_sep? "|" _sep? sequence)*
sequence: (item _sep?)*
?item: atom REPEAT?
?atom: LITERAL -> literal
     | CLASS -> charclass
     | "." -> any
     | NAME -> ref
     | "(" _sep? alternatives _sep? ")" -> group
REPEAT: "*" | "+" | "?" | /\{[ ]*[0-9]+[ ]*(,[ ]*([0-9]+[ ]*)?)?\}/
NAME: /[A-Za-z0-9_-]+/
LITERAL: /"([^"\\]|\\.)*"/
CLASS: /\[\^?([^\]\\]|\\.)*\]/
_sep: (_WS | _COMMENT)+
_WS: /[ \t\r\n]+/
_COMMENT: /#[^\n]*/
"""


#: every Unicode scalar value (code points minus the surrogates)
_ANY = cc.subtract(cc.normalize([(0, cc.MAX_CP)]), cc.normalize([cc.SURROGATES]))


@cache
def _parser() -> Any:
    from lark import Lark

    return Lark(_META, parser="earley", lexer="dynamic", propagate_positions=True)


def _escape(text: str, i: int, tok: Any) -> tuple[int, int]:
    """The code point of the escape at ``text[i] == "\\\\"`` and the index after it."""
    simple = {"n": 10, "r": 13, "t": 9, "\\": 92, '"': 34, "]": 93, "[": 91, "-": 45, "^": 94,
              "/": 47, "0": 0}
    if i + 1 >= len(text):
        raise _error("a dangling backslash", tok)
    c = text[i + 1]
    if c in simple:
        return simple[c], i + 2
    width = {"x": 2, "u": 4, "U": 8}.get(c)
    if width is None:
        raise _error(f"unknown escape \\{c}", tok)
    digits = text[i + 2 : i + 2 + width]
    if len(digits) != width or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
        raise _error(f"\\{c} needs {width} hex digits", tok)
    cp = int(digits, 16)
    if cp > cc.MAX_CP:
        raise _error(f"code point {cp:#x} is out of range", tok)
    return cp, i + 2 + width


def _error(msg: str, tok: Any) -> InvalidGrammarError:
    return InvalidGrammarError(msg, line=getattr(tok, "line", None),
                               column=getattr(tok, "column", None))


def _chars(body: str, tok: Any) -> list[tuple[int, bool]]:
    """The code points of a literal's or class's body, each with whether it was escaped."""
    out: list[tuple[int, bool]] = []
    i = 0
    while i < len(body):
        if body[i] == "\\":
            cp, i = _escape(body, i, tok)
            out.append((cp, True))
        else:
            out.append((ord(body[i]), False))
            i += 1
    return out


def _literal(tok: Any) -> Node:
    text = "".join(chr(c) for c, _ in _chars(str(tok)[1:-1], tok))
    return lit(text.encode("utf-8", "surrogatepass"))


def _class(tok: Any) -> Node:
    text = str(tok)[1:-1]
    negate = text.startswith("^")
    if negate:
        text = text[1:]
    chars = _chars(text, tok)
    cps = [c for c, _ in chars]
    raw_dash = [c == ord("-") and not escaped for c, escaped in chars]  # an escaped \- is plain
    ranges: list[tuple[int, int]] = []
    k = 0
    while k < len(cps):
        if k + 2 < len(cps) and raw_dash[k + 1]:
            lo, hi = cps[k], cps[k + 2]
            if hi < lo:
                raise _error(f"reversed range {chr(lo)!r}-{chr(hi)!r}", tok)
            ranges.append((lo, hi))
            k += 3
        else:
            ranges.append((cps[k], cps[k]))
            k += 1
    s = cc.normalize(ranges)
    if negate:
        s = _ANY if not s else cc.subtract(_ANY, s)
    if not s:
        raise _error("an empty character class", tok)
    return cc.utf8_node(s)


def _repeat(node: Node, op: Any) -> Node:
    text = str(op).replace(" ", "")
    if text == "*":
        return star(node)
    if text == "+":
        return repeat(node, 1, None)
    if text == "?":
        return opt(node)
    inner = text[1:-1]
    if "," not in inner:
        n = int(inner)
        return repeat(node, n, n)
    lo_s, hi_s = inner.split(",", 1)
    lo, hi = int(lo_s), (int(hi_s) if hi_s else None)
    if hi is not None and hi < lo:
        raise _error(f"repetition {text} has max < min", op)
    return repeat(node, lo, hi)


def _lower(t: Any, names: set[str]) -> Node:
    from lark import Token, Tree

    if isinstance(t, Token):  # pragma: no cover - the meta-grammar wraps tokens in trees
        raise _error(f"unexpected {t!r}", t)
    assert isinstance(t, Tree)
    d = t.data
    if d == "alternatives":
        return alt(*(_lower(k, names) for k in t.children))
    if d == "sequence":
        return seq(*(_lower(k, names) for k in t.children))
    if d == "item":
        node, op = t.children
        return _repeat(_lower(node, names), op)
    if d == "literal":
        return _literal(t.children[0])
    if d == "charclass":
        return _class(t.children[0])
    if d == "any":
        return cc.utf8_node(_ANY)
    if d == "ref":
        name = str(t.children[0])
        if name not in names:
            raise InvalidGrammarError("undefined rule", rule=name,
                                      line=t.children[0].line, column=t.children[0].column)
        return Ref("g:" + name)
    if d == "group":
        return _lower(t.children[0], names)
    raise InvalidGrammarError(f"unsupported GBNF construct {d!r}")  # pragma: no cover


def gbnf_to_grammar(text: str) -> Grammar:
    """Lower GBNF ``text`` (start rule ``root``) to a :class:`Grammar`."""
    from lark.exceptions import UnexpectedInput

    if not isinstance(text, str):
        raise InvalidGrammarError(f"a GBNF grammar must be a str, got {type(text).__name__}")
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise InvalidGrammarError(f"GBNF syntax error: {str(e).strip().splitlines()[0]}",
                                  line=e.line, column=e.column) from None
    defs = [r for r in tree.children]
    names: set[str] = set()
    for r in defs:
        name = str(r.children[0])
        if name in names:
            raise InvalidGrammarError("rule defined twice", rule=name, line=r.children[0].line)
        names.add(name)
    if "root" not in names:
        raise InvalidGrammarError("no root rule (GBNF starts at 'root')", rule="root")
    rules = {"g:" + str(r.children[0]): _lower(r.children[1], names) for r in defs}
    rules["start"] = Ref("g:root")
    from grammars.lark_grammar import _nonempty

    if not _nonempty(rules, "start"):
        raise EmptyLanguageError("the root rule derives no string")
    return Grammar(Rules(rules, "start"), kind="gbnf", source=text)
