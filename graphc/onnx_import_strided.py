"""torch's dynamo export of ``as_strided`` on a batched tensor, as graphc can import it.

torch.export decomposes ``aten.as_strided(x, size, stride)`` (which torch itself inserts, for
example after ``x.permute(...).mean(...)`` in AdaptiveAvgPool2d((1, 1)): torchvision's Swin
Transformer head) into a gather from the flattened tensor: ``Reshape(x, [-1])`` then
``Gather(axis=0)`` whose indices are ``Range(0, N) * stride_0`` plus constant offsets
(``Unsqueeze``, ``Add``). N is the symbolic batch size, so graphc, which does not hold a
vector of N entries, refused the Range ("Range over the batch size N is not supported").

Where each sample's indices stay inside that sample (index = n * S + j with 0 <= j < S, S the
number of elements of one sample of x, the same j for every sample n and every batch size),
the gather is per sample and takes the same positions from each: ``Reshape(x, [0, -1])``
(N kept, [N, S]) and ``Gather(axis=1)`` of the constant positions j. The index computation
is evaluated with onnx.reference at batch sizes 2 and 3 (onnx_import_onnxops._evaluate, as
for torch's per-sample ScatterND); anything else leaves the model as it is, and the import
then refuses the Range, naming it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .onnx_import import require_onnx, with_nodes
from .onnx_import_onnxops import (
    MAX_INDEX_NODES,
    _evaluate,
    _inferred_shapes,
    index_computation,
)


def strided_gathers(model: Any) -> Any:
    """See the module's docstring; a model it cannot read is returned as it is (the import's
    own checks then name what is wrong). The caller's ModelProto is not changed."""
    try:
        return _strided_gathers(model)
    except Exception:  # a malformed file, or an index computation onnx.reference cannot run
        return model


def _const_vector(onnx: Any, g: Any, producer: dict, name: str) -> list[int] | None:
    """An int64 vector initializer or Constant's values, else None."""
    t = next((t for t in g.initializer if t.name == name), None)
    if t is None and name in producer:
        n = producer[name]
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            t = next((a.t for a in n.attribute if a.name == "value" and a.HasField("t")), None)
    if t is None or t.data_location == onnx.TensorProto.EXTERNAL or len(t.dims) != 1:
        return None
    if t.dims[0] > 8:
        return None
    return [int(v) for v in onnx.numpy_helper.to_array(t)]


def _strided_gathers(model: Any) -> Any:
    onnx = require_onnx()
    g = model.graph
    nodes = list(g.node)
    producer = {o: n for n in nodes for o in n.output if o}
    index_of = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    uses: dict[str, int] = {}
    for n in nodes:
        for v in n.input:
            uses[v] = uses.get(v, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    inits = {t.name for t in g.initializer}
    inputs = {vi.name: vi for vi in g.input if vi.name not in inits}
    candidates = []
    for i, n in enumerate(nodes):
        if n.op_type != "Gather" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        if any(a.name == "axis" and a.i != 0 for a in n.attribute):
            continue
        r = producer.get(n.input[0])
        if r is None or r.op_type != "Reshape" or r.domain not in ("", "ai.onnx"):
            continue
        if len(r.input) != 2 or uses.get(r.output[0], 0) != 1:
            continue
        if _const_vector(onnx, g, producer, r.input[1]) != [-1]:
            continue  # not a flatten of the whole tensor
        if n.input[1] in inits or n.input[1] not in producer:
            continue  # constant indices: the Gather rule takes them
        candidates.append((i, index_of[r.output[0]]))
    if not candidates:
        return model
    tainted = set(inputs)  # values that an input's values (not only its shape) reach
    for n in nodes:
        if n.op_type == "Shape" and n.domain in ("", "ai.onnx"):
            continue
        if any(a.type in (5, 10) for a in n.attribute) or any(v in tainted for v in n.input):
            tainted.update(n.output)
    known = {b: _inferred_shapes(onnx, model, b) for b in (2, 3)}
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    rewrites: dict[int, Any] = {}
    added, stale = [], set()
    taken = set(producer) | inits | set(inputs)
    for i, j in candidates:
        gather, flat = nodes[i], nodes[j]
        idx, x = gather.input[1], flat.input[0]
        if idx in tainted:
            continue
        samples = [known[b].get(x) for b in (2, 3)]
        if any(s is None or not s or s[0] != b for s, b in zip(samples, (2, 3))):
            continue  # x is not batched, or its shape is not known
        if samples[0][1:] != samples[1][1:]:
            continue
        size = math.prod(samples[0][1:])  # S: the elements of one sample of x
        seen = index_computation(nodes, index_of, idx, known)
        if len(seen) > MAX_INDEX_NODES:
            continue
        part = [nodes[k] for k in sorted(seen)]
        got = [_evaluate(onnx, g, part, [idx], inputs, b, opsets, known[b]) for b in (2, 3)]
        if got[0] is None or got[1] is None:
            continue
        per = [_positions(v[0], b, size) for v, b in zip(got, (2, 3))]
        if per[0] is None or per[1] is None or not np.array_equal(per[0], per[1]):
            continue
        shape_name, pos_name = f"{flat.output[0]}__per_sample", f"{idx}__per_sample"
        while shape_name in taken:
            shape_name += "_"
        taken.add(shape_name)
        while pos_name in taken:
            pos_name += "_"
        taken.add(pos_name)
        added.append(onnx.numpy_helper.from_array(np.array([0, -1], np.int64), shape_name))
        added.append(onnx.numpy_helper.from_array(per[0].astype(np.int64), pos_name))
        rewrites[j] = onnx.helper.make_node(
            "Reshape", [x, shape_name], list(flat.output), name=flat.name
        )
        rewrites[i] = onnx.helper.make_node(
            "Gather", [flat.output[0], pos_name], list(gather.output), name=gather.name, axis=1
        )
        stale.add(flat.output[0])  # [N * S] is now [N, S]: its declared shape no longer holds
    if not rewrites:
        return model
    out = with_nodes(model, rewrites)
    keep = [vi for vi in out.graph.value_info if vi.name not in stale]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep)
    out.graph.initializer.extend(added)
    return out


def _positions(idx: np.ndarray, b: int, size: int) -> np.ndarray | None:
    """The positions j (idx[0]) of indices [b, ...] into a flattened tensor of b samples of
    ``size`` elements, where idx[n] == n * size + j with 0 <= j < size for every row n; else
    None."""
    if idx.ndim < 1 or idx.shape[0] != b or idx.dtype.kind not in "iu":
        return None
    j = idx[0].astype(np.int64)
    if j.size and not ((j >= 0).all() and (j < size).all()):
        return None
    rows = np.arange(b, dtype=np.int64).reshape((b,) + (1,) * (idx.ndim - 1))
    if not np.array_equal(idx.astype(np.int64), rows * size + j[None]):
        return None
    return j
