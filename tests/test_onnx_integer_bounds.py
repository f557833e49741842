"""Integers an imported ONNX graph computes, against ONNX Runtime: a lookup index computed in
the graph stays in its table and integer arithmetic stays exact in float32 for every value the
entries accept (graphc.onnx_bounds), or the value is refused by name (at run time, naming the
input, the row and the value; or at import, naming the node) where ONNX Runtime raises or
computes in int64. Before, an index computed out of its table gave a row of zeros, and sums of
integer inputs past 2**24 were rounded, without a word. ~2 s."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import ArgumentError, OnnxError
from graphc.ir.ops.sources import index_range

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")
I64, F32 = TensorProto.INT64, TensorProto.FLOAT
TABLE = np.arange(40, dtype=np.float32).reshape(10, 4) + 1.0  # no row of zeros


def _ort(m, feeds):
    src = m if isinstance(m, str) else m.SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _ort_raises(m, feeds) -> bool:
    try:
        _ort(m, feeds)
    except Exception:
        return True
    return False


def _shifted_lookup(shift: int):
    """Gather(table, ids + shift): an index computed from an int64 input."""
    return _model(
        [
            helper.make_node("Add", ["ids", "shift"], ["i"]),
            helper.make_node("Gather", ["table", "i"], ["y"]),
        ],
        [helper.make_tensor_value_info("ids", I64, ["N", 3])],
        [helper.make_tensor_value_info("y", F32, ["N", 3, 4])],
        [
            numpy_helper.from_array(TABLE, "table"),
            numpy_helper.from_array(np.array(shift, np.int64), "shift"),
        ],
    )


def test_keras_embedding_ids_past_the_table_are_refused_as_onnxruntime() -> None:
    # tf2onnx's Keras Embedding: m * (ids + V) + (1 - m) * ids, m = [ids < 0]; an id of V or
    # more gave a row of zeros where ONNX Runtime raises; now the entry refuses it by name
    path = os.path.join(DATA, "tf_embed_13.onnx")
    model = gc.from_onnx(path).compile()
    ids = np.array([[-20, -1, 0, 19, 5, -7, 3]] * 2, np.int32)
    np.testing.assert_allclose(model.predict(ids), _ort(path, {"ids": ids})[0], rtol=1e-6)
    for bad in (20, 2**20):
        ids[1, 3] = bad
        assert _ort_raises(path, {"ids": ids})
        with pytest.raises(ArgumentError, match=rf"'ids'.*row 1 holds {bad}"):
            model.predict(ids)


@pytest.mark.parametrize("shift", [3, -2])
def test_an_index_shifted_out_of_its_table_is_refused_not_zeros(shift) -> None:
    m = _shifted_lookup(shift)
    model = gc.from_onnx(m).compile()
    ok = np.array([[0, 1, 2], [5, -4, 6 - max(shift, 0)]], np.int64)
    np.testing.assert_array_equal(model.predict(ok), _ort(m, {"ids": ok})[0])
    out = ok.copy()
    out[1, 2] = 10 - shift  # index 10 in a table of 10 rows
    assert _ort_raises(m, {"ids": out})
    with pytest.raises(ArgumentError, match=rf"'ids'.*row 1 holds {10 - shift}.*\(Gather"):
        model.predict(out)


def test_an_index_computed_from_a_float_is_refused_at_import() -> None:
    # Gather(table, Cast(x -> int64)): no checked range of any integer input bounds it
    m = _model(
        [
            helper.make_node("Cast", ["x"], ["i"], to=I64),
            helper.make_node("Gather", ["table", "i"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F32, ["N", 3])],
        [helper.make_tensor_value_info("y", F32, ["N", 3, 4])],
        [numpy_helper.from_array(TABLE, "table")],
    )
    assert _ort_raises(m, {"x": np.full((1, 3), 12.0, np.float32)})
    with pytest.raises(OnnxError, match=r"node 1 .*Gather.*indices must lie in -10 \.\. 9"):
        gc.from_onnx(m)


@pytest.mark.parametrize("width,fits", [(10, True), (11, False)])
def test_an_argmax_index_is_proven_in_range_or_refused(width, fits) -> None:
    m = _model(
        [
            helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0),
            helper.make_node("Gather", ["table", "i"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F32, ["N", width])],
        [helper.make_tensor_value_info("y", F32, ["N", 4])],
        [numpy_helper.from_array(TABLE, "table")],
    )
    if not fits:
        with pytest.raises(OnnxError, match=r"Gather.*range for the values.*0 \.\. 10\b"):
            gc.from_onnx(m)
        return
    x = np.random.default_rng(0).standard_normal((6, width)).astype(np.float32)
    got = gc.from_onnx(m).compile().predict(x)
    np.testing.assert_array_equal(got, _ort(m, {"x": x})[0])


def test_sums_of_integer_inputs_stay_exact_or_are_refused() -> None:
    # (a + b) - c of int64 inputs, cast to float: past 2**24 float32 rounded the sum silently
    m = _model(
        [
            helper.make_node("Add", ["a", "b"], ["s"]),
            helper.make_node("Sub", ["s", "c"], ["d"]),
            helper.make_node("Cast", ["d"], ["y"], to=F32),
        ],
        [helper.make_tensor_value_info(k, I64, ["N", 2]) for k in "abc"],
        [helper.make_tensor_value_info("y", F32, ["N", 2])],
    )
    model = gc.from_onnx(m).compile()
    b = 2**24 // 3  # the largest B with 3 * B <= 2**24: every sum exact
    feeds = {
        "a": np.array([[b - 1, -b], [7, 5_000_000]], np.int64),
        "b": np.array([[b - 1, -b], [-3, 5_000_000]], np.int64),
        "c": np.array([[-b, b - 1], [2, -5_000_000]], np.int64),
    }
    got = model.predict(feeds)
    np.testing.assert_array_equal(got.astype(np.float64), _ort(m, feeds)[0])  # exact
    assert abs(float(got[0, 0])) > 2**24 - 8  # near float32's exact range, still exact
    feeds["b"] = feeds["b"].copy()
    feeds["b"][1, 1] = 2**23  # a + b - c = 18,388,608 in int64; float32 would round it
    with pytest.raises(ArgumentError, match=r"'b'.*row 1 holds 8388608"):
        model.predict(feeds)


def test_an_integer_input_range_has_no_end_a_rounded_value_reaches() -> None:
    """The entries check an integer input's values as float32, where -2**24 - 1 rounds to
    -2**24: a range ending at -2**24 let it through as -2**24 (Mod 3 gave 2 where ONNX
    Runtime gives 1, silently). The checked range is now within +-(2**24 - 1), both ends
    whole numbers whose rounded neighbours outside stay outside. Reference: ONNX Runtime."""
    three = numpy_helper.from_array(np.array(3, np.int64), "three")
    m = _model(
        [
            helper.make_node("Mod", ["x", "three"], ["r"]),
            helper.make_node("Cast", ["r"], ["y"], to=F32),
        ],
        [helper.make_tensor_value_info("x", I64, ["N", 2])],
        [helper.make_tensor_value_info("y", F32, ["N", 2])],
        [three],
    )
    model = gc.from_onnx(m).compile()
    ok = np.array([[2**24 - 1, 1 - 2**24], [-7, 8]], np.int64)
    np.testing.assert_array_equal(model.predict(ok).astype(np.float64), _ort(m, {"x": ok})[0])
    for v in (-(2**24) - 1, -(2**24), 2**24, 2**24 + 1):
        bad = ok.copy()
        bad[1, 0] = v
        with pytest.raises(ArgumentError, match=r"'x'.*row 1 holds"):
            model.predict(bad)


def test_class_labels_picked_by_an_index_past_them_are_refused() -> None:
    # ArrayFeatureExtractor (ai.onnx.ml) of 3 class labels by an ArgMax over 5 columns:
    # ONNX Runtime raises on index 4; graphc passed it through as the label
    nodes = [
        helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=1),
        helper.make_node("ArrayFeatureExtractor", ["cls", "i"], ["y"], domain="ai.onnx.ml"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, ["N", 5])],
        [helper.make_tensor_value_info("y", I64, None)],
        [numpy_helper.from_array(np.array([7, 8, 9], np.int64), "cls")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    assert _ort_raises(m, {"x": np.array([[0, 0, 0, 0, 1]], np.float32)})
    with pytest.raises(OnnxError, match=r"ArrayFeatureExtractor.*must lie in 0 \.\. 2.*0 \.\. 4"):
        gc.from_onnx(m)


@pytest.mark.parametrize(
    ("nodes", "output", "why"),
    [
        (
            # (ReduceSum of ids has been a flow since its sums are proven exact; a product not)
            [helper.make_node("ReduceProd", ["ids"], ["i"], name="total", keepdims=1)],
            "i",
            "here node 0 'total' (ReduceProd) reads 'ids' as an integer",
        ),
    ],
)
def test_a_refused_integer_input_names_the_node_that_refuses_it(nodes, output, why) -> None:
    """The refusal listed the operators integer inputs may flow through and left a user whose
    node was refused guessing: it names the node and the reason. (A square of ids, refused
    here before, is a flow: tests/test_onnx_int_arith.py.)"""
    m = _model(
        nodes,
        [helper.make_tensor_value_info("ids", I64, ["N", 3])],
        [helper.make_tensor_value_info(output, I64, None)],
        [numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    with pytest.raises(OnnxError, match="input 'ids': element type int64 used as an integer") as e:
        gc.from_onnx(m)
    assert why in str(e.value)


def _offset_lookup(nodes, consts, inputs=("ids",)):
    """Gather(TABLE, f(ids, ...)) with int64 inputs and int64 scalar constants."""
    return _model(
        [*nodes, helper.make_node("Gather", ["table", "i"], ["y"])],
        [helper.make_tensor_value_info(k, I64, ["N", 3]) for k in inputs],
        [helper.make_tensor_value_info("y", F32, ["N", 3, 4])],
        [numpy_helper.from_array(TABLE, "table")]
        + [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()],
    )


@pytest.mark.parametrize(
    ("nodes", "consts", "lo", "hi"),
    [
        # ids in 1 .. V (a 1-based vocabulary): ids - 1 in the table; ONNX Runtime also takes
        # ids - 1 down to -10 (negative indices count from the end): ids in -9 .. 10
        ([helper.make_node("Sub", ["ids", "one"], ["i"])], {"one": 1}, -9, 10),
        # an offset past the table: ids + 100 into 10 rows takes ids in -110 .. -91 only
        ([helper.make_node("Add", ["ids", "off"], ["i"])], {"off": 100}, -110, -91),
        # through a Neg and a Mul by -1 (a sign): (-ids + 3) * -1 = ids - 3
        (
            [
                helper.make_node("Neg", ["ids"], ["n"]),
                helper.make_node("Add", ["n", "three"], ["m"]),
                helper.make_node("Mul", ["m", "sign"], ["i"]),
            ],
            {"three": 3, "sign": -1},
            -7,
            12,
        ),
    ],
    ids=["ids-1", "ids+100", "sign"],
)
def test_ids_offset_from_zero_are_taken_in_the_range_onnxruntime_takes(nodes, consts, lo, hi):
    """The checked range of an integer input was -B .. B-1 around 0, so ids in 1 .. V for a
    Gather of ids - 1 lost V, and ids + 100 (no range around 0 fits) was refused at import,
    where ONNX Runtime runs both. The range is now any interval the offsets bring into the
    table: every value in it gives ONNX Runtime's rows, its two neighbours are refused by
    name as ONNX Runtime refuses them."""
    m = _offset_lookup(nodes, consts)
    model = gc.from_onnx(m).compile()
    good = np.array([[lo, hi, (lo + hi) // 2], [hi - 1, lo + 1, lo]], np.int64)
    np.testing.assert_array_equal(model.predict(good), _ort(m, {"ids": good})[0])
    for bad in (lo - 1, hi + 1):
        ids = good.copy()
        ids[1, 2] = bad
        assert _ort_raises(m, {"ids": ids})
        with pytest.raises(ArgumentError, match=rf"'ids': row 1 holds {bad}\b.*{lo}\.\.{hi}"):
            model.predict(ids)
        with pytest.raises(ArgumentError, match=rf"'ids': row 1 holds {bad}\b"):
            model.predict(ids.astype(np.float32))  # the native entry's check (no cast first)


def test_offset_ids_of_two_inputs_get_ranges_that_keep_the_index_in_the_table() -> None:
    # ids + 100 - o into 10 rows: no ranges around 0 fit; some around ids = -o - 100 do
    m = _offset_lookup(
        [
            helper.make_node("Add", ["ids", "off"], ["j"]),
            helper.make_node("Sub", ["j", "o"], ["i"]),
        ],
        {"off": 100},
        ("ids", "o"),
    )
    model = gc.from_onnx(m).compile()
    ranges = {n.name: index_range(n) for n in model.program.forward.nodes if n.op == "input"}
    (a, b), (c, d) = ranges["ids"], ranges["o"]
    assert a <= b and c <= d and a + 100 - d >= -10 and b + 100 - c <= 9, ranges
    feeds = {"ids": np.array([[a, b, a]], np.int64), "o": np.array([[d, c, c]], np.int64)}
    np.testing.assert_array_equal(model.predict(feeds), _ort(m, feeds)[0])


LAST_ERROR_C = r"""
#include "lk.h"
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    lk_ctx c;
    float ids[6] = {1, 10, 5, -9, 3, 11}, y[24];
    int rc;
    c.params = aligned_alloc(64, ((size_t)LK_PARAM_BYTES + 63) / 64 * 64 + 64);
    c.params_bytes = LK_PARAM_BYTES;
    c.state = NULL; c.state_bytes = 0;
    c.workspace_bytes = lk_workspace_size(2);
    c.workspace = aligned_alloc(64, ((size_t)c.workspace_bytes + 63) / 64 * 64 + 64);
    if (lk_init(&c) != LK_OK) return 1;
    printf("[%s]\n", lk_last_error());
    rc = lk_infer(&c, 2, ids, 6, y, 24);
    printf("%d %s\n", rc == LK_ERR_LOOKUP, lk_last_error());
    rc = lk_infer(&c, 0, ids, 6, y, 24);
    printf("%d %s\n", rc == LK_ERR_BATCH, lk_last_error());
    return 0;
}
"""


def test_the_c_librarys_message_for_a_refused_index_names_the_node(tmp_path) -> None:
    """The exported library refused ids - 1 outside the table with ERR_LOOKUP, whose only
    text (NAME_strerror) named neither the input, the row, nor the node whose index the range
    protects, where Python's error names all three. NAME_last_error now gives the failing
    call's message: the input, the row, the value, the range and the same node note as
    Python's (and for other codes the call and the code's text); gc.load's Library says the
    node too."""
    import re

    from c_build import CC, run_c

    if CC is None:
        pytest.skip("no C compiler")
    m = _offset_lookup([helper.make_node("Sub", ["ids", "one"], ["i"], name="dec")], {"one": 1})
    m.graph.node[-1].name = "lookup"
    model = gc.from_onnx(m).compile(name="lk")
    bad = np.array([[1, 10, 5], [-9, 3, 11]], np.float32)
    with pytest.raises(ArgumentError) as py:
        model.predict(bad)
    note = str(py.value).split("; ", 2)[-1]
    assert "node 1 'lookup' (Gather" in note, py.value
    res = model.export(str(tmp_path / "liblk.so"))
    with pytest.raises(ArgumentError, match=re.escape(note)):
        gc.load(res.library).predict(bad)
    out = run_c(tmp_path, LAST_ERROR_C, "lk")
    assert out[0] == "[]"
    assert out[1] == (
        "1 lk_infer: indices 'ids': row 1 holds 11, which is no row of its lookup table "
        f"(whole numbers in -9..10); {note}"
    )
    assert out[2] == "1 lk_infer: batch size n is outside 1..MAX_BATCH"


def test_an_integer_cast_of_looked_up_floats_is_refused_not_a_crash() -> None:
    """Cast(Gather(table, ids), int64): an integer value whose requirement no inverse step
    carries back to the ids (a lookup), so fit_ranges kept the ids' own range. Before, its
    unbounded requirement reached math.ceil(-inf): an OverflowError escaped from_onnx. Now
    the value is refused at import naming it (a trained table may pass 2**24)."""
    vi = helper.make_tensor_value_info
    m = _model(
        [
            helper.make_node("Gather", ["emb", "ids"], ["g"]),
            helper.make_node("Cast", ["g"], ["gi"], to=I64),
            helper.make_node("Cast", ["gi"], ["y"], to=F32),
        ],
        [vi("ids", I64, ["N", 3])],
        [vi("y", F32, None)],
        [numpy_helper.from_array(TABLE, "emb")],
    )
    with pytest.raises(OnnxError, match=r"value 'gi': integers graphc holds as float32"):
        gc.from_onnx(m)


def test_mod_rule_interval_holds_numpy_remainders():
    """onnx_bounds' "mod" (floats) and "imod" (whole numbers) rules give an interval that holds
    every remainder numpy computes (np.mod for fmod=0, the divisor's sign; np.fmod for fmod=1)
    for x and y drawn from the operands' intervals: a divisor that is not a whole number (2.5,
    where 2.4 mod 2.5 = 2.4) must not lose the 1 a whole-number divisor gives up."""
    from graphc.onnx_bounds import _rule_interval

    rng = np.random.default_rng(0)
    cases = [((0.0, 10.0), (2.5, 2.5)), ((-7.0, 7.0), (-3.5, -0.5)), ((-4.0, 9.0), (0.25, 6.0)),
             ((0.0, 255.0), (1.0, 255.0)), ((-100.0, 100.0), (-9.0, 9.0))]  # fmt: skip
    for (xlo, xhi), (ylo, yhi) in cases:
        whole = all(float(v).is_integer() for v in (xlo, xhi, ylo, yhi))
        kinds = ["mod", "imod"] if whole else ["mod"]
        x = rng.uniform(xlo, xhi, 4000)
        y = rng.uniform(ylo, yhi, 4000)
        x[:2], y[:2] = (xlo, xhi), (ylo, yhi)
        if whole:
            x, y = np.round(x), np.round(y)
        keep = y != 0
        x, y = x[keep], y[keep]
        for kind in kinds:
            for fmod in (False, True):
                xo, yo = object(), object()
                memo = {id(xo): (xlo, xhi), id(yo): (ylo, yhi)}
                lo, hi = _rule_interval((kind, (xo, yo, fmod)), memo)
                r = np.fmod(x, y) if fmod else np.mod(x, y)
                assert lo <= r.min() and r.max() <= hi, (
                    kind,
                    fmod,
                    (xlo, xhi),
                    (ylo, yhi),
                    lo,
                    hi,
                    r.min(),
                    r.max(),
                )
