"""The fixed C of generated libraries lives in real files (codegen/templates/); each compiles
on its own, with stand-ins for the names the generator defines, under -Wall -Wextra -Werror."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from graphc.codegen import aot

TEMPLATES = pathlib.Path(aot.__file__).parent / "templates"

# the names c_source defines before pasting wrapper.c (see the template's header comment)
WRAPPER_PRELUDE = """
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
typedef struct {
    void *params;    int64_t params_bytes;
    void *state;     int64_t state_bytes;
    void *workspace; int64_t workspace_bytes;
} m_ctx;
#define GC_CTX m_ctx
#define GC_FN(f) m_##f
#define GC_API __attribute__((visibility("default")))
#define GC_PARAM_BYTES ((int64_t)256)
#define GC_STATE_BYTES ((int64_t)64)
#define GC_MIN_ALIGN 16
#define GC_WEIGHTS_FILE_BYTES ((int64_t)(48 + 256))
#define GC_OK 0
#define GC_ERR_NULL 1
#define GC_ERR_BUFFER 2
#define GC_ERR_ALIGN 3
#define GC_ERR_WEIGHTS 4
#define GC_ERR_IO 5
static const unsigned char wheader[48] = {0};
#ifdef GC_EMBEDDED_WEIGHTS
static const unsigned char weights[256] = {0};
static const unsigned char state_init[64] = {0};
#endif
"""
# what the generated entries do with the helpers the template leaves to them
WRAPPER_USES = "\nint m_check(const m_ctx *c) { return check_workspace(c, 64); }\n"


@pytest.mark.parametrize(
    "defines",
    [[], ["-DGC_EMBEDDED_WEIGHTS=weights", "-DGC_STATE_INIT=state_init"]],
    ids=["", "embed"],
)
def test_wrapper_template_compiles_alone_without_warnings(tmp_path, defines) -> None:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "wrapper.c"
    src.write_text(WRAPPER_PRELUDE + (TEMPLATES / "wrapper.c").read_text() + WRAPPER_USES)
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *defines, "-c", str(src), "-o"]
    r = subprocess.run([*cmd, str(tmp_path / "w.o")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_generated_source_carries_the_template() -> None:
    assert "static uint32_t crc32_update" in aot.wrapper_template()
