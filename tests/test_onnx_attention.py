"""torch's attention exports through ONNX import (layout views, graphc/onnx_layout.py).

nn.MultiheadAttention (batch first and sequence first, key_padding_mask, a causal attn_mask,
need_weights), nn.TransformerEncoderLayer (post-norm ReLU, pre-norm GELU), a 2-layer
nn.TransformerEncoder classifier and F.scaled_dot_product_attention, as both torch exporters
write them (tests/data/onnx/attn_ts_*: TorchScript, opsets 14 and 17; attn_dyn_*: dynamo,
opsets 18 and 20; made by export_torch_attn.py): they move the batch axis N (Transpose [N, L, E] ->
[L, N, E]) and merge it with the heads ([L, N*H, hd], [N*H, L, hd]). Each file against ONNX
Runtime at batches 1, 3 and 8; the gradient of an imported MultiheadAttention against central
differences of its float64 formula; views built by hand (pooling over the sequence axis,
Softmax along it, broadcast constants) against ONNX Runtime; refusals of a view graphc cannot
lay out. Cost: ~14 s (about 20 distinct graphs compiled; opsets often give the same graph).
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from conftest import numeric_grad

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")
NAMES = ("mha_bf", "mha_sf", "mha_w", "mha_kpm", "mha_causal", "enc_post_relu")
NAMES += ("enc_pre_gelu", "cls", "sdpa")
FILES = [f"attn_ts_{n}_{o}.onnx" for n in NAMES for o in (14, 17)]
FILES += [f"attn_dyn_{n}_{o}.onnx" for n in NAMES for o in (18, 20)]


def _ort(m, feeds):
    data = m if isinstance(m, str) else m.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_fixture_list_is_complete() -> None:
    have = {os.path.basename(p) for p in glob.glob(os.path.join(DATA, "*.onnx"))}
    assert set(FILES) <= have


@pytest.mark.parametrize("name", FILES)
def test_torch_attention_export_matches_onnxruntime(name: str) -> None:
    path = os.path.join(DATA, name)
    model = gc.from_onnx(path).compile()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        rng = np.random.default_rng(batch)
        x = rng.standard_normal((batch, 5, 8)).astype(np.float32)
        feeds = {"x": x}
        if "kpm" in name:  # key_padding_mask: True = a padded key (never all of a row)
            pad = rng.random((batch, 5)) < 0.4
            pad[:, 0] = False
            feeds["pad"] = pad
        want = sess.run(None, feeds)[0]
        got = model.predict({k: v.astype(np.float32) for k, v in feeds.items()})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"batch {batch}")


def _mha64(x, w_in_t, b_in, w_out, b_out, heads=2):
    """nn.MultiheadAttention's formula (batch first, no masks) in float64: the projections
    q, k, v = x @ W_in^T + b_in split in three, heads of E / H features, softmax(q k^T /
    sqrt(hd)) v, the heads concatenated, then x @ W_out^T + b_out."""
    n, seq, e = x.shape
    hd = e // heads
    q, k, v = np.split(x @ w_in_t + b_in, 3, axis=-1)
    q, k, v = (z.reshape(n, seq, heads, hd).transpose(0, 2, 1, 3) for z in (q, k, v))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(n, seq, e)
    return o @ w_out.T + b_out


def test_imported_multihead_attention_trains_gradient_vs_central_differences() -> None:
    path = os.path.join(DATA, "attn_ts_mha_bf_17.onnx")
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    w_in_t = next(a for a in inits.values() if a.shape == (8, 24))
    b_in, w_out, b_out = (
        inits["mha.in_proj_bias"],
        inits["mha.out_proj.weight"],
        inits["mha.out_proj.bias"],
    )
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(
        _mha64(x64, w_in_t, b_in, w_out, b_out), _ort(path, {"x": x})[0], rtol=1e-5, atol=1e-6
    )
    imp = gc.from_onnx(m)
    r = rng.standard_normal((5, 8)).astype(np.float32)
    loss = gc.sum(gc.mul(imp.outputs[0], gc.constant(r)))
    model = gc.compile(imp.outputs, loss, gc.SGD(lr=0.1), name="mha_grad")
    grads = model.gradients(x)
    by_origin = {t.node.origin.split()[-1]: k for k, t in imp.params.items()}
    w_name = next(n for n, a in inits.items() if a.shape == (8, 24))
    got_w = grads[by_origin[w_name]]
    got_b = grads[by_origin["mha.in_proj_bias"]]

    def loss_w(w):
        return np.sum(_mha64(x64, w, b_in, w_out, b_out) * r)

    def loss_b(b):
        return np.sum(_mha64(x64, w_in_t, b, w_out, b_out) * r)

    np.testing.assert_allclose(got_w, numeric_grad(loss_w, [w_in_t], 0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(got_b, numeric_grad(loss_b, [b_in], 0), rtol=1e-3, atol=1e-5)


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def test_sequence_first_views_by_hand_match_onnxruntime() -> None:
    """[N, L, E] -> [L, N, E] (a view), then: ReduceMean over L (keepdims 0: the classifier's
    pooling), Softmax along L, LayerNormalization over E, a constant [L, 1, E] added
    (broadcast along N), a weight [E, P] multiplied, Unsqueeze / Squeeze / Gather of the L
    axis, and back to [N, ...] for the outputs."""
    rng = np.random.default_rng(3)
    c = rng.standard_normal((4, 1, 6)).astype(np.float32)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    scale = rng.standard_normal(6).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
        helper.make_node("Add", ["t", "c"], ["tc"]),
        helper.make_node("ReduceMean", ["tc"], ["pool"], axes=[0], keepdims=0),
        helper.make_node("Softmax", ["tc"], ["sm"], axis=0),
        helper.make_node("LayerNormalization", ["sm", "scale"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "w"], ["p"]),
        helper.make_node("Unsqueeze", ["p", "ax0"], ["u"]),
        helper.make_node("Squeeze", ["u", "ax0"], ["q"]),
        helper.make_node("Transpose", ["q"], ["y"], perm=[1, 0, 2]),
        helper.make_node("Gather", ["q", "i2"], ["row"], axis=0),
    ]
    inits = [
        numpy_helper.from_array(c, "c"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(scale, "scale"),
        _i64("ax0", [0]),
        numpy_helper.from_array(np.array(2, np.int64), "i2"),
    ]
    outs = [_vi("pool", None), _vi("y", None), _vi("row", None)]
    m = _model(nodes, [_vi("x", ["N", 4, 6])], outs, inits)
    model = gc.from_onnx(m).compile()
    for batch in (1, 3):
        x = rng.standard_normal((batch, 4, 6)).astype(np.float32)
        got = model.predict(x)
        for k, want in zip(("pool", "y", "row"), _ort(m, {"x": x})):
            np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6, err_msg=k)


def test_views_graphc_cannot_lay_out_are_refused_naming_node_and_shapes() -> None:
    # an output merging N with the sequence axis ([L, N, E] -> [L*N, E]: ONNX Runtime returns
    # L rows per sample, sequence first)
    merged = _model(
        [
            helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
            helper.make_node("Reshape", ["t", "s"], ["y"]),
        ],
        [_vi("x", ["N", 3, 4])],
        [_vi("y", None)],
        [_i64("s", [-1, 4])],
    )
    with pytest.raises(OnnxError, match=r"output 'y'.*\[N\*3,4\].*merges the batch dimension N"):
        gc.from_onnx(merged)
    # an op without a view rule (TopK) on a value whose N is at axis 1
    topk = _model(
        [
            helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
            helper.make_node("TopK", ["t", "k"], ["v", "i"], axis=-1),
            helper.make_node("Transpose", ["v"], ["y"], perm=[1, 0, 2]),
        ],
        [_vi("x", ["N", 3, 4])],
        [_vi("y", None)],
        [_i64("k", [2])],
    )
    with pytest.raises(
        OnnxError,
        match=r"node 1 .*TopK.*TopK needs the value in its ONNX layout \[3,N,4\].*moves the "
        r"batch dimension N to axis 1.*graphc \[N,3,4\]",
    ):
        gc.from_onnx(topk)
