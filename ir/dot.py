"""Graphviz pictures of graphs: ``graph_dot`` (DOT source) and ``graph_svg`` (SVG text).

``graph_svg`` renders through the ``graphviz`` Python package when it is installed, else the
``dot`` program; both need Graphviz's ``dot`` on the PATH. ``Graph._repr_svg_`` (Jupyter) uses
it and falls back to the text form when Graphviz is missing.
"""

from __future__ import annotations

import shutil
import subprocess

from .errors import GraphcError
from .graph import Graph, Node
from .ops import SOURCE_OPS
from .text import format_attr

INSTALL_DOT = (
    "Graphviz's 'dot' program is not installed, and --format svg needs it. Install "
    "it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
    "conda: conda install graphviz), or use --format dot and render it elsewhere."
)


SECTION_COLORS = {"forward": "#dbeafe", "backward": "#fde2c8", "update": "#dcfce7"}
SOURCE_COLORS = {"input": "#ffffff", "param": "#fef9c3", "state": "#f3e8ff"}


def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _ops_summary(ops: list[str]) -> str:
    """``matmul + add + relu``, or ``13 ops: mul x6, add x3, ...`` for long lists."""
    if len(ops) <= 4:
        return " + ".join(ops)
    counts: dict[str, int] = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return f"{len(ops)} ops: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())


def graph_dot(
    g: Graph, *, title: str | None = None, with_loc: bool = True, collapse: bool = False
) -> str:
    """Graphviz source for ``g``.

    A box per node (``name = op(operands)``, type, provenance) filled by section (forward blue,
    backward orange, update green); sources are ellipses (input white, param yellow, state
    violet); each fusion group is a red cluster labeled with the ops and nodes it absorbed (one
    box listing them with ``collapse``). Constants are written into their users' operand lists
    instead of drawn; a node whose value updates a param or state has a bold green border.
    """
    consts = {n.name: format_attr(n.attr("value")) for n in g.nodes if n.op == "const"}
    updates: dict[str, list[str]] = {}
    for t, v in g.updates:
        updates.setdefault(v, []).append(t)

    def operand(i: str) -> str:
        return consts.get(i, i)

    def label(n: Node) -> str:
        if n.op in SOURCE_OPS:
            return f"{n.name}\n{n.op} {n.type}"
        attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in n.attrs if k != "dtype")
        text = (
            f"{n.name} = {n.op}({', '.join(operand(i) for i in n.inputs)})"
            + (f" {{{attrs}}}" if attrs else "")
            + f"\n{n.type}"
        )
        notes = [s for s in (n.origin, n.loc if with_loc else None) if s]
        if notes:
            text += "\n" + ", ".join(notes)
        if n.name in updates:
            text += "\n-> " + ", ".join(updates[n.name])
        return text

    def style(n: Node) -> str:
        if n.op in SOURCE_OPS:
            return f'shape=ellipse, style=filled, fillcolor="{SOURCE_COLORS[n.op]}"'
        border = ', color="#15803d", penwidth=2' if n.name in updates else ""
        return (
            f'shape=box, style="rounded,filled", '
            f'fillcolor="{SECTION_COLORS.get(n.section, "#eeeeee")}"{border}'
        )

    lines = [
        f"digraph {_dot_str(g.name)} {{",
        f"  label={_dot_str(title or g.name)}; labelloc=t; fontname=Helvetica;",
        "  rankdir=TB; nodesep=0.2; ranksep=0.3;",
        '  node [fontname=Helvetica, fontsize=10, margin="0.08,0.03"];',
        '  edge [color="#555555", arrowsize=0.6];',
    ]
    groups: dict[str, list[Node]] = {}
    for n in g.nodes:
        if n.group is not None:
            groups.setdefault(n.group, []).append(n)
    box_of = {n.name: n.name for n in g.nodes}
    for n in g.nodes:
        if n.group is None and n.op != "const":
            lines.append(f"  {_dot_str(n.name)} [label={_dot_str(label(n))}, {style(n)}];")
    for gid, members in groups.items():
        ops = _ops_summary([m.op for m in members if m.op != "const"])
        absorbed = f"{members[0].name}" + (f"..{members[-1].name}" if len(members) > 1 else "")
        if collapse:
            key = "group:" + gid
            for m in members:
                box_of[m.name] = key
            sec = members[-1].section
            body = "\n".join(label(m).split("\n")[0] for m in members if m.op != "const")
            ups = [t for m in members for t in updates.get(m.name, [])]
            text = f"fused {gid}: {ops}\n{members[-1].type}\n{body}" + (
                "\n-> " + ", ".join(ups) if ups else ""
            )
            border = "#15803d" if ups else "#b91c1c"
            lines.append(
                f"  {_dot_str(key)} [label={_dot_str(text)}, shape=box, "
                'style="rounded,filled,bold",'
                f' fillcolor="{SECTION_COLORS.get(sec, "#eeeeee")}", color="{border}"];'
            )
            continue
        lines.append(f"  subgraph {_dot_str('cluster_' + gid)} {{")
        lines.append(
            f"    label={_dot_str(f'fused {gid}: {ops} ({absorbed})')}; "
            'style="rounded,bold"; color="#b91c1c"; fontcolor="#b91c1c"; fontsize=10;'
        )
        for m in members:
            if m.op != "const":
                lines.append(f"    {_dot_str(m.name)} [label={_dot_str(label(m))}, {style(m)}];")
        lines.append("  }")
    edges: set[tuple[str, str]] = set()
    for n in g.nodes:
        for i in n.inputs:
            if i in consts or i not in box_of:
                continue
            e = (box_of[i], box_of[n.name])
            if e[0] != e[1] and e not in edges:
                edges.add(e)
                lines.append(f"  {_dot_str(e[0])} -> {_dot_str(e[1])};")
    lines.append('  subgraph cluster_legend { label="legend"; fontsize=9; style=dotted;')
    for sec, color in SECTION_COLORS.items():
        lines.append(
            f'    "legend_{sec}" [label="{sec}", shape=box, style="rounded,filled", '
            f'fillcolor="{color}", fontsize=9];'
        )
    lines.append(
        '    "legend_fused" [label="fused group", shape=box, style="rounded,bold", '
        'color="#b91c1c", fontsize=9];'
    )
    lines.append(
        '    "legend_target" [label="updates a param/state", shape=box, '
        'style="rounded,bold", color="#15803d", fontsize=9];'
    )
    lines.append(
        '    "legend_forward" -> "legend_backward" -> "legend_update" -> "legend_fused" '
        '-> "legend_target" [style=invis];'
    )
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines)


def render_svg(dot_source: str) -> str:
    """SVG text of a Graphviz graph, made by the ``dot`` program.

    Raises:
        GraphcError: ``dot`` is not installed (the message says how to install it) or failed.
    """
    return run_dot(dot_source, "svg").decode()


def run_dot(dot_source: str, fmt: str) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise GraphcError(INSTALL_DOT)
    proc = subprocess.run(
        [exe, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise GraphcError(f"Graphviz dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def graph_svg(dot_source: str) -> str:
    """SVG text of DOT source, through the ``graphviz`` package if installed, else ``dot``.

    Raises:
        GraphcError: Graphviz's ``dot`` is not installed or failed.
    """
    try:
        import graphviz
    except ImportError:
        return render_svg(dot_source)
    try:
        return graphviz.Source(dot_source).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        raise GraphcError(INSTALL_DOT) from None
    except graphviz.CalledProcessError as e:
        raise GraphcError(f"Graphviz dot failed: {e}") from None


def svg_or_none(dot_source: str) -> str | None:
    """``graph_svg``, or None when Graphviz is missing (Jupyter then shows the text repr)."""
    try:
        return graph_svg(dot_source)
    except GraphcError:
        return None
