"""Triton backend (CUDA GPUs; also runs on CPU tensors under ``TRITON_INTERPRET=1``).

Importing this module imports triton. The dispatcher (:mod:`kernels.dispatch`) imports it only for
CUDA tensors or when asked for ``backend="triton"``; arguments arrive checked and normalized.

- ``apply``: a persistent grid (at most ``8 * SMs`` programs walk the (row, block) work items), the
  bitmask words of a block loaded as one vector and expanded to bits in registers, and a masked
  store of ``-inf``: allowed logits are never read nor written, so traffic is the bitmask plus the
  masked elements.
- ``reduce``: masked logsumexp and the fused constrained sampler in one pass over the row (online
  max/sum for the whole row and for the allowed tokens, Gumbel-max argmax in the same loop), as in
  the Gumbel-max trick (Gumbel 1954; Maddison et al., "A* Sampling", 2014) with the counter-based
  noise specified in :func:`kernels.torch_ref.uniform`.
- ``fill_from_states`` / ``advance_states``: DFA state -> bitmask row gather and transition
  lookup, so a regular constraint is decoded without CPU mask work or host-device copies.
"""

from __future__ import annotations

import os
from typing import Any

import triton
import triton.language as tl

from kernels.torch_ref import FMIX_M1, FMIX_M2, MASK32, RNG_STEP_SALT

__all__ = ["advance_states", "apply", "fill_from_states", "reduce"]

APPLY_BLOCK = 4096
REDUCE_BLOCK = 2048
FILL_BLOCK_WORDS = 1024
ADVANCE_BLOCK = 256

_SM_COUNT: dict[int, int] = {}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _max_programs(device: Any) -> int:
    if device.type != "cuda":
        return 3  # interpreter: few programs so the persistent loop runs several iterations
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return 8 * _SM_COUNT[index]


def _host_fmix32(h: int) -> int:
    h &= MASK32
    h ^= h >> 16
    h = (h * FMIX_M1) & MASK32
    h ^= h >> 13
    h = (h * FMIX_M2) & MASK32
    return h ^ (h >> 16)


# -- apply -----------------------------------------------------------------------------------------


@triton.jit
def _apply_kernel(
    logits_ptr,
    bitmask_ptr,
    rows_ptr,
    n_work_rows,
    n_logit_rows,
    n_mask_rows,
    vocab,
    width,
    words,
    stride_lr,
    stride_lc,
    stride_br,
    HAS_ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_blocks = tl.cdiv(width, BLOCK)
    total = n_work_rows * n_blocks
    for work in range(pid, total, nprog):
        k = work // n_blocks
        blk = work - k * n_blocks
        if HAS_ROWS:
            row = tl.load(rows_ptr + k).to(tl.int64)
        else:
            row = k.to(tl.int64)
        # An out-of-range row (unchecked device indices) touches nothing. Row validity is folded
        # into the bounds (a scalar & block mask is mistyped by the interpreter).
        row_ok = (row >= 0) & (row < n_logit_rows) & (row < n_mask_rows)
        row_words = tl.where(row_ok, words, 0)
        row_width = tl.where(row_ok, width, 0)
        widx = blk * (BLOCK // 32) + tl.arange(0, BLOCK // 32)
        packed = tl.load(bitmask_ptr + row * stride_br + widx, mask=widx < row_words, other=0)
        bits = (packed[:, None] >> tl.arange(0, 32)[None, :]) & 1
        bits = tl.reshape(bits, (BLOCK,))
        cols = blk * BLOCK + tl.arange(0, BLOCK)
        kill = ((bits == 0) | (cols >= vocab)) & (cols < row_width)
        tl.store(logits_ptr + row * stride_lr + cols * stride_lc, float("-inf"), mask=kill)


def apply(logits: Any, bitmask: Any, rows: Any, vocab: int) -> None:
    """Set disallowed logits to -inf in place (contract in :func:`kernels.apply_token_bitmask_inplace`)."""
    n_work_rows = logits.shape[0] if rows is None else rows.numel()
    width = logits.shape[1]
    if n_work_rows == 0 or width == 0:
        return
    n_blocks = triton.cdiv(width, APPLY_BLOCK)
    grid = (min(n_work_rows * n_blocks, _max_programs(logits.device)),)
    _apply_kernel[grid](
        logits,
        bitmask,
        rows if rows is not None else bitmask,
        n_work_rows,
        logits.shape[0],
        bitmask.shape[0],
        vocab,
        width,
        bitmask.shape[1],
        logits.stride(0),
        logits.stride(1),
        bitmask.stride(0),
        HAS_ROWS=rows is not None,
        BLOCK=APPLY_BLOCK,
        num_warps=4,
    )


# -- one-pass reductions: masked logsumexp and the fused sampler ---------------------------------


@triton.jit
def _fmix32(h):
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    h ^= h >> 16
    return h


@triton.jit
def _online(m, s, v):
    """Fold the block v into the running (max, sum of exp(x - max)); -inf-safe."""
    new_m = tl.maximum(m, tl.max(v, 0))
    safe = tl.where(new_m == float("-inf"), 0.0, new_m)
    s = s * tl.exp(m - safe) + tl.sum(tl.exp(v - safe), 0)
    return new_m, s


@triton.jit(do_not_specialize=["step_key"])  # a hash: never a constexpr (e.g. when it is 1)
def _reduce_kernel(
    logits_ptr,
    bitmask_ptr,
    seeds_ptr,
    temps_ptr,
    token_ptr,
    out_ptr,
    vocab,
    width,
    words,
    stride_lr,
    stride_lc,
    stride_br,
    step_key,
    SAMPLE: tl.constexpr,
    NORMALIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    neg_inf = float("-inf")
    t = tl.load(temps_ptr + row).to(tl.float32)
    greedy = t == 0.0
    t_div = tl.where(greedy, 1.0, t)
    if SAMPLE:
        seed = tl.load(seeds_ptr + row).to(tl.int64)
        lo = (seed & 0xFFFFFFFF).to(tl.uint32)
        hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
        ka = _fmix32(lo ^ _fmix32(hi ^ step_key.to(tl.uint32)))
        kb = _fmix32(ka ^ 0x7F4A7C15)  # RNG_KEY_SALT
    m_all = tl.full((), neg_inf, tl.float32)
    s_all = tl.full((), 0.0, tl.float32)
    m_ok = tl.full((), neg_inf, tl.float32)
    s_ok = tl.full((), 0.0, tl.float32)
    best = tl.full((), neg_inf, tl.float32)
    best_tok = tl.full((), -1, tl.int32)
    for start in range(0, width, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        in_row = cols < width
        x = tl.load(logits_ptr + row * stride_lr + cols * stride_lc, mask=in_row, other=neg_inf)
        x = x.to(tl.float32)
        z = tl.where(greedy, x, tl.math.div_rn(x, t_div))  # IEEE division, as torch and numba
        widx = start // 32 + tl.arange(0, BLOCK // 32)
        packed = tl.load(bitmask_ptr + row * stride_br + widx, mask=widx < words, other=0)
        bits = tl.reshape((packed[:, None] >> tl.arange(0, 32)[None, :]) & 1, (BLOCK,))
        allowed = (bits != 0) & (cols < vocab)
        z_ok = tl.where(allowed, z, neg_inf)
        if NORMALIZE:
            m_all, s_all = _online(m_all, s_all, z)
        m_ok, s_ok = _online(m_ok, s_ok, z_ok)
        if SAMPLE:
            h = _fmix32(_fmix32(cols.to(tl.uint32) ^ ka) ^ kb)
            u = ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
            g = -tl.log(-tl.log(u))
            score = tl.where(greedy, z_ok, z_ok + g)
            score = tl.where(z_ok > neg_inf, score, neg_inf)
            b_max = tl.max(score, 0)
            b_arg = tl.argmax(score, 0, tie_break_left=True).to(tl.int32) + start
            better = b_max > best
            best_tok = tl.where(better, b_arg, best_tok)
            best = tl.where(better, b_max, best)
    ok_sum = tl.where(m_ok == neg_inf, 1.0, s_ok)  # no log(0) on empty rows
    lse_ok = tl.where(m_ok == neg_inf, neg_inf, m_ok + tl.log(ok_sum))
    if NORMALIZE:
        lse_all = tl.where(m_all == neg_inf, neg_inf,
                           m_all + tl.log(tl.where(m_all == neg_inf, 1.0, s_all)))
        mass = tl.where(lse_ok == neg_inf, neg_inf, lse_ok - lse_all)
        point = tl.where((m_ok == m_all) & (m_ok > neg_inf), 0.0, neg_inf)
        mass = tl.where(greedy, point, mass)
    else:
        mass = lse_ok
    tl.store(out_ptr + row, mass)
    if SAMPLE:
        tl.store(token_ptr + row, tl.where(best > neg_inf, best_tok, -1).to(tl.int64))


def reduce(
    logits: Any,
    bitmask: Any,
    vocab: int,
    temperature: Any,
    *,
    normalize: bool,
    seeds: Any = None,
    step: int = 0,
) -> tuple[Any, Any]:
    """(token or None, float32 result) per row: the masked logsumexp / log allowed mass, and with
    ``seeds`` the Gumbel-max token (contracts in :func:`kernels.masked_logsumexp` and
    :func:`kernels.sample_constrained`)."""
    import torch

    batch, width = logits.shape
    out = torch.empty(batch, dtype=torch.float32, device=logits.device)
    sample = seeds is not None
    token = torch.empty(batch, dtype=torch.int64, device=logits.device) if sample else None
    if batch == 0:
        return token, out
    step_key = _host_fmix32((step & MASK32) ^ RNG_STEP_SALT)
    _reduce_kernel[(batch,)](
        logits,
        bitmask,
        seeds if sample else temperature,
        temperature,
        token if sample else out,
        out,
        vocab,
        width,
        bitmask.shape[1],
        logits.stride(0),
        logits.stride(1),
        bitmask.stride(0),
        step_key,
        SAMPLE=sample,
        NORMALIZE=normalize or sample,
        BLOCK=REDUCE_BLOCK,
        num_warps=8,
    )
    return token, out


# -- regular constraints -----------------------------------------------------------------------------


@triton.jit
def _fill_kernel(table_ptr, states_ptr, out_ptr, n_states, words, stride_t, stride_o,
                 BLOCK_W: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    wb = tl.program_id(1)
    s = tl.load(states_ptr + row).to(tl.int64)
    valid = (s >= 0) & (s < n_states)
    cols = wb * BLOCK_W + tl.arange(0, BLOCK_W)
    in_row = cols < words
    v = tl.load(table_ptr + s * stride_t + cols, mask=cols < tl.where(valid, words, 0), other=0)
    tl.store(out_ptr + row * stride_o + cols, v, mask=in_row)


def fill_from_states(state_masks: Any, states: Any, out: Any) -> None:
    """``out[b] = state_masks[states[b]]`` (all zero for a state outside ``[0, S)``)."""
    batch, words = out.shape
    if batch == 0 or words == 0:
        return
    grid = (batch, triton.cdiv(words, FILL_BLOCK_WORDS))
    _fill_kernel[grid](state_masks, states, out, state_masks.shape[0], words,
                       state_masks.stride(0), out.stride(0), BLOCK_W=FILL_BLOCK_WORDS)


@triton.jit
def _advance_kernel(trans_ptr, states_ptr, tokens_ptr, out_ptr, n_rows, n_states, vocab, stride_t,
                    BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < n_rows
    s = tl.load(states_ptr + offs, mask=in_range, other=-1).to(tl.int64)
    t = tl.load(tokens_ptr + offs, mask=in_range, other=-1).to(tl.int64)
    valid = in_range & (s >= 0) & (s < n_states) & (t >= 0) & (t < vocab)
    nxt = tl.load(trans_ptr + s * stride_t + t, mask=valid, other=-1)
    tl.store(out_ptr + offs, nxt.to(out_ptr.dtype.element_ty), mask=in_range)


def advance_states(transitions: Any, states: Any, tokens: Any, out: Any) -> None:
    """``out[b] = transitions[states[b], tokens[b]]`` (-1 when either is out of range)."""
    n = states.numel()
    if n == 0:
        return
    grid = (triton.cdiv(n, ADVANCE_BLOCK),)
    _advance_kernel[grid](transitions, states, tokens, out, n, transitions.shape[0],
                          transitions.shape[1], transitions.stride(0), BLOCK=ADVANCE_BLOCK)
