"""Tests on the real embedded model (SmolLM2-135M-Instruct), loaded once per session.

Every generation is a handful of tokens: the machine has two shared cores.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import grammars
from decoding import (
    Completion,
    Generator,
    GrammarLogitsProcessor,
    default_model_path,
    generate,
    load_model,
)

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]


def test_default_model_loads_with_our_kernels_importable(model):
    """transformers probes a top-level ``kernels``: ours must not break loading (DESIGN.md)."""
    import kernels

    assert Path(kernels.__file__).resolve().is_relative_to(ROOT)
    assert not hasattr(kernels, "__version__")
    from transformers.utils.import_utils import is_kernels_available

    assert not is_kernels_available()
    assert model.vocab.size == model.hf_model.config.vocab_size == 49152
    assert model.eos_token_ids == (2,)
    space_the = model.tokenizer.convert_tokens_to_ids("Ġthe")
    assert model.vocab.tokens[space_the] == b" the"  # exact bytes, not tokenizer strings
    assert load_model() is model  # cached in-process
    assert load_model(default_model_path()) is model  # the same GGUF file by path
    plain = load_model(chat=False)
    assert plain is not model and plain.hf_model is model.hf_model and plain.chat is False


def test_chat_template_applied_or_not(model):
    ids = model.encode("What is 2+2?")
    text = model.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    raw = model.encode("What is 2+2?", chat=False)
    assert raw == model.tokenizer("What is 2+2?")["input_ids"]
    assert model.vocab.decode(raw) == b"What is 2+2?"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = model.tokenizer.decode(model.encode(msgs))
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text and "You are a helpful" not in text
    # a tokenizer without a chat template just tokenizes
    tok = copy.copy(model.tokenizer)
    tok.chat_template = None
    no_template = dataclasses.replace(model, tokenizer=tok)
    assert no_template.encode("What is 2+2?") == raw


def test_generate_regex_and_choices(model):
    c = generate("Give me a phone number.", regex=r"[0-9]{3}-[0-9]{4}", model=model)
    assert isinstance(c, Completion)
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", c.text), c.text
    assert c.finish_reason == "stop" and c.value == c.text
    assert c.text.encode() == model.vocab.decode(c.tokens) == c.raw
    assert c.stats.generated_tokens == len(c.tokens) and c.stats.mask_fills >= len(c.tokens)
    assert c.stats.time_to_first_token > 0 and len(c.stats.token_seconds) == len(c.tokens)

    choices = ["red", "green", "blue"]
    c = generate("What color is the sky? Answer with one word.", choices=choices, model=model)
    assert c.text in choices and c.finish_reason == "stop"


def test_generate_json_schema_value_and_pydantic(model):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    c = generate("Is water wet? Reply in JSON.", schema=schema, model=model, max_tokens=12)
    assert c.finish_reason == "stop"
    assert json.loads(c.text) == c.value and isinstance(c.value["ok"], bool)

    pydantic = pytest.importorskip("pydantic")

    class Answer(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        ok: bool

    c = generate("Is water wet? Reply in JSON.", schema=Answer, model=model, max_tokens=12)
    assert isinstance(c.value, Answer)


def test_seed_makes_sampling_reproducible(model):
    gen = Generator(model, regex=r"[a-z]{2,6}", sampler="sample", temperature=1.5, max_tokens=8)
    a = gen.generate("Say a word.", seed=1234)
    b = gen.generate("Say a word.", seed=1234)
    assert a.tokens == b.tokens and a.text == b.text
    assert re.fullmatch(r"[a-z]{2,6}", a.text)
    batch = gen.generate("Say a word.", seed=1234, n=3)
    again = gen.generate("Say a word.", seed=1234, n=3)
    assert isinstance(batch, list) and len(batch) == 3
    assert [c.text for c in batch] == [c.text for c in again]
    assert all(re.fullmatch(r"[a-z]{2,6}", c.text) for c in batch)


def test_max_tokens_gives_length_and_no_value(model):
    c = generate("Count.", regex=r"[a-z ]{30,40}", model=model, max_tokens=3)
    assert c.finish_reason == "length" and c.value is None
    assert len(c.tokens) == 3 and c.stats.model_calls == 3
    c = generate("Tell me a story.", model=model, max_tokens=3)  # unconstrained
    assert c.finish_reason == "length" and c.value is None and len(c.tokens) == 3


def test_generator_compiles_once(model, monkeypatch):
    calls = []
    real = grammars.compile

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(grammars, "compile", counting)
    gen = Generator(model, choices=["yes", "no"])
    outs = [gen.generate("Is the sun hot?"), gen.generate("Is ice hot?", chat=False)]
    assert len(calls) == 1
    assert all(o.text in ("yes", "no") and o.finish_reason == "stop" for o in outs)
    # a forced single-token answer ends without an extra model call for EOS
    assert outs[0].stats.model_calls == 1


def test_logits_processor_with_model_generate(model):
    import torch

    pattern = r"[0-9]{2}\.[0-9]"
    proc = GrammarLogitsProcessor(grammars.Grammar.from_regex(pattern), model.vocab)
    ids = torch.tensor([model.encode("What is your body temperature?")])
    out = model.hf_model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        logits_processor=[proc],
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=model.vocab.eos_token_id,
    )
    new = out[0, ids.shape[1] :].tolist()
    assert new[-1] in model.eos_token_ids and proc.complete(out) == [True]
    text = model.vocab.decode(new).decode()
    assert re.fullmatch(pattern, text), text
    # cut by max_new_tokens: not complete
    proc = GrammarLogitsProcessor(grammars.compile(grammars.Grammar.from_regex(pattern), model.vocab))
    out = model.hf_model.generate(
        ids, attention_mask=torch.ones_like(ids), logits_processor=[proc], max_new_tokens=2,
        do_sample=False, pad_token_id=model.vocab.eos_token_id,
    )
    assert proc.complete(out) == [False]


def test_cli_generate_subprocess(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"enum": ["cat", "dog"]}))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "decoding", "generate", "--schema", str(schema), "--stats",
         "--max-tokens", "8", "Which animal barks?"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) in ("cat", "dog")
    assert "time to first token" in proc.stderr and "tokens/s" in proc.stderr
    assert "compile" in proc.stderr
