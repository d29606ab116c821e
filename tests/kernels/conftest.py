"""Kernel tests. Without a CUDA device, Triton kernels run in Triton's interpreter on CPU tensors:
TRITON_INTERPRET must be set before ``triton.jit`` decorates them, i.e. before
``kernels.triton_kernels`` is imported, so it is set here, when pytest loads this conftest (before
any kernel test module is imported). On a CUDA machine the variable is left alone and the Triton
tests run compiled on the GPU.
"""

import os
import sys
from pathlib import Path

import pytest

# The project runs pytest with --import-mode=importlib, which does not put test directories on
# sys.path: append this one (not prepend, so it shadows nothing) for the ``kernels_cases`` helpers.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if not _cuda_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """The torch reference runs single-threaded here: on a shared 2-core machine torch's OpenMP
    pool stalls for milliseconds per op whenever a core is busy elsewhere, which made the grid
    several times slower. The CPU kernels' own thread split is tested explicitly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
