"""Pointwise math beyond the four operations: abs, minimum, clip, pow, reciprocal, rsqrt, erf,
the comparisons (masks of 1.0 and 0.0) and where (select)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ShapeError
from ..types import TensorType, broadcast_shapes
from .base import REQUIRED, Binary, Op, Unary, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node


@register
class Abs(Unary):
    """y = |x|.   VJP: dx = dy * sign(x) (0 at x = 0)."""

    name = "abs"

    def reference(self, x):
        return np.abs(x)

    def grad(self, b: Builder, node: Node, dy: str):
        x = node.inputs[0]
        zero = b.const(0.0, like=x)
        return (b.mul(dy, b.sub(b.greater(x, zero), b.less(x, zero))),)


def pick_grad(b: Builder, dy: str, picks_x: str, tie: str) -> tuple[str, str]:
    """(dy * m, dy * (1 - m)) with m = picks_x + tie / 2: the gradients of an op that picks x
    where the mask ``picks_x`` is 1 and y where it and ``tie`` are 0 (minimum, maximum). At a
    tie each operand gets half, as in PyTorch and JAX, and as central differences give (the
    mean of the one-sided derivatives); the op is then symmetric, as ``commutative`` says."""
    mask = b.add(picks_x, b.mul(tie, b.const(0.5, like=tie)))
    return (b.mul(dy, mask), b.mul(dy, b.sub(b.const(1.0, like=mask), mask)))


@register
class Minimum(Binary):
    """z = min(x, y) (NaN if either is NaN).   VJP: dx = dy * ([x < y] + [x == y] / 2),
    dy_ = dy - dx (at a tie half to each, as PyTorch and JAX: see pick_grad)."""

    name = "minimum"
    commutative = True

    def reference(self, x, y):
        return np.minimum(x, y)

    def grad(self, b: Builder, node: Node, dy: str):
        return pick_grad(b, dy, b.less(*node.inputs), b.equal(*node.inputs))


@register
class Clip(Unary):
    """y = min(max(x, min), max) for scalar attrs ``min`` <= ``max``; a bound left out is
    infinite (torch.clamp(x, max=1.0), np.clip(x, None, 1.0)). NaN stays NaN.

    VJP: dx = dy * [min < x < max]: the gradient passes strictly inside the bounds only, 0 at
    x == min and x == max (and everywhere when min == max), as torch.clamp's backward in current
    releases (checked against torch 2.14.1: d/dx clamp(x, 0, 1) at x = -1, 0, 0.5, 1, 2 is
    0, 0, 1, 0, 0; older releases passed it at the bounds), torch's hardtanh / relu6 and
    graphc's hard_tanh. Exact bound values are common (zeros after relu or padding, ONNX Clip
    exported from ReLU6 / Hardtanh), so the convention matters for fine-tuning parity.
    """

    name = "clip"
    attrs: ClassVar[dict[str, Any]] = {"min": -math.inf, "max": math.inf}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        lo, hi = attrs.get("min"), attrs.get("max")
        for k, v in (("min", lo), ("max", hi)):
            if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
                raise ShapeError(f"clip: attr {k} must be a number, got {v!r}")
        if float(lo) > float(hi):  # type: ignore[arg-type]  # both numbers: checked above
            raise ShapeError(
                f"clip: min {lo!r} is greater than max {hi!r} (torch.clamp and np.clip would "
                f"give {hi!r} everywhere: write that as a constant, or swap the bounds)"
            )
        return super().infer(types, attrs)

    def reference(self, x, *, min, max):
        return np.minimum(np.maximum(x, min), max)

    def grad(self, b: Builder, node: Node, dy: str):
        x = node.inputs[0]
        lo = b.const(float(self.attr(node, "min")), like=x)
        hi = b.const(float(self.attr(node, "max")), like=x)
        return (b.mul(dy, b.mul(b.greater(x, lo), b.less(x, hi))),)


@register
class Pow(Unary):
    """y = x ** exponent for a scalar attr ``exponent`` (numpy's float power: NaN for x < 0 and
    a non-integer exponent; integer exponents are exact repeated products, for any sign of x).

    VJP: dx = dy * exponent * x ** (exponent - 1).
    """

    name = "pow"
    attrs: ClassVar[dict[str, Any]] = {"exponent": REQUIRED}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        e = attrs.get("exponent")
        if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e):
            raise ShapeError(f"pow: attr exponent must be a finite number, got {e!r}")
        return super().infer(types, attrs)

    def reference(self, x, *, exponent):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.power(x, float(exponent))

    def grad(self, b: Builder, node: Node, dy: str):
        x = node.inputs[0]
        e = float(self.attr(node, "exponent"))
        if e == 0.0:
            return (b.mul(dy, b.const(0.0, like=x)),)
        d = b.const(e, like=x) if e == 1.0 else b.mul(b.const(e, like=x), b.pow(x, exponent=e - 1))
        return (b.mul(dy, d),)


@register
class Reciprocal(Unary):
    """y = 1 / x.   VJP: dx = -dy * y * y."""

    name = "reciprocal"
    divider = True

    def reference(self, x):
        with np.errstate(divide="ignore"):
            return 1.0 / x

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        return (b.neg(b.mul(dy, b.mul(y, y))),)


@register
class Rsqrt(Unary):
    """y = 1 / sqrt(x) (a correctly rounded sqrt, then a division).   VJP: dx = -dy * y^3 / 2."""

    name = "rsqrt"
    divider = True

    def reference(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 / np.sqrt(x)

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        y3 = b.mul(y, b.mul(y, y))
        return (b.mul(dy, b.mul(b.const(-0.5, like=y), y3)),)


@register
class Erf(Unary):
    """y = erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt (codegen: vmath.erf, tested bound).

    VJP: dx = dy * 2/sqrt(pi) * exp(-x^2).
    """

    name = "erf"

    def reference(self, x):
        return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()

    def grad(self, b: Builder, node: Node, dy: str):
        x = node.inputs[0]
        g = b.mul(b.const(2.0 / math.sqrt(math.pi), like=x), b.exp(b.neg(b.mul(x, x))))
        return (b.mul(dy, g),)


class Compare(Binary):
    """z = 1.0 where ``x OP y`` holds, else 0.0 (a mask in the operands' dtype; false when either
    is NaN, except not_equal); nondifferentiable. Two i32 operands (labels, argmax) give an
    f32 mask, so that an accuracy is ``mean(equal(argmax(logits, axis=1), labels))``."""

    nondifferentiable = True

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        if [t.dtype for t in types] == ["i32", "i32"]:
            shape = broadcast_shapes(types[0].shape, types[1].shape)
            if shape is None:
                raise ShapeError(
                    f"{self.name}: shapes cannot be broadcast together ({types[0]} vs {types[1]})"
                )
            return TensorType(shape, "f32")
        return super().infer(types, attrs)

    def evaluate(self, *xs: np.ndarray, **attrs: Any) -> np.ndarray:
        out = super().evaluate(*xs, **attrs)
        return out.astype(np.float32) if out.dtype.kind in "iub" else out


@register
class Less(Compare):
    """z = 1.0 where x < y else 0.0; nondifferentiable."""

    name = "less"

    def reference(self, x, y):
        return (x < y).astype(np.result_type(x, y))


@register
class LessEqual(Compare):
    """z = 1.0 where x <= y else 0.0; nondifferentiable."""

    name = "less_equal"

    def reference(self, x, y):
        return (x <= y).astype(np.result_type(x, y))


@register
class Equal(Compare):
    """z = 1.0 where x == y else 0.0 (NaN equals nothing); nondifferentiable."""

    name = "equal"
    commutative = True

    def reference(self, x, y):
        return (x == y).astype(np.result_type(x, y))


@register
class NotEqual(Compare):
    """z = 1.0 where x != y else 0.0 (NaN differs from everything); nondifferentiable."""

    name = "not_equal"
    commutative = True

    def reference(self, x, y):
        return (x != y).astype(np.result_type(x, y))


@register
class Where(Op):
    """z = a where cond != 0 else b (NaN counts as true, as in numpy), all three broadcast.

    ``cond`` is usually a mask from a comparison. VJP: da = where(cond, dz, 0),
    db = where(cond, 0, dz); none for cond.
    """

    name = "where"
    arity = 3

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        dt = same_float_dtype(self.name, types)
        shape: tuple | None = types[0].shape
        for t in types[1:]:
            shape = broadcast_shapes(shape, t.shape) if shape is not None else None
        if shape is None:
            raise ShapeError(
                f"where: shapes cannot be broadcast together ({', '.join(map(str, types))})"
            )
        return TensorType(shape, dt)

    def reference(self, cond, a, b):
        return np.where(cond != 0, a, b)

    def grad(self, b: Builder, node: Node, dy: str):
        cond = node.inputs[0]
        zero = b.const(0.0, like=dy)
        return (None, b.where(cond, dy, zero), b.where(cond, zero, dy))
