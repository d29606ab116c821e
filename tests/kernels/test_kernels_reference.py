"""The torch reference against per-element oracles: it defines the semantics, so it is checked too."""

import numpy as np
import pytest
import torch
from kernels_cases import make_case, random_bitmask, spec_uniform

import kernels
from kernels import torch_ref
from kernels.bitmask import allocate_token_bitmask, bitmask_size, bitmask_to_bool, bool_to_bitmask


def oracle_apply(logits: np.ndarray, bitmask: np.ndarray, vocab: int, rows: list[int]) -> np.ndarray:
    out = logits.copy()
    for i in rows:
        for j in range(out.shape[1]):
            word = int(bitmask[i, j // 32]) & 0xFFFFFFFF if j // 32 < bitmask.shape[1] else 0
            if j >= vocab or not (word >> (j % 32)) & 1:
                out[i, j] = -np.inf
    return out


@pytest.mark.parametrize("layout", ["plain", "wider", "narrow_mask", "col_strided", "indices"])
@pytest.mark.parametrize("vocab", [1000, 77])
def test_reference_apply_matches_oracle(layout: str, vocab: int) -> None:
    case = make_case(4, vocab, torch.float32, layout, seed=3)
    width = case.logits.shape[1]
    words = case.bitmask.shape[1]
    eff = min(width, 32 * words) if case.vocab_size is None else min(case.vocab_size, width)
    rows = list(range(4)) if case.indices is None else case.indices
    expect = oracle_apply(case.logits.numpy(), case.bitmask.numpy(), eff, rows)
    got = case.logits.clone()
    kernels.apply_token_bitmask_inplace(got, case.bitmask, indices=case.indices,
                                        vocab_size=case.vocab_size, backend="torch")
    np.testing.assert_array_equal(got.numpy(), expect)


def test_bitmask_helpers_roundtrip() -> None:
    gen = torch.Generator().manual_seed(1)
    allowed = torch.rand(3, 1001, generator=gen) < 0.3
    bm = bool_to_bitmask(allowed)
    assert bm.dtype == torch.int32 and bm.shape == (3, bitmask_size(1001)) == (3, 32)
    assert torch.equal(bitmask_to_bool(bm, 1001), allowed)
    bm_np = bool_to_bitmask(allowed.numpy())
    np.testing.assert_array_equal(bm_np, bm.numpy())
    np.testing.assert_array_equal(bitmask_to_bool(bm_np, 1001), allowed.numpy())
    full = allocate_token_bitmask(2, 100)
    assert full.shape == (2, 4) and bool((full == -1).all())
    # bit i % 32 of word i // 32: token 33 is bit 1 of word 1
    one = bool_to_bitmask(torch.arange(64) == 33)
    assert one.tolist() == [0, 2]


@pytest.mark.parametrize("seed", [0, 1, -1, 2**40 + 17, -(2**63), 2**63 - 1])
@pytest.mark.parametrize("step", [0, 1, 12345, 2**32 + 5])
def test_reference_rng_matches_spec(seed: int, step: int) -> None:
    got = torch_ref.uniform(torch.tensor([seed]), step, 300)[0].numpy()
    np.testing.assert_array_equal(got, spec_uniform(seed, step, 300))
    assert got.min() > 0 and got.max() < 1


def test_reference_rng_is_uniform_and_decorrelated() -> None:
    u = torch_ref.uniform(torch.arange(64), 0, 4096).double()
    assert abs(u.mean().item() - 0.5) < 0.005
    assert abs(u.var().item() - 1 / 12) < 0.002
    # neighbouring seeds, steps and columns are uncorrelated
    c_rows = torch.corrcoef(u[:8])
    assert (c_rows - torch.eye(8, dtype=torch.float64)).abs().max() < 0.07
    v = torch_ref.uniform(torch.arange(64), 1, 4096).double()
    assert abs(torch.corrcoef(torch.stack([u.flatten(), v.flatten()]))[0, 1]) < 0.01


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_reference_logsumexp_matches_float64(temperature: float) -> None:
    case = make_case(3, 1000, torch.float32, "wider", seed=4)
    allowed = torch_ref.allowed_mask(case.bitmask, case.logits.shape[1], 1000).numpy()
    z = case.logits.double().numpy() / temperature
    lse_ok = np.log(np.where(allowed, np.exp(z), 0).sum(1))
    lse_all = np.log(np.exp(z).sum(1))
    got = kernels.masked_logsumexp(case.logits, case.bitmask, vocab_size=1000,
                                   temperature=temperature, backend="torch")
    np.testing.assert_allclose(got.numpy(), lse_ok, rtol=1e-5, atol=1e-5)
    got = kernels.masked_logsumexp(case.logits, case.bitmask, vocab_size=1000,
                                   temperature=temperature, normalize=True, backend="torch")
    np.testing.assert_allclose(got.numpy(), lse_ok - lse_all, rtol=1e-5, atol=1e-5)


def test_reference_special_rows() -> None:
    logits = torch.randn(4, 100)
    bm = random_bitmask(4, 100, torch.Generator().manual_seed(0))
    bm[1] = 0  # nothing allowed
    logits[2] = float("-inf")  # everything -inf
    bm[3] = 0
    bm[3, 0] = 1  # only token 0 allowed ...
    logits[3, 0] = float("-inf")  # ... and its logit is -inf
    tok, mass = kernels.sample_constrained(logits, bm, 7, backend="torch")
    assert tok[1:].tolist() == [-1, -1, -1]
    assert bool(torch.isneginf(mass[1:]).all())
    assert 0 <= tok[0] < 100 and mass[0] <= 0
    lse = kernels.masked_logsumexp(logits, bm, backend="torch")
    assert bool(torch.isneginf(lse[1:]).all())
