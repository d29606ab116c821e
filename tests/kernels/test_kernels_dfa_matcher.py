"""The device-resident DFA path (mask table + transition table on the device) generates the same
tokens as the CPU Matcher path, for the same seeds, on a real compiled grammar and SmolLM2's
vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import grammars
import kernels
from kernels import allocate_token_bitmask


@pytest.mark.parametrize("pattern", [r"[0-9]{3}-[a-z]{2,5}( ok)?", r'\{"n":(true|false|[0-9]{1,4})\}'])
def test_device_dfa_path_equals_matcher_path(pattern, smollm2_vocab):
    vocab = smollm2_vocab
    cg = grammars.compile(grammars.Grammar.from_regex(pattern), vocab)
    masks = torch.from_numpy(cg.masks.view(np.int32).copy())
    table = torch.from_numpy(cg.token_transitions())
    eos = set(vocab.eos_token_ids)
    batch = 4
    gen = torch.Generator().manual_seed(1234)
    seeds = torch.arange(batch, dtype=torch.int64) * 7 + 3
    states = torch.zeros(batch, dtype=torch.int32)
    matchers = [cg.matcher() for _ in range(batch)]
    bm = allocate_token_bitmask(batch, vocab.size)
    done = [False] * batch
    outs_dev: list[list[int]] = [[] for _ in range(batch)]
    outs_cpu: list[list[int]] = [[] for _ in range(batch)]
    for step in range(40):
        logits = torch.randn(batch, vocab.size, generator=gen) * 3
        dev_mask = kernels.fill_bitmask_from_dfa_states(masks, states)
        for r, m in enumerate(matchers):
            m.fill_next_token_bitmask(bm, r)
        live = [r for r in range(batch) if not done[r]]
        assert torch.equal(dev_mask[live], bm[live])
        tok_dev, _ = kernels.sample_constrained(logits.clone(), dev_mask, seeds, step=step)
        tok_cpu, _ = kernels.sample_constrained(logits.clone(), bm, seeds, step=step)
        states = kernels.advance_dfa_states(table, states, tok_dev)
        for r in range(batch):
            if done[r]:
                continue
            outs_dev[r].append(int(tok_dev[r]))
            outs_cpu[r].append(int(tok_cpu[r]))
            if int(tok_cpu[r]) in eos:
                done[r] = True
            else:
                assert matchers[r].accept_token(int(tok_cpu[r]))
                assert int(states[r]) == matchers[r].state
        if all(done):
            break
    assert outs_dev == outs_cpu
    assert all(done)
    for r in range(batch):
        text = vocab.decode(outs_cpu[r][:-1]).decode()
        import re

        assert re.fullmatch(pattern, text), text
