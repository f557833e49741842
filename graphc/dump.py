"""``graphc dump MODEL``: every stage of the compiler, as text, JSON or a picture; reports.

    graphc dump examples/models.py:digits                       # every graph stage, as text
    graphc dump examples/models.py:digits --stage fuse_elementwise --format svg -o digits.svg
    graphc dump examples/models.py:digits --dump-dir out/       # 01-forward.txt, ...
    graphc dump examples/models.py:digits --explain-fusion --stats

Stages, in pipeline order: ``forward`` (the DSL's graph), ``backward`` (the training graph after
autodiff and the optimizer's update nodes), one stage per optimization pass (named after the
pass: ``simplify`` from -O1, ``eliminate_dead_nodes``, then at -O2 ``fuse_dense``,
``fuse_conv``, ``fuse_elementwise``, ``fuse_softmax_cross_entropy``, ``fuse_update_epilogue`` and
``fuse_optimizer``),
``scheduled`` (kernels in order, buffers, arena offsets), ``llvm`` (the LLVM module as built),
``llvm-opt`` (after LLVM's O3 pipeline) and ``asm`` (machine code for the target CPU). The pass
stages belong to one entry point: ``train_step`` when the model has a loss, else ``infer``.

Formats: ``text`` (the IR text of ``graphc.ir.text``, which ``parse_graph`` reads back; the
scheduled stage is that text after a comment block listing kernels and buffers), ``json`` (schema
in docs/ir.md), ``dot`` (Graphviz source) and ``svg`` (rendered by Graphviz's ``dot`` program).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from graphc.cli import int_in
from graphc.ir.dot import graph_dot, render_svg
from graphc.ir.errors import ArgumentError
from graphc.ir.graph import Graph, Node
from graphc.ir.ops import ACTIVATIONS, INLINE_OPS, OPS, SOURCE_OPS
from graphc.ir.passes.fuse import explain_fusion
from graphc.ir.passes.pipeline import PASS_NAMES
from graphc.ir.text import graph_to_json, print_graph

FORMATS = ("text", "json", "dot", "svg")
EXTENSIONS = {"text": "txt", "json": "json", "dot": "dot", "svg": "svg"}
TEXT_EXT = {"llvm": "ll", "llvm-opt": "ll", "asm": "s"}


# ----------------------------------------------------------------------------------- stages


@dataclass
class Stage:
    """One stage of the compiler's work, as shown by ``graphc dump``."""

    name: str
    kind: str  # graph | schedule | llvm
    graph: Graph | None = None  # graph and schedule stages
    schedule: Any = None  # schedule stages: graphc.ir.passes.schedule.Schedule
    text: str = ""  # llvm stages
    seconds: float = 0.0
    note: str = ""  # one line: what happened here


@dataclass
class Stages:
    """Every stage of one model, in pipeline order, and what made them."""

    program: Any
    entry: str
    opt_level: int
    stages: list[Stage] = field(default_factory=list)
    module_builder: Any = None
    target_cpu: str = "native"
    _llvm: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def get(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                if s.kind == "llvm" and not s.text:
                    s.text, s.seconds = self._llvm_text(name)
                return s
        raise ArgumentError(f"no stage {name!r}; the stages are: {', '.join(self.names())}")

    def _llvm_text(self, name: str) -> tuple[str, float]:
        from graphc.codegen.target import optimize, target_machine

        t0 = time.perf_counter()
        if name == "llvm":
            return str(self.module_builder.module), 0.0
        if "opt" not in self._llvm:
            tm = target_machine(self.target_cpu)
            mod = optimize(self.module_builder.module, tm, self.program.name)
            self._llvm["opt"] = str(mod)
            self._llvm["opt_s"] = str(time.perf_counter() - t0)
            t1 = time.perf_counter()
            self._llvm["asm"] = tm.emit_assembly(mod)
            self._llvm["asm_s"] = str(time.perf_counter() - t1)
        key = "opt" if name == "llvm-opt" else "asm"
        return self._llvm[key], float(self._llvm[key + "_s"])

    def pass_graphs(self) -> list[Stage]:
        return [
            s for s in self.stages if s.kind == "graph" and s.name not in ("forward", "backward")
        ]


def load_program(model: str, dims: dict[str, int | str] | None = None):
    """MODEL (``file.py:name``) as (Program with no passes run yet, build seconds, optimizer);
    ``dims``: the sizes of an ONNX MODEL's symbolic dimensions after the batch (from_onnx's).

    Raises:
        ArgumentError: the file, the name or the object's type is wrong (see modelspec.resolve).
    """
    from graphc.compiler import Program, build_graphs
    from graphc.modelspec import resolve

    spec = resolve(model, dims=dims)
    if spec.model is not None:
        p = spec.model.program
        return (
            dataclasses.replace(p, optimized={}, schedules={}, layout={}, timings={}, llvm_ir=""),
            0.0,
            spec.model.optimizer,
        )
    if spec.graph is not None:
        g = spec.graph
        return (
            Program(
                g.name,
                g,
                None,
                g,
                {},
                feature_inputs=[n.name for n in g.inputs],
                outputs=list(g.outputs),
            ),
            0.0,
            None,
        )
    t0 = time.perf_counter()
    prog = build_graphs(spec.name, spec.outputs, spec.loss, spec.optimizer)
    if prog.training is not None and spec.optimizer is None:
        from graphc.optim import Adam

        spec.optimizer = Adam()  # what build_graphs uses when none is given
    return prog, time.perf_counter() - t0, spec.optimizer


def compile_stages(
    model: str,
    *,
    opt_level: int = 2,
    entry: str | None = None,
    verify_each: bool = False,
    target_cpu: str = "native",
    disabled_passes: tuple[str, ...] = (),
    dims: dict[str, int | str] | None = None,
) -> Stages:
    """Run the compiler's pipeline (``graphc.compiler.compile_program``) and keep every stage.

    Args:
        model: ``path/to/file.py:name``.
        opt_level: 0, 1 or 2, as for ``graphc.compile``.
        entry: whose pass stages to keep: "train_step" (default with a loss), "eval" or "infer".
        verify_each: run the verifier after every pass.
        dims: for an ONNX MODEL, the sizes of its symbolic dimensions after the batch
            (``--dim seq=128``; from_onnx's ``dims``).

    Raises:
        ArgumentError: a bad MODEL or entry; VerifyError: a pass broke the IR.
    """
    from graphc.compiler import compile_program

    prog, build_s, optimizer = load_program(model, dims)
    entry = entry or ("train_step" if prog.training is not None else "infer")
    if entry not in ("train_step", "eval", "infer"):
        raise ArgumentError(f"--entry must be train_step, eval or infer, got {entry!r}")
    if entry != "infer" and prog.training is None:
        raise ArgumentError(f"{model} has no loss, so no {entry} entry; use --entry infer")
    prog, mb = compile_program(
        prog,
        opt_level=opt_level,
        target_cpu=target_cpu,
        disabled_passes=disabled_passes,
        verify_each=verify_each,
    )
    out = Stages(prog, entry, opt_level, module_builder=mb, target_cpu=target_cpu)
    out.stages.append(
        Stage(
            "forward",
            "graph",
            prog.forward,
            seconds=build_s,
            note=f"the graph the DSL recorded: {_count(prog.forward)} nodes",
        )
    )
    start = {"train_step": prog.training, "eval": prog.forward, "infer": prog.inference}[entry]
    if prog.training is not None:
        t = prog.training
        nb = sum(1 for n in t.nodes if n.section == "backward")
        nu = sum(1 for n in t.nodes if n.section == "update")
        grads = ", ".join(f"d{p} = {v}" for p, v in prog.grads.items())
        out.stages.append(
            Stage(
                "backward",
                "graph",
                t,
                note=(
                    f"training graph after autodiff: {_count(t)} nodes "
                    f"({nb} backward, {nu} update); "
                    f"loss {prog.loss} ({prog.loss_kind or 'custom'}); optimizer {optimizer!r}; "
                    f"gradients {grads}"
                ),
            )
        )
    prev = start
    seen: dict[str, int] = {}
    for rec in prog.optimized[entry].records:
        seen[rec.name] = seen.get(rec.name, 0) + 1
        name = rec.name if seen[rec.name] == 1 else f"{rec.name}.{seen[rec.name]}"
        note = (
            f"after {rec.name}: {_count(prev)} -> {_count(rec.graph)} nodes, "
            f"{_kernels(prev)} -> {_kernels(rec.graph)} kernels, {rec.seconds * 1e3:.2f} ms"
        )
        if rec.graph is prev:
            note += " (no change)"
        out.stages.append(Stage(name, "graph", rec.graph, seconds=rec.seconds, note=note))
        prev = rec.graph
    sched = prog.schedules[entry]
    out.stages.append(
        Stage(
            "scheduled",
            "schedule",
            sched.graph,
            sched,
            note=(
                f"{len(sched.kernels)} kernels; arena "
                f"{_bytes_expr(sched.arena_fixed, sched.arena_row)} "
                f"(planned) vs {_bytes_expr(sched.unplanned_fixed, sched.unplanned_row)} unplanned"
            ),
        )
    )
    for name in ("llvm", "llvm-opt", "asm"):
        out.stages.append(
            Stage(
                name,
                "llvm",
                note={
                    "llvm": "the LLVM module as built (all entries)",
                    "llvm-opt": "the LLVM module after O3",
                    "asm": f"machine code for {target_cpu}",
                }[name],
            )
        )
    return out


def _count(g: Graph) -> int:
    return len(g.nodes)


def _kernels(g: Graph) -> int:
    from graphc.ir.passes.schedule import form_kernels

    return len(form_kernels(g))


def _bytes_expr(fixed: int, row: int) -> str:
    return f"{fixed}+{row}*N B" if row else f"{fixed} B"


# ----------------------------------------------------------------------------------- provenance


_GRAD_OF = re.compile(r"grad of (\S+)(?: operand (\d+))?")


def related_nodes(g: Graph, name: str, grads: dict[str, str] | None = None) -> dict[str, Any]:
    """Provenance links of node ``name``: a forward node's gradient nodes and back.

    Returns:
        A dict with (each key present only when it applies):
        ``gradient_nodes``: backward nodes made while differentiating through ``name``;
        ``gradient_of``: for a backward node, ``{"node": forward node, "operand": k or None}``;
        ``fused_with``: the other nodes of its fusion group (what the kernel absorbed);
        with ``grads`` (param -> gradient value, from autodiff): ``gradient`` for a param and
        ``gradient_of_param`` for its gradient value.
    """
    out: dict[str, Any] = {}
    for p, v in (grads or {}).items():
        if p == name and v in g.by_name:
            out["gradient"] = v
        if v == name:
            out["gradient_of_param"] = p
    grads = [
        n.name
        for n in g.nodes
        if n.origin and (m := _GRAD_OF.fullmatch(n.origin)) and m.group(1) == name
    ]
    if grads:
        out["gradient_nodes"] = grads
    node = g.by_name.get(name)
    if node is not None and node.origin and (m := _GRAD_OF.fullmatch(node.origin)):
        out["gradient_of"] = {
            "node": m.group(1),
            "operand": int(m.group(2)) if m.group(2) else None,
        }
    if node is not None and node.group is not None:
        out["fused_with"] = [n.name for n in g.nodes if n.group == node.group and n.name != name]
    return out


def layer_of(g: Graph, node: Node) -> str | None:
    """The DSL layer a node belongs to, from the param it reads (``fc1.w`` -> ``fc1``)."""
    seen = set()
    todo = [node.name]
    while todo:  # follow operands back to the nearest param (a bias add, an activation)
        n = g.by_name.get(todo.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        for i in n.inputs:
            src = g.by_name.get(i)
            if src is not None and src.op == "param":
                return i.rsplit(".", 1)[0]
        if (n.op == "add" or n.op in ACTIVATIONS) and len(seen) < 4:
            todo += list(n.inputs)
    return None


# ----------------------------------------------------------------------------------- text


def schedule_text(stage: Stage, batch: int) -> str:
    """The scheduled graph: a comment block (kernels, buffers, arena) and then its IR text."""
    s = stage.schedule
    g = s.graph
    lines = [f"# scheduled graph {g.name}: {len(s.kernels)} kernels, run in this order"]
    for k in s.kernels:
        extra = f" -> {k.copy_to}" if k.copy_to else ""
        stores = " ".join(k.stores) or "-"
        ops = "+".join(g[n].op for n in k.nodes)
        if k.elements:
            extra += f" (flat: {k.elements} elements, every param of its update rule)"
        lines.append(f"#   {k.name:<30} {k.kind:<12} {ops:<34} stores {stores}{extra}")
    for sid, why in getattr(s, "flat_notes", {}).items():
        lines.append(f"# fuse_optimizer {sid}: {why}")
    for p, where in getattr(s, "update_notes", {}).items():
        lines.append(f"# update of {p}: {where}")
    lines.append("# buffers (region@offset as fixed+per_row*N bytes, size):")
    regions: dict[str, list[str]] = {}
    for name, b in s.buffers.items():
        regions.setdefault(b.region, []).append(name)
    for region in ("input", "output", "param", "state", "grad", "arena", "fused", "inline"):
        names = regions.get(region, [])
        if not names:
            continue
        if region in ("fused", "inline"):
            lines.append(f"#   {region:<6} (no memory): {' '.join(names)}")
            continue
        for name in names:
            ty = str(g[name].type) if name in g.by_name else ""
            lines.append(f"#   {name:<24} {ty:<14} {s.buffers[name].describe()}")
    lines.append(
        f"# arena: peak {_bytes_expr(s.arena_fixed, s.arena_row)} = {s.peak_arena_bytes(batch)} B "
        f"at N={batch}; without reuse {_bytes_expr(s.unplanned_fixed, s.unplanned_row)} = "
        f"{s.unplanned_bytes(batch)} B; gradients {s.grad_bytes} B; workspace "
        f"{s.workspace_bytes(batch)} B at N={batch}"
    )
    return "\n".join(lines) + "\n" + print_graph(g)


def stage_text(st: Stages, stage: Stage, *, batch: int = 32, with_loc: bool = True) -> str:
    if stage.kind == "llvm":
        return stage.text
    if stage.kind == "schedule":
        return schedule_text(stage, batch)
    return f"# stage {stage.name} ({st.entry}, -O{st.opt_level}): {stage.note}\n" + print_graph(
        stage.graph, with_loc=with_loc
    )


# ----------------------------------------------------------------------------------- json


def stage_json(st: Stages, stage: Stage, *, batch: int = 32) -> dict[str, Any]:
    """A stage as JSON (schema in docs/ir.md)."""
    head = {
        "stage": stage.name,
        "entry": st.entry,
        "opt_level": st.opt_level,
        "note": stage.note,
        "seconds": stage.seconds,
    }
    if stage.kind == "llvm":
        return {**head, "text": stage.text}
    g = stage.graph
    grads = st.program.grads if st.entry == "train_step" else {}
    extra = {n.name: {"related": related_nodes(g, n.name, grads)} for n in g.nodes}
    obj = {**head, "graph": graph_to_json(g, extra=extra)}
    if stage.kind == "schedule":
        s = stage.schedule
        obj["schedule"] = {
            "kernels": [
                {
                    "name": k.name,
                    "kind": k.kind,
                    "nodes": list(k.nodes),
                    "stores": list(k.stores),
                    "copy_to": k.copy_to,
                }
                for k in s.kernels
            ],
            "buffers": {
                n: {
                    "region": b.region,
                    "offset": b.offset,
                    "offset_per_row": b.offset_row,
                    "size": b.size,
                    "size_per_row": b.size_row,
                    "slot": b.slot,
                }
                for n, b in s.buffers.items()
            },
            "batch": batch,
            "peak_arena_bytes": s.peak_arena_bytes(batch),
            "unplanned_bytes": s.unplanned_bytes(batch),
            "grad_bytes": s.grad_bytes,
            "arena_fixed": s.arena_fixed,
            "arena_per_row": s.arena_row,
        }
    return obj


# ----------------------------------------------------------------------------------- dot / svg

# ----------------------------------------------------------------------------------- reports


def fusion_report(st: Stages) -> list[tuple[str, bool, str]]:
    """For every dense layer (matmul) and activation: (node, fused?, how or why not).

    Uses ``graphc.ir.passes.fuse.explain_fusion(before, after)`` (``before``: the graph entering
    the first fusion pass). Nodes that an earlier pass removed are listed too, with the pass
    that removed them.
    """
    passes = st.pass_graphs()
    fuse_names = ("fuse_dense", "fuse_conv", "fuse_elementwise")
    start = {
        "train_step": st.program.training,
        "eval": st.program.forward,
        "infer": st.program.inference,
    }[st.entry]
    wanted = [n for n in start.nodes if n.op == "matmul" or n.op in ACTIVATIONS]
    removed: dict[str, str] = {}
    before = start
    for s in passes:
        if s.name.split(".")[0] in fuse_names:
            break
        for n in wanted:
            if n.name in before.by_name and n.name not in s.graph.by_name:
                removed[n.name] = f"removed by {s.name} before fusion (its value is not needed)"
        before = s.graph
    after = passes[-1].graph if passes else before
    if not any(s.name.split(".")[0] in fuse_names for s in passes):
        why = f"no fusion pass runs at -O{st.opt_level} (fusion runs at -O2)"
        rows = [
            (n.name, False, why) for n in before.nodes if n.op == "matmul" or n.op in ACTIVATIONS
        ]
    else:
        rows = list(explain_fusion(before, after))
    have = {r[0] for r in rows}
    rows += [
        (n.name, False, removed[n.name]) for n in wanted if n.name in removed and n.name not in have
    ]
    order = {n.name: k for k, n in enumerate(start.nodes)}
    return sorted(rows, key=lambda r: order.get(r[0], len(order)))


def _describe(g: Graph, n: Node) -> str:
    """``dense fc1`` for a layer's matmul, ``relu of dense fc1``, ``grad of dense fc2`` ..."""
    if n.section == "backward" and n.origin:
        m = _GRAD_OF.fullmatch(n.origin)
        if m and m.group(1) in g.by_name and m.group(1) != n.name:
            return f"{n.op}: grad of {_describe(g, g[m.group(1)])}"
    layer = layer_of(g, n)
    if n.op == "matmul":
        return f"dense {layer}" if layer else "matmul"
    return f"{n.op} of dense {layer}" if layer else n.op


def fusion_text(st: Stages) -> str:
    rows = fusion_report(st)
    g = st.program.training if st.entry == "train_step" else st.program.inference
    lines = [f"# fusion report: {st.program.name}, entry {st.entry}, -O{st.opt_level}"]
    if not rows:
        lines.append("(no matmul or activation)")
    fused = sum(1 for _, f, _ in rows if f)
    removed = sum(1 for _, f, why in rows if not f and why.startswith("removed"))
    for name, ok, why in rows:
        n = g.by_name.get(name)
        what = _describe(g, n) if n is not None else "?"
        where = f"{n.section} {n.loc or ''}" if n is not None else ""
        lines.append(
            f"{name:<5} {what:<34} {'fused' if ok else 'NOT fused':<9}  {why}   [{where.strip()}]"
        )
    tail = f"; {removed} removed before fusion" if removed else ""
    lines.append(f"# {fused} of {len(rows) - removed} fused{tail}")
    return "\n".join(lines)


def node_costs(g: Graph, batch: int) -> list[tuple[Node, int, int]]:
    """(node, FLOPs, bytes read + written) for every computing node at batch size ``batch``.

    FLOPs come from ``Op.flops`` (2*M*N*K for matmul, one per output element by default); bytes
    count each operand once and the result once, as if the node ran alone (no fusion).
    """
    out = []
    for n in g.nodes:
        if n.op in SOURCE_OPS or n.op in INLINE_OPS:
            continue
        in_types = [g[i].type for i in n.inputs]
        flops = OPS[n.op].flops(n, in_types, batch)
        moved = sum(t.size(batch) * t.itemsize for t in [*in_types, n.type])
        out.append((n, int(flops), int(moved)))
    return out


def kernel_bytes(sched: Any, batch: int) -> int:
    """Bytes the scheduled kernels read and write in memory (fused intermediates excluded)."""
    g = sched.graph
    total = 0
    for k in sched.kernels:
        members = set(k.nodes)
        reads = {i for n in k.nodes for i in g[n].inputs if i not in members}
        for v in reads:
            b = sched.buffers.get(v)
            if b is not None and b.region in ("inline", "fused"):
                continue
            total += g[v].type.size(batch) * g[v].type.itemsize
        for v in k.stores or k.nodes[:1]:
            total += g[v].type.size(batch) * g[v].type.itemsize
    return total


def stats_text(st: Stages, batch: int) -> str:
    prog = st.program
    lines = [f"# stats: {prog.name}, entry {st.entry}, -O{st.opt_level}, batch N={batch}"]
    lines.append(f"{'stage':<24} {'nodes':>6} {'kernels':>8} {'time':>10}")
    for s in st.stages:
        if s.kind == "llvm":
            continue
        t = "" if s.name in ("backward", "scheduled") else f"{s.seconds * 1e3:>8.2f} ms"
        nk = len(s.schedule.kernels) if s.name == "scheduled" and s.schedule else _kernels(s.graph)
        lines.append(f"{s.name:<24} {len(s.graph.nodes):>6} {nk:>8} {t:>11}")
    lines.append(
        "(forward's time covers building every graph: DSL, autodiff and optimizer; "
        "kernels = what form_kernels would make of that stage; scheduled: the kernels run, "
        "with fuse_optimizer's flat updates)"
    )
    src = prog.training or prog.forward
    n_params = sum(n.type.size(1) for n in src.params)
    lines.append(
        f"parameters: {n_params} values in {len(src.params)} params "
        f"({sum(n.type.size(1) * n.type.itemsize for n in src.params)} B)"
    )
    sched = prog.schedules[st.entry]
    final = sched.graph
    costs = node_costs(final, batch)
    lines.append(f"per node of the final graph (N={batch}):")
    lines.append(f"  {'node':<8} {'op':<28} {'type':<14} {'FLOPs':>12} {'bytes':>12}")
    for n, fl, by in costs:
        lines.append(f"  {n.name:<8} {n.op:<28} {n.type!s:<14} {fl:>12} {by:>12}")
    tf, tb = sum(c[1] for c in costs), sum(c[2] for c in costs)
    lines.append(f"total FLOPs: {tf} per step at N={batch}")
    lines.append(
        f"total bytes moved: {tb} B node by node; {kernel_bytes(sched, batch)} B by the "
        f"{len(sched.kernels)} kernels (fused values stay in registers)"
    )
    lines.append(
        f"arena: peak {sched.peak_arena_bytes(batch)} B planned vs "
        f"{sched.unplanned_bytes(batch)} B unplanned (every value its own buffer) at "
        f"N={batch}; gradients {sched.grad_bytes} B"
    )
    lines.append("compile time per pass (all entries):")
    for entry, res in prog.optimized.items():
        for r in res.records:
            lines.append(
                f"  {entry:<11} {r.name:<22} {r.seconds * 1e3:8.2f} ms  "
                f"{r.nodes_before} -> {r.nodes_after} nodes"
            )
    for k, v in prog.timings.items():
        lines.append(f"  {k:<34} {v * 1e3:8.2f} ms")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- command


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dump",
        help="print the compiler's stages for MODEL (text, json, dot, svg)",
        description=(__doc__ or "").replace(
            "``", "`"
        ),  # the docstring's reST, as a terminal shows it
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        help="path/to/file.py:name (a Model, Graph, Tensor, dict or a function returning one), "
        "model.onnx, or a model file model.gcm (Model.save_model)",
    )
    p.add_argument(
        "--stage",
        default=None,
        help="forward | backward | a pass name (" + ", ".join(PASS_NAMES) + ") | scheduled | "
        "llvm | llvm-opt | asm | all (default: all graph stages)",
    )
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (text)")
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    p.add_argument(
        "--dump-dir",
        metavar="DIR",
        help="write every stage to DIR as NN-STAGE.EXT, in pipeline order",
    )
    p.add_argument(
        "-O",
        dest="opt_level",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="optimization level (2)",
    )
    p.add_argument(
        "--entry",
        choices=("train_step", "eval", "infer"),
        help="entry point whose passes to show (train_step when there is a loss)",
    )
    p.add_argument(
        "--explain-fusion",
        action="store_true",
        help="for every dense layer and activation: fused or not, and why not",
    )
    p.add_argument(
        "--stats",
        action="store_true",
        help="node/kernel counts, FLOPs, bytes, parameters, arena, compile times",
    )
    p.add_argument(
        "--batch", type=int_in(1, 2**31), default=32, help="batch size N for --stats (32)"
    )
    p.add_argument("--verify-each", action="store_true", help="verify the IR after every pass")
    p.add_argument("--no-loc", action="store_true", help="leave out @file:line")
    p.add_argument(
        "--collapse-fused",
        action="store_true",
        help="dot/svg: draw each fusion group as one box listing its nodes",
    )
    p.add_argument(
        "--target-cpu", default="native", metavar="CPU", help="CPU for llvm-opt and asm (native)"
    )
    p.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=SIZE",
        help="for an ONNX MODEL: the size of a symbolic dimension after the batch, as for "
        "graphc compile (e.g. --dim seq=128); may be repeated",
    )
    p.set_defaults(run=run)


def render(
    st: Stages, stage: Stage, fmt: str, batch: int, with_loc: bool, collapse: bool = False
) -> str:
    if fmt == "text":
        return stage_text(st, stage, batch=batch, with_loc=with_loc)
    if fmt == "json":
        return json.dumps(stage_json(st, stage, batch=batch), indent=1)
    if stage.kind == "llvm":
        raise ArgumentError(f"stage {stage.name} has no picture; use --format text")
    title = f"{st.program.name}: {stage.name} ({st.entry}, -O{st.opt_level})"
    dot = graph_dot(stage.graph, title=title, with_loc=with_loc, collapse=collapse)
    return dot if fmt == "dot" else render_svg(dot)


def run(args: argparse.Namespace) -> int:
    from graphc.export import parse_dims

    if args.batch <= 0:
        raise ArgumentError(f"--batch must be positive, got {args.batch}")
    st = compile_stages(
        args.model,
        opt_level=args.opt_level,
        entry=args.entry,
        verify_each=args.verify_each,
        target_cpu=args.target_cpu,
        dims=parse_dims(args.dim, args.model),
    )
    with_loc = not args.no_loc
    if args.dump_dir:
        written = []
        for k, s in enumerate(st.stages, 1):
            fmt = "text" if s.kind == "llvm" and args.format != "json" else args.format
            ext = TEXT_EXT.get(s.name, EXTENSIONS[fmt]) if fmt == "text" else EXTENSIONS[fmt]
            path = os.path.join(args.dump_dir, f"{k:02d}-{s.name}.{ext}")
            text = render(st, st.get(s.name), fmt, args.batch, with_loc, args.collapse_fused)
            written.append(_write(path, text))
        if args.explain_fusion:
            written.append(_write(os.path.join(args.dump_dir, "fusion.txt"), fusion_text(st)))
        if args.stats:
            written.append(
                _write(os.path.join(args.dump_dir, "stats.txt"), stats_text(st, args.batch))
            )
        print("\n".join(written))
        return 0
    parts = []
    stage = args.stage or ("all" if not (args.explain_fusion or args.stats) else None)
    if stage == "all":
        shown = [s for s in st.stages if s.kind != "llvm"]
        if args.format in ("dot", "svg"):
            raise ArgumentError("--format dot/svg shows one stage: give --stage, or --dump-dir")
        if args.format == "json":
            parts.append(
                json.dumps(
                    {
                        "model": st.program.name,
                        "stages": [stage_json(st, s, batch=args.batch) for s in shown],
                    },
                    indent=1,
                )
            )
        else:
            parts += [render(st, s, "text", args.batch, with_loc) for s in shown]
    elif stage is not None:
        parts.append(
            render(st, st.get(stage), args.format, args.batch, with_loc, args.collapse_fused)
        )
    if args.explain_fusion:
        parts.append(fusion_text(st))
    if args.stats:
        parts.append(stats_text(st, args.batch))
    text = "\n\n".join(parts) + "\n"
    if args.output:
        print(f"wrote {_write(args.output, text)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _write(path: str, text: str) -> str:
    """Write ``text`` (with a final newline) to ``path``, making its folder; returns ``path``.

    A regular file appears whole or not at all (a temporary file beside it, renamed over it);
    an existing special file (``/dev/stdout``, a FIFO) is written directly.

    Raises:
        ArgumentError: the folder or file cannot be written (naming the path and the errno).
    """
    from graphc.export import os_error_text, write_all_or_nothing

    data = (text if text.endswith("\n") else text + "\n").encode()
    try:
        if os.path.exists(path) and not os.path.isfile(path):  # /dev/stdout, a FIFO: no rename
            try:
                with open(path, "wb") as f:
                    f.write(data)
            except OSError as e:
                raise ArgumentError(f"cannot write {path!r} ({os_error_text(e)})") from None
            return path
        write_all_or_nothing([(path, data, 0o644)])
    except ArgumentError as e:
        raise ArgumentError(str(e).replace("export: ", "", 1)) from None
    return path
