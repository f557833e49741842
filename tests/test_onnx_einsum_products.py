"""ONNX Einsum of any size and any number of operands as matrix products (graphc's matmul and
batched_matmul after a permute of each term), against ONNX Runtime and numpy float64. Before,
a product past 2**20 elements per sample was refused ('the broadcast product has 8388608
elements per sample': attention 'bhqd,bhkd->bhqk' at T = 256, d = 64), as were a label summed
in one operand only ('nij,jk->nk'), three operands and an output order moving N past axis 1."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError

# (equation, operands): ("x", shape) an input [N, *shape], ("w", shape) an initializer
EQUATIONS = [
    ("nij,njk->nik", [("x", (2, 3)), ("x", (3, 4))]),
    ("nji,nkj->nki", [("x", (3, 2)), ("x", (4, 3))]),
    ("ni,nj->nij", [("x", (3,)), ("x", (4,))]),
    ("ij,nj", [("w", (4, 3)), ("x", (3,))]),
    ("btnh,bsnh->bnts", [("x", (5, 2, 3)), ("x", (6, 2, 3))]),
    ("bhqk,bkhd->bqhd", [("x", (2, 5, 6)), ("x", (6, 2, 4))]),
    ("abd,cde->abce", [("x", (3, 4)), ("w", (2, 4, 5))]),
    ("abcd,cde->abe", [("x", (3, 4, 2)), ("w", (4, 2, 5))]),
    ("...ij,...ij->...", [("x", (2, 3)), ("x", (2, 3))]),
    ("bii,bij->bj", [("x", (3, 3)), ("x", (3, 4))]),
    ("ncij,fcij->nf", [("x", (2, 3, 3)), ("w", (4, 2, 3, 3))]),
    ("i,nj->nij", [("w", (3,)), ("x", (4,))]),
    ("nij,jk->nk", [("x", (2, 3)), ("w", (3, 4))]),
    ("nij,k->njk", [("x", (2, 3)), ("w", (4,))]),
    ("nij,ik->nk", [("x", (2, 3)), ("w", (2, 4))]),
    ("nij,jk,kl->nil", [("x", (2, 3)), ("w", (3, 4)), ("w", (4, 5))]),
    ("ni,nj,nk->nijk", [("x", (2,)), ("x", (3,)), ("x", (4,))]),
    ("nj,ij,nk->kin", [("x", (3,)), ("w", (4, 3)), ("x", (2,))]),
    ("ni,nij->jin", [("x", (3,)), ("x", (3, 2))]),
    ("nij->jni", [("x", (3, 2))]),
    (",ni->ni", [("w", ()), ("x", (3,))]),
    ("ni,->n", [("x", (3,)), ("w", ())]),
]


def _model(cases, opset: int = 12):
    rng = np.random.default_rng(0)
    nodes, inputs, inits = [], [], []
    for k, (eq, specs) in enumerate(cases):
        names = []
        for j, (kind, shape) in enumerate(specs):
            name = f"{kind}{k}_{j}"
            names.append(name)
            if kind == "x":
                dims = ["N", *shape]
                inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
            else:
                w = rng.standard_normal(shape).astype(np.float32)
                inits.append(numpy_helper.from_array(w, name))
        nodes.append(helper.make_node("Einsum", names, [f"y{k}"], equation=eq))
    outs = [
        helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None) for k in range(len(cases))
    ]
    m = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outs, inits),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    m.ir_version = 7
    return m


def _feeds(m, n: int, rng) -> dict:
    return {
        i.name: rng.standard_normal(
            [n if d.dim_param else d.dim_value for d in i.type.tensor_type.shape.dim]
        ).astype(np.float32)
        for i in m.graph.input
    }


def _ort(m, feeds) -> list:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_einsum_equations_match_onnxruntime() -> None:
    """Batched, transposed, summed-out, diagonal, three-operand, N-moving and rank-0-operand
    equations: shape and values equal ONNX Runtime's at batches 1 and 3."""
    m = _model(EQUATIONS)
    model = gc.from_onnx(m).compile()
    rng = np.random.default_rng(1)
    for n in (1, 3):
        feeds = _feeds(m, n, rng)
        got = model.predict(feeds)
        for k, ((eq, _), want) in enumerate(zip(EQUATIONS, _ort(m, feeds))):
            assert got[f"y{k}"].shape == want.shape, eq
            np.testing.assert_allclose(got[f"y{k}"], want, rtol=1e-5, atol=1e-5, err_msg=eq)


def test_attention_past_the_old_size_cap() -> None:
    """Scores 'bhqd,bhkd->bhqk', softmax, weighted values 'bhqk,bhkd->bhqd' at H = 2, T = 256,
    d = 64 (8.4M products per sample, past the old 2**20), and Keras's term order
    'bqhd,bkhd->bhqk': equal numpy float64 (1e-5 relative to the largest) and ONNX Runtime."""
    f = TensorProto.FLOAT
    h, t, d = 2, 256, 64
    nodes = [
        helper.make_node("Einsum", ["q", "k"], ["s"], equation="bhqd,bhkd->bhqk"),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("Einsum", ["p", "v"], ["y"], equation="bhqk,bhkd->bhqd"),
        helper.make_node("Einsum", ["qk", "kk"], ["sk"], equation="bqhd,bkhd->bhqk"),
    ]
    inputs = [
        helper.make_tensor_value_info(n, f, ["N", *shape])
        for n, shape in [("q", (h, t, d)), ("k", (h, t, d)), ("v", (h, t, d))]
        + [("qk", (t, h, d)), ("kk", (t, h, d))]
    ]
    outs = [helper.make_tensor_value_info(n, f, None) for n in ("s", "y", "sk")]
    m = helper.make_model(
        helper.make_graph(nodes, "att", inputs, outs), opset_imports=[helper.make_opsetid("", 12)]
    )
    m.ir_version = 7
    rng = np.random.default_rng(2)
    feeds = {k: (0.2 * v).astype(np.float32) for k, v in _feeds(m, 2, rng).items()}
    got = gc.from_onnx(m).compile().predict(feeds)
    q, k, v, qk, kk = (feeds[n].astype(np.float64) for n in ("q", "k", "v", "qk", "kk"))
    s = np.einsum("bhqd,bhkd->bhqk", q, k)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = {"s": s, "y": np.einsum("bhqk,bhkd->bhqd", p, v)}
    want["sk"] = np.einsum("bqhd,bkhd->bhqk", qk, kk)
    for name, ref in zip(("s", "y", "sk"), _ort(m, feeds)):
        scale = np.abs(want[name]).max()
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(got[name], ref, rtol=0, atol=1e-5 * scale)


def test_training_through_einsum_matches_numpy() -> None:
    """y = einsum('abc,cde->abde', x, w) (Keras's EinsumDense, w trainable) then
    einsum('abde,e->ab', y, u) with u trainable (d summed in y alone), mean squared error
    against t: one SGD step of both weights equals numpy float64's (1e-5)."""
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((4, 2, 5)).astype(np.float32)
    u0 = rng.standard_normal(5).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Einsum", ["x", "w"], ["y"], equation="abc,cde->abde"),
            helper.make_node("Einsum", ["y", "u"], ["z"], equation="abde,e->ab"),
        ],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w0, "w"), numpy_helper.from_array(u0, "u")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    m.ir_version = 7
    imp = gc.from_onnx(m)
    target = gc.input("t", ("N", 3))
    model = imp.compile(gc.mean_squared_error(imp.outputs[0], target), gc.SGD(0.1))
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    t = rng.standard_normal((5, 3)).astype(np.float32)
    xd, w, u = x.astype(np.float64), w0.astype(np.float64), u0.astype(np.float64)
    y = np.einsum("abc,cde->abde", xd, w)
    dz = 2 * (np.einsum("abde,e->ab", y, u) - t) / t.size
    dw = np.einsum("abc,ab,d,e->cde", xd, dz, np.ones(2), u)
    du = np.einsum("abde,ab->e", y, dz)
    model.fit({"x": x}, {"t": t}, epochs=1, batch_size=5, shuffle=False, verbose=0)
    by_shape = {np.shape(v): np.asarray(v, np.float64) for v in model.params.values()}
    np.testing.assert_allclose(by_shape[(4, 2, 5)], w - 0.1 * dw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_shape[(5,)], u - 0.1 * du, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("eq", "specs", "message"),
    [
        ("ni,mj->nmij", [("x", (3,)), ("x", (2,))], r"labels \('n', 'm'\): a product across"),
        ("nij,nij->j", [("x", (2, 3)), ("x", (2, 3))], "sums over the batch dimension N"),
        ("nij,jk,nk->i", [("x", (2, 3)), ("w", (3, 4)), ("x", (4,))], "batch dimension N"),
        ("nij,jk->nkk", [("x", (2, 3)), ("w", (3, 4))], "a label repeated in the output"),
        ("nij,jk->nl", [("x", (2, 3)), ("w", (3, 4))], "an output label is in no input"),
    ],
)
def test_refusals_name_the_equation(eq: str, specs: list, message: str) -> None:
    with pytest.raises(OnnxError, match=rf"Einsum, opset 12\): equation '.*{message}"):
        gc.from_onnx(_model([(eq, specs)]))
