"""ASAp (Park et al. 2024, "Grammar-Aligned Decoding"): a fresh trie samples like masking, the
estimates are upper bounds that only tighten and reach the exact Z, the samples converge to the
model conditioned on the constraint, the trie survives a save/load, and the node cap raises.

Toys (tokens '0'/'a' = 0, '1'/'b' = 1, EOS = 2):
- A: uniform bits, length 3, then EOS; language {000, 100, 101, 110, 111}; Z = 5/8; masking
  gives P(000) = 1/2 where the target gives 1/5.
- B: P(a)=.9, P(b)=.1; P(.|a)=(.01,.99); P(.|b)=(.5,.5); then EOS; language {aa, ba, bb};
  Z = .109, target (.0826, .4587, .4587), masking (.9, .05, .05).
- C: uniform bits, length 5, then EOS; language {00000} and all 1xxxx; Z = 17/32; target 1/17
  each, masking 1/2 for 00000.
- D: ``sampler_toys.toy_c`` (a random fixed model over 3 symbols + EOS, 45 words of length 1-4):
  a bushier trie for the bound and persistence tests.

Tolerances: the fixed bounds of the task (stated per test); float comparisons to 1e-12. Every
test uses a fixed seed.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from sampler_toys import TableModel, TrieMatcher, toy_a, toy_b
from sampler_toys import toy_c as toy_d

from samplers import (
    ASApEmptyLanguageError,
    ASApSample,
    ASApSampler,
    ASApTrieFullError,
    MaskedSampler,
    enumerate_distributions,
    kl_divergence,
)

TOL = 1e-12

# Toy C: uniform bits, length 5; language {00000} plus all 1xxxx.
C_EOS = 2
TOY_C_LANGUAGE = [(0, 0, 0, 0, 0)] + [(1, *r) for r in itertools.product((0, 1), repeat=4)]


def toy_c() -> tuple[TableModel, TrieMatcher]:
    def probs(prefix: tuple[int, ...]) -> np.ndarray:
        return np.array([0.5, 0.5, 0.0]) if len(prefix) < 5 else np.array([0.0, 0.0, 1.0])

    return TableModel(probs, 3, C_EOS), TrieMatcher(TOY_C_LANGUAGE, 3, C_EOS)


# name -> (toy, max_tokens counting EOS)
TOYS = {"A": (toy_a, 4), "B": (toy_b, 3), "C": (toy_c, 6), "D": (toy_d, 5)}


class CachedModel:
    """The same toy model, memoized per prefix (fresh-trie loops call it 80,000 times)."""

    def __init__(self, model: TableModel) -> None:
        self.model = model
        self.vocab_size = model.vocab_size
        self.eos_token_id = model.eos_token_id
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}  # prefix -> (1, V) log-probs

    def next_token_logprobs(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        rows = []
        for s in sequences:
            key = tuple(s)
            row = self.cache.get(key)
            if row is None:
                row = self.cache[key] = self.model.next_token_logprobs([key])
            rows.append(row)
        return rows[0] if len(rows) == 1 else torch.cat(rows)


class Exact:
    """Exact Z, target distribution and EFG of every prefix, by enumeration."""

    def __init__(self, model: TableModel, matcher: TrieMatcher, max_tokens: int) -> None:
        ex = enumerate_distributions(model, matcher, max_tokens=max_tokens)
        self.z = math.exp(ex.log_z)
        self.target = ex.exact
        self.lcd = ex.lcd
        self.probs = model.probs
        # joint model probability P(x EOS) of every grammatical string
        self.joint = {x: self.z * p for x, p in ex.exact.items()}

    def prefix_prob(self, u: tuple[int, ...]) -> float:
        return math.prod(float(self.probs(u[:i])[t]) for i, t in enumerate(u))

    def efg(self, u: tuple[int, ...]) -> float:
        """EFG(u) = sum over grammatical completions x of u of P(x EOS) / P(u)."""
        mass = sum(p for x, p in self.joint.items() if x[: len(u)] == u)
        return mass / self.prefix_prob(u)


def empirical(samples: Sequence[tuple[int, ...]]) -> dict[tuple[int, ...], float]:
    return {x: c / len(samples) for x, c in Counter(samples).items()}


def masked_samples(model, matcher, *, n: int, max_tokens: int, seed: int) -> list[tuple[int, ...]]:
    """Locally constrained decoding with ``MaskedSampler``, one token at a time."""
    g = np.random.default_rng(seed)
    sampler = MaskedSampler()
    out = []
    for _ in range(n):
        m, toks = matcher.fork(), []
        for _ in range(max_tokens):
            tok, _ = sampler.sample(model.next_token_logprobs([toks])[0], m, generator=g)
            assert tok is not None
            if tok == model.eos_token_id:
                break
            assert m.accept_token(tok)
            toks.append(tok)
        out.append(tuple(toks))
    return out


def test_first_sample_of_a_fresh_trie_is_masked_sampling() -> None:
    """Toy A, 20,000 fresh tries: P(000) = 0.5 +- 0.01 (masking; the target is 0.2) and each
    1xx = 0.125 +- 0.01; the proposal probability of every first draw is its masked probability."""
    raw, matcher = toy_a()
    model = CachedModel(raw)
    exact = Exact(raw, matcher, 4)
    assert exact.lcd == pytest.approx({(0, 0, 0): 0.5, **{w: 0.125 for w in exact.target if w[0]}})
    log_lcd = {w: math.log(p) for w, p in exact.lcd.items()}
    g = np.random.default_rng(1)
    draws = []
    for _ in range(20_000):
        s = ASApSampler(model, matcher, max_tokens=4, generator=g).sample()
        assert math.isclose(s.log_prob_proposal, log_lcd[s.tokens], abs_tol=TOL)
        draws.append(s.tokens)
    freq = empirical(draws)
    assert set(freq) == set(exact.target)
    assert abs(freq[(0, 0, 0)] - 0.5) <= 0.01, freq
    for w in exact.target:
        assert abs(freq[w] - exact.lcd[w]) <= 0.01, (w, freq)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_estimates_are_upper_bounds_and_the_root_never_increases(name: str) -> None:
    """After each of 300 draws: E(u) >= EFG(u) - 1e-12 at every expanded node, the root
    estimate is <= the previous one + 1e-12 (and >= Z), every sample is grammatical, and its
    model log-probability is exact."""
    make, max_tokens = TOYS[name]
    model, matcher = make()
    exact = Exact(model, matcher, max_tokens)
    sampler = ASApSampler(model, matcher, max_tokens=max_tokens, generator=np.random.default_rng(2))
    assert sampler.root_efg == 1.0 and sampler.n_nodes == 0
    previous = sampler.root_efg
    for _ in range(300):
        s = sampler.sample()
        assert s.tokens in exact.target
        assert s.log_prob_model == pytest.approx(math.log(exact.joint[s.tokens]), abs=1e-12)
        assert s.root_efg == sampler.root_efg
        assert sampler.root_efg <= previous + TOL
        assert sampler.root_efg >= exact.z - TOL
        previous = sampler.root_efg
        estimates = sampler.efg_estimates()
        assert len(estimates) == sampler.n_nodes
        for u, e in estimates.items():
            assert e >= exact.efg(u) - TOL, (u, e, exact.efg(u))


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_root_estimate_reaches_exact_z(name: str) -> None:
    """Within 500 draws the root estimate equals Z to 1e-12 (and stays there)."""
    make, max_tokens = TOYS[name]
    model, matcher = make()
    z = Exact(model, matcher, max_tokens).z
    sampler = ASApSampler(model, matcher, max_tokens=max_tokens, generator=np.random.default_rng(3))
    for k in range(1, 501):
        sampler.sample()
        if abs(sampler.root_efg - z) <= TOL:
            break
    assert abs(sampler.root_efg - z) <= TOL, (name, k, sampler.root_efg, z)
    sampler.sample_many(20)
    assert abs(sampler.root_efg - z) <= TOL


def test_toy_b_converges_where_masking_does_not() -> None:
    """Toy B, 2,000 samples: KL(empirical || exact) < 0.01 for ASAp, > 1.5 for masking."""
    raw, matcher = toy_b()
    model = CachedModel(raw)
    exact = Exact(raw, matcher, 3)
    asap = ASApSampler(model, matcher, max_tokens=3, generator=np.random.default_rng(4))
    kl_asap = kl_divergence(empirical([s.tokens for s in asap.sample_many(2000)]), exact.target)
    masked = masked_samples(model, matcher, n=2000, max_tokens=3, seed=5)
    kl_masked = kl_divergence(empirical(masked), exact.target)
    print(f"toy B: KL ASAp {kl_asap:.5f}, masked {kl_masked:.3f}")
    assert kl_asap < 0.01
    assert kl_masked > 1.5
    assert asap.n_model_calls == asap.n_nodes  # one model call per expanded prefix, ever


def test_toy_c_converges_where_masking_does_not() -> None:
    """Toy C, samples 1,000 to 2,000: KL(empirical || exact) < 0.02 for ASAp, > 0.6 for 1,000
    masked samples."""
    raw, matcher = toy_c()
    model = CachedModel(raw)
    exact = Exact(raw, matcher, 6)
    asap = ASApSampler(model, matcher, max_tokens=6, generator=np.random.default_rng(6))
    draws = [s.tokens for s in asap.sample_many(2000)]
    kl_asap = kl_divergence(empirical(draws[1000:]), exact.target)
    masked = masked_samples(model, matcher, n=1000, max_tokens=6, seed=7)
    kl_masked = kl_divergence(empirical(masked), exact.target)
    print(f"toy C: KL ASAp {kl_asap:.5f}, masked {kl_masked:.3f}")
    assert kl_asap < 0.02
    assert kl_masked > 0.6


def _same(a: list[ASApSample], b: list[ASApSample]) -> None:
    assert [s.tokens for s in a] == [s.tokens for s in b]
    assert [(s.log_prob_model, s.log_prob_proposal, s.root_efg) for s in a] == [
        (s.log_prob_model, s.log_prob_proposal, s.root_efg) for s in b
    ]


def test_save_load_continues_identically(tmp_path) -> None:
    """Toy D: 40 draws, save, then 150 more from the original and from the loaded copy with the
    same generator state: identical samples, estimates and counters; the loaded sampler calls the
    model only for prefixes it had not expanded."""
    model, matcher = toy_d()
    g = np.random.default_rng(8)
    original = ASApSampler(model, matcher, max_tokens=5, max_nodes=500, generator=g)
    original.sample_many(40)
    path = tmp_path / "trie.json"
    original.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "samplers.asap.trie" and data["version"] == 1
    assert len(data["nodes"]) == original.n_nodes

    g2 = copy.deepcopy(g)
    loaded = ASApSampler.load(path, model, matcher, generator=g2)
    assert loaded.max_nodes == 500 and loaded.max_tokens == 5
    assert loaded.efg_estimates() == original.efg_estimates()
    assert loaded.root_efg == original.root_efg
    calls_before, nodes_before = len(model.calls), loaded.n_nodes
    cont_loaded = loaded.sample_many(150)
    assert len(model.calls) - calls_before == loaded.n_nodes - nodes_before
    cont_original = original.sample_many(150)
    _same(cont_original, cont_loaded)
    assert loaded.efg_estimates() == original.efg_estimates()
    assert (loaded.n_samples, loaded.n_model_calls) == (original.n_samples, original.n_model_calls)

    # a factory instead of a matcher, and a torch generator, give the same stream too
    a = ASApSampler(model, matcher, max_tokens=5, generator=torch.Generator().manual_seed(9))
    b = ASApSampler(model, matcher.fork, max_tokens=5, generator=torch.Generator().manual_seed(9))
    _same(a.sample_many(30), b.sample_many(30))
    a.save(path)
    c = ASApSampler.load(path, model, matcher, generator=torch.Generator().manual_seed(10))
    b.generator = torch.Generator().manual_seed(10)
    _same(b.sample_many(30), c.sample_many(30))

    # a fresh sampler round-trips; a wrong version or model is refused
    ASApSampler(model, matcher, max_tokens=5).save(path)
    assert ASApSampler.load(path, model, matcher).n_nodes == 0
    data["version"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="version"):
        ASApSampler.load(path, model, matcher)
    data["version"] = 1
    path.write_text(json.dumps(data))
    other, _ = toy_a()
    with pytest.raises(ValueError, match="vocab_size"):
        ASApSampler.load(path, other, matcher)


def test_node_cap_raises_and_keeps_the_trie_consistent(tmp_path) -> None:
    """Policy: no pruning; expanding past ``max_nodes`` raises ASApTrieFullError before the model
    is called, the trie keeps what the draw learned (still upper bounds), and raising the cap
    continues. Toy A's whole trie has 11 nodes: a cap of 11 never raises."""
    model, matcher = toy_a()
    exact = Exact(model, matcher, 4)
    with pytest.raises(ValueError):
        ASApSampler(model, matcher, max_tokens=4, max_nodes=0)

    sampler = ASApSampler(
        model, matcher, max_tokens=4, max_nodes=3, generator=np.random.default_rng(11)
    )
    calls = len(model.calls)
    with pytest.raises(ASApTrieFullError, match="max_nodes=3"):
        sampler.sample()
    assert sampler.n_nodes == 3 and len(model.calls) - calls == 3
    assert sampler.n_samples == 0
    for u, e in sampler.efg_estimates().items():
        assert e >= exact.efg(u) - TOL
    with pytest.raises(ASApTrieFullError):  # still full: the same kind of draw needs a node
        for _ in range(50):
            sampler.sample()
    sampler.save(tmp_path / "full.json")
    resumed = ASApSampler.load(tmp_path / "full.json", model, matcher, max_nodes=11)
    resumed.generator = np.random.default_rng(12)
    resumed.sample_many(300)
    assert resumed.n_nodes == 11
    assert abs(resumed.root_efg - exact.z) <= TOL

    exact_fit = ASApSampler(
        model, matcher, max_tokens=4, max_nodes=11, generator=np.random.default_rng(13)
    )
    exact_fit.sample_many(300)
    assert exact_fit.n_nodes == 11
    tight = ASApSampler(
        model, matcher, max_tokens=4, max_nodes=10, generator=np.random.default_rng(13)
    )
    with pytest.raises(ASApTrieFullError):
        tight.sample_many(300)
    assert tight.n_nodes == 10


def test_dead_ends_restart_and_an_empty_language_raises() -> None:
    """Language {000, 1} under toy A's model: '1 EOS' has probability 0, so the 1-branch is a dead
    end; draws restart, always return 000, and the root reaches Z = 1/8. With max_tokens = 3
    nothing fits (Z = 0): ASApEmptyLanguageError."""
    model, _ = toy_a()
    matcher = TrieMatcher([(0, 0, 0), (1,)], 3, 2)
    sampler = ASApSampler(model, matcher, max_tokens=4, generator=np.random.default_rng(14))
    samples = sampler.sample_many(50)
    assert {s.tokens for s in samples} == {(0, 0, 0)}
    assert sum(s.n_restarts for s in samples) >= 1
    assert abs(sampler.root_efg - 0.125) <= TOL

    _, matcher_a = toy_a()
    empty = ASApSampler(model, matcher_a, max_tokens=3, generator=np.random.default_rng(15))
    with pytest.raises(ASApEmptyLanguageError):
        empty.sample_many(50)
    assert empty.root_efg == 0.0


def test_large_vocabulary_uses_the_full_mask() -> None:
    """A 300-token model (over the check-per-token threshold): ASAp reads allowed sets from
    bitmask fills and still reaches Z exactly; samples stay in the language."""
    vocab, eos = 300, 299
    rng = np.random.default_rng(16)
    table: dict[tuple[int, ...], np.ndarray] = {}

    def probs(prefix: tuple[int, ...]) -> np.ndarray:
        if prefix not in table:
            p = rng.dirichlet(np.full(vocab, 0.3))
            table[prefix] = p
        return table[prefix]

    language = [(5,), (5, 7), (200, 3), (298, 298), (17, 250)]
    model = TableModel(probs, vocab, eos)
    matcher = TrieMatcher(language, vocab, eos)
    exact = Exact(model, matcher, 3)
    sampler = ASApSampler(model, matcher, max_tokens=3, generator=np.random.default_rng(17))
    for s in sampler.sample_many(200):
        assert s.tokens in exact.target
    assert matcher.counter.fills > 0
    assert abs(sampler.root_efg - exact.z) <= TOL
    for u, e in sampler.efg_estimates().items():
        assert e == pytest.approx(exact.efg(u), abs=TOL)
