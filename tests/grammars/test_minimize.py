"""DFA minimization (Hopcroft, grammars/hopcroft.py) against an exact Moore refinement."""

from __future__ import annotations

import numpy as np
import pytest

from grammars.automaton import Dfa, _trim, minimize, product
from grammars.errors import EmptyLanguageError


def moore_classes(trans: np.ndarray, acc: np.ndarray) -> int:
    """Number of Myhill-Nerode classes of the live states: exact rounds of refinement by (class,
    successor classes) until stable (the textbook algorithm, slow but obviously right)."""
    _, cls = np.unique(acc, return_inverse=True)
    cls = cls.ravel()
    while True:
        nxt = np.where(trans >= 0, cls[np.maximum(trans, 0)], -1)
        sig = np.concatenate([cls[:, None], nxt], axis=1)
        _, new = np.unique(sig, axis=0, return_inverse=True)
        new = new.ravel()
        if new.max() == cls.max():
            return int(new.max()) + 1
        cls = new


def random_dfa(rng: np.random.Generator) -> Dfa | None:
    n = int(rng.integers(3, 80))
    k = int(rng.integers(1, 6))
    t = rng.integers(-1, n, size=(n, k)).astype(np.int32)
    # a few copies of a state's row make merges likely
    for _ in range(int(rng.integers(0, n))):
        i, j = rng.integers(0, n, size=2)
        t[i] = t[j]
    trans = np.full((n, 256), -1, dtype=np.int32)
    trans[:, 97:97 + k] = t
    try:
        return _trim(trans, rng.random(n) < 0.3)
    except EmptyLanguageError:
        return None


def same_language(a: Dfa, b: Dfa) -> bool:
    for x, y in ((a, b), (b, a)):
        try:
            product(x, y, op="diff")
        except EmptyLanguageError:
            continue
        return False
    return True


@pytest.mark.parametrize("seed", range(6))
def test_minimize_is_minimal_and_keeps_the_language(seed: int) -> None:
    rng = np.random.default_rng(seed)
    checked = 0
    while checked < 60:
        d = random_dfa(rng)
        if d is None:
            continue
        m = minimize(d)
        assert m.trans.shape[0] == moore_classes(d.trans, d.accepting)
        assert same_language(d, m)
        checked += 1


def test_long_length_chain_minimizes_in_one_pass() -> None:
    """A bounded length is a chain of distinguishable states (Moore needs one round per state)."""
    n = 3000
    trans = np.full((2 * n, 256), -1, dtype=np.int32)
    for i in range(2 * n - 1):
        trans[i, 97] = i + 1  # 'a' * i; every state after n accepts, the two halves mirror
    acc = np.arange(2 * n) >= n
    m = minimize(_trim(trans, acc))
    assert m.trans.shape[0] == 2 * n  # a chain of distinct futures: nothing merges
    trans2 = trans.copy()
    trans2[2 * n - 1, 97] = n  # a loop over the accepting half: those states now all merge
    m2 = minimize(_trim(trans2, acc))
    assert m2.trans.shape[0] == n + 1


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (0, 5), (2, 7), (3, 3), (1, 40)])
def test_bounded_repeat_equals_the_unrolled_repeat(lo: int, hi: int) -> None:
    from grammars.automaton import bounded_repeat, dfa_of
    from grammars.ir import repeat
    from grammars.json_schema import _ANY_CHAR

    unit = dfa_of(_ANY_CHAR)  # one JSON string character: UTF-8 sequences and escapes
    chain = bounded_repeat(unit, lo, hi)
    assert chain is not None
    assert same_language(chain, dfa_of(repeat(_ANY_CHAR, lo, hi)))
    assert bounded_repeat(dfa_of(repeat(_ANY_CHAR, 0, 2)), lo, hi) is None  # not a single unit


def test_the_lexer_product_honours_the_compile_deadline() -> None:
    from grammars.automaton import deadline, dfa_of
    from grammars.errors import CompileTimeoutError
    from grammars.lexer import build_lexer
    from grammars.regex import regex_to_node

    terminals = [dfa_of(regex_to_node(f"[a-z]{{{i},{i + 40}}}x")) for i in range(1, 12)]
    with pytest.raises(CompileTimeoutError), deadline(1e-9):
        build_lexer(terminals)


@pytest.mark.parametrize("sliced", [False, True], ids=["one-call", "sliced"])
@pytest.mark.parametrize("seed", range(4))
def test_the_lexer_runs_every_terminal_at_once(seed: int, sliced: bool) -> None:
    """build_lexer (one numba call, and the sliced construction larger lexers take) against
    each terminal's own DFA on every short word: the lexer state's components are the
    terminals' states (-1 once dead), and its alive and accepting bitsets agree. Enough
    terminals and states that the sliced tables grow mid-construction."""
    import functools
    import itertools

    from grammars.lexer import _sliced_lexer, build_lexer

    if sliced:
        build_lexer = functools.partial(_sliced_lexer, max_states=10_000)

    rng = np.random.default_rng(200 + seed)
    terms: list[Dfa] = []
    while len(terms) < 5:
        n = int(rng.integers(2, 9))
        trans = np.full((n, 256), -1, dtype=np.int32)
        trans[:, 97:101] = rng.integers(-1, n, size=(n, 4))
        try:
            d = _trim(trans, rng.random(n) < 0.4)
        except EmptyLanguageError:
            continue
        if not d.accepting[0]:
            terms.append(d)
    lx = build_lexer(terms)
    assert lx.n_states > 64  # past the first table sizes
    for length in range(5):
        for word in itertools.product(b"abcde", repeat=length):
            q = 0
            for b in word:
                q = int(lx.trans[q, b]) if q >= 0 else -1
            states = []
            for d in terms:
                s = 0
                for b in word:
                    s = int(d.trans[s, b]) if s >= 0 else -1
                states.append(s)
            if all(s < 0 for s in states):
                assert q < 0, word
                continue
            assert q >= 0 and lx.components[q].tolist() == states, word
            alive = sum(1 << i for i, s in enumerate(states) if s >= 0)
            acc = sum(1 << i for i, s in enumerate(states) if s >= 0 and terms[i].accepting[s])
            assert lx.alive[q] == alive and lx.accepts[q] == acc, word
    for q in range(lx.n_states):  # the other forms of the same bitsets
        for words, bits in ((lx.alive_words, lx.alive[q]), (lx.accept_words, lx.accepts[q])):
            assert sum(int(w) << (64 * i) for i, w in enumerate(words[q])) == bits
        terms = lx.accept_terms[lx.accept_ptr[q]:lx.accept_ptr[q + 1]].tolist()
        assert sum(1 << t for t in terms) == lx.accepts[q] and terms == sorted(set(terms))


@pytest.mark.parametrize("seed", range(4))
def test_product_accepts_the_intersection_and_the_difference(seed: int) -> None:
    """``product`` (grammars.reach.pair_product) against membership on every short word."""
    import itertools

    rng = np.random.default_rng(100 + seed)
    checked = 0
    while checked < 25:
        a, b = random_dfa(rng), random_dfa(rng)
        if a is None or b is None:
            continue
        for op in ("and", "diff"):
            try:
                p = product(a, b, op=op)
            except EmptyLanguageError:
                p = None
            for length in range(5):
                for word in itertools.product(b"abcdef", repeat=length):
                    want = a.matches(bytes(word)) and (
                        b.matches(bytes(word)) if op == "and" else not b.matches(bytes(word)))
                    assert (p is not None and p.matches(bytes(word))) == want, (seed, op, word)
        checked += 1


@pytest.mark.parametrize("seed", range(4))
def test_without_words_takes_out_exactly_the_words(seed: int) -> None:
    """``without_words`` against membership on every short word, with words inside and outside
    the language, prefixes of one another and the empty word."""
    import itertools

    from grammars.automaton import without_words

    rng = np.random.default_rng(200 + seed)
    checked = 0
    while checked < 25:
        a = random_dfa(rng)
        if a is None:
            continue
        words = [bytes(rng.choice(list(b"abcd"), size=int(rng.integers(0, 5))).tolist())
                 for _ in range(int(rng.integers(1, 8)))]
        words += [w for w in itertools.islice(
            (bytes(x) for n in range(4) for x in itertools.product(b"abc", repeat=n)
             if a.matches(bytes(x))), 3)]  # words the DFA accepts
        try:
            out = without_words(a, words)
        except EmptyLanguageError:
            out = None
        for length in range(5):
            for word in itertools.product(b"abcdef", repeat=length):
                want = a.matches(bytes(word)) and bytes(word) not in words
                assert (out is not None and out.matches(bytes(word))) == want, (seed, word, words)
        checked += 1


@pytest.mark.parametrize("name", ["json", "sql", "arithmetic", "python_expr"])
def test_the_one_call_lexer_equals_the_sliced_one(name: str) -> None:
    """build_lexer's one-call path gives the sliced construction's lexer, array for array, on
    the built-in grammars and on 70 terminals (two words per bitset)."""
    from grammars import Grammar
    from grammars.automaton import dfa_of
    from grammars.cfg import rules_to_cfg
    from grammars.grammar import builtin_text
    from grammars.lexer import SMALL_LEXER_STATES, _sliced_lexer, build_lexer
    from grammars.regex import regex_to_node

    terminals = rules_to_cfg(Grammar.from_lark(builtin_text(name)).rules).terminals
    if name == "json":
        terminals = terminals + [dfa_of(regex_to_node(f"k{i}[0-9]*")) for i in range(70)]
    a, b = build_lexer(terminals), _sliced_lexer(terminals, max_states=10_000)
    assert a.n_states <= SMALL_LEXER_STATES
    for f in ("trans", "components", "alive_words", "accept_words", "accept_ptr", "accept_terms",
              "stacked", "stacked_accepting"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and np.array_equal(x, y), f
    assert a.alive == b.alive and a.accepts == b.accepts and a.n_terminals == b.n_terminals


def test_lexers_past_the_one_call_size_are_sliced_and_limits_still_raise() -> None:
    from grammars.automaton import dfa_of
    from grammars.errors import GrammarTooLargeError
    from grammars.lexer import SMALL_LEXER_STATES, _sliced_lexer, build_lexer
    from grammars.regex import regex_to_node

    # terminals counting letters modulo 2, 3, 5, 7 and 11: 2310 lexer states
    terminals = [dfa_of(regex_to_node(f"([a-z]{{{i}}})+x")) for i in (2, 3, 5, 7, 11)]
    big = build_lexer(terminals)
    assert big.n_states > SMALL_LEXER_STATES
    assert np.array_equal(big.trans, _sliced_lexer(terminals, max_states=10**6).trans)
    with pytest.raises(GrammarTooLargeError):
        build_lexer(terminals[:3], max_states=20)
