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


from ..param_table import PARAM_COUNTS_FILE, params_at, read_table  # noqa: E402


def count_parameters(name: str, num_classes: int = 150) -> int:
    """Parameters of `create_model(name, num_classes)` (built on the meta device: no memory, no weights read)."""
    import warnings

    import torch

    kw = {"num_classes": num_classes} if has_classifier(name) else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                m = create_model(name, **kw)
        except RuntimeError:  # a text encoder that will not load on the meta device (LSeg asks it its width)
            m = create_model(name, **kw)
    return sum(p.numel() for p in m.parameters())


def recorded_parameters(name: str, num_classes: int = 150) -> int | None:
    """The parameter count from `param_counts.json`, so `attnseg models` lists every variant without building
    one; None if not recorded."""
    entry = read_table().get(name)
    return None if entry is None else params_at(entry["params"], num_classes)


def write_parameter_table() -> None:
    """Regenerate param_counts.json (run after changing a variant: `python -c "import attnseg.models as m;
    m.write_parameter_table()"`); tests keep the table equal to the models."""
    import json

    table = {n: {"params": [count_parameters(n, k) for k in (150, 151, 152)],
                 "description": MODELS[n]["description"]} for n in sorted(MODELS)}
    PARAM_COUNTS_FILE.write_text(json.dumps(table, indent=1) + "\n")
