"""generate(..., long_context=...): the call goes through the model's long-context backend (KV
prefix cache kept on the model), gives the same greedy output as the plain path within the
trained length, reuses a shared document's KV across calls, and is picked automatically when a
prompt exceeds the trained length."""

from __future__ import annotations

import jsonschema
import pytest

from decoding import Generator, generate
from decoding.model import Model

DOC = ("The Lighthouse Keeper's Almanac was written by Ada Marlow in 1911 and printed in Leith. "
       "It lists the lights of the Scottish coast with their heights, ranges and colours. ") * 6
SCHEMAS = [
    {"type": "object", "properties": {"author": {"type": "string", "maxLength": 20},
                                      "year": {"type": "integer"}},
     "required": ["author", "year"], "additionalProperties": False},
    {"type": "object", "properties": {"city": {"enum": ["Leith", "Oban", "Wick"]}},
     "required": ["city"], "additionalProperties": False},
]


def _prompt(k: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": DOC + f"\n\nRequest {k}: extract a JSON record."}]


def test_backend_path_matches_plain_greedy_and_reuses_the_document(model: Model) -> None:
    plain = generate(_prompt(0), schema=SCHEMAS[0], model=model, max_tokens=40)
    first = generate(_prompt(0), schema=SCHEMAS[0], model=model, max_tokens=40,
                     long_context="auto")
    assert plain.stats.long_context is None and first.stats.long_context == "auto"
    assert first.text == plain.text  # greedy; same logits to float rounding
    if first.finish_reason == "stop":
        jsonschema.validate(first.value, SCHEMAS[0])
    second = generate(_prompt(1), schema=SCHEMAS[1], model=model, max_tokens=20,
                      long_context="auto")
    doc_tokens = len(model.encode(DOC, chat=False))
    assert second.stats.prompt_tokens_cached >= doc_tokens - 8  # the document, not recomputed
    assert second.finish_reason == "stop"
    jsonschema.validate(second.value, SCHEMAS[1])


def test_weighted_samplers_through_the_backend(model: Model) -> None:
    gen = Generator(model, schema=SCHEMAS[1], long_context="none", max_tokens=20)
    for sampler in ("awrs", "smc", "asap"):
        out = gen.generate(_prompt(2), sampler=sampler, seed=0, n_particles=2)
        assert out.stats.long_context == "none"
        assert out.finish_reason == "stop", sampler
        jsonschema.validate(out.value, SCHEMAS[1])


def test_prompts_past_the_trained_length_switch_to_the_backend(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    n_prompt = len(model.encode(_prompt(3)))
    monkeypatch.setattr(Model, "trained_length", property(lambda self: n_prompt + 5))
    fits = generate(_prompt(3), choices=["Leith", "Oban"], model=model, max_tokens=5)
    past = generate(_prompt(3), choices=["Leith", "Oban"], model=model, max_tokens=6)
    assert fits.stats.long_context is None
    assert past.stats.long_context == "auto"
    assert past.text == fits.text


def test_bad_long_context_option_is_a_clear_error(model: Model) -> None:
    with pytest.raises(ValueError, match="long_context must be"):
        Generator(model, regex="a+", long_context="sliding")  # type: ignore[arg-type]
