"""An imported MaxPool's Indices output, whose batch row term n * C * P predict adds after the
native call (Model.output_row_terms), exported again: to_onnx writes the term into the file
(equal to ONNX Runtime on the original file, int64, any batch size); a native library, which
cannot add it, is refused naming the output. Before, both wrote the per-row c * P + p: wrong
from row 1 on, silently."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper

import graphc as gc
from graphc.ir.errors import ArgumentError


def _pool(shape: tuple[int, ...], kernel: list[int], opset: int) -> onnx.ModelProto:
    out = [s - k + 1 for s, k in zip(shape[1:], kernel)]
    g = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=kernel)],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", shape[0], *out]),
            helper.make_tensor_value_info("i", TensorProto.INT64, ["N", shape[0], *out]),
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _run(m: onnx.ModelProto | str, x: np.ndarray) -> list[np.ndarray]:
    data = m if isinstance(m, str) else m.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@pytest.mark.parametrize(
    "shape, kernel, opset", [((3, 4, 4), [2, 2], 17), ((2, 7), [3], 13), ((2, 5, 3), [2, 3], 18)]
)
def test_to_onnx_writes_the_batch_row_term_of_maxpool_indices(tmp_path, shape, kernel, opset):
    m = _pool(shape, kernel, opset)
    path = gc.from_onnx(m).compile().to_onnx(str(tmp_path / "again.onnx"), opset=opset)
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
        want, got = _run(m, x), _run(path, x)
        assert got[1].dtype == np.int64
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


def test_export_of_maxpool_indices_is_refused_naming_the_output(tmp_path):
    model = gc.from_onnx(_pool((3, 4, 4), [2, 2], 17)).compile()
    with pytest.raises(ArgumentError, match=r"output\(s\) i .*row term"):
        model.export(str(tmp_path / "libpool.so"))
    assert os.listdir(tmp_path) == []
    y_only = gc.from_onnx(_pool((3, 4, 4), [2, 2], 17), outputs=["y"]).compile()
    lib = gc.load(y_only.export(str(tmp_path / "libpooly.so")).library)
    x = np.random.default_rng(3).standard_normal((4, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(lib.predict(x), _run(_pool((3, 4, 4), [2, 2], 17), x)[0])
