"""Models with non-trainable parameters anywhere in the param region (a frozen first layer, a
frozen head, a gc.constant scaling the output, several): ``Model.gradients``, the split
entries' export and distributed fit must work wherever they lie (the grad region spans the
whole param region; the trainable params' gradients land at their params' offsets)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import graphc as gc

SCALE = np.array([1.0, 2.0, -0.5], np.float64)
FROZEN = {
    "first": {"w1"},
    "middle": {"b1", "w2"},
    "last": {"b2"},
    "several": {"w1", "b2"},
    "constant": set(),
}


def frozen_model(case: str, name: str, dtype: str = "f32") -> gc.Model:
    """x (N,4) -> tanh(x w1 + b1) w2 + b2 [* constant]: the params in ``FROZEN[case]`` are
    non-trainable (in the case "constant" a gc.constant scales the output, the last param)."""
    frozen = FROZEN[case]
    x = gc.input("x", ("N", 4), dtype=dtype)
    t = gc.input("t", ("N", 3), dtype=dtype)

    def p(nm: str, shape: tuple) -> gc.Tensor:
        init = "zeros" if nm.startswith("b") else "glorot_uniform"
        return gc.param(nm, shape, init, dtype, trainable=nm not in frozen)

    h = gc.tanh(gc.matmul(x, p("w1", (4, 5))) + p("b1", (5,)))
    out = gc.matmul(h, p("w2", (5, 3))) + p("b2", (3,))
    if case == "constant":
        out = out * gc.constant(SCALE, dtype=dtype)
    return gc.compile(out, gc.mean_squared_error(out, t), gc.SGD(lr=0.1), name=name, seed=3)


def _loss(p: dict[str, np.ndarray], xs: np.ndarray, ts: np.ndarray, case: str) -> float:
    """The documented mean squared error (mean over rows and columns), float64."""
    out = np.tanh(xs @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    if case == "constant":
        out = out * SCALE
    return float(((out - ts) ** 2).mean())


@pytest.mark.parametrize("case", list(FROZEN))
def test_gradients_with_non_trainable_params_anywhere(case) -> None:
    rng = np.random.default_rng(4)
    m = frozen_model(case, f"frz_{case}", "f64")
    for k in ("b1", "b2"):
        m.params[k][...] = rng.standard_normal(m.params[k].shape)
    xs, ts = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    before = {k: v.copy() for k, v in m.params.items()}
    g = m.gradients(xs, ts)
    assert set(g) == {"w1", "b1", "w2", "b2"} - FROZEN[case]
    p64 = {k: v for k, v in before.items() if not k.startswith("constant")}
    for name, grad in g.items():
        num = np.zeros_like(p64[name])
        for idx in np.ndindex(num.shape):  # central differences
            hi, lo = dict(p64), dict(p64)
            hi[name], lo[name] = p64[name].copy(), p64[name].copy()
            hi[name][idx] += 1e-6
            lo[name][idx] -= 1e-6
            num[idx] = (_loss(hi, xs, ts, case) - _loss(lo, xs, ts, case)) / 2e-6
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-9, err_msg=name)
    m.train_step(xs, ts)  # SGD: p - lr * grad for the trainable ones, the others unchanged
    for k, v in m.params.items():
        want = before[k] - 0.1 * g[k] if k in g else before[k]
        np.testing.assert_allclose(v, want, rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_split_entries_export_with_a_frozen_head(tmp_path) -> None:
    m = frozen_model("last", "frz_export")
    res = m.export(
        str(tmp_path / "libfrz_export.so"), entries=["infer", "train_grads", "apply_update"]
    )
    assert res.plan is not None and "train_grads" in res.plan.entries


@pytest.mark.xdist_group("mpirun")  # with test_mpi's jobs, one at a time under xdist
def test_distributed_fit_with_non_trainable_params_anywhere(tmp_path) -> None:
    """2 ranks (tests/mpi_worker.py mode frozen) against one process: the same losses and
    parameters; frozen params unchanged."""
    from test_mpi import MPIRUN, _have_mpi4py, mpirun, serial

    if MPIRUN is None or not _have_mpi4py():
        pytest.skip("needs Open MPI's mpirun and mpi4py (.ci/run installs both)")
    r = mpirun(2, "frozen", str(tmp_path / "got.npz"))
    assert r.returncode == 0, r.stderr[-3000:]
    serial("frozen", str(tmp_path / "ref.npz"))
    got, ref = dict(np.load(tmp_path / "got.npz")), dict(np.load(tmp_path / "ref.npz"))
    assert set(got) == set(ref) and len(got) > len(FROZEN)
    for k, want in ref.items():
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6, err_msg=k)
