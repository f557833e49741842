"""A compiled entry point called through ctypes, with its buffers prepared once per batch size."""

from __future__ import annotations

import ctypes

import numpy as np

from graphc.ir.errors import ArgumentError
from graphc.ir.passes.schedule import Schedule

from .buffers import aligned_empty

ENTRY = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class Entry:
    """One entry point (``train_step``, ``infer``, ``eval``) of a compiled module.

    ``__call__(arrays, n)`` checks every array against the compiled input types, then runs
    the native code; outputs are written into preallocated arrays (reused between calls of the
    same batch size: copy them if you keep them).
    """

    def __init__(self, address: int, sched: Schedule, params: np.ndarray, state: np.ndarray,
                 owner: object = None) -> None:
        self.fn = ENTRY(address)
        self.sched = sched
        self.owner = owner  # keeps the JIT engine alive while this entry exists
        self.params, self.state = params, state
        g = sched.graph
        self.in_types = [g[name].type for name in sched.input_slots]
        self.out_types = [g[name].type for name in sched.output_slots]
        self.inputs = (ctypes.c_void_p * max(1, len(self.in_types)))()
        self.outputs = (ctypes.c_void_p * max(1, len(self.out_types)))()
        self._n = -1
        self.out_arrays: list[np.ndarray] = []
        self.workspace = aligned_empty(0)
        self._ws_cap = -1

    def prepare(self, n: int) -> None:
        """Allocate outputs and workspace for batch size ``n`` (no-op when already done)."""
        if n == self._n:
            return
        if n > self._ws_cap:
            self.workspace = aligned_empty(self.sched.workspace_bytes(n))
            self._ws_cap = n
        self.out_arrays = [np.empty(t.concrete(n), t.np_dtype) for t in self.out_types]
        for j, a in enumerate(self.out_arrays):
            self.outputs[j] = a.ctypes.data
        self._n = n

    def check(self, arrays: list[np.ndarray], n: int) -> None:
        """Raises ArgumentError naming the input when an array's shape or dtype is wrong."""
        if len(arrays) != len(self.in_types):
            raise ArgumentError(f"expected {len(self.in_types)} input arrays, got {len(arrays)}")
        for name, t, a in zip(self.sched.input_slots, self.in_types, arrays):
            if not isinstance(a, np.ndarray) or a.dtype != t.np_dtype or a.shape != t.concrete(n) \
                    or not a.flags.c_contiguous:
                got = f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
                raise ArgumentError(f"input {name!r} expects {t} with N={n}, got {got}"
                                    + ("" if not isinstance(a, np.ndarray) or a.flags.c_contiguous
                                       else " (not C-contiguous)"))

    def __call__(self, arrays: list[np.ndarray], n: int, *, checked: bool = True) -> list[np.ndarray]:
        if n < 1:
            raise ArgumentError(f"batch size must be >= 1, got {n}")
        if checked:
            self.check(arrays, n)
        self.prepare(n)
        for i, a in enumerate(arrays):
            self.inputs[i] = a.ctypes.data
        rc = self.fn(self.params.ctypes.data, self.state.ctypes.data, self.workspace.ctypes.data,
                     ctypes.addressof(self.inputs), ctypes.addressof(self.outputs), n)
        if rc != 0:
            raise ArgumentError(f"native code returned error {rc}")
        return self.out_arrays
