"""ONNX import of scikit-learn's tree ensembles and support vector machines (ai.onnx.ml
TreeEnsembleClassifier / TreeEnsembleRegressor, SVMClassifier / SVMRegressor) and of Imputer,
as graphc ops, for prediction.

A tree ensemble becomes comparisons and exact one-hot selections (no per-sample gather exists
in graphc's IR):

1. every internal node's feature is picked from the row by a 0/1 selection matrix (a matmul
   whose one nonzero term per column moves the value exactly; NaN rows are cleaned to 0 first
   and infinities clamped to the largest float32, so the product stays exact), and compared
   with its threshold: each mode (BRANCH_LEQ, LT, GTE, GT, EQ, NEQ) is a sum of the three
   comparisons x < t, x == t, x > t with 0/1 coefficients; a NaN feature takes the node's
   ``nodes_missing_value_tracks_true`` branch (NEQ always the true branch, as x != t is true),
   as ONNX Runtime decides;
2. the node each tree's walk goes to next is where(decision, true child, false child), a
   [N, trees, nodes] table; a leaf points to itself;
3. the walk takes one step per level: the current node index (exact small integers in
   float32) is compared with every node position and the next index read through that one-hot
   row, ``depth`` times; after it, the one-hot row of the leaf reached weighs the leaves'
   weights (a matmul over all trees' leaves for SUM / AVERAGE, a min / max over the trees for
   MIN / MAX).

The results equal ONNX Runtime's up to the order of the float32 sum over trees. These operators
are inference-only: their outputs do not depend smoothly on anything, so a model that holds
one refuses a loss and an optimizer (OnnxImport.compile), naming the node.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dsl
from .dsl import Tensor
from .onnx_import import (
    NodeContext,
    Rule,
    Value,
    _labels_of,
    _ml_features,
    _ml_floats,
    _post_transform,
)

ML = "ai.onnx.ml"
FLT_MAX = float(np.finfo(np.float32).max)
MAX_TREE_CELLS = 2**26  # rows x (trees x nodes) of the walk's tables: bounds a hostile file
# each mode as coefficients of (x < t, x == t, x > t)
_MODES = {
    "BRANCH_LEQ": (1.0, 1.0, 0.0),
    "BRANCH_LT": (1.0, 0.0, 0.0),
    "BRANCH_GTE": (0.0, 1.0, 1.0),
    "BRANCH_GT": (0.0, 0.0, 1.0),
    "BRANCH_EQ": (0.0, 1.0, 0.0),
    "BRANCH_NEQ": (1.0, 0.0, 1.0),
    "LEAF": (0.0, 0.0, 0.0),
}
_TREE_ATTRS = (
    "nodes_treeids",
    "nodes_nodeids",
    "nodes_featureids",
    "nodes_modes",
    "nodes_values",
    "nodes_values_as_tensor",
    "nodes_truenodeids",
    "nodes_falsenodeids",
    "nodes_missing_value_tracks_true",
    "nodes_hitrates",
    "nodes_hitrates_as_tensor",
    "post_transform",
    "base_values",
    "base_values_as_tensor",
)


def inference_only(cx: NodeContext) -> None:
    """Record that ``cx``'s node computes a prediction that cannot train (OnnxImport.compile
    refuses a loss or an optimizer, naming it)."""
    cx.imp.inference_only.append(cx.where())


def _ints(cx: NodeContext, name: str, n: int | None = None) -> np.ndarray:
    v = cx.attr(name)
    if v is None:
        cx.fail(f"it has no {name}")
    a = np.asarray(v, np.int64).reshape(-1)
    if n is not None and a.size != n:
        cx.fail(f"{name} has {a.size} entries for {n} nodes")
    return a


def _floats(cx: NodeContext, name: str) -> np.ndarray | None:
    """A float list attribute, or its ``NAME_as_tensor`` form (opset 3), as float64."""
    v = cx.attr(name)
    if v is None:
        v = cx.attr(name + "_as_tensor")
    return None if v is None else np.asarray(v, np.float64).reshape(-1)


class _Forest:
    """The nodes of a tree ensemble read from its attributes: per tree t and compact position
    k, the feature, threshold, mode coefficients, missing branch and children (leaves and
    padding point to themselves); ``leaf[(tree id, node id)]`` is (t, k)."""

    def __init__(self, cx: NodeContext, features: int) -> None:
        tree = _ints(cx, "nodes_treeids")
        n = tree.size
        node = _ints(cx, "nodes_nodeids", n)
        feat = _ints(cx, "nodes_featureids", n)
        true_id = _ints(cx, "nodes_truenodeids", n)
        false_id = _ints(cx, "nodes_falsenodeids", n)
        modes = cx.attr("nodes_modes")
        vals = _floats(cx, "nodes_values")
        if n == 0 or modes is None or len(modes) != n or vals is None or vals.size != n:
            cx.fail(f"nodes_modes and nodes_values must have one entry per node ({n} nodes)")
        miss = cx.attr("nodes_missing_value_tracks_true")
        miss = np.zeros(n, np.int64) if miss is None else np.asarray(miss, np.int64).reshape(-1)
        if miss.size != n:
            cx.fail(f"nodes_missing_value_tracks_true has {miss.size} entries for {n} nodes")
        self.tree_ids = sorted(set(tree.tolist()))
        t_of = {t: i for i, t in enumerate(self.tree_ids)}
        self.pos: dict[tuple[int, int], tuple[int, int]] = {}
        count = [0] * len(self.tree_ids)
        for j in range(n):
            key = (int(tree[j]), int(node[j]))
            if key in self.pos:
                cx.fail(f"tree {key[0]} has two nodes with id {key[1]}")
            t = t_of[key[0]]
            self.pos[key] = (t, count[t])
            count[t] += 1
        self.trees, self.width = len(self.tree_ids), max(count)
        shape = (self.trees, self.width)
        self.feature = np.full(shape, -1, np.int64)
        self.threshold = np.zeros(shape, np.float32)
        self.coef = np.zeros((3, *shape), np.float32)
        self.missing = np.zeros(shape, np.float32)
        self.next_true = np.tile(np.arange(self.width, dtype=np.float32), (self.trees, 1))
        self.next_false = self.next_true.copy()
        for j in range(n):
            t, k = self.pos[(int(tree[j]), int(node[j]))]
            mode = modes[j]
            if mode not in _MODES:
                cx.fail(f"node mode {mode!r} is not one of {', '.join(_MODES)}")
            if mode == "LEAF":
                continue
            f = int(feat[j])
            if not 0 <= f < features:
                cx.fail(f"tree {tree[j]} node {node[j]} reads feature {f} of {features}")
            self.feature[t, k] = f
            self.threshold[t, k] = vals[j]
            self.coef[:, t, k] = _MODES[mode]
            self.missing[t, k] = 1.0 if mode == "BRANCH_NEQ" else float(miss[j] != 0)
            for ids, table in ((true_id, self.next_true), (false_id, self.next_false)):
                child = self.pos.get((int(tree[j]), int(ids[j])))
                if child is None:
                    cx.fail(f"tree {tree[j]} node {node[j]} points to missing node {ids[j]}")
                table[t, k] = child[1]
        # the root of a tree is its first node in the lists (ONNX Runtime's and onnx.reference's
        # reading): compact position 0
        self.depth = max(self._depth(cx, t, count[t]) for t in range(self.trees))

    def _depth(self, cx: NodeContext, t: int, size: int) -> int:
        """The number of steps from tree t's root to its deepest leaf (a cycle fails)."""
        depth, level, seen = 0, {0}, {0}
        while True:
            nxt = {int(self.next_true[t, k]) for k in level} | {
                int(self.next_false[t, k]) for k in level
            }
            nxt -= {k for k in level if self.next_true[t, k] == k}  # leaves stay
            if not nxt:
                return depth
            if nxt & seen or len(seen) > size:
                cx.fail(f"tree {self.tree_ids[t]} is not a tree (a node is reached twice)")
            seen |= nxt
            level = nxt
            depth += 1

    def leaf_weights(
        self, cx: NodeContext, prefix: str, targets: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The weights of ``PREFIX_treeids / _nodeids / _ids / _weights`` as a [trees, width,
        targets] table (several entries of one leaf and target add up, as in ONNX Runtime's
        sum) and a 0/1 table of the (leaf, target) pairs that have a weight."""
        tr = _ints(cx, f"{prefix}_treeids")
        nd = _ints(cx, f"{prefix}_nodeids", tr.size)
        ids = _ints(cx, f"{prefix}_ids", tr.size)
        w = _floats(cx, f"{prefix}_weights")
        if w is None or w.size != tr.size:
            cx.fail(f"{prefix}_weights must have one entry per {prefix}_treeids entry")
        table = np.zeros((self.trees, self.width, targets), np.float64)
        has = np.zeros((self.trees, self.width, targets), np.float32)
        for j in range(tr.size):
            at = self.pos.get((int(tr[j]), int(nd[j])))
            if at is None:
                cx.fail(f"a weight names tree {tr[j]} node {nd[j]}, which does not exist")
            if not 0 <= ids[j] < targets:
                cx.fail(f"a weight names target/class {ids[j]} of {targets}")
            table[at[0], at[1], ids[j]] += w[j]
            has[at[0], at[1], ids[j]] = 1.0
        return table.astype(np.float32), has

    def reached(self, cx: NodeContext, x: Tensor) -> Tensor:
        """The one-hot [N, trees, width] rows of the leaf each tree's walk reaches for rows x."""
        imp = cx.imp
        f = int(x.shape[1])
        cells = self.trees * self.width
        if cells * max(self.depth, 1) > MAX_TREE_CELLS:
            cx.fail(
                f"{self.trees} trees of up to {self.width} nodes and depth {self.depth}: the "
                f"walk's tables exceed {MAX_TREE_CELLS} cells per row"
            )
        name = cx.node.name or f"{cx.node.op_type}_{cx.index}"
        sel = np.zeros((f, cells), np.float32)
        flat = self.feature.reshape(-1)
        inner = np.nonzero(flat >= 0)[0]
        sel[flat[inner], inner] = 1.0
        s = imp.constant_tensor(f"{name}_feature_select", sel, cx, False)
        nan = dsl.apply("not_equal", x, x)
        x0 = dsl.apply("where", nan, dsl.const(0.0), x)
        x0 = dsl.apply("clip", x0, min=-FLT_MAX, max=FLT_MAX)  # inf * 0 would be NaN
        v = dsl.matmul(x0, s)  # [N, cells]: each node's feature, moved exactly
        isnan = dsl.matmul(nan, s)
        thr = imp.constant_tensor(f"{name}_thresholds", self.threshold.reshape(-1), cx, False)
        lt = dsl.apply("greater", thr, v)
        eq = dsl.apply("equal", v, thr)
        gt = dsl.apply("greater", v, thr)
        d: Any = None
        for c, cmp, what in zip(self.coef, (lt, eq, gt), ("lt", "eq", "gt")):
            if not c.any():
                continue
            term = (
                cmp
                if c.all()
                else cmp * imp.constant_tensor(f"{name}_{what}", c.reshape(-1), cx, False)
            )
            d = term if d is None else d + term
        if d is None:
            d = dsl.const(0.0) * v
        miss = imp.constant_tensor(f"{name}_missing", self.missing.reshape(-1), cx, False)
        d = dsl.apply("where", isnan, miss, d)
        tc = imp.constant_tensor(f"{name}_true_child", self.next_true.reshape(-1), cx, False)
        fc = imp.constant_tensor(f"{name}_false_child", self.next_false.reshape(-1), cx, False)
        nxt = dsl.reshape(fc + d * (tc - fc), (x.shape[0], self.trees, self.width))
        iota = imp.constant_tensor(
            f"{name}_positions", np.arange(self.width, dtype=np.float32), cx, False
        )
        root = np.zeros((self.trees, self.width), np.float32)
        root[:, 0] = 1.0
        hot: Tensor = imp.constant_tensor(f"{name}_roots", root, cx, False)
        for _ in range(self.depth):
            cur = dsl.sum(hot * nxt, 2, keepdims=True)  # [N, trees, 1]: the next node's index
            hot = dsl.apply("equal", cur, iota)
        if self.depth == 0:
            hot = hot + 0.0 * dsl.reshape(dsl.sum(x0, 1, keepdims=True), (x.shape[0], 1, 1))
        return hot


def _aggregate(
    cx: NodeContext, forest: _Forest, hot: Tensor, weights: np.ndarray, has: np.ndarray, how: str
) -> Tensor:
    """[N, targets] of the reached leaves' weights over the trees: SUM, AVERAGE (the sum over
    the number of trees), MIN or MAX (over the trees whose leaf has a weight for the target;
    none: 0, as ONNX Runtime's has_score)."""
    name = cx.node.name or f"{cx.node.op_type}_{cx.index}"
    n = hot.shape[0]
    cells = forest.trees * forest.width
    targets = weights.shape[2]
    if how in ("SUM", "AVERAGE"):
        w = weights.reshape(cells, targets)
        if how == "AVERAGE":
            w = w / np.float32(forest.trees)
        wt = cx.imp.constant_tensor(f"{name}_leaf_weights", w.astype(np.float32), cx, False)
        return dsl.matmul(dsl.reshape(hot, (n, cells)), wt)
    if how not in ("MIN", "MAX"):
        cx.fail(f"aggregate_function {how!r} is not one of SUM, AVERAGE, MIN, MAX")
    big = FLT_MAX / 4
    cols = []
    for j in range(targets):
        fill = np.where(has[:, :, j] > 0, weights[:, :, j], big if how == "MIN" else -big)
        c = cx.imp.constant_tensor(f"{name}_leaf_weights_{j}", fill.astype(np.float32), cx, False)
        per = dsl.sum(hot * c, 2, keepdims=False)  # [N, trees]
        r = dsl.apply("min" if how == "MIN" else "max", per, axes=(1,), keepdims=True)
        none = dsl.apply("greater", dsl.const(big / 2), _abs(r))
        cols.append(r * none)
    return cols[0] if len(cols) == 1 else dsl.apply("concat", *cols, axis=1)


def _abs(x: Tensor) -> Tensor:
    return dsl.maximum(x, 0.0 - x)


def tree_ensemble_regressor(cx: NodeContext) -> list[Value]:
    """TreeEnsembleRegressor (ai.onnx.ml; scikit-learn's decision trees, random forests,
    extra trees, gradient boosting): Y [N, n_targets] = aggregate over the trees of the weights
    of the leaf each reaches, + base_values, then post_transform. See the module docstring."""
    x = cx.x(0)
    f = _ml_features(cx, x)
    forest = _Forest(cx, f)
    targets = int(cx.attr("n_targets", 1))
    if targets < 1:
        cx.fail(f"n_targets {targets}")
    weights, has = forest.leaf_weights(cx, "target", targets)
    hot = forest.reached(cx, x)
    y = _aggregate(cx, forest, hot, weights, has, cx.attr("aggregate_function", "SUM"))
    base = _floats(cx, "base_values")
    if base is not None and base.size:
        if base.size != targets:
            cx.fail(f"{base.size} base_values for {targets} targets")
        y = y + cx.imp.constant_tensor("base_values", base.astype(np.float32), cx, False)
    inference_only(cx)
    return [_post_transform(cx, y)]


def tree_ensemble_classifier(cx: NodeContext) -> list[Value]:
    """TreeEnsembleClassifier (ai.onnx.ml): per class, the sum over the trees of the reached
    leaves' weights + base_values; then as ONNX Runtime's TreeAggregatorClassifier: with more
    than two classes Z = post_transform(scores), Y = the label of the largest score; with two
    classes and weights for one class only (gradient boosting's one score s), Y = labels[1]
    where s > 0 (s > 0.5 when every weight is >= 0) and Z = [-s, s] (LOGISTIC: [sigmoid(-s),
    sigmoid(s)]; all weights >= 0: [1 - s, s]); with two classes and weights for both, Z =
    post_transform([s0, s1]) and Y = 1 where s1 > 0, else 0 (ONNX Runtime's positive and
    negative labels, not classlabels: skl2onnx writes one score for two classes)."""
    x = cx.x(0)
    f = _ml_features(cx, x)
    ints, strings = cx.attr("classlabels_int64s"), cx.attr("classlabels_strings")
    if (ints is None) == (strings is None):
        cx.fail("it needs exactly one of classlabels_int64s and classlabels_strings")
    labels = list(ints if ints is not None else strings)
    c = len(labels)
    forest = _Forest(cx, f)
    weights, has = forest.leaf_weights(cx, "class", c)
    hot = forest.reached(cx, x)
    s = _aggregate(cx, forest, hot, weights, has, "SUM")
    base = _floats(cx, "base_values")
    base = np.zeros(0) if base is None else base
    cls_ids = set(np.asarray(cx.attr("class_ids"), np.int64).tolist())
    w_all = _floats(cx, "class_weights")
    positive = bool(w_all is not None and np.all(w_all >= 0))
    pt = cx.attr("post_transform", "NONE")
    if c > 2 or (c == 2 and len(cls_ids) == 2):
        if base.size:
            if base.size != c:
                cx.fail(f"{base.size} base_values for {c} classes")
            s = s + cx.imp.constant_tensor("base_values", base.astype(np.float32), cx, False)
        if c == 2 and base.size == 2:
            cx.fail("two classes with weights for both and two base_values: not supported")
        z = _post_transform(cx, s)
        if c == 2 and ints is not None:  # ONNX Runtime: 1 where s1 > 0, else 0, whatever
            s1 = dsl.apply("slice", s, axes=(1,), starts=(1,), ends=(2,))  # the labels say
            y = dsl.reshape(dsl.apply("greater", s1, dsl.const(0.0)), (x.shape[0],))
            inference_only(cx)
            cx.imp.integral.add(id(y))
            return [y, z]
        if c == 2:
            idx = s  # string labels: no label output
        else:
            idx = dsl.apply("cast", dsl.apply("argmax", s, axis=1, keepdims=False), dtype="f32")
    elif c == 2 and len(cls_ids) == 1:
        k = next(iter(cls_ids))
        s0 = dsl.apply("slice", s, axes=(1,), starts=(k,), ends=(k + 1,))
        if base.size == 1:
            s0 = s0 + float(base[0])
        elif base.size == 2:
            cx.fail("two classes, one scored, and two base_values: not supported")
        cut = 0.5 if positive else 0.0
        idx = dsl.reshape(dsl.apply("greater", s0, dsl.const(cut)), (x.shape[0],))
        if pt == "PROBIT":
            cx.fail("post_transform 'PROBIT' is not supported")
        if positive:
            z = dsl.apply("concat", 1.0 - s0, s0, axis=1)
        elif pt == "LOGISTIC":
            z = dsl.apply(
                "concat", dsl.apply("sigmoid", 0.0 - s0), dsl.apply("sigmoid", s0), axis=1
            )
        else:
            z = dsl.apply("concat", 0.0 - s0, s0, axis=1)
    else:
        cx.fail(f"{c} classes with weights for classes {sorted(cls_ids)}: not supported")
    inference_only(cx)
    if ints is None:
        cx.imp.uncomputed[cx.node.output[0]] = (
            f"the labels of {cx.where()} are strings (classlabels_strings); import the "
            "probabilities only"
        )
        return [None, z]
    y = _labels_of(cx, idx, np.asarray(labels, np.int64))
    cx.imp.lookups.append((idx, (0, c - 1), cx.where()))
    if len(y.shape) == 2:
        y = dsl.reshape(y, (y.shape[0],))
    cx.imp.integral.add(id(y))
    return [y, z]


def imputer(cx: NodeContext) -> list[Value]:
    """Imputer (ai.onnx.ml; scikit-learn's SimpleImputer): each element equal to
    ``replaced_value_float`` (NaN: each NaN) replaced by its feature's
    ``imputed_value_floats`` (one value per feature, or one for all). Exact."""
    x = cx.x(0)
    vals = _ml_floats(cx, "imputed_value_floats")
    if vals is None or vals.size == 0:
        cx.fail("it needs imputed_value_floats (integer imputation is not supported)")
    f = x.shape[-1]
    if vals.size not in (1, f) or f == "N":
        cx.fail(f"{vals.size} imputed values for {f} features (one per feature, or one)")
    r = float(cx.attr("replaced_value_float", 0.0))
    hit = dsl.apply("not_equal", x, x) if np.isnan(r) else dsl.apply("equal", x, dsl.const(r))
    v = (
        dsl.const(float(vals[0]))
        if vals.size == 1
        else cx.imp.constant_tensor("imputed", vals, cx, False)
    )
    return [dsl.apply("where", hit, v, x)]


ML_OPS: dict[str, Rule] = {
    "ai.onnx.ml:TreeEnsembleRegressor": Rule(
        tree_ensemble_regressor,
        (
            *_TREE_ATTRS,
            "n_targets",
            "aggregate_function",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
            "target_weights_as_tensor",
        ),
        domain=ML,
    ),
    "ai.onnx.ml:TreeEnsembleClassifier": Rule(
        tree_ensemble_classifier,
        (
            *_TREE_ATTRS,
            "classlabels_int64s",
            "classlabels_strings",
            "class_treeids",
            "class_nodeids",
            "class_ids",
            "class_weights",
            "class_weights_as_tensor",
        ),
        domain=ML,
    ),
    "ai.onnx.ml:Imputer": Rule(
        imputer,
        (
            "imputed_value_floats",
            "imputed_value_int64s",
            "replaced_value_float",
            "replaced_value_int64",
        ),
        domain=ML,
    ),
}
