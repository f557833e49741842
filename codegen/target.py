"""Target machines, the LLVM optimization pipeline, and in-process JIT compilation."""

from __future__ import annotations

from typing import Any

import atexit
import concurrent.futures
import ctypes
import functools
import os
import threading
import time
import weakref

import llvmlite.binding as llvm
from graphc.ir.errors import CodegenError
from llvmlite import ir

from . import llvm_private

_lock = threading.Lock()
_live_pools: weakref.WeakSet = weakref.WeakSet()  # JIT modules whose worker threads may run


@atexit.register
def _stop_all_threads() -> None:
    """Join every JIT module's workers before the interpreter tears the modules down."""
    for jm in list(_live_pools):
        jm.stop_threads()


def _forget_all_threads() -> None:
    """In a fork()ed child: every JIT module's pool back to one thread (the workers stayed in
    the parent; joining them here would hang)."""
    for jm in list(_live_pools):
        if jm._forget_threads is not None:
            jm._forget_threads()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all_threads)


@functools.cache
def _init() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def host_cpu() -> tuple[str, str]:
    _init()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


CPU_PRESETS = {
    # name: (LLVM cpu, extra features); x86-64-v3 = AVX2+FMA, v4 adds AVX-512.
    "x86-64": ("x86-64", ""),
    "x86-64-v2": ("x86-64-v2", ""),
    "x86-64-v3": ("x86-64-v3", ""),
    "x86-64-v4": ("x86-64-v4", ""),
}


def target_machine(cpu: str = "native", *, pic: bool = False) -> llvm.TargetMachine:
    """An LLVM target machine for ``cpu``: "native" (the host, with its features) or an LLVM
    CPU name such as "x86-64", "x86-64-v3", "znver3", "skylake-avx512"."""
    _init()
    target = llvm.Target.from_default_triple()
    if cpu == "native":
        name, features = host_cpu()
    else:
        name, features = CPU_PRESETS.get(cpu, (cpu, ""))
    return target.create_target_machine(
        cpu=name,
        features=features,
        opt=3,
        reloc="pic" if pic else "default",
        codemodel="jitdefault" if not pic else "small",
    )


def vector_width(tm_cpu: str = "native") -> int:
    """float32 lanes of the widest vector unit worth using (8 with AVX2, 16 with AVX-512, else 4)."""
    if tm_cpu == "native":
        _, feats = host_cpu()
        if "+avx512f" in feats.split(","):
            return 16
        if "+avx2" in feats.split(",") or "+avx" in feats.split(","):
            return 8
        return 4
    if tm_cpu in ("x86-64-v4", "skylake-avx512", "znver4"):
        return 16
    if tm_cpu in ("x86-64-v3", "haswell", "znver2", "znver3"):
        return 8
    return 4


PIPELINES = {
    # part kind: (speed level, loop and SLP vectorizers)
    # Elementwise kernels, reductions and vmath rely on O3's loop vectorizer.
    "main": (3, True),
    # GEMM code is vectorized and unrolled by hand and its loops are marked against LLVM's
    # vectorizers and unrollers: O1 gives the same GFLOP/s as O3 (benchmarks/bench_gemm.py's
    # shapes, within noise) in well under half the optimization time. A hand-picked shorter
    # list (ipsccp, globaldce, simplifycfg, instcombine) cost 1-2 % on the squares and 15 %
    # on the GEMV.
    "gemm": (1, False),
    # graphc.fuzz's builds: many small models, each run once on a few rows; see fuzz.py for
    # what it measured
    "fuzz": (1, True),
}


def optimize(
    module: ir.Module | str,
    tm: llvm.TargetMachine,
    name: str,
    *,
    kind: str = "main",
    context: llvm.ContextRef | None = None,
) -> llvm.ModuleRef:
    """Parse, verify, optimize with the new pass manager (``PIPELINES[kind]``: O3 with the
    vectorizers for "main"), verify again. ``module`` is an ir.Module or its text (with the
    triple and data layout of ``tm``). ``context``: an LLVM context of this thread (default:
    the global one)."""
    _init()
    if not isinstance(module, str):
        module.triple = tm.triple
        module.data_layout = str(tm.target_data)
        module = str(module)
    try:
        mod = llvm.parse_assembly(module, context=context)
        mod.verify()
    except RuntimeError as e:
        raise CodegenError(f"LLVM rejected the module for graph {name!r}: {e}") from None
    level, vectorize = PIPELINES[kind]
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = vectorize
    pto.slp_vectorization = vectorize
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    # Without llvmlite's lock only in a context of the caller's own (compile_parts' threads).
    llvm_private.run_module_passes(pm, mod, pb, unlocked=context is not None)
    try:
        mod.verify()
    except RuntimeError as e:
        raise CodegenError(f"LLVM produced an invalid module for graph {name!r}: {e}") from None
    return mod


def emit_object(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> bytes:
    """``tm.emit_object(mod)``, without holding llvmlite's lock during code generation where
    the installed llvmlite allows it (``llvm_private``)."""
    try:
        return llvm_private.emit_object(mod, tm)
    except RuntimeError as e:
        raise CodegenError(str(e)) from None


def compile_threads() -> int:
    """Threads for compile_parts: ``$GRAPHC_COMPILE_THREADS``, else the cores this process may
    run on (``os.sched_getaffinity``)."""
    env = os.environ.get("GRAPHC_COMPILE_THREADS", "").strip()
    if env.isdigit():
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def module_text(module: ir.Module, tm: llvm.TargetMachine) -> str:
    """The text of ``module`` with the triple and data layout of ``tm``."""
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    return str(module)


def compile_parts(
    parts: list[tuple[ir.Module, str]], target_cpu: str, name: str, timings: dict | None = None
) -> tuple[list[str], list[tuple[llvm.ModuleRef, bytes]]]:
    """Optimize (``PIPELINES[kind]``) and compile each (module, kind) to an object file;
    returns the modules' texts and (optimized module, object file) per part.

    Parts run in parallel threads (``compile_threads()``), each in an LLVM context and with a
    target machine of its own (LLVM is thread-safe across contexts; the threads call LLVM
    without llvmlite's lock and without the GIL). Each part is handed to a thread as soon as
    its text is printed, so printing the next one (Python) overlaps LLVM's work on this one.
    ``timings`` receives "llvm_text" (printing) and "llvm_opt", "machine_code": the sums
    over parts of the seconds each took (with threads, more than the wall time they took).
    """
    tm0 = target_machine(target_cpu)
    texts: list[str] = []
    results: list = [None] * len(parts)
    spent: list = [None] * len(parts)

    def work(i: int, kind: str) -> None:
        tm = target_machine(target_cpu)
        ctx = llvm.create_context()
        t0 = time.perf_counter()
        mod = optimize(texts[i], tm, name, kind=kind, context=ctx)
        t1 = time.perf_counter()
        obj = emit_object(mod, tm)
        spent[i] = (t1 - t0, time.perf_counter() - t1)
        results[i] = (mod, obj)

    nthreads = min(compile_threads(), len(parts))
    pool = concurrent.futures.ThreadPoolExecutor(nthreads) if nthreads > 1 else None
    printing = 0.0
    try:
        futures = []
        for i, (module, kind) in enumerate(parts):
            t0 = time.perf_counter()
            texts.append(module_text(module, tm0))
            printing += time.perf_counter() - t0
            if pool is None:
                work(i, kind)
            else:
                futures.append(pool.submit(work, i, kind))
        for f in futures:
            f.result()
    finally:
        if pool is not None:
            pool.shutdown()
    if timings is not None:
        timings["llvm_text"] = printing
        timings["llvm_opt"] = sum(s[0] for s in spent)
        timings["machine_code"] = sum(s[1] for s in spent)
    return texts, results


class JitModule:
    """An optimized module compiled to machine code in this process (MCJIT)."""

    def __init__(
        self,
        objects: list[bytes],
        tm: llvm.TargetMachine,
        modules: list[llvm.ModuleRef] | None = None,
    ) -> None:
        """Load object files (``tm.emit_object``, or the compile cache's) into one MCJIT engine;
        their external symbols resolve against each other when the engine is finalized.
        ``modules`` (optional) are the optimized modules they came from, for ``asm()``."""
        _init()
        self._set_threads: Any = None  # ctypes functions of the module's thread pool
        self._get_threads: Any = None
        self._forget_threads: Any = None
        empty = llvm.parse_assembly(f'target triple = "{tm.triple}"')
        with _lock:
            self.engine = llvm.create_mcjit_compiler(empty, tm)
            for data in objects:
                self.engine.add_object_file(llvm.ObjectFileRef.from_data(data))
            self.engine.finalize_object()
        self.modules = list(modules or [])
        self.module = self.modules[0] if self.modules else None
        self.tm = tm

    def set_threads(self, prefix: str, threads: int) -> int:
        """Run the module's kernels on ``threads`` threads: calls ``PREFIX_set_num_threads``
        (codegen/threads.py), which joins the old workers and starts threads - 1 new ones.
        Returns the thread count now in use (fewer when the system refused to start a thread);
        0 when the module has no thread pool (no packed GEMM in it)."""
        if self._set_threads is None:
            addr = self.engine.get_function_address(f"{prefix}_set_num_threads")
            if not addr:
                return 0
            self._set_threads = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(addr)
            self._get_threads = ctypes.CFUNCTYPE(ctypes.c_int32)(
                self.engine.get_function_address(f"{prefix}_get_num_threads")
            )
            self._forget_threads = ctypes.CFUNCTYPE(None)(
                self.engine.get_function_address(f"{prefix}_forget_threads")
            )
            _live_pools.add(self)
        self._set_threads(threads)
        return self.threads()

    def threads(self) -> int:
        """The thread count the module's pool runs with now (1 without a pool)."""
        return int(self._get_threads()) if self._set_threads is not None else 1

    def stop_threads(self) -> None:
        """Join the module's worker threads (before its code is freed; at exit)."""
        if getattr(self, "_set_threads", None) is not None:
            self._set_threads(1)

    def __del__(self) -> None:
        self.stop_threads()

    def has(self, name: str) -> bool:
        return bool(self.engine.get_function_address(name))

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CodegenError(f"no function {name!r} in the compiled module")
        return addr

    def asm(self) -> str:
        if self.module is None:
            raise CodegenError(
                "this module was loaded from the compile cache: no assembly to show "
                "(set GRAPHC_NO_CACHE=1 to compile it afresh)"
            )
        return "\n".join(self.tm.emit_assembly(m) for m in self.modules)
