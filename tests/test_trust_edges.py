"""Silent wrong answers and crashes at the edges of valid programs, each from a public bug
report of a comparable system, checked against an independent reference (numpy float64 and
the documented formula) in-process (JIT), in the float64 reference interpreter and in an
exported library."""

from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.ir.interpret import interpret


def _masked_cce_model():
    """Logits x + w with the classes where x <= -100 masked out by -inf (top-k / vocabulary
    masking), trained with categorical_cross_entropy on one-hot targets."""
    x = gc.input("x", ("N", 4))
    w = gc.param("w", (4,))
    logits = gc.where(gc.greater(x, -100.0), x + w, -np.inf)
    t = gc.input("t", ("N", 4))
    loss = gc.categorical_cross_entropy(logits, t)
    return gc.compile(logits, loss, gc.SGD(learning_rate=1.0), name="masked")


def _masked_cce_reference(x, w, t):
    """xlogy's convention 0 log 0 = 0: the masked classes (target 0) add nothing. Returns the
    mean loss and its gradient with respect to w, (softmax - t) summed over rows / N."""
    z = np.where(x > -100, x + w, -np.inf)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    p = e / e.sum(axis=1, keepdims=True)
    logp = np.where(t > 0, z - m - np.log(e.sum(axis=1, keepdims=True)), 0.0)
    return -np.mean(np.sum(t * logp, axis=1)), (p - t).sum(axis=0) / len(x)


def test_categorical_cross_entropy_of_a_masked_class_is_finite(tmp_path) -> None:
    """optax #896 (softmax_cross_entropy handles -inf logits incorrectly): a class masked with
    a -inf logit whose target is 0 gave t * log p = 0 * -inf = NaN, so the loss was NaN (fit
    stopped with NumericsError) although the gradient was finite; it adds 0 (xlogy's
    0 log 0 = 0). A -inf logit where the target is above 0 (label smoothing spreads mass onto
    the masked class) stays an infinite loss, as the formula says."""
    x = np.array([[0, -999, 1, 2], [3, 1, -999, -999], [1000, 1001, -999, 999]], np.float32)
    t = np.eye(4, dtype=np.float32)[[0, 1, 1]]
    w = np.array([0.5, -0.25, 0.0, 0.125], np.float32)
    ref_loss, ref_grad = _masked_cce_reference(x.astype(np.float64), w.astype(np.float64), t)
    m = _masked_cce_model()
    m.set_weights({"w": w})
    assert np.isfinite(ref_loss)
    np.testing.assert_allclose(m.evaluate(x, t)["loss"], ref_loss, rtol=1e-5)
    np.testing.assert_allclose(m.gradients(x, t)["w"], ref_grad, rtol=1e-5, atol=1e-6)
    prog = m.program
    feeds = {"x": x, "t": t, "lr": np.float64(1.0), **m.params, **m.state}
    env = interpret(prog.training, feeds)
    np.testing.assert_allclose(env[prog.loss], ref_loss, rtol=1e-6)
    np.testing.assert_allclose(w - env["w'"], ref_grad, rtol=1e-5, atol=1e-6)
    m.export(tmp_path / "libmasked.so")
    lib = gc.load(str(tmp_path / "libmasked.so"))
    lib.set_weights({"w": w})
    np.testing.assert_allclose(lib.train_step({"x": x, "t": t}), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(w - lib.get_weights()["w"], ref_grad, rtol=1e-5, atol=1e-6)
    assert np.isfinite(m.train_step(x, t))  # and fit trains on (a NaN loss stopped it)
    assert np.all(np.isfinite(m.get_weights()["w"]))

    xs = gc.input("x", ("N", 4))
    ws = gc.param("w", (4,))
    logits = gc.where(gc.greater(xs, -100.0), xs + ws, -np.inf)
    ts = gc.input("t", ("N", 4))
    smoothed = gc.compile(logits, gc.categorical_cross_entropy(logits, ts, label_smoothing=0.1))
    smoothed.set_weights({"w": w})
    assert smoothed.evaluate(x, t)["loss"] == np.inf


def test_a_constant_output_compiles(tmp_path) -> None:
    """A model output (or one of several) that is a scalar constant, written or folded by
    simplify (exp(const)), raised CodegenError "kernel has no buffer" at compile: the output
    copy read a value that lives in registers only (the class of TVM's / Glow's constant
    graph outputs). It is stored into the output; -0.0 keeps its sign; the library agrees."""
    x = gc.input("x", ("N", 3))
    outs = [x * 2.0, gc.const(-np.inf), gc.exp(gc.const(1.0)), gc.const(-0.0)]
    m = gc.compile(outs, name="consts")
    xv = np.array([[1, -1, 0]], np.float32)
    got = list(m.predict(xv).values())
    np.testing.assert_array_equal(got[0], 2 * xv)
    assert got[1] == -np.inf
    np.testing.assert_allclose(got[2], np.e, rtol=1e-7)
    assert got[3] == 0 and np.signbit(got[3])
    m.export(tmp_path / "libconsts.so")
    lib = list(gc.load(str(tmp_path / "libconsts.so")).predict(xv).values())
    for a, b in zip(got, lib, strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.signbit(a).tolist() == np.signbit(b).tolist()
