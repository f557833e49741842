"""ONNX Clip as the spec defines it and ONNX Runtime computes it: an absent bound is the float
range's end (numeric_limits::lowest() / max(), so +-inf becomes +-FLT_MAX), a NaN input stays
NaN, a NaN bound leaves x as it is (std::max / std::min order), bounds given the wrong way
round give max; at opset 13 (inputs) and opset 7 (attributes). Before, an absent bound left
+-inf unchanged (Clip(x, 0) of inf was inf, ONNX Runtime 3.4e38) and a NaN bound gave NaN
everywhere."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

F32_MAX = float(np.finfo(np.float32).max)


def _f32(name: str, v) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(v, np.float32), name)


CASES = [  # (name, inputs after x, initializers)
    ("none", [], []),
    ("min", ["lo"], []),
    ("max", ["", "hi"], []),
    ("both", ["lo", "hi"], []),
    ("relu6", ["zero", "six"], []),
    ("nan_min", ["nan"], []),
    ("nan_max", ["", "nan"], []),
    ("swapped", ["hi", "lo"], []),
]


@pytest.mark.parametrize("opset", [13, 7])
def test_clip_matches_onnxruntime_at_the_float_range_and_nan(opset: int) -> None:
    nodes, outs = [], []
    for name, ins, _ in CASES:
        if opset < 11:
            if "nan" in ins or "" in ins or name == "swapped":  # (Clip-6 refuses min > max)
                continue
            vals = {"lo": -0.5, "hi": 0.5, "zero": 0.0, "six": 6.0}
            attrs = dict(zip(["min", "max"], [vals[i] for i in ins]))
            nodes.append(helper.make_node("Clip", ["x"], [name], **attrs))
        else:
            nodes.append(helper.make_node("Clip", ["x", *ins], [name]))
        outs.append(name)
    inits = [
        _f32("lo", -0.5),
        _f32("hi", 0.5),
        _f32("zero", 0),
        _f32("six", 6),
        _f32("nan", np.nan),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        inits if opset >= 11 else [],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7 if opset >= 11 else 3
    x = np.array([[np.nan, np.inf, -np.inf, -0.0, 7.0, -0.7], [0.2, -0.2, 1e38, -1e38, 0.5, 6.0]])
    x = x.astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got = gc.from_onnx(m).compile().predict(x)
    got = got if isinstance(got, dict) else {outs[0]: got}
    for name, want in zip(outs, sess.run(None, {"x": x})):
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    assert opset < 11 or got["none"][0, 1] == F32_MAX  # ONNX's default bound, not inf
