"""The weighted samplers through the API on the real model: ``generate(..., sampler="awrs" |
"smc" | "asap")``, the :class:`decoding.lm_adapter.PromptLM` KV-cache reuse, and the CLI flag.

Every run is a handful of tokens (the machine has two shared cores). Model log-probabilities
reported by the API are checked against an independent recomputation from the prompt.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decoding import Generator
from decoding.lm_adapter import PromptLM
from decoding.sampling import validate_sampling

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]
COLORS = ["red", "green", "blue"]
COLOR_PROMPT = "Pick one color: red, green or blue. Answer with the color only."


def _recomputed_log_prob(model, prompt: str, tokens: list[int]) -> float:
    """log P(tokens + EOS | prompt), one fresh adapter, each prefix recomputed from the prompt."""
    seq = [*tokens, model.vocab.eos_token_id]
    rows = PromptLM(model, model.encode(prompt)).next_token_logprobs(
        [seq[:i] for i in range(len(seq))]
    )  # mixed lengths: the fallback, one forward per length from the prompt
    return sum(float(rows[i, tok]) for i, tok in enumerate(seq))


def test_validate_sampling_for_weighted_samplers():
    for name in ("awrs", "smc", "asap"):
        validate_sampling(name, 0.7, None, None)
        with pytest.raises(ValueError, match="temperature"):
            validate_sampling(name, 0.0, None, None)
        with pytest.raises(ValueError, match="top_k"):
            validate_sampling(name, 1.0, 5, None)


def test_prompt_lm_reuses_rows_and_matches_recomputation(model):
    ids = model.encode("Count: one, two,", chat=False)
    # rows in a static cache (room for 4 new tokens) against a dynamic cache
    lm, ref = PromptLM(model, ids, max_new_tokens=4), PromptLM(model, ids)
    first = lm.next_token_logprobs([[], [], []])  # from the prompt's logits: no new forward
    assert first.shape == (3, model.vocab.size) and lm.n_forwards == 1
    lm.next_token_logprobs([[1], [2], [1]])
    # SMC after a resampling: rows duplicated, dropped and reordered, each extended by one token
    seqs = [[2, 5], [1, 7], [1, 7], [2, 9]]
    fast = lm.next_token_logprobs(seqs)
    assert lm.n_forwards == 3 and lm.n_fallbacks == 1  # only the empty start was a fallback
    slow = ref.next_token_logprobs(seqs)  # recomputed from the prompt
    assert ref.n_fallbacks == 1
    assert torch.allclose(fast, slow, atol=1e-4)
    assert torch.allclose(fast.exp().sum(-1), torch.ones(4), atol=1e-4)
    again = lm.next_token_logprobs([[1, 7]])  # an existing row: no forward
    assert lm.n_reused == 1 and lm.n_forwards == 3
    assert torch.allclose(again[0], fast[1], atol=1e-4)
    mixed = lm.next_token_logprobs([[3], [1, 2], []])  # mixed lengths: exact fallback
    solo = [PromptLM(model, ids + s).next_token_logprobs([[]])[0] for s in ([3], [1, 2])]
    assert torch.allclose(mixed, torch.stack([*solo, first[0]]), atol=1e-4)


def test_awrs_valid_outputs_weights_and_checks_per_token(model):
    gen = Generator(model, choices=COLORS, max_tokens=6)
    outs = gen.generate(COLOR_PROMPT, sampler="awrs", n=2, seed=0)
    assert len(outs) == 2
    st = outs[0].stats
    assert st.sampler == "awrs" and st.batch_size == 2
    assert st.sampled_tokens >= 4  # at least one token and the EOS per row
    assert 1.0 <= st.checks_per_token < math.inf
    assert st.constraint_checks >= st.sampled_tokens
    assert st.model_calls >= 2 and len(st.token_seconds) >= 2
    for c in outs:
        assert c.finish_reason == "stop" and c.text in COLORS and c.value == c.text
        assert c.log_weight is not None and math.isfinite(c.log_weight) and c.log_weight <= 1e-6
        assert c.log_ml is None and c.posterior is None
        assert c.log_prob is not None and c.log_prob <= 0.0
    first = outs[0]
    assert first.log_prob == pytest.approx(
        _recomputed_log_prob(model, COLOR_PROMPT, first.tokens), abs=1e-3
    )


def test_smc_returns_valid_output_and_finite_log_ml(model):
    gen = Generator(model, regex=r"(yes|no)", max_tokens=5)
    c = gen.generate("Is water wet? Answer yes or no.", sampler="smc", n_particles=4, seed=3)
    assert c.finish_reason == "stop" and c.text in ("yes", "no")
    assert c.log_ml is not None and math.isfinite(c.log_ml) and c.log_ml <= 1e-6
    assert c.posterior and c.text in c.posterior
    assert set(c.posterior) <= {"yes", "no"} and sum(c.posterior.values()) == pytest.approx(1.0)
    assert c.stats.sampler == "smc" and c.stats.batch_size == 4
    assert c.log_prob is not None and c.log_prob <= 0.0


def test_cut_by_max_tokens_is_never_valid(model):
    gen = Generator(model, regex=r"[a-z]{12}", max_tokens=3)  # needs at least 4 tokens with EOS
    for c in gen.generate("Write letters.", sampler="awrs", n=2, seed=1):
        assert c.finish_reason == "length" and c.value is None and c.log_weight is None
    c = gen.generate("Write letters.", sampler="smc", n_particles=2, seed=1)
    assert c.finish_reason == "length" and c.value is None
    assert c.log_ml == -math.inf and c.posterior == {}


def test_asap_returns_n_valid_samples_with_model_log_probs(model):
    gen = Generator(model, choices=COLORS, max_tokens=6)
    outs = gen.generate(COLOR_PROMPT, sampler="asap", n=3, seed=0)
    assert len(outs) == 3
    for c in outs:
        assert c.finish_reason == "stop" and c.text in COLORS
        assert c.log_prob is not None and c.log_prob <= 0.0 and math.isfinite(c.log_weight)
    assert outs[0].log_prob == pytest.approx(
        _recomputed_log_prob(model, COLOR_PROMPT, outs[0].tokens), abs=1e-3
    )
    trie = gen.asap_sampler(COLOR_PROMPT)
    assert trie is not None and trie.n_samples == 3
    root = trie.root_efg
    gen.generate(COLOR_PROMPT, sampler="asap", n=2, seed=1)  # the same trie continues
    assert trie.n_samples == 5 and trie.root_efg <= root + 1e-12


def test_weighted_samplers_need_a_constraint(model):
    with pytest.raises(ValueError, match="constraint"):
        Generator(model).generate("hi", sampler="awrs")


def test_cli_sampler_flag():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "decoding", "generate", "--sampler", "smc", "--particles", "3",
         "--choices", "red,green,blue", "--max-tokens", "6", "--seed", "0", "--stats",
         COLOR_PROMPT],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in COLORS
    assert "sampler: smc" in proc.stderr
    assert re.search(r"log_ml=-?\d+\.\d+", proc.stderr)
