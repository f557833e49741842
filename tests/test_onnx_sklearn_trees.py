"""scikit-learn's tree ensembles and Imputer through ONNX (ai.onnx.ml TreeEnsembleClassifier,
TreeEnsembleRegressor, Imputer): real skl2onnx exports and hand-built trees with every node
mode, missing-value tracks, aggregate function and post_transform, against ONNX Runtime and
scikit-learn; a loss on such a model is refused naming the node."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper
from test_onnx_ml import ML, ort_run

import graphc as gc


def _outputs(got, n: int) -> list[np.ndarray]:
    return [np.asarray(v) for v in got.values()] if isinstance(got, dict) else [np.asarray(got)]


def _check(m, x: np.ndarray, rtol: float = 1e-5, atol: float = 1e-5) -> list[np.ndarray]:
    want = ort_run(m, {m.graph.input[0].name: x})
    got = _outputs(gc.from_onnx(m).compile().predict(x), len(want))
    for k, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        g = g.reshape(w.shape)
        if w.dtype.kind in "iu":
            np.testing.assert_array_equal(g, w, err_msg=f"output {k}")
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {k}")
    return got


def test_sklearn_tree_ensembles_match_onnxruntime_and_sklearn() -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn import ensemble, tree
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    xi, yi = load_iris(return_X_y=True)
    xb, yb = load_breast_cancer(return_X_y=True)
    xr, yr = load_diabetes(return_X_y=True)
    xi, xb, xr = xi.astype(np.float32), xb[:, :8].astype(np.float32), xr.astype(np.float32)
    yi = np.array([4, 7, 11])[yi]  # labels that are not 0..C-1
    cases = [
        (tree.DecisionTreeClassifier(max_depth=5, random_state=0), xi, yi),
        (ensemble.RandomForestClassifier(6, max_depth=4, random_state=0), xb, yb),
        (ensemble.ExtraTreesClassifier(5, max_depth=4, random_state=0), xi, yi),
        (ensemble.GradientBoostingClassifier(n_estimators=4, max_depth=2), xb, yb),  # LOGISTIC
        (ensemble.GradientBoostingClassifier(n_estimators=3, max_depth=2), xi, yi),  # SOFTMAX
        (ensemble.RandomForestRegressor(4, max_depth=4, random_state=0), xr, yr),
        (ensemble.GradientBoostingRegressor(n_estimators=4), xr, yr),
    ]
    for est, x, y in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x, y)
            opts = {id(est): {"zipmap": False}} if hasattr(est, "predict_proba") else None
            m = to_onnx(est, x[:1], target_opset=17, options=opts)
        got = _check(m, x[:150], rtol=1e-5, atol=1e-5 * float(np.abs(y).max()))
        pred = est.predict(x[:150])
        if pred.dtype.kind in "iu":
            np.testing.assert_array_equal(got[0].reshape(-1), pred, err_msg=type(est).__name__)


def _forest(modes: list[str], tracks: list[int]) -> dict:
    """Tree 0: a chain, node j (mode modes[j], feature j % 3, threshold 0.5 j - 0.5) whose
    true branch is leaf M + j and false branch node j + 1 (the last one's leaf 2M; M nodes);
    tree 1: one NEQ stump on feature 1 (threshold 1), its leaves listed 2, 1."""
    k = len(modes)
    t, n, f, md, v, tr, fa, mt = [], [], [], [], [], [], [], []
    for j, mode in enumerate(modes):
        t += [0, 0]
        n += [j, k + j]
        f += [j % 3, 0]
        md += [mode, "LEAF"]
        v += [0.5 * j - 0.5, 0.0]
        tr += [k + j, 0]
        fa += [j + 1 if j + 1 < k else 2 * k, 0]
        mt += [tracks[j], 0]
    t += [0, 1, 1, 1]
    n += [2 * k, 0, 2, 1]
    f += [0, 1, 0, 0]
    md += ["LEAF", "BRANCH_NEQ", "LEAF", "LEAF"]
    v += [0.0, 1.0, 0.0, 0.0]
    tr += [0, 1, 0, 0]
    fa += [0, 2, 0, 0]
    mt += [0, 0, 0, 0]
    leaves = [(0, k + j) for j in range(k)] + [(0, 2 * k), (1, 1), (1, 2)]
    return dict(
        nodes_treeids=t, nodes_nodeids=n, nodes_featureids=f, nodes_modes=md,
        nodes_values=v, nodes_truenodeids=tr, nodes_falsenodeids=fa,
        nodes_missing_value_tracks_true=mt, leaves=leaves,
    )  # fmt: skip


MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def _rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.round(rng.uniform(-1, 3, (64, 3)) * 2) / 2  # on the thresholds (EQ, LEQ vs LT)
    x[::5, 0] = np.nan
    x[1::6, 1] = np.nan
    x[2::7, 2] = np.inf
    x[3::9, 0] = -np.inf
    return x.astype(np.float32)


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
def test_tree_regressor_modes_missing_tracks_aggregates_against_onnxruntime(aggregate) -> None:
    fo = _forest(MODES, [1, 0, 1, 0, 1, 0])
    leaves = fo.pop("leaves")
    rng = np.random.default_rng(1)
    tw, tn, ti, tv = [], [], [], []
    for tree, node in leaves:
        for target in (0, 1):
            if (tree, node, target) == (1, 2, 1):
                continue  # a leaf without a weight for target 1 (MIN / MAX skip it)
            tw.append(tree), tn.append(node), ti.append(target)
            tv.append(float(np.round(rng.standard_normal(), 3)))
    node = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["Y"], domain=ML, name="trees", n_targets=2,
        target_treeids=tw, target_nodeids=tn, target_ids=ti, target_weights=tv,
        base_values=[0.25, -1.0], aggregate_function=aggregate, **fo,
    )  # fmt: skip
    m = _model(node, [("Y", TensorProto.FLOAT)])
    _check(m, _rows(), rtol=1e-6, atol=1e-6)


def _model(node, outs):
    g = helper.make_graph(
        [node],
        "trees",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info(n, t, None) for n, t in outs],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)]
    )
    m.ir_version = 8
    return m


@pytest.mark.parametrize(
    "post, classes, scored, base",
    [
        ("NONE", 3, (0, 1, 2), [0.1, 0.0, -0.1]),
        ("SOFTMAX", 3, (0, 1, 2), None),
        ("LOGISTIC", 4, (0, 1, 2, 3), None),
        ("SOFTMAX_ZERO", 3, (0, 1, 2), None),
        ("LOGISTIC", 2, (0,), [0.3]),  # gradient boosting's binary form: one score
        ("NONE", 2, (0,), None),
        ("NONE", 2, (0, 1), None),  # a decision tree's two probabilities
    ],
)
def test_tree_classifier_post_transforms_and_binary_forms_against_onnxruntime(
    post, classes, scored, base
) -> None:
    fo = _forest(MODES[::-1], [0, 1, 0, 1, 0, 1])
    leaves = fo.pop("leaves")
    rng = np.random.default_rng(2)
    ct, cn, ci, cw = [], [], [], []
    for tree, node in leaves:
        for c in scored:
            ct.append(tree), cn.append(node), ci.append(c)
            cw.append(float(np.round(rng.standard_normal(), 3)))
    kw = {"base_values": base} if base else {}
    node = helper.make_node(
        "TreeEnsembleClassifier", ["X"], ["label", "prob"], domain=ML, name="trees",
        class_treeids=ct, class_nodeids=cn, class_ids=ci, class_weights=cw,
        classlabels_int64s=[5, 2, 9, 1][:classes], post_transform=post, **kw, **fo,
    )  # fmt: skip
    m = _model(node, [("label", TensorProto.INT64), ("prob", TensorProto.FLOAT)])
    _check(m, _rows(), rtol=1e-6, atol=1e-6)


def test_imputer_nan_and_value_against_onnxruntime() -> None:
    x = _rows()
    x[4::8, 1] = -1.0
    for replaced, vals in ((float("nan"), [1.5, -2.0, 7.0]), (-1.0, [0.25])):
        node = helper.make_node(
            "Imputer", ["X"], ["Y"], domain=ML, imputed_value_floats=vals,
            replaced_value_float=replaced,
        )  # fmt: skip
        _check(_model(node, [("Y", TensorProto.FLOAT)]), x, rtol=0, atol=0)


def test_training_a_tree_ensemble_is_refused_naming_the_node() -> None:
    fo = _forest(MODES[:2], [0, 0])
    leaves = fo.pop("leaves")
    node = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["Y"], domain=ML, name="trees", n_targets=1,
        target_treeids=[t for t, _ in leaves], target_nodeids=[n for _, n in leaves],
        target_ids=[0] * len(leaves), target_weights=[1.0] * len(leaves), **fo,
    )  # fmt: skip
    imp = gc.from_onnx(_model(node, [("Y", TensorProto.FLOAT)]))
    loss = gc.mean_squared_error(imp.outputs[0], gc.input("t", ("N", 1)))
    with pytest.raises(
        gc.OnnxError, match=r"node 0 'trees' \(TreeEnsembleRegressor.*predicts only"
    ):
        imp.compile(loss, gc.SGD(0.1))
    imp.compile()  # predicting still compiles
