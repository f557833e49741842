"""ONNX ScatterElements / Scatter / ScatterND (torch.scatter, scatter_add, scatter_reduce,
index_put and slice assignment), every reduction (none, add, mul, max, min), against ONNX
Runtime: indices known at import time (negative, repeated: the last plain write stays and the
reductions apply in index order) scattering into values without the batch dimension, indices
read from a graph input along a non-batch axis, ONNX's node tests compiled, the gradient
against central differences of a float64 numpy forward, and the refusals (named).
Before, the three operators were refused ('not supported by graphc')."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad
from onnx_models import make_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.onnx_backend import GraphcRep, node_cases, run_case

N = helper.make_node
F, I64 = TensorProto.FLOAT, TensorProto.INT64
REDUCTIONS = ("none", "add", "mul", "max", "min")


def _model(nodes, inputs, outs, inits=(), opset: int = 18):
    return make_model(nodes, inputs, outs, inits, opset)


def _ort(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def test_constant_indices_match_onnxruntime() -> None:
    """ScatterElements along each axis and ScatterND with tuples of 1 and 2 positions, with
    negative and repeated indices, each reduction, into fixed-shape data."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 5)).astype(np.float32)
    upd = rng.standard_normal((3, 3)).astype(np.float32)
    upd_row = rng.standard_normal((3, 5)).astype(np.float32)
    upd_el = rng.standard_normal((3,)).astype(np.float32)
    ie0 = np.array([[1, -1, 1], [1, 0, 2], [-3, 3, 2]], np.int64)  # along axis 0, repeats
    ie1 = np.array([[4, 4, 0], [-1, 2, 2], [0, 1, -5]], np.int64)  # along axis 1, repeats
    rows = np.array([[2], [-4], [2]], np.int64)  # ScatterND: whole rows, row 2 twice
    elems = np.array([[0, 1], [3, -1], [0, 1]], np.int64)  # ScatterND: elements, one twice
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((ie0, "ie0"), (ie1, "ie1"), (rows, "rows"), (elems, "elems"))
    ]
    nodes, outs = [], []
    for red in REDUCTIONS:
        for name, node in (
            ("e0", N("ScatterElements", ["d", "ie0", "u"], [], axis=0, reduction=red)),
            ("e1", N("ScatterElements", ["d", "ie1", "u"], [], axis=-1, reduction=red)),
            ("nr", N("ScatterND", ["d", "rows", "ur"], [], reduction=red)),
            ("ne", N("ScatterND", ["d", "elems", "ue"], [], reduction=red)),
        ):
            node.output.append(f"{name}_{red}")
            nodes.append(node)
            outs.append(f"{name}_{red}")
    inputs = [("d", F, [4, 5]), ("u", F, [3, 3]), ("ur", F, [3, 5]), ("ue", F, [3])]
    m = _model(nodes, inputs, outs, inits)
    feeds = {"d": data, "u": upd, "ur": upd_row, "ue": upd_el}
    want = _ort(m, feeds)
    got = GraphcRep(m).run([data, upd, upd_row, upd_el])
    for name, g, w in zip(outs, got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=name)
    # the older forms: Scatter (opset 9) and ScatterElements-11 without a reduction
    for op, opset in (("Scatter", 9), ("ScatterElements", 11), ("ScatterND", 13)):
        ins = ["d", "elems", "ue"] if op == "ScatterND" else ["d", "ie1", "u"]
        m = _model(
            [N(op, ins, ["y"], **({} if op == "ScatterND" else {"axis": 1}))],
            inputs,
            ["y"],
            inits,
            opset,
        )
        np.testing.assert_array_equal(
            GraphcRep(m).run([data, upd, upd_row, upd_el])[0], _ort(m, feeds)[0]
        )


def test_input_indices_along_a_sample_axis_match_onnxruntime() -> None:
    """ScatterElements with indices read from a graph input ([N, ...], checked by the entries)
    along axis 1 of [N, 6] and along axis 2 of [N, 3, 6] with indices covering only the first
    2 of the 3 rows; repeats within a row, negative indices, every reduction."""
    rng = np.random.default_rng(1)
    x2 = rng.standard_normal((5, 6)).astype(np.float32)
    x3 = rng.standard_normal((5, 3, 6)).astype(np.float32)
    i2 = rng.integers(-6, 6, (5, 4)).astype(np.int64)
    i3 = rng.integers(-6, 6, (5, 2, 4)).astype(np.int64)
    u2 = rng.standard_normal((5, 4)).astype(np.float32)
    u3 = rng.standard_normal((5, 2, 4)).astype(np.float32)
    nodes, outs = [], []
    for red in REDUCTIONS:
        nodes.append(N("ScatterElements", ["x2", "i2", "u2"], [f"a_{red}"], axis=1, reduction=red))
        nodes.append(N("ScatterElements", ["x3", "i3", "u3"], [f"b_{red}"], axis=2, reduction=red))
        outs += [f"a_{red}", f"b_{red}"]
    inputs = [
        ("x2", F, ["N", 6]),
        ("i2", I64, ["N", 4]),
        ("u2", F, ["N", 4]),
        ("x3", F, ["N", 3, 6]),
        ("i3", I64, ["N", 2, 4]),
        ("u3", F, ["N", 2, 4]),
    ]
    m = _model(nodes, inputs, outs)
    feeds = {"x2": x2, "i2": i2, "u2": u2, "x3": x3, "i3": i3, "u3": u3}
    want = _ort(m, feeds)
    model = gc.from_onnx(m).compile()
    got = model.predict(feeds)
    for name, w in zip(outs, want):
        np.testing.assert_allclose(got[name], w, rtol=1e-6, atol=1e-6, err_msg=name)
    bad = dict(feeds, i2=np.where(np.arange(4) == 2, 6, i2))  # 6 is past the axis
    with pytest.raises(gc.GraphcError, match="i2"):
        model.predict(bad)


def test_node_tests_compile() -> None:
    """ONNX's node tests of the three operators, compiled (tests/test_onnx.py runs them all
    interpreted): repeated indices, a minimum."""
    want = {
        "ScatterElements": ("duplicate_indices",),
        "ScatterND": ("min_with_element",),
    }
    for op, names in want.items():
        cases = [c for c in node_cases(op) if any(n in c.name for n in names)]
        assert len(cases) == len(names), [c.name for c in cases]
        for case in cases:
            assert run_case(case, "compile") == ("pass", ""), case.name


def _scatter64(data, idx, upd, axis):
    out = data.copy()
    for k in np.ndindex(idx.shape):
        at = list(k)
        at[axis] = idx[k] % data.shape[axis]
        out[tuple(at)] = upd[k]
    return out


def test_gradient_reaches_kept_data_and_landed_updates() -> None:
    """d/dW, d/dV, d/dA, d/dB of sum(u1 * x * ScatterElements(W, c, V)) (constant indices
    along axis 0 with a repeat: the overwritten update and data element get no gradient) +
    sum(u2 * ScatterElements(x * A, i, z * B, axis 2, add)) (indices from an input), all four
    trainable, against central differences of a float64 numpy forward."""
    rng = np.random.default_rng(2)
    w0, a0 = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    v0 = rng.standard_normal((2, 4)).astype(np.float32)
    b0 = rng.standard_normal((3, 2)).astype(np.float32)
    x = rng.standard_normal((1, 3, 4)).astype(np.float32)
    z = rng.standard_normal((1, 3, 2)).astype(np.float32)
    i = np.array([[[1, 1], [-1, 0], [2, 3]]], np.int64)
    u1, u2 = (rng.standard_normal((1, 3, 4)) for _ in range(2))
    c = np.array([[0, 2, 2, 1], [0, -1, 1, 1]], np.int64)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((w0, "W"), (v0, "V"), (a0, "A"), (b0, "B"), (c, "c"))
    ]
    nodes = [
        N("ScatterElements", ["W", "c", "V"], ["s1"], axis=0),
        N("Mul", ["x", "s1"], ["y1"]),
        N("Mul", ["x", "A"], ["xa"]),
        N("Mul", ["z", "B"], ["zb"]),
        N("ScatterElements", ["xa", "i", "zb"], ["y2"], axis=2, reduction="add"),
    ]
    inputs = [("x", F, ["N", 3, 4]), ("z", F, ["N", 3, 2]), ("i", I64, ["N", 3, 2])]
    imp = gc.from_onnx(_model(nodes, inputs, ["y1", "y2"], inits), trainable={"W", "V", "A", "B"})
    y1, y2 = imp.outputs
    loss = gc.sum(y1 * gc.constant(u1.astype(np.float32))) + gc.sum(
        y2 * gc.constant(u2.astype(np.float32))
    )
    grads = imp.compile(loss, gc.SGD(0.1)).gradients({"x": x, "z": z, "i": i})

    def f(w, v, a, b) -> float:
        y1 = x * _scatter64(w, c, v, 0)
        y2 = x * a
        for k in np.ndindex(i.shape):
            y2[k[:2] + (i[k] % 4,)] += z[k] * b[k[1:]]
        return float((u1 * y1).sum() + (u2 * y2).sum())

    params = [w0, v0, a0, b0]
    for k, name in enumerate("WVAB"):
        got = next(g for n, g in grads.items() if n.endswith(name))
        np.testing.assert_allclose(
            got, numeric_grad(f, params, k), rtol=1e-4, atol=1e-5, err_msg=name
        )


def test_refusals_name_the_node() -> None:
    """Constant indices into a value with N, ScatterND indices computed in the graph,
    computed indices along N, a constant index out of range: each refused naming the node."""
    c = numpy_helper.from_array(np.array([[0, 1]], np.int64), "c")
    far = numpy_helper.from_array(np.array([[0, 7]], np.int64), "far")
    cases = [
        ([N("ScatterElements", ["x", "c", "u"], ["y"], axis=1, name="s")], "batch dimension N"),
        ([N("ScatterND", ["w", "i", "u"], ["y"], name="s")], "ScatterND"),
        ([N("ScatterElements", ["x", "i", "x"], ["y"], axis=0, name="s")], "batch dimension N"),
        ([N("ScatterElements", ["w", "far", "v"], ["y"], axis=1, name="s")], r"far|\[0, 1\] = 7"),
    ]
    inputs = [
        ("x", F, ["N", 2]),
        ("u", F, [1, 2]),
        ("i", I64, ["N", 2]),
        ("w", F, [3, 3]),
        ("v", F, [1, 2]),
    ]
    for nodes, why in cases:
        used = [t for t in inputs if t[0] in nodes[0].input]
        m = _model(nodes, used, ["y"], [c, far])
        with pytest.raises(gc.OnnxError, match=r"'s' \(Scatter") as e:
            gc.from_onnx(m)
        assert e.match(why), str(e.value)


def _batch_rows(cols: np.ndarray, prefix: str) -> list:
    """Nodes computing torch's index_put indices [N, K, 1 + q] from Range(0, N) (the batch
    row of each sample, via Shape, Gather, Range, Reshape and Expand) and the constant
    columns ``cols`` [K, q] (an initializer named prefix + "_cols"), as torch's TorchScript
    export writes them; the result is prefix + "_idx"."""
    k = cols.shape[0]
    p = prefix

    def c(name: str, a: object) -> object:
        value = numpy_helper.from_array(np.asarray(a, np.int64))
        return N("Constant", [], [f"{p}_{name}"], value=value)

    return [
        c("zero", [0]),
        c("start", 0),
        c("step", 1),
        c("col", [-1, 1]),
        c("k", [k]),
        c("last", [-1]),
        N("Shape", ["x"], [f"{p}_shape"]),
        N("Gather", [f"{p}_shape", f"{p}_zero"], [f"{p}_n1"], axis=0),
        N("Squeeze", [f"{p}_n1"], [f"{p}_n"]),
        N("Range", [f"{p}_start", f"{p}_n", f"{p}_step"], [f"{p}_rows"]),
        N("Reshape", [f"{p}_rows", f"{p}_col"], [f"{p}_rows2"]),
        N("Concat", [f"{p}_n1", f"{p}_k"], [f"{p}_nk"], axis=0),
        N("Expand", [f"{p}_rows2", f"{p}_nk"], [f"{p}_r"]),
        N("Unsqueeze", [f"{p}_r", f"{p}_last"], [f"{p}_r3"]),
        N("Shape", [f"{p}_r3"], [f"{p}_r3_shape"]),  # torch also shapes the updates from it
        c("q", [cols.shape[1]]),
        N("Concat", [f"{p}_nk", f"{p}_q"], [f"{p}_nkq"], axis=0),
        N("Expand", [f"{p}_cols", f"{p}_nkq"], [f"{p}_c"]),
        N("Concat", [f"{p}_r3", f"{p}_c"], [f"{p}_idx"], axis=-1),
    ]


def test_torch_index_put_on_a_batched_value_matches_onnxruntime() -> None:
    """torch's y[:, [0, 2]] = v, y[:, 1, 3:5] += v (reduction add) and y[:, i, j] *= v as
    exported: indices [N, K, 1 + q] built from Range(0, N) and constant columns. Each sample
    scatters at the constant columns (graphc evaluates the index computation at two batch
    sizes: the first column is the row, the rest the same for every row). Before, the import
    stopped at the Range over N."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    cases = [
        ("a", np.array([[0], [2]]), "none"),  # whole rows x[n, i, :]
        ("b", np.array([[1, 3], [1, 4]]), "add"),  # elements x[n, 1, 3:5]
        ("c", np.array([[2, 0], [0, 4], [2, 0]]), "mul"),  # elements, one twice
    ]
    nodes, inits, outs = [], [], []
    for p, cols, red in cases:
        inits.append(numpy_helper.from_array(cols.astype(np.int64), f"{p}_cols"))
        nodes += _batch_rows(cols, p)
        # updates [N, K, rest]: a slice of x shaped like the indices' rows
        width = 5 if cols.shape[1] == 1 else None
        if width:
            nodes.append(N("Slice", ["x", "s0", "s2", "s1"], [f"{p}_u"]))
        else:
            nodes.append(N("Slice", ["x", "s0", f"{p}_k3", "s1"], [f"{p}_u3"]))
            nodes.append(N("Squeeze", [f"{p}_u3", "s1"], [f"{p}_u2"]))
            nodes.append(N("Slice", [f"{p}_u2", "s0", f"{p}_kk", "s1"], [f"{p}_u"]))
            inits.append(numpy_helper.from_array(np.array([len(cols)], np.int64), f"{p}_kk"))
            inits.append(numpy_helper.from_array(np.array([1], np.int64), f"{p}_k3"))
        nodes.append(N("ScatterND", ["x", f"{p}_idx", f"{p}_u"], [f"y_{p}"], reduction=red))
        outs.append(f"y_{p}")
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([1], np.int64), "s1"),
        numpy_helper.from_array(np.array([2], np.int64), "s2"),
    ]
    m = _model(nodes, [("x", F, ["N", 4, 5])], outs, inits)
    want = _ort(m, {"x": x})
    got = gc.from_onnx(m).compile().predict(x)
    for name, w in zip(outs, want):
        np.testing.assert_allclose(got[name], w, rtol=1e-6, atol=1e-6, err_msg=name)


def test_torch_scatter_add_of_argmax_indices_matches_onnxruntime() -> None:
    """torch's x.scatter_add(1, argmax(x[:, :4], 1, keepdim).expand(-1, 3), x[:, :3]) as
    exported: the updates are Slice(x, 0, Shape(indices)), whose end holds the batch size N
    (before, a 'malformed node' error from the Slice); the indices are ArgMax's, proven in
    range."""
    x = np.random.default_rng(6).standard_normal((4, 6)).astype(np.float32)
    consts = {"s": [0, 0], "e4": [2**62, 4], "ax": [0, 1], "shape13": [1, 3]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()]
    nodes = [
        N("Slice", ["x", "s", "e4", "ax"], ["x4"]),
        N("ArgMax", ["x4"], ["am"], axis=1, keepdims=1),
        N("Expand", ["am", "shape13"], ["idx"]),
        N("Shape", ["idx"], ["idx_shape"]),
        N("Slice", ["x", "s", "idx_shape"], ["upd"]),
        N("ScatterElements", ["x", "idx", "upd"], ["y"], axis=1, reduction="add"),
    ]
    m = _model(nodes, [("x", F, ["N", 6])], ["y"], inits)
    np.testing.assert_allclose(
        gc.from_onnx(m).compile().predict(x), _ort(m, {"x": x})[0], rtol=1e-6, atol=1e-6
    )
