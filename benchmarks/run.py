"""graphc against numpy, PyTorch and JAX on the same MLPs, through the API each one's users call.

    python benchmarks/run.py [--quick] [--threads 1,2] [--rounds 5] [-o benchmarks/RESULTS.md]

Every contestant runs in a process of its own, one per thread count: graphc (``train_step``,
``predict``, ``fit``), a float32 numpy MLP, PyTorch eager with its foreach Adam/SGD and with its
fused ones, ``torch.compile`` of the whole step (forward, backward, optimizer), and JAX ``jit``
with donated buffers. The thread count is fixed before any library loads (``*_NUM_THREADS``,
threadpoolctl, ``torch.set_num_threads``, XLA's ``--xla_cpu_multi_thread_eigen=false`` at one
thread) and the process is pinned to that many cores with ``taskset`` (XLA sizes its pool by
the cores it may run on, so pinning is the setting that works for it).

Inside a worker every case gets one timed block per round, the rounds interleaved over the
cases, so a burst of load on the machine spreads over all of them; a block is a loop of calls
lasting at least ``--block`` seconds (at least one call), timed in wall-clock time and ended by
the contestant's ``sync`` (JAX dispatches asynchronously). A cell is the median over rounds;
its spread is the interquartile range as a percentage of the median, and a cell whose IQR
exceeds 10% of its median is marked noisy (``~``). The load average is logged before and after
each worker, and each worker's peak RSS is reported.

All contestants start from the same weights and batches (``peers.init_weights``,
``peers.make_data``); before timing, each runs 3 steps and the losses are compared with
numpy's: the first step's loss (same weights, same batch) within 1e-4 relative, the next two
within 1e-2 (Adam's first updates are +-lr wherever a gradient is tiny, so float32 rounding
of near-zero gradients moves the trajectories apart by up to about lr).

Compile time: the 784-256-128-10 Adam training step, each measurement in a fresh process:
graphc ``gc.compile`` with an empty cache (cold) and with a warm one, against JAX's first call
(trace, compile and run once) and ``torch.compile``'s first step.

Peers are optional extras: ``pip install -e ".[bench]"``; a missing one shows as n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

TRAIN_CASES = [
    # id, sizes, act, loss, opt, lr, batch
    ("784 relu CE sgd b32", (784, 256, 128, 10), "relu", "ce", "sgd", 0.01, 32),
    ("784 relu CE sgd b128", (784, 256, 128, 10), "relu", "ce", "sgd", 0.01, 128),
    ("784 relu CE sgd b512", (784, 256, 128, 10), "relu", "ce", "sgd", 0.01, 512),
    ("784 relu CE adam b32", (784, 256, 128, 10), "relu", "ce", "adam", 1e-3, 32),
    ("784 relu CE adam b128", (784, 256, 128, 10), "relu", "ce", "adam", 1e-3, 128),
    ("784 relu CE adam b512", (784, 256, 128, 10), "relu", "ce", "adam", 1e-3, 512),
    ("30-16-1 sigmoid BCE sgd b64", (30, 16, 1), "sigmoid", "bce", "sgd", 0.05, 64),
    ("30-16-1 sigmoid BCE adam b64", (30, 16, 1), "sigmoid", "bce", "adam", 1e-3, 64),
    ("2-8-1 tanh BCE sgd b4", (2, 8, 1), "tanh", "bce", "sgd", 0.1, 4),
    ("2-8-1 tanh BCE adam b4", (2, 8, 1), "tanh", "bce", "adam", 1e-3, 4),
]
INFER_CASES = [
    ("infer 784 b1", (784, 256, 128, 10), 1),
    ("infer 784 b256", (784, 256, 128, 10), 256),
]
GEMM_SIZES = [64, 128, 256, 512, 1024, 2048]
CONTESTANTS = [
    "graphc",
    "numpy",
    "torch eager (foreach)",
    "torch eager (fused)",
    "torch.compile",
    "JAX jit",
]
PEERS = CONTESTANTS[1:]
BARE = "graphc bare entry"  # the labelled extra column: the compiled entry, nothing checked
NOISY = 0.10  # IQR / median above this marks a cell noisy
LOSS_RTOL = (1e-4, 1e-2)  # first step's loss (same weights), and the next two steps' losses


# ------------------------------------------------------------------------------------ worker


def set_threads(n: int) -> None:
    """Fix every library's pool to ``n`` threads (called before any of them is imported)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        ).strip()
    os.environ["GRAPHC_THREADS"] = str(n)


def block_us(fn: Callable[[], Any], sync: Callable[[], Any], seconds: float) -> float:
    """Mean time of one call over a loop of at least ``seconds`` (at least one call), in us."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    loops = max(1, int(seconds / max(first, 1e-7)))
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    sync()
    return (time.perf_counter() - t0) / loops * 1e6


def make(contestant: str, spec, w, x, y, threads: int):
    import peers as P

    cls = {c.label: c for c in [P.GraphcPeer, *P.PEERS]}[contestant]
    obj = cls(spec, w, x, y)
    if contestant == "graphc":
        obj.model.threads = threads
    return obj


def worker(contestant: str, threads: int, quick: bool, rounds: int, block: float, only: str):
    set_threads(threads)
    import numpy as np

    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(threads)
    except ImportError:
        pass
    if contestant.startswith("torch"):
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    sys.path.insert(0, str(HERE))
    import peers as P

    res: dict[str, Any] = {"samples": {}, "notes": {}, "losses": {}, "load": [os.getloadavg()]}
    if quick and contestant == "torch.compile":
        res["notes"]["torch.compile"] = "skipped with --quick (minutes of compile time)"
        return res

    def wanted(case: str) -> bool:
        return not only or any(o in case for o in only.split(","))

    timed: list[tuple[str, Callable, Callable]] = []  # case/column, call, sync

    def add(case: str, build: Callable[[], Any]) -> None:
        try:
            build()
        except P.Missing as e:
            res["notes"][contestant] = str(e)
        except Exception as e:  # a peer failing on this machine is a result, not a crash
            res["notes"][f"{contestant} / {case}"] = (
                f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            )
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()

    # GEMM through the public call (predict(out=) for graphc, matmul(out=) for numpy)
    for s in GEMM_SIZES[:-1] if quick else GEMM_SIZES:
        case = f"gemm {s}"
        if not wanted(case) or contestant not in ("graphc", "numpy"):
            continue
        rng = np.random.default_rng(0)
        a = rng.standard_normal((s, s)).astype(np.float32)
        b = rng.standard_normal((s, s)).astype(np.float32)
        out = np.empty((s, s), np.float32)

        def build(s=s, a=a, b=b, out=out, case=case):
            if contestant == "numpy":
                timed.append((f"{case}|numpy", lambda: np.matmul(a, b, out=out), _none))
                return
            import graphc as gc

            m = gc.compile(gc.matmul(gc.input("a", ("N", s)), gc.param("b", (s, s))), name="gemm")
            m.threads = threads
            m.params["b"][...] = b
            e = m.entries["infer"]
            timed.append((f"{case}|graphc", lambda: m.predict(a, out=out), _none))
            timed.append((f"{case}|{BARE}", lambda: e.run([a], s), _none))

        add(case, build)

    for cid, sizes_, act, loss, opt, lr, batch in TRAIN_CASES:
        if not wanted(cid):
            continue
        spec = P.Spec(sizes_, act, loss, opt, lr)
        w = P.init_weights(spec)
        x, y = P.make_data(spec, batch)

        def build(spec=spec, w=w, x=x, y=y, cid=cid):
            c = make(contestant, spec, w, x, y, threads)
            losses = []
            for _ in range(3):
                c.step()
                c.sync()
                losses.append(c.loss())
            res["losses"][cid] = losses
            timed.append((f"{cid}|{contestant}", c.step, c.sync))
            if contestant == "graphc":
                timed.append((f"{cid}|{BARE}", c.step_bare, _none))

        add(cid, build)

    for cid, sizes_, batch in INFER_CASES:
        if not wanted(cid):
            continue
        spec = P.Spec(sizes_, "relu", "ce", "sgd", 0.01)
        w = P.init_weights(spec)
        x, y = P.make_data(spec, batch)

        def build(spec=spec, w=w, x=x, y=y, cid=cid):
            c = make(contestant, spec, w, x, y, threads)
            res["losses"][cid] = [float(np.asarray(c.infer()).ravel()[0])]
            timed.append((f"{cid}|{contestant}", c.infer, _none))
            if contestant == "graphc":
                timed.append((f"{cid}|{BARE}", c.infer_bare, _none))

        add(cid, build)

    n = 10_000 if quick else 60_000
    cid = f"epoch {n // 1000}k b128 adam"
    if wanted("epoch"):
        spec = P.Spec((784, 256, 128, 10), "relu", "ce", "adam", 1e-3)
        w = P.init_weights(spec)
        xe, ye = P.make_data(spec, n, seed=3)
        seeds = iter(range(10**6))

        def build(spec=spec, w=w):
            c = make(contestant, spec, w, xe[:128], ye[:128], threads)
            timed.append((f"{cid}|{contestant}", lambda: c.epoch(xe, ye, 128, next(seeds)), c.sync))

        add(cid, build)

    # rounds: one block per case per round, interleaved over the cases
    for _ in range(rounds):
        for key, fn, sync in timed:
            try:
                res["samples"].setdefault(key, []).append(block_us(fn, sync, block))
            except Exception as e:
                res["notes"][key] = f"{type(e).__name__}: {str(e)[:160]}"
    res["peak_rss_mb"] = peak_rss_mb()
    res["load"].append(os.getloadavg())
    return res


def _none() -> None:
    pass


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: reset at exec, unlike getrusage's ru_maxrss,
    which a child inherits from the parent it was forked from)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------ compile

_COMPILE_PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
which = sys.argv[2]
import numpy as np
import peers as P
spec = P.Spec((784, 256, 128, 10), "relu", "ce", "adam", 1e-3)
w = P.init_weights(spec)
x, y = P.make_data(spec, 128)
t0 = time.perf_counter()
if which == "graphc":
    import graphc as gc
    xin = gc.input("x", ("N", 784)); h = xin
    for i, width in enumerate((256, 128, 10)):
        h = gc.dense(h, width, None if i == 2 else "relu", name=f"fc{i + 1}")
    m = gc.compile(h, gc.softmax_cross_entropy(h, gc.input("y", ("N",), dtype="i32")),
                   gc.Adam(lr=1e-3), name="bench")
    m.train_step(x, y)
elif which == "jax":
    P.JaxPeer(spec, w, x, y)      # jit: trace, compile, run one step and one inference
else:
    P.TorchCompilePeer(spec, w, x, y)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def compile_times(rounds: int, threads: int, quick: bool) -> dict[str, list[float]]:
    """Seconds to the first finished training step of 784-256-128-10 Adam, each in a fresh
    pinned process: graphc cold (empty cache) and cached, JAX's first call, torch.compile's."""
    out: dict[str, list[float]] = {}
    kinds = [("graphc cold", "graphc"), ("graphc cached", "graphc"), ("JAX first call", "jax")]
    if not quick:
        kinds.append(("torch.compile first step", "torch"))
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            env = {**os.environ, "GRAPHC_CACHE_DIR": d}
            set_env_threads(env, threads)
            for label, which in kinds:
                r = subprocess.run(
                    pin(threads) + [sys.executable, "-c", _COMPILE_PROBE, str(HERE), which],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if r.returncode == 0:
                    t = json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
                    out.setdefault(label, []).append(t)
    return out


def set_env_threads(env: dict, n: int) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GRAPHC_THREADS"):
        env[var] = str(n)
    if n == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"


def pin(threads: int) -> list[str]:
    """``taskset -c 0..threads-1`` when taskset exists (the cores this process may use)."""
    cores = sorted(os.sched_getaffinity(0))[:threads]
    if shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(map(str, cores))]


# ------------------------------------------------------------------------------------ report


def machine() -> dict[str, str]:
    """CPU model, cores, vector flags, clock, and library versions."""
    info: dict[str, str] = {"python": platform.python_version(), "os": platform.platform()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("flags", "").split())
        info["cpu"] = fields.get("model name", "?")
        info["vector flags"] = " ".join(f for f in ("avx2", "fma", "avx512f") if f in flags)
    except OSError:
        info["cpu"] = platform.processor()
    info["cores"] = str(os.cpu_count())
    for mod in ("numpy", "llvmlite", "torch", "jax", "jaxlib"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = "not installed"
    try:
        import graphc

        info["graphc"] = graphc.__version__
    except Exception as e:  # pragma: no cover
        info["graphc"] = f"error: {e}"
    return info


def summary(samples: list[float] | None) -> tuple[float, float] | None:
    """(median, IQR as a fraction of the median) of a cell's per-round samples."""
    if not samples:
        return None
    med = statistics.median(samples)
    if len(samples) < 4:
        spread = (max(samples) - min(samples)) / med if med else 0.0
    else:
        q = statistics.quantiles(samples, n=4)
        spread = (q[2] - q[0]) / med if med else 0.0
    return med, spread


def cell(s: tuple[float, float] | None) -> str:
    if s is None:
        return "n/a"
    med, spread = s
    v = f"{med:,.1f}" if med < 100 else f"{med:,.0f}"
    return f"{'~' if spread > NOISY else ''}{v} ±{100 * spread:.0f}%"


def _target(cid: str) -> float | None:
    """The issue's target: graphc's time at most this fraction of the fastest peer's."""
    if cid.startswith(("2-8-1", "30-16-1")):
        return 0.3  # of JAX jit
    if cid == "infer 784 b1":
        return 0.6
    if cid == "infer 784 b256":
        return 0.8
    if cid.startswith("784"):
        return 0.75
    if cid.startswith("epoch"):
        return 0.6
    if cid.startswith("gemm"):
        return 1.0
    return None


def report(runs: dict, info: dict[str, str], cmd: str, wall: float) -> str:
    out = ["# graphc benchmark", "", f"Command: `{cmd}` ({wall:.0f} s)", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    out += [
        "",
        "Cells: median over rounds of the time per call in us, ± the interquartile range as a "
        f"percentage of the median; `~` marks a noisy cell (IQR > {100 * NOISY:.0f}% of the "
        "median). Ratio: graphc (public API) over the fastest peer; the target is the issue's "
        "(the small networks' targets are against JAX jit). `graphc bare entry` is the compiled "
        "entry called with nothing checked: shown, never used in a ratio.",
    ]
    for th, res in runs.items():
        out += ["", f"## {th} thread(s)", ""]
        cases: dict[str, dict[str, tuple[float, float] | None]] = {}
        for r in res["workers"].values():
            for key, smp in r.get("samples", {}).items():
                cid, col = key.split("|")
                cases.setdefault(cid, {})[col] = summary(smp)
        cols = ["graphc", BARE] + PEERS
        out += [
            "| case | " + " | ".join(cols) + " | graphc / fastest | target | met |",
            "|---" * (len(cols) + 4) + "|",
        ]
        for cid, row in cases.items():
            g = row.get("graphc")
            if cid.startswith(("2-8-1", "30-16-1")):
                ref = row.get("JAX jit")
            else:
                ref = min((row[c] for c in PEERS if row.get(c)), default=None, key=lambda s: s[0])
            r = g[0] / ref[0] if g and ref else None
            tgt = _target(cid)
            met = "" if r is None or tgt is None else ("yes" if r <= tgt else "no")
            out.append(
                f"| {cid} | "
                + " | ".join(cell(row.get(c)) for c in cols)
                + f" | {'' if r is None else f'{r:.2f}'} | {'' if tgt is None else f'<= {tgt}'}"
                f" | {met} |"
            )
        # loss agreement with numpy
        out += [
            "",
            "Loss agreement with numpy (first step's loss within 1e-4 relative, the next two "
            "within 1e-2; the largest differences seen):",
            "",
        ]
        ref = res["workers"].get("numpy", {}).get("losses", {})
        for c, r in res["workers"].items():
            bad, worst = [], [0.0, 0.0]
            for cid, ls in r.get("losses", {}).items():
                if ref.get(cid):
                    errs = [abs(a - b) / max(abs(b), 1e-6) for a, b in zip(ls, ref[cid])]
                    worst[0] = max(worst[0], errs[0])
                    worst[1] = max([worst[1]] + errs[1:])
                    if errs[0] > LOSS_RTOL[0] or max(errs[1:], default=0) > LOSS_RTOL[1]:
                        bad.append(f"{cid} ({max(errs):.1e})")
            what = (
                f"agrees in every case (first step {worst[0]:.1e}, later {worst[1]:.1e})"
                if not bad and r.get("losses")
                else ("DIFFERS: " + ", ".join(bad) if bad else "no losses")
            )
            if not ref:
                what = "not checked (numpy did not run)"
            out.append(f"- {c}: {what}")
        out += ["", "| contestant | peak RSS MB | load average before -> after |", "|---|---|---|"]
        for c, r in res["workers"].items():
            ld = r.get("load", [])
            lds = " -> ".join(f"{v[0]:.2f}" for v in ld)
            out.append(f"| {c} | {r.get('peak_rss_mb', 0):.0f} | {lds} |")
        comp = res.get("compile")
        if comp:
            out += [
                "",
                "Compile, 784-256-128-10 Adam step, fresh process each (seconds to the first "
                "finished step; median of rounds):",
                "",
            ]
            jax_t = (
                statistics.median(comp["JAX first call"]) if comp.get("JAX first call") else None
            )
            for k, v in comp.items():
                med = statistics.median(v)
                extra = (
                    f" ({med / jax_t:.2f} x JAX's first call)" if jax_t and "graphc" in k else ""
                )
                out.append(f"- {k}: {med:.2f} s over {len(v)} runs{extra}")
        notes = {k: v for r in res["workers"].values() for k, v in r.get("notes", {}).items()}
        if notes:
            out += ["", "Notes:", ""] + [f"- {k}: {v}" for k, v in notes.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k-sample epoch, no torch.compile")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=5, help="timed blocks per case (default 5)")
    ap.add_argument("--block", type=float, default=0.2, help="seconds per timed block")
    ap.add_argument("--contestants", default=",".join(CONTESTANTS))
    ap.add_argument("-o", "--output", default=None, help="write the markdown tables here")
    ap.add_argument("--only", default="", help="run only cases whose name contains one of these")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time runs")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        r = worker(args.worker, args.worker_threads, args.quick, args.rounds, args.block, args.only)
        Path(args.json).write_text(json.dumps(r))
        return 0
    t0 = time.perf_counter()
    info = machine()
    info["load average at start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    runs: dict[int, dict] = {}
    for th in [int(t) for t in args.threads.split(",")]:
        runs[th] = {"workers": {}}
        for c in args.contestants.split(","):
            with tempfile.TemporaryDirectory() as d:
                js = Path(d) / "r.json"
                cmd = (
                    pin(th)
                    + [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--worker",
                        c,
                        "--worker-threads",
                        str(th),
                        "--json",
                        str(js),
                        "--rounds",
                        str(args.rounds),
                        "--block",
                        str(args.block),
                        "--only",
                        args.only,
                    ]
                    + (["--quick"] if args.quick else [])
                )
                env = dict(os.environ)
                set_env_threads(env, th)
                print(f"{th} thread(s): {c} ...", file=sys.stderr, flush=True)
                proc = subprocess.run(cmd, stdout=sys.stderr, env=env)
                if proc.returncode != 0 or not js.exists():
                    runs[th]["workers"][c] = {"notes": {c: f"worker exit {proc.returncode}"}}
                    continue
                runs[th]["workers"][c] = json.loads(js.read_text())
            if args.output:  # what is done so far survives a run that is stopped later
                Path(args.output).with_suffix(".partial.json").write_text(
                    json.dumps({"machine": info, "runs": runs}, indent=1)
                )
        if not args.no_compile and (not args.only or "compile" in args.only):
            print(f"{th} thread(s): compile times ...", file=sys.stderr, flush=True)
            runs[th]["compile"] = compile_times(3, th, args.quick)
    info["load average at end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    cmdline = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(runs, info, cmdline.strip(), time.perf_counter() - t0)
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).with_suffix(".json").write_text(
            json.dumps({"machine": info, "runs": runs}, indent=1)
        )
        Path(args.output).with_suffix(".partial.json").unlink(missing_ok=True)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
