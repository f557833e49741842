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

import warnings
from typing import Any

import numpy as np

from . import dsl
from .dsl import Tensor
from .onnx_import import (
    NodeContext,
    OnnxPrecisionWarning,
    Rule,
    Value,
    _abs,
    _cast_to,
    _class_labels,
    _label_outputs,
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
        self.threshold64 = np.zeros(shape, np.float64)  # as the file gives them (float or double)
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
            self.threshold[t, k] = self.threshold64[t, k] = vals[j]
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
        """The number of steps from tree t's root to its deepest leaf: the longest path (a
        node may have two parents, as the chain a BRANCH_MEMBER set becomes: _v5_as_v3); a
        cycle fails. ``size``: the tree's node count."""
        kids: dict[int, set[int]] = {}
        todo = [0]
        while todo:  # the nodes the root reaches, and their children (a leaf points to itself)
            k = todo.pop()
            if k in kids:
                continue
            leaf = self.next_true[t, k] == k
            kids[k] = set() if leaf else {int(self.next_true[t, k]), int(self.next_false[t, k])}
            todo += kids[k] - kids.keys()
        parents = dict.fromkeys(kids, 0)
        for k in kids:
            for c in kids[k]:
                parents[c] += 1
        order = [k for k in kids if parents[k] == 0]
        for k in order:  # Kahn's order: a node after all its parents
            for c in kids[k]:
                parents[c] -= 1
                if parents[c] == 0:
                    order.append(c)
        if len(order) != len(kids) or len(kids) > size:
            cx.fail(f"tree {self.tree_ids[t]} is not a tree (its nodes form a cycle)")
        steps = dict.fromkeys(kids, 0)
        for k in order:
            for c in kids[k]:
                steps[c] = max(steps[c], steps[k] + 1)
        return max(steps.values())

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
        # a double graph input held as f64 (OnnxImport.compared_in_double) is compared with the
        # thresholds in float64, as ONNX Runtime does: a value within float32's rounding of a
        # threshold takes the branch it takes there; any other X in float32
        wide = imp.wide.get(id(x))
        if wide is None and imp.elem_type(cx.node.input[0]) == 11:
            warnings.warn(
                f"{cx.where()}: its X is a double the graph computes, which graphc holds in "
                "float32 where ONNX Runtime compares it with the thresholds in float64: a row "
                "within float32's rounding of a threshold may reach another leaf (a graph "
                "input read by the tree directly is compared in float64)",
                OnnxPrecisionWarning,
                stacklevel=2,
            )
        dt, big = ("f64", float(np.finfo(np.float64).max)) if wide is not None else ("f32", FLT_MAX)
        thresholds = self.threshold if wide is None else self.threshold64

        def table(what: str, a: np.ndarray) -> Tensor:
            return imp.constant_tensor(f"{name}_{what}", a.reshape(-1), cx, False, dt)

        sel = np.zeros((f, cells), np.float32)
        flat = self.feature.reshape(-1)
        inner = np.nonzero(flat >= 0)[0]
        sel[flat[inner], inner] = 1.0
        s = imp.constant_tensor(f"{name}_feature_select", sel, cx, False, dt)
        xs = x if wide is None else wide
        nan = dsl.apply("not_equal", xs, xs)
        x0 = dsl.apply("where", nan, dsl.const(0.0, dt), xs)
        x0 = dsl.apply("clip", x0, min=-big, max=big)  # inf * 0 would be NaN
        v = dsl.matmul(x0, s)  # [N, cells]: each node's feature, moved exactly
        isnan = dsl.matmul(nan, s)
        thr = table("thresholds", thresholds)
        lt = dsl.apply("greater", thr, v)
        eq = dsl.apply("equal", v, thr)
        gt = dsl.apply("greater", v, thr)
        d: Any = None
        for c, cmp, what in zip(self.coef, (lt, eq, gt), ("lt", "eq", "gt")):
            if not c.any():
                continue
            term = cmp if c.all() else cmp * table(what, c)
            d = term if d is None else d + term
        if d is None:
            d = dsl.const(0.0, dt) * v
        d = dsl.apply("where", isnan, table("missing", self.missing), d)
        if wide is not None:
            d = dsl.apply("cast", d, dtype="f32")  # 0 / 1: the walk goes on in float32
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
            hot = hot + 0.0 * dsl.reshape(dsl.sum(d, 1, keepdims=True), (x.shape[0], 1, 1))
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
    where s > 0 (s > 0.5 when every weight is >= 0) and, for weights of class 0, Z = [-s, s]
    (LOGISTIC: [sigmoid(-s), sigmoid(s)]; all weights >= 0: [1 - p, p], p = sigmoid(s) for
    LOGISTIC, else s), for weights of class 1, Z = post_transform([0, s]) (ONNX Runtime
    1.32, probed); with two classes and weights for both, Z =
    post_transform([s0, s1]) and Y = 1 where s1 > 0, else 0 (ONNX Runtime's positive and
    negative labels, not classlabels: skl2onnx writes one score for two classes)."""
    x = cx.x(0)
    f = _ml_features(cx, x)
    numeric, labels = _class_labels(cx, "classlabels_int64s")
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
        if c == 2 and numeric:  # ONNX Runtime: 1 where s1 > 0, else 0, whatever
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
        if k == 1 and base.size:
            cx.fail(
                "two classes, class 1 scored alone, and base_values: not supported (ONNX "
                "Runtime 1.32's scores leave the base value out there, or drop the score)"
            )
        if base.size == 1:
            s0 = s0 + float(base[0])
        elif base.size == 2:
            cx.fail("two classes, one scored, and two base_values: not supported")
        cut = 0.5 if positive else 0.0
        idx = dsl.reshape(dsl.apply("greater", s0, dsl.const(cut)), (x.shape[0],))
        if k == 1:  # ONNX Runtime scores the classes as [0, s], post_transform included
            z = _post_transform(cx, dsl.apply("concat", 0.0 * s0, s0, axis=1))
        elif pt == "PROBIT":
            cx.fail("post_transform 'PROBIT' is not supported")
        elif positive:  # [1 - p, p], p = sigmoid(s) for LOGISTIC, else s
            p = dsl.apply("sigmoid", s0) if pt == "LOGISTIC" else s0
            z = dsl.apply("concat", 1.0 - p, p, axis=1)
        elif pt == "LOGISTIC":
            z = dsl.apply(
                "concat", dsl.apply("sigmoid", 0.0 - s0), dsl.apply("sigmoid", s0), axis=1
            )
        else:
            z = dsl.apply("concat", 0.0 - s0, s0, axis=1)
    else:
        cx.fail(f"{c} classes with weights for classes {sorted(cls_ids)}: not supported")
    inference_only(cx)
    return _label_outputs(cx, idx, numeric, labels, z)


# ai.onnx.ml opset 5's TreeEnsemble: the integer codes of its enum attributes (the operator's
# specification), as the opset-3 operators' names
_V5_MODES = (*list(_MODES)[:6], "BRANCH_MEMBER")
_V5_AGGREGATE = ("AVERAGE", "SUM", "MIN", "MAX")
# post_transform: ONNX Runtime (1.32, probed: 1 gives the sigmoid of each score, 2 each row's
# softmax) reads its own enum's order, where the specification says 1 SOFTMAX, 2 LOGISTIC
# (onnx.reference follows it); graphc computes what ONNX Runtime does and warns on 1 and 2
_V5_POST = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")


class OnnxReadingWarning(UserWarning):
    """A file whose meaning ONNX Runtime and the operator's specification read differently:
    graphc computes what ONNX Runtime does."""


class _GivenAttrs(NodeContext):
    """``cx`` with other attribute values (TreeEnsemble's in TreeEnsembleRegressor's form)."""

    def __init__(self, cx: NodeContext, values: dict[str, Any]) -> None:
        super().__init__(cx.imp, cx.node, cx.index, cx.version)
        self.values = values

    def attr(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def _enum(cx: NodeContext, name: str, names: tuple[str, ...], default: int) -> str:
    """The name of integer attribute ``name``'s code."""
    v = cx.attr(name, default)
    if not isinstance(v, int) or not 0 <= v < len(names):
        cx.fail(f"{name} {v!r} is not one of 0 .. {len(names) - 1} ({', '.join(names)})")
    return names[v]


def _member_sets(cx: NodeContext, modes: np.ndarray) -> dict[int, list[float]]:
    """BRANCH_MEMBER node index -> its set: ``membership_values`` holds the sets of the member
    nodes in node order, each ended by a NaN."""
    member = [i for i in range(modes.size) if _V5_MODES[modes[i]] == "BRANCH_MEMBER"]
    if not member:
        return {}
    values = _floats(cx, "membership_values")
    if values is None:
        cx.fail(f"{len(member)} BRANCH_MEMBER nodes and no membership_values")
    sets: list[list[float]] = [[]]
    for v in values.tolist():
        if np.isnan(v):
            sets.append([])
        else:
            sets[-1].append(v)
    if not sets[-1]:
        sets.pop()  # the last set's NaN
    if len(sets) != len(member):
        cx.fail(f"membership_values holds {len(sets)} sets for {len(member)} BRANCH_MEMBER nodes")
    for i, values in zip(member, sets, strict=True):
        if not values:  # ONNX Runtime 1.32 refuses the file
            cx.fail(
                f"BRANCH_MEMBER node {i}'s set is empty (two NaN in a row in membership_values)"
            )
    return dict(zip(member, sets, strict=True))


def _v5_as_v3(cx: NodeContext) -> dict[str, Any]:
    """TreeEnsemble's attributes (nodes and leaves in separate lists, trees by their roots'
    indices) as TreeEnsembleRegressor's: per tree, the nodes its root reaches, numbered from
    0 (the root first), each leaf a LEAF node with its one (target, weight); a BRANCH_MEMBER
    node of set {v1 .. vk} becomes the chain x == v1, else x == v2, ... (each taking the
    node's missing-value branch), whose true branches all go to the node's true child (an
    empty set is refused, as ONNX Runtime refuses it). A root whose two children are the same leaf
    is that leaf (a tree of one leaf, as onnx.reference reads it)."""
    feat = _ints(cx, "nodes_featureids")
    n = feat.size
    to = {True: _ints(cx, "nodes_truenodeids", n), False: _ints(cx, "nodes_falsenodeids", n)}
    leafs = {True: _ints(cx, "nodes_trueleafs", n), False: _ints(cx, "nodes_falseleafs", n)}
    modes = _ints(cx, "nodes_modes", n)
    splits = _floats(cx, "nodes_splits")
    if splits is None or splits.size != n:
        cx.fail(f"nodes_splits must have one entry per node ({n} nodes)")
    if np.any((modes < 0) | (modes >= len(_V5_MODES))):
        cx.fail(f"nodes_modes holds a code outside 0 .. {len(_V5_MODES) - 1}")
    miss = cx.attr("nodes_missing_value_tracks_true")
    miss = (
        np.zeros(n, np.int64) if miss is None else _ints(cx, "nodes_missing_value_tracks_true", n)
    )
    target = _ints(cx, "leaf_targetids")
    weight = _floats(cx, "leaf_weights")
    if weight is None or weight.size != target.size:
        cx.fail("leaf_weights must have one entry per leaf_targetids entry")
    sets = _member_sets(cx, modes)
    v3: dict[str, Any] = {k: [] for k in _V3_LISTS}

    def node(*values: Any) -> None:  # t, node id, feature, mode, value, true, false, missing
        for key, v in zip(_V3_LISTS[:8], values, strict=True):
            v3[key].append(v)

    for t, root in enumerate(_ints(cx, "tree_roots").tolist()):
        if not 0 <= root < n:
            cx.fail(f"tree {t}'s root {root} is no node (of {n})")
        ids: dict[tuple[bool, int], int] = {}  # (leaf, index) -> its node id in tree t
        todo: list[tuple[bool, int]] = []
        count = [0]

        def fresh() -> int:
            count[0] += 1
            return count[0] - 1

        def number(leaf: bool, i: int) -> int:
            if not 0 <= i < (target.size if leaf else n):
                what = "leaf" if leaf else "node"
                cx.fail(f"tree {t} names {what} {i}, which does not exist")
            if (leaf, i) not in ids:
                ids[(leaf, i)] = fresh()
                todo.append((leaf, i))
            return ids[(leaf, i)]

        one = bool(leafs[True][root] and leafs[False][root] and to[True][root] == to[False][root])
        number(one, int(to[True][root]) if one else root)
        while todo:
            leaf, i = todo.pop(0)
            k = ids[(leaf, i)]
            if leaf:
                node(t, k, 0, "LEAF", 0.0, k, k, 0)
                for key, v in zip(_V3_LISTS[8:], (t, k, int(target[i]), weight[i]), strict=True):
                    v3[key].append(v)
                continue
            yes, no = (number(bool(leafs[b][i]), int(to[b][i])) for b in (True, False))
            f, m = int(feat[i]), int(miss[i])
            if i not in sets:
                node(t, k, f, _V5_MODES[modes[i]], float(splits[i]), yes, no, m)
            else:
                for j, v in enumerate(sets[i]):
                    nxt = no if j == len(sets[i]) - 1 else fresh()
                    node(t, k, f, "BRANCH_EQ", v, yes, nxt, m)
                    k = nxt
    v3["n_targets"] = int(cx.attr("n_targets", int(target.max(initial=-1)) + 1))
    v3["aggregate_function"] = _enum(cx, "aggregate_function", _V5_AGGREGATE, 1)
    v3["post_transform"] = post = _enum(cx, "post_transform", _V5_POST, 0)
    if post in ("LOGISTIC", "SOFTMAX"):
        warnings.warn(
            f"{cx.where()}: post_transform {_V5_POST.index(post)} is {post} as ONNX Runtime "
            f"computes it, where the operator's specification (and onnx.reference) reads it as "
            f"{'SOFTMAX' if post == 'LOGISTIC' else 'LOGISTIC'}",
            OnnxReadingWarning,
            stacklevel=2,
        )
    return v3


_V3_LISTS = (
    "nodes_treeids",
    "nodes_nodeids",
    "nodes_featureids",
    "nodes_modes",
    "nodes_values",
    "nodes_truenodeids",
    "nodes_falsenodeids",
    "nodes_missing_value_tracks_true",
    "target_treeids",
    "target_nodeids",
    "target_ids",
    "target_weights",
)


def tree_ensemble(cx: NodeContext) -> list[Value]:
    """TreeEnsemble (ai.onnx.ml opset 5, the one tree operator that replaces
    TreeEnsembleRegressor / Classifier; skl2onnx with target_opset {'ai.onnx.ml': 5}): Y [N,
    n_targets] = aggregate (AVERAGE, SUM, MIN, MAX) over the trees of the weight of the leaf
    each reaches, then post_transform; BRANCH_MEMBER nodes test x against a set. Read as a
    TreeEnsembleRegressor (_v5_as_v3) and lowered as one; see the module docstring."""
    return tree_ensemble_regressor(_GivenAttrs(cx, _v5_as_v3(cx)))


# ---------------------------------------------------------------- support vector machines

# rounds of libsvm's pairwise coupling that graphc unrolls. ONNX Runtime allows 100, but its stop
# (0.005 / C) comes early: 1 to 5 rounds in every row measured (iris, wine, digits SVCs, and
# 15,000 random pairwise tables of 2 to 10 classes with probabilities at the 1e-7 clamps);
# 100 unrolled rounds took 42 s to compile for 3 classes. A row that would need more keeps
# its value after this many rounds.
MAX_COUPLING_LOOPS = 10


def _kernel(cx: NodeContext, x: Tensor, sv: np.ndarray) -> Tensor:
    """[N, V] kernel values of rows x [N, F] against the support vectors sv [V, F]:
    ``kernel_type`` LINEAR x.s, POLY (gamma x.s + coef0) ** degree, RBF exp(-gamma |x - s|^2)
    (as |x|^2 - 2 x.s + |s|^2, clamped at 0), SIGMOID tanh(gamma x.s + coef0);
    ``kernel_params`` = [gamma, coef0, degree] (ONNX-ML's SVM formulas)."""
    kind = cx.attr("kernel_type", "LINEAR")
    params = _ml_floats(cx, "kernel_params")
    gamma, coef0, degree = (
        (float(params[0]), float(params[1]), float(params[2]))
        if params is not None and params.size >= 3
        else (0.0, 0.0, 0.0)
    )
    name = cx.node.name or f"{cx.node.op_type}_{cx.index}"
    if kind == "RBF":
        return dsl.exp(_squared_distances(cx, x, sv, name) * (-gamma))
    s = cx.imp.constant_tensor(f"{name}_support_vectors_t", sv.T.copy(), cx, False)
    dot = dsl.matmul(x, s)
    if kind == "LINEAR":
        return dot
    if kind == "POLY":
        if degree != int(degree) or degree < 0:
            cx.fail(f"POLY kernel of degree {degree}: graphc takes whole degrees")
        base = dot * gamma + coef0
        out = base
        for _ in range(int(degree) - 1):
            out = out * base
        return out if degree >= 1 else dsl.const(1.0) + 0.0 * dot
    if kind == "SIGMOID":
        return dsl.apply("tanh", dot * gamma + coef0)
    cx.fail(f"kernel_type {kind!r} is not one of LINEAR, POLY, RBF, SIGMOID")
    return dot


DIRECT_DISTANCE_MAX = 8192  # support vectors x features for the [N, V, F] differences


def _squared_distances(cx: NodeContext, x: Tensor, sv: np.ndarray, name: str) -> Tensor:
    """[N, V] squared distances |x - sv_j|^2: summed from the differences (as ONNX Runtime's
    RBF kernel) when V * F <= DIRECT_DISTANCE_MAX, else |x - c|^2 - 2 (x - c).(s - c) +
    |s - c|^2 about the support vectors' mean c (a matmul; centring keeps the cancellation of
    large features, areas of 1e3, near their spread), clamped at 0."""
    v, f = sv.shape
    if v * f <= DIRECT_DISTANCE_MAX:
        s = cx.imp.constant_tensor(f"{name}_support_vectors", sv, cx, False)
        diff = dsl.reshape(x, (x.shape[0], 1, f)) - s
        return dsl.sum(diff * diff, 2, keepdims=False)
    c = sv.mean(0)
    sc = (sv - c).astype(np.float32)
    xc = x - cx.imp.constant_tensor(f"{name}_support_mean", c.astype(np.float32), cx, False)
    st = cx.imp.constant_tensor(f"{name}_support_vectors_t", sc.T.copy(), cx, False)
    sq = cx.imp.constant_tensor(f"{name}_support_norms", (sc * sc).sum(1), cx, False)
    d2 = dsl.sum(xc * xc, 1, keepdims=True) - 2.0 * dsl.matmul(xc, st) + sq
    return dsl.maximum(d2, 0.0)


def _svm_vectors(cx: NodeContext, f: int) -> np.ndarray:
    sv = _ml_floats(cx, "support_vectors")
    if sv is None or sv.size == 0 or sv.size % f:
        cx.fail(f"support_vectors must hold whole rows of {f} features")
    return sv.reshape(-1, f)


def svm_regressor(cx: NodeContext) -> list[Value]:
    """SVMRegressor (ai.onnx.ml; scikit-learn's SVR, NuSVR, OneClassSVM): y [N, 1] =
    sum_j coefficients_j K(x, sv_j) + rho (n_supports > 0), or x . coefficients + rho (linear,
    no support vectors); ``one_class``: 1 where that is > 0, else -1 (ONNX Runtime's
    svmregressor). A post_transform other than NONE is refused."""
    x = cx.x(0)
    f = _ml_features(cx, x)
    coef = _ml_floats(cx, "coefficients")
    rho = _ml_floats(cx, "rho")
    if coef is None or coef.size == 0 or rho is None or rho.size == 0:
        cx.fail("it needs coefficients and rho")
    name = cx.node.name or f"{cx.node.op_type}_{cx.index}"
    if int(cx.attr("n_supports", 0)) > 0:
        sv = _svm_vectors(cx, f)
        if coef.size != sv.shape[0]:
            cx.fail(f"{coef.size} coefficients for {sv.shape[0]} support vectors")
        k = _kernel(cx, x, sv)
    else:
        if coef.size != f:
            cx.fail(f"{coef.size} coefficients for {f} features (linear mode)")
        k = x
    w = cx.imp.constant_tensor(f"{name}_coefficients", coef.reshape(-1, 1), cx, False)
    y = dsl.matmul(k, w) + float(rho[0])
    if int(cx.attr("one_class", 0)):
        y = 2.0 * dsl.apply("greater", y, dsl.const(0.0)) - 1.0
        cx.imp.integral.add(id(y))
    if cx.attr("post_transform", "NONE") != "NONE":
        cx.fail(f"post_transform {cx.attr('post_transform')!r} is not supported (NONE)")
    inference_only(cx)
    return [y]


def _pair_matrix(coef: np.ndarray, per_class: list[int], v: int) -> np.ndarray:
    """[V, pairs] matrix A of the one-vs-one decision values d = K @ A (libsvm's layout of
    ``coefficients``, [C - 1, V]: pair (i, j), i < j, weighs class i's vectors by row j - 1
    and class j's by row i)."""
    c = len(per_class)
    start = np.concatenate([[0], np.cumsum(per_class)]).astype(int)
    rows = coef.reshape(c - 1, v)
    cols = []
    for i in range(c - 1):
        for j in range(i + 1, c):
            a = np.zeros(v, np.float32)
            a[start[i] : start[i + 1]] = rows[j - 1, start[i] : start[i + 1]]
            a[start[j] : start[j + 1]] = rows[i, start[j] : start[j + 1]]
            cols.append(a)
    return np.stack(cols, 1)


def _coupling(r: list[list[Any]], c: int) -> Tensor:
    """libsvm's multiclass_probability (Wu, Lin and Weng 2004, method 2), as ONNX Runtime
    runs it in float32: p from the pairwise probabilities r[i][j] ([N, 1] each), p = 1/C
    at first, rounds of Gauss-Seidel steps until max_i |(Qp)_i - p.Qp| < 0.005 / C (ONNX
    Runtime: or 100 rounds; graphc: MAX_COUPLING_LOOPS); a row that has met the stop is
    frozen (its steps are multiplied by 0)."""
    q = [[None] * c for _ in range(c)]
    for i in range(c):
        diag: Any = None
        for j in range(c):
            if j == i:
                continue
            t = r[j][i] * r[j][i]
            diag = t if diag is None else diag + t
            if j > i:
                q[i][j] = 0.0 - r[j][i] * r[i][j]
            else:
                q[i][j] = q[j][i]
        q[i][i] = diag
    p = [r[0][1] * 0.0 + 1.0 / c for _ in range(c)]
    eps = 0.005 / c
    done: Any = None
    for _ in range(MAX_COUPLING_LOOPS):
        qp = [_dot([q[i][j] for j in range(c)], p) for i in range(c)]
        pqp = _dot(p, qp)
        err = None
        for i in range(c):
            e = _abs(qp[i] - pqp)
            err = e if err is None else dsl.maximum(err, e)
        stop = dsl.apply("greater", dsl.const(eps), err)
        done = stop if done is None else dsl.maximum(done, stop)
        live = 1.0 - done
        for t in range(c):
            diff = (pqp - qp[t]) / q[t][t] * live
            p[t] = p[t] + diff
            one = 1.0 + diff
            pqp = (pqp + diff * (diff * q[t][t] + 2.0 * qp[t])) / one / one
            qp = [(qp[j] + diff * q[t][j]) / one for j in range(c)]
            p = [pj / one for pj in p]
    return dsl.apply("concat", *p, axis=1)


def _dot(a: list[Any], b: list[Any]) -> Any:
    out = a[0] * b[0]
    for u, w in zip(a[1:], b[1:]):
        out = out + u * w
    return out


def svm_classifier(cx: NodeContext) -> list[Value]:
    """SVMClassifier (ai.onnx.ml; scikit-learn's SVC, NuSVC), as ONNX Runtime's svmclassifier:
    with support vectors, the one-vs-one decision values d_ij = sum over class i's and class
    j's vectors of coefficient * K(x, sv) + rho_ij; each votes for i where d_ij > 0, else j,
    and Y = the label of the most votes (the first at a tie). Z: with prob_a / prob_b, libsvm's
    pairwise coupling of the Platt probabilities 1 / (1 + exp(A d + B)) (clamped to [1e-7,
    1 - 1e-7]), [N, C]; without, the decision values [N, C (C - 1) / 2] (two classes: [-d,
    d], or [1 - p, p] under a post_transform, p = sigmoid(d) for LOGISTIC, else d); more
    classes: post_transform applied. Without support vectors
    (linear mode), scores x . coefficients_c + rho_0, Y their argmax."""
    x = cx.x(0)
    f = _ml_features(cx, x)
    numeric, labels = _class_labels(cx, "classlabels_ints")
    c = len(labels)
    coef = _ml_floats(cx, "coefficients")
    rho = _ml_floats(cx, "rho")
    if c < 2 or coef is None or coef.size == 0 or rho is None or rho.size == 0:
        cx.fail("it needs two or more classes, coefficients and rho")
    name = cx.node.name or f"{cx.node.op_type}_{cx.index}"
    per_class = [int(v) for v in (cx.attr("vectors_per_class") or [])]
    pt = cx.attr("post_transform", "NONE")
    pa, pb = _ml_floats(cx, "prob_a"), _ml_floats(cx, "prob_b")
    pairs = c * (c - 1) // 2
    if not per_class:  # linear mode
        if coef.size != c * f:
            cx.fail(f"{coef.size} coefficients for {c} classes of {f} features (linear mode)")
        w = cx.imp.constant_tensor(f"{name}_coefficients", coef.reshape(c, f).T.copy(), cx, False)
        s = dsl.matmul(x, w) + float(rho[0])
        if c == 2:
            cx.fail("two classes in linear mode (no support vectors): not supported")
        z = _post_transform(cx, s)
        idx = dsl.apply("cast", dsl.apply("argmax", s, axis=1, keepdims=False), dtype="f32")
    else:
        sv = _svm_vectors(cx, f)
        v = sv.shape[0]
        if len(per_class) != c or sum(per_class) != v or coef.size != (c - 1) * v:
            cx.fail(
                f"vectors_per_class {per_class} and {coef.size} coefficients do not fit {c} "
                f"classes and {v} support vectors"
            )
        if rho.size < pairs:
            cx.fail(f"{rho.size} rho values for {pairs} class pairs")
        a = cx.imp.constant_tensor(f"{name}_pairs", _pair_matrix(coef, per_class, v), cx, False)
        d = dsl.matmul(_kernel(cx, x, sv), a) + cx.imp.constant_tensor(
            f"{name}_rho", rho[:pairs].copy(), cx, False
        )
        cols = [dsl.apply("slice", d, axes=(1,), starts=(k,), ends=(k + 1,)) for k in range(pairs)]
        votes: list[Any] = [None] * c
        k = 0
        for i in range(c - 1):
            for j in range(i + 1, c):
                win = dsl.apply("greater", cols[k], dsl.const(0.0))
                for cl, vote in ((i, win), (j, 1.0 - win)):
                    votes[cl] = vote if votes[cl] is None else votes[cl] + vote
                k += 1
        vs = dsl.apply("concat", *votes, axis=1)
        idx = dsl.apply("cast", dsl.apply("argmax", vs, axis=1, keepdims=False), dtype="f32")
        if pa is not None and pa.size:
            if pb is None or pa.size < pairs or pb.size < pairs:
                cx.fail(f"prob_a and prob_b need {pairs} values (one per class pair)")
            r: list[list[Any]] = [[None] * c for _ in range(c)]
            k = 0
            for i in range(c - 1):
                for j in range(i + 1, c):
                    pr = dsl.apply("sigmoid", 0.0 - (cols[k] * float(pa[k]) + float(pb[k])))
                    pr = dsl.apply("clip", pr, min=1e-7, max=1.0 - 1e-7)
                    r[i][j], r[j][i] = pr, 1.0 - pr
                    k += 1
            z = _post_transform(cx, _coupling(r, c))
        elif c == 2:
            if pt == "NONE":
                z = dsl.apply("concat", 0.0 - d, d, axis=1)
            elif pt == "PROBIT":
                cx.fail("post_transform 'PROBIT' is not supported")
            else:  # ONNX Runtime: [1 - p, p], p = sigmoid(d) for LOGISTIC, else d
                pd = dsl.apply("sigmoid", d) if pt == "LOGISTIC" else d
                z = dsl.apply("concat", 1.0 - pd, pd, axis=1)
        else:
            z = _post_transform(cx, d)
    inference_only(cx)
    return _label_outputs(cx, idx, numeric, labels, z)


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


def one_hot_encoder(cx: NodeContext) -> list[Value]:
    """OneHotEncoder (ai.onnx.ml; scikit-learn's OneHotEncoder, KBinsDiscretizer(encode=
    'onehot')): X [N, ...] -> [N, ..., K], 1 where the element equals ``cats_int64s[k]`` (the
    element truncated toward zero first, as ONNX Runtime reads a float input as int64), else
    0. An element in no category gives a row of zeros; ONNX Runtime raises on it when
    ``zeros`` = 0 (graphc cannot raise per row: the zeros are its answer). String categories
    are refused."""
    x = cx.x(0)
    cats = cx.attr("cats_int64s")
    if cats is None or not len(cats):
        cx.fail("it needs cats_int64s (string categories, cats_strings, are not supported)")
    k = np.asarray(cats, np.int64)
    if np.any(np.abs(k) >= 2**24):
        cx.fail("categories beyond +-2**24 are not exact in float32")
    if id(x) not in cx.imp.integral:  # a float input: ONNX Runtime truncates it to int64
        (x,) = _cast_to(cx, x, 7)
    name = cx.node.name or f"{cx.node.op_type}_{cx.index}"
    c = cx.imp.constant_tensor(f"{name}_categories", k.astype(np.float32), cx, False)
    y = dsl.apply("equal", dsl.reshape(x, (*x.shape, 1)), c)
    cx.imp.integral.add(id(y))
    return [y]


def feature_vectorizer(cx: NodeContext) -> list[Value]:
    """FeatureVectorizer (ai.onnx.ml): the inputs' columns side by side, [N, sum of
    ``inputdimensions``]; each input [N] or [N, F] gives its first d columns (padded with 0
    where it has fewer), as ONNX Runtime copies them."""
    dims = [int(d) for d in (cx.attr("inputdimensions") or [])]
    if len(dims) != cx.n_inputs:
        cx.fail(f"inputdimensions {dims} for {cx.n_inputs} inputs")
    parts, integral = [], True
    for i, d in enumerate(dims):
        x = cx.x(i)
        integral = integral and id(x) in cx.imp.integral
        if len(x.shape) == 1:
            x = dsl.reshape(x, (x.shape[0], 1))
        if len(x.shape) != 2 or x.shape[1] == "N" or d < 1:
            cx.fail(f"input {i} of shape {x.shape} with dimension {d}: graphc reads [N, F]")
        f = int(x.shape[1])
        if f > d:
            x = dsl.apply("slice", x, axes=(1,), starts=(0,), ends=(d,))
        elif f < d:
            x = dsl.apply("pad", x, axes=(1,), before=(0,), after=(d - f,))
        parts.append(x)
    out = parts[0] if len(parts) == 1 else dsl.apply("concat", *parts, axis=1)
    if integral:
        cx.imp.integral.add(id(out))
    return [out]


def label_encoder(cx: NodeContext) -> list[Value]:
    """LabelEncoder (ai.onnx.ml, opsets 2 to 4; skl2onnx's IsolationForest maps leaf indices
    to path lengths with it): each element equal to keys[k] becomes values[k], any other the
    default (default_float 0 / default_int64 -1, or default_tensor), as sum_k [x == key_k]
    values_k + [no key] default (exact: one term is nonzero). Numeric keys and values
    (floats, int64, or the *_tensor forms); string keys or values are refused."""
    x = cx.x(0)
    keys = vals = None
    for kind in ("keys_floats", "keys_int64s", "keys_tensor"):
        if cx.attr(kind) is not None:
            keys = np.asarray(cx.attr(kind)).reshape(-1)
    for kind in ("values_floats", "values_int64s", "values_tensor"):
        if cx.attr(kind) is not None:
            vals = np.asarray(cx.attr(kind)).reshape(-1)
            integer_values = kind == "values_int64s" or vals.dtype.kind in "iu"
    if keys is None or vals is None or keys.dtype.kind not in "iuf" or vals.dtype.kind not in "iuf":
        cx.fail("it needs numeric keys and values (string keys or values are not supported)")
    if keys.size != vals.size or keys.size == 0:
        cx.fail(f"{keys.size} keys for {vals.size} values")
    if np.any(np.isnan(keys.astype(np.float64))):
        cx.fail("a NaN key is not supported")
    if np.any(keys.astype(np.float64) != keys.astype(np.float32).astype(np.float64)):
        cx.fail("keys beyond float32's exact range (integers above 2**24) are not supported")
    if cx.attr("default_tensor") is not None:
        default = float(np.asarray(cx.attr("default_tensor")).reshape(-1)[0])
    elif integer_values:
        default = float(cx.attr("default_int64", -1))
    else:
        default = float(cx.attr("default_float", 0.0))
    name = cx.node.name or f"{cx.node.op_type}_{cx.index}"
    k = cx.imp.constant_tensor(f"{name}_keys", keys.astype(np.float32), cx, False)
    v = cx.imp.constant_tensor(f"{name}_values", vals.astype(np.float32), cx, False)
    r = len(x.shape)
    hit = dsl.apply("equal", dsl.reshape(x, (*x.shape, 1)), k)  # [..., K]
    found = dsl.sum(hit, r, keepdims=False)
    y = dsl.sum(hit * v, r, keepdims=False) + (1.0 - found) * default
    if integer_values:
        cx.imp.integral.add(id(y))
    return [y]


def compares_integer_input(node, name: str) -> bool:
    """Whether an ai.onnx.ml node only compares the integer value ``name`` with whole-number
    constants below 2**24 in magnitude (OneHotEncoder's categories, LabelEncoder's numeric
    keys), so that graphc may read it as float32: every integer below 2**24 is exact there, and
    one rounded past 2**24 equals none of the constants, as its int64 equals none in ONNX
    Runtime. Used by OnnxImport.integer_input_use (skl2onnx's OneHotEncoder of int64 columns)."""
    if node.domain != ML or not node.input or node.input[0] != name or name in node.input[1:]:
        return False
    if node.op_type == "OneHotEncoder":
        keys = [a.ints for a in node.attribute if a.name == "cats_int64s"]
    elif node.op_type == "LabelEncoder":
        keys = [a.ints or a.floats for a in node.attribute if a.name in KEY_ATTRS]
    else:
        return False
    k = np.asarray(keys[0] if keys else [], np.float64)
    return k.size > 0 and bool(np.all((k == np.round(k)) & (np.abs(k) < 2**24)))


KEY_ATTRS = ("keys_int64s", "keys_floats")


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
    "ai.onnx.ml:TreeEnsemble": Rule(
        tree_ensemble,
        (
            "aggregate_function",
            "leaf_targetids",
            "leaf_weights",
            "membership_values",
            "n_targets",
            "nodes_falseleafs",
            "nodes_falsenodeids",
            "nodes_featureids",
            "nodes_hitrates",
            "nodes_missing_value_tracks_true",
            "nodes_modes",
            "nodes_splits",
            "nodes_trueleafs",
            "nodes_truenodeids",
            "post_transform",
            "tree_roots",
        ),
        domain=ML,
    ),
    "ai.onnx.ml:SVMClassifier": Rule(
        svm_classifier,
        (
            "classlabels_ints",
            "classlabels_strings",
            "coefficients",
            "kernel_params",
            "kernel_type",
            "post_transform",
            "prob_a",
            "prob_b",
            "rho",
            "support_vectors",
            "vectors_per_class",
        ),
        domain=ML,
    ),
    "ai.onnx.ml:SVMRegressor": Rule(
        svm_regressor,
        (
            "coefficients",
            "kernel_params",
            "kernel_type",
            "n_supports",
            "one_class",
            "post_transform",
            "rho",
            "support_vectors",
        ),
        domain=ML,
    ),
    "ai.onnx.ml:OneHotEncoder": Rule(
        one_hot_encoder, ("cats_int64s", "cats_strings", "zeros"), domain=ML
    ),
    "ai.onnx.ml:FeatureVectorizer": Rule(feature_vectorizer, ("inputdimensions",), domain=ML),
    "ai.onnx.ml:LabelEncoder": Rule(
        label_encoder,
        (
            "keys_floats",
            "keys_int64s",
            "keys_strings",
            "keys_tensor",
            "values_floats",
            "values_int64s",
            "values_strings",
            "values_tensor",
            "default_float",
            "default_int64",
            "default_string",
            "default_tensor",
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
