"""graphc.codegen.fpenv: the floating-point control register around training entry points.

Subnormal ("denormal") float32 values, below 2**-126 ~ 1.18e-38 in magnitude, take a microcode
assist on x86 for every arithmetic instruction that reads or makes one: a step of the
784-256-128-10 network trained with Adam on a batch it has learnt runs 3.3-3.9x slower once its
gradients and Adam's second moments fall that low (this host's 2-core Xeon, 1 thread: 1,030 us
-> 3,440-3,980 us per step; digits, 64-256-256-10, 8 -> 28 ms per epoch after 25 epochs).
XLA and TensorFlow therefore run CPU code with subnormals flushed to zero (FTZ: results, DAZ:
operands); PyTorch leaves it to ``torch.set_flush_denormal``.

graphc's training entries (``train_step``, ``train_grads``, ``apply_update`` and the epochs that
call them) do the same, always (there is no option to turn it off): the entry saves
the calling thread's control register, sets the flush bits, runs its kernels and restores the
register before it returns, so the caller (Python, a C program) never sees the change. Inference
(``infer``, ``evaluate``) keeps IEEE subnormals: sigmoid(-90) is 8.2e-40 there, as in numpy and
ONNX Runtime. The thread pool's workers run each dispatch under the dispatching thread's mode
(codegen/threads.py), so results do not depend on the thread count.

- x86-64: MXCSR bits FTZ (15) and DAZ (6), through ``llvm.x86.sse.stmxcsr`` / ``ldmxcsr``
  (Intel SDM vol. 1, 10.2.3).
- AArch64: FPCR bit FZ (24), which flushes both operands and results of single- and
  double-precision arithmetic (Arm ARM, FPCR), through ``llvm.aarch64.get.fpcr`` /
  ``set.fpcr`` (``mrs`` / ``msr``; inline assembly would need LLVM's AArch64 assembly parser,
  which a cross-compiling llvmlite does not load).
- Other architectures (riscv64: its F and D extensions have no flush mode and handle
  subnormals in hardware): nothing is emitted.
"""

from __future__ import annotations

from llvmlite import ir

from .lltypes import I32, I64, PTR, VOID

X86_FLUSH = (1 << 15) | (1 << 6)  # MXCSR: FTZ | DAZ
AARCH64_FLUSH = 1 << 24  # FPCR: FZ


def _arch(module: ir.Module) -> str:
    triple = str(module.triple)
    if triple.startswith(("x86_64", "i386", "i686")):
        return "x86"
    if triple.startswith(("aarch64", "arm64")):
        return "aarch64"
    return ""


def has_flush_mode(module: ir.Module) -> bool:
    """Whether the module's target has a flush-to-zero mode graphc sets (x86, AArch64)."""
    return bool(_arch(module))


def flush_bits(module: ir.Module) -> int:
    """The bits of the control register (as read_mode returns it) that flush subnormals."""
    return {"x86": X86_FLUSH, "aarch64": AARCH64_FLUSH}.get(_arch(module), 0)


def _intrinsic(module: ir.Module, name: str) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(VOID, [PTR]), name=name)
    return fn


def read_mode(b: ir.IRBuilder, module: ir.Module) -> ir.Value:
    """The calling thread's floating-point control register, zero-extended to i64 (0 where
    the target has none: has_flush_mode)."""
    arch = _arch(module)
    if arch == "x86":
        with b.goto_entry_block():
            slot = b.alloca(I32, name="mxcsr")
        b.call(_intrinsic(module, "llvm.x86.sse.stmxcsr"), [slot])
        return b.zext(b.load(slot, typ=I32), I64)
    if arch == "aarch64":
        get = module.globals.get("llvm.aarch64.get.fpcr")
        if get is None:
            get = ir.Function(module, ir.FunctionType(I64, []), name="llvm.aarch64.get.fpcr")
        return b.call(get, [])
    return ir.Constant(I64, 0)


def write_mode(b: ir.IRBuilder, module: ir.Module, mode: ir.Value) -> None:
    """Set the calling thread's control register to ``mode`` (as read_mode returned it)."""
    arch = _arch(module)
    if arch == "x86":
        with b.goto_entry_block():
            slot = b.alloca(I32, name="mxcsr.new")
        b.store(b.trunc(mode, I32), slot)
        b.call(_intrinsic(module, "llvm.x86.sse.ldmxcsr"), [slot])
    elif arch == "aarch64":
        put = module.globals.get("llvm.aarch64.set.fpcr")
        if put is None:
            put = ir.Function(module, ir.FunctionType(VOID, [I64]), name="llvm.aarch64.set.fpcr")
        b.call(put, [mode])
