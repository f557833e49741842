"""Regenerates tests/data/onnx/pack_unsorted_ts_*_14.onnx: torch's
pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) before an LSTM and a
bidirectional GRU, pad_packed_sequence after, exported by torch.onnx.export's TorchScript
exporter (opset 14, dynamic batch). torch sorts the batch by length (TopK of the lengths, a
Gather of the rows) and sorts the results back (Gather by the inverse permutation, built by
ScatterElements of a Range): graphc's import drops the pair (graphc/onnx_import_rows.py).
Each module takes x [N, T, C] and lengths [N] and returns the padded outputs [N, T, D * H] and
the last layer's final state [N, H].
Run with a Python that has torch and onnx: ``python tests/data/onnx/export_torch_pack_unsorted.py``.
"""

import os

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HERE = os.path.dirname(os.path.abspath(__file__))
T, C, H = 5, 3, 4


class Packed(torch.nn.Module):
    def __init__(self, rnn: torch.nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths):
        p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        y, h = self.rnn(p)
        h = h[0] if isinstance(h, tuple) else h
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return y, h[-1]


CASES = {
    "lstm": Packed(torch.nn.LSTM(C, H, batch_first=True)),
    "bigru": Packed(torch.nn.GRU(C, H, batch_first=True, bidirectional=True)),
}

if __name__ == "__main__":
    torch.manual_seed(0)
    x, lengths = torch.randn(3, T, C), torch.tensor([2, 5, 3])
    for name, m in CASES.items():
        path = os.path.join(HERE, f"pack_unsorted_ts_{name}_14.onnx")
        torch.onnx.export(
            m.eval(),
            (x, lengths),
            path,
            opset_version=14,
            dynamo=False,
            input_names=["x", "lengths"],
            output_names=["y", "h"],
            dynamic_axes={"x": {0: "N"}, "lengths": {0: "N"}, "y": {0: "N"}, "h": {0: "N"}},
        )
        print(path)
