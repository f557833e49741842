"""Builder: appends type-checked nodes to a growing graph (used by the DSL, autodiff and passes)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import GraphcError, ShapeError
from .graph import Graph, NameSupply, Node, make_attrs, make_node
from .ops import OPS
from .types import TensorType


def infer_type(
    op: str,
    inputs: tuple[str, ...],
    types: list[TensorType],
    attrs: dict[str, Any],
    name: str = "?",
    loc: str | None = None,
) -> TensorType:
    """The result type of ``op`` on operands of ``types``.

    Raises:
        ShapeError: naming the op, the would-be node, every operand with its type, and ``loc``.
    """
    if op not in OPS:
        raise ShapeError(f"unknown op {op!r} at node {name}")
    spec = OPS[op]
    if spec.arity is not None and len(types) != spec.arity:
        raise ShapeError(f"{op}: expects {spec.arity} operands, got {len(types)} (node {name})")
    try:
        _check_number_attrs(spec, attrs)
        return spec.infer(types, attrs)
    except (ShapeError, ValueError, TypeError) as e:  # a bad attr or type: the user's mistake
        raise ShapeError(describe_failure(str(e), op, inputs, types, attrs, name, loc)) from None


def _check_number_attrs(spec: Any, attrs: dict[str, Any]) -> None:
    """Every attr whose default is a float (elu/leaky_relu alpha, hard_sigmoid's alpha and
    beta, batch_norm's momentum and eps) is a finite real number, so that no string, bool or
    NaN reaches the lowering (where it failed outside GraphcError, or computed NaN); one whose
    default is infinite (clip's absent bounds) may be infinite too."""
    for key, value in attrs.items():
        default = spec.attrs.get(key)
        if not isinstance(default, float):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ShapeError(f"{spec.name}: attr {key} must be a number, got {value!r}")
        if math.isnan(value) or (math.isinf(value) and math.isfinite(default)):
            raise ShapeError(f"{spec.name}: attr {key} must be finite, got {value!r}")


def describe_failure(
    msg: str,
    op: str,
    inputs: tuple[str, ...],
    types: list[TensorType],
    attrs: dict[str, Any],
    name: str,
    loc: str | None,
) -> str:
    attr_text = (
        " {" + ", ".join(f"{k}={v!r}" for k, v in sorted(attrs.items())) + "}" if attrs else ""
    )
    line = f"{name} = {op}({', '.join(inputs)}){attr_text}"
    out = [msg, f"  at   {line:<40} {loc or ''}".rstrip()]
    for i, (n, t) in enumerate(zip(inputs, types)):
        out.append(f"  operand {i}  {n} : {t}")
    return "\n".join(out)


class Builder:
    """Appends nodes to a graph under construction; every node's type is inferred on the spot.

    ``b.mul(x, y)`` (any registered op name) emits a node and returns its name. ``section``,
    ``loc`` and ``origin`` are stamped on every node emitted while they are set.
    """

    def __init__(self, base: Graph | None = None, *, section: str = "forward", dtype: str = "f32"):
        self.nodes: list[Node] = list(base.nodes) if base is not None else []
        self.types: dict[str, TensorType] = {n.name: n.type for n in self.nodes}
        self.names = NameSupply([n.name for n in self.nodes])
        self.section = section
        self.dtype = dtype
        self.loc: str | None = None
        self.origin: str | None = None
        self._consts: dict[tuple[float, str], str] = {}

    def type_of(self, name: str) -> TensorType:
        return self.types[name]

    def add_node(self, node: Node) -> str:
        if node.name in self.types:
            raise GraphcError(f"a value named {node.name!r} already exists in this graph")
        self.names.reserve(node.name)
        self.nodes.append(node)
        self.types[node.name] = node.type
        return node.name

    def own_source(
        self, op: str, name: str, type: TensorType, attrs: dict | None, role: str
    ) -> str:
        """A source the compiler adds under a fixed name (the learning rate, the step counter,
        an optimizer's slot ``PARAM.KIND``, a gradient slot): the value of that name when the
        graph already holds this very source (dropout's step counter), else a new one.

        Raises:
            GraphcError: a tensor of the user's graph holds the name (an input, a parameter,
                a layer named "step"): naming it, its op, type and line, and ``role``.
        """
        if name not in self.types:
            return self.source(op, name, type, attrs)
        n = next(n for n in self.nodes if n.name == name)
        if n.op == op and n.type == type and n.attrs == make_attrs(attrs or {}):
            return name
        raise GraphcError(
            f"the name {name!r} is graphc's own ({role}) but {n.op} {n.type} at "
            f"{n.loc or '?'} has it: give that tensor another name"
        )

    def source(self, op: str, name: str, type: TensorType, attrs: dict | None = None) -> str:
        return self.add_node(
            make_node(name, op, (), type, attrs, section=self.section, loc=self.loc)
        )

    def emit(
        self,
        op: str,
        inputs: tuple[str, ...] | list[str],
        attrs: dict | None = None,
        name: str | None = None,
    ) -> str:
        inputs = tuple(inputs)
        for i in inputs:
            if i not in self.types:
                raise GraphcError(f"{op}: operand {i!r} is not defined in this graph")
        attrs = {k: v for k, v in (attrs or {}).items() if v is not None}
        name = name or self.names.fresh()
        t = infer_type(op, inputs, [self.types[i] for i in inputs], attrs, name, self.loc)
        return self.add_node(
            Node(name, op, inputs, t, make_attrs(attrs), self.section, None, self.loc, self.origin)
        )

    def const(self, value: float, *, like: str | None = None, dtype: str | None = None) -> str:
        dt = dtype or (self.types[like].dtype if like else self.dtype)
        key = (float(value), dt)
        if key not in self._consts:
            self._consts[key] = self.emit("const", (), {"value": float(value), "dtype": dt})
        return self._consts[key]

    def __getattr__(self, op: str) -> Callable[..., str]:
        if op.startswith("_") or op not in OPS:
            raise AttributeError(op)
        return lambda *inputs, **attrs: self.emit(op, inputs, attrs)

    def graph(
        self,
        name: str,
        outputs: tuple[str, ...] | list[str],
        updates: tuple[tuple[str, str], ...] = (),
    ) -> Graph:
        return Graph(name, tuple(self.nodes), tuple(outputs), tuple(updates))
