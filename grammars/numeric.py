"""Regular expressions for JSON numbers whose value lies in a range.

The regexes use Python ``re`` syntax with FULL-MATCH semantics (no anchors) and only the subset
our own regex compiler turns into byte DFAs: literal characters, character classes (``[0-9]``,
``[1-9]``, ``[eE]``, ``[+-]``), non-capturing groups ``(?:...)``, alternation ``|`` and the
quantifiers ``* + ? {m} {m,n} {m,}``. No anchors, lookarounds, backreferences, ``\\d`` or flags.

All reasoning about values is exact (``decimal.Decimal``, never floats). The size of every regex is
linear in the number of digits of the bounds.

Syntax accepted (before the range restriction), i.e. JSON's ``number`` production::

    -?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?

Leading zeros (``01``, ``00.5``), a bare ``.5``, a trailing ``5.`` or a ``+`` sign never match.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from grammars.errors import EmptyLanguageError

__all__ = ["MAX_MULTIPLE_STATES", "integer_range_regex", "multiple_of_dfa", "number_regex"]

#: ``multiple_of_dfa`` refuses divisors whose automaton would need more states than this.
MAX_MULTIPLE_STATES = 20_000

Number = int | float | Decimal

_ANY_INT = "(?:0|[1-9][0-9]*)"
_ANY_FRAC = r"(?:\.[0-9]+)?"
_ANY_EXP = "(?:[eE][+-]?[0-9]+)?"
_ZERO_FRAC = r"(?:\.0+)?"


# --------------------------------------------------------------------------------------------
# small rendering helpers


def _grp(alts: list[str]) -> str:
    """Alternatives as one concatenation-safe piece."""
    if len(alts) == 1:
        return alts[0]
    return "(?:" + "|".join(alts) + ")"


def _cls(a: int, b: int) -> str:
    """Character class for the digits a..b (a <= b)."""
    if a == b:
        return str(a)
    if b == a + 1:
        return f"[{a}{b}]"
    return f"[{a}-{b}]"


def _rep(lo: int, hi: int | None) -> str:
    """``[0-9]`` repeated between lo and hi times (hi None = unbounded)."""
    if hi is None:
        if lo == 0:
            return "[0-9]*"
        if lo == 1:
            return "[0-9]+"
        return f"[0-9]{{{lo},}}"
    if hi == 0:
        return ""
    if lo == hi:
        return "[0-9]" if lo == 1 else f"[0-9]{{{lo}}}"
    if lo == 0 and hi == 1:
        return "[0-9]?"
    return f"[0-9]{{{lo},{hi}}}"


def _cat(head: str, rest: str) -> str:
    """``head`` followed by ``rest``, folding ``x`` + ``x*...`` into ``x+...``."""
    if head and rest.startswith(head + "*"):
        return head + "+" + rest[len(head) + 1 :]
    return head + rest


def _istr(i: int) -> str:
    """Decimal digits of a non-negative int (no int->str digit limit for huge bounds)."""
    return format(Decimal(i), "f")


# --------------------------------------------------------------------------------------------
# integer parts: canonical digit strings (0 | [1-9][0-9]*) in a range


def _same_len(x: str, y: str) -> list[str]:
    """Digit strings s with len(s) == len(x) == len(y) and x <= s <= y (lexicographically)."""
    if not x:
        return [""]
    if x[0] == y[0]:
        return [x[0] + _grp(_same_len(x[1:], y[1:]))]
    x0, y0 = int(x[0]), int(y[0])
    k = len(x) - 1
    lo_full = x[1:] == "0" * k
    hi_full = y[1:] == "9" * k
    alts = []
    if not lo_full:
        alts.append(x[0] + _grp(_ge(x[1:])))
    a = x0 if lo_full else x0 + 1
    b = y0 if hi_full else y0 - 1
    if a <= b:
        alts.append(_cls(a, b) + _rep(k, k))
    if not hi_full:
        alts.append(y[0] + _grp(_le(y[1:])))
    return alts


def _ge(s: str) -> list[str]:
    """Digit strings of length len(s) that are >= s."""
    k = len(s)
    if s == "0" * k:
        return [_rep(k, k)]
    d = int(s[0])
    if k == 1:
        return [_cls(d, 9)]
    alts = [s[0] + _grp(_ge(s[1:]))]
    if d < 9:
        alts.append(_cls(d + 1, 9) + _rep(k - 1, k - 1))
    return alts


def _le(s: str) -> list[str]:
    """Digit strings of length len(s) that are <= s."""
    k = len(s)
    if s == "9" * k:
        return [_rep(k, k)]
    alts = []
    d = int(s[0])
    if k == 1:
        return [_cls(0, d)]
    if d > 0:
        alts.append(_cls(0, d - 1) + _rep(k - 1, k - 1))
    alts.append(s[0] + _grp(_le(s[1:])))
    return alts


def _int_alts(lo: int, hi: int | None) -> list[str]:
    """Alternatives matching the canonical texts ``0|[1-9][0-9]*`` of the ints in [lo, hi].

    Requires 0 <= lo and (hi is None or lo <= hi).
    """
    alts: list[str] = []
    if lo == 0:
        if hi is not None and hi <= 9:
            return [_cls(0, hi)]
        alts.append("0")
        lo = 1
        if hi is not None and hi < 1:
            return alts
    ls = _istr(lo)
    n = len(ls)
    hs = None if hi is None else _istr(hi)
    if hs is not None and len(hs) == n:
        return alts + _same_len(ls, hs)
    if ls == "1" + "0" * (n - 1):
        first_full = n
    else:
        alts += _same_len(ls, "9" * n)
        first_full = n + 1
    if hs is None:
        alts.append("[1-9]" + _rep(first_full - 1, None))
        return alts
    m = len(hs)
    last_full = m if hs == "9" * m else m - 1
    if first_full <= last_full:
        alts.append("[1-9]" + _rep(first_full - 1, last_full - 1))
    if last_full < m:
        alts += _same_len("1" + "0" * (m - 1), hs)
    return alts


# --------------------------------------------------------------------------------------------
# fraction digit strings compared with a bound's fraction digits
#
# A fraction state is (lo, hi); lo = None (no constraint) or (t, strict) meaning 0.D >= 0.t
# (> if strict); hi = None (no constraint besides < 1) or (u, strict) meaning 0.D <= 0.u
# (< if strict). t and u carry no trailing zeros; D is the text's fraction digit string ("" when
# the text has no fraction).

_Bound = tuple[str, bool] | None
_DEAD = "dead"


def _norm_lo(lo: _Bound) -> _Bound:
    if lo is not None and lo[0] == "" and not lo[1]:
        return None  # 0.D >= 0 always holds
    return lo


def _step(lo: _Bound, hi: _Bound, d: int) -> tuple[_Bound, _Bound] | str:
    """The state after reading digit d, or _DEAD."""
    nlo: _Bound = None
    if lo is not None:
        t, strict = lo
        t1 = int(t[0]) if t else 0
        if d < t1:
            return _DEAD
        if d == t1:
            nlo = _norm_lo((t[1:], strict))
    nhi: _Bound = None
    if hi is not None:
        u, strict = hi
        u1 = int(u[0]) if u else 0
        if d > u1:
            return _DEAD
        if d == u1:
            nhi = (u[1:], strict)
    return nlo, nhi


def _frac_branches(lo: _Bound, hi: _Bound) -> tuple[bool, list[str]]:
    """(whether "" is in the set, alternatives for the non-empty strings of the set)."""
    accepts_empty = lo is None and (hi is None or hi != ("", True))
    groups: list[tuple[int, int, tuple[_Bound, _Bound]]] = []
    for d in range(10):
        nxt = _step(lo, hi, d)
        if nxt == _DEAD:
            continue
        assert isinstance(nxt, tuple)
        if groups and groups[-1][2] == nxt and groups[-1][1] == d - 1:
            groups[-1] = (groups[-1][0], d, nxt)
        else:
            groups.append((d, d, nxt))
    alts = []
    for a, b, (nlo, nhi) in groups:
        rest = _frac_inner(nlo, nhi)
        if rest is not None:
            alts.append(_cat(_cls(a, b) if (a, b) != (0, 9) else "[0-9]", rest))
    return accepts_empty, alts


def _frac_inner(lo: _Bound, hi: _Bound) -> str | None:
    """Regex (concatenation-safe) for the digit strings of the state, or None if empty."""
    lo = _norm_lo(lo)
    if hi == ("", True):
        return None  # 0.D < 0 never holds
    if lo is None and hi is None:
        return "[0-9]*"
    if lo == ("", True) and hi is None:
        return "0*[1-9][0-9]*"
    if lo is None and hi == ("", False):
        return "0*"
    if lo == ("", True) and hi == ("", False):
        return None
    accepts_empty, alts = _frac_branches(lo, hi)
    if not alts:
        return "" if accepts_empty else None
    return "(?:" + "|".join(alts) + ")?" if accepts_empty else _grp(alts)


def _frac_top(lo: _Bound, hi: _Bound) -> str | None:
    """Regex for the optional ``\\.digits`` part of a text, restricted to the state's set."""
    lo = _norm_lo(lo)
    if lo is None and hi is None:
        return _ANY_FRAC
    if hi == ("", True):
        return None
    accepts_empty, alts = _frac_branches(lo, hi)
    if not alts:
        return "" if accepts_empty else None
    body = r"\." + _grp(alts)
    return "(?:" + body + ")?" if accepts_empty else body


# --------------------------------------------------------------------------------------------
# magnitudes (texts without the sign)


def _split(x: Decimal) -> tuple[str, str]:
    """Integer digits and fraction digits (no trailing zeros) of a non-negative Decimal."""
    text = format(x, "f")
    ip, _, fp = text.partition(".")
    return ip.lstrip("-") or "0", fp.rstrip("0")


def _magnitude_alts(lo: tuple[Decimal, bool], hi: tuple[Decimal, bool] | None) -> list[str]:
    """Alternatives for unsigned texts ``(0|[1-9][0-9]*)(\\.[0-9]+)?`` with lo <=/< m <=/< hi.

    lo[0] >= 0. Returns [] for an empty set.
    """
    a, sa = lo
    if hi is not None:
        b, sb = hi
        if a > b or (a == b and (sa or sb)):
            return []
    ia_s, fa = _split(a)
    lo_frac = _norm_lo((fa, sa))
    alts: list[str] = []
    if hi is not None:
        ib_s, fb = _split(hi[0])
        hi_frac: _Bound = (fb, hi[1])
        if ia_s == ib_s:
            f = _frac_top(lo_frac, hi_frac)
            return [] if f is None else [ia_s + f]
    ia = int(a)
    start = ia
    if lo_frac is not None:
        f = _frac_top(lo_frac, None)
        if f is not None:
            alts.append(ia_s + f)
        start = ia + 1
    end = None if hi is None else int(hi[0]) - 1
    if end is None or start <= end:
        alts.append(_grp(_int_alts(start, end)) + _ANY_FRAC)
    if hi is not None:
        f = _frac_top(None, hi_frac)
        if f is not None:
            alts.append(ib_s + f)
    return alts


def _signed(pos: list[str], neg: list[str]) -> str | None:
    """Combine unsigned alternatives (pos) and alternatives to prefix with '-' (neg)."""
    if pos and pos == neg:
        return "-?" + _grp(pos)
    alts = list(pos)
    if neg:
        alts.append("-" + _grp(neg))
    if not alts:
        return None
    return _grp(alts)


# --------------------------------------------------------------------------------------------
# public API


def _to_decimal(name: str, x: Number | None) -> Decimal | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float, Decimal)):
        raise TypeError(f"{name} must be an int, float or Decimal, not {type(x).__name__}")
    d = Decimal(x) if isinstance(x, int) else Decimal(repr(x)) if isinstance(x, float) else x
    if not d.is_finite():
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return d


def _floor(d: Decimal) -> int:
    i = int(d)  # truncates toward zero, exactly
    return i - 1 if d < 0 and d != i else i


def _ceil(d: Decimal) -> int:
    i = int(d)
    return i + 1 if d > 0 and d != i else i


def integer_range_regex(lo: int | None, hi: int | None) -> str:
    """Regex matching exactly the canonical decimal texts of the integers n with lo <= n <= hi.

    Canonical texts are ``0`` and ``-?[1-9][0-9]*``: no ``+``, no leading zeros, no fraction, no
    exponent and no ``-0``. ``lo``/``hi`` are inclusive; ``None`` means unbounded on that side.
    Raises ``EmptyLanguageError`` if lo > hi.
    """
    for name, v in (("lo", lo), ("hi", hi)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise TypeError(f"{name} must be an int or None, not {type(v).__name__}")
    if lo is not None and hi is not None and lo > hi:
        raise EmptyLanguageError(f"no integer n satisfies {lo} <= n <= {hi}")
    pos = [] if hi is not None and hi < 0 else _int_alts(max(lo or 0, 0), hi)
    if lo is not None and lo >= 0:
        neg: list[str] = []
    else:
        neg_lo = max(1, -hi) if hi is not None else 1
        neg = _int_alts(neg_lo, None if lo is None else -lo)
    out = _signed(pos, neg)
    assert out is not None
    return out


def number_regex(
    *,
    integer: bool = False,
    minimum: Number | None = None,
    maximum: Number | None = None,
    exclusive_minimum: Number | None = None,
    exclusive_maximum: Number | None = None,
) -> str:
    """Regex (full-match, no anchors) for the JSON number texts whose value lies in a range.

    Contract:

    * The texts are those of JSON's number syntax,
      ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?``, whose exact decimal value ``v``
      satisfies ``v >= minimum``, ``v <= maximum``, ``v > exclusive_minimum`` and
      ``v < exclusive_maximum`` for each bound given. Bounds may be ints, floats (read through
      ``repr``, so ``0.1`` means exactly 1/10) or Decimals; any mix is allowed.
    * ``-0``, ``-0.0`` etc. have value 0 and match iff 0 is in range.
    * Exponents: with no bound at all, the full JSON syntax (including exponents) is matched.
      As soon as any bound is given, texts with an exponent are NOT matched: the language is
      then every plain decimal text (any number of fraction digits, trailing zeros included)
      whose value is in range. This is a deliberate subset of the valid texts that keeps the
      automaton exact and linear in the number of digits of the bounds.
    * ``integer=True`` (JSON Schema's ``integer``: the value is mathematically an integer):
      texts ``-?(0|[1-9][0-9]*)`` optionally followed by a fraction of zeros only (``1.0``,
      ``-3.00``), never an exponent, with the value in range.

    Raises ``TypeError`` for a bound that is not an int, float or Decimal (bools included),
    ``ValueError`` for a NaN or infinite bound, and ``EmptyLanguageError`` when no value
    (no integer, if ``integer``) satisfies the bounds.
    """
    mn = _to_decimal("minimum", minimum)
    mx = _to_decimal("maximum", maximum)
    xmn = _to_decimal("exclusive_minimum", exclusive_minimum)
    xmx = _to_decimal("exclusive_maximum", exclusive_maximum)

    lower: tuple[Decimal, bool] | None = None  # (value, strict)
    for v, strict in ((mn, False), (xmn, True)):
        if v is not None and (lower is None or v > lower[0] or (v == lower[0] and strict)):
            lower = (v, strict)
    upper: tuple[Decimal, bool] | None = None
    for v, strict in ((mx, False), (xmx, True)):
        if v is not None and (upper is None or v < upper[0] or (v == upper[0] and strict)):
            upper = (v, strict)

    def empty() -> EmptyLanguageError:
        given = [
            f"{n}={v!r}"
            for n, v in (
                ("minimum", minimum),
                ("maximum", maximum),
                ("exclusive_minimum", exclusive_minimum),
                ("exclusive_maximum", exclusive_maximum),
            )
            if v is not None
        ]
        kind = "integer" if integer else "number"
        return EmptyLanguageError(f"no {kind} satisfies {', '.join(given)}")

    if integer:
        lo_i = None
        if lower is not None:
            lo_i = _floor(lower[0]) + 1 if lower[1] else _ceil(lower[0])
        hi_i = None
        if upper is not None:
            hi_i = _ceil(upper[0]) - 1 if upper[1] else _floor(upper[0])
        if lo_i is not None and hi_i is not None and lo_i > hi_i:
            raise empty()
        if lo_i is None and hi_i is None:
            return "-?" + _ANY_INT + _ZERO_FRAC
        pos = [] if hi_i is not None and hi_i < 0 else _int_alts(max(lo_i or 0, 0), hi_i)
        # negative texts, magnitudes in [max(-hi, 0), -lo]; magnitude 0 gives "-0"
        if lo_i is not None and lo_i > 0:
            neg: list[str] = []
        else:
            neg_lo = max(-hi_i, 0) if hi_i is not None else 0
            neg = _int_alts(neg_lo, None if lo_i is None else -lo_i)
        out = _signed(pos, neg)
        assert out is not None
        return out + _ZERO_FRAC

    if lower is None and upper is None:
        return "-?" + _ANY_INT + _ANY_FRAC + _ANY_EXP
    if (
        lower is not None
        and upper is not None
        and (lower[0] > upper[0] or (lower[0] == upper[0] and (lower[1] or upper[1])))
    ):
        raise empty()

    zero = Decimal(0)
    # texts without '-': value m >= 0
    if upper is not None and (upper[0] < 0 or (upper[0] == 0 and upper[1])):
        pos = []
    else:
        plo = lower if lower is not None and lower[0] >= 0 else (zero, False)
        pos = _magnitude_alts(plo, upper)
    # texts with '-': value -m, m >= 0; -m >= L <=> m <= -L; -m <= U <=> m >= -U
    if lower is not None and (lower[0] > 0 or (lower[0] == 0 and lower[1])):
        neg = []
    else:
        nlo = (
            (upper[0].copy_negate(), upper[1])
            if upper is not None and upper[0] <= 0
            else (zero, False)
        )
        nhi = None if lower is None else (lower[0].copy_negate(), lower[1])
        neg = _magnitude_alts(nlo, nhi)
    out = _signed(pos, neg)
    if out is None:
        raise empty()
    return out


def multiple_of_dfa(m: Number) -> tuple[Any, Any]:
    """A byte DFA ``(trans, accepting)`` over texts ``-?[0-9]+(\\.[0-9]*)?`` whose exact value is
    an integer multiple of ``m`` (> 0). It does not check JSON's syntax and has no exponents:
    intersect it with a :func:`number_regex` automaton for the syntax and the bounds.

    With ``m = p / 10**s`` in lowest terms (``p``, ``s`` integers, ``s >= 0``) and the digits
    read so far as one integer ``N`` with ``c`` of them after the point, the value ``N / 10**c``
    is a multiple of ``m`` iff ``p`` divides ``N * 10**(s - c)``, for ``c <= s``; past ``s``
    fraction digits only zeros keep the value on the grid ``10**-s`` (any other digit can never
    give a multiple). States: ``N mod p`` before the point, ``(N mod p, c)`` after it, so about
    ``p * (s + 2)`` in all. Raises ``ValueError`` for ``m <= 0``, NaN or infinity, and
    ``OverflowError`` past :data:`MAX_MULTIPLE_STATES` states.
    """
    import numpy as np

    d = _to_decimal("multipleOf", m)
    assert d is not None
    if not d > 0:
        raise ValueError(f"multipleOf must be > 0, got {m!r}")
    _sign, digits, exp = d.normalize().as_tuple()
    p = int("".join(map(str, digits)))
    s = -int(exp)
    if s < 0:
        p *= 10 ** (-s)
        s = 0
    n = 2 + p * (s + 2)
    if n > MAX_MULTIPLE_STATES:
        raise OverflowError(
            f"multipleOf {m!r} needs {n} automaton states (more than {MAX_MULTIPLE_STATES})")

    def integer(r: int) -> int:  # before the point
        return 2 + r

    def fraction(r: int, c: int) -> int:  # after the point, c fraction digits read (c <= s)
        return 2 + p + c * p + r

    trans = np.full((n, 256), -1, dtype=np.int32)
    accepting = np.zeros(n, dtype=bool)
    zero = ord("0")
    trans[0, ord("-")] = 1
    for first in (0, 1):
        for dgt in range(10):
            trans[first, zero + dgt] = integer(dgt % p)
    for r in range(p):
        here = integer(r)
        accepting[here] = (r * 10**s) % p == 0
        trans[here, ord(".")] = fraction(r, 0)
        for dgt in range(10):
            trans[here, zero + dgt] = integer((10 * r + dgt) % p)
        for c in range(s + 1):
            here = fraction(r, c)
            accepting[here] = (r * 10 ** (s - c)) % p == 0
            if c < s:
                for dgt in range(10):
                    trans[here, zero + dgt] = fraction((10 * r + dgt) % p, c + 1)
            else:
                trans[here, zero] = here
    return trans, accepting
