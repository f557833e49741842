"""scikit-learn's encoders through ONNX (ai.onnx.ml OneHotEncoder, FeatureVectorizer,
LabelEncoder): OneHotEncoder, KBinsDiscretizer(onehot-dense), a ColumnTransformer and
IsolationForest (trees, then LabelEncoder) exported by skl2onnx, and hand-built nodes (float
inputs truncated, categories not seen, inputs of other widths, keys not found), against ONNX
Runtime."""

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
    from sklearn.ensemble import IsolationForest

    cases.append((IsolationForest(n_estimators=5, random_state=0), xr, None))
    for est, x, y in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x[:100], None if y is None else y[:100])  # later rows: unseen categories
            last = est.steps[-1][1] if hasattr(est, "steps") else est
            opts = {id(last): {"zipmap": False}} if hasattr(last, "predict_proba") else None
            ops = 17 if y is not None else {"": 17, "ai.onnx.ml": 3}
            m = to_onnx(est, x[:1], target_opset=ops, options=opts)
        _same(m, {m.graph.input[0].name: x})


def _model(nodes, inputs, outs, ml_opset: int = 1):
    g = helper.make_graph(
        nodes,
        "enc",
        inputs,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, ml_opset)]
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


def test_label_encoder_numeric_keys_and_defaults_against_onnxruntime() -> None:
    x = np.array([[3.0, 7.0, -2.0], [5.0, 3.0, 11.0]], np.float32)
    nodes = [
        helper.make_node(
            "LabelEncoder", ["X"], ["Y"], domain=ML, keys_floats=[3.0, -2.0, 7.0],
            values_floats=[0.5, -1.25, 9.0], default_float=42.0,
        ),
        helper.make_node("Cast", ["X"], ["Xi"], to=TensorProto.INT64),
        helper.make_node(
            "LabelEncoder", ["Xi"], ["Zi"], domain=ML, keys_int64s=[3, 11],
            values_int64s=[-4, 6],
        ),  # default_int64 -1
        helper.make_node("Cast", ["Zi"], ["Z"], to=TensorProto.FLOAT),
    ]  # fmt: skip
    inp = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])]
    _same(_model(nodes, inp, ["Y", "Z"], ml_opset=3), {"X": x})


def test_sklearn_one_hot_encoder_of_int64_columns_matches_onnxruntime() -> None:
    """skl2onnx's OneHotEncoder fitted on int64 columns (an int64 graph input: Gather, Cast,
    OneHotEncoder per column): categories seen and ones not seen (ignored: a row of zeros)
    equal to ONNX Runtime; a value past float32's exact integers (2**24 + 1) is refused at run
    time naming the input and the row, as graphc checks every integer input's range.
    graphc@62213bc refused the file ("element type int64 used as an integer")."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.preprocessing import OneHotEncoder

    x = np.random.default_rng(0).integers(-3, 5, (60, 3)).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = OneHotEncoder(handle_unknown="ignore").fit(x)
        m = to_onnx(enc, x[:1], target_opset=17)
    probe = x.copy()
    probe[:5, 0] = [9, -7, 2**24 - 1, -(2**24) + 1, 5]
    name = m.graph.input[0].name
    _same(m, {name: probe})
    probe[3, 1] = 2**24 + 1
    with pytest.raises(gc.GraphcError, match=f"'{name}': row 3 holds"):
        gc.from_onnx(m).compile().predict(probe)


@pytest.mark.parametrize("keys", [[3, 7, 100, -5], [3, 2**24]])
def test_label_encoder_of_an_int64_input(keys) -> None:
    """LabelEncoder reading an int64 graph input: keys below 2**24 are compared exactly, equal
    to ONNX Runtime; a key of 2**24 or more, which a rounded float32 value could match, keeps
    the input refused at import, naming it."""
    node = helper.make_node(
        "LabelEncoder", ["x"], ["y"], domain=ML, keys_int64s=keys,
        values_floats=[0.5 * (i + 1) for i in range(len(keys))], default_float=-1.0,
    )  # fmt: skip
    g = helper.make_graph(
        [node],
        "le",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 2)]
    )
    m.ir_version = 8
    x = np.array([[3, 7], [100, -5], [4, 0], [2**24 - 1, -(2**24) + 1], [-9, 101]], np.int64)
    if max(abs(k) for k in keys) >= 2**24:
        with pytest.raises(gc.OnnxError, match="input 'x'"):
            gc.from_onnx(m).compile()
        return
    _same(m, {"x": x})
