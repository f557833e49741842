"""The text form of graphs: ``print_graph`` (the parser arrives with the IR text issue)."""

from __future__ import annotations

from .graph import Graph, Node

SOURCE_OPS = ("input", "param", "state")


def format_attr(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        return "[" + ",".join(format_attr(x) for x in v) + "]"
    return str(v)


def format_attrs(node: Node) -> str:
    if not node.attrs:
        return ""
    return " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in node.attrs) + "}"


def format_node(node: Node, *, with_loc: bool = True) -> str:
    text = f"{node.name} = {node.op}({', '.join(node.inputs)}){format_attrs(node)} : {node.type}"
    notes = [s for s in (node.loc if with_loc else None, node.origin) if s]
    return f"{text:<60}  # {'; '.join(notes)}" if notes else text


def print_graph(g: Graph, *, with_loc: bool = True) -> str:
    """The graph as text: header with sources, one node per line by section, outputs, updates."""
    sources = []
    for n in g.nodes:
        if n.op in SOURCE_OPS:
            kind = "" if n.op == "input" else f" {n.op}"
            sources.append(f"{n.name}: {n.type}{kind}{format_attrs(n)}")
    lines = [f"graph {g.name}(" + ", ".join(sources) + ") {"]
    section = "forward"
    group = None
    for n in g.nodes:
        if n.op in SOURCE_OPS:
            continue
        if n.group != group and group is not None:
            lines.append("  }")
            group = None
        if n.section != section:
            lines.append(f" {n.section}:")
            section = n.section
        if n.group is not None and n.group != group:
            lines.append(f"  fused {n.group} {{")
            group = n.group
        indent = "    " if group else "  "
        lines.append(indent + format_node(n, with_loc=with_loc))
    if group is not None:
        lines.append("  }")
    lines.append("  return " + ", ".join(g.outputs))
    if g.updates:
        lines.append("  update " + ", ".join(f"{t} <- {v}" for t, v in g.updates))
    lines.append("}")
    return "\n".join(lines)
