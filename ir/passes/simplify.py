"""Simplification: common-subexpression elimination, constant folding and algebraic identities.

Every rule looks at one node (whose operands have already been rewritten) and returns a
replacement node (same name), the name of an existing value that replaces it, or None. A rule is
registered with ``@rewrites(op, ...)`` for the ops it looks at (``SIMPLIFY_RULES``: op -> rules),
and algebraic facts come from the ops' traits (one ``identity_operand`` rule reads
``Op.identity`` and ``Op.commutative``). One driver, ``rewrite_to_fixpoint``, applies CSE and the
rules until nothing matches; it returns the graph object itself when nothing changed.

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
RuleTable = dict[str, tuple[Rule, ...]]  # op -> its rules


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

# op -> the rules that look at nodes of that op, in the order they are tried (``rewrites``)
SIMPLIFY_RULES: RuleTable = {}


def rewrites(*ops: str) -> Callable[[Rule], Rule]:
    """Decorator: register a rule for the nodes of ``ops`` (it is never called for others)."""

    def deco(rule: Rule) -> Rule:
        for op in ops:
            SIMPLIFY_RULES[op] = (*SIMPLIFY_RULES.get(op, ()), rule)
        return rule

    return deco


def _is_exactly(v: float | None, e: float) -> bool:
    """v is e bit for bit (+0.0 and -0.0 are told apart)."""
    return v is not None and v == e and math.copysign(1.0, v) == math.copysign(1.0, e)


FOLDABLE_KINDS = (Kind.POINTWISE, Kind.SCALAR)


@rewrites(*(op for op, spec in OPS.items() if spec.kind in FOLDABLE_KINDS))
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
        return _const_node(n, float(np.prod([int(d) for d in dims], dtype=np.float64)))
    if n.op == "const" or n.type.shape != () or not n.inputs or n.type.dtype == "i32":
        return None
    spec = OPS[n.op]
    if spec.data_operands is not None:
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


@rewrites(*(op for op, spec in OPS.items() if spec.identity is not None))
def identity_operand(n: Node, nodes: dict[str, Node]) -> str | None:
    """op(x, e) -> x for the op's identity element e (``Op.identity``), and op(e, x) -> x when
    the op is commutative; only when no broadcasting happens, and e must match bit for bit.

    The identities: x + (-0.0), x - (+0.0), x * 1, x / 1. Only the negative zero is the identity
    of IEEE addition: -0.0 + +0.0 is +0.0, so x + 0.0 is not x at x = -0.0 (and 1 / (x + 0.0)
    would turn -inf into +inf); that add stays, and so does x - (-0.0).
    """
    spec = OPS[n.op]
    e = spec.identity
    assert e is not None  # registered only for ops with an identity
    x, y = n.inputs
    if _is_exactly(const_value(nodes, y), e) and _same_type(nodes, x, n):
        return x
    if spec.commutative and _is_exactly(const_value(nodes, x), e) and _same_type(nodes, y, n):
        return y
    return None


@rewrites("neg")
def neg_of_neg(n: Node, nodes: dict[str, Node]) -> str | None:
    """neg(neg(x)) -> x."""
    if nodes[n.inputs[0]].op == "neg":
        return nodes[n.inputs[0]].inputs[0]
    return None


@rewrites("transpose")
def transpose_of_transpose(n: Node, nodes: dict[str, Node]) -> str | None:
    """transpose(transpose(x)) -> x."""
    if nodes[n.inputs[0]].op == "transpose":
        return nodes[n.inputs[0]].inputs[0]
    return None


@rewrites("broadcast_to", "reshape")
def same_type_identity(n: Node, nodes: dict[str, Node]) -> str | None:
    """broadcast_to(x, like) -> x and reshape(x) {shape=s} -> x when x has the result's type."""
    if _same_type(nodes, n.inputs[0], n):
        return n.inputs[0]
    return None


@rewrites("reshape")
def reshape_of_reshape(n: Node, nodes: dict[str, Node]) -> Node | None:
    """reshape(reshape(x)) {shape=s} -> reshape(x) {shape=s} (row-major order is kept by both)."""
    if nodes[n.inputs[0]].op == "reshape":
        return n.with_(inputs=(nodes[n.inputs[0]].inputs[0],))
    return None


# ---------------------------------------------------------------------------- driver


def _cse_key(n: Node) -> tuple | None:
    if n.op in SOURCE_OPS:
        return None
    if n.op == "const":  # {value=1.0} and {dtype="f32", value=1.0} are one constant
        return ("const", value_key(float(n.attr("value"))), n.type)  # by bits: -0.0 is not 0.0
    return (n.op, n.inputs, attrs_key(n.attrs), n.type)


def rewrite_to_fixpoint(
    g: Graph, rules: RuleTable = SIMPLIFY_RULES, *, cse: bool = True, max_rounds: int = 20
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


def _rewrite_once(g: Graph, rules: RuleTable, cse: bool) -> Graph:
    rename: dict[str, str] = {}
    nodes: dict[str, Node] = {}
    seen: dict[tuple, str] = {}
    kept: list[Node] = []
    changed = False
    for node in g.nodes:
        n: Node | None = node
        inputs = tuple(rename.get(i, i) for i in node.inputs)
        if inputs != node.inputs:
            n = node.with_(inputs=inputs)
            changed = True
        for rule in rules.get(node.op, ()):
            assert n is not None
            r = rule(n, nodes)
            if r is None:
                continue
            changed = True
            if isinstance(r, str):
                rename[n.name] = r
                n = None
            else:
                n = r  # possibly another op: its rules run in the next round
            break
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


def simplify(g: Graph) -> Graph:
    """CSE, constant folding and SIMPLIFY_RULES until nothing matches; returns g itself if unchanged."""
    return rewrite_to_fixpoint(g, SIMPLIFY_RULES, cse=True)
