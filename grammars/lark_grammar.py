"""Lark grammar text -> the one grammar form.

Stage 1 is lark's own grammar loader (``lark.load_grammar.GrammarBuilder``): it parses the text,
resolves ``%import common.*`` and gives the EBNF tree of every rule and terminal. Stage 2 lowers
those trees into grammar nodes: rules become named rules (``Ref``), string literals byte literals,
``/regex/`` terminals regex nodes, ``*``/``+``/``?``/``[...]``/``~n..m`` repetitions, and every
terminal may be preceded by ``%ignore``d input (and the start rule followed by it), so ignored text
may appear between any two terminals.

The language is the scannerless one (a terminal matches any string of its own language), which is
what lark's Earley parser accepts with ``lexer="dynamic_complete"``. Grammars whose rules recurse
compile to the context-free path (:mod:`grammars.cfg`), the others to one DFA. A terminal that
matches the empty string is an ``InvalidGrammarError`` (naming it), as in lark.
"""

from __future__ import annotations

import ast
from typing import Any

from lark import Token, Tree
from lark.grammar import NonTerminal, Terminal

from grammars.errors import EmptyLanguageError, InvalidGrammarError
from grammars.grammar import Grammar
from grammars.ir import Node, Ref, Rules, alt, lit, opt, repeat, seq, star
from grammars.regex import RegexSyntaxError, UnsupportedRegexError, regex_to_node

__all__ = ["lark_to_grammar"]


# lark's common.lark defines escaped strings with a lookbehind; these are the same languages.
_LOOKAROUND_FREE = {"ESCAPED_STRING": r'"(?:[^"\\\n]|\\.)*"'}


def _string_literal(tok: str) -> tuple[str, str]:
    """Lark string literal token text -> (value, flags)."""
    q = tok.rfind('"')
    body, flags = tok[: q + 1], tok[q + 1 :]
    if "\\" not in body:
        return body[1:-1], flags  # nothing to unescape (literal_eval costs a compile)
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError):
        value = body[1:-1]
    return value, flags


class _Lowering:
    def __init__(self, ignore: list[str]) -> None:
        self.ignore = ignore
        self.literals: list[tuple[Node, Any]] = []  # anonymous terminals inside rules
        self.ign: Node = lit(b"")
        if ignore:
            self.ign = star(alt(*(Ref("t:" + n) for n in ignore)))

    def terminal_ref(self, node: Node) -> Node:
        return seq(self.ign, node)

    def tree(self, t: Any, *, in_terminal: bool) -> Node:
        if isinstance(t, NonTerminal):
            return Ref("r:" + t.name)
        if isinstance(t, Terminal):
            r = Ref("t:" + t.name)
            return r if in_terminal else self.terminal_ref(r)
        if isinstance(t, Token):
            raise InvalidGrammarError(f"unexpected token {t!r}", line=getattr(t, "line", None), column=getattr(t, "column", None))
        assert isinstance(t, Tree)
        d = t.data
        kids = t.children
        if d == "expansions":
            return alt(*(self.tree(k, in_terminal=in_terminal) for k in kids))
        if d in ("expansion", "alias"):
            items = kids if d == "expansion" else kids[:1]
            return seq(*(self.tree(k, in_terminal=in_terminal) for k in items if k is not None))
        if d == "value":
            return self.tree(kids[0], in_terminal=in_terminal)
        if d == "maybe":
            return opt(self.tree(kids[0], in_terminal=in_terminal))
        if d == "expr":
            inner = self.tree(kids[0], in_terminal=in_terminal)
            op = kids[1]
            if str(op) == "*":
                return star(inner)
            if str(op) == "+":
                return repeat(inner, 1, None)
            if str(op) == "?":
                return opt(inner)
            if str(op) == "~":
                lo = int(kids[2])
                hi = int(kids[3]) if len(kids) > 3 else lo
                return repeat(inner, lo, hi)
            raise InvalidGrammarError(f"unknown operator {op!r}")
        if d == "literal":
            tok = kids[0]
            node = self.literal(tok)
            if not in_terminal:
                self.literals.append((node, tok))
            return node if in_terminal else self.terminal_ref(node)
        if d == "range":
            a, _ = _string_literal(str(kids[0]))
            b, _ = _string_literal(str(kids[1]))
            from grammars import charclass as cc

            return cc.utf8_node(((ord(a), ord(b)),))
        if d == "template_usage":
            raise InvalidGrammarError("rule templates are not supported", line=getattr(t.meta, "line", None))
        raise InvalidGrammarError(f"unsupported grammar construct {d!r}")

    @staticmethod
    def literal(tok: Any) -> Node:
        text = str(tok)
        line, col = getattr(tok, "line", None), getattr(tok, "column", None)
        if tok.type == "STRING":
            value, flags = _string_literal(text)
            if "i" in flags:
                return seq(*(alt(lit(c.lower()), lit(c.upper())) if c.lower() != c.upper() else lit(c) for c in value))
            return lit(value)
        # REGEXP: /pattern/flags
        end = text.rfind("/")
        pattern, flags = text[1:end], text[end + 1 :]
        if flags.replace("u", ""):
            raise InvalidGrammarError(f"regex flags {flags!r} are not supported", line=line, column=col)
        try:
            return regex_to_node(pattern, mode="fullmatch")
        except (UnsupportedRegexError, RegexSyntaxError) as e:
            raise InvalidGrammarError(str(e), line=line, column=col) from None


def lark_to_grammar(text: str, *, start: str = "start") -> Grammar:
    """Lower Lark grammar ``text`` (start rule ``start``) to a :class:`Grammar`."""
    from lark.exceptions import GrammarError as LarkGrammarError
    from lark.exceptions import LarkError, UnexpectedInput
    from lark.load_grammar import GrammarBuilder

    if not isinstance(text, str):
        raise InvalidGrammarError(f"a Lark grammar must be a str, got {type(text).__name__}")
    gb = GrammarBuilder()
    try:
        gb.load_grammar(text, "<grammar>")
        built = gb.build()
    except UnexpectedInput as e:
        raise InvalidGrammarError(f"syntax error: {str(e).strip().splitlines()[0]}", line=e.line, column=e.column) from None
    except LarkGrammarError as e:
        raise InvalidGrammarError(str(e).strip()) from None
    except LarkError as e:  # pragma: no cover - other loader errors
        raise InvalidGrammarError(str(e).strip()) from None
    rules: dict[str, Node] = {}
    low = _Lowering(list(built.ignore))
    for name, (tree, _priority) in built.term_defs:
        try:
            rules["t:" + name] = low.tree(tree, in_terminal=True)
        except InvalidGrammarError:
            if name not in _LOOKAROUND_FREE:
                raise
            rules["t:" + name] = regex_to_node(_LOOKAROUND_FREE[name])
    names = set()
    for name, params, tree, _options in built.rule_defs:
        if params:
            raise InvalidGrammarError("rule templates are not supported", rule=name)
        rules["r:" + name] = low.tree(tree, in_terminal=False)
        names.add(name)
    if start not in names:
        raise InvalidGrammarError(f"start rule {start!r} is not defined", rule=start)
    for name, node in list(rules.items()):
        for ref in _refs(node):
            if ref not in rules:
                raise InvalidGrammarError("undefined rule or terminal", rule=ref.split(":", 1)[1])
    _check_terminals_nonempty(rules, low.literals)
    rules["start"] = seq(Ref("r:" + start), low.ign)
    if not _nonempty(rules, "start"):
        raise EmptyLanguageError(f"start rule {start!r} derives no string")
    return Grammar(Rules(rules, "start"), kind="lark", source=text)


def _check_terminals_nonempty(rules: dict[str, Node], literals: list[tuple[Node, Any]]) -> None:
    """A terminal (named, or a literal inside a rule) that matches the empty string is an error,
    as in lark: a lexeme must consume input."""
    terms = {k: v for k, v in rules.items() if k.startswith("t:")}
    nullable = _nullable_rules(terms)
    for name in terms:
        if nullable[name]:
            raise InvalidGrammarError("terminal matches the empty string",
                                      rule=name.split(":", 1)[1])
    for node, tok in literals:
        if _nullable(node, nullable):
            raise InvalidGrammarError(f"terminal {str(tok)!r} matches the empty string",
                                      line=getattr(tok, "line", None),
                                      column=getattr(tok, "column", None))


def _nullable(n: Node, rules: dict[str, bool]) -> bool:
    """Whether ``n`` matches the empty string, given which rules do."""
    from grammars.ir import Alt, Automaton, Lit, Repeat, Seq

    if isinstance(n, Ref):
        return rules.get(n.name, False)
    if isinstance(n, Lit):
        return not n.data
    if isinstance(n, Automaton):
        return bool(n.accepting[0])
    if isinstance(n, Seq):
        return all(_nullable(i, rules) for i in n.items)
    if isinstance(n, Alt):
        return any(_nullable(i, rules) for i in n.items)
    if isinstance(n, Repeat):
        return n.lo == 0 or _nullable(n.item, rules)
    return False  # Bytes: one byte


def _nullable_rules(rules: dict[str, Node]) -> dict[str, bool]:
    """Least fixpoint: which rules match the empty string."""
    out = {k: False for k in rules}
    changed = True
    while changed:
        changed = False
        for k, n in rules.items():
            if not out[k] and _nullable(n, out):
                out[k] = changed = True
    return out


def _refs(node: Node) -> list[str]:
    from grammars.ir import Alt, Repeat, Seq

    out: list[str] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Ref):
            out.append(n.name)
        elif isinstance(n, (Seq, Alt)):
            stack.extend(n.items)
        elif isinstance(n, Repeat):
            stack.append(n.item)
    return out


def _nonempty(rules: dict[str, Node], start: str) -> bool:
    """Fixpoint: which rules derive at least one string."""
    from grammars.ir import Alt, Automaton, Bytes, Lit, Repeat, Seq

    known: dict[str, bool] = {k: False for k in rules}

    def ok(n: Node) -> bool:
        if isinstance(n, Ref):
            return known.get(n.name, False)
        if isinstance(n, (Lit, Bytes, Automaton)):
            return not (isinstance(n, Bytes) and not n.ranges)
        if isinstance(n, Seq):
            return all(ok(i) for i in n.items)
        if isinstance(n, Alt):
            return any(ok(i) for i in n.items)
        if isinstance(n, Repeat):
            return n.lo == 0 or ok(n.item)
        return False

    changed = True
    while changed:
        changed = False
        for k, n in rules.items():
            if not known[k] and ok(n):
                known[k] = changed = True
    ok = None  # type: ignore[assignment]  # it refers to itself: break the cycle (no garbage)
    return known[start]
