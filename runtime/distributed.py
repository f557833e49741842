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
  like the parameters); one in-place all-reduce (sum) of that region makes it the
  gradient of the mean loss over the global batch (ranks of one machine: through an MPI-3
  shared-memory window, WindowReduce; else ``MPI_Allreduce``; ``GRAPHC_MPI_REDUCE``, see
  reduce_mode, chooses); ``NAME_apply_update`` then runs the
  optimizer update on every rank. The trajectory is the one-process trajectory with batch
  size B, up to the order of the floating-point sums; dropout masks depend on the global row
  index, so they match too;
- the summed update (for ranks sharing memory in native epochs, when the update
  runs by elements: codegen.epoch.update_shard_plan): instead of the window's sum followed
  by ``apply_update``, after the window's first barrier every rank runs
  ``NAME_apply_update_shard`` over all elements on its own parameters, each gradient
  element summed over the ranks' slots (rank order) as the update reads it (one pass over
  the slots, parameters and state instead of two; parameters bit for bit those of the sum and
  ``apply_update``), then a second barrier before any rank writes its slot again;
- the sharded update (``GRAPHC_MPI_SHARD=1``; ``auto``, the default, times it against the
  summed update once per window and runs the faster: SplitStep._faster_sharded, since on
  this project's 2-core host either wins depending on the launch, the cores' cache-to-cache
  traffic deciding, see benchmarks/README.md; ``0``: the summed update; for ranks sharing
  memory, native epochs, an update that runs by
  elements: codegen.epoch.update_shard_plan): the parameters the
  ranks train live once, in the shared-memory window; after the window's first barrier each
  rank sums its shard of the gradients over the slots and applies the update to that shard
  of the parameters and of its optimizer state (``NAME_apply_update_shard``), then a second
  barrier. Instead of every rank repeating the whole update, each does 1/K of it, and the
  sums never leave its L1 cache. At every epoch's end (and before a non-finite-loss error)
  the parameters are copied back into each rank's model and the optimizer state's shards
  gathered (MPI_Allgatherv), so callbacks, checkpoints and the model after fit see all of
  it; the parameters equal the unsharded step's bit for bit; Ops whose value depends on the whole batch (none so far, batch
  normalization later) see only the rank's rows, as in PyTorch's DistributedDataParallel;
- each rank's share of the batch's loss, whether it was finite and whether the rank was asked
  to stop ride in the same all-reduce (SplitStep.flags, just before the gradients), so every
  rank takes the same decision at the same step without another collective:
  - a non-finite loss (``stop_on_nonfinite``, the default): that step's update is not applied
    and every rank raises NumericsError naming the epoch, the step, the batch's first rows and
    how many ranks saw it; the parameters and optimizer state are those after the last finite
    step, as in one process;
  - batch callbacks (``on_batch_begin/end``, Keras's logs) run on every rank with the same
    logs (the global batch's loss); the learning rate each update uses is rank 0's
    ``model.lr`` after the step's callbacks (broadcast at every step when any rank has
    callbacks);
  - SIGINT or SIGTERM (Open MPI's ``mpirun`` answers Ctrl-C by sending every rank SIGTERM,
    then SIGKILL 1 s later, ``odls_base_sigkill_timeout``): the first is held until the next
    step's all-reduce (in an epoch that runs its all-reduce natively: the next step after
    the native call returns, within ~50 ms, _native_chunks); then every rank rolls the
    unfinished epoch back (parameters, optimizer state, history: as at the end of the last
    finished epoch), sets ``history.interrupted`` and returns from fit; one that comes after
    an epoch's last all-reduce is seen in the epoch-end gather: every rank keeps that epoch,
    sets ``history.interrupted`` and returns; a second signal acts at once. Checkpoints written by callbacks at
    epoch ends are whole files (written beside and renamed), so a run cut short resumes
    from the last one with ``initial_epoch``;
- the data: without callbacks, each rank's first native epoch checks the float rows it
  gathers (NaN/Inf; together every row once) instead of a pass over the data up front; a
  bad row stops every rank at that step (the rejection rides in the step's all-reduce
  flags), the steps before are undone and every rank raises the up-front check's error
  (DataRejected, Model.fit); labels and lookup indices are checked up front, each rank its
  share of the rows;
- the epoch loss comes from all ranks' per-step losses (gathered, so every rank computes the
  same figure), validation is split over the ranks and its figures combined (weighted by row
  counts), so callbacks see identical figures on every rank; their stop decision and the
  learning rate are then taken from rank 0;
- callbacks may differ between ranks (Horovod's custom: schedules, checkpoints and early
  stopping on rank 0 only): rank 0 decides. When any rank has callbacks, rank 0's learning
  rate, parameters and optimizer state are broadcast after the callbacks of every epoch's
  start and of the training's end (EarlyStopping's restore_best_weights), so what a
  callback changes on another rank only is overridden, and every rank ends with rank 0's
  model: the one-process run with rank 0's callbacks. Between steps (batch callbacks) rank
  0's learning rate is sent every step, and its parameters and state when a callback on any
  rank wrote weights through set_weights, initialize or load (_sync_batch_callbacks);
  in-place writes into ``model.params`` arrays on some ranks only are overridden at the next
  epoch's start;
- threads: unless chosen (``threads=``, ``model.threads``, ``GRAPHC_THREADS``), each rank runs
  ``thread_share`` threads during fit: its cores over the ranks of the machine sharing them
  (1 for 2 ranks on 2 cores), as ``torchrun`` sets OMP_NUM_THREADS=1 for several processes
  per machine; more threads than cores would make the ranks, which meet at every step,
  wait for each other's descheduled threads;
- waiting in the all-reduce: spinning (``MPI_Allreduce``, ``MPI_Barrier``) on free cores,
  napping (``MPI_Iallreduce``, ``MPI_Ibarrier`` polled between short sleeps) after an epoch
  in which the ranks waited for a core more than 10% of the time; ``GRAPHC_MPI_WAIT`` (see
  wait_mode) chooses;
- only rank 0 prints (fit's lines and the callbacks' verbose ones); ``model.save`` and
  ``model.save_model`` on other ranks write nothing while ``fit`` runs, nor do CSVLogger and
  TensorBoard (so callbacks on every rank write one checkpoint, one log: rank 0's);
- an exception on a rank after the ranks started talking prints ``graphc: rank r of K ...``
  with the traceback and calls ``MPI_Abort``, which ends every rank (no rank waits forever in
  a collective for a dead peer); so does an exception nothing catches in the script, outside
  fit (abort_when_uncaught); a rank that dies is noticed by ``mpirun``, which ends the
  job.

Ops whose value depends on the whole batch (batch normalization) and losses that are no mean
over the rows (a sum over them, RMSE: graphc.compiler.not_row_mean) refuse distributed fit,
naming the node (see ``Model.fit``). A softmax_cross_entropy with ``ignore_index`` or class
``weight`` is a mean over the label positions kept (weighted), whose counts (weights) differ
between ranks: each rank's loss_scale is then its kept positions' weights over the global
batch's (kept_scales, computed every epoch from the labels every rank holds), and validation
figures are weighted by them (the accuracy by the kept count). Without batch callbacks (and with ``model.use_epoch_entry``, the default), a
rank's epoch is one native call (``NAME_train_epoch_split``, graphc.codegen.epoch): it gathers
the rank's rows, runs ``train_grads``, calls back into Python for the all-reduce and the
decisions above (about 10 µs of Python per step), then runs ``apply_update``; the per-step
Python loop (about 0.25 ms per step besides the native calls) remains for batch callbacks.
Both make the same native calls on the same rows: their results are equal bit for bit. With
the summed or the sharded update and spinning waits, the native epoch runs the all-reduce itself
(codegen.epoch.emit_native_reduce): the flags into the rank's slot, a barrier of atomic
arrival counters in the window (no MPI_Barrier, no Python), the flags summed in rank order,
the summed update (or the rank's shard of the shared parameters' update), a second barrier;
a step whose summed flags ask for a decision (rows
rejected, a stop requested, a non-finite loss) returns to Python, which decides as the
call-out would, every rank at that step. Such epochs return to Python every ~50 ms
(_native_chunks) so that a signal is taken at the next step as with the call-out.

mpi4py is imported only here, and only when asked for (``distributed="mpi"``, ``world()``).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np

from graphc.codegen import epoch as epoch_abi
from graphc.codegen.epoch import CTL_LINE, ERR_DECIDE, ERR_INDEX, ERR_REDUCE, update_shard_plan
from graphc.ir.errors import ArgumentError, DistributedError, NumericsError, install_hint

from .buffers import ALIGN, address, aligned_empty
from .callbacks import CallbackList
from .executable import ENTRY_ARGS, row_index_error

log = logging.getLogger(__name__)

INSTALL = (
    "install Open MPI (Debian/Ubuntu: `apt-get install openmpi-bin libopenmpi-dev`) and mpi4py "
    f"({install_hint('mpi4py', 'mpi')}), then launch with `mpirun -np K python your_script.py`"
)

_LAUNCH_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")

# the loop of the last distributed fit's last epoch: "native" (one call per epoch, the
# all-reduce a call-out), "native-reduce" (the all-reduce in the native epoch too) or "python"
LAST_PATH = ""
LAST_REDUCE = ""  # its all-reduce: "window" (shared memory) or "allreduce" (see reduce_mode)
LAST_SCAN = ""  # where it checked the float rows: "epoch" (the first epoch's gathers), "up front"
# its update: "shard" (each rank a shard, shared parameters), "summed" (every rank all of it,
# summing the slots' gradients as it reads them) or "whole" (apply_update after the all-reduce)
LAST_UPDATE = ""
# GRAPHC_MPI_SHARD=auto (the default): the medians (seconds, the slower rank's) of the summed
# and the sharded update as the last window timed them (SplitStep._faster_sharded)
LAST_PROBE: tuple[float, float] | None = None
PROBE_ROUNDS = 5  # each update timed this many times, interleaved
PROBE_MARGIN = 0.1  # the sharded update must be this much faster (the summed is the tested default)
# A list to make every step's all-reduce append (entered, first barrier left, this rank's share
# summed, left) in time.perf_counter_ns() (CLOCK_MONOTONIC: one clock for all ranks of a
# machine; the window's barrier and sum, or the whole MPI_Allreduce as entered..left), for
# benchmarks/bench_mpi.py --timeline; None (the default): nothing recorded.
TIMELINE: list[tuple[int, ...]] | None = None

# NAME_train_epoch_split (ABI in graphc.codegen.epoch) and its call-out reduce(step, rows)
REDUCE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64)
EPOCH_SPLIT = ctypes.CFUNCTYPE(
    ctypes.c_int32,
    *ENTRY_ARGS,  # params, state, workspace, inputs[], outputs[], n
    ctypes.c_void_p,  # order
    ctypes.c_int64,  # batch
    ctypes.c_void_p,  # staging[]
    *(ctypes.c_int64,) * 4,  # ranks, rank, first_step, end_step
    ctypes.c_void_p,  # update_inputs[]
    ctypes.c_void_p,  # reduce
    ctypes.c_void_p,  # at
    ctypes.c_int64,  # scan
    ctypes.c_void_p,  # ctl
)


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
    abort_when_uncaught(MPI)
    return MPI.COMM_WORLD


_HOOKED: list[bool] = []


def abort_when_uncaught(MPI: Any) -> None:
    """Once per process, with several ranks: an exception that nothing catches (it ends this
    rank) prints its traceback as always, then ``MPI_Abort`` ends every rank, as ``python -m
    mpi4py`` does. Otherwise a rank that failed in the script outside ``fit`` (before a fit
    the others entered, between two fits) left them waiting forever in fit's collectives,
    and itself in ``MPI_Finalize`` (Horovod's classic hang)."""
    if _HOOKED or MPI.COMM_WORLD.Get_size() < 2:
        return
    _HOOKED.append(True)
    previous = sys.excepthook

    def hook(kind: Any, value: Any, tb: Any) -> None:
        previous(kind, value, tb)
        _abort(MPI.COMM_WORLD, f"ended with an uncaught {kind.__name__};")

    sys.excepthook = hook
    _note_exit(MPI)


def _note_exit(MPI: Any) -> None:
    """Once per process: _announce_exit at exit (registered after mpi4py's ``MPI_Finalize``
    handler, so it runs before it)."""
    if _NOTED:
        return
    import atexit

    _NOTED.append(True)
    atexit.register(_announce_exit, MPI)


_NOTED: list[bool] = []
_ANNOUNCED: list[bool] = []  # this rank's exit note went out (once: _free_kept sends it too)


EXIT_TAG = 0x67C0  # the tag of a rank's exit note (_announce_exit)
STALL_WARN = 60.0  # seconds a rank waits for the others to enter fit before it says so


def _announce_exit(MPI: Any) -> None:
    """At this rank's normal exit (atexit, before mpi4py's ``MPI_Finalize``): a one-byte note
    to every other rank of ``MPI_COMM_WORLD`` (eager sends: they complete here, received or
    not). A rank waiting for the others to enter ``fit`` (enter_fit) reads it: a script whose
    ranks call fit a different number of times ends with a clear error instead of waiting
    forever (the others sit in ``MPI_Finalize``)."""
    try:
        if _ANNOUNCED or not MPI.Is_initialized() or MPI.Is_finalized():
            return
        _ANNOUNCED.append(True)
        w = MPI.COMM_WORLD
        note = np.zeros(1, np.uint8)
        me = w.Get_rank()
        others = [j for j in range(w.Get_size()) if j != me]
        MPI.Request.Waitall([w.Isend([note, MPI.BYTE], dest=j, tag=EXIT_TAG) for j in others])
    except Exception:  # at exit: nothing more to do
        pass


def enter_fit(comm: Any) -> None:
    """Wait until every rank of ``comm`` has entered ``fit`` (a nonblocking barrier, polled):
    a rank of ``comm`` that ended its script instead (its exit note, _announce_exit) raises
    DistributedError here, and a wait longer than STALL_WARN seconds is logged once (Horovod's
    stall warning), naming the likely causes. The first ~2 ms spin; then 1 ms naps.

    Raises:
        DistributedError: a rank of ``comm`` exited without entering this fit.
    """
    from mpi4py import MPI

    _note_exit(MPI)
    req = comm.Ibarrier()
    if req.Test():
        return
    world = MPI.COMM_WORLD
    mine, whole = comm.Get_group(), world.Get_group()
    try:
        members = MPI.Group.Translate_ranks(mine, list(range(comm.Get_size())), whole)
    finally:
        mine.Free()
        whole.Free()
    others = [w for w in members if w not in (world.Get_rank(), MPI.UNDEFINED)]
    t0 = time.perf_counter()
    warned = False
    while not req.Test():
        waited = time.perf_counter() - t0
        for w in others:
            if world.Iprobe(source=w, tag=EXIT_TAG):
                raise DistributedError(
                    f"rank {comm.Get_rank()} of {comm.Get_size()} entered fit, but world rank {w} "
                    f"ended its script without entering it: every rank must call fit (with the "
                    f"same data and arguments) the same number of times"
                )
        if waited > STALL_WARN and not warned:
            warned = True
            log.warning(
                "fit: rank %d of %d has waited %.0f s for the other ranks to enter fit: a rank "
                "that calls fit fewer times, or is stuck before it, stalls the job",
                comm.Get_rank(), comm.Get_size(), waited,
            )  # fmt: skip
        if waited > 2e-3:
            time.sleep(1e-3)


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


def agreed(comm: Any, what: str, fn: Any, share: Any = None) -> tuple[Any, list[Any]]:
    """Run ``fn()`` on this rank, then one allgather of whether it raised (and of
    ``share(result)`` when it did not), so that an error on some ranks never leaves the
    others waiting in a later collective: if ``fn`` raised on any rank, every rank raises,
    this rank's own exception where it raised, else DistributedError naming the first rank
    that failed and its error.

    Returns:
        (fn's result on this rank, [share(result) of every rank, by rank]; None entries
        without ``share``).

    Raises:
        DistributedError: ``fn`` raised on another rank (not on this one).
    """
    try:
        result, error = fn(), None
        mine = (share(result) if share is not None else None, None)
    except Exception as e:  # any error: the other ranks must hear of it (not BaseException:
        result, error = None, e  # Ctrl-C and exits end the job through abort_on_error)
        mine = (None, f"{type(e).__name__}: {e}")
    everyone = comm.allgather(mine)
    failed = [(i, msg) for i, (_, msg) in enumerate(everyone) if msg is not None]
    if error is not None:
        raise error
    if failed:
        i, msg = failed[0]
        raise DistributedError(
            f"rank {i} of {len(everyone)} failed in {what}: {msg}; every rank stops here "
            f"(each rank must pass the same data and arguments)"
        )
    return result, [v for v, _ in everyone]


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
            why = f"failed in {what}: {type(e).__name__}: {e}\n{traceback.format_exc()}graphc:"
            _abort(comm, why)
            raise

    return guard()


def _abort(comm: Any, why: str) -> None:
    """Print "graphc: rank r of K WHY; calling MPI_Abort ..." to stderr and end every rank."""
    r, k = comm.Get_rank(), comm.Get_size()
    print(
        f"graphc: rank {r} of {k} {why} calling MPI_Abort to end all {k} ranks",
        file=sys.stderr,
        flush=True,
    )
    comm.Abort(1)


REDUCE_MODES = ("auto", "window", "allreduce")


def reduce_mode() -> str:
    """How the step's gradients are summed over the ranks: ``$GRAPHC_MPI_REDUCE``, "auto"
    (default), "window" or "allreduce".

    "window": through an MPI-3 shared-memory window (WindowReduce), for ranks that all share
    one machine's memory; "allreduce": ``MPI_Allreduce`` (any ranks, any network); "auto":
    "window" when every rank shares the memory of one machine (``MPI_COMM_TYPE_SHARED``) and
    there are several, else "allreduce". Every rank must be given the same mode (fit checks)."""
    mode = os.environ.get("GRAPHC_MPI_REDUCE", "").strip().lower() or "auto"
    if mode not in REDUCE_MODES:
        raise ArgumentError(f"GRAPHC_MPI_REDUCE must be one of {REDUCE_MODES}, got {mode!r}")
    return mode


def node_peers(comm: Any) -> tuple[int, ...]:
    """The ranks of ``comm`` that share this rank's memory (``MPI_COMM_TYPE_SHARED``: one
    machine), in rank order. A collective the first time a communicator is asked (every
    rank asks in the same fit: ``choose_reduce``), then remembered for it: which ranks share
    a machine does not change while the communicator lives, and ``MPI_Comm_split_type`` with
    its ``MPI_Comm_free`` cost 0.1 ms of every distributed fit (measured on this project's
    2-rank host)."""
    import weakref

    from mpi4py import MPI

    _NODES[:] = [(ref, peers) for ref, peers in _NODES if ref() is not None]
    for ref, peers in _NODES:
        if ref() is comm:
            return peers
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        peers = tuple(sorted(local.allgather(comm.Get_rank())))
    finally:
        local.Free()
    # a weak reference (communicators are unhashable): the answer goes with the object
    _NODES.append((weakref.ref(comm), peers))
    return peers


_NODES: list[tuple[Any, tuple[int, ...]]] = []  # (weak reference to a communicator, its peers)


def choose_reduce(comm: Any, mode: str) -> str:
    """ "window" or "allreduce" for ``mode`` (see reduce_mode) on ``comm`` (a collective: every
    rank calls it and gets the same answer: one machine holds every rank exactly when this
    rank's machine holds all of them).

    Raises:
        DistributedError: "window" asked for ranks that do not all share memory.
    """
    k = comm.Get_size()
    if mode == "allreduce" or (mode == "auto" and k == 1):
        return "allreduce"
    shared = len(node_peers(comm)) == k
    if mode == "window" and not shared:
        raise DistributedError(
            "GRAPHC_MPI_REDUCE=window needs every rank on one machine (MPI_COMM_TYPE_SHARED); "
            "these ranks span several: use GRAPHC_MPI_REDUCE=allreduce or auto"
        )
    return "window" if shared else "allreduce"


SHM_DIR = "/dev/shm"  # where Open MPI backs shared-memory windows (its shmem mmap component)
SHM_MARGIN = 8 << 20  # room left for Open MPI's own segments


def shm_free() -> int | None:
    """Free bytes of SHM_DIR for unprivileged use; None where it cannot be asked."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _min() -> Any:
    from mpi4py import MPI

    return MPI.MIN


class WindowReduce:
    """An all-reduce (sum) through an MPI-3 shared-memory window, for ranks sharing one
    machine's memory (MPI's own mechanism for it: ``MPI_Win_allocate_shared`` over the ranks of
    ``comm``, each rank's slot readable and writable by all).

    Each rank's slot (``mine``, ``nbytes`` bytes, aligned to ALIGN) is that rank's whole
    SplitStep buffer: train_grads writes its gradients (and the flags) straight into it. Then
    ``reduce``: ``MPI_Win_sync``, ``MPI_Barrier``, ``MPI_Win_sync`` (the unified memory model's
    way to see the others' stores); rank r sums the r-th of k nearly equal shares of the
    reduced vector over the k slots (``NAME_reduce_slots``: slots in rank order, every index
    summed by one rank) and stores the sum into every slot; sync, barrier, sync again. Every
    slot then holds the same sum, which apply_update reads from the rank's own slot. A rank
    writes another's slot only between the two barriers of a step, and only its share, so no
    rank's train_grads or apply_update meets another's stores. Moves each gradient byte once
    in and once out per rank instead of MPI_Allreduce's copies through its own buffers
    (measured in benchmarks/README.md). Waiting: the barrier spins (``MPI_Barrier``) or naps
    (``MPI_Ibarrier`` polled, as ``allreduce``)."""

    def __init__(self, comm: Any, nbytes: int, reduce_address: int, shared: int = 0) -> None:
        """``shared`` > 0: rank 0 also allocates ``self.shared``, that many bytes every rank
        reads and writes (page-aligned, after rank 0's slot)."""
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the same ranks, in the same order
        self.k, self.r = self.comm.Get_size(), self.comm.Get_rank()
        if self.k != comm.Get_size():
            self.comm.Free()
            raise DistributedError("a shared-memory all-reduce needs every rank on one machine")
        sync = -(-(self.k * CTL_LINE) // 4096) * 4096  # the native barrier's arrival counters
        mine = self.slot_bytes(nbytes) + (self.slot_bytes(shared) + 4096 if shared else 0)
        mine += sync + 4096
        self.win = MPI.Win.Allocate_shared(mine if self.r == 0 else self.slot_bytes(nbytes), 1,
                                           comm=self.comm)  # fmt: skip
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.slots = []
        self.shared: np.ndarray | None = None
        for j in range(self.k):
            buf, _ = self.win.Shared_query(j)
            raw = np.frombuffer(buf, np.uint8)
            start = (-address(raw)) % ALIGN
            self.slots.append(raw[start : start + nbytes])
            if j == 0:  # each on pages of its own, after rank 0's slot
                at = start + nbytes
                at += (-(address(raw) + at)) % 4096
                if shared:
                    self.shared = raw[at : at + shared]
                    at += shared
                    at += (-(address(raw) + at)) % 4096
                self.arrived = raw[at : at + sync].view(np.int64)
        if self.r == 0:
            self.arrived[...] = 0
        self.mine = self.slots[self.r]
        self.mine[...] = 0  # the padding between gradients stays 0 (seen after the barrier)
        self.comm.Barrier()  # the zeros stored before any rank reads them
        self.fn = ctypes.CFUNCTYPE(
            None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, *(ctypes.c_int64,) * 3
        )(reduce_address)
        self.table = (ctypes.c_void_p * self.k)()
        self.lo = self.hi = 0

    @staticmethod
    def slot_bytes(nbytes: int) -> int:
        """The bytes a rank allocates for a slot of ``nbytes``: whole pages (no false sharing
        between slots) with room to align the start."""
        page = 4096
        return -(-(nbytes + ALIGN) // page) * page

    def bind(self, offset: int, count: int, dtype: np.dtype) -> None:
        """Reduce ``count`` values of ``dtype`` starting ``offset`` bytes into each slot; this
        rank's share: the r-th of k slices (whole cache lines, the last one shorter)."""
        for j, slot in enumerate(self.slots):
            self.table[j] = address(slot) + offset
        line = max(1, 64 // dtype.itemsize)
        lines = -(-count // line)
        first, n = shard(lines, self.k, self.r)
        self.lo, self.hi = min(count, first * line), min(count, (first + n) * line)

    def _barrier(self, napping: bool) -> None:
        self.win.Sync()
        if napping:
            req = self.comm.Ibarrier()
            t0 = time.perf_counter()
            while not req.Test():
                if time.perf_counter() - t0 > 2e-4:
                    time.sleep(5e-5)
        else:
            self.comm.Barrier()
        self.win.Sync()

    def reduce(self, napping: bool = False, marks: list[int] | None = None) -> None:
        """The all-reduce (see the class docstring); collective over the window's ranks.
        ``marks``: a list to append time.perf_counter_ns() to after the first barrier and
        after this rank's share of the sum (see TIMELINE)."""
        self._barrier(napping)
        if marks is not None:
            marks.append(time.perf_counter_ns())
        t = ctypes.addressof(self.table)
        self.fn(t, self.k, t, self.k, self.lo, self.hi)
        if marks is not None:
            marks.append(time.perf_counter_ns())
        self._barrier(napping)

    def free(self) -> None:
        """Free the window (collective); ``slots`` must not be used after."""
        self.slots = []
        self.mine = self.shared = None
        self.win.Unlock_all()
        self.win.Free()
        self.comm.Free()


class SplitStep:
    """``NAME_train_grads`` and ``NAME_apply_update`` of a Model over one shared workspace
    (for up to ``cap`` rows), whose first ``param_bytes`` bytes are the grad region.

    Just before the grad region lie ``FLAGS`` values of the gradients' dtype (``flags``), so
    that one all-reduce of ``reduced`` (flags + gradients, contiguous) also sums, over the
    ranks: the count of ranks whose loss was not finite, the ranks' shares of the global
    batch's loss, the count of ranks asked to stop (Ctrl-C, SIGTERM) and the count of ranks
    whose scan of the first epoch's rows found a bad one (see fit). Every rank thus takes the
    same decision at the same step without a second collective."""

    FLAGS = 4  # [non-finite losses, loss share, stop requests, rejected data rows]
    HEAD = ALIGN  # bytes before the entries' workspace: the flags, alignment kept

    def __init__(
        self,
        model: Any,
        cap: int,
        comm: Any = None,
        reduce: str = "allreduce",
        strict: bool = False,
    ) -> None:
        """``reduce``: "window" (WindowReduce over ``comm``, whose ranks share one machine) or
        "allreduce". A window that would not fit in the free space of the shared-memory file
        system (``/dev/shm``, where Open MPI backs it; containers often give 64 MB) falls back
        to "allreduce" with a warning on every rank, or with ``strict`` raises
        DistributedError on every rank: Open MPI would otherwise map it and the first store
        past the space would kill the rank with SIGBUS."""
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
        size = self.HEAD + max(nbytes, prog.param_bytes)
        jit, name = model._split_jit or model.jit, prog.name
        self.window: WindowReduce | None = None
        self._snapshot: tuple[np.ndarray, np.ndarray] | None = None
        self._stage: dict[str, np.ndarray] | None = None
        if reduce == "window":  # the rank's slot of a shared-memory window (zeroed there)
            fn = f"{name}_reduce_slots"
            if not (getattr(jit, "has", None) and jit.has(fn)):  # the same on every rank
                if strict:
                    raise DistributedError(f"GRAPHC_MPI_REDUCE=window: the module has no {fn}")
                reduce = "allreduce"
            need, free = (comm.Get_size() + 1) * WindowReduce.slot_bytes(size), shm_free()
            short = comm.allreduce(int(free is not None and free < need + SHM_MARGIN), op=_min())
            if short and reduce == "window":
                why = (
                    f"the shared-memory window needs {need / 2**20:.1f} MiB and {SHM_DIR} has "
                    f"{'less' if free is None else f'{free / 2**20:.1f} MiB'} free on some rank"
                )
                if strict:
                    raise DistributedError(
                        f"GRAPHC_MPI_REDUCE=window: {why}; enlarge {SHM_DIR} (docker run "
                        "--shm-size) or use GRAPHC_MPI_REDUCE=allreduce"
                    )
                if comm.Get_rank() == 0:
                    log.warning("fit: %s; summing the gradients with MPI_Allreduce instead", why)
                reduce = "allreduce"
        self.how = reduce
        # ranks sharing memory, native epochs: each rank sums the slots' gradients inside its
        # update (NAME_apply_update_shard over all elements, see shard_update), or with
        # GRAPHC_MPI_SHARD=1 over its shard of the parameters, which then live in the window;
        # auto (the default): whichever of the two the window's probe finds faster
        self.plan = None
        self.shares_params = False
        self.sharding = False  # set by fit around the native epochs that use the plan
        shard = os.environ.get("GRAPHC_MPI_SHARD", "").strip().lower() or "auto"
        if reduce == "window" and jit.has(f"{name}_apply_update_shard"):
            self.plan = update_shard_plan(prog.schedules["apply_update"])
            self.shares_params = self.plan is not None and shard == "1"
        probe = reduce == "window" and self.plan is not None and shard == "auto"
        if reduce == "window":
            shared = prog.param_bytes if self.shares_params or probe else 0
            self.window = WindowReduce(comm, size, jit.address(fn), shared)
            self.buffer = self.window.mine
        else:  # zeroed: the padding between gradients stays 0
            self.buffer = aligned_empty(size)
        self.workspace = self.buffer[self.HEAD :]  # what the entries see (aligned as the buffer)
        self.bind_workspace(cap)
        flag_bytes = self.FLAGS * self.dtype.itemsize
        self.flags = self.buffer[self.HEAD - flag_bytes : self.HEAD].view(self.dtype)
        self.grad = self.workspace[: prog.param_bytes].view(self.dtype)
        # summed over the ranks: the flags and the grad region up to the last trainable
        # param's gradient (non-trainable params after it, a frozen head, have none)
        ends = [prog.layout[p].offset + prog.layout[p].size for p in prog.grads]
        self.reduced = self.buffer[self.HEAD - flag_bytes : self.HEAD + max(ends, default=0)].view(
            self.dtype
        )
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
        self.summed = self.flags  # the flags summed over the ranks, after allreduce
        if self.window is not None:
            start = self.HEAD - flag_bytes
            self.window.bind(start, self.reduced.size, self.dtype)
        # the native epoch's own all-reduce (see _bind_shards), for the summed update
        self.ctl = np.zeros(epoch_abi.CTL_WORDS, np.int64)
        self.native_summed = np.zeros(self.FLAGS, self.dtype)
        self.native_reduce = False
        if self.plan is not None:
            if probe:
                self.shares_params = self._faster_sharded(model, jit, name, flag_bytes)
            self._bind_shards(jit, name, flag_bytes)

        # the rank's whole epoch in one native call (NAME_train_epoch_split), when compiled
        name = f"{prog.name}_train_epoch_split"
        self.epoch_fn = (
            EPOCH_SPLIT(jit.address(name)) if getattr(jit, "has", None) and jit.has(name) else None
        )

    def snapshot(self, model: Any, params: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``model``'s parameter and state regions (what an interrupted epoch rolls
        back to), in two buffers this step keeps for the next call: a fresh copy every epoch
        faulted in ~1 MB of new pages each time (0.4-0.5 ms per epoch for the 784-256-128-10
        network, benchmarks/README.md). ``params`` False: the parameter region itself stands
        for its copy (a sharded epoch trains the window's parameters and writes the model's
        only at its end, after the last roll-back point)."""
        p, s = model._param_region, model._state_region
        kept = self._snapshot
        if kept is None or kept[0].shape != p.shape or kept[1].shape != s.shape:
            kept = self._snapshot = (np.empty_like(p), np.empty_like(s))
        np.copyto(kept[1], s)
        if not params:
            return p, kept[1]
        np.copyto(kept[0], p)
        return kept

    def staging(self, feeds: dict[str, np.ndarray], cap: int) -> dict[str, np.ndarray]:
        """Buffers for ``cap`` rows of each of ``feeds`` (a rank's rows of a batch, gathered),
        kept for the next fit with inputs of the same row shapes and dtypes: new ones are
        faulted in page by page during the first epoch's gathers."""
        want = {name: ((cap,) + a.shape[1:], a.dtype) for name, a in feeds.items()}
        kept = self._stage
        if kept is None or {k: (v.shape, v.dtype) for k, v in kept.items()} != want:
            kept = self._stage = {name: np.empty(sh, dt) for name, (sh, dt) in want.items()}
        return kept

    def bind_workspace(self, cap: int) -> None:
        """Make this step's buffer the workspace of both entries (for up to ``cap`` rows)."""
        for e in (self.grads, self.update):
            e.use_workspace(self.workspace, cap)

    def _bind_shards(self, jit: Any, name: str, flag_bytes: int) -> None:
        """Set up the update that sums the window's slots (see shard_update)."""
        w, plan = self.window, self.plan
        assert w is not None and plan is not None
        if self.shares_params:
            assert w.shared is not None
            self.params = w.shared  # the parameters every rank trains with, in shared memory
            self.bounds = [plan.bounds(w.k, j) for j in range(w.k)]
        else:  # every rank its own parameters, all of them
            self.params = None
            self.bounds = [(0, plan.elements)] * w.k
        self.lo, self.hi = self.bounds[w.r]
        grad0 = self.HEAD + plan.offset("grad")  # element 0 of the flat update's gradient
        self.gtable = (ctypes.c_void_p * w.k)(*[address(sl) + grad0 for sl in w.slots])
        self.slot_flags = [
            sl[self.HEAD - flag_bytes : self.HEAD].view(self.dtype) for sl in w.slots
        ]
        self._summed = np.zeros(self.FLAGS, self.dtype)
        self.shard_fn = ctypes.CFUNCTYPE(
            ctypes.c_int32, *(ctypes.c_void_p,) * 4, *(ctypes.c_int64,) * 2, ctypes.c_void_p,
            ctypes.c_int64,
        )(jit.address(f"{name}_apply_update_shard"))  # fmt: skip
        self._napping = False
        self.update._set_inputs(self.update_arrays)
        # the parameters the entries read: the window's (from_buffer on its memory is slow), or
        # the model's own (params never move: runtime.executable)
        self.params_at = address(self.params) if self.shares_params else self.update._args[0]
        a = self.update._args
        self._shard_args = (self.params_at, a[1], a[2], ctypes.addressof(self.update.inputs),
                            self.lo, self.hi, ctypes.addressof(self.gtable), w.k)  # fmt: skip
        # the native epoch's all-reduce (codegen.epoch: CTL); fit sets the per-epoch words;
        # with shared parameters the native epoch trains the window's and updates this
        # rank's shard (lo..hi), as shard_update does
        assert self.FLAGS == epoch_abi.FLAGS
        c = self.ctl
        self._flag_table = (ctypes.c_void_p * w.k)(*[address(f) for f in self.slot_flags])
        c[epoch_abi.CTL_ARRIVED] = address(w.arrived)
        c[epoch_abi.CTL_FLAGS] = ctypes.addressof(self._flag_table)
        c[epoch_abi.CTL_GRADS] = ctypes.addressof(self.gtable)
        c[epoch_abi.CTL_SUMMED] = address(self.native_summed)
        c[epoch_abi.CTL_LO], c[epoch_abi.CTL_HI] = self.lo, self.hi
        c[epoch_abi.CTL_GRAD], c[epoch_abi.CTL_GRAD_BYTES] = address(self.grad), self.grad.nbytes
        c[epoch_abi.CTL_SHARD] = jit.address(f"{name}_apply_update_shard")
        self.native_reduce = True

    def _faster_sharded(self, model: Any, jit: Any, name: str, flag_bytes: int) -> bool:
        """Whether the sharded update is faster than the summed one on these ranks (collective
        over the window's ranks; GRAPHC_MPI_SHARD=auto, the default). Both give the same
        parameters bit for bit, but which is faster changes from one launch to the next on
        the same machine (benchmarks/README.md: the sharded update's part 0.019 ms per step
        in some launches and 0.064 in others, the summed one's 0.041-0.051): so each kept
        window times both, PROBE_ROUNDS times, interleaved, as a step runs them: this rank's
        gradients written, barrier, NAME_apply_update_shard (all elements on a scratch copy
        of the parameters, or this rank's shard of the window's shared parameters; a scratch
        copy of the optimizer state, lr 0), barrier, every parameter read (the next forward
        pass). The slower rank's medians decide; the sharded update must win by
        PROBE_MARGIN. The window's shared parameters are scratch until fit's share_params
        fills them. About 1 ms, once per window."""
        from mpi4py import MPI

        w = self.window
        assert w is not None and w.shared is not None
        params = aligned_empty(model._param_region.nbytes)
        np.copyto(params, model._param_region.view(np.uint8))
        state = model._state_region.copy()
        times: list[list[float]] = [[], []]
        for _ in range(PROBE_ROUNDS):
            for sharded in (False, True):
                self.shares_params = sharded
                self._bind_shards(jit, name, flag_bytes)
                args = list(self._shard_args)
                args[0] = address(w.shared) if sharded else address(params)
                args[1] = address(state)
                self.grad[...] = 0  # written by this rank, as train_grads leaves them
                w._barrier(False)
                t0 = time.perf_counter()
                self.shard_fn(*args)  # (lr 0, scratch copies: a nonzero code changes nothing)
                w._barrier(False)
                read = w.shared if sharded else params
                np.bitwise_or.reduce(read[: read.size - read.size % 8].view(np.uint64))
                times[sharded].append(time.perf_counter() - t0)
        worst = np.array([statistics.median(t) for t in times])
        w.comm.Allreduce(MPI.IN_PLACE, worst, op=MPI.MAX)
        global LAST_PROBE
        LAST_PROBE = (float(worst[0]), float(worst[1]))
        return bool(worst[1] < worst[0] * (1 - PROBE_MARGIN))

    def share_params(self, model: Any, napping: bool = False) -> None:
        """Collective over the window's ranks: rank 0 copies ``model``'s parameters into the
        shared parameters that the sharded epochs train (every rank holds the same ones).
        Nothing without shared parameters."""
        assert self.window is not None
        if not self.shares_params:
            return
        if self.window.r == 0:
            np.copyto(self.params, model._param_region.view(np.uint8))
        self.window._barrier(napping)

    def gather(self, model: Any, comm: Any) -> None:
        """After sharded steps (collective): the shared parameters into ``model``'s, and each
        rank's shard of the optimizer state (the flat update's state buffers; the scalar state,
        the step counter, every rank updated whole) to every rank (MPI_Allgatherv in place)."""
        from mpi4py import MPI

        np.copyto(model._param_region.view(np.uint8), self.params)
        plan = self.plan
        counts = [(hi - lo) * plan.itemsize for lo, hi in self.bounds]
        displs = [lo * plan.itemsize for lo, _ in self.bounds]
        state = model._state_region.view(np.uint8)
        for region, off in plan.buffers:
            if region == "state":
                part = state[off : off + plan.elements * plan.itemsize]
                comm.Allgatherv(MPI.IN_PLACE, [part, counts, displs, MPI.BYTE])

    def shard_update(self, model: Any) -> None:
        """The second half of a step with the summed or sharded update, after ``allreduce``
        and the ranks' decision to apply it (the call-out's; native-reduce epochs run the same
        natively): NAME_apply_update_shard sums the gradients over the slots (rank order, as
        the whole-vector sum) as it applies the update: the summed update over all elements
        of this rank's own parameters and optimizer state; the sharded one
        (GRAPHC_MPI_SHARD=1) over this rank's shard (elements lo..hi) of the shared
        parameters and of its optimizer state (the scalar kernels whole); then the window's
        barrier, after which every rank may write its slot again and trains the next step
        with all of it updated. Bit for bit the parameters of the sum and apply_update."""
        rc = self.shard_fn(*self._shard_args)
        if rc:
            raise _native_error(rc, self.update)
        self.window._barrier(self._napping)

    def allreduce(self, comm: Any, MPI: Any, napping: bool) -> None:
        """Sum ``reduced`` (flags and gradients) over the ranks, in place: through the
        shared-memory window when the step has one, else MPI_Allreduce (see ``allreduce``);
        ``summed`` then holds the summed flags. While ``sharding``: only the window's first
        barrier and the flags' sum (into ``summed``), the gradients are summed by
        shard_update."""
        if self.sharding:
            marks = [time.perf_counter_ns()] if TIMELINE is not None else None
            self._napping = napping
            assert self.window is not None
            self.window._barrier(napping)
            if marks is not None:
                marks.append(time.perf_counter_ns())
            f = self._summed
            np.copyto(f, self.slot_flags[0])
            for other in self.slot_flags[1:]:
                f += other  # rank order, as NAME_reduce_slots
            self.summed = f
            if marks is not None:
                marks += [time.perf_counter_ns()] * 2
                TIMELINE.append(tuple(marks))
            return
        self.summed = self.flags
        if TIMELINE is None:
            if self.window is not None:
                self.window.reduce(napping)
            else:
                allreduce(comm, self.reduced, MPI, napping)
            return
        marks = [time.perf_counter_ns()]
        if self.window is not None:
            self.window.reduce(napping, marks)
        else:
            allreduce(comm, self.reduced, MPI, napping)
            marks += [marks[0]] * 2  # no separate wait and sum to tell apart
        marks.append(time.perf_counter_ns())
        TIMELINE.append(tuple(marks))

    def close(self) -> None:
        """Free the shared-memory window (collective over the ranks that share it); the entries
        then allocate workspaces of their own again on their next call."""
        if self.window is None:
            return
        for e in (self.grads, self.update):
            e.release_workspace()
        self.buffer = self.workspace = self.flags = self.grad = self.reduced = None  # type: ignore[assignment]
        self.plan = self.params = self.slot_flags = None  # type: ignore[assignment]
        self.window.free()
        self.window = None

    def arrays(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The input arrays of train_grads: ``feeds`` plus loss_scale and row0."""
        extra = {"loss_scale": self.scale, "row0": self.row0}
        return [extra[s] if s in extra else feeds[s] for s in self.gslots]

    def native_epoch(
        self, feeds: dict[str, np.ndarray], stage: dict[str, np.ndarray], n: int, k: int, r: int
    ) -> Any:
        """A function ``run(order, batch, first_step, end_step, reduce, scan=False) -> (rc,
        at)`` running global steps ``first_step..end_step-1`` of an epoch in one native call
        (train_grads on this rank's rows gathered from ``feeds`` into ``stage``,
        ``reduce(step, rows)``, apply_update while it returns 0 — or, with ``ctl[CTL_FAST]``
        set by the caller, the entry's own all-reduce and summed update instead of ``reduce``,
        ERR_DECIDE when the summed flags need the caller, codegen.epoch; ``at``: the step at
        which the call ended); None when the module has no such entry. ``run.phase()`` is 3
        when a native-reduce call ended in the update. With ``scan`` the gather
        runs train_grads' row checks, and ``run.rejected()`` says, inside ``reduce``, whether
        this rank's rows of that step failed one (the checked entry's code, else 0; the step's
        train_grads did not run). ``feeds`` (``n`` rows) are checked here against train_grads'
        input types."""
        if self.epoch_fn is None:
            return None
        data = self.arrays(feeds)
        self.grads.check(data, n)
        g, u = self.grads, self.update
        slots = len(self.gslots)
        inputs = (ctypes.c_void_p * max(1, slots))(*[address(a) for a in data])
        staging = (ctypes.c_void_p * max(1, slots))(
            *[address(stage[s]) if s in stage else None for s in self.gslots]
        )
        u._set_inputs(self.update_arrays)
        at = np.zeros(3, np.int64)  # the step being run, go on (set by the call-out), rejected
        target: list[Any] = [None]  # the running epoch's reduce

        def call_out(s: int, rows: int) -> None:
            go = target[0](s, rows)  # 0: apply_update, 2: updated (shard_update), else stop
            at[1] = 1 if go == 0 else 2 if go == 2 else 0

        cb = REDUCE(call_out)  # one C thunk for every epoch of the fit
        cb_address = ctypes.cast(cb, ctypes.c_void_p).value
        keep = (data, inputs, staging, at, cb)

        def run(
            order: np.ndarray, batch: int, first: int, end: int, reduce: Any, scan: bool = False
        ) -> tuple:
            assert order.dtype == np.int64 and order.shape == (n,) and order.flags.c_contiguous
            target[0] = reduce
            at[2] = 0
            a = g._args
            params = self.params_at if self.sharding else a[0]
            rc = self.epoch_fn(
                params, a[1], a[2], ctypes.addressof(inputs), a[4], n, address(order), batch,
                ctypes.addressof(staging), k, r, first, end, ctypes.addressof(u.inputs),
                cb_address, address(at), int(bool(scan)), address(self.ctl),
            )  # fmt: skip
            return int(rc), int(at[0])

        run.keep = keep  # type: ignore[attr-defined]  # the pointers above stay valid
        run.rejected = lambda: int(at[2])  # type: ignore[attr-defined]
        run.phase = lambda: int(at[1])  # type: ignore[attr-defined]  # 3: in the update
        return run


# The SplitStep of the last distributed fit that got a shared-memory window, kept for the
# next fit of the same model on the same ranks: (weak reference to the model, communicator,
# rows, the step). See split_step.
_KEPT: list[Any] = []


def split_step(model: Any, cap: int, comm: Any, how: str, strict: bool) -> SplitStep:
    """The SplitStep of ``fit``: ``SplitStep(model, cap, comm, how, strict)``, collective.

    A step with a shared-memory window is kept after fit returns and serves the next fit of
    the same model over the same communicator for the same rows per rank: allocating,
    zeroing and freeing the window (``MPI_Win_allocate_shared``, ``MPI_Win_free``: both
    collective, with barriers) cost 2.7 ms per fit, 0.021 ms per step of the benchmark's
    two-epoch fits at batch 256 (benchmarks/README.md). At most one step is kept per
    process: another model, communicator, row count or reduce mode frees it first
    (collectively: every rank runs the same fits in the same order, with arguments fit
    checks to be equal). The kept window is freed at interpreter exit, before mpi4py's
    ``MPI_Finalize`` (atexit runs handlers in reverse order of registration, and mpi4py
    registered its own when it was imported, before this one)."""
    if getattr(model.program, "ranks_note", ""):  # every rank: the same model, the same raise
        raise DistributedError(f"this model cannot train data-parallel: {model.program.ranks_note}")
    if _KEPT:
        ref, kcomm, kcap, kept = _KEPT[0]
        if ref() is model and kcomm is comm and kcap == cap and how == "window":
            kept.bind_workspace(cap)  # another SplitStep of the model may have taken them
            return kept  # the window's slots still hold the padding's zeros
        _KEPT.clear()
        kept.close()  # collective: every rank drops it in the same fit
    step = SplitStep(model, cap, comm, how, strict)
    if step.window is not None:
        import atexit
        import weakref

        if not _registered:
            atexit.register(_free_kept)
            _registered.append(True)
        _KEPT.append((weakref.ref(model), comm, cap, step))
    return step


_registered: list[bool] = []


def _free_kept() -> None:
    """Free the kept step's window (at exit, before MPI_Finalize; nothing once MPI ended),
    after this rank's exit note (freeing is collective: a rank still waiting to enter a fit
    must learn first that this one will not come)."""
    if not _KEPT:
        return
    kept = _KEPT.pop()[3]
    from mpi4py import MPI

    if MPI.Is_initialized() and not MPI.Is_finalized():
        _announce_exit(MPI)
        kept.close()


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
    stop_on_nonfinite: bool = True,
    scan: bool = False,
) -> Any:
    """The distributed body of ``Model.fit`` (see the module docstring); ``feeds`` and
    ``validation`` were checked by the caller, except, with ``scan``, the float inputs'
    NaN/Inf (and [0, 1] targets) of the training rows, which the first epoch's native gathers
    check instead (each rank the rows it gathers: together every row once; a rejection travels
    in that step's all-reduce flags), without a separate pass over the data up front. Fills
    and returns ``history`` (with ``history.step_losses``: the loss of every global
    mini-batch, in order).

    Raises:
        DistributedError: ranks that disagree on the data or the arguments.
        NumericsError: (``stop_on_nonfinite``) on every rank at the same step, when the loss
            of a global batch is not finite; that step's update is not applied.
        DataRejected: (``scan``) on every rank at the same step, when a rank's gathered rows
            failed a check; the first epoch is undone.
    """
    comm = world(comm)
    world()  # (an uncaught exception on one rank then ends the job: abort_when_uncaught)
    k, r = comm.Get_size(), comm.Get_rank()
    # Every rank must train on the same rows with the same arguments: compare (cheap) digests.
    vfeeds = validation[0] if validation is not None else {}
    mine = (
        n,
        batch_size,
        epochs,
        initial_epoch,
        seed,
        bool(shuffle),
        bool(stop_on_nonfinite),
        os.environ.get("GRAPHC_MPI_WAIT", ""),
        os.environ.get("GRAPHC_MPI_REDUCE", ""),
        os.environ.get("GRAPHC_MPI_SHARD", ""),
        model.program.name,
        model.param_count,
        tuple((name, a.shape, str(a.dtype), _digest(a)) for name, a in sorted(feeds.items())),
        tuple((name, a.shape, str(a.dtype), _digest(a)) for name, a in sorted(vfeeds.items())),
    )
    # The loop every rank runs must be the same (their barriers differ): the per-step Python
    # loop when any rank has batch callbacks or use_epoch_entry off, the native epoch with its
    # all-reduce inside only when no rank records TIMELINE. Callbacks may differ between ranks
    # (Horovod's custom: logging on rank 0 only).
    cbs = CallbackList(callbacks)
    paths = (
        bool(model.use_epoch_entry and not cbs.has_batch_hooks),
        TIMELINE is None,
        scan,
        bool(callbacks),
    )
    # with rank 0's learning rates (as a broadcast would give them) and every rank's cores
    rates = (float(model.lr), float(model.initial_lr))
    gathered = comm.allgather((mine, paths, rates, rank_cores()))
    everyone = [e[0] for e in gathered]
    native_ok = all(e[1][0] for e in gathered)
    fast_ok = all(e[1][1] for e in gathered)
    scans = [bool(e[1][2]) for e in gathered]  # Model.fit's choice, from the rank's callbacks
    # callbacks on any rank: rank 0's learning rate, parameters and optimizer state are sent
    # to every rank after the callbacks of each epoch's start and of the training's end
    synced = any(e[1][3] for e in gathered)
    differ = [i for i, x in enumerate(everyone) if x != everyone[0]]
    if differ:
        raise DistributedError(_disagreement(differ[0], everyone[differ[0]], everyone[0]))
    wait_mode()  # a bad value raises here, on every rank alike
    how = choose_reduce(comm, reduce_mode())  # the same on every rank
    bs = min(batch_size, n)
    cap = -(-bs // k)
    step = split_step(model, cap, comm, how, strict=reduce_mode() == "window")  # a collective
    global LAST_REDUCE, LAST_SCAN
    LAST_REDUCE = step.how
    stage = step.staging(feeds, cap)
    scan = all(scans) and step.epoch_fn is not None and native_ok
    if any(scans) and not scan:  # a rank left its float rows to a scan that will not run:
        model._validate(feeds, False, comm)  # up front after all (collective: every rank)
    LAST_SCAN = "epoch" if scan else "up front"
    threads, default = model.threads, getattr(model, "_threads_default", False)
    share = thread_share(comm, [e[3] for e in gathered])
    if default:  # not chosen by the user: no more threads on a machine than its cores
        model.threads = min(threads, share)
    requests = _StopRequests()
    model._dist_rank = r
    outcome: _Agreed | None = None
    try:
        with abort_on_error(comm, f"fit (epoch loop of {k} ranks)"):
            comm.Bcast(model._param_region, root=0)
            comm.Bcast(model._state_region, root=0)
            model.lr, model.initial_lr = gathered[0][2]  # rank 0's (schedules start from it)
            cbs.train_begin(model)
            try:
                _epochs(
                    model, comm, step, stage, feeds, n, bs, validation, history, progress,
                    epochs=epochs, initial_epoch=initial_epoch, shuffle=shuffle, seed=seed,
                    cbs=cbs, requests=requests, stop_on_nonfinite=stop_on_nonfinite, scan=scan,
                    native_ok=native_ok, fast_ok=fast_ok, synced=synced,
                    kept=kept_counts(model, feeds, n),
                )  # fmt: skip
            except _Agreed as e:  # every rank, at the same step: not a failure of one rank
                outcome = e
            cbs.train_end(model, history)
            if synced:  # (EarlyStopping's restore_best_weights on some ranks only)
                _from_rank0(model, comm)
            # the step (its shared-memory window) stays for the next fit: see split_step
    finally:
        requests.restore()
        model.threads = threads
        model._threads_default = default
        model._dist_rank = 0
        progress.close()
    if outcome is not None and outcome.error is not None:
        raise outcome.error
    return history


_AGREED_FIELDS = (
    "rows", "batch_size", "epochs", "initial_epoch", "seed", "shuffle", "stop_on_nonfinite",
    "GRAPHC_MPI_WAIT", "GRAPHC_MPI_REDUCE", "GRAPHC_MPI_SHARD", "model", "parameter count",
    "training data (input, shape, dtype, digest)", "validation data (input, shape, dtype, digest)",
)  # fmt: skip


def _disagreement(r: int, theirs: tuple, first: tuple) -> str:
    """fit's refusal when rank ``r``'s agreement tuple ``theirs`` differs from rank 0's
    ``first``: names every field that differs, with both values."""
    what = "; ".join(
        f"{name}: {a!r} vs {b!r}"
        for name, a, b in zip(_AGREED_FIELDS, theirs, first, strict=True)
        if a != b
    )
    return (
        f"rank {r} calls fit with other data or arguments than rank 0 ({what}); every rank "
        "must pass the same (all the rows: fit splits each global batch over the ranks itself)"
    )


def _from_rank0(model: Any, comm: Any) -> None:
    """Rank 0's parameters, optimizer state and learning rate on every rank (collective):
    after callbacks, which may differ between ranks, changed them on some ranks only."""
    comm.Bcast(model._param_region, root=0)
    comm.Bcast(model._state_region, root=0)
    lr = np.array([model.lr], np.float64)
    comm.Bcast(lr, root=0)
    if float(lr[0]) != model.lr:
        model.lr = float(lr[0])


def _sync_batch_callbacks(model: Any, comm: Any, MPI: Any, written: int) -> int:
    """After a step's batch callbacks, when callbacks run on some ranks (collective): rank 0's
    learning rate on every rank, and rank 0's parameters and optimizer state when a callback
    on any rank wrote weights since ``written`` (``model._weights_written``: set_weights,
    initialize, load); one Allreduce of [rank 0's lr, ranks that wrote], a broadcast only
    then. Returns the counter to compare with next time. Weights written in place through
    ``model.params`` arrays are not seen here: they reach the other ranks at the next epoch's
    start (rank 0's), as every callback's changes do."""
    now = getattr(model, "_weights_written", 0)
    sent = np.array([model.lr if comm.Get_rank() == 0 else 0.0, float(now != written)])
    comm.Allreduce(MPI.IN_PLACE, sent, op=MPI.SUM)  # adding zeros: rank 0's lr exactly
    if float(sent[0]) != model.lr:
        model.lr = float(sent[0])
    if sent[1] > 0:
        comm.Bcast(model._param_region, root=0)
        comm.Bcast(model._state_region, root=0)
    return now


def rank_cores() -> list[int]:
    """The cores this process may run on (``os.sched_getaffinity``; all of them where the
    system does not say), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def thread_share(comm: Any, cores: list[list[int]] | None = None) -> int:
    """The threads one rank should use so that the ranks of this machine do not run more
    threads than they have cores: the rank's cores (``rank_cores``) divided by the most ranks
    of the machine (``node_peers``) that share one of them (all ranks of the machine when
    unbound, 1 with ``mpirun --bind-to core``). The rule of ``torchrun``, which sets
    OMP_NUM_THREADS=1 for several processes per machine, refined by the binding. At least 1.
    ``cores``: every rank's ``rank_cores()``, in rank order, where the caller gathered them
    (fit: in its first allgather); else gathered here (a collective)."""
    if cores is None:
        cores = comm.allgather(rank_cores())
    mine = set(cores[comm.Get_rank()])
    sets = [set(cores[j]) for j in node_peers(comm)]
    sharing = max(sum(c in s for s in sets) for c in mine)
    return max(1, len(mine) // max(1, sharing))


WAIT_MODES = ("auto", "spin", "sleep")
AUTO_NAP = 0.1  # "auto" naps through an epoch after one whose ranks waited this much for a core


def wait_mode() -> str:
    """How a rank waits in the step's all-reduce: ``$GRAPHC_MPI_WAIT``, "auto" (default),
    "spin" or "sleep".

    "spin": ``MPI_Allreduce``, whose shared-memory transport polls until the other ranks
    arrive: fastest on free cores (0.15 ms for the 0.94 MB gradient of the 784-256-128-10
    network on 2 ranks). "sleep": ``MPI_Iallreduce``, polled with ``MPI_Test`` for 0.2 ms and
    then between sleeps of 50 µs, so a waiting rank yields its core and keeps the scheduler's
    wake-up credit: where other work competes for the cores (load average 7 on 2 cores,
    interleaved runs of the benchmark's fit) steps ran 1.6 to 3 times faster than with "spin",
    but on free cores Open MPI's nonblocking all-reduce took 0.43 instead of 0.15 ms. "auto":
    "spin", and "sleep" through each epoch after one in which the ranks spent on average more
    than AUTO_NAP of their time waiting for a core (their run-queue delay, from
    /proc/thread-self/schedstat; "spin" where the kernel does not say), decided from figures
    all ranks share, so every rank switches at the same step. Every rank must be given the
    same mode (fit checks)."""
    mode = os.environ.get("GRAPHC_MPI_WAIT", "").strip().lower() or "auto"
    if mode not in WAIT_MODES:
        raise ArgumentError(f"GRAPHC_MPI_WAIT must be one of {WAIT_MODES}, got {mode!r}")
    return mode


_SCHEDSTAT: list[int] = []  # [thread ident, descriptor of its /proc/thread-self/schedstat]


def cpu_wait() -> float:
    """Seconds the calling thread has been runnable but waiting for a CPU (its run-queue
    delay, /proc/thread-self/schedstat); nan where the kernel does not say.

    The file stays open (one descriptor per process, reopened when another thread asks) and
    is re-read with ``os.pread``: fit reads it at both ends of every epoch, right after a
    native epoch has evicted the interpreter from the caches, where ``open`` + ``read`` took
    0.5-0.6 ms each time on this project's host."""
    me = threading.get_ident()
    for fresh in (False, True):  # a stale descriptor (its thread gone, the ident reused): reopen
        try:
            if fresh or not _SCHEDSTAT or _SCHEDSTAT[0] != me:
                if _SCHEDSTAT:
                    os.close(_SCHEDSTAT.pop())
                    _SCHEDSTAT.clear()
                fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
                _SCHEDSTAT[:] = [me, fd]
            return int(os.pread(_SCHEDSTAT[1], 256, 0).split()[1]) * 1e-9
        except (OSError, IndexError, ValueError, AttributeError):
            continue
    return float("nan")


def allreduce(comm: Any, buf: np.ndarray, MPI: Any, napping: bool) -> None:
    """In-place sum of ``buf`` over the ranks, waiting as ``wait_mode`` says."""
    if not napping:
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return
    req = comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    t0 = time.perf_counter()
    while not req.Test():
        if time.perf_counter() - t0 > 2e-4:
            time.sleep(5e-5)


class _Agreed(Exception):
    """Raised on every rank at the same step (the flags travel in the gradients' all-reduce):
    ``error`` None for a stop request (fit returns), else the error fit raises."""

    def __init__(self, error: BaseException | None) -> None:
        super().__init__(str(error))
        self.error = error


class DataRejected(Exception):
    """Raised by ``fit`` on every rank at the same step when the first epoch's scan of the
    gathered rows (``scan``) found a bad one on some rank: that step was not applied and the
    epoch was rolled back (parameters and optimizer state as before fit). Model.fit then runs
    the up-front data check over all rows, collectively, and raises its ArgumentError (the
    first bad row and the count over all rows) on every rank; ``code``: the checked entry's
    code on this rank (0 where this rank's rows passed), for the message should that check
    find nothing."""

    def __init__(self, code: int, ranks: int) -> None:
        super().__init__(f"the first epoch's data scan rejected rows on {ranks} rank(s)")
        self.code, self.ranks = code, ranks


class _StopRequests:
    """SIGINT (Ctrl-C) and SIGTERM (what ``mpirun`` sends every rank when it is interrupted,
    SIGKILL following ``odls_base_sigkill_timeout`` = 1 s later) while a distributed fit runs
    in the main thread with the default handlers: the first is recorded (``pending``, and
    ``flag`` for native code) and travels in the next step's all-reduce or the epoch-end
    gather, so that every rank stops at the same step; a second one acts at once (KeyboardInterrupt, which ends the job through MPI_Abort; or the
    default action of SIGTERM)."""

    def __init__(self) -> None:
        self.pending = 0
        self.flag = np.zeros(1, np.int64)  # pending, for native code (codegen.epoch CTL_STOP)
        self.raised = False
        self.old: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                if signal.getsignal(s) in (signal.default_int_handler, signal.SIG_DFL):
                    self.old[s] = signal.signal(s, self._handler)
            except (ValueError, OSError):
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.pending:
            self.pending = self.flag[0] = signum
            return
        self.restore()
        if signum == signal.SIGINT:
            self.raised = True  # it may escape a native epoch's call-out (see _epochs)
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)
        self.old = {}


def _digest(a: np.ndarray) -> int:
    """A cheap digest of an array: a CRC of up to 64 values of each of up to 64 rows, both
    spread evenly over the array (rows in another order, other rows or other values in most
    columns change it). 16 KB at most: the CRC of 64 whole rows of 784 float32 took 72 µs of
    every distributed fit."""
    import zlib

    def spread(count: int) -> np.ndarray:
        return np.linspace(0, count - 1, num=min(count, 64)).astype(np.int64)

    if not a.size:
        return zlib.crc32(b"")
    flat = a.reshape(len(a), -1)
    return zlib.crc32(
        np.ascontiguousarray(flat[spread(len(a))][:, spread(flat.shape[1])]).tobytes()
    )


def _epochs(
    model, comm, step, stage, feeds, n, bs, validation, history, progress, *, epochs,
    initial_epoch, shuffle, seed, cbs, requests, stop_on_nonfinite, scan=False,
    native_ok, fast_ok, synced=False, kept=None,
) -> None:  # fmt: skip
    from mpi4py import MPI

    k, r = comm.Get_size(), comm.Get_rank()
    grads, update = step.grads, step.update
    flags = step.flags
    mode = wait_mode()
    napping = mode == "sleep"
    steps = -(-n // bs)
    # this rank's share of every step's loss, its waiting share and whether a stop request is
    # pending: sent in one Allgather
    sent, everyone = np.zeros(steps + 2, np.float64), np.zeros((k, steps + 2), np.float64)
    mine = sent[:steps]
    sizes = np.minimum(bs, n - np.arange(steps) * bs)  # rows of each global batch
    decided = np.zeros(2, np.float64)  # rank 0's [stop, lr] after the epoch's callbacks
    checked: set[int] = set()
    # one native call per epoch unless batch callbacks must run between the steps
    native = step.native_epoch(feeds, stage, n, k, r) if native_ok else None
    global LAST_PATH, LAST_UPDATE
    LAST_PATH = "python" if native is None else "native"
    LAST_UPDATE = "whole"
    for epoch in range(initial_epoch, epochs):
        cbs.epoch_begin(model, epoch)
        if synced:  # a schedule or a callback that set weights on some ranks only: rank 0's
            _from_rank0(model, comm)
        written = getattr(model, "_weights_written", 0)
        t0, w0 = time.perf_counter(), cpu_wait()
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        # a mean over the rows the loss keeps: each step's loss_scale (else count / big)
        scales = None if kept is None else kept_scales(kept[order], bs, k, r)
        # Until the epoch is in the history, a stop request goes back here.
        start = step.snapshot(model, params=not (native is not None and step.shares_params))
        done = len(history.epochs)
        total = 0.0

        def agree(s: int, big: int, rejected: int = 0) -> float:
            """Step ``s``'s all-reduce (flags and gradients) and what every rank then decides:
            the global batch's loss, or _Agreed raised (rows rejected by the scan, stop
            request, non-finite loss). ``rejected``: this rank's scan code for the step."""
            flags[0] = 0.0 if math.isfinite(mine[s]) else 1.0
            flags[1] = mine[s]
            flags[2] = 1.0 if requests.pending else 0.0
            flags[3] = 1.0 if rejected else 0.0
            step.allreduce(comm, MPI, napping)
            # the sums (in this rank's flags, or beside them: sharding)
            return decide(s, big, step.summed, rejected)

        def decide(s: int, big: int, got: np.ndarray, rejected: int) -> float:
            """What every rank decides from step ``s``'s summed flags ``got`` (the same on
            every rank): the global batch's loss, or _Agreed raised."""
            if got[3] > 0:  # bad rows (the first epoch's scan): undone, as if never begun
                model._param_region[...], model._state_region[...] = start
                history.truncate(done)
                raise _Agreed(DataRejected(rejected, int(got[3])))
            if got[2] > 0:  # a rank was asked to stop: all undo the unfinished epoch
                model._param_region[...], model._state_region[...] = start
                history.truncate(done)
                history.interrupted = True
                if r == 0:
                    log.warning(
                        "fit: interrupted (SIGINT/SIGTERM on %d of %d ranks) after %d finished "
                        "epoch(s); the parameters, optimizer state and step counter are those at "
                        "the end of the last finished epoch (resume with initial_epoch=%d)",
                        int(got[2]), k, done, initial_epoch + done,
                    )  # fmt: skip
                raise _Agreed(None)
            batch_loss = float(got[1])
            if stop_on_nonfinite and (got[0] > 0 or not math.isfinite(batch_loss)):
                lo = s * bs
                raise _Agreed(_nonfinite(epoch, s, order[lo : lo + big], batch_loss, got[0], k))
            return batch_loss

        if native is not None:  # the epoch in one native call, the all-reduce a call-out
            failed: list[BaseException] = []
            reduced = [-1]
            scanning = scan and epoch == initial_epoch  # every row passes one rank's gather

            def reduce(s: int, count: int) -> int:
                nonlocal total
                try:
                    reduced[0] = s
                    big = min(bs, n - s * bs)
                    rejected = native.rejected() if scanning else 0
                    if count:
                        ratio = count / big if scales is None else float(scales[s])
                        mine[s] = float(grads.out_arrays[0]) * ratio
                    else:  # fewer rows than ranks: this rank adds nothing to the sum
                        step.grad[...] = 0
                        mine[s] = 0.0
                    total += agree(s, big, rejected) * big
                    if sharded:
                        step.shard_update(model)
                        return 2  # updated: the entry goes on without apply_update
                    return 0
                except BaseException as e:
                    failed.append(e)
                    return 1

            step.lr[...] = model.lr
            sharded = step.plan is not None
            LAST_UPDATE = "shard" if step.shares_params else "summed" if sharded else "whole"
            if sharded:  # the shared parameters from the model's (callbacks may set them)
                step.share_params(model, napping)
            step.sharding = sharded
            # the all-reduce in the entry itself (no call-out), for spinning waits
            fast = step.native_reduce and not napping and fast_ok
            LAST_PATH = "native-reduce" if fast else "native"
            step.ctl[epoch_abi.CTL_SCALES] = 0 if scales is None else address(scales)
            if fast:
                c = step.ctl
                c[epoch_abi.CTL_LOSSES] = address(sent)
                c[epoch_abi.CTL_STOP] = address(requests.flag)
                c[epoch_abi.CTL_NONFINITE] = int(stop_on_nonfinite)
            try:
                if fast:
                    step.ctl[epoch_abi.CTL_FAST] = 1
                    rc, at = _native_chunks(native, order, bs, steps, reduce, scanning)
                else:
                    rc, at = native(order, bs, 0, steps, reduce, scanning)
            finally:
                step.sharding = False
                c = step.ctl  # no pointers into this fit's memory kept with the step
                c[epoch_abi.CTL_FAST] = c[epoch_abi.CTL_LOSSES] = c[epoch_abi.CTL_STOP] = 0
                c[epoch_abi.CTL_SCALES] = 0
            if rc == ERR_DECIDE:  # every rank at step ``at``: the update was not applied
                lo = at * bs
                try:
                    decide(at, min(bs, n - lo), step.native_summed, native.rejected())
                except BaseException as e:  # the steps before it stay (a non-finite loss):
                    if step.shares_params and _keeps_steps(e):  # the window's parameters
                        step.gather(model, comm)  # collective: every rank decided alike
                    raise
                raise DistributedError(f"step {at}: the ranks' summed flags asked for no decision")
            if step.shares_params and (_keeps_steps(failed[0]) if failed else rc == 0):
                step.gather(model, comm)  # collective: every rank gets here at the same step
            if failed:
                raise failed[0]
            if rc == ERR_REDUCE and requests.raised:  # escaped the call-out (see epoch.py)
                raise KeyboardInterrupt
            if rc:  # the update's code: after the call-out (reduced), or in the entry (phase 3)
                in_update = reduced[0] == at or (fast and native.phase() == 3)
                raise _native_error(rc, update if in_update else grads)
        for s in range(steps) if native is None else ():
            lo = s * bs
            big = min(bs, n - lo)
            cbs.batch_begin(s, {"batch": s, "size": big})
            if synced:  # batch callbacks may have set lr or weights on some ranks only
                written = _sync_batch_callbacks(model, comm, MPI, written)
            first, count = shard(big, k, r)
            if count:
                idx = order[lo + first : lo + first + count]
                local = {name: st[:count] for name, st in stage.items()}
                for name, a in feeds.items():
                    np.take(a, idx, axis=0, out=local[name])
                ratio = count / big if scales is None else float(scales[s])
                step.scale[...] = ratio
                if step.row0 is not None:
                    step.row0[...] = first
                arrays = step.arrays(local)
                if count not in checked:
                    grads.check(arrays, count)
                    checked.add(count)
                loss = float(grads(arrays, count, checked=False, scan=False)[0])
                mine[s] = loss * ratio
            else:  # fewer rows than ranks: this rank adds nothing to the sum
                step.grad[...] = 0
                mine[s] = 0.0
            batch_loss = agree(s, big)
            step.lr[...] = model.lr
            update(step.update_arrays, 1, checked=False)
            total += batch_loss * big
            logs = {"batch": s, "size": big, "loss": total / (lo + big), "batch_loss": batch_loss}
            cbs.batch_end(s, logs)
        # every rank's step losses and waiting share in one buffer-based allgather, few numpy
        # calls: the interpreter runs cold right after a native epoch (each call ~0.1-0.5 ms)
        sent[steps] = (cpu_wait() - w0) / max(time.perf_counter() - t0, 1e-9)
        sent[steps + 1] = 1.0 if requests.pending else 0.0  # came after the epoch's last flags
        comm.Allgather(sent, everyone)
        per_step = np.add.reduce(everyone, axis=0)  # every rank sums in one order (rank order)
        late_stop = per_step[steps + 1] > 0
        if mode == "auto":  # the same figures on every rank: the same choice
            napping = bool(per_step[steps] / k > AUTO_NAP)
        per_step = per_step[:steps]
        history.step_losses.extend(per_step.tolist())
        figures = {"loss": float(np.dot(per_step, sizes) / n)}
        if validation is not None:
            figures.update({f"val_{key}": v for key, v in _evaluate(model, comm, *validation)})
        figures["lr"] = float(model.lr)
        figures["seconds"] = time.perf_counter() - t0
        history.add(epoch, figures)
        progress.epoch(epoch, figures)
        decided[0], decided[1] = (
            bool(cbs.epoch_end(model, epoch, figures) or model.stop_training),
            model.lr,
        )
        comm.Bcast(decided, root=0)
        stop, lr = bool(decided[0]), float(decided[1])
        if lr != model.lr:  # float64 both ways: rank 0's value exactly
            model.lr = lr
        if late_stop:  # a stop request after the epoch's last all-reduce: it ends here, kept
            history.interrupted = True
            if r == 0:
                log.warning(
                    "fit: interrupted (SIGINT/SIGTERM) at the end of epoch %d, which is kept "
                    "(resume with initial_epoch=%d)", epoch, epoch + 1,
                )  # fmt: skip
            break
        if stop:
            history.stopped_early = True
            break


CHUNK_SECONDS = 0.05  # a native epoch with its own all-reduce returns to Python this often
MAX_CHUNK = 4096  # steps per such call at most


def kept_counts(
    model: Any, feeds: dict[str, np.ndarray], n: int, weighted: bool = True
) -> np.ndarray | None:
    """Per row of ``feeds`` (``n`` rows), what a loss that is a mean over the label positions
    softmax_cross_entropy keeps (``program.kept_rows``: labels other than ignore_index) counts
    of it: the sum of their class weights (``program.kept_weight``; with ``weighted``) or
    their number, as float64; None for any other loss. Labels outside the classes (which
    fit's checks then refuse) count the nearest class's weight."""
    prog = model.program
    kept = getattr(prog, "kept_rows", None)
    if kept is None:
        return None
    labels, ignore = kept
    rows = np.asarray(feeds[labels]).reshape(n, -1)
    mask = np.ones(rows.shape, bool) if ignore is None else rows != ignore
    weight = getattr(prog, "kept_weight", None)
    if not weighted or weight is None:
        return np.count_nonzero(mask, axis=1).astype(np.float64)
    w = np.asarray(weight, np.float64)
    per = w[np.clip(rows, 0, len(w) - 1).astype(np.intp)]
    return np.where(mask, per, 0.0).sum(axis=1)


def kept_scales(kept: np.ndarray, bs: int, k: int, r: int) -> np.ndarray:
    """Each global step's loss_scale for rank ``r`` of ``k`` when the loss is a mean over kept
    rows: ``kept`` holds the epoch's rows in order (their kept label positions); step s's
    global batch is rows ``s*bs .. s*bs+big-1``, rank r's slice of it as ``shard``. The scale
    is K_r / K, the rank's kept positions over the global batch's, so that the ranks' losses
    and gradients, each a mean over its own kept positions, add up to the global batch's
    mean; a global batch keeping none takes count / big (its loss term is 0, and terms of no
    row, a weight penalty, keep their weight 1). Float64, exact sums (integers < 2^53)."""
    n = len(kept)
    steps = -(-n // bs)
    c = np.concatenate(([0.0], np.cumsum(kept)))
    lo = np.arange(steps) * bs
    big = np.minimum(bs, n - lo)
    q, rem = np.divmod(big, k)
    first = lo + r * q + np.minimum(r, rem)
    count = q + (r < rem)
    mine = c[first + count] - c[first]
    total = c[lo + big] - c[lo]
    return np.where(total > 0, mine / np.where(total > 0, total, 1.0), count / big)


def _native_chunks(
    run: Any, order: np.ndarray, bs: int, steps: int, reduce: Any, scan: bool, first: int = 0
) -> tuple[int, int]:
    """``run`` (SplitStep.native_epoch) over steps first..steps-1 in calls of at most about
    CHUNK_SECONDS each (8 steps first, then as many as the last call's time per step allows,
    at most MAX_CHUNK): between them Python's signal handlers run, so that a Ctrl-C or SIGTERM
    (_StopRequests) rides in the flags of the next call's first step, which rolls the epoch
    back, as with the call-out; one that comes during the epoch's last call is seen at the
    epoch's end (the epoch-end gather: fit stops after that epoch, kept). Returns the last
    call's (rc, step)."""
    chunk = 8
    rc, at = 0, first
    while first < steps:
        end = min(steps, first + chunk)
        t0 = time.perf_counter()
        rc, at = run(order, bs, first, end, reduce, scan)
        if rc:
            break
        per_step = (time.perf_counter() - t0) / (end - first)
        chunk = max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / max(per_step, 1e-9))))
        first = end
    return rc, at


def _keeps_steps(e: BaseException) -> bool:
    """Whether a failure in a native epoch's call-out leaves the steps applied before it in
    place (every rank raises it at the same step: a non-finite loss), rather than rolling
    the epoch back or ending the job."""
    return isinstance(e, _Agreed) and isinstance(e.error, NumericsError)


def _native_error(rc: int, entry: Any) -> Exception:
    """The exception for a nonzero code of NAME_train_epoch_split (``entry``: the split entry
    that failed, for its own codes)."""
    if rc == ERR_INDEX:
        return row_index_error()
    if rc == ERR_REDUCE:  # an exception escaped the call-out (it was printed)
        return DistributedError("the all-reduce call-out failed (see the exception above)")
    return entry.error(rc)


def _nonfinite(
    epoch: int, s: int, rows: np.ndarray, loss: float, bad_ranks: float, k: int
) -> NumericsError:
    """The error every rank raises when global batch ``s`` of ``epoch`` had a non-finite loss
    (the step's update was not applied)."""
    kept = f"after step {s - 1} of that epoch, the last finite one" if s else "the epoch began with"
    return NumericsError(
        f"fit: the loss became {loss} (not finite) at epoch {epoch}, step {s} (batch rows "
        f"{rows[:5].tolist()}{' ...' if len(rows) > 5 else ''}; not finite on "
        f"{int(bad_ranks)} of {k} ranks); training stopped on every rank with the parameters "
        f"and optimizer state {kept}. Lower the learning rate, check the data and the loss for "
        "overflow, or compile with check_numerics=True to find the node; "
        "stop_on_nonfinite=False trains on"
    )


def _evaluate(model: Any, comm: Any, feeds: dict[str, np.ndarray], n: int) -> list:
    """Validation figures over all ``n`` rows, each rank evaluating its slice; combined as means
    weighted by the slices' row counts (kept label positions for a loss over those:
    kept_counts); R^2 per output from the per-output sums of squared
    errors of all the slices (each rank's from a prediction of its slice) and the variance of
    all the targets, averaged uniformly, as one process's evaluate (the combined MSE over the
    variance of every target element gave another figure with several outputs, and nan
    instead of 1.0 / 0.0 for a constant target). Every rank returns the same figures."""
    k, r = comm.Get_size(), comm.Get_rank()
    first, count = shard(n, k, r)
    figs: dict[str, float] = {}
    if count:
        figs = model._evaluate_feeds({name: a[first : first + count] for name, a in feeds.items()})
    # a loss over the kept label positions (ignore_index, class weights): its loss is a mean
    # over their weights, its accuracy over their number (Model._metrics; 0 when none is
    # kept): each weighted by the slices' share of them
    kept = kept_counts(model, feeds, n)
    mine: tuple[float, float] = (count, count)
    if kept is not None:
        number = kept_counts(model, feeds, n, weighted=False)
        assert number is not None
        part = slice(first, first + count)
        mine = (float(kept[part].sum()), float(number[part].sum()))
    everyone = comm.allgather((count, figs, mine))
    keys = next(f for c, f, _ in everyone if c).keys()
    out = {}
    for key in keys:
        by = 0 if key == "loss" else 1
        total = sum(w[by] for _, _, w in everyone)
        if not total:  # nothing kept: the loss is its terms of no row (a penalty) on every
            total, by = n, 2  # slice alike, the accuracy 0: as kept_scales, by rows
        out[key] = sum((w + (c,))[by] * f[key] for c, f, w in everyone if c) / total
    if "r2" in out:  # per output, as one process's evaluate (model._r2_uniform)
        from .model import metric_target_of, r2_from_sums

        prog = model.program
        y = np.asarray(feeds[metric_target_of(prog)], np.float64).reshape(n, -1)
        ss_res = np.zeros(y.shape[1])
        if count:
            pred = model.predict({k: feeds[k][first : first + count] for k in prog.feature_inputs})
            name = prog.outputs[prog.metric_output]
            if isinstance(pred, dict):
                pred = pred[name]
            # predict returns an output whose batch axis it moves in the declared layout; its
            # rows (and the targets') are N first
            pred = np.moveaxis(pred, model.output_batch_axes.get(name, 0), 0)
            err = pred.reshape(count, -1).astype(np.float64) - y[first : first + count]
            ss_res = np.sum(err**2, axis=0)
        out["r2"] = r2_from_sums(y, np.sum(comm.allgather(ss_res), axis=0))
    return list(out.items())


def check_supported(distributed: Any) -> Any:
    """The communicator for ``fit(distributed=...)``: "mpi" (COMM_WORLD) or an mpi4py
    communicator, once every rank of it has entered fit (enter_fit).

    Raises:
        ArgumentError: another value.
        DistributedError: MPI or mpi4py missing; a rank ended its script without entering fit.
    """
    if isinstance(distributed, str):
        if distributed != "mpi":
            raise ArgumentError(
                f"distributed must be 'mpi' or an mpi4py communicator, got {distributed!r}"
            )
        comm = world()
    elif not all(hasattr(distributed, a) for a in ("Allreduce", "Get_rank", "Get_size")):
        raise ArgumentError(
            f"distributed must be 'mpi' or an mpi4py communicator, got {type(distributed).__name__}"
        )
    else:
        comm = distributed
    enter_fit(comm)
    return comm
