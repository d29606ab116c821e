"""Batched next-token log-probabilities over a KV prefix cache, for any transformers causal LM.

:class:`BatchedLM` runs many token sequences through the model at once. Each call:

1. looks every distinct sequence up in the :class:`~decoding.backend.prefix_cache.PrefixCache`
   (identical sequences are computed once; a sequence whose every token and final logits are
   cached costs nothing);
2. packs the uncached suffixes of all sequences into one token row, positions restarting at each
   sequence's cached length, and cuts it into chunks of at most ``prefill_chunk`` tokens
   (chunked prefill: peak memory grows with ``chunk x context``, never with ``context^2``; a
   long suffix spans several chunks, a chunk may hold pieces of several sequences). This is
   prepacking (Zhao et al. 2024, "Prepacking: A Simple Method for Fast Prefilling and Increased
   Throughput in Large Language Models"): no padding token is ever computed, and each sequence
   sees only its own tokens (block-diagonal causal mask);
3. runs each chunk as one forward pass whose attention reads the cached prefixes in place
   (:mod:`decoding.backend.attention`), then stores the chunk's keys and values in the trie, so
   the next chunk, the next call, and every other sequence with that prefix reuse them.

So SMC's particles (all live particles in ONE call per step) share the prompt's KV entries and
their common generated prefixes; repeated calls over one document (different schemas) prefill
the document once. Past the model's trained length the LM-Infinite Lambda pattern applies
(``long_context``; :mod:`decoding.backend.lambda_attention`).

**Contract.** ``logits(seqs)[i]`` equals the model's next-token logits after ``seqs[i]`` as a
plain full recompute (one unpadded forward pass over the whole sequence) gives them, up to fp32
rounding (tests: max abs difference 1e-4), for every cache state, chunk size and batch mix, with
``long_context="none"``, or with "auto" while every sequence is within the trained length.
:class:`PromptedLM` implements ``samplers.protocols.LanguageModel``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from decoding.backend.attention import Segment, find_inv_freq, install, segmented_attention
from decoding.backend.lambda_attention import LambdaPattern, LongContext, resolve_pattern
from decoding.backend.prefix_cache import CacheStats, KVNode, PrefixCache

if TYPE_CHECKING:
    import torch

__all__ = ["BatchedLM", "PromptedLM"]

#: Nodes shorter than this are gathered into one key block per layer (a copy of a few tokens),
#: longer ones are read in place.
SMALL_NODE = 64


@dataclass
class _Row:
    seq: tuple[int, ...]
    done: int  # tokens whose KV is in the cache (the next piece starts here)
    score: bool = False
    logits: Any = None
    token_logprobs: Any = None

    @property
    def total(self) -> int:
        return len(self.seq)


class _Plan:
    """One packed chunk: its pieces' contexts (trie paths) and the new tokens' layout.

    The attention function calls :meth:`attend` once per layer (the ``decoding_plan`` keyword);
    it records the layer's new keys and values and attends over the context segments plus the
    chunk itself."""

    def __init__(
        self,
        paths: list[list[KVNode]],
        piece_lengths: list[int],
        positions: torch.Tensor,
        pattern: LambdaPattern | None,
        inv_freq: torch.Tensor | None,
        num_layers: int,
    ) -> None:
        import torch

        n = int(positions.shape[0])
        self.positions = positions
        self.pattern = pattern
        self.inv_freq = inv_freq
        self.new_kv: list[Any] = [None] * num_layers
        piece_of = torch.repeat_interleave(
            torch.arange(len(piece_lengths)), torch.tensor(piece_lengths)
        )
        # which pieces see which node
        owners: dict[int, tuple[KVNode, list[int]]] = {}
        for i, path in enumerate(paths):
            for node in path:
                owners.setdefault(id(node), (node, []))[1].append(i)
        self.big: list[tuple[KVNode, Any, Any]] = []
        small: list[tuple[KVNode, list[int]]] = []
        n_pieces = len(piece_lengths)
        for node, who in owners.values():
            if node.length >= SMALL_NODE:
                if len(who) == n_pieces:
                    vis = None
                else:
                    sel = torch.zeros(n_pieces, dtype=torch.bool)
                    sel[who] = True
                    vis = sel[piece_of][None, :, None]  # (1, n, 1)
                kpos = torch.arange(node.start, node.end)
                self.big.append((node, kpos, vis))
            else:
                small.append((node, who))
        self.small = [node for node, _ in small]
        if small:
            total = sum(node.length for node, _ in small)
            colmask = torch.zeros(n_pieces, total, dtype=torch.bool)
            kpos_parts, off = [], 0
            for node, who in small:
                colmask[who, off : off + node.length] = True
                kpos_parts.append(torch.arange(node.start, node.end))
                off += node.length
            self.small_vis = colmask[piece_of][None]  # (1, n, S)
            self.small_pos = torch.cat(kpos_parts)
        if n_pieces == 1:
            self.self_vis = None  # plain causal: the fused kernel skips the upper triangle
        else:
            idx = torch.arange(n)
            same = piece_of[:, None] == piece_of[None, :]
            self.self_vis = (same & (idx[None, :] <= idx[:, None]))[None]

    def attend(self, module: Any, q: Any, k: Any, v: Any, scaling: float) -> Any:
        import torch

        layer = module.layer_idx
        self.new_kv[layer] = (k[0], v[0])
        segs = []
        for node, kpos, vis in self.big:
            segs.append(Segment(node.keys(layer)[None], node.values(layer)[None], kpos, vis))
        if self.small:
            ks = torch.cat([node.keys(layer) for node in self.small], dim=1)[None]
            vs = torch.cat([node.values(layer) for node in self.small], dim=1)[None]
            segs.append(Segment(ks, vs, self.small_pos, self.small_vis, sorted_positions=False))
        causal = self.self_vis is None
        segs.append(
            Segment(k, v, self.positions, self.self_vis, sorted_positions=causal, causal=causal)
        )
        return segmented_attention(
            q, self.positions, segs, scaling=scaling, pattern=self.pattern, inv_freq=self.inv_freq
        )

    def stacked_kv(self) -> Any:
        """``(layers, 2, kv_heads, n, head_dim)``: the chunk's keys and values."""
        import torch

        return torch.stack([torch.stack(kv) for kv in self.new_kv])


class BatchedLM:
    """Batched next-token logits/log-probabilities with a KV prefix cache (module docstring).

    - ``model``: a ``decoding.Model`` (from ``load_model``) or a transformers causal LM.
    - ``memory_budget``: bytes of KV the prefix cache keeps between calls (LRU eviction); None
      keeps everything.
    - ``prefill_chunk``: most new tokens per forward pass.
    - ``long_context``: ``"auto"`` (the Lambda pattern sized to the trained length: exact inside
      it, LM-Infinite past it), ``"lambda"`` (the pattern with ``n_global``/``window``/
      ``max_distance``), ``"none"`` (plain attention everywhere).

    The model is switched to the ``decoding_backend`` attention implementation, which behaves
    exactly like the previous one for every other caller. Calls are serialized by a lock.
    """

    def __init__(
        self,
        model: Any,
        *,
        memory_budget: int | None = None,
        prefill_chunk: int = 512,
        long_context: LongContext = "auto",
        n_global: int | None = None,
        window: int | None = None,
        max_distance: int | None = None,
    ) -> None:
        import torch

        self.model = model
        hf = getattr(model, "hf_model", model)
        self.hf_model = hf
        install(hf)
        cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        param = next(hf.parameters())
        self.cache = PrefixCache(
            num_layers=cfg.num_hidden_layers,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            dtype=param.dtype,
            device=param.device,
            memory_budget=memory_budget,
        )
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        self.long_context = long_context
        self.pattern = resolve_pattern(
            long_context, cfg, n_global=n_global, window=window, max_distance=max_distance
        )
        self.inv_freq = find_inv_freq(hf)
        if self.pattern is not None and self.inv_freq is None:
            raise ValueError("the Lambda pattern needs a RoPE model (no inv_freq found)")
        vocab = getattr(model, "vocab", None)
        self.vocab_size = int(vocab.size) if vocab is not None else int(cfg.vocab_size)
        eos = getattr(model, "eos_token_ids", None)
        if not eos:
            cfg_eos = getattr(cfg, "eos_token_id", None)
            eos = [cfg_eos] if isinstance(cfg_eos, int) else list(cfg_eos or [])
        self.eos_token_ids: tuple[int, ...] = tuple(int(e) for e in eos)
        self.eos_token_id = self.eos_token_ids[0] if self.eos_token_ids else -1
        self.forward_passes = 0
        self.tokens_computed = 0
        self._mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=param.device)
        self._lock = threading.Lock()

    # ---- public API -----------------------------------------------------------------------------
    @property
    def stats(self) -> CacheStats:
        """The prefix cache's counters (plus ``extra``: forward passes and tokens computed)."""
        s = self.cache.stats
        s.extra = {"forward_passes": self.forward_passes, "tokens_computed": self.tokens_computed}
        return s

    def logits(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """Next-token logits ``(len(sequences), vocab)`` (fp32) after each full token sequence."""
        import torch

        if not sequences:
            return torch.empty(0, self.vocab_size)
        keys = [tuple(int(t) for t in s) for s in sequences]
        with self._lock:
            rows = self._run(keys, score=False)
        return torch.stack([rows[k].logits for k in keys])

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """``log_softmax`` of :meth:`logits`: row ``i`` is ``log p(. | sequences[i])``."""
        return torch_log_softmax(self.logits(sequences))

    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Prefill prompts of any lengths together (prepacked and chunked) and cache their KV;
        returns their next-token logits (same as :meth:`logits`)."""
        return self.logits(prompts)

    def score(self, tokens: Sequence[int]) -> torch.Tensor:
        """Log-probabilities ``(len(tokens) - 1,)`` of each token given all the previous ones
        (for perplexity), computed chunk by chunk; the sequence's KV stays cached."""
        key = tuple(int(t) for t in tokens)
        if len(key) < 2:
            raise ValueError("score needs at least two tokens")
        with self._lock:
            rows = self._run([key], score=True)
        return rows[key].token_logprobs

    def lm(self, prompt: Sequence[int], *, temperature: float = 1.0) -> PromptedLM:
        """A ``samplers`` ``LanguageModel`` whose sequences continue ``prompt`` (token ids)."""
        return PromptedLM(self, prompt, temperature=temperature)

    def clear(self) -> None:
        """Empty the prefix cache."""
        with self._lock:
            self.cache.clear()

    # ---- engine ---------------------------------------------------------------------------------
    def _run(
        self,
        keys: list[tuple[int, ...]],
        *,
        score: bool,
        evict: bool = True,
        dedupe: bool = True,
    ) -> dict[tuple[int, ...], _Row]:
        rows: dict[tuple[int, ...], _Row] = {}
        pending: list[_Row] = []
        for key in keys:
            if key in rows:
                continue
            if not key:
                raise ValueError("an empty token sequence has no next-token distribution")
            m = self.cache.match(key)
            last = m.last
            row = _Row(key, done=0, score=score)
            rows[key] = row
            if score:
                pending.append(row)
                continue
            if m.length == len(key) and last is not None and last.logits is not None:
                row.logits = last.logits
                self.cache.stats.logits_reused += 1
                continue
            row.done = min(m.length, len(key) - 1)
            pending.append(row)
        if score:
            for row in pending:
                row.token_logprobs = []
        elif dedupe and len(pending) > 1:
            shared = _shared_prefixes(pending)
            if shared:  # compute prefixes common to several rows once, before the rows (one
                # level: shared prefixes nested in one another are packed in one pass)
                self._run(shared, score=False, evict=False, dedupe=False)
                for row in pending:
                    m = self.cache.match(row.seq, count=False)
                    row.done = max(row.done, min(m.length, row.total - 1))
        while pending:
            pieces: list[tuple[_Row, int, int]] = []
            room = self.prefill_chunk
            for row in pending:
                if room == 0:
                    break
                a = row.done
                b = min(row.total, a + room)
                pieces.append((row, a, b))
                room -= b - a
            self._forward(pieces)
            pending = [row for row in pending if row.done < row.total]
        if score:
            import torch

            for row in rows.values():
                row.token_logprobs = torch.cat(row.token_logprobs)
        if evict:
            self.cache.evict()
        return rows

    def _forward(self, pieces: list[tuple[_Row, int, int]]) -> None:
        import torch

        # two passes: the first may split nodes (which can cut another piece's path in two)
        for row, a, _ in pieces:
            self.cache.match(row.seq[:a], count=False)
        paths = []
        for row, a, _ in pieces:
            m = self.cache.match(row.seq[:a], count=False)
            if m.length != a:
                raise RuntimeError("prefix cache lost a prefix in the middle of a call")
            paths.append(m.path)
        ids = torch.tensor([t for row, a, b in pieces for t in row.seq[a:b]], dtype=torch.long)
        positions = torch.cat([torch.arange(a, b) for _, a, b in pieces])
        lengths = [b - a for _, a, b in pieces]
        keep: list[int] = []
        off = 0
        for (row, _a, b), length in zip(pieces, lengths, strict=True):
            if row.score:
                keep.extend(range(off, off + length))
            elif b == row.total:
                keep.append(off + length - 1)
            off += length
        plan = _Plan(paths, lengths, positions, self.pattern, self.inv_freq, self.cache.num_layers)
        device = self._mask.device
        with torch.inference_mode():
            out = self.hf_model(
                input_ids=ids[None].to(device),
                position_ids=positions[None].to(device),
                attention_mask=self._mask,
                use_cache=False,
                logits_to_keep=torch.tensor(keep, dtype=torch.long, device=device)
                if keep
                else torch.tensor([off - 1], device=device),
                decoding_plan=plan,
            )
            logits = out.logits[0].float()
            kv = plan.stacked_kv()
        self.forward_passes += 1
        self.tokens_computed += off
        off = 0
        j = 0
        for (row, a, b), length in zip(pieces, lengths, strict=True):
            node = self.cache.insert(
                row.seq[:b], a, kv[:, :, :, off : off + length], reserve=row.total - a
            )
            if row.score:
                lp = torch.log_softmax(logits[j : j + length], dim=-1)
                targets = torch.tensor(row.seq[a + 1 : b + 1], dtype=torch.long)
                got = lp[: targets.shape[0]].gather(1, targets[:, None].to(lp.device))[:, 0]
                row.token_logprobs.append(got.cpu())
                j += length
            elif b == row.total:
                row.logits = logits[j].clone()
                self.cache.set_logits(node, row.logits)
                j += 1
            row.done = b
            off += length


def _shared_prefixes(rows: list[_Row], min_tokens: int = 2) -> list[tuple[int, ...]]:
    """Prefixes that several rows still have to compute (longest common prefixes of rows
    adjacent in sorted order, past what the rows have cached, ``min_tokens`` long or more)."""
    order = sorted(rows, key=lambda r: r.seq)
    out: set[tuple[int, ...]] = set()
    for x, y in itertools.pairwise(order):
        a, b = x.seq, y.seq
        k = min(len(a), len(b))
        lcp = 0
        while lcp < k and a[lcp] == b[lcp]:
            lcp += 1
        lcp = min(lcp, len(a) - 1, len(b) - 1)  # a row's last token stays its own (logits)
        if lcp - max(x.done, y.done) >= min_tokens:
            out.add(a[:lcp])
    return sorted(out)


def torch_log_softmax(x: Any) -> Any:
    import torch

    return torch.log_softmax(x, dim=-1)


class PromptedLM:
    """``samplers.protocols.LanguageModel`` over a :class:`BatchedLM`: ``sequences`` are the
    generated ids; the prompt (token ids) is prepended, and its KV is shared by every sequence
    and every call (one batched forward pass per call, one row per distinct sequence).

    ``next_token_logprobs`` gives the rows the samplers target
    (:func:`decoding.lm_adapter.sampler_logprobs`: ``log_softmax(logits / temperature)``, the mass
    of every EOS id merged into ``eos_token_id``)."""

    def __init__(
        self, backend: BatchedLM, prompt: Sequence[int], *, temperature: float = 1.0
    ) -> None:
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.backend = backend
        self.prompt = tuple(int(t) for t in prompt)
        if not self.prompt:
            raise ValueError("the prompt must hold at least one token (e.g. BOS)")
        self.temperature = float(temperature)
        self.vocab_size = backend.vocab_size
        self.eos_token_id = backend.eos_token_id

    def next_token_logprobs(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        from decoding.lm_adapter import sampler_logprobs

        return sampler_logprobs(self.next_token_logits(sequences), temperature=self.temperature,
                                eos_token_ids=self.backend.eos_token_ids)

    @property
    def n_forwards(self) -> int:
        """Forward passes the backend has run (all callers; take differences)."""
        return self.backend.forward_passes

    def next_token_logits(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        return self.backend.logits([self.prompt + tuple(s) for s in sequences])

    def prefill(self) -> torch.Tensor:
        """Compute and cache the prompt now; returns its next-token logits ``(V,)``."""
        return self.backend.logits([self.prompt])[0]
