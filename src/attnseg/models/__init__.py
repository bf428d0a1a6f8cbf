"""The model registry: a plain dict of variants merged from each model file's VARIANTS.

Each entry: {"build": fn(config_dict) -> nn.Module, "config_class": dataclass, "config": defaults,
"description": str}. Nothing registers itself on import; the list below is the whole registry.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from . import dpt, edaformer, efficientnet, factory, lseg, mit, nonlocal_block, resnet, sanet, segformer

MODELS: dict[str, dict] = {}
for _module in (mit, segformer, edaformer, resnet, efficientnet, sanet, nonlocal_block, dpt, lseg):
    for _name, _entry in _module.VARIANTS.items():
        if _name in MODELS:
            raise RuntimeError(f"model name {_name!r} registered twice")
        MODELS[_name] = _entry


def list_models() -> list[str]:
    """Registered model names (architectures; see attnseg.list_pretrained() for trained weights)."""
    return sorted(MODELS)


def unknown_model_error(name: str) -> ValueError:
    return factory.unknown_model_error(name, MODELS)


def has_classifier(name: str) -> bool:
    """Whether variant `name` takes num_classes (a fixed classifier); False for encoders and LSeg."""
    if name not in MODELS:
        raise unknown_model_error(name)
    return "num_classes" in {f.name for f in dataclasses.fields(MODELS[name]["config_class"])}


def model_config(name: str, num_classes: int | None = None, **overrides) -> dict:
    """The full config dict `create_model(name, num_classes, **overrides)` would build from."""
    return factory.config_for(MODELS, name, num_classes, **overrides)


def create_model(name: str, num_classes: int | None = None, **overrides) -> nn.Module:
    """Build a registered model with random weights: `create_model("segformer-b0", num_classes=19)`.

    Keyword overrides set fields of the model's config dataclass (e.g. `drop_path_rate=0.0`).
    """
    return factory.build(MODELS, name, num_classes, **overrides)
