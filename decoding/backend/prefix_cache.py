"""A KV prefix cache: a radix trie of token segments holding their keys and values.

Sequences that share a prefix (one long document, N SMC particles, repeated calls with different
schemas) store and compute that prefix once, as in vLLM's automatic prefix caching and SGLang's
RadixAttention (Zheng et al. 2024), over variable-length segments rather than fixed blocks.

**Structure.** Each :class:`KVNode` is an edge of the trie: a run of tokens (``tokens``), the
absolute position of its first token (``start``), and one tensor ``buf`` of shape ``(layers, 2,
kv_heads, capacity, head_dim)`` whose first ``length`` slots hold the run's keys (``[:, 0]``) and
values (``[:, 1]``), RoPE already applied. A sequence is the path from the root; its KV is the
concatenation of its nodes' KV, which attention reads in place (``decoding.backend.attention``),
so no sequence ever owns a private copy of a shared prefix.

**Contracts.**

- :meth:`PrefixCache.match` finds the longest cached prefix of a token sequence and returns its
  path of *whole* nodes: a node matched only in part is split at the divergence point. Splitting
  copies nothing (both halves are views of the node's tensor).
- :meth:`PrefixCache.insert` adds the KV of ``tokens[start:]`` after the cached ``tokens[:start]``.
  A leaf node is extended in place when it has room (or is short: amortized doubling of its
  capacity; a long full leaf, e.g. a prompt, gets a child instead of a copy); a node that already has
  children, or that another branch diverges from, is never written again: the new tokens become
  a new child (copy-on-write at segment granularity: the shared part stays, the divergent part is
  new). Tokens already cached are not stored twice.
- Forking a sequence is free: a fork is the same token prefix, found by :meth:`match`.
- ``node.logits``: the model's next-token logits after the node's last token, when known (so a
  sequence whose every token is cached costs no forward pass). Extending the node clears them.
- :meth:`PrefixCache.evict` drops least-recently-used leaves until the bytes held are within
  ``memory_budget`` (never a node on the path of the call in progress: eviction runs between
  calls). Bytes are counted per underlying tensor storage, so views of one storage count once.
- :attr:`PrefixCache.stats`: lookups, hits, tokens requested / reused / inserted, evictions,
  bytes and nodes held.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CacheStats", "KVNode", "Match", "PrefixCache"]

#: Initial capacity (tokens) of a node that will grow by single-token appends.
MIN_CAPACITY = 16
#: A full leaf shorter than this is reallocated (capacity doubled) to grow in place; a longer
#: one (a long prompt) is never copied: the new tokens become its child.
GROW_IN_PLACE = 256


class KVNode:
    """One trie edge: ``tokens`` at positions ``start .. start+length-1`` and their KV."""

    __slots__ = (
        "__weakref__",
        "buf",
        "children",
        "last_access",
        "length",
        "logits",
        "parent",
        "start",
        "tokens",
    )

    def __init__(self, tokens: list[int], start: int, parent: KVNode | None, buf: Any) -> None:
        self.tokens = tokens
        self.start = start
        self.parent = parent
        self.children: dict[int, KVNode] = {}
        self.buf = buf
        self.length = len(tokens)
        self.logits: Any = None
        self.last_access = 0

    @property
    def end(self) -> int:
        """Absolute position after the node's last token."""
        return self.start + self.length

    @property
    def capacity(self) -> int:
        return 0 if self.buf is None else int(self.buf.shape[3])

    def keys(self, layer: int) -> Any:
        """``(kv_heads, length, head_dim)`` view of the keys of ``layer``."""
        return self.buf[layer, 0, :, : self.length]

    def values(self, layer: int) -> Any:
        return self.buf[layer, 1, :, : self.length]

    def __repr__(self) -> str:
        return f"KVNode(start={self.start}, length={self.length}, children={len(self.children)})"


@dataclass
class Match:
    """The longest cached prefix of a sequence: ``path`` (root excluded) covers ``length`` tokens."""

    path: list[KVNode]
    length: int

    @property
    def last(self) -> KVNode | None:
        return self.path[-1] if self.path else None


@dataclass
class CacheStats:
    """Counters since creation (or :meth:`PrefixCache.reset_stats`)."""

    lookups: int = 0
    hits: int = 0
    tokens_requested: int = 0
    tokens_reused: int = 0
    tokens_inserted: int = 0
    logits_reused: int = 0
    evictions: int = 0
    evicted_tokens: int = 0
    bytes_held: int = 0
    peak_bytes: int = 0
    nodes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.tokens_reused / self.tokens_requested if self.tokens_requested else 0.0


class PrefixCache:
    """The trie (see the module docstring). ``memory_budget``: bytes of KV (and cached logits)
    to keep between calls; None keeps everything."""

    def __init__(
        self,
        *,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: Any,
        device: Any = "cpu",
        memory_budget: int | None = None,
    ) -> None:
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = device
        self.memory_budget = memory_budget
        self.root = KVNode([], 0, None, None)
        self._clock = itertools.count(1)
        self._storages: dict[int, list[int]] = {}  # data_ptr -> [nbytes, node refs]
        self._logit_bytes = 0
        self.stats = CacheStats()

    # ---- bookkeeping ----------------------------------------------------------------------------
    @property
    def bytes_held(self) -> int:
        return sum(v[0] for v in self._storages.values()) + self._logit_bytes

    def _ref(self, buf: Any, delta: int) -> None:
        storage = buf.untyped_storage()
        ptr = storage.data_ptr()
        entry = self._storages.get(ptr)
        if entry is None:
            entry = self._storages[ptr] = [storage.nbytes(), 0]
        entry[1] += delta
        if entry[1] <= 0:
            del self._storages[ptr]

    def _set_buf(self, node: KVNode, buf: Any) -> None:
        if node.buf is not None:
            self._ref(node.buf, -1)
        node.buf = buf
        if buf is not None:
            self._ref(buf, +1)

    def _set_logits(self, node: KVNode, logits: Any) -> None:
        if node.logits is not None:
            self._logit_bytes -= node.logits.numel() * node.logits.element_size()
        node.logits = logits
        if logits is not None:
            self._logit_bytes += logits.numel() * logits.element_size()

    def _update_stats(self) -> None:
        held = self.bytes_held
        self.stats.bytes_held = held
        self.stats.peak_bytes = max(self.stats.peak_bytes, held)

    def reset_stats(self) -> None:
        nodes = self.stats.nodes
        self.stats = CacheStats(nodes=nodes)
        self._update_stats()

    def _alloc(self, capacity: int) -> Any:
        import torch

        return torch.empty(
            (self.num_layers, 2, self.num_kv_heads, capacity, self.head_dim),
            dtype=self.dtype,
            device=self.device,
        )

    def nodes(self) -> list[KVNode]:
        """Every node but the root (depth first)."""
        out: list[KVNode] = []
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out

    # ---- lookups --------------------------------------------------------------------------------
    def _split(self, node: KVNode, at: int) -> KVNode:
        """Split ``node`` after its first ``at`` tokens; returns the head (the tail keeps the
        children and the logits). No tensor is copied: both halves view ``node.buf``."""
        assert 0 < at < node.length
        parent = node.parent
        assert parent is not None
        head = KVNode(node.tokens[:at], node.start, parent, None)
        self._set_buf(head, node.buf[:, :, :, :at])
        head.last_access = node.last_access
        parent.children[head.tokens[0]] = head
        tail_buf = node.buf[:, :, :, at:]
        node.tokens = node.tokens[at:]
        node.start += at
        node.length -= at
        self._set_buf(node, tail_buf)
        node.parent = head
        head.children[node.tokens[0]] = node
        self.stats.nodes += 1
        return head

    def match(self, tokens: Sequence[int], *, count: bool = True) -> Match:
        """The longest cached prefix of ``tokens`` as whole nodes (splitting one if needed)."""
        now = next(self._clock)
        node, pos, path = self.root, 0, []
        n = len(tokens)
        while pos < n:
            child = node.children.get(tokens[pos])
            if child is None:
                break
            run = child.tokens
            k = min(len(run), n - pos)
            if run[:k] == list(tokens[pos : pos + k]):
                common = k
            else:
                common = 0
                while common < k and run[common] == tokens[pos + common]:
                    common += 1
            if common < len(run):
                if common == 0:
                    break
                child = self._split(child, common)
            child.last_access = now
            path.append(child)
            pos += common
            node = child
            if common < len(run):
                break
        if count:
            self.stats.lookups += 1
            self.stats.tokens_requested += n
            self.stats.tokens_reused += pos
            if pos:
                self.stats.hits += 1
        return Match(path, pos)

    # ---- insertion ------------------------------------------------------------------------------
    def insert(self, tokens: Sequence[int], start: int, kv: Any, *, reserve: int = 0) -> KVNode:
        """Store ``kv`` (``(layers, 2, kv_heads, len(tokens) - start, head_dim)``), the KV of
        ``tokens[start:]``, after the cached prefix ``tokens[:start]``; returns the node that
        ends at ``len(tokens)``. ``reserve``: expected final length of this branch past
        ``start`` (capacity hint). Raises ``KeyError`` when ``tokens[:start]`` is not cached."""
        n = len(tokens)
        if kv.shape[3] != n - start:
            raise ValueError(f"kv holds {kv.shape[3]} positions for {n - start} tokens")
        m = self.match(tokens[:start], count=False)
        if m.length != start:
            raise KeyError(f"prefix of {start} tokens is not cached (only {m.length})")
        node = m.last or self.root
        pos = start
        now = next(self._clock)
        while pos < n:
            child = node.children.get(tokens[pos])
            if child is not None:  # already cached (a duplicate row): keep the existing KV
                run = child.tokens
                common = 0
                k = min(len(run), n - pos)
                while common < k and run[common] == tokens[pos + common]:
                    common += 1
                if common < len(run):
                    child = self._split(child, common)
                child.last_access = now
                node = child
                pos += common
                continue
            new_kv = kv[:, :, :, pos - start :]
            count = n - pos
            if (
                node is not self.root
                and not node.children
                and (node.length + count <= node.capacity or node.length < GROW_IN_PLACE)
            ):
                self._append(node, list(tokens[pos:]), new_kv, reserve=reserve - (pos - start))
            else:
                cap = max(count, reserve - (pos - start))
                if cap > count and cap < MIN_CAPACITY:
                    cap = MIN_CAPACITY
                buf = self._alloc(cap)
                buf[:, :, :, :count] = new_kv
                child = KVNode(list(tokens[pos:]), pos, node, None)
                self._set_buf(child, buf)
                child.length = count
                node.children[child.tokens[0]] = child
                self.stats.nodes += 1
                node = child
            node.last_access = now
            self.stats.tokens_inserted += count
            pos = n
        self._update_stats()
        return node

    def _append(self, node: KVNode, tokens: list[int], kv: Any, *, reserve: int) -> None:
        count = len(tokens)
        need = node.length + count
        if need > node.capacity:
            cap = max(need, 2 * node.length, node.length + reserve, MIN_CAPACITY)
            buf = self._alloc(cap)
            buf[:, :, :, : node.length] = node.buf[:, :, :, : node.length]
            self._set_buf(node, buf)
        node.buf[:, :, :, node.length : need] = kv
        node.tokens.extend(tokens)
        node.length = need
        self._set_logits(node, None)

    def set_logits(self, node: KVNode, logits: Any) -> None:
        """Remember the next-token logits after ``node``'s last token."""
        self._set_logits(node, logits)
        self._update_stats()

    # ---- eviction -------------------------------------------------------------------------------
    def _remove(self, node: KVNode) -> None:
        parent = node.parent
        assert parent is not None and not node.children
        del parent.children[node.tokens[0]]
        self._set_buf(node, None)
        self._set_logits(node, None)
        node.parent = None
        self.stats.nodes -= 1
        self.stats.evictions += 1
        self.stats.evicted_tokens += node.length

    def evict(self, budget: int | None = None) -> int:
        """Drop least-recently-used leaves until at most ``budget`` bytes (default:
        ``memory_budget``) are held; returns the bytes freed."""
        budget = self.memory_budget if budget is None else budget
        if budget is None:
            return 0
        before = self.bytes_held
        if before <= budget:
            return 0
        heap = [(n.last_access, id(n), n) for n in self.nodes() if not n.children]
        heapq.heapify(heap)
        held = before
        while heap and held > budget:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            self._remove(node)
            held = self.bytes_held
            if parent is not None and parent is not self.root and not parent.children:
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        self._update_stats()
        return before - held

    def clear(self) -> None:
        """Drop everything."""
        for node in self.nodes():
            node.buf = None
            node.logits = None
        self.root.children.clear()
        self._storages.clear()
        self._logit_bytes = 0
        self.stats.nodes = 0
        self._update_stats()
