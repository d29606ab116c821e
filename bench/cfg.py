"""Context-free grammars: compile time and mask-fill time, ours against llguidance and xgrammar.

Grammars: generic JSON and the SQL SELECT subset. Ours and llguidance read the same Lark text
(``grammars/builtin/json.lark`` and ``sql.lark``); xgrammar gets its built-in JSON grammar and
``bench/grammars/sql.ebnf`` (the same SQL subset in its EBNF dialect, uppercase keywords,
whitespace spelled out). All on SmolLM2's tokenizer, in one process, one run.

- compile: median of ``--compile-runs`` fresh compiles from the grammar text to the first matcher
  (ours without the compile cache and with ``grammars.clear_cache()`` before each, so lowered
  regexes are not reused either; xgrammar without its cache; llguidance builds its matcher;
  the grammar files are read once, before any timing).
  Each engine first compiles once untimed (reported as "first compile": what a process pays
  once, e.g. loading our numba kernels from their disk cache), and each timed compile starts
  after ``gc.collect()``, as the walks do. The engines take turns, one compile each per round
  (and one walk run each per round below), so that a slow spell of a shared machine lands on
  all of them rather than on one engine's block of runs.
- walk: one fresh compile, then every corpus string token by token: fill the mask (timed), check
  the string's next token is in it, accept it; at the end EOS must be allowed. Steps are pooled
  (mean, median, p99, max). Caches warm up during the walk (ours: per-terminal token pieces;
  xgrammar: its adaptive mask cache; llguidance: its lexer state cache): the pooled numbers include
  that. A second walk over the same strings with the same compiled grammar ("warm") is reported
  for every engine too. Each walk starts after ``gc.collect()`` (garbage from compiles or the
  previous engine is not charged to it); the collector stays on during the walk, so pauses the
  walk's own allocations cause are counted. This is done ``--walk-runs`` times (default 3), each
  after a fresh compile (ours with its caches cleared), and each statistic reported is the median
  of the runs' (a p99 of a few hundred steps is one of the five slowest: one noisy moment on a
  shared machine moves it); every run's statistics are in the JSON.

Corpora: JSON, 24 documents drawn at random (seeded; nested objects and arrays, strings, numbers,
literals), half compact and half indented; SQL, 16 hand-written queries in the subset.

    python -m bench.cfg [--compile-runs 15] [--walk-runs 3] [--engines ours,llguidance,xgrammar]
                        [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ENGINES = ("ours", "llguidance", "xgrammar")

SQL = [
    "SELECT * FROM users;",
    "SELECT name, email FROM users WHERE age > 30 ORDER BY name;",
    "SELECT COUNT(*) FROM orders WHERE status = 'shipped'",
    ("SELECT c.name, SUM(o.total) AS revenue FROM customers c JOIN orders o ON c.id = o.customer_id "
    "GROUP BY c.name HAVING SUM(o.total) > 1000 ORDER BY revenue DESC LIMIT 10;"),
    "SELECT DISTINCT city FROM addresses WHERE country IN ('FR', 'DE', 'IT')",
    "SELECT id FROM products WHERE id NOT IN (SELECT product_id FROM order_items);",
    "SELECT title, year FROM movies WHERE rating BETWEEN 7.5 AND 9 ORDER BY year DESC, title",
    "SELECT e.name, m.name AS manager FROM employees e LEFT JOIN employees m ON e.manager_id = m.id",
    "SELECT department, AVG(salary) FROM employees GROUP BY department;",
    "SELECT name FROM students WHERE name LIKE 'A%' AND grade IS NOT NULL",
    "SELECT MAX(price) AS top_price FROM products",
    "SELECT a.id, b.value FROM a INNER JOIN b USING (id) WHERE b.value <> 0 LIMIT 5 OFFSET 10;",
    ("SELECT name, CASE WHEN score >= 90 THEN 'A' WHEN score >= 80 THEN 'B' ELSE 'C' END AS grade "
    "FROM results"),
    "SELECT u.id FROM users u WHERE EXISTS (SELECT 1 FROM logins l WHERE l.user_id = u.id)",
    "SELECT city FROM shops UNION SELECT city FROM warehouses ORDER BY city;",
    "SELECT year, COUNT(DISTINCT author) FROM books WHERE year >= 2000 GROUP BY year",
]


def json_corpus(n: int = 24, seed: int = 0) -> list[str]:
    """``n`` random JSON documents (half compact, half indented)."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "name", "id", "value", "items", "price", "tags", "ok", "x",
             "café", "日本", "line\nbreak", 'say "hi"']

    def value(depth: int) -> Any:
        k = rng.random()
        if depth > 2 or k < 0.3:
            return rng.choice([rng.randint(-999, 99999), round(rng.uniform(-50, 50), 3),
                               rng.choice(words), True, False, None])
        if k < 0.65:
            return {rng.choice(words): value(depth + 1) for _ in range(rng.randint(0, 4))}
        return [value(depth + 1) for _ in range(rng.randint(0, 4))]

    out = []
    for i in range(n):
        doc = {rng.choice(words): value(1) for _ in range(rng.randint(1, 5))}
        out.append(json.dumps(doc, ensure_ascii=False, indent=2 if i % 2 else None))
    return out


@functools.cache
def _lark_text(grammar: str) -> str:
    """The Lark text of a built-in grammar, read once (file reads are not compile time)."""
    from grammars.grammar import builtin_text

    return builtin_text(grammar)


@functools.cache
def _ebnf_text(grammar: str) -> str:
    """xgrammar's EBNF of the same grammar (``bench/grammars``), read once."""
    return (HERE / "grammars" / f"{grammar}.ebnf").read_text()


class _Ours:
    name = "ours"

    def __init__(self, tok: Any, vocab: Any) -> None:
        self.vocab = vocab

    def forget(self) -> None:
        import grammars

        grammars.clear_cache()  # lowered regexes included: no compile reuses an earlier one's

    def compile(self, grammar: str) -> Any:
        import grammars

        g = grammars.Grammar.from_lark(_lark_text(grammar))
        return grammars.compile(g, self.vocab, cache=False)

    def matcher(self, compiled: Any) -> Any:
        import torch

        m = compiled.matcher()
        bm = torch.zeros(1, (self.vocab.size + 31) // 32, dtype=torch.int32)
        return m, bm

    @staticmethod
    def fill(state: Any) -> None:
        m, bm = state
        m.fill_next_token_bitmask(bm, 0)

    @staticmethod
    def allowed(state: Any, t: int) -> bool:
        return bool((int(state[1][0, t >> 5]) >> (t & 31)) & 1)

    @staticmethod
    def accept(state: Any, t: int) -> bool:
        return bool(state[0].accept_token(t))


class _Llg(_Ours):
    name = "llguidance"

    def __init__(self, tok: Any, vocab: Any) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.vocab = vocab
        self.llg = llguidance
        self.fill_fn = llguidance.torch.fill_next_token_bitmask
        self.tok = llguidance.hf.from_tokenizer(tok, n_vocab=vocab.size)

    def forget(self) -> None:
        """Nothing to drop: its compiler keeps no cache here."""

    def compile(self, grammar: str) -> Any:
        g = self.llg.LLMatcher.grammar_from_lark(_lark_text(grammar))
        m = self.llg.LLMatcher(self.tok, g, log_level=0)
        if m.is_error():
            raise RuntimeError(m.get_error())
        return g

    def matcher(self, compiled: Any) -> Any:
        import torch

        m = self.llg.LLMatcher(self.tok, compiled, log_level=0)
        return m, torch.zeros(1, (self.vocab.size + 31) // 32, dtype=torch.int32)

    def fill(self, state: Any) -> None:  # type: ignore[override]
        self.fill_fn(state[0], state[1], 0)

    @staticmethod
    def accept(state: Any, t: int) -> bool:
        return bool(state[0].consume_token(t)) and not state[0].is_error()


class _Xgr(_Ours):
    name = "xgrammar"

    def __init__(self, tok: Any, vocab: Any) -> None:
        import xgrammar as xgr

        self.vocab = vocab
        self.xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab.size)

    def forget(self) -> None:
        """Nothing to drop: its compiler keeps no cache here."""

    def compile(self, grammar: str) -> Any:
        comp = self.xgr.GrammarCompiler(self.info, cache_enabled=False)
        if grammar == "json":
            return comp.compile_builtin_json_grammar()
        return comp.compile_grammar(self.xgr.Grammar.from_ebnf(_ebnf_text(grammar)))

    def matcher(self, compiled: Any) -> Any:
        m = self.xgr.GrammarMatcher(compiled)
        return m, self.xgr.allocate_token_bitmask(1, self.vocab.size)

    def fill(self, state: Any) -> None:  # type: ignore[override]
        state[0].fill_next_token_bitmask(state[1], 0)

    @staticmethod
    def accept(state: Any, t: int) -> bool:
        return bool(state[0].accept_token(t))


def _walk(engine: Any, compiled: Any, corpus: list[list[int]], eos: int) -> list[float]:
    # start from a collected heap: garbage left by compiles or by the previous engine must not
    # trigger a full collection inside this walk (collections the walk itself causes still count)
    gc.collect()
    times: list[float] = []
    for ids in corpus:
        st = engine.matcher(compiled)
        for t in ids:
            t0 = time.perf_counter()
            engine.fill(st)
            times.append(time.perf_counter() - t0)
            if not engine.allowed(st, t):
                raise AssertionError(f"{engine.name}: token {t} of a corpus string not allowed")
            if not engine.accept(st, t):
                raise AssertionError(f"{engine.name}: token {t} rejected")
        t0 = time.perf_counter()
        engine.fill(st)
        times.append(time.perf_counter() - t0)
        if not engine.allowed(st, eos):
            raise AssertionError(f"{engine.name}: EOS not allowed at the end of a corpus string")
    return times


def _stats(times: list[float]) -> dict[str, float]:
    us = sorted(1e6 * t for t in times)
    return {"mean_us": statistics.fmean(us), "median_us": statistics.median(us),
            "p99_us": us[min(len(us) - 1, int(0.99 * len(us)))], "max_us": us[-1],
            "steps": len(us)}


def _median_stats(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per statistic, the median over the runs (each run's own mean, p99, ...)."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compile-runs", type=int, default=15,
                   help="timed compiles per engine (a few ms each, +-40%% from one to the next on "
                        "a shared machine: the median of 15 is steadier than of 5)")
    p.add_argument("--walk-runs", type=int, default=3,
                   help="cold walks, each after a fresh compile (the median of each statistic)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    from bench.peers import load_tokenizer, write_results
    from grammars import Vocabulary

    tok = load_tokenizer()
    vocab = Vocabulary.from_tokenizer(tok)
    eos = vocab.eos_token_id
    classes = {"ours": _Ours, "llguidance": _Llg, "xgrammar": _Xgr}
    engines = [classes[e](tok, vocab) for e in args.engines.split(",")]
    corpora = {"json": json_corpus(), "sql": SQL}
    results: dict[str, Any] = {}
    for grammar, texts in corpora.items():
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        assert all(vocab.decode(i) == t.encode() for i, t in zip(ids, texts, strict=True))
        results[grammar] = {"strings": len(texts), "tokens": sum(map(len, ids))}
        # engines take turns, round by round (compiles, then walk runs), so that a slow spell
        # of this shared machine falls on every engine alike rather than on one engine's block
        compiles: dict[str, list[float]] = {e.name: [] for e in engines}
        for _ in range(args.compile_runs + 1):
            for e in engines:
                e.forget()
                gc.collect()
                t0 = time.perf_counter()
                compiled = e.compile(grammar)
                e.matcher(compiled)
                compiles[e.name].append(time.perf_counter() - t0)
        runs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {
            e.name: [] for e in engines}
        for _ in range(args.walk_runs):
            for e in engines:
                e.forget()
                compiled = e.compile(grammar)
                cold = _walk(e, compiled, ids, eos)
                warm = _walk(e, compiled, ids, eos)
                runs[e.name].append((_stats(cold), _stats(warm)))
        for e in engines:
            first, timed = compiles[e.name][0], compiles[e.name][1:]
            results[grammar][e.name] = {
                "first_compile_ms": 1000 * first,
                "compile_ms_median": 1000 * statistics.median(timed),
                "compile_ms": [1000 * c for c in timed],
                "walk": _median_stats([c for c, _ in runs[e.name]]),
                "walk_warm": _median_stats([w for _, w in runs[e.name]]),
                "walk_runs": [c for c, _ in runs[e.name]],
                "walk_warm_runs": [w for _, w in runs[e.name]],
            }
            w = results[grammar][e.name]
            print(f"{grammar} {e.name}: compile {w['compile_ms_median']:.1f} ms, mask mean "
                  f"{w['walk']['mean_us']:.0f} us, p99 {w['walk']['p99_us']:.0f} (warm "
                  f"{w['walk_warm']['mean_us']:.0f})", file=sys.stderr, flush=True)
    meta = {"command": "python -m bench.cfg " + " ".join(argv if argv is not None else sys.argv[1:]),
            "platform": platform.platform(),
            "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    lines = [
        "# Context-free grammars: ours against llguidance and xgrammar (bench/cfg.py)", "",
        (f"Command: `{meta['command']}`. SmolLM2 tokenizer; one process, one run (load average "
        f"{meta['load_average']}). Mask times pool every step of the walk (fresh compile; caches "
        "warm up during it), and of a second walk with the same compiled grammar (warm); each "
        "statistic is the median over the walk runs."), "",
        ("| grammar | engine | compile ms (median) | first compile ms | mask mean us | median | "
         "p99 | max | warm mean | warm p99 |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for grammar in corpora:
        for e in engines:
            r = results[grammar][e.name]
            w, ww = r["walk"], r["walk_warm"]
            lines.append(
                f"| {grammar} | {e.name} | {r['compile_ms_median']:.1f} | "
                f"{r['first_compile_ms']:.1f} | {w['mean_us']:.0f} | "
                f"{w['median_us']:.0f} | {w['p99_us']:.0f} | {w['max_us']:.0f} | "
                f"{ww['mean_us']:.0f} | {ww['p99_us']:.0f} |")
    lines += ["", ("Targets (issue 3): mask mean at most llguidance's, p99 at most 2x llguidance's, "
              "compile at most xgrammar's."), ""]
    for grammar in corpora:
        r = results[grammar]
        if "ours" in r and "llguidance" in r:
            o, g = r["ours"], r["llguidance"]
            lines.append(
                f"- {grammar}: mean {o['walk']['mean_us'] / g['walk']['mean_us']:.2f}x "
                f"llguidance's, p99 {o['walk']['p99_us'] / g['walk']['p99_us']:.2f}x"
                + (f", compile {o['compile_ms_median'] / r['xgrammar']['compile_ms_median']:.2f}x "
                   "xgrammar's" if "xgrammar" in r else ""))
    write_results(args.out_dir, "cfg", {"meta": meta, "results": results}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
