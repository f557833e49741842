"""The zero check of an integer Div / Mod divisor read from a graph input through movements
(Slice, strided Slice, Transpose, Reshape, Concat, Expand) covers only the input positions the
divisor reads: a 0 elsewhere (a column the Slice leaves out) imports and predicts as ONNX
Runtime, a 0 the divisor reads is refused naming the input and the row, in the Model, its
saved file and its exported library (Python and C). Before, every element of the input was
checked ('graphc checks every element of the input, also the elements the slice leaves out')."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

I64 = TensorProto.INT64


def _slice(src: str, out: str, starts, ends, axes, steps=None) -> tuple[list, dict]:
    consts = {f"{out}_s": starts, f"{out}_e": ends, f"{out}_a": axes}
    ins = [src, f"{out}_s", f"{out}_e", f"{out}_a"]
    if steps is not None:
        consts[f"{out}_t"] = steps
        ins.append(f"{out}_t")
    return [helper.make_node("Slice", ins, [out])], consts


def _chain(kind: str) -> tuple[list, dict, list]:
    """(nodes from b [N, 3, 4] to the divisor d, constants, d's shape after N)"""
    if kind == "rows":
        nodes, c = _slice("b", "d", [1], [3], [1])
        return nodes, c, [2, 4]
    if kind == "columns":
        nodes, c = _slice("b", "d", [1], [3], [2])
        return nodes, c, [3, 2]
    if kind == "strided":
        nodes, c = _slice("b", "d", [3, 0], [-5, 3], [2, 1], [-2, 2])
        return nodes, c, [2, 2]
    if kind == "transposed":
        nodes, c = _slice("bt", "d", [1], [2], [1])
        return [helper.make_node("Transpose", ["b"], ["bt"], perm=[0, 2, 1]), *nodes], c, [1, 3]
    if kind == "reshaped":
        nodes, c = _slice("br", "d", [5], [9], [1])
        c["shape"] = [-1, 12]
        return [helper.make_node("Reshape", ["b", "shape"], ["br"]), *nodes], c, [4]
    if kind == "concat":
        n1, c1 = _slice("b", "p", [0], [1], [1])
        n2, c2 = _slice("b", "q", [2, 3], [3, 4], [1, 2])
        n3, c3 = _slice("q", "r", [0], [1], [2])
        cat = helper.make_node("Concat", ["p", "r2"], ["d"], axis=1)
        expand = helper.make_node("Expand", ["r", "four"], ["r2"])
        return [*n1, *n2, *n3, expand, cat], {**c1, **c2, **c3, "four": [1, 1, 4]}, [2, 4]
    assert kind == "whole"
    return [helper.make_node("Identity", ["b"], ["d"])], {}, [3, 4]


def _model(kind: str, op: str = "Div") -> onnx.ModelProto:
    nodes, consts, shape = _chain(kind)
    g = helper.make_graph(
        [*nodes, helper.make_node(op, ["a", "d"], ["y"])],
        "divisor_positions",
        [
            helper.make_tensor_value_info("a", I64, ["N", *shape]),
            helper.make_tensor_value_info("b", I64, ["N", 3, 4]),
        ],
        [helper.make_tensor_value_info("y", I64, None)],
        [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in consts.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _feeds(m: onnx.ModelProto, rows: int = 3) -> dict:
    rng = np.random.default_rng(0)
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]
    a = rng.integers(-50, 50, (rows, *shape))
    b = rng.integers(1, 9, (rows, 3, 4)) * rng.choice([-1, 1], (rows, 3, 4))
    return {"a": a.astype(np.int64), "b": b.astype(np.int64)}


@pytest.mark.parametrize(
    "kind", ["rows", "columns", "strided", "transposed", "reshaped", "concat", "whole"]
)
@pytest.mark.parametrize("op", ["Div", "Mod"])
def test_a_zero_is_refused_exactly_where_onnxruntime_divides_by_it(kind: str, op: str) -> None:
    """For each of b's 12 positions, a 0 there in row 1: ONNX Runtime raises exactly when
    graphc refuses (naming 'b' and row 1, nothing returned); otherwise the values equal."""
    m = _model(kind, op)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    model = gc.from_onnx(m).compile()
    feeds = _feeds(m)
    np.testing.assert_array_equal(model.predict(feeds), sess.run(None, feeds)[0])
    divides = []
    for p in range(12):
        b = feeds["b"].copy()
        b[1].flat[p] = 0
        zeroed = {**feeds, "b": b}
        try:
            want = sess.run(None, zeroed)[0]
        except Exception as e:
            assert "by zero" in str(e), e
            divides.append(p)
            with pytest.raises(gc.ArgumentError, match=r"divisor 'b': row 1 holds 0"):
                model.predict(zeroed)
            continue
        np.testing.assert_array_equal(model.predict(zeroed), want, err_msg=f"position {p}")
    assert 0 < len(divides) <= 12
    assert (len(divides) == 12) == (kind == "whole")


def test_positions_survive_saving_and_export(tmp_path) -> None:
    """load_model's Model and gc.load of the exported library take a 0 the Slice leaves out
    and refuse one it passes, naming 'b' and the row."""
    m = _model("columns")
    model = gc.from_onnx(m).compile()
    feeds = _feeds(m)
    left_out, read = feeds["b"].copy(), feeds["b"].copy()
    left_out[2, 1, 3] = 0
    read[2, 1, 2] = 0
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {**feeds, "b": left_out}
    )[0]
    model.save_model(str(tmp_path / "m.graphc"))
    lib_path = str(tmp_path / "libdp.so")
    model.export(lib_path)
    for other in (gc.load_model(str(tmp_path / "m.graphc")), gc.load(lib_path)):
        got = other.predict({**feeds, "b": left_out})
        np.testing.assert_array_equal(got["y"] if isinstance(got, dict) else got, want)
        with pytest.raises(gc.ArgumentError, match=r"divisor 'b': row 2 holds 0"):
            other.predict({**feeds, "b": read})


DIVISOR_C = r"""
#include "dp.h"
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    dp_ctx c;
    float a[4] = {6, -9, 10, 4}, left_out[6] = {0, 2, 3, 0, 7, 1}, read[6] = {4, 2, 3, 5, 0, 1};
    int64_t y[4];
    int rc;  /* (the header orders the inputs b, a) */
    c.params = NULL; c.params_bytes = 0; c.state = NULL; c.state_bytes = 0;
    c.workspace_bytes = dp_workspace_size(2);
    c.workspace = aligned_alloc(64, ((size_t)c.workspace_bytes + 63) / 64 * 64 + 64);
    if (dp_init(&c) != DP_OK) return 1;
    rc = dp_infer(&c, 2, left_out, 6, a, 4, y, 4);
    printf("%d %lld %lld %lld %lld\n", rc, (long long)y[0], (long long)y[1], (long long)y[2],
           (long long)y[3]);
    printf("%d %s\n", dp_infer(&c, 2, read, 6, a, 4, y, 4) == DP_ERR_LOOKUP, dp_last_error());
    return 0;
}
"""


def test_the_c_library_checks_the_positions_the_divisor_reads(tmp_path) -> None:
    """b [N, 3] sliced to b[:, 1:3]: the C entry takes a 0 in column 0 (y equals ONNX
    Runtime's) and refuses one in column 1 or 2, NAME_last_error naming b and the row."""
    from c_build import CC, run_c

    if CC is None:
        pytest.skip("no C compiler")
    nodes, consts = _slice("b", "d", [1], [3], [1])
    g = helper.make_graph(
        [*nodes, helper.make_node("Div", ["a", "d"], ["y"])],
        "dp",
        [
            helper.make_tensor_value_info("a", I64, ["N", 2]),
            helper.make_tensor_value_info("b", I64, ["N", 3]),
        ],
        [helper.make_tensor_value_info("y", I64, None)],
        [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in consts.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    gc.from_onnx(m).compile(name="dp").export(str(tmp_path / "libdp.so"))
    out = run_c(tmp_path, DIVISOR_C, "dp")
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.array([[6, -9], [10, 4]], np.int64)
    (want,) = sess.run(None, {"a": a, "b": np.array([[0, 2, 3], [0, 7, 1]], np.int64)})
    with pytest.raises(Exception, match="by zero"):
        sess.run(None, {"a": a, "b": np.array([[4, 2, 3], [5, 0, 1]], np.int64)})
    assert out[0] == "0 " + " ".join(str(v) for v in want.ravel()), out
    assert out[1].startswith("1 dp_infer: divisor 'b': row 1 holds 0, outside"), out
