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
half of lowering it). So the metaschemas of drafts 4, 6, 7 and (flat) 2020-12 are also compiled
into plain Python predicates (:func:`_compile`, the handful of keywords metaschemas use): a
schema they accept is valid, and only the others go through jsonschema, which then finds the
error to report. The predicates are sound, not complete: where they cannot decide
(``uniqueItems`` over NaN), they say "not shown valid" and jsonschema decides.
"""

from __future__ import annotations

import math
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
    from jsonschema.exceptions import best_match

    quick = _quick(validator_cls)
    if quick is not None and quick(schema):
        return None
    return best_match(_meta_validator(validator_cls).iter_errors(schema))


Predicate = Callable[[Any], bool]
# ``$ref`` next to other keywords: those are ignored up to draft 7, applied from 2019-09 on
_LEGACY_REF = {"draft4", "draft6", "draft7"}
_ANNOTATIONS = ("default", "deprecated", "description", "title", "id", "$id", "$schema")


@cache
def _quick(validator_cls: Any) -> Predicate | None:
    """A predicate that holds only for schemas valid against ``validator_cls``'s metaschema
    (drafts 4, 6, 7 and 2020-12; None for the others)."""
    import jsonschema

    drafts = {jsonschema.Draft4Validator: "draft4", jsonschema.Draft6Validator: "draft6",
              jsonschema.Draft7Validator: "draft7", jsonschema.Draft202012Validator: "draft2020"}
    draft = drafts.get(validator_cls)
    if draft is None:
        return None
    meta = flat_2020_12_metaschema() if draft == "draft2020" else validator_cls.META_SCHEMA
    return _compile(meta, validator_cls, legacy_ref=draft in _LEGACY_REF)


def _unique_key(x: Any) -> Any:
    """A hashable key under which JSON values collide exactly when jsonschema's ``equal`` holds
    (``1 == 1.0``, ``True != 1``, arrays item by item, objects key by key); None for NaN."""
    if isinstance(x, bool):
        return ("b", x)
    if isinstance(x, (int, float)):
        return None if isinstance(x, float) and math.isnan(x) else ("n", x)
    if isinstance(x, str):
        return ("s", x)
    if x is None:
        return ("z",)
    if isinstance(x, list):
        items = tuple(_unique_key(e) for e in x)
        return None if None in items else ("l", items)
    if isinstance(x, dict):
        members = [(k, _unique_key(v)) for k, v in x.items()]
        return None if any(v is None for _, v in members) else ("d", frozenset(members))
    return None


def _all_unique(x: list) -> bool:
    """True only when the items are pairwise unequal (False also when unsure)."""
    keys = set()
    for e in x:
        k = _unique_key(e)
        if k is None or k in keys:
            return False
        keys.add(k)
    return True


def _compile(meta: dict[str, Any], validator_cls: Any, *, legacy_ref: bool) -> Predicate:
    """Predicates for the subschemas of the (flat) metaschema ``meta`` (the keywords metaschemas
    use, and only those: any other keyword is a ``ValueError``). A predicate that holds implies
    that jsonschema's ``validator_cls`` finds no error."""
    compiled: dict[str, Predicate] = {}
    type_checker = validator_cls.TYPE_CHECKER
    format_checker = validator_cls.FORMAT_CHECKER

    def ref(target: str) -> Predicate:
        if target not in compiled:
            compiled[target] = lambda x: compiled[target](x)  # placeholder while building
            node: Any = meta
            for part in target.lstrip("#").split("/")[1:]:
                node = node[part]
            compiled[target] = build(node)
        return lambda x: compiled[target](x)

    def is_type(t: str) -> Predicate:
        return lambda x: type_checker.is_type(x, t)

    def build(sub: Any) -> Predicate:
        if sub is True:
            return lambda x: True
        if legacy_ref and "$ref" in sub:
            return ref(sub["$ref"])
        checks = [c for c in (keyword(k, v, sub) for k, v in sub.items()) if c is not None]
        if not checks:
            return lambda x: True
        if len(checks) == 1:
            return checks[0]
        return lambda x: all(c(x) for c in checks)

    def keyword(k: str, v: Any, sub: dict[str, Any]) -> Predicate | None:
        if k in _ANNOTATIONS or k in ("$defs", "definitions"):
            return None
        if k == "$ref":
            return ref(v)
        if k == "type":
            kinds = [is_type(t) for t in ([v] if isinstance(v, str) else v)]
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
        if k == "dependencies":
            assert all(isinstance(d, list) for d in v.values()), v
            return lambda x: not isinstance(x, dict) or all(
                all(r in x for r in v[name]) for name in v if name in x)
        if k == "items":
            assert isinstance(v, (dict, bool)), v
            item = build(v)
            return lambda x: not isinstance(x, list) or all(item(e) for e in x)
        if k in ("anyOf", "allOf"):
            parts = [build(a) for a in v]
            if k == "anyOf":
                return lambda x: any(p(x) for p in parts)
            return lambda x: all(p(x) for p in parts)
        if k == "enum":
            assert all(isinstance(e, str) for e in v), v
            options = frozenset(v)
            return lambda x: isinstance(x, str) and x in options
        if k == "minItems":
            return lambda x: not isinstance(x, list) or len(x) >= v
        if k == "uniqueItems":
            assert v is True
            return lambda x: not isinstance(x, list) or _all_unique(x)
        if k in ("minimum", "exclusiveMinimum"):
            number = is_type("number")
            if isinstance(v, bool):  # draft 4: a flag on "minimum"
                assert k == "exclusiveMinimum" and "minimum" in sub
                return None
            strict = k == "exclusiveMinimum" or sub.get("exclusiveMinimum") is True
            if strict:
                return lambda x: not number(x) or x > v
            return lambda x: not number(x) or x >= v
        if k == "pattern":
            rx = re.compile(v)
            return lambda x: not isinstance(x, str) or rx.search(x) is not None
        if k == "format":
            return lambda x: format_checker.conforms(x, v)
        raise ValueError(f"the metaschema keyword {k!r} has no predicate")

    return ref("#")
