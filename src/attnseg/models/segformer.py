"""SegFormer: Mix Transformer encoder + lightweight All-MLP decoder.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021, Section 3.2. The All-MLP decoder (Eq. 4):

    F_i_hat = Linear(C_i, C)(F_i)                       for each stage i      (`linear_c{i}.proj`)
    F_i_hat = Upsample(H/4 x W/4)(F_i_hat)
    F       = Linear(4C, C)(Concat(F_4_hat, F_3_hat, F_2_hat, F_1_hat))       (`linear_fuse` conv+BN+ReLU)
    M       = Linear(C, N_cls)(F)                                             (`linear_pred`)

Logits come out at 1/4 of the input. C = 256 for B0/B1, 768 for B2..B5.

Fast path (same numbers within float rounding): the fuse is a per-pixel
linear map and bilinear upsampling is a per-channel convex combination, so they commute:
    W_fuse . Concat(Up(A_i f_i + b_i)) = sum_i Up((W_i A_i) f_i) + sum_i W_i b_i
and the eval-mode BatchNorm folds into the same product. Each stage is therefore projected
to C channels at its own resolution and the C-channel map upsampled, or (stages with at most C/2
channels) upsampled first and projected at 1/4 resolution, whichever moves fewer numbers; the
maps are summed: no 4C-channel concat at 1/4 resolution.
Training uses the same reordering without folding the BatchNorm (it normalises the identical
pre-activation with batch statistics), so gradients are those of the literal decoder.
Official weights load unchanged; `decode_head.fused = False` runs the literal path.

`AllMLPSeg` (`allmlp-effnet-lite0`) puts the same decoder on a convolutional backbone's four stages:
the plain-head baseline of SANet's ablation (see sanet.py and docs/zoo.md).

`head_style="mmseg"` builds the head as mmsegmentation 1.x trains it (each branch a
ConvModule conv+BN+ReLU instead of a plain linear), so its checkpoints load exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_backbone
from .layers import ConvBNAct, check_images, exporting, map_to_tokens, resize, resize_sum, tokens_to_map
from .mit import MIT_CONFIGS, MiTConfig, MixVisionTransformer


@dataclass
class SegFormerConfig(MiTConfig):
    num_classes: int = 150
    decoder_dim: int = 256
    dropout: float = 0.1
    head_style: str = "official"  # "official" (NVlabs/transformers) or "mmseg" (mmsegmentation 1.x)


class MLP(nn.Module):
    """Per-stage linear embedding (`linear_c{i}.proj`) applied to (B, N, C_i) tokens."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SegFormerHead(nn.Module):
    def __init__(self, in_channels: list[int], dim: int, num_classes: int, dropout: float, style: str = "official"):
        super().__init__()
        if style not in ("official", "mmseg"):
            raise ValueError(f"head_style must be 'official' or 'mmseg', got {style!r}")
        self.style = style
        self.num_stages = len(in_channels)
        for i, c in enumerate(in_channels):
            branch = MLP(c, dim) if style == "official" else ConvBNAct(c, dim, 1)
            setattr(self, f"linear_c{i + 1}", branch)
        self.linear_fuse = ConvBNAct(dim * self.num_stages, dim, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(dim, num_classes, 1)
        self.fused = True  # use the equivalent fast path in eval mode (see module docstring)

    def forward(self, feats: list[tuple[torch.Tensor, int, int]]) -> torch.Tensor:
        if self.style == "official" and self.fused:
            return self._forward_fused(feats)
        size = (feats[0][1], feats[0][2])
        outs = []
        for i, (t, h, w) in enumerate(feats):
            branch = getattr(self, f"linear_c{i + 1}")
            if self.style == "official":
                y = tokens_to_map(branch(t), h, w)  # (B, C, h, w)
            else:
                y = branch(tokens_to_map(t, h, w))
            outs.append(resize(y, size))
        # the official/transformers head concatenates [c4, c3, c2, c1]; mmseg 1.x [c1, ..., c4]
        x = torch.cat(outs[::-1] if self.style == "official" else outs, dim=1)
        x = self.dropout(self.linear_fuse(x))
        return self.linear_pred(x)

    def fused_params(self, fold_bn: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-stage (C, C_i) matrices W_i A_i and one bias sum_i W_i b_i; with `fold_bn` the eval-mode
        BatchNorm is folded in too. Differentiable: training uses them with a batch-statistics BN after."""
        bn = self.linear_fuse.bn
        if fold_bn:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
            shift = bn.bias - bn.running_mean * scale
        else:
            scale = torch.ones_like(bn.weight)
            shift = torch.zeros_like(bn.bias)
        w_fuse = self.linear_fuse.conv.weight.flatten(1)  # (C, 4C), blocks ordered [c4, c3, c2, c1]
        dim = w_fuse.shape[0]
        mats, bias = [], shift
        for i in range(self.num_stages):
            blk = w_fuse[:, (self.num_stages - 1 - i) * dim:(self.num_stages - i) * dim] * scale[:, None]
            proj = getattr(self, f"linear_c{i + 1}").proj
            mats.append(blk @ proj.weight)  # (C, C_i)
            bias = bias + blk @ proj.bias
        return mats, bias

    def _forward_fused(self, feats: list[tuple[torch.Tensor, int, int]]) -> torch.Tensor:
        train_bn = self.training or not self.linear_fuse.bn.track_running_stats
        mats, bias = self.fused_params(fold_bn=not train_bn)
        _, h1, w1 = feats[0]
        x, late = None, []
        for i, ((t, h, w), m) in enumerate(zip(feats, mats)):
            # Up and the per-pixel map commute, so each stage takes the cheaper order: a stage with few
            # channels (C_i <= C/2, e.g. B0's 32/64) is upsampled first and projected at H/4, one with many is
            # projected at its own resolution and the C-channel map upsampled (fewer channels to resample).
            if i == 0 or 2 * t.shape[-1] <= m.shape[0]:
                y = resize(tokens_to_map(t, h, w), (h1, w1))
                y = F.conv2d(y, m[:, :, None, None], bias if x is None else None)
            elif exporting():  # upsampled and summed by one matrix product below (faster in onnxruntime)
                late.append(tokens_to_map(t @ m.t(), h, w))
                continue
            else:
                y = resize(tokens_to_map(t @ m.t(), h, w), (h1, w1))
            x = y if x is None else x + y
        if late:
            x = x + resize_sum(late, (h1, w1))
        if train_bn:  # BatchNorm on exactly the tensor linear_fuse.conv would have produced
            x = self.linear_fuse.bn(x)
        return self.linear_pred(self.dropout(torch.relu(x)))


class SegFormer(nn.Module):
    """SegFormer = MiT encoder (`backbone`) + All-MLP decoder (`decode_head`). Logits at 1/4 resolution."""

    output_stride = 4

    def __init__(self, cfg: SegFormerConfig | None = None):
        super().__init__()
        cfg = cfg or SegFormerConfig()
        self.cfg = cfg
        enc = MiTConfig(**{f.name: getattr(cfg, f.name) for f in fields(MiTConfig)})
        self.backbone = MixVisionTransformer(enc)
        self.decode_head = SegFormerHead(self.backbone.out_channels, cfg.decoder_dim, cfg.num_classes, cfg.dropout,
                                         cfg.head_style)
        self.num_classes = cfg.num_classes

    def set_isr(self, encoder: list[int] | None = None, decoder: list[int] | None = None) -> None:
        """Inference Spatial Reduction on the MiT encoder (the All-MLP decoder has no attention)."""
        if decoder is not None and any(int(f) != 1 for f in decoder):
            raise ValueError("SegFormer's All-MLP decoder has no spatial-reduction attention: "
                             f"ISR decoder factors must be omitted or all 1, got {decoder}")
        self.backbone.set_isr(encoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.cfg.in_chans)
        return self.decode_head(self.backbone.forward_tokens(images))


def build_segformer(config: dict) -> SegFormer:
    return SegFormer(SegFormerConfig(**config))


@dataclass
class AllMLPConfig:
    backbone: str = "efficientnet-lite0"
    backbone_options: dict | None = None
    num_classes: int = 150
    decoder_dim: int = 256
    dropout: float = 0.1


class AllMLPSeg(nn.Module):
    """SegFormer's All-MLP decoder on a CNN backbone that returns four stage maps (logits at stride 4)."""

    def __init__(self, cfg: AllMLPConfig | None = None):
        super().__init__()
        cfg = cfg or AllMLPConfig()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, **(cfg.backbone_options or {}))
        self.decode_head = SegFormerHead(list(self.backbone.out_channels), cfg.decoder_dim, cfg.num_classes,
                                         cfg.dropout)
        self.num_classes = cfg.num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        feats = [(map_to_tokens(f), f.shape[2], f.shape[3]) for f in self.backbone(images)]
        return self.decode_head(feats)


def build_allmlp(config: dict) -> AllMLPSeg:
    return AllMLPSeg(AllMLPConfig(**config))


_DECODER_DIM = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768, "tiny": 16}
VARIANTS = {
    f"segformer-{k}": dict(build=build_segformer, config_class=SegFormerConfig,
                           config=dict(v, decoder_dim=_DECODER_DIM[k]),
                           description=f"SegFormer-{k.upper()} (MiT-{k.upper()} + All-MLP decoder)")
    for k, v in MIT_CONFIGS.items()
}
VARIANTS["allmlp-effnet-lite0"] = dict(
    build=build_allmlp, config_class=AllMLPConfig,
    config=dict(backbone="efficientnet-lite0"),
    description="All-MLP decoder (C=256) on EfficientNet-Lite0 (packaged ImageNet weights, output stride 32): "
                "SANet's plain-head baseline")
for _v in ("lite1", "lite2"):
    VARIANTS[f"allmlp-effnet-{_v}"] = dict(
        build=build_allmlp, config_class=AllMLPConfig, config=dict(backbone=f"efficientnet-{_v}"),
        description=f"All-MLP decoder (C=256) on EfficientNet-{_v.capitalize()} (packaged ImageNet weights, "
                    "the lite12 extra)")
VARIANTS["allmlp-tiny"] = dict(
    build=build_allmlp, config_class=AllMLPConfig,
    config=dict(backbone="efficientnet-lite0", backbone_options={"pretrained": False}, decoder_dim=16),
    description="small All-MLP + EfficientNet-Lite0 for tests (random weights)")
