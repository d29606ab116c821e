"""AWRS: proper weighting (Monte Carlo, fixed seeds), exact edge cases, the check-count formula,
the cost on a 50,000-token Zipf distribution, and the equivalence of the list and numpy paths.

Example throughout: p = (.5, .2, .15, .1, .05) over 5 tokens, tokens {1, 3} allowed, so Z = .3
and the proper-weighting target is E[w 1(x=a)] = p(a) c(a) = (0, .2, 0, .1, 0).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from sampler_toys import SetMatcher

import samplers.awrs as awrs_module
from samplers import AWRSSampler, MaskedSampler, expected_first_round_checks

P = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
ALLOWED = {1, 3}
ALLOWED_MASK = np.isin(np.arange(5), sorted(ALLOWED))
TARGET = np.where(ALLOWED_MASK, P, 0.0)  # p(a) c(a)
LP = torch.from_numpy(np.log(P))
# The long Monte Carlo loops pass the same log-probabilities as a numpy array (accepted by every
# sampler; it skips a torch->numpy view per call). Torch inputs are covered by the other tests.
LP_NP = np.log(P)
ESTIMATORS = ["recursive", "two_round"]


def weighted_means(sampler: AWRSSampler, n: int, seed: int) -> tuple[np.ndarray, float, list]:
    """Monte Carlo mean of w 1(x = a) for every a, the mean check count, and the raw results."""
    g = np.random.default_rng(seed)
    matcher = SetMatcher(ALLOWED, 5)
    acc = np.zeros(5)
    checks = 0
    results = []
    for _ in range(n):
        r = sampler.sample(LP_NP, matcher, generator=g)
        acc[r.token] += math.exp(r.log_weight)
        checks += r.n_checks
        results.append(r)
    return acc / n, checks / n, results


@functools.cache
def draws(estimator: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2e5 draws of one estimator (shared by the tests below): tokens, weights, check counts."""
    g = np.random.default_rng({"recursive": 11, "two_round": 12}[estimator])
    sampler = AWRSSampler(estimator=estimator)  # type: ignore[arg-type]
    matcher = SetMatcher(ALLOWED, 5)
    out = [sampler.sample(LP_NP, matcher, generator=g) for _ in range(200_000)]
    tokens = np.array([-1 if r.token is None else r.token for r in out])
    weights = np.exp(np.array([r.log_weight for r in out]))
    checks = np.array([r.n_checks for r in out])
    assert matcher.counter.checks == checks.sum()  # n_checks counts check_token calls
    return tokens, weights, checks


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_awrs_is_properly_weighted(estimator: str) -> None:
    """Over 2e5 draws, mean of w 1(x=a) within 0.003 of p(a) c(a) for every token a."""
    tokens, weights, _ = draws(estimator)
    assert set(np.unique(tokens).tolist()) <= ALLOWED
    means = np.array([np.mean(weights * (tokens == a)) for a in range(5)])
    assert np.max(np.abs(means - TARGET)) <= 0.003, means


def test_recursive_has_lower_variance_than_two_round() -> None:
    """Exact variances of w on the example: 0.0440 (recursive) and 0.0642 (two-round)."""
    var = {est: float(draws(est)[1].var()) for est in ESTIMATORS}
    assert var["recursive"] == pytest.approx(0.0440, abs=0.002), var
    assert var["two_round"] == pytest.approx(0.0642, abs=0.003), var


def test_full_mask_fallback_exact_cases() -> None:
    """max_rejects=0: the mask is filled before any check. The recursive estimator then returns
    the exact Z (an exact draw of p c / Z with w = Z); one round returns the same draw unweighted."""
    g = np.random.default_rng(13)
    n = 3000
    counts = np.zeros(5)
    for _ in range(n):
        r = AWRSSampler(max_rejects=0).sample(LP, SetMatcher(ALLOWED, 5), generator=g)
        assert r.n_checks == 5 and r.log_weight == pytest.approx(math.log(0.3), abs=1e-12)
        counts[r.token] += 1
    q = TARGET / 0.3
    assert np.all(np.abs(counts / n - q) <= 4.5 * np.sqrt(q * (1 - q) / n) + 1e-12)


@pytest.mark.parametrize("max_rejects", [0, 1, 2])
def test_two_round_fallback_finishes_the_same_random_process(max_rejects: int) -> None:
    """Budgeted and unbudgeted runs from the same seed give the same token and the same weight
    draw by draw (the fallback only replaces checks by mask lookups), so the budgeted sampler is
    exactly as properly weighted; the recursive one keeps the same token (its weight becomes Z)."""
    for estimator in ESTIMATORS:
        g1, g2 = np.random.default_rng(14), np.random.default_rng(14)
        free = AWRSSampler(estimator=estimator)  # type: ignore[arg-type]
        capped = AWRSSampler(estimator=estimator, max_rejects=max_rejects)  # type: ignore[arg-type]
        fell_back = 0
        for _ in range(300):
            a = free.sample(LP, SetMatcher(ALLOWED, 5), generator=g1)
            b = capped.sample(LP, SetMatcher(ALLOWED, 5), generator=g2)
            assert a.token == b.token
            if estimator == "two_round":
                assert a.log_weight == pytest.approx(b.log_weight, abs=1e-12)
            fell_back += b.n_checks >= 5
        assert fell_back > 0


def test_recursive_fallback_is_properly_weighted() -> None:
    """max_rejects=1: the mask is filled in the 70% of draws whose first token is rejected. The
    standard deviation of w 1(x=a) is about 0.19, so over 6,000 draws the standard error is
    0.0024; tolerance 0.012 (5 standard errors)."""
    means, _, _ = weighted_means(AWRSSampler(max_rejects=1), 6_000, seed=15)
    assert np.max(np.abs(means - TARGET)) <= 0.012, means


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("proper_weights", [True, False])
@pytest.mark.parametrize("max_rejects", [None, 2])
def test_nothing_allowed_gives_minus_inf(
    estimator: str, proper_weights: bool, max_rejects: int | None
) -> None:
    sampler = AWRSSampler(
        estimator=estimator, proper_weights=proper_weights, max_rejects=max_rejects
    )
    g = np.random.default_rng(13)
    for _ in range(50):
        matcher = SetMatcher(set(), 5)
        r = sampler.sample(LP, matcher, generator=g)
        assert r.token is None and r.log_weight == -math.inf
        if max_rejects is None:  # every token with p > 0 was checked once
            assert r.n_checks == matcher.counter.checks == 5
        else:  # two checks, then one full mask
            assert (matcher.counter.checks, matcher.counter.fills) == (2, 1)
            assert r.n_checks == 2 + 5


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_everything_allowed_gives_exactly_z(estimator: str) -> None:
    g = np.random.default_rng(14)
    everything = SetMatcher(range(5), 5)
    for shift in (0.0, math.log(3.0)):  # normalized (Z = 1) and unnormalized (Z = 3)
        for _ in range(200):
            r = AWRSSampler(estimator=estimator).sample(LP + shift, everything, generator=g)
            assert math.exp(r.log_weight) == pytest.approx(math.exp(shift), abs=1e-12)


def _exact_two_round_checks() -> float:
    """E[checks] of the two-round estimator by enumerating both rounds' without-replacement
    orders (Plackett-Luce), counting as the sampler does: round 1 checks its rejections and its
    accepted token; round 2 checks its rejections, and its accepted token unless it is round 1's."""

    def first_rounds(pool: list[int]) -> dict[tuple[tuple[int, ...], int], float]:
        out: dict[tuple[tuple[int, ...], int], float] = {}
        for perm in itertools.permutations(pool):
            prob, rem = 1.0, sum(P[i] for i in pool)
            for i in perm:
                prob *= P[i] / rem
                rem -= P[i]
            k = next(j for j, t in enumerate(perm) if t in ALLOWED)
            key = (perm[:k], perm[k])
            out[key] = out.get(key, 0.0) + prob
        return out

    total = 0.0
    for (rej1, x), p1 in first_rounds(list(range(5))).items():
        pool = [t for t in range(5) if t not in rej1]
        for (rej2, x2), p2 in first_rounds(pool).items():
            total += p1 * p2 * (len(rej1) + 1 + len(rej2) + (0 if x2 == x else 1))
    return total


def test_check_counts_match_the_formula() -> None:
    """E[checks of one round] = 1 + sum_{y disallowed} p(y) / (p(y) + Z) = 2.101 here; checks are
    ``check_token`` calls. The weighted estimators make more: the recursive one exactly one more
    (its accepted token is never the last one here), the two-round one 3.1247 (enumerated)."""
    formula = expected_first_round_checks(P, ALLOWED_MASK)
    by_hand = 1 + 0.5 / 0.8 + 0.15 / 0.45 + 0.05 / 0.35
    assert formula == pytest.approx(by_hand, abs=1e-12)
    assert formula == pytest.approx(2.101, abs=5e-4)

    n = 20_000
    g = np.random.default_rng(15)
    matcher = SetMatcher(ALLOWED, 5)
    one_round = [
        AWRSSampler(proper_weights=False).sample(LP, matcher, generator=g) for _ in range(n)
    ]
    assert matcher.counter.checks == sum(r.n_checks for r in one_round)  # checks = check_token
    mean = matcher.counter.checks / n
    assert abs(mean - formula) <= 0.02 * formula, mean

    rec = float(draws("recursive")[2].mean())
    assert abs(rec - (formula + 1)) <= 0.02 * (formula + 1), rec
    exact_two = _exact_two_round_checks()
    assert exact_two == pytest.approx(3.1247, abs=1e-4)
    two = float(draws("two_round")[2].mean())
    assert abs(two - exact_two) <= 0.02 * exact_two, two


def test_zipf_50k_needs_few_checks() -> None:
    """50,000-token Zipf distribution, allowed mass >= 0.1: fewer than 50 checks per token for
    every AWRS mode, against 50,000 for the full mask."""
    vocab = 50_000
    rng = np.random.default_rng(18)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    perm = rng.permutation(vocab)  # Zipf ranks assigned to random ids
    p = p[perm]
    allowed_mask = rng.random(vocab) < 0.15
    z = float(p[allowed_mask].sum())
    assert z >= 0.1, z
    allowed = set(np.flatnonzero(allowed_mask).tolist())
    lp = torch.from_numpy(np.log(p)).to(torch.float32)
    formula = expected_first_round_checks(p, allowed_mask)
    g = np.random.default_rng(19)
    matcher = SetMatcher(allowed, vocab)
    means = {}
    for name, sampler in [
        ("one_round", AWRSSampler(proper_weights=False)),
        ("recursive", AWRSSampler()),
        ("two_round", AWRSSampler(estimator="two_round")),
    ]:
        results = [sampler.sample(lp, matcher, generator=g) for _ in range(150)]
        assert all(r.token in allowed for r in results)
        means[name] = float(np.mean([r.n_checks for r in results]))
    assert max(means.values()) < 50, means
    assert formula < 50
    masked = MaskedSampler().sample(lp, matcher, generator=g)
    assert masked.n_checks == vocab


def test_list_and_numpy_paths_are_the_same_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small vocabularies run on Python lists; forcing the numpy path with the same seed must give
    the same tokens, check counts and (to rounding) weights, draw by draw."""
    configs = [
        {"estimator": "recursive"},
        {"estimator": "two_round"},
        {"proper_weights": False},
        {"estimator": "recursive", "max_rejects": 1},
        {"estimator": "two_round", "max_rejects": 1},
    ]

    def run(cfg: dict) -> list:
        g = np.random.default_rng(20)
        s = AWRSSampler(**cfg)
        return [s.sample(LP, SetMatcher(ALLOWED, 5), generator=g) for _ in range(300)]

    small = {i: run(cfg) for i, cfg in enumerate(configs)}
    monkeypatch.setattr(awrs_module, "SMALL_VOCAB", 0)
    for i, cfg in enumerate(configs):
        for a, b in zip(small[i], run(cfg)):
            assert (a.token, a.n_checks) == (b.token, b.n_checks), cfg
            assert a.log_weight == pytest.approx(b.log_weight, abs=1e-12), cfg


def test_temperature_changes_the_base_distribution() -> None:
    g = np.random.default_rng(22)
    everything = SetMatcher(range(5), 5)
    r = AWRSSampler(temperature=0.5).sample(LP + 7.0, everything, generator=g)
    assert math.exp(r.log_weight) == pytest.approx(1.0, abs=1e-12)  # tempered p is normalized


def test_invalid_options_raise() -> None:
    with pytest.raises(ValueError):
        AWRSSampler(estimator="three_round")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AWRSSampler(max_rejects=-1)
    with pytest.raises(ValueError):
        AWRSSampler(temperature=0.0)
    with pytest.raises(ValueError):
        expected_first_round_checks(P, np.zeros(5, dtype=bool))


class FewMatcher(SetMatcher):
    """SetMatcher that lists its allowed set (as a token automaton with a small row does)."""

    def few_allowed_tokens(self) -> tuple[int, ...]:
        return tuple(sorted(ALLOWED))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_few_allowed_tokens_draws_exactly_with_weight_z(estimator: str) -> None:
    g = np.random.default_rng(5)
    sampler = AWRSSampler(estimator=estimator)  # type: ignore[arg-type]
    matcher = FewMatcher(ALLOWED, 5)
    out = [sampler.sample(LP_NP, matcher, generator=g) for _ in range(40_000)]
    assert matcher.counter.checks == 0  # the listed set needs no check_token call
    assert all(r.n_checks == len(ALLOWED) for r in out)
    assert all(abs(math.exp(r.log_weight) - TARGET.sum()) < 1e-12 for r in out)  # w = Z exactly
    freq = np.bincount([r.token for r in out], minlength=5) / len(out)
    assert np.abs(freq - TARGET / TARGET.sum()).max() < 0.01  # x ~ p c / Z
    plain = AWRSSampler(proper_weights=False).sample(LP_NP, matcher, generator=g)
    assert plain.log_weight == 0.0 and plain.token in ALLOWED


def test_few_allowed_tokens_with_no_mass_or_nothing_listed() -> None:
    class Nothing(SetMatcher):
        def few_allowed_tokens(self) -> tuple[int, ...]:
            return ()

    r = AWRSSampler().sample(LP_NP, Nothing(set(), 5))
    assert r.token is None and r.log_weight == -math.inf
    lp = LP_NP.copy()
    lp[[1, 3]] = -math.inf
    r = AWRSSampler().sample(lp, FewMatcher(ALLOWED, 5))
    assert r.token is None and r.log_weight == -math.inf and r.n_checks == 2
