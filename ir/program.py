"""``Program``: everything the compiler makes for one model, stage by stage (data only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .graph import Graph
from .plan import Buffer, Schedule

if TYPE_CHECKING:
    from .passes.pipeline import PipelineResult


# Losses whose targets are probabilities: every target value must lie in [0, 1] (the native
# input scan's "unit" check, fit's row check).
UNIT_TARGET_LOSSES = frozenset({"binary_cross_entropy", "binary_cross_entropy_probs"})


@dataclass
class Program:
    """Everything the compiler made for one model, stage by stage."""

    name: str
    forward: Graph  # outputs + loss
    training: Graph | None  # forward + backward + update (before passes)
    inference: Graph  # outputs only
    grads: dict[str, str]
    optimized: dict[str, PipelineResult] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    layout: dict[str, Buffer] = field(default_factory=dict)
    param_bytes: int = 0
    state_bytes: int = 0
    feature_inputs: list[str] = field(default_factory=list)
    label_inputs: list[str] = field(default_factory=list)
    loss: str | None = None
    loss_kind: str | None = None
    outputs: list[str] = field(default_factory=list)
    # the loss's prediction operand (a value name; None: unknown, e.g. an older model file) and
    # where evaluate's metrics read it: (index into outputs, form), form "same" (the output is
    # it), "sigmoid" / "softmax" / "log_softmax" (the output squashes it), "logit" (it is the
    # sigmoid of the output); metric_output None: no output carries it, no metrics
    # (graphc.compiler.metric_source)
    prediction: str | None = None
    metric_output: int | None = 0
    # the loss's target operand (a value name; None: unknown) and the input evaluate's metrics
    # compare the prediction with: that operand when it is an input (or a reshape of one),
    # else None and no metrics (graphc.compiler.metric_target)
    target: str | None = None
    metric_target: str | None = None
    metric_form: str = "same"
    llvm_ir: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    opt_level: int = 2
    check_numerics: bool = False  # kernels' stores scanned for NaN/Inf (codegen.kernels)
    constants: dict[str, Any] = field(default_factory=dict)  # gc.constant: name -> array
    declared: Graph | None = None  # the network as declared (dropout kept): model files
    # entry -> the value checks its native code runs on its inputs first, before any write
    # (graphc.codegen.checks.InputCheck, planned by graphc.compiler.plan_input_checks)
    input_checks: dict[str, list[Any]] = field(default_factory=dict)
    # The training step split in two for data-parallel training (graphc.compiler.build_split):
    # entry name -> graph ("train_grads", "apply_update"), or {} with the reason in split_note.
    split: dict[str, Graph] = field(default_factory=dict)
    split_note: str = ""
    # set when the split step exists but is right for one process only (batch_norm: a rank's
    # rows would give their own batch statistics): Model.gradients uses it, data-parallel
    # training refuses the model with this reason
    ranks_note: str = ""
    # set when the loss is no mean over the batch's rows (graphc.compiler.not_row_mean): then
    # ranks_note holds it too (data-parallel training refuses), while the split entries stay
    # right in one process (train_grads with loss_scale 1, then apply_update, is train_step)
    loss_note: str = ""
    # set when the loss is a mean over the rows whose labels are not softmax_cross_entropy's
    # ignore_index, or weighted by its class weights (ir.batch.kept_mean_loss), read from a
    # graph input: (that input's name, the ignore_index or None). loss_note says why the split entries alone are not data-parallel, but
    # data-parallel fit trains it, each rank's loss_scale its kept label positions over the
    # global batch's (runtime.distributed.kept_scales)
    kept_rows: tuple[str, int | None] | None = None
    # with kept_rows: softmax_cross_entropy's class weights (each kept label position counts
    # its class's weight instead of 1), or None
    kept_weight: tuple[float, ...] | None = None
    # the passes' options schedule_program ran with (graphc.compiler.compile_split reuses them)
    disabled_passes: tuple[str, ...] = ()
    verify_each: bool = False
