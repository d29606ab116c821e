"""Where-clauses compile into exact byte languages: each compiled automaton agrees with a direct
Python predicate on every string of a random sample (and on hand-picked edge cases)."""

from __future__ import annotations

import ast
import random
import re

import pytest

from decoding.query.constraints import compile_where, literal_env

ALPHABET = ["a", "b", ".", "\n", " ", "?", "1", "2", "-", "é", "Pick"]


def _spec(src: str, env: dict | None = None):
    specs = compile_where(ast.parse(src, mode="eval").body, {"X": (1, 1)},
                          env=literal_env(env or {}))
    s = specs["X"]
    s.check()
    return s


def _strings(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = ["", "a", "ab.", "1", " 12", "-3", "a\n", "Pick the odd word", "a b c d"]
    for _ in range(n):
        out.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 7))))
    return out


def _stops(v: str, s: str) -> bool:  # s occurs at most once, at the very end
    i = v.find(s)
    return i < 0 or i + len(s) == len(v)


CASES = [
    ('X in ["a", "ab.", "1"]', lambda v: v in ("a", "ab.", "1")),
    ('X in set(["a", "b"]) or X == "1"', lambda v: v in ("a", "b", "1")),
    ('X not in ["a", ""]', lambda v: v not in ("a", "")),
    ('X == "ab."', lambda v: v == "ab."),
    ('X != "a"', lambda v: v != "a"),
    ('STOPS_AT(X, ".")', lambda v: _stops(v, ".")),
    ('STOPS_AT(X, ".") and STOPS_AT(X, "\\n")', lambda v: _stops(v, ".") and _stops(v, "\n")),
    ('STOPS_BEFORE(X, "Pick")', lambda v: _stops(v, "Pick")),
    ('not "\\n" in X', lambda v: "\n" not in v),
    ('"\\n" not in X and "a" in X', lambda v: "\n" not in v and "a" in v),
    ('INT(X)', lambda v: re.fullmatch(r" ?-?[0-9]+", v) is not None),
    ('INT(X) or X == "none"', lambda v: v == "none" or re.fullmatch(r" ?-?[0-9]+", v) is not None),
    ('REGEX(X, r"[ab]+\\.?")', lambda v: re.fullmatch(r"[ab]+\.?", v) is not None),
    ('len(X) < 3', lambda v: len(v) < 3),
    ('2 <= len(X) <= 4', lambda v: 2 <= len(v) <= 4),
    ('len(X) == 2 or len(X) > 5', lambda v: len(v) == 2 or len(v) > 5),
    ('len(WORDS(X)) < 3', lambda v: len(v.split()) < 3),
    ('len(WORDS(X)) >= 2', lambda v: len(v.split()) >= 2),
    ('not (len(X) > 2 and "a" in X)', lambda v: not (len(v) > 2 and "a" in v)),
    ('X.startswith("a") or X.endswith(".")', lambda v: v.startswith("a") or v.endswith(".")),
    ('X in opts and len(X) > 1', lambda v: v in ("ab.", "a") and len(v) > 1),
]


@pytest.mark.parametrize("src,pred", CASES, ids=[c[0] for c in CASES])
def test_language_matches_python_predicate(src, pred):
    spec = _spec(src, {"opts": ["ab.", "a"]})
    for s in _strings():
        assert spec.lang.matches(s.encode()) == pred(s), (src, s)


def test_token_bounds_and_stop_bookkeeping():
    s = _spec('len(TOKENS(X)) < 10 and len(TOKENS(X)) >= 2 and STOPS_BEFORE(X, "\\"")')
    assert (s.min_tokens, s.max_tokens, s.stops_before) == (2, 9, ['"'])
    s = _spec('9 > len(TOKENS(X))')
    assert s.max_tokens == 8


def test_type_constraint_is_json():
    from dataclasses import dataclass

    @dataclass
    class P:
        name: str
        age: int

    s = _spec("type(X) is P", {"P": P})
    assert s.value_type is P
    assert s.lang.matches(b'{"name":"Al","age":3}')
    assert not s.lang.matches(b'{"name":"Al"}')
