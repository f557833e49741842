"""The one place graphc reaches under llvmlite's public API: LLVM calls without its global lock.

llvmlite serializes every binding call with one process-wide lock. graphc compiles the parts of
a model in threads, each with an LLVM context and target machine of its own (LLVM is
thread-safe across contexts), and wants those threads to run LLVM's optimizer and code
generator at the same time. llvmlite's ``ffi.lib`` functions carry the raw ctypes function as
``_cfn``; calling it skips the lock and releases the GIL.

That is private API, so it is used only when the installed llvmlite is a version this was
checked against (``CHECKED``: 0.46 to 0.50) and the attributes are there; otherwise every call
here falls back to the public, locked binding (correct, only slower on several cores).
"""

from __future__ import annotations

import ctypes
from typing import Any

import llvmlite
import llvmlite.binding as llvm

CHECKED = ((0, 46), (0, 50))  # llvmlite versions whose ffi layout this module was tested on


def _version() -> tuple[int, int]:
    try:
        major, minor = llvmlite.__version__.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def private_api_usable() -> bool:
    """True when the installed llvmlite is a checked version with the raw ctypes functions."""
    lo, hi = CHECKED
    if not lo <= _version() <= hi:
        return False
    try:
        from llvmlite.binding import ffi

        return all(
            hasattr(getattr(ffi.lib, f), "_cfn")
            for f in ("LLVMPY_RunNewModulePassManager", "LLVMPY_TargetMachineEmitToMemory")
        )
    except (ImportError, AttributeError):
        return False


def run_module_passes(pm: Any, mod: llvm.ModuleRef, pb: Any, *, unlocked: bool) -> None:
    """``pm.run(mod, pb)``; without llvmlite's lock when ``unlocked`` and the private API is
    usable (the caller then owns ``mod``'s LLVM context in this thread)."""
    if unlocked and private_api_usable():
        from llvmlite.binding import ffi

        ffi.lib.LLVMPY_RunNewModulePassManager._cfn(pm, mod, pb)
        return
    pm.run(mod, pb)


def close_pass_manager(pm: Any) -> None:
    """Free the C++ pass manager behind ``pm`` (an llvmlite Module/FunctionPassManager) now.

    In llvmlite 0.46 to 0.50 both classes list ``ffi.ObjectRef`` before ``NewPassManager``
    among their bases, so ``close()`` and ``__del__`` find ObjectRef's empty ``_dispose``
    and never delete the pass manager: every pipeline built by graphc stayed allocated, with
    the state its passes keep between runs (Reassociate's and GlobalDCE's maps ...): about
    150 KiB per optimized 64-64-10 main module, 0.25 MiB per uncached compile. Where the
    installed llvmlite disposes them itself, this is ``pm.close()``. ``pm`` must not be used
    afterwards.
    """
    from llvmlite.binding import ffi

    if pm.closed:
        return
    try:
        from llvmlite.binding.newpassmanagers import NewPassManager as base
    except ImportError:
        base = None
    if type(pm)._dispose is ffi.ObjectRef._dispose and base is not None:
        try:
            base._dispose(pm)
        finally:
            pm.detach()
        return
    pm.close()


def emit_object(mod: llvm.ModuleRef, tm: llvm.TargetMachine, *, unlocked: bool = True) -> bytes:
    """``tm.emit_object(mod)``, without llvmlite's lock during code generation where possible.

    Raises:
        RuntimeError: LLVM could not emit machine code (its message).
    """
    if not (unlocked and private_api_usable()):
        return tm.emit_object(mod)
    from llvmlite.binding import ffi

    with ffi.OutputString() as err:
        buf = ffi.lib.LLVMPY_TargetMachineEmitToMemory._cfn(tm, mod, 1, err)
        if not buf:
            raise RuntimeError(f"LLVM could not emit machine code: {err}")
    try:
        return ctypes.string_at(
            ffi.lib.LLVMPY_GetBufferStart(buf), ffi.lib.LLVMPY_GetBufferSize(buf)
        )
    finally:
        ffi.lib.LLVMPY_DisposeMemoryBuffer(buf)
