"""Rows sorted along the batch and sorted back (a pre-pass of graphc.onnx_import).

torch's ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` exported by its TorchScript
exporter sorts the batch by length before the recurrent layer and sorts the results back:

    perm = TopK(lengths, k = the batch size).indices        (a permutation of the rows)
    xs = Gather(x, perm, axis=0);  ls = TopK(...).values    (the rows and lengths, sorted)
    ys = LSTM(Transpose(xs), ..., sequence_lens = ls)
    inv = ScatterElements(zeros, perm, Range(0, N, 1))      (perm's inverse)
    y = Gather(Transpose(ys), inv, axis=0);  h = Gather(Y_h, inv, axis=1)

graphc holds the batch N as a symbolic dimension whose rows it does not move (a Gather along N
by indices computed from the data is refused). Where every value between the sorting Gather
and the gathers by the inverse is computed row by row (each row from the same row of its
operands: the recurrent layers, transposes, squeezes, casts, elementwise ops whose other
operands are constants), the sort and the sort back cancel: ``unsort(f(sort(x))) = f(x)``.
``unsorted_rows`` then writes the model without them: the sorting Gather becomes Identity(x),
the sorted lengths the lengths, each Gather by the inverse Identity. The conditions, each
checked (else the model is left as it is, and the import refuses the Gather along N naming
it):

- perm is the indices of a TopK (default domain) over a 1-D value along its only axis whose k
  is that value's length (Gather(Shape(v), 0), through Unsqueeze / Reshape / Cast): a
  permutation; casts of it are perm too;
- inv is ScatterElements(data, perm, Range(0, n, 1), axis 0, no reduction): every position of
  data is written once (perm is a permutation), with start 0 and delta 1 constants;
- the sorted values (the Gather of perm, TopK's values, and what is computed from them) reach
  only nodes of ``ROW_WISE`` whose other operands are initializers, Constants or
  ConstantOfShape fills (the same for every row), a Shape (the same shape), or a Gather by inv
  along an axis of unknown (batch) size, where they end; none is a graph output.
"""

from __future__ import annotations

from typing import Any

# operators that compute each row of their output from the same row of their operands (the
# batch may be at any axis: it is never reduced, mixed or moved between rows)
ROW_WISE = frozenset(
    (
        "LSTM",
        "GRU",
        "RNN",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Cast",
        "Identity",
        "Relu",
        "Tanh",
        "Sigmoid",
        "Add",
        "Sub",
        "Mul",
        "Div",
    )
)
_FILLS = ("Constant", "ConstantOfShape")  # values the same for every row


def unsorted_rows(model: Any) -> Any:
    """See the module's docstring; a model it cannot read, or where a condition fails, is
    returned as it is (the caller's ModelProto is never changed)."""
    try:
        return _unsorted_rows(model)
    except Exception:  # a malformed file: the import's own checks report it
        return model


def _std(n: Any) -> bool:
    return n.domain in ("", "ai.onnx")


def _attr(n: Any, name: str, default: Any) -> Any:
    from onnx import helper

    a = next((a for a in n.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


def _unsorted_rows(model: Any) -> Any:
    from onnx import helper, numpy_helper

    from .onnx_import import with_nodes

    g = model.graph
    nodes = list(g.node)
    if not any(n.op_type == "TopK" and _std(n) for n in nodes):
        return model
    producer = {o: n for n in nodes for o in n.output if o}
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in nodes:
        if n.op_type == "Constant" and _std(n) and n.output:
            a = next((a for a in n.attribute if a.name == "value"), None)
            if a is not None:
                consts[n.output[0]] = numpy_helper.to_array(a.t)

    def through(v: str, ops: tuple[str, ...]) -> str:
        """v's source past the nodes ``ops`` (their first operand)."""
        while v in producer and producer[v].op_type in ops and _std(producer[v]):
            v = producer[v].input[0]
        return v

    def const_is(v: str, value: int) -> bool:
        a = consts.get(through(v, ("Cast", "Identity")))
        return a is not None and a.size == 1 and int(a.reshape(-1)[0]) == value

    def length_of(v: str) -> str | None:
        """The value u whose length v is where u is 1-D (the caller checks): Gather(Shape(u),
        0 or -1) through Unsqueeze, Reshape, Cast, or ReduceProd(Shape(u)); else None."""
        n = producer.get(through(v, ("Unsqueeze", "Reshape", "Cast", "Identity")))
        if n is None or not _std(n):
            return None
        first = n.op_type == "Gather" and _attr(n, "axis", 0) == 0
        first = first and (const_is(n.input[1], 0) or const_is(n.input[1], -1))
        if not first and not (n.op_type == "ReduceProd" and len(n.input) == 1):
            return None
        s = producer.get(n.input[0])
        if s is None or s.op_type != "Shape" or not _std(s) or len(s.attribute):
            return None
        return s.input[0]

    shapes = _shapes(model)
    # permutations: TopK indices over all of a 1-D value
    perm: set[str] = set()
    sorted_of: dict[str, str] = {}  # TopK values -> the value they sort
    for n in nodes:
        if n.op_type != "TopK" or not _std(n) or len(n.input) < 2 or len(n.output) < 2:
            continue
        if _attr(n, "axis", -1) not in (0, -1):
            continue
        src = n.input[0]
        if length_of(n.input[1]) not in (src, through(src, ("Cast", "Identity"))):
            continue
        if shapes.get(src, (0, set()))[0] != 1:
            continue  # (indices of a 1-D value along its only axis: a permutation of it)
        perm.add(n.output[1])
        if n.output[0]:
            sorted_of[n.output[0]] = src
    if len(perm) != 1:
        return model  # (none, or two permutations: which inverse undoes which is not followed)
    for n in nodes:  # casts of a permutation
        if n.op_type in ("Cast", "Identity") and _std(n) and n.input[0] in perm:
            perm.add(n.output[0])
    # their inverses
    inv: set[str] = set()
    for n in nodes:
        if n.op_type != "ScatterElements" or not _std(n) or len(n.input) != 3:
            continue
        if n.input[1] not in perm or _attr(n, "axis", 0) != 0:
            continue
        if _attr(n, "reduction", b"none") not in (b"none", "none"):
            continue
        r = producer.get(n.input[2])
        if r is None or r.op_type != "Range" or not _std(r):
            continue
        if const_is(r.input[0], 0) and const_is(r.input[2], 1) and length_of(r.input[1]) in perm:
            inv.add(n.output[0])
    for n in nodes:
        if n.op_type in ("Cast", "Identity") and _std(n) and n.input[0] in inv:
            inv.add(n.output[0])
    if not inv:
        return model

    def _keeps_batch(n: Any) -> bool:
        """A Reshape whose constant shape keeps (0, allowzero 0) every axis up to the last one
        of the input's whose size is not a number (the batch): rows stay rows."""
        shape = consts.get(n.input[1])
        rank, fixed = shapes.get(n.input[0], (0, set()))
        free = [k for k in range(rank) if k not in fixed]
        if shape is None or not rank or not free or _attr(n, "allowzero", 0):
            return False
        top = max(free)
        return shape.ndim == 1 and shape.size > top and not shape[: top + 1].any()

    # the sorted values, followed forward
    rewrites: dict[int, Any] = {}
    srt: set[str] = set(sorted_of)
    outputs = {o.name for o in g.output}
    for i, n in enumerate(nodes):
        if n.op_type == "Gather" and _std(n) and n.input[1] in perm:
            if _attr(n, "axis", 0) != 0:
                return model
            rewrites[i] = helper.make_node("Identity", [n.input[0]], [n.output[0]], name=n.name)
            srt.add(n.output[0])
            continue
        reads = [v for v in n.input if v in srt]
        if not reads:
            continue
        if n.op_type == "Shape" and _std(n):
            continue
        if n.op_type == "Gather" and _std(n) and n.input[1] in inv and n.input[0] in srt:
            if _attr(n, "axis", 0) in shapes.get(n.input[0], (0, set()))[1]:
                return model  # (gathered back along an axis of fixed size: not the batch)
            rewrites[i] = helper.make_node("Identity", [n.input[0]], [n.output[0]], name=n.name)
            continue
        if n.op_type == "Reshape" and _std(n) and n.input[0] in srt and _keeps_batch(n):
            srt.update(o for o in n.output if o)  # (the batch's axis and those before it kept)
            continue
        if n.op_type not in ROW_WISE or not _std(n):
            return model
        for v in n.input:
            if v and v not in srt and v not in consts:
                p = producer.get(v)
                if p is None or p.op_type not in _FILLS or not _std(p):
                    return model
        srt.update(o for o in n.output if o)
    if srt & outputs:
        return model
    for i, n in enumerate(nodes):  # TopK's sorted values: the values as they were
        if any(v in sorted_of for v in n.input):
            m = rewrites.get(i, n)
            new = helper.make_node(
                m.op_type, [sorted_of.get(v, v) for v in m.input], list(m.output), name=m.name
            )
            new.attribute.extend(m.attribute)
            new.domain = m.domain
            rewrites[i] = new
    return with_nodes(model, rewrites)


def _shapes(model: Any) -> dict[str, tuple[int, set[int]]]:
    """value -> (rank, the axes whose size onnx's shape inference gives as a number: not the
    batch's symbolic size)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        return {}
    out: dict[str, tuple[int, set[int]]] = {}
    for vi in (*inferred.input, *inferred.value_info, *inferred.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            out[vi.name] = (len(dims), {k for k, d in enumerate(dims) if d.HasField("dim_value")})
    return out
