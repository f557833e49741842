"""Data-parallel scaling over MPI: 1 rank x 1 thread against K ranks x 1 thread.

    python benchmarks/bench_mpi.py                      # batches 256 and 1024, 1 and 2 ranks
    python benchmarks/bench_mpi.py --batches 256 --ranks 1,2,3 --epochs 2 --json out.json

The 784-256-128-10 relu network (softmax cross-entropy, SGD lr 0.01) trains on synthetic rows
(16384 by default) with ``fit``; every process runs one thread (GRAPHC_THREADS=1, and
``mpirun --bind-to core``). Figures:

- samples/s: rows trained per second of wall time over ``--epochs`` epochs after one warm-up
  epoch (rank 0's clock between two barriers for the distributed runs);
- efficiency: (samples/s with K ranks) / (K x samples/s of the one-process ``fit``, which runs
  a whole epoch in one native call: the best one process does);
- the split of a distributed step: compute (``train_grads`` on the rank's rows +
  ``apply_update``, timed alone) and the all-reduce of the gradient region (``MPI_Allreduce``
  of the same bytes, timed alone), from which benchmarks/README.md models larger clusters;
- PyTorch DistributedDataParallel (gloo backend, over 127.0.0.1) on the same network, batches
  and thread count, when torch is installed, as the ratio graphc / torch of samples/s.

The machine is shared: the load average before and after each run is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

FEATURES, HIDDEN, CLASSES = 784, (256, 128), 10


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((rows, FEATURES)).astype(np.float32),
        rng.integers(0, CLASSES, rows).astype(np.int32),
    )


# ------------------------------------------------------------------------------ graphc worker


def graphc_worker(args: argparse.Namespace) -> None:
    import graphc as gc

    x_in = gc.input("x", ("N", FEATURES))
    y_in = gc.input("y", ("N",), dtype="i32")
    h = gc.dense(gc.dense(x_in, HIDDEN[0], "relu", name="fc1"), HIDDEN[1], "relu", name="fc2")
    logits = gc.dense(h, CLASSES, name="fc3")
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, y_in), gc.SGD(lr=0.01), name="mlp")
    m.threads = 1
    x, y = data(args.rows)
    dist = "mpi" if args.distributed else None
    comm = gc.distributed.world() if dist else None
    fit = {"batch_size": args.batch, "verbose": 0, "distributed": dist}
    m.fit(x, y, epochs=1, **fit)  # warm-up
    if comm is not None:
        comm.Barrier()
    t0 = time.perf_counter()
    m.fit(x, y, epochs=1 + args.epochs, initial_epoch=1, **fit)
    if comm is not None:
        comm.Barrier()
    wall = time.perf_counter() - t0
    out = {"samples_per_s": args.epochs * args.rows / wall, "wall_s": wall}
    if comm is not None:
        out.update(split_times(m, comm, x, y, args.batch))
    if comm is None or comm.Get_rank() == 0:
        print("RESULT " + json.dumps(out), flush=True)


def split_times(m, comm, x, y, batch: int) -> dict:
    """Compute (train_grads + apply_update on this rank's rows) and all-reduce, timed apart."""
    from mpi4py import MPI

    from graphc.runtime.distributed import SplitStep, shard

    k, r = comm.Get_size(), comm.Get_rank()
    first, count = shard(batch, k, r)
    s = SplitStep(m, count)
    s.scale[...], s.lr[...] = count / batch, 0.0  # lr 0: the timing does not move the model
    arrays = s.arrays({"x": x[first : first + count], "y": y[first : first + count]})
    reps = 30

    def timed(fn) -> float:
        fn()
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps

    compute = timed(lambda: (s.grads(arrays, count), s.update(s.update_arrays, 1)))
    allreduce = timed(lambda: comm.Allreduce(MPI.IN_PLACE, s.grad, op=MPI.SUM))
    times = comm.allgather((compute, allreduce))
    return {
        "grad_bytes": int(s.grad.nbytes),
        "compute_ms": 1e3 * max(c for c, _ in times),
        "allreduce_ms": 1e3 * max(a for _, a in times),
    }


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
        tdist.destroy_process_group()


# ------------------------------------------------------------------------------------ driver


def result(text: str) -> dict:
    for line in text.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"no result in the worker's output:\n{text[-3000:]}")


def run_graphc(ranks: int, batch: int, args: argparse.Namespace) -> dict:
    me = [sys.executable, os.path.abspath(__file__), "--worker", "graphc", "--batch", str(batch)]
    me += ["--rows", str(args.rows), "--epochs", str(args.epochs)]
    env = dict(os.environ, GRAPHC_THREADS="1", OMP_NUM_THREADS="1")
    if ranks == 0:  # the one-process fit
        cmd = me
    else:
        cmd = [shutil.which("mpirun") or "mpirun", "--allow-run-as-root", "--oversubscribe"]
        cmd += ["--bind-to", "core" if ranks <= (os.cpu_count() or 1) else "none"]
        cmd += ["-np", str(ranks), *me, "--distributed"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=900)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return result(r.stdout)


def run_torch(ranks: int, batch: int, args: argparse.Namespace) -> dict | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
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
            ["taskset", "-c", str(rank % (os.cpu_count() or 1))] if shutil.which("taskset") else []
        )
        procs.append(subprocess.Popen(pre + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))  # fmt: skip
    outs = [p.communicate(timeout=900) for p in procs]
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
                f"| {r['batch']} | {t1 * 1e3:.1f} | {p} | {r['batch'] / p:g} | {ring * 1e3:.2f} "
                f"| {e_ring:.2f} | {rab * 1e3:.2f} | {e_rab:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="256,1024")
    ap.add_argument("--ranks", default="1,2", help="1 is the one-process fit; >1 MPI ranks")
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--worker", choices=("graphc", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "graphc":
        return graphc_worker(args)
    if args.worker == "torch":
        return torch_worker(args)
    batches = [int(b) for b in args.batches.split(",")]
    ranks = [int(k) for k in args.ranks.split(",")]
    print(f"# bench_mpi: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, {args.rows} rows, {args.epochs} epochs timed")  # fmt: skip
    print(
        "\n| batch | ranks | graphc samples/s | efficiency | compute ms | all-reduce ms "
        "| torch DDP samples/s | torch eff. | graphc / torch | load before/after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for batch in batches:
        base = tbase = None
        for k in ranks:
            before = loadavg()
            g = run_graphc(0 if k == 1 else k, batch, args)
            t = None if args.no_torch else run_torch(k, batch, args)
            after = loadavg()
            base = g["samples_per_s"] if k == 1 else base
            if t is not None and k == 1:
                tbase = t["samples_per_s"]
            eff = g["samples_per_s"] / (k * base) if base else float("nan")
            teff = t["samples_per_s"] / (k * tbase) if t and tbase else float("nan")
            row = {"batch": batch, "ranks": k, "graphc": g, "torch": t, "efficiency": eff,
                   "torch_efficiency": teff, "load": [before, after]}  # fmt: skip
            rows.append(row)
            ts = f"{t['samples_per_s']:.0f}" if t else "n/a"
            ratio = f"{g['samples_per_s'] / t['samples_per_s']:.2f}" if t else "n/a"
            print(f"| {batch} | {k} | {g['samples_per_s']:.0f} | {eff:.2f} | "
                  f"{g.get('compute_ms', float('nan')):.2f} | "
                  f"{g.get('allreduce_ms', float('nan')):.3f} | {ts} | {teff:.2f} | {ratio} "
                  f"| {before} / {after} |", flush=True)  # fmt: skip
    dist = [r for r in rows if "grad_bytes" in r["graphc"]]
    if dist:
        print(f"\ngradient region: {dist[0]['graphc']['grad_bytes']} bytes")
        print(cluster_model(rows, dist[0]["graphc"]["grad_bytes"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
