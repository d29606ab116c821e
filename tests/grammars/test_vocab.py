"""Vocabulary: exact token bytes for byte-level BPE (SmolLM2) and SentencePiece tokenizers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from grammars import Vocabulary

UNICODE = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
        st.sampled_from(list("😀👍🏽🇫🇷你好世界e\u0301a\u0308\u200dĞğ \n\t{}\":,")),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(text=UNICODE)
def test_token_bytes_concatenate_to_utf8_text(smollm2_tokenizer, smollm2_vocab, text):
    # SmolLM2's GGUF vocabulary has no token for a few control bytes (e.g. 0x04); its tokenizer
    # silently drops such characters, so they are left out of the generated text.
    singles = {t[0] for t in smollm2_vocab.tokens if len(t) == 1}
    text = "".join(c for c in text if all(b in singles for b in c.encode("utf-8")))
    ids = smollm2_tokenizer.encode(text, add_special_tokens=False)
    decoded = smollm2_tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    assert decoded == text
    assert smollm2_vocab.decode(ids) == text.encode("utf-8")


def test_smollm2_special_and_eos(smollm2_tokenizer, smollm2_vocab):
    v = smollm2_vocab
    assert v.size == 49152
    assert v.eos_token_id == smollm2_tokenizer.eos_token_id
    for i in smollm2_tokenizer.all_special_ids:
        assert v.special[i] and v.tokens[i] == b""
    # every single byte has a token, so every grammar state reachable by bytes stays reachable
    singles = {t[0] for t in v.tokens if len(t) == 1}
    # printable ASCII, every continuation byte and the lead bytes of assigned Unicode planes
    # (0xF1 and 0xF2 only start the unassigned planes 4-11: the GGUF vocabulary has no token)
    needed = set(range(0x20, 0x7F)) | set(range(0x80, 0xC0)) | set(range(0xC2, 0xF1)) | {0xF3, 0xF4}
    assert needed <= singles


def test_wider_logits_than_tokenizer(smollm2_tokenizer):
    v = Vocabulary.from_tokenizer(smollm2_tokenizer, vocab_size=49152 + 64)
    assert v.size == 49216 and v.special[49152:].all()


def test_sentencepiece_byte_fallback():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["\u2581", "\u2581hello", "\u2581world", "he", "llo", "wor", "ld", "\u2581h"]:
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next") if False else None
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    v = Vocabulary.from_tokenizer(hf)
    assert v.tokens[vocab["\u2581hello"]] == b" hello"
    assert v.tokens[vocab["<0xE4>"]] == b"\xe4"
    assert v.special[0] and v.special[1] and v.special[2]
    assert v.eos_token_id == 2


def test_hand_built_and_byte_level():
    v = Vocabulary([b"a", b"bc", b""], eos_token_id=2)
    assert v.size == 3 and v.special.tolist() == [False, False, True]
    bl = Vocabulary.byte_level()
    assert bl.size == 257 and bl.tokens[65] == b"A" and bl.eos_token_id == 256
    assert v.fingerprint != bl.fingerprint
