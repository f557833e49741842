"""Regenerates tests/data/onnx/scatter_pos_ts_*_17.onnx: torch's index_put on a batched tensor
at positions read from an int64 input (a cache written at ``pos``), exported by
torch.onnx.export's TorchScript exporter (opset 17, dynamic batch). torch builds ScatterND's
index tuples from Range(0, N) (each sample's row), Ranges of other axes and the input
positions; graphc's import scatters in each sample at the computed positions
(graphc/onnx_import_onnxops.py: _computed_columns, _scatter_nd_rows_computed).
Run with a Python that has torch and onnx: ``python tests/data/onnx/export_torch_scatter_pos.py``.
"""

import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


class Cache(torch.nn.Module):
    """cache [N, H, T, D] written at time step pos ([1]) with k [N, H, 1, D]."""

    def forward(self, cache, k, pos):
        c = cache.clone()
        c[:, :, pos] = k
        return c * 1.0


class Rows(torch.nn.Module):
    """x [N, T, C]: in each row n the step pos[n] ([N]) takes v [N, C]."""

    def forward(self, x, v, pos):
        y = x.clone()
        y[torch.arange(x.shape[0]), pos] = v
        return y + 0.0


class Two(torch.nn.Module):
    """x [N, T, C]: in each row n the steps pos[n] ([N, 2], equal ones too) take v [N, 2, C]."""

    def forward(self, x, v, pos):
        y = x.clone()
        y[torch.arange(x.shape[0]).unsqueeze(1), pos] = v
        return y + 0.0


class Acc(Two):
    """As Two, the updates added (index_put_ with accumulate=True: ScatterND reduction add)."""

    def forward(self, x, v, pos):
        y = x.clone()
        y.index_put_((torch.arange(x.shape[0]).unsqueeze(1), pos), v, accumulate=True)
        return y + 0.0


TWO = (torch.randn(2, 5, 3), torch.randn(2, 2, 3), torch.tensor([[1, 4], [0, 0]]))
CASES = {
    "cache": (Cache(), (torch.randn(2, 2, 6, 4), torch.randn(2, 2, 1, 4), torch.tensor([3])), {}),
    # a realistic KV cache: 8 heads x 128 steps x 64, one step written
    "kv": (Cache(), (torch.randn(2, 8, 128, 64), torch.randn(2, 8, 1, 64), torch.tensor([3])), {}),
    "rows": (
        Rows(),
        (torch.randn(2, 5, 3), torch.randn(2, 3), torch.tensor([1, 4])),
        {"pos": {0: "N"}, "v": {0: "N"}},
    ),
    "two": (Two(), TWO, {"pos": {0: "N"}, "v": {0: "N"}}),
    "acc": (Acc(), TWO, {"pos": {0: "N"}, "v": {0: "N"}}),
}

if __name__ == "__main__":
    for name, (m, args, dyn) in CASES.items():
        path = os.path.join(HERE, f"scatter_pos_ts_{name}_17.onnx")
        names = ["cache", "k", "pos"] if name in ("cache", "kv") else ["x", "v", "pos"]
        axes = {names[0]: {0: "N"}, "y": {0: "N"}, **dyn}
        if name in ("cache", "kv"):
            axes["k"] = {0: "N"}
        torch.onnx.export(
            m,
            args,
            path,
            opset_version=17,
            dynamo=False,
            input_names=names,
            output_names=["y"],
            dynamic_axes=axes,
        )
        print(path)
