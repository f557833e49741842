"""ONNX Cast from float to the integer types of values the conversion cannot hold (NaN, +-inf,
past the type's or int32's range), which the ONNX spec leaves undefined: graphc gives what
ONNX Runtime gives on x86-64 (its conversions go through cvttss2si: int32's "integer
indefinite" -2**31, 0 for the 8/16-bit types, -2**63 for int64, uint32's and uint64's two-step
conversions; uint64 took NaN, +-inf and negative values through unchanged before, an integer
output holding NaN).
In range, rounded toward zero and wrapped as before. Before, NaN and inf passed through the
cast unchanged (an int32 output holding NaN) and values past int32 were not wrapped (3e9 cast
to int8 gave -128, ONNX Runtime 0). Skipped elsewhere than x86-64 (ONNX Runtime on arm64
saturates instead)."""

from __future__ import annotations

import platform

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="the values compared are ONNX Runtime's on x86-64 (undefined by the ONNX spec)",
)
TYPES = {
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "int16": TensorProto.INT16,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}
VALUES = [1.7, -1.7, np.nan, np.inf, -np.inf, 3e9, -3e9, -0.5, 2.5, 300.7, -129.5, 65536.5]
VALUES += [70000.0, 2.0**31, -(2.0**31), 1e19, -1e19, 4.3e9, -4.3e9, -0.0]
VALUES += [2.0**63, -(2.0**63), 9e18, -9e18, 2.0**64, 1e20]


def test_float_to_integer_casts_out_of_range_match_onnxruntime() -> None:
    nodes = [helper.make_node("Add", ["x", "zero"], ["h"])]  # a computed value
    nodes += [helper.make_node("Cast", ["h"], [name], to=to) for name, to in TYPES.items()]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", len(VALUES)])],
        [helper.make_tensor_value_info(n, to, None) for n, to in TYPES.items()],
        [numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    x = np.array([VALUES], np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got = gc.from_onnx(m).compile().predict(x)
    for name, want in zip(TYPES, sess.run(None, {"x": x})):
        # in the declared type; graphc holds integers as float32 (exact up to 2**24): ONNX
        # Runtime's rounded so (-129.5 to uint32: 2**32 - 129, held as 2**32 - 256)
        assert got[name].dtype == want.dtype, name
        g = got[name].astype(np.float32)
        np.testing.assert_array_equal(g, want.astype(np.float32), err_msg=name)


def test_large_integral_values_wrap_exactly_to_the_narrow_types() -> None:
    """A value of int32's range past 2**24 (float32 integers, multiples of 2 .. 128) cast to a
    8/16-bit type wraps exactly, as numpy's int64 -> int8/int16/... and ONNX Runtime: the wrap
    subtracted the type's lower bound first, which rounds in float32 once |x| passes 2**24
    (2**31 - 128 to int16 gave 0, ONNX Runtime -128)."""
    rng = np.random.default_rng(11)
    mag = rng.integers(2**24, 2**31, 60).astype(np.float32)  # rounded to float32's integers
    vals = np.concatenate([mag, -mag, [2.0**31 - 128, -(2.0**31), 2.0**24 + 2, 3.0 * 2**25]])
    x = vals.astype(np.float32)[None]
    types = {k: TYPES[k] for k in ("int8", "uint8", "int16", "uint16", "int32")}
    nodes = [helper.make_node("Add", ["x", "zero"], ["h"])]
    nodes += [helper.make_node("Cast", ["h"], [name], to=to) for name, to in types.items()]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", x.shape[1]])],
        [helper.make_tensor_value_info(n, to, None) for n, to in types.items()],
        [numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    got = gc.from_onnx(m).compile().predict(x)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, ref in zip(types, sess.run(None, {"x": x})):
        exact = x.astype(np.int64).astype(name).astype(np.float32)  # numpy's modular wrap
        np.testing.assert_array_equal(ref.astype(np.float32), exact, err_msg=name)
        np.testing.assert_array_equal(got[name], exact, err_msg=name)
