"""An input with two free dimensions after a fixed first one ([1, batch, seq]): from_onnx's
dims maps one name to "N" (that dimension is the batch, wherever it stands) and gives the
other its size; predict takes the file's layout and equals ONNX Runtime. Without it the import
is refused naming dims and both names (before: 'dimension 1 is symbolic (batch)', whose hint
to give 'batch' a size made seq the batch)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.export import parse_dims

F = TensorProto.FLOAT


def _model(shape: list, dims: dict | None = None) -> onnx.ModelProto:
    """y = relu(x) * w + x (row-wise: the same numbers whichever axis is the batch), x of
    ONNX shape ``shape``, w of x's shape with 1 for the batch (``dims``' "N")."""
    dims = dims or {}
    wshape = [1 if dims.get(d) == "N" else dims.get(d, d) for d in shape]
    w = np.linspace(-1.0, 2.0, int(np.prod(wshape)), dtype=np.float32).reshape(wshape)
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Mul", ["r", "w"], ["m"]),
            helper.make_node("Add", ["m", "x"], ["y"]),
        ],
        "named_batch",
        [helper.make_tensor_value_info("x", F, shape)],
        [helper.make_tensor_value_info("y", F, shape)],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    return m


@pytest.mark.parametrize(
    ("shape", "dims", "axis", "repr_text"),
    [
        ([1, "batch", "seq"], {"batch": "N", "seq": 4}, 1, "x: f32[N,1,4] taken as [1,N,4]"),
        ([1, "seq", "batch"], {"batch": "N", "seq": 4}, 2, "x: f32[N,1,4] taken as [1,4,N]"),
        ([2, "seq", "batch", 4], {"batch": "N", "seq": 3}, 2, "taken as [2,3,N,4]"),
        (["batch", 3, 4], {"batch": "N"}, 0, "x: f32[N,3,4]"),
    ],
)
def test_dims_names_the_batch(shape: list, dims: dict, axis: int, repr_text: str) -> None:
    m = _model(shape, dims)
    model = gc.from_onnx(m, dims=dims).compile()
    assert repr_text in repr(model)
    assert model.input_batch_axes == ({"x": axis} if axis else {})
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    fixed = [dims[d] if isinstance(d, str) else d for d in shape]
    rng = np.random.default_rng(axis)
    for n in (1, 3):
        x = rng.standard_normal([n if d == "N" else d for d in fixed]).astype(np.float32)
        (want,) = sess.run(None, {"x": x})
        got = model.predict({"x": x})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_two_free_dimensions_are_refused_naming_dims() -> None:
    m = _model([1, "batch", "seq"], {"batch": "N", "seq": 1})
    with pytest.raises(
        gc.OnnxError,
        match=r"input 'x': dimensions 1 \(batch\), 2 \(seq\) are symbolic after a fixed first "
        r"one: graphc cannot tell which is the batch N .*dims=\{'batch': 'N', 'seq': size\}",
    ):
        gc.from_onnx(m)
    with pytest.raises(gc.OnnxError, match=r"dimension 2 is symbolic \(seq\).*batch N \(axis 1\)"):
        gc.from_onnx(m, dims={"batch": "N"})
    with pytest.raises(gc.OnnxError, match=r"dims names \['batch', 'seq'\] the batch N"):
        gc.from_onnx(m, dims={"batch": "N", "seq": "N"})
    with pytest.raises(gc.OnnxError, match="more than one of its dimensions"):
        gc.from_onnx(_model([1, "b", "b"], {"b": "N"}), dims={"b": "N"})
    with pytest.raises(gc.OnnxError, match=r"dims entry 'seq': 'M'"):
        gc.from_onnx(m, dims={"batch": "N", "seq": "M"})


def test_the_command_line_takes_name_equals_n() -> None:
    assert parse_dims(["batch=N", "seq=128"], "m.onnx") == {"batch": "N", "seq": 128}
    with pytest.raises(gc.ArgumentError, match="NAME=SIZE with SIZE an int >= 1, or NAME=N"):
        parse_dims(["seq=M"], "m.onnx")
