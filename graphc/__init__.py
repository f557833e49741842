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
    GradError,
    GraphcError,
    NumericsError,
    OnnxError,
    ParseError,
    ShapeError,
    VerifyError,
)
from graphc.ir.graph import Graph
from graphc.runtime.library import Library, load

from .api import compile, compile_sequential
from .onnx_import import OnnxImport, from_onnx

from .modelfile import load_model
from .dsl import (
    Dense,
    Dropout,
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
    exp,
    input,
    log,
    matmul,
    maximum,
    mean,
    mean_squared_error,
    mul,
    neg,
    param,
    perceptron,
    relu,
    reshape,
    sigmoid,
    softmax,
    softmax_cross_entropy,
    softplus,
    sqrt,
    square,
    sub,
    sum,
    tanh,
    transpose,
)
from .callbacks import (
    CosineAnnealingLR,
    CSVLogger,
    TensorBoard,
    EarlyStopping,
    ExponentialLR,
    LambdaLR,
    ReduceLROnPlateau,
    StepLR,
)
from .optim import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "CSVLogger",
    "TensorBoard",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "ArgumentError",
    "CosineAnnealingLR",
    "Dropout",
    "Normalization",
    "EarlyStopping",
    "ExponentialLR",
    "LambdaLR",
    "RMSprop",
    "ReduceLROnPlateau",
    "StepLR",
    "dropout",
    "CheckpointError",
    "CodegenError",
    "Dense",
    "GradError",
    "Graph",
    "GraphcError",
    "NumericsError",
    "OnnxError",
    "OnnxImport",
    "from_onnx",
    "Optimizer",
    "ParseError",
    "Sequential",
    "ShapeError",
    "Tensor",
    "VerifyError",
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
    "exp",
    "input",
    "log",
    "matmul",
    "maximum",
    "mean",
    "mean_squared_error",
    "mul",
    "neg",
    "param",
    "perceptron",
    "relu",
    "reshape",
    "sigmoid",
    "softmax",
    "softmax_cross_entropy",
    "softplus",
    "sqrt",
    "square",
    "sub",
    "sum",
    "tanh",
    "transpose",
]
