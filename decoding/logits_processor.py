"""A transformers ``LogitsProcessor`` that enforces a grammar inside ``model.generate``.

    >>> proc = GrammarLogitsProcessor(Grammar.from_regex(r"[0-9]{3}"), model.vocab)
    >>> out = model.hf_model.generate(input_ids, logits_processor=[proc], max_new_tokens=8)

One :class:`grammars.Matcher` per batch row. On each call the processor advances every row's matcher
with the tokens generated since the previous call (the prompt is skipped: its length is taken from
the first call, or given as ``prompt_length``), fills the rows' next-token bitmask into a
preallocated tensor and masks the scores in place (disallowed -> -inf). EOS is allowed exactly when
the row's grammar accepts. transformers runs user processors before its temperature/top-k/top-p
warpers, so those act over the allowed tokens only.

Works with greedy decoding and sampling (also ``num_return_sequences``); not with beam search,
which reorders rows between calls. A processor instance serves one ``generate`` call: make a new
one (or call :meth:`reset`) per call. Output cut by ``max_new_tokens`` is not complete: check
``processor.complete(output_ids)`` (did each row end with an EOS its grammar allowed?) before
trusting a row. The processor never sees the last chosen token itself (generation stops after it).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor

import grammars
import kernels
from grammars import Grammar, Vocabulary

__all__ = ["GrammarLogitsProcessor"]


class GrammarLogitsProcessor(LogitsProcessor):
    """Mask ``model.generate``'s scores with a grammar.

    ``compiled_or_grammar``: a ``CompiledGrammar`` or a ``Grammar`` (compiled here against
    ``vocab``). ``vocab``: the model's :class:`grammars.Vocabulary` (or a :class:`decoding.Model`);
    optional with a ``CompiledGrammar``. ``prompt_length``: the (padded) prompt width; by default
    the input width seen at the first call.
    """

    def __init__(
        self,
        compiled_or_grammar: Any,
        vocab: Vocabulary | Any = None,
        *,
        prompt_length: int | None = None,
    ) -> None:
        if vocab is not None and not isinstance(vocab, Vocabulary):
            vocab = getattr(vocab, "vocab", vocab)  # a decoding.Model
        if isinstance(compiled_or_grammar, Grammar):
            if vocab is None:
                raise ValueError("a Grammar needs the vocabulary to compile against")
            compiled = grammars.compile(compiled_or_grammar, vocab)
        else:
            compiled = compiled_or_grammar
            if vocab is not None and compiled.vocab.fingerprint != vocab.fingerprint:
                raise ValueError("the CompiledGrammar was compiled for another vocabulary")
        self.compiled = compiled
        self.vocab: Vocabulary = compiled.vocab
        self._prompt_length_arg = prompt_length
        self.reset()

    def reset(self) -> None:
        """Forget the matchers (to reuse the processor for another ``generate`` call)."""
        self.prompt_length: int | None = self._prompt_length_arg
        self.matchers: list[Any] = []
        self._seen = 0
        self._bitmask: Any = None
        self.mask_fills = 0

    def complete(self, sequences: torch.Tensor) -> list[bool]:
        """For ``model.generate``'s output ``sequences`` (prompt + generated ids), whether each row
        ended with an EOS its grammar allowed: a complete match, not cut by ``max_new_tokens``."""
        if not self.matchers:
            raise ValueError("the processor has not been called yet")
        out = []
        rows = sequences[:, self._seen :].tolist()
        for m, rest in zip(self.matchers, rows):
            m = m.fork()
            for t in rest:
                if m.is_terminated() or not m.accept_token(int(t)):
                    break
            out.append(m.is_terminated())
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, width = input_ids.shape
        if not self.matchers:
            if self.prompt_length is None:
                self.prompt_length = width
            self.matchers = [self.compiled.matcher() for _ in range(batch)]
            self._bitmask = kernels.allocate_token_bitmask(batch, self.vocab.size)
            self._seen = self.prompt_length
        elif batch != len(self.matchers):
            raise ValueError(
                f"batch changed from {len(self.matchers)} to {batch} rows (beam search is not "
                "supported; use a new processor per generate call)"
            )
        new = input_ids[:, self._seen :].tolist() if width > self._seen else [[]] * batch
        self._seen = width
        bitmask = self._bitmask
        for r, m in enumerate(self.matchers):
            for t in new[r]:
                if m.is_terminated():
                    break  # padding after the row's EOS
                if not m.accept_token(int(t)):
                    raise ValueError(
                        f"row {r}: token {int(t)} is not allowed by the grammar (was the prompt "
                        "length right, or did another processor change the choice?)"
                    )
            if m.is_terminated():
                bitmask[r] = -1  # finished row: transformers pads it; leave its scores alone
            else:
                m.fill_next_token_bitmask(bitmask, r)
                self.mask_fills += 1
        kernels.apply_token_bitmask_inplace(
            scores, bitmask.to(scores.device), vocab_size=self.vocab.size
        )
        return scores
