"""Writes this folder's files with graphc 4447f19 (2026-12-06, the commit these files are named
after: its autodiff and update rules derive a training graph that later graphc derives
differently for the same network). Run from this folder with that graphc installed:

    git worktree add --detach /tmp/old 4447f19 && python3 -m venv /tmp/old/.venv
    /tmp/old/.venv/bin/pip install -e /tmp/old && /tmp/old/.venv/bin/python make_files.py

For each network: KIND.gcm (save_model after 2 epochs of fit), KIND.npz (save), and
KIND_ref.npz: the inputs x, t, that graphc's predict(x) ("pred"), the loss of one more
train_step on the first 8 rows ("step_loss") and every parameter and optimizer slot after it
("after/NAME"). tests/test_trust7.py builds the same networks (build below) with today's graphc.
"""

import numpy as np

import graphc as gc


def data() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    t = rng.normal(size=(32, 2)).astype(np.float32)
    return x, {"ln_rms": t, "sgd_bce": (t > 0).astype(np.float32)}


def build(kind: str, x_adapt: np.ndarray):
    """layer_norm, Normalization, a constant, a slice and concat trained by centered RMSprop
    with momentum (ln_rms); gelu and binary cross-entropy by Nesterov SGD with weight decay
    (sgd_bce)."""
    x = gc.input("x", ("N", 6))
    t = gc.input("t", ("N", 2))
    if kind == "ln_rms":
        n = gc.Normalization()
        n.adapt(x_adapt)
        h = gc.layer_norm(gc.dense(n(x), 8, "tanh", name="d1"))
        h = h * gc.constant(np.linspace(-1, 1, 8).astype(np.float32), name="cst")
        h = gc.concat([h, gc.slice(h, [1], [4], [1])], 1)
        p = gc.dense(h, 2, name="d2")
        opt = gc.RMSprop(0.01, momentum=0.9, centered=True)
        return gc.compile(p, gc.mean_squared_error(p, t), opt, name=kind)
    p = gc.dense(gc.dense(x, 4, "gelu", name="d1"), 2, name="d2")
    opt = gc.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    return gc.compile(p, gc.binary_cross_entropy(p, t), opt, name=kind)


if __name__ == "__main__":
    x, targets = data()
    for kind, t in targets.items():
        m = build(kind, x)
        m.fit(x, t, epochs=2, batch_size=8, verbose=0, shuffle=False)
        m.save_model(f"{kind}.gcm")
        m.save(f"{kind}.npz")
        pred = m.predict(x)
        loss = m.train_step(x[:8], t[:8])
        after = {f"after/{k}": v for k, v in {**m.params, **m.state}.items()}
        np.savez(f"{kind}_ref.npz", x=x, t=t, pred=pred, step_loss=np.float64(loss), **after)
