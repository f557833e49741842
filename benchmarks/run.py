"""graphc against numpy, PyTorch and JAX on the same MLPs, through the API each one's users call.

    python benchmarks/run.py --threads 1,2 --rounds 9 --budget-min 24 \
        -o benchmarks/RESULTS.json [--before /work/venv-before/bin/python]
    python benchmarks/render.py benchmarks/RESULTS.json --readme   # the tables, again

Contestants: graphc (``train_step``, ``predict``, ``fit``; its bare compiled entry is a second,
labelled column), a float32 numpy MLP, PyTorch eager with its foreach and with its fused
optimizers, ``torch.compile`` of the whole step (forward, backward, optimizer) and JAX ``jit``
with donated buffers; with ``--before PYTHON``, also graphc as installed for that interpreter
(an older commit in a venv of its own, labelled ``graphc@REV``), through the same public calls.

How a thread count is measured (one phase per ``--threads`` entry):

1. Every contestant starts one worker process of its own, with the thread count fixed before
   any library loads (``*_NUM_THREADS``, threadpoolctl, ``torch.set_num_threads``, XLA's
   ``--xla_cpu_multi_thread_eigen=false`` at one thread, ``GRAPHC_THREADS``) and pinned with
   ``taskset`` to that many cores (XLA sizes its pool by the cores it may run on, so pinning
   is the setting that works for it). The workers build every case first (compiles, data,
   the loss-agreement steps, one untimed epoch), ``cores // threads`` of them at a time, a
   one-thread worker on a core of its own; then every thread of a one-thread worker is moved
   to the first core, where all one-thread contestants are timed.
2. Rounds: each round draws a fresh order of the contestants (``random.Random(seed)``, the
   orders are logged) and runs them one at a time: the parent tells one worker to time one block
   of every case (cases in a shuffled order too), waits for its answer, pauses ``--gap`` seconds
   (spinning pool threads go quiet), then the next. Only one worker runs at any moment, and a
   change of load over the run falls on every contestant alike.
3. A block is a loop of calls lasting at least ``--block`` seconds after one untimed warm-up
   call, timed in wall-clock time and ended by the contestant's ``sync`` (JAX dispatches
   asynchronously); a call of at least ``max(2 * block, 0.5)`` seconds (the epoch) is timed
   once, its warm-up being the sample (every worker ran one untimed epoch when it built, so
   that JAX and torch.compile have compiled the last, shorter batch). With each block the worker logs the 1-minute load
   average, the CPU time other processes used meanwhile (the machine's busy time from
   ``/proc/stat``, steal included, less its own), in cores, and its threads' run-queue wait
   (``/proc/self/task/*/schedstat``: time runnable but not running, over the block's wall
   time; it counts a contestant's own threads queueing behind each other too, so it is
   reported, not used to mark cells).
4. ``--budget-min``: a phase stops after fewer rounds (at least 3) when another round would end
   after its share of the budget; the results say so.

A cell is the median over rounds; its spread is the interquartile range over the median (the
range below 4 rounds). A cell is noisy (``~``) when its spread exceeds 10 %, or other processes
used more than 0.2 cores during its median block, or the median 1-minute load average during its
blocks exceeds the phase's thread count by more than 1 (``render.py`` holds these thresholds).

All contestants start from the same weights and batches (``peers.init_weights``,
``peers.make_data``); before timing, each runs 3 steps and the losses are compared with
numpy's: the first step's loss (same weights, same batch) within 1e-4 relative, the next two
within 1e-2 (Adam's first updates are +-lr wherever a gradient is tiny, so float32 rounding
of near-zero gradients moves the trajectories apart by up to about lr).

Compile time: the 784-256-128-10 Adam training step to its first finished step, each in a
fresh pinned process, ``--compile-rounds`` rounds in shuffled order: graphc ``gc.compile`` with
an empty cache (cold) and then with that cache (cached), against JAX's first call (trace,
compile, run); ``--compile-torch`` adds ``torch.compile``'s first step (tens of seconds each).
The library's import is timed apart and not counted.

Peers are optional extras (``pip install -e ".[bench]"``); a missing one shows as n/a. The
results go to the ``-o`` JSON file (``.partial.json`` beside it after every round) and
``benchmarks/render.py`` turns them into RESULTS.md and the README tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import select
import shlex
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
ROOT = HERE.parent

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
EPOCH_SAMPLES = 60_000
CONTESTANTS = [
    "graphc",
    "numpy",
    "torch eager (foreach)",
    "torch eager (fused)",
    "torch.compile",
    "JAX jit",
]
PEERS = CONTESTANTS[1:]
BARE = " bare entry"  # suffix of the labelled extra column: the compiled entry, nothing checked
LOSS_RTOL = (1e-4, 1e-2)  # first step's loss (same weights), and the next two steps' losses
SEED = 12
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def epoch_case(n: int) -> str:
    return f"epoch {n:,} b128 adam"


# ------------------------------------------------------------------------------------ worker


def set_threads(n: int) -> None:
    """Fix every library's pool to ``n`` threads (called before any of them is imported)."""
    set_env_threads(os.environ, n)


def set_env_threads(env: Any, n: int) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GRAPHC_THREADS"):
        env[var] = str(n)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "multi_thread_eigen" not in f]
    if n == 1:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    env["XLA_FLAGS"] = " ".join(flags)


def runq_wait_s() -> float:
    """Seconds this process's threads have spent runnable but waiting for a core (the second
    field of ``/proc/self/task/*/schedstat``; 0 where the kernel does not provide it)."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        return 0.0
    return total / 1e9


def block_us(
    fn: Callable[[], Any], sync: Callable[[], Any], seconds: float, hint: int = 0
) -> tuple[float, int]:
    """(mean time of one call in us, calls timed) over a loop of at least ``seconds`` after one
    warm-up call. The loop runs in chunks of about a quarter block (``hint``: the calls an
    earlier block took, 0 if none), each ended by ``sync``, until ``seconds`` have passed; a
    call of at least ``max(2 * seconds, 0.5)`` s is timed once (the warm-up is the sample)."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    if first >= max(2 * seconds, 0.5):
        return first * 1e6, 1
    chunk = max(1, (hint or int(seconds / max(first, 1e-7))) // 4)
    calls = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(chunk):
            fn()
        sync()
        calls += chunk
        t = time.perf_counter() - t0
        if t >= seconds:
            return t / calls * 1e6, calls


def time_us(fn: Callable[[], Any], *, min_time: float, repeats: int) -> float:
    """Median over ``repeats`` blocks (``block_us``) of the time of one call, in us."""
    return statistics.median(block_us(fn, _none, min_time)[0] for _ in range(repeats))


def cpu_ticks() -> tuple[int, int]:
    """(busy clock ticks of the whole machine incl. steal, this process's own ticks) from
    ``/proc/stat`` and ``/proc/self/stat``; (0, 0) where they cannot be read."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        # user nice system idle iowait irq softirq steal; own: utime, stime (fields 14, 15)
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], int(own[11]) + int(own[12])
    except (OSError, ValueError, IndexError):
        return 0, 0


def make(kind: str, spec, w, x, y, threads: int):
    import peers as P

    cls = {c.label: c for c in [P.GraphcPeer, *P.PEERS]}[kind]
    obj = cls(spec, w, x, y)
    if kind == "graphc":
        obj.model.threads = threads
    return obj


def build_cases(kind: str, label: str, threads: int, only: str, epoch_n: int, res: dict):
    """Every case of this contestant: a list of (``case|column``, call, sync); losses and the
    reasons a case could not be built go into ``res``."""
    import numpy as np
    import peers as P

    def wanted(case: str) -> bool:
        return not only or any(o.strip() and o.strip() in case for o in only.split(","))

    timed: list[tuple[str, Callable, Callable]] = []

    def add(case: str, build: Callable[[], Any]) -> None:
        try:
            build()
        except P.Missing as e:
            res["notes"][label] = str(e)
        except Exception as e:  # a peer failing on this machine is a result, not a crash
            res["notes"][f"{label} / {case}"] = (
                f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            )
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()

    # GEMM through the public call (predict(out=) for graphc, matmul(out=) for numpy)
    for s in GEMM_SIZES:
        case = f"gemm {s}"
        if not wanted(case) or kind not in ("graphc", "numpy"):
            continue
        rng = np.random.default_rng(0)
        a = rng.standard_normal((s, s)).astype(np.float32)
        b = rng.standard_normal((s, s)).astype(np.float32)
        out = np.empty((s, s), np.float32)

        def build(s=s, a=a, b=b, out=out, case=case):
            if kind == "numpy":
                timed.append((f"{case}|{label}", lambda: np.matmul(a, b, out=out), _none))
                return
            _model, call, bare = P.graphc_gemm(a, b, out, threads)
            if np.abs(call() - a.astype(np.float64) @ b).max() > 1e-3 * s:
                raise AssertionError(f"{label} GEMM n={s} differs from float64 numpy")
            timed.append((f"{case}|{label}", call, _none))
            timed.append((f"{case}|{label}{BARE}", bare, _none))

        add(case, build)

    for cid, sizes_, act, loss, opt, lr, batch in TRAIN_CASES:
        if not wanted(cid):
            continue
        spec = P.Spec(sizes_, act, loss, opt, lr)
        w = P.init_weights(spec)
        x, y = P.make_data(spec, batch)

        def build(spec=spec, w=w, x=x, y=y, cid=cid):
            c = make(kind, spec, w, x, y, threads)
            losses = []
            for _ in range(3):
                c.step()
                c.sync()
                losses.append(c.loss())
            res["losses"][cid] = losses
            timed.append((f"{cid}|{label}", c.step, c.sync))
            if kind == "graphc":
                timed.append((f"{cid}|{label}{BARE}", c.step_bare, _none))

        add(cid, build)

    for cid, sizes_, batch in INFER_CASES:
        if not wanted(cid):
            continue
        spec = P.Spec(sizes_, "relu", "ce", "sgd", 0.01)
        w = P.init_weights(spec)
        x, y = P.make_data(spec, batch)

        def build(spec=spec, w=w, x=x, y=y, cid=cid):
            c = make(kind, spec, w, x, y, threads)
            res["losses"][cid] = [float(np.asarray(c.infer()).ravel()[0])]
            timed.append((f"{cid}|{label}", c.infer, _none))
            if kind == "graphc":
                timed.append((f"{cid}|{label}{BARE}", c.infer_bare, _none))

        add(cid, build)

    cid = epoch_case(epoch_n)
    if wanted("epoch"):
        spec = P.Spec((784, 256, 128, 10), "relu", "ce", "adam", 1e-3)
        w = P.init_weights(spec)
        xe, ye = P.make_data(spec, epoch_n, seed=3)
        seeds = iter(range(10**6))

        def build(spec=spec, w=w):
            c = make(kind, spec, w, xe[:128], ye[:128], threads)
            calls = []  # the samples every epoch call saw: the cell states it was 60,000

            def one() -> None:
                c.epoch(xe, ye, 128, next(seeds))
                calls.append(len(xe))

            res["epoch_samples"] = calls
            # One untimed epoch: JAX and torch.compile compile the last, shorter batch's shape
            # (60,000 = 468 x 128 + 96) at its first sight, which no timed epoch should carry.
            one()
            c.sync()
            timed.append((f"{cid}|{label}", one, c.sync))

        add(cid, build)
    return timed


def worker(args) -> int:
    """A contestant's process: build, answer ``ready``, then time one block of every case per
    ``round`` command read from stdin, one JSON line per answer."""
    proto = os.fdopen(os.dup(1), "w")  # the answers; libraries' prints go to stderr
    os.dup2(2, 1)
    threads = args.worker_threads
    set_threads(threads)
    t0 = time.perf_counter()
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(threads)
    except ImportError:
        pass
    if args.worker.startswith("torch"):
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    sys.path.insert(0, str(HERE))
    res: dict[str, Any] = {"notes": {}, "losses": {}}
    timed = build_cases(args.worker, args.label, threads, args.only, args.epoch_samples, res)
    res["build_s"] = time.perf_counter() - t0
    res["keys"] = [k for k, _, _ in timed]
    res["python"] = sys.executable
    if args.worker == "graphc":
        res["graphc"] = graphc_origin()

    def answer(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    answer({"ready": res})
    hints: dict[str, int] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "pin":
            for tid in os.listdir("/proc/self/task"):
                try:
                    os.sched_setaffinity(int(tid), cmd["cores"])
                except OSError:
                    pass
            answer({"pinned": sorted(os.sched_getaffinity(0))})
        elif cmd["op"] == "round":
            order = list(timed)
            random.Random(cmd["seed"]).shuffle(order)
            out: dict[str, list[float]] = {}
            notes: dict[str, str] = {}
            for key, fn, sync in order:
                load = os.getloadavg()[0]
                (b0, o0), w0, t1 = cpu_ticks(), runq_wait_s(), time.perf_counter()
                try:
                    us, hints[key] = block_us(fn, sync, cmd["block"], hints.get(key, 0))
                except Exception as e:
                    notes[key] = f"{type(e).__name__}: {str(e)[:160]}"
                    continue
                wall = time.perf_counter() - t1
                (b1, o1), wait = cpu_ticks(), (runq_wait_s() - w0) / wall
                # other processes' CPU time over the block, in cores (ticks of 1/CLK_TCK s)
                foreign = max(0, (b1 - b0) - (o1 - o0)) / TICK / wall
                # us per call, run-queue wait / wall, 1-min load, block wall s, foreign cores
                out[key] = [us, wait, load, wall, foreign]
            answer({"samples": out, "notes": notes})
        else:
            answer({"peak_rss_mb": peak_rss_mb(), "epoch_samples": res.get("epoch_samples")})
            break
    return 0


def graphc_origin() -> dict[str, str]:
    """Where this interpreter's graphc lives and its git commit (``git describe`` style)."""
    import graphc

    src = Path(graphc.__file__).resolve().parent.parent
    rev = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short=7", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {"path": str(src), "rev": rev + ("+dirty" if dirty else "")}


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


def probe(which: str) -> int:
    """One fresh-process measurement: import the library (timed apart), then build the
    784-256-128-10 Adam training step and finish its first step; prints JSON seconds."""
    if which == "origin":
        print(json.dumps(graphc_origin()))
        return 0
    sys.path.insert(0, str(HERE))
    import peers as P

    spec = P.Spec((784, 256, 128, 10), "relu", "ce", "adam", 1e-3)
    w = P.init_weights(spec)
    x, y = P.make_data(spec, 128)
    t0 = time.perf_counter()
    if which == "graphc":
        import graphc as gc
    elif which == "jax":
        import jax
        import jax.numpy

        jax.devices()  # the backend's start is part of the import, not of the compile
    else:
        import torch  # noqa: F401
    t1 = time.perf_counter()
    if which == "graphc":
        xin = gc.input("x", ("N", 784))
        h = xin
        for i, width in enumerate((256, 128, 10)):
            h = gc.dense(h, width, None if i == 2 else "relu", name=f"fc{i + 1}")
        loss = gc.softmax_cross_entropy(h, gc.input("y", ("N",), dtype="i32"))
        m = gc.compile(h, loss, gc.Adam(lr=1e-3), name="bench")
        m.train_step(x, y)
    elif which == "jax":
        P.JaxPeer(spec, w, x, y)  # jit: trace, compile, run one step and one inference
    else:
        P.TorchCompilePeer(spec, w, x, y)
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "seconds": t2 - t1}))
    return 0


def compile_times(
    rounds: int, threads: int, pythons: dict[str, str], torch_too: bool, rng: random.Random
) -> dict[str, list[dict]]:
    """Seconds to the first finished training step of 784-256-128-10 Adam, each in a fresh
    pinned process, rounds in a shuffled order: graphc cold (empty cache) then cached (the same
    cache) for every graphc interpreter in ``pythons`` (label -> python), JAX's first call,
    optionally torch.compile's first step."""
    out: dict[str, list[dict]] = {}
    units: list[list[tuple[str, str, str]]] = [
        [(f"{lab} cold", py, "graphc"), (f"{lab} cached", py, "graphc")]
        for lab, py in pythons.items()
    ]
    units.append([("JAX first call", sys.executable, "jax")])
    if torch_too:
        units.append([("torch.compile first step", sys.executable, "torch")])
    env = dict(os.environ)
    set_env_threads(env, threads)
    for _ in range(rounds):
        rng.shuffle(units)
        for unit in units:
            with tempfile.TemporaryDirectory() as d:
                env["GRAPHC_CACHE_DIR"] = d
                for label, py, which in unit:
                    load = os.getloadavg()[0]
                    try:
                        r = subprocess.run(
                            [*pin(threads), py, str(Path(__file__).resolve()), "--probe", which],
                            env=env,
                            cwd=d,  # no graphc of the working directory shadows the interpreter's
                            capture_output=True,
                            text=True,
                            check=False,
                            timeout=300,
                        )
                    except subprocess.TimeoutExpired:
                        print(f"compile probe {label}: no answer in 300 s", file=sys.stderr)
                        continue
                    if r.returncode == 0:
                        t = json.loads(r.stdout.strip().splitlines()[-1])
                        out.setdefault(label, []).append({**t, "load": load})
                    else:
                        print(f"compile probe {label} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
    return out


def pin(threads: int, first: int = 0) -> list[str]:
    """``taskset -c`` the ``threads`` cores from the ``first``-th one this process may use
    (nothing when taskset is missing)."""
    cores = sorted(os.sched_getaffinity(0))
    sel = [cores[(first + i) % len(cores)] for i in range(min(threads, len(cores)))]
    if shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(map(str, sel))]


# ------------------------------------------------------------------------------------ parent


def machine() -> dict[str, str]:
    """CPU model, cores, vector flags, and library versions."""
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
    info["cores"] = str(len(os.sched_getaffinity(0)))
    for mod in ("numpy", "llvmlite", "torch", "jax", "jaxlib"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = "not installed"
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=7", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    info["graphc commit"] = rev or "?"
    return info


class Worker:
    """The parent's handle on one contestant's worker process."""

    def __init__(self, label: str, kind: str, python: str, threads: int, core: int, args) -> None:
        self.label, self.kind = label, kind
        env = dict(os.environ)
        set_env_threads(env, threads)
        cmd = [
            *pin(threads, core),
            python,
            str(Path(__file__).resolve()),
            "--worker",
            kind,
            "--label",
            label,
            "--worker-threads",
            str(threads),
            "--only",
            args.only,
            "--epoch-samples",
            str(args.epoch_samples),
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, cwd="/"
        )

    def ask(self, cmd: dict | None, timeout: float) -> dict:
        """Send ``cmd`` (None: only read) and wait up to ``timeout`` s for the JSON answer."""
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"no answer in {timeout:.0f} s (exit {self.proc.poll()})")
        return json.loads(line)

    def close(self) -> dict:
        try:
            return self.ask({"op": "quit"}, 60)
        except (RuntimeError, OSError, ValueError) as e:
            return {"error": str(e)}
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


BUILD_FIRST = ["torch.compile", "JAX jit", "graphc"]  # the longest builds start first


def build_workers(threads: int, lineup: list[tuple[str, str, str]], args, res: dict) -> dict:
    """Start every contestant's worker and wait for it to build, ``cores // threads`` at a
    time (builds never oversubscribe the cores: spinning thread pools would make them crawl);
    a one-thread worker builds on the core of its slot. Returns label -> Worker, in the
    lineup's order; a worker that fails or exceeds ``--build-timeout`` is noted and dropped."""
    slots = list(range(max(1, len(os.sched_getaffinity(0)) // threads)))
    rank = {k: i for i, k in enumerate(BUILD_FIRST)}
    pending = sorted(lineup, key=lambda c: rank.get(c[0], len(rank)))
    running: dict[Any, tuple[str, Worker, int, float]] = {}  # stdout -> label, worker, slot
    done: dict[str, Worker] = {}
    while pending or running:
        while pending and slots:
            label, kind, python = pending.pop(0)
            slot = slots.pop(0)
            print(f"{threads} thread(s): building {label} ...", file=sys.stderr, flush=True)
            w = Worker(label, kind, python, threads, slot if threads == 1 else 0, args)
            running[w.proc.stdout] = (label, w, slot, time.perf_counter())
        ready, _, _ = select.select(list(running), [], [], 5.0)
        now = time.perf_counter()
        for out, (label, w, slot, started) in list(running.items()):
            if out not in ready and now - started < args.build_timeout:
                continue
            del running[out]
            slots.append(slot)
            try:
                if out not in ready:
                    raise RuntimeError(f"no answer in {args.build_timeout:.0f} s")
                res["workers"][label] = w.ask(None, 1.0)["ready"]
                done[label] = w
            except (RuntimeError, ValueError, KeyError) as e:
                res["notes"][label] = f"worker did not start: {e}"
                w.close()
    built = res["workers"]
    res["workers"] = {label: built[label] for label, _, _ in lineup if label in built}
    return {label: done[label] for label, _, _ in lineup if label in done}


def phase(threads: int, lineup: list[tuple[str, str, str]], args, rng, save, until: float) -> dict:
    """One thread count: start the workers, then ``args.rounds`` shuffled rounds, fewer if
    another round would end after ``until`` (a ``time.perf_counter()`` value)."""
    res: dict[str, Any] = {
        "workers": {},
        "orders": [],
        "samples": {},
        "notes": {},
        "round_wall_s": [],
    }
    t0 = time.perf_counter()
    workers = build_workers(threads, lineup, args, res)
    res["build_wall_s"] = time.perf_counter() - t0
    first = sorted(os.sched_getaffinity(0))[0]
    for w in workers.values():
        if threads == 1:
            w.ask({"op": "pin", "cores": [first]}, 30)
    for r in range(args.rounds):
        t1 = time.perf_counter()
        longest = max(res["round_wall_s"], default=0.0)
        if r >= 3 and t1 + longest > until:
            res["notes"]["rounds"] = (
                f"stopped after {r} of {args.rounds} rounds: --budget-min would be exceeded"
            )
            print(f"{threads} thread(s): {res['notes']['rounds']}", file=sys.stderr, flush=True)
            break
        order = list(workers)
        rng.shuffle(order)
        res["orders"].append(order)
        for label in order:
            t2 = time.perf_counter()
            try:
                ans = workers[label].ask(
                    {"op": "round", "block": args.block, "seed": rng.randrange(2**31)},
                    args.round_timeout,
                )
            except (RuntimeError, ValueError, OSError) as e:
                res["notes"][f"{label} round {r}"] = str(e)
                continue
            for key, s in ans["samples"].items():
                res["samples"].setdefault(key, []).append(s)
            res.setdefault("round_s", {}).setdefault(label, []).append(time.perf_counter() - t2)
            res["notes"].update(ans.get("notes", {}))
            time.sleep(args.gap)
        res["round_wall_s"].append(time.perf_counter() - t1)
        print(
            f"{threads} thread(s): round {r + 1}/{args.rounds} in {time.perf_counter() - t1:.0f} s"
            f" (load {os.getloadavg()[0]:.2f}; order {', '.join(order)})",
            file=sys.stderr,
            flush=True,
        )
        save()
    for label, w in workers.items():
        res["workers"][label].update(w.close())
    res["wall_s"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=9, help="timed blocks per cell (default 9)")
    ap.add_argument("--block", type=float, default=0.2, help="seconds per timed block")
    ap.add_argument("--gap", type=float, default=0.2, help="pause between contestants, s")
    ap.add_argument("--contestants", default=",".join(CONTESTANTS))
    ap.add_argument(
        "--before",
        default=None,
        metavar="PYTHON",
        help="also graphc as installed for this interpreter (an older commit), as graphc@REV",
    )
    ap.add_argument("-o", "--output", default=None, help="the results (JSON); RESULTS.md beside")
    ap.add_argument("--only", default="", help="run only cases whose name contains one of these")
    ap.add_argument("--epoch-samples", type=int, default=EPOCH_SAMPLES)
    ap.add_argument("--compile-rounds", type=int, default=3, help="0: no compile-time runs")
    ap.add_argument("--compile-torch", action="store_true", help="also torch.compile's first step")
    ap.add_argument("--seed", type=int, default=SEED, help="seeds the contestants' orders")
    ap.add_argument(
        "--budget-min",
        type=float,
        default=0,
        help="run fewer rounds (at least 3) where the run would last longer than this (minutes)",
    )
    ap.add_argument("--build-timeout", type=float, default=900)
    ap.add_argument("--round-timeout", type=float, default=300)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--label", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe is not None:
        return probe(args.probe)
    if args.worker is not None:
        return worker(args)

    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    info = machine()
    lineup = [(c, c, sys.executable) for c in args.contestants.split(",") if c]
    try:
        here = graphc_origin()
        info["graphc"] = here["path"]
        if Path(here["path"]) != ROOT:
            print(
                f"warning: this interpreter's graphc is {here['path']}, not {ROOT}: the graphc "
                "contestant runs that one (install this checkout: pip install -e .)",
                file=sys.stderr,
            )
    except ImportError:
        info["graphc"] = "not installed"
    pythons = {"graphc": sys.executable} if "graphc" in args.contestants.split(",") else {}
    if args.before:
        origin = subprocess.run(
            [args.before, str(Path(__file__).resolve()), "--probe", "origin"],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        if origin.returncode != 0:
            print(f"--before {args.before}: {origin.stderr[-1000:]}", file=sys.stderr)
            return 2
        rev = json.loads(origin.stdout.strip().splitlines()[-1])["rev"]
        before = f"graphc@{rev}"
        lineup.insert(1, (before, "graphc", args.before))
        pythons[before] = args.before
        info["before"] = f"{before} ({args.before})"
    cmdline = "python benchmarks/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    data: dict[str, Any] = {
        "command": cmdline.strip(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": info,
        "settings": {
            k: getattr(args, k) for k in ("rounds", "block", "gap", "seed", "epoch_samples")
        },
        "load_start": os.getloadavg(),
        "lineup": [lab for lab, _, _ in lineup],
        "runs": {},
    }
    out = Path(args.output) if args.output else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)

    def save(final: bool = False) -> None:
        if out is None:
            return
        target = out if final else out.with_suffix(".partial.json")
        target.write_text(json.dumps(data, indent=1))

    ths = [int(t) for t in args.threads.split(",")]
    for i, th in enumerate(ths):
        data["runs"][str(th)] = run = {}
        # this phase's share of what is left of the budget, less its compile-time runs
        left = t0 + 60 * args.budget_min - time.perf_counter() if args.budget_min else 1e9
        until = time.perf_counter() + left / (len(ths) - i) - 20 * args.compile_rounds
        run.update(phase(th, lineup, args, rng, save, until))
        if args.compile_rounds and (not args.only or "compile" in args.only):
            print(f"{th} thread(s): compile times ...", file=sys.stderr, flush=True)
            run["compile"] = compile_times(
                args.compile_rounds, th, pythons, args.compile_torch, rng
            )
        save()
    data["load_end"] = os.getloadavg()
    data["wall_s"] = time.perf_counter() - t0
    save(final=True)
    if out is not None:
        out.with_suffix(".partial.json").unlink(missing_ok=True)
    sys.path.insert(0, str(HERE))
    import render

    text = render.report(data)
    if out is not None:
        out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
