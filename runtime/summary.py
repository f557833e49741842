"""``Model.summary()``: the compiled network as a table of its kernels (fused layers).

One row per kernel of the inference entry (``infer``): its fused ops, output type, the
parameter values it reads and its FLOPs per row (``Op.flops`` at batch 1: 2*K*M for a matmul,
one per output element for pointwise ops); then the totals, the optimizer state and the arena
of every entry at the given batch size.
"""

from __future__ import annotations

from typing import Any

from graphc.ir.ops import INLINE_OPS, OPS


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def kernel_rows(program: Any, entry: str = "infer") -> list[dict[str, Any]]:
    """One dict per kernel of ``entry``: name, ops, output, params (values), flops_per_row."""
    sched = program.schedules[entry]
    g = sched.graph
    rows = []
    for k in sched.kernels:
        members = [g[n] for n in k.nodes if g[n].op not in INLINE_OPS]
        if not members:
            continue
        reads = {i for n in members for i in n.inputs}
        params = sum(g[i].type.size(1) for i in reads if g[i].op == "param")
        flops = sum(OPS[n.op].flops(n, [g[i].type for i in n.inputs], 1) for n in members)
        out = g[(k.stores or k.nodes)[-1]].type
        ops = [n.op for n in members]
        rows.append(
            {
                "kernel": k.name,
                "ops": " + ".join(ops) if len(ops) <= 4 else f"{ops[0]} + ... ({len(ops)} ops)",
                "output": str(out),
                "params": int(params),
                "flops_per_row": int(flops),
            }
        )
    return rows


def summary_text(model: Any, batch: int = 32) -> str:
    """The table printed by ``Model.summary`` (see the module docstring)."""
    prog = model.program
    rows = kernel_rows(prog)
    head = ("kernel", "ops", "output", "params", "FLOPs/row")
    table = [head] + [
        (r["kernel"], r["ops"], r["output"], f"{r['params']:,}", f"{r['flops_per_row']:,}")
        for r in rows
    ]
    widths = [max(len(str(row[c])) for row in table) for c in range(len(head))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def line(row: tuple) -> str:
        cells = [
            str(v).ljust(w) if c < 3 else str(v).rjust(w)
            for c, (v, w) in enumerate(zip(row, widths))
        ]
        return "  ".join(cells).rstrip()

    n_params = sum(a.size for a in model.params.values())
    n_state = sum(a.size for a in model.state.values())
    opt = type(model.optimizer).__name__ if model.optimizer is not None else "none"
    out = [f'Model "{prog.name}" (-O{prog.opt_level}, inference kernels)', rule, line(head), rule]
    out += [line(r) for r in table[1:]]
    out += [rule]
    out.append(
        f"Parameters: {n_params:,} in {len(model.params)} tensors "
        f"({_fmt_bytes(prog.param_bytes)}, each tensor 64-byte aligned)"
    )
    out.append(
        f"Optimizer: {opt}, state {n_state:,} values ({_fmt_bytes(prog.state_bytes)} aligned)"
    )
    out.append(f"FLOPs per row (inference): {sum(r['flops_per_row'] for r in rows):,}")
    for entry, s in prog.schedules.items():
        arena = s.arena_fixed + s.arena_row * batch
        out.append(
            f"Arena of {entry}: {_fmt_bytes(arena)} at batch {batch} "
            f"({_fmt_bytes(s.arena_fixed)} + {_fmt_bytes(s.arena_row)} per row)"
        )
    return "\n".join(out)
