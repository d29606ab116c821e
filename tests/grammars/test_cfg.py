"""The context-free path (grammars/cfg.py, earley.py, lexer.py, cfg_matcher.py).

- Differential tests per built-in grammar, 1,000 cases each: random strings of the grammar
  (grammars.random_text) are accepted byte by byte and token by token with SmolLM2's tokenizer;
  one random mutation of each is accepted exactly when lark's Earley parser
  (``lexer="dynamic_complete"``, the scannerless reading) parses it.
- Masks agree with ``check_token`` and always contain the next token of a valid string.
- Earley corner cases (left recursion, ambiguity, nullable rules), fork / rollback, EOS.
- Recursive JSON Schemas (a tree, a linked list through $defs) compile and random walks over the
  masks produce valid instances.
"""

from __future__ import annotations

import itertools
import json

import jsonschema
import numpy as np
import pytest
from lark import Lark

import grammars
from grammars import EmptyLanguageError, Grammar, InvalidGrammarError
from grammars.grammar import builtin_names, builtin_text
from grammars.random_text import random_strings

N_CASES = 1000
MUTATION_BYTES = b" \t\n()*+-,.;:'\"[]{}0123456789abcxyzSELECTFROMinotrue="


def _accepts(c, data: bytes) -> bool:
    m = c.matcher()
    return m.accept_bytes(data) and m.is_accepting()


def _mutate(s: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(s)
    kind = int(rng.integers(3))
    i = int(rng.integers(len(b) + 1))
    c = MUTATION_BYTES[int(rng.integers(len(MUTATION_BYTES)))]
    if kind == 0 or not b:
        b.insert(i, c)
    elif kind == 1:
        del b[min(i, len(b) - 1)]
    else:
        b[min(i, len(b) - 1)] = c
    return bytes(b)


def _lark_accepts(parser: Lark, text: str) -> bool:
    try:
        parser.parse(text)
    except Exception:  # noqa: BLE001 - any lark failure means "not in the language"
        return False
    return True


@pytest.fixture(scope="module")
def builtin_cases(byte_vocab):
    out = {}
    for name in builtin_names():
        c = grammars.compile(Grammar.builtin(name), byte_vocab)
        out[name] = (c, random_strings(c.cfg, N_CASES, seed=7, max_depth=6, max_bytes=40))
    return out


@pytest.mark.parametrize("name", ["arithmetic", "json", "python_expr", "sql"])
def test_builtin_grammar_differential_against_lark(name, builtin_cases, smollm2_tokenizer,
                                                   smollm2_vocab):
    c, strings = builtin_cases[name]
    assert len(strings) == N_CASES and len(set(strings)) > N_CASES // 4
    parser = Lark(builtin_text(name), parser="earley", lexer="dynamic_complete")
    ct = grammars.compile(Grammar.builtin(name), smollm2_vocab)
    rng = np.random.default_rng(11)
    agree = accepted_mutations = tokenized = 0
    for k, s in enumerate(strings):
        # byte by byte
        m = c.matcher()
        assert all(m.accept_bytes(bytes([b])) for b in s), s
        assert m.is_accepting(), s
        # token by token (where SmolLM2's tokens spell the text: its vocabulary has no token
        # for a few bytes, e.g. 0xF2, and the tokenizer drops such characters)
        ids = smollm2_tokenizer(s.decode("utf-8"), add_special_tokens=False)["input_ids"]
        if smollm2_vocab.decode(ids) == s:
            tokenized += 1
            mt = ct.matcher()
            for t in ids:
                assert mt.check_token(t) and mt.accept_token(t), (s, t)
            assert mt.is_accepting() and mt.accept_token(smollm2_vocab.eos_token_id)
        if k < 100:  # the generator only writes strings of the language
            assert _lark_accepts(parser, s.decode("utf-8")), s
        # a random mutation: accepted exactly when lark parses it
        mu = _mutate(s, rng)
        try:
            text = mu.decode("utf-8")
        except UnicodeDecodeError:
            assert not _accepts(c, mu)
            continue
        theirs = _lark_accepts(parser, text)
        assert _accepts(c, mu) == theirs, (s, mu)
        agree += 1
        accepted_mutations += theirs
    assert agree > 0.9 * N_CASES and tokenized > 0.9 * N_CASES
    assert 0.02 * N_CASES < accepted_mutations < 0.9 * N_CASES  # both kinds were exercised


def _mask_bits(m, size: int) -> np.ndarray:
    bm = np.zeros((1, (size + 31) // 32), dtype=np.int32)
    m.fill_next_token_bitmask(bm)
    return np.unpackbits(bm[0].view(np.uint8), bitorder="little")[:size].astype(bool)


@pytest.mark.parametrize("name", ["arithmetic", "json", "python_expr", "sql"])
def test_masks_agree_with_check_token(name, builtin_cases, smollm2_tokenizer, smollm2_vocab):
    _, strings = builtin_cases[name]
    ct = grammars.compile(Grammar.builtin(name), smollm2_vocab)
    rng = np.random.default_rng(3)
    size = smollm2_vocab.size
    full_checks = 0
    for s in strings[:12]:
        ids = smollm2_tokenizer(s.decode("utf-8"), add_special_tokens=False)["input_ids"]
        if smollm2_vocab.decode(ids) != s:
            continue
        m = ct.matcher()
        for step, t in enumerate([*ids, smollm2_vocab.eos_token_id]):
            bits = _mask_bits(m, size)
            assert bits[t], (s, step, t)
            if full_checks < 2 and step == len(ids) // 2:
                sample = np.arange(size)
                full_checks += 1
            else:
                sample = rng.choice(size, 300, replace=False)
            for u in sample.tolist():
                assert bits[u] == m.check_token(u), (s, step, u, smollm2_vocab.tokens[u])
            assert m.accept_token(t)
    assert full_checks == 2


def test_masks_reused_across_equal_parse_cores_stay_exact():
    """Rows kept per (column core, trie nodes) are reused only where the token cannot complete
    items started before the column: walks through nested unary minus and parentheses, with
    tokens that end inside a chain of ``-`` or close several levels at once, compared with
    ``check_token`` for every token at every step."""
    g = Grammar.from_lark("""
        start: e
        e: "-" e | "(" e ")" | NUM | e "+" e
        NUM: /[0-9]/
    """)
    pieces = ["-", "--", "---", "----", "-----", "--1", "-1", "1", "1)", "1))", "))", ")", "(",
              "((", "(-", "-(", "--(", "+", "+-", "1+", "-1)", "---1))", "2"]
    vocab = grammars.Vocabulary([p.encode() for p in pieces] + [b""], eos_token_id=len(pieces))
    c = grammars.compile(g, vocab)
    rng = np.random.default_rng(5)
    compared = 0
    for _ in range(60):
        m = c.matcher()
        for _step in range(14):
            bits = _mask_bits(m, vocab.size)
            for u in range(vocab.size):
                assert bits[u] == m.check_token(u), (u, vocab.tokens[u])
                compared += 1
            allowed = np.flatnonzero(bits[: len(pieces)])
            if not len(allowed):
                break
            assert m.accept_token(int(rng.choice(allowed)))
    assert compared > 10_000


def test_masks_reused_across_equal_context_signatures_stay_exact():
    """Rows kept per (column signature, key): a token that closes several levels at once
    (``x)]``, ``]),``) is valid or not depending on the brackets opened several origin links
    back, so rows may be reused only between columns whose contexts agree that deep. Random
    walks through nested parentheses, brackets and lists (with long walks, so that the same
    core recurs under different stacks), masks compared with ``check_token`` for every token."""
    g = Grammar.from_lark("""
        start: e
        e: "(" l ")" | "[" l "]" | "x" | "-" e
        l: e ("," e)*
    """)
    pieces = ["(", "[", "x", "-", ",", ")", "]", "x)", "x]", "x)]", "x])", ")]", "])", "))",
              "]]", "),", "],", "x,", "x),", "x],", ")])", "])]", "-x", "-(", "(x", "[x", ",x",
              ",(", ",[", "x))", "x]]", "-x)]", "(-", "[-"]
    vocab = grammars.Vocabulary([p.encode() for p in pieces] + [b""], eos_token_id=len(pieces))
    c = grammars.compile(g, vocab, cache=False)
    rng = np.random.default_rng(7)
    compared = 0
    for _ in range(120):
        m = c.matcher()
        for _step in range(20):
            bits = _mask_bits(m, vocab.size)
            for u in range(vocab.size):
                assert bits[u] == m.check_token(u), (u, vocab.tokens[u])
                compared += 1
            allowed = np.flatnonzero(bits[: len(pieces)])
            if not len(allowed):
                break
            # open more than close, so contexts grow deep before they unwind
            weights = np.array([3.0 if pieces[a] in ("(", "[", "(x", "[x", "-(", ",(", ",[")
                                else 1.0 for a in allowed])
            assert m.accept_token(int(rng.choice(allowed, p=weights / weights.sum())))
    assert compared > 50_000


def test_masks_of_tokens_that_glue_lexemes_stay_exact():
    """Tokens that end one lexeme and go on into others (a name glued to a keyword, to a comma,
    a keyword prefix of a name): the crossing pieces below a terminal's boundary nodes skip the
    tokens the terminal's own row already holds, which is only sound because that row is always
    in the same mask. Masks equal ``check_token`` for every token at every step of random
    walks."""
    g = Grammar.from_lark("""
        start: "SELECT"i item ("," item)* ["FROM"i NAME]
        item: NAME [["AS"i] NAME] | NAME "(" [item] ")" | "*"
        NAME: /[a-zA-Z_][a-zA-Z0-9_]*/
        %ignore " "
    """)
    pieces = ["SELECT", "SEL", "ECT", "select", " ", "  ", "a", "ab", "abc", "ab,", "a,", ",",
              ", ", ",a", "(", "a(", "(a", ")", "),", "a)", " AS", "AS", "ASC", "as", "asc",
              "*", " *", "*,", " FROM", "FROM", "from", "fromx", "x", "xy", "x,y", "SELECTa",
              "SELECT*", "ab(", "c)", "_", "a_b", "1", "a1", " a", " ab,", ")a", "AS(", "SELECTAS"]
    vocab = grammars.Vocabulary([p.encode() for p in pieces] + [b""], eos_token_id=len(pieces))
    c = grammars.compile(g, vocab, cache=False)
    rng = np.random.default_rng(11)
    compared = 0
    for _ in range(80):
        m = c.matcher()
        for _step in range(12):
            bits = _mask_bits(m, vocab.size)
            for u in range(vocab.size):
                assert bits[u] == m.check_token(u), (u, vocab.tokens[u])
                compared += 1
            allowed = np.flatnonzero(bits[: len(pieces)])
            if not len(allowed):
                break
            assert m.accept_token(int(rng.choice(allowed)))
    assert compared > 20_000


def test_follow_sets_are_the_adjacent_terminal_pairs_of_sentences():
    """follow_terminals against the terminal pairs that sit side by side in the sentences of a
    small grammar (nullable rules, left and right recursion), enumerated breadth-first: every
    pair seen is in the sets, and every pair of the sets is seen."""
    from grammars.cfg import follow_terminals, rules_to_cfg

    g = Grammar.from_lark("""
        start: a b? c
        a: "x" | a "y" | "(" start ")"
        b: ("z" | "w")*
        c: | "q" c
    """)
    cfg = rules_to_cfg(g.rules)
    follow = follow_terminals(cfg)
    seen = [0] * len(cfg.terminals)
    todo = [(~cfg.start,)]
    done = 0
    while todo and done < 20_000:
        form = todo.pop(0)
        done += 1
        i = next((k for k, x in enumerate(form) if x < 0), None)
        if i is None:
            for u, v in itertools.pairwise(form):
                seen[u] |= 1 << v
            continue
        if len([x for x in form if x >= 0]) > 6:
            continue
        for p in cfg.by_lhs[~form[i]]:
            todo.append(form[:i] + cfg.productions[p].rhs + form[i + 1:])
    assert seen == follow
    assert any(follow)


def test_left_recursion_ambiguity_and_nullable_rules(byte_vocab):
    g = Grammar.from_lark("""
        start: e
        e: e "+" e | e e | "x" | opt
        opt: | "(" e ")"
    """)
    c = grammars.compile(g, byte_vocab)
    for text, ok in [(b"", True), (b"x", True), (b"x+x+x", True), (b"xx+x", True), (b"()", True),
                     (b"(x+)", True), (b"+", True), (b"((x)x)", True), (b"x)", False)]:
        assert _accepts(c, text) == ok, text
    parser = Lark('start: e\ne: e "+" e | e e | "x" | opt\nopt: | "(" e ")"', parser="earley",
                  lexer="dynamic_complete", ambiguity="resolve")
    for text in ["", "x", "x+x+x", "xx+x", "()", "(x+)", "+", "((x)x)", "x)"]:
        assert _accepts(c, text.encode()) == _lark_accepts(parser, text), text


def test_fork_rollback_and_eos(byte_vocab):
    c = grammars.compile(Grammar.builtin("arithmetic"), byte_vocab)
    m = c.matcher()
    eos = byte_vocab.eos_token_id
    assert not m.check_token(eos)
    for b in b"(1+2":
        assert m.accept_token(b)
    f = m.fork()
    assert f.accept_token(ord(")")) and f.is_accepting() and f.check_token(eos)
    assert not m.is_accepting() and not m.check_token(eos)  # the fork is independent
    m.rollback(2)  # "(1"
    assert m.accept_token(ord(")")) and m.is_accepting()
    assert m.accept_token(eos) and m.is_terminated() and not m.check_token(ord("+"))
    assert not m.accept_token(ord("+"))
    assert not m.is_error()
    d = c.matcher()
    assert not d.accept_token(ord(")")) and not d.is_error()  # rejected, state unchanged


def test_accept_token_takes_exactly_the_tokens_check_token_allows(smollm2_vocab):
    """accept_token (which reads the token once) against check_token on every token id, special
    and out-of-range ids included, at several points of a SQL query; a refused token leaves the
    state unchanged and an accepted one leads where accept_bytes does."""
    c = grammars.compile(Grammar.builtin("sql"), smollm2_vocab)
    m = c.matcher()
    ids = range(-2, smollm2_vocab.size + 2)
    for prefix in (b"", b"SELECT a", b"SELECT a FROM t WHERE x = 'y", b"SELECT a FROM t"):
        assert m.accept_bytes(prefix) or not prefix
        allowed = [t for t in ids if m.check_token(t)]
        assert allowed and smollm2_vocab.special.any()
        for t in allowed[:: max(1, len(allowed) // 50)] + [ids[0], ids[-1], 0, 1]:
            f = m.fork()
            assert f.accept_token(t) == (t in set(allowed))
            if t in set(allowed) and t not in smollm2_vocab.eos_token_ids:
                g = m.fork()
                assert g.accept_bytes(smollm2_vocab.tokens[t])
                assert f.is_accepting() == g.is_accepting()
                assert [f.check_token(u) for u in allowed[:200]] == [g.check_token(u) for u in allowed[:200]]
            elif t not in set(allowed):
                assert not f.is_error() and [f.check_token(u) for u in allowed[:50]] == [True] * len(allowed[:50])
        m.reset()


def test_gbnf_grammars_and_errors(byte_vocab):
    g = Grammar.from_gbnf(r'''
        # nested lists of digits
        root ::= list
        list ::= "[" ws (item ("," ws item)*)? ws "]"
        item ::= [0-9]{1,3} | list
        ws ::= [ \t]*
    ''')
    c = grammars.compile(g, byte_vocab)
    for text, ok in [(b"[]", True), (b"[1, [2,[ ]], 345]", True), (b"[1234]", False),
                     (b"[1,]", False), (b"[[[[[[9]]]]]]", True)]:
        assert _accepts(c, text) == ok, text
    for bad, what in [("root ::= nope", "nope"), ('other ::= "x"', "root"),
                      ("root ::= [z-a]", "line 1"), ('root ::= "x', "line 1")]:
        with pytest.raises(InvalidGrammarError) as e:
            Grammar.from_gbnf(bad)
        assert what in str(e.value)
    with pytest.raises(EmptyLanguageError):
        Grammar.from_gbnf('root ::= "a" root')


def test_bad_lark_grammars_are_typed_errors(byte_vocab):
    with pytest.raises(InvalidGrammarError, match="empty string"):
        Grammar.from_lark("start: A\nA: /a*/")
    with pytest.raises(InvalidGrammarError, match="empty string"):
        Grammar.from_lark('start: "x" /b?/')
    with pytest.raises(EmptyLanguageError):
        grammars.compile(Grammar.from_lark('start: a\na: "(" a ")"'), byte_vocab)
    with pytest.raises(InvalidGrammarError, match="'b'"):
        Grammar.from_lark("start: b")
    with pytest.raises(InvalidGrammarError, match="builtin grammar|no built-in"):
        Grammar.builtin("cobol")


TREE = {"type": "object",
        "properties": {"name": {"type": "string", "maxLength": 6},
                       "children": {"type": "array", "items": {"$ref": "#"}, "maxItems": 3}},
        "required": ["name", "children"], "additionalProperties": False}
LINKED = {"$defs": {"node": {"type": "object",
                             "properties": {"value": {"type": "integer", "minimum": 0,
                                                      "maximum": 99},
                                            "next": {"anyOf": [{"$ref": "#/$defs/node"},
                                                               {"type": "null"}]}},
                             "required": ["value", "next"], "additionalProperties": False}},
          "$ref": "#/$defs/node"}


@pytest.mark.parametrize("schema", [TREE, LINKED], ids=["tree", "linked-list"])
def test_recursive_schemas_generate_valid_instances(schema, smollm2_vocab):
    c = grammars.compile(Grammar.from_json_schema(schema), smollm2_vocab)
    assert type(c).__name__ == "CfgCompiledGrammar"
    rng = np.random.default_rng(0)
    eos = smollm2_vocab.eos_token_id
    finished = 0
    for _ in range(8):
        m = c.matcher()
        out: list[int] = []
        for _step in range(200):
            bits = _mask_bits(m, smollm2_vocab.size)
            allowed = np.flatnonzero(bits)
            assert len(allowed), "dead end"
            # prefer ending and short tokens, so the walk finishes
            if bits[eos] and rng.random() < 0.5:
                t = eos
            else:
                short = [a for a in allowed.tolist() if 0 < len(smollm2_vocab.tokens[a]) <= 2]
                t = int(rng.choice(short or allowed))
            assert m.accept_token(t)
            if t == eos:
                break
            out.append(t)
        if m.is_terminated():
            finished += 1
            value = json.loads(smollm2_vocab.decode(out))
            jsonschema.validate(value, schema)
    assert finished >= 4
    good = {"name": "a", "children": [{"name": "b", "children": []}]} if schema is TREE else \
        {"value": 1, "next": {"value": 2, "next": None}}
    assert _accepts(c, json.dumps(good, separators=(",", ":")).encode())
    bad = {"name": "a", "children": [{"name": "b"}]} if schema is TREE else \
        {"value": 1, "next": {"value": 200, "next": None}}
    assert not _accepts(c, json.dumps(bad, separators=(",", ":")).encode())
