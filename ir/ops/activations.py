"""Activation functions beyond relu/sigmoid/tanh/softplus: elu, selu, gelu, silu, mish, softsign,
hard_sigmoid, hard_tanh (pointwise; each usable as ``dense(..., activation=NAME)`` and fused into
the GEMM epilogue like any pointwise op)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .base import Unary, register

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node

# SELU's constants (Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017, eq. 14)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
GELU_TANH_C = 0.044715  # Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016, sec. 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _positive(b: Builder, x: str) -> str:
    return b.greater(x, b.const(0.0, like=x))


@register
class Elu(Unary):
    """y = x for x > 0, alpha * (exp(x) - 1) otherwise (Clevert et al., 2015).

    VJP: dx = dy for x > 0, dy * (y + alpha) otherwise; for alpha >= 0, x > 0 exactly where
    y > 0, so the VJP reads only y (the pre-activation need not be stored: the activation fuses
    into the forward GEMM's epilogue in training too).
    """

    name = "elu"
    activation = True
    attrs: ClassVar[dict[str, Any]] = {"alpha": 1.0}

    def reference(self, x, *, alpha):
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))

    def grad(self, b: Builder, node: Node, dy: str):
        y, a = node.name, float(self.attr(node, "alpha"))
        pos = _positive(b, y if a >= 0 else node.inputs[0])
        return (b.mul(dy, b.where(pos, b.const(1.0, like=y), b.add(y, b.const(a, like=y)))),)


@register
class Selu(Unary):
    """y = scale * elu(x, alpha) with alpha = 1.6732632..., scale = 1.0507009... (Klambauer et
    al., 2017).   VJP: dx = dy * scale for x > 0, dy * (y + scale * alpha) otherwise (x > 0
    exactly where y > 0: the VJP reads only y)."""

    name = "selu"
    activation = True

    def reference(self, x):
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        neg = b.add(y, b.const(SELU_SCALE * SELU_ALPHA, like=y))
        return (b.mul(dy, b.where(_positive(b, y), b.const(SELU_SCALE, like=y), neg)),)


@register
class Gelu(Unary):
    """GELU (Hendrycks & Gimpel, 2016). ``approximate="none"``: y = x * Phi(x) with
    Phi(x) = (1 + erf(x / sqrt 2)) / 2; ``"tanh"``: y = x/2 * (1 + tanh(u)),
    u = sqrt(2/pi) * (x + 0.044715 x^3) (the names of torch.nn.GELU and ONNX Gelu), computed
    as x * sigmoid(2u), the same function: 1 + tanh(u) cancels in the left tail (float32:
    30% off at x = -5, 0 from x = -6 on where the function is -8e-11; tt-metal #56517).

    VJP: "none": dx = dy * (Phi(x) + x * exp(-x^2/2) / sqrt(2 pi)), Phi(x) taken as y / x for
    x < -1 (the forward's accurate tail; (1 + erf(x / sqrt 2)) / 2 cancels there);
    "tanh": dx = dy * (s + 2 x s (1 - s) * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)),
    s = sigmoid(2u) = (1 + tanh(u)) / 2, 1 - s = sigmoid(-2u) (no cancellation either); the
    second term is 0 where s (1 - s) is (|x| so large that x^2 overflows: not inf * 0).
    """

    name = "gelu"
    activation = True
    attrs: ClassVar[dict[str, Any]] = {"approximate": "none"}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        approximate = attrs.get("approximate", self.attrs["approximate"])
        if approximate not in ("none", "tanh"):
            raise ShapeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return super().infer(types, attrs)

    def reference(self, x, *, approximate):
        if approximate == "tanh":
            with np.errstate(over="ignore"):
                u = math.sqrt(2.0 / math.pi) * (x + GELU_TANH_C * x**3)
                return x * np.exp(-np.logaddexp(0.0, -2.0 * u))  # x * sigmoid(2u)
        # erfc(-x / sqrt 2) = 1 + erf(x / sqrt 2), without its cancellation in the left tail
        erfc = np.vectorize(math.erfc, otypes=[x.dtype])(-x / math.sqrt(2.0)) if x.size else x
        return 0.5 * x * erfc

    def grad(self, b: Builder, node: Node, dy: str):
        x = node.inputs[0]

        def c(v):
            return b.const(v, like=x)

        half = c(0.5)
        if self.attr(node, "approximate") == "tanh":
            x2 = b.mul(x, x)
            u = b.mul(c(math.sqrt(2.0 / math.pi)), b.add(x, b.mul(c(GELU_TANH_C), b.mul(x2, x))))
            s = b.sigmoid(b.mul(c(2.0), u))
            s_neg = b.sigmoid(b.mul(c(-2.0), u))
            du = b.mul(c(math.sqrt(2.0 / math.pi)), b.add(c(1.0), b.mul(c(3 * GELU_TANH_C), x2)))
            s2 = b.mul(s, s_neg)  # 0 where x^2 may overflow du: the term's limit is 0, not NaN
            right = b.mul(b.mul(c(2.0), x), b.mul(s2, du))
            right = b.where(b.greater(s2, c(0.0)), right, c(0.0))
            return (b.mul(dy, b.add(s, right)),)
        phi = b.mul(half, b.add(c(1.0), b.erf(b.mul(x, c(1.0 / math.sqrt(2.0))))))
        # left of -1, Phi(x) = y / x: the forward keeps Phi's tail (normal_cdf), while
        # (1 + erf) cancels there (float32: 3% off at x = -6, 0 below -5.9)
        phi = b.where(b.less(x, c(-1.0)), b.div(node.name, x), phi)
        dens = b.mul(c(1.0 / math.sqrt(2.0 * math.pi)), b.exp(b.mul(c(-0.5), b.mul(x, x))))
        return (b.mul(dy, b.add(phi, b.mul(x, dens))),)


@register
class Silu(Unary):
    """y = x * sigmoid(x) (SiLU, also called swish; Elfwing et al., 2018).

    VJP: dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x).
    """

    name = "silu"
    activation = True

    def reference(self, x):
        return x * _sigmoid(x)

    def grad(self, b: Builder, node: Node, dy: str):
        x = node.inputs[0]
        s = b.sigmoid(x)
        one = b.const(1.0, like=x)
        return (b.mul(dy, b.mul(s, b.add(one, b.mul(x, b.sub(one, s))))),)


@register
class Mish(Unary):
    """y = x * tanh(softplus(x)) (Misra, 2019).

    VJP: dx = dy * (t + x * (1 - t^2) * sigmoid(x)), t = tanh(softplus(x)).
    """

    name = "mish"
    activation = True

    def reference(self, x):
        return x * np.tanh(_softplus(x))

    def grad(self, b: Builder, node: Node, dy: str):
        x = node.inputs[0]
        t = b.tanh(b.softplus(x))
        one = b.const(1.0, like=x)
        d = b.add(t, b.mul(b.mul(x, b.sub(one, b.mul(t, t))), b.sigmoid(x)))
        return (b.mul(dy, d),)


@register
class Softsign(Unary):
    """y = x / (1 + |x|).   VJP: dx = dy / (1 + |x|)^2 = dy * (1 - |y|)^2 (read from y)."""

    name = "softsign"
    activation = True

    def reference(self, x):
        return x / (1.0 + np.abs(x))

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        d = b.sub(b.const(1.0, like=y), b.abs(y))
        return (b.mul(dy, b.mul(d, d)),)


@register
class HardSigmoid(Unary):
    """y = max(0, min(1, alpha * x + beta)), alpha = 0.2, beta = 0.5 by default (the ONNX
    HardSigmoid and Keras 2 definition; torch's Hardsigmoid is alpha = 1/6).

    VJP: dx = dy * alpha where 0 < alpha * x + beta < 1 (exactly where 0 < y < 1), else 0.
    """

    name = "hard_sigmoid"
    activation = True
    attrs: ClassVar[dict[str, Any]] = {"alpha": 0.2, "beta": 0.5}

    def reference(self, x, *, alpha, beta):
        return np.clip(alpha * x + beta, 0.0, 1.0)

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        inside = b.mul(b.greater(y, b.const(0.0, like=y)), b.less(y, b.const(1.0, like=y)))
        return (b.mul(dy, b.mul(b.const(float(self.attr(node, "alpha")), like=y), inside)),)


@register
class HardTanh(Unary):
    """y = min(max(x, -1), 1).   VJP: dx = dy where -1 < x < 1 (exactly where -1 < y < 1)."""

    name = "hard_tanh"
    activation = True

    def reference(self, x):
        return np.clip(x, -1.0, 1.0)

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        inside = b.mul(b.greater(y, b.const(-1.0, like=y)), b.less(y, b.const(1.0, like=y)))
        return (b.mul(dy, inside),)
