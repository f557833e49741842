"""The benchmark's tables, from the results ``benchmarks/run.py -o`` wrote.

    python benchmarks/render.py benchmarks/RESULTS.json            # writes RESULTS.md beside it
    python benchmarks/render.py benchmarks/RESULTS.json --readme   # and README.md's tables

``--readme`` replaces what lies between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``
in README.md (``headline``) and benchmarks/README.md (``headline`` and ``full``); the text
around the markers is left as it is.

Definitions (the same as run.py's): a cell is the median over rounds of the time of one call
in us; its spread is the interquartile range over the median (the range below 4 rounds). A
cell is noisy (``~``) when its spread exceeds ``NOISY_SPREAD`` (10 %), or other processes used
more than ``NOISY_FOREIGN`` cores (0.2) during its median block (the machine's busy CPU time
from /proc/stat, steal included, less the contestant's own), or the median 1-minute load
average during its blocks exceeds the thread count by more than ``NOISY_LOAD`` (1). A ratio is
noisy when either of its cells is. The run-queue wait (time the contestant's threads were
runnable but off-core, which also counts its own threads queueing behind each other) is
reported, not used.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOISY_SPREAD = 0.10
NOISY_FOREIGN = 0.2
NOISY_LOAD = 1.0
BARE = " bare entry"
GRAPHC = "graphc"
SHORT = {
    "numpy": "numpy",
    "torch eager (foreach)": "torch foreach",
    "torch eager (fused)": "torch fused",
    "torch.compile": "torch.compile",
    "JAX jit": "JAX",
}

# The table: (row title, cases, target, what the target is measured against)
HEADLINE = [
    (
        "784-256-128-10 b32 / b128 / b512, Adam",
        ["784 relu CE adam b32", "784 relu CE adam b128", "784 relu CE adam b512"],
        0.75,
        None,
    ),
    (
        "same, SGD",
        ["784 relu CE sgd b32", "784 relu CE sgd b128", "784 relu CE sgd b512"],
        0.75,
        None,
    ),
    ("2-8-1 b4 SGD / Adam", ["2-8-1 tanh BCE sgd b4", "2-8-1 tanh BCE adam b4"], 0.3, "JAX jit"),
    (
        "30-16-1 b64 SGD / Adam",
        ["30-16-1 sigmoid BCE sgd b64", "30-16-1 sigmoid BCE adam b64"],
        0.3,
        "JAX jit",
    ),
    ("inference b1", ["infer 784 b1"], 0.6, None),
    ("inference b256", ["infer 784 b256"], 0.8, None),
    ("epoch of {epoch} samples, b128, Adam (`fit`)", ["epoch"], 0.6, None),
    ("GEMM through `predict`, n = 64", ["gemm 64"], None, None),
    (
        "GEMM, n = 128 / 256 / 512 / 1024 / 2048",
        ["gemm 128", "gemm 256", "gemm 512", "gemm 1024", "gemm 2048"],
        1.0,
        None,
    ),
]


# ------------------------------------------------------------------------------------ cells


class Cell:
    """One case x column at one thread count: the per-round samples summarized."""

    def __init__(self, samples: list[list[float]], threads: int) -> None:
        us = [s[0] for s in samples]
        self.n = len(us)
        self.med = statistics.median(us)
        if len(us) >= 4:
            q = statistics.quantiles(us, n=4)
            self.spread = (q[2] - q[0]) / self.med
        else:
            self.spread = (max(us) - min(us)) / self.med
        self.wait = statistics.median(s[1] for s in samples)
        self.load = statistics.median(s[2] for s in samples)
        self.loads = [s[2] for s in samples]
        self.foreign = statistics.median(s[4] if len(s) > 4 else 0.0 for s in samples)
        why = []
        if self.spread > NOISY_SPREAD:
            why.append(f"spread {100 * self.spread:.0f}%")
        if self.foreign > NOISY_FOREIGN:
            why.append(f"other processes used {self.foreign:.2f} cores")
        if self.load > threads + NOISY_LOAD:
            why.append(f"load {self.load:.2f}")
        self.why = why
        self.noisy = bool(why)

    def text(self) -> str:
        v = f"{self.med:,.1f}" if self.med < 100 else f"{self.med:,.0f}"
        return f"{'~' if self.noisy else ''}{v} ±{100 * self.spread:.0f}%"


def cells(run: dict, threads: int) -> dict[str, dict[str, Cell]]:
    """case -> column -> Cell, in the order the cases were first seen."""
    out: dict[str, dict[str, Cell]] = {}
    for key, smp in run.get("samples", {}).items():
        case, col = key.split("|", 1)
        if smp:
            out.setdefault(case, {})[col] = Cell(smp, threads)
    order = {c: i for i, c in enumerate(_case_order())}
    return dict(sorted(out.items(), key=lambda kv: order.get(_norm(kv[0]), 99)))


def _case_order() -> list[str]:
    return [c for _, cases, _, _ in HEADLINE for c in cases]


def _norm(case: str) -> str:
    return "epoch" if case.startswith("epoch") else case


def peers_of(data: dict) -> list[str]:
    return [c for c in data.get("lineup", []) if not c.startswith(GRAPHC)]


def before_of(data: dict) -> str | None:
    return next((c for c in data.get("lineup", []) if c.startswith(GRAPHC + "@")), None)


def fastest(row: dict[str, Cell], peers: list[str]) -> tuple[str, Cell] | None:
    got = [(p, row[p]) for p in peers if p in row]
    return min(got, key=lambda pc: pc[1].med) if got else None


def ratio(a: Cell | None, b: Cell | None) -> tuple[float, bool] | None:
    if a is None or b is None:
        return None
    return a.med / b.med, a.noisy or b.noisy


def rtext(r: tuple[float, bool] | None) -> str:
    return "n/a" if r is None else f"{'~' if r[1] else ''}{r[0]:.2f}"


# ------------------------------------------------------------------------------------ tables


def headline(data: dict) -> str:
    """The issue's table: graphc / fastest peer at each thread count, the target, and graphc
    over graphc@REV (the --before contestant) when it ran."""
    peers = peers_of(data)
    before = before_of(data)
    ths = list(data["runs"])
    byth = {th: cells(data["runs"][th], int(th)) for th in ths}
    epoch = f"{data.get('settings', {}).get('epoch_samples', 60000):,}"
    head = ["case"]
    head += [f"{th} thread{'s' if th != '1' else ''}: graphc / fastest peer" for th in ths]
    head += ["target", "met"]
    if before:
        head += [f"{th} thr.: graphc / {before}" for th in ths]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for title, cases, tgt, against in HEADLINE:
        row = [title.format(epoch=epoch)]
        met = []
        for th in ths:
            cs = byth[th]
            items, names = [], []
            for case in cases:
                rowc = _find(cs, case)
                f = fastest(rowc, peers)
                r = ratio(rowc.get(GRAPHC), f[1] if f else None)
                items.append(rtext(r))
                names.append(SHORT.get(f[0], f[0]) if f else "")
                if tgt is not None:
                    ref = rowc.get(against) if against else (f[1] if f else None)
                    rr = ratio(rowc.get(GRAPHC), ref)
                    if rr is not None:
                        met.append(rr[0] <= tgt)
            if not any(names):
                row.append(" / ".join(items))
            elif len(set(names)) == 1:
                row.append(" / ".join(items) + (f" ({names[0]})" if names[0] else ""))
            else:
                row.append(" / ".join(f"{i} ({n})" if n else i for i, n in zip(items, names)))
        if tgt is None:
            row += ["", ""]
        else:
            row.append(f"≤ {tgt}" + (f" of {SHORT.get(against, against)}" if against else ""))
            row.append(f"{sum(met)} of {len(met)}" if met else "")
        if before:
            for th in ths:
                rs = [
                    ratio(_find(byth[th], c).get(GRAPHC), _find(byth[th], c).get(before))
                    for c in cases
                ]
                row.append(" / ".join(rtext(r) for r in rs))
        lines.append("| " + " | ".join(row) + " |")
    # compile time
    row = ["cold compile of the Adam step, fresh process: graphc / JAX's first call"]
    met = []
    for th in ths:
        comp = data["runs"][th].get("compile", {})
        row.append(_compile_ratio(comp, "graphc"))
        a, j = _med(comp, "graphc cold"), _med(comp, "JAX first call")
        if a and j:
            met.append(a / j <= 0.5)
    row += ["≤ 0.5", f"{sum(met)} of {len(met)}" if met else ""]
    if before:
        for th in ths:
            comp = data["runs"][th].get("compile", {})
            a, b = _med(comp, "graphc cold"), _med(comp, f"{before} cold")
            row.append(f"{a / b:.2f}" if a and b else "n/a")
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _find(cs: dict[str, dict[str, Cell]], case: str) -> dict[str, Cell]:
    if case == "epoch":
        return next((v for k, v in cs.items() if k.startswith("epoch")), {})
    return cs.get(case, {})


def _med(comp: dict, label: str) -> float | None:
    v = comp.get(label)
    return statistics.median(x["seconds"] for x in v) if v else None


def _compile_ratio(comp: dict, label: str) -> str:
    a, j = _med(comp, f"{label} cold"), _med(comp, "JAX first call")
    if a is None or j is None:
        return "n/a"
    return f"{a / j:.2f} ({a:.2f} s / {j:.2f} s)"


def full_table(data: dict, th: str) -> str:
    """Every case x contestant at one thread count, in us per call."""
    run = data["runs"][th]
    cs = cells(run, int(th))
    peers = peers_of(data)
    before = before_of(data)
    cols = [GRAPHC, GRAPHC + BARE]
    if before:
        cols += [before, before + BARE]
    cols += peers
    head = ["case", *cols, "graphc / fastest peer", "target"]
    if before:
        head += [f"graphc / {before}", "bare / bare"]
    head.append("load")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    targets = {c: (t, a) for _, cases, t, a in HEADLINE for c in cases}
    for case, row in cs.items():
        f = fastest(row, peers)
        r = ratio(row.get(GRAPHC), f[1] if f else None)
        tgt, against = targets.get(_norm(case), (None, None))
        tt = ""
        if tgt is not None:
            rr = ratio(row.get(GRAPHC), row.get(against) if against else (f[1] if f else None))
            verdict = "" if rr is None else (" yes" if rr[0] <= tgt else " no")
            tt = f"≤ {tgt}{' of JAX' if against else ''}:{verdict}"
        line = [case] + [row[c].text() if c in row else "" for c in cols]
        line += [rtext(r) + (f" ({SHORT.get(f[0], f[0])})" if f and r else ""), tt]
        if before:
            line += [
                rtext(ratio(row.get(GRAPHC), row.get(before))),
                rtext(ratio(row.get(GRAPHC + BARE), row.get(before + BARE))),
            ]
        loads = [v for c in row.values() for v in c.loads]
        line.append(f"{min(loads):.2f} to {max(loads):.2f}")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def conditions(data: dict) -> str:
    """Command, date, machine and load, in one paragraph."""
    m = data["machine"]
    st = data.get("settings", {})
    loads = [s[2] for run in data["runs"].values() for v in run["samples"].values() for s in v]
    fgn = [
        s[4]
        for run in data["runs"].values()
        for v in run["samples"].values()
        for s in v
        if len(s) > 4
    ]
    ld = f"{min(loads):.2f} to {max(loads):.2f}" if loads else "n/a"
    wt = f"{statistics.median(fgn):.2f} (largest {max(fgn):.2f})" if fgn else "n/a"
    return (
        f"Command: `{data['command']}` ({data.get('wall_s', 0) / 60:.0f} min), "
        f"{data['date']}, graphc {m.get('graphc commit', '?')}. Machine: {m.get('cpu')}, "
        f"{m.get('cores')} cores ({m.get('vector flags')}); numpy {m.get('numpy')}, "
        f"torch {m.get('torch')}, jax {m.get('jax')}, llvmlite {m.get('llvmlite')}. "
        f"Load average (1 min) {data['load_start'][0]:.2f} at the start, "
        f"{data.get('load_end', [float('nan')])[0]:.2f} at the end, {ld} during the timed "
        f"blocks; cores used by other processes during a block: median {wt}. "
        f"{_rounds(data)} of "
        f"blocks of at least {st.get('block')} s, contestants in a shuffled order every round "
        f"(seed {st.get('seed')}). `~`: noisy (spread above {100 * NOISY_SPREAD:.0f}% of the "
        f"median, other processes using more than {NOISY_FOREIGN:g} cores during the median "
        f"block, or load above the thread count + {NOISY_LOAD:g})."
    )


def _rounds(data: dict) -> str:
    """'9 rounds', or '9 rounds at 1 thread and 5 (of 9 asked) at 2' when a phase ran fewer."""
    asked = data.get("settings", {}).get("rounds")
    ran = {th: len(run.get("orders", [])) for th, run in data["runs"].items()}
    if all(n == asked for n in ran.values()):
        return f"{asked} rounds"
    return "rounds: " + ", ".join(f"{n} of {asked} asked at {th} thr." for th, n in ran.items())


def report(data: dict) -> str:
    """RESULTS.md: conditions, the headline, every table, losses, memory, compile, notes."""
    out = ["# graphc benchmark", "", conditions(data), "", "## Headline", "", headline(data)]
    before = before_of(data)
    for th, run in data["runs"].items():
        out += ["", f"## {th} thread{'s' if th != '1' else ''} (µs per call)", ""]
        out.append(full_table(data, th))
        ws = run.get("workers", {})
        # loss agreement with numpy
        out += [
            "",
            "Loss agreement with numpy (first step's loss within 1e-4 relative, the next two "
            "within 1e-2; the largest differences seen):",
            "",
        ]
        ref = ws.get("numpy", {}).get("losses", {})
        for c, r in ws.items():
            out.append(f"- {c}: {_agreement(r.get('losses', {}), ref)}")
        out += [
            "",
            "| contestant | build s | peak RSS MB | epoch samples per call |",
            "|---|---|---|---|",
        ]
        for c, r in ws.items():
            ep = r.get("epoch_samples") or []
            out.append(
                f"| {c} | {r.get('build_s', 0):.1f} | {r.get('peak_rss_mb', 0):.0f} | "
                f"{', '.join(f'{n:,}' for n in sorted(set(ep))) if ep else ''} |"
            )
        comp = run.get("compile")
        if comp:
            out += [
                "",
                "Compile, 784-256-128-10 Adam step to its first finished step, fresh pinned "
                "process each (median; the import is timed apart):",
                "",
                "| | seconds | runs | import s | load |",
                "|---|---|---|---|---|",
            ]
            for k, v in comp.items():
                out.append(
                    f"| {k} | {statistics.median(x['seconds'] for x in v):.2f} | {len(v)} | "
                    f"{statistics.median(x['import_s'] for x in v):.2f} | "
                    f"{statistics.median(x['load'] for x in v):.2f} |"
                )
        noisy = [
            f"{case} / {col}: {', '.join(c.why)}"
            for case, row in cells(run, int(th)).items()
            for col, c in row.items()
            if c.noisy
        ]
        if noisy:
            out += ["", "Noisy cells:", ""] + [f"- {n}" for n in noisy]
        out += ["", "Orders of the rounds:", ""]
        out += [f"{i + 1}. {', '.join(o)}" for i, o in enumerate(run.get("orders", []))]
        if run.get("notes"):
            out += ["", "Notes:", ""] + [f"- {k}: {v}" for k, v in run["notes"].items()]
        for r in ws.values():
            for k, v in r.get("notes", {}).items():
                out.append(f"- {k}: {v}")
    if before:
        out += ["", f"`{before}`: {data['machine'].get('before', '')}."]
    return "\n".join(out) + "\n"


def _agreement(losses: dict, ref: dict) -> str:
    if not losses:
        return "no losses (no training or inference case ran)"
    if not ref:
        return "not checked (no losses from numpy)"
    bad, worst = [], [0.0, 0.0]
    for cid, ls in losses.items():
        if ref.get(cid):
            errs = [abs(a - b) / max(abs(b), 1e-6) for a, b in zip(ls, ref[cid])]
            worst[0] = max(worst[0], errs[0])
            worst[1] = max([worst[1], *errs[1:]])
            if errs[0] > 1e-4 or max(errs[1:], default=0) > 1e-2:
                bad.append(f"{cid} ({max(errs):.1e})")
    if bad:
        return "DIFFERS: " + ", ".join(bad)
    return f"agrees in every case (first step {worst[0]:.1e}, later {worst[1]:.1e})"


# ------------------------------------------------------------------------------------ README


def replace_block(path: Path, name: str, text: str) -> bool:
    """Put ``text`` between the ``results:NAME`` markers of ``path``; False if none."""
    src = path.read_text()
    pat = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
    if not pat.search(src):
        return False
    path.write_text(pat.sub(lambda m: m.group(1) + text.rstrip() + "\n" + m.group(2), src))
    return True


def readme_blocks(data: dict) -> dict[str, str]:
    head = conditions(data) + "\n\n" + headline(data) + "\n"
    full = []
    for th in data["runs"]:
        full += [
            f"{th} thread{'s' if th != '1' else ''}, µs per call:",
            "",
            full_table(data, th),
            "",
        ]
    return {"headline": head, "full": "\n".join(full)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default=str(HERE / "RESULTS.json"))
    ap.add_argument("--readme", action="store_true", help="also README.md's marked tables")
    args = ap.parse_args(argv)
    src = Path(args.results)
    data = json.loads(src.read_text())
    src.with_suffix(".md").write_text(report(data))
    print(f"wrote {src.with_suffix('.md')}")
    if args.readme:
        blocks = readme_blocks(data)
        for path, names in (
            (HERE.parent / "README.md", ["headline"]),
            (HERE / "README.md", ["headline", "full"]),
        ):
            for name in names:
                ok = replace_block(path, name, blocks[name])
                print(f"{path.name} {name}: {'updated' if ok else 'NO MARKERS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
