"""Float inputs wider than the compiled dtype (trust2, stop 13): a finite float64 value beyond
float32's range (1e39) became inf in the input cast, silently (numpy's RuntimeWarning only):
predict returned inf/NaN rows, and train_step / fit / evaluate blamed "NaN or Inf" in data that
held none. Now refused naming the input, the row and the value, before anything runs, as
set_weights refuses such a value; values in range (down to those rounding to 0) still go
through and give what the same rows cast by numpy give (the reference)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import ArgumentError


@pytest.fixture(scope="module")
def model() -> gc.Model:
    x = gc.input("x", ("N", 3))
    h = gc.dense(x, 4, name="fc")
    loss = gc.softmax_cross_entropy(h, gc.input("y", ("N",), dtype="i32"))
    return gc.compile(h, loss, gc.Adam(lr=0.01), name="trust_cast", threads=1)


@pytest.fixture(scope="module")
def library(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cast") / "libtrust_cast.so")
    model.export(path)
    return gc.load(path)


def _bytes(obj) -> list[bytes]:
    return [v.tobytes() for v in obj.params.values()] + [v.tobytes() for v in obj.state.values()]


@pytest.mark.parametrize("which", ["model", "library"])
@pytest.mark.parametrize("value", [1e39, -1e300])
def test_a_float64_value_beyond_float32_is_refused_naming_the_row(which, value, request):
    obj = request.getfixturevalue(which)
    x, y = np.zeros((4, 3)), np.arange(4, dtype=np.int32)
    x[2, 1] = value
    calls = {"predict": lambda: obj.predict(x), "train_step": lambda: obj.train_step(x, y)}
    if which == "model":
        calls["evaluate"] = lambda: obj.evaluate(x, y)
        calls["fit"] = lambda: obj.fit(x, y, epochs=1, verbose=0)
    before = _bytes(obj)
    for what, call in calls.items():
        with pytest.raises(ArgumentError, match=r"input 'x': row 2 holds .*float32's range"):
            call()
        assert _bytes(obj) == before, what


@pytest.mark.parametrize("which", ["model", "library"])
def test_float64_values_in_range_go_through_as_numpy_casts_them(which, request):
    obj = request.getfixturevalue(which)
    x = np.array([[3.4e38, -3.4e38, 1e-50], [1e-39, 0.5, -2.0], [1e6, 1e-7, 7.0]])
    with np.errstate(over="raise", under="ignore"):  # numpy's cast: no overflow here
        want = obj.predict(x.astype(np.float32))
    np.testing.assert_array_equal(obj.predict(x), want)
    if which == "model":
        y = np.arange(3, dtype=np.int32)
        a, b = copy.copy(obj), copy.copy(obj)
        a.train_step(x[1:], y[1:])
        b.train_step(x[1:].astype(np.float32), y[1:])
        assert _bytes(a) == _bytes(b)


@pytest.mark.parametrize(
    "declare",
    [
        lambda: gc.param("w", (2,), init="constant", value=1e39),
        lambda: gc.param("w", (2,), init="uniform", low=-1e39, high=0.0),
        lambda: gc.param("w", (2,), init="normal", mean=-4e38, std=1.0),
        lambda: gc.constant(np.array([1.0, -1e39])),
    ],
    ids=["constant", "uniform", "normal-mean", "gc.constant"],
)
def test_a_declared_value_beyond_float32_is_refused_when_declared(declare):
    """Before, the parameter or constant held inf (value=inf was refused, 1e39 was not), and
    gc.constant's message said 'NaN or infinity' of finite data."""
    with pytest.raises(gc.GraphcError, match="float32's range"):
        declare()


def test_a_draw_or_optimizer_slot_beyond_float32_is_refused_at_compile():
    x = gc.input("x", ("N", 2000))
    w = gc.param("w", (2000, 1), init="normal", std=1e38)  # draws above 3.4e38: inf
    with pytest.raises(gc.GraphcError, match="float32's range"):
        gc.compile(gc.matmul(x, w), name="trust_cast_draw")
    out = gc.matmul(x, gc.param("v", (2000, 1)))
    with pytest.raises(gc.GraphcError, match="float32's range"):
        gc.compile(out, gc.mean(out), gc.Adagrad(initial_accumulator_value=1e39), name="tc_ada")


def test_the_same_values_are_fine_in_float64():
    x = gc.input("x", ("N", 2), dtype="f64")
    out = x + gc.param("w", (2,), init="constant", value=1e39, dtype="f64")
    out = out + gc.constant(np.array([1e39, 0.0]), dtype="f64")
    m = gc.compile(out, name="trust_cast_f64")
    np.testing.assert_array_equal(m.predict(np.zeros((1, 2))), [[2e39, 1e39]])


@pytest.mark.parametrize("which", ["model", "library"])
def test_a_learning_rate_beyond_float32_is_refused_when_set(which, request):
    """model.lr = 1e39 was taken, became inf in the float32 step's rate, and the next
    train_step said 'must be finite ... got 1e+39'; now refused when set, naming the range."""
    obj = request.getfixturevalue(which)
    before = obj.lr
    with pytest.raises(ArgumentError, match="float32's range"):
        obj.lr = 1e39
    assert obj.lr == before
    if which == "library":
        with pytest.raises(ArgumentError, match="float32's range"):
            obj.train_step(np.zeros((2, 3), np.float32), np.zeros(2, np.int32), lr=1e39)


@pytest.mark.parametrize("value", [0.3, 1e5 + 0.1, -7.7])
def test_normalization_of_a_constant_feature_centres_it_exactly(value):
    """A feature constant in the adapted data is centred, not scaled (the class's documented
    rule): numpy's float64 mean of 100003 values 0.3 is off by 5e-13 and the variance was
    2.4e-25, so inv_std was 2e12 and the training value itself normalized to 1.0 (0.31 to
    2e10). Reference: x - value for the constant feature, (x - mean) / std (float64 numpy)
    for the other."""
    rng = np.random.default_rng(6)
    data = np.stack([np.full(100003, value), rng.standard_normal(100003) * 3 + 1], axis=1)
    norm = gc.Normalization().adapt(data)
    x = gc.input("x", ("N", 2), dtype="f64")
    m = gc.compile(norm(x), name="trust_cast_norm")
    probe = np.array([[value, 0.5], [value + 0.01, -2.0]])
    want = np.stack(
        [probe[:, 0] - value, (probe[:, 1] - data[:, 1].mean()) / data[:, 1].std()], axis=1
    )
    np.testing.assert_allclose(m.predict(probe), want, rtol=1e-12, atol=1e-9)
