"""The dispatcher: routing, lazy imports, and clear errors for wrong dtype, shape or device."""

import subprocess
import sys

import pytest
import torch

import kernels
from kernels.dispatch import resolve_backend


def test_import_kernels_is_light() -> None:
    """transformers probes a top-level ``kernels``: importing ours must stay cheap and inert."""
    code = (
        "import sys, kernels; "
        "heavy = [m for m in ('torch', 'triton', 'numba', 'kernels.cpu', 'kernels.triton_kernels')"
        " if m in sys.modules]; "
        "assert not heavy, heavy; "
        "assert not hasattr(kernels, '__version__'); "
        "print(sorted(kernels.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in ("apply_token_bitmask_inplace", "masked_logsumexp", "allocate_token_bitmask",
                 "bitmask_size", "bitmask_to_bool", "bool_to_bitmask", "sample_constrained",
                 "fill_bitmask_from_dfa_states", "advance_dfa_states"):
        assert name in out.stdout


def test_resolve_backend() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend(cpu) == "cpu"
    assert resolve_backend(cpu, "torch") == "torch"
    assert resolve_backend(torch.device("meta")) == "torch"  # any other device: the reference
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(cpu, "cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs CPU tensors"):
        resolve_backend(torch.device("meta"), "cpu")
    if torch.cuda.is_available():
        assert resolve_backend(torch.device("cuda")) == "triton"


def test_auto_on_cpu_uses_the_cpu_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernels import cpu

    calls = []
    real = cpu.apply
    monkeypatch.setattr(cpu, "apply", lambda *a: calls.append(1) or real(*a))
    logits = torch.randn(2, 64)
    kernels.apply_token_bitmask_inplace(logits, kernels.allocate_token_bitmask(2, 64))
    assert calls == [1]


def _args() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 100), torch.zeros(2, 4, dtype=torch.int32)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lg, bm: (lg.double(), bm), "float32, float16 or bfloat16"),
        (lambda lg, bm: (lg.long(), bm), "float32, float16 or bfloat16"),
        (lambda lg, bm: (lg, bm.long()), "bitmask must be int32"),
        (lambda lg, bm: (lg.reshape(2, 10, 10), bm), "1-D or 2-D"),
        (lambda lg, bm: (lg, bm.reshape(2, 2, 2)), "1-D or 2-D"),
        (lambda lg, bm: (lg, bm[:1]), "bitmask has 1 rows but logits have 2"),
        (lambda lg, bm: (lg, bm.to("meta")), "move it first"),
        (lambda lg, bm: (lg[:1].expand(2, 100), bm), "zero strides"),
    ],
)
def test_apply_errors(mutate: object, message: str) -> None:
    logits, bitmask = mutate(*_args())  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        kernels.apply_token_bitmask_inplace(logits, bitmask)


def test_apply_argument_errors() -> None:
    logits, bitmask = _args()
    with pytest.raises(TypeError, match="torch.Tensor"):
        kernels.apply_token_bitmask_inplace(logits.numpy(), bitmask)
    with pytest.raises(ValueError, match="exceeds the 128 tokens"):
        kernels.apply_token_bitmask_inplace(logits, bitmask, vocab_size=129)
    with pytest.raises(ValueError, match="non-negative int"):
        kernels.apply_token_bitmask_inplace(logits, bitmask, vocab_size=-1)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\)"):
        kernels.apply_token_bitmask_inplace(logits, bitmask, indices=[0, 2])
    with pytest.raises(ValueError, match="indices must be 1-D"):
        kernels.apply_token_bitmask_inplace(logits, bitmask, indices=[[0]])
    with pytest.raises(ValueError, match="indices must be integers"):
        kernels.apply_token_bitmask_inplace(logits, bitmask, indices=torch.tensor([0.0]))
    with pytest.raises(ValueError, match="needs CPU tensors"):
        kernels.apply_token_bitmask_inplace(logits.to("meta"), bitmask.to("meta"), backend="cpu")
    kernels.apply_token_bitmask_inplace(logits, bitmask, indices=[])  # no rows: no-op
    kernels.apply_token_bitmask_inplace(torch.empty(0, 100), torch.empty(0, 4, dtype=torch.int32))


def test_sampler_and_reduction_errors() -> None:
    logits, bitmask = _args()
    with pytest.raises(ValueError, match="temperature must be a finite float >= 0"):
        kernels.sample_constrained(logits, bitmask, 0, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        kernels.masked_logsumexp(logits, bitmask, temperature=torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match=r"temperature must be a float or a \(2,\) tensor"):
        kernels.masked_logsumexp(logits, bitmask, temperature=torch.ones(3))
    with pytest.raises(ValueError, match=r"seeds must have shape \(2,\)"):
        kernels.sample_constrained(logits, bitmask, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="seeds must be an integer tensor"):
        kernels.sample_constrained(logits, bitmask, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        kernels.sample_constrained(logits, bitmask, 0, step=-1)
    with pytest.raises(ValueError, match="bitmask has 1 rows"):
        kernels.masked_logsumexp(logits, bitmask[:1])


def test_dfa_errors() -> None:
    masks = torch.zeros(3, 4, dtype=torch.int32)
    trans = torch.zeros(3, 100, dtype=torch.int32)
    states = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(ValueError, match="state_masks must be int32"):
        kernels.fill_bitmask_from_dfa_states(masks.long(), states)
    with pytest.raises(ValueError, match="states must be int32 or int64"):
        kernels.fill_bitmask_from_dfa_states(masks, states.float())
    with pytest.raises(ValueError, match="out must be int32 of shape"):
        kernels.fill_bitmask_from_dfa_states(masks, states, out=torch.zeros(2, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="transitions must be 2-D"):
        kernels.advance_dfa_states(trans[0], states, states)
    with pytest.raises(ValueError, match="tokens must have 2 entries"):
        kernels.advance_dfa_states(trans, states, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="out must match states"):
        kernels.advance_dfa_states(trans, states, states, out=torch.zeros(2, dtype=torch.int64))


def test_one_dimensional_inputs() -> None:
    logits = torch.randn(100)
    bm = kernels.bool_to_bitmask(torch.arange(100) % 3 == 0)
    ref = logits.clone()
    kernels.apply_token_bitmask_inplace(logits, bm)
    kernels.apply_token_bitmask_inplace(ref, bm, backend="torch")
    assert torch.equal(logits, ref) and torch.isinf(logits).sum() == 66
    lse = kernels.masked_logsumexp(logits, bm)
    assert lse.dim() == 0
    tok, mass = kernels.sample_constrained(logits, bm, 1)
    assert tok.dim() == 0 and int(tok) % 3 == 0 and float(mass) <= 0


def test_interop_with_xgrammar_layout() -> None:
    """Masks filled by xgrammar apply the same through our kernel as through xgrammar's."""
    xgr = pytest.importorskip("xgrammar")
    gen = torch.Generator().manual_seed(0)
    bitmask = torch.randint(-(2**31), 2**31, (4, 32), generator=gen, dtype=torch.int64).int()
    logits = torch.randn(4, 1000, generator=gen)
    theirs = logits.clone()
    xgr.apply_token_bitmask_inplace(theirs, bitmask, indices=[0, 2])
    ours = logits.clone()
    kernels.apply_token_bitmask_inplace(ours, bitmask, indices=[0, 2])
    assert torch.equal(ours, theirs)
