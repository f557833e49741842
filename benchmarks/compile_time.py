"""Cold compile time of the 784-256-128-10 Adam training step, and where it goes.

    python benchmarks/compile_time.py [--threads 1,2] [--rounds 3] [--jax]

Per thread count (each process pinned with taskset to that many cores, GRAPHC_THREADS and the
compile threads set to it, an empty compile cache per round):

- "cold": benchmarks/run.py's definition (``run.py --probe graphc``): in a fresh process,
  after ``import graphc`` (timed apart, printed as "import"), the DSL, ``gc.compile`` and the
  first ``train_step`` at batch 128: wall seconds; and the CPU seconds of the whole process
  (all its threads, the imports included);
- "cached": the same with the cache the cold run filled;
- with ``--jax``: JAX's first call (trace, compile, one step and one inference; its import
  timed apart) by the same probe, and graphc cold / JAX;
- the phases of a cold compile, from a third fresh process that runs ``gc.compile``'s stages
  one by one (graphc.compiler): wall and CPU seconds of the Python phases (imports, graphs and
  autodiff, passes and schedules, building the LLVM IR with llvmlite, printing it), then, per
  LLVM module (the main module, the GEMM modules), its IR size, functions, optimization and
  machine-code seconds (the CPU time of the compile thread that ran it).

Medians over the rounds; the load average is printed with the figures (2 cores shared with
other work make wall times noisy; the CPU seconds are steadier).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import pin, set_env_threads  # the same definitions as run.py

RUN = str(HERE / "run.py")

_PHASES = r"""
import json, sys, time
wall, cpu = time.perf_counter, time.process_time
out = {}
marks = [(wall(), cpu())]
def mark(name):
    w, c = wall(), cpu()
    out[name] = (w - marks[-1][0], c - marks[-1][1])
    marks.append((w, c))
import numpy as np
mark("import numpy")
import graphc as gc
mark("import graphc")
from graphc.codegen.target import JitModule, compile_parts, target_machine
from graphc.compiler import build_graphs, build_module, gc_paused, schedule_program
from graphc.runtime.model import Model
from graphc.compiler import compile_split
import functools
x = gc.input("x", ("N", 784)); h = x
for i, width in enumerate((256, 128, 10)):
    h = gc.dense(h, width, None if i == 2 else "relu", name=f"fc{i + 1}")
loss = gc.softmax_cross_entropy(h, gc.input("y", ("N",), dtype="i32"))
opt = gc.Adam(lr=1e-3)
prog = build_graphs("bench", [h], loss, opt)
mark("graphs (DSL, autodiff)")
schedule_program(prog, split=False)
mark("passes + schedules")
stats = []
with gc_paused():
    mb = build_module(prog, "native", split=True)
    mark("LLVM IR (llvmlite objects)")
    texts, compiled = compile_parts(mb.parts(), "native", prog.name, {}, stats)
    mark("LLVM: print, optimize, machine code")
del mb
jm = JitModule([o for _, o in compiled], target_machine("native"), [m for m, _ in compiled])
mark("load (MCJIT)")
m = Model(prog, jm, optimizer=opt,
          compile_split=functools.partial(compile_split, prog, "native"))
xb = np.random.default_rng(0).standard_normal((128, 784)).astype(np.float32)
yb = np.random.default_rng(1).integers(0, 10, 128).astype(np.int32)
m.train_step(xb, yb)
mark("model + first train_step")
print(json.dumps({"phases": out, "parts": stats,
                  "total": (marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1])}))
"""


def _run(args: list[str], env: dict, threads: int) -> tuple[dict, float]:
    """Run ``python ARGS`` in a fresh pinned process; its last stdout line (JSON) and its CPU
    seconds (user + system of the child and its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        pin(threads) + [sys.executable, *args],
        env=env,
        cwd=env["GRAPHC_CACHE_DIR"],
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"probe failed:\n{r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(r.stdout.strip().splitlines()[-1]), cpu


def measure(threads: int, rounds: int, jax: bool) -> dict:
    res: dict = {k: [] for k in ("cold", "cold_cpu", "import", "cached", "jax", "jax_cpu")}
    res["phases"] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            env = {**os.environ, "GRAPHC_CACHE_DIR": d, "GRAPHC_COMPILE_THREADS": str(threads)}
            set_env_threads(env, threads)
            out, cpu = _run([RUN, "--probe", "graphc"], env, threads)
            res["cold"].append(out["seconds"])
            res["import"].append(out["import_s"])
            res["cold_cpu"].append(cpu)
            out, _ = _run([RUN, "--probe", "graphc"], env, threads)
            res["cached"].append(out["seconds"])
            if jax:
                out, cpu = _run([RUN, "--probe", "jax"], env, threads)
                res["jax"].append(out["seconds"])
                res["jax_cpu"].append(cpu)
        with tempfile.TemporaryDirectory() as d:
            env = {**os.environ, "GRAPHC_CACHE_DIR": d, "GRAPHC_COMPILE_THREADS": str(threads)}
            set_env_threads(env, threads)
            res["phases"].append(_run(["-c", _PHASES], env, threads)[0])
    return res


def report(threads: int, res: dict) -> None:
    med = statistics.median
    load = os.getloadavg()[0]
    print(f"\n== {threads} thread(s), {len(res['cold'])} round(s), load average {load:.2f}")
    line = (
        f"graphc cold (fresh process, empty cache, gc.compile to the end of the first "
        f"train_step): {med(res['cold']):.3f} s wall (import graphc {med(res['import']):.3f} s "
        f"apart); the process's CPU {med(res['cold_cpu']):.3f} s (imports included); cached "
        f"{med(res['cached']):.3f} s"
    )
    print(line)
    if res["jax"]:
        print(
            f"JAX first call: {med(res['jax']):.3f} s wall (import apart), the process's CPU "
            f"{med(res['jax_cpu']):.3f} s; graphc cold / JAX = "
            f"{med(res['cold']) / med(res['jax']):.2f} (wall)"
        )
    phases = res["phases"]
    print(f"phases of a cold compile (median of {len(phases)}): wall s, CPU s (all threads)")
    for name in phases[0]["phases"]:
        w = med(p["phases"][name][0] for p in phases)
        c = med(p["phases"][name][1] for p in phases)
        print(f"  {name:<38} {w:7.3f} {c:7.3f}")
    w = med(p["total"][0] for p in phases)
    c = med(p["total"][1] for p in phases)
    print(f"  {'total':<38} {w:7.3f} {c:7.3f}")
    print("LLVM modules (CPU s of the thread that ran each phase; print runs in the caller):")
    for i, part in enumerate(phases[0]["parts"]):

        def m(key: str, i: int = i) -> float:
            return med(p["parts"][i][key] for p in phases)

        print(
            f"  {i} {part['kind']:<5} IR {part['ir_bytes'] / 1e3:6.0f} KB, "
            f"{part['functions']:3d} functions -> object {part['object_bytes'] / 1e3:5.0f} KB: "
            f"print {m('print_cpu_s'):.3f}  optimize {m('opt_cpu_s'):.3f}  "
            f"machine code {m('codegen_cpu_s'):.3f}"
        )
    sums = {
        k: sum(med(p["parts"][i][k] for p in phases) for i in range(len(phases[0]["parts"])))
        for k in ("print_cpu_s", "opt_cpu_s", "codegen_cpu_s")
    }
    print(
        f"  all   print {sums['print_cpu_s']:.3f}  optimize {sums['opt_cpu_s']:.3f}  "
        f"machine code {sums['codegen_cpu_s']:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jax", action="store_true", help="also JAX's first call (needs jax)")
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()
    allres = {}
    for th in [int(t) for t in args.threads.split(",")]:
        allres[th] = measure(th, args.rounds, args.jax)
        report(th, allres[th])
    if args.json:
        Path(args.json).write_text(json.dumps(allres, indent=1))


if __name__ == "__main__":
    main()
