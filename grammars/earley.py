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
import itertools
import weakref

from grammars.cfg import Cfg

__all__ = ["RECENT_COLUMNS", "Column", "start_column"]

#: How many recently built columns a grammar keeps alive (beyond those its matchers hold).
RECENT_COLUMNS = 50_000


class _Predicted:
    """The items a column predicts, with origin the column itself: shared by every column that
    predicts the same nonterminals (they are the same items, only the origin differs).

    - ``waiting[symbol]``: the ``(production, dot)`` pairs whose next symbol it is.
    - ``expected``: bitset of the terminals among those symbols.
    """

    __slots__ = ("expected", "nts", "waiting")

    def __init__(self, g: Cfg, nts: frozenset[int]) -> None:
        self.nts = nts
        self.waiting: dict[int, list[tuple[int, int]]] = {}
        self.expected = 0
        prods = g.productions
        for nt in nts:
            for p in g.by_lhs[nt]:
                rhs = prods[p].rhs
                for d in range(len(rhs)):  # the dot moves over nullable prefixes (Aycock-Horspool)
                    sym = rhs[d]
                    self.waiting.setdefault(sym, []).append((p, d))
                    if sym >= 0:
                        self.expected |= 1 << sym
                        break
                    if not g.nullable[~sym]:
                        break
                # a production whose whole rhs is nullable completes empty here: its waiting
                # items were advanced over it by the loop above (nothing else to do)


def _prediction_closure(g: Cfg, nt: int) -> frozenset[int]:
    """The nonterminals predicted, transitively, when ``nt`` is (cached on ``g``)."""
    memo = g._earley_closures  # type: ignore[attr-defined]
    hit = memo.get(nt)
    if hit is None:
        prods = g.productions
        out = {nt}
        stack = [nt]
        while stack:
            a = stack.pop()
            for p in g.by_lhs[a]:
                for sym in prods[p].rhs:
                    if sym >= 0:
                        break
                    if ~sym not in out:
                        out.add(~sym)
                        stack.append(~sym)
                    if not g.nullable[~sym]:
                        break
        hit = memo[nt] = frozenset(out)
    return hit


def _predicted(g: Cfg, nts: frozenset[int]) -> _Predicted:
    table = g._earley_predicted  # type: ignore[attr-defined]
    hit = table.get(nts)
    if hit is None:
        hit = table[nts] = _Predicted(g, nts)
    return hit


class _Cascade:
    """What completing nonterminal ``X`` at a column that predicts ``P`` does to ``P``'s items
    (origin that column), the same for every such column: they advance over ``X``, and over the
    nonterminals that completes in turn (``done``, ``X`` first; ``accepts`` if the start symbol is
    among them), and over nullable symbols. ``by_sym``: the advanced items ``(production, dot)``
    per next symbol; ``expected``: the terminals among those symbols; ``predict``: the
    nonterminals they make the completing column predict."""

    __slots__ = ("accepts", "by_sym", "done", "expected", "predict")

    def __init__(self, g: Cfg, pred: _Predicted, x: int) -> None:
        prods = g.productions
        done = [x]
        done_set = {x}
        advanced: set[tuple[int, int]] = set()
        self.by_sym: dict[int, list[tuple[int, int]]] = {}
        self.expected = 0
        predict: set[int] = set()
        k = 0
        while k < len(done):
            y = done[k]
            k += 1
            for p, d in pred.waiting.get(~y, ()):
                d += 1
                rhs = prods[p].rhs
                while True:
                    if d == len(rhs):
                        lhs = prods[p].lhs
                        if lhs not in done_set:
                            done_set.add(lhs)
                            done.append(lhs)
                        break
                    if (p, d) in advanced:
                        break
                    advanced.add((p, d))
                    sym = rhs[d]
                    self.by_sym.setdefault(sym, []).append((p, d))
                    if sym >= 0:
                        self.expected |= 1 << sym
                        break
                    predict |= _prediction_closure(g, ~sym)
                    if not g.nullable[~sym]:
                        break
                    d += 1
        self.done = tuple(done)
        self.accepts = g.start in done_set
        self.predict = frozenset(predict)


def _cascade(g: Cfg, pred: _Predicted, x: int) -> _Cascade:
    table = g._earley_cascades  # type: ignore[attr-defined]
    key = (id(pred), x)
    hit = table.get(key)
    if hit is None:
        hit = table[key] = _Cascade(g, pred, x)
    return hit


_NO_IDS: frozenset[int] = frozenset()
_NOTHING = _Predicted.__new__(_Predicted)
_NOTHING.nts, _NOTHING.waiting, _NOTHING.expected = frozenset(), {}, 0


class Column:
    """The Earley set after a sequence of terminals.

    - ``expected``: bitset (Python int) of the terminals some item waits for.
    - ``accepting``: the start symbol is complete over the whole input.
    - ``waiting[symbol]``: the items ``(production, dot, origin column)`` that started before
      this column and whose next symbol it is; ``predicted``: the items started here (shared per
      set of predicted nonterminals, :class:`_Predicted`).
    """

    __slots__ = ("__weakref__", "_completions", "_core", "_groups", "_none", "_pops", "_scans", "_sigs",
                 "accepting", "expected", "g", "index", "predicted", "waiting")

    def __init__(self, g: Cfg, index: int) -> None:
        self.g = g
        self.index = index
        self.waiting: dict[int, list[tuple[int, int, Column]]] = {}
        self.predicted = _NOTHING
        self.expected = 0
        self.accepting = False
        self._scans: dict[int, weakref.ref[Column]] = {}
        self._none = 0  # bitset: terminals with no successor
        self._pops: dict[int, frozenset[int]] | None = None
        self._core: tuple | None = None
        self._sigs: list | None = None
        self._groups: list[tuple[Column, int]] | None = None
        self._completions: dict[int, tuple] | None = None

    def __repr__(self) -> str:
        return f"Column(index={self.index}, expected={bin(self.expected)}, accepting={self.accepting})"

    def core(self) -> tuple:
        """The column without its items' origins: what it predicts and its waiting items'
        ``(production, dot)``. Columns with equal cores expect the same terminals, and scanning
        from them gives columns with equal cores, until an item started before them completes
        (:meth:`pops`)."""
        if self._core is None:
            self._core = (id(self.predicted), frozenset(
                (p, d) for lst in self.waiting.values() for p, d, _ in lst))
        return self._core

    def signature(self, depth: int) -> int:
        """The column with its items' origins described ``depth`` levels deep, as an id
        (interned per grammar): its core at 0, else what it predicts and its waiting items as
        ``(production, dot, origin's signature one level less deep)``. Columns with equal
        signatures of depth ``d`` parse every input alike until an item started more than ``d``
        origin links back completes (memoized)."""
        sigs = self._sigs
        if sigs is None:
            sigs = self._sigs = []
        elif depth < len(sigs):
            return sigs[depth]
        table = self.g._earley_signatures  # type: ignore[attr-defined]
        while len(sigs) <= depth:
            d = len(sigs)  # building the signature of depth d
            if d == 0:
                key: tuple = self.core()
            else:
                # per origin, its items' (production, dot) set (interned) with the origin's
                # signature: finer than the set of (production, dot, origin signature) triples
                # (two origins of equal signature stay apart), so equal keys still mean equal
                # such sets, and a pass costs the few origins, not the many items
                # ("o" keeps these keys apart from the cores': their pairs are ids, not items)
                key = (id(self.predicted), "o", frozenset(
                    [(ps, o.signature(d - 1)) for o, ps in self.origin_groups()]))
            sid = table.get(key)
            if sid is None:
                sid = table[key] = len(table)
            sigs.append(sid)
        return sigs[depth]

    def origin_groups(self) -> list[tuple[Column, int]]:
        """The distinct origins of the waiting items, each with the id (interned per grammar) of
        the set of its items' ``(production, dot)`` (memoized; the column is complete)."""
        groups = self._groups
        if groups is None:
            by: dict[int, tuple[Column, set[tuple[int, int]]]] = {}
            for lst in self.waiting.values():
                for p, dot, o in lst:
                    hit = by.get(id(o))
                    if hit is None:
                        by[id(o)] = (o, {(p, dot)})
                    else:
                        hit[1].add((p, dot))
            table = self.g._earley_signatures  # type: ignore[attr-defined]
            groups = []
            for o, pds in by.values():
                k = ("items", frozenset(pds))
                ps = table.get(k)
                if ps is None:
                    ps = table[k] = len(table)
                groups.append((o, ps))
            self._groups = groups
        return groups

    def ancestors(self, depth: int) -> set[int]:
        """The ids of the columns reachable through 1 to ``depth`` origin links (not the column
        itself, unless a cycle leads back to it: it cannot, origins come before)."""
        out: set[int] = set()
        frontier = [self]
        for _ in range(depth):
            nxt = []
            for c in frontier:
                for o, _ in c.origin_groups():
                    if id(o) not in out:
                        out.add(id(o))
                        nxt.append(o)
            if not nxt:
                break
            frontier = nxt
        return out

    def depth_of(self, ids: set[int] | frozenset[int], limit: int) -> int:
        """The fewest origin links within which every column of ``ids`` (ancestors of this
        one) is reached, or ``limit + 1`` if some is not reached within ``limit``."""
        todo = set(ids)
        todo.discard(id(self))
        seen = {id(self)}
        frontier = [self]
        d = 0
        while todo:
            d += 1
            if d > limit:
                return limit + 1
            nxt = []
            for c in frontier:
                for o, _ in c.origin_groups():
                    i = id(o)
                    if i not in seen:
                        seen.add(i)
                        todo.discard(i)
                        nxt.append(o)
            if not nxt:
                return limit + 1
            frontier = nxt
        return d

    def pops(self, terminal: int) -> frozenset[int]:
        """The ids of the columns before this one whose items were completed in building
        ``self.scan(terminal)`` (empty when scanning it only advanced this column's items or
        completed items started here). Valid after that scan."""
        return _NO_IDS if self._pops is None else self._pops.get(terminal, _NO_IDS)

    def _completion(self, x: int) -> tuple:
        """What completing nonterminal ``x`` with origin this column does (memoized: sibling
        columns that complete the same nonterminal here share it): the :class:`_Cascade`, the
        items started before this column that advance (each one step: they may complete in
        turn), and the items started here that advance, by next symbol, origin included."""
        memo = self._completions
        if memo is None:
            memo = self._completions = {}
        hit = memo.get(x)
        if hit is None:
            cas = _cascade(self.g, self.predicted, x)
            waiting = self.waiting
            advanced = []
            for y in cas.done:
                lst = waiting.get(~y)
                if lst:
                    advanced.extend([(p, d + 1, o) for p, d, o in lst])
            bulk = [(sym, [(p, d, self) for p, d in pds]) for sym, pds in cas.by_sym.items()]
            hit = memo[x] = (cas, advanced, bulk)
        return hit

    def _close(self, kernel: list[tuple[int, int, Column]], root: Column) -> set[int]:
        """Close the kernel items (all started before this column): the items they wait on are
        predicted (in bulk, :class:`_Predicted`); completed items advance their origins' items.
        Returns the ids of the origins of the completed items."""
        g = self.g
        rhss = g._earley_rhs  # type: ignore[attr-defined]
        lhss = g._earley_lhs  # type: ignore[attr-defined]
        nullable = g.nullable
        # items are (production, dot, origin) tuples; origins compare by identity, so the
        # tuples themselves are the keys
        seen: set[tuple[int, int, Column]] = set(kernel)
        completed: set[tuple[int, Column]] = set()  # (nonterminal, origin) completed here
        popped: set[int] = set()
        predicted: set[int] = set()
        agenda = list(seen) if len(seen) < len(kernel) else list(kernel)
        waiting = self.waiting
        expected = 0
        while agenda:
            item = agenda.pop()
            p, dot, origin = item
            rhs = rhss[p]
            if dot < len(rhs):
                sym = rhs[dot]
                lst = waiting.get(sym)
                if lst is None:
                    waiting[sym] = [item]
                else:
                    lst.append(item)
                if sym >= 0:
                    expected |= 1 << sym
                    continue
                nt = ~sym
                if nt not in predicted:
                    predicted |= _prediction_closure(g, nt)
                if nullable[nt]:
                    nxt = (p, dot + 1, origin)
                    if nxt not in seen:
                        seen.add(nxt)
                        agenda.append(nxt)
                continue
            done_key = (lhss[p], origin)
            if done_key in completed:
                continue
            completed.add(done_key)
            popped.add(id(origin))
            cas, advanced, bulk = origin._completion(done_key[0])
            if cas.accepts and origin is root:
                self.accepting = True
            for w in advanced:  # the items started before the origin advance one by one
                if w not in seen:
                    seen.add(w)
                    agenda.append(w)
            if bulk:  # the items started at the origin advance in bulk
                for sym, items in bulk:
                    lst = waiting.get(sym)
                    if lst is None:
                        waiting[sym] = list(items)
                    else:
                        lst.extend(items)
                expected |= cas.expected
                predicted |= cas.predict
        if predicted:
            self.predicted = _predicted(g, frozenset(predicted))
        self.expected = expected | self.predicted.expected
        return popped

    def scan(self, terminal: int) -> Column | None:
        """The column after ``terminal`` (memoized), or None when no item expects it."""
        if (self._none >> terminal) & 1:
            return None
        ref = self._scans.get(terminal)
        if ref is not None:
            hit = ref()
            if hit is not None:
                return hit
        kernel = [(p, d + 1, o) for p, d, o in self.waiting.get(terminal, ())]
        own = self.predicted.waiting.get(terminal)
        if own:
            kernel.extend([(p, d + 1, self) for p, d in own])
        if not kernel:
            self._none |= 1 << terminal
            return None
        out = Column(self.g, self.index + 1)
        popped = out._close(kernel, _root(self))
        popped.discard(id(self))
        if popped:
            if self._pops is None:
                self._pops = {}
            self._pops[terminal] = frozenset(popped)
        out = _intern(out)
        self._scans[terminal] = weakref.ref(out)
        self.g._earley_recent.append(out)  # type: ignore[attr-defined]
        return out

    def _key(self) -> tuple[bool, int, frozenset[tuple[int, int, Column]]]:
        """What the column's future depends on: its waiting items (origins compared by
        identity), what it predicts, and whether it accepts. Columns with equal keys behave
        identically."""
        return self.accepting, id(self.predicted), frozenset(
            itertools.chain.from_iterable(self.waiting.values()))


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
        g._earley_closures = {}  # type: ignore[attr-defined]
        g._earley_predicted = {}  # type: ignore[attr-defined]
        g._earley_cascades = {}  # type: ignore[attr-defined]
        g._earley_signatures = {}  # type: ignore[attr-defined]
        g._earley_rhs = [p.rhs for p in g.productions]  # type: ignore[attr-defined]
        g._earley_lhs = [p.lhs for p in g.productions]  # type: ignore[attr-defined]
        root = Column(g, 0)
        g._earley_root = root  # type: ignore[attr-defined]
        g._earley_intern = weakref.WeakValueDictionary()  # type: ignore[attr-defined]
        # successors are memoized weakly (a long-lived grammar does not keep every parse it ever
        # saw); the most recent columns are kept alive here so repeated steps stay cheap
        g._earley_recent = collections.deque(maxlen=RECENT_COLUMNS)  # type: ignore[attr-defined]
        root.predicted = _predicted(g, _prediction_closure(g, g.start))
        root.expected = root.predicted.expected
        root.accepting = g.nullable[g.start]
    return root
