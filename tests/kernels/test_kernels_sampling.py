"""Statistics of the fused constrained sampler (Gumbel-max with counter-based noise).

Pearson's chi-square test of 20,000 draws (one row per seed, one call) against the masked softmax
distribution ``softmax(logits / T)`` restricted to the allowed tokens and renormalized; the
p-value is computed here (no scipy) and must exceed 1e-3. Seeds are fixed, so the test is
deterministic: a correct sampler fails it with probability 1e-3 over the choice of seeds, a
biased one (e.g. noise reused across columns, temperature applied after the noise, the mask
applied to the wrong bits) fails it with overwhelming probability. The Triton backend joins on
a CUDA machine; in the interpreter 20,000 programs would take hours, and its tokens are instead
checked equal to the reference's for the same seeds (test_kernels_triton.py,
test_kernels_dfa.py), which transfers this test to it.
"""

import numpy as np
import pytest
import torch
from kernels_cases import chi_square_pvalue

import kernels

BACKENDS = ["torch", "cpu"] + (["triton"] if torch.cuda.is_available() else [])
N = 20_000


def _problem(vocab: int = 40) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(vocab, generator=gen) * 1.5
    allowed = torch.rand(vocab, generator=gen) < 0.6
    allowed[3] = False
    logits[3] = logits.max() + 2  # the most likely token is disallowed
    return logits, kernels.bool_to_bitmask(allowed), allowed.numpy()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sampler_matches_masked_softmax(backend: str, temperature: float) -> None:
    logits, bitmask, allowed = _problem()
    device = "cuda" if backend == "triton" else "cpu"
    rows = logits.repeat(N, 1).to(device)
    masks = bitmask.repeat(N, 1).to(device)
    seeds = torch.arange(N, dtype=torch.int64, device=device) * 7 + 1
    tokens, log_mass = kernels.sample_constrained(rows, masks, seeds, temperature=temperature,
                                                  backend=backend)
    tokens = tokens.cpu().numpy()
    assert allowed[tokens].all(), "a disallowed token was sampled"

    z = logits.double().numpy() / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    q = np.where(allowed, p, 0.0)
    mass = q.sum()
    q /= mass
    observed = np.bincount(tokens, minlength=len(q))[allowed]
    pvalue, dof = chi_square_pvalue(observed, N * q[allowed])
    assert dof >= 10
    assert pvalue > 1e-3, f"chi-square p={pvalue:.2e} with {dof} dof"
    np.testing.assert_allclose(log_mass.cpu().numpy(), np.log(mass), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampler_steps_are_independent(backend: str) -> None:
    """One seed, 1,500 steps: the draws over steps follow the same distribution."""
    logits, bitmask, allowed = _problem(12)
    device = "cuda" if backend == "triton" else "cpu"
    lg, bm = logits.unsqueeze(0).to(device), bitmask.unsqueeze(0).to(device)
    seeds = torch.tensor([42], device=device)
    draws = [int(kernels.sample_constrained(lg, bm, seeds, step=s, backend=backend)[0])
             for s in range(1500)]
    p = np.exp(logits.double().numpy())
    q = np.where(allowed, p, 0.0)
    q /= q.sum()
    observed = np.bincount(draws, minlength=12)[allowed]
    pvalue, _ = chi_square_pvalue(observed, 1500 * q[allowed])
    assert pvalue > 1e-3


def test_sampler_token_depends_on_seed_step_column_only() -> None:
    """The same (seed, step) gives the same token whatever the row's position in the batch."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 500, generator=gen)
    bm = kernels.bool_to_bitmask(torch.rand(6, 500, generator=gen) < 0.5)
    seeds = torch.tensor([5, 6, 7, 8, 9, 10])
    tok, _ = kernels.sample_constrained(logits, bm, seeds, step=4)
    for i in range(6):
        one, _ = kernels.sample_constrained(logits[i], bm[i], int(seeds[i]), step=4)
        assert one.dim() == 0 and int(one) == int(tok[i])
    other, _ = kernels.sample_constrained(logits, bm, seeds, step=5)
    assert not torch.equal(other, tok)


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_is_masked_argmax(backend: str) -> None:
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(5, 3000, generator=gen)
    bm = kernels.bool_to_bitmask(torch.rand(5, 3000, generator=gen) < 0.1)
    device = "cuda" if backend == "triton" else "cpu"
    tok, mass = kernels.sample_constrained(logits.to(device), bm.to(device), 0, temperature=0.0,
                                           backend=backend)
    masked = logits.clone()
    kernels.apply_token_bitmask_inplace(masked, bm, backend="torch")
    assert torch.equal(tok.cpu(), masked.argmax(dim=1))
    expect = torch.where(masked.amax(1) == logits.amax(1), 0.0, float("-inf"))
    assert torch.equal(mass.cpu(), expect)
