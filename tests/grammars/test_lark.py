"""Lark grammars through lark's own loader into the one grammar form (regular subset for now)."""

from __future__ import annotations

import pytest
from lark import Lark

import grammars
from grammars import EmptyLanguageError, Grammar, InvalidGrammarError

KV = r"""
start: item ("," item)*
item: NAME "=" value | "[" NAME "]"
value: NUMBER | ESCAPED_STRING | "true"i
NAME: /[a-z_]+/
%import common.NUMBER
%import common.ESCAPED_STRING
%import common.WS
%ignore WS
"""

CASES = ["a=1", "a = 1 , [ b ]", "a=1,", "a=1.5e3,b=2", "[a", " a=1 ", 'x="q\\"s"', "x=TRUE", "x=tru", "a=1 b=2", ""]


@pytest.mark.parametrize("text", CASES)
def test_agrees_with_lark_earley(text, byte_vocab):
    ours = grammars.compile(Grammar.from_lark(KV), byte_vocab).matcher()
    mine = ours.accept_bytes(text.encode()) and ours.is_accepting()
    parser = Lark(KV, parser="earley", lexer="dynamic")
    try:
        parser.parse(text)
        theirs = True
    except Exception:  # noqa: BLE001 - any lark failure means "not in the language"
        theirs = False
    assert mine == theirs


def test_center_recursion_takes_the_cfg_path(byte_vocab):
    c = grammars.compile(Grammar.from_lark('start: "(" start ")" | "x"'), byte_vocab)
    assert type(c).__name__ == "CfgCompiledGrammar"
    for text, ok in ((b"((x))", True), (b"((x)", False), (b"x", True), (b"()", False)):
        m = c.matcher()
        assert (m.accept_bytes(text) and m.is_accepting()) == ok


def test_right_recursion_is_regular(byte_vocab):
    g = Grammar.from_lark('start: "a" start | "b"')
    m = grammars.compile(g, byte_vocab).matcher()
    assert m.accept_bytes(b"aaab") and m.is_accepting()


@pytest.mark.parametrize(
    ("text", "what"),
    [("start: foo", "foo"), ('start: "a" (', "line"), ("start: A\nA: /a/ /b", "line"), ("other: \"x\"", "start")],
)
def test_bad_grammars_are_typed_errors(text, what):
    with pytest.raises(InvalidGrammarError) as e:
        Grammar.from_lark(text)
    assert what in str(e.value)


def test_empty_start_rule():
    with pytest.raises(EmptyLanguageError):
        Grammar.from_lark("start: a\na: a \"x\"")
