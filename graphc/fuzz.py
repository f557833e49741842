"""Differential fuzzing: random well-typed graphs, compiled vs the float64 reference interpreter.

Each case is a pure function of one integer seed: a random network over the DSL's ops
(elementwise unary and binary ops with broadcasting, matmul with transposes, sum/mean over axes
with and without keepdims, reshape, transpose, softmax, dropout (whose mask the JIT and the
interpreter must draw alike), and one of the losses softmax_cross_entropy,
binary_cross_entropy, mean_squared_error or a random projection), random batch sizes (1, odd
sizes, sizes that are not multiples of the vector width), random data of magnitudes up to 1e3,
and parameters. Input domains are kept valid (log and sqrt only see positive values, exp only
bounded ones, divisors are bounded away from zero).

For each case and optimization level it checks, with ``SGD(lr=1)`` so that one training step
turns each parameter p into p - grad:

- the ``infer`` outputs and the ``eval`` loss (no dropout) against ``graphc.ir.interpret`` in
  float64;
- the ``train_step`` loss and every updated parameter against the interpreter run over the
  training graph (forward + backward + update) in float64;
- the interpreter's float64 gradients against central finite differences of its own forward
  loss along random directions (this checks the VJP rules independently of codegen).

Tolerances: an element passes when ``|got - ref| <= atol + rtol * |ref| + 8 * |ref32 - ref|``
where ``ref32`` is the same graph interpreted in float32 (so ill-conditioned values, e.g. a
difference of two large sums, get the slack that float32 arithmetic needs), rtol = 2e-3 and
atol = 1e-5 * (1 + max |ref|) over the array.

Command line (outside CI)::

    python -m graphc.fuzz --count 500 --seed 0 [--opt-levels 0 2] [--minutes 10]

prints the seed range, the number of cases tried and every failure with its seed; exit status 1
when something failed. A failing seed reproduces with ``--seed S --count 1``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from graphc import dsl
from graphc import functional as fn
from graphc.ir.interpret import interpret
from graphc.ir.ops import OPS, POINTWISE_OPS, REQUIRED

RTOL = 2e-3
ATOL_REL = 1e-5
BATCH_SIZES = (1, 2, 3, 5, 7, 8, 9, 13, 17, 33)
DIMS = (1, 2, 3, 4, 5, 6, 8, 9, 16, 17)
SCALES = (1.0, 10.0, 1e3)
# unary ops drawn with attrs of the generator's choosing (clip and pow have no defaults)
ATTR_UNARY = ("clip", "pow", "gelu_tanh")


# the unary ops the generator draws from: every differentiable unary pointwise op of the registry
# (a new op joins by being registered) and dropout
UNARY_OPS = sorted(
    op
    for op in POINTWISE_OPS
    if OPS[op].arity == 1
    and not OPS[op].nondifferentiable
    and not OPS[op].needs_index
    and REQUIRED not in OPS[op].attrs.values()
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
        self.n = int(self.rng.choice(BATCH_SIZES))
        self.k = 0

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

    # ---------------------------------------------------------------- random steps

    def unary(self, v: dsl.Tensor, big: bool) -> tuple[dsl.Tensor, bool]:
        """A unary op (or a small composite keeping its domain valid); big: |v| may be large."""
        op = str(self.rng.choice(UNARY_OPS + list(ATTR_UNARY)))
        self.ops.append(op)
        if op in ATTR_UNARY:
            return self.attr_unary(op, v, big)
        if op == "dropout":  # the JIT and the interpreter must draw the same mask
            return dsl.dropout(
                v, float(self.rng.choice([0.1, 0.5])), seed=int(self.rng.integers(2**31))
            ), big
        if op == "exp":  # exp only of bounded values
            return dsl.exp(dsl.tanh(v) * 3.0), False
        if op == "log":  # log of values >= 0.1
            return dsl.log(dsl.softplus(v) + 0.1), big
        if op == "sqrt":  # sqrt of values >= 0.25
            return dsl.sqrt(dsl.square(v) + 0.25), big
        if op == "square":
            if big:  # keep float32 far from overflow: square a bounded value
                return dsl.square(dsl.tanh(v) * 4.0), False
            return dsl.square(v), True
        fn = dsl.OP_FUNCTIONS[op]
        finite, bounded = _unary_range(op)
        if not finite:  # a domain such as x > 0 (reciprocal, rsqrt, ...): values >= 0.5
            return fn(dsl.softplus(v) + 0.5), not bounded
        if big and not bounded:
            return fn(v), True
        return fn(v), False

    def attr_unary(self, op: str, v: dsl.Tensor, big: bool) -> tuple[dsl.Tensor, bool]:
        """The unary ops of ATTR_UNARY, their operands kept in their domains."""
        if op == "gelu_tanh":
            return dsl.OP_FUNCTIONS["gelu"](v, approximate="tanh"), big
        if op == "clip":
            return dsl.OP_FUNCTIONS["clip"](v, min=-0.5, max=1.5), False
        # pow: integer powers of any sign, fractional ones of positive values
        if self.rng.random() < 0.5:
            return fn.pow(dsl.tanh(v) * 2.0, float(self.rng.choice([2.0, 3.0]))), False
        return fn.pow(dsl.softplus(v) + 0.5, float(self.rng.choice([-1.5, 0.5, 2.5]))), big

    def binary(self, a: dsl.Tensor, b: dsl.Tensor) -> dsl.Tensor:
        op = str(self.rng.choice(["add", "sub", "mul", "maximum", "div", "minimum", "where"]))
        self.ops.append(op)
        if op == "minimum":
            return fn.minimum(a, b)
        if op == "where":  # a select through a comparison mask of the two
            cmp = str(self.rng.choice(["greater", "less", "less_equal", "greater_equal"]))
            return fn.where(getattr(fn, cmp)(a, b), a, dsl.tanh(b))
        if op == "div":  # divisor >= 0.5
            return dsl.div(a, dsl.softplus(b) + 0.5)
        if op == "mul" and self.rng.random() < 0.5:
            b = dsl.tanh(b)
        return getattr(dsl, op)(a, b)

    def operand_like(self, v: dsl.Tensor, pool: list[dsl.Tensor]) -> dsl.Tensor:
        """A second operand broadcastable against v [N, d]: same shape, [d], [N,1], [1,d] or []."""
        d = v.shape[1]
        kind = str(self.rng.choice(["same", "row", "col", "keep0", "scalar", "const"]))
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
        return self.const(float(self.rng.choice([0.5, -2.0, 3.0])))

    def step(self, pool: list[tuple[dsl.Tensor, bool]]) -> tuple[dsl.Tensor, bool]:
        v, big = pool[int(self.rng.integers(len(pool)))]
        tensors = [t for t, _ in pool]
        kind = str(
            self.rng.choice(
                [
                    "unary",
                    "unary",  # the unary ops are the most numerous (every activation)
                    "unary",
                    "binary",
                    "binary",
                    "matmul",
                    "reduce",
                    "reshape",
                    "softmax",
                    "transpose",
                    "movement",
                ]
            )
        )
        d = v.shape[1]
        if kind == "unary":
            return self.unary(v, big)
        if kind == "binary":
            return self.binary(v, self.operand_like(v, tensors)), big
        if kind == "matmul":
            e = self.dim()
            scale = 1.0 / np.sqrt(d)
            if self.rng.random() < 0.5:
                self.ops.append("matmul")
                return dsl.matmul(v, self.param((d, e), scale)), big
            self.ops.append("matmul(tb)")
            return dsl.matmul(v, self.param((e, d), scale), transpose_b=True), big
        if kind == "reduce":
            red = self.rng.choice([dsl.sum, dsl.mean, dsl.sum, dsl.mean, fn.max, fn.min])
            axis = int(self.rng.integers(2))
            if self.rng.random() < 0.4:  # without keepdims: [N] reshaped to [N,1], or [d]
                self.ops.append(f"{red.__name__}({axis})")
                r = red(v, axes=axis)
                r = dsl.reshape(r, ("N", 1)) if axis == 1 else r
            else:
                self.ops.append(f"{red.__name__}({axis},keep)")
                r = red(v, axes=axis, keepdims=True)  # [N,1] or [1,d]
            other = tensors[int(self.rng.integers(len(tensors)))]
            if other.shape != v.shape:
                other = v
            return dsl.add(other, dsl.tanh(r) if axis == 1 else r), big
        if kind == "reshape":
            if d % 2 == 0 and d > 2:
                a = 2
                self.ops.append("reshape3")
                r = dsl.reshape(v, ("N", a, d // a))
                if self.rng.random() < 0.5:
                    return dsl.reshape(dsl.sigmoid(r), ("N", d)), False
                red = dsl.sum if self.rng.random() < 0.5 else dsl.mean
                self.ops.append(f"{red.__name__}(2)")
                return red(r, axes=2), big  # [N, 2]
            self.ops.append("reshape")
            return dsl.reshape(v, ("N", d)), big
        if kind == "softmax":
            if self.rng.random() < 0.3:
                self.ops.append("log_softmax")
                return fn.log_softmax(v), big
            self.ops.append("softmax")
            return dsl.softmax(v), False
        if kind == "movement":  # issue #14's slice, pad and concat along the features
            m = str(self.rng.choice(["slice", "pad", "concat"]))
            self.ops.append(m)
            if m == "slice":
                lo = int(self.rng.integers(d))
                return fn.slice(v, (lo,), (int(self.rng.integers(lo + 1, d + 1)),), axes=(1,)), big
            if m == "pad":
                return dsl.apply("pad", v, axes=(1,), before=(1,), after=(2,)), big
            w = tensors[int(self.rng.integers(len(tensors)))]
            return fn.concat([v, dsl.tanh(w)], axis=1), big
        # transpose: (v^T w) [d, e] with w [N, e] from the pool, then v2 @ that: [N, e]
        w = tensors[int(self.rng.integers(len(tensors)))]
        e = w.shape[1]
        scale = 1.0 / max(1, self.n)
        if self.rng.random() < 0.5:
            self.ops.append("transpose+matmul")
            m = dsl.matmul(dsl.transpose(v), w) * scale
        else:
            self.ops.append("matmul(ta)")
            m = dsl.matmul(v, w, transpose_a=True) * scale
        return dsl.matmul(dsl.tanh(v), dsl.tanh(m)), False

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
        # a final dense layer, so the loss always depends on parameters
        c = self.dim()
        out = dsl.matmul(
            out, self.param((out.shape[1], c), 1.0 / np.sqrt(out.shape[1]))
        ) + self.param((c,))
        outputs = [out]
        extra = pool[int(rng.integers(1, len(pool)))][0]
        if extra is not out and extra.shape[0] == "N":
            outputs.append(extra)
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
        return Case(self.seed, outputs, loss, self.feeds, self.params, self.ops, self.n, self.dtype)


def random_case(seed: int) -> Case:
    """The random network and data of ``seed`` (deterministic)."""
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
    if not np.all(np.isfinite(ref)):
        return None  # the reference overflowed: nothing to compare (the generator avoids this)
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


def check_compiled(case: Case, opt_level: int, check_numerics: bool = False) -> list[str]:
    """Compiled infer/eval/train_step vs the float64 interpreter; returns failure messages.

    With ``check_numerics`` the model is compiled with the NaN/Inf checks, which must neither
    fire on these finite cases nor change any result.
    """
    model = compile_case(case, opt_level, check_numerics)
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
    outs = model._run("infer", infer_feeds, case.n)
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
    from graphc.compiler import build_graphs
    import graphc as gc

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
    """All checks for one seed; an exception (compile error, crash) counts as a failure."""
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
        try:
            failures += check_gradients(case)
        except Exception as e:
            failures.append(f"gradient check raised {type(e).__name__}: {e}")
    return [f"{case.describe()}\n    {f}" for f in failures]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m graphc.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100, help="number of random graphs (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="first seed; case i uses seed + i")
    ap.add_argument("--opt-levels", type=int, nargs="+", default=[0, 2], choices=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=None, help="stop after this long")
    ap.add_argument("--no-grad-check", action="store_true", help="skip the finite differences")
    ap.add_argument(
        "--check-numerics",
        action="store_true",
        help="compile with check_numerics=True (must not fire nor change results)",
    )
    args = ap.parse_args(argv)
    t0 = time.time()
    tried, failed = 0, []
    for i in range(args.count):
        if args.minutes is not None and time.time() - t0 > args.minutes * 60:
            break
        seed = args.seed + i
        f = run_case(seed, tuple(args.opt_levels), not args.no_grad_check, args.check_numerics)
        tried += 1
        if f:
            failed.append(seed)
            print(f"FAIL seed {seed}", *f, sep="\n  ", flush=True)
    print(
        f"graphc.fuzz: seeds {args.seed}..{args.seed + tried - 1}: {tried} random graphs at "
        f"-O{' -O'.join(map(str, args.opt_levels))}"
        + (" with check_numerics" if args.check_numerics else "")
        + f", {len(failed)} failed"
        + (f" (seeds {failed})" if failed else "")
        + f", {time.time() - t0:.0f} s",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
