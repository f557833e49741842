"""``graphc dump``: stages in pipeline order, formats (text, json, dot, svg), provenance, reports."""

from __future__ import annotations

import functools
import json
import os
import shutil

import pytest

from graphc.cli import main
from graphc.dump import (
    compile_stages,
    fusion_report,
    graph_dot,
    node_costs,
    related_nodes,
    render_svg,
    stats_text,
)
from graphc.ir.errors import GraphcError
from graphc.ir.ops import OPS
from graphc.ir.passes.pipeline import passes_for_level
from graphc.ir.text import graph_from_json, parse_graph, renumbered

DIGITS = "examples/models.py:digits"


@functools.cache
def digits_stages(level: int = 2):
    return compile_stages(DIGITS, opt_level=level)


def same(a, b) -> bool:
    return renumbered(a) == renumbered(b)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["dump", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_stages_are_in_pipeline_order_and_each_pass_is_a_stage() -> None:
    st = digits_stages()
    names = st.names()
    assert names[:2] == ["forward", "backward"]
    assert names[-4:] == ["scheduled", "llvm", "llvm-opt", "asm"]
    passes = [r.name for r in st.program.optimized["train_step"].records]
    assert names[2:-4] == passes
    assert "fuse_elementwise" in passes or "fuse_dense" in passes


def test_every_graph_stage_parses_back(capsys) -> None:
    st = digits_stages()
    for s in st.stages:
        if s.kind == "llvm":
            continue
        rc, out, _ = run_cli(capsys, DIGITS, "--stage", s.name)
        assert rc == 0
        # the header comments are ignored by the parser; each load of the model file numbers
        # its values afresh, hence the renumbering
        assert same(parse_graph(out), s.graph), s.name


def test_scheduled_stage_lists_kernels_buffers_and_arena(capsys) -> None:
    _rc, out, _ = run_cli(capsys, DIGITS, "--stage", "scheduled", "--batch", "8")
    sched = digits_stages().program.schedules["train_step"]
    assert f"{len(sched.kernels)} kernels" in out
    for k in sched.kernels:
        assert k.name in out
    assert f"= {sched.peak_arena_bytes(8)} B at N=8" in out
    assert f"{sched.unplanned_bytes(8)} B" in out
    assert same(parse_graph(out), sched.graph)


def test_json_has_the_documented_fields_and_reads_back(capsys) -> None:
    _rc, out, _ = run_cli(capsys, DIGITS, "--stage", "backward", "--format", "json")
    obj = json.loads(out)
    g = obj["graph"]
    assert {
        "format",
        "version",
        "name",
        "nodes",
        "edges",
        "outputs",
        "updates",
        "sections",
        "groups",
    } <= set(g)
    node = g["nodes"][0]
    assert {
        "name",
        "op",
        "inputs",
        "type",
        "attrs",
        "section",
        "group",
        "loc",
        "origin",
        "related",
    } <= set(node)
    assert len(g["edges"]) == sum(len(n["inputs"]) for n in g["nodes"])
    assert same(graph_from_json(g), digits_stages().program.training)


def test_forward_and_gradient_nodes_find_each_other() -> None:
    t = digits_stages().program.training
    grads = digits_stages().program.grads
    fc1 = next(n for n in t.nodes if n.op == "matmul" and "fc1.w" in n.inputs)
    rel = related_nodes(t, fc1.name)
    assert rel["gradient_nodes"], "the first layer's matmul has gradient nodes"
    # the gradient of fc1.w is among them, and points back at operand 1 (the weight)
    dw = grads["fc1.w"]
    assert dw in rel["gradient_nodes"]
    assert related_nodes(t, dw, grads)["gradient_of"] == {"node": fc1.name, "operand": 1}
    assert related_nodes(t, "fc1.w", grads)["gradient"] == dw
    assert related_nodes(t, dw, grads)["gradient_of_param"] == "fc1.w"


def test_fused_nodes_list_what_they_absorbed() -> None:
    st = digits_stages()
    g = st.stages[st.names().index("scheduled") - 1].graph
    grouped = [n for n in g.nodes if n.group is not None]
    assert grouped, "expected fusion at -O2"
    n = grouped[0]
    mates = [m.name for m in g.nodes if m.group == n.group and m.name != n.name]
    assert related_nodes(g, n.name)["fused_with"] == mates


def test_explain_fusion_covers_every_dense_layer_and_activation(capsys) -> None:
    st = digits_stages()
    rows = fusion_report(st)
    before = st.program.training
    wanted = {n.name for n in before.nodes if n.op in ("matmul", "relu")}
    got = {name for name, _, _ in rows}
    assert got == wanted
    final = st.program.schedules["train_step"].graph
    for name, fused, why in rows:
        node = final.by_name.get(name)
        in_group = node is not None and any(
            m.group == node.group and m.name != name for m in final.nodes if node.group
        )
        assert fused == in_group, (name, why)
        assert why
    rc, out, _ = run_cli(capsys, DIGITS, "--explain-fusion", "-O0")
    assert (
        rc == 0
        and "NOT fused" in out
        and "-O0" in out
        and "fused " not in out.replace("NOT fused", "")
    )


def test_stats_flops_match_the_matmul_formula() -> None:
    st = digits_stages()
    final = st.program.schedules["train_step"].graph
    costs = {n.name: (fl, by) for n, fl, by in node_costs(final, 32)}
    fc1 = next(n for n in final.nodes if n.op == "matmul" and n.inputs == ("x", "fc1.w"))
    assert costs[fc1.name][0] == 2 * 32 * 64 * 32  # 2*M*N*K
    assert costs[fc1.name][1] == 4 * (32 * 64 + 64 * 32 + 32 * 32)  # f32 operands + result
    text = stats_text(st, 32)
    params = 64 * 32 + 32 + 32 * 10 + 10
    assert f"parameters: {params} values" in text
    total = sum(fl for fl, _ in costs.values())
    assert f"total FLOPs: {total}" in text
    sched = st.program.schedules["train_step"]
    assert f"peak {sched.peak_arena_bytes(32)} B planned vs {sched.unplanned_bytes(32)} B" in text
    for r in st.program.optimized["train_step"].records:
        assert r.name in text


def test_dump_dir_writes_every_stage_numbered(tmp_path, capsys) -> None:
    d = tmp_path / "dump"
    rc, _out, _ = run_cli(
        capsys,
        "examples/models.py:diabetes",
        "--dump-dir",
        str(d),
        "-O1",
        "--stats",
        "--explain-fusion",
    )
    assert rc == 0
    files = sorted(os.listdir(d))
    numbered = [f for f in files if f[:2].isdigit()]
    passes = [p.__name__ for p in passes_for_level(1)]
    expected = ["forward", "backward", *passes, "scheduled", "llvm", "llvm-opt", "asm"]
    assert [f.split("-", 1)[1].rsplit(".", 1)[0] for f in numbered] == expected
    assert [int(f[:2]) for f in numbered] == list(range(1, len(expected) + 1))
    assert numbered[0] == "01-forward.txt" and numbered[-1].endswith("-asm.s")
    assert "define" in (d / next(f for f in numbered if f.endswith("-llvm.ll"))).read_text()
    assert {"stats.txt", "fusion.txt"} <= set(files)
    back = parse_graph((d / "02-backward.txt").read_text())
    assert any(n.section == "update" for n in back.nodes)
    assert "text" in (d / numbered[-1]).read_text() and "ret" in (d / numbered[-1]).read_text()


def test_dot_has_a_box_per_node_sections_and_fusion_clusters() -> None:
    st = digits_stages()
    g = st.stages[st.names().index("scheduled") - 1].graph
    dot = graph_dot(g)
    for n in g.nodes:
        if n.op != "const":
            assert f'"{n.name}" [label=' in dot
    groups = {n.group for n in g.nodes if n.group}
    assert dot.count('subgraph "cluster_') == len(groups)
    assert "#fde2c8" in dot and "#dcfce7" in dot  # backward and update colors
    collapsed = graph_dot(g, collapse=True)
    assert "cluster_dense" not in collapsed and "fused " in collapsed


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_svg_is_rendered_by_graphviz(tmp_path, capsys) -> None:
    out = tmp_path / "g.svg"
    rc, _, _ = run_cli(capsys, DIGITS, "--stage", "backward", "--format", "svg", "-o", str(out))
    text = out.read_text()
    assert rc == 0 and "<svg" in text and "softmax_cross_entropy_grad" in text


def test_svg_without_graphviz_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GraphcError, match="apt-get install graphviz"):
        render_svg("digraph g { a -> b }")


def test_bad_model_arguments_give_clear_errors(capsys, tmp_path) -> None:
    rc, _, err = run_cli(capsys, "no/such/file.py:net")
    assert rc == 2 and "does not exist" in err
    rc, _, err = run_cli(capsys, "examples/models.py:nope")
    assert rc == 2 and "has no attribute 'nope'" in err
    rc, _, err = run_cli(capsys, DIGITS, "--stage", "frobnicate")
    assert rc == 2 and "no stage 'frobnicate'" in err and "fuse" in err
    f = tmp_path / "m.py"
    f.write_text("answer = 42\n")
    rc, _, err = run_cli(capsys, f"{f}:answer")
    assert rc == 2 and "got int" in err


def test_llvm_stage_text(capsys) -> None:
    rc, out, _ = run_cli(capsys, "examples/models.py:diabetes", "--stage", "llvm", "-O0")
    assert rc == 0 and "define" in out and "diabetes_train_step" in out


def test_every_op_has_a_flop_count() -> None:
    st = digits_stages()
    for n, fl, by in node_costs(st.program.training, 4):
        assert fl >= 0 and by > 0, n.name
    assert all(hasattr(op, "flops") for op in OPS.values())


def test_fusion_report_agrees_with_the_groups() -> None:
    from graphc.ir.passes.fuse import explain_fusion

    st = digits_stages()
    passes = st.pass_graphs()
    k = next(i for i, s in enumerate(passes) if s.name.startswith("fuse"))
    before = passes[k - 1].graph if k else st.program.training
    after = passes[-1].graph
    for name, fused, why in explain_fusion(before, after):
        if name not in after.by_name:
            assert not fused and "removed" in why, (name, why)
            continue
        assert fused == (after[name].group is not None), (name, why)
        assert why
