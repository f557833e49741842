"""ONNX import: an ONNX model (a file or a ModelProto) becomes graphc DSL tensors.

Each ONNX node becomes the DSL ops a user would write (``OPS`` below: one entry per ONNX
operator), so autodiff, fusion, code generation and export are shared with hand-written
networks. Initializers become parameters (trainable, by the caller's choice) or non-trainable
constants (``state`` sources), both filled from the file's values when the model is compiled.
Shape computations (Shape, Gather, Concat, ... on shapes) run here, at import time, on arrays
in which the symbolic batch dimension is the string "N". Functions are inlined first
(``expand_functions``): the model's own, and the ONNX function body of any standard operator
without a rule here, so that such an operator imports whenever its body's operators do.

Everything the file says is checked before it is used: sizes are bounded, tensors' byte counts
match their shapes, external data stays inside the model's folder, and an operator, attribute
or data type outside what is listed here raises OnnxError naming the node, its op type and the
opset, before anything is compiled.

Spec: https://onnx.ai/onnx/operators/ (the operator definitions quoted in the rules below).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.ir.errors import GraphcError, OnnxError, install_hint
from graphc.ir.graph import make_node
from graphc.ir.ops import MOVEMENT_OPS
from graphc.ir.ops import OPS as IR_OPS
from graphc.ir.ops.sources import index_range, is_table
from graphc.ir.types import TensorType

from . import dsl, onnx_import_rnn, onnx_layout
from .convolution import first_max, strided_slice
from .dsl import Tensor
from .functional import permute

MIN_OPSET = 7  # the Gemm/Add/... semantics (numpy broadcasting) every rule below assumes
MAX_FILE_BYTES = 2**31 - 1  # protobuf's limit for one message
MAX_ELEMENTS = 2**28  # per tensor (1 GiB of float32): bounds what an untrusted file can allocate
MAX_NODES = 100_000
RESERVED = {"lr", "step"}  # names the compiler gives its own sources

INSTALL_HINT = "ONNX support needs the onnx package: " + install_hint("onnx", "onnx")


def require_onnx() -> Any:
    """The onnx module, or OnnxError naming the extra to install."""
    try:
        import onnx
    except ImportError as e:
        raise OnnxError(f"{INSTALL_HINT} ({e})") from None
    return onnx


# ---------------------------------------------------------------- the result


@dataclass
class OnnxImport:
    """An imported ONNX graph as graphc tensors.

    Attributes:
        outputs: one Tensor per selected ONNX graph output (``gc.compile(imp.outputs)``).
        inputs: one Tensor per ONNX graph input that is not an initializer (f32[N, ...]).
        params: graphc name -> Tensor of each trainable initializer.
        constants: graphc name -> Tensor of each non-trainable constant.
        weights: graphc name -> the file's array for every param and constant (float32).
        input_names / output_names: ONNX name -> graphc name.
        opset: the model's default-domain opset.
        name: a C identifier for the model (from the graph's name).
    """

    outputs: list[Tensor]
    inputs: list[Tensor]
    params: dict[str, Tensor]
    constants: dict[str, Tensor]
    weights: dict[str, np.ndarray]
    input_names: dict[str, str]
    output_names: dict[str, str]
    opset: int
    name: str
    producer: str = ""
    all_inputs: list[str] = field(default_factory=list)  # ONNX input names, bound ones too
    bound: set[str] = field(default_factory=set)  # inputs bound by ``constants``
    # nodes whose outputs predict but cannot train (ai.onnx.ml tree ensembles, SVMs)
    inference_only: list[str] = field(default_factory=list)
    # graphc output name -> the numpy dtype ONNX declares for an integer or bool output
    # (ArgMax's, TopK's indices, a classifier's label): graphc computes it in float32 (whole
    # numbers, exact below 2**24) and predict returns it converted (``output_dtypes``)
    output_dtypes: dict[str, np.dtype] = field(default_factory=dict)
    # graphc output name -> f: the output's row n is the graph's value + n * f, added in int64
    # after the native call (MaxPool's Indices (n * C + c) * P + p: f = C * P)
    output_row_terms: dict[str, int] = field(default_factory=dict)
    # graphc output name -> k: the ONNX output holds the batch axis N at axis k > 0 (torch's
    # LSTM / GRU h_n [layers * dirs, N, H]); the compiled output holds it first (the other
    # axes in their ONNX order) and predict returns np.moveaxis(out, 0, k)
    output_batch_axes: dict[str, int] = field(default_factory=dict)
    # graphc names of the inputs the file declares bool: predict takes bool arrays for them
    bool_inputs: list[str] = field(default_factory=list)
    # graphc output name -> the value of an output known at import (numbers, or sizes holding
    # the batch size as "N" / "N*m", such as Shape(x)), which predict returns beside the
    # computed ``outputs`` (runtime.model.constant_value)
    constant_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    output_order: list[str] = field(default_factory=list)  # every output, in the file's order
    # graphc input name -> k: the ONNX input holds the batch axis N at axis k > 0 (torch's
    # nn.LSTM / nn.GRU with batch_first=False: x [T, N, C], h0 [layers * dirs, N, H]); the
    # compiled input holds it first (the other axes in their ONNX order) and predict, fit and
    # evaluate take the array in the ONNX layout, moving axis k to 0 before the native call
    input_batch_axes: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        """A summary: the name, inputs and outputs with their types, and how many params and
        constants (and values) there are; the arrays themselves are in ``weights``."""
        from graphc.runtime.model import batch_layout_type

        ins = ", ".join(
            f"{t.name}: {batch_layout_type(t.type, self.input_batch_axes.get(t.name, 0), 'taken')}"
            for t in self.inputs
        )
        outs = ", ".join(
            f"{t.name}: {batch_layout_type(t.type, self.output_batch_axes.get(t.name, 0))}"
            for t in self.outputs
        )
        size = sum(int(np.size(a)) for a in self.weights.values())
        return (
            f"<graphc OnnxImport {self.name!r} ({ins}) -> ({outs}); {len(self.params)} params, "
            f"{len(self.constants)} constants ({size:,} values); opset {self.opset}>"
        )

    def compile(self, loss: Tensor | None = None, optimizer: Any = None, **kw: Any) -> Any:
        """``gc.compile(self.outputs, loss, optimizer, name=self.name, **kw)``; the model's
        parameters and constants hold the file's values, and its ``predict`` returns each
        output the file declares integer or bool in that type (``output_dtypes``: int64 for
        ArgMax, TopK's indices or a classifier's label, as ONNX Runtime returns them; the
        float outputs stay float32). An import whose every output is known at import (no
        ``outputs`` computed, all in ``constant_outputs``) compiles nothing and returns a
        ``graphc.onnx_known.KnownOutputs``, whose ``predict`` returns them as ONNX Runtime
        does (once per call, a size holding N given the input's rows).

        Raises:
            OnnxError: a loss or an optimizer for a model with an inference-only node
                (``inference_only``: a tree ensemble or a support vector machine, whose
                outputs have no useful gradient), naming the node; or for one whose every
                output is known at import.
        """
        from .api import compile as gc_compile

        if (loss is not None or optimizer is not None) and self.inference_only:
            raise OnnxError(
                f"{self.name}: {', '.join(self.inference_only[:3])} predicts only: a tree "
                "ensemble's or support vector machine's output has no gradient to train "
                "with; compile without loss and optimizer to predict"
            )
        if not self.outputs:  # every output known at import: nothing to compile
            if loss is not None or optimizer is not None:
                raise OnnxError(
                    f"{self.name}: every output is known at import "
                    f"({', '.join(self.output_order)}); there is nothing to train"
                )
            from .onnx_known import KnownOutputs

            return KnownOutputs(
                kw.get("name", self.name),
                self.inputs,
                self.input_batch_axes,
                self.constant_outputs,
                self.output_order,
            )
        kw.setdefault("name", self.name)
        model = gc_compile(self.outputs, loss, optimizer, **kw)
        model.output_dtypes = dict(self.output_dtypes)
        model.output_row_terms = dict(self.output_row_terms)
        model.output_batch_axes = dict(self.output_batch_axes)
        model.input_batch_axes = dict(self.input_batch_axes)
        model.bool_inputs = frozenset(self.bool_inputs)
        if self.constant_outputs:
            model.constant_outputs = dict(self.constant_outputs)
            model.output_order = list(self.output_order)
        return model

    def convert_outputs(self, outs: list[np.ndarray]) -> list[np.ndarray]:
        """``outs`` (float32, one per ``self.outputs``) with each integer or bool output in
        the type the file declares (``output_dtypes``; runtime.model.as_declared), and the
        outputs known at import put in their places (``constant_outputs``, in
        ``output_order``; the batch size from the first computed output that leads with N)."""
        from graphc.runtime.model import declared_outputs

        names = [t.name for t in self.outputs]
        batched = [t.shape[:1] == ("N",) for t in self.outputs]
        got = declared_outputs(
            names,
            outs,
            batched,
            self.output_dtypes,
            self.output_row_terms,
            self.constant_outputs,
            self.output_order,
            self.output_batch_axes,
        )
        return list(got.values())


# ---------------------------------------------------------------- loading and checking files


_NP_OF = {  # TensorProto.DataType -> numpy dtype, for the types a file's tensors may use
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
    16: "bfloat16",
}
_TYPE_NAME = {
    1: "float",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "double",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
    24: "float8e8m0",
    25: "uint2",
    26: "int2",
}
FLOAT_TYPES = (1, 10, 11, 16)
# Integer and bool inputs that the graph only casts to float straight away (a uint8 image, then
# Cast and Div 255) are read as float32 too (exact for magnitudes up to 2**24); any other use
# would compute integer arithmetic (division, overflow) in float: refused.
INTEGER_TYPES = (2, 3, 4, 5, 6, 7, 9, 12, 13)
# The whole numbers of the integer types narrower than float32's exact ones (below 2**24; the
# unsigned 32/64-bit types' lower end): an integer input of the type is checked within them and
# a graph output of the type computed from such inputs kept in them (Importer.output_spans).
TYPE_SPANS = {
    9: (0, 1),
    2: (0, 255),
    3: (-128, 127),
    4: (0, 65535),
    5: (-32768, 32767),
    12: (0, 2**24 - 1),
    13: (0, 2**24 - 1),
}
# Operators whose results are 0 or 1 whatever their operands: comparisons and logic.
MASK_OPS = ("Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal", "Not", "And", "Or", "Xor")
# Operators whose integer results float32 computes exactly from whole numbers below 2**24 (Div
# truncates as integer division does; comparisons and logic give 0/1): an integer input may
# flow through them to a Cast to float or a Gather's indices.
INTEGER_FLOW = frozenset(
    [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Mod",
        "Neg",
        "Abs",
        "Sign",
        "Min",
        "Max",
        "Sum",
        "Clip",
        "Where",
        *MASK_OPS,
        "Cast",
        "CastLike",
        "Identity",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Concat",
        "Expand",
        "Transpose",
        # movements of the values (ids[:, 0], ids[:, ::2], ids.flip(1)) and reductions whose
        # integer results onnx_bounds proves exact ((ids != 0).sum(1), a sequence's length)
        "Gather",
        "Slice",
        "Split",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "Trilu",  # x or 0 (a select by a constant mask)
        "ArgMax",
        "ArgMin",
        "CumSum",
        "TopK",
    ]
)


def _tree_x(node: Any) -> str | None:
    """The X input of an ai.onnx.ml tree ensemble node, or None for any other node."""
    trees = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")
    if node.domain == "ai.onnx.ml" and node.op_type in trees and node.input:
        return str(node.input[0])
    return None


class OnnxPrecisionWarning(UserWarning):
    """An imported model declares float64 values, which graphc computes in float32."""


class OnnxFrozenWarning(UserWarning):
    """``trainable=`` names an initializer that cannot train (an input the operator's ONNX
    schema marks non-differentiable, BatchNormalization's running statistics, Pow's
    exponent): it stays a constant."""


def type_name(t: int) -> str:
    return _TYPE_NAME.get(t, f"type {t}")


def _attr_type(onnx: Any, t: Any) -> str:
    """An AttributeProto type's name (FLOAT, INTS, TENSOR, ...)."""
    try:
        return onnx.AttributeProto.AttributeType.Name(int(t))
    except ValueError:
        return f"type {int(t)}"


def load_model(source: Any) -> tuple[Any, str | None]:
    """A ModelProto from a path (external data confined to the file's folder) or a ModelProto.

    Returns (model, folder of the file or None).

    Raises:
        OnnxError: missing, too large or unparsable file; bad external data.
    """
    onnx = require_onnx()
    if isinstance(source, onnx.ModelProto):
        _check_text(source, "onnx", "model")  # (onnx.load keeps non-UTF-8 names as bytes)
        return source, None
    if isinstance(source, (bytes, bytearray)):
        return _parse(onnx, bytes(source), "<bytes>"), None
    if not isinstance(source, (str, os.PathLike)):
        raise OnnxError(
            f"from_onnx: expected a path or an onnx.ModelProto, got {type(source).__name__}"
        )
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise OnnxError(f"ONNX file {path!r} does not exist")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise OnnxError(f"ONNX file {path!r} is {size} bytes, above protobuf's 2 GiB limit")
    with open(path, "rb") as f:
        data = f.read()
    return _parse(onnx, data, path), os.path.dirname(os.path.abspath(path))


def _parse(onnx: Any, data: bytes, where: str) -> Any:
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception as e:
        raise OnnxError(f"{where}: not a valid ONNX model ({type(e).__name__}: {e})") from None
    if not m.HasField("graph"):
        raise OnnxError(f"{where}: the file holds no graph (is it an ONNX model?)")
    _check_text(m, where, "model")
    return m


def _check_text(msg: Any, where: str, path: str) -> None:
    """Refuse a string field that is not UTF-8 text (protobuf's Python runtime hands such a
    name to the reader as bytes, not str), naming the field, e.g. ``graph.node[3].input[1]``.

    Raises:
        OnnxError: a name, op type, domain or other text field that does not decode as UTF-8.
    """
    for fd, value in msg.ListFields():
        name = f"{path}.{fd.name}"
        # (repeated: a container; protobuf 6+ dropped FieldDescriptor.label)
        repeated = not isinstance(value, (str, bytes)) and not hasattr(value, "ListFields")
        if fd.type == fd.TYPE_MESSAGE:
            for i, v in enumerate(value if repeated else [value]):
                _check_text(v, where, f"{name}[{i}]" if repeated else name)
        elif fd.type == fd.TYPE_STRING:
            for i, v in enumerate(value if repeated else [value]):
                if not isinstance(v, str):
                    at = f"{name}[{i}]" if repeated else name
                    raise OnnxError(f"{where}: {at} is not UTF-8 text ({bytes(v)[:40]!r})")


def tensor_to_array(t: Any, base_dir: str | None, what: str) -> np.ndarray:
    """The array of a TensorProto (in-file or external data), every size checked first.

    Raises:
        OnnxError: unsupported data type, sizes that disagree, external data outside
            ``base_dir`` or past its file's end.
    """
    onnx = require_onnx()
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims):
        raise OnnxError(f"{what}: negative dimension in {list(dims)}")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise OnnxError(f"{what}: {count} elements, above the limit of {MAX_ELEMENTS}")
    if t.data_type not in _NP_OF:
        raise OnnxError(
            f"{what}: data type {type_name(t.data_type)} is not supported (float, double, "
            "float16, bfloat16, bool and integer tensors are)"
        )
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return _external(t, dims, count, base_dir, what)
    try:
        from onnx import numpy_helper

        a = numpy_helper.to_array(t)
    except Exception as e:
        raise OnnxError(f"{what}: cannot read its values ({type(e).__name__}: {e})") from None
    if a.shape != dims:
        raise OnnxError(f"{what}: holds {a.size} values for shape {list(dims)}")
    return bfloat16_as_float(t.data_type, a)


def sparse_to_array(sp: Any, base_dir: str | None, what: str) -> np.ndarray:
    """The dense array of a SparseTensorProto (a Constant's sparse_value, a sparse
    initializer): zeros of shape ``dims`` holding ``values`` [NNZ] at ``indices``, int64, either
    [NNZ] positions in the flattened array or [NNZ, rank] coordinates (the ONNX IR's two
    forms), as ONNX Runtime densifies them.

    Raises:
        OnnxError: indices of another type or shape, out of the array, or repeated; values
            not [NNZ].
    """
    dims = tuple(int(d) for d in sp.dims)
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_ELEMENTS:
        raise OnnxError(
            f"{what}: sparse tensor of shape {list(dims)} (at most {MAX_ELEMENTS} elements)"
        )
    values = tensor_to_array(sp.values, base_dir, f"{what} (its values)")
    idx = tensor_to_array(sp.indices, base_dir, f"{what} (its indices)")
    nnz = values.size
    if values.ndim != 1 or idx.dtype != np.int64:
        raise OnnxError(
            f"{what}: a sparse tensor needs values [NNZ] and int64 indices, got values "
            f"{list(values.shape)} and {idx.dtype} indices"
        )
    if idx.shape == (nnz, len(dims)) and len(dims) > 1:
        if ((idx < 0) | (idx >= np.array(dims))).any():
            raise OnnxError(f"{what}: a sparse index lies outside the shape {list(dims)}")
        flat = np.ravel_multi_index(tuple(idx.T), dims) if nnz else idx.reshape(0)
    elif idx.shape == (nnz,):
        flat = idx
        if ((flat < 0) | (flat >= math.prod(dims))).any():
            raise OnnxError(f"{what}: a sparse index lies outside the {math.prod(dims)} elements")
    else:
        raise OnnxError(
            f"{what}: sparse indices of shape {list(idx.shape)} fit neither [{nnz}] nor "
            f"[{nnz}, {len(dims)}]"
        )
    if len(np.unique(flat)) != nnz:
        raise OnnxError(f"{what}: a sparse index is given twice")
    dense = np.zeros(math.prod(dims), values.dtype)
    dense[flat] = values
    return dense.reshape(dims)


def bfloat16_as_float(data_type: int, a: np.ndarray) -> np.ndarray:
    """``a`` (numpy_helper.to_array of a tensor of ``data_type``) with bfloat16 values as
    float32: onnx >= 1.19 gives ml_dtypes' bfloat16, onnx 1.17 and 1.18 (graphc's minimum is
    1.17) the raw 16 bits as uint16, which read as numbers gave 16320.0 for 1.5; the bits are
    the high half of the float32."""
    if data_type == 16 and a.dtype.kind in "iu":
        bits = np.ascontiguousarray(a).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(a.shape)
    if a.dtype.kind == "V" or str(a.dtype) == "bfloat16":  # ml_dtypes bfloat16
        return a.astype(np.float32)
    return a


def _external(t: Any, dims: tuple, count: int, base_dir: str | None, what: str) -> np.ndarray:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    if base_dir is None:
        raise OnnxError(f"{what}: stored as external data; import the model from its file path")
    if not loc or os.path.isabs(loc) or "\0" in loc:
        raise OnnxError(f"{what}: external data location {loc!r} must be a relative path")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, loc))
    if os.path.commonpath([root, path]) != root:
        raise OnnxError(
            f"{what}: external data {loc!r} lies outside the model's folder {root!r}; refused"
        )
    if not os.path.isfile(path):
        raise OnnxError(f"{what}: external data file {path!r} does not exist")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise OnnxError(f"{what}: external data offset/length are not integers: {info}") from None
    dt = _NP_OF[t.data_type]
    itemsize = 2 if dt == "bfloat16" else np.dtype(dt).itemsize
    if t.data_type == 9:
        itemsize = 1
    want = count * itemsize
    if length is not None and length != want:
        raise OnnxError(f"{what}: external data length {length} != {want} bytes for {list(dims)}")
    size = os.path.getsize(path)
    if offset < 0 or offset + want > size:
        raise OnnxError(
            f"{what}: external data [{offset}, {offset + want}) runs past the end of {loc!r} "
            f"({size} bytes)"
        )
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(want)
    if dt == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(dims)
    return np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<")).reshape(dims).copy()


# ---------------------------------------------------------------- names


# appended to the origin of the node that computes an imported output whose ONNX name is no
# graphc name ("Identity:0" -> Identity_0): to_onnx writes the output under the ONNX name again
ONNX_OUTPUT_TAG = "; onnx output "
# ends the origin of an input whose ONNX element type is an integer ("onnx input ids; onnx
# type 6": int32): to_onnx declares that type again and casts to graphc's float
ONNX_TYPE_TAG = "; onnx type "
# in the origin of the node that computes an imported output the file declares double, float16,
# bfloat16, an integer type or bool ("...; onnx result type 11"; before ONNX_OUTPUT_TAG when both
# are there): to_onnx declares that type again and casts graphc's float32 to it (an integer
# output, such as ArgMax's or a classifier's label, holds whole numbers: the Cast is exact)
ONNX_RESULT_TYPE_TAG = "; onnx result type "


def c_name(name: str, taken: set[str], prefix: str = "v") -> str:
    """``name`` with every character outside [A-Za-z0-9_] replaced by '_', made unique in
    ``taken`` (and added to it); graphc and C both accept the result."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or prefix
    if s[0].isdigit():
        s = f"{prefix}_{s}"
    base, i = s, 1
    while s in taken or s in RESERVED:
        s, i = f"{base}_{i}", i + 1
    taken.add(s)
    return s


# ---------------------------------------------------------------- the converter


Value = Tensor | np.ndarray  # a graph value, or an array known at import time


class NodeContext:
    """What an op rule sees of one ONNX node: its operands (as graph tensors or as arrays known
    at import time), its attributes, and the opset version of its operator."""

    def __init__(self, imp: Importer, node: Any, index: int, version: int) -> None:
        self.imp, self.node, self.index, self.version = imp, node, index, version
        self.attrs = {a.name: a for a in node.attribute}

    @property
    def n_inputs(self) -> int:
        return len(self.node.input)

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def value(self, i: int) -> Value:
        return self.imp.lookup(self.node.input[i], self)

    def x(self, i: int) -> Tensor:
        """Operand ``i`` as a graph tensor (an array becomes a param or a constant)."""
        return self.imp.as_tensor(self.node.input[i], self)

    def c(self, i: int) -> np.ndarray:
        """Operand ``i`` as an array known at import time."""
        v = self.value(i)
        if isinstance(v, Tensor):
            self.fail(
                f"input {i} ({self.node.input[i]!r}) must be known at import time (an "
                "initializer, a Constant or a shape computation), but it is computed from the "
                "graph's inputs"
            )
        return v

    def attr(self, name: str, default: Any = None) -> Any:
        onnx = require_onnx()
        a = self.attrs.get(name)
        if a is None:
            return default
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        if a.type == onnx.AttributeProto.TENSOR:
            return tensor_to_array(v, self.imp.base_dir, f"attribute {name} of {self.where()}")
        if isinstance(v, list):
            return [x.decode() if isinstance(x, bytes) else x for x in v]
        return v

    def where(self) -> str:
        return f"node {self.index} {self.node.name!r} ({self.node.op_type}, opset {self.version})"

    def fail(self, msg: str) -> None:
        raise OnnxError(f"{self.where()}: {msg}")


@dataclass(frozen=True)
class Rule:
    """How one ONNX operator becomes graphc ops.

    convert(cx) returns the node's outputs (Tensors or arrays); ``attrs`` lists every attribute
    the rule implements (any other raises); ``fold`` computes the outputs with numpy when every
    operand is known at import time (shape computations), in which case ``convert`` is skipped.
    """

    convert: Callable[[NodeContext], list[Value]] | None
    attrs: tuple[str, ...] = ()
    fold: Callable[[NodeContext, list[np.ndarray]], list[np.ndarray]] | None = None
    domain: str = ""
    keeps_integers: bool = False  # moves values only: integer values (labels) stay integers
    reads_views: bool = False  # convert reads layout views of its operands itself (RNNs)


GROUP_NORM_18_DOMAIN = "graphc.group_norm_18"  # see Importer.check_file


def gather_for_index_transposes(model: Any) -> Any:
    """See ``_gather_for_index_transposes``; a model it cannot read is returned as it is (the
    checks after it name what is wrong)."""
    try:
        return _gather_for_index_transposes(model)
    except Exception:  # a hostile or malformed file: the import's own checks report it
        return model


# ops that act on each row of their row-aligned operand alone (the others constants that do
# not vary along axis 0): _lookup_of_updated_rows follows a Unique's rows through them
_ROWWISE_OPS = frozenset(
    {
        "Abs", "Add", "And", "Cast", "Clip", "Div", "Equal", "Exp", "Greater", "GreaterOrEqual",
        "Identity", "Less", "LessOrEqual", "Log", "Max", "Min", "Mul", "Neg", "Not", "Or", "Pow",
        "Reciprocal", "Relu", "Sigmoid", "Sqrt", "Sub", "Tanh", "Where",
    }
)  # fmt: skip
_ROW_REDUCE_OPS = frozenset(
    {
        "ReduceL1", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum",
        "ReduceSumSquare", "ReduceLogSumExp",
    }
)  # fmt: skip


def lookup_of_updated_rows(model: Any) -> Any:
    """See ``_lookup_of_updated_rows``; a model it cannot read is returned as it is (the checks
    after it name what is wrong)."""
    try:
        return _lookup_of_updated_rows(model)
    except Exception:  # a hostile or malformed file: the import's own checks report it
        return model


def _lookup_of_updated_rows(model: Any) -> Any:
    """The model with torch's dynamo export of ``nn.Embedding(max_norm=...)`` (and any lookup
    of rows updated the same way) written without its Unique: u = Unique(ids); rows =
    Gather(W, u); new = f(rows), row by row; T = ScatterND(W, Unsqueeze(u, -1), new); then
    only Gather(T, ids) (the same ids, axis 0). Every row such a Gather reads is a row of u,
    updated by f, so it equals Gather(f(W), ids) with f applied to every row of the table W:
    the Gather of u becomes Identity(W), the ScatterND Identity(new), and the Unique a Constant
    nothing reads (node numbers stay). Exact (each row takes the same operations), and what
    ONNX Runtime computes; torch's renormalisation also writes the rows back into the weight,
    which a graph output cannot (the exported file does not either).

    f row by row: from the Gathers of u, only ops of _ROWWISE_OPS whose other operands are
    constants (initializers or Constants) not varying along axis 0, and reductions of
    _ROW_REDUCE_OPS over axes without 0. Anything else reading u or a value computed from it
    (another Unique output, a graph output, a reduction over axis 0, a Gather by other ids, a
    ScatterND into another table) leaves the model as it is (the import then refuses Unique,
    naming it). The caller's ModelProto is not changed."""
    onnx = require_onnx()
    g = model.graph
    nodes = list(g.node)
    uniques = [i for i, n in enumerate(nodes) if n.op_type == "Unique" and _standard(n)]
    if not uniques:
        return model
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in nodes for o in n.output if o}
    graph_outputs = {o.name for o in g.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for v in n.input:
            if v:
                consumers.setdefault(v, []).append(i)

    def const(name: str) -> np.ndarray | None:
        t = inits.get(name)
        if t is None:
            n = producer.get(name)
            if n is None or n.op_type != "Constant" or not _standard(n):
                return None
            t = next((a.t for a in n.attribute if a.name == "value" and a.HasField("t")), None)
        if t is None or t.data_location == onnx.TensorProto.EXTERNAL or math.prod(t.dims) > 4096:
            return None
        return np.asarray(onnx.numpy_helper.to_array(t))

    def axes_of(n: Any, opset_input: int) -> list[int] | None:
        attr = [list(a.ints) for a in n.attribute if a.name == "axes"]
        if attr:
            return attr[0]
        if len(n.input) > opset_input and n.input[opset_input]:
            a = const(n.input[opset_input])
            return None if a is None else [int(v) for v in np.ravel(a)]
        return None

    rewrites: dict[int, Any] = {}
    for ui in uniques:
        u = nodes[ui]
        if not u.input or not u.output or any(o and consumers.get(o) for o in u.output[1:]):
            continue
        ids, y = u.input[0], u.output[0]
        rank: dict[str, int] = {}  # row-aligned values (one row per unique id) -> their rank
        cols: set[str] = set()  # Unsqueeze(u, -1): ScatterND's indices
        table = None
        plan: dict[int, Any] = {}
        ok = y not in graph_outputs
        for i in sorted({c for c in consumers.get(y, [])}) if ok else []:
            n = nodes[i]
            if n.op_type == "Gather" and _standard(n) and n.input[1:2] == [y]:
                axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                t = inits.get(n.input[0])
                if axis != 0 or t is None or (table is not None and n.input[0] != table):
                    ok = False
                    break
                table = n.input[0]
                rank[n.output[0]] = len(t.dims)
                plan[i] = onnx.helper.make_node("Identity", [table], list(n.output), name=n.name)
            elif n.op_type == "Unsqueeze" and _standard(n) and n.input[0] == y:
                if axes_of(n, 1) not in ([-1], [1]):
                    ok = False
                    break
                cols.add(n.output[0])
            else:
                ok = False
                break
        scatters: list[int] = []
        for i, n in enumerate(nodes) if ok and table is not None else []:
            reads = [v for v in n.input if v in rank]
            if not reads and not any(v in cols for v in n.input):
                continue
            if any(o in graph_outputs for o in n.output) or not _standard(n):
                ok = False
                break
            r = max((rank[v] for v in reads), default=0)
            others = [v for v in n.input if v and v not in rank]
            if n.op_type == "ScatterND":
                red = next((a.s for a in n.attribute if a.name == "reduction"), b"none")
                if (
                    len(n.input) != 3
                    or n.input[0] != table
                    or n.input[1] not in cols
                    or n.input[2] not in rank
                    or red not in (b"none", "none")
                ):
                    ok = False
                    break
                plan[i] = onnx.helper.make_node(
                    "Identity", [n.input[2]], list(n.output), name=n.name
                )
                scatters.append(i)
            elif n.op_type in _ROWWISE_OPS and not any(v in cols for v in n.input):
                for v in others:
                    c = const(v)
                    if c is None or c.ndim > r or (c.ndim == r and c.shape[0] != 1):
                        ok = False
                if not ok:
                    break
                rank[n.output[0]] = r
            elif n.op_type in _ROW_REDUCE_OPS and n.input[0] in rank and not others[1:]:
                axes = axes_of(n, 1)
                keep = next((a.i for a in n.attribute if a.name == "keepdims"), 1)
                if not axes or any(a % r == 0 for a in axes) or not keep:
                    ok = False
                    break
                rank[n.output[0]] = r
            else:
                ok = False
                break
        if not ok or not scatters:
            continue
        for s in scatters:  # the updated table: read only by lookups of the same ids
            for c in consumers.get(nodes[s].output[0], []):
                n = nodes[c]
                axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                if n.op_type != "Gather" or not _standard(n) or n.input[1:] != [ids] or axis:
                    ok = False
            if nodes[s].output[0] in graph_outputs:
                ok = False
        if not ok:
            continue
        value = onnx.helper.make_tensor("value", onnx.TensorProto.INT64, [1], [0])
        plan[ui] = onnx.helper.make_node("Constant", [], [y], name=u.name, value=value)
        rewrites.update(plan)
    if not rewrites:
        return model
    out = with_nodes(model, rewrites)
    # the rewritten values hold the whole table now: their declared shapes no longer hold
    changed = {o for i in rewrites for o in out.graph.node[i].output}
    keep = [vi for vi in out.graph.value_info if vi.name not in changed]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep)
    return out


def with_nodes(model: Any, rewrites: dict[int, Any]) -> Any:
    """A copy of ``model`` whose node i is rewrites[i] (a pre-pass's rewrite: node numbers
    stay; the caller's ModelProto is not changed)."""
    out = require_onnx().ModelProto()
    out.CopyFrom(model)
    for i, node in rewrites.items():
        out.graph.node[i].CopyFrom(node)
    return out


def _standard(n: Any) -> bool:
    """Whether node ``n`` is an operator of the default ONNX domain (an op of another domain
    with the same name may compute anything)."""
    return n.domain in ("", "ai.onnx")


def _gather_for_index_transposes(model: Any) -> Any:
    """The model with torch's dynamo export of a tensor index on one axis (``x[:, idx]``,
    ``x[..., idx]``: Transpose(x, P) bringing the axis first, GatherND(batch_dims=0) of
    constant indices [K, 1], Transpose(Q) putting the axes back) written as the Gather it
    computes: the last Transpose becomes Gather(x, idx, axis=P[0]) (same output name and
    node name, so node numbers stay), leaving the first two without a use (the import skips
    them). Indices [K1, K2, 2] that are an outer product of two index vectors (torch's
    nearest-exact resize of two axes, x[:, :, ih[:, None], iw[None, :]]) become two Gathers,
    one in the GatherND's place (when the last Transpose is its only use). The Transposes move the batch axis N away from first (a layout view,
    graphc.onnx_layout, which the GatherND, without a rule, would need materialized); the
    Gather keeps it. Only when the two permutations compose to the identity (the result's
    axes in x's order) and the indices are an initializer or a Constant; otherwise, and for
    anything malformed (left to the checks after), the model is returned as it is. The
    caller's ModelProto is not changed.
    """
    onnx = require_onnx()
    g = model.graph
    producer = {o: n for n in g.node for o in n.output if o}
    inits = {t.name: t for t in g.initializer}

    def const_of(name: str) -> np.ndarray | None:
        t = inits.get(name)
        if t is None:
            n = producer.get(name)
            if n is None or n.op_type != "Constant" or n.domain not in ("", "ai.onnx"):
                return None
            t = next((a.t for a in n.attribute if a.name == "value" and a.HasField("t")), None)
        if t is None or t.data_location == onnx.TensorProto.EXTERNAL:
            return None
        if t.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            return None
        if math.prod(t.dims) > (1 << 20):
            return None
        return np.asarray(onnx.numpy_helper.to_array(t))

    def perm_of(n: Any, rank: int) -> list[int] | None:
        perm = [list(a.ints) for a in n.attribute if a.name == "perm"]
        if len(perm) != 1 or sorted(perm[0]) != list(range(rank)):
            return None
        return perm[0]

    uses: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1

    def grid(idx: np.ndarray) -> list[np.ndarray] | None:
        """GatherND's indices [*S, 1] as [idx[..., 0]], or [*S1, *S2, 2] as the two index
        arrays [S1] and [S2] of an outer product (idx[a, b, 0] depends on a only, idx[a, b, 1]
        on b only: torch's nearest-exact 2-D resize has vectors, its adaptive pooling to
        sizes that do not divide the input [out, kernel] tables)."""
        if idx.ndim < 1 or idx.shape[-1] not in (1, 2) or not idx.size:
            return None
        if idx.shape[-1] == 1:
            return [idx[..., 0]]
        s = idx.ndim - 1
        for k in range(s + 1):
            ih = idx[tuple([slice(None)] * k + [0] * (s - k) + [0])]
            iw = idx[tuple([0] * k + [slice(None)] * (s - k) + [1])]
            ih_b = ih.reshape(ih.shape + (1,) * (s - k))
            iw_b = iw.reshape((1,) * k + iw.shape)
            if (idx[..., 0] == ih_b).all() and (idx[..., 1] == iw_b).all():
                return [ih, iw]
        return None

    found = []
    for i, t2 in enumerate(g.node):
        try:
            if t2.op_type != "Transpose" or not _standard(t2) or len(t2.input) != 1:
                continue
            gnd = producer.get(t2.input[0])
            if (
                gnd is None
                or gnd.op_type != "GatherND"
                or not _standard(gnd)
                or len(gnd.input) != 2
            ):
                continue
            if any(a.name == "batch_dims" and a.i != 0 for a in gnd.attribute):
                continue
            idx = const_of(gnd.input[1])
            t1 = producer.get(gnd.input[0])
            vectors = None if idx is None else grid(idx)
            if vectors is None or t1 is None:
                continue
            if t1.op_type != "Transpose" or not _standard(t1) or len(t1.input) != 1:
                continue
            if len(vectors) > 1 and uses.get(gnd.output[0], 0) != 1:
                continue  # the GatherND node becomes the first Gather: t2 must be its only use
            q = [list(a.ints) for a in t2.attribute if a.name == "perm"]
            if len(q) != 1:
                continue
            m = len(vectors)
            rank = len(q[0]) - sum(v.ndim for v in vectors) + m  # x's rank
            p, q = perm_of(t1, rank), perm_of(t2, len(q[0]))
            if p is None or q is None:
                continue
            # GatherND's output axes: the index arrays' (those of x's axis p[c] for c < m),
            # then t1's axes m.. (x's axes p[m:]); t2 reads them in the order q. Gathers in
            # place compute it when that order is x's axes in order, each gathered axis
            # replaced by its index array's axes (an axis of x labelled (axis, k))
            labels = [(p[c], k) for c, v in enumerate(vectors) for k in range(v.ndim)]
            labels += [(a, 0) for a in p[m:]]
            gathered = dict(zip(p[:m], vectors, strict=True))
            want = [
                (a, k) for a in range(rank) for k in range(gathered[a].ndim if a in gathered else 1)
            ]
            if [labels[k] for k in q] != want:
                continue
            # x's axes in place: the later axis first, so that the earlier one keeps its
            # number (the first Gather's index axes come before the later one)
            order = sorted(range(m), key=lambda c: -p[c])
            steps = [(vectors[c].astype(np.int64), p[c]) for c in order]
            found.append((i, list(g.node).index(gnd), t1.input[0], steps))
        except (ValueError, TypeError, AttributeError):
            continue
    if not found:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {o for n in out.graph.node for o in n.output} | set(inits)
    taken |= {vi.name for vi in out.graph.input}

    def gather(at: int, data: str, idx: np.ndarray, axis: int) -> None:
        old = out.graph.node[at]
        name = f"{old.output[0]}__index"
        while name in taken:
            name += "_"
        taken.add(name)
        out.graph.initializer.append(onnx.numpy_helper.from_array(idx, name))
        node = onnx.helper.make_node(
            "Gather", [data, name], list(old.output), name=old.name, axis=int(axis)
        )
        node.doc_string = old.doc_string
        out.graph.node[at].CopyFrom(node)

    for i, j, x, steps in found:
        if len(steps) == 1:
            gather(i, x, *steps[0])
            continue
        # two axes: the GatherND node gathers the first, the last Transpose the second (its
        # output's declared shape, a GatherND's, no longer holds: dropped)
        mid = out.graph.node[j].output[0]
        keep = [vi for vi in out.graph.value_info if vi.name != mid]
        del out.graph.value_info[:]
        out.graph.value_info.extend(keep)
        gather(j, x, *steps[0])
        gather(i, mid, *steps[1])
    return out


def check_dims(dims: Any, where: str) -> dict[str, int | str]:
    """``from_onnx``'s ``dims``: a dict of names to ints >= 1 (numpy integers too) or, for one
    name, "N" (that dimension is the batch), else OnnxError naming the entry."""
    if dims is None:
        return {}
    if not isinstance(dims, dict):
        raise OnnxError(f"{where}: dims must be a dict of dimension names to sizes, got {dims!r}")
    out: dict[str, int | str] = {}
    for k, v in dims.items():
        ok = v == "N" or (isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1)
        if not isinstance(k, str) or not k or not ok:
            raise OnnxError(
                f"{where}: dims entry {k!r}: {v!r}; give a dimension name and an int >= 1, or "
                '"N" for the dimension that is the batch'
            )
        out[k] = v if v == "N" else int(v)
    batch = sorted(k for k, v in out.items() if v == "N")
    if len(batch) > 1:
        raise OnnxError(f"{where}: dims names {batch} the batch N; one dimension is the batch")
    return out


class Importer:
    """Converts one ModelProto; see ``from_onnx``."""

    def __init__(
        self,
        model: Any,
        base_dir: str | None,
        trainable: Any,
        where: str,
        bound: dict,
        prefix: str = "",
        dims: dict[str, int | str] | None = None,
    ) -> None:
        onnx = require_onnx()
        self.prefix = prefix  # before every graphc name this import gives
        self.dims = check_dims(dims, where)  # symbolic dimension name -> the size it takes
        self.dims_seen: set[str] = set()  # the dim_params of the inputs
        self.bound = {k: np.asarray(v) for k, v in bound.items()}
        model = gather_for_index_transposes(model)  # torch's dynamo x[:, idx]
        model = strided_gathers(model)  # torch's dynamo as_strided on a batched tensor
        model = lookup_of_updated_rows(model)  # torch's dynamo Embedding(max_norm)
        model = qdq_as_qoperator(model)  # QDQ groups as ONNX Runtime fuses them
        model = onnx_import_rows.unsorted_rows(model)  # pack_padded_sequence's sort, unsorted
        # torch's index_put on a batched tensor: ScatterNDs converted per sample (by output)
        model, self.per_sample = batch_scatters(model)
        self.model, self.base_dir, self.where = model, base_dir, where
        self.original = model  # as read (check_file), before functions are expanded
        self.graph = model.graph
        self.opsets = {o.domain or "": int(o.version) for o in model.opset_import}
        if "ai.onnx" in self.opsets:
            self.opsets.setdefault("", self.opsets["ai.onnx"])
        self.opset = self.opsets.get("")
        newest = onnx.defs.onnx_opset_version()
        if self.opset is None:
            raise OnnxError(f"{where}: the model declares no default-domain opset")
        if not MIN_OPSET <= self.opset <= newest:
            raise OnnxError(
                f"{where}: opset {self.opset} is outside what graphc imports ({MIN_OPSET} to "
                f"{newest}, the newest the installed onnx {onnx.__version__} defines)"
            )
        if isinstance(trainable, str):
            trainable = (trainable,)  # one name, not the set of its characters
        elif not (trainable is None or isinstance(trainable, bool) or callable(trainable)):
            try:
                trainable = frozenset(trainable)
            except TypeError:
                raise OnnxError(
                    f"{where}: trainable must be True, False, a collection of initializer names "
                    f"or a predicate on the name, got {trainable!r}"
                ) from None
            bad = [n for n in trainable if not isinstance(n, str)]
            if bad:
                raise OnnxError(f"{where}: trainable names must be strings, got {bad[0]!r}")
        self.trainable = trainable
        self.asked: set[str] = set()  # names is_trainable was asked about
        self.values: dict[str, Value] = {}
        self.initializers: dict[str, np.ndarray] = {}
        self.materialized: dict[str, Tensor] = {}
        self.params: dict[str, Tensor] = {}
        self.constants: dict[str, Tensor] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.frozen_names: set[str] = set()
        self.integer_refusal = ""  # why integer_input_use found no use graphc can mirror
        self.scoped: onnx_import_control.ScopedUses | None = None  # (integer_input_use)
        self.plane_indices: dict[int, onnx_import_pool.PlaneIndices] = {}  # MaxPool's Indices
        self.row_terms: dict[str, int] = {}  # ONNX output name -> OnnxImport.output_row_terms
        self.batch_axes: dict[str, int] = {}  # ONNX output name -> OnnxImport.output_batch_axes
        self.input_axes: dict[str, int] = {}  # graphc input name -> OnnxImport.input_batch_axes
        self.const_outputs: dict[str, np.ndarray] = {}  # ONNX output name -> its value
        self.default_constants: set[str] = set()  # constants unless named in trainable=
        self.taken: set[str] = set()
        self.output_set: set[str] = set()
        self.integral: set[int] = set()  # id() of tensors holding integer values (labels)
        self.known: set[int] = set()
        self.batch_source: Tensor | None = None  # a graph input whose first dimension is N
        # id() of the float32 reading of a double graph input that graphc holds as f64 (read
        # by a tree ensemble, which compares it in float64 as ONNX Runtime does) -> that input
        self.wide: dict[int, Tensor] = {}
        self.uncomputed: dict[str, str] = {}  # outputs a rule leaves out -> why
        self.inference_only: list[str] = []  # nodes that predict but cannot train (trees)
        self.unreadable: dict[str, str] = {}  # initializers of a type graphc cannot hold
        self.types: dict[str, Any] | None = None  # value name -> ONNX TypeProto (elem_type)
        # id() of tensors whose ONNX value merges the batch rows with the next k - 1 axes
        # ([N, T, C] held for tf2onnx's [-1, C]); see merged_rows
        self.merged: dict[int, int] = {}
        self.lead_ones: dict[int, int] = {}  # merged values with unit axes before the rows
        self.merged_source: dict[int, str] = {}  # a Reshape's merged output -> its input
        # computed lookups: (indices, table rows, the node) for bound_integers
        self.lookups: list[tuple[Tensor, Any, str]] = []  # rows: V, or (lo, hi)
        self.ranges: dict[int, tuple[str, tuple]] = {}  # composite integer ops (onnx_bounds)
        # ONNX values held as a graphc tensor seen through a layout view (N moved or merged
        # with other axes: attention heads); their self.values entry is the view's base
        self.views: dict[str, onnx_layout.View] = {}

    # -------------------------------------------------------------- values

    def _outputs_hint(self, name: str) -> str:
        """The refusal's way out: the graph outputs that can be imported without ``name``."""
        others = self.outputs_without(name)
        if not others:
            return ""
        return f"; from_onnx(..., outputs={others!r}) imports the outputs that do not need it"

    def lookup(self, name: str, cx: NodeContext | None) -> Value:
        if name in self.values:
            return self.values[name]
        if name in self.initializers:
            return self.initializers[name]
        where = cx.where() if cx else self.where
        if name in self.unreadable:
            hint = self._outputs_hint(name)
            raise OnnxError(
                f"{where}: initializer {name!r} has data type {self.unreadable[name]}, which "
                f"graphc does not compute with (float, double, float16, bfloat16, bool and "
                f"integer tensors are){hint}"
            )
        if name in self.uncomputed:
            hint = self._outputs_hint(name)
            raise OnnxError(
                f"{where}: value {name!r} is not computed by graphc: {self.uncomputed[name]}{hint}"
            )
        raise OnnxError(
            f"{where}: value {name!r} is not defined before its use (an ONNX graph lists its "
            "nodes in topological order), or it is an output graphc does not compute"
        )

    def outputs_without(self, name: str) -> list[str]:
        """The graph outputs whose computation does not read value ``name``."""
        producer = {o: n for n in self.graph.node for o in n.output if o}
        out = []
        for o in self.graph.output:
            seen, stack, needs = set(), [o.name], False
            while stack and not needs:
                v = stack.pop()
                if v == name:
                    needs = True
                elif v not in seen and v in producer:
                    seen.add(v)
                    stack.extend(i for i in producer[v].input if i)
            if not needs:
                out.append(o.name)
        return out

    def as_tensor(self, name: str, cx: NodeContext) -> Tensor:
        v = self.lookup(name, cx)
        if isinstance(v, Tensor):
            return v
        if name in self.materialized:
            return self.materialized[name]
        t = self.constant_tensor(name, v, cx, initializer=name in self.initializers)
        self.materialized[name] = t
        return t

    def constant_tensor(
        self, name: str, a: np.ndarray, cx: NodeContext, initializer: bool, dtype: str = "f32"
    ):
        """``a`` as a graph tensor: a scalar constant, or a param (a trainable float
        initializer) or state holding ``a`` in ``dtype`` ("f32", or "f64" for the thresholds of
        a tree ensemble that compares in float64)."""
        if a.dtype == object:
            cx.fail(
                f"{name!r} depends on the batch size N and is used as data; graphc uses such "
                "values only as shapes"
            )
        if a.dtype.kind not in "fiub":
            cx.fail(f"{name!r} has data type {a.dtype}, which graphc cannot compute with")
        if a.size == 0:
            cx.fail(f"{name!r} is empty ({list(a.shape)}): graphc has no dimension of size 0")
        if a.size > MAX_ELEMENTS:
            cx.fail(f"{name!r} has {a.size} elements, above the limit of {MAX_ELEMENTS}")
        a32 = np.asarray(a, dtype=np.float64 if dtype == "f64" else np.float32)
        if a.ndim == 0 and not (initializer and self.is_trainable(name)):
            return dsl.const(float(a32), dtype)
        gname = c_name(self.prefix + name, self.taken, "w")
        train = initializer and a.dtype.kind == "f" and self.is_trainable(name)
        op = "param" if train else "state"
        node = make_node(
            gname,
            op,
            (),
            TensorType(a32.shape, dtype),
            {"init": "array"},
            loc=f"{self.where}: initializer {name!r}" if initializer else f"{self.where}: {name!r}",
            origin=f"onnx {'initializer' if initializer else 'constant'} {name}",
        )
        t = Tensor(node)
        t.value = a32  # travels as Program.constants, like gc.constant's values
        (self.params if train else self.constants)[gname] = t
        self.weights[gname] = a32
        return t

    def is_trainable(self, name: str) -> bool:
        self.asked.add(name)
        if name in self.frozen_names:
            return False
        tr = self.trainable
        if tr is True or tr is None:
            # a scalar is a constant of the graph (tf2onnx writes Keras's LayerNormalization
            # epsilon, attention's 1/sqrt(d) and Rescaling's factors as 0-d initializers; torch
            # folds its scalars into them too): training it changed the model's formula (an
            # epsilon pushed below zero gave NaN). Named in ``trainable=``, it trains.
            # Masks and epsilons found by find_frozen are constants too (default_constants).
            a = self.initializers.get(name)
            return a is None or (a.ndim > 0 and name not in self.default_constants)
        if tr is False:
            return False
        if callable(tr):
            return bool(tr(name))
        return name in tr

    def check_trainable_names(self) -> None:
        """A ``trainable=`` name that is no initializer of the file (nor a weight held in an
        attribute) is a typo or another model's name: without this check every weight would
        silently stay constant."""
        tr = self.trainable
        if tr is None or isinstance(tr, bool) or callable(tr):
            return
        frozen = [n for n in tr if n in self.frozen_names and n in self.initializers]
        if frozen:  # asked by name to train what cannot: say so, not ignore it silently
            reads = []
            for n in frozen:
                j, node, k = next(
                    (j, node, k)
                    for j, node in enumerate(self.graph.node)
                    for k, i in enumerate(node.input)
                    if i == n
                )
                reads.append(f"{n!r} (input {k} of node {j} {node.name!r}, {node.op_type})")
            warnings.warn(
                f"{self.where}: trainable names {', '.join(reads)}, which cannot train: the "
                "operator's ONNX schema marks that input non-differentiable (Clip's bounds, "
                "Pad's value, Resize's scales, ...), or it is BatchNormalization's running "
                "statistics or Pow's exponent; it stays a constant (leave it out of trainable)",
                OnnxFrozenWarning,
                stacklevel=3,
            )
        unknown = sorted(n for n in tr if n not in self.initializers and n not in self.asked)
        if not unknown:
            return
        known = sorted({*self.initializers, *self.asked})
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, known, n=3)
            hints.append(f"{n!r}" + (f" (close: {', '.join(map(repr, close))})" if close else ""))
        listed = ", ".join(map(repr, known[:12])) + (", ..." if len(known) > 12 else "")
        raise OnnxError(
            f"{self.where}: trainable names {', '.join(hints)} are not initializers of this "
            f"model; its initializers: {listed or 'none'}"
        )

    def warn_float64(self) -> None:
        """An OnnxPrecisionWarning naming the graph inputs and outputs declared double and the
        Casts to double: graphc reads and computes them as float32 (about 7 significant
        digits; whole numbers exact below 2**24 only), where ONNX Runtime computes in
        float64; the results then differ beyond float32's rounding."""
        g = self.original.graph
        wide = [
            repr(vi.name)
            for vi in (*g.input, *g.output)
            if vi.type.HasField("tensor_type")
            and vi.type.tensor_type.elem_type == 11
            and vi.name not in self.initializers
            and not self.read_as_double_only(vi.name)
        ]
        wide += [
            f"Cast node {i} {n.name!r}"
            for i, n in enumerate(g.node)
            if n.op_type == "Cast" and any(a.name == "to" and a.i == 11 for a in n.attribute)
        ][:3]
        if wide:
            warnings.warn(
                f"{self.where}: {', '.join(wide)} declared or cast to double (float64): graphc "
                "computes in float32, so results agree with ONNX Runtime's float64 to about 7 "
                "significant digits, not 15 (predict returns float32 arrays)",
                OnnxPrecisionWarning,
                stacklevel=4,
            )

    def check_loader_rules(self, g: Any) -> None:
        """What ONNX Runtime's loader refuses beyond onnx.checker: a graph input that an
        initializer of the same name gives its value (IR >= 4: a default the caller may
        override; before, every initializer is also listed as an input) declaring another
        element type or shape than the initializer's ('Shape of initializer w does not
        match'), and two nodes of the same non-empty name.

        Raises:
            OnnxError: naming the input and both shapes, or the two nodes.
        """
        inits = {t.name: t for t in g.initializer}
        for vi in g.input:
            t = inits.get(vi.name)
            if t is None or not vi.type.HasField("tensor_type"):
                continue
            tt = vi.type.tensor_type
            mine = [int(d) for d in t.dims]
            if tt.elem_type and tt.elem_type != t.data_type:
                raise OnnxError(
                    f"{self.where}: graph input {vi.name!r} is declared "
                    f"{type_name(tt.elem_type)}, its initializer is {type_name(t.data_type)} "
                    "(ONNX Runtime refuses the file)"
                )
            if tt.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                if len(dims) != len(mine) or any(
                    d is not None and d != e for d, e in zip(dims, mine)
                ):
                    shown = ["?" if d is None else d for d in dims]
                    raise OnnxError(
                        f"{self.where}: graph input {vi.name!r} is declared of shape {shown}, "
                        f"its initializer (the input's default value) is {mine} (ONNX Runtime "
                        "refuses the file: 'Shape of initializer does not match')"
                    )
        first: dict[str, int] = {}
        for i, n in enumerate(g.node):
            if n.name and n.name in first:
                raise OnnxError(
                    f"{self.where}: nodes {first[n.name]} and {i} are both named {n.name!r} "
                    "(ONNX Runtime refuses the file: 'two nodes with same node name')"
                )
            first.setdefault(n.name, i)

    def check_file(self) -> None:
        """onnx.checker's full check (full_check=True: the IR version and opset imports, each
        node against its operator's schema, the type constraints of its inputs with strict
        shape and type inference, single assignment, values used before they are produced),
        the check ONNX Runtime's loader makes too, so that a file ONNX Runtime refuses is not
        imported into a model that computes something else (an integer-only operator on
        floats, a float operator on int64, a missing or impossible ir_version or opset). A
        model of 2 GiB or more is checked without the initializers' bytes.

        Raises:
            OnnxError: naming the file and the checker's finding (its node and operator).
        """
        onnx = require_onnx()
        model = onnx.ModelProto()
        model.CopyFrom(self.original)
        # initializers with external data (graphc read and checked it) or too many bytes are
        # checked as graph inputs of their type and shape: the checker needs no bytes then
        big = model.ByteSize() >= MAX_FILE_BYTES
        moved = [
            t
            for t in model.graph.initializer
            if big or t.data_location == onnx.TensorProto.EXTERNAL
        ]
        names = {vi.name for vi in model.graph.input}
        for t in moved:
            if t.name not in names:
                model.graph.input.append(
                    onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                )
            model.graph.initializer.remove(t)
        # sparse initializers too: ONNX Runtime (and graphc, sparse_to_array) densify them,
        # where the checker's type inference would see a sparse_tensor operand
        for sp in model.graph.sparse_initializer:
            if sp.values.name not in names:
                vi = onnx.helper.make_tensor_value_info
                model.graph.input.append(vi(sp.values.name, sp.values.data_type, list(sp.dims)))
        del model.graph.sparse_initializer[:]
        # ONNX Runtime runs a graph whose outputs declare no shape (the checker wants one):
        # such outputs take the shape inference gives them, or are left out of the check
        g = model.graph
        if any(not _has_shape(vi) for vi in g.output):
            try:
                inferred = onnx.shape_inference.infer_shapes(model).graph
                known = {vi.name: vi for vi in (*inferred.value_info, *inferred.output)}
            except Exception:
                known = {}
            keep = []
            for vi in g.output:
                if _has_shape(vi):
                    keep.append(vi)
                elif vi.name in known and _has_shape(known[vi.name]):
                    keep.append(known[vi.name])
            del g.output[:]
            g.output.extend(keep)
        # GroupNormalization-18 (opsets 18 to 20): onnx marks it deprecated and its checker
        # refuses it, but ONNX Runtime runs it (its onnx build drops the deprecation: ONNX
        # Runtime issue 24560), so the check skips those nodes (as a custom domain's) and
        # _group_norm computes what ONNX Runtime does
        if 18 <= self.opsets.get("", 0) < 21:
            skipped = [
                n
                for n in model.graph.node
                if n.op_type == "GroupNormalization" and n.domain in ("", "ai.onnx")
            ]
            for n in skipped:
                n.domain = GROUP_NORM_18_DOMAIN
            if skipped:
                model.opset_import.append(onnx.helper.make_opsetid(GROUP_NORM_18_DOMAIN, 1))
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:  # ValidationError, InferenceError, or onnx's own ValueError
            msg = str(e).strip().replace("\n\n", "\n")
            typed = re.search(
                r"TypeInferenceError|unsupported type|inconsistent type|type mismatch|elem type",
                msg,
            )
            if "ValidationError" not in type(e).__name__ and not typed:
                # shape inference's other findings: graphc's rules check shapes themselves,
                # and some are the inference's own limits (a function body's Constant of an
                # attribute reference, which ONNX Runtime runs)
                return
            raise OnnxError(
                f"{self.where}: the file fails onnx.checker's full check, as ONNX Runtime's "
                f"loader would refuse it: {type(e).__name__}: {msg[:2000]}"
            ) from None

    # -------------------------------------------------------------- the walk

    def run(self, outputs: list[str] | None) -> OnnxImport:
        if len(self.graph.node) > MAX_NODES:
            raise OnnxError(
                f"{self.where}: {len(self.graph.node)} nodes, above the limit of {MAX_NODES}"
            )
        self.model = expand_functions(self.model, self.opsets, self.where)
        self.graph = g = self.model.graph
        if len(g.node) > MAX_NODES:
            raise OnnxError(
                f"{self.where}: {len(g.node)} nodes once its functions are expanded, above the "
                f"limit of {MAX_NODES}"
            )
        for i, t in enumerate(g.initializer):
            if not t.name:
                raise OnnxError(f"{self.where}: initializer {i} has no name")
            if t.data_type not in _NP_OF and t.data_type in _TYPE_NAME:
                # string class labels (skl2onnx's 'classes' behind the label output): refused
                # where a node reads it, so that outputs= can import the others
                self.unreadable[t.name] = type_name(t.data_type)
                continue
            self.initializers[t.name] = tensor_to_array(
                t, self.base_dir, f"{self.where}: initializer {t.name!r}"
            )
        for sp in g.sparse_initializer:
            name = sp.values.name
            if not name or name in self.initializers:
                raise OnnxError(f"{self.where}: sparse initializer {name!r} has no name of its own")
            where = f"{self.where}: sparse initializer {name!r}"
            self.initializers[name] = sparse_to_array(sp, self.base_dir, where)
        # single assignment over the whole graph, as onnx.checker and ONNX Runtime require (a
        # node after the last use of its output was skipped, and its value never compared)
        defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
        defined |= {sp.values.name for sp in g.sparse_initializer}
        for i, n in enumerate(g.node):
            for o in n.output:
                if o and o in defined:
                    raise OnnxError(
                        f"{self.where}: node {i} {n.name!r} ({n.op_type}): output {o!r} is "
                        "defined twice (an ONNX graph assigns each value once)"
                    )
                defined.add(o)
        self.check_loader_rules(self.original.graph)
        self.find_frozen()
        inputs, input_names, all_inputs = [], {}, []
        names = {vi.name for vi in g.input}
        for k in self.bound:
            if k not in names:
                raise OnnxError(f"{self.where}: constants: the graph has no input {k!r}")
        listed: set[str] = set()
        for vi in g.input:
            if vi.name in listed:  # (graphc made a second input 'x_1' that the nodes read)
                raise OnnxError(
                    f"{self.where}: graph input {vi.name!r} is listed twice; an ONNX graph "
                    "defines each value once (ONNX Runtime and onnx.checker refuse it too)"
                )
            listed.add(vi.name)
            if vi.name in self.initializers:  # IR < 4: initializers listed as inputs too
                continue
            all_inputs.append(vi.name)
            empty = self.empty_input(vi)
            if empty is not None:  # no values to take: known at import, as a bound input
                self.bound[vi.name] = empty
            if vi.name in self.bound:
                self.values[vi.name] = self.bound[vi.name]
                continue
            t, axis = self.graph_input(vi)
            inputs.append(t)
            input_names[vi.name] = t.name
            self.known.add(id(t))
            if t.type.dtype == "f64":  # the rest of the graph reads its float32 rounding
                wide, t = t, dsl.apply("cast", t, dtype="f32")
                self.wide[id(t)] = wide
                self.known.add(id(t))
            if self.batch_source is None and t.shape[:1] == ("N",):
                self.batch_source = t
            self.values[vi.name] = t
            if axis:  # N at ONNX axis k > 0: held first, the ONNX value a view of it
                self.input_axes[t.name] = axis
                r = len(t.shape)
                groups = [(j + 1,) for j in range(r - 1)]
                groups.insert(axis, (0,))
                self.views[vi.name] = onnx_layout.normalized(onnx_layout.View(t, tuple(groups)))
        # each name once: a name listed twice is one output (ONNX Runtime returns it once)
        want = list(dict.fromkeys(outputs if outputs is not None else [o.name for o in g.output]))
        declared = [o.name for o in g.output]
        self.output_set = set(want)
        needed = set(want)  # convert only the nodes the selected outputs depend on
        use = [False] * len(g.node)
        for i in range(len(g.node) - 1, -1, -1):
            if any(o in needed for o in g.node[i].output):
                use[i] = True
                needed.update(_node_reads(g.node[i]))
        for i, node in enumerate(g.node):
            if use[i]:
                self.convert(i, node)
        self.check_file()
        self.warn_float64()
        self.bound_integers()
        outs, out_names = [], {}
        for name in want:
            if name not in declared and name not in self.values:
                raise OnnxError(f"{self.where}: no output {name!r}; the graph's are {declared}")
            if name in self.views:  # back to the ONNX layout, N first
                view = self.views.pop(name)
                moved = onnx_layout.batch_first(view)
                if moved:  # N alone at axis k > 0: held first, moved back by predict
                    view, self.batch_axes[name] = moved
                self.values[name] = onnx_layout.materialize(_OutputContext(self.where, name), view)
            v = self.lookup(name, None)
            if isinstance(v, Tensor) and id(v) in self.merged:
                src = self.merged_source.get(id(v))
                hint = (
                    f"; from_onnx(..., outputs=[{src!r}]) imports the value before that Reshape"
                    if src
                    else ""
                )
                raise OnnxError(
                    f"{self.where}: output {name!r} merges the batch dimension N with the axes "
                    f"{_fmt(v.shape[1 : self.merged[id(v)]])} (a Reshape to [-1, ...]: ONNX "
                    f"Runtime returns {math.prod(v.shape[1 : self.merged[id(v)]])} rows per "
                    f"sample); graphc's outputs keep N as their first dimension{hint}"
                )
            if isinstance(v, SequenceValue):
                raise OnnxError(
                    f"{self.where}: output {name!r} is a sequence; graphc's outputs are tensors "
                    "(ConcatFromSequence or SequenceAt of it is one)"
                )
            if isinstance(v, OptionalValue):
                raise OnnxError(
                    f"{self.where}: output {name!r} is an optional; graphc's outputs are tensors "
                    "(OptionalGetElement of it is one)"
                )
            if isinstance(v, Tensor) and id(v) in self.plane_indices:
                # MaxPool's Indices: c * P + p here, n * C * P added by predict
                v, self.row_terms[name] = onnx_import_pool.indices_output(self, name, v, self.where)
            if not isinstance(v, Tensor) and self.constant_output(name, v, want):
                continue  # returned by predict beside the computed outputs
            if not isinstance(v, Tensor):
                others = [
                    n
                    for n in want
                    if n != name and n in self.values and isinstance(self.values[n], Tensor)
                ]
                hint = (
                    f"; from_onnx(..., outputs={others!r}) imports the computed ones"
                    if others
                    else ""
                )
                raise OnnxError(
                    f"{self.where}: output {name!r} is a constant (it does not depend on any "
                    f"input: a table such as skl2onnx's class_labels); graphc compiles only computed "
                    f"outputs{hint}"
                )
            outs.append(v)
        computed = [n for n in want if n not in self.const_outputs]
        outs = self.name_outputs(computed, outs, input_names)
        for name, v in zip(computed, outs):
            out_names[name] = v.name
        consts = {}
        for name, a in self.const_outputs.items():
            out_names[name] = c_name(self.prefix + name, self.taken, "y")
            consts[out_names[name]] = a
        gname = self.graph.name or "model"
        return OnnxImport(
            outs,
            inputs,
            self.params,
            self.constants,
            self.weights,
            input_names,
            out_names,
            self.opset,
            c_name(gname, set(), "model"),
            self.model.producer_name,
            all_inputs,
            set(self.bound),
            list(self.inference_only),
            self.declared_dtypes(computed, outs),
            {out_names[k]: f for k, f in self.row_terms.items()},
            {out_names[k]: a for k, a in self.batch_axes.items()},
            [t for k, t in input_names.items() if self.elem_type(k) == 9],
            consts,
            [out_names[k] for k in want],
            dict(self.input_axes),
        )

    def constant_output(self, name: str, v: Any, want: list[str]) -> bool:
        """Whether output ``name``, a value known at import (``v``: numbers, or sizes that
        hold the batch size, such as Shape(x) = [N, 3]), is returned by predict beside the
        computed outputs (OnnxImport.constant_outputs; recorded in self.const_outputs):
        numbers always; sizes holding N where another selected output is computed and leads
        with N (predict's rows give N) or no selected output is computed (a KnownOutputs
        model: the rows of the input that carries N)."""
        a = np.asarray(v) if not isinstance(v, np.ndarray) else v
        if str(a.dtype) == "bfloat16":  # returned as float32, as the computed ones
            a = a.astype(np.float32)
        if a.dtype == object:
            if not all(
                isinstance(e, (int, np.integer)) or _sym_multiple(e) is not None for e in a.flat
            ):
                return False
        elif a.dtype.kind not in "iufb":
            return False
        computed = [
            self.values[n] for n in want if n != name and isinstance(self.values.get(n), Tensor)
        ]
        if computed and a.dtype == object and not any(t.shape[:1] == ("N",) for t in computed):
            return False  # a size holding N beside computed outputs of no batch: no rows
        self.const_outputs[name] = a
        return True

    def declared_dtypes(self, names: list[str], outs: list[Tensor]) -> dict[str, np.dtype]:
        """graphc output name -> numpy dtype of each output the graph declares integer or bool
        (OnnxImport.output_dtypes; MaxPool's Indices int64 where the file gives no type)."""
        declared = {
            o.name: o.type.tensor_type.elem_type
            for o in self.graph.output
            if o.type.HasField("tensor_type")
        }
        declared.update({k: 7 for k in self.row_terms if declared.get(k) not in INTEGER_TYPES})
        return {
            t.name: np.dtype(_NP_OF[declared[name]])
            for name, t in zip(names, outs)
            if declared.get(name) in INTEGER_TYPES
        }

    def name_outputs(
        self, names: list[str], outs: list[Tensor], input_names: dict[str, str]
    ) -> list[Tensor]:
        """The outputs under their ONNX names (sanitized), so that predict's dict and the C
        header use the exporter's names, as ONNX Runtime's results do.

        A computed value that no earlier output took is renamed in place (every node that
        reads it is rewritten). An output that is another output's value (``y2 = Identity(y)``,
        folded away here), a graph input under another name, or a weight becomes a copy under
        its own name (a reshape to the same type, which simplification removes; the names then
        share one value). A graph input returned under its own name keeps it. Returns the
        outputs, each as predict will name it."""
        rename: dict[str, str] = {}
        result: list[Tensor] = []
        for name, t in zip(names, outs):
            if t.name[:1] == "%" and t.name not in rename:  # a value no output took yet
                rename[t.name] = c_name(self.prefix + name, self.taken, "y")
            elif input_names.get(name) != t.name:  # not a graph input under its own name
                own = c_name(self.prefix + name, self.taken, "y")
                t = dsl.apply("reshape", t, name=own, shape=t.type.shape)
            result.append(t)
        if rename:
            self._rename_values(result, rename)
        declared = {
            o.name: o.type.tensor_type.elem_type
            for o in self.graph.output
            if o.type.HasField("tensor_type")
        }
        for name, t in zip(names, result):  # a double / half / integer output: its type
            kind = declared.get(name)
            if (kind in FLOAT_TYPES[1:] or kind in INTEGER_TYPES) and t.node.op != "input":
                tag = f"{ONNX_RESULT_TYPE_TAG}{declared[name]}"
                t.node = t.node.with_(origin=f"{t.node.origin or 'onnx'}{tag}")
        for name, t in zip(names, result):  # the ONNX name, for to_onnx (ONNX_OUTPUT_TAG)
            if rename.get(t.name, t.name) != name and t.node.op != "input":
                t.node = t.node.with_(origin=f"{t.node.origin or 'onnx'}{ONNX_OUTPUT_TAG}{name}")
        return result

    def _rename_values(self, result: list[Tensor], rename: dict[str, str]) -> None:
        """Every node of the outputs' graphs named or read under ``rename``'s new names."""
        seen: set[int] = set()
        stack = list(result)
        while stack:
            t = stack.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            n = t.node
            if n.name in rename or any(i in rename for i in n.inputs):
                t.node = n.with_(
                    name=rename.get(n.name, n.name),
                    inputs=tuple(rename.get(i, i) for i in n.inputs),
                )
            stack.extend(t.parents)

    def find_frozen(self) -> None:
        """Initializers that are no weights never train: those fed to an input the operator's
        ONNX schema marks non-differentiable (Clip's bounds, Pad's constant value, Resize's
        scales, OneHot's values, Dropout's ratio, ...: onnx.defs' differentiation_category),
        and BatchNormalization's running mean and variance, Pow's exponent, Range's start,
        limit and delta (a float Range of initializers, as onnx-simplifier leaves it, folds).
        These stay constants whatever ``trainable`` says (graphc's ops take them as fixed
        values). ``default_constants`` (see ``is_trainable``) collects the initializers that
        are constants of the graph by their values and use: a mask (a non-finite value such
        as a causal mask's -inf; 0 and one value <= -1e4, an additive mask; 0s and 1s read
        only by Mul or Where, a multiplicative one), a one-element epsilon added just
        before a Sqrt or Reciprocal (a LayerNorm or RMSNorm written out by tf2onnx) and a
        sinusoidal position table added to a value (_sinusoidal: Vaswani et al.'s fixed
        encoding; a learned table, BERT's or ViT's, is no such table and trains)."""
        onnx = require_onnx()
        hand = {
            "BatchNormalization": (3, 4),
            "Pow": (1,),
            "Clip": (1, 2),
            "Range": (0, 1, 2),
        }
        uses: dict[str, list[tuple[Any, int]]] = {}
        for node in self.graph.node:
            for k, name in enumerate(node.input):
                if name:
                    uses.setdefault(name, []).append((node, k))
        nondiff = onnx.defs.OpSchema.DifferentiationCategory.NonDifferentiable
        for node in self.graph.node:
            for k in hand.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ():
                if k < len(node.input) and node.input[k]:
                    self.frozen_names.add(node.input[k])
            domain = "" if node.domain == "ai.onnx" else node.domain
            try:
                schema = onnx.defs.get_schema(node.op_type, self.opsets.get(domain, 0) or 1, domain)
            except Exception:  # an unknown operator: refused where it is converted
                continue
            formal = list(schema.inputs)
            for k, name in enumerate(node.input):
                if name in self.initializers and formal:
                    param = formal[min(k, len(formal) - 1)]  # a variadic last input repeats
                    if param.differentiation_category == nondiff:
                        self.frozen_names.add(name)
        for name, a in self.initializers.items():
            if a.dtype.kind != "f" or name in self.frozen_names or name not in uses:
                continue
            readers = uses[name]
            values = np.unique(a)
            if not np.isfinite(a).all():
                self.default_constants.add(name)  # a -inf mask (or a NaN: no weight)
            elif len(values) == 2 and values[1] == 0 and values[0] <= -1e4:
                self.default_constants.add(name)  # an additive mask: 0 and a large negative
            elif (
                a.size > 1
                and values.tolist() == [0.0, 1.0]
                and all(n.op_type in ("Mul", "Where") for n, _ in readers)
            ):
                self.default_constants.add(name)  # a 0/1 mask, read only by Mul or Where
            elif _sinusoidal(a) and all(n.op_type == "Add" for n, _ in readers):
                self.default_constants.add(name)  # a fixed sinusoidal position table
            elif a.size == 1 and all(
                n.op_type == "Add"
                and all(
                    m.op_type in ("Sqrt", "Reciprocal")
                    for o in n.output
                    for m, _ in uses.get(o, [(n, 0)])
                )
                for n, _ in readers
            ):
                self.default_constants.add(name)  # an epsilon added before a Sqrt

    def integer_input_use(self, name: str) -> str | None:
        """How an integer or bool graph input is used: "cast" where every use is a Cast to
        float or double, the indices of a Gather or of a OneHot (read as float32: exact below
        2**24, and what ONNX Runtime's cast rounds too), "integer" where its values flow through integer
        arithmetic that float32 computes exactly on whole numbers (``INTEGER_FLOW``: Keras's
        Embedding wraps negative ids as where(ids < 0, ids + V, ids) before its Gather) and end
        in such casts, lookups or shapes, or in a graph output (returned in its integer type:
        OnnxImport.output_dtypes; kept inside the type by ``output_spans``), else None (integer
        arithmetic float32 cannot mirror, such as a MatMul or a ReduceProd). A product (Mul)
        of integers is a flow: bound_integers narrows the inputs' checked ranges to values
        whose products stay below 2**24 (x * y: both in -4096 .. 4095)."""
        graph_outputs = {o.name for o in self.graph.output}
        if self.scoped is None:
            self.scoped = onnx_import_control.scoped_uses(self.graph)
        scoped = self.scoped
        kind, seen, stack = "cast", {name}, [name]
        self.integer_refusal = ""  # why the use is None, for graph_input's message
        while stack:
            v = stack.pop()
            if v in graph_outputs:  # returned in its type (kept in it: output_spans)
                kind = "integer"
            for o in scoped.exits.get(v, ()):  # a body's output: the node's, the next step's
                if o and o not in seen:
                    seen.add(o)
                    stack.append(o)
            uses = scoped.readers.get(v, [])
            if not uses and v == name:
                if any(v in _node_reads(n) for n in self.graph.node):
                    return "cast"  # read only by nodes no output needs: never converted
                self.integer_refusal = "no node reads it"
                return None
            for n, here in uses:
                at = [(id(n), k) for k, x in enumerate(n.input) if x == v]
                if all(a in scoped.passes for a in at):  # into a Loop's or Scan's body
                    kind = "integer"
                    for b in (b for a in at for b in scoped.passes[a]):
                        if b not in seen:
                            seen.add(b)
                            stack.append(b)
                    continue
                if reads_quantized(n):  # 8-bit operands, whole numbers read exactly
                    continue
                if onnx_import_ml.compares_integer_input(n, v):
                    continue  # compared with whole numbers below 2**24 (OneHotEncoder)
                if n.domain not in ("", "ai.onnx"):
                    self.integer_refusal = f"{here} is of domain {n.domain!r}"
                    return None
                if n.op_type == "Cast" and any(
                    a.name == "to" and a.i in (1, 11) for a in n.attribute
                ):
                    continue
                if n.op_type in ("Gather", "GatherElements") and n.input[0] != v:
                    continue
                if _INDEX_OPERAND.get(n.op_type) == list(n.input).index(v):
                    continue  # the indices only (ScatterElements', a loss's targets): compared
                if n.op_type == "If" and n.input[0] == v:
                    continue  # the condition picks a branch: the branches' values flow on
                if n.op_type == "Where" and n.input[0] == v and v not in n.input[1:]:
                    # the condition only picks between the other operands: their values, not
                    # v's, flow on (torch's masked_fill(ids == 0, -1e9) of float scores)
                    continue
                if n.op_type == "OneHot" and n.input[0] == v and v not in n.input[1:]:
                    # the indices, compared with each position (F.one_hot of labels); ONNX
                    # gives a row of off values for one outside -depth .. depth - 1, and so
                    # does a float32 index rounded past 2**24
                    continue
                if n.op_type == "Shape":
                    continue
                if onnx_import_rnn.reads_lengths(n, v):
                    continue
                if n.op_type not in INTEGER_FLOW:
                    self.integer_refusal = f"{here} reads {v!r} as an integer"
                    return None
                kind = "integer"
                for o in n.output:
                    if o and o not in seen:
                        seen.add(o)
                        stack.append(o)
        return kind

    def bound_integers(self) -> None:
        """Prove that the integers the graph computes stay exact in float32 and its computed
        lookup indices in their tables (graphc.onnx_bounds), for the values the entries let
        through for each integer input (its range lo .. hi, ir.ops.sources.index_range). Where
        a proof needs a narrower range, the input's range is narrowed to one that proves it
        (onnx_bounds.scan_range / fit_ranges: ids in 1 .. V for a Gather of ids - 1, or in
        -150 .. -51 for ids + 100 into 100 rows, as ONNX Runtime accepts them; the entries then
        refuse other values naming the input, the row and the value, as ONNX Runtime refuses
        an index out of its table); where none does, the import is refused. Checked: each computed lookup index (ONNX Runtime raises on one outside its
        table; graphc's one-hot lookup gave a row of zeros), and each integer-typed value
        computed from an integer input (Add/Sub/Mul chains past 2**24 were rounded).

        Raises:
            OnnxError: a lookup whose indices no checked range of the inputs keeps in the
                table (computed from a float value, a weight, or shifted past it), naming the
                node, the table's rows and the indices' range; an integer value that stays
                exact for no such range.
        """
        from . import onnx_bounds as ob

        def checked(t: Tensor) -> bool:
            return t.node.op == "input" and t.node.attr("index_rows") is not None

        def lower(x: Tensor, r: tuple[int, int], note: str, table: bool = False) -> None:
            if r != index_range(x.node):
                low = None if r[0] == -(r[1] + 1) else r[0]
                attrs = {**dict(x.node.attrs), "index_rows": r[1] + 1, "index_low": low}
                table = table or is_table(x.node)
                x.node = x.node.with_(attrs={**attrs, "index_note": note, "index_table": table})

        def lookup_note(where: str) -> str:
            return (
                f"the range in which the index {where} computes from it stays in its table "
                "(ONNX Runtime raises on one outside)"
            )

        def refuse(where: str, what: str, dag: list, bounds: dict, hint: str) -> None:
            iv = ob.interval(dag[-1], bounds, {}, self.ranges)
            shown = "unknown" if iv is None else f"{iv[0]:.17g} .. {iv[1]:.17g}"
            raise OnnxError(
                f"{self.where}: {where}: {what} (their range for the values the inputs may "
                f"hold: {shown}); graphc cannot prove that they stay in it for any range of "
                f"the integer inputs it could check at run time. {hint}"
            )

        for idx, rows, where in self.lookups:
            dag = ob.ancestors(idx)
            inputs = [u for u in dag if checked(u)]
            start = {id(x): index_range(x.node) for x in inputs}
            if ob.proves(dag, start, rows, self.integral, self.ranges)[0]:
                continue
            run = ob.scan_function(dag, inputs[0], self.integral) if len(inputs) == 1 else None
            if run is not None:  # exact: every value, from an anchor the intervals find
                lo, hi = start[id(inputs[0])]
                cut = ob.narrow(dag, start, ob.span(rows), self.integral, self.ranges)
                anchors = [0] + ([] if cut is None else [sum(cut[id(inputs[0])]) // 2])
                got = None
                for a in anchors:
                    if lo <= a <= hi and got is None:
                        got = ob.scan_range(run, lo, hi, rows, a)
                if got is not None:
                    lower(inputs[0], got, lookup_note(where), True)
                    continue
            fit = (
                ob.fit_ranges(dag, inputs, start, rows, self.integral, self.ranges)
                if inputs
                else None
            )
            if fit is None:
                lo, hi = ob.span(rows)
                refuse(
                    where,
                    f"indices must lie in {lo} .. {hi}, the rows of the table",
                    dag,
                    start,
                    "ONNX Runtime raises at run time on an index outside its table; graphc's "
                    "lookup would give a row of zeros. Compute the indices outside the model and "
                    "feed them as an integer input",
                )
            for x in inputs:
                lower(x, fit[id(x)], lookup_note(where), True)
        spans = self.output_spans()
        for name, v in self.values.items():
            if (
                not isinstance(v, Tensor)
                or v.node.op in ("input", "const", "state", "param")
                or self.elem_type(name) not in INTEGER_TYPES
            ):
                continue
            dag = ob.ancestors(v)
            inputs = [u for u in dag if checked(u)]
            if not inputs:
                continue
            start = {id(x): index_range(x.node) for x in inputs}
            rows = spans.get(name)  # a graph output of a narrow type: inside it, unwrapped
            # one correctly rounded product / sum of exact operands (each proved on its own)
            # read only by Casts to float: float32 rounds it as ONNX Runtime's Cast rounds the
            # exact integer, so it need only stay unwrapped in its type
            rounded = rows is None and self.read_as_float_only(name, v)
            if rounded:
                info = np.iinfo(
                    require_onnx().helper.tensor_dtype_to_np_dtype(self.elem_type(name))
                )
                rows = (int(info.min), int(info.max))
            if ob.proves(dag, start, rows, self.integral, self.ranges, rounded)[0]:
                continue
            fit = ob.fit_ranges(dag, inputs, start, rows, self.integral, self.ranges, rounded)
            stays = "exact in float32" if rows is None else f"in {rows[0]} .. {rows[1]}"
            if rounded:
                stays += " (its type's range: it is read only by a Cast to float)"
            if fit is None:
                refuse(
                    f"value {name!r}",
                    "integers graphc holds as float32 must stay below 2**24 in magnitude"
                    + (
                        ""
                        if rows is None
                        else f" and a {type_name(self.elem_type(name))} output "
                        f"in {rows[0]} .. {rows[1]} (ONNX Runtime would wrap it)"
                    ),
                    dag,
                    start,
                    "ONNX Runtime computes them in int64; float32 would round them",
                )
            for x in inputs:
                lower(
                    x,
                    fit[id(x)],
                    f"the range in which the integer {name!r} computed from it stays {stays} "
                    "(ONNX Runtime computes it in its integer type)",
                )

    def read_as_float_only(self, name: str, v: Tensor) -> bool:
        """Whether integer value ``name`` is one product, sum or difference (graphc's float32
        op: correctly rounded) that only Casts to float read (not a graph output): its value
        then need not be exact, only unwrapped in its type (bound_integers)."""
        if v.node.op not in ("mul", "add", "sub") or name in {o.name for o in self.graph.output}:
            return False
        if self.scoped is None:
            self.scoped = onnx_import_control.scoped_uses(self.graph)
        uses = self.scoped.readers.get(name, [])
        return (
            bool(uses)
            and name not in self.scoped.exits
            and self.elem_type(name) != 9
            and all(
                n.op_type == "Cast"
                and n.domain in ("", "ai.onnx")
                and any(a.name == "to" and a.i == 1 for a in n.attribute)
                for n, _ in uses
            )
        )

    def output_spans(self) -> dict[str, tuple[int, int]]:
        """ONNX output name -> the whole numbers its declared type holds, for the graph outputs
        of a type narrower than float32's exact integers (bool, 8- and 16-bit, the unsigned
        types' lower end) that no Cast computes: an integer output computed from integer
        inputs must stay in it (the inputs' checked ranges narrowed to keep it there), as
        graphc returns it without the wrap ONNX Runtime's arithmetic would apply."""
        made_by = {o: n.op_type for n in self.graph.node for o in n.output}
        return {
            o.name: TYPE_SPANS[self.elem_type(o.name)]
            for o in self.graph.output
            if self.elem_type(o.name) in TYPE_SPANS
            and made_by.get(o.name) not in ("Cast", "CastLike")
        }

    def compared_in_double(self, name: str) -> bool:
        """Whether graph input ``name`` (declared double) is the X of a tree ensemble, which
        ONNX Runtime compares with its thresholds in float64: graphc then holds the input as
        f64 (its other readers take its float32 rounding), so that a value within float32's
        rounding of a threshold reaches the leaf it reaches there."""
        return any(_tree_x(n) == name for n in self.graph.node)

    def read_as_double_only(self, name: str) -> bool:
        """Whether value ``name`` is read by tree ensembles comparing it in float64 only."""
        readers = [n for n in self.graph.node if name in n.input]
        outputs = {o.name for o in self.graph.output}
        return bool(readers) and all(_tree_x(n) == name for n in readers) and name not in outputs

    def batch_axis(self, dims: Any, where: str = "") -> int:
        """The axis of an input's ONNX dimensions ``dims`` that is the batch N: the one whose
        dim_param ``self.dims`` maps to "N"; else the first, unless its size is fixed (a
        dim_value, or a dim_param ``self.dims`` gives a size) and exactly one later dimension
        is left free, which is then N (torch's nn.LSTM / nn.GRU with batch_first=False: x
        [T, N, C] with T fixed, h0 / c0 [layers * dirs, N, H]). Raises OnnxError (``where``
        names the input) for two or more free dimensions after a fixed first one ([1, N, S]):
        which one is the batch is the user's to say, with dims."""

        def free(d: Any) -> bool:
            if d.HasField("dim_value") and d.dim_value >= 0:
                return False
            return not (d.dim_param and d.dim_param in self.dims)

        named = [k for k, d in enumerate(dims) if d.dim_param and self.dims.get(d.dim_param) == "N"]
        if len(named) > 1:
            raise OnnxError(
                f"{where}: dims' batch {dims[named[0]].dim_param!r} is more than one of its dimensions"
            )
        if named:
            return named[0]
        if not dims or free(dims[0]):
            return 0
        later = [k for k, d in enumerate(dims) if k and free(d)]
        if len(later) > 1 and all(dims[k].dim_param for k in later):
            a, b = (dims[k].dim_param for k in later[:2])
            shown = ", ".join(f"{k} ({dims[k].dim_param})" for k in later)
            raise OnnxError(
                f"{where}: dimensions {shown} are symbolic after a fixed first one: graphc "
                "cannot tell which is the batch N (the others need a size); say it with "
                f"from_onnx(..., dims={{{a!r}: 'N', {b!r}: size}}) (or --dim {a}=N --dim "
                f"{b}=SIZE), or {{{b!r}: 'N', {a!r}: size}} where {b!r} is the batch"
            )
        return later[0] if len(later) == 1 else 0

    def empty_input(self, vi: Any) -> np.ndarray | None:
        """An input whose declared shape is fixed and has a dimension of size 0 holds no
        values, so its only value is known: that empty array (in the declared type; bfloat16
        as float32), which the import binds as ``constants=`` would (the nodes reading it fold,
        predict does not take it). None for any other input (an unknown or batch dimension
        included: [N, 0] stays refused by graph_input)."""
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or not tt.HasField("shape") or tt.elem_type not in _NP_OF:
            return None
        dims = tt.shape.dim
        if not all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            return None
        shape = tuple(int(d.dim_value) for d in dims)
        if 0 not in shape:
            return None
        dtype = np.float32 if tt.elem_type == 16 else _NP_OF[tt.elem_type]
        return np.zeros(shape, dtype)

    def graph_input(self, vi: Any) -> tuple[Tensor, int]:
        where = f"{self.where}: input {vi.name!r}"
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            raise OnnxError(f"{where}: only tensor inputs are supported (got {vi.type})")
        use = self.integer_input_use(vi.name) if tt.elem_type in INTEGER_TYPES else None
        if tt.elem_type in INTEGER_TYPES and use is None:
            raise OnnxError(
                f"{where}: element type {type_name(tt.elem_type)} used as an integer; graphc "
                "reads integer and bool inputs (as float32) only where the graph casts them to "
                "float, looks rows up with them (the indices of a Gather), one-hot encodes them "
                "(the indices of a OneHot), returns them as an integer output or computes with "
                f"them by {', '.join(sorted(INTEGER_FLOW))} before that; here "
                f"{self.integer_refusal}"
            )
        if tt.elem_type not in FLOAT_TYPES + INTEGER_TYPES:
            raise OnnxError(
                f"{where}: element type {type_name(tt.elem_type)}; graphc inputs are floating "
                "point (float, double, float16 and bfloat16 inputs are read as float32), or "
                "integers cast to float straight away"
            )
        if not tt.HasField("shape"):
            raise OnnxError(f"{where}: the input has no shape; graphc needs every dimension")
        batch = self.batch_axis(tt.shape.dim, where)
        shape: list[Any] = []
        for k, d in enumerate(tt.shape.dim):
            # dim_value -1 (older keras2onnx/tf2onnx files), an empty dim_param and no value at
            # all are unknown sizes, like a named dim_param
            fixed = d.HasField("dim_value") and d.dim_value >= 0
            if fixed and d.dim_value == 0:
                raise OnnxError(
                    f"{where}: dimension {k} has size {d.dim_value}; graphc does not support "
                    "empty tensors (a dimension of size 0)"
                )
            if d.dim_param:
                self.dims_seen.add(d.dim_param)
            if fixed:
                shape.append(int(d.dim_value))
            elif k == batch:
                if k == 0 and self.dims.get(d.dim_param, "N") != "N":
                    raise OnnxError(
                        f"{where}: dims names {d.dim_param!r}, the first dimension: the batch N "
                        "stays symbolic (every batch size runs); dims fixes the others"
                    )
                shape.append("N")  # dim_param, or left unknown: the batch dimension
            elif d.dim_param in self.dims:
                shape.append(self.dims[d.dim_param])  # ONNX Runtime's free dimension override
            else:
                name = d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?")
                hint = (
                    f": give its size, from_onnx(..., dims={{{d.dim_param!r}: size}}) or graphc "
                    f"compile (or dump) --dim {d.dim_param}=SIZE (ONNX Runtime's free dimension "
                    "override); "
                    "the model then takes that size only"
                    if d.dim_param
                    else " and unnamed: fix it in the file (onnx.tools.update_model_dims)"
                )
                first = tt.shape.dim[0]
                if k == 1 and first.dim_param and first.dim_param not in self.dims:
                    # torch's sequence-first layout with both axes dynamic ([T, N, C]:
                    # nn.LSTM / nn.GRU with batch_first=False): fixing T makes axis 1 the batch
                    hint += (
                        f"; or, for a sequence-first input (the batch at axis 1), fix its first "
                        f"dimension: dims={{{first.dim_param!r}: size}} (predict then takes the "
                        "batch at axis 1)"
                    )
                elif k == 1 and first.HasField("dim_value") and not first.dim_param:
                    # torch's sequence-first layout ([L, N, E]: nn.MultiheadAttention or
                    # nn.Transformer with batch_first=False, exported with the batch axis 1)
                    hint += (
                        "; or, for a sequence-first input (the batch at axis 1), export the "
                        "model with the batch first (batch_first=True, or x.transpose(0, 1) "
                        "inside forward): graphc's inputs and outputs lead with N, which may "
                        "move inside the model"
                    )
                but = "the first (the batch N)" if batch == 0 else f"the batch N (axis {batch})"
                raise OnnxError(
                    f"{where}: dimension {k} is symbolic ({name}); graphc fixes "
                    f"every dimension but {but}{hint}"
                )
        if batch:  # declared N first, the ONNX value a layout view of it (Importer.run)
            shape.insert(0, shape.pop(batch))
        wide = tt.elem_type == 11 and self.compared_in_double(vi.name)
        t = dsl.input(
            c_name(self.prefix + vi.name, self.taken, "x"), tuple(shape), "f64" if wide else "f32"
        )
        t.node = t.node.with_(
            loc=f"{self.where}: input {vi.name!r}", origin=f"onnx input {vi.name}"
        )
        if tt.elem_type in INTEGER_TYPES:
            self.integral.add(id(t))
        if tt.elem_type != 1:
            # the file's type (an integer, double, float16, bfloat16), for to_onnx: graphc's
            # input holds the values as f32; the file again takes the type the original did
            t.node = t.node.with_(origin=f"{t.node.origin}{ONNX_TYPE_TAG}{tt.elem_type}")
        if use == "integer":  # float32 holds whole numbers exactly below 2**24: checked
            # within +-(2**24 - 1): the entries check the values as float32, and -2**24 - 1
            # rounds to -2**24 (an end of -2**24 let it through as -2**24: Mod gave 2 for 1);
            # a narrower type within its own values (bool 0 .. 1, uint16 0 .. 65535, ...)
            lo, hi = TYPE_SPANS.get(tt.elem_type, (1 - 2**24, 2**24 - 1))
            t.node = t.node.with_(
                attrs={
                    **dict(t.node.attrs),
                    "index_rows": hi + 1,
                    "index_low": lo,
                    "index_table": False,
                }
            )
        return t, batch

    def convert(self, index: int, node: Any) -> None:
        onnx = require_onnx()
        domain = node.domain or ""
        if domain == "ai.onnx":
            domain = ""
        key = node.op_type if domain == "" else f"{domain}:{node.op_type}"
        version = self.opsets.get(domain)
        cx = NodeContext(self, node, index, version or 0)
        if version is None:
            cx.fail(f"its domain {domain!r} is not imported by the model (opset_import)")
        rule = OPS.get(key)
        if rule is None:
            for n in node.input:  # a view graphc cannot lay out says so first
                if n in self.views:
                    self.values[n] = onnx_layout.materialize(cx, self.views.pop(n))
            supported = ", ".join(sorted(OPS))
            cx.fail(f"operator {key} is not supported by graphc. Supported: {supported}")
        try:
            schema = onnx.defs.get_schema(node.op_type, version, domain)
        except Exception:
            schema = CONTRIB_SCHEMAS.get(key)  # ONNX Runtime's com.microsoft operators
            if schema is None:
                cx.fail(f"operator {key} is not defined at opset {version}")
        cx.version = schema.since_version
        # as onnx.checker: an input the operator does not have at this opset (jax2onnx writes
        # ReduceMean's axes as an input at opset 17, where it is an attribute) was ignored
        n_in = len(node.input)
        if not schema.min_input <= n_in <= schema.max_input:
            where = _opsets_of_form(
                onnx, node, domain, lambda s: s.min_input <= n_in <= s.max_input
            )
            cx.fail(
                f"{n_in} inputs; {key} at opset {cx.version} takes "
                f"{schema.min_input} to {schema.max_input} (the file is malformed: ONNX Runtime "
                f"and onnx.checker refuse it too){where}"
            )
        names = [a.name for a in node.attribute]
        if len(set(names)) != len(names):  # (the last one was read)
            twice = sorted({a for a in names if names.count(a) > 1})
            cx.fail(f"attribute(s) {', '.join(map(repr, twice))} given more than once")
        for a in node.attribute:  # (a function body's; expand_functions replaced those)
            if a.ref_attr_name:
                cx.fail(
                    f"attribute {a.name!r} refers to {a.ref_attr_name!r}, a function's "
                    "attribute, outside a function body (the file is malformed)"
                )
        for a in node.attribute:  # an attribute of another opset (Squeeze-11's axes at 13)
            if a.name not in schema.attributes:
                where = _opsets_of_form(onnx, node, domain, lambda s: a.name in s.attributes)
                cx.fail(
                    f"attribute {a.name!r} is not one of {key}'s at opset {cx.version} "
                    f"({', '.join(sorted(schema.attributes)) or 'none'}); the file is "
                    f"malformed{where}"
                )
            want = schema.attributes[a.name].type
            if a.type != want:  # as onnx.checker: a rule reading it would see another kind
                cx.fail(
                    f"attribute {a.name!r} has type {_attr_type(onnx, a.type)}; {key}'s "
                    f"{a.name} is {_attr_type(onnx, want)} (the file is malformed: ONNX Runtime "
                    "and onnx.checker refuse it too)"
                )
        if not schema.min_output <= len(node.output) <= schema.max_output:
            cx.fail(
                f"{len(node.output)} outputs; {key} at opset {cx.version} has "
                f"{schema.min_output} to {schema.max_output}"
            )
        for a in node.attribute:
            if a.name not in rule.attrs:
                cx.fail(
                    f"attribute {a.name!r} is not supported (supported: "
                    f"{', '.join(rule.attrs) or 'none'})"
                )
        for name in node.output:
            if name and (name in self.values or name in self.initializers):
                cx.fail(f"output {name!r} is defined twice")
        try:  # (the same wrapping as the rule's below)
            viewed = self.through_views(cx)
        except OnnxError:
            raise
        except GraphcError as e:
            raise OnnxError(f"{cx.where()}: {type(e).__name__}: {e}") from None
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError) as e:
            raise OnnxError(f"{cx.where()}: malformed node ({type(e).__name__}: {e})") from None
        args = [self.lookup(n, cx) if n else None for n in node.input]
        for n, a in zip(node.input, args):  # (onnx_import_control: sequences known at import)
            if isinstance(a, SequenceValue) and key not in SEQUENCE_OPERANDS:
                cx.fail(f"input {n!r} is a sequence; {key} takes tensors")
            if isinstance(a, OptionalValue) and key not in SEQUENCE_OPERANDS:
                cx.fail(f"input {n!r} is an optional; {key} takes tensors (OptionalGetElement)")
        plane = onnx_import_pool.check_reader(cx, args) if self.plane_indices else None
        present = [a for a in args if a is not None]
        frozen = all(
            not isinstance(a, Tensor)
            and not (n in self.initializers and a.dtype.kind == "f" and self.is_trainable(n))
            for n, a in zip(node.input, args)
            if n
        )
        merged = self.merged_rows(cx, args) if viewed is None else None
        try:
            if viewed is not None:
                outs = viewed
            elif rule.fold is not None and frozen and present:
                outs = [_tidy(v) for v in rule.fold(cx, args)]
            elif rule.convert is None:
                cx.fail("this operator is supported only on values known at import time")
            else:
                outs = rule.convert(cx)
        except OnnxError:
            raise
        except GraphcError as e:  # a shape error from the DSL: say which ONNX node
            raise OnnxError(f"{cx.where()}: {type(e).__name__}: {e}") from None
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError) as e:
            # numpy on a malformed file's values (shapes that do not fit, odd attribute types)
            raise OnnxError(f"{cx.where()}: malformed node ({type(e).__name__}: {e})") from None
        if plane is not None:  # (what MaxPool's Indices stand for, through Identity / Slice)
            self.plane_indices.update((id(v), plane) for v in outs if isinstance(v, Tensor))
        if merged is not None:  # row-wise results keep the merged rows
            k, prefix = merged
            for v in outs:
                if isinstance(v, Tensor) and tuple(v.shape[:k]) == prefix:
                    self.merged.setdefault(id(v), k)
        first = args[0] if args else None
        if rule.keeps_integers and isinstance(first, Tensor) and id(first) in self.integral:
            self.integral.update(id(v) for v in outs if isinstance(v, Tensor))
        for name, v in zip(node.output, outs):  # integer-typed results hold whole numbers
            if isinstance(v, Tensor) and self.elem_type(name) in INTEGER_TYPES:
                self.integral.add(id(v))
        for name, v in zip(node.output, outs):
            if not name or v is None:
                continue
            if isinstance(v, np.ndarray) and v.size > MAX_ELEMENTS:
                cx.fail(f"output {name!r} would hold {v.size} elements")
            if isinstance(v, onnx_layout.View):  # the base, seen through the view
                self.views[name] = v
                v = v.base
            if isinstance(v, Tensor):
                self.stamp(v, cx)
            self.values[name] = v

    def through_views(self, cx: NodeContext) -> list | None:
        """The outputs of a node computed through layout views (graphc.onnx_layout): one that
        reads a view, or a Transpose that moves N. None where the ordinary rule runs: its
        operands' views are materialized first (or refused, naming the node and shapes)."""
        if self.reshape_of_n(cx) and not any(n in self.views for n in cx.node.input):
            # a Reshape or Unsqueeze the rule refuses (it puts N after an axis: [1, -1, E] of
            # [N, E] where a sequence of length 1 was merged with N) may be a view of its input
            try:
                return OPS[cx.node.op_type].convert(cx)
            except OnnxError:
                try:
                    outs = onnx_layout.convert(self, cx, refused=True)
                except (GraphcError, ValueError, TypeError, IndexError, KeyError):
                    outs = None
                if outs is None:
                    raise
        else:
            outs = self._through_views(cx)
        if outs is None:
            return None
        fresh = []
        for o in outs:  # a merged tensor seen literally again: its own value, not merged
            if isinstance(o, Tensor) and (id(o) in self.merged or id(o) in self.lead_ones):
                o = dsl.apply("reshape", o, shape=o.type.shape)
            fresh.append(o)
        return fresh

    def _through_views(self, cx: NodeContext) -> list | None:
        node = cx.node
        if getattr(OPS.get(_rule_key(node)), "reads_views", False):
            return None
        viewed = [n for n in node.input if n in self.views]
        merged = [
            v
            for n in node.input
            if n and isinstance(v := self.values.get(n), Tensor) and id(v) in self.merged
        ]
        if not viewed and merged:
            # merged rows (a Reshape to [-1, ...] or [N*m, ...]) read by an op that is not
            # row-wise (merged_rows refuses it) may still be computed through their view
            saved = dict(cx.attrs)
            try:
                self.merged_rows(cx, [self.lookup(n, cx) if n else None for n in node.input])
                return None
            except OnnxError:
                try:
                    outs = onnx_layout.convert(self, cx)
                except (GraphcError, ValueError, TypeError, IndexError, KeyError):
                    outs = None
                if outs is None:
                    raise
                return outs
            finally:
                cx.attrs.clear()
                cx.attrs.update(saved)
        if not viewed and not self.moves_n(cx):
            return None
        outs = onnx_layout.convert(self, cx)
        if outs is not None:
            return outs
        for n in viewed:
            t = onnx_layout.materialize(cx, self.views.pop(n))
            self.stamp(t, cx)
            self.values[n] = t
        return None

    def reshape_of_n(self, cx: NodeContext) -> bool:
        """Whether node ``cx`` is a Reshape or Unsqueeze of a computed value holding N, by a
        known shape or axes."""
        node = cx.node
        if node.op_type not in ("Reshape", "Unsqueeze") or node.domain not in ("", "ai.onnx"):
            return False
        x = self.values.get(node.input[0]) if node.input else None
        s = [self.values.get(n, self.initializers.get(n)) for n in node.input[1:2] if n]
        return (
            isinstance(x, Tensor)
            and "N" in x.shape
            and all(isinstance(a, np.ndarray) for a in s)
            and (node.op_type == "Reshape" or id(x) not in self.merged)  # (merged_rows's)
        )

    def moves_n(self, cx: NodeContext) -> bool:
        """Whether node ``cx`` is a Transpose moving the batch axis N (or merged rows), or a
        Concat along N of values led by N (onnx_layout._concat_n)."""
        if cx.node.domain not in ("", "ai.onnx"):
            return False
        if cx.node.op_type == "Concat":
            xs = [self.values.get(n) for n in cx.node.input if n]
            if len(xs) < 2 or not all(
                isinstance(x, Tensor) and x.shape[:1] == ("N",) and id(x) not in self.merged
                for x in xs
            ):
                return False
            axis = cx.attr("axis")
            return isinstance(axis, int) and axis in (0, -len(xs[0].shape))
        if cx.node.op_type != "Transpose":
            return False
        if not cx.node.input or cx.node.input[0] not in self.values:
            return False
        x = self.values[cx.node.input[0]]
        if not isinstance(x, Tensor) or "N" not in x.shape:
            return False
        r = len(x.shape) - self.merged.get(id(x), 1) + 1
        perm = cx.attr("perm")
        perm = list(range(r))[::-1] if perm is None else [int(p) % max(r, 1) for p in perm]
        n = 0 if id(x) in self.merged else x.shape.index("N")
        return len(perm) == r and perm[n] != n

    def merged_rows(self, cx: NodeContext, args: list) -> tuple[int, tuple] | None:
        """For a node reading values whose rows merge the batch dimension N with the axes after
        it (``merged``, made by a Reshape to [-1, ...]: tf2onnx's Tensordot for a Dense on a
        sequence, [N, T, C] -> [-1, C] -> MatMul -> back to [N, T, P]), check that the node
        works row by row, so that graphc can compute it on the unmerged value [N, T, ...]:
        an elementwise operator whose other operands broadcast over the rows, a MatMul or
        Gemm of the rows by a matrix without N, Softmax/LogSoftmax/LayerNormalization over
        inner axes (``axis`` moved past the merged ones), or a Reshape (the rule itself). Any
        other use is refused naming the node. Returns (k, the merged axes' real sizes) or None
        where no operand is merged."""
        ks = {self.merged[id(a)] for a in args if isinstance(a, Tensor) and id(a) in self.merged}
        if not ks:
            return None
        if any(isinstance(a, Tensor) and id(a) in self.lead_ones for a in args):
            if cx.node.op_type == "Squeeze":
                return None  # the rule removes the unit axes
            cx.fail(
                "merged rows led by unit axes (a Reshape to [1, -1, ...]) are supported only "
                "by a Squeeze of those axes"
            )
        src = next(a for a in args if isinstance(a, Tensor) and id(a) in self.merged)
        k = self.merged[id(src)]
        prefix = tuple(src.shape[:k])
        op = cx.node.op_type if cx.node.domain in ("", "ai.onnx") else ""
        logical = len(src.shape) - k + 1
        merged_of = f"{_fmt(prefix[1:])} merged into the first axis of a [-1, ...] Reshape"

        def refuse(why: str) -> None:
            cx.fail(
                f"{why}; its input's rows are the batch dimension N and the axes {merged_of} "
                "(tf2onnx's Tensordot pattern): graphc supports on such values only row-wise "
                "operators (elementwise, MatMul/Gemm by a weight matrix, Softmax, LogSoftmax, "
                "LayerNormalization over inner axes) and a Reshape back to [N, ...]"
            )

        if op == "Reshape":
            return None if args[0] is src and len(ks) == 1 else refuse("a merged shape")
        if len(ks) > 1:
            refuse("operands merge different axes")
        both = all(isinstance(a, Tensor) and id(a) in self.merged for a in args[:2])
        if op == "MatMul" and both and logical >= 3:  # stacks of matrices, the rows a batch axis
            rest = [args[1]]
        elif op in ("MatMul", "Gemm"):
            b = args[1]
            if args[0] is not src or (isinstance(b, Tensor) and id(b) in self.merged):
                refuse(f"{op} multiplies along the merged rows")
            if len(b.shape) != 2 or "N" in b.shape or (op == "Gemm" and cx.attr("transA", 0)):
                refuse(f"{op} by {_fmt(b.shape)}, not one matrix")
            rest = [a for a in args[2:] if a is not None]
        elif op == "Transpose":
            perm = cx.attr("perm")
            perm = list(range(logical))[::-1] if perm is None else [int(p) % logical for p in perm]
            if perm[:1] != [0]:
                refuse(f"perm={perm} moves the merged rows")
            onnx = require_onnx()
            real = list(range(k)) + [p + k - 1 for p in perm[1:]]
            cx.attrs["perm"] = onnx.helper.make_attribute("perm", real)
            rest = []
        elif (
            op in ROW_WISE or op in _UNARY or op in ("Softmax", "LogSoftmax", "LayerNormalization")
        ):
            rest = [a for a in args if a is not None and a is not src]
        else:
            refuse(f"operator {op or cx.node.op_type} is not row-wise")
        for a in rest:
            if isinstance(a, Tensor) and id(a) in self.merged:
                if tuple(a.shape[:k]) != prefix:
                    refuse("operands merge different axes")
            elif "N" in a.shape or (
                len(a.shape) >= logical and a.shape[len(a.shape) - logical] != 1
            ):
                refuse(f"an operand of shape {_fmt(a.shape)} broadcasts along the merged rows")
        if op in ("Softmax", "LogSoftmax", "LayerNormalization"):
            legacy = op != "LayerNormalization" and cx.version < 13
            axis = int(cx.attr("axis", 1 if legacy else -1))
            if axis == 0 or axis < -logical:
                refuse(f"axis={axis} normalizes along the merged rows")
            if axis > 0:
                onnx = require_onnx()
                cx.attrs["axis"] = onnx.helper.make_attribute("axis", axis + k - 1)
        return k, prefix

    def elem_type(self, name: str) -> int | None:
        """The ONNX element type of value ``name`` (declared, or from onnx's shape inference,
        run once), or None where neither says."""
        if self.types is None:
            self.types = _value_types(require_onnx(), self.model, self.where)
        t = self.types.get(name)
        return int(t.tensor_type.elem_type) if t is not None else None

    def stamp(self, t: Tensor, cx: NodeContext) -> None:
        """Mark the tensors a rule made with the ONNX node they came from (shown by dumps and
        error messages)."""
        stack = [t]
        loc = f"{self.where}: node {cx.index} {cx.node.name!r}"
        while stack:
            u = stack.pop()
            if id(u) in self.known:
                continue
            self.known.add(id(u))
            if u.node.op not in ("param", "state", "input"):
                u.node = u.node.with_(loc=loc, origin=f"onnx {cx.node.op_type} {cx.node.name}")
            stack.extend(u.parents)


class _OutputContext:
    """What onnx_layout.materialize needs to refuse a graph output it cannot lay out."""

    def __init__(self, where: str, name: str) -> None:
        self.where_, self.name = where, name
        self.node = type("Out", (), {"op_type": f"graph output {name!r}"})()

    def fail(self, msg: str) -> None:
        raise OnnxError(f"{self.where_}: output {self.name!r}: {msg}")


EXPAND_DOMAIN = "graphc.expand"  # the domain of the call sites expand_functions inlines
MAX_EXPAND_ROUNDS = 8  # function bodies that call functions, nested this deep at most


def _opsets_of_form(onnx: Any, node: Any, domain: str, fits: Callable[[Any], bool]) -> str:
    """Where a node's form (its input count, an attribute) exists: the opsets whose definition
    of the operator has it, as a hint for a malformed file (an exporter that wrote another
    opset's form: jax2onnx 0.17's ReduceMean with an axes input at opset 17), else ""."""
    domains = {"", "ai.onnx"} if domain == "" else {domain}
    defs = sorted(
        (s.since_version, fits(s))
        for s in onnx.defs.get_all_schemas_with_history()
        if s.name == node.op_type and s.domain in domains
    )
    spans: list[list[int | None]] = []  # [first, last] opsets, last None: and later
    for k, (since, ok) in enumerate(defs):
        until = defs[k + 1][0] - 1 if k + 1 < len(defs) else None
        if ok and spans and spans[-1][1] == since - 1:
            spans[-1][1] = until
        elif ok:
            spans.append([since, until])
    if not spans:
        return ""
    text = ", ".join(
        f"{a} and later" if b is None else (f"{a}" if a == b else f"{a} to {b}") for a, b in spans
    )
    return (
        f". {node.op_type} has this form at opset {text}: export the model at such an opset "
        "(the exporter's opset option)"
    )


def _rule_key(node: Any) -> str:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    return node.op_type if domain == "" else f"{domain}:{node.op_type}"


def expand_functions(model: Any, opsets: dict[str, int], where: str) -> Any:
    """The model with its functions inlined: the model-local functions (ModelProto.functions,
    e.g. torch's ``export_modules_as_functions`` or onnxscript's), and every node of an
    operator that graphc has no rule for but whose ONNX schema defines it by a function body
    at the model's opset (HardSwish, Mish, Celu, Shrink, ReduceL2, ReduceLogSumExp,
    MeanVarianceNormalization, ...; context-dependent bodies too), expanded into the body's
    nodes. Inlining is onnx.inliner's (version conversion where a body's opset differs).
    The caller's ModelProto is not changed; a model with nothing to expand is returned as is.

    Raises:
        OnnxError: a function that onnx cannot inline.
    """
    onnx = require_onnx()
    from onnx import inliner

    def inline(m: Any) -> Any:
        # A body's ops are read at the model's opset, as the node that called it (onnx's
        # inliner leaves a call whose body declares another opset in place without version
        # conversion, and its version converter fails on many graphs).
        for fn in m.functions:
            for o in fn.opset_import:
                if o.domain in ("", "ai.onnx") and "" in opsets:
                    o.version = opsets[""]
        try:
            out = inliner.inline_local_functions(m)
        except Exception as e:
            raise OnnxError(
                f"{where}: cannot inline its functions ({type(e).__name__}: {e})"
            ) from None
        ids = {(f.domain, f.name) for f in m.functions}
        left = [n.op_type for n in out.graph.node if (n.domain, n.op_type) in ids]
        if left:
            raise OnnxError(f"{where}: onnx's inliner left the calls of {sorted(set(left))}")
        return out

    if len(model.functions):
        model = inline(model)
    for _ in range(MAX_EXPAND_ROUNDS):
        todo = [
            (i, n)
            for i, n in enumerate(model.graph.node)
            if _rule_key(n) not in OPS and _has_body(onnx, n, opsets)
        ]
        if not todo:
            break
        m = onnx.ModelProto()
        m.CopyFrom(model)
        types = _value_types(onnx, m, where)
        added = 0
        for i, n in todo:
            fn = _function_body(onnx, n, opsets, types)
            if fn is None:
                continue
            call = m.graph.node[i]
            name = f"{call.op_type}_{added}"
            fn.name, fn.domain = name, EXPAND_DOMAIN
            call.op_type, call.domain = name, EXPAND_DOMAIN
            call.ClearField("attribute")
            call.attribute.extend(_with_defaults(onnx, n, opsets))
            m.functions.append(fn)
            added += 1
        if not added:
            break
        if not any(o.domain == EXPAND_DOMAIN for o in m.opset_import):
            m.opset_import.append(onnx.helper.make_opsetid(EXPAND_DOMAIN, 1))
        model = inline(m)
        del model.functions[:]
    return model


def _schema(onnx: Any, node: Any, opsets: dict[str, int]) -> Any:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    version = opsets.get(domain)
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain)
    except Exception:
        return None


def _has_body(onnx: Any, node: Any, opsets: dict[str, int]) -> bool:
    s = _schema(onnx, node, opsets)
    return s is not None and (s.has_function or s.has_context_dependent_function)


def _with_defaults(onnx: Any, node: Any, opsets: dict[str, int]) -> list:
    """The node's attributes plus the schema's defaults of those it leaves out (a body refers
    to them by name)."""
    s = _schema(onnx, node, opsets)
    out = list(node.attribute)
    have = {a.name for a in out}
    for name, a in s.attributes.items():
        if name not in have and a.default_value is not None and a.default_value.name:
            out.append(a.default_value)
    return out


def _sinusoidal(a: np.ndarray) -> bool:
    """Whether ``a`` ([..., L, d], L and d >= 2) looks like the fixed sinusoidal position
    encoding of "Attention Is All You Need" (sin and cos of pos / 10000**(2i/d)): every value
    in [-1, 1], position 0's row made of sin(0) = 0 and cos(0) = 1 only (both present), and
    position 1's row not (sin(1 / 10000**(2i/d)) is neither). A learned table's first row is
    no such pattern."""
    if a.ndim < 2 or a.shape[-1] < 2 or a.shape[-2] < 2 or not np.isfinite(a).all():
        return False
    rows = a.reshape(-1, a.shape[-2], a.shape[-1])[0]
    first, second = set(np.unique(rows[0]).tolist()), set(np.unique(rows[1]).tolist())
    return bool(np.all(np.abs(a) <= 1.0)) and first == {0.0, 1.0} and not second <= {0.0, 1.0}


def _has_shape(vi: Any) -> bool:
    """Whether ValueInfoProto ``vi`` declares a tensor type with a shape (its rank known)."""
    return vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")


def _value_types(onnx: Any, model: Any, where: str = "onnx") -> dict[str, Any]:
    """value name -> TypeProto, from the graph's inputs, outputs, value_info and onnx's shape
    inference (when it succeeds).

    Raises:
        OnnxError: a value_info entry declares an element type other than the one its node
            yields (a float Div declared int64 was computed as integer division, truncated:
            ONNX Runtime refuses such a file with a type error).
    """
    g = model.graph
    declared = list(g.value_info)
    del g.value_info[:]  # inferred from the nodes alone, to compare with what the file declares
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        inferred = model.graph
    finally:
        g.value_info.extend(declared)
    got = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in inferred.value_info
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type
    }
    for vi in declared:
        have = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        if have and got.get(vi.name, have) != have:
            raise OnnxError(
                f"{where}: value {vi.name!r} is declared {type_name(have)} (value_info) but its "
                f"node yields {type_name(got[vi.name])}; the file is malformed (ONNX Runtime "
                "refuses it too)"
            )
    out = {}
    for g in (model.graph, inferred):
        for vi in (*g.input, *g.value_info, *g.output):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                out.setdefault(vi.name, vi.type)
    for t in model.graph.initializer:
        out.setdefault(t.name, onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    for name, tp in onnx_import_control.body_types(onnx, inferred).items():
        out.setdefault(name, tp)  # the values of If's branches, Loop's and Scan's bodies
    return out


def _function_body(onnx: Any, node: Any, opsets: dict[str, int], types: dict) -> Any:
    """The FunctionProto that defines ``node`` at the model's opset, or None."""
    s = _schema(onnx, node, opsets)
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    # the body registered for the newest opset up to the model's; else the oldest (a body
    # added to an op later defines the same op: its since_version is the node's)
    versions = sorted(
        getattr(s, "context_dependent_function_opset_versions", [])
        if s.has_context_dependent_function
        else getattr(s, "all_function_opset_versions", [s.since_version])
    )
    if not versions:
        return None
    older = [v for v in versions if v <= opsets[domain]]
    version = older[-1] if older else versions[0]
    try:
        if not s.has_context_dependent_function:
            raw = s.get_function_with_opset_version(version)
        else:
            full = onnx.NodeProto()
            full.CopyFrom(node)
            full.ClearField("attribute")
            full.attribute.extend(_with_defaults(onnx, node, opsets))
            float_type = onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, None)
            in_types = [
                types.get(n, float_type).SerializeToString() if n else b"" for n in node.input
            ]
            raw = s.get_context_dependent_function_with_opset_version(
                version, full.SerializeToString(), in_types
            )
    except Exception:
        return None
    if not raw:
        return None
    fn = onnx.FunctionProto()
    fn.ParseFromString(raw if isinstance(raw, bytes) else raw.SerializeToString())
    if not len(fn.node):
        return None
    return _at_opset(onnx, fn, opsets.get("", 0))


def _at_opset(onnx: Any, fn: Any, model_v: int) -> Any:
    """``fn`` with its default-domain nodes read at the model's opset ``model_v``, or None when
    one of them means something else there (a body registered for a later opset whose ops
    changed since). CastLike (opset 15) before opset 15 becomes Identity: graphc computes
    every value in float32, so a cast to a graph value's type changes nothing."""
    body_v = next((o.version for o in fn.opset_import if o.domain in ("", "ai.onnx")), model_v)
    if body_v == model_v:
        return fn
    for n in fn.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type == "CastLike" and model_v < 15:
            n.op_type = "Identity"
            del n.input[1:]
            continue
        try:  # the same inputs, and the attributes it sets: a version that added types
            a = onnx.defs.get_schema(n.op_type, model_v, "")
            b = onnx.defs.get_schema(n.op_type, body_v, "")
            same = a.since_version == b.since_version or (
                [i.name for i in a.inputs] == [i.name for i in b.inputs]
                and all(at.name in a.attributes for at in n.attribute)
            )
        except Exception:
            same = False
        if not same:
            return None
    for o in fn.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = model_v
    return fn


def from_onnx(
    model: Any,
    *,
    trainable: Any = True,
    outputs: list[str] | None = None,
    name: str | None = None,
    constants: dict[str, Any] | None = None,
    prefix: str = "",
    dims: dict[str, int | str] | None = None,
) -> OnnxImport:
    """Import an ONNX model as graphc tensors, ready for ``gc.compile``.

    Args:
        model: a path to a .onnx file (external data, e.g. ``model.onnx.data``, is read from the
            file's folder and nowhere else), the file's bytes, or an ``onnx.ModelProto``.
        trainable: which float initializers become trainable params: True (all but the
            graph's constants: scalars such as an epsilon, one-element epsilons added before
            a Sqrt, masks (a -inf or 0 / -1e9 additive mask, a 0/1 mask read by Mul or
            Where); these train when named in a collection or accepted by a predicate), False
            (none: all are constants), a collection of ONNX initializer names (one name: a
            str), or a predicate on the name. Whatever ``trainable`` says, an initializer fed
            to an input that the operator's ONNX schema marks non-differentiable (Clip's
            bounds, Pad's value, Resize's scales, OneHot's values, a Reshape's shape, ...),
            BatchNormalization's running statistics and Pow's exponent never train. A
            judgement: a table only added to a value (a positional embedding) trains by
            default, as learned ones (BERT's, ViT's) must, unless it is the fixed sinusoidal
            encoding (position 0's row all sin 0 = 0 and cos 0 = 1); pass a collection or a
            predicate to choose otherwise.
        outputs: ONNX output names to import (default: every graph output).
        name: the model's name (a C identifier; default: from the graph's name).
        constants: ONNX input name -> array: inputs bound to these values at import time (for
            example a shape or an index input), no longer inputs of the compiled model.
        prefix: put before the graphc name of every input, weight and output of this import
            (letters, digits, '_'), so that two imports whose ONNX names coincide (two
            PyTorch exports, or one file imported twice) can go into one model.
        dims: symbolic dimension name (an input's ``dim_param``) -> its size (an int >= 1),
            for the dimensions after the first that a file leaves symbolic (a text model's
            sequence length: torch's ``dynamic_axes={"ids": {0: "batch", 1: "seq"}}``), as
            ONNX Runtime's free dimension overrides; graphc fixes every dimension but the
            batch N, so the compiled model takes that size only. Naming a name no input has
            is refused, and so is naming an input's first dimension unless exactly one later
            dimension stays free, which is then the batch N (a sequence-first x [T, N, C]:
            dims={"T": 5}; predict takes x in that layout: OnnxImport.input_batch_axes).
            One name may map to "N" instead: that dimension is the batch, wherever it stands
            (x [1, batch, seq]: dims={"batch": "N", "seq": 128}); two or more free dimensions
            after a fixed first one are refused without it, naming dims.

    Integer inputs: graphc holds ONNX's integers as float32 (exact below 2**24 in
    magnitude). Each integer input that the graph computes with or looks rows up with is
    checked by every compiled entry before it runs: whole numbers in a range lo .. hi, else
    ArgumentError naming the input, the row and the value. The range is one for which
    graphc proves (graphc.onnx_bounds) that every integer the graph computes from the input
    stays exact and every lookup index computed from it stays in its table (ONNX Runtime
    raises on one outside it), wherever the offsets put it: -V .. V-1 for a Keras
    Embedding's ids, 1-V .. V for a Gather of ids - 1 (1-based ids), -100-V .. -101 for
    ids + 100, within +-2**24 / 3 for the inputs of a sum of three. A judgement: this also
    refuses some values ONNX Runtime accepts (ids whose index leaves the table and comes
    back by a later step the intervals cannot follow, a sum exact in int64 but not in
    float32); a named refusal is preferred to a silently wrong row. A lookup
    whose indices no such range keeps in the table (computed from a float or a weight) is
    refused at import.

    Returns:
        OnnxImport: ``outputs``, ``inputs``, ``params``, ``constants``, ``weights``, name maps;
        ``imp.compile(loss, optimizer, ...)`` compiles it.

    Raises:
        OnnxError: a malformed file, or an operator, attribute or data type graphc does not
            support (naming the node, its op type and the opset); raised before anything is
            compiled. The message says which extra to install when onnx is missing. A
            ``trainable`` name that is no initializer of the file is refused (with the close
            matches). A lookup index (Gather with indices computed in the graph) or an
            integer value that no checked range of the integer inputs proves in its table or
            exact (see above), naming the node or value and the range found. A file that
            fails onnx.checker's full check as ONNX Runtime's loader would refuse it (an
            operator's type constraints, a missing or unknown ir_version, an output no node
            produces; Importer.check_file), naming the checker's finding.

    Warns:
        OnnxFrozenWarning: a ``trainable`` collection names an initializer that never trains
            (see above), naming the node that reads it.
        OnnxPrecisionWarning: graph inputs or outputs declared double, which graphc reads and
            computes as float32.
    """
    if not isinstance(prefix, str) or re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)?", prefix) is None:
        raise OnnxError(f"from_onnx: prefix must be letters, digits and '_', got {prefix!r}")
    m, base = load_model(model)
    where = os.path.basename(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else "onnx"
    importer = Importer(m, base, trainable, where, constants or {}, prefix, dims)
    imp = importer.run(outputs)
    importer.check_trainable_names()
    unknown = sorted(set(importer.dims) - importer.dims_seen)
    if unknown:
        seen = sorted(importer.dims_seen)
        raise OnnxError(
            f"{where}: dims names {unknown}, which no input's dimension is called; the inputs' "
            f"symbolic dimensions are {seen}"
        )
    if name is not None:
        if not (name.isascii() and name.isidentifier()):
            raise OnnxError(
                f"model name {name!r} must be a C identifier: ASCII letters, digits and '_', "
                "not starting with a digit"
            )
        imp.name = name
    return imp


# ---------------------------------------------------------------- op rules


def _axis(cx: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        cx.fail(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _shape_of(t: Value) -> tuple:
    return tuple(t.shape)


def _reshape(cx: NodeContext, x: Tensor, shape: tuple) -> Tensor:
    """Reshape that keeps the batch dimension N first (graphc's reshape rule)."""
    if tuple(shape) == tuple(x.shape):
        return x
    return dsl.reshape(x, shape)


def _target_shape(cx: NodeContext, in_shape: tuple, target: np.ndarray, allowzero: bool) -> tuple:
    """ONNX Reshape's output shape (0 copies a dimension unless allowzero, -1 is inferred); the
    batch dimension N may appear only first."""
    out: list[Any] = []
    for i, d in enumerate(target.tolist()):
        if isinstance(d, str):
            out.append(d)
        elif d == 0 and not allowzero:
            if i >= len(in_shape):
                cx.fail(f"shape {target.tolist()} copies dimension {i} the input does not have")
            out.append(in_shape[i])
        else:
            out.append(int(d))
    if sum(1 for d in out if d == -1) > 1:
        cx.fail(f"shape {target.tolist()} has more than one -1")
    batched = "N" in in_shape
    fixed_in = math.prod(int(d) for d in in_shape if d != "N")
    if -1 in out:
        k = out.index(-1)
        rest = math.prod(int(d) for j, d in enumerate(out) if j != k and d != "N")
        if batched and "N" not in out:
            if k != 0 or rest != fixed_in:
                cx.fail(
                    f"reshape of {_fmt(in_shape)} to {target.tolist()} would merge the batch "
                    "dimension N with others; graphc keeps N as the first dimension"
                )
            out[k] = "N"
        else:
            if rest == 0 or fixed_in % rest:
                cx.fail(f"cannot reshape {_fmt(in_shape)} to {target.tolist()}")
            out[k] = fixed_in // rest
    if any(d != "N" and (not isinstance(d, int) or d < 0) for d in out):
        cx.fail(f"bad shape {target.tolist()}")
    return tuple(out)


def _fmt(shape: tuple) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _numpy_reshape(cx: NodeContext, a: np.ndarray, target: np.ndarray, allowzero: bool):
    shape = _target_shape(cx, a.shape, target, allowzero)
    return a.reshape(shape)


# --- graphc's native ops, where this version has them


def native(op: str) -> bool:
    """Whether graphc's IR registers ``op`` (rules use it then, and compose it otherwise)."""
    return op in IR_OPS


def native_or(
    op: str, fallback: Callable[[NodeContext], list[Value]], **attr_map: tuple[str, Any]
) -> Callable[[NodeContext], list[Value]]:
    """A unary rule: graphc's op ``op`` (attrs from the ONNX attributes in ``attr_map``:
    graphc name -> (ONNX name, default)) when registered, else ``fallback``."""

    def convert(cx: NodeContext) -> list[Value]:
        if not native(op):
            return fallback(cx)
        attrs = {k: cx.attr(a, d) for k, (a, d) in attr_map.items()}
        attrs = {k: float(v) if isinstance(v, int | float) else v for k, v in attrs.items()}
        return [dsl.apply(op, cx.x(0), **attrs)]

    return convert


# --- elementwise


def _unary(op: str) -> Callable[[NodeContext], list[Value]]:
    return lambda cx: [dsl.apply(op, cx.x(0))]


def _binary(op: str) -> Callable[[NodeContext], list[Value]]:
    return lambda cx: [dsl.apply(op, cx.x(0), cx.x(1))]


def _abs(x: Tensor) -> Tensor:
    return dsl.apply("abs", x) if native("abs") else dsl.relu(x) + dsl.relu(-x)


def _minimum(a: Tensor, b: Tensor) -> Tensor:
    return dsl.apply("minimum", a, b) if native("minimum") else -dsl.maximum(-a, -b)


def _leaky_relu(cx: NodeContext) -> list[Value]:
    # max(x, 0) + alpha * min(x, 0), written with relu so any alpha (also > 1) is exact
    x, alpha = cx.x(0), float(cx.attr("alpha", 0.01))
    return [dsl.relu(x) - alpha * dsl.relu(-x)]


def _prelu(cx: NodeContext) -> list[Value]:
    x, slope = cx.x(0), cx.x(1)  # slope broadcasts to x (unidirectionally); a param when trained
    return [dsl.relu(x) - slope * dsl.relu(-x)]


def _elu_core(x: Tensor, alpha: float) -> Tensor:
    # x for x > 0, alpha * (exp(x) - 1) otherwise; exp sees min(x, 0) only, so never overflows
    return dsl.relu(x) + alpha * (dsl.exp(-dsl.relu(-x)) - 1.0)


def _elu(cx: NodeContext) -> list[Value]:
    return [_elu_core(cx.x(0), float(cx.attr("alpha", 1.0)))]


SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


def _selu(cx: NodeContext) -> list[Value]:
    alpha = float(cx.attr("alpha", SELU_ALPHA))
    gamma = float(cx.attr("gamma", SELU_GAMMA))
    if native("selu") and (alpha, gamma) == (SELU_ALPHA, SELU_GAMMA):
        return [dsl.apply("selu", cx.x(0))]
    return [gamma * _elu_core(cx.x(0), alpha)]


def _softsign(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    return [x / (_abs(x) + 1.0)]


def _hard_sigmoid(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    y = float(cx.attr("alpha", 0.2)) * x + float(cx.attr("beta", 0.5))
    return [1.0 - dsl.relu(1.0 - dsl.relu(y))]  # max(0, min(1, y))


def _erf(x: Tensor) -> Tensor:
    """erf(x): graphc's erf, or a Taylor series for |x| < 0.5 and Abramowitz & Stegun 7.1.26
    (|error| <= 1.5e-7) above it, so small arguments keep their relative accuracy."""
    if native("erf"):
        return dsl.apply("erf", x)
    ax = _abs(x)
    small = dsl.apply("greater", dsl.const(0.5), ax)  # 1.0 where |x| < 0.5
    xs = x * small
    x2 = xs * xs
    series = xs * (
        1.1283791670955126
        + x2
        * (
            -0.37612638903183754
            + x2 * (0.11283791670955126 + x2 * (-0.026866170645131252 + x2 * 0.005223977625442188))
        )
    )
    t = 1.0 / (1.0 + 0.3275911 * ax)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    sign = dsl.apply("greater", x, dsl.const(0.0)) - dsl.apply("greater", dsl.const(0.0), x)
    large = sign * (1.0 - poly * dsl.exp(-(x * x)))
    return series + (1.0 - small) * large


def _gelu(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    approx = cx.attr("approximate", "none")
    if approx == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))
        return [0.5 * x * (1.0 + dsl.tanh(inner))]
    if approx != "none":
        cx.fail(f"approximate={approx!r} (supported: 'none', 'tanh')")
    return [0.5 * x * (1.0 + _erf(x * (1 / math.sqrt(2))))]


def _pow(cx: NodeContext) -> list[Value]:
    """Pow per the ONNX spec (C's pow, as numpy and ONNX Runtime): one finite scalar exponent
    known at import time is graphc's pow (exact products for integral exponents, any sign of
    x); any other exponent (an array known at import time, or a computed value) is
    ``_pow_general``."""
    x = cx.x(0)
    v = cx.value(1)
    if (
        isinstance(v, np.ndarray)
        and v.size == 1
        and v.ndim <= len(x.shape)
        and not (cx.node.input[1] in cx.imp.initializers and cx.imp.is_trainable(cx.node.input[1]))
    ):
        p = float(v.reshape(()))
        if p in (1.0, 2.0, 0.5) or (native("pow") and math.isfinite(p)):
            return [_power(x, p)]
    return [_pow_general(cx, x, cx.value(1))]


ROUND_F32 = 2.0**23  # (v + 2**23) - 2**23 rounds 0 <= v < 2**23 to an integer in float32


def _pow_general(cx: NodeContext, x: Tensor, e: Value) -> Tensor:
    """x ** e element by element, as C's pow defines it: |x| ** e = exp(e * log|x|), negative
    for x < 0 and an odd integral e; NaN for x < 0 and a non-integral e (log of the negative
    base itself); x ** 0 = 1 for every x (NaN too); 0 ** e = 0 (e > 0) or inf (e < 0).

    Whether e is integral and odd is computed with numpy when e is known at import time, and
    in the graph otherwise: round(v) = (v + 2**23) - 2**23 in float32 (exact for
    0 <= v < 2**23; every float32 from 2**23 on is an integer, even from 2**24 on).
    """
    if isinstance(e, np.ndarray):
        ef = np.asarray(e, dtype=np.float64)
        integral = np.isfinite(ef) & (np.floor(ef) == ef) | np.isinf(ef)
        odd = np.isfinite(ef) & integral & (np.mod(ef, 2.0) == 1.0)

        def mask(name: str, a: np.ndarray) -> Tensor:
            return cx.imp.constant_tensor(name, a.astype(np.float32), cx, False)

        et = cx.x(1)
        is_int = mask("pow_integral", integral) if not integral.all() else None
        is_odd = mask("pow_odd", odd) if odd.any() else None
        is_zero = mask("pow_zero", ef == 0) if (ef == 0).any() else None
    else:
        et = e
        ae = _abs(et)

        def integral_of(v: Tensor) -> Tensor:
            r = (v + ROUND_F32) - ROUND_F32
            exact = dsl.apply("equal", r, v)
            return dsl.maximum(exact, dsl.apply("greater_equal", v, dsl.const(ROUND_F32)))

        is_int = integral_of(ae)
        is_odd = is_int * (1.0 - integral_of(ae * 0.5))
        is_zero = dsl.apply("equal", et, dsl.const(0.0))
    ax = _abs(x)
    base = ax if is_int is None else dsl.apply("where", is_int, ax, x)
    y = dsl.exp(et * dsl.log(base))
    if is_odd is not None:
        neg = dsl.apply("less", x, dsl.const(0.0))
        y = y * (1.0 - 2.0 * (is_odd * neg))
    if is_zero is not None:
        y = dsl.apply("where", is_zero, dsl.const(1.0), y)  # 1 also where y is NaN
    return y


FLT_MAX = 3.4028234663852886e38  # numeric_limits<float>::max()


def _clip(cx: NodeContext) -> list[Value]:
    """Clip as the ONNX spec defines it: an absent bound is numeric_limits::lowest() / max(),
    so +-inf becomes +-FLT_MAX whatever bound is given (from opset 11 the bounds are inputs
    1 and 2; before, attributes min and max with those defaults); computed as ONNX Runtime's
    (std::max then std::min: x < lo ? lo : x, then hi < y ? hi : y), so a NaN input stays NaN
    and a NaN bound leaves x as it is. Before, an absent bound left +-inf unchanged and a NaN
    bound gave NaN everywhere."""
    x = cx.x(0)
    if cx.version < 11:
        lo_t = dsl.const(float(cx.attr("min", -FLT_MAX)))
        hi_t = dsl.const(float(cx.attr("max", FLT_MAX)))
    else:
        lo_t = cx.x(1) if cx.has(1) else dsl.const(-FLT_MAX)
        hi_t = cx.x(2) if cx.has(2) else dsl.const(FLT_MAX)
    y = dsl.apply("where", dsl.apply("less", x, lo_t), lo_t, x)
    return [dsl.apply("where", dsl.apply("less", hi_t, y), hi_t, y)]


def _variadic(f: Callable[[Tensor, Tensor], Tensor]) -> Callable[[NodeContext], list[Value]]:
    def convert(cx: NodeContext) -> list[Value]:
        xs = [cx.x(i) for i in range(cx.n_inputs) if cx.has(i)]
        if not xs:
            cx.fail("needs at least one input")
        out = xs[0]
        for y in xs[1:]:
            out = f(out, y)
        return [out if len(xs) > 1 else out * 1.0]

    return convert


def _div(cx: NodeContext) -> list[Value]:
    """Div; of integer types (the output's ONNX type), the quotient truncated toward zero as
    integer division in C and ONNX Runtime: q = trunc(x / y), then corrected by one where the
    float32 quotient rounded across an integer (the remainder x - q * y must have x's sign and
    be smaller than |y|): exact for whole numbers below 2**24. Integer division by zero is
    undefined in ONNX: a 0 in a constant divisor is refused at import (OnnxError), one in a
    divisor that moves integer graph inputs by every entry (_refuse_zero_divisor); a divisor
    computed otherwise gives the output type's largest / smallest value or 0 (0 / 0) after
    the output conversion. Floats: x / y, IEEE's inf and NaN at 0."""
    x, y = cx.x(0), cx.x(1)
    if cx.imp.elem_type(cx.node.output[0]) not in INTEGER_TYPES:
        return [x / y]
    _refuse_zero_divisor(cx, y)
    zero = dsl.const(0.0)
    t = x / y
    cx.imp.ranges[id(t)] = ("iquot", (x, y))
    q = dsl.apply(
        "where", dsl.apply("greater", zero, t), _integral_part(cx, t, 1), _integral_part(cx, t, -1)
    )
    m = x - q * y
    s = _sign_of(x) * _sign_of(y)
    q = q - dsl.apply("greater", zero, m * x) * s  # |q| one too large
    m = x - q * y
    q = q + dsl.apply("greater_equal", _abs(m), _abs(y)) * s  # |q| one too small
    out = _mask(cx, q)
    cx.imp.ranges[id(out)] = ("idiv", (x, y))
    return [out]


# The ops through which a divisor's elements are followed back to an input unchanged
# (movements but concat, whose parts are followed one by one, and pad; Expand's broadcast).
_DIVISOR_MOVES = (MOVEMENT_OPS - {"concat", "pad"}) | {"cast", "broadcast_to"}


def _refuse_zero_divisor(cx: NodeContext, y: Tensor) -> None:
    """Refuse a 0 in the divisor ``y`` of an integer Div or Mod, where ONNX leaves an integer
    division by zero undefined and ONNX Runtime raises. Its elements are followed back through
    movements (reshape, transpose, slice, reverse, cast, broadcast: Expand's x + 0, Concat's
    parts, x * 1): a constant that holds 0 is refused here (OnnxError naming the node, as
    ONNX Runtime refuses such a file when it loads it); an integer graph input gets
    ``index_nonzero``, codegen/checks.py's "divisor" check, so that every entry refuses a 0 in
    it naming the input and the row, with a note saying which node divides by it. Only the
    input's positions that reach the divisor are checked for 0 (``index_nonzero_at``:
    _divisor_positions; a Slice's left-out elements may hold 0, as in ONNX Runtime); the
    check also holds when the division is in an If branch that the data may not take
    (docs/onnx.md). A divisor computed otherwise (b + 1) is not checked."""
    sliced = False  # whether a Slice lies on the way to a leaf

    def leaves(t: Tensor) -> list[Tensor]:
        nonlocal sliced
        op = t.node.op
        if op in _DIVISOR_MOVES:
            sliced = sliced or op == "slice"
            return leaves(t.parents[0])
        if op == "concat":
            return [u for p in t.parents for u in leaves(p)]
        if _neutral_operand(t) is not None:  # x + 0, x * 1: broadcasts of x
            return leaves(t.parents[_neutral_operand(t) or 0])
        return [t]

    found = leaves(y)
    branch = "_branch/" in cx.node.output[0]  # run_graph's names inside an If's branch
    why = (
        f"{cx.node.op_type} {cx.node.output[0]!r} divides by {'a slice of it' if sliced else 'it'}"
    )
    why += " in a branch of an If" if branch else ""
    for t in found:
        v = _known_array(t)
        if v is not None and (v == 0).any():
            cx.fail(
                f"its divisor {cx.node.input[1]!r} holds 0 at {np.argwhere(v == 0)[0].tolist()}: "
                "an integer division by zero is undefined in ONNX (ONNX Runtime refuses the "
                "model when it loads it)"
            )
        if t.node.op != "input" or t.node.attr("index_rows") is None:
            continue
        at = _divisor_positions(t, y)
        extra = [
            text
            for text, on in (
                ("also the elements the slice leaves out", sliced and at is None),
                ("also where the If takes its other branch", branch),
            )
            if on
        ]
        note = why
        if extra:
            note += (
                f" (graphc checks {'every element of the input' if at is None else 'them'}, "
                f"{', and '.join(extra)}; ONNX Runtime only the divisors it divides by)"
            )
        old = t.node.attr("index_nonzero")
        if old:  # an earlier division: the union of the positions (None: all)
            old_at = t.node.attr("index_nonzero_at")
            at = (
                None if at is None or old_at is None else _runs(_positions(old_at) | _positions(at))
            )
            note = old if not isinstance(old, str) or note in old else f"{old}; {note}"
        attrs = {**dict(t.node.attrs), "index_nonzero": note, "index_nonzero_at": at}
        t.node = t.node.with_(attrs=attrs)


def _neutral_operand(t: Tensor) -> int | None:
    """k where ``t`` is parents[k] + 0 or parents[k] * 1 (a broadcast of it), else None."""
    if t.node.op in ("add", "mul") and len(t.parents) == 2:
        keep = 0.0 if t.node.op == "add" else 1.0
        for k in (0, 1):
            if _holds_only(t.parents[1 - k], keep):
                return k
    return None


def _divisor_positions(x: Tensor, y: Tensor) -> tuple[tuple[int, int], ...] | None:
    """The positions of input ``x``'s per-row elements (row-major) that divisor ``y`` reads,
    as sorted runs (start, stop), or None where that is every position or not known. Found by
    evaluating the movements between them (the ops' numpy references) on x's positions at a
    batch of 2: each element of y holds the position it was moved from, -1 for elements from
    elsewhere."""
    width = math.prod(int(d) for d in x.shape if d != "N")
    memo: dict[int, np.ndarray] = {}

    def shape(t: Tensor) -> tuple[int, ...]:
        return tuple(t.type.concrete(2))

    def where(t: Tensor) -> np.ndarray:
        if id(t) in memo:
            return memo[id(t)]
        op = t.node.op
        if t is x:
            out = np.arange(2 * width, dtype=np.float64).reshape(shape(t)) % width
        elif op in _DIVISOR_MOVES or op == "concat":
            attrs = {k: v for k, v in t.node.attrs if k != "name"}
            out = IR_OPS[op].evaluate(*(where(p) for p in t.parents), **attrs)
        elif _neutral_operand(t) is not None:
            out = np.broadcast_to(where(t.parents[_neutral_operand(t) or 0]), shape(t))
        else:
            out = np.full(shape(t), -1.0)
        memo[id(t)] = out = np.asarray(out, np.float64)
        return out

    try:
        got = where(y)
    except (GraphcError, ValueError, TypeError, IndexError, KeyError):
        # an op whose reference cannot run on positions: every position is checked
        return None
    if got.shape != shape(y):
        return None
    pos = {int(p) for p in np.unique(got) if p >= 0}
    return None if len(pos) == width else _runs(pos)


def _positions(runs: Sequence[Sequence[int]]) -> set[int]:
    return {p for a, b in runs for p in range(int(a), int(b))}


def _runs(pos: set[int]) -> tuple[tuple[int, int], ...]:
    """Sorted positions as runs (start, stop) of consecutive ones."""
    out: list[list[int]] = []
    for p in sorted(pos):
        if out and out[-1][1] == p:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return tuple((a, b) for a, b in out)


def _known_array(t: Tensor) -> np.ndarray | None:
    """The values of a constant tensor (a scalar const or a state holding a value), or None."""
    if t.node.op == "const":
        return np.asarray(float(t.node.attr("value")))
    if t.node.op == "state" and t.value is not None:
        return np.asarray(t.value)
    return None


def _holds_only(t: Tensor, v: float) -> bool:
    a = _known_array(t)
    return a is not None and a.size > 0 and bool((a == v).all())


def _sign_of(x: Tensor) -> Tensor:
    return dsl.apply("greater", x, dsl.const(0.0)) - dsl.apply("greater", dsl.const(0.0), x)


# elementwise operators (besides _UNARY's) that work row by row on merged rows (merged_rows)
ROW_WISE = frozenset(
    [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Where",
        "Clip",
        "Erf",
        "Reciprocal",
        "Elu",
        "Selu",
        "LeakyRelu",
        "PRelu",
        "Softsign",
        "HardSigmoid",
        "HardSwish",
        "Gelu",
        "Mish",
        "Celu",
        "ThresholdedRelu",
        "Identity",
        "Cast",
        "CastLike",
        "Dropout",
        "Sign",
        "Floor",
        "Ceil",
        "Round",
        "Not",
        "And",
        "Or",
        "Xor",
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "IsNaN",
        "IsInf",
        "Shrink",
        "Sin",
        "Cos",
        "Tan",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "Asin",
        "Acos",
    ]
)


def _compare(op: str, swap_of: str | None = None) -> Callable[[NodeContext], list[Value]]:
    """A comparison as a 0/1 mask: graphc's ``op``, or ``swap_of`` with operands swapped."""

    def convert(cx: NodeContext) -> list[Value]:
        a, b = cx.x(0), cx.x(1)
        if swap_of is not None and not native(op):
            t = dsl.apply(swap_of, b, a)
        else:
            t = dsl.apply(op, a, b)
        cx.imp.integral.add(id(t))
        return [t]

    return convert


def _equal(cx: NodeContext) -> list[Value]:
    a, b = cx.x(0), cx.x(1)
    if native("equal"):
        t = dsl.apply("equal", a, b)
    else:
        t = dsl.apply("greater_equal", a, b) * dsl.apply("greater_equal", b, a)
    cx.imp.integral.add(id(t))
    return [t]


def _where(cx: NodeContext) -> list[Value]:
    # c * x + (1 - c) * y with c a 0/1 mask; an Inf or NaN in the branch not taken leaks into
    # the result (inf * 0), which is where this differs from a select.
    c, x, y = cx.x(0), cx.x(1), cx.x(2)
    if native("where"):
        return [dsl.apply("where", c, x, y)]
    return [c * x + (1.0 - c) * y]


# --- linear algebra


def _gemm(cx: NodeContext) -> list[Value]:
    a, b = cx.x(0), cx.x(1)
    alpha, beta = float(cx.attr("alpha", 1.0)), float(cx.attr("beta", 1.0))
    if len(a.shape) > 2:  # rows merged with N (Importer.merged_rows): [N, T, K] @ B
        if cx.attr("transB", 0):
            b = dsl.transpose(b)
        y = dsl.matmul(a, b)
    else:
        y = dsl.matmul(
            a, b, transpose_a=bool(cx.attr("transA", 0)), transpose_b=bool(cx.attr("transB", 0))
        )
    if alpha != 1.0:
        y = y * alpha
    if cx.has(2) and beta != 0.0:
        c = cx.x(2)
        y = y + (c if beta == 1.0 else c * beta)
    return [y]


def _matmul(cx: NodeContext) -> list[Value]:
    """MatMul with numpy's rules: matrices, stacks of them (broadcast), and 1-D operands (a
    1-D a is a row [1, K], a 1-D b a column [K, 1], whose axis the result then drops; two 1-D
    operands give their dot product, a rank-0 value, as numpy.matmul and ONNX Runtime do).
    A dot product over the batch N ([N] with [N]) would sum across samples: refused."""
    a, b = cx.x(0), cx.x(1)
    ra, rb = len(a.shape), len(b.shape)
    if ra == 1 and rb == 1:
        if "N" in a.shape or "N" in b.shape:
            cx.fail(
                f"MatMul of {_fmt(a.shape)} and {_fmt(b.shape)}: the dot product of two 1-D "
                "values over the batch dimension N sums across samples; graphc keeps samples "
                "apart"
            )
        if a.shape != b.shape:
            cx.fail(f"MatMul of {_fmt(a.shape)} and {_fmt(b.shape)}: the lengths differ")
        k = a.shape[0]
        y = dsl.matmul(_reshape(cx, a, (1, k)), _reshape(cx, b, (k, 1)))
        return [_reshape(cx, y, ())]
    if rb == 1:
        y = dsl.matmul(a, _reshape(cx, b, (b.shape[0], 1)))
        return [_reshape(cx, y, tuple(a.shape[:-1]))]
    if ra == 1:
        y = dsl.matmul(_reshape(cx, a, (1, a.shape[0])), b)
        return [_reshape(cx, y, (*b.shape[:-2], b.shape[-1]))]
    return [dsl.matmul(a, b)]


def _transpose(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    perm = cx.attr("perm")
    r = len(x.shape)
    if r == 2 and "N" not in x.shape and (perm is None or list(perm) == [1, 0]):
        return [dsl.transpose(x)]
    perm = list(range(r))[::-1] if perm is None else [_axis(cx, int(a), r) for a in perm]
    if sorted(perm) != list(range(r)):
        cx.fail(f"perm={perm} is not a permutation of the {r} axes")
    if perm == list(range(r)):
        return [x * 1.0]
    return [permute(x, perm)]


def _fold_transpose(cx: NodeContext, args: list) -> list:
    perm = cx.attr("perm")
    return [np.transpose(args[0], perm)]


# --- softmax


def _softmax_like(log: bool) -> Callable[[NodeContext], list[Value]]:
    """Softmax / LogSoftmax over ``axis`` (opset >= 13) or over the 2-D coercion's columns,
    every axis from ``axis`` on (opset < 13). graphc's row-wise kernel when the value reshapes
    to [rows, cols] without merging N with other axes; otherwise (e.g. the last axis of
    [N,3,4]) composed per the definition with the max subtracted first (stable):
    y = exp(x - m) / sum(exp(x - m)), log y = (x - m) - log(sum(exp(x - m)))."""

    def convert(cx: NodeContext) -> list[Value]:
        x = cx.x(0)
        r = len(x.shape)
        legacy = cx.version < 13  # opset < 13: coerced to 2-D at ``axis`` (default 1)
        axis = _axis(cx, int(cx.attr("axis", 1 if legacy else -1)), r)
        axes = tuple(range(axis, r)) if legacy else (axis,)
        if any(x.shape[a] == "N" for a in axes):
            cx.fail(
                f"axis={axis} on {_fmt(x.shape)} normalizes over the batch dimension N "
                "(across samples); graphc keeps samples apart"
            )
        if axes[-1] == r - 1 and (axis == 0 or axis == 1 or "N" not in x.shape):
            rows, cols = x.shape[:axis], x.shape[axis:]
            two = (rows[0] if rows == ("N",) else math.prod(rows), math.prod(cols))
            if log and native("log_softmax"):
                y = dsl.apply("log_softmax", _reshape(cx, x, two))
            else:
                y = dsl.softmax(_reshape(cx, x, two))
                if log:
                    y = dsl.log(y)  # log(softmax): -inf below about -87 (without log_softmax)
            return [_reshape(cx, y, x.shape)]
        d = x - dsl.apply("max", x, axes=axes, keepdims=True)
        e = dsl.exp(d)
        s = dsl.sum(e, axes, keepdims=True)
        return [d - dsl.log(s) if log else e / s]

    return convert


# --- shapes


def _shape_array(cx: NodeContext, shape: tuple) -> np.ndarray:
    start, end = cx.attr("start", 0), cx.attr("end", None)
    dims = list(shape)[slice(start, end)]
    if any(isinstance(d, str) for d in dims):  # "N", or "N*m" (a layout view's merged axis)
        return np.array(dims, dtype=object)
    return np.array(dims, dtype=np.int64)


def _shape(cx: NodeContext) -> list[Value]:
    v = cx.value(0)
    if isinstance(v, Tensor) and id(v) in cx.imp.merged:
        cx.fail(
            f"the shape of a value whose rows merge N with {_fmt(v.shape[1 : cx.imp.merged[id(v)]])}"
            " (a Reshape to [-1, ...]) is N times a fixed size; graphc folds shapes holding N only"
        )
    return [_shape_array(cx, _shape_of(v))]


def _fold_shape(cx: NodeContext, args: list) -> list:
    return [_shape_array(cx, args[0].shape)]


def _flatten(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    r = len(x.shape)
    axis = int(cx.attr("axis", 1))
    axis = axis + r if axis < 0 else axis
    if not 0 <= axis <= r:
        cx.fail(f"axis {axis} is out of range for rank {r}")
    head, tail = x.shape[:axis], x.shape[axis:]
    if "N" in head[1:] or "N" in tail or (head[:1] == ("N",) and math.prod(head[1:]) != 1):
        cx.fail(f"axis={axis} on {_fmt(x.shape)} would merge the batch dimension N")
    first = "N" if head[:1] == ("N",) else math.prod(head)
    return [_reshape(cx, x, (first, math.prod(tail)))]


def _fold_flatten(cx: NodeContext, args: list) -> list:
    a = args[0]
    axis = int(cx.attr("axis", 1))
    axis = axis + a.ndim if axis < 0 else axis
    return [a.reshape(math.prod(a.shape[:axis]), -1)]


def _reshape_rule(cx: NodeContext) -> list[Value]:
    """Reshape keeping N first. A Reshape that merges N with the axes after it, to [-1, c...]
    (tf2onnx's Tensordot: [N, T, C] -> [-1, C]) or to [N*m, c...] (a product of the batch axes
    before a batched MatMul, Keras's attention heads), keeps the value as [N, R, c...] (R each
    sample's rows: the same elements in the same order) marked merged, so that row-wise nodes
    may follow (Importer.merged_rows); a Reshape of merged rows to a shape led by N is the
    reshape of the unmerged value."""
    x = cx.x(0)
    target = cx.c(1)
    allow = bool(cx.attr("allowzero", 0))
    k = cx.imp.merged.get(id(x))
    vals = target.tolist() if target.ndim == 1 else []
    ones = 0  # [1, ..., 1, -1, c...]: unit axes before the merged rows (tf2onnx after a Transpose)
    if target.dtype != object and k is None and x.shape[:1] == ("N",):
        n1 = next((i for i, d in enumerate(vals) if d != 1), len(vals))
        if 0 < n1 < len(vals) and vals[n1] == -1:
            rest = [x.shape[i] if d == 0 and not allow else d for i, d in enumerate(vals)][n1 + 1 :]
            if "N" not in rest:
                vals, ones = [-1, *rest], n1
                target = np.array(vals, dtype=np.int64)
    lead = vals[0] if vals else None
    m = _sym_multiple(lead)
    if isinstance(lead, str) and m is None:
        cx.fail(f"reshape to {vals}: a symbolic size graphc does not have")
    if m == 1:  # led by N: back to N's own axis, or an ordinary reshape
        shape = _target_shape(cx, x.shape, target, allow)
        y = _reshape(cx, x, shape)
        return [dsl.apply("reshape", x, shape=x.type.shape) if y is x and k else y]
    if m is None and not (lead == -1 and x.shape[:1] == ("N",) and target.dtype != object):
        if k is not None:
            cx.fail(f"reshape of merged rows to {vals}: N must come first")
        return [_reshape(cx, x, _target_shape(cx, x.shape, target, allow))]
    if m is None and k is None and not ones:
        try:
            return [_reshape(cx, x, _target_shape(cx, x.shape, target, allow))]
        except OnnxError:
            pass  # merges N with other axes: below
    tail = vals[1:]
    if "N" in x.shape[1:] or any(isinstance(d, str) or d == 0 or d < -1 for d in tail):
        cx.fail(
            f"reshape of {_fmt(x.shape)} to {vals}: graphc keeps N as the first dimension or "
            "merges it with the axes after it ([-1, c...] or [N*m, c...])"
        )
    tail = [int(d) for d in tail]
    per_sample = math.prod(x.shape[1:])
    known = math.prod(d for d in tail if d != -1)
    if m is None:  # [-1, c...]: each sample's rows
        if -1 in tail or per_sample % known:
            cx.fail(
                f"reshape of {_fmt(x.shape)} to {vals} would merge the batch dimension N with "
                f"part of a sample ({per_sample} values in rows of {known}); graphc keeps N as "
                "the first dimension"
            )
        m = per_sample // known
    elif tail.count(-1) > 1 or (
        per_sample % (m * known) if -1 in tail else per_sample != m * known
    ):
        cx.fail(f"cannot reshape {_fmt(x.shape)} to {vals}")
    elif -1 in tail:
        tail[tail.index(-1)] = per_sample // (m * known)
    if ones and m == 1:
        cx.fail(f"reshape of {_fmt(x.shape)} to {target.tolist()} puts N after an axis")
    y = _reshape(cx, x, ("N", *tail) if m == 1 else ("N", m, *tail))
    if y is x:
        y = dsl.apply("reshape", x, shape=x.type.shape)  # its own value
    if m > 1:
        cx.imp.merged[id(y)] = 2
        if k is None:
            cx.imp.merged_source[id(y)] = cx.node.input[0]
    if ones:
        cx.imp.lead_ones[id(y)] = ones
    return [y]


def _fold_reshape(cx: NodeContext, args: list) -> list:
    return [_numpy_reshape(cx, args[0], args[1], bool(cx.attr("allowzero", 0)))]


def _axes_arg(cx: NodeContext, attr_until: int) -> list[int] | None:
    """``axes`` from the attribute (opset < attr_until) or the second input."""
    if cx.version < attr_until:
        axes = cx.attr("axes")
    else:
        axes = cx.c(1).tolist() if cx.has(1) else None
    return None if axes is None else [int(a) for a in np.ravel(axes)]


def _squeezed(cx: NodeContext, shape: tuple, axes: list[int] | None) -> tuple:
    r = len(shape)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = [_axis(cx, a, r) for a in axes]
    for a in axes:
        if shape[a] != 1:
            cx.fail(f"cannot squeeze axis {a} of size {shape[a]}")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _unsqueezed(cx: NodeContext, shape: tuple, axes: list[int] | None) -> tuple:
    if axes is None:
        cx.fail("Unsqueeze needs axes")
    r = len(shape) + len(axes)
    axes = sorted(_axis(cx, a, r) for a in axes)
    out = list(shape)
    for a in axes:
        out.insert(a, 1)
    return tuple(out)


def _squeeze(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    ones = cx.imp.lead_ones.get(id(x))
    if ones:  # [1, N*R, c...] -> [N*R, c...]: the unit axes before merged rows only
        rank = len(x.shape) - cx.imp.merged[id(x)] + 1 + ones
        axes = _axes_arg(cx, 13)
        if axes is None or sorted(_axis(cx, a, rank) for a in axes) != list(range(ones)):
            cx.fail(f"squeeze of axes {axes} of merged rows led by {ones} unit axes")
        y = dsl.apply("reshape", x, shape=x.type.shape)
        cx.imp.merged[id(y)] = cx.imp.merged[id(x)]
        return [y]
    return [_reshape(cx, x, _squeezed(cx, x.shape, _axes_arg(cx, 13)))]


def _unsqueeze(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    shape = _unsqueezed(cx, x.shape, _axes_arg(cx, 13))
    if "N" in shape and shape.index("N") != 0:
        cx.fail(f"unsqueeze of {_fmt(x.shape)} to {_fmt(shape)} moves the batch dimension N")
    return [_reshape(cx, x, shape)]


def _fold_squeeze(cx: NodeContext, args: list) -> list:
    return [args[0].reshape(_squeezed(cx, args[0].shape, _axes_arg(cx, 13)))]


def _fold_unsqueeze(cx: NodeContext, args: list) -> list:
    return [args[0].reshape(_unsqueezed(cx, args[0].shape, _axes_arg(cx, 13)))]


def _concat(cx: NodeContext) -> list[Value]:
    """Concat along the last axis of 2-D values, as a sum of products with 0/1 selection
    matrices (exact: each output element is one input element times 1 plus zeros)."""
    xs = [  # size-0 parts (an empty Split output) add nothing
        cx.x(i)
        for i in range(cx.n_inputs)
        if cx.has(i) and not (isinstance(cx.value(i), np.ndarray) and cx.value(i).size == 0)
    ]
    if not xs:
        cx.fail("every input is empty")
    r = len(xs[0].shape)
    axis = _axis(cx, int(cx.attr("axis")), r)
    if native("concat"):
        return [dsl.apply("concat", *xs, axis=axis) if len(xs) > 1 else xs[0] * 1.0]
    if r != 2 or axis != 1 or any(len(x.shape) != 2 for x in xs):
        cx.fail(
            f"Concat on axis {axis} of {', '.join(_fmt(x.shape) for x in xs)}: graphc joins "
            "2-D values along their last axis only"
        )
    total = sum(int(x.shape[1]) for x in xs)
    out, start = None, 0
    for x in xs:
        k = int(x.shape[1])
        sel = np.zeros((k, total), np.float32)
        sel[np.arange(k), start + np.arange(k)] = 1.0
        start += k
        term = dsl.matmul(x, cx.imp.constant_tensor(f"concat_sel_{k}", sel, cx, False))
        out = term if out is None else out + term
    return [out]


def _fold_concat(cx: NodeContext, args: list) -> list:
    arrs = [a for a in args if a is not None]
    axis = int(cx.attr("axis"))
    dt = object if any(a.dtype == object for a in arrs) else None
    return [np.concatenate([a.astype(dt) if dt else a for a in arrs], axis=axis)]


def _fold_gather(cx: NodeContext, args: list) -> list:
    data, idx = args[0], args[1]
    axis = _axis(cx, int(cx.attr("axis", 0)), data.ndim)
    n = data.shape[axis]
    idx = np.asarray(idx).astype(np.int64)
    if np.any((idx < -n) | (idx >= n)):
        cx.fail(f"index out of range [-{n}, {n})")
    out = np.take(data, np.where(idx < 0, idx + n, idx), axis=axis)
    return [np.asarray(out, dtype=data.dtype)]  # a 0-d object array stays an array


def _same_lengths(cx: NodeContext, starts: Any, ends: Any, axes: Any, steps: Any) -> None:
    """Slice's starts, ends, axes and steps must be as long as each other (ONNX Runtime
    refuses others; zip() would silently drop the extra entries)."""
    lengths = [len(v) for v in (starts, ends, axes, steps)]
    if len(set(lengths)) != 1:
        cx.fail(
            f"starts, ends, axes and steps have {', '.join(map(str, lengths))} entries; "
            "Slice needs as many of each"
        )


def _fold_slice(cx: NodeContext, args: list) -> list:
    data = args[0]
    if cx.version < 10:
        starts, ends, axes = cx.attr("starts"), cx.attr("ends"), cx.attr("axes")
        steps = None
    else:
        starts, ends = args[1].tolist(), args[2].tolist()
        axes = args[3].tolist() if len(args) > 3 and args[3] is not None else None
        steps = args[4].tolist() if len(args) > 4 and args[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    _same_lengths(cx, starts, ends, axes, steps)
    sl = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            cx.fail("slice step 0")
        sl[_axis(cx, int(a), data.ndim)] = slice(int(s), int(e), int(st))
    return [data[tuple(sl)]]


MAX_TAKEN = 4096  # the most elements one _take picks along an axis (one slice per run)


def _take(cx: NodeContext, x: Tensor, axis: int, idx: Sequence[int]) -> Tensor:
    """x's elements ``idx`` (in range [0, size), any order, repeats allowed) along the
    non-batch ``axis``, as numpy's ``np.take(x, idx, axis)`` for a 1-D ``idx``: graphc's slice
    for each run of consecutive indices, joined by concat. Exact (values are moved, never
    computed, so NaN, inf and -0.0 pass unchanged); the gradient of a repeated index is the
    sum of its slices' gradients (autodiff adds them). A run of indices going down (torch's
    flip, a Slice with a negative step) is the run going up, reversed (one ``reverse``, not a
    slice per element: a flip of 1,000 elements took a 56 s compile)."""
    size = x.shape[axis]
    if size == "N":
        cx.fail(f"picking elements along the batch dimension N of {_fmt(x.shape)} is not supported")
    idx = [int(i) for i in idx]
    if not idx:
        cx.fail(
            f"an empty selection along axis {axis} of {_fmt(x.shape)}: graphc has no "
            "dimension of size 0"
        )
    if len(idx) > MAX_TAKEN:
        cx.fail(
            f"{len(idx)} elements picked along axis {axis}; graphc composes at most {MAX_TAKEN}"
        )
    if idx == list(range(int(size))):
        return x
    # runs of a repeated index (a nearest or linear upscale by an integer factor picks each
    # element 2, 3, ... times: [0, 0, 1, 1, 2, 2, ...]): the distinct indices of the runs that
    # repeat equally often, each copied r times by a concat along a new axis (one slice per
    # element before: a 2x bilinear upsampling of 56 x 56 compiled in 62 s)
    vals: list[int] = []
    reps: list[int] = []
    for i in idx:
        if vals and vals[-1] == i:
            reps[-1] += 1
        else:
            vals.append(i)
            reps.append(1)
    if max(reps) > 1 and len(vals) < len(idx) // 2 + 2:
        pieces: list[Tensor] = []
        j = 0
        while j < len(vals):
            k = j
            while k + 1 < len(vals) and reps[k + 1] == reps[j]:
                k += 1
            sub = _take(cx, x, axis, vals[j : k + 1])
            if reps[j] > 1:
                shape = tuple(sub.shape)
                col = _reshape(cx, sub, (*shape[: axis + 1], 1, *shape[axis + 1 :]))
                rep = dsl.apply("concat", *([col] * reps[j]), axis=axis + 1)
                sub = _reshape(
                    cx, rep, (*shape[:axis], int(shape[axis]) * reps[j], *shape[axis + 1 :])
                )
            pieces.append(sub)
            j = k + 1
        return dsl.apply("concat", *pieces, axis=axis) if len(pieces) > 1 else pieces[0]
    periodic = _periodic_indices(idx) if len(idx) >= 16 else None
    if periodic is not None:
        # a rational resize (1.5x: [0, 0, 1, 2, 2, 3, ...]) repeats a pattern of P picks
        # shifted by Q: each of the P phases is one strided pick, interleaved by a concat along
        # a new axis and a reshape (one slice per element before)
        start, end, period, shift = periodic
        m = (end - start) // period
        phases = []
        for ph in range(period):
            first = idx[start + ph]
            sub = _take(cx, x, axis, [first + k * shift for k in range(m)])
            shape = tuple(sub.shape)
            phases.append(_reshape(cx, sub, (*shape[: axis + 1], 1, *shape[axis + 1 :])))
        woven = dsl.apply("concat", *phases, axis=axis + 1)
        shape = tuple(x.shape)
        middle = _reshape(cx, woven, (*shape[:axis], m * period, *shape[axis + 1 :]))
        pieces = [_take(cx, x, axis, idx[:start])] if start else []
        pieces.append(middle)
        if end < len(idx):
            pieces.append(_take(cx, x, axis, idx[end:]))
        return dsl.apply("concat", *pieces, axis=axis) if len(pieces) > 1 else pieces[0]
    # segments of equal steps: a run of consecutive indices is one slice; a longer stride
    # (every s-th element: a strided Slice, a pooling window's offset) is one slice, a reshape
    # to [..., m, s, ...] and the first column, instead of a slice per element (a stride of 2
    # over 1000 elements composed 500 slices per offset: a 47 s compile for a MaxPool)
    segments: list[tuple[int, int, int]] = []  # (first index, step, count)
    for i in idx:
        if segments:
            a, st, n = segments[-1]
            if n == 1 and i != a:  # a step up or down (down: a flip, Slice's negative steps)
                segments[-1] = (a, i - a, 2)
                continue
            if n > 1 and i == a + st * n:
                segments[-1] = (a, st, n + 1)
                continue
        segments.append((i, 1, 1))
    parts: list[Tensor] = []
    for a, st, n in segments:
        if st < 0 and n >= 3:  # a run downwards: the same elements upwards, then reversed
            up = _take(cx, x, axis, range(a + st * (n - 1), a + 1, -st))
            parts.append(dsl.apply("reverse", up, axes=(axis,)))
            continue
        if st == 1 or n >= 3:  # a run, or every st-th element: one strided slice
            parts.append(strided_slice(x, axis, a, st, n))
        else:  # two elements apart (too short to gain from a reshape): a slice each
            parts += [strided_slice(x, axis, a + j * st, 1, 1) for j in range(n)]
    return dsl.apply("concat", *parts, axis=axis) if len(parts) > 1 else parts[0]


def _periodic_indices(idx: list[int]) -> tuple[int, int, int, int] | None:
    """(start, end, P, Q) where idx[start:end] repeats a pattern of P >= 2 indices shifted by
    Q each time (idx[i + P] = idx[i] + Q), covering at least 3 periods and half of idx, the
    widest such run with start < P + 2; None if there is none. Checked by rebuilding the
    indices, so a caller may rely on idx[start + k * P + j] == idx[start + j] + k * Q."""
    n = len(idx)
    if len({idx[i + 1] - idx[i] for i in range(n - 1)}) <= 1:
        return None  # one arithmetic progression: _take's strided slice
    best: tuple[int, int, int, int] | None = None
    for period in range(2, min(33, n // 3 + 1)):
        for start in range(min(period + 2, n - 3 * period + 1)):
            shift = idx[start + period] - idx[start]
            end = start + period
            while end < n and idx[end] == idx[end - period] + shift:
                end += 1
            end = start + (end - start) // period * period
            if (end - start) // period >= 3 and (best is None or end - start > best[1] - best[0]):
                best = (start, end, period, shift)
    if best is None or best[1] - best[0] < n // 2:
        return None
    start, end, period, shift = best
    rebuilt = [
        idx[start + j] + k * shift for k in range((end - start) // period) for j in range(period)
    ]
    return best if rebuilt == idx[start:end] else None


def _gather(cx: NodeContext) -> list[Value]:
    """Gather of a computed value with indices known at import time (x[:, 0], a fixed set of
    channels): np.take along a non-batch ``axis`` (negative indices count from the end), by
    _take; the index array's shape replaces the axis (a scalar index removes it)."""
    x = cx.x(0)
    r = len(x.shape)
    axis = _axis(cx, int(cx.attr("axis", 0)), r)
    if isinstance(cx.value(1), Tensor):
        return [_lookup(cx, x, axis, cx.value(1))]
    idx = np.asarray(cx.c(1))
    if idx.dtype.kind not in "iu":
        cx.fail(f"indices of type {idx.dtype}: Gather takes int32 or int64 indices")
    size = x.shape[axis]
    if size == "N":
        cx.fail(f"gathering along the batch dimension N of {_fmt(x.shape)} is not supported")
    flat = idx.astype(np.int64).ravel()
    bad = flat[(flat < -size) | (flat >= size)]
    if bad.size:
        cx.fail(
            f"index {int(bad[0])} is out of range [-{size}, {size}) for axis {axis} of "
            f"{_fmt(x.shape)}"
        )
    y = _take(cx, x, axis, np.where(flat < 0, flat + size, flat).tolist())
    return [_reshape(cx, y, (*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))]


F32 = np.float32


def _resize_coordinates(
    ct: str, out_len: int, in_len: int, scale: Any, roi: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """The source coordinate of each of ``out_len`` output positions of a Resize along one axis
    (ONNX's coordinate_transformation_mode formulas), in float32 and in ONNX Runtime's order of
    operations, so that a coordinate on a rounding boundary rounds as it does there (the float64
    arithmetic of onnx.reference picks the neighbour in some downscales, and align_corners there
    divides by the unrounded output length scale * in_len)."""
    i = np.arange(out_len, dtype=F32)
    s, lo, li = F32(scale), F32(out_len), F32(in_len)
    half = F32(0.5)
    if ct == "asymmetric":
        return i / s
    if ct == "pytorch_half_pixel":
        return (i + half) / s - half if out_len > 1 else np.zeros(out_len, F32)
    if ct == "tf_half_pixel_for_nn":
        return (i + half) / s
    if ct == "align_corners":
        return i * (li - F32(1)) / (lo - F32(1)) if out_len > 1 else np.zeros(out_len, F32)
    if ct == "tf_crop_and_resize":  # the region roi = (start, end) of the axis, in [0, 1]
        r0, r1 = F32(roi[0]), F32(roi[1])
        if out_len == 1:
            return np.array([0.5 * float(r0 + r1) * float(li - F32(1))], F32)
        return r0 * (li - F32(1)) + (i * (r1 - r0) * (li - F32(1))) / (lo - F32(1))
    if ct == "half_pixel_symmetric":  # ONNX Runtime computes the last step in double
        adjustment = lo / (s * li)
        offset = float((li / F32(2)) * (F32(1) - adjustment))
        return (offset + (i.astype(np.float64) + 0.5) / float(s) - 0.5).astype(F32)
    return (i + half) / s - half  # half_pixel (the default)


def _nearest_index(c: np.ndarray, nearest_mode: str, downsample: bool) -> np.ndarray:
    """Rounding of Resize's nearest_mode (ONNX Runtime's: "simple", Resize-10 and Upsample,
    truncates, or takes the ceiling when downsampling)."""
    if nearest_mode == "simple":
        return np.ceil(c) if downsample else np.trunc(c)
    if nearest_mode == "round_prefer_ceil":  # half away from zero, as C's round
        return np.sign(c) * np.floor(np.abs(c) + F32(0.5))
    if nearest_mode == "floor":
        return np.floor(c)
    if nearest_mode == "ceil":
        return np.ceil(c)
    halfway = c == np.trunc(c) + F32(0.5)  # round_prefer_floor: halves go down
    return np.where(halfway, np.floor(c), np.sign(c) * np.floor(np.abs(c) + F32(0.5)))


def _cubic_coefficients(s: np.ndarray, a: Any) -> np.ndarray:
    """Keys' cubic convolution weights of the four taps floor(c) - 1 .. floor(c) + 2 for the
    fractions ``s`` = c - floor(c) (R. Keys, "Cubic convolution interpolation for digital image
    processing", IEEE Trans. ASSP 29(6), 1981, with ONNX's cubic_coeff_a as Keys' a), [len, 4]."""
    a, t = F32(a), np.abs(s).astype(F32)
    one, two = F32(1), F32(2)

    def outer(d: np.ndarray) -> np.ndarray:  # 1 < |d| < 2
        return ((a * d - F32(5) * a) * d + F32(8) * a) * d - F32(4) * a

    def inner(d: np.ndarray) -> np.ndarray:  # |d| <= 1
        return ((a + two) * d - (a + F32(3))) * d * d + one

    return np.stack([outer(t + one), inner(t), inner(one - t), outer(two - t)], axis=1)


def _resize_taps(
    cx: NodeContext, mode: str, in_len: int, out_len: int, scale: Any, roi: Any
) -> tuple[list, np.ndarray]:
    """How each output position of a Resize along one axis is made from the input: a list of
    taps (indices into the axis, one per output position; float32 weights, or None for a plain
    copy), the output being the sum over the taps of x[indices] * weights. Nearest: one tap;
    linear: two (the coordinate clamped to the axis, ONNX Runtime's weights, 1/2 each where both
    taps are the last element); cubic: four (indices clamped to the axis, or with
    exclude_outside the taps outside it weighted 0 and the rest renormalized). Also the output
    positions whose coordinate falls outside the axis under tf_crop_and_resize (they take
    extrapolation_value; all False otherwise)."""
    ct = (
        "asymmetric" if cx.version < 11 else cx.attr("coordinate_transformation_mode", "half_pixel")
    )
    c = _resize_coordinates(ct, out_len, in_len, scale, roi)
    last = in_len - 1
    outside = (c < 0) | (c > F32(last)) if ct == "tf_crop_and_resize" else np.zeros(out_len, bool)
    if mode == "nearest":
        nm = "simple" if cx.version < 11 else cx.attr("nearest_mode", "round_prefer_floor")
        idx = np.clip(_nearest_index(c, nm, F32(scale) < 1), 0, last).astype(np.int64)
        return [(idx.tolist(), None)], outside
    if mode == "linear" and not (cx.version >= 18 and cx.attr("antialias", 0)):
        c = np.clip(c, F32(0), F32(last))
        i1 = np.minimum(c.astype(np.int64), last)
        i2 = np.minimum(i1 + 1, last)
        d1, d2 = np.abs(c - i1.astype(F32)), np.abs(c - i2.astype(F32))
        same = i1 == i2
        d1, d2 = np.where(same, F32(0.5), d1), np.where(same, F32(0.5), d2)
        return [(i1.tolist(), d2.astype(F32)), (i2.tolist(), d1.astype(F32))], outside
    if cx.version >= 18 and cx.attr("antialias", 0):
        return _antialias_taps(cx, mode, in_len, c, F32(scale)), outside
    base = np.floor(c).astype(np.int64)
    w = _cubic_coefficients(c - np.floor(c), cx.attr("cubic_coeff_a", -0.75))
    taps = base[:, None] + np.arange(-1, 3)[None, :]
    if cx.attr("exclude_outside", 0):
        w = np.where((taps < 0) | (taps > last), F32(0), w)
        w = w / w.sum(axis=1, keepdims=True, dtype=F32)
    taps = np.clip(taps, 0, last)
    return [(taps[:, k].tolist(), w[:, k].astype(F32)) for k in range(4)], outside


def _antialias_taps(cx: NodeContext, mode: str, in_len: int, c: np.ndarray, rs: Any) -> list:
    """Resize's antialias=1 (opset 18; linear and cubic): each output position a weighted
    window of the input, as ONNX Runtime's (Pillow's resampling): the filter (the triangle
    1 - |d|, or Keys' cubic with cubic_coeff_a) stretched by 1 / scale when downscaling,
    centred on the coordinate + 1/2, over the inputs floor(centre -+ support + 1/2); weights
    outside the input either dropped (exclude_outside=1) or added to the edge element; the
    window normalized to sum 1. Returned as _resize_taps' taps (one per window place)."""
    out_len = len(c)
    a = F32(cx.attr("cubic_coeff_a", -0.75))
    exclude = bool(cx.attr("exclude_outside", 0))

    def filt(d: F32) -> F32:
        d = abs(d)
        if mode == "linear":
            return F32(1) - d if d < 1 else F32(0)
        if d < 1:
            return ((a + F32(2)) * d - (a + F32(3))) * d * d + F32(1)
        if d < 2:
            return (((d - F32(5)) * d + F32(8)) * d - F32(4)) * a
        return F32(0)

    inv = F32(1) / rs  # rs: the axis's scale
    support = F32(2 if mode == "linear" else 4) * F32(0.5)
    if inv >= 1:
        support = support * inv
    window = math.ceil(support) * 2 + 1
    step = F32(1) / inv if inv >= 1 else F32(1)
    rows: list[tuple[int, list[float]]] = []
    for i in range(out_len):
        centre = F32(0.5) + c[i]
        lo = int(np.floor(centre - support + F32(0.5)))
        hi = int(np.floor(centre + support + F32(0.5)))
        hi = lo + min(max(hi - lo, 0), window)
        lo_cut, hi_cut = min(max(lo, 0), in_len), min(max(hi, 0), in_len)
        first, end = (lo_cut, hi_cut) if exclude else (lo, hi)
        count = end - first
        buf = [filt((F32(k + first) - centre + F32(0.5)) * step) for k in range(count)]
        total = F32(0)
        for w in buf:
            total += w
        if not exclude and lo_cut < hi_cut:
            neg = min(max(-first, 0), count - 1)
            for k in range(neg):
                buf[neg] += buf[k]
            past = min(max(count + first - in_len, 0), count - 1)
            for k in range(count - past, count):
                buf[count - past - 1] += buf[k]
            if neg or past:
                buf = buf[neg:] + buf[:neg]
        norm = F32(1) / total if total != 0 else F32(1)
        rows.append((lo_cut, [F32(buf[k]) * norm for k in range(hi_cut - lo_cut)]))
    width = max(len(w) for _, w in rows)
    taps = []
    for k in range(width):
        idx = [start + k if k < len(w) else min(start, in_len - 1) for start, w in rows]
        wk = np.array([w[k] if k < len(w) else 0.0 for _, w in rows], F32)
        taps.append((idx, wk))
    return taps


def _resize_sizes(cx: NodeContext, x: Tensor, axes: list[int], given: Any, sizes: bool) -> list:
    """(axis, input length, output length, scale) of every axis a Resize changes, as ONNX
    Runtime derives them: from scales, output = trunc(float32(scale) * length); from sizes,
    scale = size / length in float32, after keep_aspect_ratio_policy (not_larger / not_smaller:
    the smallest / largest of the axes' scales for all of them, output = round(scale * length)).
    An axis whose scale is 1 keeps its elements (ONNX Runtime skips its transformation)."""
    plan = []
    for a, v in zip(axes, np.ravel(given).tolist()):
        length = x.shape[a]
        if length == "N":
            if (sizes and v == "N") or (not sizes and float(v) == 1.0):
                continue
            cx.fail(f"resizing the batch dimension N of {_fmt(x.shape)} is not supported")
        if not sizes and not float(v) > 0:
            cx.fail(f"scale {v} of axis {a}: scales must be above 0")
        if sizes and not (isinstance(v, (int, np.integer)) and int(v) >= 1):
            cx.fail(f"size {v} of axis {a}: graphc has no dimension of size 0")
        if sizes:
            plan.append([a, int(length), int(v), F32(int(v)) / F32(int(length))])
        else:
            out = int(F32(v) * F32(int(length)))
            if out < 1:
                cx.fail(f"scale {v} of axis {a} (size {length}) leaves no element")
            plan.append([a, int(length), out, F32(v)])
    policy = cx.attr("keep_aspect_ratio_policy", "stretch") if cx.version >= 18 else "stretch"
    if policy not in ("stretch", "not_larger", "not_smaller"):
        cx.fail(
            f"keep_aspect_ratio_policy {policy!r} is not one of stretch, not_larger, not_smaller"
        )
    if sizes and policy != "stretch" and plan:
        kept = [F32(1)] * (len(axes) - len(plan))  # the batch axis among them keeps scale 1
        pick = min if policy == "not_larger" else max
        s = pick([p[3] for p in plan] + kept)
        for p in plan:
            p[2], p[3] = int(np.floor(abs(s * F32(p[1])) + F32(0.5))), s
    return [p for p in plan if p[3] != F32(1)]


def _resize(cx: NodeContext) -> list[Value]:
    """Resize (and Upsample, and Resize-10, which is Upsample's meaning) in modes nearest,
    linear and cubic, as ONNX Runtime computes them, one axis after another (the modes are
    separable): along each non-batch axis whose scale is not 1, the sum over the taps of
    _resize_taps of x's elements at the taps' indices (_take: exact moves; a repeated
    element's gradient is the sum of its uses) times constant float32 weights. Scales or sizes
    known at import time; the batch axis keeps scale 1. tf_crop_and_resize reads the region
    of interest (_resize_rois) and gives extrapolation_value where a coordinate leaves the
    input; antialias=1 (linear, cubic) weighs a window per output (_antialias_taps). Refused
    by name: antialias in mode nearest, exclude_outside outside cubic or antialias."""
    x = cx.x(0)
    r = len(x.shape)
    mode = cx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        cx.fail(f"mode {mode!r} is not one of nearest, linear, cubic")
    upsample = cx.node.op_type == "Upsample"
    if upsample and mode == "cubic":
        cx.fail("mode 'cubic' is not one of Upsample's modes (nearest, linear)")
    if cx.attr("antialias", 0) and mode == "nearest":
        cx.fail("antialias=1 applies to modes linear and cubic only, not 'nearest'")
    if cx.attr("exclude_outside", 0) and mode != "cubic" and not cx.attr("antialias", 0):
        cx.fail(f"exclude_outside=1 applies to mode 'cubic' (or antialias=1) only, not {mode!r}")
    if upsample and cx.version < 9 and cx.attr("scales") is None:
        cx.fail("Upsample needs its scales attribute")
    scales = sizes = None
    if upsample:
        scales = cx.attr("scales") if cx.version < 9 else cx.c(1)
    elif cx.version < 11:
        scales = cx.c(1)
    else:
        if cx.has(2) and np.size(cx.c(2)):
            scales = cx.c(2)
        if cx.has(3) and np.size(cx.c(3)):
            sizes = cx.c(3)
    axes = list(range(r))
    if not upsample and cx.version >= 18 and cx.attr("axes") is not None:
        axes = [_axis(cx, int(a), r) for a in cx.attr("axes")]
    given = sizes if sizes is not None else scales
    if given is None or np.size(given) != len(axes):
        cx.fail(f"needs one scale or size per resized axis ({len(axes)}), got {given}")
    if upsample and any(float(v) < 1.0 for v in np.ravel(given)):
        cx.fail(f"Upsample's scales must be at least 1 (as ONNX Runtime's), got {given.tolist()}")
    rois = _resize_rois(cx, axes)
    plan = _resize_sizes(cx, x, axes, given, sizes is not None)
    if all(out == length for _, length, out, _ in plan):
        return [x * 1.0]  # no length changes: ONNX Runtime copies the input
    y = x
    extrapolated = float(cx.attr("extrapolation_value", 0.0))
    for a, length, out, scale in plan:
        taps, outside = _resize_taps(cx, mode, length, out, scale, rois[a])
        terms = []
        for k, (idx, w) in enumerate(taps):
            if w is not None and not np.any(w):
                continue
            t = _take(cx, y, a, idx)
            if w is not None and not np.all(w == 1):
                wt = w.reshape((out,) + (1,) * (r - 1 - a))
                t = t * cx.imp.constant_tensor(f"resize_weights_{a}_{k}", wt, cx, False)
            terms.append(t)
        y = terms[0]
        for t in terms[1:]:
            y = y + t
        if outside.any():  # tf_crop_and_resize: positions outside the input
            keep = (~outside).astype(np.float32).reshape((out,) + (1,) * (r - 1 - a))
            mask = cx.imp.constant_tensor(f"resize_inside_{a}", keep, cx, False)
            y = dsl.apply("where", mask, y, dsl.const(extrapolated))
    return [y if y is not x else x * 1.0]


def _resize_rois(cx: NodeContext, axes: list[int]) -> dict[int, tuple[float, float]]:
    """Resize's region of interest (input 1, from opset 11) per axis, (start, end) in [0, 1] of
    the axis, read under tf_crop_and_resize only (every other mode ignores it, as ONNX
    Runtime): 2 * rank values, or 2 * len(axes) with the axes attribute (opset 18), starts
    first."""
    whole = {a: (0.0, 1.0) for a in axes}
    if cx.attr("coordinate_transformation_mode", "") != "tf_crop_and_resize" or cx.version < 11:
        return whole
    if not cx.has(1):
        cx.fail("tf_crop_and_resize needs its region of interest, input 1 (roi)")
    roi = np.asarray(cx.c(1), np.float64).reshape(-1)
    if roi.size != 2 * len(axes):
        cx.fail(
            f"roi has {roi.size} values; tf_crop_and_resize of {len(axes)} axes needs {2 * len(axes)}"
        )
    return {a: (float(roi[k]), float(roi[len(axes) + k])) for k, a in enumerate(axes)}


MAX_LOOKUP_ROWS = 65536  # the largest table an embedding lookup compares indices against


def _index_input(
    cx: NodeContext, idx: Tensor, rows: int, span: tuple[int, int] | None = None
) -> None:
    """Integer input ``idx`` read straight as the indices of a table of ``rows`` rows: the
    range the entries let through (ir.ops.sources.index_range) cut to -rows .. rows-1 (or to
    ``span``, a wider range some of whose values pick nothing: a loss's ignore_index)."""
    first, last = span or (-rows, rows - 1)
    lo, hi = index_range(idx.node) or (first, last)
    lo, hi = max(lo, first), min(hi, last)
    if lo > hi:
        cx.fail(
            f"input {idx.name!r} indexes {rows} rows here but holds {lo} .. {hi} elsewhere "
            "(no value fits both)"
        )
    low = None if lo == -(hi + 1) else lo
    idx.node = idx.node.with_(
        attrs={**dict(idx.node.attrs), "index_rows": hi + 1, "index_low": low, "index_table": True}
    )


def _lookup(cx: NodeContext, table: Tensor, axis: int, idx: Tensor) -> Tensor:
    """Gather with computed integer indices (an embedding lookup, nn.Embedding's export):
    rows of a table without the batch axis (a weight) along axis 0, as one-hot(idx) @ table:
    onehot = [idx' == k] for k in 0..V-1 with idx' = idx + V where idx < 0 (ONNX's negative
    indices), then the matrix product with the table as [V, rest]. Exact (each output element
    is one table element times 1 plus zeros, for a finite table); the table's gradient is
    onehot^T @ dy, the scatter-add of repeated indices. Indices read straight from a graph
    input are checked by every entry before it runs (the input's ``index_rows``: whole numbers
    in -V..V-1, else ArgumentError naming the row, or the library's ERR_LOOKUP; ONNX Runtime
    raises too). Computed ones are proven to lie in that range by Importer.bound_integers for
    every value the entries let through (lowering the checked range of the integer inputs they
    come from where needed), or the import is refused naming the node."""
    if id(idx) not in cx.imp.integral:
        cx.fail("indices computed in float: Gather needs integer indices")
    if "N" in table.shape:
        cx.fail(
            f"indices computed from the graph's inputs pick from {_fmt(table.shape)}, which has "
            "the batch dimension N; graphc looks up rows of a table without it (a weight)"
        )
    if axis != 0:
        cx.fail(
            f"indices computed from the graph's inputs along axis {axis}: graphc looks up "
            "rows (axis 0) of a table only"
        )
    v = int(table.shape[0])
    if v > MAX_LOOKUP_ROWS:
        cx.fail(
            f"a lookup table of {v} rows; graphc compares indices with at most {MAX_LOOKUP_ROWS}"
        )
    rest = tuple(table.shape[1:])
    if idx.node.op == "input":  # the entries check its values (compiler.plan_input_checks)
        _index_input(cx, idx, v)
    else:  # computed: proven in range by Importer.bound_integers, or refused
        cx.imp.lookups.append((idx, v, cx.where()))
    zero = dsl.const(0.0)
    wrapped = dsl.apply("where", dsl.apply("greater", zero, idx), idx + float(v), idx)
    col = _reshape(cx, wrapped, (*idx.shape, 1))
    ks = cx.imp.constant_tensor(f"lookup_rows_{v}", np.arange(v, dtype=np.float32), cx, False)
    onehot = dsl.apply("equal", col, ks)  # [..., V], 1.0 where the index is k
    flat = table if len(rest) == 1 else _reshape(cx, table, (v, math.prod(rest)))
    if len(onehot.shape) < 2:
        cx.fail("a lookup with a scalar index computed in the graph is not supported")
    y = dsl.matmul(onehot, flat)
    return _reshape(cx, y, (*idx.shape, *rest))


def _strided_indices(cx: NodeContext, start: int, end: int, step: int, size: int) -> list[int]:
    if step == 0:
        cx.fail("slice step 0")
    return list(range(size))[slice(start, end, step)]


def _pad(cx: NodeContext) -> list[Value]:
    """Pad (modes constant, reflect, edge, wrap; pads as an attribute before opset 11, as an
    input from 11, ``axes`` from 18) of a computed value along its non-batch axes. Negative
    pads crop. Constant: graphc's pad op (zeros) plus ``value`` at the padded positions (a
    constant broadcast over N); reflect, edge and wrap: the elements numpy's np.pad picks for
    that mode, by _take. Exact."""
    x = cx.x(0)
    r = len(x.shape)
    mode = cx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        cx.fail(f"mode {mode!r} is not one of constant, reflect, edge, wrap")
    if cx.version < 11:
        pads = [int(v) for v in cx.attr("pads")]
        value = float(cx.attr("value", 0.0))
        axes = list(range(r))
    else:
        pads = [int(v) for v in np.ravel(cx.c(1))]
        cv = cx.c(2) if cx.has(2) else None
        value = float(np.ravel(cv)[0]) if cv is not None and np.size(cv) else 0.0
        if cx.has(3):
            axes = [_axis(cx, int(a), r) for a in np.ravel(cx.c(3))]
        else:
            axes = list(range(r))
    if len(pads) != 2 * len(axes):
        cx.fail(f"pads {pads} must have 2 entries per padded axis ({len(axes)} axes)")
    if len(set(axes)) != len(axes):
        cx.fail(f"axes {axes} repeat an axis")
    y = x
    zero_before, zero_after, zero_axes = [], [], []
    for k, a in enumerate(axes):
        lo, hi = pads[k], pads[k + len(axes)]
        if lo == 0 and hi == 0:
            continue
        size = x.shape[a]
        if size == "N":
            cx.fail(f"padding the batch dimension N of {_fmt(x.shape)} is not supported")
        if int(size) - max(-lo, 0) - max(-hi, 0) <= 0:
            cx.fail(f"pads {lo}, {hi} crop all of axis {a} (size {size})")
        if mode == "constant":  # crop the negative side, pad the positive one with zeros
            if lo < 0 or hi < 0:
                y = dsl.apply(
                    "slice", y, axes=(a,), starts=(max(-lo, 0),), ends=(size - max(-hi, 0),)
                )
            if lo > 0 or hi > 0:
                zero_axes.append(a)
                zero_before.append(max(lo, 0))
                zero_after.append(max(hi, 0))
            continue
        # negative pads crop first; the other side then pads the cropped axis (ONNX Runtime)
        src = np.arange(max(-lo, 0), int(size) - max(-hi, 0))
        if mode == "reflect" and (src.size < 2 or max(lo, hi) >= src.size):
            cx.fail(
                f"reflect pads {lo}, {hi} of axis {a} (size {src.size} after cropping) must be "
                "less than its size"
            )
        idx = np.pad(src, (max(lo, 0), max(hi, 0)), mode=mode)
        y = _take(cx, y, a, idx.tolist())
    if zero_axes:
        inner = tuple(y.shape)
        y = dsl.apply(
            "pad", y, axes=tuple(zero_axes), before=tuple(zero_before), after=tuple(zero_after)
        )
        if value != 0.0:
            mask = np.ones([1 if d == "N" else int(d) for d in y.shape], np.float32) * value
            core = tuple(
                slice(zero_before[zero_axes.index(a)], zero_before[zero_axes.index(a)] + int(d))
                if a in zero_axes
                else slice(None)
                for a, d in enumerate(inner)
            )
            mask[core] = 0.0
            y = y + cx.imp.constant_tensor("pad_value", mask, cx, False)
    return [y if y is not x else x * 1.0]


# a Slice of the batch axis that starts at 0 and ends here or later keeps it whole: tf2onnx
# writes TensorFlow's "to the end" as 10**9 (a masked end beside steps) or int32's largest value,
# torch int64's. (A batch of more than 10**9 rows, 4 GB per feature, would be cut by ONNX
# Runtime there and kept whole by graphc.)
WHOLE_BATCH = 10**9


def _empty_slice(shape: tuple, axes: list, starts: list, ends: list, steps: list) -> np.ndarray:
    """An empty Slice of a value of fixed ``shape`` (numpy's bounds: x[1000:1000] of 10
    elements): it holds no values, so it is known, the float32 array of the sliced shape."""
    dims = [int(d) for d in shape]
    for a, st, en, step in zip(axes, starts, ends, steps):
        dims[a] = len(range(*slice(int(st), int(en), int(step)).indices(dims[a])))
    return np.zeros(dims, np.float32)


def _slice(cx: NodeContext) -> list[Value]:
    """Slice of a computed value: graphc's slice op for the steps of 1, and _take for the other
    steps (negative steps read backwards, as numpy's x[start:end:step]); the batch axis whole."""
    if not native("slice"):
        cx.fail(
            "Slice of a computed value needs graphc's slice op; it is supported only on "
            "values known at import time in this version"
        )
    x = cx.x(0)
    r = len(x.shape)
    if cx.version < 10:
        starts, ends, axes = cx.attr("starts"), cx.attr("ends"), cx.attr("axes")
        steps = None
    else:
        starts, ends = cx.c(1).tolist(), cx.c(2).tolist()
        axes = cx.c(3).tolist() if cx.has(3) else None
        steps = cx.c(4).tolist() if cx.has(4) else None
    axes = list(range(len(starts))) if axes is None else [_axis(cx, int(a), r) for a in axes]
    steps = [1] * len(axes) if steps is None else [int(v) for v in steps]
    _same_lengths(cx, starts, ends, axes, steps)
    if len(set(axes)) != len(axes):
        cx.fail(f"axes {axes} repeat an axis")
    b, e, kept, strided = [], [], [], []
    for a, st, en, step in zip(axes, starts, ends, steps):
        size = x.shape[a]
        if isinstance(st, str) or (isinstance(en, str) and not (size == "N" and en == "N")):
            cx.fail(f"slice [{st}:{en}] of axis {a} of {_fmt(x.shape)}: bounds in the batch size")
        if size == "N":
            # the end N: the batch size itself (torch slices by a Shape that holds it)
            whole = (int(st) == 0 or int(st) <= -WHOLE_BATCH) and (
                en == "N" or int(en) >= WHOLE_BATCH
            )
            if step == 1 and whole:
                continue  # the whole batch (x[0:INT_MAX]): nothing to cut
            cx.fail(f"slicing the batch dimension N of {_fmt(x.shape)} is not supported")
        if step != 1:
            idx = _strided_indices(cx, int(st), int(en), step, int(size))
            if not idx and "N" not in x.shape:
                return [_empty_slice(x.shape, axes, starts, ends, steps)]
            if not idx:
                cx.fail(
                    f"the slice [{st}:{en}:{step}] of axis {a} (size {size}) is empty: graphc "
                    "has no dimension of size 0"
                )
            strided.append((a, idx))
            continue
        lo, hi, _ = slice(int(st), int(en)).indices(int(size))
        if hi <= lo and "N" not in x.shape:
            return [_empty_slice(x.shape, axes, starts, ends, steps)]
        if hi <= lo:
            cx.fail(
                f"the slice [{st}:{en}] of axis {a} (size {size}) is empty: graphc has no "
                "dimension of size 0"
            )
        if (lo, hi) != (0, size):
            kept.append(a)
            b.append(lo)
            e.append(hi)
    y = x
    if kept:
        y = dsl.apply("slice", x, axes=tuple(kept), starts=tuple(b), ends=tuple(e))
    for a, idx in strided:
        y = _take(cx, y, a, idx)
    return [y if y is not x else x * 1.0]


def _fold_cast(cx: NodeContext, args: list) -> list:
    to = int(cx.attr("to"))
    a = args[0]
    if to not in _NP_OF or to == 16:
        cx.fail(f"cast to {type_name(to)} is not supported")
    if a.dtype == object:  # a shape holding N: N stays, the sizes are cast
        out = np.empty(a.shape, dtype=object)
        for i in np.ndindex(a.shape):
            e = a[i]
            out[i] = e if isinstance(e, str) else np.asarray(e).astype(_NP_OF[to]).item()
        return [out]
    return [a.astype(_NP_OF[to])]


def _cast_indefinite(x: Tensor, t: Tensor, to: int) -> list[tuple[Tensor, float]]:
    """Where a float-to-integer Cast leaves the conversion's range (NaN, +-inf, too large),
    which ONNX leaves undefined: ONNX Runtime's x86-64 results, (mask, value) pairs applied
    after the wrap. Its int32 and 8/16-bit conversions go through a 32-bit cvttss2si, whose
    "integer indefinite" -2**31 is int32's result and wraps to 0 for the narrower types; int64
    through the 64-bit one (-2**63); uint32 through the 32-bit one below 2**31 (NaN and values
    below -2**31: 2**31) and x - 2**31 from there (2**32 and above: 0); uint64 likewise through
    the 64-bit one (NaN and values to -2**63: 2**63, the negatives above wrap to t + 2**64 in
    ``_cast``) and x - 2**63 from 2**63 on (2**64 and above, +inf: 0)."""
    nan = dsl.apply("not_equal", x, x)

    def outside(lo: float, hi: float) -> Tensor:
        past = dsl.maximum(
            dsl.apply("less", t, dsl.const(lo)), dsl.apply("greater_equal", t, dsl.const(hi))
        )
        return dsl.maximum(nan, past)

    if to == 12:
        low = dsl.maximum(nan, dsl.apply("less", t, dsl.const(-(2.0**31))))
        return [(dsl.apply("greater_equal", t, dsl.const(2.0**32)), 0.0), (low, 2.0**31)]
    if to == 7:
        return [(outside(-(2.0**63), 2.0**63), -(2.0**63))]
    if to == 13:
        low = dsl.maximum(nan, dsl.apply("greater_equal", dsl.const(-(2.0**63)), t))
        return [(dsl.apply("greater_equal", t, dsl.const(2.0**64)), 0.0), (low, 2.0**63)]
    if to == 6:
        return [(outside(-(2.0**31), 2.0**31), -(2.0**31))]
    if to in (3, 5, 2, 4):
        return [(outside(-(2.0**31), 2.0**31), 0.0)]
    return []


def _cast(cx: NodeContext) -> list[Value]:
    return _cast_to(cx, cx.x(0), int(cx.attr("to")))


def _cast_to(cx: NodeContext, x: Tensor, to: int) -> list[Value]:
    """Cast of a graph value to ONNX element type ``to`` (Cast's ``to``, CastLike's operand's
    type): float types keep float32; integer types truncate toward zero and wrap as ONNX
    Runtime's conversion, kept in float32; bool is x != 0."""
    if to in (1, 11):
        return [x]  # graphc computes in float32; a cast to double keeps float32 values
    if to in (10, 16):
        cx.fail(f"cast to {type_name(to)}: graphc computes in float32 and cannot round to it")
    if to == 9:  # bool: 1 where x != 0 (NaN included, as ONNX Runtime), else 0
        t = dsl.apply("not_equal", x, dsl.const(0.0))
        cx.imp.integral.add(id(t))
        return [t]
    if to in (6, 7, 3, 2, 4, 5, 12, 13):
        t = x
        fixes: list[tuple[Tensor, float]] = []  # (where, the value there)
        if id(x) not in cx.imp.integral:
            # a float to an integer type: rounded toward zero (C's conversion, ONNX Runtime's),
            # kept in float32
            f = _integral_part(cx, _abs(x), -1)
            t = dsl.apply("where", dsl.apply("greater", dsl.const(0.0), x), 0.0 - f, f)
            fixes = _cast_indefinite(x, t, to)
            if to == 13:  # uint64: a negative value wraps modulo 2**64 (rounded to float32)
                t = dsl.apply("where", dsl.apply("greater", dsl.const(0.0), t), t + 2.0**64, t)
        bits = {3: 8, 2: 8, 5: 16, 4: 16, 12: 32}.get(to)
        if bits:  # 8- to 32-bit types wrap modulo 2**bits, as ONNX Runtime's conversion
            # r = t - floor(t / 2**bits) 2**bits is exact in float32 for an integral t (the
            # scaling by a power of two, the floor and the product are; the difference by
            # Sterbenz's lemma): t - lo first rounded once |t| passed 2**24, so 2**31 - 128 cast
            # to int16 gave 0 (ONNX Runtime: -128)
            span = 2.0**bits
            t = t - _integral_part(cx, t * (1.0 / span), -1) * span
            if to in (3, 5):  # signed: [2**(bits-1), 2**bits) is the negative half
                t = dsl.apply("where", dsl.apply("less", t, dsl.const(span / 2)), t, t - span)
        for mask, value in fixes:
            t = dsl.apply("where", mask, dsl.const(value), t)
        if t is not x:
            cx.imp.integral.add(id(t))
        return [t]  # integer values (labels, masks), kept in float32 (exact up to 2**24)
    cx.fail(f"cast of a computed value to {type_name(to)} is not supported")
    return []


def _cast_like(cx: NodeContext) -> list[Value]:
    """CastLike: Cast to the element type of input 1 (a graph value's ONNX type, an array's
    dtype): integer targets truncate and wrap as Cast's (before, a graph value's integer type
    was taken for float32 and the value passed unchanged: CastLike(2.5, ids) gave 2.5)."""
    a, like = cx.value(0), cx.value(1)
    name = cx.node.input[0]
    known = isinstance(a, np.ndarray) and a.dtype != object
    weight = name in cx.imp.initializers and known and a.dtype.kind == "f"
    if known and isinstance(like, Tensor) and not (weight and cx.imp.is_trainable(name)):
        # a value known at import stays known (a Pad's constant_value of CastLike(-inf, q),
        # as ONNX's Attention function body writes it): cast to the operand's element type
        kind = cx.imp.elem_type(cx.node.input[1])
        return [a.astype(np.float32 if kind in FLOAT_TYPES else _NP_OF.get(kind, np.float32))]
    x = cx.x(0)
    if isinstance(like, Tensor):  # (its ONNX type: graphc holds every graph value as float32)
        kind = cx.imp.elem_type(cx.node.input[1])
    else:
        kind = int(require_onnx().helper.np_dtype_to_tensor_dtype(like.dtype))
    if kind is None or kind in FLOAT_TYPES:
        return [x]  # (float32, as graphc computes every float type)
    return _cast_to(cx, x, kind)


def _fold_cast_like(cx: NodeContext, args: list) -> list:
    a, like = args[0], args[1]
    if a.dtype == object or like.dtype == object:
        return [a]
    return [a.astype(like.dtype)]


def _identity(cx: NodeContext) -> list[Value]:
    """The operand itself. Identity of a trainable initializer (torch's TorchScript exporter
    writes ln.weight = Identity(norm1.weight) for equal weights it deduplicated) is that
    initializer's param: the file ties them, and their gradients add up, as onnxscript's
    merged initializers do. (Its fold, for operands known at import time, runs otherwise.)"""
    v = cx.value(0)
    if isinstance(v, np.ndarray) and v.dtype.kind == "f":  # a trainable initializer
        return [cx.x(0)]
    return [v]


def _dropout(cx: NodeContext) -> list[Value]:
    if cx.has(2):
        mode = cx.c(2)
        if bool(np.ravel(mode)[0]):
            cx.fail("training_mode=true: graphc imports inference graphs (dropout is identity)")
    x = cx.value(0)
    if len(cx.node.output) > 1 and cx.node.output[1] and isinstance(x, Tensor):
        mask = x * 0.0 + 1.0  # every element kept at inference
        cx.imp.integral.add(id(mask))
        return [x, mask]
    return [x]


def _constant(cx: NodeContext) -> list[Value]:
    for key, dt in (
        ("value", None),
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in cx.attrs:
            v = cx.attr(key)
            return [np.asarray(v) if dt is None else np.asarray(v, dtype=dt)]
    if "sparse_value" in cx.attrs:
        sp = cx.attrs["sparse_value"].sparse_tensor
        return [sparse_to_array(sp, cx.imp.base_dir, f"{cx.where()}: sparse_value")]
    cx.fail(
        "needs one of value, value_float(s), value_int(s), sparse_value (string values are "
        "not supported)"
    )
    return []


def _constant_of_shape(cx: NodeContext, args: list) -> list:
    shape = args[0]
    if shape.dtype == object:  # [N, ...]: a graph value, the constant broadcast along N
        v = cx.attr("value")
        v = np.zeros(1, np.float32) if v is None else v
        if v.dtype.kind not in "fiub":
            cx.fail(f"a value of type {v.dtype}")
        dims = tuple(d if isinstance(d, str) else int(d) for d in shape.tolist())
        if (
            dims.count("N") == 1
            and dims[0] != "N"
            and all(d == "N" or isinstance(d, int) for d in dims)
        ):
            # N on another axis (torch's zero initial state [layers, N, H] of an RNN): a
            # layout view of the constant broadcast to [N, other axes...]
            k = dims.index("N")
            base = _constant_of_shape(cx, [np.array(["N", *dims[:k], *dims[k + 1 :]], object)])
            groups = [(j + 1 if j < k else j,) for j in range(len(dims))]
            groups[k] = (0,)
            return [onnx_layout._out(onnx_layout.View(base[0], tuple(groups)))]
        fixed = tuple(1 if d == "N" else d for d in dims)
        if math.prod(fixed) > MAX_ELEMENTS:
            cx.fail(f"{math.prod(fixed)} elements per sample, above the limit of {MAX_ELEMENTS}")
        c = np.full(fixed, v.reshape(-1)[0], dtype=np.float32)
        t = cx.imp.constant_tensor("constant_of_shape", c, cx, False)
        if t.shape != fixed:  # a 0-d constant
            t = t + cx.imp.constant_tensor("cos_zeros", np.zeros(fixed, np.float32), cx, False)
        if dims[0] != "N" or "N" in dims[1:]:
            cx.fail(f"shape {list(dims)}: graphc keeps the batch dimension N first")
        return [_broadcast(cx, t, dims, list(dims))]
    count = math.prod(int(d) for d in shape.tolist())
    if count > MAX_ELEMENTS:
        cx.fail(f"{count} elements, above the limit of {MAX_ELEMENTS}")
    v = cx.attr("value")
    v = np.zeros(1, np.float32) if v is None else v
    return [np.full(tuple(int(d) for d in shape.tolist()), v.reshape(-1)[0], dtype=v.dtype)]


def _tidy(v: Any) -> Any:
    """A shape computation's result: an object array (one holding the batch size "N") becomes
    int64 once no element is symbolic (a Gather or Slice that left N out), so that arithmetic,
    comparisons and data uses downstream see ordinary integers."""
    if (
        isinstance(v, np.ndarray)
        and v.dtype == object
        and not any(isinstance(e, str) for e in v.flat)
    ):
        if v.size == 0:
            return v.astype(np.int64)
        flat = [e.item() if isinstance(e, np.generic) else e for e in v.flat]
        kind = "f" if any(isinstance(e, float) for e in flat) else "i"
        return np.array(flat, dtype=np.float64 if kind == "f" else np.int64).reshape(v.shape)
    return v


# What an arithmetic operator gives when one operand is the batch size N and the other an
# integer: only the identities (N + 0, N - 0, N * 1, N / 1, N - N, N / N, max/min(N, 1),
# N == k); anything else would be a new symbolic size, which graphc cannot represent.
# A product of N with fixed sizes (tf2onnx's ReduceProd of a shape's batch axes before a
# batched MatMul, Keras's attention heads) is the string "N*m": a multiple of N, which a Reshape
# reads as N's rows merged with m per sample (Importer.merged_rows).
def _sym_multiple(u: Any) -> int | None:
    """m for the symbolic size "N" (1) or "N*m", None for anything else."""
    if not isinstance(u, str):
        return None
    if u == "N":
        return 1
    if u.startswith("N*") and u[2:].isdigit():
        return int(u[2:])
    return None


def _sym_of(m: int) -> str:
    return "N" if m == 1 else f"N*{m}"


def _sym_elem(op: str, u: Any, v: Any) -> Any:
    su, sv = isinstance(u, str), isinstance(v, str)
    if op == "equal":
        return (u == v) if su == sv else False  # N is never a literal: shapes hold sizes >= 1
    if su and sv:
        if u != v and op == "div":
            mu, mv = _sym_multiple(u), _sym_multiple(v)
            if mu and mv and mu % mv == 0:
                return mu // mv
        return {"sub": 0, "div": 1, "max": u, "min": u}.get(op) if u == v else None
    n, k = (u, v) if su else (v, u)
    m = _sym_multiple(n)
    if m is not None and isinstance(k, (int, np.integer)) and k >= 1:
        if op == "mul":
            return _sym_of(m * int(k))
        if op == "div" and su and m % int(k) == 0:
            return _sym_of(m // int(k))
    if (op in ("add",) and k == 0) or (op == "sub" and sv is False and k == 0):
        return n
    if (op == "mul" and k == 1) or (op == "div" and not sv and k == 1):
        return n
    if op == "max" and k <= 1:
        return n
    if op == "min" and k <= 1:
        return k
    return None


def _sym_fold(op: str, f: Callable) -> Callable[[NodeContext, list], list]:
    """The fold of a binary operator on shape values: numpy, or element by element where an
    operand holds the batch size N (see ``_sym_elem``)."""

    def fold(cx: NodeContext, args: list) -> list:
        a, b = np.asarray(args[0]), np.asarray(args[1])
        if a.dtype != object and b.dtype != object:
            out = f(a, b)
            if op == "equal":
                return [out]
            want = np.result_type(a, b)
            return [out.astype(want) if out.dtype != want else out]
        a, b = np.broadcast_arrays(a.astype(object), b.astype(object))
        out = np.empty(a.shape, dtype=object)
        for i in np.ndindex(a.shape):
            u, v = a[i], b[i]
            if isinstance(u, str) or isinstance(v, str):
                r = _sym_elem(op, u, v)
                if r is None:
                    cx.fail(
                        f"{op} of {u!r} and {v!r}: arithmetic that changes the batch size N "
                        "(a symbolic size) is not supported in shape computations"
                    )
            else:
                r = f(np.asarray(u), np.asarray(v)).item()
            out[i] = r
        if op == "equal":
            return [out.astype(bool)]
        return [out]

    return fold


def _arith_fold(f: Callable) -> Callable[[NodeContext, list], list]:
    return _sym_fold({np.add: "add", np.subtract: "sub", np.multiply: "mul"}.get(f, "div"), f)


def _variadic_fold(op: str, f: Callable) -> Callable[[NodeContext, list], list]:
    """Max / Min of shape values (tf2onnx broadcasts two shapes' batch axes by Max)."""
    pair = _sym_fold(op, f)

    def fold(cx: NodeContext, args: list) -> list:
        xs = [a for a in args if a is not None]
        out = xs[0]
        for b in xs[1:]:
            out = _tidy(pair(cx, [out, b])[0])
        return [out]

    return fold


def _unary_fold(f: Callable) -> Callable[[NodeContext, list], list]:
    """The fold of an elementwise operator on values known at import time (shape arithmetic:
    Neg of an axis, Abs, Not of a mask)."""

    def fold(cx: NodeContext, args: list) -> list:
        a = np.asarray(args[0])
        if a.dtype == object:
            cx.fail("arithmetic on the batch size N is not supported in shape computations")
        with np.errstate(all="ignore"):
            return [
                np.asarray(f(a)).astype(a.dtype) if f is not np.logical_not else ~a.astype(bool)
            ]

    return fold


def _size(cx: NodeContext) -> list[Value]:
    shape = _shape_of(cx.value(0))
    fixed = [d for d in shape if d != "N"]
    if len(fixed) < len(shape) - 1 or not all(isinstance(d, int) for d in fixed):
        cx.fail(f"Size of {_fmt(shape)} depends on the batch size N more than once")
    if len(fixed) < len(shape):  # N * the other sizes: a size holding N, as Shape's are
        return [np.array(_sym_of(math.prod(fixed)), dtype=object)]
    return [np.array(math.prod(shape), np.int64)]


def _fold_where(cx: NodeContext, args: list) -> list:
    c, x, y = args
    dt = object if object in (x.dtype, y.dtype) else None
    out = np.where(np.asarray(c).astype(bool), x.astype(dt) if dt else x, y.astype(dt) if dt else y)
    return [out]


def _fold_range(cx: NodeContext, args: list) -> list:
    start, limit, delta = (np.asarray(a).reshape(()) for a in args)
    if object in (start.dtype, limit.dtype, delta.dtype):
        cx.fail("Range over the batch size N is not supported")
    if float(delta) == 0:
        cx.fail("Range with delta 0")
    count = max(math.ceil((float(limit) - float(start)) / float(delta)), 0)
    if count > MAX_ELEMENTS:
        cx.fail(f"{count} elements, above the limit of {MAX_ELEMENTS}")
    dt = np.result_type(start, limit, delta)
    return [(start + np.arange(count, dtype=dt) * delta).astype(dt)]


def _shape_arg(cx: NodeContext, i: int) -> tuple:
    s = cx.c(i)
    return tuple(d if isinstance(d, str) else int(d) for d in np.ravel(s).tolist())


def _fold_expand(cx: NodeContext, args: list) -> list:
    data, shape = args
    if shape.dtype == object:
        return _expand(cx)  # a known value broadcast along N: a graph value
    target = np.broadcast_shapes(data.shape, tuple(int(d) for d in shape.tolist()))
    if math.prod(target) > MAX_ELEMENTS:
        cx.fail(f"{math.prod(target)} elements, above the limit of {MAX_ELEMENTS}")
    return [np.broadcast_to(data, target).copy()]


def _expand(cx: NodeContext) -> list[Value]:
    """Expand (numpy broadcasting of the operand and the shape): x plus zeros of the target
    shape; a target with the batch size N takes N from a graph input."""
    x = cx.x(0)
    want = _shape_arg(cx, 1)
    r = max(len(want), len(x.shape))
    a = (1,) * (r - len(x.shape)) + tuple(x.shape)
    b = (1,) * (r - len(want)) + want
    out = []
    for u, v in zip(a, b):
        if u == v or v == 1:
            out.append(u)
        elif u == 1:
            out.append(v)
        else:
            cx.fail(f"cannot expand {_fmt(x.shape)} to {list(want)}")
    out_t = tuple(out)
    if out_t == tuple(x.shape):
        return [x * 1.0]
    if out_t.count("N") == 1 and out_t[0] != "N" and "N" not in x.shape:
        # N on another axis (torch's dynamo export of an RNN's zero initial state, [L, N, H]):
        # a layout view of x broadcast to [N, other axes...] (x's axis there has size 1)
        k = out_t.index("N")
        rest = [j for j in range(r) if j != k]
        base_x = _reshape(cx, x, (1, *(a[j] for j in rest)))
        base = _broadcast(cx, base_x, ("N", *(out_t[j] for j in rest)), want)
        groups = [(rest.index(j) + 1,) for j in range(r) if j != k]
        groups.insert(k, (0,))
        return [onnx_layout._out(onnx_layout.View(base, tuple(groups)))]
    return [_broadcast(cx, x, out_t, want)]


def _broadcast(cx: NodeContext, x: Tensor, out_t: tuple, want: Any) -> Tensor:
    """x (broadcastable to ``out_t``) plus zeros of shape ``out_t``; an N in ``out_t`` that x
    lacks is taken from a graph input whose first dimension is N (its values unread)."""
    r = len(out_t)
    if "N" in out_t and "N" not in x.shape:
        if out_t[0] != "N" or cx.imp.batch_source is None:
            cx.fail(f"expand of {_fmt(x.shape)} to {list(want)} puts N elsewhere than first")
        src = cx.imp.batch_source
        col = src
        if len(src.shape) > 1:
            col = dsl.apply(
                "slice",
                src,
                axes=tuple(range(1, len(src.shape))),
                starts=(0,) * (len(src.shape) - 1),
                ends=(1,) * (len(src.shape) - 1),
            )
        like = _reshape(cx, col, ("N",) + (1,) * (r - 1))
        one = (1,) * r
        zero = cx.imp.constant_tensor("expand_zero", np.zeros(one, np.float32), cx, False)
        zeros = dsl.apply("broadcast_to", zero, like)  # [N,1,...]: shape only, no values read
        x = x + zeros
        if tuple(x.shape) == out_t:
            return x
    fixed = tuple(1 if d == "N" else d for d in out_t)
    zero = cx.imp.constant_tensor("expand_zeros", np.zeros(fixed, np.float32), cx, False)
    return x + zero


def _split_sizes(cx: NodeContext, size: int, n_out: int) -> list[int]:
    if cx.version < 13:
        split = cx.attr("split")
    elif cx.has(1):
        split = cx.c(1).tolist()
    else:
        split = None
    if split is not None:
        split = [int(v) for v in np.ravel(split)]
        if sum(split) != size or any(v < 0 for v in split):
            cx.fail(f"split {split} does not cut an axis of size {size}")
        return split
    n = int(cx.attr("num_outputs", n_out))
    step = -(-size // n)
    sizes = [step] * (size // step) + ([size % step] if size % step else [])
    if len(sizes) != n_out:
        cx.fail(f"cannot split an axis of size {size} into {n_out} parts")
    return sizes


def _split(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    axis = _axis(cx, int(cx.attr("axis", 0)), len(x.shape))
    if x.shape[axis] == "N":
        cx.fail(f"splitting the batch dimension N of {_fmt(x.shape)} is not supported")
    sizes = _split_sizes(cx, int(x.shape[axis]), len(cx.node.output))
    outs: list[Value] = []
    start = 0
    for k in sizes:
        if k == 0:  # an empty part: a size-0 array (Concat drops it; other uses fail)
            shape = [1 if d == "N" else d for d in x.shape]
            shape[axis] = 0
            outs.append(np.zeros(shape, np.float32))
            continue
        outs.append(
            dsl.apply("slice", x, axes=(axis,), starts=(start,), ends=(start + k,))
            if k != x.shape[axis]
            else x * 1.0
        )
        start += k
    return outs


def _fold_split(cx: NodeContext, args: list) -> list:
    a = args[0]
    axis = _axis(cx, int(cx.attr("axis", 0)), a.ndim)
    sizes = _split_sizes(cx, a.shape[axis], len(cx.node.output))
    return np.split(a, np.cumsum(sizes)[:-1], axis=axis)


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        if np.any(b == 0):
            raise OnnxError("integer division by zero in a shape computation")
        return np.trunc(a / b).astype(np.result_type(a, b))
    return a / b


# --- reductions


def _reduction_axes(cx: NodeContext, rank: int, attr_until: int) -> tuple[int, ...]:
    """The sorted axes a Reduce* node reduces (``axes``: attribute before opset ``attr_until``,
    input from it): every axis when ``axes`` is missing or empty, none (``()``) when it is
    missing or empty and ``noop_with_empty_axes`` is set. Reducing over no axes leaves the
    pointwise part of the op: the identity for ReduceSum/Max/Min/Mean, |x| for ReduceL1/L2,
    x^2 for ReduceSumSquare, log x for ReduceLogSum (ONNX's Reduce* definitions from opset
    13/18; its reference implementation treats a missing ``axes`` as empty)."""
    axes = _axes_arg(cx, attr_until)
    if not axes:
        return () if cx.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted({_axis(cx, a, rank) for a in axes}))


def _reduce(op: str, attr_until: int) -> Callable[[NodeContext], list[Value]]:
    def convert(cx: NodeContext) -> list[Value]:
        x = cx.x(0)
        r = len(x.shape)
        ax = _reduction_axes(cx, r, attr_until)
        if not ax:
            return [x * 1.0]
        keep = bool(cx.attr("keepdims", 1))
        return [dsl.apply(op, x, axes=None if len(ax) == r else ax, keepdims=keep or None)]

    return convert


def _reduce_composed(kind: str) -> Callable[[NodeContext], list[Value]]:
    """ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp per their ONNX
    definitions (sum of |x|, sqrt of the sum of x^2, sum of x^2, log of the sum, log of the
    sum of exp with the max subtracted first), over ``axes`` (attribute before opset 18, input
    from 18)."""

    def convert(cx: NodeContext) -> list[Value]:
        x = cx.x(0)
        ax = _reduction_axes(cx, len(x.shape), 18)
        keep = bool(cx.attr("keepdims", 1))
        if not ax:  # noop_with_empty_axes: the pointwise part over no axes
            pointwise = {"l1": _abs, "l2": _abs, "sumsquare": dsl.square, "logsum": dsl.log}
            return [x * 1.0 if kind == "logsumexp" else pointwise[kind](x)]
        if kind == "logsumexp":
            m = dsl.apply("max", x, axes=ax, keepdims=True)
            # an infinite max is not subtracted (-inf - -inf is NaN): all -inf gives log(0) =
            # -inf and a +inf gives +inf, as torch.logsumexp and ONNX Runtime
            m = dsl.apply("where", dsl.apply("equal", m - m, dsl.const(0.0)), m, dsl.const(0.0))
            s = dsl.log(dsl.sum(dsl.exp(x - m), ax, keepdims=True)) + m
            return [s if keep else _reshape(cx, s, _kept(x.shape, ax))]
        term = {"l1": _abs, "l2": dsl.square, "sumsquare": dsl.square, "logsum": None}[kind]
        s = dsl.sum(x if term is None else term(x), ax, keepdims=keep)
        if kind == "l2":
            s = dsl.sqrt(s)
        elif kind == "logsum":
            s = dsl.log(s)
        return [s]

    return convert


def _reduce_prod(cx: NodeContext) -> list[Value]:
    """ReduceProd of a computed value: the product of the slices along each reduced axis, in
    order (exact products; the gradient by the product rule, right where an element is 0);
    not over the batch axis, at most MAX_COMPOSED_AXIS elements per axis."""
    x = cx.x(0)
    r = len(x.shape)
    ax = _reduction_axes(cx, r, 18)
    if not ax:
        return [x * 1.0]
    y = x
    for a in ax:
        size = _composed_axis_size(cx, y, a, "a product", "products", MAX_COMPOSED_AXIS)
        p = None
        for k in range(int(size)):
            part = dsl.apply("slice", y, axes=(a,), starts=(k,), ends=(k + 1,)) if size != 1 else y
            p = part if p is None else p * part
        y = p
    if not cx.attr("keepdims", 1):
        y = _reshape(cx, y, _kept(x.shape, ax))
    return [y if y is not x else x * 1.0]


def _fold_reduce_prod(cx: NodeContext, args: list) -> list:
    a = np.asarray(args[0])
    ax = _reduction_axes(cx, a.ndim, 18)
    keep = bool(cx.attr("keepdims", 1))
    if a.dtype == object:
        if a.ndim != 1 or not ax:
            cx.fail("a product of a shape holding the batch size N over other than its one axis")
        syms = [_sym_multiple(e) for e in a.tolist() if isinstance(e, str)]
        fixed = math.prod(int(e) for e in a.tolist() if not isinstance(e, str))
        if len(syms) != 1 or syms[0] is None:
            cx.fail(f"a product of the shape {a.tolist()}: N times N is not a size graphc has")
        out = np.array([_sym_of(syms[0] * fixed)], dtype=object)
        return [out if keep else out.reshape(())]
    return [np.prod(a, axis=ax, keepdims=keep).astype(a.dtype) if ax else a]


def _fold_reduce(kind: str, attr_until: int) -> Callable[[NodeContext, list], list]:
    """Reduce* of a value known at import (an empty input's [2, 0, 4] included), computed
    with numpy in float64 (integers and bool exactly) and returned in the operand's type, as
    ONNX's reference does. Over an empty set each gives its identity, per the operators'
    definitions (opset 18): sum, L1, L2, sum of squares 0; max -inf (an integer type's
    least value, bool False); min +inf (greatest, True); log-sum and log-sum-exp -inf; mean
    NaN. No axes with noop_with_empty_axes: the pointwise part (|x|, x^2, log x)."""

    def fold(cx: NodeContext, args: list) -> list:
        a = np.asarray(args[0])
        if a.dtype == object:
            cx.fail(f"a reduction of the shape {a.tolist()}, which holds the batch size N")
        ax = _reduction_axes(cx, a.ndim, attr_until)
        keep = bool(cx.attr("keepdims", 1))
        exact = a.dtype.kind in "iub"
        w = a if exact else a.astype(np.float64)
        if not ax:
            part = {"l1": np.abs, "l2": np.abs, "sumsquare": np.square, "logsum": np.log}
            return [part[kind](w).astype(a.dtype) if kind in part else a]
        if kind in ("max", "min"):
            if a.dtype.kind == "b":
                edge: Any = kind == "min"
            elif exact:
                info = np.iinfo(a.dtype)
                edge = info.min if kind == "max" else info.max
            else:
                edge = -np.inf if kind == "max" else np.inf
            f = np.max if kind == "max" else np.min
            return [f(w, axis=ax, keepdims=keep, initial=edge).astype(a.dtype)]
        with np.errstate(all="ignore"):
            if kind == "logsumexp":
                m = np.max(w, axis=ax, keepdims=True, initial=-np.inf)
                m = np.where(np.isfinite(m), m, 0.0)
                out = np.log(np.sum(np.exp(w - m), axis=ax, keepdims=True)) + m
                out = out if keep else out.reshape(_kept(a.shape, ax))
            elif kind == "mean":
                out = np.mean(w.astype(np.float64), axis=ax, keepdims=keep)
            else:
                term = {"sum": w, "l1": np.abs(w), "l2": np.square(w), "sumsquare": np.square(w)}
                out = np.sum(term.get(kind, w), axis=ax, keepdims=keep)
                if kind == "l2":
                    out = np.sqrt(out)
                elif kind == "logsum":
                    out = np.log(out)
        return [np.asarray(out).astype(a.dtype)]

    return fold


def _kept(shape: tuple, axes: tuple) -> tuple:
    return tuple(d for i, d in enumerate(shape) if i not in axes)


# --- normalization


def _channel_shape(cx: NodeContext, t: Tensor, rank: int) -> Tensor:
    """A per-channel [C] value shaped to broadcast along axis 1 of a rank-``rank`` value."""
    if len(t.shape) == 1 and rank > 2:
        return _reshape(cx, t, (t.shape[0],) + (1,) * (rank - 2))
    return t


def _batch_norm(cx: NodeContext) -> list[Value]:
    """BatchNormalization in inference mode: (x - mean) * scale / sqrt(var + eps) + bias.
    Training mode is refused: training_mode=1 (opset 14+), or before opset 14 the running
    and saved statistics asked for as outputs (torch.onnx.export with
    TrainingMode.PRESERVE/TRAINING writes 5 outputs; ONNX Runtime then normalizes with the
    batch's statistics, not the running ones)."""
    if cx.attr("training_mode", 0):
        cx.fail("training_mode=1 is not supported (graphc imports inference graphs)")
    if any(cx.node.output[1:]):
        cx.fail(
            f"outputs {[o for o in cx.node.output[1:] if o]} (the batch statistics of training "
            "mode) are not supported (graphc imports inference graphs: export in eval mode)"
        )
    x = cx.x(0)
    r = len(x.shape)
    scale, bias, mean, var = (_channel_shape(cx, cx.x(i), r) for i in range(1, 5))
    eps = float(cx.attr("epsilon", 1e-5))
    return [(x - mean) * (scale / dsl.sqrt(var + eps)) + bias]


def _global_pool(op: str) -> Callable[[NodeContext], list[Value]]:
    """GlobalAveragePool / GlobalMaxPool / GlobalLpPool: the mean, max or p-norm
    ((sum |x|^p)^(1/p)) over every axis after the first two ([N, C, d1, ...] -> [N, C, 1, ...];
    tf2onnx writes a Keras LayerNormalization's moments of [N, T, C] over the last axis this
    way)."""

    def convert(cx: NodeContext) -> list[Value]:
        x = cx.x(0)
        r = len(x.shape)
        if r < 3 or "N" in x.shape[2:]:
            cx.fail(f"pools over the axes after the first two of {_fmt(x.shape)}")
        axes = tuple(range(2, r))
        if op == "mean":
            return [dsl.mean(x, axes, keepdims=True)]
        if op == "lp":
            p = _lp_order(cx)
            return [_power(dsl.sum(_power(_abs(x), p), axes, keepdims=True), 1.0 / p)]
        if native("max"):
            return [dsl.apply("max", x, axes=axes, keepdims=True)]
        y = x
        for a in axes:
            y = _max_along(cx, y, a)
        return [y]

    return convert


def _layer_norm(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    r = len(x.shape)
    axis = _axis(cx, int(cx.attr("axis", -1)), r)
    axes = tuple(range(axis, r))
    if "N" in x.shape[axis:]:
        cx.fail(f"axis={axis} on {_fmt(x.shape)} normalizes over the batch dimension N")
    eps = float(cx.attr("epsilon", 1e-5))
    mu = dsl.mean(x, axes, keepdims=True)
    d = x - mu
    var = dsl.mean(dsl.square(d), axes, keepdims=True)
    inv = 1.0 / dsl.sqrt(var + eps)
    y = d * inv * cx.x(1)
    if cx.has(2):
        y = y + cx.x(2)
    return [y, mu, inv]


# --- ai.onnx.ml (scikit-learn converters' endings)


def _labels_of(cx: NodeContext, idx: Tensor, labels: np.ndarray) -> Tensor:
    """The class labels ``labels[idx]`` of integer indices ``idx`` (float32 values): ``idx``
    itself for labels 0..C-1, else sum_k [idx == k] * label_k (exact for labels below 2**24
    in magnitude): [N, 1] for indices [N] or [N, 1] (an ArgMax's), the shape of ``idx`` for
    [N, ..., K] (TopK's K nearest neighbours)."""
    flat = labels.reshape(-1)
    if np.array_equal(flat, np.arange(flat.size)):
        return idx  # labels 0..C-1: the index itself
    k = cx.imp.constant_tensor("class_index", np.arange(flat.size, dtype=np.float32), cx, False)
    lab = cx.imp.constant_tensor("class_labels", flat.astype(np.float32), cx, False)
    r = len(idx.shape)
    knn = r >= 2 and idx.shape[-1] != 1  # [N, ..., K]: k nearest neighbours' indices
    if knn:  # each compared with every k on a new last axis
        cols = dsl.reshape(idx, (*idx.shape, 1))
    else:  # [N] or [N, 1]: one column
        cols = dsl.reshape(idx, (idx.shape[0], 1)) if r == 1 else idx
    hit = dsl.apply("greater_equal", cols, k) * dsl.apply("greater_equal", k, cols)
    return dsl.sum(hit * lab, r if knn else 1, keepdims=not knn)


def _class_labels(cx: NodeContext, ints_attr: str) -> tuple[bool, list[Any]]:
    """(integer labels?, the labels) of a classifier: exactly one of ``ints_attr`` and
    classlabels_strings."""
    ints, strings = cx.attr(ints_attr), cx.attr("classlabels_strings")
    if (ints is None) == (strings is None):
        cx.fail(f"it needs exactly one of {ints_attr} and classlabels_strings")
    return ints is not None, list(ints if ints is not None else strings)


def _label_outputs(
    cx: NodeContext, idx: Tensor, numeric: bool, labels: list[Any], z: Tensor
) -> list[Value]:
    """[Y, Z] of a classifier: Y [N] = labels[idx] (float32 values of the integer labels) for
    class indices idx; string labels leave Y uncomputed (naming why)."""
    if not numeric:
        cx.imp.uncomputed[cx.node.output[0]] = (
            f"the labels of {cx.where()} are strings (classlabels_strings); import the "
            "scores or probabilities only"
        )
        return [None, z]
    y = _labels_of(cx, idx, np.asarray(labels, np.int64))
    cx.imp.lookups.append((idx, (0, len(labels) - 1), cx.where()))
    if len(y.shape) == 2:
        y = dsl.reshape(y, (y.shape[0],))
    cx.imp.integral.add(id(y))
    return [y, z]


def _array_feature_extractor(cx: NodeContext) -> list[Value]:
    """ArrayFeatureExtractor (ai.onnx.ml): ``X[..., Y]``, the indices applied to the last axis.
    Two uses by scikit-learn's converters: class labels (an array) picked by computed integer
    indices (ArgMax's [N, 1]; the k nearest neighbours' TopK indices [N, k], whose labels
    come back as [N, k]: ONNX Runtime gives [1, N * k] for 1-D labels, which skl2onnx
    reshapes to [-1, k] at once), and columns of a computed value picked by fixed indices (the positive
    class's score of a binary classifier: graphc's slice, exact). 1-D labels picked by one index
    per row are ONNX Runtime's [1, N]: a layout view of graphc's [N, 1] (graphc.onnx_layout;
    as a graph output returned [1, N], Model.output_batch_axes)."""
    data = cx.value(0)
    if isinstance(data, Tensor):
        idx = np.asarray(cx.c(1)).reshape(-1)
        r, width = len(data.shape), data.shape[-1]
        if r < 2 or width == "N":
            cx.fail(f"picking columns of {_fmt(data.shape)}: graphc needs [N, ..., C] data")
        if idx.dtype.kind not in "iu" or idx.size == 0 or np.any(idx < 0) or np.any(idx >= width):
            cx.fail(f"indices {idx.tolist()} must be integers in [0, {width})")
        parts = [
            dsl.apply("slice", data, axes=(r - 1,), starts=(int(k),), ends=(int(k) + 1,))
            for k in idx
        ]
        out = parts[0] if len(parts) == 1 else dsl.apply("concat", *parts, axis=r - 1)
        if id(data) in cx.imp.integral:
            cx.imp.integral.add(id(out))
        return [out]
    classes = cx.c(0)
    idx_t = cx.x(1)
    if id(idx_t) not in cx.imp.integral:
        cx.fail("the indices must be integers computed in the graph (e.g. ArgMax)")
    if classes.dtype.kind not in "iuf":
        cx.fail(f"class labels of type {classes.dtype} (strings) are not supported; use integers")
    out = _labels_of(cx, idx_t, classes)
    cx.imp.lookups.append((idx_t, (0, classes.size - 1), cx.where()))  # as Gather's indices
    cx.imp.integral.add(id(out))
    if classes.ndim == 1 and (len(idx_t.shape) == 1 or idx_t.shape[1:] == (1,)):
        # ONNX Runtime returns 1-D labels' pick of one index per row as [1, N] (skl2onnx's
        # QDA label): a layout view of graphc's [N] / [N, 1], N at axis 1
        lead = (1,) if len(out.shape) == 2 else ()
        return [onnx_layout._out(onnx_layout.View(out, (lead, (0,))))]
    return [out]


def _ml_floats(cx: NodeContext, name: str) -> np.ndarray | None:
    """A float-list attribute of an ai.onnx.ml node as float32 (None when absent)."""
    v = cx.attr(name)
    return None if v is None else np.asarray(v, np.float32).reshape(-1)


def _ml_features(cx: NodeContext, x: Tensor) -> int:
    """F of an [N, F] input (the linear models' and Normalizer's layout)."""
    if len(x.shape) != 2 or x.shape[1] == "N":
        cx.fail(f"input of shape {_fmt(x.shape)}: this operator reads [N, F] rows of features")
    return int(x.shape[1])


def _ml_weight(cx: NodeContext, what: str, a: np.ndarray) -> Tensor:
    """A weight held in an attribute: a trainable param named ``NODE_what`` when
    ``from_onnx(trainable=...)`` says so for that name (as for an initializer)."""
    node = cx.node.name or f"{cx.node.op_type}_{cx.index}"
    return cx.imp.constant_tensor(f"{node}_{what}", a, cx, initializer=True)


def _ml_scores(cx: NodeContext, x: Tensor, targets: int | None) -> tuple[Tensor, int]:
    """x @ W.T + b of the linear models: W = ``coefficients`` as [T, F] rows (row-major, each
    target's F coefficients contiguous), b = ``intercepts`` [T] (none: 0). ``targets``: T
    (None: from the coefficients' count). Returns the [N, T] scores and T."""
    f = _ml_features(cx, x)
    coef = _ml_floats(cx, "coefficients")
    if coef is None or coef.size == 0:
        cx.fail("it has no coefficients")
    t = targets if targets is not None else coef.size // f
    if t < 1 or coef.size != t * f:
        cx.fail(f"{coef.size} coefficients do not make {t or '?'} rows of {f} features")
    y = dsl.matmul(x, _ml_weight(cx, "coefficients", coef.reshape(t, f).T.copy()))
    b = _ml_floats(cx, "intercepts")
    if b is not None and b.size:
        if b.size != t:
            cx.fail(f"{b.size} intercepts for {t} targets")
        y = y + _ml_weight(cx, "intercepts", b)
    return y, t


def _softmax_zero(s: Tensor) -> Tensor:
    """ONNX-ML's SOFTMAX_ZERO per row: exp(s - max) / sum over the nonzero scores, 0 where a
    score is exactly 0 (all zero: 0/0, NaN, as ONNX Runtime)."""
    nz = dsl.apply("not_equal", s, dsl.const(0.0))
    e = dsl.exp(s - dsl.apply("max", s, axes=(1,), keepdims=True)) * nz
    return e / dsl.sum(e, 1, keepdims=True)


def _post_transform(cx: NodeContext, s: Tensor) -> Tensor:
    """The ``post_transform`` of [N, T] scores: NONE, LOGISTIC (elementwise sigmoid), SOFTMAX
    and SOFTMAX_ZERO (per row), PROBIT (elementwise, _probit)."""
    pt = cx.attr("post_transform", "NONE")
    if pt == "NONE":
        return s
    if pt == "LOGISTIC":
        return dsl.apply("sigmoid", s)
    if pt == "SOFTMAX":
        return dsl.softmax(s)
    if pt == "SOFTMAX_ZERO":
        return _softmax_zero(s)
    if pt == "PROBIT":
        return _probit(s)
    cx.fail(
        f"post_transform {pt!r} is not supported (NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO, PROBIT)"
    )
    return s


def _probit(p: Tensor) -> Tensor:
    """PROBIT as ONNX Runtime (ml_common.h's ComputeProbit) and onnx.reference compute it:
    sqrt(2) * erfinv(2p - 1) with erfinv by Winitzki's approximation (S. Winitzki, "A handy
    approximation for the error function and its inverse", 2008, a = 0.147): with u = 2p - 1,
    L = log((1 - u)(1 + u)), v = 2 / (pi a) + L / 2, erfinv(u) ~ sign(u) sqrt(sqrt(v^2 - L / a)
    - v). It is the approximation, not the exact quantile, as ONNX Runtime returns it: on
    (1e-7, 1 - 1e-7) within 2e-3 relative of the standard normal's inverse CDF where that is
    beyond +-0.1, within 1e-3 absolute nearer p = 0.5 (float32's 1 - u^2 loses a small u), and
    7.4e-3 absolute at most (-3.7119 for p = 1e-4, where the quantile is -3.7190; 2 million
    random p against scipy's ndtri); p = 0 / 1 give -inf / inf, p outside [0, 1] NaN.
    Float32, elementwise, any shape; nondifferentiable in practice (used on predictions)."""
    a = 0.147
    u = p * 2.0 - 1.0
    sign = dsl.apply("greater_equal", u, dsl.const(0.0)) * 2.0 - 1.0  # u < 0: -1, as ORT
    log = dsl.apply("log", (1.0 - u) * (1.0 + u))
    v = log * 0.5 + 2.0 / (math.pi * a)
    root = dsl.apply("sqrt", v * v - log * (1.0 / a)) - v
    return dsl.apply("sqrt", root) * sign * 1.41421356


def _scaler(cx: NodeContext) -> list[Value]:
    """Scaler (ai.onnx.ml; scikit-learn's StandardScaler, RobustScaler, MaxAbsScaler): y =
    (x - offset) * scale over the last axis; offset and scale hold one value per feature or one
    for all (absent: 0 and 1). Constants: they do not train."""
    x = cx.x(0)
    f = x.shape[-1] if x.shape else 1
    y = x
    for name, neutral in (("offset", 0.0), ("scale", 1.0)):
        v = _ml_floats(cx, name)
        if v is None or v.size == 0 or np.all(v == neutral):
            continue
        if v.size not in (1, f):
            cx.fail(f"{name} has {v.size} values for {f} features (one per feature, or one)")
        c: Any = float(v[0]) if v.size == 1 else cx.imp.constant_tensor(name, v, cx, False)
        y = y - c if name == "offset" else y * c
    return [y]


def _linear_classifier(cx: NodeContext) -> list[Value]:
    """LinearClassifier (ai.onnx.ml; scikit-learn's LogisticRegression, LinearSVC, ...):
    scores s = x @ W.T + b ([N, T]), Z = post_transform(s), the label Y = classlabels[argmax Z]
    (the first maximum). One score column for two classes (T = 1, C = 2) as ONNX Runtime
    computes it: Z = [1 - p, p] with p = sigmoid(s) for LOGISTIC, else p = s; Y = classlabels[1]
    where s > 0. Labels are float32 values (exact below 2**24); string labels: no Y output
    (Z still is)."""
    x = cx.x(0)
    numeric, labels = _class_labels(cx, "classlabels_ints")
    c = len(labels)
    s, t = _ml_scores(cx, x, None)
    if t == 1 and c == 2:
        pt = cx.attr("post_transform", "NONE")
        if pt == "PROBIT":  # ONNX Runtime's output there follows no rule it states
            cx.fail("post_transform 'PROBIT' of one score for two classes is not supported")
        if pt not in ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"):
            _post_transform(cx, s)  # raises
        p = dsl.apply("sigmoid", s) if pt == "LOGISTIC" else s
        z = dsl.apply("concat", 1.0 - p, p, axis=1)
        idx = dsl.reshape(dsl.apply("greater", s, dsl.const(0.0)), (s.shape[0],))
    elif t == c and c >= 2:
        z = _post_transform(cx, s)
        idx = dsl.apply("cast", dsl.apply("argmax", z, axis=1, keepdims=False), dtype="f32")
    else:
        cx.fail(f"{t} score columns for {c} classes (graphc reads T = C, or T = 1 for C = 2)")
    return _label_outputs(cx, idx, numeric, labels, z)


def _linear_regressor(cx: NodeContext) -> list[Value]:
    """LinearRegressor (ai.onnx.ml; scikit-learn's LinearRegression, Ridge, ...): y = x @ W.T +
    b, [N, targets]. A post_transform applies with several targets; with one, ONNX Runtime
    ignores it and ONNX's reference refuses it: graphc refuses it too."""
    x = cx.x(0)
    targets = int(cx.attr("targets", 1))
    s, t = _ml_scores(cx, x, targets)
    if t == 1 and cx.attr("post_transform", "NONE") != "NONE":
        cx.fail(
            f"post_transform {cx.attr('post_transform')!r} on one target: ONNX Runtime ignores "
            "it and ONNX's reference implementation refuses it; graphc does not guess"
        )
    return [_post_transform(cx, s)]


def _normalizer(cx: NodeContext) -> list[Value]:
    """Normalizer (ai.onnx.ml; scikit-learn's Normalizer, and after LogisticRegression's
    probabilities): each row of [N, C] divided by its max (MAX, the default), its sum of
    absolute values (L1) or its Euclidean norm (L2), as ONNX Runtime computes them; a row whose
    divisor is 0 stays as it is."""
    x = cx.x(0)
    _ml_features(cx, x)
    norm = cx.attr("norm", "MAX")
    if norm == "MAX":
        d = dsl.apply("max", x, axes=(1,), keepdims=True)
    elif norm == "L1":
        d = dsl.sum(_abs(x), 1, keepdims=True)
    elif norm == "L2":
        d = dsl.sqrt(dsl.sum(x * x, 1, keepdims=True))
    else:
        cx.fail(f"norm {norm!r} is not one of MAX, L1, L2")
    return [x / (d + dsl.apply("equal", d, dsl.const(0.0)))]  # d == 0: x / 1


def _binarizer(cx: NodeContext) -> list[Value]:
    """Binarizer (ai.onnx.ml): 1 where x > threshold (default 0), else 0 (NaN: 0; ONNX Runtime
    refuses NaN inputs)."""
    t = dsl.apply("greater", cx.x(0), dsl.const(float(cx.attr("threshold", 0.0))))
    cx.imp.integral.add(id(t))
    return [t]


def _sign(cx: NodeContext) -> list[Value]:
    """Sign: [x > 0] - [x < 0] (-1, 0 or 1), NaN where x is NaN (numpy, torch and ONNX
    Runtime alike); its derivative is 0."""
    x = cx.x(0)
    zero = dsl.const(0.0)
    t = dsl.apply("greater", x, zero) - dsl.apply("greater", zero, x)
    t = dsl.apply("where", dsl.apply("not_equal", x, x), x, t)  # x != x only for NaN
    cx.imp.integral.add(id(t))
    return [t]


_ROUND_MAGIC = 2.0**23  # a + M - M rounds a float32 0 <= a < 2**23 to an integer, ties even


def _round(cx: NodeContext) -> list[Value]:
    """Round: the nearest integer, halves to the even one (ONNX's and numpy's rule): with a =
    |x| < 2**23, (a + M) - M with M = 2**23 in float32 arithmetic (IEEE rounds the sum, whose
    spacing is 1, to an integer, ties to even; M is even), the sign of x put back; larger
    values (integers already), infinities and NaN pass unchanged. Nondifferentiable (derivative
    0, as torch.round)."""
    t = _nearest_integer(cx.x(0))
    cx.imp.integral.add(id(t))
    return [t]


def _nearest_integer(x: Tensor) -> Tensor:
    """x rounded to the nearest integer, halves to even (C's nearbyint, numpy's round), as
    _round describes; derivative 0."""
    a = _abs(x)
    r = (a + _ROUND_MAGIC) - _ROUND_MAGIC
    zero = dsl.const(0.0)
    r = dsl.apply("where", dsl.apply("greater", zero, x), zero - r, r)
    small = dsl.apply("greater", dsl.const(_ROUND_MAGIC), a)
    return dsl.apply("cast", dsl.apply("where", small, r, x), dtype="f32")  # cast: no gradient


def _zipmap(cx: NodeContext) -> list[Value]:
    # scikit-learn's list of {class: probability} dicts: graphc returns the [N, C] array whose
    # columns are the classes in the order of classlabels_*
    return [cx.x(0)]


MAX_COMPOSED_AXIS = 4096  # the largest axis a composed max/argmax walks one slice at a time


def _composed_axis_size(
    cx: NodeContext, x: Tensor, axis: int, what: str, composed: str, limit: int
) -> int:
    """The size of ``x``'s ``axis`` for a rule that composes one slice per element along it:
    refused (naming ``what`` / ``composed``) over the batch axis N or beyond ``limit``."""
    size = x.shape[axis]
    if size == "N":
        cx.fail(f"{what} over the batch dimension N of {_fmt(x.shape)} is not supported")
    if int(size) > limit:
        cx.fail(f"axis {axis} has {size} elements; graphc composes {composed} over at most {limit}")
    return int(size)


def _slices(cx: NodeContext, x: Tensor, axis: int) -> list[Tensor]:
    """The slices of ``x`` along ``axis`` (kept as size-1 axes): sum(x * e_k, axis), exact."""
    size = _composed_axis_size(cx, x, axis, "a max", "max/argmax", MAX_COMPOSED_AXIS)
    trail = (1,) * (len(x.shape) - axis - 1)
    out = []
    for k in range(size):
        e = np.zeros((size, *trail), np.float32)
        e[k] = 1.0
        sel = cx.imp.constant_tensor(f"onehot_{size}_{k}", e, cx, False)
        out.append(dsl.sum(x * sel, axis, keepdims=True))
    return out


def _max_along(cx: NodeContext, x: Tensor, axis: int) -> Tensor:
    """max over ``axis`` (kept as a size-1 axis) as a chain of elementwise maxima of its
    slices (graphc has no max reduction yet)."""
    parts = _slices(cx, x, axis)
    m = parts[0]
    for p in parts[1:]:
        m = dsl.maximum(m, p)
    return m


def _drop_axis(cx: NodeContext, t: Tensor, axis: int) -> Tensor:
    return _reshape(cx, t, tuple(d for i, d in enumerate(t.shape) if i != axis))


def _reduce_max(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    axes = _reduction_axes(cx, len(x.shape), 18)
    if not axes:
        return [x * 1.0]
    keep = bool(cx.attr("keepdims", 1))
    if native("max"):
        return [dsl.apply("max", x, axes=axes, keepdims=keep or None)]
    y = x
    for a in axes:
        y = _max_along(cx, y, a)
    if not keep:
        y = _reshape(cx, y, tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return [y]


def _reduce_min(cx: NodeContext) -> list[Value]:
    """ReduceMin: graphc's min over ``axes`` (attribute before opset 18, input from 18)."""
    x = cx.x(0)
    axes = _reduction_axes(cx, len(x.shape), 18)
    if not axes:
        return [x * 1.0]
    return [dsl.apply("min", x, axes=axes, keepdims=bool(cx.attr("keepdims", 1)) or None)]


def _argmin(cx: NodeContext) -> list[Value]:
    """ArgMin as the ArgMax of -x (the first minimum at a tie; NaN as in _argmax_of)."""
    return _argmax_of(cx, -cx.x(0))


def _mean_of(cx: NodeContext) -> list[Value]:
    """Mean (variadic): the broadcast sum of the inputs (Sum's rule) divided by their count."""
    total = _variadic(lambda a, b: a + b)(cx)[0]
    count = sum(1 for i in range(cx.n_inputs) if cx.has(i))
    return [total * (1.0 / count) if count > 1 else total]


def _argmax(cx: NodeContext) -> list[Value]:
    """ArgMax of the node's input (see _argmax_of)."""
    return _argmax_of(cx, cx.x(0))


def _argmax_of(
    cx: NodeContext, x: Tensor, axis: int | None = None, keep: bool | None = None
) -> list[Value]:
    """The index of the first maximum of ``x`` along the node's ``axis`` (the last with
    select_last_index=1), as float32, with NaN as ONNX Runtime reads it (ONNX leaves it
    unspecified): ONNX Runtime 1.32's ArgMax, ArgMin and Hardmax walk the axis comparing each
    element with the best so far (``>``, or ``>=`` for the last index), starting from element
    0, so a NaN never becomes the best, but a NaN first stays it: index 0 (probed on rows of 1
    to 1000 along the first, a middle and the last axis; numpy's argmax picks the first NaN).
    Computed as: m the max of x with NaN as -inf, hit_k = [x_k >= m] (false for NaN), index =
    (S - 1) - max_k(hit_k * (S - 1 - k)) or max_k(hit_k * k), and 0 where x_0 is NaN.
    Nondifferentiable, exact for sizes S < 2**24.

    Raises:
        OnnxError: an axis of the batch dimension N (its first element is no fixed slice).
    """
    r = len(x.shape)
    axis = _axis(cx, int(cx.attr("axis", 0)), r) if axis is None else axis
    keep = bool(cx.attr("keepdims", 1)) if keep is None else keep
    last = bool(cx.attr("select_last_index", 0))
    size = x.shape[axis]
    if size == "N":
        cx.fail(f"an index along the batch dimension N of {_fmt(x.shape)} is not supported")

    def most(t: Tensor) -> Tensor:
        if native("max"):
            return dsl.apply("max", t, axes=(axis,), keepdims=True)
        return _max_along(cx, t, axis)

    nan = dsl.apply("not_equal", x, x)
    m = most(dsl.apply("where", nan, dsl.const(-math.inf), x))
    hit = dsl.apply("greater_equal", x, m)
    trail = (1,) * (r - axis - 1)
    ks = np.arange(int(size), dtype=np.float32)
    rank = (ks if last else ks[::-1].copy()).reshape((int(size), *trail))
    what = "index" if last else "rank"
    t = most(hit * cx.imp.constant_tensor(f"{what}_{size}", rank, cx, False))
    if not last:
        t = (int(size) - 1) - t
    first = dsl.apply("slice", nan, axes=(axis,), starts=(0,), ends=(1,))
    t = t * (1.0 - first)  # a NaN first stays the best
    t = dsl.apply("cast", t, dtype="f32") if native("cast") else t  # no gradient
    if not keep:
        t = _drop_axis(cx, t, axis)
    cx.imp.integral.add(id(t))
    return [t]


# --- operators real exporters write beside the activations (torch's Hardshrink writes Or of
# two comparisons; Keras and hand-written graphs Floor/Ceil, IsNaN/IsInf masks, CumSum,
# Hardmax, Einsum matrix products, Tile, Trilu, OneHot). Masks are float32 0/1 values, as
# graphc's comparisons (marked integral: a Cast to bool or int keeps them).


def _mask(cx: NodeContext, t: Tensor) -> Tensor:
    cx.imp.integral.add(id(t))
    return t


def _logical(kind: str) -> Callable[[NodeContext], list[Value]]:
    """And, Or, Xor of 0/1 masks (broadcast): a * b, max(a, b), [a != b]; Not: 1 - a. Any
    nonzero is true, as a bool cast would read it ([a != 0] first)."""

    def convert(cx: NodeContext) -> list[Value]:
        zero = dsl.const(0.0)
        args = [dsl.apply("not_equal", cx.x(i), zero) for i in range(cx.n_inputs)]
        if kind == "not":
            return [_mask(cx, 1.0 - args[0])]
        a, b = args
        if kind == "and":
            t = a * b
        elif kind == "or":
            t = dsl.maximum(a, b)
        else:
            t = dsl.apply("not_equal", a, b)
        return [_mask(cx, t)]

    return convert


def _logical_fold(f: Callable) -> Callable[[NodeContext, list], list]:
    def fold(cx: NodeContext, args: list) -> list:
        if any(np.asarray(a).dtype == object for a in args):
            cx.fail("logic on the batch size N is not supported in shape computations")
        return [np.asarray(f(*(np.asarray(a).astype(bool) for a in args)))]

    return fold


def _isnan(cx: NodeContext) -> list[Value]:
    x = cx.x(0)
    return [_mask(cx, dsl.apply("not_equal", x, x))]  # only NaN differs from itself


def _isinf(cx: NodeContext) -> list[Value]:
    """IsInf: [x == +inf] (detect_positive, default 1) + [x == -inf] (detect_negative,
    default 1); NaN is not infinite."""
    x = cx.x(0)
    pos, neg = int(cx.attr("detect_positive", 1)), int(cx.attr("detect_negative", 1))
    terms = [
        dsl.apply("equal", x, dsl.const(v)) for v, on in ((math.inf, pos), (-math.inf, neg)) if on
    ]
    if not terms:
        return [_mask(cx, dsl.apply("equal", x, x) * 0.0)]
    return [_mask(cx, terms[0] + terms[1] if len(terms) == 2 else terms[0])]


def _fold_isinf(cx: NodeContext, args: list) -> list:
    a = np.asarray(args[0], dtype=np.float64)
    pos, neg = int(cx.attr("detect_positive", 1)), int(cx.attr("detect_negative", 1))
    return [(np.isposinf(a) & bool(pos)) | (np.isneginf(a) & bool(neg))]


def _shrink(cx: NodeContext) -> list[Value]:
    """Shrink (torch's Hardshrink and Softshrink): x - bias for x > lambd, x + bias for
    x < -lambd, 0 otherwise (lambd 0.5, bias 0 by default; ONNX's definition, so NaN gives 0
    as in ONNX Runtime). Gradient 1 outside [-lambd, lambd], 0 inside."""
    x = cx.x(0)
    lambd, bias = float(cx.attr("lambd", 0.5)), float(cx.attr("bias", 0.0))
    zero = dsl.const(0.0)
    hi = dsl.apply("greater", x, dsl.const(lambd))
    lo = dsl.apply("less", x, dsl.const(-lambd))
    y = dsl.apply("where", hi, x - bias if bias else x, zero)
    return [dsl.apply("where", lo, x + bias if bias else x, y)]


def _integral_part(cx: NodeContext, x: Tensor, direction: int) -> Tensor:
    """floor (direction -1) or ceil (+1) of ``x``: r = x rounded to the nearest integer (see
    _round: (|x| + 2**23) - 2**23 for |x| < 2**23), then r - [r > x] or r + [r < x]; a zero
    result takes x's sign (floor(-0.0) = -0.0, ceil(-0.5) = -0.0, as C and numpy); |x| >=
    2**23 (integers already), infinities and NaN pass unchanged. Derivative 0 (the cast)."""
    a = _abs(x)
    r = (a + _ROUND_MAGIC) - _ROUND_MAGIC
    zero = dsl.const(0.0)
    r = dsl.apply("where", dsl.apply("greater", zero, x), zero - r, r)
    if direction < 0:
        r = r - dsl.apply("greater", r, x)
    else:
        r = r + dsl.apply("greater", x, r)
    r = dsl.apply("where", dsl.apply("equal", r, zero), x * 0.0, r)
    small = dsl.apply("greater", dsl.const(_ROUND_MAGIC), a)
    out = _mask(cx, dsl.apply("cast", dsl.apply("where", small, r, x), dtype="f32"))
    cx.imp.ranges[id(out)] = ("floor" if direction < 0 else "ceil", (x,))
    return out


def _node_reads(node: Any) -> set[str]:
    """The values a node reads: its inputs, and the outer values its subgraphs (If's
    branches) name, which the node does not list."""
    names = {n for n in node.input if n}
    for a in node.attribute:
        for g in [a.g] if a.HasField("g") else list(a.graphs):
            inner = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
            for n in g.node:
                names |= {r for r in _node_reads(n) if r not in inner}
    return names


def _if(cx: NodeContext) -> list[Value]:
    """If whose condition is known at import time (a shape test, as torch's TorchScript
    exporter writes for x.squeeze(d): If(Shape(x)[d] == 1, Squeeze, Identity)): the nodes of
    the branch it takes are imported in place (their names are the graph's; they may read the
    graph's values), its outputs the branch's. A condition computed from the inputs is
    onnx_import_control.if_rule's (both branches, selected)."""
    c = np.asarray(cx.value(0))
    if c.size != 1 or c.dtype == object:
        cx.fail(f"its condition must be one boolean, got {c.tolist()}")
    branch = cx.attrs["then_branch" if bool(c.reshape(-1)[0]) else "else_branch"].g
    if len(branch.output) != len(cx.node.output):
        cx.fail(f"its branch has {len(branch.output)} outputs for the node's {len(cx.node.output)}")
    imp = cx.imp
    for t in branch.initializer:
        if t.name in imp.initializers or t.name in imp.values:
            cx.fail(f"its branch's initializer {t.name!r} shadows a value of the graph")
        imp.initializers[t.name] = tensor_to_array(t, imp.base_dir, f"{cx.where()}: {t.name!r}")
    for node in branch.node:
        imp.convert(cx.index, node)
    outs: list[Value] = []
    for o in branch.output:
        v = imp.views.get(o.name)
        outs.append(v if v is not None else imp.lookup(o.name, cx))
    return outs


def _hardmax(cx: NodeContext) -> list[Value]:
    """Hardmax: 1 at the first maximum along ``axis`` (default -1 from opset 13; 1 before,
    where the input is read as 2-D [prod(:axis), prod(axis:)]: the first maximum of all the
    elements from ``axis`` on, row-major, by a reshape to [..., prod(axis:)] and back), 0
    elsewhere: [k == argmax] with graphc's argmax (see _argmax_of). Derivative 0."""
    x = cx.x(0)
    r = len(x.shape)
    axis = _axis(cx, int(cx.attr("axis", -1 if cx.version >= 13 else 1)), r)
    block = x.shape[axis:] if cx.version < 13 else (x.shape[axis],)
    if "N" in block:
        cx.fail(f"a hardmax over the batch dimension N of {_fmt(x.shape)} is not supported")
    if len(block) > 1:  # before opset 13: the 2-D coercion's columns
        flat = _reshape(cx, x, (*x.shape[:axis], math.prod(int(v) for v in block)))
        return [_reshape(cx, _hardmax_along(cx, flat, axis), x.shape)]
    return [_hardmax_along(cx, x, axis)]


def _hardmax_along(cx: NodeContext, x: Tensor, axis: int) -> Tensor:
    """[k == argmax along ``axis``] (the first maximum; NaN as ArgMax reads it, see
    _argmax_of: ONNX Runtime 1.32's Hardmax of a row holding NaN depends on its vector width,
    e.g. zeros for [nan, 1, 3, 2] but position 3 for [nan, 0, -1, 2, -2, 0]) as float32 0/1."""
    size = x.shape[axis]
    idx = _argmax_of(cx, x, axis=axis, keep=True)[0]
    assert isinstance(idx, Tensor)
    ks = np.arange(int(size), dtype=np.float32).reshape(
        (int(size),) + (1,) * (len(x.shape) - axis - 1)
    )
    t = dsl.apply("equal", idx, cx.imp.constant_tensor(f"index_{size}", ks, cx, False))
    return _mask(cx, t)


MAX_GATHER_ELEMENTS = 1 << 14  # indices x positions compared per sample (64 KB of arena per row)


def _gather_elements(cx: NodeContext) -> list[Value]:
    """GatherElements (torch.gather, take_along_dim) of computed or input integer indices
    along a non-batch ``axis``: out[..., k, ...] = data[..., idx[..., k, ...], ...], negative
    indices counting from the end, as [idx' == j] for each position j of the axis (a select
    and a sum: the gradient reaches the picked elements only). The indices' other dimensions
    may be smaller than data's (data's leading part is read). Indices read from a graph input
    are checked by every entry (whole numbers in -S .. S-1); computed ones (ArgMax, TopK) are
    proven in that range by Importer.bound_integers, or the import is refused, as ONNX
    Runtime raises on one outside."""
    if isinstance(cx.value(1), np.ndarray):
        cx.fail(
            "indices known at import time have no batch dimension N (GatherElements picks per "
            "sample): graphc takes indices computed in the graph or read from an input"
        )
    data, idx = cx.x(0), cx.x(1)
    r = len(data.shape)
    axis = _axis(cx, int(cx.attr("axis", 0)), r)
    if data.shape[axis] == "N" or axis == 0:
        cx.fail(f"GatherElements along the batch dimension N of {_fmt(data.shape)}")
    if len(idx.shape) != r or tuple(idx.shape[:1]) != tuple(data.shape[:1]):
        cx.fail(f"indices {_fmt(idx.shape)} must have data's rank and batch, {_fmt(data.shape)}")
    if id(idx) not in cx.imp.integral:
        cx.fail("indices computed in float: GatherElements needs integer indices")
    for j in range(1, r):
        if j != axis and idx.shape[j] != data.shape[j]:
            if not isinstance(idx.shape[j], int) or idx.shape[j] > data.shape[j]:
                cx.fail(f"indices {_fmt(idx.shape)} do not fit data {_fmt(data.shape)}")
            data = _take(cx, data, j, list(range(int(idx.shape[j]))))
    hit = _index_hits(cx, idx, int(data.shape[axis]), axis)
    zero = dsl.const(0.0)
    wide = _reshape(cx, data, (*data.shape[:axis], 1, *data.shape[axis:]))
    out = dsl.sum(dsl.apply("where", hit, wide, zero), axes=axis + 1)
    if id(cx.x(0)) in cx.imp.integral:
        cx.imp.integral.add(id(out))
    return [out]


def _index_hits(
    cx: NodeContext,
    idx: Tensor,
    size: int,
    axis: int,
    span: tuple[int, int] | None = None,
    new_axis: bool = False,
) -> Tensor:
    """hit[..., k, j, ...] = [idx'[..., k, ...] == j] for each position j < ``size`` of
    ``axis`` (a new axis after it), idx' = idx + size where idx < 0: GatherElements' and
    ScatterElements' comparison of computed integer indices with an axis. Indices read from
    a graph input are checked by every entry (whole numbers in -size .. size-1); computed ones
    are proven in that range by Importer.bound_integers, or the import is refused. At most
    MAX_GATHER_ELEMENTS comparisons per sample, else refused naming the node. ``span``: the
    range to check instead, where values outside -size .. size-1 hit nothing (ignore_index).
    ``new_axis``: idx has no axis ``axis`` (a loss's targets): hit[..., j, ...] = [idx' == j]
    with j at ``axis``."""
    k = 1 if new_axis else int(idx.shape[axis])
    if math.prod(int(d) for d in idx.shape[1:]) * size > MAX_GATHER_ELEMENTS:
        cx.fail(
            f"{k} indices among {size} positions per row (graphc compares at most "
            f"{MAX_GATHER_ELEMENTS} pairs per sample)"
        )
    if idx.node.op == "input":  # the entries check its values (compiler.plan_input_checks)
        _index_input(cx, idx, size, span)
    else:
        cx.imp.lookups.append((idx, span or size, cx.where()))
    zero = dsl.const(0.0)
    wrapped = dsl.apply("where", dsl.apply("greater", zero, idx), idx + float(size), idx)
    cut = axis if new_axis else axis + 1
    col = _reshape(cx, wrapped, (*idx.shape[:cut], 1, *idx.shape[cut:]))
    trail = (1,) * (len(idx.shape) - cut)
    pos = np.arange(size, dtype=np.float32).reshape((size, *trail))
    return dsl.apply("equal", col, cx.imp.constant_tensor(f"index_{size}", pos, cx, False))


MAX_POOL_TERMS = 1024  # the most kernel offsets a MaxPool / AveragePool composes


def _trunc_div(a: int, b: int) -> int:
    """a / b rounded toward 0 (C's integer division, which ONNX Runtime's size rules use)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _same_pads(size: int, k: int, s: int, auto: str, clamp: bool) -> tuple[int, int]:
    """auto_pad SAME_UPPER / SAME_LOWER: the (begin, end) pads of one axis of ``size``, as
    ONNX Runtime computes them (pool_attributes.h, conv_attributes.h): ceil(size / s) window
    positions need (ceil(size / s) - 1) s + k - size pads, the odd one at the end (UPPER) or
    at the beginning (LOWER); ``clamp``: no fewer than 0 (Conv), else a negative total crops
    (pooling, C's division halving it). From the kernel's k: ONNX Runtime does not widen it
    by the dilations as the ONNX spec's formula ((k - 1) d + 1) does, so with dilations its
    pooling gives fewer outputs than the spec (7 elements, k 3, dilation 2: 5, not 7) and its
    Conv refuses. A judgement: ONNX Runtime runs the files users bring, so pooling follows
    it; Conv, which it refuses, takes the spec's dilated span ((k - 1) d + 1) as ``k``: that
    is torch's padding='same' with dilation (total (k - 1) d, the odd pad at the end), which
    torch.onnx.export writes as SAME_UPPER with dilations. Without dilations the rules agree.
    Shared by pooling and Conv."""
    need = (-(-size // s) - 1) * s + k - size
    if clamp:
        need = max(need, 0)
    begin = _trunc_div(need, 2) if auto == "SAME_UPPER" else _trunc_div(need + 1, 2)
    return begin, need - begin


def _pool_axis(
    cx: NodeContext, size: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool, auto: str
) -> tuple[int, int, int]:
    """One spatial axis of a pooling window: (output size, begin pad, end pad) by ONNX
    Runtime's rules (auto_pad VALID / SAME_UPPER / SAME_LOWER, or explicit pads with floor
    or ceil_mode; with ceil_mode a last window that would start past the input and its begin
    pad is dropped, as ONNX Runtime and torch). VALID is no padding with ceil_mode as given
    (ONNX Runtime's output size: with ceil_mode a last window may reach past the input);
    SAME_* takes _same_pads' pads, then the same size rule (with dilations, ONNX Runtime's
    output, not the spec's ceil(size / stride))."""
    span = (k - 1) * d + 1
    if auto == "VALID":
        pb = pe = 0
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pb, pe = _same_pads(size, k, s, auto, clamp=False)
    elif auto not in ("NOTSET", ""):
        cx.fail(f"auto_pad {auto!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    room = size + pb + pe - span
    out = (-(-room // s) if ceil else _trunc_div(room, s)) + 1
    if ceil and (out - 1) * s >= size + pb:
        out -= 1
    return out, pb, pe


def _conv_attrs(cx: NodeContext, x: Tensor, w: Tensor, transposed: bool) -> dict[str, Any]:
    """graphc conv / conv_transpose attrs of an ONNX Conv / ConvTranspose node: kernel_shape
    (checked against W's), strides, dilations, group, and the pads explicit or from auto_pad
    (VALID; SAME_UPPER / SAME_LOWER: the output size ceil(D / stride), or D * stride for
    ConvTranspose (its natural size (D - 1) * stride + span + output_padding where that is
    smaller, as ONNX Runtime), the odd pad at the end / at the beginning); ConvTranspose's output_padding
    and output_shape (which fixes the total pad of each axis)."""
    r = len(x.shape)
    if r < 3 or r > 5 or "N" in x.shape[1:]:
        cx.fail(f"input {_fmt(x.shape)}: convolution needs [N, C, D1, ...] with 1-3 spatial axes")
    if len(w.shape) != r or "N" in w.shape:
        cx.fail(f"weights {_fmt(w.shape)} must be [M, C/group, k1, ...] of rank {r}")
    nsp = r - 2
    ks = [int(v) for v in w.shape[2:]]
    given = cx.attr("kernel_shape")
    if given is not None and [int(v) for v in given] != ks:
        cx.fail(f"kernel_shape {list(given)} differs from the weights' {ks} ({_fmt(w.shape)})")
    strides = [int(v) for v in cx.attr("strides", [1] * nsp)]
    dil = [int(v) for v in cx.attr("dilations", [1] * nsp)]
    pads = [int(v) for v in cx.attr("pads", [0] * (2 * nsp))]
    outpad = [int(v) for v in cx.attr("output_padding", [0] * nsp)]
    if len(strides) != nsp or len(dil) != nsp or len(pads) != 2 * nsp or len(outpad) != nsp:
        cx.fail(f"strides {strides}, dilations {dil}, pads {pads} do not fit {nsp} axes")
    if min(strides) < 1 or min(dil) < 1 or min(pads) < 0 or min(outpad) < 0:
        cx.fail(f"strides {strides} and dilations {dil} must be >= 1, pads {pads} >= 0")
    auto = str(cx.attr("auto_pad", "NOTSET"))
    if auto not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        cx.fail(f"auto_pad {auto!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    out_shape = cx.attr("output_shape")
    if out_shape is not None:
        out_shape = [int(v) for v in out_shape][-nsp:]
    pb, pe = pads[:nsp], pads[nsp:]
    for a in range(nsp):
        size, span = int(x.shape[2 + a]), (ks[a] - 1) * dil[a] + 1
        if auto == "VALID":
            pb[a] = pe[a] = 0
        if not transposed:
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                # the dilated kernel's span (the ONNX spec's formula; torch's padding='same'
                # with dilation exports this, ONNX Runtime refuses it: see _same_pads)
                pb[a], pe[a] = _same_pads(size, span, strides[a], auto, clamp=True)
            continue
        natural = (size - 1) * strides[a] + span + outpad[a]
        want = out_shape[a] if out_shape is not None else None
        if want is None and auto in ("SAME_UPPER", "SAME_LOWER"):
            want = size * strides[a]
        if want is not None:
            total = natural - want
            if total < 0 and out_shape is None:
                # SAME with a kernel span below the stride: D * stride reaches past the last
                # window; ONNX Runtime pads nothing and keeps the natural size (its
                # ComputeTransposePadAndOutputShape clamps the total pad at 0)
                total = 0
            elif total < 0:  # output_shape past the last window: output padding
                outpad[a] -= total
                total = 0
            small = total // 2
            pb[a], pe[a] = (
                (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
            )
    attrs: dict[str, Any] = {
        "strides": tuple(strides),
        "dilations": tuple(dil),
        "pads": tuple(pb + pe),
        "groups": int(cx.attr("group", 1)),
    }
    if transposed and any(outpad):
        attrs["output_padding"] = tuple(outpad)
    return attrs


def _conv_rule(transposed: bool) -> Callable[[NodeContext], list[Value]]:
    """Conv: y = conv(X, W) (+ B over the channels); ConvTranspose: conv_transpose(X, W)
    (+ B). W may be an initializer (a param when trainable) or a value computed in the graph
    with a static shape."""
    op = "conv_transpose" if transposed else "conv"

    def rule(cx: NodeContext) -> list[Value]:
        x, w = cx.x(0), cx.x(1)
        attrs = _conv_attrs(cx, x, w, transposed)
        try:
            y = dsl.apply(op, x, w, **attrs)
        except GraphcError as e:
            cx.fail(f"{_fmt(x.shape)} with weights {_fmt(w.shape)}: {str(e).splitlines()[0]}")
        if cx.has(2):
            b = cx.x(2)
            channels = y.shape[1]
            if tuple(b.shape) != (channels,):
                cx.fail(f"bias B {_fmt(b.shape)} must be [{channels}] (one per output channel)")
            y = y + _reshape(cx, b, (channels,) + (1,) * (len(y.shape) - 2))
        return [y]

    return rule


def _power(x: Tensor, p: float) -> Tensor:
    """x ** p for a constant p (graphc's pow; x * 1, square and sqrt for 1, 2 and 1/2)."""
    if p == 1.0:
        return x * 1.0
    if p == 2.0:
        return dsl.square(x)
    if p == 0.5:
        return dsl.sqrt(x)
    return dsl.apply("pow", x, exponent=float(p))


def _lp_order(cx: NodeContext) -> float:
    """LpPool's / GlobalLpPool's attribute p (default 2), an integer >= 1 as ONNX Runtime
    takes it."""
    p = int(cx.attr("p", 2))
    if p < 1:
        cx.fail(f"p={p}: the norm's order must be an integer >= 1")
    return float(p)


def _lrn(cx: NodeContext) -> list[Value]:
    """LRN (local response normalization across channels; Krizhevsky et al. 2012, ONNX's
    definition): y = x / (bias + alpha / size * s) ** beta with s[c] the sum of x[c']^2 over
    the channels c - floor((size - 1) / 2) .. c + ceil((size - 1) / 2) that exist, for
    x [N, C, D1, ...]. Composed: a _take of the squares per window offset, masked where the
    offset leaves the channels."""
    x = cx.x(0)
    r = len(x.shape)
    if r < 3 or "N" in x.shape[1:]:
        cx.fail(f"input {_fmt(x.shape)}: LRN needs [N, C, D1, ...] with N first only")
    size = cx.attr("size")
    if size is None or int(size) < 1:
        cx.fail(f"size {size}: LRN needs its attribute size >= 1")
    size, c = int(size), int(x.shape[1])
    alpha, beta = float(cx.attr("alpha", 1e-4)), float(cx.attr("beta", 0.75))
    bias = float(cx.attr("bias", 1.0))
    sq = dsl.square(x)
    s: Tensor | None = None
    chans = np.arange(c)
    for off in range(-((size - 1) // 2), (size - 1) - (size - 1) // 2 + 1):
        src = chans + off
        inside = (src >= 0) & (src < c)
        if not inside.any():
            continue
        t = _take(cx, sq, 1, np.clip(src, 0, c - 1).tolist())
        if not inside.all():
            m = inside.astype(np.float32).reshape((c,) + (1,) * (r - 2))
            mask = cx.imp.constant_tensor(f"lrn_mask_{off}", m, cx, False)
            t = dsl.apply("where", mask, t, dsl.const(0.0))
        s = t if s is None else s + t
    assert s is not None
    return [x * _power(s * (alpha / size) + bias, -beta)]


def _pool(kind: str) -> Callable[[NodeContext], list[Value]]:
    """MaxPool / AveragePool / LpPool of x [N, C, D1, ...] over its spatial axes: kernel_shape,
    strides, pads, dilations, ceil_mode, auto_pad and (AveragePool) count_include_pad as ONNX
    defines them. Composed: for each kernel offset, the elements it reads (_take along each
    spatial axis, exact); max: the maximum over the offsets, a window position in the padding
    replaced by another element of the same window (which leaves the maximum unchanged);
    average: the sum of the elements inside the input divided by their count (or, with
    count_include_pad, by the window's positions inside input and pads); lp: the p-norm of the
    window, (sum |x|^p)^(1/p), the padding adding 0 (ONNX Runtime's LpPool). A window with no
    element of the input is refused. MaxPool's Indices output: onnx_import_pool."""

    def rule(cx: NodeContext) -> list[Value]:
        x = cx.x(0)
        r = len(x.shape)
        if r < 3 or "N" in x.shape[1:]:
            cx.fail(f"input {_fmt(x.shape)}: pooling needs [N, C, D1, ...] with N first only")
        want_indices = len(cx.node.output) > 1 and bool(cx.node.output[1])
        nsp = r - 2
        ks = [int(v) for v in cx.attr("kernel_shape", [])]
        if len(ks) != nsp or min(ks) < 1:
            cx.fail(f"kernel_shape {ks} must give {nsp} sizes >= 1")
        strides = [int(v) for v in cx.attr("strides", [1] * nsp)]
        dil = [int(v) for v in cx.attr("dilations", [1] * nsp)]
        pads = [int(v) for v in cx.attr("pads", [0] * (2 * nsp))]
        if len(strides) != nsp or len(dil) != nsp or len(pads) != 2 * nsp:
            cx.fail(f"strides {strides}, dilations {dil}, pads {pads} do not fit {nsp} axes")
        if min(strides) < 1 or min(dil) < 1 or min(pads) < 0:
            cx.fail(f"strides {strides} and dilations {dil} must be >= 1, pads {pads} >= 0")
        ceil = bool(cx.attr("ceil_mode", 0))
        auto = str(cx.attr("auto_pad", "NOTSET"))
        include = bool(cx.attr("count_include_pad", 0))
        p = _lp_order(cx) if kind == "lp" else 0.0
        if math.prod(ks) > MAX_POOL_TERMS:
            cx.fail(f"a kernel of {math.prod(ks)} elements (graphc composes {MAX_POOL_TERMS})")
        axes = []  # per spatial axis: [(indices, valid, counted) per offset], output size
        tiles = ks == strides and max(dil) == 1  # (MaxPool's Indices: windows tile the plane)
        for j in range(nsp):
            size = int(x.shape[2 + j])
            out, pb, pe = _pool_axis(
                cx, size, ks[j], strides[j], dil[j], pads[j], pads[nsp + j], ceil, auto
            )
            if out < 1:
                cx.fail(f"axis {2 + j} of {size} elements gives no pooling window")
            tiles = tiles and pb == 0 and out * ks[j] <= size
            pos = np.arange(out)[:, None] * strides[j] + np.arange(ks[j])[None, :] * dil[j] - pb
            # (a negative end pad, SAME_* with a kernel below the stride: ONNX Runtime's
            # AveragePool leaves the cropped positions out of its windows, its MaxPool not)
            end = size + min(pe, 0) if kind != "max" else size
            valid = (pos >= 0) & (pos < end)
            if not valid.any(axis=1).all():
                cx.fail(f"a pooling window along axis {2 + j} lies in the padding only")
            first = np.where(valid, pos, size).min(axis=1)  # a valid element of each window
            counted = (pos >= -pb) & (pos < size + pe) if include else valid
            axes.append(
                [
                    (np.where(valid[:, k], pos[:, k], first), valid[:, k], counted[:, k])
                    for k in range(ks[j])
                ]
            )
        acc: Tensor | None = None
        count = np.zeros([len(a[0][0]) for a in axes], np.float32)
        reads = []  # (MaxPool's Indices: each offset's elements, the maximum before, positions)
        for offsets in np.ndindex(*ks):
            t = x
            valid = np.ones(count.shape, bool)
            counted = np.ones(count.shape, bool)
            for j, k in enumerate(offsets):
                idx, v, c = axes[j][k]
                t = _take(cx, t, 2 + j, idx.tolist())
                shape = [1] * nsp
                shape[j] = len(idx)
                valid = valid & v.reshape(shape)
                counted = counted & c.reshape(shape)
            count += counted
            if kind == "max":
                reads.append((t, acc, [axes[j][k][0] for j, k in enumerate(offsets)]))
                acc = t if acc is None else first_max(acc, t)
                continue
            if kind == "lp":
                t = _power(_abs(t), p)
            if not valid.all():
                m = valid.astype(np.float32)
                tag = hashlib.sha256(m.tobytes() + str(m.shape).encode()).hexdigest()[:12]
                # selected, not multiplied: 0 * inf of the window's element that stands in
                # for the padding is NaN (an average of inf and finite values is inf)
                mask = cx.imp.constant_tensor(f"pool_mask_{tag}", m, cx, False)
                t = dsl.apply("where", mask, t, dsl.const(0.0))
            acc = t if acc is None else acc + t
        assert acc is not None
        if kind == "max" and want_indices:
            spatial = tuple(int(d) for d in x.shape[2:])
            kernel = tuple(ks) if tiles else None
            return [acc, onnx_import_pool.pool_indices(cx, reads, spatial, kernel)]
        if kind == "max":
            return [acc]
        if kind == "lp":
            return [_power(acc, 1.0 / p)]
        if kind == "sum":  # the sum and the count (onnx_import_quant's QLinearAveragePool)
            return [acc, count]
        inv = (1.0 / count).astype(np.float32)
        tag = hashlib.sha256(inv.tobytes() + str(inv.shape).encode()).hexdigest()[:12]
        return [acc * cx.imp.constant_tensor(f"pool_count_{tag}", inv, cx, False)]

    return rule


MAX_TOPK_PAIRS = 1 << 14  # TopK ranks by comparing every pair up to this many per sample
MAX_TOPK_AXIS = 1 << 16  # the longest axis TopK picks from (K rounds of a pick beyond the pairs)
MAX_TOPK_ROUNDS = 64  # the largest K TopK picks in rounds


def _topk(cx: NodeContext) -> list[Value]:
    """TopK: the K largest (largest=1, the default) or smallest elements along ``axis``
    (default -1) and their indices (as float32, like ArgMax), in order, a tie going to the
    lower index first (ONNX Runtime's order; ``sorted=0`` leaves the order free, and graphc
    gives this one). K is input 1 (attribute ``k`` before opset 10), known at import time.

    Method: each element's rank, the number of elements before it in that order
    (x_j > x_i, or x_j == x_i with j < i; for largest=0, x_j < x_i), by a comparison of every
    pair along the axis; output p takes the element of rank p (a select and a sum: its
    gradient reaches that element only, and -inf or +inf values are ranked like any other).
    NaN ranks above every number (first for largest=1, last for largest=0) and NaNs tie, as
    ONNX Runtime orders them. The pairs take size * size * (the other axes' elements) per
    sample: beyond MAX_TOPK_PAIRS (an axis of 1000 classes would take 4 MB per row, 4 GB for a
    block of 1024 rows), K rounds (at most MAX_TOPK_ROUNDS) each pick the first of the
    largest remaining elements (NaNs by the same order) instead, in memory linear in the
    axis (_topk_rounds)."""
    x = cx.x(0)
    r = len(x.shape)
    axis = _axis(cx, int(cx.attr("axis", -1)), r)
    size = x.shape[axis]
    if size == "N":
        cx.fail(f"TopK along the batch dimension N of {_fmt(x.shape)} is not supported")
    size = int(size)
    if size > MAX_TOPK_AXIS:
        cx.fail(f"TopK along an axis of {size} elements (graphc ranks at most {MAX_TOPK_AXIS})")
    raw = np.ravel(np.asarray(cx.c(1))) if cx.has(1) else np.array([cx.attr("k", 0)])
    if raw.size != 1 or raw.dtype.kind not in "iu":
        cx.fail(f"K must be one integer known at import time, got {raw.tolist()}")
    k = int(raw[0])
    if not 1 <= k <= size:
        cx.fail(f"K = {k} must lie in 1 .. {size}, the size of axis {axis}")
    largest = bool(cx.attr("largest", 1))
    trail = (1,) * (r - axis - 1)
    inner = math.prod(int(d) for d in x.shape[1:]) // size
    if size * size * inner > MAX_TOPK_PAIRS:
        if k > MAX_TOPK_ROUNDS:
            cx.fail(
                f"K = {k} of an axis of {size} elements (graphc picks at most "
                f"{MAX_TOPK_ROUNDS} beyond {MAX_TOPK_PAIRS} compared pairs per sample)"
            )
        return _topk_rounds(cx, x, axis, k, largest)
    shape = tuple(x.shape)
    xi = _reshape(cx, x, (*shape[: axis + 1], 1, *shape[axis + 1 :]))  # [..., size (i), 1, ...]
    xj = _reshape(cx, x, (*shape[:axis], 1, *shape[axis:]))  # [..., 1, size (j), ...]
    # NaN ranks above every number and ties with NaN (ONNX Runtime's order, and torch's), so
    # that the ranks are a permutation: NaN compares false with everything, and two elements
    # of one rank gave their values' and positions' sum (an index past the axis)
    nj, ni = dsl.apply("not_equal", xj, xj), dsl.apply("not_equal", xi, xi)
    nan_first = nj * (1.0 - ni) if largest else ni * (1.0 - nj)
    before = dsl.apply("greater" if largest else "less", xj, xi) + nan_first
    lower = np.tril(np.ones((size, size), np.float32), -1).reshape((size, size, *trail))
    ties = (dsl.apply("equal", xj, xi) + nj * ni) * cx.imp.constant_tensor(
        f"topk_lower_{size}", lower, cx, False
    )
    rank = dsl.sum(before + ties, axes=axis + 1)  # [..., size, ...]
    pos = np.arange(size, dtype=np.float32).reshape((size, *trail))
    positions = cx.imp.constant_tensor(f"index_{size}", pos, cx, False)
    values, indices = [], []
    for p in range(k):
        pick = dsl.apply("equal", rank, dsl.const(float(p)))
        values.append(
            dsl.sum(dsl.apply("where", pick, x, dsl.const(0.0)), axes=axis, keepdims=True)
        )
        indices.append(dsl.sum(pick * positions, axes=axis, keepdims=True))
    if k == 1:
        v, i = values[0], indices[0]
    else:
        v = dsl.apply("concat", *values, axis=axis)
        i = dsl.apply("concat", *indices, axis=axis)
    cx.imp.ranges[id(i)] = ("index", (size,))  # a position: 0 .. size - 1 (onnx_bounds)
    return [v, _mask(cx, i)]


def _topk_rounds(cx: NodeContext, x: Tensor, axis: int, k: int, largest: bool) -> list[Value]:
    """TopK as K rounds over a long axis (see _topk): each round picks, among the elements not
    yet picked, the first NaN (largest=1) or else the first of the largest numbers (for
    largest=0, the smallest numbers first, then the NaNs), by a max, a comparison and a min
    of positions; memory linear in the axis."""
    size = int(x.shape[axis])
    trail = (1,) * (len(x.shape) - axis - 1)
    pos = np.arange(size, dtype=np.float32).reshape((size, *trail))
    positions = cx.imp.constant_tensor(f"index_{size}", pos, cx, False)
    v = x if largest else dsl.apply("neg", x)
    isnan = dsl.apply("not_equal", v, v)
    number = 1.0 - isnan
    zero, past = dsl.const(0.0), dsl.const(float(size))
    low = dsl.const(float("-inf"))
    taken: Tensor | None = None
    values, indices = [], []
    for _ in range(k):
        free = 1.0 if taken is None else 1.0 - taken
        free_number, free_nan = number * free, isnan * free
        m = dsl.apply("max", dsl.apply("where", free_number, v, low), axes=(axis,), keepdims=True)
        hit_number = dsl.apply("equal", v, m) * free_number
        if largest:
            some = dsl.apply("max", free_nan, axes=(axis,), keepdims=True)
            hit = dsl.apply("where", some, free_nan, hit_number)
        else:
            some = dsl.apply("max", hit_number, axes=(axis,), keepdims=True)
            hit = dsl.apply("where", some, hit_number, free_nan)
        first = dsl.apply("where", hit, positions, past)
        idx = dsl.apply("min", first, axes=(axis,), keepdims=True)
        pick = dsl.apply("equal", positions, idx)
        values.append(dsl.sum(dsl.apply("where", pick, x, zero), axes=axis, keepdims=True))
        indices.append(idx)
        taken = pick if taken is None else taken + pick
    v_out = values[0] if k == 1 else dsl.apply("concat", *values, axis=axis)
    i_out = indices[0] if k == 1 else dsl.apply("concat", *indices, axis=axis)
    cx.imp.ranges[id(i_out)] = ("index", (size,))  # a position: 0 .. size - 1 (onnx_bounds)
    return [v_out, _mask(cx, i_out)]


MAX_CUMSUM = 1024  # the longest axis CumSum composes (one add and slice per element)


def _cumsum(cx: NodeContext) -> list[Value]:
    """CumSum along ``axis`` (input 1, known at import time) of a non-batch axis: running sums
    of the slices, in order (as ONNX Runtime adds them), joined by concat; ``exclusive``
    shifts by one (a leading 0), ``reverse`` sums from the end. Gradient: the reverse
    cumulative sum (autodiff of the adds)."""
    return _running(cx, "sum")


def _cumprod(cx: NodeContext) -> list[Value]:
    """CumProd (opset 26) as CumSum with products: running products of the slices in order;
    ``exclusive`` starts from an exact 1 (ONNX's), ``reverse`` from the end. Gradient: autodiff
    of the products."""
    return _running(cx, "prod")


def _running(cx: NodeContext, kind: str) -> list[Value]:
    x = cx.x(0)
    r = len(x.shape)
    a = np.asarray(cx.c(1))
    if a.size != 1 or a.dtype.kind not in "iu":
        cx.fail(f"axis must be one integer, got {a.tolist()!r}")
    axis = _axis(cx, int(a.reshape(())), r)
    what = "a cumulative sum" if kind == "sum" else "a cumulative product"
    size = _composed_axis_size(cx, x, axis, what, cx.node.op_type, MAX_CUMSUM)
    exclusive, reverse = bool(cx.attr("exclusive", 0)), bool(cx.attr("reverse", 0))
    parts = [
        dsl.apply("slice", x, axes=(axis,), starts=(k,), ends=(k + 1,)) if size != 1 else x
        for k in range(int(size))
    ]
    order = list(range(int(size)))[::-1] if reverse else list(range(int(size)))

    def combine(u: Tensor, v: Tensor) -> Tensor:
        return u + v if kind == "sum" else u * v

    def start(p: Tensor) -> Tensor:  # exclusive's first element: 0 (as before), or exactly 1
        if kind == "sum":
            return p * 0.0
        one = cx.imp.constant_tensor("cumprod_one", np.ones((1,) * r, np.float32), cx, False)
        return dsl.apply("broadcast_to", one, p)

    sums: dict[int, Tensor] = {}
    run: Tensor | None = None
    for k in order:
        if exclusive:
            sums[k] = start(parts[k]) if run is None else run * 1.0
            run = parts[k] if run is None else combine(run, parts[k])
        else:
            run = parts[k] if run is None else combine(run, parts[k])
            sums[k] = run if run is not parts[k] else parts[k] * 1.0
    out = [sums[k] for k in range(int(size))]
    return [dsl.apply("concat", *out, axis=axis) if len(out) > 1 else out[0]]


def _fold_cumsum(cx: NodeContext, args: list) -> list:
    x = np.asarray(args[0])
    if x.dtype == object:
        cx.fail(f"{cx.node.op_type} of the batch size N is not supported in shape computations")
    axis = _axis(cx, int(np.asarray(args[1]).reshape(())), x.ndim)
    y = np.flip(x, axis) if cx.attr("reverse", 0) else x
    prod = cx.node.op_type == "CumProd"
    c = (np.cumprod if prod else np.cumsum)(y, axis=axis, dtype=x.dtype)
    if cx.attr("exclusive", 0):
        first = np.ones_like(np.take(y, [0], axis=axis)) if prod else None
        c = (
            np.concatenate([first, np.take(c, range(y.shape[axis] - 1), axis=axis)], axis=axis)
            if prod
            else c - y
        )
    return [np.flip(c, axis) if cx.attr("reverse", 0) else c]


def _tile(cx: NodeContext) -> list[Value]:
    """Tile with repeats known at import time: each non-batch axis joined to itself
    ``repeats`` times by concat (the batch axis only with repeat 1). Exact. A repeat of the
    batch size N (computed from Shape, as torch exports ``t.repeat(x.shape[0], 1, 1)`` of a
    [1, ...] weight) on a first axis of size 1 gives that axis N rows, each a copy (a
    broadcast, as Expand); N times any other axis is refused."""
    x = cx.x(0)
    raw = np.asarray(cx.c(1)).ravel()
    batch = [i for i, k in enumerate(raw.tolist()) if isinstance(k, str)]
    for i in batch:
        if raw[i] != "N" or i != 0 or x.shape[0] != 1:
            cx.fail(
                f"repeats {raw.tolist()}: a repeat of the batch size ({raw[i]}) is supported "
                f"only on a first axis of size 1 (giving N rows), not on axis {i} of "
                f"{_fmt(x.shape)}"
            )
    reps = np.array([1 if i in batch else k for i, k in enumerate(raw.tolist())], np.int64)
    if reps.size != len(x.shape) or (reps < 0).any():
        cx.fail(f"repeats {raw.tolist()} must be {len(x.shape)} non-negative integers")
    if (reps == 0).any():
        cx.fail(f"repeats {reps.tolist()} give a dimension of size 0")
    y = x
    for axis, k in enumerate(reps.tolist()):
        if k == 1:
            continue
        if x.shape[axis] == "N":
            cx.fail(f"repeating the batch dimension N of {_fmt(x.shape)} is not supported")
        y = dsl.apply("concat", *([y] * k), axis=axis)
    if batch:
        return [_broadcast(cx, y, ("N", *y.shape[1:]), raw.tolist())]
    return [y if y is not x else x * 1.0]


def _fold_tile(cx: NodeContext, args: list) -> list:
    if np.asarray(args[0]).dtype == object:
        cx.fail("Tile of the batch size N is not supported in shape computations")
    return [np.tile(args[0], np.asarray(args[1]).astype(np.int64).tolist())]


def _block_operand(cx: NodeContext, what: str) -> tuple[Tensor, int]:
    """DepthToSpace / SpaceToDepth's operand ([N, C, H, W], C, H and W fixed) and its
    ``blocksize`` (>= 1), else OnnxError naming the node."""
    x = cx.x(0)
    b = cx.attr("blocksize")
    if b is None or int(b) < 1:
        cx.fail(f"blocksize {b} must be an integer >= 1")
    if len(x.shape) != 4 or "N" in x.shape[1:]:
        cx.fail(f"{what} of {_fmt(x.shape)}: graphc supports [N, C, H, W] (rank 4) only")
    return x, int(b)


def _depth_to_space(cx: NodeContext) -> list[Value]:
    """DepthToSpace (torch's pixel_shuffle is mode CRD): [N, C, H, W] -> [N, C/b^2, H*b, W*b],
    y[n, c, h*b + i, w*b + j] = x[n, k, h, w] with k = (i*b + j)*C/b^2 + c (mode DCR, the
    default) or k = c*b^2 + i*b + j (mode CRD), as the ONNX operator's reshape / transpose /
    reshape definition. Composed of b^2 channel slices interleaved by reshape and concat:
    each group of b along W (a new last axis, merged into W), then the b rows along H. Exact
    (moves values only). OnnxError: rank other than 4, C not a multiple of b^2, another
    mode."""
    x, b = _block_operand(cx, "DepthToSpace")
    mode = cx.attr("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        cx.fail(f"mode {mode!r} is not one of 'DCR', 'CRD'")
    n, c, h, w = x.shape
    if c % (b * b):
        cx.fail(f"{c} channels of {_fmt(x.shape)} are not a multiple of blocksize^2 = {b * b}")
    if b == 1:
        return [x * 1.0]
    co = c // (b * b)
    # the b^2 blocks on their own axis: [N, b^2, C', H, W] (DCR) or [N, C', b^2, H, W] (CRD)
    ax = 1 if mode == "DCR" else 2
    grouped = _reshape(cx, x, (n, b * b, co, h, w) if ax == 1 else (n, co, b * b, h, w))

    def block(k: int) -> Tensor:  # [N, C', H, W, 1]: the channels of block k = i*b + j
        part = dsl.apply("slice", grouped, axes=(ax,), starts=(k,), ends=(k + 1,))
        return _reshape(cx, part, (n, co, h, w, 1))

    rows = []
    for i in range(b):  # row i of each block: [N, C', H, 1, W*b], W interleaved with j
        cols = dsl.apply("concat", *[block(i * b + j) for j in range(b)], axis=4)
        rows.append(_reshape(cx, cols, (n, co, h, 1, w * b)))
    y = dsl.apply("concat", *rows, axis=3)  # [N, C', H, b, W*b]
    return [_reshape(cx, y, (n, co, h * b, w * b))]


def _space_to_depth(cx: NodeContext) -> list[Value]:
    """SpaceToDepth (torch's pixel_unshuffle exports Reshape / Transpose instead): [N, C, H, W]
    -> [N, C*b^2, H/b, W/b], y[n, k, h, w] = x[n, c, h*b + i, w*b + j] with k = (i*b + j)*C + c
    (mode DCR, the default) or k = c*b^2 + i*b + j (mode CRD, opset 28), as the ONNX
    operator's reshape / transpose / reshape definition. Composed of b^2 slices (row i of each
    block, then column j) concatenated along the channels (DCR) or along a new axis after them
    (CRD). Exact. OnnxError: rank other than 4, H or W not a multiple of b, another mode."""
    x, b = _block_operand(cx, "SpaceToDepth")
    mode = cx.attr("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        cx.fail(f"mode {mode!r} is not one of 'DCR', 'CRD'")
    n, c, h, w = x.shape
    if h % b or w % b:
        cx.fail(f"height {h} and width {w} of {_fmt(x.shape)} must be multiples of blocksize {b}")
    if b == 1:
        return [x * 1.0]
    ho, wo = h // b, w // b
    one = (n, c, ho, wo) if mode == "DCR" else (n, c, 1, ho, wo)
    rows = _reshape(cx, x, (n, c, ho, b, w))  # [N, C, H', i, W]
    parts = []
    for i in range(b):
        row = dsl.apply("slice", rows, axes=(3,), starts=(i,), ends=(i + 1,))
        cols = _reshape(cx, row, (n, c, ho, wo, b))  # [N, C, H', W', j]
        for j in range(b):
            part = dsl.apply("slice", cols, axes=(4,), starts=(j,), ends=(j + 1,))
            parts.append(_reshape(cx, part, one))
    if mode == "DCR":
        return [dsl.apply("concat", *parts, axis=1)]
    y = dsl.apply("concat", *parts, axis=2)  # [N, C, b^2, H', W']
    return [_reshape(cx, y, (n, c * b * b, ho, wo))]


def _fold_depth_to_space(cx: NodeContext, args: list) -> list:
    a, b = np.asarray(args[0]), int(cx.attr("blocksize"))
    if a.ndim != 4 or a.shape[1] % (b * b):
        cx.fail(f"DepthToSpace of {_fmt(a.shape)} with blocksize {b}")
    n, c, h, w = a.shape
    if cx.attr("mode", "DCR") == "CRD":
        t = a.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        t = a.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return [t.reshape(n, c // (b * b), h * b, w * b)]


def _fold_space_to_depth(cx: NodeContext, args: list) -> list:
    a, b = np.asarray(args[0]), int(cx.attr("blocksize"))
    if a.ndim != 4 or a.shape[2] % b or a.shape[3] % b:
        cx.fail(f"SpaceToDepth of {_fmt(a.shape)} with blocksize {b}")
    n, c, h, w = a.shape
    t = a.reshape(n, c, h // b, b, w // b, b)
    if cx.attr("mode", "DCR") == "CRD":
        t = t.transpose(0, 1, 3, 5, 2, 4)
    else:
        t = t.transpose(0, 3, 5, 1, 2, 4)
    return [t.reshape(n, c * b * b, h // b, w // b)]


def _trilu(cx: NodeContext) -> list[Value]:
    """Trilu: x where the element of the last two axes [i, j] lies on or below (upper=0) /
    above (upper=1, the default) diagonal k (input 1, default 0; j - i <= k or j - i >= k),
    0 elsewhere (a select, so an inf or NaN outside gives 0, as ONNX Runtime)."""
    x = cx.x(0)
    if len(x.shape) < 2 or "N" in x.shape[-2:]:
        cx.fail(f"Trilu of {_fmt(x.shape)}: the last two axes must have fixed sizes")
    k = int(np.asarray(cx.c(1)).reshape(())) if cx.has(1) else 0
    rows, cols = int(x.shape[-2]), int(x.shape[-1])
    d = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = d >= k if cx.attr("upper", 1) else d <= k
    m = cx.imp.constant_tensor(f"trilu_{rows}_{cols}_{k}", keep.astype(np.float32), cx, False)
    return [dsl.apply("where", m, x, dsl.const(0.0))]


def _fold_trilu(cx: NodeContext, args: list) -> list:
    x = np.asarray(args[0])
    k = int(np.asarray(args[1]).reshape(())) if len(args) > 1 and args[1] is not None else 0
    return [np.triu(x, k) if cx.attr("upper", 1) else np.tril(x, k)]


def _onehot(cx: NodeContext) -> list[Value]:
    """OneHot: indices (computed or known), depth (known at import time), values [off, on]:
    on where the index (negative ones count from depth) equals the position along the new
    ``axis`` (default -1), off elsewhere; indices out of range give a row of off.
    Derivative 0 with respect to the indices."""
    idx = cx.x(0)
    depth_a = np.asarray(cx.c(1))
    if depth_a.size != 1:
        cx.fail(f"depth must be one number, got {depth_a.tolist()!r}")
    depth = int(depth_a.reshape(()))
    if depth < 1:
        cx.fail(f"depth {depth} gives a dimension of size 0")
    vals = cx.value(2)
    r = len(idx.shape) + 1
    axis = _axis(cx, int(cx.attr("axis", -1)), r)
    if axis == 0 and "N" in idx.shape:
        cx.fail("a one-hot axis before the batch dimension N is not supported")
    d = float(depth)
    fixed = dsl.apply("where", dsl.apply("less", idx, dsl.const(0.0)), idx + d, idx)
    shape = (*idx.shape[:axis], 1, *idx.shape[axis:])
    fixed = _reshape(cx, fixed, shape)
    ks = np.arange(depth, dtype=np.float32).reshape((depth,) + (1,) * (r - axis - 1))
    hot = dsl.apply("equal", fixed, cx.imp.constant_tensor(f"index_{depth}", ks, cx, False))
    if isinstance(vals, np.ndarray):
        off, on = (float(v) for v in np.asarray(vals, dtype=np.float64).ravel()[:2])
        if (off, on) == (0.0, 1.0):
            return [_mask(cx, hot)]
        return [hot * (on - off) + off]
    v = cx.x(2)
    off_t = dsl.apply("slice", v, axes=(0,), starts=(0,), ends=(1,))
    on_t = dsl.apply("slice", v, axes=(0,), starts=(1,), ends=(2,))
    return [dsl.apply("where", hot, on_t, off_t)]


def _fold_onehot(cx: NodeContext, args: list) -> list:
    idx, depth, vals = (np.asarray(a) for a in args)
    if idx.dtype == object:
        cx.fail("OneHot of the batch size N is not supported in shape computations")
    depth_i = int(depth.reshape(()))
    i = idx.astype(np.int64)
    i = np.where(i < 0, i + depth_i, i)
    axis = _axis(cx, int(cx.attr("axis", -1)), idx.ndim + 1)
    hot = np.expand_dims(i, axis) == np.arange(depth_i).reshape(
        (depth_i,) + (1,) * (idx.ndim - axis)
    )
    return [np.where(hot, vals.ravel()[1], vals.ravel()[0]).astype(vals.dtype)]


def _einsum_terms(cx: NodeContext, n: int) -> tuple[list[str], str]:
    """The input terms and the output term of the node's equation, an ellipsis ("...")
    replaced by labels of its own for the axes it stands for (numpy's rule: right-aligned,
    as broadcasting; the output's are the longest), and an implicit output (no "->") made as
    numpy does: the ellipsis' labels, then the labels used once in alphabetical order."""
    eq = str(cx.attr("equation", "")).replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    ins = lhs.split(",")
    if len(ins) != n:
        cx.fail(f"equation {eq!r} does not match the node's {n} inputs")
    spare = "".join(c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in eq)
    ranks = {i: len(cx.value(i).shape) - len(t.replace("...", "")) for i, t in enumerate(ins)}
    ranks = {i: k for i, k in ranks.items() if "..." in ins[i]}
    if any(k < 0 for k in ranks.values()):
        cx.fail(f"equation {eq!r} does not match the ranks of the inputs")
    width = max(ranks.values(), default=0)
    if width > len(spare):
        cx.fail(f"equation {eq!r}: too many axes under the ellipsis")
    ell = spare[:width]
    for i, k in ranks.items():
        ins[i] = ins[i].replace("...", ell[width - k :])
    if arrow:
        out = out.replace("...", ell)
    else:
        body = "".join(ins)
        out = ell + "".join(sorted(c for c in set(body) if c not in ell and body.count(c) == 1))
    if not all(t == "" or t.isalpha() for t in ins) or not (out == "" or out.isalpha()):
        cx.fail(f"equation {eq!r} does not match the node's {n} inputs")
    return ins, out


def _einsum(cx: NodeContext) -> list[Value]:
    """Einsum of any number of operands (torch.einsum, Keras EinsumDense and attention, tf2onnx's
    Tensordot), as numpy.einsum evaluates it. One operand: a sum over labels and a transpose in
    any order. Two or more: contracted pairwise from the left (_einsum_pair), each pair one
    matrix product, graphc's matmul or batched_matmul (no size cap: "bhqd,bhkd->bhqk" at
    T = 256, d = 64 is one batched product, nothing broadcast); the result permuted to the
    output's order. A label repeated in an input term takes that term's diagonal first ("bii->bi",
    "ii,i->i": _einsum_diagonals); a label in one operand only and not in the output is summed
    there first ("nij,jk->nk"). Raises OnnxError naming the equation: a label repeated in the
    output, an output label in no input, a sum over the batch dimension N, two operands' batch
    dimensions in different labels (a product across samples), an output order that moves N
    (other than a 2-D [N, C] -> [C, N]), sizes of one label that differ."""
    if cx.n_inputs == 1:
        return [_einsum_unary(cx)]
    if cx.n_inputs < 1:
        cx.fail("no operands")
    terms, so = _einsum_terms(cx, cx.n_inputs)
    eq = ",".join(terms) + "->" + so
    if len(set(so)) != len(so):
        cx.fail(f"equation {eq!r}: a label repeated in the output is not supported")
    if any(c not in "".join(terms) for c in so):
        cx.fail(f"equation {eq!r}: an output label is in no input term")
    ops = [_einsum_diagonals(cx, cx.x(k), t, eq) for k, t in enumerate(terms)]
    y, sy = ops[0]
    for k in range(1, len(ops)):
        later = "".join(t for _, t in ops[k + 1 :]) + so
        y, sy = _einsum_pair(cx, (y, sy), ops[k], later, eq)
    return [_einsum_result(cx, y, sy, so, eq)]


def _einsum_result(cx: NodeContext, y: Tensor, sy: str, so: str, eq: str) -> Any:
    """y, whose axes hold the labels ``sy``, in the output's order ``so``: a permute, the 2-D
    transpose op ([N, C] -> [C, N]), or, where the order moves N of a higher rank ("ni,nij->jin"),
    a layout view of y permuted with N kept first (graphc.onnx_layout)."""
    n = sy[y.shape.index("N")] if "N" in y.shape else ""
    if not n or len(so) <= 2 or so.index(n) == 0:
        return _einsum_order(cx, y, sy, so, eq)
    base = n + "".join(c for c in so if c != n)
    view = onnx_layout.View(_einsum_order(cx, y, sy, base, eq), tuple((base.index(c),) for c in so))
    return onnx_layout._out(view)


def _einsum_pair(
    cx: NodeContext, left: tuple[Tensor, str], right: tuple[Tensor, str], keep: str, eq: str
) -> tuple[Tensor, str]:
    """Two einsum terms contracted into the labels of ``keep`` (the later terms' and the
    output's) as one matrix product op(A) [.., M, K] @ op(B) [.., K, P]: the labels both terms
    keep lead (the batch dimension N first; their sizes broadcast as numpy's), each term's own
    labels are merged into M (left) or P (right), the labels both sum over into K; a transpose
    flag instead of a permute where the term already holds K before M or after P. N in one
    term only leads that term alone, the other broadcasting against it. Returns the product
    [lead.., M labels.., P labels..] and its term."""
    (a, sa), (b, sb) = left, right
    a, sa = _einsum_sum_alone(cx, a, sa, sb + keep, eq)
    b, sb = _einsum_sum_alone(cx, b, sb, sa + keep, eq)
    dims = dict(zip(sa, a.shape)), dict(zip(sb, b.shape))
    shared = [c for c in sa if c in sb]
    for c in shared:
        da, db = dims[0][c], dims[1][c]
        if da != db and (c not in keep or 1 not in (da, db)):
            cx.fail(f"equation {eq!r}: label {c!r} has sizes {da} and {db}")
    n_of = [term[t.shape.index("N")] if "N" in t.shape else "" for t, term in ((a, sa), (b, sb))]
    if any(c in shared and c not in keep for c in n_of if c):
        cx.fail(f"equation {eq!r} sums over the batch dimension N")
    if all(n_of) and n_of[0] != n_of[1]:
        cx.fail(
            f"equation {eq!r} pairs the batch dimensions N of two operands under different "
            f"labels ({n_of[0]!r}, {n_of[1]!r}): a product across samples"
        )
    nl = n_of[0] or n_of[1]
    batch = "".join(sorted((c for c in shared if c in keep), key=lambda c: c != nl))
    summed = "".join(c for c in shared if c not in keep)
    own = ["".join(c for c in t if c not in shared and c != nl) for t in (sa, sb)]
    lead = [nl + batch if nl in t and nl not in batch else batch for t in (sa, sb)]

    def operand(k: int, t: Tensor, term: str) -> tuple[Tensor, bool]:
        # [lead.., own, K] for the left term, [lead.., K, own] for the right one, or the two
        # blocks swapped (the transpose flag) when that is the term's order; merged blocks
        blocks = [own[k], summed][:: 1 if k == 0 else -1]
        flip = term != lead[k] + "".join(blocks) and term == lead[k] + "".join(blocks[::-1])
        blocks = blocks[::-1] if flip else blocks
        t = _einsum_order(cx, t, term, lead[k] + "".join(blocks), eq)
        shape = [dims[k][c] for c in lead[k]] + [
            math.prod(int(dims[k][c]) for c in s) for s in blocks
        ]
        return _reshape(cx, t, tuple(shape)), flip

    a2, ta = operand(0, a, sa)
    b2, tb = operand(1, b, sb)
    y = dsl.matmul(a2, b2, transpose_a=ta, transpose_b=tb)
    out = max(lead, key=len)
    shape = (*y.shape[: len(out)], *(dims[0][c] for c in own[0]), *(dims[1][c] for c in own[1]))
    return _reshape(cx, y, shape), out + own[0] + own[1]


def _einsum_sum_alone(
    cx: NodeContext, t: Tensor, term: str, other: str, eq: str
) -> tuple[Tensor, str]:
    """The term's labels that no other term or the output holds, summed over (numpy's einsum)."""
    axes = tuple(i for i, c in enumerate(term) if c not in other)
    if not axes:
        return t, term
    if any(t.shape[i] == "N" for i in axes):
        cx.fail(f"equation {eq!r} sums over the batch dimension N")
    return dsl.sum(t, axes), "".join(c for c in term if c in other)


def _einsum_order(cx: NodeContext, t: Tensor, term: str, order: str, eq: str) -> Tensor:
    """t, whose axes hold ``term``'s labels, with its axes in ``order``: a permute that keeps N
    where it is, or the 2-D transpose op ([N, C] -> [C, N])."""
    perm = [term.index(c) for c in order]
    if perm == list(range(len(term))):
        return t
    if perm == [1, 0]:
        return dsl.apply("transpose", t)
    if "N" in t.shape and perm[t.shape.index("N")] != t.shape.index("N"):
        cx.fail(
            f"equation {eq!r} moves the batch dimension N of {_fmt(t.shape)}: graphc "
            "evaluates products whose terms keep N where it is"
        )
    return permute(t, perm)


def _einsum_diagonals(cx: NodeContext, t: Tensor, term: str, eq: str) -> tuple[Tensor, str]:
    """An input term with a label repeated ("bii", "ii"): its diagonal, as numpy's einsum
    reads it: for each repeat at axes p < q (equal fixed sizes), sum over q of t times the
    identity on (p, q); the term loses the label's second place."""
    if len(term) != len(t.shape):
        cx.fail(f"equation {eq!r} does not match the rank of {_fmt(t.shape)}")
    while len(set(term)) != len(term):
        c = next(c for c in term if term.count(c) > 1)
        p = term.index(c)
        q = term.index(c, p + 1)
        n, m = t.shape[p], t.shape[q]
        if n == "N" or m == "N" or n != m:
            cx.fail(
                f"equation {eq!r}: the diagonal of label {c!r} needs equal fixed sizes, got {_fmt(t.shape)}"
            )
        eye = np.eye(int(n), dtype=np.float32)
        shape = tuple(int(n) if i in (p, q) else 1 for i in range(p, len(term)))
        mask = cx.imp.constant_tensor(f"einsum_eye_{n}", eye.reshape(shape), cx, False)
        t = dsl.sum(t * mask, (q,))
        term = term[:q] + term[q + 1 :]
    return t, term


def _einsum_unary(cx: NodeContext) -> Any:
    (sa,), so = _einsum_terms(cx, 1)
    eq = f"{sa}->{so}"
    if len(set(so)) != len(so):
        cx.fail(f"equation {eq!r}: a label repeated in the output is not supported")
    x, sa = _einsum_diagonals(cx, cx.x(0), sa, eq)
    if len(sa) != len(x.shape) or any(c not in sa for c in so):
        cx.fail(f"equation {eq!r} is not a transpose or a sum of {_fmt(x.shape)}")
    summed = tuple(i for i, c in enumerate(sa) if c not in so)
    if summed and "N" in [x.shape[i] for i in summed]:
        cx.fail(f"equation {eq!r} sums over the batch dimension N")
    y = dsl.sum(x, summed) if summed else x * 1.0
    return _einsum_result(cx, y, "".join(c for c in sa if c in so), so, eq)


def _fold_einsum(cx: NodeContext, args: list) -> list:
    if any(np.asarray(a).dtype == object for a in args):
        cx.fail("Einsum of the batch size N is not supported in shape computations")
    return [np.einsum(str(cx.attr("equation")), *args)]


# --- Sin, Cos, Tan, Atan (positional encodings and periodic features in front of an MLP):
# composed as float32 polynomials after a Cody-Waite range reduction, the reduced argument's
# derivative 1 (the multiple of pi/2 is rounded through a cast, derivative 0), so autodiff of
# the polynomials gives cos, -sin, 1 + tan^2, 1 / (1 + x^2) to the polynomials' accuracy.

# pi/2 in three float32 parts whose products with an integer below 2**15 are exact (Cody &
# Waite, "Software Manual for the Elementary Functions", 1980; the split of Cephes' sinf)
_PIO2 = (1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8)
# minimax coefficients on [-pi/4, pi/4] (Cephes sinf/cosf) and of atan on [0, tan(pi/8)]
_SIN = (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4)
_COS = (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5)
_ATAN = (-3.33329491539e-1, 1.99777106478e-1, -1.38776856032e-1, 8.05374449538e-2)
TRIG_EXACT_BELOW = 8192.0  # |x| above it: the reduction loses bits (ONNX Runtime's does not)


def _poly(z: Tensor, coeffs: Sequence[float]) -> Tensor:
    """c0 + z * (c1 + z * (c2 + ...)) by Horner's rule."""
    p: Tensor | float = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        p = z * p + c
    assert isinstance(p, Tensor)
    return p


def _sin_cos_reduced(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sin r, cos r, q) with x = k * pi/2 + r, |r| <= pi/4, q = k mod 4 in {-2, -1, 0, 1, 2}
    (q = +-2 both mean 2, -1 means 3)."""
    t = x * (2.0 / math.pi)
    zero = dsl.const(0.0)
    a = _abs(t)
    kr = (a + _ROUND_MAGIC) - _ROUND_MAGIC
    k = dsl.apply(
        "cast", dsl.apply("where", dsl.apply("greater", zero, t), zero - kr, kr), dtype="f32"
    )
    r = ((x - k * _PIO2[0]) - k * _PIO2[1]) - k * _PIO2[2]
    z = r * r
    s = r + (r * z) * _poly(z, _SIN)
    c = (1.0 - 0.5 * z) + (z * z) * _poly(z, _COS)
    h = k * 0.25
    q = k - 4.0 * ((_abs(h) + _ROUND_MAGIC) - _ROUND_MAGIC) * (
        1.0 - 2.0 * dsl.apply("greater", zero, h)
    )
    return s, c, q


def _trig(kind: str) -> Callable[[NodeContext], list[Value]]:
    """Sin, Cos or Tan of x: the reduced sine and cosine (see _sin_cos_reduced) placed by the
    quadrant (sin x = s, c, -s, -c; cos x = c, -s, -c, s; tan x = s / c or -c / s). For
    |x| <= 8192 the absolute error is below 1e-7 (tan's relative to max(1, |tan x|) below
    1e-6), as ONNX Runtime's; above it the reduction loses bits (0.03 at |x| = 1e6, where
    ONNX Runtime stays exact). NaN and +-inf give NaN; sin and tan keep the sign of a zero."""

    def convert(cx: NodeContext) -> list[Value]:
        x = cx.x(0)
        s, c, q = _sin_cos_reduced(x)

        def at(v: float) -> Tensor:
            return dsl.apply("equal", q if v != 2.0 else _abs(q), dsl.const(v))

        def pick(v0: Tensor, v1: Tensor, v2: Tensor, v3: Tensor) -> Tensor:
            w = dsl.apply("where", at(2.0), v2, v3)
            return dsl.apply("where", at(0.0), v0, dsl.apply("where", at(1.0), v1, w))

        if kind == "cos":
            return [pick(c, -s, -c, s)]
        if kind == "sin":
            y = pick(s, c, -s, -c)
        else:
            y = dsl.apply("where", dsl.maximum(at(0.0), at(2.0)), s / c, -(c / s))
        return [dsl.apply("where", dsl.apply("equal", x, dsl.const(0.0)), x, y)]  # -0.0

    return convert


def _atan(cx: NodeContext) -> list[Value]:
    """Atan: with a = |x|, u = 1/a above 1 (atan a = pi/2 - atan u), then v = (u - 1)/(u + 1)
    above tan(pi/8) (atan u = pi/4 + atan v), a polynomial in v (Cephes atanf), x's sign put
    back (-0.0 stays -0.0); atan(+-inf) = +-pi/2, NaN gives NaN."""
    return [_atan_of(cx.x(0))]


def _atan_of(x: Tensor) -> Tensor:
    """atan(x) as _atan describes."""
    zero = dsl.const(0.0)
    a = _abs(x)
    big = dsl.apply("greater", a, dsl.const(1.0))
    u = dsl.apply("where", big, 1.0 / dsl.maximum(a, dsl.const(1.0)), a)
    mid = dsl.apply("greater", u, dsl.const(math.tan(math.pi / 8)))
    v = dsl.apply("where", mid, (u - 1.0) / (u + 1.0), u)
    z = v * v
    y = v + (v * z) * _poly(z, _ATAN)
    y = dsl.apply("where", mid, y + math.pi / 4, y)
    y = dsl.apply("where", big, math.pi / 2 - y, y)
    y = dsl.apply("where", dsl.apply("greater", zero, x), zero - y, y)
    return dsl.apply("where", dsl.apply("equal", x, zero), x, y)


# --- InstanceNormalization (torch's GroupNorm exports as Reshape [N, G, -1] ->
# InstanceNormalization -> Reshape -> Mul -> Add) and Mod (torch's Unflatten computes its
# shape with Mod)


def _instance_norm(cx: NodeContext) -> list[Value]:
    """InstanceNormalization of x [N, C, D1, ...]: per sample and channel, (x - mean) /
    sqrt(var + epsilon) over D1... (biased variance; epsilon 1e-5 by default), times
    scale [C] plus B [C] (ONNX's definition; scale and B broadcast along C)."""
    x = _channels_first_input(cx, 3, "InstanceNormalization needs [N, C, D1, ...]")
    r = len(x.shape)
    normed = _standardize(x, tuple(range(2, r)), float(cx.attr("epsilon", 1e-5)))
    per_channel = (int(x.shape[1]),) + (1,) * (r - 2)
    scale = _reshape(cx, cx.x(1), per_channel)
    bias = _reshape(cx, cx.x(2), per_channel)
    return [normed * scale + bias]


def _channels_first_input(cx: NodeContext, min_rank: int, needs: str) -> Tensor:
    """The node's input 0, [N, C, ...] of rank ``min_rank`` or more with the batch N first and
    only there; else the node fails with ``needs`` (what the operator takes)."""
    x = cx.x(0)
    if len(x.shape) < min_rank:
        cx.fail(f"input {_fmt(x.shape)}: {needs}")
    if "N" in x.shape[1:]:
        cx.fail(f"input {_fmt(x.shape)}: only the first dimension may be the batch N")
    return x


def _standardize(x: Tensor, axes: tuple[int, ...], eps: float) -> Tensor:
    """(x - mean) / sqrt(var + eps) over ``axes`` (biased variance), as the normalizations
    define it."""
    d = x - dsl.mean(x, axes, keepdims=True)
    var = dsl.mean(dsl.square(d), axes, keepdims=True)
    return d * (1.0 / dsl.sqrt(var + eps))


def _group_norm(cx: NodeContext) -> list[Value]:
    """GroupNormalization of x [N, C, D1, ...] (or [N, C]): per sample, the C channels split
    into num_groups groups of C / num_groups consecutive channels, each group normalized over
    its channels and D1... together, (x - mean) / sqrt(var + epsilon) (biased variance,
    epsilon 1e-5 by default), then scaled and shifted. At opset 21 and later scale and bias are
    per channel [C]; at opsets 18 to 20 (GroupNormalization-18) they are per group
    [num_groups], each applied to every channel of its group: ONNX Runtime's kernel for that
    version, and the operator's definition there. onnx marks GroupNormalization-18 deprecated
    (its per-group scale was a mistake in the specification) and onnx.checker refuses it; ONNX
    Runtime runs it (its onnx build drops the deprecation), so graphc imports it as ONNX Runtime
    computes it (see ``Importer.check_file``)."""
    x = _channels_first_input(cx, 2, "GroupNormalization needs [N, C, ...]")
    groups = cx.attr("num_groups")
    c = int(x.shape[1])
    if not isinstance(groups, int) or groups < 1 or c % groups:
        cx.fail(f"num_groups {groups!r} must be an int >= 1 that divides the {c} channels")
    eps = float(cx.attr("epsilon", 1e-5))
    rest = math.prod(int(d) for d in x.shape[2:])
    first = x.shape[0]
    normed = _standardize(_reshape(cx, x, (first, groups, (c // groups) * rest)), (2,), eps)
    per = groups if cx.version < 21 else c
    for i, what in ((1, "scale"), (2, "bias")):
        shape = tuple(cx.x(i).shape)
        if shape != (per,):
            form = "num_groups" if cx.version < 21 else "C"
            cx.fail(
                f"{what} {_fmt(shape)} must be [{per}] ([{form}]: GroupNormalization at opset "
                f"{cx.version} takes one {what} per {'group' if cx.version < 21 else 'channel'}"
                f"{', per channel from opset 21' if cx.version < 21 else ''})"
            )
    if cx.version < 21:  # per group: scale and bias [G] broadcast over the group's values
        scale = _reshape(cx, cx.x(1), (groups, 1))
        bias = _reshape(cx, cx.x(2), (groups, 1))
        return [_reshape(cx, normed * scale + bias, x.shape)]
    scale = _reshape(cx, cx.x(1), (c, 1))
    bias = _reshape(cx, cx.x(2), (c, 1))
    per_channel = _reshape(cx, normed, (first, c, rest))
    return [_reshape(cx, per_channel * scale + bias, x.shape)]


def _mod(cx: NodeContext) -> list[Value]:
    """Mod of computed values: fmod=1 (C's fmod, the sign of the dividend, required for
    floats) or fmod=0 (integers: Python's %, the sign of the divisor), as x - q * y with q the
    truncated (fmod, and integers) or floored quotient, then corrected by one y where the
    remainder is on the wrong side (exact for integers below 2**24 of any sign: no product
    passes |x|; for floats within the rounding of q * y). Float edges as numpy's fmod / mod:
    a zero divisor or an infinite dividend gives NaN, an infinite divisor x (fmod) or, for
    floored Mod, y where x and y differ in sign; a zero remainder has the sign of x (fmod) or
    y. Integers: a zero divisor is refused as Div's (_refuse_zero_divisor), or, computed
    otherwise, gives 0 after the output conversion. Gradient: dx = dy, d divisor = -q * dy."""
    x, y = cx.x(0), cx.x(1)
    fmod = bool(cx.attr("fmod", 0))
    zero = dsl.const(0.0)
    t = x / y
    integer = cx.imp.elem_type(cx.node.output[0]) in INTEGER_TYPES
    if integer:
        cx.imp.ranges[id(t)] = ("iquot", (x, y))
        _refuse_zero_divisor(cx, y)
    fl = _integral_part(cx, t, -1)
    if fmod or integer:  # truncate: floor for t >= 0, ceil below
        # (integers: the sign correction below then adds y once where x and y differ in
        # sign, so that no product q * y passes |x|: x - floor(x / y) * y would reach |x| +
        # |y|, past 2**24 for x = -15146579, y = 6467207, and round)
        q = dsl.apply("where", dsl.apply("greater", zero, t), _integral_part(cx, t, 1), fl)
    else:
        q = fl
    m = x - q * y
    # the remainder belongs to [0, |y|) with the sign of x (fmod) or of y (floored)
    ref = x if fmod else y
    ay = _abs(y)
    wrong_sign = dsl.apply("greater", zero, m * ref)
    m = dsl.apply(
        "where", wrong_sign, m + dsl.apply("where", dsl.apply("greater", zero, ref), -ay, ay), m
    )
    too_big = dsl.apply("greater_equal", _abs(m), ay)
    m = dsl.apply(
        "where", too_big, m - dsl.apply("where", dsl.apply("greater", zero, ref), -ay, ay), m
    )
    # a zero remainder takes the sign of x (fmod; fmod(-0.0, y) = -0.0) or of y (floored)
    signed_zero = dsl.apply("where", dsl.apply("greater", zero, ref), dsl.const(-0.0), zero)
    m = dsl.apply("where", dsl.apply("equal", m, zero), signed_zero, m)
    if fmod:
        m = dsl.apply("where", dsl.apply("equal", x, zero), x, m)
    # an infinite divisor: fmod(x, inf) = x; floored: x, or y where x and y differ in sign
    if fmod:
        at_inf: Tensor = x
    else:
        at_inf = dsl.apply("where", dsl.apply("greater", zero, x * y), y, x)
    x_inf = dsl.apply("equal", _abs(x), dsl.const(math.inf))
    at_inf = dsl.apply("where", x_inf, zero / zero, at_inf)
    m = dsl.apply("where", dsl.apply("equal", ay, dsl.const(math.inf)), at_inf, m)
    out = dsl.apply("where", dsl.apply("equal", y, zero), zero / zero, m)
    # |out| < |y|, with the sign of x (fmod) or y (onnx_bounds)
    cx.imp.ranges[id(out)] = ("imod" if integer else "mod", (x, y, fmod))
    return [out]


def _fold_mod(cx: NodeContext, args: list) -> list:
    a, b = (np.asarray(v) for v in args)
    if object in (a.dtype, b.dtype):
        cx.fail("Mod of the batch size N is not supported in shape computations")
    with np.errstate(all="ignore"):
        out = np.fmod(a, b) if cx.attr("fmod", 0) else np.mod(a, b)
    return [np.asarray(out).astype(np.result_type(a, b))]


def _lp_normalization(cx: NodeContext) -> list[Value]:
    """LpNormalization: x / ||x||_p along ``axis`` (default -1) for p = 1 (sum of |x|) or 2
    (the default; sqrt of the sum of squares), a row of zeros staying zeros (as ONNX
    Runtime). The norm is taken of a sum with its zeros replaced by 1, so the gradient of a
    zero row is 0, not NaN."""
    x = cx.x(0)
    r = len(x.shape)
    axis = _axis(cx, int(cx.attr("axis", -1)), r)
    p = int(cx.attr("p", 2))
    if p not in (1, 2):
        cx.fail(f"p={p}: the norm is defined for p = 1 or 2")
    if x.shape[axis] == "N":
        cx.fail(f"a norm over the batch dimension N of {_fmt(x.shape)} is not supported")
    zero, one = dsl.const(0.0), dsl.const(1.0)
    s = dsl.sum(_abs(x) if p == 1 else dsl.square(x), (axis,), keepdims=True)
    safe = dsl.apply("where", dsl.apply("equal", s, zero), one, s)
    return [x / (safe if p == 1 else dsl.sqrt(safe))]


# --- hyperbolic functions and inverse sines, composed of exp, log, sqrt and _atan_of


def _log1p(u: Tensor) -> Tensor:
    """log(1 + u), accurate for small u: with w = 1 + u rounded, log(w) * u / (w - 1) (the
    rounding of w cancels; Goldberg, "What every computer scientist should know about
    floating-point arithmetic", 1991, thm. 4), u itself where w rounds to 1."""
    w = u + 1.0
    wm1 = w - 1.0
    tiny = dsl.apply("equal", wm1, dsl.const(0.0))
    ratio = u / dsl.apply("where", tiny, dsl.const(1.0), wm1)
    return dsl.apply("where", tiny, u, dsl.log(w) * ratio)


def _odd(x: Tensor, y_of_abs: Tensor) -> Tensor:
    """x's sign put on y = f(|x|) (f odd, f(0) = 0; -0.0 stays -0.0)."""
    zero = dsl.const(0.0)
    y = dsl.apply("where", dsl.apply("greater", zero, x), zero - y_of_abs, y_of_abs)
    return dsl.apply("where", dsl.apply("equal", x, zero), x, y)


_LN2 = math.log(2.0)
_HALF_E88 = math.exp(88.0) / 2  # a - 88 is exact for 88 <= a < 176
_HUGE_ASINH = 2.0**30  # above it asinh(a) = log(2a) in float32 (a^2 would overflow later)


def _hyperbolic(kind: str) -> Callable[[NodeContext], list[Value]]:
    """Sinh, Cosh, Asinh, Acosh, Atanh. With a = |x| and h = exp(a) / 2 (exp(a - 88) * e^88 / 2
    above a = 88, finite up to sinh's own overflow): cosh = h + 1/(4h); sinh = h - 1/(4h) for a >= 1, its Taylor series
    to x^13 below (no cancellation); asinh = log1p(a + a^2 / (1 + sqrt(1 + a^2))) (log(2a)
    above 2^30); acosh = log1p(t + sqrt(t (t + 2))) with t = x - 1 (NaN below 1); atanh =
    log1p(2a / (1 - a)) / 2 (inf at 1, NaN beyond). Odd ones keep x's sign and -0.0."""

    def convert(cx: NodeContext) -> list[Value]:
        x = cx.x(0)
        a = _abs(x)
        nan = dsl.const(0.0) / dsl.const(0.0)
        if kind in ("sinh", "cosh"):
            near_overflow = dsl.apply("greater", a, dsl.const(88.0))  # exp(a) overflows at 88.7
            h = dsl.apply("where", near_overflow, dsl.exp(a - 88.0) * _HALF_E88, 0.5 * dsl.exp(a))
            if kind == "cosh":
                return [h + 0.25 / h]
            z = x * x
            series = x + (x * z) * _poly(z, [1 / math.factorial(k) for k in range(3, 15, 2)])
            big = _odd(x, h - 0.25 / h)
            return [dsl.apply("where", dsl.apply("greater", dsl.const(1.0), a), series, big)]
        if kind == "asinh":
            root = dsl.sqrt(a * a + 1.0)
            y = _log1p(a + (a * a) / (root + 1.0))
            huge = dsl.apply("greater", a, dsl.const(_HUGE_ASINH))
            y = dsl.apply("where", huge, dsl.log(a) + _LN2, y)
            return [_odd(x, y)]
        if kind == "acosh":
            t = x - 1.0
            y = _log1p(t + dsl.sqrt(t * (t + 2.0)))
            huge = dsl.apply("greater", x, dsl.const(_HUGE_ASINH))
            y = dsl.apply("where", huge, dsl.log(x) + _LN2, y)
            return [dsl.apply("where", dsl.apply("greater", dsl.const(1.0), x), nan, y)]
        one = dsl.const(1.0)
        y = 0.5 * _log1p(2.0 * a / dsl.apply("where", dsl.apply("equal", a, one), one, 1.0 - a))
        y = dsl.apply("where", dsl.apply("equal", a, one), dsl.const(math.inf), y)
        y = dsl.apply("where", dsl.apply("greater", a, one), nan, y)
        return [_odd(x, y)]

    return convert


def _asin_acos(kind: str) -> Callable[[NodeContext], list[Value]]:
    """Asin = atan(x / sqrt((1 - x)(1 + x))) (+-pi/2 at +-1), Acos = 2 atan(sqrt((1 - x) /
    (1 + x))) (pi at -1); NaN beyond [-1, 1]. Both through _atan_of."""

    def convert(cx: NodeContext) -> list[Value]:
        x = cx.x(0)
        if kind == "asin":
            return [_atan_of(x / dsl.sqrt((1.0 - x) * (x + 1.0)))]
        return [2.0 * _atan_of(dsl.sqrt((1.0 - x) / (x + 1.0)))]

    return convert


# --- QuantizeLinear / DequantizeLinear (QDQ models: ONNX Runtime's quantizer writes a
# QuantizeLinear -> DequantizeLinear pair around each MatMul and stores weights as int8 or
# uint8 initializers behind a DequantizeLinear). Quantized values are integral float32 values.

_QUANT_RANGE = {2: (0, 255), 3: (-128, 127), 4: (0, 65535), 5: (-32768, 32767)}
_ONNX_OF_NP = {np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.uint16): 4}
_ONNX_OF_NP[np.dtype(np.int16)] = 5
_ONNX_OF_NP[np.dtype(np.int32)] = 6


def _per_axis(cx: NodeContext, i: int, x_shape: tuple, what: str) -> Tensor | None:
    """Operand ``i`` (a scale or zero point) shaped to broadcast along the node's ``axis``
    (default 1): a scalar or 1-element value per tensor, a 1-D one per axis element, or with
    ``block_size`` one per block (onnx_import_quant.blocked_param)."""
    if not cx.has(i):
        return None
    x_rank = len(x_shape)
    if int(cx.attr("block_size", 0)):
        return blocked_param(cx, i, x_shape, what)
    v = cx.value(i)
    shape_v = tuple(v.shape)
    if "N" in shape_v or len(shape_v) > 1:
        cx.fail(f"{what} of shape {_fmt(shape_v)}: a scalar or a 1-D value per axis")
    size = math.prod(int(d) for d in shape_v)
    shape: tuple = ()
    if size != 1:
        axis = _axis(cx, int(cx.attr("axis", 1)), x_rank)
        shape = (size,) + (1,) * (x_rank - axis - 1)
    if isinstance(v, Tensor):
        return v if tuple(v.shape) == shape else _reshape(cx, v, shape)
    a = np.asarray(v, dtype=np.float64).reshape(shape)
    if size == 1:
        return dsl.const(float(a))
    return cx.imp.constant_tensor(f"{what}_{cx.index}", a.astype(np.float32), cx, False)


def _quantize_linear(cx: NodeContext) -> list[Value]:
    """QuantizeLinear to int8, uint8, int16 or uint16: clip(round(x / scale) + zero_point) to
    the type's range, halves rounding to even (ONNX's rule; see _round); per tensor or per
    ``axis`` (default 1). The type is output_dtype's, else the zero point's, else uint8. The
    result is integral float32 (derivative 0)."""
    x = cx.x(0)
    out = int(cx.attr("output_dtype", 0))
    if not out and cx.has(2) and isinstance(cx.value(2), Tensor):  # computed: its declared type
        out = cx.imp.elem_type(cx.node.input[2]) or cx.imp.elem_type(cx.node.output[0]) or 2
    if not out and cx.has(2):
        zdt = np.asarray(cx.c(2)).dtype
        out = _ONNX_OF_NP.get(zdt, 0)
        if not out:
            cx.fail(f"element type {zdt} of the zero point is not supported")
    out = out or 2
    if out not in _QUANT_RANGE:
        cx.fail(f"element type {type_name(out)}: graphc quantizes to int8, uint8, int16, uint16")
    lo, hi = _QUANT_RANGE[out]
    scale = _per_axis(cx, 1, tuple(x.shape), "scale")
    assert scale is not None
    zp = _per_axis(cx, 2, tuple(x.shape), "zero_point")
    v = x / scale
    a = _abs(v)
    r = (a + _ROUND_MAGIC) - _ROUND_MAGIC
    zero = dsl.const(0.0)
    r = dsl.apply("where", dsl.apply("greater", zero, v), zero - r, r)
    r = dsl.apply("where", dsl.apply("greater", dsl.const(_ROUND_MAGIC), a), r, v)
    if zp is not None:
        r = r + zp
    q = _minimum(dsl.maximum(r, dsl.const(float(lo))), dsl.const(float(hi)))
    return [_mask(cx, dsl.apply("cast", q, dtype="f32"))]


def _dequantize_linear(cx: NodeContext) -> list[Value]:
    """DequantizeLinear of a computed quantized value: (x - zero_point) * scale, per tensor
    or per ``axis`` (default 1); of an initializer, folded (the weights of a QDQ model become
    float32 constants)."""
    x = cx.x(0)
    scale = _per_axis(cx, 1, tuple(x.shape), "scale")
    assert scale is not None
    zp = _per_axis(cx, 2, tuple(x.shape), "zero_point")
    return [(x - zp if zp is not None else x) * scale]


def _fold_dequantize_linear(cx: NodeContext, args: list) -> list:
    x = np.asarray(args[0])
    if x.dtype == object:
        cx.fail("DequantizeLinear of the batch size N is not supported")
    block = int(cx.attr("block_size", 0))

    def shaped(a: Any) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if block:
            return blocked_array(cx, a, x.shape, block)
        if a.size == 1 or x.ndim == 0:
            return a.reshape(())
        axis = _axis(cx, int(cx.attr("axis", 1)), x.ndim)
        return a.reshape((a.size,) + (1,) * (x.ndim - axis - 1))

    zp = shaped(args[2]) if len(args) > 2 and args[2] is not None else 0.0
    return [((x.astype(np.float64) - zp) * shaped(args[1])).astype(np.float32)]


# ---------------------------------------------------------------- the table

# the rules of graphc/onnx_import_onnxops.py (scatter, ...): after every helper they import
# Loop, Scan, If (a computed condition too) and sequences: graphc/onnx_import_control.py
from . import onnx_import_control, onnx_import_dft, onnx_import_pool, onnx_import_rows  # noqa: E402
from .onnx_import_control import SEQUENCE_OPERANDS, OptionalValue, SequenceValue  # noqa: E402
from .onnx_import_control import control_ops as _control_ops  # noqa: E402
from .onnx_import_onnxops import INDEX_OPERAND as _INDEX_OPERAND  # noqa: E402
from .onnx_import_onnxops import OPS_MORE as _OPS_ONNXOPS  # noqa: E402
from .onnx_import_onnxops import batch_scatters  # noqa: E402
from .onnx_import_strided import strided_gathers  # noqa: E402

_CONTROL_OPS = _control_ops()

# scikit-learn's tree ensembles, SVMs and Imputer (graphc/onnx_import_ml.py)
from . import onnx_import_ml  # noqa: E402
from .onnx_import_ml import ML_OPS  # noqa: E402

# the quantized operators of graphc/onnx_import_quant.py (QLinear*, *Integer, com.microsoft's)
from .onnx_import_quant import (  # noqa: E402
    CONTRIB_SCHEMAS,
    QUANT_OPS,
    blocked_array,
    blocked_param,
    qdq_as_qoperator,
    reads_quantized,
)

_UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Exp": "exp",
    "Log": "log",
    "Sqrt": "sqrt",
    "Neg": "neg",
    "Softplus": "softplus",
}

OPS: dict[str, Rule] = {
    **{k: Rule(_unary(v)) for k, v in _UNARY.items() if k != "Neg"},
    "Neg": Rule(_unary("neg"), fold=_unary_fold(np.negative)),
    "Abs": Rule(lambda cx: [_abs(cx.x(0))], fold=_unary_fold(np.abs)),
    "Size": Rule(_size, fold=lambda cx, a: [np.array(np.asarray(a[0]).size, np.int64)]),
    "Reciprocal": Rule(native_or("reciprocal", lambda cx: [1.0 / cx.x(0)])),
    "LeakyRelu": Rule(native_or("leaky_relu", _leaky_relu, alpha=("alpha", 0.01)), ("alpha",)),
    "PRelu": Rule(_prelu),
    "Elu": Rule(native_or("elu", _elu, alpha=("alpha", 1.0)), ("alpha",)),
    "Selu": Rule(_selu, ("alpha", "gamma")),
    "Softsign": Rule(native_or("softsign", _softsign)),
    "HardSigmoid": Rule(
        native_or("hard_sigmoid", _hard_sigmoid, alpha=("alpha", 0.2), beta=("beta", 0.5)),
        ("alpha", "beta"),
    ),
    "Mish": Rule(native_or("mish", lambda cx: [cx.x(0) * dsl.tanh(dsl.softplus(cx.x(0)))])),
    "Gelu": Rule(native_or("gelu", _gelu, approximate=("approximate", "none")), ("approximate",)),
    "Erf": Rule(lambda cx: [_erf(cx.x(0))]),
    "Pow": Rule(_pow),
    "Clip": Rule(_clip, ("min", "max")),
    "Max": Rule(_variadic(dsl.maximum), fold=_variadic_fold("max", np.maximum)),
    "Min": Rule(_variadic(_minimum), fold=_variadic_fold("min", np.minimum)),
    "Sum": Rule(_variadic(dsl.add)),
    "Add": Rule(_binary("add"), fold=_arith_fold(np.add)),
    "Sub": Rule(_binary("sub"), fold=_arith_fold(np.subtract)),
    "Mul": Rule(_binary("mul"), fold=_arith_fold(np.multiply)),
    "Div": Rule(_div, fold=_arith_fold(_int_div)),
    "Greater": Rule(_compare("greater")),
    "Less": Rule(_compare("less", swap_of="greater")),
    "GreaterOrEqual": Rule(_compare("greater_equal")),
    "LessOrEqual": Rule(_compare("less_equal", swap_of="greater_equal")),
    "Equal": Rule(_equal, fold=_sym_fold("equal", np.equal)),
    "Where": Rule(_where, fold=_fold_where),
    "Expand": Rule(_expand, fold=_fold_expand),
    "Range": Rule(None, fold=_fold_range),
    "Split": Rule(_split, ("axis", "split", "num_outputs"), fold=_fold_split),
    "Gemm": Rule(_gemm, ("alpha", "beta", "transA", "transB")),
    "MatMul": Rule(_matmul),
    "Transpose": Rule(_transpose, ("perm",), fold=_fold_transpose, keeps_integers=True),
    "Softmax": Rule(_softmax_like(False), ("axis",)),
    "LogSoftmax": Rule(_softmax_like(True), ("axis",)),
    "Flatten": Rule(_flatten, ("axis",), fold=_fold_flatten, keeps_integers=True),
    "Reshape": Rule(_reshape_rule, ("allowzero",), fold=_fold_reshape, keeps_integers=True),
    "Squeeze": Rule(_squeeze, ("axes",), fold=_fold_squeeze, keeps_integers=True),
    "Unsqueeze": Rule(_unsqueeze, ("axes",), fold=_fold_unsqueeze, keeps_integers=True),
    "Concat": Rule(_concat, ("axis",), fold=_fold_concat),
    "Shape": Rule(_shape, ("start", "end"), fold=_fold_shape),
    "Gather": Rule(_gather, ("axis",), fold=_fold_gather),
    "Pad": Rule(_pad, ("mode", "pads", "value")),
    "Resize": Rule(
        _resize,
        (
            "mode",
            "coordinate_transformation_mode",
            "nearest_mode",
            "cubic_coeff_a",
            "exclude_outside",
            "extrapolation_value",
            "antialias",
            "axes",
            "keep_aspect_ratio_policy",
        ),
    ),
    "Upsample": Rule(_resize, ("mode", "scales")),
    "Slice": Rule(_slice, ("starts", "ends", "axes"), fold=_fold_slice),
    "ConstantOfShape": Rule(None, ("value",), fold=_constant_of_shape),
    "Cast": Rule(_cast, ("to", "saturate", "round_mode"), fold=_fold_cast, keeps_integers=True),
    "CastLike": Rule(
        _cast_like, ("saturate", "round_mode"), fold=_fold_cast_like, keeps_integers=True
    ),
    "Identity": Rule(_identity, fold=lambda cx, a: [a[0]], keeps_integers=True),
    "Dropout": Rule(
        _dropout, ("ratio", "seed", "is_test"), fold=lambda cx, a: [a[0]], keeps_integers=True
    ),
    "Constant": Rule(
        _constant,
        ("value", "value_float", "value_floats", "value_int", "value_ints", "sparse_value"),
    ),
    "ReduceMean": Rule(
        _reduce("mean", 18),
        ("axes", "keepdims", "noop_with_empty_axes"),
        fold=_fold_reduce("mean", 18),
    ),
    "ReduceSum": Rule(
        _reduce("sum", 13),
        ("axes", "keepdims", "noop_with_empty_axes"),
        fold=_fold_reduce("sum", 13),
    ),
    "ReduceProd": Rule(
        _reduce_prod, ("axes", "keepdims", "noop_with_empty_axes"), fold=_fold_reduce_prod
    ),
    "BatchNormalization": Rule(_batch_norm, ("epsilon", "momentum", "training_mode", "spatial")),
    "LayerNormalization": Rule(_layer_norm, ("axis", "epsilon", "stash_type")),
    "GlobalAveragePool": Rule(_global_pool("mean")),
    "GlobalMaxPool": Rule(_global_pool("max")),
    "GlobalLpPool": Rule(_global_pool("lp"), ("p",)),
    "LRN": Rule(_lrn, ("size", "alpha", "beta", "bias")),
    "LpPool": Rule(
        _pool("lp"),
        ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad", "p"),
    ),
    "Conv": Rule(
        _conv_rule(False),
        ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"),
    ),
    "ConvTranspose": Rule(
        _conv_rule(True),
        (
            "kernel_shape",
            "strides",
            "pads",
            "dilations",
            "group",
            "auto_pad",
            "output_padding",
            "output_shape",
        ),
    ),
    "MaxPool": Rule(
        _pool("max"),
        ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad", "storage_order"),
    ),
    # MaxPool's Indices and MaxUnpool (graphc/onnx_import_pool.py)
    "MaxUnpool": Rule(onnx_import_pool.max_unpool, ("kernel_shape", "strides", "pads")),
    "AveragePool": Rule(
        _pool("mean"),
        (
            "kernel_shape",
            "strides",
            "pads",
            "dilations",
            "ceil_mode",
            "auto_pad",
            "count_include_pad",
        ),
    ),
    "ArgMax": Rule(_argmax, ("axis", "keepdims", "select_last_index")),
    "ReduceMax": Rule(
        _reduce_max, ("axes", "keepdims", "noop_with_empty_axes"), fold=_fold_reduce("max", 18)
    ),
    "ReduceMin": Rule(
        _reduce_min, ("axes", "keepdims", "noop_with_empty_axes"), fold=_fold_reduce("min", 18)
    ),
    "ArgMin": Rule(_argmin, ("axis", "keepdims", "select_last_index")),
    "Mean": Rule(_mean_of),
    **{
        op: Rule(
            _reduce_composed(kind),
            ("axes", "keepdims", "noop_with_empty_axes"),
            fold=_fold_reduce(kind, 18),
        )
        for op, kind in (
            ("ReduceL1", "l1"),
            ("ReduceL2", "l2"),
            ("ReduceSumSquare", "sumsquare"),
            ("ReduceLogSum", "logsum"),
            ("ReduceLogSumExp", "logsumexp"),
        )
    },
    "Sign": Rule(_sign, fold=_unary_fold(np.sign)),
    "Round": Rule(_round, fold=_unary_fold(np.round)),
    "Not": Rule(_logical("not"), fold=_logical_fold(np.logical_not)),
    "And": Rule(_logical("and"), fold=_logical_fold(np.logical_and)),
    "Or": Rule(_logical("or"), fold=_logical_fold(np.logical_or)),
    "Xor": Rule(_logical("xor"), fold=_logical_fold(np.logical_xor)),
    "IsNaN": Rule(_isnan, fold=lambda cx, a: [np.isnan(np.asarray(a[0], np.float64))]),
    "IsInf": Rule(_isinf, ("detect_negative", "detect_positive"), fold=_fold_isinf),
    "Shrink": Rule(_shrink, ("bias", "lambd")),
    "Floor": Rule(lambda cx: [_integral_part(cx, cx.x(0), -1)], fold=_unary_fold(np.floor)),
    "Ceil": Rule(lambda cx: [_integral_part(cx, cx.x(0), 1)], fold=_unary_fold(np.ceil)),
    "Sin": Rule(_trig("sin"), fold=_unary_fold(np.sin)),
    "Cos": Rule(_trig("cos"), fold=_unary_fold(np.cos)),
    "Tan": Rule(_trig("tan"), fold=_unary_fold(np.tan)),
    "Atan": Rule(_atan, fold=_unary_fold(np.arctan)),
    "InstanceNormalization": Rule(_instance_norm, ("epsilon",)),
    "GroupNormalization": Rule(_group_norm, ("epsilon", "num_groups", "stash_type")),
    "Mod": Rule(_mod, ("fmod",), fold=_fold_mod, keeps_integers=True),
    "LpNormalization": Rule(_lp_normalization, ("axis", "p")),
    "Sinh": Rule(_hyperbolic("sinh"), fold=_unary_fold(np.sinh)),
    "Cosh": Rule(_hyperbolic("cosh"), fold=_unary_fold(np.cosh)),
    "Asinh": Rule(_hyperbolic("asinh"), fold=_unary_fold(np.arcsinh)),
    "Acosh": Rule(_hyperbolic("acosh"), fold=_unary_fold(np.arccosh)),
    "Atanh": Rule(_hyperbolic("atanh"), fold=_unary_fold(np.arctanh)),
    "Asin": Rule(_asin_acos("asin"), fold=_unary_fold(np.arcsin)),
    "Acos": Rule(_asin_acos("acos"), fold=_unary_fold(np.arccos)),
    "QuantizeLinear": Rule(
        _quantize_linear, ("axis", "saturate", "output_dtype", "block_size", "precision")
    ),
    "DequantizeLinear": Rule(
        _dequantize_linear,
        ("axis", "block_size", "output_dtype"),
        fold=_fold_dequantize_linear,
        keeps_integers=True,
    ),
    "Hardmax": Rule(_hardmax, ("axis",)),
    "TopK": Rule(_topk, ("axis", "k", "largest", "sorted")),
    "GatherElements": Rule(_gather_elements, ("axis",)),
    "CumSum": Rule(_cumsum, ("exclusive", "reverse"), fold=_fold_cumsum),
    "CumProd": Rule(_cumprod, ("exclusive", "reverse"), fold=_fold_cumsum),
    "DFT": Rule(onnx_import_dft.dft, ("axis", "inverse", "onesided")),
    "Tile": Rule(_tile, fold=_fold_tile, keeps_integers=True),
    "DepthToSpace": Rule(
        _depth_to_space, ("blocksize", "mode"), fold=_fold_depth_to_space, keeps_integers=True
    ),
    "SpaceToDepth": Rule(
        _space_to_depth, ("blocksize", "mode"), fold=_fold_space_to_depth, keeps_integers=True
    ),
    "Trilu": Rule(_trilu, ("upper",), fold=_fold_trilu, keeps_integers=True),
    "OneHot": Rule(_onehot, ("axis",), fold=_fold_onehot),
    "Einsum": Rule(_einsum, ("equation",), fold=_fold_einsum),
    # recurrent networks (graphc/onnx_import_rnn.py)
    **{
        op: Rule(onnx_import_rnn.rnn_rule(op), onnx_import_rnn.RULE_ATTRS[op], reads_views=True)
        for op in onnx_import_rnn.GATES
    },
    "ReverseSequence": Rule(
        onnx_import_rnn.reverse_sequence, ("batch_axis", "time_axis"), reads_views=True
    ),
    "ai.onnx.ml:ArrayFeatureExtractor": Rule(_array_feature_extractor, domain="ai.onnx.ml"),
    "ai.onnx.ml:Scaler": Rule(_scaler, ("offset", "scale"), domain="ai.onnx.ml"),
    "ai.onnx.ml:LinearClassifier": Rule(
        _linear_classifier,
        (
            "classlabels_ints",
            "classlabels_strings",
            "coefficients",
            "intercepts",
            "multi_class",
            "post_transform",
        ),
        domain="ai.onnx.ml",
    ),
    "ai.onnx.ml:LinearRegressor": Rule(
        _linear_regressor,
        ("coefficients", "intercepts", "targets", "post_transform"),
        domain="ai.onnx.ml",
    ),
    "ai.onnx.ml:Normalizer": Rule(_normalizer, ("norm",), domain="ai.onnx.ml"),
    "ai.onnx.ml:Binarizer": Rule(_binarizer, ("threshold",), domain="ai.onnx.ml"),
    "ai.onnx.ml:ZipMap": Rule(
        _zipmap, ("classlabels_int64s", "classlabels_strings"), domain="ai.onnx.ml"
    ),
    **ML_OPS,  # graphc/onnx_import_ml.py: tree ensembles, SVMs, Imputer
    **_OPS_ONNXOPS,
    **QUANT_OPS,  # graphc/onnx_import_quant.py: QLinear*, *Integer, DynamicQuantizeLinear
    # Loop, Scan, If, sequences (graphc/onnx_import_control.py)
    **_CONTROL_OPS,
}
