"""DPT encoder: a ViT read at four depths and reassembled into an image-like pyramid.

Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021 (the DPT of LSeg, isl-org/lang-seg).

    t^l = tokens after block hook_l                       (B, 1 + n, D), l = 1..4
    Read_project(t) = GELU(W [t_i ; t_cls])               the readout token joins every patch token
    Concatenate: (B, n, D) -> (B, D, H/p, W/p)
    Resample_s: 1x1 conv D -> D_l, then to stride s in {4, 8, 16, 32}:
        transposed conv k=s'=p/s (up), identity, or 3x3 conv stride 2 (down)
The fusion (RefineNet blocks) and the head live in the model that uses the pyramid (lseg.py).
ViT-L/16 reads blocks [5, 11, 17, 23] into [256, 512, 1024, 1024] channels; ViT-B/32 reads
[2, 5, 8, 11] into [96, 192, 384, 768]. `reassemble.{l}` holds what the release keeps under
`pretrained.act_postprocess{l+1}` (readout `.0.project.0`, 1x1 conv `.3`, resampling `.4`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import check_images
from .vit import VIT_CONFIGS, VisionTransformer


class ProjectReadout(nn.Module):
    """Read_project: concatenate the class token to every patch token, project back to D, GELU."""

    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        patches = t[:, 1:]
        return self.project(torch.cat([patches, t[:, :1].expand_as(patches)], dim=-1))


class Reassemble(nn.Module):
    def __init__(self, dim: int, out: int, factor: float):
        super().__init__()
        self.readout = ProjectReadout(dim)
        self.proj = nn.Conv2d(dim, out, 1)
        if factor > 1:
            k = int(factor)
            self.resample = nn.ConvTranspose2d(out, out, k, k)
        elif factor == 1:
            self.resample = nn.Identity()
        else:  # 1/2
            self.resample = nn.Conv2d(out, out, 3, 2, 1)

    def forward(self, t: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        x = self.readout(t)  # (B, n, D)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
        return self.resample(self.proj(x))


@dataclass
class DPTConfig:
    vit: str = "vit_large_patch16_384"
    hooks: list[int] = field(default_factory=lambda: [5, 11, 17, 23])
    channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024])


class DPTEncoder(nn.Module):
    """ViT + reassemble: features at strides 4, 8, 16, 32 with `channels` channels."""

    def __init__(self, cfg: DPTConfig):
        super().__init__()
        if cfg.vit not in VIT_CONFIGS:
            raise ValueError(f"unknown ViT {cfg.vit!r}; valid: {', '.join(VIT_CONFIGS)}")
        self.cfg = cfg
        self.vit = VisionTransformer(VIT_CONFIGS[cfg.vit])
        p, d = self.vit.patch_size, self.vit.cfg.embed_dim
        self.hooks = list(cfg.hooks)
        self.out_channels = list(cfg.channels)
        self.reassemble = nn.ModuleList(Reassemble(d, c, p / s) for c, s in zip(cfg.channels, (4, 8, 16, 32)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_images(x)
        gh, gw = x.shape[-2] // self.vit.patch_size, x.shape[-1] // self.vit.patch_size
        return [r(t, gh, gw) for r, t in zip(self.reassemble, self.vit(x, self.hooks))]


def build_dpt(config: dict) -> DPTEncoder:
    return DPTEncoder(DPTConfig(**config))


VARIANTS = {
    "dpt-vitl16": dict(build=build_dpt, config_class=DPTConfig, config={},
                       description="DPT encoder on ViT-L/16 (384), strides 4-32, as in LSeg"),
    "dpt-vitb32": dict(build=build_dpt, config_class=DPTConfig,
                       config=dict(vit="vit_base_patch32_384", hooks=[2, 5, 8, 11], channels=[96, 192, 384, 768]),
                       description="DPT encoder on ViT-B/32 (384), strides 4-32, as in LSeg"),
    "dpt-tiny": dict(build=build_dpt, config_class=DPTConfig,
                     config=dict(vit="vit_tiny_test", hooks=[0, 1, 2, 3], channels=[8, 16, 32, 32]),
                     description="small DPT encoder for tests"),
}
