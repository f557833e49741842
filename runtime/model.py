"""The trained-model object: parameters, optimizer state, fit / evaluate / predict over native code."""

from __future__ import annotations

import logging
import math
import operator
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.codegen.aot import TRAIN_ENTRIES, output_keys
from graphc.codegen.threads import MAX_THREADS
from graphc.ir.batch import loss_is_row_mean, rows_independent
from graphc.ir.errors import (
    ArgumentError,
    DistributedError,
    GraphcError,
    NumericsError,
    OptionTypeError,
)
from graphc.ir.ops.loss import label_classes
from graphc.ir.ops.sources import index_check, zero_runs
from graphc.ir.program import UNIT_TARGET_LOSSES
from graphc.ir.types import BATCH

from .buffers import WeightViews, aligned_empty, keyed_outputs, out_by_key, output_arrays, view
from .callbacks import CallbackList
from .checks import (
    InputRejected,
    cast_input,
    check_batch_size,
    check_bool,
    check_lr,
    check_seed,
    explain,
    input_array,
    label_error,
    param_value,
    row_indices_valid,
    zero_mask,
)
from .executable import (
    Entry,
    EpochEntry,
    NonfiniteLoss,
    class_ids,
    label_column,
    number_dtype_hint,
    shape_hint,
)
from .parallel import (
    default_threads,
    hand_over,
    long_call,
    own_lock,
    serialized,
    threads_from_env,
    turn,
    turned,
)

log = logging.getLogger(__name__)  # graphc's own messages; fit's epoch lines stay on stdout


@dataclass
class History:
    """Per-epoch figures of a ``fit`` run: ``history["loss"]``, ``history["val_loss"]``, ..."""

    epochs: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    stopped_early: bool = False
    best_epoch: int | None = None
    interrupted: bool = False  # fit stopped by KeyboardInterrupt (the epochs so far are kept)
    step_losses: list[float] = field(default_factory=list)  # per global batch (distributed fit)

    def __getitem__(self, key: str) -> list[float]:
        return self.metrics[key]

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras's ``History.history``: metric name -> one value per epoch (the same lists)."""
        return self.metrics

    @property
    def epoch(self) -> list[int]:
        """Keras's ``History.epoch``: the epochs run, counted from 0 (``epochs``, the same list)."""
        return self.epochs

    def truncate(self, epochs: int) -> None:
        """Keep the first ``epochs`` epochs (fit's rollback of an unfinished epoch)."""
        del self.epochs[epochs:]
        for v in self.metrics.values():
            del v[epochs:]

    def add(self, epoch: int, figures: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for k, v in figures.items():
            self.metrics.setdefault(k, []).append(float(v))


def row_split(schedules: dict[str, Any]) -> dict[str, bool]:
    """Per entry, whether running blocks of rows and joining them gives the answer for all
    rows (graphc.ir.batch): ``infer`` when every output is row-wise; ``eval`` when, in addition,
    the loss (the last output) is a mean over rows, so blocks' losses average by their rows."""
    out = {}
    if "infer" in schedules:
        s = schedules["infer"]
        out["infer"] = rows_independent(s.graph, s.output_slots)
    if "eval" in schedules:
        s = schedules["eval"]
        *outs, loss = s.output_slots
        out["eval"] = rows_independent(s.graph, outs) and loss_is_row_mean(s.graph, loss)
    return out


# The drivers of Model.export ("library": graphc.export.export_model) and Model.to_onnx ("onnx":
# graphc.onnx_export.save_onnx) live above the runtime layer; the graphc package installs them
# here when it is imported, so the runtime never imports graphc.
EXPORTERS: dict[str, Callable[..., Any]] = {}


def as_declared(a: np.ndarray, dtype: np.dtype, row_term: int = 0) -> np.ndarray:
    """A float32 array of whole numbers (an ONNX import's integer output, computed by graphc
    in float32, where its integer casts already wrapped or saturated as ONNX Runtime's: exact
    below 2**24) in ``dtype``: bool as a != 0; an integer type as the value, or the type's
    bound where float32's rounding carried it past (2**32 - 1 of uint32 is held as 2**32);
    then, with ``row_term`` f, row n (a's first axis) plus n * f, in int64 (MaxPool's Indices:
    (n * C + c) * P + p of the c * P + p the graph computes)."""
    a = np.asarray(a)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return a != 0
    info = np.iinfo(dtype)
    f = a.astype(np.float64)
    hi, lo = f >= float(info.max), f <= float(info.min)
    out = np.where(hi | lo | np.isnan(f), 0.0, f).astype(dtype)
    out[hi] = info.max
    out[lo] = info.min
    if row_term and out.ndim:
        rows = np.arange(out.shape[0], dtype=np.int64) * row_term
        out = (out + rows.reshape((-1,) + (1,) * (out.ndim - 1))).astype(dtype)
    return out


def declared_outputs(
    names: Sequence[str],
    outs: Sequence[np.ndarray],
    batched: Sequence[bool],
    dtypes: dict[str, np.dtype],
    row_terms: dict[str, int],
    constants: dict[str, np.ndarray],
    order: Sequence[str],
    batch_axes: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """An ONNX import's outputs as the file declares them: ``outs`` (float32, one per name of
    ``names``) with each output of ``dtypes`` converted (as_declared, with its row term), each
    output of ``batch_axes`` (name -> k) given its ONNX layout, the batch axis moved from first
    to axis k (a C-contiguous copy of np.moveaxis(a, 0, k): torch's LSTM / GRU h_n
    [layers * dirs, N, H]), and, where ``constants`` holds outputs known at import, those put
    in their places of ``order`` for the batch size of the first computed output that leads
    with N (``batched``)."""
    got = {
        k: as_declared(a, dtypes[k], row_terms.get(k, 0)) if k in dtypes else a
        for k, a in zip(names, outs)
    }
    for k, axis in (batch_axes or {}).items():
        got[k] = np.ascontiguousarray(np.moveaxis(got[k], 0, axis))
    if not constants:
        return got
    n = next((a.shape[0] for a, b in zip(outs, batched) if b), 0)  # (before any axis moved)
    return {k: got[k] if k in got else constant_value(constants[k], n) for k in order}


def batch_layout_type(t: Any, axis: int, how: str = "returned") -> str:
    """An output's (or input's, ``how`` "taken") type as Model's repr shows it: with ``axis``
    > 0 (Model.output_batch_axes, input_batch_axes), the layout predict returns (takes), N
    moved from first to that axis: "f32[N,1,12] returned as [1,N,12]"."""
    if not axis:
        return str(t)
    dims = [str(d) for d in t.shape[1:]]
    dims.insert(axis, "N")
    return f"{t} {how} as [{','.join(dims)}]"


def constant_value(a: np.ndarray, n: int) -> np.ndarray:
    """An ONNX import's output known at import (OnnxImport.constant_outputs) for a call of
    ``n`` rows: a copy, with each size that holds the batch size ("N", "N*m") as n (n * m)
    in int64."""
    if a.dtype != object:
        return a.copy()
    vals = [n * (1 if e == "N" else int(e[2:])) if isinstance(e, str) else int(e) for e in a.flat]
    return np.array(vals, np.int64).reshape(a.shape)


def _check_empty_outputs(e: Any, names: list[str]) -> None:
    """predict on 0 rows gives empty outputs (as Keras and PyTorch) when every output has N
    first; one computed over the batch (a sum over rows) has no value without rows.

    Raises:
        ArgumentError: naming such an output.
    """
    for name, t in zip(names, e.out_types):
        if t.shape[:1] != (BATCH,):
            raise ArgumentError(
                f"predict: no rows, and output {name!r} ({t}) is computed over the rows, not "
                "one value per row: pass at least one row"
            )


# the metrics Model._metrics computes, by loss kind (figure_names announces them)
METRICS = {
    "softmax_cross_entropy": ("accuracy",),
    "binary_cross_entropy": ("accuracy",),
    "binary_cross_entropy_probs": ("accuracy",),
    "categorical_cross_entropy": ("accuracy",),
    "mean_squared_error": ("mse", "mae", "r2"),
    "mean_absolute_error": ("mse", "mae", "r2"),
    "huber": ("mse", "mae", "r2"),
}


def _check_monitors(callbacks: Any, names: list[str]) -> None:
    """Before any training: each callback with ``check_figures(names)`` (EarlyStopping,
    ReduceLROnPlateau: their ``monitor``) checks it against the figures fit will report, and
    each with ``check_together(callbacks)`` (the LR schedules) the other callbacks."""
    for cb in callbacks:
        check = getattr(cb, "check_figures", None)
        if check is not None:
            check(list(names))
        together = getattr(cb, "check_together", None)  # (LR schedules: one rate setter)
        if together is not None:
            together(list(callbacks))


def _fitting(fit: Callable[..., Any]) -> Callable[..., Any]:
    """``fit`` with ``model._fit_depth`` raised while it runs: the rates its callbacks set are
    not taken as a new base rate (``Model.initial_lr``)."""
    import functools

    @functools.wraps(fit)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._fit_depth += 1
        try:
            return fit(self, *args, **kwargs)
        finally:
            self._fit_depth -= 1

    return run


def _exporter(kind: str) -> Callable[..., Any]:
    if kind not in EXPORTERS:
        raise GraphcError(f"no {kind} exporter installed: import graphc first")
    return EXPORTERS[kind]


def metric_target_of(program: Any) -> str | None:
    """The input evaluate's metrics compare the prediction with (Program.metric_target;
    the first label input for a program that predates it), or None: no metrics."""
    if hasattr(program, "metric_target"):
        return program.metric_target
    return program.label_inputs[0] if program.label_inputs else None


def _r2_uniform(y: np.ndarray, err: np.ndarray) -> float:
    """The coefficient of determination of a regression, averaged uniformly over its outputs.

    Each output (every element of a row: ``y.reshape(n, -1)``'s columns) gets
    ``R2_j = 1 - sum_i err_ij**2 / sum_i (y_ij - mean_i y_ij)**2``; the result is the plain mean
    of the ``R2_j`` (scikit-learn's ``r2_score`` with ``multioutput="uniform_average"``, its
    default, and Keras' ``R2Score``), so outputs of different scales count alike. A constant
    column gives 1.0 when predicted exactly, else 0.0 (``r2_score``'s ``force_finite=True``).

    Args:
        y: targets, shape [n, ...].
        err: predictions minus targets, y's shape; float64.

    Returns:
        The mean R2 (nan for fewer than 2 rows).
    """
    n = y.shape[0] if y.ndim else 1
    return r2_from_sums(y, np.sum(err.reshape(n, -1) ** 2, axis=0) if n >= 2 else None)


def r2_from_sums(y: np.ndarray, ss_res: np.ndarray | None) -> float:
    """``_r2_uniform`` from the targets ``y`` [n, ...] and the per-output sums of squared
    errors ``ss_res`` [outputs] (float64; from several slices of the rows, summed: the
    data-parallel validation of runtime.distributed). nan for fewer than 2 rows."""
    n = y.shape[0] if y.ndim else 1
    if n < 2 or ss_res is None:
        return float("nan")
    yc = y.reshape(n, -1).astype(np.float64)
    ss_res = np.asarray(ss_res, np.float64)
    ss_tot = np.sum((yc - yc.mean(axis=0)) ** 2, axis=0)
    ok = ss_tot > 0
    r2 = np.where(ss_res == 0, 1.0, 0.0)
    r2[ok] = 1.0 - ss_res[ok] / ss_tot[ok]
    return float(np.mean(r2))


class Model:
    """A compiled network with its parameters (see ``graphc.compile``).

    Attributes:
        program: the compiler's output, stage by stage (graphs, schedules, timings).
        params: name -> float array view of each trainable parameter (writable in place;
            ``params[name] = value`` writes value into it, checked as set_weights checks it,
            and the names are fixed: buffers.WeightViews).
        state: name -> array view of each optimizer slot and the step counter (the same).
            Both are live and unlocked: while another thread trains, read a consistent
            snapshot with ``get_weights()`` / ``save()`` and write with ``set_weights()``
            (they take the model's lock; see ``fit``'s Threads paragraph).
        lr: the learning rate fed to the next training step.
    """

    def __init__(
        self,
        program: Any,
        jit: Any,
        *,
        optimizer: Any = None,
        seed: int = 0,
        compile_split: Callable[[], Any] | None = None,
    ) -> None:
        """``compile_split``: makes, on first need, a compiled module holding the entries
        ``train_grads`` and ``apply_update`` when ``jit`` has none (graphc.compiler
        .compile_split; None when there is none to make): see ``split_entries``."""
        self.program = program
        self.jit = jit
        self._compile_split = compile_split
        self._split_jit: Any = None
        self.optimizer = optimizer
        if hasattr(optimizer, "bind"):  # optimizer.lr = ... sets this model's rate
            optimizer.bind(self)
        self._param_region = aligned_empty(program.param_bytes)
        self._state_region = aligned_empty(program.state_bytes)
        src = program.training or program.forward
        self.param_nodes = [n for n in src.nodes if n.op == "param"]
        self.state_nodes = [n for n in src.nodes if n.op == "state"]
        self.params = WeightViews(
            _views(self._param_region, self.param_nodes, program), "model.params"
        )
        self.state = WeightViews(
            _views(self._state_region, self.state_nodes, program), "model.state"
        )
        self.entries = {e: self._entry(jit, e) for e in program.schedules}
        # The call path (train_step, predict, evaluate): array layouts (dtype, shape, strides)
        # that passed the metadata checks once, by entry; values are checked natively.
        self._layouts: dict[tuple, int] = {}
        self._infer = self.entries.get("infer")
        self._infer_pair: tuple = (None, None)  # predict's last (x, out) found not overlapping
        self._lr_arrays: dict[Any, np.ndarray] = {}  # lr as each entry's 0-d input, by dtype
        # output name -> the dtype predict returns it in (as_declared): an ONNX import's
        # integer and bool outputs, computed as float32 whole numbers (graphc.onnx_import sets
        # it); a model with any takes predict's checked path
        self.output_dtypes: dict[str, np.dtype] = {}
        self.output_row_terms: dict[str, int] = {}  # name -> f: row n gets + n * f (as_declared)
        # name -> k: an ONNX import's output whose batch axis N is ONNX axis k > 0, computed
        # with N first; predict returns it moved to axis k (declared_outputs)
        self.output_batch_axes: dict[str, int] = {}
        # name -> k: an ONNX import's input whose batch axis N is ONNX axis k > 0 (torch's
        # nn.LSTM with batch_first=False: x [T, N, C], h0 [layers * dirs, N, H]), compiled
        # with N first; predict, fit and evaluate take it in the ONNX layout and move axis k
        # to 0 before the native call (_as_feeds)
        self.input_batch_axes: dict[str, int] = {}
        # inputs that take bool arrays (read as 0 and 1): an ONNX import's bool inputs
        self.bool_inputs: frozenset[str] = frozenset()
        # outputs known at import that predict returns beside the computed ones, in the order
        # of output_order (an ONNX import's Shape(x) output; constant_value)
        self.constant_outputs: dict[str, np.ndarray] = {}
        self.output_order: list[str] = []
        for e in self.entries.values():
            for name, t in zip(e.sched.input_slots, e.in_types):
                if name == "lr":
                    self._lr_arrays.setdefault(t.np_dtype, np.zeros((), t.np_dtype))
        self._fit_depth = 0  # > 0 while fit runs (its schedules' rates are not a new base)
        # Keras's flag: a callback sets it to end fit (after the batch or epoch; fit clears it)
        self.stop_training = False
        own_lock(self)  # before the first lr write (the lr setter takes it)
        self.lr = float(getattr(optimizer, "lr", 1e-3))
        # train_step(x, y) of a model with one feature and one label input: the entry and the
        # slot order of (x, y, lr), so that a call in a known layout builds nothing else
        self._xy: tuple[str, str] | None = None
        if "train_step" in self.entries and (
            len(program.feature_inputs) == len(program.label_inputs) == 1
        ):
            self._xy = (program.feature_inputs[0], program.label_inputs[0])
            self._train = e = self.entries["train_step"]
            lr_arr = next(
                (
                    self._lr_arrays[t.np_dtype]
                    for s, t in zip(e.sched.input_slots, e.in_types)
                    if s == "lr"
                ),
                None,
            )
            where = {self._xy[0]: 0, self._xy[1]: 1}
            self._train_lr = lr_arr
            self._pack_xy = operator.itemgetter(*(where.get(s, 2) for s in e.sched.input_slots))
        # A whole epoch in one native call, when the module has it (see fit).
        self.epoch_entry: EpochEntry | None = None
        if (
            "train_step" in self.entries
            and hasattr(jit, "has")
            and jit.has(f"{program.name}_train_epoch")
        ):
            self.epoch_entry = EpochEntry(
                jit.address(f"{program.name}_train_epoch"), self.entries["train_step"]
            )
        self.use_epoch_entry = True
        # batch_norm layers normalized by the batch's own statistics in training: a batch of
        # one row is refused (its variance is 0: every output is beta, no gradient passes)
        declared = getattr(program, "declared", None) or program.forward
        self._batch_norms = (
            [n.name for n in declared.nodes if n.op == "batch_norm"]
            if program.training is not None
            else []
        )
        # May predict/evaluate split rows into blocks? (the rule exported libraries carry too)
        self.row_split = row_split(program.schedules)
        self.threads = default_threads()
        self._threads_default = threads_from_env() is None
        self.seed = check_seed(seed)
        self.history: History | None = None  # the last fit's (set as soon as fit starts)
        self.initialize(seed)

    @property
    def threads(self) -> int:
        """Threads the compiled kernels split their work over (GEMMs of every entry point:
        training steps, epochs, predict); results do not depend on it (codegen/threads.py).
        Counts above MAX_THREADS (64) run MAX_THREADS; more threads than cores only slow down.

        Raises:
            ArgumentError: a count that is not a positive int.
        """
        return self.jit.threads()

    @threads.setter
    def threads(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ArgumentError(f"threads must be a positive int, got {n!r}")
        n = min(n, MAX_THREADS)  # the native call takes an int32
        self._threads_default = False  # chosen: distributed fit keeps it (see thread_share)
        with self._lock:  # never while a call of this model runs in another thread
            self.jit.set_threads(self.program.name, n)
            if self._split_jit is not None:
                self._split_jit.set_threads(self.program.name, n)

    def _entry(self, jit: Any, e: str) -> Entry:
        """Entry ``e`` of the program, at its address in ``jit``."""
        prog = self.program
        checks = getattr(prog, "input_checks", {}).get(e, ())
        entry = Entry(
            jit.address(f"{prog.name}_{e}"),
            prog.schedules[e],
            self._param_region,
            self._state_region,
            owner=jit,
            unchecked_address=jit.address(f"{prog.name}_{e}_unchecked") if checks else None,
            checks=checks,
            writes_model=e in TRAIN_ENTRIES,
        )
        entry.views = {**self.params, **self.state}
        if getattr(prog, "check_numerics", False):  # name the node behind a NaN/Inf code
            from graphc.codegen.kernels import numerics_sites

            entry.numerics, entry.name = numerics_sites(entry.sched), e
            entry.step_of = (lambda: float(self.state["step"])) if "step" in self.state else None
        return entry

    def split_entries(self) -> tuple[Entry, Entry] | None:
        """The entries ``train_grads`` and ``apply_update`` (the training step split around an
        all-reduce: graphc.compiler.build_split), or None when the model has none
        (``program.split_note`` says why).

        ``gc.compile`` does not compile them with the model (data-parallel training and
        ``gradients`` are their only users): the first call compiles them into a module of
        their own (through the compile cache), with a thread pool that follows
        ``threads``.
        """
        with self._lock:
            if "train_grads" not in self.entries and self._compile_split is not None:
                make, self._compile_split = self._compile_split, None
                jit = make()
                if jit is not None:
                    for e in ("train_grads", "apply_update"):
                        self.entries[e] = self._entry(jit, e)
                    self._split_jit = jit
                    jit.set_threads(self.program.name, self.jit.threads())
            if "train_grads" not in self.entries or "apply_update" not in self.entries:
                return None
            return self.entries["train_grads"], self.entries["apply_update"]

    @property
    def lr(self) -> float:
        """The learning rate the next training step uses (a runtime input of the compiled step).

        Raises:
            ArgumentError: on assignment of NaN, +-Inf, a negative value or a non-number
                (the rate is left as it was).
        """
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        v = check_lr(value)
        with turn(self):  # a step of another thread reads these arrays
            self._lr = v
            for a in self._lr_arrays.values():
                a[()] = v
        if not self._fit_depth:  # the user's choice (not a schedule's): the new base rate
            self.initial_lr = v
        # model.optimizer.lr reads the live rate (Keras's model.optimizer.learning_rate) when
        # the optimizer belongs to this model alone (graphc.optim.Optimizer.__setattr__)
        opt = getattr(self, "optimizer", None)
        models = getattr(opt, "__dict__", {}).get("_models")
        if models is not None and len(models) == 1 and self in models:
            object.__setattr__(opt, "lr", v)

    @property
    def initial_lr(self) -> float:
        """The base rate of the learning-rate schedules (torch's ``initial_lr``): the rate
        last set outside ``fit`` (the optimizer's ``lr`` at first), kept in checkpoints. A
        schedule that starts at epoch 0 takes ``model.lr``; one resumed at a later epoch
        (``fit(initial_epoch=k)`` after ``load``) takes this, so that its rates are those of
        an uninterrupted run instead of decaying the decayed rate again. Set it (or ``lr``
        outside ``fit``) to resume with another base rate.

        Raises:
            ArgumentError: on assignment of NaN, +-Inf, a negative value or a non-number.
        """
        return self._initial_lr

    @initial_lr.setter
    def initial_lr(self, value: float) -> None:
        self._initial_lr = check_lr(value)

    # ------------------------------------------------------------------ parameters

    @turned
    def initialize(self, seed: int = 0) -> None:
        """(Re)draw every parameter with its initializer and zero the optimizer state.

        Parameter i draws from ``np.random.default_rng([seed, i])``, so each parameter's
        values depend only on the seed and its position.

        Raises:
            ArgumentError: ``seed`` is not an int in ``[0, 2**64)`` (nothing is changed).
        """
        seed = check_seed(seed)
        constants = getattr(self.program, "constants", {})
        for i, n in enumerate(self.param_nodes):
            self.params[n.name][...] = self._initial_value(n, constants, [seed, i])
        for n in self.state_nodes:
            self.state[n.name][...] = self._initial_value(n, constants, [seed, 0])
        # a count of writes through the API (set_weights, initialize, load): distributed fit
        # syncs the ranks when a batch callback on some ranks made one
        self._weights_written = getattr(self, "_weights_written", 0) + 1

    @staticmethod
    def _initial_value(n: Any, constants: dict[str, Any], seed: list[int]) -> np.ndarray:
        """The values a param/state source starts with: the program's array for a constant
        (gc.constant, ONNX weights, model files), else a draw of its initializer.

        Raises:
            GraphcError: a constant's values are missing from the program.
        """
        from graphc.ir.init import initialize

        if n.name in constants:
            return constants[n.name]
        if n.attr("init") == "array":
            raise GraphcError(
                f"{n.name}: the values of this constant are missing (they come with the "
                "program: rebuild it with gc.constant, from the model file or the ONNX file)"
            )
        args = dict(n.attr("init_args", ()))
        return initialize(
            n.attr("init", "zeros"),
            n.type.concrete(1),
            np.random.default_rng(seed),
            n.type.np_dtype,
            **args,
        )

    @property
    def param_count(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    @property
    def _model_state(self) -> dict[str, np.ndarray]:
        """The states that inference reads (batch_norm's running mean and variance): part of
        the trained model, unlike the optimizer's slots and step counter."""
        names = {n.name for n in self.program.inference.nodes if n.op == "state"}
        return {k: v for k, v in self.state.items() if k in names}

    def _weights(self) -> dict[str, np.ndarray]:
        return {**self.params, **self._model_state}

    @turned
    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of the model's weights by name: every parameter, then the non-trainable
        states that inference reads (batch_norm's running statistics), as Keras'
        ``get_weights`` includes its non-trainable weights; the optimizer's state is not
        included (``save`` writes it too)."""
        return {k: v.copy() for k, v in self._weights().items()}

    @turned
    def set_weights(self, weights: Any) -> None:
        """Copy arrays into the parameters: all of them or none.

        Args:
            weights: name -> array-like (some or all of ``get_weights()``'s names: parameters
                and batch_norm's running statistics), or a sequence of array-likes in
                ``get_weights()``'s order, one per parameter and then optionally one per
                running statistic (as Keras's ``set_weights`` takes them).

        Every value is converted first: a name the model lacks, another shape, a value that
        is not numeric, not convertible to the parameter's dtype without changing its kind
        (a complex or a string value, a float for an integer parameter) or too large for it
        (1e300 for float32) raises ArgumentError naming the parameter, and no parameter has
        changed.
        """
        targets = self._weights()
        if isinstance(weights, dict):
            items = list(weights.items())
        elif isinstance(weights, (list, tuple)):
            if len(weights) not in (len(self.params), len(targets)):
                also = f" (then {len(targets) - len(self.params)} running statistics)"
                raise ArgumentError(
                    f"set_weights: got a sequence of {len(weights)} arrays; the model has "
                    f"{len(self.params)} parameters{also if len(targets) > len(self.params) else ''}"
                    f" ({', '.join(targets)}): pass them in that order, or a dict by name"
                )
            items = list(zip(targets, weights))
        else:
            raise ArgumentError(
                "set_weights: expects a dict name -> array (as get_weights returns) or a list "
                f"of arrays in get_weights' order, got {type(weights).__name__}"
            )
        staged = [(k, param_value("set_weights", targets, k, v)) for k, v in items]
        for k, v in staged:
            targets[k][...] = v
        self._weights_written = getattr(self, "_weights_written", 0) + 1

    @turned
    def save(self, path: str, *, extra: dict[str, Any] | None = None) -> str:
        """Write parameters, optimizer state (step counter included) and lr to ``path`` (.npz).

        Atomic (a temporary file renamed into place); no pickle. See graphc.runtime.checkpoint.
        Raises CheckpointError when it cannot be written. During a distributed ``fit``, ranks
        other than 0 write nothing (they hold the same model) and return ``path``.
        """
        from .checkpoint import save

        if getattr(self, "_dist_rank", 0):
            return path
        return save(self, path, extra=extra)

    @turned
    def load(self, path: str, *, weights_only: bool = False) -> dict[str, Any]:
        """Restore what ``save`` wrote (only the parameters when ``weights_only``).

        Everything is checked first: a missing, corrupted, truncated or mismatched file raises
        CheckpointError and leaves the model unchanged. Returns the checkpoint's header.
        """
        from .checkpoint import load

        header = load(self, path, weights_only=check_bool(weights_only, "load: weights_only"))
        self._weights_written = getattr(self, "_weights_written", 0) + 1
        return header

    @turned
    def save_model(self, path: str) -> str:
        """Write the whole model to one file (``.gcm``): the network as graphc IR text, the
        weights, the optimizer state and set-up, the learning rate; ``graphc.load_model``
        reads it back without the Python source that declared the network (no pickle; see
        ``runtime/modelfile.py``). Returns the path. During a distributed ``fit``, ranks other
        than 0 write nothing (they hold the same model) and return ``path``, as ``save``.

        Raises:
            CheckpointError: the file cannot be written (an existing file stays as it was).
        """
        from .modelfile import save_model

        if getattr(self, "_dist_rank", 0):
            return path
        return save_model(self, path)

    @turned
    def export(self, path: str, **options: Any) -> Any:
        """Write this model (its current weights) as a shared library and C header.

        ``options``: header, entries, weights ("embed" | "file"), weights_path, target (a
        triple such as "aarch64-linux-gnu"), target_cpu, features, emit ("so" | "obj" | "a" |
        "llvm" | "asm"), cc; see ``graphc.export.export_model``, which this calls. Returns its
        ExportResult (paths written).

        Raises:
            GraphcError: a model with outputs known at import (``constant_outputs``), which
                the library would leave out; nothing is written.
        """
        return _exporter("library")(self, path, **options)

    def _no_constant_outputs(self, what: str) -> None:
        """Refuse ``what`` (a file without the outputs known at import) naming them."""
        if self.constant_outputs:
            raise GraphcError(
                f"{what}: the outputs {sorted(self.constant_outputs)} are known at import "
                "(predict adds them after the native call) and would be left out of the file; "
                "import with from_onnx(..., outputs=[the computed ones]) to write it"
            )

    @turned
    def to_onnx(self, path: str, *, include_loss: bool = False, opset: int | None = None) -> str:
        """Write the inference graph (and the loss, with ``include_loss``, as the output
        "loss") as an ONNX file with the current weights as initializers and the batch
        dimension symbolic ("N"), at default-domain ``opset`` (13 .. the newest the installed
        onnx package defines and the installed ONNX Runtime, if any, loads; default 17, or
        that newest where it is older).

        Needs the onnx package (``pip install -e ".[onnx]"``). See graphc.onnx_export.
        Raises OnnxError for an op without an ONNX form or an opset outside that range, and
        GraphcError for a model with outputs known at import (``constant_outputs``, which the
        file would leave out). Returns ``path``.
        """
        self._no_constant_outputs("to_onnx")
        include_loss = check_bool(include_loss, "to_onnx: include_loss")
        return _exporter("onnx")(self, path, include_loss=include_loss, opset=opset)

    # ------------------------------------------------------------------ copies

    def _image(self, what: str) -> bytes:
        """The whole model as ``.gcm`` bytes (save_model's file), taken under the lock.

        Raises:
            GraphcError: the model cannot be written as a model file (the message says why and
                what to do instead).
        """
        import tempfile

        try:
            with tempfile.TemporaryDirectory(prefix="graphc-copy-") as d:
                path = self.save_model(os.path.join(d, "model.gcm"))
                with open(path, "rb") as f:
                    return f.read()
        except GraphcError as e:
            raise GraphcError(
                f"cannot {what} model {self.program.name!r}: it is copied through its model "
                f"file (save_model), which failed: {e}. Rebuild it with gc.compile and "
                "set_weights / load instead, or use the 'fork' start method for subprocesses"
            ) from None

    def __reduce__(self) -> tuple:
        """Pickle (and copy.deepcopy) as the model file's bytes (with an ONNX import's output
        and input conversions: output_dtypes, output_row_terms, bool_inputs) plus the run-time
        settings (threads if chosen, seed, check_numerics, history, use_epoch_entry) and the
        outputs known at import, which the file lacks: unpickling compiles the network again
        (a compile-cache hit when the cache is shared, e.g. a 'spawn' / forkserver worker on
        the same machine) into a model with its own parameters, optimizer state, step counter
        and learning rates, independent of this one.

        Raises:
            GraphcError: the model has no model-file form (see ``save_model``).
        """
        with turn(self):
            data = self._image("pickle or copy")
            options = {
                "threads": None if self._threads_default else self.threads,
                "seed": self.seed,
                "check_numerics": bool(getattr(self.program, "check_numerics", False)),
                "history": self.history,
                "use_epoch_entry": self.use_epoch_entry,
                "constant_outputs": {
                    k: (a.tolist(), a.dtype.str) for k, a in self.constant_outputs.items()
                },
                "output_order": list(self.output_order),
            }
        return (_exporter("rebuild"), (data, options))

    def __copy__(self) -> Model:
        """An independent model (as ``copy.deepcopy``): a shallow copy would share this one's
        parameter arena, so that training one moved the other."""
        import copy

        return copy.deepcopy(self)

    # ------------------------------------------------------------------ seeing it

    def summary(self, batch: int = 32, print_fn: Any = print) -> str:
        """Print (with ``print_fn``; None prints nothing) and return a table of the compiled
        network: one row per inference kernel (fused ops, output type, parameter values read,
        FLOPs per row), then the parameter count and bytes, the optimizer state, the FLOPs per
        row and every entry's arena at batch size ``batch`` (``runtime/summary.py``)."""
        from .summary import summary_text

        text = summary_text(self, batch)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self) -> str:
        prog = self.program
        ins = ", ".join(
            f"{n.name}: {batch_layout_type(n.type, self.input_batch_axes.get(n.name, 0), 'taken')}"
            for n in prog.inference.inputs
        )
        outs = ", ".join(
            batch_layout_type(prog.inference[o].type, self.output_batch_axes.get(o, 0))
            for o in prog.inference.outputs
        )
        opt = repr(self.optimizer) if self.optimizer is not None and prog.loss else "inference only"
        n = sum(a.size for a in self.params.values())
        return f"<graphc.Model {prog.name!r} ({ins}) -> {outs}; {n:,} parameters; {opt}>"

    def _repr_svg_(self) -> str | None:
        """Jupyter's picture: the scheduled inference graph with its fused kernels as boxes
        (Graphviz); None without Graphviz, so that Jupyter shows ``repr``."""
        from graphc.ir.dot import graph_dot, svg_or_none

        g = self.program.schedules["infer"].graph
        return svg_or_none(graph_dot(g, title=f"{self.program.name} (infer)", collapse=True))

    # ------------------------------------------------------------------ data

    def _as_feeds(
        self, x: Any, y: Any, *, need_labels: bool, allow_empty: bool = False
    ) -> tuple[dict[str, np.ndarray], int]:
        prog = self.program
        feeds: dict[str, np.ndarray] = {}
        if isinstance(x, dict) or isinstance(y, dict):
            _check_dict_names(prog, x, y)
        if not prog.label_inputs and y is not None and not (isinstance(y, dict) and not y):
            _check_unused_targets(prog, x, y)
        if y is None and isinstance(x, dict) and any(n in x for n in prog.label_inputs):
            y = {n: x[n] for n in prog.label_inputs if n in x}  # one dict of every input
        for names, data, what in ((prog.feature_inputs, x, "x"), (prog.label_inputs, y, "y")):
            if not names:
                continue
            if data is None:
                if need_labels or what == "x":
                    raise ArgumentError(f"{what} is missing: the model needs {', '.join(names)}")
                continue
            if isinstance(data, dict):
                missing = [n for n in names if n not in data]
                if missing:
                    raise ArgumentError(
                        f"the dict given as {what} has no array for input(s) {missing} "
                        f"(its keys: {sorted(map(str, data))})"
                    )
                feeds.update({n: data[n] for n in names})
            elif len(names) == 1:
                feeds[names[0]] = data
            else:
                raise ArgumentError(f"{what}: the model has several inputs {names}; pass a dict")
        n = None
        src = prog.forward
        for name, a in list(feeds.items()):
            t = src[name].type
            a = input_array(name, a)
            moved = self.input_batch_axes.get(name, 0)
            if moved:  # the ONNX layout (N at axis k) as the compiled input's (N first)
                if a.ndim != len(t.shape):
                    raise ArgumentError(
                        f"input {name!r} expects {batch_layout_type(t, moved, 'taken')} (the "
                        f"batch N at axis {moved}), got an array of shape {a.shape}"
                    )
                a = np.moveaxis(a, moved, 0)
            if a.ndim == 0 and len(t.shape) > 0:
                raise ArgumentError(f"input {name!r}: expected an array of {t}, got a scalar")
            if t.dtype == "i32":
                a = class_ids(name, a)  # whole-number floats as int64
            elif not (
                np.issubdtype(a.dtype, np.floating)
                or np.issubdtype(a.dtype, np.integer)
                or (a.dtype == np.bool_ and name in self.bool_inputs)  # read as 0 and 1
            ):
                raise ArgumentError(
                    f"input {name!r} expects numbers ({t}), got dtype {a.dtype}"
                    + number_dtype_hint(a)
                )
            ax = t.shape.index(BATCH) if t.is_batched else None  # N need not lead: (3, "N")
            rows = a.shape[ax] if ax is not None and a.ndim > ax else None
            want = t.concrete(rows if rows is not None else 0)
            if a.shape != want and a.size == int(np.prod(want)) and a.ndim == 1 and ax == 0:
                a = a.reshape(want)  # a vector of targets for an [N, 1] output
            a = label_column(t.dtype, a, want)  # Keras's sparse labels [N, 1] for [N]
            if a.shape != want:
                raise ArgumentError(
                    f"input {name!r} expects {t}, got an array of shape {a.shape}"
                    + shape_hint(t, a.shape, want, a)
                )
            if rows is not None:
                if n is not None and rows != n:
                    raise ArgumentError(
                        f"inputs have different numbers of rows ({n} and {rows} for {name!r})"
                    )
                n = rows
            feeds[name] = cast_input(name, a, t.np_dtype) if t.dtype != "i32" else a
        if n is None and (feeds or not (prog.feature_inputs or need_labels)):
            n = 1  # no input has a batch axis (or predict of a model without inputs): one call
        if n is None or (n == 0 and not allow_empty):
            raise ArgumentError("the data set is empty: no rows to use")
        return feeds, n

    def _validate(
        self,
        feeds: dict[str, np.ndarray],
        allow_nonfinite: bool = False,
        comm: Any = None,
        floats: bool = True,
    ) -> None:
        """NaN/Inf in the data (with the first bad row) and labels out of range, before training.

        ``floats=False`` leaves out the scans of float inputs (NaN/Inf, binary cross-entropy
        targets outside [0, 1]): fit's first native epoch runs them on each gathered batch
        instead (see fit). Integer labels are always checked here, before their cast to int32.

        With ``comm`` (distributed fit: every rank holds the same rows) each rank scans only its
        share of the rows and one allgather combines what the ranks found, so that every rank
        raises the same error (the first bad row and the count of bad rows over all rows) in
        about 1/K of the time."""
        split = comm is not None and comm.Get_size() > 1
        given = dict(feeds)  # as passed: messages show the caller's values, not casts of them
        src = self.program.forward

        def scan() -> list[tuple[int, int, int, int]]:
            """(input index, check, first bad row, bad rows) in this rank's rows."""
            lo, hi = 0, None
            if split:  # fit's feeds: every one holds the same rows along axis 0
                from .distributed import shard

                n = next(iter(given.values())).shape[0]
                lo, count = shard(n, comm.Get_size(), comm.Get_rank())
                hi = lo + count
            found = []
            for i, (name, a) in enumerate(given.items()):
                t = src[name].type
                if np.ndim(a) == 0:  # a scalar input (an import's rank-0 input): one row
                    a = np.reshape(a, (1,))
                part = a[lo:hi] if split else a
                rows, width = len(part), int(np.prod(part.shape[1:], dtype=np.int64))
                bad = None
                lookup = src[name].attr("index_rows")
                if lookup is not None:  # row indices: whole numbers in -V..V-1, NaN failing
                    flat = np.asarray(part, dtype=np.float64).reshape(rows, width)
                    nonzero = bool(src[name].attr("index_nonzero"))
                    fine = row_indices_valid(
                        flat,
                        lookup,
                        src[name].attr("index_low"),
                        nonzero and zero_mask(zero_runs(src[name]), width),
                    )
                    if not fine.all():
                        found.append((i, 2, lo + int(np.flatnonzero(~fine.all(axis=1))[0]), 0))
                    continue
                if t.dtype == "i32":
                    classes = self._classes_for(name)
                    if classes:  # labels [N] or a sequence's [N, ..]: the rows holding one
                        bad = (part < 0) | (part >= classes)
                        skip = self._ignored_label(name)
                        if skip is not None:
                            bad &= part != skip
                        bad = bad.reshape(rows, width).any(axis=1)
                elif not allow_nonfinite and floats:  # by blocks of rows: temporaries in cache
                    flat = part.reshape(rows, width)
                    step = max(1, (1 << 18) // max(1, width))
                    bad = np.concatenate(
                        [_nonfinite_rows(flat[j : j + step]) for j in range(0, rows, step)]
                        or [np.zeros(0, bool)]
                    )
                if bad is not None and bad.any():
                    found.append((i, 0, lo + int(np.flatnonzero(bad)[0]), int(bad.sum())))
                if (
                    t.dtype != "i32"
                    and floats
                    and self.program.loss_kind in UNIT_TARGET_LOSSES
                    and name in self.program.label_inputs
                ):
                    outside = ((part < 0) | (part > 1)).reshape(rows, width).any(axis=1)
                    if outside.any():
                        first = lo + int(np.flatnonzero(outside)[0])
                        found.append((i, 1, first, int(outside.sum())))
            return found

        if split:  # an error on one rank reaches all of them (distributed.agreed)
            from .distributed import agreed

            _, shares = agreed(comm, "fit's data checks", scan, share=lambda f: f)
            merged: dict[tuple[int, int], tuple[int, int]] = {}
            for i, check, row, count in (f for fs in shares for f in fs):
                first, total = merged.get((i, check), (row, 0))
                merged[(i, check)] = (min(first, row), total + count)
            found = [(*key, *merged[key]) for key in sorted(merged)]
        else:
            found = scan()
        for name, a in given.items():
            if src[name].type.dtype == "i32":
                feeds[name] = np.asarray(a, dtype=np.int32, order="C")
        if not found:
            return
        i, check, row, count = min(found)
        name = list(given)[i]
        a = given[name]
        if check == 2:
            kind, rows, low, note, table = index_check(src[name])
            raise explain(kind, name, a, rows, note, low, table, zero_runs(src[name]))
        if check == 1:
            raise ArgumentError(
                f"targets {name!r}: row {row} holds {a[row].ravel()[:4].tolist()}, outside [0, 1] "
                f"({count} rows); binary_cross_entropy takes 0/1 labels or probabilities"
            )
        if src[name].type.dtype == "i32":
            err = label_error(name, a, self._classes_for(name) or 0, 0, self._ignored_label(name))
            assert err is not None  # the scan above found a label out of range
            raise err
        raise ArgumentError(
            f"input {name!r}: row {row} holds NaN or Inf ({count} rows); clean the "
            f"data or pass allow_nonfinite=True"
        )

    def _classes_for(self, labels: str) -> int | None:
        got = label_classes(self.program.forward).get(labels)
        return None if got is None else got[0]

    def _ignored_label(self, labels: str) -> int | None:
        """The ignore_index the losses reading ``labels`` let through (None: none)."""
        got = label_classes(self.program.forward).get(labels)
        return None if got is None else got[1]

    # ------------------------------------------------------------------ running

    def _arrays(self, e: Entry, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One array per input slot of ``e``: the feeds, and the learning rate's 0-d array."""
        lr = self._lr_arrays
        return [
            lr[t.np_dtype] if name == "lr" else feeds[name]
            for name, t in zip(e.sched.input_slots, e.in_types)
        ]

    def _run(
        self,
        entry: str,
        feeds: dict[str, np.ndarray],
        n: int,
        outs: list[np.ndarray] | None = None,
        *,
        checked: bool = True,
        explain: dict[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Call ``entry`` on ``feeds`` (``n`` rows); a value its native checks reject raises
        the ArgumentError naming the row of ``explain`` (default: ``feeds``) that fails."""
        e = self.entries[entry]
        try:
            return e(self._arrays(e, feeds), n, checked=checked, outs=outs)
        except InputRejected as err:
            raise self._explain(err, feeds if explain is None else explain) from None

    def _explain(self, err: InputRejected, feeds: dict[str, np.ndarray]) -> ArgumentError:
        """The message of a native rejection: the same numpy checks ``fit`` runs up front,
        now only on the error path, name the input and its first bad row."""
        if err.name == "lr":
            return ArgumentError(f"the learning rate must be finite and >= 0, got {self.lr!r}")
        try:
            self._validate(dict(feeds))
        except ArgumentError as e:
            return e
        return err

    def _cast_labels(self, feeds: dict[str, np.ndarray]) -> None:
        """Integer labels of another dtype than int32: range-checked in numpy before the cast
        (int64 2**32 + 3 must not wrap to 3); int32 labels are checked natively."""
        src = self.program.forward
        for name, a in feeds.items():
            if src[name].type.dtype != "i32" or (a.dtype == np.int32 and a.flags.c_contiguous):
                continue
            if a.dtype != np.int32:
                classes = self._classes_for(name)
                low = 0 if classes else -(2**31)
                err = label_error(name, a, classes or 2**31, low, self._ignored_label(name))
                if err is not None:
                    raise err
            feeds[name] = np.asarray(a, dtype=np.int32, order="C")

    def train_step(self, x: Any, y: Any = None) -> float:
        """One optimizer step on one batch (all rows of x, y); returns the batch's loss.

        Arrays already in the compiled layout (float32 or the model's dtype, C-contiguous,
        int32 labels) go to the native step as they are: their layout is checked once and
        remembered, their values are checked by the native code (labels in range, no NaN or
        Inf, a finite lr >= 0) before anything is written.

        Raises:
            ArgumentError: a shape or dtype that does not fit, a label outside the classes, a
                row with NaN or Inf (naming the input and the row), a bad learning rate, a
                batch of one row through batch_norm (its batch variance is 0; torch refuses it
                too), an ``x`` or ``y`` sharing memory with a parameter or state (a view of
                one: the step would read what it updates); the parameters and the optimizer
                state are then unchanged.
        """
        with self._lock:  # (serialized, inline: a small step's call counts every 0.1 us)
            key = None
            if self._xy is not None and type(x) is np.ndarray and type(y) is np.ndarray:
                key = ("train_step", x.dtype, x.shape, x.strides, y.dtype, y.shape, y.strides)
                n = self._layouts.get(key)
                if n is not None:  # the native call, with nothing checked or built in Python
                    try:
                        return float(self._train.run(self._pack_xy((x, y, self._train_lr)), n)[0])
                    except InputRejected as err:
                        raise self._explain(err, dict(zip(self._xy, (x, y)))) from None
            feeds, n = self._as_feeds(x, y, need_labels=True)
            if n == 1 and self._batch_norms:  # never cached: the fast path never sees it
                raise ArgumentError(self._one_row("train_step"))
            self._cast_labels(feeds)
            e = self.entries["train_step"]
            e.check(self._arrays(e, feeds), n)
            if key is not None and all(feeds[k] is a for k, a in zip(self._xy, (x, y))):
                self._layouts[key] = n
            return float(self._run("train_step", feeds, n, checked=False)[0])

    @serialized
    def gradients(self, x: Any, y: Any = None) -> dict[str, np.ndarray]:
        """The gradient of the loss on one batch (all rows of ``x``, ``y``) with respect to every
        trainable parameter, without updating anything.

        Runs the compiled ``train_grads`` entry (the forward and backward half of
        ``train_step``, see graphc.compiler.build_split) on its own workspace: parameters,
        optimizer state, step counter and learning rate are left as they are. With dropout, the
        masks are those the next ``train_step`` on the same batch draws.

        Returns:
            name -> array of the parameter's shape and dtype (copies): dloss/dparam, the loss
            being the batch's mean as ``train_step`` computes it.

        Raises:
            ArgumentError: as ``train_step`` (shapes, dtypes, labels out of range, NaN/Inf);
                GraphcError: an inference-only model, or one compiled without the split step.
        """
        from graphc.ir.errors import DistributedError

        from .distributed import SplitStep

        if self.program.loss is None:
            raise GraphcError("gradients: this model has no loss (compile it with one)")
        feeds, n = self._as_feeds(x, y, need_labels=True)
        if n == 1 and self._batch_norms:
            raise ArgumentError(self._one_row("gradients"))
        self._cast_labels(feeds)
        self._validate(feeds)
        try:
            step = SplitStep(self, n)
        except DistributedError as e:
            raise GraphcError(f"gradients: {e}") from None
        step.scale[...] = 1.0
        if step.row0 is not None:
            step.row0[...] = 0.0
        step.grads(step.arrays(feeds), n)
        out = {}
        for p in self.program.grads:
            lay, node = self.program.layout[p], self.program.forward[p]
            flat = step.workspace[lay.offset : lay.offset + lay.size].view(node.type.np_dtype)
            out[p] = flat.reshape(node.type.concrete(1)).copy()
        return out

    def _one_row(self, who: str) -> str:
        return (
            f"{who}: a training batch of 1 row through batch_norm "
            f"({', '.join(self._batch_norms)}): its batch variance is 0, so every normalized "
            "value is 0 (the output is beta), no gradient reaches the layers below and the "
            "running variance shrinks toward 0 (torch refuses it too: 'Expected more than 1 "
            "value per channel when training'). Train on batches of at least 2 rows; nothing "
            "was changed"
        )

    def _check_last_batch(self, n: int, batch_size: int) -> None:
        """fit with batch_norm: no batch of one row (the last partial one included).

        Raises:
            ArgumentError: naming the rows, the batch size and what to change.
        """
        if not self._batch_norms:
            return
        bs = min(batch_size, n)
        if n == 1:
            raise ArgumentError(self._one_row("fit") + " (fit got 1 training row)")
        if n % bs != 1:
            return
        fits = next(b for b in range(bs + 1, n + 2) if n % b != 1)
        raise ArgumentError(
            f"fit: {n} training rows in batches of {batch_size} leave a last batch of 1 row, "
            f"which batch_norm ({', '.join(self._batch_norms)}) cannot train on: its batch "
            "variance is 0, so the normalized value is 0, no gradient passes and the running "
            "variance shrinks (torch refuses such a batch). Choose a batch_size that does not "
            f"leave 1 row (e.g. {fits}{f' or {bs - 1}' if bs > 2 and n % (bs - 1) != 1 else ''}"
            f"), or drop or add a row; nothing was changed"
        )

    def predict(
        self, x: Any = None, *, batch_size: int = 1024, out: Any = None, verbose: Any = 0
    ) -> np.ndarray | dict[str, np.ndarray]:
        """The model's outputs for every row of ``x`` (one array, or a dict for several outputs).

        Args:
            x: features (an array, or a dict by input name). A model without inputs (only
                params and constants) takes none (``predict()`` or ``predict({})``): its
                outputs have fixed shapes and one call computes them.
            batch_size: rows per native call. Rows go through the native code in blocks only
                when every output is row-wise (row i depends on input row i alone:
                ``row_split["infer"]``, derived from the graph by ``graphc.ir.batch``);
                otherwise (an output that reduces over the batch, an input with N not
                leading) all rows go in one call.
            out: an array (or a dict by output name) receiving the outputs: C-contiguous, the
                output's dtype and shape, sharing no memory with ``x`` or with the model's
                parameters and states (refused: ArgumentError). The native code writes each output once, straight
                into it (or into a new array when ``out`` is None; a single output of at most
                4 KiB is written to the entry's own buffer and copied: Entry.run_one).
            verbose: accepted for Keras's ``predict(x, verbose=0)``; predict prints nothing.

        Raises:
            ArgumentError: a shape or dtype that does not fit, or an unsuitable ``out``.
        """
        with self._lock:  # (serialized, inline: the batch-1 call path counts every 0.1 us)
            key = None
            if type(x) is np.ndarray and (out is None or type(out) is np.ndarray):
                # a layout checked before, one input and one output: no Python checks
                if out is None:
                    key = ("infer", x.dtype, x.shape, x.strides)
                else:
                    key = ("infer", x.dtype, x.shape, x.strides, out.dtype, out.shape, out.strides)
                n = self._layouts.get(key)
                if n is not None and (
                    type(batch_size) is int and (n <= batch_size or not self.row_split.get("infer"))
                ):
                    try:
                        if out is None:
                            return self._infer.run_one(x, n)
                        if out.flags.writeable and (
                            (x is self._infer_pair[0] and out is self._infer_pair[1])
                            or not np.may_share_memory(out, x)
                        ):
                            self._infer_pair = (x, out)
                            return self._infer.run_one(x, n, out)
                    except InputRejected as err:  # an embedding lookup's indices
                        raise self._explain(err, {err.name: x}) from None
            return self._predict(x, batch_size, out, key)

    def _predict(
        self, x: Any, batch_size: int, out: Any, key: tuple | None
    ) -> np.ndarray | dict[str, np.ndarray]:
        """predict's checked path; remembers ``key`` (the layout of x and out, None when they
        are not arrays) for a single-input single-output call whose arrays went to the native
        code as they are (predict's fast path). A model with ``output_dtypes`` (or
        ``output_batch_axes``) never takes the fast path (no layout is remembered): its outputs
        are converted after the call."""
        out = out_by_key(out, self.output_keys, self.program.outputs)  # '%7' or y0
        if self.output_dtypes or self.constant_outputs or self.output_batch_axes:
            return self._predict_declared(x, batch_size, out)
        return self._predict_float(x, batch_size, out, key)

    @property
    def output_keys(self) -> list[str]:
        """predict's key of each output, in ``program.outputs``' order: the name the user gave
        it (``name=``) or the ONNX file's, and for an output left unnamed (graphc's value
        name ``'%7'``) the exported C header's, ``y`` (``y0``, ``y1``, ... by position for
        several; ``out``, ``output`` where an input takes it; codegen.aot.output_keys, which
        to_onnx's output names follow too). The result dict also answers to the ``'%7'``
        names (runtime.buffers.Outputs)."""
        keys = self.__dict__.get("_output_keys")
        if keys is None:
            keys = output_keys(self.program.schedules, self.program.outputs)
            self.__dict__["_output_keys"] = keys
        return list(keys)

    def _keyed(self, outs: Sequence[np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """predict's result: the one output's array, or the outputs by output_keys."""
        if len(outs) == 1:
            return outs[0]
        return keyed_outputs(self.output_keys, self.program.outputs, outs)

    def _predict_float(
        self, x: Any, batch_size: int, out: Any, key: tuple | None
    ) -> np.ndarray | dict[str, np.ndarray]:
        """predict's checked path, every output as the native code computes it."""
        prog = self.program
        e = self.entries["infer"]
        one = len(prog.feature_inputs) == 1 and len(e.out_types) == 1
        feeds, n = self._as_feeds(x, None, need_labels=False, allow_empty=True)
        if n == 0:  # no rows: empty outputs of the right shape and dtype, no native call
            _check_empty_outputs(e, self.output_keys)
            check_batch_size(batch_size)
            outs = self._outputs_for(e, 0, out, feeds)
            return self._keyed(outs)
        outs = self._outputs_for(e, n, out, feeds)
        self._batched("infer", feeds, n, batch_size, outs)
        if (
            key is not None
            and one
            and feeds[prog.feature_inputs[0]] is x
            and e.out_types[0].shape[:1] == (BATCH,)
        ):
            self._layouts[key] = n
        return self._keyed(outs)

    def _predict_declared(
        self, x: Any, batch_size: int, out: Any
    ) -> np.ndarray | dict[str, np.ndarray]:
        """predict for a model with ``output_dtypes``: the outputs computed in float32, then
        each named one converted (as_declared) or moved to its ONNX layout
        (``output_batch_axes``); ``out`` (an array or a dict, as predict's)
        receives them, each of the output's returned dtype and shape (else ArgumentError)."""
        names, keys = self.program.outputs, self.output_keys
        if self.constant_outputs and out is not None:
            raise ArgumentError(
                "predict: out= is not taken by a model with outputs known at import "
                f"({', '.join(self.constant_outputs)}); call predict without it"
            )
        res = self._predict_float(x, batch_size, None, None)
        batched = [t.shape[:1] == (BATCH,) for t in self.entries["infer"].out_types]
        declared = declared_outputs(
            names,
            [res] if len(names) == 1 else [res[k] for k in names],
            batched,
            self.output_dtypes,
            self.output_row_terms,
            self.constant_outputs,
            self.output_order,
            self.output_batch_axes,
        )
        if self.constant_outputs:  # (an ONNX import's: its outputs keep the file's names)
            return keyed_outputs(
                [dict(zip(names, keys)).get(k, k) for k in declared], declared, declared.values()
            )
        got = list(declared.values())
        if out is not None:
            dest = [out] if len(names) == 1 and not isinstance(out, dict) else None
            if dest is None:
                if not isinstance(out, dict) or set(out) != set(keys):
                    raise ArgumentError(
                        f"predict: out must be a dict with the outputs {keys}, got "
                        f"{sorted(out) if isinstance(out, dict) else type(out).__name__}"
                    )
                dest = [out[k] for k in keys]
            for k, d, a in zip(keys, dest, got):
                if not isinstance(d, np.ndarray) or d.dtype != a.dtype or d.shape != a.shape:
                    raise ArgumentError(
                        f"predict: out for {k!r} must be a {a.dtype} array of shape {a.shape}, "
                        f"got {getattr(d, 'dtype', type(d).__name__)} {getattr(d, 'shape', '')}"
                    )
                d[...] = a
            got = dest
        return self._keyed(got)

    def _outputs_for(
        self, e: Entry, n: int, out: Any, feeds: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The arrays the outputs go to: new ones, or the caller's ``out`` after its checks
        (buffers.output_arrays)."""
        specs = [(t.concrete(n), t.np_dtype) for t in e.out_types]
        return output_arrays(out, self.output_keys, specs, feeds.values(), "model")

    def _batched(
        self,
        entry: str,
        feeds: dict[str, np.ndarray],
        n: int,
        batch_size: int,
        outs: list[np.ndarray],
    ) -> list[np.ndarray]:
        """Run ``entry`` over the rows in batches, each writing its rows of ``outs`` in place.

        Rows are split only when every input and every output has N first (an output such
        as a sum over the batch depends on all rows: then one call)."""
        batch_size = check_batch_size(batch_size)
        e = self.entries[entry]
        arrays = self._arrays(e, feeds)
        e.check(arrays, n)
        try:
            e.run_batches(arrays, outs, n, batch_size if self.row_split.get(entry, False) else n)
        except InputRejected as err:
            raise self._explain(err, feeds) from None
        return outs

    @serialized
    def evaluate(
        self,
        x: Any,
        y: Any = None,
        *,
        batch_size: int = 1024,
        verbose: Any = 0,
        return_dict: bool = True,
        **others: Any,
    ) -> Any:
        """Loss and metrics over all rows: accuracy for classification, MSE/MAE/R^2 for regression.

        With several outputs (every element of a row counts as one) MSE and MAE are the mean over
        all elements, i.e. the uniform average of the per-output figures, and R^2 is the uniform
        average of the per-output R^2 (scikit-learn's ``r2_score`` default, Keras' ``R2Score``;
        see ``_r2_uniform``).

        The metrics are those of the loss's prediction (the logits, probabilities or values it
        compares with the targets), read from the output that is it or squashes it (a
        ``sigmoid`` output of a ``binary_cross_entropy`` model is thresholded at 0.5, its
        logits at 0; ``softmax``/``log_softmax`` outputs keep the argmax), whichever of the
        outputs that is; a model none of whose outputs carries it reports the loss alone.

        ``y`` may be left out when ``x`` is a dict of every input, labels included.
        ``verbose`` is accepted for Keras's ``evaluate(x, y, verbose=0)``; nothing is printed.
        The figures come back as a dict by name; ``return_dict=False`` gives Keras's default
        form instead, the list of their values, loss first (``loss, acc = model.evaluate(x, y,
        return_dict=False)``), or the loss alone as a float when it is the only figure (Keras's
        "scalar test loss if the model has no metrics").

        The outputs of each batch are written once, into one array for all rows.

        Raises:
            ArgumentError: as ``train_step`` (bad shapes, labels out of range, NaN/Inf rows).
        """
        if self.program.loss is None:
            raise GraphcError("evaluate: this model was compiled without a loss")
        if others:
            raise ArgumentError(_fit_argument_refused(next(iter(others)), "evaluate"))
        return_dict = check_bool(return_dict, "evaluate: return_dict")
        batch_size = check_batch_size(batch_size)
        feeds, n = self._as_feeds(x, y, need_labels=True)
        self._cast_labels(feeds)
        e = self.entries["eval"]
        outs = [np.empty(t.concrete(n), t.np_dtype) for t in e.out_types[:-1]]
        loss = np.empty((), e.out_types[-1].np_dtype)
        arrays = self._arrays(e, feeds)
        e.check(arrays, n)
        parts: list[float] = []
        try:
            e.run_batches(
                arrays,
                outs + [loss],
                n,
                batch_size if self.row_split.get("eval", False) else n,
                lambda lo, hi: parts.append(float(loss) * (hi - lo)),
            )
        except InputRejected as err:
            raise self._explain(err, feeds) from None
        total = sum(parts)
        figures = {"loss": total / n}
        at = getattr(self.program, "metric_output", 0)
        if at is not None:
            figures.update(self._metrics(outs[at], feeds))
        if return_dict:
            return figures
        values = list(figures.values())  # Keras: the scalar loss when it is the only figure
        return values if len(values) > 1 else values[0]

    def figure_names(self, validation: bool = False) -> list[str]:
        """The names of the figures ``fit`` reports each epoch (and passes to callbacks):
        loss, lr, seconds and, with validation data, val_loss and val_ + each metric of
        ``evaluate`` (accuracy for classification losses; mse, mae, r2 for regression)."""
        names = ["loss", "lr", "seconds"]
        if validation:
            names.append("val_loss")
            prog = self.program
            if getattr(prog, "metric_output", 0) is not None and metric_target_of(prog):
                names += [f"val_{k}" for k in METRICS.get(self.program.loss_kind, ())]
        return names

    def _metrics(self, out: np.ndarray, feeds: dict[str, np.ndarray]) -> dict[str, float]:
        kind = self.program.loss_kind
        target = metric_target_of(self.program)
        if target is None or target not in feeds:
            return {}
        y = feeds[target]
        if kind == "softmax_cross_entropy":  # labels [N] (maybe a reshape of an [N, 1]
            # input: an [N, 1] column broadcast to [N, N] before), or [N, ..] per position
            if y.shape != out.shape[:-1] and y.size * out.shape[-1] == out.size:
                y = y.reshape(out.shape[:-1])
        elif y.shape != out.shape and y.size == out.size:
            y = y.reshape(out.shape)  # the loss's target is a reshape of this input
        if kind == "softmax_cross_entropy":  # the classes on the last axis: [N, C], [N, T, C]
            hit = np.argmax(out, axis=-1) == y
            skip = self._ignored_label(target)
            if skip is not None:  # rows of the ignore_index count for nothing (0 when all do)
                kept = y != skip
                return {"accuracy": float(hit[kept].mean()) if kept.any() else 0.0}
            return {"accuracy": float(np.mean(hit))}
        # binary accuracy: probability > 0.5, i.e. logit > 0 (the output read: metric_source)
        form = getattr(self.program, "metric_form", "same")
        if kind == "binary_cross_entropy":  # logits, or their sigmoid
            cut = 0.5 if form == "sigmoid" else 0.0
            return {"accuracy": float(np.mean((out > cut).astype(y.dtype) == y))}
        if kind == "binary_cross_entropy_probs":  # probabilities, or the logits they squash
            cut = 0.0 if form == "logit" else 0.5
            return {"accuracy": float(np.mean((out > cut).astype(y.dtype) == y))}
        if kind == "categorical_cross_entropy":  # targets one-hot or soft: their largest class
            # (classes on the last axis: [N, C], or [N, T, C] per position)
            return {"accuracy": float(np.mean(np.argmax(out, axis=-1) == np.argmax(y, axis=-1)))}
        if kind in ("mean_squared_error", "mean_absolute_error", "huber"):
            err = out.astype(np.float64) - y
            return {
                "mse": float(np.mean(err**2)),  # = the uniform average of the per-output MSEs
                "mae": float(np.mean(np.abs(err))),
                "r2": _r2_uniform(y, err),
            }
        return {}

    @long_call
    @serialized
    @_fitting
    def fit(
        self,
        x: Any,
        y: Any = None,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        seed: int = 0,
        verbose: int = 1,
        callbacks: list[Any] = (),
        allow_nonfinite: bool = False,
        initial_epoch: int = 0,
        stop_on_nonfinite: bool = True,
        distributed: Any = None,
        **others: Any,
    ) -> History:
        """Train for ``epochs`` passes over the data in shuffled mini-batches.

        Every epoch draws a permutation from ``np.random.default_rng([seed, epoch])``; the last
        partial batch is included. One native call per batch runs forward, backward and the
        optimizer update.

        Args:
            x: features (an array, or a dict by input name).
            y: targets (an array, or a dict by input name).
            epochs: passes over the data (>= 1).
            batch_size: rows per step (>= 1; larger than the data means one batch).
            validation_data: (x_val, y_val), evaluated after every epoch.
            validation_split: instead, hold out this fraction of the rows: the last
                ``n - floor(n * (1 - validation_split))``, taken before any shuffling (Keras).
                Ignored when ``validation_data`` is given (Keras: it overrides the split;
                every row then trains).
            shuffle: reshuffle each epoch.
            seed: seeds the shuffling.
            verbose: 0 silent; 1 a tqdm bar over the epochs when stdout is a terminal and tqdm
                is installed, else one plain line per epoch (a file or a pipe); 2 always lines.
            callbacks: a list (or tuple; None: none, as Keras's default) of objects with
                optional ``on_train_begin(model)``, ``on_epoch_begin(model,
                epoch)``, ``on_epoch_end(model, epoch, figures) -> bool`` (True stops training)
                and ``on_train_end(model, history)``; ``set_model(model)`` is called first when
                present. Hooks written with Keras's arguments (``on_epoch_begin(self, epoch,
                logs=None)``, ``on_epoch_end(self, epoch, logs=None)``, ``on_train_begin(self,
                logs=None)``, ``on_train_end(self, logs=None)``) get Keras's arguments. Setting ``model.stop_training = True`` (Keras's way) in a hook also
                stops training: after the current epoch, or after the current batch in a batch
                hook (that epoch's loss is then the mean over the batches run; data-parallel
                fit: after the epoch, rank 0's flag). Batch hooks take Keras's arguments:
                ``on_batch_begin(batch, logs)`` with logs {"batch", "size"} and
                ``on_batch_end(batch, logs)`` with also "loss" (the epoch's mean loss so far,
                as Keras) and "batch_loss"; batch counts from 0
                in each epoch (``on_train_batch_begin/end`` are the same hooks). A batch hook
                makes fit run one native call per batch instead of one per epoch.
            allow_nonfinite: do not reject NaN/Inf in the features.
            initial_epoch: the first epoch to run (as in Keras, ``epochs`` is the index of the
                last epoch + 1): after loading a checkpoint saved after epoch k, continue with
                ``fit(..., epochs=E, initial_epoch=k)`` to draw the same shuffling
                permutations as an uninterrupted run.
            stop_on_nonfinite: stop at the first step whose loss is NaN or infinite (default),
                leaving the parameters and optimizer state of the step before, and raise
                NumericsError naming the epoch and step; False trains on (one native call
                per batch then).
            distributed: "mpi" (or an mpi4py communicator): data-parallel training over the
                ranks of ``mpirun -np K python script.py``, every rank calling ``fit`` with
                the same data and arguments; the trajectory is the one-process one with the
                same ``batch_size`` (the global batch, split over the ranks), and only rank 0
                prints. Callbacks may differ between ranks: rank 0's decide (its lr, weights
                and optimizer state reach every rank after each epoch's start, each step's
                batch callbacks (lr) and the training's end), and only rank 0 prints or
                writes their files. The loss must be a mean over the rows (plus terms of no
                row; DistributedError otherwise, as for batch_norm). Batch callbacks, the
                non-finite stop and Ctrl-C act as below, on every rank at the same step (a
                stop request from any rank, SIGINT or the SIGTERM mpirun sends when
                interrupted, rolls the unfinished epoch back everywhere).
                Unless threads were chosen (``threads=``, ``GRAPHC_THREADS``), each rank runs
                its cores / the ranks sharing them threads during fit. See
                graphc.runtime.distributed. Needs Open MPI and mpi4py
                (``pip install -e ".[mpi]"``).

        ``model.history`` holds the History from the start. Ctrl-C (SIGINT, in the main
        thread) takes effect at the next step boundary: a one-call native epoch runs to its
        end and is committed to the history first; in the per-step path the unfinished epoch
        is rolled back (parameters, optimizer state and step counter as they were when it
        began, from a copy made at each epoch's start; the same for a KeyboardInterrupt raised
        anywhere else, a second Ctrl-C interrupts at once). So the model, ``model.history`` and
        a checkpoint saved after the last finished epoch agree, and ``fit(...,
        initial_epoch=k)`` with k the epochs done continues exactly as the uninterrupted run;
        ``history.interrupted`` is set and fit returns. An exception raised by a callback propagates, with ``model.history`` holding
        the epochs finished so far.

        Threads: fit holds the model's lock, as every method that reads or writes the weights
        does; a thread calling one of those (``get_weights``, ``set_weights``, ``save``,
        ``load``, ``save_model``, ``export``, ``to_onnx``, ``initialize``, setting ``lr``)
        while fit runs gets its turn at fit's next epoch boundary (and, on the one-call-per-batch
        path, its next step boundary) instead of waiting for fit's end, and sees the state after
        a whole step, never a mix of two. Weights written by another thread between epochs are
        where the next epoch starts from; written in the middle of an epoch, they are undone if
        that epoch is rolled back (Ctrl-C, a non-finite loss). ``fit``, ``train_step`` and
        ``predict`` from other threads wait for fit's end.

        Returns:
            History with per-epoch loss, the learning rate used (``lr``), seconds, and val_loss
                and val_ metrics (accuracy, or mse/mae/r2) when validating.

        Raises:
            ArgumentError: bad shapes or dtypes, NaN/Inf rows, labels out of range, an empty
                data set or batch_size < 1, a model with batch_norm whose batches would include
                one of a single row (``n % batch_size == 1``: the message names a batch size
                that works), all before any step runs. Without callbacks, the
                float inputs (NaN/Inf, binary cross-entropy targets outside [0, 1]) are
                scanned by the first native epoch as it gathers each batch instead of in a
                separate pass over the data: a bad row stops it before that batch's step, its
                earlier steps are undone (parameters, optimizer state, step counter and
                ``model.history`` as before the call, bit for bit) and the same error is raised
                (distributed: each rank scans the rows it gathers, and every rank stops at
                the step where one found a bad row).
            NumericsError: a step's loss was not finite (``stop_on_nonfinite``); the model
                holds the parameters after the last finite step, ``model.history`` the
                finished epochs.
            DistributedError: ``distributed`` given but MPI or mpi4py missing (the message
                says what to install), or ranks that disagree on the data or the arguments,
                or another rank's argument or data checks failed (its rank and error named;
                every rank raises, none waits).
        """
        if self.program.training is None:
            raise GraphcError("fit: this model was compiled without a loss")
        if others:
            raise ArgumentError(_fit_argument_refused(next(iter(others))))
        comm = None
        if distributed is not None:
            from .distributed import check_supported

            comm = check_supported(distributed)
        seed = check_seed(seed)
        if callbacks is None:  # Keras's default, which code written for Keras passes
            callbacks = ()
        if not isinstance(callbacks, (list, tuple)):
            raise OptionTypeError(
                f"fit: callbacks must be a list of callbacks (Keras's form: "
                f"callbacks=[{type(callbacks).__name__}(...)]), got {type(callbacks).__name__}; "
                "nothing was trained"
            )
        epochs = int(epochs) if _is_count(epochs) else epochs  # numpy ints: plain (JSON)
        initial_epoch = int(initial_epoch) if _is_count(initial_epoch) else initial_epoch
        shuffle = check_bool(shuffle, "fit: shuffle")
        allow_nonfinite = check_bool(allow_nonfinite, "fit: allow_nonfinite")
        stop_on_nonfinite = check_bool(stop_on_nonfinite, "fit: stop_on_nonfinite")
        callbacks = list(callbacks)
        for cb in callbacks:
            if isinstance(cb, type):  # callbacks=[EarlyStopping]: check_figures() missing 'names'
                raise OptionTypeError(
                    f"fit: callbacks holds the class {cb.__name__}, not a callback: call it, "
                    f"callbacks=[{cb.__name__}(...)]; nothing was trained"
                )
        # Nothing the user sees happens between the data checks and the first step when no
        # callback runs: the first native epoch then scans each batch's float rows as it
        # gathers them (+4-6 ms on an epoch of 60,000 x 784, Adam b128) instead of fit
        # reading the whole data set once more up front (~21 ms); a rejection undoes its steps.
        # Distributed: each rank's first native epoch scans the rows it gathers (together
        # every row once), a rejection carried to every rank in that step's all-reduce.
        scan_in_epoch = (
            not callbacks
            and not allow_nonfinite
            and stop_on_nonfinite
            and isinstance(epochs, int)
            and isinstance(initial_epoch, int)
            and epochs > initial_epoch
            and (self._epoch_scans_floats() if comm is None else self._split_scans_floats())
        )
        feeds, n, val = self._fit_data(
            x, y, validation_data, validation_split, allow_nonfinite, comm,
            lambda: _check_fit_counts(epochs, batch_size, initial_epoch),
            floats=not scan_in_epoch,
        )  # fmt: skip
        if isinstance(batch_size, int):  # (checked by _check_fit_counts)
            self._check_last_batch(n, batch_size)
        names = self.figure_names(validation=val is not None)
        if comm is None or comm.Get_size() == 1:
            _check_monitors(callbacks, names)
        else:  # a check may fail on one rank only (ModelCheckpoint's folder, on rank 0)
            from .distributed import agreed

            agreed(comm, "fit's callback checks", lambda: _check_monitors(callbacks, names))
        history, prior = History(), self.history
        self.history = history
        self.stop_training = False  # Keras's flag: a callback sets it; every fit clears it
        if comm is not None:  # data-parallel: graphc.runtime.distributed runs the epochs
            from . import distributed as dist

            try:
                return dist.fit(
                    self,
                    comm,
                    feeds,
                    n,
                    val,
                    history,
                    _Progress(verbose if comm.Get_rank() == 0 else 0, epochs, initial_epoch),
                    epochs=epochs,
                    initial_epoch=initial_epoch,
                    batch_size=batch_size,
                    shuffle=shuffle,
                    seed=seed,
                    callbacks=list(callbacks),
                    stop_on_nonfinite=stop_on_nonfinite,
                    scan=scan_in_epoch,
                )
            except dist.DataRejected as why:  # every rank, the first epoch undone
                self.history = prior
                self._validate(feeds, allow_nonfinite, comm)  # the up-front check's error
                grads = self.entries["train_grads"]
                raise (
                    grads.error(why.code) if why.code else ArgumentError(f"fit: {why}")
                ) from None
        cbs = CallbackList(callbacks)
        # One native call per epoch unless a callback wants to run between batches (or the
        # caller wants to train on past a non-finite loss: the native epoch stops at one).
        native = self.use_epoch_entry and not cbs.has_batch_hooks and stop_on_nonfinite
        run = _FitRun(self, feeds, n, batch_size, native, stop_on_nonfinite)
        run.scan = scan_in_epoch
        cbs.train_begin(self)
        progress = _Progress(verbose, epochs, initial_epoch)
        run.ctrl_c = ctrl_c = _DeferredInterrupt()  # Ctrl-C acts at the next step boundary
        try:
            for epoch in range(initial_epoch, epochs):
                ctrl_c.check()  # pressed in the last epoch's callbacks: no new epoch
                hand_over(self)  # between epochs: snapshots waiting in other threads run now
                cbs.epoch_begin(self, epoch)
                figures = run.epoch(epoch, shuffle, seed, cbs, len(history.epochs))
                if val is not None:
                    figures.update({f"val_{k}": v for k, v in self._evaluate_feeds(val[0]).items()})
                figures["lr"] = float(self.lr)  # the rate this epoch's steps used
                figures["seconds"] = time.perf_counter() - run.t0
                history.add(epoch, figures)
                run.start = None  # committed: parameters, step counter and history agree
                ctrl_c.check()  # pressed during the epoch (a native one-call epoch included)
                progress.epoch(epoch, figures)
                if cbs.epoch_end(self, epoch, figures) or self.stop_training:
                    history.stopped_early = True
                    break
        except KeyboardInterrupt:
            run.roll_back_interrupted(history, initial_epoch)
        except ArgumentError:
            if run.rejected:  # the first epoch's scan: undone, as if the check ran up front
                self.history = prior
            raise
        finally:
            if ctrl_c.restore():  # pressed once training had ended: say so, nothing to undo
                history.interrupted = True
            progress.close()
            cbs.train_end(self, history)
        return history

    def _fit_data(
        self,
        x: Any,
        y: Any,
        validation_data: tuple[Any, Any] | None,
        validation_split: float,
        allow_nonfinite: bool,
        comm: Any = None,
        check_args: Any = None,
        floats: bool = True,
    ) -> tuple[dict[str, np.ndarray], int, tuple[dict[str, np.ndarray], int] | None]:
        """fit's training feeds and row count, checked, and its validation feeds (the last
        ``validation_split`` of the rows, or ``validation_data``) with their row count.
        ``floats=False``: the training rows' float inputs are left to the first epoch's native
        scan (see fit; validation rows are always scanned here).

        ``check_args``: fit's argument checks, run first. ``comm``: the ranks of a distributed
        fit share the data checks (see _validate), and every step that can raise on one rank
        alone (a rank passing other shapes, too few rows, ...) is followed by an agreement
        (distributed.agreed), so that all ranks raise instead of some waiting forever."""

        def training() -> tuple[dict[str, np.ndarray], int]:
            if check_args is not None:
                check_args()
            feeds, n = self._as_feeds(x, y, need_labels=True)
            step = self.entries["train_step"]
            for k, a in feeds.items():
                if np.may_share_memory(a, self._param_region) or np.may_share_memory(
                    a, self._state_region
                ):  # every epoch path (native, per batch, distributed) reads it while it trains
                    step.shared(a, step.sched.input_slots.index(k), False)
            for k in feeds:
                t = self.program.forward[k].type
                if t.is_batched and t.shape[0] != BATCH:
                    raise ArgumentError(
                        f"fit: input {k!r} is {t}, with N at axis {t.shape.index(BATCH)}; "
                        "mini-batches take rows along the leading axis: declare training "
                        "inputs with N first"
                    )
                if not t.is_batched:  # a scalar or fixed-shape input: no rows to shuffle
                    raise ArgumentError(
                        f"fit: input {k!r} is {t}, without the batch axis N, so it has no rows "
                        "to shuffle and split into mini-batches; make it a gc.const or a "
                        "gc.param, or train with train_step (which takes it as it is); "
                        "nothing was changed"
                    )
            return feeds, n

        def validation(
            feeds: dict[str, np.ndarray], n: int, data: Any
        ) -> tuple[dict[str, np.ndarray], int, tuple[dict[str, np.ndarray], int] | None]:
            if validation_split and data is None:  # validation_data wins (Keras)
                data, feeds, n = self._split_validation(feeds, n, validation_split)
            if data is None:
                return feeds, n, None
            if isinstance(data, dict):  # every input by name, labels included
                return feeds, n, self._as_feeds(data, None, need_labels=True)
            if not isinstance(data, (tuple, list)) or len(data) != 2:
                got = f"a {len(data)}-tuple" if isinstance(data, (tuple, list)) else type(data)
                raise ArgumentError(
                    f"fit: validation_data must be (x_val, y_val) or a dict by input name, got "
                    f"{getattr(got, '__name__', got)}"
                    + (
                        " (Keras's (x, y, sample_weight): fit takes no sample weights)"
                        if isinstance(data, (tuple, list)) and len(data) == 3
                        else ""
                    )
                )
            return feeds, n, self._as_feeds(*data, need_labels=True)

        if comm is None or comm.Get_size() == 1:
            feeds, n = training()
            self._validate(feeds, allow_nonfinite, floats=floats)
            feeds, n, val = validation(feeds, n, validation_data)
            if val is not None:
                self._validate(val[0], allow_nonfinite)
            return feeds, n, val
        from .distributed import agreed

        (feeds, n), rows = agreed(comm, "fit's argument checks", training, share=lambda r: r[1])
        if len(set(rows)) > 1:
            raise DistributedError(
                f"fit: the ranks pass different numbers of rows {rows} (by rank); every rank "
                "must pass the same data"
            )
        self._validate(feeds, allow_nonfinite, comm, floats=floats)
        (feeds, n, val), _ = agreed(
            comm, "fit's validation data", lambda: validation(feeds, n, validation_data)
        )
        if val is not None:
            self._validate(val[0], allow_nonfinite, comm)
        return feeds, n, val

    def _epoch_scans_floats(self) -> bool:
        """Whether the native epoch can scan the training data itself: it exists, and the
        checked train_step scans every float input fit's data checks would (NaN/Inf, or [0, 1]
        for binary cross-entropy targets; plan_input_checks)."""
        e = self.entries.get("train_step")
        if not self.use_epoch_entry or self.epoch_entry is None or e is None:
            return False
        if e.fn_unchecked is e.fn:
            return False
        prog = self.program
        for name in (*prog.feature_inputs, *prog.label_inputs):
            if prog.forward[name].type.dtype == "i32":
                continue
            chk = e.checks.get(name)
            if chk is None or chk.kind not in ("finite", "unit"):
                return False
        return True

    def _split_scans_floats(self) -> bool:
        """Whether a distributed fit's first native epoch (NAME_train_epoch_split) can scan
        the training data itself: it exists, and the checked train_grads scans every float
        input fit's data checks would, each with rows along axis 0 (the gather's rows)."""
        if not self.use_epoch_entry or self.split_entries() is None:
            return False
        jit, prog = self._split_jit, self.program
        if not (getattr(jit, "has", None) and jit.has(f"{prog.name}_train_epoch_split")):
            return False
        e = self.entries["train_grads"]
        if e.fn_unchecked is e.fn:
            return False
        for name in (*prog.feature_inputs, *prog.label_inputs):
            t = prog.forward[name].type
            if t.dtype == "i32":
                continue
            chk = e.checks.get(name)
            if not t.shape or t.shape[0] != BATCH or chk is None:
                return False
            if chk.kind not in ("finite", "unit"):
                return False
        return True

    def _split_validation(
        self, feeds: dict[str, np.ndarray], n: int, fraction: float
    ) -> tuple[tuple[dict, dict], dict[str, np.ndarray], int]:
        """(validation (x, y) from the last rows, the training feeds left, their row count).

        The first ``floor(n * (1 - fraction))`` rows train, the rest validate: Keras's split
        (``train_validation_split``), the same float expression, so the same rows."""
        ok = isinstance(fraction, int | float | np.integer | np.floating)
        if isinstance(fraction, bool) or not ok or not 0 < fraction < 1:  # ("0.2": TypeError)
            raise ArgumentError(f"validation_split must lie in (0, 1), got {fraction!r}")
        cut = math.floor(n * (1.0 - fraction))
        if cut < 1 or cut >= n:
            raise ArgumentError(f"validation_split={fraction} leaves no rows on one side")
        validation = (
            {k: v[cut:] for k, v in feeds.items() if k in self.program.feature_inputs},
            {k: v[cut:] for k, v in feeds.items() if k in self.program.label_inputs},
        )
        return validation, {k: v[:cut] for k, v in feeds.items()}, cut

    def _evaluate_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, float]:
        x = {k: v for k, v in feeds.items() if k in self.program.feature_inputs}
        y = {k: v for k, v in feeds.items() if k in self.program.label_inputs}
        return self.evaluate(x, y)


def _nonfinite_rows(block: np.ndarray) -> np.ndarray:
    """Which rows of a 2-D float ``block`` hold a NaN or an infinity (bool per row).

    A finite sum of the whole block proves every value finite (a NaN makes any sum NaN, an
    infinity makes it infinite or NaN, whatever the order of the additions), so the rows are
    tested one by one only for a block whose sum is not finite (a bad value, or finite values
    whose sum overflows): one pass of ``np.add.reduce`` instead of ``isfinite`` and ``all``
    (25 MB of float32: ~1.5 ms against ~3.7 ms on this project's host)."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf, overflow: not finite
        total = np.add.reduce(block, axis=None)
    if np.isfinite(total):
        return np.zeros(len(block), bool)
    return ~np.isfinite(block).all(axis=1)


# Keras's fit arguments graphc has not, and what to do instead (_fit_argument_refused)
_KERAS_FIT_ONLY = {
    "sample_weight": "graphc's losses weigh every row alike; to weigh classes or rows, repeat "
    "their rows (oversampling), or write the loss with gc ops and a weight input",
    "steps_per_epoch": "fit takes whole arrays: every epoch is one pass over all rows",
    "validation_steps": "validation covers all of validation_data after every epoch",
    "validation_freq": "validation runs after every epoch",
    "workers": "fit takes arrays, not generators or datasets",
}
_KERAS_FIT_ONLY["class_weight"] = _KERAS_FIT_ONLY["sample_weight"]
_KERAS_FIT_ONLY["validation_batch_size"] = "evaluate(x_val, y_val, batch_size=...) after fit"
for _k in ("use_multiprocessing", "max_queue_size"):
    _KERAS_FIT_ONLY[_k] = _KERAS_FIT_ONLY["workers"]


_KERAS_EVAL_ONLY = {
    "sample_weight": _KERAS_FIT_ONLY["sample_weight"],
    "steps": "it takes whole arrays: every row is used",
    "callbacks": "it runs no callbacks (fit's callbacks see the validation figures)",
    "workers": _KERAS_FIT_ONLY["workers"],
    "use_multiprocessing": _KERAS_FIT_ONLY["workers"],
    "max_queue_size": _KERAS_FIT_ONLY["workers"],
}


def _check_dict_names(prog: Any, x: Any, y: Any) -> None:
    """Inputs given by name (``x`` and/or ``y`` dicts): an input given twice, in ``x`` and in
    ``y`` (a label in the features' dict and y too, a feature in y's dict), as two different
    arrays is refused, naming it (one of them was used silently: y's label, x's feature);
    the same array twice is fine. A name that is no input of the model warns, as Keras does
    ("Input dict contained keys ... which did not match any model input"), naming the
    inputs (a misspelt name among the right ones was ignored without a word).

    Raises:
        ArgumentError: an input given twice as different arrays.
    """
    import warnings

    names = set(prog.feature_inputs) | set(prog.label_inputs)
    xd = x if isinstance(x, dict) else {}
    yd = y if isinstance(y, dict) else {}
    if y is not None and not isinstance(y, dict) and len(prog.label_inputs) == 1:
        yd = {prog.label_inputs[0]: y}
    if x is not None and not isinstance(x, dict) and len(prog.feature_inputs) == 1:
        xd = {prog.feature_inputs[0]: x}
    for k in xd.keys() & yd.keys():
        if k in names and xd[k] is not yd[k]:
            raise ArgumentError(
                f"input {k!r} is given twice, in x and in y, as different arrays; give it "
                "once (one of them would be used silently)"
            )
    extra = sorted(str(k) for k in (*xd, *yd) if k not in names)
    if extra:
        warnings.warn(
            f"the data names {extra}, which match no input of model {prog.name!r} (its "
            f"inputs: {sorted(names)}); they are ignored",
            UserWarning,
            stacklevel=_caller_level(),
        )


def _check_unused_targets(prog: Any, x: Any, y: Any) -> None:
    """``y`` given to a model without label inputs (its loss compares with a feature input,
    an autoencoder's ``mean_squared_error(decoded, x)``, or it has no loss): y would be
    ignored, so an array other than x is refused (the figures were those of x silently:
    ``evaluate(X, X * 100)`` gave ``evaluate(X)``'s). Keras's ``fit(x, x)`` for an
    autoencoder (y the same values as x) is fine.

    Raises:
        ArgumentError: y differs from x (or x is a dict).
    """
    if y is x:
        return
    if not isinstance(x, dict) and not isinstance(y, dict):
        try:
            a, b = np.asarray(x), np.asarray(y)
            if a.shape == b.shape and np.array_equal(a, b, equal_nan=True):
                return
        except (TypeError, ValueError):
            pass
    target = getattr(prog, "metric_target", None)
    also = f" (its loss compares the prediction with input {target!r})" if target else ""
    raise ArgumentError(
        f"model {prog.name!r} has no label or target input{also}, so y would not be used; "
        "leave y out"
    )


def _caller_level() -> int:
    """The ``stacklevel`` of a warning issued here that names the first frame outside graphc
    (the user's call), whatever decorators lie between."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = tuple(os.path.join(here, d) + os.sep for d in ("runtime", "graphc", "ir", "codegen"))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(ours):
        frame, level = frame.f_back, level + 1
    return level


def _fit_argument_refused(name: str, method: str = "fit") -> str:
    """fit's (evaluate's, predict's) message for a keyword argument it has not (often one of
    Keras's)."""
    import inspect

    sig = inspect.signature(getattr(Model, method)).parameters
    known = [p for p in sig if p not in ("self", "others")]
    why = (_KERAS_FIT_ONLY if method == "fit" else _KERAS_EVAL_ONLY).get(name)
    done = "nothing was trained" if method == "fit" else "nothing was run"
    return (
        f"{method}: no argument {name!r}" + (f" (Keras's; {why})" if why else "")
        + f". Its arguments: {', '.join(known)}; {done}"
    )  # fmt: skip


def _is_count(v: object) -> bool:
    """An int (a numpy integer too), not a bool (True is no count of epochs)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_fit_counts(epochs: int, batch_size: int, initial_epoch: int) -> None:
    """fit's counts: batch_size >= 1, epochs >= 0, 0 <= initial_epoch <= epochs (ints or
    numpy integers; a bool is refused, as seed and batch_size refuse it)."""
    check_batch_size(batch_size)
    if not _is_count(epochs) or epochs < 0:
        raise ArgumentError(
            f"fit: epochs must be an int >= 0 (a whole number of passes over the data, "
            f"epochs=2 as in Keras), got {epochs!r} ({type(epochs).__name__}); nothing was "
            "trained"
        )
    if not _is_count(initial_epoch) or not 0 <= initial_epoch <= epochs:
        raise ArgumentError(
            f"fit: initial_epoch must be an int in 0..epochs ({epochs}), got {initial_epoch!r}"
            " (epochs counts from 0, as in Keras: epochs=4, initial_epoch=2 runs 2 more); "
            "nothing was trained"
        )


def _views(region: np.ndarray, nodes: list[Any], program: Any) -> dict[str, np.ndarray]:
    """Each param (or state) node's array inside its flat region, at its layout offset."""
    return {
        n.name: view(region, program.layout[n.name].offset, n.type.concrete(1), n.type.np_dtype)
        for n in nodes
    }


class _FitRun:
    """The training steps of one ``fit``: staging buffers for a batch's rows, one native call
    per step or per epoch, and the epoch's starting point to roll back to."""

    def __init__(
        self,
        model: Model,
        feeds: dict[str, np.ndarray],
        n: int,
        batch_size: int,
        native: bool,
        stop_on_nonfinite: bool,
    ) -> None:
        """Staging buffers for batches of ``min(batch_size, n)`` rows of ``feeds`` (the last
        one may be partial), checked once against the entry's types; with ``native`` (and a
        compiled epoch entry) the whole-epoch call's arguments too."""
        self.model, self.feeds, self.n, self.stop_on_nonfinite = model, feeds, n, stop_on_nonfinite
        self.e = model.entries["train_step"]
        self.slots = self.e.sched.input_slots
        self.bs = min(batch_size, n)
        self._stage_batches()
        self.epoch_entry = model.epoch_entry if native else None
        if self.epoch_entry is not None:
            self._stage_epoch()
        self.start: tuple[np.ndarray, np.ndarray] | None = None  # the running epoch's start
        # Set by fit: the next native epoch scans its batches' float inputs (fit's data check);
        # ``rejected``: that scan found a bad row (the epoch undone, ArgumentError raised).
        self.scan = False
        self.rejected = False
        self.ctrl_c: _DeferredInterrupt | None = None  # set by fit
        self.done = 0  # epochs in the history when the running epoch began
        self.t0 = 0.0

    def _stage_batches(self) -> None:
        """One batch's staging buffers and the step's arguments over them (the full batch's,
        and the last partial batch's), checked against the entry's types."""
        e, bs = self.e, self.bs
        self.stage = {k: np.empty((bs,) + v.shape[1:], v.dtype) for k, v in self.feeds.items()}
        rest = self.n % bs
        # The last partial batch uses the first rows of the same buffers, as the epoch entry does.
        self.stage_rest = {k: v[:rest] for k, v in self.stage.items()} if rest else {}
        self.lr_arr = np.zeros((), dtype=e.in_types[self.slots.index("lr")].np_dtype)
        self.full_arrays = self._arrays_for(self.stage)
        self.rest_arrays = self._arrays_for(self.stage_rest) if rest else None
        e.check(self.full_arrays, bs)
        if rest:
            e.check(self.rest_arrays, rest)

    def _stage_epoch(self) -> None:
        """The whole-epoch call's arguments: every row, the staging buffers it gathers each
        batch into, one loss per batch."""
        self.data_arrays = self._arrays_for(self.feeds)
        self.e.check(self.data_arrays, self.n)
        self.staging = [None if s == "lr" else self.stage[s] for s in self.slots]
        self.losses = np.empty(-(-self.n // self.bs), self.e.out_types[0].np_dtype)

    def _arrays_for(self, st: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.lr_arr if s == "lr" else st[s] for s in self.slots]

    def epoch(
        self, epoch: int, shuffle: bool, seed: int, cbs: CallbackList, done: int
    ) -> dict[str, float]:
        """Run one epoch (rows in the order drawn from ``[seed, epoch]``); {"loss": mean}."""
        m = self.model
        self.t0 = time.perf_counter()
        n = self.n
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        # Until the epoch is in the history, an interruption or a non-finite loss goes
        # back here (one copy of params and state per epoch).
        self.start = (m._param_region.copy(), m._state_region.copy())
        self.done = done
        self.rows = n  # the rows trained (fewer when a batch callback stops training)
        if self.epoch_entry is not None:
            total = self._native_epoch(epoch, order)
        else:
            total = self._batch_epoch(epoch, order, cbs)
        return {"loss": total / self.rows}

    def _native_epoch(self, epoch: int, order: np.ndarray) -> float:
        """The whole epoch in one native call; the sum of the batches' losses times rows."""
        n, bs = self.n, self.bs
        self.lr_arr[...] = self.model.lr
        scan, self.scan = self.scan, False
        try:
            self.epoch_entry(self.data_arrays, self.staging, n, order, bs, self.losses, scan=scan)
        except InputRejected as err:
            m = self.model
            m._param_region[...], m._state_region[...] = self.start  # as they were: bit for bit
            self.start = None
            self.rejected = True
            raise m._explain(err, self.feeds) from None
        except NonfiniteLoss as bad:
            lrs = [float(self.lr_arr)] * len(self.losses)
            raise self._nonfinite(epoch, order, bad.step, self.losses[bad.step], lrs) from None
        total = 0.0
        for lo, loss in zip(range(0, n, bs), self.losses.tolist()):
            total += loss * min(bs, n - lo)
        return total

    def _batch_epoch(self, epoch: int, order: np.ndarray, cbs: CallbackList) -> float:
        """One native call per batch, with the batch hooks around each."""
        total = 0.0
        lrs: list[float] = []
        for b, lo in enumerate(range(0, self.n, self.bs)):
            cbs.batch_begin(b, {"batch": b, "size": min(self.bs, self.n - lo)})
            lrs.append(float(self.model.lr))
            loss, rows = self._step(order, lo, self.model.lr)
            if self.ctrl_c is not None:
                self.ctrl_c.check()  # mid-epoch: rolled back by fit
            if self.stop_on_nonfinite and not math.isfinite(loss):
                raise self._nonfinite(epoch, order, b, loss, lrs)
            total += loss * rows
            logs = {"batch": b, "size": rows, "loss": total / (lo + rows), "batch_loss": loss}
            cbs.batch_end(b, logs)
            hand_over(self.model)  # a whole step done: other threads' snapshots may run
            if self.model.stop_training:  # Keras: the epoch ends after this batch
                self.rows = lo + rows
                break
        return total

    def _step(self, order: np.ndarray, lo: int, lr: float) -> tuple[float, int]:
        """One training step on rows order[lo:lo+bs] at rate lr: (loss, rows)."""
        idx = order[lo : lo + self.bs]
        full = len(idx) == self.bs
        st, arrays = (self.stage, self.full_arrays) if full else (self.stage_rest, self.rest_arrays)
        for k, v in self.feeds.items():
            np.take(v, idx, axis=0, out=st[k])
        self.lr_arr[...] = lr
        return float(self.e(arrays, len(idx), checked=False, scan=False)[0]), len(idx)

    def _nonfinite(
        self, epoch: int, order: np.ndarray, bad: int, loss: float, lrs: list[float]
    ) -> NumericsError:
        """Roll back to the epoch's start, replay its finite steps, name the bad one."""
        m, bs = self.model, self.bs
        m._param_region[...], m._state_region[...] = self.start
        for s_ in range(bad):
            self._step(order, s_ * bs, lrs[s_])
        rows = order[bad * bs : bad * bs + bs]
        kept = (
            f"after step {bad - 1} of that epoch, the last finite one"
            if bad
            else "the epoch began with"
        )
        return NumericsError(
            f"fit: the loss became {loss} (not finite) at epoch {epoch}, step {bad} "
            f"(batch rows {rows[:5].tolist()}{' ...' if len(rows) > 5 else ''}); training "
            f"stopped with the parameters and optimizer state {kept}. Lower the learning rate, check the data and the "
            "loss for overflow, or compile with check_numerics=True to find the node; "
            "stop_on_nonfinite=False trains on"
        )

    def roll_back_interrupted(self, history: History, initial_epoch: int) -> None:
        """After Ctrl-C: an unfinished epoch is undone (parameters, state, history)."""
        m = self.model
        history.interrupted = True
        if self.start is not None:  # mid-epoch: back to the end of the last finished epoch
            m._param_region[...], m._state_region[...] = self.start
            history.truncate(self.done)
        log.warning(
            "fit: interrupted after %d finished epoch(s); the parameters, optimizer state "
            "and step counter are those at the end of the last finished epoch (resume with "
            "initial_epoch=%d)",
            len(history.epochs),
            initial_epoch + len(history.epochs),
        )


class _DeferredInterrupt:
    """While fit runs (in the main thread, with Python's default SIGINT handler), a first Ctrl-C
    is recorded and raised as KeyboardInterrupt at the next ``check()``, i.e. at a step or
    epoch boundary, never in the middle of fit's bookkeeping; a second one interrupts at once.
    A one-call native epoch therefore finishes and is committed to the history before fit
    stops (signals reach Python only between native calls anyway)."""

    def __init__(self) -> None:
        self.pending = False
        self.installed = False
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    signal.signal(signal.SIGINT, self._handler)
                    self.installed = True
            except (ValueError, OSError):
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def restore(self) -> bool:
        """Put Python's handler back; True when a Ctrl-C came after the last check."""
        if self.installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.installed = False
        pending, self.pending = self.pending, False
        return pending


class _Progress:
    """Progress of ``fit``: a tqdm bar over the epochs (loss figures as its postfix) when stdout
    is a terminal, tqdm is installed and verbose == 1; otherwise one plain line per epoch
    (verbose >= 1: a file or a pipe gets readable lines, not bar redraws); nothing at verbose 0.
    """

    def __init__(self, verbose: int, epochs: int, initial_epoch: int = 0) -> None:
        self.verbose, self.epochs = verbose, epochs
        self.bar = None
        if verbose == 1 and getattr(sys.stdout, "isatty", lambda: False)():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=max(0, epochs - initial_epoch),
                    unit="epoch",
                    file=sys.stdout,
                    dynamic_ncols=True,
                )

    def epoch(self, epoch: int, figures: dict[str, float]) -> None:
        if not self.verbose:
            return
        parts = {k: v for k, v in figures.items() if k not in ("seconds", "lr")}
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in parts.items()}, refresh=False)
            self.bar.update(1)
            return
        print(
            f"epoch {epoch + 1}/{self.epochs}  "
            + "  ".join(f"{k} {v:.4f}" for k, v in parts.items())
            + f"  lr {figures.get('lr', float('nan')):.3g}"
            + f"  ({figures['seconds'] * 1e3:.1f} ms)",
            file=sys.stdout,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
