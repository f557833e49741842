"""ONNX op corners of computed values (issue: op-semantics sweep): Gather with indices known at
import time (scalar, negative, repeated, 2-D), Slice with steps other than 1 (negative steps
read backwards), Pad in every mode with negative pads, ArgMax/ArgMin's select_last_index,
MatMul with a 1-D operand beside a batched one, and Sign of NaN. Each case is one output of
one model (a few compiles for the whole file), checked against ONNX Runtime; the gradients of
the composed movement against central differences of a float64 numpy forward."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError


def _model(nodes, inputs, outputs, inits=(), opset: int = 19):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def _vi(name: str, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name: str, v, dtype=np.int64):
    return numpy_helper.from_array(np.array(v, dtype), name)


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _x() -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    x[0, 0, 0], x[1, 1, 1], x[1, 2, 2] = np.nan, -np.inf, -0.0
    return x


GATHERS = [(1, 0), (1, -1), (2, [0, 3]), (2, [3, 0, 3]), (2, [[0, 1], [2, 3]]), (-1, [[-4]])]
SLICES = [  # starts, ends, axes, steps
    ([3], [0], [2], [-1]),
    ([-1], [-100], [2], [-1]),
    ([100], [-100], [2], [-2]),
    ([0, 1], [2, 4], [-2, -1], [1, 2]),
    ([0], [4], [2], [3]),
    ([0, 0], [2**63 - 1, 4], [0, 2], [1, 2]),  # the whole batch axis beside a strided one
    ([1, -1], [1000, -1000], [2, 1], [2, -2]),
]
PADS = [  # mode, pads, constant value
    ("constant", [0, 1, 2, 0, 2, 1], None),
    ("constant", [0, 0, -1, 0, 0, 1], 1.5),
    ("reflect", [0, 1, 2, 0, 1, 3], None),
    ("reflect", [0, 0, -1, 0, 0, 1], None),
    ("edge", [0, 2, 4, 0, 2, 4], None),
    ("edge", [0, -1, 0, 0, 2, -2], None),
    ("wrap", [0, 0, -2, 0, 0, 3], None),
    ("wrap", [0, 1, 5, 0, 2, 1], None),
]


def test_gather_slice_and_pad_of_a_computed_value_match_onnxruntime() -> None:
    """Each case reads x + 0 (a computed value): graphc picks the same elements as ONNX
    Runtime, NaN, -inf and -0.0 moved unchanged. Before, Gather refused computed data, Slice
    any step but 1 and Pad was unknown."""
    nodes = [helper.make_node("Add", ["x", "zero"], ["h"])]
    inits = [_init("zero", 0.0, np.float32)]
    outs = []
    for k, (axis, idx) in enumerate(GATHERS):
        inits.append(_init(f"gi{k}", idx))
        nodes.append(helper.make_node("Gather", ["h", f"gi{k}"], [f"g{k}"], axis=axis))
        outs.append(f"g{k}")
    for k, (s, e, a, st) in enumerate(SLICES):
        names = [f"s{k}_{n}" for n in "seat"]
        inits += [_init(n, v) for n, v in zip(names, (s, e, a, st))]
        nodes.append(helper.make_node("Slice", ["h", *names], [f"s{k}"]))
        outs.append(f"s{k}")
    for k, (mode, pads, value) in enumerate(PADS):
        ins = ["h", f"p{k}_p"]
        inits.append(_init(f"p{k}_p", pads))
        if value is not None:
            inits.append(_init(f"p{k}_v", value, np.float32))
            ins.append(f"p{k}_v")
        nodes.append(helper.make_node("Pad", ins, [f"p{k}"], mode=mode))
        outs.append(f"p{k}")
    m = _model(nodes, [_vi("x", ["N", 3, 4])], [_vi(o, None) for o in outs], inits)
    x = _x()
    want = _ort(m, {"x": x})
    got = gc.from_onnx(m).compile().predict(x)
    for name, w in zip(outs, want):
        g = np.asarray(got[name])
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)
        assert np.array_equal(np.signbit(g), np.signbit(w)), name


def test_gather_slice_and_pad_gradients_match_central_differences() -> None:
    """d/dW of sum(u * movement(x * W)): a repeated index and a reflected/edge element collect
    the sum of their gradients (the scatter-add), checked against float64 numpy."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    cases = [
        ("Gather", {"axis": 2}, [[3, 0, 3, 3]], lambda h: np.take(h, [3, 0, 3, 3], axis=2)),
        ("Slice", {}, [[3], [-100], [2], [-2]], lambda h: h[:, :, 3::-2]),
        (
            "Pad",
            {"mode": "reflect"},
            [[0, 1, 3, 0, 1, 2]],
            lambda h: np.pad(h, [(0, 0), (1, 1), (3, 2)], mode="reflect"),
        ),
        (
            "Pad",
            {"mode": "edge"},
            [[0, -1, 2, 0, 2, 0]],
            lambda h: np.pad(h[:, 1:], [(0, 0), (0, 2), (2, 0)], mode="edge"),
        ),
    ]
    nodes = [helper.make_node("Mul", ["x", "W"], ["h"])]
    inits = [numpy_helper.from_array(w0, "W")]
    outs = []
    for k, (op, attrs, args, _) in enumerate(cases):
        names = [f"a{k}_{j}" for j in range(len(args))]
        inits += [_init(n, v) for n, v in zip(names, args)]
        nodes.append(helper.make_node(op, ["h", *names], [f"o{k}"], **attrs))
        outs.append(f"o{k}")
    m = _model(nodes, [_vi("x", ["N", 3, 4])], [_vi(o, None) for o in outs], inits)
    imp = gc.from_onnx(m, trainable={"W"})  # one model: the loss sums every case's terms
    us = [rng.standard_normal(ref(x[:1] * w0).shape) for *_, ref in cases]
    loss = None
    for y, u in zip(imp.outputs, us):
        term = gc.sum(y * gc.constant(u.astype(np.float32)))
        loss = term if loss is None else loss + term
    model = imp.compile(loss, gc.SGD(0.1))
    got = next(iter(model.gradients(x[:1]).values()))

    def f(w):
        h = x[:1].astype(np.float64) * w
        return float(sum(np.sum(u * ref(h)) for u, (*_, ref) in zip(us, cases)))

    np.testing.assert_allclose(
        got, numeric_grad(f, [w0.astype(np.float64)], 0), rtol=1e-4, atol=1e-5
    )


def test_argmax_argmin_select_last_index_and_matmul_with_a_1d_operand() -> None:
    """select_last_index=1 gives the last extreme at a tie (a NaN is never the extreme unless
    it comes first, as ONNX Runtime walks the axis); MatMul [N,3,4] @ [4] and [4] @ [N,4,5]
    drop the 1-D operand's axis (numpy); Sign(NaN) is NaN. All against ONNX Runtime (the
    NaN rows: ArgMax / ArgMin against ONNX Runtime, Sign against numpy)."""
    xt = np.array(
        [
            [[1, 3, 3, 2], [5, 5, 5, 5], [0, 0, 1, 1]],
            [[np.nan, 1, 2, 3], [1, np.nan, 3, np.nan], [-np.inf, -np.inf, -np.inf, -np.inf]],
        ],
        np.float32,
    )
    nodes, outs = [], []
    for op in ("ArgMax", "ArgMin"):
        for axis in (1, 2):
            o = f"{op}{axis}"
            nodes += [
                helper.make_node(op, ["x"], [o + "i"], axis=axis, keepdims=0, select_last_index=1),
                helper.make_node("Cast", [o + "i"], [o], to=TensorProto.FLOAT),
            ]
            outs.append(o)
    nodes += [
        helper.make_node("MatMul", ["x", "v"], ["mv"]),
        helper.make_node("Reshape", ["x", "shp"], ["x2"]),
        helper.make_node("MatMul", ["v", "x2"], ["vm"]),
        helper.make_node("Sign", ["x"], ["sign"]),
    ]
    outs += ["mv", "vm", "sign"]
    inits = [_init("v", [0.5, -1.0, 2.0, 0.25], np.float32), _init("shp", [0, 1, 4, 3])]
    m = _model(nodes, [_vi("x", ["N", 3, 4])], [_vi(o, None) for o in outs], inits, opset=13)
    finite = np.nan_to_num(xt[:1], nan=7.0, neginf=-7.0)
    got = gc.from_onnx(m).compile().predict(np.concatenate([finite, xt]))
    want = _ort(m, {"x": finite})
    for name, w in zip(outs, want):
        np.testing.assert_allclose(np.asarray(got[name])[:1], w, rtol=1e-6, err_msg=name)
    want_nan = _ort(m, {"x": xt})
    for name, w in zip(outs[:4], want_nan):
        np.testing.assert_array_equal(np.asarray(got[name])[1:], w, err_msg=name)
    np.testing.assert_array_equal(np.asarray(got["sign"])[1:], np.sign(xt))


def test_gather_refusals_name_the_node_and_the_reason() -> None:
    """Indices out of range, computed indices and the batch axis are refused by name."""
    x = [_vi("x", ["N", 3, 4])]
    m = _model(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=2)],
        x,
        [_vi("y", None)],
        [_init("i", [4])],
    )
    with pytest.raises(OnnxError, match=r"Gather.*index 4 is out of range \[-4, 4\)"):
        gc.from_onnx(m)
    m = _model(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=0)],
        x,
        [_vi("y", None)],
        [_init("i", 0)],
    )
    with pytest.raises(OnnxError, match=r"Gather.*batch dimension N"):
        gc.from_onnx(m)
    m = _model(
        [helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")],
        x,
        [_vi("y", None)],
        [_init("p", [0, 0, 4, 0, 0, 0])],
    )
    with pytest.raises(OnnxError, match=r"Pad.*reflect pads 4, 0 of axis 2"):
        gc.from_onnx(m)


def test_reduce_prod_and_logsumexp_of_infinities_match_onnxruntime() -> None:
    """ReduceProd folds in shape computations (Shape(start=1) -> ReduceProd -> Reshape, a
    flatten older exporters write) and multiplies computed values; ReduceLogSumExp of a row
    of -inf is -inf and of a row holding +inf is +inf (was NaN: -inf - -inf)."""
    N = helper.make_node
    nodes = [
        N("Shape", ["x"], ["s"], start=1),
        N("ReduceProd", ["s"], ["p"], keepdims=1),
        N("Concat", ["m1", "p"], ["t"], axis=0),
        N("Reshape", ["x", "t"], ["flat"]),
        N("ReduceProd", ["x", "a2"], ["prod"], keepdims=0),
        N("ReduceProd", ["x", "a12"], ["prod12"], keepdims=1),
        N("ReduceLogSumExp", ["x", "a2"], ["lse"], keepdims=0),
    ]
    inits = [_init("m1", [-1]), _init("a2", [2]), _init("a12", [-1, 1])]
    outs = ["flat", "prod", "prod12", "lse"]
    m = _model(nodes, [_vi("x", ["N", 3, 4])], [_vi(o, None) for o in outs], inits, opset=18)
    x = np.random.default_rng(2).uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32)
    x[0, 0, :] = -np.inf
    x[0, 1, 2] = np.inf
    x[1, 2, 1] = 0.0
    want = _ort(m, {"x": x})
    got = gc.from_onnx(m).compile().predict(x)
    for name, w in zip(outs, want):
        np.testing.assert_allclose(np.asarray(got[name]), w, rtol=1e-5, err_msg=name)


def test_reduce_prod_gradient_with_a_zero_matches_central_differences() -> None:
    """d/dW sum(u * ReduceProd(x * W, axis 2)): the product rule, right at an element that is 0
    (no division by the product)."""
    w0 = np.array([[1.2, 0.0, -0.7, 0.9], [0.5, -1.1, 1.3, 0.8], [0.0, 0.0, 1.0, 2.0]], np.float32)
    x = np.random.default_rng(3).uniform(0.5, 1.5, (1, 3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "W"], ["h"]),
        helper.make_node("ReduceProd", ["h"], ["y"], axes=[2], keepdims=0),
    ]
    m = _model(
        nodes,
        [_vi("x", ["N", 3, 4])],
        [_vi("y", None)],
        [numpy_helper.from_array(w0, "W")],
        opset=13,
    )
    imp = gc.from_onnx(m, trainable={"W"})
    u = np.array([[0.5, -1.0, 2.0]], np.float32)
    model = imp.compile(gc.sum(imp.outputs[0] * gc.constant(u)), gc.SGD(0.1))
    got = next(iter(model.gradients(x).values()))

    def f(w):
        return float(np.sum(u * np.prod(x.astype(np.float64) * w, axis=2)))

    np.testing.assert_allclose(
        got, numeric_grad(f, [w0.astype(np.float64)], 0), rtol=1e-4, atol=1e-6
    )


def test_embedding_lookup_with_integer_index_inputs() -> None:
    """Gather(W, idx) with an int64 index input (nn.Embedding's export; negative indices count
    from the end) equals ONNX Runtime for tables of rank 1 to 3, and the table's gradient is
    the scatter-add of the rows picked (repeated indices add), against float64 numpy. Before:
    refused (indices computed from the inputs)."""
    rng = np.random.default_rng(5)
    idx = np.array([[3, -1, 3, 0, 9], [2, 2, 2, -10, 5]], np.int64)
    tables = {
        "W2": rng.standard_normal((10, 4)),
        "W1": rng.standard_normal(10),
        "W3": rng.standard_normal((10, 2, 3)),
    }
    nodes = [helper.make_node("Gather", [w, "i"], [f"y{w}"], axis=0) for w in tables]
    inits = [numpy_helper.from_array(v.astype(np.float32), w) for w, v in tables.items()]
    ins = [helper.make_tensor_value_info("i", TensorProto.INT64, ["N", 5])]
    m = _model(nodes, ins, [_vi(f"y{w}", None) for w in tables], inits, opset=13)
    want = _ort(m, {"i": idx})
    got = gc.from_onnx(m, trainable=False).compile().predict(idx)
    for w, ww in zip(tables, want):
        np.testing.assert_array_equal(np.asarray(got[f"y{w}"]), ww, err_msg=w)
    imp = gc.from_onnx(m, trainable={"W2"}, outputs=["yW2"])
    u = rng.standard_normal((5, 4)).astype(np.float32)  # the same weights for both rows
    model = imp.compile(gc.sum(imp.outputs[0] * gc.constant(u)), gc.SGD(0.1))
    grad = next(iter(model.gradients(idx).values()))
    want_grad = np.zeros((10, 4))
    np.add.at(want_grad, np.where(idx < 0, idx + 10, idx), np.broadcast_to(u, (2, 5, 4)))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-6)


def test_casts_of_computed_values_to_integer_and_bool_types() -> None:
    """Cast to bool is [x != 0] (an ArgMax index of 2 cast to bool and back was 2.0, now 1.0;
    NaN is true); a float cast to an integer type rounds toward zero, and 8/16-bit types wrap
    modulo 2**bits (both as ONNX Runtime). Before, casts of computed floats were refused."""
    N = helper.make_node
    x = np.array(
        [[np.nan, 2.5, -2.5, 2.7, -2.7, 0.0, -0.0, 0.3, -129.0, 255.0, 300.5, -300.5, 40000.0]],
        np.float32,
    )
    nodes, outs = [], []
    for to in (9, 6, 7, 3, 2, 5, 4):
        nodes += [N("Cast", ["x"], [f"c{to}"], to=to), N("Cast", [f"c{to}"], [f"y{to}"], to=1)]
        outs.append(f"y{to}")
    nodes += [
        N("ArgMax", ["x"], ["i"], axis=1, keepdims=0),
        N("Cast", ["i"], ["b"], to=TensorProto.BOOL),
        N("Cast", ["b"], ["argmax_bool"], to=1),
    ]
    outs.append("argmax_bool")
    m = _model(nodes, [_vi("x", ["N", 13])], [_vi(o, None) for o in outs], opset=13)
    finite = np.nan_to_num(x)  # NaN into an integer type is undefined: bool only
    rows = np.concatenate([finite, np.abs(finite), x])
    got = gc.from_onnx(m).compile().predict(rows)
    for k, feed in enumerate((finite, np.abs(finite))):
        want = _ort(m, {"x": feed})
        for name, w in zip(outs, want):
            if name in ("y2", "y4") and k == 0:
                continue  # negative floats into unsigned types: undefined (ONNX)
            np.testing.assert_array_equal(np.asarray(got[name])[k : k + 1], w, err_msg=name)
    assert np.asarray(got["y9"])[2, 0] == 1.0  # NaN is true


def test_float_range_of_initializers_folds() -> None:
    """Range's float start/limit/delta as initializers (onnx-simplifier turns Constants into
    initializers) are no weights: they fold (before, they were trainable params and Range
    was refused as 'supported only on values known at import time')."""
    N = helper.make_node
    inits = [_init("a", 0.5, np.float32), _init("b", 2.5, np.float32), _init("d", 0.5, np.float32)]
    nodes = [N("Range", ["a", "b", "d"], ["r"]), N("Add", ["x", "r"], ["y"])]
    m = _model(nodes, [_vi("x", ["N", 3, 4])], [_vi("y", None)], inits, opset=13)
    x = np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    imp = gc.from_onnx(m)
    assert not imp.params
    np.testing.assert_array_equal(imp.compile().predict(x), _ort(m, {"x": x})[0])


RESIZES = [  # attrs, scales or None, sizes (H, W) or None; opset 18
    ({"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, [2, 2], None),
    ({}, [2, 1.5], None),  # half_pixel, round_prefer_floor (the defaults)
    ({"coordinate_transformation_mode": "align_corners"}, [3, 1], None),
    ({"coordinate_transformation_mode": "pytorch_half_pixel"}, None, [7, 3]),
    ({"nearest_mode": "round_prefer_ceil"}, [1.5, 2], None),
    ({"coordinate_transformation_mode": "tf_half_pixel_for_nn"}, [2, 1.5], None),
]


def test_nearest_resize_and_upsample_match_onnxruntime_and_train() -> None:
    """Resize in mode nearest (scales, or sizes from a shape computation holding N) and
    Upsample pick the elements ONNX Runtime picks; d/dW of an upsampled x * W sums the copies
    of each element (float64 numpy). Before: both operators were refused."""
    N = helper.make_node
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 5)).astype(np.float32)
    nodes = [N("Shape", ["x"], ["sh"]), N("Slice", ["sh", "z0", "z2"], ["nc"])]
    inits = [_init("z0", [0]), _init("z2", [2])]
    outs = []
    for k, (attrs, scales, sizes) in enumerate(RESIZES):
        if sizes is None:
            inits.append(_init(f"s{k}", [1, 1, *scales], np.float32))
            ins = ["x", "", f"s{k}"]
        else:
            inits.append(_init(f"hw{k}", sizes))
            nodes.append(N("Concat", ["nc", f"hw{k}"], [f"sz{k}"], axis=0))
            ins = ["x", "", "", f"sz{k}"]
        nodes.append(N("Resize", ins, [f"y{k}"], mode="nearest", **attrs))
        outs.append(f"y{k}")
    m = _model(nodes, [_vi("x", ["N", 3, 4, 5])], [_vi(o, None) for o in outs], inits, opset=18)
    got = gc.from_onnx(m).compile().predict(x)
    for name, w in zip(outs, _ort(m, {"x": x})):
        np.testing.assert_array_equal(np.asarray(got[name]), w, err_msg=name)
    m = _model(
        [N("Upsample", ["x", "s"], ["y"], mode="nearest")],
        [_vi("x", ["N", 3, 4, 5])],
        [_vi("y", None)],
        [_init("s", [1, 1, 2, 3], np.float32)],
        opset=9,
    )
    np.testing.assert_array_equal(gc.from_onnx(m).compile().predict(x), _ort(m, {"x": x})[0])

    w0 = np.random.default_rng(8).standard_normal((3, 4, 5)).astype(np.float32)
    nodes = [
        N("Mul", ["x", "W"], ["h"]),
        N(
            "Resize",
            ["h", "", "s"],
            ["y"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
    ]
    m = _model(
        nodes,
        [_vi("x", ["N", 3, 4, 5])],
        [_vi("y", None)],
        [numpy_helper.from_array(w0, "W"), _init("s", [1, 1, 2, 2], np.float32)],
        opset=13,
    )
    imp = gc.from_onnx(m, trainable={"W"})
    u = np.random.default_rng(9).standard_normal((3, 8, 10)).astype(np.float32)
    model = imp.compile(gc.sum(imp.outputs[0] * gc.constant(u)), gc.SGD(0.1))
    grad = next(iter(model.gradients(x[:1]).values()))
    want_grad = x[0].astype(np.float64) * u.reshape(3, 4, 2, 5, 2).sum(axis=(2, 4))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
