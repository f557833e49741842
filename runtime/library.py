"""Loading a graphc shared library back into Python: ``graphc.load("libNAME.so")``.

The object calls the library's public C functions (the same ones a C program calls) through
ctypes, with numpy buffers it owns: params, state and a workspace grown to the largest batch.
Every array is checked against the library's own description (``NAME_graphc_meta``) before
the call, so a wrong shape raises ArgumentError instead of reading past a buffer.
"""

from __future__ import annotations

import _ctypes
import ctypes
import json
import os
import re
import shutil
import tempfile
import weakref
from typing import Any

import numpy as np
from graphc.codegen.threads import MAX_THREADS
from graphc.ir.errors import ArgumentError, CheckpointError, GraphcError, NumericsError
from graphc.ir.types import DTYPE_INFO, TensorType

from .buffers import aligned_empty, view
from .executable import one_hot_hint
from .parallel import own_lock, serialized

ERROR_NAMES = {
    1: "null pointer",
    2: "bad batch size",
    3: "buffer too small",
    4: "misaligned buffer",
    5: "weights file rejected",
    6: "weights file cannot be read",
    7: "internal error",
    8: "CPU lacks the instructions the library was built for",
}


def _open_private_copy(path: str) -> tuple[ctypes.CDLL, Any]:
    """dlopen a private copy of the library at ``path``, as the file is now.

    The dynamic loader hands back the already-loaded object for a path (or file) it has seen,
    so a library re-exported at the same path would be served stale. The copy lives in an
    anonymous memory file (Linux ``memfd_create``, opened as ``/proc/self/fd/N`` and kept open
    while loaded, so that name is never reused meanwhile), else in a fresh temporary folder.
    Returns the CDLL and what ``_unload`` must free (the descriptor or the folder).
    """
    with open(path, "rb") as f:
        data = f.read()
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        try:
            fd = os.memfd_create("graphc-" + os.path.basename(path), os.MFD_CLOEXEC)
        except OSError:
            fd = None
        if fd is not None:
            try:
                view_ = memoryview(data)
                while view_:
                    view_ = view_[os.write(fd, view_) :]
                return ctypes.CDLL(f"/proc/self/fd/{fd}"), fd
            except OSError:
                os.close(fd)  # e.g. memfd exec forbidden: fall back to a temporary file
    folder = tempfile.mkdtemp(prefix="graphc-lib-")
    copy = os.path.join(folder, os.path.basename(path))
    try:
        with open(copy, "wb") as f:
            f.write(data)
        return ctypes.CDLL(copy), folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _unload(handle: int, keep: Any) -> None:
    """dlclose a library opened by ``_open_private_copy`` and free its copy."""
    try:
        _ctypes.dlclose(handle)
    except (OSError, AttributeError):
        pass
    if isinstance(keep, int):
        os.close(keep)
    else:
        shutil.rmtree(keep, ignore_errors=True)


class _Ctx(ctypes.Structure):
    _fields_ = [
        ("params", ctypes.c_void_p),
        ("params_bytes", ctypes.c_int64),
        ("state", ctypes.c_void_p),
        ("state_bytes", ctypes.c_int64),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_int64),
    ]


class Library:
    """A loaded graphc library: ``predict``, ``train_step`` (when compiled), weights I/O.

    Attributes:
        name: the model's name (the C prefix).
        meta: the library's JSON description (entries, shapes, memory plan).
        params / state: name -> numpy view of each parameter / optimizer slot (writable).
        lr: the learning rate ``train_step`` uses by default (the exported model's).
    """

    def __init__(self, path: str, name: str | None = None) -> None:
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise ArgumentError(f"load: no library at {path!r}")
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise ArgumentError(
                    f"load: {path!r} is not a shared library. graphc.load opens libraries made by "
                    "`graphc compile` or model.export(); to restore a checkpoint (.npz), build the "
                    "model again and call model.load(path)"
                )
        if name is None:
            m = re.fullmatch(r"lib(\w+?)(\.\w+)*\.so(\.\d+)*", os.path.basename(path))
            if m is None:
                raise ArgumentError(
                    f"load: cannot tell the model name from {os.path.basename(path)!r}; pass name="
                )
            name = m.group(1)
        self.path, self.name = path, name
        own_lock(self)  # calls share one workspace: they take turns
        try:
            self._lib, keep = _open_private_copy(path)
        except OSError as e:
            raise GraphcError(f"load: cannot load {path!r}: {e}") from None
        # unloaded (dlclose) and its private copy freed when this Library is dropped
        self._unload = weakref.finalize(self, _unload, self._lib._handle, keep)
        try:
            meta_fn = getattr(self._lib, f"{name}_graphc_meta")
        except AttributeError:
            raise ArgumentError(
                f"load: {path!r} has no {name}_graphc_meta: not a graphc library for model {name!r}"
            ) from None
        meta_fn.restype = ctypes.c_char_p
        self.meta: dict = json.loads(meta_fn().decode())
        self.lr = float(self.meta["lr"])
        self._params = aligned_empty(self.meta["param_bytes"])
        self._state = aligned_empty(self.meta["state_bytes"])
        self._ws = aligned_empty(0)
        self._ws_rows = 0
        self._ctx = _Ctx(
            self._params.ctypes.data,
            self._params.nbytes,
            self._state.ctypes.data,
            self._state.nbytes,
            self._ws.ctypes.data,
            0,
        )
        self.params = {
            r["name"]: view(self._params, r["offset"], tuple(r["shape"]), DTYPE_INFO[r["dtype"]].np)
            for r in self.meta["params"]
        }
        self.state = {
            r["name"]: view(self._state, r["offset"], tuple(r["shape"]), DTYPE_INFO[r["dtype"]].np)
            for r in self.meta["state"]
        }
        self._call("init", ctypes.byref(self._ctx))

    @property
    def threads(self) -> int:
        """Threads the library splits its large GEMMs over (``NAME_set_num_threads``; 1 by
        default, the same bits for any count)."""
        fn = getattr(self._lib, f"{self.name}_get_num_threads", None)
        return int(fn()) if fn is not None else 1

    @threads.setter
    def threads(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ArgumentError(f"threads must be a positive int, got {n!r}")
        fn = getattr(self._lib, f"{self.name}_set_num_threads", None)
        if fn is None:
            raise ArgumentError(
                f"{self.path!r} has no {self.name}_set_num_threads (made by an "
                "older graphc): it runs on one thread"
            )
        fn.argtypes, fn.restype = [ctypes.c_int32], ctypes.c_int32
        with self._lock:
            fn(min(n, MAX_THREADS))  # the library clamps to 1..MAX_THREADS; int32 must not wrap

    # ------------------------------------------------------------------ plumbing

    def _call(self, fn: str, *args: Any) -> None:
        rc = getattr(self._lib, f"{self.name}_{fn}")(*args)
        if rc != 0:
            raise self._error(fn, rc)

    def _error(self, fn: str, rc: int) -> GraphcError:
        """The exception for return code ``rc`` of ``NAME_fn``: NumericsError naming the node,
        its op, its part and source line for a check_numerics site, else ArgumentError."""
        sites = self.meta.get("numerics") or []
        base = self.meta.get("numerics_base", 1000)
        if sites and base <= rc < base + len(sites):
            site = sites[rc - base]
            return NumericsError(
                f"{site['op']} node {site['node']} produced NaN or Inf in the {site['section']} "
                f"part of {self.name}_{fn}\n  at   {site['node']} = {site['op']}(...)    "
                f"{site['loc'] or '(no source line)'}\n  (code {rc}; nothing after it ran: "
                "check the data for NaN/Inf and extreme values, or lower the learning rate)"
            )
        return ArgumentError(f"{self.name}_{fn} returned {rc} ({ERROR_NAMES.get(rc, 'unknown')})")

    def _workspace(self, n: int) -> None:
        if n > self._ws_rows:
            size = self._lib[f"{self.name}_workspace_size"]
            size.restype, size.argtypes = ctypes.c_int64, [ctypes.c_int64]
            nbytes = int(size(n))
            self._ws = aligned_empty(max(nbytes, 1))
            self._ctx.workspace, self._ctx.workspace_bytes = self._ws.ctypes.data, nbytes
            self._ws_rows = n

    def _entry(self, entry: str) -> dict:
        if entry not in self.meta["entries"]:
            raise GraphcError(
                f"{os.path.basename(self.path)} was compiled without {entry} "
                f"(entries: {', '.join(self.meta['entries'])})"
            )
        return self.meta["entries"][entry]

    @staticmethod
    def _shape(port: dict, n: int) -> tuple[int, ...]:
        return tuple(n if d == "N" else d for d in port["shape"])

    def _inputs(self, ports: list[dict], data: Any, what: str) -> tuple[list[np.ndarray], int]:
        """Arrays for ``ports`` from an array (one port) or a dict, checked; and the batch size."""
        if isinstance(data, dict):
            missing = [p["name"] for p in ports if p["name"] not in data]
            if missing:
                raise ArgumentError(f"{what}: no array for input(s) {missing}")
            arrays = [data[p["name"]] for p in ports]
        elif len(ports) == 1:
            arrays = [data]
        else:
            raise ArgumentError(
                f"{what}: the library has inputs {[p['name'] for p in ports]}; pass a dict"
            )
        out, n = [], None
        for p, a in zip(ports, arrays):
            a = np.asarray(a)
            want_dtype = DTYPE_INFO[p["dtype"]].np
            if p["dtype"] == "i32" and not np.issubdtype(a.dtype, np.integer):
                raise ArgumentError(
                    f"input {p['name']!r} expects integers ({p['dtype']}), got {a.dtype}"
                )
            ax = p["shape"].index("N") if "N" in p["shape"] else None  # N need not lead
            rows = a.shape[ax] if ax is not None and a.ndim > ax else 0
            want = self._shape(p, rows)
            if a.ndim == 1 and len(want) == 2 and want[1] == 1 and ax == 0:
                a = a.reshape(want)
            if a.shape != want or (n is not None and ax is not None and rows != n):
                raise ArgumentError(
                    f"input {p['name']!r} expects {p['dtype']}{list(p['shape'])}"
                    + (f" with N={n}" if n is not None else "")
                    + f", got an array of shape {a.shape}"
                    + one_hot_hint(TensorType(tuple(p["shape"]), p["dtype"]), a.shape)
                )
            n = rows if ax is not None else n
            out.append(np.ascontiguousarray(a, dtype=want_dtype))
        if n is None and arrays:
            n = 1  # no input has a batch axis
        if n is None or n < 1:
            raise ArgumentError(f"{what}: no rows")
        return out, n

    # ------------------------------------------------------------------ entries

    @serialized
    def predict(self, x: Any, *, batch_size: int = 1024) -> np.ndarray | dict[str, np.ndarray]:
        """``NAME_infer`` on every row of ``x`` (array or dict by input name), in blocks of
        ``batch_size`` rows when the library's outputs are row-wise (its ``rows_independent``
        flag, ``NAME_INFER_ROWS_INDEPENDENT`` in the header), else in one call.

        Returns:
            the output array (float32), or a dict by output name when there are several.

        Raises:
            ArgumentError: a shape or dtype differs from the library's inputs.
        """
        e = self._entry("infer")
        arrays, n = self._inputs(e["inputs"], x, "predict")
        if batch_size < 1:
            raise ArgumentError(f"batch_size must be >= 1, got {batch_size}")
        outs = [np.empty(self._shape(p, n), DTYPE_INFO[p["dtype"]].np) for p in e["outputs"]]
        fn = self._lib[f"{self.name}_infer"]
        fn.restype = ctypes.c_int
        # Rows are split into blocks only when the library says every output row depends on
        # its input row alone (graphc.ir.batch, the rule Model.predict follows); a library
        # without the flag (older graphc) or an output mixing rows: one call.
        if not e.get("rows_independent", False):
            batch_size = n
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            self._workspace(hi - lo)
            args: list[Any] = [ctypes.byref(self._ctx), ctypes.c_int64(hi - lo)]
            parts = [a[lo:hi] if hi - lo < n else a for a in arrays + outs]
            for part in parts:
                args += [ctypes.c_void_p(part.ctypes.data), ctypes.c_int64(part.size)]
            rc = fn(*args)
            if rc != 0:
                raise self._error("infer", rc)
        return outs[0] if len(outs) == 1 else {p["name"]: o for p, o in zip(e["outputs"], outs)}

    @serialized
    def train_step(self, x: Any, y: Any = None, *, lr: float | None = None) -> float:
        """One ``NAME_train_step`` on all rows of x (and labels y); returns the batch's loss."""
        e = self._entry("train_step")
        ports = e["inputs"]
        if not isinstance(x, dict):
            if y is None or len(ports) != 2:
                raise ArgumentError(
                    f"train_step: pass x and y, or a dict for inputs {[p['name'] for p in ports]}"
                )
            x = {ports[0]["name"]: x, ports[1]["name"]: y}
        elif y is not None:
            x = {**x, **(y if isinstance(y, dict) else {ports[-1]["name"]: y})}
        arrays, n = self._inputs(ports, x, "train_step")
        self._workspace(n)
        loss = DTYPE_INFO[e["lr_dtype"]].ctype()  # the loss has the model's float type, like lr
        args: list[Any] = [ctypes.byref(self._ctx), ctypes.c_int64(n)]
        for a in arrays:
            args += [ctypes.c_void_p(a.ctypes.data), ctypes.c_int64(a.size)]
        args.append(DTYPE_INFO[e["lr_dtype"]].ctype(self.lr if lr is None else lr))
        args.append(ctypes.byref(loss))
        self._call("train_step", *args)
        return float(loss.value)

    # ------------------------------------------------------------------ weights

    @serialized
    def load_weights(self, path: str) -> None:
        """``NAME_load_weights``: a checked weights file into the params.

        Raises:
            CheckpointError: the file is missing or rejected (size, header or checksum).
        """
        fn = self._lib[f"{self.name}_load_weights"]
        rc = fn(ctypes.byref(self._ctx), os.fsencode(path))
        if rc != 0:
            raise CheckpointError(f"{path}: {ERROR_NAMES.get(rc, 'unknown')} (code {rc})")

    def weights_file_bytes(self) -> bytes:
        """``NAME_write_weights``: the params as a weights file image."""
        size = self.meta["param_bytes"] + self._weights_header_bytes()
        buf = ctypes.create_string_buffer(size)
        self._call("write_weights", ctypes.byref(self._ctx), buf, ctypes.c_int64(size))
        return buf.raw

    def _weights_header_bytes(self) -> int:
        from graphc.codegen import aot

        return len(aot.weights_header(_plan_from_meta(self.meta)))


def _plan_from_meta(meta: dict) -> Any:
    from graphc.codegen import aot
    from graphc.ir.types import TensorType

    params = [
        aot.Region(r["name"], TensorType(tuple(r["shape"]), r["dtype"]), r["offset"], r["bytes"])
        for r in meta["params"]
    ]
    return aot.LibraryPlan(
        meta["name"],
        {},
        params,
        [],
        [],
        meta["param_bytes"],
        meta["state_bytes"],
        meta["grad_bytes"],
        meta["embed"],
        meta["target_cpu"],
        meta["lr"],
        meta["loss_kind"],
    )


def load(path: str, name: str | None = None, weights: str | None = None) -> Library:
    """Load a library made by ``graphc compile`` / ``Model.export``.

    Every call loads the file as it is now (a private copy: a library re-exported at the same
    path is never served from an earlier load), and the copy is unloaded when the returned
    Library is dropped.

    Args:
        path: the ``.so``.
        name: the model's name (default: NAME of ``libNAME.so``).
        weights: a weights file to load (needed for libraries built with ``--weights file``,
            whose params start at zero).

    Raises:
        ArgumentError: no such file, or not a graphc library for ``name``.
        CheckpointError: the weights file is missing or rejected.
    """
    lib = Library(path, name)
    if weights is not None:
        lib.load_weights(weights)
    return lib
