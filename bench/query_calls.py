"""Model calls and tokens processed by query scripts: ours against a one-``generate``-per-hole
baseline without eager masking (the comparison of the LMQL paper, PLDI 2023, Section 6).

Ours: ``decoding.query`` with argmax, the default model, a per-hole cap of ``--max-tokens``. One
context per run: fixed text is fed in chunks (one model call per chunk, never sampled), the KV
cache is reused across holes, bytes the constraint forces are appended without a model call, and
a hole ends as soon as its constraint allows nothing else.

Baseline (same trace, so prompts are identical): for every hole, one ``decoding.generate`` call on
the text before the hole (re-encoded and prefilled from scratch: no KV reuse across holes), greedy,
unconstrained (no mask), ``max_tokens`` = the hole's token bound or ``--max-tokens``; the
constraint is applied afterwards (cut at the first stop phrase, then checked). Two counts:

- ``post-hoc``: the call runs until EOS or ``max_tokens`` (nothing stops it earlier);
- ``stop-seq``: as if stop phrases ended the call as soon as they appear (a streaming stop
  check, the most a plain API offers), computed from the same greedy run.

``tokens processed`` = tokens fed through the model (prompt tokens of every call + generated
tokens). ``valid`` = baseline hole outputs that satisfy their constraint after the cut (ours: all,
by construction).

    python -m bench.query_calls [--examples 02-tell-a-joke,03-packing-list,04-templates]
        [--max-tokens 24] [--out bench/results/query_calls.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lmql-examples"
DEFAULT = "02-tell-a-joke,03-packing-list,04-templates"


def _cut(text: str, spec: Any) -> str:
    cut = len(text)
    for s in list(spec.stops_at) + list(spec.stops_before):
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i + len(s))
    return text[:cut]


def _stop_index(model: Any, tokens: list[int], spec: Any) -> int | None:
    """Number of tokens after which a stop phrase has appeared (None: never)."""
    stops = list(spec.stops_at) + list(spec.stops_before)
    if not stops:
        return None
    text = b""
    for i, t in enumerate(tokens):
        text += model.vocab.tokens[t] if t < len(model.vocab.tokens) else b""
        s = text.decode("utf-8", errors="replace")
        if any(x in s for x in stops):
            return i + 1
    return None


def baseline(model: Any, result: Any, cap: int) -> dict[str, Any]:
    from decoding import generate

    calls = tokens = stop_calls = stop_tokens = valid = holes = 0
    for h in result.holes:
        if h.spec is None:
            continue
        spec = h.spec
        max_tokens = spec.max_tokens if spec.max_tokens is not None else cap
        c = generate(h.prefix, model=model, chat=False, max_tokens=max(1, max_tokens))
        st = c.stats
        holes += 1
        calls += st.model_calls
        # every call prefills the whole prompt again; every generated token but the last is fed
        tokens += st.prompt_tokens + max(0, st.generated_tokens - 1)
        k = _stop_index(model, c.tokens, spec)
        n_stop = len(c.tokens) if k is None else k
        stop_calls += max(1, n_stop)
        stop_tokens += st.prompt_tokens + max(0, n_stop - 1)
        out = _cut(c.text, spec)
        lang = spec.lang
        ok = (lang.matches(out.encode()) if hasattr(lang, "matches") else True) and (
            len(c.tokens) >= spec.min_tokens)
        valid += bool(ok)
    return {"holes": holes, "model_calls": calls, "tokens_processed": tokens,
            "stop_seq_model_calls": stop_calls, "stop_seq_tokens_processed": stop_tokens,
            "valid_outputs": valid}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", default=DEFAULT)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "query_calls.json"))
    args = ap.parse_args(argv)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    from decoding import load_model
    from decoding.query import query

    model = load_model()
    rows = []
    for name in args.examples.split(","):
        t0 = time.perf_counter()
        r = query(EXAMPLES / f"{name}.lmql", model=model, max_tokens=args.max_tokens,
                  decoder="argmax")
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        base = baseline(model, r, args.max_tokens)
        base_s = time.perf_counter() - t0
        row = {
            "example": name,
            "ours": {"holes": len([h for h in r.holes if h.spec is not None]),
                     "model_calls": r.stats.model_calls,
                     "tokens_processed": r.stats.tokens_processed,
                     "generated_tokens": r.stats.generated_tokens,
                     "forced_tokens": r.stats.forced_tokens, "seconds": round(ours_s, 2)},
            "baseline": {**base, "seconds": round(base_s, 2)},
        }
        b, o = row["baseline"], row["ours"]
        row["saved_model_calls"] = 1 - o["model_calls"] / b["model_calls"]
        row["saved_model_calls_vs_stop_seq"] = 1 - o["model_calls"] / b["stop_seq_model_calls"]
        row["saved_tokens_processed"] = 1 - o["tokens_processed"] / b["tokens_processed"]
        row["saved_tokens_vs_stop_seq"] = 1 - o["tokens_processed"] / b["stop_seq_tokens_processed"]
        rows.append(row)
        print(f"{name}: ours {o['model_calls']} calls / {o['tokens_processed']} tokens "
              f"({o['forced_tokens']} forced); baseline post-hoc {b['model_calls']} calls / "
              f"{b['tokens_processed']} tokens, stop-seq {b['stop_seq_model_calls']} calls / "
              f"{b['stop_seq_tokens_processed']} tokens; baseline valid "
              f"{b['valid_outputs']}/{b['holes']}; saved calls {row['saved_model_calls']:.0%} "
              f"(vs stop-seq {row['saved_model_calls_vs_stop_seq']:.0%}), saved tokens "
              f"{row['saved_tokens_processed']:.0%} (vs stop-seq "
              f"{row['saved_tokens_vs_stop_seq']:.0%})", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"max_tokens": args.max_tokens, "model": model.name, "rows": rows},
                              indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
