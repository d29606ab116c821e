"""Tests of grammars.numeric: regexes for JSON numbers in a range (truth computed with Decimal)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grammars.errors import EmptyLanguageError
from grammars.numeric import integer_range_regex, number_regex

JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
BOUND_NAMES = ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum")


# ---------------------------------------------------------------------------------------------
# reference semantics


def truth(text: str, *, integer: bool = False, **bounds: object) -> bool:
    """Whether ``text`` belongs to the language number_regex promises (computed with Decimal)."""
    if not JSON_NUMBER.fullmatch(text):
        return False
    given_bounds = {k: v for k, v in bounds.items() if v is not None}
    has_exp = "e" in text or "E" in text
    if has_exp and (integer or given_bounds):
        return False
    v = Decimal(text)
    if integer and v != v.to_integral_value():
        return False
    checks = {
        "minimum": lambda b: v >= b,
        "maximum": lambda b: v <= b,
        "exclusive_minimum": lambda b: v > b,
        "exclusive_maximum": lambda b: v < b,
    }
    return all(checks[k](_dec(b)) for k, b in given_bounds.items())


def _dec(b: object) -> Decimal:
    if isinstance(b, float):
        return Decimal(repr(b))
    return Decimal(b)  # type: ignore[arg-type]


def range_is_empty(*, integer: bool, **bounds: object) -> bool:
    lo: tuple[Decimal, bool] | None = None
    hi: tuple[Decimal, bool] | None = None
    for k, b in bounds.items():
        if b is None:
            continue
        d = _dec(b)
        if k in ("minimum", "exclusive_minimum"):
            if lo is None or d > lo[0] or (d == lo[0] and k.startswith("exclusive")):
                lo = (d, k.startswith("exclusive"))
        elif hi is None or d < hi[0] or (d == hi[0] and k.startswith("exclusive")):
            hi = (d, k.startswith("exclusive"))
    if lo is None or hi is None:
        return False
    if not integer:
        return lo[0] > hi[0] or (lo[0] == hi[0] and (lo[1] or hi[1]))
    # smallest integer satisfying the lower bound
    c = lo[0].to_integral_value(rounding="ROUND_CEILING")
    if lo[1] and c == lo[0]:
        c += 1
    return not (c < hi[0] or (c == hi[0] and not hi[1]))


def assert_subset_syntax(regex: str) -> None:
    """Only literals, digit/sign/exponent classes, (?:...), |, and * + ? {m} {m,n} {m,}."""
    i = 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            assert regex[i + 1] == ".", regex
            i += 2
            continue
        if c == "(":
            assert regex.startswith("(?:", i), regex
            i += 3
            continue
        if c == "[":
            j = regex.index("]", i)
            assert re.fullmatch(r"[0-9eE+\-]+", regex[i + 1 : j]), regex
            i = j + 1
            continue
        if c == "{":
            j = regex.index("}", i)
            assert re.fullmatch(r"[0-9]+(?:,[0-9]*)?", regex[i + 1 : j]), regex
            i = j + 1
            continue
        assert c in "0123456789-.)|*+?eE", (c, regex)
        i += 1


# ---------------------------------------------------------------------------------------------
# strategies

digits = st.text(alphabet="0123456789", min_size=1, max_size=4)
int_part = st.one_of(
    st.just("0"),
    st.builds(
        lambda a, b: a + b, st.sampled_from("123456789"), st.text(alphabet="0123456789", max_size=4)
    ),
)


@st.composite
def number_texts(draw: st.DrawFn, exponent: bool = False) -> str:
    text = draw(st.sampled_from(["", "-"])) + draw(int_part)
    if draw(st.booleans()):
        text += "." + draw(digits) + "0" * draw(st.integers(0, 3))
    if exponent and draw(st.integers(0, 3)) == 0:
        text += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+", "-"])) + draw(digits)
    return text


junk_texts = st.text(alphabet="0123456789.-+eE", max_size=7)

decimal_bounds = st.builds(
    lambda sign, i, f: Decimal(sign + i + ("." + f if f else "")),
    st.sampled_from(["", "-"]),
    int_part,
    st.one_of(st.just(""), digits),
)
bound_values = st.one_of(
    st.integers(-1200, 1200),
    decimal_bounds,
    st.sampled_from([0, Decimal("-0"), Decimal("0.0"), 0.5, -2.25, 0.1, 1e20, Decimal("1E+3")]),
)


def derived_texts(b: object) -> list[str]:
    """Texts at, just around, and equal-with-trailing-zeros to a bound."""
    d = _dec(b)
    out = []
    for x in (d, -d, d + 1, d - 1, d + Decimal("0.000001"), d - Decimal("0.000001")):
        t = format(x, "f")
        out.append(t)
        out.append(t + ("000" if "." in t else ".000"))
        out.append(t + ("0001" if "." in t else ".0001"))
        if not t.startswith("-"):
            out.append("-" + t)
    return out


# ---------------------------------------------------------------------------------------------
# property tests


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    integer=st.booleans(),
    bounds=st.fixed_dictionaries({k: st.one_of(st.none(), bound_values) for k in BOUND_NAMES}),
    texts=st.lists(number_texts(), min_size=10, max_size=25),
    junk=st.lists(junk_texts, max_size=8),
)
def test_bounded_matches_exactly_the_texts_in_range(
    integer: bool, bounds: dict, texts: list[str], junk: list[str]
) -> None:
    if range_is_empty(integer=integer, **bounds):
        with pytest.raises(EmptyLanguageError):
            number_regex(integer=integer, **bounds)
        return
    regex = number_regex(integer=integer, **bounds)
    assert_subset_syntax(regex)
    compiled = re.compile(regex)
    candidates = texts + junk + ["0", "-0", "-0.0", "0.0", "1e5", "-1E-2"]
    for b in bounds.values():
        if b is not None:
            candidates += derived_texts(b)
    for t in candidates:
        expected = truth(t, integer=integer, **bounds)
        assert (compiled.fullmatch(t) is not None) == expected, (t, integer, bounds, regex)


@settings(max_examples=60, deadline=None)
@given(
    integer=st.booleans(),
    texts=st.lists(number_texts(exponent=True), max_size=20),
    junk=st.lists(junk_texts, max_size=20),
)
def test_unbounded(integer: bool, texts: list[str], junk: list[str]) -> None:
    regex = number_regex(integer=integer)
    assert_subset_syntax(regex)
    for t in texts + junk:
        assert (re.fullmatch(regex, t) is not None) == truth(t, integer=integer), (t, regex)


@settings(max_examples=150, deadline=None)
@given(
    lo=st.one_of(st.none(), st.integers(-(10**6), 10**6)),
    hi=st.one_of(st.none(), st.integers(-(10**6), 10**6)),
    values=st.lists(st.integers(-2 * 10**6, 2 * 10**6), max_size=20),
)
def test_integer_range_regex(lo: int | None, hi: int | None, values: list[int]) -> None:
    if lo is not None and hi is not None and lo > hi:
        with pytest.raises(EmptyLanguageError):
            integer_range_regex(lo, hi)
        return
    regex = integer_range_regex(lo, hi)
    assert_subset_syntax(regex)
    extra = [v for b in (lo, hi) if b is not None for v in (b - 1, b, b + 1)]
    for v in values + extra:
        inside = (lo is None or v >= lo) and (hi is None or v <= hi)
        assert (re.fullmatch(regex, str(v)) is not None) == inside, (v, lo, hi, regex)
    for t in ("-0", "00", "01", "1.0", "+1", "", "-"):
        assert re.fullmatch(regex, t) is None, (t, regex)


# ---------------------------------------------------------------------------------------------
# deterministic edge cases


def matches(text: str, **kw: object) -> bool:
    return re.fullmatch(number_regex(**kw), text) is not None  # type: ignore[arg-type]


def test_zero_and_negative_zero() -> None:
    for t in ("0", "-0", "-0.0", "0.000"):
        assert matches(t, minimum=0)
        assert matches(t, maximum=0)
        assert matches(t, minimum=0, maximum=0)
        assert matches(t, integer=True, minimum=0, maximum=0)
        assert not matches(t, exclusive_minimum=0)
        assert not matches(t, exclusive_maximum=0)
        assert not matches(t, minimum=Decimal("0.001"))
    assert matches("-0.5", exclusive_maximum=0)
    assert not matches("0.5", exclusive_maximum=0)
    assert matches("0.0001", exclusive_minimum=0)
    assert not matches("-0.0000", exclusive_minimum=0)


def test_integer_mode() -> None:
    kw = {"integer": True, "minimum": 1, "maximum": 3}
    for t in ("1", "1.0", "2.000", "3", "3.0"):
        assert matches(t, **kw), t
    for t in ("0", "4", "1.5", "2.01", "1e0", "1.", "-1", "01"):
        assert not matches(t, **kw), t
    assert matches("-3.00", integer=True, minimum=-3)
    assert not matches("-3.01", integer=True, minimum=-3.5)
    assert matches("-3", integer=True, minimum=-3.5)
    assert not matches("-4", integer=True, minimum=-3.5)
    assert not matches("1e3", integer=True)
    assert matches("-0.00", integer=True)


def test_bounds_at_the_text() -> None:
    assert matches("2.5", maximum=2.5)
    assert matches("2.50", maximum=2.5)
    assert matches("2.5000", maximum=Decimal("2.500"))
    assert not matches("2.50001", maximum=2.5)
    assert not matches("2.50", exclusive_maximum=2.5)
    assert matches("2.4999999", exclusive_maximum=2.5)
    assert matches("2.5", minimum=2.5)
    assert not matches("2.5", exclusive_minimum=2.5)
    assert matches("2.500001", exclusive_minimum=2.5)
    assert matches("7", minimum=7, maximum=7)
    assert matches("7.00", minimum=7, maximum=7)
    assert not matches("7.01", minimum=7, maximum=7)


def test_minimum_half_example_from_contract() -> None:
    for t in ("0.5", "0.50000", "0.5000001", "7", "123456789.25"):
        assert matches(t, minimum=0.5), t
    for t in ("0.4999999", "0", "-1", "5e-1", "0.5e0", "1E2"):
        assert not matches(t, minimum=0.5), t


def test_float_bounds_are_read_exactly() -> None:
    assert matches("0.1", minimum=0.1)
    assert not matches("0.0999999999999", minimum=0.1)
    assert matches("0.1", maximum=0.1)
    assert not matches("0.10000000000000001", maximum=0.1)


def test_leading_zeros_and_bad_syntax_never_match() -> None:
    bad = ["01", "00.5", "-01", "00", ".5", "5.", "+1", "-", "", "1.2.3", "--1", " 1", "1 ", "0x1"]
    for kw in ({}, {"minimum": -100, "maximum": 100}, {"integer": True}, {"exclusive_minimum": 0}):
        for t in bad:
            assert not matches(t, **kw), (t, kw)


def test_huge_bounds() -> None:
    assert matches("100000000000000000000", minimum=1e20)
    assert matches("100000000000000000000.0", maximum=1e20)
    assert not matches("99999999999999999999.99", minimum=1e20)
    assert matches("99999999999999999999.99", exclusive_maximum=1e20)
    assert not matches("100000000000000000000.000001", maximum=1e20)
    r = number_regex(minimum=-1e300, maximum=1e300)
    assert matches("1" + "0" * 300, minimum=-1e300, maximum=1e300)
    assert not matches("1" + "0" * 300 + ".1", minimum=-1e300, maximum=1e300)
    assert re.fullmatch(r, "-" + "9" * 300 + ".999")
    assert len(r) < 500
    # far beyond the int->str digit limit of CPython
    assert matches("1" + "0" * 6000, integer=True, minimum=Decimal("1e6000"))


def test_negative_fractional_range() -> None:
    kw = {"minimum": Decimal("-2.75"), "exclusive_maximum": Decimal("-1.2")}
    for t in ("-2.75", "-2.750", "-2", "-1.21", "-1.2000001", "-2.7499"):
        assert matches(t, **kw), t
    for t in ("-2.7500001", "-1.2", "-1.20", "-1.1999", "-3", "0", "1.5", "-1"):
        assert not matches(t, **kw), t


def test_exclusive_unit_interval_is_not_empty() -> None:
    kw = {"exclusive_minimum": 0, "exclusive_maximum": 1}
    assert matches("0.5", **kw)
    assert matches("0.000001", **kw)
    assert matches("0.999", **kw)
    assert not matches("0", **kw)
    assert not matches("1", **kw)
    assert not matches("1.0", **kw)
    assert not matches("0.0", **kw)


def test_tighter_bound_wins() -> None:
    kw = {"minimum": 3, "exclusive_minimum": 3, "maximum": 10, "exclusive_maximum": 12}
    assert not matches("3", **kw)
    assert matches("3.1", **kw)
    assert matches("10", **kw)
    assert not matches("10.5", **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"minimum": 3, "maximum": 2},
        {"minimum": 2, "exclusive_maximum": 2},
        {"exclusive_minimum": 2, "maximum": 2},
        {"integer": True, "exclusive_minimum": 1, "exclusive_maximum": 2},
        {"integer": True, "minimum": 1.1, "maximum": 1.9},
        {"integer": True, "minimum": -0.5, "exclusive_maximum": 0},
    ],
)
def test_empty_ranges(kw: dict) -> None:
    with pytest.raises(EmptyLanguageError, match="satisfies"):
        number_regex(**kw)


def test_non_empty_degenerate_ranges() -> None:
    assert matches("-0", integer=True, minimum=-0.5, maximum=0)
    assert matches("1.5", exclusive_minimum=1, exclusive_maximum=2)
    assert matches("4", integer=True, minimum=3.5, maximum=4.5)


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -float("inf"), Decimal("NaN"), Decimal("Infinity")]
)
def test_non_finite_bounds_raise_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        number_regex(minimum=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        number_regex(integer=True, exclusive_maximum=bad)  # type: ignore[arg-type]


def test_wrong_bound_types_raise_type_error() -> None:
    with pytest.raises(TypeError):
        number_regex(minimum="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        number_regex(maximum=True)


def test_regex_size_stays_small() -> None:
    twenty = [
        Decimal(12345678901234567890),
        Decimal(-98765432109876543210),
        Decimal("1234567890.1234567890"),
        Decimal("-0.00000000001234567891"),
        Decimal(99999999999999999999),
    ]
    for a in twenty:
        for b in twenty:
            for integer in (False, True):
                for lo_key in ("minimum", "exclusive_minimum"):
                    kw = {lo_key: min(a, b), "exclusive_maximum": max(a, b), "integer": integer}
                    try:
                        r = number_regex(**kw)  # type: ignore[arg-type]
                    except EmptyLanguageError:
                        continue
                    assert_subset_syntax(r)
                    assert len(r) < 2000, (kw, len(r))
                    r = number_regex(**{lo_key: a, "integer": integer})  # type: ignore[arg-type]
                    assert len(r) < 2000
    # linear growth in the number of digits
    small = len(number_regex(minimum=Decimal("-1234.5678"), maximum=Decimal("8765.4321")))
    big = len(
        number_regex(
            minimum=Decimal("-" + "1234" * 10 + "." + "5678" * 10),
            maximum=Decimal("8765" * 10 + "." + "4321" * 10),
        )
    )
    assert big < 15 * small


def test_integer_range_regex_edges() -> None:
    assert integer_range_regex(None, None)
    r = integer_range_regex(-37, 1234)
    assert re.fullmatch(r, "-37") and re.fullmatch(r, "1234") and re.fullmatch(r, "0")
    assert not re.fullmatch(r, "-38") and not re.fullmatch(r, "1235") and not re.fullmatch(r, "-0")
    r = integer_range_regex(5, None)
    assert re.fullmatch(r, "5") and re.fullmatch(r, "10" * 30) and not re.fullmatch(r, "4")
    with pytest.raises(EmptyLanguageError):
        integer_range_regex(2, 1)
