"""batched_matmul through graphc's GEMM (codegen.kernels.emit_batched_matmul): each matrix of a
stack is summed as the GEMM sums it (blocks of K), so a deep product is as accurate as graphc's
matmul; the stack (or each large product) is split between the pool's threads, with the same
bits at any thread count; the VJP's batched products agree with central differences."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.codegen.gemm import PARALLEL_MIN_MACS


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("flags", [False, True])
def test_deep_products_are_as_accurate_as_graphcs_matmul(flags) -> None:
    """K = 8192 in float32: max |C - C64| / max |C64| below 1e-6 against numpy float64 of the
    same float32 values (the one dot product summed k after k gave 2.9e-6; the GEMM's blocked
    sum 3.7e-7, numpy/BLAS 2.6e-7), and each matrix of the stack equals graphc's 2-D matmul of
    the same matrices bit for bit (the same GEMM code). With ``flags``: both operands
    transposed, A [N, 1, K, M] broadcast along the second axis against a weight B [2, P, K]
    broadcast along N."""
    rng = np.random.default_rng(3)
    k, mp = 8192, 16
    if flags:
        a, b = gc.input("a", ("N", 1, k, mp)), gc.param("b", (2, mp, k))
        c = gc.matmul(a, b, transpose_a=True, transpose_b=True)
    else:
        a, b = gc.input("a", ("N", mp, k)), gc.input("b", ("N", k, mp))
        c = gc.matmul(a, b)
    m = gc.compile(c, name=f"bmmacc{int(flags)}")
    xa = rng.standard_normal((2, *a.type.shape[1:])).astype(np.float32)
    xb = rng.standard_normal((2, *b.type.shape[1:]) if not flags else b.type.shape)
    xb = xb.astype(np.float32)
    if flags:
        m.set_weights({"b": xb})
        got = m.predict(xa)
        a64, b64 = np.swapaxes(xa, -1, -2), np.swapaxes(xb, -1, -2)  # [2, 1, M, K], [2, K, P]
    else:
        got = m.predict({"a": xa, "b": xb})
        a64, b64 = xa[:, None], xb[:, None]  # [2, 1, M, K], [2, 1, K, P]
        got = got[:, None]
    want = a64.astype(np.float64) @ b64.astype(np.float64)
    assert got.shape == want.shape
    assert _rel_err(got, want) < 1e-6

    # graphc's own matmul of one pair of matrices, stored and flagged as in the stack
    pa = gc.param("pa", (k, mp) if flags else (mp, k))
    pb = gc.param("pb", (mp, k) if flags else (k, mp))
    plain = gc.compile(gc.matmul(pa, pb, transpose_a=flags, transpose_b=flags), name="bmm2d")
    for i in range(2):
        for j in range(got.shape[1]):
            w = {"pa": xa[i, 0] if flags else xa[i], "pb": xb[j] if flags else xb[i]}
            plain.set_weights({n: np.ascontiguousarray(v) for n, v in w.items()})
            assert np.array_equal(plain.predict(), got[i, j]), (i, j)


def _att(name: str, t: int, d: int, heads: int) -> gc.Model:
    x = gc.input("x", ("N", heads, t, d))
    wq = gc.param("wq", (heads, d, d))
    s = gc.matmul(gc.matmul(x, wq), x, transpose_b=True)  # [N, H, T, T]
    return gc.compile(gc.matmul(s, x), name=name, seed=1)


@pytest.mark.parametrize(
    "t, d, heads, rows",
    [
        (16, 8, 4, 64),  # 1,024 to 2,048 multiply-adds a matrix: the stack is split
        (96, 48, 1, 8),  # 221,184 and 442,368, 8 of each: the stack is split
        (128, 64, 1, 3),  # 524,288 and 1,048,576, 3 of each: each GEMM is split
    ],
)
def test_threads_give_the_same_bits(t, d, heads, rows) -> None:
    """Stacks of small products, of large ones (both split into runs of whole matrices) and a
    short stack of large ones (each GEMM split) at 1, 2 and 3 threads: predict gives the same
    bits, at 2 and 3 threads the pool was handed work (its dispatch counter moved), and the
    result equals numpy float64 (2e-5)."""
    rng = np.random.default_rng(4)
    assert rows * heads * t * t * d >= 2 * PARALLEL_MIN_MACS
    m = _att(f"bmmthr{t}", t, d, heads)
    x = rng.standard_normal((rows, heads, t, d)).astype(np.float32)
    outs = []
    for threads in (1, 2, 3):
        m.threads = threads
        d0 = m.jit.dispatches(m.program.name)
        outs.append(m.predict(x))
        assert (m.jit.dispatches(m.program.name) > d0) == (threads > 1), threads
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    x64, wq = x.astype(np.float64), m.get_weights()["wq"].astype(np.float64)
    want = ((x64 @ wq) @ np.swapaxes(x64, -1, -2)) @ x64
    np.testing.assert_allclose(outs[0], want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


def test_gradients_match_central_differences_at_two_threads() -> None:
    """A float64 model of both flags and a broadcast weight, loss sum(tanh(o) * G) with
    o = (q k^T) x, q = x wq, k = x wk (wq, wk [H, d, d] shared by the stack): one SGD step
    (lr 1) at 2 threads gives gradients equal to central differences of the numpy float64
    loss (h 1e-6, 1e-6 relative), the same bits as at 1 thread; at 2 threads predict's
    batched products (stacks of 64 products of 8,192 and 16,384 multiply-adds) hand work to
    the pool."""
    rng = np.random.default_rng(6)
    heads, t, d, rows = 4, 32, 16, 16
    x = gc.input("x", ("N", heads, t, d), dtype="f64")
    wq = gc.param("wq", (heads, d, d), dtype="f64")
    wk = gc.param("wk", (heads, d, d), dtype="f64")
    q, k = gc.matmul(x, wq), gc.matmul(x, wk)
    s = gc.matmul(q, k, transpose_b=True) * 0.1
    o = gc.matmul(s, x)
    g = rng.standard_normal((heads, t, d))
    loss = gc.sum(gc.tanh(o) * gc.constant(g, dtype="f64"))
    xs = rng.standard_normal((rows, heads, t, d)) * 0.5

    def f(p: dict[str, np.ndarray]) -> float:
        qn, kn = xs @ p["wq"], xs @ p["wk"]
        return float((np.tanh((qn @ np.swapaxes(kn, -1, -2) * 0.1) @ xs) * g).sum())

    steps = []
    for threads in (1, 2):
        m = gc.compile(o, loss, gc.SGD(lr=1.0), name="bmmgrad", seed=2, threads=threads)
        w0 = {n: v.copy() for n, v in m.get_weights().items()}
        d0 = m.jit.dispatches(m.program.name)
        m.predict(xs)  # the forward products alone
        assert (m.jit.dispatches(m.program.name) > d0) == (threads > 1)
        m.train_step(xs)
        steps.append({n: w0[n] - v for n, v in m.get_weights().items()})
    for n in ("wq", "wk"):
        assert np.array_equal(steps[0][n], steps[1][n]), n
        num = np.empty(12)
        picks = [tuple(rng.integers(0, s) for s in w0[n].shape) for _ in range(12)]
        for j, at in enumerate(picks):
            hi, lo = dict(w0), dict(w0)
            hi[n], lo[n] = w0[n].copy(), w0[n].copy()
            hi[n][at] += 1e-6
            lo[n][at] -= 1e-6
            num[j] = (f(hi) - f(lo)) / 2e-6
        got = np.array([steps[1][n][at] for at in picks])
        np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-7 * np.abs(num).max())
