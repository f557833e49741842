"""Target machines, the LLVM optimization pipeline, and in-process JIT compilation."""

from __future__ import annotations

import atexit
import ctypes
import functools
import threading
import weakref

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.ir.errors import CodegenError

_lock = threading.Lock()
_live_pools: weakref.WeakSet = weakref.WeakSet()  # JIT modules whose worker threads may run


@atexit.register
def _stop_all_threads() -> None:
    """Join every JIT module's workers before the interpreter tears the modules down."""
    for jm in list(_live_pools):
        jm.stop_threads()


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
        cpu=name, features=features, opt=3, reloc="pic" if pic else "default", codemodel="jitdefault"
        if not pic else "small"
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


def optimize(module: ir.Module, tm: llvm.TargetMachine, name: str) -> llvm.ModuleRef:
    """Parse, verify, optimize at O3 with the new pass manager, verify again."""
    _init()
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    try:
        mod = llvm.parse_assembly(str(module))
        mod.verify()
    except RuntimeError as e:
        raise CodegenError(f"LLVM rejected the module for graph {name!r}: {e}") from None
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    pm.run(mod, pb)
    try:
        mod.verify()
    except RuntimeError as e:
        raise CodegenError(f"LLVM produced an invalid module for graph {name!r}: {e}") from None
    return mod


class JitModule:
    """An optimized module compiled to machine code in this process (MCJIT)."""

    def __init__(self, mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
        with _lock:
            self.engine = llvm.create_mcjit_compiler(mod, tm)
            self.engine.finalize_object()
        self.module = mod
        self.tm = tm
        self._set_threads = None

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
                self.engine.get_function_address(f"{prefix}_get_num_threads"))
            _live_pools.add(self)
        self._set_threads(threads)
        return int(self._get_threads())

    def stop_threads(self) -> None:
        """Join the module's worker threads (before its code is freed; at exit)."""
        if getattr(self, "_set_threads", None) is not None:
            self._set_threads(1)

    def __del__(self) -> None:
        self.stop_threads()

    @classmethod
    def from_object(cls, data: bytes, tm: llvm.TargetMachine,
                    module: llvm.ModuleRef | None = None) -> "JitModule":
        """Load machine code made by ``tm.emit_object`` (e.g. from the compile cache) into MCJIT,
        through an engine created from an empty module (``ExecutionEngine.add_object_file``)."""
        _init()
        self = cls.__new__(cls)
        self._set_threads = None
        empty = llvm.parse_assembly(f'target triple = "{tm.triple}"')
        with _lock:
            self.engine = llvm.create_mcjit_compiler(empty, tm)
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(data))
            self.engine.finalize_object()
        self.module = module
        self.tm = tm
        return self

    def has(self, name: str) -> bool:
        return bool(self.engine.get_function_address(name))

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CodegenError(f"no function {name!r} in the compiled module")
        return addr

    def asm(self) -> str:
        if self.module is None:
            raise CodegenError("this module was loaded from the compile cache: no assembly to show "
                               "(set GRAPHC_NO_CACHE=1 to compile it afresh)")
        return self.tm.emit_assembly(self.module)
