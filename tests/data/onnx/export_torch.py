"""Regenerates tests/data/onnx/torch_*.onnx: small modules exported by torch.onnx.export (the
TorchScript exporter, dynamo=False) with a dynamic batch dimension, at opsets 13 and 17. Their
shape arithmetic (Shape -> Gather -> Div/Add/Mul -> Unsqueeze/Concat/Slice/Expand/Where ->
Reshape) is what torch writes for code such as ``x.chunk(2, 1)`` and
``x.reshape(x.shape[0], x.shape[1] // 2, 2)``.

Run with a Python that has torch and onnx: ``python tests/data/onnx/export_torch.py [NAME...]``
(the named modules only, e.g. ``espcn``; default: all).
"""

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


class Chunk(torch.nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class Resh(torch.nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], x.shape[1] // 2, 2).sum(-1)


class View(torch.nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1) * 2


class Split(torch.nn.Module):
    def forward(self, x):
        a, b = x.split([3, 5], dim=1)
        return a.sum(1, keepdim=True) + b.mean(1, keepdim=True)


class Expand(torch.nn.Module):
    def forward(self, x):
        return x + torch.ones(1, 8).expand(x.shape[0], 8)


class Narrow(torch.nn.Module):
    def forward(self, x):
        n = x.shape[1]
        return x[:, : n // 2] - x[:, n // 2 :]


class Heads(torch.nn.Module):
    def forward(self, x):
        b, d = x.shape
        return torch.softmax(x.view(b, 2, d // 2), dim=-1).reshape(b, d)


class ClsExpand(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 4))

    def forward(self, x):
        b = x.shape[0]
        t = torch.cat([self.cls.expand(b, -1, -1), x.view(b, 2, 4)], dim=1)
        return torch.log_softmax(t, dim=-1).flatten(1) + t.amax(-1).sum(-1, keepdim=True)


class Halves(torch.nn.Module):
    def forward(self, x):
        h = x.size(1) // 2
        a, b = x.narrow(1, 0, h), x.narrow(1, h, x.size(1) - h)
        return torch.cat([b, a], 1) * torch.pow(a, 2).sum(1, keepdim=True)


class Attn(torch.nn.Module):
    """A pre-norm transformer block written out: heads split by view + transpose, Q @ K^T."""

    def __init__(self, d=8, h=2):
        super().__init__()
        self.h = h
        self.qkv, self.o, self.ln = (
            torch.nn.Linear(d, 3 * d),
            torch.nn.Linear(d, d),
            torch.nn.LayerNorm(d),
        )
        self.ff = torch.nn.Sequential(
            torch.nn.Linear(d, 16), torch.nn.GELU(), torch.nn.Linear(16, d)
        )

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln(x)).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) / (d // self.h) ** 0.5, dim=-1)
        x = x + self.o((a @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.ff(x)


class Espcn(torch.nn.Module):
    """An ESPCN-like super-resolution head without convolutions (made before graphc imported Conv): a
    Linear along the rows, a per-channel scale and shift to 4 channels, Tanh, then
    nn.PixelShuffle(2) (exported as DepthToSpace, mode CRD)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)
        self.scale = torch.nn.Parameter(torch.randn(1, 4, 1, 1))
        self.shift = torch.nn.Parameter(torch.randn(1, 4, 1, 1))
        self.up = torch.nn.PixelShuffle(2)

    def forward(self, x):
        return self.up(torch.tanh(self.lin(x) * self.scale + self.shift))


class LeNet(torch.nn.Module):
    """A LeNet-5-style CNN on 16x16 images: Conv(5x5, pad 2) -> ReLU -> MaxPool(2) ->
    Conv(5x5) -> ReLU -> AvgPool(2) -> Flatten -> Linear."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 6, 5, padding=2)
        self.c2 = torch.nn.Conv2d(6, 16, 5)
        self.fc = torch.nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        h = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        h = torch.nn.functional.avg_pool2d(torch.relu(self.c2(h)), 2)
        return self.fc(torch.flatten(h, 1))


class ResBlock(torch.nn.Module):
    """A ResNet basic block (Conv 3x3 without bias, BatchNorm, ReLU, grouped Conv 3x3, the
    residual add) then a strided 1x1 Conv."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.down = torch.nn.Conv2d(4, 6, 1, stride=2)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.down(torch.relu(x + self.c2(torch.relu(self.bn(self.c1(x))))))


class Seq1d(torch.nn.Module):
    """1-D convolutions over a sequence: a strided Conv1d, a depthwise dilated Conv1d and a
    ConvTranspose1d back up."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv1d(3, 6, 3, stride=2, padding=1)
        self.dw = torch.nn.Conv1d(6, 6, 3, groups=6, dilation=2, padding=2)
        self.up = torch.nn.ConvTranspose1d(6, 2, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up(torch.tanh(self.dw(torch.relu(self.c1(x)))))


class ConvT(torch.nn.Module):
    """ConvTranspose2d with stride 2, padding 1 and output_padding 1 (a decoder's upsampling)."""

    def __init__(self):
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):
        return self.up(x)


MODULES = {
    "chunk": (Chunk, (13, 17)),
    "resh": (Resh, (13, 17)),
    "view": (View, (17,)),
    "expand": (Expand, (13, 17)),
    "heads": (Heads, (13, 17)),
    "narrow": (Narrow, (17,)),
    "split": (Split, (13, 17)),
    "clsexp": (ClsExpand, (13, 17)),
    "halves": (Halves, (17,)),
    "attn": (Attn, (13, 17)),
    "espcn": (Espcn, (13, 17)),
    "lenet": (LeNet, (13, 17)),
    "resblock": (ResBlock, (13, 17)),
    "seq1d": (Seq1d, (13, 17)),
    "convt": (ConvT, (13, 17)),
}
SHAPES = {
    "attn": (2, 4, 8),
    "espcn": (2, 1, 5, 6),
    "lenet": (2, 1, 16, 16),
    "resblock": (2, 4, 7, 7),
    "seq1d": (2, 3, 11),
    "convt": (2, 3, 4, 5),
}  # the others take [batch, 8]

if __name__ == "__main__":
    torch.manual_seed(0)
    only = sys.argv[1:]  # module names to export (default: all)
    for name, (cls, opsets) in MODULES.items():
        if only and name not in only:
            continue
        m = cls().eval()
        x = torch.randn(*SHAPES.get(name, (3, 8)))
        for opset in opsets:
            torch.onnx.export(
                m,
                (x,),
                os.path.join(HERE, f"torch_{name}_{opset}.onnx"),
                opset_version=opset,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                dynamo=False,
            )
