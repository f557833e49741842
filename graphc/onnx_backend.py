"""An ONNX backend (onnx.backend.base API) over graphc, and the runner of ONNX's node tests.

``GraphcBackend.prepare(model).run(inputs)`` imports the model with graphc.onnx_import, compiles
it (or, with ``mode="interpret"``, evaluates it with the IR's numpy reference interpreter) and
returns its outputs in the ONNX output order.

``run_node_tests(ops)`` runs the node test cases that the installed onnx package ships
(``onnx.backend.test.case.node``: each case is a one-operator model with inputs and expected
outputs computed by ONNX's reference) for each operator graphc imports, and reports, per
operator, the cases passed, failed and skipped. A case is skipped only when the importer
rejects it with an OnnxError whose message matches one of ``UNSUPPORTED`` (the documented
limits); any other error, and any wrong number, is a failure.

Command line: ``python -m graphc.onnx_backend [--interpret] [OP ...]`` prints the table.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.ir.errors import ArgumentError, GraphcError, OnnxError

from .onnx_import import OPS, from_onnx, require_onnx

# The documented limits of the importer: a node test rejected with one of these reasons is
# reported as skipped (with the reason); every other rejection counts as a failure.
UNSUPPORTED = {
    "integer, bool or string data (graphc computes in float32)": r"element type "
    r"(int|uint|bool|string)|cast of a computed value|data type .* is not supported|"
    r"integers computed in the graph|graphc cannot compute with",
    "8-bit, 4-bit and 2-bit float or integer types": r"element type (float8|float4|int4|uint4|"
    r"int2|uint2)|cast to (float8|float4|int4|uint4|int2|uint2)",
    "casts that round to float16 or bfloat16": r"cannot round to it",
    "sequence and optional values": r"only tensor inputs are supported",
    "Gather/Slice of computed values (graphc runs them on shapes and constants only)": r"\((Gather|Slice), "
    r"opset \d+\): (this operator is )?supported only on values known at import time|"
    r"Slice of a computed value",
    "symbolic dimensions other than the first": r"dimension \d+ is symbolic",
    "the dot product of two 1-D values (a rank-0 result)": r"dot product of two 1-D values",
    "normalization over an axis other than the last": r"over the last axis only",
    "transposes of more than 2 dimensions": r"transposes 2-D values only|transpose of more than 2 dimensions in more",
    "Concat other than along the last axis of 2-D values": r"joins 2-D values along",
    "training-mode Dropout/BatchNormalization": r"training_mode",
    "outputs that are constants": r"is a constant",
    "unsupported attributes": r"attribute '.*' is not supported",
    "other operators in the test model": r"is not supported by graphc",
    "values that must be known at import time": r"must be known at import time",
    "reshapes that move the batch dimension": r"batch dimension N",
    "empty tensors (a dimension of size 0)": r"dimension of size 0",
    "Resize other than nearest-neighbour (linear, cubic, crops, kept aspect ratios)": r"nearest-"
    r"neighbour resizing only|tf_crop_and_resize|keep_aspect_ratio_policy|below 1 before "
    r"Resize-11|reference Resize refuses",
    "opsets below 7": r"opset \d is outside what graphc imports",
    "models without a default-domain opset": r"declares no default-domain opset",
    "Einsum with diagonals or rank-0 operands": r"\(Einsum, opset \d+\): equation",
    "MaxPool's Indices output": r"MaxPool's Indices output is not supported",
}


# Operands that are shapes, axes or indices: the node tests feed them as graph inputs, and
# run_case binds them to the data set's values (graphc needs them at import time).
SHAPE_INPUTS = {
    "Reshape": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Slice": (1, 2, 3, 4),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    **{
        f"Reduce{k}": (1,)
        for k in ("Max", "Min", "L1", "L2", "SumSquare", "LogSum", "LogSumExp", "Prod")
    },
    "Gather": (1,),
    "Pad": (1, 2, 3),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "Expand": (1,),
    "Split": (1,),
    "Tile": (1,),
    "CumSum": (1,),
    "Trilu": (1,),
    "OneHot": (1,),
}


class GraphcRep:
    """A prepared model: ``run(inputs)`` returns the outputs in the graph's output order."""

    def __init__(
        self, model: Any, mode: str = "compile", constants: dict | None = None, **compile_kw: Any
    ) -> None:
        self.onnx_model = model
        self.imported = from_onnx(model, trainable=False, constants=constants)
        self.mode = mode
        if mode == "compile":
            self.model = self.imported.compile(**compile_kw)
        elif mode != "interpret":
            raise GraphcError(f"mode must be 'compile' or 'interpret', got {mode!r}")

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        imp = self.imported
        names = [n for n in imp.all_inputs if n not in imp.bound]
        if not isinstance(inputs, dict) and len(inputs) == len(imp.all_inputs):
            inputs = [a for n, a in zip(imp.all_inputs, inputs) if n not in imp.bound]
        arrays = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        if isinstance(inputs, dict):
            feeds = {
                imp.input_names[k]: np.asarray(v) for k, v in inputs.items() if k not in imp.bound
            }
        else:
            feeds = {imp.input_names[k]: np.asarray(v) for k, v in zip(names, arrays)}
        if self.mode == "interpret":
            from graphc.dsl import collect_graph
            from graphc.ir.interpret import interpret

            g = collect_graph(imp.name, imp.outputs)
            vals = interpret(
                g, {**feeds, **imp.weights, "step": np.int64(0)}, float_dtype=np.float32
            )
            outs = [vals[t.name] for t in imp.outputs]
        else:
            prog = self.model.program
            used = prog.feature_inputs  # inputs no output depends on are left out
            feeds = {k: v for k, v in feeds.items() if k in used}
            if any("N" in prog.forward[k].type.shape for k in used):
                res = self.model.predict(feeds if len(feeds) > 1 else feeds[used[0]])
                outs = [res] if not isinstance(res, dict) else [res[t.name] for t in imp.outputs]
            else:  # fixed shapes (no batch dimension): inputs may differ in their first dims
                outs = self.model._run("infer", self._fixed_feeds(feeds), 1)  # n unused
        return tuple(np.asarray(o) for o in outs)

    def _fixed_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k, a in feeds.items():
            t = self.model.program.forward[k].type
            if a.shape != t.shape:
                raise ArgumentError(f"input {k!r} expects {t}, got an array of shape {a.shape}")
            out[k] = np.array(a, dtype=t.np_dtype, order="C")  # 0-d stays 0-d
        return out


class GraphcBackend:
    """onnx.backend.base.Backend's interface: prepare, run_model, supports_device."""

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> GraphcRep:
        return GraphcRep(model, **kwargs)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"


# ---------------------------------------------------------------- node tests


@dataclass
class OpReport:
    op: str
    passed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (case, documented reason)

    @property
    def run(self) -> int:
        return len(self.passed) + len(self.failed)


def skip_reason(message: str) -> str | None:
    """The documented limit an import error falls under, or None."""
    for reason, pattern in UNSUPPORTED.items():
        if re.search(pattern, message):
            return reason
    return None


_CASES: dict[str, list[Any]] = {}
_ALL: list[Any] = []


def all_node_cases() -> list[Any]:
    """Every node test case the onnx package generates (each operator's models, the
    "_expanded" variants made of the operators of its function body included)."""
    require_onnx()
    if not _ALL:
        import warnings

        from onnx.backend.test.case import node

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                cases = node.collect_testcases(None)  # generates every case once (a few s)
        _ALL.extend(c for c in cases if c.model is not None)
    return _ALL


def node_cases(op: str) -> list[Any]:
    """The node test cases the onnx package generates for ``op``: its one-node models (the
    "_expanded" variants, which test a function body made of other operators, are left out)."""
    if not _CASES:
        for c in all_node_cases():
            if len(c.model.graph.node) == 1:
                _CASES.setdefault(c.model.graph.node[0].op_type, []).append(c)
    return _CASES.get(op, [])


def sweep(mode: str = "interpret", cases: list[Any] | None = None) -> dict[str, list]:
    """Every node test case (``all_node_cases``, or ``cases``) through ``run_case``, whatever
    its operators: {"pass": [name], "skip": [(name, reason)], "fail": [(name, why)]}."""
    import warnings

    out: dict[str, list] = {"pass": [], "skip": [], "fail": []}
    for c in all_node_cases() if cases is None else cases:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                status, why = run_case(c, mode)
            except Exception as e:  # a crash is a failure, named
                status, why = "fail", f"{type(e).__name__}: {e}"
        out[status].append(c.name if status == "pass" else (c.name, why))
    return out


def _array(a: Any) -> np.ndarray:
    """A data set's value: numpy as is; TensorProto (float16, bfloat16, ...) converted."""
    if isinstance(a, np.ndarray):
        return a
    from onnx import numpy_helper

    if hasattr(a, "data_type"):
        out = numpy_helper.to_array(a)
        return (
            out.astype(np.float32) if out.dtype.kind == "V" or "bfloat" in str(out.dtype) else out
        )
    return np.asarray(a)


def _compare(got: np.ndarray, want: Any, rtol: float, atol: float) -> str | None:
    want = _array(want)
    if want.dtype == object:
        return "non-tensor expected output"
    got = np.asarray(got)
    if got.size == want.size and got.shape != want.shape:
        got = got.reshape(want.shape)  # N-batched [N,1] vs [N], masks as float
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    w = want.astype(np.float64)
    if not np.allclose(got.astype(np.float64), w, rtol=rtol, atol=atol, equal_nan=True):
        err = np.nanmax(np.abs(got - w) / np.maximum(np.abs(w), 1e-30))
        return f"values differ (max relative {err:.3g})"
    return None


LOW_PRECISION_RTOL = {10: 2.0**-10, 16: 2.0**-7}  # float16, bfloat16: half a unit in the last place


def _elem_type(g: Any, k: int) -> int:
    if k < len(g.output) and g.output[k].type.HasField("tensor_type"):
        return int(g.output[k].type.tensor_type.elem_type)
    return 0


def run_case(case: Any, mode: str) -> tuple[str, str]:
    """("pass" | "fail" | "skip", detail) for one node test case.

    Integer inputs (shapes, axes, indices: values graphc needs at import time) are bound to
    the data set's values as constants (``from_onnx(constants=...)``), one import per data set.
    """
    g = case.model.graph
    inits = {t.name for t in g.initializer}
    names = [i.name for i in g.input if i.name not in inits]
    shape_args = {
        n
        for node in g.node
        for k, n in enumerate(node.input)
        if k in SHAPE_INPUTS.get(node.op_type, ())
    }
    # integer inputs are shapes, axes or indices wherever they go (a function body's too)
    integer = {
        i.name
        for i in g.input
        if i.type.HasField("tensor_type")
        and i.type.tensor_type.elem_type in (2, 3, 5, 6, 7, 12, 13)
    }
    int_inputs = [k for k, n in enumerate(names) if n in shape_args or n in integer]
    rep = None
    for inputs, outputs in case.data_sets:
        bound = {names[k]: np.asarray(inputs[k]) for k in int_inputs if k < len(inputs)}
        if rep is None or bound:
            try:
                rep = GraphcRep(case.model, mode=mode, constants=bound)
            except OnnxError as e:
                reason = skip_reason(str(e))
                return ("skip", reason) if reason else ("fail", f"OnnxError: {e}")
            except Exception as e:
                return "fail", f"{type(e).__name__}: {e}"
        inputs = [_array(a) for a in inputs]
        try:
            got = rep.run(inputs)
        except Exception as e:
            return "fail", f"run: {type(e).__name__}: {e}"
        if len(got) != len(outputs):
            return "fail", f"{len(got)} outputs, expected {len(outputs)}"
        for k, (got_k, w) in enumerate(zip(got, outputs)):
            # a float16 or bfloat16 output holds the reference rounded to its precision
            rtol = max(case.rtol, LOW_PRECISION_RTOL.get(_elem_type(g, k), 0.0))
            bad = _compare(got_k, w, rtol, case.atol)
            if bad:
                return "fail", f"output {k}: {bad}"
    return "pass", ""


def run_node_tests(ops: list[str] | None = None, mode: str = "compile") -> list[OpReport]:
    """Run ONNX's node tests of ``ops`` (default: every default-domain op graphc imports)."""
    ops = ops or sorted(k for k in OPS if ":" not in k)
    reports = []
    for op in ops:
        rep = OpReport(op)
        for case in node_cases(op):
            status, detail = run_case(case, mode)
            if status == "pass":
                rep.passed.append(case.name)
            elif status == "skip":
                rep.skipped.append((case.name, detail))
            else:
                rep.failed.append((case.name, detail))
        reports.append(rep)
    return reports


def format_reports(reports: list[OpReport]) -> str:
    lines = ["| operator | passed / run | skipped (reason) |", "| --- | --- | --- |"]
    for r in reports:
        reasons: dict[str, int] = {}
        for _, why in r.skipped:
            reasons[why] = reasons.get(why, 0) + 1
        skip = "; ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        lines.append(f"| {r.op} | {len(r.passed)} / {r.run} | {skip} |")
        for name, why in r.failed:
            lines.append(f"|   FAIL {name} | | {why[:200]} |")
    total_p = sum(len(r.passed) for r in reports)
    total_r = sum(r.run for r in reports)
    total_s = sum(len(r.skipped) for r in reports)
    lines.append(f"| **total** | {total_p} / {total_r} | {total_s} skipped |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = "interpret" if "--interpret" in argv else "compile"
    ops = [a for a in argv if not a.startswith("--")] or None
    t0 = time.perf_counter()
    reports = run_node_tests(ops, mode)
    print(format_reports(reports))
    print(f"\n({mode}, {time.perf_counter() - t0:.1f} s)")
    return 1 if any(r.failed for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
