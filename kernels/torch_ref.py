"""Torch reference kernels: the semantics every other backend is tested against.

Written for clarity, not speed (it materializes a boolean mask and a full noise tensor). Every
function here takes arguments already checked and normalized by :mod:`kernels.dispatch`:
2-D logits ``(batch, width)``, a 2-D int32 bitmask, ``rows`` (an int64 tensor of logits rows, or
``None`` for every row), an effective ``vocab`` (``<= width`` and ``<= 32 * words``), and for the
samplers a float32 ``temperature`` tensor of shape ``(batch,)``.

The counter-based random numbers used for Gumbel-max sampling are specified here (:func:`gumbel`);
the CPU and Triton backends implement the same function bit for bit, so the same seed gives the
same token on every backend (up to a 1-ulp difference of ``log`` between math libraries, which
changes a token only on an exact tie of two perturbed scores).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RNG_KEY_SALT",
    "RNG_STEP_SALT",
    "advance_dfa_states_torch",
    "allowed_mask",
    "apply_token_bitmask_inplace_torch",
    "fill_bitmask_from_dfa_states_torch",
    "gumbel",
    "masked_logsumexp_torch",
    "sample_constrained_torch",
    "uniform",
]

MASK32 = 0xFFFFFFFF
FMIX_M1 = 0x85EBCA6B
FMIX_M2 = 0xC2B2AE35
RNG_STEP_SALT = 0x9E3779B9
RNG_KEY_SALT = 0x7F4A7C15


def allowed_mask(bitmask: Any, width: int, vocab: int) -> Any:
    """Boolean ``(rows, width)``: bit ``j % 32`` of word ``j // 32`` for ``j < vocab``, else False."""
    import torch

    rows, words = bitmask.shape
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    bits = ((bitmask.to(torch.int32).unsqueeze(-1) >> shifts) & 1).bool()
    allowed = bits.reshape(rows, words * 32)[:, :vocab]
    if vocab < width:
        pad = torch.zeros((rows, width - vocab), dtype=torch.bool, device=bitmask.device)
        allowed = torch.cat([allowed, pad], dim=1)
    return allowed


def apply_token_bitmask_inplace_torch(logits: Any, bitmask: Any, rows: Any, vocab: int) -> None:
    """Reference of :func:`kernels.apply_token_bitmask_inplace` (see there for the contract)."""
    if rows is None:
        logits.masked_fill_(~allowed_mask(bitmask, logits.shape[1], vocab), float("-inf"))
        return
    if rows.numel() == 0:
        return
    allowed = allowed_mask(bitmask.index_select(0, rows), logits.shape[1], vocab)
    picked = logits.index_select(0, rows).masked_fill_(~allowed, float("-inf"))
    # Duplicate rows receive identical values (same bitmask row), so index_copy_ is well defined.
    logits.index_copy_(0, rows, picked)


# -- counter-based random numbers ------------------------------------------------------------


def _mul32(x: Any, m: int) -> Any:
    """(x * m) mod 2**32 for int64 tensors holding uint32 values, without int64 overflow."""
    lo = (x * (m & 0xFFFF)) & MASK32
    hi = ((x * (m >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def _fmix32(h: Any) -> Any:
    """MurmurHash3's 32-bit finalizer on int64 tensors holding uint32 values."""
    h = h ^ (h >> 16)
    h = _mul32(h, FMIX_M1)
    h = h ^ (h >> 13)
    h = _mul32(h, FMIX_M2)
    return h ^ (h >> 16)


def row_keys(seeds: Any, step: int) -> tuple[Any, Any]:
    """Per-row keys ``(ka, kb)`` (int64 tensors holding uint32) from int64 seeds and the step."""
    import torch

    s = seeds.to(torch.int64)
    lo = s & MASK32
    hi = (s >> 32) & MASK32
    st = _fmix32(torch.full_like(s, (step & MASK32) ^ RNG_STEP_SALT))
    ka = _fmix32(lo ^ _fmix32(hi ^ st))
    kb = _fmix32(ka ^ RNG_KEY_SALT)
    return ka, kb


def uniform(seeds: Any, step: int, width: int) -> Any:
    """float32 ``(batch, width)`` uniforms in (0, 1), a pure function of (seed, step, column).

    With all arithmetic on unsigned 32-bit integers modulo 2**32, ``fmix32`` MurmurHash3's
    finalizer (``h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16``),
    ``lo``/``hi`` the low and high 32 bits of the int64 seed (two's complement):

        ka = fmix32(lo ^ fmix32(hi ^ fmix32((step mod 2**32) ^ 0x9E3779B9)))
        kb = fmix32(ka ^ 0x7F4A7C15)
        h  = fmix32(fmix32(j ^ ka) ^ kb)               for column j
        u  = ((h >> 8) + 0.5) / 2**24                  exact in float32, in (0, 1)
    """
    import torch

    ka, kb = row_keys(seeds, step)
    j = torch.arange(width, dtype=torch.int64, device=seeds.device)
    h = _fmix32(_fmix32(j.unsqueeze(0) ^ ka.unsqueeze(1)) ^ kb.unsqueeze(1))
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def gumbel(seeds: Any, step: int, width: int) -> Any:
    """float32 Gumbel(0, 1) noise ``-log(-log(u))`` with ``u`` from :func:`uniform`."""
    import torch

    return -torch.log(-torch.log(uniform(seeds, step, width)))


# -- reductions and sampling -------------------------------------------------------------------


def _tempered(logits: Any, temperature: Any) -> tuple[Any, Any]:
    """(z, greedy): z = logits / T as float32 (logits themselves where T == 0)."""
    import torch

    x = logits.float()
    t = temperature.to(torch.float32).unsqueeze(1)
    greedy = t == 0
    z = torch.where(greedy, x, x / torch.where(greedy, torch.ones_like(t), t))
    return z, greedy.squeeze(1)


def _log_mass(z: Any, allowed: Any, greedy: Any, normalize: bool) -> Any:
    import torch

    neg_inf = float("-inf")
    lse_allowed = z.masked_fill(~allowed, neg_inf).logsumexp(dim=1)
    if not normalize:
        return lse_allowed
    lse_all = z.logsumexp(dim=1)
    out = torch.where(lse_allowed == neg_inf, torch.full_like(lse_allowed, neg_inf),
                      lse_allowed - lse_all)
    # T == 0: the tempered distribution is a point mass on the first maximal logit of the row.
    best_allowed = z.masked_fill(~allowed, neg_inf).amax(dim=1)
    best_all = z.amax(dim=1)
    point = torch.where((best_allowed == best_all) & (best_allowed > neg_inf),
                        torch.zeros_like(out), torch.full_like(out, neg_inf))
    return torch.where(greedy, point, out)


def masked_logsumexp_torch(
    logits: Any, bitmask: Any, vocab: int, temperature: Any, normalize: bool
) -> Any:
    """Reference of :func:`kernels.masked_logsumexp` (see there for the contract)."""
    z, greedy = _tempered(logits, temperature)
    allowed = allowed_mask(bitmask, logits.shape[1], vocab)
    if not normalize:
        import torch

        # T == 0 without normalization: logsumexp of the untempered allowed logits.
        return z.masked_fill(~allowed, float("-inf")).logsumexp(dim=1).to(torch.float32)
    return _log_mass(z, allowed, greedy, True)


def sample_constrained_torch(
    logits: Any, bitmask: Any, seeds: Any, vocab: int, temperature: Any, step: int
) -> tuple[Any, Any]:
    """Reference of :func:`kernels.sample_constrained` (see there for the contract)."""
    import torch

    neg_inf = float("-inf")
    width = logits.shape[1]
    z, greedy = _tempered(logits, temperature)
    allowed = allowed_mask(bitmask, width, vocab)
    eligible = allowed & (z > neg_inf)
    score = torch.where(greedy.unsqueeze(1), z, z + gumbel(seeds, step, width))
    score = score.masked_fill(~eligible, neg_inf)
    token = score.argmax(dim=1)  # first maximal index on ties
    token = torch.where(eligible.any(dim=1), token, torch.full_like(token, -1))
    return token, _log_mass(z, allowed, greedy, True)


# -- regular constraints on the device -----------------------------------------------------------


def fill_bitmask_from_dfa_states_torch(state_masks: Any, states: Any, out: Any) -> None:
    """Reference of :func:`kernels.fill_bitmask_from_dfa_states`."""
    import torch

    n_states = state_masks.shape[0]
    s = states.to(torch.int64)
    valid = (s >= 0) & (s < n_states)
    rows = state_masks.index_select(0, s.clamp(0, max(n_states - 1, 0)))
    out.copy_(torch.where(valid.unsqueeze(1), rows, torch.zeros_like(rows)))


def advance_dfa_states_torch(transitions: Any, states: Any, tokens: Any, out: Any) -> None:
    """Reference of :func:`kernels.advance_dfa_states`."""
    import torch

    n_states, vocab = transitions.shape
    s = states.to(torch.int64)
    t = tokens.to(torch.int64)
    valid = (s >= 0) & (s < n_states) & (t >= 0) & (t < vocab)
    nxt = transitions[s.clamp(0, max(n_states - 1, 0)), t.clamp(0, max(vocab - 1, 0))]
    nxt = torch.where(valid, nxt.to(torch.int64), torch.full_like(s, -1))
    out.copy_(nxt.to(out.dtype))
