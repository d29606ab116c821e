"""The token-sampler contract shared by every sampler: result shape, the nothing-allowed case,
no state change on the matcher, input dtypes and widths, and the package's import boundary."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from sampler_toys import SetMatcher, TableModel, TrieMatcher, deepcopy_forbidden, toy_b

import samplers
from samplers import (
    AWRSSampler,
    GreedySampler,
    LanguageModel,
    MaskedSampler,
    Matcher,
    SampleResult,
    TokenSampler,
)

SAMPLERS = [
    MaskedSampler(),
    MaskedSampler(temperature=0.7),
    AWRSSampler(),
    AWRSSampler(estimator="two_round"),
    AWRSSampler(proper_weights=False),
    AWRSSampler(max_rejects=1),
    AWRSSampler(estimator="two_round", max_rejects=1),
    GreedySampler(),
    GreedySampler(lazy=False),
]
IDS = [repr(s) for s in SAMPLERS]


def logprobs(p: list[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(np.asarray(p, dtype=np.float64))).to(dtype)


def test_sample_result_unpacks_as_token_and_log_weight() -> None:
    r = SampleResult(3, -0.5, 7)
    token, log_weight = r
    assert (token, log_weight, r.n_checks, r.ok) == (3, -0.5, 7, True)
    assert not SampleResult(None, -math.inf).ok


def test_toys_satisfy_the_protocols() -> None:
    model, matcher = toy_b()
    assert isinstance(matcher, Matcher)
    assert isinstance(SetMatcher({1}, 3), Matcher)
    assert isinstance(model, LanguageModel)
    for s in SAMPLERS:
        assert isinstance(s, TokenSampler)
    deepcopy_forbidden(matcher)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_nothing_allowed_gives_none_and_minus_inf(sampler: TokenSampler) -> None:
    g = np.random.default_rng(0)
    lp = logprobs([0.5, 0.2, 0.15, 0.1, 0.05])
    result = sampler.sample(lp, SetMatcher(set(), 5), generator=g)
    assert result.token is None and result.log_weight == -math.inf
    # allowed tokens exist but have zero probability: same answer
    lp0 = logprobs([0.5, 0.5, 0.0])
    result = sampler.sample(lp0, SetMatcher({2}, 3), generator=g)
    assert result.token is None and result.log_weight == -math.inf


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_sampler_only_queries_the_matcher(sampler: TokenSampler) -> None:
    model, matcher = toy_b()
    matcher.accept_token(1)  # prefix "b": a and b allowed, EOS not
    node, forks = matcher.node, matcher.counter.forks
    g = np.random.default_rng(1)
    for _ in range(20):
        token, _ = sampler.sample(model.next_token_logprobs([(1,)])[0], matcher, generator=g)
        assert token in (0, 1)
    assert matcher.node is node and not matcher.terminated and matcher.counter.forks == forks


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
@pytest.mark.parametrize("width", [5, 70, 300])
def test_float32_and_wide_logits(sampler: TokenSampler, width: int) -> None:
    """Logits wider than the allowed ids (padding columns) and float32 inputs both work; the
    numpy path (over 128 tokens) and the list path (up to 128) are both exercised."""
    p = np.full(width, 1.0 / width)
    lp = logprobs(p.tolist(), dtype=torch.float32)
    allowed = {1, 3}
    g = torch.Generator().manual_seed(2)
    for _ in range(10):
        result = sampler.sample(lp, SetMatcher(allowed, width), generator=g)
        assert result.token in allowed
        assert isinstance(result.token, int)
        assert result.log_weight > -math.inf
        assert result.n_checks >= 1


def test_table_model_batches() -> None:
    model, _ = toy_b()
    out = model.next_token_logprobs([(), (0,), (1,), (0, 1)])
    assert out.shape == (4, 3)
    assert model.calls == [4]
    assert torch.allclose(out.exp().sum(-1), torch.ones(4, dtype=out.dtype))


def test_trie_matcher_semantics() -> None:
    m = TrieMatcher([(0, 0), (1,)], 3, 2)
    assert m.check_token(0) and m.check_token(1) and not m.check_token(2)
    f = m.fork()
    assert f.accept_token(1) and f.is_accepting() and f.check_token(2)
    assert not m.is_accepting()  # the fork did not move the original
    assert f.accept_token(2) and f.is_terminated() and not f.check_token(0)


def test_public_api_and_import_boundary() -> None:
    for name in samplers.__all__:
        assert hasattr(samplers, name), name
    code = (
        "import sys, samplers; "
        "bad = [m for m in ('grammars', 'decoding') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(_repo_root()))


def _repo_root():
    from pathlib import Path

    return Path(samplers.__file__).resolve().parent.parent


def test_table_model_is_a_plain_language_model() -> None:
    model = TableModel(lambda prefix: np.array([0.25, 0.75]), 2, 1)
    assert model.next_token_logprobs([()]).shape == (1, 2)
