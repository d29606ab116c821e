"""What a generation returns: :class:`Completion` and its :class:`GenerationStats`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Completion", "FinishReason", "GenerationStats"]

FinishReason = Literal["stop", "length"]


@dataclass
class GenerationStats:
    """Timings and counts of one ``generate`` call (shared by the ``n`` completions of a batch).

    ``token_seconds[i]``: wall time from choosing token ``i-1`` to choosing token ``i``
    (``token_seconds[0]`` is the time to first token). ``constraint_seconds``: time spent filling,
    applying and advancing the grammar (the constraint's overhead). ``mask_fills`` and
    ``constraint_checks`` (tokens advanced through the matcher) count matcher calls.

    With the weighted samplers (``sampler="awrs"|"smc"|"asap"``) some fields read differently:
    ``token_seconds[i]`` is the time of decoding step ``i`` (one batched model call for all live
    rows, then one token sampler call per row; for ``asap``, one entry per expanded prefix);
    ``constraint_checks`` is the token sampler's count (``samplers.SampleResult.n_checks``: one per
    ``check_token`` call, plus the vocabulary size for every full-mask fill; ASAp fills one full
    mask per expanded prefix, also counted in ``mask_fills``); ``constraint_seconds`` is the time
    spent outside the model in the decoding loop (token sampler, constraint checks, resampling).
    ``sampled_tokens``: token sampler calls over all rows (EOS included; for greedy/sample, the
    tokens advanced through the matcher), so :attr:`checks_per_token` is the mean constraint work
    per token. ``model_seconds``: time inside model calls. ``resamples``: SMC resampling steps.
    ``batch_size`` is the number of rows decoded together (``n``, or ``n_particles`` for SMC).

    ``long_context``: the long-context backend's setting when the call went through it (``"auto"``,
    ``"lambda"`` or ``"none"``; None for the plain model path); ``prompt_tokens_cached``: prompt
    tokens whose KV that backend's prefix cache already held (not recomputed).
    """

    compile_seconds: float = 0.0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    batch_size: int = 1
    prefill_seconds: float = 0.0
    time_to_first_token: float = 0.0
    total_seconds: float = 0.0
    token_seconds: list[float] = field(default_factory=list)
    constraint_seconds: float = 0.0
    mask_fills: int = 0
    constraint_checks: int = 0
    model_calls: int = 0
    sampler: str = "greedy"
    sampled_tokens: int = 0
    model_seconds: float = 0.0
    resamples: int = 0
    long_context: str | None = None
    prompt_tokens_cached: int = 0

    @property
    def checks_per_token(self) -> float:
        """``constraint_checks / sampled_tokens`` (nan before any token): see the class docstring."""
        return self.constraint_checks / self.sampled_tokens if self.sampled_tokens else float("nan")

    @property
    def decode_seconds(self) -> float:
        """Time after the first token (the steady decoding phase)."""
        return sum(self.token_seconds[1:])

    @property
    def ms_per_token(self) -> float:
        """Mean decode step time in ms, first token (prefill) excluded; nan with < 2 tokens."""
        n = len(self.token_seconds) - 1
        return 1000.0 * self.decode_seconds / n if n > 0 else float("nan")

    @property
    def tokens_per_second(self) -> float:
        """Decode throughput per sequence (tokens after the first / their time)."""
        d = self.decode_seconds
        n = len(self.token_seconds) - 1
        return n / d if n > 0 and d > 0 else float("nan")

    @property
    def constraint_ms_per_token(self) -> float:
        n = len(self.token_seconds)
        return 1000.0 * self.constraint_seconds / n if n else float("nan")

    def summary(self) -> str:
        """A few human-readable lines (what the CLI's ``--stats`` prints)."""
        lines = [
            f"compile: {1000 * self.compile_seconds:.1f} ms",
            (
                f"prompt tokens: {self.prompt_tokens}, generated tokens: {self.generated_tokens}"
                + (f" (batch {self.batch_size})" if self.batch_size > 1 else "")
            ),
            f"time to first token: {1000 * self.time_to_first_token:.0f} ms",
            f"decode: {self.ms_per_token:.1f} ms/token, {self.tokens_per_second:.2f} tokens/s",
            (
                f"constraint: {self.constraint_ms_per_token:.3f} ms/token "
                f"({self.mask_fills} mask fills, {self.constraint_checks} checks)"
            ),
            f"total: {self.total_seconds:.2f} s",
        ]
        if self.sampler not in ("greedy", "sample"):
            lines.insert(
                -1,
                f"sampler: {self.sampler}, {self.checks_per_token:.2f} checks/token "
                f"over {self.sampled_tokens} sampled tokens"
                + (f", {self.resamples} resamplings" if self.sampler == "smc" else ""),
            )
        if self.long_context is not None:
            lines.insert(
                2,
                f"long-context backend ({self.long_context}): {self.prompt_tokens_cached} prompt "
                "tokens from the KV prefix cache",
            )
        return "\n".join(lines)


@dataclass
class Completion:
    """One generated output.

    ``text``: the output decoded from the vocabulary's exact token bytes (``raw``; EOS excluded).
    ``value``: for a JSON Schema, the parsed JSON (a pydantic instance when the schema was a
    pydantic model class); for other constraints and for unconstrained output, the text itself;
    always ``None`` when ``finish_reason`` is ``"length"`` (output cut by ``max_tokens`` is never
    passed off as valid). ``tokens``: the generated token ids, EOS excluded. ``finish_reason``:
    ``"stop"`` when the model ended the output (an EOS the constraint allowed, or the only token it
    allowed), ``"length"`` when ``max_tokens`` cut it.

    Fields set by the weighted samplers (``None`` otherwise; see :func:`decoding.generate`). With
    ``P`` the model (tempered when ``temperature != 1``) and ``c`` the constraint:

    - ``log_prob``: ``log P(tokens + EOS)`` for a finished output (``awrs``, ``smc``, ``asap``);
      ``log P(tokens)`` for one cut by ``max_tokens``.
    - ``log_weight``: the log importance weight of this output, properly weighted for ``P * c``
      (``E[w f(x)] = sum_x P(x) c(x) f(x)``, so ``w`` alone is an unbiased estimate of ``Z = sum_x
      P(x) c(x)``): the product of AWRS's per-token weights (``awrs``), or ``log P(x) - log q(x)``
      with ``q`` the ASAp trie's proposal when it drew ``x`` (``asap``). ``None`` for ``smc``
      (see ``log_ml``) and for outputs cut by ``max_tokens``.
    - ``log_ml``: SMC's log marginal-likelihood estimate (``exp(log_ml)`` is unbiased for ``Z``);
      ``-inf`` when no particle finished (``finish_reason`` is then ``"length"``).
    - ``posterior``: SMC's posterior over distinct output texts (text -> normalized weight, most
      probable first); ``text`` is one draw from it.
    """

    text: str
    value: Any
    tokens: list[int]
    finish_reason: FinishReason
    stats: GenerationStats
    raw: bytes = b""
    log_prob: float | None = None
    log_weight: float | None = None
    log_ml: float | None = None
    posterior: dict[str, float] | None = None

    def __str__(self) -> str:
        return self.text
