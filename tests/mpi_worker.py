"""The program tests/test_mpi.py runs under ``mpirun -np K`` (and in one process as reference).

    python tests/mpi_worker.py MODE OUT [ARGS]

MODE:
    train     three models (SGD, SGD with momentum, Adam; dropout; 50 rows in batches of 16,
              so the last global batch has 2 rows) trained 2 epochs with distributed="mpi";
              Adam: 3 epochs on 40 rows, validation_split=0.2 and ReduceLROnPlateau (which
              halves lr after epoch 1 from the validation loss the ranks compute together);
              rank 0 writes OUT.npz with the per-step losses, epoch figures and final params
    resume    Adam model: loads checkpoint ARGS[0] on rank 0 only, then trains epochs 2..3
    save      Adam model: 2 epochs, rank 0's checkpoint callback writes ARGS[0]
    raise     rank 1 raises in a callback during epoch 1 (the job must end with an error)
    kill      rank 1 kills itself with SIGKILL during epoch 1 (the job must end)
    uncaught  after a first fit, rank 1 raises in the script while rank 0 enters a second fit
              (the job must end)
    moved     an ONNX import whose output predict returns with N moved (a loss on it): the
              distributed fit's val figures and the one-process evaluate's
    fewer     after a first fit, rank 1 ends its script normally while rank 0 enters a second
              fit (the job must end: rank 0 raises, naming rank 1)
    limits    fit's one-process behaviours, distributed (ARGS: none):
              nan: a NaN feature row in global batch 2 of epoch 0 (allow_nonfinite): every
              rank raises NumericsError naming epoch 0, step 2 and the rows, with the
              parameters after step 1; batch: a callback sets lr before every batch and
              records Keras's batch logs; stop: rank 1 sends itself SIGTERM (what mpirun
              sends when interrupted) after batch 1 of epoch 1: every rank rolls epoch 1
              back and returns with history.interrupted; rank 0 also checks that every rank
              saw the same (logs, messages, parameters)
    paths     (under mpirun only) the rank's epoch in one native call (train_epoch_split,
              the all-reduce a call-out) against one Python iteration per step
              (use_epoch_entry False), Adam with dropout: 2 epochs, then 2 more in which
              rank 1 sends itself SIGTERM inside the all-reduce of step 1 of epoch 2;
              rank 0 writes whether each path ran and whether they agreed bit for bit;
              also the errors of fit on data with NaN rows / bad labels in both ranks'
              shares of the rows (each rank checks its share), one-process and distributed
    frozen    tests/test_frozen.py's models (non-trainable params first, middle, last, several,
              a gc.constant scaling the output), SGD, 2 epochs of 50 rows in batches of 16
    rank0     (under mpirun) callbacks on some ranks only: a StepLR schedule or EarlyStopping
              with restore_best_weights on rank 0 only, a batch callback setting lr or one
              setting the weights between epochs on the last rank only: every rank ends with
              rank 0's parameters, optimizer state and lr, those of the one-process fit with
              rank 0's callbacks; validation rows that differ between ranks are refused;
              CSVLogger, ModelCheckpoint (.gcm) and a LearningRateScheduler printing, on
              every rank (folder of OUT): rank 0 prints and writes
    edges     (under mpirun, 3 ranks) fewer rows than ranks: 2 training rows in batches of 1,
              and 2 validation rows, against rank 0's one-process fit; then errors raised on
              some ranks only before any step (rank 1 passes x with another width, rank 0
              batch_size=0, rank 2 fewer rows): every rank must raise, none may wait
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

import graphc as gc

ROWS, BATCH, FEATURES, CLASSES = 50, 16, 12, 4


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, ROWS).astype(np.int32)
    return x, y


def model(kind: str, name: str, dtype: str = "f32") -> gc.Model:
    opt = {
        "sgd": lambda: gc.SGD(lr=0.1),
        "momentum": lambda: gc.SGD(lr=0.05, momentum=0.9),
        "adam": lambda: gc.Adam(lr=0.01),
    }[kind]()
    x = gc.input("x", ("N", FEATURES), dtype=dtype)
    y = gc.input("y", ("N",), dtype="i32")
    h = gc.dropout(gc.dense(x, 16, "tanh", name="fc1"), 0.25, seed=3, name="drop")
    logits = gc.dense(h, CLASSES, name="fc2")
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, y), opt, name=name, seed=1)
    m.threads = 1
    return m


class Save:
    def __init__(self, path: str) -> None:
        self.path = path

    def on_epoch_end(self, m, epoch, figures):
        m.save(self.path)  # every rank calls it; only rank 0 writes
        return False


class Fail:
    def __init__(self, how: str) -> None:
        self.how = how

    def on_epoch_begin(self, m, epoch):
        if epoch == 1 and gc.distributed.rank() == 1:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("a failure planted on rank 1")


def step_losses(
    kind: str, name: str, epochs: range, rows: int = ROWS, lrs: list[float] | None = None
) -> list[float]:
    """The per-step losses of the one-process fit, replayed with train_step on fit's batches
    (permutation default_rng([seed, epoch]), consecutive slices of BATCH rows; ``lrs``: the
    rate of each epoch, as fit's history recorded it)."""
    x, y = data()
    x, y = x[:rows], y[:rows]
    m = model(kind, name)
    out = []
    for epoch in range(epochs.stop):
        order = np.random.default_rng([5, epoch]).permutation(rows)
        if lrs is not None:
            m.lr = lrs[epoch]
        for lo in range(0, rows, BATCH):
            loss = m.train_step(x[order[lo : lo + BATCH]], y[order[lo : lo + BATCH]])
            if epoch in epochs:
                out.append(loss)
    return out


class BatchLog:
    """Sets lr before each batch (a warm-up ramp) and records the batch logs."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, ...]] = []

    def set_model(self, m) -> None:
        self.m = m

    def on_batch_begin(self, batch, logs):
        self.m.lr = 0.02 * (1 + batch) / 4
        self.rows.append((batch, logs["size"], -1.0, -1.0))

    def on_batch_end(self, batch, logs):
        self.rows.append((batch, logs["size"], logs["loss"], logs["batch_loss"]))


class Stop:
    """Rank 1 sends itself SIGTERM after batch 1 of epoch 1."""

    def on_epoch_begin(self, m, epoch):
        self.epoch = epoch

    def on_batch_end(self, batch, logs):
        if (
            self.epoch == 1
            and batch == 1
            and gc.distributed.rank() == min(1, gc.distributed.size() - 1)
        ):
            os.kill(os.getpid(), signal.SIGTERM)


def nan_row() -> int:
    """The row that fit's permutation of epoch 0 (seed 5) puts in global batch 2."""
    return int(np.random.default_rng([5, 0]).permutation(ROWS)[2 * BATCH + 3])


def limits(dist: str | None) -> dict[str, np.ndarray]:
    x, y = data()
    res: dict[str, np.ndarray] = {}
    same = []  # what every rank must agree on
    # nan: the non-finite stop
    m = model("adam", "lim_nan")
    xn = x.copy()
    xn[nan_row(), 0] = np.nan
    try:
        m.fit(xn, y, epochs=2, batch_size=BATCH, seed=5, verbose=0, allow_nonfinite=True,
              distributed=dist)  # fmt: skip
        message = "no error"
    except gc.NumericsError as e:
        message = str(e)
    res["nan_message"] = np.array(message)
    res.update({f"nan_param_{k}": v for k, v in m.params.items()})
    res["nan_epochs"] = np.array(len(m.history.epochs))
    same.append((message, [v.tobytes() for v in m.params.values()]))
    # batch: batch callbacks (lr set per batch, logs)
    m = model("momentum", "lim_batch")
    cb = BatchLog()
    h = m.fit(x, y, epochs=2, batch_size=BATCH, seed=5, verbose=0, callbacks=[cb], distributed=dist)
    res["batch_logs"] = np.array(cb.rows)
    res["batch_loss"] = np.array(h["loss"])
    res.update({f"batch_param_{k}": v for k, v in m.params.items()})
    same.append((cb.rows, [v.tobytes() for v in m.params.values()]))
    # stop: a stop request on one rank
    m = model("sgd", "lim_stop")
    if dist:
        h = m.fit(x, y, epochs=3, batch_size=BATCH, seed=5, verbose=0, callbacks=[Stop()],
                  distributed=dist)  # fmt: skip
    else:  # the one-process reference: epoch 0 alone (SIGTERM would end this process)
        h = m.fit(x, y, epochs=1, batch_size=BATCH, seed=5, verbose=0)
    res["stop_interrupted"] = np.array(h.interrupted)
    res["stop_epochs"] = np.array(len(h.epochs))
    res["stop_handler_restored"] = np.array(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    res.update({f"stop_param_{k}": v for k, v in m.params.items()})
    same.append((h.interrupted, [v.tobytes() for v in m.params.values()]))
    if dist:
        comm = gc.distributed.world()
        from graphc.runtime.distributed import thread_share

        share = thread_share(comm)
        everyone = comm.allgather((same, share, len(os.sched_getaffinity(0))))
        # node_peers remembers a communicator only while it lives (world's from the fits)
        import gc as collector

        from graphc.runtime import distributed as dist_mod

        sub = comm.Dup()
        dist_mod.node_peers(sub)
        held = len(dist_mod._NODES)
        sub.Free()
        del sub
        collector.collect()
        dist_mod.node_peers(comm)
        res["nodes_kept"] = np.array([held, len(dist_mod._NODES)])
        res["ranks_agree"] = np.array(all(e[0] == everyone[0][0] for e in everyone))
        res["thread_shares"] = np.array([e[1] for e in everyone])
        res["cores"] = np.array(os.cpu_count())
    return res


def paths() -> dict[str, np.ndarray]:
    from graphc.runtime import distributed as d

    x, y = data()
    ran: dict[str, int] = {"native": 0, "python": 0}
    plain = d.SplitStep.allreduce
    epoch_now = [0]

    class Epoch:
        def on_epoch_begin(self, m, epoch):
            epoch_now[0] = epoch

    calls = [0]

    def allreduce(step, comm, MPI, napping):  # counts steps; plants the stop request
        calls[0] += 1
        if epoch_now[0] == 2 and calls[0] == 2 and d.rank() == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # taken at the next step's all-reduce
        plain(step, comm, MPI, napping)

    d.SplitStep.allreduce = allreduce
    chunks = d._native_chunks

    def native_chunks(run, order, bs, steps, reduce, scan, first=0):  # the same, natively
        if epoch_now[0] == 2 and d.rank() == 1:  # (an epoch with its all-reduce inside)
            rc, at = run(order, bs, 0, 1, reduce, scan)  # step 0 alone, then the signal,
            if rc:  # which Python takes between the native calls: rides in step 1's flags
                return rc, at
            os.kill(os.getpid(), signal.SIGTERM)
            return chunks(run, order, bs, steps, reduce, scan, first=1)
        return chunks(run, order, bs, steps, reduce, scan, first)

    d._native_chunks = native_chunks
    out = {}
    kept: list[int] = []
    m = model("adam", "m_adam")  # the model of mode train: the compile cache has it
    for native in (True, False):
        m.initialize(1)  # the model's seed: a fresh model's parameters and optimizer state
        m.use_epoch_entry = native
        h = m.fit(x, y, epochs=2, batch_size=BATCH, seed=5, verbose=0, distributed="mpi",
                  callbacks=[Epoch()])  # fmt: skip
        before = {k: v.copy() for k, v in m.params.items()}
        calls[0] = 0
        h2 = m.fit(x, y, epochs=4, initial_epoch=2, batch_size=BATCH, seed=5, verbose=0,
                   distributed="mpi", callbacks=[Epoch()])  # fmt: skip
        path = "native" if native else "python"
        ran[path] += int(d.LAST_PATH.startswith(path))  # native: also "native-reduce"
        if native:
            native_path = d.LAST_PATH
        kept.append(id(d._KEPT[0][3]) if d._KEPT else 0)  # the window step fit keeps
        out[native] = (
            h.step_losses,
            [v.tobytes() for v in before.values()],
            [v.tobytes() for v in m.params.values()],
            h2.interrupted,
            len(h2.epochs),
        )
    d.TIMELINE = marks = []  # bench_mpi --timeline: one (entered, .., left) per step
    m.fit(x, y, epochs=1, batch_size=BATCH, seed=5, verbose=0, distributed="mpi")
    d.TIMELINE = None
    timeline = len(marks) == 4 and all(list(t) == sorted(t) and len(t) == 4 for t in marks)
    messages = []
    scans = []  # distributed fits: (where the rows were checked, steps run, model unchanged)
    late = int(np.random.default_rng([0, 0]).permutation(ROWS)[40])  # in global batch 2
    m.use_epoch_entry = True  # (the loop above left it False)
    for bad in ("x", "y", "x_late"):
        xn, yn = x.copy(), y.copy()
        if bad == "x":
            xn[[45, 10, 30], 1] = np.nan  # rank 0 holds rows 0..24 of 50, rank 1 25..49
        elif bad == "y":
            yn[[30, 5]] = CLASSES
        else:  # found by rank 1's gather in step 2 of the first epoch: steps 0, 1 undone
            xn[late, 3] = np.inf
        for dist in (None, "mpi"):
            before = [v.copy() for v in m.params.values()] + [m.state["step"].copy()]
            prior = m.history
            d.TIMELINE = marks = []
            try:
                m.fit(xn, yn, epochs=2, batch_size=BATCH, verbose=0, distributed=dist)
                messages.append("no error")
            except gc.ArgumentError as e:
                messages.append(str(e))
            d.TIMELINE = None
            after = [v.copy() for v in m.params.values()] + [m.state["step"].copy()]
            same = all(np.array_equal(a, b) for a, b in zip(before, after))
            if dist:
                scans.append(f"{d.LAST_SCAN if bad != 'y' else '-'} {len(marks)} "
                             f"{same and m.history is prior}")  # fmt: skip
    everyone = d.world().allgather(messages)
    return {
        "scans": np.array(scans),
        "messages": np.array(messages),
        "messages_agree": np.array(all(e == messages for e in everyone)),
        "native_path": np.array(native_path),
        "ran_native": np.array(ran["native"]),
        "ran_python": np.array(ran["python"]),
        "identical": np.array(out[True] == out[False]),
        # the second and later fits of one model reuse the first fit's window (split_step)
        "window_kept": np.array(len(set(kept)) == 1 and kept[0] != 0),
        "interrupted": np.array(out[True][3]),
        "rolled_back": np.array(out[True][1] == out[True][2]),
        "steps": np.array(out[True][0]),
        "timeline": np.array(timeline),
    }


def mixed() -> dict[str, np.ndarray]:
    """Settings that choose the step's loop on some ranks only (a batch callback, the epoch
    entry off, TIMELINE: every rank must then run the same loop, whose barriers differ), and
    a stop request after an epoch's last all-reduce (seen in the epoch-end gather)."""
    from graphc.runtime import distributed as d

    x, y = data()
    r = d.rank()

    class Log:  # a batch callback, on rank 0 only (Horovod's custom: logging on one rank)
        def on_batch_end(self, batch, logs):
            pass

    def trained(setup) -> list[bytes]:
        m = model("adam", "m_adam")  # the model of mode train: the compile cache has it
        m.initialize(1)
        cbs = setup(m)
        m.fit(x, y, epochs=2, batch_size=BATCH, seed=5, verbose=0, distributed="mpi",
              callbacks=cbs)  # fmt: skip
        d.TIMELINE = None
        return [v.tobytes() for v in list(m.params.values()) + list(m.state.values())]

    def timeline(m):
        d.TIMELINE = [] if r == 0 else None
        return []

    def no_entry(m):
        m.use_epoch_entry = r != 0
        return []

    clean = trained(lambda m: [])
    res = {
        "callback_rank0": np.array(trained(lambda m: [Log()] if r == 0 else []) == clean),
        "timeline_rank0": np.array(trained(timeline) == clean),
        "no_entry_rank0": np.array(trained(no_entry) == clean),
    }
    # a stop request on rank 1 after the last epoch's last step (native epochs)
    chunks = d._native_chunks
    epoch_now = [0]

    class Epoch:
        def on_epoch_begin(self, m, epoch):
            epoch_now[0] = epoch

    def native_chunks(run, order, bs, steps, reduce, scan, first=0):
        rc, at = chunks(run, order, bs, steps, reduce, scan, first)
        if epoch_now[0] == 1 and r == 1 and not rc:
            os.kill(os.getpid(), signal.SIGTERM)  # after the epoch's last flags were sent
        return rc, at

    d._native_chunks = native_chunks
    m = model("adam", "m_adam")
    m.initialize(1)
    h = m.fit(x, y, epochs=3, batch_size=BATCH, seed=5, verbose=0, distributed="mpi",
              callbacks=[Epoch()])  # fmt: skip
    d._native_chunks = chunks
    late = (h.interrupted, len(h.epochs), d.LAST_PATH)
    everyone = d.world().allgather(late)
    res["late_stop"] = np.array(all(e == everyone[0] for e in everyone))
    res["late_interrupted"] = np.array(h.interrupted)
    res["late_epochs"] = np.array(len(h.epochs))
    res["late_path"] = np.array(d.LAST_PATH)
    res["late_handler_restored"] = np.array(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    return res


def edges() -> dict[str, np.ndarray]:
    """Mode ``edges`` (see the module docstring)."""
    x, y = data()
    r = gc.distributed.rank()
    res: dict[str, np.ndarray] = {}
    for case, (rows, vrows) in {"tiny": (2, 0), "val": (20, 2)}.items():
        got, ref = model("adam", "m_edges"), model("adam", "m_edges")
        more = {"validation_data": (x[-vrows:], y[-vrows:])} if vrows else {}
        kw = {"epochs": 2, "batch_size": 1 if rows == 2 else 8, "seed": 2, "verbose": 0}
        h = got.fit(x[:rows], y[:rows], distributed="mpi", **kw, **more)
        if r == 0:
            h1 = ref.fit(x[:rows], y[:rows], **kw, **more)
            res[f"{case}_loss"] = np.array([h["loss"], h1["loss"]])
            if vrows:
                res[f"{case}_val_loss"] = np.array([h["val_loss"], h1["val_loss"]])
            for k, v in got.params.items():
                res[f"{case}_param_{k}"] = np.stack([v, ref.params[k]])
    # a shared-memory file system too small for the window: auto falls back to MPI_Allreduce
    # (the same losses), GRAPHC_MPI_REDUCE=window raises on every rank
    from graphc.runtime import distributed as d

    free, d.shm_free = d.shm_free, lambda: 1 << 20
    try:
        shm = {}
        for how in ("auto", "window"):
            os.environ["GRAPHC_MPI_REDUCE"] = how
            m = model("sgd", "m_sgd")
            try:
                h = m.fit(x, y, epochs=1, batch_size=8, seed=2, verbose=0, distributed="mpi")
                shm[how] = f"{d.LAST_REDUCE} {h['loss'][0]:.6f}"
            except gc.GraphcError as e:
                shm[how] = f"{type(e).__name__}: {e}"
    finally:
        d.shm_free = free
        os.environ.pop("GRAPHC_MPI_REDUCE", None)
    m = model("sgd", "m_sgd")
    h = m.fit(x, y, epochs=1, batch_size=8, seed=2, verbose=0, distributed="mpi")
    shm["room"] = f"{d.LAST_REDUCE} {h['loss'][0]:.6f}"
    everyone = gc.distributed.world().allgather(shm)
    if r == 0:
        for how in shm:
            res[f"shm_{how}"] = np.array([e[how] for e in everyone])
    m = model("sgd", "m_sgd")
    bad = {
        "width": lambda: (np.concatenate([x, x[:, :1]], 1) if r == 1 else x, y, 8),
        "batch": lambda: (x, y, 0 if r == 0 else 8),
        "rows": lambda: (x[:-1] if r == 2 else x, y[:-1] if r == 2 else y, 8),
    }
    for case, make in bad.items():
        xs, ys, bs = make()
        try:
            m.fit(xs, ys, epochs=1, batch_size=bs, distributed="mpi", verbose=0)
            message = "no error"
        except gc.GraphcError as e:
            message = f"{type(e).__name__}: {e}"
        everyone = gc.distributed.world().allgather(message)
        if r == 0:
            res[f"error_{case}"] = np.array(everyone)
    # a callback check that fails on rank 0 only (ModelCheckpoint's folder: rank 0 writes)
    try:
        ck = gc.ModelCheckpoint("/nonexistent-graphc-folder/ck.npz", save_weights_only=True)
        m.fit(x, y, epochs=1, batch_size=8, distributed="mpi", verbose=0, callbacks=[ck])
        message = "no error"
    except gc.GraphcError as e:
        message = f"{type(e).__name__}: {e}"
    everyone = gc.distributed.world().allgather(message)
    if r == 0:
        res["error_ckpt"] = np.array(everyone)
    return res


def rank0() -> dict[str, np.ndarray]:
    """Mode ``rank0`` (under mpirun): callbacks on some ranks only act as on rank 0 (see the
    module docstring); rank 0 also runs the one-process fits with its own callbacks."""
    x, y = data()
    r, k = gc.distributed.rank(), gc.distributed.size()
    last = r == k - 1

    class SlowLast:  # a batch callback setting lr (last rank)
        def set_model(self, m):
            self.m = m

        def on_batch_begin(self, batch, logs):
            self.m.lr = 1e-4

    class ZeroLast:  # weights set between epochs (last rank)
        def on_epoch_end(self, m, epoch, figures):
            m.set_weights({name: v * 0 for name, v in m.get_weights().items()})
            return False

    cases = {  # case: (callbacks on rank 0, callbacks on the last rank)
        "steplr": (lambda: [gc.StepLR(1, gamma=0.5)], lambda: []),
        "restore": (
            lambda: [gc.EarlyStopping("loss", mode="max", patience=0, restore_best_weights=True)],
            lambda: [],
        ),
        "batch_lr": (lambda: [], lambda: [SlowLast()]),
        "weights": (lambda: [], lambda: [ZeroLast()]),
    }
    res: dict[str, np.ndarray] = {}
    for case, (mine0, mine_last) in cases.items():
        m = model("adam", "m_adam")
        cbs = mine0() if r == 0 else mine_last() if last else []
        h = m.fit(x, y, epochs=3, batch_size=BATCH, seed=5, verbose=0, callbacks=cbs,
                  distributed="mpi")  # fmt: skip
        got = [v.tobytes() for v in list(m.params.values()) + list(m.state.values())]
        everyone = gc.distributed.world().allgather((got, m.lr, h["lr"]))
        if r == 0:
            res[f"{case}_agree"] = np.array(all(e == everyone[0] for e in everyone))
            one = model("adam", "m_adam")
            h1 = one.fit(x, y, epochs=3, batch_size=BATCH, seed=5, verbose=0, callbacks=mine0())
            res[f"{case}_lr"] = np.array([h["lr"], h1["lr"]])
            for name, v in m.params.items():
                res[f"{case}_param_{name}"] = np.stack([v, one.params[name]])
    m = model("adam", "m_adam")  # validation rows that differ: refused on every rank
    try:
        m.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, distributed="mpi",
              validation_data=(x[: 5 + r], y[: 5 + r]))  # fmt: skip
        message = "no error"
    except gc.GraphcError as e:
        message = f"{type(e).__name__}: {e}"
    res["validation_errors"] = np.array(gc.distributed.world().allgather(message))
    # callbacks that print and write files, on every rank: one line and one file per job
    folder = os.path.dirname(os.path.abspath(sys.argv[2]))
    m = model("adam", "m_adam")
    cbs = [
        gc.CSVLogger(os.path.join(folder, "log.csv")),
        gc.ModelCheckpoint(os.path.join(folder, "ck.gcm"), verbose=1),
        gc.LearningRateScheduler(lambda epoch, lr: lr / 2, verbose=1),
    ]
    m.fit(x, y, epochs=4, batch_size=BATCH, seed=5, verbose=0, distributed="mpi", callbacks=cbs)
    res["files_params"] = np.concatenate([v.ravel() for v in m.params.values()])
    return res


def ignore(dist: str | None) -> dict[str, np.ndarray]:
    """tests/test_mpi.py::test_ignore_index_trains_data_parallel_as_one_process:
    softmax_cross_entropy(ignore_index=-100) over token labels [N, 3] (40% ignored) plus an L2
    penalty, momentum; shuffled with validation, and unshuffled (global batch 0's first half
    keeps none: rank 0 of 2 adds nothing that step; the last batch, rows 48-49, keeps none at
    all), the native epoch and the per-step loop (a batch callback); with class weights (one
    of them 0) and ignore_index, and with weights alone. Per-step losses (the
    one process's from its batch logs), epoch and validation losses, parameters."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((ROWS, 3, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, (ROWS, 3)).astype(np.int32)
    y[rng.random((ROWS, 3)) < 0.4] = -100
    y[:8] = -100
    y[48:] = -100
    y_none = y.copy()
    y_none[40:] = -100  # validation_split 0.2: its rows keep no label (its loss: the penalty)
    res: dict[str, np.ndarray] = {}

    class Steps:
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_batch_end(self, batch, logs):
            self.losses.append(logs["batch_loss"])

    weight = [0.5, 2.0, 0.0, 1.5]  # class 2 counts for nothing
    every = np.where(y == -100, 1, y).astype(np.int32)  # no ignored label
    ignore = {"ignore_index": -100}
    for case, more, opts, labels in (
        ("shuffled", {"seed": 5, "validation_split": 0.2}, ignore, y),
        ("ordered", {"shuffle": False}, ignore, y),
        ("stepwise", {"seed": 6, "batch_callback": True}, ignore, y),
        ("weighted", {"seed": 7, "validation_split": 0.2}, {**ignore, "weight": weight}, y),
        ("weight_only", {"shuffle": False}, {"weight": weight}, every),
        ("val_none", {"seed": 9, "validation_split": 0.2}, ignore, y_none),
    ):
        xi = gc.input("x", ("N", 3, FEATURES))
        yi = gc.input("y", ("N", 3), dtype="i32")
        z = gc.dense(gc.dense(xi, 8, "tanh", name="fc1", kernel_l2=1e-3), CLASSES, name="fc2")
        loss = gc.softmax_cross_entropy(z, yi, **opts)
        m = gc.compile(z, loss, gc.SGD(lr=0.1, momentum=0.9), name=f"ign_{case}", seed=2)
        m.threads = 1
        log = Steps()
        cbs = [log] if (dist is None or more.pop("batch_callback", False)) else []
        more.pop("batch_callback", None)
        h = m.fit(x, labels, epochs=2, batch_size=BATCH, verbose=0, distributed=dist,
                  callbacks=cbs, **more)  # fmt: skip
        res[f"{case}_steps"] = np.array(h.step_losses if dist else log.losses)
        for key in h.metrics:  # loss, val_loss, val_accuracy (and lr, seconds: not kept)
            if "loss" in key or "val_" in key:
                res[f"{case}_{key}"] = np.array(h[key])
        for k, v in m.params.items():
            res[f"{case}_param_{k}"] = v
        if dist and gc.distributed.rank() == 0:
            print(f"{case} path: {gc.distributed.LAST_PATH}", flush=True)
    return res


class HalveWeights:
    """At batch 1 of epoch 0, set_weights halves every weight, on rank ``on`` only (or in one
    process: always)."""

    def __init__(self, on: int) -> None:
        self.on = on

    def set_model(self, m) -> None:
        self.m = m

    def on_epoch_begin(self, m, epoch):
        self.epoch = epoch

    def on_batch_begin(self, batch, logs):
        if self.epoch == 0 and batch == 1 and gc.distributed.rank() == self.on:
            self.m.set_weights({k: v * 0.5 for k, v in self.m.get_weights().items()})


def midepoch(dist: str | None) -> dict[str, np.ndarray]:
    """tests/test_mpi.py::test_batch_callbacks_writing_weights_on_some_ranks_act_as_on_rank_0:
    a batch callback halving the weights mid-epoch on rank 1 only (rank 0's weights prevail:
    as one process without it) and on rank 0 only (as one process with it); Adam, dropout."""
    x, y = data()
    res: dict[str, np.ndarray] = {}
    for case, on in (("rank1", 1), ("rank0", 0)):
        m = model("adam", f"m_mid_{case}")
        if dist is None:
            cbs = [HalveWeights(0)] if on == 0 else []
        else:
            cbs = [HalveWeights(on)] if gc.distributed.rank() == on else []
        h = m.fit(x, y, epochs=2, batch_size=BATCH, seed=5, verbose=0, callbacks=cbs,
                  distributed=dist)  # fmt: skip
        res[f"{case}_loss"] = np.array(h["loss"])
        for k, v in m.params.items():
            res[f"{case}_param_{k}"] = v
        if dist:  # every rank ends with the same parameters
            mine = np.concatenate([v.ravel() for v in m.params.values()])
            alls = MPI_COMM().allgather(mine)
            res[f"{case}_ranks_equal"] = np.array(all(np.array_equal(a, alls[0]) for a in alls))
        else:
            res[f"{case}_ranks_equal"] = np.array(True)
    return res


def MPI_COMM():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def main() -> None:
    mode, out = sys.argv[1], sys.argv[2]
    dist = None if os.environ.get("GRAPHC_TEST_SERIAL") else "mpi"
    x, y = data()
    res: dict[str, np.ndarray] = {}
    if mode == "train":
        for kind in ("sgd", "momentum", "adam"):
            m = model(kind, f"m_{kind}")
            more = {"epochs": 2}
            if kind == "adam":  # validation figures and a callback that acts on them
                plateau = gc.ReduceLROnPlateau("val_loss", factor=0.5, patience=0, threshold=0.5)
                more = {"epochs": 3, "validation_split": 0.2, "callbacks": [plateau]}
            h = m.fit(x, y, batch_size=BATCH, seed=5, verbose=0, distributed=dist, **more)
            if dist:
                steps = h.step_losses
            elif kind == "adam":
                steps = step_losses(kind, f"r_{kind}", range(3), 40, h["lr"])
            else:
                steps = step_losses(kind, f"r_{kind}", range(2))
            res[f"{kind}_steps"] = np.array(steps)
            for key in ("loss", "val_loss", "val_accuracy", "lr"):
                if key in h.metrics:
                    res[f"{kind}_{key}"] = np.array(h[key])
            for k, v in m.params.items():
                res[f"{kind}_param_{k}"] = v
        if dist and gc.distributed.rank() == 0:
            print(f"reduce: {gc.distributed.LAST_REDUCE}", flush=True)
            print(f"update: {gc.distributed.LAST_UPDATE}", flush=True)
            print(f"path: {gc.distributed.LAST_PATH}", flush=True)
    elif mode in ("save", "resume"):
        m = model("adam", "m_adam")
        ckpt = sys.argv[3]
        if mode == "resume" and gc.distributed.rank() == 0:
            m.load(ckpt)  # the other ranks get rank 0's params, state and lr by broadcast
        h = m.fit(
            x,
            y,
            epochs=2 if mode == "save" else 4,
            initial_epoch=0 if mode == "save" else 2,
            batch_size=BATCH,
            seed=5,
            verbose=0,
            callbacks=[Save(ckpt)] if mode == "save" else [],
            distributed=dist,
        )
        steps = h.step_losses if dist else step_losses("adam", "r_adam", range(2, 4))
        res["steps"] = np.array(steps)
        for k, v in m.params.items():
            res[f"param_{k}"] = v
    elif mode == "limits":
        res = limits(dist)
    elif mode == "paths":
        res = paths()
    elif mode == "edges":
        res = edges()
    elif mode == "mixed":
        res = mixed()
    elif mode == "rank0":
        res = rank0()
    elif mode == "ignore":
        res = ignore(dist)
    elif mode == "midepoch":
        res = midepoch(dist)
    elif mode in ("uncaught", "fewer"):  # rank 1 leaves between two fits, in the script
        m = model("sgd", "m_sgd")
        m.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, distributed=dist)
        if gc.distributed.rank() == 1:
            if mode == "uncaught":
                raise RuntimeError("a failure planted on rank 1 between two fits")
            return  # fewer: its script just ends
        m.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, distributed=dist)  # rank 0 waits
    elif mode == "moved":  # validation R^2 of an output whose batch axis predict moves
        from test_onnx_batch_axis import _transposes

        imp = gc.from_onnx(_transposes(), outputs=["y"])
        t = gc.input("t", ("N", 5, 4))
        mm = imp.compile(gc.mean_squared_error(imp.outputs[0], t), gc.SGD(lr=0.0))
        rng = np.random.default_rng(0)
        xv = rng.normal(size=(8, 5, 3)).astype(np.float32)
        tv = rng.normal(size=(8, 5, 4)).astype(np.float32)
        ev = mm.evaluate(xv, tv)
        hv = mm.fit(xv, tv, epochs=1, batch_size=4, verbose=0, validation_data=(xv, tv),
                    distributed=dist)  # fmt: skip
        res["moved_r2"] = np.array([ev["r2"], hv.history["val_r2"][0]])
        res["moved_mse"] = np.array([ev["loss"], hv.history["val_loss"][0]])
    elif mode == "frozen":  # tests/test_frozen.py: non-trainable params first, middle, last
        from test_frozen import FROZEN, frozen_model

        rng = np.random.default_rng(5)
        xf, tf = rng.standard_normal((ROWS, 4)), rng.standard_normal((ROWS, 3))
        for case in FROZEN:
            m = frozen_model(case, f"frz_{case}")
            m.threads = 1
            h = m.fit(xf, tf, epochs=2, batch_size=BATCH, seed=5, verbose=0, distributed=dist)
            res[f"{case}_loss"] = np.array(h["loss"])
            for k, v in m.params.items():
                res[f"{case}_param_{k}"] = v
    else:
        m = model("adam", "m_adam")
        m.fit(x, y, epochs=3, batch_size=BATCH, verbose=0, callbacks=[Fail(mode)], distributed=dist)
    if gc.distributed.rank() == 0:
        np.savez(out, **res)


if __name__ == "__main__":
    main()
