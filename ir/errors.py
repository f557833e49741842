"""The errors graphc shows its users: one class per kind of mistake, all under GraphcError."""

from __future__ import annotations


class GraphcError(Exception):
    """Base of every error graphc raises on purpose."""


class ShapeError(GraphcError, ValueError):
    """An op got operands whose shapes or dtypes it cannot combine (raised while building)."""


class ParseError(GraphcError, ValueError):
    """The text form of a graph could not be parsed; the message gives line:col and a caret."""


class GradError(GraphcError):
    """Autodiff needed a VJP rule that the op does not have."""


class CodegenError(GraphcError):
    """LLVM rejected or failed to compile the module made from a graph."""


class ArgumentError(GraphcError, ValueError):
    """A runtime argument (data array, batch size, file, option) does not fit what was compiled."""


class OptionTypeError(ArgumentError, TypeError):
    """A public option got a value of the wrong type (a string or 2 where True/False is
    meant): the message names the option and the value. A TypeError too, as Python's own
    argument type errors are."""


class TargetError(ArgumentError):
    """An unknown or unsupported target triple, CPU name or CPU feature, or no toolchain for it."""


class CheckpointError(GraphcError, ValueError):
    """A checkpoint or weights file is missing, corrupted, or belongs to another model."""


class NumericsError(GraphcError, FloatingPointError):
    """check_numerics found a NaN or Inf; the message names the node, its op and its source line."""


class VerifyError(GraphcError):
    """A graph broke an IR invariant. Between passes this is a graphc bug: please report it."""


class OnnxError(GraphcError, ValueError):
    """An ONNX file could not be imported: malformed, or an operator, attribute or data type
    graphc does not support (the message names the node, its op type and the opset)."""


class WorkspaceError(ShapeError, MemoryError):
    """The memory a batch needs (an entry's workspace, its outputs) cannot be allocated: the
    message names the batch size and the bytes asked for; a smaller batch needs less (the
    workspace grows linearly with the rows). A ShapeError (and a MemoryError) for callers that
    caught allocation failures as those before."""


class DistributedError(GraphcError):
    """Data-parallel training cannot run: MPI or mpi4py missing, ranks that disagree on the
    data or the arguments, or a model whose training step could not be split."""


def install_hint(packages: str, extra: str) -> str:
    """How to install an optional dependency: the packages themselves, or graphc's extra from
    a checkout (graphc installs from its repository, ``pip install -e .``)."""
    return f'pip install {packages} (or, in your graphc checkout, pip install -e ".[{extra}]")'
