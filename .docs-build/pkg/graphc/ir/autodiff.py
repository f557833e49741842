"""Reverse-mode autodiff as a graph transform: appends the backward graph, one VJP rule per op."""

from __future__ import annotations

from .algorithms import ancestors, descendants
from .builder import Builder
from .errors import GradError
from .graph import Graph
from .ops import OPS
from .types import broadcast_shapes


def sum_to(b: Builder, grad: str, target: str) -> str:
    """Reduce (or broadcast) ``grad`` to the shape of value ``target``: undoes broadcasting."""
    gt, tt = b.type_of(grad), b.type_of(target)
    if gt.shape == tt.shape:
        return grad
    lead = gt.rank - tt.rank
    if lead > 0:
        grad = b.sum(grad, axes=tuple(range(lead)))
        gt = b.type_of(grad)
    ones = tuple(i for i, (d, t) in enumerate(zip(gt.shape, tt.shape)) if t == 1 and d != 1)
    if ones:
        grad = b.sum(grad, axes=ones, keepdims=True)
        gt = b.type_of(grad)
    if gt.shape != tt.shape and broadcast_shapes(gt.shape, tt.shape) == tt.shape:
        grad = b.broadcast_to(grad, target)
    return grad


def _name_operand(b: Builder, value: str, fwd: str, k: int) -> None:
    """Provenance: mark the node computing operand ``k``'s gradient "grad of FWD operand k"."""
    for j in range(len(b.nodes) - 1, -1, -1):
        n = b.nodes[j]
        if n.name == value:
            if n.origin == f"grad of {fwd}":
                b.nodes[j] = n.with_(origin=f"grad of {fwd} operand {k}")
            return


def gradients(
    g: Graph, loss: str, wrt: tuple[str, ...] | list[str]
) -> tuple[Graph, dict[str, str]]:
    """Append the nodes computing d(loss)/d(w) for every w in ``wrt``.

    Args:
        g: the forward graph.
        loss: name of a scalar value of ``g``.
        wrt: names of values (usually params) to differentiate with respect to.

    Returns:
        The graph with backward nodes (section "backward") appended, and a map from each
        name in ``wrt`` to the name of its gradient value (same shape as the value).

    Raises:
        GradError: the loss is not a scalar, or an op on the path has no VJP rule.
    """
    lt = g[loss].type
    if lt.shape != ():
        raise GradError(f"the loss {loss} must be a scalar, got {lt}")
    b = Builder(g, section="backward", dtype=lt.dtype)
    active = ancestors(g, [loss]) & descendants(g, list(wrt))
    cotangent: dict[str, str] = {loss: b.const(1.0, dtype=lt.dtype)}
    for node in reversed(g.nodes):
        if node.name not in active or node.name not in cotangent or not node.inputs:
            continue
        spec = OPS[node.op]
        dy = cotangent[node.name]
        needs = [i in active for i in node.inputs]
        if not any(needs):
            continue
        if spec.nondifferentiable:
            continue  # comparisons and masks: the derivative is zero almost everywhere
        b.loc = node.loc
        b.origin = f"grad of {node.name}"
        grads = spec.grad(b, node, dy)
        for k, gx in enumerate(grads):
            if gx is not None:
                _name_operand(b, gx, node.name, k)
        for k, (x, gx) in enumerate(zip(node.inputs, grads)):
            if gx is None or not needs[k]:
                continue
            b.origin = f"grad of {node.name} operand {k}"
            gx = sum_to(b, gx, x)
            cotangent[x] = b.add(cotangent[x], gx) if x in cotangent else gx
    b.loc = b.origin = None
    out: dict[str, str] = {}
    for w in wrt:
        if w not in cotangent:
            raise GradError(f"{loss} does not depend on {w}: no gradient")
        out[w] = cotangent[w]
    return b.graph(g.name, g.outputs, g.updates), out
