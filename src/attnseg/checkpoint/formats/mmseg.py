"""mmsegmentation 1.x SegFormer / MiT checkpoints (key map in `segformer_keys.mmseg_rules`)."""
from __future__ import annotations

import re

from .segformer_keys import fit_to_variant, from_mmseg

NAME = "mmseg"
DESCRIPTION = "mmsegmentation 1.x SegFormer"
FAMILIES = ("segformer", "mit")


def detect(sd: dict) -> bool:
    return any(re.match(r"(backbone\.)?layers\.\d+\.0\.projection\.weight", k) for k in sd)


def convert(ck, variant: str, overrides: dict) -> tuple[dict, dict]:
    return fit_to_variant(*from_mmseg(ck.sd), variant)
