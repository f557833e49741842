"""Round 6 of the trust checks: valid programs that were refused, against numpy float64, torch
where installed and ONNX Runtime where installed.

Keras's sparse labels [N, 1] (declared, or fed to an [N] label input); torch's
Embedding(padding_idx=...); transposes of rank > 2 of any size (one strided copy, op
``permute``, where slices + concat were capped at 1024 slices)."""

import numpy as np
import pytest

import graphc as gc


def _np_xent(z, labels):
    """Mean softmax cross-entropy of z [R, C] against labels [R] and dL/dz, numpy float64."""
    e = np.exp(z - z.max(-1, keepdims=True))
    prob = e / e.sum(-1, keepdims=True)
    onehot = np.eye(z.shape[-1])[labels]
    return -np.mean(np.sum(np.log(prob) * onehot, -1)), (prob - onehot) / len(labels)


def _label_model(lshape, name, lead=()):
    x = gc.input("x", ("N", *lead, 4), dtype="f64")
    y = gc.input("y", lshape, dtype="i32")
    z = gc.dense(x, 3, name="d")
    return gc.compile(z, gc.softmax_cross_entropy(z, y), gc.SGD(lr=0.5), name=name)


@pytest.mark.parametrize("lead", [(), (2,)])
def test_sparse_labels_with_a_last_axis_of_one(lead):
    """Keras's SparseCategoricalCrossentropy takes labels [N, 1] ([N, T, 1]): declared as the
    label input, or fed to an i32[N] input. Loss, the SGD step of every param and evaluate's
    accuracy vs numpy float64; a label out of range in [N, 1] is refused naming its row (no
    position: a row holds one label), params unchanged."""
    rng = np.random.default_rng(6)
    xs = rng.normal(size=(7, *lead, 4))
    ys = rng.integers(0, 3, size=(7, *lead)).astype(np.int32)
    col = ys[..., None]
    declared = _label_model(("N", *lead, 1), f"lab1_{len(lead)}", lead)  # i32[N, .., 1]
    plain = _label_model(("N", *lead), f"lab0_{len(lead)}", lead)  # i32[N, ..], fed [N, .., 1]
    w = plain.get_weights()
    declared.set_weights(w)
    z = xs @ w["d.w"] + w["d.b"]
    loss, dz = _np_xent(z.reshape(-1, 3), ys.reshape(-1))
    acc = np.mean(np.argmax(z, -1) == ys)
    for m in (declared, plain):
        ev = m.evaluate(xs, col)
        assert ev["loss"] == pytest.approx(loss, rel=1e-12)
        assert ev["accuracy"] == pytest.approx(acc)
    bad = col.copy()
    bad[3] = 5
    for m in (declared, plain):
        with pytest.raises(gc.ArgumentError, match=r"row 3\b.*has class 5") as e:
            m.train_step(xs, bad)
        assert lead or "position" not in str(e.value)
        assert all(np.array_equal(v, w[k]) for k, v in m.get_weights().items())
        assert m.train_step(xs, col) == pytest.approx(loss, rel=1e-12)
        after = m.get_weights()
        xr = xs.reshape(-1, 4)
        np.testing.assert_allclose(after["d.w"], w["d.w"] - 0.5 * xr.T @ dz, atol=1e-12)
        np.testing.assert_allclose(after["d.b"], w["d.b"] - 0.5 * dz.sum(0), atol=1e-12)


def test_sparse_labels_column_in_the_library_and_onnx(tmp_path):
    """The exported library takes the [N, 1] labels of an [N] input as the model does; a model
    declaring labels [N, 1] exports to ONNX (Squeeze before SoftmaxCrossEntropyLoss): the loss
    equals ONNX Runtime's."""
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(5, 4))
    ys = rng.integers(0, 3, size=(5, 1)).astype(np.int32)
    m = _label_model(("N",), "labcol_lib")
    lib = gc.load(m.export(str(tmp_path / "liblabcol.so")).library)
    assert lib.train_step(xs, ys) == pytest.approx(m.train_step(xs, ys[:, 0]), rel=1e-12)
    bad = ys.copy()
    bad[2] = -1
    with pytest.raises(gc.ArgumentError, match="row 2"):
        lib.train_step(xs, bad)
    ort = pytest.importorskip("onnxruntime")
    d = _label_model(("N", 1), "labcol_onnx")
    path = str(tmp_path / "labcol.onnx")
    d.to_onnx(path, include_loss=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(None, {"x": xs, "y": ys})
    assert got[-1] == pytest.approx(d.evaluate(xs, ys)["loss"], rel=1e-9), names


def _emb_model(pad, name):
    ids = gc.input("ids", ("N", 4), dtype="i32")
    y = gc.input("y", ("N",), dtype="i32")
    e = gc.embedding(ids, 6, 3, name="emb", dtype="f64", padding_idx=pad)
    z = gc.dense(gc.reshape(e, ("N", 12)), 4, name="d")
    return gc.compile(z, gc.softmax_cross_entropy(z, y), gc.SGD(lr=1.0), name=name)


@pytest.mark.parametrize("pad", [2, -1])
def test_embedding_padding_idx_row_gets_no_gradient(pad):
    """torch's nn.Embedding(6, 3, padding_idx=p): row p starts at zeros, ids p read row p (here
    set to nonzero values by set_weights), and the row gets no gradient; every other row gets
    the scatter-add of its ids' gradients. Loss and dL/dtable (one SGD step, lr 1) vs numpy
    float64 and torch F.embedding(padding_idx=p) where installed."""
    rng = np.random.default_rng(11)
    ids = np.array([[0, 2, 2, 5], [2, 1, 0, 2], [5, 5, 5, 5]], np.int32)
    ys = np.array([1, 3, 0], np.int32)
    m = _emb_model(pad, f"embpad{pad % 6}")
    w = m.get_weights()
    assert np.all(w["emb.table"][pad] == 0) and np.all(np.delete(w["emb.table"], pad % 6, 0))
    w["emb.table"] = rng.normal(size=(6, 3))  # the padding row nonzero too
    m.set_weights(w)
    table, dw, db = w["emb.table"], w["d.w"], w["d.b"]
    h = table[ids].reshape(3, 12)
    z = h @ dw + db
    loss, dz = _np_xent(z, ys)
    dtab = np.zeros_like(table)
    np.add.at(dtab, ids.reshape(-1), (dz @ dw.T).reshape(12, 3))
    dtab[pad] = 0.0
    np.testing.assert_allclose(m.predict(ids), z, atol=1e-12)
    assert m.train_step(ids, ys) == pytest.approx(loss, rel=1e-12)
    got = table - m.get_weights()["emb.table"]
    np.testing.assert_allclose(got, dtab, atol=1e-12)
    assert np.all(got[pad] == 0)
    torch = pytest.importorskip("torch")
    tt = torch.tensor(table, requires_grad=True)
    tz = torch.nn.functional.embedding(torch.tensor(ids, dtype=torch.long), tt, padding_idx=pad)
    tz = tz.reshape(3, 12) @ torch.tensor(dw) + torch.tensor(db)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(ys, dtype=torch.long))
    tl.backward()
    assert float(tl.detach()) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(got, tt.grad.numpy(), atol=1e-12)


def test_embedding_padding_idx_layer_and_refusals():
    """The layer takes padding_idx (repr shows it); a padding_idx outside -vocab..vocab-1, or
    not an int, is a ShapeError naming it."""
    layer = gc.Embedding(5, 2, name="lay", padding_idx=0)
    assert repr(layer) == "Embedding(5, 2, padding_idx=0)"
    ids = gc.input("ids", ("N", 3), dtype="i32")
    m = gc.compile(layer(ids), name="emblayerpad")
    assert np.all(m.get_weights()["lay.table"][0] == 0)
    out = m.predict(np.array([[0, 1, 0]], np.int32))
    assert np.all(out[0, 0] == 0) and np.all(out[0, 2] == 0) and np.any(out[0, 1] != 0)
    for bad in (5, -6, 1.0, True):
        with pytest.raises(gc.ShapeError, match="padding_idx"):
            gc.embedding(gc.input("ids2", ("N",), dtype="i32"), 5, 2, padding_idx=bad)


def test_transpose_of_any_size_is_one_exact_copy():
    """np.transpose of [N, 1100, 1100] (refused before: 1100 slices, more than the 1024 the
    slices + concat form allowed) and of an attention block's [N, T, H, d] -> [N, H, T, d]
    (torch's permute(0, 2, 1, 3)) are exact; the gradient through the latter (sum of
    0.5 y^2 + y of y = transpose(x * p)) equals numpy float64's (x p + 1) x summed over N."""
    rng = np.random.default_rng(3)
    x = gc.input("x", ("N", 1100, 1100), dtype="f32")
    t = gc.transpose(x, (0, 2, 1), name="xt")
    big = rng.normal(size=(2, 1100, 1100)).astype(np.float32)
    assert np.array_equal(gc.compile(t, name="bigperm").predict(big), big.transpose(0, 2, 1))

    x = gc.input("x", ("N", 5, 4, 3), dtype="f64")
    p = gc.param("p", (5, 4, 3), dtype="f64")
    y = gc.transpose(x * p, (0, 2, 1, 3))
    back = gc.transpose(y, (0, 3, 1, 2))
    m = gc.compile([y, back], gc.sum(y * y * 0.5 + y), gc.SGD(lr=1.0), name="attperm")
    xs = rng.normal(size=(3, 5, 4, 3))
    pv = m.get_weights()["p"]
    ry = np.transpose(xs * pv, (0, 2, 1, 3))
    out = m.predict(xs)
    assert np.array_equal(out[y.name], ry)
    assert np.array_equal(out[back.name], np.transpose(ry, (0, 3, 1, 2)))
    m.train_step(xs)
    np.testing.assert_allclose(pv - m.get_weights()["p"], ((xs * pv + 1) * xs).sum(0), atol=1e-12)


def test_attention_at_256_positions_is_a_batched_product():
    """softmax(q k^T / sqrt(d)) v at T = 256, d = 64 (4.2M products per sample: refused before,
    the per-sample cap of the broadcast product being 2**20) equals numpy float64 (1e-12); a
    weight [K, M] shared by a stack (torch's w.T @ x[n]) gets the gradient summed over the
    stack, sum_n x[n] G[n]^T (one SGD step, lr 1, loss sum(C * G)) vs numpy 1e-12."""
    rng = np.random.default_rng(5)
    t, d = 256, 64
    x = gc.input("x", ("N", t, d), dtype="f64")
    q, k, v = (gc.dense(x, d, name=n) for n in ("q", "k", "v"))
    s = gc.softmax(gc.matmul(q, k, transpose_b=True) * (1 / np.sqrt(d)), -1)
    m = gc.compile(gc.matmul(s, v), name="att256")
    xs = rng.normal(size=(2, t, d))
    w = m.get_weights()
    qn, kn, vn = (xs @ w[f"{n}.w"] + w[f"{n}.b"] for n in "qkv")
    z = qn @ kn.transpose(0, 2, 1) / np.sqrt(d)
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(m.predict(xs), (e / e.sum(-1, keepdims=True)) @ vn, atol=1e-12)

    x = gc.input("x", ("N", 4, 5), dtype="f64")
    wt = gc.param("w", (4, 3), dtype="f64")
    c = gc.matmul(wt, x, transpose_a=True)  # [3, 4]^T-free: w^T [3, 4] @ x[n] [4, 5]
    g = rng.normal(size=(3, 5))
    m = gc.compile(c, gc.sum(c * gc.constant(g, dtype="f64")), gc.SGD(lr=1.0), name="bmmw")
    xs = rng.normal(size=(6, 4, 5))
    w0 = m.get_weights()["w"]
    np.testing.assert_allclose(m.predict(xs), w0.T @ xs, atol=1e-12)
    m.train_step(xs)
    np.testing.assert_allclose(w0 - m.get_weights()["w"], (xs @ g.T).sum(0), atol=1e-12)


@pytest.mark.parametrize("lead", [(), (3,)])
def test_sparse_cross_entropy_label_smoothing(lead):
    """torch's cross_entropy(z, y, label_smoothing=0.1) with integer labels: the target
    (1 - e) onehot + e / C. Loss and the SGD step of the dense before it vs numpy float64
    (1e-12) and torch 2.13 (classes moved to axis 1 for a sequence) where installed;
    evaluate in blocks of 2 rows equals the whole; a bool or 1.5 is refused."""
    rng = np.random.default_rng(9)
    e = 0.1
    x = gc.input("x", ("N", *lead, 4), dtype="f64")
    y = gc.input("y", ("N", *lead), dtype="i32")
    z = gc.dense(x, 5, name="d")
    loss = gc.softmax_cross_entropy(z, y, label_smoothing=e)
    m = gc.compile(z, loss, gc.SGD(lr=1.0), name=f"xls{len(lead)}")
    xs = rng.normal(size=(7, *lead, 4))
    ys = rng.integers(0, 5, size=(7, *lead)).astype(np.int32)
    w = m.get_weights()
    zr = (xs @ w["d.w"] + w["d.b"]).reshape(-1, 5)
    ls = zr - zr.max(-1, keepdims=True)
    ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
    q = (1 - e) * np.eye(5)[ys.reshape(-1)] + e / 5
    want = -np.mean(np.sum(q * ls, -1))
    dz = (np.exp(ls) - q) / len(zr)
    assert m.evaluate(xs, ys, batch_size=2)["loss"] == pytest.approx(want, rel=1e-12)
    assert m.train_step(xs, ys) == pytest.approx(want, rel=1e-12)
    got = w["d.w"] - m.get_weights()["d.w"]
    np.testing.assert_allclose(got, xs.reshape(-1, 4).T @ dz, atol=1e-12)
    for bad in (True, 1.5, "0.1"):
        with pytest.raises(gc.GraphcError, match="label_smoothing"):
            gc.softmax_cross_entropy(z, y, label_smoothing=bad)
    torch = pytest.importorskip("torch")
    tz = torch.tensor(xs @ w["d.w"] + w["d.b"], requires_grad=True)
    tl = torch.nn.functional.cross_entropy(
        tz.movedim(-1, 1), torch.tensor(ys, dtype=torch.long), label_smoothing=e
    )
    tl.backward()
    assert float(tl.detach()) == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(
        got, xs.reshape(-1, 4).T @ tz.grad.numpy().reshape(-1, 5), atol=1e-12
    )


STEP_KEYS = [
    (slice(None), slice(None, None, 2)),  # torch's x[:, ::2]
    (slice(None), slice(1, None, 3), slice(None, None, -2)),
    (Ellipsis, slice(4, 0, -2)),
    (slice(None), 3, slice(0, 5, 4)),
    (slice(None), None, slice(6, None, 7)),
]


@pytest.mark.parametrize("key", STEP_KEYS, ids=["even", "two_axes", "neg", "int_axis", "one"])
def test_slices_with_any_step(key):
    """x[:, ::2], x[:, 1::3, ::-2], x[..., 4:0:-2]: numpy's slices of any nonzero step (refused
    before: 'slices with step 1 or -1 only'). Forward exact, dL/dp vs numpy's scatter of the
    loss's gradient (float64, 1e-12)."""
    x = gc.input("x", ("N", 7, 5), dtype="f64")
    p = gc.param("p", (7, 5), dtype="f64")
    y = (x * p)[key]
    m = gc.compile(y, gc.mean(gc.square(y)), gc.SGD(lr=0.0), name="stepped")
    xv = np.random.default_rng(12).normal(size=(2, 7, 5))
    xp = xv * m.params["p"]
    np.testing.assert_array_equal(m.predict(xv), xp[key])
    g = np.zeros_like(xp)
    g[key] += 2 * xp[key] / xp[key].size
    np.testing.assert_allclose(m.gradients(xv)["p"], (g * xv).sum(0), rtol=1e-12, atol=1e-15)
