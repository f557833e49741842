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
    """Batch normalization (Ioffe & Szegedy, 2015) over the last axis (the features C) of x,
    statistics over every other axis, with the conventions of torch.nn.BatchNorm1d.

    Operands: x [..., C], gamma [C], beta [C] (params), running_mean [C], running_var [C]
    (states). Inference form (the reference): y = (x - running_mean) / sqrt(running_var + eps)
    * gamma + beta. Training form: y = (x - mu) / sqrt(var + eps) * gamma + beta with the
    batch's mean mu and biased variance var; the step then sets
    running_mean <- (1 - momentum) running_mean + momentum mu and
    running_var <- (1 - momentum) running_var + momentum var * n / max(n - 1, 1)
    (the unbiased variance over the n values per feature).

    VJP: none of its own: autodiff sees the primitives of ``decompose``.
    """

    name = "batch_norm"
    arity = 5
    kind = Kind.COMPOSITE
    attrs: ClassVar[dict[str, Any]] = {"momentum": 0.1, "eps": 1e-5}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        x = types[0]
        same_float_dtype(self.name, types)
        if x.rank < 2 or not isinstance(x.shape[-1], int):
            raise ShapeError(f"batch_norm: expects x of shape [..., C] with a fixed C, got {x}")
        c = x.shape[-1]
        for k, t in zip(("gamma", "beta", "running_mean", "running_var"), types[1:]):
            if t.shape != (c,):
                raise ShapeError(f"batch_norm: {k} must have shape [{c}], got {t}")
        m = attrs.get("momentum", self.attrs["momentum"])
        eps = attrs.get("eps", self.attrs["eps"])
        if not 0.0 <= float(m) <= 1.0 or float(eps) < 0.0:
            raise ShapeError(f"batch_norm: needs 0 <= momentum <= 1 and eps >= 0, got {m}, {eps}")
        return x

    def reference(self, x, gamma, beta, mean, var, *, momentum, eps):
        return (x - mean) / np.sqrt(var + eps) * gamma + beta

    def decompose(
        self, b: Builder, node: Node, training: bool
    ) -> tuple[str, list[tuple[str, str]]]:
        """Emit the op as primitives (the last one named ``node.name``); returns that name and
        the (state, new value) updates of the training form."""
        x, gamma, beta, rmean, rvar = node.inputs
        xt = b.type_of(x)
        eps = b.const(float(self.attr(node, "eps")), like=x)
        if not training:
            inv = b.rsqrt(b.add(rvar, eps))
            y = b.mul(b.sub(x, rmean), b.mul(inv, gamma))
            return b.emit("add", (y, beta), name=node.name), []
        axes = tuple(range(xt.rank - 1))
        shape = xt.shape[-1:]
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
