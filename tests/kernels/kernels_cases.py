"""Shared case builders for the kernel tests (a plain module: no __init__.py in tests/kernels)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

VOCABS = (1000, 32000, 49152, 128256, 128257)
BATCHES = (1, 3, 64)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# plain: contiguous (batch, vocab); wider: rows are a view at an offset into a buffer padded past
# the vocabulary (row stride > width > vocab, vocab_size given); narrow_mask: logits wider than
# 32 * words and no vocab_size (the excess columns are masked); col_strided: column stride 2;
# indices: a mixed batch, every other row constrained, over row-strided padded logits.
LAYOUTS = ("plain", "wider", "narrow_mask", "col_strided", "indices")


@dataclass
class Case:
    logits: torch.Tensor
    bitmask: torch.Tensor
    vocab_size: int | None
    indices: list[int] | None


def random_bitmask(rows: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """Words drawn from three kinds, as real masks have: random bits, all 0, all 1."""
    words = (vocab + 31) // 32
    bits = torch.randint(-(2**31), 2**31, (rows, words), generator=gen, dtype=torch.int64)
    kind = torch.randint(0, 3, (rows, words), generator=gen)
    bits = torch.where(kind == 1, torch.zeros_like(bits), bits)
    bits = torch.where(kind == 2, torch.full_like(bits, -1), bits)
    return bits.to(torch.int32)


def make_case(batch: int, vocab: int, dtype: torch.dtype, layout: str, seed: int = 0) -> Case:
    gen = torch.Generator().manual_seed(seed * 1000003 + batch * 7919 + vocab)
    bitmask = random_bitmask(batch, vocab, gen)
    vocab_size = None
    indices = None
    if layout == "plain":
        logits = torch.randn(batch, vocab, generator=gen).to(dtype)
    elif layout == "wider":
        width = ((vocab + 127) // 128) * 128 + 128
        buf = torch.randn(batch, width + 40, generator=gen).to(dtype)
        logits = buf[:, 5 : 5 + width]
        vocab_size = vocab
    elif layout == "narrow_mask":
        logits = torch.randn(batch, 32 * bitmask.shape[1] + 77, generator=gen).to(dtype)
    elif layout == "col_strided":
        buf = torch.randn(batch, 2 * vocab, generator=gen).to(dtype)
        logits = buf[:, ::2]
    elif layout == "indices":
        buf = torch.randn(batch, vocab + 200, generator=gen).to(dtype)
        logits = buf[:, 3 : 3 + vocab + 64]
        vocab_size = vocab
        indices = list(range(batch - 1, -1, -2))  # every other row, in reverse order
    else:
        raise ValueError(layout)
    return Case(logits, bitmask, vocab_size, indices)


# -- the counter-based RNG, implemented again from its specification (kernels.torch_ref.uniform) --

_MASK = np.uint64(0xFFFFFFFF)


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h & _MASK
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & _MASK
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & _MASK
    return h ^ (h >> np.uint64(16))


def spec_uniform(seed: int, step: int, width: int) -> np.ndarray:
    """float32 uniforms per column for one row, straight from the docstring's formula."""
    s = seed & 0xFFFFFFFFFFFFFFFF
    lo = np.array([s & 0xFFFFFFFF], dtype=np.uint64)
    hi = np.array([s >> 32], dtype=np.uint64)
    st = _fmix32(np.array([(step & 0xFFFFFFFF) ^ 0x9E3779B9], dtype=np.uint64))
    ka = _fmix32(lo ^ _fmix32(hi ^ st))
    kb = _fmix32(ka ^ np.uint64(0x7F4A7C15))
    j = np.arange(width, dtype=np.uint64)
    h = _fmix32(_fmix32(j ^ ka) ^ kb)
    return (((h >> np.uint64(8)).astype(np.float32) + np.float32(0.5))
            * np.float32(1.0 / 16777216.0))


def spec_gumbel(seed: int, step: int, width: int) -> np.ndarray:
    u = spec_uniform(seed, step, width)
    return -np.log(-np.log(u))


# -- chi-square without scipy ---------------------------------------------------------------------


def _gammainc_upper_regularized(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a) (Numerical Recipes' gser / gcf)."""
    if x <= 0:
        return 1.0
    gln = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return 1.0 - total * math.exp(-x + a * math.log(x) - gln)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - gln) * h


def chi_square_pvalue(observed: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """Pearson's test, bins with expected count < 5 pooled; returns (p-value, degrees of freedom)."""
    order = np.argsort(expected)
    obs, exp = [], []
    acc_o = acc_e = 0.0
    for i in order:
        acc_o += observed[i]
        acc_e += expected[i]
        if acc_e >= 5:
            obs.append(acc_o)
            exp.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0:
        if exp:
            obs[-1] += acc_o
            exp[-1] += acc_e
        else:
            obs.append(acc_o)
            exp.append(acc_e)
    o = np.array(obs)
    e = np.array(exp)
    stat = float(((o - e) ** 2 / e).sum())
    dof = len(e) - 1
    return _gammainc_upper_regularized(dof / 2, stat / 2), dof


def clone_layout(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A deep copy of ``t`` with the same strides and offset into a copy of its base buffer.

    Returns (view, buffer): compare buffers to check nothing outside the view was written.
    """
    base = t if t._base is None else t._base
    buf = base.clone()
    return buf.as_strided(t.shape, t.stride(), t.storage_offset()), buf


# -- backend-vs-reference checks, shared by the CPU and Triton tests -----------------------------


def check_apply(case: Case, backend: str, device: str = "cpu") -> None:
    import kernels

    ref, ref_buf = clone_layout(case.logits)
    kernels.apply_token_bitmask_inplace(ref, case.bitmask, indices=case.indices,
                                        vocab_size=case.vocab_size, backend="torch")
    got, got_buf = clone_layout(case.logits.to(device) if device != "cpu" else case.logits)
    kernels.apply_token_bitmask_inplace(got, case.bitmask.to(device), indices=case.indices,
                                        vocab_size=case.vocab_size, backend=backend)
    # the whole buffer: masked elements match and nothing outside the view was written
    assert torch.equal(got_buf.cpu(), ref_buf)


def check_logsumexp(case: Case, backend: str, temperature: object, device: str = "cpu") -> None:
    import kernels

    logits = case.logits.to(device)
    for normalize in (False, True):
        ref = kernels.masked_logsumexp(case.logits, case.bitmask, vocab_size=case.vocab_size,
                                       temperature=temperature, normalize=normalize,
                                       backend="torch")
        t = temperature.to(device) if isinstance(temperature, torch.Tensor) else temperature
        got = kernels.masked_logsumexp(logits, case.bitmask.to(device),
                                       vocab_size=case.vocab_size, temperature=t,
                                       normalize=normalize, backend=backend)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        torch.testing.assert_close(got.cpu(), ref, rtol=2e-5, atol=2e-4)


def check_sample(case: Case, backend: str, temperature: object, step: int,
                 device: str = "cpu") -> None:
    import kernels

    batch = case.logits.shape[0]
    seeds = torch.arange(batch, dtype=torch.int64) * 1_000_003 - 5
    ref_tok, ref_mass = kernels.sample_constrained(
        case.logits, case.bitmask, seeds, temperature=temperature, step=step,
        vocab_size=case.vocab_size, backend="torch")
    t = temperature.to(device) if isinstance(temperature, torch.Tensor) else temperature
    tok, mass = kernels.sample_constrained(
        case.logits.to(device), case.bitmask.to(device), seeds.to(device), temperature=t,
        step=step, vocab_size=case.vocab_size, backend=backend)
    assert tok.dtype == torch.int64 and mass.dtype == torch.float32
    assert torch.equal(tok.cpu(), ref_tok)
    torch.testing.assert_close(mass.cpu(), ref_mass, rtol=2e-5, atol=2e-4)
