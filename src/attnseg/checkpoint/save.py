"""Saving: one .safetensors file with the architecture, its config and the label metadata, written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_write
from ..meta import default_meta


def save_model(model: nn.Module, path: str | os.PathLike, class_names: list[str] | None = None,
               palette: list[list[int]] | None = None, mean: list[float] | None = None,
               std: list[float] | None = None, dtype: torch.dtype | None = None, extra: dict | None = None,
               short_side: int | None = None) -> Path:
    """Write `model` as one .safetensors file with its config and label metadata (atomically)."""
    from safetensors.torch import save_file

    if not hasattr(model, "variant"):
        raise ValueError("save_model needs a model made by attnseg.create_model/load_model (it records the variant)")
    meta = dict(getattr(model, "meta", None) or default_meta())
    for k, v in (("class_names", class_names), ("palette", palette), ("mean", mean), ("std", std)):
        if v is not None:
            meta[k] = list(v)
    if short_side is not None:  # the short side it was trained/evaluated at: `attnseg predict` runs images there
        meta["short_side"] = int(short_side)
    num_classes = model.config.get("num_classes")
    if meta.get("class_names") and num_classes and len(meta["class_names"]) != num_classes:
        raise ValueError(f"{len(meta['class_names'])} class names for a model with {num_classes} classes")
    info = {"format": "attnseg", "version": 1, "model": model.variant, "config": model.config, **meta,
            **(extra or {})}
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.contiguous()
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors" if path.is_dir() or not path.suffix else path.with_suffix(".safetensors")
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata={"attnseg": json.dumps(info)}))
    return path
