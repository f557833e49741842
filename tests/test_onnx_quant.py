"""ONNX import of quantized models (graphc/onnx_import_quant.py) against ONNX Runtime: models
quantized here by onnxruntime.quantization (QOperator format, static and dynamic, per tensor
and per channel, uint8 / int8), and hand-built QLinear nodes whose integer accumulation passes
2**24 (the split path), checked exactly against ONNX Runtime and an int64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
quant = pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto as TP
from onnx import helper
from onnx import numpy_helper as nh

from graphc.ir.errors import OnnxError
from graphc.onnx_import import from_onnx


def _model(nodes, inits, x_shape, y_shape, opset=17):
    g = helper.make_graph(
        nodes,
        "q",
        [helper.make_tensor_value_info("x", TP.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TP.FLOAT, y_shape)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _mlp(rng, gemm: bool):
    k, h, o = 20, 32, 10
    w1 = nh.from_array((rng.normal(size=(k, h)) * 0.3).astype(np.float32), "w1")
    b1 = nh.from_array((rng.normal(size=h) * 0.1).astype(np.float32), "b1")
    w2 = nh.from_array((rng.normal(size=(h, o)) * 0.3).astype(np.float32), "w2")
    b2 = nh.from_array((rng.normal(size=o) * 0.1).astype(np.float32), "b2")
    mk = helper.make_node
    if gemm:
        nodes = [mk("Gemm", ["x", "w1", "b1"], ["h"]), mk("Relu", ["h"], ["r"])]
        nodes += [mk("Gemm", ["r", "w2", "b2"], ["z"]), mk("Sigmoid", ["z"], ["y"])]
    else:
        nodes = [mk("MatMul", ["x", "w1"], ["m"]), mk("Add", ["m", "b1"], ["h"])]
        nodes += [mk("Relu", ["h"], ["r"]), mk("MatMul", ["r", "w2"], ["m2"])]
        nodes += [mk("Add", ["m2", "b2"], ["z"]), mk("Sigmoid", ["z"], ["y"])]
    return _model(nodes, [w1, b1, w2, b2], ["N", k], ["N", o]), (k,)


def _cnn(rng):
    def w(name, *shape, s=0.3):
        return nh.from_array((rng.normal(size=shape) * s).astype(np.float32), name)

    mk = helper.make_node
    nodes = [
        mk("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        mk("Relu", ["c1"], ["r1"]),
        mk("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        mk("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=2),
        mk("LeakyRelu", ["c2"], ["r2"], alpha=0.1),
        mk("Add", ["r2", "p1"], ["s"]),
        mk("Mul", ["s", "r2"], ["s2"]),
        mk("AveragePool", ["s2"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        mk("Concat", ["ap", "ap"], ["cc"], axis=1),
        mk("GlobalAveragePool", ["cc"], ["g"]),
        mk("Flatten", ["g"], ["f"]),
        mk("Gemm", ["f", "wf", "bf"], ["z"]),
        mk("Sigmoid", ["z"], ["y"]),
    ]
    inits = [w("w1", 8, 3, 3, 3), w("b1", 8, s=0.1), w("w2", 8, 4, 3, 3, s=0.2)]
    inits += [w("b2", 8, s=0.1), w("wf", 16, 5), w("bf", 5, s=0.1)]
    return _model(nodes, inits, ["N", 3, 8, 8], ["N", 5]), (3, 8, 8)


class _Reader(quant.CalibrationDataReader):
    def __init__(self, rng, shape):
        self.it = iter([{"x": rng.normal(size=(4, *shape)).astype(np.float32)} for _ in range(3)])

    def get_next(self):
        return next(self.it, None)


def _ort(path, x, optimize=True):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})


U8, S8 = quant.QuantType.QUInt8, quant.QuantType.QInt8


@pytest.mark.parametrize(
    "net, per_channel, act, wt, reduce_range",
    [
        ("mlp", False, U8, S8, False),
        ("mlp", True, S8, S8, True),
        ("gemm", True, U8, S8, False),
        ("cnn", False, U8, U8, False),
        ("cnn", True, S8, S8, False),
    ],
)
def test_static_qoperator_models_match_onnxruntime_exactly(
    tmp_path, net, per_channel, act, wt, reduce_range
) -> None:
    """quantize_static's QOperator format (QLinearMatMul, QLinearConv, QGemm, QLinearAdd,
    QLinearMul, QLinearLeakyRelu, QLinearSigmoid, QLinearAveragePool, QLinearConcat,
    QLinearGlobalAveragePool): every output equals ONNX Runtime's bit for bit (the quantized
    intermediates, dequantized at the end, agree)."""
    ops = _static_matches_ort(
        tmp_path, 3, net, quant.QuantFormat.QOperator,
        per_channel=per_channel, activation_type=act, weight_type=wt, reduce_range=reduce_range,
    )  # fmt: skip
    assert ops & {"QLinearMatMul", "QLinearConv", "QGemm"}, ops


def _static_matches_ort(tmp_path, seed, net, fmt, optimize=True, atol=0.0, **options):
    """Quantize the net with quantize_static (fmt, options), run it through ONNX Runtime's
    default session (``optimize``, else with its optimizations off) and graphc on 64 rows,
    assert the outputs are equal (within ``atol``); the op types."""
    rng = np.random.default_rng(seed)
    model, shape = _cnn(rng) if net == "cnn" else _mlp(rng, net == "gemm")
    src, dst = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    onnx.save(model, src)
    quant.quantize_static(src, dst, _Reader(rng, shape), quant_format=fmt, **options)
    x = (rng.normal(size=(64, *shape)) * 1.5).astype(np.float32)
    want = _ort(dst, x, optimize)[0]
    got = from_onnx(dst, trainable=False).compile().predict(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    return {n.op_type for n in onnx.load(dst).graph.node}


@pytest.mark.parametrize("net, per_channel", [("gemm", True), ("cnn", False)])
def test_dynamic_quantization_matches_onnxruntime(tmp_path, net, per_channel) -> None:
    """quantize_dynamic (DynamicQuantizeLinear over the whole batch, MatMulInteger,
    ConvInteger, then float Cast and Mul): ONNX Runtime's outputs within float32 rounding of
    the final float steps (an integer off by one would move an output by a whole scale step,
    ~1e-3 here)."""
    rng = np.random.default_rng(4)
    model, shape = _cnn(rng) if net == "cnn" else _mlp(rng, net == "gemm")
    src, dst = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    onnx.save(model, src)
    quant.quantize_dynamic(src, dst, per_channel=per_channel, weight_type=S8)
    ops = {n.op_type for n in onnx.load(dst).graph.node}
    assert "DynamicQuantizeLinear" in ops and ops & {"MatMulInteger", "ConvInteger"}, ops
    x = rng.normal(size=(16, *shape)).astype(np.float32)
    want = _ort(dst, x)[0]
    got = from_onnx(dst, trainable=False).compile().predict(x)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    # the model as ONNX Runtime's optimizer saves it: DynamicQuantizeMatMul (com.microsoft)
    so = ort.SessionOptions()
    so.optimized_model_filepath = opt = str(tmp_path / "opt.onnx")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    assert "DynamicQuantizeMatMul" in {n.op_type for n in onnx.load(opt).graph.node}
    got = from_onnx(opt, trainable=False).compile().predict(x)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


def test_matmul_integer_to_float_matches_onnxruntime(tmp_path) -> None:
    """MatMulIntegerToFloat (com.microsoft) of a quantized input and int8 weights with
    per-column scales and zero points and a float bias: ONNX Runtime's outputs within float32
    rounding of its epilogue (acc * (a_scale * b_scale) + bias)."""
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, size=(24, 7)).astype(np.int8)
    inits = [
        nh.from_array(np.float32(0.04), "sa"),
        nh.from_array(np.uint8(131), "za"),
        nh.from_array(w, "w"),
        nh.from_array(rng.uniform(0.005, 0.02, 7).astype(np.float32), "sw"),
        nh.from_array(rng.integers(-3, 3, 7).astype(np.int8), "zw"),
        nh.from_array(rng.normal(size=7).astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["xq"]),
        helper.make_node(
            "MatMulIntegerToFloat", ["xq", "w", "sa", "sw", "za", "zw", "bias"], ["y"],
            domain="com.microsoft",
        ),
    ]  # fmt: skip
    m = _model(nodes, inits, ["N", 24], ["N", 7])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    x = (rng.normal(size=(9, 24)) * 2).astype(np.float32)
    want = _ort(path, x)[0]
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def _qlinear_matmul_model(w, zw, a_scale, w_scale, y_scale, za, zy, a_type):
    k = w.shape[0]
    mk = helper.make_node
    inits = [
        nh.from_array(np.float32(a_scale), "sa"),
        nh.from_array(np.array(za, a_type), "za"),
        nh.from_array(w, "w"),
        nh.from_array(np.asarray(w_scale, np.float32), "sw"),
        nh.from_array(np.asarray(zw, w.dtype), "zw"),
        nh.from_array(np.float32(y_scale), "sy"),
        nh.from_array(np.array(zy, np.uint8), "zy"),
    ]
    nodes = [
        mk("QuantizeLinear", ["x", "sa", "za"], ["xq"]),
        mk("QLinearMatMul", ["xq", "sa", "za", "w", "sw", "zw", "sy", "zy"], ["yq"]),
        mk("DequantizeLinear", ["yq", "sy", "zy"], ["y"]),
    ]
    return _model(nodes, inits, ["N", k], ["N", w.shape[1]])


def test_qlinear_matmul_past_2_24_is_exact(tmp_path) -> None:
    """K = 1100 full-range uint8 activations times int8 weights: the accumulation reaches ~3.6e7
    > 2**24 (the split path). The quantized result equals ONNX Runtime's and the spec's, from
    the exact int64 accumulation (numpy), for every element."""
    rng = np.random.default_rng(5)
    k, n = 1100, 6
    w = rng.integers(-128, 128, size=(k, n)).astype(np.int8)
    w[:, 0] = 127  # a column whose sum is past 2**24 at full-range inputs
    zw = np.int8(0)
    sa, sw, za, zy = 0.01, 0.02, 3, 128
    x = (rng.integers(0, 256, size=(8, k)) - za).astype(np.float32) * np.float32(sa)
    x[0] = (255 - za) * np.float32(sa)  # all at the top of the range
    acc = (np.rint(x / np.float32(sa)) + za - za).astype(np.int64) @ w.astype(np.int64)
    assert np.abs(acc).max() > 2**24
    sy = float(np.abs(acc).max() * sa * sw / 100.0)
    path = str(tmp_path / "m.onnx")
    onnx.save(_qlinear_matmul_model(w, zw, sa, sw, sy, za, zy, np.uint8), path)
    want = _ort(path, x)[0]
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got, want)
    m = (np.float32(sa) * np.float32(sw)) / np.float32(sy)
    q = np.clip(np.rint(acc.astype(np.float32) * m) + zy, 0, 255)
    np.testing.assert_array_equal(got, ((q - zy) * np.float32(sy)).astype(np.float32))


def test_accumulation_past_what_float32_sums_exactly_is_refused() -> None:
    """K = 10000 full-range operands (~3.2e8, past even the split path's 2**28): refused,
    naming the node and the bound, before anything compiles."""
    rng = np.random.default_rng(6)
    w = np.full((10000, 2), -128, np.int8)
    m = _qlinear_matmul_model(w, np.int8(0), 0.01, 0.02, 1.0, 0, 128, np.uint8)
    m.graph.node[1].name = "big"
    with pytest.raises(OnnxError, match=r"'big' \(QLinearMatMul.*past what graphc sums"):
        from_onnx(m, trainable=False)
    del rng


def test_qlinear_conv_per_channel_int8_with_bias_group_and_padding(tmp_path) -> None:
    """QLinearConv with int8 activations (zero point -5), per-channel int8 weights and zero
    points 0, int32 bias, group 2, strides and asymmetric pads: equal to ONNX Runtime."""
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, size=(6, 2, 3, 3)).astype(np.int8)
    bias = rng.integers(-3000, 3000, size=6).astype(np.int32)
    sw = (rng.uniform(0.5, 2.0, size=6) * 0.01).astype(np.float32)
    mk = helper.make_node
    inits = [
        nh.from_array(np.float32(0.05), "sx"),
        nh.from_array(np.int8(-5), "zx"),
        nh.from_array(w, "w"),
        nh.from_array(sw, "sw"),
        nh.from_array(np.zeros(6, np.int8), "zw"),
        nh.from_array(np.float32(0.9), "sy"),
        nh.from_array(np.int8(3), "zy"),
        nh.from_array(bias, "b"),
    ]
    nodes = [
        mk("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        mk(
            "QLinearConv",
            ["xq", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"],
            ["yq"],
            group=2,
            strides=[2, 1],
            pads=[1, 0, 2, 1],
        ),
        mk("DequantizeLinear", ["yq", "sy", "zy"], ["y"]),
    ]
    model = _model(nodes, inits, ["N", 4, 9, 7], ["N", 6, 5, 7])
    path = str(tmp_path / "c.onnx")
    onnx.save(model, path)
    x = (rng.normal(size=(5, 4, 9, 7)) * 3).astype(np.float32)
    want = _ort(path, x)[0]
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "net, per_channel, act, wt",
    [("cnn", False, U8, S8), ("cnn", True, U8, S8), ("mlp", True, U8, S8), ("gemm", True, U8, U8)],
)
def test_static_qdq_models_match_onnxruntime_default_session_exactly(
    tmp_path, net, per_channel, act, wt
) -> None:
    """quantize_static's QDQ format: ONNX Runtime's default session fuses the QDQ groups into
    its integer kernels (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearMul, the
    pools), whose rounding differs from the float definition by a quantization step here
    and there; graphc fuses the same groups (onnx_import_quant.qdq_as_qoperator) and equals
    the default session bit for bit."""
    ops = _static_matches_ort(
        tmp_path, 8, net, quant.QuantFormat.QDQ,
        per_channel=per_channel, activation_type=act, weight_type=wt,
    )  # fmt: skip
    assert "QLinearConv" not in ops and "DequantizeLinear" in ops, ops


def test_com_microsoft_elementwise_ops_over_every_uint8_value() -> None:
    """QLinearSigmoid and QLinearLeakyRelu over all 256 inputs, QLinearAdd / QLinearMul /
    QLinearConcat of random pairs, QLinearAveragePool (3x3, pads, stride 2) and
    QLinearGlobalAveragePool, for 4 random sets of scales and zero points, in one model
    reading uint8 graph inputs: equal to ONNX Runtime everywhere."""
    rng = np.random.default_rng(9)
    ms = "com.microsoft"
    mk = helper.make_node
    one = ["a", "sx", "zx", "sy", "zy"]
    two = ["a", "sx", "zx", "b", "sb", "zb", "sy", "zy"]
    pool = ["img", "sx", "zx", "sy", "zy"]
    for _ in range(4):
        nodes = [
            mk("QLinearSigmoid", one, ["sig"], domain=ms),
            mk("QLinearLeakyRelu", one, ["lrelu"], domain=ms, alpha=float(rng.uniform(0, 0.5))),
            mk("QLinearAdd", two, ["add"], domain=ms),
            mk("QLinearMul", two, ["mul"], domain=ms),
            mk("QLinearConcat", ["sy", "zy", "a", "sx", "zx", "b", "sb", "zb"], ["cat"],
               domain=ms, axis=1),
            mk("QLinearAveragePool", pool, ["ap"], domain=ms, kernel_shape=[3, 3],
               pads=[1, 1, 1, 1], strides=[2, 2]),
            mk("QLinearGlobalAveragePool", pool, ["gap"], domain=ms),
        ]  # fmt: skip
        sx, sy, sb = (np.float32(v) for v in rng.uniform(0.002, 0.2, 3))
        zx, zy, zb = (np.uint8(v) for v in rng.integers(0, 256, 3))
        names = ("sx", "zx", "sy", "zy", "sb", "zb")
        inits = [nh.from_array(np.array(v), k) for k, v in zip(names, (sx, zx, sy, zy, sb, zb))]
        feeds = {
            "a": np.tile(np.arange(256, dtype=np.uint8), (2, 1)),
            "b": rng.integers(0, 256, size=(2, 256)).astype(np.uint8),
            "img": rng.integers(0, 256, size=(2, 3, 7, 7)).astype(np.uint8),
        }
        ins = [
            helper.make_tensor_value_info(k, TP.UINT8, ["N", *v.shape[1:]])
            for k, v in feeds.items()
        ]
        outs = [helper.make_tensor_value_info(n.output[0], TP.UINT8, None) for n in nodes]
        m = helper.make_model(
            helper.make_graph(nodes, "u8", ins, outs, inits),
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)],
        )
        m.ir_version = 8
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)
        got = from_onnx(m, trainable=False).compile().predict(feeds)
        for n, w in zip(nodes, want):
            g = np.asarray(got[n.output[0]])
            np.testing.assert_array_equal(g.reshape(w.shape), w, err_msg=n.op_type)


def test_blocked_quantize_and_dequantize_match_onnxruntime(tmp_path) -> None:
    """Opset 21's block_size: int8 weights [10, 5] dequantized in blocks of 4 along axis 0
    (scales and zero points [3, 5], the last block short) before a MatMul, and a
    QuantizeLinear -> DequantizeLinear pair of a fixed-shape input [4, 10] in blocks of 3 along
    axis 1 (scales [4, 4]): equal to ONNX Runtime. Refused before ('block_size' not
    supported)."""
    rng = np.random.default_rng(10)
    w = rng.integers(-128, 128, size=(10, 5)).astype(np.int8)
    ws = rng.uniform(0.01, 0.05, size=(3, 5)).astype(np.float32)
    wz = rng.integers(-5, 5, size=(3, 5)).astype(np.int8)
    xs = rng.uniform(0.02, 0.1, size=(4, 4)).astype(np.float32)
    xz = rng.integers(100, 150, size=(4, 4)).astype(np.uint8)
    mk = helper.make_node
    inits = [nh.from_array(a, k) for k, a in (("w", w), ("ws", ws), ("wz", wz))]
    inits += [nh.from_array(a, k) for k, a in (("xs", xs), ("xz", xz))]
    nodes = [
        mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"], axis=1, block_size=3),
        mk("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], axis=1, block_size=3),
        mk("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0, block_size=4),
        mk("MatMul", ["xd", "wd"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "blocked",
        [helper.make_tensor_value_info("x", TP.FLOAT, [4, 10])],
        [helper.make_tensor_value_info("y", TP.FLOAT, [4, 5])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    path = str(tmp_path / "b.onnx")
    onnx.save(m, path)
    x = (rng.normal(size=(4, 10)) * 3).astype(np.float32)
    want = _ort(path, x, optimize=False)[0]  # (its fusion MatMulIntegerToFloat refuses blocks)
    rep = from_onnx(path, trainable=False).compile()
    got = rep._run("infer", {"x": x}, 1)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_qat_style_qdq_with_float_weights_and_relu_matches_onnxruntime(tmp_path) -> None:
    """A QDQ model as quantization-aware training exports write it: float weights behind
    QuantizeLinear -> DequantizeLinear (per channel, axis 0), an int32 bias behind a
    DequantizeLinear, Conv -> Relu -> QuantizeLinear (zero point 0), then a MatMul group.
    ONNX Runtime folds Q(W), drops the Relu (ReluQuantFusion) and fuses QLinearConv; graphc
    does the same and equals its default session bit for bit."""
    rng = np.random.default_rng(12)
    # scales whose requantization multiplier x_scale * w_scale / h_scale is exactly 1/2: the
    # odd accumulations are ties, which the integer kernel rounds to even and the float
    # definition (inexact products of the dequantized values) either way
    ws = np.full(8, 0.013, np.float32)
    w = (rng.integers(-3, 4, size=(8, 3, 3, 3)) * ws[:, None, None, None]).astype(np.float32)
    xs = np.float32(0.1)
    hs = np.float32(xs * ws[0]) * np.float32(2)
    bias = rng.integers(-20, 20, 8).astype(np.int32)
    w2 = rng.integers(-128, 128, size=(8 * 6 * 6, 5)).astype(np.int8)
    mk = helper.make_node
    inits = [
        nh.from_array(w, "w"),
        nh.from_array(ws, "ws"),
        nh.from_array(np.zeros(8, np.int8), "wz"),
        nh.from_array(bias, "b"),
        nh.from_array((xs * ws).astype(np.float32), "bs"),
        nh.from_array(np.zeros(8, np.int32), "bz"),
        nh.from_array(xs, "xs"),
        nh.from_array(np.uint8(128), "xz"),
        nh.from_array(hs, "hs"),
        nh.from_array(np.uint8(0), "hz"),
        nh.from_array(w2, "w2"),
        nh.from_array(np.float32(0.01), "w2s"),
        nh.from_array(np.int8(0), "w2z"),
        nh.from_array(np.float32(0.05), "ys"),
        nh.from_array(np.uint8(120), "yz"),
        nh.from_array(np.array([-1, 8 * 6 * 6], np.int64), "flat"),
    ]
    nodes = [
        mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        mk("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        mk("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
        mk("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        mk("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
        mk("Conv", ["xd", "wd", "bd"], ["c"]),
        mk("Relu", ["c"], ["r"]),
        mk("QuantizeLinear", ["r", "hs", "hz"], ["hq"]),
        mk("DequantizeLinear", ["hq", "hs", "hz"], ["hd"]),
        mk("Reshape", ["hd", "flat"], ["f"]),
        mk("QuantizeLinear", ["f", "hs", "hz"], ["fq"]),
        mk("DequantizeLinear", ["fq", "hs", "hz"], ["fd"]),
        mk("DequantizeLinear", ["w2", "w2s", "w2z"], ["w2d"]),
        mk("MatMul", ["fd", "w2d"], ["m"]),
        mk("QuantizeLinear", ["m", "ys", "yz"], ["yq"]),
        mk("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    model = _model(nodes, inits, ["N", 3, 8, 8], ["N", 5])
    model.graph.output.append(helper.make_tensor_value_info("hd", TP.FLOAT, ["N", 8, 6, 6]))
    path = str(tmp_path / "qat.onnx")
    onnx.save(model, path)
    x = (rng.normal(size=(64, 3, 8, 8)) * 1.5).astype(np.float32)
    want = _ort(path, x)
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got["y"], want[0])
    np.testing.assert_array_equal(got["hd"], want[1])


def test_quantize_linear_with_computed_scale_and_zero_point(tmp_path) -> None:
    """QuantizeLinear / DequantizeLinear whose scale and uint8 zero point the graph computes
    (DynamicQuantizeLinear written out as its function body: min, max, divide, round, cast):
    equal to ONNX Runtime. Refused before (the zero point had to be known at import time)."""
    mk = helper.make_node
    inits = [nh.from_array(np.float32(0), "zero"), nh.from_array(np.float32(255), "qmax")]
    nodes = [
        mk("ReduceMin", ["x"], ["mn"], keepdims=0),
        mk("ReduceMax", ["x"], ["mx"], keepdims=0),
        mk("Min", ["mn", "zero"], ["lo"]),
        mk("Max", ["mx", "zero"], ["hi"]),
        mk("Sub", ["hi", "lo"], ["d"]),
        mk("Div", ["d", "qmax"], ["s"]),
        mk("Div", ["lo", "s"], ["t"]),
        mk("Sub", ["zero", "t"], ["z0"]),
        mk("Clip", ["z0", "zero", "qmax"], ["z1"]),
        mk("Round", ["z1"], ["z2"]),
        mk("Cast", ["z2"], ["zp"], to=TP.UINT8),
        mk("QuantizeLinear", ["x", "s", "zp"], ["q"]),
        mk("DequantizeLinear", ["q", "s", "zp"], ["y"]),
    ]
    path = str(tmp_path / "d.onnx")
    onnx.save(_model(nodes, inits, ["N", 10], ["N", 10]), path)
    x = np.random.default_rng(13).normal(size=(7, 10)).astype(np.float32)
    want = _ort(path, x)[0]
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got, want)


def test_qdq_with_uint16_activations_follows_the_definition(tmp_path) -> None:
    """quantize_static QDQ with uint16 activations (uint16 zero-point initializers, refused
    before as a data type graphc does not compute with): ONNX Runtime with its optimizations
    off (the definition) within one step of the output's 16-bit quantization (1 / 65535:
    the float MatMul and Sigmoid between the Q/DQ pairs round in another order, which moves
    a value at a rounding boundary by a step; 3 of 640 here). ONNX Runtime's default session
    differs from its own definition by up to 0.01 on this MLP (its optimizer changes 16-bit
    QDQ groups)."""
    ops = _static_matches_ort(
        tmp_path, 14, "mlp", quant.QuantFormat.QDQ, optimize=False, atol=1.6e-5,
        activation_type=quant.QuantType.QUInt16, weight_type=S8,
    )  # fmt: skip
    assert "QuantizeLinear" in ops


def _attention(rng, t=6, d=16):
    """A one-head self-attention block [N, t, d] -> [N, 4]: projections, q @ k^T of two
    computed values, a scale, Softmax, @ v, a residual Add, a mean over t, a Gemm."""

    def w(name, *shape):
        return nh.from_array((rng.normal(size=shape) * 0.3).astype(np.float32), name)

    mk = helper.make_node
    nodes = [
        mk("MatMul", ["x", "wq"], ["q"]),
        mk("MatMul", ["x", "wk"], ["k"]),
        mk("MatMul", ["x", "wv"], ["v"]),
        mk("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        mk("MatMul", ["q", "kt"], ["s"]),
        mk("Mul", ["s", "sc"], ["s2"]),
        mk("Softmax", ["s2"], ["p"], axis=-1),
        mk("MatMul", ["p", "v"], ["o"]),
        mk("Add", ["o", "x"], ["r"]),
        mk("ReduceMean", ["r"], ["m"], axes=[1], keepdims=0),
        mk("Gemm", ["m", "wo", "bo"], ["y"]),
    ]
    inits = [w("wq", d, d), w("wk", d, d), w("wv", d, d), w("wo", d, 4), w("bo", 4)]
    inits.append(nh.from_array(np.float32(0.25), "sc"))
    return _model(nodes, inits, ["N", t, d], ["N", 4]), (t, d)


@pytest.mark.parametrize("fmt, act", [("QOperator", U8), ("QDQ", U8), ("QOperator", S8)])
def test_quantized_attention_with_qlinear_softmax_matches_onnxruntime(tmp_path, fmt, act) -> None:
    """A self-attention block quantized by quantize_static: QOperator writes QLinearSoftmax
    (com.microsoft) and QLinearMatMul of two computed operands; ONNX Runtime's default
    session fuses the QDQ form into the same. QLinearSoftmax's table arithmetic (exp in
    double of (x - max + shift) * scale, the zero point after rounding) differs from the float
    Softmax by more than rounding (0.025 at the outputs before): equal bit for bit now."""
    rng = np.random.default_rng(15)
    model, shape = _attention(rng)
    src, dst = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    onnx.save(model, src)
    quant.quantize_static(
        src, dst, _Reader(rng, shape), quant_format=getattr(quant.QuantFormat, fmt),
        activation_type=act, weight_type=S8,
    )  # fmt: skip
    x = rng.normal(size=(32, *shape)).astype(np.float32)
    want = _ort(dst, x)[0]
    got = from_onnx(dst, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got, want)


def test_qlinear_average_pool_windows_past_the_end_divide_as_onnxruntime() -> None:
    """QLinearAveragePool with ceil_mode=1 (windows running past the end pad) and
    count_include_pad 0 / 1, 1-D, 2-D and 3-D, uint8 and int8, with and without pads, and the
    same pool written as DequantizeLinear -> AveragePool -> QuantizeLinear (which graphc fuses
    as ONNX Runtime's default session does): equal to ONNX Runtime everywhere. ORT's kernel
    divides by the kernel's size with count_include_pad=1 even where the window holds fewer
    positions of input and pads; before, graphc divided as the float AveragePool (a 2x2
    window with one element of the input: 4x apart)."""
    rng = np.random.default_rng(21)
    ms = "com.microsoft"
    mk = helper.make_node
    cases = [  # (spatial size, kernel, stride, pads)
        ((7,), [2], [2], [0, 0]),
        ((5, 6), [3, 2], [2, 2], [1, 0, 1, 1]),
        ((6, 6), [3, 3], [2, 2], [1, 1, 1, 1]),
        ((3, 5, 4), [2, 2, 3], [2, 2, 2], [0, 1, 0, 0, 0, 1]),
    ]
    for elem, dt in ((TP.UINT8, np.uint8), (TP.INT8, np.int8)):
        lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
        sx, sy = np.float32(0.05), np.float32(0.031)
        zx, zy = dt(rng.integers(lo, hi)), dt(rng.integers(lo, hi))
        inits = [nh.from_array(np.array(v), k) for k, v in zip(("sx", "zx", "sy", "zy"), (sx, zx, sy, zy))]  # fmt: skip
        nodes, feeds, outs = [], {}, []
        for i, (size, ks, st, pads) in enumerate(cases):
            feeds[f"x{i}"] = rng.integers(lo, hi, size=(2, 2, *size), endpoint=True).astype(dt)
            for cip in (0, 1):
                att = dict(kernel_shape=ks, strides=st, pads=pads, ceil_mode=1)
                att["count_include_pad"] = cip
                q, d, f = f"q{i}_{cip}", f"d{i}_{cip}", f"f{i}_{cip}"
                io = [f"x{i}", "sx", "zx", "sy", "zy"]
                nodes.append(mk("QLinearAveragePool", io, [q], domain=ms, **att))
                nodes.append(mk("DequantizeLinear", [f"x{i}", "sx", "zx"], [d]))
                nodes.append(mk("AveragePool", [d], [f], **att))
                nodes.append(mk("QuantizeLinear", [f, "sy", "zy"], [f"qdq{i}_{cip}"]))
                outs += [q, f"qdq{i}_{cip}"]
        ins = [
            helper.make_tensor_value_info(k, elem, ["N", *v.shape[1:]]) for k, v in feeds.items()
        ]
        vouts = [helper.make_tensor_value_info(o, elem, None) for o in outs]
        m = helper.make_model(
            helper.make_graph(nodes, "pool", ins, vouts, inits),
            opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid(ms, 1)],
        )
        m.ir_version = 9
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        want = dict(zip(outs, sess.run(None, feeds)))
        got = from_onnx(m, trainable=False).compile().predict(feeds)
        for o in outs:
            if o.startswith("qdq") and dt is np.int8:
                continue  # int8 QDQ groups keep the float definition (ORT's is CPU-dependent)
            g = np.asarray(got[o])
            np.testing.assert_array_equal(g.reshape(want[o].shape), want[o], err_msg=f"{dt} {o}")


def test_qlinear_matmul_of_two_computed_operands_past_2_24(tmp_path) -> None:
    """QLinearMatMul of a quantized [N, 4, 600] by its own transpose (two computed operands,
    K = 600, full-range uint8: the accumulation reaches ~3.9e7 > 2**24, as attention's
    probabilities @ values at a long sequence): the computed operand is split 16 hi + lo at
    run time; equal to ONNX Runtime. Refused before; K = 5000 still is, naming the node."""
    mk = helper.make_node
    inits = [
        nh.from_array(np.float32(0.02), "sx"),
        nh.from_array(np.uint8(0), "zx"),
        nh.from_array(np.float32(70.0), "sy"),
        nh.from_array(np.uint8(7), "zy"),
    ]
    nodes = [
        mk("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        mk("Transpose", ["xq"], ["xt"], perm=[0, 2, 1]),
        mk("QLinearMatMul", ["xq", "sx", "zx", "xt", "sx", "zx", "sy", "zy"], ["yq"], name="mm"),
        mk("DequantizeLinear", ["yq", "sy", "zy"], ["y"]),
    ]
    path = str(tmp_path / "t.onnx")
    onnx.save(_model(nodes, inits, ["N", 4, 600], ["N", 4, 4]), path)
    rng = np.random.default_rng(16)
    x = rng.uniform(0, 5.2, size=(6, 4, 600)).astype(np.float32)
    x[0] = 5.1  # 255 everywhere: the largest accumulation
    want = _ort(path, x)[0]
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got, want)
    big = _model(nodes, inits, ["N", 4, 5000], ["N", 4, 4])
    with pytest.raises(OnnxError, match=r"'mm' \(QLinearMatMul.*K=5000"):
        from_onnx(big, trainable=False)


def test_int8_qlinear_softmax_saturates_as_onnxruntime() -> None:
    """int8 QLinearSoftmax (refused before) at the usual output zero point -128 and scale
    1/256: a row with one dominant value gives q = 128 at it, stored as 127 (ONNX Runtime
    1.32); the other rows of random values equal ONNX Runtime too."""
    rng = np.random.default_rng(17)
    inits = [
        nh.from_array(np.float32(0.3), "xs"),
        nh.from_array(np.int8(5), "xz"),
        nh.from_array(np.float32(1 / 256), "ys"),
        nh.from_array(np.int8(-128), "yz"),
    ]
    node = helper.make_node(
        "QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft",
        axis=-1, opset=13,
    )  # fmt: skip
    g = helper.make_graph(
        [node],
        "s",
        [helper.make_tensor_value_info("x", TP.INT8, ["N", 3, 9])],
        [helper.make_tensor_value_info("y", TP.INT8, ["N", 3, 9])],
        inits,
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    m.ir_version = 8
    x = rng.integers(-128, 128, size=(4, 3, 9)).astype(np.int8)
    x[0, 0] = -128
    x[0, 0, 0] = 127
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    assert want[0, 0, 0] == 127
    got = from_onnx(m, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got, want)


def test_torch_style_qdq_constants_fuse_as_onnxruntime(tmp_path) -> None:
    """torch.onnx.export of an eager-mode quantized model writes its QDQ constants as Constant
    nodes, a Cast between QuantizeLinear and DequantizeLinear and the bias zero point as
    Cast(ConstantOfShape): ONNX Runtime folds them and fuses QLinearConv; so does graphc
    (qdq_as_qoperator reads through Cast / Identity / ConstantOfShape of constants). Scales
    make the requantization multiplier exactly 1/2 (ties at every odd accumulation, where
    the float definition rounds either way): bit-equal to ORT's default session."""
    rng = np.random.default_rng(18)
    ws = np.full(6, 0.013, np.float32)
    xs = np.float32(0.1)
    hs = np.float32(xs * ws[0]) * np.float32(2)

    def const(name, a):
        return helper.make_node("Constant", [], [name], value=nh.from_array(np.asarray(a), name))

    mk = helper.make_node
    nodes = [
        const("xs", xs),
        const("xz", np.uint8(128)),
        const("w", rng.integers(-3, 4, size=(6, 3, 3, 3)).astype(np.int8)),
        const("ws", ws),
        const("wz", np.zeros(6, np.int8)),
        const("b", rng.integers(-20, 20, 6).astype(np.int32)),
        const("bs", (xs * ws).astype(np.float32)),
        const("bshape", np.array([6], np.int64)),
        mk("ConstantOfShape", ["bshape"], ["bz0"]),
        mk("Cast", ["bz0"], ["bz"], to=TP.INT32),
        const("hs", hs),
        const("hz", np.uint8(0)),
        mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        mk("Cast", ["xq"], ["xc"], to=TP.UINT8),
        mk("DequantizeLinear", ["xc", "xs", "xz"], ["xd"]),
        mk("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        mk("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
        mk("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]),
        mk("Relu", ["c"], ["r"]),
        mk("QuantizeLinear", ["r", "hs", "hz"], ["hq"]),
        mk("DequantizeLinear", ["hq", "hs", "hz"], ["y"]),
    ]
    path = str(tmp_path / "t.onnx")
    onnx.save(_model(nodes, [], ["N", 3, 7, 7], ["N", 6, 7, 7]), path)
    x = (rng.normal(size=(32, 3, 7, 7)) * 1.5).astype(np.float32)
    want = _ort(path, x)[0]
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("opset, axis", [(11, 1), (11, -1), (13, 1)])
def test_qdq_softmax_at_old_and_new_opsets_matches_onnxruntime(tmp_path, opset, axis) -> None:
    """DQ -> Softmax -> Q of [N, 3, 4] (ONNX Runtime's default session fuses it into
    QLinearSoftmax): before opset 13 over axes 1 and 2 as one (the 2-D coercion), from 13
    over the axis alone; equal to ONNX Runtime bit for bit."""
    mk = helper.make_node
    inits = [
        nh.from_array(np.float32(0.05), "xs"),
        nh.from_array(np.uint8(120), "xz"),
        nh.from_array(np.float32(1 / 256), "ys"),
        nh.from_array(np.uint8(0), "yz"),
    ]
    nodes = [
        mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        mk("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        mk("Softmax", ["xd"], ["p"], axis=axis),
        mk("QuantizeLinear", ["p", "ys", "yz"], ["pq"]),
        mk("DequantizeLinear", ["pq", "ys", "yz"], ["y"]),
    ]
    path = str(tmp_path / "s.onnx")
    onnx.save(_model(nodes, inits, ["N", 3, 4], ["N", 3, 4], opset=opset), path)
    x = (np.random.default_rng(19).normal(size=(16, 3, 4)) * 2).astype(np.float32)
    want = _ort(path, x)[0]
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got, want)


def _qdq_weighted(op: str, w: np.ndarray, ys: float, x_shape, y_shape, **attrs):
    """Q -> DQ(x) and DQ(w) (int8, scale 0.02) -> op -> Q -> DQ: a one-layer QDQ model
    (x scale 0.05, zero points 128)."""
    mk = helper.make_node
    inits = [
        nh.from_array(np.float32(0.05), "xs"),
        nh.from_array(np.uint8(128), "xz"),
        nh.from_array(w, "w"),
        nh.from_array(np.float32(0.02), "ws"),
        nh.from_array(np.int8(0), "wz"),
        nh.from_array(np.float32(ys), "ys"),
        nh.from_array(np.uint8(128), "yz"),
    ]
    nodes = [
        mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        mk("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        mk("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
        mk(op, ["xd", "wd"], ["m"], **attrs),
        mk("QuantizeLinear", ["m", "ys", "yz"], ["mq"]),
        mk("DequantizeLinear", ["mq", "ys", "yz"], ["y"]),
    ]
    return _model(nodes, inits, x_shape, y_shape)


def test_qdq_gemm_with_trans_a_keeps_the_float_definition(tmp_path) -> None:
    """DQ -> Gemm(transA=1) -> Q of a fixed-shape A: not fused (graphc's QGemm takes no
    transA), so it imports as before and computes the float definition: within one output
    quantization step of ONNX Runtime (which fuses it into QGemm)."""
    rng = np.random.default_rng(20)
    w = rng.integers(-128, 128, size=(6, 5)).astype(np.int8)
    path = str(tmp_path / "g.onnx")
    onnx.save(_qdq_weighted("Gemm", w, 0.1, [6, 4], [4, 5], transA=1), path)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    want = _ort(path, x)[0]
    rep = from_onnx(path, trainable=False).compile()
    got = rep._run("infer", {"x": x}, 1)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=0.1 + 1e-6)


def test_qlinear_global_average_pool_of_a_large_image_matches_onnxruntime() -> None:
    """QLinearGlobalAveragePool over 300 x 300 positions of full-range uint8 (the channel
    sums reach 2.3e7 > 2**24: summed split in two, the correctly rounded float32 of ORT's
    int32 sum): equal to ONNX Runtime. Refused before (also as a fused QDQ
    GlobalAveragePool, which imported with the float definition before the fusion)."""
    rng = np.random.default_rng(21)
    inits = [
        nh.from_array(np.float32(0.03), "xs"),
        nh.from_array(np.uint8(0), "xz"),
        nh.from_array(np.float32(0.031), "ys"),
        nh.from_array(np.uint8(3), "yz"),
    ]
    node = helper.make_node(
        "QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft"
    )
    g = helper.make_graph(
        [node],
        "gap",
        [helper.make_tensor_value_info("x", TP.UINT8, ["N", 2, 300, 300])],
        [helper.make_tensor_value_info("y", TP.UINT8, None)],
        inits,
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    m.ir_version = 8
    x = rng.integers(200, 256, size=(2, 2, 300, 300)).astype(np.uint8)
    x[0, 0] = 255
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    assert want.min() > 200 and want.max() < 255  # not saturated
    got = from_onnx(m, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_qdq_matmul_with_a_1d_weight_fuses_and_matches_onnxruntime(tmp_path) -> None:
    """DQ(x [N, 12]) @ DQ(w [12]) -> Q (a 1-D weight, numpy's column): fused into
    QLinearMatMul as ONNX Runtime's default session does, whose B is a column whose axis
    the result drops; equal bit for bit (the fused rule refused 1-D operands before)."""
    rng = np.random.default_rng(22)
    w = rng.integers(-128, 128, size=12).astype(np.int8)
    path = str(tmp_path / "v.onnx")
    onnx.save(_qdq_weighted("MatMul", w, 0.07, ["N", 12], ["N"]), path)
    x = rng.normal(size=(40, 12)).astype(np.float32)
    want = _ort(path, x)[0]
    got = from_onnx(path, trainable=False).compile().predict(x)
    np.testing.assert_array_equal(got.reshape(want.shape), want)
