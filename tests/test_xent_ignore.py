"""softmax_cross_entropy(..., ignore_index=k): torch's cross_entropy(ignore_index=k) with
reduction "mean". Rows labelled k add nothing to the loss or the gradient, the mean is over
the other rows; every other label is still checked before native code changes anything."""

import numpy as np
import pytest

import graphc as gc


def _reference(zr: np.ndarray, ys: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """numpy float64: the mean over kept rows of -log softmax(z)[label], and dL/dz."""
    keep = ys != k
    ls = zr - zr.max(-1, keepdims=True)
    ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
    n = max(int(keep.sum()), 1)
    rows = np.flatnonzero(keep)
    loss = -ls[rows, ys[rows]].sum() / n
    dz = np.exp(ls)
    dz[rows, ys[rows]] -= 1.0
    dz[~keep] = 0.0
    return loss, dz / n


def _model(lead, classes, k, name):
    x = gc.input("x", ("N", *lead, 4), dtype="f64")
    y = gc.input("y", ("N", *lead), dtype="i32")
    z = gc.dense(x, classes, name="d")
    loss = gc.softmax_cross_entropy(z, y, ignore_index=k)
    return gc.compile(z, loss, gc.SGD(lr=1.0), name=name)


@pytest.mark.parametrize(
    "lead,classes", [((), 5), ((3,), 5), ((), 40)], ids=["rows", "sequence", "wide"]
)
def test_ignored_rows_count_for_nothing(lead, classes):
    """Loss (train_step, evaluate in blocks of 2), the SGD step of the dense before it and
    accuracy vs numpy float64 (1e-12) and torch 2.13's cross_entropy(ignore_index=-100) where
    installed; the gradient of the loss in the logits' bias vs central differences. 40
    classes take the general row loop, 5 the narrow one (f64 rows: general too)."""
    rng = np.random.default_rng(3)
    k = -100
    m = _model(lead, classes, k, f"xig{len(lead)}_{classes}")
    xs = rng.normal(size=(7, *lead, 4))
    ys = rng.integers(0, classes, size=(7, *lead)).astype(np.int32)
    ys.reshape(-1)[[0, 3, 4, 9 % ys.size]] = k
    w = m.get_weights()
    zr = (xs @ w["d.w"] + w["d.b"]).reshape(-1, classes)
    want, dz = _reference(zr, ys.reshape(-1), k)
    ev = m.evaluate(xs, ys, batch_size=2)
    assert ev["loss"] == pytest.approx(want, rel=1e-12)
    kept = ys.reshape(-1) != k
    acc = np.mean(np.argmax(zr, -1)[kept] == ys.reshape(-1)[kept])
    assert ev["accuracy"] == pytest.approx(acc, abs=1e-12)
    # central differences of the loss in the bias (numpy float64 forward)
    h = 1e-6
    fd = np.zeros(classes)
    for j in range(classes):
        e = np.zeros(classes)
        e[j] = h
        fd[j] = (
            _reference(zr + e, ys.reshape(-1), k)[0] - _reference(zr - e, ys.reshape(-1), k)[0]
        ) / (2 * h)
    np.testing.assert_allclose(m.gradients(xs, ys)["d.b"], fd, atol=1e-8)
    assert m.train_step(xs, ys) == pytest.approx(want, rel=1e-12)
    got = w["d.w"] - m.get_weights()["d.w"]
    np.testing.assert_allclose(got, xs.reshape(-1, 4).T @ dz, atol=1e-12)
    np.testing.assert_allclose(w["d.b"] - m.get_weights()["d.b"], dz.sum(0), atol=1e-12)
    torch = pytest.importorskip("torch")
    tz = torch.tensor(xs @ w["d.w"] + w["d.b"], requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz.movedim(-1, 1), torch.tensor(ys, dtype=torch.long))
    tl.backward()
    assert float(tl.detach()) == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(
        got, xs.reshape(-1, 4).T @ tz.grad.numpy().reshape(-1, classes), atol=1e-12
    )


def test_float32_narrow_rows_and_all_ignored():
    """f32 logits of 10 classes (the narrow vector kernel): loss and dL/dz's bias sum vs numpy
    float64 (2e-6); a batch of ignored rows only gives loss 0 and leaves the weights as they
    were (torch gives NaN)."""
    x = gc.input("x", ("N", 4))
    y = gc.input("y", ("N",), dtype="i32")
    z = gc.dense(x, 10, name="d")
    m = gc.compile(z, gc.softmax_cross_entropy(z, y, ignore_index=-1), gc.SGD(lr=1.0), name="xig32")
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(9, 4)).astype(np.float32)
    ys = np.array([1, -1, 3, 9, -1, 0, 2, -1, 7], np.int32)
    w = m.get_weights()
    zr = xs.astype(np.float64) @ w["d.w"] + w["d.b"]
    want, dz = _reference(zr, ys, -1)
    assert m.gradients(xs, ys)["d.b"] == pytest.approx(dz.sum(0), abs=2e-6)
    assert m.train_step(xs, ys) == pytest.approx(want, rel=2e-6)
    before = m.get_weights()
    assert m.train_step(xs[:3], np.full(3, -1, np.int32)) == 0.0
    after = m.get_weights()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_other_labels_still_checked():
    """-5 (and C) with ignore_index -100 are refused naming the row, before anything is
    written (Model and exported library); ignore_index a class or not an int is refused."""
    m = _model((), 5, -100, "xigchk")
    xs = np.ones((4, 4))
    w = m.get_weights()
    for bad in (-5, 5, -101):
        ys = np.array([0, -100, bad, 1], np.int32)
        with pytest.raises(gc.ArgumentError, match=rf"row 2 has class {bad}.*ignore_index -100"):
            m.train_step(xs, ys)
        with pytest.raises(gc.ArgumentError, match="row 2"):
            m.evaluate(xs, ys.astype(np.int64))
        with pytest.raises(gc.ArgumentError, match=rf"row 2 has class {bad}"):
            m.fit(xs, ys, epochs=1, batch_size=4, shuffle=False, verbose=0)
    for key, v in m.get_weights().items():
        np.testing.assert_array_equal(v, w[key])
    ys = np.array([0, -100, 3, 1], np.int32)  # fit's native epoch lets -100 through
    hist = m.fit(xs, ys, epochs=1, batch_size=4, shuffle=False, verbose=0)
    assert hist["loss"][0] == pytest.approx(_reference(xs @ w["d.w"] + w["d.b"], ys, -100)[0])
    z = gc.dense(gc.input("x", ("N", 4)), 5)
    y = gc.input("y", ("N",), dtype="i32")
    for bad in (2, 1.5, True, 2**40):
        with pytest.raises(gc.ShapeError, match="ignore_index"):
            gc.softmax_cross_entropy(z, y, ignore_index=bad)
    # the split entries alone are not data-parallel (the kept counts differ between ranks:
    # export warns), but data-parallel fit scales each rank's loss by its kept rows
    # (tests/test_mpi.py::test_ignore_index_trains_data_parallel_as_one_process)
    from graphc.compiler import not_row_mean

    why = not_row_mean(m.program.forward, m.program.loss)
    assert "ignore_index -100" in why and "loss_scale" in why
    assert m.program.loss_note == why and m.program.ranks_note == ""
    assert m.program.kept_rows == ("y", -100)


def test_library_and_onnx(tmp_path):
    """The exported library ignores the same rows (its step equals the model's) and refuses
    -5 naming the row and the ignore_index; to_onnx writes SoftmaxCrossEntropyLoss's
    ignore_index: ONNX Runtime's loss equals the model's (1e-9)."""
    rng = np.random.default_rng(8)
    xs = rng.normal(size=(6, 4))
    ys = np.array([0, -100, 4, -100, 2, 1], np.int32)
    m = _model((), 5, -100, "xiglib")
    lib = gc.load(m.export(str(tmp_path / "libxig.so")).library)
    bad = ys.copy()
    bad[2] = -5
    with pytest.raises(gc.ArgumentError, match=r"row 2.*-5"):
        lib.train_step(xs, bad)
    with pytest.raises(gc.ArgumentError, match=r"row 2.*-5"):
        lib.train_step(xs, bad.astype(np.int64))
    assert lib.train_step(xs, ys) == pytest.approx(m.train_step(xs, ys), rel=1e-12)
    np.testing.assert_allclose(lib.get_weights()["d.w"], m.get_weights()["d.w"], rtol=1e-12)
    ort = pytest.importorskip("onnxruntime")
    d = _model((), 5, -100, "xigonnx")
    path = str(tmp_path / "xig.onnx")
    d.to_onnx(path, include_loss=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": xs, "y": ys})
    assert got[-1] == pytest.approx(d.evaluate(xs, ys)["loss"], rel=1e-9)
