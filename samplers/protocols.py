"""The small contracts the samplers rely on: the constraint (Matcher), the model (LanguageModel), the
token sampler (TokenSampler) and what a token sampler returns (SampleResult).

samplers never imports grammars or decoding: ``grammars.Matcher`` satisfies :class:`Matcher`
structurally, and decoding implements :class:`LanguageModel` for real models (with KV-cache
sharing). Toy implementations of both live in the tests.

Notation used by every sampler docstring: ``p`` is the next-token distribution given by the model's
log-probabilities (a 1-D tensor over the vocabulary, normally summing to one), ``c(y)`` in {0, 1} is
the constraint's verdict on token ``y`` in the current state (``matcher.check_token(y)``; the EOS
token is allowed exactly when ``matcher.is_accepting()``), and ``Z = sum_y p(y) c(y)`` is the allowed
mass. A token sampler is *properly weighted* for ``p * c`` when its pair ``(x, w)`` satisfies, for
every function ``f`` of the token,

    E[w * f(x)] = sum_y f(y) p(y) c(y),

with ``w = 0`` (``log_weight = -inf``) and ``x = None`` when nothing can be sampled. Taking ``f = 1``
shows ``E[w] = Z``: the weight is an unbiased estimate of the allowed mass, and the token given a
positive weight is (in the weighted sense) a draw from ``p`` restricted to the allowed tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["LanguageModel", "Matcher", "RandomGenerator", "SampleResult", "TokenSampler"]

#: What every ``generator=`` option accepts: a ``torch.Generator``, a ``numpy.random.Generator``
#: (cheaper per draw for small vocabularies), or None for torch's global generator.
RandomGenerator = Union["torch.Generator", np.random.Generator, None]


@runtime_checkable
class Matcher(Protocol):
    """A constraint's incremental state over token ids (``grammars.Matcher`` satisfies it).

    - ``check_token(id)``: would ``id`` be accepted now? No state change. This is the call AWRS
      makes, once per token it draws, so it must be cheap.
    - ``accept_token(id)``: advance the state; ``False`` (and no advance) if the token is rejected.
    - ``is_accepting()``: the text so far is complete, i.e. EOS is allowed now.
    - ``fill_next_token_bitmask(bitmask, row=0)``: write the allowed set of every token into row
      ``row`` of an int32 bitmask of shape ``(batch, ceil(V/32))`` (bit ``i % 32`` of word
      ``i // 32`` set = token ``i`` allowed; see ``kernels.allocate_token_bitmask``).
    - ``fork()``: an independent copy of the state (cheap; used for SMC particles).
    - ``is_terminated()``: EOS has been accepted; nothing more can follow.

    Optional: ``few_allowed_tokens()`` returns the allowed token ids (EOS included when
    accepting) when the matcher already knows them without work and they are few (a token
    automaton's precomputed row with at most ``grammars.compiled.FEW_TOKENS`` tokens), else None.
    AWRS then draws exactly from that set (one check per listed token) instead of rejecting its
    way to it: the states that force a continuation (the rest of a property name, a closing
    quote) are where the model's mass on the allowed set is smallest.
    """

    def check_token(self, token_id: int) -> bool: ...

    def accept_token(self, token_id: int) -> bool: ...

    def is_accepting(self) -> bool: ...

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> None: ...

    def fork(self) -> Matcher: ...

    def is_terminated(self) -> bool: ...


@runtime_checkable
class LanguageModel(Protocol):
    """What SMC needs from a model: batched next-token log-probabilities.

    ``next_token_logprobs(sequences)`` returns a float tensor of shape ``(len(sequences),
    vocab_size)`` whose row ``i`` is ``log p(. | sequences[i])`` (the prompt, if any, is the model's
    business: ``sequences`` holds the generated token ids only). ``eos_token_id`` is the token that
    ends a sequence; the constraint allows it exactly when the text so far is complete.
    """

    vocab_size: int
    eos_token_id: int

    def next_token_logprobs(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor: ...


@dataclass(frozen=True, slots=True)
class SampleResult:
    """One token sampler call: the token, its log importance weight, and the work it took.

    Unpacks (and indexes) as the pair ``(token, log_weight)``. ``token`` is ``None`` and ``log_weight`` is ``-inf`` when no
    allowed token has positive probability. ``n_checks`` counts constraint evaluations: one per
    ``check_token`` call, plus the vocabulary size for every full-mask fill.
    """

    token: int | None
    log_weight: float
    n_checks: int = 0

    def __iter__(self) -> Iterator[Any]:
        yield self.token
        yield self.log_weight

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        return (self.token, self.log_weight)[index]

    @property
    def ok(self) -> bool:
        """True when a token was produced (``token is not None``)."""
        return self.token is not None


@runtime_checkable
class TokenSampler(Protocol):
    """A token sampler: ``sample(logprobs, matcher, *, generator=None) -> SampleResult``.

    ``logprobs`` is the model's next-token log-probability vector (1-D torch tensor, one entry per
    token id, possibly wider than the tokenizer; this package's samplers also take numpy arrays).
    ``matcher`` is the constraint state, which the sampler only queries (``check_token`` /
    ``fill_next_token_bitmask``) and never advances. ``generator`` is the source of randomness
    (:data:`RandomGenerator`; torch's global generator when ``None``). Unless a sampler says
    otherwise, its result is properly weighted for ``p * c`` (see the module docstring).
    """

    def sample(
        self, logprobs: torch.Tensor, matcher: Matcher, *, generator: RandomGenerator = None
    ) -> SampleResult: ...
