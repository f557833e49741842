"""ONNX export: a compiled Model's inference graph (and, on request, its loss) as an ONNX model.

Every graphc op maps to standard ONNX operators (``EXPORTS``: one entry per op), params and
states become initializers holding their current values, the batch dimension becomes the
symbolic dimension "N", and each node's ``doc_string`` says which graphc node and which line of
the user's source it came from (shown by Netron). The file passes
``onnx.checker.check_model(full_check=True)``; ONNX Runtime computes what ``model.predict``
does, and ``gc.from_onnx`` reads it back to the same graph.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.ir.errors import GraphcError, OnnxError
from graphc.ir.graph import Graph, Node
from graphc.ir.ops import OPS

from .onnx_import import ONNX_OUTPUT_TAG, ONNX_RESULT_TYPE_TAG, ONNX_TYPE_TAG, require_onnx

OPSET = 17  # the default (or the newest the runtime reads, if older): Gemm, Softmax(axis=-1);
# ReduceSum takes axes as an input. Not the newest: a file at 17 (IR 8) is read by every
# ONNX Runtime since 1.12 and the exporters' usual opset; a newer one only on request.
# the oldest opset every export has a form in: ReduceSum's axes as an input (13),
# GreaterOrEqual / LessOrEqual and SoftmaxCrossEntropyLoss (12)
MIN_OPSET = 13


class _Writer:
    """Accumulates ONNX nodes and initializers for one graph."""

    def __init__(self, g: Graph, values: dict[str, np.ndarray], opset: int = OPSET) -> None:
        self.onnx = require_onnx()
        self.g, self.values, self.opset = g, values, opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0
        self.taken = {n.name for n in g.nodes}  # the graph's own names keep theirs
        self.alias: dict[str, str] = {}  # graph value -> the ONNX name nodes read it under
        self.renamed: dict[str, str] = {}  # value -> its new name (_rename_value)

    def fresh(self, base: str) -> str:
        """A name used by no node of the graph and no earlier fresh name (an input, param or
        imported tensor may be named like "c__1" itself: ONNX names one value once)."""
        while True:
            self.count += 1
            name = f"{base}__{self.count}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def const(self, a: np.ndarray, base: str = "c") -> str:
        name = self.fresh(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(a), name))
        return name

    def node(self, op: str, inputs: list[str], out: str, n: Node, **attrs: Any) -> str:
        doc = f"graphc {n.name} = {n.op}({', '.join(n.inputs)})"
        if n.loc:
            doc += f" at {n.loc}"
        if n.origin:
            doc += f" [{n.origin}]"
        self.nodes.append(
            self.onnx.helper.make_node(
                op,
                [self.alias.get(i, i) for i in inputs],
                [out],
                name=self.fresh(n.name) if out != n.name else n.name,
                doc_string=doc,
                **attrs,
            )
        )
        return out


# ONNX operators ONNX Runtime (1.32) has no float64 kernel for: a float64 graph writes them out
_NO_DOUBLE = frozenset({"Softplus", "Elu", "Selu", "Softsign", "HardSigmoid", "Erf"})


def _act(w: _Writer, op: str, x: str, out: str, n: Node, **attrs: Any) -> str:
    """``op(x)`` as ONNX node ``out``: the operator itself, or in a float64 graph, where ONNX
    Runtime lacks its float64 kernel, the same function of operators it has (Erf, which no
    composition gives exactly, in float32 between two Casts)."""
    if n.type.dtype != "f64" or op not in _NO_DOUBLE:
        return w.node(op, [x], out, n, **attrs)
    from graphc.ir.ops.activations import SELU_ALPHA, SELU_SCALE

    def f(o: str, ins: list[str], name: str | None = None, **kw: Any) -> str:
        return w.node(o, ins, name or w.fresh(n.name), n, **kw)

    def c(v: float) -> str:
        return w.const(np.array(v, np.float64), "c")

    if op == "Softplus":  # relu(x) + log1p(exp(-|x|)): no overflow
        u = f("Exp", [f("Neg", [f("Abs", [x])])])
        # log1p(u) = log(1 + u) u / ((1 + u) - 1), u where 1 + u rounds to 1 (Goldberg,
        # "What every computer scientist should know about floating-point arithmetic", 1991)
        v = f("Add", [c(1.0), u])
        d = f("Sub", [v, c(1.0)])
        exact = f("Mul", [f("Log", [v]), f("Div", [u, d])])
        tail = f("Where", [f("Equal", [d, c(0.0)]), u, exact])
        return f("Add", [f("Relu", [x]), tail], out)
    if op in ("Elu", "Selu"):  # x where x > 0, else alpha expm1(x)
        alpha = attrs.get("alpha", 1.0) if op == "Elu" else SELU_ALPHA
        # expm1(x) = (u - 1) x / log(u) with u = exp(x) rounded, x where u == 1, -1 where
        # u - 1 == -1: within a few ulp (W. Kahan's expm1; Higham, "Accuracy and Stability of
        # Numerical Algorithms", 2002, 1.14.1); exp(x) - 1 cancels near 0 (1e-10 -> 1.00000008e-10)
        u = f("Exp", [x])
        d = f("Sub", [u, c(1.0)])
        kahan = f("Div", [f("Mul", [d, x]), f("Log", [u])])
        em1 = f("Where", [f("Equal", [d, c(-1.0)]), d, kahan])
        em1 = f("Where", [f("Equal", [u, c(1.0)]), x, em1])
        neg = f("Mul", [c(alpha), em1])
        pos = f("Greater", [x, c(0.0)])
        if op == "Elu":
            return f("Where", [pos, x, neg], out)
        return f("Mul", [c(SELU_SCALE), f("Where", [pos, x, neg])], out)
    if op == "Softsign":  # x / (1 + |x|)
        return f("Div", [x, f("Add", [c(1.0), f("Abs", [x])])], out)
    if op == "HardSigmoid":  # clip(alpha x + beta, 0, 1)
        lin = f("Add", [f("Mul", [c(attrs["alpha"]), x]), c(attrs["beta"])])
        return f("Clip", [lin, c(0.0), c(1.0)], out)
    tp = w.onnx.TensorProto  # Erf
    return f("Cast", [f("Erf", [f("Cast", [x], to=tp.FLOAT)])], out, to=tp.DOUBLE)


def _shape_dims(shape: tuple) -> list:
    return ["N" if d == "N" else int(d) for d in shape]


def _simple(op: str, *attrs: str) -> Callable[[_Writer, Node], None]:
    """One ONNX node ``op`` of the same operands; ``attrs``: graphc attrs of the same name and
    meaning in ONNX, written with their values (the op's default where the node has none)."""

    def emit(w: _Writer, n: Node) -> None:
        w.node(op, list(n.inputs), n.name, n, **{k: OPS[n.op].attr(n, k) for k in attrs})

    return emit


def _compare(op: str) -> Callable[[_Writer, Node], None]:
    def emit(w: _Writer, n: Node) -> None:  # a bool mask, cast to the float dtype of graphc
        mask = w.node(op, list(n.inputs), w.fresh(n.name), n)
        w.node("Cast", [mask], n.name, n, to=_elem_type(n.type.dtype))

    return emit


def _square(w: _Writer, n: Node) -> None:  # Pow(x, 2): read back as square
    w.node("Pow", [n.inputs[0], w.const(np.array(2.0, n.type.np_dtype), "two")], n.name, n)


def _matmul(w: _Writer, n: Node) -> None:
    ta, tb = bool(n.attr("transpose_a")), bool(n.attr("transpose_b"))
    a, b = n.inputs
    if not ta and not tb:
        w.node("MatMul", list(n.inputs), n.name, n)
    elif not ta and len(w.g[a].type.shape) > 2:  # rows [.., K] @ B^T: Gemm takes 2-D only
        w.node("MatMul", [a, w.node("Transpose", [b], w.fresh(n.name), n, perm=[1, 0])], n.name, n)
    elif len(w.g[a].type.shape) > 2:  # A^T B over all the rows of [.., M] and [.., P]
        a2, b2 = (
            w.node("Reshape", [v, w.const(np.array([-1, c], np.int64), "rows")], w.fresh(v), n)
            for v, c in ((a, n.type.shape[0]), (b, n.type.shape[1]))
        )
        w.node("Gemm", [a2, b2], n.name, n, transA=1)
    else:
        w.node("Gemm", list(n.inputs), n.name, n, transA=int(ta), transB=int(tb))


def _transpose(w: _Writer, n: Node) -> None:
    w.node("Transpose", list(n.inputs), n.name, n, perm=[1, 0])


def _permute(w: _Writer, n: Node) -> None:
    w.node("Transpose", list(n.inputs), n.name, n, perm=list(dict(n.attrs)["perm"]))


def _batched_matmul(w: _Writer, n: Node) -> None:
    """ONNX's MatMul (numpy's: leading axes broadcast), a transposed operand's last two axes
    swapped by a Transpose first."""
    ins = []
    for v, flag in zip(n.inputs, ("transpose_a", "transpose_b")):
        if dict(n.attrs).get(flag):
            r = w.g[v].type.rank
            v = w.node("Transpose", [v], w.fresh(n.name), n, perm=[*range(r - 2), r - 1, r - 2])
        ins.append(v)
    w.node("MatMul", ins, n.name, n)


def _reshape(w: _Writer, n: Node) -> None:
    shape = np.array([-1 if d == "N" else int(d) for d in n.type.shape], np.int64)
    w.node("Reshape", [n.inputs[0], w.const(shape, "shape")], n.name, n)


def _broadcast_to(w: _Writer, n: Node) -> None:
    shape = w.node("Shape", [n.inputs[1]], w.fresh("shape"), n)
    w.node("Expand", [n.inputs[0], shape], n.name, n)


def _softmax(w: _Writer, n: Node) -> None:
    w.node("Softmax", list(n.inputs), n.name, n, axis=-1)


def _axes_of(w: _Writer, n: Node) -> list[int]:
    rank = len(w.g[n.inputs[0]].type.shape)
    axes = n.attr("axes")
    if axes is None:
        return list(range(rank))
    axes = (axes,) if isinstance(axes, int) else axes
    return [a % rank for a in axes]


def _reduce(op: str) -> Callable[[_Writer, Node], None]:
    def emit(w: _Writer, n: Node) -> None:
        keep = int(bool(n.attr("keepdims")))
        axes = _axes_of(w, n)
        if op == "ReduceSum" or w.opset >= 18:  # axes as an input: ReduceSum 13+, the rest 18+
            w.node(
                op,
                [n.inputs[0], w.const(np.array(axes, np.int64), "axes")],
                n.name,
                n,
                keepdims=keep,
            )
        else:  # ReduceMean, ReduceMax, ReduceMin take the attribute up to opset 17
            w.node(op, [n.inputs[0]], n.name, n, axes=axes, keepdims=keep)

    return emit


def _const(w: _Writer, n: Node) -> None:
    value = np.array(n.attr("value"), dtype=n.type.np_dtype)
    t = w.onnx.numpy_helper.from_array(value, n.name)
    w.node("Constant", [], n.name, n, value=t)


def _sigmoid_cross_entropy(w: _Writer, n: Node) -> None:
    """(1 - y) relu(z) + y relu(-z) + softplus(-|z|): softplus(z) - z y rearranged so that no
    term overflows, with a product whose label factor is exactly 0 taken as 0 (Where), so
    infinite logits give the limits graphc's op gives (0 at z = +inf, y = 1) instead of NaN."""
    z, y = n.inputs
    one, zero = _scalar(w, n, 1.0), _scalar(w, n, 0.0)

    def exact_zero_factor(factor: str, relu_of: str) -> str:
        prod = w.node(
            "Mul", [factor, w.node("Relu", [relu_of], w.fresh(n.name), n)], w.fresh(n.name), n
        )
        is_zero = w.node("Equal", [factor, zero], w.fresh(n.name), n)
        return w.node("Where", [is_zero, zero, prod], w.fresh(n.name), n)

    neg_z = w.node("Neg", [z], w.fresh(n.name), n)
    pos = exact_zero_factor(w.node("Sub", [one, y], w.fresh(n.name), n), z)
    neg = exact_zero_factor(y, neg_z)
    abs_z = w.node("Abs", [z], w.fresh(n.name), n)
    tail = _act(w, "Softplus", w.node("Neg", [abs_z], w.fresh(n.name), n), w.fresh(n.name), n)
    w.node("Add", [w.node("Add", [pos, neg], w.fresh(n.name), n), tail], n.name, n)


def _softmax_cross_entropy(w: _Writer, n: Node) -> None:
    """ONNX's SoftmaxCrossEntropyLoss reads the classes on axis 1 ([N, C, d1, ..]): a
    sequence's logits [N, T, .., C] are transposed to [N, C, T, ..] first (the labels
    [N, T, ..] are ONNX's as they are; Keras's [N, .., 1] lose their last axis). Its
    ignore_index, weight (a third input) and reduction are torch's, as graphc's."""
    z, labels = n.inputs
    if n.attr("label_smoothing") is not None:
        raise OnnxError(
            f"{n.name}: softmax_cross_entropy with weight and label_smoothing has no ONNX form "
            "(SoftmaxCrossEntropyLoss has no label smoothing); export without include_loss"
        )
    rank = w.g[z].type.rank
    if w.g[labels].type.rank == rank:  # labels [N, .., 1]: ONNX takes [N, ..]
        axis = np.array([rank - 1], np.int64)
        labels = w.node("Squeeze", [labels, w.const(axis, "axes")], w.fresh(n.name), n)
    if rank > 2:
        perm = [0, rank - 1, *range(1, rank - 1)]
        z = w.node("Transpose", [z], w.fresh(n.name), n, perm=perm)
    extra = {} if n.attr("ignore_index") is None else {"ignore_index": n.attr("ignore_index")}
    ins = [z, labels]
    if n.attr("weight") is not None:  # the class weights: ONNX's optional third input
        dt = np.float64 if w.g[n.inputs[0]].type.dtype == "f64" else np.float32
        ins.append(w.const(np.array(n.attr("weight"), dt), "weight"))
    red = n.attr("reduction", "mean")
    w.node("SoftmaxCrossEntropyLoss", ins, n.name, n, reduction=red, **extra)


def _cast(w: _Writer, n: Node) -> None:
    w.node("Cast", list(n.inputs), n.name, n, to=_elem_type(n.type.dtype))


def _one_minus_pow(w: _Writer, n: Node) -> None:
    raise OnnxError("one_minus_pow belongs to optimizer updates, which ONNX export leaves out")


# ---------------------------------------------------------------- issue #14's ops (opset 17)


def _scalar(w: _Writer, n: Node, value: float) -> str:
    """An initializer holding ``value`` in the dtype of n's first operand."""
    return w.const(np.array(value, dtype=w.g[n.inputs[0]].type.np_dtype), "c")


def _attr_of(n: Node, key: str) -> Any:
    from graphc.ir.ops import OPS as IR_OPS

    return IR_OPS[n.op].attr(n, key)


def _elu(w: _Writer, n: Node) -> None:
    _act(w, "Elu", n.inputs[0], n.name, n, alpha=float(_attr_of(n, "alpha")))


def _hard_sigmoid(w: _Writer, n: Node) -> None:
    alpha, beta = float(_attr_of(n, "alpha")), float(_attr_of(n, "beta"))
    _act(w, "HardSigmoid", n.inputs[0], n.name, n, alpha=alpha, beta=beta)


def _clip_to(lo: float | None, hi: float | None) -> Callable[[_Writer, Node], None]:
    def emit(w: _Writer, n: Node) -> None:
        a = lo if lo is not None else float(_attr_of(n, "min"))
        b = hi if hi is not None else float(_attr_of(n, "max"))
        w.node("Clip", [n.inputs[0], _scalar(w, n, a), _scalar(w, n, b)], n.name, n)

    return emit


def _times_of(inner: Callable[[_Writer, Node, str], str]) -> Callable[[_Writer, Node], None]:
    """x * inner(x): silu, mish and gelu (opset 17 has no Mish or Gelu)."""

    def emit(w: _Writer, n: Node) -> None:
        x = n.inputs[0]
        w.node("Mul", [x, inner(w, n, x)], n.name, n)

    return emit


def _gelu_factor(w: _Writer, n: Node, x: str) -> str:
    import math

    f = lambda op, ins: w.node(op, ins, w.fresh(n.name), n)  # noqa: E731
    if _attr_of(n, "approximate") == "tanh":
        from graphc.ir.ops.activations import GELU_TANH_C

        x3 = f("Mul", [f("Mul", [x, x]), x])
        inner = f("Add", [x, f("Mul", [x3, _scalar(w, n, GELU_TANH_C)])])
        s = f("Tanh", [f("Mul", [inner, _scalar(w, n, math.sqrt(2.0 / math.pi))])])
    else:
        s = _act(w, "Erf", f("Mul", [x, _scalar(w, n, 1.0 / math.sqrt(2.0))]), w.fresh(n.name), n)
    return f("Mul", [f("Add", [s, _scalar(w, n, 1.0)]), _scalar(w, n, 0.5)])


def _pow(w: _Writer, n: Node) -> None:
    e = float(_attr_of(n, "exponent"))
    if e == 0.5:  # graphc's pow(x, 0.5) is sqrt (numpy's too): sqrt(-inf) is NaN, C's pow inf
        w.node("Sqrt", list(n.inputs), n.name, n)
        return
    w.node("Pow", [n.inputs[0], _scalar(w, n, e)], n.name, n)


def _rsqrt(w: _Writer, n: Node) -> None:
    w.node("Reciprocal", [w.node("Sqrt", list(n.inputs), w.fresh(n.name), n)], n.name, n)


def _not_equal(w: _Writer, n: Node) -> None:
    eq = w.node("Equal", list(n.inputs), w.fresh(n.name), n)
    ne = w.node("Not", [eq], w.fresh(n.name), n)
    w.node("Cast", [ne], n.name, n, to=_elem_type(n.type.dtype))


def _where(w: _Writer, n: Node) -> None:
    cond, a, b = n.inputs  # nonzero (NaN included) is true, as Cast to bool
    c = w.node("Cast", [cond], w.fresh(n.name), n, to=w.onnx.TensorProto.BOOL)
    w.node("Where", [c, a, b], n.name, n)


def _argmax(w: _Writer, n: Node) -> None:
    rank = len(w.g[n.inputs[0]].type.shape)
    axis, keep = int(_attr_of(n, "axis")) % rank, int(bool(_attr_of(n, "keepdims")))
    i = w.node("ArgMax", list(n.inputs), w.fresh(n.name), n, axis=axis, keepdims=keep)
    w.node("Cast", [i], n.name, n, to=w.onnx.TensorProto.INT32)


def _slice(w: _Writer, n: Node) -> None:
    from graphc.ir.ops.shape import slice_bounds

    bounds = slice_bounds(w.g[n.inputs[0]].type, dict(n.attrs))
    axes = sorted(bounds)
    ins = [np.array([bounds[a][k] for a in axes], np.int64) for k in (0, 1)]
    ins.append(np.array(axes, np.int64))
    w.node("Slice", [n.inputs[0]] + [w.const(v, "slice") for v in ins], n.name, n)


def _reverse(w: _Writer, n: Node) -> None:
    """Slice from the last element to before the first with step -1 along each axis."""
    rank = len(w.g[n.inputs[0]].type.shape)
    axes = sorted(a % rank for a in dict(n.attrs)["axes"])
    k = len(axes)
    ins = [
        np.full(k, -1, np.int64),
        np.full(k, np.iinfo(np.int64).min, np.int64),
        np.array(axes, np.int64),
        np.full(k, -1, np.int64),
    ]
    w.node("Slice", [n.inputs[0]] + [w.const(v, "reverse") for v in ins], n.name, n)


def _pad(w: _Writer, n: Node) -> None:
    rank = len(w.g[n.inputs[0]].type.shape)
    pads = [0] * (2 * rank)
    for a, lo, hi in zip(_attr_of(n, "axes"), _attr_of(n, "before"), _attr_of(n, "after")):
        pads[a % rank], pads[rank + a % rank] = lo, hi
    w.node("Pad", [n.inputs[0], w.const(np.array(pads, np.int64), "pads")], n.name, n)


def _concat(w: _Writer, n: Node) -> None:
    rank = len(n.type.shape)
    w.node("Concat", list(n.inputs), n.name, n, axis=int(_attr_of(n, "axis")) % rank)


def _batch_norm(w: _Writer, n: Node) -> None:  # inference form (graphs usually hold primitives)
    eps, m = float(_attr_of(n, "eps")), float(_attr_of(n, "momentum"))
    rank = len(n.type.shape)
    if rank > 2 and int(_attr_of(n, "axis")) % rank != 1:  # ONNX's features are axis 1
        raise OnnxError(
            f"to_onnx: batch_norm {n.name} normalizes axis {_attr_of(n, 'axis')} of {n.type}; "
            "ONNX BatchNormalization normalizes axis 1"
        )
    w.node("BatchNormalization", list(n.inputs), n.name, n, epsilon=eps, momentum=1.0 - m)


def _conv(onnx_op: str) -> Callable[[_Writer, Node], None]:
    """conv as Conv, conv_transpose as ConvTranspose: the same attrs, written out in full
    (kernel_shape from the filters; ConvTranspose's output_padding when it has one)."""

    def write(w: _Writer, n: Node) -> None:
        from graphc.ir.ops.conv import geometry

        g = geometry(n.op, [w.g[i].type for i in n.inputs], dict(n.attrs))
        attrs: dict[str, Any] = {
            "kernel_shape": list(g.kernel),
            "strides": list(g.strides),
            "dilations": list(g.dilations),
            "pads": list(g.pads_begin + g.pads_end),
            "group": g.groups,
        }
        outpad = n.attr("output_padding")
        if outpad is not None and any(outpad):
            attrs["output_padding"] = list(outpad)
        w.node(onnx_op, list(n.inputs), n.name, n, **attrs)

    return write


# graphc op -> how it is written in ONNX (one entry per op)
EXPORTS: dict[str, Callable[[_Writer, Node], None]] = {
    "conv": _conv("Conv"),
    "conv_transpose": _conv("ConvTranspose"),
    "elu": _elu,
    "selu": lambda w, n: _act(w, "Selu", n.inputs[0], n.name, n),
    "gelu": _times_of(_gelu_factor),
    "silu": _times_of(lambda w, n, x: w.node("Sigmoid", [x], w.fresh(n.name), n)),
    "mish": _times_of(
        lambda w, n, x: w.node(
            "Tanh", [_act(w, "Softplus", x, w.fresh(n.name), n)], w.fresh(n.name), n
        )
    ),
    "softsign": lambda w, n: _act(w, "Softsign", n.inputs[0], n.name, n),
    "hard_sigmoid": _hard_sigmoid,
    "hard_tanh": _clip_to(-1.0, 1.0),
    "abs": _simple("Abs"),
    "minimum": _simple("Min"),
    "clip": _clip_to(None, None),
    "pow": _pow,
    "reciprocal": _simple("Reciprocal"),
    "rsqrt": _rsqrt,
    "erf": lambda w, n: _act(w, "Erf", n.inputs[0], n.name, n),
    "less": _compare("Less"),
    "less_equal": _compare("LessOrEqual"),
    "equal": _compare("Equal"),
    "not_equal": _not_equal,
    "where": _where,
    "max": _reduce("ReduceMax"),
    "min": _reduce("ReduceMin"),
    "argmax": _argmax,
    "log_softmax": lambda w, n: w.node("LogSoftmax", list(n.inputs), n.name, n, axis=-1),
    "slice": _slice,
    "reverse": _reverse,
    "pad": _pad,
    "concat": _concat,
    "batch_norm": _batch_norm,
    "add": _simple("Add"),
    "sub": _simple("Sub"),
    "mul": _simple("Mul"),
    "div": _simple("Div"),
    "maximum": _simple("Max"),
    "greater": _compare("Greater"),
    "greater_equal": _compare("GreaterOrEqual"),
    "neg": _simple("Neg"),
    "exp": _simple("Exp"),
    "log": _simple("Log"),
    "sqrt": _simple("Sqrt"),
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "relu": _simple("Relu"),
    "leaky_relu": _simple("LeakyRelu", "alpha"),
    "softplus": lambda w, n: _act(w, "Softplus", n.inputs[0], n.name, n),
    "square": _square,
    "broadcast_to": _broadcast_to,
    "reshape": _reshape,
    "matmul": _matmul,
    "transpose": _transpose,
    "permute": _permute,
    "batched_matmul": _batched_matmul,
    "softmax": _softmax,
    "sum": _reduce("ReduceSum"),
    "mean": _reduce("ReduceMean"),
    "const": _const,
    "sigmoid_cross_entropy": _sigmoid_cross_entropy,
    "softmax_cross_entropy": _softmax_cross_entropy,
    "cast": _cast,
}


def runtime_reads(opset: int) -> bool:
    """Whether the installed ONNX Runtime loads a file at default-domain ``opset`` (with the
    oldest IR version that opset allows, as to_onnx writes): an Identity model is handed to an
    InferenceSession (ONNX Runtime refuses an opset newer than it knows, and an IR version it
    cannot read, when it loads a file). True when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return True
    onnx = require_onnx()
    h, f32 = onnx.helper, onnx.TensorProto.FLOAT
    g = h.make_graph(
        [h.make_node("Identity", ["x"], ["y"])],
        "probe",
        [h.make_tensor_value_info("x", f32, [1])],
        [h.make_tensor_value_info("y", f32, [1])],
    )
    opsets = [h.make_opsetid("", opset)]
    m = h.make_model(g, opset_imports=opsets)
    m.ir_version = h.find_min_ir_version_for(opsets)
    try:
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


_NEWEST: dict[tuple[str, str], tuple[int, str]] = {}  # by (onnx, onnxruntime) version


def newest_opset() -> tuple[int, str]:
    """The newest opset graphc writes: the newest the installed onnx package defines, lowered
    to the newest the installed ONNX Runtime (if any) loads; and what limits it (for
    messages). Probed once per pair of versions."""
    onnx = require_onnx()
    try:
        import onnxruntime as ort

        rt = ort.__version__
    except ImportError:
        rt = ""
    key = (onnx.__version__, rt)
    if key not in _NEWEST:
        top = onnx.defs.onnx_opset_version()
        why = f"the installed onnx package (version {onnx.__version__}) defines no newer one"
        k = top
        while k > MIN_OPSET and not runtime_reads(k):
            k -= 1
        if k < top:
            why = f"the installed onnxruntime (version {rt}) loads no newer file"
        _NEWEST[key] = (k, why)
    return _NEWEST[key]


def check_opset(opset: Any) -> int:
    """``opset`` when graphc can write every op at it and the installed packages read it: an
    int from MIN_OPSET (13) to ``newest_opset()`` (the newest the installed onnx package
    defines and the installed ONNX Runtime, if any, loads). None: the default, OPSET (17), or
    that newest opset where it is older.

    Raises:
        OnnxError: another value, naming the range and what the older opsets lack or what
            limits the newer ones.
    """
    newest, why = newest_opset()
    if opset is None:
        return min(OPSET, newest)
    if isinstance(opset, bool) or not isinstance(opset, int | np.integer):
        raise OnnxError(f"to_onnx: opset must be an int ({MIN_OPSET}..{newest}), got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise OnnxError(
            f"to_onnx: opset {opset} is outside {MIN_OPSET}..{newest}: below {MIN_OPSET} "
            "ReduceSum takes its axes as an attribute and GreaterOrEqual, LessOrEqual and "
            "SoftmaxCrossEntropyLoss are missing (graphc writes the opset 13 forms); above "
            f"{newest} {why}"
        )
    return int(opset)


def to_onnx_model(
    model: Any, *, include_loss: bool = False, name: str | None = None, opset: int | None = None
) -> Any:
    """The ONNX ModelProto of ``model`` (its current weights). Outputs are named as the
    exported C header names them: a value given ``name=`` by that name, an unnamed one
    (graphc's ``%8``) ``y`` (``y0``, ``y1``, ... for several; ``out`` when ``y`` is taken);
    a model imported from ONNX keeps the file's names.

    Args:
        model: a compiled graphc Model.
        opset: the default-domain opset to write (13 .. the newest the installed onnx package
            defines and the installed ONNX Runtime, if any, loads: newest_opset(); default
            17, or that newest where it is older). Ops take that opset's form: ReduceMean, ReduceMax and ReduceMin take
            their axes as an attribute up to 17 and as an input from 18. The file's IR
            version is the oldest that opset allows.
        include_loss: also export the loss, as the last output, named "loss" (or "loss__K"
            when the graph has another value named "loss"), with the label inputs it needs.
        name: the ONNX graph's name (default: the model's).

    Raises:
        OnnxError: an op has no ONNX form (named with its node), or the model has no loss and
            ``include_loss`` is set.
    """
    onnx = require_onnx()
    opset = check_opset(opset)
    prog = model.program
    if include_loss and prog.loss is None:
        raise OnnxError("to_onnx(include_loss=True): the model has no loss")
    g = prog.forward if include_loss else prog.inference
    outputs = list(prog.outputs) + ([prog.loss] if include_loss else [])
    values = {**model.params, **model.state}
    w = _Writer(g, values, opset)
    inputs = []
    for n in g.nodes:
        if n.op == "input":
            elem, origin = _elem_type(n.type.dtype), n.origin or ""
            m_type = re.search(rf"{ONNX_TYPE_TAG}(\d+)$", origin)
            if m_type:  # an imported integer or double input: its own type, cast to graphc's
                elem, origin = int(m_type.group(1)), origin[: m_type.start()]
            outer = _onnx_name(w, n.with_(origin=origin), "onnx input ")
            shape = tuple(n.type.shape)
            axis = model.input_batch_axes.get(n.name, 0)
            src = outer
            if axis:  # predict takes N at ONNX axis ``axis`` and moves it first: so does the file
                src = w.node(
                    "Transpose",
                    [outer],
                    w.fresh(n.name),
                    n,
                    perm=[axis, *range(axis), *range(axis + 1, len(shape))],
                )
                shape = (*shape[1 : axis + 1], shape[0], *shape[axis + 1 :])
            if elem != _elem_type(n.type.dtype):  # the float copy, read by the graph's nodes
                w.alias[n.name] = w.node(
                    "Cast", [src], w.fresh(n.name), n, to=_elem_type(n.type.dtype)
                )
            elif axis:
                w.alias[n.name] = src
            elif outer != n.name:  # an imported input under its ONNX name again
                w.node("Identity", [outer], n.name, n)
            inputs.append(onnx.helper.make_tensor_value_info(outer, elem, _shape_dims(shape)))
        elif n.op in ("param", "state"):
            if n.name not in values:
                raise OnnxError(f"to_onnx: no value for {n.op} {n.name!r}")
            arr = np.asarray(values[n.name], dtype=n.type.np_dtype).reshape(n.type.concrete(1))
            t = onnx.numpy_helper.from_array(arr, n.name)
            t.doc_string = f"graphc {n.op} {n.name}" + (" (trainable)" if n.op == "param" else "")
            w.inits.append(t)
        elif n.op in EXPORTS:
            EXPORTS[n.op](w, n)
        else:
            where = f" at {n.loc}" if n.loc else ""
            raise OnnxError(
                f"to_onnx: node {n.name} ({n.op}){where} has no ONNX form; exportable ops: "
                f"{', '.join(sorted(EXPORTS))}"
            )
    typed: list[tuple[str, Any]] = [(o, _elem_type(g[o].type.dtype)) for o in outputs]
    keys = model.output_keys  # predict's keys: the header's names of graphc's unnamed outputs
    for k, o in enumerate(outputs[: len(prog.outputs)]):
        origin = g[o].origin or ""
        m_type = re.search(rf"{ONNX_RESULT_TYPE_TAG}(\d+)", origin)
        if m_type:
            origin = origin[: m_type.start()] + origin[m_type.end() :]
        outer = _onnx_name(
            w, g[o].with_(origin=origin), ONNX_OUTPUT_TAG.lstrip("; "), anywhere=True
        )
        if m_type and int(m_type.group(1)) != typed[k][1]:
            # an imported double (float16, bfloat16, integer, bool) output: the file's type, a Cast of
            # graphc's float32 (the value under the output's name, when that is taken, moved)
            if outer == o:
                _rename_value(w, o, w.fresh(o))
            src = w.renamed.get(o, o)
            elem = int(m_type.group(1))
            term = int(model.output_row_terms.get(o, 0))
            if term:  # predict adds n * term to row n after the native call: so does the file
                cast = w.node("Cast", [src], w.fresh(o), g[o], to=elem)
                typed[k] = (_add_row_term(w, cast, outer, g[o], term, elem), elem)
            else:
                typed[k] = (w.node("Cast", [src], outer, g[o], to=elem), elem)
        elif outer != o:  # an imported output under its ONNX name again
            typed[k] = (w.node("Identity", [o], outer, g[o]), typed[k][1])
        elif o.startswith("%"):  # graphc's own "%8": predict's key, the C header's name
            out_name = keys[k] if keys[k] not in w.taken else w.fresh(keys[k])
            w.taken.add(out_name)
            typed[k] = (w.node("Identity", [o], out_name, g[o]), typed[k][1])
    shapes = {o: tuple(g[o].type.shape) for o in outputs}
    for k, o in enumerate(outputs[: len(prog.outputs)]):
        axis = model.output_batch_axes.get(o)
        if axis:  # predict moves N from first to ONNX axis ``axis``: so does the file
            final = typed[k][0]
            _rename_value(w, final, w.fresh(final))
            perm = [*range(1, axis + 1), 0, *range(axis + 1, len(shapes[o]))]
            w.node("Transpose", [w.renamed[final]], final, g[o], perm=perm)
            shapes[o] = tuple(shapes[o][j] for j in perm)
    if include_loss and prog.loss != "loss":  # the documented name of the loss output
        name_ = "loss" if "loss" not in w.taken else w.fresh("loss")
        typed[-1] = (w.node("Identity", [prog.loss], name_, g[prog.loss]), typed[-1][1])
    outs = [
        onnx.helper.make_tensor_value_info(o, elem, _shape_dims(shapes[v]))
        for (o, elem), v in zip(typed, outputs, strict=True)
    ]
    graph = onnx.helper.make_graph(w.nodes, name or prog.name, inputs, outs, w.inits)
    graph.doc_string = f"exported by graphc from model {prog.name!r}"
    opsets = [onnx.helper.make_opsetid("", opset)]
    m = onnx.helper.make_model(
        graph, opset_imports=opsets, producer_name="graphc", producer_version=_version()
    )
    # the oldest IR version the opset allows (8 for 17): older runtimes read the file
    m.ir_version = onnx.helper.find_min_ir_version_for(opsets)
    return m


def _add_row_term(w: _Writer, src: str, out: str, n: Node, term: int, elem: int) -> str:
    """``out`` = ``src`` + n * ``term`` in each batch row n (int64): the row term an imported
    output's predict adds after the native call (Model.output_row_terms: MaxPool's Indices
    (n * C + c) * P + p of the c * P + p graphc computes), as Shape / Gather / Range / Mul /
    Reshape / Add.

    Raises:
        OnnxError: the output is not int64 (no row term is made for another type).
    """
    if elem != w.onnx.TensorProto.INT64:
        raise OnnxError(f"to_onnx: output {n.name!r} has a batch row term but is not int64")
    i64 = np.int64
    rows = w.node(
        "Gather", [w.node("Shape", [src], w.fresh(n.name), n), w.const(i64(0))], w.fresh(n.name), n
    )
    ids = w.node("Range", [w.const(i64(0)), rows, w.const(i64(1))], w.fresh(n.name), n)
    scaled = w.node("Mul", [ids, w.const(i64(term))], w.fresh(n.name), n)
    lead = np.array([-1] + [1] * (n.type.rank - 1), i64)
    col = w.node("Reshape", [scaled, w.const(lead)], w.fresh(n.name), n)
    return w.node("Add", [src, col], out, n)


def _rename_value(w: _Writer, old: str, new: str) -> None:
    """Every ONNX node of ``w`` so far writes and reads value ``old`` as ``new`` instead
    (``w.renamed[old]``): the name is then free for an output that converts it."""
    for nd in w.nodes:
        if nd.name == old:  # (node names are unique too: the new node takes this one)
            nd.name = new
        for vs in (nd.input, nd.output):
            for i, v in enumerate(vs):
                if v == old:
                    vs[i] = new
    w.renamed[old] = w.alias[old] = new


def _onnx_name(w: _Writer, n: Node, tag: str, anywhere: bool = False) -> str:
    """The ONNX name gc.from_onnx recorded in ``n``'s origin after ``tag`` ("onnx input
    input.1", "...; onnx output Identity:0"), so that a model imported and exported again
    keeps its interface; ``n.name`` when there is none or another value has that name."""
    origin = n.origin or ""
    at = origin.rfind(tag) if anywhere else (0 if origin.startswith(tag) else -1)
    name = origin[at + len(tag) :] if at >= 0 else ""
    if not name or name == n.name or name in w.taken:
        return n.name
    # graphc's name must be the ONNX one made a C name (from_onnx's c_name, with "_K" when
    # taken): not one imported with a prefix (prefix="m2_"), which the user chose
    base = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    digit = base[:1].isdigit() and n.name.endswith("_" + base)  # "1st" -> "x_1st"
    if not (n.name == base or n.name.startswith(base + "_") or digit):
        return n.name
    w.taken.add(name)
    return name


def _elem_type(dtype: str) -> int:
    """The ONNX element type (TensorProto) of a graphc dtype."""
    tp = require_onnx().TensorProto
    return {"f32": tp.FLOAT, "f64": tp.DOUBLE, "i32": tp.INT32, "i64": tp.INT64}[dtype]


def _version() -> str:
    try:
        from graphc import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return ""


def save_onnx(
    model: Any,
    path: str,
    *,
    include_loss: bool = False,
    check: bool = True,
    opset: int | None = None,
) -> str:
    """Write ``model`` as an ONNX file at ``path`` (atomically: a temporary file renamed into
    place) at ``opset`` (see to_onnx_model); returns the path.

    Raises:
        OnnxError: an op without ONNX form, an opset outside 13..newest_opset(), the checker
            rejected the result (a graphc bug), or ``path`` is named like another
            framework's file (.keras, .h5, .pt, ...), before anything is written.
        GraphcError: the file cannot be written.
    """
    from graphc.runtime.checkpoint import check_file_name

    if os.path.splitext(os.fspath(path))[1].lower() != ".onnx":  # (.onnx is this one's)
        check_file_name(path, "an ONNX model", "to_onnx", "Name it model.onnx", OnnxError)
    onnx = require_onnx()
    m = to_onnx_model(model, include_loss=include_loss, opset=opset)
    if check:
        try:
            onnx.checker.check_model(m, full_check=True)
        except Exception as e:
            raise OnnxError(f"to_onnx: the exported model fails onnx.checker: {e}") from None
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(m.SerializeToString())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise GraphcError(f"to_onnx: cannot write {path!r}: {e}") from None
    return path
