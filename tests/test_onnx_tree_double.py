"""Tree ensembles (ai.onnx.ml) fed a double graph input compare in float64, as ONNX Runtime
does: a row within float32's rounding of a threshold reaches the leaf ONNX Runtime's reaches
(graphc rounded such rows to float32 first and sent some to the other branch). A double X that
the graph computes stays float32 in graphc and is warned about, naming the tree."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper
from test_onnx_ml import ML, ort_run

import graphc as gc
from graphc.onnx_import import OnnxPrecisionWarning


def _import(m):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imp = gc.from_onnx(m)
    return imp, [str(w.message) for w in caught if w.category is OnnxPrecisionWarning]


def _near_thresholds(x: np.ndarray, thresholds: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Rows of ``x`` with one feature set to each threshold and to values a few float64 ulps
    and a relative 1e-12 either side of it: all round to the same float32."""
    rows = []
    for t, f in zip(thresholds, features):
        for d in (-1e-12 * max(1.0, abs(t)), -4 * np.spacing(t), 0.0, 4 * np.spacing(t)):
            r = x[len(rows) % len(x)].copy()
            r[f] = t + d
            rows.append(r)
        rows[-1][f] = t + 1e-12 * max(1.0, abs(t))
    return np.array(rows)


def test_sklearn_forest_on_double_input_reaches_onnxruntime_leaves() -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + x[:, 1] ** 2 > 0.5).astype(int) + (x[:, 2] > 0)
    est = RandomForestClassifier(n_estimators=6, max_depth=5, random_state=0).fit(x, y)
    m = to_onnx(est, initial_types=[("X", DoubleTensorType([None, 4]))], options={"zipmap": False})
    (tree,) = m.graph.node
    at = {a.name: helper.get_attribute_value(a) for a in tree.attribute}
    inner = [k for k, md in enumerate(at["nodes_modes"]) if md != b"LEAF"]
    thr = np.asarray(at["nodes_values"], np.float32).astype(np.float64)[inner]
    rows = _near_thresholds(x, thr, np.asarray(at["nodes_featureids"])[inner])
    label, prob = ort_run(m, {"X": rows})
    imp, warned = _import(m)
    got = imp.compile().predict(rows)
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_allclose(got["probabilities"], prob, rtol=0, atol=1e-6)
    assert not warned  # the input is read by the tree only, in float64
    assert imp.compile().predict(x[:5])["label"].dtype == np.int64


def _regressor(x_type: int, thresholds: np.ndarray, as_tensor: bool) -> onnx.ModelProto:
    """One tree: f0 <= t0 ? (f1 < t1 ? 1 : 2) : (f1 >= t4 ? 3 : 4); NaN of f1 at node 1 goes
    the true way."""
    values = (
        {"nodes_values_as_tensor": numpy_helper.from_array(thresholds)}
        if as_tensor
        else {"nodes_values": [float(v) for v in thresholds]}
    )
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["X"],
        ["Y"],
        domain=ML,
        nodes_treeids=[0] * 7,
        nodes_nodeids=list(range(7)),
        nodes_featureids=[0, 1, 0, 0, 1, 0, 0],
        nodes_modes=["BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "BRANCH_GTE", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 2, 0, 0, 5, 0, 0],
        nodes_falsenodeids=[4, 3, 0, 0, 6, 0, 0],
        nodes_missing_value_tracks_true=[0, 1, 0, 0, 0, 0, 0],
        target_treeids=[0] * 4,
        target_nodeids=[2, 3, 5, 6],
        target_ids=[0] * 4,
        target_weights=[1.0, 2.0, 3.0, 4.0],
        n_targets=1,
        **values,
    )
    g = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info("X", x_type, ["N", 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 3)]
    )
    m.ir_version = 8
    return m


@pytest.mark.parametrize("as_tensor", [True, False])
def test_double_thresholds_compare_in_float64(as_tensor: bool) -> None:
    # thresholds a float32 cannot hold (nodes_values_as_tensor in double), or float ones
    thr = np.array([0.1, 1 / 3, 0, 0, 0.7, 0, 0], np.float64)
    if not as_tensor:
        thr = thr.astype(np.float32).astype(np.float64)
    t0, t1, t4 = thr[0], thr[1], thr[4]
    rows = np.array(
        [
            [t0 - 1e-16, t1],
            [t0, t1 - 1e-16],
            [t0 + 1e-16, t4],
            [t0 + 1e-16, t4 - 1e-16],
            [np.float32(t0), np.float32(t1)],
            [0.2, np.float32(t4)],
            [0.05, np.nan],
            [np.inf, -np.inf],
            [-1e300, 1e300],
        ]
    )
    m = _regressor(TensorProto.DOUBLE, thr, as_tensor)
    (want,) = ort_run(m, {"X": rows})
    model = _import(m)[0].compile()
    np.testing.assert_array_equal(model.predict(rows), want)
    assert len(set(want.ravel().tolist())) == 4  # every leaf is reached
    # float32 rows are widened exactly: the same answers as their float64 values
    with np.errstate(over="ignore"):
        r32 = rows.astype(np.float32)  # +-1e300 to +-inf
    (w32,) = ort_run(m, {"X": r32.astype(np.float64)})
    np.testing.assert_array_equal(model.predict(r32), w32)


def test_double_x_computed_by_the_graph_is_warned_naming_the_tree() -> None:
    thr = np.array([0.1, 1 / 3, 0, 0, 0.7, 0, 0], np.float32)
    m = _regressor(TensorProto.DOUBLE, thr, False)
    g = m.graph
    g.node[0].input[0] = "Xs"
    g.node.insert(0, helper.make_node("Abs", ["X"], ["Xs"]))
    imp, warned = _import(m)
    assert any("TreeEnsembleRegressor" in w and "float64" in w for w in warned), warned
    x = np.array([[0.05, 0.2], [-0.5, 0.9]])
    np.testing.assert_array_equal(imp.compile().predict(x), ort_run(m, {"X": x})[0])
