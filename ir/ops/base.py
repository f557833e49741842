"""The op registry's base classes: an op's shape rule, numpy reference and VJP live in one class."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import GradError, ShapeError
from ..types import BATCH, TensorType, broadcast_shapes

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node

OPS: dict[str, Op] = {}


class Kind(StrEnum):
    """What an op does to the elements of its operands; passes and the scheduler read this."""

    POINTWISE = "pointwise"  # out[i] from the data operands' element i (after broadcasting)
    MOVEMENT = "movement"  # moves elements without arithmetic (transpose, reshape)
    MATMUL = "matmul"
    REDUCE = "reduce"  # a reduction over axes
    ROWWISE = "rowwise"  # one pass over each row of a 2-D operand (softmax, the losses)
    SOURCE = "source"  # enters from outside: data, trainable params, persistent state
    SCALAR = "scalar"  # a scalar from attrs or static shapes (const, size)
    COMPOSITE = "composite"  # replaced by primitives (``decompose``) before any pass runs


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # an attr with no default (the verifier's and builders' business)

# the kernel a node of each kind runs in when it is not fused (an op may override: Op.kernel)
_KERNEL_OF_KIND = {
    Kind.POINTWISE: "elementwise",
    Kind.MATMUL: "matmul",
    Kind.REDUCE: "reduce",
    Kind.ROWWISE: "rowwise",
}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add one instance of ``cls`` to OPS under ``cls.name``."""
    if cls.name in OPS:
        raise ValueError(f"op {cls.name!r} registered twice")
    if not isinstance(cls.kind, Kind):
        raise ValueError(f"op {cls.name!r}: kind must be an ir.ops.Kind, got {cls.kind!r}")
    if "attr_names" in cls.__dict__:
        raise ValueError(f"op {cls.name!r}: declare attrs = {{name: default}}, not attr_names")
    OPS[cls.name] = cls()
    return cls


class Op:
    """An op: ``infer`` (types -> type), ``reference`` (numpy), ``grad`` (VJP, as IR), and the
    traits that passes, the scheduler, codegen, the printer and the DSL read from the registry.

    Class attributes (declare them once, on the op's class):
        name: the op's name in the IR.
        arity: number of operands (None: any).
        kind: a ``Kind``.
        attrs: the attrs the op accepts, with their defaults (``REQUIRED``: none; ``None``: the
            attr is absent unless given). A node stores only the attrs it was given; read the
            effective value with ``op.attr(node, key)``, and ``evaluate`` fills the defaults in.
        data_operands: how many leading operands carry elements (None: all). ``broadcast_to``
            has 1: its second operand only gives the shape.
        nondifferentiable: no gradient flows through it.
        inline: computed in registers where it is used (no kernel, no buffer; const, size).
        activation: accepted as ``dense(..., activation=NAME)`` (and fusable as the GEMM
            epilogue like any pointwise op).
        needs_index: its lowering needs the element's flat index (dropout's counter-based mask).
        commutative: op(x, y) == op(y, x).
        identity: the right identity element e with op(x, e) == x (add/sub 0, mul/div 1).
        kernel: the kernel kind a lone node of this op runs in (default: from ``kind``).
        divider: its lowering divides or takes a square root (exactly rounded: the CPU's
            divide unit, some 10x slower per element than a multiply-add and not pipelined
            with it), so a loop of it is bound by that unit rather than by memory.
        channel_epilogue: its kernel can apply pointwise nodes to each output element [N, C,
            ...] before storing it, with scalar or per-channel operands (``fuse_conv``).
    """

    name: ClassVar[str] = ""
    arity: ClassVar[int | None] = None
    kind: ClassVar[Kind] = Kind.POINTWISE
    attrs: ClassVar[dict[str, Any]] = {}
    data_operands: ClassVar[int | None] = None
    nondifferentiable: ClassVar[bool] = False
    inline: ClassVar[bool] = False
    activation: ClassVar[bool] = False
    needs_index: ClassVar[bool] = False
    commutative: ClassVar[bool] = False
    identity: ClassVar[float | None] = None
    kernel: ClassVar[str | None] = None
    divider: ClassVar[bool] = False
    channel_epilogue: ClassVar[bool] = False

    @property
    def attr_names(self) -> tuple[str, ...]:
        return tuple(self.attrs)

    @property
    def kernel_kind(self) -> str:
        """The kernel kind of a lone node of this op ("elementwise", "matmul", ...)."""
        return self.kernel or _KERNEL_OF_KIND.get(self.kind, self.kind.value)

    def attr(self, node: Node, key: str) -> Any:
        """The value of attr ``key`` on ``node``, or the op's default for it."""
        default = self.attrs[key]
        return node.attr(key, None if default is REQUIRED else default)

    def attr_values(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` completed with the defaults of the attrs it lacks (those that have one)."""
        out = {k: v for k, v in self.attrs.items() if v is not REQUIRED and v is not None}
        out.update(given)
        return out

    def data_inputs(self, node: Node) -> tuple[str, ...]:
        """The operands of ``node`` whose elements the op reads (see ``data_operands``)."""
        return node.inputs if self.data_operands is None else node.inputs[: self.data_operands]

    def evaluate(self, *xs: np.ndarray, **attrs: Any) -> np.ndarray:
        """``reference`` with the attrs' defaults filled in (what the interpreter runs)."""
        return self.reference(*xs, **self.attr_values(attrs))

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
    """Pointwise op of one operand: the output type is the input type."""

    arity = 1

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        same_float_dtype(self.name, types)
        return types[0]


class Binary(Op):
    """Pointwise op of two operands with numpy broadcasting."""

    arity = 2

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        dt = same_float_dtype(self.name, types)
        shape = broadcast_shapes(types[0].shape, types[1].shape)
        if shape is None:
            a, b = types[0].shape, types[1].shape
            hint = (
                "; the batch dimension N would appear twice (numpy would broadcast [N,1] and "
                "[N] to [N,N]): reshape one operand"
                if BATCH in a and BATCH in b
                else ""
            )
            raise ShapeError(
                f"{self.name}: shapes cannot be broadcast together ({types[0]} vs {types[1]})"
                + hint
            )
        return TensorType(shape, dt)


class Reduce(Op):
    """Reduction over ``axes`` (a tuple of non-negative ints), with ``keepdims``."""

    arity = 1
    kind = Kind.REDUCE
    attrs: ClassVar[dict[str, Any]] = {"axes": None, "keepdims": False}

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
        if not isinstance(a, int) or isinstance(a, bool) or not -rank <= a < max(rank, 1):
            raise ShapeError(f"{op}: axis {a!r} is out of range for rank {rank}")
        out.append(a % rank if rank else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {tuple(axes)}")
    return tuple(sorted(out))
