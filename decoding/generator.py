"""The generation loop: :class:`Generator` (compile once, generate many times) and :func:`generate`.

Each step fills the grammar's next-token bitmask into a preallocated int32 tensor (a row copy from
the compiled token automaton), applies it to the logits in place (disallowed -> -inf), then picks a
token (greedy, or sampling with temperature/top-k/top-p over the allowed tokens only) and advances
the matcher. EOS is allowed exactly when the grammar accepts; when EOS is the *only* allowed token
the output ends without another model call (the choice is forced). No Python work per vocabulary
entry happens in the loop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import grammars
from decoding.completion import Completion, GenerationStats
from decoding.model import Model, Prompt, load_model
from decoding.sampling import SamplerName, choose_tokens, validate_sampling
from grammars import Grammar

__all__ = ["DecodingError", "Generator", "build_grammar", "generate"]

Whitespace = Literal["compact", "flexible"]
PropertyOrder = Literal["schema", "any"]


class DecodingError(RuntimeError):
    """Generation cannot continue (a dead end: the constraint allows no token for this
    vocabulary), or a finished output fails to parse (a compiler bug, never silently ignored)."""


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


class Generator:
    """Generate from ``model`` under one constraint, compiled once.

    ``model``: a :class:`decoding.Model`, a local path, or None for the embedded default model.
    The constraint is ``constraint`` (a ``Grammar``, a ``CompiledGrammar``, a JSON Schema dict or
    bool, or a pydantic model class) or one of ``schema=`` / ``regex=`` / ``grammar=`` (Grammar or
    Lark text) / ``choices=``; none of them means unconstrained text. The other keywords are
    defaults for :meth:`generate`, which can override each one per call.
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
        self._defaults: dict[str, Any] = {
            "sampler": sampler,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "chat": chat,
        }
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
    ) -> Completion | list[Completion]:
        """Generate for ``prompt`` (text, or a list of chat messages).

        Returns one :class:`Completion`, or with ``n > 1`` a list of ``n`` completions decoded as
        one batch (independent samples; all identical under greedy decoding). ``seed`` seeds a
        private ``torch.Generator``: the same seed gives the same output.
        """
        import torch

        d = self._defaults
        sampler = d["sampler"] if sampler is None else sampler
        max_tokens = d["max_tokens"] if max_tokens is None else max_tokens
        temperature = d["temperature"] if temperature is None else temperature
        top_k = d["top_k"] if top_k is None else top_k
        top_p = d["top_p"] if top_p is None else top_p
        chat = d["chat"] if chat is None else chat
        validate_sampling(sampler, temperature, top_k, top_p)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")

        with torch.inference_mode():
            return self._run(prompt, sampler, max_tokens, temperature, top_k, top_p, seed, n, chat)

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
    ) -> Completion | list[Completion]:
        import torch

        import kernels

        model = self.model
        vocab = model.vocab
        eos = self._eos
        compiled = self.compiled
        stats = GenerationStats(compile_seconds=self.compile_seconds, batch_size=n)
        rng = None
        if seed is not None:
            rng = torch.Generator(device="cpu")
            rng.manual_seed(int(seed))  # else sampling uses torch's global generator

        t_start = time.perf_counter()
        ids = model.encode(prompt, chat=chat)
        stats.prompt_tokens = len(ids)
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

        logits, state = model.prefill(input_ids, max_new_tokens=max_tokens)
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
            feed = [chosen[r] if r in active else self._pad for r in range(n)] if n > 1 else chosen
            logits = model.step(feed, state)
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
    """
    validate_sampling(sampler, temperature, top_k, top_p)
    gen = Generator(
        model,
        schema=schema,
        regex=regex,
        grammar=grammar,
        choices=choices,
        whitespace=whitespace,
        property_order=property_order,
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
    )
