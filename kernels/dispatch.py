"""The one dispatcher: checks arguments, then routes to a backend by the tensors' device.

``backend="auto"`` picks Triton (:mod:`kernels.triton_kernels`) for CUDA tensors, the numba CPU
kernels (:mod:`kernels.cpu`) for CPU tensors, and the torch reference (:mod:`kernels.torch_ref`)
for any other device or when triton / numba cannot be imported. Backends are imported lazily, on
first use; importing this module imports nothing heavy. ``backend="torch" | "cpu" | "triton"``
forces one (``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` set before triton is imported).

Bitmask layout (XGrammar's and llguidance's): int32, shape ``(rows, ceil(vocab / 32))``; bit
``j % 32`` of word ``j // 32`` set means token ``j`` is allowed.

Common rules, checked here (``ValueError`` otherwise; ``TypeError`` for a non-tensor):

- logits: a float32, float16 or bfloat16 tensor, ``(batch, width)`` or ``(width,)``, any strides
  (rows may be a view into a wider buffer, columns may be strided), no two elements sharing memory.
- bitmask: an int32 tensor ``(rows, words)`` or ``(words,)`` on the logits' device.
- vocab: ``vocab_size`` if given, else ``min(width, 32 * words)``; it must not exceed
  ``32 * words`` (the bitmask must cover it) and is capped at ``width``. Columns ``>= vocab``
  (logits wider than the vocabulary: padding ids) are disallowed whatever their bits say, and
  bits past ``vocab`` are ignored.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import torch

    IndexLike = Sequence[int] | np.ndarray | torch.Tensor
    SeedLike = int | Sequence[int] | torch.Tensor
    TemperatureLike = float | torch.Tensor

__all__ = [
    "Backend",
    "advance_dfa_states",
    "apply_token_bitmask_inplace",
    "fill_bitmask_from_dfa_states",
    "masked_logsumexp",
    "resolve_backend",
    "sample_constrained",
]

Backend = Literal["auto", "torch", "cpu", "triton"]
_BACKENDS = ("auto", "torch", "cpu", "triton")
_MODULES = {"torch": "kernels.torch_ref", "cpu": "kernels.cpu", "triton": "kernels.triton_kernels"}
_AVAILABLE: dict[str, bool] = {}


def _available(name: str) -> bool:
    if name not in _AVAILABLE:
        dep = {"cpu": "numba", "triton": "triton"}.get(name)
        ok = dep is None or importlib.util.find_spec(dep) is not None
        if ok and name != "torch":
            try:
                importlib.import_module(_MODULES[name])
            except ImportError:
                ok = False
        _AVAILABLE[name] = ok
    return _AVAILABLE[name]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(device: Any, backend: Backend = "auto") -> str:
    """The backend that serves tensors on ``device`` ("torch", "cpu" or "triton")."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    kind = device.type
    if backend == "auto":
        if kind == "cuda" and _available("triton"):
            return "triton"
        if kind == "cpu" and _available("cpu"):
            return "cpu"
        return "torch"
    if backend == "cpu" and kind != "cpu":
        raise ValueError(f'backend="cpu" needs CPU tensors, got device {device}')
    if backend == "triton" and kind != "cuda" and not (kind == "cpu" and _interpreting()):
        raise ValueError(
            f'backend="triton" needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), '
            f"got device {device}"
        )
    if backend != "torch" and not _available(backend):
        raise ValueError(f"backend {backend!r} is not available (cannot import its dependency)")
    return backend


_LOADED: dict[str, Any] = {}


def _module(name: str) -> Any:
    mod = _LOADED.get(name)
    if mod is None:
        mod = _LOADED[name] = importlib.import_module(_MODULES[name])
    return mod


# -- argument checks -----------------------------------------------------------------------------


_TORCH: list[Any] = []


def _torch() -> Any:
    if not _TORCH:
        import torch

        _TORCH.append(torch)
    return _TORCH[0]


def _check_tensor(x: Any, name: str) -> None:
    if not isinstance(x, _torch().Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_logits(logits: Any) -> Any:
    torch = _torch()
    _check_tensor(logits, "logits")
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"logits must be float32, float16 or bfloat16, got {logits.dtype}")
    if logits.dim() not in (1, 2):
        raise ValueError(f"logits must be 1-D or 2-D, got shape {tuple(logits.shape)}")
    lg = logits.unsqueeze(0) if logits.dim() == 1 else logits
    rows, width = lg.shape
    if (rows > 1 and lg.stride(0) == 0) or (width > 1 and lg.stride(1) == 0):
        raise ValueError("logits must not have zero strides (elements sharing memory)")
    return lg


def _check_bitmask(bitmask: Any, device: Any, name: str = "bitmask") -> Any:
    torch = _torch()
    _check_tensor(bitmask, name)
    if bitmask.dtype != torch.int32:
        raise ValueError(f"{name} must be int32, got {bitmask.dtype}")
    if bitmask.dim() not in (1, 2):
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {tuple(bitmask.shape)}")
    if bitmask.device != device:
        raise ValueError(
            f"{name} is on {bitmask.device} but logits are on {device}: move it first "
            f"(e.g. {name}.to(logits.device, non_blocking=True))"
        )
    bm = bitmask.unsqueeze(0) if bitmask.dim() == 1 else bitmask
    if not bm.is_contiguous():
        bm = bm.contiguous()
    return bm


def _vocab(width: int, words: int, vocab_size: int | None) -> int:
    if vocab_size is None:
        return min(width, 32 * words)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 0:
        raise ValueError(f"vocab_size must be a non-negative int, got {vocab_size!r}")
    if vocab_size > 32 * words:
        raise ValueError(
            f"vocab_size={vocab_size} exceeds the {32 * words} tokens the bitmask covers "
            f"({words} words per row)"
        )
    return min(vocab_size, width)


def _check_rows(bm: Any, lg: Any) -> None:
    if bm.shape[0] != lg.shape[0]:
        raise ValueError(
            f"bitmask has {bm.shape[0]} rows but logits have {lg.shape[0]} (rows are aligned: "
            f"bitmask row i applies to logits row i)"
        )


def _indices(indices: Any, lg: Any, bm: Any) -> Any:
    torch = _torch()
    if isinstance(indices, torch.Tensor):
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError(f"indices must be integers, got {indices.dtype}")
        rows = indices.to(lg.device, torch.int64)
    else:
        try:
            rows = torch.as_tensor(indices, dtype=torch.int64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"indices must be a sequence of ints: {e}") from None
    if rows.dim() != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(rows.shape)}")
    limit = min(lg.shape[0], bm.shape[0])
    if rows.device.type == "cpu" and rows.numel() > 0:
        lo, hi = int(rows.min()), int(rows.max())
        if lo < 0 or hi >= limit:
            raise ValueError(
                f"indices must lie in [0, {limit}) (logits have {lg.shape[0]} rows, bitmask "
                f"{bm.shape[0]}), got values in [{lo}, {hi}]"
            )
    return rows.to(lg.device).contiguous()


def _temperatures(temperature: Any, batch: int, device: Any) -> Any:
    torch = _torch()
    if isinstance(temperature, torch.Tensor):
        if not temperature.dtype.is_floating_point:
            raise ValueError(f"temperature must be floating point, got {temperature.dtype}")
        if temperature.dim() == 0:
            temperature = temperature.reshape(1).expand(batch)
        if temperature.shape != (batch,):
            raise ValueError(
                f"temperature must be a float or a ({batch},) tensor, got shape "
                f"{tuple(temperature.shape)}"
            )
        if temperature.device != device:
            raise ValueError(f"temperature is on {temperature.device}, logits on {device}")
        if temperature.device.type == "cpu" and bool((temperature < 0).any() |
                                                      temperature.isnan().any()):
            raise ValueError("temperature must be >= 0")
        return temperature.to(torch.float32).contiguous()
    t = float(temperature)
    if not t >= 0 or t == float("inf"):
        raise ValueError(f"temperature must be a finite float >= 0, got {temperature!r}")
    return torch.full((batch,), t, dtype=torch.float32, device=device)


def _seeds(seeds: Any, batch: int, device: Any) -> Any:
    torch = _torch()
    if isinstance(seeds, torch.Tensor):
        if seeds.dtype.is_floating_point or seeds.dtype == torch.bool:
            raise ValueError(f"seeds must be an integer tensor, got {seeds.dtype}")
        if seeds.dim() == 0:
            seeds = seeds.reshape(1).expand(batch)
        if seeds.shape != (batch,):
            raise ValueError(f"seeds must have shape ({batch},), got {tuple(seeds.shape)}")
        if seeds.device != device:
            raise ValueError(
                f"seeds are on {seeds.device} but logits are on {device}: keep per-row seeds on "
                f"the logits' device"
            )
        return seeds.to(torch.int64).contiguous()
    if isinstance(seeds, int):
        return torch.full((batch,), seeds, dtype=torch.int64, device=device)
    out = torch.as_tensor(seeds, dtype=torch.int64)
    if out.shape != (batch,):
        raise ValueError(f"seeds must have shape ({batch},), got {tuple(out.shape)}")
    return out.to(device)


# -- public API ------------------------------------------------------------------------------------


def apply_token_bitmask_inplace(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    *,
    indices: IndexLike | None = None,
    vocab_size: int | None = None,
    backend: Backend = "auto",
) -> None:
    """Set every disallowed logit to ``-inf``, in place; allowed logits are left untouched.

    ``logits[i, j]`` is disallowed when ``j >= vocab`` or bit ``j % 32`` of ``bitmask[i, j // 32]``
    is 0 (vocab: see the module docstring, so logits wider than the vocabulary never keep a padding
    column). ``-inf`` is the float ``-inf`` of the logits' dtype; a row with no allowed token ends
    all ``-inf`` (softmax of it is NaN: check with :func:`masked_logsumexp` or use
    :func:`sample_constrained`, which returns token -1 for such a row).

    ``indices`` (mixed batches, XGrammar's convention): only logits rows ``indices[k]`` are masked,
    each with the bitmask row of the same number (``bitmask[indices[k]]``); other rows are left
    untouched, so the bitmask rows of unconstrained requests need not be filled. Indices must lie
    in ``[0, min(logits rows, bitmask rows))``; repeats are harmless. A device tensor of indices
    is not range-checked (that would synchronize); kernels skip out-of-range rows. Without
    ``indices``, bitmask and logits must have the same number of rows.
    """
    lg = _check_logits(logits)
    bm = _check_bitmask(bitmask, lg.device)
    vocab = _vocab(lg.shape[1], bm.shape[1], vocab_size)
    if indices is None:
        _check_rows(bm, lg)
        rows = None
    else:
        rows = _indices(indices, lg, bm)
    name = resolve_backend(lg.device, backend)
    if name == "torch":
        _module("torch").apply_token_bitmask_inplace_torch(lg, bm, rows, vocab)
    else:
        _module(name).apply(lg, bm, rows, vocab)


def masked_logsumexp(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    *,
    vocab_size: int | None = None,
    temperature: TemperatureLike = 1.0,
    normalize: bool = False,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Per row, in one pass over the logits (float32 result, shape ``(batch,)``, or a 0-d tensor
    for 1-D logits), with ``z = logits / temperature`` computed in float32:

    - ``normalize=False``: ``log(sum over allowed j of exp(z_j))``, the log of the allowed mass of
      the unnormalized distribution ``exp(z)`` (for log-probabilities this is already the log
      allowed probability mass).
    - ``normalize=True``: ``log(sum over allowed j of softmax(z)_j)``, the log allowed probability
      mass in ``[-inf, 0]``: the importance weight a masked (locally constrained) sampler returns.
      The softmax runs over the full logits width: disallowed columns, including those past the
      vocabulary, count in the normalizer.

    Allowed is as in :func:`apply_token_bitmask_inplace`. A row with no allowed token (or only
    ``-inf`` allowed logits) gives ``-inf``. ``temperature`` is a float or a per-row tensor, ``>=
    0``; at 0 the tempered distribution is the point mass on the row's maximal logit: with
    ``normalize=True`` the result is 0.0 if an allowed token attains the row's maximum and ``-inf``
    otherwise (with ``normalize=False``, ``z`` is the untempered logits). Logits must not contain
    NaN or ``+inf``.
    """
    lg = _check_logits(logits)
    bm = _check_bitmask(bitmask, lg.device)
    _check_rows(bm, lg)
    vocab = _vocab(lg.shape[1], bm.shape[1], vocab_size)
    temps = _temperatures(temperature, lg.shape[0], lg.device)
    name = resolve_backend(lg.device, backend)
    if name == "torch":
        out = _module("torch").masked_logsumexp_torch(lg, bm, vocab, temps, bool(normalize))
    else:
        _, out = _module(name).reduce(lg, bm, vocab, temps, normalize=bool(normalize))
    return out[0] if logits.dim() == 1 else out


def sample_constrained(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    seeds: SeedLike,
    *,
    temperature: TemperatureLike = 1.0,
    step: int = 0,
    vocab_size: int | None = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused constrained sampling: temperature, mask and Gumbel-max in one pass over the logits.

    Returns ``(tokens, log_mass)``: int64 and float32 tensors of shape ``(batch,)`` (0-d for 1-D
    logits). With ``z = logits / temperature`` in float32 and ``g_j`` the Gumbel noise of
    :func:`kernels.torch_ref.gumbel` for this row's seed, ``step`` and column ``j``:

    - ``tokens[i] = argmax over allowed j with z_j > -inf of (z_j + g_j)`` (the first index on an
      exact tie), an exact sample from ``softmax(z)`` restricted to the allowed tokens and
      renormalized; at ``temperature == 0``, the argmax of ``z`` over them (greedy).
    - ``log_mass[i]`` = ``masked_logsumexp(..., normalize=True)``: the log of the allowed
      probability mass, the weight that makes masked sampling properly weighted.
    - A row with no allowed token (or only ``-inf`` allowed logits) gives token ``-1`` and
      ``log_mass = -inf``; feed -1 to :func:`advance_dfa_states` and the row becomes dead.

    ``seeds``: an int, or one int64 per row (a tensor on the logits' device keeps the decode loop
    free of host-device copies). The noise is a pure function of ``(seed, step, column)``: the
    same seed and step give the same token on every backend and batch position; pass a new
    ``step`` (or seed) at each decoding step. ``step`` is taken modulo 2**32.
    """
    lg = _check_logits(logits)
    bm = _check_bitmask(bitmask, lg.device)
    _check_rows(bm, lg)
    vocab = _vocab(lg.shape[1], bm.shape[1], vocab_size)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    temps = _temperatures(temperature, lg.shape[0], lg.device)
    sd = _seeds(seeds, lg.shape[0], lg.device)
    name = resolve_backend(lg.device, backend)
    if name == "torch":
        token, out = _module("torch").sample_constrained_torch(lg, bm, sd, vocab, temps, step)
    else:
        token, out = _module(name).reduce(lg, bm, vocab, temps, normalize=True, seeds=sd,
                                          step=step)
    if logits.dim() == 1:
        return token[0], out[0]
    return token, out


def _check_int_vector(x: Any, name: str, device: Any, length: int | None = None) -> Any:
    torch = _torch()
    _check_tensor(x, name)
    if x.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be int32 or int64, got {x.dtype}")
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
    if length is not None and x.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries, got {x.shape[0]}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device}, the tables on {device}")
    return x if x.is_contiguous() else x.contiguous()


def _check_table(table: Any, name: str) -> Any:
    torch = _torch()
    _check_tensor(table, name)
    if table.dtype != torch.int32:
        raise ValueError(f"{name} must be int32, got {table.dtype}")
    if table.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(table.shape)}")
    return table if table.stride(1) == 1 else table.contiguous()


def fill_bitmask_from_dfa_states(
    state_masks: torch.Tensor,
    states: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Bitmask rows of a regular constraint, on the device: ``out[b] = state_masks[states[b]]``.

    ``state_masks``: int32 ``(S, W)``, row ``s`` the bitmask of the tokens allowed in DFA state
    ``s`` (``W = ceil(V / 32)``). ``states``: int32/int64 ``(batch,)`` state ids on the same
    device. A state outside ``[0, S)`` (-1 = dead) gives an all-zero row: nothing allowed.
    ``out``: an optional int32 ``(batch, W)`` tensor to fill (allocated if None); returned.
    """
    table = _check_table(state_masks, "state_masks")
    st = _check_int_vector(states, "states", table.device)
    torch = _torch()
    if out is None:
        out = torch.empty((st.shape[0], table.shape[1]), dtype=torch.int32, device=table.device)
    else:
        _check_tensor(out, "out")
        if out.dtype != torch.int32 or tuple(out.shape) != (st.shape[0], table.shape[1]):
            raise ValueError(
                f"out must be int32 of shape {(st.shape[0], table.shape[1])}, got {out.dtype} "
                f"{tuple(out.shape)}"
            )
        if out.device != table.device or not out.is_contiguous():
            raise ValueError("out must be a contiguous tensor on the tables' device")
    name = resolve_backend(table.device, backend)
    if name == "torch":
        _module("torch").fill_bitmask_from_dfa_states_torch(table, st, out)
    else:
        _module(name).fill_from_states(table, st, out)
    return out


def advance_dfa_states(
    transitions: torch.Tensor,
    states: torch.Tensor,
    tokens: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Advance each row's DFA state by its sampled token, on the device.

    ``out[b] = transitions[states[b], tokens[b]]``; -1 (dead) when ``states[b]`` is outside
    ``[0, S)`` or ``tokens[b]`` outside ``[0, V)`` (e.g. token -1 from a row with nothing
    allowed). ``transitions``: int32 ``(S, V)``, -1 = dead. ``states``, ``tokens``: int32/int64
    ``(batch,)`` on the same device. ``out``: optional, same dtype and shape as ``states``
    (``out=states`` updates in place); allocated if None; returned.
    """
    table = _check_table(transitions, "transitions")
    st = _check_int_vector(states, "states", table.device)
    tk = _check_int_vector(tokens, "tokens", table.device, st.shape[0])
    if out is None:
        out = _torch().empty_like(st)
    else:
        _check_tensor(out, "out")
        if out.dtype != st.dtype or out.shape != st.shape or out.device != st.device:
            raise ValueError("out must match states in dtype, shape and device")
        if not out.is_contiguous():
            raise ValueError("out must be contiguous")
    name = resolve_backend(table.device, backend)
    if name == "torch":
        _module("torch").advance_dfa_states_torch(table, st, tk, out)
    else:
        _module(name).advance_states(table, st, tk, out)
    return out
