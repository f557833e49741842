"""ONNX LSTM, GRU and RNN (graphc/onnx_import_rnn.py): hand-built nodes with every attribute
(directions, layouts, the spec's activation functions with alpha/beta, clip,
linear_before_reset, input_forget, peepholes, sequence_lens, initial states, outputs left out)
against ONNX Runtime; torch.onnx.export of nn.LSTM / nn.GRU / nn.RNN (multi-layer,
bidirectional, batch first or not) against torch and ONNX Runtime; the gradient of an imported
LSTM's weights against central differences of a float64 numpy LSTM; the refusal of a symbolic
sequence length. Before, the three operators were refused ('not supported by graphc')."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import numeric_grad, torch_or_skip

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
T, C, H = 4, 3, 3


def _ort(m, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _node_model(cases: list[dict], rng, as_layout_0: bool = False) -> tuple:
    """One model holding a node per case, all reading x [N, T, C] (layout 0 nodes through a
    Transpose, as torch's exports), lens [N] (int32) and h0 / c0 [N, 2, H] (batch first;
    transposed for layout 0), with their weights as initializers. ``as_layout_0``: layout 1
    nodes written as layout 0 between transposes (ONNX Runtime 1.32 refuses layout 1:
    "Batchwise recurrent operations (layout == 1) are not supported")."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["h0"], ["h0_tm"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["c0"], ["c0_tm"], perm=[1, 0, 2]),
    ]
    inits, outs = [], []
    for k, case in enumerate(cases):
        op, layout = case["op"], 0 if as_layout_0 else case.get("layout", 0)
        d = 2 if case.get("direction") == "bidirectional" else 1
        g = GATES[op]
        names = ["x_tm" if layout == 0 else "x"]
        for nm, shape in (("W", (d, g * H, C)), ("R", (d, g * H, H)), ("B", (d, 2 * g * H))):
            if nm == "B" and not case.get("bias", True):
                names.append("")
                continue
            a = (rng.standard_normal(shape) * 0.6).astype(np.float32)
            inits.append(numpy_helper.from_array(a, f"{nm}{k}"))
            names.append(f"{nm}{k}")
        names.append("lens" if case.get("lens") else "")
        if case.get("init"):
            if d == 2:
                names.append("h0_tm" if layout == 0 else "h0")
            else:  # one direction: the first of the two
                names.append(f"h0s{k}")
                src = "h0_tm" if layout == 0 else "h0"
                ax = 0 if layout == 0 else 1
                nodes.append(
                    helper.make_node(
                        "Slice",
                        [src, f"s0_{k}", f"s1_{k}", f"ax_{k}"],
                        [f"h0s{k}"],
                    )
                )
                for nm, v in ((f"s0_{k}", 0), (f"s1_{k}", 1), (f"ax_{k}", ax)):
                    inits.append(numpy_helper.from_array(np.array([v], np.int64), nm))
            if op == "LSTM":
                names.append("c0_tm" if (layout == 0 and d == 2) else "c0" if d == 2 else "")
                if d == 1:
                    names[-1] = ""  # (initial_c absent, initial_h present)
        else:
            names.append("")
            if op == "LSTM":
                names.append("")
        if op == "LSTM" and case.get("peep"):
            while len(names) < 7:
                names.append("")
            p = (rng.standard_normal((d, 3 * H)) * 0.5).astype(np.float32)
            inits.append(numpy_helper.from_array(p, f"P{k}"))
            names.append(f"P{k}")
        while names and names[-1] == "":
            names.pop()
        n_out = 3 if op == "LSTM" else 2
        want = case.get("outputs", (0, 1, 2)[:n_out])
        onames = [f"o{k}_{j}" if j in want else "" for j in range(n_out)]
        while onames[-1] == "":
            onames.pop()
        attrs = {
            a: (layout if a == "layout" else case[a])
            for a in (
                "direction",
                "activations",
                "activation_alpha",
                "activation_beta",
                "clip",
                "linear_before_reset",
                "input_forget",
                "layout",
            )
            if a in case
        }
        nodes.append(
            helper.make_node(op, names, onames, name=f"{op.lower()}{k}", hidden_size=H, **attrs)
        )
        for j, o in enumerate(onames):
            if not o:
                continue
            # outputs batch first: Y [T, D, N, H] -> [N, T, D, H]; Y_h [D, N, H] -> [N, D, H]
            if layout == 0:
                perm = [2, 0, 1, 3] if j == 0 else [1, 0, 2]
                nodes.append(helper.make_node("Transpose", [o], [f"y{k}_{j}"], perm=perm))
            else:
                nodes.append(helper.make_node("Identity", [o], [f"y{k}_{j}"]))
            outs.append(f"y{k}_{j}")
    read = {nm for nd in nodes for nm in nd.input}
    nodes = [
        nd
        for nd in nodes
        if nd.op_type != "Transpose" or nd.output[0] in read or nd.output[0] in outs
    ]
    read = {nm for nd in nodes for nm in nd.input}
    vi = helper.make_tensor_value_info
    inputs = [
        vi("x", TensorProto.FLOAT, ["N", T, C]),
        vi("lens", TensorProto.INT32, ["N"]),
        vi("h0", TensorProto.FLOAT, ["N", 2, H]),
        vi("c0", TensorProto.FLOAT, ["N", 2, H]),
    ]
    inputs = [i for i in inputs if i.name in read]
    graph = helper.make_graph(
        nodes, "g", inputs, [vi(o, TensorProto.FLOAT, None) for o in outs], inits
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m, outs


def _check(cases: list[dict], seed: int) -> None:
    m, outs = _node_model(cases, np.random.default_rng(seed))
    ref, _ = _node_model(cases, np.random.default_rng(seed), as_layout_0=True)
    if any(nd.op_type in GATES and nd.attribute for nd in ref.graph.node):
        assert all(a.i == 0 for nd in ref.graph.node for a in nd.attribute if a.name == "layout")
    rng = np.random.default_rng(seed + 100)
    n = 3
    feeds = {
        "x": rng.standard_normal((n, T, C)).astype(np.float32),
        "lens": np.array([T, 2, 1], np.int32),
        "h0": rng.standard_normal((n, 2, H)).astype(np.float32),
        "c0": rng.standard_normal((n, 2, H)).astype(np.float32),
    }
    feeds = {i.name: feeds[i.name] for i in m.graph.input}
    want = dict(zip(outs, _ort(ref, {i.name: feeds[i.name] for i in ref.graph.input})))
    model = gc.from_onnx(m).compile()
    got = model.predict(feeds)
    got = got if isinstance(got, dict) else {outs[0]: got}
    for o in outs:
        np.testing.assert_allclose(np.asarray(got[o]), want[o], rtol=1e-4, atol=2e-5, err_msg=o)


ALL = [
    ("Relu", None, None),
    ("Tanh", None, None),
    ("Sigmoid", None, None),
    ("Affine", 0.7, 0.2),
    ("LeakyRelu", 0.3, None),
    ("ThresholdedRelu", 0.2, None),
    ("ScaledTanh", 1.5, 0.8),
    ("HardSigmoid", 0.3, 0.4),
    ("Elu", 0.9, None),
    ("Softsign", None, None),
    ("Softplus", None, None),
]


def _acts(names: list[int]) -> dict:
    sel = [ALL[i] for i in names]
    out = {
        "activations": [s[0] for s in sel],
        "activation_alpha": [s[1] for s in sel if s[1] is not None],
        "activation_beta": [s[2] for s in sel if s[2] is not None],
    }
    return {k: v for k, v in out.items() if v}


def test_lstm_nodes_match_onnxruntime() -> None:
    _check(
        [
            {"op": "LSTM"},
            {"op": "LSTM", "direction": "bidirectional", "init": True, "lens": True, "peep": True},
            {"op": "LSTM", "direction": "reverse", "layout": 1, "lens": True, "outputs": (1, 2)},
            {"op": "LSTM", "layout": 1, "direction": "bidirectional", "init": True, "clip": 0.7},
            {"op": "LSTM", "input_forget": 1, "bias": False, "outputs": (0,), "peep": True},
            {"op": "LSTM", "direction": "bidirectional", **_acts([2, 1, 3, 7, 4, 8])},
        ],
        1,
    )


def test_gru_nodes_match_onnxruntime() -> None:
    _check(
        [
            {"op": "GRU"},
            {"op": "GRU", "linear_before_reset": 1, "direction": "bidirectional", "lens": True},
            {"op": "GRU", "linear_before_reset": 1, "layout": 1, "init": True, "outputs": (1,)},
            {"op": "GRU", "direction": "reverse", "init": True, "lens": True, "clip": 0.5},
            {"op": "GRU", "direction": "bidirectional", "layout": 1, **_acts([7, 5, 2, 10])},
            {"op": "GRU", "bias": False, "linear_before_reset": 1, "outputs": (0,)},
        ],
        2,
    )


def test_rnn_nodes_match_onnxruntime() -> None:
    _check(
        [
            {"op": "RNN"},
            {"op": "RNN", "direction": "bidirectional", "lens": True, "init": True},
            {"op": "RNN", "direction": "reverse", "layout": 1, **_acts([0]), "clip": 0.4},
            {"op": "RNN", "direction": "bidirectional", **_acts([6, 9]), "lens": True},
            {"op": "RNN", "layout": 1, "bias": False, **_acts([4]), "outputs": (0,)},
        ],
        3,
    )


# ---------------------------------------------------------------- torch's exports

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")
TORCH_MODULES = ["lstm2bi", "gru2sf", "rnnrelu", "lstminit", "grucls", "lstmpack"]
TORCH_MODULES += ["lstmstate", "grustate"]  # h_n, c_n [L * D, N, H] as graph outputs
TORCH_FILES = [f"rnn_ts_{n}_14" for n in TORCH_MODULES]
TORCH_FILES += [f"rnn_dyn_{n}_18" for n in TORCH_MODULES if n != "lstmpack"]


def _feeds(m, rng, n: int = 3) -> dict:
    feeds = {}
    for vi in m.graph.input:
        dims = [d.dim_value or n for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == TensorProto.INT64:  # lengths, decreasing
            feeds[vi.name] = np.array([5, 3, 1][:n], np.int64)  # the files: T = 5
        else:
            feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", TORCH_FILES)
def test_torch_rnn_exports_match_onnxruntime(name: str) -> None:
    """tests/data/onnx/rnn_ts_*_14.onnx and rnn_dyn_*_18.onnx (export_torch_rnn.py: torch
    2.13's TorchScript and dynamo exporters): layout-0 nodes between Transposes of N, zero
    states from ConstantOfShape([L, N, H]) (TorchScript) or an Expand of 0 to [L, N, H]
    (dynamo), a padded batch's lengths as sequence_lens."""
    path = os.path.join(DATA, f"{name}.onnx")
    m = onnx.load(path)
    feeds = _feeds(m, np.random.default_rng(5))
    outs = [o.name for o in m.graph.output]
    want = _ort(m, feeds)
    got = gc.from_onnx(path).compile().predict(feeds)
    got = [got[o] for o in outs] if isinstance(got, dict) else [got]
    for o, g, w in zip(outs, got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=2e-6, err_msg=o)


def test_torch_rnn_export_matches_torch(tmp_path) -> None:
    """Exported now from torch's modules (export_torch_rnn.py), against torch's own outputs."""
    torch = torch_or_skip()
    import sys

    sys.path.insert(0, DATA)
    try:
        import export_torch_rnn as ex
    finally:
        sys.path.remove(DATA)
    mods = ex.modules()
    for name in ("lstmpack",):  # (lstm2bi and the others: against ORT above)
        m, ins, outs = mods[name]
        torch.manual_seed(0)
        m.eval()
        x = torch.randn(2, ex.T, ex.C)
        args = (x, torch.tensor([ex.T, 2])) if name == "lstmpack" else (x,)
        path = str(tmp_path / f"{name}.onnx")
        torch.onnx.export(
            m,
            args,
            path,
            input_names=list(ins),
            output_names=list(outs),
            dynamic_axes={k: {0: "N"} for k in (*ins, *outs)},
            opset_version=14,
            dynamo=False,
        )
        xs = torch.randn(3, ex.T, ex.C)
        targs = (xs, torch.tensor([ex.T, 3, 1])) if name == "lstmpack" else (xs,)
        with torch.no_grad():
            want = [t.numpy() for t in m(*targs)]
        feeds = dict(zip(ins, (a.numpy() for a in targs)))
        got = gc.from_onnx(path).compile().predict(feeds)
        for o, w in zip(outs, want):
            np.testing.assert_allclose(np.asarray(got[o]), w, rtol=1e-4, atol=2e-6, err_msg=o)


# ---------------------------------------------------------------- training


def _lstm64(x, w, r, b, p, lens):
    """ONNX's LSTM in float64 numpy (x [T, B, C], one direction per w[d]; d = 1 reverse): Y
    [T, D, B, H]."""
    steps, batch, _ = x.shape
    dirs, hidden = w.shape[0], r.shape[2]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    y = np.zeros((steps, dirs, batch, hidden))
    for d in range(dirs):
        h = np.zeros((batch, hidden))
        c = np.zeros((batch, hidden))
        order = range(steps - 1, -1, -1) if d == 1 else range(steps)
        for t in order:
            z = x[t] @ w[d].T + h @ r[d].T + b[d, : 4 * hidden] + b[d, 4 * hidden :]
            zi, zo, zf, zc = np.split(z, 4, axis=1)
            pi, po, pf = np.split(p[d], 3)
            i = sig(zi + pi * c)
            f = sig(zf + pf * c)
            cn = f * c + i * np.tanh(zc)
            o = sig(zo + po * cn)
            hn = o * np.tanh(cn)
            live = (lens > t)[:, None]
            h, c = np.where(live, hn, h), np.where(live, cn, c)
            y[t, d] = np.where(live, hn, 0.0)
    return y


def test_imported_lstm_trains_gradients_match_central_differences() -> None:
    """d/dW, d/dR, d/dB, d/dP of sum(u * Y) for a bidirectional LSTM with peepholes and constant
    sequence_lens, whose initializers graphc makes params, against a float64 numpy LSTM."""
    rng = np.random.default_rng(7)
    steps, batch, c_in, hidden, dirs = 3, 2, 2, 2, 2
    x = rng.standard_normal((batch, steps, c_in)).astype(np.float32)
    lens = np.array([3, 2], np.int32)
    ws = {
        "W": rng.standard_normal((dirs, 4 * hidden, c_in)),
        "R": rng.standard_normal((dirs, 4 * hidden, hidden)),
        "B": rng.standard_normal((dirs, 8 * hidden)),
        "P": rng.standard_normal((dirs, 3 * hidden)),
    }
    ws = {k: (0.7 * v).astype(np.float32) for k, v in ws.items()}
    u = rng.standard_normal((steps, dirs, batch, hidden)).astype(np.float32)
    inits = [numpy_helper.from_array(v, k) for k, v in ws.items()]
    inits.append(numpy_helper.from_array(lens, "lens"))
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(
            "LSTM",
            ["xt", "W", "R", "B", "lens", "", "", "P"],
            ["y"],
            hidden_size=hidden,
            direction="bidirectional",
        ),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [vi("x", TensorProto.FLOAT, [batch, steps, c_in])],
        [vi("y", TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    imp = gc.from_onnx(m)
    assert sorted(imp.params) == ["B", "P", "R", "W"], sorted(imp.params)
    model = imp.compile(gc.sum(imp.outputs[0] * gc.constant(u)), gc.SGD(0.1))
    grads = model.gradients(x)
    x64 = np.swapaxes(x, 0, 1).astype(np.float64)
    order = list(ws)
    for i, k in enumerate(order):

        def f(*vals: np.ndarray) -> float:
            a = dict(zip(order, vals))
            return float((u * _lstm64(x64, a["W"], a["R"], a["B"], a["P"], lens)).sum())

        want = numeric_grad(f, [ws[o] for o in order], i)
        got = next(v for n, v in grads.items() if n == k or n.endswith(k))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=k)


def _gru64(x, w, r, b, h0):
    """ONNX's GRU with linear_before_reset=1, direction reverse, in float64 numpy (x [T, B, C]):
    Y [T, 1, B, H]."""
    steps, hidden = x.shape[0], r.shape[2]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    wb, rb = b[0, : 3 * hidden], b[0, 3 * hidden :]
    h, y = h0[0], np.zeros((steps, 1, x.shape[1], hidden))
    for t in range(steps - 1, -1, -1):
        xw = x[t] @ w[0].T + wb
        hr = h @ r[0].T + rb
        z = sig(xw[:, :hidden] + hr[:, :hidden])
        rr = sig(xw[:, hidden : 2 * hidden] + hr[:, hidden : 2 * hidden])
        hh = np.tanh(xw[:, 2 * hidden :] + rr * hr[:, 2 * hidden :])
        h = (1 - z) * hh + z * h
        y[t, 0] = h
    return y


def test_imported_gru_gradients_match_central_differences() -> None:
    """d/dW, d/dR, d/dB (initializers, so params) of sum(u * Y) for a reverse GRU with
    linear_before_reset=1 (torch's GRU) from a given initial_h (an initializer the schema marks
    non-differentiable: a constant), against a float64 numpy GRU."""
    rng = np.random.default_rng(8)
    steps, batch, c_in, hidden = 3, 2, 2, 2
    x = rng.standard_normal((batch, steps, c_in)).astype(np.float32)
    ws = {
        "W": rng.standard_normal((1, 3 * hidden, c_in)),
        "R": rng.standard_normal((1, 3 * hidden, hidden)),
        "B": rng.standard_normal((1, 6 * hidden)),
        "H0": rng.standard_normal((1, batch, hidden)),
    }
    ws = {k: (0.7 * v).astype(np.float32) for k, v in ws.items()}
    u = rng.standard_normal((steps, 1, batch, hidden)).astype(np.float32)
    node = helper.make_node(
        "GRU",
        ["xt", "W", "R", "B", "", "H0"],
        ["y"],
        hidden_size=hidden,
        direction="reverse",
        linear_before_reset=1,
    )
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]), node],
        "g",
        [vi("x", TensorProto.FLOAT, [batch, steps, c_in])],
        [vi("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in ws.items()],
    )
    imp = gc.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))
    assert sorted(imp.params) == ["B", "R", "W"], sorted(imp.params)
    model = imp.compile(gc.sum(imp.outputs[0] * gc.constant(u)), gc.SGD(0.1))
    grads = model.gradients(x)
    x64 = np.swapaxes(x, 0, 1).astype(np.float64)
    order = ["W", "R", "B"]
    for i, k in enumerate(order):

        def f(*vals: np.ndarray) -> float:
            return float((u * _gru64(x64, *vals, ws["H0"].astype(np.float64))).sum())

        want = numeric_grad(f, [ws[o] for o in order], i)
        got = next(v for n, v in grads.items() if n == k or n.endswith(k))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=k)


# ---------------------------------------------------------------- refusals


def _lstm_model(x_shape, layout: int = 0, transpose: bool = False):
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), k)
        for k, s in (("W", (1, 4 * H, C)), ("R", (1, 4 * H, H)))
    ]
    nodes = [
        helper.make_node(
            "LSTM",
            ["xt" if transpose else "x", "W", "R"],
            ["y"],
            name="enc",
            hidden_size=H,
            layout=layout,
        )
    ]
    if transpose:
        nodes.insert(0, helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]))
        nodes.append(helper.make_node("Transpose", ["y"], ["yb"], perm=[2, 0, 1, 3]))
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [vi("x", TensorProto.FLOAT, x_shape)],
        [vi("yb" if transpose else "y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_symbolic_sequence_length_is_refused_naming_the_node() -> None:
    # a sequence-first input whose length is symbolic: its first axis reads as N
    with pytest.raises(gc.OnnxError, match=r"node 0 'enc' \(LSTM.*fixed sequence length"):
        gc.from_onnx(_lstm_model(["seq", 2, C]))
    # batch first with a symbolic length: refused at the input, dims= fixes it
    m = _lstm_model(["N", "seq", C], transpose=True)
    with pytest.raises(gc.OnnxError, match=r"dimension 1 is symbolic \(seq\).*dims="):
        gc.from_onnx(m)
    x = np.random.default_rng(1).standard_normal((2, 4, C)).astype(np.float32)
    got = gc.from_onnx(m, dims={"seq": 4}).compile().predict(x)
    np.testing.assert_allclose(got, _ort(m, {"x": x})[0], rtol=1e-4, atol=2e-6)


# ---------------------------------------------------------------- tf2onnx, ReverseSequence

TF_FILES = ["lstm", "back", "bilstm", "stack", "revseq"]
# Keras 3 layers that tf2onnx 1.17 leaves as an ONNX Loop over T (graphc unrolls it)
TF_LOOP_FILES = ["gru", "grulast", "grurb0", "simplernn", "masklstm"]


@pytest.mark.parametrize("name", TF_FILES + TF_LOOP_FILES)
def test_tf2onnx_keras_lstm_files_match_onnxruntime(name: str) -> None:
    """tests/data/onnx/tf_rnn_*_14.onnx (export_tf_rnn.py: tf2onnx 1.17 of Keras 3 LSTM,
    go_backwards (ReverseSequence of the [T, N, C] view by lengths expanded over N),
    Bidirectional, a stack under a Dense head; tf.reverse_sequence of a padded batch; GRU with
    reset_after True / False, SimpleRNN and an LSTM behind Masking, each a Loop node). The
    masked LSTM's batch has rows zero-padded after 1, 3 and 5 steps (Masking skips them)."""
    path = os.path.join(DATA, f"tf_rnn_{name}_14.onnx")
    m = onnx.load(path)
    rng = np.random.default_rng(6)
    feeds = {}
    for vi in m.graph.input:
        if vi.type.tensor_type.elem_type == TensorProto.INT32:  # lengths in [0, T]
            feeds[vi.name] = np.array([5, 2, 0], np.int32)
        else:
            dims = [d.dim_value or 3 for d in vi.type.tensor_type.shape.dim]
            feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    if name == "masklstm":
        x = feeds["x"]
        for row, steps in enumerate((1, 3, 5)):
            x[row, steps:] = 0.0
    want = _ort(m, feeds)
    got = gc.from_onnx(path).compile().predict(feeds)
    got = list(got.values()) if isinstance(got, dict) else [got]
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=2e-6)


def test_reverse_sequence_matches_onnxruntime() -> None:
    """ReverseSequence: batch first (lengths an int64 input), time first through a Transpose
    of N (a layout view), on a rank-4 value, and with constant lengths on a fixed batch."""
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("ReverseSequence", ["x", "lens"], ["a"], batch_axis=0, time_axis=1),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2, 3]),
        helper.make_node("ReverseSequence", ["xt", "lens"], ["bt"]),
        helper.make_node("Transpose", ["bt"], ["b"], perm=[1, 0, 2, 3]),
        helper.make_node("ReverseSequence", ["f", "flens"], ["c"], batch_axis=1, time_axis=0),
    ]
    flens = numpy_helper.from_array(np.array([1, 4, 0, 3], np.int64), "flens")
    graph = helper.make_graph(
        nodes,
        "g",
        [
            vi("x", TensorProto.FLOAT, ["N", 4, 2, 3]),
            vi("lens", TensorProto.INT64, ["N"]),
            vi("f", TensorProto.FLOAT, [4, 4, 2]),
        ],
        [vi(o, TensorProto.FLOAT, None) for o in "abc"],
        [flens],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    rng = np.random.default_rng(9)
    feeds = {
        "x": rng.standard_normal((3, 4, 2, 3)).astype(np.float32),
        "lens": np.array([4, 0, 2], np.int64),
        "f": rng.standard_normal((4, 4, 2)).astype(np.float32),
    }
    want = _ort(m, feeds)
    got = gc.from_onnx(m).compile().predict(feeds)
    for o, w in zip("abc", want):
        np.testing.assert_array_equal(np.asarray(got[o]), w, err_msg=o)


@pytest.mark.parametrize("opset", [7, 22])
def test_fixed_batch_constant_lengths_match_onnxruntime(opset: int) -> None:
    """A fixed batch (no N: the input projection is one GEMM for all steps and directions),
    sequence_lens an initializer, at the first and the latest form of the three operators."""
    rng = np.random.default_rng(opset)
    nodes, inits, outs = [], [numpy_helper.from_array(np.array([4, 2, 3], np.int32), "L")], []
    for op, g in GATES.items():
        for nm, shape in (("W", (2, g * 3, 2)), ("R", (2, g * 3, 3)), ("B", (2, g * 6))):
            inits.append(
                numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), nm + op)
            )
        o = [f"{op}_{k}" for k in ("y", "yh", "yc")[: 3 if op == "LSTM" else 2]]
        nodes.append(
            helper.make_node(
                op,
                ["x", "W" + op, "R" + op, "B" + op, "L"],
                o,
                hidden_size=3,
                direction="bidirectional",
            )
        )
        outs += o
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [vi("x", TensorProto.FLOAT, [4, 3, 2])],
        [vi(o, TensorProto.FLOAT, None) for o in outs],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7 if opset < 22 else 10
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    want = _ort(m, {"x": x})
    got = gc.from_onnx(m).compile().predict(x)
    for o, w in zip(outs, want):
        np.testing.assert_allclose(got[o], w, rtol=1e-4, atol=2e-6, err_msg=o)


def test_imported_rnn_exports_back_to_onnx(tmp_path) -> None:
    """The unrolled recurrence (a padded batch's lengths included) exports with to_onnx: the
    file passes onnx.checker's full check and ONNX Runtime gives graphc's outputs."""
    path = os.path.join(DATA, "rnn_ts_lstmpack_14.onnx")
    model = gc.from_onnx(path).compile()
    feeds = _feeds(onnx.load(path), np.random.default_rng(8))
    want = model.predict(feeds)
    out = str(tmp_path / "again.onnx")
    model.to_onnx(out)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    got = _ort(onnx.load(out), feeds)
    for g, w in zip(got, (want["y"], want["h"])):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["rnn_ts_lstmpack_14", "tf_rnn_revseq_14"])
def test_lengths_outside_the_sequence_are_refused_by_the_entry(name: str) -> None:
    """sequence_lens outside 0 .. T (ONNX Runtime raises: 'Invalid value/s in sequence_lens',
    'Invalid sequence length'): ArgumentError naming the row, the value and the node; 0 runs."""
    model = gc.from_onnx(os.path.join(DATA, f"{name}.onnx")).compile()
    x = np.ones((3, 5, 3), np.float32)
    model.predict({"x": x, "lens": np.array([5, 0, 1])})
    for bad in (6, -1):
        with pytest.raises(
            gc.ArgumentError, match=rf"row 1 holds {bad}\.0.*0\.\.5.*sequence_lens of node"
        ):
            model.predict({"x": x, "lens": np.array([5, bad, 1])})


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_zero_length_rows_end_in_zero_states_as_onnxruntime(op: str) -> None:
    """A row whose sequence_lens is 0, with initial_h (and initial_c) given: ONNX Runtime's
    kernels give it Y_h = Y_c = 0 (and Y = 0), not its initial state, in every direction; the
    other rows keep their last states. Lengths as an int32 input (dynamic batch) and as a
    constant (fixed batch). Before, graphc returned the initial states for such rows (off by
    the whole initial state). (The constant lengths: LSTM only, to keep the test short.)"""
    rng = np.random.default_rng(31)
    g, steps, c_in, hid, n = GATES[op], 3, 2, 3, 3
    vi = helper.make_tensor_value_info
    for const_lens in (False, True) if op == "LSTM" else (False,):
        batch = n if const_lens else "N"
        nodes, inits, outs = [], [], []
        vin = [vi("x", TensorProto.FLOAT, [batch, steps, c_in])]
        feeds = {"x": rng.standard_normal((n, steps, c_in)).astype(np.float32)}
        lens = np.array([0, 2, 3], np.int32)
        if const_lens:
            inits.append(numpy_helper.from_array(lens, "lens"))
        else:
            vin.append(vi("lens", TensorProto.INT32, [batch]))
            feeds["lens"] = lens
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]))
        for k, direction in enumerate(("forward", "reverse", "bidirectional")):
            d = 2 if direction == "bidirectional" else 1
            for nm, shape in (("W", (d, g * hid, c_in)), ("R", (d, g * hid, hid))):
                a = (rng.standard_normal(shape) * 0.7).astype(np.float32)
                inits.append(numpy_helper.from_array(a, f"{nm}{k}"))
            ins = ["xt", f"W{k}", f"R{k}", "", "lens"]
            for st in ("h", "c") if op == "LSTM" else ("h",):
                vin.append(vi(f"{st}0_{k}", TensorProto.FLOAT, [batch, d, hid]))
                feeds[f"{st}0_{k}"] = rng.standard_normal((n, d, hid)).astype(np.float32)
                nodes.append(
                    helper.make_node("Transpose", [f"{st}0_{k}"], [f"{st}t{k}"], perm=[1, 0, 2])
                )
                ins.append(f"{st}t{k}")
            names = [f"Y{k}", f"Yh{k}"] + ([f"Yc{k}"] if op == "LSTM" else [])
            nodes.append(helper.make_node(op, ins, names, hidden_size=hid, direction=direction))
            for j, nm in enumerate(names):
                perm = [2, 0, 1, 3] if j == 0 else [1, 0, 2]
                nodes.append(helper.make_node("Transpose", [nm], [f"o{nm}"], perm=perm))
                outs.append(f"o{nm}")
        graph = helper.make_graph(
            nodes, "g", vin, [vi(o, TensorProto.FLOAT, None) for o in outs], inits
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        m.ir_version = 8
        want = dict(zip(outs, _ort(m, feeds)))
        got = gc.from_onnx(m).compile().predict(feeds)
        for o in outs:
            np.testing.assert_allclose(got[o], want[o], rtol=1e-5, atol=1e-6, err_msg=o)
            if o.startswith(("oYh", "oYc")):
                assert not np.asarray(got[o])[0].any(), o  # the length-0 row's states


def test_thresholded_relu_of_minus_inf_is_zero_as_onnxruntime() -> None:
    """An RNN with ThresholdedRelu whose pre-activation is -inf: 0 (ORT), not 0 * -inf = NaN."""
    vi = helper.make_tensor_value_info
    node = helper.make_node(
        "RNN",
        ["x", "W", "R"],
        ["y"],
        hidden_size=2,
        activations=["ThresholdedRelu"],
        activation_alpha=[0.5],
    )
    weights = [
        numpy_helper.from_array(np.ones((1, 2, 2), np.float32), "W"),
        numpy_helper.from_array(np.full((1, 2, 2), 0.5, np.float32), "R"),
    ]
    graph = helper.make_graph(
        [node],
        "g",
        [vi("x", TensorProto.FLOAT, [2, 1, 2])],
        [vi("y", TensorProto.FLOAT, None)],
        weights,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    x = np.array([[[-np.inf, 1.0]], [[0.3, 0.4]]], np.float32)
    got = gc.from_onnx(m).compile().predict(x)
    np.testing.assert_array_equal(got, _ort(m, {"x": x})[0])
