"""JSON Schema -> grammar: generated instances accepted, typed errors, options."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import errors as hypothesis_errors
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

import grammars
from grammars import (
    EmptyLanguageError,
    Grammar,
    InvalidSchemaError,
    UnsupportedSchemaError,
)

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
     "age": {"type": "integer", "minimum": 0, "maximum": 130},
     "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}},
     "required": ["name"], "additionalProperties": False},
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}], "items": {"type": "number", "exclusiveMinimum": -2.5, "maximum": 10}, "maxItems": 4},
    {"anyOf": [{"type": "string", "pattern": "^[a-z]+-[0-9]{2}$"}, {"type": "integer", "minimum": 100}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
               {"properties": {"a": {"maximum": 5}, "b": {"type": "string", "minLength": 2}}, "additionalProperties": False}]},
    {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"], "additionalProperties": False}},
     "type": "array", "items": {"$ref": "#/$defs/point"}, "maxItems": 3},
    {"type": "string", "format": "date"},
    {"type": "string", "format": "uuid"},
    {"type": "string", "format": "ipv4"},
    {"oneOf": [{"const": "x"}, {"type": "object", "properties": {"k": {"const": 1}}, "required": ["k"], "additionalProperties": False}]},
    {"type": "object", "properties": {"kind": {"const": "a"}, "v": {"type": "integer"}}, "required": ["kind"], "additionalProperties": {"type": "boolean"}},
]


def _matches(g: Grammar, vocab, text: str) -> bool:
    m = grammars.compile(g, vocab, eager_states=0).matcher()
    return m.accept_bytes(text.encode("utf-8")) and m.is_accepting()


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
@pytest.mark.parametrize("order", ["schema", "any"])
def test_generated_instances_are_accepted(index, order, byte_vocab):
    schema = SCHEMAS[index]
    g = Grammar.from_json_schema(schema, whitespace="flexible", property_order=order)
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(from_schema(copy.deepcopy(schema)))  # hypothesis-jsonschema mutates its argument
    def check(instance):
        # hypothesis-jsonschema predates some 2020-12 keywords (prefixItems): keep only instances
        # that the reference validator accepts
        if not validator.is_valid(instance):
            return
        if order == "schema" and isinstance(instance, dict) and "properties" in json.dumps(schema):
            props = list(schema.get("properties", {}))
            instance = dict(sorted(instance.items(), key=lambda kv: props.index(kv[0]) if kv[0] in props else len(props)))
        text = json.dumps(instance, separators=(",", ":"), ensure_ascii=False)
        if "e" in text.lower() and isinstance(instance, (int, float)) and not isinstance(instance, bool):
            return  # bounded numbers are written without exponents (documented restriction)
        assert _matches(g, byte_vocab, text), text
        pretty = json.dumps(instance, indent=1, ensure_ascii=False)
        if order == "schema" and pretty.count("\n") < 6:
            assert _matches(g, byte_vocab, pretty), pretty

    check()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.text(max_size=12), st.integers(-10**6, 10**6))
def test_random_texts_agree_with_jsonschema(byte_vocab, s, n):
    import jsonschema

    schema = SCHEMAS[0]
    g = Grammar.from_json_schema(schema)
    for value in ({"name": s, "age": n}, {"name": s}, {"age": n}):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        assert _matches(g, byte_vocab, text) == jsonschema.Draft202012Validator(schema).is_valid(value)


def test_property_order_and_required(byte_vocab):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"], "additionalProperties": False}
    ordered = Grammar.from_json_schema(schema)
    anyorder = Grammar.from_json_schema(schema, property_order="any")
    assert _matches(ordered, byte_vocab, '{"a":1,"b":2}') and not _matches(ordered, byte_vocab, '{"b":2,"a":1}')
    assert _matches(anyorder, byte_vocab, '{"b":2,"a":1}')
    for bad in ('{"a":1}', '{"a":1,"a":2,"b":3}', '{"a":1,"b":2,"c":3}', '{"a":1,"b":2,}'):
        assert not _matches(anyorder, byte_vocab, bad), bad


def test_whitespace_modes(byte_vocab):
    schema = {"type": "array", "items": {"type": "integer"}}
    compact = Grammar.from_json_schema(schema)
    flexible = Grammar.from_json_schema(schema, whitespace="flexible")
    assert _matches(compact, byte_vocab, "[1,2]") and not _matches(compact, byte_vocab, "[1, 2]")
    assert _matches(flexible, byte_vocab, "[ 1 ,\n  2 ]")
    assert not _matches(flexible, byte_vocab, "[1," + " " * 40 + "2]")  # bounded


def test_unsupported_regex_names_keyword_and_pointer():
    # a key pattern splits the keys into regions: it must be a regular language
    with pytest.raises(UnsupportedSchemaError) as e:
        grammars.compile(Grammar.from_json_schema({"patternProperties": {"(a)\\1": {}}}),
                         grammars.Vocabulary.byte_level())
    assert e.value.keyword == "patternProperties"
    assert e.value.pointer == "/patternProperties/(a)\\1"
    assert "patternProperties" in str(e.value)


@pytest.mark.parametrize("pattern", ["^(a+)-\\1$", "^(?!.*://).+$", "^(x($|/))*$"])
def test_non_regular_string_patterns_are_checked_when_the_string_completes(pattern, byte_vocab):
    import re

    g = Grammar.from_json_schema({"type": "string", "pattern": pattern})
    assert ("pattern", "/pattern") in g.semantic.relaxed
    c = grammars.compile(g, byte_vocab, cache=False)
    for text in ("aa-aa", "aa-a", "http://x", "x.org", "x/x", "x/x/", "", "xx"):
        m = c.matcher()
        ok = m.accept_bytes(json.dumps(text).encode()) and m.is_accepting()
        assert ok == (re.search(pattern, text) is not None), text


@pytest.mark.parametrize(
    "schema",
    [{"type": "strin"}, {"minLength": -1}, {"properties": []}, {"required": "a"}, "{not json"],
)
def test_invalid_schemas(schema):
    with pytest.raises(InvalidSchemaError):
        Grammar.from_json_schema(schema)


@pytest.mark.parametrize(
    "schema",
    [{"type": "string", "minLength": 5, "maxLength": 2}, {"enum": []} if False else {"enum": [1], "type": "string"},
     {"type": "integer", "minimum": 5, "maximum": 4}, False, {"allOf": [{"type": "string"}, {"type": "integer"}]}],
)
def test_empty_languages(schema, byte_vocab):
    with pytest.raises(EmptyLanguageError):
        grammars.compile(Grammar.from_json_schema(schema), byte_vocab)


def test_pydantic_model_schema(byte_vocab):
    from pydantic import BaseModel, Field

    class Item(BaseModel):
        name: str = Field(max_length=10)
        qty: int = Field(ge=1, le=99)
        tags: list[str] = []

    g = Grammar.from_json_schema(Item)
    assert _matches(g, byte_vocab, '{"name":"pen","qty":3,"tags":["x"]}')
    assert not _matches(g, byte_vocab, '{"name":"pen","qty":0}')


DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "jsonschemabench-dev"


def _dev_schemas(limit: int):
    out = []
    for subset in ("Glaiveai2K",):
        for p in sorted((DEV / subset).glob("*.json"))[:limit]:
            out.append(pytest.param(p, id=f"{subset}/{p.stem}"))
    return out


@pytest.mark.parametrize("path", _dev_schemas(12))
def test_dev_slice_instances_are_accepted(path, byte_vocab):
    """Instances hypothesis-jsonschema draws from real schemas, kept when jsonschema validates
    them, are accepted (flexible whitespace; object keys put in schema order, additional ones
    last, since property_order="any" costs 2^n states on the regular path)."""
    import jsonschema

    schema = json.loads(path.read_text())
    try:
        g = Grammar.from_json_schema(schema, whitespace="flexible")
        compiled = grammars.compile(g, byte_vocab, eager_states=0)
    except grammars.GrammarError as e:
        pytest.skip(f"typed error: {e}")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    try:
        strategy = from_schema(copy.deepcopy(schema))
    except Exception as e:  # noqa: BLE001 - hypothesis-jsonschema cannot handle every schema
        pytest.skip(f"hypothesis-jsonschema: {type(e).__name__}")
    accepted = []

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(strategy)
    def check(instance):
        if not validator.is_valid(instance):
            return
        if _has_exponent_number(instance) or _depth(instance) > 3:
            return  # documented restrictions: no exponents in bounded numbers; bounded nesting
        text = json.dumps(_schema_order(instance, schema), separators=(",", ":"), ensure_ascii=False)
        m = compiled.matcher()
        assert m.accept_bytes(text.encode("utf-8")) and m.is_accepting(), text
        accepted.append(text)

    try:
        check()
    except hypothesis_errors.Unsatisfiable:
        pytest.skip("hypothesis-jsonschema found no instance")


def _has_exponent_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return "e" in repr(value) or "inf" in repr(value)
    if isinstance(value, dict):
        return any(_has_exponent_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_exponent_number(v) for v in value)
    return False


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _schema_order(value, schema):
    """Reorder object keys as the schema's ``properties`` list them (additional keys last)."""
    if isinstance(value, dict) and isinstance(schema, dict):
        props = schema.get("properties", {})
        order = list(props)
        keys = sorted(value, key=lambda k: order.index(k) if k in order else len(order))
        return {k: _schema_order(value[k], props.get(k, {})) for k in keys}
    if isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        return [_schema_order(v, schema["items"]) for v in value]
    return value


@pytest.mark.parametrize("m", [2, 3, 7, 12, 100, 0.5, 1.5, 0.01, 0.0001, 1e-8, 2.5])
def test_multiple_of_is_exact_in_decimal_arithmetic(m, byte_vocab):
    """Every plain decimal text is accepted exactly when its value is a multiple of m (Decimal
    arithmetic); exponents are never written; integer type keeps its zero-fraction texts."""
    import random
    from decimal import Decimal

    dm = Decimal(repr(m)) if isinstance(m, float) else Decimal(m)
    number = grammars.compile(Grammar.from_json_schema({"type": "number", "multipleOf": m}),
                              byte_vocab)
    integer = grammars.compile(
        Grammar.from_json_schema({"type": "integer", "multipleOf": m, "minimum": -500}),
        byte_vocab)
    rng = random.Random(1)

    def accepts(c, text):
        mm = c.matcher()
        return mm.accept_bytes(text.encode()) and mm.is_accepting()

    for _ in range(400):
        whole = str(rng.randint(0, 10 ** rng.randint(0, 5)))
        frac = rng.choice(["", "." + str(rng.randint(0, 10 ** rng.randint(1, 5)))])
        text = rng.choice(["", "-"]) + whole + frac
        v = Decimal(text)
        assert accepts(number, text) == (v % dm == 0), text
        assert accepts(integer, text) == (v % dm == 0 and v == v.to_integral_value()
                                          and v >= -500), text
    for k in range(-30, 30):
        assert accepts(number, format(dm * k, "f"))
    assert not accepts(number, "1e3")


def test_multiple_of_merges_and_refuses_huge_automata(byte_vocab):
    c = grammars.compile(Grammar.from_json_schema({"allOf": [{"multipleOf": 4}, {"multipleOf": 6}]}),
                         byte_vocab)
    for text, ok in (("12", True), ("24", True), ("8", False), ("18", False), ('"s"', True)):
        m = c.matcher()
        assert (m.accept_bytes(text.encode()) and m.is_accepting()) == ok, text
    # a divisor whose automaton is too large: the grammar drops it, the checks enforce it
    g = Grammar.from_json_schema({"properties": {"x": {"multipleOf": 0.123456789}}})
    assert ("multipleOf", "/properties/x/multipleOf") in g.semantic.relaxed


@pytest.mark.parametrize(
    ("schema", "cases"),
    [
        ({"propertyNames": {"maxLength": 3}},
         [({}, True), ({"abc": 1}, True), ({"abcd": 1}, False), ({"a": 1, "bb": [2]}, True)]),
        ({"properties": {"long_name": {}, "id": {"type": "integer"}},
          "propertyNames": {"pattern": "^[a-z]{1,4}$"}},
         [({"long_name": 1}, False), ({"id": 3, "ok": []}, True), ({"OK": 1}, False),
          ({"id": "x"}, False)]),
        ({"propertyNames": False}, [({}, True), ({"a": 1}, False)]),
        ({"propertyNames": {"const": "foo"}}, [({"foo": 1}, True), ({"bar": 1}, False)]),
        ({"propertyNames": {"type": "number"}}, [({}, True), ({"1": 1}, False)]),
        ({"allOf": [{"propertyNames": {"maxLength": 2}}, {"propertyNames": {"pattern": "^x"}}]},
         [({"xy": 1}, True), ({"xyz": 1}, False), ({"ab": 1}, False)]),
    ],
)
def test_property_names_agree_with_jsonschema(schema, cases, byte_vocab):
    import jsonschema

    c = grammars.compile(Grammar.from_json_schema(schema), byte_vocab)
    for value, ok in cases:
        assert jsonschema.Draft202012Validator(schema).is_valid(value) == ok, value
        m = c.matcher()
        text = json.dumps(value, separators=(",", ":"))
        assert (m.accept_bytes(text.encode()) and m.is_accepting()) == ok, text


def test_property_names_with_a_required_name_it_rejects_is_empty():
    with pytest.raises(EmptyLanguageError):
        grammars.compile(Grammar.from_json_schema(
            {"type": "object", "required": ["toolong"], "propertyNames": {"maxLength": 3}}),
            grammars.Vocabulary.byte_level())


PATTERN_SCHEMA = {
    "properties": {"ab": {"maximum": 7}, "name": {"type": "string"}},
    "patternProperties": {"^a": {"type": "integer"}, "b$": {"minimum": 5}},
    "additionalProperties": {"type": "boolean"},
}


def test_pattern_properties_agree_with_jsonschema(byte_vocab):
    """Overlapping patterns (a key matching both meets both schemas), declared properties that
    also match patterns, additionalProperties for the rest: every case as jsonschema decides."""
    import itertools

    import jsonschema

    c = grammars.compile(Grammar.from_json_schema(PATTERN_SCHEMA, property_order="any"),
                         byte_vocab)
    validator = jsonschema.Draft202012Validator(PATTERN_SCHEMA)
    keys = ["a1", "xb", "axb", "ab", "name", "zz"]
    values = [3, 6, 4.5, 8, "s", True]
    seen = {True: 0, False: 0}
    for k1, k2 in itertools.combinations(keys, 2):
        for v1, v2 in itertools.product(values, repeat=2):
            doc = {k1: v1, k2: v2}
            ok = validator.is_valid(doc)
            m = c.matcher()
            text = json.dumps(doc, separators=(",", ":"))
            assert (m.accept_bytes(text.encode()) and m.is_accepting()) == ok, text
            seen[ok] += 1
    assert seen[True] > 20 and seen[False] > 20



@pytest.mark.parametrize("order", ["schema", "any"])
@pytest.mark.parametrize(
    "schema",
    [{"minProperties": 2}, {"maxProperties": 1},
     {"properties": {"a": {}, "b": {}, "c": {}}, "minProperties": 2, "maxProperties": 2},
     {"properties": {"a": {}, "b": {}}, "additionalProperties": False, "minProperties": 1},
     {"properties": {"a": {}}, "required": ["a"], "maxProperties": 2},
     {"patternProperties": {"^x": {"type": "integer"}}, "maxProperties": 2}],
)
def test_min_max_properties_agree_with_jsonschema(schema, order, byte_vocab):
    import jsonschema

    c = grammars.compile(Grammar.from_json_schema(schema, property_order=order), byte_vocab)
    validator = jsonschema.Draft202012Validator(schema)
    declared = list(schema.get("properties", {}))
    docs = [{}, {"a": 1}, {"b": 1}, {"a": 1, "b": 2}, {"a": 1, "c": 2}, {"x": 1},
            {"x": 1, "y": 2}, {"a": 1, "b": 2, "c": 3}, {"a": 1, "x": 2, "y": 3}, {"x1": 1, "x2": 2},
            {"x1": 1, "x2": 2, "x3": 3}]
    for doc in docs:
        keys = list(doc)
        if order == "schema" and keys != sorted(
                keys, key=lambda k: (k not in declared, declared.index(k) if k in declared else 0)):
            continue  # schema order writes declared properties first, in the schema's order
        text = json.dumps(doc, separators=(",", ":"))
        m = c.matcher()
        assert (m.accept_bytes(text.encode()) and m.is_accepting()) == validator.is_valid(doc), text


def test_min_properties_above_max_is_empty():
    with pytest.raises(EmptyLanguageError):
        grammars.compile(Grammar.from_json_schema(
            {"type": "object", "minProperties": 3, "maxProperties": 2}),
            grammars.Vocabulary.byte_level())
