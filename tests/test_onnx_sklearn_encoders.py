"""scikit-learn's encoders through ONNX (ai.onnx.ml OneHotEncoder, FeatureVectorizer):
OneHotEncoder, KBinsDiscretizer(onehot-dense) and a ColumnTransformer in pipelines exported
by skl2onnx, and hand-built nodes (float inputs truncated, categories not seen, inputs of
other widths), against ONNX Runtime."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper
from test_onnx_ml import ML, ort_run

import graphc as gc


def _same(m, feeds: dict) -> None:
    want = ort_run(m, feeds)
    got = gc.from_onnx(m).compile().predict(feeds if len(feeds) > 1 else next(iter(feeds.values())))
    got = list(got.values()) if isinstance(got, dict) else [got]
    for k, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        np.testing.assert_allclose(
            np.asarray(g).reshape(w.shape), w, rtol=1e-5, atol=1e-6, err_msg=f"output {k}"
        )


def test_sklearn_encoder_pipelines_match_onnxruntime() -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler

    xi, yi = load_iris(return_X_y=True)
    xc = np.round(xi).astype(np.float32)
    xr, yr = load_diabetes(return_X_y=True)
    xr = xr[:200].astype(np.float32)
    ohe = OneHotEncoder(handle_unknown="ignore")
    cases = [
        (make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()), xc, yi),
        (
            make_pipeline(
                ColumnTransformer([("oh", ohe, [0, 1]), ("sc", StandardScaler(), [2, 3])]),
                LogisticRegression(),
            ),
            xc,
            yi,
        ),
        (make_pipeline(KBinsDiscretizer(n_bins=4, encode="onehot-dense"), Ridge()), xr, yr[:200]),
    ]
    for est, x, y in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x[:100], y[:100])  # the last rows hold categories not seen in the fit
            last = est.steps[-1][1]
            opts = {id(last): {"zipmap": False}} if hasattr(last, "predict_proba") else None
            m = to_onnx(est, x[:1], target_opset=17, options=opts)
        _same(m, {m.graph.input[0].name: x})


def _model(nodes, inputs, outs):
    g = helper.make_graph(
        nodes,
        "enc",
        inputs,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)]
    )
    m.ir_version = 8
    return m


def test_one_hot_encoder_truncates_floats_and_zeros_unknown_against_onnxruntime() -> None:
    x = np.array([[0.0, 2.7], [-1.5, 3.0], [5.0, -0.2], [2.0, 9.0]], np.float32)
    node = helper.make_node(
        "OneHotEncoder", ["X"], ["Y"], domain=ML, cats_int64s=[-1, 0, 2, 3, 5], zeros=1
    )
    inp = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])]
    _same(_model([node], inp, ["Y"]), {"X": x})


def test_feature_vectorizer_against_onnxruntime() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 3)).astype(np.float32)
    b = rng.standard_normal((6, 2)).astype(np.float32)
    node = helper.make_node(
        "FeatureVectorizer", ["A", "B"], ["Y"], domain=ML, inputdimensions=[2, 4]
    )  # A's first 2 columns, B padded to 4
    inp = [
        helper.make_tensor_value_info("A", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("B", TensorProto.FLOAT, ["N", 2]),
    ]
    _same(_model([node], inp, ["Y"]), {"A": a, "B": b})
