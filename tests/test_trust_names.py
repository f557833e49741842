"""User tensors named like the values the compiler adds to a training graph (helper trust3,
stop 14): the learning rate ``lr``, the step counter ``step`` and an optimizer's slots
``PARAM.KIND`` (torch's state keys).

Before the fix, a float tensor named "step" (an input, a parameter, a layer) failed at compile
in ``increment`` with a ShapeError about the counter's type; an i64 parameter named "step" was
silently taken as the step counter, so every train_step counted the user's parameter up (3
after 3 steps) and a ``set_weights`` of it changed Adam's bias correction; a parameter named
"lr" or "fc.w.exp_avg" gave "a value named ... already exists in this graph", which names no
line. Each is now a GraphcError naming the tensor, its op, type and line, and what graphc uses
the name for. A tensor named like a gradient slot of the split step (``fc.w.grad``) leaves
train_step as it is (checked against SGD's update in numpy float64) and gradients() says why
it is not there. The same class: the copy that ``compile([x, x])`` makes of a repeated output
is named x_1, and an input or layer of that name made compile fail; and an automatic layer
name (dense7) that the user had given to another layer.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import GraphcError


def _mse(out):
    return gc.mean_squared_error(out, gc.input("y", ("N", 2)))


def _input_step():
    return gc.dense(gc.input("step", ("N", 4)), 2)


def _param_step():
    x = gc.input("x", ("N", 4))
    return gc.dense(gc.mul(x, gc.param("step", (4,))), 2)


def _i64_param_step():
    return gc.dense(gc.input("x", ("N", 4)), 2)


def _param_lr():
    x = gc.input("x", ("N", 4))
    return gc.dense(gc.mul(x, gc.param("lr", (4,))), 2)


def _batch_norm_step():
    return gc.dense(gc.batch_norm(gc.input("x", ("N", 4)), name="step"), 2)


def _batch_norm_lr():
    return gc.dense(gc.batch_norm(gc.input("x", ("N", 4)), name="lr"), 2)


def _adam_slot():
    x = gc.input("x", ("N", 4))
    return gc.add(gc.dense(x, 2, name="fc"), gc.matmul(x, gc.param("fc.w.exp_avg", (4, 2))))


def _momentum_slot():
    x = gc.input("x", ("N", 4))
    return gc.add(gc.dense(x, 2, name="fc"), gc.matmul(x, gc.param("fc.b.momentum_buffer", (4, 2))))


CASES = {
    "input step": (_input_step, "step", "step counter", gc.Adam),
    "param step": (_param_step, "step", "step counter", gc.Adam),
    "i64 param step": (_i64_param_step, "step", "step counter", gc.Adam),
    "param lr": (_param_lr, "lr", "learning rate", gc.SGD),
    "batch_norm step": (_batch_norm_step, "step", "step counter", gc.SGD),
    "batch_norm lr": (_batch_norm_lr, "lr", "learning rate", gc.Adam),
    "adam slot": (_adam_slot, "fc.w.exp_avg", "exp_avg slot", gc.Adam),
    "momentum slot": (_momentum_slot, "fc.b.momentum_buffer", "momentum_buffer slot", None),
}


@pytest.mark.parametrize("case", CASES)
def test_a_tensor_named_like_a_compiler_value_is_refused_naming_it(case):
    build, name, role, opt = CASES[case]
    out = build()
    outputs = [out]
    if case == "i64 param step":
        outputs.append(gc.param("step", (), init="zeros", dtype="i64"))  # an i64 counter
    optimizer = opt(lr=0.1) if opt is not None else gc.SGD(lr=0.1, momentum=0.9)
    with pytest.raises(GraphcError) as e:
        gc.compile(outputs, _mse(out), optimizer, name="names")
    msg = str(e.value)
    assert f"'{name}' is graphc's own" in msg and role in msg, msg
    assert "test_trust_names.py:" in msg, msg  # the user's line of the tensor


def test_dropout_still_shares_the_step_counter():
    """dropout's own "step" source is the optimizer's counter, not a collision: the masks of
    two steps differ (the counter advances) and 'step' counts the steps."""
    x = gc.input("x", ("N", 64))
    w = gc.param("w", (64,), init="ones")
    out = gc.dropout(gc.mul(x, w), 0.5)
    m = gc.compile(out, gc.mean(out), gc.SGD(lr=0.0), name="names_drop", threads=1)
    ones = np.ones((2, 64), np.float32)
    g1 = m.gradients(ones)["w"]
    m.train_step(ones)
    g2 = m.gradients(ones)["w"]
    assert int(m.state["step"]) == 1
    assert not np.array_equal(g1, g2)


def test_a_tensor_named_like_a_gradient_slot_trains_and_gradients_says_why_not():
    x = gc.input("x", ("N", 4))
    fc = gc.dense(x, 2, name="fc")
    out = gc.add(fc, gc.matmul(x, gc.param("fc.w.grad", (4, 2), init="normal")))
    m = gc.compile(out, _mse(out), gc.SGD(lr=0.5), name="names_grad", threads=1)
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((8, 4)), rng.standard_normal((8, 2))
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    pred = xs @ p["fc.w"] + p["fc.b"] + xs @ p["fc.w.grad"]
    d = 2 * (pred - ys) / pred.size  # d mean((pred - y)^2) / d pred
    want = {
        "fc.w": p["fc.w"] - 0.5 * xs.T @ d,
        "fc.b": p["fc.b"] - 0.5 * d.sum(0),
        "fc.w.grad": p["fc.w.grad"] - 0.5 * xs.T @ d,
    }
    loss = m.train_step(xs.astype(np.float32), ys.astype(np.float32))
    assert loss == pytest.approx(np.mean((pred - ys) ** 2), rel=1e-5)
    for k, v in want.items():
        np.testing.assert_allclose(m.params[k], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(GraphcError, match=r"'fc\.w\.grad', the name of the gradient of 'fc\.w'"):
        m.gradients(xs.astype(np.float32), ys.astype(np.float32))


def test_a_repeated_output_copy_skips_names_the_graph_has(tmp_path):
    """compile([x, x, ...]) names the repeat's copy x_1 (then x_2, ...); an input or layer
    already named x_1 made compile fail ("two different tensors are named 'x_1': reshape ...
    and input ...", a reshape the user never wrote). The copy now takes the next free suffix;
    the values: numpy float64 (batch_norm at its initial running statistics: x / sqrt(1 +
    eps))."""
    x = gc.input("x", ("N", 3))
    x1 = gc.input("x_1", ("N", 3))
    h = gc.batch_norm(gc.mul(x, 2.0), name="h")
    h1 = gc.batch_norm(gc.add(x, x1), name="h_1")
    outputs = [x, x, h, h, h1, gc.add(x, x1)]
    m = gc.compile(outputs, None, name="names_repeat", threads=1)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((4, 3)), "x_1": rng.standard_normal((4, 3))}
    xs, x1s = (feeds[k].astype(np.float32).astype(np.float64) for k in ("x", "x_1"))
    bn = 1 / np.sqrt(1 + 1e-5)
    want = {"x": xs, "x_2": xs, "h": 2 * xs * bn, "h_2": 2 * xs * bn, "h_1": (xs + x1s) * bn}
    path = str(tmp_path / "libnames_repeat.so")
    m.export(path)
    for got in (m.predict(feeds), gc.load(path).predict(feeds)):
        assert list(got)[:5] == list(want)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(list(got.values())[5], xs + x1s, rtol=1e-6, atol=1e-6)


def _two_dense(first: str):
    x = gc.input("x", ("N", 3))
    h = gc.dense(x, 4, "tanh", name=first)
    return gc.dense(h, 2)  # an automatic name: "dense" and the process's counter


def test_an_automatic_layer_name_skips_a_name_the_user_gave(monkeypatch):
    """dense(x, 4, name="dense7") and then an unnamed dense that the counter numbers 7 made two
    different 'dense7.w' ("names must be unique" at compile, about names the user had chosen
    once). The automatic name now skips names given before it; the values: numpy float64."""
    from graphc import dsl

    start = 10**9 + 7
    monkeypatch.setattr(dsl, "_counter", itertools.count(start))
    probe = dsl.collect_graph("probe", [_two_dense("probe")])
    auto = next(p.name for p in probe.params if not p.name.startswith("probe.")).split(".")[0]
    monkeypatch.setattr(dsl, "_counter", itertools.count(start))  # the same numbers again
    out = _two_dense(auto)  # the user's layer takes the name the unnamed one would get
    m = gc.compile(out, None, name="names_auto", threads=1)
    names = list(m.params)
    assert names[:2] == [f"{auto}.w", f"{auto}.b"] and len(set(names)) == 4, names
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    w2, b2 = (p[k] for k in names[2:])
    xs = np.random.default_rng(0).standard_normal((5, 3))
    want = np.tanh(xs @ p[f"{auto}.w"] + p[f"{auto}.b"]) @ w2 + b2
    np.testing.assert_allclose(m.predict(xs.astype(np.float32)), want, rtol=1e-5, atol=1e-6)


def _central_diff(f, p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        hi, lo = p.copy(), p.copy()
        hi[i] += eps
        lo[i] -= eps
        g[i] = (f(hi) - f(lo)) / (2 * eps)
    return g


@pytest.mark.parametrize("named", [False, True])
def test_a_layer_object_called_twice_shares_its_weights(named):
    """Calling a layer object twice shares its weights, as a Keras layer or a torch module does
    (tied weights; the gradient is the sum over both uses). Before: an unnamed Dense drew a
    second, independent set of weights silently (4 params instead of 2), a named one (or one
    in a Sequential, which names it) failed with "two different tensors are named 'd.w'".
    Reference: numpy float64 forward and central differences of the loss."""
    x = gc.input("x", ("N", 4), dtype="f64")
    y = gc.input("y", ("N", 4), dtype="f64")
    d = gc.Dense(4, "tanh", name="d" if named else None)
    out = gc.Sequential([d, d])(x) if named else d(d(x))
    m = gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(lr=0.1), name="names_tied")
    assert len(m.params) == 2, list(m.params)
    kw, kb = m.params
    w, b = m.params[kw].copy(), m.params[kb].copy()
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))

    def forward(w, b):
        return np.tanh(np.tanh(xs @ w + b) @ w + b)

    np.testing.assert_allclose(m.predict(xs), forward(w, b), rtol=1e-12, atol=1e-14)
    g = m.gradients(xs, ys)
    loss_w = lambda w_: np.mean((forward(w_, b) - ys) ** 2)  # noqa: E731
    loss_b = lambda b_: np.mean((forward(w, b_) - ys) ** 2)  # noqa: E731
    np.testing.assert_allclose(g[kw], _central_diff(loss_w, w), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g[kb], _central_diff(loss_b, b), rtol=1e-6, atol=1e-9)


def test_a_layer_object_called_on_another_width_is_refused():
    x = gc.input("x", ("N", 4))
    d = gc.Dense(3)
    d(x)
    with pytest.raises(gc.ShapeError, match=r"called again.*as f32\[3,3\].*f32\[4,3\]"):
        d(d(x))
    bn = gc.BatchNorm()  # a BatchNorm object too (its calls share it: tests/test_trust_dsl4.py)
    bn(x)
    with pytest.raises(gc.ShapeError, match=r"called again.*as f32\[3\].*f32\[4\]"):
        bn(d(x))


def test_conv_and_recurrent_layer_objects_share_their_weights_too():
    x = gc.input("x", ("N", 2, 6))
    c = gc.Conv(2, 3, padding="same", activation="relu")
    r = gc.LSTM(3, return_sequences=True)
    seq = gc.input("s", ("N", 5, 3))
    m = gc.compile([c(c(x)), r(r(seq))], None, name="names_shared")
    assert len(m.params) == 5, list(m.params)  # conv w, b; lstm w, r, b


def test_two_unnamed_sequentials_in_one_graph_are_told_to_take_names():
    """Two Sequential([...]) without name= both name their layers model.l0, model.l1 (the
    default name "model"): the collision said only "names must be unique" about names the user
    never wrote (graphc@dd5076e); the error now says where they come from and what to do. A
    Sequential given its own name compiles and predicts numpy float64's answer."""
    x = gc.input("x", ("N", 4))
    s1, s2 = gc.Sequential([gc.Dense(3)]), gc.Sequential([gc.Dense(3)])
    # on one input they are "model" and "model_1" (tests/test_trust_dsl4.py); on disjoint
    # inputs joined later both are "model"
    with pytest.raises(GraphcError, match=r"'model\.l0' here: give each Sequential.*name="):
        gc.compile([s1(x), s2(gc.input("x2", ("N", 4)))], None, name="names_two_seq")
    s3 = gc.Sequential([gc.Dense(3)], name="other")
    m = gc.compile([s1(x), s3(x)], None, name="names_two_seq_ok")
    xs = np.random.default_rng(2).standard_normal((3, 4))
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    got = m.predict(xs.astype(np.float32))
    want = [xs @ p[f"{n}.l0.w"] + p[f"{n}.l0.b"] for n in ("model", "other")]
    for g, w in zip(got.values() if isinstance(got, dict) else got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
