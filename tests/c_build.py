"""The tests' one command that builds a C program against an exported graphc library
(``-I`` its header's folder, ``-L`` / ``-l`` the library, ``-Wl,-rpath`` so that the program
finds it at run time), and ``run_c``, which builds and runs one and returns what it prints."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

CC = shutil.which(os.environ.get("CC", "cc") or "cc")  # None: the tests that need it skip


def build_program(
    src: str | Path,
    folder: str | Path,
    lib: str,
    exe: str | Path,
    flags: Sequence[str],
    *,
    cc: str | Sequence[str] | None = None,
    rpath: str | None = None,
) -> str:
    """Compile and link C program ``src`` with ``flags`` against lib``lib``.so and its header
    in ``folder`` into ``exe`` (compiler ``cc``, a program or a command line, default CC;
    run-time search path ``rpath``, default ``folder``); asserts that it built, showing the
    command and the compiler's messages. Returns ``exe`` as a str."""
    compiler = [cc] if isinstance(cc, str) else list(cc or [CC])
    assert None not in compiler, "no C compiler (cc or $CC) on PATH"
    cmd = [*compiler, *flags, f"-I{folder}", str(src), f"-L{folder}", f"-l{lib}",
           f"-Wl,-rpath,{rpath or folder}", "-o", str(exe)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return str(exe)


def run_c(folder: Path, source: str, lib: str) -> list[str]:
    """The lines that C program ``source``, built as ``folder``/t.c (C11, -Wall -Werror)
    against lib``lib``.so and its header in ``folder``, prints."""
    (folder / "t.c").write_text(source)
    exe = build_program(folder / "t.c", folder, lib, folder / "t", ["-std=c11", "-Wall", "-Werror"])
    return subprocess.run([exe], capture_output=True, text=True, timeout=60).stdout.splitlines()
