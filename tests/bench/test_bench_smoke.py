"""Smoke tests of the benchmarks' core functions (bench/masks.py, bench/e2e.py, bench/peers.py).

The core tests use our engine with the byte-level vocabulary and a toy random-logits model, so they
need neither the model nor a peer engine (a few seconds). The peer tests build each peer on the
embedded model's tokenizer; they are marked ``model`` and skipped when the peer (or the model
package) is not installed.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench import masks, peers
from bench.e2e import GreedyRun, generate_greedy, run_lockstep
from bench.e2e import summarize as e2e_summarize

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age"],
}
FINITE = {  # a finite language: random logits must reach EOS
    "type": "object",
    "properties": {"a": {"type": "boolean"}, "b": {"enum": ["x", "yy", None]}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


def _finite_positive(xs) -> bool:
    return all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in xs)


@pytest.fixture(scope="module")
def ours_bytes():
    from grammars import Vocabulary

    vocab = Vocabulary.byte_level()
    return peers.make_engine("ours", None, vocab=vocab), vocab


def test_instance_generation_is_valid_and_ordered():
    import jsonschema

    text, reason = masks.generate_instance(SCHEMA, seed=0, n_examples=6)
    assert text is not None, reason
    value = json.loads(text)
    jsonschema.validate(value, SCHEMA)
    assert text == masks.serialize(value)  # compact
    order = list(SCHEMA["properties"])
    assert [order.index(k) for k in value] == sorted(order.index(k) for k in value)
    again, _ = masks.generate_instance(SCHEMA, seed=0, n_examples=6)
    assert again == text  # deterministic


def test_strictify_closes_objects_only():
    s = masks.strictify({"type": "object", "properties": {"x": {}, "y": {"type": "array"}},
                         "allOf": [{"properties": {"z": {"type": "string"}}}]})
    assert "additionalProperties" not in s  # allOf: left open
    assert s["properties"]["x"] == {"type": ["string", "number", "boolean", "null"]}
    assert "items" in s["properties"]["y"]
    s = masks.strictify({"type": "object", "properties": {"x": {"type": "string"}}})
    assert s["additionalProperties"] is False


def test_masks_measure_ours_byte_level(ours_bytes):
    engine, vocab = ours_bytes
    text, reason = masks.generate_instance(SCHEMA, seed=1, n_examples=6)
    assert text is not None, reason
    tokens = list(text.encode("utf-8"))
    out = masks.measure(engine, SCHEMA, tokens, vocab.eos_token_id, vocab.size)
    assert out["status"] == "ok", out
    assert out["n_tokens"] == len(tokens)
    assert len(out["fill_us"]) == len(tokens) + 1  # every token, then the EOS step
    assert _finite_positive([float(x) for x in out["fill_us"]])
    assert _finite_positive([out["compile_ms"], out["first_fill_us"]])

    # a token the grammar forbids is reported, not raised
    bad = masks.measure(engine, SCHEMA, list(b'{"age":1}'), vocab.eos_token_id, vocab.size)
    assert bad["status"] == "rejected"

    record = {"subset": "t", "name": "s", "instance": text, "n_tokens": len(tokens),
              "engines": {"ours": out}}
    summary = masks.summarize([record], ["ours"])
    assert summary["n_common"] == 1
    fill = summary["engines"]["ours"]["fill_us"]
    assert _finite_positive([fill["mean"], fill["median"], fill["p99"]])
    md = masks.render_markdown({"config": {
        "engines": ["ours"], "date": "-", "machine": "-", "vocab_size": vocab.size, "subsets": ["t"],
        "limit": 1, "seed": 0, "compile_timeout": 1, "versions": {}}, "summary": summary,
        "schemas": [record]})
    assert "| ours |" in md


def test_masks_repeated_compiles_take_turns_and_keep_the_median(ours_bytes):
    import argparse

    engine, vocab = ours_bytes
    only = masks.measure(engine, SCHEMA, [1, 2], vocab.eos_token_id, vocab.size, walk=False)
    assert only["status"] == "ok" and only["fill_us"] == [] and only["compile_ms"] > 0

    calls: list[str] = []
    times = iter([5.0, 1.0, 9.0, 2.0])

    class FakeWorker:
        def call(self, kind, e, schema, tokens, walk, *, timeout):
            assert kind == "measure" and walk is False
            calls.append(e)
            return "ok", {"status": "ok", "compile_ms": next(times)}

    rec = {"engines": {"ours": {"status": "ok", "compile_ms": 4.0},
                       "peer": {"status": "ok", "compile_ms": 3.0},
                       "broken": {"status": "compile_error", "compile_ms": 0.1}}}
    masks._repeat_compiles(FakeWorker(), rec, SCHEMA, [1], ["ours", "peer", "broken"],
                           argparse.Namespace(repeats=3, compile_timeout=1.0))
    assert calls == ["peer", "ours", "ours", "peer"]  # rotated each round; failures not retried
    ours, peer = rec["engines"]["ours"], rec["engines"]["peer"]
    assert ours["compile_runs_ms"] == [4.0, 1.0, 9.0] and ours["compile_ms"] == 4.0
    assert peer["compile_runs_ms"] == [3.0, 5.0, 2.0] and peer["compile_ms"] == 3.0
    assert ours["first_compile_ms"] == 4.0 and "compile_runs_ms" not in rec["engines"]["broken"]


def test_e2e_loop_toy_model(ours_bytes):
    import jsonschema
    import torch

    engine, vocab = ours_bytes
    gen = torch.Generator().manual_seed(0)

    def logits(*_):
        return torch.randn(1, vocab.size, generator=gen)

    def prefill(ids):
        return logits(), None

    factory = engine.compile(FINITE)
    out = generate_greedy(prefill, logits, [1, 2, 3], max_tokens=64, eos_token_ids=vocab.eos_token_ids,
                          vocab_size=vocab.size, matcher=factory())
    assert out["finish"] == "stop", out
    jsonschema.validate(json.loads(bytes(out["tokens"])), FINITE)
    assert _finite_positive(out["step_ms"]) and len(out["step_ms"]) == len(out["tokens"]) + 1

    # lockstep: an unconstrained run (EOS suppressed: always max_tokens) next to a constrained one
    runs = [GreedyRun(prefill, logits, [1], max_tokens=8, eos_token_ids=vocab.eos_token_ids,
                      vocab_size=vocab.size, matcher=m) for m in (None, factory())]
    run_lockstep(runs)
    free, constrained = (r.result() for r in runs)
    assert free["finish"] == "length" and len(free["tokens"]) == 8
    assert vocab.eos_token_id not in free["tokens"]
    assert constrained["finish"] in ("stop", "length")

    record = {"schema": "s", "runs": {"unconstrained": [free], "ours": [out]}}
    s = e2e_summarize([record], ["unconstrained", "ours"])
    assert s["modes"]["unconstrained"]["ratio_to_unconstrained"] == pytest.approx(1.0)
    m = s["modes"]["ours"]
    assert _finite_positive([m["ms_per_token"], m["ratio_to_unconstrained"], m["paired_ratio"],
                             m["overhead_ratio"], m["mask_ms_per_token"]])


@pytest.mark.model
@pytest.mark.parametrize("name", ["ours", "ours-strict", "xgrammar", "xgrammar-strict", "llguidance",
                                  "outlines"])
def test_engine_adapter_real_tokenizer(name, smollm2_tokenizer, smollm2_vocab):
    if name != "ours":
        pytest.importorskip(peers._PEER_MODULES[name])
    engine = peers.make_engine(name, smollm2_tokenizer, vocab=smollm2_vocab)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
              "required": ["a", "b"], "additionalProperties": False}
    tokens = smollm2_tokenizer.encode('{"a":12,"b":"hi there"}', add_special_tokens=False)
    out = masks.measure(engine, schema, tokens, smollm2_tokenizer.eos_token_id, smollm2_vocab.size)
    assert out["status"] == "ok", out
    assert _finite_positive([float(x) for x in out["fill_us"]] + [out["compile_ms"]])
    if name != "outlines":  # outlines-core accepts this schema
        with pytest.raises(peers.CompileError):
            engine.compile({"type": "object", "properties": {"a": {"type": "integer", "minimum": 5,
                                                                     "maximum": 1}}, "required": ["a"]})


def test_strict_schema_closes_objects_and_tuples_like_xgrammar_strict_mode():
    import jsonschema

    schema = {"type": "object", "properties": {
        "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
        "t": {"type": "array", "prefixItems": [{"type": "integer"}]},
        "m": {"type": "object", "additionalProperties": {"type": "integer"}},
        "c": {"allOf": [{"properties": {"x": {"type": "integer"}}}], "properties": {"y": {}}}}}
    strict = peers.strict_schema(schema)
    ok = {"a": {"b": 1}, "t": [1], "m": {"any": 2}, "c": {"x": 1, "y": 2}}
    for s in (schema, strict):
        jsonschema.validate(ok, s, cls=jsonschema.Draft202012Validator)
    for extra in ({"z": 1}, {"a": {"b": 1, "z": 1}}, {"t": [1, 2]}, {"c": {"x": 1, "z": 1}}):
        jsonschema.validate(extra, schema, cls=jsonschema.Draft202012Validator)  # open
        assert not jsonschema.Draft202012Validator(strict).is_valid(extra), extra
    assert schema["properties"]["a"] == {"type": "object", "properties": {"b": {"type": "integer"}}}
    old = {"$schema": "http://json-schema.org/draft-04/schema#", "allOf": [{}], "properties": {"a": {}}}
    assert peers.strict_schema(old) == old  # no unevaluatedProperties before 2019-09: left open

    # a shared base through allOf + $ref, patterns, conditionals: what the schema declares stays
    # valid, anything else does not; `not` keeps its meaning; a used $ref target is closed
    combined = {
        "$defs": {"B": {"properties": {"x": {}}}, "O": {"type": "object", "properties": {"q": {}}}},
        "allOf": [{"$ref": "#/$defs/B"}], "properties": {"y": {}, "o": {"$ref": "#/$defs/O"}},
        "patternProperties": {"^p": {}}, "if": {"properties": {"k": {"const": 1}}},
        "then": {"properties": {"m": {}}}, "not": {"required": ["z"], "properties": {"z": {}}}}
    strict = peers.strict_schema(combined)
    v = jsonschema.Draft202012Validator(strict)
    assert v.is_valid({"x": 1, "y": 2, "p1": 3, "k": 1, "m": 4, "o": {"q": 5}})
    for bad in ({"w": 1}, {"k": 2, "m": 4}, {"o": {"q": 1, "r": 2}}, {"z": 1}):
        assert jsonschema.Draft202012Validator(combined).is_valid(bad) == ("z" not in bad), bad
        assert not v.is_valid(bad), bad
    # a recursive $defs entry used through $ref (at the root too) is replaced by a closed copy
    linked = {"$defs": {"N": {"type": "object", "properties": {"v": {}, "next": {"$ref": "#/$defs/N"}}}},
              "$ref": "#/$defs/N"}
    strict = peers.strict_schema(linked)
    assert strict["$ref"] == "#/$defs/N__strict" and "N" in strict["$defs"]
    v = jsonschema.Draft202012Validator(strict)
    assert v.is_valid({"v": 1, "next": {"v": 2, "next": {"v": 3}}})
    for bad in ({"v": 1, "w": 2}, {"v": 1, "next": {"next": {"w": 3}}}):
        assert jsonschema.Draft202012Validator(linked).is_valid(bad) and not v.is_valid(bad), bad
    # an entry whose name needs JSON-pointer escapes: the copy is found through the pointer
    escaped = {"$defs": {"a/b~": {"properties": {"v": {}}}}, "properties": {"x": {"$ref": "#/$defs/a~1b~0"}}}
    strict = peers.strict_schema(escaped)
    assert strict["properties"]["x"]["$ref"] == "#/$defs/a~1b~0__strict"
    v = jsonschema.Draft202012Validator(strict)
    assert v.is_valid({"x": {"v": 1}}) and not v.is_valid({"x": {"w": 1}})


@pytest.mark.model
@pytest.mark.parametrize("name,extra_key_ok", [("ours", True), ("xgrammar", True),
                                               ("xgrammar-strict", False), ("ours-strict", False)])
def test_xgrammar_adapters_differ_on_undeclared_properties(name, extra_key_ok, smollm2_tokenizer,
                                                           smollm2_vocab):
    """An object that leaves ``additionalProperties`` out allows undeclared keys: ours and the
    ``xgrammar`` adapter (``strict_mode=False``) accept one, ``xgrammar-strict`` and
    ``ours-strict`` mask it out."""
    pytest.importorskip(peers._PEER_MODULES[name])
    engine = peers.make_engine(name, smollm2_tokenizer, vocab=smollm2_vocab)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    tokens = smollm2_tokenizer.encode('{"a":1,"zz":2}', add_special_tokens=False)
    out = masks.measure(engine, schema, tokens, smollm2_tokenizer.eos_token_id, smollm2_vocab.size)
    assert (out["status"] == "ok") == extra_key_ok, out


@pytest.mark.model
def test_jsonschemabench_runner_resumes_and_summarizes(tmp_path, smollm2_tokenizer):
    """Two dev-slice schemas through ``python -m decoding bench jsonschemabench``: records per
    engine and schema in JSON lines, a rerun reuses them, the summary counts match."""
    from bench import jsonschemabench as jsb
    from decoding.cli import main as cli_main

    out = tmp_path / "jsb"
    argv = ["jsonschemabench", "--subset", "Glaiveai2K", "--limit", "2", "--engine", "ours",
            "--engine", "xgrammar", "--max-tokens", "24", "--out", str(out)]
    assert cli_main(["bench", *argv]) == 0
    lines = [json.loads(x) for x in out.with_suffix(".jsonl").read_text().splitlines()]
    assert {(r["engine"], r["schema"]) for r in lines} == {
        (e, p.name) for e in ("ours", "xgrammar") for _, _, p in jsb.iter_schemas(["Glaiveai2K"], 2)}
    for r in lines:
        assert r["declared"] and r["finish"] in ("stop", "length") and r["tokens"] <= 24
        assert r["valid"] == (r["finish"] == "stop" and jsb._valid(
            json.loads(next(p for _, n, p in jsb.iter_schemas(["Glaiveai2K"], 2)
                            if n == r["schema"]).read_text()), r["text"]))
        assert r["ttft_s"] >= r["compile_s"] > 0
        assert (r["engine"] == "ours") == ("fallback" in r)
    assert cli_main(["bench", *argv]) == 0  # resumed: nothing new is appended
    assert len(out.with_suffix(".jsonl").read_text().splitlines()) == len(lines)
    summary = json.loads(Path(f"{out}.json").read_text())
    assert summary["engines"]["ours"]["declared"] == 2
    assert summary["engines"]["ours"]["fallback_recorded"] == 2
    assert summary["engines"]["ours"]["fallback"] == sum(bool(r.get("fallback")) for r in lines)
    assert Path(f"{out}.md").read_text().count("| ours |") == 1
    assert Path(f"{out}.png").stat().st_size > 0


@pytest.mark.model
def test_cfg_bench_walks_every_corpus_string_and_writes_results(tmp_path):
    """bench/cfg.py with our engine alone: every token of every corpus string is in the mask
    before it is accepted and EOS at the end (the walk raises otherwise), compiles are timed
    after one untimed first compile, walks are repeated and summarized by their median, and the
    JSON and markdown results are written."""
    from bench import cfg as cfg_bench

    assert cfg_bench.main(["--engines", "ours", "--compile-runs", "2", "--walk-runs", "2",
                           "--out-dir", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "cfg.json").read_text())["results"]
    for grammar in ("json", "sql"):
        ours = out[grammar]["ours"]
        assert len(ours["compile_ms"]) == 2 and ours["first_compile_ms"] > 0
        assert ours["walk"]["steps"] == out[grammar]["tokens"] + out[grammar]["strings"]
        assert ours["walk_warm"]["steps"] == ours["walk"]["steps"]
        assert len(ours["walk_runs"]) == 2  # each a cold walk after a fresh compile
        means = sorted(r["mean_us"] for r in ours["walk_runs"])
        assert means[0] <= ours["walk"]["mean_us"] <= means[-1]
    table = (tmp_path / "cfg.md").read_text()
    assert "| sql | ours |" in table and "| json | ours |" in table
