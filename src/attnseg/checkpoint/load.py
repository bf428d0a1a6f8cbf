"""`load_model(source)`: resolve -> read -> identify -> name the architecture -> convert -> build -> check.

`source` may be
  * a shipped pretrained name (`attnseg.list_pretrained()`), loaded offline from the package;
  * a local file (`.safetensors`, `.pth`, `.pt`, `.bin`, `.ckpt`) or directory;
  * a Hugging Face hub id (`nvidia/segformer-b0-finetuned-ade-512-512`), downloaded when online.
Each format is one module in `checkpoint/formats/` (attnseg's own files, transformers, mmsegmentation 1.x
SegFormer and NLNet, official NVlabs/EDAFormer releases, LSeg releases).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..meta import default_meta
from ..models import MODELS, create_model, model_config, unknown_model_error
from ..families import family, same_family
from . import formats
from .files import ModelLoadError, read_state_dict
from .keymap import ConversionError, check_against
from .sources import resolve_source


@dataclass
class Checkpoint:
    """What reading a checkpoint gives, before conversion: tensors, their format and what the file says."""
    path: Path
    sd: dict
    fmt: str  # a format module's NAME: attnseg | transformers | official | mmseg | mmseg_nlnet | lseg
    variant: str | None = None  # the architecture the file records (None: the caller must name it)
    config: dict = field(default_factory=dict)  # config overrides the file records or its format implies
    meta: dict = field(default_factory=default_meta)
    hf_config: dict | None = None
    hparams: dict = field(default_factory=dict)  # a Lightning checkpoint's hyper_parameters (LSeg)


def load_model(source: str | os.PathLike, model: str | None = None, num_classes: int | None = None,
               device: str | torch.device = "cpu", dtype: torch.dtype | None = None, **overrides) -> nn.Module:
    """Load trained weights into the right architecture; returns the model in eval mode.

    `model=` names the architecture where the checkpoint does not say it (official `.pth` files);
    where it does (attnseg files, transformers config.json) it is optional and checked.
    `num_classes` is inferred from the classifier weight when not given; widths the checkpoint determines
    (decoder widths, LSeg features, NLNet head channels) are read from its tensors. `dtype` builds the
    model in that dtype before loading (float64 keeps a float64 checkpoint exact).
    """
    if model is not None and model not in MODELS:
        raise unknown_model_error(model)
    ck = read_checkpoint(resolve_source(str(source)))
    variant = _architecture(ck, model)
    _convert(ck, variant, overrides)
    if num_classes is not None and ck.config.get("num_classes", num_classes) != num_classes:
        raise ModelLoadError(f"{ck.path} has {ck.config['num_classes']} classes, but num_classes={num_classes} "
                             "was given; fine-tune from it with --set model.num_classes instead")
    net = _build(ck, variant, overrides, dtype)
    meta = ck.meta
    if meta.get("class_names") and "num_classes" in net.config and len(meta["class_names"]) != net.config["num_classes"]:
        meta["class_names"] = None
    net.meta = meta
    net.source = str(source)
    if hasattr(net, "default_labels") and meta.get("class_names"):
        net.default_labels = list(meta["class_names"])  # LSeg: the label set it was trained with
    return net.to(device).eval()


def read_checkpoint(path: Path) -> Checkpoint:
    """Read the tensors and identify the format (a folder: transformers' config.json, or its first checkpoint)."""
    if path.is_dir():
        for fmt in formats.BY_NAME.values():
            fields = fmt.read_folder(path) if hasattr(fmt, "read_folder") else None
            if fields is not None:
                return Checkpoint(path, fmt=fmt.NAME, **fields)
        cands = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth")) + sorted(path.glob("*.pt"))
        if not cands:
            raise ModelLoadError(f"directory {path} holds no checkpoint (*.safetensors, *.pth, config.json)")
        path = cands[0]
    hparams: dict = {}
    sd, info = read_state_dict(path, hparams)
    if info is not None:
        return Checkpoint(path, sd, formats.OWN.NAME, hparams=hparams, **formats.OWN.from_metadata(info))
    fmt = formats.detect(sd)
    if fmt is None:
        raise ModelLoadError(f"unrecognised checkpoint layout (first keys: {', '.join(list(sd)[:5])}). "
                             f"Supported: {formats.DESCRIPTIONS}.")
    ck = Checkpoint(path, sd, fmt.NAME, hparams=hparams)
    if hasattr(fmt, "describe"):  # what the format records beside its tensors (LSeg: variant, normalisation)
        try:
            fmt.describe(ck)
        except ConversionError as e:
            raise ModelLoadError(str(e)) from None
    return ck


def _architecture(ck: Checkpoint, model: str | None) -> str:
    """The variant to build: the file's, checked against `model=`, or `model=` where the file records none."""
    if ck.variant is not None and model is not None and not same_family(model, ck.variant):
        raise ModelLoadError(f"{ck.path} holds a {ck.variant} model, but model={model!r} was given")
    records = getattr(formats.BY_NAME[ck.fmt], "RECORDS_ARCHITECTURE", False)
    variant = ck.variant if (model is None or records) else model
    if variant is None:
        raise ModelLoadError(f"{ck.path} is a {ck.fmt} checkpoint that does not record its architecture; name it, "
                             "e.g. load_model(path, model='segformer-b2') or --arch segformer-b2 "
                             f"(architectures: {', '.join(n for n in MODELS if not n.endswith('tiny'))})")
    if variant not in MODELS:
        raise unknown_model_error(variant)
    return variant


def _convert(ck: Checkpoint, variant: str, overrides: dict) -> None:
    """Foreign tensors -> our names, and the config their shapes imply (the format module does it)."""
    fmt = formats.BY_NAME[ck.fmt]
    if fmt.FAMILIES is not None and family(variant).name not in fmt.FAMILIES:
        raise ModelLoadError(f"a {ck.fmt} checkpoint cannot be loaded into {variant}: no converter for that pair")
    try:
        ck.sd, ck.config = fmt.convert(ck, variant, overrides)
    except ConversionError as e:
        raise ModelLoadError(str(e)) from None
    if not getattr(fmt, "CLASSES_FROM_CLASSIFIER", True):
        return
    classifier = ck.sd.get("decode_head.linear_pred.weight", ck.sd.get("decode_head.cls.weight"))
    if classifier is not None:
        ck.config["num_classes"] = int(classifier.shape[0])


def _build(ck: Checkpoint, variant: str, overrides: dict, dtype) -> nn.Module:
    """The model the checkpoint describes, its tensors loaded strictly (every key named on a mismatch)."""
    cfg_over = {**ck.config, **overrides}
    config = model_config(variant, **cfg_over)  # the config as the file records it
    net = create_model(variant, **_without_imagenet_weights(config, cfg_over))
    net.config = config
    if dtype is not None:  # e.g. float64 for parity checks: the file's tensors are copied in without rounding
        net = net.to(dtype)
    try:
        check_against(ck.sd, net.state_dict(), f"{ck.fmt} checkpoint {ck.path}")
    except ConversionError as e:
        raise ModelLoadError(str(e)) from None
    net.load_state_dict(ck.sd, strict=True)
    return net


def _without_imagenet_weights(config: dict, cfg: dict) -> dict:
    """`cfg` with the backbone built without reading its packaged ImageNet weights (`config`: the full
    config it gives): the checkpoint holds every weight, so loading is faster, and a trained model loads
    without the package that ships them."""
    backbone = config.get("backbone")
    if not isinstance(backbone, str) or backbone not in MODELS or "pretrained" not in model_config(backbone):
        return cfg
    return {**cfg, "backbone_options": {**(config.get("backbone_options") or {}), "pretrained": False}}
