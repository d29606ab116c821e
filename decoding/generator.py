"""The generation loop: :class:`Generator` (compile once, generate many times) and :func:`generate`.

Each step fills the grammar's next-token bitmask into a preallocated int32 tensor (a row copy from
the compiled token automaton), applies it to the logits in place (disallowed -> -inf), then picks a
token (greedy, or sampling with temperature/top-k/top-p over the allowed tokens only) and advances
the matcher. EOS is allowed exactly when the grammar accepts; when EOS is the *only* allowed token
the output ends without another model call (the choice is forced). No Python work per vocabulary
entry happens in the loop.

The weighted samplers go through :mod:`samplers` instead, with a :class:`decoding.lm_adapter.
PromptLM` as the model (one batched forward per step over all live rows, the prompt's KV cache
shared): ``"awrs"`` (adaptive weighted rejection sampling, Lipkin, LeBrun et al. 2025: checks only
the tokens it draws, each output with its importance weight), ``"smc"`` (sequential Monte Carlo,
Loula et al. 2025, with AWRS as proposal: the output is drawn from the particles' posterior, with
the log marginal-likelihood estimate) and ``"asap"`` (grammar-aligned decoding, Park et al. 2024:
``n`` samples from a trie of expected future grammaticality kept by the :class:`Generator`, so
later calls continue to converge). See :func:`generate`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import grammars
from decoding.completion import Completion, GenerationStats
from decoding.model import Model, Prompt, load_model
from decoding.sampling import WEIGHTED_SAMPLERS, SamplerName, choose_tokens, validate_sampling
from grammars import Grammar

__all__ = ["DecodingError", "Generator", "build_grammar", "generate"]

Whitespace = Literal["compact", "flexible"]
#: ``None``: the plain model path, or the long-context backend with ``"auto"`` when the prompt plus
#: ``max_tokens`` exceeds the model's trained length; otherwise always that backend's setting.
LongContextOption = Literal["auto", "lambda", "none"] | None
PropertyOrder = Literal["schema", "any"]


class DecodingError(RuntimeError):
    """Generation cannot continue (a dead end: the constraint allows no token for this
    vocabulary), or a finished output fails to parse (a compiler bug, never silently ignored)."""


# AWRS falls back to one full mask after this many rejections in a token (bounds the worst case,
# e.g. only EOS allowed while the model wants to go on; the weights stay exact).
AWRS_MAX_REJECTS = 256
# ASAp trie: nodes store every grammatical token's probability (up to the whole vocabulary per
# node), so the cap bounds memory; ASAp tries kept per Generator (one per prompt and settings).
ASAP_MAX_NODES = 2048
ASAP_TRIES_KEPT = 4


def _validate_smc(n_particles: int, ess_threshold: float) -> None:
    if not isinstance(n_particles, int) or n_particles < 1:
        raise ValueError(f"n_particles must be a positive integer, got {n_particles!r}")
    if not ess_threshold >= 0.0:
        raise ValueError(f"ess_threshold must be >= 0, got {ess_threshold!r}")


class _Recorder:
    """Wraps a ``samplers.LanguageModel``: times its calls, counts the rows, and keeps
    ``log P`` of every sequence whose parent was in the previous call (always so in SMC)."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.vocab_size = lm.vocab_size
        self.eos_token_id = lm.eos_token_id
        self.call_starts: list[float] = []
        self.model_seconds = 0.0
        self.rows = 0
        self._cum: dict[tuple[int, ...], float] = {(): 0.0}
        self._eos_lp: dict[tuple[int, ...], float] = {}
        self._index: dict[tuple[int, ...], int] = {}
        self._lp: Any = None

    def next_token_logprobs(self, sequences: Sequence[Sequence[int]]) -> Any:
        t0 = time.perf_counter()
        self.call_starts.append(t0)
        out = self.lm.next_token_logprobs(sequences)
        self.model_seconds += time.perf_counter() - t0
        self.rows += len(sequences)
        eos_col = out[:, self.eos_token_id].tolist()
        index: dict[tuple[int, ...], int] = {}
        cum, prev, prev_lp = self._cum, self._index, self._lp
        for r, seq in enumerate(sequences):
            key = tuple(seq)
            if key not in cum:
                parent = prev.get(key[:-1])
                cum[key] = (
                    cum[key[:-1]] + float(prev_lp[parent, key[-1]])
                    if parent is not None and key[:-1] in cum
                    else float("nan")
                )
            self._eos_lp[key] = eos_col[r]
            index[key] = r
        self._index, self._lp = index, out
        return out

    def log_prob(self, tokens: Sequence[int], finished: bool) -> float | None:
        """``log P(tokens + EOS)`` (``finished``) or ``log P(tokens)``; None if not tracked."""
        key = tuple(tokens)
        value = self._cum.get(key, float("nan"))
        if finished:
            value += self._eos_lp.get(key, float("nan"))
        return None if math.isnan(value) else value

    def step_seconds(self, t_start: float, t_end: float) -> list[float]:
        """Wall time of each step: from one model call's start to the next (the first from
        ``t_start``: the prompt and the first step; the last until ``t_end``)."""
        marks = [t_start, *self.call_starts[1:], t_end]
        return [b - a for a, b in itertools.pairwise(marks)]


def _is_pydantic_model(obj: Any) -> bool:
    return isinstance(obj, type) and hasattr(obj, "model_json_schema") and hasattr(
        obj, "model_validate_json"
    )


def build_grammar(
    *,
    schema: Any = None,
    regex: str | None = None,
    grammar: Grammar | str | None = None,
    choices: Sequence[str] | None = None,
    whitespace: Whitespace = "compact",
    property_order: PropertyOrder = "schema",
) -> Grammar | None:
    """The :class:`grammars.Grammar` for at most one of the constraint arguments (None: none given).

    ``grammar`` is a ``Grammar`` or Lark text. Raises ``ValueError`` when several are given and the
    typed :class:`grammars.GrammarError` subclasses for bad constraints (before any model work).
    """
    given = [
        name
        for name, v in (("schema", schema), ("regex", regex), ("grammar", grammar), ("choices", choices))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give at most one constraint, got {', '.join(given)}")
    if schema is not None:
        return Grammar.from_json_schema(schema, whitespace=whitespace, property_order=property_order)
    if regex is not None:
        return Grammar.from_regex(regex)
    if choices is not None:
        if isinstance(choices, str):
            raise TypeError("choices must be a list of strings, not one string")
        return Grammar.from_choices(choices)
    if grammar is not None:
        if isinstance(grammar, Grammar):
            return grammar
        if isinstance(grammar, str):
            return Grammar.from_lark(grammar)
        raise TypeError(f"grammar must be a grammars.Grammar or Lark text, got {type(grammar).__name__}")
    return None


def _constraint_to_grammar(constraint: Any, whitespace: Whitespace, property_order: PropertyOrder) -> Any:
    """Positional ``constraint`` of Generator: Grammar, CompiledGrammar, schema dict/bool, pydantic."""
    if constraint is None or isinstance(constraint, Grammar):
        return constraint
    if hasattr(constraint, "matcher") and hasattr(constraint, "vocab"):
        return constraint  # a CompiledGrammar
    if isinstance(constraint, (dict, bool)) or _is_pydantic_model(constraint):
        return Grammar.from_json_schema(
            constraint, whitespace=whitespace, property_order=property_order
        )
    raise TypeError(
        "constraint must be a grammars.Grammar, a CompiledGrammar, a JSON Schema (dict or bool) or a "
        f"pydantic model class, got {type(constraint).__name__}; use regex=, choices= or grammar= for text"
    )


def _validate_long_context(long_context: Any) -> None:
    if long_context not in (None, "auto", "lambda", "none"):
        raise ValueError(
            f"long_context must be None, 'auto', 'lambda' or 'none', got {long_context!r}"
        )


def _prefill(lm: Any, stats: GenerationStats) -> None:
    """``lm.prefill()``; through the long-context backend, also note in ``stats`` its setting and
    how many prompt tokens its prefix cache already held."""
    backend = getattr(lm, "backend", None)
    reused0 = backend.cache.stats.tokens_reused if backend is not None else 0
    lm.prefill()
    if backend is not None:
        stats.long_context = backend.long_context
        stats.prompt_tokens_cached = backend.cache.stats.tokens_reused - reused0


class _BackendRows:
    """Greedy / multinomial decoding of ``n`` rows through a long-context backend
    (:class:`decoding.backend.BatchedLM`): the prompt's KV comes from (and goes to) its prefix
    cache; each step computes only the rows still active, in one batch. ``step`` returns the
    ``(n, V)`` logits with the finished rows' last values left in place."""

    def __init__(self, backend: Any, ids: Sequence[int], n: int, stats: GenerationStats) -> None:
        self.lm = backend.lm(ids)
        self.n = n
        self.stats = stats
        self.logits: Any = None

    def prefill(self) -> Any:
        _prefill(self.lm, self.stats)  # cached: the next call only looks the prompt up
        row = self.lm.next_token_logits([()])
        self.logits = row.expand(self.n, -1).clone()
        return self.logits

    def step(self, tokens: Sequence[Sequence[int]], active: Sequence[int]) -> Any:
        self.logits[list(active)] = self.lm.next_token_logits([tokens[r] for r in active])
        return self.logits


class Generator:
    """Generate from ``model`` under one constraint, compiled once.

    ``model``: a :class:`decoding.Model`, a local path, or None for the embedded default model.
    The constraint is ``constraint`` (a ``Grammar``, a ``CompiledGrammar``, a JSON Schema dict or
    bool, or a pydantic model class) or one of ``schema=`` / ``regex=`` / ``grammar=`` (Grammar or
    Lark text) / ``choices=``; none of them means unconstrained text. The other keywords are
    defaults for :meth:`generate`, which can override each one per call.

    ``long_context`` (None, ``"auto"``, ``"lambda"``, ``"none"``) picks the model path: see
    :func:`generate`.

    With ``sampler="asap"`` the Generator keeps the ASAp trie of each (prompt, ``max_tokens``,
    ``temperature``) it sampled (the last few), so repeated calls keep converging to the model
    conditioned on the constraint; :meth:`asap_sampler` returns it.
    """

    def __init__(
        self,
        model: Model | str | os.PathLike[str] | None = None,
        constraint: Any = None,
        *,
        schema: Any = None,
        regex: str | None = None,
        grammar: Grammar | str | None = None,
        choices: Sequence[str] | None = None,
        whitespace: Whitespace = "compact",
        property_order: PropertyOrder = "schema",
        sampler: SamplerName = "greedy",
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        chat: bool | None = None,
        n_particles: int = 8,
        ess_threshold: float = 0.5,
        long_context: LongContextOption = None,
    ) -> None:
        keyword = build_grammar(
            schema=schema,
            regex=regex,
            grammar=grammar,
            choices=choices,
            whitespace=whitespace,
            property_order=property_order,
        )
        if constraint is not None and keyword is not None:
            raise ValueError("give the constraint either positionally or as a keyword, not both")
        target = keyword if keyword is not None else _constraint_to_grammar(
            constraint, whitespace, property_order
        )
        validate_sampling(sampler, temperature, top_k, top_p)
        _validate_smc(n_particles, ess_threshold)
        _validate_long_context(long_context)
        self._defaults: dict[str, Any] = {
            "sampler": sampler,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "chat": chat,
            "n_particles": n_particles,
            "ess_threshold": ess_threshold,
            "long_context": long_context,
        }
        self._asap: dict[tuple[Any, ...], Any] = {}  # (prompt ids, settings) -> ASApSampler
        # what .value parses into
        src = schema if schema is not None else constraint
        self._pydantic = src if _is_pydantic_model(src) else None
        if isinstance(target, Grammar):
            self.grammar: Grammar | None = target
        elif target is not None:
            self.grammar = target.grammar
        else:
            self.grammar = None
        self._json = self.grammar is not None and self.grammar.kind == "json_schema"

        if isinstance(model, Model):
            self.model = model
        elif model is None or isinstance(model, (str, os.PathLike)):
            self.model = load_model(model)
        else:
            raise TypeError(
                f"model must be a decoding.Model, a local path or None, got {type(model).__name__}"
            )
        self.compiled: Any = None
        self.compile_seconds = 0.0
        if target is not None:
            t0 = time.perf_counter()
            if isinstance(target, Grammar):
                self.compiled = grammars.compile(target, self.model.vocab)
            else:
                if target.vocab is not self.model.vocab and (
                    target.vocab.fingerprint != self.model.vocab.fingerprint
                ):
                    raise ValueError("the CompiledGrammar was compiled for another vocabulary")
                self.compiled = target
            self.compile_seconds = time.perf_counter() - t0
        vocab = self.model.vocab
        self._eos = frozenset(vocab.eos_token_ids)
        self._pad = vocab.eos_token_id
        self._non_eos_words: Any = None
        self._eos_only_cache: dict[int, bool] = {}

    def __repr__(self) -> str:
        return f"Generator({self.model!r}, {self.grammar!r})"

    # ---- helpers --------------------------------------------------------------------------------
    def _non_eos(self) -> Any:
        """int32 row with every bit set except the EOS ids' (to test 'only EOS is allowed')."""
        if self._non_eos_words is None:
            import numpy as np
            import torch

            import kernels

            allowed = np.ones(self.model.vocab.size, dtype=bool)
            allowed[list(self._eos)] = False
            self._non_eos_words = torch.from_numpy(kernels.bool_to_bitmask(allowed))
        return self._non_eos_words

    def _eos_only(self, matcher: Any, row: Any) -> bool:
        """Whether EOS is the only token the (accepting) matcher allows; cached per DFA state."""
        state = getattr(matcher, "state", None)
        if state is not None:
            hit = self._eos_only_cache.get(state)
            if hit is not None:
                return hit
        only = not bool((row & self._non_eos()).any())
        if state is not None:
            self._eos_only_cache[state] = only
        return only

    def _check_dead_ends(self, matchers: Any, rows: Sequence[int], tokens: list[list[int]]) -> None:
        if matchers is None:
            return
        for r in rows:
            if matchers[r].is_error():
                raise DecodingError(
                    "dead end: the constraint allows no token after "
                    f"{self.model.vocab.decode(tokens[r])!r} with this vocabulary"
                )

    def _value(self, text: str) -> Any:
        if not self._json:
            return text
        try:
            if self._pydantic is not None:
                return self._pydantic.model_validate_json(text)
            return json.loads(text)
        except Exception as exc:
            raise DecodingError(f"the finished output does not parse as JSON: {text!r}") from exc

    def _backend(
        self, ids: Sequence[int], max_tokens: int, long_context: LongContextOption,
        stats: GenerationStats | None,
    ) -> Any:
        """The long-context backend a call goes through (``Model.backend``), or None for the plain
        model path: ``long_context=None`` picks the backend with ``"auto"`` only when the prompt
        plus ``max_tokens`` exceeds the model's trained length."""
        if long_context is None:
            limit = self.model.trained_length
            if limit is None or len(ids) + max_tokens <= limit:
                return None
            long_context = "auto"
        backend = self.model.backend(long_context)
        if stats is not None:
            stats.long_context = long_context
        return backend

    # ---- generation -----------------------------------------------------------------------------
    def generate(
        self,
        prompt: Prompt,
        *,
        sampler: SamplerName | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        n: int = 1,
        chat: bool | None = None,
        n_particles: int | None = None,
        ess_threshold: float | None = None,
    ) -> Completion | list[Completion]:
        """Generate for ``prompt`` (text, or a list of chat messages).

        Returns one :class:`Completion`, or with ``n > 1`` a list of ``n`` completions decoded as
        one batch (independent samples; all identical under greedy decoding). ``seed`` seeds a
        private random generator: the same seed gives the same output. For the weighted samplers
        (``"awrs"``, ``"smc"``, ``"asap"``; ``n_particles`` and ``ess_threshold`` are SMC's) see
        :func:`generate`.
        """
        import torch

        d = self._defaults
        n_particles = d["n_particles"] if n_particles is None else n_particles
        ess_threshold = d["ess_threshold"] if ess_threshold is None else ess_threshold
        sampler = d["sampler"] if sampler is None else sampler
        max_tokens = d["max_tokens"] if max_tokens is None else max_tokens
        temperature = d["temperature"] if temperature is None else temperature
        top_k = d["top_k"] if top_k is None else top_k
        top_p = d["top_p"] if top_p is None else top_p
        chat = d["chat"] if chat is None else chat
        long_context = d["long_context"]
        validate_sampling(sampler, temperature, top_k, top_p)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")

        _validate_smc(n_particles, ess_threshold)
        if sampler in WEIGHTED_SAMPLERS and self.compiled is None:
            raise ValueError(f"sampler={sampler!r} needs a constraint (schema, regex, grammar or choices)")

        with torch.inference_mode():
            if sampler in WEIGHTED_SAMPLERS:
                return self._run_weighted(
                    prompt, sampler, max_tokens, temperature, seed, n, chat, n_particles,
                    ess_threshold, long_context,
                )
            return self._run(
                prompt, sampler, max_tokens, temperature, top_k, top_p, seed, n, chat, long_context
            )

    def _run(
        self,
        prompt: Prompt,
        sampler: str,
        max_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seed: int | None,
        n: int,
        chat: bool | None,
        long_context: LongContextOption,
    ) -> Completion | list[Completion]:
        import torch

        import kernels

        model = self.model
        vocab = model.vocab
        eos = self._eos
        compiled = self.compiled
        stats = GenerationStats(compile_seconds=self.compile_seconds, batch_size=n, sampler=sampler)
        rng = None
        if seed is not None:
            rng = torch.Generator(device="cpu")
            rng.manual_seed(int(seed))  # else sampling uses torch's global generator

        t_start = time.perf_counter()
        ids = model.encode(prompt, chat=chat)
        stats.prompt_tokens = len(ids)
        backend = self._backend(ids, max_tokens, long_context, stats)
        input_ids = torch.tensor([ids] * n, dtype=torch.long)

        matchers = [compiled.matcher() for _ in range(n)] if compiled is not None else None
        bitmask = kernels.allocate_token_bitmask(n, vocab.size) if compiled is not None else None
        apply_mask = kernels.apply_token_bitmask_inplace
        tc = 0.0
        if matchers is not None:
            t0 = time.perf_counter()
            for r, m in enumerate(matchers):
                m.fill_next_token_bitmask(bitmask, r)
            stats.mask_fills += n
            tc += time.perf_counter() - t0

        if backend is None:
            logits, state = model.prefill(input_ids, max_new_tokens=max_tokens)
        else:
            rows = _BackendRows(backend, ids, n, stats)
            logits = rows.prefill()
        stats.model_calls += 1
        t_prefill = time.perf_counter()
        stats.prefill_seconds = t_prefill - t_start

        tokens: list[list[int]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        active = list(range(n))
        t_prev = t_start
        for step in range(max_tokens):
            if matchers is not None:
                t0 = time.perf_counter()
                apply_mask(logits, bitmask, vocab_size=vocab.size)
                tc += time.perf_counter() - t0
            try:
                chosen = choose_tokens(
                    logits,
                    sampler=sampler,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    generator=rng,
                ).tolist()
            except RuntimeError:  # multinomial over an all -inf row: a dead end
                self._check_dead_ends(matchers, active, tokens)
                raise
            t0 = time.perf_counter()
            still: list[int] = []
            stats.sampled_tokens += len(active)
            for r in active:
                t = chosen[r]
                if matchers is not None:
                    m = matchers[r]
                    if not m.accept_token(t):
                        self._check_dead_ends(matchers, [r], tokens)
                        raise DecodingError(f"the matcher rejected token {t} that its mask allowed")
                    stats.constraint_checks += 1
                if t in eos:
                    finish[r] = "stop"
                    continue
                tokens[r].append(t)
                if matchers is not None:
                    m = matchers[r]
                    m.fill_next_token_bitmask(bitmask, r)
                    stats.mask_fills += 1
                    if m.is_accepting() and self._eos_only(m, bitmask[r]):
                        finish[r] = "stop"  # only EOS may follow: forced, no model call needed
                        continue
                still.append(r)
            now = time.perf_counter()
            if matchers is not None:
                tc += now - t0
            stats.token_seconds.append(now - t_prev)
            t_prev = now
            if step == 0:
                stats.time_to_first_token = now - t_start
            active = still
            if not active or step == max_tokens - 1:
                break
            if backend is None:
                feed = [chosen[r] if r in active else self._pad for r in range(n)] if n > 1 else chosen
                logits = model.step(feed, state)
            else:
                logits = rows.step(tokens, active)
            stats.model_calls += 1

        stats.constraint_seconds = tc
        stats.generated_tokens = max(len(t) for t in tokens)
        stats.total_seconds = time.perf_counter() - t_start
        out: list[Completion] = []
        for r in range(n):
            raw = vocab.decode(tokens[r])
            reason = finish[r] or "length"
            if reason == "stop":
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace")
                value = self._value(text) if matchers is not None else text
            else:
                text = raw.decode("utf-8", errors="replace")
                value = None
            out.append(Completion(text, value, tokens[r], reason, stats, raw))  # type: ignore[arg-type]
        return out[0] if n == 1 else out

    # ---- weighted samplers (samplers package) ---------------------------------------------------
    def asap_sampler(
        self, prompt: Prompt, *, max_tokens: int | None = None, temperature: float | None = None,
        chat: bool | None = None,
    ) -> Any:
        """The ASAp sampler (``samplers.ASApSampler``, its trie) this Generator keeps for these
        settings, or None if ``sampler="asap"`` has not run with them."""
        d = self._defaults
        ids = self.model.encode(prompt, chat=d["chat"] if chat is None else chat)
        max_tokens = d["max_tokens"] if max_tokens is None else max_tokens
        backend = self._backend(ids, max_tokens, d["long_context"], None)
        key = (
            tuple(ids),
            max_tokens,
            float(d["temperature"] if temperature is None else temperature),
            id(backend),
        )
        return self._asap.get(key)

    def _completion(
        self, tokens: Sequence[int], finished: bool, stats: GenerationStats, **extra: Any
    ) -> Completion:
        raw = self.model.vocab.decode(list(tokens))
        if finished:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="replace")
            value = self._value(text)
        else:
            text = raw.decode("utf-8", errors="replace")
            value = None
        reason = "stop" if finished else "length"
        return Completion(text, value, list(tokens), reason, stats, raw, **extra)  # type: ignore[arg-type]

    def _run_weighted(
        self,
        prompt: Prompt,
        sampler: str,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        n: int,
        chat: bool | None,
        n_particles: int,
        ess_threshold: float,
        long_context: LongContextOption,
    ) -> Completion | list[Completion]:
        import numpy as np

        from decoding.lm_adapter import PromptLM

        rng = np.random.default_rng(seed)  # numpy: cheaper per draw than torch for one row
        t_start = time.perf_counter()
        ids = self.model.encode(prompt, chat=chat)
        backend = self._backend(ids, max_tokens, long_context, None)

        if sampler == "asap":
            return self._run_asap(ids, max_tokens, temperature, rng, n, t_start, backend)

        lm: Any = (
            PromptLM(self.model, ids, temperature=temperature, max_new_tokens=max_tokens)
            if backend is None
            else backend.lm(ids, temperature=temperature)
        )
        if sampler == "awrs":  # n independent AWRS sequences in one batch: SMC without resampling
            out = self._run_smc(lm, ids, max_tokens, rng, n, 0.0, t_start, "awrs")
            return out[0] if n == 1 else out
        runs = [
            self._run_smc(lm, ids, max_tokens, rng, n_particles, ess_threshold, t_start, "smc")[0]
            for _ in range(n)
        ]
        return runs[0] if n == 1 else runs

    def _run_smc(
        self,
        lm: Any,
        ids: list[int],
        max_tokens: int,
        rng: Any,
        n_particles: int,
        ess_threshold: float,
        t_start: float,
        mode: str,
    ) -> list[Completion]:
        """``mode="awrs"``: one completion per particle (no resampling); ``"smc"``: one completion
        drawn from the posterior of one SMC run."""
        import numpy as np

        from samplers import AWRSSampler, smc

        stats = GenerationStats(
            compile_seconds=self.compile_seconds,
            batch_size=n_particles,
            sampler=mode,
            prompt_tokens=len(ids),
        )
        t0 = time.perf_counter()
        _prefill(lm, stats)
        stats.prefill_seconds = time.perf_counter() - t0
        forwards0 = lm.n_forwards
        rec = _Recorder(lm)
        res = smc(
            rec,
            self.compiled.matcher(),
            n_particles=n_particles,
            max_tokens=max_tokens,
            sampler=AWRSSampler(max_rejects=AWRS_MAX_REJECTS),
            ess_threshold=ess_threshold,
            generator=rng,
        )
        t_end = time.perf_counter()
        stats.token_seconds = rec.step_seconds(t_start, t_end)
        stats.time_to_first_token = stats.token_seconds[0] if stats.token_seconds else 0.0
        stats.total_seconds = t_end - t_start
        stats.model_seconds = rec.model_seconds
        stats.model_calls = 1 + lm.n_forwards - forwards0  # the prompt, then the steps
        stats.constraint_checks = res.n_checks
        stats.mask_fills = 0
        stats.sampled_tokens = rec.rows
        stats.constraint_seconds = max(0.0, (t_end - t0) - stats.prefill_seconds - rec.model_seconds)
        stats.resamples = len(res.resampled_at)
        stats.generated_tokens = max(
            (len(p.output) for p in res.particles if p.status != "dead"), default=0
        )

        def dead_end(tokens: Sequence[int]) -> DecodingError:
            text = self.model.vocab.decode(list(tokens))
            return DecodingError(
                f"dead end: no allowed token has positive probability after {text!r}"
            )

        if mode == "awrs":
            out: list[Completion] = []
            for p in res.particles:
                if p.status == "dead":
                    raise dead_end(p.tokens)
                finished = p.status == "finished"
                out.append(
                    self._completion(
                        p.output,
                        finished,
                        stats,
                        log_prob=rec.log_prob(p.output, finished),
                        log_weight=p.log_weight if finished else None,
                    )
                )
            return out

        if res.posterior:
            outputs = list(res.posterior)
            probs = np.asarray(list(res.posterior.values()), dtype=np.float64)
            pick = outputs[int(rng.choice(len(outputs), p=probs / probs.sum()))]
            posterior: dict[str, float] = {}
            for key, w in res.posterior.items():
                text = self.model.vocab.decode(list(key)).decode("utf-8", errors="replace")
                posterior[text] = posterior.get(text, 0.0) + w
            posterior = dict(sorted(posterior.items(), key=lambda kv: -kv[1]))
            return [
                self._completion(
                    pick, True, stats, log_prob=rec.log_prob(pick, True), log_ml=res.log_ml,
                    posterior=posterior,
                )
            ]
        cut = [p for p in res.particles if p.status == "truncated"]
        if not cut:
            raise dead_end(max(res.particles, key=lambda p: len(p.tokens)).tokens)
        best = max(cut, key=lambda p: p.log_weight)
        return [
            self._completion(
                best.output, False, stats, log_prob=rec.log_prob(best.output, False),
                log_ml=-math.inf, posterior={},
            )
        ]

    def _run_asap(
        self, ids: list[int], max_tokens: int, temperature: float, rng: Any, n: int, t_start: float,
        backend: Any,
    ) -> Completion | list[Completion]:
        from decoding.lm_adapter import PromptLM
        from samplers import ASApEmptyLanguageError, ASApSampler

        key = (tuple(ids), max_tokens, float(temperature), id(backend))
        asap = self._asap.pop(key, None)
        if asap is None:
            inner = (
                PromptLM(self.model, ids, temperature=temperature)
                if backend is None
                else backend.lm(ids, temperature=temperature)
            )
            lm = _Recorder(inner)
            asap = ASApSampler(
                lm, self.compiled.matcher(), max_tokens=max_tokens, max_nodes=ASAP_MAX_NODES
            )
        self._asap[key] = asap  # most recently used last
        while len(self._asap) > ASAP_TRIES_KEPT:
            self._asap.pop(next(iter(self._asap)))
        rec: _Recorder = asap.model
        asap.generator = rng
        stats = GenerationStats(
            compile_seconds=self.compile_seconds, batch_size=1, sampler="asap",
            prompt_tokens=len(ids),
        )
        if backend is not None:
            _prefill(rec.lm, stats)
        calls0, rows0, model0 = len(rec.call_starts), rec.rows, rec.model_seconds
        forwards0 = rec.lm.n_forwards
        try:
            samples = asap.sample_many(n)
        except ASApEmptyLanguageError as exc:
            raise DecodingError(str(exc)) from exc
        t_end = time.perf_counter()
        marks = [t_start, *rec.call_starts[calls0 + 1 :], t_end]
        stats.token_seconds = [b - a for a, b in itertools.pairwise(marks)]
        stats.time_to_first_token = stats.token_seconds[0]
        stats.total_seconds = t_end - t_start
        stats.model_seconds = rec.model_seconds - model0
        stats.model_calls = rec.lm.n_forwards - forwards0
        stats.mask_fills = rec.rows - rows0
        stats.constraint_checks = stats.mask_fills * self.model.vocab.size
        stats.sampled_tokens = sum(len(smp.tokens) + 1 for smp in samples)
        stats.constraint_seconds = max(0.0, stats.total_seconds - stats.model_seconds)
        stats.generated_tokens = max(len(smp.tokens) for smp in samples)
        out = [
            self._completion(
                smp.tokens, True, stats, log_prob=smp.log_prob_model,
                log_weight=smp.log_prob_model - smp.log_prob_proposal,
            )
            for smp in samples
        ]
        return out[0] if n == 1 else out


def generate(
    prompt: Prompt,
    *,
    schema: Any = None,
    regex: str | None = None,
    grammar: Grammar | str | None = None,
    choices: Sequence[str] | None = None,
    model: Model | str | os.PathLike[str] | None = None,
    sampler: SamplerName = "greedy",
    max_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    n: int = 1,
    chat: bool = True,
    whitespace: Whitespace = "compact",
    property_order: PropertyOrder = "schema",
    n_particles: int = 8,
    ess_threshold: float = 0.5,
    long_context: LongContextOption = None,
) -> Completion | list[Completion]:
    """Generate text for ``prompt`` under at most one constraint.

    Constraints: ``schema`` (JSON Schema dict/bool/JSON text, or a pydantic model class: ``.value``
    is then a parsed instance), ``regex`` (full match), ``grammar`` (a ``grammars.Grammar`` or Lark
    text), ``choices`` (one of the strings). Constraint errors (``grammars.GrammarError``
    subclasses) are raised before any model call. ``model``: a :class:`Model`, a local path, or
    None for the embedded default. ``sampler="greedy"`` or ``"sample"`` (``temperature``,
    ``top_k``, ``top_p`` apply over the allowed tokens only; ``seed`` makes it reproducible).
    ``n > 1`` returns a list of ``n`` completions. A thin wrapper over :class:`Generator`
    (the compiled grammar is cached, so repeated calls do not recompile).

    Weighted samplers (they need a constraint, take ``temperature > 0`` and no ``top_k`` /
    ``top_p``; ``P`` below is the model, tempered when ``temperature != 1``, ``c`` the constraint
    and ``max_tokens`` counts the final EOS):

    - ``"awrs"``: adaptive weighted rejection sampling per token (checks only the tokens it draws;
      ``stats.checks_per_token``). ``n`` rows decode as one batch; each completion carries
      ``log_weight``, its importance weight for ``P * c`` (exact outputs of locally constrained
      sampling, reweighted), and ``log_prob``.
    - ``"smc"``: sequential Monte Carlo with ``n_particles`` particles (AWRS proposal, systematic
      resampling when the effective sample size falls under ``ess_threshold * n_particles``), all
      live particles in one batched forward per step. The completion is drawn from the particles'
      posterior (an approximate sample of ``P`` conditioned on ``c``) and carries ``log_ml`` (the
      log marginal-likelihood estimate) and ``posterior`` (text -> weight). ``n > 1``: ``n``
      independent runs.
    - ``"asap"``: ``n`` samples from ASAp's trie (grammar-aligned decoding), each with ``log_prob``
      (the model's log-probability of the output and EOS) and ``log_weight`` (``log P - log q``);
      a :class:`Generator` keeps the trie across calls.

    Under every sampler, an output cut by ``max_tokens`` has ``finish_reason == "length"`` and
    ``value is None`` (an SMC run where no particle finished returns its best cut particle that
    way, with ``log_ml = -inf``).

    Long prompts (``long_context``): with ``"auto"``, ``"lambda"`` or ``"none"`` the call goes
    through the model's long-context backend (``Model.backend``: chunked prefill, a KV prefix
    cache kept on the model, so later calls whose prompt starts with the same document reuse its
    KV; ``"auto"`` is exact within the trained length and switches to the LM-Infinite Lambda
    attention past it, ``"lambda"`` always uses it, ``"none"`` is plain attention). With the
    default None, prompts that fit the trained length take the plain path and longer ones the
    backend with ``"auto"``. ``stats.long_context`` and ``stats.prompt_tokens_cached`` report it.
    """
    validate_sampling(sampler, temperature, top_k, top_p)
    _validate_smc(n_particles, ess_threshold)
    _validate_long_context(long_context)
    gen = Generator(
        model,
        schema=schema,
        regex=regex,
        grammar=grammar,
        choices=choices,
        whitespace=whitespace,
        property_order=property_order,
        long_context=long_context,
    )
    return gen.generate(
        prompt,
        sampler=sampler,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        n=n,
        chat=chat,
        n_particles=n_particles,
        ess_threshold=ess_threshold,
    )
