"""C argument names of exported libraries: named after the graph's inputs and outputs (two
outputs that CSE merged into one value keep their names and are both written), escaped
against the wrappers' fixed parameters (ctx, n, <arg>_len), their locals (gc_*), what their
bodies call (memcpy, int64_t, ...), C keywords and each other (case-insensitively: the
header's macros are upper case). The test compiles a C program with the header, calls infer
with every argument and compares each output with predict."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from c_build import CC, build_program

import graphc as gc

INPUTS = ["x", "x_len", "n", "ctx", "gc_in", "memcpy", "int64_t", "A", "a", "loss"]


@pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) on PATH")
def test_c_arguments_named_after_outputs_and_escaped(tmp_path) -> None:
    ins = {k: gc.input(k, ("N", 2)) for k in INPUTS}
    s = sum((t * float(i + 1) for i, t in enumerate(ins.values())), gc.relu(ins["x"]))
    outs = [
        gc.relu(s, name="p"),
        gc.relu(s, name="q"),  # the same value as p: merged by CSE
        gc.tanh(s, name="int"),
        gc.tanh(s, name="x_len_len"),  # the same value as int
        gc.sigmoid(s, name="P"),  # differs from p only in case
    ]
    m = gc.compile(outs, name="cn")
    rows = 3
    feeds = {
        k: (np.arange(rows * 2, dtype=np.float32).reshape(rows, 2) * 0.01 - 0.1 * i)
        for i, k in enumerate(INPUTS)
    }
    want = m.predict(feeds)
    assert list(want) == ["p", "q", "int", "x_len_len", "P"]
    res = m.export(str(tmp_path / "libcn.so"))
    e = res.plan.entries["infer"]
    cnames = [p.cname for p in e.inputs + e.outputs]
    lens = [f"{c}_len" for c in cnames]
    assert len({c.upper() for c in cnames + lens + ["ctx", "n"]}) == len(cnames) * 2 + 2
    assert [p.name for p in e.outputs] == list(want)
    lib = gc.load(str(tmp_path / "libcn.so"))
    got = lib.predict(feeds)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)
    # a C program calling infer with every argument by the header's prototype
    decl, args = [], []
    for p in e.inputs:
        vals = ", ".join(f"{v:.9e}f" for v in feeds[p.name].ravel())
        decl.append(f"    static const float in_{len(decl)}[] = {{{vals}}};")
        args += [f"in_{len(decl) - 1}", str(rows * 2)]
    for j, _ in enumerate(e.outputs):
        decl.append(f"    static float out_{j}[{rows * 2}];")
        args += [f"out_{j}", str(rows * 2)]
    prints = "".join(
        f'    for (i = 0; i < {rows * 2}; i++) printf("%.9g ", out_{j}[i]);\n    printf("\\n");\n'
        for j in range(len(e.outputs))
    )
    src = tmp_path / "call.c"
    src.write_text(
        '#include <stdio.h>\n#include <stdlib.h>\n#include "cn.h"\n'
        "int main(void) {\n    cn_ctx ctx = {0};\n    int i, rc;\n" + "\n".join(decl) + "\n"
        f"    ctx.params = aligned_alloc(64, CN_PARAM_BYTES + 64);\n"
        "    ctx.params_bytes = CN_PARAM_BYTES;\n"
        f"    ctx.workspace_bytes = cn_workspace_size({rows});\n"
        "    ctx.workspace = aligned_alloc(64, (size_t)ctx.workspace_bytes + 64);\n"
        "    if ((rc = cn_init(&ctx)) != 0) return 10 + rc;\n"
        f"    if ((rc = cn_infer(&ctx, {rows}, {', '.join(args)})) != 0) return 20 + rc;\n"
        + prints
        + "    return 0;\n}\n"
    )
    exe = build_program(src, tmp_path, "cn", tmp_path / "call", ["-std=c11", "-Wall", "-Werror"])
    r = subprocess.run([exe], capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr)
    lines = r.stdout.splitlines()
    for line, k in zip(lines, want, strict=True):
        got_c = np.array([float(v) for v in line.split()]).reshape(rows, 2)
        np.testing.assert_allclose(got_c, want[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_predict_keys_are_the_headers_and_onnxs_names(tmp_path) -> None:
    """Several outputs, some left unnamed: predict's keys (Model and gc.load) were graphc's
    value names ('%1') while the header and to_onnx called them y0, y2. Now one rule
    (codegen.aot.output_keys): the header's names, an unnamed output leaving a name the user
    gave another (y0 here) to it; the old keys still index the result and name out= arrays."""
    x = gc.input("x", ("N", 4))
    h = gc.dense(x, 3)
    outs = [h, gc.softmax(h, name="probs"), gc.relu(h), gc.tanh(h, name="y0")]
    m = gc.compile(outs, name="keys")
    old = list(m.program.outputs)
    assert old[0].startswith("%") and old[2].startswith("%")
    want = ["out0", "probs", "y2", "y0"]
    assert m.output_keys == want
    res = m.export(str(tmp_path / "libkeys.so"))
    text = open(res.header).read()
    sig = text[text.index("int keys_infer(") : text.index(");", text.index("int keys_infer("))]
    assert [a.split("*")[1] for a in sig.split(", ") if a.startswith("float *")] == want
    lib = gc.load(res.library)
    xs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    mine, theirs = m.predict(xs), lib.predict(xs)
    assert list(mine) == list(theirs) == want
    for k, o in zip(want, old):
        np.testing.assert_array_equal(theirs[k], mine[k])
        assert mine[o] is mine[k] and theirs[o] is theirs[k]  # the old keys still answer
        assert mine.get(o) is mine[k]
        assert o in mine and o in theirs and o in mine.copy()  # (review rvI F3)
        assert mine.copy()[o] is mine[k] and theirs.copy()[o] is theirs[k]
    assert "%99" not in mine and mine.get("%99") is None and list(mine.copy()) == want
    with pytest.raises(KeyError):
        mine["%99"]
    for who in (m, lib):
        for names in (want, old):  # out= by either key
            out = {k: np.empty((5, 3), np.float32) for k in names}
            who.predict(xs, out=out)
            for k, o in zip(names, want):
                np.testing.assert_array_equal(out[k], mine[o])
    onnx = pytest.importorskip("onnx")
    m.to_onnx(str(tmp_path / "keys.onnx"))
    assert [o.name for o in onnx.load(str(tmp_path / "keys.onnx")).graph.output] == want
