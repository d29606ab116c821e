"""What the query interpreter needs from a model, and the adapter for :class:`decoding.Model`.

A :class:`Backend` encodes text, and runs token chunks on a growing KV state: ``feed`` appends a
chunk and returns the next-token logits (one model call however long the chunk), ``crop`` cuts the
state back (the KV cache is reused across holes and rolled back after nested queries), ``copy``
forks it (beam search, SMC particles). It counts model calls and tokens processed.
"""

from __future__ import annotations

import copy
from typing import Any

from decoding.model import DecodeState, Model
from grammars import Vocabulary

__all__ = ["Backend", "ModelBackend"]


class Backend:
    """Base class: subclasses implement ``encode``, ``new_state``, ``_feed``, ``_feed_all``,
    ``crop``, ``copy``. ``calls`` / ``tokens`` count forward passes and tokens processed."""

    vocab: Vocabulary
    name: str = "backend"

    def __init__(self) -> None:
        self.calls = 0
        self.tokens = 0

    @property
    def eos_token_id(self) -> int:
        return self.vocab.eos_token_id

    @property
    def start_token_id(self) -> int:
        """The token fed when a hole starts with an empty context."""
        return self.vocab.eos_token_id

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def new_state(self) -> Any:
        raise NotImplementedError

    def feed(self, state: Any, ids: list[int]) -> Any:
        """Append ``ids`` to ``state``; the next-token logits (1-D float tensor of width V)."""
        if not ids:
            raise ValueError("feed needs at least one token")
        self.calls += 1
        self.tokens += len(ids)
        return self._feed(state, ids)

    def feed_all(self, state: Any, ids: list[int]) -> Any:
        """Append ``ids``; logits after each of them, shape (len(ids), V)."""
        self.calls += 1
        self.tokens += len(ids)
        return self._feed_all(state, ids)

    def _feed(self, state: Any, ids: list[int]) -> Any:
        raise NotImplementedError

    def _feed_all(self, state: Any, ids: list[int]) -> Any:
        raise NotImplementedError

    def length(self, state: Any) -> int:
        raise NotImplementedError

    def crop(self, state: Any, n: int) -> None:
        raise NotImplementedError

    def copy(self, state: Any) -> Any:
        raise NotImplementedError


class ModelBackend(Backend):
    """A :class:`decoding.Model` (transformers, dynamic KV cache) as a query backend."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model
        self.vocab = model.vocab
        self.name = model.name
        tok = model.tokenizer
        bos = getattr(tok, "bos_token_id", None)
        self._start = int(bos) if bos is not None else model.vocab.eos_token_id

    @property
    def start_token_id(self) -> int:
        return self._start

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def new_state(self) -> DecodeState:
        from transformers import DynamicCache

        return DecodeState(cache=DynamicCache(config=self.model.hf_model.config), length=0, batch=1)

    def _feed(self, state: DecodeState, ids: list[int]) -> Any:
        import torch

        return self.model.step(torch.tensor([ids], dtype=torch.long), state)[0]

    def _feed_all(self, state: DecodeState, ids: list[int]) -> Any:
        import torch

        m = self.model
        x = torch.tensor([ids], dtype=torch.long, device=m.device)
        n = x.shape[1]
        pos = torch.arange(state.length, state.length + n, device=x.device)
        with torch.inference_mode():
            out = m.hf_model(
                input_ids=x, past_key_values=state.cache, use_cache=True, cache_position=pos,
                position_ids=pos[None], logits_to_keep=0,
            )
        state.length += n
        state.cache = out.past_key_values
        return out.logits[0].float()

    def length(self, state: DecodeState) -> int:
        return state.length

    def crop(self, state: DecodeState, n: int) -> None:
        if n < state.length:
            import inspect

            if "tokens_to_remove" in inspect.signature(state.cache.crop).parameters:
                state.cache.crop(n - state.length)  # transformers >= 5: a negative count
            else:  # pragma: no cover - older transformers: the new absolute length
                state.cache.crop(n)
            state.length = n

    def copy(self, state: DecodeState) -> DecodeState:
        return DecodeState(cache=copy.deepcopy(state.cache), length=state.length, batch=state.batch)
