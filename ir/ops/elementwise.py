"""Elementwise ops (with numpy broadcasting): arithmetic, activations, comparisons."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShapeError
from ..types import DTYPES, INT_DTYPES, TensorType, broadcast_shapes
from .arith import Compare, pick_grad  # Compare: the comparisons' shape rule (i32 too)
from .base import REQUIRED, Binary, Kind, Op, Unary, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node


@register
class Add(Binary):
    """z = x + y.   VJP: dx = dy, dy_ = dy (summed back to each operand's shape)."""

    name = "add"
    commutative = True
    identity = -0.0  # -0.0 + +0.0 = +0.0: only the negative zero leaves every x as it is

    def reference(self, x, y):
        return x + y

    def grad(self, b: Builder, node: Node, dy: str):
        return (dy, dy)


@register
class Sub(Binary):
    """z = x - y.   VJP: dx = dy, dy_ = -dy."""

    name = "sub"
    identity = 0.0  # x - (-0.0) = x + 0.0, which is not x at x = -0.0

    def reference(self, x, y):
        return x - y

    def grad(self, b: Builder, node: Node, dy: str):
        return (dy, b.neg(dy))


@register
class Mul(Binary):
    """z = x * y.   VJP: dx = dy * y, dy_ = dy * x."""

    name = "mul"
    commutative = True
    identity = 1.0

    def reference(self, x, y):
        return x * y

    def grad(self, b: Builder, node: Node, dy: str):
        x, y = node.inputs
        return (b.mul(dy, y), b.mul(dy, x))


@register
class Div(Binary):
    """z = x / y.   VJP: dx = dy / y, dy_ = -dy * z / y."""

    name = "div"
    divider = True
    identity = 1.0

    def reference(self, x, y):
        return x / y

    def grad(self, b: Builder, node: Node, dy: str):
        _x, y = node.inputs
        return (b.div(dy, y), b.neg(b.div(b.mul(dy, node.name), y)))


@register
class Maximum(Binary):
    """z = max(x, y) (NaN if either is NaN).   VJP: dx = dy * ([x > y] + [x == y] / 2),
    dy_ = dy - dx (at a tie half to each, as PyTorch and JAX: see arith.pick_grad)."""

    name = "maximum"
    commutative = True

    def reference(self, x, y):
        return np.maximum(x, y)

    def grad(self, b: Builder, node: Node, dy: str):
        return pick_grad(b, dy, b.greater(*node.inputs), b.equal(*node.inputs))


@register
class Greater(Compare):
    """z = 1.0 where x > y else 0.0 (a mask in the operands' dtype); nondifferentiable."""

    name = "greater"

    def reference(self, x, y):
        return (x > y).astype(np.result_type(x, y))


@register
class GreaterEqual(Compare):
    """z = 1.0 where x >= y else 0.0; nondifferentiable."""

    name = "greater_equal"

    def reference(self, x, y):
        return (x >= y).astype(np.result_type(x, y))


@register
class Neg(Unary):
    """y = -x.   VJP: dx = -dy."""

    name = "neg"

    def reference(self, x):
        return -x

    def grad(self, b: Builder, node: Node, dy: str):
        return (b.neg(dy),)


@register
class Exp(Unary):
    """y = exp(x).   VJP: dx = dy * y."""

    name = "exp"

    def reference(self, x):
        return np.exp(x)

    def grad(self, b: Builder, node: Node, dy: str):
        return (b.mul(dy, node.name),)


@register
class Log(Unary):
    """y = log(x) (natural).   VJP: dx = dy / x."""

    name = "log"

    def reference(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)

    def grad(self, b: Builder, node: Node, dy: str):
        return (b.div(dy, node.inputs[0]),)


@register
class Sqrt(Unary):
    """y = sqrt(x).   VJP: dx = dy / (2 y)."""

    name = "sqrt"
    divider = True

    def reference(self, x):
        with np.errstate(invalid="ignore"):
            return np.sqrt(x)

    def grad(self, b: Builder, node: Node, dy: str):
        return (b.div(dy, b.mul(b.const(2.0, like=node.name), node.name)),)


@register
class Sigmoid(Unary):
    """y = 1 / (1 + exp(-x)).   VJP: dx = dy * y * (1 - y)."""

    name = "sigmoid"
    activation = True

    def reference(self, x):
        # exp(-|x|) never overflows: the stable two-branch form.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        return (b.mul(dy, b.mul(y, b.sub(b.const(1.0, like=y), y))),)


@register
class Tanh(Unary):
    """y = tanh(x).   VJP: dx = dy * (1 - y*y)."""

    name = "tanh"
    activation = True

    def reference(self, x):
        return np.tanh(x)

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        return (b.mul(dy, b.sub(b.const(1.0, like=y), b.mul(y, y))),)


@register
class Relu(Unary):
    """y = max(x, 0).   VJP: dx = dy * [y > 0] (the subgradient 0 at x = 0)."""

    name = "relu"
    activation = True

    def reference(self, x):
        return np.maximum(x, 0).astype(x.dtype)

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        return (b.mul(dy, b.greater(y, b.const(0.0, like=y))),)


@register
class LeakyRelu(Unary):
    """y = x where x >= 0 else alpha * x (alpha: the slope for x < 0; 0.01 as torch.nn.LeakyReLU).

    VJP: dx = dy * (alpha + (1 - alpha) * [x > 0]) (the slope alpha at x = 0); for alpha >= 0,
    [x > 0] = [y > 0], so the rule reads the output and the input need not be kept.
    """

    name = "leaky_relu"
    activation = True
    attrs = {"alpha": 0.01}

    def reference(self, x, *, alpha):
        return np.where(x < 0, alpha * x, x).astype(x.dtype)

    def grad(self, b: Builder, node: Node, dy: str):
        alpha = float(self.attr(node, "alpha"))
        x = node.name if alpha >= 0 else node.inputs[0]
        pos = b.greater(x, b.const(0.0, like=x))
        return (b.mul(dy, b.add(b.mul(pos, b.const(1.0 - alpha, like=x)), b.const(alpha, like=x))),)


@register
class Softplus(Unary):
    """y = log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)).   VJP: dx = dy * sigmoid(x)."""

    name = "softplus"
    activation = True

    def reference(self, x):
        return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)

    def grad(self, b: Builder, node: Node, dy: str):
        return (b.mul(dy, b.sigmoid(node.inputs[0])),)


@register
class SigmoidCrossEntropy(Binary):
    """Per-element binary cross-entropy from a logit z and a target y in [0, 1]:
    l = -(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))) = softplus(z) - z y, computed as
    (z > 0 ? z (1 - y) : -z y) + log1p(exp(-|z|)) (stable for every finite z; the form of
    torch.nn.BCEWithLogitsLoss), where a zero factor of an infinite z gives 0: the limits
    l(-inf, 0) = l(+inf, 1) = 0 and l(-inf, y > 0) = l(+inf, y < 1) = +inf. NaN stays NaN.

    VJP: dz = dy (sigmoid(z) - y), dy_ = -dy z.
    """

    name = "sigmoid_cross_entropy"

    def reference(self, z, y):
        with np.errstate(invalid="ignore", over="ignore"):
            pos = np.where(1 - y == 0, 0.0, z * (1 - y))
            neg = np.where(y == 0, 0.0, -z * y)
            lin = np.where(z > 0, pos, neg)
            return (lin + np.log1p(np.exp(-np.abs(z)))).astype(np.result_type(z, y))

    def grad(self, b: Builder, node: Node, dy: str):
        z, y = node.inputs
        return (b.mul(dy, b.sub(b.sigmoid(z), y)), b.neg(b.mul(dy, z)))


@register
class Square(Unary):
    """y = x * x.   VJP: dx = 2 x dy."""

    name = "square"

    def reference(self, x):
        return x * x

    def grad(self, b: Builder, node: Node, dy: str):
        x = node.inputs[0]
        return (b.mul(dy, b.mul(b.const(2.0, like=x), x)),)


@register
class BroadcastTo(Op):
    """z = x broadcast (numpy rules) to the shape of ``like``.   VJP: dx = sum_to(dz, x)."""

    name = "broadcast_to"
    arity = 2
    data_operands = 1  # the second operand only gives the shape

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        x, like = types
        same_float_dtype(self.name, [x, like.with_dtype(x.dtype)])
        if broadcast_shapes(x.shape, like.shape) != like.shape:
            raise ShapeError(f"broadcast_to: {x} cannot be broadcast to the shape of {like}")
        return TensorType(like.shape, x.dtype)

    def reference(self, x, like):
        return np.broadcast_to(x, like.shape).copy()

    def grad(self, b: Builder, node: Node, dy: str):
        return (dy, None)


@register
class Reshape(Op):
    """z = x with shape ``shape`` (same element order and count; N may appear in ``shape``).

    VJP: dx = reshape(dz) to x's shape.
    """

    name = "reshape"
    arity = 1
    kind = Kind.MOVEMENT
    kernel = "reshape"
    attrs = {"shape": REQUIRED}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (x,) = types
        shape = tuple(attrs.get("shape", ()))
        try:
            out = TensorType(shape, x.dtype)
        except ValueError as e:
            raise ShapeError(f"reshape: {e}") from None
        if out.is_batched != x.is_batched or out.elements_per_row() != x.elements_per_row():
            raise ShapeError(f"reshape: cannot reshape {x} to {out}: element counts differ")
        return out

    def reference(self, x, *, shape):
        return x.reshape([(-1 if d == "N" else d) for d in shape])

    def grad(self, b: Builder, node: Node, dy: str):
        x = b.type_of(node.inputs[0])
        return (b.reshape(dy, shape=x.shape),)


@register
class OneMinusPow(Op):
    """y = 1 - base**t for a whole-number t >= 0 (the 1-based step number): the bias
    corrections 1 - beta1^t, 1 - beta2^t of Adam-type optimizers; nondifferentiable.

    Computed in float64 from the integer t by binary powering, then 1 - base**t rounded once
    to the output dtype. The relative error of 1 - base**t before that rounding is below
    2^-50 / (1 - base) (a squaring doubles the relative error of base**t, so that grows like
    t 2^-53, but 1 - base**t >= t (1 - base) base**t): 2^-37 at base = 0.9999.
    The float32 form 1 - exp(t log beta) loses about 5 digits when beta is close to 1
    (beta2 = 0.999: 1e-4 relative in 1 - beta2), which shows in every Adam step.

    Operand t: an integer (the i64 step counter) or a float holding a whole number (any shape,
    elementwise). Attrs: base, a float in [0, 1]; dtype, the result's float type (default:
    t's own when it is a float, else f32).
    """

    name = "one_minus_pow"
    arity = 1
    nondifferentiable = True
    attrs = {"base": REQUIRED, "dtype": None}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (t,) = types
        base = attrs.get("base")
        if not isinstance(base, float | int) or isinstance(base, bool) or not 0 <= base <= 1:
            raise ShapeError(f"{self.name}: base must be a number in [0, 1], got {base!r}")
        dt = attrs.get("dtype") or (t.dtype if t.dtype not in INT_DTYPES else "f32")
        if dt not in ("f32", "f64"):
            raise ShapeError(f"{self.name}: dtype must be f32 or f64, got {dt!r}")
        return TensorType(t.shape, dt)

    def reference(self, t, *, base, dtype=None):
        t = np.asarray(t)
        out = 1.0 - np.float64(base) ** t.astype(np.float64)
        return out.astype(
            DTYPES[dtype] if dtype else (t.dtype if t.dtype.kind == "f" else np.float32)
        )


@register
class Increment(Op):
    """y = x + 1 for an integer tensor (the optimizer's i64 step counter: exact to 2^63, where a
    float32 counter stalls at 2^24); nondifferentiable."""

    name = "increment"
    arity = 1
    nondifferentiable = True

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (x,) = types
        if x.dtype not in INT_DTYPES:
            raise ShapeError(f"{self.name}: expects an integer operand, got {x}")
        return x

    def reference(self, x):
        return np.asarray(x) + np.asarray(1, dtype=np.asarray(x).dtype)


@register
class Cast(Op):
    """y = x converted to the float type ``dtype`` (an integer is rounded to the nearest float,
    as C's conversion does: exact below 2^24 for f32, 2^53 for f64); nondifferentiable."""

    name = "cast"
    arity = 1
    nondifferentiable = True
    attrs = {"dtype": REQUIRED}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (x,) = types
        dt = attrs.get("dtype")
        if dt not in ("f32", "f64"):
            raise ShapeError(f"{self.name}: dtype must be f32 or f64, got {dt!r}")
        return TensorType(x.shape, dt)

    def reference(self, x, *, dtype):
        return np.asarray(x).astype(DTYPES[dtype])
