"""Run the official JSON Schema Test Suite through a constrained-decoding engine.

For every test group (one schema, several instances) of a draft, the schema is compiled with
``whitespace="flexible", property_order="any"``; each instance is serialized compactly
(``json.dumps(x, separators=(",", ":"), ensure_ascii=False)``) and fed to the matcher, through
``accept_bytes`` and, when a tokenizer is given, through that tokenizer's tokens. A valid instance
must be accepted, an invalid one rejected. Schemas that fail to compile are counted per file.

    python -m bench.json_schema_test_suite [--draft draft2020-12] [--engine ours|llguidance|xgrammar]
        [--tokens] [--out bench/results/json_schema_test_suite.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUITE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "json-schema-test-suite"
REMOTE_BASE = "http://localhost:1234/"


def suite_dir() -> Path:
    env = os.environ.get("JSON_SCHEMA_TEST_SUITE")
    return Path(env) if env else SUITE


def load_remotes(root: Path | None = None) -> dict[str, Any]:
    """The suite's remote documents, keyed by the URL the tests use for them."""
    root = (root or suite_dir()) / "remotes"
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*.json")):
        out[REMOTE_BASE + p.relative_to(root).as_posix()] = json.loads(p.read_text())
    return out


def iter_groups(draft: str = "draft2020-12") -> Iterator[tuple[str, int, dict]]:
    """(file stem, group index, group) for the draft's required tests (optional/ excluded)."""
    d = suite_dir() / "tests" / draft
    for p in sorted(d.glob("*.json")):
        for i, group in enumerate(json.loads(p.read_text())):
            yield p.stem, i, group


def serialize(instance: Any) -> str:
    return json.dumps(instance, separators=(",", ":"), ensure_ascii=False)


@dataclass
class FileResult:
    groups: int = 0
    compiled: int = 0
    valid: int = 0
    valid_accepted: int = 0
    invalid: int = 0
    invalid_rejected: int = 0
    all_cases: int = 0  # test cases of every group, compiled or not
    compile_errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return self.valid + self.invalid

    @property
    def correct(self) -> int:
        return self.valid_accepted + self.invalid_rejected


# An engine: compile(schema) -> checker(text) -> bool, raising on unsupported schemas.
Engine = Callable[[Any], Callable[[str], bool]]


def ours(*, tokenizer: Any = None, vocab: Any = None) -> Engine:
    import grammars

    remotes = load_remotes()
    byte_vocab = grammars.Vocabulary.byte_level()

    def compile_schema(schema: Any) -> Callable[[str], bool]:
        try:
            # no time limits: a schema near the limit would fall back in one compile and not in
            # the other (both exact, but the byte and token verdicts must come from one grammar)
            g = grammars.Grammar.from_json_schema(
                schema, whitespace="flexible", property_order="any", registry=remotes, timeout=None
            )
            cb = grammars.compile(g, byte_vocab, eager_states=0, timeout=None)
        except grammars.EmptyLanguageError:
            raise EmptyLanguage from None
        ct = grammars.compile(g, vocab, eager_states=0, timeout=None) if vocab is not None else None

        def check(text: str) -> bool:
            m = cb.matcher()
            ok_bytes = m.accept_bytes(text.encode("utf-8")) and m.is_accepting()
            if ct is None:
                return ok_bytes
            mt = ct.matcher()
            ids = tokenizer.encode(text, add_special_tokens=False)
            ok_tokens = all(mt.accept_token(t) for t in ids) and mt.is_accepting()
            if ok_tokens != ok_bytes:
                raise AssertionError(f"bytes and tokens disagree on {text!r}: {ok_bytes} vs {ok_tokens}")
            return ok_bytes

        return check

    return compile_schema


def llguidance_engine(tokenizer: Any) -> Engine:
    import llguidance
    import llguidance.hf

    ll_tok = llguidance.hf.from_tokenizer(tokenizer)

    def compile_schema(schema: Any) -> Callable[[str], bool]:
        grm = llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": True}
        )
        err = llguidance.LLMatcher.validate_grammar(grm, ll_tok)
        if err:
            raise ValueError(err)

        def check(text: str) -> bool:
            m = llguidance.LLMatcher(ll_tok, grm)
            ids = tokenizer.encode(text, add_special_tokens=False)
            for t in ids:
                if not m.consume_token(t):
                    return False
            return m.is_accepting() and not m.is_error()

        return check

    return compile_schema


def xgrammar_engine(tokenizer: Any) -> Engine:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer)
    compiler = xgr.GrammarCompiler(info)

    def compile_schema(schema: Any) -> Callable[[str], bool]:
        cg = compiler.compile_json_schema(json.dumps(schema), any_whitespace=True, strict_mode=False)

        def check(text: str) -> bool:
            m = xgr.GrammarMatcher(cg)
            ids = tokenizer.encode(text, add_special_tokens=False)
            for t in ids:
                if not m.accept_token(t):
                    return False
            return m.is_terminated() or m.accept_token(tokenizer.eos_token_id)

        return check

    return compile_schema


class EmptyLanguage(Exception):
    """Raised by an engine adapter for a schema whose language is empty (compiled, rejects all)."""


def _reject_all(text: str) -> bool:
    return False


def run(engine: Engine, draft: str = "draft2020-12", *, progress: bool = False) -> dict[str, FileResult]:
    results: dict[str, FileResult] = {}
    groups = list(iter_groups(draft))
    it: Any = groups
    if progress:
        from tqdm import tqdm

        it = tqdm(groups, desc=draft, unit="schema")
    for stem, gi, group in it:
        r = results.setdefault(stem, FileResult())
        r.groups += 1
        r.all_cases += len(group["tests"])
        try:
            check = engine(group["schema"])
        except EmptyLanguage:
            check = _reject_all  # compiled: the schema admits nothing, so every instance is rejected
        except Exception as e:  # noqa: BLE001 - every engine error counts as "not compiled"
            r.compile_errors.append(f"{gi}: {type(e).__name__}: {str(e)[:160]}")
            continue
        r.compiled += 1
        for t in group["tests"]:
            ok = check(serialize(t["data"]))
            if t["valid"]:
                r.valid += 1
                r.valid_accepted += ok
            else:
                r.invalid += 1
                r.invalid_rejected += not ok
            if ok != t["valid"]:
                r.wrong.append(f"{gi}: {group['description']} / {t['description']} (valid={t['valid']})")
    return results


def table(results: dict[str, FileResult], *, title: str = "") -> str:
    lines = []
    if title:
        lines.append(f"### {title}\n")
    lines.append("| keyword file | schemas compiled | valid accepted | invalid rejected | cases correct (of all) |")
    lines.append("|---|---|---|---|---|")
    tot = FileResult()
    for stem, r in sorted(results.items()):
        lines.append(f"| {stem} | {r.compiled}/{r.groups} | {r.valid_accepted}/{r.valid} | {r.invalid_rejected}/{r.invalid} | {r.correct}/{r.all_cases} |")
        for k in ("groups", "compiled", "valid", "valid_accepted", "invalid", "invalid_rejected", "all_cases"):
            setattr(tot, k, getattr(tot, k) + getattr(r, k))
    share = tot.correct / tot.all_cases if tot.all_cases else 0.0
    lines.append(f"| **total** | {tot.compiled}/{tot.groups} | {tot.valid_accepted}/{tot.valid} | {tot.invalid_rejected}/{tot.invalid} | {tot.correct}/{tot.all_cases} ({share:.1%}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default="draft2020-12")
    ap.add_argument("--engine", action="append", choices=["ours", "llguidance", "xgrammar"])
    ap.add_argument("--tokens", action="store_true", help="also feed SmolLM2's tokens (ours)")
    ap.add_argument("--out", default="bench/results/json_schema_test_suite")
    args = ap.parse_args(argv)
    engines = args.engine or ["ours"]
    tokenizer = vocab = None
    if args.tokens or set(engines) - {"ours"}:
        from bench.peers import load_tokenizer

        tokenizer = load_tokenizer()
        import grammars

        vocab = grammars.Vocabulary.from_tokenizer(tokenizer) if args.tokens else None
    out: dict[str, Any] = {"draft": args.draft, "engines": {}}
    md = [f"# JSON Schema Test Suite, {args.draft} (required tests)\n"]
    for name in engines:
        t0 = time.perf_counter()
        if name == "ours":
            eng = ours(tokenizer=tokenizer, vocab=vocab)
        elif name == "llguidance":
            eng = llguidance_engine(tokenizer)
        else:
            eng = xgrammar_engine(tokenizer)
        res = run(eng, args.draft, progress=sys.stderr.isatty())
        out["engines"][name] = {k: asdict(v) for k, v in res.items()}
        out["engines"][name]["_seconds"] = time.perf_counter() - t0
        md.append(table(res, title=name))
        md.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=1))
    Path(args.out + ".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
