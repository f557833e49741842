"""Native memory per uncached compile: what LLVM allocates for a compile is freed with it.

llvmlite (0.46 to 0.50) never deletes its new-pass-manager pipelines (codegen/llvm_private.py
close_pass_manager): before graphc freed them itself, each uncached gc.compile of a small
model kept ~210 KiB of malloc'd memory (measured: 208 KiB in use, 211 KiB RSS per compile;
after: 7.6 KiB in use, llvmlite's PassInstrumentationCallbacks per PassBuilder, 23 KiB RSS).
Measured in a fresh process: the glibc allocator's bytes in use (mallinfo2) and the resident
set after malloc_trim, over N compiles of the same model after a warm-up.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import ctypes, gc as pygc, json, os, sys
import numpy as np
import graphc as gc
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MallInfo2
def in_use():
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def build():
    x = gc.input("x", ("N", 8))
    y = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 16, "relu"), 4)
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, y), gc.SGD(lr=0.01),
                   name="mem", threads=1)
    m.predict(np.ones((4, 8), np.float32))
    return m
n = int(sys.argv[1])
for _ in range(3):
    build()
pygc.collect(); libc.malloc_trim(0)
u0, r0 = in_use(), rss()
for _ in range(n):
    m = build()
    del m
pygc.collect(); libc.malloc_trim(0)
print(json.dumps({"in_use": (in_use() - u0) / n, "rss": (rss() - r0) / n}))
"""


def _glibc_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _glibc_mallinfo2(), reason="glibc mallinfo2"
)
def test_uncached_compiles_free_their_native_memory(tmp_path) -> None:
    env = dict(os.environ, GRAPHC_NO_CACHE="1", GRAPHC_COMPILE_THREADS="1")
    env["GRAPHC_CACHE_DIR"] = str(tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, "8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    per = json.loads(r.stdout.strip().splitlines()[-1])
    # Before the fix: 208 KiB in use and 211 KiB resident per compile; after: 8 and 23.
    assert per["in_use"] < 48 * 1024, per
    assert per["rss"] < 160 * 1024, per


def test_close_pass_manager_frees_once() -> None:
    import llvmlite.binding as llvm

    from graphc.codegen import llvm_private, target

    tm = target.target_machine("native")
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
    for pm in (pb.getModulePassManager(), pb.getFunctionPassManager()):
        llvm_private.close_pass_manager(pm)
        assert pm.closed
        llvm_private.close_pass_manager(pm)  # a second close is a no-op
