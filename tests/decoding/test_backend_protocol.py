"""The samplers' LanguageModel protocol over the backend: SMC runs on it, one call per step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decoding.backend import BatchedLM
from samplers.protocols import LanguageModel
from tests.decoding.backend_helpers import recompute, single_thread, tiny_llama

__all__ = ["single_thread"]


class EvenTokensMatcher:
    """Toy constraint: even token ids only, at most ``limit`` tokens, then EOS."""

    def __init__(self, eos: int, limit: int = 4, n: int = 0, done: bool = False) -> None:
        self.eos, self.limit, self.n, self.done = eos, limit, n, done

    def check_token(self, token_id: int) -> bool:
        if self.done:
            return False
        if token_id == self.eos:
            return self.n >= 1
        return token_id % 2 == 0 and self.n < self.limit

    def accept_token(self, token_id: int) -> bool:
        if not self.check_token(token_id):
            return False
        if token_id == self.eos:
            self.done = True
        else:
            self.n += 1
        return True

    def is_accepting(self) -> bool:
        return self.n >= 1 and not self.done

    def is_terminated(self) -> bool:
        return self.done

    def fork(self):
        return EvenTokensMatcher(self.eos, self.limit, self.n, self.done)

    def fill_next_token_bitmask(self, bitmask, row: int = 0) -> None:
        allowed = np.array([self.check_token(i) for i in range(bitmask.shape[1] * 32)])
        words = np.packbits(allowed.reshape(-1, 32)[:, ::-1], axis=1, bitorder="big")
        bitmask[row] = torch.from_numpy(words.view(">u4").astype(np.int64).astype(np.int32)[:, 0])


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=4)


def test_prompted_lm_is_a_language_model(model):
    backend = BatchedLM(model, long_context="none")
    prompt = list(range(10, 60))
    lm = backend.lm(prompt)
    assert isinstance(lm, LanguageModel)
    assert lm.vocab_size == 256 and lm.eos_token_id == 255
    out = lm.next_token_logprobs([[], [4], [4, 6], [4]])
    assert out.shape == (4, 256)
    assert torch.allclose(out.logsumexp(-1), torch.zeros(4), atol=1e-5)
    ref = torch.log_softmax(recompute(model, prompt + [4, 6]), -1)
    assert (out[2] - ref).abs().max() < 1e-4
    assert torch.equal(out[1], out[3])


def test_smc_runs_on_the_backend_one_call_per_step(model):
    from samplers import smc
    from samplers.masked import MaskedSampler

    backend = BatchedLM(model, prefill_chunk=64, long_context="none")
    prompt = [(i * 13) % 250 for i in range(120)]
    lm = backend.lm(prompt)
    lm.prefill()
    passes, computed = backend.forward_passes, backend.tokens_computed
    result = smc(
        lm,
        EvenTokensMatcher(eos=255),
        n_particles=16,
        max_tokens=6,
        sampler=MaskedSampler(),
        generator=np.random.default_rng(0),
    )
    assert result.n_steps >= 2
    assert backend.forward_passes - passes <= result.n_steps  # one batched pass per step
    # the prompt's KV is shared: each step computes at most one token per live particle
    assert backend.tokens_computed - computed <= 16 * result.n_steps
    assert math.isfinite(result.log_ml)
    for p in result.finished:
        assert all(t % 2 == 0 for t in p.output) and p.tokens[-1] == 255
