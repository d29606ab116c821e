"""Regular constraints on the device: the device-resident DFA path generates the same tokens as a
CPU reference loop for the same seed.

A synthetic random DFA (a state -> mask table int32 (S, W) and a token transition table int32
(S, V) with -1 = dead, one state with no allowed token so rows die) drives a decode loop that only
launches kernels on device tensors: fill the bitmask rows from the state ids, sample (fused
temperature + mask + Gumbel-max), advance the state ids; no host-side mask work, no copy. The
reference loop is plain Python/numpy per row: it reads the allowed tokens from the transition
table (not from the mask table), draws the Gumbel noise from the RNG's written specification
(kernels_cases.spec_gumbel, an independent implementation), takes the argmax and follows the
transition. Run for every backend (Triton in the interpreter when there is no GPU).
"""

import os

import numpy as np
import pytest
import torch
from kernels_cases import spec_gumbel

import kernels

N_STATES, VOCAB, BATCH, STEPS, TEMPERATURE = 12, 1000, 5, 12, 0.8
SEEDS = [3, 1 << 40, -7, 12345, 99]


def _backends() -> list[str]:
    out = ["torch", "cpu"]
    try:
        import triton  # noqa: F401
    except ImportError:  # pragma: no cover
        return out
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        out.append("triton")
    return out


def synthetic_dfa(seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(seed)
    trans = np.full((N_STATES, VOCAB), -1, dtype=np.int32)
    for s in range(N_STATES - 1):
        density = rng.uniform(0.02, 0.5)
        allowed = rng.random(VOCAB) < density
        trans[s, allowed] = rng.integers(0, N_STATES, allowed.sum())
    # state N_STATES - 1 allows nothing: rows reaching it get token -1, then stay dead (-1)
    masks = torch.from_numpy(kernels.bool_to_bitmask(trans != -1))
    return trans, masks


def reference_loop(trans: np.ndarray, logits: np.ndarray, start: np.ndarray) -> np.ndarray:
    tokens = np.full((STEPS, BATCH), -2, dtype=np.int64)
    state = start.astype(np.int64).copy()
    for t in range(STEPS):
        for b in range(BATCH):
            s = state[b]
            allowed = trans[s] != -1 if 0 <= s < N_STATES else np.zeros(VOCAB, dtype=bool)
            if not allowed.any():
                tokens[t, b] = -1
                state[b] = -1
                continue
            z = logits[t, b] / np.float32(TEMPERATURE)
            score = np.where(allowed, z + spec_gumbel(SEEDS[b], t, VOCAB), -np.inf)
            tok = int(np.argmax(score))
            tokens[t, b] = tok
            state[b] = trans[s, tok]
    return tokens


def device_loop(trans: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor,
                start: torch.Tensor, seeds: torch.Tensor, backend: str) -> torch.Tensor:
    """The decode loop: device tensors in, device tensors out, nothing read back per step."""
    states = start.clone()
    bitmask = torch.empty((BATCH, masks.shape[1]), dtype=torch.int32, device=masks.device)
    out = []
    for t in range(STEPS):
        kernels.fill_bitmask_from_dfa_states(masks, states, out=bitmask, backend=backend)
        tok, _log_mass = kernels.sample_constrained(logits[t], bitmask, seeds,
                                                   temperature=TEMPERATURE, step=t,
                                                   backend=backend)
        kernels.advance_dfa_states(trans, states, tok, out=states, backend=backend)
        out.append(tok)
    return torch.stack(out)


@pytest.mark.parametrize("backend", _backends())
def test_device_dfa_path_matches_cpu_reference_loop(backend: str) -> None:
    trans, masks = synthetic_dfa()
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(STEPS, BATCH, VOCAB, generator=gen) * 2).float()
    start = np.array([0, 1, 2, 5, N_STATES - 1], dtype=np.int32)  # the last row starts dead
    expect = reference_loop(trans, logits.numpy(), start)
    assert (expect[:, :4] >= 0).any() and (expect[:, 4] == -1).all()

    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    got = device_loop(torch.from_numpy(trans).to(device), masks.to(device), logits.to(device),
                      torch.from_numpy(start).to(device),
                      torch.tensor(SEEDS, dtype=torch.int64, device=device), backend)
    np.testing.assert_array_equal(got.cpu().numpy(), expect)


def test_dfa_kernels_contract() -> None:
    trans, masks = synthetic_dfa(1)
    states = torch.tensor([0, -1, N_STATES, 4], dtype=torch.int64)
    rows = kernels.fill_bitmask_from_dfa_states(masks, states)
    assert rows.dtype == torch.int32 and rows.shape == (4, masks.shape[1])
    assert torch.equal(rows[0], masks[0]) and torch.equal(rows[3], masks[4])
    assert not rows[1].any() and not rows[2].any()  # dead / out of range: nothing allowed
    tokens = torch.tensor([int(np.flatnonzero(trans[0] != -1)[0]), 5, 5, -1])
    nxt = kernels.advance_dfa_states(torch.from_numpy(trans), states, tokens)
    assert nxt.dtype == torch.int64
    assert nxt.tolist() == [int(trans[0, tokens[0]]), -1, -1, -1]
