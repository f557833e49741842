"""ONNX graph inputs whose batch axis N is not first (Model.input_batch_axes).

torch's nn.LSTM / nn.GRU with their default batch_first=False take x as [T, N, C] and the
initial states h0 / c0 as [layers * dirs, N, H]. graphc declares such an input with N first,
follows the ONNX value as a layout view of it (graphc.onnx_layout), and predict (fit,
evaluate) takes the array in the file's layout, moving axis k to 0 before the native call.
Each case against ONNX Runtime, 1e-5 relative, at batches 1 and 3; save_model / load_model,
pickle and to_onnx's file (ONNX Runtime) keep the layout (exported libraries too:
tests/test_onnx_export_batch_axis.py).
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import ArgumentError

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _ort(m, feeds):
    data = m if isinstance(m, str) else m.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _feeds(m, n, rng):
    """An array per graph input of ``m`` (a file or ModelProto), ``n`` for its free dims."""
    m = onnx.load(m) if isinstance(m, str) else m
    feeds = {}
    for vi in m.graph.input:
        dims = [
            d.dim_value or (5 if d.dim_param == "T" else n) for d in vi.type.tensor_type.shape.dim
        ]
        feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def _check_all(model, src, feeds, tmp_path):
    """model's predict, its model file, its pickle and its to_onnx file equal ONNX Runtime
    on ``src`` (exported libraries: tests/test_onnx_export_batch_axis.py)."""
    want = _ort(src, feeds)
    path = str(tmp_path / "m.gcm")
    model.save_model(path)
    for m in (model, gc.load_model(path), pickle.loads(pickle.dumps(model))):
        got = m.predict(feeds)
        got = list(got.values()) if isinstance(got, dict) else [got]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    back = str(tmp_path / "back.onnx")
    model.to_onnx(back)
    for g, w in zip(_ort(back, feeds), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["rnn_ts_lstmsf_14", "rnn_ts_grusf_14", "rnn_dyn_lstmsf_18", "rnn_dyn_grusf_18"]
)
def test_torch_sequence_first_rnn_takes_its_inputs_in_their_layout(name, tmp_path) -> None:
    """tests/data/onnx/rnn_*_{lstmsf,grusf}_*.onnx (export_torch_rnn.py's SeqFirst, torch
    2.13, batch_first=False): x [T, N, 3] (rnn_ts_lstmsf_14 leaves T symbolic too: dims
    fixes it) and the LSTM's h0, c0 [4, N, 4]; the outputs y [T, N, D*H] and h_n, c_n."""
    path = os.path.join(DATA, f"{name}.onnx")
    dims = {"T": 5} if name == "rnn_ts_lstmsf_14" else None
    imp = gc.from_onnx(path, dims=dims)
    assert "x: f32[N,5,3] taken as [5,N,3]" in repr(imp)
    model = imp.compile()
    assert set(model.input_batch_axes.values()) == {1}
    assert "taken as [5,N,3]" in repr(model)
    rng = np.random.default_rng(3)
    for n in (1, 3):
        _check_all(model, path, _feeds(path, n, rng), tmp_path)


def _moved_inputs():
    """x [3, N] and s [4, 5, N] (N at axes 1 and 2): y = x^T @ w [N, 4] and r = Relu(s)
    [4, 5, N] + the sum of y's row."""
    w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
        helper.make_node("MatMul", ["xt", "w"], ["y"]),
        helper.make_node("ReduceSum", ["y", "ax"], ["ys"], keepdims=0),
        helper.make_node("Relu", ["s"], ["rs"]),
        helper.make_node("Add", ["rs", "ys"], ["r"]),
    ]
    g = helper.make_graph(
        nodes,
        "moved_in",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, "N"]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [4, 5, "N"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [4, 5, "N"]),
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1]), "ax")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_hand_made_inputs_with_n_at_axes_1_and_2(tmp_path) -> None:
    m = _moved_inputs()
    model = gc.from_onnx(m).compile()
    assert model.input_batch_axes == {"x": 1, "s": 2}
    assert "x: f32[N,3] taken as [3,N]" in repr(model)
    assert "s: f32[N,4,5] taken as [4,5,N]" in repr(model)
    rng = np.random.default_rng(1)
    for n in (1, 3):
        _check_all(model, m, _feeds(m, n, rng), tmp_path)
    x = rng.standard_normal((3, 2)).astype(np.float32)
    with pytest.raises(ArgumentError, match=r"input 's' expects f32\[N,4,5\] taken as \[4,5,N\]"):
        model.predict({"x": x, "s": np.zeros((4, 2), np.float32)})
    with pytest.raises(ArgumentError, match="different numbers of rows"):
        model.predict({"x": x, "s": np.zeros((4, 5, 3), np.float32)})


def test_symbolic_sequence_and_batch_name_dims() -> None:
    """x [T, N, 3] with both symbolic: refused at the input, the message says dims fixes T."""
    path = os.path.join(DATA, "rnn_ts_lstmsf_14.onnx")
    with pytest.raises(gc.OnnxError, match=r"dimension 1 is symbolic \(N\).*dims=\{'T': size\}"):
        gc.from_onnx(path)


def test_fit_and_evaluate_take_the_input_in_its_layout() -> None:
    """x [3, N] through y = x^T @ w, mean squared error against t [N, 4]: evaluate's loss and
    one SGD step over all 8 rows equal numpy float64 (the gradient 2 / (N * 4) x (x^T w - t))."""
    imp = gc.from_onnx(_moved_inputs(), outputs=["y"])
    t = gc.input("t", ("N", 4))
    model = imp.compile(gc.mean_squared_error(imp.outputs[0], t), gc.SGD(0.05))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    tt = rng.standard_normal((8, 4)).astype(np.float32)
    (name,) = model.params
    w = np.asarray(model.params[name], np.float64).reshape(3, 4)
    err = x.T.astype(np.float64) @ w - tt
    got = model.evaluate({"x": x}, {"t": tt})["loss"]
    np.testing.assert_allclose(got, np.mean(err**2), rtol=1e-5)
    model.fit({"x": x}, {"t": tt}, epochs=1, batch_size=8, shuffle=False, verbose=0)
    want = w - 0.05 * 2 / (8 * 4) * x.astype(np.float64) @ err
    np.testing.assert_allclose(
        np.asarray(model.params[name]).reshape(3, 4), want, rtol=1e-5, atol=1e-6
    )


def test_embedding_lookup_of_sequence_first_ids() -> None:
    """ids [5, N] int64 (torch's nn.Embedding before a batch_first=False RNN) look rows of a
    [10, 3] table up: e [5, N, 3] and its Transpose [N, 5, 3] equal ONNX Runtime; an id
    past the table is refused naming the input."""
    table = np.random.default_rng(4).standard_normal((10, 3)).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"]),
            helper.make_node("Transpose", ["e"], ["t"], perm=[1, 0, 2]),
        ],
        "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [5, "N"])],
        [
            helper.make_tensor_value_info("e", TensorProto.FLOAT, [5, "N", 3]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 5, 3]),
        ],
        [numpy_helper.from_array(table, "table")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    model = gc.from_onnx(m).compile()
    rng = np.random.default_rng(5)
    for n in (1, 3):
        ids = rng.integers(-10, 10, (5, n))
        got = model.predict(ids)
        for k, w in zip(("e", "t"), _ort(m, {"ids": ids})):
            assert got[k].shape == w.shape
            np.testing.assert_array_equal(got[k], w)
    with pytest.raises(ArgumentError, match="ids"):
        model.predict(np.full((5, 2), 10))


@pytest.mark.parametrize(
    "name",
    ["attn_ts_mha_seq_17", "attn_dyn_mha_seq_18", "attn_ts_enc_seq_17", "attn_dyn_enc_seq_18"],
)
def test_torch_sequence_first_attention(name) -> None:
    """tests/data/onnx/attn_*_{mha,enc}_seq_*.onnx (export_torch_attn.py's SEQ_FIRST, torch
    2.13): nn.MultiheadAttention and nn.TransformerEncoderLayer with batch_first=False over
    x [5, N, 8], y [5, N, 8], both exporters: equal to ONNX Runtime at batches 1 and 3."""
    path = os.path.join(DATA, f"{name}.onnx")
    model = gc.from_onnx(path).compile()
    assert "taken as [5,N,8]" in repr(model)
    rng = np.random.default_rng(6)
    for n in (1, 3):
        x = rng.standard_normal((5, n, 8)).astype(np.float32)
        (want,) = _ort(path, {"x": x})
        got = model.predict(x)
        assert got.shape == want.shape == (5, n, 8)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


def test_model_file_with_a_wrong_input_batch_axis_is_refused(tmp_path) -> None:
    """A model file whose input_batch_axes names no input, or an axis past the input's rank,
    is refused at load (CheckpointError naming the field), not at predict."""
    from graphc.ir.errors import CheckpointError

    model = gc.from_onnx(_moved_inputs()).compile()
    for bad in ({"x": 2}, {"nope": 1}, {"x": 0}):
        model.input_batch_axes = bad
        path = str(tmp_path / "bad.gcm")
        model.save_model(path)
        with pytest.raises(CheckpointError, match="input_batch_axes"):
            gc.load_model(path)
