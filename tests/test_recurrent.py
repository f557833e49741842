"""The DSL's recurrent layers (graphc.recurrent: lstm, gru, simple_rnn and their layer objects)
against torch.nn.LSTM / GRU / RNN (batch_first, bidirectional, weights copied in; skipped
without torch), a float64 numpy loop written from Keras's formulas, central differences, a
trained sequence task, the exported library and ONNX Runtime; the orthogonal initializer."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.init import initialize


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


# torch's gate blocks in graphc's (ONNX's) order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
TORCH_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}


def _reorder(a: np.ndarray, kind: str) -> np.ndarray:
    blocks = np.split(a, len(TORCH_ORDER[kind]), axis=0)
    return np.concatenate([blocks[k] for k in TORCH_ORDER[kind]], axis=0)


@pytest.mark.parametrize(
    "kind,bidir,seqs",
    [("LSTM", True, True), ("LSTM", False, False), ("GRU", True, False), ("RNN", False, True)],
)
def test_layers_equal_torch_with_weights_copied_in(kind, bidir, seqs) -> None:
    """Outputs and final states of gc.lstm / gru / simple_rnn equal torch.nn.LSTM / GRU / RNN
    (batch_first, bidirectional or not) given the same weights and initial states."""
    torch = pytest.importorskip("torch")
    n, t, c, h = 3, 4, 3, 5
    torch.manual_seed(0)
    mod = getattr(torch.nn, kind)(c, h, batch_first=True, bidirectional=bidir)
    d = 2 if bidir else 1
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((n, t, c)).astype(np.float32)
    h0 = rng.standard_normal((d, n, h)).astype(np.float32)
    c0 = rng.standard_normal((d, n, h)).astype(np.float32)
    x = gc.input("x", ("N", t, c))
    hin = [gc.input(f"h{k}", ("N", h)) for k in range(d)]
    cin = [gc.input(f"c{k}", ("N", h)) for k in range(d)]
    init = [s for k in range(d) for s in ([hin[k], cin[k]] if kind == "LSTM" else [hin[k]])]
    fn = {"LSTM": gc.lstm, "GRU": gc.gru, "RNN": gc.simple_rnn}[kind]
    outs = fn(
        x, h, return_sequences=seqs, return_state=True, bidirectional=bidir,
        initial_state=init, name="rec",
    )  # fmt: skip
    m = gc.compile(outs, name=f"rec_{kind}_{bidir}_{seqs}")
    w, r, b = [], [], []
    for k in range(d):
        sfx = "_l0" + ("_reverse" if k else "")
        w.append(_reorder(getattr(mod, "weight_ih" + sfx).detach().numpy(), kind))
        r.append(_reorder(getattr(mod, "weight_hh" + sfx).detach().numpy(), kind))
        b.append(
            np.concatenate(
                [
                    _reorder(getattr(mod, p + sfx).detach().numpy(), kind)
                    for p in ("bias_ih", "bias_hh")
                ]
            )
        )
    m.set_weights({"rec.w": np.stack(w), "rec.r": np.stack(r), "rec.b": np.stack(b)})
    feed = {"x": xs, **{f"h{k}": h0[k] for k in range(d)}}
    if kind == "LSTM":
        feed.update({f"c{k}": c0[k] for k in range(d)})
    got = m.predict(feed)
    got = [got[o.name] for o in outs]
    with torch.no_grad():
        st = (
            (torch.from_numpy(h0), torch.from_numpy(c0)) if kind == "LSTM" else torch.from_numpy(h0)
        )
        y, hn = mod(torch.from_numpy(xs), st)
    y = y.numpy()
    hs, cs = (hn[0].numpy(), hn[1].numpy()) if kind == "LSTM" else (hn.numpy(), None)
    if seqs:
        want0 = y
    else:  # Keras's last output: the forward state after step T-1, the backward after step 0
        want0 = np.concatenate([hs[k] for k in range(d)], axis=1)
    np.testing.assert_allclose(got[0], want0, rtol=1e-5, atol=2e-6)
    states = [s for k in range(d) for s in ([hs[k], cs[k]] if kind == "LSTM" else [hs[k]])]
    for g, s in zip(got[1:], states, strict=True):
        np.testing.assert_allclose(g, s, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_sequence_lengths_equal_torchs_packed_sequences(kind) -> None:
    """Rows of lengths 0 .. T (an i32 input) through a bidirectional layer equal torch's
    pack_padded_sequence (outputs 0 past a row's length; the final states at its end, the
    backward direction starting at its last element); a length above T is refused naming the
    row before anything runs."""
    torch = pytest.importorskip("torch")
    n, t, c, h = 4, 5, 3, 4
    torch.manual_seed(1)
    mod = getattr(torch.nn, kind)(c, h, batch_first=True, bidirectional=True)
    x = gc.input("x", ("N", t, c))
    lens = gc.input("lens", ("N",), dtype="i32")
    fn = gc.lstm if kind == "LSTM" else gc.gru
    outs = fn(x, h, return_sequences=True, return_state=True, bidirectional=True,
              sequence_lengths=lens, name="p")  # fmt: skip
    m = gc.compile(outs, name=f"packed_{kind}")
    last = gc.compile(fn(x, h, bidirectional=True, sequence_lengths=lens, name="p"),
                      name=f"packed_last_{kind}")  # fmt: skip
    w, r, b = [], [], []
    for sfx in ("_l0", "_l0_reverse"):
        w.append(_reorder(getattr(mod, "weight_ih" + sfx).detach().numpy(), kind))
        r.append(_reorder(getattr(mod, "weight_hh" + sfx).detach().numpy(), kind))
        b.append(np.concatenate([_reorder(getattr(mod, k + sfx).detach().numpy(), kind)
                                 for k in ("bias_ih", "bias_hh")]))  # fmt: skip
    wts = {"p.w": np.stack(w), "p.r": np.stack(r), "p.b": np.stack(b)}
    m.set_weights(wts)
    last.set_weights(wts)
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((n, t, c)).astype(np.float32)
    ls = np.array([5, 2, 0, 3], np.int32)
    got = m.predict({"x": xs, "lens": ls})
    seq, *states = [got[o.name] for o in outs]
    fin = last.predict({"x": xs, "lens": ls})
    keep = ls > 0  # torch packs no empty row
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(xs[keep]), torch.from_numpy(ls[keep]).long(), batch_first=True,
        enforce_sorted=False,
    )  # fmt: skip
    with torch.no_grad():
        y, hn = mod(packed)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=t)
    hs = (hn[0] if kind == "LSTM" else hn).numpy()
    np.testing.assert_allclose(seq[keep], y.numpy(), rtol=1e-5, atol=2e-6)
    np.testing.assert_array_equal(seq[~keep], 0.0)
    np.testing.assert_allclose(states[0][keep], hs[0], rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(states[-2 if kind == "LSTM" else -1][keep], hs[1], rtol=1e-5,
                               atol=2e-6)  # fmt: skip
    np.testing.assert_array_equal(states[0][~keep], 0.0)
    np.testing.assert_allclose(fin, np.concatenate([states[0], states[len(states) // 2]], 1))
    if kind == "LSTM":
        np.testing.assert_allclose(states[1][keep], hn[1].numpy()[0], rtol=1e-5, atol=2e-6)
    with pytest.raises(gc.ArgumentError, match="6"):
        m.predict({"x": xs, "lens": np.array([5, 6, 0, 3], np.int32)})


def test_sequence_lengths_in_the_exported_library(tmp_path) -> None:
    """A float64 bidirectional LSTM with i32 lengths: the library gives predict's outputs, and
    refuses a length outside 0 .. T naming the row (its native scan of an i32 index input,
    which did not compile before: vmath.trunc of <16 x i32>)."""
    x = gc.input("x", ("N", 4, 2), dtype="f64")
    lens = gc.input("lens", ("N",), dtype="i32")
    m = gc.compile(gc.lstm(x, 3, sequence_lengths=lens, bidirectional=True), name="libq")
    xs = np.random.default_rng(0).standard_normal((3, 4, 2))
    ok = np.array([4, 1, 0], np.int32)
    m.export(str(tmp_path / "libq.so"))
    lib = gc.load(str(tmp_path / "libq.so"))
    want = m.predict({"x": xs, "lens": ok})
    np.testing.assert_array_equal(lib.predict({"x": xs, "lens": ok}), want)
    other = xs[1:2].copy()
    other[:, 1:] = 7.0
    want_short = m.predict({"x": other, "lens": np.array([1], np.int32)})
    np.testing.assert_allclose(want[1], want_short[0])  # a row of length 1 ignores its tail
    for bad in (5, -1):
        with pytest.raises(gc.ArgumentError, match=f"row 1 holds {bad}"):
            lib.predict({"x": xs, "lens": np.array([4, bad, 0], np.int32)})


def _keras_loop(kind, xs, w, r, b, units, go_backwards=False, reset_after=True, act=np.tanh):
    """float64 reference from Keras's cell formulas (Keras layouts: kernel [C, gates*H] with
    gates i,f,c,o / z,r,h, recurrent kernel [H, gates*H], GRU bias [2, 3H] under reset_after),
    built from graphc's weights; returns the sequence of outputs in processing order."""
    h_ = units
    order = {"LSTM": [0, 2, 3, 1], "GRU": [0, 1, 2], "RNN": [0]}[kind]  # ONNX -> Keras blocks

    def keras(a):
        return np.concatenate([np.split(a, len(order), 0)[k] for k in order], 0).T

    kern, rec = keras(w[0].astype(np.float64)), keras(r[0].astype(np.float64))
    g = len(order)
    wb = np.concatenate([np.split(b[0][: g * h_], g)[k] for k in order]).astype(np.float64)
    rb = np.concatenate([np.split(b[0][g * h_ :], g)[k] for k in order]).astype(np.float64)
    n, t, _ = xs.shape
    h = np.zeros((n, h_))
    c = np.zeros((n, h_))
    steps = range(t - 1, -1, -1) if go_backwards else range(t)
    out = []
    for s in steps:
        xt = xs[:, s].astype(np.float64)
        if kind == "LSTM":
            z = xt @ kern + h @ rec + wb + rb
            i, f, cc, o = np.split(z, 4, axis=1)
            c = _sig(f) * c + _sig(i) * act(cc)
            h = _sig(o) * act(c)
        elif kind == "GRU":
            xz = xt @ kern + wb
            if reset_after:
                hz = h @ rec + rb
                z = _sig(xz[:, :h_] + hz[:, :h_])
                rr = _sig(xz[:, h_ : 2 * h_] + hz[:, h_ : 2 * h_])
                hh = act(xz[:, 2 * h_ :] + rr * hz[:, 2 * h_ :])
            else:
                z = _sig(xz[:, :h_] + h @ rec[:, :h_] + rb[:h_])
                rr = _sig(xz[:, h_ : 2 * h_] + h @ rec[:, h_ : 2 * h_] + rb[h_ : 2 * h_])
                hh = act(xz[:, 2 * h_ :] + (rr * h) @ rec[:, 2 * h_ :] + rb[2 * h_ :])
            h = z * h + (1 - z) * hh
        else:
            h = act(xt @ kern + h @ rec + wb + rb)
        out.append(h)
    return np.stack(out, axis=1)


@pytest.mark.parametrize(
    "kind,kw",
    [
        ("GRU", {"reset_after": False, "go_backwards": True}),
        ("GRU", {"batch": 4}),
        ("LSTM", {"go_backwards": True, "activation": "relu"}),
        ("RNN", {"activation": "relu", "batch": 4}),
    ],
)
def test_layers_equal_a_float64_loop_of_kerass_formulas(kind, kw) -> None:
    """Sequences of the layers' default initialization (glorot kernel, orthogonal recurrent
    kernel, zero biases but LSTM's forget bias 1, checked) with random biases, against a float64
    loop of Keras's cell equations; go_backwards returns the reversed order, as Keras. A fixed
    batch (``batch``) takes the one-GEMM input projection, N one GEMM per step."""
    kw = dict(kw)
    n, t, c, h = 4, 6, 3, 5
    x = gc.input("x", (kw.pop("batch", "N"), t, c))
    fn = {"LSTM": gc.LSTM, "GRU": gc.GRU, "RNN": gc.SimpleRNN}[kind]
    seq = gc.Sequential([fn(h, return_sequences=True, **kw)], name="keras")
    m = gc.compile(seq(x), name=f"keras_{kind}_{len(kw)}")
    wts = m.get_weights()
    w, r, b = wts["keras.l0.w"], wts["keras.l0.r"], wts["keras.l0.b"]
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    want_b = np.zeros((1, 2 * gates * h), np.float32)
    if kind == "LSTM":
        want_b[0, 2 * h : 3 * h] = 1.0  # unit_forget_bias
    np.testing.assert_array_equal(b, want_b)
    np.testing.assert_allclose(r[0].T @ r[0], np.eye(h), atol=1e-6)  # orthogonal columns
    rng = np.random.default_rng(2)
    b = rng.standard_normal(b.shape).astype(np.float32) * 0.5
    m.set_weights({"keras.l0.b": b})
    xs = rng.standard_normal((n, t, c)).astype(np.float32)
    act = (lambda v: np.maximum(v, 0.0)) if kw.get("activation") == "relu" else np.tanh
    want = _keras_loop(
        kind, xs, w, r, b, h, kw.get("go_backwards", False), kw.get("reset_after", True), act
    )
    np.testing.assert_allclose(m.predict(xs), want, rtol=2e-5, atol=2e-6)


def test_bidirectional_go_backwards_is_kerass() -> None:
    """Keras's Bidirectional(LSTM(go_backwards=True)): the first direction reads from the end,
    the second from the start, both sequences in reversed time order, concatenated."""
    n, t, c, h = 2, 5, 3, 4
    x = gc.input("x", ("N", t, c))
    ys = gc.lstm(x, h, return_sequences=True, go_backwards=True, bidirectional=True, name="bg")
    m = gc.compile(ys, name="bidir_back")
    wts = m.get_weights()
    w, r, b = wts["bg.w"], wts["bg.r"], wts["bg.b"]
    xs = np.random.default_rng(6).standard_normal((n, t, c)).astype(np.float32)
    first = _keras_loop("LSTM", xs, w[:1], r[:1], b[:1], h, go_backwards=True)
    second = _keras_loop("LSTM", xs, w[1:], r[1:], b[1:], h)[:, ::-1]
    want = np.concatenate([first, second], axis=2)
    np.testing.assert_allclose(m.predict(xs), want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_gradients_match_central_differences(kind) -> None:
    """d loss / d (w, r, b) of a float64 bidirectional layer, loss = mean((y - target)^2),
    against central differences of the float64 Keras loop (forward direction) and of the
    compiled loss (both directions)."""
    n, t, c, h = 3, 3, 2, 2
    x = gc.input("x", ("N", t, c), dtype="f64")
    tgt = gc.input("t", ("N", 2 * h), dtype="f64")
    fn = gc.lstm if kind == "LSTM" else gc.gru
    y = fn(x, h, bidirectional=True, name="g")
    m = gc.compile(y, gc.mean_squared_error(y, tgt), gc.SGD(lr=0.1), name=f"grad_{kind}")
    rng = np.random.default_rng(3)
    xs, ts = rng.standard_normal((n, t, c)), rng.standard_normal((n, 2 * h))
    b0 = rng.standard_normal(m.get_weights()["g.b"].shape) * 0.3
    m.set_weights({"g.b": b0})
    wts = {k: v.copy() for k, v in m.get_weights().items()}
    grads = m.gradients(xs, ts)

    def loss(ws: dict) -> float:
        fw = _keras_loop(kind, xs, ws["g.w"][:1], ws["g.r"][:1], ws["g.b"][:1], h)[:, -1]
        bw = _keras_loop(kind, xs, ws["g.w"][1:], ws["g.r"][1:], ws["g.b"][1:], h, True)[:, -1]
        return float(np.mean((np.concatenate([fw, bw], 1) - ts) ** 2))

    for key in ("g.w", "g.r", "g.b"):
        num = np.zeros_like(wts[key])
        for i in np.ndindex(num.shape):
            plus, minus = dict(wts), dict(wts)
            e = np.zeros_like(num)
            e[i] = 1e-6
            plus[key], minus[key] = wts[key] + e, wts[key] - e
            num[i] = (loss(plus) - loss(minus)) / 2e-6
        np.testing.assert_allclose(grads[key], num, rtol=1e-6, atol=1e-9)


def test_a_sequence_task_trains_and_ships_to_the_library_and_onnx(tmp_path) -> None:
    """Which half of a noisy sequence holds the larger sum: an LSTM then a dense layer,
    trained with fit (the loss falls by more than half); the exported library and, through
    to_onnx, ONNX Runtime give predict's outputs."""
    rng = np.random.default_rng(4)
    n, t = 128, 6
    xs = rng.standard_normal((n, t, 1)).astype(np.float32)
    ys = (xs[:, : t // 2, 0].sum(1) > xs[:, t // 2 :, 0].sum(1)).astype(np.int32)
    x = gc.input("x", ("N", t, 1))
    model = gc.Sequential([gc.LSTM(6), gc.Dense(2)], name="seq")
    logits = model(x)
    loss = gc.softmax_cross_entropy(logits, gc.input("labels", ("N",), dtype="i32"))
    m = gc.compile(logits, loss, gc.Adam(lr=0.03), name="seqtask", seed=0)
    hist = m.fit(xs, ys, epochs=12, batch_size=32, verbose=0)
    losses = hist.history["loss"] if hasattr(hist, "history") else hist["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    lib_path = str(tmp_path / "libseq.so")
    m.export(lib_path)
    lib = gc.load(lib_path)
    np.testing.assert_allclose(lib.predict(xs[:17]), m.predict(xs[:17]), rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    path = m.to_onnx(str(tmp_path / "seq.onnx"))
    got = ort.InferenceSession(str(path)).run(None, {"x": xs[:17]})[0]
    np.testing.assert_allclose(got, m.predict(xs[:17]), rtol=1e-4, atol=1e-5)


def test_orthogonal_initializer() -> None:
    """Orthonormal columns (tall), rows (wide), per leading index; seeded."""
    rng = np.random.default_rng(0)
    tall = initialize("orthogonal", (2, 12, 3), rng, dtype=np.float64)
    for k in range(2):
        np.testing.assert_allclose(tall[k].T @ tall[k], np.eye(3), atol=1e-12)
    wide = initialize("orthogonal", (3, 7), rng, dtype=np.float64)
    np.testing.assert_allclose(wide @ wide.T, np.eye(3), atol=1e-12)
    a = initialize("orthogonal", (4, 4), np.random.default_rng(5))
    assert a.tobytes() == initialize("orthogonal", (4, 4), np.random.default_rng(5)).tobytes()


def test_bad_arguments_are_refused_naming_them() -> None:
    x = gc.input("x", ("N", 4, 3))
    with pytest.raises(gc.ShapeError, match=r"expects x \[N, T, C\]"):
        gc.lstm(gc.input("flat", ("N", 3)), 4)
    with pytest.raises(gc.GraphcError, match="units must be a positive int"):
        gc.gru(x, 0)
    with pytest.raises(gc.GraphcError, match="initial_state holds 1 tensors; expected 2"):
        gc.lstm(x, 4, initial_state=[gc.input("h", ("N", 4))])
    with pytest.raises(gc.ShapeError, match=r"initial_state\[0\] must be a tensor f32\[N, 4\]"):
        gc.simple_rnn(x, 4, initial_state=[gc.input("h5", ("N", 5))])
    with pytest.raises(gc.ShapeError, match=r"initial_state\[0\] must be a tensor f32\[N, 4\]"):
        gc.gru(x, 4, initial_state=gc.input("h64", ("N", 4), dtype="f64"))
    with pytest.raises(gc.GraphcError, match="unknown activation"):
        gc.LSTM(4, activation="tanhh")
    with pytest.raises(gc.GraphcError, match="unknown initializer"):
        gc.simple_rnn(x, 4, recurrent_init="orthognal")


def test_two_recurrent_layers_on_one_lengths_input_name_both() -> None:
    """An LSTM of 5 steps and a GRU of 3 sharing one lengths input: the input is checked to
    hold 0 .. 3, and a refused length names both layers and the range that applies (the
    first layer's "LSTM: 0 .. 5" alone was kept, which a length of 4 does not break)."""
    x5 = gc.input("x5", ("N", 5, 2), dtype="f64")
    x3 = gc.input("x3", ("N", 3, 2), dtype="f64")
    lens = gc.input("lens", ("N",), dtype="i32")
    a = gc.lstm(x5, 2, sequence_lengths=lens, name="long")
    b = gc.gru(x3, 2, sequence_lengths=lens, name="short")
    m = gc.compile([a, b], None, name="two_lens")
    rng = np.random.default_rng(0)
    feeds = {"x5": rng.standard_normal((2, 5, 2)), "x3": rng.standard_normal((2, 3, 2))}
    m.predict({**feeds, "lens": np.array([3, 0], np.int32)})
    want = r"row 1 holds 4.*of lstm: 0 \.\. 5; the sequence lengths of gru: 0 \.\. 3 \(the narrower"
    with pytest.raises(gc.ArgumentError, match=want):
        m.predict({**feeds, "lens": np.array([3, 4], np.int32)})
