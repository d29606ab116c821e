"""Compiled grammars (token automata) and the Matcher that drives them.

A ``CompiledGrammar`` pairs a trimmed byte DFA with a vocabulary. Its token automaton is the table
``masks[state]``: the bitmask row of tokens whose bytes the DFA can read from ``state`` (plus the
EOS ids where ``state`` accepts). Rows are computed by walking the flat token trie through the DFA
(numba); all rows are computed at compile time for automata up to ``eager_states`` states and on
first use beyond that, so a mask fill is a row copy.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grammars.automaton import DEFAULT_MAX_STATES, Dfa, NotRegularError, build_dfa, gc_paused
from grammars.errors import GrammarTooLargeError, InvalidGrammarError, UnsupportedSchemaError  # noqa: F401
from grammars.grammar import Grammar
from grammars.reach import forced_bytes
from grammars.tokenwalk import (
    entry_bytes,
    fill_rows,
    loop_like,
    walk_bytes,
    walk_token,
    walk_tokens,
)
from grammars.vocab import Vocabulary
from kernels.bitmask import write_bitmask_row

__all__ = ["CompiledGrammar", "Matcher", "cache_dir", "clear_cache", "compile"]

_CACHE_VERSION = "1"
#: Seconds ``compile`` may take by default (``timeout=None``: no limit).
DEFAULT_TIMEOUT = 10.0
_MEMORY_CACHE: dict[tuple[str, str], CompiledGrammar] = {}
_DFA_CACHE: dict[str, Dfa] = {}  # byte DFAs are vocabulary-independent
_LOCK = threading.Lock()


def cache_dir() -> Path | None:
    """On-disk cache folder (``$STRUCTURED_DECODING_CACHE``, default ~/.cache/structured-decoding;
    set the variable to an empty string to disable the disk cache)."""
    env = os.environ.get("STRUCTURED_DECODING_CACHE")
    if env == "":
        return None
    return Path(env) if env else Path.home() / ".cache" / "structured-decoding"


def clear_cache(*, disk: bool = False) -> None:
    """Drop the in-memory caches: compiled grammars, and the pieces lowering reuses across
    grammars (lowered regexes, JSON string automata); and the disk cache with ``disk=True``.
    Benchmarks call it before each timed compile so that no compile reuses another's work."""
    from grammars import json_schema, regex

    with _LOCK:
        _MEMORY_CACHE.clear()
        _DFA_CACHE.clear()
    regex.clear_cache()
    json_schema.clear_cache()
    d = cache_dir()
    if disk and d is not None and d.exists():
        for f in d.glob("*.npz"):
            f.unlink()


#: ``Matcher.few_allowed_tokens`` lists a state's allowed tokens when there are at most this many.
FEW_TOKENS = 16


@dataclass(eq=False)
class CompiledGrammar:
    """A grammar compiled against a vocabulary. Create with :func:`compile`."""

    grammar: Grammar
    vocab: Vocabulary
    dfa: Dfa
    compile_seconds: float = 0.0
    masks: np.ndarray = field(init=False, repr=False)
    _done: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        words = (self.vocab.size + 31) // 32
        n = self.dfa.n_states
        self.masks = np.zeros((n, words), dtype=np.uint32)
        self._done = np.zeros(n, dtype=bool)
        self._eos_words = np.zeros(words, dtype=np.uint32)
        for e in self.vocab.eos_token_ids:
            self._eos_words[e >> 5] |= np.uint32(1 << (e & 31))
        self._token_data, self._token_offsets = self.vocab.token_offsets
        self._trans = self.dfa.trans
        self._accepting = self.dfa.accepting
        self._eos = frozenset(self.vocab.eos_token_ids)
        self._special = self.vocab.special
        self._torch_masks: Any = None
        self._loop_states: np.ndarray | None = None
        self._few: dict[int, tuple[int, ...] | None] = {}  # state -> few_allowed_tokens
        self._forced_byte = forced_bytes(self._trans, self._accepting)

    @property
    def n_states(self) -> int:
        return self.dfa.n_states

    def compute_masks(self, states: np.ndarray | None = None) -> None:
        """Compute the mask rows of ``states`` (default: all) that are not computed yet."""
        todo = np.nonzero(~self._done)[0] if states is None else np.unique(np.asarray(states))
        todo = todo[~self._done[todo]]
        if len(todo) == 0:
            return
        # most of a schema's expensive states are string-body loops (an undeclared property name,
        # a string after its first character) or enter one: dfa_token_rows skips their walks
        dfa_token_rows(self._trans, todo, self.vocab, self._loops(), self.masks)
        acc = todo[self._accepting[todo]]
        self.masks[acc] |= self._eos_words
        self._done[todo] = True

    def _loops(self) -> np.ndarray:
        """Per state: whether it reads every plain JSON string-body byte sequence the way the
        canonical body loop does (:func:`grammars.tokenwalk.loop_like`; computed once)."""
        if self._loop_states is None:
            self._loop_states = string_loop_states(self._trans)
        return self._loop_states

    def mask_row(self, state: int) -> np.ndarray:
        if not self._done[state]:
            self.compute_masks(np.array([state]))
        return self.masks[state]

    def matcher(self) -> Matcher:
        return Matcher(self)

    def few_allowed_tokens(self, state: int) -> tuple[int, ...] | None:
        """The allowed token ids of ``state`` (EOS included when accepting) if its mask row is
        already computed and has at most :data:`FEW_TOKENS` tokens; else None (cached per state)."""
        if not self._done[state]:
            return None
        if state not in self._few:
            bits = np.unpackbits(self.masks[state].view(np.uint8), bitorder="little")
            ids = np.flatnonzero(bits)
            self._few[state] = tuple(int(t) for t in ids) if len(ids) <= FEW_TOKENS else None
        return self._few[state]

    # token-level helpers used by Matcher
    def next_state(self, state: int, token: int) -> int:
        if self._special[token]:
            return -1
        return int(walk_token(self._trans, state, self._token_data, self._token_offsets, token))

    def token_transitions(self) -> np.ndarray:
        """Dense int32 table (n_states, vocab.size): the state after each token (-1: not
        allowed; EOS and special tokens are -1 too: sampling EOS ends the sequence). Together
        with ``masks`` this is the device-resident form of a regular constraint (kernels'
        ``fill_bitmask_from_dfa_states`` / ``advance_dfa_states``). Memory: 4 * states * vocab
        bytes, so meant for small automata."""
        from grammars.tokenwalk import token_table

        out = np.empty((self.n_states, self.vocab.size), dtype=np.int32)
        token_table(self._trans, self._token_data, self._token_offsets, self._special, out)
        return out

    def torch_masks(self) -> Any:
        import torch

        if self._torch_masks is None:
            self.compute_masks()
            self._torch_masks = torch.from_numpy(self.masks.view(np.int32))
        return self._torch_masks


class Matcher:
    """Incremental matcher over one compiled grammar.

    ``accept_token`` / ``accept_bytes`` advance (returning False, state unchanged, on a token the
    grammar does not allow); ``check_token`` answers without changing state; ``rollback(n)`` undoes
    the last n accepted tokens; ``fork()`` is an O(1) copy (history is a persistent linked list).
    EOS is allowed exactly when ``is_accepting()``; accepting it terminates the matcher.
    """

    __slots__ = ("_g", "_hist", "_state", "_terminated")

    def __init__(self, compiled: CompiledGrammar) -> None:
        self._g = compiled
        self._state = 0
        self._hist: tuple | None = None
        self._terminated = False

    # ---- queries ------------------------------------------------------------------------------
    @property
    def state(self) -> int:
        return self._state

    def is_accepting(self) -> bool:
        return not self._terminated and bool(self._g._accepting[self._state])

    def is_terminated(self) -> bool:
        return self._terminated

    def is_error(self) -> bool:
        """True when no token (EOS included) can follow: a dead end for this vocabulary."""
        if self._terminated:
            return False
        return not self._g.mask_row(self._state).any()

    def check_token(self, token_id: int) -> bool:
        if self._terminated:
            return False
        g = self._g
        if token_id in g._eos:
            return bool(g._accepting[self._state])
        if not 0 <= token_id < g.vocab.size:
            return False
        if g._done[self._state]:
            return bool((g.masks[self._state, token_id >> 5] >> (token_id & 31)) & 1)
        return g.next_state(self._state, token_id) >= 0

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> None:
        """Write the allowed-token row into ``bitmask[row]`` (torch int32 tensor or numpy array)."""
        g = self._g
        if self._terminated:
            bitmask[row] = 0
            return
        write_bitmask_row(bitmask, row, g.mask_row(self._state))

    def few_allowed_tokens(self) -> tuple[int, ...] | None:
        """The allowed token ids when the state's mask row is already known and lists at most
        ``FEW_TOKENS`` tokens (EOS included when accepting); None otherwise. Free to call: it
        never computes a mask (see ``samplers.protocols.Matcher``)."""
        if self._terminated:
            return ()
        return self._g.few_allowed_tokens(self._state)

    def forced_bytes(self) -> bytes:
        """Bytes the grammar forces next (jump-forward text), without changing state."""
        if self._terminated:
            return b""
        fb = self._g._forced_byte
        trans = self._g._trans
        out = bytearray()
        s = self._state
        while fb[s] >= 0 and len(out) < 4096:
            out.append(int(fb[s]))
            s = int(trans[s, fb[s]])
        return bytes(out)

    # ---- updates ------------------------------------------------------------------------------
    def accept_token(self, token_id: int) -> bool:
        if self._terminated:
            return False
        g = self._g
        if token_id in g._eos:
            if not g._accepting[self._state]:
                return False
            self._hist = (self._state, self._hist)
            self._terminated = True
            return True
        if not 0 <= token_id < g.vocab.size:
            return False
        nxt = g.next_state(self._state, token_id)
        if nxt < 0:
            return False
        self._hist = (self._state, self._hist)
        self._state = nxt
        return True

    def accept_bytes(self, data: bytes) -> bool:
        """Advance over raw bytes (may end inside a token). Counts as one step for rollback."""
        if self._terminated:
            return False
        nxt = int(walk_bytes(self._g._trans, self._state, np.frombuffer(data, dtype=np.uint8)))
        if nxt < 0:
            return False
        self._hist = (self._state, self._hist)
        self._state = nxt
        return True

    def accept_string(self, text: str) -> bool:
        return self.accept_bytes(text.encode("utf-8"))

    def rollback(self, n_tokens: int = 1) -> None:
        for _ in range(n_tokens):
            if self._hist is None:
                raise ValueError("cannot roll back past the start")
            self._state, self._hist = self._hist
            self._terminated = False

    def reset(self) -> None:
        self._state = 0
        self._hist = None
        self._terminated = False

    def fork(self) -> Matcher:
        m = Matcher.__new__(Matcher)
        m._g = self._g
        m._state = self._state
        m._hist = self._hist
        m._terminated = self._terminated
        return m


def _disk_path(key: tuple[str, str]) -> Path | None:
    d = cache_dir()
    if d is None:
        return None
    return d / f"v{_CACHE_VERSION}-{key[0][:24]}-{key[1][:16]}.npz"


def compile(
    grammar: Grammar,
    vocab: Vocabulary,
    *,
    max_states: int = DEFAULT_MAX_STATES,
    eager_states: int = 20_000,
    cache: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CompiledGrammar:
    """Compile ``grammar`` against ``vocab`` into a token automaton.

    Cached in memory and on disk, keyed by the grammar's and the vocabulary's fingerprints. Raises
    ``GrammarError`` subclasses (typed, at compile time): ``EmptyLanguageError`` when nothing
    matches, ``GrammarTooLargeError`` past ``max_states`` DFA states and its subclass
    ``CompileTimeoutError`` past ``timeout`` seconds (a JSON Schema grammar then falls back, after
    60% of the time limit counted from the start of its lowering, to any value of its root types,
    exact through its checks). A JSON Schema grammar with
    semantic checks (``grammar.semantic``, see :mod:`grammars.json_semantic`) comes back as a
    ``CheckedCompiledGrammar`` whose matchers run them.
    """
    warm_kernels()
    with gc_paused():
        return _compile(grammar, vocab, max_states=max_states, eager_states=eager_states,
                        cache=cache, timeout=timeout)


_KERNELS_READY: list[bool] = []
_WARM_LOCK = threading.Lock()


def warm_kernels() -> None:
    """Compile every numba kernel that compiling a grammar and filling its masks use (or load them
    from numba's on-disk cache), once per process, by compiling a small regular grammar and a
    small context-free one over the byte vocabulary with no time limit and filling their first
    masks. On a fresh checkout this takes ~25 s of JIT compilation, which must neither count
    against a grammar's time limit (it once pushed a small JSON Schema past it, onto its
    fallback) nor show up as that grammar's compile time; with numba's cache it takes ~0.6 s.
    Threads that compile at once wait for the first one's warm-up."""
    with _WARM_LOCK:
        if _KERNELS_READY:
            return
        import torch

        vocab = Vocabulary.byte_level()
        bitmask = torch.zeros(1, (vocab.size + 31) // 32, dtype=torch.int32)
        # one regular grammar under tokenwalk.SERIAL_ROWS states and one over (serial and
        # parallel token rows), and tables large enough to grow
        for g in (Grammar.from_regex("a[0-9]{1,3}(b|cd)*"), Grammar.from_regex("a(b|cd)*x{0,200}"),
                  Grammar.from_lark('start: "(" start ")" | "a" start? | NUM | NAME\n'
                                    'NUM: /[0-9]+/\nNAME: /[a-z]{1,200}/')):
            m = _compile(g, vocab, max_states=DEFAULT_MAX_STATES, eager_states=20_000,
                         cache=False, timeout=None).matcher()
            m.fill_next_token_bitmask(bitmask, 0)
            m.accept_token(ord("a"))
            m.fill_next_token_bitmask(bitmask, 0)
        _KERNELS_READY.append(True)


def _compile(grammar: Grammar, vocab: Vocabulary, *, max_states: int, eager_states: int,
             cache: bool, timeout: float | None) -> CompiledGrammar:
    fallback = getattr(grammar, "fallback", None)
    t0 = time.perf_counter()
    # the time limit covers the JSON Schema's lowering too; it keeps 40% for its fallback grammar
    spent = getattr(grammar, "lowering_seconds", 0.0)
    if timeout is None or fallback is None:
        first = timeout
    else:
        first = 0.6 * timeout - spent
    try:
        if first is not None and first < 0.05 * timeout:
            raise GrammarTooLargeError("no time left after lowering the schema")
        inner = _compile_deep(grammar, vocab, max_states=max_states, eager_states=eager_states,
                              cache=cache, timeout=first)
    except GrammarTooLargeError:
        if fallback is None:
            raise
        grammar = fallback()  # a JSON Schema: a looser grammar, exact through the checks
        rest = None if timeout is None else max(0.5, timeout - spent - (time.perf_counter() - t0))
        inner = _compile_deep(grammar, vocab, max_states=max_states, eager_states=eager_states,
                              cache=cache, timeout=rest)
        inner.compile_seconds = time.perf_counter() - t0
    checks = getattr(grammar, "semantic", None)
    if checks is None:
        return inner
    from grammars.json_semantic import CheckedCompiledGrammar

    return CheckedCompiledGrammar(inner, checks, grammar)  # type: ignore[return-value]


def _compile_deep(grammar: Grammar, vocab: Vocabulary, *, timeout: float | None,
                  **kw: Any) -> CompiledGrammar:
    """``_compile_rules`` under the time limit; a grammar nested past Python's recursion limit is
    retried once on a thread with a deep stack, then reported as ``GrammarTooLargeError``."""
    from grammars.automaton import deadline

    def run() -> CompiledGrammar:
        with deadline(timeout):
            return _compile_rules(grammar, vocab, **kw)

    try:
        return run()
    except RecursionError:
        pass
    from grammars.deep import run_deep

    try:
        return run_deep(run)
    except RecursionError:
        raise GrammarTooLargeError("the grammar nests too deeply") from None


def _compile_rules(
    grammar: Grammar, vocab: Vocabulary, *, max_states: int, eager_states: int, cache: bool
) -> CompiledGrammar:
    """``compile`` without the semantic checks: the grammar's rules alone."""
    key = (grammar.fingerprint, vocab.fingerprint) if cache else ("", "")  # hashing costs ~1 ms
    if cache:
        with _LOCK:
            hit = _MEMORY_CACHE.get(key)
        if hit is not None:
            return hit
    t0 = time.perf_counter()
    path = _disk_path(key) if cache else None
    compiled: CompiledGrammar | None = None
    if path is not None and path.exists():
        try:
            with np.load(path) as z:
                dfa = Dfa(trans=z["trans"], accepting=z["accepting"])
                compiled = CompiledGrammar(grammar, vocab, dfa)
                compiled.masks[:] = z["masks"]
                compiled._done[:] = True
        except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt
            compiled = None
    if compiled is None:
        try:
            dfa = _DFA_CACHE.get(grammar.fingerprint) if cache else None
            if dfa is None:
                dfa = build_dfa(grammar.rules, max_states=max_states)
                if cache:
                    _DFA_CACHE[grammar.fingerprint] = dfa
        except NotRegularError:
            from grammars.cfg_matcher import compile_cfg

            cfg_compiled = compile_cfg(grammar, vocab, max_states=max_states)
            if cache:
                with _LOCK:
                    _MEMORY_CACHE[key] = cfg_compiled  # type: ignore[assignment]
            return cfg_compiled  # type: ignore[return-value]
        compiled = CompiledGrammar(grammar, vocab, dfa)
        if dfa.n_states <= eager_states:
            compiled.compute_masks()
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
                    np.savez(tmp, trans=dfa.trans, accepting=dfa.accepting, masks=compiled.masks)
                    os.replace(tmp, path)
                except OSError:
                    pass
    compiled.compile_seconds = time.perf_counter() - t0
    if cache:
        with _LOCK:
            _MEMORY_CACHE[key] = compiled
    return compiled


# printable ASCII except quote and backslash: plain string-body bytes that are whole characters
_ASCII_PLAIN = np.array([b for b in range(0x20, 0x80) if b not in (0x22, 0x5C)], dtype=np.int64)


@dataclass(frozen=True)
class _PlainTokens:
    mask: np.ndarray  # uint32 words: tokens readable inside an unbounded JSON string body
    other_trie: Any  # trie of every other token
    first_ptr: np.ndarray  # by first byte b: the plain tokens starting with plain ASCII byte b are
    first_ids: np.ndarray  # first_ids[first_ptr[b]:first_ptr[b + 1]]
    first_mask: np.ndarray  # uint32 words: all of first_ids


def string_loop_states(trans: np.ndarray) -> np.ndarray:
    """Per state of the byte DFA ``trans``: whether it reads every plain JSON string-body byte
    sequence the way the canonical body loop does (:func:`grammars.tokenwalk.loop_like`)."""
    return loop_like(trans, _canon_body().trans, _ASCII_PLAIN)


def dfa_token_rows(trans: np.ndarray, states: np.ndarray, vocab: Vocabulary, loops: np.ndarray,
                   out: np.ndarray) -> None:
    """OR into ``out[s]`` (uint32 words, zero on entry), for each of the distinct ``states``, the
    tokens whose whole bytes the DFA ``trans`` reads from ``s`` (EOS never). ``loops`` is
    :func:`string_loop_states` of ``trans``: inside an unbounded JSON string body every "plain"
    token (complete or partial plain UTF-8 characters) is readable, so only the few tokens with a
    quote, backslash or other byte need the trie walk, and states that enter such a loop on a
    plain ASCII byte get those tokens per first byte without one."""
    plain = plain_tokens(vocab)
    direct = entry_bytes(trans, states, loops, _ASCII_PLAIN)
    fill_rows(trans, states, loops[states], direct, plain.mask, plain.first_mask,
              plain.first_ptr, plain.first_ids, vocab.trie, plain.other_trie, out)


_PLAIN_CACHE: dict[str, _PlainTokens] = {}
_CANON_BODY: list[Dfa] = []


def _canon_body() -> Dfa:
    """DFA of plain JSON string body characters (no quote, backslash or control), looped."""
    if not _CANON_BODY:
        from grammars import charclass as cc
        from grammars.automaton import dfa_of
        from grammars.ir import star

        plain = cc.subtract(cc.ANY, ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)))
        _CANON_BODY.append(dfa_of(star(cc.utf8_node(plain))))
    return _CANON_BODY[0]


def plain_tokens(vocab: Vocabulary) -> _PlainTokens:
    """The vocabulary's plain JSON-string tokens, for :func:`dfa_token_rows` (cached per
    vocabulary: ~70 ms for SmolLM2's, mostly the subtrie of the other tokens; a compile asks for
    it so that no mask pays it)."""
    hit = _PLAIN_CACHE.get(vocab.fingerprint)
    if hit is not None:
        return hit
    canon = _canon_body()
    data, offsets = vocab.token_offsets
    n = len(vocab.tokens)
    ends = np.empty(n, dtype=np.int64)
    walk_tokens(canon.trans, 0, data, offsets, ends)
    plain = np.zeros(vocab.size, dtype=bool)
    plain[:n] = (ends >= 0) & ~np.asarray(vocab.special[:n], dtype=bool) & (
        offsets[1:n + 1] > offsets[:n])
    words = np.zeros((vocab.size + 31) // 32, dtype=np.uint32)
    ids = np.nonzero(plain)[0]
    np.bitwise_or.at(words, ids >> 5, (np.uint32(1) << (ids & 31).astype(np.uint32)))
    first = np.full(vocab.size, -1, dtype=np.int64)
    first[ids] = data[offsets[ids]]
    ascii_ids = ids[np.isin(first[ids], _ASCII_PLAIN)]
    ascii_ids = ascii_ids[np.argsort(first[ascii_ids], kind="stable")]
    first_ptr = np.zeros(257, dtype=np.int64)
    np.cumsum(np.bincount(first[ascii_ids], minlength=256), out=first_ptr[1:])
    first_mask = np.zeros_like(words)
    np.bitwise_or.at(first_mask, ascii_ids >> 5,
                     (np.uint32(1) << (ascii_ids & 31).astype(np.uint32)))
    out = _PlainTokens(mask=words, other_trie=vocab.subtrie(~plain), first_ptr=first_ptr,
                       first_ids=ascii_ids.astype(np.int64), first_mask=first_mask)
    _PLAIN_CACHE[vocab.fingerprint] = out
    return out
