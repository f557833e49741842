"""``graphc compile MODEL -o libNAME.so`` and ``Model.export``: a shared library, its C header
and (with ``weights="file"``) a checked weights file.

The library's kernels are those the JIT runs: the model's graphs go through the same
``compile_program`` again, only for the requested CPU and position-independent; see
``graphc.codegen.aot`` for the wrappers, the header and the weights file format.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.codegen import aot
from graphc.codegen.target import CPU_PRESETS, target_machine
from graphc.ir.errors import ArgumentError, CodegenError, GraphcError

from .compiler import Program, compile_program

EMITS = ("obj", "llvm", "asm")
WEIGHTS_MODES = ("embed", "file")


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
    """The C compiler command: ``cc`` if given, else ``$CC``, else ``cc`` on PATH.

    Raises:
        GraphcError: none is found (the message says how to install one).
    """
    spec = cc or os.environ.get("CC") or "cc"
    argv = shlex.split(spec)
    if not argv or shutil.which(argv[0]) is None:
        where = f"CC={os.environ['CC']!r}" if os.environ.get("CC") and not cc else f"{spec!r}"
        raise GraphcError(
            f"no C compiler found ({where} is not on PATH): graphc needs one to link the shared "
            "library. Install one (Debian/Ubuntu: apt-get install gcc; Fedora: dnf install gcc; "
            "macOS: xcode-select --install) or set $CC to a compiler's path; --emit llvm or asm "
            "needs none"
        )
    return argv


def _recompile(model: Any, target_cpu: str) -> tuple[Program, Any]:
    """The model's program compiled again (same passes, same layout) for ``target_cpu``."""
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
    )
    prog, mb = compile_program(prog, opt_level=src.opt_level, target_cpu=target_cpu)
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


def export_model(
    model: Any,
    path: str,
    *,
    header: str | None = None,
    entries: list[str] | tuple[str, ...] | str | None = None,
    weights: str = "embed",
    weights_path: str | None = None,
    target_cpu: str = "native",
    emit: str = "obj",
    cc: str | None = None,
) -> ExportResult:
    """Write ``model`` as a shared library (``emit="obj"``), LLVM IR or assembly.

    Args:
        model: a compiled graphc Model; its current parameters are the library's weights.
        path: the output file (``libNAME.so`` for a library).
        header: the C header's path (default: named after the library, ``x.h`` next to
            ``x.so`` or ``libx.so``).
        entries: "infer", "train_step" or both (default: both when the model has a loss).
        weights: "embed" (read-only data inside the library) or "file" (a checked weights file
            ``weights_path``, default ``NAME.weights`` next to ``path``).
        target_cpu: "native", "x86-64", "x86-64-v2/v3/v4" or an LLVM CPU name.
        emit: "obj" (the library), "llvm" (optimized LLVM IR text) or "asm".
        cc: the C compiler command (default ``$CC`` or ``cc``).

    Returns:
        ExportResult with the paths written.

    Raises:
        ArgumentError: a bad option value. GraphcError: no C compiler. CodegenError: LLVM or
            the C compiler failed (with its message).
    """
    prog0 = model.program
    name = prog0.name
    if isinstance(entries, str):
        entries = [e.strip() for e in entries.split(",") if e.strip()]
    if entries is None:
        entries = ["infer"] + (["train_step"] if prog0.training is not None else [])
    entries = list(dict.fromkeys(entries))
    for e in entries:
        if e not in aot.PUBLIC_ENTRIES:
            raise ArgumentError(
                f"--entry: unknown entry {e!r}; choose from {', '.join(aot.PUBLIC_ENTRIES)}"
            )
        if e == "train_step" and prog0.training is None:
            raise ArgumentError(f"--entry train_step: model {name!r} was compiled without a loss")
    if not entries:
        raise ArgumentError("--entry: give at least one of infer, train_step")
    if weights not in WEIGHTS_MODES:
        raise ArgumentError(f"--weights must be embed or file, got {weights!r}")
    if emit not in EMITS:
        raise ArgumentError(f"--emit must be one of {', '.join(EMITS)}, got {emit!r}")
    ccmd = find_c_compiler(cc) if emit == "obj" else None

    prog, mb = _recompile(model, target_cpu)
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
        target_cpu=target_cpu,
        lr=float(model.lr),
        loss_kind=prog.loss_kind,
        state_init=state_init if any(state_init) else None,
        check_numerics=bool(getattr(prog, "check_numerics", False)),
    )
    params = model._param_region.tobytes()
    tm = target_machine(target_cpu, pic=True)
    mod = aot.object_module(mb.module, plan, tm, params if plan.embed else None)
    out = os.path.abspath(path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if emit == "llvm":
        with open(out, "w") as f:
            f.write(str(mod))
        return ExportResult(None, None, None, llvm=out, plan=plan)
    if emit == "asm":
        with open(out, "w") as f:
            f.write(tm.emit_assembly(mod))
        return ExportResult(None, None, None, asm=out, plan=plan)

    import graphc

    hpath = os.path.abspath(header) if header else header_path_for(out)
    htext = aot.c_header(plan, graphc.__version__)
    wpath = None
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
        cmd = ccmd + [
            "-std=c99",
            "-O2",
            "-fPIC",
            "-shared",
            "-pthread",
            "-fvisibility=hidden",
            "-Wall",
            "-Wextra",
            "-I",
            tmp,
            "-o",
            lib_tmp,
            csrc,
            obj,
            "-lm",
        ]
        if target_cpu in CPU_PRESETS and platform.machine().lower() in ("x86_64", "amd64"):
            # The wrappers too must not use instructions beyond the target (a compiler whose
            # default is newer than x86-64 would otherwise put AVX into a baseline library).
            cmd.insert(len(ccmd), f"-march={target_cpu}")
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if res.returncode != 0:
            raise CodegenError(
                f"linking lib for {name!r} failed: {' '.join(cmd)}\n{res.stderr.strip()}"
            )
        with open(lib_tmp, "rb") as f:
            files = [(out, f.read(), 0o755)]
    files.append((hpath, htext.encode(), 0o644))
    if not plan.embed:
        wpath = (
            os.path.abspath(weights_path)
            if weights_path
            else os.path.join(os.path.dirname(out), f"{name}.weights")
        )
        files.append((wpath, aot.weights_file_bytes(plan, params), 0o644))
    write_all_or_nothing(files)
    return ExportResult(out, hpath, wpath, plan=plan)


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
                    f"export: cannot write {path!r} ({e.strerror}); nothing was written"
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
                f"export: cannot replace {path!r} ({e.strerror}); the earlier files are back"
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


def write_weights(model: Any, path: str) -> str:
    """Write the model's current parameters as a weights file a library with ``--weights file``
    (or any library of this model) reads with ``NAME_load_weights``."""
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
    with open(path, "wb") as f:
        f.write(aot.weights_file_bytes(plan, model._param_region.tobytes()))
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
        help="path/to/file.py:name (a Model, or tensors: then weights are freshly "
        "initialized with --seed), model.onnx (weights from the file), or a model file "
        "model.gcm (Model.save_model, its trained weights)",
    )
    p.add_argument(
        "-o", "--output", required=True, help="the library (libNAME.so), or the .ll/.s file"
    )
    p.add_argument(
        "--header",
        help="the C header's path (default: named after the library: -o libx.so or -o x.so "
        "gives x.h next to it)",
    )
    p.add_argument(
        "--entry",
        default=None,
        help="comma-separated: infer,train_step (default: both when the model has a loss)",
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
        "--target-cpu",
        default="native",
        help="native (default), x86-64, x86-64-v2, x86-64-v3, x86-64-v4 or an LLVM CPU name",
    )
    p.add_argument(
        "--emit",
        choices=(*EMITS, "onnx"),
        default="obj",
        help="obj: the shared library (default); llvm: optimized LLVM IR; asm: assembly; "
        "onnx: an ONNX model of the inference graph with the weights",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="initialization seed when MODEL is not a Model"
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
    p.set_defaults(run=run)


def model_from_spec(spec: Any, *, seed: int = 0, opt_level: int = 2) -> Any:
    """A Model from a resolved MODEL argument (tensors are compiled with ``seed``)."""
    from .api import compile as gc_compile

    if spec.model is not None:
        return spec.model
    if spec.graph is not None:
        raise ArgumentError(
            f"{spec.name}: graphc compile needs a Model or tensors (outputs, loss), "
            "not a bare Graph"
        )
    return gc_compile(
        spec.outputs, spec.loss, spec.optimizer, name=spec.name, seed=seed, opt_level=opt_level
    )


def run(args: argparse.Namespace) -> int:
    from .modelspec import resolve

    model = model_from_spec(resolve(args.model), seed=args.seed, opt_level=args.opt_level)
    if getattr(args, "check_numerics", False):
        model.program.check_numerics = True  # read by _recompile: the library gets the checks
    if args.emit == "onnx":
        print(f"onnx: {model.to_onnx(args.output)}")
        return 0
    res = export_model(
        model,
        args.output,
        header=args.header,
        entries=args.entry,
        weights=args.weights,
        weights_path=args.weights_path,
        target_cpu=args.target_cpu,
        emit=args.emit,
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
