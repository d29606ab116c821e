"""The flat draft 2020-12 metaschema (grammars.metaschema), and the predicates compiled from it,
decide exactly as jsonschema's own check_schema: on every schema of the JSON Schema Test Suite
(draft 2020-12), on the dev-slice schemas, and on broken copies of them."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import jsonschema
import pytest

from grammars.metaschema import _quick, first_metaschema_error

V = jsonschema.Draft202012Validator
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def suite_schemas() -> list:
    out = []
    for path in sorted((DATA / "json-schema-test-suite" / "tests" / "draft2020-12").glob("*.json")):
        out.extend(group["schema"] for group in json.loads(path.read_text()))
    return out


def dev_schemas(n: int) -> list:
    paths = sorted((DATA / "jsonschemabench-dev").glob("*/*.json"))
    random.Random(0).shuffle(paths)
    return [json.loads(p.read_text()) for p in paths[:n]]


BREAKS = [
    ("type", "strnig"), ("minLength", -1), ("maxItems", 1.5), ("properties", 3),
    ("required", "x"), ("required", [1]), ("enum", {}), ("items", 7), ("$ref", 5),
    ("pattern", "(unclosed"), ("anyOf", []), ("$defs", []), ("uniqueItems", "yes"),
    ("definitions", {"a": 3}), ("dependencies", {"a": 3}), ("$anchor", "1bad"),
    ("minContains", -2), ("dependentRequired", {"a": [1]}), ("format", 3),
]


def broken(schema, rng: random.Random):
    """A copy with one keyword of one subschema (found by walking) set to a bad value."""
    s = copy.deepcopy(schema)
    subs = []

    def walk(x):
        if isinstance(x, dict):
            subs.append(x)
            for k, v in x.items():
                if k in ("properties", "$defs", "definitions", "patternProperties") and isinstance(v, dict):
                    for sub in v.values():
                        walk(sub)
                elif isinstance(v, dict):
                    walk(v)
                elif isinstance(v, list):
                    for sub in v:
                        walk(sub)

    walk(s)
    if not subs:
        return None
    k, v = rng.choice(BREAKS)
    rng.choice(subs)[k] = v
    return s


def same_verdict(schema, V=V) -> None:
    try:
        V.check_schema(schema)
        want = None
    except jsonschema.SchemaError as e:
        want = e
    got = first_metaschema_error(schema, V)
    assert (got is None) == (want is None), (schema, got, want)
    # the fast predicates decide every schema here: valid ones without jsonschema, and never
    # an invalid one as valid
    assert _quick(V)(schema) == (want is None), (V.__name__, schema)
    if want is not None:
        # the error reported is one of those jsonschema finds (which one is "best" may differ:
        # jsonschema ranks errors partly by how deep in the metaschema they arise)
        meta = jsonschema.validators.validator_for(V.META_SCHEMA, default=V)(
            V.META_SCHEMA, format_checker=V.FORMAT_CHECKER)
        found = set()
        stack = list(meta.iter_errors(schema))
        while stack:
            e = stack.pop()
            found.add((tuple(e.absolute_path), e.message))
            stack.extend(e.context or ())
        assert (tuple(got.absolute_path), got.message) in found, (got, sorted(found)[:5])


@pytest.mark.parametrize("source", ["suite", "dev"])
@pytest.mark.parametrize("draft", [V, jsonschema.Draft7Validator, jsonschema.Draft6Validator,
                                   jsonschema.Draft4Validator])
def test_flat_metaschema_agrees_with_check_schema(source, draft):
    schemas = suite_schemas() if source == "suite" else dev_schemas(200 if draft is V else 100)
    rng = random.Random(1)
    invalid = 0
    for schema in schemas:
        same_verdict(schema, draft)
        b = broken(schema, rng)
        if b is not None:
            same_verdict(b, draft)
            invalid += first_metaschema_error(b, draft) is not None
    assert invalid > len(schemas) // 3  # the broken copies did exercise the error path


@pytest.mark.parametrize("schema", [
    {"type": ["string", "string"]}, {"type": []}, {"required": ["a", "a"]}, {"minItems": 2.0},
    {"minItems": True}, {"maximum": True}, {"multipleOf": 0}, {"enum": "x"}, {"$anchor": "a b"},
    {"$id": "x#y"}, {"pattern": "[a-"}, {"patternProperties": {"(": {}}}, {"items": {"type": 1}},
    {"dependencies": {"a": ["b", 1]}}, {"dependencies": {"a": {"minLength": -1}}},
    {"$vocabulary": {"u": 1}}, True, False, {"not": {"not": {"allOf": [{"type": "nul"}]}}},
    {"$defs": {"a": {"$defs": {"b": {"maxLength": 1.5}}}}}, {"if": {"const": 1}, "then": 2},
    {"enum": [1, 1.0]}, {"enum": [1, 1.5]}, {"enum": [1, True]}, {"enum": [{"a": 1}, {"a": 1.0}]},
    {"enum": [[1, True], [1, 1]]}, {"enum": [{"a": [0]}, {"a": [False]}]}, {"enum": [[1], [1]]}, {"enum": [None, 0, False]},
    {"exclusiveMinimum": True}, {"exclusiveMinimum": True, "minimum": 1}, {"maximum": 1.5},
    {"definitions": {"a": {"required": []}}}, {"items": [{}, {"type": "string"}]},
    {"$ref": "#/definitions/a", "minLength": -1}, {"additionalItems": False}, {"const": {}},
])
@pytest.mark.parametrize("draft", [V, jsonschema.Draft7Validator, jsonschema.Draft4Validator])
def test_quick_predicates_on_edge_cases(schema, draft):
    """Keyword values at the edges of the metaschemas' types (integers as floats, booleans as
    numbers, duplicates, bad patterns, draft 4's boolean exclusiveMinimum)."""
    same_verdict(schema, draft)
