"""SMC: unbiased marginal likelihood for every resampling scheme, correction of LCD's distortion,
critics and twists, truncation and dead particles, one batched model call per step, forks.

Toy B: P(a)=.9, P(b)=.1; P(.|a)=(.01,.99); P(.|b)=(.5,.5); then EOS; language {aa, ba, bb};
exact Z = .109 and exact posterior (.0826, .4587, .4587), where masking alone gives (.9, .05, .05).
Tolerances: means of exp(log_ml) within 4 standard errors (the sample standard deviation over
runs / sqrt(runs)); KL values against fixed bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sampler_toys import (
    B_EOS,
    TOY_B_Z,
    SetMatcher,
    TableModel,
    TrieMatcher,
    toy_a,
    toy_b,
    toy_c,
)

from samplers import (
    RESAMPLING_METHODS,
    AWRSSampler,
    MaskedSampler,
    enumerate_distributions,
    kl_divergence,
    smc,
)

EXACT_B = {(0, 0): 0.009 / 0.109, (1, 0): 0.05 / 0.109, (1, 1): 0.05 / 0.109}


def ml_estimates(model, matcher, *, runs: int, seed: int, max_tokens: int, **kw) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.array(
        [
            math.exp(smc(model, matcher, max_tokens=max_tokens, generator=g, **kw).log_ml)
            for _ in range(runs)
        ]
    )


def assert_unbiased(est: np.ndarray, truth: float, label: str) -> None:
    se = est.std(ddof=1) / math.sqrt(est.size)
    assert abs(est.mean() - truth) <= 4 * se + 1e-12, (label, est.mean(), truth, se)


@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_toy_b_marginal_likelihood_is_unbiased(method: str) -> None:
    """Mean of exp(log_ml) over 1,000 runs within 4 standard errors of Z = 0.109."""
    model, matcher = toy_b()
    est = ml_estimates(
        model,
        matcher,
        runs=1000,
        seed=100,
        max_tokens=3,
        n_particles=4,
        ess_threshold=1.0,
        resampling=method,
        sampler=AWRSSampler(),
    )
    assert TOY_B_Z == pytest.approx(0.109)
    assert_unbiased(est, 0.109, method)


def test_toy_b_unbiased_with_masked_and_two_round_proposals() -> None:
    model, matcher = toy_b()
    for i, sampler in enumerate([MaskedSampler(), AWRSSampler(estimator="two_round")]):
        est = ml_estimates(
            model, matcher, runs=300, seed=101 + i, max_tokens=3, n_particles=4, sampler=sampler
        )
        assert_unbiased(est, 0.109, repr(sampler))


@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_toy_c_marginal_likelihood_is_unbiased_with_a_twist(method: str) -> None:
    """Toy C (random weights at every step, up to 5 tokens) with an arbitrary twist, resampling
    whenever the weights differ: 400 runs of 4 particles, exact Z by enumeration."""
    model, matcher = toy_c()
    exact = enumerate_distributions(model, matcher, max_tokens=5)

    def twist(prefix) -> float:
        return 0.8 * sum(t == 1 for t in prefix) - 0.3 * len(prefix)

    est = ml_estimates(
        model,
        matcher,
        runs=400,
        seed=102,
        max_tokens=5,
        n_particles=4,
        ess_threshold=1.0,
        resampling=method,
        twist=twist,
    )
    assert_unbiased(est, math.exp(exact.log_z), method)


def test_smc_corrects_the_distortion_of_masking() -> None:
    """Toy B, N = 1,000: mean KL(posterior || exact) < 0.02 where masking alone gives 1.93."""
    model, matcher = toy_b()
    dist = enumerate_distributions(model, matcher, max_tokens=3)
    assert kl_divergence(dist.lcd, EXACT_B) == pytest.approx(1.93, abs=0.005)
    for key, value in EXACT_B.items():
        assert dist.exact[key] == pytest.approx(value, abs=1e-12)
    g = np.random.default_rng(103)
    for sampler, runs in [(AWRSSampler(), 5), (MaskedSampler(), 2)]:
        kls = [
            kl_divergence(
                smc(
                    model, matcher, n_particles=1000, max_tokens=3, sampler=sampler, generator=g
                ).posterior,
                EXACT_B,
            )
            for _ in range(runs)
        ]
        assert np.mean(kls) < 0.02, (sampler, kls)


def test_smc_recovers_the_uniform_posterior_of_toy_a() -> None:
    model, matcher = toy_a()
    dist = enumerate_distributions(model, matcher, max_tokens=4)
    res = smc(model, matcher, n_particles=1000, max_tokens=4, generator=np.random.default_rng(104))
    assert kl_divergence(res.posterior, dist.exact) < 0.02
    assert math.exp(res.log_ml) == pytest.approx(5 / 8, abs=0.05)


def test_critic_is_part_of_the_target() -> None:
    """A semantic validator rejecting the complete value "bb": target {aa: .009, ba: .05}/.059."""

    def critic(tokens) -> float:
        return -math.inf if tuple(tokens) == (1, 1) else 0.0

    model, matcher = toy_b()
    exact = enumerate_distributions(model, matcher, max_tokens=3, critic=critic)
    assert math.exp(exact.log_z) == pytest.approx(0.059, abs=1e-12)
    est = ml_estimates(
        model, matcher, runs=400, seed=105, max_tokens=3, n_particles=8, critic=critic
    )
    assert_unbiased(est, 0.059, "critic")
    res = smc(
        model,
        matcher,
        n_particles=1000,
        max_tokens=3,
        critic=critic,
        generator=np.random.default_rng(106),
    )
    assert (1, 1) not in res.posterior
    assert kl_divergence(res.posterior, exact.exact) < 0.02


def test_twist_telescopes_away() -> None:
    """Without resampling a twist changes no draw, and the finished weights with and without it
    are identical: the old twist is subtracted at every step and removed at EOS."""
    model, matcher = toy_c()

    def twist(prefix) -> float:
        return 1.7 * sum(t == 0 for t in prefix) - 0.4 * len(prefix) + 0.3

    runs = [
        smc(
            model,
            matcher,
            n_particles=64,
            max_tokens=5,
            ess_threshold=0.0,
            twist=tw,
            generator=np.random.default_rng(107),
        )
        for tw in (None, twist)
    ]
    plain, twisted = runs
    assert [p.tokens for p in plain.particles] == [p.tokens for p in twisted.particles]
    for a, b in zip(plain.particles, twisted.particles):
        if a.status == "finished":
            assert a.log_weight == pytest.approx(b.log_weight, abs=1e-12)
    assert twisted.log_ml == pytest.approx(plain.log_ml, abs=1e-12)


def test_twist_steers_resampling_but_not_the_target() -> None:
    """The ideal twist (the exact allowed continuation mass: .01 after "a", 1 after "b") makes
    resampling keep the particles in proportion to the target already after step 1."""
    model, matcher = toy_b()
    mass = {(): 0.109, (0,): 0.01}  # 1 after "b", "aa", "ba", "bb"

    def twist(prefix) -> float:
        return math.log(mass.get(tuple(prefix), 1.0))

    res = smc(
        model,
        matcher,
        n_particles=1000,
        max_tokens=3,
        sampler=MaskedSampler(),  # exact weights, so the ideal twist makes them exactly flat
        twist=twist,
        ess_threshold=1.0,
        generator=np.random.default_rng(108),
    )
    assert res.resampled_at == [0]  # resampled on the twisted weights, which then stay flat
    assert res.ess_trace[1] == pytest.approx(1000.0)
    assert np.ptp([p.log_weight for p in res.particles]) < 1e-9
    assert kl_divergence(res.posterior, EXACT_B) < 0.02


def test_one_batched_model_call_per_step_and_forks_not_copies() -> None:
    model, matcher = toy_b()  # TrieMatcher refuses copy/deepcopy
    res = smc(
        model,
        matcher,
        n_particles=16,
        max_tokens=3,
        ess_threshold=1.0,
        generator=np.random.default_rng(109),
    )
    assert model.calls == [16, 16, 16]  # every live particle, once per step
    assert res.n_steps == 3 == len(res.ess_trace)
    assert matcher.counter.forks >= 16  # one per particle, plus one per duplicated offspring
    assert matcher.node is matcher.root and not matcher.terminated  # the caller's state untouched
    assert res.n_checks > 0
    assert all(p.status == "finished" and p.tokens[-1] == B_EOS for p in res.particles)
    assert sum(res.posterior.values()) == pytest.approx(1.0)


def test_finished_particles_leave_the_batch() -> None:
    """Words of lengths 1..3: particles that finish early stop going through the model."""
    probs = {(): [0.4, 0.3, 0.3]}  # token 2 = EOS

    def table(prefix):
        return np.array(probs.get(prefix, [0.3, 0.3, 0.4]))

    model = TableModel(table, 3, 2)
    matcher = TrieMatcher([(0,), (0, 1), (1, 1, 0)], 3, 2)
    res = smc(
        model,
        matcher,
        n_particles=50,
        max_tokens=4,
        ess_threshold=0.0,
        generator=np.random.default_rng(110),
    )
    assert model.calls[0] == 50
    assert all(b <= a for a, b in zip(model.calls, model.calls[1:]))
    assert 0 < model.calls[-1] < model.calls[0]
    # one row per generated token: finished particles are not fed again
    assert sum(model.calls) == sum(len(p.tokens) for p in res.particles)
    dist = enumerate_distributions(model, matcher, max_tokens=4)
    assert set(res.posterior) <= set(dist.exact)


def test_truncated_particles_are_never_outputs() -> None:
    """Toy A needs 4 tokens (3 bits + EOS): with max_tokens=3 every particle is truncated."""
    model, matcher = toy_a()
    res = smc(model, matcher, n_particles=20, max_tokens=3, generator=np.random.default_rng(111))
    assert all(p.status == "truncated" for p in res.particles)
    assert len(res.truncated) == 20 and res.finished == []
    assert res.posterior == {} and res.log_ml == -math.inf and res.map_output is None

    # a language with arbitrarily long words: the ones cut at max_tokens are excluded
    model = TableModel(lambda prefix: np.array([0.7, 0.3]), 2, 1)  # token 1 = EOS
    words = [(0,) * k for k in range(1, 8)]
    matcher = TrieMatcher(words, 2, 1)
    res = smc(model, matcher, n_particles=400, max_tokens=4, generator=np.random.default_rng(112))
    assert res.truncated and res.finished
    assert all(len(p.tokens) == 4 and p.tokens[-1] != 1 for p in res.truncated)
    assert all(len(key) <= 3 for key in res.posterior)
    exact = enumerate_distributions(model, matcher, max_tokens=4)
    assert kl_divergence(res.posterior, exact.exact) < 0.02


def test_dead_particles() -> None:
    """Where the only allowed token has zero probability, particles die: zero weight, no output."""
    model = TableModel(lambda prefix: np.array([1.0, 0.0, 0.0]), 3, 2)
    res = smc(
        model, SetMatcher({1}, 3), n_particles=10, max_tokens=3, generator=np.random.default_rng(1)
    )
    assert all(p.status == "dead" and p.log_weight == -math.inf for p in res.particles)
    assert res.log_ml == -math.inf and res.posterior == {}
    assert res.ess_trace == [0.0] and model.calls == [10]


def test_invalid_arguments() -> None:
    model, matcher = toy_b()
    with pytest.raises(ValueError):
        smc(model, matcher, n_particles=0, max_tokens=3)
    with pytest.raises(ValueError):
        smc(model, matcher, n_particles=2, max_tokens=0)
    with pytest.raises(ValueError):
        smc(model, matcher, n_particles=2, max_tokens=3, ess_threshold=-1.0)
    with pytest.raises(ValueError):
        smc(model, matcher, n_particles=2, max_tokens=3, resampling="bogus")  # type: ignore[arg-type]
