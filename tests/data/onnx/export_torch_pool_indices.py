"""Regenerates tests/data/onnx/poolidx_ts_*_17.onnx: torch's MaxPool{1,2,3}d(return_indices=True)
exported by torch.onnx.export's TorchScript exporter (opset 17, dynamic batch). torch writes
the indices as ONNX MaxPool's Indices less the Indices of a 1x1 MaxPool of the same input,
sliced to one element per plane (torch's indices count within each plane); graphc's importer
holds MaxPool's Indices by plane (graphc/onnx_import_pool.py). Each module returns the maxima
(after a 1x1 convolution, a trained weight behind them) and the indices as float.

(torch 2.13's TorchScript exporter cannot trace MaxUnpool2d: its output-size check reads a
traced tensor as a bool; tests/test_onnx_pool_indices.py builds MaxUnpool by hand.)
Run with a Python that has torch and onnx: ``python tests/data/onnx/export_torch_pool_indices.py``.
"""

import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


class Pool(torch.nn.Module):
    def __init__(self, d: int, **kw):
        super().__init__()
        conv = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[d - 1]
        pool = (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d)[d - 1]
        self.conv = conv(3, 4, 1)
        self.pool = pool(return_indices=True, **kw)

    def forward(self, x):
        y, i = self.pool(self.conv(x))
        return y, i.float()


CASES = {
    "1d": (Pool(1, kernel_size=3, stride=2, padding=1), (2, 3, 9)),
    "2d": (Pool(2, kernel_size=2, stride=2), (2, 3, 6, 8)),
    "2d_overlap": (Pool(2, kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 3, 7, 6)),
    "3d": (Pool(3, kernel_size=2, stride=2), (2, 3, 4, 4, 6)),
}

if __name__ == "__main__":
    torch.manual_seed(0)
    for name, (m, shape) in CASES.items():
        path = os.path.join(HERE, f"poolidx_ts_{name}_17.onnx")
        torch.onnx.export(
            m.eval(),
            (torch.randn(*shape),),
            path,
            opset_version=17,
            dynamo=False,
            input_names=["x"],
            output_names=["y", "i"],
            dynamic_axes={"x": {0: "N"}, "y": {0: "N"}, "i": {0: "N"}},
        )
        print(path)
