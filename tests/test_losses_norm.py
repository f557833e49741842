"""Losses, normalization and weight penalties of issue #14 against numpy float64 transcriptions
of their documented formulas: values, gradients (central differences), batch_norm's running
statistics in training, eval, predict and an exported library. Few compiles: one float64 model
holds every loss, each with its own param."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad

import graphc as gc


def _log_softmax(z):
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def cce_ref(z, t, smoothing=0.0):
    t = t * (1 - smoothing) + smoothing / z.shape[1]
    return -np.mean(np.sum(t * _log_softmax(z), axis=1))


def bce_probs_ref(p, t, eps=1e-7, dtype=np.float64):
    """The clamp's bounds rounded to the model's dtype (float32: 1 - 1e-7 is 1 - 2^-23)."""
    p = np.clip(p, float(dtype(eps)), float(dtype(1 - eps)))
    return -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))


def huber_ref(p, t, delta):
    d = np.abs(p - t)
    return np.mean(np.where(d <= delta, 0.5 * d * d, delta * (d - 0.5 * delta)))


def mae_ref(p, t):
    return np.mean(np.abs(p - t))


def layer_norm_ref(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


N, C = 5, 4


def _cases(rng):
    """name -> (build(param, targets) -> loss tensor, numpy loss(param, targets), values)."""
    onehot = np.eye(C)[rng.integers(0, C, N)]
    soft = rng.random((N, C))
    soft /= soft.sum(axis=1, keepdims=True)
    z = rng.uniform(-3, 3, (N, C))
    p = rng.uniform(0.05, 0.95, (N, C))
    t01 = rng.random((N, C))
    pred = rng.standard_normal((N, C))
    tgt = pred + rng.choice([-1, 1], (N, C)) * rng.uniform(0.1, 1.5, (N, C))  # |d| > 0.1
    tgt_h = pred + rng.choice([-1, 1], (N, C)) * rng.choice([0.2, 0.3, 1.0, 1.4], (N, C))
    return {
        "cce_onehot": (lambda a, t: gc.categorical_cross_entropy(a, t), cce_ref, z, onehot),
        "cce_soft": (lambda a, t: gc.categorical_cross_entropy(a, t), cce_ref, z, soft),
        "cce_smooth": (
            lambda a, t: gc.categorical_cross_entropy(a, t, label_smoothing=0.1),
            lambda a, t: cce_ref(a, t, 0.1),
            z,
            onehot,
        ),
        "bce_probs": (
            lambda a, t: gc.binary_cross_entropy(a, t, from_logits=False),
            bce_probs_ref,
            p,
            t01,
        ),
        "huber": (
            lambda a, t: gc.huber(a, t, delta=0.5),
            lambda a, t: huber_ref(a, t, 0.5),
            pred,
            tgt_h,
        ),
        "mae": (gc.mean_absolute_error, mae_ref, pred, tgt),
    }


FUSION_PASSES = ("fuse_dense", "fuse_elementwise", "fuse_softmax_cross_entropy", "fuse_optimizer")


def _losses(disabled=()):
    """Every loss of _cases (each on its own param) and a layer_norm term in one float64 model,
    after one SGD step with lr=1: (cases, loss values, params before, model)."""
    rng = np.random.default_rng(0)
    cases = _cases(rng)
    outs, total = [], None
    for name, (build, _, a, t) in cases.items():
        w = gc.param(f"{name}.a", a.shape, init="zeros", dtype="f64")
        y = build(w, gc.input(f"{name}.t", t.shape, dtype="f64"))
        outs.append(y)
        total = y if total is None else total + y
    m = gc.compile(outs, total, gc.SGD(lr=1.0), name="losses", disabled_passes=disabled)
    before = {f"{k}.a": v[2] for k, v in cases.items()}
    m.set_weights(before)
    feeds = {f"{k}.t": v[3] for k, v in cases.items()}
    e = m.entries["infer"]
    values = e([np.ascontiguousarray(feeds[n]) for n in e.sched.input_slots], 1)
    values = [float(v) for v in values]
    ts = m.entries["train_step"]
    args = [np.array(float(m.lr)) if n == "lr" else feeds[n] for n in ts.sched.input_slots]
    ts([np.array(a, dtype=np.float64, order="C") for a in args], 1)
    return cases, values, before, m


@pytest.fixture(scope="module")
def losses_model():
    return _losses()


def test_losses_fused_and_unfused_agree(losses_model) -> None:
    _cases, values, _, m = losses_model
    _, values2, _, m2 = _losses(disabled=FUSION_PASSES)
    np.testing.assert_allclose(values, values2, rtol=1e-13)
    for k in m.params:
        np.testing.assert_allclose(m.params[k], m2.params[k], rtol=1e-12, atol=1e-15, err_msg=k)


@pytest.mark.parametrize(
    "name", ["cce_onehot", "cce_soft", "cce_smooth", "bce_probs", "huber", "mae"]
)
def test_loss_value_and_gradient_match_the_formula(losses_model, name: str) -> None:
    cases, values, before, m = losses_model
    k = list(cases).index(name)
    _, ref, a, t = cases[name]
    np.testing.assert_allclose(values[k], ref(a, t), rtol=1e-12, err_msg=f"{name}: value")
    got = before[f"{name}.a"] - m.params[f"{name}.a"]
    want = numeric_grad(lambda x: ref(x, t), [a], 0)
    print(f"\n{name}: value err {abs(values[k] - ref(a, t)):.1e}, grad err "
          f"{np.max(np.abs(got - want)):.1e}")  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, err_msg=f"{name}: gradient")


def test_bce_on_probabilities_is_finite_at_0_and_1_with_the_keras_clamp() -> None:
    p = gc.input("p", ("N", 3))
    t = gc.input("t", ("N", 3))
    loss = gc.binary_cross_entropy(p, t, from_logits=False)
    w = gc.param("w", (3,), init="zeros")
    m = gc.compile(p + w, loss + gc.sum(w * w), gc.SGD(lr=0.1), name="bceclamp")
    pv = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.25]], np.float32)
    tv = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32)
    got = m.evaluate(pv, tv)["loss"]
    want = bce_probs_ref(pv.astype(np.float64), tv, dtype=np.float32)  # ~16 at a wrong extreme
    assert np.isfinite(got)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_compile_sequential_accepts_the_new_losses_by_name() -> None:
    net = gc.Sequential([gc.Dense(8, "gelu"), gc.LayerNorm(), gc.Dense(3)], name="seqloss")
    m = gc.compile_sequential(net, (4,), "categorical_cross_entropy", gc.Adam(0.05))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.argmax(x[:, :3], axis=1)]
    h = m.fit(x, y, epochs=40, batch_size=16, verbose=0)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert m.evaluate(x, y)["accuracy"] > 0.8


def test_layer_norm_forward_and_gradients() -> None:
    rng = np.random.default_rng(2)
    xv = rng.standard_normal((3, 6))
    uv = rng.standard_normal((3, 6))
    x = gc.param("x", (3, 6), init="zeros", dtype="f64")
    y = gc.layer_norm(x, name="ln")
    u = gc.input("u", (3, 6), dtype="f64")
    m = gc.compile(y, gc.sum(u * y), gc.SGD(lr=1.0), name="ln")
    g, bt = rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)
    w0 = {"x": xv, "ln.gamma": g, "ln.beta": bt}
    m.set_weights(w0)
    e = m.entries["infer"]
    got = e([], 1)[0].copy()
    np.testing.assert_allclose(got, layer_norm_ref(xv, g, bt), rtol=1e-12, atol=1e-12)
    ts = m.entries["train_step"]
    ts(
        [
            np.array(float(m.lr)) if n == "lr" else np.array(uv, order="C")
            for n in ts.sched.input_slots
        ],
        1,
    )

    def f(x, gg, bb):
        return float(np.sum(uv * layer_norm_ref(x, gg, bb)))

    for k, name in enumerate(("x", "ln.gamma", "ln.beta")):
        want = numeric_grad(f, [xv, g, bt], k)
        np.testing.assert_allclose(w0[name] - m.params[name], want, rtol=1e-6, atol=1e-9)


def _bn_model(momentum=None):
    x = gc.input("x", ("N", 3))
    y = gc.batch_norm(x, momentum=momentum, name="bn")
    t = gc.input("t", ("N", 3))
    return gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(lr=0.1), name="bn")


def test_batch_norm_training_updates_running_statistics_and_inference_uses_them(tmp_path):
    rng = np.random.default_rng(3)
    m = _bn_model(momentum=0.3)
    g0, b0 = np.array([1.5, 0.5, 2.0]), np.array([0.1, -0.2, 0.3])
    m.set_weights({"bn.gamma": g0, "bn.beta": b0})
    rm, rv = np.zeros(3), np.ones(3)
    for _step in range(3):
        xv = (rng.standard_normal((8, 3)) * [1, 2, 3] + [0, 1, -1]).astype(np.float32)
        tv = rng.standard_normal((8, 3)).astype(np.float32)
        gamma, beta = (
            m.params["bn.gamma"].astype(np.float64),
            m.params["bn.beta"].astype(np.float64),
        )
        x64 = xv.astype(np.float64)
        mu, var = x64.mean(axis=0), x64.var(axis=0)

        def loss(gg, bb, x64=x64, mu=mu, var=var, tv=tv):
            return np.mean(((x64 - mu) / np.sqrt(var + 1e-5) * gg + bb - tv) ** 2)

        got = m.train_step(xv, tv)
        np.testing.assert_allclose(got, loss(gamma, beta), rtol=1e-5)
        gg = numeric_grad(loss, [gamma, beta], 0)
        np.testing.assert_allclose(m.params["bn.gamma"], gamma - 0.1 * gg, rtol=1e-5, atol=1e-6)
        rm = 0.7 * rm + 0.3 * mu
        rv = 0.7 * rv + 0.3 * x64.var(axis=0, ddof=1)  # the unbiased variance, as torch
        np.testing.assert_allclose(m.state["bn.running_mean"], rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.state["bn.running_var"], rv, rtol=1e-5, atol=1e-6)
    xv = rng.standard_normal((4, 3)).astype(np.float32)
    gamma, beta = m.params["bn.gamma"].astype(np.float64), m.params["bn.beta"].astype(np.float64)
    want = (xv - rm) / np.sqrt(rv + 1e-5) * gamma + beta
    np.testing.assert_allclose(m.predict(xv), want, rtol=1e-5, atol=1e-5)
    before = (m.state["bn.running_mean"].copy(), m.state["bn.running_var"].copy())
    ev = m.evaluate(xv, np.zeros_like(xv))
    np.testing.assert_allclose(ev["loss"], np.mean(want**2), rtol=1e-5)
    assert np.array_equal(m.state["bn.running_mean"], before[0])  # eval does not update them
    lib = gc.load(m.export(str(tmp_path / "libbn.so")).library)
    np.testing.assert_allclose(lib.predict(xv), want, rtol=1e-5, atol=1e-5)


def test_weight_penalties_join_the_loss_and_its_gradient() -> None:
    rng = np.random.default_rng(4)
    x = gc.input("x", ("N", 3), dtype="f64")
    h = gc.dense(x, 4, "tanh", name="d1", kernel_l2=0.01, kernel_l1=0.002)
    y = gc.dense(h, 2, name="d2", kernel_l2=0.03)
    t = gc.input("t", ("N", 2), dtype="f64")
    m = gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(lr=1.0), name="pen")
    w = {k: rng.standard_normal(v.shape) * 0.5 for k, v in m.params.items()}
    m.set_weights(w)
    xv, tv = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))

    def loss(w1, b1, w2, b2):
        out = np.tanh(xv @ w1 + b1) @ w2 + b2
        pen = 0.01 * np.sum(w1**2) + 0.002 * np.sum(np.abs(w1)) + 0.03 * np.sum(w2**2)
        return np.mean((out - tv) ** 2) + pen

    names = ["d1.w", "d1.b", "d2.w", "d2.b"]
    got = m.train_step(xv, tv)
    np.testing.assert_allclose(got, loss(*[w[k] for k in names]), rtol=1e-12)
    for k, name in enumerate(names):
        want = numeric_grad(loss, [w[n] for n in names], k)
        np.testing.assert_allclose(w[name] - m.params[name], want, rtol=1e-6, atol=1e-9)


def test_squeeze_expand_dims_and_dsl_errors() -> None:
    x = gc.input("x", ("N", 1, 3))
    assert gc.squeeze(x).shape == ("N", 3)
    assert gc.expand_dims(gc.squeeze(x, 1), -1).shape == ("N", 3, 1)
    with pytest.raises(gc.ShapeError, match="not of length 1"):
        gc.squeeze(x, 2)
    with pytest.raises(gc.ShapeError, match="batch axis"):
        gc.slice(x, (0,), (2,))
    with pytest.raises(gc.ShapeError, match="empty"):
        gc.slice(x, (2,), (1,), axes=(2,))
    assert dict(gc.clip(x, max=1.0).node.attrs)["max"] == 1.0  # one bound: valid since 6268723
    with pytest.raises(gc.ShapeError, match="approximate"):
        gc.gelu(x, approximate="fast")
    with pytest.raises(gc.GraphcError, match="l2"):
        gc.dense(gc.input("z", ("N", 2)), 3, kernel_l2=-1.0)


def test_row_wise_ops_of_issue_14_keep_predict_splitting_rows() -> None:
    """slice/pad/concat (never along N), log_softmax, argmax and max over features keep row i
    of the outputs a function of row i of the inputs (ir.batch: predict may split rows)."""
    from graphc.dsl import apply, collect_graph
    from graphc.ir.batch import rows_independent

    x = gc.input("x", ("N", 6))
    h = gc.concat([gc.slice(x, (1,), (4,), axes=(1,)), apply("pad", x, axes=(1,), before=(1,),
                  after=(0,))], axis=1)  # fmt: skip
    outs = [gc.log_softmax(h), gc.argmax(h, axis=1), gc.max(h, axes=1, keepdims=True)]
    assert rows_independent(collect_graph("rows", outs))
    assert not rows_independent(collect_graph("cols", [gc.argmax(x, axis=0)]))


def test_accuracy_in_the_graph_from_argmax_and_integer_labels() -> None:
    """equal/less on i32 operands give f32 masks: mean(equal(argmax(z), labels)) is accuracy."""
    x = gc.input("x", ("N", 4))
    lab = gc.input("labels", ("N",), dtype="i32")
    am = gc.argmax(x, axis=1)
    m = gc.compile([gc.mean(gc.equal(am, lab)), gc.less(am, lab), am], name="acc")
    rng = np.random.default_rng(5)
    xv = rng.standard_normal((9, 4)).astype(np.float32)
    lv = rng.integers(0, 4, 9).astype(np.int32)
    acc, lt, got_am = m.entries["infer"]([xv, lv], 9)
    want = np.argmax(xv, axis=1)
    np.testing.assert_array_equal(got_am, want)
    assert float(acc) == pytest.approx(np.mean(want == lv), abs=1e-7)
    np.testing.assert_array_equal(lt, (want < lv).astype(np.float32))
