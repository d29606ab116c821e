"""Segmented attention: one query block against KV held in several pieces, with an online softmax.

The backend never materializes a batch's keys as one padded tensor. A forward pass is a *packed*
block of new tokens (several sequences side by side, positions restarting per sequence, as in
Zhao et al. 2024, "Prepacking: A Simple Method for Fast Prefilling and Increased Throughput in
Large Language Models") and its keys come from *segments*: nodes of the KV prefix trie (shared by
every sequence whose path goes through them, read in place, never copied per sequence), a
concatenation of small private nodes, and the block's own new keys. Each segment carries the
absolute positions of its keys and a visibility mask saying which queries may see which keys.

:func:`segmented_attention` computes, for every query ``i`` (fp32 throughout),

    out_i = sum_j softmax_j(scaling * <q_i, k_j>  over the keys j visible to i) v_j

exactly, segment by segment, combining the pieces through their log-sum-exp (the streaming
rescaling of FlashAttention, Dao et al. 2022), so peak memory is bounded by one segment's (or one
key block's) scores, not ``queries x keys``. Query blocks of at least ``FLASH_MIN_QUERIES``
(prefill chunks) run each segment through torch's fused CPU flash-attention kernel, which also
returns the log-sum-exp; short ones (decode steps) use batched matmuls over key blocks, with the
grouped-query heads folded into the query axis so shared keys are never repeated or copied.
With a :class:`~decoding.backend.lambda_attention.LambdaPattern` it applies LM-Infinite's
Lambda-shaped pattern on top (see that module): key ``j`` is visible to query ``i`` (position
``p``) only if ``p - pos_j < window`` (local branch, exact relative distance) or ``pos_j <
n_global`` (global branch, with the query rotated back so the relative distance is at most
``max_distance``). Grouped-query attention is handled by reshaping the queries, never by
repeating keys.

:func:`install` registers the ``"decoding_backend"`` implementation in transformers'
``AttentionInterface`` (and the matching mask function in ``AttentionMaskInterface``) and switches
a model to it. Calls that carry a ``decoding_plan`` keyword (the backend's forward passes) use the
segmented path; calls with a Lambda pattern enabled on the config (:func:`enable_lambda`) run the
pattern over transformers' own cache (``DynamicCache``...); every other call is delegated
unchanged to the implementation the model had before (``sdpa`` or ``eager``), so a model shared
with ``decoding.generator`` behaves exactly as before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from decoding.backend.lambda_attention import LambdaPattern

__all__ = [
    "ATTENTION_NAME",
    "Segment",
    "attention_modules",
    "find_inv_freq",
    "install",
    "rotate_queries",
    "segmented_attention",
]

ATTENTION_NAME = "decoding_backend"
#: Keys per score block: bounds the transient ``heads x queries x KEY_BLOCK`` fp32 scores.
KEY_BLOCK = 2048


@dataclass
class Segment:
    """Keys and values ``(Bk, Hkv, S, D)`` (``Bk`` is 1 or the query batch) at absolute positions
    ``positions`` (``(S,)`` long), visible to the queries where ``visible`` is True.

    ``visible``: None (every query sees every key), or bool ``(Bm, n, S)`` or ``(Bm, n, 1)``
    (``Bm`` is 1 or the batch; ``n`` the queries). ``sorted_positions``: positions ascend, which
    lets the Lambda pattern skip keys outside every query's window without scoring them.
    Causality is the caller's job: a key that is a query's future must be masked in ``visible``,
    or ``causal`` set (keys and queries are the same positions, ``visible`` None: key ``j`` is
    visible to query ``i`` iff ``j <= i``).
    """

    keys: Any
    values: Any
    positions: Any
    visible: Any = None
    sorted_positions: bool = True
    causal: bool = False


def rotate_queries(q: torch.Tensor, delta: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Apply the RoPE rotation by ``delta`` positions (``(n,)``, any sign) to ``q`` (``(..., n,
    D)``, already rotated at its own positions), in the rotate-half layout of Llama/Qwen/Mistral.

    RoPE rotations compose, so a query rotated at ``p`` becomes the query rotated at ``p +
    delta``: its relative distance to every key shifts by ``delta``. Only the first ``2 *
    len(inv_freq)`` dimensions rotate (partial rotary models keep the rest).
    """
    import torch

    rot = 2 * inv_freq.shape[0]
    ang = delta.to(torch.float64)[:, None] * inv_freq.to(torch.float64)[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], dim=-1).to(q.dtype)
    sin = torch.cat([ang.sin(), ang.sin()], dim=-1).to(q.dtype)
    qr = q[..., :rot]
    half = rot // 2
    rotated = torch.cat([-qr[..., half:], qr[..., :half]], dim=-1)
    out = qr * cos + rotated * sin
    if rot == q.shape[-1]:
        return out
    return torch.cat([out, q[..., rot:]], dim=-1)


def find_inv_freq(hf_model: Any) -> torch.Tensor | None:
    """The RoPE inverse frequencies of a transformers model (its ``rotary_emb`` buffer)."""
    for _name, module in hf_model.named_modules():
        inv = getattr(module, "inv_freq", None)
        if inv is not None:
            return inv.detach().float()
    return None


def _slice_vis(vis: Any, lo: int, hi: int) -> Any:
    if vis is None or vis.shape[-1] == 1:
        return vis
    return vis[..., lo:hi]


def _and(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _terms(
    seg: Segment,
    qpos: torch.Tensor,
    pattern: LambdaPattern | None,
) -> Iterable[tuple[bool, int, int, Any, bool]]:
    """(use rotated queries, key start, key stop, mask, causal) for one segment; ``causal``
    means "apply the causal diagonal on top of ``mask``" (only for a ``causal`` segment)."""
    import torch

    n_keys = seg.positions.shape[0]
    if n_keys == 0:
        return
    if pattern is None:
        yield False, 0, n_keys, seg.visible, seg.causal
        return
    window, n_global = pattern.window, pattern.n_global
    kpos = seg.positions
    qmin, qmax = int(qpos.min()), int(qpos.max())
    # local branch: keys within the window of some query
    if seg.sorted_positions:
        lo = int(torch.searchsorted(kpos, torch.tensor(qmin - window + 1)))
    else:
        lo = 0
    if lo < n_keys:
        kp = kpos[lo:]
        vis = _slice_vis(seg.visible, lo, n_keys)
        if qmax - int(kp.min()) < window:
            yield False, lo, n_keys, vis, seg.causal  # every key is in every query's window
        else:
            dist = qpos[:, None] - kp[None, :]
            local = (dist >= 0) & (dist < window)
            yield False, lo, n_keys, _and(vis, local[None]), False
    # global branch: the first n_global positions, for queries that are out of the window
    if qmax < window or int(kpos.min()) >= n_global:
        return
    if seg.sorted_positions:
        hi = int(torch.searchsorted(kpos, torch.tensor(n_global)))
    else:
        hi = n_keys
    if hi == 0:
        return
    kp = kpos[:hi]
    glob = ((qpos[:, None] - kp[None, :]) >= window) & (kp[None, :] < n_global)
    if not bool(glob.any()):
        return
    yield True, 0, hi, _and(_slice_vis(seg.visible, 0, hi), glob[None]), False


#: Query blocks at least this long use torch's fused CPU flash-attention kernel per segment
#: (combined through its log-sum-exp); shorter ones (decode steps) the plain matmul path.
FLASH_MIN_QUERIES = 64


def _flash_op() -> Any:
    import torch

    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def segmented_attention(
    q: torch.Tensor,
    qpos: torch.Tensor,
    segments: Sequence[Segment],
    *,
    scaling: float,
    pattern: LambdaPattern | None = None,
    inv_freq: torch.Tensor | None = None,
    key_block: int = KEY_BLOCK,
) -> torch.Tensor:
    """Attention of ``q`` (``(B, Hq, n, D)``, RoPE already applied at positions ``qpos``,
    ``(n,)``) over ``segments``; returns ``(B, n, Hq, D)`` in ``q``'s dtype (transformers'
    attention output layout). See the module docstring for the exact math.

    Every query must see at least one key (its own, in practice), else its output is NaN.
    ``inv_freq`` is required when ``pattern`` may use its global branch.
    """
    import torch

    bsz, hq, n, d = q.shape
    hkv = segments[0].keys.shape[1]
    g = hq // hkv
    qf = q.float().reshape(bsz, hkv, g * n, d)
    q_rot = None

    def rotated_queries() -> Any:
        nonlocal q_rot
        if q_rot is None:
            if inv_freq is None or pattern is None:
                raise ValueError("the Lambda pattern's global branch needs the RoPE inv_freq")
            delta = qpos.clamp(max=pattern.max_distance) - qpos
            q_rot = rotate_queries(
                qf.view(bsz, hkv, g, n, d), delta.to(q.device), inv_freq.to(q.device)
            ).reshape(bsz, hkv, g * n, d)
        return q_rot

    flash = _flash_op() if (n >= FLASH_MIN_QUERIES and q.device.type == "cpu") else None
    if flash is not None:
        outs, lses = [], []
        for seg in segments:
            for rotated, start, stop, mask, causal in _terms(seg, qpos, pattern):
                qq = (rotated_queries() if rotated else qf).view(bsz, hkv, g, n, d)
                qq = qq.reshape(bsz, hq, n, d)
                k = seg.keys[:, :, start:stop].float()
                v = seg.values[:, :, start:stop].float()
                s_len = stop - start
                k = k[:, :, None].expand(-1, -1, g, -1, -1).reshape(-1, hq, s_len, d)
                v = v[:, :, None].expand(-1, -1, g, -1, -1).reshape(-1, hq, s_len, d)
                if k.shape[0] != bsz:
                    k, v = k.expand(bsz, -1, -1, -1), v.expand(bsz, -1, -1, -1)
                add = None
                if mask is not None:
                    if causal:
                        idx = torch.arange(n, device=q.device)
                        mask = mask & (idx[None, :] <= idx[:, None])[None]
                    full = mask.expand(mask.shape[0], n, s_len)
                    add = torch.zeros(full.shape, dtype=torch.float32, device=q.device)
                    add.masked_fill_(~full, float("-inf"))
                    add = add[:, None]
                out, lse = flash(
                    qq, k, v, 0.0, causal and mask is None, attn_mask=add, scale=scaling
                )
                if mask is not None:
                    seen = full.any(-1)  # (Bm, n): queries that see some key of this term
                    lse = lse.masked_fill(~seen[:, None], float("-inf"))
                    out = out.masked_fill(~seen[:, None, :, None], 0.0)
                outs.append(out)
                lses.append(lse)
        lse_all = torch.stack(lses)
        total = torch.logsumexp(lse_all, dim=0)
        weights = torch.exp(lse_all - total)  # (terms, B, Hq, n)
        res = sum(w[..., None] * o for w, o in zip(weights, outs, strict=True))
        return res.transpose(1, 2).contiguous().to(q.dtype)

    acc = torch.zeros(bsz, hkv, g * n, d, dtype=torch.float32, device=q.device)
    m = torch.full((bsz, hkv, g * n, 1), float("-inf"), dtype=torch.float32, device=q.device)
    denom = torch.zeros(bsz, hkv, g * n, 1, dtype=torch.float32, device=q.device)
    for seg in segments:
        for rotated, start, stop, mask, causal in _terms(seg, qpos, pattern):
            if causal:
                idx = torch.arange(n, device=q.device)
                tri = (idx[None, :] <= idx[:, None])[None]
                mask = tri if mask is None else mask & tri
            qq = rotated_queries() if rotated else qf
            for b0 in range(start, stop, key_block):
                b1 = min(stop, b0 + key_block)
                k = seg.keys[:, :, b0:b1].float()
                v = seg.values[:, :, b0:b1].float()
                s = torch.matmul(qq, k.transpose(-1, -2)).mul_(scaling)
                if mask is not None:
                    mk = mask if mask.shape[-1] == 1 else mask[..., b0 - start : b1 - start]
                    s = (
                        s.view(bsz, hkv, g, n, b1 - b0)
                        .masked_fill(~mk[:, None, None], float("-inf"))
                        .view(bsz, hkv, g * n, b1 - b0)
                    )
                m_new = torch.maximum(m, s.amax(-1, keepdim=True))
                m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
                p = torch.exp(s - m_safe)
                alpha = torch.exp(m - m_safe)
                denom = denom * alpha + p.sum(-1, keepdim=True)
                acc = acc * alpha + torch.matmul(p, v)
                m = m_new
    out = (acc / denom).view(bsz, hkv, g, n, d).reshape(bsz, hq, n, d)
    return out.transpose(1, 2).contiguous().to(q.dtype)


# ---- transformers integration ----------------------------------------------------------------------
def _base_function(module: Any, base: str) -> Callable[..., Any]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base == "eager" or base not in ALL_ATTENTION_FUNCTIONS:
        modeling = sys.modules.get(type(module).__module__)
        fn = getattr(modeling, "eager_attention_forward", None)
        if fn is None:
            raise RuntimeError(f"no eager attention function for {type(module).__name__}")
        return fn
    return ALL_ATTENTION_FUNCTIONS[base]


def _attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, Any]:
    plan = kwargs.pop("decoding_plan", None)
    if scaling is None:
        scaling = float(query.shape[-1]) ** -0.5
    if plan is not None:
        return plan.attend(module, query, key, value, scaling), None
    pattern = getattr(module, "_decoding_lambda", None)
    if pattern is not None:
        from decoding.backend.lambda_attention import lambda_cache_attention

        out = lambda_cache_attention(
            module, query, key, value, attention_mask, scaling, pattern, kwargs.get("position_ids")
        )
        return out, None
    base = getattr(module, "_decoding_base_attn", "sdpa")
    return _base_function(module, base)(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )


def install(hf_model: Any) -> None:
    """Switch ``hf_model`` to the ``decoding_backend`` attention implementation (idempotent).

    Behaviour without a plan or a Lambda pattern is the previous implementation's, bit for bit:
    its attention function and its mask function are reused.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    config = hf_model.config
    current = config._attn_implementation
    if current is not None and current.startswith(ATTENTION_NAME):
        return
    base = current or "sdpa"
    if base not in ("sdpa", "eager"):
        base = "sdpa"  # flash/flex kernels do not run here (CPU); sdpa is their exact equivalent
    name = f"{ATTENTION_NAME}+{base}"
    AttentionInterface.register(name, _attention_forward)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    for module in attention_modules(hf_model):
        module._decoding_base_attn = base
    hf_model.set_attn_implementation(name)


def attention_modules(hf_model: Any) -> list[Any]:
    """The model's attention layers (the modules with a ``layer_idx`` that the attention function
    receives); the backend keeps its per-model settings on them, not on the config (which must
    stay serializable)."""
    return [m for m in hf_model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config")]
