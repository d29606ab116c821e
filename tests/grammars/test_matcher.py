"""Matcher contract: masks equal a brute-force token walk; accept/check/rollback/fork/forced."""

from __future__ import annotations

import numpy as np
import pytest

import grammars
from grammars import Grammar, Vocabulary
from kernels import allocate_token_bitmask, bitmask_to_bool


def brute_force_allowed(compiled, matcher) -> np.ndarray:
    vocab = compiled.vocab
    out = np.zeros(vocab.size, dtype=bool)
    if matcher.is_terminated():
        return out
    for t in range(vocab.size):
        out[t] = matcher.check_token(t) if t in vocab.eos_token_ids else (
            not vocab.special[t] and compiled.dfa.walk(matcher.state, vocab.tokens[t]) >= 0
        )
    return out


TOY = Vocabulary(
    [b"a", b"b", b"ab", b"ba", b"abc", b"c", b'{"', b'"', b"}", b"x", b"", b"1", b"12"],
    eos_token_id=10,
)


@pytest.mark.parametrize("pattern", [r"(ab|c)*", r"a+b?c", r"[0-9]{1,3}", r'\{"x":"[abc]*"\}'])
def test_masks_equal_brute_force_on_every_prefix(pattern):
    g = Grammar.from_regex(pattern)
    cg = grammars.compile(g, TOY, cache=False)
    m = cg.matcher()
    bm = allocate_token_bitmask(1, TOY.size)
    rng = np.random.default_rng(0)
    for _ in range(12):
        m.fill_next_token_bitmask(bm)
        allowed = bitmask_to_bool(bm, TOY.size)[0].numpy()
        assert (allowed == brute_force_allowed(cg, m)).all()
        choices = np.nonzero(allowed)[0]
        if len(choices) == 0 or m.is_terminated():
            break
        t = int(rng.choice(choices))
        assert m.check_token(t)
        assert m.accept_token(t)


def test_smollm2_masks_equal_brute_force(smollm2_vocab):
    g = Grammar.from_json_schema({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"], "additionalProperties": False})
    cg = grammars.compile(g, smollm2_vocab, cache=False)
    m = cg.matcher()
    bm = allocate_token_bitmask(1, smollm2_vocab.size)
    for piece in [b'{"', b'n":', b"12", b"}"]:
        m.fill_next_token_bitmask(bm)
        allowed = bitmask_to_bool(bm, smollm2_vocab.size)[0].numpy()
        assert (allowed == brute_force_allowed(cg, m)).all()
        assert m.accept_bytes(piece)
    assert m.is_accepting()
    assert m.check_token(smollm2_vocab.eos_token_id)


@pytest.mark.parametrize("schema", [
    # open object: a key other than the declared ones enters the string-body loop after one byte
    {"type": "object", "properties": {"status": {"type": "integer"}, "link": {"type": "string"}},
     "required": ["status"]},
    # strings that are not the plain loop: bounded, patterned, formatted; escapes inside keys
    {"type": "object", "properties": {"a b": {"type": "string", "maxLength": 4},
                                      "p": {"type": "string", "pattern": "^[a-z]+x$"},
                                      "d": {"type": "string", "format": "date"}},
     "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    # after the opening quote most first bytes enter the loop, "x" does not (digits must follow)
    {"type": "object", "properties": {"k": {"type": "string", "pattern": "^([^x][\\s\\S]*|x[0-9]*)$"}},
     "required": ["k"], "additionalProperties": False},
])
def test_every_mask_row_equals_a_token_by_token_walk(smollm2_vocab, schema):
    """Rows computed with the string-body shortcuts (tokens known per first byte without a walk)
    equal the plain per-token walk for every DFA state, and the shortcuts are exercised."""
    from grammars.compiled import _ASCII_PLAIN
    from grammars.tokenwalk import token_table

    for ws in ("compact", "flexible"):
        cg = grammars.compile(Grammar.from_json_schema(schema, whitespace=ws), smollm2_vocab,
                              cache=False)
        cg.compute_masks()
        trans = cg.dfa.trans
        loops = cg._loops()
        nxt = trans[:, _ASCII_PLAIN]
        entering = (~loops) & ((nxt >= 0) & loops[np.maximum(nxt, 0)]).any(axis=1)
        assert loops.any() and entering.any()
        data, offsets = smollm2_vocab.token_offsets
        table = np.empty((cg.n_states, smollm2_vocab.size), dtype=np.int32)
        token_table(trans, data, offsets, smollm2_vocab.special, table)
        want = table >= 0
        want[:, list(smollm2_vocab.eos_token_ids)] = cg.dfa.accepting[:, None]
        got = np.unpackbits(cg.masks.view(np.uint8), axis=1, bitorder="little")
        assert (got[:, : smollm2_vocab.size] == want).all()
        # rows computed lazily a few at a time (the serial kernel) equal the table's rows
        lazy = grammars.compile(Grammar.from_json_schema(schema, whitespace=ws), smollm2_vocab,
                                cache=False, eager_states=0)
        assert not lazy._done.any()
        for s in range(0, cg.n_states, 5):
            lazy.compute_masks(np.arange(s, min(s + 5, cg.n_states)))
        assert np.array_equal(lazy.masks, cg.masks)


def test_accept_reject_rollback_fork_forced(byte_vocab):
    g = Grammar.from_regex(r"hello (world|there)!")
    m = grammars.compile(g, byte_vocab).matcher()
    assert m.forced_bytes() == b"hello "
    for b in b"hello w":
        assert m.accept_token(b)
    assert not m.accept_token(ord("x"))  # rejected: state unchanged
    f = m.fork()
    assert f.forced_bytes() == b"orld!"
    for b in b"orld!":
        assert f.accept_token(b)
    assert f.is_accepting() and not m.is_accepting()
    assert f.accept_token(byte_vocab.eos_token_id) and f.is_terminated()
    assert not f.accept_token(ord("a"))
    f.rollback(6)  # EOS and "orld!"
    assert f.state == m.state and not f.is_terminated()
    m.rollback(7)
    assert m.forced_bytes() == b"hello "
    with pytest.raises(ValueError):
        m.rollback(1)


def test_eos_only_when_accepting_and_special_tokens_never(smollm2_vocab):
    g = Grammar.from_choices(["yes", "no"])
    m = grammars.compile(g, smollm2_vocab).matcher()
    bm = allocate_token_bitmask(1, smollm2_vocab.size)
    m.fill_next_token_bitmask(bm)
    allowed = bitmask_to_bool(bm, smollm2_vocab.size)[0]
    assert not allowed[smollm2_vocab.special].any()
    assert m.accept_bytes(b"yes")
    m.fill_next_token_bitmask(bm)
    allowed = bitmask_to_bool(bm, smollm2_vocab.size)[0]
    assert allowed.nonzero().flatten().tolist() == list(smollm2_vocab.eos_token_ids)


def test_numpy_bitmask_and_is_error():
    vocab = Vocabulary([b"a", b"b", b""], eos_token_id=2)
    g = Grammar.from_regex("ac")  # 'c' has no token: after 'a' nothing can follow
    m = grammars.compile(g, vocab, cache=False).matcher()
    bm = np.zeros((2, 1), dtype=np.int32)
    m.fill_next_token_bitmask(bm, row=1)
    assert bm[1, 0] == 1 and bm[0, 0] == 0
    assert m.accept_token(0)
    assert m.is_error()


def test_compile_cache_hits(byte_vocab):
    g1 = Grammar.from_regex("[ab]+c")
    g2 = Grammar.from_regex("[ab]+c")
    assert g1.fingerprint == g2.fingerprint
    assert grammars.compile(g1, byte_vocab) is grammars.compile(g2, byte_vocab)
