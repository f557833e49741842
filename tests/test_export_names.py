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
