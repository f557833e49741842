"""Data-parallel scaling over MPI: 1 rank x 1 thread against K ranks x 1 thread (issue #17).

    python benchmarks/bench_mpi.py                # the issue's table (about 1-2 min on 2 idle cores)
    python benchmarks/bench_mpi.py --batches 256 --ranks 1,2,3 --repeats 5 --json out.json
    GRAPHC_MPI_WAIT=sleep python benchmarks/bench_mpi.py   # ranks nap in the all-reduce
    python benchmarks/bench_mpi.py --reduce auto,allreduce  # shared-memory window vs MPI_Allreduce

The 784-256-128-10 relu network (softmax cross-entropy, SGD lr 0.01) trains on synthetic rows
(16384 by default) with ``fit``; every process runs one thread (``GRAPHC_THREADS=1``, torch's
``set_num_threads(1)``) and the ranks are launched with ``mpirun --bind-to core`` (one core
each; ``--bind-to none --oversubscribe`` when there are more ranks than cores). Each
configuration runs ``--repeats`` times, interleaved (1 rank, K ranks, 1 rank, ...) so that a
burst of load from elsewhere hits both sides alike; the table gives the median. Figures:

- samples/s: rows trained per second of wall time over ``--epochs`` epochs after one warm-up
  epoch (rank 0's clock between two barriers for the distributed runs);
- efficiency: (samples/s with K ranks) / (K x samples/s of the one-process ``fit``, which runs
  a whole epoch in one native call: the best one process does);
- CPU wait: the time per step the process (rank 0) was runnable but not running, waiting for
  a core (the run-queue delay of ``/proc/thread-self/schedstat``). On idle cores it is ~0;
  when other work shares the cores it shows how much of a step was lost to it. Ranks meet at
  every step's all-reduce, so one descheduled rank stalls all of them (measured under load
  17: almost all of a 12-16 ms all-reduce was run-queue delay, 0.15 ms when both ranks run);
- the step's parts on the ranks, medians over one epoch of the same loop as the distributed
  fit: compute (gathering the rank's rows + ``train_grads``), the all-reduce of the gradient
  region (flags included: 940,600 bytes) as each rank sees it, and ``apply_update``;
- all-reduce: how the ranks summed the gradients (``GRAPHC_MPI_REDUCE``, ``--reduce``): "window"
  (an MPI-3 shared-memory window, what fit picks for ranks of one machine) or "allreduce"
  (``MPI_Allreduce``); with several modes each runs interleaved with the others;
- PyTorch DistributedDataParallel (gloo backend, over 127.0.0.1, each rank on its own core)
  on the same network, batches and thread count, when torch is installed, as the ratio
  graphc / torch of samples/s.

The load average before and after each configuration is printed beside it: figures measured
under load say what the code does on a shared host, not what it does on free cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

import numpy as np

FEATURES, HIDDEN, CLASSES = 784, (256, 128), 10
# Open MPI's own flags: one core per rank (its default for np <= 2, explicit here), and the
# oversubscription a run as root in a container may need.
MPIRUN_FLAGS = ["--allow-run-as-root", "--map-by", "core"]


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((rows, FEATURES)).astype(np.float32),
        rng.integers(0, CLASSES, rows).astype(np.int32),
    )


def cpu_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (nan where the kernel does
    not say: /proc/thread-self/schedstat needs Linux with schedstats)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) * 1e-9
    except (OSError, IndexError, ValueError):
        return float("nan")


# ------------------------------------------------------------------------------ graphc worker


def graphc_worker(args: argparse.Namespace) -> None:
    import graphc as gc

    m = build_mlp()
    x, y = data(args.rows)
    dist = "mpi" if args.distributed else None
    comm = gc.distributed.world() if dist else None
    fit = {"batch_size": args.batch, "verbose": 0, "distributed": dist}
    m.fit(x, y, epochs=1, **fit)  # warm-up
    if comm is not None:
        comm.Barrier()
    w0, t0 = cpu_wait(), time.perf_counter()
    m.fit(x, y, epochs=1 + args.epochs, initial_epoch=1, **fit)
    if comm is not None:
        comm.Barrier()
    wall, waited = time.perf_counter() - t0, cpu_wait() - w0
    steps = args.epochs * -(-args.rows // args.batch)
    out = {
        "samples_per_s": args.epochs * args.rows / wall,
        "wall_s": wall,
        "step_ms": 1e3 * wall / steps,
        "cpu_wait_ms": 1e3 * waited / steps,
    }
    if comm is not None:  # the update fit chose (GRAPHC_MPI_SHARD=auto: its window's probe)
        from graphc.runtime import distributed

        out["update"] = distributed.LAST_UPDATE
        probe = distributed.LAST_PROBE
        out["probe_ms"] = None if probe is None else [round(1e3 * t, 4) for t in probe]
        out.update(step_parts(m, comm, x, y, args.batch, distributed.LAST_UPDATE))
    if comm is None or comm.Get_rank() == 0:
        print("RESULT " + json.dumps(out), flush=True)


def step_parts(m, comm, x, y, batch: int, update: str) -> dict:
    """Medians over one epoch of the distributed fit's step (the loop of
    graphc.runtime.distributed, lr 0 so the model does not move), part by part, the slowest
    rank's: compute (rows gathered + train_grads), all-reduce, apply_update. With the summed
    or the sharded update (ranks sharing memory, the fit's native epochs): "all-reduce" is the
    window's first barrier and the flags' sum, "update" the gradients' sum over the slots
    inside the update (all elements, or this rank's shard) and the second barrier
    (SplitStep.shard_update), as the call-out runs them (the fit's native epochs with spinning
    waits run them natively instead, without the Python and MPI calls). ``update``: the one
    the fit ran ("shard", "summed", "whole"), which this step runs too."""
    from mpi4py import MPI

    from graphc.runtime.distributed import (
        SplitStep,
        choose_reduce,
        reduce_mode,
        shard,
        wait_mode,
    )

    k, r = comm.Get_size(), comm.Get_rank()
    n = len(x)
    first, count = shard(batch, k, r)
    how = choose_reduce(comm, reduce_mode())  # as fit chooses (GRAPHC_MPI_REDUCE)
    before = os.environ.get("GRAPHC_MPI_SHARD")
    os.environ["GRAPHC_MPI_SHARD"] = "1" if update == "shard" else "0"  # no second probe
    try:
        s = SplitStep(m, count, comm, how)
    finally:
        if before is None:
            del os.environ["GRAPHC_MPI_SHARD"]
        else:
            os.environ["GRAPHC_MPI_SHARD"] = before
    s.lr[...] = 0.0
    sharded = s.plan is not None
    if sharded:  # as fit's native epochs (with GRAPHC_MPI_SHARD=1 on the shared parameters)
        s.share_params(m)
        s.sharding = True
        gargs = list(s.grads._args)
        s.grads._args[0] = s.grads._frame[1] = s.params_at
    xs, ys = np.empty((count, FEATURES), np.float32), np.empty(count, np.int32)
    arrays = s.arrays({"x": xs, "y": ys})
    order = np.random.default_rng([0, 99]).permutation(n)
    parts: dict[str, list[float]] = {"compute": [], "allreduce": [], "update": []}
    napping = wait_mode() == "sleep"
    comm.Barrier()
    for lo in range(0, n - batch + 1, batch):
        t0 = time.perf_counter()
        idx = order[lo + first : lo + first + count]
        np.take(x, idx, axis=0, out=xs)
        np.take(y, idx, axis=0, out=ys)
        s.scale[...] = count / batch
        if s.row0 is not None:
            s.row0[...] = first
        s.grads(arrays, count, checked=False, scan=False)
        t1 = time.perf_counter()
        s.allreduce(comm, MPI, napping)  # as fit does (GRAPHC_MPI_WAIT, GRAPHC_MPI_REDUCE)
        t2 = time.perf_counter()
        if sharded:
            s.shard_update(m)
        else:
            s.update(s.update_arrays, 1, checked=False)
        t3 = time.perf_counter()
        parts["compute"].append(t1 - t0)
        parts["allreduce"].append(t2 - t1)
        parts["update"].append(t3 - t2)
    grad_bytes = int(s.reduced.nbytes)
    if sharded:
        s.sharding = False
        s.grads._args[0] = s.grads._frame[1] = gargs[0]
    s.close()
    med = {key: statistics.median(v) for key, v in parts.items()}
    everyone = comm.allgather(med)
    return {
        "reduce": how + (" + shards" if s.shares_params else " + summed" if sharded else ""),
        "grad_bytes": grad_bytes,
        **{f"{key}_ms": 1e3 * max(e[key] for e in everyone) for key in med},
    }


def timeline_worker(args: argparse.Namespace) -> None:
    """The distributed fit of ``graphc_worker`` with every step's all-reduce timed on every rank
    (graphc.runtime.distributed.TIMELINE); rank 0 prints the per-rank medians and where the
    fit's wall time went."""
    import graphc as gc
    from graphc.runtime import distributed as dist

    m = build_mlp()
    x, y = data(args.rows)
    comm = gc.distributed.world()
    fit = {"batch_size": args.batch, "verbose": 0, "distributed": "mpi"}
    m.fit(x, y, epochs=1, **fit)  # warm-up
    comm.Barrier()
    dist.TIMELINE = marks = []
    t0 = time.perf_counter_ns()
    m.fit(x, y, epochs=1 + args.epochs, initial_epoch=1, **fit)
    t1 = time.perf_counter_ns()
    dist.TIMELINE = None
    everyone = comm.gather((t0, t1, marks), root=0)
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps(timeline_summary(everyone, args)), flush=True)


def timeline_summary(everyone: list, args: argparse.Namespace) -> dict:
    """Per rank, over the timed fit (ms): ``work`` = from leaving one all-reduce to entering
    the next within an epoch (apply_update, the next rows gathered, train_grads, the Python
    call-out), ``wait`` = entering the all-reduce to leaving its first barrier (waiting for the
    later rank), ``sum`` = this rank's share of the sum, ``exit`` = the second barrier; medians
    and means. ``outside``: the fit's wall time not inside the epochs' step cycles (fit's
    set-up, the data checks, epoch boundaries), per fit and per step; ``late``: how much later
    rank 1 entered than rank 0 (median)."""
    steps = -(-args.rows // args.batch)
    out: dict = {"batch": args.batch}
    wall = max(t1 for _, t1, _ in everyone) - min(t0 for t0, _, _ in everyone)
    total = len(everyone[0][2])
    out["wall_step_ms"] = wall / 1e6 / total
    for r, (t0, t1, marks) in enumerate(everyone):
        a = np.asarray(marks, np.float64) / 1e6
        inner = [i for i in range(1, len(a)) if i % steps]  # not the first step of an epoch
        work = np.array([a[i, 0] - a[i - 1, 3] for i in inner])
        cycle = np.array([a[i, 3] - a[i - 1, 3] for i in inner])
        parts = {"work": work, "wait": a[:, 1] - a[:, 0], "sum": a[:, 2] - a[:, 1],
                 "exit": a[:, 3] - a[:, 2], "cycle": cycle}  # fmt: skip
        for key, v in parts.items():
            out[f"r{r}_{key}_med_ms"] = float(np.median(v))
            out[f"r{r}_{key}_mean_ms"] = float(np.mean(v))
        inside = cycle.sum() + (len(a) - len(inner)) * np.median(cycle)
        out[f"r{r}_outside_ms"] = (t1 - t0) / 1e6 - inside
    if len(everyone) > 1:
        late = np.asarray(everyone[1][2], np.float64)[:, 0] - np.asarray(everyone[0][2])[:, 0]
        out["late_med_ms"] = float(np.median(late)) / 1e6
    out["outside_per_step_ms"] = out["r0_outside_ms"] / total
    return out


def timeline(args: argparse.Namespace) -> None:
    """``--timeline``: ``timeline_worker`` on 2 ranks, ``--repeats`` times per batch size."""
    print(f"# timeline: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {loadavg()}")
    print(
        "\n| batch | wall ms/step | rank: work / wait / sum / exit ms (median; mean) "
        "| cycle median / mean ms | outside ms per fit (per step) | rank 1 later by ms |"
    )
    print("|---|---|---|---|---|---|")
    for b in (int(v) for v in args.batches.split(",")):
        for _ in range(args.repeats):
            me = [sys.executable, os.path.abspath(__file__), "--worker", "timeline"]
            me += ["--batch", str(b), "--rows", str(args.rows), "--epochs", str(args.epochs)]
            env = dict(os.environ, GRAPHC_THREADS="1", OMP_NUM_THREADS="1")
            r = subprocess.run([*mpirun_cmd(2), *me], capture_output=True, text=True, env=env,
                               check=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
            o = result(r.stdout)
            ranks = "; ".join(
                f"r{k} {o[f'r{k}_work_med_ms']:.3f} / {o[f'r{k}_wait_med_ms']:.3f} / "
                f"{o[f'r{k}_sum_med_ms']:.3f} / {o[f'r{k}_exit_med_ms']:.3f} "
                f"({o[f'r{k}_work_mean_ms']:.3f} / {o[f'r{k}_wait_mean_ms']:.3f})"
                for k in (0, 1)
            )
            print(f"| {b} | {o['wall_step_ms']:.3f} | {ranks} | {o['r0_cycle_med_ms']:.3f} / "
                  f"{o['r0_cycle_mean_ms']:.3f} | {o['r0_outside_ms']:.1f} "
                  f"({o['outside_per_step_ms']:.3f}) | {o['late_med_ms']:.3f} |", flush=True)  # fmt: skip
    print(f"# load after: {loadavg()}")


# ------------------------------------------------------------------------------- torch worker


def torch_worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as tdist

    torch.set_num_threads(1)
    rank, world = args.rank, args.world
    if world > 1:
        tdist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN[0]),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN[0], HIDDEN[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN[1], CLASSES),
    )
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = data(args.rows)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(e: int) -> None:
        order = torch.from_numpy(np.random.default_rng([0, e]).permutation(args.rows))
        for lo in range(0, args.rows, args.batch):
            idx = order[lo : lo + args.batch]
            q, rem = divmod(len(idx), world)
            first = rank * q + min(rank, rem)
            mine = idx[first : first + q + (1 if rank < rem else 0)]
            opt.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks; equal slices make that the global mean
            loss_fn(model(xt[mine]), yt[mine]).backward()
            opt.step()

    epoch(0)
    if world > 1:
        tdist.barrier()
    t0 = time.perf_counter()
    for e in range(1, 1 + args.epochs):
        epoch(e)
    if world > 1:
        tdist.barrier()
    wall = time.perf_counter() - t0
    if rank == 0:
        print("RESULT " + json.dumps({"samples_per_s": args.epochs * args.rows / wall}), flush=True)
    if world > 1:
        # measured; skip gloo's teardown, which sometimes ends in std::terminate under load
        sys.stderr.flush()
        os._exit(0)


# ------------------------------------------------------------------------- the ceiling worker


def build_mlp():
    import graphc as gc

    x_in = gc.input("x", ("N", FEATURES))
    y_in = gc.input("y", ("N",), dtype="i32")
    h = gc.dense(gc.dense(x_in, HIDDEN[0], "relu", name="fc1"), HIDDEN[1], "relu", name="fc2")
    logits = gc.dense(h, CLASSES, name="fc3")
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, y_in), gc.SGD(lr=0.01), name="mlp")
    m.threads = 1
    return m


def ceiling_worker(args: argparse.Namespace) -> None:
    """One process, pinned to core ``--core``, no MPI: the gather of ``--batch`` rows (numpy),
    ``train_grads`` on them (the split step's compute)
    and ``apply_update`` (lr 0), and the one-process ``train_step`` on the same rows (lr 0),
    timed call by call; prints the medians. With ``--forever`` it
    runs the same loop until killed (the load on the other core), printing READY first."""
    from graphc.runtime.distributed import SplitStep

    os.sched_setaffinity(0, {args.core})
    m = build_mlp()
    x, y = data(args.rows)
    b = args.batch
    s = SplitStep(m, b)
    s.lr[...] = 0.0
    xs, ys = np.empty((b, FEATURES), np.float32), np.empty(b, np.int32)
    arrays = s.arrays({"x": xs, "y": ys})
    s.scale[...] = 1.0
    order = np.random.default_rng([0, 99]).permutation(args.rows)
    steps = args.rows // b
    gather, comp, upd, one = [], [], [], []
    fused = m.entries["train_step"]  # forward, backward and update in one call (lr 0)
    fused_in = [xs, ys, np.zeros((), np.float32)]
    i = 0
    if args.forever:
        print("READY", flush=True)
    deadline = time.perf_counter() + args.seconds
    while args.forever or time.perf_counter() < deadline:
        lo = (i % steps) * b
        t0 = time.perf_counter()
        np.take(x, order[lo : lo + b], axis=0, out=xs)
        np.take(y, order[lo : lo + b], axis=0, out=ys)
        tg = time.perf_counter()
        s.grads(arrays, b, checked=False, scan=False)
        t1 = time.perf_counter()
        s.update(s.update_arrays, 1, checked=False)
        t2 = time.perf_counter()
        fused.run(fused_in, b, scan=False)  # the one-process step on the same rows
        t3 = time.perf_counter()
        if i >= 20:  # warm
            gather.append(tg - t0)
            comp.append(t1 - tg)
            upd.append(t2 - t1)
            one.append(t3 - t2)
        i += 1
    out = {
        "gather_ms": 1e3 * statistics.median(gather),
        "compute_ms": 1e3 * statistics.median(comp),
        "update_ms": 1e3 * statistics.median(upd),
        "train_step_ms": 1e3 * statistics.median(one),
    }
    print("RESULT " + json.dumps(out), flush=True)


def run_ceiling(b: int, paired: bool, args: argparse.Namespace) -> dict:
    """``ceiling_worker`` on core 0 on ``b`` rows, alone or while a copy of it loads core 1."""
    me = [sys.executable, os.path.abspath(__file__), "--worker", "ceiling", "--batch", str(b)]
    me += ["--rows", str(args.rows)]
    env = dict(os.environ, GRAPHC_THREADS="1", OMP_NUM_THREADS="1")
    noise = None
    if paired:
        noise = subprocess.Popen(me + ["--core", "1", "--forever"], stdout=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
        assert noise.stdout is not None and noise.stdout.readline().strip() == "READY"
    try:
        r = subprocess.run(me + ["--core", "0", "--seconds", str(args.ceiling_seconds)],
                           capture_output=True, text=True, env=env, check=True, timeout=120)  # fmt: skip
    finally:
        if noise is not None:
            noise.kill()
            noise.wait()
    return result(r.stdout)


def ceiling(args: argparse.Namespace) -> None:
    """Item 1 of issue #17's last stop: how much the other core's load alone (the same compute
    in another process, no MPI) slows a core's split step, interleaved alone / paired; and the
    efficiency that bounds: E <= T1 / (2 T2), T1 the one process's gather + train_step on B rows
    alone, T2 gather + train_grads on B/2 rows + apply_update, paired (no all-reduce, no other
    overhead)."""
    sizes = [int(b) for b in args.batches.split(",")]
    runs: dict[tuple[int, bool], list[dict]] = {(b, p): [] for b in sizes for p in (False, True)}
    print(f"# ceiling: load {loadavg()}, {args.repeats} interleaved rounds, median")
    for _ in range(args.repeats):
        for b in sizes:
            for p in (False, True):
                runs[(b, p)].append(run_ceiling(b, p, args))
    print("\n| rows | gather alone / paired ms | train_grads alone / paired ms | slowdown "
          "| apply_update alone / paired ms | train_step alone / paired ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    med = {}
    for b in sizes:
        a = {k: statistics.median(r[k] for r in runs[(b, False)]) for k in runs[(b, False)][0]}
        p = {k: statistics.median(r[k] for r in runs[(b, True)]) for k in runs[(b, True)][0]}
        med[b] = (a, p)
        print(f"| {b} | {a['gather_ms']:.3f} / {p['gather_ms']:.3f} "
              f"| {a['compute_ms']:.3f} / {p['compute_ms']:.3f} "
              f"| {p['compute_ms'] / a['compute_ms']:.3f} | {a['update_ms']:.3f} / "
              f"{p['update_ms']:.3f} | {a['train_step_ms']:.3f} / {p['train_step_ms']:.3f} |")  # fmt: skip
    for b in sizes:
        if b // 2 in med:
            t1 = med[b][0]["gather_ms"] + med[b][0]["train_step_ms"]
            p = med[b // 2][1]
            t2 = p["gather_ms"] + p["compute_ms"] + p["update_ms"]
            t2s = t2 - p["update_ms"] / 2
            print(f"B={b}: T1 {t1:.3f} ms, T2 {t2:.3f} ms -> E <= {t1 / (2 * t2):.3f}; "
                  f"with the update sharded over 2 ranks (T2 {t2s:.3f}) E <= "
                  f"{t1 / (2 * t2s):.3f}")  # fmt: skip
    print(f"# load after: {loadavg()}")


# ------------------------------------------------------------------------------------ driver


def result(text: str) -> dict:
    for line in text.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"no result in the worker's output:\n{text[-3000:]}")


def mpirun_cmd(ranks: int) -> list[str]:
    """``mpirun`` with the flags of this benchmark: one core per rank while there are enough."""
    cmd = [shutil.which("mpirun") or "mpirun", *MPIRUN_FLAGS]
    if ranks <= (os.cpu_count() or 1):
        cmd += ["--bind-to", "core"]
    else:
        cmd += ["--bind-to", "none", "--oversubscribe"]
    return cmd + ["-np", str(ranks)]


def run_graphc(ranks: int, batch: int, args: argparse.Namespace, reduce: str = "") -> dict:
    me = [sys.executable, os.path.abspath(__file__), "--worker", "graphc", "--batch", str(batch)]
    me += ["--rows", str(args.rows), "--epochs", str(args.epochs)]
    env = dict(os.environ, GRAPHC_THREADS="1", OMP_NUM_THREADS="1")
    if reduce:
        mode, _, update = reduce.partition(":")
        env["GRAPHC_MPI_REDUCE"] = mode
        if update:
            env["GRAPHC_MPI_SHARD"] = {"shard": "1", "whole": "0"}[update]
    cmd = me if ranks == 1 else [*mpirun_cmd(ranks), *me, "--distributed"]
    r = subprocess.run(
        cmd, capture_output=True, text=True, env=env, check=False, timeout=600,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return result(r.stdout)


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_torch(ranks: int, batch: int, args: argparse.Namespace) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    procs = []
    for rank in range(ranks):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "torch"]
        cmd += ["--batch", str(batch), "--rows", str(args.rows), "--epochs", str(args.epochs)]
        cmd += ["--rank", str(rank), "--world", str(ranks)]
        pre = (
            ["taskset", "-c", str(rank % (os.cpu_count() or 1))]
            if shutil.which("taskset") and ranks > 1
            else []
        )
        procs.append(subprocess.Popen(pre + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True, env=env))  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"torch worker failed:\n{err[-3000:]}")
    return result(outs[0][0])


def cluster_model(
    rows: list[dict], grad_bytes: int, gbit: float = 25.0, alpha_us: float = 20.0
) -> str:
    """Efficiency on p nodes (one rank each, the global batch fixed) on paper:

    T(p) = T1 / p + A(p),   E(p) = T1 / (p T(p)) = 1 / (1 + p A(p) / T1)

    T1: the one-process step time at the global batch (measured here: batch / samples/s of
    the one-process fit); A(p): the all-reduce of S = grad_bytes bytes over links of
    ``gbit`` Gb/s with a per-message latency of ``alpha_us`` µs, as the bandwidth-optimal
    algorithms MPI picks for large messages (ring; Rabenseifner's reduce-scatter + allgather)
    move it: A(p) = 2 (p - 1) / p * S / bandwidth + latency terms, 2 (p - 1) alpha for the ring,
    2 log2(p) alpha for Rabenseifner. The compute of a slice is taken as T1 / p (optimistic
    at small slices: a GEMM of 4 rows runs far below peak) and nothing overlaps."""
    import math

    bw = gbit * 1e9 / 8
    lines = [
        f"\nModel: {gbit:g} Gb/s links, latency {alpha_us:g} us, S = {grad_bytes} bytes",
        "| batch | T1 ms | p | slice rows | ring A ms | ring E | Rabenseifner A ms | Rab. E |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["ranks"] != 1:
            continue
        t1 = r["batch"] / r["graphc"]["samples_per_s"]
        for p in (8, 64):
            wire = 2 * (p - 1) / p * grad_bytes / bw
            ring = wire + 2 * (p - 1) * alpha_us * 1e-6
            rab = wire + 2 * math.log2(p) * alpha_us * 1e-6
            e_ring, e_rab = 1 / (1 + p * ring / t1), 1 / (1 + p * rab / t1)
            lines.append(
                f"| {r['batch']} | {t1 * 1e3:.2f} | {p} | {r['batch'] / p:g} | {ring * 1e3:.2f} "
                f"| {e_ring:.2f} | {rab * 1e3:.2f} | {e_rab:.2f} |"
            )
    return "\n".join(lines)


def median_run(runs: list[dict]) -> dict:
    """The run with the median samples/s (its other figures with it); all samples/s kept."""
    ordered = sorted(runs, key=lambda g: g["samples_per_s"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["all_samples_per_s"] = [round(g["samples_per_s"]) for g in runs]
    out["all_updates"] = [g.get("update", "") for g in runs]  # auto: each launch's choice
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="256,1024")
    ap.add_argument("--ranks", default="1,2", help="1 is the one-process fit; >1 MPI ranks")
    ap.add_argument(
        "--reduce",
        default="auto",
        help="GRAPHC_MPI_REDUCE of the distributed runs, several comma-separated (auto,allreduce:"
        " the shared-memory window against MPI_Allreduce, interleaved); MODE:shard runs MODE with"
        " GRAPHC_MPI_SHARD=1 (each rank sums and updates a shard), MODE:whole with"
        " GRAPHC_MPI_SHARD=0 (the whole update on every rank); MODE alone leaves"
        " GRAPHC_MPI_SHARD as it is (auto, the default: each window times both and runs the"
        " faster): auto:whole,auto:shard,auto",
    )
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration (median)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="measure the split step's compute alone vs beside the same compute on the other "
        "core (no MPI), for --batches (give B and B/2)",
    )
    ap.add_argument(
        "--timeline",
        action="store_true",
        help="time every step's all-reduce on both ranks of a 2-rank fit (per-rank medians of "
        "the work between all-reduces, the wait, the sum; the fit's time outside the steps)",
    )
    ap.add_argument("--ceiling-seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    ap.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    ap.add_argument(
        "--worker", choices=("graphc", "torch", "ceiling", "timeline"), help=argparse.SUPPRESS
    )
    ap.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "graphc":
        return graphc_worker(args)
    if args.worker == "torch":
        return torch_worker(args)
    if args.worker == "ceiling":
        return ceiling_worker(args)
    if args.worker == "timeline":
        return timeline_worker(args)
    if args.ceiling:
        return ceiling(args)
    if args.timeline:
        return timeline(args)
    batches = [int(b) for b in args.batches.split(",")]
    reduces = [m.strip() for m in args.reduce.split(",") if m.strip()] or ["auto"]
    ranks = [int(k) for k in args.ranks.split(",")]
    if 1 not in ranks:
        ranks = [1, *ranks]  # the efficiency needs the one-process baseline
    torch = not args.no_torch and have_torch()
    start = time.perf_counter()
    print(f"# bench_mpi: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, {args.rows} rows, {args.epochs} epochs timed, median of "
          f"{args.repeats} interleaved runs; mpirun {' '.join(mpirun_cmd(2)[1:-2])}; "
          f"GRAPHC_MPI_WAIT={os.environ.get('GRAPHC_MPI_WAIT') or 'spin'}; "
          f"torch DDP: {'yes' if torch else 'not installed (or --no-torch)'}")  # fmt: skip
    print(
        "\n| batch | ranks | all-reduce | graphc samples/s | efficiency | step ms | CPU wait ms/step "
        "| compute / all-reduce / update ms | torch DDP samples/s | torch eff. | graphc / torch "
        "| load before / after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for batch in batches:
        before = loadavg()
        configs = [(k, m) for k in ranks for m in (reduces if k > 1 else [""])]
        g_runs: dict[tuple[int, str], list[dict]] = {c: [] for c in configs}
        t_runs: dict[int, list[dict]] = {k: [] for k in ranks}
        for _ in range(args.repeats):
            for k, mode in configs:
                g_runs[(k, mode)].append(run_graphc(k, batch, args, mode))
                if torch and mode in ("", reduces[0]):
                    t_runs[k].append(run_torch(k, batch, args))
        after = loadavg()
        base = statistics.median(g["samples_per_s"] for g in g_runs[(1, "")])
        tbase = statistics.median(t["samples_per_s"] for t in t_runs[1]) if torch else None
        for k, mode in configs:
            g = median_run(g_runs[(k, mode)])
            t = median_run(t_runs[k]) if torch else None
            eff = g["samples_per_s"] / (k * base)
            teff = t["samples_per_s"] / (k * tbase) if t and tbase else float("nan")
            label = g.get("reduce", "")
            if any(g["all_updates"]):  # the update each repeat's fit ran (auto: its probe's)
                label += " (fits: " + "/".join(u for u in g["all_updates"]) + ")"
            row = {"batch": batch, "ranks": k, "reduce": label, "graphc": g,
                   "torch": t, "efficiency": eff, "torch_efficiency": teff,
                   "load": [before, after]}  # fmt: skip
            rows.append(row)
            parts = (
                f"{g['compute_ms']:.2f} / {g['allreduce_ms']:.3f} / {g['update_ms']:.3f}"
                if "compute_ms" in g
                else ""
            )
            ts = f"{t['samples_per_s']:.0f}" if t else "n/a"
            ratio = f"{g['samples_per_s'] / t['samples_per_s']:.2f}" if t else "n/a"
            tes = f"{teff:.2f}" if t else "n/a"
            print(f"| {batch} | {k} | {row['reduce']} | {g['samples_per_s']:.0f} | {eff:.2f} "
                  f"| {g['step_ms']:.2f} "
                  f"| {g['cpu_wait_ms']:.2f} | {parts} | {ts} | {tes} | {ratio} "
                  f"| {before} / {after} |", flush=True)  # fmt: skip
    dist = [r for r in rows if "grad_bytes" in r["graphc"]]  # the first mode's rows first
    if dist:
        g = dist[0]["graphc"]
        print(f"\nall-reduced region: {g['grad_bytes']} bytes; all-reduce (median, on this "
              f"machine) {g['allreduce_ms']:.3f} ms = "
              f"{g['allreduce_ms'] * 1e6 / g['grad_bytes']:.3f} ns/byte")  # fmt: skip
        print(cluster_model(rows, g["grad_bytes"]))
    print(f"\n(benchmark wall time {time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
