"""Masked (locally constrained) and greedy sampling, and the exact measurement of LCD's distortion.

Tolerances: frequencies are compared within 4.5 binomial standard errors (fixed seeds); exact
quantities within 1e-12 (weights) or 1e-4 (the KL value quoted to four decimals).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sampler_toys import TOY_A_LANGUAGE, SetMatcher, toy_a, toy_b

from samplers import (
    GreedySampler,
    MaskedSampler,
    enumerate_distributions,
    kl_divergence,
    smc,
)

P = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
ALLOWED = {1, 3}
LP = torch.from_numpy(np.log(P))


def test_masked_weight_is_the_allowed_mass_and_draws_are_renormalized() -> None:
    g = np.random.default_rng(0)
    n = 2000
    counts = np.zeros(5)
    for _ in range(n):
        r = MaskedSampler().sample(LP, SetMatcher(ALLOWED, 5), generator=g)
        assert r.log_weight == pytest.approx(math.log(0.3), abs=1e-12)
        assert r.n_checks == 5  # one full mask = every token decided
        counts[r.token] += 1
    q = np.array([0, 0.2, 0, 0.1, 0]) / 0.3
    se = np.sqrt(q * (1 - q) / n)
    assert np.all(np.abs(counts / n - q) <= 4.5 * se + 1e-12)


def test_masked_with_unnormalized_logprobs_and_temperature() -> None:
    g = np.random.default_rng(1)
    r = MaskedSampler().sample(LP + 3.0, SetMatcher(ALLOWED, 5), generator=g)
    assert r.log_weight == pytest.approx(math.log(0.3) + 3.0, abs=1e-12)
    t = 2.0
    pt = P ** (1 / t) / np.sum(P ** (1 / t))
    r = MaskedSampler(temperature=t).sample(LP, SetMatcher(ALLOWED, 5), generator=g)
    assert r.log_weight == pytest.approx(math.log(pt[1] + pt[3]), abs=1e-12)


def test_greedy_picks_the_most_probable_allowed_token() -> None:
    lazy = GreedySampler().sample(LP, SetMatcher(ALLOWED, 5))
    full = GreedySampler(lazy=False).sample(LP, SetMatcher(ALLOWED, 5))
    assert lazy.token == full.token == 1
    assert lazy.log_weight == full.log_weight == pytest.approx(math.log(0.2))
    assert lazy.n_checks == 2  # token 0 rejected, token 1 accepted
    assert full.n_checks == 5
    ties = torch.zeros(6)
    assert GreedySampler().sample(ties, SetMatcher({2, 4}, 6)).token == 2


def test_greedy_lazy_matches_full_mask_including_fallback() -> None:
    rng = np.random.default_rng(3)
    for trial in range(40):
        vocab = int(rng.choice([7, 200, 1000]))
        lp = torch.from_numpy(rng.normal(size=vocab) * 3)
        allowed = set(rng.choice(vocab, size=max(1, vocab // 20), replace=False).tolist())
        lazy = GreedySampler(max_rejects=int(rng.integers(0, 40))).sample(
            lp, SetMatcher(allowed, vocab)
        )
        full = GreedySampler(lazy=False).sample(lp, SetMatcher(allowed, vocab))
        assert lazy.token == full.token, trial
        assert lazy.log_weight == full.log_weight


def test_toy_a_distortion_is_measured_exactly() -> None:
    """Toy A: LCD puts 1/2 on 000 where the exact conditional puts 1/5."""
    model, matcher = toy_a()
    dist = enumerate_distributions(model, matcher, max_tokens=4)
    assert set(dist.exact) == set(TOY_A_LANGUAGE) == set(dist.lcd)
    for word in TOY_A_LANGUAGE:
        assert dist.exact[word] == pytest.approx(0.2, abs=1e-12)
    assert dist.lcd[(0, 0, 0)] == pytest.approx(0.5, abs=1e-12)
    assert dist.lcd[(1, 0, 1)] == pytest.approx(0.125, abs=1e-12)
    assert dist.log_z == pytest.approx(math.log(5 / 8), abs=1e-12)
    assert dist.lcd_incomplete == 0.0
    kl = kl_divergence(dist.lcd, dist.exact)
    assert kl == pytest.approx(0.2231, abs=1e-4)
    assert kl == pytest.approx(0.5 * math.log(2.5) + 0.5 * math.log(0.625), abs=1e-12)
    # with too few tokens nothing completes: all LCD mass is incomplete, Z = 0
    short = enumerate_distributions(model, matcher, max_tokens=3)
    assert short.exact == {} and short.log_z == -math.inf
    assert short.lcd_incomplete == pytest.approx(1.0)


def test_toy_b_distortion_is_measured_exactly() -> None:
    model, matcher = toy_b()
    dist = enumerate_distributions(model, matcher, max_tokens=3)
    assert math.exp(dist.log_z) == pytest.approx(0.109, abs=1e-12)
    assert dist.lcd[(0, 0)] == pytest.approx(0.9, abs=1e-12)
    assert kl_divergence(dist.lcd, dist.exact) == pytest.approx(1.928, abs=1e-3)


def test_masked_sampling_realizes_the_lcd_distribution() -> None:
    """Unweighted particles of SMC without resampling are independent LCD samples."""
    model, matcher = toy_a()
    n = 1000
    res = smc(
        model,
        matcher,
        n_particles=n,
        max_tokens=4,
        sampler=MaskedSampler(),
        ess_threshold=0.0,
        generator=np.random.default_rng(4),
    )
    assert res.resampled_at == []
    freq = sum(p.output == (0, 0, 0) for p in res.particles) / n
    assert abs(freq - 0.5) <= 4.5 * math.sqrt(0.25 / n)


def test_kl_divergence_edge_cases() -> None:
    assert kl_divergence({"a": 1.0}, {"a": 1.0}) == 0.0
    assert kl_divergence({"a": 0.5, "b": 0.5}, {"a": 1.0}) == math.inf
    assert kl_divergence({"a": 0.0, "b": 1.0}, {"b": 1.0}) == 0.0
