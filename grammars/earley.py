"""An incremental, persistent Earley recognizer over the terminals of a :class:`grammars.cfg.Cfg`.

J. Earley, "An efficient context-free parsing algorithm" (CACM 1970), with the nullable-symbol
fix of J. Aycock and R. N. Horspool, "Practical Earley Parsing" (The Computer Journal, 2002):
predicting a nullable nonterminal also advances over it, so completions of empty derivations are
never missed. Handles every context-free grammar: left and right recursion, ambiguity, nullable
rules.

Persistence: a :class:`Column` is the Earley set after some sequence of terminals; it is never
modified once built (only its weak memo of successors changes), and items point at the columns
they started in. A parser state is therefore one pointer: forking costs O(1), and going back is
keeping an older pointer. :meth:`Column.scan` memoizes the successor column per terminal, so
states reached twice (forks, rollbacks, mask computations) share the work, and interns columns by
content (weakly), so different splits of the input that reach the same parse state share one.
"""

from __future__ import annotations

import collections
import weakref

from grammars.cfg import Cfg

__all__ = ["RECENT_COLUMNS", "Column", "start_column"]

#: How many recently built columns a grammar keeps alive (beyond those its matchers hold).
RECENT_COLUMNS = 50_000


class Column:
    """The Earley set after a sequence of terminals.

    - ``expected``: bitset (Python int) of the terminals some item waits for.
    - ``accepting``: the start symbol is complete over the whole input.
    - ``waiting[symbol]``: the items ``(production, dot, origin column)`` whose next symbol it is.
    """

    __slots__ = ("__weakref__", "_none", "_scans", "accepting", "expected", "g", "index",
                 "waiting")

    def __init__(self, g: Cfg, index: int) -> None:
        self.g = g
        self.index = index
        self.waiting: dict[int, list[tuple[int, int, Column]]] = {}
        self.expected = 0
        self.accepting = False
        self._scans: dict[int, weakref.ref[Column]] = {}
        self._none = 0  # bitset: terminals with no successor

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
        if (self._none >> terminal) & 1:
            return None
        ref = self._scans.get(terminal)
        if ref is not None:
            hit = ref()
            if hit is not None:
                return hit
        items = self.waiting.get(terminal)
        if not items:
            self._none |= 1 << terminal
            return None
        out = Column(self.g, self.index + 1)
        out._close([(p, d + 1, o) for p, d, o in items], _root(self))
        out = _intern(out)
        self._scans[terminal] = weakref.ref(out)
        self.g._earley_recent.append(out)  # type: ignore[attr-defined]
        return out

    def _key(self) -> tuple[bool, frozenset[tuple[int, int, int]]]:
        """What the column's future depends on: its waiting items (an item predicted here has
        origin -1) and whether it accepts. Columns with equal keys behave identically."""
        return self.accepting, frozenset(
            (p, d, -1 if o is self else id(o)) for lst in self.waiting.values() for p, d, o in lst)


def _intern(col: Column) -> Column:
    """An existing column equivalent to ``col`` (equal :meth:`Column._key`), or ``col`` itself.
    Different splits of the input into terminals that reach the same parse state then share one
    column, so the matcher's hypotheses stay few (``(column, lexer state)`` pairs dedupe)."""
    table = col.g._earley_intern  # type: ignore[attr-defined]
    key = col._key()
    hit = table.get(key)
    if hit is not None:
        return hit
    table[key] = col
    return col


def _root(col: Column) -> Column:
    return col.g._earley_root  # type: ignore[attr-defined]


def start_column(g: Cfg) -> Column:
    """The Earley set before any input (cached on ``g``)."""
    root = getattr(g, "_earley_root", None)
    if root is None:
        root = Column(g, 0)
        g._earley_root = root  # type: ignore[attr-defined]
        g._earley_intern = weakref.WeakValueDictionary()  # type: ignore[attr-defined]
        # successors are memoized weakly (a long-lived grammar does not keep every parse it ever
        # saw); the most recent columns are kept alive here so repeated steps stay cheap
        g._earley_recent = collections.deque(maxlen=RECENT_COLUMNS)  # type: ignore[attr-defined]
        root._close([(q, 0, root) for q in g.by_lhs[g.start]], root)
    return root
