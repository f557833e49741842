"""graphc.codegen.toolchain: the C compiler (and archiver) that links a library for a target.

The order in which a compiler is chosen (the first that exists wins):

1. the ``cc`` argument (``graphc compile --cc``, ``Model.export(cc=...)``), used as given;
2. ``$GRAPHC_CC``, used as given;
3. for the host's architecture only: ``$CC``, then ``cc`` on PATH;
   (a command given in 1-3 that is not on PATH is an error, not a reason to look further)
4. the distribution's cross gcc for the triple: ``TRIPLE-gcc`` (``aarch64-linux-gnu-gcc``,
   Debian/Ubuntu package ``gcc-aarch64-linux-gnu``; on the host ``x86_64-linux-gnu-gcc``);
5. ``clang --target=TRIPLE -fuse-ld=lld`` when clang and ld.lld are on PATH and the target's
   C library is installed where Debian puts cross sysroots (``/usr/TRIPLE``);
6. ``python -m ziglang cc -target TRIPLE`` when the ``ziglang`` wheel is installed (it brings
   its own C library for every target).

A command given in 1-3 is trusted to build for the target; the others are built for it. The
archiver for static libraries (``.a``) follows the compiler: ``TRIPLE-ar`` next to a
``TRIPLE-gcc``, ``llvm-ar`` for clang, ``ziglang ar``, else ``ar``.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from dataclasses import dataclass

from graphc.ir.errors import TargetError

from .target import Target


@dataclass(frozen=True)
class Toolchain:
    """A C compiler command for one target (``cc``: argv prefix) and its archiver."""

    cc: tuple[str, ...]
    ar: tuple[str, ...]
    how: str  # which rule of the module docstring chose it

    def __str__(self) -> str:
        return f"{shlex.join(self.cc)} ({self.how})"


_EXPLICIT = {"--cc": "--cc ", "$GRAPHC_CC": "GRAPHC_CC=", "$CC": "CC="}


def _ar_for(cc: list[str], triple: str) -> list[str]:
    prog = os.path.basename(cc[0])
    if cc[-2:] == ["ziglang", "cc"] or "ziglang" in cc:
        return [sys.executable, "-m", "ziglang", "ar"]
    if prog.endswith("gcc") and "-" in prog:
        cand = prog[: -len("gcc")] + "ar"
        if shutil.which(cand):
            return [cand]
    for cand in (
        ([f"{triple}-ar"] if triple else [])
        + (["llvm-ar"] if "clang" in prog else [])
        + ["ar", "llvm-ar"]
    ):
        if shutil.which(cand):
            return [cand]
    return ["ar"]


def _candidates(target: Target, cc: str | None) -> list[tuple[list[str], str]]:
    """(argv, rule) in the documented order; argv[0] may be missing from PATH."""
    triple = target.triple
    out: list[tuple[list[str], str]] = []
    if cc:
        out.append((shlex.split(cc), "--cc"))
    if os.environ.get("GRAPHC_CC", "").strip():
        out.append((shlex.split(os.environ["GRAPHC_CC"]), "$GRAPHC_CC"))
    if target.is_host:
        if os.environ.get("CC", "").strip():
            out.append((shlex.split(os.environ["CC"]), "$CC"))
        out.append((["cc"], "cc on PATH"))
    out.append(([f"{triple}-gcc"], "the distribution's cross gcc"))
    if shutil.which("clang") and shutil.which("ld.lld") and os.path.isdir(f"/usr/{triple}"):
        out.append((["clang", f"--target={target.llvm_triple}", "-fuse-ld=lld"], "clang with lld"))
    if importlib.util.find_spec("ziglang") is not None:
        out.append(([sys.executable, "-m", "ziglang", "cc", "-target", triple], "ziglang wheel"))
    return out


def find_toolchain(target: Target, cc: str | None = None) -> Toolchain:
    """The C toolchain that links libraries for ``target`` (order: the module docstring).

    Raises:
        TargetError: an explicitly given compiler (``cc``, ``$GRAPHC_CC``) is not on PATH, or
            none is found for the target (the message names the package to install).
    """
    for argv, how in _candidates(target, cc):
        if not argv:
            continue
        if shutil.which(argv[0]) is None:
            if how in _EXPLICIT:
                where = f"{_EXPLICIT[how]}{shlex.join(argv)!r}"
                raise TargetError(
                    f"no C compiler found ({where} is not on PATH): give a compiler's full "
                    "path, or leave it out to search for one (order: graphc.codegen.toolchain). "
                    + _install_hint(target)
                )
            continue
        return Toolchain(tuple(argv), tuple(_ar_for(argv, target.triple)), how)
    raise TargetError(
        f"no C compiler for {target.triple} found (tried: "
        f"{', '.join(shlex.join(c) for c, _ in _candidates(target, None))}): graphc needs one to "
        f"link the library. {_install_hint(target)}"
    )


def _install_hint(target: Target) -> str:
    if target.is_host:
        return (
            "Install one (Debian/Ubuntu: apt-get install gcc; Fedora: dnf install gcc; "
            "macOS: xcode-select --install) or set $CC to a compiler's path; --emit llvm or "
            "asm needs none"
        )
    return (
        f"Install the cross compiler (Debian/Ubuntu: apt-get install {target.arch.packages}), "
        "or pip install ziglang, or name a compiler with --cc / $GRAPHC_CC; --emit llvm or "
        "asm needs none"
    )


def available_toolchains() -> dict[str, Toolchain | None]:
    """For each supported triple: the toolchain ``find_toolchain`` would use, or None."""
    from .target import ARCHES, resolve_target

    out: dict[str, Toolchain | None] = {}
    for a in ARCHES.values():
        if not a.supported:
            continue
        try:
            out[a.triple] = find_toolchain(resolve_target(a.triple))
        except TargetError:
            out[a.triple] = None
    return out
