"""evaluate()'s regression metrics on several outputs vs scikit-learn's documented formulas
(r2_score/mean_squared_error/mean_absolute_error, multioutput="uniform_average"), written here in
numpy float64 (scikit-learn is not a dependency)."""

import numpy as np
import pytest

import graphc as gc


def _r2_sklearn(y, p):
    """r2_score(y, p) (uniform_average, force_finite=True), per its documentation."""
    y, p = y.reshape(len(y), -1).astype(np.float64), p.reshape(len(p), -1).astype(np.float64)
    out = []
    for j in range(y.shape[1]):
        num = np.sum((y[:, j] - p[:, j]) ** 2)
        den = np.sum((y[:, j] - np.mean(y[:, j])) ** 2)
        out.append((1.0 if num == 0 else 0.0) if den == 0 else 1.0 - num / den)
    return float(np.mean(out))


@pytest.fixture(scope="module")
def reg3():
    x = gc.input("x", ("N", 3))
    y = gc.input("y", ("N", 3))
    p = gc.dense(x, 3, name="d")
    return gc.compile(p, loss=gc.mean_squared_error(p, y), optimizer=gc.SGD(lr=0.01), name="reg3")


def test_r2_averages_per_output_over_different_scales(reg3):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 3)).astype(np.float32)
    Y = np.stack(
        [rng.standard_normal(50) * 100 + 1000, rng.standard_normal(50) * 0.01, np.full(50, 2.0)],
        1,
    ).astype(np.float32)
    P = reg3.predict(X).astype(np.float64)
    got = reg3.evaluate(X, Y)
    want = _r2_sklearn(Y, P)
    assert got["r2"] == pytest.approx(want, rel=1e-6, abs=1e-9)
    # the pooled-variance figure (the old, wrong one) is far from it here
    pooled = 1 - np.mean((P - Y) ** 2) / np.var(Y.astype(np.float64))
    assert abs(pooled - want) > 0.1
    err = P - Y.astype(np.float64)
    assert got["mse"] == pytest.approx(np.mean([np.mean(err[:, j] ** 2) for j in range(3)]))
    assert got["mae"] == pytest.approx(np.mean([np.mean(np.abs(err[:, j])) for j in range(3)]))


def test_r2_exact_fit_and_constant_column(reg3):
    X = np.random.default_rng(2).standard_normal((20, 3)).astype(np.float32)
    P = reg3.predict(X)
    Y = P.copy()
    assert reg3.evaluate(X, Y)["r2"] == pytest.approx(1.0)  # exact, constant columns included
    Y[:, 2] = P[0, 2] + 1.0  # a constant column predicted wrongly counts 0 (force_finite)
    assert reg3.evaluate(X, Y)["r2"] == pytest.approx(_r2_sklearn(Y, P), abs=1e-6)


class _Ranks:
    """mpi4py's calls distributed._evaluate makes, for ranks that each run it in turn: the
    gathers of the last round, replayed (one process plays every rank)."""

    def __init__(self, k, rank, gathered):
        self.k, self.rank, self.gathered, self.sent = k, rank, gathered, []

    def Get_size(self):
        return self.k

    def Get_rank(self):
        return self.rank

    def allgather(self, value):
        self.sent.append(value)
        return self.gathered[len(self.sent) - 1] if self.gathered else [value] * self.k


def test_data_parallel_validation_r2_is_the_per_output_one(reg3):
    """fit(distributed=...)'s val_r2 (runtime.distributed._evaluate, every rank evaluating its
    slice) equals one process's evaluate r2: it was 1 - combined MSE / variance of every
    target element, another figure with outputs of different scales (-0.055 for -0.015 under
    mpirun -np 2) and nan for a constant column."""
    from graphc.runtime import distributed

    rng = np.random.default_rng(5)
    x = rng.normal(size=(21, 3)).astype(np.float32)
    y = np.stack([rng.normal(size=21) * 10, rng.normal(size=21) * 0.1, np.full(21, 0.5)], 1)
    feeds = {"x": x, "y": y.astype(np.float32)}
    want = _r2_sklearn(feeds["y"], reg3.predict(x))
    assert np.isclose(reg3.evaluate(x, feeds["y"])["r2"], want, rtol=1e-9)
    # two ranks: a first round records what each rank sends, the second replays the gathers
    comms = [_Ranks(2, r, None) for r in range(2)]
    for c in comms:
        distributed._evaluate(reg3, c, feeds, 21)
    gathered = [[c.sent[i] for c in comms] for i in range(len(comms[0].sent))]
    for r in range(2):
        figs = dict(distributed._evaluate(reg3, _Ranks(2, r, gathered), feeds, 21))
        assert np.isclose(figs["r2"], want, rtol=1e-9)
