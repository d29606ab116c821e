"""Prefill: prepacked equals per-prompt; chunked equals unchunked; the packing helper."""

from __future__ import annotations

import random

import pytest
import torch

from decoding.backend import BatchedLM
from decoding.backend.prefill import (
    pack_bins,
    padded_prefill,
    prepacked_prefill,
    sequential_prefill,
)
from tests.decoding.backend_helpers import single_thread, tiny_llama

__all__ = ["single_thread"]

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=2)


def prompts_of(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n,), generator=g).tolist() for n in lengths]


MIXES = [[5, 40, 17, 33, 2, 60], [1], [30, 30, 30], [100, 3, 7, 64, 1, 12, 90, 45]]


@pytest.mark.parametrize("lengths", MIXES)
def test_prepacked_equals_per_prompt(model, lengths):
    prompts = prompts_of(lengths, seed=len(lengths))
    ref = sequential_prefill(model, prompts)
    assert (prepacked_prefill(model, prompts) - ref).abs().max() < TOL
    assert (prepacked_prefill(model, prompts, capacity=64) - ref).abs().max() < TOL
    assert (padded_prefill(model, prompts) - ref).abs().max() < TOL
    for chunk in (3, 50, 1024):
        backend = BatchedLM(model, prefill_chunk=chunk, long_context="none")
        assert (backend.prefill(prompts) - ref).abs().max() < TOL
        # the packed KV went into the cache: decoding continues every prompt exactly
        nxt = [p + [7] for p in prompts]
        cont = backend.logits(nxt)
        assert (cont - sequential_prefill(model, nxt)).abs().max() < TOL
        assert backend.tokens_computed == sum(lengths) + len(lengths)


def test_chunked_prefill_equals_unchunked(model):
    prompt = prompts_of([300], seed=5)[0]
    ref = sequential_prefill(model, [prompt])[0]
    outs = []
    for chunk in (1, 17, 128, 300, 1000):
        backend = BatchedLM(model, prefill_chunk=chunk, long_context="none")
        outs.append(backend.prefill([prompt])[0])
        assert backend.forward_passes == -(-300 // chunk)
    for out in outs:
        assert (out - ref).abs().max() < TOL


def test_pack_bins_first_fit_decreasing():
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 100) for _ in range(rng.randint(1, 12))]
        cap = max(lengths)
        bins = pack_bins(lengths, cap)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= cap for b in bins)
        assert len(bins) <= len(lengths)
    assert pack_bins([4000, 200, 3800, 1000, 3000], 4000) == [[0], [2, 1], [4, 3]]
