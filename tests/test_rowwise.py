"""predict/evaluate split rows into blocks only when the outputs are row-wise (#13 item 1).

The rule is derived from the graph (graphc.ir.batch) and shared by Model and exported
libraries; the references are numpy float64 over all rows at once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.ir.batch import MEAN, MIXED, ROWS, batch_kinds, rows_independent

CC = shutil.which(os.environ.get("CC", "cc") or "cc")
RNG = np.random.default_rng(13)


def _x(rows: int, cols: int = 5) -> np.ndarray:
    return RNG.standard_normal((rows, cols)).astype(np.float32)


def test_reductions_over_the_batch_see_every_row() -> None:
    x = _x(1500)
    m = gc.compile(gc.mean(gc.input("x", ("N", 5)), axes=0), name="bmean")
    assert m.row_split == {"infer": False}
    got = m.predict(x, batch_size=1024)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, x.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)
    m = gc.compile(gc.sum(gc.input("x", ("N", 5))), name="bsum")
    x = _x(3000)
    np.testing.assert_allclose(m.predict(x), x.astype(np.float64).sum(), rtol=1e-4)


def test_softmax_over_the_batch_axis_is_not_split() -> None:
    x = _x(1100, 3)
    m = gc.compile(gc.softmax(gc.transpose(gc.input("x", ("N", 3)))), name="bsoft")
    z = x.T.astype(np.float64)
    want = np.exp(z - z.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(m.predict(x, batch_size=100), want, rtol=1e-4, atol=1e-9)


def test_an_input_with_n_not_leading_is_fed_and_never_split() -> None:
    x = RNG.standard_normal((3, 2000)).astype(np.float32)
    m = gc.compile(gc.sum(gc.input("x", (3, "N")), axes=0), name="ncol")
    np.testing.assert_allclose(
        m.predict(x, batch_size=64), x.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(gc.ArgumentError, match=r"expects f32\[3,N\]"):
        m.predict(x.T)


def test_row_wise_models_still_split_and_agree_with_one_call() -> None:
    x = _x(2100, 4)
    y = RNG.integers(0, 3, 2100).astype(np.int32)
    xi, yi = gc.input("x", ("N", 4)), gc.input("y", ("N",), dtype="i32")
    out = gc.dense(gc.dense(xi, 6, "tanh", name="h"), 3, name="o")
    loss = gc.softmax_cross_entropy(out, yi) + 0.01 * gc.sum(gc.square(gc.tanh(out)) * 0.0)
    m = gc.compile(out, loss, name="rw")
    assert m.row_split == {"infer": True, "eval": False}  # the penalty reads rows: mixed
    w = {k: v.astype(np.float64) for k, v in m.params.items()}
    ref = np.tanh(x @ w["h.w"] + w["h.b"]) @ w["o.w"] + w["o.b"]
    np.testing.assert_allclose(m.predict(x, batch_size=500), ref, rtol=1e-4, atol=1e-5)
    m2 = gc.compile(out, gc.softmax_cross_entropy(out, yi), name="rw2")
    assert m2.row_split == {"infer": True, "eval": True}
    m2.set_weights(m.get_weights())
    z = ref - ref.max(axis=1, keepdims=True)
    nll = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1)))
    got = m2.evaluate(x, y, batch_size=1000)["loss"]
    np.testing.assert_allclose(got, nll.mean(), rtol=1e-5)


def test_evaluate_with_a_loss_summed_over_rows_runs_one_call() -> None:
    x = _x(2500, 2)
    y = _x(2500, 1)
    xi, yi = gc.input("x", ("N", 2)), gc.input("y", ("N", 1))
    out = gc.dense(xi, 1, name="lin")
    m = gc.compile(out, gc.sum(gc.square(out - yi)), gc.SGD(lr=0.01), name="sumloss")
    assert m.row_split["eval"] is False
    w = {k: v.astype(np.float64) for k, v in m.params.items()}
    want = np.sum((x @ w["lin.w"] + w["lin.b"] - y) ** 2)
    np.testing.assert_allclose(m.evaluate(x, y, batch_size=1024)["loss"], want, rtol=1e-4)


def test_batch_kinds_follow_the_ops() -> None:
    from graphc.dsl import collect_graph

    x = gc.input("x", ("N", 4))
    w = gc.param("w", (4, 3))
    rows = gc.softmax(gc.matmul(x, w))
    mixed = gc.matmul(x, gc.matmul(x, w), transpose_a=True)  # x^T x w: contracts over N
    per_row = gc.sum(rows, axes=1)
    loss = gc.mean(gc.square(rows)) * 2.0 + gc.sum(gc.square(w))
    bad = gc.mean(rows) * gc.mean(rows)
    moved = gc.reshape(rows, ("N", 3, 1))
    g = collect_graph("k", [rows, mixed, per_row, loss, bad, moved])
    k = batch_kinds(g)
    got = [k[t.name] for t in (rows, mixed, per_row, loss, bad, moved)]
    assert got == [ROWS, MIXED, ROWS, MEAN, MIXED, ROWS]
    assert rows_independent(g, [rows.name, per_row.name])
    assert not rows_independent(g, [rows.name, mixed.name])


@pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) on PATH")
def test_exported_library_carries_the_rule(tmp_path) -> None:
    x = _x(2100, 3)
    m = gc.compile(gc.softmax(gc.transpose(gc.input("x", ("N", 3)))), name="lsoft")
    path = tmp_path / "liblsoft.so"
    res = m.export(str(path))
    assert "#define LSOFT_INFER_ROWS_INDEPENDENT 0" in Path(res.header).read_text()
    lib = gc.load(str(path))
    assert lib.meta["entries"]["infer"]["rows_independent"] is False
    z = x.T.astype(np.float64)
    want = np.exp(z - z.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(lib.predict(x, batch_size=256), want, rtol=1e-4, atol=1e-9)
    xi = gc.input("x", ("N", 3))
    m = gc.compile(gc.dense(xi, 2, name="d"), name="ldense")
    res = m.export(str(tmp_path / "libldense.so"))
    assert "#define LDENSE_INFER_ROWS_INDEPENDENT 1" in Path(res.header).read_text()
    lib = gc.load(str(tmp_path / "libldense.so"))
    assert lib.meta["entries"]["infer"]["rows_independent"] is True
    np.testing.assert_array_equal(lib.predict(x, batch_size=256), m.predict(x))
