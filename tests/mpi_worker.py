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


def model(kind: str, name: str) -> gc.Model:
    opt = {
        "sgd": lambda: gc.SGD(lr=0.1),
        "momentum": lambda: gc.SGD(lr=0.05, momentum=0.9),
        "adam": lambda: gc.Adam(lr=0.01),
    }[kind]()
    x = gc.input("x", ("N", FEATURES))
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
    else:
        m = model("adam", "m_adam")
        m.fit(x, y, epochs=3, batch_size=BATCH, verbose=0, callbacks=[Fail(mode)], distributed=dist)
    if gc.distributed.rank() == 0:
        np.savez(out, **res)


if __name__ == "__main__":
    main()
