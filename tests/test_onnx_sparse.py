"""ONNX sparse tensors: a Constant's sparse_value and a graph's sparse_initializer, in both
index forms of the ONNX IR ([NNZ] positions in the flattened array, [NNZ, rank] coordinates),
densified as ONNX Runtime does; malformed indices refused by name. Before, both were refused
('sparse_value is not supported', 'sparse initializers are not supported')."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError


def _sparse(values, indices, dims):
    v = numpy_helper.from_array(np.asarray(values, np.float32), "v")
    i = numpy_helper.from_array(np.asarray(indices, np.int64), "i")
    return helper.make_sparse_tensor(v, i, dims)


def _model(sparse_inits=(), constants=()):
    nodes = [helper.make_node("Constant", [], [f"c{k}"], sparse_value=sp) for k, sp in constants]
    terms = ["x", *[f"c{k}" for k, _ in constants], *[sp.values.name for sp in sparse_inits]]
    nodes.append(helper.make_node("Sum", terms, ["y"]))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        sparse_initializer=list(sparse_inits),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    return m


def test_sparse_constants_and_initializers_match_onnxruntime() -> None:
    w = _sparse([1.5, -2.0], [[0, 1], [2, 3]], [3, 4])
    w.values.name = "w"
    m = _model(
        sparse_inits=[w],
        constants=[
            (0, _sparse([5.0, 6.0, 7.0], [1, 5, 11], [3, 4])),
            (1, _sparse([3.0], [[1, 2]], [3, 4])),
        ],
    )
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    imp = gc.from_onnx(m)
    np.testing.assert_allclose(imp.compile().predict(x), sess.run(None, {"x": x})[0], rtol=1e-6)
    assert imp.weights["w"][2, 3] == -2.0 and imp.weights["w"].sum() == -0.5


@pytest.mark.parametrize(
    "indices, says",
    [
        ([1, 1, 2], "given twice"),
        ([1, 5, 12], "outside the 12 elements"),
        ([[0, 1], [3, 0], [1, 1]], "outside the shape"),
        ([[0, 1, 2]], "fit neither"),
    ],
)
def test_malformed_sparse_indices_are_refused_by_name(indices, says) -> None:
    m = _model(constants=[(0, _sparse([5.0, 6.0, 7.0][: len(indices)], indices, [3, 4]))])
    with pytest.raises(
        OnnxError, match=r"node 0 '' \(Constant, opset 19\): sparse_value: .*" + says
    ):
        gc.from_onnx(m)
