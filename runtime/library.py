"""Loading a graphc shared library back into Python: ``graphc.load("libNAME.so")``.

The object calls the library's public C functions (the same ones a C program calls) through
ctypes, with numpy buffers it owns: params, state and a workspace grown to the largest batch.
Every array is checked against the library's own description (``NAME_graphc_meta``) before
the call, so a wrong shape raises ArgumentError instead of reading past a buffer.
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import json
import os
import re
import shutil
import tempfile
import weakref
from typing import Any

import numpy as np

from graphc.codegen.aot import ABI_VERSION, CHECK_ERRORS, ERRORS, abi_symbol
from graphc.codegen.elf import checksum_problem, shared_object_problem
from graphc.codegen.target import elf_arch, host_arch
from graphc.codegen.threads import MAX_THREADS
from graphc.ir.errors import ArgumentError, CheckpointError, GraphcError, NumericsError
from graphc.ir.types import DTYPE_INFO, TensorType

from .buffers import (
    WeightViews,
    address,
    aligned_empty,
    keyed_outputs,
    out_by_key,
    output_arrays,
    view,
)
from .checks import (
    cast_input,
    check_batch_size,
    check_lr,
    explain,
    input_array,
    label_error,
    param_value,
)
from .executable import (
    COPY_OUTPUT_MAX,
    class_ids,
    label_column,
    label_dtype_hint,
    number_dtype_hint,
    shape_hint,
)
from .parallel import own_lock, turned

ERROR_NAMES = {code: msg for _, code, msg in ERRORS if code}
OVERLAP_CODE = next(code for name, code, _ in ERRORS if name == "ERR_OVERLAP")
WEIGHTS_CODE = next(code for suffix, code, _ in ERRORS if suffix == "ERR_WEIGHTS")
# The codes of the entries' input checks (codegen/checks.py kinds) in the C wrappers
CHECK_CODES: dict[int, set[str]] = {}
for _kind, _suffix in CHECK_ERRORS.items():  # ERR_LOOKUP: index and divisor checks
    for _s, _code, _ in ERRORS:
        if _s == _suffix:
            CHECK_CODES.setdefault(_code, set()).add(_kind)


def _open_private_copy(path: str, data: bytes) -> tuple[ctypes.CDLL, Any]:
    """dlopen a private copy of the library read from ``path`` (its bytes: ``data``).

    The dynamic loader hands back the already-loaded object for a path (or file) it has seen,
    so a library re-exported at the same path would be served stale. The copy lives in an
    anonymous memory file (Linux ``memfd_create``, opened as ``/proc/self/fd/N`` and kept open
    while loaded, so that name is never reused meanwhile), else in a fresh temporary folder.
    Returns the CDLL and what ``_unload`` must free (the descriptor or the folder).
    """
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


def _zip_hint(path: str) -> str:
    """A hint when ``path`` is a zip archive (a checkpoint from model.save or a model file
    from save_model), which a library's load_weights cannot read; ``""`` otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return ""
    if head != b"PK\x03\x04":
        return ""
    return (
        "; it is a zip archive, a graphc checkpoint (model.save) or model file (save_model): "
        "a library reads the weights files that export(..., weights='file'), "
        "Library.weights_file_bytes and NAME_write_weights write; to move a Model's weights "
        "into it, lib.set_weights(model.get_weights())"
    )


class Library:
    """A loaded graphc library: ``predict``, ``train_step`` (when compiled), weights I/O.

    Attributes:
        name: the model's name (the C prefix).
        meta: the library's JSON description (entries, shapes, memory plan).
        params / state: name -> numpy view of each parameter / optimizer slot (writable, live:
            reading them while another thread runs ``train_step`` can mix two steps; take a
            snapshot with ``get_weights`` / ``weights_file_bytes``, write with ``set_weights``).
        lr: the learning rate ``train_step`` uses by default (the exported model's).
    """

    def __init__(self, path: str, name: str | None = None) -> None:
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise ArgumentError(f"load: no library at {path!r}")
        with open(path, "rb") as f:
            data = f.read()  # one read: the bytes checked are the bytes loaded
        if data[:4] != b"\x7fELF":
            raise ArgumentError(
                f"load: {path!r} is not a shared library. graphc.load opens libraries made by "
                "`graphc compile` or model.export(); to restore a checkpoint (.npz), build the "
                "model again and call model.load(path)"
            )
        built_for, here = elf_arch(data[:20]), host_arch().name
        if built_for is not None and built_for != here:
            raise ArgumentError(
                f"load: {path!r} was built for {built_for} (graphc compile --target); this "
                f"machine is {here}. Run it on the target machine (or a C program linked with "
                f"it under qemu-{built_for}); graphc.load opens libraries of this machine's "
                "architecture"
            )
        # The dynamic loader maps what the headers name without checking it against the file:
        # a truncated or damaged copy would end the process (SIGBUS) inside dlopen.
        problem = shared_object_problem(data) or checksum_problem(data)
        if problem is not None:
            raise ArgumentError(
                f"load: {path!r} ({len(data)} bytes) is not a well-formed shared library: "
                f"{problem}. The file is truncated or damaged (an interrupted copy or "
                "download?): export or copy it again"
            )
        if name is None:
            found = graphc_model_names(path)  # the name the library carries, whatever the file's
            m = re.fullmatch(r"lib(\w+?)(\.\w+)*\.so(\.\d+)*", os.path.basename(path))
            if len(found) != 1 and m is None:
                raise ArgumentError(
                    f"load: cannot tell the model name from {os.path.basename(path)!r}; pass name="
                )
            name = found[0] if len(found) == 1 else m.group(1)
        self.path, self.name = path, name
        self._digest = hashlib.sha256(data).hexdigest()  # what pickle / copy reload (checked)
        own_lock(self)  # calls share one workspace: they take turns
        try:
            self._lib, keep = _open_private_copy(path, data)
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
        abi = self.meta.get("graphc_abi")
        if type(abi) is not int or not 1 <= abi <= ABI_VERSION:
            raise ArgumentError(
                f"load: {path!r} was built for graphc's C ABI version {abi} and this graphc "
                f"reads versions 1 to {ABI_VERSION}: load it with the graphc that exported it "
                "(or a later one), or export the model again with this graphc"
            )
        # version 1 (graphc before 446dcc8) has unversioned names; its prototypes are version
        # 2's but for int32 / int64 outputs, whose dtype the meta gives (float32 before 897ed46)
        self.abi: int = abi
        self.lr = float(self.meta["lr"])
        self._layouts: dict[tuple, int] = {}  # call layouts that passed the checks once
        self._last_x: np.ndarray | None = None  # predict's last x and its address
        self._last_xp = 0
        self._step_x: np.ndarray | None = None  # train_step's last x, y and their addresses
        self._step_y: np.ndarray | None = None
        self._step_xp = self._step_yp = 0
        self._fns: dict[str, Any] = {}
        self._loss = DTYPE_INFO[
            (self.meta["entries"].get("train_step") or {}).get("lr_dtype") or "f32"
        ].ctype()
        self._lossp = ctypes.addressof(self._loss)
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
        self._ctxp = ctypes.addressof(self._ctx)  # the struct never moves
        self.params = WeightViews(
            {
                r["name"]: view(
                    self._params, r["offset"], tuple(r["shape"]), DTYPE_INFO[r["dtype"]].np
                )
                for r in self.meta["params"]
            },
            "library.params",
        )
        self.state = WeightViews(
            {
                r["name"]: view(
                    self._state, r["offset"], tuple(r["shape"]), DTYPE_INFO[r["dtype"]].np
                )
                for r in self.meta["state"]
            },
            "library.state",
        )
        # a library exported with weights="file" starts with zero params: refused by predict
        # and train_step until weights are loaded or written (see _check_weights_given)
        self._weights_pending = not self.meta.get("embed") and self._params.nbytes > 0
        rc = getattr(self._lib, abi_symbol(name, "init", abi))(ctypes.byref(self._ctx))
        if rc == WEIGHTS_CODE and self.meta.get("embed"):
            raise ArgumentError(
                f"load: the weights built into {path!r} fail their CRC-32 check: the library is "
                "damaged (a changed byte in a copy or on disk): export or copy it again"
            )
        if rc != 0:
            raise self._error("init", rc)

    @property
    def lr(self) -> float:
        """The learning rate ``train_step`` uses by default.

        Raises:
            ArgumentError: on assignment of NaN, +-Inf, a negative value or a non-number.
        """
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_lr(value)

    @property
    def threads(self) -> int:
        """Threads the library splits its large GEMMs over (``NAME_set_num_threads``; 1 by
        default, the same bits for any count)."""
        fn = getattr(self._lib, abi_symbol(self.name, "get_num_threads", self.abi), None)
        return int(fn()) if fn is not None else 1

    @threads.setter
    def threads(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ArgumentError(f"threads must be a positive int, got {n!r}")
        fn = getattr(self._lib, abi_symbol(self.name, "set_num_threads", self.abi), None)
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
        rc = getattr(self._lib, abi_symbol(self.name, fn, self.abi))(*args)
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
            size = self._lib[abi_symbol(self.name, "workspace_size", self.abi)]
            size.restype, size.argtypes = ctypes.c_int64, [ctypes.c_int64]
            nbytes = int(size(n))
            self._ws = aligned_empty(max(nbytes, 1), what=f"{self.name}'s workspace", rows=n)
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

    def _inputs(
        self, ports: list[dict], data: Any, what: str, allow_empty: bool = False
    ) -> tuple[list[np.ndarray], int]:
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
            a = input_array(p["name"], a)
            want_dtype = DTYPE_INFO[p["dtype"]].np
            if a.dtype.kind not in "iuf":  # no bool, complex, object or string arrays
                raise ArgumentError(
                    f"input {p['name']!r} expects numbers ({p['dtype']}), got dtype {a.dtype}"
                    + (label_dtype_hint(a) if p["dtype"] == "i32" else number_dtype_hint(a))
                )
            given = a.shape
            if p["dtype"] == "i32":  # whole-number floats as int64, as Model's calls take them
                a = class_ids(p["name"], a)
            ax = p["shape"].index("N") if "N" in p["shape"] else None  # N need not lead
            rows = a.shape[ax] if ax is not None and a.ndim > ax else 0
            want = self._shape(p, rows)
            if a.ndim == 1 and len(want) == 2 and want[1] == 1 and ax == 0:
                a = a.reshape(want)
            a = label_column(p["dtype"], a, want)  # Keras's sparse labels [N, 1] for [N]
            if a.shape != want or (n is not None and ax is not None and rows != n):
                raise ArgumentError(
                    f"input {p['name']!r} expects {TensorType(tuple(p['shape']), p['dtype'])}"
                    + (f" with N={n}" if n is not None else "")
                    + f", got an array of shape {given}"
                    + shape_hint(TensorType(tuple(p["shape"]), p["dtype"]), given, want, a)
                )
            if p["dtype"] == "i32" and a.dtype != np.int32 and a.size:
                # range before the cast: int64 2**32 + 3 must not wrap to class 3
                chk = p.get("check", ("", 0))
                lo, hi = (0, chk[1]) if chk[0] == "classes" else (-(2**31), 2**31)
                skip = chk[2] if chk[0] == "classes" and len(chk) > 2 else None
                err = label_error(p["name"], a, hi, lo, skip)
                if err is not None:
                    raise err
            n = rows if ax is not None else n
            out.append(
                cast_input(p["name"], a, want_dtype)
                if p["dtype"] != "i32"
                else np.asarray(a, dtype=want_dtype, order="C")
            )
        if n is None and arrays:
            n = 1  # no input has a batch axis
        if n is None or (n < 1 and not (allow_empty and n == 0)):
            raise ArgumentError(f"{what}: no rows")
        return out, n

    def _function(self, entry: str) -> Any:
        """``NAME_entry`` with its argument types (made once): pointers and lengths as ints."""
        fn = self._fns.get(entry)
        if fn is None:
            e = self._entry(entry)
            fn = self._lib[abi_symbol(self.name, entry, self.abi)]
            fn.restype = ctypes.c_int
            types = [ctypes.c_void_p, ctypes.c_int64]
            types += [ctypes.c_void_p, ctypes.c_int64] * len(e["inputs"])
            if entry == "train_step":
                types += [DTYPE_INFO[e["lr_dtype"]].ctype, ctypes.c_void_p]
            else:
                types += [ctypes.c_void_p, ctypes.c_int64] * len(e["outputs"])
            fn.argtypes = types
            self._fns[entry] = fn
        return fn

    def _failed(
        self, entry: str, rc: int, ports: list[dict], arrays: list, lr: float, outs: Any = ()
    ) -> Exception:
        """The exception for return code ``rc``: an input check names the input and its row;
        ERR_OVERLAP names the array (``arrays``, then ``outs``) and what it overlaps."""
        if rc == OVERLAP_CODE:
            found = self._overlapping(ports, arrays, list(outs))
            if found:
                return ArgumentError(f"{self.name}_{entry}: {found}; nothing was written")
        kinds = CHECK_CODES.get(rc, set())
        if "lr" in kinds:
            return ArgumentError(f"the learning rate must be finite and >= 0, got {lr!r}")
        if kinds:
            for p, a in zip(ports, arrays):
                chk = p.get("check")
                if chk and chk[0] in kinds:
                    low, note = (chk[2], chk[3]) if len(chk) > 3 else (None, "")
                    table = bool(chk[4]) if len(chk) > 4 else True
                    rows = np.moveaxis(np.asarray(a), p.get("batch_axis", 0), 0)  # N first
                    at = chk[5] if len(chk) > 5 else None  # a divisor's positions of 0
                    err = explain(chk[0], p["name"], rows, chk[1], note, low, table, at)
                    if "rejected by the native check" not in str(err):
                        return ArgumentError(f"{self.name}_{entry}: {err}")
        return self._error(entry, rc)

    def _overlapping(self, ports: list[dict], arrays: list, outs: list) -> str:
        """What the wrapper's ERR_OVERLAP found, in words: the first argument that shares
        memory with the parameters, the state or the workspace (naming the parameters or
        states), or an output sharing memory with another argument; "" when none does."""
        named = [(f"input {p['name']!r}", a) for p, a in zip(ports, arrays)]
        named += [("out" if len(outs) == 1 else f"out[{j}]", o) for j, o in enumerate(outs)]
        views = {**self.params, **self.state}
        for what, a in named:
            for region, r in (("parameters", self._params), ("state", self._state)):
                if np.may_share_memory(a, r):
                    names = [k for k, v in views.items() if np.may_share_memory(a, v)]
                    return (
                        f"{what} shares memory with the library's {region} "
                        f"({', '.join(map(repr, names)) or 'unnamed bytes'}): pass an array "
                        "of its own"
                    )
            if np.may_share_memory(a, self._ws):
                return f"{what} shares memory with the library's workspace"
        for i, (what, a) in enumerate(named):
            for other, b in named[:i]:
                if what.startswith("out") and np.may_share_memory(a, b):
                    return f"{what} overlaps {other}: each output needs an array of its own"
        return ""

    # ------------------------------------------------------------------ entries

    def __repr__(self) -> str:
        """One line, like a Model's: name, file, the infer entry's inputs and outputs (C names
        and types), the entries, the parameter count, threads."""

        def types(ports: list[dict[str, Any]]) -> str:
            return ", ".join(
                f"{p['cname']}: {p['dtype']}[{','.join(map(str, p['shape']))}]" for p in ports
            )

        entries = self.meta["entries"]
        infer = entries.get("infer") or {"inputs": [], "outputs": []}
        n = sum(int(np.prod(r["shape"], dtype=np.int64)) for r in self.meta["params"])
        return (
            f"<graphc.Library {self.name!r} {os.path.basename(self.path)} "
            f"({types(infer['inputs'])}) -> {types(infer['outputs'])}; {n:,} parameters; "
            f"entries {', '.join(entries)}; {self.threads} thread(s)>"
        )

    def predict(
        self, x: Any, *, batch_size: int = 1024, out: Any = None, verbose: Any = 0
    ) -> np.ndarray | dict[str, np.ndarray]:
        """``NAME_infer`` on every row of ``x`` (array or dict by input name), in blocks of
        ``batch_size`` rows when the library's outputs are row-wise (its ``rows_independent``
        flag, ``NAME_INFER_ROWS_INDEPENDENT`` in the header), else in one call.

        Args:
            x: the inputs.
            batch_size: rows per call (one call when some array lacks N first).
            out: an array (or a dict by output name) receiving the outputs: C-contiguous, the
                output's dtype and shape; by default a new array. Written once, in place
                (without ``out``, a single output of at most 4 KiB is written to a buffer of
                this Library's and copied: cheaper than taking a new array's address).
            verbose: accepted for Keras's ``predict(x, verbose=0)`` (as Model.predict);
                nothing is printed.

        Returns:
            the output array, or a dict by output name when there are several, in the
            dtype of its port (the header's argument type: ``float`` as float32, and an ONNX
            import's int32 / int64 outputs, ``int32_t *`` / ``int64_t *``, as int32 / int64).

        Raises:
            ArgumentError: a shape or dtype differs from the library's inputs, ``out`` does
                not fit, or the native input checks refuse a value (an index or divisor out of
                its range, a divisor holding 0), naming the input and the row.
            CheckpointError: a library exported with weights="file" whose weights were never
                loaded (its params are all zero).
        """
        with self._lock:  # (serialized, inline: the batch-1 call path counts every 0.1 us)
            if type(x) is np.ndarray and (out is None or type(out) is np.ndarray):
                key = ("infer", x.dtype, x.shape, x.strides)
                if out is not None:
                    key += (out.dtype, out.shape, out.strides, out.flags.writeable)
                known = self._layouts.get(key)
                if (
                    known is not None
                    and type(batch_size) is int
                    and known[0] <= batch_size
                    and known[0] <= self._ws_rows
                ):
                    return self._predict_known(x, out, known)
            else:
                key = None
            return self._predict(x, batch_size, out, key)

    def _predict_known(self, x: np.ndarray, out: np.ndarray | None, known: tuple) -> np.ndarray:
        """predict on arrays of a layout that passed the checks (``known``: rows, output
        shape and dtype, and an own output buffer when the output is small): one native call.
        The pointer of the last ``x`` is kept (and ``x`` with it, so it cannot move)."""
        n, shape, dtype, own = known
        if x is not self._last_x:
            self._last_xp, self._last_x = address(x), x
        if out is None:
            if own is not None:
                rc = self._fns["infer"](self._ctxp, n, self._last_xp, x.size, own[1], own[0].size)
                if rc != 0:
                    raise self._failed(
                        "infer", rc, self.meta["entries"]["infer"]["inputs"], [x], self.lr
                    )
                return own[0].copy()
            out = np.empty(shape, dtype)
        elif np.may_share_memory(out, x):
            raise ArgumentError("predict: out overlaps the input array")
        rc = self._fns["infer"](self._ctxp, n, self._last_xp, x.size, address(out), out.size)
        if rc != 0:
            ports = self.meta["entries"]["infer"]["inputs"]
            raise self._failed("infer", rc, ports, [x], self.lr, [out])
        return out

    def _predict(
        self, x: Any, batch_size: int, out: Any, key: tuple | None
    ) -> np.ndarray | dict[str, np.ndarray]:
        """predict's checked path; remembers ``key`` (the layout of x and out) when its
        arrays went to the native code as they are."""
        fn = self._fns.get("infer") or self._function("infer")
        e = self.meta["entries"]["infer"]
        if self._weights_pending:
            self._check_weights_given("predict")
        arrays, n = self._inputs(e["inputs"], x, "predict", allow_empty=True)
        batch_size = check_batch_size(batch_size)
        if n == 0:  # no rows: empty outputs (each with N first), no native call
            for p in e["outputs"]:
                if "N" not in p["shape"]:
                    raise ArgumentError(
                        f"predict: no rows, and output {p['name']!r} is computed over the "
                        "rows, not one value per row: pass at least one row"
                    )
        outs = self._outputs(e["outputs"], n, out, arrays)
        if n == 0:
            return outs[0] if len(outs) == 1 else self._keyed(e["outputs"], outs)
        # Rows are split into blocks only when the library says every output row depends on
        # its input row alone (graphc.ir.batch, the rule Model.predict follows); a library
        # without the flag (older graphc) or an output mixing rows: one call.
        if not e.get("rows_independent", False):
            batch_size = n
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            self._workspace(hi - lo)
            args: list[Any] = [ctypes.addressof(self._ctx), hi - lo]
            parts = [a[lo:hi] if hi - lo < n else a for a in arrays + outs]
            for part in parts:
                args += [address(part), part.size]
            rc = fn(*args)
            if rc != 0:
                raise self._failed("infer", rc, e["inputs"], arrays, self.lr, outs)
        if (
            key is not None
            and len(arrays) == len(outs) == 1
            and arrays[0] is x
            and (out is None or outs[0] is out)
        ):
            own = None
            if out is None and outs[0].nbytes <= COPY_OUTPUT_MAX:
                own = np.empty(outs[0].shape, outs[0].dtype)
                own = (own, own.ctypes.data)
            self._layouts[key] = (n, outs[0].shape, outs[0].dtype, own)
        return outs[0] if len(outs) == 1 else self._keyed(e["outputs"], outs)

    def _outputs(self, ports: list[dict], n: int, out: Any, arrays: list) -> list[np.ndarray]:
        """New output arrays, or the caller's ``out`` after its checks (buffers.output_arrays;
        a dict keyed by the header's names or the graph's)."""
        specs = [(self._shape(p, n), DTYPE_INFO[p["dtype"]].np) for p in ports]
        keys = self._output_keys(ports)
        out = out_by_key(out, keys, [p["name"] for p in ports])
        return output_arrays(out, keys, specs, arrays, "library")

    @staticmethod
    def _output_keys(ports: list[dict]) -> list[str]:
        """predict's key of each output port, as Model.output_keys: the graph's name, or for
        graphc's unnamed value (``'%7'``) the header's (``y0``)."""
        return [p["cname"] if p["name"].startswith("%") else p["name"] for p in ports]

    def _keyed(self, ports: list[dict], outs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Several outputs by _output_keys, answering to the graph's names too."""
        return keyed_outputs(self._output_keys(ports), [p["name"] for p in ports], outs)

    def train_step(self, x: Any, y: Any = None, *, lr: float | None = None) -> float:
        """One ``NAME_train_step`` on all rows of x (and labels y); returns the batch's loss.

        The library checks the values first (labels in range, no NaN/Inf, lr finite and
        >= 0) and writes nothing when one fails; int32 labels and float32 arrays in the
        library's layout are passed as they are (the layout checked once per shape).

        Raises:
            ArgumentError: a shape or dtype that does not fit; a label outside the classes
                (or, for int64 labels, outside int32) or a NaN/Inf row, naming the input and
                the row; a learning rate that is NaN, infinite or negative.
            CheckpointError: a library exported with weights="file" whose weights were never
                loaded (its params are all zero).
        """
        with self._lock:  # (serialized, inline: a small step's call counts every 0.1 us)
            if type(x) is np.ndarray and type(y) is np.ndarray:
                n = self._layouts.get(
                    ("train_step", x.dtype, x.shape, x.strides, y.dtype, y.shape, y.strides)
                )
                if n is not None and n <= self._ws_rows:
                    # a layout checked before: one native call, the last x's and y's pointers
                    # kept (and the arrays with them, so their memory cannot move)
                    if x is not self._step_x:
                        self._step_xp, self._step_x = address(x), x
                    if y is not self._step_y:
                        self._step_yp, self._step_y = address(y), y
                    rate = self._lr if lr is None else check_lr(lr)
                    rc = self._fns["train_step"](
                        self._ctxp,
                        n,
                        self._step_xp,
                        x.size,
                        self._step_yp,
                        y.size,
                        rate,
                        self._lossp,
                    )
                    if rc != 0:
                        ports = self.meta["entries"]["train_step"]["inputs"]
                        raise self._failed("train_step", rc, ports, [x, y], rate)
                    return float(self._loss.value)
            return self._train_step(x, y, lr)

    def _train_step(self, x: Any, y: Any, lr: float | None) -> float:
        """train_step's checked path; remembers the layout of x and y when they went to the
        native code as they are."""
        fn = self._fns.get("train_step") or self._function("train_step")
        e = self.meta["entries"]["train_step"]
        ports = e["inputs"]
        if self._weights_pending:
            self._check_weights_given("train_step")
        rate = self._lr if lr is None else check_lr(lr)
        loss = self._loss
        key = None
        if type(x) is np.ndarray and type(y) is np.ndarray and len(ports) == 2:
            key = ("train_step", x.dtype, x.shape, x.strides, y.dtype, y.shape, y.strides)
        xs, ys = x, y
        if not isinstance(x, dict):
            if y is None or len(ports) != 2:
                raise ArgumentError(
                    f"train_step: pass x and y, or a dict for inputs {[p['name'] for p in ports]}"
                )
            x = {ports[0]["name"]: x, ports[1]["name"]: y}
        elif y is not None:
            extra = y if isinstance(y, dict) else {ports[-1]["name"]: y}
            for k in x.keys() & extra.keys():  # (y's array was used silently)
                if x[k] is not extra[k]:
                    raise ArgumentError(
                        f"train_step: input {k!r} is given twice, in x and in y, as different "
                        "arrays; give it once"
                    )
            x = {**x, **extra}
        arrays, n = self._inputs(ports, x, "train_step")
        self._workspace(n)
        args: list[Any] = [ctypes.addressof(self._ctx), n]
        for a in arrays:
            args += [address(a), a.size]
        rc = fn(*args, rate, ctypes.addressof(loss))
        if key is not None and arrays[0] is xs and arrays[1] is ys:
            self._layouts[key] = n
        if rc != 0:
            raise self._failed("train_step", rc, ports, arrays, rate)
        return float(loss.value)

    # ------------------------------------------------------------------ weights

    def _check_weights_given(self, what: str) -> None:
        """For a library exported with weights="file": passes (for good) once its params hold
        anything but zeros (load_weights, or values written into ``params``), else raises
        CheckpointError: predicting or training with the zeros init leaves there is never
        what the caller meant (a forgotten ``weights=``)."""
        if np.any(self._params.view(np.uint8)):
            self._weights_pending = False
            return
        raise CheckpointError(
            f"{what}: the library {self.path!r} was exported with weights='file' and no weights "
            f"were loaded (its params are all zero): gc.load(path, weights=WEIGHTS_FILE) or "
            f"Library.load_weights(WEIGHTS_FILE) first"
        )

    @turned
    def load_weights(self, path: str) -> None:
        """``NAME_load_weights``: a checked weights file into the params.

        Raises:
            CheckpointError: the file is missing or rejected (size, header or checksum).
        """
        fn = self._lib[abi_symbol(self.name, "load_weights", self.abi)]
        rc = fn(ctypes.byref(self._ctx), os.fsencode(path))
        if rc != 0:
            raise CheckpointError(
                f"{path}: {ERROR_NAMES.get(rc, 'unknown')} (code {rc}){_zip_hint(path)}"
            )
        self._weights_pending = False

    @turned
    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of every parameter, then every state (optimizer slots, the step counter,
        batch_norm's running statistics), by name, taken under the library's lock: the values
        after some whole ``train_step`` of another thread, never a mix of two."""
        return {k: v.copy() for k, v in (*self.params.items(), *self.state.items())}

    @turned
    def set_weights(self, weights: dict[str, Any]) -> None:
        """Copy arrays into parameters / states by name (``get_weights``' names), all or none,
        between two ``train_step`` calls of other threads.

        Raises:
            ArgumentError: not a dict, a name the library lacks, another shape, or a value not
                convertible to the dtype (nothing is changed).
        """
        if not isinstance(weights, dict):
            raise ArgumentError(
                f"set_weights: expects a dict name -> array, got {type(weights).__name__}"
            )
        targets = {**self.params, **self.state}
        staged = [(k, param_value("set_weights", targets, k, v)) for k, v in weights.items()]
        for k, a in staged:
            targets[k][...] = a
        if any(k in self.params for k, _ in staged):
            self._weights_pending = False

    # ------------------------------------------------------------------ copies

    def __reduce__(self) -> tuple:
        """Pickle (and copy.copy / copy.deepcopy) as the library's path and the bytes of its
        params and state, lr and threads: unpickling loads the same file again (in this or
        another process of a machine that has it, e.g. a 'spawn' worker) into a Library with
        its own copy of the weights, independent of this one.

        Raises:
            GraphcError: the file at ``path`` is gone or no longer the one loaded (the
                message says what to do).
        """
        try:
            with open(self.path, "rb") as f:
                same = hashlib.sha256(f.read()).hexdigest() == self._digest
        except OSError:
            same = False
        if not same:
            raise GraphcError(
                f"cannot pickle or copy library {self.name!r}: it is copied by loading "
                f"{self.path!r} again, which is gone or has changed since it was loaded. Keep "
                "the file (or export it again and gc.load it), then copy; or save the weights "
                "with weights_file_bytes() and load them into a new gc.load(path)"
            )
        with self._lock:
            state = (
                self._params.tobytes(),
                self._state.tobytes(),
                self._lr,
                self.threads,
                self._weights_pending,
            )
        return (_library_from, (self.path, self.name, self._digest, *state))

    def __copy__(self) -> Library:
        """An independent library (as copy.deepcopy): its own weights and workspace."""
        import copy

        return copy.deepcopy(self)

    @turned
    def weights_file_bytes(self) -> bytes:
        """``NAME_write_weights``: the params as a weights file image (taken under the
        library's lock: the params after some whole ``train_step`` of another thread)."""
        size = self.meta["param_bytes"] + self._weights_header_bytes()
        buf = ctypes.create_string_buffer(size)
        self._call("write_weights", ctypes.byref(self._ctx), buf, ctypes.c_int64(size))
        return buf.raw

    def _weights_header_bytes(self) -> int:
        from graphc.codegen import aot

        return len(aot.weights_header(_plan_from_meta(self.meta)))


def _library_from(
    path: str,
    name: str,
    digest: str,
    params: bytes,
    state: bytes,
    lr: float,
    threads: int,
    pending: bool,
) -> Library:
    """A pickled Library (Library.__reduce__): ``path`` loaded again, checked to be the same
    file, with the weights, lr and threads it had.

    Raises:
        ArgumentError / GraphcError: the file is missing or another one than was pickled.
    """
    lib = Library(path, name)
    if lib._digest != digest:
        raise GraphcError(
            f"unpickling library {name!r}: {path!r} is not the file that was pickled (it has "
            "changed or this machine has another one): copy the same .so here"
        )
    np.copyto(lib._params, np.frombuffer(params, np.uint8))
    np.copyto(lib._state, np.frombuffer(state, np.uint8))
    lib.lr = lr
    if threads != 1:
        lib.threads = threads
    lib._weights_pending = pending
    return lib


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


def graphc_model_names(path: str) -> list[str]:
    """NAME of every ``NAME_graphc_meta`` function a 64-bit little-endian ELF shared library
    exports (its dynamic symbol table), read with bounds checks; [] for anything else."""
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except OSError:
        return []
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []

    def section(i: int) -> tuple[int, int, int, int] | None:
        off = shoff + i * shentsize
        if i < 0 or i >= shnum or off + 64 > len(data):
            return None
        (sh_type,) = struct.unpack_from("<I", data, off + 4)
        sh_offset, sh_size = struct.unpack_from("<QQ", data, off + 24)
        (sh_link,) = struct.unpack_from("<I", data, off + 40)
        return sh_type, sh_offset, sh_size, sh_link

    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if shentsize < 64:
        return []
    names = []
    for i in range(min(shnum, 4096)):
        sec = section(i)
        if sec is None or sec[0] != 11:  # SHT_DYNSYM
            continue
        strtab = section(sec[3])
        if strtab is None or sec[1] + sec[2] > len(data) or strtab[1] + strtab[2] > len(data):
            return []
        for off in range(sec[1], sec[1] + sec[2] - 23, 24):
            (st_name,) = struct.unpack_from("<I", data, off)
            (st_shndx,) = struct.unpack_from("<H", data, off + 6)
            start = strtab[1] + st_name
            end = data.find(b"\0", start, strtab[1] + strtab[2])
            if st_shndx == 0 or end < 0:
                continue
            sym = data[start:end].decode("ascii", "replace")
            if sym.endswith("_graphc_meta") and sym[: -len("_graphc_meta")].isidentifier():
                names.append(sym[: -len("_graphc_meta")])
    return names


def load(path: str, name: str | None = None, weights: str | None = None) -> Library:
    """Load a library made by ``graphc compile`` / ``Model.export``.

    Every call loads the file as it is now (a private copy: a library re-exported at the same
    path is never served from an earlier load), and the copy is unloaded when the returned
    Library is dropped.

    Args:
        path: the ``.so``.
        name: the model's name, the C prefix (default: the one NAME whose
            ``NAME_graphc_meta`` the library exports, else NAME of ``libNAME.so``).
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
