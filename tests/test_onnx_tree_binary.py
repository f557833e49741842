"""TreeEnsembleClassifier with two classes and weights for one class only, in every form
against ONNX Runtime 1.32: class 0 scored (skl2onnx's, XGBoost's, LightGBM's form) with all
weights >= 0 under LOGISTIC gives [1 - sigmoid(s), sigmoid(s)] (graphc gave [1 - s, s]), and
class 1 scored gives post_transform([0, s]) (graphc gave the class-0 forms); the labels follow
the one score in both."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper
from test_onnx_ml import ML, ort_run

import graphc as gc

LEAVES = [(0, 1), (0, 3), (0, 4), (1, 1), (1, 2)]


def _node(k: int, scored: int, weights: list, post: str, base: list | None):
    return helper.make_node(
        "TreeEnsembleClassifier",
        ["X"],
        [f"label{k}", f"Z{k}"],
        domain=ML,
        name=f"forest{k}",
        nodes_treeids=[0] * 5 + [1] * 3,
        nodes_nodeids=[0, 1, 2, 3, 4, 0, 1, 2],
        nodes_featureids=[0, 0, 1, 0, 0, 1, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "BRANCH_GT"] + ["LEAF"] * 2,
        nodes_values=[0.1, 0, -0.3, 0, 0, 0.2, 0, 0],
        nodes_truenodeids=[1, 0, 3, 0, 0, 1, 0, 0],
        nodes_falsenodeids=[2, 0, 4, 0, 0, 2, 0, 0],
        class_treeids=[t for t, _ in LEAVES],
        class_nodeids=[n for _, n in LEAVES],
        class_ids=[scored] * len(LEAVES),
        class_weights=weights,
        classlabels_int64s=[4, 9],
        post_transform=post,
        **({} if base is None else {"base_values": base}),
    )


def _model(scored: int, weights: list, posts: list, base: list | None) -> onnx.ModelProto:
    g = helper.make_graph(
        [_node(k, scored, weights, p, base) for k, p in enumerate(posts)],
        "binary",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor_value_info(f"{n}{k}", t, None)
            for k in range(len(posts))
            for n, t in (("label", TensorProto.INT64), ("Z", TensorProto.FLOAT))
        ],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)]
    )
    m.ir_version = 8
    return m


POSITIVE = [0.1, 0.3, 0.25, 0.2, 0.45]
MIXED = [-0.4, 0.3, 0.05, -0.2, 0.45]


POSTS = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]


@pytest.mark.parametrize(
    ("scored", "base", "posts"),
    [(0, None, POSTS), (0, [0.15], POSTS), (1, None, [*POSTS, "PROBIT"])],
    ids=["c0", "c0-base", "c1"],
)
@pytest.mark.parametrize("weights", [POSITIVE, MIXED], ids=["positive", "mixed"])
def test_one_scored_class_of_two_matches_onnxruntime(scored, base, posts, weights) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, (40, 2)).astype(np.float32)
    m = _model(scored, weights, posts, base)
    want = ort_run(m, {"X": x})
    got = gc.from_onnx(m).compile().predict(x)
    for k, post in enumerate(posts):
        np.testing.assert_array_equal(got[f"label{k}"], want[2 * k], err_msg=post)
        np.testing.assert_allclose(got[f"Z{k}"], want[2 * k + 1], 1e-6, 1e-6, err_msg=post)


def test_class_one_scored_with_base_values_is_refused_naming_the_node() -> None:
    with pytest.raises(gc.OnnxError, match=r"'forest0'.*class 1 scored alone, and base_values"):
        gc.from_onnx(_model(1, POSITIVE, ["NONE"], [0.1]))
