"""``graphc compile MODEL -o libNAME.so`` and ``Model.export``: a shared library, its C header
and (with ``weights="file"``) a checked weights file.

The library's kernels are those the JIT runs: the model's graphs go through the same
``compile_program`` again, only for the requested CPU and position-independent; see
``graphc.codegen.aot`` for the wrappers, the header and the weights file format.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.cli import int_in
from graphc.codegen import aot
from graphc.codegen.elf import with_checksum
from graphc.codegen.target import (
    ARCHES,
    Target,
    cpu_extensions,
    llvm_cpus,
    resolve_target,
    target_machine,
)
from graphc.codegen.toolchain import Toolchain, available_toolchains, find_toolchain
from graphc.ir.errors import ArgumentError, CodegenError
from graphc.runtime.checkpoint import check_file_name
from graphc.runtime.parallel import in_turn_of_first

from .compiler import SPLIT_ENTRIES, Program, compile_program
from .dsl import _user_stacklevel

EMITS = ("so", "obj", "a", "llvm", "asm")
EMIT_SUFFIXES = {".so": "so", ".o": "obj", ".a": "a", ".ll": "llvm", ".s": "asm"}
WEIGHTS_MODES = ("embed", "file")


class SplitEntriesWarning(UserWarning):
    """A library's train_grads / apply_update were exported for a model whose loss is no mean
    over the batch's rows: right in one process, not for data-parallel training."""


@dataclass
class ExportResult:
    """Paths written by an export (None where not written)."""

    library: str | None
    header: str | None
    weights: str | None
    llvm: str | None = None
    asm: str | None = None
    plan: aot.LibraryPlan | None = field(default=None, repr=False)


def find_c_compiler(cc: str | None = None) -> list[str]:
    """The C compiler command for this machine (``graphc.codegen.toolchain``'s order: ``cc``,
    ``$GRAPHC_CC``, ``$CC``, ``cc``, ...).

    Raises:
        TargetError (a GraphcError): none is found (the message says how to install one).
    """
    return list(find_toolchain(resolve_target(None), cc).cc)


def _recompile(model: Any, target_cpu: str | Target, split: bool = False) -> tuple[Program, Any]:
    """The model's program compiled again (same passes, same layout) for ``target_cpu``
    (``split``: with the entries train_grads and apply_update)."""
    src = model.program
    prog = Program(
        src.name,
        src.forward,
        src.training,
        src.inference,
        dict(src.grads),
        feature_inputs=list(src.feature_inputs),
        label_inputs=list(src.label_inputs),
        loss=src.loss,
        loss_kind=src.loss_kind,
        outputs=list(src.outputs),
        check_numerics=getattr(src, "check_numerics", False),  # the library checks NaN/Inf too
        split=dict(src.split) if split else {},
        split_note=src.split_note,
    )
    prog, mb = compile_program(
        prog,
        opt_level=src.opt_level,
        disabled_passes=src.disabled_passes,
        target_cpu=target_cpu,
    )
    if {k: (b.offset, b.size) for k, b in prog.layout.items()} != {
        k: (b.offset, b.size) for k, b in src.layout.items()
    }:
        raise CodegenError(
            f"export of {src.name!r}: the recompiled layout differs from the model's"
        )
    return prog, mb


def header_path_for(library: str) -> str:
    """The default header of a library: ``x.h`` beside ``x.so`` or ``libx.so``."""
    stem = os.path.basename(library).split(".")[0]
    if stem.startswith("lib") and len(stem) > 3:
        stem = stem[3:]
    return os.path.join(os.path.dirname(os.path.abspath(library)), f"{stem or 'model'}.h")


# model names whose NAME_OK would be <unistd.h>'s access() mode (F_OK, R_OK, W_OK, X_OK)
UNISTD_ACCESS_MODES = ("F", "R", "W", "X")


@in_turn_of_first  # the weights and states it embeds: after some whole step of another thread
def export_model(
    model: Any,
    path: str,
    *,
    header: str | None = None,
    entries: list[str] | tuple[str, ...] | str | None = None,
    weights: str = "embed",
    weights_path: str | None = None,
    target: str | None = None,
    target_cpu: str | None = None,
    features: str = "",
    emit: str | None = None,
    cc: str | None = None,
) -> ExportResult:
    """Write ``model`` as a shared library, an object file or static archive (to link into a
    bigger program), LLVM IR or assembly, for this machine or another one.

    Args:
        model: a compiled graphc Model; its current parameters are the library's weights.
        path: the output file (``libNAME.so``, ``NAME.o``, ``libNAME.a``, ``.ll``, ``.s``).
        header: the C header's path (default: named after the library, ``x.h`` next to
            ``x.so`` or ``libx.so``).
        entries: "infer", "train_step", "train_grads", "apply_update" (the last two: the
            training step split around an all-reduce for data-parallel training; see the
            header) in a list or a comma-separated string (default: infer and train_step when
            the model has a loss).
        weights: "embed" (read-only data inside the library) or "file" (a checked weights file
            ``weights_path``, default ``NAME.weights`` next to ``path``).
        target: the triple to build for (``aarch64-linux-gnu``, ``x86_64-linux-gnu``, ...;
            default: this machine; ``graphc targets`` lists them).
        target_cpu: "native" (this machine's CPU; the default on this machine's architecture),
            "x86-64", "x86-64-v2/v3/v4", or an LLVM CPU name of the target (``cortex-a72``,
            ``neoverse-n1``; default on another architecture: its generic CPU).
        features: LLVM CPU features to add or remove ("+avx2,-avx512f").
        emit: "so" (shared library), "obj" (one relocatable object: kernels and C API), "a"
            (static archive of it), "llvm" (optimized LLVM IR text) or "asm"; default from
            ``path``'s suffix (.o, .a, .ll, .s), else "so".
        cc: the C compiler command (default: ``graphc.codegen.toolchain``'s search).

    Returns:
        ExportResult with the paths written.

    Raises:
        ArgumentError: a bad option value, a model named f, r, w or x (any case: the header's
            NAME_OK would be <unistd.h>'s access() mode), a ``path`` named like another
            framework's file
            (.h5, .keras, .onnx, .pt, ...: runtime.checkpoint.check_file_name), or a file
            cannot be written (the disk is full, the
            folder is read-only, ...; naming the file and the errno): the files that were there
            are then intact and no temporary file stays. TargetError: an unknown target, CPU or
            feature, or no C toolchain for the target. CodegenError: LLVM or the C compiler
            failed (with its message).
    """
    prog0 = model.program
    name = prog0.name
    if name.upper() in UNISTD_ACCESS_MODES:  # only the C header clashes: the JIT has no macros
        raise ArgumentError(
            f"export: model name {name!r}: its C header's success code {name.upper()}_OK is "
            f"<unistd.h>'s access() mode {name.upper()}_OK, which the library and its users "
            "include, so every call would seem to fail. Compile the model again under a longer "
            "name (gc.compile(..., name=...)) and copy the weights over "
            "(new.set_weights(model.get_weights())); nothing was written"
        )
    model._no_constant_outputs("export")  # predict adds them: the library would lack them
    terms = sorted(model.output_row_terms)
    if terms:  # predict adds them after the native call: the library's rows would be wrong
        raise ArgumentError(
            f"export: model {name!r}'s output(s) {', '.join(terms)} (an ONNX import's "
            "MaxPool Indices) get the batch row term n * C * P added by predict after the "
            "native call, which a library cannot do: its rows from 1 on would be wrong. "
            "Import the file without those outputs (from_onnx(..., outputs=[...])) to "
            "export it, or use model.to_onnx, which writes the term; nothing was written"
        )
    if isinstance(entries, str):
        entries = [e.strip() for e in entries.split(",") if e.strip()]
    if entries is None:
        entries = ["infer"] + (["train_step"] if prog0.training is not None else [])
    entries = list(dict.fromkeys(entries))
    loss_note = getattr(prog0, "loss_note", "")
    for e in entries:
        if e not in aot.PUBLIC_ENTRIES:
            raise ArgumentError(
                f"--entry: unknown entry {e!r}; choose from {', '.join(aot.PUBLIC_ENTRIES)}"
            )
        if e in aot.TRAIN_ENTRIES and prog0.training is None:
            raise ArgumentError(
                f"--entry {e}: model {name!r} was compiled without a loss, so it has no "
                f"training entries: build the inference entry only (--entry infer; "
                f"entries='infer' in model.export), or compile the model with a loss"
            )
        if e in SPLIT_ENTRIES and not prog0.split:
            raise ArgumentError(f"--entry {e}: not compiled for this model ({prog0.split_note})")
        # batch statistics make the split entries wrong in one process too; a loss that is
        # no row mean only across ranks (warned below)
        if e in SPLIT_ENTRIES and (note := getattr(prog0, "ranks_note", "")) and note != loss_note:
            raise ArgumentError(
                f"--entry {e}: this model's split step is for data-parallel training, which it "
                f"cannot do: {prog0.ranks_note}"
            )
    split = [e for e in entries if e in SPLIT_ENTRIES]
    if split and loss_note:
        warnings.warn(
            f"{name}: {' and '.join(split)} give one process's step (train_grads with "
            f"loss_scale 1, then apply_update, is train_step), but not data-parallel "
            f"training's: {loss_note}",
            SplitEntriesWarning,
            stacklevel=_user_stacklevel(),
        )
    if not entries:
        raise ArgumentError("--entry: give at least one of infer, train_step")
    if weights not in WEIGHTS_MODES:
        raise ArgumentError(f"--weights must be embed or file, got {weights!r}")
    check_file_name(
        path,
        f"native code ({emit or 'a shared library'})",
        "export",
        "Name it libNAME.so (or .o, .a, .ll, .s); model.to_onnx writes an ONNX file",
        ArgumentError,
    )
    if emit is None:
        emit = EMIT_SUFFIXES.get(os.path.splitext(path)[1], "so")
    if emit not in EMITS:
        raise ArgumentError(f"--emit must be one of {', '.join(EMITS)}, got {emit!r}")
    tgt = resolve_target(target, target_cpu, features)
    tools = find_toolchain(tgt, cc) if emit in ("so", "obj", "a") else None

    prog, mb = _recompile(model, tgt, split=bool(set(SPLIT_ENTRIES) & set(entries)))
    for e in entries:
        if e in SPLIT_ENTRIES and e not in prog.schedules:  # schedule_split said why not
            raise ArgumentError(f"--entry {e}: not compiled for this model ({prog.split_note})")
    src = prog.training or prog.forward
    state_init = _initial_state(model)
    plan = aot.plan_library(
        name,
        prog.schedules,
        prog.layout,
        prog.grads,
        src,
        prog.param_bytes,
        prog.state_bytes,
        entries,
        embed=weights == "embed",
        target_cpu=tgt.cpu,
        lr=float(model.lr),
        loss_kind=prog.loss_kind,
        state_init=state_init if any(state_init) else None,
        check_numerics=bool(getattr(prog, "check_numerics", False)),
        target=tgt.triple,
        cpu_checks=cpu_extensions(tgt),
        input_checks=prog.input_checks,
        outputs=prog.outputs,
        declared=_declared_outputs(model),
        # an ONNX import's inputs / outputs whose batch axis is not first: the library takes
        # and returns them in the file's layout, as predict does (aot._c_moves)
        input_axes=dict(getattr(model, "input_batch_axes", {})),
        output_axes=dict(getattr(model, "output_batch_axes", {})),
    )
    if getattr(model, "_batch_norms", None):  # batch statistics: a 1-row batch is refused
        plan.min_train_rows = 2
    params = model._param_region.tobytes()
    tm = target_machine(tgt, pic=True)
    embedded = aot.params_little_endian(plan, params) if plan.embed else None
    mod = aot.object_module(mb.module, plan, tm, embedded)
    out = os.path.abspath(path)
    if emit == "llvm":
        write_all_or_nothing([(out, str(mod).encode(), 0o644)])
        return ExportResult(None, None, None, llvm=out, plan=plan)
    if emit == "asm":
        write_all_or_nothing([(out, tm.emit_assembly(mod).encode(), 0o644)])
        return ExportResult(None, None, None, asm=out, plan=plan)

    import graphc

    hpath = os.path.abspath(header) if header else header_path_for(out)
    htext = aot.c_header(plan, graphc.__version__)
    wpath = None
    try:  # the build folder (under TMPDIR): a full disk there is the user's error, not ours
        with tempfile.TemporaryDirectory(prefix=f"graphc-{name}-") as tmp:
            obj = os.path.join(tmp, f"{name}_kernels.o")
            with open(obj, "wb") as f:
                f.write(tm.emit_object(mod))
            hname = os.path.basename(hpath)
            with open(os.path.join(tmp, hname), "w") as f:
                f.write(htext)
            lib_tmp = os.path.join(tmp, os.path.basename(out))
            csrc = os.path.join(tmp, f"{name}_api.c")
            with open(csrc, "w") as f:
                f.write(aot.c_source(plan, hname))
            _link(tools, tgt, emit, name, tmp, csrc, obj, lib_tmp)
            with open(lib_tmp, "rb") as f:
                lib = f.read()
    except OSError as e:
        raise ArgumentError(
            f"export {out!r}: cannot write its build files in the temporary folder "
            f"{e.filename or tempfile.gettempdir()!r} ({os_error_text(e)}); nothing was written"
        ) from None
    # graphc.load checks the library against this CRC-32 before the dynamic loader maps it
    files = [(out, with_checksum(lib), 0o755) if emit == "so" else (out, lib, 0o644)]
    files.append((hpath, htext.encode(), 0o644))
    if not plan.embed:
        wpath = (
            os.path.abspath(weights_path)
            if weights_path
            else os.path.join(os.path.dirname(out), f"{name}.weights")
        )
        files.append((wpath, aot.weights_file_bytes(plan, params), 0o644))
    _refuse_one_path_twice(out, files, ("library", "header", "weights file"))
    write_all_or_nothing(files)
    return ExportResult(out, hpath, wpath, plan=plan)


def _refuse_one_path_twice(
    out: str, files: list[tuple[str, bytes, int]], roles: tuple[str, ...]
) -> None:
    """Refuse an export whose files would land on one path (``export("iris.h")``: the header
    would replace the library written there), before anything is written.

    Raises:
        ArgumentError: two of ``files`` have one path, naming their ``roles`` and the path.
    """
    seen: dict[str, tuple[str, str]] = {}
    for (p, _, _), role in zip(files, roles, strict=False):
        key = os.path.realpath(p)  # one file through a symlinked folder or "..": one path
        if key in seen:
            first, where = seen[key]
            same = repr(p) if where == p else f"{where!r} and {p!r} (one file)"
            raise ArgumentError(
                f"export {out!r}: the {first} and the {role} would both be written to {same}; "
                "name the library libNAME.so (its header NAME.h goes beside it), or give the "
                "header or weights another path; nothing was written"
            )
        seen[key] = (role, p)


def os_error_text(e: OSError) -> str:
    """``e`` as ``"EFBIG: File too large"`` (the errno's name and the OS's words)."""
    import errno

    code = errno.errorcode.get(e.errno or 0, f"errno {e.errno}") if e.errno else "no errno"
    return f"{code}: {e.strerror or e}"


def write_all_or_nothing(files: list[tuple[str, bytes, int]]) -> None:
    """Write every (path, data, mode) or none: each goes to a temporary file beside its target
    first (created with ``mode`` under the umask); only when all are written are they renamed
    over their targets, and a failed rename puts the files it replaced back.

    Raises:
        ArgumentError: a file cannot be written (its folder is missing or read-only, the
            disk is full, ...); every target is then as it was.
    """
    temps: list[tuple[str, str]] = []
    try:
        for path, data, mode in files:
            folder = os.path.dirname(path)
            try:
                os.makedirs(folder, exist_ok=True)
                tmp = os.path.join(
                    folder, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
                )
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
                temps.append((tmp, path))
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except OSError as e:
                raise ArgumentError(
                    f"export: cannot write {path!r} ({os_error_text(e)}); nothing was written"
                ) from None
        backups: list[tuple[str, str | None]] = []  # (target, backup of the file it replaced)
        try:
            for tmp, path in temps:
                backup = None
                if os.path.lexists(path):
                    backup = tmp + ".old"
                    try:
                        os.link(path, backup)
                    except OSError:
                        backup = None
                os.replace(tmp, path)
                backups.append((path, backup))
        except OSError as e:
            for path, backup in reversed(backups):
                try:
                    if backup is not None:
                        os.replace(backup, path)
                    else:
                        os.unlink(path)
                except OSError:
                    pass
            raise ArgumentError(
                f"export: cannot replace {path!r} ({os_error_text(e)}); the earlier files are back"
            ) from None
        for _, backup in backups:
            if backup is not None:
                try:
                    os.unlink(backup)
                except OSError:
                    pass
    finally:
        for tmp, _ in temps:
            if os.path.lexists(tmp):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def _wrapper_flags(tgt: Target) -> list[str]:
    """C compiler flags that keep the C wrappers within the architecture's baseline, whatever
    the kernels' CPU is: their cpu_supported() check must run on every CPU of the
    architecture to return ERR_CPU (a compiler given -march=x86-64-v4 or -mcpu=a64fx could put
    AVX-512 or SVE into it: SIGILL instead). On x86 that is named explicitly (a compiler whose
    default is newer would put AVX into a baseline library); elsewhere it is the compiler's
    default, with no CPU tuning either (a cross gcc does not know every CPU name LLVM knows:
    -mtune=neoverse-v2 is an error for gcc 12, and the wrappers' speed does not matter)."""
    if tgt.arch.name == "x86_64":
        return ["-march=x86-64", "-mtune=generic"]
    return []


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode != 0:
        raise CodegenError(f"{what} failed: {' '.join(cmd)}\n{res.stderr.strip()}")


def _link(
    tools: Toolchain | None,
    tgt: Target,
    emit: str,
    name: str,
    tmp: str,
    csrc: str,
    obj: str,
    out: str,
) -> None:
    """Compile the C wrappers and link them with the kernels' object into ``out``: a shared
    library (internal calls bound inside it: -Bsymbolic), one relocatable object, or a static
    archive of that object."""
    assert tools is not None
    cc = list(tools.cc)
    common = ["-std=c99", "-O2", "-fPIC", "-pthread", "-fvisibility=hidden", "-Wall", "-Wextra"]
    common += _wrapper_flags(tgt)
    if emit == "so":
        # -Bsymbolic: the library's own calls (its destructor's NAME_set_num_threads) bind to
        # its own definitions, never to a same-named library loaded before it.
        cmd = cc + common + ["-shared", "-Wl,-Bsymbolic", "-I", tmp, "-o", out, csrc, obj, "-lm"]
        _run(cmd, f"linking lib{name}.so for {tgt.triple} with {tools}")
        return
    api_o = os.path.join(tmp, f"{name}_api.o")
    _run(cc + common + ["-c", "-I", tmp, "-o", api_o, csrc], f"compiling {name}'s C API")
    merged = out if emit == "obj" else os.path.join(tmp, f"{name}.o")
    _run(cc + ["-r", "-nostdlib", "-o", merged, api_o, obj], f"linking {name}.o with {tools}")
    if emit == "a":
        if os.path.exists(out):
            os.unlink(out)  # ar adds to an existing archive
        _run(list(tools.ar) + ["rcs", out, merged], f"archiving lib{name}.a")


def _initial_state(model: Any) -> bytes:
    """The state region's image for the library: the optimizer state right after
    initialization (zeros for SGD/Adam slots), except the states that inference reads (e.g.
    batch_norm's running statistics), which are part of the trained model: their current values.
    """
    from graphc.init import initialize

    region = np.zeros(model._state_region.nbytes, dtype=np.uint8)
    model_state = {n.name for n in model.program.inference.nodes if n.op == "state"}
    for n in model.state_nodes:
        args = dict(n.attr("init_args", ()))
        arr = (
            model.state[n.name]
            if n.name in model_state
            else initialize(
                n.attr("init", "zeros"),
                n.type.concrete(1),
                np.random.default_rng([model.seed, 0]),
                n.type.np_dtype,
                **args,
            )
        )
        off = model.program.layout[n.name].offset
        region[off : off + arr.nbytes] = np.frombuffer(
            np.ascontiguousarray(arr).tobytes(), np.uint8
        )
    return region.tobytes()


def _declared_outputs(model: Any) -> dict[str, str]:
    """The outputs an ONNX import declares int32 or int64 (Model.output_dtypes): the library
    returns them as int32_t / int64_t, converted from the float32 whole numbers the kernels
    compute as predict converts them (runtime.model.as_declared); other declared types (bool,
    8- and 16-bit, unsigned) stay float32 whole numbers in the library."""
    names = {np.dtype(np.int32): "i32", np.dtype(np.int64): "i64"}
    out = {}
    for k, dt in model.output_dtypes.items():
        if np.dtype(dt) in names:
            out[k] = names[np.dtype(dt)]
    return out


@in_turn_of_first
def write_weights(model: Any, path: str) -> str:
    """Write the model's current parameters as a weights file a library with ``--weights file``
    (or any library of this model) reads with ``NAME_load_weights``.

    Raises:
        ArgumentError: the file cannot be written (naming it and the errno); the file that was
            there is then intact (``write_all_or_nothing``).
    """
    prog = model.program
    src = prog.training or prog.forward
    plan = aot.plan_library(
        prog.name,
        {},
        prog.layout,
        {},
        src,
        prog.param_bytes,
        prog.state_bytes,
        [],
        embed=False,
        target_cpu="",
        lr=0.0,
        loss_kind=None,
        state_init=None,
    )
    write_all_or_nothing(
        [
            (
                os.path.abspath(path),
                aot.weights_file_bytes(plan, model._param_region.tobytes()),
                0o644,
            )
        ]
    )
    return path


# ---------------------------------------------------------------------------- command line


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile",
        help="compile MODEL ahead of time into a shared library and C header",
        description="Compile MODEL into libNAME.so + NAME.h for C programs.",
    )
    p.add_argument(
        "model",
        help="path/to/file.py:name (a Model with its weights; or a Graph, Tensor, an (outputs, "
        "loss[, optimizer]) tuple or dict, or a function returning one: weights freshly "
        "initialized with --seed), model.onnx (weights from the file), or a model file "
        "model.gcm (Model.save_model, its trained weights)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="the library (libNAME.so; or .o, .a), the .ll/.s file, or FILE.onnx (an ONNX model)",
    )
    p.add_argument(
        "--header",
        help="the C header's path (default: named after the library: -o libx.so or -o x.so "
        "gives x.h next to it)",
    )
    p.add_argument(
        "--entry",
        default=None,
        help="comma-separated: infer,train_step,train_grads,apply_update (default: infer and "
        "train_step when the model has a loss; train_grads,apply_update: the step split "
        "around an all-reduce, see examples/c/mpi_train.c)",
    )
    p.add_argument(
        "--weights",
        choices=WEIGHTS_MODES,
        default="embed",
        help="embed the weights as read-only data (default) or write NAME.weights",
    )
    p.add_argument(
        "--weights-path",
        help="where --weights file writes (default: NAME.weights next to the library)",
    )
    p.add_argument(
        "--target",
        default=None,
        metavar="TRIPLE",
        help="build for another machine: x86_64-linux-gnu, aarch64-linux-gnu, ... "
        "(default: this one; `graphc targets` lists them)",
    )
    p.add_argument(
        "--target-cpu",
        default=None,
        metavar="CPU",
        help="native (default on this machine's architecture), x86-64, x86-64-v2, x86-64-v3, "
        "x86-64-v4, or an LLVM CPU name of the target (cortex-a72, neoverse-n1; default on "
        "another architecture: generic)",
    )
    p.add_argument(
        "--features",
        default="",
        metavar="+F,-G",
        help="LLVM CPU features to add (+name) or remove (-name)",
    )
    p.add_argument(
        "--emit",
        choices=(*EMITS, "onnx"),
        default=None,
        help="so: shared library; obj: one object file (kernels and C API) to link into a "
        "program; a: static archive; llvm: optimized LLVM IR; asm: assembly; onnx: an ONNX "
        "model of the inference graph with the weights (default: from the output's suffix, "
        "else so)",
    )
    p.add_argument(
        "--opset",
        type=int,
        default=None,
        metavar="N",
        help="with --emit onnx: the ONNX opset to write (13 to the newest the installed onnx "
        "package defines and onnxruntime loads; default 17)",
    )
    p.add_argument(
        "--cc",
        default=None,
        metavar="CMD",
        help="the C compiler that links the library (default: $GRAPHC_CC, then for this "
        "machine $CC and cc, then TRIPLE-gcc, clang + lld, the ziglang wheel)",
    )
    p.add_argument(
        "--seed",
        type=int_in(0, 2**64),
        default=0,
        help="initialization seed when MODEL is not a Model (an int in [0, 2**64))",
    )
    p.add_argument(
        "-O",
        "--opt-level",
        dest="opt_level",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="optimization level (2), as for graphc dump",
    )
    p.add_argument(
        "--check-numerics",
        action="store_true",
        help="compile NaN/Inf checks after every kernel into the library (entries "
        "then return 1000 + site at the first NaN/Inf; off by default)",
    )
    p.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=SIZE",
        help="for an ONNX MODEL: the size of a symbolic dimension after the batch, by its "
        "name (from_onnx's dims; e.g. --dim seq=128), or NAME=N for the one that is the batch "
        "(an input [1, batch, seq]: --dim batch=N --dim seq=128); may be repeated",
    )
    p.set_defaults(run=run)


def parse_dims(items: list[str], model: str) -> dict[str, int | str] | None:
    """--dim NAME=SIZE (or NAME=N: the batch) options as from_onnx's ``dims`` (None when none
    is given).

    Raises:
        ArgumentError: an item not of the form NAME=SIZE with SIZE an int >= 1 or N, or --dim
            with a MODEL that is no ONNX file.
    """
    if not items:
        return None
    if not model.lower().endswith(".onnx"):
        raise ArgumentError(
            f"--dim {items[0]}: only an ONNX MODEL has symbolic dimensions to fix ({model})"
        )
    dims: dict[str, int | str] = {}
    for item in items:
        name, eq, size = item.partition("=")
        if eq and name and size.strip() == "N":
            dims[name] = "N"
            continue
        if not (eq and name and size.strip().isdigit() and int(size) >= 1):
            raise ArgumentError(f"--dim {item!r}: give NAME=SIZE with SIZE an int >= 1, or NAME=N")
        dims[name] = int(size)
    return dims


def model_from_spec(spec: Any, *, seed: int = 0, opt_level: int = 2) -> Any:
    """A Model from a resolved MODEL argument (tensors are compiled with ``seed``)."""
    from .api import compile as gc_compile

    if spec.model is not None:
        return spec.model
    if spec.onnx is not None:  # with the file's output types and layouts, as from_onnx's
        return spec.onnx.compile(seed=seed, opt_level=opt_level)
    if spec.graph is not None:
        raise ArgumentError(
            f"{spec.name}: graphc compile needs a Model or tensors (outputs, loss), "
            "not a bare Graph"
        )
    return gc_compile(
        spec.outputs, spec.loss, spec.optimizer, name=spec.name, seed=seed, opt_level=opt_level
    )


# graphc compile's options that only a native output (library, object, archive, IR, assembly)
# uses, with their defaults: given with ONNX output they would be ignored without a word.
_NATIVE_ONLY = (
    ("--header", "header", None),
    ("--entry", "entry", None),
    ("--weights", "weights", "embed"),
    ("--weights-path", "weights_path", None),
    ("--target", "target", None),
    ("--target-cpu", "target_cpu", None),
    ("--features", "features", ""),
    ("--cc", "cc", None),
    ("--check-numerics", "check_numerics", False),
)


def check_output_options(args: argparse.Namespace) -> bool:
    """Whether graphc compile writes ONNX (--emit onnx, or no --emit and -o FILE.onnx); raises
    ArgumentError, before anything is compiled, for an option that the chosen output kind
    does not use (--opset without ONNX output; --target, --entry, ... with it)."""
    onnx_out = args.emit == "onnx" or (args.emit is None and args.output.endswith(".onnx"))
    if onnx_out:
        given = [flag for flag, dest, default in _NATIVE_ONLY if getattr(args, dest) != default]
        if given:
            raise ArgumentError(
                f"{', '.join(given)}: not used when writing ONNX ({args.output}): these options "
                "build a native library; leave them out, or drop --emit onnx and name the "
                "output libNAME.so (or .o, .a, .ll, .s)"
            )
    elif args.opset is not None:
        raise ArgumentError(
            f"--opset {args.opset}: only ONNX output has an opset, and {args.output} is "
            f"written as --emit {args.emit or 'so'}; add --emit onnx or name the output "
            "FILE.onnx"
        )
    return onnx_out


def run(args: argparse.Namespace) -> int:
    from .modelspec import resolve

    onnx_out = check_output_options(args)
    spec = resolve(args.model, dims=parse_dims(getattr(args, "dim", []), args.model))
    if not onnx_out and str(spec.name).upper() in UNISTD_ACCESS_MODES:
        # export_model refuses it too, but its way out is Python's: say the command line's
        if args.model.lower().endswith(".onnx"):
            how = (
                "an ONNX file's model is named after the file: copy it under a longer name "
                f"(cp {args.model} "
                f"{os.path.join(os.path.dirname(args.model), str(spec.name) + '_net.onnx')})"
            )
        elif args.model.endswith(".gcm"):
            how = (
                "the model file keeps the name it was compiled under: in Python, compile the "
                "network under a longer name (gc.compile(..., name=...)), copy the weights "
                "(set_weights) and save_model it again"
            )
        else:
            how = "give it a longer name (gc.compile(..., name=...), or a longer NAME in MODEL)"
        raise ArgumentError(
            f"model name {spec.name!r} (from {args.model}): its C header's success code "
            f"{str(spec.name).upper()}_OK would be <unistd.h>'s access() mode, which the "
            f"library and its users include, so every call would seem to fail; {how}. Nothing "
            "was compiled or written"
        )
    model = model_from_spec(spec, seed=args.seed, opt_level=args.opt_level)
    if getattr(args, "check_numerics", False):
        model.program.check_numerics = True  # read by _recompile: the library gets the checks
    if onnx_out:
        print(f"onnx: {model.to_onnx(args.output, opset=args.opset)}")
        return 0
    res = export_model(
        model,
        args.output,
        header=args.header,
        entries=args.entry,
        weights=args.weights,
        weights_path=args.weights_path,
        target=args.target,
        target_cpu=args.target_cpu,
        features=args.features,
        emit=args.emit,
        cc=args.cc,
    )
    for label, p in (
        ("library", res.library),
        ("header", res.header),
        ("weights", res.weights),
        ("llvm", res.llvm),
        ("asm", res.asm),
    ):
        if p:
            print(f"{label}: {p}")
    return 0


def add_targets_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "targets",
        help="list the target triples (and CPUs) this installation can build for",
        description="List the triples graphc compile --target accepts, the C toolchain each "
        "would link with, and the triples graphc cannot build for (and why).",
    )
    p.add_argument(
        "--cpus", metavar="TRIPLE", default=None, help="list the CPU names of one triple"
    )
    p.set_defaults(run=run_targets)


def run_targets(args: argparse.Namespace) -> int:
    from graphc.codegen.target import host_arch

    if args.cpus:
        tgt = resolve_target(args.cpus)
        names = sorted(llvm_cpus(tgt.llvm_triple))
        if tgt.arch.name == "x86_64":
            names = ["x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"] + names
        if tgt.is_host:
            names = ["native"] + names
        print("\n".join(names))
        return 0
    tools = available_toolchains()
    host = host_arch().triple
    print("supported (triple, default CPU, C toolchain):")
    for a in ARCHES.values():
        if not a.supported:
            continue
        t = tools.get(a.triple)
        cpu = "native" if a.triple == host else a.default_cpu
        where = (
            str(t) if t else f"none found: apt-get install {a.packages} (or pip install ziglang)"
        )
        mark = "  (this machine)" if a.triple == host else ""
        print(f"  {a.triple:24} {cpu:12} {where}{mark}")
    bad = [a for a in ARCHES.values() if not a.supported]
    if bad:
        print("not supported:")
        for a in bad:
            print(f"  {a.triple:24} {a.unsupported}")
    return 0
