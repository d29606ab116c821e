"""Tiny random transformers models and references shared by the backend tests."""

from __future__ import annotations

import pytest
import torch


def tiny_llama(*, max_positions: int = 512, vocab: int = 256, seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        max_position_embeddings=max_positions,
        eos_token_id=vocab - 1,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_qwen2(*, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        vocab_size=256,
        max_position_embeddings=512,
    )
    return Qwen2ForCausalLM(cfg).eval()


def recompute(model, seq) -> torch.Tensor:
    """Plain full recompute: one unpadded forward pass, last position's logits (fp32)."""
    with torch.inference_mode():
        return model(input_ids=torch.tensor([list(seq)]), use_cache=False).logits[0, -1].float()


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run far faster on one thread (and do not fight a busy machine for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
