"""Regenerates tests/data/onnx/vision_dyn_*_18.onnx: heads of torchvision-style models as
torch.onnx.export's dynamo exporter (torch 2.13, onnxscript) writes them at opset 18 with a
dynamic batch, where it decomposes indexing:

- ``adapool``: Conv2d then AdaptiveAvgPool2d((3, 5)) of a 10 x 9 map (sizes that do not
  divide it): Transpose, GatherND of two index tables, Transpose back, then sums of the
  window positions;
- ``swinhead``: torchvision's Swin head, LayerNorm over channels-last [N, H, W, C], permute to
  [N, C, H, W], AdaptiveAvgPool2d(1), flatten, Linear: the pooled mean goes through
  ``as_strided`` (Reshape to [-1], Gather of Range(0, N) * C plus offsets).

Run with a Python that has torch, onnx and onnxscript:
``python tests/data/onnx/export_torch_vision.py``.
"""

import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


class AdaPool(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(3, 4, 3)
        self.p = torch.nn.AdaptiveAvgPool2d((3, 5))

    def forward(self, x):
        return self.p(self.c(x))


class SwinHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(8)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):  # [N, H, W, C]
        y = self.norm(x).permute(0, 3, 1, 2)
        return self.head(torch.flatten(self.pool(y), 1))


MODULES = {"adapool": (AdaPool, (2, 3, 12, 11)), "swinhead": (SwinHead, (2, 4, 4, 8))}


def main() -> None:
    for name, (cls, shape) in MODULES.items():
        torch.manual_seed(sum(map(ord, name)))
        m = cls().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.uniform_(-0.8, 0.8)
        torch.onnx.export(
            m,
            (torch.randn(shape),),
            os.path.join(HERE, f"vision_dyn_{name}_18.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
            opset_version=18,
            dynamo=True,
            external_data=False,
        )


if __name__ == "__main__":
    main()
