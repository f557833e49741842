"""scikit-learn's linear models and preprocessing through ONNX (ai.onnx.ml Scaler,
LinearClassifier, LinearRegressor, Normalizer, Binarizer, ArrayFeatureExtractor on scores),
Sign and Round, integer graph inputs: against ONNX Runtime, scikit-learn, numpy and central
differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper

import graphc as gc

ML = "ai.onnx.ml"


def ort_run(model, feeds: dict) -> list:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def ml_model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "ml", inputs, outputs, list(inits))
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ML, 1)]
    )
    m.ir_version = 8  # outputs of unknown shape: ONNX Runtime checks the file
    return m


def _outputs(got, names: list[str]) -> list[np.ndarray]:
    return [np.asarray(got[n]) for n in names] if isinstance(got, dict) else [np.asarray(got)]


# ---------------------------------------------------------------- real skl2onnx exports


def _sklearn_cases():
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Binarizer, Normalizer, RobustScaler, StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((80, 6)) * [1, 2, 0.5, 3, 1, 1] + [0, 1, -2, 0, 5, 0]).astype(
        np.float32
    )
    y3 = np.array([3, 5, 9])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1)]
    y2 = (x[:, 0] + x[:, 3] > 0).astype(int)
    return x, [
        ("scaler_logreg_binary_zipmap", make_pipeline(StandardScaler(), LogisticRegression()), y2, None),
        ("logreg_multinomial", LogisticRegression(max_iter=500), y3, {"zipmap": False}),
        ("linearsvc_multi", LinearSVC(), y3, None),
        ("linearsvc_binary", LinearSVC(), y2, None),
        ("linreg", make_pipeline(StandardScaler(), LinearRegression()), x[:, 0] - 2 * x[:, 4], None),
        ("robust_ridge_2_targets", make_pipeline(RobustScaler(), Ridge()), x[:, :2] @ [[1, 2], [3, -1]], None),
        ("normalizer_l1", Normalizer(norm="l1"), None, None),
        ("normalizer_max", Normalizer(norm="max"), None, None),
        ("binarizer", Binarizer(threshold=0.5), None, None),
    ]  # fmt: skip


def test_sklearn_linear_exports_match_onnxruntime_and_sklearn() -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx

    x, cases = _sklearn_cases()
    failures = []
    for name, est, y, opts in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x, y)
            last = est.steps[-1][1] if hasattr(est, "steps") else est
            m = to_onnx(est, x[:1], options={id(last): opts} if opts else None)
        out_names = [o.name for o in m.graph.output]
        want = ort_run(m, {"X": x})
        got = _outputs(gc.from_onnx(m).compile(name=name).predict(x), out_names)
        for o, g, w in zip(out_names, got, want):
            if isinstance(w, list):  # ZipMap: a list of {class: probability}
                w = np.array([[d[k] for k in sorted(d)] for d in w], np.float32)
            w = np.asarray(w)
            g = g.reshape(w.shape)
            if w.dtype.kind in "iu":  # labels: exact
                if not np.array_equal(g, w):
                    failures.append(f"{name} {o}: labels differ")
            elif not np.allclose(g, w, rtol=1e-5, atol=1e-6):
                failures.append(f"{name} {o}: max |d| {np.max(np.abs(g - w)):.3g}")
        if hasattr(est, "predict") and y is not None:  # and scikit-learn's own answer
            pred = est.predict(x)
            g0 = got[0].reshape(pred.shape)
            ok = (
                np.array_equal(g0, pred)
                if pred.dtype.kind in "iu"
                else np.allclose(g0, pred, rtol=1e-4, atol=1e-4)
            )
            if not ok:
                failures.append(f"{name}: differs from scikit-learn's predict")
    assert not failures, failures


# ---------------------------------------------------------------- operator semantics vs ORT


def test_linear_classifier_post_transforms_and_one_score_binary() -> None:
    """Every post_transform, T = C with labels 4, 7, 8 and the one-score binary form (T = 1,
    C = 2), SOFTMAX_ZERO with exact zeros; labels from the transformed scores' first max."""
    rng = np.random.default_rng(5)
    f = 3
    x = rng.standard_normal((40, f)).astype(np.float32)
    x[:4] = 0.0  # zero scores (SOFTMAX_ZERO) and ties (argmax's first)
    x[4, :] = [0.0, 0.0, 1.0]
    coef3 = rng.standard_normal(3 * f).astype(np.float32)
    coef1 = rng.standard_normal(f).astype(np.float32)
    nodes, outs = [], []
    for k, pt in enumerate(["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]):
        ints = [0.0, 0.0, 0.0] if pt == "SOFTMAX_ZERO" else [0.5, -0.25, 0.1]
        nodes.append(
            helper.make_node(
                "LinearClassifier", ["X"], [f"y{k}", f"z{k}"], f"lc{k}", domain=ML,
                coefficients=coef3.tolist(), intercepts=ints, classlabels_ints=[4, 7, 8],
                post_transform=pt, multi_class=1,
            )
        )  # fmt: skip
        nodes.append(
            helper.make_node(
                "LinearClassifier", ["X"], [f"b{k}", f"p{k}"], f"bin{k}", domain=ML,
                coefficients=coef1.tolist(), intercepts=[0.2], classlabels_ints=[-1, 1],
                post_transform=pt,
            )
        )  # fmt: skip
        outs += [(f"y{k}", TensorProto.INT64), (f"z{k}", TensorProto.FLOAT)]
        outs += [(f"b{k}", TensorProto.INT64), (f"p{k}", TensorProto.FLOAT)]
    m = ml_model(
        nodes,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", f])],
        [helper.make_tensor_value_info(n, t, None) for n, t in outs],
    )
    want = ort_run(m, {"X": x})
    got = _outputs(gc.from_onnx(m).compile().predict(x), [n for n, _ in outs])
    for (name, t), g, w in zip(outs, got, want):
        g = g.reshape(w.shape)
        if t == TensorProto.INT64:
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)


def test_scaler_normalizer_binarizer_regressor_sign_round_match_onnxruntime() -> None:
    rng = np.random.default_rng(6)
    f = 4
    x = (rng.standard_normal((30, f)) * 3).astype(np.float32)
    x[0] = 0.0  # a zero row: Normalizer leaves it
    x[1] = [-2.0, -4.0, -1.0, -3.0]  # MAX of a negative row
    x[2] = [0.5, 1.5, 2.5, -2.5]  # halves: Round to even
    x[3] = [-0.5, 0.49999997, 8388609.0, -1e9]
    offset = rng.standard_normal(f).tolist()
    scale = (rng.random(f) + 0.5).tolist()
    nodes = [
        helper.make_node("Scaler", ["X"], ["s"], domain=ML, offset=offset, scale=scale),
        helper.make_node("Scaler", ["X"], ["s1"], domain=ML, offset=[1.5], scale=[0.5]),
        helper.make_node("Normalizer", ["X"], ["nmax"], domain=ML),
        helper.make_node("Normalizer", ["X"], ["nl1"], domain=ML, norm="L1"),
        helper.make_node("Normalizer", ["X"], ["nl2"], domain=ML, norm="L2"),
        helper.make_node("Binarizer", ["X"], ["bin"], domain=ML, threshold=0.5),
        helper.make_node(
            "LinearRegressor", ["X"], ["r1"], domain=ML,
            coefficients=rng.standard_normal(f).tolist(), intercepts=[0.3],
        ),
        helper.make_node(
            "LinearRegressor", ["X"], ["r2"], domain=ML, targets=2, post_transform="SOFTMAX",
            coefficients=(rng.standard_normal(2 * f) * 0.3).tolist(), intercepts=[0.1, -0.2],
        ),
        helper.make_node("Sign", ["X"], ["sign"]),
        helper.make_node("Round", ["X"], ["round"]),
    ]  # fmt: skip
    names = [n.output[0] for n in nodes]
    m = ml_model(
        nodes,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", f])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
    )
    want = ort_run(m, {"X": x})
    got = _outputs(gc.from_onnx(m).compile().predict(x), names)
    for name, g, w in zip(names, got, want):
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=1e-6, atol=1e-6, err_msg=name)
    r = got[names.index("round")]
    np.testing.assert_array_equal(r, np.round(x))  # numpy: halves to even, exact
    np.testing.assert_array_equal(got[names.index("sign")], np.sign(x))


def test_round_and_sign_edge_values_against_numpy() -> None:
    v = np.array(
        [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 1.4999999, 2**22 + 0.5,
         2**22 + 1.5, 2**23 + 1, -(2**23) - 3, 3e38, -0.0, 0.0, 1e-30, np.inf, -np.inf],
        np.float32,
    )  # fmt: skip
    m = ml_model(
        [helper.make_node("Round", ["X"], ["r"]), helper.make_node("Sign", ["X"], ["s"])],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("r", "s")],
    )
    got = gc.from_onnx(m).compile().predict(v.reshape(-1, 1))
    np.testing.assert_array_equal(got["r"].reshape(-1), np.round(v))
    np.testing.assert_array_equal(got["s"].reshape(-1), np.sign(v))


def test_integer_inputs_are_read_as_float32() -> None:
    """A uint8 image cast to float and divided by 255, and an int64 input cast to float and
    back to int64 (kept as the integers it holds)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["f", "c255"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "w"], ["logits"]),
        helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["idf"], ["idflat"], axis=1),
        helper.make_node("Cast", ["idflat"], ["ids_out"], to=TensorProto.INT64),
        helper.make_node("Cast", ["flag"], ["flagf"], to=TensorProto.FLOAT),
    ]
    m = ml_model(
        nodes,
        [
            helper.make_tensor_value_info("img", TensorProto.UINT8, ["N", 16]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["N", 1]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("ids_out", TensorProto.INT64, None),
            helper.make_tensor_value_info("flagf", TensorProto.FLOAT, None),
        ],
        [
            onnx.numpy_helper.from_array(w, "w"),
            onnx.numpy_helper.from_array(np.array(255.0, np.float32), "c255"),
        ],
    )
    img = rng.integers(0, 256, (9, 16)).astype(np.uint8)
    ids = rng.integers(-(2**20), 2**20, (9, 2)).astype(np.int64)
    flag = rng.random((9, 1)) > 0.5
    want = ort_run(m, {"img": img, "ids": ids, "flag": flag})
    imp = gc.from_onnx(m)
    got = imp.compile().predict({"img": img, "ids": ids, "flag": flag.astype(np.float32)})
    got = {k: got[v] for k, v in imp.output_names.items()}  # ids_out is the input itself
    np.testing.assert_allclose(got["logits"], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["ids_out"].reshape(ids.shape), want[1])
    np.testing.assert_array_equal(got["flagf"].reshape(flag.shape), want[2])


def test_string_labels_name_what_to_import_instead() -> None:
    m = ml_model(
        [
            helper.make_node(
                "LinearClassifier",
                ["X"],
                ["label", "scores"],
                "lc",
                domain=ML,
                coefficients=[1.0, 0.0, 0.0, 1.0],
                classlabels_strings=["a", "b"],
            )
        ],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor_value_info("label", TensorProto.STRING, None),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
        ],
    )
    # the outputs to import are named (it said outputs=[...], leaving the user to guess)
    with pytest.raises(gc.OnnxError, match=r"'label'.*strings.*outputs=\['scores'\]\)"):
        gc.from_onnx(m)
    x = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
    got = gc.from_onnx(m, outputs=["scores"]).compile().predict(x)
    np.testing.assert_array_equal(np.asarray(got).reshape(2, 2), x)


# ---------------------------------------------------------------- fine-tuning


def test_imported_linear_classifier_trains_gradients_vs_central_differences() -> None:
    """Scaler (constants) then LinearClassifier SOFTMAX (coefficients and intercepts become
    params): model.gradients of an MSE on the probabilities against float64 central
    differences of the same loss written in numpy."""
    rng = np.random.default_rng(8)
    f, c, n = 3, 3, 12
    offset, scale = rng.standard_normal(f), rng.random(f) + 0.5
    coef, b = rng.standard_normal((c, f)) * 0.7, rng.standard_normal(c) * 0.2
    m = ml_model(
        [
            helper.make_node(
                "Scaler", ["X"], ["xs"], domain=ML, offset=offset.tolist(), scale=scale.tolist()
            ),
            helper.make_node(
                "LinearClassifier",
                ["xs"],
                ["label", "prob"],
                "lin",
                domain=ML,
                coefficients=coef.reshape(-1).tolist(),
                intercepts=b.tolist(),
                classlabels_ints=[0, 1, 2],
                post_transform="SOFTMAX",
            ),
        ],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", f])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, None)],
    )
    imp = gc.from_onnx(m)
    assert sorted(imp.params) == ["lin_coefficients", "lin_intercepts"]
    target = gc.input("target", ("N", c))
    model = imp.compile(gc.mean_squared_error(imp.outputs[0], target), gc.SGD(lr=0.1))
    x = rng.standard_normal((n, f)).astype(np.float32)
    t = rng.random((n, c)).astype(np.float32)
    grads = model.gradients(x, t)
    x64 = (x.astype(np.float64) - np.float32(offset)) * np.float32(scale)

    def loss(w: np.ndarray, bias: np.ndarray) -> float:  # w: [F, C] as graphc holds it
        s = x64 @ w + bias
        e = np.exp(s - s.max(1, keepdims=True))
        return float(np.mean((e / e.sum(1, keepdims=True) - t) ** 2))

    w0 = np.asarray(model.params["lin_coefficients"], np.float64)
    b0 = np.asarray(model.params["lin_intercepts"], np.float64)
    np.testing.assert_allclose(w0, np.float32(coef).T)
    h = 1e-6
    for name, base in (("lin_coefficients", w0), ("lin_intercepts", b0)):
        num = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            d = np.zeros_like(base)
            d[i] = h
            args = (w0 + d, b0) if base is w0 else (w0, b0 + d)
            args_m = (w0 - d, b0) if base is w0 else (w0, b0 - d)
            num[i] = (loss(*args) - loss(*args_m)) / (2 * h)
        np.testing.assert_allclose(grads[name], num, rtol=2e-3, atol=2e-6, err_msg=name)


def test_integer_input_divided_by_itself_matches_onnxruntime() -> None:
    """An integer input read by an integer Div besides a Cast to float: refused until the
    quotient of whole numbers got its bound (|a / b| <= |a| for b != 0); now equal to ONNX
    Runtime (which raises on a zero divisor: graphc's documented value is 0 for 0 / 0)."""
    m = ml_model(
        [
            helper.make_node("Cast", ["a"], ["af"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["a", "a"], ["q"]),
        ],
        [helper.make_tensor_value_info("a", TensorProto.UINT16, ["N", 2])],
        [
            helper.make_tensor_value_info("af", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("q", TensorProto.UINT16, None),
        ],
    )
    a = np.array([[1, 65535], [7, 300]], np.uint16)
    got = gc.from_onnx(m).compile().predict(a)
    for g, w in zip((got["af"], got["q"]), ort_run(m, {"a": a})):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
