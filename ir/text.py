"""The text form of graphs: ``print_graph`` and its inverse ``parse_graph`` (plus a JSON form).

``parse_graph(print_graph(g)) == g`` for every graph: node order, ops, operands, attrs, types,
sections, fusion groups, outputs and updates all survive; so do ``loc`` and ``origin`` (which
take no part in ``==``). Example (the digits network, training graph, shortened)::

    graph digits(
        x: f32[N,64],                                        @examples/models.py:8
        fc1.w: f32[64,32] param {init="he_uniform"},         @examples/models.py:10
        labels: i32[N]
    ) {
      %0 = matmul(x, fc1.w) : f32[N,32]                      @examples/models.py:10
      fused g1 {
        %1 = add(%0, fc1.b) : f32[N,32]                      @examples/models.py:10
        %2 = relu(%1) : f32[N,32]                            @examples/models.py:10
      }
     backward:
      %8 = sum(%7) {axes=[0]} : f32[10]          @examples/models.py:10  # grad of %4 operand 1
     update:
      lr = input() : f32[]
      %18 = add(step, %17) : f32[]
      return %5
      update step <- %18
    }

Grammar (EBNF; whitespace and newlines separate tokens and are otherwise insignificant)::

    graph    = "graph" name "(" [ source { "," source } [ "," ] ] ")" "{" { stmt } "}" ;
    source   = name ":" type [ "param" | "state" ] [ attrs ] [ loc ] [ origin ] ;
                 (* loc and origin may also follow the source's comma *)
    stmt     = section | fused | node | return | update ;
    section  = ( "forward" | "backward" | "update" ) ":" ;  (* sets the section of what follows *)
    fused    = "fused" name "{" { section | node } "}" ;      (* the nodes of one fusion group *)
    node     = name "=" op "(" [ name { "," name } ] ")" [ attrs ] [ ":" type ] [ loc ]
               [ origin ] ;
    return   = "return" [ name { "," name } ] ;  (* the outputs, once; the first on its line *)
    update   = "update" name "<-" name { "," name "<-" name } ;       (* target <- new value *)
    attrs    = "{" [ key "=" value { "," key "=" value } ] "}" ;
    value    = int | float | "true" | "false" | string | "[" [ value { "," value } ] "]" ;
    type     = dtype "[" [ dim { "," dim } ] "]" ;          (* f32[N,64]; f32[] is a scalar *)
    dim      = int | "N" ;
    loc      = "@" ( string | bare ) ;          (* the user's file:line; bare: no space , # " *)
    origin   = "#" text to the end of the line ;                  (* provenance, see below *)
    name     = "%" word | ( letter | "_" ) word | string ;  (* word: letters, digits, _ and . *)
    op = key = dtype = ( letter | "_" ) { letter | digit | "_" } ;

Meaning:
    - Sources listed in the header are inputs unless marked ``param`` (trainable) or ``state``
      (optimizer slots, counters), all in the forward section. In node order each one stands
      just before the statement (a node, or a fused block) that first reads it, in header order
      among several, or first of all when nothing reads it. Sources that stand elsewhere
      (``lr``, ``step`` and the optimizer slots of a training graph, in its update section) are
      written in the body where they stand, as ``lr = input() : f32[]``.
    - Nodes keep the textual order. The section (forward, backward, update) starts as forward
      and changes at each section label. ``fused G { ... }`` gives its nodes ``group = G``.
    - Attrs are sorted by key; floats are written with ``repr`` (exact round trip; ``inf``,
      ``-inf`` and ``nan`` are accepted), tuples as ``[...]``.
    - ``: type`` may be left out of a hand-written node; it is then inferred from the operands.
    - Provenance: ``@file:line`` is the node's ``loc``; a comment on the same line, after the
      node, is its ``origin`` ("grad of %3 operand 0", "fused %4 %5"). Comments on their own
      line, or after ``{`` of a fused block, are ignored.

Errors: ``parse_graph`` raises ``ParseError`` with ``line:col``, the offending line and a caret
under the bad token. The text may come from an untrusted file (a ``.gcm``), so the parser bounds
what it builds: lists nest at most ``MAX_NESTING`` deep, an int attribute must fit in int64 or
uint64 (``[-2**63, 2**64)``: seeds are uint64), a dimension in int64 (``>= 0``), a number literal
is at most
``MAX_NUMBER_CHARS`` characters and a finite float literal must stay finite in float64; each
breach is a ``ParseError`` at the literal (never a RecursionError or Python's int-string limit).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from .errors import ParseError
from .graph import SECTIONS, Graph, Node, make_attrs
from .ops import SOURCE_OPS
from .types import TensorType

MAX_NESTING = 64  # list attrs nested deeper than this are refused (the IR uses at most 2)
MAX_NUMBER_CHARS = 128  # longer number literals are refused (repr of a float64 is <= 24)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1  # int attributes may be uint64 (seeds); dimensions are int64

__all__ = [
    "format_attr",
    "format_node",
    "graph_from_json",
    "graph_lines",
    "graph_to_json",
    "parse_graph",
    "print_graph",
    "renumbered",
]

_BARE_NAME = re.compile(r"(%[\w.]+|[A-Za-z_][\w.]*)\Z")
_BARE_LOC = re.compile(r'[^\s#",]+\Z')
LOC_COLUMN = 58  # where ``@loc`` starts when the node text is shorter


# ------------------------------------------------------------------------------------- printing


def format_name(name: str) -> str:
    """A value or group name: bare when it is a word, else a quoted string."""
    return name if _BARE_NAME.match(name) else _quote(name)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_attr(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, tuple | list):
        return "[" + ",".join(format_attr(x) for x in v) + "]"
    return str(v)


def format_attrs(node: Node) -> str:
    if not node.attrs:
        return ""
    return " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in node.attrs) + "}"


def _provenance(text: str, node: Node, with_loc: bool, width: int = LOC_COLUMN) -> str:
    tail = ""
    if with_loc and node.loc:
        tail += "@" + (node.loc if _BARE_LOC.match(node.loc) else _quote(node.loc))
    if node.origin:
        tail += ("  " if tail else "") + "# " + node.origin.replace("\n", " ")
    if not tail:
        return text
    return f"{text:<{width}}  {tail}"


def format_node(node: Node, *, with_loc: bool = True, width: int = LOC_COLUMN) -> str:
    """One node as ``name = op(operands) {attrs} : type  @loc  # origin`` (provenance from
    column ``width`` on, when the text is shorter)."""
    ins = ", ".join(format_name(i) for i in node.inputs)
    text = f"{format_name(node.name)} = {node.op}({ins}){format_attrs(node)} : {node.type}"
    return _provenance(text, node, with_loc, width)


def _format_source(node: Node) -> str:
    """A header source, ``name: type [param|state] {attrs}`` (provenance is added by the caller)."""
    kind = "" if node.op == "input" else f" {node.op}"
    return f"{format_name(node.name)}: {node.type}{kind}{format_attrs(node)}"


def renumbered(g: Graph) -> Graph:
    """``g`` with its generated names (``%N``) renumbered ``%0, %1, ...`` in node order."""
    mapping: dict[str, str] = {}
    for n in g.nodes:
        if n.name.startswith("%") and n.name[1:].isdigit():
            mapping[n.name] = f"%{len(mapping)}"
    taken = {n.name for n in g.nodes if n.name not in mapping}
    if any(v in taken for v in mapping.values()):
        return g  # a user name looks like a generated one: keep every name as it is

    def r(s: str) -> str:
        return mapping.get(s, s)

    nodes = tuple(n.with_(name=r(n.name), inputs=tuple(r(i) for i in n.inputs)) for n in g.nodes)
    return g.with_(
        nodes=nodes,
        outputs=tuple(r(o) for o in g.outputs),
        updates=tuple((r(t), r(v)) for t, v in g.updates),
    )


def _unit_starts(nodes: list[Node] | tuple[Node, ...]) -> list[int]:
    """For each node, the index where its statement starts: a fused block (a run of nodes with
    one group) is one statement, any other node is one by itself."""
    out: list[int] = []
    for k, n in enumerate(nodes):
        same = k > 0 and n.group is not None and nodes[k - 1].group == n.group
        out.append(out[k - 1] if same else k)
    return out


def _first_readers(nodes: list[Node] | tuple[Node, ...]) -> dict[str, int]:
    """For each value, where the statement of its first reader starts."""
    start = _unit_starts(nodes)
    out: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for i in n.inputs:
            out.setdefault(i, start[k])
    return out


def _place_header(head: list[Node], body: list[Node]) -> tuple[Node, ...]:
    """Merge header sources into the body: each just before the statement (node or fused block)
    that first reads it, in header order among several; first of all when nothing reads it."""
    first = _first_readers(body)
    before: dict[int, list[Node]] = {}
    for n in head:
        if n.name in first:
            before.setdefault(first[n.name], []).append(n)
    out = [n for n in head if n.name not in first]
    for k, n in enumerate(body):
        out += before.get(k, [])
        out.append(n)
    return tuple(out)


def _header_sources(g: Graph) -> set[str]:
    """The sources the header holds: forward and ungrouped ones that ``_place_header`` puts
    back where they stand (checked); the others are written in the body where they stand."""

    def fits(n: Node) -> bool:
        return n.op in SOURCE_OPS and n.section == "forward" and n.group is None

    first = _first_readers(g.nodes)
    lead: set[str] = set()
    for n in g.nodes:
        if not (fits(n) and n.name not in first):
            break
        lead.add(n.name)
    out = set(lead)
    for k in sorted(set(first.values())):
        j = k - 1
        while j >= 0 and fits(g.nodes[j]) and first.get(g.nodes[j].name) == k:
            out.add(g.nodes[j].name)
            j -= 1
    for chosen in (out, lead):
        head = [n for n in g.nodes if n.name in chosen]
        body = [n for n in g.nodes if n.name not in chosen]
        if _place_header(head, body) == g.nodes:
            return chosen
    return set()


def graph_lines(
    g: Graph, *, with_loc: bool = True, renumber: bool = False
) -> list[tuple[str, str | None]]:
    """The text of ``g`` line by line, each with the name of the node it shows (or None)."""
    if renumber:
        g = renumbered(g)
    in_head = _header_sources(g)
    head = [n for n in g.nodes if n.name in in_head]
    k = len(head)
    out: list[tuple[str, str | None]] = []
    one_line = f"graph {format_name(g.name)}(" + ", ".join(_format_source(n) for n in head) + ") {"
    if (
        len(one_line) <= 100
        and not (with_loc and any(n.loc for n in head))
        and not any(n.origin for n in head)
    ):
        out.append((one_line, None))
    else:
        out.append((f"graph {format_name(g.name)}(", None))
        for i, n in enumerate(head):
            text = _format_source(n) + ("," if i < k - 1 else "")
            out.append(("    " + _provenance(text, n, with_loc, LOC_COLUMN - 2), n.name))
        out.append((") {", None))
    section, group = "forward", None
    for n in g.nodes:
        if n.name in in_head:
            continue
        if n.group != group and group is not None:
            out.append(("  }", None))
            group = None
        if n.section != section:
            out.append(((" " if group is None else "   ") + f"{n.section}:", None))
            section = n.section
        if n.group is not None and n.group != group:
            members = [m.op for m in g.nodes if m.group == n.group]
            out.append((f"  fused {format_name(n.group)} {{  # {' + '.join(members)}", None))
            group = n.group
        indent = "    " if group is not None else "  "
        width = LOC_COLUMN + 2 - len(indent)  # provenance in one column, inside blocks too
        out.append((indent + format_node(n, with_loc=with_loc, width=width), n.name))
    if group is not None:
        out.append(("  }", None))
    out.append(
        (
            "  return"
            + ("" if not g.outputs else " " + ", ".join(format_name(o) for o in g.outputs)),
            None,
        )
    )
    for t, v in g.updates:
        out.append((f"  update {format_name(t)} <- {format_name(v)}", None))
    out.append(("}", None))
    return out


def print_graph(g: Graph, *, with_loc: bool = True, renumber: bool = False) -> str:
    """The graph as text (grammar in this module's docstring); ``parse_graph`` reads it back.

    Args:
        g: any graph (it need not verify).
        with_loc: write each node's ``@file:line``.
        renumber: rename generated values ``%0, %1, ...`` in node order (for golden tests).
    """
    return "\n".join(text for text, _ in graph_lines(g, with_loc=with_loc, renumber=renumber))


# ------------------------------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<loc>@(?:"(?:[^"\\\n]|\\.)*"|[^\s#",]+))
  | (?P<arrow><-)
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.%]))
  | (?P<name>%[\w.]+|[A-Za-z_][\w.]*)
  | (?P<punct>[-(){}\[\],:=])
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str  # string | loc | arrow | number | name | punct | eof
    text: str
    line: int
    col: int
    comment: str | None = None  # a comment that follows this token on the same line


def _clip(s: str, n: int = 40) -> str:
    """``s``, shortened to about ``n`` characters for an error message."""
    return s if len(s) <= n else f"{s[: n // 2]}...{s[-8:]} ({len(s)} characters)"


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), body)


class _Parser:
    def __init__(self, text: str, check: bool) -> None:
        self.text = text
        self.lines = text.split("\n")
        self.check = check
        self.toks = self._tokenize()
        self.pos = 0

    # -- tokens

    def _tokenize(self) -> list[_Tok]:
        toks: list[_Tok] = []
        i, line, line_start = 0, 1, 0
        while i < len(self.text):
            m = _TOKEN.match(self.text, i)
            col = i - line_start + 1
            if m is None:
                self.fail_at(line, col, f"unexpected character {self.text[i]!r}")
            kind, s = m.lastgroup, m.group()
            if kind == "comment":
                if toks and toks[-1].line == line and toks[-1].comment is None:
                    toks[-1].comment = s[1:].strip()
            elif kind is not None and kind != "ws":
                toks.append(_Tok(kind, s, line, col))
            nl = s.count("\n")
            if nl:
                line += nl
                line_start = i + s.rindex("\n") + 1
            i = m.end()
        toks.append(_Tok("eof", "", line, i - line_start + 1))
        return toks

    def fail_at(self, line: int, col: int, msg: str) -> NoReturn:
        src = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        caret = col - 1
        if len(src) > 160:  # a long (hostile) line: 60 characters either side of the column
            lo = max(0, caret - 60)
            src = ("..." if lo else "") + src[lo : caret + 60] + "..."
            caret = caret - lo + (3 if lo else 0)
        raise ParseError(f"{line}:{col}: {msg}\n  {src}\n  {' ' * caret}^")

    def fail(self, msg: str, tok: _Tok | None = None) -> NoReturn:
        tok = tok or self.peek()
        found = "end of input" if tok.kind == "eof" else repr(tok.text)
        self.fail_at(tok.line, tok.col, f"{msg}, found {found}")

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.pos + k, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.peek()
        self.pos += 1
        return tok

    def at(self, text: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t.kind in ("punct", "name", "arrow") and t.text == text

    def expect(self, text: str, what: str | None = None) -> _Tok:
        if not self.at(text):
            self.fail(f"expected {what or repr(text)}")
        return self.next()

    def name(self, what: str = "a name") -> str:
        t = self.peek()
        if t.kind == "name":
            return self.next().text
        if t.kind == "string":
            return _unquote(self.next().text)
        self.fail(f"expected {what}")
        raise AssertionError

    def word(self, what: str) -> str:
        t = self.peek()
        if t.kind != "name" or t.text.startswith("%") or "." in t.text:
            self.fail(f"expected {what}")
        return self.next().text

    def names(self, end: str) -> list[str]:
        out: list[Any] = []
        if self.at(end):
            return out
        out.append(self.name())
        while self.at(","):
            self.next()
            out.append(self.name())
        return out

    # -- pieces

    def type_(self) -> TensorType:
        start = self.peek()
        dtype = self.word("a type such as f32[N,64]")
        self.expect("[", "'[' after the dtype")
        dims: list[int | str] = []
        while not self.at("]"):
            if dims:
                self.expect(",", "',' or ']' in the shape")
            t = self.next()
            if t.kind == "number" and t.text.isdigit():
                dims.append(self.int_literal(t, INT64_MAX, "a dimension"))
            elif t.kind == "name" and t.text == "N":
                dims.append("N")
            else:
                self.fail("expected a dimension (an int >= 0 or N)", t)
        self.next()
        try:
            return TensorType(tuple(dims), dtype)
        except ValueError as e:
            self.fail_at(start.line, start.col, str(e))
            raise AssertionError from None

    def int_literal(self, t: _Tok, hi: int = UINT64_MAX, what: str = "an int") -> int:
        """The int of number token ``t``, refused (ParseError) outside ``[INT64_MIN, hi]``
        (checked on the digits before converting: Python refuses ints over 4300 digits)."""
        digits = t.text.lstrip("+-").lstrip("0") or "0"
        if len(digits) > 20 or not INT64_MIN <= int(t.text) <= hi:
            self.fail_at(
                t.line, t.col, f"{what} {_clip(t.text)} is out of range [{INT64_MIN}, {hi}]"
            )
        return int(t.text)

    def value(self, depth: int = 0) -> Any:
        t = self.next()
        if t.kind == "number":
            if len(t.text) > MAX_NUMBER_CHARS:
                self.fail_at(
                    t.line,
                    t.col,
                    f"number literal {_clip(t.text)} is longer than {MAX_NUMBER_CHARS} characters",
                )
            if re.fullmatch(r"[-+]?\d+", t.text):
                return self.int_literal(t)
            x = float(t.text)
            if not math.isfinite(x):
                self.fail_at(t.line, t.col, f"float literal {_clip(t.text)} overflows float64")
            return x
        if t.kind == "string":
            return _unquote(t.text)
        if t.kind == "name" and t.text in ("true", "false"):
            return t.text == "true"
        if t.kind == "name" and t.text in ("inf", "nan"):
            return float(t.text)
        if t.kind == "punct" and t.text == "-" and self.peek().text == "inf":
            self.next()
            return -math.inf
        if t.kind == "punct" and t.text == "[":
            if depth >= MAX_NESTING:
                self.fail_at(t.line, t.col, f"lists nest deeper than {MAX_NESTING} levels")
            items: list[Any] = []
            while not self.at("]"):
                if items:
                    self.expect(",", "',' or ']' in the list")
                items.append(self.value(depth + 1))
            self.next()
            return tuple(items)
        self.fail("expected an attr value (number, true, false, string or [...])", t)

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not self.at("{"):
            return out
        self.next()
        while not self.at("}"):
            if out:
                self.expect(",", "',' or '}' in the attrs")
            key_tok = self.peek()
            key = self.word("an attr name")
            if key in out:
                self.fail_at(key_tok.line, key_tok.col, f"attr {key!r} given twice")
            self.expect("=", "'=' after the attr name")
            out[key] = self.value()
        self.next()
        return out

    def provenance(self) -> tuple[str | None, str | None]:
        loc = None
        if self.peek().kind == "loc":
            s = self.next().text[1:]
            loc = _unquote(s) if s.startswith('"') else s
        return loc, self.toks[self.pos - 1].comment

    # -- graph

    def graph(self) -> Graph:
        self.expect("graph", "'graph'")
        gname = self.name("the graph's name")
        self.expect("(", "'(' after the graph's name")
        self.nodes: list[Node] = []
        self.defined: dict[str, TensorType] = {}
        while not self.at(")"):
            self.source()
            if self.at(","):
                comma = self.next()
                loc, origin = self.provenance()  # printed after the comma: "x: f32[4],  @f.py:3"
                if loc is not None and comma.line == self.toks[self.pos - 1].line:
                    self.nodes[-1] = self.nodes[-1].with_(loc=loc)
                if origin and self.nodes[-1].origin is None:
                    self.nodes[-1] = self.nodes[-1].with_(origin=origin)
            elif not self.at(")"):
                self.fail("expected ',' or ')' after a source")
        self.next()
        self.n_head = len(self.nodes)
        self.expect("{", "'{' to open the graph's body")
        self.section = "forward"
        self.group: str | None = None
        outputs: list[str] | None = None
        updates: list[tuple[str, str]] = []
        while not self.at("}"):
            t = self.peek()
            if t.kind == "eof":
                self.fail("expected '}' to close the graph")
            if self.at("=", 1):
                self.node()
            elif t.text in SECTIONS and self.at(":", 1):
                self.section_label()
            elif self.at("fused"):
                self.fused()
            elif self.at("return"):
                if outputs is not None:
                    self.fail("a second 'return'")
                ret = self.next()
                same_line = self.peek().line == ret.line
                outputs = (
                    self.names("}") if same_line and self.peek().kind in ("name", "string") else []
                )
            elif self.at("update"):
                self.next()
                while True:
                    target = self.name("an update target")
                    self.expect("<-", "'<-' in 'update TARGET <- VALUE'")
                    updates.append((target, self.name("an update value")))
                    if not self.at(","):
                        break
                    self.next()
            else:
                self.fail(
                    "expected a node 'NAME = op(...)', a section label, 'fused', "
                    "'return' or 'update'"
                )
        end = self.next()
        if self.peek().kind != "eof":
            self.fail("expected the end of input after the graph's '}'")
        if self.check:
            for name in list(outputs or []) + [x for u in updates for x in u]:
                if name not in self.defined:
                    self.fail_at(
                        end.line, end.col, f"an output or update names the undefined value {name!r}"
                    )
        nodes = _place_header(self.nodes[: self.n_head], self.nodes[self.n_head :])
        return Graph(gname, nodes, tuple(outputs or ()), tuple(updates))

    def add(self, node: Node, tok: _Tok) -> None:
        if self.check and node.name in self.defined:
            self.fail_at(tok.line, tok.col, f"value {node.name!r} is defined twice")
        self.defined[node.name] = node.type
        self.nodes.append(node)

    def source(self) -> None:
        tok = self.peek()
        name = self.name("a source 'NAME: type'")
        self.expect(":", "':' after the source's name")
        typ = self.type_()
        op = "input"
        if self.at("param") or self.at("state"):
            op = self.next().text
        attrs = self.attrs()
        loc, origin = self.provenance()
        self.add(Node(name, op, (), typ, make_attrs(attrs), "forward", None, loc, origin), tok)

    def section_label(self) -> None:
        self.section = self.next().text
        self.next()

    def fused(self) -> None:
        tok = self.next()
        if self.group is not None:
            self.fail("fused blocks do not nest", tok)
        self.group = self.name("the fusion group's name")
        self.expect("{", "'{' after 'fused NAME'")
        while not self.at("}"):
            t = self.peek()
            if t.text in SECTIONS and self.at(":", 1):
                self.section_label()
            elif self.at("=", 1):
                self.node()
            else:
                self.fail("expected a node or '}' in the fused block")
        self.next()
        self.group = None

    def node(self) -> None:
        from .ops import OPS

        tok = self.peek()
        name = self.name()
        self.expect("=")
        op_tok = self.peek()
        op = self.word("an op name")
        if self.check and op not in OPS:
            self.fail_at(op_tok.line, op_tok.col, f"unknown op {op!r}")
        self.expect("(", "'(' after the op")
        in_toks = []
        inputs: list[str] = []
        while not self.at(")"):
            if inputs:
                self.expect(",", "',' or ')' in the operands")
            in_toks.append(self.peek())
            inputs.append(self.name("an operand name"))
        self.next()
        if self.check:
            for t, i in zip(in_toks, inputs):
                if i not in self.defined:
                    self.fail_at(t.line, t.col, f"operand {i!r} is not defined before its use")
        attrs = self.attrs()
        if self.at(":"):
            self.next()
            typ = self.type_()
        elif op in SOURCE_OPS:
            self.fail(f"a {op} node needs ': type'")
        else:
            from .builder import infer_type
            from .errors import ShapeError

            missing = [i for i in inputs if i not in self.defined]
            if missing:
                self.fail(
                    f"cannot infer the type: operand {missing[0]!r} is undefined; expected ': type'"
                )
            try:
                typ = infer_type(op, tuple(inputs), [self.defined[i] for i in inputs], attrs, name)
            except ShapeError as e:
                self.fail_at(tok.line, tok.col, f"cannot infer the type: {e}")
        loc, origin = self.provenance()
        self.add(
            Node(
                name,
                op,
                tuple(inputs),
                typ,
                make_attrs(attrs),
                self.section,
                self.group,
                loc,
                origin,
            ),
            tok,
        )


def parse_graph(text: str, *, check: bool = True) -> Graph:
    """Read a graph from its text form (grammar in this module's docstring).

    Args:
        text: the output of ``print_graph`` or a hand-written graph.
        check: also reject unknown ops, names defined twice and operands, outputs or updates
            that name no earlier value. With ``check=False`` only the syntax is checked (tests of
            the verifier use this to build broken graphs).

    Returns:
        The graph; ``parse_graph(print_graph(g)) == g``.

    Raises:
        ParseError: with ``line:col``, the offending line, and a caret under the bad token.
    """
    return _Parser(text, check).graph()


# ------------------------------------------------------------------------------------- JSON

JSON_VERSION = 1


def _json_attr(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_json_attr(x) for x in v]
    return v


def graph_to_json(g: Graph, *, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The graph as a JSON-ready dict (schema in docs/ir.md); ``graph_from_json`` reads it back.

    Args:
        g: the graph.
        extra: per node name, more fields to add to that node's object (e.g. "related").
    """
    groups: dict[str, list[str]] = {}
    for n in g.nodes:
        if n.group is not None:
            groups.setdefault(n.group, []).append(n.name)
    nodes = []
    for n in g.nodes:
        obj: dict[str, Any] = {
            "name": n.name,
            "op": n.op,
            "inputs": list(n.inputs),
            "type": {"shape": list(n.type.shape), "dtype": n.type.dtype},
            "attrs": {k: _json_attr(v) for k, v in n.attrs},
            "section": n.section,
            "group": n.group,
            "loc": n.loc,
            "origin": n.origin,
        }
        obj.update((extra or {}).get(n.name, {}))
        nodes.append(obj)
    return {
        "format": "graphc-graph",
        "version": JSON_VERSION,
        "name": g.name,
        "nodes": nodes,
        "edges": [
            {"from": i, "to": n.name, "operand": k} for n in g.nodes for k, i in enumerate(n.inputs)
        ],
        "outputs": list(g.outputs),
        "updates": [{"target": t, "value": v} for t, v in g.updates],
        "sections": {s: [n.name for n in g.nodes if n.section == s] for s in SECTIONS},
        "groups": [{"name": k, "nodes": v, "ops": [g[m].op for m in v]} for k, v in groups.items()],
    }


def graph_from_json(obj: dict[str, Any] | str) -> Graph:
    """The graph of a ``graph_to_json`` dict (or its JSON text); extra fields are ignored.

    Raises:
        ParseError: a field is missing or malformed.
    """
    data: dict[str, Any]
    if isinstance(obj, str):
        try:
            data = json.loads(obj)
        except json.JSONDecodeError as e:
            raise ParseError(f"{e.lineno}:{e.colno}: not JSON: {e.msg}") from None
        except (RecursionError, ValueError) as e:  # nested too deep; an int over 4300 digits
            raise ParseError(f"not JSON graphc can read: {type(e).__name__}: {e}") from None
    else:
        data = obj
    try:
        nodes = tuple(
            Node(
                n["name"],
                n["op"],
                tuple(n["inputs"]),
                TensorType(tuple(n["type"]["shape"]), n["type"]["dtype"]),
                make_attrs(n.get("attrs", {})),
                n.get("section", "forward"),
                n.get("group"),
                n.get("loc"),
                n.get("origin"),
            )
            for n in data["nodes"]
        )
        return Graph(
            data["name"],
            nodes,
            tuple(data["outputs"]),
            tuple((u["target"], u["value"]) for u in data.get("updates", [])),
        )
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise ParseError(f"malformed graph JSON: {type(e).__name__}: {e}") from None
