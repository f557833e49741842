"""Optimizers: each emits its update rule as IR nodes (section "update") of the training graph.

The learning rate is a runtime input (scalar ``lr``), so schedules change it without a
recompile; the step counter ``step`` is an i64 state value incremented by the graph itself,
and ``t = step + 1`` (the 1-based number of the step being taken, i64) is passed to ``build``;
float factors of it go through ``_step_float`` (op ``cast``) or, for 1 - beta^t, op
``one_minus_pow`` straight from the integer.

Two profiles of semantics:

- ``semantics="torch"`` (default): the algorithms as documented for ``torch.optim`` (the
  pseudo-code on each class's documentation page, PyTorch 2.x), with torch's parameter names and
  defaults. Weight decay is L2 added to the gradient (``g += weight_decay * p``), except AdamW.
- ``semantics="keras"``: the update rules of Keras 3 (``keras/src/optimizers/*.py``), with
  torch's parameter names mapped onto Keras's (``eps`` = ``epsilon``, ``alpha`` (RMSprop) and
  ``rho`` = ``rho``, ``betas`` = ``(beta_1, beta_2)``) and Keras's defaults. Keras applies
  ``weight_decay`` decoupled, before the update: ``p -= p * weight_decay * lr``.

Every update is written with ordinary elementwise ops (add, mul, div, sqrt, maximum, ...), so
the interpreter, the JIT and an exported training library all run the same rule.
"""

from __future__ import annotations

import math
import numbers
import weakref
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from graphc.ir.builder import Builder
from graphc.ir.errors import GraphcError
from graphc.runtime.checks import check_bool

SEMANTICS = ("torch", "keras")


@dataclass
class Optimizer:
    """Base: ``build`` returns the (target, new value) updates for params and their state.

    Subclasses are dataclasses whose fields default to None where the default depends on the
    profile; ``DEFAULTS[semantics]`` fills them in ``__post_init__``. Every optimizer also takes
    the keyword ``learning_rate=``, Keras's name for ``lr`` (it sets ``lr``), and at most one of
    Keras's gradient-clipping options ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (> 0;
    see ``clip_gradients``; ``global_clipnorm`` under torch semantics is
    ``torch.nn.utils.clip_grad_norm_``).

    Raises:
        GraphcError: (when made, before anything compiles) an option the optimizer lacks
            (naming graphc's name for a Keras or torch one), more than one clipping option,
            a clipping option that is not a finite number > 0, ``lr`` or another rate or
            coefficient that is negative or not finite, an unknown ``semantics``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each optimizer's own docstring (what ``help(gc.Adam)`` shows) ends with the options
        and errors every optimizer shares."""
        super().__init_subclass__(**kwargs)
        if cls.__doc__ and "Gradient clipping" not in cls.__doc__:
            cls.__doc__ = cls.__doc__.rstrip() + _SHARED_DOC

    lr = 1e-3  # plain class attributes, not fields: subclasses declare their own, in their order
    semantics = "torch"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}
    learning_rate: float | None = field(default=None, kw_only=True, repr=False, compare=False)
    # gradient clipping (Keras's optimizer options; at most one): see clip_gradients
    clipnorm: float | None = field(default=None, kw_only=True, repr=False)
    clipvalue: float | None = field(default=None, kw_only=True, repr=False)
    global_clipnorm: float | None = field(default=None, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        if self.learning_rate is not None:
            self.lr = self.learning_rate
        if self.semantics not in SEMANTICS:
            raise GraphcError(
                f"{type(self).__name__}: semantics must be one of {SEMANTICS}, "
                f"got {self.semantics!r}"
            )
        for k, v in self.DEFAULTS.get(self.semantics, {}).items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        for f in fields(self):  # type: ignore[arg-type]
            if getattr(self, f.name) is None and f.name not in _OPTIONAL:
                raise GraphcError(f"{type(self).__name__}: {f.name} has no default; give a value")
        self._check()  # reject bad hyperparameters where they are written, not at compile time

    def bind(self, model: Any) -> None:
        """Called by the Model compiled with this optimizer (see ``__setattr__``)."""
        models = self.__dict__.get("_models")
        if models is None:
            models = weakref.WeakSet()
            object.__setattr__(self, "_models", models)
        models.add(model)

    def __setattr__(self, name: str, value: Any) -> None:
        """Once a model is compiled with this optimizer (Keras's ``model.optimizer``):

        - ``lr`` or ``learning_rate`` set the learning rate of every such model (its
          ``model.lr``, a runtime input: Keras's ``model.optimizer.learning_rate = 1e-4``),
          checked as ``model.lr`` is; the assignment was silently ignored, the models went on
          at the old rate while the optimizer's repr and model files showed the new one;
        - another option (momentum, betas, eps, ...) is part of the compiled update, so a new
          value raises GraphcError instead of being ignored likewise: compile again with a
          new optimizer (``copy.copy(opt)`` is an unbound copy).
        """
        models = self.__dict__.get("_models")
        if not models:
            object.__setattr__(self, name, value)
            return
        if name in ("lr", "learning_rate"):
            from graphc.runtime.checks import check_lr

            v = check_lr(value)
            if v == self.__dict__.get("lr") and name == "lr":
                # no change of the rate (build's checks write lr back as a float when a
                # split step compiles later): the models keep theirs, a schedule's included
                object.__setattr__(self, "lr", v)
                return
            for m in list(models):
                m.lr = v
            object.__setattr__(self, "lr", v)
            object.__setattr__(self, "learning_rate", v)
            return
        old = self.__dict__.get(name, getattr(type(self), name, None))
        if name in {f.name for f in fields(self)} and not _same_setting(old, value):  # type: ignore[arg-type]
            raise GraphcError(
                f"{type(self).__name__}: {name} is compiled into the update of the model(s) "
                f"built with this optimizer ({name}={old!r}); to train with {name}={value!r}, "
                f"compile again with a new optimizer (copy.copy(optimizer) is an unbound copy)"
            )
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles are unbound (no models: see ``__setattr__``)."""
        return {k: v for k, v in self.__dict__.items() if k != "_models"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def build(
        self, b: Builder, params: list[str], grads: dict[str, str], lr: str, t: str
    ) -> list[tuple[str, str]]:
        """Emit the update nodes with ``b``.

        Args:
            b: builder positioned after the backward nodes (section "update").
            params: the trainable params, in graph order.
            grads: param -> its gradient value.
            lr: the scalar learning-rate input.
            t: the scalar 1-based step number (step + 1), i64.

        Returns:
            (target, new value) pairs for every param and state slot.
        """
        raise NotImplementedError

    @property
    def keras(self) -> bool:
        return self.semantics == "keras"

    def clip_gradients(
        self, b: Builder, params: list[str], grads: dict[str, str]
    ) -> dict[str, str]:
        """The gradients after the clipping this optimizer asks for (the raw ones without),
        emitted as backward nodes before the update (so before weight decay, as torch's
        ``clip_grad_*_`` before ``step`` and Keras's ``_clip_gradients`` before its update):

        - ``clipvalue=v``: each element clipped to [-v, v] (Keras; ``torch.nn.utils.
          clip_grad_value_``);
        - ``clipnorm=c``: each gradient tensor g scaled by c / max(||g||, c) (Keras's
          ``clip_by_norm``: unchanged when its L2 norm is at most c);
        - ``global_clipnorm=c``: every gradient scaled by one factor from the L2 norm n of all
          of them together: c / max(n, c) under Keras (``clip_by_global_norm``), and
          min(1, c / (n + 1e-6)) under torch (``torch.nn.utils.clip_grad_norm_(params, c)``).
        """
        if self.clipvalue is None and self.clipnorm is None and self.global_clipnorm is None:
            return grads
        section, b.section = b.section, "backward"
        try:
            out = dict(grads)
            if self.clipvalue is not None:
                v = float(self.clipvalue)
                for p in params:
                    out[p] = b.minimum(b.maximum(grads[p], b.const(-v)), b.const(v))
            elif self.clipnorm is not None:
                c = b.const(float(self.clipnorm))
                for p in params:
                    norm = b.sqrt(b.sum(b.square(grads[p])))
                    out[p] = b.mul(grads[p], b.div(c, b.maximum(norm, c)))
            else:
                c = b.const(float(self.global_clipnorm))
                total = None
                for p in params:
                    sq = b.sum(b.square(grads[p]))
                    total = sq if total is None else b.add(total, sq)
                norm = b.sqrt(total)
                if self.keras:
                    scale = b.div(c, b.maximum(norm, c))
                else:
                    scale = b.minimum(b.const(1.0), b.div(c, b.add(norm, b.const(1e-6))))
                for p in params:
                    out[p] = b.mul(grads[p], scale)
            return out
        finally:
            b.section = section

    @staticmethod
    def slot(b: Builder, param: str, kind: str, init: str = "zeros", **init_args: float) -> str:
        """A state value shaped like ``param`` named ``PARAM.KIND`` (torch's state key)."""
        attrs: dict[str, Any] = {"init": init, "slot_of": param}
        if init_args:
            attrs["init_args"] = tuple(sorted((k, float(v)) for k, v in init_args.items()))
        name = f"{param}.{kind}"
        return b.own_source("state", name, b.type_of(param), attrs, f"{param}'s {kind} slot")

    def _check(self) -> None:
        name = type(self).__name__
        for f in fields(self):  # type: ignore[arg-type]
            if f.type in ("bool", bool):  # nesterov, amsgrad, centered: "False" was truthy
                setattr(self, f.name, check_bool(getattr(self, f.name), f"{name}: {f.name}"))
        lr = self.lr
        if isinstance(lr, bool) or not (
            isinstance(lr, numbers.Real) and lr >= 0 and math.isfinite(lr)
        ):  # 0 allowed, as torch.optim (which refuses only lr < 0) and model.lr / schedules
            raise GraphcError(f"{name}: lr must be a finite number >= 0, got {lr!r}")
        self.lr = float(lr)  # numpy scalars (np.float32(1e-3)) are numbers too
        clips = [
            f for f in ("clipnorm", "clipvalue", "global_clipnorm") if getattr(self, f) is not None
        ]
        if len(clips) > 1:
            raise GraphcError(f"{name}: give at most one of clipnorm, clipvalue, global_clipnorm")
        for f in clips:
            v = getattr(self, f)
            if isinstance(v, bool) or not (
                isinstance(v, numbers.Real) and v > 0 and math.isfinite(v)
            ):
                raise GraphcError(f"{name}: {f} must be a finite number > 0, got {v!r}")
            setattr(self, f, float(v))
        for f in (
            "weight_decay",
            "eps",
            "momentum",
            "dampening",
            "lr_decay",
            "initial_accumulator_value",
        ):
            v = getattr(self, f, 0.0)
            # a bool is no coefficient: eps=True trained with eps 1.0, momentum=True with 1.0
            if isinstance(v, bool) or not (
                isinstance(v, numbers.Real) and v >= 0 and math.isfinite(v)
            ):
                raise GraphcError(f"{name}: {f} must be a finite number >= 0, got {v!r}")
            if hasattr(self, f) and not isinstance(v, int | float):
                setattr(self, f, float(v))  # a numpy scalar
        for f in ("alpha", "rho"):  # RMSprop's, Adadelta's decay: checked when made too
            if getattr(self, f, None) is not None:
                _check_fraction(name, f, getattr(self, f), closed=True)
                setattr(self, f, float(getattr(self, f)))  # a numpy scalar
        betas = getattr(self, "betas", None)
        if betas is not None:
            if isinstance(betas, str | bytes) or not (
                hasattr(betas, "__len__") and len(betas) == 2
            ):
                raise GraphcError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
            for k, v in enumerate(betas):
                _check_fraction(name, f"betas[{k}]", v)
            self.betas = (float(betas[0]), float(betas[1]))

    def _l2(self, b: Builder, p: str, g: str) -> str:
        """torch's coupled weight decay: g + weight_decay * p."""
        wd = getattr(self, "weight_decay", 0.0)
        return b.add(g, b.mul(b.const(wd), p)) if wd and not self.keras else g

    def _decoupled(self, b: Builder, p: str, lr: str, decoupled: bool) -> str:
        """p * (1 - lr * weight_decay) when weight decay is decoupled (AdamW, Keras), else p."""
        wd = getattr(self, "weight_decay", 0.0)
        if not (wd and decoupled):
            return p
        if self.keras:  # Keras: variable.assign_sub(variable * weight_decay * lr)
            return b.sub(p, b.mul(b.mul(p, b.const(wd)), lr))
        return b.mul(p, b.sub(b.const(1.0), b.mul(lr, b.const(wd))))  # torch AdamW


def _same_setting(a: Any, b: Any) -> bool:
    """Whether option values a and b are the same setting (1 and 1.0, (0.9, 0.999) and
    [0.9, 0.999]): the normalizations ``_check`` writes back are no change."""
    try:
        return bool(a == b) or (
            isinstance(a, tuple | list) and isinstance(b, tuple | list) and list(a) == list(b)
        )
    except Exception:
        return False


_OPTIONAL = ("learning_rate", "clipnorm", "clipvalue", "global_clipnorm")  # may stay None

_SHARED_DOC = """

    Gradient clipping (Keras's options, at most one, each a finite number > 0, applied to the
    gradients before the update and before weight decay): ``clipvalue=v`` clips each element
    to [-v, v]; ``clipnorm=c`` scales each gradient tensor to an L2 norm of at most c;
    ``global_clipnorm=c`` scales all of them by one factor, c / max(n, c) with n the norm of
    all of them together (Keras), or min(1, c / (n + 1e-6)) under torch semantics
    (``torch.nn.utils.clip_grad_norm_``). ``learning_rate=`` is Keras's name for ``lr``.

    Raises:
        GraphcError: (when made) an option this optimizer lacks (naming graphc's name for a
            Keras or torch one), more than one clipping option or one not > 0, a negative or
            non-finite rate or coefficient, an unknown ``semantics``.
    """


def _bias_correction(b: Builder, beta: float, t: str) -> str:
    """1 - beta**t, computed in float64 from the integer step t (op one_minus_pow), then rounded:
    in float32, 1 - exp(t log beta) loses about 5 digits when beta is near 1."""
    return b.one_minus_pow(t, base=float(beta), dtype=b.dtype)


def _step_float(b: Builder, t: str) -> str:
    """The integer step t as a float of the model's dtype (exact below 2^24 in f32)."""
    return b.cast(t, dtype=b.dtype)


def _check_fraction(name: str, what: str, v: float, closed: bool = False) -> None:
    """v in [0, 1) ([0, 1] with ``closed``): a real number, not a bool (True was 1.0)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise GraphcError(
            f"{name}: {what} must be a number in [0, 1{']' if closed else ')'}, got {v!r}"
        )
    ok = 0 <= v <= 1 if closed else 0 <= v < 1
    if not ok:
        raise GraphcError(f"{name}: {what} must lie in [0, 1{']' if closed else ')'}, got {v!r}")


@dataclass
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    torch (``torch.optim.SGD`` documentation; lr=1e-2... torch requires lr, we default 0.01)::

        g = grad + weight_decay * p
        if momentum != 0:
            buf = g                                         (t == 1)
            buf = momentum * buf + (1 - dampening) * g      (t > 1)
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    The first-step case uses the step counter: buf starts at zero, and the factor
    (1 - dampening) becomes 1 when t == 1, so buf = g exactly as in torch.

    keras (``keras.optimizers.SGD``, Keras 3; lr=0.01): the velocity carries the rate and the
    opposite sign, and weight decay is decoupled::

        p = p - p * weight_decay * lr
        v = momentum * v - lr * g
        p = p + momentum * v - lr * g if nesterov else p + v      (p - lr * g when momentum == 0)

    ``dampening`` must be 0 under Keras (it has none).

    Raises:
        GraphcError: lr < 0 (or not finite), negative options, Nesterov without momentum or with dampening.
    """

    lr: float = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    semantics: str = "torch"

    def build(self, b, params, grads, lr, t):
        self._check()
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise GraphcError("SGD: Nesterov momentum requires momentum > 0 and dampening = 0")
        if self.keras and self.dampening:
            raise GraphcError("SGD: Keras's SGD has no dampening; use semantics='torch'")
        mu = self.momentum
        ups = []
        for p in params:
            g = self._l2(b, p, grads[p])
            if self.keras:
                p0 = self._decoupled(b, p, lr, True)
                lr_g = b.mul(lr, g)
                if not mu:
                    ups.append((p, b.sub(p0, lr_g)))
                    continue
                v = self.slot(b, p, "momentum")
                v1 = b.sub(b.mul(b.const(mu), v), lr_g)
                ups.append((v, v1))
                new_p = (
                    b.sub(b.add(p0, b.mul(v1, b.const(mu))), lr_g)
                    if self.nesterov
                    else b.add(p0, v1)
                )
                ups.append((p, new_p))
                continue
            if mu:
                buf = self.slot(b, p, "momentum_buffer")
                if self.dampening:
                    first = b.greater(b.const(1.5), _step_float(b, t))  # 1.0 when t == 1
                    damp = b.add(b.const(1 - self.dampening), b.mul(first, b.const(self.dampening)))
                    new_buf = b.add(b.mul(b.const(mu), buf), b.mul(damp, g))
                else:
                    new_buf = b.add(b.mul(b.const(mu), buf), g)
                ups.append((buf, new_buf))
                g = b.add(g, b.mul(b.const(mu), new_buf)) if self.nesterov else new_buf
            ups.append((p, b.sub(p, b.mul(lr, g))))
        return ups


@dataclass
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with AMSGrad (Reddi et al., 2018).

    torch (``torch.optim.Adam`` documentation; lr=1e-3, betas=(0.9, 0.999), eps=1e-8)::

        g = grad + weight_decay * p
        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
        vmax = max(vmax, v) if amsgrad (and v_used = vmax, else v)
        p = p - lr * (m / (1 - beta1^t)) / (sqrt(v_used / (1 - beta2^t)) + eps)

    keras (``keras.optimizers.Adam``, Keras 3; eps=1e-7, the "epsilon hat" form of the paper's
    section 2, eps added to the un-corrected sqrt(v); weight decay decoupled)::

        alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
        m = m + (g - m)(1 - beta1);   v = v + (g^2 - v)(1 - beta2)
        vhat = max(vhat, v) if amsgrad
        p = p - m * alpha / (sqrt(v_used) + eps)

    The bias corrections 1 - beta^t are computed in float64 from the integer step (op
    ``one_minus_pow``) and rounded once, so a float32 step is as accurate as its float32 inputs.
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float | None = None
    weight_decay: float | None = None
    amsgrad: bool = False
    semantics: str = "torch"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "torch": {"eps": 1e-8, "weight_decay": 0.0},
        "keras": {"eps": 1e-7, "weight_decay": 0.0},
    }
    decoupled: ClassVar[bool] = False

    def build(self, b, params, grads, lr, t):
        self._check()
        name = type(self).__name__
        b1, b2 = self.betas
        _check_fraction(name, "betas[0]", b1)
        _check_fraction(name, "betas[1]", b2)
        bc1 = _bias_correction(b, b1, t)
        bc2 = _bias_correction(b, b2, t)
        decoupled = self.decoupled or self.keras
        ups = []
        if self.keras:
            alpha = b.div(b.mul(lr, b.sqrt(bc2)), bc1)
        else:
            step_size = b.div(lr, bc1)
            # v / (1 - beta2^t) as v * (1 / (1 - beta2^t)): one rounding more under the square
            # root (relative 2^-24), one division less per element. The update loop is bound by
            # the divider while its arrays are in L2 (a division and a square root per element
            # left): 0.58 -> 0.41-0.45 ns per parameter for 16k-66k parameters, one Xeon core
            inv_bc2 = b.div(b.const(1.0), bc2)
        for p in params:
            g = grads[p] if decoupled else self._l2(b, p, grads[p])
            p0 = self._decoupled(b, p, lr, decoupled)
            m, v = self.slot(b, p, "exp_avg"), self.slot(b, p, "exp_avg_sq")
            if self.keras:
                m1 = b.add(m, b.mul(b.sub(g, m), b.const(1 - b1)))
                v1 = b.add(v, b.mul(b.sub(b.square(g), v), b.const(1 - b2)))
            else:
                m1 = b.add(b.mul(b.const(b1), m), b.mul(b.const(1 - b1), g))
                v1 = b.add(b.mul(b.const(b2), v), b.mul(b.const(1 - b2), b.square(g)))
            ups += [(m, m1), (v, v1)]
            v_used = v1
            if self.amsgrad:
                vmax = self.slot(b, p, "max_exp_avg_sq")
                v_used = b.maximum(vmax, v1)
                ups.append((vmax, v_used))
            if self.keras:
                upd = b.div(b.mul(m1, alpha), b.add(b.sqrt(v_used), b.const(self.eps)))
                ups.append((p, b.sub(p0, upd)))
            else:
                denom = b.add(b.sqrt(b.mul(v_used, inv_bc2)), b.const(self.eps))
                ups.append((p, b.sub(p0, b.mul(step_size, b.div(m1, denom)))))
        return ups


@dataclass
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    torch (``torch.optim.AdamW`` documentation; weight_decay=1e-2): first
    ``p = p - lr * weight_decay * p``, then Adam's update without L2 in the gradient (see Adam).
    keras (``keras.optimizers.AdamW``; weight_decay=0.004): ``p = p - p * weight_decay * lr``,
    then Keras's Adam.
    """

    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "torch": {"eps": 1e-8, "weight_decay": 1e-2},
        "keras": {"eps": 1e-7, "weight_decay": 0.004},
    }
    decoupled: ClassVar[bool] = True


@dataclass
class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011).

    torch (``torch.optim.Adagrad`` documentation; lr=1e-2, lr_decay=0, weight_decay=0,
    initial_accumulator_value=0, eps=1e-10)::

        g = grad + weight_decay * p
        clr = lr / (1 + (t - 1) lr_decay)
        sum = sum + g^2                    (sum starts at initial_accumulator_value)
        p = p - clr * g / (sqrt(sum) + eps)

    keras (``keras.optimizers.Adagrad``; lr=1e-3, initial_accumulator_value=0.1, eps=1e-7)::

        sum = sum + g^2;   p = p - lr * g / sqrt(sum + eps)

    (Keras has no lr_decay; it must be 0 under Keras.)
    """

    lr: float | None = None
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float | None = None
    eps: float | None = None
    semantics: str = "torch"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "torch": {"lr": 1e-2, "initial_accumulator_value": 0.0, "eps": 1e-10},
        "keras": {"lr": 1e-3, "initial_accumulator_value": 0.1, "eps": 1e-7},
    }

    def build(self, b, params, grads, lr, t):
        self._check()
        if self.keras and self.lr_decay:
            raise GraphcError("Adagrad: Keras's Adagrad has no lr_decay; use semantics='torch'")
        clr = lr
        if self.lr_decay:
            tf = _step_float(b, t)
            clr = b.div(
                lr, b.add(b.const(1.0), b.mul(b.sub(tf, b.const(1.0)), b.const(self.lr_decay)))
            )
        ups = []
        for p in params:
            g = self._l2(b, p, grads[p])
            p0 = self._decoupled(b, p, lr, self.keras)
            acc = self.slot(b, p, "sum", "constant", value=self.initial_accumulator_value)
            acc1 = b.add(acc, b.square(g))
            if self.keras:
                denom = b.sqrt(b.add(acc1, b.const(self.eps)))
            else:
                denom = b.add(b.sqrt(acc1), b.const(self.eps))
            ups += [(acc, acc1), (p, b.sub(p0, b.div(b.mul(clr, g), denom)))]
        return ups


@dataclass
class RMSprop(Optimizer):
    """RMSprop (Hinton, Lecture 6e), centered variant (Graves, 2013), optional momentum.

    torch (``torch.optim.RMSprop`` documentation; lr=1e-2, alpha=0.99, eps=1e-8)::

        g = grad + weight_decay * p
        v = alpha v + (1 - alpha) g^2
        vt = max(v - gavg^2, 0) with gavg = alpha gavg + (1 - alpha) g   if centered, else v
        if momentum > 0: buf = momentum buf + g / (sqrt(vt) + eps);  p = p - lr buf
        else:            p = p - lr g / (sqrt(vt) + eps)

    keras (``keras.optimizers.RMSprop``; lr=1e-3, rho (our alpha)=0.9, eps=1e-7; eps inside
    the square root, the momentum buffer holds lr-scaled increments)::

        v = alpha v + (1 - alpha) g^2
        d = max(v - gavg^2, 0) + eps  if centered (gavg as above)  else v + eps
        inc = lr g / sqrt(d)
        if momentum > 0: buf = momentum buf + inc;  p = p - buf
        else:            p = p - inc

    The clamp max(., 0) is not in torch's or Keras's text: v - gavg^2 is a variance, >= 0
    exactly, but the two running averages round apart, and under a near-constant gradient
    their difference goes negative, where torch's and Keras's square root makes the
    parameter NaN (mxnet #6235); elsewhere the update is theirs.
    """

    lr: float | None = None
    alpha: float | None = None
    eps: float | None = None
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    semantics: str = "torch"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "torch": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8},
        "keras": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7},
    }

    def build(self, b, params, grads, lr, t):
        self._check()
        _check_fraction("RMSprop", "alpha", self.alpha, closed=True)
        a = self.alpha
        ups = []
        for p in params:
            g = self._l2(b, p, grads[p])
            p0 = self._decoupled(b, p, lr, self.keras)
            v = self.slot(b, p, "square_avg")
            v1 = b.add(b.mul(b.const(a), v), b.mul(b.const(1 - a), b.square(g)))
            ups.append((v, v1))
            vt = v1
            if self.centered:
                ga = self.slot(b, p, "grad_avg")
                ga1 = b.add(b.mul(b.const(a), ga), b.mul(b.const(1 - a), g))
                ups.append((ga, ga1))
                # v - gavg^2 >= 0 in exact arithmetic (Jensen), but the two running averages
                # round apart: under a near-constant gradient the difference went negative and
                # sqrt made the parameter NaN (float32, alpha 0.99: step 1168; mxnet #6235,
                # torch alike); clamped at 0, a no-op wherever it was >= 0
                vt = b.maximum(b.sub(v1, b.square(ga1)), b.const(0.0))
            if self.keras:
                step = b.div(b.mul(lr, g), b.sqrt(b.add(vt, b.const(self.eps))))
            else:
                step = b.div(g, b.add(b.sqrt(vt), b.const(self.eps)))
            if self.momentum:
                buf = self.slot(b, p, "momentum_buffer")
                buf1 = b.add(b.mul(b.const(self.momentum), buf), step)
                ups.append((buf, buf1))
                step = buf1
            ups.append((p, b.sub(p0, step if self.keras else b.mul(lr, step))))
        return ups


@dataclass
class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012).

    torch (``torch.optim.Adadelta`` documentation; lr=1.0, rho=0.9, eps=1e-6)::

        g = grad + weight_decay * p
        v = rho v + (1 - rho) g^2
        dx = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho u + (1 - rho) dx^2
        p = p - lr dx

    keras (``keras.optimizers.Adadelta``; lr=1e-3, rho=0.95, eps=1e-7): the same rule with
    these defaults and decoupled weight decay.
    """

    lr: float | None = None
    rho: float | None = None
    eps: float | None = None
    weight_decay: float = 0.0
    semantics: str = "torch"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "torch": {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
        "keras": {"lr": 1e-3, "rho": 0.95, "eps": 1e-7},
    }

    def build(self, b, params, grads, lr, t):
        self._check()
        _check_fraction("Adadelta", "rho", self.rho, closed=True)
        r, eps = self.rho, b.const(self.eps)
        ups = []
        for p in params:
            g = self._l2(b, p, grads[p])
            p0 = self._decoupled(b, p, lr, self.keras)
            v, u = self.slot(b, p, "square_avg"), self.slot(b, p, "acc_delta")
            v1 = b.add(b.mul(b.const(r), v), b.mul(b.const(1 - r), b.square(g)))
            dx = b.mul(b.div(b.sqrt(b.add(u, eps)), b.sqrt(b.add(v1, eps))), g)
            u1 = b.add(b.mul(b.const(r), u), b.mul(b.const(1 - r), b.square(dx)))
            ups += [(v, v1), (u, u1), (p, b.sub(p0, b.mul(lr, dx)))]
        return ups


# Options of torch.optim / keras.optimizers that graphc's optimizers do not have: what a user
# porting a script is told instead of Python's "unexpected keyword argument"
_NOT_OFFERED = {
    "maximize": "graphc's optimizers minimize the loss; to maximize f, minimize -f",
    "use_ema": "graphc keeps no moving average of the weights (Keras's use_ema)",
    "gradient_accumulation_steps": "graphc applies every step's gradient (no accumulation); "
    "use a larger batch_size",
    "loss_scale_factor": "graphc scales no loss (mixed-precision loss scaling)",
}
_NOT_OFFERED.update(ema_momentum=_NOT_OFFERED["use_ema"])
_NOT_OFFERED["ema_overwrite_frequency"] = _NOT_OFFERED["use_ema"]
for _k in ("foreach", "fused", "capturable", "differentiable", "jit_compile", "name"):
    _NOT_OFFERED[_k] = "an implementation option of torch.optim / Keras; graphc compiles its own"
# Keras's names of the options graphc names as torch does (the module docstring)
_KERAS_NAMES = {"epsilon": "eps", "beta_1": "betas", "beta_2": "betas", "rho": "alpha"}


def _named_options(cls: type) -> None:
    """Wrap ``cls.__init__`` (a dataclass's) so that an option the class lacks raises
    GraphcError naming it, graphc's name for a Keras name and the options there are, instead
    of Python's TypeError."""
    init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for k in kwargs:
            if k in known:
                continue
            alt = _KERAS_NAMES.get(k)
            if alt == "betas":
                hint = "; graphc takes torch's betas=(beta_1, beta_2)"
            elif alt is not None and alt in known:
                hint = f"; graphc takes torch's name: {alt}="
            elif k in _NOT_OFFERED:
                hint = f": {_NOT_OFFERED[k]}"
            else:
                hint = ""
            raise GraphcError(
                f"{cls.__name__}: no option {k!r}{hint}. Its options: {', '.join(known)}"
            )
        init(self, *args, **kwargs)

    __init__.__doc__, __init__.__wrapped__ = init.__doc__, init  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[method-assign]


OPTIMIZERS = {c.__name__: c for c in (SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta)}


def _repr_with_clipping(cls: type) -> None:
    """Append the gradient-clipping option that is set to ``cls``'s dataclass repr (the clip
    fields are left out of it so that an optimizer without clipping reads as before): a model's
    repr and dump name the clipping the update applies."""
    plain = cls.__repr__
    if getattr(plain, "shows_clipping", False):  # inherited from a class wrapped already
        return

    def __repr__(self: Any) -> str:
        text = plain(self)
        clips = [f for f in ("clipnorm", "clipvalue", "global_clipnorm") if getattr(self, f, None)]
        return text[:-1] + "".join(f", {f}={getattr(self, f)!r}" for f in clips) + ")"

    __repr__.shows_clipping = True  # type: ignore[attr-defined]
    cls.__repr__ = __repr__  # type: ignore[method-assign]


for _c in OPTIMIZERS.values():
    _named_options(_c)
    _repr_with_clipping(_c)
