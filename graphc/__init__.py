"""graphc: an ahead-of-time neural-network compiler.

import graphc as gc
x = gc.input("x", ("N", 64)); labels = gc.input("labels", ("N",), dtype="i32")
logits = gc.dense(gc.dense(x, 32, "relu"), 10)
model = gc.compile(logits, loss=gc.softmax_cross_entropy(logits, labels), optimizer=gc.Adam(1e-3))
model.fit(X, y, epochs=20, batch_size=32)
"""

from __future__ import annotations

from graphc.ir.errors import (
    ArgumentError,
    CheckpointError,
    CodegenError,
    DistributedError,
    GradError,
    GraphcError,
    NumericsError,
    OnnxError,
    OptionTypeError,
    ParseError,
    ShapeError,
    TargetError,
    VerifyError,
    WorkspaceError,
)
from graphc.ir.graph import Graph
from graphc.runtime import distributed
from graphc.runtime import model as _runtime_model
from graphc.runtime.library import Library, load

from . import dsl as _dsl
from . import modelfile as _modelfile
from .api import compile, compile_sequential
from .callbacks import (
    CosineAnnealingLR,
    CSVLogger,
    EarlyStopping,
    ExponentialLR,
    LambdaLR,
    LearningRateScheduler,
    LinearLR,
    ModelCheckpoint,
    MultiStepLR,
    PolynomialLR,
    ReduceLROnPlateau,
    StepLR,
    TensorBoard,
)
from .dsl import (
    Dense,
    Dropout,
    LossInputWarning,
    Normalization,
    Sequential,
    Tensor,
    activation,
    add,
    binary_cross_entropy,
    const,
    constant,
    dense,
    div,
    dropout,
    input,
    matmul,
    maximum,
    mean,
    mean_squared_error,
    mul,
    param,
    perceptron,
    reshape,
    softmax,
    softmax_cross_entropy,
    sub,
    sum,
)
from .modelfile import load_model
from .onnx_import import OnnxFrozenWarning, OnnxImport, OnnxPrecisionWarning, from_onnx
from .optim import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop


def _export_library(model, path, **options):
    from .export import export_model

    return export_model(model, path, **options)


def _export_onnx(model, path, **options):
    from .onnx_export import save_onnx

    return save_onnx(model, path, **options)


# Model.export / Model.to_onnx: the runtime calls these drivers through its table (it does not
# import graphc); they import their modules when first used
_runtime_model.EXPORTERS.update(library=_export_library, onnx=_export_onnx)
_runtime_model.EXPORTERS.update(rebuild=_modelfile.model_from_bytes)  # copy, pickle

# one function per registered pointwise op (gc.relu, gc.exp, gc.leaky_relu, ...), generated from
# the op registry by graphc.dsl
globals().update(_dsl.OP_FUNCTIONS)

# issue #14's functions beyond the generated ones (numbers as operands, layers, losses); after
# the generated functions, so that gc.minimum, gc.clip, gc.where, ... take numbers too
from .convolution import (  # noqa: E402
    AvgPool,
    Conv,
    Flatten,
    MaxPool,
    avg_pool,
    conv,
    conv1d,
    conv2d,
    conv3d,
    flatten,
    global_avg_pool,
    max_pool,
)
from .functional import (  # noqa: E402 (max, min, pow, slice: numpy's names)
    BatchNorm,
    Embedding,
    LayerNorm,
    argmax,
    batch_norm,
    binary_cross_entropy_from_probs,
    categorical_cross_entropy,
    concat,
    embedding,
    equal,
    expand_dims,
    flip,
    greater,
    greater_equal,
    huber,
    layer_norm,
    less,
    less_equal,
    log_softmax,
    max,
    mean_absolute_error,
    min,
    minimum,
    not_equal,
    pow,
    slice,
    squeeze,
    swish,
    transpose,
    where,
)
from .recurrent import GRU, LSTM, SimpleRNN, gru, lstm, simple_rnn  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AvgPool",
    "Conv",
    "Flatten",
    "MaxPool",
    "avg_pool",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "flatten",
    "global_avg_pool",
    "max_pool",
    "GRU",
    "LSTM",
    "SimpleRNN",
    "gru",
    "lstm",
    "simple_rnn",
    "BatchNorm",
    "Embedding",
    "LossInputWarning",
    "LayerNorm",
    "argmax",
    "batch_norm",
    "binary_cross_entropy_from_probs",
    "categorical_cross_entropy",
    "concat",
    "embedding",
    "equal",
    "expand_dims",
    "flip",
    "greater",
    "greater_equal",
    "huber",
    "layer_norm",
    "less",
    "less_equal",
    "log_softmax",
    "max",
    "mean_absolute_error",
    "min",
    "minimum",
    "not_equal",
    "pow",
    "slice",
    "squeeze",
    "swish",
    "where",
    "SGD",
    "CSVLogger",
    "TensorBoard",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "ArgumentError",
    "DistributedError",
    "CosineAnnealingLR",
    "Dropout",
    "Normalization",
    "EarlyStopping",
    "ExponentialLR",
    "LambdaLR",
    "LearningRateScheduler",
    "LinearLR",
    "ModelCheckpoint",
    "MultiStepLR",
    "PolynomialLR",
    "RMSprop",
    "ReduceLROnPlateau",
    "StepLR",
    "distributed",
    "dropout",
    "CheckpointError",
    "CodegenError",
    "Dense",
    "GradError",
    "Graph",
    "GraphcError",
    "NumericsError",
    "OnnxError",
    "OptionTypeError",
    "OnnxImport",
    "OnnxFrozenWarning",
    "OnnxPrecisionWarning",
    "from_onnx",
    "Optimizer",
    "ParseError",
    "Sequential",
    "TargetError",
    "ShapeError",
    "Tensor",
    "VerifyError",
    "WorkspaceError",
    "Library",
    "load",
    "activation",
    "add",
    "binary_cross_entropy",
    "compile",
    "load_model",
    "compile_sequential",
    "const",
    "constant",
    "dense",
    "div",
    "input",
    "matmul",
    "maximum",
    "mean",
    "mean_squared_error",
    "mul",
    "param",
    "perceptron",
    "reshape",
    "softmax",
    "softmax_cross_entropy",
    "sub",
    "sum",
    "transpose",
    *sorted(_dsl.OP_FUNCTIONS),
]
