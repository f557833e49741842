"""The op registry's base classes: an op's shape rule, numpy reference and VJP live in one class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import GradError, ShapeError
from ..types import TensorType, broadcast_shapes

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node

OPS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add one instance of ``cls`` to OPS under ``cls.name``."""
    if cls.name in OPS:
        raise ValueError(f"op {cls.name!r} registered twice")
    OPS[cls.name] = cls()
    return cls


class Op:
    """An op: ``infer`` (types -> type), ``reference`` (numpy), ``grad`` (VJP, as IR).

    Class attributes:
        name: the op's name in the IR.
        arity: number of operands (None: any).
        kind: "elementwise" (one output element from the same-index operand elements, after
            broadcasting), "matmul", "reduce", "rowwise" (a kernel per row), "scalar", "source".
        nondifferentiable: no gradient flows through it.
        attr_names: the attrs it accepts (checked by the verifier).
    """

    name: ClassVar[str] = ""
    arity: ClassVar[int | None] = None
    kind: ClassVar[str] = "elementwise"
    nondifferentiable: ClassVar[bool] = False
    attr_names: ClassVar[tuple[str, ...]] = ()

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        raise NotImplementedError

    def reference(self, *xs: np.ndarray, **attrs: Any) -> np.ndarray:
        raise NotImplementedError

    def grad(self, b: Builder, node: Node, dy: str) -> tuple[str | None, ...]:
        """The VJP: one gradient value (or None) per operand, emitted with ``b``."""
        raise GradError(
            f"op {self.name} has no VJP rule, needed at node {node.name} ({node.loc or 'no source line'})"
        )

    def flops(self, node: Node, in_types: list[TensorType], n: int) -> int:
        """Floating-point operations for batch size ``n`` (one per output element by default)."""
        return node.type.size(n)


def same_float_dtype(op: str, types: list[TensorType]) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise ShapeError(f"{op}: operands have different dtypes ({', '.join(map(str, types))})")
    (dt,) = dtypes
    if dt not in ("f32", "f64"):
        raise ShapeError(f"{op}: expects floating-point operands, got {dt}")
    return dt


class Unary(Op):
    """Elementwise op of one operand: the output type is the input type."""

    arity = 1

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        same_float_dtype(self.name, types)
        return types[0]


class Binary(Op):
    """Elementwise op of two operands with numpy broadcasting."""

    arity = 2

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        dt = same_float_dtype(self.name, types)
        shape = broadcast_shapes(types[0].shape, types[1].shape)
        if shape is None:
            raise ShapeError(
                f"{self.name}: shapes cannot be broadcast together ({types[0]} vs {types[1]})"
            )
        return TensorType(shape, dt)


class Reduce(Op):
    """Reduction over ``axes`` (a tuple of non-negative ints), with ``keepdims``."""

    arity = 1
    kind = "reduce"
    attr_names = ("axes", "keepdims")

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (t,) = types
        same_float_dtype(self.name, types)
        axes = normalize_axes(self.name, attrs.get("axes"), t.rank)
        keep = bool(attrs.get("keepdims", False))
        shape = tuple(
            (1 if i in axes else d) for i, d in enumerate(t.shape) if keep or i not in axes
        )
        return TensorType(shape, t.dtype)


def normalize_axes(op: str, axes: Any, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = (axes,)
    out = []
    for a in axes:
        if not isinstance(a, int) or not -rank <= a < max(rank, 1):
            raise ShapeError(f"{op}: axis {a!r} is out of range for rank {rank}")
        out.append(a % rank if rank else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {tuple(axes)}")
    return tuple(sorted(out))
