"""Official LSeg checkpoints (isl-org/lang-seg, PyTorch Lightning `.ckpt`) -> attnseg names.

Release layout (keys under `state_dict`, each prefixed `net.` by the Lightning module):
  pretrained.model.*                     timm VisionTransformer        -> backbone.vit.*
  pretrained.act_postprocess{l}.0.project.0  readout projection         -> backbone.reassemble.{l-1}.readout.project.0
  pretrained.act_postprocess{l}.3 / .4   1x1 conv / resampling          -> backbone.reassemble.{l-1}.proj / .resample
  scratch.layer{l}_rn                    3x3 projection to `features`   -> layer_rn.{l-1}
  scratch.refinenet{l}.*                 fusion blocks                  -> refinenet.{l-1}.*
  scratch.head1                          1x1 conv to the text dimension -> head1
  scratch.head_block.depthwise.depthwise spatial regularization kernel -> head_block.depthwise
  clip_pretrained.*                      OpenAI CLIP (image + text)     dropped: the text tower is loaded
                                         through transformers (`clip:openai/clip-vit-base-patch32`)
  pretrained.model.head.*                timm's ImageNet classifier     dropped (unused by DPT)
The release computes logit_scale = exp(log(1/0.07)) outside the state dict; it is added here as a parameter.
Hyper-parameters (`arch_option`, `block_depth`, `activation`, `features`, `backbone`) come from the
checkpoint's `hyper_parameters` when present.
"""
from __future__ import annotations

import math

import torch

from ..keymap import ConversionError, Rule, apply_key_map

NAME = "lseg"
DESCRIPTION = "LSeg releases (isl-org/lang-seg)"
FAMILIES = ("lseg",)
CLASSES_FROM_CLASSIFIER = False  # labels, not a classifier: the number of classes is the number of labels
PREFIX = r"(?:net\.)?"
BACKBONES = {"clip_vitl16_384": "lseg-vitl16", "clip_vitb32_384": "lseg-vitb32"}
ARCH_OPTIONS = {0: "none", 1: "bottleneck", 2: "depthwise"}


def detect(sd: dict) -> bool:
    return any(k.startswith(("net.scratch.refinenet", "scratch.refinenet")) for k in sd) and any(
        "pretrained." in k for k in sd)


def detect_variant(sd: dict, hparams: dict | None = None) -> str:
    backbone = (hparams or {}).get("backbone")
    if backbone in BACKBONES:
        return BACKBONES[backbone]
    if backbone is not None:
        raise ConversionError(f"LSeg checkpoint with backbone {backbone!r}: attnseg converts "
                              f"{', '.join(BACKBONES)}")
    pos = next((v for k, v in sd.items() if k.endswith("pretrained.model.pos_embed")), None)
    if pos is None:
        raise ConversionError("LSeg checkpoint without pretrained.model.pos_embed: not a ViT LSeg model")
    return {1024: "lseg-vitl16", 768: "lseg-vitb32"}.get(int(pos.shape[-1]), "lseg-vitl16")


def rules() -> list[Rule]:
    r = [Rule(PREFIX + r"clip_pretrained\..*", None),
         Rule(PREFIX + r"pretrained\.model\.head\.(weight|bias)", None),
         Rule(PREFIX + r"pretrained\.model\.(.+)", r"backbone.vit.\1"),
         Rule(PREFIX + r"scratch\.head1\.(weight|bias)", r"head1.\1"),
         Rule(PREFIX + r"scratch\.head_block\.depthwise\.depthwise\.(weight|bias)", r"head_block.depthwise.\1")]
    for level in range(1, 5):
        i = level - 1
        a = PREFIX + rf"pretrained\.act_postprocess{level}\."
        r += [Rule(a + r"0\.project\.0\.(weight|bias)", rf"backbone.reassemble.{i}.readout.project.0.\1"),
              Rule(a + r"3\.(weight|bias)", rf"backbone.reassemble.{i}.proj.\1"),
              Rule(a + r"4\.(weight|bias)", rf"backbone.reassemble.{i}.resample.\1"),
              Rule(PREFIX + rf"scratch\.layer{level}_rn\.weight", rf"layer_rn.{i}.weight"),
              Rule(PREFIX + rf"scratch\.refinenet{level}\.(.+)", rf"refinenet.{i}.\1")]
    return r


def from_official(sd: dict[str, torch.Tensor], hparams: dict | None = None,
                  given: dict | None = None) -> tuple[dict, dict]:
    """(state dict in our names, config overrides). `given`: the caller's config overrides, which settle the
    block type and depth where the checkpoint's hyper-parameters do not (or are wrong)."""
    hp = dict(hparams or {})
    given = given or {}
    if "block_type" in given:
        options = {v: k for k, v in ARCH_OPTIONS.items()}
        if given["block_type"] not in options:
            raise ConversionError(f"block_type must be one of {', '.join(options)}, got {given['block_type']!r}")
        hp["arch_option"] = options[given["block_type"]]
        hp.setdefault("block_depth", given.get("block_depth", 0))
    if "block_depth" in given:
        hp["block_depth"] = given["block_depth"]
    out = apply_key_map(sd, rules(), fmt="LSeg release checkpoint")
    out["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)  # cast to the model dtype on load
    cfg: dict = {"features": int(out["layer_rn.0.weight"].shape[0]), "text_dim": int(out["head1.weight"].shape[0])}
    cfg["use_bn"] = "refinenet.0.resConfUnit1.bn1.weight" in out
    has_block = "head_block.depthwise.weight" in out
    if "arch_option" in hp:
        cfg["block_type"] = ARCH_OPTIONS[int(hp["arch_option"])]
        cfg["block_depth"] = int(hp.get("block_depth", 0))  # lang-seg's argparse default is 0 (one block)
        if "activation" in hp:
            cfg["activation"] = str(hp["activation"])
    elif has_block:
        raise ConversionError("the checkpoint has a spatial regularization block but no hyper_parameters saying "
                              "which (arch_option 1 = bottleneck, 2 = depthwise) and how deep; pass e.g. "
                              "block_type='bottleneck', block_depth=2 to load_model")
    else:
        cfg["block_type"] = "none"
    if cfg["block_type"] == "none" and has_block:  # weights that would load and never run: refuse them
        raise ConversionError("the checkpoint has spatial regularization weights (scratch.head_block.*) but "
                              f"arch_option {hp.get('arch_option', 0)} uses none; pass block_type='bottleneck' or "
                              "'depthwise' (and block_depth) to load_model if the hyper-parameters are wrong")
    return out, cfg


def describe(ck) -> None:
    """What the release records beside its tensors: the variant (from its hyper-parameters or the ViT width)
    and its [-1, 1] normalisation."""
    ck.variant = detect_variant(ck.sd, ck.hparams)
    ck.meta.update(mean=[127.5] * 3, std=[127.5] * 3)


def convert(ck, variant: str, overrides: dict) -> tuple[dict, dict]:
    return from_official(ck.sd, ck.hparams, overrides)
