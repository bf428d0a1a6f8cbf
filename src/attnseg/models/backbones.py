"""The encoders a segmentation model builds by name from its config's `backbone` (MiT, dilated ResNet,
EfficientNet-Lite, DPT/ViT): a plain dict of the backbone files' variants. It imports no segmentation model,
so SegFormer, SANet, NLNet and LSeg build their encoders through it without an import cycle."""
from __future__ import annotations

from torch import nn

from . import dpt, efficientnet, mit, resnet
from .factory import build

BACKBONES: dict[str, dict] = {**mit.VARIANTS, **resnet.VARIANTS, **efficientnet.VARIANTS, **dpt.VARIANTS}


def create_backbone(name: str, **overrides) -> nn.Module:
    """`create_model` for encoders: the same variant, config and attributes."""
    return build(BACKBONES, name, **overrides)
