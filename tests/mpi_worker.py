"""The program tests/test_mpi.py runs under ``mpirun -np K`` (and in one process as reference).

    python tests/mpi_worker.py MODE OUT [ARGS]

MODE:
    train     three models (SGD, SGD with momentum, Adam; dropout; 50 rows in batches of 16,
              so the last global batch has 2 rows) trained 2 epochs with distributed="mpi";
              rank 0 writes OUT.npz with the per-step losses, epoch losses and final params
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


def step_losses(kind: str, name: str, epochs: range) -> list[float]:
    """The per-step losses of the one-process fit, replayed with train_step on fit's batches
    (permutation default_rng([seed, epoch]), consecutive slices of BATCH rows)."""
    x, y = data()
    m = model(kind, name)
    out = []
    for epoch in range(epochs.stop):
        order = np.random.default_rng([5, epoch]).permutation(ROWS)
        for lo in range(0, ROWS, BATCH):
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
            h = m.fit(x, y, epochs=2, batch_size=BATCH, seed=5, verbose=0, distributed=dist)
            steps = h.step_losses if dist else step_losses(kind, f"r_{kind}", range(2))
            res[f"{kind}_steps"] = np.array(steps)
            res[f"{kind}_loss"] = np.array(h["loss"])
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
