"""A compiled entry point called through ctypes, with its buffers prepared once per batch size."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from graphc.codegen.checks import CHECK_BASE
from graphc.codegen.epoch import ERR_INDEX, ERR_NONFINITE_LOSS
from graphc.codegen.target import call_frame_address
from graphc.ir.errors import ArgumentError, NumericsError
from graphc.ir.plan import Schedule
from graphc.ir.types import BATCH

from .buffers import address, aligned_empty
from .checks import InputRejected

# an entry's arguments: params, state, workspace, inputs[], outputs[], rows n (codegen/module.py)
ENTRY_ARGS = (*(ctypes.c_void_p,) * 5, ctypes.c_int64)
ENTRY = ctypes.CFUNCTYPE(ctypes.c_int32, *ENTRY_ARGS)
COPY_OUTPUT_MAX = 4096  # Entry.run_one: outputs up to this many bytes land in a copy
FRAME_CALL = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)  # graphc_call_frame(frame)
_frame_call: Any = None


def frame_caller() -> Any:
    """``graphc_call_frame`` (codegen.target.call_frame_address) as a ctypes function: an
    entry called through it with its arguments in a frame costs one ctypes argument, not six."""
    global _frame_call
    if _frame_call is None:
        _frame_call = FRAME_CALL(call_frame_address())
    return _frame_call


def shape_hint(
    t: Any, shape: tuple[int, ...], want: tuple[int, ...] | None = None, values: Any = None
) -> str:
    """A hint for an input of the wrong shape (``""`` when none fits):
    - class labels given one-hot: ``[rows, classes]`` for an integer ``[N]`` input, when the
      ``values`` are 0/1 with one 1 per row (other arrays of that shape get no such hint);
    - a vector given as one row or one column (``(1, k)`` or ``(k, 1)`` for ``[N]``: a column
      read from a CSV or a DataFrame): ``a.reshape(-1)``;
    - one row of an ``[N, F]`` input given as a vector of F values: ``a.reshape(1, -1)``;
    - the right values with size-1 axes added or missing, when ``want`` (the concrete shape
      expected) is given: ``a.reshape(want)``.
    """
    one_hot_shape = t.dtype == "i32" and len(shape) == len(t.shape) + 1 and shape[-1] >= 2
    if one_hot_shape and values is not None and _looks_one_hot(np.asarray(values), shape[-1]):
        return (
            f" (these look like one-hot labels, {shape[-1]} columns: this loss takes class "
            "ids; pass y.argmax(axis=1), or use a categorical cross-entropy on one-hot targets)"
        )
    if len(t.shape) == 1 and t.is_batched and len(shape) == 2 and 1 in shape:
        return " (a vector given as one row or one column: pass a.reshape(-1))"
    if len(shape) == 1 and len(t.shape) == 2 and t.shape[0] == "N" and shape[0] == t.shape[1]:
        return f" (one row of {shape[0]} values: pass a.reshape(1, -1) for a batch of one)"
    if want is None or shape == want:
        return ""
    if [d for d in shape if d != 1] == [d for d in want if d != 1]:
        how = "added" if len(shape) > len(want) else "missing"
        return f" (the same values with size-1 axes {how}: pass a.reshape{want})"
    return ""


def label_column(dtype: str, a: np.ndarray, want: tuple[int, ...]) -> np.ndarray:
    """Keras's sparse class labels ``[rows, 1]`` (``[rows, T, 1]``) for an i32 label input
    ``[N]`` (``[N, T]``) of shape ``want``: the same values in the same order, read as ``want``
    (a view); ``a`` itself for any other input or shape."""
    if dtype == "i32" and a.ndim == len(want) + 1 and a.shape == (*want, 1):
        return a.reshape(want)
    return a


def label_dtype_hint(a: np.ndarray) -> str:
    """A hint for class labels (an i32 input) given as something else than integers: class
    names (strings, objects), booleans, or fractions (probabilities or soft targets, which the
    sparse loss does not take); ``""`` when none fits."""
    if a.dtype.kind in "USO":
        return (
            " (class names: number them 0..C-1 first, e.g. "
            "classes, y = np.unique(y, return_inverse=True))"
        )
    if a.dtype.kind == "b":
        return " (booleans: pass y.astype(np.int32) for classes 0 and 1)"
    if a.dtype.kind == "f" and a.size and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return " (whole numbers stored as floats: pass y.astype(np.int32))"
    if a.dtype.kind == "f":
        return (
            " (values that are not whole numbers are no class ids: for probabilities or soft "
            "targets use binary_cross_entropy or categorical_cross_entropy)"
        )
    return ""


def number_dtype_hint(a: np.ndarray) -> str:
    """A hint for a float input (features, targets) given booleans, which numpy does not
    count as numbers (``y == "malignant"`` for binary_cross_entropy's 0/1 targets); ``""``
    for any other dtype."""
    if a.dtype.kind == "b":
        return " (booleans: pass a.astype(np.float32), False and True as 0 and 1)"
    return ""


def class_ids(name: str, a: np.ndarray) -> np.ndarray:
    """The array for an i32 (class label) input ``name``: integers as they are, whole numbers
    stored as floats (labels read from a CSV: 0.0, 1.0, 2.0) as int64, the same values; the
    range is checked later, by the native entry.

    Raises:
        ArgumentError: anything else (fractions, NaN, strings, booleans), naming the input,
            with ``label_dtype_hint``'s hint.
    """
    if np.issubdtype(a.dtype, np.integer):
        return a
    if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        # beyond int64's exact whole numbers: the cast would wrap (compared in float64: 2**62
        # as a float16 overflowed, with a RuntimeWarning, for labels read as float16)
        big = np.abs(a.astype(np.float64, copy=False)) >= 2.0**62
        if np.any(big):
            at = np.unravel_index(int(np.argmax(big)), a.shape)
            raise ArgumentError(
                f"input {name!r} holds class labels: element {tuple(int(i) for i in at)} is "
                f"{a[at]!r}, no class id (whole numbers of int64's range only)"
            )
        return a.astype(np.int64)
    raise ArgumentError(
        f"input {name!r} holds class labels: expected integers, got {a.dtype}" + label_dtype_hint(a)
    )


def _looks_one_hot(a: np.ndarray, columns: int) -> bool:
    """0/1 values with exactly one 1 in each row of ``columns``."""
    if a.size == 0 or a.dtype.kind not in "biuf":
        return False
    rows = a.reshape(-1, columns)
    return bool(np.isin(rows, (0, 1)).all() and (rows.sum(axis=1) == 1).all())


class Entry:
    """One entry point (``train_step``, ``infer``, ``eval``) of a compiled module.

    ``__call__(arrays, n)`` checks every array against the compiled input types, then runs
    the native code; outputs are written into preallocated arrays (reused between calls of the
    same batch size: copy them if you keep them), or into the caller's arrays (``outs``).

    An entry compiled with input checks (codegen/checks.py) scans its inputs' values first and
    raises InputRejected (naming the input) before anything is written; ``unchecked_address``
    is its body without the scans (``scan=False``), for callers that checked the data once.
    """

    def __init__(
        self,
        address: int,
        sched: Schedule,
        params: np.ndarray,
        state: np.ndarray,
        owner: object = None,
        unchecked_address: int | None = None,
        checks: list | tuple = (),
        writes_model: bool = False,
    ) -> None:
        """``writes_model``: the entry updates ``params``/``state`` (a training step), so an
        input sharing memory with them is refused too (see ``refuse_shared``)."""
        self.fn = ENTRY(address)
        self.fn_unchecked = ENTRY(unchecked_address) if unchecked_address else self.fn
        self.checks = {c.name: c for c in checks}
        self.sched = sched
        self.owner = owner  # keeps the JIT engine alive while this entry exists
        self.params, self.state = params, state
        # The byte spans of params and state (they never move). An array of a call that shares
        # a byte with them is refused: an output always (the kernels would write the model's
        # weights while still reading them), an input when the entry updates them.
        self._spans = [
            (r.ctypes.data, r.ctypes.data + r.nbytes) for r in (params, state) if r.nbytes
        ]
        self._in_spans = self._spans if writes_model else []  # the inputs' (none: inference)
        self.writes_model = writes_model
        self.views: dict[str, np.ndarray] = {}  # params and states by name, for the messages
        g = sched.graph
        self.in_types = [g[name].type for name in sched.input_slots]
        self.out_types = [g[name].type for name in sched.output_slots]
        self.inputs = (ctypes.c_void_p * max(1, len(self.in_types)))()
        self.outputs = (ctypes.c_void_p * max(1, len(self.out_types)))()
        self._n = -1
        self.out_arrays: list[np.ndarray] = []
        self.workspace = aligned_empty(0)
        self._ws_cap = -1
        # check_numerics: (value, kernel index) per site (codegen.kernels.numerics_sites), the
        # entry's name and a callable giving the step counter; set by the Model.
        self.numerics: list[tuple[str, int]] | None = None
        self.name = ""
        self.step_of = None
        self._last: list[np.ndarray | None] = [None] * len(self.in_types)
        self._outs_moved = False  # outputs[] points at a caller's arrays (see __call__)
        self._out_last: np.ndarray | None = None  # the caller's array outputs[0] points at
        # The call's pointer arguments, computed once (params/state never move).
        self._args = [
            params.ctypes.data,
            state.ctypes.data,
            self.workspace.ctypes.data,
            ctypes.addressof(self.inputs),
            ctypes.addressof(self.outputs),
        ]
        # The same with the entry's address first and n last, for graphc_call_frame (run,
        # run_one): [fn, params, state, workspace, inputs, outputs, n], n kept equal to _n.
        self._frame = (ctypes.c_uint64 * 7)(address, *self._args, 0)
        self._frame_at = ctypes.addressof(self._frame)
        self._call: Any = None  # frame_caller(), fetched by the second call that uses it
        self._called = False

    def prepare(self, n: int) -> None:
        """Allocate outputs and workspace for batch size ``n`` (no-op when already done)."""
        if n == self._n:
            return
        if n > self._ws_cap:
            self.workspace = aligned_empty(
                self.sched.workspace_bytes(n), what="the workspace (intermediate values)", rows=n
            )
            self._ws_cap = n
            self._args[2] = self._frame[3] = self.workspace.ctypes.data
        self.out_arrays = [np.empty(t.concrete(n), t.np_dtype) for t in self.out_types]
        for j, a in enumerate(self.out_arrays):
            self.outputs[j] = a.ctypes.data
        self._outs_moved, self._out_last = False, None
        self._n = self._frame[6] = n

    def use_workspace(self, workspace: np.ndarray, rows: int) -> None:
        """Run on the caller's ``workspace`` (at least ``workspace_bytes(rows)`` bytes) for every
        batch of up to ``rows`` rows: entries that pass values through it, such as
        ``train_grads`` and ``apply_update`` (the gradient region at its start), share one."""
        if workspace.nbytes < self.sched.workspace_bytes(rows):
            raise ArgumentError(
                f"workspace of {workspace.nbytes} bytes, {self.sched.workspace_bytes(rows)} needed"
            )
        self.prepare(1)
        self.workspace, self._ws_cap = workspace, rows
        self._args[2] = self._frame[3] = workspace.ctypes.data

    def release_workspace(self) -> None:
        """Forget the workspace given to use_workspace (whose memory may go away, e.g. a
        shared-memory window being freed); the next call allocates one of the entry's own."""
        self.workspace, self._ws_cap, self._n = aligned_empty(0), -1, -1
        self._args[2] = self._frame[3] = 0

    def check(self, arrays: list[np.ndarray], n: int) -> None:
        """Raises ArgumentError naming the input when an array's shape or dtype is wrong."""
        if len(arrays) != len(self.in_types):
            raise ArgumentError(f"expected {len(self.in_types)} input arrays, got {len(arrays)}")
        for name, t, a in zip(self.sched.input_slots, self.in_types, arrays):
            if (
                not isinstance(a, np.ndarray)
                or a.dtype != t.np_dtype
                or a.shape != t.concrete(n)
                or not a.flags.c_contiguous
            ):
                got = f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
                raise ArgumentError(
                    f"input {name!r} expects {t} with N={n}, got {got}"
                    + (
                        shape_hint(t, a.shape, t.concrete(n), a)
                        if isinstance(a, np.ndarray)
                        else ""
                    )
                    + (
                        ""
                        if not isinstance(a, np.ndarray) or a.flags.c_contiguous
                        else " (not C-contiguous)"
                    )
                )

    def refuse_shared(self, a: np.ndarray, at: int, slot: int, out: bool = False) -> None:
        """Raise ArgumentError when the C-contiguous array ``a`` (data at address ``at``),
        input ``slot`` of the call (output ``slot`` when ``out``), shares a byte with the
        parameters or the state: the native code would read values it is overwriting (a
        silent wrong result, and the model's weights changed). The exported library's wrapper
        refuses the same (ERR_OVERLAP). The hot paths inline the comparisons."""
        end = at + a.nbytes
        for lo, hi in self._spans:
            if at < hi and lo < end:
                self.shared(a, slot, out)

    def shared(self, a: np.ndarray, slot: int, out: bool) -> None:
        """Raise the ArgumentError of ``refuse_shared``, naming the argument and the
        parameters or states ``a`` shares memory with."""
        names = [k for k, v in self.views.items() if np.may_share_memory(a, v)]
        whose = ", ".join(map(repr, names)) or "parameters or state"
        if out:
            slots = self.sched.output_slots
            what = "out" if len(slots) == 1 else f"out for output {slots[slot]!r}"
            raise ArgumentError(
                f"{what} shares memory with the model's {whose}: the outputs would be written "
                "over them while the compiled code still reads them (a wrong result, and a "
                "changed model); pass an array of its own (or out=None)"
            )
        what = f"input {self.sched.input_slots[slot]!r}"
        raise ArgumentError(
            f"{what} shares memory with the model's {whose}, which this training call updates "
            f"while it still reads {what}: pass a copy (np.array(...)); nothing was changed"
        )

    def __call__(
        self,
        arrays: list[np.ndarray],
        n: int,
        *,
        checked: bool = True,
        scan: bool = True,
        outs: list[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Run the entry on ``arrays`` (one per input slot) for batch size ``n``.

        ``checked``: check the arrays' metadata (dtype, shape, C order) first; callers that
        checked this layout before pass False. ``scan``: run the native value checks (when
        compiled). ``outs``: arrays (C-contiguous, the output types at ``n``, unchecked) that
        receive the outputs instead of the entry's own buffers, written once.
        Returns the output arrays.
        """
        if checked:
            if n < 1:
                raise ArgumentError(f"batch size must be >= 1, got {n}")
            self.check(arrays, n)
        if outs is None:
            return self.run(arrays, n, scan)
        if n != self._n:
            self.prepare(n)
        for j, o in enumerate(outs):
            self.outputs[j] = at = address(o)
            self.refuse_shared(o, at, j, out=True)
        self._outs_moved, self._out_last = True, None
        self._set_inputs(arrays)
        fn = self.fn if scan else self.fn_unchecked
        rc = fn(self._args[0], self._args[1], self._args[2], self._args[3], self._args[4], n)
        if rc != 0:
            raise self.error(rc)
        return self.out_arrays if outs is None else outs

    def _set_inputs(self, arrays: list[np.ndarray] | tuple) -> None:
        # Nothing is allocated per call: the pointer of an array seen by the last call is kept
        # (the array is kept alive with it, so its memory cannot move or be freed meanwhile).
        last, inputs, spans = self._last, self.inputs, self._in_spans
        for i, a in enumerate(arrays):
            if a is not last[i]:
                at = address(a)
                for lo, hi in spans:  # (refuse_shared, inline: a training step's call path)
                    if at < hi and lo < at + a.nbytes:
                        self.shared(a, i, False)
                inputs[i] = at
                last[i] = a

    def run(self, arrays: list[np.ndarray] | tuple, n: int, scan: bool = True) -> list[np.ndarray]:
        """The call path of ``__call__`` for arrays whose layout was checked before (one per
        input slot, ``n`` rows): the outputs land in the entry's own arrays."""
        if n != self._n:
            self.prepare(n)
        elif self._outs_moved:
            for j, a in enumerate(self.out_arrays):
                self.outputs[j] = a.ctypes.data
            self._outs_moved, self._out_last = False, None
        self._set_inputs(arrays)
        if scan:
            rc = (self._call or self._caller())(self._frame_at)
        else:
            a = self._args
            rc = self.fn_unchecked(a[0], a[1], a[2], a[3], a[4], n)
        if rc != 0:
            raise self.error(rc)
        return self.out_arrays

    def _caller(self) -> Any:
        """graphc_call_frame from this entry's second call on; its first call goes through the
        six-argument function, so that the trampoline's one-time compile (some 6 ms) stays
        out of a fresh process's first step (the cold-compile figure of benchmarks/run.py)."""
        if not self._called:
            self._called = True
            return self._six
        self._call = frame_caller()
        return self._call

    def _six(self, _frame_at: int) -> int:
        a = self._args
        return self.fn(a[0], a[1], a[2], a[3], a[4], self._n)

    def run_one(self, x: np.ndarray, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """The call path of an entry with one input and one output (``infer`` of most models)
        for an ``x`` and ``out`` whose layouts were checked before (``out``: C-contiguous,
        writable, the output type at ``n``, not overlapping ``x``).

        Returns ``out``, or when it is None a new array: for an output of at most
        COPY_OUTPUT_MAX bytes the native code writes the entry's own buffer (its address is
        set once) and the new array is a copy of it (0.2 us against 0.45 us for taking a new
        array's address, measured at batch 1, benchmarks/callpath.py); larger outputs are
        written once, straight into the new array, which the entry does not keep. Pointers of
        the ``x`` and ``out`` seen by the last call are kept (those arrays with them, so their
        memory cannot move meanwhile)."""
        if n != self._n:
            self.prepare(n)
        if x is not self._last[0]:
            at = address(x)
            if self.writes_model:
                self.refuse_shared(x, at, 0)
            self.inputs[0] = at
            self._last[0] = x
        call = self._call or self._caller()
        if out is None:
            own = self.out_arrays[0]
            if own.nbytes <= COPY_OUTPUT_MAX:
                if self._outs_moved:
                    self.outputs[0] = own.ctypes.data
                    self._outs_moved, self._out_last = False, None
                rc = call(self._frame_at)
                if rc != 0:
                    raise self.error(rc)
                return own.copy()
            out = np.empty(own.shape, own.dtype)
            self.outputs[0] = address(out)
            # not remembered: the entry must not keep the caller's result alive (or block its
            # resize); outputs[0] is set again before the next call
            self._outs_moved, self._out_last = True, None
        elif out is not self._out_last:
            at = address(out)
            self.refuse_shared(out, at, 0, out=True)
            self.outputs[0] = at
            self._outs_moved, self._out_last = True, out
        rc = call(self._frame_at)
        if rc != 0:
            raise self.error(rc)
        return out

    def run_batches(
        self,
        arrays: list[np.ndarray],
        outs: list[np.ndarray],
        n: int,
        step: int,
        after: Any = None,
        scan: bool = True,
    ) -> None:
        """Run the entry over rows ``[lo, lo + step)`` of ``arrays`` for lo = 0, step, ...,
        writing each batch's rows of ``outs`` in place; ``after(lo, hi)`` runs after each.

        ``arrays`` and ``outs`` hold all ``n`` rows and were checked by the caller (the types
        at ``n``); a batch's pointers are offsets into them, so no per-batch array is made.
        Arrays without N first (lr, a scalar loss) are passed whole to every batch."""

        def rows(arr: list[np.ndarray], types: list, out: bool) -> list[tuple[int, int]]:
            at = [address(a) for a in arr]
            if out or self.writes_model:
                for j, a in enumerate(arr):
                    self.refuse_shared(a, at[j], j, out)
            return [
                (p, a.strides[0] if t.shape[:1] == (BATCH,) else 0)
                for p, a, t in zip(at, arr, types)
            ]

        ins, outp = rows(arrays, self.in_types, False), rows(outs, self.out_types, True)
        self._last = [None] * len(self.in_types)
        fn = self.fn if scan else self.fn_unchecked
        a = self._args
        inputs, outputs = self.inputs, self.outputs
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            if hi - lo != self._n:
                self.prepare(hi - lo)
            for i, (p, rb) in enumerate(ins):
                inputs[i] = p + lo * rb
            for j, (p, rb) in enumerate(outp):
                outputs[j] = p + lo * rb
            self._outs_moved, self._out_last = True, None
            rc = fn(a[0], a[1], a[2], a[3], a[4], hi - lo)
            if rc != 0:
                raise self.error(rc)
            if after is not None:
                after(lo, hi)

    def error(self, rc: int) -> Exception:
        """The exception for a nonzero return code: NumericsError for a check_numerics site."""
        from graphc.codegen.checks import CHECK_BASE
        from graphc.codegen.kernels import NUMERICS_BASE

        slots = self.sched.input_slots
        if CHECK_BASE <= rc < CHECK_BASE + len(slots):
            name = slots[rc - CHECK_BASE]
            chk = self.checks.get(name)
            kind = chk.kind if chk is not None else "value"
            return InputRejected(
                f"input {name!r} failed the native {kind} check", rc - CHECK_BASE, name
            )
        sites = self.numerics
        if not sites or not NUMERICS_BASE <= rc < NUMERICS_BASE + len(sites):
            return ArgumentError(f"native code returned error {rc}")
        v, k = sites[rc - NUMERICS_BASE]
        g, kernels = self.sched.graph, self.sched.kernels
        nd = g[v]
        done = self.step_of() if self.step_of is not None else None
        if self.name == "train_step" and done is not None:
            # had this step's counter update already run when kernel k failed?
            upd = dict(g.updates).get("step")
            ran = any(
                j < k and (upd in kern.nodes or kern.copy_to == "step")
                for j, kern in enumerate(kernels)
            )
            where = f"training step {int(done) + (0 if ran else 1)}"
        elif done is not None:
            where = f"{self.name or 'entry'} (after {int(done)} training steps)"
        else:
            where = self.name or "entry"
        lines = [
            f"{nd.op} node {v} produced NaN or Inf in the {nd.section} part of {where}",
            f"  at   {v} = {nd.op}({', '.join(nd.inputs)}) : {nd.type}"
            f"    {nd.loc or '(no source line)'}",
        ]
        if nd.origin:
            lines.append(f"  from {nd.origin}")
        lines += [f"  operand {i} : {g[i].type}" for i in nd.inputs]
        others = [x for x in kernels[k].nodes if x != v]
        if others:
            lines.append(f"  (computed in one fused kernel with {', '.join(others)})")
        lines.append(
            "  Check the data for NaN/Inf and extreme values, lower the learning rate, or "
            "inspect the values feeding this node (graphc dump shows the graph)."
        )
        return NumericsError("\n".join(lines))


# the train_step entry's arguments, then order[], batch, staging[], losses[], scan
# (codegen/epoch.py)
EPOCH = ctypes.CFUNCTYPE(
    ctypes.c_int32,
    *ENTRY_ARGS,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
)


class NonfiniteLoss(Exception):
    """Raised by EpochEntry when a step's loss was NaN or infinite: the epoch stopped right after
    step ``step`` (its update ran, no later step did). ``Model.fit`` turns it into a
    NumericsError after rolling back to the last finite step."""

    def __init__(self, step: int) -> None:
        super().__init__(f"non-finite loss at step {step}")
        self.step = step


class EpochEntry:
    """``NAME_train_epoch`` (ABI in ``graphc.codegen.epoch``): one native call per epoch.

    It shares the workspace and output buffers of the ``train_step`` Entry it wraps, and makes
    exactly the calls of that entry a per-step loop makes on the same gathered rows.
    """

    def __init__(self, address: int, step: Entry) -> None:
        self.fn = EPOCH(address)
        self.step = step
        slots = step.sched.input_slots
        self.inputs = (ctypes.c_void_p * max(1, len(slots)))()
        self.staging = (ctypes.c_void_p * max(1, len(slots)))()

    def __call__(
        self,
        arrays: list[np.ndarray],
        staging: list[np.ndarray | None],
        n: int,
        order: np.ndarray,
        batch: int,
        losses: np.ndarray,
        *,
        scan: bool = False,
    ) -> np.ndarray:
        """Run ``ceil(n / batch)`` steps over ``arrays`` (checked by the caller for ``n`` rows)
        in the row order ``order`` (int64[n]); ``staging[i]`` holds ``batch`` rows of batched
        input ``i``. Writes and returns ``losses`` (one per step, the loss's dtype).

        ``scan``: every step first runs the entry's native value checks on its gathered rows;
        a failing step raises InputRejected (naming the input) with the steps before it run
        and itself not (the caller undoes them: see Model.fit)."""
        steps = -(-n // batch)
        if order.dtype != np.int64 or order.shape != (n,) or not order.flags.c_contiguous:
            raise ArgumentError(f"order must be a contiguous int64[{n}] array")
        if losses.shape != (steps,) or losses.dtype != self.step.out_types[0].np_dtype:
            raise ArgumentError(f"losses must be {self.step.out_types[0].np_dtype}[{steps}]")
        e = self.step
        e.prepare(batch)
        for i, a in enumerate(arrays):
            e.refuse_shared(a, a.ctypes.data, i)
            self.inputs[i] = a.ctypes.data
            st = staging[i]
            self.staging[i] = st.ctypes.data if st is not None else None
        rc = self.fn(
            e._args[0],
            e._args[1],
            e._args[2],
            ctypes.addressof(self.inputs),
            e._args[4],
            n,
            order.ctypes.data,
            batch,
            ctypes.addressof(self.staging),
            losses.ctypes.data,
            1 if scan else 0,
        )
        if rc == 0:
            return losses
        if rc == ERR_NONFINITE_LOSS:
            bad = np.flatnonzero(~np.isfinite(losses))
            raise NonfiniteLoss(int(bad[0]) if bad.size else steps - 1)
        if rc == ERR_INDEX:
            raise row_index_error()
        if e.numerics or CHECK_BASE <= rc < CHECK_BASE + len(e.in_types):
            raise e.error(rc)
        raise ArgumentError(f"native code returned error {rc}")


def row_index_error() -> ArgumentError:
    """The error of an epoch entry's ERR_INDEX: a row of ``order`` outside 0..n-1."""
    return ArgumentError(f"native code returned error {ERR_INDEX} (a row index outside the data)")
