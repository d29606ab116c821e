"""Tests of grammars.formats: JSON Schema ``format`` values as full-match regexes.

Three kinds of evidence:
- the official JSON Schema Test Suite (optional/format): every string the regex accepts must be
  valid there (soundness, no exceptions), and for the formats listed in MUST_ACCEPT_ALL every
  valid string must be accepted, except the documented exceptions below;
- real values (datetime, uuid.UUID, ipaddress) formatted by Python must be accepted, and for
  date, date-time, time, ipv4 and ipv6 near-miss strings are accepted exactly when the checker
  accepts them (leap seconds aside);
- strings sampled from each regex with hypothesis' ``from_regex`` must pass jsonschema's
  FormatChecker and, where written, a small independent reference check. This environment has
  only jsonschema's built-in checkers (date, email, idn-email, ipv4, ipv6, regex, uuid) and the
  idna-based idn-hostname one: rfc3339-validator, isoduration, fqdn, rfc3987 /
  rfc3986-validator / rfc3987-syntax, jsonpointer and uri-template are not installed, so the
  sampling test is skipped for duration, uri, uri-reference, iri, iri-reference, uri-template.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from grammars.formats import FORMAT_NAMES, FORMAT_NOTES, UnknownFormatError, format_regex

try:  # Python 3.11+
    import re._parser as sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse  # type: ignore[no-redef]

SUITE = Path("/work/shared/data/json-schema-test-suite/tests/draft2020-12/optional/format")
CHECKER = Draft202012Validator.FORMAT_CHECKER

# Suite files per format (the "regex" format is also exercised by ecmascript-regex.json).
SUITE_FILES = {name: [f"{name}.json"] for name in FORMAT_NAMES}
SUITE_FILES["regex"] = ["regex.json", "ecmascript-regex.json"]

# Formats whose valid suite instances must all be accepted, but for these documented exceptions.
_LEAP_SECOND = (
    "leap second: jsonschema's checker (rfc3339-validator) rejects every :60, and RFC 3339's "
    "rule (23:59:60 UTC) with arbitrary offsets would cost ~1440 automaton states"
)
_A_LABEL = (
    "A-label (xn--): validity needs Punycode decoding and IDNA2008 tables, not regular in "
    "any compact form, so labels with '--' in positions 3-4 are rejected"
)
MUST_ACCEPT_ALL: dict[str, dict[str, str]] = {
    "ipv4": {},
    "ipv6": {},
    "uuid": {},
    "date": {},
    "time": {
        s: _LEAP_SECOND
        for s in [
            "23:59:60Z",
            "23:59:60+00:00",
            "01:29:60+01:30",
            "23:29:60+23:30",
            "15:59:60-08:00",
            "00:29:60-23:30",
        ]
    },
    "date-time": {
        s: _LEAP_SECOND for s in ["1998-12-31T23:59:60Z", "1998-12-31T15:59:60.123-08:00"]
    },
    "duration": {},
    "json-pointer": {},
    "relative-json-pointer": {},
    "hostname": {
        s: _A_LABEL
        for s in [
            "xn--9n2bp8q.xn--9t4b11yi5a",
            "xn--zca29lwxobi7a",
            "xn--qmbc",
            "xn--ll-0ea",
            "xn--wva3je",
            "xn--4dbc5h",
            "xn--4dbc8h",
            "xn--k8j5u",
            "xn--bck0j",
            "xn--vek778f",
            "xn--ngba1o",
            "xn--0-gyc",
            "xn--11b2ezcw70k",
            "xn--11b2ezcs70k",
            "xn--ngba5hb2804a",
        ]
    },
    "email": {},
    # Exact regular languages, so no exception either (beyond what the brief requires).
    "uri": {},
    "uri-reference": {},
    "iri": {},
    "iri-reference": {},
    "uri-template": {},
}


def _suite_strings(name: str) -> list[tuple[str, bool, str]]:
    out = []
    for filename in SUITE_FILES[name]:
        for case in json.loads((SUITE / filename).read_text(encoding="utf-8")):
            for test in case["tests"]:
                if isinstance(test["data"], str):
                    out.append((test["data"], test["valid"], test["description"]))
    return out


_COMPILED: dict[str, re.Pattern[str]] = {}


def _rx(name: str) -> re.Pattern[str]:
    if name not in _COMPILED:
        _COMPILED[name] = re.compile(format_regex(name))
    return _COMPILED[name]


def _matches(name: str, s: str) -> bool:
    return _rx(name).fullmatch(s) is not None


# ------------------------------------------------------------------------------------------
# API and dialect


def test_names_and_unknown_format() -> None:
    assert FORMAT_NAMES >= set(MUST_ACCEPT_ALL) | {"idn-email", "idn-hostname", "regex"}
    assert set(FORMAT_NOTES) == FORMAT_NAMES
    for name in FORMAT_NAMES:
        assert isinstance(format_regex(name), str)
    with pytest.raises(UnknownFormatError) as info:
        format_regex("no-such-format")
    assert isinstance(info.value, KeyError)
    assert info.value.name == "no-such-format"
    assert "no-such-format" in str(info.value)
    with pytest.raises(KeyError):
        format_regex("Date")  # names are case-sensitive


_ALLOWED_OPS = {"LITERAL", "NOT_LITERAL", "IN", "BRANCH", "SUBPATTERN", "MAX_REPEAT"}
_ALLOWED_IN = {"LITERAL", "RANGE", "NEGATE"}


def _walk(parsed, name: str) -> None:
    for op, arg in parsed:
        opname = str(op)
        assert opname in _ALLOWED_OPS, f"{name}: {opname} is outside the dialect"
        if opname == "IN":
            assert {str(o) for o, _ in arg} <= _ALLOWED_IN, f"{name}: class with {arg}"
            if str(arg[0][0]) != "NEGATE":  # positive classes never include surrogates
                for o, a in arg:
                    lo, hi = (a, a) if str(o) == "LITERAL" else a
                    assert hi < 0xD800 or lo > 0xDFFF, f"{name}: surrogates in a class"
        elif opname == "SUBPATTERN":
            group, add_flags, del_flags, sub = arg
            assert group is None and not add_flags and not del_flags, f"{name}: capture/flags"
            _walk(sub, name)
        elif opname == "BRANCH":
            for sub in arg[1]:
                _walk(sub, name)
        elif opname == "MAX_REPEAT":
            _walk(arg[2], name)


@pytest.mark.parametrize("name", sorted(FORMAT_NAMES))
def test_regex_stays_in_the_dialect(name: str) -> None:
    pattern = format_regex(name)
    for forbidden in ("(?=", "(?!", "(?<", "(?P", "\\b", "\\B", "\\p", "\\d", "\\w", "\\s"):
        # (the regex format's pattern mentions \d, \w, \s as *escaped* text: "\\\\d")
        assert forbidden not in pattern.replace("\\\\", ""), f"{name}: {forbidden}"
    _walk(sre_parse.parse(pattern), name)


# ------------------------------------------------------------------------------------------
# JSON Schema Test Suite


@pytest.mark.parametrize("name", sorted(FORMAT_NAMES))
def test_suite_soundness_and_coverage(name: str) -> None:
    accepted_valid, rejected_valid, unsound = 0, [], []
    rejected_invalid = 0
    for data, valid, description in _suite_strings(name):
        ok = _matches(name, data)
        if ok and not valid:
            unsound.append((data, description))
        elif valid and ok:
            accepted_valid += 1
        elif valid:
            rejected_valid.append(data)
        else:
            rejected_invalid += 1
    print(
        f"\n{name}: valid accepted {accepted_valid}, valid rejected {len(rejected_valid)}, "
        f"invalid rejected {rejected_invalid}"
    )
    assert not unsound, f"{name} accepts invalid strings: {unsound}"
    if name in MUST_ACCEPT_ALL:
        exceptions = MUST_ACCEPT_ALL[name]
        assert set(rejected_valid) == set(exceptions), (
            f"{name}: rejected valid {sorted(set(rejected_valid) - set(exceptions))}, "
            f"exceptions now accepted {sorted(set(exceptions) - set(rejected_valid))}"
        )


# ------------------------------------------------------------------------------------------
# real values

_FAST = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@_FAST
@given(st.dates())
def test_real_dates(d: date) -> None:
    assert _matches("date", d.isoformat())


@_FAST
@given(
    st.datetimes(timezones=_offsets),
    st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]),
    st.booleans(),
    st.booleans(),
)
def test_real_date_times(dt: datetime, timespec: str, zulu: bool, lower: bool) -> None:
    text = dt.isoformat(timespec=timespec)
    if zulu and text.endswith("+00:00"):
        text = text[: -len("+00:00")] + "Z"
    if lower:
        text = text.lower()
    assert _matches("date-time", text), text
    assert _matches("date", text[:10])
    assert _matches("time", text[11:]), text[11:]


@_FAST
@given(st.times(timezones=_offsets))
def test_real_times(t: time) -> None:
    assert _matches("time", t.isoformat())


@_FAST
@given(st.uuids(), st.booleans())
def test_real_uuids(u: uuid.UUID, upper: bool) -> None:
    text = str(u).upper() if upper else str(u)
    assert _matches("uuid", text)


@_FAST
@given(st.ip_addresses(v=4))
def test_real_ipv4(address: ipaddress.IPv4Address) -> None:
    assert _matches("ipv4", str(address))


@_FAST
@given(st.ip_addresses(v=6), st.booleans())
def test_real_ipv6(address: ipaddress.IPv6Address, upper: bool) -> None:
    for text in (address.compressed, address.exploded):
        text = text.upper() if upper else text
        assert _matches("ipv6", text), text
    v4 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    assert _matches("ipv6", f"{address.exploded[:29]}:{v4}")


@_FAST
@given(
    st.lists(st.integers(0, 0xFFFF), min_size=6, max_size=6),
    st.integers(0, 6),
    st.integers(1, 6),
    st.ip_addresses(v=4),
)
def test_real_ipv6_with_ipv4_tail(groups: list[int], start: int, run: int, v4) -> None:
    end = min(6, start + run)
    if end == start:
        start -= 1
    left = ":".join(f"{g:x}" for g in groups[:start])
    right = "".join(f"{g:x}:" for g in groups[end:])
    text = f"{left}::{right}{v4}"
    ipaddress.IPv6Address(text)  # Python agrees it is valid
    assert _matches("ipv6", text), text


# ------------------------------------------------------------------------------------------
# exactness: near-miss strings are accepted exactly when the checker accepts them

_EXACT = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@_EXACT
@given(st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32))
def test_date_is_exact(year: int, month: int, day: int) -> None:
    text = f"{year:04d}-{month:02d}-{day:02d}"
    assert _matches("date", text) == CHECKER.conforms(text, "date"), text


@_EXACT
@given(
    st.integers(1, 9999),
    st.integers(1, 12),
    st.integers(1, 31),
    st.tuples(st.integers(0, 24), st.integers(0, 60), st.integers(0, 60)),
    st.sampled_from(["", ".5", ".123456789"]),
    st.one_of(
        st.sampled_from("Zz"),
        st.tuples(st.sampled_from("+-"), st.integers(0, 24), st.integers(0, 60)).map(
            lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"
        ),
    ),
)
def test_date_time_is_exact_but_for_leap_seconds(year, month, day, hms, frac, offset) -> None:
    text = f"{year:04d}-{month:02d}-{day:02d}T{hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}{frac}{offset}"
    # rfc3339-validator (jsonschema's checker, not installed here) rejects leap seconds too.
    assert _matches("date-time", text) == _ref_date_time(text), text
    assert _matches("time", text[11:]) == _ref_time(text[11:]), text


@_EXACT
@given(st.lists(st.sampled_from(["0", "1", "25", "199", "255", "256", "01", "."]), max_size=9))
def test_ipv4_is_exact(tokens: list[str]) -> None:
    text = "".join(tokens)
    assert _matches("ipv4", text) == CHECKER.conforms(text, "ipv4"), text


_V6_TOKENS = ["0", "1", "abcd", "FFFF", "12345", ":", ":", "::", "1.2.3.4", "01.2.3.4", "1.2.3"]


@_EXACT
@given(st.lists(st.sampled_from(_V6_TOKENS), max_size=14))
def test_ipv6_is_exact(tokens: list[str]) -> None:
    text = "".join(tokens)
    assert _matches("ipv6", text) == CHECKER.conforms(text, "ipv6"), text


# ------------------------------------------------------------------------------------------
# strings sampled from our regexes must be valid


def _ref_date_time(s: str) -> bool:
    s = s.upper()
    m = re.fullmatch(r"(.{19})(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-5][0-9])", s, re.ASCII)
    if not m:
        return False
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    offset = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        datetime.fromisoformat(f"{m.group(1)}.{frac}{offset}")
    except ValueError:
        return False
    return True


def _ref_time(s: str) -> bool:
    return _ref_date_time("1970-01-01T" + s)


def _ref_hostname(s: str) -> bool:
    import idna

    if not s.isascii() or s.endswith(".") or len(s) > 253:
        return False
    try:
        idna.encode(s, strict=True)
    except (idna.IDNAError, UnicodeError):
        return False
    return all(1 <= len(label) <= 63 for label in s.split("."))


def _ref_json_pointer(s: str) -> bool:
    if s and not s.startswith("/"):
        return False
    return all(re.fullmatch(r"(?:[^~]|~[01])*", part, re.DOTALL) for part in s.split("/")[1:])


def _ref_relative_json_pointer(s: str) -> bool:
    m = re.fullmatch(r"(0|[1-9][0-9]*)(.*)", s, re.DOTALL | re.ASCII)
    return bool(m) and (m.group(2) == "#" or _ref_json_pointer(m.group(2)))


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))


def _ref_email(s: str) -> bool:
    local, _, domain = s.rpartition("@")
    if _utf8_len(local) > 64 or _utf8_len(s) > 254:
        return False
    if domain.startswith("["):
        return True  # address literals: checked by the ipv4/ipv6 regexes' own tests
    return _ref_hostname(domain)


# Independent reference checks, used when jsonschema has no checker for the format (its optional
# library is not installed) and in addition to it for a few length rules jsonschema ignores.
REFERENCE = {
    "date-time": _ref_date_time,
    "time": _ref_time,
    "hostname": _ref_hostname,
    "idn-hostname": lambda s: _ref_hostname(re.sub("[\u3002\uff0e\uff61]", ".", s)),
    "json-pointer": _ref_json_pointer,
    "relative-json-pointer": _ref_relative_json_pointer,
    "email": _ref_email,
    "idn-email": _ref_email,
}


_NON_ASCII_TOKEN = r"(\\u[0-9a-f]{4}|[^\x00-\x7f])"


def _sampling_pattern(pattern: str, *, star_max: int = 4) -> str:
    """A sub-language of ``pattern`` that hypothesis samples fast.

    hypothesis expands class ranges character by character, so each non-ASCII range wider than
    64 code points keeps only its first and last 16 code points; and ``*`` / ``+`` become
    ``{0,star_max}`` / ``{1,star_max}`` (unbounded repeats otherwise make long, slow strings).
    Bounded repeats, which carry the length rules, are untouched. Every string of the result
    matches ``pattern``, and the sampling test asserts that too.
    """

    def cp(token: str) -> int:
        return int(token.removeprefix("\\u"), 16) if token.startswith("\\u") else ord(token)

    def emit(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    def narrow(m: re.Match[str]) -> str:
        lo, hi = cp(m.group(1)), cp(m.group(2))
        if hi - lo < 64:
            return m.group(0)
        return f"{emit(lo)}-{emit(lo + 15)}{emit(hi - 15)}-{emit(hi)}"

    pattern = re.sub(f"{_NON_ASCII_TOKEN}-{_NON_ASCII_TOKEN}", narrow, pattern)
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "*":
            c = f"{{0,{star_max}}}"
        elif c == "+":
            c = f"{{1,{star_max}}}"
        out.append(c)
        i += 1
    return "".join(out)


def test_sampling_pattern_is_a_sub_language() -> None:
    assert _sampling_pattern("a*[+*]b+\\*") == "a{0,4}[+*]b{1,4}\\*"
    assert _sampling_pattern("[x\\u0080-\\u00ff]") == "[x\\u0080-\\u008f\\u00f0-\\u00ff]"


def _sample_check(name: str, check) -> None:
    pattern = _sampling_pattern(format_regex(name))

    @settings(
        max_examples=20 if name == "regex" else 40,  # the regex format's strategy is slow
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.from_regex(pattern, fullmatch=True))
    def run(s: str) -> None:
        assert _matches(name, s)
        assert check(s), f"{name}: sampled {s!r} is not valid"

    run()


# jsonschema's optional library behind each checker that may be missing.
CHECKER_LIBRARY = {
    "date-time": "rfc3339-validator",
    "time": "rfc3339-validator",
    "duration": "isoduration",
    "hostname": "fqdn",
    "idn-hostname": "idna",
    "uri": "rfc3987 or rfc3986-validator",
    "uri-reference": "rfc3987 or rfc3986-validator",
    "iri": "rfc3987 or rfc3987-syntax",
    "iri-reference": "rfc3987 or rfc3987-syntax",
    "json-pointer": "jsonpointer",
    "relative-json-pointer": "jsonpointer",
    "uri-template": "uri-template",
}


@pytest.mark.parametrize("name", sorted(FORMAT_NAMES))
def test_sampled_strings_are_valid(name: str) -> None:
    """Strings sampled from the regex pass jsonschema's checker and/or our reference check."""
    checks = []
    if name in CHECKER.checkers:
        checks.append(lambda s: CHECKER.conforms(s, name))
    else:
        print(f"\n{name}: no jsonschema checker ({CHECKER_LIBRARY.get(name)} not installed)")
    if name in REFERENCE:
        checks.append(REFERENCE[name])
    if not checks:
        pytest.skip(
            f"jsonschema has no {name!r} checker here ({CHECKER_LIBRARY.get(name)} is not "
            "installed) and there is no reference check"
        )
    _sample_check(name, lambda s: all(check(s) for check in checks))


def test_reference_checks_agree_with_the_suite() -> None:
    # The reference checks are only trusted as far as they agree with the suite on the strings
    # our regexes target (leap seconds and A-labels aside).
    for name, check in REFERENCE.items():
        if name.startswith("idn-") or name.endswith("email"):
            continue
        for data, valid, _ in _suite_strings(name):
            if ":60" in data or "xn--" in data.lower():
                continue
            assert check(data) == valid, (name, data)
