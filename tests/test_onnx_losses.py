"""ONNX SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss (torch's F.cross_entropy and
F.nll_loss exports; ORT's training graphs), against ONNX Runtime: integer targets read from
an input with the batch dimension N, reductions none / sum / mean, class weights,
ignore_index inside and outside the classes (torch's -100), negative targets (counted from the
end, as ONNX Runtime), N-d inputs [N, C, d1, d2], SoftmaxCrossEntropyLoss's log_prob output;
bad targets (an entry error, or NaN between -C and a far ignore_index); the gradient against
central differences of a float64 numpy forward (ONNX's node tests of both run in
tests/test_onnx.py). Before, both went through their function bodies and failed at run time
on every target >= 2 (a GatherElements checked against the wrong axis)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad
from onnx_models import make_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

N = helper.make_node
F, I64 = TensorProto.FLOAT, TensorProto.INT64
C = 5


def _model(nodes, inputs, outs, inits=(), opset: int = 17):
    return make_model(nodes, inputs, outs, inits, opset)


def _cases():
    nodes, outs = [], []
    for op in ("SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"):
        for red in ("none", "sum", "mean"):
            for ii in (None, 2, -100):
                for weighted in (False, True):
                    name = f"{op[:3]}_{red}_{ii}_{int(weighted)}".replace("-", "m")
                    kw = {"reduction": red} | ({} if ii is None else {"ignore_index": ii})
                    ins = ["x", "t"] + (["w"] if weighted else [])
                    nodes.append(N(op, ins, [name], **kw))
                    outs.append(name)
    return nodes, outs


def _run(m, feeds):
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    got = gc.from_onnx(m).compile().predict(feeds)
    return got, dict(zip([o.name for o in m.graph.output], want))


@pytest.mark.parametrize("shape", [(6, C), (3, C, 2, 3)], ids=["NC", "NCd1d2"])
def test_both_losses_match_onnxruntime(shape) -> None:
    """Each reduction x ignore_index (none, 2, -100) x weights, both operators; targets with
    a negative one, ignored ones and both kinds of ignore_index among them."""
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(-1, C, (shape[0], *shape[2:])).astype(np.int64)
    t.flat[1], t.flat[3], t.flat[-1] = 2, -100, 2  # ignored by one ignore_index or the other
    t.flat[0] = -1
    w = rng.uniform(0.2, 2.0, C).astype(np.float32)
    nodes, outs = _cases()
    # log probabilities for NegativeLogLikelihoodLoss (any float works; these are realistic)
    m = _model(
        [N("LogSoftmax", ["s"], ["x"], axis=1)] + nodes,
        [("s", F, ["N", *shape[1:]]), ("t", I64, ["N", *shape[2:]])],
        outs,
        [numpy_helper.from_array(w, "w")],
    )
    # a -100 target is only valid where ignore_index is -100 (ONNX Runtime raises elsewhere,
    # and with weights too: its function body gathers w[-100] before masking): those against
    # the formula in float64
    t_ok = np.where(t == -100, 2, t)
    got, want = _run(m, {"s": x, "t": t_ok})
    for name in outs:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-6, atol=2e-6, err_msg=name)
    far = [o for o in outs if "_m100_" in o]  # a model of these only (the others' targets
    # are checked against -C .. C-1 at every entry)
    m = _model(
        [N("LogSoftmax", ["s"], ["x"], axis=1)] + [n for n in nodes if n.output[0] in far],
        [("s", F, ["N", *shape[1:]]), ("t", I64, ["N", *shape[2:]])],
        far,
        [numpy_helper.from_array(w, "w")],
    )
    got = gc.from_onnx(m).compile().predict({"s": x, "t": t})
    lp = x - x.max(1, keepdims=True)
    lp = lp - np.log(np.exp(lp.astype(np.float64)).sum(1, keepdims=True))
    for name in far:
        red, weighted = name.split("_")[1], name.endswith("1")
        want = _nll64(lp, t, w if weighted else np.ones(C), -100, red)
        np.testing.assert_allclose(got[name], want, rtol=2e-6, atol=2e-6, err_msg=name)


def _nll64(lp, t, w, ii, red):
    keep = t != ii
    tt = np.where(keep, np.where(t < 0, t + C, t), 0)
    picked = np.take_along_axis(lp, tt[:, None], 1)[:, 0]
    wt = w[tt] * keep
    loss = -picked * wt
    return loss if red == "none" else loss.sum() if red == "sum" else loss.sum() / wt.sum()


def test_log_prob_output_and_bad_targets() -> None:
    """SoftmaxCrossEntropyLoss's second output; a target outside -C .. C-1 is an entry error
    naming the input (ONNX Runtime raises); with ignore_index -100 a target between -100 and
    -C, which ONNX Runtime refuses too, gives NaN."""
    x = np.random.default_rng(3).standard_normal((4, C)).astype(np.float32)
    t = np.array([0, 4, -5, 1], np.int64)
    inputs = [("x", F, ["N", C]), ("t", I64, ["N"])]
    m = _model([N("SoftmaxCrossEntropyLoss", ["x", "t"], ["loss", "lp"])], inputs, ["loss", "lp"])
    got, want = _run(m, {"x": x, "t": t})
    for name in ("loss", "lp"):
        np.testing.assert_allclose(got[name], want[name], rtol=2e-6, atol=2e-6)
    model = gc.from_onnx(m).compile()
    with pytest.raises(gc.GraphcError, match="'t'"):
        model.predict({"x": x, "t": np.array([0, 5, 1, 1], np.int64)})
    m = _model(
        [N("NegativeLogLikelihoodLoss", ["x", "t"], ["y"], reduction="none", ignore_index=-100)],
        inputs,
        ["y"],
    )
    y = gc.from_onnx(m).compile().predict({"x": x, "t": np.array([0, -7, -100, 1], np.int64)})
    assert np.isnan(y[1]) and y[2] == 0 and np.isfinite(y[[0, 3]]).all(), y


def test_gradient_of_weighted_cross_entropy_with_ignored_targets() -> None:
    """d/dW of SoftmaxCrossEntropyLoss(x @ W, t, w, ignore_index=1, mean) against central
    differences of the formula in float64."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 4, 3)).astype(np.float32)
    w0 = rng.standard_normal((3, C)).astype(np.float32)
    cw = rng.uniform(0.5, 1.5, C).astype(np.float32)
    t = np.array([[0, 1, 4, 2]], np.int64)
    nodes = [
        N("MatMul", ["x", "W"], ["s"]),
        N("Transpose", ["s"], ["st"], perm=[0, 2, 1]),
        N("SoftmaxCrossEntropyLoss", ["st", "t", "cw"], ["y"], ignore_index=1),
    ]
    inits = [numpy_helper.from_array(w0, "W"), numpy_helper.from_array(cw, "cw")]
    m = _model(nodes, [("x", F, ["N", 4, 3]), ("t", I64, ["N", 4])], ["y"], inits)
    imp = gc.from_onnx(m, trainable={"W"})
    grads = imp.compile(imp.outputs[0], gc.SGD(0.1)).gradients({"x": x, "t": t})

    def f(w) -> float:
        s = x[0] @ w
        lp = (
            s
            - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
            - s.max(1, keepdims=True)
        )
        keep = t[0] != 1
        wt = cw[t[0]] * keep
        return float(-(lp[np.arange(4), t[0]] * wt).sum() / wt.sum())

    got = next(v for n, v in grads.items() if n.endswith("W"))
    np.testing.assert_allclose(got, numeric_grad(f, [w0], 0), rtol=1e-4, atol=1e-6)
