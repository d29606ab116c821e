"""bench/alignment.py's core: the KL curve of weighted draws, the memoizing model, and the four
samplers on a toy whose exact target is known (toy C of tests/samplers: uniform bits, length 5,
language {00000} plus all 1xxxx; target 1/17 each, masking gives 00000 one half)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT, ROOT / "tests" / "samplers"):
    if str(extra) not in sys.path:
        sys.path.append(str(extra))

from bench.alignment import MemoLM, _run_sampler, kl_curve

A, B = (0,), (1,)


def test_kl_curve_plain_and_weighted_draws() -> None:
    exact = {A: 0.5, B: 0.5}
    assert kl_curve([({A: 1.0}, 1.0), ({B: 1.0}, 1.0)], exact) == pytest.approx([math.log(2), 0.0])
    # a weighted mixture: 3 * {A} + 1 * {B} -> (.75, .25)
    want = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    got = kl_curve([({A: 1.0}, 3.0), ({B: 1.0}, 1.0)], exact)
    assert got[1] == pytest.approx(want, abs=1e-12)
    # a zero-weight first draw (an SMC run where nothing finished) gives no point yet
    assert math.isnan(kl_curve([({}, 0.0)], exact)[0])
    with pytest.raises(KeyError):  # a sample outside the language is a bug, never ignored
        kl_curve([({(7,): 1.0}, 1.0)], exact)


def test_memo_lm_computes_each_prefix_once() -> None:
    from test_asap import toy_c

    model, _ = toy_c()
    lm = MemoLM(model)
    first = lm.next_token_logprobs([[], [1], [1]])
    again = lm.next_token_logprobs([[1], []])
    assert lm.n_rows == 2 and model.calls == [2]
    assert (again[0] == first[1]).all() and (again[1] == first[0]).all()


@pytest.mark.parametrize(("name", "bound"), [("asap", 0.05), ("smc", 0.05), ("awrs_smc", 0.05)])
def test_aligned_samplers_converge_on_toy_c(name: str, bound: float) -> None:
    from test_asap import TOY_C_LANGUAGE, toy_c

    model, matcher = toy_c()
    exact = {tuple(w): 1 / 17 for w in TOY_C_LANGUAGE}
    draws = _run_sampler(name, MemoLM(model), matcher, samples=1000, particles=10, max_tokens=6,
                         seed=3)
    assert kl_curve(draws, exact)[-1] < bound


def test_masking_stays_distorted_on_toy_c() -> None:
    from test_asap import TOY_C_LANGUAGE, toy_c

    model, matcher = toy_c()
    exact = {tuple(w): 1 / 17 for w in TOY_C_LANGUAGE}
    draws = _run_sampler("masked", MemoLM(model), matcher, samples=1000, particles=10,
                         max_tokens=6, seed=3)
    # LCD: 00000 w.p. 1/2, each 1xxxx w.p. 1/32: KL(LCD || exact) = .5 log(8.5) + .5 log(17/32)
    lcd_kl = 0.5 * math.log(8.5) + 0.5 * math.log(17 / 32)
    assert abs(kl_curve(draws, exact)[-1] - lcd_kl) < 0.05
