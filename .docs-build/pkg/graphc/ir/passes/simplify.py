"""Simplification: common-subexpression elimination, constant folding and algebraic identities.

Every rule looks at one node (whose operands have already been rewritten) and returns a
replacement node (same name), the name of an existing value that replaces it, or None. One
driver, ``rewrite_to_fixpoint``, applies CSE and the rules until nothing matches; it returns the
graph object itself when nothing changed.

    %0 = const() {value=1.0} : f32[]            graph f(x: f32[4]) {
    %1 = mul(x, %0) : f32[4]            ==>       return x
    return %1                                 }

Left out on purpose: x * 0 -> 0 and x - x -> 0 (wrong for x = inf or NaN, and a NaN must stay
visible to the numerics checks), and any rewrite that changes the rounding of float32 values
other than folding constants.
"""

from __future__ import annotations

import math

from collections.abc import Callable

import numpy as np

from ..graph import Graph, Node, attrs_key, make_attrs, value_key
from ..ops import OPS, SOURCE_OPS, Kind, normalize_axes
from ..types import BATCH

Rule = Callable[[Node, dict[str, Node]], "Node | str | None"]


# ---------------------------------------------------------------------------- helpers


def const_value(nodes: dict[str, Node], name: str | None) -> float | None:
    """The value of ``name`` when it is a scalar ``const`` node, else None."""
    n = nodes.get(name) if name is not None else None
    if n is None or n.op != "const":
        return None
    return float(n.attr("value"))


def _same_type(nodes: dict[str, Node], x: str, n: Node) -> bool:
    return nodes[x].type == n.type


# ---------------------------------------------------------------------------- rules


def mul_by_one(n: Node, nodes: dict[str, Node]) -> str | None:
    """mul(x, 1) -> x and mul(1, x) -> x, when no broadcasting happens."""
    if n.op != "mul":
        return None
    x, y = n.inputs
    if const_value(nodes, y) == 1.0 and _same_type(nodes, x, n):
        return x
    if const_value(nodes, x) == 1.0 and _same_type(nodes, y, n):
        return y
    return None


def _is_zero(v: float | None, sign: float) -> bool:
    """v is the zero of the given sign (+1.0 or -1.0): +0.0 and -0.0 are told apart."""
    return v == 0.0 and math.copysign(1.0, v) == sign


def add_zero(n: Node, nodes: dict[str, Node]) -> str | None:
    """add(x, -0.0) -> x and add(-0.0, x) -> x, when no broadcasting happens.

    Only the negative zero is the identity of IEEE addition: -0.0 + +0.0 is +0.0, so x + 0.0 is
    not x at x = -0.0 (and 1 / (x + 0.0) would turn +inf into -inf); that add stays.
    """
    if n.op != "add":
        return None
    x, y = n.inputs
    if _is_zero(const_value(nodes, y), -1.0) and _same_type(nodes, x, n):
        return x
    if _is_zero(const_value(nodes, x), -1.0) and _same_type(nodes, y, n):
        return y
    return None


def sub_zero(n: Node, nodes: dict[str, Node]) -> str | None:
    """sub(x, +0.0) -> x, when no broadcasting happens (x - (-0.0) is x + 0.0: not x at -0.0)."""
    if (
        n.op == "sub"
        and _is_zero(const_value(nodes, n.inputs[1]), 1.0)
        and _same_type(nodes, n.inputs[0], n)
    ):
        return n.inputs[0]
    return None


def div_by_one(n: Node, nodes: dict[str, Node]) -> str | None:
    """div(x, 1) -> x, when no broadcasting happens."""
    if (
        n.op == "div"
        and const_value(nodes, n.inputs[1]) == 1.0
        and _same_type(nodes, n.inputs[0], n)
    ):
        return n.inputs[0]
    return None


def neg_of_neg(n: Node, nodes: dict[str, Node]) -> str | None:
    """neg(neg(x)) -> x."""
    if n.op == "neg" and nodes[n.inputs[0]].op == "neg":
        return nodes[n.inputs[0]].inputs[0]
    return None


def transpose_of_transpose(n: Node, nodes: dict[str, Node]) -> str | None:
    """transpose(transpose(x)) -> x."""
    if n.op == "transpose" and nodes[n.inputs[0]].op == "transpose":
        return nodes[n.inputs[0]].inputs[0]
    return None


def broadcast_to_same_shape(n: Node, nodes: dict[str, Node]) -> str | None:
    """broadcast_to(x, like) -> x when x already has the result's type."""
    if n.op == "broadcast_to" and _same_type(nodes, n.inputs[0], n):
        return n.inputs[0]
    return None


def reshape_to_same_shape(n: Node, nodes: dict[str, Node]) -> str | None:
    """reshape(x) {shape=s} -> x when x's shape is s."""
    if n.op == "reshape" and _same_type(nodes, n.inputs[0], n):
        return n.inputs[0]
    return None


def reshape_of_reshape(n: Node, nodes: dict[str, Node]) -> Node | None:
    """reshape(reshape(x)) {shape=s} -> reshape(x) {shape=s} (row-major order is kept by both)."""
    if n.op == "reshape" and nodes[n.inputs[0]].op == "reshape":
        return n.with_(inputs=(nodes[n.inputs[0]].inputs[0],))
    return None


FOLDABLE_KINDS = (Kind.POINTWISE, Kind.SCALAR)


def fold_constants(n: Node, nodes: dict[str, Node]) -> Node | None:
    """op(c1, c2, ...) -> const() {value=op(c1, c2, ...)} for scalar ops whose operands are consts.

    The value is computed with the op's numpy reference in the node's own dtype, as the compiled
    code would. ``size`` over axes of fixed length folds to its count; over N it does not.
    """
    if n.op == "size":
        x = nodes[n.inputs[0]].type
        dims = [x.shape[a] for a in normalize_axes("size", n.attr("axes"), x.rank)]
        if BATCH in dims:
            return None
        return _const_node(n, float(np.prod(dims, dtype=np.float64)))
    if n.op == "const" or n.type.shape != () or not n.inputs or n.type.dtype == "i32":
        return None
    spec = OPS[n.op]
    if spec.kind not in FOLDABLE_KINDS or spec.data_operands is not None:
        return None
    if spec.needs_index:  # dropout: its mask is drawn per element index
        return None
    values = [const_value(nodes, i) for i in n.inputs]
    if any(v is None for v in values) or any(nodes[i].type.shape != () for i in n.inputs):
        return None
    dt = n.type.np_dtype
    with np.errstate(all="ignore"):
        out = spec.evaluate(*(np.array(v, dtype=dt) for v in values), **n.attr_dict)
    return _const_node(n, float(np.asarray(out, dtype=dt)))


def _const_node(n: Node, value: float) -> Node:
    return n.with_(
        op="const",
        inputs=(),
        attrs=make_attrs({"value": value, "dtype": n.type.dtype}),
        origin=f"folded {n.op}" + (f"; {n.origin}" if n.origin else ""),
    )


SIMPLIFY_RULES: tuple[Rule, ...] = (
    fold_constants,
    mul_by_one,
    add_zero,
    sub_zero,
    div_by_one,
    neg_of_neg,
    transpose_of_transpose,
    broadcast_to_same_shape,
    reshape_to_same_shape,
    reshape_of_reshape,
)


# ---------------------------------------------------------------------------- driver


def _cse_key(n: Node) -> tuple | None:
    if n.op in SOURCE_OPS:
        return None
    if n.op == "const":  # {value=1.0} and {dtype="f32", value=1.0} are one constant
        return ("const", value_key(float(n.attr("value"))), n.type)  # by bits: -0.0 is not 0.0
    return (n.op, n.inputs, attrs_key(n.attrs), n.type)


def rewrite_to_fixpoint(
    g: Graph, rules: tuple[Rule, ...] = SIMPLIFY_RULES, *, cse: bool = True, max_rounds: int = 20
) -> Graph:
    """Apply ``rules`` (and CSE when ``cse``) to every node until nothing matches.

    Nodes replaced by another value disappear and their uses (outputs and updates included) are
    renamed; a node replaced by a node keeps its name. Returns ``g`` itself when nothing changed.
    """
    current = g
    for _ in range(max_rounds):
        out = _rewrite_once(current, rules, cse)
        if out is current:
            break
        current = out
    return current


def _rewrite_once(g: Graph, rules: tuple[Rule, ...], cse: bool) -> Graph:
    rename: dict[str, str] = {}
    nodes: dict[str, Node] = {}
    seen: dict[tuple, str] = {}
    kept: list[Node] = []
    changed = False
    for n in g.nodes:
        inputs = tuple(rename.get(i, i) for i in n.inputs)
        if inputs != n.inputs:
            n = n.with_(inputs=inputs)
            changed = True
        for rule in rules:
            r = rule(n, nodes)
            if r is None:
                continue
            changed = True
            if isinstance(r, str):
                rename[n.name] = r
                n = None
                break
            n = r
        if n is None:
            continue
        key = _cse_key(n) if cse else None
        if key is not None and key in seen:
            rename[n.name] = seen[key]
            changed = True
            continue
        if key is not None:
            seen[key] = n.name
        nodes[n.name] = n
        kept.append(n)
    if not changed:
        return g

    def follow(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    return g.with_(
        nodes=tuple(kept),
        outputs=tuple(follow(o) for o in g.outputs),
        updates=tuple((t, follow(v)) for t, v in g.updates),
    )


def eliminate_common_subexpressions(g: Graph) -> Graph:
    """Nodes with the same op, operands, attrs and type are computed once."""
    return rewrite_to_fixpoint(g, (), cse=True)


def simplify(g: Graph) -> Graph:
    """CSE, constant folding and SIMPLIFY_RULES until nothing matches; returns g itself if unchanged."""
    return rewrite_to_fixpoint(g, SIMPLIFY_RULES, cse=True)
