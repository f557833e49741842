"""Untrusted IR text and huge shapes: every failure is a GraphcError naming the place, raised
before anything compiles or allocates (the parser's bounds, ir.verify.check_sizes)."""

import json

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import CheckpointError, ParseError, ShapeError
from graphc.ir.text import graph_from_json, parse_graph

G = "graph g(\n    x: f32[N,4]\n) {\n  %0 = relu(x) {k=ATTR} : f32[N,4]\n  return %0\n}\n"


@pytest.mark.parametrize(
    "attr, where, words",
    [
        ("[" * 5000 + "]" * 5000, "4:", "nest deeper"),
        ("9" * 5000, "4:19:", "longer than"),
        ("9" * 40, "4:19:", "out of range"),
        ("-" + "9" * 30, "4:19:", "out of range"),
        ("18446744073709551616", "4:19:", "out of range"),  # 2**64: past uint64 (seeds)
        ("-9223372036854775809", "4:19:", "out of range"),  # -2**63 - 1
        ("1e999", "4:19:", "overflows float64"),
        ("1." + "0" * 500, "4:19:", "longer than"),
    ],
)
def test_parser_bounds_literals_and_nesting(attr, where, words):
    with pytest.raises(ParseError, match=words) as e:
        parse_graph(G.replace("ATTR", attr))
    assert str(e.value).startswith(where)
    assert len(str(e.value)) < 500  # the hostile line is shown clipped around the column


def test_parser_bounds_dimensions_and_keeps_int64_edges():
    for dim in ["9" * 5000, str(2**63)]:
        with pytest.raises(ParseError, match=r"^2:\d+: a dimension .* out of range"):
            parse_graph(G.replace("f32[N,4]", f"f32[N,{dim}]"))
    # the edges of int64 and uint64 (a seed may be up to 2**64 - 1) and deep-but-allowed lists
    # still read back exactly
    edges = f"[{-(2**63)}, {2**63 - 1}, {2**63}, {2**64 - 1}, [[[1.5]]]]"
    attrs = parse_graph(G.replace("ATTR", edges)).nodes[-1].attrs
    assert attrs == (("k", (-(2**63), 2**63 - 1, 2**63, 2**64 - 1, (((1.5,),),))),)


def test_json_graph_bounds():
    with pytest.raises(ParseError):
        graph_from_json("[" * 100000 + "]" * 100000)
    with pytest.raises(ParseError):
        graph_from_json('{"x": ' + "9" * 5000 + "}")


@pytest.mark.parametrize("shape", [(2**32, 2**31), (2**62, 4), (2**40, 2**40), (4, 2**61)])
def test_huge_param_refused_before_compiling(shape):
    w = gc.param("w", shape, init="zeros")
    with pytest.raises(ShapeError, match=r"'w'.*f32\[") as e:
        gc.compile(gc.relu(w), name="huge")
    assert f"has {shape[0] * shape[1]} elements" in str(e.value) or "memory" in str(e.value)
    x = gc.input("x", ("N", 2**62))  # a batched value: its bytes per row overflow
    with pytest.raises(ShapeError, match=r"'x'.*bytes per row"):
        gc.compile(gc.relu(x), name="huge_rows")


def test_forged_model_file_with_huge_dims_refused(tmp_path):
    from graphc.runtime.checkpoint import structure_hash

    x = gc.input("x", ("N", 4))
    m = gc.compile(gc.relu(gc.matmul(x, gc.param("w", (4, 3)))), name="h")
    path = tmp_path / "h.gcm"
    m.save_model(path)
    z = np.load(path)
    arrays = {k: z[k] for k in z.files}
    head = json.loads(bytes(arrays["__header__"]).decode())
    text = head["extra"]["model_file"]["graph"]
    for dim in [2**61, 2**62 + 1, 2**63, 10**30]:
        forged = text.replace("f32[N,4]", f"f32[N,{dim}]").replace("f32[4,3]", f"f32[{dim},3]")
        h2 = json.loads(json.dumps(head))
        h2["extra"]["model_file"]["graph"] = forged
        if dim < 2**63:  # the loader's hashes recomputed, as a forger would
            h2["graph_hash"] = h2["forward_hash"] = structure_hash(parse_graph(forged))
        a2 = dict(arrays, __header__=np.frombuffer(json.dumps(h2).encode(), np.uint8))
        bad = tmp_path / f"forged{dim}.gcm"
        with open(bad, "wb") as f:
            np.savez(f, **a2)
        with pytest.raises(CheckpointError, match="forged"):
            gc.load_model(bad)


@pytest.mark.parametrize(
    "field, value",
    [
        ("outputs", [["%0"]]),  # TypeError (unhashable) escaped before
        ("outputs", [None]),  # KeyError escaped before
        ("loss", {"a": 1}),
        ("prediction", [1]),
        ("optimizer", {"class": ["Adam"], "fields": {}}),
        ("optimizer", "Adam"),
    ],
)
def test_model_file_description_fields_of_the_wrong_type_refused(tmp_path, field, value):
    # found by fuzzing .gcm files (fuzz_gc of the fuzzer helper): a name field holding a list,
    # a dict or null escaped from gc.load_model as TypeError or KeyError
    x, y = gc.input("x", ("N", 4)), gc.input("y", ("N", 3))
    out = gc.matmul(x, gc.param("w", (4, 3)))
    m = gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(0.1), name="d")
    path = tmp_path / "d.gcm"
    m.save_model(path)
    z = np.load(path)
    arrays = {k: z[k] for k in z.files}
    head = json.loads(bytes(arrays["__header__"]).decode())
    head["extra"]["model_file"][field] = value
    bad = tmp_path / "forged.gcm"
    with open(bad, "wb") as f:
        np.savez(f, **dict(arrays, __header__=np.frombuffer(json.dumps(head).encode(), np.uint8)))
    with pytest.raises(CheckpointError, match=f"forged.gcm.*'{field}'"):
        gc.load_model(bad)
    gc.load_model(path)  # the file as written loads
