"""ONNX files as exporters other than torch write them, against ONNX Runtime on the same inputs.

tf2onnx's files (tests/data/onnx/tf_*.onnx, made by tests/data/onnx/export_tf.py: TensorFlow is
no graphc dependency) keep Keras's patterns: Keras 3's Embedding computes with its integer id
input before the Gather; integer-typed arithmetic in a graph (Div truncates) follows ONNX's
integer semantics. Hand-built graphs (onnx.helper) reproduce the patterns with edge values."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import ArgumentError, OnnxError

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _ort(m, feeds):
    src = m if isinstance(m, str) else m.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_keras_embedding_wraps_negative_ids_with_integer_arithmetic() -> None:
    # Keras 3's Embedding: ids' = where(ids < 0, ids + V, ids) as Add/Cast/Less/Not/Mul on the
    # int32 input, then Gather; the int input was refused ("used as an integer")
    path = os.path.join(DATA, "tf_embed_13.onnx")
    ids = np.random.default_rng(0).integers(-20, 20, (9, 7)).astype(np.int32)
    ids[0] = [-20, -1, 0, 19, 5, -7, 3]
    model = gc.from_onnx(path).compile()
    (ref,) = _ort(path, {"ids": ids})
    np.testing.assert_allclose(model.predict(ids), ref, rtol=1e-6, atol=1e-7)
    # float32 is exact on whole numbers below 2**24 only: larger ids are refused, by name
    big = ids.copy()
    big[4, 2] = 2**24 + 1
    with pytest.raises(ArgumentError, match=r"ids.*row 4"):
        model.predict(big)


def test_integer_division_truncates_as_onnxruntime() -> None:
    # an integer Div (ArgMax - 3) / 2 and an int64 input divided by signed divisors: graphc
    # computed x / y in float (-3 / 2 = -1.5 where ONNX Runtime gives -1)
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("ArgMax", ["x"], ["a"], axis=1, keepdims=1),
        helper.make_node("Sub", ["a", "three"], ["s"]),
        helper.make_node("Div", ["s", "two"], ["d"]),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["k", "divisors"], ["q"]),
        helper.make_node("Cast", ["q"], ["z"], to=TensorProto.FLOAT),
    ]
    inits = [
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array(3, np.int64), "three"),
        numpy_helper.from_array(np.array([2, -3, 7, -1, 16777213], np.int64), "divisors"),
    ]
    m = _model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
            helper.make_tensor_value_info("k", i64, ["N", 5]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 5]),
        ],
        inits,
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    k = rng.integers(-(2**24) + 1, 2**24, (64, 5)).astype(np.int64)
    k[:8] = [[-3, 3, 7, 0, 16777212], [3, -3, -7, 5, -16777212], [-1, 1, 6, -1, 16777213]] + [
        [2**24 - 1, -(2**24) + 1, 2**24 - 1, 2**24 - 1, -16777213]
    ] * 5
    got = gc.from_onnx(m).compile().predict({"x": x, "k": k})
    ref_y, ref_z = _ort(m, {"x": x, "k": k})
    np.testing.assert_array_equal(got["y"], ref_y)
    np.testing.assert_array_equal(got["z"], ref_z)


def test_integer_input_through_arithmetic_the_float_path_cannot_mirror_is_refused() -> None:
    # an int input reaching a MatMul is integer arithmetic graphc does not compute: named
    m = _model(
        [
            helper.make_node("MatMul", ["k", "w"], ["p"]),
            helper.make_node("Cast", ["p"], ["y"], to=1),
        ],
        [helper.make_tensor_value_info("k", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.eye(2, dtype=np.int64), "w")],
    )
    with pytest.raises(OnnxError, match=r"input 'k'.*int64 used as an integer"):
        gc.from_onnx(m)


def _shape_back(x: str, keep: int, tail: list[int], out: str) -> list:
    """tf2onnx's shape computation for the Reshape back: Shape(x)[:keep] ++ tail."""
    return [
        helper.make_node("Shape", [x], [out + "_s"]),
        helper.make_node("Gather", [out + "_s", out + "_free"], [out + "_g"], axis=0),
        helper.make_node("Concat", [out + "_g", out + "_tail"], [out], axis=0),
    ], [
        numpy_helper.from_array(np.arange(keep, dtype=np.int64), out + "_free"),
        numpy_helper.from_array(np.array(tail, np.int64), out + "_tail"),
    ]


@pytest.mark.parametrize("opset", [11, 17])
def test_tf2onnx_tensordot_rows_merged_with_the_batch(opset: int) -> None:
    # Keras's Dense on a sequence: Reshape [N, T, C] -> [-1, C], MatMul/Gemm, row-wise ops,
    # Reshape back to Shape(x)[:2] ++ [P]; the first Reshape was refused ("would merge the
    # batch dimension N with others"). Two branches of merged rows meet in an Add; Softmax's
    # axis=1 (the columns of the merged [-1, P]) and LayerNormalization over the last axis.
    rng = np.random.default_rng(3)
    f = TensorProto.FLOAT
    back, back_inits = _shape_back("x", 3, [4], "back")
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["r"]),
        helper.make_node("Gemm", ["r", "w1", "b1"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["h"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["h", "m"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["sc"]),
        helper.make_node("Softmax", ["sc"], ["p"], axis=1),
        *back,
        helper.make_node("Reshape", ["p", "back"], ["y"]),
        helper.make_node("Reshape", ["s", "flat4"], ["s4"]),  # [-1, 2, 4]: N and one axis merged
        helper.make_node("Tanh", ["s4"], ["t4"]),
        helper.make_node("Reshape", ["t4", "all"], ["z"]),  # [-1, 2, 3, 4]: N alone again
    ]
    inits = [
        numpy_helper.from_array(np.array([-1, 6], np.int64), "flat"),
        numpy_helper.from_array(np.array([-1, 2, 4], np.int64), "flat4"),
        numpy_helper.from_array(np.array([-1, 2, 3, 4], np.int64), "all"),
        numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((1, 4)).astype(np.float32), "scale"),
        *back_inits,
    ]
    if opset >= 17:  # LayerNormalization before the softmax, on the merged rows
        nodes[5:6] = [
            helper.make_node("LayerNormalization", ["s", "gam", "bet"], ["ln"], axis=-1),
            helper.make_node("Mul", ["ln", "scale"], ["sc"]),
        ]
        inits += [
            numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "gam"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bet"),
        ]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", f, ["batch", 2, 3, 6])],
        [
            helper.make_tensor_value_info("y", f, ["batch", 2, 3, 4]),
            helper.make_tensor_value_info("z", f, ["batch", 2, 3, 4]),
        ],
        inits,
        opset,
    )
    model = gc.from_onnx(m).compile()
    for n in (5, 1):
        x = rng.standard_normal((n, 2, 3, 6)).astype(np.float32)
        got = model.predict(x)
        ref_y, ref_z = _ort(m, {"x": x})
        np.testing.assert_allclose(got["y"], ref_y, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(got["z"], ref_z, rtol=2e-6, atol=1e-6)


def test_keras_dense_on_a_sequence_as_tf2onnx_writes_it() -> None:
    # tests/data/onnx/tf_seq_dense_*.onnx: Dense -> LayerNormalization -> Dense on [N, 3, 6],
    # GlobalAveragePooling1D, softmax; dynamic batch (opsets 13, 18) and a batch of 1
    rng = np.random.default_rng(4)
    for name, sizes in (("13", (5, 1)), ("18", (2,)), ("b1_13", (1,))):
        path = os.path.join(DATA, f"tf_seq_dense_{name}.onnx")
        model = gc.from_onnx(path).compile()
        for n in sizes:
            x = rng.standard_normal((n, 3, 6)).astype(np.float32)
            (ref,) = _ort(path, {"x": x})
            np.testing.assert_allclose(model.predict(x), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(gc.GraphcError, match=r"f32\[1,3,6\]"):  # the file fixes the batch
        model.predict(rng.standard_normal((2, 3, 6)).astype(np.float32))


@pytest.mark.parametrize(
    "case, message",
    [
        ("output", r"output 'r' merges the batch dimension N with the axes \[3\]"),
        ("reduce", r"ReduceSum.*not row-wise.*axes \[3\] merged"),
        ("softmax0", r"axis=0 normalizes along the merged rows"),
        (
            "part",
            r"would merge the batch dimension N with part of a sample \(18 values in rows of 4\)",
        ),
        ("per_sample", r"shape \[N\] broadcasts along the merged rows"),
    ],
)
def test_merged_rows_used_across_rows_are_refused_by_name(case: str, message: str) -> None:
    # ONNX Runtime computes these ([N*3, 6] values); graphc keeps N apart and says which node
    f = TensorProto.FLOAT
    flat = [-1, 4] if case == "part" else [-1, 6]
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["r"])]
    outs = {"output": "r", "part": "r"}
    if case == "reduce":
        nodes.append(helper.make_node("ReduceSum", ["r", "ax"], ["y"], keepdims=0))
    elif case == "softmax0":
        nodes.append(helper.make_node("Softmax", ["r"], ["y"], axis=0))
    elif case == "per_sample":
        nodes += [
            helper.make_node("ReduceSum", ["x", "ax12"], ["v"], keepdims=0),
            helper.make_node("Add", ["r", "v"], ["y"]),
        ]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", f, ["N", 3, 6])],
        [helper.make_tensor_value_info(outs.get(case, "y"), f, None)],
        [
            numpy_helper.from_array(np.array(flat, np.int64), "flat"),
            numpy_helper.from_array(np.array([0], np.int64), "ax"),
            numpy_helper.from_array(np.array([1, 2], np.int64), "ax12"),
        ],
    )
    with pytest.raises(OnnxError, match=message):
        gc.from_onnx(m)


@pytest.mark.parametrize(
    "start, end", [(0, 2**31 - 1), (-(2**31), 2**31 - 1), (0, 2**63 - 1), (0, 10**9)]
)
def test_slice_of_the_whole_batch_to_int32_max(start: int, end: int) -> None:
    # tf2onnx's Cropping1D: Slice starts [0, 1], ends [INT32_MAX, -1] over axes [0, 1] (10**9
    # for a masked end beside steps, x[:, ::2]): the batch axis is kept whole (was refused: "slicing the batch dimension N"); a slice that
    # drops samples stays refused
    f = TensorProto.FLOAT

    def model(b0: int, e0: int):
        inits = [
            numpy_helper.from_array(np.array([b0, 1], np.int64), "st"),
            numpy_helper.from_array(np.array([e0, -1], np.int64), "en"),
            numpy_helper.from_array(np.array([0, 1], np.int64), "ax"),
        ]
        return _model(
            [helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])],
            [helper.make_tensor_value_info("x", f, ["unk__7", 4, 3])],
            [helper.make_tensor_value_info("y", f, ["unk__7", 2, 3])],
            inits,
            13,
        )

    m = model(start, end)
    x = np.random.default_rng(5).standard_normal((6, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(gc.from_onnx(m).compile().predict(x), _ort(m, {"x": x})[0])
    with pytest.raises(OnnxError, match="slicing the batch dimension N"):
        gc.from_onnx(model(1, end))


def test_keras_multi_head_attention_as_tf2onnx_writes_it() -> None:
    # tests/data/onnx/tf_mha_13.onnx: the einsums become Reshapes of [N, 3, heads, 2] values to
    # [ReduceProd(Shape[:2]) = N*3 ...] and [N*heads, 3, 2], batched MatMuls of them and
    # Reshapes back to Max(Shape_a[:2], Shape_b[:2]) ++ [...]; ReduceProd of a shape holding N
    # was refused ("arithmetic that changes N") and Max of shapes had no fold
    path = os.path.join(DATA, "tf_mha_13.onnx")
    model = gc.from_onnx(path).compile()
    rng = np.random.default_rng(6)
    for n in (4, 1):
        x = rng.standard_normal((n, 3, 4)).astype(np.float32)
        (ref,) = _ort(path, {"x": x})
        np.testing.assert_allclose(model.predict(x), ref, rtol=1e-5, atol=1e-6)


def test_products_of_the_batch_size_in_shape_computations() -> None:
    # ReduceProd(Shape(x)[:2]) = N*3 leads a Reshape that merges the rows; a batched MatMul of
    # two such values and a Transpose of their inner axes; back by a Max of two shapes. N*3
    # used as data, and N times N, stay refused by name
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "z1", "two"], ["lead"]),
        helper.make_node("ReduceProd", ["lead"], ["nm"], keepdims=1),
        helper.make_node("Concat", ["nm", "m1", "four"], ["flat"], axis=0),
        helper.make_node("Reshape", ["x", "flat"], ["r"]),  # [N*3, 2, 4]
        helper.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 1]),  # [N*3, 4, 2]
        helper.make_node("MatMul", ["r", "rt"], ["g"]),  # [N*3, 2, 2]
        helper.make_node("Max", ["lead", "lead"], ["lead2"]),
        helper.make_node("Concat", ["lead2", "four1"], ["back"], axis=0),
        helper.make_node("Reshape", ["g", "back"], ["y"]),  # [N, 3, 4]
    ]
    inits = [
        numpy_helper.from_array(np.array(v, np.int64), k)
        for k, v in (("z1", [0]), ("two", [2]), ("m1", [-1]), ("four", [4]), ("four1", [4]))
    ]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", f, ["N", 3, 2, 4])],
        [helper.make_tensor_value_info("y", f, ["N", 3, 4])],
        inits,
    )
    model = gc.from_onnx(m).compile()
    for n in (5, 1):
        x = np.random.default_rng(n).standard_normal((n, 3, 2, 4)).astype(np.float32)
        np.testing.assert_allclose(model.predict(x), _ort(m, {"x": x})[0], rtol=1e-6, atol=1e-6)
    squared = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Slice", ["s", "z1", "one"], ["n"]),
            helper.make_node("Mul", ["n", "n"], ["nn"]),
            helper.make_node("Concat", ["nn", "m1"], ["flat"], axis=0),
            helper.make_node("Reshape", ["x", "flat"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", f, ["N", 3])],
        [helper.make_tensor_value_info("y", f, None)],
        [
            numpy_helper.from_array(np.array(v, np.int64), k)
            for k, v in (("z1", [0]), ("one", [1]), ("m1", [-1]))
        ],
    )
    with pytest.raises(OnnxError, match=r"mul of 'N' and 'N'"):
        gc.from_onnx(squared)


def test_integer_input_multiplied_past_float32s_exact_range_is_refused() -> None:
    # ids * 1000003 % 97 (a hash into buckets) in int32 is exact in ONNX Runtime; float32 would
    # round the product above 2**24 and pick another row silently. Refused at import until
    # integer products became a flow: now the entries take ids whose products stay exact
    # (-16 .. 16) and refuse others at run time naming 'ids' and the row, never a wrong row.
    i64 = TensorProto.INT64
    m = _model(
        [
            helper.make_node("Mul", ["ids", "prime"], ["h"]),
            helper.make_node("Mod", ["h", "buckets"], ["b"]),
            helper.make_node("Gather", ["table", "b"], ["y"], axis=0),
        ],
        [helper.make_tensor_value_info("ids", i64, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])],
        [
            numpy_helper.from_array(np.array(1000003, np.int64), "prime"),
            numpy_helper.from_array(np.array(97, np.int64), "buckets"),
            numpy_helper.from_array(np.arange(97 * 3, dtype=np.float32).reshape(97, 3), "table"),
        ],
    )
    model = gc.from_onnx(m).compile()
    ids = np.array([[16, -16], [3, 0]], np.int64)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(model.predict(ids), sess.run(None, {"ids": ids})[0])
    with pytest.raises(gc.ArgumentError, match=r"'ids': row 1 holds 17"):
        model.predict(np.array([[1, 2], [17, 0]], np.int64))


def test_mlp_mixer_token_mixing_as_tf2onnx_writes_it() -> None:
    # tests/data/onnx/tf_mixer_13.onnx: Dense -> Permute -> Dense -> Permute; the second Dense
    # reshapes [N, 4, 3] to [1, -1, 0] and squeezes the unit axis before its MatMul (was
    # refused: "would merge the batch dimension N with others")
    path = os.path.join(DATA, "tf_mixer_13.onnx")
    model = gc.from_onnx(path).compile()
    rng = np.random.default_rng(7)
    for n in (5, 1):
        x = rng.standard_normal((n, 3, 4)).astype(np.float32)
        (ref,) = _ort(path, {"x": x})
        np.testing.assert_allclose(model.predict(x), ref, rtol=1e-5, atol=1e-6)
    # the unit axis is only for a Squeeze: a Reshape to [1, -1, 4] used otherwise is refused
    f = TensorProto.FLOAT
    m = _model(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"]),
            helper.make_node("Relu", ["r"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", f, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", f, None)],
        [numpy_helper.from_array(np.array([1, -1, 4], np.int64), "shape")],
    )
    with pytest.raises(OnnxError, match=r"Relu.*supported only by a Squeeze"):
        gc.from_onnx(m)


def test_einsum_terms_in_any_order_as_keras_attention_at_opset_12() -> None:
    # tf2onnx keeps Keras's MultiHeadAttention einsums below opset 13: scores 'btnh,bsnh->bnts'
    # and the weighted values 'bnts,bsnh->btnh' (were refused: the terms' labels are not in the
    # output's order); each term is transposed first. An output order that moves N ('ni,ni->in')
    # is the product's transpose, as ONNX Runtime computes it.
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Einsum", ["q", "k"], ["s"], equation="btnh,bsnh->bnts"),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("Einsum", ["p", "k"], ["y"], equation="bnts,bsnh->btnh"),
    ]
    m = _model(
        nodes,
        [
            helper.make_tensor_value_info("q", f, ["N", 3, 2, 4]),
            helper.make_tensor_value_info("k", f, ["N", 5, 2, 4]),
        ],
        [helper.make_tensor_value_info("y", f, ["N", 3, 2, 4])],
        opset=12,
    )
    rng = np.random.default_rng(8)
    feeds = {
        "q": rng.standard_normal((4, 3, 2, 4)).astype(np.float32),
        "k": rng.standard_normal((4, 5, 2, 4)).astype(np.float32),
    }
    got = gc.from_onnx(m).compile().predict(feeds)
    np.testing.assert_allclose(got, _ort(m, feeds)[0], rtol=1e-5, atol=1e-6)
    moved = _model(
        [helper.make_node("Einsum", ["a", "b"], ["y"], equation="ni,ni->in")],
        [helper.make_tensor_value_info(v, f, ["N", 3]) for v in "ab"],
        [helper.make_tensor_value_info("y", f, [3, "N"])],
        opset=12,
    )
    ab = {"a": feeds["q"][:, 0, 0, :3], "b": feeds["k"][:, 1, 1, :3]}
    np.testing.assert_allclose(gc.from_onnx(moved).compile().predict(ab), _ort(moved, ab)[0])


def test_skl2onnx_multi_output_regressor_reshaped_to_one_column() -> None:
    # skl2onnx's MLPRegressor with 2 targets ends with Reshape(scores, [-1, 1]): ONNX Runtime
    # returns [2N, 1]. graphc refuses that output by name and says which value to import
    # instead; that value, reshaped, is ONNX Runtime's answer
    f = TensorProto.FLOAT
    rng = np.random.default_rng(9)
    m = _model(
        [
            helper.make_node("MatMul", ["X", "coefficient"], ["mul_result"]),
            helper.make_node("Add", ["mul_result", "intercepts"], ["add_result"]),
            helper.make_node("Reshape", ["add_result", "shape_tensor"], ["variable"]),
        ],
        [helper.make_tensor_value_info("X", f, [None, 4])],
        [helper.make_tensor_value_info("variable", f, [None, 1])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "coefficient"),
            numpy_helper.from_array(rng.standard_normal((1, 2)).astype(np.float32), "intercepts"),
            numpy_helper.from_array(np.array([-1, 1], np.int64), "shape_tensor"),
        ],
    )
    with pytest.raises(
        OnnxError,
        match=r"output 'variable'.*2 rows per sample.*outputs=\['add_result'\]",
    ):
        gc.from_onnx(m)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    got = gc.from_onnx(m, outputs=["add_result"]).compile().predict(x)
    np.testing.assert_allclose(got.reshape(-1, 1), _ort(m, {"X": x})[0], rtol=1e-6, atol=1e-6)


def test_fine_tuning_keeps_the_graphs_scalar_constants() -> None:
    # tf2onnx writes Keras's LayerNormalization epsilon (0.001) as a 0-d initializer; with
    # trainable=True it was a param: fine-tuning moved it (0.001 -> 0.0065 in 16 epochs) and
    # could push var + eps below 0 (NaN at epoch 16 with Adam(0.01)). Scalars now stay
    # constants unless named in trainable=.
    path = os.path.join(DATA, "tf_seq_dense_13.onnx")
    eps = "sequential_1_1/layer_normalization_1/add/y:0"
    imp = gc.from_onnx(path)
    assert imp.params and all(len(t.shape) > 0 for t in imp.params.values())
    out = imp.outputs[0]
    model = imp.compile(gc.mean_squared_error(out, gc.input("t", out.shape)), gc.Adam(0.01))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3, 6)).astype(np.float32)
    y = rng.random((64, 2)).astype(np.float32)
    model.fit(x, y, epochs=20, batch_size=16, verbose=0)
    assert np.isfinite(model.predict(x)).all()
    named = gc.from_onnx(path, trainable=lambda n: True)  # a predicate may still train it
    assert any(len(t.shape) == 0 for t in named.params.values())
    listed = gc.from_onnx(path, trainable=[eps])
    assert len(listed.params) == 1


def test_skl2onnx_constant_class_labels_output_names_what_to_import() -> None:
    # options={"output_class_labels": True} adds the constant output 'class_labels': the file
    # was refused with no way named; then the message listed the computed outputs; now the
    # whole file imports and predict returns the labels beside the computed outputs
    pytest.importorskip("sklearn")
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    clf = LogisticRegression(max_iter=300).fit(x, y)
    opts = {id(clf): {"output_class_labels": True, "zipmap": False}}
    m = skl2onnx.to_onnx(clf, x[:1], options=opts, target_opset={"": 17, "ai.onnx.ml": 3})
    got = gc.from_onnx(m).compile().predict(x)
    ref_label, ref_prob, ref_classes = _ort(m, {m.graph.input[0].name: x})[:3]
    np.testing.assert_array_equal(got["label"], ref_label)
    np.testing.assert_allclose(got["probabilities"], ref_prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["class_labels"], ref_classes)
    got = gc.from_onnx(m, outputs=["label", "probabilities"]).compile().predict(x)
    np.testing.assert_array_equal(got["label"], ref_label)


def test_inputs_an_operator_does_not_have_at_the_opset_are_refused() -> None:
    # jax2onnx (0.17, opset 17) writes ReduceMean's axes as an input, which only opset 18 has:
    # ONNX Runtime and onnx.checker refuse the file; graphc ignored the input and reduced every
    # axis, the batch included (a scalar for an [N, 2] answer)
    f = TensorProto.FLOAT
    m = _model(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", f, ["B", 3, 2])],
        [helper.make_tensor_value_info("y", f, ["B", 2])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")],
        opset=17,
    )
    with pytest.raises(OnnxError, match=r"ReduceMean.*2 inputs; ReduceMean at opset 13 takes 1"):
        gc.from_onnx(m)
    with pytest.raises(OnnxError, match=r"has this form at opset 18 and later: export the"):
        gc.from_onnx(m)  # what to do: the opsets where the operator takes the input
    m.opset_import[0].version = 18  # where the input exists: imported, equal to ONNX Runtime
    x = np.random.default_rng(10).standard_normal((4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(
        gc.from_onnx(m).compile().predict(x), _ort(m, {"x": x})[0], rtol=1e-6, atol=1e-7
    )
    two_outputs = _model(
        [helper.make_node("Relu", ["x"], ["y", "z"])],
        [helper.make_tensor_value_info("x", f, ["B", 3])],
        [helper.make_tensor_value_info("y", f, ["B", 3])],
    )
    with pytest.raises(OnnxError, match=r"2 outputs; Relu at opset 14 has 1 to 1"):
        gc.from_onnx(two_outputs)


def test_attributes_an_operator_does_not_have_at_the_opset_are_refused() -> None:
    # Squeeze's axes became an input at opset 13: an axes attribute there was ignored and every
    # unit axis squeezed ([N, 3] for ONNX's [N, 3, 1] where the file meant axis 1); ONNX
    # Runtime refuses the file
    f = TensorProto.FLOAT
    m = _model(
        [helper.make_node("Squeeze", ["x"], ["y"], axes=[1])],
        [helper.make_tensor_value_info("x", f, ["B", 1, 3, 1])],
        [helper.make_tensor_value_info("y", f, ["B", 3, 1])],
        opset=13,
    )
    with pytest.raises(OnnxError, match=r"attribute 'axes' is not one of Squeeze's at opset 13"):
        gc.from_onnx(m)
    with pytest.raises(OnnxError, match=r"Squeeze has this form at opset 1 to 12: export"):
        gc.from_onnx(m)
    m.opset_import[0].version = 11  # where it is an attribute
    x = np.random.default_rng(11).standard_normal((2, 1, 3, 1)).astype(np.float32)
    np.testing.assert_array_equal(gc.from_onnx(m).compile().predict(x), _ort(m, {"x": x})[0])


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_skl2onnx_string_class_labels_leave_the_probabilities_importable() -> None:
    # a classifier fitted on string labels keeps them in a string initializer 'classes' read
    # by the label output's ArrayFeatureExtractor: every initializer was read up front, so
    # even from_onnx(..., outputs=['probabilities']) was refused. Now the node that reads it
    # is refused, naming the outputs that do not need it, and those import.
    pytest.importorskip("sklearn")
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0).fit(x, labels)
    opts = {id(clf): {"zipmap": False}}
    m = skl2onnx.to_onnx(clf, x[:1], options=opts, target_opset={"": 17, "ai.onnx.ml": 3})
    with pytest.raises(
        OnnxError, match=r"'classes' has data type string.*outputs=\['probabilities'\]"
    ):
        gc.from_onnx(m)
    got = gc.from_onnx(m, outputs=["probabilities"]).compile().predict(x)
    ref = _ort(m, {m.graph.input[0].name: x})[1]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
