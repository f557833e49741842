"""post_transform PROBIT (ai.onnx.ml) as ONNX Runtime computes it: sqrt(2) * erfinv(2p - 1)
with Winitzki's approximation of erfinv (ONNX Runtime's ml_common.h and onnx.reference use
it); every operator whose scores take an elementwise post_transform, against ONNX Runtime,
and the approximation's distance from the exact quantile (scipy) bounded as documented. The
two-class one-score forms, where ONNX Runtime's PROBIT output follows no stated rule, stay
refused by name."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper
from test_onnx_ml import ML, ort_run

import graphc as gc

F = TensorProto.FLOAT


def _model(node, features: int, outs: list) -> onnx.ModelProto:
    g = helper.make_graph(
        [node],
        "probit",
        [helper.make_tensor_value_info("X", F, ["N", features])],
        [helper.make_tensor_value_info(n, t, None) for n, t in outs],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)]
    )
    m.ir_version = 8
    return m


def _compare(m, x: np.ndarray) -> list:
    want = ort_run(m, {"X": x})
    got = gc.from_onnx(m).compile().predict(x)
    got = list(got.values()) if isinstance(got, dict) else [got]
    for g, w in zip(got, want):
        g = np.asarray(g).reshape(w.shape)
        if w.dtype.kind in "iu":
            np.testing.assert_array_equal(g, w)
            continue
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6)
    return want


EDGES = np.array(
    [1e-7, 1e-4, 0.01, 0.1, 0.5, 0.5 + 6e-8, 0.9, 1 - 1e-7, 0.0, 1.0, -0.5, 1.5, np.nan, 1e-30],
    np.float32,
)


def test_probit_of_regression_targets_matches_onnxruntime_and_the_documented_bound() -> None:
    node = helper.make_node(
        "LinearRegressor", ["X"], ["Y"], domain=ML, coefficients=[1.0, 0.0, 0.0, 1.0],
        intercepts=[0.0, 0.0], targets=2, post_transform="PROBIT",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    p = np.concatenate([EDGES, rng.random(500).astype(np.float32)])
    x = np.stack([p, 1 - p], 1)
    (want,) = _compare(_model(node, 2, [("Y", F)]), x)
    assert np.isneginf(want[8, 0]) and np.isposinf(want[9, 0])
    scipy_special = pytest.importorskip("scipy.special")
    inner = (p > 1e-7) & (p < 1 - 1e-7)
    exact = scipy_special.ndtri(p[inner].astype(np.float64))
    got = gc.from_onnx(_model(node, 2, [("Y", F)])).compile().predict(x)[inner, 0]
    # Winitzki's erfinv, not the exact quantile: within 2e-3 relative beyond +-0.1, 1e-3
    # absolute nearer p = 0.5 (graphc.onnx_import._probit)
    np.testing.assert_allclose(got, exact, rtol=2.5e-3, atol=1e-3)


def test_probit_of_classifier_scores_matches_onnxruntime() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (60, 2)).astype(np.float32)
    linear = helper.make_node(
        "LinearClassifier", ["X"], ["label", "Z"], domain=ML, classlabels_ints=[4, 7, 8],
        coefficients=[0.2, -0.1, 0.3, 0.25, -0.2, 0.1], intercepts=[0.5, 0.4, 0.6],
        post_transform="PROBIT",
    )  # fmt: skip
    _compare(_model(linear, 2, [("label", TensorProto.INT64), ("Z", F)]), x)
    tree = dict(
        nodes_treeids=[0] * 5 + [1] * 3,
        nodes_nodeids=[0, 1, 2, 3, 4, 0, 1, 2],
        nodes_featureids=[0, 1, 0, 0, 0, 1, 0, 0],
        nodes_modes=["BRANCH_LEQ", "BRANCH_LT", *["LEAF"] * 3, "BRANCH_GT", "LEAF", "LEAF"],
        nodes_values=[0.1, -0.3, 0, 0, 0, 0.2, 0, 0],
        nodes_truenodeids=[1, 2, 0, 0, 0, 1, 0, 0],
        nodes_falsenodeids=[4, 3, 0, 0, 0, 2, 0, 0],
        post_transform="PROBIT",
    )
    leaves = [(0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]
    w = np.random.default_rng(2).uniform(0.02, 0.45, (len(leaves), 3))
    classifier = helper.make_node(
        "TreeEnsembleClassifier", ["X"], ["label", "Z"], domain=ML,
        class_treeids=[t for t, _ in leaves for _ in range(3)],
        class_nodeids=[n for _, n in leaves for _ in range(3)],
        class_ids=[0, 1, 2] * len(leaves), class_weights=w.ravel().tolist(),
        classlabels_int64s=[3, 1, 2], **tree,
    )  # fmt: skip
    _compare(_model(classifier, 2, [("label", TensorProto.INT64), ("Z", F)]), x)
    regressor = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["Y"], domain=ML, n_targets=2,
        target_treeids=[t for t, _ in leaves for _ in range(2)],
        target_nodeids=[n for _, n in leaves for _ in range(2)],
        target_ids=[0, 1] * len(leaves), target_weights=w[:, :2].ravel().tolist(),
        base_values=[0.05, -0.1], **tree,
    )  # fmt: skip
    _compare(_model(regressor, 2, [("Y", F)]), x)
    svc = helper.make_node(
        "SVMClassifier", ["X"], ["label", "Z"], domain=ML, classlabels_ints=[5, 1, 9],
        coefficients=[0.2, -0.1, 0.3, 0.25, -0.2, 0.1], rho=[0.4], post_transform="PROBIT",
        kernel_type="LINEAR", kernel_params=[1.0, 0.0, 1.0],
    )  # fmt: skip
    _compare(_model(svc, 2, [("label", TensorProto.INT64), ("Z", F)]), x)


def test_probit_of_a_one_score_binary_form_is_refused_naming_it() -> None:
    linear = helper.make_node(
        "LinearClassifier", ["X"], ["label", "Z"], domain=ML, classlabels_ints=[0, 1],
        coefficients=[0.2, -0.1], intercepts=[0.5], post_transform="PROBIT", name="lc",
    )  # fmt: skip
    m = _model(linear, 2, [("label", TensorProto.INT64), ("Z", F)])
    with pytest.raises(gc.OnnxError, match=r"'lc'.*PROBIT"):
        gc.from_onnx(m)
