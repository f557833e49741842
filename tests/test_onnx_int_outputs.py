"""Integer and bool graph outputs of an imported ONNX model come back in the type the file
declares (int64 labels, TopK's indices, a comparison's bool, a cast to uint8), exact, as ONNX
Runtime returns them; the float outputs stay float32. graphc computes them in float32 (whole
numbers); before, predict returned them as float32 arrays."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import ArgumentError
from graphc.onnx_backend import GraphcRep


def _head(opset: int = 17) -> onnx.ModelProto:
    """x [N, 6] -> logits (MatMul + Add) -> probabilities (Softmax), label (ArgMax, int64),
    top2 indices (TopK, int64), positive (Greater, bool), bucket (Cast to uint8 of 3 * x0)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        helper.make_node("TopK", ["logits", "k"], ["top_v", "top_i"], axis=1),
        helper.make_node("Greater", ["logits", "zero"], ["positive"]),
        helper.make_node("Mul", ["x", "three"], ["x3"]),
        helper.make_node("Relu", ["x3"], ["x3r"]),
        helper.make_node("Cast", ["x3r"], ["bucket"], to=TensorProto.UINT8),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array([2], np.int64), "k"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(3.0, np.float32), "three"),
    ]
    outs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5]),
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("top_i", TensorProto.INT64, ["N", 2]),
        helper.make_tensor_value_info("positive", TensorProto.BOOL, ["N", 5]),
        helper.make_tensor_value_info("bucket", TensorProto.UINT8, ["N", 6]),
    ]
    g = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        outs,
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ref(m: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in m.graph.output]
    return dict(zip(names, sess.run(None, {"x": x})))


def _x(n: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 6)) * 3).astype(np.float32)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_predict_returns_the_declared_integer_and_bool_types(n: int) -> None:
    m = _head()
    x = _x(n)
    want = _ref(m, x)
    model = gc.from_onnx(m).compile()
    got = model.predict(x, batch_size=128)  # 300 rows: three native calls
    for k, w in want.items():
        assert got[k].dtype == w.dtype, (k, got[k].dtype, w.dtype)
        if w.dtype == np.float32:
            np.testing.assert_allclose(got[k], w, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(got[k], w)
    again = model.predict(x)  # a second call (no fast path keeps float32)
    assert again["label"].dtype == np.int64 and again["positive"].dtype == np.bool_


def test_one_integer_output_and_out_arrays() -> None:
    m = _head()
    x = _x(5, seed=2)
    want = _ref(m, x)
    label_only = gc.from_onnx(m, outputs=["label"]).compile()
    got = label_only.predict(x)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want["label"])
    assert label_only.predict(x).dtype == np.int64  # the single-array path, twice
    out = np.zeros(5, np.int64)
    assert label_only.predict(x, out=out) is out
    np.testing.assert_array_equal(out, want["label"])
    with pytest.raises(ArgumentError, match="'label' must be a int64 array"):
        label_only.predict(x, out=np.zeros(5, np.float32))
    full = gc.from_onnx(m).compile()
    outs = {k: np.empty_like(v) for k, v in want.items()}
    res = full.predict(x, out=outs)
    for k, w in want.items():
        assert res[k] is outs[k]
        np.testing.assert_array_equal(outs[k] if w.dtype != np.float32 else w, w)


@pytest.mark.parametrize("mode", ["interpret", "compile"])
def test_backend_rep_returns_the_declared_types(mode: str) -> None:
    m = _head()
    x = _x(4, seed=3)
    want = _ref(m, x)
    got = GraphcRep(m, mode=mode).run([x])
    for (k, w), g in zip(want.items(), got):
        assert g.dtype == w.dtype, (mode, k)
        if w.dtype != np.float32:
            np.testing.assert_array_equal(g, w)


def test_a_pickled_model_keeps_the_declared_types() -> None:
    import copy
    import pickle

    m = _head()
    x = _x(3, seed=4)
    want = _ref(m, x)
    model = gc.from_onnx(m).compile()
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        got = other.predict(x)
        assert got["bucket"].dtype == np.uint8
        np.testing.assert_array_equal(got["label"], want["label"])
        assert got["label"].dtype == np.int64


def _int_model(nodes, inputs, outputs, opset=17):
    g = helper.make_graph(
        nodes,
        "ints",
        [helper.make_tensor_value_info(n, t, ["N", 4]) for n, t in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def _same_as_ort(m, feeds):
    """predict against ONNX Runtime, or onnx.reference where ONNX Runtime has no kernel for a
    type (uint16 Add)."""
    try:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)
    except Exception as e:
        if "NOT_IMPLEMENTED" not in str(e):
            raise
        from onnx.reference import ReferenceEvaluator

        want = ReferenceEvaluator(m).run(None, feeds)
    model = gc.from_onnx(m).compile()
    got = model.predict(feeds)
    got = [got] if not isinstance(got, dict) else [got[o.name] for o in m.graph.output]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    return model


def test_integer_inputs_to_integer_outputs_in_their_type() -> None:
    """uint16 and int64 inputs through Add / ReduceMax / Equal to outputs of their types
    (refused before: 'x' is a graph output (an integer output)); a uint16 sum that would pass
    65535 (ONNX Runtime wraps it) is refused at run time naming the input."""
    U16, I64, B = TensorProto.UINT16, TensorProto.INT64, TensorProto.BOOL
    nodes = [
        helper.make_node("Add", ["x", "y"], ["s"]),
        helper.make_node("Add", ["ids", "one"], ["ids1"]),
        helper.make_node("ReduceMax", ["ids1"], ["top"], axes=[1], keepdims=0),
        helper.make_node("Equal", ["ids", "ids2"], ["eq"]),
    ]
    m = _int_model(
        nodes,
        [("x", U16), ("y", U16), ("ids", I64), ("ids2", I64)],
        [("s", U16), ("top", I64), ("eq", B)],
        opset=17,
    )
    m.graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), "one"))
    rng = np.random.default_rng(5)
    feeds = {
        "x": rng.integers(0, 30000, (6, 4)).astype(np.uint16),
        "y": rng.integers(0, 30000, (6, 4)).astype(np.uint16),
        "ids": rng.integers(-(10**6), 10**6, (6, 4)).astype(np.int64),
    }
    feeds["ids2"] = np.where(rng.random((6, 4)) < 0.5, feeds["ids"], 7)  # some equal
    model = _same_as_ort(m, feeds)
    big = dict(feeds, x=np.full((6, 4), 60000, np.uint16))
    with pytest.raises(ArgumentError, match=r"'x': row 0 holds 60000"):
        model.predict(big)


def test_bool_inputs_to_bool_outputs() -> None:
    """And / Xor / Not of bool inputs, bool outputs (refused before: 'a' used as an integer)."""
    B = TensorProto.BOOL
    nodes = [
        helper.make_node("And", ["a", "b"], ["both"]),
        helper.make_node("Xor", ["a", "b"], ["one"]),
        helper.make_node("Not", ["a"], ["na"]),
    ]
    m = _int_model(nodes, [("a", B), ("b", B)], [("both", B), ("one", B), ("na", B)])
    rng = np.random.default_rng(6)
    _same_as_ort(m, {"a": rng.random((5, 4)) < 0.5, "b": rng.random((5, 4)) < 0.5})


@pytest.mark.parametrize("upper, k", [(1, 0), (0, -1), (1, 2)])
def test_trilu_of_integer_input(upper: int, k: int) -> None:
    """Trilu of int64 ids [N, 4, 5] to an int64 output (refused before: 'ids' read as an
    integer by the Trilu)."""
    g = helper.make_graph(
        [helper.make_node("Trilu", ["ids", "k"], ["t"], upper=upper)],
        "trilu",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4, 5])],
        [helper.make_tensor_value_info("t", TensorProto.INT64, None)],
        [numpy_helper.from_array(np.array(k, np.int64), "k")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    ids = np.random.default_rng(9).integers(-(10**6), 10**6, (3, 4, 5)).astype(np.int64)
    _same_as_ort(m, {"ids": ids})


def test_a_saved_model_file_keeps_the_declared_types(tmp_path) -> None:
    """save_model / load_model keeps what predict converts: the head's int64, bool and uint8
    outputs, MaxPool's Indices with their batch row term (n * C * P), bool inputs; before,
    the loaded model returned float32 and Indices without the row term (wrong from row 1 on).
    A file whose output_dtypes names a float type is refused by name."""
    m = _head()
    x = _x(5, seed=7)
    want = _ref(m, x)
    gc.from_onnx(m).compile().save_model(str(tmp_path / "head.gcm"))
    got = gc.load_model(str(tmp_path / "head.gcm")).predict(x)
    for k, w in want.items():
        assert got[k].dtype == w.dtype, (k, got[k].dtype, w.dtype)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(got[k], w)

    g = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 3, 3]),
            helper.make_tensor_value_info("i", TensorProto.INT64, ["N", 3, 3, 3]),
        ],
    )
    mp = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    xs = np.random.default_rng(8).standard_normal((4, 3, 4, 4)).astype(np.float32)
    sess = ort.InferenceSession(mp.SerializeToString(), providers=["CPUExecutionProvider"])
    wi = sess.run(None, {"x": xs})[1]
    gc.from_onnx(mp).compile().save_model(str(tmp_path / "pool.gcm"))
    gi = gc.load_model(str(tmp_path / "pool.gcm")).predict(xs, batch_size=3)["i"]
    assert gi.dtype == np.int64
    np.testing.assert_array_equal(gi, wi)

    B = TensorProto.BOOL
    mb = _int_model(
        [helper.make_node("Xor", ["a", "b"], ["one"])], [("a", B), ("b", B)], [("one", B)]
    )
    rng = np.random.default_rng(9)
    feeds = {"a": rng.random((5, 4)) < 0.5, "b": rng.random((5, 4)) < 0.5}
    gc.from_onnx(mb).compile().save_model(str(tmp_path / "bool.gcm"))
    got_b = gc.load_model(str(tmp_path / "bool.gcm")).predict(feeds)
    assert got_b.dtype == np.bool_
    np.testing.assert_array_equal(got_b, feeds["a"] ^ feeds["b"])

    from graphc.ir.errors import CheckpointError
    from graphc.runtime import checkpoint
    from graphc.runtime.modelfile import describe

    model = gc.from_onnx(m).compile()
    model.output_dtypes = dict(model.output_dtypes, label=np.dtype(np.float32))
    checkpoint.save(model, str(tmp_path / "bad.gcm"), extra={"model_file": describe(model)})
    with pytest.raises(CheckpointError, match="output_dtypes"):
        gc.load_model(str(tmp_path / "bad.gcm"))


def test_shape_outputs_known_at_import_beside_computed_ones() -> None:
    """Shape(x) = [N, 6] (the batch size from predict's rows) and Shape(x, start=1) beside a
    computed output: int64 and equal to ONNX Runtime's at 2 and 5 rows, in the
    file's order, also after a pickle (refused before: 'output 's' is a constant')."""
    import pickle

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Shape", ["x"], ["s1"], start=1),
    ]
    g = helper.make_graph(
        nodes,
        "shapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [
            helper.make_tensor_value_info("s", TensorProto.INT64, None),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("s1", TensorProto.INT64, None),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    model = gc.from_onnx(m).compile()
    for rows in (2, 5):
        x = _x(rows)
        want = sess.run(None, {"x": x})
        for got in (model.predict(x), pickle.loads(pickle.dumps(model)).predict(x)):
            assert list(got) == ["s", "y", "s1"]
            for k, w in zip(got, want):
                assert got[k].dtype == w.dtype and got[k].shape == w.shape, k
                np.testing.assert_array_equal(got[k], w)
        for mode in ("interpret", "compile"):
            for g_k, w in zip(GraphcRep(m, mode=mode).run([x]), want):
                np.testing.assert_array_equal(g_k, w)
    with pytest.raises(ArgumentError, match="out= is not taken"):
        model.predict(x, out={"y": np.empty_like(x)})


def test_files_without_the_outputs_known_at_import_are_refused(tmp_path) -> None:
    """to_onnx and export would leave Shape(x) out (to_onnx wrote the file with 'y' only):
    refused naming 's', nothing written; the computed outputs alone export."""
    g = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Relu", ["x"], ["y"])],
        "shapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [
            helper.make_tensor_value_info("s", TensorProto.INT64, None),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    from graphc.export import export_model  # what `graphc export` calls

    model = gc.from_onnx(m).compile()
    for call in (
        lambda: model.to_onnx(str(tmp_path / "m.onnx")),
        lambda: model.export(str(tmp_path / "libm.so")),
        lambda: export_model(model, str(tmp_path / "libm2.so")),
    ):
        with pytest.raises(gc.GraphcError, match=r"\['s'\] are known at import"):
            call()
    assert not list(tmp_path.iterdir())
    gc.from_onnx(m, outputs=["y"]).compile().to_onnx(str(tmp_path / "y.onnx"))
