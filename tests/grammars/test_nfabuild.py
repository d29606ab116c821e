"""The numba NFA builder (grammars.nfabuild) against a plain recursive Python builder of the same
construction: the same states, epsilon moves and edges (same numbering), the same errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import grammars
from grammars.errors import GrammarTooLargeError, InvalidGrammarError
from grammars.ir import Alt, Automaton, Bytes, Lit, Node, Ref, Repeat, Rules, Seq
from grammars.nfabuild import NotRegularError, build_nfa, flatten
from grammars.subset import FlatNfa

DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "jsonschemabench-dev"


class Reference:
    """Thompson's construction before a continuation, memoized on (node, continuation); the
    placeholder state of (rule, continuation) closes right-linear recursion."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules.rules
        self.n = 1
        self.eps: list[int] = []
        self.edges: list[int] = []
        self.memo: dict[tuple[int, int], int] = {}
        self.placeholders: dict[tuple[str, int], int] = {}
        self.active: set[str] = set()

    def new(self, k: int = 1) -> int:
        self.n += k
        return self.n - k

    def build(self, node: Node, cont: int) -> int:
        key = (id(node), cont)
        if key not in self.memo:
            self.memo[key] = self._build(node, cont)
        return self.memo[key]

    def _build(self, node: Node, cont: int) -> int:
        if isinstance(node, Lit):
            if not node.data:
                return cont
            f = self.new(len(node.data))
            for i, b in enumerate(node.data):
                self.edges += [f + i, b, b, f + i + 1 if i + 1 < len(node.data) else cont]
            return f
        if isinstance(node, Bytes):
            t = self.new()
            for lo, hi in node.ranges:
                self.edges += [t, lo, hi, cont]
            return t
        if isinstance(node, Seq):
            s = cont
            for item in reversed(node.items):
                s = self.build(item, s)
            return s
        if isinstance(node, Alt):
            t = self.new()
            for item in node.items:
                self.eps += [t, self.build(item, cont)]
            return t
        if isinstance(node, Repeat):
            s = cont
            for _ in range(1 if node.hi is None else node.hi - node.lo):
                t = self.new()
                self.eps += [t, self.build(node.item, t if node.hi is None else s), t, cont]
                s = t
            for _ in range(node.lo):
                s = self.build(node.item, s)
            return s
        if isinstance(node, Ref):
            key = (node.name, cont)
            if key in self.placeholders:
                return self.placeholders[key]
            if node.name in self.active:
                raise NotRegularError(node.name)
            if node.name not in self.rules:
                raise InvalidGrammarError("undefined rule", rule=node.name)
            p = self.placeholders[key] = self.new()
            self.active.add(node.name)
            self.eps += [p, self.build(self.rules[node.name], cont)]
            self.active.discard(node.name)
            del self.placeholders[key]
            return p
        assert isinstance(node, Automaton)
        base = self.new(node.trans.shape[0])
        for s in np.flatnonzero(node.accepting):
            self.eps += [base + int(s), cont]
        for s in range(node.trans.shape[0]):
            row = node.trans[s]
            lo = 0
            for b in range(1, 257):
                if b == 256 or row[b] != row[lo]:
                    if row[lo] >= 0:
                        self.edges += [base + s, lo, b - 1, base + int(row[lo])]
                    lo = b
        return base


def reference(rules: Rules) -> tuple[FlatNfa, int]:
    r = Reference(rules)
    start = r.build(Ref(rules.start), 0)
    return FlatNfa.from_lists(r.n, r.eps, r.edges), start


def outcome(fn, rules: Rules):
    try:
        nfa, start = fn(rules)
    except (NotRegularError, InvalidGrammarError) as e:
        return type(e).__name__, str(e)
    return (nfa.n, start) + tuple(
        getattr(nfa, k).tolist() for k in ("eps_ptr", "eps_dst", "edge_ptr", "edge_lo", "edge_hi", "edge_dst"))


def ours(rules: Rules) -> tuple[FlatNfa, int]:
    return build_nfa(flatten(rules), max_states=1_000_000)


def random_rules(rng: np.random.Generator) -> Rules:
    """Random rules over a few bytes with shared sub-nodes, references (tail and non-tail, to
    defined and undefined rules) and embedded automata."""
    names = ["r0", "r1", "r2"]
    pool: list[Node] = []

    def node(depth: int) -> Node:
        if pool and rng.random() < 0.25:
            return pool[int(rng.integers(len(pool)))]  # shared object
        k = int(rng.integers(8 if depth < 3 else 3))
        if k == 0:
            out: Node = Lit(bytes(rng.choice(list(b"abc"), size=int(rng.integers(0, 3))).tolist()))
        elif k == 1:
            out = Bytes(((97, 97 + int(rng.integers(3))),) + (((100, 100),) if rng.random() < 0.3 else ()))
        elif k == 2:
            trans = rng.integers(-1, 3, size=(3, 256)).astype(np.int32)
            out = Automaton(trans, rng.random(3) < 0.5)
        elif k == 3:
            out = Seq(tuple(node(depth + 1) for _ in range(int(rng.integers(1, 4)))))
        elif k == 4:
            out = Alt(tuple(node(depth + 1) for _ in range(int(rng.integers(0, 4)))))
        elif k == 5:
            lo = int(rng.integers(0, 3))
            out = Repeat(node(depth + 1), lo, None if rng.random() < 0.5 else lo + int(rng.integers(0, 3)))
        elif k == 6:
            # a tail reference (right-linear when it recurs) or an inner one
            item = node(depth + 1)
            ref = Ref(names[int(rng.integers(len(names)))] if rng.random() < 0.9 else "undefined")
            out = Seq((item, ref)) if rng.random() < 0.7 else Seq((ref, item))
        else:
            out = Alt((node(depth + 1), Ref(names[int(rng.integers(len(names)))])))
        pool.append(out)
        return out

    return Rules({name: node(0) for name in names}, "r0")


@pytest.mark.parametrize("seed", range(300))
def test_same_nfa_as_the_reference_on_random_rules(seed):
    rules = random_rules(np.random.default_rng(seed))
    assert outcome(ours, rules) == outcome(reference, rules)


def test_random_rules_cover_every_outcome():
    kinds = {outcome(ours, random_rules(np.random.default_rng(seed)))[0] for seed in range(300)}
    assert {"NotRegularError", "InvalidGrammarError"} <= kinds and any(isinstance(k, int) for k in kinds)


DEV_SCHEMAS = ["Glaiveai2K/analyze_social_media_mentions_df9069d1", "Github_easy/o12607",
               "Kubernetes/kb_1052_Normalized", "Glaiveai2K/book_flight_05dcf13f", "Github_trivial/o4366",
               "Github_medium/o82300", "Snowplow/sp_411_Normalized", "Kubernetes/kb_459_Normalized"]


@pytest.mark.parametrize("name", DEV_SCHEMAS)
@pytest.mark.parametrize("order", ["schema", "any"])
def test_same_nfa_as_the_reference_on_dev_schemas(name, order):
    schema = json.loads((DEV / f"{name}.json").read_text())
    rules = grammars.Grammar.from_json_schema(schema, whitespace="flexible", property_order=order).rules
    assert outcome(ours, rules) == outcome(reference, rules)


def test_growing_buffers_and_state_limit():
    # far more edges than the first buffers hold: built after growing, same as the reference
    big = Rules({"s": Repeat(Seq((Lit(b"abcdefgh"), Bytes(((48, 57), (65, 70))))), 0, 5000)}, "s")
    assert outcome(ours, big) == outcome(reference, big)
    with pytest.raises(GrammarTooLargeError, match="exceeds 1000 NFA states"):
        build_nfa(flatten(big), max_states=1000)


def test_build_dfas_gives_each_node_its_own_dfa_and_builds_equal_nodes_once():
    from grammars.automaton import build_dfa, build_dfas

    ws = Repeat(Bytes(((9, 10), (32, 32))), 0, None)
    rules = Rules({"W": ws, "N": Repeat(Bytes(((48, 57),)), 1, None)}, "W")
    nodes = [Seq((Ref("W"), Lit(b","))), Seq((Ref("W"), Lit(b","))),  # equal, distinct objects
             Seq((Ref("W"), Lit(b";"))), Seq((Ref("W"), Ref("N"))), Alt((Lit(b"a"), Ref("N"))),
             Seq((Ref("W"), Repeat(Bytes(((48, 57),)), 1, None)))]  # N's body, not N itself
    dfas = build_dfas(rules, nodes)
    assert dfas[0] is dfas[1]
    assert len({id(d) for d in dfas}) == len(nodes) - 1
    for n, d in zip(nodes, dfas):
        ref = build_dfa(Rules({**rules.rules, "__top": n}, "__top"))
        assert np.array_equal(d.trans, ref.trans) and np.array_equal(d.accepting, ref.accepting)
