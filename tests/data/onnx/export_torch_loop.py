"""Regenerates tests/data/onnx/loop_ts_*.onnx: torch.jit.script modules with Python control
flow, exported by torch.onnx.export's TorchScript exporter (opset 14 and 17, dynamic batch).
torch writes a scripted ``for`` over range(x.size(1)) as ONNX Loop (a constant range it
unrolls itself), a list built by ``append`` as SequenceEmpty / SequenceInsert carried through the Loop
and ``torch.stack`` of it as ConcatFromSequence, a ``while`` on a counter as Loop with a
condition, nested loops, torch.split iterated and torch.cat of a list (SplitToSequence,
SequenceAt, SequenceLength), and an ``if`` on data as If: graphc's importer
unrolls the loops and selects between the branches (graphc/onnx_import_control.py).

Every module takes x [N, T, C] (T, C fixed) and returns values that lead with N.
Run with a Python that has torch and onnx: ``python tests/data/onnx/export_torch_loop.py``.
"""

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
T, C = 4, 3


class Steps(torch.nn.Module):
    """A hand-written recurrence over the T steps of x (the trip count is x's shape), the
    states collected in a list and stacked: Loop, SequenceInsert, ConcatFromSequence."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(C, C)
        self.rec = torch.nn.Linear(C, C, bias=False)

    def forward(self, x):
        h = torch.zeros_like(x[:, 0])
        outs = []
        for t in range(x.size(1)):
            h = torch.tanh(self.inp(x[:, t]) + self.rec(h))
            outs.append(h * float(t + 1))
        return torch.stack(outs, 1), h


class Until(torch.nn.Module):
    """A ``while`` on a counter: Loop with torch's INT64_MAX trip count and a condition that
    the body computes from the loop-carried counter (known at import: it folds)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(C, C)

    def forward(self, x):
        h = x[:, -1]
        k = 0
        while k < 5:
            h = torch.sin(self.lin(h)) + h
            k += 2
        return h


class Nested(torch.nn.Module):
    """Two nested loops over x's shape (a Loop in a Loop's body), the inner index scaling."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(C, C)

    def forward(self, x):
        h = x[:, 0]
        for t in range(x.size(1)):
            for j in range(x.size(2)):
                h = torch.tanh(self.lin(h) + x[:, t]) * (j + 1)
        return h


class Pieces(torch.nn.Module):
    """torch.split into a list iterated by a loop (SplitToSequence, SequenceLength, SequenceAt
    of the iteration number), and a list joined by torch.cat and counted by len
    (ConcatFromSequence, SequenceLength)."""

    def forward(self, x):
        acc = torch.zeros_like(x[:, :, :1])
        for y in torch.split(x, 1, 2):
            acc = acc * 0.5 + y
        parts = []
        for t in range(x.size(1)):
            parts.append(torch.relu(x[:, t] - t))
        return acc, torch.cat(parts, 1) * len(parts)


class Branch(torch.nn.Module):
    """An ``if`` on the data: relu(W x) when the batch's sum is positive, else -x."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(C, C)

    def forward(self, x):
        if bool(x.sum() > 0):
            y = torch.relu(self.lin(x))
        else:
            y = -x
        return y


def modules():
    return {
        "steps": Steps(),
        "until": Until(),
        "nested": Nested(),
        "pieces": Pieces(),
        "branch": Branch(),
    }


def main(names):
    for name, m in modules().items():
        if names and name not in names:
            continue
        torch.manual_seed(sum(map(ord, name)))
        m.eval()
        s = torch.jit.script(m)
        outs = ("y", "h") if name in ("steps", "pieces") else ("y",)
        for opset in (14, 17):
            torch.onnx.export(
                s,
                (torch.randn(2, T, C),),
                os.path.join(HERE, f"loop_ts_{name}_{opset}.onnx"),
                input_names=["x"],
                output_names=list(outs),
                dynamic_axes={k: {0: "N"} for k in ("x", *outs)},
                opset_version=opset,
                dynamo=False,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
