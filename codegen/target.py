"""Targets (architecture, CPU, features: validated before LLVM sees them), target machines, the
LLVM optimization pipeline, and in-process JIT compilation.

Every decision that depends on the machine the code will run on reads a ``Target`` (or the
triple of the module being built), never the host: the host is only the default target."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import difflib
import functools
import os
import re
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.ir.errors import CodegenError, TargetError

from . import llvm_private
from .threads import dispatch_ns_env, pool_call

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


@functools.cache
def _init_all() -> None:
    """Every LLVM backend llvmlite was built with (for cross targets)."""
    _init()
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def host_cpu() -> tuple[str, str]:
    _init()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Arch:
    """A machine architecture graphc can build libraries for (or names as unsupported).

    ``triple`` is the GNU triple users and toolchains spell (``aarch64-linux-gnu``: the prefix
    of Debian's cross gcc); ``llvm_triple`` the one LLVM gets. ``vector_bits`` and
    ``registers`` describe the fixed-width SIMD unit the kernels are written for (bits per
    register, register count; 0 bits: scalar code); a CPU can widen them (x86: AVX2, AVX-512).
    """

    name: str
    triple: str
    llvm_triple: str
    default_cpu: str
    vector_bits: int
    registers: int
    word_bits: int
    packages: str  # the distribution packages of its cross C toolchain (Debian/Ubuntu names)
    qemu: str  # the qemu-user program that runs its binaries
    default_features: str = ""
    unsupported: str = ""  # why graphc cannot build for it ("" = supported)
    aliases: tuple[str, ...] = ()

    @property
    def supported(self) -> bool:
        return not self.unsupported


ARCHES: dict[str, Arch] = {
    a.triple: a
    for a in (
        Arch(
            "x86_64",
            "x86_64-linux-gnu",
            "x86_64-unknown-linux-gnu",
            "x86-64",
            128,
            16,
            64,
            "gcc-x86-64-linux-gnu",
            "qemu-x86_64",
            aliases=("x86_64", "x86_64-unknown-linux-gnu", "x86_64-pc-linux-gnu", "amd64"),
        ),
        Arch(
            "aarch64",
            "aarch64-linux-gnu",
            "aarch64-unknown-linux-gnu",
            "generic",
            128,  # NEON: 32 registers of 128 bits
            32,
            64,
            "gcc-aarch64-linux-gnu",
            "qemu-aarch64",
            default_features="+neon",
            aliases=("aarch64", "arm64", "aarch64-unknown-linux-gnu", "arm64-linux-gnu"),
        ),
        Arch(
            "riscv64",
            "riscv64-linux-gnu",
            "riscv64-unknown-linux-gnu",
            "generic-rv64",
            0,  # RV64GC: scalar code (RVV's lengths are not fixed: not used)
            32,
            64,
            "gcc-riscv64-linux-gnu",
            "qemu-riscv64",
            default_features="+m,+a,+f,+d,+c",
            aliases=("riscv64", "riscv64-unknown-linux-gnu"),
        ),
        Arch(
            "armv7",
            "armv7-linux-gnueabihf",
            "armv7-unknown-linux-gnueabihf",
            "generic",
            128,
            16,
            32,
            "gcc-arm-linux-gnueabihf",
            "qemu-arm",
            default_features="+neon,+vfp4",
            unsupported="the generated code assumes 64-bit pointers and pthread_t (a 32-bit "
            "word size is not implemented)",
            aliases=("armv7", "arm-linux-gnueabihf", "armv7-unknown-linux-gnueabihf", "armhf"),
        ),
    )
}


ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}


def elf_arch(head: bytes) -> str | None:
    """The architecture an ELF file was built for, from its first 20 bytes (``e_machine``),
    as Arch.name spells it; None when the bytes are not a readable ELF header."""
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[5] not in (1, 2):
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"ELF machine {machine}")


def host_arch() -> Arch:
    """The Arch of the machine this process runs on.

    Raises:
        TargetError: graphc has no Arch for it.
    """
    triple = llvm.get_process_triple()
    for a in ARCHES.values():
        if triple.split("-")[0] == a.name:
            return a
    raise TargetError(f"this machine ({triple}) is not an architecture graphc knows")


def find_arch(triple: str) -> Arch:
    """The Arch for a triple as users spell it (``aarch64-linux-gnu``, ``arm64``, ...).

    Raises:
        TargetError: unknown or unsupported, with the list of what is supported.
    """
    key = triple.strip().lower()
    for a in ARCHES.values():
        if key == a.triple or key in a.aliases:
            if not a.supported:
                raise TargetError(
                    f"target {triple!r} is not supported: {a.unsupported}. Supported targets: "
                    f"{', '.join(supported_triples())} (`graphc targets` lists them)"
                )
            return a
    near = difflib.get_close_matches(
        key, [t for a in ARCHES.values() for t in (a.triple, *a.aliases)]
    )
    hint = f" (did you mean {', '.join(repr(n) for n in near[:3])}?)" if near else ""
    raise TargetError(
        f"unknown target {triple!r}{hint}. Supported targets: "
        f"{', '.join(supported_triples())} (`graphc targets` lists them)"
    )


def supported_triples() -> list[str]:
    return [a.triple for a in ARCHES.values() if a.supported]


CPU_PRESETS = {
    # name: (LLVM cpu, extra features); x86-64-v3 = AVX2+FMA, v4 adds AVX-512.
    "x86-64": ("x86-64", ""),
    "x86-64-v2": ("x86-64-v2", ""),
    "x86-64-v3": ("x86-64-v3", ""),
    "x86-64-v4": ("x86-64-v4", ""),
}


@dataclass(frozen=True)
class Target:
    """What a library or JIT module is built for: an Arch, an LLVM CPU and its features.

    ``cpu`` is "native" for this machine's CPU (with the features LLVM detects) or an LLVM CPU
    name; ``features`` an LLVM feature string ("+avx2,-avx512f"). Make one with
    ``resolve_target`` (which validates the names before LLVM sees them)."""

    arch: Arch
    cpu: str
    features: str = ""

    @property
    def triple(self) -> str:
        return self.arch.triple

    @property
    def llvm_triple(self) -> str:
        return self.arch.llvm_triple

    @property
    def is_host(self) -> bool:
        """Code for this target can run in this process (same architecture)."""
        return self.arch.name == host_arch().name

    def llvm_cpu_features(self) -> tuple[str, str]:
        """(LLVM cpu name, feature string) for the target machine."""
        if self.cpu == "native":
            name, feats = host_cpu()
            return name, ",".join(f for f in (feats, self.features) if f)
        name, extra = CPU_PRESETS.get(self.cpu, (self.cpu, ""))
        feats = ",".join(f for f in (self.arch.default_features, extra, self.features) if f)
        return name, feats

    def __str__(self) -> str:
        feats = f" {self.features}" if self.features else ""
        return f"{self.triple} ({self.cpu}{feats})"


def resolve_target(
    target: str | Target | None = None, cpu: str | None = None, features: str = ""
) -> Target:
    """A validated Target: ``target`` a triple (None or "host": this machine), ``cpu`` an LLVM
    CPU name or preset (None: "native" on this machine's architecture, else the architecture's
    generic CPU), ``features`` LLVM features ("+avx2,-fma").

    Names are checked against the lists LLVM itself prints (``-mcpu=help``) before any target
    machine is made: LLVM aborts the process on some unknown names (``x86_64`` as a CPU).

    Raises:
        TargetError: an unknown or unsupported triple, CPU or feature (with close matches).
    """
    if isinstance(target, Target):
        if cpu is None and not features:
            return target
        target = target.triple
    arch = host_arch() if target in (None, "", "host", "native") else find_arch(target)
    host = arch.name == host_arch().name
    if cpu is None or cpu == "":
        cpu = "native" if host else arch.default_cpu
    cpu = cpu.strip()
    if cpu == "native":
        if not host:
            raise TargetError(
                f"--target-cpu native names this machine's CPU ({host_cpu()[0]}, "
                f"{host_arch().triple}); for {arch.triple} give one of its CPUs, e.g. "
                f"{', '.join(_example_cpus(arch))} (`graphc targets --cpus {arch.triple}`)"
            )
    elif cpu not in CPU_PRESETS or arch.name != "x86_64":
        known = llvm_cpus(arch.llvm_triple)
        if cpu not in known:
            near = difflib.get_close_matches(cpu, sorted(known), n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(near)}" if near else ""
            raise TargetError(
                f"unknown CPU {cpu!r} for {arch.triple}{hint}. `graphc targets --cpus "
                f"{arch.triple}` lists the {len(known)} CPUs LLVM knows"
                + (", and x86-64, x86-64-v2, x86-64-v3, x86-64-v4" if arch.name == "x86_64" else "")
            )
    features = ",".join(f.strip() for f in features.split(",") if f.strip())
    if features:
        known = llvm_features(arch.llvm_triple)
        for f in features.split(","):
            if f[0] not in "+-" or f[1:] not in known:
                near = difflib.get_close_matches(f.lstrip("+-"), sorted(known), n=5)
                hint = f"; close matches: {', '.join(near)}" if near else ""
                raise TargetError(
                    f"unknown CPU feature {f!r} for {arch.triple} (write +name or -name){hint}"
                )
    return Target(arch, cpu, features)


def as_target(cpu: str | Target) -> Target:
    """A Target from what older callers pass as ``target_cpu``: a Target, or a CPU name of this
    machine's architecture ("native", "x86-64-v3", "znver3", ...), validated."""
    return cpu if isinstance(cpu, Target) else resolve_target(None, cpu)


def _example_cpus(arch: Arch) -> list[str]:
    return {
        "x86_64": ["x86-64", "x86-64-v3", "znver4"],
        "aarch64": ["generic", "cortex-a72", "neoverse-n1"],
    }.get(arch.name, [arch.default_cpu])


_HELP_SCRIPT = """
import sys, llvmlite.binding as llvm
llvm.initialize_all_targets(); llvm.initialize_all_asmprinters()
tm = llvm.Target.from_triple(sys.argv[1]).create_target_machine(cpu="help", features="+help")
"""


@functools.cache
def _llvm_help(llvm_triple: str) -> tuple[frozenset[str], frozenset[str]]:
    """(CPU names, feature names) LLVM knows for a triple: what its ``-mcpu=help`` and
    ``-mattr=help`` print, read from a child process (LLVM prints them to stderr)."""
    r = subprocess.run(
        [sys.executable, "-c", _HELP_SCRIPT, llvm_triple],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    text = r.stdout + r.stderr
    cpus: set[str] = set()
    feats: set[str] = set()
    section = None
    for line in text.splitlines():
        if line.startswith("Available CPUs"):
            section = cpus
        elif line.startswith("Available features"):
            section = feats
        elif section is not None and line.startswith("  ") and " - " in line:
            section.add(line.split()[0])
    if not cpus:
        raise TargetError(f"LLVM printed no CPU list for {llvm_triple}: {text[-300:]}")
    return frozenset(cpus), frozenset(feats)


def llvm_cpus(llvm_triple: str) -> frozenset[str]:
    """The CPU names LLVM accepts for ``llvm_triple``."""
    return _llvm_help(llvm_triple)[0]


def llvm_features(llvm_triple: str) -> frozenset[str]:
    """The CPU feature names LLVM accepts for ``llvm_triple`` (without + or -)."""
    return _llvm_help(llvm_triple)[1]


def target_machine(cpu: str | Target = "native", *, pic: bool = False) -> llvm.TargetMachine:
    """An LLVM target machine for ``cpu``: a Target, or a CPU of this machine's architecture:
    "native" (the host, with its features) or an LLVM CPU name such as "x86-64", "x86-64-v3",
    "znver3", "skylake-avx512" (validated first: TargetError when unknown)."""
    t = as_target(cpu)
    _init_all() if not t.is_host else _init()
    name, features = t.llvm_cpu_features()
    return llvm.Target.from_triple(t.llvm_triple).create_target_machine(
        cpu=name,
        features=features,
        opt=3,
        reloc="pic" if pic else "default",
        codemodel="jitdefault" if not pic else "small",
    )


@dataclass(frozen=True)
class VectorUnit:
    """The SIMD registers the kernels use on a target: f32 lanes per register (1: scalar code)
    and how many registers there are (the GEMM's register tile is sized from both)."""

    lanes: int
    registers: int
    isa: tuple[str, ...] = ()  # x86 extensions the code uses, checked by a library's init


_PROBE = """
define void @vec(ptr %p) #0 {
  %a = load <16 x float>, ptr %p
  %b = fmul <16 x float> %a, %a
  store <16 x float> %b, ptr %p
  ret void
}
define void @fma(ptr %p) {
  %a = load <4 x float>, ptr %p
  %b = call <4 x float> @llvm.fma.v4f32(<4 x float> %a, <4 x float> %a, <4 x float> %a)
  store <4 x float> %b, ptr %p
  ret void
}
define void @int256(ptr %p) {
  %a = load <8 x i32>, ptr %p
  %b = mul <8 x i32> %a, %a
  store <8 x i32> %b, ptr %p
  ret void
}
define void @round(ptr %p) {
  %a = load <4 x float>, ptr %p
  %b = call <4 x float> @llvm.floor.v4f32(<4 x float> %a)
  store <4 x float> %b, ptr %p
  ret void
}
declare <4 x float> @llvm.fma.v4f32(<4 x float>, <4 x float>, <4 x float>)
declare <4 x float> @llvm.floor.v4f32(<4 x float>)
attributes #0 = { "min-legal-vector-width"="512" }
"""


@functools.cache
def _x86_unit(cpu: str, features: str) -> VectorUnit:
    """x86: the vector unit of an LLVM CPU, read from the code LLVM makes for it (a few
    vector operations): zmm registers mean AVX-512, ymm AVX, vfmadd FMA, and so on."""
    _init()
    tm = llvm.Target.from_triple(ARCHES["x86_64-linux-gnu"].llvm_triple).create_target_machine(
        cpu=cpu, features=features, opt=2
    )
    mod = llvm.parse_assembly(_PROBE)
    mod.triple = tm.triple
    asm = tm.emit_assembly(mod)
    parts = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^(\w+):.*?\n(.*?)\.Lfunc_end", asm, re.DOTALL | re.MULTILINE)
    }
    isa = []
    if "roundps" in parts.get("round", ""):
        isa.append("sse4.1")
    if "ymm" in parts.get("vec", "") or "zmm" in parts.get("vec", ""):
        isa.append("avx")
    if "ymm" in parts.get("int256", "") or "zmm" in parts.get("int256", ""):
        isa.append("avx2")
    if "vfmadd" in parts.get("fma", ""):
        isa.append("fma")
    if "zmm" in parts.get("vec", ""):
        isa.append("avx512f")
        return VectorUnit(16, 32, tuple(isa))
    return VectorUnit(8 if "avx" in isa else 4, 16, tuple(isa))


# The x86 features each entry of VectorUnit.isa stands for (in _x86_unit's order)
_X86_ISA = (("sse4.1", "sse4.1"), ("avx", "avx"), ("avx2", "avx2"), ("fma", "fma"))


def _x86_unit_of_features(features: str) -> VectorUnit | None:
    """_x86_unit from an explicit feature list (the host's: every feature named, the last
    +/- of a name wins) without compiling the probe (some 10-20 ms of a cold compile); None
    when the list is not one to trust that way (AVX-512 restricted to 256 bits: -evex512)."""
    on: dict[str, bool] = {}
    for f in features.split(","):
        if f[:1] in "+-" and len(f) > 1:
            on[f[1:]] = f[0] == "+"
    if on.get("avx512f") and not on.get("evex512", True):
        return None
    isa = tuple(name for name, feat in _X86_ISA if on.get(feat))
    if on.get("avx512f") and "avx2" in isa:
        return VectorUnit(16, 32, (*isa, "avx512f"))
    return VectorUnit(8 if "avx" in isa else 4, 16, isa)


def vector_unit(cpu: str | Target = "native") -> VectorUnit:
    """The vector unit the kernels are written for on ``cpu`` (a Target or a CPU name of this
    machine): lanes and registers from the target, never from the host (except "native")."""
    t = as_target(cpu)
    if t.arch.name == "x86_64":
        if t.cpu == "native" and not t.features:  # every feature named: no probe to compile
            unit = _x86_unit_of_features(t.llvm_cpu_features()[1])
            if unit is not None:
                return unit
        return _x86_unit(*t.llvm_cpu_features())
    lanes = max(1, t.arch.vector_bits // 32)
    return VectorUnit(lanes, t.arch.registers)


# aarch64: the probe's functions whose code shows an extension LLVM uses for ordinary IR
# (fixed-width vectors, half/bfloat, atomics), as the x86 probe does for AVX.
_PROBE_AARCH64 = """
define void @sve(ptr %p) {
  %a = load <2 x i64>, ptr %p
  %b = mul <2 x i64> %a, %a
  store <2 x i64> %b, ptr %p
  ret void
}
define void @fp16(ptr %p) {
  %a = load <8 x half>, ptr %p
  %b = fadd <8 x half> %a, %a
  store <8 x half> %b, ptr %p
  ret void
}
define void @bf16(ptr %p, float %x) {
  %b = fptrunc float %x to bfloat
  store bfloat %b, ptr %p
  ret void
}
define i32 @lse(ptr %p) {
  %b = atomicrmw add ptr %p, i32 1 seq_cst
  ret i32 %b
}
define i32 @rcpc(ptr %p) {
  %b = load atomic i32, ptr %p acquire, align 4
  ret i32 %b
}
define i32 @dot(ptr %a, ptr %b) {
  %x = load <16 x i8>, ptr %a
  %y = load <16 x i8>, ptr %b
  %xe = sext <16 x i8> %x to <16 x i32>
  %ye = sext <16 x i8> %y to <16 x i32>
  %m = mul <16 x i32> %xe, %ye
  %r = call i32 @llvm.vector.reduce.add.v16i32(<16 x i32> %m)
  ret i32 %r
}
declare i32 @llvm.vector.reduce.add.v16i32(<16 x i32>)
"""

_PROBE_RISCV64 = """
define void @v(ptr %p) {
  %a = load <16 x float>, ptr %p
  %b = fadd <16 x float> %a, %a
  store <16 x float> %b, ptr %p
  ret void
}
define i64 @zba(i64 %a, i64 %b) {
  %s = shl i64 %a, 2
  %r = add i64 %s, %b
  ret i64 %r
}
define i64 @zbb(i64 %a, i64 %b) {
  %r = call i64 @llvm.smax.i64(i64 %a, i64 %b)
  ret i64 %r
}
define i64 @zbs(i64 %a, i64 %b) {
  %s = shl i64 1, %b
  %r = or i64 %a, %s
  ret i64 %r
}
define void @zfh(ptr %p, half %x) {
  %b = fadd half %x, %x
  store half %b, ptr %p
  ret void
}
declare i64 @llvm.smax.i64(i64, i64)
"""

# LLVM feature -> the Linux hwcap names (/proc/cpuinfo's "Features") of the instructions it
# enables, for features given explicitly (--features); the probe finds those a CPU implies.
_AARCH64_FEATURE_HWCAPS = {
    "sve": ("sve",),
    "sve2": ("sve", "sve2"),
    "fullfp16": ("fphp", "asimdhp"),
    "dotprod": ("asimddp",),
    "lse": ("atomics",),
    "rcpc": ("lrcpc",),
    "rcpc-immo": ("lrcpc", "ilrcpc"),
    "bf16": ("bf16",),
    "i8mm": ("i8mm",),
    "f32mm": ("sve", "svef32mm"),
    "f64mm": ("sve", "svef64mm"),
    "rdm": ("asimdrdm",),
    "complxnum": ("fcma",),
    "fp16fml": ("fphp", "asimdhp", "asimdfhm"),
    "frint3264": ("frint",),
    "jsconv": ("jscvt",),
}
_RISCV64_FEATURES = ("m", "a", "f", "d", "c", "v", "zba", "zbb", "zbs", "zfh")


def _probe_asm(t: Target, probe: str) -> dict[str, str]:
    """The assembly LLVM makes for each function of ``probe`` on ``t`` (name -> body)."""
    _init_all()
    name, features = t.llvm_cpu_features()
    tm = llvm.Target.from_triple(t.llvm_triple).create_target_machine(
        cpu=name, features=features, opt=2
    )
    mod = llvm.parse_assembly(probe)
    mod.triple = tm.triple
    asm = tm.emit_assembly(mod)
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"^(\w+):.*?\n(.*?)\.Lfunc_end", asm, re.DOTALL | re.MULTILINE)
    }


def _explicit_features(features: str) -> dict[str, bool]:
    """The +/- features of an LLVM feature string (the last of a name wins)."""
    on: dict[str, bool] = {}
    for f in features.split(","):
        f = f.strip()
        if f[:1] in "+-" and len(f) > 1:
            on[f[1:]] = f[0] == "+"
    return on


@functools.cache
def cpu_extensions(t: Target) -> tuple[str, ...]:
    """The CPU extensions a library built for ``t`` may execute, checked by its init (ERR_CPU
    instead of an illegal instruction), in the names its check uses: x86 as GCC's
    ``__builtin_cpu_supports`` spells them (VectorUnit.isa); aarch64 as Linux's hwcap names
    (/proc/cpuinfo: "sve", "sve2", "asimddp", "asimdhp", "atomics", "lrcpc", "bf16", "i8mm",
    ...); riscv64 as ISA extension names ("v", "zba", ..., "zvl256b": VLEN >= 256 bits).

    Read from the features LLVM builds with, not from a table of CPU names: the explicit
    feature string (``t.features``, the architecture's defaults) and, for what a CPU name
    implies, the code LLVM makes for a probe (SVE registers for a 64-bit vector multiply,
    ``ldadd`` for an atomic add, ``bfcvt``, ``sdot``, RVV instructions and their LMUL, ...).
    The crypto extensions are left out: the kernels never use them."""
    if t.arch.name == "x86_64":
        return vector_unit(t).isa
    if t.arch.name not in ("aarch64", "riscv64") or (t.cpu == "native" and t.is_host):
        return ()
    on = _explicit_features(t.llvm_cpu_features()[1])
    if t.arch.name == "aarch64":
        parts = _probe_asm(t, _PROBE_AARCH64)
        found = []
        sve = re.findall(r"\bz\d+\.", parts.get("sve", ""))
        if sve:
            found.append("sve")
            if "ptrue" not in parts["sve"]:  # SVE2's unpredicated multiply
                found.append("sve2")
        if ".8h" in parts.get("fp16", "") and "fcvtl" not in parts.get("fp16", ""):
            found += ["fphp", "asimdhp"]
        if "bfcvt" in parts.get("bf16", ""):
            found.append("bf16")
        if "ldadd" in parts.get("lse", ""):
            found.append("atomics")
        if "ldapr" in parts.get("rcpc", ""):
            found.append("lrcpc")
        if "sdot" in parts.get("dot", ""):
            found.append("asimddp")
        for feat, names in _AARCH64_FEATURE_HWCAPS.items():
            if on.get(feat):
                found += names
        if "sve" in found and "i8mm" in found:
            found.append("svei8mm")
        if "sve" in found and "bf16" in found:
            found.append("svebf16")
        return tuple(dict.fromkeys(found))
    parts = _probe_asm(t, _PROBE_RISCV64)
    found = [f for f in "mafdc" if on.get(f)]
    lmul = re.search(r"vsetivli\s+\w+,\s*16,\s*e32,\s*m(f?)(\d)", parts.get("v", ""))
    if lmul or on.get("v"):
        found.append("v")
    if "sh2add" in parts.get("zba", "") or on.get("zba"):
        found.append("zba")
    if re.search(r"^\s*max\s", parts.get("zbb", ""), re.MULTILINE) or on.get("zbb"):
        found.append("zbb")
    if "bset" in parts.get("zbs", "") or on.get("zbs"):
        found.append("zbs")
    if "fadd.h" in parts.get("zfh", "") or on.get("zfh"):
        found.append("zfh")
    if lmul:  # 16 floats fill LMUL registers of VLEN bits: 512 = VLEN * LMUL
        frac, n = lmul.groups()
        vlen = 512 * int(n) if frac else 512 // int(n)
        if vlen > 128:  # V itself means VLEN >= 128
            found.append(f"zvl{vlen}b")
    return tuple(dict.fromkeys(found))


def vector_width(tm_cpu: str | Target = "native") -> int:
    """float32 lanes of the widest vector unit worth using (8 with AVX2, 16 with AVX-512, 4 on
    SSE and NEON, 1 for scalar code)."""
    return vector_unit(tm_cpu).lanes


PIPELINES: dict[str, tuple[int, bool] | tuple[str, ...]] = {
    # part kind: (speed level, loop and SLP vectorizers) of LLVM's default pipeline, or the
    # names of the passes to run (llvmlite's ModulePassManager.add_NAME_pass)
    # Elementwise kernels, reductions and vmath rely on O3's loop vectorizer.
    "main": (3, True),
    # GEMM code is vectorized, unrolled and hoisted by hand and its loops are marked against
    # LLVM's vectorizers and unrollers: it needs constants propagated into the helpers (the
    # kernels' fixed N and K), dead code and arguments removed and instructions combined,
    # not LLVM's loop passes. This list gives the GFLOP/s of O1 (784-256-128-10 step
    # b32-b512, predict b1/b256, GEMM n = 128..1024 and GEMV n = 256..1024 via predict:
    # within noise, interleaved A/B) in a quarter of its optimization time (0.17 -> 0.04 s
    # CPU for that step's GEMM module). What O1 did beyond it that mattered was LICM: the
    # GEMV broadcasts A's values before its sweeps itself now (it was 10 % slower without).
    "gemm": (
        "ipsccp",
        "dead_arg_elimination",
        "global_dead_code_eliminate",
        "sroa",
        "instruction_combine",
        "simplify_cfg",
        "sccp",
        "dead_code_elimination",
    ),
    # Code written in vectors by hand, with its loops marked against LLVM's vectorizers and
    # unrollers (the input checks' scans, ModuleBuilder.lean): it needs its phis and
    # instructions tidied, not O3's loop passes, which cost some 3 ms per scan function and
    # gave the same machine code.
    "lean": (
        "sroa",
        "instruction_combine",
        "simplify_cfg",
        "dead_code_elimination",
    ),
    # graphc.fuzz's builds: many small models, each run once on a few rows; see fuzz.py for
    # what it measured
    "fuzz": (1, True),
}
# Functions of a list-pipeline part that also get LLVM's O1 function simplification pipeline
# (loop rotation, LICM, induction variables ...), by name suffix: a GEMM's epilogue is the
# kernel's tail (bias, activation, a fused optimizer update) as the generic lowering writes
# it, which relies on those passes as the main module's kernels do: with the list alone the
# 784-256-128-10 SGD step at 2 threads was 5-40 % slower (b32, b128).
SIMPLIFIED: dict[str, tuple[str, ...]] = {"gemm": (".epilogue",)}


def optimize(
    module: ir.Module | str,
    tm: llvm.TargetMachine,
    name: str,
    *,
    kind: str = "main",
    context: llvm.ContextRef | None = None,
) -> llvm.ModuleRef:
    """Parse, verify, optimize with the new pass manager (``PIPELINES[kind]``: O3 with the
    vectorizers for "main", a short list of passes for "gemm"), verify again. ``module`` is an ir.Module or its text (with the
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
    spec = PIPELINES[kind]
    suffixes: tuple[str, ...] = ()
    if isinstance(spec[0], str):  # a list of passes
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=0))
        pm = llvm.create_new_module_pass_manager()
        for pass_name in spec:
            getattr(pm, f"add_{pass_name}_pass")()
        suffixes = SIMPLIFIED.get(kind, ())
    else:
        level, vectorize = spec
        pto = llvm.create_pipeline_tuning_options(speed_level=level)
        pto.loop_vectorization = vectorize
        pto.slp_vectorization = vectorize
        pb = llvm.create_pass_builder(tm, pto)
        pm = pb.getModulePassManager()
    # Without llvmlite's lock only in a context of the caller's own (compile_parts' threads).
    try:
        llvm_private.run_module_passes(pm, mod, pb, unlocked=context is not None)
    finally:
        llvm_private.close_pass_manager(pm)  # llvmlite would keep it (and its passes' state)
    if suffixes:
        pto1 = llvm.create_pipeline_tuning_options(speed_level=1)
        pto1.loop_vectorization = pto1.slp_vectorization = False  # GEMM loops are as written
        pb1 = llvm.create_pass_builder(tm, pto1)
        fpm = pb1.getFunctionPassManager()
        try:
            for fn in mod.functions:
                if not fn.is_declaration and fn.name.endswith(suffixes):
                    fpm.run(fn, pb1)
        finally:
            llvm_private.close_pass_manager(fpm)
    try:
        mod.verify()
    except RuntimeError as e:
        raise CodegenError(f"LLVM produced an invalid module for graph {name!r}: {e}") from None
    return mod


# LLVM's loop strength reduction, which runs in code generation, took a third of the machine
# code time of the 784-256-128-10 Adam step's GEMM modules (the microkernels' unrolled loops:
# 12x16 tile 0.031 -> 0.012 s) and changed no run time measured on x86-64 (784 step b32-b512,
# predict b1/b256, GEMM n=128..1024 via predict: within +-3 %, interleaved A/B). Other
# architectures keep it (not measured there: fewer addressing modes may need it).
_NO_LSR_ARCHES = ("x86_64",)
_option_lock = threading.Lock()
_option_users = 0  # emit_object calls running with the option set


@contextlib.contextmanager
def _codegen_options(tm: llvm.TargetMachine) -> Iterator[None]:
    """``-disable-lsr`` while this thread's code generation for ``tm`` runs. LLVM options are
    process-wide (llvm.set_option): set when the first of graphc's concurrent emit_object calls
    starts, back to LLVM's default when the last ends, so that other users of llvmlite in the
    process (numba) compile as before outside graphc's compiles."""
    global _option_users
    if not tm.triple.startswith(_NO_LSR_ARCHES):
        yield
        return
    with _option_lock:
        if _option_users == 0:
            llvm.set_option("graphc", "-disable-lsr=1")
        _option_users += 1
    try:
        yield
    finally:
        with _option_lock:
            _option_users -= 1
            if _option_users == 0:
                llvm.set_option("graphc", "-disable-lsr=0")


def emit_object(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> bytes:
    """``tm.emit_object(mod)``, without holding llvmlite's lock during code generation where
    the installed llvmlite allows it (``llvm_private``); see _codegen_options."""
    try:
        with _codegen_options(tm):
            return llvm_private.emit_object(mod, tm)
    except RuntimeError as e:
        raise CodegenError(str(e)) from None


def compile_threads() -> int:
    """Threads for compile_parts: ``$GRAPHC_COMPILE_THREADS``, else the cores this process may
    run on (``os.sched_getaffinity``).

    Raises:
        ArgumentError: GRAPHC_COMPILE_THREADS is set but not a whole number >= 1.
    """
    from .threads import threads_or_cores

    return threads_or_cores("GRAPHC_COMPILE_THREADS")


def module_text(module: ir.Module, tm: llvm.TargetMachine) -> str:
    """The text of ``module`` with the triple and data layout of ``tm``."""
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    return str(module)


def compile_parts(
    parts: list[tuple[ir.Module, str]],
    target_cpu: str,
    name: str,
    timings: dict | None = None,
    stats: list[dict] | None = None,
) -> tuple[list[str], list[tuple[llvm.ModuleRef, bytes]]]:
    """Optimize (``PIPELINES[kind]``) and compile each (module, kind) to an object file;
    returns the modules' texts and (optimized module, object file) per part.

    Parts run in parallel threads (one per part when ``compile_threads()`` > 1), each in an
    LLVM context and with a target machine of its own (LLVM is thread-safe across contexts;
    the threads call LLVM without llvmlite's lock and without the GIL). Each part is handed to a thread as soon as
    its text is printed, so printing the next one (Python) overlaps LLVM's work on this one.
    ``timings`` receives "llvm_text" (printing) and "llvm_opt", "machine_code": the sums
    over parts of the seconds each took (with threads, more than the wall time they took).
    ``stats`` (benchmarks/compile_time.py) receives one dict per part: its kind, the bytes of
    its IR text and object file, its functions, and per phase (print, opt, codegen) the wall
    seconds and the CPU seconds of the thread that ran it.
    """
    tm0 = target_machine(target_cpu)
    texts: list[str] = []
    results: list = [None] * len(parts)
    spent: list = [None] * len(parts)

    def work(i: int, kind: str) -> None:
        tm = target_machine(target_cpu)
        ctx = llvm.create_context()
        t0, c0 = time.perf_counter(), time.thread_time()
        mod = optimize(texts[i], tm, name, kind=kind, context=ctx)
        t1, c1 = time.perf_counter(), time.thread_time()
        obj = emit_object(mod, tm)
        spent[i] = (t1 - t0, time.perf_counter() - t1, c1 - c0, time.thread_time() - c1)
        results[i] = (mod, obj)

    # One thread per part when several cores may run them (build_module makes one GEMM part
    # per core, plus the main module): with one per core, the part printed last waited for
    # the first to finish although the cores' shares would have been even; the system
    # shares the cores between the parts' threads instead.
    nthreads = len(parts) if compile_threads() > 1 else 1
    pool = concurrent.futures.ThreadPoolExecutor(nthreads) if nthreads > 1 else None
    printing = 0.0
    printed = []
    try:
        futures = []
        for i, (module, kind) in enumerate(parts):
            t0, c0 = time.perf_counter(), time.thread_time()
            texts.append(module_text(module, tm0))
            printed.append((time.perf_counter() - t0, time.thread_time() - c0))
            printing += printed[-1][0]
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
    if stats is not None:
        for i, (_, kind) in enumerate(parts):
            stats.append(
                {
                    "kind": kind,
                    "ir_bytes": len(texts[i]),
                    "functions": texts[i].count("\ndefine "),
                    "object_bytes": len(results[i][1]),
                    "print_s": printed[i][0],
                    "print_cpu_s": printed[i][1],
                    "opt_s": spent[i][0],
                    "opt_cpu_s": spent[i][2],
                    "codegen_s": spent[i][1],
                    "codegen_cpu_s": spent[i][3],
                }
            )
    return texts, results


_frame_engine: Any = None  # the engine holding graphc_call_frame (made once per process)


def call_frame_address() -> int:
    """The address of ``int32_t graphc_call_frame(const uint64_t frame[7])``, which calls
    ``frame[0]`` (an entry point: ENTRY_TYPE of codegen/kernels.py) with ``frame[1..6]`` as its
    arguments (params, state, workspace, inputs, outputs, n) and returns its result.

    A ctypes call with one argument costs about 0.16 us against 0.54 us with the entry's six
    (measured on this project's machine): the runtime's per-call paths (runtime/executable.py)
    keep each entry's arguments in a frame and call through this. Compiled for the host the
    first time it is asked for (some 10 ms), then kept for the life of the process."""
    global _frame_engine
    with _lock:
        if _frame_engine is None:
            _init()
            tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
            text = f"""
target triple = "{tm.triple}"
define i32 @graphc_call_frame(ptr %f) nounwind {{
  %fp = load ptr, ptr %f
  %a1 = getelementptr inbounds i64, ptr %f, i64 1
  %p = load ptr, ptr %a1
  %a2 = getelementptr inbounds i64, ptr %f, i64 2
  %s = load ptr, ptr %a2
  %a3 = getelementptr inbounds i64, ptr %f, i64 3
  %w = load ptr, ptr %a3
  %a4 = getelementptr inbounds i64, ptr %f, i64 4
  %i = load ptr, ptr %a4
  %a5 = getelementptr inbounds i64, ptr %f, i64 5
  %o = load ptr, ptr %a5
  %a6 = getelementptr inbounds i64, ptr %f, i64 6
  %n = load i64, ptr %a6
  %r = tail call i32 %fp(ptr %p, ptr %s, ptr %w, ptr %i, ptr %o, i64 %n)
  ret i32 %r
}}
"""
            mod = llvm.parse_assembly(text)
            mod.verify()
            engine = llvm.create_mcjit_compiler(mod, tm)
            engine.finalize_object()
            _frame_engine = engine
        return _frame_engine.get_function_address("graphc_call_frame")


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
        fixed = dispatch_ns_env()
        if fixed is not None:  # before the workers start: set_num_threads then skips its probe
            self.dispatch_cost(prefix, fixed)
        self._set_threads(threads)
        return self.threads()

    def threads(self) -> int:
        """The thread count the module's pool runs with now (1 without a pool)."""
        return int(self._get_threads()) if self._set_threads is not None else 1

    def dispatches(self, prefix: str) -> int:
        """How many times the module's kernels handed work to the pool (``PREFIX_pool_
        dispatches``; codegen/threads.py): work below the thresholds never does."""
        addr = self.engine.get_function_address(f"{prefix}_pool_dispatches")
        return int(ctypes.CFUNCTYPE(ctypes.c_int64)(addr)()) if addr else 0

    def dispatch_cost(self, prefix: str, ns: int = -1) -> int:
        """The cost of one dispatch to the pool in ns, as its probe measured it (codegen/
        threads.py: the split thresholds rise with it); ``ns`` > 0 fixes it at ``ns`` (no more
        probes), 0 measures it now and keeps probing. 0 when never measured (one thread) or
        the module has no pool."""
        return pool_call(self.engine, f"{prefix}_pool_dispatch_cost", ns)

    def observe_dispatch(self, prefix: str, ns: int) -> int:
        """Record ``ns`` as if a probe of the pool had measured it (codegen/threads.py: the
        cost is the median of the last probes) and return the cost; 0 without a pool. Tests
        use it: a late worker cannot be produced on demand."""
        return pool_call(self.engine, f"{prefix}_pool_observe", ns)

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
