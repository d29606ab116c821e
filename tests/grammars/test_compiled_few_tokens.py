"""Matcher.few_allowed_tokens: the allowed ids of a state when its precomputed row lists at most
FEW_TOKENS tokens, equal to the mask; None for wide states."""

from __future__ import annotations

import numpy as np

import grammars
from grammars.compiled import FEW_TOKENS


def _allowed(m: grammars.Matcher, size: int) -> list[int]:
    bitmask = np.zeros((1, (size + 31) // 32), dtype=np.int32)
    m.fill_next_token_bitmask(bitmask, 0)
    bits = np.unpackbits(bitmask[0].view(np.uint8), bitorder="little")[:size]
    return np.flatnonzero(bits).tolist()


def test_few_allowed_tokens_equals_the_mask(smollm2_vocab: grammars.Vocabulary) -> None:
    g = grammars.compile(grammars.Grammar.from_choices(["temperature", "tempest", "x" * 3]),
                         smollm2_vocab)
    m = g.matcher()
    seen_few = 0
    for text in (b"", b"temp", b"tempe", b"temperatur", b"temperature"):
        m.reset()
        assert m.accept_bytes(text)
        few = m.few_allowed_tokens()
        allowed = _allowed(m, smollm2_vocab.size)
        if few is None:
            assert len(allowed) > FEW_TOKENS
        else:
            seen_few += 1
            assert list(few) == allowed
    assert seen_few >= 2  # "temperatur" -> only tokens spelling "e" (and longer is impossible)
    m.reset()
    assert m.accept_bytes(b"temperature")
    assert set(m.few_allowed_tokens() or ()) == set(smollm2_vocab.eos_token_ids)


def test_wide_states_give_none(smollm2_vocab: grammars.Vocabulary) -> None:
    g = grammars.compile(grammars.Grammar.from_regex("[a-z]+"), smollm2_vocab)
    assert g.matcher().few_allowed_tokens() is None
