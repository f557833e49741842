"""ONNX control flow and sequences resolved at import (graphc/onnx_import_control.py): Loop with
a trip count known at import (a condition absent, or folding per iteration; loop-carried
values, scan outputs stacked along a new first axis, outer-scope references), Scan-9+ (input
and output axes and directions), If on a computed condition (both branches, selected), the
sequence operators, all against ONNX Runtime; ONNX's node tests of Loop and Scan; torch's
TorchScript export of a scripted loop over a list and of an if on data; the gradient through an
unrolled Loop against central differences; the refusals, named. Before, Loop, Scan, the
sequence operators and an If on data were refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import numeric_grad
from onnx_models import make_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.onnx_backend import node_cases, run_case

N = helper.make_node
F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")
vi = helper.make_tensor_value_info


def _ort(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _i64(name, v):
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def _f32(name, v):
    return numpy_helper.from_array(np.asarray(v, np.float32), name)


def _predict(m, feeds, **kw):
    got = gc.from_onnx(m, **kw).compile().predict(feeds)
    return list(got.values()) if isinstance(got, dict) else [got]


def _body(nodes, inputs, outputs, inits=()):
    return helper.make_graph(
        nodes,
        "body",
        [vi(n, t, s) for n, t, s in inputs],
        [vi(n, t, None) for n, t in outputs],
        list(inits),
    )


def _loop_model(m_count, cond_nodes, cond_out, extra=(), inits=()):
    """h <- tanh(h W + x + b) * (i + 1) (W, x from the outer scope, b the body's own), with
    a scan output 2 h and one without N, (i + 1)^2; the scan of h moved N-first."""
    body = _body(
        [
            N("Cast", ["i"], ["fi0"], to=F),
            N("Add", ["fi0", "one"], ["fi"]),
            N("MatMul", ["h", "W"], ["hw"]),
            N("Add", ["hw", "x"], ["a"]),
            N("Add", ["a", "b"], ["ab"]),
            N("Tanh", ["ab"], ["t"]),
            N("Mul", ["t", "fi"], ["h2"]),
            N("Add", ["h2", "h2"], ["s"]),
            N("Mul", ["fi", "fi"], ["sq"]),
            *cond_nodes,
        ],
        [("i", I64, []), ("c", B, []), ("h", F, ["N", 3])],
        [(cond_out, B), ("h2", F), ("s", F), ("sq", F)],
        [_f32("b", [0.1, -0.2, 0.3]), _f32("one", 1.0)],
    )
    w = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32) * 0.5
    nodes = [
        N("Relu", ["x"], ["h0"]),
        N("Loop", [*m_count, "h0"], ["hT", "hs", "sqs"], body=body, name="lp"),
        N("Transpose", ["hs"], ["y"], perm=[1, 0, 2]),
        N("ReduceSum", ["sqs"], ["q"], keepdims=0),
        N("Mul", ["hT", "q"], ["z"]),
        *extra,
    ]
    return make_model(nodes, [("x", ["N", 3])], ["hT", "y", "z"], [_f32("W", w), *inits])


@pytest.mark.parametrize("kind", ["count", "condition"])
def test_loop_unrolls_as_onnxruntime_runs_it(kind) -> None:
    """4 iterations of a constant trip count without a condition, and a trip count of 10 cut
    to 3 iterations by a condition the body computes from the iteration number (i < 2)."""
    if kind == "count":
        m = _loop_model(["M", ""], [N("Identity", ["c"], ["co"])], "co", inits=[_i64("M", 4)])
    else:
        m = _loop_model(
            ["M", "go"],
            [N("Less", ["i", "two"], ["co"])],
            "co",
            inits=[_i64("M", 10), _i64("two", 2), numpy_helper.from_array(np.array(True), "go")],
        )
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    want = _ort(m, {"x": x})
    got = _predict(m, {"x": x})
    assert want[1].shape == (5, 4 if kind == "count" else 3, 3)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _refused(m, match):
    with pytest.raises(gc.OnnxError, match=match):
        gc.from_onnx(m)


def test_loop_refusals_name_the_node(monkeypatch) -> None:
    """A trip count or a condition from the data (input, or the body's), no bound at all,
    more iterations than MAX_UNROLLED_ITERATIONS, a trip count of the batch size N: refused
    naming the node."""
    from graphc import onnx_import_control

    MAX_UNROLLED_ITERATIONS = 16  # (1024 by default: the same code, faster)
    monkeypatch.setattr(onnx_import_control, "MAX_UNROLLED_ITERATIONS", MAX_UNROLLED_ITERATIONS)

    ident = [N("Identity", ["c"], ["co"])]
    from_data = [N("ReduceMax", ["x"], ["mx"], keepdims=0)]
    m = _loop_model(
        ["Md", ""], ident, "co", [*from_data, N("Cast", ["mx"], ["Md"], to=I64)]
    )  # (the extra nodes come after the Loop: topological order is checked first)
    m.graph.node.insert(0, m.graph.node.pop())
    m.graph.node.insert(0, m.graph.node.pop())
    _refused(m, r"'lp' \(Loop.*trip count M is computed from the graph's inputs")
    m = _loop_model(["M", "cd"], ident, "co", [*from_data, N("Greater", ["mx", "z0"], ["cd"])])
    m.graph.node.insert(0, m.graph.node.pop())
    m.graph.node.insert(0, m.graph.node.pop())
    m.graph.initializer.extend([_i64("M", 3), _f32("z0", 0.0)])
    _refused(m, r"'lp' \(Loop.*condition input is computed from the graph's inputs \(control flow")
    body_cond = [N("ReduceSum", ["h2"], ["r"], keepdims=0), N("Greater", ["r", "one"], ["co"])]
    _refused(
        _loop_model(["M", ""], body_cond, "co", inits=[_i64("M", 3)]),
        r"'lp' \(Loop.*condition its body computes in iteration 0 depends on the graph",
    )
    _refused(
        _loop_model(["M", ""], ident, "co", inits=[_i64("M", MAX_UNROLLED_ITERATIONS + 1)]),
        rf"'lp' \(Loop.*{MAX_UNROLLED_ITERATIONS + 1} iterations.*MAX_UNROLLED_ITERATIONS",
    )
    forever = [N("Identity", ["c"], ["co"])]
    m = _loop_model(
        ["", "go"], forever, "co", inits=[numpy_helper.from_array(np.array(True), "go")]
    )
    _refused(m, r"'lp' \(Loop.*still true after .* iterations")
    m = _loop_model(["Mn", ""], ident, "co", [N("Shape", ["x"], ["sh"])])
    m.graph.node.insert(0, m.graph.node.pop())
    m.graph.node.insert(1, N("Gather", ["sh", "zero_i"], ["Mn"], axis=0))
    m.graph.initializer.append(_i64("zero_i", 0))
    _refused(m, r"'lp' \(Loop.*trip count M depends on the batch size N")


def test_scan_axes_and_directions_as_onnxruntime() -> None:
    """Scan-11 of x [N, 4, 3] along axis 1 in reverse and a constant [3, 4] along axis 1
    forward; a state [N, 3]; scan outputs along axis 1 forward and along axis 0 in reverse
    (the [4, N, 3] layout, moved N-first by a Transpose); a time-major Scan of a transposed
    input (a layout view sliced along T)."""
    rng = np.random.default_rng(3)
    body = _body(
        [
            N("Mul", ["xt", "pt"], ["xp"]),
            N("Add", ["s", "xp"], ["a"]),
            N("Tanh", ["a"], ["s2"]),
            N("Add", ["s2", "s2"], ["o2"]),
            N("Identity", ["s2"], ["o1"]),
        ],
        [("s", F, ["N", 3]), ("xt", F, ["N", 3]), ("pt", F, [3])],
        [("s2", F), ("o1", F), ("o2", F)],
    )
    scan = N(
        "Scan",
        ["s0", "x", "P"],
        ["sT", "o1", "o2s"],
        body=body,
        num_scan_inputs=2,
        scan_input_axes=[1, 1],
        scan_input_directions=[1, 0],
        scan_output_axes=[1, 0],
        scan_output_directions=[0, 1],
        name="sc",
    )
    nodes = [scan, N("Transpose", ["o2s"], ["o2"], perm=[1, 0, 2])]
    p = _f32("P", rng.standard_normal((3, 4)))
    m = make_model(nodes, [("s0", ["N", 3]), ("x", ["N", 4, 3])], ["sT", "o1", "o2"], [p], opset=11)
    feeds = {
        "s0": rng.standard_normal((2, 3)).astype(np.float32),
        "x": rng.standard_normal((2, 4, 3)).astype(np.float32),
    }
    want = _ort(m, feeds)
    got = _predict(m, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # time-major: Transpose to [T, N, C] (a layout view), Scan along axis 0, Transpose back
    tm_body = _body(
        [N("Add", ["s", "xt"], ["a"]), N("Tanh", ["a"], ["s2"]), N("Identity", ["s2"], ["o"])],
        [("s", F, ["N", 3]), ("xt", F, ["N", 3])],
        [("s2", F), ("o", F)],
    )
    tm = make_model(
        [
            N("Transpose", ["x"], ["xtm"], perm=[1, 0, 2]),
            N("Scan", ["s0", "xtm"], ["sT", "os"], body=tm_body, num_scan_inputs=1),
            N("Transpose", ["os"], ["y"], perm=[1, 0, 2]),
        ],
        [("s0", ["N", 3]), ("x", ["N", 4, 3])],
        ["sT", "y"],
        opset=11,
    )
    for g, w in zip(_predict(tm, feeds), _ort(tm, feeds)):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    scan.attribute.pop()  # no output directions: axis 0 over the batch dimension N
    bad = make_model(
        [N("Scan", ["s0", "x", "P"], ["sT", "o1", "o2s"], body=body, num_scan_inputs=2, name="sc")],
        [("s0", ["N", 3]), ("x", ["N", 4, 3])],
        ["sT"],
        [p],
        opset=11,
    )
    _refused(bad, r"'sc' \(Scan.*scanned along N \(axis 0\), the batch dimension")


def _if_model(then_nodes, then_out, else_nodes, else_out):
    then_g = helper.make_graph(then_nodes, "then", [], [vi(then_out, F, None)])
    else_g = helper.make_graph(else_nodes, "else", [], [vi(else_out, F, None)])
    nodes = [
        N("ReduceSum", ["x"], ["sum"], keepdims=0),
        N("Greater", ["sum", "zero"], ["c"]),
        N("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="iff"),
    ]
    return make_model(nodes, [("x", ["N", 3])], ["y"], [_f32("zero", 0.0)])


def test_if_on_the_data_selects_between_both_branches() -> None:
    """If(sum(x) > 0, sqrt(x), -x): both signs of the data give ONNX Runtime's result exactly;
    the NaNs of sqrt on a negative x (the branch not taken) do not leak. Branches of different
    shapes are refused naming the node."""
    m = _if_model([N("Sqrt", ["x"], ["r"])], "r", [N("Neg", ["x"], ["n"])], "n")
    model = gc.from_onnx(m).compile()
    rng = np.random.default_rng(4)
    for sign in (1.0, -1.0):
        x = (sign * (np.abs(rng.standard_normal((4, 3))) + 0.1)).astype(np.float32)
        want = _ort(m, {"x": x})[0]
        got = model.predict(x)
        np.testing.assert_array_equal(got, want)
    bad = _if_model(
        [N("Constant", [], ["ax"], value=_i64("a", [1])), N("ReduceSum", ["x", "ax"], ["r"])],
        "r",
        [N("Neg", ["x"], ["n"])],
        "n",
    )
    _refused(bad, r"'iff' \(If.*then branch gives \[N,1\] and the else branch \[N,3\]")


def test_gradient_through_an_if_on_the_data() -> None:
    """If(sum(x) > 0, sqrt(x w), -(x w)): d/dw of the taken branch, for both signs, against
    central differences. With x < 0 the branch not taken is sqrt of negatives (NaN, and an
    undefined derivative): its backward pass must not reach w (before the branches' gates,
    the gradient was NaN)."""
    then = [N("Mul", ["x", "w"], ["xw"]), N("Sqrt", ["xw"], ["sq"])]
    m = _if_model(then, "sq", [N("Mul", ["x", "w"], ["xw2"]), N("Neg", ["xw2"], ["n"])], "n")
    w0 = np.array([0.5, 1.0, 2.0], np.float32)
    m.graph.initializer.append(_f32("w", w0))
    imp = gc.from_onnx(m, trainable={"w"})
    model = imp.compile(gc.sum(imp.outputs[0]), gc.SGD(0.1))
    rng = np.random.default_rng(7)
    for sign in (1.0, -1.0):
        x = (sign * (np.abs(rng.standard_normal((2, 3))) + 0.1)).astype(np.float32)
        np.testing.assert_array_equal(model.predict(x), _ort(m, {"x": x})[0])
        grads = model.gradients({"x": x})

        def f(w) -> float:
            xw = x.astype(np.float64) * w
            return float(np.sqrt(xw).sum() if x.sum() > 0 else (-xw).sum())

        got = next(g for n, g in grads.items() if n.endswith("w"))
        want = numeric_grad(f, [w0.astype(np.float64)], 0)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_sequence_ops_as_onnxruntime() -> None:
    """SplitToSequence (scalar split, and 1-D split with keepdims), SequenceAt (negative
    position), SequenceInsert (at the front, at the end), SequenceErase, SequenceLength,
    SequenceConstruct, SequenceEmpty and ConcatFromSequence (concat and new_axis), on values
    with N."""
    nodes = [
        N("SplitToSequence", ["x", "two"], ["sq"], axis=1),
        N("SequenceAt", ["sq", "m1"], ["last"]),
        N("Relu", ["last"], ["rl"]),
        N("SequenceInsert", ["sq", "rl", "zero"], ["sq2"]),
        N("SequenceErase", ["sq2", "one"], ["sq3"]),
        N("SequenceLength", ["sq3"], ["len"]),
        N("Cast", ["len"], ["lenf"], to=F),
        N("ConcatFromSequence", ["sq3"], ["y1"], axis=1),
        N("ConcatFromSequence", ["sq3"], ["y2n"], axis=-1, new_axis=1),
        N("Mul", ["y2n", "lenf"], ["y2"]),
        N("SequenceConstruct", ["x", "x"], ["pair"]),
        N("ConcatFromSequence", ["pair"], ["y3"], axis=1, new_axis=1),
        N("SequenceEmpty", [], ["e"]),
        N("SequenceInsert", ["e", "x"], ["e1"]),
        N("SplitToSequence", ["x", "sizes"], ["parts"], axis=-1),
        N("SequenceAt", ["parts", "one"], ["p1"]),
        N("SequenceAt", ["e1", "zero"], ["e0"]),
        N("Sigmoid", ["e0"], ["y4"]),
    ]
    inits = [_i64("two", 2), _i64("m1", -1), _i64("zero", 0), _i64("one", 1), _i64("sizes", [1, 5])]
    m = make_model(nodes, [("x", ["N", 6])], ["y1", "y2", "y3", "y4", "p1"], inits)
    x = np.random.default_rng(5).standard_normal((3, 6)).astype(np.float32)
    want = _ort(m, {"x": x})
    got = _predict(m, {"x": x})
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6)
    bad = make_model(
        [
            N("SplitToSequence", ["x"], ["s"], axis=1),
            N("SequenceAt", ["s", "far"], ["y"], name="at"),
        ],
        [("x", ["N", 6])],
        ["y"],
        [_i64("far", 6)],
    )
    _refused(bad, r"'at' \(SequenceAt.*position 6 is outside -6..5")
    relu = make_model(
        [N("SplitToSequence", ["x"], ["s"], axis=1), N("Relu", ["s"], ["y"], name="r")],
        [("x", ["N", 6])],
        ["y"],
    )
    _refused(relu, r"'r' \(Relu.*input 's' is a sequence; Relu takes tensors")


def test_gradient_through_an_unrolled_loop() -> None:
    """d/dW and d/db (b the body's own initializer: one param for all iterations) of
    sum(u * hT) + sum(v * y) for 4 iterations, against central differences of float64 numpy."""
    m = _loop_model(["M", ""], [N("Identity", ["c"], ["co"])], "co", inits=[_i64("M", 4)])
    w0 = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "W"))
    b0 = np.array([0.1, -0.2, 0.3], np.float32)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    u, v = rng.standard_normal(3), rng.standard_normal((4, 3))  # broadcast over N
    imp = gc.from_onnx(m, trainable={"W", "b"}, outputs=["hT", "y"])
    assert sorted(n for n in imp.params) == sorted(n for n in imp.params if n.endswith(("W", "b")))
    assert len(imp.params) == 2
    h_t, y = imp.outputs
    loss = gc.sum(h_t * gc.constant(u.astype(np.float32))) + gc.sum(
        y * gc.constant(v.astype(np.float32))
    )
    grads = imp.compile(loss, gc.SGD(0.1)).gradients({"x": x})

    def f(w, b) -> float:
        h = np.maximum(x.astype(np.float64), 0)
        total = 0.0
        for i in range(4):
            h = np.tanh(h @ w + x + b) * (i + 1)
            total += float((v[i] * 2 * h).sum())
        return total + float((u * h).sum())

    params = [w0.astype(np.float64), b0.astype(np.float64)]
    for k, name in enumerate("Wb"):
        got = next(g for n, g in grads.items() if n.endswith(name))
        np.testing.assert_allclose(got, numeric_grad(f, params, k), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [14, 17])
def test_torch_scripted_loop_and_if(opset) -> None:
    """torch 2.13's TorchScript export of torch.jit.script modules (export_torch_loop.py): a
    recurrence over range(x.size(1)) whose states are appended to a list and stacked (Loop,
    SequenceEmpty, SequenceInsert, ConcatFromSequence) and an if on the data (If on
    sum(x) > 0), both signs; against ONNX Runtime."""
    rng = np.random.default_rng(opset)
    for name in ("steps", "until", "nested", "pieces", "branch"):
        path = os.path.join(DATA, f"loop_ts_{name}_{opset}.onnx")
        model = gc.from_onnx(path).compile()
        for sign in (1.0, -1.0):
            x = (sign * np.abs(rng.standard_normal((3, 4, 3)))).astype(np.float32)
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            want = s.run(None, {"x": x})
            got = model.predict(x)
            got = list(got.values()) if isinstance(got, dict) else [got]
            for g, w in zip(got, want):
                assert g.shape == w.shape
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=name)


def test_onnx_node_tests_of_loop_and_scan() -> None:
    """ONNX's test_loop11 and test_scan9_* pass, interpreted and compiled."""
    cases = [*node_cases("Loop"), *node_cases("Scan")]
    ran = 0
    for c in cases:
        if c.name in (
            "test_loop11",
            "test_scan9_sum",
            "test_scan9_multi_state",
            "test_scan9_scalar",
        ):
            for mode in ("interpret", "compile"):
                assert run_case(c, mode) == ("pass", ""), (c.name, mode)
            ran += 1
    assert ran == 4


def _ids_model(kind):
    """Token ids [N, T] (int64) read only inside a body: a Loop whose step t looks row
    ids[:, t] - 1 up in a table (a tanh recurrence), its scan output of the shifted ids; a Scan
    over ids along axis 1 doing the same; an If on the data whose branches look ids up in two
    tables; an If on a constant (the branch imported in place, as torch's scatter_reduce
    export passes indices through an If on Size(x) == 0)."""
    rng = np.random.default_rng(3)
    T, V, E = 4, 7, 3
    inits = [
        _f32("emb", rng.standard_normal((V, E))),
        _f32("W", rng.standard_normal((E, E)) * 0.5),
        _i64("one", 1),
        _i64("ax", [1]),
    ]
    step = [
        N("Sub", ["it", "one"], ["it1"]),
        N("Gather", ["emb", "it1"], ["e"]),
        N("MatMul", ["h", "W"], ["hw"]),
        N("Add", ["hw", "e"], ["a"]),
        N("Tanh", ["a"], ["h2"]),
    ]
    if kind == "loop":
        body = _body(
            [N("Gather", ["ids", "i"], ["it"], axis=1), *step, N("Identity", ["c"], ["co"])],
            [("i", I64, []), ("c", B, []), ("h", F, ["N", E])],
            [("co", B), ("h2", F), ("it1", I64)],
        )
        nodes = [
            N("Loop", ["M", "", "h0"], ["hT", "its"], body=body, name="lp"),
            N("Transpose", ["its"], ["itsT"], perm=[1, 0]),
        ]
        inits.append(_i64("M", T))
    elif kind == "scan":
        body = _body(step, [("h", F, ["N", E]), ("it", I64, ["N"])], [("h2", F), ("it1", I64)])
        nodes = [
            N("Scan", ["h0", "ids"], ["hT", "itsT"], body=body, num_scan_inputs=1,
              scan_input_axes=[1], scan_output_axes=[1], name="sc"),
        ]  # fmt: skip
    else:
        br = [
            _body([N("Gather", [t, "ids"], ["g" + t]), N("ReduceSum", ["g" + t, "ax"], ["o" + t],
                  keepdims=0)], [], [("o" + t, F)])
            for t in ("emb", "emb2")
        ]  # fmt: skip
        cond = ["pos"] if kind == "if" else ["yes"]
        nodes = [
            N("ReduceSum", ["h0"], ["sx"], keepdims=0),
            N("Greater", ["sx", "zero"], ["pos"]),
            N("If", cond, ["o"], then_branch=br[0], else_branch=br[1], name="pick"),
            N("Add", ["o", "sx"], ["y"]),
        ]
        inits += [
            _f32("emb2", rng.standard_normal((V, E))),
            _f32("zero", 0.0),
            numpy_helper.from_array(np.array(True), "yes"),
        ]
    if kind in ("loop", "scan"):
        nodes += [
            N("Cast", ["itsT"], ["fits"], to=F),
            N("ReduceSum", ["fits", "ax"], ["s"], keepdims=1),
            N("Mul", ["hT", "s"], ["y"]),
        ]
    return make_model(nodes, [("h0", ["N", E]), ("ids", I64, ["N", T])], ["y"], inits)


@pytest.mark.parametrize("kind", ["loop", "scan", "if", "if_known"])
def test_integer_input_read_only_inside_a_body(kind) -> None:
    """An int64 input read only inside a Loop's, Scan's or If's body (before: refused, 'graphc
    does not follow an integer input into an If, Loop or Scan body') is followed there like
    one the graph reads: equal to ONNX Runtime, and an id whose lookup leaves the table is
    refused at run time naming the input and the row (ONNX Runtime raises too)."""
    rng = np.random.default_rng(4)
    m = _ids_model(kind)
    ids = rng.integers(1, 7, (5, 4)).astype(np.int64)
    h0 = rng.standard_normal((5, 3)).astype(np.float32)
    h0[0] = -np.abs(h0[0])  # (If: the first row sums below 0, the second above)
    h0[1] = np.abs(h0[1])
    cm = gc.from_onnx(m).compile()
    for rows in (slice(0, 1), slice(1, 5)):
        feeds = {"h0": h0[rows], "ids": ids[rows]}
        got = cm.predict(feeds)
        got = got["y"] if isinstance(got, dict) else got
        np.testing.assert_allclose(got, _ort(m, feeds)[0], rtol=1e-5, atol=1e-5)
    bad = ids.copy()
    bad[2, 3] = 8
    with pytest.raises(gc.ArgumentError, match=r"'ids': row 2 holds 8"):
        cm.predict({"h0": h0, "ids": bad})


def test_integer_input_inside_a_body_refused_naming_the_body_node() -> None:
    """An integer input a body multiplies by a matrix (integer arithmetic float32 cannot
    mirror) is refused naming the Loop and the body's node."""
    body = _body(
        [
            N("MatMul", ["ids", "K"], ["p"], name="mm"),
            N("Cast", ["p"], ["fp"], to=F),
            N("Add", ["h", "fp"], ["h2"]),
            N("Identity", ["c"], ["co"]),
        ],
        [("i", I64, []), ("c", B, []), ("h", F, ["N", 2])],
        [("co", B), ("h2", F)],
    )
    nodes = [N("Loop", ["M", "", "x"], ["y"], body=body, name="lp")]
    inits = [_i64("M", 2), _i64("K", [[1, 2], [3, 4]])]
    m = make_model(nodes, [("x", ["N", 2]), ("ids", I64, ["N", 2])], ["y"], inits)
    _refused(m, r"input 'ids'.*node 0 'lp' \(Loop\) body: node 0 'mm' \(MatMul\) reads 'ids'")


def _optional_model(present: bool):
    """torch-scripted ``if x is not None`` as ONNX writes it: o = Optional(x) (or an empty
    Optional of a float tensor), If(OptionalHasElement(o)) with a branch that reads
    OptionalGetElement(o) and one that does not."""
    tt = helper.make_tensor_type_proto(F, None)
    opt = N("Optional", ["x"], ["o"]) if present else N("Optional", [], ["o"], type=tt)
    then = _body(
        [
            N("OptionalGetElement", ["o"], ["g"]),
            N("Relu", ["g"], ["r"]),
            N("Add", ["r", "x"], ["a"]),
        ],
        [],
        [("a", F)],
    )
    other = _body([N("Neg", ["x"], ["b"])], [], [("b", F)])
    nodes = [
        opt,
        N("OptionalHasElement", ["o"], ["has"]),
        N("If", ["has"], ["y"], then_branch=then, else_branch=other, name="pick"),
    ]
    return make_model(nodes, [("x", ["N", 3])], ["y"], opset=18)


@pytest.mark.parametrize("present", [True, False])
def test_optional_known_at_import(present) -> None:
    """Optional, OptionalHasElement (a bool known at import: the If takes one branch) and
    OptionalGetElement, against ONNX Runtime (before: 'operator Optional is not supported');
    an optional where a tensor is needed, or OptionalGetElement of an empty one, is refused
    naming the node."""
    m = _optional_model(present)
    x = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(_predict(m, {"x": x})[0], _ort(m, {"x": x})[0], rtol=1e-6)
    get = N("OptionalGetElement", ["o"], ["g"], name="get")
    relu = N("Relu", ["o"], ["g"], name="relu")
    for node, match in (
        (get, r"'get' \(OptionalGetElement.*is empty"),
        (relu, r"'relu'.*optional"),
    ):
        if present and node is get:
            continue
        bad = _optional_model(present)
        bad.graph.node.insert(1, node)
        bad.graph.output.append(vi("g", F, None))
        _refused(bad, match)


def test_sequence_map_as_onnxruntime() -> None:
    """SequenceMap over a SplitToSequence of x (parts of 2, 1 and 3 columns) with a tensor
    operand read by every element (tanh(e * s) + e), the two output sequences concatenated;
    against ONNX Runtime (before: 'operator SequenceMap is not supported'). Sequences of
    different lengths are refused naming the node."""
    body = _body(
        [N("Mul", ["e", "s"], ["es"]), N("Tanh", ["es"], ["t"]), N("Add", ["t", "e"], ["o"])],
        [("e", F, ["N", None]), ("s", F, [])],
        [("o", F), ("t", F)],
    )
    nodes = [
        N("SplitToSequence", ["x", "sp"], ["seq"], axis=1),
        N("ReduceMean", ["x"], ["s"], keepdims=0),
        N("SequenceMap", ["seq", "s"], ["so", "st"], body=body, name="map"),
        N("ConcatFromSequence", ["so"], ["y"], axis=1),
        N("ConcatFromSequence", ["st"], ["z"], axis=1),
    ]
    m = make_model(nodes, [("x", ["N", 6])], ["y", "z"], [_i64("sp", [2, 1, 3])], opset=17)
    x = np.random.default_rng(7).standard_normal((3, 6)).astype(np.float32)
    for g, w in zip(_predict(m, {"x": x}), _ort(m, {"x": x})):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    nodes[2] = N("SequenceMap", ["seq", "seq2"], ["so", "st"], body=body, name="map")
    nodes.insert(1, N("SplitToSequence", ["x", "sp2"], ["seq2"], axis=1))
    bad = make_model(
        nodes, [("x", ["N", 6])], ["y", "z"], [_i64("sp", [2, 1, 3]), _i64("sp2", [3, 3])], opset=17
    )
    _refused(bad, r"'map' \(SequenceMap.*different lengths \[2, 3\]")


def test_integer_input_read_only_by_nodes_no_output_needs() -> None:
    """An int64 input whose only readers feed no graph output is accepted (those nodes are
    never converted), as it was before the body walk learned to skip them (10e2c95 refused it:
    'no node reads it')."""
    nodes = [
        N("Relu", ["x"], ["y"]),
        N("Cast", ["ids"], ["f"], to=F),
        N("Add", ["f", "f"], ["unused"]),
    ]
    m = make_model(nodes, [("x", ["N", 3]), ("ids", I64, ["N", 3])], ["y"])
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    got = _predict(m, {"x": x})[0]  # (the compiled model takes the inputs its outputs read)
    np.testing.assert_array_equal(got, np.maximum(x, 0))


def test_scan_body_looks_up_its_slice_of_an_integer_input() -> None:
    """A Scan over int64 ids whose body gathers with its slice directly (Gather(emb, it), no
    integer arithmetic first): the body input is declared int64, so it holds whole numbers as
    an integer-typed node output does. Before, refused at import ('indices computed in float:
    Gather needs integer indices'). Equal to ONNX Runtime at batches 1 and 5; an id outside the
    table is refused at run time naming 'ids' (ONNX Runtime raises too)."""
    rng = np.random.default_rng(6)
    V, E, T = 7, 3, 4
    body = _body(
        [N("Gather", ["emb", "it"], ["e"]), N("Add", ["h", "e"], ["h2"])],
        [("h", F, ["N", E]), ("it", I64, ["N"])],
        [("h2", F)],
    )
    nodes = [N("Scan", ["h0", "ids"], ["y"], body=body, num_scan_inputs=1, scan_input_axes=[1])]
    m = make_model(
        nodes, [("h0", ["N", E]), ("ids", I64, ["N", T])], ["y"],
        [_f32("emb", rng.standard_normal((V, E)))],
    )  # fmt: skip
    cm = gc.from_onnx(m).compile()
    for n in (1, 5):
        feeds = {
            "h0": rng.standard_normal((n, E)).astype(np.float32),
            "ids": rng.integers(0, V, (n, T)).astype(np.int64),
        }
        got = cm.predict(feeds)
        got = got["y"] if isinstance(got, dict) else got
        np.testing.assert_allclose(got, _ort(m, feeds)[0], rtol=1e-5, atol=1e-5)
    feeds["ids"][3, 1] = V
    with pytest.raises(gc.ArgumentError, match=rf"'ids': row 3 holds {V}"):
        cm.predict(feeds)
