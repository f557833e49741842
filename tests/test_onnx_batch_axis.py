"""ONNX graph outputs whose batch axis N is not first (graphc.onnx_layout.batch_first).

torch's nn.LSTM / nn.GRU return h_n (and c_n) as [layers * dirs, N, H]; a Transpose can put N
anywhere. graphc computes such an output with N first and predict moves it to the declared
axis (Model.output_batch_axes). Each case against ONNX Runtime 1e-5 relative at batches 1 and
3; to_onnx writes the Transpose (ONNX Runtime on the written file), save_model / load_model
and pickle keep the layout, and so does an exported library (its wrappers move the axis).
ai.onnx.ml ArrayFeatureExtractor of 1-D class labels by one index per row returns [1, N], as
ONNX Runtime does.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc


def _ort(m, feeds):
    data = m if isinstance(m, str) else m.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _close(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _transposes():
    """x [N, 5, 3] @ w -> m [N, 5, 4]; outputs Transpose(m) as [5, N, 4] and [4, 5, N]."""
    w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Transpose", ["m"], ["y"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["m"], ["z"], perm=[2, 1, 0]),
        helper.make_node("Relu", ["m"], ["r"]),
    ]
    g = helper.make_graph(
        nodes,
        "moved",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, "N", 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 5, "N"]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 5, 4]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_transposed_outputs_predict_save_to_onnx_and_export(tmp_path) -> None:
    m = _transposes()
    model = gc.from_onnx(m).compile()
    assert model.output_batch_axes == {"y": 1, "z": 2}
    assert "f32[N,5,4] returned as [5,N,4], f32[N,4,5] returned as [4,5,N]" in repr(model)
    loaded = gc.load_model(model.save_model(str(tmp_path / "m.gcm")))
    path = model.to_onnx(str(tmp_path / "back.onnx"))
    copied = pickle.loads(pickle.dumps(model))
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 5, 3)).astype(np.float32)
        want = dict(zip(["y", "z", "r"], _ort(m, {"x": x})))
        for mod in (model, loaded, copied):
            got = mod.predict(x)
            for k in want:
                _close(got[k], want[k])
                assert got[k].flags.c_contiguous
        out = {k: np.empty_like(v) for k, v in want.items()}
        model.predict(x, out=out)
        for k in want:
            _close(out[k], want[k])
        back = _ort(path, {"x": x})
        for a, k in zip(back, ["y", "z", "r"]):
            _close(a, want[k])
    dims = [
        [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in onnx.load(path).graph.output
    ]
    assert dims == [[5, "N", 4], [4, 5, "N"], ["N", 5, 4]]
    # an exported library returns them in the file's layout too
    # (tests/test_onnx_export_batch_axis.py)
    lib = gc.load(model.export(str(tmp_path / "libmoved.so")).library)
    x = np.random.default_rng(4).standard_normal((3, 5, 3)).astype(np.float32)
    for k, v in model.predict(x).items():
        np.testing.assert_array_equal(lib.predict(x)[k], v)


def test_shape_of_a_moved_output_counts_the_batch() -> None:
    """Shape(y) of y [5, N, 4] beside y: an output known at import whose N is predict's row
    count, not y's first (moved) axis."""
    m = _transposes()
    m.graph.node.append(helper.make_node("Shape", ["y"], ["s"]))
    del m.graph.output[1:]
    m.graph.output.append(helper.make_tensor_value_info("s", TensorProto.INT64, [3]))
    model = gc.from_onnx(m).compile()
    x = np.random.default_rng(3).standard_normal((3, 5, 3)).astype(np.float32)
    got = model.predict(x)
    for k, w in zip(["y", "s"], _ort(m, {"x": x})):
        assert got[k].shape == w.shape and got[k].dtype == w.dtype
        np.testing.assert_allclose(got[k], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["s"], [5, 3, 4])


def test_merged_batch_axis_output_still_refused() -> None:
    """N merged with another axis at a non-first axis ([5, N*4]) has no N-first form."""
    m = _transposes()
    g = m.graph
    g.node.append(helper.make_node("Reshape", ["y", "shape"], ["f"]))
    g.initializer.append(numpy_helper.from_array(np.array([5, -1], np.int64), "shape"))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("f", TensorProto.FLOAT, [5, None]))
    with pytest.raises(gc.GraphcError, match="output 'f'"):
        gc.from_onnx(m).compile()


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_torch_lstm_gru_states_equal_onnx_runtime(layers, bidirectional) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(layers)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            kw = {"num_layers": layers, "bidirectional": bidirectional, "batch_first": True}
            self.lstm = nn.LSTM(6, 5, **kw)
            self.gru = nn.GRU(6, 4, **kw)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            z, g = self.gru(x)
            return y[:, -1], h, c, z, g

    net = Net().eval()
    f = io.BytesIO()
    x = torch.randn(3, 7, 6)
    names = ["last", "h", "c", "z", "g"]
    torch.onnx.export(
        net,
        (x,),
        f,
        opset_version=17,
        dynamo=False,
        input_names=["x"],
        output_names=names,
        dynamic_axes={"x": {0: "N"}},
    )
    m = onnx.load_from_string(f.getvalue())
    model = gc.from_onnx(m).compile()
    assert model.output_batch_axes == {"h": 1, "c": 1, "g": 1}
    dirs = 2 if bidirectional else 1
    for n in (1, 3):
        xv = np.random.default_rng(n).standard_normal((n, 7, 6)).astype(np.float32)
        want = dict(zip(names, _ort(m, {"x": xv})))
        assert want["h"].shape == (layers * dirs, n, 5)
        got = model.predict(xv)
        for k in names:
            _close(got[k], want[k])


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("classes", [[0, 1, 2], [7, -3, 40]])
def test_array_feature_extractor_of_1d_labels_is_1_by_n(keepdims, classes) -> None:
    """labels[ArgMax(x)] with 1-D labels: ONNX Runtime's [1, N] (indices [N] or [N, 1]), also
    when a Reshape to [-1] and a Cast read it."""
    nodes = [
        helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=keepdims),
        helper.make_node("ArrayFeatureExtractor", ["c", "i"], ["y"], domain="ai.onnx.ml"),
        helper.make_node("Reshape", ["y", "flat"], ["f"]),
        helper.make_node("Cast", ["f"], ["g"], to=TensorProto.FLOAT),
    ]
    g = helper.make_graph(
        nodes,
        "afe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.INT64, None),
            helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
        ],
        [
            numpy_helper.from_array(np.array(classes, np.int64), "c"),
            numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        ],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    m.ir_version = 8
    model = gc.from_onnx(m).compile()
    for n in (1, 4):
        x = np.random.default_rng(n).standard_normal((n, 3)).astype(np.float32)
        want = _ort(m, {"x": x})
        got = model.predict(x)
        assert want[0].shape == (1, n)
        for k, w in zip(["y", "g"], want):
            assert got[k].shape == w.shape and got[k].dtype == w.dtype
            np.testing.assert_array_equal(got[k], w)
