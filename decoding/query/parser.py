"""Query scripts -> :class:`Query` (a plain data object: decoder, model, prompt statements with
their compiled hole constraints, and a Python module ready to run).

Stages (each boundary is a plain data object):

1. **Lines.** Python's ``tokenize`` splits the source into logical lines (strings, brackets and
   continuations handled as Python does); unbalanced brackets are reported here with the line and
   column of the bracket. Each logical line becomes one token for stage 2: ``CODE`` (column 0),
   ``INDENTED``, ``DECODER`` (``argmax``, ``sample(...)``... followed by an indented body or an
   inline prompt), ``INLINE`` (prompt strings on the decoder line), ``FROM``, ``WHERE``, ``DIST``.
2. **Form.** A lark LALR grammar over those tokens recognizes the standalone form
   ``[preamble] DECODER body [from ...] [where ...] [distribution|distribute ...]``; anything else is
   the modern form (a Python program whose top-level strings are prompts).
3. **Program.** The body (dedented, line numbers kept) is a Python program in which a prompt string
   may be followed by ``where EXPR`` or ``distribution VAR in EXPR`` (paper-era ``distribute VAR over
   EXPR``). Those keywords are rewritten into same-length Python (``"..." ,    EXPR``) so columns stay
   exact, and ``ast`` parses the result.
4. **Statements.** Prompt strings are split into text / ``{expr}`` / ``[HOLE]`` segments
   (:mod:`decoding.query.template`); where-clauses compile into per-hole automata
   (:mod:`decoding.query.constraints`); names are checked; the module is rewritten so each prompt
   statement calls the interpreter (``HOLES = __lmql__.prompt(id, locals())``).
"""

from __future__ import annotations

import ast
import builtins
import io
import itertools
import textwrap
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from decoding.query.constraints import (
    Deferred,
    HoleSpec,
    compile_where,
    literal_env,
    opaque_env,
)
from decoding.query.errors import (
    ExternalToolError,
    QueryError,
    QuerySyntaxError,
    UnknownVariableError,
)
from decoding.query.template import Hole, Interp, Position, Segment, parse_template

__all__ = ["DECODERS", "DECODER_OPTIONS", "Decoder", "PromptStatement", "Query", "parse"]

DECODERS = ("argmax", "sample", "beam", "smc", "awrs")
_OTHER_LMQL_DECODERS = ("beam_var", "var", "best_k", "beam_sample", "beam_search")
DECODER_OPTIONS = {
    "argmax": {"max_len", "max_tokens", "n"},
    "sample": {"n", "temperature", "top_k", "top_p", "max_len", "max_tokens", "seed"},
    "beam": {"n", "max_len", "max_tokens"},
    "smc": {"n", "temperature", "max_len", "max_tokens", "seed", "ess_threshold", "resampling",
            "sampler"},
    "awrs": {"temperature", "max_len", "max_tokens", "seed", "n"},
}
_CLAUSES = ("from", "where", "distribute", "distribution")
RUNTIME_NAME = "__lmql__"

_SKELETON = r"""
start: pre DECODER body clause*
pre: (CODE | INDENTED)*
body: (INDENTED | INLINE | CODE)+
clause: FROM INDENTED* -> from_clause
      | WHERE INDENTED* -> where_clause
      | DIST INDENTED* -> dist_clause
%declare DECODER CODE INDENTED INLINE FROM WHERE DIST
"""
_LARK: list[Any] = []


def _skeleton_parser() -> Any:
    if not _LARK:
        import lark

        _LARK.append(lark.Lark(_SKELETON, parser="lalr", lexer="basic"))
    return _LARK[0]


# ---- data objects --------------------------------------------------------------------------------


@dataclass
class Decoder:
    name: str = "argmax"
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    column: int | None = None


@dataclass
class PromptStatement:
    id: int
    segments: list[Segment]
    holes: dict[str, tuple[int, int]]  # name -> (line, column) of its first occurrence
    where: ast.expr | None
    distribution: tuple[str, ast.expr] | None
    line: int
    column: int
    specs: dict[str, HoleSpec] = field(default_factory=dict)  # statically compiled (constant) ones
    deferred: bool = False  # the where-clause needs run-time values
    shift: Callable[[int, int], tuple[int, int]] | None = None
    function: str | None = None  # enclosing nested query function, if any


@dataclass
class Query:
    """A parsed and checked query script."""

    source: str
    form: str  # "standalone" | "modern"
    decoder: Decoder
    model: str | None
    model_position: tuple[int, int] | None
    prompts: list[PromptStatement]
    module: ast.Module  # rewritten program (prompt statements call the interpreter)
    free_names: dict[str, tuple[int, int]]  # names the script reads but never defines (inputs)
    nested_queries: dict[str, str | None]  # function name -> hosted model named in its decorator
    nested_positions: dict[str, tuple[int, int]]
    imported_from: dict[str, str]
    filename: str = "<query>"
    #: what the script needs but this engine cannot provide (external tools, hosted models of nested
    #: queries): parsing succeeds, :meth:`validate` (called by ``query()`` before any model work)
    #: raises the first one
    external_errors: list[ExternalToolError] = field(default_factory=list)

    @property
    def hole_names(self) -> list[str]:
        return list(dict.fromkeys(h for p in self.prompts for h in p.holes))

    def validate(self, inputs: dict[str, Any]) -> None:
        """Everything that must hold before a model is touched: no external tool is needed and
        every free name is an input."""
        if self.external_errors:
            raise self.external_errors[0]
        self.check_inputs(inputs)

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        """Raise UnknownVariableError for a name the script reads that is neither defined, a
        hole, a builtin nor in ``inputs`` (the first one in source order)."""
        for name, (line, col) in sorted(self.free_names.items(), key=lambda kv: kv[1]):
            if name not in inputs:
                raise UnknownVariableError(
                    name,
                    f"unknown variable {name!r}: it is not defined by the query, not a hole and not "
                    f"given as an input (pass it as {name}=... or --var {name}=...)",
                    line=line,
                    column=col,
                )


# ---- stage 1: logical lines ----------------------------------------------------------------------


@dataclass
class _Line:
    tokens: list[tokenize.TokenInfo]
    start: tuple[int, int]
    end: tuple[int, int]

    @property
    def indent(self) -> int:
        return self.start[1]


_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}


def _tokens(text: str) -> list[tokenize.TokenInfo]:
    out: list[tokenize.TokenInfo] = []
    stack: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP:
                if tok.string in _OPEN:
                    stack.append(tok)
                elif tok.string in _CLOSE:
                    if not stack or stack[-1].string != _CLOSE[tok.string]:
                        raise QuerySyntaxError(
                            f"unbalanced bracket: {tok.string!r} closes nothing"
                            if not stack
                            else f"unbalanced bracket: {tok.string!r} does not match "
                            f"{stack[-1].string!r} opened at line {stack[-1].start[0]}, column "
                            f"{stack[-1].start[1] + 1}",
                            line=tok.start[0],
                            column=tok.start[1] + 1,
                        )
                    stack.pop()
            elif (tok.type == tokenize.ERRORTOKEN and tok.string.strip()
                  and tok.string[0] in "'\""):
                raise QuerySyntaxError("unterminated string literal", line=tok.start[0],
                                       column=tok.start[1] + 1)
            out.append(tok)
    except tokenize.TokenError as e:
        if stack:
            t = stack[-1]
            raise QuerySyntaxError(
                f"unbalanced bracket: {t.string!r} is never closed", line=t.start[0],
                column=t.start[1] + 1,
            ) from None
        msg, (line, col) = e.args
        raise QuerySyntaxError(
            "unterminated triple-quoted string" if "string" in msg else str(msg), line=line,
            column=col + 1,
        ) from None
    except (IndentationError, SyntaxError) as e:
        raise QuerySyntaxError(e.msg, line=e.lineno, column=e.offset) from None
    return out


_SKIP = (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)


def _logical_lines(toks: list[tokenize.TokenInfo]) -> list[_Line]:
    lines: list[_Line] = []
    cur: list[tokenize.TokenInfo] = []
    for tok in toks:
        if tok.type in _SKIP:
            continue
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if cur:
                lines.append(_Line(cur, cur[0].start, cur[-1].end))
                cur = []
            continue
        cur.append(tok)
    if cur:
        lines.append(_Line(cur, cur[0].start, cur[-1].end))
    return lines


def _decoder_end(line: _Line) -> int | None:
    """If the line starts with a decoder (``argmax``, ``beam(n=2)``...) at column 0, the index of
    the first token after it; else None."""
    t = line.tokens
    if line.indent != 0 or t[0].type != tokenize.NAME:
        return None
    if t[0].string not in DECODERS and t[0].string not in _OTHER_LMQL_DECODERS:
        return None
    i = 1
    if i < len(t) and t[i].string == "(":
        depth = 0
        while i < len(t):
            if t[i].string in _OPEN:
                depth += 1
            elif t[i].string in _CLOSE:
                depth -= 1
                if depth == 0:
                    i += 1
                    break
            i += 1
    if i == len(t) or t[i].type == tokenize.STRING:
        return i
    return None


def _split_clauses(tokens: list[tokenize.TokenInfo]) -> list[int]:
    """Indices of depth-0 clause keywords (``from``/``where``/``distribute``/``distribution``)."""
    out = []
    depth = 0
    for i, t in enumerate(tokens):
        if t.string in _OPEN:
            depth += 1
        elif t.string in _CLOSE:
            depth -= 1
        elif depth == 0 and t.type == tokenize.NAME and t.string in _CLAUSES and i > 0:
            out.append(i)
    return out


@dataclass
class _Part:
    kind: str
    start: tuple[int, int]
    end: tuple[int, int]
    tokens: list[tokenize.TokenInfo]


def _line_parts(lines: list[_Line]) -> list[_Part] | None:
    """Classify logical lines for the skeleton grammar; None when there is no standalone decoder."""
    dec_idx = None
    for k, ln in enumerate(lines):
        end = _decoder_end(ln)
        if end is None:
            continue
        inline = end < len(ln.tokens)
        if inline or (k + 1 < len(lines) and lines[k + 1].indent > 0):
            dec_idx = k
            break
    if dec_idx is None:
        return None
    parts: list[_Part] = []
    for k, ln in enumerate(lines):
        if k < dec_idx:
            parts.append(_Part("CODE" if ln.indent == 0 else "INDENTED", ln.start, ln.end, ln.tokens))
            continue
        toks = ln.tokens
        if k == dec_idx:
            end = _decoder_end(ln)
            assert end is not None
            parts.append(_Part("DECODER", toks[0].start, toks[end - 1].end, toks[:end]))
            rest = toks[end:]
            if not rest:
                continue
            cuts = _split_clauses(rest)
            first = cuts[0] if cuts else len(rest)
            parts.append(_Part("INLINE", rest[0].start, rest[first - 1].end, rest[:first]))
            toks = rest[first:]
            if not toks:
                continue
        elif ln.indent > 0:
            parts.append(_Part("INDENTED", ln.start, ln.end, toks))
            continue
        elif toks[0].string not in _CLAUSES or (
            toks[0].string == "from" and len(toks) > 1 and toks[1].type == tokenize.NAME
        ):
            parts.append(_Part("CODE", ln.start, ln.end, toks))
            continue
        cuts = [0] + _split_clauses(toks) + [len(toks)]
        for a, b in itertools.pairwise(cuts):
            if a == b:
                continue
            kw = toks[a].string
            kind = {"from": "FROM", "where": "WHERE"}.get(kw, "DIST")
            parts.append(_Part(kind, toks[a].start, toks[b - 1].end, toks[a:b]))
    return parts


# ---- helpers to cut source spans -----------------------------------------------------------------


def _blank_like(src_lines: list[str]) -> list[str]:
    return ["" for _ in src_lines]


def _copy_span(src_lines: list[str], dst: list[str], start: tuple[int, int], end: tuple[int, int],
               whole_lines: bool) -> None:
    (r0, c0), (r1, c1) = start, end
    for r in range(r0, r1 + 1):
        line = src_lines[r - 1].rstrip("\n")
        a = c0 if (r == r0 and not whole_lines) else 0
        b = c1 if (r == r1 and not whole_lines) else len(line)
        cur = dst[r - 1]
        if len(cur) < a:
            cur = cur + " " * (a - len(cur))
        dst[r - 1] = cur[:a] + line[a:b] + cur[b:] if len(cur) > b else cur[:a] + line[a:b]


def _expr_from_span(src_lines: list[str], part_list: list[_Part], kw_len: int,
                    replace: dict[tuple[int, int], str] | None = None) -> ast.expr:
    """Parse the expression after a clause keyword, keeping the source lines and columns."""
    dst = _blank_like(src_lines)
    for p in part_list:
        _copy_span(src_lines, dst, p.start, p.end, whole_lines=p.kind == "INDENTED")
    r0, c0 = part_list[0].start
    line = dst[r0 - 1]
    dst[r0 - 1] = "(" + " " * (c0 + kw_len - 1) + line[c0 + kw_len :]
    for (r, c), new in (replace or {}).items():
        ln = dst[r - 1]
        dst[r - 1] = ln[:c] + new + ln[c + len(new) :]
    r1 = part_list[-1].end[0]
    dst[r1 - 1] = dst[r1 - 1] + ")"
    text = "\n".join(dst[r0 - 1 : r1])
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise QuerySyntaxError(f"invalid clause: {e.msg}", line=(e.lineno or 1) + r0 - 1,
                               column=e.offset) from None
    ast.increment_lineno(tree, r0 - 1)
    return tree.body


# ---- stage 3/4: the program ----------------------------------------------------------------------

_MARK_WHERE = "where"
_MARK_DIST = "distribution"


def _rewrite_clauses(text: str) -> tuple[str, dict[tuple[int, int], str]]:
    """Rewrite ``"..." where E`` / ``"..." distribution V in E`` / ``distribute V over E`` into
    same-length Python tuples; return the text and {(line, col) of the statement: kind}."""
    toks = _tokens(text)
    lines = text.split("\n")
    marks: dict[tuple[int, int], str] = {}
    for ln in _logical_lines(toks):
        t = ln.tokens
        i = 0
        while i < len(t) and t[i].type == tokenize.STRING:
            i += 1
        if i == 0 or i >= len(t) or t[i].type != tokenize.NAME:
            continue
        kw = t[i].string
        if kw not in ("where", "distribution", "distribute"):
            continue
        r, c = t[i].start
        lines[r - 1] = lines[r - 1][:c] + "," + " " * (len(kw) - 1) + lines[r - 1][c + len(kw):]
        kind = _MARK_WHERE if kw == "where" else _MARK_DIST
        if kw == "distribute":
            for u in t[i + 1 :]:
                if u.type == tokenize.NAME and u.string == "over":
                    r2, c2 = u.start
                    lines[r2 - 1] = lines[r2 - 1][:c2] + "in  " + lines[r2 - 1][c2 + 4:]
                    break
        marks[ln.start] = kind
    return "\n".join(lines), marks


class _Builder:
    """Walks a program module: finds prompt statements, nested queries and the decoder."""

    def __init__(self, query_source: str) -> None:
        self.prompts: list[PromptStatement] = []
        self.nested: dict[str, str | None] = {}
        self.imported_from: dict[str, str] = {}
        self.decoder: Decoder | None = None
        self.source = query_source
        self.texts: list[list[str]] = []
        self.nested_pos: dict[str, tuple[int, int]] = {}  # the program texts being parsed (innermost last)

    def program(self, text: str, shift: Callable[[int, int], tuple[int, int]],
                function: str | None = None, top: bool = True) -> ast.Module:
        rewritten, marks = _rewrite_clauses(text)
        self.texts.append(rewritten.split("\n"))
        try:
            module = ast.parse(rewritten)
        except SyntaxError as e:
            line, col = shift(e.lineno or 1, (e.offset or 1) - 1)
            raise QuerySyntaxError(f"invalid syntax: {e.msg}", line=line, column=col) from None
        body = self.stmts(module.body, marks, shift, function, top=top)
        self.texts.pop()
        return ast.Module(body=body, type_ignores=[])

    # -- statements --
    def stmts(self, body: list[ast.stmt], marks: dict, shift: Callable, function: str | None,
              top: bool = False, docstring_ok: bool = False) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for k, st in enumerate(body):
            if top and self.decoder is None and self.is_decoder_stmt(st) and not any(
                p.function is None for p in self.prompts
            ):
                self.decoder = self.decoder_of(st.value, shift)  # type: ignore[attr-defined]
                continue
            if docstring_ok and k == 0 and isinstance(st, ast.Expr) and isinstance(
                st.value, ast.Constant) and isinstance(st.value.value, str):
                out.append(st)
                continue
            p = self.prompt_of(st, marks, shift, function)
            if p is not None:
                out.append(p)
                continue
            out.append(self.stmt(st, marks, shift, function))
        return out

    def stmt(self, st: ast.stmt, marks: dict, shift: Callable, function: str | None) -> ast.stmt:
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            mod = st.module if isinstance(st, ast.ImportFrom) else None
            for a in st.names:
                bound = a.asname or a.name.split(".")[0]
                self.imported_from[bound] = mod or a.name
            return st
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return self.function(st, marks, shift)
        if isinstance(st, ast.ClassDef):
            st.body = self.stmts(st.body, marks, shift, function, docstring_ok=True) or [ast.Pass()]
            return st
        for name in ("body", "orelse", "finalbody"):
            sub = getattr(st, name, None)
            if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                setattr(st, name, self.stmts(sub, marks, shift, function) or [ast.Pass()])
        if isinstance(st, ast.Try):
            for h in st.handlers:
                h.body = self.stmts(h.body, marks, shift, function) or [ast.Pass()]
        return st

    def function(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, marks: dict,
                 shift: Callable) -> ast.stmt:
        is_query = False
        model = None
        decorators = []
        for d in fn.decorator_list:
            target = d.func if isinstance(d, ast.Call) else d
            if ast.unparse(target) in ("lmql.query", "query"):
                is_query = True
                if isinstance(d, ast.Call):
                    for kw in d.keywords:
                        if kw.arg == "model" and isinstance(kw.value, ast.Constant):
                            model = kw.value.value
                continue
            decorators.append(d)
        body = fn.body
        if is_query:
            self.nested[fn.name] = model
            self.nested_pos[fn.name] = shift(fn.lineno, fn.col_offset)
            doc = body[0] if body else None
            if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)):
                raise QuerySyntaxError(
                    f"@lmql.query function {fn.name!r} needs its query as a docstring",
                    **dict(zip(("line", "column"), shift(fn.lineno, fn.col_offset))),
                )
            # the query is the docstring's *source* (LMQL reads it as query text: "\\n" stays an
            # escape for the inner string literals), not its Python value
            text, base_line, base_col = self.raw_string(doc.value)
            first_line = text.split("\n", 1)[0]
            skip = 0
            if first_line.strip() in ("lmql", ""):
                text = text.split("\n", 1)[1] if "\n" in text else ""
                skip = 1
            ded = textwrap.dedent(text)
            d = _common_indent(text)

            def inner_shift(line: int, col: int, _b=base_line, _s=skip, _d=d, _c=base_col) -> tuple[int, int]:
                r = _b + _s + line - 1
                return shift(r, col + _d + (_c if line == 1 and not _s else 0))

            sub = self.program(ded, inner_shift, function=fn.name, top=False)
            body = sub.body + list(body[1:]) or [ast.Pass()]
            decorators.insert(0, ast.parse(f"{RUNTIME_NAME}.nested_query").body[0].value)  # type: ignore[attr-defined]
        else:
            body = self.stmts(body, marks, shift, fn.name, docstring_ok=True) or [ast.Pass()]
        new = ast.FunctionDef(
            name=fn.name, args=fn.args, body=body, decorator_list=decorators, returns=fn.returns,
            type_comment=None, **({"type_params": []} if hasattr(ast.FunctionDef, "type_params") else {}),
        )
        return ast.copy_location(new, fn)

    def raw_string(self, node: ast.Constant) -> tuple[str, int, int]:
        """The source text inside a string literal's quotes, and where it starts (line, col)."""
        lines = self.texts[-1]
        r0, c0, r1, c1 = node.lineno, node.col_offset, node.end_lineno, node.end_col_offset
        assert r1 is not None and c1 is not None
        if r0 == r1:
            seg = lines[r0 - 1][c0:c1]
        else:
            seg = "\n".join([lines[r0 - 1][c0:], *lines[r0 : r1 - 1], lines[r1 - 1][:c1]])
        i = 0
        while i < len(seg) and seg[i] not in "'\"":
            i += 1
        q = seg[i : i + 3] if seg[i : i + 3] in ('"""', "'''") else seg[i]
        return seg[i + len(q) : len(seg) - len(q)], r0, c0 + i + len(q)

    # -- decoders --
    @staticmethod
    def is_decoder_stmt(st: ast.stmt) -> bool:
        if not isinstance(st, ast.Expr):
            return False
        v = st.value
        if isinstance(v, ast.Call):
            v = v.func
        return isinstance(v, ast.Name) and (v.id in DECODERS or v.id in _OTHER_LMQL_DECODERS)

    @staticmethod
    def decoder_of(node: ast.expr, shift: Callable) -> Decoder:
        line, col = shift(node.lineno, node.col_offset)
        name_node = node.func if isinstance(node, ast.Call) else node
        assert isinstance(name_node, ast.Name)
        name = name_node.id
        if name not in DECODERS:
            raise QuerySyntaxError(
                f"decoder {name!r} is not supported (supported: {', '.join(DECODERS)})",
                line=line, column=col,
            )
        opts: dict[str, Any] = {}
        if isinstance(node, ast.Call):
            if node.args:
                raise QuerySyntaxError(f"decoder {name}(...) takes keyword options only",
                                       line=line, column=col)
            for kw in node.keywords:
                if kw.arg is None or kw.arg not in DECODER_OPTIONS[name]:
                    raise QuerySyntaxError(
                        f"unknown option {kw.arg!r} of decoder {name} (known: "
                        f"{', '.join(sorted(DECODER_OPTIONS[name]))})", line=line, column=col,
                    )
                try:
                    opts[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    raise QuerySyntaxError(f"decoder option {kw.arg} must be a constant",
                                           line=line, column=col) from None
        return Decoder(name, opts, line, col)

    # -- prompts --
    def prompt_of(self, st: ast.stmt, marks: dict, shift: Callable,
                  function: str | None) -> ast.stmt | None:
        if not isinstance(st, ast.Expr):
            return None
        v = st.value
        where = dist = None
        key = (st.lineno, st.col_offset)
        if isinstance(v, ast.Tuple) and key in marks and len(v.elts) == 2:
            s, extra = v.elts
            if marks[key] == _MARK_WHERE:
                where = extra
            else:
                if not (isinstance(extra, ast.Compare) and len(extra.ops) == 1
                        and isinstance(extra.ops[0], ast.In) and isinstance(extra.left, ast.Name)):
                    line, col = shift(extra.lineno, extra.col_offset)
                    raise QuerySyntaxError("a distribution clause reads 'distribution VAR in "
                                           "EXPR'", line=line, column=col)
                dist = (extra.left.id, extra.comparators[0])
            v = s
        elif isinstance(v, ast.Tuple) and key in marks:
            line, col = shift(v.lineno, v.col_offset)
            raise QuerySyntaxError("a where clause must be one expression (no top-level comma)",
                                   line=line, column=col)
        if isinstance(v, ast.JoinedStr):
            line, col = shift(v.lineno, v.col_offset)
            raise QuerySyntaxError("f-strings are not prompts: write {expr} in a plain string",
                                   line=line, column=col)
        if not (isinstance(v, ast.Constant) and isinstance(v.value, str)):
            return None
        line, col = shift(v.lineno, v.col_offset)
        segs = parse_template(v.value, Position(line, col))
        holes: dict[str, tuple[int, int]] = {}
        for sg in segs:
            if isinstance(sg, Hole):
                holes.setdefault(sg.name, (sg.line, sg.column))
        p = PromptStatement(len(self.prompts), segs, holes, where, dist, line, col, shift=shift,
                            function=function)
        self.prompts.append(p)
        call = ast.Call(
            func=ast.Attribute(ast.Name(RUNTIME_NAME, ast.Load()), "prompt", ast.Load()),
            args=[ast.Constant(p.id), ast.Call(ast.Name("locals", ast.Load()), [], [])],
            keywords=[],
        )
        if holes:
            target = ast.Tuple([ast.Name(h, ast.Store()) for h in holes], ast.Store())
            new: ast.stmt = ast.Assign(targets=[target], value=call)
        else:
            new = ast.Expr(call)
        return ast.fix_missing_locations(ast.copy_location(new, st))


def _common_indent(text: str) -> int:
    ind = [len(ln) - len(ln.lstrip()) for ln in text.split("\n") if ln.strip()]
    return min(ind) if ind else 0


class _StripAwait(ast.NodeTransformer):
    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.visit(node.value)


# ---- name checks ----------------------------------------------------------------------------------


def _bound_names(module: ast.Module) -> set[str]:
    out: set[str] = set()
    for n in ast.walk(module):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                out.add(a.asname or a.name.split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
    return out


def _free_loads(node: ast.AST, bound: set[str]) -> list[ast.Name]:
    return [
        n for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in bound
        and not hasattr(builtins, n.id) and n.id != RUNTIME_NAME
    ]


# ---- entry point ----------------------------------------------------------------------------------


def parse(source: str, *, filename: str = "<query>") -> Query:
    """Parse and check a query script (either form). Raises typed :class:`QueryError`s with the
    line and column; no model is touched."""
    if not isinstance(source, str):
        raise TypeError(f"a query is a str, got {type(source).__name__}")
    src_lines = source.split("\n")
    toks = _tokens(source)
    lines = _logical_lines(toks)
    parts = _line_parts(lines)
    builder = _Builder(source)
    model: str | None = None
    model_pos: tuple[int, int] | None = None
    where_expr: ast.expr | None = None
    dist_clause: tuple[str, ast.expr] | None = None
    if parts is None:
        form = "modern"
        module = builder.program(source, lambda r, c: (r, c + 1))
    else:
        form = "standalone"
        tree = _parse_skeleton(parts)
        pre, dec, body, clauses = tree
        decoder_part = parts[dec]
        text = "".join(t.string if i == 0 else (" " * (t.start[1] - decoder_part.tokens[i - 1].end[1])
                       + t.string) for i, t in enumerate(decoder_part.tokens))
        builder.decoder = _Builder.decoder_of(
            _shifted_expr(text, decoder_part.start), lambda r, c: (r, c + 1))
        # program text: preamble + dedented body, same line numbers
        dst = _blank_like(src_lines)
        for k in pre:
            p = parts[k]
            _copy_span(src_lines, dst, p.start, p.end, whole_lines=True)
        body_dst = _blank_like(src_lines)
        for k in body:
            p = parts[k]
            _copy_span(src_lines, body_dst, p.start, p.end, whole_lines=p.kind != "INLINE")
        indent = min(parts[k].start[1] for k in body)
        shifts: dict[int, int] = {}
        for r, ln in enumerate(body_dst, start=1):
            if ln.strip():
                cut = min(indent, len(ln) - len(ln.lstrip(" \t")))
                dst[r - 1] = ln[cut:]
                shifts[r] = cut
        module = builder.program("\n".join(dst), lambda r, c: (r, c + shifts.get(r, 0) + 1))
        seen: set[str] = set()
        for kind, ks in clauses:
            head = parts[ks[0]]
            if kind in seen:
                raise QuerySyntaxError(f"duplicate {kind} clause", line=head.start[0],
                                       column=head.start[1] + 1)
            seen.add(kind)
            spans = [parts[k] for k in ks]
            kw = head.tokens[0].string
            if kind == "from":
                strs = [t for p in spans for t in p.tokens if t.type == tokenize.STRING]
                if not strs:
                    raise QuerySyntaxError("the from clause needs a model name string",
                                           line=head.start[0], column=head.start[1] + 1)
                model = ast.literal_eval(strs[0].string)
                model_pos = (strs[0].start[0], strs[0].start[1] + 1)
            elif kind == "where":
                where_expr = _expr_from_span(src_lines, spans, len(kw))
            else:
                rep = {}
                if kw == "distribute":
                    for t in (t for p in spans for t in p.tokens):
                        if t.type == tokenize.NAME and t.string == "over":
                            rep[t.start] = "in  "
                            break
                e = _expr_from_span(src_lines, spans, len(kw), rep)
                if not (isinstance(e, ast.Compare) and len(e.ops) == 1 and isinstance(e.ops[0], ast.In)
                        and isinstance(e.left, ast.Name)):
                    raise QuerySyntaxError(
                        f"the {kw} clause reads '{kw} VAR {'over' if kw == 'distribute' else 'in'} "
                        "EXPR'", line=head.start[0], column=head.start[1] + 1)
                dist_clause = (e.left.id, e.comparators[0])
    module = _StripAwait().visit(module)
    decoder = builder.decoder or Decoder()
    query = Query(
        source=source, form=form, decoder=decoder, model=model, model_position=model_pos,
        prompts=builder.prompts, module=ast.fix_missing_locations(module), free_names={},
        nested_queries=builder.nested, nested_positions=builder.nested_pos,
        imported_from=builder.imported_from, filename=filename,
    )
    _attach_global_clauses(query, where_expr, dist_clause)
    _check(query)
    return query


def _shifted_expr(text: str, start: tuple[int, int]) -> ast.expr:
    try:
        e = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise QuerySyntaxError(f"invalid decoder: {exc.msg}", line=start[0],
                               column=start[1] + (exc.offset or 1)) from None
    ast.increment_lineno(e, start[0] - 1)
    return e


def _parse_skeleton(parts: list[_Part]) -> tuple[list[int], int, list[int], list[tuple[str, list[int]]]]:
    import lark

    parser = _skeleton_parser()
    ip = parser.parse_interactive("")
    try:
        for i, p in enumerate(parts):
            ip.feed_token(lark.Token(p.kind, str(i), line=p.start[0], column=p.start[1] + 1))
        tree = ip.feed_eof()
    except lark.exceptions.UnexpectedToken as e:
        tok = e.token
        what = {"CODE": "code", "INDENTED": "indented code", "DECODER": "a decoder",
                "INLINE": "prompt text", "FROM": "'from'", "WHERE": "'where'",
                "DIST": "a distribution clause", "$END": "the end of the query"}.get(tok.type, tok.type)
        expected = sorted({
            {"FROM": "from", "WHERE": "where", "DIST": "distribution", "INDENTED": "an indented body",
             "CODE": "code", "INLINE": "a prompt", "DECODER": "a decoder"}.get(x, x)
            for x in e.expected
        })
        line = getattr(tok, "line", None)
        col = getattr(tok, "column", None)
        if tok.type == "$END" and parts:
            line, col = parts[-1].end[0], parts[-1].end[1] + 1
        raise QuerySyntaxError(
            f"unexpected {what} in a standalone query (expected {' or '.join(expected)}); the "
            "standalone form is: DECODER <indented prompt body> from \"model\" [where ...] "
            "[distribution VAR in ...]",
            line=line, column=col,
        ) from None
    pre = [int(t) for t in tree.children[0].children]
    dec = int(tree.children[1])
    body = [int(t) for t in tree.children[2].children]
    clauses = []
    for c in tree.children[3:]:
        kind = {"from_clause": "from", "where_clause": "where", "dist_clause": "distribution"}[c.data]
        clauses.append((kind, [int(t) for t in c.children]))
    return pre, dec, body, clauses


def _conjuncts(e: ast.expr) -> list[ast.expr]:
    if isinstance(e, ast.BoolOp) and isinstance(e.op, ast.And):
        return [c for v in e.values for c in _conjuncts(v)]
    return [e]


def _attach_global_clauses(q: Query, where: ast.expr | None,
                           dist: tuple[str, ast.expr] | None) -> None:
    """Standalone where/distribution clauses: hand each conjunct to the prompts holding its holes."""
    all_holes: dict[str, tuple[int, int]] = {}
    for p in q.prompts:
        for h, pos in p.holes.items():
            all_holes.setdefault(h, pos)
    if where is not None:
        bound = _bound_names(q.module)
        for c in _conjuncts(where):
            names = {n.id for n in ast.walk(c) if isinstance(n, ast.Name) and n.id in all_holes}
            if not names:
                # compile against every hole: raises the right typed error (not a hole / unknown)
                compile_where(c, all_holes, env=literal_env({}),
                              known=lambda n: n in bound or hasattr(builtins, n),
                              imported_from=q.imported_from)
                raise QuerySyntaxError(f"the constraint {ast.unparse(c)!r} names no hole",
                                       line=c.lineno, column=c.col_offset + 1)
            targets = [p for p in q.prompts if names <= set(p.holes)]
            if not targets:
                raise QuerySyntaxError(
                    f"the constraint {ast.unparse(c)!r} relates holes of different prompts "
                    f"({', '.join(sorted(names))}); it cannot be compiled per hole",
                    line=c.lineno, column=c.col_offset + 1,
                )
            for p in targets:
                p.where = c if p.where is None else ast.BoolOp(ast.And(), [p.where, c])
                p.shift = None if p.where is c else p.shift
    if dist is not None:
        var, expr = dist
        owners = [p for p in q.prompts if var in p.holes]
        if not owners:
            raise UnknownVariableError(
                var, f"the distribution clause names {var!r}, which is not a hole",
                line=expr.lineno, column=expr.col_offset + 1)
        owners[-1].distribution = (var, expr)


def _check(q: Query) -> None:
    bound = _bound_names(q.module)
    holes = set(q.hole_names)
    bound |= holes
    free: dict[str, tuple[int, int]] = {}
    # program code (prompt calls are already rewritten; interpolations are checked below)
    for n in _free_loads(q.module, bound):
        free.setdefault(n.id, (n.lineno, n.col_offset + 1))
    for p in q.prompts:
        for sg in p.segments:
            if isinstance(sg, Interp):
                for n in _free_loads(sg.expr, bound):
                    free.setdefault(n.id, (sg.line, sg.column))
            elif isinstance(sg, Hole) and sg.type_kind == "name":
                root = sg.type_value.split(".")[0]  # type: ignore[union-attr]
                if root not in bound and not hasattr(builtins, root):
                    free.setdefault(root, (sg.line, sg.column))
        if p.distribution is not None:
            _var, expr = p.distribution
            for n in _free_loads(expr, bound):
                free.setdefault(n.id, _pos(p, n))
    for name, fn_model in q.nested_queries.items():
        if fn_model and not _is_local_model(fn_model):
            line, col = q.nested_positions.get(name, (None, None))
            q.external_errors.append(ExternalToolError(
                name,
                f"nested query {name!r} runs on the hosted model {fn_model!r} "
                "(@lmql.query(model=...)): remote services are not available (missing function: "
                f"{name})",
                line=line, column=col,
            ))
    for name, mod in q.imported_from.items():
        if mod.startswith("lmql.") and mod != "lmql":
            line, col = _import_pos(q, name)
            names = [n for n, m in q.imported_from.items() if m == mod]
            if any(e.function == ", ".join(names) for e in q.external_errors):
                continue
            q.external_errors.append(ExternalToolError(
                ", ".join(names),
                f"{', '.join(names)} come{'s' if len(names) == 1 else ''} from {mod}, LMQL's "
                "library of external tools and services, which this engine does not provide "
                f"(missing function{'s' if len(names) > 1 else ''}: {', '.join(names)})",
                line=line, column=col,
            ))
    q.free_names = free
    # where-clauses: compile the constant ones now (typed errors before any model call)
    origins = {**q.imported_from, **{n: "<nested query>" for n in q.nested_queries}}
    for p in q.prompts:
        if p.where is None:
            continue
        try:
            compile_where(p.where, p.holes, env=opaque_env, known=lambda n: n in bound,
                          shift=p.shift, imported_from=origins)
        except ExternalToolError as exc:
            q.external_errors.append(exc)
            p.deferred = True
            continue
        try:
            specs = compile_where(
                p.where, p.holes, env=literal_env({}),
                known=lambda n: n in bound or hasattr(builtins, n),
                shift=p.shift, imported_from=q.imported_from,
            )
        except Deferred:
            p.deferred = True
            # still validate targets and functions with every operand treated as opaque
            compile_where(p.where, p.holes, env=opaque_env, known=lambda n: n in bound,
                          shift=p.shift, imported_from=q.imported_from)
            continue
        for s in specs.values():
            s.check()
        p.specs = specs
    for p in q.prompts:
        for sg in p.segments:
            if isinstance(sg, Hole) and sg.type_kind in ("int", "regex"):
                _typed_spec(p, sg)  # raises on a bad regex / contradiction


def _typed_spec(p: PromptStatement, h: Hole) -> None:
    from decoding.query.constraints import int_lang, land, regex_lang
    from grammars import GrammarError

    try:
        lang = int_lang() if h.type_kind == "int" else regex_lang(h.type_value or "")
    except GrammarError as exc:
        raise QuerySyntaxError(f"hole [{h.name}: {h.type_source}]: {exc}", line=h.line,
                               column=h.column) from None
    spec = p.specs.get(h.name)
    if spec is None:
        if p.deferred:
            return
        spec = p.specs[h.name] = HoleSpec(h.name, line=h.line, column=h.column)
    spec.lang = land(spec.lang, lang)
    if h.type_kind == "int":
        spec.value_type = int
    spec.check()


def _pos(p: PromptStatement, n: ast.AST) -> tuple[int, int]:
    if p.shift is not None:
        return p.shift(n.lineno, n.col_offset)
    return n.lineno, n.col_offset + 1


def _import_pos(q: Query, name: str) -> tuple[int | None, int | None]:
    for n in ast.walk(q.module):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                if (a.asname or a.name.split(".")[0]) == name:
                    return n.lineno, n.col_offset + 1
    return None, None


_LOCAL_MODEL_NAMES = {"smollm2", "default", "local", "smollm2-135m-instruct",
                      "huggingfacetb/smollm2-135m-instruct"}


def _is_local_model(name: str) -> bool:
    import os

    n = name.strip().lower()
    n = n.removeprefix("local:")
    return n in _LOCAL_MODEL_NAMES or os.path.exists(os.path.expanduser(name.removeprefix("local:")))


def is_local_model(name: str) -> bool:
    """Whether a from-clause model name maps to a local model (a path, or the default model)."""
    return _is_local_model(name)


def _raise(e: QueryError) -> None:  # pragma: no cover - helper for lambdas
    raise e
