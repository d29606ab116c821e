"""The Triton backend equals the torch reference.

On a CUDA machine the kernels run compiled on the GPU over the full grid of the issue. Without
one they run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, set by this directory's
conftest before triton is imported). The interpreter costs about 20 ms per masked 4096-column
block and 75 ms per sampled 2048-column block on this 2-core machine, so the interpreted grid is
reduced, keeping what exercises distinct code paths:

- apply: vocab 1000 (one block, partial last word) and 4133 (two blocks, a ragged tail) x batch
  1 and 3 x every dtype x every layout (contiguous, wider than the vocab with and without
  vocab_size, row-strided view, strided columns, mixed batch via indices), a batch of 64 rows
  with indices, and vocab 128257 (32 blocks, persistent-grid loop, odd tail) at batch 1.
- masked_logsumexp and the sampler: vocab 1000 x batch 3 x every dtype x four layouts, vocab 4133
  (several blocks of the online reduction), and one sampled row of vocab 128257.
- the DFA kernels (also in test_kernels_dfa.py, which runs the whole decode loop on them).
"""

import itertools
import os

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

pytest.importorskip("triton")

ON_GPU = torch.cuda.is_available()
if not ON_GPU and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    pytest.skip("no CUDA device and TRITON_INTERPRET is not set", allow_module_level=True)
DEVICE = "cuda" if ON_GPU else "cpu"


def ids(case: tuple) -> str:
    return "-".join(str(x).replace("torch.", "") for x in case)


if ON_GPU:
    APPLY_CASES = [(*g, lay) for g in itertools.product(VOCABS, BATCHES, DTYPES) for lay in LAYOUTS]
    REDUCE_CASES = [(v, b, d, "plain") for v, b, d in itertools.product(VOCABS, BATCHES, DTYPES)]
    REDUCE_CASES += [(v, 3, d, lay) for v, d, lay in itertools.product(VOCABS, DTYPES, LAYOUTS)
                     if lay not in ("plain", "indices")]
    SAMPLE_CASES = REDUCE_CASES
else:
    APPLY_CASES = [(v, b, d, lay) for v, b, d, lay in
                   itertools.product((1000, 4133), (1, 3), DTYPES, LAYOUTS)]
    APPLY_CASES += [(1000, 64, torch.float16, "indices"), (128257, 1, torch.float32, "plain"),
                    (128257, 1, torch.bfloat16, "indices")]
    REDUCE_CASES = [(1000, 3, d, lay) for d, lay in
                    itertools.product(DTYPES, ("plain", "wider", "narrow_mask", "col_strided"))]
    REDUCE_CASES += [(4133, 3, torch.float32, "plain"), (4133, 1, torch.bfloat16, "wider")]
    SAMPLE_CASES = REDUCE_CASES + [(128257, 1, torch.float32, "plain")]


@pytest.mark.parametrize("case", APPLY_CASES, ids=ids)
def test_triton_apply_equals_reference(case: tuple) -> None:
    vocab, batch, dtype, layout = case
    check_apply(make_case(batch, vocab, dtype, layout), "triton", DEVICE)


@pytest.mark.parametrize("case", REDUCE_CASES, ids=ids)
def test_triton_logsumexp_equals_reference(case: tuple) -> None:
    vocab, batch, dtype, layout = case
    temps = torch.tensor([0.6, 1.0, 0.0] * 22)[:batch]
    check_logsumexp(make_case(batch, vocab, dtype, layout, seed=1), "triton", temps, DEVICE)


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=ids)
def test_triton_sample_equals_reference(case: tuple) -> None:
    vocab, batch, dtype, layout = case
    temps = torch.tensor([0.8, 1.0, 0.0] * 22)[:batch]
    check_sample(make_case(batch, vocab, dtype, layout, seed=2), "triton", temps, step=7,
                 device=DEVICE)


def test_triton_apply_skips_out_of_range_device_indices() -> None:
    """Device indices are not range-checked on the host; the kernel must ignore bad rows."""
    case = make_case(3, 1000, torch.float32, "plain")
    logits = case.logits.to(DEVICE)
    expect = case.logits.clone()
    import kernels

    kernels.apply_token_bitmask_inplace(expect, case.bitmask, indices=[1], backend="torch")
    rows = torch.tensor([1, 7, -2], device=DEVICE)
    if DEVICE == "cpu":  # host tensors are checked: go to the backend directly
        from kernels import triton_kernels

        triton_kernels.apply(logits, case.bitmask, rows, 1000)
    else:
        kernels.apply_token_bitmask_inplace(logits, case.bitmask.to(DEVICE), indices=rows,
                                            backend="triton")
    assert torch.equal(logits.cpu(), expect)


def test_triton_dfa_kernels_equal_reference() -> None:
    import kernels

    gen = torch.Generator().manual_seed(5)
    n_states, vocab = 9, 1000
    trans = torch.randint(-1, n_states, (n_states, vocab), generator=gen, dtype=torch.int32)
    masks = kernels.bool_to_bitmask(trans != -1)
    states = torch.tensor([0, 3, -1, 8, 9, 4], dtype=torch.int32)
    tokens = torch.tensor([5, 999, 3, -1, 2, 1000])
    ref = kernels.fill_bitmask_from_dfa_states(masks, states, backend="torch")
    got = kernels.fill_bitmask_from_dfa_states(masks.to(DEVICE), states.to(DEVICE),
                                               backend="triton")
    assert torch.equal(got.cpu(), ref)
    ref = kernels.advance_dfa_states(trans, states, tokens, backend="torch")
    st = states.to(DEVICE).clone()
    got = kernels.advance_dfa_states(trans.to(DEVICE), st, tokens.to(DEVICE), out=st,
                                     backend="triton")
    assert got is st and torch.equal(st.cpu(), ref)
