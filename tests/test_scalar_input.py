"""A rank-0 (scalar) input beside a batched one: a temperature, a threshold, a scale.

ONNX files carry them (a graph input of shape []), and the DSL declares them as gc.input(name, ()).
The feed is a 0-d array, a numpy scalar or a Python number; numpy's ascontiguousarray turned it
into shape [1], which the entry then refused, so no feed at all worked. References: numpy float64
and, where installed, ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def _model(name: str) -> gc.Model:
    x = gc.input("x", ("N", 3))
    t = gc.input("t", ())
    return gc.compile(gc.tanh(x * t), name=name)


@pytest.mark.parametrize(
    "feed", [np.float32(0.25), np.array(0.25), 0.25, np.array(0.25, np.float64)]
)
def test_scalar_input_takes_every_scalar_form(feed):
    m = _model("scalar_in")
    x = np.linspace(-4, 4, 3000 * 3).reshape(3000, 3).astype(np.float32)
    ref = np.tanh(x.astype(np.float64) * 0.25)
    for bs in (
        128,
        5000,
    ):  # rows in blocks of 128 (the scalar goes with every block), then one call
        got = m.predict({"x": x, "t": feed}, batch_size=bs)
        assert got.shape == (3000, 3)
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-7)


def test_scalar_input_of_wrong_rank_is_refused_by_name():
    m = _model("scalar_bad")
    x = np.ones((4, 3), np.float32)
    with pytest.raises(gc.ArgumentError, match="'t'"):
        m.predict({"x": x, "t": np.ones(2, np.float32)})
    with pytest.raises(gc.ArgumentError, match=r"'x'.*scalar"):
        m.predict({"x": np.float32(1.0), "t": 1.0})


def test_scalar_input_through_the_exported_library(tmp_path):
    m = _model("scalar_lib")
    m.export(str(tmp_path / "libscalar_lib.so"))
    lib = gc.load(str(tmp_path / "libscalar_lib.so"))
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(4, 3)
    got = lib.predict({"x": x, "t": np.float32(1.5)})
    np.testing.assert_allclose(got, np.tanh(x.astype(np.float64) * 1.5), rtol=2e-6, atol=2e-7)


def test_onnx_scalar_graph_input_matches_onnx_runtime():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [
            helper.make_node("Div", ["x", "temperature"], ["z"]),
            helper.make_node("Softmax", ["z"], ["y"]),
        ],
        "temp_softmax",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("temperature", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    imp = gc.from_onnx(proto)
    m = gc.compile(imp.outputs, name="temp_softmax")
    x = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    temp = np.array(0.7, np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "temperature": temp}
    )[0]
    np.testing.assert_allclose(m.predict({"x": x, "temperature": temp}), want, rtol=1e-6, atol=1e-7)


def test_train_step_takes_a_scalar_input_and_fit_refuses_it_by_name():
    """train_step's gradient with a scalar input equals the float64 formula; fit, whose
    mini-batches take rows of every input, refuses an input without N before training."""
    x = gc.input("x", ("N", 3))
    t = gc.input("t", ())
    y = gc.input("y", ("N", 1))
    w0 = np.array([[0.5], [-1.0], [2.0]], np.float32)
    out = gc.matmul(x * t, gc.param("w", (3, 1)))
    m = gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(lr=0.1), name="scalar_fit")
    m.set_weights({"w": w0})
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 1))
    loss = m.train_step({"x": X, "t": np.float32(2.0)}, Y.astype(np.float32))
    Xs = X.astype(np.float64) * 2.0
    r = Xs @ w0.astype(np.float64) - Y
    assert loss == pytest.approx(float(np.mean(r**2)), rel=1e-5)
    w1 = w0 - 0.1 * (2.0 / len(X)) * (Xs.T @ r)
    np.testing.assert_allclose(m.params["w"], w1, rtol=1e-5, atol=1e-6)
    before = m.params["w"].copy()
    with pytest.raises(gc.ArgumentError, match=r"fit: input 't'.*without the batch axis"):
        m.fit({"x": X, "t": np.float32(2.0)}, Y.astype(np.float32), epochs=1, verbose=0)
    np.testing.assert_array_equal(m.params["w"], before)
