"""The KV prefix cache: logits through the trie equal a plain recompute over random prefix trees."""

from __future__ import annotations

import random

import pytest
import torch

from decoding.backend import BatchedLM, PrefixCache
from tests.decoding.backend_helpers import recompute, single_thread, tiny_llama, tiny_qwen2

__all__ = ["single_thread"]

TOL = 1e-4


def random_tree(rng: random.Random, n_seqs: int, vocab: int = 256) -> list[list[int]]:
    """Sequences that share prefixes like a random tree: each new one forks an earlier one at a
    random point (or starts fresh) and adds a random tail."""
    seqs: list[list[int]] = []
    for _ in range(n_seqs):
        if seqs and rng.random() < 0.85:
            base = rng.choice(seqs)
            cut = rng.randint(0, len(base))
            head = base[:cut]
        else:
            head = []
        tail = [rng.randrange(vocab) for _ in range(rng.randint(1, 40))]
        seqs.append(head + tail)
    return seqs


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_prefix_trees_match_recompute(llama, seed):
    rng = random.Random(seed)
    backend = BatchedLM(llama, prefill_chunk=rng.choice([5, 16, 64, 512]), long_context="none")
    seqs = random_tree(rng, 24)
    refs = {tuple(s): recompute(llama, s) for s in seqs}
    # several calls, random batches (with duplicates and prefixes of one another)
    for _ in range(6):
        batch = [rng.choice(seqs) for _ in range(rng.randint(1, 10))]
        if rng.random() < 0.5:  # a prefix of a cached sequence (ends mid-node)
            s = rng.choice(seqs)
            if len(s) > 1:
                batch.append(s[: rng.randint(1, len(s) - 1)])
                refs.setdefault(tuple(batch[-1]), recompute(llama, batch[-1]))
        out = backend.logits(batch)
        assert out.shape == (len(batch), 256)
        for s, row in zip(batch, out, strict=True):
            diff = (row - refs[tuple(s)]).abs().max().item()
            assert diff < TOL, (seed, len(s), diff)
    stats = backend.stats
    assert stats.tokens_reused > 0 and stats.hits > 0
    assert stats.bytes_held > 0 and stats.nodes > 0


def test_smc_like_growth_and_forks(llama):
    """Particles that grow one token per call, get duplicated (resampling) and diverge."""
    rng = random.Random(7)
    backend = BatchedLM(llama, prefill_chunk=32, long_context="none")
    prompt = [rng.randrange(256) for _ in range(50)]
    particles = [[] for _ in range(6)]
    for step in range(8):
        out = backend.logits([prompt + p for p in particles])
        for p, row in zip(particles, out, strict=True):
            assert (row - recompute(llama, prompt + p)).abs().max().item() < TOL
        if step % 3 == 2:  # resample: copy some particles over others
            particles = [list(rng.choice(particles)) for _ in particles]
        for p in particles:
            p.append(rng.randrange(256))
    # the prompt was computed once; every step computes about one token per distinct particle
    assert backend.tokens_computed < len(prompt) + 8 * 6 + 10


def test_prompt_computed_once_and_cached_logits_reused(llama):
    backend = BatchedLM(llama, prefill_chunk=16, long_context="none")
    doc = list(range(1, 120))
    a = backend.logits([doc + [5, 6]])
    computed = backend.tokens_computed
    b = backend.logits([doc + [7, 8, 9]])
    assert backend.tokens_computed - computed == 3
    assert (a[0] - recompute(llama, doc + [5, 6])).abs().max() < TOL
    assert (b[0] - recompute(llama, doc + [7, 8, 9])).abs().max() < TOL
    passes = backend.forward_passes
    c = backend.logits([doc + [5, 6]])  # every token and the logits are cached
    assert backend.forward_passes == passes
    assert torch.equal(c, a)


def test_shared_prefix_within_one_call_computed_once(llama):
    backend = BatchedLM(llama, prefill_chunk=64, long_context="none")
    doc = [(i * 7) % 256 for i in range(100)]
    batch = [doc + [i, i + 1] for i in range(5)]
    out = backend.logits(batch)
    assert backend.tokens_computed <= len(doc) + 5 * 2 + 1
    for s, row in zip(batch, out, strict=True):
        assert (row - recompute(llama, s)).abs().max() < TOL


def test_lru_eviction_under_budget_stays_correct(llama):
    rng = random.Random(3)
    probe = BatchedLM(llama, long_context="none")
    probe.logits([list(range(100))])
    per_100 = probe.stats.bytes_held
    budget = 2 * per_100
    backend = BatchedLM(llama, prefill_chunk=32, long_context="none", memory_budget=budget)
    seqs = random_tree(rng, 30)
    for s in seqs + seqs[::-1]:
        row = backend.logits([s])[0]
        assert (row - recompute(llama, s)).abs().max() < TOL
        assert backend.stats.bytes_held <= budget
    assert backend.stats.evictions > 0


def test_fork_copies_nothing_and_cow_keeps_shared_kv():
    cache = PrefixCache(num_layers=1, num_kv_heads=1, head_dim=2, dtype=torch.float32)
    kv = torch.arange(5, dtype=torch.float32).reshape(1, 1, 1, 5, 1).expand(1, 2, 1, 5, 2)
    node = cache.insert([1, 2, 3, 4, 5], 0, kv.contiguous())
    before = cache.bytes_held
    storage = node.buf.untyped_storage().data_ptr()
    for _ in range(3):  # forks: lookups of the same prefix
        m = cache.match([1, 2, 3, 4, 5])
        assert m.length == 5 and m.path[-1] is node
    assert cache.bytes_held == before
    # divergence inside the node: split (views, no copy), new branch is a new node
    other = torch.full((1, 2, 1, 2, 2), 99.0)
    leaf = cache.insert([1, 2, 3, 9, 9], 3, other)
    m = cache.match([1, 2, 3, 4, 5])
    assert [n.length for n in m.path] == [3, 2]
    assert all(n.buf.untyped_storage().data_ptr() == storage for n in m.path)
    assert torch.equal(m.path[0].keys(0), kv[0, 0, :, :3].contiguous())
    assert torch.equal(m.path[1].keys(0), kv[0, 0, :, 3:].contiguous())
    assert leaf.parent is m.path[0] and torch.equal(leaf.keys(0), other[0, 0])
    # extending a shared (inner) node never writes into it: a child is created
    head = m.path[0]
    cache.insert([1, 2, 3, 7], 3, torch.zeros(1, 2, 1, 1, 2))
    assert head.length == 3 and len(head.children) == 3


def test_other_architecture_qwen2():
    model = tiny_qwen2()
    backend = BatchedLM(model, prefill_chunk=8, long_context="none")
    seqs = [list(range(3, 40)), list(range(3, 30)) + [1, 2], list(range(3, 40)) + [4]]
    for _ in range(2):
        out = backend.logits(seqs)
        for s, row in zip(seqs, out, strict=True):
            assert (row - recompute(model, s)).abs().max() < TOL


def test_installed_attention_leaves_plain_calls_unchanged():
    model = tiny_llama(seed=5)
    ids = torch.tensor([list(range(30))])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    BatchedLM(model)
    assert model.config._attn_implementation.startswith("decoding_backend")
    with torch.inference_mode():
        after = model(input_ids=ids).logits
        padded = model(
            input_ids=torch.cat([ids, ids]), attention_mask=torch.ones(2, 30, dtype=torch.long)
        ).logits
    assert torch.equal(before, after)
    assert (padded[0] - before[0]).abs().max() < 1e-5
