"""Unicode code point sets and their UTF-8 byte-level encodings.

A code point set is a sorted tuple of disjoint inclusive ranges. ``utf8_node`` turns one into a
byte-level grammar node (the construction RE2 and the utf8-ranges crate use: split each range at
UTF-8 length boundaries and at continuation-byte boundaries, so each piece is a sequence of byte
ranges). ``json_string_char_node`` encodes the same set as the characters of a JSON string body,
with the escapes ``json.dumps(..., ensure_ascii=False)`` produces (``\\"``, ``\\\\``, ``\\n``,
``\\u00XX`` for other control characters) plus ``\\/``.
"""

from __future__ import annotations

from functools import lru_cache

from grammars.ir import Bytes, Node, alt, lit, seq

__all__ = [
    "ANY",
    "MAX_CP",
    "CodepointSet",
    "complement",
    "intersect",
    "json_string_char_node",
    "normalize",
    "subtract",
    "utf8_node",
]

CodepointSet = tuple[tuple[int, int], ...]
MAX_CP = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)


def normalize(ranges: list[tuple[int, int]] | CodepointSet) -> CodepointSet:
    """Sort and merge overlapping/adjacent ranges."""
    rs = sorted((a, b) for a, b in ranges if a <= b)
    out: list[tuple[int, int]] = []
    for a, b in rs:
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


def complement(s: CodepointSet) -> CodepointSet:
    out: list[tuple[int, int]] = []
    prev = 0
    for a, b in s:
        if a > prev:
            out.append((prev, a - 1))
        prev = b + 1
    if prev <= MAX_CP:
        out.append((prev, MAX_CP))
    return tuple(out)


def intersect(a: CodepointSet, b: CodepointSet) -> CodepointSet:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def subtract(a: CodepointSet, b: CodepointSet) -> CodepointSet:
    return intersect(a, complement(b))


ANY: CodepointSet = ((0, MAX_CP),)

_UTF8_BOUNDS = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF)]


def _encode(cp: int) -> bytes:
    return chr(cp).encode("utf-8", "surrogatepass")


def _split_same_length(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """Byte-range sequences for [lo, hi], where lo and hi have the same UTF-8 length."""
    a, b = _encode(lo), _encode(hi)
    n = len(a)
    if n == 1:
        return [[(a[0], b[0])]]
    # Try splitting so that trailing continuation bytes span their full range.
    for i in range(1, n):
        m = (1 << (6 * i)) - 1  # mask of the last i continuation bytes' payload
        if lo & ~m != hi & ~m:
            if lo & m != 0:
                return _split_same_length(lo, lo | m) + _split_same_length((lo | m) + 1, hi)
            if hi & m != m:
                return _split_same_length(lo, (hi & ~m) - 1) + _split_same_length(hi & ~m, hi)
    return [[(a[k], b[k]) for k in range(n)]]


def _utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    out: list[list[tuple[int, int]]] = []
    for blo, bhi in _UTF8_BOUNDS:
        a, b = max(lo, blo), min(hi, bhi)
        if a <= b:
            out.extend(_split_same_length(a, b))
    return out


def utf8_node(s: CodepointSet) -> Node:
    """Byte-level node matching the UTF-8 encoding of exactly one code point in ``s``.

    Surrogate code points (never valid in UTF-8) are removed. Nodes are immutable, so one node per
    class is built and shared (big schemas ask for the same classes many thousands of times).
    """
    return _utf8_node(normalize(s))


@lru_cache(maxsize=4096)
def _utf8_node(s: CodepointSet) -> Node:
    s = subtract(s, (SURROGATES,))
    seqs: list[list[tuple[int, int]]] = []
    for lo, hi in s:
        seqs.extend(_utf8_sequences(lo, hi))
    # Group one-byte sequences into a single Bytes node; multi-byte ones by their prefix ranges.
    singles = [sq[0] for sq in seqs if len(sq) == 1]
    parts: list[Node] = []
    if singles:
        parts.append(Bytes(tuple(singles)))
    for sq in seqs:
        if len(sq) > 1:
            parts.append(seq(*(Bytes(((x, y),)) for x, y in sq)))
    return alt(*parts)


_SHORT_ESCAPES = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}
_HEX = Bytes(((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)))
_SPECIAL: CodepointSet = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))


def _control_escape(cp: int) -> Node:
    hi, lo = divmod(cp, 16)
    forms: list[Node] = []
    if cp in _SHORT_ESCAPES:
        forms.append(lit(_SHORT_ESCAPES[cp]))

    def hexdigit(d: int) -> Node:
        c = "0123456789abcdef"[d]
        if c.isalpha():
            return Bytes(((ord(c.upper()), ord(c.upper())), (ord(c), ord(c))))
        return lit(c)

    forms.append(seq(lit(b"\\u00"), hexdigit(hi), hexdigit(lo)))
    return alt(*forms)


def json_string_char_node(s: CodepointSet) -> Node:
    """One character of ``s`` as it may appear inside a JSON string literal (escaped as needed);
    shared per class like :func:`utf8_node`."""
    return _json_string_char_node(normalize(s))


@lru_cache(maxsize=4096)
def _json_string_char_node(s: CodepointSet) -> Node:
    plain = subtract(s, _SPECIAL)
    parts: list[Node] = []
    if plain:
        parts.append(utf8_node(plain))
    if intersect(s, ((0x22, 0x22),)):
        parts.append(lit(b'\\"'))
    if intersect(s, ((0x5C, 0x5C),)):
        parts.append(lit(b"\\\\"))
    if intersect(s, ((0x2F, 0x2F),)):
        parts.append(lit(b"\\/"))
    for a, b in intersect(s, ((0x00, 0x1F),)):
        for cp in range(a, b + 1):
            parts.append(_control_escape(cp))
    return alt(*parts)
