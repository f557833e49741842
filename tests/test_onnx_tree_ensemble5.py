"""ai.onnx.ml opset 5 TreeEnsemble (the one tree operator replacing TreeEnsembleRegressor /
Classifier: nodes and leaves in separate lists, trees by their roots, enum codes, BRANCH_MEMBER
sets) against ONNX Runtime 1.32: every aggregate function and post_transform, member nodes,
missing values, a one-leaf tree, double inputs, and scikit-learn forests (a 2-output
regressor, a 3-class classifier's scores) rewritten as TreeEnsemble. graphc@e68b2fc refused
the operator.

Cost: about 30 small imports (about 8 s)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper
from test_onnx_ml import ML, ort_run

import graphc as gc
from graphc.onnx_import_ml import OnnxReadingWarning

X = np.array(
    [
        [0, 1, 0],
        [0, 2, -2],
        [1, 5, 0],
        [0, 3, 0],
        [np.nan, np.nan, np.nan],
        [0.5, 5, -1],
        [0.4, 2.0000001, 3],
        [np.nan, 2, -1],
        [-np.inf, np.inf, 0.5],
        [0.6, np.nan, -5],
    ],
    np.float32,
)


def _v5_model(node: onnx.NodeProto, features: int, targets: int, double: bool = False):
    t = TensorProto.DOUBLE if double else TensorProto.FLOAT
    g = helper.make_graph(
        [node],
        "te",
        [helper.make_tensor_value_info("x", t, ["N", features])],
        [helper.make_tensor_value_info("y", t, ["N", targets])],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(ML, 5)]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 10
    return m


def _forest(agg: int, post: int, member: bool, double: bool = False, sets=(1, 2, 5)):
    """Three trees over 3 features, 2 targets: tree 0 x0 <= 0.5 (NaN true) -> [x1 in sets or
    x1 == 2 -> leaf, else x2 > -1 (NaN true)]; tree 1 x1 != 2; tree 2 one leaf (target 1 only,
    so MIN / MAX of target 0 skip it)."""
    dt = np.float64 if double else np.float32
    weights = np.array([-0.5, 1.25, 0.75, -2.0, 0.3, 1.5, 0.125], dt)
    attrs = dict(
        nodes_featureids=[0, 1, 2, 1, 0],
        nodes_modes=numpy_helper.from_array(np.array([0, 6 if member else 4, 3, 5, 0], np.uint8)),
        nodes_splits=numpy_helper.from_array(np.array([0.5, 2.0, -1.0, 2.0, 0.0], dt)),
        nodes_truenodeids=[1, 1, 2, 4, 6],
        nodes_trueleafs=[0, 1, 1, 1, 1],
        nodes_falsenodeids=[0, 2, 3, 5, 6],
        nodes_falseleafs=[1, 0, 1, 1, 1],
        nodes_missing_value_tracks_true=[1, 0, 1, 0, 0],
        leaf_targetids=[0, 1, 0, 1, 0, 1, 1],
        leaf_weights=numpy_helper.from_array(weights),
        tree_roots=[0, 3, 4],
        n_targets=2,
        aggregate_function=agg,
        post_transform=post,
    )
    if member:
        members = np.array([*sets, np.nan], dt)
        attrs["membership_values"] = numpy_helper.from_array(members)
    node = helper.make_node("TreeEnsemble", ["x"], ["y"], domain=ML, name="te", **attrs)
    return _v5_model(node, 3, 2, double)


def _check(m, x, rtol=1e-5):
    (want,) = ort_run(m, {"x": x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OnnxReadingWarning)
        warnings.simplefilter("ignore", gc.OnnxPrecisionWarning)  # a double y: float32
        got = gc.from_onnx(m).compile().predict(x)
    got = got["y"] if isinstance(got, dict) else got
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("member", [True, False], ids=["member", "eq"])
@pytest.mark.parametrize("post", [0, 1, 2, 3], ids=["none", "p1", "p2", "softmax_zero"])
@pytest.mark.parametrize("agg", [0, 1, 2, 3], ids=["average", "sum", "min", "max"])
def test_tree_ensemble_matches_onnxruntime(agg, post, member) -> None:
    _check(_forest(agg, post, member), X)


def test_member_sets_double_input_and_post_transform_reading() -> None:
    _check(_forest(1, 0, True, sets=(7.0, 3.0, 2.0, -1.0, 5.0)), X)
    x64 = X.astype(np.float64)
    x64[0, 0] = 0.5 + 1e-12  # past the threshold in float64 only
    _check(_forest(2, 0, True, double=True), x64)
    with pytest.warns(OnnxReadingWarning, match="post_transform 1 is LOGISTIC as ONNX Runtime"):
        gc.from_onnx(_forest(1, 1, False))


def test_malformed_tree_ensemble_is_refused_naming_the_node() -> None:
    bad = _forest(1, 0, True)
    for a in bad.graph.node[0].attribute:
        if a.name == "membership_values":
            a.t.CopyFrom(numpy_helper.from_array(np.array([1, np.nan, 2, np.nan], np.float32)))
    with pytest.raises(gc.OnnxError, match=r"'te'.*2 sets for 1 BRANCH_MEMBER nodes"):
        gc.from_onnx(bad)
    with pytest.raises(gc.OnnxError, match=r"'te'.*node 1's set is empty"):
        gc.from_onnx(_forest(1, 0, True, sets=()))  # ONNX Runtime refuses the file too
    cyc = _forest(1, 0, False)
    for a in cyc.graph.node[0].attribute:
        if a.name == "nodes_falsenodeids":
            a.ints[2] = 0  # node 2's false branch back to the root
        if a.name == "nodes_falseleafs":
            a.ints[2] = 0
    with pytest.raises(gc.OnnxError, match=r"'te'.*a cycle"):
        gc.from_onnx(cyc)


def _as_v5(node: onnx.NodeProto, prefix: str, targets: int) -> onnx.NodeProto:
    """A TreeEnsembleRegressor / Classifier node of skl2onnx rewritten as TreeEnsemble (SUM):
    each (tree, target) pair a tree whose leaves hold that target's weight."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    trees, nodes = a["nodes_treeids"], a["nodes_nodeids"]
    modes = [m.decode() for m in a["nodes_modes"]]
    at = {(t, n): j for j, (t, n) in enumerate(zip(trees, nodes, strict=True))}
    w: dict[tuple, float] = {}
    for t, n, c, v in zip(*(a[f"{prefix}_{k}"] for k in ("treeids", "nodeids", "ids", "weights")),
                          strict=True):  # fmt: skip
        w[(t, n, c)] = w.get((t, n, c), 0.0) + v
    names = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]
    out: dict[str, list] = {k: [] for k in ("f", "m", "s", "tn", "tl", "fn", "fl", "lt", "lw")}
    roots = []
    for tree in sorted(set(trees)):
        for c in range(targets):
            base, leaves = len(out["f"]), len(out["lt"])
            inner = [j for j in range(len(trees)) if trees[j] == tree and modes[j] != "LEAF"]
            pos = {j: base + i for i, j in enumerate(inner)}
            leaf = {}
            for j in range(len(trees)):
                if trees[j] == tree and modes[j] == "LEAF":
                    leaf[j] = leaves + len(leaf)
                    out["lt"].append(c)
                    out["lw"].append(w.get((tree, nodes[j], c), 0.0))
            roots.append(base)
            for j in inner:
                out["f"].append(a["nodes_featureids"][j])
                out["m"].append(names.index(modes[j]))
                out["s"].append(a["nodes_values"][j])
                for side, ids in (("t", "nodes_truenodeids"), ("f", "nodes_falsenodeids")):
                    k = at[(tree, a[ids][j])]
                    is_leaf = modes[k] == "LEAF"
                    out[f"{side}n"].append(leaf[k] if is_leaf else pos[k])
                    out[f"{side}l"].append(int(is_leaf))
    return helper.make_node(
        "TreeEnsemble", ["x"], ["y"], domain=ML, name="forest",
        nodes_featureids=out["f"], nodes_modes=numpy_helper.from_array(np.array(out["m"], np.uint8)),
        nodes_splits=numpy_helper.from_array(np.array(out["s"], np.float32)),
        nodes_truenodeids=out["tn"], nodes_trueleafs=out["tl"], nodes_falsenodeids=out["fn"],
        nodes_falseleafs=out["fl"], leaf_targetids=out["lt"],
        leaf_weights=numpy_helper.from_array(np.array(out["lw"], np.float32)), tree_roots=roots,
        n_targets=targets, aggregate_function=1,
    )  # fmt: skip


def test_scikit_learn_forests_as_tree_ensemble() -> None:
    pytest.importorskip("onnxruntime")
    ensemble = pytest.importorskip("sklearn.ensemble")
    skl2onnx = pytest.importorskip("skl2onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y2 = np.stack([x[:, 0] * 2 + x[:, 1], np.sin(x[:, 2]) - x[:, 3]], 1)
    cls = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    for est, y, prefix, targets in (
        (ensemble.RandomForestRegressor(6, max_depth=5, random_state=0), y2, "target", 2),
        (ensemble.RandomForestClassifier(5, max_depth=4, random_state=0), cls, "class", 3),
    ):
        est.fit(x, y)
        onx = skl2onnx.to_onnx(est, x[:1], target_opset={"": 17, ML: 3},
                               options={"zipmap": False} if prefix == "class" else None)  # fmt: skip
        (tree,) = [n for n in onx.graph.node if n.op_type.startswith("TreeEnsemble")]
        m = _v5_model(_as_v5(tree, prefix, targets), 4, targets)
        _check(m, x)
        want = est.predict_proba(x) if prefix == "class" else est.predict(x)
        np.testing.assert_allclose(ort_run(m, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
