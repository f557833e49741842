"""softmax_cross_entropy's torch options: weight= (per-class weights), reduction= ("mean",
"sum", "none"), and ignore_index together with label_smoothing, by torch 2.13's
F.cross_entropy formula; the options are carried by the op (its kernel, the label check, the
exported library and ONNX export), bad ones refused at build time."""

import numpy as np
import pytest

import graphc as gc

WEIGHTS = {5: [0.5, 2.0, 1.0, 0.0, 3.0], 10: list(np.linspace(0.25, 2.5, 10))}


def _reference(zr, ys, k=None, weight=None, reduction="mean", eps=0.0):
    """numpy float64, torch's documented formula (nn.CrossEntropyLoss, LossNLL.cpp's label
    smoothing): row i's term (1 - e) w[y_i] (-log p_i[y_i]) + e / C sum_c w_c (-log p_i[c]),
    0 where y_i == k; "mean" divides the sum by sum_i w[y_i] over the kept rows."""
    c = zr.shape[-1]
    keep = np.ones(len(ys), bool) if k is None else ys != k
    wc = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    ls = zr - zr.max(-1, keepdims=True)
    ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
    y0 = np.where(keep, ys, 0)
    wr = np.where(keep, wc[y0], 0.0)
    per = (1 - eps) * -ls[np.arange(len(ys)), y0] * wr
    per += np.where(keep, eps / c * -(ls * wc).sum(-1), 0.0)
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / wr.sum()


# (lead axes, classes, options, the reduction applied to a "none" loss)
CASES = {
    "weight": ((), 5, {"weight": WEIGHTS[5]}, None),
    "weight_ignore_seq": ((3,), 5, {"weight": WEIGHTS[5], "ignore_index": -100}, None),
    "weight_ignore_sum_wide": (
        (),
        40,
        {"weight": list(np.linspace(0.1, 4.0, 40)), "ignore_index": -1, "reduction": "sum"},
        None,
    ),
    "none_weight_ignore": (
        (),
        5,
        {"weight": WEIGHTS[5], "ignore_index": -100, "reduction": "none"},
        "mean",
    ),
    "smooth_ignore_seq": ((3,), 5, {"ignore_index": -100, "label_smoothing": 0.1}, None),
    "smooth_ignore_sum": (
        (),
        5,
        {"ignore_index": -7, "label_smoothing": 0.2, "reduction": "sum"},
        None,
    ),
    "smooth_weight_ignore_seq": (
        (3,),
        5,
        {"weight": WEIGHTS[5], "ignore_index": -100, "label_smoothing": 0.1},
        None,
    ),
    "smooth_weight_none_wide": (
        (),
        40,
        {"weight": list(np.linspace(0.1, 4.0, 40)), "label_smoothing": 0.3, "reduction": "none"},
        "mean",
    ),
    "smooth_ignore_none_wide": (
        (),
        40,
        {"ignore_index": -100, "label_smoothing": 0.1, "reduction": "none"},
        "sum",
    ),
}


def _model(lead, classes, opts, then, name, dtype="f64"):
    x = gc.input("x", ("N", *lead, 4), dtype=dtype)
    y = gc.input("y", ("N", *lead), dtype="i32")
    z = gc.dense(x, classes, name="d")
    loss = gc.softmax_cross_entropy(z, y, **opts)
    if then is not None:  # a per-row loss reduced for training
        loss = gc.mean(loss) if then == "mean" else gc.sum(loss)
    return gc.compile(z, loss, gc.SGD(lr=1.0), name=name)


def _loss(zr, ys, opts, then):
    red = opts.get("reduction", "mean")
    ref = _reference(
        zr, ys, opts.get("ignore_index"), opts.get("weight"), red, opts.get("label_smoothing", 0.0)
    )
    return ref if then is None else getattr(np, then)(ref)


@pytest.mark.parametrize("case", list(CASES))
def test_options_match_torch_and_the_formula(case):
    """Loss (train_step; evaluate in blocks of 2) vs numpy float64 (1e-12) and torch 2.13's
    F.cross_entropy with the same options where installed (1e-12, its gradient of the dense's
    w too); dL/db vs central differences of the numpy loss (1e-8). 40 classes take the general
    row loop."""
    lead, classes, opts, then = CASES[case]
    rng = np.random.default_rng(11)
    m = _model(lead, classes, opts, then, f"xo_{case}")
    xs = rng.normal(size=(7, *lead, 4))
    ys = rng.integers(0, classes, size=(7, *lead)).astype(np.int32)
    k = opts.get("ignore_index")
    if k is not None:
        ys.reshape(-1)[[0, 3, 4]] = k
    w = m.get_weights()
    zr = (xs @ w["d.w"] + w["d.b"]).reshape(-1, classes)
    flat = ys.reshape(-1)
    want = _loss(zr, flat, opts, then)
    ev = m.evaluate(xs, ys, batch_size=2)
    assert ev["loss"] == pytest.approx(want, rel=1e-12)
    # accuracy over the kept positions, also for a per-row loss reduced by gc.mean / gc.sum
    kept = flat != k if k is not None else np.ones(flat.size, bool)
    assert ev["accuracy"] == pytest.approx(np.mean(zr.argmax(-1)[kept] == flat[kept]), abs=1e-12)
    h, fd = 1e-6, np.zeros(classes)
    for j in range(classes):
        e = np.zeros(classes)
        e[j] = h
        fd[j] = (_loss(zr + e, flat, opts, then) - _loss(zr - e, flat, opts, then)) / (2 * h)
    np.testing.assert_allclose(m.gradients(xs, ys)["d.b"], fd, atol=1e-8)
    assert m.train_step(xs, ys) == pytest.approx(want, rel=1e-12)
    step = w["d.w"] - m.get_weights()["d.w"]
    torch = pytest.importorskip("torch")
    tz = torch.tensor(xs @ w["d.w"] + w["d.b"], requires_grad=True)
    kw = {key: v for key, v in opts.items() if key != "weight"}
    if "weight" in opts:
        kw["weight"] = torch.tensor(opts["weight"], dtype=torch.float64)
    labels = torch.tensor(ys, dtype=torch.long)
    tl = torch.nn.functional.cross_entropy(tz.movedim(-1, 1), labels, **kw)
    tl = tl if then is None else getattr(tl, then)()
    tl.backward()
    assert float(tl.detach()) == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(
        step, xs.reshape(-1, 4).T @ tz.grad.numpy().reshape(-1, classes), atol=1e-12
    )


def test_float32_narrow_rows_weighted_and_per_row():
    """f32 logits of 10 classes (the narrow vector kernel), weights and ignore_index: the
    mean, and the sum of the per-row losses ("none", also label-smoothed), vs numpy float64
    (2e-6) with dL/db; a
    batch whose kept rows all have weight 0 gives loss 0 and leaves the weights as they were
    (torch: NaN)."""
    opts = {"weight": [0.0, *WEIGHTS[10][1:]], "ignore_index": -1}
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(9, 4)).astype(np.float32)
    ys = np.array([1, -1, 3, 9, -1, 0, 2, -1, 7], np.int32)
    smooth = {"reduction": "none", "label_smoothing": 0.2}
    for extra, then in (({}, None), ({"reduction": "none"}, "sum"), (smooth, "sum")):
        m = _model((), 10, {**opts, **extra}, then, "xo32", dtype="f32")
        w = m.get_weights()
        zr = xs.astype(np.float64) @ w["d.w"] + w["d.b"]
        o = {**opts, **extra}
        want = _loss(zr, ys, o, then)
        h, fd = 1e-6, np.zeros(10)
        for j in range(10):
            e = np.zeros(10)
            e[j] = h
            fd[j] = (_loss(zr + e, ys, o, then) - _loss(zr - e, ys, o, then)) / (2 * h)
        np.testing.assert_allclose(m.gradients(xs, ys)["d.b"], fd, atol=2e-6)
        assert m.train_step(xs, ys) == pytest.approx(want, rel=2e-6)
    m = _model((), 10, opts, None, "xo32", dtype="f32")
    before = m.get_weights()
    assert m.train_step(xs[:3], np.array([0, -1, 0], np.int32)) == 0.0
    for key, v in m.get_weights().items():
        np.testing.assert_array_equal(v, before[key])


def _soft_reference(zr, t, weight, reduction, eps):
    """numpy float64: torch's cross_entropy with class-probability targets, row i's term
    -sum_c w_c t'_ic log p_ic with t' = (1 - e) t + e / C; "mean" divides by the rows."""
    c = zr.shape[-1]
    ls = zr - zr.max(-1, keepdims=True)
    ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
    per = -(((1 - eps) * t + eps / c) * np.asarray(weight) * ls).sum(-1)
    return per if reduction == "none" else per.sum() if reduction == "sum" else per.mean()


@pytest.mark.parametrize(
    "lead,opts,then",
    [
        ((), {"reduction": "sum_over_batch_size"}, None),
        ((3,), {"reduction": "sum", "label_smoothing": 0.2}, None),
        ((), {"reduction": "none", "label_smoothing": 0.1}, "mean"),
    ],
    ids=["keras_mean", "seq_sum_smooth", "none_smooth"],
)
def test_categorical_cross_entropy_takes_weight_and_reduction(lead, opts, then):
    """categorical_cross_entropy (soft targets) with weight and reduction: torch's
    cross_entropy with class probabilities ("mean" over the rows, not the weights): loss vs
    numpy float64 1e-12 and torch 2.13, dL/db vs central differences 1e-8."""
    rng = np.random.default_rng(4)
    x = gc.input("x", ("N", *lead, 4), dtype="f64")
    t = gc.input("t", ("N", *lead, 5), dtype="f64")
    z = gc.dense(x, 5, name="d")
    loss = gc.categorical_cross_entropy(z, t, weight=WEIGHTS[5], **opts)
    loss = loss if then is None else gc.mean(loss)
    m = gc.compile(z, loss, gc.SGD(lr=1.0), name="xo_cat")
    xs = rng.normal(size=(6, *lead, 4))
    ts = rng.dirichlet(np.ones(5), size=(6, *lead))
    w = m.get_weights()
    zr = (xs @ w["d.w"] + w["d.b"]).reshape(-1, 5)
    red = {"sum_over_batch_size": "mean"}.get(opts["reduction"], opts["reduction"])
    eps = opts.get("label_smoothing", 0.0)

    def ref(zz):
        got = _soft_reference(zz, ts.reshape(-1, 5), WEIGHTS[5], red, eps)
        return got if then is None else got.mean()

    want = ref(zr)
    h, fd = 1e-6, np.zeros(5)
    for j in range(5):
        e = np.zeros(5)
        e[j] = h
        fd[j] = (ref(zr + e) - ref(zr - e)) / (2 * h)
    np.testing.assert_allclose(m.gradients(xs, ts)["d.b"], fd, atol=1e-8)
    assert m.train_step(xs, ts) == pytest.approx(want, rel=1e-12)
    torch = pytest.importorskip("torch")
    tz = torch.tensor(xs @ w["d.w"] + w["d.b"])
    tl = torch.nn.functional.cross_entropy(
        tz.movedim(-1, 1),
        torch.tensor(ts).movedim(-1, 1),
        weight=torch.tensor(WEIGHTS[5], dtype=torch.float64),
        reduction=red,
        label_smoothing=eps,
    )
    assert float(tl if then is None else tl.mean()) == pytest.approx(want, rel=1e-12)


def test_bad_options_are_refused_naming_the_logits_and_the_length():
    z = gc.dense(gc.input("x", ("N", 4)), 5)
    y = gc.input("y", ("N",), dtype="i32")
    bad = {
        r"weight \(logits %\d+ f32\[N,5\], 5 classes\): has 3 entries": [1.0, 2.0, 3.0],
        r"weight\[1\] = -2.0 must be finite and >= 0": [1, -2, 1, 1, 1],
        r"weight\[4\] = nan must be finite": [1, 1, 1, 1, np.nan],
        r"weight\[0\] = inf": [np.inf, 1, 1, 1, 1],
        "every class weight is 0": np.zeros(5),
    }
    for want, w in bad.items():
        with pytest.raises(gc.ShapeError, match=want):
            gc.softmax_cross_entropy(z, y, weight=w)
    for w in ("abc", [[1, 2, 3, 4, 5]], gc.constant(np.ones(5))):
        with pytest.raises(gc.OptionTypeError, match="weight"):
            gc.softmax_cross_entropy(z, y, weight=w)
    with pytest.raises(gc.OptionTypeError, match=r"reduction must be 'mean', 'sum' or 'none'"):
        gc.softmax_cross_entropy(z, y, reduction="avg")
    # Keras's names: 'sum_over_batch_size' is the mean (without weight), None per row
    assert gc.softmax_cross_entropy(z, y, reduction="sum_over_batch_size").node.attrs == ()
    assert gc.softmax_cross_entropy(z, y, reduction=None).shape == ("N",)
    with pytest.raises(gc.GraphcError, match=r"sum_over_batch_size.*reduction='mean'"):
        gc.softmax_cross_entropy(z, y, reduction="sum_over_batch_size", weight=np.ones(5))
    with pytest.raises(gc.ShapeError, match=r"categorical_cross_entropy: weight .* has 2"):
        gc.categorical_cross_entropy(z, gc.input("t", ("N", 5)), weight=[1, 2])
    # a per-row loss does not train as it is: compile names the fix
    rows = gc.softmax_cross_entropy(z, y, reduction="none")
    with pytest.raises(gc.GraphcError, match=r"loss must be a scalar.*pass gc\.mean\(%\d+\)"):
        gc.compile(z, rows, gc.SGD(lr=0.1))


def test_data_parallel_refusal_names_the_option():
    """Data-parallel fit refuses a sum over rows, naming why; a mean of the per-row losses is
    a row mean; a weighted mean (each rank divides by its own rows' weights) and ignore_index
    are scaled by the kept rows' weights / counts (program.kept_rows, kept_weight; trained
    in tests/test_mpi.py::test_ignore_index_trains_data_parallel_as_one_process)."""
    from graphc.compiler import not_row_mean

    def note(opts, then=None):
        m = _model((), 5, opts, then, "xo_dp" + str(abs(hash(repr(opts))) % 1000))
        return m.program

    p = note({"weight": WEIGHTS[5], "ignore_index": -100})
    why = p.loss_note  # the split entries alone are not data-parallel; fit scales the ranks
    assert why == not_row_mean(p.forward, p.loss) and p.ranks_note == ""
    assert "with weight" in why and "class weights" in why and "loss_scale" in why
    assert p.kept_rows == ("y", -100) and p.kept_weight == tuple(WEIGHTS[5])
    assert "a sum over them" in note({"reduction": "sum"}).ranks_note
    assert note({"reduction": "none"}, "mean").ranks_note == ""
    # ignore_index alone still trains data-parallel (each rank scaled by its kept labels)
    p = note({"ignore_index": -100})
    assert p.ranks_note == "" and p.kept_rows == ("y", -100)


def test_library_and_onnx(tmp_path):
    """The exported library's step equals the model's (weights, ignore_index, sum) and
    refuses a bad label; to_onnx writes SoftmaxCrossEntropyLoss's weight input and reduction:
    ONNX Runtime's loss equals the model's (1e-9)."""
    rng = np.random.default_rng(8)
    xs = rng.normal(size=(6, 4))
    ys = np.array([0, -100, 4, -100, 2, 1], np.int32)
    opts = {"weight": WEIGHTS[5], "ignore_index": -100, "reduction": "sum"}
    m = _model((), 5, opts, None, "xolib")
    lib = gc.load(m.export(str(tmp_path / "libxo.so")).library)
    bad = ys.copy()
    bad[2] = -5
    with pytest.raises(gc.ArgumentError, match=r"row 2.*-5"):
        lib.train_step(xs, bad)
    assert lib.train_step(xs, ys) == pytest.approx(m.train_step(xs, ys), rel=1e-12)
    np.testing.assert_allclose(lib.get_weights()["d.w"], m.get_weights()["d.w"], rtol=1e-12)
    ort = pytest.importorskip("onnxruntime")
    for each in ({**opts, "reduction": "mean"}, opts):
        d = _model((), 5, each, None, "xoonnx")
        path = str(tmp_path / "xo.onnx")
        d.to_onnx(path, include_loss=True)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": xs, "y": ys})
        assert got[-1] == pytest.approx(d.evaluate(xs, ys)["loss"], rel=1e-9)
    d = _model((), 5, {**opts, "label_smoothing": 0.1}, None, "xoonnx")
    with pytest.raises(gc.OnnxError, match="weight and label_smoothing has no ONNX form"):
        d.to_onnx(str(tmp_path / "xs.onnx"), include_loss=True)
    assert not (tmp_path / "xs.onnx").exists()
