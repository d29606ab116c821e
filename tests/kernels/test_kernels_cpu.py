"""The numba CPU backend equals the torch reference over the grid of the issue: vocab 1000, 32000,
49152, 128256, 128257 x batch 1, 3, 64 x float32/float16/bfloat16, and layouts (contiguous; logits
wider than the vocab, with vocab_size and without; row-strided views; strided columns; mixed
batches through ``indices``). Masking runs on the full cross product; the one-pass reductions on
every (vocab, batch, dtype) contiguous except batch 64 at vocab > 32000 (one float32 case there:
the reference is slow at that size), and every layout at batch 3. Thread splitting
(rows, or columns of one row) is checked separately with the thresholds lowered."""

import itertools

import pytest
import torch
from kernels_cases import (
    BATCHES,
    DTYPES,
    LAYOUTS,
    VOCABS,
    check_apply,
    check_logsumexp,
    check_sample,
    make_case,
)

from kernels import cpu

GRID = list(itertools.product(VOCABS, BATCHES, DTYPES))
REDUCE_CASES = [(v, b, d, "plain") for v, b, d in GRID if b < 64 or v <= 32000] + [
    (128257, 64, torch.float32, "plain")] + [
    (v, 3, d, layout) for v, d, layout in itertools.product(VOCABS, DTYPES, LAYOUTS)
    if layout not in ("plain", "indices")
]
SAMPLE_CASES = [c for c in REDUCE_CASES if c[1] < 64 or c[0] <= 32000]


def ids(case: tuple) -> str:
    return "-".join(str(x).replace("torch.", "") for x in case)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    if request.param == 2:
        monkeypatch.setattr(cpu, "num_threads", lambda: 2)
        monkeypatch.setattr(cpu, "APPLY_MIN_PER_THREAD", 1)
        monkeypatch.setattr(cpu, "REDUCE_MIN_PER_THREAD", 1)
    else:
        monkeypatch.setattr(cpu, "num_threads", lambda: 1)
    return request.param


@pytest.mark.parametrize("case", [(*g, lay) for g in GRID for lay in LAYOUTS], ids=ids)
def test_cpu_apply_equals_reference(case: tuple) -> None:
    vocab, batch, dtype, layout = case
    check_apply(make_case(batch, vocab, dtype, layout), "cpu")


@pytest.mark.parametrize("case", REDUCE_CASES, ids=ids)
def test_cpu_logsumexp_equals_reference(case: tuple) -> None:
    vocab, batch, dtype, layout = case
    temps = torch.tensor([0.6, 1.0, 0.0] * 22)[:batch]  # tempered, plain and greedy rows
    check_logsumexp(make_case(batch, vocab, dtype, layout, seed=1), "cpu", temps)


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=ids)
def test_cpu_sample_equals_reference(case: tuple) -> None:
    vocab, batch, dtype, layout = case
    check_sample(make_case(batch, vocab, dtype, layout, seed=2), "cpu",
                 torch.tensor([0.8, 1.0, 0.0] * 22)[:batch], step=3)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch,vocab", [(1, 128257), (3, 1000), (5, 32000)])
def test_cpu_thread_split_equals_reference(batch: int, vocab: int, layout: str,
                                           threads: int) -> None:
    case = make_case(batch, vocab, torch.bfloat16 if batch == 3 else torch.float32, layout)
    check_apply(case, "cpu")
    if layout != "indices":
        temps = torch.tensor([0.7, 0.0, 1.0, 2.0, 1.0])[:batch]
        check_logsumexp(case, "cpu", temps)
        check_sample(case, "cpu", temps, step=11)


def test_cpu_split_plan() -> None:
    rows, cols = cpu._splits(1, 1000, 1)
    assert rows == [(0, 1)] and len(cols) == min(cpu.num_threads(), 1000)
    assert all(c0 % 32 == 0 for c0, _ in cols) and cols[-1][1] == 1000
    rows, cols = cpu._splits(64, 1000, 1 << 40)
    assert rows == [(0, 64)] and cols == [(0, 1000)]
