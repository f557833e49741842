"""scikit-learn's support vector machines through ONNX (ai.onnx.ml SVMClassifier and
SVMRegressor): real skl2onnx exports of every kernel, with and without Platt probabilities
(libsvm's pairwise coupling), two to four classes, against ONNX Runtime and scikit-learn; the
binary forms of the score output; a loss on such a model is refused naming the node."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper
from test_onnx_ml import ML, ort_run

import graphc as gc


def _compare(m, x: np.ndarray, atol: float) -> list[np.ndarray]:
    want = ort_run(m, {m.graph.input[0].name: x})
    got = gc.from_onnx(m).compile().predict(x)
    got = list(got.values()) if isinstance(got, dict) else [got]
    for k, (g, w) in enumerate(zip(got, want)):
        if isinstance(w, list):  # ZipMap: a list of {class: probability}
            w = np.array([[d[c] for c in sorted(d)] for d in w], np.float32)
        w = np.asarray(w)
        g = np.asarray(g).reshape(w.shape)
        if w.dtype.kind in "iu":
            np.testing.assert_array_equal(g, w, err_msg=f"output {k}")
        else:
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=atol, err_msg=f"output {k}")
    return got


def _data():
    from sklearn.datasets import load_iris, load_wine

    xi, yi = load_iris(return_X_y=True)
    xw, yw = load_wine(return_X_y=True)
    xw = (xw - xw.mean(0)) / xw.std(0)
    return xi.astype(np.float32), yi, xw[:, :6].astype(np.float32), yw


def test_sklearn_svms_match_onnxruntime_and_sklearn() -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn import svm

    xi, yi, xw, yw = _data()
    x4 = np.vstack([xi, xi[:40] + 1.0])  # four classes, labels not 0..C-1
    y4 = np.array([4, 7, 11, 2])[np.r_[yi, np.full(40, 3)]]
    # scikit-learn 1.9 deprecates SVC / NuSVC(probability=True) (libsvm's Platt scaling) and
    # 1.11 removes it: those cases run where the parameter exists (a hand-built SVMClassifier
    # with prob_a / prob_b below keeps testing Platt probabilities either way)
    platt = "probability" in inspect.signature(svm.SVC).parameters
    cases = [
        (svm.SVC(kernel="sigmoid", gamma=0.05), xw, yw),  # decision values, ovr scores
        (svm.SVC(kernel="linear"), xw, (yw > 0).astype(int)),  # binary, no probabilities
        (svm.SVR(), xw, xw[:, 0] * 2 - xw[:, 1]),
        (svm.NuSVR(kernel="poly", degree=2), xw, xw[:, 0] * xw[:, 2]),
        (svm.OneClassSVM(gamma=0.1), xw, None),
    ]
    if platt:
        p = {"probability": True, "random_state": 0}
        cases += [
            (svm.SVC(**p), xi, np.array([4, 7, 11])[yi]),
            (svm.SVC(kernel="poly", degree=3, **p), xw, yw),
            (svm.SVC(**p), xw, (yw > 0).astype(int)),  # binary
            (svm.NuSVC(**p), x4, y4),
        ]
    for est, x, y in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x, y) if y is not None else est.fit(x)
        opts = {id(est): {"zipmap": False}} if getattr(est, "probability", False) else None
        m = to_onnx(est, x[:1], target_opset=17, options=opts)
        got = _compare(m, x, atol=2e-5)
        if y is not None and y.dtype.kind in "iu":
            np.testing.assert_array_equal(got[0].reshape(-1), est.predict(x), type(est).__name__)


def _svc_node(post: str, **kw):
    sv = [[0.0, 1.0], [1.0, 0.5], [-1.0, 0.0], [0.5, -1.0]]
    return helper.make_node(
        "SVMClassifier", ["X"], ["label", "scores"], domain=ML, name="svc",
        classlabels_ints=[3, 8], vectors_per_class=[2, 2], rho=[0.1],
        coefficients=[0.7, 0.4, -0.5, -0.6], support_vectors=[v for row in sv for v in row],
        kernel_type="RBF", kernel_params=[0.5, 0.0, 3.0], post_transform=post, **kw,
    )  # fmt: skip


def _model(node, outs):
    g = helper.make_graph(
        [node],
        "svm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info(n, t, None) for n, t in outs],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)]
    )
    m.ir_version = 8
    return m


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_binary_svc_score_forms_against_onnxruntime(post) -> None:
    """Two classes without probabilities: [-d, d], or [1 - p, p] under a post_transform,
    p = sigmoid(d) for LOGISTIC and d itself for SOFTMAX (as ONNX Runtime 1.32 writes them)."""
    x = np.random.default_rng(0).uniform(-2, 2, (40, 2)).astype(np.float32)
    m = _model(_svc_node(post), [("label", TensorProto.INT64), ("scores", TensorProto.FLOAT)])
    _compare(m, x, atol=1e-6)


def test_binary_svc_platt_probabilities_against_onnxruntime() -> None:
    """Two classes with prob_a / prob_b (libsvm's Platt scaling, what skl2onnx writes for
    SVC(probability=True)): scores [1 - p, p], p = 1 / (1 + exp(prob_a * d + prob_b)) for the
    decision value d, and the label from p, as ONNX Runtime 1.32 computes them; independent of
    the scikit-learn version (1.11 drops SVC's probability=True)."""
    x = np.random.default_rng(2).uniform(-2, 2, (40, 2)).astype(np.float32)
    node = _svc_node("NONE", prob_a=[-1.7], prob_b=[0.3])
    _compare(_model(node, [("label", TensorProto.INT64), ("scores", TensorProto.FLOAT)]), x, 1e-6)


def test_training_an_svm_is_refused_naming_the_node() -> None:
    m = _model(_svc_node("NONE"), [("label", TensorProto.INT64), ("scores", TensorProto.FLOAT)])
    imp = gc.from_onnx(m, outputs=["scores"])
    loss = gc.mean_squared_error(imp.outputs[0], gc.input("t", ("N", 2)))
    with pytest.raises(gc.OnnxError, match=r"node 0 'svc' \(SVMClassifier.*predicts only"):
        imp.compile(loss, gc.SGD(0.1))


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX"])
def test_linear_mode_svc_and_svr_against_onnxruntime(post) -> None:
    """No support vectors: scores x . coefficients_c + rho_0 (SVMClassifier, three classes)
    and x . coefficients + rho_0 (SVMRegressor, n_supports 0)."""
    x = np.random.default_rng(1).uniform(-2, 2, (30, 2)).astype(np.float32)
    svc = helper.make_node(
        "SVMClassifier", ["X"], ["label", "scores"], domain=ML, classlabels_ints=[5, 1, 9],
        coefficients=[0.5, -1.0, 1.5, 0.25, -0.75, 0.8], rho=[0.2], post_transform=post,
        kernel_type="LINEAR", kernel_params=[1.0, 0.0, 1.0],
    )  # fmt: skip
    _compare(_model(svc, [("label", TensorProto.INT64), ("scores", TensorProto.FLOAT)]), x, 1e-6)
    svr = helper.make_node(
        "SVMRegressor", ["X"], ["y"], domain=ML, coefficients=[0.5, -1.0], rho=[0.2],
        kernel_type="LINEAR", kernel_params=[1.0, 0.0, 1.0], n_supports=0,
    )  # fmt: skip
    _compare(_model(svr, [("y", TensorProto.FLOAT)]), x, 1e-6)
