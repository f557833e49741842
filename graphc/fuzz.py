"""Differential fuzzing: random well-typed graphs, compiled vs the float64 reference interpreter.

Each case is a pure function of one integer seed: a random network drawn from the op tables
below (every differentiable unary op of the registry, binary ops with broadcasting and the
signed-zero constants, matmul with transposes, sum/mean over axes with and without keepdims,
reshape, transpose, softmax, dropout (whose mask the JIT and the interpreter must draw alike)),
and the classes that found bugs before (issue 13): work on [d, N] tensors (the batch as a GEMM's
column count and as a reduction's or softmax's row), size-1 axes before others, outputs that
reduce over the batch, +0.0 and -0.0 in one graph, an output that is a constant, graphs whose only parameter is a bias, L2
penalties sum(w * w) in the loss, and batches larger than one predict block (1025, 1500 rows,
1 case in 25); one of the losses softmax_cross_entropy, binary_cross_entropy,
mean_squared_error or a random projection; random batch sizes (1, odd sizes, sizes that are
not multiples of the vector width), data of magnitudes up to 1e3, and parameters. Input domains
are kept valid (log and sqrt only see positive values, exp only bounded ones, divisors are
bounded away from zero).

For each case and optimization level it checks, with ``SGD(lr=1)`` so that one training step
turns each parameter p into p - grad:

- the outputs of ``predict`` (the public path, which splits rows into blocks where the graph
  allows) and the ``eval`` loss (no dropout) against ``graphc.ir.interpret`` in float64;
- the ``train_step`` loss and every updated parameter against the interpreter run over the
  training graph (forward + backward + update) in float64;
- the interpreter's float64 gradients against central finite differences of its own forward
  loss along random directions (this checks the VJP rules independently of codegen).

Tolerances: an element passes when ``|got - ref| <= atol + rtol * |ref| + 8 * |ref32 - ref|``
where ``ref32`` is the same graph interpreted in float32 (so ill-conditioned values, e.g. a
difference of two large sums, get the slack that float32 arithmetic needs), rtol = 2e-3 and
atol = 1e-5 * (1 + max |ref|) over the array. An infinity or NaN that the float32 and float64
references agree on must come out exactly.

Speed: the graphs of ``--per-module`` seeds (default 8), each at every level, are built into one
LLVM module (identical kernels and GEMMs emitted once, LLVM's fixed costs paid once), with no
train_epoch entry and no compile cache, and the kernels are optimized with the "fuzz" pipeline
of ``graphc.codegen.target.PIPELINES`` (O1 with the loop vectorizer instead of O3; GEMMs as
always). ``--jobs`` runs that many worker processes. Measured on 12 seeds x 3 levels without
the gradient check, CPU seconds per graph (all three levels; 2-core machine at load 13-17, so
wall times were meaningless): gc.compile per level 2.1, one module per graph 1.3, 4 graphs per
module 1.1, 12 per module 0.87 with the fuzz pipeline (O3: about 1.0; O0 without vectorizers
0.63, not used: it would no longer test the vectorized code users get).

Command line (outside CI; the README has the 1,000-graph run)::

    python -m graphc.fuzz --count 1000 --seed 0 --jobs 2 [--opt-levels 0 1 2] [--minutes 30]

prints every failure with its seed and a summary (seeds, graphs tried, failures, graphs per
second); exit status 1 when something failed. ``--per-module 0`` compiles each level through
gc.compile instead (the user's path: cache, O3, train_epoch). A failing seed reproduces with
``--seed S --count 1``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from graphc import dsl
from graphc import functional as fn
from graphc.cli import int_in, positive_float
from graphc.ir.interpret import interpret
from graphc.ir.ops import OPS, POINTWISE_OPS, REQUIRED

RTOL = 2e-3
ATOL_REL = 1e-5
BATCH_SIZES = (1, 2, 3, 5, 7, 8, 9, 13, 17, 33)
LARGE_BATCH = (1025, 1500)  # more rows than one predict block of 1024 (drawn 1 time in 25)
DIMS = (1, 2, 3, 4, 5, 6, 8, 9, 16, 17)
SCALES = (1.0, 10.0, 1e3)


# the unary ops the generator draws from: every differentiable unary pointwise op of the registry
# (a new op joins by being registered) and dropout
# unary ops drawn with attrs of the generator's choosing (pow has no default; clip's are
# infinite: no bound)
ATTR_UNARY = ("clip", "pow", "gelu_tanh")
UNARY_OPS = sorted(
    op
    for op in POINTWISE_OPS
    if OPS[op].arity == 1
    and not OPS[op].nondifferentiable
    and not OPS[op].needs_index
    and REQUIRED not in OPS[op].attrs.values()
    and op not in ATTR_UNARY
) + ["dropout"]


def _unary_range(op: str) -> tuple[bool, bool]:
    """(finite on [-3, 3], bounded by 10 in magnitude on [-1e4, 1e4]) of the op's reference,
    with its default attrs: how the generator keeps a new op's input in its domain."""
    spec = OPS[op]
    with np.errstate(all="ignore"):
        small = spec.evaluate(np.linspace(-3.0, 3.0, 61))
        wide = spec.evaluate(np.linspace(-1e4, 1e4, 201).astype(np.float32))
    finite = bool(np.all(np.isfinite(small)))
    return finite, finite and bool(np.all(np.abs(wide) <= 10.0))


@dataclass
class Case:
    """One random network with its data: everything ``check_case`` needs."""

    seed: int
    outputs: list[dsl.Tensor]
    loss: dsl.Tensor
    feeds: dict[str, np.ndarray]  # inputs (x, targets/labels)
    params: dict[str, np.ndarray]  # initial parameter values
    ops: list[str] = field(default_factory=list)
    n: int = 1
    dtype: str = "f32"

    def describe(self) -> str:
        shapes = {k: v.shape for k, v in self.feeds.items()}
        return f"seed {self.seed}: N={self.n} {self.dtype} inputs {shapes} ops {' '.join(self.ops)}"


# ---------------------------------------------------------------------------- the op tables
#
# The generator draws from these tables; a new DSL op joins the fuzzer by adding a row.
# UNARY_OPS: every differentiable unary pointwise op of the registry, and dropout; UNARY holds
#         the ones that need a composite to stay in their domain: name -> f(gen, v, big) ->
#         (tensor, big) on a [N, d] tensor; ``big``: |values| may be large (>> 10).
# BINARY: name -> f(gen, a, b) -> tensor: a [N, d] with b broadcastable to it.
# STEPS:  name -> (weight, f(gen, pool) -> (tensor [N, d], big)): one growth step of the
#         network from the pool of tensors made so far.


def _dropout(gen: _Gen, v, big):  # the JIT and the interpreter must draw the same mask
    return dsl.dropout(v, float(gen.rng.choice([0.1, 0.5])), seed=int(gen.rng.integers(2**31))), big


def _pow(gen: _Gen, v, big):
    """Integer powers of any sign, fractional ones of positive values."""
    if gen.rng.random() < 0.5:
        return fn.pow(dsl.tanh(v) * 2.0, float(gen.rng.choice([2.0, 3.0]))), False
    return fn.pow(dsl.softplus(v) + 0.5, float(gen.rng.choice([-1.5, 0.5, 2.5]))), big


def _square(gen: _Gen, v, big):
    if big:  # keep float32 far from overflow: square a bounded value
        return dsl.square(dsl.tanh(v) * 4.0), False
    return dsl.square(v), True


def _unary_generic(gen: _Gen, v, big, op: str):
    """Any registered unary op, its input kept in its domain by what its reference does on a
    probe range (``_unary_range``)."""
    fn = dsl.OP_FUNCTIONS[op]
    finite, bounded = _unary_range(op)
    if not finite:  # a domain such as x > 0 (reciprocal, rsqrt, ...): values >= 0.5
        return fn(dsl.softplus(v) + 0.5), not bounded
    if big and not bounded:
        return fn(v), True
    return fn(v), False


# special cases of UNARY_OPS (every other one goes through _unary_generic)
UNARY: dict[str, Callable] = {
    "exp": lambda gen, v, big: (dsl.exp(dsl.tanh(v) * 3.0), False),  # exp of bounded values
    "log": lambda gen, v, big: (dsl.log(dsl.softplus(v) + 0.1), big),  # log of values >= 0.1
    "sqrt": lambda gen, v, big: (dsl.sqrt(dsl.square(v) + 0.25), big),  # sqrt of values >= 0.25
    "square": _square,
    "dropout": _dropout,
    "gelu_tanh": lambda gen, v, big: (dsl.OP_FUNCTIONS["gelu"](v, approximate="tanh"), big),
    "clip": lambda gen, v, big: (dsl.OP_FUNCTIONS["clip"](v, min=-0.5, max=1.5), False),
    "pow": _pow,
}


def _where(gen: _Gen, a, b):
    """A select through a comparison mask of the two."""
    cmp = str(gen.rng.choice(["greater", "less", "less_equal", "greater_equal"]))
    return fn.where(getattr(fn, cmp)(a, b), a, dsl.tanh(b))


def _mul(gen: _Gen, a, b):
    return dsl.mul(a, dsl.tanh(b) if gen.rng.random() < 0.5 else b)


BINARY: dict[str, Callable] = {
    "add": lambda gen, a, b: dsl.add(a, b),
    "sub": lambda gen, a, b: dsl.sub(a, b),
    "mul": _mul,
    "maximum": lambda gen, a, b: dsl.maximum(a, b),
    "div": lambda gen, a, b: dsl.div(a, dsl.softplus(b) + 0.5),  # divisor >= 0.5
    "minimum": lambda gen, a, b: fn.minimum(a, b),
    "where": _where,
}

# constants a binary op may take as its second operand, the signed zeros included (CSE and
# kernel reuse once merged +0.0 and -0.0)
CONSTS = (0.5, -2.0, 3.0, 0.0, -0.0)


def _pick(gen: _Gen, pool):
    return pool[int(gen.rng.integers(len(pool)))]


def _step_unary(gen: _Gen, pool):
    v, big = _pick(gen, pool)
    op = str(gen.rng.choice(UNARY_OPS + list(ATTR_UNARY)))
    gen.ops.append(op)
    if op in UNARY:
        return UNARY[op](gen, v, big)
    return _unary_generic(gen, v, big, op)


def _step_binary(gen: _Gen, pool):
    v, big = _pick(gen, pool)
    op = str(gen.rng.choice(sorted(BINARY)))
    gen.ops.append(op)
    return BINARY[op](gen, v, gen.operand_like(v, [t for t, _ in pool])), big


def _step_matmul(gen: _Gen, pool):
    v, big = _pick(gen, pool)
    d, e = v.shape[1], gen.dim()
    scale = 1.0 / np.sqrt(d)
    if gen.rng.random() < 0.5:
        gen.ops.append("matmul")
        return dsl.matmul(v, gen.param((d, e), scale)), big
    gen.ops.append("matmul(tb)")
    return dsl.matmul(v, gen.param((e, d), scale), transpose_b=True), big


def _step_reduce(gen: _Gen, pool):
    v, big = _pick(gen, pool)
    tensors = [t for t, _ in pool]
    red = gen.rng.choice([dsl.sum, dsl.mean, dsl.sum, dsl.mean, fn.max, fn.min])
    axis = int(gen.rng.integers(2))
    if gen.rng.random() < 0.4:  # without keepdims: [N] reshaped to [N,1], or [d]
        gen.ops.append(f"{red.__name__}({axis})")
        r = red(v, axes=axis)
        r = dsl.reshape(r, ("N", 1)) if axis == 1 else r
    else:
        gen.ops.append(f"{red.__name__}({axis},keep)")
        r = red(v, axes=axis, keepdims=True)  # [N,1] or [1,d]
    other = tensors[int(gen.rng.integers(len(tensors)))]
    if other.shape != v.shape:
        other = v
    return dsl.add(other, dsl.tanh(r) if axis == 1 else r), big


def _step_reshape(gen: _Gen, pool):
    v, big = _pick(gen, pool)
    d = v.shape[1]
    if d % 2 == 0 and d > 2:
        a = 2
        gen.ops.append("reshape3")
        r = dsl.reshape(v, ("N", a, d // a))
        if gen.rng.random() < 0.5:
            return dsl.reshape(dsl.sigmoid(r), ("N", d)), False
        red = dsl.sum if gen.rng.random() < 0.5 else dsl.mean
        gen.ops.append(f"{red.__name__}(2)")
        return red(r, axes=2), big  # [N, 2]
    gen.ops.append("reshape")
    return dsl.reshape(v, ("N", d)), big


def _step_size1(gen: _Gen, pool):
    """A size-1 axis before others: [N, d] -> [N, 1, d] reduced over an axis, or [1, d] params."""
    v, big = _pick(gen, pool)
    d = v.shape[1]
    r = dsl.reshape(v, ("N", 1, d))
    how = int(gen.rng.integers(3))
    gen.ops.append(f"size1.{how}")
    if how == 0:
        return dsl.sum(r, axes=2, keepdims=False) + dsl.mean(r, axes=1), big  # [N,1] + [N,d]
    if how == 1:
        return dsl.reshape(dsl.sum(r, axes=1), ("N", d)), big
    return dsl.add(v, gen.param((1, d))), big


def _step_softmax(gen: _Gen, pool):
    v, big = _pick(gen, pool)
    if gen.rng.random() < 0.3:
        gen.ops.append("log_softmax")
        return fn.log_softmax(v), big
    gen.ops.append("softmax")
    return dsl.softmax(v), False


def _step_movement(gen: _Gen, pool):
    """Issue #14's slice, pad and concat along the features."""
    v, big = _pick(gen, pool)
    d = v.shape[1]
    m = str(gen.rng.choice(["slice", "pad", "concat"]))
    gen.ops.append(m)
    if m == "slice":
        lo = int(gen.rng.integers(d))
        return fn.slice(v, (lo,), (int(gen.rng.integers(lo + 1, d + 1)),), axes=(1,)), big
    if m == "pad":
        return dsl.apply("pad", v, axes=(1,), before=(1,), after=(2,)), big
    w, _ = _pick(gen, pool)
    return fn.concat([v, dsl.tanh(w)], axis=1), big


def _step_transpose(gen: _Gen, pool):
    """(v^T w) [d, e] with w [N, e] from the pool, then v2 @ that: [N, e] (K = N)."""
    v, _ = _pick(gen, pool)
    w, _ = _pick(gen, pool)
    scale = 1.0 / max(1, gen.n)
    if gen.rng.random() < 0.5:
        gen.ops.append("transpose+matmul")
        m = dsl.matmul(dsl.transpose(v), w) * scale
    else:
        gen.ops.append("matmul(ta)")
        m = dsl.matmul(v, w, transpose_a=True) * scale
    return dsl.matmul(dsl.tanh(v), dsl.tanh(m)), False


def _step_batch_columns(gen: _Gen, pool):
    """Work on [d, N] (the batch as the column dimension, the row stride of GEMM epilogues and
    the length of reductions), then back to [N, e]."""
    v, big = _pick(gen, pool)
    d, e = v.shape[1], gen.dim()
    how = int(gen.rng.integers(3))
    gen.ops.append(f"columns.{how}")
    vt = dsl.transpose(v)  # [d, N]
    if how == 0:  # GEMM [e, N] with an epilogue operand [e, N] or [e, 1]
        mm = dsl.matmul(gen.param((e, d), 1.0 / np.sqrt(d)), v, transpose_b=True)
        other = _pick(gen, pool)[0]
        if other.shape[1] == e and gen.rng.random() < 0.5:
            y = dsl.tanh(mm) * dsl.transpose(other)
        else:
            y = dsl.relu(mm + gen.param((e, 1)))
        return dsl.transpose(y), big
    if how == 1:  # elementwise on [d, N] with a column operand, reduction along N added back
        col = dsl.mean(vt, axes=1, keepdims=True)  # [d, 1]: over the batch
        return dsl.transpose(dsl.sub(vt, col)), big
    return dsl.transpose(dsl.softmax(dsl.tanh(vt))), False  # softmax over the batch


STEPS: dict[str, tuple[float, Callable]] = {
    "unary": (3.0, _step_unary),  # the unary ops are the most numerous (every activation)
    "binary": (2.0, _step_binary),
    "matmul": (1.0, _step_matmul),
    "reduce": (1.0, _step_reduce),
    "reshape": (1.0, _step_reshape),
    "size1": (0.5, _step_size1),
    "softmax": (1.0, _step_softmax),
    "transpose": (1.0, _step_transpose),
    "columns": (1.0, _step_batch_columns),
    "movement": (1.0, _step_movement),
}
PARAM_FREE_STEPS = (
    "unary",
    "reduce",
    "reshape",
    "softmax",
    "movement",
)  # for graphs whose only param is a bias


class _Gen:
    """Builds a random network with numpy's Generator; tracks how large values can get."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.params: dict[str, np.ndarray] = {}
        self.feeds: dict[str, np.ndarray] = {}
        self.ops: list[str] = []
        self.dtype = "f64" if self.rng.random() < 0.15 else "f32"
        self.np_dtype = np.float64 if self.dtype == "f64" else np.float32
        large = self.rng.random() < 0.04
        self.n = int(self.rng.choice(LARGE_BATCH if large else BATCH_SIZES))
        self.bias_only = self.rng.random() < 0.1

    def dim(self) -> int:
        return int(self.rng.choice(DIMS))

    def param(
        self, shape: tuple[int, ...], scale: float = 1.0, positive: bool = False
    ) -> dsl.Tensor:
        name = f"p{len(self.params)}"
        v = self.rng.standard_normal(shape) * scale
        if positive:
            v = np.abs(v) + 0.5
        self.params[name] = v.astype(self.np_dtype)
        return dsl.param(name, shape, init="zeros", dtype=self.dtype)

    def input(
        self, name: str, shape: tuple, values: np.ndarray, dtype: str | None = None
    ) -> dsl.Tensor:
        dt = dtype or self.dtype
        self.feeds[name] = values
        return dsl.input(name, shape, dtype=dt)

    def const(self, v: float) -> dsl.Tensor:
        return dsl.const(v, dtype=self.dtype)

    def operand_like(self, v: dsl.Tensor, pool: list[dsl.Tensor]) -> dsl.Tensor:
        """A second operand broadcastable against v [N, d]: same shape, [d], [N,1], [1,d] or []."""
        d = v.shape[1]
        kinds = ["same", "col", "keep0", "scalar", "const"] + ([] if self.bias_only else ["row"])
        kind = str(self.rng.choice(kinds))
        same = [t for t in pool if t.shape == v.shape and t is not v]
        if kind == "same":
            return self.rng.choice(same) if same else v
        if kind == "row":
            return self.param((d,))
        if kind == "col":
            self.ops.append("sum/mean(1,keep)")
            src = self.rng.choice(pool)
            red = dsl.sum if self.rng.random() < 0.5 else dsl.mean
            return dsl.tanh(red(src, axes=1, keepdims=True))
        if kind == "keep0":
            self.ops.append("mean(0,keep)")
            return dsl.mean(v, axes=0, keepdims=True)
        if kind == "scalar":
            self.ops.append("sum(all)")
            return dsl.tanh(dsl.sum(v) * 0.01)
        c = float(self.rng.choice(CONSTS))
        self.ops.append(f"const({c!r})")
        return self.const(c)

    def step(self, pool: list[tuple[dsl.Tensor, bool]]) -> tuple[dsl.Tensor, bool]:
        names = sorted(STEPS) if not self.bias_only else list(PARAM_FREE_STEPS)
        w = np.array([STEPS[k][0] for k in names])
        kind = str(self.rng.choice(names, p=w / w.sum()))
        return STEPS[kind][1](self, pool)

    def build(self) -> Case:
        rng = self.rng
        d0 = self.dim()
        scale = float(rng.choice(SCALES))
        x = self.input(
            "x", ("N", d0), (rng.standard_normal((self.n, d0)) * scale).astype(self.np_dtype)
        )
        pool: list[tuple[dsl.Tensor, bool]] = [(x, scale > 10)]
        for _ in range(int(rng.integers(2, 7))):
            pool.append(self.step(pool))
        out, big = pool[-1]
        if big:
            out = dsl.tanh(out * 1e-3) * 10.0
        if self.bias_only:  # the loss reaches its only param through a bias add
            self.ops.append("bias-only")
            out = dsl.tanh(out) + self.param((out.shape[1],))
        else:  # a final dense layer, so the loss always depends on parameters
            c = self.dim()
            out = dsl.matmul(
                out, self.param((out.shape[1], c), 1.0 / np.sqrt(out.shape[1]))
            ) + self.param((c,))
        outputs = [out]
        extra = pool[int(rng.integers(1, len(pool)))][0]
        if extra is not out and extra.shape[0] == "N":
            outputs.append(extra)
        r = rng.random()
        if r < 0.2:  # an output that reduces over the batch
            self.ops.append("output-over-batch")
            red = dsl.sum if rng.random() < 0.5 else dsl.mean
            outputs.append(red(dsl.tanh(extra), axes=0 if rng.random() < 0.7 else None))
        elif r < 0.3:  # both signed zeros in one graph: sigmoid(1 / (v * (+-0))) is 0 or 1
            self.ops.append("signed-zeros")
            v = dsl.tanh(extra) + 2.0  # >= 1: never 0 itself
            for z in (0.0, -0.0):
                outputs.append(dsl.sigmoid(dsl.div(self.const(1.0), v * self.const(z))))
        elif r < 0.35:  # an output that is a constant, written or folded (no buffer of its own)
            self.ops.append("constant-output")
            k = self.const(float(rng.choice(CONSTS)))
            outputs.append(k if rng.random() < 0.5 else dsl.exp(dsl.tanh(k)))
        c = out.shape[1]
        loss_kind = str(rng.choice(["sce", "bce", "mse", "proj"]))
        self.ops.append(loss_kind)
        if loss_kind == "sce":
            labels = self.input(
                "labels", ("N",), rng.integers(0, c, self.n).astype(np.int32), "i32"
            )
            loss = dsl.softmax_cross_entropy(out, labels)
        elif loss_kind == "bce":
            t = rng.integers(0, 2, (self.n, c)).astype(float)
            if rng.random() < 0.5:
                t = rng.random((self.n, c))
            loss = dsl.binary_cross_entropy(out, self.input("t", ("N", c), t.astype(self.np_dtype)))
        elif loss_kind == "mse":
            t = rng.standard_normal((self.n, c)).astype(self.np_dtype)
            loss = dsl.mean_squared_error(out, self.input("t", ("N", c), t))
        else:
            u = rng.standard_normal((self.n, c)).astype(self.np_dtype)
            loss = dsl.sum(dsl.mul(out, self.input("u", ("N", c), u)))
        if rng.random() < 0.25:  # an L2 penalty sum(w * w) on a param of the loss
            ws = sorted((t for t in _ancestors(loss) if t.node.op == "param"), key=lambda t: t.name)
            w = ws[int(rng.integers(len(ws)))]
            self.ops.append(f"l2({w.shape})")
            loss = loss + self.const(0.01) * dsl.sum(w * w)
        return Case(self.seed, outputs, loss, self.feeds, self.params, self.ops, self.n, self.dtype)


def _ancestors(t: dsl.Tensor) -> list[dsl.Tensor]:
    seen, stack, out = set(), [t], []
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        out.append(x)
        stack.extend(x.parents)
    return out


def random_case(seed: int) -> Case:
    """The random network and data of ``seed`` (deterministic). Corner cases are the point
    (one-column logits of softmax_cross_entropy, a softmax's output into it): the losses'
    LossInputWarning is silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dsl.LossInputWarning)
        return _Gen(seed).build()


# ---------------------------------------------------------------------------- checks


def _close(
    name: str,
    got: np.ndarray,
    ref: np.ndarray,
    ref32: np.ndarray,
    extra_tol: np.ndarray | float = 0.0,
) -> str | None:
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    ref32 = np.asarray(ref32, np.float64)
    if got.shape != ref.shape:
        return f"{name}: shape {got.shape}, expected {ref.shape}"
    finite = np.isfinite(ref)
    if not finite.all():
        # an infinity or NaN that float32 and float64 agree on must come out the same (the
        # generator avoids overflow; 1 / +-0 is on purpose); elsewhere nothing to compare
        same = ~finite & ((ref32 == ref) | (np.isnan(ref32) & np.isnan(ref)))
        want, have = ref[same], got[same]
        if not np.array_equal(want, have, equal_nan=True):
            return f"{name}: {want[:4]!r} (inf/nan of the reference) came out as {have[:4]!r}"
        if not (finite & ~np.isfinite(got)).any():
            got, ref, ref32 = (np.where(finite, a, 0.0) for a in (got, ref, ref32))
    if not np.all(np.isfinite(got)):
        return f"{name}: non-finite values where the float64 reference is finite"
    atol = ATOL_REL * (1.0 + (np.max(np.abs(ref)) if ref.size else 0.0))
    allowed = atol + RTOL * np.abs(ref) + 8 * np.abs(np.nan_to_num(ref32 - ref)) + extra_tol
    bad = np.abs(got - ref) > allowed
    if bad.any():
        i = (
            np.unravel_index(int(np.argmax(np.abs(got - ref) - allowed)), ref.shape)
            if ref.ndim
            else ()
        )
        return (
            f"{name}: {int(bad.sum())}/{bad.size} elements differ; worst at {i}: got "
            f"{got[i]!r}, float64 reference {ref[i]!r} (allowed {allowed[i]:.3g})"
        )
    return None


def compile_case(case: Case, opt_level: int, check_numerics: bool = False):
    """The case compiled with SGD(lr=1) and its parameters set to the case's values."""
    import graphc as gc

    model = gc.compile(
        case.outputs,
        loss=case.loss,
        optimizer=gc.SGD(lr=1.0),
        name=f"fuzz{case.seed % 100000}",
        opt_level=opt_level,
        check_numerics=check_numerics,
    )
    model.lr = 1.0
    for k, v in case.params.items():
        if k in model.params:  # a param the outputs and loss do not use is not in the model
            model.params[k][...] = v
    return model


def compile_cases(
    jobs: list[tuple[Case, int]], check_numerics: bool = False, pipeline: str = "fuzz"
) -> list:
    """Models for (case, opt level) pairs, all built into one LLVM module and compiled at once.

    Each model's entries are named ``fz<seed>o<level>_<entry>``; identical kernels and GEMMs
    are emitted once for all (the three levels of a case share most), LLVM's per-module costs
    are paid once, and ``pipeline`` names the optimization pipeline of the main part
    (``graphc.codegen.target.PIPELINES``: "fuzz" is the cheaper one, "main" that of gc.compile).
    No train_epoch entry and no compile cache. Parameters are set to the cases' values.
    """
    import graphc as gc
    from graphc.codegen.module import ModuleBuilder
    from graphc.codegen.target import JitModule, compile_parts, target_machine
    from graphc.compiler import build_graphs, gc_paused, schedule_program
    from graphc.runtime.model import Model

    progs = []
    for case, level in jobs:
        prog = build_graphs(f"fz{case.seed}o{level}", case.outputs, case.loss, gc.SGD(lr=1.0))
        prog.check_numerics = check_numerics
        progs.append(schedule_program(prog, opt_level=level, split=False))
    with gc_paused():
        mb = ModuleBuilder("fuzzbatch", check_numerics=check_numerics, gemm_modules=1)
        mb.plan_gemms([s for p in progs for s in p.schedules.values()])
        for prog in progs:
            for entry, sched in prog.schedules.items():
                mb.add_entry(entry, sched, prefix=prog.name)
        parts = [(m, pipeline if kind == "main" else kind) for m, kind in mb.parts()]
        _, compiled = compile_parts(parts, "native", "fuzzbatch")
        del mb
    jm = JitModule.from_objects([o for _, o in compiled], target_machine("native"))
    models = []
    for (case, _), prog in zip(jobs, progs):
        model = Model(prog, jm, optimizer=gc.SGD(lr=1.0))
        model.lr = 1.0
        for k, v in case.params.items():
            if k in model.params:
                model.params[k][...] = v
        models.append(model)
    return models


def check_compiled(
    case: Case, opt_level: int, check_numerics: bool = False, model=None
) -> list[str]:
    """Compiled infer/eval/train_step vs the float64 interpreter; returns failure messages.

    With ``check_numerics`` the model is compiled with the NaN/Inf checks, which must neither
    fire on these finite cases nor change any result. ``model``: the case compiled at
    ``opt_level`` already (``compile_cases``), else it is compiled here with gc.compile.
    """
    model = model or compile_case(case, opt_level, check_numerics)
    prog = model.program
    failures: list[str] = []
    where = f"-O{opt_level}"
    state = {k: v.copy() for k, v in model.state.items()}
    used = {k: v for k, v in case.params.items() if k in model.params}
    ref_feeds = {**case.feeds, **used, **state, "lr": np.array(1.0)}
    ref = interpret(prog.training, ref_feeds)
    ref32 = interpret(prog.training, ref_feeds, float_dtype=None)
    # infer and eval run without dropout (graphc.ir.ops.random.strip_dropout): own references
    inf = interpret(prog.inference, ref_feeds)
    inf32 = interpret(prog.inference, ref_feeds, float_dtype=None)
    ev_ref = interpret(prog.forward, ref_feeds)
    ev_ref32 = interpret(prog.forward, ref_feeds, float_dtype=None)

    feeds = {k: np.ascontiguousarray(v) for k, v in case.feeds.items()}
    infer_feeds = {k: feeds[k] for k in prog.feature_inputs}
    outs = model.predict(infer_feeds)  # the public path (blocks of 1024 rows where it splits)
    outs = list(outs.values()) if isinstance(outs, dict) else [outs]
    for name, got in zip(prog.outputs, outs):
        failures.append(_close(f"{where} infer output {name}", got, inf[name], inf32[name]))
    ev = model._run("eval", feeds, case.n)
    failures.append(_close(f"{where} eval loss", ev[-1], ev_ref[prog.loss], ev_ref32[prog.loss]))
    before = {k: v.astype(np.float64) for k, v in case.params.items()}
    loss = model._run("train_step", feeds, case.n)[0]
    failures.append(_close(f"{where} train_step loss", loss, ref[prog.loss], ref32[prog.loss]))
    for p in model.params:
        if p + "'" not in ref:
            continue
        # p' = p - grad: float32 rounding of p itself is allowed on top
        eps = np.finfo(model.params[p].dtype).eps
        failures.append(
            _close(
                f"{where} updated param {p} (p - grad)",
                model.params[p],
                ref[p + "'"],
                ref32[p + "'"],
                extra_tol=4 * eps * np.abs(before[p]),
            )
        )
    return [f for f in failures if f]


def check_gradients(case: Case, directions: int = 3) -> list[str]:
    """The interpreter's float64 gradients vs central finite differences of its forward loss."""
    import graphc as gc
    from graphc.compiler import build_graphs

    prog = build_graphs("fuzzgrad", case.outputs, case.loss, gc.SGD(lr=1.0))
    used = {p.name for p in prog.training.params}
    base = {**case.feeds, **{k: v.astype(np.float64) for k, v in case.params.items() if k in used}}
    fixed = {"step": np.array(0.0), "lr": np.array(1.0)}
    env = interpret(prog.training, {**base, **fixed})

    def loss_at(params: dict[str, np.ndarray]) -> float:
        # the training graph's loss: dropout masks as in training (fixed by the step counter)
        return float(interpret(prog.training, {**base, **params, **fixed})[prog.loss])

    rng = np.random.default_rng([case.seed, 7])
    failures = []
    names = list(prog.grads)
    for k in range(directions):
        v = {p: rng.standard_normal(base[p].shape) for p in names}
        analytic = sum(float(np.sum(env[prog.grads[p]] * v[p])) for p in names)
        ok, msgs = False, []
        for eps in (1e-6, 1e-4):
            hi = loss_at({**{p: base[p] + eps * v[p] for p in names}})
            lo = loss_at({**{p: base[p] - eps * v[p] for p in names}})
            fd = (hi - lo) / (2 * eps)
            scale = max(
                abs(fd), abs(analytic), 1e-3 * abs(loss_at({p: base[p] for p in names})), 1e-8
            )
            if abs(fd - analytic) <= 1e-4 * scale + 1e-7:
                ok = True
                break
            msgs.append(f"eps={eps}: finite difference {fd!r} vs gradient {analytic!r}")
        if not ok:
            failures.append(f"gradient along random direction {k}: " + "; ".join(msgs))
    return failures


def run_case(
    seed: int,
    opt_levels: tuple[int, ...] = (0, 2),
    grads: bool = True,
    check_numerics: bool = False,
) -> list[str]:
    """All checks for one seed, each level compiled by gc.compile (the user's path); an
    exception (compile error, crash) counts as a failure."""
    try:
        case = random_case(seed)
    except Exception as e:  # a generator bug is a failure too, reported with its seed
        return [f"seed {seed}: generating the case raised {type(e).__name__}: {e}"]
    failures: list[str] = []
    for level in opt_levels:
        try:
            failures += check_compiled(case, level, check_numerics)
        except Exception as e:
            tb = traceback.format_exc(limit=-3)
            failures.append(f"-O{level} raised {type(e).__name__}: {e}\n{tb}")
    if grads:
        failures += _gradient_failures(case)
    return [f"{case.describe()}\n    {f}" for f in failures]


def _gradient_failures(case: Case) -> list[str]:
    try:
        return check_gradients(case)
    except Exception as e:
        return [f"gradient check raised {type(e).__name__}: {e}"]


def run_batch(
    seeds: list[int],
    opt_levels: tuple[int, ...] = (0, 1, 2),
    grads: bool = True,
    check_numerics: bool = False,
    pipeline: str = "fuzz",
) -> dict[int, list[str]]:
    """The checks of run_case for several seeds, all their levels compiled in one LLVM module
    (``compile_cases``). When that build fails, each seed is run alone (run_case), so a
    failure is reported against its own seed. Returns seed -> failure messages."""
    out: dict[int, list[str]] = {}
    cases: list[Case] = []
    for seed in seeds:
        try:
            cases.append(random_case(seed))
        except Exception as e:
            out[seed] = [f"seed {seed}: generating the case raised {type(e).__name__}: {e}"]
    jobs = [(c, lvl) for c in cases for lvl in opt_levels]
    try:
        models = compile_cases(jobs, check_numerics, pipeline)
    except Exception:
        for c in cases:
            out[c.seed] = run_case(c.seed, opt_levels, grads, check_numerics)
        return out
    for c in cases:
        out[c.seed] = []
    for (c, lvl), model in zip(jobs, models):
        try:
            fails = check_compiled(c, lvl, check_numerics, model=model)
        except Exception as e:
            tb = traceback.format_exc(limit=-3)
            fails = [f"-O{lvl} raised {type(e).__name__}: {e}\n{tb}"]
        out[c.seed] += [f"{c.describe()}\n    {f}" for f in fails]
    del models
    if grads:
        for c in cases:
            out[c.seed] += [f"{c.describe()}\n    {f}" for f in _gradient_failures(c)]
    return out


def _worker_init() -> None:
    # one process per core: LLVM's compile threads would only oversubscribe it
    import os

    os.environ["GRAPHC_COMPILE_THREADS"] = "1"


def _run_chunk(args: tuple) -> dict[int, list[str]]:
    return run_batch(*args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m graphc.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--count", type=int_in(0), default=100, help="number of random graphs (default 100)"
    )
    ap.add_argument(
        "--seed", type=int_in(0, 2**63), default=0, help="first seed; case i uses seed + i"
    )
    ap.add_argument("--opt-levels", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2])
    ap.add_argument("--minutes", type=positive_float, default=None, help="stop after this long")
    ap.add_argument("--no-grad-check", action="store_true", help="skip the finite differences")
    ap.add_argument(
        "--check-numerics",
        action="store_true",
        help="compile with check_numerics=True (must not fire nor change results)",
    )
    ap.add_argument(
        "--jobs", type=int, default=1, help="worker processes (one per core; default 1)"
    )
    ap.add_argument(
        "--per-module",
        type=int,
        default=8,
        help="graphs built into one LLVM module, all levels (default 8; 0: gc.compile per level)",
    )
    ap.add_argument(
        "--pipeline",
        choices=["fuzz", "main"],
        default="fuzz",
        help="LLVM pipeline of the kernels: 'fuzz' (cheaper, default) or gc.compile's 'main'",
    )
    args = ap.parse_args(argv)
    t0 = time.time()
    levels = tuple(args.opt_levels)
    grads, numerics = not args.no_grad_check, args.check_numerics
    per = max(1, args.per_module)
    seeds = list(range(args.seed, args.seed + args.count))
    chunks = [seeds[i : i + per] for i in range(0, len(seeds), per)]
    tried, failed = 0, []

    def report(res: dict[int, list[str]]) -> None:
        nonlocal tried
        for seed in sorted(res):
            tried += 1
            if res[seed]:
                failed.append(seed)
                print(f"FAIL seed {seed}", *res[seed], sep="\n  ", flush=True)

    def out_of_time() -> bool:
        return args.minutes is not None and time.time() - t0 > args.minutes * 60

    if args.per_module == 0:  # each level through gc.compile, one seed at a time
        for seed in seeds:
            if out_of_time():
                break
            report({seed: run_case(seed, levels, grads, numerics)})
    elif args.jobs <= 1:
        for chunk in chunks:
            if out_of_time():
                break
            report(run_batch(chunk, levels, grads, numerics, args.pipeline))
    else:
        import multiprocessing as mp

        work = [(c, levels, grads, numerics, args.pipeline) for c in chunks]
        with mp.get_context("fork").Pool(args.jobs, initializer=_worker_init) as pool:
            for res in pool.imap_unordered(_run_chunk, work):
                report(res)
                if out_of_time():
                    pool.terminate()
                    break
    secs = time.time() - t0
    print(
        f"graphc.fuzz: seeds {args.seed}..{args.seed + args.count - 1}: {tried} random graph{'s' if tried != 1 else ''} at "
        f"-O{' -O'.join(map(str, levels))}"
        + (" with check_numerics" if numerics else "")
        + f", {len(failed)} failed"
        + (f" (seeds {sorted(failed)})" if failed else "")
        + f", {secs:.0f} s ({tried / max(secs, 1e-9):.2f} graphs/s)",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
