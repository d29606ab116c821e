"""Fast tests of the decoding layer that need no model: sampling, constraint arguments, CLI errors,
model path errors."""

from __future__ import annotations

import pytest
import torch

import grammars
from decoding import ModelNotFoundError, build_grammar, generate, load_model
from decoding.cli import main
from decoding.sampling import choose_tokens, validate_sampling


# ---- load_model path errors ---------------------------------------------------------------------
def test_missing_path_is_a_clear_file_not_found(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError) as info:
        load_model(missing)
    assert isinstance(info.value, ModelNotFoundError)
    msg = str(info.value)
    assert str(missing) in msg
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in msg  # names the default model
    assert "never downloaded" in msg


def test_non_gguf_file_and_empty_folder_are_rejected(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf"):
        load_model(f)
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_hub_name_is_not_downloaded():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct")


# ---- constraint arguments -----------------------------------------------------------------------
def test_build_grammar_kinds():
    assert build_grammar() is None
    assert build_grammar(regex="[0-9]+").kind == "regex"
    assert build_grammar(choices=["a", "b"]).kind == "choices"
    g = grammars.Grammar.from_regex("x")
    assert build_grammar(grammar=g) is g
    with pytest.raises(ValueError, match="at most one"):
        build_grammar(regex="a", choices=["a"])
    with pytest.raises(TypeError):
        build_grammar(choices="abc")


def test_constraint_errors_come_before_the_model():
    # the model path does not exist: the schema error must win (raised before any model work)
    with pytest.raises(grammars.InvalidSchemaError):
        generate("x", schema={"type": "integer", "minimum": "a"}, model="/nonexistent")
    with pytest.raises(grammars.UnsupportedSchemaError):
        generate("x", schema={"patternProperties": {"(?<=a)b": {}}}, model="/nonexistent")
    with pytest.raises(grammars.GrammarError):
        generate("x", regex="(unclosed", model="/nonexistent")
    with pytest.raises(grammars.GrammarError):
        generate("x", choices=[], model="/nonexistent")
    with pytest.raises(ValueError, match="sampler"):
        generate("x", regex="a", sampler="beam", model="/nonexistent")  # type: ignore[arg-type]


# ---- sampling over the allowed tokens -----------------------------------------------------------
def _masked_logits() -> torch.Tensor:
    logits = torch.tensor([[5.0, 1.0, 0.0, -1.0, 3.0, 2.0]])
    logits[0, 0] = float("-inf")  # token 0 is disallowed, though it had the highest logit
    return logits


def test_greedy_picks_best_allowed():
    assert choose_tokens(_masked_logits()).tolist() == [4]
    assert choose_tokens(_masked_logits(), sampler="sample", temperature=0.0).tolist() == [4]


def test_top_k_and_top_p_apply_over_allowed_tokens():
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        seen |= set(choose_tokens(_masked_logits(), sampler="sample", top_k=2, generator=gen).tolist())
    assert seen == {4, 5}  # the two best *allowed* tokens
    seen = set()
    for _ in range(200):
        seen |= set(
            choose_tokens(_masked_logits(), sampler="sample", top_p=0.5, generator=gen).tolist()
        )
    assert seen == {4}  # token 4 alone has > 50% of the allowed mass


def test_sampling_frequencies_follow_the_renormalized_distribution():
    gen = torch.Generator().manual_seed(1)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(4000, 1)
    logits[:, 0] = float("-inf")  # allowed: tokens 1 and 2 with mass 0.3 : 0.2 -> 0.6 : 0.4
    draws = choose_tokens(logits, sampler="sample", generator=gen)
    share = (draws == 1).float().mean().item()
    assert abs(share - 0.6) < 0.04  # ~5 standard errors
    assert not (draws == 0).any()


def test_validate_sampling_rejects_bad_values():
    for args in [("x", 1.0, None, None), ("sample", -1.0, None, None), ("sample", 1.0, 0, None),
                 ("sample", 1.0, None, 0.0), ("sample", 1.0, None, 1.5)]:
        with pytest.raises(ValueError):
            validate_sampling(*args)


# ---- CLI errors (no model load) -----------------------------------------------------------------
def test_cli_bad_schema_exits_2_with_one_typed_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "object", "properties": {"a": {"type": "nonsense"}}}')
    assert main(["generate", "--schema", str(bad), "prompt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: InvalidSchemaError:"), err
    assert "/properties/a/type" in err[0]
    # inline JSON works too, and an unsupported keyword names itself
    assert main(["generate", "--schema", '{"patternProperties": {"(?=x)": {}}}', "p"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: UnsupportedSchemaError:"), err


def test_cli_unreadable_schema_and_bad_options(tmp_path, capsys):
    assert main(["generate", "--schema", str(tmp_path / "missing.json"), "p"]) == 2
    assert "error: FileNotFoundError" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["generate", "--schema", str(tmp_path / "broken.json"), "p"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    for argv in (["bench"], ["bench", "no-such-benchmark"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["generate", "--regex", "a", "--choices", "a", "p"])
    assert info.value.code == 2
