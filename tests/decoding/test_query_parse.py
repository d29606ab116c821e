"""Query language: parsing every LMQL example (both forms), typed errors with line and column
before any model work. No model needed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from decoding.query import (
    ContradictoryConstraintError,
    ExternalToolError,
    HostedModelError,
    NotAHoleError,
    QueryError,
    QuerySyntaxError,
    UnknownVariableError,
    UnsupportedConstraintError,
    parse,
    query,
)
from decoding.query.template import Hole, Interp, Position, Text, parse_template

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "lmql-examples"
FILES = sorted(EXAMPLES.glob("*.lmql"))

# form, decoder, model, holes of every example
EXPECTED = {
    "01-hello-world": ("modern", "argmax", None, ["RESPONSE"]),
    "02-tell-a-joke": ("modern", "argmax", None, ["JOKE", "PUNCHLINE"]),
    "03-packing-list": ("modern", "sample", None, ["THING"]),
    "04-templates": ("modern", "argmax", None, ["STRING_VALUE", "INT_VALUE"]),
    "05-types-json": ("modern", "argmax", None, ["PERSON_DATA"]),
    "06-multi-tool-use": ("modern", "argmax", None, ["REASONING", "ANSWER"]),
    "07-regex-constraints": ("modern", "argmax", None, ["RESPONSE"]),
    "08-sentiment-constraints": ("standalone", "argmax", "chatgpt", ["SUMMARY", "RESPONSE"]),
    "09-write-a-poem": ("modern", "sample", None, ["VERSE", "FIRST_VERSE"]),
    "10-chain-of-thought": ("modern", "argmax", None, ["REASONING", "RESULT"]),
    "11-meta-prompting": ("standalone", "beam", "openai/text-davinci-003", ["EXPERT", "ANSWER"]),
    "16-distributions": ("standalone", "argmax", "openai/text-davinci-003",
                         ["ANALYSIS", "CLASSIFICATION"]),
    "20-paper-odd-one-out-cot": ("standalone", "argmax", "EleutherAI/gpt-j-6B",
                                 ["REASONING", "RESULT"]),
}


def test_every_example_is_known():
    assert {f.stem for f in FILES} == set(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_example_parses(path):
    q = parse(path.read_text(), filename=str(path))
    form, decoder, model, holes = EXPECTED[path.stem]
    assert q.form == form
    assert q.decoder.name == decoder
    assert q.model == model
    assert q.hole_names == holes
    compile(q.module, str(path), "exec")  # the rewritten program is valid Python


def test_example_details():
    q = parse((EXAMPLES / "11-meta-prompting.lmql").read_text())
    assert q.decoder.options == {"n": 2}
    expert = q.prompts[1].specs["EXPERT"]
    assert expert.stops_at == [".", "\n"]
    assert expert.lang.matches(b" Alan Turing.") and not expert.lang.matches(b"a.b")
    q = parse((EXAMPLES / "20-paper-odd-one-out-cot.lmql").read_text())
    assert q.prompts[-1].distribution[0] == "RESULT"
    assert ast.unparse(q.prompts[-1].distribution[1]) == "OPTIONS.split(', ')"
    assert set(q.free_names) == {"OPTIONS"}
    reasoning = q.prompts[-2].specs["REASONING"]
    assert reasoning.lang.matches(b" pen is an object.")
    assert not reasoning.lang.matches(b"Pick one.")  # not "Pick" in REASONING
    assert not reasoning.lang.matches(b"a\nb")
    assert not reasoning.lang.matches(b" ".join([b"w"] * 40))  # len(WORDS) < 40
    q = parse((EXAMPLES / "16-distributions.lmql").read_text())
    assert q.prompts[1].distribution[0] == "CLASSIFICATION"
    q = parse((EXAMPLES / "04-templates.lmql").read_text())
    spec = q.prompts[0].specs["INT_VALUE"]
    assert spec.max_tokens == 1 and spec.value_type is int
    q = parse((EXAMPLES / "03-packing-list.lmql").read_text())
    assert q.decoder.options == {"temperature": 0.8}
    q = parse((EXAMPLES / "09-write-a-poem.lmql").read_text())
    assert set(q.nested_queries) == {"rhyme", "first_verse"}
    assert [p.function for p in q.prompts[:2]] == ["rhyme", "first_verse"]


def test_template_segments_and_escapes():
    segs = parse_template("a [[b]] {{c}} {x.y} [V: r'[0-9]{2}'] [W: int] [Z]", Position(1, 1))
    assert segs[0] == Text("a [b] {c} ")
    assert isinstance(segs[1], Interp) and segs[1].source == "x.y"
    holes = [s for s in segs if isinstance(s, Hole)]
    assert [(h.name, h.type_kind, h.type_value) for h in holes] == [
        ("V", "regex", "[0-9]{2}"), ("W", "int", None), ("Z", None, None)]


def test_standalone_one_line_and_paper_spelling():
    q = parse('argmax "Hello [WHO]" from "local:default" where len(TOKENS(WHO)) < 4 and STOPS_AT(WHO, ".")')
    assert q.form == "standalone" and q.model == "local:default"
    assert q.prompts[0].specs["WHO"].max_tokens == 3
    src = 'sample(n=2, temperature=0.5)\n    "A [X] B [Y]"\nfrom "m"\ndistribute\n    Y over ["a", "b"]\n'
    q = parse(src)
    assert q.decoder.name == "sample" and q.decoder.options == {"n": 2, "temperature": 0.5}
    assert q.prompts[0].distribution[0] == "Y"


def _err(src: str, cls: type[QueryError]) -> QueryError:
    with pytest.raises(cls) as info:
        parse(src)
    return info.value


def test_unbalanced_brackets_report_line_and_column():
    e = _err('"ok"\n"x" where len(X < 3\n', QuerySyntaxError)
    assert (e.line, e.column) == (2, 14) and "never closed" in str(e)
    e = _err('"ok"\n"x" where len(X)) < 3\n', QuerySyntaxError)
    assert e.line == 2 and "closes nothing" in str(e)
    e = _err('"A: [ANSWER"\n', QuerySyntaxError)
    assert (e.line, e.column) == (1, 5) and "hole" in str(e)
    e = _err('"A: ANSWER]"\n', QuerySyntaxError)
    assert (e.line, e.column) == (1, 11)
    e = _err('"A: {x"\n', QuerySyntaxError)
    assert e.line == 1
    e = _err('"""never\nclosed\n', QuerySyntaxError)
    assert e.line == 1


def test_syntax_errors_have_positions():
    e = _err('"a"\nfor i in range(3)\n    "[X]"\n', QuerySyntaxError)
    assert e.line == 2
    e = _err('argmax\n    "[X]"\nfrom "m"\nfrom "n"\n', QuerySyntaxError)
    assert e.line == 4 and "duplicate" in str(e)
    e = _err('argmax\n    "[X]"\nfrom "m"\nprint(1)\n', QuerySyntaxError)
    assert e.line == 4
    e = _err('beam(width=3)\n    "[X]"\nfrom "m"\n', QuerySyntaxError)
    assert "unknown option 'width'" in str(e)
    e = _err('beam_var(n=2)\n    "[X]"\nfrom "m"\n', QuerySyntaxError)
    assert "not supported" in str(e)


def test_unknown_variable():
    e = _err('"[X]" where len(Y) < 3', UnknownVariableError)
    assert e.name == "Y" and (e.line, e.column) == (1, 17)
    q = parse('"Q: {question}\\nA: [X]"')
    with pytest.raises(UnknownVariableError) as info:
        q.validate({})
    assert info.value.name == "question" and info.value.line == 1
    q.validate({"question": "why?"})
    # in the standalone where clause
    e = _err('argmax\n    "[X]"\nfrom "m"\nwhere\n    len(X) < 3 and STOPS_AT(Z, ".")\n',
             UnknownVariableError)
    assert e.name == "Z" and e.line == 5


def test_constraint_on_a_variable_that_is_not_a_hole():
    e = _err('y = "abc"\n"[X]" where len(y) < 3\n', NotAHoleError)
    assert e.name == "y" and (e.line, e.column) == (2, 17)
    e = _err('"[A]"\n"[B]" where STOPS_AT(A, ".")\n', NotAHoleError)
    assert e.name == "A" and e.line == 2


def test_contradictory_constraints_are_an_empty_language():
    e = _err('"[X]" where X in ["a"] and len(X) > 3', ContradictoryConstraintError)
    assert e.variable == "X" and e.line == 1 and "empty" in str(e)
    _err('"[X]" where INT(X) and X == "abc"', ContradictoryConstraintError)
    _err('"[X]" where len(TOKENS(X)) < 2 and len(TOKENS(X)) > 5', ContradictoryConstraintError)
    _err('"[X]" where REGEX(X, r"[a-c]+") and not "a" in X and not "b" in X and not "c" in X',
         ContradictoryConstraintError)
    _err('"[X: int]" where X in ["one", "two"]', ContradictoryConstraintError)
    # satisfiable combinations are fine
    parse('"[X]" where X in ["abcd", "a"] and len(X) > 3')


def test_unsupported_constraints_are_typed():
    e = _err('"[X][Y]" where len(X) < 3 or len(Y) < 3', UnsupportedConstraintError)
    assert "several holes" in str(e)
    _err('"[X]" where not STOPS_AT(X, ".")', UnsupportedConstraintError)
    _err('"[X]" where foo(X)', UnsupportedConstraintError)
    _err('"[X]" where REGEX(X, r"(?<=a)b")', UnsupportedConstraintError)


def test_external_tools_and_services_name_the_missing_function():
    q = parse((EXAMPLES / "06-multi-tool-use.lmql").read_text())
    with pytest.raises(ExternalToolError) as info:
        q.validate({})
    assert "inline_use" in info.value.function and info.value.line == 3
    q = parse((EXAMPLES / "08-sentiment-constraints.lmql").read_text())
    with pytest.raises(ExternalToolError) as info:
        q.validate({})
    assert info.value.function == "mood_description" and "chatgpt" in str(info.value)


def _no_model(monkeypatch):
    import decoding.model

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(decoding.model, "load_model", boom)


@pytest.mark.parametrize("name", ["06-multi-tool-use", "08-sentiment-constraints"])
def test_external_examples_fail_before_any_model(monkeypatch, name):
    _no_model(monkeypatch)
    with pytest.raises(ExternalToolError):
        query(EXAMPLES / f"{name}.lmql")


def test_hosted_model_names_the_default(monkeypatch):
    _no_model(monkeypatch)
    with pytest.raises(HostedModelError) as info:
        query(EXAMPLES / "11-meta-prompting.lmql")
    msg = str(info.value)
    assert "openai/text-davinci-003" in msg and "SmolLM2-135M-Instruct" in msg
    assert info.value.line == 15
    # static errors win over model resolution
    with pytest.raises(ContradictoryConstraintError):
        query('argmax "[X]" from "openai/x" where X in ["a"] and len(X) > 3')


def test_cli_query_check_and_errors(tmp_path, capsys):
    from decoding.cli import main

    assert main(["query", str(EXAMPLES / "01-hello-world.lmql"), "--check"]) == 0
    assert "modern form" in capsys.readouterr().out
    assert main(["query", str(EXAMPLES / "06-multi-tool-use.lmql")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ExternalToolError: line 3")
    bad = tmp_path / "bad.lmql"
    bad.write_text('"[X" where len(X) < 3\n')
    assert main(["query", str(bad)]) == 2
    assert "QuerySyntaxError: line 1, column 2" in capsys.readouterr().err
    f = EXAMPLES / "20-paper-odd-one-out-cot.lmql"
    assert main(["query", str(f), "--check"]) == 2
    assert "UnknownVariableError" in capsys.readouterr().err
    assert main(["query", str(f), "--check", "--var", "OPTIONS=a, b, c"]) == 0
