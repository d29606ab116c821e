"""Checking a JSON Schema against its metaschema (before compiling it), fast.

jsonschema's ``check_schema`` for draft 2020-12 validates through the split metaschema: seven
vocabulary metaschemas joined by ``allOf`` whose subschemas point back with ``$dynamicRef``, so
every subschema of the user's schema costs seven ``$ref`` resolutions and a dynamic-scope
lookup: on 300 dev-slice schemas, checked as 2020-12, 20.2 ms per schema on average against
3.4 ms for the check below. Validating against the 2020-12 metaschema
itself, the dynamic anchor ``#meta`` always resolves to the root, so the same metaschema can be
written flat: one object whose ``properties`` are the union of the vocabularies' (their names
are disjoint), ``$dynamicRef: "#meta"`` replaced by ``$ref: "#"``, the ``$defs`` merged. It
accepts exactly the schemas the split one accepts (tests/grammars/test_metaschema.py compares
both on the JSON Schema Test Suite's schemas, 200 dev-slice schemas and broken copies of them).
Other drafts use their metaschema as jsonschema's ``check_schema`` does.

Most schemas are valid, and jsonschema's validator still costs ~1 ms on a typical one (about
half of lowering it). So the flat metaschema is also compiled into plain Python predicates
(:func:`_compile`, the handful of keywords it uses): a schema they accept is valid, and only the
others go through jsonschema, which then finds the error to report. The predicates are sound,
not complete: where they cannot decide (``uniqueItems`` over non-strings), they say "not
shown valid" and jsonschema decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["first_metaschema_error", "flat_2020_12_metaschema"]

_DROP = ("$id", "$schema", "$dynamicAnchor", "$vocabulary", "$comment", "title")
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMAS = ("additionalProperties", "items", "contains", "not", "propertyNames", "if", "then",
            "else", "unevaluatedItems", "unevaluatedProperties", "contentSchema")
_DATA = ("type", "default", "deprecated", "format", "pattern", "minimum", "exclusiveMinimum",
         "minItems", "uniqueItems", "const", "enum", "examples")


@cache
def flat_2020_12_metaschema() -> dict[str, Any]:
    """The draft 2020-12 metaschema as one object (see the module docstring)."""
    import jsonschema
    from jsonschema_specifications import REGISTRY

    defs: dict[str, Any] = {}

    def flat(x: Any) -> Any:
        """A (sub)schema of the metaschema, flattened: keywords are told from data by
        position (under ``properties`` the keys are names, under ``default`` data)."""
        if not isinstance(x, dict):
            return x
        out: dict[str, Any] = {}
        for k, v in x.items():
            if k == "$dynamicRef":
                assert v == "#meta", v
                out["$ref"] = "#"
            elif k == "$ref":
                # "#/$defs/x" of a vocabulary or "meta/validation#/$defs/x" of the root: every
                # $defs entry ends up in the flat root
                frag = v.split("#", 1)[1]
                assert frag.startswith("/$defs/"), v
                out["$ref"] = "#" + frag
            elif k == "$defs":
                for name, sub in v.items():
                    assert name not in defs, name
                    defs[name] = flat(sub)
            elif k in _DROP:
                continue
            elif k in _SCHEMA_MAPS:
                out[k] = {name: flat(sub) for name, sub in v.items()}
            elif k in _SCHEMA_LISTS:
                out[k] = [flat(sub) for sub in v]
            elif k in _SCHEMAS:
                out[k] = flat(v)
            else:
                assert k in _DATA, k
                out[k] = v
        return out

    root = jsonschema.Draft202012Validator.META_SCHEMA
    base = root["$id"].rsplit("/", 1)[0] + "/"
    properties: dict[str, Any] = {}
    parts = [REGISTRY.contents(base + ref["$ref"]) for ref in root["allOf"]] + [
        {k: v for k, v in root.items() if k != "allOf"}]
    for part in parts:
        part = flat(part)
        assert set(part) <= {"type", "properties"}, sorted(part)
        assert part.get("type", ["object", "boolean"]) == ["object", "boolean"], part["type"]
        for name, sub in part.get("properties", {}).items():
            assert name not in properties, name
            properties[name] = sub
    return {"type": ["object", "boolean"], "properties": properties, "$defs": defs}


@cache
def _meta_validator(validator_cls: Any) -> Any:
    import jsonschema

    if validator_cls is jsonschema.Draft202012Validator:
        meta = flat_2020_12_metaschema()
        return jsonschema.Draft202012Validator(meta, format_checker=validator_cls.FORMAT_CHECKER)
    meta = validator_cls.META_SCHEMA
    check_cls = jsonschema.validators.validator_for(meta, default=validator_cls)
    return check_cls(meta, format_checker=validator_cls.FORMAT_CHECKER)


def first_metaschema_error(schema: Any, validator_cls: Any) -> Any:
    """The error jsonschema's ``validator_cls.check_schema(schema)`` would raise (its best
    match), or None when ``schema`` is valid against its metaschema."""
    import jsonschema
    from jsonschema.exceptions import best_match

    if validator_cls is jsonschema.Draft202012Validator and _quick_2020_12()(schema):
        return None
    return best_match(_meta_validator(validator_cls).iter_errors(schema))


Predicate = Callable[[Any], bool]
_TYPES: dict[str, Predicate] = {  # jsonschema's draft 2020-12 type checker, for JSON values
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool))
    or (isinstance(x, float) and x.is_integer()),
}
_ANNOTATIONS = ("default", "deprecated")


@cache
def _quick_2020_12() -> Predicate:
    """A predicate that holds only for schemas valid against the draft 2020-12 metaschema."""
    import jsonschema

    return _compile(flat_2020_12_metaschema(), jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _compile(meta: dict[str, Any], format_checker: Any) -> Predicate:
    """Predicates for the subschemas of the flat metaschema ``meta`` (the keywords it uses, and
    only those: any other keyword is a ``ValueError``). A predicate that holds implies that
    jsonschema finds no error."""
    compiled: dict[str, Predicate] = {}

    def ref(target: str) -> Predicate:
        return lambda x: compiled[target](x)

    def build(sub: Any) -> Predicate:
        if sub is True:
            return lambda x: True
        checks: list[Predicate] = []
        for k, v in sub.items():
            checks.append(keyword(k, v, sub))
        checks = [c for c in checks if c is not None]
        if len(checks) == 1:
            return checks[0]
        return lambda x: all(c(x) for c in checks)

    def keyword(k: str, v: Any, sub: dict[str, Any]) -> Predicate | None:  # noqa: C901, PLR0911
        if k in _ANNOTATIONS or k == "$defs":
            return None
        if k == "$ref":
            return ref(v)
        if k == "type":
            kinds = [_TYPES[t] for t in ([v] if isinstance(v, str) else v)]
            return lambda x: any(t(x) for t in kinds)
        if k == "properties":
            props = {name: build(p) for name, p in v.items()}
            return lambda x: not isinstance(x, dict) or all(
                props[name](val) for name, val in x.items() if name in props)
        if k == "additionalProperties":
            assert "patternProperties" not in sub
            declared = set(sub.get("properties", ()))
            rest = build(v)
            return lambda x: not isinstance(x, dict) or all(
                rest(val) for name, val in x.items() if name not in declared)
        if k == "propertyNames":
            names = build(v)
            return lambda x: not isinstance(x, dict) or all(names(name) for name in x)
        if k == "items":
            item = build(v)
            return lambda x: not isinstance(x, list) or all(item(e) for e in x)
        if k == "anyOf":
            alts = [build(a) for a in v]
            return lambda x: any(a(x) for a in alts)
        if k == "enum":
            assert all(isinstance(e, str) for e in v), v
            options = frozenset(v)
            return lambda x: isinstance(x, str) and x in options
        if k == "minItems":
            return lambda x: not isinstance(x, list) or len(x) >= v
        if k == "uniqueItems":
            assert v is True
            # sound only for strings: other items are left to jsonschema
            return lambda x: not isinstance(x, list) or (
                all(isinstance(e, str) for e in x) and len(set(x)) == len(x))
        if k in ("minimum", "exclusiveMinimum"):
            above = (lambda x: x >= v) if k == "minimum" else (lambda x: x > v)
            return lambda x: not _TYPES["number"](x) or above(x)
        if k == "pattern":
            rx = re.compile(v)
            return lambda x: not isinstance(x, str) or rx.search(x) is not None
        if k == "format":
            return lambda x: format_checker.conforms(x, v)
        raise ValueError(f"the metaschema keyword {k!r} has no predicate")

    for name, sub in meta.get("$defs", {}).items():
        compiled[f"#/$defs/{name}"] = build(sub)
    compiled["#"] = build(meta)
    return compiled["#"]
