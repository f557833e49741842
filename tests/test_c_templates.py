"""The fixed C of generated libraries lives in real files (codegen/templates/); each compiles
on its own, with stand-ins for the names the generator defines, under -Wall -Wextra -Werror."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from graphc.codegen import aot, ctemplate
from graphc.ir.errors import CodegenError

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
#define GC_ERR_OVERLAP 6
#define GC_ERR_BUSY 7
#define GC_LIB_NAME "m"
const char *m_strerror(int code);
static const unsigned char wheader[48] = {0};
#ifdef GC_EMBEDDED_WEIGHTS
static const unsigned char weights[256] = {0};
static const unsigned char state_init[64] = {0};
#endif
"""
# what the generated entries do with the helpers the template leaves to them
WRAPPER_USES = """
int m_check(const m_ctx *c) { return check_workspace(c, 64, 1); }
int m_overlap(const m_ctx *c, const float *x) { return overlaps_ctx(c, x, 4, 64, 1) || overlap(x, 4, c, 8); }
"""


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


def _cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    return cc


# header.h's numeric placeholders, as a library's values would look (stand-ins; NAME, UPPER
# and the strings' placeholders need none)
HEADER_VALUES = {
    "ABI": 1,
    "WEIGHTSVERSION": 2,
    "EMBED": 1,
    "HASINFER": 1,
    "HASTRAINSTEP": 1,
    "ROWSINDEPENDENT": 1,
    "HASTRAINGRADS": 0,
    "HASAPPLYUPDATE": 0,
    "NUMERICSBASE": 100,
    "ALIGN": 64,
    "MINALIGN": 8,
    "MAXBATCH": 1024,
    "PARAMBYTES": 256,
    "STATEBYTES": 64,
    "GRADBYTES": 256,
    "WEIGHTSFILEBYTES": 304,
    "WORKSPACEBYTES": "((int64_t)4096)",
    "LABELTYPE": "int32_t",
    "LABELISINT": 1,
    "FLOATTYPE": "float",
}
# a caller of the unfilled header: every fixed macro and function in use
HEADER_USE = """
#define GRAPHC_MODEL_ALIASES
#define GCUPPER_GCX_ROW_ELEMS 4
#define GCUPPER_GCY_ROW_ELEMS 2
#define GCUPPER_GCLABEL_ROW_ELEMS 1
#define GCUPPER_GCLABEL_CLASSES 2
#include "header.h"
#include <stdlib.h>
int main(void) {
    static GCNAME_ctx ctx;
    int64_t ws = GCUPPER_WORKSPACE_BYTES(3) + GCUPPER_MAX_BATCH + GCUPPER_WEIGHTS_FILE_BYTES;
    int flags = GCUPPER_HAS_INFER + GCUPPER_HAS_TRAIN_STEP + GCUPPER_HAS_TRAIN_GRADS +
                GCUPPER_HAS_APPLY_UPDATE + GCUPPER_INFER_ROWS_INDEPENDENT + GCUPPER_ERR_NUMERICS +
                GCUPPER_ABI_VERSION + GCUPPER_WEIGHTS_VERSION + GCUPPER_WEIGHTS_EMBEDDED +
                GCUPPER_ALIGN + GCUPPER_MIN_ALIGN;
    const char *s = GCUPPER_GRAPHC_VERSION GCUPPER_TARGET GCUPPER_TARGET_CPU;
    model_label_t label = MODEL_LABEL_IS_INT * MODEL_LABEL_CLASSES * MODEL_LABEL_ROW_ELEMS;
    model_ctx *mc = &ctx;
    model_float_t one = 1;
    ws += MODEL_X_ROW_ELEMS * MODEL_Y_ROW_ELEMS + MODEL_MAX_BATCH + MODEL_PARAM_BYTES + label;
    ws += MODEL_STATE_BYTES + MODEL_GRAD_BYTES + MODEL_WEIGHTS_FILE_BYTES + model_init(mc) + (int64_t)one;
    ctx.params = malloc((size_t)(GCUPPER_PARAM_BYTES + GCUPPER_STATE_BYTES + GCUPPER_GRAD_BYTES));
    ctx.workspace_bytes = GCNAME_workspace_size(ws);
    if (GCNAME_init(&ctx) || GCNAME_load_weights(&ctx, s) || GCNAME_read_weights(&ctx, s, 1) ||
        GCNAME_write_weights(&ctx, ctx.params, 1) || GCNAME_set_num_threads(flags) < 0)
        return GCNAME_get_num_threads() + (GCNAME_strerror(1) == GCNAME_graphc_meta());
    return 0;
}
"""


@pytest.mark.parametrize("lang", ["c", "c++"])
def test_header_template_compiles_alone_without_warnings(tmp_path, lang) -> None:
    """header.h unfilled: its placeholders are C tokens, so the fixed C is checked as C99 and
    as C++ (the generated header is included from both); then used, with stand-in values."""
    cc = _cc()
    (tmp_path / "header.h").write_text((ctemplate.TEMPLATES / "header.h").read_text())
    (tmp_path / "use.c").write_text(HEADER_USE)
    std = ["-x", "c", "-std=c99"] if lang == "c" else ["-x", "c++", "-std=c++11"]
    warn = ["-Wall", "-Wextra", "-Werror", "-pedantic"]
    values = [f"-DGC{k}={v}" for k, v in HEADER_VALUES.items()]
    for src in ("header.h", "use.c"):
        cmd = [cc, *std, *warn, *values, f"-I{tmp_path}", "-fsyntax-only"]
        r = subprocess.run([*cmd, str(tmp_path / src)], capture_output=True, text=True)
        assert r.returncode == 0, f"{src}: {r.stderr}"


EXAMPLES_C = pathlib.Path(__file__).parent.parent / "examples" / "c"


@pytest.mark.parametrize("case", ["digits", "split", "bce"])
def test_generated_header_compiles_with_the_c_examples(tmp_path, case) -> None:
    """The filled header (tests/test_c_golden.py's plans: the same text byte for byte) with
    examples/c/predict.c and train.c as their Makefile builds them, and mpi_train.c (mpicc)
    where the library has train_grads."""
    from test_c_golden import generated

    cc = _cc()
    header, _ = generated(case)
    (tmp_path / f"{case}.h").write_text(header)
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", f'-DMODEL_HEADER="{case}.h"']
    progs = [(cc, "predict.c"), (cc, "train.c")]
    if "_HAS_TRAIN_GRADS 1" in header and shutil.which("mpicc"):
        progs.append((shutil.which("mpicc"), "mpi_train.c"))
    for compiler, prog in progs:
        cmd = [compiler, *flags, f"-I{tmp_path}", f"-I{EXAMPLES_C}", "-fsyntax-only"]
        r = subprocess.run([*cmd, str(EXAMPLES_C / prog)], capture_output=True, text=True)
        assert r.returncode == 0, f"{prog}: {r.stderr}"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v, f, s: v.pop("PARAMBYTES"), r"placeholders named but not given \['PARAMBYTES'\]"),
        (lambda v, f, s: v.update(EXTRA=1), r"given but not named \['EXTRA'\]"),
        (lambda v, f, s: f.pop("embed"), r"flags named but not given \['embed'\]"),
        (lambda v, f, s: s.pop("ports"), r"slots named but not given \['ports'\]"),
    ],
)
def test_template_and_generator_out_of_step_is_an_error(change, message, monkeypatch) -> None:
    """c_header's values, flags and slots for a model, one of them then taken away or added:
    fill names what the template and the generator disagree on."""
    from test_c_golden import generated

    calls = []
    monkeypatch.setattr(aot, "fill", lambda *args: calls.append(args) or ctemplate.fill(*args))
    generated("digits")
    name, values, flags, slots = (dict(a) if isinstance(a, dict) else a for a in calls[0])
    change(values, flags, slots)
    with pytest.raises(CodegenError, match=message):
        ctemplate.fill(name, values, flags, slots)


def test_template_directives_pair_up(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ctemplate, "TEMPLATES", tmp_path)
    (tmp_path / "t.h").write_text(
        "a GCX\n//@ if f\nb\n//@ if not g\nc\n//@ else\nd\n//@ end\n//@ s\n//@ end\n"
    )
    assert ctemplate.fill("t.h", {"X": 7}, {"f": True, "g": True}, {"s": ["GCX"]}) == [
        "a 7", "b", "d", "GCX"
    ]  # fmt: skip
    assert ctemplate.fill("t.h", {"X": 7}, {"f": False, "g": False}, {"s": ["e"]}) == ["a 7"]
    (tmp_path / "u.h").write_text("//@ if f\nb\n")
    with pytest.raises(CodegenError, match="has no `//@ end`"):
        ctemplate.fill("u.h", {}, {"f": True}, {})
    (tmp_path / "v.h").write_text("b\n//@ end\n")
    with pytest.raises(CodegenError, match="without its `//@ if`"):
        ctemplate.fill("v.h", {}, {}, {})


def test_generated_source_carries_the_template() -> None:
    assert "static uint32_t crc32_update" in aot.wrapper_template()


def test_every_template_ships_with_the_package() -> None:
    """pyproject.toml's package-data of graphc.codegen.templates (the package of
    codegen/templates/) covers every file there, so a regular install (not only an editable
    one) carries them."""
    import fnmatch
    import tomllib

    pyproject = pathlib.Path(__file__).parent.parent / "pyproject.toml"
    globs = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    files = sorted(f.name for f in TEMPLATES.iterdir())
    assert "header.h" in files and "wrapper.c" in files
    for name in files:
        ok = any(fnmatch.fnmatch(name, g) for g in globs["graphc.codegen.templates"])
        assert ok, f"codegen/templates/{name} is not in pyproject's package-data"


NASTY = [
    "plain",
    "x'??/",  # a trigraph for a backslash: ended the string literal under -std=c99
    "a??=b??!c???/d",
    'quote " backslash \\ end\\',
    "comment */ opener /* ",
    "é ü 漢 \x01 \x7f tab\tnewline\nend",
]


def test_user_text_in_generated_c_strings_and_comments(tmp_path) -> None:
    """Names and source locations reach the generated C as string literals (NAME_strerror's
    messages) and comments (the header's numerics sites): under -std=c99 -trigraphs with
    warnings as errors, each string must mean exactly its UTF-8 bytes, and no comment may end
    early, nest or splice the next line."""
    lines = ["#include <stdio.h>", "int main(void) {"]
    for i, text in enumerate(NASTY):
        lines.append(f"/* {aot.c_comment_text(text)} */")
        lines.append(f"    const char *s{i} = {aot.c_string_literal(text)};")
        lines.append(f'    fputs(s{i}, stdout); fputs("\\n---\\n", stdout);')
    lines += ["    return 0;", "}", ""]
    src = tmp_path / "strings.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "strings"
    flags = ["-std=c99", "-trigraphs", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    subprocess.run([_cc(), *flags, str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    assert out == b"".join(t.encode() + b"\n---\n" for t in NASTY)
