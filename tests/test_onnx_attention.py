"""torch's attention exports through ONNX import (layout views, graphc/onnx_layout.py).

nn.MultiheadAttention (batch first and sequence first, key_padding_mask, a causal attn_mask,
need_weights, a sequence of length 1, cross-attention with kdim/vdim returning per-head
weights), nn.TransformerDecoderLayer, nn.TransformerEncoderLayer (post-norm ReLU, pre-norm GELU), a 2-layer
nn.TransformerEncoder classifier and F.scaled_dot_product_attention, as both torch exporters
write them (tests/data/onnx/attn_ts_*: TorchScript, opsets 14 and 17; attn_dyn_*: dynamo,
opsets 18 and 20; made by export_torch_attn.py): they move the batch axis N (Transpose [N, L, E] ->
[L, N, E]) and merge it with the heads ([L, N*H, hd], [N*H, L, hd]). Each file against ONNX
Runtime at batches 1, 3 and 8; the gradient of an imported MultiheadAttention against central
differences of its float64 formula; views built by hand (pooling over the sequence axis,
Softmax along it, broadcast constants) against ONNX Runtime; refusals of a view graphc cannot
lay out. The 48 files are imported side by side into one compiled model (module fixture),
whose kernels the files share: the file takes ~12 s cold (~30 s with a compile per file).
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
NAMES = ("mha_bf", "mha_sf", "mha_w", "mha_kpm", "mha_causal", "mha_l1", "enc_post_relu")
NAMES += ("enc_pre_gelu", "cls", "sdpa", "cross", "dec")
FILES = [f"attn_ts_{n}_{o}.onnx" for n in NAMES for o in (14, 17)]
FILES += [f"attn_dyn_{n}_{o}.onnx" for n in NAMES for o in (18, 20)]


def _ort(m, feeds):
    data = m if isinstance(m, str) else m.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_fixture_list_is_complete() -> None:
    have = {os.path.basename(p) for p in glob.glob(os.path.join(DATA, "*.onnx"))}
    assert set(FILES) <= have


@pytest.fixture(scope="module")
def all_files_run():
    """Every file imported (each under its own prefix) into one compiled model, run at batches
    1, 3 and 8 on random feeds, and the same feeds through ONNX Runtime: file -> [(batch,
    graphc outputs by ONNX name, ONNX Runtime's outputs by name)]. One compile instead of 27
    distinct ones (the files share most kernels, which a model emits once): ~4 s cold against
    ~30 s."""
    imps = {
        name: gc.from_onnx(os.path.join(DATA, name), prefix=f"f{i}_")
        for i, name in enumerate(FILES)
    }
    model = gc.compile([o for imp in imps.values() for o in imp.outputs], name="attn_all")
    sessions = {
        name: ort.InferenceSession(os.path.join(DATA, name), providers=["CPUExecutionProvider"])
        for name in FILES
    }
    runs: dict[str, list] = {name: [] for name in FILES}
    for batch in (1, 3, 8):
        rng = np.random.default_rng(batch)
        feeds_of, graphc_feeds = {}, {}
        for name, sess in sessions.items():
            feeds = {}
            for i in sess.get_inputs():
                shape = [batch, *i.shape[1:]]
                if i.type == "tensor(bool)":  # key_padding_mask: True = a padded key (not all)
                    feeds[i.name] = rng.random(shape) < 0.4
                    feeds[i.name][:, 0] = False
                else:
                    feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
                graphc_feeds[imps[name].input_names[i.name]] = feeds[i.name].astype(np.float32)
            feeds_of[name] = feeds
        got = model.predict(graphc_feeds)
        for name, sess in sessions.items():
            want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds_of[name])))
            mine = {o: got[imps[name].output_names[o]] for o in want}
            runs[name].append((batch, mine, want))
    return runs


@pytest.mark.parametrize("name", FILES)
def test_torch_attention_export_matches_onnxruntime(name: str, all_files_run) -> None:
    for batch, got, want in all_files_run[name]:
        for o, w in want.items():
            assert got[o].shape == w.shape
            np.testing.assert_allclose(got[o], w, rtol=1e-4, atol=1e-5, err_msg=f"{o} {batch}")


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


def _heads_by_chunks(kind: str, opset: int):
    """Attention as older torch exports wrote it: [N, L, E] -> [L, N, E] -> one projection ->
    q, k, v by Split (the split attribute before opset 13) or three Slices of the last axis ->
    [L, N*H, hd] (the size from Shape arithmetic) -> [N*H, L, hd] -> Softmax (the 2-D
    coercion before opset 13) -> the heads' output and q joined by Concat -> [N, L, H, 2 hd]."""
    n_l, e, h = 5, 8, 2
    hd = e // h
    rng = np.random.default_rng(opset)
    w = rng.standard_normal((e, 3 * e)).astype(np.float32) / 3
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["t", "w"], ["qkv"]),
    ]
    if kind == "split" and opset < 13:
        nodes.append(helper.make_node("Split", ["qkv"], list("qkv"), axis=2, split=[e] * 3))
    elif kind == "split":
        nodes.append(helper.make_node("Split", ["qkv", "sp"], list("qkv"), axis=-1))
    else:
        for i, nm in enumerate("qkv"):
            nodes.append(helper.make_node("Slice", ["qkv", f"s{i}", f"e{i}", "ax"], [nm]))
    unsq = (
        helper.make_node("Unsqueeze", ["nh", "zero"], ["nh1"])
        if opset >= 13
        else helper.make_node("Unsqueeze", ["nh"], ["nh1"], axes=[0])
    )
    nodes += [
        helper.make_node("Shape", ["t"], ["sh"]),
        helper.make_node("Gather", ["sh", "one"], ["n"], axis=0),
        helper.make_node("Mul", ["n", "hh"], ["nh"]),
        unsq,
        helper.make_node("Concat", ["el", "nh1", "hd"], ["shp"], axis=0),
    ]
    for nm in "qkv":
        nodes += [
            helper.make_node("Reshape", [nm, "shp"], [nm + "r"]),
            helper.make_node("Transpose", [nm + "r"], [nm + "h"], perm=[1, 0, 2]),
        ]
    nodes += [
        helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["qh", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["a"], axis=2),
        helper.make_node("MatMul", ["a", "vh"], ["o"]),
        helper.make_node("Concat", ["o", "qh"], ["oc"], axis=2),
        helper.make_node("Transpose", ["oc"], ["ot"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["ot", "back"], ["y4"]),
        helper.make_node("Transpose", ["y4"], ["y"], perm=[1, 0, 2, 3]),
    ]
    inits = [numpy_helper.from_array(w, "w"), _i64("sp", [e] * 3), _i64("ax", [2])]
    inits += [_i64("one", 1), _i64("hh", h), _i64("zero", [0]), _i64("el", [n_l])]
    inits += [_i64("hd", [hd]), _i64("back", [n_l, -1, h, 2 * hd])]
    for i in range(3):
        inits += [_i64(f"s{i}", [i * e]), _i64(f"e{i}", [(i + 1) * e])]
    used = {i for nd in nodes for i in nd.input}
    inits = [t for t in inits if t.name in used]
    return _model(nodes, [_vi("x", ["N", n_l, e])], [_vi("y", None)], inits, opset)


@pytest.mark.parametrize(("kind", "opset"), [("split", 11), ("slice", 17)])
def test_heads_split_by_chunks_and_joined_by_concat_match_onnxruntime(kind, opset) -> None:
    m = _heads_by_chunks(kind, opset)
    model = gc.from_onnx(m).compile()
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 5, 8)).astype(np.float32)
        want = _ort(m, {"x": x})[0]
        assert want.shape == (batch, 5, 2, 8)
        np.testing.assert_allclose(model.predict(x), want, rtol=1e-4, atol=1e-5)


def test_sequence_first_graph_input_takes_the_batch_at_axis_1() -> None:
    """An input [L, N, E] (nn.MultiheadAttention with batch_first=False exported with the batch
    at axis 1): predict takes it in that layout (Model.input_batch_axes) and returns y as ONNX
    Runtime does; with L symbolic too, the message says dims fixes L."""
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [5, "batch", 8])], [_vi("y", None)]
    )
    model = gc.from_onnx(m).compile()
    x = np.random.default_rng(2).standard_normal((5, 3, 8)).astype(np.float32)
    want = _ort(m, {"x": x})[0]
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-6)
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["L", "batch", 8])], [_vi("y", None)]
    )
    with pytest.raises(OnnxError, match=r"dimension 1 is symbolic.*dims=\{'L': size\}"):
        gc.from_onnx(m)


def _random_chain(rng, k: int, nodes: list, inits: list, steps: int = 6) -> str:
    """A random chain of ops from x [N, 2, 3, 4] that move N (Transpose), merge it with fixed
    axes or split them (Reshape), and compute through the view (broadcast constants, products
    of views, Softmax, Reduce*, Gather, Unsqueeze/Squeeze, Concat, Slice, MatMul by a weight,
    LayerNormalization), then N back to the front and flattened to [N, -1]. ``axes`` tracks
    each ONNX axis's parts in row-major order ("N" or fixed sizes)."""
    axes: list[list] = [["N"], [2], [3], [4]]
    cur = "x"

    def nm(s: str) -> str:
        return f"c{k}_{len(nodes)}_{s}"

    def size(a: list) -> int:
        return -1 if "N" in a else int(np.prod(a))

    def const(a, name: str) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    def fixed(pred=lambda a: True) -> int | None:
        cand = [i for i, a in enumerate(axes) if "N" not in a and pred(a)]
        return int(rng.choice(cand)) if cand else None

    def node(op, ins, **attrs) -> None:
        nodes.append(helper.make_node(op, ins, [out], **attrs))

    ops = ["transpose", "merge", "split", "add", "mulself", "softmax", "reduce", "gather"]
    ops += ["unsqueeze", "squeeze", "concat", "slice", "matmul", "layernorm"]
    for _ in range(steps):
        op, r = str(rng.choice(ops)), len(axes)
        out = nm(op)
        if op == "transpose":
            perm = [int(p) for p in rng.permutation(r)]
            node("Transpose", [cur], perm=perm)
            axes = [axes[p] for p in perm]
        elif op == "merge" and r >= 2:
            i = int(rng.integers(r - 1))
            axes = axes[:i] + [axes[i] + axes[i + 1]] + axes[i + 2 :]
            node("Reshape", [cur, const(np.array([size(a) for a in axes]), nm("s"))])
        elif op == "split" and (i := fixed(lambda a: a[0] in (4, 6) or len(a) > 1)) is not None:
            a = axes[i]
            axes = (
                axes[:i] + ([[v] for v in a] if len(a) > 1 else [[2], [a[0] // 2]]) + axes[i + 1 :]
            )
            node("Reshape", [cur, const(np.array([size(a) for a in axes]), nm("s"))])
        elif op == "add":
            shape = [1 if ("N" in a or rng.random() < 0.4) else size(a) for a in axes]
            node("Add", [cur, const(rng.standard_normal(shape).astype(np.float32), nm("c"))])
        elif op == "mulself":
            node("Mul", [cur, cur])
        elif op == "softmax" and (i := fixed()) is not None:
            node("Softmax", [cur], axis=i)
        elif op == "reduce" and (i := fixed()) is not None:
            keep = int(rng.integers(2))
            node("ReduceMax", [cur, const(np.array([i]), nm("a"))], keepdims=keep)
            axes = axes[:i] + [[1]] * keep + axes[i + 1 :]
        elif op == "gather" and (i := fixed(lambda a: size(a) > 1)) is not None:
            idx = rng.integers(size(axes[i]), size=3 if rng.random() < 0.5 else ())
            node("Gather", [cur, const(idx, nm("i"))], axis=i)
            axes = axes[:i] + [[3]] * idx.ndim + axes[i + 1 :]
        elif op == "unsqueeze":
            i = int(rng.integers(r + 1))
            node("Unsqueeze", [cur, const(np.array([i]), nm("a"))])
            axes = axes[:i] + [[1]] + axes[i:]
        elif op == "squeeze" and (i := fixed(lambda a: size(a) == 1)) is not None:
            node("Squeeze", [cur, const(np.array([i]), nm("a"))])
            axes = axes[:i] + axes[i + 1 :]
        elif op == "concat" and (i := fixed()) is not None:
            node("Concat", [cur, cur], axis=i)
            axes = axes[:i] + [[2 * size(axes[i])]] + axes[i + 1 :]
        elif op == "slice" and (i := fixed(lambda a: size(a) > 1)) is not None:
            se = [
                const(np.array([v]), nm(s)) for v, s in ((1, "b"), (size(axes[i]), "e"), (i, "a"))
            ]
            node("Slice", [cur, *se])
            axes = axes[:i] + [[size(axes[i]) - 1]] + axes[i + 1 :]
        elif op == "matmul" and r >= 2 and "N" not in axes[-1]:
            w = rng.standard_normal((size(axes[-1]), 3)).astype(np.float32)
            node("MatMul", [cur, const(w, nm("w"))])
            axes = axes[:-1] + [[3]]
        elif op == "layernorm" and "N" not in axes[-1]:
            g = np.full(size(axes[-1]), 1.5, np.float32)
            node("LayerNormalization", [cur, const(g, nm("g"))], axis=-1, epsilon=0.5)
        else:
            continue
        cur = out
    i = next(i for i, a in enumerate(axes) if "N" in a)
    if len(axes[i]) > 1:  # N's axis split into its parts
        axes = axes[:i] + [[v] for v in axes[i]] + axes[i + 1 :]
        out = nm("unmerge")
        node("Reshape", [cur, const(np.array([size(b) for b in axes]), nm("s"))])
        cur = out
    i = next(i for i, a in enumerate(axes) if a == ["N"])
    out = front = nm("front")
    node("Transpose", [cur], perm=[i] + [j for j in range(len(axes)) if j != i])
    out = f"y{k}"
    node("Reshape", [front, const(np.array([0, -1]), nm("flat"))])
    return out


def test_random_view_chains_match_onnxruntime() -> None:
    """Eight random chains per model (see _random_chain), two models (seeds 3 and 11) imported
    side by side into one compile, against ONNX Runtime (they found a Reshape's merged rows
    read as plain rows, an Unsqueeze of merged rows applied to graphc's axes, and Softmax /
    LayerNormalization / Concat on axes the view had merged)."""
    cases, outputs, feeds = [], [], {}
    for seed in (3, 11):
        rng = np.random.default_rng(seed)
        nodes, inits = [], []
        outs = [_random_chain(rng, k, nodes, inits) for k in range(8)]
        m = _model(nodes, [_vi("x", ["N", 2, 3, 4])], [_vi(o, None) for o in outs], inits, 18)
        imp = gc.from_onnx(m, prefix=f"s{seed}_")
        feeds[imp.input_names["x"]] = x = rng.standard_normal((3, 2, 3, 4), np.float32)
        outputs += imp.outputs
        cases.append((seed, outs, imp, _ort(m, {"x": x})))
    got = gc.compile(outputs, name="view_chains").predict(feeds)
    for seed, outs, imp, wants in cases:
        for o, want in zip(outs, wants):
            g = got[imp.output_names[o]]
            np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5, err_msg=f"{seed} {o}")
