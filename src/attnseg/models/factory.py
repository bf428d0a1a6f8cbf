"""Building a registered variant: its config dataclass filled from the defaults and overrides, then its
`build`. Shared by the model registry (`attnseg.models`) and the backbone registry (`attnseg.models.backbones`),
each passing its own dict of variants."""
from __future__ import annotations

import dataclasses
import difflib

from torch import nn


def unknown_model_error(name: str, registry: dict) -> ValueError:
    close = difflib.get_close_matches(name, list(registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(sorted(registry))}")


def config_for(registry: dict, name: str, num_classes: int | None = None, **overrides) -> dict:
    """The full config dict `build(registry, name, num_classes, **overrides)` would build from."""
    if name not in registry:
        raise unknown_model_error(name, registry)
    entry = registry[name]
    valid = {f.name for f in dataclasses.fields(entry["config_class"])}
    if num_classes is not None:
        if "num_classes" not in valid:
            raise ValueError(f"{name} is a backbone without a classifier; do not pass num_classes")
        overrides["num_classes"] = int(num_classes)
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ValueError(f"unknown option(s) {bad} for model {name!r}; valid options: {', '.join(sorted(valid))}")
    return dataclasses.asdict(entry["config_class"](**{**entry["config"], **overrides}))


def build(registry: dict, name: str, num_classes: int | None = None, **overrides) -> nn.Module:
    cfg = config_for(registry, name, num_classes, **overrides)
    model = registry[name]["build"](cfg)
    model.variant = name
    model.config = cfg
    return model
