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


class Cross(torch.nn.Module):
    """Cross-attention with key and value widths of their own (kdim 6, vdim 4: separate
    projections), returning the per-head attention weights [N, H, L, S] too."""

    def __init__(self):
        super().__init__()
        self.mha = torch.nn.MultiheadAttention(E, H, kdim=6, vdim=4, batch_first=True)

    def forward(self, q, kv):
        return self.mha(q, kv[..., :6], kv[..., 6:], average_attn_weights=False)


class Dec(torch.nn.Module):
    """nn.TransformerDecoderLayer: causal self-attention, cross-attention to a memory of 4."""

    def __init__(self):
        super().__init__()
        self.dec = torch.nn.TransformerDecoderLayer(E, H, 16, dropout=0.1, batch_first=True)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(L))

    def forward(self, t, m):
        return self.dec(t, m, tgt_mask=self.mask, tgt_is_causal=True)


DYNAMO_OPSETS = (18, 20)  # the dynamo exporter (onnxscript) writes opset 18 and later
X = ("x", (3, L, E))

# name: (module, inputs (name, example shape), outputs)
MODULES = {
    "mha_bf": (lambda: Mha(True), [X], ["y"]),
    "mha_sf": (lambda: Mha(False), [X], ["y"]),
    "mha_w": (lambda: Mha(False, weights=True), [X], ["y"]),  # explicit bmm/softmax, no SDPA
    "mha_kpm": (lambda: Mha(True, kpm=True), [X, ("pad", (3, L))], ["y"]),
    "mha_causal": (lambda: Mha(False, causal=True), [X], ["y"]),
    "mha_l1": (lambda: torch.nn.MultiheadAttention(16, 4, batch_first=True), [X], ["y"]),
    "enc_post_relu": (lambda: Enc(False, "relu"), [X], ["y"]),
    "enc_pre_gelu": (lambda: Enc(True, "gelu"), [X], ["y"]),
    "cls": (Cls, [X], ["y"]),
    "sdpa": (Sdpa, [X], ["y"]),
    "cross": (Cross, [("q", (3, L, E)), ("kv", (3, 4, 10))], ["y", "w"]),
    "dec": (Dec, [("t", (3, L, E)), ("m", (3, 4, E))], ["y"]),
}


class SeqFirstAttention(torch.nn.Module):
    """nn.MultiheadAttention (batch_first=False) over x [L, N, E] as given: the model's input
    and output hold the batch at axis 1 (graphc: Model.input_batch_axes, output_batch_axes)."""

    def __init__(self):
        super().__init__()
        self.mha = torch.nn.MultiheadAttention(E, H)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class SeqFirstEncoder(torch.nn.Module):
    """nn.TransformerEncoderLayer (batch_first=False) over x [L, N, E] as given."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(E, H, 16, dropout=0.1)

    def forward(self, x):
        return self.layer(x)


# sequence first: x [L, N, E] and y [L, N, E] (the batch at axis 1), one opset per exporter
SEQ_FIRST = {
    "mha_seq": SeqFirstAttention,
    "enc_seq": SeqFirstEncoder,
}


class SelfAttention(torch.nn.Module):
    """nn.MultiheadAttention(x, x, x) with need_weights=False (a sequence of length 1)."""

    def __init__(self, mha):
        super().__init__()
        self.mha = mha

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


if __name__ == "__main__":
    only = sys.argv[1:]
    for name, make in SEQ_FIRST.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        m = make().eval()
        for dynamo, opset in ((False, 17), (True, 18)):
            prefix = "attn_dyn" if dynamo else "attn_ts"
            torch.onnx.export(
                m,
                (torch.randn(L, 3, E),),
                os.path.join(HERE, f"{prefix}_{name}_{opset}.onnx"),
                opset_version=opset,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {1: "batch"}, "y": {1: "batch"}},
                dynamo=dynamo,
                **({"optimize": True, "external_data": False} if dynamo else {}),
            )
    for name, (make, inputs, outputs) in MODULES.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        m = make().eval()
        if name == "mha_l1":
            m, inputs = SelfAttention(m).eval(), [("x", (3, 1, 16))]
        args = []
        for i, shape in inputs:
            if i == "pad":  # key_padding_mask: True = a padded key
                a = torch.zeros(shape, dtype=torch.bool)
                a[:, -1] = True
            else:
                a = torch.randn(*shape)
            args.append(a)
        names = [i for i, _ in inputs]
        dyn = {n: {0: "batch"} for n in names + outputs}
        for dynamo, opsets in ((False, (14, 17)), (True, DYNAMO_OPSETS)):
            for opset in opsets:
                prefix = "attn_dyn" if dynamo else "attn_ts"
                torch.onnx.export(
                    m,
                    tuple(args),
                    os.path.join(HERE, f"{prefix}_{name}_{opset}.onnx"),
                    opset_version=opset,
                    input_names=names,
                    output_names=outputs,
                    dynamic_axes=dyn,
                    dynamo=dynamo,
                    **({"optimize": True, "external_data": False} if dynamo else {}),
                )
