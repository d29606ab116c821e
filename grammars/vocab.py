"""The model's vocabulary as exact bytes, plus the flat token trie the mask walks use.

``Vocabulary.from_tokenizer`` recovers the exact bytes of every token id of a Hugging Face tokenizer:
byte-level BPE (GPT-2 style, as in SmolLM2, Llama 3, Qwen), SentencePiece (``▁`` for space and
``<0xNN>`` byte fallback, as in Llama 2 and Mistral), and added tokens. Special tokens (and ids past
the tokenizer in a wider logits matrix) get no bytes and are never allowed by a grammar; EOS ids are
allowed exactly when the grammar accepts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

__all__ = ["TokenTrie", "Vocabulary"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte <-> printable-unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


def _decode_byte_level(piece: str) -> bytes | None:
    try:
        return bytes(_BYTE_DECODER[c] for c in piece)
    except KeyError:
        return None


def _decode_sentencepiece(piece: str) -> bytes:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    return piece.replace("\u2581", " ").encode("utf-8")


@dataclass(frozen=True)
class TokenTrie:
    """A preorder-flattened trie of token byte strings (root is node 0).

    ``byte[n]``: the byte on the edge into node n; ``depth[n]``: its depth (root 0); ``end[n]``: the
    index after n's subtree (skip to it when the walk dies at n); tokens ending at node n are
    ``tok_ids[tok_ptr[n]:tok_ptr[n+1]]``; ``first[b]``: the depth-1 node whose byte is ``b`` (-1 if
    no token starts with ``b``), so a walk visits only the subtrees of the bytes it can read.
    """

    byte: np.ndarray
    depth: np.ndarray
    end: np.ndarray
    tok_ptr: np.ndarray
    tok_ids: np.ndarray
    max_depth: int
    first: np.ndarray


@dataclass(eq=False)
class Vocabulary:
    """Exact bytes of every token id.

    ``tokens[i]`` are the bytes token i stands for (b"" for special tokens); ``size`` is the logits
    width (>= len(tokens)); ``eos_token_ids`` end generation (allowed only when a grammar accepts);
    ``special`` marks ids a grammar never allows as text.
    """

    tokens: list[bytes]
    eos_token_id: int
    eos_token_ids: tuple[int, ...]
    special: np.ndarray
    size: int

    def __init__(
        self,
        tokens: Sequence[bytes],
        *,
        eos_token_id: int,
        eos_token_ids: Sequence[int] | None = None,
        special_ids: Sequence[int] = (),
        vocab_size: int | None = None,
    ) -> None:
        self.tokens = [bytes(t) for t in tokens]
        size = len(self.tokens) if vocab_size is None else int(vocab_size)
        if size < len(self.tokens):
            raise ValueError(f"vocab_size {size} is smaller than the {len(self.tokens)} tokens")
        self.size = size
        ids = tuple(dict.fromkeys([eos_token_id, *(eos_token_ids or ())]))
        for i in ids:
            if not 0 <= i < size:
                raise ValueError(f"EOS id {i} outside the vocabulary (size {size})")
        self.eos_token_id = int(eos_token_id)
        self.eos_token_ids = tuple(int(i) for i in ids)
        special = np.zeros(size, dtype=bool)
        special[len(self.tokens) :] = True
        for i in special_ids:
            special[i] = True
        special[list(self.eos_token_ids)] = True
        self.special = special

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"Vocabulary(size={self.size}, eos={self.eos_token_ids}, fingerprint={self.fingerprint[:12]})"

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def byte_level(cls) -> Vocabulary:
        """256 one-byte tokens (id = byte value) and EOS = 256: for tests that need no model."""
        return cls([bytes([b]) for b in range(256)] + [b""], eos_token_id=256)

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        *,
        vocab_size: int | None = None,
        eos_token_ids: Sequence[int] | None = None,
    ) -> Vocabulary:
        """Exact bytes of a Hugging Face tokenizer's tokens.

        ``vocab_size``: the model's logits width when it differs from ``len(tokenizer)`` (extra ids
        are never allowed). ``eos_token_ids``: extra ids that end generation (the tokenizer's EOS is
        always one).
        """
        vocab: dict[str, int] = tokenizer.get_vocab()
        n = max(max(vocab.values()) + 1, len(tokenizer))
        added: dict[int, Any] = dict(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        special_ids |= {i for i, t in added.items() if getattr(t, "special", False)}
        kind = _tokenizer_kind(tokenizer, vocab)
        tokens: list[bytes] = [b""] * n
        for piece, i in vocab.items():
            if i in special_ids:
                continue
            if i in added:
                tokens[i] = str(getattr(added[i], "content", piece)).encode("utf-8")
            elif kind == "byte_level":
                b = _decode_byte_level(piece)
                tokens[i] = b if b is not None else piece.encode("utf-8")
            else:
                tokens[i] = _decode_sentencepiece(piece)
        missing = [i for i in range(n) if not tokens[i] and i not in special_ids]
        special_ids |= set(missing)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no EOS token; pass a Vocabulary built by hand")
        return cls(
            tokens,
            eos_token_id=int(eos),
            eos_token_ids=list(eos_token_ids or ()),
            special_ids=sorted(special_ids),
            vocab_size=max(n, vocab_size or n),
        )

    # ---- derived data -------------------------------------------------------------------------
    @cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.size}|{self.eos_token_ids}|".encode())
        h.update(np.packbits(self.special).tobytes())
        for t in self.tokens:
            h.update(len(t).to_bytes(4, "little"))
            h.update(t)
        return h.hexdigest()

    @cached_property
    def trie(self) -> TokenTrie:
        """The flat token trie over non-special tokens with at least one byte."""
        return self.subtrie(np.ones(self.size, dtype=bool))

    def subtrie(self, keep: np.ndarray) -> TokenTrie:
        """The flat token trie over the non-special, non-empty tokens with ``keep[id]`` set."""
        n = len(self.tokens)
        ids = np.flatnonzero(np.asarray(keep[:n], dtype=bool)
                             & ~np.asarray(self.special[:n], dtype=bool)).tolist()
        tokens = self.tokens
        items = sorted((tokens[i], i) for i in ids if tokens[i])
        byte: list[int] = [0]
        depth: list[int] = [0]
        end: list[int] = [0]
        tok_of_node: list[list[int]] = [[]]
        path: list[int] = [0]  # node index per depth
        prev = b""
        for tb, tid in items:
            lcp = 0
            m = min(len(prev), len(tb))
            while lcp < m and prev[lcp] == tb[lcp]:
                lcp += 1
            while len(path) > lcp + 1:
                end[path.pop()] = len(byte)
            for d in range(lcp, len(tb)):
                byte.append(tb[d])
                depth.append(d + 1)
                end.append(0)
                tok_of_node.append([])
                path.append(len(byte) - 1)
            tok_of_node[path[len(tb)]].append(tid)
            prev = tb
        while path:
            end[path.pop()] = len(byte)
        if max(depth) > np.iinfo(np.uint16).max:
            raise ValueError(f"a token of {max(depth)} bytes is longer than the trie allows (65535)")
        # narrow dtypes: the trie is walked once per automaton state, and a vocabulary's trie
        # (~100k nodes) then stays in a core's L2 cache (int64 arrays took 2.8 MB, these 1.1 MB)
        counts = np.array([len(x) for x in tok_of_node], dtype=np.int32)
        tok_ptr = np.zeros(len(byte) + 1, dtype=np.int32)
        np.cumsum(counts, out=tok_ptr[1:])
        tok_ids = np.array([t for x in tok_of_node for t in x], dtype=np.int32)
        byte_arr = np.array(byte, dtype=np.uint8)
        depth_arr = np.array(depth, dtype=np.uint16)
        first = np.full(256, -1, dtype=np.int32)
        top = np.nonzero(depth_arr == 1)[0]
        first[byte_arr[top]] = top
        return TokenTrie(
            byte=byte_arr,
            depth=depth_arr,
            end=np.array(end, dtype=np.int32),
            tok_ptr=tok_ptr,
            tok_ids=tok_ids,
            max_depth=max(depth),
            first=first,
        )

    @cached_property
    def token_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """All token bytes concatenated (uint8) and the offsets (size+1) into it."""
        lens = np.zeros(self.size + 1, dtype=np.int64)
        lens[1 : len(self.tokens) + 1] = [len(t) for t in self.tokens]
        offsets = np.cumsum(lens)
        data = np.frombuffer(b"".join(self.tokens), dtype=np.uint8).copy()
        return data, offsets

    def decode(self, ids: Sequence[int]) -> bytes:
        """Concatenated bytes of ``ids`` (special tokens contribute nothing)."""
        toks = self.tokens
        return b"".join(toks[i] for i in ids if i < len(toks))


def _tokenizer_kind(tokenizer: Any, vocab: dict[str, int]) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        try:
            import json

            spec = json.loads(backend.to_str())
            dec = json.dumps(spec.get("decoder")) + json.dumps(spec.get("pre_tokenizer"))
            if "ByteLevel" in dec:
                return "byte_level"
            if "ByteFallback" in dec or "Metaspace" in dec or "\u2581" in dec:
                return "sentencepiece"
        except Exception:  # noqa: BLE001, S110 - unreadable spec: fall back to the heuristic below
            pass
    if any("\u2581" in p for p in list(vocab)[:5000]):
        return "sentencepiece"
    return "byte_level"
