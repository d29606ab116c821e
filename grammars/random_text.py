"""Random strings of a context-free grammar's language (for differential tests and benchmarks).

:func:`random_strings` expands the start symbol of a :class:`grammars.cfg.Cfg` with random
productions; past ``max_depth`` nested expansions it takes, per nonterminal, a production of least
expansion height, so every derivation ends. A terminal's text is a random walk of its DFA: at an
accepting state it stops with probability ``stop``, else it takes a random byte that keeps the
walk alive (printable ASCII bytes weigh 1, others ``0.02``, so classes like ``[^"]`` yield readable
text); past ``max_lexeme`` bytes it follows a shortest path to acceptance. Multi-byte UTF-8 steps
stay valid: a terminal's DFA only has valid UTF-8 paths.
"""

from __future__ import annotations

import numpy as np

from grammars.automaton import Dfa
from grammars.cfg import Cfg

__all__ = ["random_strings"]


def _distance_to_accept(d: Dfa) -> np.ndarray:
    dist = np.where(d.accepting, 0, 10**9).astype(np.int64)
    trans = d.trans
    while True:
        nxt = np.where(trans >= 0, dist[np.maximum(trans, 0)], 10**9).min(axis=1) + 1
        new = np.minimum(dist, nxt)
        if (new == dist).all():
            return dist
        dist = new


def _heights(g: Cfg) -> list[int]:
    """Least expansion height per nonterminal (terminals count 0)."""
    inf = 10**9
    h = [inf] * g.n_nonterminals
    changed = True
    while changed:
        changed = False
        for p in g.productions:
            v = 1 + max((h[~s] for s in p.rhs if s < 0), default=0)
            if v < h[p.lhs]:
                h[p.lhs] = v
                changed = True
    return h


_WEIGHT = np.where((np.arange(256) >= 0x20) & (np.arange(256) < 0x7F), 1.0, 0.02)
_WEIGHT[[0x09, 0x0A]] = 0.3


class _Sampler:
    def __init__(self, g: Cfg, rng: np.random.Generator, max_depth: int, stop: float,
                 max_lexeme: int) -> None:
        self.g, self.rng = g, rng
        self.max_depth, self.stop, self.max_lexeme = max_depth, stop, max_lexeme
        self.dist = [_distance_to_accept(t) for t in g.terminals]
        heights = _heights(g)
        self.shallow = []
        for n in range(g.n_nonterminals):
            best = min(g.by_lhs[n], key=lambda i: 1 + max(
                (heights[~s] for s in g.productions[i].rhs if s < 0), default=0))
            self.shallow.append(best)

    def lexeme(self, t: int) -> bytes:
        d = self.g.terminals[t]
        dist = self.dist[t]
        out = bytearray()
        s = 0
        while True:
            if d.accepting[s] and (self.rng.random() < self.stop or len(out) >= self.max_lexeme):
                return bytes(out)
            row = d.trans[s]
            live = np.flatnonzero(row >= 0)
            if len(live) == 0:
                return bytes(out)
            if len(out) >= self.max_lexeme:
                live = live[dist[row[live]] < dist[s]]
            w = _WEIGHT[live]
            b = int(self.rng.choice(live, p=w / w.sum()))
            out.append(b)
            s = int(row[b])

    def expand(self, sym: int, depth: int, out: bytearray) -> None:
        if sym >= 0:
            out += self.lexeme(sym)
            return
        n = ~sym
        if depth >= self.max_depth:
            p = self.shallow[n]
        else:
            choices = self.g.by_lhs[n]
            p = choices[int(self.rng.integers(len(choices)))]
        for s in self.g.productions[p].rhs:
            self.expand(s, depth + 1, out)


def random_strings(g: Cfg, n: int, *, seed: int = 0, max_depth: int = 12, stop: float = 0.5,
                   max_lexeme: int = 12, max_bytes: int | None = None) -> list[bytes]:
    """``n`` random strings of ``g``'s language (see the module docstring); with ``max_bytes``,
    longer draws are discarded and drawn again."""
    rng = np.random.default_rng(seed)
    s = _Sampler(g, rng, max_depth, stop, max_lexeme)
    out: list[bytes] = []
    while len(out) < n:
        buf = bytearray()
        s.expand(~g.start, 0, buf)
        if max_bytes is None or len(buf) <= max_bytes:
            out.append(bytes(buf))
    return out
