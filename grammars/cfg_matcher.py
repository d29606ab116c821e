"""The context-free path: a :class:`grammars.cfg.Cfg` compiled against a vocabulary, and its Matcher.

**State.** A set of hypotheses ``(column, q)``: an Earley column (:mod:`grammars.earley`: the parse
of the lexemes completed so far) and a lexer state ``q`` (:mod:`grammars.lexer`: how far into the
current lexeme). Reading a byte first closes the set at lexeme boundaries (for every terminal
``t`` the column expects that accepts at ``q``, add ``(column.scan(t), 0)``), then advances every
lexer state, keeping those where a terminal the column expects is still alive. Every split of the
input into terminals is tried, so the language is exactly the grammar's. EOS is allowed when some
closed hypothesis is at a lexeme start with an accepting column. Columns are persistent and states
are immutable tuples, so ``fork`` is O(1) and ``rollback`` pops a persistent history.

Viability: terminals are trimmed DFAs and the grammar is trimmed (every nonterminal derives a
string and is reachable), so every prefix the matcher keeps alive extends to a complete string:
the masks never lead into a dead end.

**Masks.** Terminals die and never revive along a lexeme, so a token that stays inside one
lexeme is allowed exactly when some terminal ``t`` the column expects is still alive after it:
the row is the OR over ``t`` of a *piece* that depends only on ``t``'s own DFA state ``s`` (the
lexer state's component), never on the parse. A piece is the mask row of ``t``'s DFA at ``s``
(the regular path's trie walk, :func:`grammars.compiled.dfa_token_rows`, string-body shortcut
included), cached per ``(t, s)`` and shared by every lexer state with ``t`` in ``s``. It also
keeps the trie nodes where a lexeme of ``t`` may end while the token goes on: only those tokens
consult the parser. Under ``column.scan(t)`` the same decomposition continues below those nodes
from the lexer start (a token may span several lexemes), with one numba walk for all terminals
(:func:`grammars.tokenwalk.walk_states`) and pieces keyed by the set of nodes (interned).
The first crossing from ``(t, s)`` is read only next to ``t``'s own row, so it skips the subtrees
whose tokens that row already holds (nodes and walk pruned by
:func:`grammars.tokenwalk.outside_prefix`): a scannerless name then crosses into the next lexeme
only through the few tokens that leave the name (``x,``), not through every identifier that could
also be split in two. After warm-up a mask is a few cached row ORs plus memoized Earley steps
(the idea of XGrammar's context-independent token cache, here per terminal state).

``check_token`` runs the token's bytes through the state (no mask).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grammars.cfg import Cfg, follow_terminals
from grammars.compiled import dfa_token_rows, plain_tokens, string_loop_states
from grammars.earley import Column, start_column
from grammars.errors import GrammarTooLargeError
from grammars.grammar import Grammar
from grammars.lexer import Lexer, bit_list, bitset_words
from grammars.tokenwalk import (
    SERIAL_ROWS,
    accept_nodes,
    accepts_inside,
    outside_prefix,
    split_ends,
    walk_states,
)
from grammars.vocab import Vocabulary
from kernels.bitmask import bitmask_row, write_bitmask_row

__all__ = ["CfgCompiledGrammar", "CfgMatcher"]

Hyp = tuple[Column, int]
#: Below a node set: token rows by the bitset of terminals alive after them, and per terminal
#: the node set where a lexeme of it ends inside a token.
_Pieces = tuple[list[tuple[int, np.ndarray]], dict[int, int]]

#: Memory for the rows kept per (column signature, key) (see ``CfgCompiledGrammar._fill_from``).
SUBTREE_CACHE_BYTES = 64 << 20

_NO_IDS: frozenset[int] = frozenset()
#: Rows below a column are kept when they depend on at most this many origin links back.
MAX_CONTEXT_DEPTH = 6

#: A byte that would leave more live (column, lexer state) pairs raises GrammarTooLargeError.
MAX_HYPOTHESES = 4096

#: Grammars whose terminals have more DFA states than the serial-walk limit and at most this many
#: get every row at compile time, in one parallel trie walk (SQL's 306 states: ~12 ms at compile,
#: cold mask p99 1.8 -> 1.5 ms); the others compute rows on first use (a small grammar's rows
#: take microseconds each: the JSON grammar's 68 would add 0.3 ms to a 6 ms compile).
EAGER_TERMINAL_STATES = 2048

_WARM: list[bool] = []  # the trie-walk kernels are loaded in this process


@dataclass(eq=False)
class CfgCompiledGrammar:
    """A context-free grammar compiled against a vocabulary (see the module docstring)."""

    grammar: Grammar
    vocab: Vocabulary
    cfg: Cfg
    lexer: Lexer
    compile_seconds: float = 0.0
    _pieces: dict[int, tuple[int, list[tuple[int, np.ndarray]], dict[int, int]]] = field(
        default_factory=dict, repr=False)
    _levels: dict[tuple[int, int], tuple[np.ndarray, list[tuple[int, int]]]] = field(
        default_factory=dict, repr=False)
    _subtrees: dict[tuple, tuple[np.ndarray, int]] = field(default_factory=dict, repr=False)
    _need: dict[tuple, int] = field(default_factory=dict, repr=False)
    _pure_scans: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict, repr=False)
    _set_ids: dict[bytes, int] = field(default_factory=dict, repr=False)
    _sets: list[np.ndarray] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.words = (self.vocab.size + 31) // 32
        self._eos_words = np.zeros(self.words, dtype=np.uint32)
        for e in self.vocab.eos_token_ids:
            self._eos_words[e >> 5] |= np.uint32(1 << (e & 31))
        self._eos = frozenset(self.vocab.eos_token_ids)
        # every terminal's DFA in one table (terminal t's state s is global state offs[t] + s):
        # one trie walk computes the rows of many terminal states at once
        sizes = [d.trans.shape[0] for d in self.cfg.terminals]
        self._offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
        self._stacked = self.lexer.stacked
        self._stacked_accepting = self.lexer.stacked_accepting
        n_term_states = len(self._stacked)
        self._loops: np.ndarray | None = None  # string_loop_states of the table, on first use
        self._term_rows = np.zeros((n_term_states, self.words), dtype=np.uint32)
        self._term_done = np.zeros(n_term_states, dtype=bool)
        self._term_ends: list[int | None | bool] = [False] * n_term_states  # False: not yet
        self._components = self.lexer.components.tolist()
        self._prune: list[int | None] = []  # per key: the global terminal state it prunes by
        self._want: list[int] = []  # per key: the terminals it may be asked for
        self._want_masks: dict[int, tuple] = {}  # per walked set of terminals: its lexer masks
        self._follow = follow_terminals(self.cfg)
        self._stack = np.empty(self.vocab.trie.max_depth + 1, dtype=np.int32)
        # the trie walks' scratch (~2 MB), made at the first mask (:meth:`_scratch`): a grammar
        # only asked check_token (AWRS) never needs it, and compiling does not pay for it
        self._pre: np.ndarray | None = None
        self._nodes_out: np.ndarray | None = None
        self._bnodes: np.ndarray | None = None
        self._bstates: np.ndarray | None = None
        self._empty = np.zeros(self.words, dtype=np.uint32)
        self._sets_scratch: np.ndarray | None = None
        self._srows: np.ndarray | None = None
        self._accepts_any = (self.lexer.accept_words != 0).any(axis=1)
        self._max_subtrees = max(16, SUBTREE_CACHE_BYTES // (4 * self.words))

    @property
    def kind(self) -> str:
        return "cfg"

    def matcher(self) -> CfgMatcher:
        return CfgMatcher(self)

    # ---- byte-level semantics ---------------------------------------------------------------
    def close(self, hyps: tuple[Hyp, ...]) -> tuple[Hyp, ...]:
        """Add the lexeme-boundary hypotheses ``(column.scan(t), 0)``."""
        out = list(hyps)
        seen = {(id(c), q) for c, q in hyps}
        acc = self.lexer.accepts
        for col, q in hyps:
            ends = acc[q] & col.expected
            for t in bit_list(ends):
                nxt = col.scan(t)
                if nxt is not None and (id(nxt), 0) not in seen:
                    seen.add((id(nxt), 0))
                    out.append((nxt, 0))
        return tuple(out)

    def step(self, hyps: tuple[Hyp, ...], byte: int) -> tuple[Hyp, ...]:
        """The hypotheses after one byte (closing at boundaries first)."""
        trans = self.lexer.trans
        alive = self.lexer.alive
        out: list[Hyp] = []
        seen: set[tuple[int, int]] = set()
        for col, q in self.close(hyps):
            q2 = int(trans[q, byte])
            if q2 >= 0 and alive[q2] & col.expected and (id(col), q2) not in seen:
                seen.add((id(col), q2))
                out.append((col, q2))
        if len(out) > MAX_HYPOTHESES:
            raise GrammarTooLargeError(
                f"the input splits into terminals in more than {MAX_HYPOTHESES} live ways: the "
                "grammar is too ambiguous at the lexeme level (e.g. adjacent terminals that can "
                "glue together); separate them, e.g. with required whitespace")
        return tuple(out)

    def accepting(self, hyps: tuple[Hyp, ...]) -> bool:
        return any(q == 0 and col.accepting for col, q in self.close(hyps))

    # ---- masks -------------------------------------------------------------------------------
    def compute_terminal_rows(self, states: np.ndarray | None = None) -> None:
        """The rows of the global terminal ``states`` not computed yet (default: all), in one
        trie walk (:func:`grammars.compiled.dfa_token_rows`; parallel past a few states)."""
        todo = np.flatnonzero(~self._term_done) if states is None else np.asarray(states)
        todo = todo[~self._term_done[todo]]
        if len(todo):
            if self._loops is None:
                self._loops = string_loop_states(self._stacked)
            dfa_token_rows(self._stacked, todo, self.vocab, self._loops, self._term_rows)
            self._term_done[todo] = True

    def terminal_piece(self, t: int, s: int) -> tuple[np.ndarray, int | None]:
        """Terminal ``t`` in its DFA state ``s`` at the trie root (parse-independent, cached):
        the tokens read while ``t`` stays alive, and the key (None if empty) of the trie nodes
        where a lexeme of ``t`` may end with the token going on. Only nodes with a token below
        them outside the first set are kept, and the pieces below them (:meth:`pieces`) may
        leave such tokens out: a crossing from ``(t, s)`` is only read next to this row."""
        g = self._offs[t] + s
        ends = self._term_ends[g]
        if ends is False:
            self._scratch()
            if not self._term_done[g]:
                self.compute_terminal_rows(np.array([g]))
            ends = None
            trie = self.vocab.trie
            n = 0
            if accepts_inside(self._stacked, self._stacked_accepting, g, trie.byte, trie.depth,
                              trie.end, self._stack):
                outside_prefix(self._term_rows[g], trie.tok_ids, self._pre)
                n = accept_nodes(self._stacked, self._stacked_accepting, g, trie.byte,
                                 trie.depth, trie.end, trie.tok_ptr, self._pre, self._stack,
                                 self._nodes_out)
            if n:
                want = self._follow[t]
                ends = self._new_key(self._nodes_out[:n].copy(), g, want)
                # the crossing's pieces while the pruning is at hand
                self._pieces[ends] = (want, *self._walk(ends, want, pre_ready=True))
            self._term_ends[g] = ends
        return self._term_rows[g], ends  # type: ignore[return-value]

    def _scratch(self) -> None:
        """Make the trie walks' scratch arrays, once."""
        if self._pre is None:
            trie = self.vocab.trie
            self._pre = np.empty(len(trie.tok_ids) + 1, dtype=np.int32)
            self._nodes_out = np.empty(len(trie.byte), dtype=np.int64)
            self._bnodes = np.empty(1 << 16, dtype=np.int64)
            self._bstates = np.empty(1 << 16, dtype=np.int32)

    def _new_key(self, nodes: np.ndarray, prune: int | None, want: int) -> int:
        sid = len(self._sets)
        self._sets.append(nodes)
        self._prune.append(prune)
        self._want.append(want)
        return sid

    def _walk(self, key: int, want: int, *, pre_ready: bool = False) -> _Pieces:
        """One walk of the token trie below the nodes of ``key`` (lexer start there) for the
        terminals of bitset ``want``: the tokens grouped by the set of wanted terminals alive
        after them (rows ORed per bitset), and per wanted terminal the node set
        (:meth:`_node_set`) where a lexeme of it ends with the token going on. A pruned key (from
        :meth:`terminal_piece`) walks only the subtrees with tokens outside its terminal state's
        row (``pre_ready``: ``self._pre`` already counts them)."""
        self._scratch()
        trie = self.vocab.trie
        lx = self.lexer
        prune = self._prune[key]
        if prune is not None and not pre_ready:
            outside_prefix(self._term_rows[prune], trie.tok_ids, self._pre)
        masks = self._want_masks.get(want)
        if masks is None:
            w = bitset_words([want], lx.n_terminals)[0]
            wanted = bit_list(want)
            slot = np.full(lx.n_terminals, -1, dtype=np.int32)
            slot[wanted] = np.arange(len(wanted), dtype=np.int32)
            masks = self._want_masks[want] = ((lx.alive_words & w).any(axis=1),
                                              (lx.accept_words & w).any(axis=1), slot, wanted)
        live, accepts, slot, wanted = masks
        n_used, nb = self._walk_kernel(self._sets[key], live, accepts, prune is not None)
        groups: dict[int, np.ndarray] = {}
        alive = lx.alive
        for r, st in enumerate(self._used[:n_used].tolist()):
            bits = alive[st] & want
            row = groups.get(bits)
            if row is None:
                groups[bits] = self._srows[r].copy()
            else:
                row |= self._srows[r]
        stop, start, nodes = split_ends(self._bnodes[:nb], self._bstates[:nb], lx.accept_ptr,
                                        lx.accept_terms, slot, len(wanted))
        ends = {}
        for i in np.flatnonzero(stop > start[:-1]).tolist():
            t = wanted[i]
            ends[t] = self._node_set(nodes[start[i]:stop[i]], self._follow[t])
        return list(groups.items()), ends

    def warm_up(self) -> None:
        """Load the trie-walk kernels (numba, cached on disk) with the argument types masks use:
        a process pays that once (~10 ms), at its first compile rather than in a mask."""
        if _WARM:
            return
        self._scratch()
        lx = self.lexer
        trie = self.vocab.trie
        outside_prefix(self._term_rows[0], trie.tok_ids, self._pre)
        accepts_inside(self._stacked, self._stacked_accepting, 0, trie.byte, trie.depth, trie.end,
                       self._stack)
        accept_nodes(self._stacked, self._stacked_accepting, 0, trie.byte, trie.depth, trie.end,
                     trie.tok_ptr, self._pre, self._stack, self._nodes_out)
        self.compute_terminal_rows(np.zeros(1, dtype=np.int64))
        no_roots = np.zeros(0, dtype=np.int64)
        for prune in (False, True):
            self._walk_kernel(no_roots, self._accepts_any, self._accepts_any, prune)
        split_ends(self._bnodes[:0], self._bstates[:0], lx.accept_ptr, lx.accept_terms,
                   np.zeros(lx.n_terminals, dtype=np.int32), lx.n_terminals)
        _WARM.append(True)

    def _walk_kernel(self, roots: np.ndarray, live: np.ndarray, accepts: np.ndarray,
                     prune: bool) -> tuple[int, int]:
        """:func:`walk_states` below ``roots``, growing the scratch until it fits: how many
        lexer states got rows (``self._used``/``self._srows``) and how many boundary nodes were
        recorded (``self._bnodes``/``self._bstates``)."""
        trie = self.vocab.trie
        lx = self.lexer
        if self._sets_scratch is None:
            self._sets_scratch = np.empty((trie.max_depth + 2, lx.n_states), dtype=np.int32)
            self._srows = np.empty((min(lx.n_states, 64), self.words), dtype=np.uint32)
            self._used = np.empty(lx.n_states, dtype=np.int32)
            self._sidx = np.full(lx.n_states, -1, dtype=np.int32)
        counts = np.zeros(2, dtype=np.int64)
        while True:
            status = walk_states(lx.trans, live, accepts, roots, trie.byte, trie.depth,
                                 trie.end, trie.tok_ptr, trie.tok_ids, self._bnodes,
                                 self._bstates, self._sets_scratch,
                                 np.zeros(lx.n_states, dtype=np.int32), self._sidx, self._used,
                                 self._srows, self._pre, prune, counts)
            if status == 0:
                return int(counts[0]), int(counts[1])
            if status == 1:
                self._bnodes = np.empty(2 * len(self._bnodes), dtype=np.int64)
                self._bstates = np.empty(len(self._bnodes), dtype=np.int32)
            else:
                self._srows = np.empty((min(lx.n_states, 2 * len(self._srows)), self.words),
                                       dtype=np.uint32)

    def _node_set(self, nodes: np.ndarray, want: int) -> int | None:
        """The key of a set of trie nodes at the lexer start, where the terminals of ``want``
        may be asked for: an id (interned: equal sets share one, and so their pieces and
        levels; ``want`` accumulates), None for the empty set."""
        if not len(nodes):
            return None
        key = nodes.tobytes()
        sid = self._set_ids.get(key)
        if sid is None:
            sid = self._set_ids[key] = self._new_key(nodes.copy(), None, want)
        else:
            self._want[sid] |= want
        return sid

    def pieces(self, key: int, allowed: int) -> _Pieces:
        """Below the trie nodes of ``key`` (``key >= 0``; the lexer at its start there), for
        the terminals of ``allowed`` at least: the tokens that stay inside one lexeme, grouped
        by the bitset of terminals alive after them (``(bits, row)`` pairs), and per terminal
        the node set (:meth:`_node_set`) where a lexeme of it ends with the token going on.
        Cached; one trie walk covers every terminal the key may be asked for (those that can
        follow the terminal whose lexemes end there), another walks any asked for later."""
        hit = self._pieces.get(key)
        if hit is None:
            want = self._want[key] | allowed
            hit = self._pieces[key] = (want, *self._walk(key, want))
        elif allowed & ~hit[0]:
            missing = allowed & ~hit[0]
            groups, ends = self._walk(key, missing)
            hit = self._pieces[key] = (hit[0] | missing, hit[1] + groups, {**hit[2], **ends})
        return hit[1], hit[2]

    def level(self, key: int, allowed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Cached per ``(key, allowed)``: the OR of the pieces of the allowed terminals, and the
        allowed terminals whose lexemes may end inside a token (where the parser is needed),
        with the key of the trie nodes where they end. ``key = ~q`` is the trie root in lexer
        state ``q`` (pieces per terminal state, :meth:`terminal_piece`); ``key >= 0`` a node set
        at the lexer start (:meth:`pieces`)."""
        hit = self._levels.get((key, allowed))
        if hit is None:
            row = np.zeros(self.words, dtype=np.uint32)
            crossing: list[tuple[int, int]] = []
            if key < 0:  # the trie root in lexer state q: each terminal's own piece
                q = ~key
                lx = self.lexer
                comp = self._components[q]
                terms = bit_list(allowed & lx.alive[q])
                todo = [g for g in (self._offs[t] + comp[t] for t in terms)
                        if not self._term_done[g]]
                if len(todo) > 1:  # their rows in one trie walk
                    self.compute_terminal_rows(np.array(todo, dtype=np.int64))
                for t in terms:
                    r, ends = self.terminal_piece(t, comp[t])
                    row |= r
                    if ends is not None:
                        crossing.append((t, ends))
                # a lexeme that ends before the token: the next one starts at the root
                crossing.extend((t, ~0) for t in bit_list(allowed & lx.accepts[q]))
            else:
                groups, ends = self.pieces(key, allowed)
                for bits, r in groups:
                    if bits & allowed:
                        row |= r
                crossing.extend((t, k) for t, k in ends.items() if (allowed >> t) & 1)
            hit = self._levels[(key, allowed)] = (row, crossing)
        return hit

    def _fill_from(self, col: Column, key: int, out: np.ndarray, *,
                   top: bool = False) -> frozenset[int] | set[int]:
        """OR into ``out`` the tokens allowed from ``col`` below node set / lexer state ``key``.
        Returns the ids of the columns outside this subtree (before ``col``) whose items were
        completed on the way (a superset, after a cache hit).

        The rows are kept per ``(col.signature(d), key)``: they depend on ``col``'s items and
        on the items of the columns ``d`` origin links back, where ``d`` is how far back the
        reading completed items (0 when nothing before ``col`` completes: the core alone). ``d``
        is a property of the signature itself, so per ``(core, key)`` the largest ``d`` seen so
        far is kept (``_need``) and every lookup uses it: a later column whose context is
        equally deep reuses the rows without any Earley step (a token of 64 ``-`` under nested
        unary minus is read once, not at every expression; ``"},`` inside a JSON value once
        per nesting pattern). Past :data:`MAX_CONTEXT_DEPTH` nothing is kept. ``top``: the
        caller does not need the returned ids (an empty set may come back)."""
        row, crossing = self.level(key, col.expected)
        if not crossing:
            out |= row
            return _NO_IDS
        ck = (col.signature(0), key)
        need = self._need.get(ck, 0)
        if need >= 0:
            hit = self._subtrees.get((col.signature(need), key))
            if hit is not None:
                out |= hit[0]
                # the columns it completed lie within the depth it needed (a superset of them)
                return col.ancestors(hit[1]) if hit[1] and not top else _NO_IDS
        sub = row.copy()
        outside = self._crossing_into(col, crossing, sub, row)
        out |= sub
        if need < 0:
            return outside
        depth = col.depth_of(outside, MAX_CONTEXT_DEPTH) if outside else 0
        if depth > MAX_CONTEXT_DEPTH:
            self._need[ck] = -1
            return outside
        if depth > need:
            need = self._need[ck] = depth
        if len(self._subtrees) >= self._max_subtrees:
            for k in list(self._subtrees)[: len(self._subtrees) // 2]:  # oldest half
                del self._subtrees[k]
        self._subtrees[(col.signature(need), key)] = (sub, depth)
        return outside

    def _crossing_into(self, col: Column, crossing: list[tuple[int, int]], out: np.ndarray,
                       row: np.ndarray) -> set[int]:
        """``_fill_from``'s body: ``row`` and the tokens that cross into the next lexemes.

        The column after a crossing terminal is built only when needed: a scan that completes
        no item started before ``col`` gives a column whose core and expected terminals depend
        on ``col``'s core alone, remembered per ``(core, terminal)`` (``_pure_scans``); when the
        rows below it then need no further crossing, or are kept for that core, no Earley step
        is taken."""
        out |= row
        outside: set[int] = set()
        c0 = col.signature(0)
        for t, ends in crossing:
            hit = self._pure_scans.get((c0, t))
            if hit is not None:
                core2, expected2 = hit
                row2, crossing2 = self.level(ends, expected2)
                if not crossing2:
                    out |= row2
                    continue
                if self._need.get((core2, ends), 0) == 0:
                    kept = self._subtrees.get((core2, ends))
                    if kept is not None:
                        out |= kept[0]
                        continue
            nxt = col.scan(t)
            if nxt is None:
                continue
            pops = col.pops(t)
            if not pops:
                self._pure_scans[(c0, t)] = (nxt.signature(0), nxt.expected)
            outside |= pops
            below = self._fill_from(nxt, ends, out)
            if below:
                outside |= below
                outside.discard(id(col))
        return outside

    def fill(self, hyps: tuple[Hyp, ...], out: np.ndarray, *, accepting: bool) -> None:
        """Write the allowed-token row of ``hyps`` (uint32 words) into ``out``; EOS when
        ``accepting`` (``self.accepting(hyps)``)."""
        out[:] = 0
        for col, q in hyps:
            self._fill_from(col, ~q, out, top=True)
        if accepting:
            out |= self._eos_words


class CfgMatcher:
    """Incremental matcher of a context-free grammar; the same interface as
    :class:`grammars.compiled.Matcher` (see the module docstring for the semantics)."""

    __slots__ = ("_acc", "_g", "_hist", "_hyps", "_terminated")

    def __init__(self, compiled: CfgCompiledGrammar) -> None:
        self._g = compiled
        self._hyps: tuple[Hyp, ...] = ((start_column(compiled.cfg), 0),)
        self._hist: tuple | None = None
        self._terminated = False
        self._acc: bool | None = None  # is_accepting() of the current hypotheses, once asked

    # ---- queries ------------------------------------------------------------------------------
    def is_accepting(self) -> bool:
        if self._terminated:
            return False
        if self._acc is None:
            self._acc = self._g.accepting(self._hyps)
        return self._acc

    def is_terminated(self) -> bool:
        return self._terminated

    def is_error(self) -> bool:
        return not self._terminated and not self._hyps

    def _after(self, data: bytes) -> tuple[Hyp, ...]:
        hyps = self._hyps
        g = self._g
        for b in data:
            hyps = g.step(hyps, b)
            if not hyps:
                break
        return hyps

    def _after_token(self, token_id: int) -> tuple[Hyp, ...]:
        """The hypotheses after a text token's bytes; ``()`` when it is refused (dead, empty,
        special or out of range). EOS is not a text token: the callers handle it first."""
        g = self._g
        if not 0 <= token_id < len(g.vocab.tokens) or g.vocab.special[token_id]:
            return ()
        tok = g.vocab.tokens[token_id]
        return self._after(tok) if tok else ()

    def check_token(self, token_id: int) -> bool:
        if self._terminated:
            return False
        if token_id in self._g._eos:
            return self.is_accepting()
        return bool(self._after_token(token_id))

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> None:
        g = self._g
        dst = bitmask_row(bitmask, row, g.words)
        words = dst if dst is not None else np.zeros(g.words, dtype=np.uint32)
        if self._terminated:
            words[:] = 0
        else:
            g.fill(self._hyps, words, accepting=self.is_accepting())
        if dst is None:
            write_bitmask_row(bitmask, row, words)

    def forced_bytes(self) -> bytes:
        """Bytes the grammar forces next: none are computed on this path (always ``b""``)."""
        return b""

    # ---- updates ------------------------------------------------------------------------------
    def accept_token(self, token_id: int) -> bool:
        if self._terminated:
            return False
        if token_id in self._g._eos:
            if not self.is_accepting():
                return False
            self._hist = (self._hyps, self._terminated, self._hist)
            self._terminated = True
            return True
        hyps = self._after_token(token_id)  # read once: not check_token's walk and then again
        if not hyps:
            return False
        self._hist = (self._hyps, self._terminated, self._hist)
        self._hyps = hyps
        self._acc = None
        return True

    def accept_bytes(self, data: bytes) -> bool:
        if self._terminated:
            return False
        hyps = self._after(data)
        if not hyps:
            return False
        self._hist = (self._hyps, self._terminated, self._hist)
        self._hyps = hyps
        self._acc = None
        return True

    def accept_string(self, text: str) -> bool:
        return self.accept_bytes(text.encode("utf-8"))

    def rollback(self, n_tokens: int = 1) -> None:
        for _ in range(n_tokens):
            if self._hist is None:
                raise ValueError("cannot roll back past the start")
            self._hyps, self._terminated, self._hist = self._hist
            self._acc = None

    def reset(self) -> None:
        self._hyps = ((start_column(self._g.cfg), 0),)
        self._acc = None
        self._hist = None
        self._terminated = False

    def fork(self) -> CfgMatcher:
        m = CfgMatcher.__new__(CfgMatcher)
        m._g = self._g
        m._hyps = self._hyps
        m._acc = self._acc
        m._hist = self._hist
        m._terminated = self._terminated
        return m


def compile_cfg(grammar: Grammar, vocab: Vocabulary, *, max_states: int) -> CfgCompiledGrammar:
    """Lower ``grammar`` (recursive rules) to a CFG, build its lexer, and wrap both."""
    from grammars.cfg import rules_to_cfg
    from grammars.lexer import build_lexer

    t0 = time.perf_counter()
    plain_tokens(vocab)  # per vocabulary, once: at its first compile rather than in a mask
    cfg = rules_to_cfg(grammar.rules, max_states=max_states)
    lexer = build_lexer(cfg.terminals, max_states=max_states)
    start_column(cfg)
    out = CfgCompiledGrammar(grammar, vocab, cfg, lexer)
    if cfg.terminals:
        if SERIAL_ROWS < len(out._stacked) <= EAGER_TERMINAL_STATES:
            out.compute_terminal_rows()
        out.warm_up()
    out.compile_seconds = time.perf_counter() - t0
    return out
