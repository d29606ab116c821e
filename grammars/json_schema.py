"""JSON Schema -> grammar, exact for the keywords it accepts.

Stages: read the schema (dict, bool, JSON text or pydantic model) -> check it against its
metaschema (``InvalidSchemaError``) -> make every ``$ref`` absolute and register the document (and
any remote documents passed in ``registry``) with ``referencing`` -> lower each subschema into
grammar nodes. ``allOf`` and ``$ref`` with siblings are merged into one schema (intersection per
keyword); ``anyOf`` distributes over its siblings; ``enum``/``const`` keep exactly the listed values
that validate against the rest of the schema (checked with ``jsonschema``).

Exact semantics and documented restrictions (a restriction only ever *removes* valid texts, never
adds invalid ones):
- Strings: the text is a JSON string whose characters are raw UTF-8 except ``"``, ``\\`` and control
  characters, which use ``json.dumps``' escapes (``\\"``, ``\\\\``, ``\\n``... or ``\\u00XX``); ``\\/`` is
  also accepted. ``\\uXXXX`` escapes of other characters are not.
- Numbers with bounds or ``multipleOf`` are written without exponents (see
  :mod:`grammars.numeric`); integers may have a zero fraction (``1.0``), as JSON Schema's integer
  type allows. ``multipleOf`` (integer or decimal, several of them through ``allOf``) is exact
  in decimal arithmetic (``numeric.multiple_of_dfa``, intersected with the number automaton);
  a divisor whose automaton would exceed ``numeric.MAX_MULTIPLE_STATES`` states (e.g.
  ``0.123456789``) is an ``UnsupportedSchemaError``. python-jsonschema divides floats, so for
  some float divisors its verdict differs from the exact one (e.g. 0.3 by 0.1).
- Recursive ``$ref`` s are kept as rules: the grammar then compiles to the context-free path.
- Values of unconstrained schemas (``true``, ``{}``, additional properties) nest at most
  ``max_any_depth`` arrays/objects deep on this path (``None``: any depth, through a recursive
  rule and so the context-free path; the fallback grammar uses that).
- ``property_order="schema"``: properties appear in the schema's order, any additional properties
  after them. ``"any"``: any order, each declared property at most once, required ones enforced.
- ``whitespace="flexible"``: up to ``max_whitespace`` bytes of JSON whitespace between tokens.

Keywords a grammar cannot enforce exactly (``uniqueItems``, ``not`` of anything but a type,
``if``/``then``/``else``, ``contains``, ``dependent*``, ``unevaluated*``, overlapping ``oneOf``,
``$dynamicRef``, conflicting ``allOf`` values, huge ``multipleOf`` automata, more than
``MAX_PATTERN_PROPERTIES`` patterns, string ``pattern`` s with backreferences, lookarounds or inner
anchors, length bounds over ``MAX_EXACT_LENGTH``, string intersections past
``MAX_STRING_PRODUCT_STATES``) are *relaxed*: the grammar takes a superset there and records
``(keyword, pointer)`` in ``Grammar.semantic.relaxed``; :mod:`grammars.json_semantic` restores
exactness when values complete. A looser verdict is never returned. Lowering past its time limit
(``timeout``, default ``LOWERING_TIMEOUT``) gives the fallback grammar: any value of the root's
types, every keyword checked. What neither can handle (a non-regular key pattern in
``patternProperties``/``propertyNames``, an unknown standard format) raises
``UnsupportedSchemaError(keyword, pointer)``. Unknown keywords and annotations are ignored (the
spec says they do not validate); custom (non-standard) ``format`` values are annotations too.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urldefrag, urljoin

from grammars import charclass as cc
from grammars.automaton import check_deadline
from grammars.errors import (
    EmptyLanguageError,
    GrammarTooLargeError,
    InvalidSchemaError,
    UnsupportedSchemaError,
)
from grammars.formats import format_regex
from grammars.grammar import LOWERING_TIMEOUT, Grammar
from grammars.ir import (
    NOTHING,
    Automaton,
    Bytes,
    Lit,
    Node,
    Ref,
    Rules,
    alt,
    lit,
    opt,
    repeat,
    seq,
    star,
)
from grammars.metaschema import first_metaschema_error
from grammars.numeric import multiple_of_dfa, number_regex
from grammars.regex import (
    RegexSyntaxError,
    UnsupportedRegexError,
    json_string_encoder,
    regex_to_node,
)

__all__ = ["DEFAULT_ROOT_URI", "STANDARD_FORMATS", "schema_to_grammar"]

DEFAULT_ROOT_URI = "file:///schema.json"

STANDARD_FORMATS = frozenset(
    ["date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname", "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template", "json-pointer", "relative-json-pointer", "regex"]
)

# Keywords that only annotate (never constrain) or that this module reads elsewhere.
_ANNOTATIONS = frozenset(
    ["$schema", "$id", "id", "$comment", "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$vocabulary", "$defs", "definitions", "contentMediaType", "contentEncoding", "contentSchema", "then", "else"]
)
#: patternProperties with more patterns than this are refused on the regular path (the keys are
#: split into one region per subset of matching patterns).
MAX_PATTERN_PROPERTIES = 4
#: With ``property_order="any"``, objects with more declared properties than this take any
#: sequence of members in the grammar (each order of a subset would be a state).
MAX_ANY_ORDER_PROPERTIES = 10
#: A string's format/pattern/length automata are intersected up to this many states; past it the
#: grammar keeps the first ones and the semantic checks enforce the rest.
MAX_STRING_PRODUCT_STATES = 20_000
#: minLength/maxLength up to this are exact in the grammar; longer bounds are checked when the
#: string completes (a ``maxLength: 32767`` chain would multiply every automaton it enters).
MAX_EXACT_LENGTH = 128


def _search_body(pattern: str) -> Node:
    """The string-body node of a JSON Schema regex (search semantics, ECMA dialect, characters as
    JSON escapes them); raises the regex module's errors."""
    return regex_to_node(pattern, encoder=json_string_encoder, mode="search", dialect="ecma")


def _pattern_body(pattern: str, keyword: str, ptr: str) -> Node:
    """:func:`_search_body`, an unsupported or invalid regex being an ``UnsupportedSchemaError``."""
    try:
        return _search_body(pattern)
    except (UnsupportedRegexError, RegexSyntaxError) as e:
        raise UnsupportedSchemaError(keyword, ptr, str(e)) from None


def _re_search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``text``, as python-jsonschema decides it."""
    import re

    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


_INTERNAL = frozenset(
    ["__sources", "__patterns", "__formats", "__anyOfs", "__oneOfs", "__multiples", "__nots"])


def _pure_ref(b: Any, draft: int) -> bool:
    """A branch that is only a ``$ref`` (plus annotations)."""
    return isinstance(b, dict) and isinstance(b.get("$ref"), str) and (
        draft <= 7 or all(k in _ANNOTATIONS for k in b if k != "$ref"))


_HANDLED = frozenset(
    ["type", "enum", "const", "properties", "required", "additionalProperties", "items", "prefixItems", "additionalItems", "minItems", "maxItems", "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "allOf", "anyOf", "oneOf", "$ref", "uniqueItems", "if", "minProperties", "maxProperties", "multipleOf", "propertyNames", "patternProperties", "__sources", "__patterns", "__formats", "__anyOfs", "__oneOfs", "__multiples", "__nots"]
)
# Keywords the grammar relaxes (drops) and the semantic checks enforce (grammars.json_semantic).
_RELAXED = frozenset(
    ["contains", "minContains", "maxContains", "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "$recursiveRef"]
)
# Applicators whose annotations depend on the instance (unevaluated* cannot be read statically).
_CONDITIONAL = frozenset(["dependentSchemas", "dependencies", "$dynamicRef", "$recursiveRef", "$ref"])
# Keywords whose value holds subschemas: name -> "one" | "list" | "map"
_SUBSCHEMA_KEYS = {
    "additionalProperties": "one", "items": "one_or_list", "additionalItems": "one",
    "contains": "one", "propertyNames": "one", "not": "one", "if": "one", "then": "one",
    "else": "one", "unevaluatedItems": "one", "unevaluatedProperties": "one",
    "contentSchema": "one", "prefixItems": "list", "allOf": "list", "anyOf": "list",
    "oneOf": "list", "properties": "map", "patternProperties": "map", "$defs": "map",
    "definitions": "map", "dependentSchemas": "map", "dependencies": "map_or_list",
}

_ALL_TYPES = ("null", "boolean", "object", "array", "string", "int", "frac")
_WS_BYTES = Bytes(((0x09, 0x0A), (0x0D, 0x0D), (0x20, 0x20)))
_ANY_CHAR = cc.json_string_char_node(cc.ANY)
_ANY_RULE = "any:value"  # the recursive any-value rule (``max_any_depth=None``)


_ANY_CHAR_DFA: list[Any] = []
_ANY_STRING_DFA: list[Any] = []


def clear_cache() -> None:
    """Forget the automata and names reused across schemas (see
    :func:`grammars.compiled.clear_cache`)."""
    _ANY_CHAR_DFA.clear()
    _ANY_STRING_DFA.clear()
    _Compiler.string_chars.cache_clear()


def _any_string_dfa() -> Any:
    """The DFA of every JSON string text, quotes included (built once per process)."""
    if not _ANY_STRING_DFA:
        from grammars.automaton import dfa_of

        _ANY_STRING_DFA.append(dfa_of(seq(lit('"'), star(_ANY_CHAR), lit('"'))))
    return _ANY_STRING_DFA[0]


def _length_body(lo: int, hi: int | None) -> Node:
    """A string body of ``lo`` to ``hi`` characters; a long bounded one as a ready chain DFA."""
    if hi is None or hi <= 16:
        return repeat(_ANY_CHAR, lo, None if hi is None else int(hi))
    from grammars.automaton import bounded_repeat, dfa_of

    if not _ANY_CHAR_DFA:
        _ANY_CHAR_DFA.append(dfa_of(_ANY_CHAR))
    dfa = bounded_repeat(_ANY_CHAR_DFA[0], int(lo), int(hi))
    assert dfa is not None  # one JSON string character is a single unit
    return Automaton(dfa.trans, dfa.accepting)


def _pointer_join(ptr: str, *parts: object) -> str:
    out = ptr
    for p in parts:
        out += "/" + str(p).replace("~", "~0").replace("/", "~1")
    return out


def _join(base: str, ref: str) -> str:
    """``urljoin`` that also resolves fragments against non-hierarchical bases (``urn:``)."""
    if ref.startswith("#"):
        return urldefrag(base)[0] + ref
    return urljoin(base, ref)


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True != 1; objects by key, arrays by position."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return False
        return Decimal(repr(a)) == Decimal(repr(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _types_of(schema: dict) -> set[str]:
    t = schema.get("type")
    if t is None:
        return set(_ALL_TYPES)
    names = [t] if isinstance(t, str) else list(t)
    out: set[str] = set()
    for n in names:
        if n == "number":
            out |= {"int", "frac"}
        elif n == "integer":
            out.add("int")
        else:
            out.add(n)
    return out


def _value_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "int" if v == int(v) else "frac"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


class _Compiler:
    def __init__(
        self,
        root: Any,
        *,
        whitespace: str,
        property_order: str,
        registry: dict[str, Any] | None,
        max_any_depth: int | None,
        max_whitespace: int,
    ) -> None:
        import jsonschema
        import referencing
        import referencing.jsonschema

        self.validator_cls = jsonschema.validators.validator_for(
            root, default=jsonschema.Draft202012Validator
        )
        e = first_metaschema_error(root, self.validator_cls)
        if e is not None:
            ptr = "".join("/" + str(p) for p in e.path)
            raise InvalidSchemaError(e.message, pointer=ptr)
        meta = getattr(self.validator_cls, "META_SCHEMA", {}).get("$schema", "")
        self.draft = (
            4 if "draft-04" in meta else 6 if "draft-06" in meta else 7 if "draft-07" in meta
            else 2019 if "2019-09" in meta else 2020
        )
        self.spec = referencing.jsonschema.specification_with(
            meta or "https://json-schema.org/draft/2020-12/schema",
            default=referencing.jsonschema.DRAFT202012,
        )
        self.id_key = "id" if self.draft == 4 else "$id"
        root_id = root.get(self.id_key) if isinstance(root, dict) else None
        self.root_uri = _join(DEFAULT_ROOT_URI, root_id) if isinstance(root_id, str) else DEFAULT_ROOT_URI
        self.root = self._absolutize(root, self.root_uri)
        resources = [(urldefrag(self.root_uri)[0], self.root)]
        for uri, doc in (registry or {}).items():
            doc_id = doc.get(self.id_key) if isinstance(doc, dict) else None
            base = _join(uri, doc_id) if isinstance(doc_id, str) else uri
            resources.append((urldefrag(uri)[0], self._absolutize(doc, base)))
        try:
            from jsonschema_specifications import REGISTRY as _META
        except ImportError:  # pragma: no cover
            _META = referencing.Registry()
        reg: Any = _META
        for uri, doc in resources:
            dialect = doc.get("$schema", "") if isinstance(doc, dict) else ""
            spec = referencing.jsonschema.specification_with(dialect, default=self.spec)
            reg = reg.with_resource(uri, spec.create_resource(doc))
        self.registry = reg.crawl()
        self.resolver = self.registry.resolver(base_uri=urldefrag(self.root_uri)[0])
        self.ws = repeat(_WS_BYTES, 0, max_whitespace) if whitespace == "flexible" else lit(b"")
        self.any_order = property_order == "any"
        self.max_any_depth = max_any_depth
        self.rules: dict[str, Node] = {}
        self.ref_rules: dict[str, str] = {}
        self.inlining: list[str] = []  # $refs being inlined by the current _flatten
        # $refs inlined by _flatten on the lowering path from the root (a schema reached again
        # through them recurses: allOf[$ref A, ...] inside A would otherwise unfold forever);
        # ``_ancestors`` of them belong to the enclosing nodes, the rest to the current one
        self.path_refs: list[str] = []
        self._ancestors = 0
        self._any_cache: dict[int | None, Node] = {}
        self._string_body_cache: dict[Any, Node] = {}
        self._validators: dict[str, Any] = {}
        self.relaxed: list[tuple[str, str]] = []  # (keyword, pointer) the semantic checks enforce
        self._looked_up: dict[str, tuple[Any]] = {}
        self._undeclared: dict[tuple, tuple[Any, Any]] = {}  # undeclared_keys by (names, filter)

    def relax(self, keyword: str, ptr: str) -> None:
        """Record that the grammar is a superset at ``ptr`` for ``keyword``: the semantic checks
        (:mod:`grammars.json_semantic`) make the verdict exact."""
        self.relaxed.append((keyword, ptr))

    # ---- document preparation -----------------------------------------------------------------
    def _absolutize(self, schema: Any, base: str) -> Any:
        """Copy of ``schema`` with every ``$ref`` made absolute against its ``$id`` scope."""
        if not isinstance(schema, dict):
            return schema
        out = dict(schema)
        sid = schema.get(self.id_key)
        if isinstance(sid, str) and not (self.draft <= 7 and "$ref" in schema):
            base = _join(base, sid)
        if isinstance(schema.get("$ref"), str):
            out["$ref"] = _join(base, schema["$ref"])
        for key, kind in _SUBSCHEMA_KEYS.items():
            if key not in schema:
                continue
            v = schema[key]
            if kind == "one" or (kind == "one_or_list" and not isinstance(v, list)):
                out[key] = self._absolutize(v, base)
            elif kind in ("list", "one_or_list") and isinstance(v, list):
                out[key] = [self._absolutize(x, base) for x in v]
            elif kind in ("map", "map_or_list") and isinstance(v, dict):
                out[key] = {k: (self._absolutize(x, base) if not isinstance(x, list) else x) for k, x in v.items()}
        return out

    def _lookup(self, uri: str, ptr: str) -> Any:
        """The subschema at the absolute ``uri``, its own ``$ref`` s made absolute (documents
        from outside, such as the metaschemas, use relative ones)."""
        hit = self._looked_up.get(uri)
        if hit is not None:
            return hit[0]
        try:
            contents = self.resolver.lookup(uri).contents
        except Exception as e:  # noqa: BLE001 - referencing raises several types
            raise InvalidSchemaError(f"cannot resolve $ref {uri!r}: {e}", pointer=ptr, keyword="$ref") from None
        out = self._absolutize(contents, urldefrag(uri)[0])
        self._looked_up[uri] = (out,)
        return out

    def _is_valid(self, value: Any, schemas: list[Any]) -> bool:
        v = self.validator_cls({"allOf": schemas}, registry=self.registry)
        return bool(v.is_valid(value))

    # ---- merging (allOf, $ref with siblings) --------------------------------------------------
    def _flatten(self, s: dict, ptr: str) -> Any:
        """Resolve allOf and $ref-with-siblings into one merged dict (or a bool)."""
        check_deadline()
        has_ref = isinstance(s.get("$ref"), str)
        if has_ref and self.draft <= 7:
            s = {"$ref": s["$ref"]}
        if not has_ref and "allOf" not in s:
            return s
        parts: list[Any] = []
        base = {k: v for k, v in s.items() if k not in ("allOf", "$ref")}
        parts.append(base)
        if has_ref:
            uri = s["$ref"]
            if uri in self.inlining or uri in self.path_refs[:self._ancestors]:
                # a recursive reference merged with siblings: the grammar takes any value here
                self.relax("$ref", ptr)
            else:
                self.inlining.append(uri)
                self.path_refs.append(uri)
                try:
                    target = self._lookup(uri, ptr)
                    parts.append(self._flatten(target, ptr) if isinstance(target, dict) else target)
                finally:
                    self.inlining.pop()
        for i, b in enumerate(s.get("allOf", [])):
            parts.append(self._flatten(b, _pointer_join(ptr, "allOf", i)) if isinstance(b, dict) else b)
        merged: Any = True
        for p in parts:
            merged = self._merge(merged, p)
        return merged

    def _merge(self, a: Any, b: Any) -> Any:
        if a is True or a == {}:
            return self._tag(b)
        if b is True or b == {}:
            return self._tag(a)
        if a is False or b is False:
            return False
        a, b = self._tag(a), self._tag(b)
        out: dict[str, Any] = {}
        keys = list(dict.fromkeys([*a, *b]))
        self._merge_objects(a, b, out)
        self._merge_arrays(a, b, out)
        for k in keys:
            if k in _ANNOTATIONS and k not in ("then", "else"):
                continue
            if k in ("properties", "additionalProperties", "prefixItems", "items", "additionalItems"):
                continue
            if k not in b:
                out[k] = a[k]
                continue
            if k not in a:
                out[k] = b[k]
                continue
            x, y = a[k], b[k]
            if k == "__sources" or k in ("__patterns", "__formats", "__anyOfs", "__oneOfs",
                                         "__multiples", "__nots"):
                out[k] = x + y
            elif k == "type":
                tx, ty = _types_of({"type": x}), _types_of({"type": y})
                out[k] = sorted(_typenames(tx & ty))
            elif k in ("minLength", "minItems", "minimum", "exclusiveMinimum", "minProperties"):
                out[k] = x if isinstance(x, bool) else max(x, y)
            elif k in ("maxLength", "maxItems", "maximum", "exclusiveMaximum", "maxProperties"):
                out[k] = x if isinstance(x, bool) else min(x, y)
            elif k == "required":
                out[k] = list(dict.fromkeys([*x, *y]))
            elif k == "enum":
                out[k] = [v for v in x if any(_json_equal(v, w) for w in y)]
            elif k == "const":
                out[k] = x
                if not _json_equal(x, y):
                    out["enum"] = []
            elif k == "uniqueItems":
                out[k] = bool(x) or bool(y)
            elif k == "propertyNames":
                out[k] = {"allOf": [x, y]}
            else:
                # same keyword on both sides with no merge rule: equal values merge; otherwise
                # the grammar keeps one side (a superset) and the semantic checks the other
                if json.dumps(x, sort_keys=True) != json.dumps(y, sort_keys=True):
                    self.relax(k, "")
                out[k] = x
        return out

    @staticmethod
    def _merge_objects(a: dict, b: dict, out: dict) -> None:
        """properties/additionalProperties of an intersection: a key declared on one side only
        meets the other side's additionalProperties (true when absent)."""
        keys = ("properties", "additionalProperties")
        if not any(k in a or k in b for k in keys):
            return
        pa, pb = a.get("properties", {}), b.get("properties", {})
        adda, addb = a.get("additionalProperties", True), b.get("additionalProperties", True)
        props: dict[str, Any] = {}
        for name in dict.fromkeys([*pa, *pb]):
            props[name] = {"allOf": [pa.get(name, adda), pb.get(name, addb)]}
        if props:
            out["properties"] = props
        if "additionalProperties" in a or "additionalProperties" in b:
            out["additionalProperties"] = {"allOf": [adda, addb]}

    def _merge_arrays(self, a: dict, b: dict, out: dict) -> None:
        """prefixItems/items of an intersection, position by position (each side's ``items``
        covers the positions after its own prefix)."""

        def split(x: dict) -> tuple[list[Any], Any]:
            items = x.get("items", True)
            if isinstance(items, list):  # draft <= 2019-09 tuple form
                return list(items), x.get("additionalItems", True)
            return list(x.get("prefixItems", [])), items

        if not any(k in x for x in (a, b) for k in ("prefixItems", "items", "additionalItems")):
            return
        (xa, ia), (xb, ib) = split(a), split(b)
        n = max(len(xa), len(xb))
        if n:
            out["prefixItems"] = [
                {"allOf": [xa[i] if i < len(xa) else ia, xb[i] if i < len(xb) else ib]} for i in range(n)
            ]
        out["items"] = {"allOf": [ia, ib]}

    def _tag(self, s: Any) -> Any:
        """Move mergeable list-valued keywords into their internal accumulators; ``if`` with
        ``then``/``else`` becomes the branch pair ``anyOf[if and then, else]`` (a superset: the
        semantic checks make it exact)."""
        if not isinstance(s, dict) or "__sources" in s:
            return s
        out = {k: v for k, v in s.items()
               if k not in ("pattern", "format", "anyOf", "oneOf", "multipleOf", "not", "if")}
        out["__sources"] = [s]
        out["__patterns"] = [s["pattern"]] if "pattern" in s else []
        out["__formats"] = [s["format"]] if "format" in s else []
        out["__anyOfs"] = [s["anyOf"]] if "anyOf" in s else []
        out["__oneOfs"] = [s["oneOf"]] if "oneOf" in s else []
        out["__multiples"] = [s["multipleOf"]] if "multipleOf" in s else []
        out["__nots"] = [s["not"]] if "not" in s else []
        if "if" in s and ("then" in s or "else" in s):
            self.relax("if", "")
            out["__anyOfs"].append([{"allOf": [s["if"], s.get("then", True)]}, s.get("else", True)])
        return out

    # ---- lowering -----------------------------------------------------------------------------
    def node(self, s: Any, ptr: str, depth: int = 0) -> Node:
        """The grammar node of subschema ``s`` (at JSON pointer ``ptr``)."""
        n0, saved = len(self.path_refs), self._ancestors
        self._ancestors = n0
        try:
            return self._node(s, ptr, depth)
        finally:
            del self.path_refs[n0:]
            self._ancestors = saved

    def _node(self, s: Any, ptr: str, depth: int) -> Node:
        check_deadline()
        if s is True:
            return self.any_value(self.max_any_depth)
        if s is False:
            return NOTHING
        if not isinstance(s, dict):
            raise InvalidSchemaError(f"a schema must be an object or a boolean, got {s!r}", pointer=ptr)
        ref = s.get("$ref")
        if isinstance(ref, str) and (self.draft <= 7 or all(k in _ANNOTATIONS for k in s if k != "$ref")):
            return self.ref_node(ref, ptr)
        s = self._flatten(s, ptr)
        if not isinstance(s, dict):
            return self.node(s, ptr)
        s = self._tag(s)
        for k in s:
            if k in _RELAXED:
                self.relax(k, _pointer_join(ptr, k))
        excluded: set[str] = set()
        for n in s["__nots"]:
            if n is True:
                return NOTHING
            if isinstance(n, dict) and n and all(k == "type" or k in _ANNOTATIONS for k in n):
                excluded |= _types_of(n)  # not {type: ...}: exact
            elif n is not False:
                self.relax("not", _pointer_join(ptr, "not"))
        s = self._unevaluated_as_additional(s)
        branches: list[list[Any]] = [list(x) for x in s["__anyOfs"]]
        for one in s["__oneOfs"]:
            if not self._exclusive(one, ptr):
                self.relax("oneOf", _pointer_join(ptr, "oneOf"))  # anyOf, plus exactly-one checks
            branches.append(list(one))
        if branches:
            rest = dict(s)
            rest["__anyOfs"] = []
            rest["__oneOfs"] = []
            combos = list(itertools.islice(itertools.product(*branches), 257))
            if len(combos) > 256:
                self.relax("anyOf", _pointer_join(ptr, "anyOf"))  # the branches are checked
                return self.node(rest, ptr, depth)
            out = []
            plain = not (rest["__patterns"] or rest["__formats"] or rest["__multiples"]) and all(
                k in _ANNOTATIONS or k in _INTERNAL for k in rest)
            for combo in combos:
                if plain and len(combo) == 1 and _pure_ref(combo[0], self.draft):
                    # nothing to merge: keep the reference (it may recurse: context-free path)
                    out.append(self.ref_node(combo[0]["$ref"], ptr))
                    continue
                m: Any = rest
                for b in combo:
                    bb = self._flatten(b, ptr) if isinstance(b, dict) else b
                    m = self._merge(m, bb)
                out.append(self.node(m, ptr, depth))
            return alt(*out)
        if "enum" in s or "const" in s:
            values = list(s.get("enum", [])) if "enum" in s else [s["const"]]
            if "const" in s and "enum" in s:
                values = [v for v in values if _json_equal(v, s["const"])]
            keep = [v for v in values if self._is_valid(v, s["__sources"])]
            return alt(*(self.const_node(v) for v in keep))
        types = _types_of(s)
        for src in s["__sources"]:
            if isinstance(src, dict) and "type" in src:
                types &= _types_of(src)
        if excluded:
            types -= excluded
            if "frac" in types and "int" not in types:
                self.relax("not", _pointer_join(ptr, "not"))  # integers are not excluded exactly
        parts: list[Node] = []
        if "null" in types:
            parts.append(lit("null"))
        if "boolean" in types:
            parts.append(alt(lit("true"), lit("false")))
        if "int" in types or "frac" in types:
            parts.append(self.number_node(s, ptr, integer="frac" not in types))
        if "string" in types:
            parts.append(self.string_node(s, ptr))
        if "array" in types:
            parts.append(self.array_node(s, ptr, depth))
        if "object" in types:
            parts.append(self.object_node(s, ptr, depth))
        return alt(*parts)

    @staticmethod
    def _unevaluated_as_additional(s: dict) -> dict:
        """Tighten the grammar for ``unevaluatedProperties``/``unevaluatedItems`` where they mean
        ``additionalProperties``/``items``: a schema merged from nothing else, with no
        applicator whose annotations depend on the instance (the checks stay exact either way;
        this only keeps the grammar from writing members that can never be accepted)."""
        src = s["__sources"]
        if (len(src) != 1 or s["__anyOfs"] or s["__oneOfs"] or _CONDITIONAL & s.keys()
                or (isinstance(src[0], dict) and "if" in src[0])):  # `if` alone still annotates
            return s
        out = s
        if "unevaluatedProperties" in s and "additionalProperties" not in s:
            out = dict(out)
            out["additionalProperties"] = s["unevaluatedProperties"]
        if ("unevaluatedItems" in s and not {"items", "additionalItems", "contains"} & s.keys()):
            out = dict(out)
            out["items"] = s["unevaluatedItems"]
        return out

    def ref_node(self, uri: str, ptr: str) -> Node:
        name = self.ref_rules.get(uri)
        if name is None:
            name = f"ref:{uri}"
            self.ref_rules[uri] = name
            target = self._lookup(uri, ptr)
            self.rules[name] = self.node(target, uri.split("#", 1)[-1] if "#" in uri else uri)
        return Ref(name)

    def _exclusive(self, branches: list[Any], ptr: str) -> bool:
        """True if no JSON value can satisfy two branches (cheap sufficient tests)."""
        flat = [self._tag(self._flatten(b, ptr)) if isinstance(b, dict) else b for b in branches]
        if any(b is True for b in flat):
            return len([b for b in flat if b is not False]) <= 1
        flat = [b for b in flat if b is not False]

        def types(b: dict) -> set[str]:
            t = _types_of(b)
            for src in b.get("__sources", []):
                if isinstance(src, dict) and "type" in src:
                    t &= _types_of(src)
            vals = self._values(b)
            if vals is not None:
                t &= {_value_type(v) for v in vals}
            return t

        for x, y in itertools.combinations(flat, 2):
            if not types(x) & types(y):
                continue
            vx, vy = self._values(x), self._values(y)
            if vx is not None and vy is not None and not any(_json_equal(a, b) for a in vx for b in vy):
                continue
            if self._discriminated(x, y):
                continue
            return False
        return True

    @staticmethod
    def _values(b: dict) -> list[Any] | None:
        if "const" in b:
            return [b["const"]]
        if "enum" in b:
            return list(b["enum"])
        return None

    def _discriminated(self, x: dict, y: dict) -> bool:
        px, py = x.get("properties", {}), y.get("properties", {})
        rx, ry = set(x.get("required", [])), set(y.get("required", []))
        if _types_of(x) & _types_of(y) - {"object"}:
            return False
        for k in set(px) & set(py) & rx & ry:
            a, b = px[k], py[k]
            if isinstance(a, dict) and isinstance(b, dict):
                va, vb = self._values(a), self._values(b)
                if va is not None and vb is not None and not any(_json_equal(p, q) for p in va for q in vb):
                    return True
        return False

    # ---- values -------------------------------------------------------------------------------
    def any_value(self, depth: int | None) -> Node:
        """Any JSON value, arrays and objects nested at most ``depth`` deep (regular), or at any
        depth when ``depth`` is None (a recursive rule: the context-free path)."""
        hit = self._any_cache.get(depth)
        if hit is not None:
            return hit
        scalars = [lit("null"), lit("true"), lit("false"), self.number_node({}, "", integer=False),
                   self.string_literal_node(star(_ANY_CHAR))]
        if depth is None or depth > 0:
            inner = Ref(_ANY_RULE) if depth is None else self.any_value(depth - 1)
            ws = self.ws
            sep = seq(ws, lit(","), ws)
            arr = seq(lit("["), ws, opt(seq(inner, star(seq(sep, inner)))), ws, lit("]"))
            key = self.string_literal_node(star(_ANY_CHAR))
            kv = seq(key, ws, lit(":"), ws, inner)
            obj = seq(lit("{"), ws, opt(seq(kv, star(seq(sep, kv)))), ws, lit("}"))
            scalars += [arr, obj]
        node = alt(*scalars)
        if depth is None:
            self.rules[_ANY_RULE] = node
            node = Ref(_ANY_RULE)
        self._any_cache[depth] = node
        return node

    def const_node(self, v: Any) -> Node:
        if v is None:
            return lit("null")
        if isinstance(v, bool):
            return lit("true" if v else "false")
        if isinstance(v, (int, float)):
            d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
            return regex_to_node(number_regex(minimum=d, maximum=d))
        if isinstance(v, str):
            return self.string_literal_node(self.string_chars(v))
        ws = self.ws
        if isinstance(v, list):
            if not v:
                return seq(lit("["), ws, lit("]"))
            sep = seq(ws, lit(","), ws)
            items: list[Node] = []
            for i, x in enumerate(v):
                if i:
                    items.append(sep)
                items.append(self.const_node(x))
            return seq(lit("["), ws, *items, ws, lit("]"))
        props = [(k, self.const_node(x)) for k, x in v.items()]
        return self.members_node(props, set(v), None)

    @staticmethod
    @lru_cache(maxsize=4096)
    def string_chars(text: str) -> Node:
        """The JSON string body of ``text``: every spelling of each character (only ``/`` and the
        special characters have escapes; the others are literal bytes)."""
        return seq(*(lit(c) if c >= " " and c not in '"\\/' and not "\ud800" <= c <= "\udfff"
                     else cc.json_string_char_node(((ord(c), ord(c)),)) for c in text))

    @staticmethod
    def string_literal_node(body: Node) -> Node:
        return seq(lit('"'), body, lit('"'))

    def number_node(self, s: dict, ptr: str, *, integer: bool) -> Node:
        kw: dict[str, Any] = {}
        lo, hi = s.get("minimum"), s.get("maximum")
        xlo, xhi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
        if isinstance(xlo, bool):  # draft 4
            xlo, lo = (lo, None) if xlo else (None, lo)
        if isinstance(xhi, bool):
            xhi, hi = (hi, None) if xhi else (None, hi)
        for name, val in (("minimum", lo), ("maximum", hi), ("exclusive_minimum", xlo), ("exclusive_maximum", xhi)):
            if val is not None:
                kw[name] = Decimal(repr(val)) if isinstance(val, float) else val
        try:
            node = regex_to_node(number_regex(integer=integer, **kw))
        except EmptyLanguageError:
            return NOTHING
        multiples = s.get("__multiples", [])
        if not multiples:
            return node
        from grammars.automaton import Dfa, dfa_of, product

        dfa = dfa_of(node)
        for m in multiples:
            try:
                trans, accepting = multiple_of_dfa(
                    Decimal(repr(m)) if isinstance(m, float) else m)
            except OverflowError:
                self.relax("multipleOf", _pointer_join(ptr, "multipleOf"))
                continue
            try:
                dfa = product(dfa, Dfa(trans=trans, accepting=accepting))
            except EmptyLanguageError:
                return NOTHING
        return Automaton(dfa.trans, dfa.accepting)

    def string_node(self, s: dict, ptr: str) -> Node:
        from grammars.automaton import dfa_of, product

        lo = int(s.get("minLength", 0))
        hi = s.get("maxLength")
        # (keyword, body) to intersect: formats first (they are never relaxed: jsonschema does not
        # check formats), then patterns, then the length bound
        bodies: list[tuple[str, Node]] = []
        for f in s["__formats"]:
            if f not in STANDARD_FORMATS:
                continue  # custom formats are annotations
            try:
                rx = format_regex(f)
            except KeyError:
                raise UnsupportedSchemaError("format", _pointer_join(ptr, "format"), f"format {f!r} is not implemented") from None
            bodies.append(("format", regex_to_node(rx, encoder=json_string_encoder, mode="fullmatch")))
        for p in s["__patterns"]:
            try:
                body = _search_body(p)
            except UnsupportedRegexError:
                # a backreference, lookaround or inner anchor: no automaton expresses it; the
                # grammar takes any string here and the semantic checks match the pattern (with
                # Python's re, as python-jsonschema does) when the string completes
                self.relax("pattern", _pointer_join(ptr, "pattern"))
                continue
            except RegexSyntaxError as e:
                raise UnsupportedSchemaError("pattern", _pointer_join(ptr, "pattern"), str(e)) from None
            bodies.append(("pattern", body))
        if hi is not None and lo > hi:
            return NOTHING
        # a long length bound would be a chain of thousands of states in every automaton it
        # enters: the grammar leaves it to the semantic checks
        if hi is not None and hi > MAX_EXACT_LENGTH:
            self.relax("maxLength", _pointer_join(ptr, "maxLength"))
            hi = None
        if lo > MAX_EXACT_LENGTH:
            self.relax("minLength", _pointer_join(ptr, "minLength"))
            lo = 0
        if lo > 0 or hi is not None:
            bodies.append(("maxLength" if hi is not None else "minLength", _length_body(lo, hi)))
        if not bodies:
            return self.string_literal_node(star(_ANY_CHAR))
        if len(bodies) == 1:
            return self.string_literal_node(bodies[0][1])
        try:
            dfa = dfa_of(bodies[0][1])
            for kw, b in bodies[1:]:
                if kw == "format":  # python-jsonschema does not assert formats: never relaxed
                    dfa = product(dfa, dfa_of(b))
                    continue
                try:
                    dfa = product(dfa, dfa_of(b), max_states=MAX_STRING_PRODUCT_STATES)
                except GrammarTooLargeError:
                    # an email of at most 1024 characters: the grammar keeps the format, the
                    # semantic checks the length (or the extra pattern)
                    self.relax(kw, _pointer_join(ptr, kw))
        except EmptyLanguageError:
            return NOTHING
        return self.string_literal_node(Automaton(dfa.trans, dfa.accepting))

    def array_node(self, s: dict, ptr: str, depth: int) -> Node:
        items = s.get("items", True)
        prefix = list(s.get("prefixItems", []))
        if isinstance(items, list):  # draft <= 2019-09 tuple form
            prefix, items = items, s.get("additionalItems", True)
        elif self.draft <= 2019 and "prefixItems" not in s and "additionalItems" in s:
            pass  # additionalItems without a tuple-form items has no effect
        lo = int(s.get("minItems", 0))
        hi = s.get("maxItems")
        hi = None if hi is None else int(hi)
        if s.get("uniqueItems") and (hi is None or hi > 1):
            self.relax("uniqueItems", _pointer_join(ptr, "uniqueItems"))
        if hi is not None and lo > hi:
            return NOTHING
        ws = self.ws
        sep = seq(ws, lit(","), ws)
        elems = [self.node(p, _pointer_join(ptr, "prefixItems", i), depth + 1) for i, p in enumerate(prefix)]
        item = self.node(items, _pointer_join(ptr, "items"), depth + 1)
        k = len(elems)
        fixed = max(k, lo)
        if hi is not None and hi < k:
            elems = elems[:hi]
            k = hi
            fixed = max(k, lo)

        def elem(i: int) -> Node:
            return elems[i] if i < k else item

        # tail after `fixed` elements: any number (bounded by hi) of further items
        remaining = None if hi is None else hi - fixed
        if fixed == 0:
            if remaining == 0:
                tail = lit(b"")
            else:
                more = None if remaining is None else remaining - 1
                tail = opt(seq(item, repeat(seq(sep, item), 0, more)))
        else:
            tail = repeat(seq(sep, item), 0, remaining) if remaining != 0 else lit(b"")
        body = tail
        for i in reversed(range(fixed)):
            lead = elem(i) if i == 0 else seq(sep, elem(i))
            if i >= lo:  # optional from here
                body = opt(seq(lead, body)) if i > 0 else opt(seq(elem(0), body))
            else:
                body = seq(lead, body)
        return seq(lit("["), ws, body, ws, lit("]"))

    def object_node(self, s: dict, ptr: str, depth: int) -> Node:
        props: dict[str, Any] = dict(s.get("properties", {}))
        required = list(s.get("required", []))
        add = s.get("additionalProperties", True)
        for r in required:
            if r not in props:
                props[r] = add
        names_schema = s.get("propertyNames", True)
        key_filter = None
        if names_schema is not True and names_schema != {}:
            # propertyNames: a declared name that fails it can never appear; other keys are
            # JSON strings of its (string) language
            for name in list(props):
                if not self._is_valid(name, [names_schema]):
                    props[name] = False
            key_filter = self.key_language(names_schema, _pointer_join(ptr, "propertyNames"))
            if key_filter is None:
                add = False
        patterns = list((s.get("patternProperties") or {}).items())
        if len(patterns) > MAX_PATTERN_PROPERTIES:
            # too many regions: undeclared keys take any value, the semantic checks the rest
            self.relax("patternProperties", _pointer_join(ptr, "patternProperties"))
            patterns, add = [], True
        members: list[tuple[str, Node]] = []
        for name, sub in props.items():
            # a declared name also meets every patternProperties schema whose pattern it matches
            extra = [sch for pat, sch in patterns if _re_search(pat, name)]
            if extra:
                sub = {"allOf": [sub, *extra]}
            if sub is False:
                if name in required:
                    return NOTHING
                continue
            members.append((name, self.node(sub, _pointer_join(ptr, "properties", name), depth + 1)))
        add_node = None
        if add is not False and not patterns:
            add_node = self.node(add, _pointer_join(ptr, "additionalProperties"), depth + 1)
        extra_kvs = (self.pattern_members(patterns, add, list(props), key_filter, ptr, depth)
                     if patterns else [])
        lo = int(s.get("minProperties", 0))
        hi = s.get("maxProperties")
        if hi is not None and lo > int(hi):
            return NOTHING
        return self.members_node(members, set(required), add_node, names=list(props),
                                 key_filter=key_filter, extra_kvs=extra_kvs,
                                 count=(lo, None if hi is None else int(hi)))

    def pattern_members(self, patterns: list[tuple[str, Any]], add: Any, names: list[str],
                        key_filter: Any, ptr: str, depth: int) -> list[tuple[Any, Node]]:
        """patternProperties: the undeclared keys split by which patterns they match (search
        semantics); each region's value meets all of its patterns' schemas, and the region that
        matches none gets ``additionalProperties``. Returns (key DFA, value node) per region."""
        from grammars.automaton import dfa_of, product

        base = self.undeclared_keys(names, key_filter)
        if base is None:
            return []
        pdfas = [
            dfa_of(self.string_literal_node(_pattern_body(
                pat, "patternProperties", _pointer_join(ptr, "patternProperties", pat))))
            for pat, _ in patterns]
        out: list[tuple[Any, Node]] = []
        for mask in range(1 << len(patterns)):
            key = base
            try:
                for i, d in enumerate(pdfas):
                    key = product(key, d, op="and" if (mask >> i) & 1 else "diff")
            except EmptyLanguageError:
                continue
            chosen = [patterns[i][1] for i in range(len(patterns)) if (mask >> i) & 1]
            if not chosen:
                if add is False:
                    continue
                value = self.node(add, _pointer_join(ptr, "additionalProperties"), depth + 1)
            else:
                sub = chosen[0] if len(chosen) == 1 else {"allOf": chosen}
                value = self.node(sub, _pointer_join(ptr, "patternProperties"), depth + 1)
            if value is not NOTHING:
                out.append((key, value))
        return out

    def key_language(self, names_schema: Any, ptr: str) -> Any:
        """The DFA of the JSON string texts (quotes included) that validate against
        ``names_schema`` (``propertyNames``), or None when no string does."""
        from grammars.automaton import build_dfa

        node = self.node({"allOf": [names_schema, {"type": "string"}]}, ptr)
        try:
            return build_dfa(Rules({**self.rules, "__keys__": node}, "__keys__"))
        except EmptyLanguageError:
            return None

    def undeclared_keys(self, names: list[str], key_filter: Any) -> Any:
        """The DFA of the JSON string texts that are none of ``names`` and are in ``key_filter``
        (a DFA, or None for any), or None when there is no such key."""
        memo_key = (tuple(sorted(names)), id(key_filter))
        if memo_key in self._undeclared:
            return self._undeclared[memo_key][0]
        out = self._undeclared_keys(names, key_filter)
        self._undeclared[memo_key] = (out, key_filter)  # keeps key_filter alive: its id is stable
        return out

    def _undeclared_keys(self, names: list[str], key_filter: Any) -> Any:
        from grammars.automaton import dfa_of, product, without_words

        key = _any_string_dfa()
        try:
            declared = [self.string_literal_node(self.string_chars(k)) for k in names]
            if all(isinstance(d, Lit) for d in declared):  # one spelling per name
                key = without_words(key, [d.data for d in declared])
            elif declared:
                key = product(key, dfa_of(alt(*declared)), op="diff")
            if key_filter is not None:
                key = product(key, key_filter)
        except EmptyLanguageError:
            return None
        return key

    def members_node(
        self,
        members: list[tuple[str, Node]],
        required: set[str],
        add_value: Node | None,
        names: list[str] | None = None,
        key_filter: Any = None,
        extra_kvs: list[tuple[Any, Node]] | None = None,
        count: tuple[int, int | None] = (0, None),
    ) -> Node:
        ws = self.ws
        sep = seq(ws, lit(","), ws)
        colon = seq(ws, lit(":"), ws)
        kvs = [seq(self.string_literal_node(self.string_chars(k)), colon, v) for k, v in members]
        add_kv = None
        if add_value is not None:
            key = self.undeclared_keys(
                names if names is not None else [k for k, _ in members], key_filter)
            if key is not None:
                add_kv = seq(Automaton(key.trans, key.accepting), colon, add_value)
        if extra_kvs:
            kvs_extra = [seq(Automaton(k.trans, k.accepting), colon, v) for k, v in extra_kvs]
            add_kv = alt(*([add_kv] if add_kv is not None else []), *kvs_extra)
        req = [k in required for k, _ in members]
        n = len(kvs)
        if not self.any_order:
            # T(i, first, c): members i.. in schema order, then additional ones, with c members
            # written so far (capped at `cap`: counts past it no longer matter)
            lo_n, hi_n = count
            cap = hi_n if hi_n is not None else lo_n

            def tail(first: bool, c: int) -> Node:
                need = max(0, lo_n - c)
                most = None if hi_n is None else hi_n - c
                if most is not None and most < need:
                    return NOTHING
                if add_kv is None:
                    return lit(b"") if need == 0 else NOTHING
                if not first:
                    return repeat(seq(sep, add_kv), need, most)
                if most == 0:
                    return lit(b"")
                more = repeat(seq(sep, add_kv), max(0, need - 1),
                              None if most is None else most - 1)
                some = seq(add_kv, more)
                return some if need > 0 else opt(some)

            counts = range(cap + 1)
            t = {(first, c): tail(first, c) for first in (True, False) for c in counts}
            for i in reversed(range(n)):
                nxt: dict[tuple[bool, int], Node] = {}
                for c in counts:
                    c2 = min(c + 1, cap)
                    over = hi_n is not None and c + 1 > hi_n
                    take_first = NOTHING if over else seq(kvs[i], t[(False, c2)])
                    take_rest = NOTHING if over else seq(sep, kvs[i], t[(False, c2)])
                    if req[i]:
                        nxt[(True, c)], nxt[(False, c)] = take_first, take_rest
                    else:
                        nxt[(True, c)] = alt(take_first, t[(True, c)])
                        nxt[(False, c)] = alt(take_rest, t[(False, c)])
                t = nxt
            body = t[(True, 0)]
        elif n > MAX_ANY_ORDER_PROPERTIES:
            # too many orders to unroll: any sequence of members, each a declared or additional
            # one; the semantic checks enforce required keys, counts and no repeated key
            self.relax("properties", "")
            member = alt(*kvs, *([add_kv] if add_kv is not None else []))
            body = opt(seq(member, star(seq(sep, member))))
        else:
            memo: dict[tuple[frozenset[int], bool, int], Node] = {}
            rule_id = len(self.rules)
            lo_n, hi_n = count
            cap = hi_n if hi_n is not None else lo_n

            def rest(left: frozenset[int], first: bool, c: int) -> Node:
                # c: members written so far, capped at `cap`
                key = (left, first, c)
                if key in memo:
                    return memo[key]
                name = f"obj{rule_id}:{sorted(left)}:{int(first)}:{c}"
                memo[key] = Ref(name)
                opts: list[Node] = []
                lead = (lambda x: x) if first else (lambda x: seq(sep, x))
                room = hi_n is None or c + 1 <= hi_n
                c2 = min(c + 1, cap)
                if room:
                    for i in sorted(left):
                        opts.append(seq(lead(kvs[i]), rest(left - {i}, False, c2)))
                    if add_kv is not None:
                        opts.append(seq(lead(add_kv), rest(left, False, c2)))
                if not any(req[i] for i in left) and c >= lo_n:
                    opts.append(lit(b""))
                self.rules[name] = alt(*opts)
                return memo[key]

            body = rest(frozenset(range(n)), True, 0)
        return seq(lit("{"), ws, body, ws, lit("}"))


def _typenames(types: set[str]) -> set[str]:
    out = set(types) - {"int", "frac"}
    if "int" in types and "frac" in types:
        out.add("number")
    elif "int" in types:
        out.add("integer")
    elif "frac" in types:
        out.add("number")  # not expressible exactly; only arises from merges of number types
    return out


def read_schema(schema: Any) -> tuple[Any, Any]:
    """(schema as a JSON value, the pydantic model class if one was given)."""
    model = None
    if isinstance(schema, type):
        try:
            from pydantic import BaseModel
        except ImportError:  # pragma: no cover
            BaseModel = None  # type: ignore[assignment]
        if BaseModel is not None and issubclass(schema, BaseModel):
            model = schema
            schema = schema.model_json_schema()
        else:
            raise InvalidSchemaError(f"expected a JSON Schema or a pydantic model, got {schema!r}")
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise InvalidSchemaError(f"not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    if not isinstance(schema, (dict, bool)):
        raise InvalidSchemaError(f"a schema must be an object or a boolean, got {type(schema).__name__}")
    return schema, model


def _lower_deep(c: _Compiler, seconds: float | None) -> Node:
    """Lower the root again on a thread with a deep stack (schemas nested past Python's recursion
    limit); still too deep is an ``UnsupportedSchemaError``."""
    from grammars.automaton import deadline
    from grammars.deep import run_deep

    c.rules.clear()
    c.ref_rules.clear()
    c.inlining.clear()
    c.path_refs.clear()
    c._ancestors = 0

    def run() -> Node:
        with deadline(seconds):
            return c.node(c.root, "")

    try:
        return run_deep(run)
    except RecursionError:
        raise UnsupportedSchemaError("$ref", "", "schema nests too deeply") from None


def schema_to_grammar(
    schema: Any,
    *,
    whitespace: Literal["compact", "flexible"] = "compact",
    property_order: Literal["schema", "any"] = "schema",
    registry: dict[str, Any] | None = None,
    max_any_depth: int | None = 2,
    max_whitespace: int = 8,
    timeout: float | None = LOWERING_TIMEOUT,
) -> Grammar:
    """Lower a JSON Schema to a :class:`Grammar` (see the module docstring for the semantics).

    Lowering past ``timeout`` seconds returns the fallback grammar instead (``grammar.fallback()``:
    any JSON value of the root's types, every keyword checked when its value completes); the
    seconds spent are in ``grammar.lowering_seconds`` (``compile`` counts them against its own
    time limit)."""
    from grammars.automaton import deadline, warm_jit
    from grammars.errors import CompileTimeoutError
    from grammars.json_semantic import SchemaChecks

    warm_jit()  # numba's first compile of the DFA kernels (seconds) is not lowering time
    t0 = time.perf_counter()
    if whitespace not in ("compact", "flexible"):
        raise ValueError(f"whitespace must be 'compact' or 'flexible', got {whitespace!r}")
    if property_order not in ("schema", "any"):
        raise ValueError(f"property_order must be 'schema' or 'any', got {property_order!r}")
    value, model = read_schema(schema)
    c = _Compiler(
        value, whitespace=whitespace, property_order=property_order, registry=registry,
        max_any_depth=max_any_depth, max_whitespace=max_whitespace,
    )
    validator = c.validator_cls(c.root, registry=c.registry)

    def checks(relaxed: list[tuple[str, str]], *, strict: bool = False) -> SchemaChecks:
        return SchemaChecks(
            c.root, validator_cls=c.validator_cls, registry=c.registry,
            lookup=lambda uri: c._lookup(uri, ""), draft=c.draft,
            relaxed=list(dict.fromkeys(relaxed)), documents=[c.root, *(registry or {}).values()],
            strict=strict)

    def finish(g: Grammar) -> Grammar:
        g.source = value
        g.json_schema = value
        g.pydantic_model = model  # type: ignore[attr-defined]
        g.validator = validator  # type: ignore[attr-defined]
        g.lowering_seconds = time.perf_counter() - t0  # type: ignore[attr-defined]
        return g

    def fallback() -> Grammar:
        """A grammar for when this one's automaton is too large: any JSON value of the root's
        types, nested to any depth (a recursive rule: the context-free path; a depth bound would
        refuse valid deep instances), every keyword left to the semantic checks."""
        root_type = c.root.get("type") if isinstance(c.root, dict) else None
        loose = {"type": root_type} if isinstance(root_type, (str, list)) else True
        out = schema_to_grammar(loose, whitespace=whitespace, property_order=property_order,
                                max_any_depth=None, max_whitespace=max_whitespace,
                                timeout=None)
        out.semantic = checks([*c.relaxed, ("*", "")], strict=True)
        out.fallback = None  # type: ignore[attr-defined]
        return finish(out)

    left = None if timeout is None else timeout - (time.perf_counter() - t0)
    try:
        try:
            with deadline(left):
                start = c.node(c.root, "")
        except RecursionError:
            start = _lower_deep(c, None if timeout is None else timeout - (time.perf_counter() - t0))
    except CompileTimeoutError:
        return fallback()
    rules = dict(c.rules)
    rules["start"] = start
    g = Grammar(Rules(rules, "start"), kind="json_schema", source=value)
    if c.relaxed:
        g.semantic = checks(c.relaxed)
    g.fallback = fallback  # type: ignore[attr-defined]
    return finish(g)
