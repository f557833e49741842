"""Round 5 of the trust checks: valid programs that were refused or answered wrong.

Sparse softmax cross-entropy on a sequence's tokens (logits [N, T, C], integer labels [N, T]:
Keras's SparseCategoricalCrossentropy after a Dense on [N, T, in], torch's cross_entropy with
the classes moved last): the loss, its gradients, evaluate's accuracy and the run-time label
range check, against numpy float64, torch where installed and ONNX Runtime."""

import numpy as np
import pytest

import graphc as gc


def _seq_model(lead, classes, dtype, name):
    x = gc.input("x", ("N", *lead, 4), dtype=dtype)
    lab = gc.input("lab", ("N", *lead), dtype="i32")
    z = gc.dense(gc.tanh(gc.dense(x, 6, name="h")), classes, name="out")
    return gc.compile(z, gc.softmax_cross_entropy(z, lab), gc.SGD(lr=0.1), name=name)


def _np_seq_xent(m, xs, ys):
    """Loss, dL/d(every param) and the logits of _seq_model in numpy float64."""
    p = {k: np.asarray(v, np.float64) for k, v in m.params.items()}
    h = np.tanh(xs @ p["h.w"] + p["h.b"])
    z = h @ p["out.w"] + p["out.b"]
    e = np.exp(z - z.max(-1, keepdims=True))
    prob = e / e.sum(-1, keepdims=True)
    rows = ys.size
    onehot = np.eye(z.shape[-1])[ys]
    loss = -np.sum(np.log(prob) * onehot) / rows
    dz = (prob - onehot) / rows
    c = z.shape[-1]
    dh = (dz @ p["out.w"].T) * (1 - h**2)
    grads = {
        "out.w": h.reshape(-1, h.shape[-1]).T @ dz.reshape(-1, c),
        "out.b": dz.reshape(-1, c).sum(0),
        "h.w": xs.reshape(-1, xs.shape[-1]).T @ dh.reshape(-1, 6),
        "h.b": dh.reshape(-1, 6).sum(0),
    }
    return loss, grads, z


@pytest.mark.parametrize(
    "lead, classes", [((3,), 5), ((2, 3), 5), ((7,), 40)], ids=["T3_C5", "T2x3_C5", "T7_C40"]
)
def test_sparse_cross_entropy_on_a_sequence_equals_numpy_float64(lead, classes):
    """graphc@a883aa2 refused it ('logits must be 2-D [batch, classes]'). Every position is a
    row: the mean over N * T rows, dz = (softmax - onehot) / (N * T), the bias gradient summed
    over N and T (the fused loss + gradient + column-sum kernel), at 1 and 2 threads."""
    m = _seq_model(lead, classes, "f64", f"seqx_{len(lead)}_{classes}")
    rng = np.random.default_rng(classes + len(lead))
    xs = rng.standard_normal((5, *lead, 4)) * 2.0
    ys = rng.integers(0, classes, (5, *lead)).astype(np.int32)
    loss, grads, z = _np_seq_xent(m, xs, ys)
    for threads in (1, 2):
        m.threads = threads
        got = m.gradients(xs, ys)
        for k, g in grads.items():
            np.testing.assert_allclose(got[k], g, rtol=1e-9, atol=1e-13, err_msg=k)
        ev = m.evaluate(xs, ys)
        np.testing.assert_allclose(ev["loss"], loss, rtol=1e-12)
        assert ev["accuracy"] == np.mean(np.argmax(z, -1) == ys), ev
    w0 = {k: v.copy() for k, v in m.params.items()}
    np.testing.assert_allclose(m.train_step(xs, ys), loss, rtol=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(m.params[k], w0[k] - 0.1 * g, rtol=1e-9, atol=1e-13)


def test_sparse_cross_entropy_on_a_sequence_refuses_a_label_out_of_range_naming_row_and_position(
    tmp_path,
):
    """The label range check stays native (train_step) and in the exported library: a class
    outside 0..C-1 at row 3, position 1 raises before anything is updated; int64 labels are
    range-checked before their cast (2**32 + 1 must not wrap to 1)."""
    m = _seq_model((3,), 5, "f32", "seqx_check")
    rng = np.random.default_rng(11)
    xs = rng.standard_normal((6, 3, 4)).astype(np.float32)
    ys = rng.integers(0, 5, (6, 3)).astype(np.int32)
    w0 = {k: v.copy() for k, v in m.params.items()}
    lib = gc.load(m.export(str(tmp_path / "libseqx.so")).library)
    for bad_value, dtype in ((5, np.int32), (-1, np.int32), (2**32 + 1, np.int64)):
        bad = ys.astype(dtype)
        bad[3, 1] = bad_value
        for who in (m, lib):
            with pytest.raises(gc.ArgumentError, match=r"'lab': row 3, position \[1\], has class"):
                who.train_step(xs, bad)
        for k, v in m.params.items():
            np.testing.assert_array_equal(v, w0[k], err_msg=k)
    # float32 (a narrow vector row per position): the library's step is the model's
    loss, grads, _ = _np_seq_xent(m, xs.astype(np.float64), ys)
    np.testing.assert_allclose(lib.train_step(xs, ys), loss, rtol=1e-5)
    np.testing.assert_allclose(m.train_step(xs, ys), loss, rtol=1e-5)
    for k in m.params:
        np.testing.assert_allclose(lib.params[k], m.params[k], rtol=1e-6, atol=1e-7, err_msg=k)
        np.testing.assert_allclose(
            m.params[k], w0[k] - 0.1 * grads[k], rtol=1e-4, atol=1e-6, err_msg=k
        )


def test_compile_sequential_takes_a_sequences_labels_for_sparse_cross_entropy():
    """compile_sequential(net, (T, F), "softmax_cross_entropy") declared labels i32[N] whatever
    the output (graphc@e6f041e: 'labels must be i32[N,3]' for a Dense on [N, 3, 4]); the
    labels are the output's shape without its classes, i32[N] for [N, C] as before."""
    net = gc.Sequential([gc.Dense(6, "tanh"), gc.Dense(5)], name="seq_net")
    m = gc.compile_sequential(net, (3, 4), "softmax_cross_entropy", gc.SGD(0.1), name="seqnet")
    rng = np.random.default_rng(14)
    xs = rng.standard_normal((4, 3, 4))
    ys = rng.integers(0, 5, (4, 3))
    p = {k: np.asarray(v, np.float64) for k, v in m.params.items()}
    h = np.tanh(xs @ p["seq_net.l0.w"] + p["seq_net.l0.b"])
    z = h @ p["seq_net.l1.w"] + p["seq_net.l1.b"]
    ls = z - z.max(-1, keepdims=True)
    ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
    want = -np.take_along_axis(ls, ys[..., None], -1).mean()
    ev = m.evaluate(xs.astype(np.float32), ys)
    np.testing.assert_allclose(ev["loss"], want, rtol=1e-5)
    assert ev["accuracy"] == np.mean(z.argmax(-1) == ys)
    flat = gc.compile_sequential(gc.Sequential([gc.Dense(5)]), (4,), "softmax_cross_entropy")
    assert flat.program.forward["y"].type.shape == ("N",)


def test_sparse_cross_entropy_on_a_sequence_equals_torch_cross_entropy():
    """torch.nn.functional.cross_entropy takes the classes on axis 1: logits [N, C, T]."""
    torch = pytest.importorskip("torch")
    m = _seq_model((4,), 6, "f64", "seqx_torch")
    rng = np.random.default_rng(12)
    xs = rng.standard_normal((3, 4, 4)) * 3.0
    ys = rng.integers(0, 6, (3, 4)).astype(np.int32)
    p = {
        k: torch.tensor(np.asarray(v, np.float64), requires_grad=True) for k, v in m.params.items()
    }
    h = torch.tanh(torch.tensor(xs) @ p["h.w"] + p["h.b"])
    z = h @ p["out.w"] + p["out.b"]
    loss = torch.nn.functional.cross_entropy(z.permute(0, 2, 1), torch.tensor(ys, dtype=torch.long))
    loss.backward()
    got = m.gradients(xs, ys)
    for k, t in p.items():
        np.testing.assert_allclose(got[k], t.grad.numpy(), rtol=1e-9, atol=1e-13, err_msg=k)
    np.testing.assert_allclose(m.evaluate(xs, ys)["loss"], loss.item(), rtol=1e-12)


def test_sparse_cross_entropy_on_a_sequence_exports_to_onnx_runtime(tmp_path):
    """to_onnx(include_loss=True): ONNX's SoftmaxCrossEntropyLoss reads the classes on axis 1,
    so the sequence's logits are transposed to [N, C, T] in the file."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = _seq_model((3,), 5, "f32", "seqx_onnx")
    rng = np.random.default_rng(13)
    xs = rng.standard_normal((4, 3, 4)).astype(np.float32)
    ys = rng.integers(0, 5, (4, 3)).astype(np.int32)
    path = tmp_path / "seqx.onnx"
    m.to_onnx(str(path), include_loss=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z, loss = sess.run(None, {"x": xs, "lab": ys})
    np.testing.assert_allclose(z, m.predict(xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, m.evaluate(xs, ys)["loss"], rtol=1e-5)


# ---------------------------------------------------------------- matmul of stacks (numpy's)


def _sw(x):
    return np.swapaxes(x, -1, -2)


@pytest.mark.parametrize(
    "sa, sb, ta, tb",
    [
        ((4, 3), (4, 2), True, False),
        ((4, 3), (5, 3), False, True),
        ((3, 4), (5, 3), True, True),
        ((2, 4, 3), (1, 3, 5), False, False),
        ((4, 3), (4, 5), True, None),
    ],
    ids=["AtB", "ABt", "AtBt", "broadcast", "At_matrix"],
)
def test_matmul_of_stacks_is_numpys_product_per_position(sa, sb, ta, tb):
    """gc.matmul(a [N, 4, 3], b [N, 4, 2], transpose_a=True) was the matmul op's internal
    'A^T B summed over all rows' form on graphc@a883aa2: f64[3, 2], the sum over the batch
    of what numpy's np.swapaxes(a, -1, -2) @ b gives per sample [N, 3, 2], silently; other
    forms of two stacks (q @ k^T) were refused. ``tb`` None: b is a 2-D param [4, 5]."""
    x = gc.input("x", ("N", *sa), dtype="f64")
    s = gc.param("s", (1,), dtype="f64", init="ones")
    b = gc.param("b", sb, dtype="f64") if tb is None else gc.input("y", ("N", *sb), dtype="f64")
    c = gc.matmul(x * s, b, transpose_a=ta, transpose_b=bool(tb))
    m = gc.compile(c, gc.mean(gc.square(c)), gc.SGD(lr=0.0), name="stack_mm")
    rng = np.random.default_rng(len(sa) + 3 * bool(tb))
    xv = rng.standard_normal((3, *sa))
    bv = m.params["b"] if tb is None else rng.standard_normal((3, *sb))
    want = (_sw(xv) if ta else xv) @ (_sw(bv) if tb else bv)
    feeds = {"x": xv} if tb is None else {"x": xv, "y": bv}
    got = m.predict(feeds)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    g = m.gradients(feeds)  # dL/ds = sum(dC * C) / s with L = mean(C^2), C linear in s
    np.testing.assert_allclose(g["s"], [2 * np.mean(want**2)], rtol=1e-12)
    if tb is None:
        db = xv @ (2 * want / want.size)  # op(x)^T dC per sample, summed over the batch
        np.testing.assert_allclose(g["b"], db.sum(0), rtol=1e-10, atol=1e-14)


def test_matmul_of_a_stack_by_a_number_is_refused_naming_the_operand():
    """3ae173a's fix let gc.matmul(x [N, 3, 4], 3) reach batched_matmul, which raised
    AttributeError ('int' object has no attribute 'type')."""
    x = gc.input("x", ("N", 3, 4))
    for a, b in ((x, 3), (3, x), (x, None)):
        with pytest.raises(gc.ArgumentError, match="must be a graphc Tensor"):
            gc.matmul(a, b)


def _np_attention(p, xs):
    q, k, v = (xs @ p[f"{n}.w"] + p[f"{n}.b"] for n in "qkv")
    s = q @ _sw(k) / np.sqrt(q.shape[-1])
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def test_self_attention_written_in_the_dsl_equals_numpy_and_onnx_runtime(tmp_path):
    """softmax(q @ k^T / sqrt(d)) @ v on x [N, T, C] (torch's and Keras's scaled dot-product
    attention written out): refused on graphc@a883aa2 (q @ k^T of two stacks). Forward vs
    numpy float64, dL/dWq vs central differences of numpy's forward, to_onnx vs ORT."""
    x = gc.input("x", ("N", 5, 4), dtype="f64")
    q, k, v = (gc.dense(x, 3, name=n) for n in "qkv")
    att = gc.softmax(gc.matmul(q, k, transpose_b=True) * (1 / np.sqrt(3))) @ v
    y = gc.mean(att, 2)
    m = gc.compile(y, gc.mean(gc.square(y)), gc.SGD(lr=0.0), name="dsl_attention")
    xs = np.random.default_rng(21).standard_normal((2, 5, 4))
    p = {k_: np.asarray(v_, np.float64) for k_, v_ in m.params.items()}
    np.testing.assert_allclose(m.predict(xs), _np_attention(p, xs).mean(2), rtol=1e-12)
    g = m.gradients(xs)["q.w"]
    for idx in [(0, 0), (3, 2), (1, 1)]:
        vals = []
        for sgn in (1.0, -1.0):
            p2 = dict(p)
            p2["q.w"] = p["q.w"].copy()
            p2["q.w"][idx] += sgn * 1e-6
            vals.append(np.mean(_np_attention(p2, xs).mean(2) ** 2))
        assert abs((vals[0] - vals[1]) / 2e-6 - g[idx]) < 1e-7, (idx, g[idx])
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "att.onnx"
    m.to_onnx(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": xs})[0], m.predict(xs), rtol=1e-12)


# ---------------------------------------------------------------- transpose of rank > 2


def test_transpose_with_a_permutation_is_numpys_and_trains():
    """gc.transpose(x, perm) as np.transpose / torch's permute (x.transpose(1, 2) of a
    [N, T, C] sequence before a channels-first conv): graphc@a883aa2's transpose took 2-D
    operands only ('takes 1 tensor(s) and the keywords none'). Every permutation of
    [N, 2, 3, 4] keeping N, negative axes; dL/dW through a transposed dense vs numpy."""
    x = gc.input("x", ("N", 2, 3, 4), dtype="f64")
    perms = [(0, 3, 1, 2), (0, 2, 1, 3), (0, 2, 3, 1), (0, 3, 2, 1), (0, 1, 3, 2), (0, -1, -3, -2)]
    m = gc.compile([gc.transpose(x, p) for p in perms], None, name="perms")
    xv = np.random.default_rng(31).standard_normal((3, 2, 3, 4))
    for got, p in zip(m.predict(xv).values(), perms, strict=True):
        np.testing.assert_array_equal(got, np.transpose(xv, [a % 4 for a in p]))
    with pytest.raises(gc.ShapeError, match="moves the batch dimension N"):
        gc.transpose(x)  # numpy's default reverses every axis, N included
    with pytest.raises(gc.ShapeError, match="not a permutation"):
        gc.transpose(x, (0, 1, 1, 2))

    s = gc.input("s", ("N", 5, 4), dtype="f64")
    y = gc.transpose(gc.dense(s, 3, name="d"), (0, 2, 1))  # [N, 3, 5]
    c = np.arange(15.0).reshape(3, 5) / 7.0 - 1.0  # weights that tell the axes apart
    loss = gc.mean(gc.square(y * gc.constant(c, dtype="f64")))
    mt = gc.compile(y, loss, gc.SGD(lr=0.0), name="perm_dense")
    sv = np.random.default_rng(32).standard_normal((2, 5, 4))
    w, b = mt.params["d.w"], mt.params["d.b"]
    yv = (sv @ w + b).transpose(0, 2, 1)
    np.testing.assert_allclose(mt.predict(sv), yv, rtol=1e-12)
    dz = (2 * yv * c**2 / yv.size).transpose(0, 2, 1)
    g = mt.gradients(sv)
    np.testing.assert_allclose(g["d.w"], np.einsum("ntc,ntu->cu", sv, dz), rtol=1e-10)
    np.testing.assert_allclose(g["d.b"], dz.sum((0, 1)), rtol=1e-10)


# ---------------------------------------------------------------- Python operators


KEYS = [
    (slice(None), -1),  # an LSTM's last step of out [N, T, H]
    (Ellipsis, slice(None, 3)),
    (slice(None), None, 1, slice(1, 3)),
    (Ellipsis, slice(3, 0, -1)),
    (slice(None), slice(-2, None), slice(None, None, -1)),
]


@pytest.mark.parametrize("key", KEYS, ids=["last", "ellipsis", "newaxis_int", "reversed", "neg"])
def test_indexing_a_tensor_is_numpys_basic_indexing_with_its_gradient(key):
    """x[:, -1], x[..., :3], x[:, None, 1, 1:3], x[..., 3:0:-1]: numpy's basic indexing (torch's
    too); graphc@a883aa2's Tensor had no __getitem__ ('Tensor' object is not subscriptable),
    and iterating one walked nothing useful. Forward exact, dL/dp vs numpy's scatter of the
    loss's gradient."""
    x = gc.input("x", ("N", 3, 4), dtype="f64")
    p = gc.param("p", (3, 4), dtype="f64")
    y = (x * p)[key]
    m = gc.compile(y, gc.mean(gc.square(y)), gc.SGD(lr=0.0), name="index")
    xv = np.random.default_rng(41).standard_normal((2, 3, 4))
    xp = xv * m.params["p"]
    np.testing.assert_array_equal(m.predict(xv), xp[key])
    g = np.zeros_like(xp)
    g[key] += 2 * xp[key] / xp[key].size
    np.testing.assert_allclose(m.gradients(xv)["p"], (g * xv).sum(0), rtol=1e-12, atol=1e-15)


def test_power_abs_and_iteration_operators():
    """(y - t) ** 2, 2.0 ** x and abs(x) (numpy / torch operators; TypeError on graphc@a883aa2:
    unsupported operand type(s) for **), against numpy float64; a tensor exponent, a base <= 0
    and iteration are refused clearly, and an index of N other than ':' is refused."""
    x = gc.input("x", ("N", 4), dtype="f64")
    t = gc.input("t", ("N", 4), dtype="f64")
    y = gc.dense(x, 4, name="pw")
    m = gc.compile([y, 2.0**x, abs(x)], gc.mean((y - t) ** 2), gc.SGD(lr=0.0), name="pow_ops")
    rng = np.random.default_rng(42)
    xv, tv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    yv, e2, ab = m.predict({"x": xv}).values()
    np.testing.assert_allclose(e2, 2.0**xv, rtol=1e-15)
    np.testing.assert_array_equal(ab, np.abs(xv))
    np.testing.assert_allclose(m.evaluate({"x": xv, "t": tv})["loss"], np.mean((yv - tv) ** 2))
    with pytest.raises(gc.ArgumentError, match="takes a number as the exponent"):
        x**t
    with pytest.raises(gc.ArgumentError, match="takes a number as the exponent"):
        gc.pow(x, t)  # a TypeError from float() before
    with pytest.raises(gc.ArgumentError, match="must be a number"):
        gc.pow(x, "2")
    with pytest.raises(gc.ArgumentError, match="a number > 0"):
        (-2.0) ** x
    with pytest.raises(TypeError, match="not iterable"):
        list(x)
    with pytest.raises(gc.ShapeError, match="batch dimension N"):
        x[0]


def test_softmax_and_log_softmax_take_the_axis_positionally():
    """torch's F.softmax(x, 1) / Keras's ops.softmax(x, -1) pass the axis positionally; graphc
    took it by keyword only (TypeError: softmax() takes 1 positional argument but 2 were
    given). Values vs numpy float64; a name given where the axis goes is refused naming it."""
    x = gc.input("x", ("N", 3, 4), dtype="f64")
    m = gc.compile([gc.softmax(x, 1), gc.log_softmax(x, -2)], None, name="sm_pos")
    xv = np.random.default_rng(51).standard_normal((2, 3, 4)) * 30.0
    e = np.exp(xv - xv.max(1, keepdims=True))
    sm, lsm = m.predict(xv).values()
    np.testing.assert_allclose(sm, e / e.sum(1, keepdims=True), rtol=1e-12, atol=1e-300)
    ref = xv - xv.max(1, keepdims=True) - np.log(e.sum(1, keepdims=True))
    np.testing.assert_allclose(lsm, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(gc.ShapeError, match="axis 'probs' is not an axis"):
        gc.softmax(x, "probs")


# ---------------------------------------------------------------- layer_norm over several axes


def _ln_numpy(xv, axes, g, b, eps=1e-5):
    mu = xv.mean(axes, keepdims=True)
    var = ((xv - mu) ** 2).mean(axes, keepdims=True)
    return (xv - mu) / np.sqrt(var + eps) * g + b


@pytest.mark.parametrize(
    "axes, spread", [((-2, -1), (3, 4)), (1, (3, 1))], ids=["torch_T_C", "keras_axis1"]
)
def test_layer_norm_over_several_axes_equals_torch_and_numpy(axes, spread):
    """torch's nn.LayerNorm((T, C)) and Keras's LayerNormalization(axis=1) of x [N, T, C]:
    graphc@058db0d normalized the last axis only (no way to ask for others). Gamma and beta
    of the axes' shape; forward vs numpy float64 (1e-12), the gradients of gamma, beta and
    the dense before it vs torch 2.13 autograd (1e-10) where installed, and torch's own
    LayerNorm((3, 4)) module."""
    x = gc.input("x", ("N", 3, 4), dtype="f64")
    h = gc.dense(x, 4, name="pre")
    y = gc.layer_norm(h, axes=axes, name="ln")
    t = np.linspace(-1, 1, 12).reshape(3, 4)
    m = gc.compile(y, gc.mean(gc.square(y - gc.constant(t, dtype="f64"))), gc.SGD(0.0), name="ln")
    assert m.params["ln.gamma"].shape == tuple(d for d in spread if d != 1)
    rng = np.random.default_rng(61)
    m.set_weights({"ln.gamma": 1 + rng.random(m.params["ln.gamma"].shape)})
    xv = rng.standard_normal((2, 3, 4))
    p = {k: np.asarray(v, np.float64) for k, v in m.params.items()}
    over = tuple(a % 3 for a in np.atleast_1d(axes))
    hv = xv @ p["pre.w"] + p["pre.b"]
    want = _ln_numpy(hv, over, p["ln.gamma"].reshape(spread), p["ln.beta"].reshape(spread))
    np.testing.assert_allclose(m.predict(xv), want, rtol=1e-12, atol=1e-12)
    got = m.gradients(xv)
    torch = pytest.importorskip("torch")
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    th = torch.tensor(xv) @ tp["pre.w"] + tp["pre.b"]
    mu = th.mean(over, keepdim=True)
    var = ((th - mu) ** 2).mean(over, keepdim=True)
    g, b = tp["ln.gamma"].reshape(spread), tp["ln.beta"].reshape(spread)
    ty = (th - mu) / torch.sqrt(var + 1e-5) * g + b
    ((ty - torch.tensor(t)) ** 2).mean().backward()
    assert sorted(got) == ["ln.beta", "ln.gamma", "pre.b", "pre.w"], sorted(got)
    for k in got:
        np.testing.assert_allclose(got[k], tp[k].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)
    if axes == (-2, -1):  # torch's own module, weights copied in
        ln = torch.nn.LayerNorm((3, 4)).double()
        with torch.no_grad():
            ln.weight.copy_(torch.tensor(p["ln.gamma"]))
        np.testing.assert_allclose(
            m.predict(xv), ln(torch.tensor(hv)).detach().numpy(), rtol=1e-12, atol=1e-12
        )


# ---------------------------------------------------------------- embedding


def test_embedding_equals_numpys_rows_and_scatter_add_gradient(tmp_path):
    """gc.embedding / gc.Embedding (Keras's Embedding, torch's nn.Embedding): graphc@f666b17
    had no lookup in the DSL (only an ONNX import's Gather). Float64 table, repeated ids:
    forward = table[ids] exactly, dL/dtable = numpy's np.add.at scatter of dL/de (1e-12),
    the loss vs torch's F.embedding + cross_entropy where installed; an id outside
    0..vocab-1 (vocab, -1) refused by predict, train_step and the exported library, naming
    the input, the row and the embedding, nothing updated."""
    ids = gc.input("ids", ("N", 5), dtype="i32")
    lab = gc.input("lab", ("N",), dtype="i32")
    e = gc.embedding(ids, 7, 3, name="emb", dtype="f64")
    w = gc.param("w", (3, 4), dtype="f64")
    z = gc.mean(e, 1) @ w
    m = gc.compile([e, z], gc.softmax_cross_entropy(z, lab), gc.SGD(lr=0.5), name="emb_m")
    rng = np.random.default_rng(71)
    iv = np.array([[0, 1, 1, 6, 3], [2, 2, 2, 0, 6], [5, 4, 3, 2, 1]], np.int32)
    lv = rng.integers(0, 4, 3).astype(np.int32)
    table, wv = m.params["emb.table"].copy(), m.params["w"].copy()
    ev, zv = m.predict(iv).values()
    np.testing.assert_array_equal(ev, table[iv])
    zr = table[iv].mean(1) @ wv
    np.testing.assert_allclose(zv, zr, rtol=1e-12)
    p = np.exp(zr - zr.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(4)[lv]) / 3
    de = np.repeat(((dz @ wv.T) / 5)[:, None, :], 5, axis=1)
    dtable = np.zeros_like(table)
    np.add.at(dtable, iv, de)
    np.testing.assert_allclose(m.gradients(iv, lv)["emb.table"], dtable, rtol=1e-12, atol=1e-15)
    lib = gc.load(m.export(str(tmp_path / "libemb.so")).library)
    for bad_value in (7, -1):
        bad = iv.copy()
        bad[1, 3] = bad_value
        for call in (
            lambda: m.predict(bad),
            lambda: m.train_step(bad, lv),
            lambda: lib.predict(bad),
        ):
            with pytest.raises(gc.ArgumentError, match=r"'ids': row 1 holds .*embedding emb"):
                call()
    np.testing.assert_array_equal(m.params["emb.table"], table)
    torch = pytest.importorskip("torch")
    tt = torch.tensor(table)
    tz = torch.nn.functional.embedding(torch.tensor(iv, dtype=torch.long), tt).mean(
        1
    ) @ torch.tensor(wv)
    want = torch.nn.functional.cross_entropy(tz, torch.tensor(lv, dtype=torch.long)).item()
    np.testing.assert_allclose(m.train_step(iv, lv), want, rtol=1e-12)


def test_embedding_layer_in_a_sequential_and_its_refusals():
    """Embedding first in a Sequential compiled by compile_sequential (its input x is float32:
    whole numbers checked, 1.5 refused); computed ids (which no entry could check) refused."""
    net = gc.Sequential([gc.Embedding(6, 2, name="E"), gc.Flatten(), gc.Dense(3)], name="embnet")
    m = gc.compile_sequential(net, (4,), "softmax_cross_entropy", gc.Adam(0.01), name="embseq")
    xv = np.array([[0, 5, 5, 1], [2, 3, 4, 0]], np.float32)
    t = m.params["E.table"]
    flat = t[xv.astype(int)].reshape(2, -1)
    np.testing.assert_allclose(
        m.predict(xv), flat @ m.params["embnet.l2.w"] + m.params["embnet.l2.b"], rtol=1e-6
    )
    with pytest.raises(gc.ArgumentError, match=r"holds 1\.5"):
        m.predict(xv + 0.5 * (xv == 1))
    x = gc.input("x", ("N", 3), dtype="i32")
    with pytest.raises(gc.ShapeError, match="ids must be a graph input"):
        gc.embedding(gc.cast(x, dtype="f32") + 1.0, 5, 2)


def test_comparison_operators_are_masks_and_a_tensor_has_no_truth_value():
    """x > 0, 0.5 <= x, x < -1, x >= y: gc.greater & co. (TypeError "'>' not supported" on
    graphc@f7790f2); ``if x > 0:`` was silently always true (a Tensor object is truthy): now a
    TypeError, as TensorFlow's graph tensors and JAX's tracers. == stays identity (hashing)."""
    x = gc.input("x", ("N", 4), dtype="f64")
    y = gc.where(x > 0, x, 0.1 * x) + (0.5 <= x)  # noqa: SIM300 (the reflected operator)
    p = gc.param("p", (4,), dtype="f64")
    z = gc.where(x * p > 0, x * p, 0.1 * x * p) + (x >= 0.5) - (x < -1.0) * 2.0 + (x >= x * 0.5)
    m = gc.compile(z, gc.sum(z), gc.SGD(lr=0.0), name="cmp_ops")
    xv = np.array([[-2.0, -0.5, 0.0, 0.7], [3.0, -1.0, 1.0, 0.5]])
    pv = m.params["p"]
    h = xv * pv
    want = np.where(h > 0, h, 0.1 * h) + (xv >= 0.5) - (xv < -1.0) * 2.0 + (xv >= xv * 0.5)
    np.testing.assert_allclose(m.predict(xv), want, rtol=1e-15)
    np.testing.assert_allclose(m.gradients(xv)["p"], (np.where(h > 0, 1, 0.1) * xv).sum(0))
    reflected = gc.compile(y, None, name="cmp_reflected").predict(xv)
    np.testing.assert_array_equal(reflected, np.where(xv > 0, xv, 0.1 * xv) + (xv >= 0.5))
    for truth in (lambda: bool(x > 0), lambda: (x > 0) and x, lambda: not x):
        with pytest.raises(TypeError, match="truth value of a graphc Tensor"):
            truth()
    assert x == x and x != y and len({x, x, y}) == 2
