"""Regular expressions (Python ``re`` syntax, the subset JSON Schema ``pattern`` needs) to grammar nodes.

Stage 1 is Python's own regex parser (``re._parser``), so the syntax accepted is exactly ``re``'s;
stage 2 walks its parse tree into byte-level grammar nodes, encoding every character class through
an *encoder* (plain UTF-8, or the characters of a JSON string body with their escapes).

Semantics (documented choices):
- ``\\d`` = ``[0-9]``, ``\\w`` = ``[A-Za-z0-9_]`` (ECMA-262, which JSON Schema specifies), ``\\s`` =
  ECMA-262 white space and line terminators.
- ``.`` matches any character except ``\\n`` (``dialect="python"``) or except the ECMA-262 line
  terminators ``\\n \\r \\u2028 \\u2029`` (``dialect="ecma"``).
- ``mode="fullmatch"``: the regex must match the whole string (``^``/``$`` at the ends are no-ops).
  ``mode="search"`` (JSON Schema ``pattern``): the regex may match anywhere unless anchored; ``^``
  and ``$`` are honoured at the start/end of the pattern or of a top-level alternative (a trailing
  group or alternation holding anchors is spread into top-level alternatives first).
- Unsupported constructs raise :class:`UnsupportedRegexError` naming the construct: backreferences,
  lookaround, word boundaries, anchors inside groups, atomic groups, possessive quantifiers, and
  flags (``(?i)`` etc.). Syntax errors raise :class:`RegexSyntaxError` with the position.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

from grammars import charclass as cc
from grammars.errors import GrammarError
from grammars.ir import Node, alt, repeat, seq, star

try:  # Python 3.11+
    import re._constants as _c
    import re._parser as _p
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

__all__ = [
    "Encoder",
    "RegexSyntaxError",
    "UnsupportedRegexError",
    "json_string_encoder",
    "regex_to_node",
    "utf8_encoder",
]

Encoder = Callable[[cc.CodepointSet], Node]
utf8_encoder: Encoder = cc.utf8_node
json_string_encoder: Encoder = cc.json_string_char_node


class UnsupportedRegexError(GrammarError):
    """The regex uses a construct that no finite automaton (or this compiler) can express."""

    def __init__(self, construct: str, pattern: str) -> None:
        self.construct = construct
        self.pattern = pattern
        super().__init__(f"regex {pattern!r} uses unsupported {construct}")


class RegexSyntaxError(GrammarError):
    """The regex does not parse; ``position`` is the character offset."""

    def __init__(self, message: str, pattern: str, position: int | None) -> None:
        self.pattern = pattern
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"invalid regex {pattern!r}{where}: {message}")


_DIGIT: cc.CodepointSet = ((0x30, 0x39),)
_WORD: cc.CodepointSet = cc.normalize([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
_SPACE: cc.CodepointSet = cc.normalize(
    [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
     (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)]
)
_CATEGORIES: dict[object, cc.CodepointSet] = {
    _c.CATEGORY_DIGIT: _DIGIT,
    _c.CATEGORY_NOT_DIGIT: cc.complement(_DIGIT),
    _c.CATEGORY_WORD: _WORD,
    _c.CATEGORY_NOT_WORD: cc.complement(_WORD),
    _c.CATEGORY_SPACE: _SPACE,
    _c.CATEGORY_NOT_SPACE: cc.complement(_SPACE),
}
_DOT = {
    "python": cc.complement(((0x0A, 0x0A),)),
    "ecma": cc.complement(cc.normalize([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)])),
}
_BEGIN = {_c.AT_BEGINNING, _c.AT_BEGINNING_STRING}
_END = {_c.AT_END, _c.AT_END_STRING}


def _class_set(items: list) -> cc.CodepointSet:
    negate = False
    ranges: list[tuple[int, int]] = []
    for op, av in items:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            ranges.append((av, av))
        elif op is _c.RANGE:
            ranges.append(av)
        elif op is _c.CATEGORY:
            if av not in _CATEGORIES:
                raise KeyError(str(av))
            ranges.extend(_CATEGORIES[av])
        else:
            raise KeyError(str(op))
    s = cc.normalize(ranges)
    return cc.complement(s) if negate else s


class _Lowering:
    def __init__(self, pattern: str, encoder: Encoder, dialect: str) -> None:
        self.pattern = pattern
        self.encoder = encoder
        self.dot = _DOT[dialect]
        self._cache: dict[cc.CodepointSet, Node] = {}

    def chars(self, s: cc.CodepointSet) -> Node:
        node = self._cache.get(s)
        if node is None:
            node = self.encoder(s)
            self._cache[s] = node
        return node

    def unsupported(self, what: str) -> UnsupportedRegexError:
        return UnsupportedRegexError(what, self.pattern)

    def seq(self, items) -> Node:
        return seq(*(self.item(op, av) for op, av in items))

    def item(self, op, av) -> Node:
        if op is _c.LITERAL:
            return self.chars(((av, av),))
        if op is _c.NOT_LITERAL:
            return self.chars(cc.complement(((av, av),)))
        if op is _c.ANY:
            return self.chars(self.dot)
        if op is _c.IN:
            try:
                return self.chars(_class_set(av))
            except KeyError as e:
                raise self.unsupported(f"character class item {e}") from None
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            lo, hi, sub = av
            return repeat(self.seq(sub), lo, None if hi is _c.MAXREPEAT else hi)
        if op is _c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise self.unsupported("inline flags")
            return self.seq(sub)
        if op is _c.BRANCH:
            return alt(*(self.seq(b) for b in av[1]))
        if op is _c.AT:
            if av in _BEGIN or av in _END:
                raise self.unsupported("anchor inside a group or in the middle of the pattern")
            raise self.unsupported(f"assertion {av}")
        if op in (_c.GROUPREF, getattr(_c, "GROUPREF_EXISTS", None)):
            raise self.unsupported("backreference")
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            raise self.unsupported("lookaround assertion")
        raise self.unsupported(str(op).lower().replace("_", " "))

    def branch(self, items: list, mode: str) -> tuple[bool, bool, Node]:
        """(anchored at the start, anchored at the end, body) of one top-level alternative."""
        items = list(items)
        begin = end = mode == "fullmatch"
        while items and items[0][0] is _c.AT and items[0][1] in _BEGIN:
            items.pop(0)
            begin = True
        while items and items[-1][0] is _c.AT and items[-1][1] in _END:
            items.pop()
            end = True
        return begin, end, self.seq(items)

    def anchored(self, begin: bool, end: bool, body: Node) -> Node:
        """``body`` with ``.*`` where it is not anchored (search semantics)."""
        anything = star(self.chars(cc.ANY))
        head = seq(*([] if begin else [anything]), body)
        if end:
            return head
        return seq(_first_match(head), anything)


def _first_match(node: Node) -> Node:
    """The strings of ``node`` with no proper prefix in it, as a ready DFA: ``first_match(.*X)
    .*`` is ``.*X.*`` without the subset blow-up of tracking every later partial match of ``X``
    after one has completed (30 alternative words took minutes; now milliseconds)."""
    from grammars.automaton import _trim, dfa_of, minimize
    from grammars.ir import Automaton

    dfa = dfa_of(node)
    trans = dfa.trans.copy()
    trans[dfa.accepting] = -1
    cut = minimize(_trim(trans, dfa.accepting))
    return Automaton(cut.trans, cut.accepting)


def regex_to_node(
    pattern: str,
    *,
    encoder: Encoder = utf8_encoder,
    mode: Literal["fullmatch", "search"] = "fullmatch",
    dialect: Literal["python", "ecma"] = "python",
) -> Node:
    """Lower ``pattern`` to a byte-level node whose language is the set of encoded strings it
    matches. Results are cached per process (nodes are immutable; the same format and number
    patterns recur across schemas)."""
    return _regex_to_node(pattern, encoder, mode, dialect)


def clear_cache() -> None:
    """Forget the lowered regexes (see :func:`grammars.compiled.clear_cache`)."""
    _regex_to_node.cache_clear()


@lru_cache(maxsize=1024)
def _regex_to_node(pattern: str, encoder: Encoder, mode: str, dialect: str) -> Node:
    try:
        parsed = _p.parse(pattern, 0)
    except re.error as e:
        raise RegexSyntaxError(e.msg, pattern, e.pos) from None
    except (OverflowError, RecursionError) as e:
        raise RegexSyntaxError(str(e), pattern, None) from None
    if parsed.state.flags & ~(re.UNICODE | re.ASCII | 0):
        raise UnsupportedRegexError("flags", pattern)
    low = _Lowering(pattern, encoder, dialect)
    items = list(parsed)
    tops = list(items[0][1][1]) if len(items) == 1 and items[0][0] is _c.BRANCH else [items]
    # alternatives with the same anchors share one ``.*`` (``.*(a|b).*``, not ``.*a.*|.*b.*``,
    # whose DFA tracks every word's partial matches at once)
    groups: dict[tuple[bool, bool], list[Node]] = {}
    for top in tops:
        for b in _distribute(list(top)):
            begin, end, body = low.branch(b, mode)
            groups.setdefault((begin, end), []).append(body)
    return alt(*(low.anchored(begin, end, alt(*bodies)) for (begin, end), bodies in groups.items()))


def _has_anchor(items: list) -> bool:
    for op, av in items:
        if op is _c.AT and (av in _BEGIN or av in _END):
            return True
        if op is _c.SUBPATTERN and _has_anchor(list(av[3])):
            return True
        if op is _c.BRANCH and any(_has_anchor(list(b)) for b in av[1]):
            return True
    return False


def _distribute(items: list) -> list[list]:
    """Alternatives of a top-level sequence whose last item is a group or an alternation holding
    anchors (``^(a|$)``, or ``^$|^x$`` after ``re`` factored out the common ``^``), spread into
    top-level alternatives, where :meth:`_Lowering.branch` honours their anchors."""
    if not items:
        return [items]
    op, av = items[-1]
    if op is _c.SUBPATTERN and not av[1] and not av[2] and _has_anchor(list(av[3])):
        return _distribute(items[:-1] + list(av[3]))
    if op is _c.BRANCH and any(_has_anchor(list(b)) for b in av[1]):
        return [x for b in av[1] for x in _distribute(items[:-1] + list(b))]
    return [items]
