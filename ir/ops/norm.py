"""Normalization: batch_norm, a composite op whose training and inference forms differ.

``batch_norm`` never reaches codegen: ``ir.passes.decompose.decompose`` replaces it by
primitives, in training mode (batch statistics, plus updates of the running statistics that
the compiled training step applies like optimizer state) or inference mode (the running
statistics: eval, predict and exported libraries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .base import Kind, Op, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node


@register
class BatchNorm(Op):
    """Batch normalization (Ioffe & Szegedy, 2015) over the feature axis ``axis`` of x (C
    features; default -1, the last: Keras's BatchNormalization(axis=-1); axis=1 on x [N, C,
    ...] is torch's BatchNorm1d / 2d / 3d, per channel of graphc's channels-first conv),
    statistics over every other axis, with the conventions of torch.nn.BatchNorm1d.

    Operands: x [..., C, ...], gamma [C], beta [C] (params), running_mean [C], running_var
    [C] (states), each broadcast along ``axis``. Inference form (the reference): y = (x -
    running_mean) / sqrt(running_var + eps) * gamma + beta. Training form: y = (x - mu) /
    sqrt(var + eps) * gamma + beta with the batch's mean mu and biased variance var; the step
    then sets
    running_mean <- (1 - momentum) running_mean + momentum mu and
    running_var <- (1 - momentum) running_var + momentum var * n / max(n - 1, 1)
    (the unbiased variance over the n values per feature).

    VJP: none of its own: autodiff sees the primitives of ``decompose``.
    """

    name = "batch_norm"
    arity = 5
    kind = Kind.COMPOSITE
    attrs: ClassVar[dict[str, Any]] = {"momentum": 0.1, "eps": 1e-5, "axis": -1}

    @staticmethod
    def feature_axis(x: TensorType, axis: Any) -> int:
        """``axis`` of x as a non-negative int: a fixed axis other than the batch axis N.

        Raises:
            ShapeError: an int out of range, or an axis of symbolic length (N).
        """
        if isinstance(axis, bool) or not isinstance(axis, int) or not -x.rank <= axis < x.rank:
            raise ShapeError(f"batch_norm: axis {axis!r} is not an axis of {x}")
        a = axis % x.rank
        if not isinstance(x.shape[a], int):
            raise ShapeError(
                f"batch_norm: the feature axis {axis} of {x} must have a fixed length (not "
                "the batch axis N)"
            )
        return a

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        x = types[0]
        same_float_dtype(self.name, types)
        if x.rank < 2:
            raise ShapeError(f"batch_norm: expects x of rank >= 2 ([N, C] or [N, ..., C]), got {x}")
        c = x.shape[self.feature_axis(x, attrs.get("axis", -1))]
        for k, t in zip(("gamma", "beta", "running_mean", "running_var"), types[1:]):
            if t.shape != (c,):
                raise ShapeError(f"batch_norm: {k} must have shape [{c}], got {t}")
        m = attrs.get("momentum", self.attrs["momentum"])
        eps = attrs.get("eps", self.attrs["eps"])
        if not 0.0 <= float(m) <= 1.0 or float(eps) < 0.0:
            raise ShapeError(f"batch_norm: needs 0 <= momentum <= 1 and eps >= 0, got {m}, {eps}")
        return x

    def reference(self, x, gamma, beta, mean, var, *, momentum, eps, axis=-1):
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        gamma, beta, mean, var = (np.reshape(v, shape) for v in (gamma, beta, mean, var))
        return (x - mean) / np.sqrt(var + eps) * gamma + beta

    def decompose(
        self, b: Builder, node: Node, training: bool
    ) -> tuple[str, list[tuple[str, str]]]:
        """Emit the op as primitives (the last one named ``node.name``); returns that name and
        the (state, new value) updates of the training form."""
        x, gamma, beta, rmean, rvar = node.inputs
        xt = b.type_of(x)
        a = self.feature_axis(xt, self.attr(node, "axis"))
        c = xt.shape[a]
        if a != xt.rank - 1:  # [C] as [C, 1, ...]: broadcast along the feature axis
            along = (c,) + (1,) * (xt.rank - 1 - a)
            gamma, beta = b.reshape(gamma, shape=along), b.reshape(beta, shape=along)
            rmean_b, rvar_b = b.reshape(rmean, shape=along), b.reshape(rvar, shape=along)
        else:
            rmean_b, rvar_b = rmean, rvar
        eps = b.const(float(self.attr(node, "eps")), like=x)
        if not training:
            inv = b.rsqrt(b.add(rvar_b, eps))
            y = b.mul(b.sub(x, rmean_b), b.mul(inv, gamma))
            return b.emit("add", (y, beta), name=node.name), []
        axes = tuple(i for i in range(xt.rank) if i != a)
        shape = (c,)
        mu = b.mean(x, axes=axes, keepdims=True)
        d = b.sub(x, mu)
        var = b.mean(b.square(d), axes=axes, keepdims=True)
        y = b.mul(b.mul(d, b.rsqrt(b.add(var, eps))), gamma)
        out = b.emit("add", (y, beta), name=node.name)
        m = float(self.attr(node, "momentum"))
        keep, take = b.const(1.0 - m, like=x), b.const(m, like=x)
        n = b.size(x, axes=axes)
        one = b.const(1.0, like=x)
        unbias = b.div(n, b.maximum(b.sub(n, one), one))
        mu_c = b.reshape(mu, shape=shape)
        var_c = b.reshape(b.mul(var, unbias), shape=shape)
        new_mean = b.add(b.mul(keep, rmean), b.mul(take, mu_c))
        new_var = b.add(b.mul(keep, rvar), b.mul(take, var_c))
        return out, [(rmean, new_mean), (rvar, new_var)]
