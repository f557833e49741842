"""The compiler driver: DSL tensors -> graphs (forward, training, inference) -> passes -> LLVM -> JIT."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time

from graphc.codegen.checks import InputCheck
from graphc.codegen.module import ModuleBuilder, scratch_bytes
from graphc.codegen.target import (
    JitModule,
    Target,
    as_target,
    compile_parts,
    compile_threads,
    target_machine,
)
from graphc.ir.algorithms import ancestors
from graphc.ir.autodiff import gradients
from graphc.ir.batch import MIXED, ROWS, batch_kinds, kept_mean_loss, loss_is_row_mean
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphcError
from graphc.ir.graph import Graph, make_node
from graphc.ir.ops.loss import label_classes
from graphc.ir.ops.random import strip_dropout
from graphc.ir.ops.sources import index_check, zero_runs
from graphc.ir.passes.decompose import add_weight_penalties, decompose
from graphc.ir.passes.layout import layout_state
from graphc.ir.passes.pipeline import run_pipeline
from graphc.ir.passes.schedule import schedule
from graphc.ir.plan import Buffer, Schedule
from graphc.ir.program import UNIT_TARGET_LOSSES, Program
from graphc.ir.types import BATCH, DTYPE_INFO, TensorType
from graphc.ir.verify import check_sizes

from .dsl import Tensor, apply, collect_graph, constant_values
from .optim import Adam, Optimizer


def _distinct_outputs(outputs: list[Tensor], loss: Tensor | None) -> list[Tensor]:
    """``outputs`` with each repeat of a tensor (``gc.compile([y, y])``) replaced by a copy
    named ``NAME_1``, ``NAME_2``, ...: every output keeps its own name, in ``predict``'s dict,
    the exported library's arguments and the model file (the copy is a reshape to the same
    type, which simplification removes; the names then share one value). A suffix that a
    tensor of the graph already has is skipped (an input ``x_1`` beside ``[x, x]``)."""
    taken: set[str] | None = None  # every name of the graph, when a repeat needs it
    seen: set[str] = set()
    out = []
    for t in outputs:
        if t.name in seen:
            if taken is None:
                taken = _tensor_names(outputs + ([loss] if loss is not None else []))
            k = 1
            while f"{t.name}_{k}" in seen or f"{t.name}_{k}" in taken:
                k += 1
            t = apply("reshape", t, name=f"{t.name}_{k}", shape=t.type.shape)
        seen.add(t.name)
        out.append(t)
    return out


def _tensor_names(tensors: list[Tensor]) -> set[str]:
    """The names of ``tensors`` and of every tensor they depend on."""
    names: set[str] = set()
    stack = list(tensors)
    while stack:
        t = stack.pop()
        if t.name not in names:
            names.add(t.name)
            stack.extend(t.parents)
    return names


def build_graphs(
    name: str, outputs: list[Tensor], loss: Tensor | None, optimizer: Optimizer | None
) -> Program:
    """Forward, training and inference graphs from DSL tensors (no passes yet)."""
    if not outputs:
        raise GraphcError("compile: give at least one output tensor")
    for t in outputs + ([loss] if loss is not None else []):
        if not isinstance(t, Tensor):
            where = (
                ": the optimizer goes third, gc.compile(outputs, loss, optimizer)"
                if isinstance(t, Optimizer)
                else ""
            )
            raise GraphcError(
                f"compile: outputs and loss must be graphc Tensors, got {type(t).__name__}{where}"
            )
    outputs = _distinct_outputs(outputs, loss)
    out_names = [t.name for t in outputs]
    fwd = collect_graph(name, outputs + ([loss] if loss is not None else []))
    check_sizes(fwd)  # a value too large to index or allocate: ShapeError before compiling
    loss_name = loss.name if loss is not None else None
    if loss_name is not None:  # dense(..., kernel_l2=...): the penalties join the loss
        fwd, loss_name = add_weight_penalties(fwd, loss_name)
    # dropout is the identity and batch_norm uses its running statistics outside training
    inference = _inference_form(collect_graph(name, outputs))
    feature_inputs = [n.name for n in inference.inputs]
    label_inputs = [n.name for n in fwd.inputs if n.name not in feature_inputs]
    if any(n.name == "lr" for n in fwd.inputs):
        raise GraphcError("the input name 'lr' is reserved for the learning rate")
    prog = Program(
        name,
        _inference_form(fwd),
        None,
        inference,
        {},
        feature_inputs=feature_inputs,
        label_inputs=label_inputs,
        outputs=out_names,
        constants=constant_values(outputs + ([loss] if loss is not None else [])),
        declared=fwd,
    )
    if loss is None:
        return prog
    if loss.type.shape != ():
        swapped = [t.name for t in outputs if t.type.shape == ()]
        hint = (
            f"; output {swapped[0]} is a scalar: outputs and loss swapped? gc.compile(outputs, "
            "loss, optimizer) takes the loss second"
            if swapped
            else ""
        )
        if not swapped and getattr(loss, "kind", None):  # a built-in loss, reduction="none"
            hint = (
                f"; a loss per row ({loss.kind}(..., reduction='none')) trains only "
                f"once reduced to one number: pass gc.mean({loss.name}) (or gc.sum), or give "
                "the loss its reduction='mean' or 'sum'"
            )
        raise GraphcError(
            f"compile: the loss must be a scalar, got {loss.type} ({loss.name}){hint}"
        )
    prog.loss = loss_name
    prog.loss_kind = getattr(loss, "kind", None)
    prog.prediction = getattr(loss, "prediction", None)
    prog.metric_output, prog.metric_form = metric_source(
        fwd, out_names, prog.loss_kind, prog.prediction
    )
    prog.target = getattr(loss, "target", None)
    prog.metric_target = metric_target(fwd, prog.target, label_inputs)
    if prog.metric_target is None:
        prog.metric_output = None  # nothing to compare the prediction with: the loss alone
    needed = ancestors(fwd, [loss_name])
    params = [p.name for p in fwd.params if p.name in needed and p.attr("trainable", True)]
    if not params:
        raise GraphcError("compile: the loss depends on no trainable parameter: nothing to train")
    train_fwd, state_updates = decompose(fwd, training=True)  # batch_norm: batch statistics
    g, grads = gradients(train_fwd.with_(outputs=(loss_name,)), loss_name, params)
    b = Builder(g, section="update", dtype=loss.dtype)
    lr = b.own_source("input", "lr", TensorType((), loss.dtype), None, "the learning rate")
    # dropout reads the counter in the forward part (the same source); an integer: exact to
    # 2^63 steps
    step = b.own_source(
        "state", "step", TensorType((), "i64"), {"init": "zeros"}, "the optimizer's step counter"
    )
    t = b.increment(step)
    optimizer = optimizer or Adam()
    clipped = optimizer.clip_gradients(b, params, grads)
    updates = [(step, t)] + optimizer.build(b, params, clipped, lr, t) + state_updates
    prog.training = b.graph(name, (loss_name,), tuple(updates))
    prog.grads = grads
    # the split step (compiled on first use): with batch statistics (batch_norm) it still
    # gives one process's gradients (Model.gradients; the running statistics are left as
    # they are), but a rank's slice would normalize by its own rows' statistics
    build_split(prog, train_fwd, params, optimizer)
    prog.loss_note = not_row_mean(train_fwd, loss_name)
    kept = kept_rows(train_fwd, loss_name) if prog.loss_note else None
    prog.kept_rows, prog.kept_weight = kept if kept is not None else (None, None)
    if state_updates:
        prog.ranks_note = (
            "its batch statistics (batch_norm) would be each rank's own, not the global batch's"
        )
    else:
        prog.ranks_note = "" if prog.kept_rows else prog.loss_note
    return prog


def kept_rows(
    g: Graph, loss: str
) -> tuple[tuple[str, int | None], tuple[float, ...] | None] | None:
    """((labels input, ignore_index or None), class weights or None) when ``loss`` is a mean
    over the rows softmax_cross_entropy keeps or weighs (ir.batch.kept_mean_loss) and its
    labels are a graph input with N leading, whose values data-parallel fit can weigh per
    row; else None."""
    node = kept_mean_loss(g, loss)
    if node is None:
        return None
    labels = g[node.inputs[1]]
    if labels.op != "input" or not labels.type.shape or labels.type.shape[0] != BATCH:
        return None
    ignore, weight = node.attr("ignore_index"), node.attr("weight")
    return (
        (labels.name, None if ignore is None else int(ignore)),
        None if weight is None else tuple(float(w) for w in weight),
    )


def not_row_mean(g: Graph, loss: str) -> str:
    """Why data-parallel training cannot split ``loss`` over ranks ("" when it can): the ranks'
    gradients of ``loss * b / B`` add up to the global batch's gradient only when the loss is
    a mean over rows plus terms of no row (ir.batch.loss_is_row_mean), as every built-in loss
    is. A sum over rows, or a function of a mean (sqrt(mean(...)): RMSE), is not: names the
    first node that makes it so."""
    if loss_is_row_mean(g, loss):
        return ""
    kinds = batch_kinds(g)
    needed = ancestors(g, [loss])
    first = next(
        n
        for n in g.nodes
        if n.name in needed and kinds[n.name] == MIXED
        and all(kinds[i] != MIXED for i in n.inputs)
    )  # fmt: skip
    over_rows = (first.op == "sum" and any(kinds[i] == ROWS for i in first.inputs)) or (
        first.op == "softmax_cross_entropy" and first.attr("reduction") == "sum"
    )
    how = "a sum over them" if over_rows else "a function of them as a whole"
    mean_of_xent = first.op == "softmax_cross_entropy" and first.attr("reduction") is None
    if mean_of_xent and first.attr("weight") is not None:
        return (
            f"its loss {loss!r} is softmax_cross_entropy with weight: a mean divided by the "
            "class weights of the rows each rank keeps, whose sums differ between ranks, so "
            "the ranks' gradients add up to the global batch's only when each rank's "
            "loss_scale is its kept rows' weights over the global batch's (graphc's "
            "data-parallel fit does that when the labels are a graph input and the loss "
            "holds no other mean over rows)"
        )
    if mean_of_xent and first.attr("ignore_index") is not None:
        return (
            f"its loss {loss!r} is softmax_cross_entropy with ignore_index "
            f"{first.attr('ignore_index')}: a mean over the rows each rank keeps, whose counts "
            "differ between ranks, so the ranks' gradients add up to the global batch's only "
            "when each rank's loss_scale is its kept label positions over the global batch's "
            "(graphc's data-parallel fit does that when the labels are a graph input and the "
            "loss holds no other mean over rows)"
        )
    return (
        f"its loss {loss!r} is not a mean over the batch's rows ({first.op} {first.name!r} "
        f"makes it {how}), "
        "so the ranks' gradients, each of its own rows, would not add up to the global "
        "batch's; write the loss as a mean over rows (gc.mean, the built-in losses), plus "
        "terms that read no row"
    )


# per loss kind, how an output may carry the loss's prediction operand P with evaluate's metrics
# still right: "same" (P itself), "softmax"/"log_softmax" of P (the class argmax is P's),
# "sigmoid" of P (logits P: probabilities, threshold 0.5), "logit" (P = sigmoid(output): the
# output's threshold is 0)
_METRIC_FORMS = {
    "softmax_cross_entropy": ("same", "softmax", "log_softmax"),
    "categorical_cross_entropy": ("same", "softmax", "log_softmax"),
    "binary_cross_entropy": ("same", "sigmoid"),
    "binary_cross_entropy_probs": ("same", "logit"),
    "mean_squared_error": ("same",),
    "mean_absolute_error": ("same",),
    "huber": ("same",),
}


def metric_source(
    g: Graph, outputs: list[str], kind: str | None, prediction: str | None
) -> tuple[int | None, str]:
    """(index of the output evaluate's metrics read, its form; see Program.metric_output).

    The metrics (accuracy, mse, ...) are those of the loss's prediction operand P, so they read
    the output that is P or a squash of it whose answer they can still tell (see
    _METRIC_FORMS): the first output (an unrelated hidden layer, a sigmoid's probabilities
    thresholded at 0 as if logits) gave wrong figures silently. (None, "") when no output
    carries P: the model then reports the loss alone. P unknown (a loss without a tag, an
    older model file): the first output as it is, as before."""
    if prediction is None or kind not in _METRIC_FORMS or prediction not in g.by_name:
        return 0, "same"
    nodes = g.by_name
    p = nodes[prediction]
    for i, name in enumerate(outputs):
        node = nodes[name]
        while node.op == "reshape" and nodes[node.inputs[0]].type == node.type:
            node = nodes[node.inputs[0]]  # a repeated output's copy (_distinct_outputs)
        if node.name == prediction:
            form = "same"
        elif node.op in ("sigmoid", "softmax", "log_softmax") and node.inputs[0] == prediction:
            form = node.op
        elif p.op == "sigmoid" and p.inputs[0] == node.name:
            form = "logit"
        else:
            continue
        if form in _METRIC_FORMS[kind]:
            return i, form
    return None, ""


def metric_target(g: Graph, target: str | None, label_inputs: list[str]) -> str | None:
    """The input whose values evaluate's metrics compare the loss's prediction with (see
    Program.metric_target): the loss's target operand when it is an input, or a reshape of
    one (its values in another shape; the metrics reshape them), a feature input included
    (an autoencoder's ``mean_squared_error(decoded, x)``).

    None when the target is computed from the inputs (``mean_squared_error(pred,
    gc.log(y))``, ``binary_cross_entropy(z, 1 - t)``, a mean over a label's columns): the
    metrics then report the loss alone, as a model without a tagged loss does, since the
    raw input (what they read before) is not what the loss compared with: the mse of the
    prediction against y where the loss's is against log(y), the accuracy against t where it
    is against 1 - t, a prediction [N, 1] broadcast against targets [N, 3]. Target unknown
    (a loss without a tag, an older model file): the first label input, as before."""
    if target is None:
        return label_inputs[0] if label_inputs else None
    node = g.by_name.get(target)
    while node is not None and node.op == "reshape":
        node = g.by_name.get(node.inputs[0])
    return node.name if node is not None and node.op == "input" else None


def _inference_form(g: Graph) -> Graph:
    """``g`` as evaluated outside training: without dropout, composites in inference mode."""
    return decompose(strip_dropout(g), training=False)[0]


SPLIT_INPUTS = ("loss_scale", "row0")  # the extra inputs of NAME_train_grads


def grad_slot(param: str) -> str:
    """The name of the source holding ``param``'s gradient in ``NAME_apply_update``."""
    return f"{param}.grad"


def build_split(prog: Program, fwd: Graph, params: list[str], optimizer: Optimizer) -> None:
    """The training step as two graphs, for data-parallel training (runtime/distributed.py).

    ``train_grads``: forward and backward of ``loss * loss_scale`` (``loss_scale``: a scalar
    input); it returns the unscaled loss and writes the gradient of every param P to the grad
    region of the workspace, at P's offset in the param region (the region is contiguous and
    laid out like the params: one all-reduce covers every gradient). With dropout it takes
    ``row0`` (a scalar input: the index of the first row in the global batch), so that each
    row draws the mask it draws when the whole batch runs in one process.
    ``apply_update``: the optimizer update (step counter included) from the gradients in that
    region, with input ``lr``.

    One process runs ``train_step`` as ``train_grads`` with loss_scale 1 and row0 0, then
    ``apply_update``. A rank holding b of the B rows of a global batch passes loss_scale b/B:
    the sum of the ranks' gradients is then the gradient of the mean loss over the global batch
    (loss terms that do not depend on the rows, such as weight penalties, have weights b/B that
    sum to 1). Sets ``prog.split`` (or ``prog.split_note`` when a user input is named like one
    of SPLIT_INPUTS).
    """
    taken = [n for n in SPLIT_INPUTS if n in fwd.by_name]
    if taken:
        prog.split_note = f"the model has an input named {taken[0]!r} (reserved for train_grads)"
        return
    taken = [p for p in params if grad_slot(p) in fwd.by_name]
    if taken:
        prog.split_note = (
            f"the model has a tensor named {grad_slot(taken[0])!r}, the name of the gradient "
            f"of {taken[0]!r} in train_grads"
        )
        return
    loss = prog.loss
    dt = fwd[loss].type.dtype
    scalar = TensorType((), dt)
    front = [make_node("loss_scale", "input", (), scalar)]
    has_dropout = any(n.op == "dropout" for n in fwd.nodes)
    if has_dropout:
        front.append(make_node("row0", "input", (), TensorType((), "i64")))
    nodes = [
        n.with_(inputs=n.inputs[:2] + ("row0",)) if n.op == "dropout" else n for n in fwd.nodes
    ]
    b = Builder(fwd.with_(nodes=tuple(front + nodes)), section="forward", dtype=dt)
    scaled = b.mul(loss, "loss_scale")
    g, grads = gradients(b.graph(fwd.name, (scaled,)), scaled, params)
    b = Builder(g, section="update", dtype=dt)
    ups = []
    for p in params:
        slot = b.source("state", grad_slot(p), fwd[p].type, {"init": "zeros"})
        ups.append((slot, grads[p]))
    prog.split["train_grads"] = b.graph(fwd.name, (loss,), tuple(ups))
    b = Builder(None, section="update", dtype=dt)
    src = prog.training
    for p in params:
        b.add_node(src[p])
    step = b.add_node(src["step"])
    lr = b.source("input", "lr", scalar)
    gmap = {p: b.source("state", grad_slot(p), src[p].type, {"init": "zeros"}) for p in params}
    t = b.increment(step)
    updates = [(step, t)] + optimizer.build(
        b, params, optimizer.clip_gradients(b, params, gmap), lr, t
    )
    prog.split["apply_update"] = b.graph(fwd.name, (), tuple(updates))


def make_layout(prog: Program) -> None:
    """Fill ``prog.layout``, ``param_bytes`` and ``state_bytes`` (``ir.passes.layout``)."""
    prog.layout, prog.param_bytes, prog.state_bytes = layout_state(prog.training or prog.forward)


def schedule_program(
    prog: Program,
    *,
    opt_level: int = 2,
    disabled_passes: tuple[str, ...] = (),
    verify_each: bool = False,
    split: bool = True,
) -> Program:
    """Run the passes and plan memory for every entry (infer, eval, train_step, and with
    ``split`` the split step's train_grads and apply_update when ``prog.split`` has them;
    without, ``compile_split`` schedules them when they are needed)."""
    prog.opt_level = opt_level
    make_layout(prog)
    entries = {"infer": prog.inference}
    if prog.training is not None:
        entries["eval"] = prog.forward
        entries["train_step"] = prog.training
    for entry, g in entries.items():
        t0 = time.perf_counter()
        # check_numerics scans each stored value after its kernel; the one flat optimizer loop
        # (or a GEMM that also updates its param) would hide which value went bad, so the
        # per-parameter update kernels stay
        off = tuple(disabled_passes) + (
            ("fuse_update_epilogue", "fuse_optimizer") if prog.check_numerics else ()
        )
        prog.disabled_passes, prog.verify_each = off, verify_each  # for compile_split
        res = run_pipeline(g, opt_level, disabled=off, verify_each=verify_each)
        prog.optimized[entry] = res
        grads = prog.grads if entry == "train_step" else {}
        sched = schedule(res.graph, prog.layout, grads, reuse=opt_level >= 1)
        sched.scratch_bytes = scratch_bytes(sched)  # the GEMM's packed blocks
        prog.schedules[entry] = sched
        prog.timings[f"passes+schedule:{entry}"] = time.perf_counter() - t0
        if entry == "train_step" and prog.split and split:
            schedule_split(prog, opt_level, off, verify_each)
    prog.input_checks = {e: plan_input_checks(prog, e) for e in prog.schedules}
    return prog


def plan_input_checks(prog: Program, entry: str) -> list[InputCheck]:
    """The value checks entry ``entry``'s native code runs before it writes anything: the
    learning rate finite and >= 0, class labels in 0..classes-1 (softmax cross-entropy),
    binary cross-entropy targets in [0, 1], every other float input finite; in every entry,
    ``infer`` too, the row indices of an embedding lookup (an input with ``index_rows`` V)
    whole numbers in -V..V-1 (or index_low .. V-1, ir.ops.sources.index_range). ``infer``
    checks nothing else (NaN in, NaN out harms no state)."""
    sched = prog.schedules[entry]
    index_checks = {
        n.name: InputCheck(
            n.name, *index_check(n), zero_at=zero_runs(n), width=n.type.elements_per_row()
        )
        for n in sched.graph.nodes
        if n.op == "input" and n.attr("index_rows") is not None
    }
    if entry == "infer":
        return [index_checks[v] for v in sched.input_slots if v in index_checks]
    classes = label_classes(prog.forward)
    out = []
    for v in sched.input_slots:
        t = sched.graph[v].type
        if v == "row0":  # train_grads' row offset (an integer the runtime computes)
            continue
        if v in index_checks:
            out.append(index_checks[v])
        elif v == "lr":
            out.append(InputCheck(v, "lr"))
        elif t.dtype == "i32":
            if v in classes:
                out.append(InputCheck(v, "classes", *classes[v]))
        elif not DTYPE_INFO[t.dtype].is_float:
            continue  # an integer feature (i64, i32 not a label): every value is finite
        elif prog.loss_kind in UNIT_TARGET_LOSSES and v in prog.label_inputs:
            out.append(InputCheck(v, "unit"))
        else:
            out.append(InputCheck(v, "finite"))
    return out


def schedule_split(
    prog: Program, opt_level: int, disabled: tuple[str, ...], verify_each: bool
) -> None:
    """Schedules of ``prog.split`` (see build_split) with every gradient in the grad region:
    the gradient sources of apply_update are placed there, and train_grads' gradients land
    there (its copy of a gradient onto its own place is dropped). Both schedules then hold
    the grad region in the first ``param_bytes`` bytes of the workspace; when one does not
    (gradients merged by the passes), the split entries are left out and split_note says why.
    """
    t0 = time.perf_counter()
    src = prog.training
    params = [n.name for n in src.nodes if n.op == "param" and n.name in prog.grads]
    layout = dict(prog.layout)
    for p in params:
        pb = prog.layout[p]
        layout[grad_slot(p)] = Buffer(grad_slot(p), "grad", pb.offset, 0, pb.size)
    done: dict[str, Schedule] = {}
    for entry, g in prog.split.items():
        res = run_pipeline(g, opt_level, disabled=disabled, verify_each=verify_each)
        upd = dict(res.graph.updates)
        grads = (
            {p: upd[grad_slot(p)] for p in params if grad_slot(p) in upd}
            if entry == "train_grads"
            else {p: grad_slot(p) for p in params}
        )
        # the region spans every param, trainable or not (a frozen last layer, a gc.constant
        # scaling the output): the runtime reads and all-reduces it as the param region's twin
        sched = schedule(
            res.graph, layout, grads, reuse=opt_level >= 1, grad_region=prog.param_bytes
        )
        sched.kernels = [
            k
            for k in sched.kernels
            if not (
                k.kind == "copy"
                and k.copy_to in layout
                and sched.buffers[k.nodes[0]].region == "grad"
                and sched.buffers[k.nodes[0]].offset == layout[k.copy_to].offset
            )
        ]
        sched.scratch_bytes = scratch_bytes(sched)  # the GEMM's packed blocks
        if sched.grad_bytes != prog.param_bytes:
            prog.split_note = (
                f"{entry}: the gradients do not fill the grad region ({sched.grad_bytes} of "
                f"{prog.param_bytes} bytes)"
            )
            return
        done[entry] = sched
    prog.schedules.update(done)
    prog.timings["passes+schedule:split"] = time.perf_counter() - t0


SPLIT_ENTRIES = ("train_grads", "apply_update")


def compile_split(prog: Program, target_cpu: str = "native") -> JitModule | None:
    """Machine code of the split training step (``NAME_train_grads``, ``NAME_apply_update``)
    of a Program scheduled without it (``schedule_program(split=False)``, as ``gc.compile``
    does: only data-parallel training and ``Model.gradients`` call them), in a module of its
    own (from the compile cache, or compiled and stored). None when the model has no split
    step (``prog.split_note`` says why)."""
    if not prog.split:
        return None
    if any(e not in prog.schedules for e in SPLIT_ENTRIES):
        schedule_split(prog, prog.opt_level, prog.disabled_passes, prog.verify_each)
        if any(e not in prog.schedules for e in SPLIT_ENTRIES):
            return None
        for e in SPLIT_ENTRIES:
            prog.input_checks[e] = plan_input_checks(prog, e)
    part = dataclasses.replace(
        prog,
        schedules={e: prog.schedules[e] for e in SPLIT_ENTRIES},
        input_checks={e: prog.input_checks[e] for e in SPLIT_ENTRIES},
        timings={},
        llvm_ir="",
    )
    return jit_cached(part, target_cpu)


def build_module(
    prog: Program, target_cpu: str = "native", *, split: bool = False, keep_grads: bool = True
) -> ModuleBuilder:
    """The LLVM module of a scheduled Program: an entry per schedule, plus ``train_epoch``
    (``split``: the GEMMs in modules of their own, one per compile thread; ``keep_grads``:
    train_step leaves every gradient in its grad region, as a library's header says; see
    ModuleBuilder)."""
    t0 = time.perf_counter()
    mb = ModuleBuilder(
        prog.name,
        target_cpu=target_cpu,
        check_numerics=prog.check_numerics,
        gemm_modules=compile_threads() if split else 0,
        keep_grads=keep_grads,
    )
    with gc_paused():
        mb.plan_gemms(prog.schedules.values())
        for entry, sched in prog.schedules.items():
            mb.add_entry(entry, sched, prog.input_checks.get(entry, ()))
        if "train_step" in prog.schedules:
            mb.add_epoch_entry("train_step")
        if all(e in prog.schedules for e in SPLIT_ENTRIES):
            mb.add_split_epoch_entry()
            mb.add_update_shard_entry()  # when apply_update can run by shards
    prog.timings["llvm_ir"] = time.perf_counter() - t0
    return mb


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off for the block (then on again if it was on).

    Building and printing a module creates about 10^5 llvmlite objects that all stay alive;
    the collector ran about 90 times over them for the digits network (a third of the time
    spent building the IR) without freeing any: they live until the module is compiled. The
    first collection after the block frees them (llvmlite's objects form reference cycles).
    Blocks nest."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def compile_program(
    prog: Program,
    *,
    opt_level: int = 2,
    target_cpu: str = "native",
    disabled_passes: tuple[str, ...] = (),
    verify_each: bool = False,
) -> tuple[Program, ModuleBuilder]:
    """Run the passes, plan memory and build the LLVM module (not yet machine code)."""
    schedule_program(
        prog, opt_level=opt_level, disabled_passes=disabled_passes, verify_each=verify_each
    )
    return prog, build_module(prog, target_cpu)


def jit(prog: Program, mb: ModuleBuilder, target_cpu: str = "native") -> JitModule:
    """Optimize and compile ``mb`` to machine code in this process (no cache)."""
    objects, modules = _objects(prog, mb, target_cpu)
    return JitModule(objects, target_machine(target_cpu), modules)


def _objects(prog: Program, mb: ModuleBuilder, target_cpu: str) -> tuple[list[bytes], list]:
    """Object files of ``mb``'s parts (compiled in parallel: codegen.target.compile_parts) and
    the optimized modules they came from. Sets ``prog.llvm_ir`` and the timings "llvm_text",
    "llvm_opt", "machine_code" (summed over the parts) and "llvm" (the wall time of all)."""
    t0 = time.perf_counter()
    with gc_paused():  # printing the modules allocates as much as building them
        texts, compiled = compile_parts(mb.parts(), target_cpu, prog.name, prog.timings)
    prog.llvm_ir = "\n".join(texts)
    prog.timings["llvm"] = time.perf_counter() - t0
    return [obj for _, obj in compiled], [mod for mod, _ in compiled]


def _target_id(target_cpu: str | Target) -> tuple[str, str, str]:
    t = as_target(target_cpu)
    name, features = t.llvm_cpu_features()
    return t.llvm_triple, name, features


def compile_cached(
    prog: Program,
    *,
    opt_level: int = 2,
    disabled_passes: tuple[str, ...] = (),
    verify_each: bool = False,
    target_cpu: str = "native",
) -> JitModule:
    """Passes and schedules (always run: about 10 ms), then machine code from the compile cache
    (graphc/cache.py, keyed by the scheduled graphs) or, on a miss, from LLVM.

    ``prog.timings["cache"]`` is "hit", "miss" or "off".
    """
    schedule_program(
        prog,
        opt_level=opt_level,
        disabled_passes=disabled_passes,
        verify_each=verify_each,
        split=False,  # compile_split makes them when they are needed
    )
    return jit_cached(prog, target_cpu)


def jit_cached(prog: Program, target_cpu: str = "native") -> JitModule:
    """Machine code for a scheduled Program: from the compile cache (graphc/cache.py) when it
    holds this program for this target, else compiled (object file stored for next time).

    ``prog.timings["cache"]`` is "hit", "miss" or "off".
    """
    from . import cache

    if not cache.enabled():
        prog.timings["cache"] = "off"
        with gc_paused():  # one pause for building, printing and compiling (see gc_paused)
            return jit(
                prog, build_module(prog, target_cpu, split=True, keep_grads=False), target_cpu
            )
    t0 = time.perf_counter()
    tm = target_machine(target_cpu)
    key = cache.cache_key(prog, _target_id(target_cpu))
    data = cache.load_objects(key)
    if data is not None:
        try:
            jm = JitModule(data, tm)
            if all(jm.has(f"{prog.name}_{e}") for e in prog.schedules):
                prog.timings["cache"] = "hit"
                prog.timings["cache_load"] = time.perf_counter() - t0
                return jm
        except RuntimeError:
            pass
        cache.discard(key)  # unreadable by MCJIT or missing entries: rebuild it
    prog.timings["cache"] = "miss"
    with gc_paused():  # one pause for building, printing and compiling (see gc_paused)
        mb = build_module(prog, target_cpu, split=True, keep_grads=False)
        objects, modules = _objects(prog, mb, target_cpu)
        del mb  # the IR is garbage now: the first collection after the pause frees it
    t1 = time.perf_counter()
    jm = JitModule(objects, tm, modules)
    prog.timings["load"] = time.perf_counter() - t1
    cache.store_objects(key, objects)
    return jm
