"""Non-local blocks and NLNet.

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018.

    y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j)          (Eq. 1)     g(x_j) = W_g x_j (1x1 conv)
    z_i = W_z y_i + x_i                              (Eq. 6)     W_z: 1x1 conv (+ BN with zero-initialised weight)
Pairwise functions f and normalisers C(x) (Sec. 3.2):
    gaussian            f = exp(x_i^T x_j)                         C = sum_j f     (softmax over j)
    embedded_gaussian   f = exp(theta(x_i)^T phi(x_j) [/ sqrt(C')]) C = sum_j f     (softmax; SDPA here)
    dot_product         f = theta(x_i)^T phi(x_j)                   C = N (number of positions j)
    concatenation       f = ReLU(w_f^T [theta(x_i), phi(x_j)])      C = N
theta, phi, g map C -> C' = C / reduction channels. `sub_sample` (Sec. 3.3, Fig. 2: "adding a max pooling
layer after phi and g") max-pools the *outputs* of the phi and g 1x1 convolutions (2 for 1d, 2x2 for 2d,
1x2x2 in time-space for 3d), as the cited implementation (AlexHex7/Non-local_pytorch) and mmcv do; the
gaussian mode has no phi, so x itself is pooled for the keys. Pooling x before the convolutions is not the
same function (a max does not commute with a 1x1 convolution across channels). For the concatenation mode w_f^T [a; b] = w_a^T a + w_b^T b, so f is
computed as ReLU(s_i + t_j) without materialising the N x M x 2C' concatenation.
A new block is an exact identity (W_z's BN weight, or W_z itself without BN, starts at zero).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_backbone
from .layers import ConvBNAct, check_images, resize

MODES = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {1: (nn.MaxPool1d, 2), 2: (nn.MaxPool2d, 2), 3: (nn.MaxPool3d, (1, 2, 2))}


class _NonLocalNd(nn.Module):
    dim = 2

    def __init__(self, in_channels: int, mode: str = "embedded_gaussian", reduction: int = 2,
                 sub_sample: bool = False, use_bn: bool = True, use_scale: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        conv = _CONV[self.dim]
        self.mode, self.use_scale = mode, use_scale
        self.inter = inter = max(in_channels // reduction, 1)
        self.g = conv(in_channels, inter, 1)
        if mode != "gaussian":
            self.theta = conv(in_channels, inter, 1)
            self.phi = conv(in_channels, inter, 1)
        if mode == "concatenation":
            self.concat_project = nn.Conv2d(2 * inter, 1, 1, bias=False)  # w_f
        pool_cls, k = _POOL[self.dim]
        self.pool = pool_cls(k) if sub_sample else None
        self.record: list | None = None  # tools/explain.py: pairwise weights f(x_i, x_j) / C(x) appended here
        if use_bn:
            self.W_z = nn.Sequential(conv(inter, in_channels, 1), _BN[self.dim](in_channels))
            nn.init.zeros_(self.W_z[1].weight)
            nn.init.zeros_(self.W_z[1].bias)
        else:
            self.W_z = conv(inter, in_channels, 1)
            nn.init.zeros_(self.W_z.weight)
            nn.init.zeros_(self.W_z.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        spatial = x.shape[2:]
        if len(spatial) != self.dim:
            raise ValueError(f"{type(self).__name__} expects a (B, C, {self.dim} spatial dims) input, got {tuple(x.shape)}")
        pool = self.pool if self.pool is not None else (lambda t: t)
        # Sec. 3.3 / Fig. 2: sub-sampling is "a max pooling layer after phi and g" (positions j only)
        g = pool(self.g(x)).flatten(2).transpose(1, 2)  # (B, M, C')
        if self.mode == "gaussian":  # no phi: the references pool x itself for the keys
            q = x.flatten(2).transpose(1, 2)[:, None]  # (B, 1, N, C)
            k = pool(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, M, C)
            y = F.scaled_dot_product_attention(q, k, g[:, None], scale=1.0)[:, 0]  # softmax_j(x_i^T x_j) g_j
        else:
            theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
            phi = pool(self.phi(x)).flatten(2).transpose(1, 2)  # (B, M, C')
            if self.mode == "embedded_gaussian":  # SDPA on 4-d tensors (what the ONNX exporter converts)
                scale = self.inter ** -0.5 if self.use_scale else 1.0
                y = F.scaled_dot_product_attention(theta[:, None], phi[:, None], g[:, None], scale=scale)[:, 0]
            elif self.mode == "dot_product":
                y = (theta @ phi.transpose(1, 2)) / phi.shape[1] @ g  # C(x) = N
            else:  # concatenation
                w = self.concat_project.weight.view(2, self.inter)
                s = theta @ w[0]  # (B, N): w_a^T theta_i
                t = phi @ w[1]  # (B, M): w_b^T phi_j
                f = torch.relu(s[:, :, None] + t[:, None, :])
                y = f / phi.shape[1] @ g
        if self.record is not None:  # the normalised pairwise weights (B, N, M) this forward applied
            keys = pool(x) if self.mode == "gaussian" else pool(self.phi(x))
            if self.mode == "gaussian":
                f = (x.flatten(2).transpose(1, 2) @ keys.flatten(2)).softmax(-1)
            elif self.mode == "embedded_gaussian":
                f = ((theta @ phi.transpose(1, 2)) * (self.inter ** -0.5 if self.use_scale else 1.0)).softmax(-1)
            elif self.mode == "dot_product":
                f = theta @ phi.transpose(1, 2) / phi.shape[1]
            else:
                f = torch.relu(s[:, :, None] + t[:, None, :]) / phi.shape[1]
            self.record.append((f[:, None].detach(), tuple(spatial[-2:]), tuple(keys.shape[-2:])))
        y = y.transpose(1, 2).reshape(B, self.inter, *spatial)
        return self.W_z(y) + x  # z = W_z y + x


class NonLocal1d(_NonLocalNd):
    dim = 1


class NonLocal2d(_NonLocalNd):
    dim = 2


class NonLocal3d(_NonLocalNd):
    dim = 3


def insert_nonlocal(resnet: nn.Module, stage: str = "layer3", n: int = 5, **nl_kwargs) -> nn.Module:
    """Insert `n` NonLocal2d blocks into a ResNet stage (the paper's "5 blocks in res4" is stage="layer3"),
    each after a residual block, evenly spaced and counted from the end of the stage. Works with any
    model whose stage is an nn.Sequential of blocks ending in `conv3` (our ResNet, torchvision-style)."""
    blocks = list(getattr(resnet, stage))
    if not 1 <= n <= len(blocks):
        raise ValueError(f"{stage} has {len(blocks)} blocks; cannot insert {n} non-local blocks")
    step = len(blocks) // n
    after = {len(blocks) - 1 - k * step for k in range(n)}
    cout = blocks[-1].conv3.out_channels
    new = []
    for i, b in enumerate(blocks):
        new.append(b)
        if i in after:
            new.append(NonLocal2d(cout, **nl_kwargs))
    setattr(resnet, stage, nn.Sequential(*new))
    return resnet


class NLHead(nn.Module):
    """FCN-style head with a non-local block (mmseg's NLHead): conv3x3 -> NL -> conv3x3, concat input, fuse."""

    def __init__(self, cin: int, channels: int, num_classes: int, mode: str = "embedded_gaussian",
                 dropout: float = 0.1):
        super().__init__()
        self.conv_in = ConvBNAct(cin, channels, 3)
        self.nl_block = NonLocal2d(channels, mode=mode, reduction=2, use_scale=True)
        self.conv_out = ConvBNAct(channels, channels, 3)
        self.conv_cat = ConvBNAct(cin + channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_out(self.nl_block(self.conv_in(x)))
        return self.cls(self.dropout(self.conv_cat(torch.cat([x, y], 1))))


@dataclass
class NLNetConfig:
    backbone: str = "resnet50-d8"
    backbone_options: dict | None = None
    num_classes: int = 150
    channels: int = 512
    mode: str = "embedded_gaussian"
    aux_channels: int = 256
    aux_weight: float = 0.4
    backbone_nonlocal: int = 0  # NonLocal2d blocks inserted into layer3 (the paper's res4), 0 = none
    dropout: float = 0.1


class NLNet(nn.Module):
    """Dilated ResNet + NLHead on stage 4 (+ auxiliary FCN head on stage 3 while training); logits at 1/8."""

    def __init__(self, cfg: NLNetConfig | None = None):
        super().__init__()
        from .sanet import FCNHead

        cfg = cfg or NLNetConfig()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, **(cfg.backbone_options or {}))
        if cfg.backbone_nonlocal:
            insert_nonlocal(self.backbone, "layer3", cfg.backbone_nonlocal, mode=cfg.mode)
        c3, c4 = self.backbone.out_channels[2:]
        self.decode_head = NLHead(c4, cfg.channels, cfg.num_classes, cfg.mode, cfg.dropout)
        self.auxiliary_head = FCNHead(c3, cfg.aux_channels, cfg.num_classes, cfg.dropout)
        self.num_classes = cfg.num_classes

    def forward(self, images: torch.Tensor):
        check_images(images)
        feats = self.backbone(images)
        out = self.decode_head(feats[-1])
        if not self.training:
            return out
        return {"out": out, "aux": resize(self.auxiliary_head(feats[-2]), out.shape[-2:])}

    def loss(self, out: dict, target: torch.Tensor, pixel_loss) -> tuple[torch.Tensor, dict]:
        main = pixel_loss(out["out"], target)
        aux = pixel_loss(out["aux"], target)
        total = main + self.cfg.aux_weight * aux
        return total, {"loss": total.detach(), "loss_main": main.detach(), "loss_aux": aux.detach()}


def build_nlnet(config: dict) -> NLNet:
    return NLNet(NLNetConfig(**config))


VARIANTS = {
    "nlnet-r50": dict(build=build_nlnet, config_class=NLNetConfig, config=dict(backbone="resnet50-d8"),
                      description="NLNet: dilated ResNet-50 + non-local head (+ aux FCN head)"),
    "nlnet-r101": dict(build=build_nlnet, config_class=NLNetConfig, config=dict(backbone="resnet101-d8"),
                       description="NLNet: dilated ResNet-101 + non-local head (+ aux FCN head)"),
    "nlnet-tiny": dict(build=build_nlnet, config_class=NLNetConfig,
                       config=dict(backbone="resnet50-d8", backbone_options={"depths": [1, 1, 1, 1]}, channels=16,
                                   aux_channels=8),
                       description="small NLNet for tests"),
}
