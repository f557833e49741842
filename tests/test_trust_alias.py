"""Arrays of a call that share memory with the model's own weights (helper trust2, stop 13).

A ``predict(out=...)`` given a view of a parameter or of batch_norm's running statistics, or a
training call whose ``x``/``y`` is such a view, made the compiled code write values it still
reads: a silent wrong result and a changed model (Model.predict out=fc2.w: 0.85 off; a
train_step on x=fc2.w: weights 0.022 off; the exported library's predict out=running_mean:
0.77 off, the running mean overwritten). Each is now refused before anything is written, by
the JIT model (naming the argument and the parameter) and by the library (ERR_OVERLAP), on
the checked path and on the cached-layout path alike. Reference: the same call on a copy of
the view (float64 numpy forward for predict), and the model's bytes before the call.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import ArgumentError


@pytest.fixture(scope="module")
def model() -> gc.Model:
    x = gc.input("x", ("N", 4))
    h = gc.batch_norm(gc.dense(x, 4, "tanh", name="fc1"), name="bn")
    out = gc.dense(h, 4, name="fc2")
    loss = gc.mean_squared_error(out, gc.input("y", ("N", 4)))
    m = gc.compile(out, loss, gc.SGD(lr=0.5), name="trust_alias", threads=1)
    rng = np.random.default_rng(0)
    for _ in range(3):  # running statistics away from 0 and 1
        m.train_step(rng.standard_normal((8, 4)).astype("f4") + 2, rng.random((8, 4), "f4"))
    return m


@pytest.fixture(scope="module")
def library(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("alias") / "libtrust_alias.so")
    model.export(path)
    lib = gc.load(path)
    for k, v in model.params.items():
        lib.params[k][...] = v
    for k, v in model.state.items():
        lib.state[k][...] = v
    return lib


def _bytes(obj) -> list[bytes]:
    return [v.tobytes() for v in obj.params.values()] + [v.tobytes() for v in obj.state.values()]


def _reference(obj, x: np.ndarray) -> np.ndarray:
    p = {k: v.astype(np.float64) for k, v in obj.params.items()}
    s = {k: v.astype(np.float64) for k, v in obj.state.items()}
    h = np.tanh(x.astype(np.float64) @ p["fc1.w"] + p["fc1.b"])
    h = (h - s["bn.running_mean"]) / np.sqrt(s["bn.running_var"] + 1e-5) * p["bn.gamma"]
    h = h + p["bn.beta"]
    return h @ p["fc2.w"] + p["fc2.b"]


@pytest.mark.parametrize("which", ["model", "library"])
@pytest.mark.parametrize("target", ["fc1.w", "fc2.w", "bn.running_mean", "bn.running_var"])
def test_predict_out_over_a_weight_is_refused(which, target, request):
    obj = request.getfixturevalue(which)
    rows = 4 if target.endswith(".w") else 1
    x = np.random.default_rng(1).standard_normal((rows, 4)).astype("f4")
    want = _reference(obj, x)
    own = np.empty((rows, 4), "f4")
    for _ in range(2):  # the second call takes the cached-layout path
        np.testing.assert_allclose(obj.predict(x, out=own), want, rtol=1e-4, atol=1e-5)
    view = {**obj.params, **obj.state}[target].reshape(rows, 4)  # the same layout as own
    before = _bytes(obj)
    with pytest.raises(ArgumentError, match=r"overlaps|shares memory") as e:
        obj.predict(x, out=view)
    assert f"'{target}'" in str(e.value) and "out" in str(e.value)  # named (library too)
    assert _bytes(obj) == before
    np.testing.assert_allclose(obj.predict(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["model", "library"])
@pytest.mark.parametrize("arg", ["x", "y"])
def test_training_on_a_view_of_a_weight_is_refused(which, arg, request):
    obj = request.getfixturevalue(which)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((4, 4)).astype("f4"), rng.random((4, 4), "f4")
    shadow = copy.copy(obj) if which == "model" else None
    before = _bytes(obj)
    obj.train_step(x.copy(), y.copy())  # caches the layout of 4x4 float32 arrays
    for v, b in zip([*obj.params.values(), *obj.state.values()], before):  # as it was
        v[...] = np.frombuffer(b, v.dtype).reshape(v.shape)
    view = obj.params["fc2.w"]
    args = (view, y) if arg == "x" else (x, view)
    with pytest.raises(ArgumentError, match=r"overlaps|shares memory") as e:
        obj.train_step(*args)
    assert f"input '{arg}'" in str(e.value) and "'fc2.w'" in str(e.value)
    assert _bytes(obj) == before
    if shadow is not None:  # a copy of the view trains as the reference does
        copied = tuple(np.array(a) for a in args)
        np.testing.assert_array_equal(obj.train_step(*copied), shadow.train_step(*copied))
        for k in obj.params:
            np.testing.assert_array_equal(obj.params[k], shadow.params[k])


def test_fit_on_a_view_of_a_weight_is_refused(model):
    m = copy.copy(model)
    before = _bytes(m)
    y = np.random.default_rng(3).random((4, 4), "f4")
    with pytest.raises(ArgumentError, match="shares memory") as e:
        m.fit(m.params["fc2.w"], y, epochs=1, batch_size=2, verbose=0)
    assert "'fc2.w'" in str(e.value)
    assert _bytes(m) == before


@pytest.mark.parametrize("which", ["model", "library"])
@pytest.mark.parametrize("shift", [0, 8])  # the same array for both, and a partial overlap
def test_two_outputs_in_one_memory_are_refused(which, shift, tmp_path):
    """predict(out={a: buf, b: buf}): the model wrote one output over the other (output a was
    2.37 off the float64 reference); now refused naming both outputs, as the library's
    wrapper did (ERR_OVERLAP), and outputs of their own still give the reference."""
    x = gc.input("x", ("N", 4))
    a, b = gc.dense(x, 4, name="fa"), gc.tanh(gc.dense(x, 4, name="fb"))
    obj = gc.compile([a, b], name="trust_alias_two", threads=1)
    if which == "library":
        obj.export(str(tmp_path / "libtrust_alias_two.so"))
        obj = gc.load(str(tmp_path / "libtrust_alias_two.so"))
    xv = np.random.default_rng(4).standard_normal((3, 4)).astype("f4")
    p = {k: v.astype(np.float64) for k, v in obj.params.items()}
    want = [xv @ p["fa.w"] + p["fa.b"], np.tanh(xv @ p["fb.w"] + p["fb.b"])]
    names = list(obj.predict(xv))
    buf = np.zeros(12 + shift, "f4")
    out = {names[0]: buf[:12].reshape(3, 4), names[1]: buf[shift:].reshape(3, 4)}
    with pytest.raises(ArgumentError, match="overlaps out for output"):
        obj.predict(xv, out=out)
    own = {k: np.zeros((3, 4), "f4") for k in names}
    got = obj.predict(xv, out=own)
    for k, w in zip(names, want):
        np.testing.assert_allclose(got[k], w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["model", "library"])
def test_assigning_to_params_writes_the_weights(which, tmp_path):
    """obj.params[name] = array replaced the dict's entry: predict (and the exported library)
    kept the old weights while get_weights and save reported the new array. Now it writes
    the array into the weights (checked as set_weights checks it), in-place operators work,
    and names cannot be added or removed."""
    x = gc.input("x", ("N", 3))
    obj = gc.compile(gc.dense(x, 4, name="fc"), name="trust_alias_assign", threads=1)
    if which == "library":
        obj.export(str(tmp_path / "libtrust_alias_assign.so"))
        obj = gc.load(str(tmp_path / "libtrust_alias_assign.so"))
    xv = np.random.default_rng(5).standard_normal((2, 3)).astype("f4")
    obj.params["fc.b"] = np.arange(4.0)  # float64 values into the float32 bias
    obj.params["fc.w"] *= 2.0
    w, b = obj.params["fc.w"].astype(np.float64), np.arange(4.0)
    np.testing.assert_allclose(obj.predict(xv), xv.astype(np.float64) @ w + b, rtol=1e-6)
    np.testing.assert_array_equal(obj.get_weights()["fc.b"], np.arange(4.0, dtype=np.float32))
    snapshot = copy.deepcopy(obj.params)  # a plain dict of copies
    before = _bytes(obj)
    for bad in (
        lambda: obj.params.__setitem__("fc.b", np.ones(5)),
        lambda: obj.params.__setitem__("nope", np.ones(4)),
        lambda: obj.params.update({"fc.w": np.zeros((3, 4)), "fc.b": np.ones(3)}),
        lambda: obj.params.pop("fc.b"),
        lambda: obj.params.__delitem__("fc.w"),
    ):
        with pytest.raises(ArgumentError):
            bad()
    assert _bytes(obj) == before and list(obj.params) == ["fc.w", "fc.b"]
    obj.params["fc.b"] = np.zeros(4)
    np.testing.assert_array_equal(snapshot["fc.b"], np.arange(4.0, dtype=np.float32))
