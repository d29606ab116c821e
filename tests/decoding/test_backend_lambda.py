"""LM-Infinite's Lambda pattern: plain attention when the window covers the sequence; a dense
reference (explicit masks, rotated queries) otherwise; in the backend and over DynamicCache."""

from __future__ import annotations

import pytest
import torch

from decoding.backend import BatchedLM, LambdaPattern, enable_lambda, resolve_pattern
from decoding.backend.attention import find_inv_freq, rotate_queries
from tests.decoding.backend_helpers import recompute, single_thread, tiny_llama

__all__ = ["single_thread"]

TOL = 1e-4


def dense_lambda_logprobs(model, seq, pattern: LambdaPattern) -> torch.Tensor:
    """Reference: every layer's attention as one dense masked softmax over the whole sequence."""
    from transformers import AttentionInterface
    from transformers.models.llama.modeling_llama import repeat_kv

    inv = find_inv_freq(model)

    def dense(module, q, k, v, mask, scaling=None, dropout=0.0, **kwargs):
        n = q.shape[2]
        pos = torch.arange(n)
        k = repeat_kv(k, module.num_key_value_groups).float()
        v = repeat_kv(v, module.num_key_value_groups).float()
        q = q.float()
        s_loc = q @ k.transpose(-1, -2) * scaling
        q_rot = rotate_queries(q, pos.clamp(max=pattern.max_distance) - pos, inv)
        s_glob = q_rot @ k.transpose(-1, -2) * scaling
        dist = pos[:, None] - pos[None, :]
        local = (dist >= 0) & (dist < pattern.window)
        glob = (dist >= 0) & ~local & (pos[None, :] < pattern.n_global)
        s = torch.where(local, s_loc, torch.where(glob, s_glob, float("-inf")))
        out = torch.softmax(s, dim=-1) @ v
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("lambda_dense_reference", dense)
    previous = model.config._attn_implementation
    model.set_attn_implementation("lambda_dense_reference")
    try:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0].float()
    finally:
        model.set_attn_implementation(previous)
    lp = torch.log_softmax(logits, dim=-1)
    return lp[:-1].gather(1, torch.tensor(seq[1:])[:, None])[:, 0]


def plain_logprobs(model, seq) -> torch.Tensor:
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return lp[:-1].gather(1, torch.tensor(seq[1:])[:, None])[:, 0]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(max_positions=64, seed=11)


def seq_of(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 255, (n,), generator=g).tolist()


def test_rotate_queries_composes_with_hf_rope(model):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rope = model.model.rotary_emb
    q = torch.randn(1, 4, 5, 16)
    p = torch.tensor([[3, 10, 40, 100, 7]])
    delta = torch.tensor([-3, 5, -40, -60, 0])
    cos_p, sin_p = rope(q, p)
    cos_t, sin_t = rope(q, p + delta)
    at_p, _ = apply_rotary_pos_emb(q, q, cos_p, sin_p)
    at_t, _ = apply_rotary_pos_emb(q, q, cos_t, sin_t)
    moved = rotate_queries(at_p, delta, find_inv_freq(model))
    assert (moved - at_t).abs().max() < 1e-5


@pytest.mark.parametrize("chunk", [7, 512])
def test_window_longer_than_sequence_is_plain_attention(model, chunk):
    seq = seq_of(90)
    backend = BatchedLM(model, prefill_chunk=chunk, long_context="lambda", window=200, n_global=4)
    assert (backend.score(seq) - plain_logprobs(model, seq)).abs().max() < TOL
    assert (backend.logits([seq])[0] - recompute(model, seq)).abs().max() < TOL


@pytest.mark.parametrize(("chunk", "window", "n_global"), [(5, 16, 4), (32, 24, 0), (512, 40, 10)])
def test_backend_lambda_matches_dense_reference(model, chunk, window, n_global):
    seq = seq_of(100, seed=window)
    pattern = LambdaPattern(n_global=n_global, window=window)
    ref = dense_lambda_logprobs(model, seq, pattern)
    backend = BatchedLM(
        model, prefill_chunk=chunk, long_context="lambda", window=window, n_global=n_global
    )
    got = backend.score(seq)
    assert (got - ref).abs().max() < TOL
    # the pattern does change the result past the window
    assert (got - plain_logprobs(model, seq)).abs().max() > 1e-3
    # and decoding through the cache continues it exactly
    tail = seq + [5, 9]
    ref_tail = dense_lambda_logprobs(model, tail + [0], pattern)
    row = torch.log_softmax(backend.logits([tail])[0], dim=-1)
    assert abs(row[0].item() - ref_tail[-1].item()) < TOL


def test_auto_is_plain_inside_trained_length_and_lambda_past_it(model):
    pattern = resolve_pattern("auto", model.config)
    assert pattern is not None and pattern.window == 64 and pattern.max_distance == 64
    assert resolve_pattern("none", model.config) is None
    backend = BatchedLM(model, prefill_chunk=16, long_context="auto")
    short = seq_of(60, seed=3)
    assert (backend.score(short) - plain_logprobs(model, short)).abs().max() < TOL
    long = seq_of(150, seed=4)
    ref = dense_lambda_logprobs(model, long, pattern)
    assert (backend.score(long) - ref).abs().max() < TOL


def test_lambda_over_dynamic_cache(model):
    """enable_lambda: the pattern through transformers' attention interface and DynamicCache."""
    from transformers import DynamicCache

    fresh = tiny_llama(max_positions=64, seed=11)
    seq = seq_of(80, seed=9)
    pattern = LambdaPattern(n_global=4, window=20)
    ref = dense_lambda_logprobs(fresh, seq, pattern)
    enable_lambda(fresh, pattern)
    cache = DynamicCache(config=fresh.config)
    with torch.inference_mode():
        out = fresh(input_ids=torch.tensor([seq[:50]]), past_key_values=cache, use_cache=True)
        lp = torch.log_softmax(out.logits[0].float(), dim=-1)
        got = [lp.gather(1, torch.tensor(seq[1:51])[:, None])[:, 0]]  # positions 0..49
        for t in range(50, 79):  # decode one token at a time through the cache
            out = fresh(
                input_ids=torch.tensor([[seq[t]]]),
                past_key_values=cache,
                use_cache=True,
                position_ids=torch.tensor([[t]]),
            )
            step = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            got.append(step[seq[t + 1]][None])
    assert (torch.cat(got) - ref).abs().max() < TOL
    # window longer than the sequence: plain attention
    enable_lambda(fresh, LambdaPattern(n_global=4, window=500))
    with torch.inference_mode():
        full = fresh(input_ids=torch.tensor([seq])).logits[0].float()
    from decoding.backend import disable_lambda

    disable_lambda(fresh)
    with torch.inference_mode():
        plain = fresh(input_ids=torch.tensor([seq])).logits[0].float()
    assert (full - plain).abs().max() < TOL
