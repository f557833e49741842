"""The JIT compiles a model as several modules (codegen.target.compile_parts): the matmul kernels
and their GEMMs apart from the rest, in parallel threads, linked in one MCJIT engine."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import cache


def _compile(name: str):
    x = gc.input("x", ("N", 7))
    y = gc.input("y", ("N", 1))
    h = gc.dense(x, 20, "relu", name="h")
    out = gc.dense(h, 1, name="o")
    return gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(lr=0.05), name=name, seed=4)


def _forward(m, x: np.ndarray) -> np.ndarray:
    """float64 numpy forward pass of the dense relu network, from the model's parameters."""
    p = {k: np.asarray(v, np.float64) for k, v in m.params.items()}
    return np.maximum(x @ p["h.w"] + p["h.b"], 0.0) @ p["o.w"] + p["o.b"]


@pytest.mark.parametrize("threads", ["1", "2"])
def test_split_module_computes_the_same_as_numpy(monkeypatch, threads) -> None:
    monkeypatch.setenv("GRAPHC_NO_CACHE", "1")
    monkeypatch.setenv("GRAPHC_COMPILE_THREADS", threads)
    m = _compile("parts")
    assert len(m.jit.modules) >= 2  # the main module and a GEMM module
    asm = m.jit.asm()
    assert "parts_train_step" in asm and ".gemm" in asm
    rng = np.random.default_rng(1)
    for n in (1, 5, 33):  # the direct GEMM path (n <= 5) and the packed one
        x = rng.standard_normal((n, 7)).astype(np.float32)
        np.testing.assert_allclose(
            m.predict(x), _forward(m, x.astype(np.float64)), rtol=1e-5, atol=1e-5
        )
    # one SGD step against its formula: w -= lr * dL/dw, the gradient by central differences
    x = rng.standard_normal((16, 7)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    before = {k: np.array(v, np.float64) for k, v in m.params.items()}

    def loss(w: np.ndarray) -> float:
        h = np.maximum(x @ before["h.w"] + before["h.b"], 0.0)
        return float(np.mean((h @ w + before["o.b"] - y) ** 2))

    grad = np.zeros_like(before["o.w"])
    for i in range(grad.shape[0]):
        e = np.zeros_like(grad)
        e[i, 0] = 1e-6
        grad[i, 0] = (loss(before["o.w"] + e) - loss(before["o.w"] - e)) / 2e-6
    m.train_step(x, y)
    np.testing.assert_allclose(m.params["o.w"], before["o.w"] - 0.05 * grad, rtol=1e-3, atol=1e-5)


def test_cache_holds_every_part_and_rejects_bad_lengths(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRAPHC_NO_CACHE", raising=False)
    m1 = _compile("cachedparts")
    assert m1.program.timings["cache"] == "miss"
    (path,) = tmp_path.glob("*.o")
    key = path.stem
    objects = cache.load_objects(key)
    assert objects is not None and len(objects) == len(m1.jit.modules) >= 2
    m2 = _compile("cachedparts")
    assert m2.program.timings["cache"] == "hit"
    x = np.random.default_rng(2).standard_normal((9, 7)).astype(np.float32)
    np.testing.assert_array_equal(m1.predict(x), m2.predict(x))
    # a payload whose lengths run past its end is refused and removed, and rebuilt next time
    cache.store(key, (10**6).to_bytes(8, "little") + b"short")
    assert cache.load_objects(key) is None and not path.exists()
    m3 = _compile("cachedparts")
    assert m3.program.timings["cache"] == "miss"
    np.testing.assert_array_equal(m1.predict(x), m3.predict(x))


def test_glue_is_compiled_unoptimized_and_kernels_optimized(monkeypatch) -> None:
    """Entry points, tasks, GEMM drivers and loop nests are marked glue (codegen.lltypes.glue:
    optnone, so LLVM skips them); the kernels and GEMM helpers they call are optimized."""
    monkeypatch.setenv("GRAPHC_NO_CACHE", "1")
    m = _compile("glue")
    attrs = {
        f.name: str(f).split("{")[0]
        for mod in m.jit.modules
        for f in mod.functions
        if not f.is_declaration
    }
    glue_fns = [n for n, a in attrs.items() if "optnone" in a]
    for name in ("glue_train_step", "glue_infer", "glue_set_num_threads"):
        assert name in glue_fns
    assert any(n.endswith(".gemm.packed") for n in glue_fns)
    optimized = [n for n, a in attrs.items() if "optnone" not in a]
    assert any(".ukernel." in n for n in optimized)
    assert any(n.endswith(".range") for n in optimized)  # elementwise kernels' loops
    assert not [n for n in optimized if "." not in n]  # every entry point is glue


_LSR_PROBE = """
define void @f(ptr %a, ptr %b, i64 %n) {
entry:
  br label %head
head:
  %i = phi i64 [0, %entry], [%i1, %body]
  %c = icmp slt i64 %i, %n
  br i1 %c, label %body, label %done
body:
  %j = mul i64 %i, 3
  %pa = getelementptr inbounds float, ptr %a, i64 %j
  %x = load float, ptr %pa
  %pb = getelementptr inbounds float, ptr %b, i64 %j
  store float %x, ptr %pb
  %i1 = add nsw i64 %i, 1
  br label %head
done:
  ret void
}
"""


def test_codegen_options_apply_to_graphc_compiles_only(monkeypatch) -> None:
    """codegen.target.emit_object compiles x86-64 code without loop strength reduction (a
    process-wide LLVM option): set for graphc's own code generation, LLVM's default again
    after it, so another llvmlite user in the process (numba) is not affected."""
    import llvmlite.binding as llvm

    from graphc.codegen import target

    tm = target.target_machine("native")
    if not tm.triple.startswith(target._NO_LSR_ARCHES):
        pytest.skip("loop strength reduction is left on for this architecture")

    def plain() -> str:
        return tm.emit_assembly(llvm.parse_assembly(f'target triple = "{tm.triple}"' + _LSR_PROBE))

    before = plain()
    ours = target.emit_object(llvm.parse_assembly(_LSR_PROBE), tm)
    theirs = tm.emit_object(llvm.parse_assembly(_LSR_PROBE))
    assert ours != theirs  # the option took effect inside graphc's code generation ...
    monkeypatch.setenv("GRAPHC_NO_CACHE", "1")
    _compile("options")
    assert plain() == before  # ... and is LLVM's default again after it and after a compile
