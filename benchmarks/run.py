"""graphc against numpy, PyTorch and JAX on the same MLPs, side by side: one command, one table.

    python benchmarks/run.py [--quick] [--threads 1,2] [-o benchmarks/RESULTS.md]

For each thread count the command starts one worker process (thread count fixed before any
library loads: ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, threadpoolctl,
``torch.set_num_threads``, XLA's ``intra_op_parallelism_threads``, and the process pinned to that
many cores with ``sched_setaffinity``), which runs every contestant on every case in turn; the
parent writes one markdown table per thread count with the machine's description.

Times are medians over repeats of the mean time per call in a timed loop, in microseconds.
Ratios are graphc's time over the peer's (below 1: graphc is faster). A peer that is not
installed, or fails on this machine, shows as "n/a" with the reason in the notes.

Peers are optional extras: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
    ("2-8-1 tanh BCE sgd b4", (2, 8, 1), "tanh", "bce", "sgd", 0.1, 4),
]
INFER_CASES = [
    ("infer 784 b1", (784, 256, 128, 10), 1),
    ("infer 784 b256", (784, 256, 128, 10), 256),
]
GEMM_SIZES = [64, 128, 256, 512, 1024, 2048]
PEER_COLUMNS = ["numpy", "torch eager", "torch.compile", "JAX jit"]


# ------------------------------------------------------------------------------------ timing


def time_us(fn: Callable[[], Any], *, min_time: float, repeats: int) -> float:
    """Median over ``repeats`` of the mean time of one call, in a loop lasting >= min_time."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > 0.5:  # a slow call (large GEMM, a whole epoch): few samples, no calibration
        return statistics.median([first] + [_once(fn) for _ in range(min(repeats, 2))]) * 1e6
    loops, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time / 4 or loops > 1 << 20:
            break
        loops *= 4 if t < min_time / 40 else 2
    loops = max(1, int(loops * (min_time / max(t, 1e-9))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops * 1e6)
    return statistics.median(samples)


def _once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------ worker

SETTLE_SECONDS = 0.3  # idle time before each timed contestant at more than one thread


def set_threads(n: int) -> None:
    """Pin the process and every library's pool to ``n`` threads (called before imports)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={'false' if n == 1 else 'true'}"
        f" intra_op_parallelism_threads={n}"
    ).strip()
    os.environ["GRAPHC_THREADS"] = str(n)
    try:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:n]))
    except (AttributeError, OSError):
        pass


def worker(threads: int, quick: bool, only: str = "") -> dict[str, Any]:
    set_threads(threads)
    import numpy as np

    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(threads)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    sys.path.insert(0, str(HERE))
    import peers as P

    min_time, repeats = (0.05, 3) if quick else (0.2, 5)
    res: dict[str, Any] = {"cases": {}, "notes": {}, "threads": threads}

    def wanted(case: str) -> bool:
        return not only or any(o in case for o in only.split(","))

    def record(case: str, column: str, fn: Callable[[], Any], **kw) -> None:
        # Let the previous contestant's thread pools go idle first: OpenMP (torch), Eigen (XLA)
        # and graphc workers spin for a while after a call, and on 2 cores a spinning thread
        # halves the next contestant's second core.
        time.sleep(SETTLE_SECONDS if threads > 1 else 0.0)
        try:
            res["cases"].setdefault(case, {})[column] = time_us(
                fn, min_time=kw.get("min_time", min_time), repeats=kw.get("repeats", repeats)
            )
        except Exception as e:  # a peer failing on this machine is a result, not a crash
            res["cases"].setdefault(case, {})[column] = None
            res["notes"][f"{column} / {case}"] = (
                f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            )

    def peer(cls, spec, w, x, y, case):
        try:
            return cls(spec, w, x, y)
        except P.Missing as e:
            res["notes"][cls.label] = str(e)
        except Exception as e:
            res["notes"][f"{cls.label} / {case}"] = (
                f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            )
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
        res["cases"].setdefault(case, {})[cls.label] = None
        return None

    peers = [c for c in P.PEERS if not (quick and c is P.TorchCompilePeer)]
    if quick:
        res["notes"]["torch.compile"] = "skipped with --quick (minutes of compile time)"

    # the FMA pipes' measured throughput on one core (bench_gemm.py's JIT loop of FMAs)
    try:
        from bench_gemm import fma_peak

        res["fma_peak_core"] = fma_peak(0.3 if quick else 1.0, time.thread_time)
    except Exception as e:
        res["notes"]["measured peak"] = f"bench_gemm.fma_peak unavailable: {e}"[:200]

    # GEMM: numpy (BLAS) vs graphc's matmul kernel through a compiled one-matmul model
    sizes = GEMM_SIZES[:-1] if quick else GEMM_SIZES
    for s in sizes:
        case = f"gemm {s}"
        if not wanted(case):
            continue
        rng = np.random.default_rng(0)
        a = rng.standard_normal((s, s)).astype(np.float32)
        b = rng.standard_normal((s, s)).astype(np.float32)
        out = np.empty((s, s), np.float32)
        record(case, "numpy", lambda: np.matmul(a, b, out=out))
        try:
            import graphc as gc

            xin = gc.input("a", ("N", s))
            wp = gc.param("b", (s, s), init="zeros")
            m = gc.compile(gc.matmul(xin, wp), name="gemm")
            m.params["b"][...] = b
            e = m.entries["infer"]
            record(case, "graphc", lambda: e([a], s, checked=False))
        except Exception as ex:
            res["cases"][case]["graphc"] = None
            res["notes"][f"graphc / {case}"] = f"{type(ex).__name__}: {ex}"[:200]
        res["cases"][case]["flop"] = 2.0 * s**3

    # training steps
    for cid, sizes_, act, loss, opt, lr, batch in TRAIN_CASES:
        if not wanted(cid):
            continue
        spec = P.Spec(sizes_, act, loss, opt, lr)
        w = P.init_weights(spec)
        x, y = P.make_data(spec, batch)
        g = P.GraphcPeer(spec, w, x, y)
        reps = max(64, min(2000, 2_000_000 // (batch * sizes_[0])))  # amortize fit()
        record(cid, "graphc fit", lambda: g.fit_steps(reps))
        if res["cases"][cid]["graphc fit"] is not None:
            res["cases"][cid]["graphc fit"] /= reps
        record(cid, "graphc step", g.step)
        record(cid, "graphc train_step()", g.step_api)
        for cls in peers:
            p = peer(cls, spec, w, x, y, cid)
            if p is not None:
                record(cid, cls.label, p.step)

    # inference
    for cid, sizes_, batch in INFER_CASES:
        if not wanted(cid):
            continue
        spec = P.Spec(sizes_, "relu", "ce", "sgd", 0.01)
        w = P.init_weights(spec)
        x, y = P.make_data(spec, batch)
        g = P.GraphcPeer(spec, w, x, y)
        record(cid, "graphc step", g.infer)
        record(cid, "graphc train_step()", g.infer_api)
        for cls in peers:
            p = peer(cls, spec, w, x, y, cid)
            if p is not None:
                record(cid, cls.label, p.infer)

    # one epoch of random samples, batch 128, Adam, shuffling included
    n = 10_000 if quick else 60_000
    cid = f"epoch {n} b128 adam"
    if not wanted(cid):
        n = 0
    spec = P.Spec((784, 256, 128, 10), "relu", "ce", "adam", 1e-3)
    w = P.init_weights(spec)
    x, y = P.make_data(spec, n, seed=3)
    xb, yb = x[:128], y[:128]
    seeds = iter(range(10**6))
    g = P.GraphcPeer(spec, w, xb, yb) if n else None
    if n:
        record(cid, "graphc fit", lambda: g.epoch(x, y, 128, next(seeds)), min_time=0, repeats=3)
    for cls in peers if n else ():
        p = peer(cls, spec, w, xb, yb, cid)
        if p is not None:
            record(cid, cls.label, lambda: p.epoch(x, y, 128, next(seeds)), min_time=0, repeats=3)

    # compile time of the digits network: cold (empty cache) and cached
    if wanted("compile"):
        res["compile"] = compile_times()
    return res


_COMPILE_PROBE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from models import digits
import graphc as gc
t0 = time.perf_counter()
spec = digits()
m = gc.compile(spec["outputs"], spec["loss"], spec["optimizer"], name=spec["name"])
out = {"seconds": time.perf_counter() - t0}
out.update({k: v for k, v in m.program.timings.items() if isinstance(v, float)})
print(json.dumps(out))
"""


def compile_times(rounds: int = 3) -> dict[str, float]:
    """Seconds for gc.compile of examples/models.py:digits, each in a fresh process (as a user
    runs it, with none of the peers' thread pools still spinning): cold with an empty cache,
    then cached (a new process that finds the object files). Best of ``rounds``; the breakdown
    is the best cold run's."""
    out: dict[str, float] = {}
    examples = str(HERE.parent / "examples")
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            env = {**os.environ, "GRAPHC_CACHE_DIR": d}
            for what in ("cold", "cached"):
                r = subprocess.run(
                    [sys.executable, "-c", _COMPILE_PROBE, examples],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                t = json.loads(r.stdout.strip().splitlines()[-1])
                if what not in out or t["seconds"] < out[what]:
                    out[what] = t["seconds"]
                    if what == "cold":
                        out.update({f"cold {k}": v for k, v in t.items() if k != "seconds"})
    return out


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
        info["cpu MHz (/proc/cpuinfo)"] = fields.get("cpu MHz", "?")
        info["vector flags"] = " ".join(
            f
            for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512vl", "avx512bw")
            if f in flags
        )
    except OSError:
        info["cpu"] = platform.processor()
    info["cores"] = str(os.cpu_count())
    try:
        info["load average at start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass
    for mod in ("numpy", "llvmlite", "torch", "jax", "jaxlib"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = "not installed"
    try:
        from graphc.codegen.target import host_cpu

        import graphc

        info["graphc"] = graphc.__version__
        info["LLVM host CPU"] = host_cpu()[0]
    except Exception as e:  # pragma: no cover
        info["graphc"] = f"error: {e}"
    return info


def peak_gflops(info: dict[str, str], cores: int) -> tuple[float, str]:
    """Theoretical float32 peak: cores x clock x FLOP/cycle; how it was derived."""
    flags = info.get("vector flags", "").split()
    lanes = 16 if "avx512f" in flags else 8 if "avx" in flags else 4
    fma = 2 if "fma" in flags else 1
    pipes = 2
    try:
        ghz = float(info.get("cpu MHz (/proc/cpuinfo)", "0")) / 1000
    except ValueError:
        ghz = 0.0
    # Zen 3/4 and recent Intel cores: two 256-bit FMA pipes; AVX-512 on Zen 4 runs as 2x256.
    flop_per_cycle = pipes * min(lanes, 8) * fma
    peak = cores * ghz * flop_per_cycle
    how = (
        f"{cores} core(s) x {ghz:.2f} GHz (/proc/cpuinfo; the boost clock may be higher) x "
        f"{flop_per_cycle} FLOP/cycle ({pipes} FMA pipes x {min(lanes, 8)} f32 lanes x "
        f"{fma} for FMA) = {peak:.0f} GFLOP/s"
    )
    return peak, how


def _target(cid: str, g: float | None, row: dict, fastest: float | None) -> tuple[str, str]:
    """The issue's target for a case, and whether graphc's time ``g`` meets it."""
    torch_, jax_ = row.get("torch eager"), row.get("JAX jit")
    if cid.startswith("784"):
        if g is None or torch_ is None or jax_ is None:
            return "<= 0.5 torch, <= 0.8 JAX", ""
        return "<= 0.5 torch, <= 0.8 JAX", "yes" if g <= 0.5 * torch_ and g <= 0.8 * jax_ else "no"
    if cid.startswith(("2-8-1", "30-16-1")):
        return "<= 0.3 JAX", "" if g is None or jax_ is None else (
            "yes" if g <= 0.3 * jax_ else "no"
        )
    if cid == "infer 784 b1":
        return "<= 0.5 fastest", "" if g is None or fastest is None else (
            "yes" if g <= 0.5 * fastest else "no"
        )
    return "", ""


def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def report(results: list[dict[str, Any]], info: dict[str, str], cmd: str, wall: float) -> str:
    out = ["# graphc benchmark", "", f"Command: `{cmd}` ({wall:.0f} s)", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    for r in results:
        th = r["threads"]
        cases = r["cases"]
        out += ["", f"## {th} thread(s)", ""]
        # GEMM
        peak, how = peak_gflops(info, th)
        if r.get("fma_peak_core"):
            peak = r["fma_peak_core"] * th
            how = (
                f"measured: {r['fma_peak_core']:.0f} GFLOP/s per core from 12 independent "
                f"chains of 8-lane FMAs (benchmarks/bench_gemm.py fma_peak, thread CPU time), "
                f"x {th} core(s) = {peak:.0f} GFLOP/s; nominal: {how}"
            )
        out += [
            "### GEMM, float32, C = A B, square",
            "",
            f"Peak: {how}.",
            "",
            "| n | graphc us | numpy us | graphc GFLOP/s | numpy GFLOP/s | graphc/numpy speed "
            "| graphc % of peak |",
            "|---|---|---|---|---|---|---|",
        ]
        for cid, row in cases.items():
            if not cid.startswith("gemm"):
                continue
            g, npy, flop = row.get("graphc"), row.get("numpy"), row["flop"]
            gf = flop / g / 1e3 if g else None
            nf = flop / npy / 1e3 if npy else None
            out.append(
                f"| {cid.split()[1]} | {fmt(g)} | {fmt(npy)} | {fmt(gf)} | {fmt(nf)} | "
                f"{ratio(gf, nf)} | {f'{100 * gf / peak:.0f}%' if gf and peak else ''} |"
            )
        # training and inference
        out += [
            "",
            "### Training steps and inference (us per step; ratio = graphc / peer)",
            "",
            "graphc step: the compiled entry called from Python on one resident batch "
            "(one ctypes call, nothing allocated), the conditions the peers' steps run in; "
            "the ratios use it. graphc fit: per step of `Model.fit` over a data set of at "
            "least 64 batches (one native call per epoch; the rows of each batch gathered "
            "from the whole data set, which at batch 512 is 100 MB and comes from DRAM). "
            "graphc train_step() / predict(): the public per-batch API (converts and "
            "validates its arguments). The epoch table compares whole epochs, data "
            "movement included, for everyone.",
            "",
            "| case | graphc fit | graphc step | graphc train_step() / predict() | "
            + " | ".join(PEER_COLUMNS)
            + " | / torch | / JAX | / fastest peer | target | met |",
            "|---" * (4 + len(PEER_COLUMNS) + 5) + "|",
        ]
        for cid, row in cases.items():
            if cid.startswith("gemm") or cid.startswith("epoch"):
                continue
            g = row.get("graphc step")
            peers_ = [row.get(c) for c in PEER_COLUMNS]
            fastest = min((p for p in peers_ if p), default=None)
            target, met = _target(cid, g, row, fastest)
            out.append(
                f"| {cid} | {fmt(row.get('graphc fit'))} | {fmt(row.get('graphc step'))} | "
                f"{fmt(row.get('graphc train_step()'))} | "
                + " | ".join(fmt(p) for p in peers_)
                + f" | {ratio(g, row.get('torch eager'))} | {ratio(g, row.get('JAX jit'))} | "
                f"{ratio(g, fastest)} | {target} | {met} |"
            )
        out += [
            "",
            "### One epoch (us per epoch, shuffling and row gathering included)",
            "",
            "| case | graphc fit | " + " | ".join(PEER_COLUMNS) + " | / fastest peer | met |",
            "|---" * (4 + len(PEER_COLUMNS)) + "|",
        ]
        for cid, row in cases.items():
            if cid.startswith("epoch"):
                g = row.get("graphc fit")
                peers_ = [row.get(c) for c in PEER_COLUMNS]
                fastest = min((p for p in peers_ if p), default=None)
                met = "" if g is None or fastest is None else ("yes" if g < fastest else "no")
                out.append(
                    f"| {cid} | {fmt(g)} | "
                    + " | ".join(fmt(p) for p in peers_)
                    + f" | {ratio(g, fastest)} | {met} |"
                )
        c = r.get("compile")
        if c:
            out += [
                "",
                "### Compile time, digits network (examples/models.py:digits)",
                "",
                f"- cold (empty cache): {c['cold'] * 1e3:.0f} ms (target < 1000 ms); "
                + ", ".join(
                    f"{k[5:]} {v * 1e3:.0f} ms" for k, v in c.items() if k.startswith("cold ")
                ),
                f"- cached: {c['cached'] * 1e3:.1f} ms (target < 50 ms)",
            ]
        if r["notes"]:
            out += ["", "### Notes", ""] + [f"- {k}: {v}" for k, v in r["notes"].items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats, smaller epoch, no torch.compile, GEMM up to 1024",
    )
    ap.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    ap.add_argument("-o", "--output", default=None, help="write the markdown table here")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated substrings: run only the cases "
        "whose name contains one (e.g. 'gemm,b4,compile')",
    )
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        Path(args.json).write_text(json.dumps(worker(args.worker, args.quick, args.only)))
        return 0
    t0 = time.perf_counter()
    info = machine()
    results = []
    for th in [int(t) for t in args.threads.split(",")]:
        with tempfile.TemporaryDirectory() as d:
            js = Path(d) / "result.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                str(th),
                "--json",
                str(js),
                "--only",
                args.only,
            ]
            if args.quick:
                cmd.append("--quick")
            print(f"running {th} thread(s) ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, stdout=sys.stderr)
            if proc.returncode != 0:
                print(f"worker for {th} thread(s) failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            results.append(json.loads(js.read_text()))
    cmdline = "python benchmarks/run.py " + " ".join(a for a in (argv or sys.argv[1:]))
    text = report(results, info, cmdline.strip(), time.perf_counter() - t0)
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).with_suffix(".json").write_text(
            json.dumps({"machine": info, "results": results}, indent=1)
        )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
