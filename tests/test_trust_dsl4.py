"""Round 4 of the DSL's trust checks: a BatchNorm layer object called twice (its running
statistics updated once per call, in order, as torch's BatchNorm1d) and two unnamed
Sequentials in one graph (distinct default names, the first one's unchanged)."""

import numpy as np
import pytest

import graphc as gc


def _bn_twice(momentum):
    x = gc.input("x", ("N", 3))
    t = gc.input("t", ("N", 3))
    bn = gc.BatchNorm(momentum=momentum, name="bn")
    y = bn(gc.tanh(bn(x)) * 2.0 + 1.0)
    return gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(lr=0.1), name="bn_twice")


def _np_bn(x, g, b, eps=1e-5):
    mu, var = x.mean(axis=0), x.var(axis=0)
    return (x - mu) / np.sqrt(var + eps) * g + b, mu, x.var(axis=0, ddof=1)


def test_a_batch_norm_object_called_twice_updates_its_statistics_once_per_call_in_order(
    tmp_path,
):
    """graphc@7d32873 refused the second call; torch's module called twice updates its
    buffers twice: rm = (1-m)((1-m) rm + m mu1) + m mu2 (numpy float64 here)."""
    m, mom = _bn_twice(0.3), 0.3
    assert sorted(m.params) == ["bn.beta", "bn.gamma"], list(m.params)
    rng = np.random.default_rng(5)
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(3):
        xv = (rng.standard_normal((8, 3)) * [1, 2, 3] + [0, 1, -1]).astype(np.float32)
        tv = rng.standard_normal((8, 3)).astype(np.float32)
        g = m.params["bn.gamma"].astype(np.float64)
        b = m.params["bn.beta"].astype(np.float64)
        h, mu1, v1 = _np_bn(xv.astype(np.float64), g, b)
        y, mu2, v2 = _np_bn(np.tanh(h) * 2.0 + 1.0, g, b)
        loss = m.train_step(xv, tv)
        np.testing.assert_allclose(loss, np.mean((y - tv) ** 2), rtol=1e-5)
        rm = (1 - mom) * ((1 - mom) * rm + mom * mu1) + mom * mu2
        rv = (1 - mom) * ((1 - mom) * rv + mom * v1) + mom * v2
        np.testing.assert_allclose(m.state["bn.running_mean"], rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.state["bn.running_var"], rv, rtol=1e-5, atol=1e-6)
    xv = rng.standard_normal((4, 3)).astype(np.float32)
    g, b = m.params["bn.gamma"].astype(np.float64), m.params["bn.beta"].astype(np.float64)
    h = (xv - rm) / np.sqrt(rv + 1e-5) * g + b
    want = (np.tanh(h) * 2.0 + 1.0 - rm) / np.sqrt(rv + 1e-5) * g + b
    np.testing.assert_allclose(m.predict(xv), want, rtol=1e-5, atol=1e-5)
    lib = gc.load(m.export(str(tmp_path / "libbn2.so")).library)
    np.testing.assert_allclose(lib.predict(xv), want, rtol=1e-5, atol=1e-5)


def test_a_batch_norm_object_called_twice_trains_as_torch_batchnorm1d_called_twice():
    torch = pytest.importorskip("torch")
    m = _bn_twice(0.1)
    ref = torch.nn.BatchNorm1d(3, momentum=0.1).double()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    rng = np.random.default_rng(6)
    for _ in range(4):
        xv = (rng.standard_normal((6, 3)) * [2, 1, 3] + [1, 0, -2]).astype(np.float32)
        tv = rng.standard_normal((6, 3)).astype(np.float32)
        opt.zero_grad()
        y = ref(torch.tanh(ref(torch.tensor(xv, dtype=torch.float64))) * 2.0 + 1.0)
        want = torch.mean((y - torch.tensor(tv, dtype=torch.float64)) ** 2)
        want.backward()
        opt.step()
        np.testing.assert_allclose(m.train_step(xv, tv), want.item(), rtol=1e-5)
    np.testing.assert_allclose(m.params["bn.gamma"], ref.weight.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(m.params["bn.beta"], ref.bias.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(m.state["bn.running_mean"], ref.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(m.state["bn.running_var"], ref.running_var.numpy(), rtol=1e-5)


def _two_unnamed(tag):
    x = gc.input("x", ("N", 4))
    s1 = gc.Sequential([gc.Dense(5, "tanh"), gc.Dense(3)])
    s2 = gc.Sequential([gc.Dense(3, "relu")])
    s3 = gc.Sequential([gc.Dense(2)])  # on s1's output: its input comes from x too
    h = s1(x)
    out = [h, s3(h), s2(x)]
    t = gc.input("t", ("N", 2))
    return gc.compile(out, gc.mean_squared_error(out[1], t), gc.Adam(0.01), name=tag)


def _np_two(p, x):
    h1 = np.tanh(x @ p["model.l0.w"] + p["model.l0.b"]) @ p["model.l1.w"] + p["model.l1.b"]
    h3 = h1 @ p["model_1.l0.w"] + p["model_1.l0.b"]  # s3 is called before s2
    h2 = np.maximum(x @ p["model_2.l0.w"] + p["model_2.l0.b"], 0.0)
    return [h1, h3, h2]


def _vals(got):
    return list(got.values()) if isinstance(got, dict) else list(got)


def _onnx_equal(m, path, feeds, want, rtol, atol):
    """ONNX Runtime on ``m.to_onnx(path)`` gives ``want`` (skips without onnx / ORT)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    for got, w in zip(ort.InferenceSession(m.to_onnx(str(path))).run(None, feeds), want):
        np.testing.assert_allclose(got, w, rtol=rtol, atol=atol)


def test_unnamed_sequentials_of_one_graph_get_distinct_names_and_round_trip(tmp_path):
    """graphc@7d32873: 'two different tensors are named model.l0.w'. Now Keras's numbering
    (model, model_1, model_2 in call order) within the graph; a program's first unnamed
    Sequential keeps "model", so a checkpoint loads into the same program rebuilt in this
    process. predict, the checkpoint, the exported library and ONNX (ORT) against numpy."""
    m = _two_unnamed("seq_two")
    assert sorted({k.split(".")[0] for k in m.params}) == ["model", "model_1", "model_2"]
    rng = np.random.default_rng(7)
    xv = rng.standard_normal((6, 4)).astype(np.float32)
    m.train_step(xv, rng.standard_normal((6, 2)).astype(np.float32))
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    want = _np_two(p, xv.astype(np.float64))
    for got, w in zip(_vals(m.predict(xv)), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    path = m.save(str(tmp_path / "two.ckpt"))
    m2 = _two_unnamed("seq_two_again")  # the same program, built again in this process
    assert sorted(m2.params) == sorted(m.params)
    m2.load(path)
    for got, w in zip(_vals(m2.predict(xv)), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    lib = gc.load(m.export(str(tmp_path / "libtwo.so")).library)
    for got, w in zip(_vals(lib.predict(xv)), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    _onnx_equal(m, tmp_path / "two.onnx", {"x": xv}, want, 1e-5, 1e-6)


def test_one_unnamed_sequential_keeps_its_names_and_a_named_one_is_left_alone():
    x = gc.input("x", ("N", 4))
    s = gc.Sequential([gc.Dense(3), gc.Dense(2)])
    assert [d.name for d in s.layers] == ["model.l0", "model.l1"]  # before its first call
    named = gc.Sequential([gc.Dense(3)], name="model")  # the user's own "model": not renamed
    m = gc.compile([s(x)], None, name="seq_one")
    assert sorted(m.params) == ["model.l0.b", "model.l0.w", "model.l1.b", "model.l1.w"]
    s(gc.input("x2", ("N", 4)))  # a second call keeps its name (shared weights)
    assert s.name == "model" and named.name == "model"


def test_a_reshape_whose_minus_one_holds_the_batch_keeps_the_batch(tmp_path):
    """torch's x.view(-1, 6) (LeNet's flatten) on x [N, 2, 3]: graphc@7d32873 took the -1 as
    6 / 6 = 1 and failed "cannot reshape f32[N,2,3] to f32[1,6]". The -1 is now N when the
    given sizes take a row's elements; the model, its gradient and ONNX Runtime agree with
    numpy float64. N times more (x.view(-1) of [N, 6]) is refused naming the shapes."""
    x = gc.input("x", ("N", 2, 3))
    a = gc.reshape(x, (-1, 6))
    b = gc.reshape(gc.reshape(x, (-1, 1, 2, 3)), (-1, 3, 2))  # size-1 axis in between
    w = gc.param("rw", (6, 1))
    out = gc.reshape(a @ w, (-1,))
    t = gc.input("t", ("N",))
    m = gc.compile([a, b, out], gc.mean_squared_error(out, t), gc.SGD(0.1), name="rs_batch")
    xs = np.random.default_rng(8).standard_normal((5, 2, 3)).astype(np.float32)
    ts = np.ones(5, np.float32)
    wv = m.params["rw"].astype(np.float64)
    x64 = xs.astype(np.float64)
    want = [x64.reshape(-1, 6), x64.reshape(-1, 3, 2), (x64.reshape(-1, 6) @ wv).reshape(-1)]
    for got, w_ in zip(_vals(m.predict(xs)), want):
        np.testing.assert_allclose(got, w_, rtol=1e-6, atol=1e-6)
    g = m.gradients(xs, ts)["rw"]
    np.testing.assert_allclose(g, 2 * x64.reshape(-1, 6).T @ (want[2] - 1)[:, None] / 5, 1e-5)
    with pytest.raises(gc.ShapeError, match=r"the -1 would be N \* 6.*keep 'N'"):
        gc.reshape(a, (-1,))
    _onnx_equal(m, tmp_path / "rs.onnx", {"x": xs[:2]}, [w_[:2] for w_ in want], 1e-6, 1e-6)


def test_dense_on_an_input_of_rank_three_or_more_acts_on_its_last_axis(tmp_path):
    """Keras's Dense and torch's Linear apply W at every position of x [N, ..., in]
    (a Dense after an LSTM with return_sequences); graphc@7d32873 refused it ("expects a 2-D
    input"). Forward, the weight gradient (numpy float64: dL/dW = sum over rows and
    positions of x^T dY), a layer object in a Sequential after an LSTM, the exported library
    and ONNX Runtime; an input with no N (one flattened product) too."""
    x = gc.input("x", ("N", 2, 3, 4), dtype="f64")
    t = gc.input("t", ("N", 2, 3, 5), dtype="f64")
    y = gc.dense(x, 5, "tanh", name="nd")
    m = gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(0.1), name="nd_dense")
    rng = np.random.default_rng(9)
    xs, ts = rng.standard_normal((3, 2, 3, 4)), rng.standard_normal((3, 2, 3, 5))
    w, b = m.params["nd.w"], m.params["nd.b"]
    want = np.tanh(xs @ w + b)
    np.testing.assert_allclose(m.predict(xs), want, rtol=1e-12, atol=1e-12)
    dy = 2 * (want - ts) / want.size * (1 - want**2)
    g = m.gradients(xs, ts)
    np.testing.assert_allclose(g["nd.w"], xs.reshape(-1, 4).T @ dy.reshape(-1, 5), rtol=1e-10)
    np.testing.assert_allclose(g["nd.b"], dy.reshape(-1, 5).sum(0), rtol=1e-10, atol=1e-14)

    s = gc.input("s", ("N", 6, 3))
    seq = gc.Sequential([gc.LSTM(4, return_sequences=True), gc.Dense(2)], name="seqd")
    ms = gc.compile(seq(s), None, name="nd_seq")
    ss = rng.standard_normal((5, 6, 3)).astype(np.float32)
    got = ms.predict(ss)
    assert got.shape == (5, 6, 2)
    lib = gc.load(ms.export(str(tmp_path / "libnd.so")).library)
    np.testing.assert_allclose(lib.predict(ss), got, rtol=1e-6, atol=1e-6)

    f = gc.input("f", (4, 3, 2), dtype="f64")  # no batch axis: one product
    mf = gc.compile(gc.dense(f, 3, name="ndf"), None, name="nd_fixed")
    fs = rng.standard_normal((4, 3, 2))
    np.testing.assert_allclose(
        mf.predict(fs), fs @ mf.params["ndf.w"] + mf.params["ndf.b"], rtol=1e-12, atol=1e-12
    )
    _onnx_equal(ms, tmp_path / "nd.onnx", {"s": ss}, [got], 1e-5, 1e-6)


def _np_softmax(z, axis, log=False):
    d = z - z.max(axis=axis, keepdims=True)
    s = np.exp(d).sum(axis=axis, keepdims=True)
    return d - np.log(s) if log else np.exp(d) / s


def test_softmax_and_log_softmax_of_rank_three_over_any_axis(tmp_path):
    """Keras's softmax(x, axis=-1) and torch's softmax(x, dim) of x [N, T, C] (a Dense with
    activation "softmax" on a sequence, attention weights): graphc@7d32873 refused every
    rank but 2. Values vs numpy float64 (1e-12, a logit of 300 included), the weight
    gradient vs central differences, ONNX Runtime on to_onnx; over the batch axis."""
    x = gc.input("x", ("N", 3, 4), dtype="f64")
    w = gc.param("smw", (3, 4), dtype="f64")
    z = x * w
    outs = [gc.softmax(z), gc.log_softmax(z, axis=1), gc.dense(x, 2, "softmax", name="smd")]
    loss = gc.sum(outs[0] * outs[1])
    m = gc.compile(outs, loss, gc.SGD(0.0), name="sm_nd")
    rng = np.random.default_rng(10)
    xs = rng.standard_normal((2, 3, 4)) * 4
    xs[0, 0, 0] = 300.0
    wv = m.params["smw"].astype(np.float64)
    dw, db = m.params["smd.w"], m.params["smd.b"]

    def forward(w_):
        return [_np_softmax(xs * w_, -1), _np_softmax(xs * w_, 1, log=True)]

    want = [*forward(wv), _np_softmax(xs @ dw + db, -1)]
    for got, w_ in zip(_vals(m.predict(xs)), want):
        np.testing.assert_allclose(got, w_, rtol=1e-12, atol=1e-12)
    g = m.gradients(xs)["smw"]
    num = np.zeros_like(wv)
    for idx in np.ndindex(*wv.shape):
        for sign in (1.0, -1.0):
            w2 = wv.copy()
            w2[idx] += sign * 1e-6
            a, b = forward(w2)
            num[idx] += sign * np.sum(a * b) / 2e-6
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)
    x2 = gc.input("x", ("N", 3), dtype="f64")  # over the batch axis: across the samples
    mb = gc.compile(gc.softmax(x2, axis=0), None, name="sm_batch")
    np.testing.assert_allclose(mb.predict(xs[:, :, 0]), _np_softmax(xs[:, :, 0], 0), rtol=1e-12)
    with pytest.raises(gc.ShapeError, match="is not an axis of"):
        gc.softmax(x, axis=3)
    _onnx_equal(m, tmp_path / "sm.onnx", {"x": xs}, want, 1e-10, 1e-12)


def _bn_conv(axis):
    x = gc.input("x", ("N", 2, 5, 4))
    t = gc.input("t", ("N", 3, 3, 2))
    h = gc.conv(x, 3, 3, name="bcv")
    y = gc.Sequential([gc.BatchNorm(momentum=0.2, axis=axis, name="bc")])(h)
    return gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(0.1), name=f"bn_axis{axis % 4}")


def test_batch_norm_axis_one_normalizes_conv_channels_as_torch_batchnorm2d(tmp_path):
    """graphc's conv is channels-first (torch's layout), but batch_norm normalized the last
    axis only: after a conv [N, C, H, W] it kept one mean per position of W, not per channel
    as torch's BatchNorm2d, with no way to ask for the channel (graphc@7d32873). axis=1 now
    does (statistics over N, H, W); the default stays the last axis (Keras's axis=-1). Three
    SGD steps: loss, running mean / var (numpy float64 formula, rtol 1e-5), then predict,
    the exported library and ONNX Runtime (one BatchNormalization-like form per channel)."""
    m = _bn_conv(1)
    assert m.params["bc.gamma"].shape == (3,) and _bn_conv(-1).params["bc.gamma"].shape == (2,)
    rng = np.random.default_rng(11)
    rm, rv = np.zeros(3), np.ones(3)
    w, b = m.params["bcv.w"].astype(np.float64), m.params["bcv.b"].astype(np.float64)
    for _ in range(3):
        xs = (rng.standard_normal((4, 2, 5, 4)) * 2 + 1).astype(np.float32)
        ts = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
        g, be = m.params["bc.gamma"].astype(np.float64), m.params["bc.beta"].astype(np.float64)
        h = np.zeros((4, 3, 3, 2))
        for i, j in np.ndindex(3, 2):
            h[:, :, i, j] = np.einsum("ncij,fcij->nf", xs[:, :, i : i + 3, j : j + 3], w) + b
        mu, var = h.mean(axis=(0, 2, 3)), h.var(axis=(0, 2, 3))
        y = (h - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
        y = y * g[:, None, None] + be[:, None, None]
        np.testing.assert_allclose(m.train_step(xs, ts), np.mean((y - ts) ** 2), rtol=1e-5)
        rm = 0.8 * rm + 0.2 * mu
        rv = 0.8 * rv + 0.2 * h.var(axis=(0, 2, 3), ddof=1)
        np.testing.assert_allclose(m.state["bc.running_mean"], rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.state["bc.running_var"], rv, rtol=1e-5, atol=1e-6)
        w, b = m.params["bcv.w"].astype(np.float64), m.params["bcv.b"].astype(np.float64)
    got = m.predict(xs)
    lib = gc.load(m.export(str(tmp_path / "libbnc.so")).library)
    np.testing.assert_allclose(lib.predict(xs), got, rtol=1e-6, atol=1e-6)
    _onnx_equal(m, tmp_path / "bnc.onnx", {"x": xs}, [got], 1e-5, 1e-5)


def test_batch_norm_axis_one_trains_as_torch_batchnorm2d():
    torch = pytest.importorskip("torch")
    x = gc.input("x", ("N", 3, 4, 5), dtype="f64")
    t = gc.input("t", ("N", 3, 4, 5), dtype="f64")
    y = gc.batch_norm(x, axis=1, name="tb")
    m = gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(0.1), name="bn_torch2d")
    ref = torch.nn.BatchNorm2d(3).double()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    rng = np.random.default_rng(12)
    for _ in range(3):
        xs, ts = rng.standard_normal((2, 3, 4, 5)) * 3 - 1, rng.standard_normal((2, 3, 4, 5))
        opt.zero_grad()
        loss = torch.mean((ref(torch.tensor(xs)) - torch.tensor(ts)) ** 2)
        loss.backward()
        opt.step()
        np.testing.assert_allclose(m.train_step(xs, ts), loss.item(), rtol=1e-10)
    np.testing.assert_allclose(m.params["tb.gamma"], ref.weight.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(m.state["tb.running_var"], ref.running_var.numpy(), rtol=1e-10)
    ref.eval()
    np.testing.assert_allclose(m.predict(xs), ref(torch.tensor(xs)).detach().numpy(), 1e-10)


def test_matmul_of_a_stack_by_a_matrix_is_numpys():
    """x [N, 2, 3] @ W [3, 4] (numpy's, torch's matmul of a stack): graphc@7d32873 said
    "matmul: expects 2-D operands". Forward and dL/dW vs numpy float64."""
    x = gc.input("x", ("N", 2, 3), dtype="f64")
    w = gc.param("mw", (3, 4), dtype="f64")
    y = x @ w
    m = gc.compile(y, gc.sum(y * y), gc.SGD(0.0), name="mm_stack")
    xs = np.random.default_rng(13).standard_normal((3, 2, 3))
    wv = m.params["mw"]
    np.testing.assert_allclose(m.predict(xs), xs @ wv, rtol=1e-12, atol=1e-12)
    want = xs.reshape(-1, 3).T @ (2 * (xs @ wv)).reshape(-1, 4)
    np.testing.assert_allclose(m.gradients(xs)["mw"], want, rtol=1e-10)


def test_categorical_cross_entropy_on_a_sequence_and_its_accuracy_per_position():
    """Keras's CategoricalCrossentropy on logits [N, T, C] (token classification after a
    Dense on a sequence): graphc@7d32873 said "logits must be [N, C]". The loss is the mean
    over rows and positions (label smoothing 0.1 included), its gradient numpy's, and
    evaluate's accuracy compares the classes on the last axis (the argmax over axis 1 would
    have been over the positions). References: numpy float64."""
    x = gc.input("x", ("N", 4, 3), dtype="f64")
    t = gc.input("t", ("N", 4, 5), dtype="f64")
    z = gc.dense(x, 5, name="tok")
    m = gc.compile(z, gc.categorical_cross_entropy(z, t, label_smoothing=0.1), gc.SGD(0.0))
    rng = np.random.default_rng(14)
    xs = rng.standard_normal((3, 4, 3))
    ts = np.eye(5)[rng.integers(0, 5, (3, 4))]
    ts[0, 0] = [0.5, 0.5, 0, 0, 0]  # a soft target
    w, b = m.params["tok.w"], m.params["tok.b"]
    zs = xs @ w + b
    st = ts * 0.9 + 0.1 / 5
    want = -np.mean(np.sum(st * _np_softmax(zs, -1, log=True), axis=-1))
    ev = m.evaluate(xs, ts)
    np.testing.assert_allclose(ev["loss"], want, rtol=1e-12)
    acc = np.mean(np.argmax(zs, -1) == np.argmax(ts, -1))
    assert ev["accuracy"] == acc, (ev, acc)
    dz = (_np_softmax(zs, -1) - st) / 12  # d mean / d logits, 12 rows x positions
    g = m.gradients(xs, ts)
    np.testing.assert_allclose(g["tok.w"], xs.reshape(-1, 3).T @ dz.reshape(-1, 5), rtol=1e-9)
