"""Regenerates tests/data/onnx/rnn_ts_*.onnx: torch's recurrent layers (nn.LSTM, nn.GRU,
nn.RNN: two layers, bidirectional, batch first or sequence first, initial states given as
inputs or torch's zeros, a padded batch through pack_padded_sequence) in eval mode with a
dynamic batch, exported by torch.onnx.export's TorchScript exporter at opset 14 (rnn_ts_*) and
its dynamo exporter at opset 18 (rnn_dyn_*; it writes the zero initial states as an Expand of a
scalar to [layers * directions, N, H], and nn.RNN(nonlinearity="relu") as MatMul/Add/Relu).
torch writes ONNX LSTM / GRU / RNN nodes in layout 0 ([T, N, C]) between Transposes, its zero
initial states as ConstantOfShape([layers * directions, N, H]): graphc's importer follows N
through layout views (graphc/onnx_layout.py, graphc/onnx_import_rnn.py).

Every module takes [N, T, C]; its outputs lead with N but State's final states h_n, c_n
[layers * directions, N, H] (graphc returns them in that layout: Model.output_batch_axes).
Run with a Python that has torch, onnx and onnxscript (the dynamo exporter's):
``python tests/data/onnx/export_torch_rnn.py [NAME...]``.
"""

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
T, C, H = 5, 3, 4  # sequence length, input width, hidden size


class Seq(torch.nn.Module):
    """``kind`` over x [N, T, C]: returns Y [N, T, D*H] and the last layer's states [N, D, H]
    (an LSTM's h and c summed)."""

    def __init__(self, kind, batch_first=True, **kw):
        super().__init__()
        self.bf = batch_first
        self.rnn = getattr(torch.nn, kind)(C, H, batch_first=batch_first, **kw)

    def forward(self, x):
        y, h = self.rnn(x if self.bf else x.transpose(0, 1))
        h = h[0] + h[1] if isinstance(h, tuple) else h
        y = y if self.bf else y.transpose(0, 1)
        return y, h.transpose(0, 1)


class Init(torch.nn.Module):
    """A 2-layer LSTM with initial states h0, c0 given batch first [N, 2, H]."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(C, H, num_layers=2, batch_first=True)

    def forward(self, x, h0, c0):
        y, (h, c) = self.rnn(x, (h0.transpose(0, 1).contiguous(), c0.transpose(0, 1).contiguous()))
        return y, h.transpose(0, 1), c.transpose(0, 1)


class Cls(torch.nn.Module):
    """A bidirectional GRU classifier: the last step's output into a 3-class linear head."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(C, H, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(2 * H, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class State(torch.nn.Module):
    """``kind`` (batch first) returning its output and its final states as torch gives them:
    h_n (and an LSTM's c_n) [layers * directions, N, H], the batch axis second."""

    def __init__(self, kind, **kw):
        super().__init__()
        self.rnn = getattr(torch.nn, kind)(C, H, batch_first=True, **kw)

    def forward(self, x):
        y, h = self.rnn(x)
        return (y, *h) if isinstance(h, tuple) else (y, h)


class SeqFirst(torch.nn.Module):
    """``kind`` with torch's default batch_first=False: x [T, N, C] and, with ``init``, the
    initial states h0 (and an LSTM's c0) [layers * directions, N, H] as inputs, the batch
    axis second in every input and output (graphc takes and returns them so:
    Model.input_batch_axes, output_batch_axes)."""

    def __init__(self, kind, init, **kw):
        super().__init__()
        self.init = init
        self.rnn = getattr(torch.nn, kind)(C, H, **kw)

    def forward(self, x, h0=None, c0=None):
        if not self.init:
            y, h = self.rnn(x)
        else:
            y, h = self.rnn(x, h0 if c0 is None else (h0, c0))
        return (y, *h) if isinstance(h, tuple) else (y, h)


class Packed(torch.nn.Module):
    """An LSTM over a padded batch (lengths [N], int64, in decreasing order): torch writes the
    lengths as the node's sequence_lens; Y past a row's length is 0, h its state there."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(C, H, batch_first=True)

    def forward(self, x, lens):
        p = torch.nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True)
        y, (h, _) = self.rnn(p)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
        return y, h.transpose(0, 1)


def modules():
    return {
        "lstm2bi": (Seq("LSTM", num_layers=2, bidirectional=True), ("x",), ("y", "h")),
        "gru2sf": (Seq("GRU", batch_first=False, num_layers=2), ("x",), ("y", "h")),
        "rnnrelu": (Seq("RNN", nonlinearity="relu", bidirectional=True), ("x",), ("y", "h")),
        "lstminit": (Init(), ("x", "h0", "c0"), ("y", "h", "c")),
        "grucls": (Cls(), ("x",), ("logits",)),
        "lstmpack": (Packed(), ("x", "lens"), ("y", "h")),
        "lstmstate": (State("LSTM", num_layers=2, bidirectional=True), ("x",), ("y", "h", "c")),
        "grustate": (State("GRU"), ("x",), ("y", "h")),
        "lstmsf": (
            SeqFirst("LSTM", True, num_layers=2, bidirectional=True),
            ("x", "h0", "c0"),
            ("y", "h", "c"),
        ),
        "grusf": (SeqFirst("GRU", False), ("x",), ("y", "h")),
    }


STATE_OUTPUTS = {"lstmstate": ("h", "c"), "grustate": ("h",)}  # N at axis 1
# sequence first: N at axis 1 of every input and output; lstmsf's TorchScript file also
# leaves T symbolic (axis 0 of x and y), which from_onnx(..., dims={"T": 5}) fixes
SEQ_FIRST = {"lstmsf": 2, "grusf": 2}  # name -> the batch size its example inputs have


def main(names):
    for name, (m, ins, outs) in modules().items():
        if names and name not in names:
            continue
        torch.manual_seed(sum(map(ord, name)))
        for p in m.parameters():  # away from torch's small uniform init: more of tanh's range
            torch.nn.init.uniform_(p, -0.8, 0.8)
        m.eval()
        args = (torch.randn(2, T, C),) + tuple(torch.randn(2, 2, H) for _ in ins[1:])
        if name == "lstmpack":
            args = (args[0], torch.tensor([T, 3]))
        dyn = {k: {int(k in STATE_OUTPUTS.get(name, ())): "N"} for k in (*ins, *outs)}
        shapes = tuple({0: torch.export.Dim.DYNAMIC} for _ in ins)
        if name in SEQ_FIRST:
            args = (torch.randn(T, 2, C),) + tuple(torch.randn(4, 2, H) for _ in ins[1:])
            dyn = {k: {1: "N"} for k in (*ins, *outs)}
            if name == "lstmsf":
                dyn["x"] = dyn["y"] = {0: "T", 1: "N"}
            shapes = tuple({1: torch.export.Dim.DYNAMIC} for _ in ins)
        torch.onnx.export(
            m,
            args,
            os.path.join(HERE, f"rnn_ts_{name}_14.onnx"),
            input_names=list(ins),
            output_names=list(outs),
            dynamic_axes=dyn,
            opset_version=14,
            dynamo=False,
        )
        if name != "lstmpack":  # torch.export cannot trace pack_padded_sequence
            torch.onnx.export(
                m,
                args,
                os.path.join(HERE, f"rnn_dyn_{name}_18.onnx"),
                input_names=list(ins),
                output_names=list(outs),
                dynamic_shapes=shapes,
                opset_version=18,
                dynamo=True,
                external_data=False,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
