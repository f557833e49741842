"""The benchmark's contestants: the same MLP training step and inference in graphc, numpy,
PyTorch (eager with its foreach and its fused Adam, and ``torch.compile`` of the whole step) and
JAX (``jit`` with donated buffers).

Every contestant is built from one ``Spec`` and one set of initial weights (float32), and offers
``step()`` (one training step on a fixed batch: forward, backward, optimizer update; it may
return before the work is done, ``sync()`` waits for it), ``infer()`` (the logits of a fixed
batch), ``loss()`` (the last step's loss as a float) and ``epoch(x, y, batch)`` (one shuffled
pass over a data set, drawing the permutation with numpy and gathering the rows of every batch).

graphc runs through its public API (``Model.train_step``, ``predict``, ``fit``); the bare
compiled entry (``step_bare``/``infer_bare``: one ctypes call, nothing checked) is a second,
labelled column, never the one the ratios use.

The optimizers follow the ``torch.optim`` formulas for all contestants: SGD ``p -= lr * g``;
Adam with betas (0.9, 0.999), eps 1e-8 and bias correction.

A peer whose package is missing raises ``Missing`` from its constructor; ``run.py`` reports it
in the table instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class Missing(Exception):
    """A peer that cannot run here (package not installed, backend unavailable)."""


@dataclass(frozen=True)
class Spec:
    """An MLP: layer widths, hidden activation, loss ("ce": softmax cross-entropy over integer
    labels; "bce": binary cross-entropy from one logit), optimizer ("sgd" or "adam"), lr."""

    sizes: tuple[int, ...]
    act: str
    loss: str
    opt: str
    lr: float

    @property
    def name(self) -> str:
        return f"{'-'.join(map(str, self.sizes))} {self.act} {self.loss} {self.opt}"


def init_weights(spec: Spec, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform W [in, out] and zero b per layer, float32."""
    rng = np.random.default_rng(seed)
    out = []
    for a, b in zip(spec.sizes[:-1], spec.sizes[1:]):
        lim = np.sqrt(6.0 / (a + b))
        out.append((rng.uniform(-lim, lim, (a, b)).astype(np.float32), np.zeros(b, np.float32)))
    return out


def make_data(spec: Spec, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random features float32 [n, in] and labels (int32 [n] classes, or float32 [n, 1] in {0,1})."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, spec.sizes[0])).astype(np.float32)
    if spec.loss == "ce":
        y = rng.integers(0, spec.sizes[-1], n).astype(np.int32)
    else:
        y = rng.integers(0, 2, (n, 1)).astype(np.float32)
    return x, y


# ------------------------------------------------------------------------------------- graphc


class GraphcPeer:
    """graphc through its public API: ``Model.train_step``, ``Model.predict``, ``Model.fit``;
    ``step_bare``/``infer_bare`` call the compiled entry directly (a labelled extra column)."""

    label = "graphc"

    def __init__(self, spec: Spec, weights, x: np.ndarray, y: np.ndarray) -> None:
        import graphc as gc

        xin = gc.input("x", ("N", spec.sizes[0]))
        h = xin
        nl = len(spec.sizes) - 1
        for i, width in enumerate(spec.sizes[1:]):
            h = gc.dense(h, width, None if i == nl - 1 else spec.act, name=f"fc{i + 1}")
        if spec.loss == "ce":
            yin = gc.input("y", ("N",), dtype="i32")
            loss = gc.softmax_cross_entropy(h, yin)
        else:
            yin = gc.input("y", ("N", 1))
            loss = gc.binary_cross_entropy(h, yin)
        opt = gc.SGD(lr=spec.lr) if spec.opt == "sgd" else gc.Adam(lr=spec.lr)
        t0 = time.perf_counter()
        self.model = gc.compile(h, loss, opt, name="bench")
        self._loss = float("nan")
        self.compile_s = time.perf_counter() - t0
        self.model.set_weights(
            {
                f"fc{i + 1}.{k}": v
                for i, (w, b) in enumerate(weights)
                for k, v in (("w", w), ("b", b))
            }
        )
        self.x, self.y = x, y
        e = self.model.entries["train_step"]
        feeds = {"x": x, "y": y, "lr": np.array(spec.lr, np.float32)}
        self._step_arrays = [feeds[s] for s in e.sched.input_slots]
        e.check(self._step_arrays, len(x))
        self._step_entry = bare_call(e)
        self._infer_entry, self._infer_arrays = bare_call(self.model.entries["infer"]), [x]

    def step(self) -> None:
        """``Model.train_step(x, y)``: the public per-batch call."""
        self._loss = self.model.train_step(self.x, self.y)

    def step_bare(self) -> None:
        """The ``train_step`` entry called with nothing checked and nothing allocated."""
        self._loss = float(self._step_entry(self._step_arrays, len(self.x))[0])

    def sync(self) -> None:
        pass

    def loss(self) -> float:
        return self._loss

    def fit_steps(self, batches: int) -> None:
        """``Model.fit`` over ``batches`` copies of the batch (one native call for the epoch)."""
        xs, ys = self._rep(batches)
        self.model.fit(xs, ys, epochs=1, batch_size=len(self.x), shuffle=False, verbose=0)

    def _rep(self, batches: int) -> tuple[np.ndarray, np.ndarray]:
        key = ("rep", batches)
        if getattr(self, "_rep_key", None) != key:
            self._rep_data = (
                np.concatenate([self.x] * batches),
                np.concatenate([self.y] * batches),
            )
            self._rep_key = key
        return self._rep_data

    def infer_bare(self) -> np.ndarray:
        return self._infer_entry(self._infer_arrays, len(self.x))[0]

    def infer(self) -> np.ndarray:
        return self.model.predict(self.x)

    def epoch(self, x: np.ndarray, y: np.ndarray, batch: int, seed: int) -> None:
        self.model.fit(x, y, epochs=1, batch_size=batch, seed=seed, verbose=0)


def bare_call(entry) -> Callable:
    """``entry``'s call with nothing checked: ``Entry.run(arrays, n)``, or, in graphc before
    the call-path work of issue 12 (the ``--before`` contestant), ``Entry(arrays, n,
    checked=False)``."""
    run = getattr(entry, "run", None)
    if run is not None:
        return run
    return lambda arrays, n: entry(arrays, n, checked=False)


def graphc_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int):
    """``a @ b`` as a compiled graphc model (b a parameter): (model, public call, bare call).
    The public call is ``predict(a, out=out)``, or ``predict(a)`` in a graphc whose ``predict``
    has no ``out=`` (before issue 12)."""
    import inspect

    import graphc as gc

    n = a.shape[1]
    m = gc.compile(gc.matmul(gc.input("a", ("N", n)), gc.param("b", b.shape)), name="gemm")
    m.threads = threads
    m.params["b"][...] = b
    bare = bare_call(m.entries["infer"])
    if "out" in inspect.signature(m.predict).parameters:
        call = lambda: m.predict(a, out=out)  # noqa: E731
    else:
        call = lambda: m.predict(a)  # noqa: E731
    return m, call, lambda: bare([a], len(a))[0]


# ------------------------------------------------------------------------------------- numpy


class NumpyPeer:
    """A hand-written float32 numpy MLP (matmuls in numpy's BLAS)."""

    label = "numpy"

    def __init__(self, spec: Spec, weights, x: np.ndarray, y: np.ndarray) -> None:
        self.spec = spec
        self.params = [a.copy() for wb in weights for a in wb]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.x, self.y = x, y
        self._loss = float("nan")
        self.act, self.dact = {
            "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(np.float32)),
            "tanh": (np.tanh, lambda z, a: 1 - a * a),
            "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z, a: a * (1 - a)),
        }[spec.act]

    def _forward(self, x):
        zs, acts = [], [x]
        h = x
        nl = len(self.params) // 2
        for i in range(nl):
            z = h @ self.params[2 * i] + self.params[2 * i + 1]
            zs.append(z)
            h = self.act(z) if i < nl - 1 else z
            acts.append(h)
        return zs, acts

    def infer(self, x=None):
        return self._forward(self.x if x is None else x)[1][-1]

    def sync(self) -> None:
        pass

    def loss(self) -> float:
        return self._loss

    def step(self, x=None, y=None) -> float:
        x = self.x if x is None else x
        y = self.y if y is None else y
        zs, acts = self._forward(x)
        z = acts[-1]
        n = len(x)
        if self.spec.loss == "ce":
            zmax = z.max(axis=1, keepdims=True)
            e = np.exp(z - zmax)
            s = e.sum(axis=1, keepdims=True)
            loss = float(np.mean(np.log(s[:, 0]) + zmax[:, 0] - z[np.arange(n), y]))
            dz = e / s
            dz[np.arange(n), y] -= 1
            dz /= n
        else:
            loss = float(np.mean(np.logaddexp(0, z) - z * y))
            dz = (1 / (1 + np.exp(-z)) - y) / z.size
        grads = [None] * len(self.params)
        nl = len(self.params) // 2
        for i in range(nl - 1, -1, -1):
            grads[2 * i] = acts[i].T @ dz
            grads[2 * i + 1] = dz.sum(axis=0)
            if i:
                dz = (dz @ self.params[2 * i].T) * self.dact(zs[i - 1], acts[i])
        self._update(grads)
        self._loss = loss
        return loss

    def _update(self, grads) -> None:
        lr = self.spec.lr
        if self.spec.opt == "sgd":
            for p, g in zip(self.params, grads):
                p -= lr * g
            return
        self.t += 1
        c1, c2 = 1 - BETA1**self.t, 1 - BETA2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= BETA1
            m += (1 - BETA1) * g
            v *= BETA2
            v += (1 - BETA2) * g * g
            p -= lr * (m / c1) / (np.sqrt(v / c2) + EPS)

    def epoch(self, x, y, batch: int, seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(x))
        for lo in range(0, len(x), batch):
            idx = order[lo : lo + batch]
            self.step(x[idx], y[idx])


# ------------------------------------------------------------------------------------- torch


class TorchPeer:
    """PyTorch eager: nn.Sequential, zero_grad(set_to_none=True), the optimizer's ``foreach``
    implementation (one multi-tensor kernel per update, PyTorch's documented faster variant;
    its CPU default is a Python loop over the tensors) and ``torch.set_flush_denormal(True)``."""

    label = "torch eager (foreach)"
    compiled = False
    _copies = 0  # renamed copies of _eager_step made for torch.compile
    variant = {"foreach": True}

    def __init__(self, spec: Spec, weights, x: np.ndarray, y: np.ndarray) -> None:
        try:
            import torch
        except ImportError as e:
            raise Missing("torch not installed") from e
        self.torch = torch
        # Subnormals flushed to zero, torch's documented switch (off by default): the steps
        # on one repeated batch learn it, and Adam's moments then fall below 1.2e-38, where
        # each operation takes a microcode assist. graphc's training entries and XLA flush too.
        torch.set_flush_denormal(True)
        layers = []
        acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
        for i, (w, b) in enumerate(weights):
            lin = torch.nn.Linear(*w.shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(acts[spec.act]())
        self.net = torch.nn.Sequential(*layers)
        self.loss_fn = (
            torch.nn.CrossEntropyLoss() if spec.loss == "ce" else torch.nn.BCEWithLogitsLoss()
        )
        cls = torch.optim.SGD if spec.opt == "sgd" else torch.optim.Adam
        self.opt = cls(self.net.parameters(), lr=spec.lr, **self.variant)
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y.astype(np.int64)) if spec.loss == "ce" else torch.from_numpy(y)
        self._loss = None
        self._step = self._eager_step
        if self.compiled:
            import copy
            import types

            # Every case of a worker lives in one process. Dynamo caches compiled code per code
            # object, with a limit of entries per object: every peer gets a code object of its
            # own (a renamed copy of _eager_step), so no case evicts or recompiles another's.
            TorchPeer._copies += 1
            fn = TorchPeer._eager_step
            code = fn.__code__.replace(co_name=f"_eager_step_{TorchPeer._copies}")
            own = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__)
            start = copy.deepcopy(self.net.state_dict())
            # the whole step: forward, loss, backward and the optimizer's update
            self._step = torch.compile(types.MethodType(own, self))
            self.step()
            self.step()  # compiled now (the optimizer's state exists after the first step)
            with torch.no_grad():  # back to the shared initial weights, a fresh optimizer
                for k, v in self.net.state_dict().items():
                    v.copy_(start[k])
                for st in self.opt.state.values():
                    for v in st.values():
                        if torch.is_tensor(v):
                            v.zero_()
            self._infer = None  # compiled at its first use (only the inference cases)
        else:
            self._infer = self.net

    def _eager_step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.net(x), y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def step(self, x=None, y=None) -> None:
        self._loss = self._step(self.x if x is None else x, self.y if y is None else y)

    def sync(self) -> None:
        pass

    def loss(self) -> float:
        return float(self._loss)

    def infer(self):
        if self._infer is None:
            self._infer = self.torch.compile(self.net)
        with self.torch.no_grad():
            return self._infer(self.x)

    def epoch(self, x, y, batch: int, seed: int) -> None:
        torch = self.torch
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(y.astype(np.int64)) if y.dtype == np.int32 else torch.from_numpy(y)
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
        for lo in range(0, len(x), batch):
            idx = order[lo : lo + batch]
            self.step(xt[idx], yt[idx])


class TorchFusedPeer(TorchPeer):
    """PyTorch eager with ``fused=True`` (one fused kernel for every parameter's update; the
    fastest documented variant on CPU since PyTorch 2.4)."""

    label = "torch eager (fused)"
    variant = {"fused": True}


class TorchCompilePeer(TorchPeer):
    """``torch.compile`` (inductor) of the whole step: forward, loss, backward and the update
    (fused optimizer)."""

    label = "torch.compile"
    compiled = True
    variant = {"fused": True}


# ------------------------------------------------------------------------------------- JAX


class JaxPeer:
    """JAX: one ``jax.jit`` function per training step (forward, grad, update; buffers donated)."""

    label = "JAX jit"

    def __init__(self, spec: Spec, weights, x: np.ndarray, y: np.ndarray) -> None:
        try:
            import jax
            import jax.numpy as jnp
        except ImportError as e:
            raise Missing("jax not installed") from e
        self.jax, self.jnp = jax, jnp
        act = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[spec.act]

        def forward(params, x):
            h = x
            for i, (w, b) in enumerate(params):
                h = h @ w + b
                if i < len(params) - 1:
                    h = act(h)
            return h

        def loss_fn(params, x, y):
            z = forward(params, x)
            if spec.loss == "ce":
                return jnp.mean(
                    jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0]
                )
            return jnp.mean(jnp.logaddexp(0.0, z) - z * y)

        lr = spec.lr

        def sgd(state, x, y):
            params = state
            loss, g = jax.value_and_grad(loss_fn)(params, x, y)
            return jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g), loss

        def adam(state, x, y):
            params, m, v, t = state
            loss, g = jax.value_and_grad(loss_fn)(params, x, y)
            t = t + 1
            m = jax.tree_util.tree_map(lambda a, d: BETA1 * a + (1 - BETA1) * d, m, g)
            v = jax.tree_util.tree_map(lambda a, d: BETA2 * a + (1 - BETA2) * d * d, v, g)
            c1, c2 = 1 - BETA1**t, 1 - BETA2**t
            params = jax.tree_util.tree_map(
                lambda p, a, b: p - lr * (a / c1) / (jnp.sqrt(b / c2) + EPS), params, m, v
            )
            return (params, m, v, t), loss

        params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights]

        def zeros():  # separate buffers for m and v: donated buffers must be distinct
            return jax.tree_util.tree_map(jnp.zeros_like, params)

        def fresh():  # the initial state (donated buffers are consumed by a step)
            p = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights]
            return p if spec.opt == "sgd" else (p, zeros(), zeros(), jnp.float32(0.0))

        self.state = fresh()
        self._step = jax.jit(sgd if spec.opt == "sgd" else adam, donate_argnums=0)
        self._infer = jax.jit(forward)
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)
        self.spec = spec
        self._loss = None
        self.step()  # compile now
        self.sync()
        self.infer()
        self.state = fresh()  # and start from the shared initial weights

    def step(self, x=None, y=None) -> None:
        """Dispatches the step and returns (JAX runs it asynchronously; ``sync`` waits)."""
        self.state, self._loss = self._step(
            self.state, self.x if x is None else x, self.y if y is None else y
        )

    def sync(self) -> None:
        self._loss.block_until_ready()

    def loss(self) -> float:
        return float(self._loss)

    def infer(self):
        params = self.state if self.spec.opt == "sgd" else self.state[0]
        return self._infer(params, self.x).block_until_ready()

    def epoch(self, x, y, batch: int, seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(x))
        loss = None
        for lo in range(0, len(x), batch):
            idx = order[lo : lo + batch]
            self.state, loss = self._step(self.state, x[idx], y[idx])
        loss.block_until_ready()


PEERS: list[Callable] = [NumpyPeer, TorchPeer, TorchFusedPeer, TorchCompilePeer, JaxPeer]
