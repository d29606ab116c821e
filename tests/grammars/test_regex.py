"""Regex -> byte DFA, checked against Python's own ``re`` on random strings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grammars import Grammar, GrammarError, InvalidGrammarError
from grammars.automaton import dfa_of
from grammars.regex import (
    RegexSyntaxError,
    UnsupportedRegexError,
    json_string_encoder,
    regex_to_node,
)

PATTERNS = [
    r"a(b|c)*d",
    r"[0-9]{3}-[0-9]{2,4}",
    r"(?:ab|a)c?",
    r"[^a-c]+x",
    r"[a-zé中]{1,3}",
    r"\d+(\.\d+)?",
    r"[\w.-]+@[a-z]+\.(com|org)",
    r"(foo|bar|baz){2}",
    r".?é.",
    r"\s*[A-Z][a-z]*\s*",
    r"😀+|[α-ω]",
]
ALPHABET = "abcdxz0129.-@ _éA中😀αω\n"


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=ALPHABET, max_size=8))
def test_fullmatch_agrees_with_re(pattern, text):
    dfa = _dfa(pattern, "fullmatch")
    expected = re.fullmatch(pattern, text, re.ASCII) is not None
    assert dfa.matches(text.encode("utf-8")) == expected


@pytest.mark.parametrize("pattern", [r"^ab", r"b$", r"x", r"^a|c$", r"^abc$", r"^$|^[ab]x*$", r"^([^a]|$)", r"^(a|b$)"])
@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="abcx\n", max_size=6))
def test_search_mode_is_ecma_search(pattern, text):
    dfa = _dfa(pattern, "search")
    # ECMA-262 `$` is the end of input (Python's also matches before a final newline): use \Z.
    py = pattern.replace("$", r"\Z")
    assert dfa.matches(text.encode()) == (re.search(py, text) is not None)


_CACHE: dict = {}


def _dfa(pattern, mode):
    key = (pattern, mode)
    if key not in _CACHE:
        _CACHE[key] = dfa_of(regex_to_node(pattern, mode=mode, dialect="ecma" if mode == "search" else "python"))
    return _CACHE[key]


def test_json_string_encoding_of_classes():
    dfa = dfa_of(regex_to_node(r'[a"\\\n/]+', encoder=json_string_encoder))
    for ok in [b"a", b'\\"', b"\\\\", b"\\n", b"\\u000a", b"\\u000A", b"/", b"\\/", b'a\\"\\n']:
        assert dfa.matches(ok), ok
    for bad in [b'"', b"\\", b"\n", b"b", b"\\u0041"]:
        assert not dfa.matches(bad), bad


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [(r"(a)\1", "backreference"), (r"a(?=b)", "lookaround"), (r"\bword", "assertion"),
     (r"(?i)abc", "flags"), (r"a(^b)", "anchor")],
)
def test_unsupported_constructs_are_typed_errors(pattern, construct):
    with pytest.raises(UnsupportedRegexError) as e:
        regex_to_node(pattern)
    assert construct in str(e.value)
    assert isinstance(e.value, GrammarError)


def test_syntax_error_names_position():
    with pytest.raises(RegexSyntaxError) as e:
        Grammar.from_regex("ab(c")
    assert e.value.position is not None


def test_from_regex_rejects_non_string():
    with pytest.raises(InvalidGrammarError):
        Grammar.from_regex(b"abc")  # type: ignore[arg-type]


def test_lowered_regexes_are_reused_until_the_caches_are_cleared():
    import grammars
    from grammars.automaton import dfa_of
    from grammars.regex import regex_to_node

    first = regex_to_node(r"[a-c]+x")
    assert regex_to_node(r"[a-c]+x") is first  # immutable nodes, shared
    assert regex_to_node(r"[a-c]+x", mode="search") is not first
    grammars.clear_cache()
    again = regex_to_node(r"[a-c]+x")
    assert again is not first
    dfa = dfa_of(again)
    assert dfa.matches(b"abx") and not dfa.matches(b"abd")
