"""Writing one bitmask row (kernels.bitmask.write_bitmask_row / bitmask_row): numpy arrays and
torch tensors, the cached view of the last bitmask, and the fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.bitmask import bitmask_row, write_bitmask_row


def words(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_rows_land_where_they_belong_across_alternating_bitmasks(kind):
    n = 37
    make = (lambda: np.full((3, n), -1, dtype=np.int32)) if kind == "numpy" else (
        lambda: torch.full((3, n), -1, dtype=torch.int32))
    a, b = make(), make()
    want_a, want_b = np.full((3, n), -1, dtype=np.int32), np.full((3, n), -1, dtype=np.int32)
    for step in range(12):  # alternate so the cached view must switch
        target, want = (a, want_a) if step % 3 else (b, want_b)
        row = step % 3
        w = words(step, n)
        write_bitmask_row(target, row, w)
        want[row] = w.view(np.int32)
    got_a = a if kind == "numpy" else a.numpy()
    got_b = b if kind == "numpy" else b.numpy()
    assert np.array_equal(got_a, want_a) and np.array_equal(got_b, want_b)


def test_int32_words_and_views_share_memory():
    t = torch.zeros((2, 5), dtype=torch.int32)
    write_bitmask_row(t, 1, words(1, 5).view(np.int32))
    assert np.array_equal(t[1].numpy(), words(1, 5).view(np.int32)) and not t[0].any()
    view = bitmask_row(t, 0, 5)
    view[:] = 7
    assert (t[0] == 7).all()


def test_no_view_for_other_layouts_but_writes_still_work():
    n = 4
    assert bitmask_row(torch.zeros((1, n), dtype=torch.int64), 0, n) is None  # dtype
    assert bitmask_row(torch.zeros((1, n + 1), dtype=torch.int32), 0, n) is None  # width
    needs_grad = torch.zeros((1, n), dtype=torch.float32, requires_grad=True)
    assert bitmask_row(needs_grad, 0, n) is None
    t = torch.zeros((2, n), dtype=torch.int32)[:, :]  # a view of a tensor: still CPU int32
    write_bitmask_row(t, 0, words(3, n))
    assert np.array_equal(t[0].numpy(), words(3, n).view(np.int32))
