"""Resampling schemes: systematic counts are floor or ceil of N w_i, residual keeps the floors,
every scheme is unbiased (E[count_i] = N w_i), zero weights are never picked, and resetting the
weights to their mean preserves the log marginal-likelihood estimate exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samplers import (
    RESAMPLING_METHODS,
    effective_sample_size,
    resample,
    resample_log_weights,
)
from samplers._util import logsumexp


def random_log_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    lw = rng.normal(size=n) * 2.0
    lw[rng.random(n) < 0.2] = -math.inf  # some dead particles
    if np.all(lw == -math.inf):
        lw[0] = 0.0
    return lw


def test_systematic_counts_are_floor_or_ceil() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 60))
        lw = random_log_weights(rng, n)
        w = np.exp(lw - logsumexp(lw))
        counts = np.bincount(resample(lw, method="systematic", generator=rng), minlength=n)
        assert counts.sum() == n
        assert np.all(counts >= np.floor(n * w - 1e-9)), trial
        assert np.all(counts <= np.ceil(n * w + 1e-9)), trial


def test_residual_keeps_the_integer_parts() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        lw = random_log_weights(rng, n)
        w = np.exp(lw - logsumexp(lw))
        counts = np.bincount(resample(lw, method="residual", generator=rng), minlength=n)
        assert counts.sum() == n
        assert np.all(counts >= np.floor(n * w - 1e-9))


@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_every_scheme_is_unbiased_and_skips_zero_weights(method: str) -> None:
    """Mean counts over 1,500 resamplings within 4.5 standard errors of N w_i (the multinomial
    standard error bounds the others', which are lower)."""
    rng = np.random.default_rng(2)
    with np.errstate(divide="ignore"):
        lw = np.log(np.array([0.05, 0.0, 0.3, 0.13, 0.02, 0.0, 0.5]))
    n, reps = lw.shape[0], 1500
    w = np.exp(lw - logsumexp(lw))
    total = np.zeros(n)
    for _ in range(reps):
        idx = resample(lw, method=method, generator=rng)  # type: ignore[arg-type]
        assert idx.shape == (n,) and np.all(np.diff(idx) >= 0)
        assert not np.any(np.isin(idx, [1, 5]))  # zero weight: never selected
        total += np.bincount(idx, minlength=n)
    se = np.sqrt(n * w * (1 - w) / reps)
    assert np.all(np.abs(total / reps - n * w) <= 4.5 * se + 1e-12), (method, total / reps)


@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_resampling_preserves_the_log_marginal_likelihood(method: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        lw = random_log_weights(rng, 17) + 5.0
        ancestors, new = resample_log_weights(lw, method=method, generator=rng)  # type: ignore[arg-type]
        assert ancestors.shape == (17,)
        assert np.all(np.isfinite(lw[ancestors]))
        assert logsumexp(new) == pytest.approx(logsumexp(lw), abs=1e-12)
        assert np.all(new == new[0])


def test_torch_generator_and_other_sizes() -> None:
    g = torch.Generator().manual_seed(4)
    lw = np.log([0.25, 0.25, 0.5])
    assert resample(lw, method="multinomial", n=10, generator=g).shape == (10,)
    assert resample(lw, method="stratified", n=0, generator=g).shape == (0,)


def test_degenerate_inputs() -> None:
    with pytest.raises(ValueError):
        resample([-math.inf, -math.inf])
    with pytest.raises(ValueError):
        resample([0.0, math.nan])
    with pytest.raises(ValueError):
        resample([0.0, 0.0], method="bogus")  # type: ignore[arg-type]
    assert np.all(resample([-math.inf, 0.0, -math.inf], method="residual") == 1)


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.zeros(8)) == pytest.approx(8.0)
    assert effective_sample_size([0.0, -math.inf, -math.inf]) == pytest.approx(1.0)
    assert effective_sample_size([-math.inf, -math.inf]) == 0.0
    assert effective_sample_size(np.log([1.0, 3.0])) == pytest.approx(16 / 10)
