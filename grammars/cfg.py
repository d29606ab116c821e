"""The one grammar form (recursive ``Rules``) -> a context-free grammar over regular terminals.

Used when a grammar is not regular (:class:`grammars.automaton.NotRegularError`): rules that take
part in a reference cycle, and the rules that reach one, become nonterminals; everything else is
regular and is folded into *terminals*. A terminal is a maximal run of regular material between
two nonterminal occurrences in a sequence, compiled into one minimized byte DFA (so a Lark rule
``sum: sum "+" product`` has the terminal ``%ignore* "+"``, and a recursive JSON Schema has
terminals like ``{"name":<string>,"children":[``). Alternatives and repetitions that contain a
nonterminal get helper nonterminals (``*`` is left-recursive: ``R -> R body | ε``, which Earley
parses with one completion per item where right recursion would chain them).

The language is exactly the one of the rules: a terminal stands for any string of its DFA, and
the matcher (:mod:`grammars.cfg_matcher`) tries every split of the input into terminals (the
scannerless reading, as lark's Earley parser with ``lexer="dynamic_complete"``).

Terminals never match the empty string: a run that can be empty becomes ``T' | ε`` (a helper
nonterminal) with ``T'`` the non-empty part. The result is trimmed: nonterminals that derive no
string are removed (``EmptyLanguageError`` if the start rule is one of them), and so are
productions and rules not reachable from the start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grammars.automaton import DEFAULT_MAX_STATES, Dfa, build_dfas
from grammars.errors import EmptyLanguageError
from grammars.ir import Alt, Node, Ref, Repeat, Rules, Seq, seq

__all__ = ["Cfg", "Production", "follow_terminals", "rules_to_cfg"]

_RUN = 1 << 40  # placeholder symbols of regular runs while rules are lowered


@dataclass(frozen=True, slots=True)
class Production:
    """``lhs -> rhs``; a symbol ``s >= 0`` is terminal ``s``, ``s < 0`` is nonterminal ``~s``."""

    lhs: int
    rhs: tuple[int, ...]


@dataclass(eq=False)
class Cfg:
    """A context-free grammar over regular, non-empty terminals (see the module docstring).

    - ``terminals[t]``: the byte DFA of terminal ``t`` (start state 0, never accepting).
    - ``productions``; ``by_lhs[n]``: the indices of nonterminal ``n``'s productions.
    - ``start``: the start nonterminal; ``names[n]``: a readable name per nonterminal.
    - ``nullable[n]``: nonterminal ``n`` derives the empty string.
    """

    terminals: list[Dfa]
    productions: list[Production]
    start: int
    names: list[str]
    by_lhs: list[list[int]] = field(default_factory=list)
    nullable: list[bool] = field(default_factory=list)

    @property
    def n_nonterminals(self) -> int:
        return len(self.names)


def _without_empty(d: Dfa) -> Dfa:
    """The DFA of ``L(d) - {""}``: a fresh non-accepting start state with state 0's row."""
    trans = np.where(d.trans >= 0, d.trans + 1, -1).astype(np.int32)
    trans = np.vstack([trans[0:1], trans])
    accepting = np.concatenate([[False], d.accepting])
    return Dfa(trans=trans, accepting=accepting)


class _Lowering:
    def __init__(self, rules: Rules, max_states: int) -> None:
        self.rules = rules.rules
        self.max_states = max_states
        self.recursive = _tainted_rules(rules)
        self.names: list[str] = []
        self.nt_of: dict[str, int] = {}
        self.productions: list[Production] = []
        self.terminals: list[Dfa] = []
        self.term_of: dict[bytes, int] = {}
        self.clean = {k: v for k, v in self.rules.items() if k not in self.recursive}
        self._lowered: dict[int, list[int]] = {}  # id(node) -> its symbols (nodes live in rules)
        self._run_symbols: dict[tuple[int, ...], list[int]] = {}
        self.runs: list[Node] = []  # regular runs, placeholder symbol _RUN + index

    # -- symbols --
    def nonterminal(self, name: str) -> int:
        n = self.nt_of.get(name)
        if n is None:
            n = self.nt_of[name] = len(self.names)
            self.names.append(name)
        return ~n

    def helper(self, what: str) -> int:
        n = len(self.names)
        self.names.append(f"<{what} #{n}>")
        return ~n

    def add(self, lhs: int, rhs: list[int]) -> None:
        self.productions.append(Production(~lhs, tuple(rhs)))

    def run_symbol(self, node: Node) -> int:
        """A placeholder symbol for a regular node, replaced once every run's DFA is built
        (:meth:`terminal_symbols`)."""
        self.runs.append(node)
        return _RUN + len(self.runs) - 1

    def terminal_symbols(self, dfa: Dfa) -> list[int]:
        """Symbols for a regular run's DFA: [T], [] (only the empty string), or
        [helper -> T | ε]."""
        if not dfa.accepting[0]:
            return [self._terminal(dfa)]
        if not (dfa.trans >= 0).any():
            return []  # only the empty string
        t = self._terminal(_without_empty(dfa))
        h = self.helper("optional")
        self.add(h, [t])
        self.add(h, [])
        return [h]

    def resolve_runs(self) -> None:
        """Build the DFAs of every run at once and put their symbols in the productions."""
        dfas = build_dfas(Rules(self.clean, "__none__"), self.runs, max_states=self.max_states)
        syms = [self.terminal_symbols(d) for d in dfas]
        self.productions = [
            p if not any(x >= _RUN for x in p.rhs) else Production(p.lhs, tuple(
                y for x in p.rhs for y in (syms[x - _RUN] if x >= _RUN else (x,))))
            for p in self.productions]

    def _terminal(self, dfa: Dfa) -> int:
        key = dfa.trans.tobytes() + dfa.accepting.tobytes()
        t = self.term_of.get(key)
        if t is None:
            t = self.term_of[key] = len(self.terminals)
            self.terminals.append(dfa)
        return t

    # -- lowering --
    def has_nonterminal(self, node: Node, memo: dict[int, bool]) -> bool:
        key = id(node)
        if key in memo:
            return memo[key]
        if isinstance(node, Ref):
            out = node.name in self.recursive
        elif isinstance(node, (Seq, Alt)):
            out = any(self.has_nonterminal(i, memo) for i in node.items)
        elif isinstance(node, Repeat):
            out = self.has_nonterminal(node.item, memo)
        else:
            out = False
        memo[key] = out
        return out

    def sequence(self, node: Node, memo: dict[int, bool]) -> list[int]:
        """Symbols of one alternative for ``node`` (regular runs merged into terminals)."""
        out: list[int] = []
        run: list[Node] = []

        def flush() -> None:
            if run:
                key = tuple(id(x) for x in run)
                syms = self._run_symbols.get(key)
                if syms is None:
                    syms = self._run_symbols[key] = [self.run_symbol(seq(*run))]
                out.extend(syms)
                run.clear()

        def visit(n: Node) -> None:
            if not self.has_nonterminal(n, memo):
                run.append(n)
                return
            if isinstance(n, Seq):
                for i in n.items:
                    visit(i)
                return
            flush()
            # a node shared in the rules' DAG is lowered once (its symbols do not depend on
            # where it occurs); without this, nested optional members expand exponentially
            hit = self._lowered.get(id(n))
            if hit is not None:
                out.extend(hit)
                return
            first = len(out)
            lower_shared(n)
            self._lowered[id(n)] = out[first:]

        def lower_shared(n: Node) -> None:
            if isinstance(n, Ref):
                out.append(self.nonterminal(n.name))
            elif isinstance(n, Alt):
                h = self.helper("choice")
                for i in n.items:
                    self.add(h, self.sequence(i, memo))
                out.append(h)
            else:
                assert isinstance(n, Repeat)
                body = self.sequence(n.item, memo)
                out.extend(body * n.lo)
                if n.hi is None:
                    h = self.helper("repeat")
                    self.add(h, [])
                    self.add(h, [h, *body])
                    out.append(h)
                elif n.hi > n.lo:
                    tail: list[int] = []
                    for _ in range(n.hi - n.lo):  # ε | body (ε | body (...))
                        h = self.helper("optional")
                        self.add(h, [])
                        self.add(h, [*body, *tail])
                        tail = [h]
                    out.extend(tail)

        visit(node)
        flush()
        visit = None  # type: ignore[assignment]  # it refers to itself: break the cycle (no garbage)
        return out

    def lower(self, start: str) -> Cfg:
        memo: dict[int, bool] = {}
        s = self.nonterminal(start)
        done: set[str] = set()
        todo = [start]
        while todo:
            name = todo.pop()
            if name in done:
                continue
            done.add(name)
            lhs = self.nonterminal(name)
            before = len(self.productions)
            self.add(lhs, self.sequence(self.rules[name], memo))
            # nonterminal rules reached from the new productions
            for p in self.productions[before:]:
                for sym in p.rhs:
                    if sym < 0:
                        nm = self.names[~sym]
                        if nm in self.rules and nm not in done:
                            todo.append(nm)
        self.resolve_runs()
        return _trim(Cfg(self.terminals, self.productions, ~s, self.names))


def _tainted_rules(rules: Rules) -> set[str]:
    """Rules on a reference cycle, and the rules that reach one."""
    graph: dict[str, set[str]] = {}
    for name, node in rules.rules.items():
        refs: set[str] = set()
        stack = [node]
        seen: set[int] = set()
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n, Ref):
                refs.add(n.name)
            elif isinstance(n, (Seq, Alt)):
                stack.extend(n.items)
            elif isinstance(n, Repeat):
                stack.append(n.item)
        graph[name] = refs

    def reach(src: str) -> set[str]:
        out: set[str] = set()
        stack = list(graph.get(src, ()))
        while stack:
            r = stack.pop()
            if r in out:
                continue
            out.add(r)
            stack.extend(graph.get(r, ()))
        return out

    reaches = {name: reach(name) for name in graph}
    cyclic = {name for name, r in reaches.items() if name in r}
    return {name for name, r in reaches.items() if name in cyclic or r & cyclic}


def _trim(g: Cfg) -> Cfg:
    """Drop non-productive and unreachable symbols; renumber; fill ``by_lhs`` and ``nullable``."""
    n = g.n_nonterminals
    productive = [False] * n
    changed = True
    while changed:
        changed = False
        for p in g.productions:
            if not productive[p.lhs] and all(s >= 0 or productive[~s] for s in p.rhs):
                productive[p.lhs] = changed = True
    if not productive[g.start]:
        raise EmptyLanguageError(f"the start rule {g.names[g.start]!r} derives no string")
    prods = [p for p in g.productions if all(s >= 0 or productive[~s] for s in p.rhs)]
    by: list[list[Production]] = [[] for _ in range(n)]
    for p in prods:
        by[p.lhs].append(p)
    reach = {g.start}
    stack = [g.start]
    used_terms: set[int] = set()
    while stack:
        a = stack.pop()
        for p in by[a]:
            for s in p.rhs:
                if s >= 0:
                    used_terms.add(s)
                elif ~s not in reach:
                    reach.add(~s)
                    stack.append(~s)
    nt_map = {old: new for new, old in enumerate(sorted(reach))}
    t_map = {old: new for new, old in enumerate(sorted(used_terms))}

    def sym(s: int) -> int:
        return t_map[s] if s >= 0 else ~nt_map[~s]

    productions = [Production(nt_map[p.lhs], tuple(sym(s) for s in p.rhs))
                   for p in prods if p.lhs in reach]
    out = Cfg(
        terminals=[g.terminals[t] for t in sorted(used_terms)],
        productions=productions,
        start=nt_map[g.start],
        names=[g.names[old] for old in sorted(reach)],
    )
    out.by_lhs = [[] for _ in range(out.n_nonterminals)]
    for i, p in enumerate(productions):
        out.by_lhs[p.lhs].append(i)
    nullable = [False] * out.n_nonterminals
    changed = True
    while changed:
        changed = False
        for p in productions:
            if not nullable[p.lhs] and all(s < 0 and nullable[~s] for s in p.rhs):
                nullable[p.lhs] = changed = True
    out.nullable = nullable
    return out


def follow_terminals(g: Cfg) -> list[int]:
    """Per terminal, the bitset of terminals that may come right after it in some sentence of
    ``g`` (FIRST/FOLLOW sets over the terminals, nullable nonterminals skipped)."""
    n = g.n_nonterminals
    first = [0] * n  # per nonterminal: terminals that can begin it
    changed = True
    while changed:
        changed = False
        for p in g.productions:
            acc = first[p.lhs]
            for sym in p.rhs:
                if sym >= 0:
                    acc |= 1 << sym
                    break
                acc |= first[~sym]
                if not g.nullable[~sym]:
                    break
            if acc != first[p.lhs]:
                first[p.lhs] = acc
                changed = True
    follow_nt = [0] * n
    follow_t = [0] * len(g.terminals)
    changed = True
    while changed:
        changed = False
        for p in g.productions:
            after = follow_nt[p.lhs]  # what follows the symbols still to the right, right to left
            for sym in reversed(p.rhs):
                if sym >= 0:
                    if after & ~follow_t[sym]:
                        follow_t[sym] |= after
                        changed = True
                    after = 1 << sym
                else:
                    if after & ~follow_nt[~sym]:
                        follow_nt[~sym] |= after
                        changed = True
                    after = first[~sym] | (after if g.nullable[~sym] else 0)
    return follow_t


def rules_to_cfg(rules: Rules, *, max_states: int = DEFAULT_MAX_STATES) -> Cfg:
    """Lower recursive ``rules`` into a :class:`Cfg` (see the module docstring)."""
    return _Lowering(rules, max_states).lower(rules.start)
