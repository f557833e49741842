"""Tests for graphc.codegen.gemm: every transpose x accumulate x epilogue, against float64 numpy."""

from __future__ import annotations

import ctypes
import functools
import itertools
import mmap
import re

import numpy as np
import pytest
from llvmlite import ir

from graphc.codegen.gemm import (
    Blocking,
    JitGemm,
    JitGemms,
    edge_heights,
    emit_gemm,
    gemv_tiles_take,
)
from graphc.ir.errors import CodegenError

DIMS = (0, 1, 3, 7, 17, 33, 64, 100, 129, 257)
NP_DTYPE = {"f32": np.float32, "f64": np.float64}
ROW_STEP = 0.25  # the test epilogue adds ROW_STEP * i, so a wrong row index shows


def shapes() -> list[tuple[int, int, int]]:
    """Each of M, N, K runs through DIMS (the others moderate), plus shapes that cross blocks."""
    out = []
    for d in DIMS:
        out += [(d, 33, 17), (17, d, 33), (33, 17, d)]
    # Around the direct path's limit (M <= 5), three K blocks of f32 (KC = 256),
    # and every cache block at once.
    out += [(5, 40, 19), (6, 16, 8), (2, 9, 300), (7, 19, 600), (257, 257, 257), (130, 7, 3)]
    return out


# The bias arrays must outlive the compiled kernels, which hold their addresses.
BIAS = {dt: np.linspace(-1.0, 1.0, 600).astype(t) for dt, t in NP_DTYPE.items()}


def bias_relu(dtype: str):
    """epilogue(acc, i, j) = max(0, acc + bias[j:j+W] + ROW_STEP * i), loading bias as a vector."""
    bias = BIAS[dtype]

    def epilogue(b: ir.IRBuilder, acc: ir.Value, i: ir.Value, j: ir.Value) -> ir.Value:
        is_vec = isinstance(acc.type, ir.VectorType)
        elem = acc.type.element if is_vec else acc.type
        base = b.inttoptr(ir.Constant(ir.IntType(64), bias.ctypes.data), ir.PointerType())
        ptr = b.gep(base, [j], inbounds=True, source_etype=elem)
        x = b.fadd(acc, b.load(ptr, typ=acc.type, align=bias.itemsize), name="epi.bias")
        row = b.fmul(b.sitofp(i, elem), ir.Constant(elem, ROW_STEP))
        if is_vec:
            row = b.insert_element(
                ir.Constant(acc.type, ir.Undefined), row, ir.Constant(ir.IntType(32), 0)
            )
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), acc.type.count), None)
            row = b.shuffle_vector(row, ir.Constant(acc.type, ir.Undefined), zeros)
        x = b.fadd(x, row)
        zero = ir.Constant(acc.type, None)
        return b.select(b.fcmp_ordered(">", x, zero), x, zero, name="epi.relu")

    return epilogue


def reference_epilogue(c: np.ndarray, dtype: str) -> np.ndarray:
    m, n = c.shape
    return np.maximum(
        0.0, c + BIAS[dtype][:n].astype(np.float64) + ROW_STEP * np.arange(m)[:, None]
    )


CONFIGS = list(
    itertools.product(("f32", "f64"), (False, True), (False, True), (False, True), (False, True))
)


def config_name(dtype: str, trans_a: bool, trans_b: bool, accumulate: bool, epilogue: bool) -> str:
    ops = ("t" if trans_a else "n") + ("t" if trans_b else "n")
    return f"{dtype}_{ops}{'_acc' if accumulate else ''}{'_epi' if epilogue else ''}"


@functools.cache
def kernels(dtype: str) -> JitGemms:
    """All 16 variants of one dtype in one module (also checks that they can share a module)."""
    return JitGemms(
        {
            config_name(*cfg): {
                "dtype": dtype,
                "trans_a": cfg[1],
                "trans_b": cfg[2],
                "accumulate": cfg[3],
                "epilogue": bias_relu(dtype) if cfg[4] else None,
            }
            for cfg in CONFIGS
            if cfg[0] == dtype
        }
    )


def kernel(dtype: str, trans_a: bool, trans_b: bool, accumulate: bool, epilogue: bool) -> JitGemm:
    return kernels(dtype)[config_name(dtype, trans_a, trans_b, accumulate, epilogue)]


def operands(rng: np.random.Generator, m: int, n: int, k: int, ta: bool, tb: bool, dtype: str):
    t = NP_DTYPE[dtype]
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(t)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(t)
    return a, b


def check(
    g: JitGemm, m: int, n: int, k: int, rng: np.random.Generator, what: str, epilogue: bool
) -> None:
    cfg = g.config
    dtype, ta, tb = cfg.get("dtype", "f32"), cfg.get("trans_a", False), cfg.get("trans_b", False)
    acc = cfg.get("accumulate", False)
    a, b = operands(rng, m, n, k, ta, tb, dtype)
    c_old = rng.standard_normal((m, n)).astype(NP_DTYPE[dtype])
    # NaN where C is not read: an element the kernel forgets stays NaN and fails the comparison.
    c = c_old.copy() if acc else np.full((m, n), np.nan, NP_DTYPE[dtype])
    g(a, b, c)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    if acc:
        want += c_old
    if epilogue:
        want = reference_epilogue(want, dtype)
    tol = 1e-4 * np.sqrt(max(k, 1)) if dtype == "f32" else 1e-12 * max(k, 1)
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol, err_msg=f"{what} M,N,K={m},{n},{k}")


@pytest.mark.parametrize(
    "dtype,trans_a,trans_b,accumulate,epilogue", CONFIGS, ids=[config_name(*c) for c in CONFIGS]
)
def test_gemm_matches_numpy(
    dtype: str, trans_a: bool, trans_b: bool, accumulate: bool, epilogue: bool
) -> None:
    g = kernel(dtype, trans_a, trans_b, accumulate, epilogue)
    rng = np.random.default_rng(hash((dtype, trans_a, trans_b, accumulate, epilogue)) % 2**32)
    what = f"{dtype} trans_a={trans_a} trans_b={trans_b} acc={accumulate} epi={epilogue}"
    for m, n, k in shapes():
        check(g, m, n, k, rng, what, epilogue)


def test_gemm_with_k_zero_stores_epilogue_of_zero() -> None:
    g = kernel("f32", False, False, False, True)
    c = np.full((7, 19), np.nan, np.float32)
    g(np.zeros((7, 0), np.float32), np.zeros((0, 19), np.float32), c)
    np.testing.assert_allclose(c, reference_epilogue(np.zeros((7, 19)), "f32"), rtol=1e-6)


def test_gemm_writes_only_inside_c() -> None:
    """C sits inside a larger buffer whose margins must keep their sentinel values."""
    rng = np.random.default_rng(1)
    for ta, tb in itertools.product((False, True), repeat=2):
        g = kernel("f32", ta, tb, False, True)
        for m, n, k in [(1, 9, 5), (3, 21, 4), (5, 8, 9), (7, 13, 300), (131, 17, 3), (4, 260, 2)]:
            a, b = operands(rng, m, n, k, ta, tb, "f32")
            buf = np.full(m * n + 64, 7.0, np.float32)
            c = buf[32 : 32 + m * n].reshape(m, n)
            g(a, b, c)
            assert (buf[:32] == 7.0).all() and (buf[32 + m * n :] == 7.0).all(), (ta, tb, m, n, k)


def guarded(arr: np.ndarray) -> tuple[np.ndarray, mmap.mmap]:
    """A copy of arr that ends exactly at a PROT_NONE page: reading past its end faults."""
    page = mmap.PAGESIZE
    size = -(-arr.nbytes // page) * page
    mem = mmap.mmap(-1, size + page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + size, page, 0) == 0
    view = np.frombuffer(mem, np.uint8, arr.nbytes, size - arr.nbytes).view(arr.dtype)
    view = view.reshape(arr.shape)
    view[...] = arr
    return view, mem


def test_gemm_reads_nothing_past_a_and_b() -> None:
    """A and B end at an unreadable page, so an over-read (edge vectors, tails) crashes."""
    rng = np.random.default_rng(2)
    keep = []
    for ta, tb in itertools.product((False, True), repeat=2):
        g = kernel("f32", ta, tb, True, False)
        for m, n, k in [(1, 13, 7), (3, 9, 11), (7, 21, 300), (130, 19, 5), (2, 1, 1)]:
            a, b = operands(rng, m, n, k, ta, tb, "f32")
            ga, mem_a = guarded(a)
            gb, mem_b = guarded(b)
            keep += [mem_a, mem_b]
            c = np.zeros((m, n), np.float32)
            g(ga, gb, c)
            want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
            np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)


def test_gemm_reads_b_in_place_for_few_rows() -> None:
    """nn products with at most B_IN_PLACE_MAX_M rows of C and N whole slivers read B where it
    lies (no packing): B not 64-byte aligned, or ending at an unreadable page, K across KC
    blocks. Each row of C holds the bits the packed path gives it (one row more than the
    limit packs B: same products in the same order), and agrees with float64 numpy."""
    from graphc.codegen.gemm import B_IN_PLACE_MAX_M

    rng = np.random.default_rng(5)
    keep = []
    g = kernel("f32", False, False, False, False)
    limit = B_IN_PLACE_MAX_M
    for n, k in [(64, 33), (128, 800), (192, 7)]:
        a = rng.standard_normal((limit + 1, k)).astype(np.float32)
        store = np.empty(k * n + 1, np.float32)[1:]  # 4 bytes past an aligned start
        b = store.reshape(k, n)
        b[...] = rng.standard_normal((k, n))
        packed = g(a, b, np.zeros((limit + 1, n), np.float32))
        want = a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(packed, want, rtol=1e-4, atol=1e-4)
        gb, mem = guarded(np.ascontiguousarray(b))
        keep.append(mem)
        for m in (6, 17, limit):  # (M <= 5 takes the direct path)
            for bb in (b, gb):
                c = g(np.ascontiguousarray(a[:m]), bb, np.zeros((m, n), np.float32))
                np.testing.assert_array_equal(c, packed[:m])


def test_b_in_place_twin_only_where_few_rows_or_narrow_b_can_occur() -> None:
    """The twin microkernel that reads B in place (name ending ".bs") is emitted only where a
    product may have at most B_IN_PLACE_MAX_M rows or (A not transposed) B's rows may be at most
    B_IN_PLACE_MAX_ROW_BYTES wide, with whole slivers of N: not for B^T, a fixed M (or min_M)
    above the limit with a fixed wide N or A^T (a weight gradient), or a fixed N that is
    no whole number of slivers (a 10-class layer on 16 lanes). A fixed M just above the limit
    gives the bits of the same product compiled for any M, with B narrow (read in place) and
    wide (packed)."""
    from graphc.codegen.gemm import B_IN_PLACE_MAX_M, B_IN_PLACE_MAX_ROW_BYTES

    wide = {"vector_width": 16, "registers": 32}
    over = B_IN_PLACE_MAX_M + 1
    narrow_n = B_IN_PLACE_MAX_ROW_BYTES // 4  # f32
    wide_n = narrow_n + 128

    def twins(**config) -> int:
        return len(
            re.findall(
                r"define internal void @\"?graphc\.gemm\.ukernel\.\S+\.bs", emitted(**config)
            )
        )

    # M not known: the twin of the rows kernel (wide: A in place), of both (AVX2: A in place
    # for N up to two slivers, else packed)
    assert twins(**wide) == 1 and twins() == 2
    assert twins(**wide, fixed={"M": B_IN_PLACE_MAX_M}) == 1
    assert twins(**wide, fixed={"N": 256}) == 1
    for config in (  # N may be narrow: the twin whatever M is (not for A^T: weight gradients)
        {"fixed": {"M": over}},
        {"fixed": {"min_M": over}},
        {"fixed": {"M": 784, "N": narrow_n}},
    ):
        assert twins(**wide, **config) == 1, config
    for config in (
        {"trans_b": True},
        {"fixed": {"M": over, "N": wide_n}},
        {"fixed": {"min_M": over, "N": wide_n}},
        {"trans_a": True, "fixed": {"M": 784, "N": wide_n}},
        {"trans_a": True, "fixed": {"M": 784, "N": narrow_n}},
        {"fixed": {"N": 10}},
    ):
        assert twins(**wide, **config) == 0, config
    rng = np.random.default_rng(11)
    g = JitGemms({"any": dict(wide), "fixed": {**wide, "fixed": {"M": over}}})
    a = rng.standard_normal((over, 300)).astype(np.float32)
    for n in (64, narrow_n, wide_n):
        b = rng.standard_normal((300, n)).astype(np.float32)
        c_any = g["any"](a, b, np.zeros((over, n), np.float32))
        c_fixed = g["fixed"](a, b, np.zeros((over, n), np.float32))
        np.testing.assert_array_equal(c_fixed, c_any)
        np.testing.assert_allclose(c_fixed, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_shallow_a_stored_k_by_m_is_read_in_place(monkeypatch) -> None:
    """A stored [K, M] (C = A^T @ B, a weight gradient) with K <= A_IN_PLACE_SHALLOW_K and N of
    up to A_IN_PLACE_SHALLOW_SLIVERS slivers is read where it lies (no pack_a where K and N are
    fixed so), deeper K packs; either way each element of C gets the bits of the packed
    product (same k order) and agrees with float64 numpy."""
    import graphc.codegen.gemm as G

    wide = {"vector_width": 16, "registers": 32, "trans_a": True}
    nr, k_max = 64, G.A_IN_PLACE_SHALLOW_K
    n_max = nr * G.A_IN_PLACE_SHALLOW_SLIVERS
    assert "pack_a" not in emitted(**wide, fixed={"N": n_max, "K": k_max})
    assert "pack_a" in emitted(**wide, fixed={"N": n_max, "K": k_max + 1})
    assert "pack_a" in emitted(**wide, fixed={"N": n_max + nr, "K": 8})
    rng = np.random.default_rng(12)
    shapes = [(130, n_max, k_max), (784, n_max, 32), (61, 3 * nr, 17), (50, n_max, k_max + 1)]
    runs = []
    for shallow_k in (k_max, 0):  # 0: A always packed above A_IN_PLACE_MAX_SLIVERS slivers
        monkeypatch.setattr(G, "A_IN_PLACE_SHALLOW_K", shallow_k)
        g = JitGemms({"tn": dict(wide)})["tn"]
        out = []
        for m, n, k in shapes:
            a = rng.standard_normal((k, m)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            c = g(a, b, np.zeros((m, n), np.float32))
            want = a.T.astype(np.float64) @ b.astype(np.float64)
            np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)
            out.append(c)
        rng = np.random.default_rng(12)
        runs.append(out)
    for in_place, packed in zip(*runs, strict=True):
        np.testing.assert_array_equal(in_place, packed)


PLAIN_X86 = {  # name: (vector_width, trans_a, trans_b)
    "sse_nn": (4, False, False),
    "sse_tn": (4, True, False),
    "scalar_nt": (1, False, True),
}


@functools.cache
def plain_x86_kernels() -> JitGemms:
    configs = {
        name: {
            "vector_width": w,
            "trans_a": ta,
            "trans_b": tb,
            "dtype": "f32",
            "epilogue": bias_relu("f32"),
        }
        for name, (w, ta, tb) in PLAIN_X86.items()
    }
    return JitGemms(configs, cpu="x86-64", features="")


@pytest.mark.parametrize("name", list(PLAIN_X86))
def test_gemm_is_correct_on_plain_x86_64(name: str) -> None:
    """SSE2 only (no AVX, no FMA): vector widths 4 and 1 give the right answer."""
    rng = np.random.default_rng(3)
    g = plain_x86_kernels()[name]
    for m, n, k in [(1, 19, 9), (3, 33, 17), (17, 29, 260), (64, 7, 3)]:
        check(g, m, n, k, rng, f"x86-64 {name}", True)
    asm = g.asm()
    assert "ymm" not in asm and "vfmadd" not in asm


def test_gemm_passes_extra_arguments_to_the_epilogue() -> None:
    """extra_types: a bias pointer and a scale arrive as arguments, in every helper."""

    def epilogue(b: ir.IRBuilder, acc: ir.Value, i: ir.Value, j: ir.Value, extras) -> ir.Value:
        bias_ptr, scale = extras
        elem = ir.FloatType()
        bias = b.load(b.gep(bias_ptr, [j], inbounds=True, source_etype=elem), typ=acc.type, align=4)
        if isinstance(acc.type, ir.VectorType):
            scale = b.insert_element(
                ir.Constant(acc.type, ir.Undefined), scale, ir.Constant(ir.IntType(32), 0)
            )
            scale = b.shuffle_vector(
                scale,
                ir.Constant(acc.type, ir.Undefined),
                ir.Constant(ir.VectorType(ir.IntType(32), acc.type.count), None),
            )
        return b.fadd(b.fmul(acc, scale), bias)

    extra_types = [ir.PointerType(), ir.FloatType()]
    gs = JitGemms(
        {
            op: {
                "trans_a": op[0] == "t",
                "trans_b": op[1] == "t",
                "epilogue": epilogue,
                "extra_types": extra_types,
            }
            for op in ("nn", "nt", "tn")
        }
    )
    rng = np.random.default_rng(5)
    for op, g in gs.kernels.items():
        for m, n, k in [(1, 13, 7), (3, 21, 5), (67, 45, 300)]:
            a, b = operands(rng, m, n, k, op[0] == "t", op[1] == "t", "f32")
            bias = rng.standard_normal(n).astype(np.float32)
            c = np.full((m, n), np.nan, np.float32)
            g(a, b, c, bias.ctypes.data, 0.5)
            want = 0.5 * ((a.T if op[0] == "t" else a) @ (b.T if op[1] == "t" else b)) + bias
            np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4, err_msg=f"{op} {m},{n},{k}")


def emitted(**config) -> str:
    module = ir.Module(name="t")
    emit_gemm(module, "g", **config)
    return str(module)


def test_gemm_calls_only_llvm_intrinsics_and_its_helpers() -> None:
    text = emitted(trans_b=True, epilogue=bias_relu("f32"))
    for callee in re.findall(r"call \S+ @\"?([\w.]+)", text):
        assert callee.startswith(("llvm.", "g.", "graphc.gemm.")), callee
    assert "llvm.fmuladd.v8f32" in text


@pytest.mark.parametrize(
    "blocking,config",
    [
        (None, {}),
        (Blocking(4, kc=128), {"dtype": "f64"}),
        (None, {"vector_width": 16, "registers": 32}),  # rows of A in place: a deeper KC
        (None, {"vector_width": 16, "registers": 32, "trans_a": True}),  # A packed
    ],
    ids=["default", "f64-packed", "wide-nn", "wide-tn"],
)
def test_gemm_stack_buffers_are_bounded(blocking: Blocking | None, config: dict) -> None:
    text = emitted(blocking=blocking, **config)
    sizes = [
        int(n) * (4 if t == "float" else 8)
        for n, t in re.findall(r"alloca \[(\d+) x (float|double)\]", text)
    ]
    assert sizes and sum(sizes) <= 400 * 1024, sizes


def test_gemm_f64_packed_path_matches_numpy() -> None:
    """f64 uses the direct path by default; the packed path works for it too."""
    rng = np.random.default_rng(4)
    g = JitGemm.compile(
        dtype="f64",
        trans_a=True,
        trans_b=True,
        accumulate=True,
        epilogue=bias_relu("f64"),
        blocking=Blocking(4, kc=128),
    )
    for m, n, k in [(1, 9, 5), (13, 29, 300), (130, 7, 129), (7, 40, 9)]:
        check(g, m, n, k, rng, "f64 packed tt", True)


def test_gemm_rejects_unknown_dtype_and_bad_widths() -> None:
    with pytest.raises(CodegenError, match="dtype"):
        emit_gemm(ir.Module(), "g", dtype="f16")
    with pytest.raises(CodegenError, match="power of two"):
        emit_gemm(ir.Module(), "g", vector_width=6)
    with pytest.raises(CodegenError, match="multiples"):
        emit_gemm(ir.Module(), "g", blocking=Blocking(8, mc=100))


def test_blocking_tiles_fit_sixteen_registers() -> None:
    for dtype, width in [("f32", 8), ("f64", 8), ("f32", 4)]:
        blk = Blocking.for_dtype(dtype, width)
        assert blk.mr * blk.nv + blk.nv + 1 <= 16
        assert blk.nr * (4 if dtype == "f32" else 8) == 2 * width * 4


WIDE = {  # name: (trans_a, trans_b, accumulate, epilogue, fixed N): 16 lanes on 32 registers
    "nn_epi": (False, False, False, True, None),
    "tn_acc": (True, False, True, False, None),
    "nt_epi": (False, True, False, True, None),
    "nn_n10": (False, False, False, True, 10),
    "tn_n10": (True, False, False, False, 10),
    "nt_n20": (False, True, True, False, 20),
}


@functools.cache
def wide_kernels() -> JitGemms:
    """The AVX-512 register tiles (16 lanes, 32 registers); LLVM splits the vectors on a host
    without AVX-512, so the results are checked everywhere."""
    configs = {
        name: {
            "vector_width": 16,
            "registers": 32,
            "trans_a": ta,
            "trans_b": tb,
            "accumulate": acc,
            "epilogue": bias_relu("f32") if epi else None,
            "fixed": {"N": n} if n else None,
        }
        for name, (ta, tb, acc, epi, n) in WIDE.items()
    }
    return JitGemms(configs)


def test_blocking_on_wide_registers_follows_n() -> None:
    """AVX-512: 12 x 1 up to 16 columns, 6 x 2 up to 32, else (and for unknown N) 6 x 4;
    every tile fits 32 registers (accumulators, B vectors, one broadcast)."""
    tiles = {n: Blocking.for_dtype("f32", 16, 32, n) for n in (1, 10, 16, 17, 32, 33, 256, None)}
    assert {n: (b.mr, b.nv) for n, b in tiles.items()} == {
        1: (12, 1), 10: (12, 1), 16: (12, 1), 17: (6, 2), 32: (6, 2), 33: (6, 4),
        256: (6, 4), None: (6, 4),
    }  # fmt: skip
    for b in tiles.values():
        assert b.mr * b.nv + b.nv + 1 <= 32 and b.mc % b.mr == 0 and b.nc % b.nr == 0
    assert (Blocking.for_dtype("f64", 16, 32).mr, Blocking.for_dtype("f64", 16, 32).nv) == (6, 2)
    # A stored [M, K] is read where it lies on the wide tile; A stored [K, M] is still packed
    wide = {"vector_width": 16, "registers": 32}
    assert "pack_a" not in emitted(trans_b=True, **wide)
    assert "pack_a" in emitted(trans_a=True, **wide) and "pack_a" in emitted()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(WIDE))
def test_gemm_wide_tiles_match_numpy(name: str, threads: int) -> None:
    """Every wide tile, edges in M, N and K (across KC = 256 and NC = 256), on 1 and 2 threads
    (the larger shapes split between the threads)."""
    g = wide_kernels()[name]
    g.owner.set_threads(threads)
    try:
        rng = np.random.default_rng(len(name) + threads)
        n_fixed = WIDE[name][4]
        ns = [n_fixed] if n_fixed else [1, 17, 63, 65, 130, 300]
        for n in ns:
            for m, k in [(1, 9), (6, 1), (7, 17), (13, 300), (130, 260), (257, 600)]:
                check(g, m, n, k, rng, f"wide {name} {threads} threads", WIDE[name][3])
    finally:
        g.owner.set_threads(1)


def test_gemm_narrow_wide_tile_serves_any_n() -> None:
    """The 12 x 16 tile (chosen for N <= 16) also serves a GEMM shared by kernels whose N differ
    (N not fixed): wider N takes several slivers, narrower an edge."""
    blk = Blocking.for_dtype("f32", 16, 32, 10)
    g = JitGemms(
        {
            "tn": {"vector_width": 16, "registers": 32, "trans_a": True, "blocking": blk},
            "nn": {
                "vector_width": 16,
                "registers": 32,
                "blocking": blk,
                "epilogue": bias_relu("f32"),
            },
        },
        threads=2,
    )
    rng = np.random.default_rng(12)
    for n in (1, 5, 10, 16, 17, 40):
        for m, k in [(7, 3), (130, 300), (600, 600)]:
            check(g["tn"], m, n, k, rng, "12x16 tn", False)
            check(g["nn"], m, n, k, rng, "12x16 nn", True)


EDGE = {  # name: (vector_width, registers, trans_a, accumulate, epilogue, fixed N)
    "avx2_nn": (8, 16, False, False, True, None),  # 6 x 16: A packed (N > 32) or in place
    "avx2_tn_acc": (8, 16, True, True, False, None),  # A's columns: packed or in place
    "wide_nn_acc": (16, 32, False, True, True, None),  # 6 x 64, rows of A in place
    "wide_tn": (16, 32, True, False, True, None),  # 6 x 64, A packed
    "wide_n10": (16, 32, False, False, True, 10),  # 12 x 16
    "wide_tn_n10": (16, 32, True, True, False, 10),
}


@functools.cache
def edge_kernels() -> JitGemms:
    configs = {
        name: {
            "vector_width": w,
            "registers": regs,
            "trans_a": ta,
            "accumulate": acc,
            "epilogue": bias_relu("f32") if epi else None,
            "fixed": {"N": n} if n else None,
        }
        for name, (w, regs, ta, acc, epi, n) in EDGE.items()
    }
    return JitGemms(configs)


@pytest.mark.parametrize("name", list(EDGE))
def test_gemm_edge_tiles_along_m_match_numpy(name: str) -> None:
    """A panel's last mc % MR rows run a lower tile (edge_heights): M = 1..13 and M % MR in
    every class at MR = 6 and 12, with a panel edge inside an MC block (M = 121..125), with
    one K block and with several (C read back between them), N on both sides of packing A."""
    g = edge_kernels()[name]
    w, regs, _, _, epi, n_fixed = EDGE[name]
    blk = Blocking.for_dtype("f32", w, regs, n_fixed)
    assert edge_heights(blk.mr) == ((2, 4) if blk.mr == 6 else (4, 8))
    rng = np.random.default_rng(len(name))
    ms = [*range(1, 14), *range(14, 26, 1 if blk.mr == 12 else 3), 121, 122, 123, 124, 125]
    for n in [n_fixed] if n_fixed else [20, 3 * blk.nr + 5]:
        for m in ms:
            for k in (7, 400):
                check(g, m, n, k, rng, f"edge {name}", epi)


def store_elsewhere(b: ir.IRBuilder, acc: ir.Value, i: ir.Value, j: ir.Value, extras, dims):
    """An update-like epilogue: stores 2 * acc + ROW_STEP * i at out[i, j] (out: the extra
    pointer, laid out like C) and returns acc for C."""
    (out,) = extras
    elem = acc.type.element if isinstance(acc.type, ir.VectorType) else acc.type
    row = b.fmul(b.sitofp(i, elem), ir.Constant(elem, ROW_STEP))
    if isinstance(acc.type, ir.VectorType):
        row = b.insert_element(ir.Constant(acc.type, ir.Undefined), row, ir.Constant(I32, 0))
        zeros = ir.Constant(ir.VectorType(I32, acc.type.count), None)
        row = b.shuffle_vector(row, ir.Constant(acc.type, ir.Undefined), zeros)
    x = b.fadd(b.fmul(acc, ir.Constant(acc.type, 2.0)), row)
    p = b.gep(out, [b.add(b.mul(i, dims[1]), j)], inbounds=True, source_etype=elem)
    b.store(x, p, align=4)
    return acc


store_elsewhere.needs_dims = True  # type: ignore[attr-defined]
I32 = ir.IntType(32)


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_whose_c_only_the_epilogue_reads_stores_the_epilogues_values(threads: int) -> None:
    """c_unread (an optimizer update in the epilogue of its gradient's GEMM): what the
    epilogue stores is 2 * op(A) @ op(B) + ROW_STEP * i, from panels in a stack buffer where
    K fits one block (C then keeps its NaNs), from C where it does not (K > KC) or M is small
    (the direct path); every tile of A's packed and in-place paths and M's edge tiles."""
    cases = {  # (vector_width, registers, trans_a, fixed N)
        "avx2_tn": (8, 16, True, None),
        "avx2_nn": (8, 16, False, None),
        "wide_tn": (16, 32, True, None),
        "wide_nn": (16, 32, False, None),
        "wide_tn_n10": (16, 32, True, 10),
    }
    gs = JitGemms(
        {
            name: {
                "vector_width": w,
                "registers": regs,
                "trans_a": ta,
                "epilogue": store_elsewhere,
                "extra_types": [ir.PointerType()],
                "fixed": {"N": n} if n else None,
                "c_unread": True,
            }
            for name, (w, regs, ta, n) in cases.items()
        },
        threads=threads,
    )
    rng = np.random.default_rng(threads)
    for name, (_, _, ta, n_fixed) in cases.items():
        g = gs[name]
        for n in [n_fixed] if n_fixed else [20, 200]:
            for m, k in [(3, 7), (8, 5), (32, 128), (130, 33), (257, 300), (600, 0), (784, 40)]:
                a, b = operands(rng, m, n, k, ta, False, "f32")
                c = np.full((m, n), np.nan, np.float32)
                out = np.full((m, n), np.nan, np.float32)
                g(a, b, c, out.ctypes.data)
                want = 2 * ((a.T if ta else a).astype(np.float64) @ b.astype(np.float64))
                want += ROW_STEP * np.arange(m)[:, None]
                tol = 1e-4 * np.sqrt(max(k, 1))
                what = f"{name} {threads} threads M,N,K={m},{n},{k}"
                np.testing.assert_allclose(out, want, rtol=tol, atol=tol, err_msg=what)
                if m > 5 and k <= 256:  # the packed path, one K block: C untouched
                    assert np.isnan(c).all(), what


# (N, K), built in; 64 and 72: one AVX2 tile of 8 vectors and just past it (gemv_tiles_take)
GEMV_SHAPES = [(3, 37), (16, 1), (40, 37), (64, 37), (72, 5), (250, 9), (256, 520)]


@functools.cache
def gemv_kernels() -> JitGemms:
    """GEMMs with N and K built in (a layer's forward product), 16 lanes on 32 registers and 8
    on 16: M = 1 keeps C's row in registers (emit_gemv_tiles) where it fits one tile, else
    streams it (emit_gemv)."""
    configs = {
        f"w{w}_{'tn_acc' if ta else 'nn_epi'}_{n}x{k}": {
            "vector_width": w,
            "registers": regs,
            "trans_a": ta,
            "accumulate": ta,
            "epilogue": None if ta else bias_relu("f32"),
            "fixed": {"N": n, "K": k},
        }
        for w, regs in ((16, 32), (8, 16))
        for ta in (False, True)
        for n, k in GEMV_SHAPES
    }
    return JitGemms(configs)


def test_gemv_register_tiles_only_where_the_row_fits_one_tile() -> None:
    """A GEMV with N and K built in keeps C's row in registers only where N fits the widest
    register tile, so that B is read in one pass over K: up to 256 f32 columns with AVX-512's
    32 registers (16 vectors), 64 with AVX2's 16 (8 vectors); a wider row on AVX2 (the 256- and
    128-column layers of 784-256-128-10) streams B into C's row (emit_gemv), as SSE does at 32
    columns. The numerics of both paths: test_gemv_register_tiles_match_rows_of_the_direct_path."""

    def gemv_ir(width: int, regs: int, n: int) -> str:
        text = emitted(vector_width=width, registers=regs, fixed={"N": n, "K": 37})
        body = text[re.search(r'^define .*@"g\.gemv"\(', text, re.M).start() :]
        return body[: body.index("\n}\n")]

    for width, regs, fits in ((16, 32, 256), (8, 16, 64), (4, 16, 32)):
        for n in (fits - width, fits, fits + width, 256):
            tiles = "gt1.head" in gemv_ir(width, regs, n)
            assert tiles == (n <= fits), (width, regs, n)
            assert ("gk.head" in gemv_ir(width, regs, n)) == (n > fits), (width, regs, n)


@pytest.mark.parametrize("threads", [1, 2])
def test_gemv_register_tiles_match_rows_of_the_direct_path(threads: int) -> None:
    """A single row of C (M = 1) holds the bits the direct path's tiles give the same row at
    M = 2 (each column sums k in order from zero, C_old added last), agrees with float64 numpy,
    reads nothing past A and B (the masked last columns) and writes nothing outside C; the
    256 x 520 products split their columns between 2 threads. A row too wide for one tile
    streams (emit_gemv): from zero, the same bits too; accumulating, it adds onto C_old as it
    goes (C_old first, not last), so there it agrees within the tolerance only."""
    js = gemv_kernels()
    js.set_threads(threads)
    rng = np.random.default_rng(21 + threads)
    keep = []
    try:
        for name, g in js.kernels.items():
            ta, n, k = g.config["trans_a"], g.config["fixed"]["N"], g.config["fixed"]["K"]
            a, b = operands(rng, 2, n, k, ta, False, "f32")
            if ta:  # row 1 of op(A) = row 0
                a[:, 1] = a[:, 0]
            else:
                a[1] = a[0]
            a1 = np.ascontiguousarray(a[:, :1] if ta else a[:1])
            ga, mem_a = guarded(a1)
            gb, mem_b = guarded(b)
            keep += [mem_a, mem_b]
            c_old = rng.standard_normal((2, n)).astype(np.float32)
            c_old[1] = c_old[0]
            buf = np.full(n + 64, 7.0, np.float32)
            row = buf[32 : 32 + n].reshape(1, n)
            row[...] = c_old[:1] if ta else np.nan
            g(ga, gb, row)
            assert (buf[:32] == 7.0).all() and (buf[32 + n :] == 7.0).all(), name
            two = c_old.copy() if ta else np.full((2, n), np.nan, np.float32)
            g(a, b, two)
            blk = Blocking.for_dtype("f32", g.config["vector_width"], g.config["registers"], n)
            if not ta or gemv_tiles_take(blk, n):
                assert row.tobytes() == two[:1].tobytes(), f"{name}: M = 1 and M = 2 differ"
            want = a1.reshape(1, k).astype(np.float64) @ b.astype(np.float64)
            want = want + c_old[:1] if ta else reference_epilogue(want, "f32")
            tol = 1e-4 * np.sqrt(k)
            np.testing.assert_allclose(row, want, rtol=tol, atol=tol, err_msg=name)
    finally:
        js.set_threads(1)
