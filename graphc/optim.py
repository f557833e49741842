"""Optimizers: each emits its update rule as IR nodes (section "update") of the training graph.

The learning rate is a runtime input (scalar ``lr``), so schedules change it without a
recompile; the step counter ``step`` is a state value incremented by the graph itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from graphc.ir.builder import Builder
from graphc.ir.errors import GraphcError


class Optimizer:
    """Base: ``build`` returns the (target, new value) updates for params and their state."""

    lr: float = 1e-3

    def build(self, b: Builder, params: list[str], grads: dict[str, str], lr: str,
              t: str) -> list[tuple[str, str]]:
        raise NotImplementedError

    @staticmethod
    def slot(b: Builder, param: str, kind: str, init: str = "zeros", **init_args: float) -> str:
        attrs = {"init": init, "slot_of": param}
        if init_args:
            attrs["init_args"] = tuple(sorted(init_args.items()))
        return b.source("state", f"{param}.{kind}", b.type_of(param), attrs)

    def _check(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GraphcError(f"{type(self).__name__}: lr must be a positive number, got {self.lr!r}")


@dataclass
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    Follows the algorithm documented for ``torch.optim.SGD``:
        g = grad + weight_decay * p
        buf = g (first step), else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf        (when momentum != 0)
        p = p - lr * g
    The first-step case is handled with the step counter t: buf starts at zero and the
    (1 - dampening) factor is replaced by 1 when t == 1.
    """

    lr: float = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def build(self, b, params, grads, lr, t):
        self._check()
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise GraphcError("SGD: Nesterov momentum requires momentum > 0 and dampening = 0")
        ups = []
        for p in params:
            g = grads[p]
            if self.weight_decay:
                g = b.add(g, b.mul(b.const(self.weight_decay), p))
            if self.momentum:
                buf = self.slot(b, p, "momentum_buffer")
                if self.dampening:
                    # first step: buf = g; later: momentum*buf + (1-dampening)*g
                    first = b.greater(b.const(1.5), t)  # 1.0 when t == 1
                    damp = b.add(b.const(1 - self.dampening), b.mul(first, b.const(self.dampening)))
                    new_buf = b.add(b.mul(b.const(self.momentum), buf), b.mul(damp, g))
                else:
                    new_buf = b.add(b.mul(b.const(self.momentum), buf), g)
                ups.append((buf, new_buf))
                g = b.add(g, b.mul(b.const(self.momentum), new_buf)) if self.nesterov else new_buf
            ups.append((p, b.sub(p, b.mul(lr, g))))
        return ups


@dataclass
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) as documented for ``torch.optim.Adam`` (amsgrad=False):
        g = grad + weight_decay * p
        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
        p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def build(self, b, params, grads, lr, t):
        self._check()
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise GraphcError(f"Adam: betas must lie in [0, 1), got {self.betas}")
        # beta^t = exp(t * log(beta)), computed once per step as scalars
        bc1 = b.sub(b.const(1.0), b.exp(b.mul(t, b.const(math.log(b1))))) if b1 > 0 else b.const(1.0)
        bc2 = b.sub(b.const(1.0), b.exp(b.mul(t, b.const(math.log(b2))))) if b2 > 0 else b.const(1.0)
        step_size = b.div(lr, bc1)
        ups = []
        for p in params:
            g = grads[p]
            if self.weight_decay:
                g = b.add(g, b.mul(b.const(self.weight_decay), p))
            m, v = self.slot(b, p, "exp_avg"), self.slot(b, p, "exp_avg_sq")
            m1 = b.add(b.mul(b.const(b1), m), b.mul(b.const(1 - b1), g))
            v1 = b.add(b.mul(b.const(b2), v), b.mul(b.const(1 - b2), b.square(g)))
            denom = b.add(b.sqrt(b.div(v1, bc2)), b.const(self.eps))
            ups += [(m, m1), (v, v1), (p, b.sub(p, b.mul(step_size, b.div(m1, denom))))]
        return ups
