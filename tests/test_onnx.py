"""ONNX import: real exporters' graphs against ONNX Runtime, ONNX's node tests, malformed files."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.onnx_import import OPS

RTOL, ATOL = 1e-5, 1e-7  # float32 outputs against ONNX Runtime's


def ort_run(model_or_path, feeds: dict) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    got = np.asarray(got).reshape(np.shape(want))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def init(name: str, a: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


def make_model(nodes, inputs, outputs, inits, opset: int, name: str = "net") -> onnx.ModelProto:
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def pytorch_like(rng: np.random.Generator, opset: int = 17) -> onnx.ModelProto:
    """What torch.onnx.export writes for Flatten -> Linear -> ReLU -> Linear: Gemm with
    transB=1 (weights stored [out, in]), a dim_param batch, names like /fc1/Gemm."""
    w1 = rng.standard_normal((32, 64)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((10, 32)).astype(np.float32) * 0.2
    nodes = [
        helper.make_node("Flatten", ["input"], ["/Flatten_output_0"], "/flatten/Flatten", axis=1),
        helper.make_node(
            "Gemm",
            ["/Flatten_output_0", "fc1.weight", "fc1.bias"],
            ["/fc1/Gemm_output_0"],
            "/fc1/Gemm",
            alpha=1.0,
            beta=1.0,
            transB=1,
        ),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu/Relu_output_0"], "/relu/Relu"),
        helper.make_node(
            "Gemm",
            ["/relu/Relu_output_0", "fc2.weight", "fc2.bias"],
            ["output"],
            "/fc2/Gemm",
            transB=1,
        ),
    ]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 1, 8, 8])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", 10])
    inits = [
        init("fc1.weight", w1),
        init("fc1.bias", rng.standard_normal(32).astype(np.float32) * 0.1),
        init("fc2.weight", w2),
        init("fc2.bias", rng.standard_normal(10).astype(np.float32) * 0.1),
    ]
    m = make_model(nodes, [inp], [out], inits, opset, "main_graph")
    m.producer_name = "pytorch"
    return m


def keras_like(rng: np.random.Generator) -> onnx.ModelProto:
    """What tf2onnx writes for a Keras Flatten -> Dense(relu) -> Dense(softmax): a Reshape with
    a -1, MatMul + Add, an unk__ batch dimension, an Identity at the end."""
    nodes = [
        helper.make_node("Reshape", ["input_1", "const_fold_opt__10"], ["flatten/Reshape:0"]),
        helper.make_node("MatMul", ["flatten/Reshape:0", "dense/MatMul/ReadVariableOp:0"], ["m1"]),
        helper.make_node("Add", ["m1", "dense/BiasAdd/ReadVariableOp:0"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["dense/Relu:0"]),
        helper.make_node("MatMul", ["dense/Relu:0", "dense_1/MatMul/ReadVariableOp:0"], ["m2"]),
        helper.make_node("Add", ["m2", "dense_1/BiasAdd/ReadVariableOp:0"], ["a2"]),
        helper.make_node("Softmax", ["a2"], ["dense_1/Softmax:0"], axis=-1),
        helper.make_node("Identity", ["dense_1/Softmax:0"], ["dense_1"]),
    ]
    inp = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__6", 6, 6])
    out = helper.make_tensor_value_info("dense_1", TensorProto.FLOAT, ["unk__7", 5])
    inits = [
        init("const_fold_opt__10", np.array([-1, 36], np.int64)),
        init("dense/MatMul/ReadVariableOp:0", rng.standard_normal((36, 16)).astype(np.float32)),
        init("dense/BiasAdd/ReadVariableOp:0", rng.standard_normal(16).astype(np.float32)),
        init("dense_1/MatMul/ReadVariableOp:0", rng.standard_normal((16, 5)).astype(np.float32)),
        init("dense_1/BiasAdd/ReadVariableOp:0", rng.standard_normal(5).astype(np.float32)),
    ]
    m = make_model(nodes, [inp], [out], inits, 13, "tf2onnx")
    m.producer_name = "tf2onnx"
    return m


# ---------------------------------------------------------------- packaging


def test_importing_graphc_does_not_import_onnx() -> None:
    code = "import sys, graphc; assert 'onnx' not in sys.modules, 'onnx imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_onnx_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(gc.OnnxError, match=r'pip install onnx .*pip install -e "\.\[onnx\]"'):
        gc.from_onnx("model.onnx")


# ---------------------------------------------------------------- exporters vs ONNX Runtime


def _sklearn_model(kind: str):
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 7)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the few iterations
        if kind == "regressor":
            est = MLPRegressor(hidden_layer_sizes=(16, 8), max_iter=200, random_state=0)
            est.fit(x, x[:, 0] - 2 * x[:, 1])
        else:
            classes = 2 if kind == "binary" else 3
            est = MLPClassifier(
                hidden_layer_sizes=(16,), activation="tanh", max_iter=200, random_state=0
            )
            est.fit(x, (x[:, 0] > 0).astype(int) + (classes == 3) * (x[:, 1] > 0))
        m = to_onnx(
            est, x[:1], options={id(est): {"zipmap": False}} if kind != "regressor" else None
        )
    return est, m, x


@pytest.mark.parametrize("kind", ["regressor", "binary", "multiclass"])
def test_sklearn_mlp_matches_onnxruntime(kind: str) -> None:
    est, m, x = _sklearn_model(kind)
    model = gc.from_onnx(m).compile()  # every output: label and probabilities, or variable
    got = model.predict(x)
    want = ort_run(m, {"X": x})
    if kind == "regressor":
        assert_close(got, want[0])
        return
    assert set(got) == {"label", "probabilities"}  # the exporter's output names
    label, probs = got["label"], got["probabilities"]
    np.testing.assert_array_equal(label.reshape(-1), want[0])  # int64 labels, exact
    np.testing.assert_array_equal(label.reshape(-1), est.predict(x))
    assert_close(probs, want[1])
    np.testing.assert_allclose(probs, est.predict_proba(x), rtol=1e-4, atol=1e-6)


def test_sklearn_classifier_with_zipmap_and_string_free_labels() -> None:
    """skl2onnx's default ends in ZipMap (a list of {class: probability}); graphc returns its
    [N, C] array, columns in class order; labels 3, 5, 9 come out of ArrayFeatureExtractor."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(12)
    x = rng.standard_normal((90, 5)).astype(np.float32)
    y = np.array([3, 5, 9])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=100, random_state=0).fit(x, y)
        m = to_onnx(est, x[:1])
    out = gc.from_onnx(m).compile().predict(x)
    label, probs = out.values()
    labels_ort, maps = ort_run(m, {"X": x})
    np.testing.assert_array_equal(label.reshape(-1), labels_ort)
    assert_close(probs, np.array([[d[c] for c in (3, 5, 9)] for d in maps], np.float32))


@pytest.mark.parametrize("opset", [13, 17, onnx.defs.onnx_opset_version()])
def test_pytorch_like_graph_with_external_data(tmp_path, opset: int) -> None:
    rng = np.random.default_rng(1)
    m = pytorch_like(rng, opset)
    path = str(tmp_path / "model.onnx")
    onnx.save_model(
        m, path, save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    assert os.path.exists(tmp_path / "model.onnx.data")
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    imp = gc.from_onnx(path)
    assert imp.inputs[0].shape == ("N", 1, 8, 8)
    assert set(imp.params) == {"fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"}
    assert_close(imp.compile().predict(x), ort_run(path, {"input": x})[0])


def test_keras_like_graph_matches_onnxruntime() -> None:
    rng = np.random.default_rng(2)
    m = keras_like(rng)
    x = rng.standard_normal((9, 6, 6)).astype(np.float32)
    model = gc.from_onnx(m).compile()
    assert_close(model.predict(x), ort_run(m, {"input_1": x})[0])


def test_flatten_by_shape_computation() -> None:
    """Shape -> Gather(0) -> Unsqueeze -> Concat([N, -1]) -> Reshape: the older exporters'
    flatten; N stays symbolic through the shape arithmetic."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y0"]),
        helper.make_node("Sigmoid", ["y0"], ["y"]),
    ]
    inits = [
        init("zero", np.array(0, np.int64)),
        init("axes0", np.array([0], np.int64)),
        init("minus1", np.array([-1], np.int64)),
        init("w", w),
    ]
    m = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
        13,
    )
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    assert_close(gc.from_onnx(m).compile().predict(x), ort_run(m, {"x": x})[0])


# ---------------------------------------------------------------- fine-tuning


def test_fine_tune_only_the_chosen_layers() -> None:
    rng = np.random.default_rng(4)
    m = pytorch_like(rng)
    imp = gc.from_onnx(m, trainable=["fc2.weight", "fc2.bias"])
    assert set(imp.params) == {"fc2_weight", "fc2_bias"}
    assert set(imp.constants) == {"fc1_weight", "fc1_bias"}
    labels = gc.input("labels", ("N",), dtype="i32")
    model = imp.compile(gc.softmax_cross_entropy(imp.outputs[0], labels), gc.SGD(0.1))
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    fc1 = model.state["fc1_weight"].copy()
    fc2 = model.params["fc2_weight"].copy()
    np.testing.assert_array_equal(fc2, numpy_helper.to_array(m.graph.initializer[2]))
    first = model.train_step(x, y)
    for _ in range(20):
        last = model.train_step(x, y)
    assert last < first
    np.testing.assert_array_equal(model.state["fc1_weight"], fc1)  # a constant stays
    assert not np.array_equal(model.params["fc2_weight"], fc2)


def test_trainable_names_that_are_no_initializer_are_refused() -> None:
    """A misspelled or foreign name in trainable= used to leave every weight constant without a
    word (fine-tuning then trained nothing); one name given as a str was read as its set of
    characters. The error names the unknown name and its close match."""
    from graphc.ir.errors import OnnxError

    m = pytorch_like(np.random.default_rng(4))
    with pytest.raises(OnnxError, match=r"'fc2\.weights' \(close: 'fc2\.weight'"):
        gc.from_onnx(m, trainable=["fc2.weights", "fc2.bias"])
    with pytest.raises(OnnxError, match=r"'dense_1/kernel'.*initializers: 'fc1\.bias'"):
        gc.from_onnx(m, trainable=("dense_1/kernel",))
    with pytest.raises(OnnxError, match="trainable must be True, False"):
        gc.from_onnx(m, trainable=3)
    imp = gc.from_onnx(m, trainable="fc2.weight")  # one name
    assert set(imp.params) == {"fc2_weight"}
    imp = gc.from_onnx(m, trainable=lambda n: n.startswith("fc2"))  # a predicate: no check
    assert set(imp.params) == {"fc2_weight", "fc2_bias"}


def test_imported_weights_travel_with_the_program_to_another_process(tmp_path) -> None:
    """The file's weights come with the compiled program (Program.constants), not a registry
    of this process: a fine-tuned import saved as a model file predicts the same in a fresh
    process, and two imports of the same graph with other weights do not share values."""
    rng = np.random.default_rng(5)
    m = pytorch_like(rng)
    imp = gc.from_onnx(m, trainable=["fc2.weight", "fc2.bias"])
    labels = gc.input("labels", ("N",), dtype="i32")
    model = imp.compile(gc.softmax_cross_entropy(imp.outputs[0], labels), gc.SGD(0.1))
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    model.train_step(x, rng.integers(0, 10, 16))
    path = tmp_path / "tuned.gcm"
    model.save_model(path)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, graphc as gc\n"
        f"m = gc.load_model({str(path)!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r})))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model.predict(x))
    other = pytorch_like(np.random.default_rng(6))
    want = ort_run(other, {"input": x})[0]
    got = gc.from_onnx(other).compile().predict(x)
    assert_close(got, want)
    assert not np.allclose(got, model.predict(x))


def test_a_constant_without_its_values_is_named() -> None:
    from graphc.ir.errors import GraphcError

    imp = gc.from_onnx(pytorch_like(np.random.default_rng(7)), trainable=False)
    for t in imp.constants.values():
        t.value = None  # as a graph rebuilt from text without the file's values
    with pytest.raises(GraphcError, match=r"fc1_weight|fc1_bias|fc2_weight|fc2_bias"):
        imp.compile()


@pytest.mark.parametrize(
    "outputs, nodes",
    [
        (["y", "y2"], [("Relu", ["x"], ["y"]), ("Identity", ["y"], ["y2"])]),  # folded alias
        (["out"], [("Identity", ["x"], ["out"])]),  # a graph input under another name
        (["y", "x"], [("Relu", ["x"], ["y"])]),  # a graph input under its own name
        (
            ["a", "b"],
            [("Neg", ["x"], ["a"]), ("Identity", ["a"], ["t"]), ("Identity", ["t"], ["b"])],
        ),
    ],
)
def test_outputs_keep_their_onnx_names_as_onnxruntime(outputs, nodes) -> None:
    """predict's dict is keyed by the file's output names, each with ONNX Runtime's values,
    also where an output is another output's value or a graph input."""
    m = make_model(
        [helper.make_node(op, i, o) for op, i, o in nodes],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", 3]) for o in outputs],
        [],
        17,
    )
    x = np.array([[-1.0, 2.0, 3.0], [4.0, -5.0, 0.25]], np.float32)
    want = dict(zip(outputs, ort_run(m, {"x": x})))
    imp = gc.from_onnx(m)
    assert list(imp.output_names) == outputs
    got = imp.compile().predict(x)
    got = got if isinstance(got, dict) else {outputs[0]: got}
    assert list(got) == outputs
    for k in outputs:
        assert_close(got[k], np.broadcast_to(want[k], got[k].shape))


# ---------------------------------------------------------------- errors, untrusted files


def _one_node(op: str, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], "the_node", **attrs)
    return make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [],
        17,
    )


def test_unsupported_operator_names_node_op_opset_and_the_supported() -> None:
    m = _one_node("Det")
    with pytest.raises(
        gc.OnnxError, match=r"node 0 'the_node' \(Det, opset 17\).*Supported:.*Gemm"
    ):
        gc.from_onnx(m)


def test_unsupported_attribute_is_named() -> None:
    node = helper.make_node("Relu", ["x"], ["y"], "r", bogus=3)  # the checker would refuse it
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(gc.OnnxError, match=r"'r' \(Relu, opset 14\): attribute 'bogus'"):
        gc.from_onnx(m)


def test_integer_input_and_symbolic_inner_dimension_are_rejected() -> None:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
    )
    with pytest.raises(gc.OnnxError, match="input 'x': element type int64"):
        gc.from_onnx(helper.make_model(g))
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(gc.OnnxError, match="dimension 1 is symbolic"):
        gc.from_onnx(helper.make_model(g))


def test_malformed_files_raise_onnx_error(tmp_path) -> None:
    rng = np.random.default_rng(5)
    good = pytorch_like(rng).SerializeToString()
    for i, data in enumerate([b"", b"\x00garbage\xff" * 10, good[: len(good) // 2], good[::-1]]):
        p = tmp_path / f"bad{i}.onnx"
        p.write_bytes(data)
        with pytest.raises(gc.OnnxError):
            gc.from_onnx(str(p))
    with pytest.raises(gc.OnnxError, match="does not exist"):
        gc.from_onnx(str(tmp_path / "missing.onnx"))


def test_mutated_files_never_crash() -> None:
    """Random byte flips of real exporters' files: each import succeeds or raises OnnxError."""
    rng = np.random.default_rng(11)
    seeds = [pytorch_like(rng).SerializeToString(), keras_like(rng).SerializeToString()]
    outcomes = {"ok": 0, "OnnxError": 0}
    for i in range(120):
        data = bytearray(seeds[i % 2])
        for _ in range(1 + i % 4):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        try:
            gc.from_onnx(bytes(data))
            outcomes["ok"] += 1
        except gc.OnnxError:
            outcomes["OnnxError"] += 1
    assert outcomes["OnnxError"] > 0 and outcomes["ok"] > 0, outcomes


def _external_model(tmp_path, location: str, length: int | None = None) -> str:
    m = pytorch_like(np.random.default_rng(6))
    t = m.graph.initializer[0]
    raw = numpy_helper.to_array(t).tobytes()
    (tmp_path / "w.bin").write_bytes(raw)
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": "0"}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    path = str(tmp_path / "sub" / "m.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return path


def test_external_data_outside_the_model_folder_is_refused(tmp_path) -> None:
    with pytest.raises(gc.OnnxError, match="outside the model's folder"):
        gc.from_onnx(_external_model(tmp_path, "../w.bin"))
    with pytest.raises(gc.OnnxError, match="relative path"):
        gc.from_onnx(_external_model(tmp_path, str(tmp_path / "w.bin")))


def test_external_data_of_the_wrong_size_is_refused(tmp_path) -> None:
    path = _external_model(tmp_path, "w.bin")
    os.replace(tmp_path / "w.bin", tmp_path / "sub" / "w.bin")
    with open(tmp_path / "sub" / "w.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(gc.OnnxError, match="runs past the end"):
        gc.from_onnx(path)
    with pytest.raises(gc.OnnxError, match="length 7"):
        gc.from_onnx(_external_model(tmp_path, "w.bin", length=7))


def test_initializer_with_too_few_values_is_refused() -> None:
    m = pytorch_like(np.random.default_rng(7))
    t = m.graph.initializer[1]
    t.raw_data = t.raw_data[:8] if t.raw_data else np.zeros(2, np.float32).tobytes()
    t.ClearField("float_data")
    with pytest.raises(gc.OnnxError, match=r"fc1\.bias"):
        gc.from_onnx(m)


# ---------------------------------------------------------------- ONNX's node tests


def test_onnx_node_tests_pass_or_are_documented_unsupported() -> None:
    """Every node test case of every supported operator (interpreted: the import's meaning,
    checked against ONNX's reference outputs), and compiled for one case per operator."""
    from graphc.onnx_backend import node_cases, run_case, run_node_tests

    reports = run_node_tests(mode="interpret")
    failures = [(r.op, name, why) for r in reports for name, why in r.failed]
    assert not failures, failures
    ran = {r.op: len(r.passed) for r in reports}
    for op in ("Gemm", "MatMul", "Relu", "Softmax", "Flatten", "Reshape", "Sigmoid", "Tanh"):
        assert ran[op] >= 1, op
    compiled = []
    for r in reports:
        if r.passed:
            case = next(c for c in node_cases(r.op) if c.name == r.passed[0])
            status, why = run_case(case, "compile")
            if status != "pass":
                compiled.append((r.op, case.name, why))
    assert not compiled, compiled


# operators whose node tests onnx added later than graphc's minimum (1.17): the release
NODE_TESTS_SINCE = {"LpNormalization": (1, 19), "CumProd": (1, 21)}  # (CumProd: opset 26)
# operators onnx ships no node test for (up to 1.23), with the test that checks them instead
NO_NODE_TESTS = {
    "GlobalLpPool": "tests/test_onnx_lp_lrn.py, against ONNX Runtime",
    **{  # (onnx's test_sequence_model* cases combine them, with sequence inputs and outputs)
        op: "tests/test_onnx_control.py, against ONNX Runtime"
        for op in (
            "SequenceEmpty",
            "SequenceConstruct",
            "SequenceErase",
            "SequenceAt",
            "SequenceLength",
            "ConcatFromSequence",
            "Optional",  # (onnx's optional cases feed optional graph inputs instead)
        )
    },
}


def test_every_rule_has_node_tests_or_is_ml_domain() -> None:
    from graphc.onnx_backend import node_cases

    have = tuple(int(v) for v in onnx.__version__.split(".")[:2])
    missing = [
        op
        for op in OPS
        if ":" not in op
        and op not in NO_NODE_TESTS
        and not node_cases(op)
        and have >= NODE_TESTS_SINCE.get(op, (0, 0))
    ]
    assert not missing, missing


# ---------------------------------------------------------------- export


def _dsl_mlp():
    x = gc.input("x", ("N", 6))
    h = gc.dense(x, 12, "tanh", name="fc1")
    h = gc.dense(h, 8, "relu", name="fc2")
    h = gc.maximum(h, 0.25 * h) + gc.square(h) * 0.01 - gc.sqrt(gc.softplus(h)) / 3.0
    logits = gc.dense(h, 4, name="out")
    probs = gc.softmax(logits)
    labels = gc.input("labels", ("N",), dtype="i32")
    return probs, gc.softmax_cross_entropy(logits, labels)


def test_export_checks_matches_onnxruntime_and_round_trips(tmp_path) -> None:
    probs, loss = _dsl_mlp()
    model = gc.compile(probs, loss, gc.Adam(1e-2), seed=3)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)  # exported weights are trained ones
    path = str(tmp_path / "mlp.onnx")
    model.to_onnx(path)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    docs = [n.doc_string for n in m.graph.node]
    assert any("test_onnx.py" in d and "graphc" in d for d in docs), docs[:3]
    want = model.predict(x)
    assert_close(ort_run(path, {"x": x})[0], want)
    imp = gc.from_onnx(path)
    again = imp.compile()
    assert_close(again.predict(x), want)

    # the same graph: the same ops in the same order (sources aside)
    def ops(g):
        return [n.op for n in g.nodes if n.op not in ("input", "param", "state", "const")]

    assert ops(again.program.inference) == ops(model.program.inference)
    # with the loss: ONNX Runtime's SoftmaxCrossEntropyLoss equals model.evaluate's loss
    lpath = str(tmp_path / "mlp_loss.onnx")
    model.to_onnx(lpath, include_loss=True)
    got = ort_run(lpath, {"x": x, "labels": y.astype(np.int32)})
    np.testing.assert_allclose(got[1], model.evaluate(x, y)["loss"], rtol=1e-5)


def test_exported_binary_cross_entropy_at_extreme_and_infinite_logits(tmp_path) -> None:
    """The exported logits-form BCE equals the formula's limit at infinite logits, as graphc's
    op does (no NaN from inf - inf or inf * 0), and the float64 formula elsewhere."""
    x = gc.input("x", ("N", 4))
    t = gc.input("t", ("N", 4))
    z = x * gc.param("scale", (4,), init="ones")
    model = gc.compile([z], gc.binary_cross_entropy(z, t), gc.SGD(0.1))
    path = str(tmp_path / "bce.onnx")
    model.to_onnx(path, include_loss=True)
    inf = np.inf
    xs = np.array([[inf, -inf, 80.0, -80.0], [3.0, -2.0, 0.0, 1e-3]], np.float32)
    ts = np.array([[1.0, 0.0, 1.0, 0.0], [0.25, 1.0, 0.5, 0.0]], np.float32)
    loss = ort_run(path, {"x": xs, "t": ts})[1]
    z64, t64 = xs.astype(np.float64), ts.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        per = np.logaddexp(0.0, z64) - z64 * t64
    per[0, :2] = 0.0  # the limits at the target: softplus(z) - z y -> 0
    np.testing.assert_allclose(loss, per.mean(), rtol=1e-6)
    finite = ort_run(path, {"x": xs[1:], "t": ts[1:]})[1]
    np.testing.assert_allclose(finite, model.evaluate(xs[1:], ts[1:])["loss"], rtol=1e-6)


def test_cli_compiles_and_dumps_an_onnx_file(tmp_path) -> None:
    from graphc.cli import main

    path = str(tmp_path / "torchlike.onnx")
    onnx.save_model(pytorch_like(np.random.default_rng(9)), path)
    out = str(tmp_path / "back.onnx")
    assert main(["compile", path, "--emit", "onnx", "-o", out]) == 0
    out13 = str(tmp_path / "back13.onnx")
    assert main(["compile", path, "--emit", "onnx", "--opset", "13", "-o", out13]) == 0
    assert onnx.load(out13).opset_import[0].version == 13
    x = np.random.default_rng(10).standard_normal((3, 1, 8, 8)).astype(np.float32)
    assert_close(ort_run(out, {"input": x})[0], ort_run(path, {"input": x})[0])
    lib = str(tmp_path / "libtorchlike.so")
    assert main(["compile", path, "-o", lib, "--entry", "infer"]) == 0
    assert_close(gc.load(lib).predict(x), ort_run(path, {"input": x})[0])
    assert main(["dump", path, "-o", str(tmp_path / "dump.txt")]) == 0
    dump = (tmp_path / "dump.txt").read_text()
    assert "matmul" in dump
    # every source line points into the ONNX file: inputs, initializers and nodes
    assert "torchlike.onnx: input 'input'" in dump and "torchlike.onnx: node 1 '/fc1/Gemm'" in dump
    assert "test_onnx.py" not in dump and "runpy" not in dump


def test_every_forward_op_has_an_onnx_form() -> None:
    """Ops that can reach an inference or loss graph need an EXPORTS entry (the rest belong to
    gradients, optimizer updates or training-only dropout)."""
    from graphc.ir.ops import OPS as IR_OPS
    from graphc.onnx_export import EXPORTS

    training_only = {
        "dropout",
        "one_minus_pow",
        "size",
        "softmax_cross_entropy_grad",
        "increment",  # the optimizer's step counter
    }
    missing = sorted(
        op
        for op in IR_OPS
        if op not in EXPORTS
        and IR_OPS[op].kind != "source"
        and op not in training_only
        and not op.endswith(("_update", "_grad"))
    )
    assert not missing, f"no ONNX form for {missing}: add them to graphc.onnx_export.EXPORTS"


def test_sklearn_example_on_digits(tmp_path) -> None:
    """examples/onnx_sklearn.py: the library predicts scikit-learn's classes, fine-tuning with
    graphc lowers the test loss, and ONNX Runtime reads the fine-tuned export back."""
    pytest.importorskip("skl2onnx")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples"))
    import onnx_sklearn

    r = onnx_sklearn.main(["--out", str(tmp_path), "--epochs", "2"])
    assert r["library_matches_sklearn"] == 1.0
    assert r["sklearn_accuracy"] >= 0.95 and r["accuracy_after"] >= 0.95
    assert r["loss_after"] < r["loss_before"]
    assert r["onnxruntime_max_diff"] < 1e-5


def test_export_of_argmax_cast_concat_and_activations(tmp_path) -> None:
    """Ops of issue 14 through the exporter: ONNX Runtime agrees, and the file reads back."""
    x = gc.input("x", ("N", 5))
    h = gc.concat([gc.elu(x), gc.leaky_relu(x)], axis=1)
    idx = gc.cast(gc.argmax(h, axis=1), dtype="f32")
    model = gc.compile([h, idx])
    path = str(tmp_path / "ops.onnx")
    model.to_onnx(path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    xs = np.random.default_rng(13).standard_normal((7, 5)).astype(np.float32)
    want = model.predict(xs)
    got = ort_run(path, {"x": xs})
    assert_close(got[0], want[h.name])
    np.testing.assert_array_equal(got[1], want[idx.name])


def test_two_imports_with_the_same_names_combine_with_a_prefix() -> None:
    """Two PyTorch exports name their tensors alike (input, fc1.weight, output): combined in
    one model they clash, with a message naming the prefix option; with it they combine, and
    each keeps its own weights (vs ONNX Runtime)."""
    m1, m2 = pytorch_like(np.random.default_rng(11)), pytorch_like(np.random.default_rng(12))
    a, b = gc.from_onnx(m1), gc.from_onnx(m2)
    with pytest.raises(gc.GraphcError, match=r"prefix='m2_'"):
        gc.compile([a.outputs[0], b.outputs[0]])
    b = gc.from_onnx(m2, prefix="m2_")
    model = gc.compile([a.outputs[0], b.outputs[0]], name="both")
    x = np.random.default_rng(13).standard_normal((3, 1, 8, 8)).astype(np.float32)
    got = model.predict({"input": x, "m2_input": x})
    got = list(got.values()) if isinstance(got, dict) else got
    for out, m in zip(got, (m1, m2)):  # sums of 64 products: absolute error ~4e-7
        np.testing.assert_allclose(out, ort_run(m, {"input": x})[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(gc.OnnxError, match="prefix"):
        gc.from_onnx(m2, prefix="2 bad")


def test_export_names_no_two_values_alike_whatever_the_user_names(tmp_path) -> None:
    """The exporter's own tensors (constants, intermediate values: BASE__K) never take a name
    the graph already has: an input "c__1", a param "two__2" or "shape__3" (names DSL users and
    ONNX files may give) made an initializer twice or shadowed the input, and the checker
    refused the file. ONNX Runtime computes what predict does."""
    x = gc.input("x", ("N", 16))
    c = gc.input("c__1", ("N", 16))
    two, shp = gc.param("two__2", (16,), init="ones"), gc.param("shape__3", (16,), init="ones")
    h = gc.clip(x, min=-1.0, max=1.0) + c + gc.square(x) * two
    out = gc.reshape(gc.gelu(h) + shp, ("N", 4, 4))
    model = gc.compile([out], seed=1)
    path = str(tmp_path / "names.onnx")
    model.to_onnx(path)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    names = [i.name for i in m.graph.initializer] + [o for n in m.graph.node for o in n.output]
    assert len(names) == len(set(names)) and "c__1" not in names
    rng = np.random.default_rng(3)
    xs, cs = (rng.standard_normal((5, 16)).astype(np.float32) for _ in range(2))
    assert_close(ort_run(path, {"x": xs, "c__1": cs})[0], model.predict({"x": xs, "c__1": cs}))


@pytest.mark.parametrize("taken", [False, True], ids=["plain", "a_param_named_loss"])
def test_exported_loss_output_is_named_loss(tmp_path, taken) -> None:
    """include_loss: the loss is the last output and is named "loss" as docs/onnx.md says (it
    was the graph's value name, "%57", so sess.run(["loss"], ...) failed); when the graph
    has another value named "loss", the output is "loss__K" and the file stays valid. ONNX
    Runtime's value equals model.evaluate's loss."""
    x, t = gc.input("x", ("N", 5)), gc.input("t", ("N", 3))
    z = gc.dense(x, 3, name="d")
    if taken:
        z = z * gc.param("loss", (3,), init="ones")
    model = gc.compile([z], gc.huber(z, t), gc.SGD(0.1), seed=1)
    path = str(tmp_path / "loss.onnx")
    model.to_onnx(path, include_loss=True)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    names = [o.name for o in m.graph.output]
    assert names[0] == "y"  # an unnamed output: the C header's name of it
    assert names[1].startswith("loss__") if taken else names[1] == "loss", names
    rng = np.random.default_rng(4)
    xs, ts = (
        rng.standard_normal((6, 5)).astype(np.float32),
        rng.standard_normal((6, 3)).astype(np.float32),
    )
    got = dict(zip(names, ort_run(path, {"x": xs, "t": ts}), strict=True))
    np.testing.assert_allclose(got[names[1]], model.evaluate(xs, ts)["loss"], rtol=1e-6)


def test_export_at_each_opset_runs_in_onnxruntime(tmp_path) -> None:
    """to_onnx(opset=...): 13 (the oldest with every form graphc writes), 17 (the default), 18
    (ReduceMean/Max/Min take axes as an input, not an attribute) and the newest the onnx
    package defines pass the full checker and strict shape inference, and ONNX Runtime gives
    predict's outputs and evaluate's loss; the IR version is the oldest the opset allows.
    Opsets outside that range, and non-ints, are OnnxErrors naming the range."""
    from graphc.onnx_export import MIN_OPSET

    x, y = gc.input("x", ("N", 6)), gc.input("y", ("N",), dtype="i32")
    h = gc.dense(x, 8, "gelu", name="a")
    h = gc.concat([gc.mean(h, axes=1, keepdims=True) + h, gc.max(h, axes=1, keepdims=True) * h], 1)
    z = gc.dense(gc.where(gc.greater_equal(h, 0.0), h, gc.min(h, axes=0)), 3, name="b")
    model = gc.compile([gc.softmax(z)], gc.softmax_cross_entropy(z, y), gc.SGD(0.1), seed=2)
    rng = np.random.default_rng(5)
    xs, ys = rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 3, 5).astype(np.int32)
    want, loss = model.predict(xs), model.evaluate(xs, ys)["loss"]
    newest = onnx.defs.onnx_opset_version()
    for opset in sorted({MIN_OPSET, 17, 18, newest}):
        path = str(tmp_path / f"m{opset}.onnx")
        model.to_onnx(path, include_loss=True, opset=opset)
        m = onnx.load(path)
        onnx.checker.check_model(m, full_check=True)
        onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
        assert m.opset_import[0].version == opset
        assert m.ir_version == onnx.helper.find_min_ir_version_for(m.opset_import)
        reduces = [n for n in m.graph.node if n.op_type in ("ReduceMean", "ReduceMax", "ReduceMin")]
        assert reduces and all((len(n.input) == 2) == (opset >= 18) for n in reduces)
        got = ort_run(path, {"x": xs, "y": ys})
        assert_close(got[0], want)
        np.testing.assert_allclose(got[1], loss, rtol=1e-5)
    for bad in (MIN_OPSET - 1, newest + 1, True, "17"):
        with pytest.raises(gc.OnnxError, match=rf"{MIN_OPSET}\.\.{newest}"):
            model.to_onnx(str(tmp_path / "bad.onnx"), opset=bad)
    assert not os.path.exists(tmp_path / "bad.onnx")


def test_round_trip_keeps_the_files_input_and_output_names(tmp_path) -> None:
    """A model imported from ONNX and exported again has the file's interface: tf2onnx's
    output 'Identity:0' and PyTorch's input 'input.1' came back as 'Identity_0' and
    'input_1' (graphc's names), and tf2onnx's int32 embedding ids as a float input, so
    sess.run(['Identity:0'], {'x': ...}) failed on the new file. The same feeds give ONNX
    Runtime's outputs of the original file, by name."""
    here = os.path.dirname(__file__)
    src = onnx.load(os.path.join(here, "data", "onnx", "tf_seq_dense_13.onnx"))
    ids = onnx.load(os.path.join(here, "data", "onnx", "tf_embed_13.onnx"))  # int32 ids
    relu = helper.make_node("Relu", ["input.1"], ["output:0"])
    same = helper.make_node("Identity", ["input.1"], ["copy:0"])
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", 3])  # noqa: E731
    torchy = make_model([relu, same], [vi("input.1")], [vi("output:0"), vi("copy:0")], [], 17)
    rng = np.random.default_rng(6)
    for k, m in enumerate((src, torchy, ids)):
        path = str(tmp_path / f"back{k}.onnx")
        gc.from_onnx(m).compile().to_onnx(path)
        back = onnx.load(path)
        onnx.checker.check_model(back, full_check=True)
        ins = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
        assert [i.name for i in back.graph.input] == ins
        assert [o.name for o in back.graph.output] == [o.name for o in m.graph.output]
        dims = [d.dim_value or 4 for d in m.graph.input[0].type.tensor_type.shape.dim]
        elem = [i.type.tensor_type.elem_type for i in (back.graph.input[0], m.graph.input[0])]
        assert elem[0] == elem[1]  # tf_embed's ids: int32 again
        if k == 2:
            feeds = {ins[0]: rng.integers(0, 20, dims).astype(np.int32)}
        else:
            feeds = {ins[0]: rng.standard_normal(dims).astype(np.float32)}
        for got, want in zip(ort_run(path, feeds), ort_run(m, feeds), strict=True):
            assert_close(got, want)
    # imported with a prefix (two files in one model): the prefixed names the user chose
    a, b = gc.from_onnx(src, prefix="a_"), gc.from_onnx(src, prefix="b_")
    path = str(tmp_path / "two.onnx")
    gc.compile([a.outputs[0], b.outputs[0]]).to_onnx(path)
    two = onnx.load(path)
    assert [i.name for i in two.graph.input] == ["a_x", "b_x"]
    assert [o.name for o in two.graph.output] == ["a_Identity_0", "b_Identity_0"]


def test_exported_float64_comparisons_keep_the_graphs_float_type(tmp_path) -> None:
    """A float64 model's comparison masks (greater, not_equal, ...) were cast to float32 in
    the export: the checker refused the file (Cast's type differs from the graph's). They
    are cast to the node's own type now; ONNX Runtime matches predict bit for bit."""
    x = gc.input("x", ("N", 4), dtype="f64")
    outs = [gc.greater(x, 0.5), gc.not_equal(x, 1.0), gc.where(gc.less_equal(x, 0.0), x, 2.0 * x)]
    model = gc.compile(outs)
    path = str(tmp_path / "f64.onnx")
    model.to_onnx(path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    xs = np.array([[-1.0, 0.5, 1.0, 2.0], [np.nan, 0.0, 0.75, -0.25]])
    want = model.predict(xs)
    for got, name in zip(ort_run(path, {"x": xs}), model.program.outputs, strict=True):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want[name])


def test_exported_float64_activations_run_in_onnxruntime(tmp_path) -> None:
    """ONNX Runtime has no float64 kernel for Softplus, Elu, Selu, Softsign, HardSigmoid or
    Erf: a float64 model using them (or gelu, mish, binary cross-entropy, built on them)
    exported to a file ORT refused to load (NOT_IMPLEMENTED). They are written as the same
    functions of operators it has (Erf in float32 between Casts); ORT then gives predict's
    values, at infinities, NaN and subnormals too."""
    x = gc.input("x", ("N", 8), dtype="f64")
    acts = ("softplus", "elu", "selu", "softsign", "hard_sigmoid", "erf", "gelu", "mish")
    model = gc.compile([getattr(gc, a)(x) for a in acts])
    path = str(tmp_path / "acts64.onnx")
    model.to_onnx(path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    xs = np.array(
        [[np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-310, 40.0, -40.0],
         [0.5, -0.5, 3.0, -3.0, 1e-3, -1e-3, 700.0, -700.0]]
    )  # fmt: skip
    want = model.predict(xs)
    got_all = ort_run(path, {"x": xs})
    for act, got, name in zip(acts, got_all, model.program.outputs, strict=True):
        assert got.dtype == np.float64
        # erf in float32: an absolute error of float32's (gelu: x times that)
        finite = np.where(np.isfinite(xs), np.abs(xs), 1.0)
        scale = np.maximum(1.0, finite) if act in ("erf", "gelu") else 1.0
        atol = 1e-7 if act in ("erf", "gelu") else 1e-300
        np.testing.assert_allclose(
            got / scale, want[name] / scale, rtol=1e-6, atol=atol, err_msg=act
        )


def test_export_opset_is_capped_by_the_installed_onnxruntime(tmp_path, monkeypatch) -> None:
    """to_onnx accepted any opset the onnx package defines, so with an onnx newer than the
    installed ONNX Runtime a file at the newest opset (or a default above what the runtime
    reads) could not be loaded. The range now ends at the newest opset both read: an older
    runtime (here one refusing opsets above 15) lowers the default and refuses a newer
    explicit opset naming onnxruntime, before anything is written."""
    import onnxruntime as ort

    from graphc import onnx_export

    assert onnx_export.newest_opset()[0] == onnx.defs.onnx_opset_version()  # this pair: all
    real = ort.InferenceSession

    def old_runtime(src, *a, **k):
        m = onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(src)
        if m.opset_import[0].version > 15:
            raise RuntimeError(f"Opset {m.opset_import[0].version} is not supported")
        return real(src, *a, **k)

    monkeypatch.setattr(ort, "InferenceSession", old_runtime)
    monkeypatch.setattr(onnx_export, "_NEWEST", {})
    x = gc.input("x", ("N", 3))
    model = gc.compile([gc.dense(x, 2, "relu", name="d")], seed=0)
    path = str(tmp_path / "m.onnx")
    model.to_onnx(path)
    assert onnx.load(path).opset_import[0].version == 15
    xs = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    assert_close(ort_run(path, {"x": xs})[0], model.predict(xs))
    with pytest.raises(gc.OnnxError, match=r"opset 16 is outside 13\.\.15.*onnxruntime"):
        model.to_onnx(str(tmp_path / "new.onnx"), opset=16)
    assert not os.path.exists(tmp_path / "new.onnx")


def test_elu_and_selu_keep_relative_accuracy_near_zero(tmp_path) -> None:
    """Elu and Selu computed alpha (exp(x) - 1), compiled and in the float64 ONNX export,
    which cancels near 0 (exp(-1e-10) - 1 = -1.000000082740371e-10 in float64, and 0 below
    |x| = 2**-24 in float32). Now expm1 (vmath.expm1; Kahan's form in the export): compiled
    float32 and float64 and ONNX Runtime on the float64 file are within a few ulp of numpy's
    float64 expm1 form, from subnormal x to -40."""
    mags = np.concatenate([np.logspace(-300, 1.6, 200), [1e-310, 5e-324, 0.3, 1.0, 2.0]])
    xs = np.concatenate([-mags, mags, [0.0, -0.0]]).reshape(1, -1)

    def ref(x, alpha=1.0, scale=1.0):
        return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))

    from graphc.ir.ops.activations import SELU_ALPHA, SELU_SCALE

    want = [ref(xs, 0.7), ref(xs, SELU_ALPHA, SELU_SCALE)]
    for dt, rtol in (("f64", 1e-15), ("f32", 5e-7)):
        x = gc.input("x", ("N", xs.shape[1]), dtype=dt)
        model = gc.compile([gc.elu(x, alpha=0.7), gc.selu(x)])
        feed = xs.astype(np.float64 if dt == "f64" else np.float32)
        w = [
            ref(feed.astype(np.float64), 0.7),
            ref(feed.astype(np.float64), SELU_ALPHA, SELU_SCALE),
        ]
        tiny = float(np.finfo(feed.dtype).tiny)
        for got, exp in zip(model.predict(feed).values(), w, strict=True):
            np.testing.assert_allclose(got, exp, rtol=rtol, atol=tiny, err_msg=dt)
        if dt == "f64":
            path = str(tmp_path / "elu64.onnx")
            model.to_onnx(path)
            for got, exp in zip(ort_run(path, {"x": feed}), want, strict=True):
                np.testing.assert_allclose(got, exp, rtol=1e-15, atol=tiny)


def test_round_trip_keeps_double_inputs_and_outputs(tmp_path) -> None:
    """A file with double inputs and outputs, imported (graphc computes in float32) and
    exported again, declared them float: ONNX Runtime code feeding the original float64
    arrays got 'Unexpected input data type' on the new file. They keep their type now, cast
    to and from float32 inside, under their names (one renamed by the import, one not)."""
    d = TensorProto.DOUBLE
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["y:0"]),
            helper.make_node("Sigmoid", ["x"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", d, ["N", 3])],
        [helper.make_tensor_value_info(o, d, ["N", 3]) for o in ("y:0", "z")],
        [numpy_helper.from_array(np.array([1.0, 2.0, 3.0]), "b")],
    )
    src = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    src.ir_version = 8
    with pytest.warns(gc.OnnxPrecisionWarning):
        model = gc.from_onnx(src).compile()
    path = str(tmp_path / "rt.onnx")
    model.to_onnx(path)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)] == [
        ("x", d),
        ("y:0", d),
        ("z", d),
    ]
    x = np.random.default_rng(0).standard_normal((4, 3))
    got, want = ort_run(path, {"x": x}), ort_run(src, {"x": x})
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_bfloat16_tensors_read_as_their_values_with_onnx_before_1_19(monkeypatch) -> None:
    """onnx 1.17 and 1.18 (graphc's minimum is 1.17) return a bfloat16 tensor's raw 16 bits
    as uint16 from numpy_helper.to_array: graphc read an initializer of 1.5 as 16320.0 (and
    the node test CastLike BFLOAT16_to_FLOAT failed on onnx 1.17). Emulated here on any onnx:
    the values are read from the bits (bfloat16 is float32's high half; reference: the
    values themselves, all exact in bfloat16)."""
    from onnx import numpy_helper as nh

    from graphc.onnx_import import tensor_to_array

    vals = np.array([1.5, -2.0, 0.0, 3.140625, -np.inf, 2.0**-126], np.float32)
    t = helper.make_tensor("b", TensorProto.BFLOAT16, [2, 3], vals.tolist())
    old = (vals.view(np.uint32) >> 16).astype(np.uint16).reshape(2, 3)
    monkeypatch.setattr(nh, "to_array", lambda tensor, *a, **k: old.copy())
    got = tensor_to_array(t, None, "initializer 'b'")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, vals.reshape(2, 3))


def test_round_trip_keeps_integer_and_bool_outputs(tmp_path) -> None:
    """Imported outputs declared int64 (ArgMax, a classifier's label), int32 or bool were
    exported again as float (graphc holds them as float32): ONNX Runtime code reading class ids
    from the new file got float32 arrays. They keep their type now, a Cast of graphc's whole
    numbers (exact). Reference: ONNX Runtime on the original file, equal values and types."""
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("ArgMax", ["h"], ["label"], axis=1, keepdims=0),
            helper.make_node("Greater", ["h", "zero"], ["positive"]),
            helper.make_node("Cast", ["label"], ["label32"], to=TensorProto.INT32),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info(o, t, None)
            for o, t in (
                ("h", TensorProto.FLOAT),
                ("label", TensorProto.INT64),
                ("positive", TensorProto.BOOL),
                ("label32", TensorProto.INT32),
            )
        ],
        [
            numpy_helper.from_array(
                np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32), "W"
            ),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    src = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    src.ir_version = 8
    path = str(tmp_path / "rt.onnx")
    gc.from_onnx(src).compile().to_onnx(path)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    x = np.random.default_rng(4).standard_normal((6, 4)).astype(np.float32)
    got, want = ort_run(path, {"x": x}), ort_run(src, {"x": x})
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
