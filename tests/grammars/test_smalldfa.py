"""grammars.smalldfa: many small DFAs in one numba call, identical to build_dfa's, and the nodes
it leaves to the general path (large, empty, recursive, over a state limit) still raise the
general path's typed errors."""

from __future__ import annotations

import numpy as np
import pytest

from grammars import Grammar
from grammars.automaton import build_dfa, build_dfas
from grammars.errors import EmptyLanguageError, GrammarTooLargeError
from grammars.grammar import builtin_text
from grammars.ir import Alt, Bytes, Lit, Ref, Repeat, Rules, Seq
from grammars.nfabuild import NotRegularError, flatten
from grammars.smalldfa import GENERAL, OK, small_dfas


def _reference(rules: Rules, node) -> tuple[np.ndarray, np.ndarray]:
    d = build_dfa(Rules({**rules.rules, "__top": node}, "__top"))
    return d.trans, d.accepting


def _terminal_runs(name: str) -> tuple[Rules, list]:
    """The rules and regular runs that rules_to_cfg hands to build_dfas for a built-in."""
    from grammars import cfg

    seen = []
    real = cfg.build_dfas

    def spy(rules, nodes, **kw):
        seen.append((rules, list(nodes)))
        return real(rules, nodes, **kw)

    cfg.build_dfas = spy
    try:
        cfg.rules_to_cfg(Grammar.from_lark(builtin_text(name)).rules)
    finally:
        cfg.build_dfas = real
    (rules, nodes), = seen
    return rules, nodes


@pytest.mark.parametrize("name", ["json", "sql", "arithmetic", "python_expr"])
def test_every_terminal_of_the_builtins_is_built_small_and_equals_build_dfa(name):
    rules, nodes = _terminal_runs(name)
    prog = flatten(rules, nodes)
    _, _, _, status = small_dfas(prog, list(prog.roots), max_states=200_000)
    assert (status == OK).all()
    dfas = build_dfas(rules, nodes)
    for n, d in zip(nodes, dfas, strict=True):
        trans, acc = _reference(rules, n)
        assert d.trans.dtype == np.int32 and d.trans.shape[1] == 256
        assert np.array_equal(d.trans, trans) and np.array_equal(d.accepting, acc)


def _ab():
    return Alt((Lit(b"a"), Lit(b"b")))


def test_nodes_too_large_for_the_small_path_are_built_the_general_way_in_place():
    rules = Rules({"D": Repeat(Bytes(((48, 57),)), 1, None)}, "D")
    big_dfa = Seq((Repeat(_ab(), 0, None), Lit(b"a"), Repeat(_ab(), 12, 12)))  # 2**13 DFA states
    big_nfa = Repeat(Lit(b"xy"), 3000, 3000)  # 6000 NFA states, a 6001-state DFA
    nodes = [Lit(b"k"), big_dfa, Ref("D"), big_nfa, Seq((Lit(b"-"), Ref("D")))]
    prog = flatten(rules, nodes)
    _, _, _, status = small_dfas(prog, list(prog.roots), max_states=200_000)
    assert status.tolist() == [OK, GENERAL, OK, GENERAL, OK]
    dfas = build_dfas(rules, nodes)
    for n, d in zip(nodes, dfas, strict=True):
        trans, acc = _reference(rules, n)
        assert np.array_equal(d.trans, trans) and np.array_equal(d.accepting, acc)
    assert dfas[1].trans.shape[0] == 2**13 and dfas[3].trans.shape[0] == 6001


def test_state_limit_empty_language_and_recursion_raise_as_on_the_general_path():
    rules = Rules({"R": Seq((Lit(b"("), Alt((Ref("R"), Lit(b"x"))), Lit(b")")))}, "R")
    with pytest.raises(GrammarTooLargeError):
        build_dfas(rules, [Lit(b"ok"), Repeat(Lit(b"ab"), 20, 20)], max_states=16)
    assert build_dfas(rules, [Repeat(Lit(b"ab"), 7, 7)], max_states=16)[0].trans.shape[0] == 15
    with pytest.raises(EmptyLanguageError):
        build_dfas(rules, [Lit(b"ok"), Seq((Lit(b"a"), Bytes(())))])
    with pytest.raises(NotRegularError):
        build_dfas(rules, [Lit(b"ok"), Ref("R")])
