"""``query(source, model=None, **inputs)``: parse, check, pick the model, run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from decoding.query.backend import Backend, ModelBackend
from decoding.query.errors import HostedModelError, QuerySyntaxError
from decoding.query.parser import Query, is_local_model, parse
from decoding.query.runtime import BeamExpansion, QueryResult, QueryStats, Runtime, Settings

__all__ = ["query", "resolve_backend", "settings_for"]


def _read(source: str | os.PathLike[str]) -> tuple[str, str]:
    if isinstance(source, os.PathLike):
        p = Path(source)
        return p.read_text(encoding="utf-8"), str(p)
    if isinstance(source, str) and "\n" not in source and source.endswith(".lmql") and Path(source).is_file():
        return Path(source).read_text(encoding="utf-8"), source
    return source, "<query>"


def resolve_backend(q: Query, model: Any) -> Backend:
    """The backend for ``model`` (a Backend, a decoding.Model, a local path, or None: the query's
    from clause if it names a local model, else the embedded default)."""
    from decoding.model import DEFAULT_MODEL_FILE, Model, load_model

    if isinstance(model, Backend):
        return model
    if isinstance(model, Model):
        return ModelBackend(model)
    if model is not None:
        return ModelBackend(load_model(model))
    name = q.model
    if name is None or name.strip().lower() in ("smollm2", "default", "local", "local:default"):
        return ModelBackend(load_model(None))
    if is_local_model(name):
        path = name.removeprefix("local:")
        if os.path.exists(os.path.expanduser(path)):
            return ModelBackend(load_model(path))
        return ModelBackend(load_model(None))
    line, col = q.model_position or (None, None)
    raise HostedModelError(
        f"the from clause names {name!r}, a hosted model or hub name: this engine never downloads "
        "models or calls remote services. Pass a local model (query(..., model=PATH) or "
        f"--model PATH), or model=None with no from clause for the embedded default model "
        f"SmolLM2-135M-Instruct ({DEFAULT_MODEL_FILE}); to run this script on the default model "
        "pass model='default' (--model default)",
        line=line, column=col,
    )


def settings_for(q: Query, *, max_tokens: int | None, seed: int | None,
                 decoder: str | None = None, **overrides: Any) -> Settings:
    d = q.decoder
    opts = dict(d.options)
    opts.update({k: v for k, v in overrides.items() if v is not None})
    s = Settings(decoder=decoder or d.name)
    for k, v in opts.items():
        if not hasattr(s, k):
            raise QuerySyntaxError(f"unknown decoder option {k!r}", line=d.line, column=d.column)
        setattr(s, k, v)
    if max_tokens is not None:
        s.max_tokens = max_tokens
    if seed is not None:
        s.seed = seed
    if s.decoder in ("beam", "smc") and "n" not in opts:
        s.n = 2 if s.decoder == "beam" else 4
    for name in ("n", "max_len", "max_tokens"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise QuerySyntaxError(f"decoder option {name} must be a positive integer, got {v!r}",
                                   line=d.line, column=d.column)
    if not (isinstance(s.temperature, (int, float)) and s.temperature >= 0):
        raise QuerySyntaxError(f"temperature must be >= 0, got {s.temperature!r}", line=d.line,
                               column=d.column)
    return s


def query(
    source: str | os.PathLike[str] | Query,
    model: Any = None,
    *,
    max_tokens: int | None = None,
    seed: int | None = None,
    decoder: str | None = None,
    inputs: dict[str, Any] | None = None,
    **kw_inputs: Any,
) -> QueryResult | list[QueryResult]:
    """Run an LMQL-like query script and return its variables, final prompt and statistics.

    ``source``: the script text (standalone ``argmax "..." from "m" where ...`` form or the modern
    Python-program form), a path to a ``.lmql`` file, or a parsed :class:`Query`. ``model``: a
    :class:`decoding.Model`, a local path, ``"default"``, a query ``Backend``, or None (the from
    clause when it names a local model, else the embedded default; a hosted name raises
    :class:`HostedModelError`). ``**inputs``: values of the script's free variables.
    ``max_tokens``: the per-hole token cap (default 128; a hole that reaches it ends with
    ``finish_reason="length"`` and a value its constraint still accepts). ``seed``: reproducible
    sampling. ``decoder``: override the script's decoder name.

    Every static error (syntax, unknown variable, constraint on a non-hole, contradictory
    constraints, missing external tools, hosted models) is raised before any model is loaded.
    Returns one :class:`QueryResult`, or a list of them for ``sample(n=k)`` with k > 1.
    """
    import time

    import torch

    if isinstance(source, Query):
        q = source
    else:
        text, filename = _read(source)
        q = parse(text, filename=filename)
    all_inputs = {**(inputs or {}), **kw_inputs}
    q.validate(all_inputs)
    settings = settings_for(q, max_tokens=max_tokens, seed=seed, decoder=decoder)
    if isinstance(model, str) and model.strip().lower() in ("default", "smollm2", "local"):
        model_arg: Any = None
        from decoding.model import load_model

        backend = ModelBackend(load_model(None))
    else:
        model_arg = model
        backend = resolve_backend(q, model_arg)
    if settings.decoder == "beam":
        return _program_beam(q, backend, settings, all_inputs)
    runs = settings.n if settings.decoder == "sample" else 1
    out: list[QueryResult] = []
    for i in range(runs):
        gen = None
        if settings.seed is not None:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(int(settings.seed) + i)
        calls0, toks0 = backend.calls, backend.tokens
        t0 = time.perf_counter()
        rt = Runtime(q, backend, settings, all_inputs, gen)
        with torch.inference_mode():
            scope = rt.run()
        out.append(_result(rt, scope, backend, settings, all_inputs, calls0, toks0, t0))
    return out[0] if runs == 1 else out


def _result(rt: Runtime, scope: dict[str, Any], backend: Backend, settings: Settings,
            inputs: dict[str, Any], calls0: int, toks0: int, t0: float) -> QueryResult:
    import time

    top = {}
    for rec in rt.records:
        if rec.nested_in is None:
            top[rec.name] = rec.value
    stats = QueryStats(
        model_calls=backend.calls - calls0, tokens_processed=backend.tokens - toks0,
        generated_tokens=rt.generated, forced_tokens=rt.forced,
        seconds=time.perf_counter() - t0,
    )
    user_scope = {k: v for k, v in scope.items() if not k.startswith("__") and k not in inputs}
    return QueryResult(
        variables=top, prompt=rt.ctx.text(), holes=rt.records, distributions=rt.distributions,
        stats=stats, decoder=settings.decoder, model=backend.name, scope=user_scope,
    )


def _program_beam(q: Query, backend: Backend, settings: Settings,
                  inputs: dict[str, Any]) -> QueryResult:
    """``beam(n)`` over the whole program (LMQL's semantics): a beam is the list of the generated
    tokens of every hole so far, scored by their total log-probability. Each round replays every
    unfinished beam's program up to its next hole (fixed text and earlier values are placed in the
    context, not decoded), expands that hole by a width-``n`` beam search, and keeps the ``n`` best
    of all continuations and finished programs; it ends when the ``n`` best have all finished.
    Returns the best finished program, with ``score`` and the other final ``beams``. Model calls
    and tokens in ``stats`` count every replay (the text is re-fed per run)."""
    import time

    import torch

    width = int(settings.n)
    calls0, toks0 = backend.calls, backend.tokens
    t0 = time.perf_counter()
    # (score, replay, finished run or None)
    pool: list[tuple[float, list[list[int]], tuple[Runtime, dict[str, Any]] | None]] = [
        (0.0, [], None)]
    while any(done is None for _, _, done in pool):
        nxt: list[tuple[float, list[list[int]], tuple[Runtime, dict[str, Any]] | None]] = []
        for score, replay, done in pool:
            if done is not None:
                nxt.append((score, replay, done))
                continue
            rt = Runtime(q, backend, settings, inputs, None, replay=replay)
            try:
                with torch.inference_mode():
                    scope = rt.run()
            except BeamExpansion as grow:
                nxt.extend((score + s, [*replay, toks], None) for s, toks in grow.candidates)
                continue
            nxt.append((score, replay, (rt, scope)))
        nxt.sort(key=lambda e: -e[0])
        pool = nxt[:width]
    results = []
    for score, _replay, done in pool:
        assert done is not None
        rt, scope = done
        r = _result(rt, scope, backend, settings, inputs, calls0, toks0, t0)
        r.score = score
        results.append(r)
    best = results[0]
    best.beams = results[1:]
    return best
