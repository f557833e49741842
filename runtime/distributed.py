"""Data-parallel training over MPI (Open MPI through mpi4py): ``model.fit(..., distributed="mpi")``.

Launch K processes (ranks) with ``mpirun -np K python train.py``; every rank builds the same
model and calls ``fit`` with the same data and arguments. Then:

- rank 0's parameters, optimizer state (step counter included) and learning rate are broadcast
  to every rank before the first step, so a checkpoint loaded on rank 0 (or on all ranks)
  resumes the run, with the same or another number of ranks;
- every epoch draws the permutation of the one-process ``fit`` (``default_rng([seed, epoch])``)
  and cuts it into the same global mini-batches of ``batch_size`` rows (the last one partial);
  rank r takes the r-th of K nearly equal consecutive slices of each global batch (sizes
  ``B // K`` or ``B // K + 1``; a rank whose slice is empty contributes zero gradients);
- each rank runs ``NAME_train_grads`` (graphc.compiler.build_split) on its b rows with
  ``loss_scale = b / B`` and ``row0`` = the index of its first row in the global batch, which
  writes the gradients to the grad region at the front of the workspace (contiguous, laid out
  like the parameters); one in-place ``MPI_Allreduce`` (sum) of that region makes it the
  gradient of the mean loss over the global batch; ``NAME_apply_update`` then runs the
  optimizer update on every rank. The trajectory is the one-process trajectory with batch
  size B, up to the order of the floating-point sums; dropout masks depend on the global row
  index, so they match too. Ops whose value depends on the whole batch (none so far, batch
  normalization later) see only the rank's rows, as in PyTorch's DistributedDataParallel;
- the epoch loss comes from all ranks' per-step losses (gathered, so every rank computes the
  same figure), validation is split over the ranks and its figures combined (weighted by row
  counts), so callbacks see identical figures on every rank; their stop decision and the
  learning rate are then taken from rank 0;
- only rank 0 prints; ``model.save`` on other ranks writes nothing while ``fit`` runs (so a
  callback that saves checkpoints writes one file);
- an exception on a rank after the ranks started talking prints ``graphc: rank r of K ...``
  with the traceback and calls ``MPI_Abort``, which ends every rank (no rank waits forever in
  a collective for a dead peer); a rank that dies is noticed by ``mpirun``, which ends the
  job.

mpi4py is imported only here, and only when asked for (``distributed="mpi"``, ``world()``).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

import numpy as np

from graphc.ir.errors import ArgumentError, DistributedError

from .buffers import aligned_empty

INSTALL = (
    "install Open MPI (Debian/Ubuntu: `apt-get install openmpi-bin libopenmpi-dev`) and mpi4py "
    '(`pip install "graphc[mpi]"`), then launch with `mpirun -np K python your_script.py`'
)

_LAUNCH_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def world(comm: Any = None) -> Any:
    """The communicator to train over: ``comm`` when given, else mpi4py's ``MPI.COMM_WORLD``
    (importing mpi4py initializes MPI).

    Raises:
        DistributedError: mpi4py or the MPI library is missing (the message says what to
            install).
    """
    if comm is not None and not isinstance(comm, str):
        return comm
    try:
        from mpi4py import MPI
    except Exception as e:
        raise DistributedError(
            f"distributed='mpi' needs MPI and mpi4py ({type(e).__name__}: {e}); {INSTALL}"
        ) from None
    return MPI.COMM_WORLD


def _launched() -> bool:
    return "mpi4py.MPI" in sys.modules or any(v in os.environ for v in _LAUNCH_VARS)


def rank() -> int:
    """This process's rank (0 when not started by an MPI launcher; mpi4py is then not
    imported)."""
    return int(world().Get_rank()) if _launched() else 0


def size() -> int:
    """The number of ranks (1 when not started by an MPI launcher)."""
    return int(world().Get_size()) if _launched() else 1


def is_root() -> bool:
    """True on rank 0, the rank that prints, plots and writes files."""
    return rank() == 0


def shard(total: int, parts: int, index: int) -> tuple[int, int]:
    """(first row, row count) of slice ``index`` of ``total`` rows cut into ``parts`` nearly
    equal consecutive slices: the first ``total % parts`` slices hold one row more."""
    q, r = divmod(total, parts)
    return index * q + min(index, r), q + (1 if index < r else 0)


def abort_on_error(comm: Any, what: str) -> Any:
    """A context manager: an exception inside prints which rank failed (with the traceback) and
    calls ``comm.Abort(1)``, ending every rank of the job."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except BaseException as e:  # any failure must end the whole job
            if isinstance(e, SystemExit) and not e.code:
                raise
            r, k = comm.Get_rank(), comm.Get_size()
            print(
                f"graphc: rank {r} of {k} failed in {what}: {type(e).__name__}: {e}\n"
                f"{traceback.format_exc()}graphc: calling MPI_Abort to end all {k} ranks",
                file=sys.stderr,
                flush=True,
            )
            comm.Abort(1)
            raise

    return guard()


class SplitStep:
    """``NAME_train_grads`` and ``NAME_apply_update`` of a Model over one shared workspace
    (for up to ``cap`` rows), whose first ``param_bytes`` bytes are the grad region."""

    def __init__(self, model: Any, cap: int) -> None:
        prog = model.program
        entries = model.split_entries()  # compiled on first use
        if entries is None:
            why = getattr(prog, "split_note", "") or "it was compiled without a loss"
            raise DistributedError(f"this model has no split training step: {why}")
        self.grads, self.update = entries
        dtypes = {n.type.np_dtype for n in model.param_nodes}
        if len(dtypes) != 1:
            raise DistributedError(
                "distributed training all-reduces one gradient region of one dtype; this "
                f"model's parameters have several ({sorted(map(str, dtypes))})"
            )
        self.dtype = np.dtype(dtypes.pop())
        nbytes = max(self.grads.sched.workspace_bytes(cap), self.update.sched.workspace_bytes(cap))
        self.workspace = aligned_empty(nbytes)  # zeroed: the padding between gradients stays 0
        for e in (self.grads, self.update):
            e.use_workspace(self.workspace, cap)
        self.grad = self.workspace[: prog.param_bytes].view(self.dtype)
        gslots, uslots = self.grads.sched.input_slots, self.update.sched.input_slots
        self.scale = np.zeros((), self.grads.in_types[gslots.index("loss_scale")].np_dtype)
        self.row0 = (
            np.zeros((), self.grads.in_types[gslots.index("row0")].np_dtype)
            if "row0" in gslots
            else None
        )
        self.lr = np.zeros((), self.update.in_types[uslots.index("lr")].np_dtype)
        self.gslots = gslots
        self.update_arrays = [self.lr]

    def arrays(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The input arrays of train_grads: ``feeds`` plus loss_scale and row0."""
        extra = {"loss_scale": self.scale, "row0": self.row0}
        return [extra[s] if s in extra else feeds[s] for s in self.gslots]


def fit(
    model: Any,
    comm: Any,
    feeds: dict[str, np.ndarray],
    n: int,
    validation: tuple[dict[str, np.ndarray], int] | None,
    history: Any,
    progress: Any,
    *,
    epochs: int,
    initial_epoch: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    callbacks: list[Any],
) -> Any:
    """The distributed body of ``Model.fit`` (see the module docstring); ``feeds`` and
    ``validation`` were checked by the caller. Fills and returns ``history`` (with
    ``history.step_losses``: the loss of every global mini-batch, in order)."""
    comm = world(comm)
    k, r = comm.Get_size(), comm.Get_rank()
    # Every rank must train on the same rows with the same arguments: compare (cheap) digests.
    mine = (
        n,
        batch_size,
        epochs,
        initial_epoch,
        seed,
        bool(shuffle),
        model.program.name,
        model.param_count,
        tuple((name, a.shape, str(a.dtype), _digest(a)) for name, a in sorted(feeds.items())),
    )
    everyone = comm.allgather(mine)
    differ = [i for i, x in enumerate(everyone) if x != everyone[0]]
    if differ:
        raise DistributedError(
            f"rank {differ[0]} calls fit with other data or arguments than rank 0 "
            f"(rows, batch_size, epochs, initial_epoch, seed, shuffle, model, data digest): "
            f"{everyone[differ[0]][:8]} vs {everyone[0][:8]}; every rank must pass the same"
        )
    bs = min(batch_size, n)
    cap = -(-bs // k)
    step = SplitStep(model, cap)
    stage = {name: np.empty((cap,) + a.shape[1:], a.dtype) for name, a in feeds.items()}
    model._dist_rank = r
    try:
        with abort_on_error(comm, f"fit (epoch loop of {k} ranks)"):
            comm.Bcast(model._param_region, root=0)
            comm.Bcast(model._state_region, root=0)
            model.lr = float(comm.bcast(float(model.lr), root=0))
            for cb in callbacks:
                getattr(cb, "on_train_begin", lambda m: None)(model)
            _epochs(
                model, comm, step, stage, feeds, n, bs, validation, history, progress,
                epochs=epochs, initial_epoch=initial_epoch, shuffle=shuffle, seed=seed,
                callbacks=callbacks,
            )  # fmt: skip
            for cb in callbacks:
                getattr(cb, "on_train_end", lambda m, h: None)(model, history)
    finally:
        model._dist_rank = 0
        progress.close()
    return history


def _digest(a: np.ndarray) -> int:
    """A cheap digest of an array: a CRC of up to 64 rows spread over it."""
    import zlib

    rows = np.linspace(0, len(a) - 1, num=min(len(a), 64)).astype(np.int64) if len(a) else []
    return zlib.crc32(np.ascontiguousarray(a[rows]).tobytes())


def _epochs(
    model, comm, step, stage, feeds, n, bs, validation, history, progress, *, epochs,
    initial_epoch, shuffle, seed, callbacks,
) -> None:  # fmt: skip
    from mpi4py import MPI

    k, r = comm.Get_size(), comm.Get_rank()
    grads, update = step.grads, step.update
    steps = -(-n // bs)
    mine = np.zeros(steps, np.float64)
    checked: set[int] = set()
    for epoch in range(initial_epoch, epochs):
        for cb in callbacks:
            getattr(cb, "on_epoch_begin", lambda m, ep: None)(model, epoch)
        t0 = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        step.lr[...] = model.lr
        for s in range(steps):
            lo = s * bs
            big = min(bs, n - lo)
            first, count = shard(big, k, r)
            if count:
                idx = order[lo + first : lo + first + count]
                local = {name: st[:count] for name, st in stage.items()}
                for name, a in feeds.items():
                    np.take(a, idx, axis=0, out=local[name])
                step.scale[...] = count / big
                if step.row0 is not None:
                    step.row0[...] = first
                arrays = step.arrays(local)
                if count not in checked:
                    grads.check(arrays, count)
                    checked.add(count)
                loss = float(grads(arrays, count, checked=False)[0])
                mine[s] = loss * count / big
            else:  # fewer rows than ranks: this rank adds nothing to the sum
                step.grad[...] = 0
                mine[s] = 0.0
            comm.Allreduce(MPI.IN_PLACE, step.grad, op=MPI.SUM)
            update(step.update_arrays, 1, checked=False)
        per_step = np.sum(comm.allgather(mine), axis=0)  # every rank sums in one order
        history.step_losses.extend(per_step.tolist())
        sizes = np.minimum(bs, n - np.arange(steps) * bs)
        figures = {"loss": float(np.dot(per_step, sizes) / n)}
        if validation is not None:
            figures.update({f"val_{key}": v for key, v in _evaluate(model, comm, *validation)})
        figures["lr"] = float(model.lr)
        figures["seconds"] = time.perf_counter() - t0
        history.add(epoch, figures)
        progress.epoch(epoch, figures)
        stop = False
        for cb in callbacks:
            stop |= bool(getattr(cb, "on_epoch_end", lambda m, ep, f: False)(model, epoch, figures))
        stop, lr = comm.bcast((stop, float(model.lr)), root=0)
        model.lr = lr
        if stop:
            history.stopped_early = True
            break


def _evaluate(model: Any, comm: Any, feeds: dict[str, np.ndarray], n: int) -> list:
    """Validation figures over all ``n`` rows, each rank evaluating its slice; combined as means
    weighted by the slices' row counts (R^2 from the combined MSE and the variance of all the
    targets). Every rank returns the same figures."""
    k, r = comm.Get_size(), comm.Get_rank()
    first, count = shard(n, k, r)
    figs: dict[str, float] = {}
    if count:
        part = {name: a[first : first + count] for name, a in feeds.items()}
        x = {name: a for name, a in part.items() if name in model.program.feature_inputs}
        y = {name: a for name, a in part.items() if name in model.program.label_inputs}
        figs = model.evaluate(x, y)
    everyone = comm.allgather((count, figs))
    keys = next(f for c, f in everyone if c).keys()
    out = {key: sum(c * f[key] for c, f in everyone if c) / n for key in keys}
    if "r2" in out:
        y = np.asarray(feeds[model.program.label_inputs[0]], np.float64)
        var = float(np.var(y))
        out["r2"] = 1.0 - out["mse"] / var if var > 0 else float("nan")
    return list(out.items())


def check_supported(distributed: Any) -> Any:
    """The communicator for ``fit(distributed=...)``: "mpi" (COMM_WORLD) or an mpi4py
    communicator.

    Raises:
        ArgumentError: another value.
        DistributedError: MPI or mpi4py missing.
    """
    if isinstance(distributed, str):
        if distributed != "mpi":
            raise ArgumentError(
                f"distributed must be 'mpi' or an mpi4py communicator, got {distributed!r}"
            )
        return world()
    if not all(hasattr(distributed, a) for a in ("Allreduce", "Get_rank", "Get_size")):
        raise ArgumentError(
            f"distributed must be 'mpi' or an mpi4py communicator, got {type(distributed).__name__}"
        )
    return distributed
