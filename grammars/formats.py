"""Regular expressions for JSON Schema ``format`` values.

Each regex describes the *decoded* string value (its characters, not its JSON-escaped form) and
is meant for FULL-MATCH use: there are no anchors. Only a small dialect is used, which our own
regex compiler turns into byte automata: literal characters (metacharacters escaped with a
backslash), character classes with ranges and negation, non-capturing groups ``(?:...)``,
alternation and the quantifiers ``* + ? {m} {m,n}``. There are no lookarounds, backreferences,
anchors, ``\\b``, flags or ``\\p{...}``; ``\\d``/``\\w`` are never used (explicit classes instead).
Non-ASCII characters appear only inside classes: BMP code points as ``\\uXXXX`` escapes, code
points above U+FFFF as literal characters. Positive classes never contain surrogates
(U+D800-U+DFFF); negated classes such as ``[^/~]`` are meant over Unicode scalar values.

Soundness rule: everything a regex accepts is a valid instance of its format (per the RFCs, the
official JSON Schema Test Suite and the ``jsonschema`` package's ``FormatChecker``). When a format
is not exactly expressible as a compact regular language, the regex accepts a documented SUBSET
of the valid strings, never a superset. ``FORMAT_NOTES`` says, per format, whether the regex is
exact and, if not, what is left out and why.

Lengths are bounded with care: a bounded repetition ``{0,n}`` costs about ``n`` automaton states,
so the length limits of RFC 1034 (hostname <= 253 characters) and RFC 5321 (local part <= 64
octets, mailbox <= 254 octets) are enforced through a few "tiers" (k labels of at most m
characters with k * (m + 1) - 1 within the budget) instead of an exact length counter.
"""

from __future__ import annotations

__all__ = [
    "FORMAT_NAMES",
    "FORMAT_NOTES",
    "UnknownFormatError",
    "format_regex",
]


class UnknownFormatError(KeyError):
    """``format_regex`` was asked for a format it does not know."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        known = ", ".join(sorted(FORMAT_NAMES))
        return f"unknown string format {self.name!r} (known: {known})"


# --------------------------------------------------------------------------------------------
# building blocks


def _esc_cls(chars: str) -> str:
    """Escape ASCII characters for use inside a character class."""
    out = []
    for ch in chars:
        out.append("\\" + ch if ch in "\\]^-[" else ch)
    return "".join(out)


def _cls_range(lo: int, hi: int) -> str:
    """One class range for code points lo..hi (non-ASCII: \\uXXXX in the BMP, else literal)."""

    def one(cp: int) -> str:
        if cp < 0x80:
            return _esc_cls(chr(cp))
        if cp <= 0xFFFF:
            return f"\\u{cp:04x}"
        return chr(cp)

    return one(lo) if lo == hi else f"{one(lo)}-{one(hi)}"


def _ranges(pairs: list[tuple[int, int]]) -> str:
    return "".join(_cls_range(lo, hi) for lo, hi in pairs)


_DIGIT = "[0-9]"
_HEXDIG = "[0-9A-Fa-f]"
_PCT = "%[0-9A-Fa-f]{2}"

# RFC 3987 ucschar and iprivate.
_UCSCHAR = [
    (0xA0, 0xD7FF), (0xF900, 0xFDCF), (0xFDF0, 0xFFEF),
    *[(plane << 16, (plane << 16) | 0xFFFD) for plane in range(1, 14)],
    (0xE1000, 0xEFFFD),
]  # fmt: skip
_IPRIVATE = [(0xE000, 0xF8FF), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD)]
# Every non-ASCII scalar value (no surrogates): RFC 6531 UTF8-non-ascii.
_NON_ASCII = [(0x80, 0xD7FF), (0xE000, 0x10FFFF)]

_UCS = _ranges(_UCSCHAR)
_IPRIV = _ranges(_IPRIVATE)
_NONASCII = _ranges(_NON_ASCII)


# --- numbers, dates and times (RFC 3339) ------------------------------------------------------

_DEC_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"  # 0-255, no leading zeros
_IPV4 = rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}"

# Years 0001-9999 (year 0000 is rejected by Python's date, which jsonschema uses).
_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
# Gregorian leap years among 0001-9999: divisible by 4 and not by 100, or divisible by 400.
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_FULL_DATE = (
    "(?:"
    f"{_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    f"|{_YEAR}-(?:0[13-9]|1[0-2])-(?:29|30)"
    f"|{_YEAR}-(?:0[13578]|1[02])-31"
    f"|{_LEAP_YEAR}-02-29"
    ")"
)
# Seconds 00-59 only: the leap second :60 is NOT accepted (see FORMAT_NOTES["time"]).
_PARTIAL_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
_TIME_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_FULL_TIME = f"{_PARTIAL_TIME}{_TIME_OFFSET}"
_DATE_TIME = f"{_FULL_DATE}[Tt]{_FULL_TIME}"

# RFC 3339 appendix A (ISO 8601 durations as JSON Schema 2020-12 defines them).
_DUR_TIME = "T(?:[0-9]+H(?:[0-9]+M(?:[0-9]+S)?)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)"
_DUR_DATE = f"(?:[0-9]+D|[0-9]+M(?:[0-9]+D)?|[0-9]+Y(?:[0-9]+M(?:[0-9]+D)?)?)(?:{_DUR_TIME})?"
_DURATION = f"P(?:{_DUR_DATE}|{_DUR_TIME}|[0-9]+W)"

_UUID = f"{_HEXDIG}{{8}}-{_HEXDIG}{{4}}-{_HEXDIG}{{4}}-{_HEXDIG}{{4}}-{_HEXDIG}{{12}}"


# --- IPv6 (RFC 4291 section 2.2, as RFC 3986 writes it) -----------------------------------------


def _ipv6(min_elided: int = 1) -> str:
    """IPv6 text forms; "::" must stand for at least ``min_elided`` 16-bit groups.

    RFC 4291 (and Python's ``ipaddress``) allow "::" for one group; RFC 5321 address literals
    require at least two.
    """
    h16 = f"{_HEXDIG}{{1,4}}"
    alts = [f"(?:{h16}:){{7}}{h16}", f"(?:{h16}:){{6}}{_IPV4}"]
    for right in range(9 - min_elided):  # explicit groups after "::" (an IPv4 tail counts 2)
        max_left = 8 - min_elided - right
        if max_left == 0:
            left = "::"
        elif max_left == 1:
            left = f"(?:{h16})?::"
        else:
            left = f"(?:(?:{h16}:){{0,{max_left - 1}}}{h16})?::"
        tails = []
        if right == 0:
            tails.append("")
        else:
            tails.append(f"(?:{h16}:){{{right - 1}}}{h16}" if right > 1 else h16)
            if right >= 2:
                tails.append(f"(?:{h16}:){{{right - 2}}}{_IPV4}" if right > 2 else _IPV4)
        tail = tails[0] if len(tails) == 1 else "(?:" + "|".join(tails) + ")"
        alts.append(left + tail)
    return "(?:" + "|".join(alts) + ")"


_IPV6 = _ipv6(1)


# --- host names (RFC 1123 + RFC 5890/5891) ----------------------------------------------------


def _label(m: int) -> str:
    """An LDH label of 1..m characters (5 <= m <= 63).

    Letters, digits and hyphens, no hyphen first or last, and no "--" in the third and fourth
    positions: such "R-LDH" labels are reserved for A-labels ("xn--..."), whose validity needs
    Punycode decoding and IDNA2008 tables, which no compact regular expression can check.
    """
    a, ad = "[A-Za-z0-9]", "[A-Za-z0-9-]"
    short = f"{a}(?:{ad}?{a})?"  # 1-3 characters
    rest = f"{ad}{{0,{m - 5}}}{a}"
    long = f"{a}{ad}(?:{ad}{a}(?:{rest})?|{a}-{rest})"  # 4-m characters
    return f"(?:{short}|{long})"


def _hostname(budget: int, sep: str = r"\.") -> str:
    """Dot-separated labels, total length <= budget, as a union of (k labels, <= m chars) tiers.

    Exact total-length counting would need about budget * 63 automaton states; each tier costs
    about 2 * k * m states. For budget 253 the tiers accept every host name of up to 3 labels
    (each <= 63 characters), up to 8 labels (each <= 30) or up to 16 labels (each <= 14): about
    1100 DFA states in all.
    """
    tiers = []
    for k in (1, 2, 3, 8, 16):
        m = min(63, (budget + 1) // k - 1)
        if m < 5:
            continue
        if tiers and tiers[-1][1] - m <= 1:  # more labels beat one more character per label
            tiers.pop()
        tiers.append((k, m))
    alts = []
    for k, m in tiers:
        lab = _label(m)
        alts.append(lab if k == 1 else f"{lab}(?:{sep}{lab}){{0,{k - 1}}}")
    return "(?:" + "|".join(alts) + ")"


_HOSTNAME = _hostname(253)
# idna.encode also splits on U+3002, U+FF0E and U+FF61.
_IDN_HOSTNAME = _hostname(253, sep="[.\\u3002\\uff0e\\uff61]")


# --- e-mail (RFC 5321 Mailbox, RFC 6531 for idn-email) ------------------------------------------

_ATEXT = "[A-Za-z0-9!#$%&'*+/=?" + _esc_cls("^") + "_`{|}~" + _esc_cls("-") + "]"
_QTEXT = "[ !#-" + _esc_cls("[") + _esc_cls("]") + "-~]"  # %d32-33 / %d35-91 / %d93-126
_QPAIR = r"\\[ -~]"  # backslash + %d32-126
# Local part <= 64 octets: dot-free atoms of up to 64 characters, or dot-atoms with at most 32
# atext characters (at most 63 octets); quoted strings of at most 64 octets.
_LOCAL = (
    "(?:"
    f"{_ATEXT}{{1,64}}|{_ATEXT}(?:\\.?{_ATEXT}){{0,31}}"
    f'|"{_QTEXT}{{0,62}}"|"(?:{_QTEXT}|{_QPAIR}){{0,31}}"'
    ")"
)
# RFC 6531 adds every non-ASCII character (up to 4 UTF-8 octets each) to atext and qtext.
_U_ATEXT = "[A-Za-z0-9!#$%&'*+/=?" + _esc_cls("^") + "_`{|}~" + _esc_cls("-") + _NONASCII + "]"
_U_QTEXT = "[ !#-" + _esc_cls("[") + _esc_cls("]") + "-~" + _NONASCII + "]"
_IDN_LOCAL = (
    "(?:"
    f"{_LOCAL}|{_U_ATEXT}(?:\\.?{_U_ATEXT}){{0,11}}"  # <= 12*4 + 11 = 59 octets
    f'|"(?:{_U_QTEXT}|{_QPAIR}){{0,15}}"'  # <= 2 + 15*4 = 62 octets
    ")"
)
# Domain: a host name of at most 254 - 65 = 189 characters (so the whole mailbox is <= 254
# octets), or an IPv4 / IPv6 address literal (RFC 5321 4.1.3; "::" elides >= 2 groups there).
_MAIL_DOMAIN = f"(?:{_hostname(189)}|\\[(?:{_IPV4}|IPv6:{_ipv6(2)})\\])"
_EMAIL = f"{_LOCAL}@{_MAIL_DOMAIN}"
_IDN_EMAIL = f"{_IDN_LOCAL}@{_MAIL_DOMAIN}"


# --- URI / IRI (RFC 3986 / RFC 3987) --------------------------------------------------------------


def _uri_like(extra: str, query_extra: str) -> dict[str, str]:
    """RFC 3986 (extra="") or RFC 3987 (extra=ucschar, query_extra=iprivate) productions."""
    unreserved = "A-Za-z0-9._~" + extra
    sub_delims = "!$&'()*+,;="
    reg = f"(?:[{unreserved}{sub_delims}-]|{_PCT})"
    pchar_nc = f"(?:[{unreserved}{sub_delims}@-]|{_PCT})"  # pchar without ":"
    pchar = f"(?:[{unreserved}{sub_delims}:@-]|{_PCT})"
    qchar = f"(?:[{unreserved}{sub_delims}:@/?{query_extra}-]|{_PCT})"
    fchar = f"(?:[{unreserved}{sub_delims}:@/?-]|{_PCT})"
    userinfo = f"(?:[{unreserved}{sub_delims}:-]|{_PCT})*"
    ipvfuture = f"[Vv]{_HEXDIG}+\\.[A-Za-z0-9._~{sub_delims}:-]+"
    host = f"(?:\\[(?:{_IPV6}|{ipvfuture})\\]|{reg}*)"
    authority = f"(?:{userinfo}@)?{host}(?::[0-9]*)?"
    segment = f"{pchar}*"
    path_abempty = f"(?:/{segment})*"
    path_absolute = f"/(?:{pchar}+{path_abempty})?"
    path_rootless = f"{pchar}+{path_abempty}"
    path_noscheme = f"{pchar_nc}+{path_abempty}"
    tail = f"(?:\\?{qchar}*)?(?:#{fchar}*)?"
    scheme = "[A-Za-z][A-Za-z0-9+.-]*"
    absolute = f"{scheme}:(?://{authority}{path_abempty}|{path_absolute}|{path_rootless})?{tail}"
    relative = f"(?://{authority}{path_abempty}|{path_absolute}|{path_noscheme})?{tail}"
    return {"absolute": absolute, "reference": f"(?:{absolute}|{relative})"}


_URI = _uri_like("", "")
_IRI = _uri_like(_UCS, _IPRIV)


# --- JSON pointers (RFC 6901, draft-handrews-relative-json-pointer-01) --------------------------

_JSON_POINTER = "(?:/(?:[^/~]|~[01])*)*"
_RELATIVE_JSON_POINTER = f"(?:0|[1-9][0-9]*)(?:#|{_JSON_POINTER})"


# --- URI templates (RFC 6570, level 4) ------------------------------------------------------------

_UT_LITERAL = f"(?:[!#$&'()*+,./0-9:;=?@A-Z\\[\\]_a-z~-]|[{_UCS}{_IPRIV}]|{_PCT})"
_UT_VARCHAR = f"(?:[A-Za-z0-9_]|{_PCT})"
_UT_VARSPEC = f"{_UT_VARCHAR}(?:\\.?{_UT_VARCHAR})*(?::[1-9][0-9]{{0,3}}|\\*)?"
# Operators "=", ",", "!", "@" and "|" are reserved for future extensions: left out.
_UT_EXPRESSION = f"\\{{[+#./;?&]?{_UT_VARSPEC}(?:,{_UT_VARSPEC})*\\}}"
_URI_TEMPLATE = f"(?:{_UT_LITERAL}|{_UT_EXPRESSION})*"


# --- regular expressions (a dialect valid in both ECMA-262 with the u flag and Python re) ----


def _regex_format(depth: int = 2) -> str:
    """Patterns valid in ECMA-262 (u flag) and in Python ``re`` (which jsonschema uses).

    Atoms: literal characters (anything but ``^$\\.*+?()[]{}|``), ``.``, the escapes
    ``\\d\\D\\w\\W\\s\\S\\n\\r\\t\\f\\v`` and escaped syntax characters, non-empty classes
    ``[...]``/``[^...]`` of literals, those escapes and alphanumeric ranges with lo <= hi,
    and groups ``(...)``/``(?:...)`` nested at most ``depth`` deep. Each atom takes at most one
    quantifier (``* + ? {n} {n,} {n,m}``, n <= m, optionally lazy); ``^`` and ``$`` are
    unquantified assertions; ``|`` alternates at any level.
    """
    esc = r"\\[dDwWsSnrtfv\\^$.*+?()\[\]{}|/]"
    cls_esc = r"\\[dDwWsSnrtfv\\^$.*+?()\[\]{}|/-]"
    ranges = []
    for alphabet in ("0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
        for i, lo in enumerate(alphabet):
            hi = alphabet[i:]
            hi_cls = hi if len(hi) == 1 else f"[{hi[0]}-{hi[-1]}]"
            ranges.append(f"{lo}-{hi_cls}")
    cls_item = "(?:[^\\\\\\]\\[\\-^&|~]|" + cls_esc + "|" + "|".join(ranges) + ")"
    char_class = f"\\[\\^?{cls_item}+\\]"
    lit = r"[^\\^$.*+?()\[\]{}|]"
    count = "(?:0|[1-9][0-9]{0,2})"
    pairs = "|".join(f"{d},[{d}-9]" for d in range(10))
    braces = f"\\{{(?:{count},?|{pairs}|[0-9],[1-9][0-9]{{1,2}})\\}}"
    quant = f"(?:[*+?]|{braces})\\??"
    simple_atom = f"(?:{lit}|{esc}|\\.|{char_class})"
    alternation = ""
    for level in range(depth + 1):
        atom = simple_atom if level == 0 else f"(?:{simple_atom}|\\((?:\\?:)?{alternation}\\))"
        term = f"(?:{atom}(?:{quant})?|[$^])"
        alternation = f"{term}*(?:\\|{term}*)*"
    return alternation


_REGEX = _regex_format(2)


# --------------------------------------------------------------------------------------------

_REGEXES: dict[str, str] = {
    "date-time": _DATE_TIME,
    "date": _FULL_DATE,
    "time": _FULL_TIME,
    "duration": _DURATION,
    "email": _EMAIL,
    "idn-email": _IDN_EMAIL,
    "hostname": _HOSTNAME,
    "idn-hostname": _IDN_HOSTNAME,
    "ipv4": _IPV4,
    "ipv6": _IPV6,
    "uuid": _UUID,
    "uri": _URI["absolute"],
    "uri-reference": _URI["reference"],
    "iri": _IRI["absolute"],
    "iri-reference": _IRI["reference"],
    "json-pointer": _JSON_POINTER,
    "relative-json-pointer": _RELATIVE_JSON_POINTER,
    "regex": _REGEX,
    "uri-template": _URI_TEMPLATE,
}

FORMAT_NAMES: frozenset[str] = frozenset(_REGEXES)

_LEAP = (
    "leap seconds (:60) are rejected: jsonschema's date-time/time checker (rfc3339-validator) "
    "rejects every :60, and RFC 3339 allows it only at 23:59:60 UTC, which with arbitrary "
    "offsets would need ~1440 extra automaton states"
)
_HOST = (
    "labels with '--' in positions 3-4 (A-labels 'xn--...') are rejected: their validity needs "
    "Punycode decoding and IDNA2008 tables; total length <= 253 is enforced by tiers (up to 3 "
    "labels of <= 63, 8 of <= 30 or 16 of <= 14 characters)"
)

#: Per format: "exact", or "subset: <what is left out and why>".
FORMAT_NOTES: dict[str, str] = {
    "date": "exact (years 0001-9999, month lengths, Gregorian leap years)",
    "time": f"subset: {_LEAP}",
    "date-time": f"subset: {_LEAP}",
    "duration": (
        "exact (RFC 3339 appendix A ABNF) but for letter case: designators in upper case only "
        "(ABNF literals are case-insensitive; ISO 8601 and checkers use upper case)"
    ),
    "ipv4": "exact (dotted quad 0-255, no leading zeros)",
    "ipv6": "exact (RFC 4291 text forms incl. embedded IPv4; no zone id)",
    "uuid": "exact (8-4-4-4-12 hex digits, either case)",
    "hostname": f"subset: {_HOST}",
    "idn-hostname": (
        "subset: ASCII host names only (also with the separators U+3002, U+FF0E, U+FF61); "
        "U-labels need IDNA2008 code point, context and bidi rules; " + _HOST
    ),
    "email": (
        "subset: dot-atom or quoted-string local part (<= 64 octets, dot-atoms with >= 33 atext "
        "characters only without dots); domain: a host name as for hostname but with tiers of "
        "up to 3 labels of <= 62, 8 of <= 22 or 16 of <= 10 characters (so the mailbox stays "
        "<= 254 octets), or an IPv4 / IPv6 address literal ('IPv6:' spelled so, '::' eliding >= 2 "
        "groups as RFC 5321 requires); no General-address-literal"
    ),
    "idn-email": (
        "subset: as email, plus non-ASCII characters in the local part (dot-atoms of <= 12 "
        "characters, quoted strings of <= 15); the domain is ASCII only"
    ),
    "uri": "exact (RFC 3986 URI)",
    "uri-reference": "exact (RFC 3986 URI-reference)",
    "iri": "exact (RFC 3987 IRI)",
    "iri-reference": "exact (RFC 3987 IRI-reference)",
    "json-pointer": "exact (RFC 6901)",
    "relative-json-pointer": (
        "subset: no index manipulation ('+N'/'-N' after the prefix), as in "
        "draft-handrews-relative-json-pointer-01 which jsonschema implements"
    ),
    "regex": (
        "subset: a dialect valid in both ECMA-262 and Python re: literals, '.', common escapes, "
        "classes with alphanumeric ranges, groups nested <= 2 deep, quantifiers, ^ and $"
    ),
    "uri-template": "subset: RFC 6570 level 4 without the reserved operators = , ! @ |",
}


def format_regex(name: str) -> str:
    """The full-match regex for JSON Schema format ``name`` (see the module docstring)."""
    try:
        return _REGEXES[name]
    except KeyError:
        raise UnknownFormatError(name) from None
