"""Regenerates tests/data/onnx/attn_*.onnx: torch's attention modules (nn.MultiheadAttention,
nn.TransformerEncoderLayer, a 2-layer nn.TransformerEncoder classifier,
F.scaled_dot_product_attention) in eval mode with a dynamic batch, exported by
torch.onnx.export's TorchScript exporter (attn_ts_*, opsets 14 and 17: torch writes
scaled_dot_product_attention from opset 14) and its dynamo exporter (attn_dyn_*, opsets 18 and
20). They move the batch axis N (Transpose [N, L, E] -> [L, N, E]) and merge it with the heads
(Reshape [L, N*H, hd]) around batched MatMuls: graphc's importer follows N through a layout
view (graphc/onnx_layout.py).

Run with a Python that has torch, onnx and onnxscript (the dynamo exporter's):
``python tests/data/onnx/export_torch_attn.py [NAME...]``.
"""

import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
L, E, H = 5, 8, 2  # sequence length, model width, heads


class Mha(torch.nn.Module):
    """Self-attention; ``kpm``: a key_padding_mask input (bool [N, L], True = padding);
    ``causal``: a constant attn_mask (float [L, L], -inf above the diagonal)."""

    def __init__(self, batch_first, kpm=False, causal=False, weights=False):
        super().__init__()
        self.bf, self.kpm, self.causal, self.weights = batch_first, kpm, causal, weights
        self.mha = torch.nn.MultiheadAttention(E, H, batch_first=batch_first)

    def forward(self, x, pad=None):
        x = x if self.bf else x.transpose(0, 1)  # the model takes [N, L, E] either way
        mask = torch.triu(torch.full((L, L), float("-inf")), 1) if self.causal else None
        y, _ = self.mha(x, x, x, key_padding_mask=pad, attn_mask=mask, need_weights=self.weights)
        return y if self.bf else y.transpose(0, 1)  # graphc's outputs lead with N


class Enc(torch.nn.Module):
    def __init__(self, norm_first, act):
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(
            E,
            H,
            dim_feedforward=16,
            dropout=0.1,
            activation=act,
            batch_first=True,
            norm_first=norm_first,
        )

    def forward(self, x):
        return self.layer(x)


class Cls(torch.nn.Module):
    """A 2-layer TransformerEncoder (sequence-first, as torch's default) mean-pooled into a
    3-class linear head."""

    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=16, dropout=0.1)
        self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(E, 3)

    def forward(self, x):
        return self.head(self.enc(x.transpose(0, 1)).mean(0))


class Sdpa(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(E, 3 * E)

    def forward(self, x):
        n = x.shape[0]
        q, k, v = (z.reshape(n, L, H, E // H).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(n, L, E)


DYNAMO_OPSETS = (18, 20)  # the dynamo exporter (onnxscript) writes opset 18 and later

MODULES = {
    "mha_bf": lambda: Mha(True),
    "mha_sf": lambda: Mha(False),
    "mha_w": lambda: Mha(False, weights=True),  # the explicit bmm/softmax path, not SDPA
    "mha_kpm": lambda: Mha(True, kpm=True),
    "mha_causal": lambda: Mha(False, causal=True),
    "enc_post_relu": lambda: Enc(False, "relu"),
    "enc_pre_gelu": lambda: Enc(True, "gelu"),
    "cls": Cls,
    "sdpa": Sdpa,
}

if __name__ == "__main__":
    only = sys.argv[1:]
    for name, make in MODULES.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        m = make().eval()
        x = torch.randn(3, L, E)
        args, names, dyn = (x,), ["x"], {"x": {0: "batch"}, "y": {0: "batch"}}
        if name == "mha_kpm":
            pad = torch.zeros(3, L, dtype=torch.bool)
            pad[:, -1] = True
            args, names = (x, pad), ["x", "pad"]
            dyn["pad"] = {0: "batch"}
        for dynamo, opsets in ((False, (14, 17)), (True, DYNAMO_OPSETS)):
            for opset in opsets:
                prefix = "attn_dyn" if dynamo else "attn_ts"
                torch.onnx.export(
                    m,
                    args,
                    os.path.join(HERE, f"{prefix}_{name}_{opset}.onnx"),
                    opset_version=opset,
                    input_names=names,
                    output_names=["y"],
                    dynamic_axes=dyn,
                    dynamo=dynamo,
                    **({"optimize": True, "external_data": False} if dynamo else {}),
                )
