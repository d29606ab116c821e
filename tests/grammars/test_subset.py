"""Subset construction (grammars.subset) against a direct NFA simulation on random NFAs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from grammars.errors import GrammarTooLargeError
from grammars.ir import Bytes, Lit, Repeat, Rules, Seq, alt
from grammars.subset import FlatNfa, TooManyStates, subset_construction

ALPHABET = b"abcdz"  # z: no edge reads it


def random_nfa(rng: np.random.Generator) -> tuple[FlatNfa, int, list[tuple[int, int]], list[tuple[int, int, int, int]]]:
    n = int(rng.integers(1, 10))
    eps = [(int(rng.integers(n)), int(rng.integers(n))) for _ in range(int(rng.integers(0, 2 * n)))]
    edges = []
    for _ in range(int(rng.integers(0, 3 * n))):
        lo = int(rng.integers(ord("a"), ord("d") + 1))
        hi = int(rng.integers(lo, ord("d") + 1))
        edges.append((int(rng.integers(n)), lo, hi, int(rng.integers(n))))
    nfa = FlatNfa.from_lists(n, [x for e in eps for x in e], [x for e in edges for x in e])
    return nfa, int(rng.integers(n)), eps, edges


def nfa_accepts(n: int, start: int, eps, edges, data: bytes) -> bool:
    def close(states: set[int]) -> set[int]:
        out, stack = set(states), list(states)
        while stack:
            s = stack.pop()
            for a, b in eps:
                if a == s and b not in out:
                    out.add(b)
                    stack.append(b)
        return out

    cur = close({start})
    for byte in data:
        cur = close({d for s, lo, hi, d in edges if s in cur and lo <= byte <= hi})
    return 0 in cur


@pytest.mark.parametrize("seed", range(60))
def test_dfa_accepts_exactly_what_the_nfa_accepts(seed):
    rng = np.random.default_rng(seed)
    nfa, start, eps, edges = random_nfa(rng)
    small, cls, accepting = subset_construction(nfa, start, max_states=10_000, slice_states=2)
    assert cls.shape == (256,) and (np.diff(cls) >= 0).all() and small.dtype == np.int32
    trans = small[:, cls]
    for length in range(5):
        for word in itertools.product(ALPHABET, repeat=length):
            data = bytes(word)
            s = 0
            for byte in data:
                s = int(trans[s, byte])
                if s < 0:
                    break
            got = s >= 0 and bool(accepting[s])
            assert got == nfa_accepts(nfa.n, start, eps, edges, data), (seed, data)


def test_state_limit_and_slices():
    # (a|b)* a (a|b)^k needs 2^(k+1) DFA states
    k = 6
    ab = Bytes(((ord("a"), ord("b")),))
    node = Seq((Repeat(ab, 0, None), Lit(b"a")) + (ab,) * k)
    from grammars.automaton import build_dfa
    from grammars.nfabuild import build_nfa, flatten

    nfa, start = build_nfa(flatten(Rules({"s": node}, "s")), max_states=10_000)
    calls = []
    trans, _, _ = subset_construction(nfa, start, max_states=10_000,
                                      check=lambda: calls.append(1), slice_states=8)
    assert trans.shape[0] >= 2 ** (k + 1)
    assert len(calls) >= trans.shape[0] // 8 - 1
    with pytest.raises(TooManyStates):
        subset_construction(nfa, start, max_states=2 ** k)
    with pytest.raises(GrammarTooLargeError, match="exceeds 64 states"):
        build_dfa(Rules({"s": node}, "s"), max_states=64)
    # the minimal DFA of the same language is what build_dfa returns
    dfa = build_dfa(Rules({"s": alt(node)}, "s"))
    assert dfa.n_states == 2 ** (k + 1)


def test_tables_grow_past_their_first_size():
    """(a|b)* a (a|b)^10 from a 30-state NFA: 2048 DFA states, past the tables' first capacity
    (1024 sets), so they grow mid-construction; the result is still exactly the language."""
    import re

    from grammars.automaton import build_dfa

    k = 10
    ab = Bytes(((ord("a"), ord("b")),))
    node = Seq((Repeat(ab, 0, None), Lit(b"a")) + (ab,) * k)
    dfa = build_dfa(Rules({"s": alt(node)}, "s"))
    assert dfa.n_states == 2 ** (k + 1)
    rx = re.compile(rb"[ab]*a[ab]{%d}" % k)
    rng = np.random.default_rng(0)
    for _ in range(300):
        data = bytes(rng.choice([ord("a"), ord("b")], size=int(rng.integers(0, 16))))
        s = 0
        for byte in data:
            s = int(dfa.trans[s, byte])
            if s < 0:
                break
        assert (s >= 0 and bool(dfa.accepting[s])) == bool(rx.fullmatch(data)), data
