"""ResNet ImageNet weights (torchvision, or mmseg's V1c under `backbone.`) into attnseg's dilated ResNet."""
from __future__ import annotations

import torch

from ..models.resnet import ResNet
from .keymap import Rule, apply_key_map


def load_resnet_weights(model: ResNet, sd: dict[str, torch.Tensor]) -> None:
    """Load a torchvision or mmseg-V1c ResNet state dict (layout detected from the keys), strictly."""
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if "conv1.weight" in sd and model.cfg.stem != "plain":
        raise ValueError("torchvision ResNet weights have a 7x7 stem: build the model with stem='plain'")
    if "stem.0.weight" in sd and model.cfg.stem != "deep":
        raise ValueError("mmseg V1c ResNet weights have a deep stem: build the model with stem='deep'")
    rules = [Rule(r"fc\.(weight|bias)", None), Rule(r"(.+)", r"\1")]  # drop the ImageNet classifier
    out = apply_key_map(sd, rules, expected=model.state_dict(), fmt="ResNet checkpoint")
    model.load_state_dict(out, strict=True)
