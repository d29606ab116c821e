"""An incremental, persistent Earley recognizer over the terminals of a :class:`grammars.cfg.Cfg`.

J. Earley, "An efficient context-free parsing algorithm" (CACM 1970), with the nullable-symbol
fix of J. Aycock and R. N. Horspool, "Practical Earley Parsing" (The Computer Journal, 2002):
predicting a nullable nonterminal also advances over it, so completions of empty derivations are
never missed. Handles every context-free grammar: left and right recursion, ambiguity, nullable
rules.

Persistence: a :class:`Column` is the Earley set after some sequence of terminals; it is never
modified once built (only its memo of successors grows), and items point at the columns they
started in. A parser state is therefore one pointer: forking costs O(1), and going back is
keeping an older pointer. :meth:`Column.scan` memoizes the successor column per terminal, so
states reached twice (forks, rollbacks, mask computations) share the work.
"""

from __future__ import annotations

from grammars.cfg import Cfg

__all__ = ["Column", "start_column"]


class Column:
    """The Earley set after a sequence of terminals.

    - ``expected``: bitset (Python int) of the terminals some item waits for.
    - ``accepting``: the start symbol is complete over the whole input.
    - ``waiting[symbol]``: the items ``(production, dot, origin column)`` whose next symbol it is.
    """

    __slots__ = ("_scans", "accepting", "expected", "g", "index", "waiting")

    def __init__(self, g: Cfg, index: int) -> None:
        self.g = g
        self.index = index
        self.waiting: dict[int, list[tuple[int, int, Column]]] = {}
        self.expected = 0
        self.accepting = False
        self._scans: dict[int, Column | None] = {}

    def __repr__(self) -> str:
        return f"Column(index={self.index}, expected={bin(self.expected)}, accepting={self.accepting})"

    def _close(self, kernel: list[tuple[int, int, Column]], root: Column) -> None:
        g = self.g
        prods = g.productions
        seen: set[tuple[int, int, int]] = set()
        predicted: set[int] = set()
        agenda: list[tuple[int, int, Column]] = []

        def add(item: tuple[int, int, Column]) -> None:
            key = (item[0], item[1], id(item[2]))
            if key not in seen:
                seen.add(key)
                agenda.append(item)

        for it in kernel:
            add(it)
        waiting = self.waiting
        while agenda:
            item = agenda.pop()
            p, dot, origin = item
            rhs = prods[p].rhs
            if dot < len(rhs):
                sym = rhs[dot]
                lst = waiting.get(sym)
                if lst is None:
                    waiting[sym] = [item]
                else:
                    lst.append(item)
                if sym >= 0:
                    self.expected |= 1 << sym
                    continue
                nt = ~sym
                if nt not in predicted:
                    predicted.add(nt)
                    for q in g.by_lhs[nt]:
                        add((q, 0, self))
                if g.nullable[nt]:
                    add((p, dot + 1, origin))
                continue
            lhs = prods[p].lhs
            if origin is self:
                # an empty derivation: its waiting items are advanced by the nullable rule above
                if lhs == g.start and self is root:
                    self.accepting = True
                continue
            if lhs == g.start and origin is root:
                self.accepting = True
            for w in origin.waiting.get(~lhs, ()):
                add((w[0], w[1] + 1, w[2]))

    def scan(self, terminal: int) -> Column | None:
        """The column after ``terminal`` (memoized), or None when no item expects it."""
        try:
            return self._scans[terminal]
        except KeyError:
            pass
        out: Column | None = None
        items = self.waiting.get(terminal)
        if items:
            out = Column(self.g, self.index + 1)
            out._close([(p, d + 1, o) for p, d, o in items], _root(self))
        self._scans[terminal] = out
        return out


def _root(col: Column) -> Column:
    return col.g._earley_root  # type: ignore[attr-defined]


def start_column(g: Cfg) -> Column:
    """The Earley set before any input (cached on ``g``)."""
    root = getattr(g, "_earley_root", None)
    if root is None:
        root = Column(g, 0)
        g._earley_root = root  # type: ignore[attr-defined]
        root._close([(q, 0, root) for q in g.by_lhs[g.start]], root)
    return root
