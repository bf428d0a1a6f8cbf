"""Dilated ResNet-50/101 for segmentation (SANet, NLNet), no torchvision needed.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, in the two forms users
have weights for:
  * "V1c" (mmsegmentation's resnet50_v1c): deep stem of three 3x3 convs (`stem.0`..`stem.7`);
  * torchvision's: one 7x7 stem conv (`conv1`, `bn1`).
Both: bottleneck blocks (`layerN.M.conv1/bn1/conv2/bn2/conv3/bn3`, `downsample.0/1`), stride on the
3x3 conv. Dilation replaces the strides of layer3/layer4 (output stride 8: dilations 2 and 4;
output stride 16: layer4 dilation 2), as DeepLab and mmseg do. `forward` returns the four stage outputs
(256, 512, 1024, 2048 channels).

Checkpoints: a torchvision state dict (`conv1.weight`, `fc.*`) or an mmseg V1c one (`stem.0.weight`,
optionally under `backbone.`) load through `attnseg.checkpoint.resnet.load_resnet_weights`, which detects the layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import check_images


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


@dataclass
class ResNetConfig:
    depths: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    stem: str = "deep"  # "deep" (V1c, mmseg) or "plain" (torchvision)
    output_stride: int = 8  # 8, 16 or 32
    stem_width: int = 64


class ResNet(nn.Module):
    out_channels = [256, 512, 1024, 2048]

    def __init__(self, cfg: ResNetConfig | None = None):
        super().__init__()
        cfg = cfg or ResNetConfig()
        self.cfg = cfg
        if cfg.stem == "deep":
            w = cfg.stem_width // 2
            self.stem = nn.Sequential(
                nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, cfg.stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(cfg.stem_width),
                nn.ReLU(inplace=True))
        elif cfg.stem == "plain":
            self.conv1 = nn.Conv2d(3, cfg.stem_width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(cfg.stem_width)
        else:
            raise ValueError(f"stem must be 'deep' or 'plain', got {cfg.stem!r}")
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        strides, dilations = {8: ([1, 2, 1, 1], [1, 1, 2, 4]), 16: ([1, 2, 2, 1], [1, 1, 1, 2]),
                              32: ([1, 2, 2, 2], [1, 1, 1, 1])}[cfg.output_stride]
        cin = cfg.stem_width
        for i, (n, s, d) in enumerate(zip(cfg.depths, strides, dilations)):
            width = 64 * 2 ** i
            down = None
            if s != 1 or cin != width * 4:
                down = nn.Sequential(nn.Conv2d(cin, width * 4, 1, s, bias=False), nn.BatchNorm2d(width * 4))
            # the first block of a dilated stage uses half the dilation (mmseg's "multi_grid"-free default)
            blocks = [Bottleneck(cin, width, s, max(d // 2, 1) if d > 1 else 1, down)]
            cin = width * 4
            blocks += [Bottleneck(cin, width, 1, d) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block: a new block starts as identity
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        check_images(images)
        x = self.stem(images) if self.cfg.stem == "deep" else torch.relu(self.bn1(self.conv1(images)))
        x = self.maxpool(x)
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats


def build_resnet(config: dict) -> ResNet:
    return ResNet(ResNetConfig(**config))


VARIANTS = {
    "resnet50-d8": dict(build=build_resnet, config_class=ResNetConfig, config=dict(depths=[3, 4, 6, 3]),
                        description="dilated ResNet-50 V1c encoder, output stride 8"),
    "resnet101-d8": dict(build=build_resnet, config_class=ResNetConfig, config=dict(depths=[3, 4, 23, 3]),
                         description="dilated ResNet-101 V1c encoder, output stride 8"),
}
