"""Ahead-of-time emission: an object file for a chosen CPU, the public C wrappers, the C header
and the checked weights file of a shared library.

The JIT and the shared library run the *same* generated kernels: ``graphc.compiler`` builds the
module (entries ``NAME_infer``/``NAME_train_step`` with the internal ABI of ``codegen/kernels.py``)
and this module only renames those entries to hidden symbols ``NAME__graphc_ENTRY``, adds the
embedded weights as a read-only global, and emits the object for the target CPU.

The public API is a generated C file, compiled by ``cc`` together with that object into the
``.so``. C rather than LLVM IR for the wrappers because they are argument checks, ``memcpy``,
``stdio`` for the weights file and a CRC: plain C is easier to read and audit than IRBuilder
code for them, it is compiled by the same compiler that checks the header, and a C compiler is
needed to link the shared library anyway. Every buffer belongs to the caller (``NAME_ctx``),
so two contexts can run in two threads; the wrappers' only mutable global state is the table
of the contexts calls are running on (wrapper.c's enter_ctx: a second call on a running ctx
gets ERR_BUSY).

Weights file layout (little-endian; ``weights_header``)::

    0   char[8]  "GCWEIGHT"
    8   u32      format version (WEIGHTS_VERSION)
    12  u32      header bytes H (a multiple of 64; the parameter bytes follow at offset H)
    16  u64      parameter bytes P (NAME_PARAM_BYTES)
    24  u32      parameter count
    28  u32      CRC-32 of the P parameter bytes (zlib's CRC-32, polynomial 0xEDB88320)
    32  u8       byte order of the parameter values: 1 = little-endian (the only one written)
    33  u8       bits of the header's size and offset fields: 64
    34  u8[6]    zero
    40  u32 len, bytes: the model name, zero-padded to 8 bytes
        per parameter: u32 rank, u32 dtype (0 f32, 1 f64, 2 i32), u64 offset, u64 bytes,
                       u64 dims[rank], u32 name length, name bytes, zero-padded to 8 bytes
        zero padding to H

A library accepts a file whose first H bytes equal its own expected header (CRC field aside),
whose size is exactly H + P and whose CRC matches, and only on a little-endian machine: a file
(or library) of another byte order or field width is rejected, never misread. Writers convert
host-order parameters to little-endian (``params_little_endian``).
"""

from __future__ import annotations

import array
import json
import re
import struct
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.ir.batch import rows_independent
from graphc.ir.errors import CodegenError
from graphc.ir.graph import Graph
from graphc.ir.plan import ALIGN, Schedule
from graphc.ir.types import BATCH, DTYPE_INFO, TensorType

from .checks import CHECK_BASE, InputCheck
from .ctemplate import fill, template_text
from .kernels import NUMERICS_BASE
from .lltypes import I8
from .target import optimize
from .threads import thread_pool

# The C ABI's version: bumped whenever a prototype, a struct, a code's meaning or the layout of
# a buffer changes for a program built against an earlier header. 2 (897ed46): an imported
# model's int32 / int64 outputs are int32_t * / int64_t * (float * at 1). Every function of the
# header but NAME_graphc_meta is exported as NAME_f_abiV (abi_symbol) and the header maps
# NAME_f to it, so a program built against another version's header finds none of its
# functions (the dynamic linker's "undefined symbol": at load with -z now / LD_BIND_NOW, else
# at its first call, before any buffer is read). graphc.load reads the version from the meta and
# calls every version from 1 (unversioned names) to ABI_VERSION; it refuses a later one.
ABI_VERSION = 2
WEIGHTS_VERSION = 2  # 2: byte order and field width at 32
WEIGHTS_MAGIC = b"GCWEIGHT"
MAX_BATCH = 1 << 30  # keeps every size expression far from int64 overflow
ALIGN_STATE_COPY = 64  # the library's state image (what infer reads given no state)
PUBLIC_ENTRIES = ("infer", "train_step", "train_grads", "apply_update")
# Entries that change params/state (need ctx->state); train_grads + apply_update are
# train_step split around the caller's all-reduce of the GRAD_BYTES at the workspace's start.
TRAIN_ENTRIES = ("train_step", "train_grads", "apply_update")
THREAD_FUNCTIONS = ("set_num_threads", "get_num_threads")  # NAME_...: wrapped by the C API
# Functions of the header besides the entries; NAME_graphc_meta keeps its name in every ABI
# version (graphc.load reads the version from it).
API_FUNCTIONS = (
    "strerror",
    "last_error",
    "workspace_size",
    "init",
    "load_weights",
    "read_weights",
    "write_weights",
    *THREAD_FUNCTIONS,
)
WRAPPER_LOCALS = ("gc_in", "gc_out", "gc_lr", "gc_rc", "gc_loss_scale", "gc_row0", "gc_slot")

ERRORS = [  # (macro suffix, code, message); mirrored in runtime/library.py by code
    ("OK", 0, "success"),
    ("ERR_NULL", 1, "a required pointer is NULL"),
    ("ERR_BATCH", 2, "batch size n is outside 1..MAX_BATCH"),
    ("ERR_BUFFER", 3, "a buffer is smaller than the call needs"),
    ("ERR_ALIGN", 4, "a buffer is not aligned to MIN_ALIGN bytes"),
    (
        "ERR_WEIGHTS",
        5,
        "weights file rejected: wrong size, magic, version, model, shapes or checksum",
    ),
    ("ERR_IO", 6, "weights file cannot be opened or read, or is not a regular file"),
    ("ERR_INTERNAL", 7, "the compiled kernels reported an error"),
    ("ERR_CPU", 8, "this CPU lacks instructions the library was built for (see TARGET_CPU)"),
    # The input checks of train_step (codegen/checks.py): run before anything is written.
    ("ERR_LABEL", 9, "a class label is outside 0..CLASSES-1; nothing was written"),
    ("ERR_NONFINITE", 10, "an input holds NaN or Inf; nothing was written"),
    (
        "ERR_TARGET",
        11,
        "a binary cross-entropy target is NaN or outside [0, 1]; nothing was written",
    ),
    ("ERR_LR", 12, "the learning rate is NaN, infinite or negative; nothing was written"),
    (
        "ERR_ONE_ROW",
        13,
        "a training batch of 1 row through batch_norm (its variance is 0: no gradient passes); "
        "pass n >= 2; nothing was written",
    ),
    (
        "ERR_LOOKUP",
        14,
        "an index input (an embedding lookup's ids) holds a value outside the whole numbers "
        "its check lets through (the header's rule for it: -ROWS..ROWS-1 of its table, or "
        "the range an imported graph's computed index needs); NAME_last_error names the "
        "row; nothing was written",
    ),
    (
        "ERR_OVERLAP",
        15,
        "an output array overlaps another array of the call, or an array overlaps ctx's "
        "params, state or workspace (or params overlap state or workspace); nothing was written",
    ),
    (
        "ERR_BUSY",
        16,
        "another call is running on this ctx (one ctx serves one call at a time: give each "
        "thread its own ctx and workspace); nothing was written",
    ),
]
CHECK_ERRORS = {
    "classes": "ERR_LABEL",
    "finite": "ERR_NONFINITE",
    "unit": "ERR_TARGET",
    "lr": "ERR_LR",
    "index": "ERR_LOOKUP",
    "divisor": "ERR_LOOKUP",
}


C_KEYWORDS = frozenset(
    {
        "auto",
        "bool",
        "break",
        "case",
        "catch",
        "char",
        "class",
        "const",
        "continue",
        "default",
        "delete",
        "do",
        "double",
        "else",
        "enum",
        "explicit",
        "extern",
        "false",
        "float",
        "for",
        "friend",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "namespace",
        "new",
        "operator",
        "private",
        "protected",
        "public",
        "register",
        "restrict",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "struct",
        "switch",
        "template",
        "this",
        "throw",
        "true",
        "try",
        "typedef",
        "typename",
        "union",
        "unsigned",
        "using",
        "virtual",
        "void",
        "volatile",
        "while",
        # the rest of C23's and C++23's keywords, C++'s alternative tokens (``and`` is ``&&``)
        # and the macros GCC predefines in its GNU modes (-std=gnu99: ``linux`` is 1)
        *("_Alignas", "_Alignof", "_Atomic", "_BitInt", "_Bool", "_Complex", "_Generic"),
        *("_Imaginary", "_Noreturn", "_Static_assert", "_Thread_local", "alignas", "alignof"),
        *("and", "and_eq", "asm", "bitand", "bitor", "char8_t", "char16_t", "char32_t"),
        *("compl", "concept", "const_cast", "consteval", "constexpr", "constinit"),
        *("co_await", "co_return", "co_yield", "decltype", "dynamic_cast", "export"),
        *("mutable", "noexcept", "not", "not_eq", "nullptr", "or", "or_eq"),
        *("reinterpret_cast", "requires", "static_assert", "static_cast", "thread_local"),
        *("typeid", "typeof", "typeof_unqual", "wchar_t", "xor", "xor_eq"),
        *("linux", "unix", "i386"),
    }
)


def c_ident(name: str) -> str:
    """A C identifier from a graph value name (``fc1.w`` -> ``fc1_w``, ``%4`` -> ``v4``,
    ``int`` -> ``int_``, ``ñx`` -> ``_x``), valid in C89 to C23 and C++: ASCII only."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", name.replace("%", "v"))
    s = s if s and not s[0].isdigit() else "v" + s
    return s + "_" if s in C_KEYWORDS else s


@dataclass(frozen=True)
class Port:
    """One array argument of a public entry point."""

    name: str  # the graph value
    cname: str  # the C parameter name
    slot: int  # index in the internal inputs[]/outputs[] array
    type: TensorType
    # an output whose public type (``type``: i32, i64) differs from what the kernels write
    # (this dtype, "f32": an ONNX import's integer output, whole numbers): the wrapper
    # converts it in place after the call (wrapper.c's gc_f32_to_int)
    computed: str = ""
    # k > 0: the caller's array holds the batch N at axis k (an ONNX import's sequence-first
    # input x [T, N, C] or LSTM h_n [layers, N, H]: Model.input_batch_axes /
    # output_batch_axes), ``type`` the kernels' N-first one with the other axes in the
    # caller's order; the wrapper copies between the two in the workspace (_c_moves)
    batch_axis: int = 0

    @property
    def ctype(self) -> str:
        return DTYPE_INFO[self.type.dtype].c

    @property
    def shape(self) -> tuple:
        """The shape of the caller's array: ``type``'s with N moved from axis 0 to axis
        ``batch_axis``."""
        s = self.type.shape
        k = self.batch_axis
        return (*s[1 : k + 1], BATCH, *s[k + 1 :]) if k else s

    def moved_sizes(self) -> tuple[int, int, int]:
        """For a port with ``batch_axis`` k > 0: the element counts before N (the product of
        the caller's axes 0..k-1) and after it, and the bytes of an element the kernels read
        or write (float32 for a converted output: ``computed``)."""
        rest = [int(d) for d in self.type.shape[1:]]
        outer = 1
        for d in rest[: self.batch_axis]:
            outer *= d
        inner = 1
        for d in rest[self.batch_axis :]:
            inner *= d
        return outer, inner, DTYPE_INFO[self.computed or self.type.dtype].itemsize

    def elems_c(self, n: str) -> str:
        """C expression: the element count for batch size ``n``."""
        per = self.type.elements_per_row()
        return f"((int64_t)({n}) * {per})" if self.type.is_batched else f"((int64_t){per})"


@dataclass(frozen=True)
class Region:
    """A named array inside the params, state or gradient region."""

    name: str
    type: TensorType
    offset: int
    nbytes: int


@dataclass
class EntryPlan:
    entry: str
    inputs: list[Port]  # data inputs (lr excluded)
    outputs: list[Port]
    lr: Port | None
    slots_in: int
    slots_out: int
    ws_fixed: int  # workspace bytes = ws_fixed + ws_row * n
    ws_row: int
    # Calls on blocks of rows give the rows of one call on all (graphc.ir.batch): every output
    # is row-wise (row i depends on input row i only; for train_step: never, the loss is a mean)
    rows_independent: bool = False
    checks: dict[str, InputCheck] = field(default_factory=dict)  # by value name
    # the entry's kernels read the state region (batch_norm's running statistics, an imported
    # model's constants): infer given no state reads the library's copy (_state_arg)
    reads_state: bool = False
    # bytes per row of the N-first copies of the ports whose batch axis is not first, at the
    # workspace's end (included in ws_row; ws_fixed holds ALIGN more for their alignment)
    moved_row: int = 0


@dataclass
class LibraryPlan:
    """Everything the header, the wrappers and the weights file describe."""

    name: str
    entries: dict[str, EntryPlan]
    params: list[Region]
    state: list[Region]
    grads: list[Region]
    param_bytes: int
    state_bytes: int
    grad_bytes: int
    embed: bool
    target_cpu: str
    lr: float
    loss_kind: str | None
    state_init: bytes | None = None  # None: all zeros
    meta: dict = field(default_factory=dict)
    constants: list[Region] = field(default_factory=list)  # non-trainable params (gc.constant)
    # check_numerics: one row per site of every public entry, in entry order (infer's first);
    # an entry returns ERR_NUMERICS + numerics_offset[entry] + its own site index
    numerics: list[dict] = field(default_factory=list)
    numerics_offset: dict[str, int] = field(default_factory=dict)
    target: str = ""  # the triple (aarch64-linux-gnu); "" for this machine's
    cpu_checks: tuple[str, ...] = ()  # extensions the init checks (target.cpu_extensions)
    weights_crc: int | None = None  # CRC-32 of the embedded weights (set by object_module)
    # rows a training batch needs (2 with batch_norm's batch statistics: ERR_ONE_ROW below)
    min_train_rows: int = 1

    @property
    def upper(self) -> str:
        return self.name.upper()

    @property
    def min_align(self) -> int:
        types = [r.type for r in self.params + self.state]
        return max([t.itemsize for t in types] + [4])


def plan_library(
    name: str,
    schedules: dict[str, Schedule],
    layout: dict,
    grads: dict[str, str],
    source: Graph,
    param_bytes: int,
    state_bytes: int,
    entries: list[str],
    *,
    embed: bool,
    target_cpu: str,
    lr: float,
    loss_kind: str | None,
    state_init: bytes | None,
    check_numerics: bool = False,
    target: str = "",
    cpu_checks: tuple[str, ...] = (),
    input_checks: dict[str, list[InputCheck]] | None = None,
    outputs: Iterable[str] | None = None,
    declared: dict[str, str] | None = None,
    input_axes: dict[str, int] | None = None,
    output_axes: dict[str, int] | None = None,
) -> LibraryPlan:
    """The public interface of a library from the compiled program's schedules and layout
    (``check_numerics``: the schedules were compiled with the NaN/Inf scans, whose sites the
    library names: codes ERR_NUMERICS + site, ``NAME_strerror``, the JSON description).
    ``outputs``: the model's output names, in infer's order (its ports and C arguments are
    named after them; default: the values'). C names are escaped, see ``_CNames``.
    ``declared``: output name -> "i32" or "i64" for infer's float32 outputs of whole numbers
    that the library returns in that C type (an ONNX import's integer outputs; Port.computed).
    ``input_axes`` / ``output_axes``: input value / output name -> k > 0 for an array the
    caller passes (infer returns) with the batch N at axis k, the kernels' type holding it first
    (Model.input_batch_axes / output_batch_axes; Port.batch_axis): the wrappers copy it in the
    workspace, the header and the description give the caller's layout.

    Raises:
        CodegenError: an entry is unknown or was not compiled (a model without a loss has no
            train_step), or two arguments would get the same C name.
    """
    for entry in entries:
        if entry not in PUBLIC_ENTRIES:
            raise CodegenError(f"unknown entry {entry!r}; choose from {', '.join(PUBLIC_ENTRIES)}")
        if entry not in schedules:
            raise CodegenError(f"model {name!r} has no {entry} entry (compiled without a loss?)")
    cnames = _CNames(schedules)
    plans = {
        e: _plan_entry(
            name,
            e,
            schedules,
            cnames,
            (input_checks or {}).get(e, ()),
            list(outputs) if outputs is not None and e == "infer" else None,
            (declared or {}) if e == "infer" else {},
            input_axes or {},
            (output_axes or {}) if e == "infer" else {},
        )
        for e in entries
    }
    params = _regions(source, layout, "param")
    grad_bytes, grad_regions = _grad_regions(schedules, entries, grads, layout, source)
    plan = LibraryPlan(
        name,
        plans,
        params,
        _regions(source, layout, "state"),
        grad_regions,
        param_bytes,
        state_bytes,
        grad_bytes,
        embed,
        target_cpu,
        lr,
        loss_kind,
        state_init,
        target=target,
        cpu_checks=tuple(cpu_checks),
    )
    _check_macro_names(plan)
    fixed = {n.name for n in source.params if not n.attr("trainable", True)}
    plan.constants = [r for r in params if r.name in fixed]
    if check_numerics:
        _plan_numerics_sites(plan, schedules)
    plan.meta = _meta(plan)
    return plan


def _check_macro_names(plan: LibraryPlan) -> None:
    """The header's macros upper-case names (NAME_ARG_ELEMS, NAME_PARAM_W_OFFSET): names that
    differ only in case would share a macro, one of them silently (or define it twice).

    Raises:
        CodegenError: naming both names and the macro they would share.
    """
    groups: list[tuple[str, list[str]]] = [
        ("argument", [p.cname for ep in plan.entries.values() for p in (*ep.inputs, *ep.outputs)]),
        ("parameter", [c_ident(r.name) for r in plan.params]),
        ("state slot", [c_ident(r.name) for r in plan.state]),
    ]
    for what, names in groups:
        seen: dict[str, str] = {}
        for cname in names:
            other = seen.setdefault(cname.upper(), cname)
            if other != cname:
                raise CodegenError(
                    f"{plan.name}: {what}s {other!r} and {cname!r} differ only in case, and the "
                    f"header's macros ({plan.upper}_..._{cname.upper()}_...) are upper case: "
                    "rename one of them"
                )


class _CNames:
    """The C parameter names of every entry's arrays, one per input value and one per output
    name across the library (the header's shape macros NAME_<ARG>_ELEMS are per name, not per
    entry). A name is the user's (``c_ident``), escaped with trailing ``_`` until neither it,
    its length parameter ``<name>_len`` nor the stem ``<name>_row`` (NAME_<NAME>_ROW_ELEMS) is
    taken, case-insensitively (the macros are upper case): by the fixed parameters (``ctx``, ``n``, ``lr``, ``loss``, the wrappers' locals),
    C/C++ keywords, or an earlier argument. Outputs are named after the graph's outputs (two
    outputs that compute one value, merged by CSE, keep their own names); an unnamed value
    (``%4``) gets ``y``/``out``/``output`` (``y0``, ``y1``, ... for several)."""

    FIXED = ("ctx", "n", "lr", "loss", *WRAPPER_LOCALS)
    # what the wrappers' bodies name besides their parameters (a parameter would shadow it)
    # and the C library's macros and typedefs they see
    SEEN = frozenset(
        {
            *(f"{u}int{b}_t" for u in ("", "u") for b in (8, 16, 32, 64)),
            *("uintptr_t", "intptr_t", "size_t", "NULL", "EOF", "errno", "FILE", "API"),
            *("memcpy", "memset", "fopen", "fclose", "fread", "fwrite", "open", "close"),
            *("check_ctx", "check_workspace", "misaligned", "cpu_supported", "little_endian"),
            *("overlap", "overlaps_ctx", "enter_ctx", "leave_ctx", "busy_ctx", "busy_lock"),
            *("init_ctx", "read_weights", "load_weights", "write_weights"),
            *("stdin", "stdout", "stderr", "main", "bool", "true", "false", "assert"),
        }
    )

    def __init__(self, schedules: dict[str, Schedule]) -> None:
        self.taken = {m.upper() for f in self.FIXED for m in self._reserves(f)}
        self.inputs: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        for e in PUBLIC_ENTRIES:  # inputs first, in a fixed order: stable names
            for v in schedules[e].input_slots if e in schedules else ():
                if v != "lr" and v not in self.inputs:
                    self.inputs[v] = self._claim(c_ident(v))

    @staticmethod
    def _reserves(cand: str) -> tuple[str, ...]:
        """What argument ``cand`` takes: its name, its length's (``cand_len``) and the stem
        ``cand_row`` (its macro NAME_CAND_ROW_ELEMS would be NAME_<CAND_ROW>_ELEMS(n) of an
        argument named cand_row)."""
        return cand, f"{cand}_len", f"{cand}_row"

    def _free(self, cand: str) -> bool:
        return all(m.upper() not in self.taken for m in self._reserves(cand))

    def _claim(self, cand: str) -> str:
        if cand.startswith("gc_"):  # the wrappers' own locals: gc_in, gc_<scalar input>, ...
            cand = "u" + cand
        while not self._free(cand) or cand in C_KEYWORDS or cand in self.SEEN:
            cand += "_"
        self.taken.update(m.upper() for m in self._reserves(cand))
        return cand

    def output(self, name: str, j: int, count: int, others: Sequence[str] = ()) -> str:
        """The C name of output ``name`` (output j of ``count``; ``others``: every output's
        name, whose user-given ones an unnamed output's y0 / out0 / output0 leaves to them)."""
        if name not in self.outputs:
            if name.isidentifier():
                self.outputs[name] = self._claim(c_ident(name))
            else:
                cands = [b if count == 1 else f"{b}{j}" for b in ("y", "out", "output")]
                given = {c_ident(o).upper() for o in others if o.isidentifier()}
                free = [c for c in cands if self._free(c) and c.upper() not in given]
                self.outputs[name] = self._claim(free[0] if free else f"graphc_out{j}")
        return self.outputs[name]


def output_keys(schedules: dict[str, Schedule], outputs: Sequence[str]) -> list[str]:
    """The name a user sees for each of a model's ``outputs`` (in order): one rule for
    Model.predict's keys, an exported library's C arguments and macros (and gc.load's keys)
    and to_onnx's output names. A name the user gave (``name=``) or an imported file's stays
    as it is; graphc's own value name (``%8``: an output left unnamed) becomes the C header's,
    ``y``, or ``y0``, ``y1``, ... by position for several (``out``, ``output`` where an input
    of ``schedules`` or another output takes it: _CNames.output, whose claims these are)."""
    cnames, keys = _CNames(schedules), []
    for j, o in enumerate(outputs):
        cname = cnames.output(o, j, len(outputs), outputs)  # claimed in the header's order
        keys.append(cname if o.startswith("%") else o)
    return keys


def _plan_entry(
    name: str,
    entry: str,
    schedules: dict[str, Schedule],
    cnames: _CNames,
    checks: Iterable[InputCheck],
    output_names: list[str] | None = None,
    declared: dict[str, str] | None = None,
    input_axes: dict[str, int] | None = None,
    output_axes: dict[str, int] | None = None,
) -> EntryPlan:
    """One entry's C arguments: its data inputs (train_grads' in train_step's order), its lr
    and its outputs (the loss first for the training entries). Raises CodegenError when two
    arguments would get the same C name."""
    s = schedules[entry]
    g = s.graph
    in_axes, out_axes = input_axes or {}, output_axes or {}
    ins = [
        Port(v, cnames.inputs[v], i, g[v].type, batch_axis=in_axes.get(v, 0))
        for i, v in enumerate(s.input_slots)
        if v != "lr"
    ]
    if entry == "train_grads" and "train_step" in schedules:  # data in train_step's order
        order = schedules["train_step"].input_slots
        ins.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
    lr_port = next(
        (Port(v, "lr", i, g[v].type) for i, v in enumerate(s.input_slots) if v == "lr"), None
    )
    outs = []
    count = len(s.output_slots)
    if output_names is None or len(output_names) != count:
        output_names = list(s.output_slots)
    for j, v in enumerate(s.output_slots):
        if entry in ("train_step", "train_grads") and j == 0:
            outs.append(Port(v, "loss", j, g[v].type))
        else:  # the graph's output name: CSE may have merged two outputs into one value
            o, t = output_names[j], g[v].type
            to = (declared or {}).get(o)
            k, cname = out_axes.get(o, 0), cnames.output(o, j, count, output_names)
            if to in ("i32", "i64") and t.dtype == "f32":
                outs.append(Port(o, cname, j, t.with_dtype(to), "f32", k))
            else:
                outs.append(Port(o, cname, j, t, batch_axis=k))
    for p in ins + outs:
        if p.batch_axis and not (p.type.shape[:1] == (BATCH,) and p.batch_axis < p.type.rank):
            raise CodegenError(
                f"{name}_{entry}: {p.name} {p.type} cannot hold its batch at axis {p.batch_axis}"
            )
    # each moved port's N-first copy, a whole number of ALIGN blocks per row: every copy
    # starts aligned at the ALIGN-aligned end of the kernels' workspace
    moved_row = sum(
        -(-p.type.elements_per_row() * p.moved_sizes()[2] // ALIGN) * ALIGN
        for p in ins + outs
        if p.batch_axis
    )
    names = [p.cname for p in ins + outs] + ["ctx", "n", *WRAPPER_LOCALS]
    names += (["lr"] if lr_port else []) + [f"{p.cname}_len" for p in ins + outs]
    if len(set(names)) != len(names):
        raise CodegenError(f"{name}_{entry}: argument names collide in C: {names}")
    return EntryPlan(
        entry,
        ins,
        outs,
        lr_port,
        len(s.input_slots),
        len(s.output_slots),
        s.grad_bytes + s.arena_fixed + s.scratch_bytes + (ALIGN if moved_row else 0),
        s.arena_row + moved_row,
        # a block of rows of a moved port is no run of its array: one call for all rows
        entry == "infer" and not moved_row and rows_independent(g, s.output_slots),
        {c.name: c for c in checks},
        any(n.op == "state" for n in g.nodes),
        moved_row,
    )


def _regions(source: Graph, layout: dict, op: str) -> list[Region]:
    """The regions of the ``op`` sources (param or state) in the parameter layout."""
    return [
        Region(n.name, n.type, layout[n.name].offset, layout[n.name].size)
        for n in source.nodes
        if n.op == op
    ]


def _grad_regions(
    schedules: dict[str, Schedule],
    entries: list[str],
    grads: dict[str, str],
    layout: dict,
    source: Graph,
) -> tuple[int, list[Region]]:
    """(gradient bytes, each param's gradient region): where train_step leaves them in its
    grad region, or, when the library has train_grads, every gradient at its param's offset
    (build_split), which the C program all-reduces."""
    grad_regions: list[Region] = []
    grad_bytes = 0
    for which in ("train_step", "train_grads"):
        if which not in schedules or (which == "train_grads" and "train_grads" not in entries):
            continue
        ts = schedules[which]
        grad_bytes, grad_regions = ts.grad_bytes, []
        for p, gv in grads.items():
            buf = ts.buffers.get(gv)
            if which == "train_grads":
                pb = layout[p]
                grad_regions.append(Region(p, source[p].type, pb.offset, pb.size))
            elif buf is not None and buf.region == "grad":
                grad_regions.append(Region(p, source[p].type, buf.offset, buf.size))
    return grad_bytes, grad_regions


def _plan_numerics_sites(plan: LibraryPlan, schedules: dict[str, Schedule]) -> None:
    """The check_numerics sites the library names, entry by entry (codes ERR_NUMERICS + site;
    ``numerics_offset[entry]``: its first site)."""
    from .kernels import numerics_sites

    for entry in PUBLIC_ENTRIES:
        if entry not in plan.entries:
            continue
        plan.numerics_offset[entry] = len(plan.numerics)
        g = schedules[entry].graph
        for v, _ in numerics_sites(schedules[entry]):
            nd = g[v]
            plan.numerics.append(
                {"entry": entry, "node": v, "op": nd.op, "section": nd.section, "loc": nd.loc}
            )


def numerics_message(site: dict) -> str:
    """One check_numerics site as ``NAME_strerror`` and graphc.load describe it."""
    return (
        f"NaN or Inf in {site['entry']}: {site['op']} node {site['node']} ({site['section']} "
        f"part) at {site['loc'] or 'no source line'}"
    )


def abi_symbol(name: str, function: str, abi: int | None = None) -> str:
    """The exported symbol of the header's ``NAME_function`` in C ABI version ``abi`` (this
    graphc's ABI_VERSION by default; see its note): ``NAME_function_abiV``, or the plain
    ``NAME_function`` of version 1, which had no version in its names."""
    abi = ABI_VERSION if abi is None else abi
    return f"{name}_{function}" if abi == 1 else f"{name}_{function}_abi{abi}"


def _header_abi_names(plan: LibraryPlan) -> list[str]:
    """The header's #defines of NAME_f as its versioned symbol, for every exported function."""
    fns = [*API_FUNCTIONS, *(e for e in PUBLIC_ENTRIES if e in plan.entries)]
    return [f"#define {plan.name}_{f} {abi_symbol(plan.name, f)}" for f in fns]


def _meta(plan: LibraryPlan) -> dict:
    """The JSON description ``graphc.load`` reads back from ``NAME_graphc_meta()``."""
    return {
        "graphc_abi": ABI_VERSION,
        "name": plan.name,
        "embed": plan.embed,
        "target_cpu": plan.target_cpu,
        "target": plan.target,
        "lr": plan.lr,
        "loss_kind": plan.loss_kind,
        "param_bytes": plan.param_bytes,
        "state_bytes": plan.state_bytes,
        "grad_bytes": plan.grad_bytes,
        "max_batch": MAX_BATCH,
        "min_align": plan.min_align,
        "params": [_meta_region(r) for r in plan.params],
        "state": [_meta_region(r) for r in plan.state],
        "numerics_base": NUMERICS_BASE,
        "numerics": plan.numerics,
        "numerics_offset": plan.numerics_offset,
        "entries": {e: _meta_entry(ep) for e, ep in plan.entries.items()},
    }


def _meta_entry(ep: EntryPlan) -> dict:
    """One entry's ports, lr dtype and workspace sizes in the JSON description."""
    return {
        "inputs": [_meta_port(p, ep.checks) for p in ep.inputs],
        "outputs": [_meta_port(p, {}) for p in ep.outputs],
        "lr_dtype": ep.lr.type.dtype if ep.lr else None,
        "workspace_fixed": ep.ws_fixed,
        "workspace_row": ep.ws_row,
        "rows_independent": ep.rows_independent,
    }


def _meta_port(p: Port, checks: dict[str, InputCheck]) -> dict:
    """A port's names, dtype, shape (N kept as "N") and its native input check, if any."""
    out: dict[str, Any] = {
        "name": p.name,
        "cname": p.cname,
        "dtype": p.type.dtype,
        "shape": [d if d == BATCH else int(d) for d in p.shape],  # the caller's layout
    }
    if p.batch_axis:
        out["batch_axis"] = p.batch_axis
    if p.name in checks:  # the entry's native check of this input (codegen/checks.py)
        c = checks[p.name]
        check: list[Any] = [c.kind, c.bound]
        if c.kind in ("index", "divisor") or (c.kind == "classes" and c.low is not None):
            check += [c.low, c.note, c.table]  # classes: low is the ignore_index let through
        if c.kind == "divisor" and c.zero_at is not None:  # the positions where 0 is refused
            check.append([list(r) for r in c.zero_at])
        out["check"] = check
    return out


def _meta_region(r: Region) -> dict:
    """A param or state region: name, dtype, shape, byte offset and size."""
    return {
        "name": r.name,
        "dtype": r.type.dtype,
        "shape": list(r.type.concrete(1)),
        "offset": r.offset,
        "bytes": r.nbytes,
    }


# ---------------------------------------------------------------------------- weights file


def _pad8(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


def weights_header(plan: LibraryPlan, crc: int = 0) -> bytes:
    """The weights file's header for this model (see the module docstring), CRC field ``crc``."""
    body = struct.pack("<BB6x", 1, 64)  # little-endian values, 64-bit size fields
    body += _pad8(struct.pack("<I", len(plan.name)) + plan.name.encode())
    for r in plan.params:
        dims = r.type.concrete(1)
        body += _pad8(
            struct.pack(
                f"<IIQQ{len(dims)}QI",
                len(dims),
                DTYPE_INFO[r.type.dtype].code,
                r.offset,
                r.nbytes,
                *dims,
                len(r.name),
            )
            + r.name.encode()
        )
    size = 32 + len(body)
    size += -size % 64
    head = WEIGHTS_MAGIC + struct.pack(
        "<IIQII", WEIGHTS_VERSION, size, plan.param_bytes, len(plan.params), crc
    )
    out = head + body
    return out + b"\0" * (size - len(out))


def weights_file_bytes(plan: LibraryPlan, params: bytes) -> bytes:
    """A complete weights file: header (with the CRC-32 of ``params``) then ``params``."""
    if len(params) != plan.param_bytes:
        raise CodegenError(
            f"weights: expected {plan.param_bytes} parameter bytes, got {len(params)}"
        )
    params = params_little_endian(plan, params)
    return weights_header(plan, zlib.crc32(params)) + params


def params_little_endian(plan: LibraryPlan, params: bytes) -> bytes:
    """The params region (host byte order, as numpy holds it) in little-endian order, the
    order of weights files and embedded weights: unchanged on little-endian hosts."""
    if sys.byteorder == "little":
        return params
    out = bytearray(params)
    for r in plan.params:
        values = array.array({"f32": "f", "f64": "d", "i32": "i"}[r.type.dtype])
        values.frombytes(params[r.offset : r.offset + r.nbytes])
        values.byteswap()
        out[r.offset : r.offset + r.nbytes] = values.tobytes()
    return bytes(out)


# ---------------------------------------------------------------------------- object


def object_module(
    module: ir.Module, plan: LibraryPlan, tm: llvm.TargetMachine, weights: bytes | None
) -> llvm.ModuleRef:
    """Optimize the compiled module for ``tm`` with hidden, renamed entries and the weights.

    Entries not in ``plan.entries`` become internal (and are dropped by global DCE); the
    kept ones are renamed ``NAME_ENTRY`` -> ``NAME__graphc_ENTRY`` so the public wrappers can
    take the plain names. ``weights`` (the params region image) becomes the read-only global
    ``NAME__graphc_weights``, 64-byte aligned; its CRC-32 goes to ``plan.weights_crc`` and the
    JSON description, and the library's init checks it (a damaged copy of the library is
    refused with ERR_WEIGHTS instead of predicting with silently different weights).
    """
    name = plan.name
    if weights is not None:
        plan.weights_crc = zlib.crc32(weights)
        plan.meta["weights_crc"] = plan.weights_crc
    thread_pool(module, name)  # NAME_set/get_num_threads exist even without a GEMM
    for fn in module.functions:
        if (
            fn.name.startswith(name + "_")
            and fn.name[len(name) + 1 :] not in plan.entries
            and fn.name[len(name) + 1 :] not in THREAD_FUNCTIONS
            and fn.name != f"{name}_forget_threads"
            and not fn.is_declaration
            and fn.linkage == ""
        ):
            fn.linkage = "internal"
    if weights is not None:
        _weights_global(module, name, weights)
    mod = optimize(module, tm, name)
    # Hidden names for everything the C API wraps: the API's calls bind inside the library
    # (a same-named library loaded earlier cannot take them over), and the wrappers can check
    # the CPU before any of the target's instructions run.
    for entry in (*plan.entries, *THREAD_FUNCTIONS):
        fn = mod.get_function(f"{name}_{entry}")
        fn.name = f"{name}__graphc_{entry}"
        fn.visibility = "hidden"
    if weights is not None:
        mod.get_global_variable(f"{name}__graphc_weights").visibility = "hidden"
    mod.get_function(f"{name}_forget_threads").visibility = "hidden"  # the C wrapper's only
    return mod


def _weights_global(module: ir.Module, name: str, weights: bytes) -> None:
    """The params region image as the read-only, ALIGN-aligned global NAME__graphc_weights."""
    arr = ir.ArrayType(I8, max(1, len(weights)))
    gv = ir.GlobalVariable(module, arr, name=f"{name}__graphc_weights")
    gv.global_constant = True
    gv.initializer = ir.Constant(arr, bytearray(weights or b"\0"))
    gv.align = ALIGN


# ---------------------------------------------------------------------------- C header


def c_header(plan: LibraryPlan, graphc_version: str) -> str:
    """The library's C header: entry points, error codes, shapes and the memory plan, as
    codegen/templates/header.h filled in for ``plan`` (codegen/ctemplate.py)."""
    values = _header_values(plan, graphc_version) | _alias_values(plan)
    flags, slots = _header_flags(plan), _header_slots(plan)
    lines = _without_self_macros(fill("header.h", values, flags, slots))
    if flags["aliases"] and _defined_twice(lines):
        # a model named "model" whose own MODEL_... names mean other arguments than the
        # generic ones would (an input "pixels" beside a label "x"): no generic names
        flags.update(aliases=False, label_alias=False)
        lines = _without_self_macros(fill("header.h", values, flags, slots))
    return "\n".join(lines) + "\n"


_DEFINE = re.compile(r"#define (\w+)(\(n\))? *(.*)")


def _without_self_macros(lines: list[str]) -> list[str]:
    """``lines`` less the generic names that are the model's own (a model named "model":
    ``#define MODEL_OK MODEL_OK`` would redefine MODEL_OK)."""
    out = []
    for line in lines:
        m = _DEFINE.fullmatch(line)
        if m and m.group(3).strip() in (m.group(1), f"{m.group(1)}(n)"):
            continue
        out.append(line)
    return out


def _defined_twice(lines: list[str]) -> bool:
    names = [m.group(1) for line in lines if (m := _DEFINE.match(line))]
    return len(names) != len(set(names))


def _header_flags(plan: LibraryPlan) -> dict[str, bool]:
    """Which of header.h's optional parts this library has."""
    ent, alias = plan.entries, _alias_ports(plan)
    flags = {e: e in ent for e in PUBLIC_ENTRIES}
    flags.update(embed=plan.embed, numerics=bool(plan.numerics), constants=bool(plan.constants))
    flags["train_step_checks"] = "train_step" in ent and bool(ent["train_step"].checks)
    flags["infer_checks"] = "infer" in ent and bool(ent["infer"].checks)
    label = alias[2] if alias else None
    chk = ent["train_step"].checks.get(label.name) if label is not None else None
    flags.update(aliases=alias is not None, label_alias=label is not None)
    flags["label_classes"] = chk is not None and chk.kind == "classes"
    return flags


def c_string_literal(text: str) -> str:
    """``text`` as a C string literal that means the same bytes (UTF-8) under any C standard:
    printable ASCII as is, ``"`` ``\\`` and ``?`` escaped (``??/`` etc. are trigraphs in C99),
    every other byte as a three-digit octal escape (not ``\\u``: C forbids universal character
    names below U+00A0)."""
    out = []
    for byte in text.encode():
        ch = chr(byte)
        if ch in '"\\?':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_comment_text(text: str) -> str:
    """``text`` safe inside a ``/* ... */`` comment: no comment delimiters, no trigraphs (``??/``
    before a line end would splice lines), one line."""
    text = " ".join(text.splitlines())
    text = text.replace("*/", "* /").replace("/*", "/ *")
    return re.sub(r"\?(?=\?)", "?\\\\", text)


def _header_slots(plan: LibraryPlan) -> dict[str, list[str]]:
    """header.h's model-specific lists: error codes, ports, regions, prototypes, ..."""
    U, ent = plan.upper, plan.entries
    return {
        "constants": [f" *     {r.name} : {r.type}" for r in plan.constants],
        "abi_names": _header_abi_names(plan),
        "error_codes": [
            f"#define {U}_{suffix} {code}{' ' * max(1, 16 - len(suffix))}/* {msg} */"
            for suffix, code, msg in ERRORS
        ],
        "numerics_sites": [
            f"/*   {NUMERICS_BASE + i}: {c_comment_text(numerics_message(site))} */"
            for i, site in enumerate(plan.numerics)
        ],
        "entry_workspaces": _header_workspaces(plan),
        "ports": _header_ports(plan),
        "regions": _header_regions(plan),
        **{f"{e}_prototype": [_prototype(plan, ent[e]) + ";"] for e in ent},
        **{f"{e}_prototype": [] for e in PUBLIC_ENTRIES if e not in ent},
        "train_step_rules": _check_rules(plan, ent["train_step"]) if "train_step" in ent else [],
        "infer_rules": _check_rules(plan, ent["infer"]) if "infer" in ent else [],
        "alias_error_codes": [f"#define MODEL_{s} {U}_{s}" for s, _, _ in ERRORS],
        "alias_workspaces": [
            f"#define MODEL_{e.upper()}_WORKSPACE_BYTES(n) {U}_{e.upper()}_WORKSPACE_BYTES(n)"
            for e in ent
        ],
    }


def _public(plan: LibraryPlan) -> list[str]:
    """The library's public entries, in the order of PUBLIC_ENTRIES."""
    return [e for e in PUBLIC_ENTRIES if e in plan.entries]


def _header_values(plan: LibraryPlan, graphc_version: str) -> dict[str, object]:
    """The values of header.h's placeholders: names, versions, target, sizes."""
    ent, infer = plan.entries, plan.entries.get("infer")
    return {
        "NAME": plan.name,
        "UPPER": plan.upper,
        "VERSION": graphc_version,
        "ABI": ABI_VERSION,
        "WEIGHTSVERSION": WEIGHTS_VERSION,
        "EMBED": int(plan.embed),
        "TARGET": plan.target,
        "TARGETCPU": plan.target_cpu,
        "TARGETEXTENSIONS": ",".join(plan.cpu_checks),
        **{f"HAS{e.replace('_', '').upper()}": int(e in ent) for e in PUBLIC_ENTRIES},
        "ROWSINDEPENDENT": int(infer is not None and infer.rows_independent),
        "INFERARGS": _call_args(infer.inputs + infer.outputs) if infer else "",
        "TRAINARGS": _call_args(ent["train_step"].inputs) if "train_step" in ent else "",
        "NUMERICSBASE": NUMERICS_BASE,
        "ALIGN": ALIGN,
        "MINALIGN": plan.min_align,
        "MAXBATCH": MAX_BATCH,
        "PARAMBYTES": plan.param_bytes,
        "STATEBYTES": plan.state_bytes,
        "GRADBYTES": plan.grad_bytes,
        "WEIGHTSHEADERBYTES": len(weights_header(plan)),
        "WEIGHTSFILEBYTES": len(weights_header(plan)) + plan.param_bytes,
        "WORKSPACEBYTES": _header_workspace_max(plan),
    }


def _call_args(ports: list[Port]) -> str:
    """The arguments of ``ports`` in a call shown in the header's usage comment."""
    return ", ".join(f"{p.cname}, {p.cname}_len" for p in ports)


def _header_workspaces(plan: LibraryPlan) -> list[str]:
    """Each entry's workspace: fixed bytes, bytes per row, and the bytes for batch n."""
    L: list[str] = []
    for e in _public(plan):
        k = f"{plan.upper}_{e.upper()}_WORKSPACE"
        L.append(f"#define {k}_FIXED ((int64_t){plan.entries[e].ws_fixed})")
        L.append(f"#define {k}_PER_ROW ((int64_t){plan.entries[e].ws_row})")
        L.append(f"#define {k}_BYTES(n) ({k}_FIXED + {k}_PER_ROW * (int64_t)(n))")
    return L


def _header_workspace_max(plan: LibraryPlan) -> str:
    """The C expression of the largest workspace of all entries for batch n."""
    terms = [f"{plan.upper}_{e.upper()}_WORKSPACE_BYTES(n)" for e in _public(plan)]
    ws = terms[0]
    for t in terms[1:]:
        ws = f"({ws} > {t} ? {ws} : {t})"
    return ws


def _header_ports(plan: LibraryPlan) -> list[str]:
    """Each input and output (once, also when two entries share it): element type, shape and
    element count for batch n."""
    seen: dict[str, TensorType] = {}
    L: list[str] = []
    for e in _public(plan):
        for kind, ports in (("input", plan.entries[e].inputs), ("output", plan.entries[e].outputs)):
            for p in ports:
                key = f"{plan.upper}_{p.cname.upper()}"
                if key in seen and seen[key] != p.type:
                    raise CodegenError(
                        f"{plan.name}: argument {p.cname} has types {seen[key]} and "
                        f"{p.type} in two entries (C macros would collide)"
                    )
                if key not in seen:
                    seen[key] = p.type
                    L += _header_port(key, kind, p, plan.entries[e].checks.get(p.name))
    return L


def _header_port(key: str, kind: str, p: Port, chk: InputCheck | None) -> list[str]:
    """One input's or output's macros (``key`` is ``NAME_ARG``)."""
    row = p.type.elements_per_row() if p.type.is_batched else 0
    how = (
        f" (computed as {p.computed} whole numbers, converted: NaN 0, past the type its bound)"
        if p.computed
        else ""
    )
    if p.batch_axis:  # the caller's layout, the kernels' in the workspace
        how += (
            f": the batch N at axis {p.batch_axis}, as in the ONNX file (the library copies it "
            f"{'to' if kind == 'input' else 'from'} the kernels' "
            f"{p.type.with_dtype(p.computed or p.type.dtype)} in the workspace)"
        )
    L = [f"/* {kind} {p.cname} ({p.name}): {p.ctype} {TensorType(p.shape, p.type.dtype)}{how} */"]
    L.append(f"#define {key}_ROW_ELEMS ((int64_t){row})")
    L.append(f"#define {key}_ELEMS(n) {p.elems_c('n')}")
    L.append(f"#define {key}_SLOT {p.slot}")
    if chk is not None and chk.kind == "classes":
        L.append(f"#define {key}_CLASSES {chk.bound}   /* labels must lie in 0..CLASSES-1 */")
        if chk.low is not None:
            L.append(f"#define {key}_IGNORE_INDEX {chk.low}   /* or be this: a row ignored */")
    if p.batch_axis:
        L.append(f"#define {key}_BATCH_AXIS {p.batch_axis}   /* N is dimension {p.batch_axis} */")
    L += [f"#define {key}_DIM{k} {d}" for k, d in enumerate(p.shape) if d != BATCH]
    return L


def _header_regions(plan: LibraryPlan) -> list[str]:
    """Byte offset and size of every param, state slot and gradient."""
    L: list[str] = []
    for title, regions, base in (
        ("Parameters inside params", plan.params, "PARAM"),
        (
            "State (optimizer slots, running statistics, imported constants) inside state",
            plan.state,
            "STATE",
        ),
        ("Gradients inside the train_step workspace", plan.grads, "GRAD"),
    ):
        if not regions:
            continue
        L.append(f"/* {title}: byte offset and size, element type and shape. */")
        keys = region_macro_names([r.name for r in regions])
        for r in regions:
            k = f"{plan.upper}_{base}_{keys[r.name]}"
            L.append(f"#define {k}_OFFSET {r.offset}    /* {r.type} {r.name} */")
            L.append(f"#define {k}_BYTES {r.nbytes}")
        L.append("")
    return L


def region_macro_names(names: list[str]) -> dict[str, str]:
    """The upper-case macro stem of each region name (``fc1.w`` -> ``FC1_W``), escaped with
    trailing ``_`` where an earlier name has it (``fc1.w`` and ``fc1_w``: ``FC1_W``, ``FC1_W_``),
    so that no two regions share NAME_PARAM_<STEM>_OFFSET."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for name in names:
        stem = c_ident(name).upper()
        while stem in taken:
            stem += "_"
        taken.add(stem)
        out[name] = stem
    return out


def _alias_ports(plan: LibraryPlan) -> tuple[Port, Port, Port | None] | None:
    """The input, output and (None if train_step does not take one) label of a model that
    examples/c's generic names (``model_infer``, ``MODEL_X_ROW_ELEMS``, ``model_float_t``,
    ...) can serve: one batched input and output of one floating type (f32 or f64: that
    type is model_float_t), and train_step's inputs (x, label) with an lr of that type. None
    for any other model (its header defines no generic names)."""
    inf = plan.entries.get("infer")
    if inf is None or len(inf.inputs) != 1 or len(inf.outputs) != 1:
        return None
    x, y = inf.inputs[0], inf.outputs[0]
    if x.type.dtype not in ("f32", "f64") or not all(
        p.type.dtype == x.type.dtype and p.type.is_batched and not p.batch_axis for p in (x, y)
    ):
        return None
    ts = plan.entries.get("train_step")
    if (
        ts is not None
        and len(ts.inputs) == 2
        and ts.inputs[0].name == x.name
        and ts.inputs[1].type.is_batched
        and ts.lr is not None
        and ts.lr.type.dtype == x.type.dtype
    ):
        return x, y, ts.inputs[1]
    return x, y, None


def _alias_values(plan: LibraryPlan) -> dict[str, object]:
    """The values of header.h's placeholders in the generic names ("" where it has none)."""
    x, y, lab = _alias_ports(plan) or (None, None, None)
    return {
        "X": x.cname.upper() if x else "",
        "Y": y.cname.upper() if y else "",
        "FLOATTYPE": x.ctype if x else "",
        "LABEL": lab.cname.upper() if lab else "",
        "LABELTYPE": lab.ctype if lab else "",
        "LABELISINT": int(lab.type.dtype == "i32") if lab else "",
    }


def _has_rows(e: EntryPlan) -> bool:
    """Whether the entry takes the batch size n (apply_update, which reads no rows, does not)."""
    return e.entry != "apply_update"


def _scalar_in(e: EntryPlan, p: Port) -> bool:
    """train_grads' loss_scale and row0: passed by value, after the data (row0 as int64_t,
    also when the model has no dropout, which alone reads it: one C signature for all)."""
    return e.entry == "train_grads" and p.name in ("loss_scale", "row0")


def _prototype(plan: LibraryPlan, e: EntryPlan) -> str:
    """The C signature of entry ``e``'s public wrapper (no semicolon)."""
    N = plan.name
    train = e.entry in TRAIN_ENTRIES
    args = [f"{N}_ctx *ctx" if train else f"const {N}_ctx *ctx"]
    args += ["int64_t n"] if _has_rows(e) else []
    for p in e.inputs:
        if not _scalar_in(e, p):
            args += [f"const {p.ctype} *{p.cname}", f"int64_t {p.cname}_len"]
    if e.entry == "train_grads":
        scale = next(p for p in e.inputs if p.name == "loss_scale")
        args += [f"{scale.ctype} loss_scale", "int64_t row0"]
    if e.lr is not None:
        args.append(f"{e.lr.ctype} lr")
    for p in e.outputs:
        if train and not p.type.shape:
            args.append(f"{p.ctype} *{p.cname}")
        else:
            args += [f"{p.ctype} *{p.cname}", f"int64_t {p.cname}_len"]
    return f"int {N}_{e.entry}({', '.join(args)})"


def _check_rules(plan: LibraryPlan, e: EntryPlan) -> list[str]:
    """The header's list of the value checks entry ``e`` runs before it writes anything
    (the last line closes the comment; none when it checks nothing)."""
    U = plan.upper
    rules = []
    for name, c in e.checks.items():
        cn = "lr" if c.kind == "lr" else c_ident(name)
        rules.append(
            {
                "classes": f"{cn} in 0..{U}_{cn.upper()}_CLASSES-1"
                + ("" if c.low is None else f" or {c.low}")
                + f" ({U}_ERR_LABEL)",
                "finite": f"{cn} free of NaN and Inf ({U}_ERR_NONFINITE)",
                "unit": f"{cn} in [0, 1] ({U}_ERR_TARGET)",
                "lr": f"lr finite and >= 0 ({U}_ERR_LR)",
                "index": f"{cn} whole numbers in {c.lowest}..{c.bound - 1} ({U}_ERR_LOOKUP)",
                "divisor": f"{cn} whole numbers in {c.lowest}..{c.bound - 1} other than 0 "
                f"({U}_ERR_LOOKUP)",
            }[c.kind]
        )
    return [f"     {r};" for r in rules[:-1]] + [f"     {r}. */" for r in rules[-1:]]


# ---------------------------------------------------------------------------- C wrappers


def _c_bytes(data: bytes, indent: str = "    ") -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    return (",\n" + indent).join(rows) if rows else "0"


def wrapper_template() -> str:
    """The fixed C of the public wrappers: ``codegen/templates/wrapper.c`` (its macros are
    listed there; ``c_source`` defines them for a model)."""
    return template_text("wrapper.c")


def c_source(plan: LibraryPlan, header_name: str) -> str:
    """The public wrappers (argument checks, weights file, CRC) around the hidden entries."""
    L = _source_prelude(plan, header_name)
    L += _source_tables(plan)
    L += _source_info_functions(plan)
    L += _template_macros(plan)
    L += wrapper_template().rstrip("\n").split("\n")
    for e in PUBLIC_ENTRIES:
        if e in plan.entries:
            L.append("")
            L += _c_explainers(plan, plan.entries[e])
            L += _c_entry(plan, plan.entries[e])
            L += _c_entry_guard(plan, plan.entries[e])
    return "\n".join(L) + "\n"


def _source_prelude(plan: LibraryPlan, header_name: str) -> list[str]:
    """Includes, the hidden entries and weights it calls, the CPU check and the thread pool's
    hooks: everything the wrappers below need declared."""
    L = [
        f"/* Generated by graphc: the public wrappers of lib{plan.name}.so. */",
        "#define _POSIX_C_SOURCE 200809L /* open, fstat, fdopen, O_NONBLOCK, O_CLOEXEC */",
        f'#include "{header_name}"',
        *[f"#include <{h}>" for h in ("fcntl.h", "pthread.h", "stdio.h", "string.h")],
        *[f"#include <{h}>" for h in ("sys/stat.h", "sys/utsname.h", "unistd.h")],
        "",
        '#define API __attribute__((visibility("default")))',
    ]
    L += _source_hidden_symbols(plan)
    L += [*_c_cpu_check(plan), ""]
    L += _source_thread_hooks(plan)
    return L


def _source_hidden_symbols(plan: LibraryPlan) -> list[str]:
    """Declarations of the library's hidden symbols the wrappers call: the entries' kernels
    (signature of codegen/module.py's entries), the embedded weights, the thread pool."""
    N, hidden = plan.name, '__attribute__((visibility("hidden")));'
    args = "void *, void *, void *, void *const *, void *const *, int64_t"
    L = [f"extern int32_t {N}__graphc_{e}({args}) {hidden}" for e in plan.entries]
    if plan.embed:
        L.append(f"extern const unsigned char {N}__graphc_weights[] {hidden}")
    L += ["", f"extern void {N}_forget_threads(void) {hidden}"]
    L.append(f"extern int32_t {N}__graphc_set_num_threads(int32_t) {hidden}")
    L.append(f"extern int32_t {N}__graphc_get_num_threads(void) {hidden}")
    L.append("")
    return L


def _source_thread_hooks(plan: LibraryPlan) -> list[str]:
    """The library's destructor (joins the worker threads before its code is unmapped) and
    its fork handler (a child forgets the threads it does not have)."""
    N = plan.name
    return [
        "/* Join the worker threads before the library's code is unmapped (dlclose, exit); in the",
        "   child of a fork(), which has none of them, forget them (back to one thread). glibc",
        "   drops the fork handler when the library is unloaded. The calls are to this library's",
        "   own hidden functions, never to a same-named library's. */",
        "__attribute__((destructor)) static void stop_threads(void) {",
        f"    if (cpu_supported()) {N}__graphc_set_num_threads(1);",
        "}",
        "__attribute__((constructor)) static void on_fork_forget_threads(void) {",
        f"    pthread_atfork(NULL, NULL, {N}_forget_threads);",
        "}",
        "",
    ]


def _source_tables(plan: LibraryPlan) -> list[str]:
    """The constant tables: weights header, initial state, JSON meta, then the messages."""
    whdr = weights_header(plan)
    meta = json.dumps(plan.meta, separators=(",", ":")).encode() + b"\0"
    L: list[str] = []
    a = L.append
    a(f"static const unsigned char wheader[{len(whdr)}] = {{\n    {_c_bytes(whdr)}\n}};")
    if plan.state_init is not None:  # aligned: infer given no state reads it (_state_arg)
        a(
            f"static const unsigned char state_init[{len(plan.state_init)}] "
            f"__attribute__((aligned({ALIGN_STATE_COPY}))) = {{\n    "
            f"{_c_bytes(plan.state_init)}\n}};"
        )
    elif any(_state_optional(e) for e in plan.entries.values()):
        a(
            f"static const unsigned char state_zero[{plan.state_bytes}] "
            f"__attribute__((aligned({ALIGN_STATE_COPY}))) = {{0}};"
        )
    a(f"static const unsigned char meta[{len(meta)}] = {{\n    {_c_bytes(meta)}\n}};")
    a("")
    return L + _source_messages(plan)


def _source_messages(plan: LibraryPlan) -> list[str]:
    """The messages of the error codes (ERR_CPU's names the missing extensions) and of the
    check_numerics sites."""
    L = ["static const char *const messages[] = {"]
    a = L.append
    for suffix, _, msg in ERRORS:
        if suffix == "ERR_CPU" and plan.cpu_checks:
            msg = (
                f"this CPU lacks {'/'.join(plan.cpu_checks)}: the library was built for "
                f"{plan.target_cpu} ({plan.target or 'this machine'}); build one for this "
                f"CPU (graphc compile --target-cpu native, or {_baseline_hint(plan)})"
            )
        a(f"    {c_string_literal(msg)},")
    a("};")
    a("")
    if plan.numerics:
        a("static const char *const numerics_sites[] = {")
        for site in plan.numerics:
            a(f"    {c_string_literal(numerics_message(site))},")
        a("};")
        a("")
    return L


def _baseline_hint(plan: LibraryPlan) -> str:
    """How to build a library every CPU of the target's architecture runs."""
    arch = plan.target.split("-")[0] if plan.target else "x86_64"
    if arch == "aarch64":
        return "generic without --features for any aarch64"
    if arch == "riscv64":
        return "generic-rv64 without --features for any RV64GC"
    return "x86-64 for any x86-64"


def _source_info_functions(plan: LibraryPlan) -> list[str]:
    """NAME_strerror, then the other functions that tell about the library."""
    N = plan.name
    L: list[str] = []
    a = L.append
    a(f"API const char *{N}_strerror(int code) {{")
    if plan.numerics:
        a(
            f"    if (code >= {NUMERICS_BASE} && code < {NUMERICS_BASE + len(plan.numerics)}) "
            f"return numerics_sites[code - {NUMERICS_BASE}];"
        )
    a(
        '    if (code < 0 || code >= (int)(sizeof messages / sizeof messages[0])) return "unknown error code";'
    )
    a("    return messages[code];")
    a("}")
    a("")
    return L + _source_info_rest(plan)


def _source_info_rest(plan: LibraryPlan) -> list[str]:
    """NAME_graphc_meta, the thread count's setter and getter, NAME_workspace_size."""
    N, U = plan.name, plan.upper
    L: list[str] = []
    a = L.append
    a(f"API const char *{N}_graphc_meta(void) {{ return (const char *)meta; }}")
    a("")
    a(f"API int32_t {N}_set_num_threads(int32_t n) {{")
    a(f"    if (!cpu_supported()) return {U}_ERR_CPU;")
    a(f"    return {N}__graphc_set_num_threads(n);")
    a("}")
    a("")
    a(f"API int32_t {N}_get_num_threads(void) {{ return {N}__graphc_get_num_threads(); }}")
    a("")
    a(f"API int64_t {N}_workspace_size(int64_t n) {{")
    a(f"    if (n < 1 || n > {U}_MAX_BATCH) return -1;")
    a(f"    return {U}_WORKSPACE_BYTES(n);")
    a("}")
    a("")
    return L


def _template_macros(plan: LibraryPlan) -> list[str]:
    """The names codegen/templates/wrapper.c expects, defined for this model."""
    N, U = plan.name, plan.upper
    L: list[str] = []
    a = L.append
    a(f"#define GC_CTX {N}_ctx")
    a(f"#define GC_FN(f) {N}_##f")
    a(f'#define GC_LIB_NAME "{N}"')
    a("#define GC_API API")
    # a model named gc (GC, Gc) has these very macros in its header: defined once, there
    if U != "GC":
        for k in ("PARAM_BYTES", "STATE_BYTES", "MIN_ALIGN", "WEIGHTS_FILE_BYTES", "OK"):
            a(f"#define GC_{k} {U}_{k}")
        for k in ("NULL", "BUFFER", "ALIGN", "WEIGHTS", "IO", "CPU", "OVERLAP", "BUSY"):
            a(f"#define GC_ERR_{k} {U}_ERR_{k}")
    a("#define GC_CPU_SUPPORTED cpu_supported")
    if plan.embed:
        a(f"#define GC_EMBEDDED_WEIGHTS {N}__graphc_weights")
        if plan.weights_crc is not None:
            a(f"#define GC_EMBEDDED_CRC 0x{plan.weights_crc:08x}u")
    if plan.state_init is not None:
        a("#define GC_STATE_INIT state_init")
    a("")
    return L


# Linux's hwcap bits (arch/arm64/include/uapi/asm/hwcap.h; the same numbers as the cross
# toolchain's /usr/aarch64-linux-gnu/include/asm/hwcap.h): name -> (auxv entry, bit), with
# AT_HWCAP = 16 and AT_HWCAP2 = 26 (include/uapi/linux/auxvec.h).
AARCH64_HWCAPS = {
    "atomics": (16, 8),
    "fphp": (16, 9),
    "asimdhp": (16, 10),
    "asimdrdm": (16, 12),
    "jscvt": (16, 13),
    "fcma": (16, 14),
    "lrcpc": (16, 15),
    "asimddp": (16, 20),
    "sve": (16, 22),
    "asimdfhm": (16, 23),
    "ilrcpc": (16, 26),
    "sve2": (26, 1),
    "frint": (26, 8),
    "svei8mm": (26, 9),
    "svef32mm": (26, 10),
    "svef64mm": (26, 11),
    "svebf16": (26, 12),
    "i8mm": (26, 13),
    "bf16": (26, 14),
}
# riscv64: AT_HWCAP has one bit per single-letter extension (bit = letter - 'A':
# arch/riscv/include/uapi/asm/hwcap.h); the multi-letter ones are in riscv_hwprobe (syscall
# 258, key RISCV_HWPROBE_KEY_IMA_EXT_0 = 4: arch/riscv/include/uapi/asm/hwprobe.h), with the
# first kernel whose hwprobe reports each (an older kernel reports 0: unknown, not absent).
RISCV_HWPROBE_EXT = {
    "zba": (3, (6, 5)),
    "zbb": (4, (6, 5)),
    "zbs": (5, (6, 5)),
    "zfh": (27, (6, 8)),
}


def _c_cpu_check(plan: LibraryPlan) -> list[str]:
    """``cpu_supported()``: whether this CPU has the extensions the kernels may use
    (``plan.cpu_checks``, codegen.target.cpu_extensions): on x86 asked of the C compiler's
    ``__builtin_cpu_supports``; on aarch64 of Linux's hwcap bits (getauxval AT_HWCAP and
    AT_HWCAP2); on riscv64 of AT_HWCAP's letter bits, the vector length (the vlenb CSR, read
    once V is known to be there) for Zvl*b and riscv_hwprobe for Zba/Zbb/Zbs/Zfh. A kernel
    too old to report a multi-letter extension (hwprobe missing, or older than the release
    that added its bit) passes the check: refusing there would refuse CPUs that have it. The
    entries, init and set_num_threads return ERR_CPU instead of running an illegal
    instruction. The C wrappers themselves are built for the architecture's baseline."""
    L = [
        "/* 1 when this CPU runs the library's kernels (the extensions of TARGET_CPU). */",
        "static int cpu_supported(void) {",
    ]
    checks = plan.cpu_checks
    arch = plan.target.split("-")[0] if plan.target else ""
    if not checks:
        L.append("    return 1;")
    elif arch in ("", "x86_64"):
        test = " &&\n           ".join(f'__builtin_cpu_supports("{f}")' for f in checks)
        L += [
            "#if defined(__x86_64__) || defined(__i386__)",
            "    __builtin_cpu_init();",
            f"    return {test};",
            "#else",
            "    return 1;",
            "#endif",
        ]
    elif arch == "aarch64":
        need = {16: 0, 26: 0}
        for f in checks:
            at, bit = AARCH64_HWCAPS[f]
            need[at] |= 1 << bit
        L += [
            "#if defined(__aarch64__) && defined(__linux__)",
            "    extern unsigned long getauxval(unsigned long);",
            f"    const unsigned long hwcap = 0x{need[16]:x}UL, hwcap2 = 0x{need[26]:x}UL;",
            "    return (getauxval(16) & hwcap) == hwcap && (getauxval(26) & hwcap2) == hwcap2;",
            "#else",
            "    return 1;",
            "#endif",
        ]
    else:  # riscv64
        letters = sum(1 << (ord(f.upper()) - ord("A")) for f in checks if len(f) == 1)
        L += [
            "#if defined(__riscv) && defined(__linux__)",
            "    extern unsigned long getauxval(unsigned long);",
            f"    if ((getauxval(16) & 0x{letters:x}UL) != 0x{letters:x}UL) return 0;",
        ]
        for f in checks:
            m = re.fullmatch(r"zvl(\d+)b", f)
            if m:
                L += [
                    "    {",
                    "        unsigned long vlenb;",
                    '        __asm__ volatile("csrr %0, 0xc22" : "=r"(vlenb));  /* vlenb */',
                    f"        if (vlenb * 8 < {int(m.group(1))}UL) return 0;",
                    "    }",
                ]
        probed = [f for f in checks if f in RISCV_HWPROBE_EXT]
        if probed:
            L += [
                "    {",
                "        extern long syscall(long, ...);",
                "        struct { long long key; unsigned long long value; } pair = {4, 0};",
                "        struct utsname u;",
                "        int major = 0, minor = 0;",
                '        if (uname(&u) == 0) sscanf(u.release, "%d.%d", &major, &minor);',
                "        if (syscall(258L, &pair, 1L, 0L, (void *)0, 0L) == 0 && pair.key == 4) {",
            ]
            for f in probed:
                bit, (kmaj, kmin) = RISCV_HWPROBE_EXT[f]
                L.append(
                    f"            if ((major > {kmaj} || (major == {kmaj} && minor >= {kmin})) && "
                    f"!(pair.value & (1ULL << {bit}))) return 0;  /* {f} */"
                )
            L += ["        }", "    }"]
        L += ["    return 1;", "#else", "    return 1;", "#endif"]
    L.append("}")
    return L


def _c_entry(plan: LibraryPlan, e: EntryPlan) -> list[str]:
    """The public wrapper of entry ``e``: the ctx entered (wrapper.c's enter_ctx: ERR_BUSY
    while another call runs on it), then its body: its locals, the checks that return an
    error code before anything is written, the call of the hidden entry and its code
    mapped."""
    proto = _prototype(plan, e)
    public = f"int {plan.name}_{e.entry}("
    body = f"int {plan.name}__body_{e.entry}("
    L = [f"static {body}{proto[len(public) :]} {{"]
    L.append(f"    void *gc_in[{max(1, e.slots_in)}];")
    L.append(f"    void *gc_out[{max(1, e.slots_out)}];")
    if not _has_rows(e):
        L.append("    int64_t n = 1;")
    if e.lr is not None:
        L.append(f"    {e.lr.ctype} gc_lr = lr;")
    for p in e.inputs:
        if _scalar_in(e, p):
            L.append(f"    {p.ctype} gc_{p.cname} = ({p.ctype}){p.cname};")
    return L + _c_entry_checks(plan, e) + _c_entry_call(plan, e)


def _c_entry_checks(plan: LibraryPlan, e: EntryPlan) -> list[str]:
    """The wrapper's argument checks: ctx, NULL pointers, batch size (and row0), workspace,
    each array's length."""
    U, train = plan.upper, e.entry in TRAIN_ENTRIES
    need = 1 if train else 2 if _state_optional(e) else 0
    L = [f"    int gc_rc = check_ctx(ctx, {need});", "    if (gc_rc) return gc_rc;"]
    a = L.append
    ptrs = [p.cname for p in e.inputs + e.outputs if not _scalar_in(e, p)]
    if ptrs:
        a(f"    if ({' || '.join('!' + p for p in ptrs)}) return {U}_ERR_NULL;")
    a(f"    if (n < 1 || n > {U}_MAX_BATCH) return {U}_ERR_BATCH;")
    if e.entry in ("train_step", "train_grads") and plan.min_train_rows > 1:
        a(f"    if (n < {plan.min_train_rows}) return {U}_ERR_ONE_ROW;  /* batch_norm */")
    if e.entry == "train_grads":
        a(f"    if (row0 < 0 || row0 > {U}_MAX_BATCH) return {U}_ERR_BATCH;")
        if not any(p.name == "row0" for p in e.inputs):
            a("    (void)row0;  /* no dropout: the masks need no row index */")
    ws = f"{U}_{e.entry.upper()}_WORKSPACE_BYTES(n)"
    a(f"    gc_rc = check_workspace(ctx, {ws}, {need});")
    a("    if (gc_rc) return gc_rc;")
    for p in e.inputs + e.outputs:
        if (train and p in e.outputs and not p.type.shape) or _scalar_in(e, p):
            continue
        a(f"    if ({p.cname}_len < {U}_{p.cname.upper()}_ELEMS(n)) return {U}_ERR_BUFFER;")
    return L + _c_overlap_checks(plan, e, ws)


def _c_overlap_checks(plan: LibraryPlan, e: EntryPlan, ws: str) -> list[str]:
    """ERR_OVERLAP when an output shares a byte with another array argument, an output with
    params, state or the workspace, or an input with params, the workspace or (train entries)
    state: the kernels write outputs and the workspace while they still read the inputs (an
    output written over its input before a later kernel reads that input: a silent wrong
    answer), and inference reads state (batch_norm's running statistics) that an output
    written over it would change."""
    U, train = plan.upper, e.entry in TRAIN_ENTRIES
    arrays = [p for p in e.inputs + e.outputs if not _scalar_in(e, p)]
    if not arrays:
        return []

    def span(p: Port) -> str:
        return f"{p.cname}, {U}_{p.cname.upper()}_ELEMS(n) * (int64_t)sizeof(*{p.cname})"

    tests = [f"overlaps_ctx(ctx, {span(p)}, {ws}, {int(train or p in e.outputs)})" for p in arrays]
    outs = [p for p in arrays if p in e.outputs]
    for i, o in enumerate(outs):
        tests += [f"overlap({span(o)}, {span(p)})" for p in arrays if p not in outs[: i + 1]]
    body = " ||\n        ".join(tests)
    return [f"    if ({body})", f"        return {U}_ERR_OVERLAP;"]


def _c_entry_call(plan: LibraryPlan, e: EntryPlan) -> list[str]:
    """The wrapper's call of the hidden entry, and its return code as the library's: an input
    check's, a check_numerics site's (unique in the library), ERR_INTERNAL or OK."""
    N, U = plan.name, plan.upper
    L: list[str] = []
    a = L.append
    moved = _c_moves(plan, e)
    for p in e.inputs:
        if p.batch_axis:
            a(f"    gc_in[{p.slot}] = {moved[p.slot, 'in']};")
            a(f"    gc_move_batch(gc_in[{p.slot}], {p.cname}, n, {_moved_args(p)}, 1);")
        else:
            where = f"&gc_{p.cname}" if _scalar_in(e, p) else f"(void *){p.cname}"
            a(f"    gc_in[{p.slot}] = {where};")
    if e.lr is not None:
        a(f"    gc_in[{e.lr.slot}] = &gc_lr;")
    for p in e.outputs:
        a(
            f"    gc_out[{p.slot}] = {moved[p.slot, 'out'] if p.batch_axis else f'(void *){p.cname}'};"
        )
    args = f"ctx->params, {_state_arg(plan, e)}, ctx->workspace, gc_in, gc_out, n"
    a(f"    gc_rc = {N}__graphc_{e.entry}({args});")
    if e.checks:  # the input checks' codes (CHECK_BASE + slot): nothing was written
        slot_of = {p.name: p.slot for p in e.inputs}
        if e.lr is not None:
            slot_of[e.lr.name] = e.lr.slot
        ports = {p.name: p for p in e.inputs}
        for name, c in e.checks.items():
            code = CHECK_BASE + slot_of[name]
            if c.kind == "lr":
                why = f"{N}_{e.entry}: the learning rate must be finite and >= 0, got %.9g"
                a(f"    if (gc_rc == {code}) gc_note({c_string_literal(why)}, (double)lr);")
            else:
                p = ports[name]
                arg, count = (
                    (f"&gc_{p.cname}", "1")  # a scalar argument (train_grads' loss_scale)
                    if _scalar_in(e, p)
                    else (
                        f"(const {p.ctype} *)gc_in[{p.slot}]" if p.batch_axis else p.cname,
                        f"{U}_{p.cname.upper()}_ELEMS(n)",
                    )  # a moved input: its N-first copy, whose rows the message counts
                )
                a(f"    if (gc_rc == {code}) {_explainer(plan, e, p)}({arg}, {count});")
            a(f"    if (gc_rc == {code}) return {U}_{CHECK_ERRORS[c.kind]};  /* {name} */")
    if e.entry in plan.numerics_offset:
        a(f"    if (gc_rc >= {NUMERICS_BASE}) return gc_rc + {plan.numerics_offset[e.entry]};")
    for p in e.outputs:
        if p.batch_axis:  # the kernels' N-first copy in the caller's layout
            a(
                f"    if (!gc_rc) gc_move_batch({p.cname}, gc_out[{p.slot}], n, {_moved_args(p)}, 0);"
            )
        if p.computed:  # the kernels wrote float32 whole numbers: in the declared type
            size = DTYPE_INFO[p.type.dtype].itemsize
            a(f"    if (!gc_rc) gc_f32_to_int({p.cname}, {U}_{p.cname.upper()}_ELEMS(n), {size});")
    a(f"    return gc_rc ? {U}_ERR_INTERNAL : {U}_OK;")
    a("}")
    return L


def _c_moves(plan: LibraryPlan, e: EntryPlan) -> dict[tuple[int, str], str]:
    """The C expression of each moved port's N-first copy (by slot and "in" / "out"): one
    after the other, each a whole number of ALIGN blocks per row (EntryPlan.moved_row), from
    the first ALIGN-aligned byte after the kernels' workspace (``ws_fixed`` holds ALIGN spare
    bytes for it). The workspace check covers them: WORKSPACE_PER_ROW counts them."""
    ports = [(p, "in") for p in e.inputs if p.batch_axis]
    ports += [(p, "out") for p in e.outputs if p.batch_axis]
    if not ports:
        return {}
    fixed, row = e.ws_fixed - ALIGN, e.ws_row - e.moved_row  # the kernels' own
    base = (
        f"(char *)(((uintptr_t)ctx->workspace + (uintptr_t)({fixed} + (int64_t){row} * n) + "
        f"{ALIGN - 1}) & ~(uintptr_t){ALIGN - 1})"
    )
    out, off = {}, 0
    for p, kind in ports:
        out[p.slot, kind] = f"(void *)({base} + (int64_t){off} * n)"
        off += -(-p.type.elements_per_row() * p.moved_sizes()[2] // ALIGN) * ALIGN
    return out


def _moved_args(p: Port) -> str:
    """wrapper.c's gc_move_batch arguments after the row count for moved port ``p``: the
    element counts before and after N in the caller's layout, and the element's bytes."""
    outer, inner, size = p.moved_sizes()
    return f"{outer}, {inner}, {size}"


def _state_optional(e: EntryPlan) -> bool:
    """Whether entry ``e`` reads state that the caller may leave out (ctx->state NULL: the
    header lets inference-only callers do so): infer reading batch_norm's running statistics
    or an imported model's constants. Train entries always need the caller's state."""
    return e.reads_state and e.entry not in TRAIN_ENTRIES


def _state_arg(plan: LibraryPlan, e: EntryPlan) -> str:
    """The state pointer the wrapper passes to entry ``e``'s kernels: the caller's, or for an
    entry whose state is optional (_state_optional) given none, the library's read-only image
    of the state init would write (the trained running statistics and constants;
    export._initial_state), so that inference without a state buffer computes what it would
    after init with one instead of reading through a NULL pointer."""
    if not _state_optional(e):
        return "ctx->state"
    copy = "state_init" if plan.state_init is not None else "state_zero"
    return f"(ctx->state ? ctx->state : (void *){copy})"


def _explainer(plan: LibraryPlan, e: EntryPlan, p: Port) -> str:
    """The name of _c_explainers' function for input ``p`` of entry ``e``."""
    return f"{plan.name}__explain_{e.entry}_{p.slot}"


def _c_explainers(plan: LibraryPlan, e: EntryPlan) -> list[str]:
    """For each checked input of entry ``e``, a function that finds its first value failing
    the check and writes the message NAME_last_error returns: the entry, the input, the row
    and the value, the rule (and for an index, why its range is that: the ONNX node whose
    computed index it keeps in its table), as graphc's Python errors (runtime/checks.py)."""
    L: list[str] = []
    rows = {p.name: p for p in e.inputs}
    for name, c in e.checks.items():
        if c.kind == "lr":
            continue
        p = rows[name]
        per = p.type.elements_per_row() if p.type.is_batched else 0
        where = "row" if per else "element"
        label = name.replace("%", "%%")
        zero_msg = ""  # a divisor's message for a 0: the reason said only there
        if c.kind in ("divisor", "index"):
            bad = f"!(v >= {c.lowest}.0 && v <= {c.bound - 1}.0 && v == (double)(int64_t)v)"
            span = f"{c.lowest}..{c.bound - 1}"
            tail = "; " + c.note.replace("%", "%%") if c.note else ""
            held = f"'{label}': {where} %lld holds %.9g"
            if c.kind == "divisor":
                bad += " || v == 0.0" if c.zero_at is None else " || (v == 0.0 && at)"
                head = f"divisor {held}, outside the whole numbers {span} other than 0"
                zero_msg = head + " (an integer division by zero is undefined)" + tail
            elif c.table:
                head = (
                    f"indices {held}, which is no row of its lookup table (whole numbers in {span})"
                )
            else:
                head = f"input {held}, outside the whole numbers {span} it is checked to hold"
            msg = head + tail
        elif c.kind == "classes":
            bad = f"v < 0 || v >= {c.bound}.0"
            msg = f"labels '{label}': {where} %lld has class %.9g, outside 0..{c.bound - 1}"
            if c.low is not None:  # the ignore_index let through
                bad = f"({bad}) && v != {c.low}.0"
                msg += f" and not the ignore_index {c.low}"
        elif c.kind == "unit":
            bad = "!(v >= 0.0 && v <= 1.0)"
            msg = f"targets '{label}': {where} %lld holds %.9g, outside [0, 1]"
        else:
            bad = "v != v || v - v != 0.0"
            msg = f"input '{label}': {where} %lld holds %.9g (NaN or Inf are refused)"
        msg = c_string_literal(f"{plan.name}_{e.entry}: {msg}")
        if zero_msg:
            msg = f"v == 0.0 ? {c_string_literal(f'{plan.name}_{e.entry}: {zero_msg}')} : {msg}"
        at = []  # a divisor's positions where 0 is refused: `at` tells whether i is one
        if c.kind == "divisor" and c.zero_at is not None:
            within = " || ".join(f"(j >= {a} && j < {z})" for a, z in c.zero_at) or "0"
            j = f"i % {per}" if per else "i"
            at = [f"        int64_t j = {j};", f"        int at = {within};"]
        L += [
            f"static void {_explainer(plan, e, p)}(const {p.ctype} *a, int64_t count) {{",
            "    int64_t i;",
            "    for (i = 0; i < count; i++) {",
            "        double v = (double)a[i];",
            *at,
            f"        if ({bad}) {{",
            f"            gc_note({msg}, (long long)(i / {per or 1}), v);",
            "            return;",
            "        }",
            "    }",
            "}",
        ]
    return L


def _c_param_name(decl: str) -> str:
    """The parameter's name at the end of a C parameter declaration ("const float *x" -> "x")."""
    m = re.search(r"(\w+)$", decl)
    if m is None:
        raise CodegenError(f"no parameter name in the C declaration {decl!r}")
    return m.group(1)


def _c_entry_guard(plan: LibraryPlan, e: EntryPlan) -> list[str]:
    """Entry ``e``'s public function: its body (_c_entry) with the ctx entered around it."""
    proto = _prototype(plan, e)
    public = f"int {plan.name}_{e.entry}("
    names = [_c_param_name(a) for a in proto[len(public) : -1].split(", ")]
    return [
        f"API {proto} {{",
        "    int gc_slot = enter_ctx(ctx), gc_rc;",
        f'    if (gc_slot < 0) return gc_noted("{plan.name}_{e.entry}", {plan.upper}_ERR_BUSY);',
        f"    gc_rc = {plan.name}__body_{e.entry}({', '.join(names)});",
        "    leave_ctx(gc_slot);",
        f'    return gc_noted("{plan.name}_{e.entry}", gc_rc);',
        "}",
    ]
