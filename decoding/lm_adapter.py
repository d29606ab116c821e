"""A :class:`samplers.LanguageModel` over a :class:`decoding.Model` for one prompt.

The samplers ask for ``next_token_logprobs(sequences)``: row ``i`` is ``log p(. | prompt +
sequences[i])`` over the model's full logits width. :class:`PromptLM` answers with one batched
forward pass per call and two simple KV-cache reuses:

- the prompt is prefilled once (batch 1); every batch that starts from it copies that cache to the
  rows it needs (no prompt recomputation per particle);
- the rows of the last call are kept with their sequences. When every sequence of a call extends a
  kept row by exactly one token (what SMC does at every step, whatever the resampling did: rows
  are gathered with ``index_select``, duplicated or dropped), only the new tokens are fed. When
  every sequence equals a kept row, the kept log-probabilities are returned without a forward.

Anything else (ASAp jumping back into its trie, mixed lengths) falls back to recomputing the
sequences from the prompt cache: one forward per distinct length, all of that length's sequences
as one batch. Results are exact in every case (the fallback only costs more compute).

The cache: with ``max_new_tokens`` (the longest sequence the samplers will pass), the rows live in
a transformers ``StaticCache`` of ``len(prompt) + max_new_tokens + 1`` positions, written in place
at every step (a ``DynamicCache`` re-concatenates every row's whole KV, prompt included, at every
step: with 8 rows over a 500-token prompt that made a step 2x slower on CPU); longer sequences
fall back to a ``DynamicCache``. Without ``max_new_tokens``, always a ``DynamicCache``. Either
way rows are gathered with ``reorder_cache``, whatever ``Model.cache_kind`` says. This adapter is
deliberately small, so that a prefix-cache backend (shared prompt KV without copies, trie-shaped
reuse) can replace it behind the same protocol.

Temperature: with ``temperature != 1`` the returned rows are ``log_softmax(logits /
temperature)``, the tempered model the samplers then target. Models with several EOS ids: their
probability mass is merged into ``eos_token_id`` (the samplers know one EOS; the constraint allows
every EOS id at the same time), the others get ``-inf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from decoding.model import DecodeState

if TYPE_CHECKING:
    import torch

    from decoding.model import Model

__all__ = ["PromptLM", "sampler_logprobs"]


def sampler_logprobs(
    logits: torch.Tensor, *, temperature: float, eos_token_ids: Sequence[int]
) -> torch.Tensor:
    """The rows the samplers get from logits ``(B, V)``: ``log_softmax(logits / temperature)`` in
    fp32, with the mass of every EOS id merged into the first one (the others get ``-inf``)."""
    import torch

    if temperature != 1.0:
        logits = logits / temperature
    lp = torch.log_softmax(logits.float(), dim=-1)
    if len(eos_token_ids) > 1:
        first, others = int(eos_token_ids[0]), [int(e) for e in eos_token_ids[1:]]
        lp[:, first] = torch.logsumexp(lp[:, [first, *others]], dim=-1)
        lp[:, others] = float("-inf")
    return lp


class PromptLM:
    """``samplers.LanguageModel`` for ``model`` continuing ``prompt_ids`` (see the module docstring).

    Attributes: ``vocab_size`` (the logits width), ``eos_token_id`` (the vocabulary's first EOS),
    and counters ``n_calls`` (calls), ``n_forwards`` (forward passes, prefill included),
    ``n_fallbacks`` (calls answered by recomputing from the prompt) and ``n_reused`` (calls
    answered from kept rows without a forward).
    """

    def __init__(
        self,
        model: Model,
        prompt_ids: Sequence[int],
        *,
        temperature: float = 1.0,
        max_new_tokens: int | None = None,
    ) -> None:
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if len(prompt_ids) == 0:
            raise ValueError("the prompt must have at least one token")
        self.model = model
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.temperature = float(temperature)
        self.max_new_tokens = max_new_tokens
        self._static_len = (
            len(self.prompt_ids) + max_new_tokens + 1 if max_new_tokens is not None else 0
        )
        self.vocab_size = int(model.vocab.size)
        eos_ids = [int(e) for e in model.vocab.eos_token_ids]
        self.eos_token_id = eos_ids[0]
        self._other_eos = eos_ids[1:]
        self.n_calls = 0
        self.n_forwards = 0
        self.n_fallbacks = 0
        self.n_reused = 0
        self._prompt_kv: list[tuple[Any, Any]] | None = None
        self._prompt_lp: torch.Tensor | None = None
        # the kept rows: their sequences (tuple -> row), their state and log-probabilities
        self._rows: dict[tuple[int, ...], int] = {}
        self._row_len = -1
        self._state: DecodeState | None = None
        self._lp: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"PromptLM({self.model!r}, prompt={len(self.prompt_ids)} tokens, "
            f"temperature={self.temperature})"
        )

    # ---- helpers --------------------------------------------------------------------------------
    def _logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        return sampler_logprobs(logits, temperature=self.temperature,
                                eos_token_ids=(self.eos_token_id, *self._other_eos))

    def _forward(self, token_ids: Any, state: DecodeState) -> torch.Tensor:
        self.n_forwards += 1
        return self._logprobs(self.model.step(token_ids, state))

    def prefill(self) -> None:
        """Run the prompt now (otherwise the first call does); idempotent."""
        import torch

        with torch.inference_mode():
            self._ensure_prompt()

    def _ensure_prompt(self) -> None:
        if self._prompt_kv is not None:
            return
        from transformers import DynamicCache

        state = DecodeState(DynamicCache(config=self.model.hf_model.config), 0, 1)
        self._prompt_lp = self._forward([self.prompt_ids], state)
        self._prompt_kv = [(layer.keys, layer.values) for layer in state.cache.layers]

    def _fits(self, length: int) -> bool:
        """Whether a static cache holds the prompt plus ``length`` tokens."""
        return len(self.prompt_ids) + length < self._static_len

    def _from_prompt(self, batch: int, length: int) -> DecodeState:
        """A fresh state holding the prompt's KV, copied to ``batch`` rows, with room for
        ``length`` more tokens (static when they fit, see the module docstring)."""
        from transformers import DynamicCache, StaticCache

        assert self._prompt_kv is not None
        data = [(k.expand(batch, *k.shape[1:]), v.expand(batch, *v.shape[1:])) for k, v in self._prompt_kv]
        config = self.model.hf_model.config
        if self._fits(length):
            cache: Any = StaticCache(config=config, max_cache_len=self._static_len)
            for layer, (k, v) in zip(cache.layers, data):
                layer.update(k, v)
        else:
            cache = DynamicCache(ddp_cache_data=data, config=config)
        return DecodeState(cache, len(self.prompt_ids), batch)

    def _keep(self, keys: list[tuple[int, ...]], state: DecodeState, lp: torch.Tensor) -> None:
        self._rows = {k: r for r, k in enumerate(keys)}
        self._row_len = len(keys[0]) if keys else -1
        self._state, self._lp = state, lp

    # ---- the protocol ---------------------------------------------------------------------------
    def next_token_logprobs(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """``(len(sequences), vocab_size)`` float32 log-probabilities, one batched forward at most
        on the fast paths (see the module docstring)."""
        import torch

        with torch.inference_mode():
            return self._next_token_logprobs(sequences)

    def _next_token_logprobs(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        import torch

        self.n_calls += 1
        self._ensure_prompt()
        keys = [tuple(int(t) for t in s) for s in sequences]
        if not keys:
            return torch.empty((0, self.vocab_size), dtype=torch.float32)
        rows = self._rows
        n = len(keys[0])
        same_length = all(len(k) == n for k in keys)

        if same_length and n == self._row_len and all(k in rows for k in keys):
            assert self._lp is not None
            self.n_reused += 1
            return self._lp[[rows[k] for k in keys]]

        state = self._state
        if (
            same_length
            and n == self._row_len + 1
            and state is not None
            and (state.length < self._static_len or not hasattr(state.cache.layers[0], "max_cache_len"))
            and all(k[:-1] in rows for k in keys)
        ):
            parents = [rows[k[:-1]] for k in keys]
            if parents != list(range(state.batch)):
                state.cache.reorder_cache(torch.tensor(parents, dtype=torch.long))
                state.batch = len(parents)
            lp = self._forward([k[-1] for k in keys], state)
            self._keep(keys, state, lp)
            return lp

        # fallback: recompute from the prompt, one forward per distinct length
        self.n_fallbacks += 1
        out = torch.empty((len(keys), self.vocab_size), dtype=torch.float32)
        by_length: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            by_length.setdefault(len(k), []).append(i)
        for length in sorted(by_length, key=lambda m: (len(by_length[m]), m)):
            idx = by_length[length]
            state = self._from_prompt(len(idx), length)
            group = [keys[i] for i in idx]
            if length == 0:
                assert self._prompt_lp is not None
                lp = self._prompt_lp.expand(len(idx), -1)
            else:
                lp = self._forward(group, state)
            out[idx] = lp
            self._keep(group, state, lp)  # the largest group is kept (sorted last)
        return out
