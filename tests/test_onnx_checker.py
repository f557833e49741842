"""Files ONNX Runtime refuses are refused by graphc too (onnx.checker's full check: operator
type constraints, IR version, outputs no node produces), naming the file and the finding;
float64 models import with a warning that graphc computes in float32. ~1 s."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError
from graphc.onnx_import import OnnxPrecisionWarning

F32, I64 = TensorProto.FLOAT, TensorProto.INT64
_ORT_STATE = pytest.importorskip("onnxruntime.capi.onnxruntime_pybind11_state")
# what ONNX Runtime raises when it refuses a model at load (its pybind exceptions)
ORT_REFUSALS = (
    _ORT_STATE.Fail,
    _ORT_STATE.InvalidGraph,
    _ORT_STATE.InvalidArgument,
    _ORT_STATE.NotImplemented,
    _ORT_STATE.RuntimeException,
)


def _model(nodes, inputs, outputs, inits=(), ir: int = 8):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ir
    return m


def _vi(name, t=F32):
    return helper.make_tensor_value_info(name, t, ["N", 2])


CASES = {
    # a float-only operator on int64 (ONNX Runtime: no kernel / type error at load)
    "sqrt_of_int64": (
        _model(
            [
                helper.make_node("Cast", ["x"], ["k"], to=I64),
                helper.make_node("Sqrt", ["k"], ["s"]),
                helper.make_node("Cast", ["s"], ["y"], to=F32),
            ],
            [_vi("x")],
            [_vi("y")],
        ),
        r"Sqrt.*unsupported type: tensor\(int64\)",
    ),
    # operands of two types where the schema wants one (T)
    "add_float_and_int64": (
        _model(
            [helper.make_node("Add", ["x", "c"], ["y"])],
            [_vi("x")],
            [_vi("y")],
            [numpy_helper.from_array(np.array([1, 2], np.int64), "c")],
        ),
        r"Add.*inconsistent type tensor\(int64\)",
    ),
    # an output no node produces (graphc's outputs= would otherwise select it)
    "output_never_produced": (
        _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y"), _vi("z")]),
        r"'z' is not an output of any node",
    ),
    "ir_version_from_the_future": (
        _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], ir=99),
        r"ir_version 99",
    ),
    "declared_output_type_contradicts_the_node": (
        _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y", I64)]),
        r"Relu.*elem type differs",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_files_onnxruntime_refuses_are_refused(case) -> None:
    m, why = CASES[case]
    with pytest.raises(ORT_REFUSALS):  # the independent reference refuses the file
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(OnnxError, match=r"fails onnx.checker's full check.*" + why):
        gc.from_onnx(m)


def test_a_file_without_ir_version_is_refused() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], ir=0)
    with pytest.raises(OnnxError, match="ir_version"):
        gc.from_onnx(m)


def test_outputs_without_a_declared_shape_still_import() -> None:
    # ONNX Runtime runs them (the checker alone wants a shape): not refused
    y = helper.make_tensor_value_info("y", F32, None)
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [y])
    x = np.array([[-1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(gc.from_onnx(m).compile().predict(x), np.maximum(x, 0))


def test_double_models_import_with_a_precision_warning() -> None:
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", TensorProto.DOUBLE)],
        [_vi("y", TensorProto.DOUBLE)],
    )
    with pytest.warns(OnnxPrecisionWarning, match=r"'x', 'y' declared or cast to double.*float32"):
        gc.from_onnx(m)


def test_a_cast_to_double_warns_too() -> None:
    m = _model(
        [
            helper.make_node("Cast", ["k"], ["d"], to=TensorProto.DOUBLE),
            helper.make_node("Cast", ["d"], ["y"], to=F32),
        ],
        [_vi("k", I64)],
        [_vi("y")],
    )
    with pytest.warns(OnnxPrecisionWarning, match=r"Cast node 0 '' declared or cast to double"):
        gc.from_onnx(m)
