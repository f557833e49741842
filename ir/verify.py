"""The IR verifier: checks a graph's invariants and names the node (and the pass) that broke one.

Checked, in this order (the first problem found is raised):
    - names are unique; sections are forward/backward/update;
    - every op is registered, has the right number of operands and only the attrs it accepts
      (``Op.attr_names``); sources (input/param/state) have no operands;
    - operands name values defined earlier (a value defined later means a cycle or a wrong
      order: ``ir.algorithms.find_cycle`` tells which);
    - each stored type equals the type the op's rule infers from the operands' stored types
      (``ir.builder.infer_type``);
    - the nodes of a fusion group are contiguous (only sources and inline constants/sizes,
      which need no kernel, may stand between them);
    - outputs exist; each update's target is a param or state, given once, and its new value
      exists with the same type.
"""

from __future__ import annotations

from .errors import ShapeError, VerifyError
from .graph import SECTIONS, Graph, Node
from .ops import INLINE_OPS, SOURCE_OPS

CONTEXT_LINES = 5
INT64_MAX = 2**63 - 1


def memory_limit() -> int:
    """The byte limit ``check_sizes`` uses by default: the machine's physical memory
    (``sysconf(SC_PHYS_PAGES) * SC_PAGE_SIZE``; 2**48 where the OS does not say)."""
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return 2**48


def check_sizes(g: Graph, limit: int | None = None) -> Graph:
    """Refuse values too large to allocate, before anything compiles or allocates.

    Checked: each value's element count and byte size (per row for a batched value) fit in
    int64 (the generated code indexes with i64); each unbatched value, and the params and states
    together (they live in two flat regions for the model's life), fit in ``limit`` bytes.

    Args:
        g: the graph.
        limit: bytes; default ``memory_limit()`` (the machine's physical memory).

    Returns:
        ``g`` itself.

    Raises:
        ShapeError: naming the value, its type and the byte count.
    """
    limit = memory_limit() if limit is None else limit
    held = 0
    for n in g.nodes:
        count = n.type.elements_per_row()
        nbytes = count * n.type.itemsize
        what = "bytes per row" if n.type.is_batched else "bytes"
        if nbytes > INT64_MAX:
            raise ShapeError(
                f"value {n.name!r} ({n.op}) of type {n.type} has {count} elements "
                f"({nbytes} {what}): more than int64 can index (2**63 - 1)"
            )
        if not n.type.is_batched and nbytes > limit:
            raise ShapeError(
                f"value {n.name!r} ({n.op}) of type {n.type} needs {nbytes} bytes, more than "
                f"this machine's memory ({limit} bytes)"
            )
        if n.op in SOURCE_OPS and n.op != "input":
            held += nbytes
    if held > limit:
        raise ShapeError(
            f"graph {g.name!r}: its params and states need {held} bytes together, more than "
            f"this machine's memory ({limit} bytes)"
        )
    return g


def verify(g: Graph, after: str | None = None) -> Graph:
    """Check ``g``'s invariants (listed in the module docstring) and return ``g``.

    Args:
        g: the graph.
        after: the name of the pass that made ``g`` (named in the error).

    Returns:
        ``g`` itself, so that passes chain as ``g = verify(p(g), after=p.__name__)``.

    Raises:
        VerifyError: naming the node, the broken rule and the pass, with +-5 lines of the
            graph's text around the node, marked ``>>``.
    """
    problem = _first_problem(g)
    if problem is not None:
        node, msg = problem
        raise VerifyError(_message(g, node, msg, after))
    return g


def _first_problem(g: Graph) -> tuple[str | None, str] | None:
    from .builder import infer_type
    from .ops import OPS

    seen: dict[str, Node] = {}
    later = {n.name for n in g.nodes}
    for n in g.nodes:
        if n.name in seen:
            return n.name, f"node {n.name}: the name {n.name!r} is defined twice"
        if n.section not in SECTIONS:
            return n.name, f"node {n.name}: unknown section {n.section!r} (expected {SECTIONS})"
        spec = OPS.get(n.op)
        if spec is None:
            return n.name, f"node {n.name}: unknown op {n.op!r} (not in the op registry OPS)"
        if spec.arity is not None and len(n.inputs) != spec.arity:
            return n.name, (
                f"node {n.name}: {n.op} expects {spec.arity} operands, got {len(n.inputs)}"
            )
        bad = [k for k, _ in n.attrs if k not in spec.attr_names]
        if bad:
            allowed = ", ".join(spec.attr_names) or "none"
            return n.name, (
                f"node {n.name}: {n.op} does not accept attr {bad[0]!r} (accepted: {allowed})"
            )
        for k, i in enumerate(n.inputs):
            if i not in seen:
                if i in later:
                    from .algorithms import find_cycle

                    cycle = find_cycle(g)
                    if cycle is not None and n.name in cycle:
                        return n.name, (
                            f"node {n.name}: dependency cycle {' -> '.join(cycle + cycle[:1])}"
                        )
                    if cycle is not None:
                        return cycle[0], (
                            f"node {cycle[0]}: dependency cycle {' -> '.join(cycle + cycle[:1])}"
                        )
                    return n.name, (
                        f"node {n.name}: operand {k} ({i}) is used before its "
                        "definition (nodes are not in topological order)"
                    )
                return n.name, f"node {n.name}: operand {k} ({i}) is not defined in the graph"
        if n.op not in SOURCE_OPS:
            try:
                t = infer_type(
                    n.op, n.inputs, [seen[i].type for i in n.inputs], n.attr_dict, n.name, n.loc
                )
            except ShapeError as e:
                return n.name, f"node {n.name}: its op rejects its operands: {e}"
            if t != n.type:
                return n.name, (
                    f"node {n.name}: stored type {n.type} differs from the type "
                    f"{n.op} infers, {t} (operands: "
                    + ", ".join(f"{i} : {seen[i].type}" for i in n.inputs)
                    + ")"
                )
        seen[n.name] = n

    open_group, closed = None, set()
    for n in g.nodes:
        if n.group is None:
            if n.op in SOURCE_OPS or n.op in INLINE_OPS:
                continue
            if open_group is not None:
                closed.add(open_group)
                open_group = None
            continue
        if n.group != open_group:
            if n.group in closed:
                return n.name, (
                    f"node {n.name}: fusion group {n.group!r} is not contiguous "
                    "(another kernel's node stands between its nodes)"
                )
            if open_group is not None:
                closed.add(open_group)
            open_group = n.group

    for o in g.outputs:
        if o not in seen:
            return "return", f"output {o!r} is not a value of the graph"
    targets: set[str] = set()
    for tgt, v in g.updates:
        if tgt not in seen:
            return f"update {tgt}", f"update target {tgt!r} is not a value of the graph"
        if seen[tgt].op not in ("param", "state"):
            return tgt, f"node {tgt}: update target must be a param or state, not {seen[tgt].op}"
        if tgt in targets:
            return tgt, f"node {tgt}: updated twice"
        targets.add(tgt)
        if v not in seen:
            return tgt, f"node {tgt}: its update value {v!r} is not a value of the graph"
        if seen[v].type != seen[tgt].type:
            return v, (
                f"node {v}: update {tgt} <- {v} changes the type ({seen[tgt].type} <- {seen[v].type})"
            )
    return None


def _message(g: Graph, node: str | None, msg: str, after: str | None) -> str:
    from .text import graph_lines

    where = f"after pass {after}" if after else "in verify()"
    head = f"graph {g.name} {where}: {msg}"
    if after:
        head += "\n(an IR invariant broke between passes: this is a graphc bug, please report it)"
    try:
        lines = graph_lines(g)
    except (KeyError, TypeError, ValueError) as e:  # too broken to print: keep the message
        return f"{head}\n(cannot print the graph: {type(e).__name__}: {e})"
    marked = [k for k, (_, name) in enumerate(lines) if name == node]
    if not marked and node is not None:  # "return" or "update TARGET": mark that statement
        marked = [k for k, (text, _) in enumerate(lines) if text.lstrip().startswith(node)]
    if not marked:
        return head
    k = marked[0]
    lo, hi = max(0, k - CONTEXT_LINES), min(len(lines), k + CONTEXT_LINES + 1)
    body = [(">> " if j == k else "   ") + lines[j][0] for j in range(lo, hi)]
    return head + "\n" + "\n".join(body)
