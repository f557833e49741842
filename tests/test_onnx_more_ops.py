"""ONNX operators real exporters write beside the usual activations: Shrink (torch's
Softshrink), Or/And/Xor/Not (torch's Hardshrink writes Or of two comparisons), Floor, Ceil,
IsNaN, IsInf, Hardmax, CumSum, Tile, Trilu, OneHot and Einsum's products, plus the activations
graphc imports through their ONNX function bodies (HardSwish, Mish, Celu, ThresholdedRelu).
Values against ONNX Runtime (NaN, +-inf, -0.0 and the thresholds themselves in the input),
gradients against central differences of a float64 numpy forward, and the imported model's
ONNX export read back by ONNX Runtime. A few compiles in all (~5 s)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError

B = TensorProto.BOOL


def _model(nodes, inputs, outputs, inits=(), opset: int = 18):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9

    return m


def _vi(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name: str, v, dtype=np.int64):
    return numpy_helper.from_array(np.array(v, dtype), name)


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _edges() -> np.ndarray:
    """[2, 3, 4] with NaN, +-inf, +-0.0, the Shrink thresholds +-0.5 and +-0.3, halves and
    integers (Floor/Ceil), large and tiny values."""
    return np.array(
        [
            [[np.nan, np.inf, -np.inf, -0.0], [0.0, 0.5, -0.5, 0.3], [-0.3, 2.5, -2.5, 3.0]],
            [[-0.2, 0.7, -1.7, 1e9], [-1e9, 8388609.5, -4.0, 1e-30], [-1e-30, 0.49, -0.51, 7.25]],
        ],
        np.float32,
    )


def _finite() -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((2, 3, 4)).astype(np.float32)
    x[0, 1, 2] = x[0, 1, 0]  # a tie for Hardmax: the first one wins
    return x


def test_elementwise_masks_and_shrink_match_onnxruntime() -> None:
    """Shrink (hard and soft; NaN gives 0 as ONNX defines it), Floor, Ceil (the sign of a zero
    result, 2**23 and above unchanged), IsNaN, IsInf (each detect flag), and And/Or/Xor/Not of
    comparisons (bool in ONNX Runtime, 0/1 in graphc) on every edge value."""
    one = [("Shrink", {"lambd": 0.5}), ("Shrink", {"lambd": 0.3, "bias": 0.3})]
    one += [("Floor", {}), ("Ceil", {}), ("IsNaN", {}), ("IsInf", {})]
    one += [("IsInf", {"detect_negative": 0}), ("IsInf", {"detect_positive": 0})]
    nodes, outs = [], []
    for k, (op, attrs) in enumerate(one):
        nodes.append(helper.make_node(op, ["x"], [f"o{k}"], **attrs))
        outs.append(_vi(f"o{k}", None, B if op.startswith("Is") else TensorProto.FLOAT))
    nodes += [
        helper.make_node("Greater", ["x", "c"], ["gt"]),
        helper.make_node("Less", ["x", "d"], ["lt"]),
        helper.make_node("Not", ["gt"], ["not"]),
    ]
    outs.append(_vi("not", None, B))
    for op in ("And", "Or", "Xor"):
        nodes.append(helper.make_node(op, ["gt", "lt"], [op]))
        outs.append(_vi(op, None, B))
    inits = [_init("c", -0.5, np.float32), _init("d", [0.5, 3.0, -0.0, 1.0], np.float32)]
    m = _model(nodes, [_vi("x", ["N", 3, 4])], outs, inits)
    x = _edges()
    want = _ort(m, {"x": x})
    got = gc.from_onnx(m).compile().predict(x)
    for o, w in zip(outs, want):
        g = np.asarray(got[o.name])
        assert g.dtype == w.dtype and g.shape == w.shape, o.name  # bool outputs as bool
        np.testing.assert_array_equal(g, w, err_msg=o.name)
        assert np.array_equal(np.signbit(g), np.signbit(w)), o.name


def test_hardmax_cumsum_tile_trilu_onehot_einsum_match_onnxruntime() -> None:
    """Hardmax (axis -1, axis 1, opset 11's default on a 2-D value), CumSum (plain,
    exclusive, reverse, both; on axes 1 and 2), Tile, Trilu (upper and lower, k of either
    sign), OneHot of computed indices (negative and out of range among them) and the Einsum
    products exporters write ('ni,ij->nj', 'nij,njk->nik', 'nij,nkj->nik', 'ni,ni->n',
    'ij,nj->ni' implicit output, one-operand 'nij->nj', ellipses '...ij,...jk->...ik',
    '...ij,...ij->...', '...j,jk' implicit)."""
    nodes = [
        helper.make_node("Hardmax", ["x"], ["hm"]),
        helper.make_node("Hardmax", ["x"], ["hm1"], axis=1),
        helper.make_node("CumSum", ["x", "ax2"], ["cs"]),
        helper.make_node("CumSum", ["x", "ax1"], ["cse"], exclusive=1),
        helper.make_node("CumSum", ["x", "ax2"], ["csr"], reverse=1),
        helper.make_node("CumSum", ["x", "axm1"], ["csre"], reverse=1, exclusive=1),
        helper.make_node("Tile", ["x", "reps"], ["tile"]),
        helper.make_node("Trilu", ["x"], ["triu"]),
        helper.make_node("Trilu", ["x", "k1"], ["tril"], upper=0),
        helper.make_node("Trilu", ["x", "km1"], ["triu_m1"]),
        helper.make_node("Floor", ["q"], ["idxf"]),
        helper.make_node("Cast", ["idxf"], ["idx"], to=TensorProto.INT64),
        helper.make_node("OneHot", ["idx", "depth", "onoff"], ["oh"]),
        helper.make_node("OneHot", ["idx", "depth", "onoff"], ["oh1"], axis=1),
        helper.make_node("Reshape", ["x", "flat"], ["x2"]),
        helper.make_node("Einsum", ["x2", "w"], ["e_mm"], equation="ni,ij->nj"),
        helper.make_node("Einsum", ["x", "z"], ["e_bmm"], equation="nij,njk->nik"),
        helper.make_node("Einsum", ["x", "x"], ["e_bt"], equation="nij,nkj->nik"),
        helper.make_node("Einsum", ["x2", "x2"], ["e_dot"], equation="ni,ni->n"),
        helper.make_node("Einsum", ["wt", "x2"], ["e_impl"], equation="ij,nj"),
        helper.make_node("Einsum", ["x"], ["e_sum"], equation="nij->nj"),
        helper.make_node("Einsum", ["x", "z"], ["e_ell"], equation="...ij,...jk->...ik"),
        helper.make_node("Einsum", ["x", "x"], ["e_ell2"], equation="...ij,...ij->..."),
        helper.make_node("Einsum", ["x", "w34"], ["e_ell3"], equation="...j,jk"),
    ]
    rng = np.random.default_rng(4)
    inits = [
        _init("ax1", 1),
        _init("ax2", 2),
        _init("axm1", -1),
        _init("reps", [1, 2, 3]),
        _init("k1", 1),
        _init("km1", -1),
        _init("depth", 4),
        _init("onoff", [-1.0, 2.0], np.float32),
        _init("flat", [0, 12]),
        _init("w", rng.standard_normal((12, 5)), np.float32),
        _init("wt", rng.standard_normal((5, 12)), np.float32),
        _init("w34", rng.standard_normal((4, 3)), np.float32),
    ]
    outs = [n.output[0] for n in nodes if n.output[0] not in ("idx", "idxf", "x2")]
    inputs = [_vi("x", ["N", 3, 4]), _vi("z", ["N", 4, 2]), _vi("q", ["N", 5])]
    m = _model(nodes, inputs, [_vi(o, None) for o in outs], inits, opset=14)
    x, z = _finite(), rng.standard_normal((2, 4, 2)).astype(np.float32)
    q = np.array([[-5.0, -1.5, 0.0, 3.9, 4.0], [-4.0, -0.5, 1.0, 2.5, 9.0]], np.float32)
    want = _ort(m, {"x": x, "z": z, "q": q})
    got = gc.from_onnx(m).compile().predict({"x": x, "z": z, "q": q})
    for o, w in zip(outs, want):
        g = np.asarray(got[o])
        assert g.shape == w.shape, o
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=o)
    # opset 11's Hardmax reads the value as 2-D from axis 1: on a 2-D value, the last axis
    m11 = _model(
        [helper.make_node("Hardmax", ["v"], ["h"])], [_vi("v", ["N", 5])], [_vi("h", None)], (), 11
    )
    v = np.array([[1, 3, 3, 0, -1], [-np.inf, -np.inf, -5, -5, -9]], np.float32)
    np.testing.assert_array_equal(gc.from_onnx(m11).compile().predict(v), _ort(m11, {"v": v})[0])


def test_gradients_match_central_differences() -> None:
    """d/dW of sum(u * op(x * W)) for Shrink (1 outside the threshold, 0 inside), CumSum
    (exclusive and reversed: a reversed running sum of u), Tile (the sum over the copies),
    Trilu (0 outside the band), Einsum (a matmul with a transposed operand, a broadcast
    product)."""
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    w0[np.abs(w0) < 0.1] = 0.4  # away from Shrink's kinks at +-0.5 of x * W
    x = rng.standard_normal((1, 3, 4)).astype(np.float32)
    x[np.abs(np.abs(x * w0) - 0.5) < 0.02] = 2.0

    def cumsum(h, axis, exclusive=False, reverse=False):
        y = np.flip(h, axis) if reverse else h
        c = np.cumsum(y, axis) - (y if exclusive else 0)
        return np.flip(c, axis) if reverse else c

    cases = [
        (
            "Shrink",
            {"lambd": 0.5, "bias": 0.2},
            [],
            lambda h: np.where(h > 0.5, h - 0.2, 0) + np.where(h < -0.5, h + 0.2, 0),
        ),
        ("CumSum", {"exclusive": 1, "reverse": 1}, [2], lambda h: cumsum(h, 2, True, True)),
        ("CumSum", {}, [1], lambda h: cumsum(h, 1)),
        ("Tile", {}, [[1, 2, 2]], lambda h: np.tile(h, (1, 2, 2))),
        ("Trilu", {"upper": 0}, [0], lambda h: np.tril(h)),
        ("Einsum", {"equation": "nij,nkj->nik"}, None, lambda h: np.einsum("nij,nkj->nik", h, h)),
        ("Einsum", {"equation": "nij,nik->nijk"}, None, lambda h: np.einsum("nij,nik->nijk", h, h)),
    ]
    _check_gradients([(op, attrs, args, ref, w0) for op, attrs, args, ref in cases], x, rng)


def _check_gradients(cases, x, rng) -> None:
    """One model (one compile) with y_k = op_k(inner(x * W_k), args_k) for each case (op,
    attrs, args (None: the operand twice), float64 reference, W_k's value) and loss sum_k
    sum(u_k * y_k): each d/dW_k against central differences of the reference."""
    nodes, inits, outs = [], [], []
    for k, (op, attrs, args, _, w) in enumerate(cases):
        inits.append(numpy_helper.from_array(w, f"W{k}"))
        nodes.append(helper.make_node("Mul", ["x", f"W{k}"], [f"h{k}"]))
        names = [f"a{k}_{j}" for j in range(len(args or []))]
        inits += [_init(n, v) for n, v in zip(names, args or [])]
        ins = [f"h{k}", f"h{k}"] if args is None else [f"h{k}", *names]
        nodes.append(helper.make_node(op, ins, [f"o{k}"], **attrs))
        outs.append(f"o{k}")
    m = _model(nodes, [_vi("x", ["N", *x.shape[1:]])], [_vi(o, None) for o in outs], inits)
    imp = gc.from_onnx(m, trainable=True)
    us = [rng.standard_normal(ref(x * w).shape) for _, _, _, ref, w in cases]
    loss = None
    for t, u in zip(imp.outputs, us):
        term = gc.sum(t * gc.constant(u.astype(np.float32)))
        loss = term if loss is None else loss + term
    grads = imp.compile(loss, gc.SGD(0.1)).gradients(x)
    for k, (op, _, _, ref, w) in enumerate(cases):

        def f(wv, ref=ref, u=us[k]):
            return float(np.sum(u * ref(x.astype(np.float64) * wv)))

        got = next(v for name, v in grads.items() if name.endswith(f"W{k}"))
        want = numeric_grad(f, [w.astype(np.float64)], 0)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{k} {op}")


def _linear(nodes, inits, name, x, k, n, rng):
    inits += [
        numpy_helper.from_array(rng.standard_normal((n, k)).astype(np.float32), f"{name}.weight"),
        numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"{name}.bias"),
    ]
    nodes.append(helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [name], transB=1))


def test_torch_sequential_activations_as_exported_match_onnxruntime(tmp_path) -> None:
    """An nn.Sequential of Linear layers with the activations as torch.onnx.export (2.x)
    writes them at opset 18: Hardswish -> HardSwish, Mish -> Mish, CELU -> Celu,
    Hardshrink -> Greater/Less/Cast(bool)/Or/Where, Softshrink -> Where chains, plus
    ThresholdedRelu (Keras). predict equals ONNX Runtime, and so does the model's own
    ONNX export."""
    rng = np.random.default_rng(6)
    nodes: list = []
    inits: list = []
    _linear(nodes, inits, "l0", "x", 4, 8, rng)
    nodes.append(helper.make_node("HardSwish", ["l0"], ["a0"]))
    _linear(nodes, inits, "l1", "a0", 8, 8, rng)
    nodes.append(helper.make_node("Mish", ["l1"], ["a1"]))
    _linear(nodes, inits, "l2", "a1", 8, 8, rng)
    nodes.append(helper.make_node("Celu", ["l2"], ["a2"], alpha=0.7))
    _linear(nodes, inits, "l3", "a2", 8, 8, rng)
    inits += [_init("lam", 0.4, np.float32), _init("nlam", -0.4, np.float32)]
    inits += [_init("zero", 0.0, np.float32)]
    nodes += [  # torch's Hardshrink(0.4)
        helper.make_node("Greater", ["l3", "lam"], ["gt"]),
        helper.make_node("Less", ["l3", "nlam"], ["lt"]),
        helper.make_node("Cast", ["gt"], ["gtb"], to=B),
        helper.make_node("Cast", ["lt"], ["ltb"], to=B),
        helper.make_node("Or", ["gtb", "ltb"], ["outside"]),
        helper.make_node("Where", ["outside", "l3", "zero"], ["a3"]),
    ]
    _linear(nodes, inits, "l4", "a3", 8, 8, rng)
    nodes.append(helper.make_node("ThresholdedRelu", ["l4"], ["a4"], alpha=0.3))
    _linear(nodes, inits, "l5", "a4", 8, 8, rng)
    nodes.append(helper.make_node("Shrink", ["l5"], ["a5"], lambd=0.3, bias=0.3))
    _linear(nodes, inits, "y", "a5", 8, 3, rng)
    m = _model(nodes, [_vi("x", ["N", 4])], [_vi("y", ["N", 3])], inits)
    x = rng.standard_normal((16, 4)).astype(np.float32) * 2
    want = _ort(m, {"x": x})[0]
    model = gc.from_onnx(m).compile()
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-4, atol=1e-4)
    path = str(tmp_path / "out.onnx")
    model.to_onnx(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "node, msg",
    [
        (("Einsum", ["x"], {"equation": "nij->nii"}), "a label repeated in the output"),
        (("Einsum", ["x", "x"], {"equation": "nij,nj->ni"}), "does not match the rank"),
        (("Einsum", ["x", "x"], {"equation": "iij,nij->j"}), "needs equal fixed sizes"),
        (("Einsum", ["x", "x"], {"equation": "nij,nij->j"}), "batch dimension N"),
        (("CumSum", ["x", "a0"], {}), "batch dimension N"),
        (("Tile", ["x", "r2"], {}), "batch dimension N"),
        (("Hardmax", ["x"], {"axis": 0}), "batch dimension N"),
    ],
)
def test_refusals_name_the_node_and_the_reason(node, msg) -> None:
    op, ins, attrs = node
    nodes = [helper.make_node(op, ins, ["y"], **attrs)]
    inits = [_init("a0", 0), _init("r2", [2, 1, 1])]
    m = _model(nodes, [_vi("x", ["N", 3, 3])], [_vi("y", None)], inits)
    with pytest.raises(OnnxError, match=msg) as e:
        gc.from_onnx(m)
    assert f"({op}, opset " in str(e.value)


def test_sin_cos_tan_atan_match_onnxruntime_and_their_derivatives() -> None:
    """Sin, Cos, Tan, Atan over |x| <= 8192 (the range the Cody-Waite reduction keeps exact;
    sampled densely near 0 and at multiples of pi/4) within 1e-7 or 2 units in the last place of float64 numpy (tan: 1e-6
    relative to max(1, |tan x|)), beside a pole of tan 2e-6; as ONNX Runtime; NaN/inf as ONNX Runtime, the sign
    of zero kept; d/dW of sum(u * f(x * W)) against central differences (cos, -sin, 1 + tan^2,
    1 / (1 + x^2))."""
    ops = ["Sin", "Cos", "Tan", "Atan"]
    nodes = [helper.make_node(o, ["x"], [o]) for o in ops]
    m = _model(nodes, [_vi("x", ["N"])], [_vi(o, None) for o in ops])
    rng = np.random.default_rng(7)
    quarter = np.arange(-40, 41) * (np.pi / 4)
    x = np.concatenate(
        [
            rng.uniform(-10, 10, 3000),
            rng.uniform(-8192, 8192, 3000),
            quarter,
            np.nextafter(quarter.astype(np.float32), np.float32(np.inf)),
            [0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 0.41421357, 8192.0, -8192.0],
        ]
    ).astype(np.float32)
    edges = np.array([np.nan, np.inf, -np.inf, -0.0], np.float32)
    got = gc.from_onnx(m).compile().predict(np.concatenate([x, edges]))
    want = _ort(m, {"x": edges})
    x64 = x.astype(np.float64)
    ref = {"Sin": np.sin(x64), "Cos": np.cos(x64), "Tan": np.tan(x64), "Atan": np.arctan(x64)}
    for o, w in zip(ops, want):
        g = np.asarray(got[o])
        err = np.abs(g[: x.size] - ref[o])
        if o == "Tan":
            err = err / np.maximum(1.0, np.abs(ref[o])) / 2e-6
        else:  # 1e-7 or 2 units in the last place of the float32 result
            err = err / np.maximum(1e-7, 2 * np.spacing(np.abs(ref[o]).astype(np.float32)))
        assert err.max() < 1, (o, err.max(), x[np.argmax(err)])
        np.testing.assert_array_equal(g[x.size :], w, err_msg=o)
        assert np.array_equal(np.signbit(g[-1:]), np.signbit(w[-1:])), o  # -0.0 (NaN's: any)
    w0 = rng.uniform(-3, 3, (2, 3)).astype(np.float32)
    xs = rng.uniform(-3, 3, (1, 2, 3)).astype(np.float32)
    w_tan = np.where(np.abs(np.cos(xs[0] * w0)) < 0.2, 0.3, w0).astype(np.float32)  # poles
    fs = {"Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Atan": np.arctan}
    cases = [(o, {}, [], f, w_tan if o == "Tan" else w0) for o, f in fs.items()]
    _check_gradients(cases, xs, rng)


def test_mod_instance_norm_and_group_norm_as_torch_exports_it() -> None:
    """Mod: fmod=1 of floats against ONNX Runtime (signs, a remainder near the divisor, an
    infinite divisor, zeros); fmod=0 (Python's %) against numpy float64 (ONNX Runtime takes
    fmod=0 for integers only), incl. the integers torch's Unflatten computes its shape with
    (Mod of constants folded into a Reshape). InstanceNormalization against ONNX Runtime, and
    torch's GroupNorm(2, 6) export (Reshape [0, 2, -1] -> InstanceNormalization -> Reshape to
    Shape(x) -> Mul -> Add) likewise; their gradients against central differences."""
    a = np.array([[-4.3, 7.2, 5.0, 4.3, -7.2, 8.0, 0.0, -0.0, 1e-3, 6.0, -3.0, 3.0]], np.float32)
    b = np.array(
        [[2.1, -3.4, 8.0, -2.1, 3.4, 5.0, -2.0, 2.0, 7.0, 3.0, np.inf, -np.inf]], np.float32
    )
    nodes = [
        helper.make_node("Mod", ["a", "b"], ["fmod"], fmod=1),
        helper.make_node("Mod", ["a", "b"], ["pymod"]),
        helper.make_node("Mod", ["five", "three"], ["two"]),
        helper.make_node("Concat", ["zero", "two", "minus1"], ["shp"], axis=0),
        helper.make_node("Reshape", ["g", "shp"], ["g3"]),
        helper.make_node("InstanceNormalization", ["g3", "s", "bias"], ["inorm"], epsilon=1e-3),
        helper.make_node("Reshape", ["g", "grp"], ["gg"]),
        helper.make_node("InstanceNormalization", ["gg", "ones", "zeros"], ["gn0"]),
        helper.make_node("Shape", ["g"], ["gshape"]),
        helper.make_node("Reshape", ["gn0", "gshape"], ["gn1"]),
        helper.make_node("Mul", ["gn1", "gw"], ["gn2"]),
        helper.make_node("Add", ["gn2", "gb"], ["gn"]),
    ]
    rng = np.random.default_rng(8)
    inits = [
        _init("five", [5]),
        _init("three", [3]),
        _init("zero", [0]),
        _init("minus1", [-1]),
        _init("grp", [0, 2, -1]),
        _init("s", [0.5, -2.0], np.float32),
        _init("bias", [0.1, 0.2], np.float32),
        _init("ones", [1.0, 1.0], np.float32),
        _init("zeros", [0.0, 0.0], np.float32),
        _init("gw", rng.standard_normal(6), np.float32),
        _init("gb", rng.standard_normal(6), np.float32),
    ]
    outs = ["fmod", "pymod", "inorm", "gn"]
    inputs = [_vi("a", ["N", 12]), _vi("b", ["N", 12]), _vi("g", ["N", 6])]
    m = _model(nodes, inputs, [_vi(o, None) for o in outs], inits)
    g = rng.standard_normal((3, 6)).astype(np.float32) * 3
    aa, bb = np.repeat(a, 3, 0), np.repeat(b, 3, 0)
    got = gc.from_onnx(m).compile().predict({"a": aa, "b": bb, "g": g})
    ort_nodes = [n for n in nodes if n.output[0] != "pymod"]  # ORT: fmod=0 on integers only
    m_ort = _model(ort_nodes, inputs, [_vi(o, None) for o in outs if o != "pymod"], inits)
    want = dict(zip(["fmod", "inorm", "gn"], _ort(m_ort, {"a": aa, "b": bb, "g": g})))
    np.testing.assert_array_equal(got["fmod"], want["fmod"])
    assert np.array_equal(np.signbit(got["fmod"]), np.signbit(want["fmod"]))
    with np.errstate(invalid="ignore"):
        py = np.mod(aa.astype(np.float64), bb.astype(np.float64))
    np.testing.assert_allclose(got["pymod"], py, rtol=1e-6, atol=1e-6)
    assert np.array_equal(np.signbit(got["pymod"]), np.signbit(py))
    for o in ("inorm", "gn"):
        np.testing.assert_allclose(got[o], want[o], rtol=1e-5, atol=1e-5, err_msg=o)
    # the gradient of GroupNorm's composition with respect to its weight-scaled input
    w0 = rng.standard_normal(6).astype(np.float32)
    gm = _model(
        [
            helper.make_node("Mul", ["g", "W"], ["gw_"]),
            helper.make_node("Reshape", ["gw_", "grp"], ["r"]),
        ]
        + [helper.make_node("InstanceNormalization", ["r", "s", "bias"], ["y"], epsilon=1e-3)],
        [_vi("g", ["N", 6])],
        [_vi("y", None)],
        [numpy_helper.from_array(w0, "W"), *inits[4:6], *inits[6:7]],
    )
    imp = gc.from_onnx(gm, trainable={"W"})
    u = rng.standard_normal((1, 2, 3))
    model = imp.compile(gc.sum(imp.outputs[0] * gc.constant(u.astype(np.float32))), gc.SGD(0.1))
    got_g = next(iter(model.gradients(g[:1]).values()))

    def loss(w):
        h = (g[:1].astype(np.float64) * w).reshape(1, 2, 3)
        d = h - h.mean(2, keepdims=True)
        y = d / np.sqrt((d * d).mean(2, keepdims=True) + 1e-3)
        y = y * np.array([0.5, -2.0])[:, None] + np.array([0.1, 0.2])[:, None]
        return float(np.sum(u * y))

    np.testing.assert_allclose(
        got_g, numeric_grad(loss, [w0.astype(np.float64)], 0), rtol=1e-3, atol=1e-4
    )


def test_export_of_the_composed_operators_matches_predict_in_onnxruntime(tmp_path) -> None:
    """Model.to_onnx of an imported model using every added operator writes the compositions
    back in standard operators: the file passes onnx's full check and ONNX Runtime computes
    what predict does (bitwise, sums within 1e-6), which is the original file's result in ONNX Runtime."""
    ops = ["Sin", "Cos", "Tan", "Atan", "Floor", "Ceil", "Shrink", "Hardmax"]
    nodes = [helper.make_node(o, ["x"], [o]) for o in ops]
    nodes += [
        helper.make_node("IsNaN", ["x"], ["isnan"]),
        helper.make_node("Cast", ["isnan"], ["IsNaN"], to=TensorProto.FLOAT),
        helper.make_node("IsInf", ["x"], ["isinf"]),
        helper.make_node("Not", ["isinf"], ["finite"]),
        helper.make_node("Cast", ["finite"], ["Not"], to=TensorProto.FLOAT),
        helper.make_node("CumSum", ["x", "ax"], ["CumSum"], exclusive=1),
        helper.make_node("Tile", ["x", "reps"], ["Tile"]),
        helper.make_node("Reshape", ["x", "s3"], ["x3"]),
        helper.make_node("Trilu", ["x3"], ["Trilu"]),
        helper.make_node("Mod", ["x", "two"], ["Mod"], fmod=1),
        helper.make_node("Einsum", ["x", "x"], ["Outer"], equation="ni,nj->nij"),
        helper.make_node("Einsum", ["x", "w"], ["MatT"], equation="ni,ji->nj"),
        helper.make_node("InstanceNormalization", ["x3", "sc", "b"], ["Inst"]),
    ]
    outs = ops + ["IsNaN", "Not", "CumSum", "Tile", "Trilu", "Mod", "Outer", "MatT", "Inst"]
    rng = np.random.default_rng(9)
    inits = [
        _init("ax", 1),
        _init("reps", [1, 2]),
        _init("s3", [0, 2, 3]),
        _init("two", 2.0, np.float32),
        _init("w", rng.standard_normal((5, 6)), np.float32),
        _init("sc", [1.5, -0.5], np.float32),
        _init("b", [0.0, 1.0], np.float32),
    ]
    m = _model(nodes, [_vi("x", ["N", 6])], [_vi(o, None) for o in outs], inits)
    x = (rng.standard_normal((4, 6)) * 3).astype(np.float32)
    model = gc.from_onnx(m).compile()
    got = model.predict(x)
    path = str(tmp_path / "added.onnx")
    model.to_onnx(path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    back = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))
    want = dict(zip(outs, _ort(m, {"x": x})))
    for o in outs:
        if o in ("MatT", "Inst"):  # sums in another order
            np.testing.assert_allclose(back[o], got[o], rtol=1e-6, atol=1e-6, err_msg=o)
        else:
            np.testing.assert_array_equal(back[o], got[o], err_msg=o)
        np.testing.assert_allclose(got[o], want[o], rtol=1e-5, atol=2e-6, err_msg=o)


HYPERBOLIC = {
    "Sinh": np.sinh,
    "Cosh": np.cosh,
    "Asinh": np.arcsinh,
    "Acosh": np.arccosh,
    "Atanh": np.arctanh,
    "Asin": np.arcsin,
    "Acos": np.arccos,
}


def test_hyperbolic_inverse_sines_and_lp_normalization() -> None:
    """Sinh, Cosh, Asinh, Acosh, Atanh, Asin, Acos within 4 units in the last place of
    float64 numpy over their domains (near 0, near +-1, up to sinh's overflow at 89.4 and
    asinh/acosh of 1e34), NaN/inf/-0.0 as ONNX Runtime; LpNormalization (p = 1, 2; a zero row
    stays 0) against ONNX Runtime; gradients against central differences."""
    nodes = [helper.make_node(o, ["x"], [o]) for o in HYPERBOLIC]
    nodes += [
        helper.make_node("LpNormalization", ["v"], ["l2"]),
        helper.make_node("LpNormalization", ["v"], ["l1"], p=1, axis=1),
    ]
    outs = [*HYPERBOLIC, "l2", "l1"]
    m = _model(nodes, [_vi("x", ["N"]), _vi("v", ["N", 3])], [_vi(o, None) for o in outs])
    rng = np.random.default_rng(10)
    x = np.concatenate(
        [
            rng.uniform(-1, 1, 1500),
            rng.uniform(-1e-3, 1e-3, 500),
            1 - rng.uniform(0, 1e-3, 300),
            -1 + rng.uniform(0, 1e-3, 300),
            rng.uniform(-89.4, 89.4, 1000),
            np.exp(rng.uniform(0, 78, 500)),
        ]
    ).astype(np.float32)
    edges = np.array([0.0, -0.0, 1.0, -1.0, 1.5, np.inf, -np.inf, np.nan, 1e-30], np.float32)
    v = rng.standard_normal((x.size + edges.size, 3)).astype(np.float32)
    v[:2] = [[0.0, 0.0, 0.0], [3.0, -4.0, 0.0]]
    feeds = {"x": np.concatenate([x, edges]), "v": v}
    got = gc.from_onnx(m).compile().predict(feeds)
    want = dict(zip(outs, _ort(m, feeds)))
    x64 = x.astype(np.float64)
    for o, f in HYPERBOLIC.items():
        g = np.asarray(got[o])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            r = f(x64)
            r32 = r.astype(np.float32)
        ok = np.isfinite(r32)  # NaN outside the domain, inf past float32's range: exactly
        np.testing.assert_array_equal(g[: x.size][~ok], r32[~ok], o)
        ulp = np.spacing(np.abs(r[ok]).astype(np.float32)).astype(np.float64)
        err = np.abs(g[: x.size][ok] - r[ok]) / np.maximum(ulp, 1e-45)
        assert err.max() <= 4, (o, err.max(), x[ok][np.argmax(err)])
        np.testing.assert_allclose(g[x.size :], want[o][x.size :], rtol=3e-7, err_msg=o)
        assert np.array_equal(np.signbit(g[x.size + 1]), np.signbit(want[o][x.size + 1])), o
    for o in ("l2", "l1"):
        np.testing.assert_allclose(got[o], want[o], rtol=1e-6, atol=1e-7, err_msg=o)
    xs = rng.uniform(0.3, 0.9, (1, 3)).astype(np.float32) * np.float32([[1, -1, 1]])
    w = rng.uniform(0.2, 0.9, (1, 3)).astype(np.float32)
    w_acosh = (rng.uniform(1.5, 2.0, (1, 3)) / xs).astype(np.float32)  # x * W in [1.5, 2]
    cases = [(o, {}, [], f, w_acosh if o == "Acosh" else w) for o, f in HYPERBOLIC.items()]
    _check_gradients(cases, xs, rng)


def test_qdq_quantized_mlp_matches_onnxruntime() -> None:
    """A model as ONNX Runtime's static quantizer writes it (QDQ): uint8 activations through
    QuantizeLinear -> DequantizeLinear, int8 weights behind a per-channel DequantizeLinear
    (axis 1), an int16 pair per tensor; predict equals ONNX Runtime's (the same rounding of
    halves to even, the clip to the type's range), also for inputs far outside the scale."""
    rng = np.random.default_rng(11)
    w1 = rng.integers(-127, 128, (4, 8)).astype(np.int8)
    w2 = rng.integers(-127, 128, (8, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(w1, "w1q"),
        numpy_helper.from_array(w2, "w2q"),
        _init("w1s", rng.uniform(0.001, 0.01, 8), np.float32),
        _init("w2s", rng.uniform(0.001, 0.01, 3), np.float32),
        _init("w1z", np.zeros(8), np.int8),
        _init("w2z", np.zeros(3), np.int8),
        _init("xs", 0.02, np.float32),
        _init("xz", 128, np.uint8),
        _init("hs", 0.0005, np.float32),
        _init("hz", 0, np.int16),
        _init("b1", rng.standard_normal(8), np.float32),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w1q", "w1s", "w1z"], ["w1"], axis=1),
        helper.make_node("MatMul", ["xd", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("QuantizeLinear", ["r1", "hs", "hz"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "hs", "hz"], ["hd"]),
        helper.make_node("DequantizeLinear", ["w2q", "w2s", "w2z"], ["w2"], axis=1),
        helper.make_node("MatMul", ["hd", "w2"], ["y"]),
    ]
    m = _model(nodes, [_vi("x", ["N", 4])], [_vi("y", None), _vi("xq", None, 2)], inits, 21)
    x = rng.standard_normal((64, 4)).astype(np.float32) * 2
    x[0] = [0.01, -0.01, 0.03, -0.03]  # halves of the scale: ties to even
    x[1] = [100.0, -100.0, 2.55, -2.57]  # beyond uint8's range: clipped
    opts = ort.SessionOptions()  # ONNX's meaning, not ONNX Runtime's integer kernels
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})
    got = gc.from_onnx(m).compile().predict(x)
    np.testing.assert_array_equal(got["xq"], want[1].astype(np.float32))
    np.testing.assert_allclose(got["y"], want[0], rtol=1e-5, atol=1e-6)


def _group_norm_ref(x: np.ndarray, scale, bias, groups: int, eps: float) -> np.ndarray:
    """float64 GroupNormalization: groups of C / G consecutive channels, normalized per sample
    over their channels and positions; scale and bias [C] (one value per channel)."""
    n, c = x.shape[:2]
    g = x.astype(np.float64).reshape(n, groups, -1)
    normed = (g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + eps)
    normed = normed.reshape(n, c, -1)
    return (normed * np.reshape(scale, (c, 1)) + np.reshape(bias, (c, 1))).reshape(x.shape)


@pytest.mark.parametrize("opset", [18, 20, 21])
def test_group_normalization_at_opset_18_and_21_against_numpy_and_ort(opset) -> None:
    # GroupNormalization-18 (opsets 18 to 20): scale and bias per group. onnx.checker refuses it
    # as deprecated, so graphc refused the file ('as ONNX Runtime's loader would refuse it'),
    # but ONNX Runtime runs it (its onnx build drops the deprecation: onnxruntime issue 24560,
    # onnx PR 7939). From opset 21 scale and bias are per channel.
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 6, 2, 5)) * 3 + 1).astype(np.float32)
    per = 3 if opset < 21 else 6
    scale, bias = (rng.standard_normal(per).astype(np.float32) for _ in range(2))
    node = helper.make_node(
        "GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3, epsilon=1e-3
    )
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(bias, "b")]
    m = _model([node], [_vi("x", ["N", 6, 2, 5])], [_vi("y", None)], inits, opset=opset)
    got = gc.from_onnx(m).compile().predict(x)
    reps = 6 // per  # a per-group value covers its group's 2 channels
    ref = _group_norm_ref(x, np.repeat(scale, reps), np.repeat(bias, reps), 3, 1e-3)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, _ort(m, {"x": x})[0], rtol=1e-4, atol=1e-5)
    # the other version's scale shape is refused naming what this opset takes
    wrong = [numpy_helper.from_array(np.ones(9 - per, np.float32), k) for k in ("s", "b")]
    bad = _model([node], [_vi("x", ["N", 6, 2, 5])], [_vi("y", None)], wrong, opset=opset)
    with pytest.raises(OnnxError, match=rf"scale \[{9 - per}\] must be \[{per}\]"):
        gc.from_onnx(bad)


def test_tile_of_a_weight_by_the_batch_size_as_torch_exports_repeat() -> None:
    # torch's t.repeat(x.shape[0], 1, 1) of a [1, 1, C] class token (ViT), as its dynamo
    # exporter writes it: Shape(x)[:1] ++ [1, 1] -> Tile. The repeats hold N: int('N') raised
    # ValueError and the file was refused as 'malformed node'. Values against ONNX Runtime; the
    # token's gradient (the sum over the N copies) against central differences.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    cls = rng.standard_normal((1, 1, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], end=1),
        helper.make_node("Concat", ["s", "ones"], ["reps"], axis=0),
        helper.make_node("Tile", ["cls", "reps"], ["c"]),
        helper.make_node("Concat", ["c", "x"], ["y"], axis=1),
    ]
    inits = [_init("ones", [1, 1]), numpy_helper.from_array(cls, "cls")]
    m = _model(nodes, [_vi("x", ["N", 4, 6])], [_vi("y", None)], inits, opset=18)
    imp = gc.from_onnx(m)
    np.testing.assert_allclose(imp.compile().predict(x), _ort(m, {"x": x})[0], rtol=0, atol=0)
    weights = rng.standard_normal((5, 6)).astype(np.float32)
    loss = gc.sum(gc.mul(imp.outputs[0], gc.constant(weights)))
    model = gc.compile(imp.outputs, loss, gc.SGD(lr=0.1), name="tile_n")
    got = model.gradients(x)[imp.params["cls"].name]

    def forward(c):
        y = np.concatenate([np.repeat(c, len(x), axis=0), x.astype(np.float64)], axis=1)
        return np.sum(y * weights)

    np.testing.assert_allclose(got, numeric_grad(forward, [cls.astype(np.float64)], 0), rtol=1e-4)
    # N times an axis of another size would merge N with it: refused naming the repeats
    big = [_init("ones", [1, 1]), numpy_helper.from_array(np.ones((2, 1, 6), np.float32), "cls")]
    bad = _model(nodes, [_vi("x", ["N", 4, 6])], [_vi("y", None)], big, opset=18)
    with pytest.raises(OnnxError, match=r"repeats \['N', 1, 1\].*first axis of size 1"):
        gc.from_onnx(bad)


def test_onehot_of_an_integer_graph_input_as_torch_exports_one_hot() -> None:
    # torch's F.one_hot(labels, C) (TorchScript exporter): OneHot reads an int64 graph input.
    # The input was refused ('used as an integer'): OneHot's indices were no use an integer
    # input may have. Against ONNX Runtime: negative indices count from depth, ones outside
    # -depth .. depth - 1 (and one past 2**24, which float32 rounds) give a row of off values.
    nodes = [
        helper.make_node("OneHot", ["ids", "depth", "values"], ["oh"], axis=1),
        helper.make_node("ReduceSum", ["oh", "ax"], ["y"], keepdims=0),
    ]
    inits = [
        _init("depth", 5),
        numpy_helper.from_array(np.array([0.5, 2.0], np.float32), "values"),
        _init("ax", [2]),
    ]
    m = _model(nodes, [_vi("ids", ["N", 4], TensorProto.INT64)], [_vi("y", None)], inits, 13)
    ids = np.array([[0, 4, -1, -5], [5, -6, 3, 2**40 + 1], [2, 2, 2, -2]], np.int64)
    got = gc.from_onnx(m).compile().predict(ids)
    np.testing.assert_array_equal(got, _ort(m, {"ids": ids})[0])


def test_an_integer_input_as_where_condition_as_torch_exports_masked_fill() -> None:
    # torch's scores.masked_fill(ids == 0, -1e9) with ids an int64 input: Equal(ids, 0) is
    # Where's condition. The walk over the input's uses followed Where's float output as if it
    # were integer-valued and refused the input at the Softmax after it ('used as an integer').
    rng = np.random.default_rng(6)
    table = rng.standard_normal((20, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("ReduceSum", ["emb", "ax"], ["scores"], keepdims=0),
        helper.make_node("Equal", ["ids", "zero"], ["pad"]),
        helper.make_node("Where", ["pad", "big", "scores"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["y"], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        _init("ax", [2]),
        _init("zero", 0),
        numpy_helper.from_array(np.array(-1e9, np.float32), "big"),
    ]
    m = _model(nodes, [_vi("ids", ["N", 4], TensorProto.INT64)], [_vi("y", None)], inits, 13)
    ids = np.array([[3, 5, 0, 0], [1, 2, 3, 4], [0, 19, 0, 0]], np.int64)
    got = gc.from_onnx(m).compile().predict(ids)
    np.testing.assert_allclose(got, _ort(m, {"ids": ids})[0], rtol=1e-6, atol=1e-7)


def test_tensor_index_as_torch_dynamo_exports_it() -> None:
    # torch's dynamo exporter writes x[:, idx] and x[..., idx] (idx a constant tensor) as
    # Transpose (the indexed axis first) -> GatherND of indices [K, 1] -> Transpose back. The
    # first Transpose moves the batch axis N and was refused; the three compute a Gather.
    # Repeated and negative indices; one Transpose read by two GatherNDs; against ONNX Runtime.
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0, 2]),
        helper.make_node("GatherND", ["t1", "i1"], ["g1"]),
        helper.make_node("Transpose", ["g1"], ["a"], perm=[1, 0, 2]),  # x[:, [3, 0, 3, -1]]
        helper.make_node("Transpose", ["x"], ["t2"], perm=[2, 0, 1]),
        helper.make_node("GatherND", ["t2", "i2"], ["g2"]),
        helper.make_node("Transpose", ["g2"], ["b"], perm=[1, 2, 0]),  # x[..., [2, -4]]
        helper.make_node("GatherND", ["t2", "i1"], ["g3"]),
        helper.make_node("Transpose", ["g3"], ["c"], perm=[1, 2, 0]),  # x[..., [3, 0, 3, -1]]
    ]
    inits = [_init("i1", [[3], [0], [3], [-1]]), _init("i2", [[2], [-4]])]
    outs = [_vi(k, None) for k in "abc"]
    m = _model(nodes, [_vi("x", ["N", 5, 4])], outs, inits, opset=18)
    got = gc.from_onnx(m).compile().predict(x)
    for k, ref in zip("abc", _ort(m, {"x": x})):
        np.testing.assert_array_equal(got[k], ref)
    # permutations that do not compose to the identity keep N moved: still refused
    other = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0, 2]),
        helper.make_node("GatherND", ["t1", "i1"], ["y"]),
    ]
    bad = _model(other, [_vi("x", ["N", 5, 4])], [_vi("y", None)], inits[:1], opset=18)
    with pytest.raises(OnnxError, match="moves the batch dimension N"):
        gc.from_onnx(bad)


@pytest.mark.parametrize("custom", ["t1", "gather_nd"])
def test_tensor_index_pattern_of_another_domain_is_refused_as_onnx_runtime(custom) -> None:
    # Transpose -> GatherND -> Transpose where the first Transpose or the GatherND is an op of
    # another domain (same name, any meaning): ONNX Runtime refuses the file (no such op);
    # the rewrite into Gather took it for torch's x[:, idx] and imported it
    x = np.random.default_rng(9).standard_normal((3, 5, 4)).astype(np.float32)
    dom = {k: "org.example" if k == custom else "" for k in ("t1", "gather_nd")}
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0, 2], domain=dom["t1"]),
        helper.make_node("GatherND", ["t1", "i1"], ["g1"], domain=dom["gather_nd"]),
        helper.make_node("Transpose", ["g1"], ["a"], perm=[1, 0, 2]),
    ]
    m = _model(nodes, [_vi("x", ["N", 5, 4])], [_vi("a", None)], [_init("i1", [[3], [0]])])
    m.opset_import.append(helper.make_opsetid("org.example", 1))
    with pytest.raises(Exception, match="not a registered function/op"):
        _ort(m, {"x": x})
    with pytest.raises(OnnxError, match=r"org\.example:Transpose is not supported|moves the batch"):
        gc.from_onnx(m)


def test_integer_ids_moved_summed_and_broadcast_as_torch_exports_text_models() -> None:
    # Patterns of torch text models (both exporters) that refused their int64 ids before:
    # ids[:, 0] and ids[:, ::2] (Gather / Slice of the ids themselves), lengths =
    # (ids != 0).sum(1) used as a divisor (ReduceSum of integers), and position ids
    # arange(T).expand_as(ids) looked up in a table (a constant broadcast to N rows, whose
    # range the bounds prover did not know). Against ONNX Runtime; the ids' checked range
    # (the tables' rows, which also keeps the sum of raw ids exact) refuses others by name.
    rng = np.random.default_rng(9)
    table = rng.standard_normal((20, 3)).astype(np.float32)
    pos_table = rng.standard_normal((4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["ids", "zero"], ["first"], axis=1),  # ids[:, 0]
        helper.make_node("Gather", ["table", "first"], ["e_first"], axis=0),
        helper.make_node("Slice", ["ids", "s0", "s9", "s1", "s2"], ["even"]),  # ids[:, ::2]
        helper.make_node("Gather", ["table", "even"], ["e_even"], axis=0),
        helper.make_node("ReduceSum", ["e_even", "s1"], ["e_even_sum"], keepdims=0),
        helper.make_node("Not", ["pad"], ["keep"]),
        helper.make_node("Equal", ["ids", "zero"], ["pad"]),
        helper.make_node("Cast", ["keep"], ["keep_i"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["keep_i", "s1"], ["lengths"], keepdims=1),
        helper.make_node("Cast", ["lengths"], ["lengths_f"], to=TensorProto.FLOAT),
        helper.make_node("Shape", ["ids"], ["shape"]),
        helper.make_node("Expand", ["positions", "shape"], ["pos"]),
        helper.make_node("Gather", ["pos_table", "pos"], ["e_pos"], axis=0),
        helper.make_node("ReduceSum", ["e_pos", "s1"], ["e_pos_sum"], keepdims=0),
        helper.make_node("Add", ["e_first", "e_even_sum"], ["a"]),
        helper.make_node("Add", ["a", "e_pos_sum"], ["b"]),
        helper.make_node("Div", ["b", "lengths_f"], ["y"]),
        helper.make_node("ReduceSum", ["ids", "s1"], ["total"], keepdims=1),
        helper.make_node("Cast", ["total"], ["total_f"], to=TensorProto.FLOAT),
    ]
    nodes.insert(5, nodes.pop(6))  # Equal before Not
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(pos_table, "pos_table"),
        _init("zero", 0),
        _init("s0", [0]),
        _init("s9", [9]),
        _init("s1", [1]),
        _init("s2", [2]),
        _init("positions", [[0, 1, 2, 3]]),
    ]
    outs = [_vi("y", None), _vi("total_f", None)]
    m = _model(nodes, [_vi("ids", ["N", 4], TensorProto.INT64)], outs, inits, 13)
    model = gc.from_onnx(m).compile()
    ids = np.array([[3, 5, 0, 0], [1, 2, 3, 4], [19, -1, 0, 7]], np.int64)
    got = model.predict(ids)
    for k, ref in zip(("y", "total_f"), _ort(m, {"ids": ids})):
        np.testing.assert_allclose(got[k], ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(gc.ArgumentError, match="'ids'"):
        model.predict(np.array([[1, 2, 3, 20]], np.int64))  # no row of the table


def test_dims_fixes_a_symbolic_sequence_length_as_onnx_runtime_overrides() -> None:
    # torch's dynamic_axes={"x": {0: "batch", 1: "seq"}}: every text model exported with a
    # dynamic sequence length was refused ('dimension 1 is symbolic'); dims= gives its size,
    # as ONNX Runtime's free dimension overrides. The size flows into shape computations.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["t"], axis=0),
        helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["x", "one_1d"], ["total"], keepdims=0),
        helper.make_node("Div", ["total", "tf"], ["y"]),
    ]
    inits = [_init("one", 1), _init("one_1d", [1])]
    m = _model(nodes, [_vi("x", ["batch", "seq", 3])], [_vi("y", None)], inits, 13)
    x = np.random.default_rng(10).standard_normal((2, 5, 3)).astype(np.float32)
    with pytest.raises(OnnxError, match=r"dimension 1 is symbolic \(seq\).*dims=\{'seq': size\}"):
        gc.from_onnx(m)
    got = gc.from_onnx(m, dims={"seq": 5}).compile().predict(x)
    np.testing.assert_allclose(got, _ort(m, {"x": x})[0], rtol=1e-6)
    with pytest.raises(OnnxError, match=r"dims names \['sek'\].*\['batch', 'seq'\]"):
        gc.from_onnx(m, dims={"seq": 5, "sek": 2})
    with pytest.raises(OnnxError, match="the batch N stays symbolic"):
        gc.from_onnx(m, dims={"batch": 2, "seq": 5})
    with pytest.raises(OnnxError, match="int >= 1"):
        gc.from_onnx(m, dims={"seq": 0})


def test_two_axis_index_grid_as_torch_dynamo_exports_nearest_exact_resize() -> None:
    # F.interpolate(x, size=(3, 4), mode="nearest-exact") by torch's dynamo exporter:
    # Transpose [2, 3, 0, 1] -> GatherND of a grid [3, 4, 2] (the outer product of the row and
    # column indices) -> Transpose back; it was refused (the Transpose moves N). A grid that is
    # no outer product stays refused.
    x = np.random.default_rng(11).standard_normal((3, 2, 5, 6)).astype(np.float32)
    ih, iw = np.array([0, 2, 3]), np.array([0, 2, 3, 5])
    idx = np.stack(np.broadcast_arrays(ih[:, None], iw[None, :]), axis=-1)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[2, 3, 0, 1]),
        helper.make_node("GatherND", ["t", "idx"], ["g"]),
        helper.make_node("Transpose", ["g"], ["y"], perm=[2, 3, 0, 1]),
    ]
    m = _model(nodes, [_vi("x", ["N", 2, 5, 6])], [_vi("y", None)], [_init("idx", idx)], 18)
    got = gc.from_onnx(m).compile().predict(x)
    np.testing.assert_array_equal(got, _ort(m, {"x": x})[0])
    np.testing.assert_array_equal(got, x[:, :, ih[:, None], iw[None, :]])
    scattered = idx.copy()
    scattered[1, 2] = [4, 1]  # not an outer product
    bad = _model(nodes, [_vi("x", ["N", 2, 5, 6])], [_vi("y", None)], [_init("idx", scattered)], 18)
    with pytest.raises(OnnxError, match="moves the batch dimension N"):
        gc.from_onnx(bad)


@pytest.mark.parametrize(("axis", "largest", "k"), [(-1, 1, 3), (1, 0, 2), (2, 1, 6)])
def test_topk_against_onnxruntime_with_ties_and_infinities(axis, largest, k) -> None:
    # torch.topk exports TopK (both exporters); it was not supported. Ties go to the lower
    # index first and +-inf are ranked like other values, as ONNX Runtime; the indices are
    # proven in 0 .. size - 1, so they may look rows up.
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    x[0, 0, :3] = 0.5
    x[1, 2, 1:4] = -0.25
    x[2, 1, 0] = x[2, 3, 0] = x[2, 0, 5]  # ties along axis 1 too
    table = rng.standard_normal((6, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Add", ["x", "m"], ["z"]),
        helper.make_node("TopK", ["z", "k"], ["v", "i"], axis=axis, largest=largest),
        helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
    ]
    outs = [_vi("v", None), _vi("i_f", None)]
    if axis != 1:
        nodes += [
            helper.make_node("Gather", ["table", "i"], ["g"], axis=0),
            helper.make_node("ReduceSum", ["g", "ax"], ["rows"], keepdims=0),
        ]
        outs.append(_vi("rows", None))
    mask = np.array([0, -np.inf, np.inf, 0, -np.inf, 0], np.float32)
    inits = [
        numpy_helper.from_array(mask, "m"),
        _init("k", [k]),
        numpy_helper.from_array(table, "table"),
        _init("ax", [-1]),
    ]
    m = _model(nodes, [_vi("x", ["N", 4, 6])], outs, inits, 13)
    got = gc.from_onnx(m).compile().predict(x)
    for vi, ref in zip(outs, _ort(m, {"x": x})):
        np.testing.assert_allclose(got[vi.name], ref, rtol=1e-6, atol=1e-6)


def test_topk_of_nan_against_onnxruntime_and_its_indices_look_rows_up() -> None:
    # NaN ranks above every number (first when largest, last when smallest) and NaNs tie,
    # as ONNX Runtime orders them; NaN compared false with all, so a NaN and the maximum
    # shared rank 0: the value was NaN plus the maximum and the index the sum of their
    # positions (5 on an axis of 4), which the bounds prover took for a row of the table
    x = np.array([[1, 2, 3, np.nan], [np.nan, 5, np.nan, 4], [-np.inf, np.nan, 1, 1]], np.float32)
    table = np.arange(8, dtype=np.float32).reshape(4, 2)
    nodes, outs = [], []
    for largest in (1, 0):
        v, i, f, g = (f"{n}{largest}" for n in ("v", "i", "f", "g"))
        nodes += [
            helper.make_node("TopK", ["x", "k"], [v, i], largest=largest),
            helper.make_node("Cast", [i], [f], to=TensorProto.FLOAT),
            helper.make_node("Gather", ["table", i], [g], axis=0),
        ]
        outs += [_vi(v, None), _vi(f, None), _vi(g, None)]
    inits = [_init("k", [3]), numpy_helper.from_array(table, "table")]
    m = _model(nodes, [_vi("x", ["N", 4])], outs, inits, 13)
    got = gc.from_onnx(m).compile().predict(x)
    for vi, ref in zip(outs, _ort(m, {"x": x})):
        np.testing.assert_array_equal(got[vi.name], ref, err_msg=vi.name)


def test_maxpool_and_averagepool_against_onnxruntime() -> None:
    # MaxPool / AveragePool were unsupported (torch's adaptive_max_pool1d and max_pool1d
    # export as MaxPool). The corners of the trackers' reports: ceil_mode (a last window that
    # would start in the end padding is dropped), pads, dilations, auto_pad SAME_*,
    # count_include_pad with ceil_mode; one model, one compile, against ONNX Runtime.
    x = np.random.default_rng(13).standard_normal((2, 3, 7)).astype(np.float32)
    cases = [
        ("MaxPool", dict(kernel_shape=[7])),  # torch's adaptive_max_pool1d(x, 1)
        ("MaxPool", dict(kernel_shape=[3], strides=[3], ceil_mode=1, pads=[1, 1])),
        ("MaxPool", dict(kernel_shape=[4], strides=[2], auto_pad="SAME_UPPER")),
        ("AveragePool", dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
        (
            "AveragePool",
            dict(kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1, count_include_pad=1),
        ),
        ("AveragePool", dict(kernel_shape=[2], dilations=[3], pads=[1, 1])),
    ]
    nodes = [helper.make_node(op, ["x"], [f"y{i}"], **at) for i, (op, at) in enumerate(cases)]
    outs = [_vi(f"y{i}", None) for i in range(len(cases))]
    m = _model(nodes, [_vi("x", ["N", 3, 7])], outs, [], 19)
    got = gc.from_onnx(m).compile().predict(x)
    for vi, ref in zip(outs, _ort(m, {"x": x})):
        np.testing.assert_allclose(got[vi.name], ref, rtol=1e-6, atol=1e-6, err_msg=vi.name)
    # the Indices as a graph output: int64, (n * C + c) * P + p (graphc/onnx_import_pool.py)
    indices = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2])
    i64 = helper.make_tensor_value_info("i", TensorProto.INT64, None)
    both = _model([indices], [_vi("x", ["N", 3, 7])], [_vi("y", None), i64], [], 19)
    got = gc.from_onnx(both).compile().predict(x)
    want = _ort(both, {"x": x})
    assert got["i"].dtype == np.int64
    np.testing.assert_array_equal(got["i"], want[1])


def test_pooling_with_auto_pad_valid_and_ceil_mode_against_onnxruntime() -> None:
    # auto_pad VALID (no padding) takes ceil_mode as ONNX Runtime does: a last window may
    # reach past the input (5 elements, windows of 2 by 2: 3 outputs, the last of 1 element);
    # graphc ignored ceil_mode there and gave 2 (another output shape)
    x = np.random.default_rng(14).standard_normal((2, 3, 5, 7)).astype(np.float32)
    cases = [
        ("MaxPool", dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1)),
        ("AveragePool", dict(kernel_shape=[2, 3], strides=[2, 3], ceil_mode=1)),
        (
            "AveragePool",
            dict(kernel_shape=[3, 2], strides=[3, 2], ceil_mode=1, count_include_pad=1),
        ),
        ("MaxPool", dict(kernel_shape=[2, 3], strides=[2, 2])),
    ]
    nodes = [
        helper.make_node(op, ["x"], [f"y{i}"], auto_pad="VALID", **at)
        for i, (op, at) in enumerate(cases)
    ]
    outs = [_vi(f"y{i}", None) for i in range(len(cases))]
    m = _model(nodes, [_vi("x", ["N", 3, 5, 7])], outs, [], 19)
    got = gc.from_onnx(m).compile().predict(x)
    for vi, ref in zip(outs, _ort(m, {"x": x})):
        assert got[vi.name].shape == ref.shape, vi.name
        np.testing.assert_allclose(got[vi.name], ref, rtol=1e-6, atol=1e-6, err_msg=vi.name)


def test_averagepool_of_infinities_beside_the_padding_against_onnxruntime() -> None:
    # A window reaching into the padding (pads, ceil_mode; counted or not) whose elements in
    # the input hold +-inf averages to +-inf; the padding's positions were masked as
    # 0 * (an element of the window), NaN for an infinite one
    x = np.array([[[np.inf, 1, 2, 3, -np.inf]], [[-np.inf, 5, 6, 7, np.inf]]], np.float32)
    cases = [
        dict(kernel_shape=[3], pads=[1, 1]),
        dict(kernel_shape=[3], pads=[1, 1], count_include_pad=1),
        dict(kernel_shape=[2], strides=[2], ceil_mode=1),
    ]
    nodes = [helper.make_node("AveragePool", ["x"], [f"y{i}"], **at) for i, at in enumerate(cases)]
    outs = [_vi(f"y{i}", None) for i in range(len(cases))]
    m = _model(nodes, [_vi("x", ["N", 1, 5])], outs, [], 19)
    got = gc.from_onnx(m).compile().predict(x)
    for vi, ref in zip(outs, _ort(m, {"x": x})):
        assert np.isinf(ref).any()
        np.testing.assert_allclose(got[vi.name], ref, rtol=1e-6, err_msg=vi.name)


def test_gather_elements_of_computed_and_input_indices_against_onnxruntime() -> None:
    # torch.gather / take_along_dim export GatherElements, which was unsupported: indices
    # from TopK (here of another value) and from an int64 input (negative ones counting from
    # the end; one outside -S .. S-1 refused by name, where ONNX Runtime raises).
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    ids = rng.integers(-6, 6, (3, 4, 2)).astype(np.int64)
    nodes = [
        helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=2),
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("GatherElements", ["x2", "i"], ["a"], axis=2),
        helper.make_node("GatherElements", ["x", "ids"], ["b"], axis=2),
    ]
    inits = [_init("k", [3]), numpy_helper.from_array(np.array(2, np.float32), "two")]
    ins = [_vi("x", ["N", 4, 6]), _vi("ids", ["N", 4, 2], TensorProto.INT64)]
    m = _model(nodes, ins, [_vi("a", None), _vi("b", None)], inits, 13)
    model = gc.from_onnx(m).compile()
    got = model.predict({"x": x, "ids": ids})
    for k, ref in zip("ab", _ort(m, {"x": x, "ids": ids})):
        np.testing.assert_array_equal(got[k], ref)
    with pytest.raises(gc.ArgumentError, match="'ids'"):
        model.predict({"x": x, "ids": np.full((3, 4, 2), 6, np.int64)})


def test_graphc_compile_dim_option_fixes_a_symbolic_dimension(tmp_path) -> None:
    # graphc compile model.onnx had no way to give a symbolic sequence length: --dim NAME=SIZE
    # passes from_onnx's dims (checked before anything is compiled)
    from graphc.export import parse_dims
    from graphc.modelspec import resolve

    nodes = [helper.make_node("ReduceSum", ["x", "one"], ["y"], keepdims=0)]
    m = _model(nodes, [_vi("x", ["batch", "seq", 3])], [_vi("y", None)], [_init("one", [1])], 13)
    path = str(tmp_path / "seqsum.onnx")
    onnx.save(m, path)
    with pytest.raises(OnnxError, match="--dim seq=SIZE"):
        resolve(path)
    spec = resolve(path, dims=parse_dims(["seq=5"], path))
    assert spec.outputs[0].shape == ("N", 3)
    for bad in (["seq"], ["seq=0"], ["=3"], ["seq=x"]):
        with pytest.raises(gc.ArgumentError, match="NAME=SIZE"):
            parse_dims(bad, path)
    with pytest.raises(gc.ArgumentError, match="only an ONNX MODEL"):
        parse_dims(["seq=5"], "models.py:net")
    assert parse_dims([], path) is None


def test_topk_of_a_long_axis_picks_in_rounds_against_onnxruntime() -> None:
    # TopK compared every pair along the axis: 1000 classes took 4 MB per row (4 GB and 13 s
    # to predict 1024 rows); past MAX_TOPK_PAIRS it picks K rounds in linear memory. Ties,
    # +-inf and NaN (first for largest=1, last for largest=0), against ONNX Runtime.
    from graphc.onnx_import import MAX_TOPK_PAIRS

    size = 200
    assert size * size > MAX_TOPK_PAIRS
    rng = np.random.default_rng(15)
    x = np.round(rng.standard_normal((3, size)) * 2).astype(np.float32)  # many ties
    x[0, [3, 50]], x[1, [7, 150]] = np.inf, -np.inf
    x[2, [9, 10, 11]] = -1.0  # their square roots are NaN
    nodes = [
        helper.make_node("Sqrt", ["x"], ["s"]),  # NaN where x < 0
        helper.make_node("Add", ["s", "x"], ["z"]),
        helper.make_node("TopK", ["z", "k"], ["v1", "i1"], largest=1),
        helper.make_node("TopK", ["z", "k"], ["v0", "i0"], largest=0),
        helper.make_node("Cast", ["i1"], ["j1"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["i0"], ["j0"], to=TensorProto.FLOAT),
    ]
    outs = [_vi(k, None) for k in ("v1", "j1", "v0", "j0")]
    m = _model(nodes, [_vi("x", ["N", size])], outs, [_init("k", [5])], 13)
    model = gc.from_onnx(m).compile()
    got = model.predict(x)
    for vi, ref in zip(outs, _ort(m, {"x": x})):
        np.testing.assert_array_equal(got[vi.name], ref, err_msg=vi.name)
    # the arena per row holds values of the axis, not of its pairs (160 KB per row before)
    assert max(s.arena_row for s in model.program.schedules.values()) < size * size


def test_strided_picks_are_one_slice_and_reshape_not_one_slice_per_element() -> None:
    # x[:, ::2] of 1000 elements and MaxPool(kernel 2, stride 2) over them composed one slice
    # per picked element (1000 slices for the MaxPool: a 47 s compile); an arithmetic
    # progression of indices is now one slice, a reshape to [..., m, step] and its first
    # column. Values against ONNX Runtime; the graph stays small.
    x = np.random.default_rng(16).standard_normal((2, 3, 1000)).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["x", "s1", "end", "ax", "two"], ["a"]),  # x[..., 1::2]
        helper.make_node("MaxPool", ["x"], ["b"], kernel_shape=[2], strides=[2]),
        helper.make_node("AveragePool", ["x"], ["c"], kernel_shape=[3], strides=[3], pads=[1, 1]),
    ]
    inits = [_init("s1", [1]), _init("end", [1000]), _init("ax", [2]), _init("two", [2])]
    outs = [_vi(k, None) for k in "abc"]
    m = _model(nodes, [_vi("x", ["N", 3, 1000])], outs, inits, 13)
    model = gc.from_onnx(m).compile()
    got = model.predict(x)
    for vi, ref in zip(outs, _ort(m, {"x": x})):
        np.testing.assert_allclose(got[vi.name], ref, rtol=1e-6, atol=1e-6, err_msg=vi.name)
    assert len(model.program.inference.nodes) < 100


def test_same_auto_pad_with_dilations_follows_onnxruntime_in_pooling_and_conv() -> None:
    """auto_pad SAME_UPPER / SAME_LOWER with dilations: graphc followed the ONNX spec's
    formula (pads from the dilated kernel, ceil(size / stride) outputs), ONNX Runtime pads
    from the undilated kernel (7 elements, kernel 3, dilation 2: 5 outputs, not 7), and its
    Conv refuses the combination. A judgement: ONNX Runtime runs the files users bring, so
    pooling now gives its shapes and values (MaxPool at 17, AveragePool with dilations at 19,
    1-D and 2-D, both SAME modes, ceil_mode); both take their pads from one rule
    (_same_pads), which without dilations is the spec's (Conv: the next test)."""
    x = np.random.default_rng(15).standard_normal((2, 2, 9, 8)).astype(np.float32)
    cases = [
        ("MaxPool", dict(kernel_shape=[3, 2], dilations=[2, 3])),
        ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 3], dilations=[2, 2])),
        ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 1], dilations=[3, 1], ceil_mode=1)),
        ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 2], dilations=[2, 2])),
        ("AveragePool", dict(kernel_shape=[3, 1], dilations=[3, 1], count_include_pad=1)),
        # a kernel below the stride: a negative total pad (the end's crops the last window)
        ("AveragePool", dict(kernel_shape=[2, 1], strides=[3, 1], dilations=[2, 1])),
        ("MaxPool", dict(kernel_shape=[2, 1], strides=[3, 1], dilations=[2, 1])),
        ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2])),  # no dilation: the spec's
    ]
    nodes, outs = [], []
    for auto in ("SAME_UPPER", "SAME_LOWER"):
        for i, (op, at) in enumerate(cases):
            nodes.append(helper.make_node(op, ["x"], [f"{auto}{i}"], auto_pad=auto, **at))
            outs.append(_vi(f"{auto}{i}", None))
    m = _model(nodes, [_vi("x", ["N", 2, 9, 8])], outs, [], 19)
    got = gc.from_onnx(m).compile().predict(x)
    for vi, ref in zip(outs, _ort(m, {"x": x})):
        assert got[vi.name].shape == ref.shape, vi.name
        np.testing.assert_allclose(got[vi.name], ref, rtol=1e-6, atol=1e-6, err_msg=vi.name)


def test_conv_same_auto_pad_with_dilations_follows_the_onnx_spec() -> None:
    """Conv with auto_pad SAME_* and dilations, which ONNX Runtime refuses: the ONNX spec's
    pads, from the dilated span (k - 1) d + 1, total (ceil(D / s) - 1) s + span - D, the odd
    one at the end (UPPER) or the beginning (LOWER). torch.onnx.export writes nn.Conv1d/2d(...,
    padding='same', dilation=d) this way (a dilated TCN / WaveNet layer); it was refused.
    Reference: ONNX Runtime on the same Conv with those pads written explicitly."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 2, 9, 8)).astype(np.float32)
    w = numpy_helper.from_array(rng.standard_normal((3, 2, 4, 3)).astype(np.float32), "w")
    for auto, dil, strides, pads in [
        ("SAME_UPPER", [1, 2], [1, 1], [1, 2, 2, 2]),  # torch's padding='same', kernel 4 x 3
        ("SAME_UPPER", [2, 3], [1, 1], [3, 3, 3, 3]),
        ("SAME_LOWER", [3, 2], [1, 1], [5, 2, 4, 2]),
        ("SAME_UPPER", [2, 2], [2, 3], [3, 1, 3, 2]),  # 5 x 3 outputs
    ]:
        at = dict(dilations=dil, strides=strides)
        node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=auto, **at)
        m = _model([node], [_vi("x", ["N", 2, 9, 8])], [_vi("y", None)], [w], 17)
        ref = helper.make_node("Conv", ["x", "w"], ["y"], pads=pads, **at)
        mref = _model([ref], [_vi("x", ["N", 2, 9, 8])], [_vi("y", None)], [w], 17)
        want = _ort(mref, {"x": x})[0]
        np.testing.assert_allclose(
            gc.from_onnx(m).compile().predict(x), want, rtol=1e-5, atol=1e-5, err_msg=auto
        )


def test_batch_norm_in_training_mode_before_opset_14_is_refused() -> None:
    """BatchNormalization before opset 14 is in training mode when its statistics are asked
    for as outputs (torch.onnx.export(..., training=TrainingMode.PRESERVE) of a model in train
    mode): ONNX Runtime normalizes with the batch's mean and variance. graphc computed the
    inference form silently (max difference 0.9 on a torch export); now refused by name."""
    c = 3
    inits = [
        numpy_helper.from_array(np.full(c, v, np.float32), n)
        for n, v in (("s", 1.0), ("b", 0.0), ("m", 0.5), ("v", 2.0))
    ]
    outs = ["y", "rm", "rv", "sm", "sv"]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], outs, name="bn3")
    m = _model([node], [_vi("x", ["N", c, 4])], [_vi("y", None)], inits, 9)
    with pytest.raises(OnnxError, match=r"node 0 'bn3' .*outputs \['rm', 'rv', 'sm', 'sv'\]"):
        gc.from_onnx(m)
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    m = _model([node], [_vi("x", ["N", c, 4])], [_vi("y", None)], inits, 9)
    x = np.random.default_rng(3).standard_normal((2, c, 4)).astype(np.float32)
    np.testing.assert_allclose(
        gc.from_onnx(m).compile().predict(x), _ort(m, {"x": x})[0], rtol=1e-5, atol=1e-6
    )


def test_cast_like_of_a_known_value_stays_known() -> None:
    """CastLike(-inf, q) as a Pad's constant value (ONNX's Attention function body pads its
    mask so): the value is known at import whatever the like operand is (before: 'input 2 must
    be known at import time ... computed from the graph's inputs', so 18 of ONNX's Attention
    node tests were refused); a trainable initializer CastLike'd stays a weight."""
    m = _model(
        [
            helper.make_node("CastLike", ["ninf", "x"], ["c"]),
            helper.make_node("Pad", ["x", "pads", "c"], ["p"]),
            helper.make_node("Softmax", ["p"], ["y"], axis=-1),
            helper.make_node("CastLike", ["w", "x"], ["wc"]),
            helper.make_node("Mul", ["y", "wc"], ["z"]),
        ],
        [_vi("x", ["N", 3])],
        [_vi("z", None)],
        [
            _init("ninf", -np.inf, np.float32),
            _init("pads", [0, 1, 0, 2]),
            _init("w", np.linspace(0.5, 2.0, 6), np.float32),
        ],
    )
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    imp = gc.from_onnx(m, trainable={"w"})
    assert len(imp.params) == 1
    got = imp.compile().predict({"x": x})
    np.testing.assert_allclose(got, _ort(m, {"x": x})[0], rtol=1e-6, atol=1e-7)


def test_cast_like_to_an_integer_type_truncates() -> None:
    """CastLike of a computed float to the type of an int64 graph input, of an int32 and a bool
    initializer: truncated toward zero (negative values too) and, for bool, x != 0, as ONNX
    Runtime. Before, an integer-typed graph value as the like operand was taken for float32
    and the value passed unchanged (CastLike(2.5 * 3, ids) gave 7.5, ONNX Runtime 7)."""
    m = _model(
        [
            helper.make_node("Mul", ["x", "three"], ["x3"]),
            helper.make_node("CastLike", ["x3", "ids"], ["a"]),
            helper.make_node("CastLike", ["x3", "i32"], ["b"]),
            helper.make_node("CastLike", ["x", "flag"], ["c"]),
            *[helper.make_node("Cast", [v], [v + "f"], to=1) for v in ("a", "b", "c", "ids")],
            helper.make_node("Sum", ["af", "bf", "cf", "idsf"], ["s"]),
            helper.make_node("Concat", ["af", "bf", "cf", "s"], ["y"], axis=1),
        ],
        [_vi("x", ["N", 4]), _vi("ids", ["N", 4], TensorProto.INT64)],
        [_vi("y", None)],
        [
            _init("three", 3.0, np.float32),
            _init("i32", [0], np.int32),
            _init("flag", [True], np.bool_),
        ],
    )
    x = np.array([[0.7, -1.6, 2.5, 0.0], [-0.2, 333.4, -0.0, 1e-3]], np.float32)
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int64)
    got = gc.from_onnx(m).compile().predict({"x": x, "ids": ids})
    np.testing.assert_array_equal(got, _ort(m, {"x": x, "ids": ids})[0])


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumprod_matches_the_reference_and_its_gradient(exclusive, reverse) -> None:
    """CumProd (opset 26) along axis 1 of [N, 5] (zeros, a negative, an inf included) against
    ONNX Runtime (1.32; onnx.reference where an ONNX Runtime has no CumProd kernel), and d/dw
    of sum(r * CumProd(x * w)) against central differences of a float64 numpy formula
    (before: 'operator CumProd is not supported')."""
    if not onnx.defs.has("CumProd"):
        pytest.skip(f"onnx {onnx.__version__} has no CumProd (opset 26)")
    from onnx.reference import ReferenceEvaluator

    m = _model(
        [
            helper.make_node("Mul", ["x", "w"], ["xw"]),
            helper.make_node("CumProd", ["xw", "ax"], ["y"], exclusive=exclusive, reverse=reverse),
        ],
        [_vi("x", ["N", 5])],
        [_vi("y", None)],
        [_init("ax", 1), _init("w", [1.5, -0.5, 2.0, 0.75, 1.25], np.float32)],
        26,
    )
    x = np.array([[0.5, -2.0, 1.5, 3.0, 0.25], [1.0, 0.0, -1.0, np.inf, 2.0]], np.float32)
    with np.errstate(invalid="ignore"):  # (0 * inf in the reference's products: NaN)
        want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    try:
        want = _ort(m, {"x": x})[0]
    except Exception:  # (no CumProd kernel in this ONNX Runtime)
        pass
    imp = gc.from_onnx(m, trainable={"w"})
    np.testing.assert_array_equal(imp.compile().predict({"x": x}), want)
    x = x[:1].astype(np.float64)
    r = np.array([[0.3, -1.2, 0.7, 2.0, -0.4]])

    def f(w) -> float:
        y = np.flip(x * w, 1) if reverse else x * w
        c = np.cumprod(y, axis=1)
        if exclusive:
            c = np.concatenate([np.ones((1, 1)), c[:, :-1]], axis=1)
        return float((r * (np.flip(c, 1) if reverse else c)).sum())

    (y,) = imp.outputs
    grads = imp.compile(gc.sum(y * gc.constant(r.astype(np.float32))), gc.SGD(0.1)).gradients(
        {"x": x.astype(np.float32)}
    )
    w0 = np.array([1.5, -0.5, 2.0, 0.75, 1.25])
    np.testing.assert_allclose(grads["w"], numeric_grad(f, [w0], 0), rtol=1e-4, atol=1e-5)
