"""Official releases in mmseg-0.x layout (`{'state_dict', 'meta'}`): NVlabs/SegFormer and EDAFormer use our
parameter names, so conversion only drops what the release never runs. The file does not record its
architecture: the caller names it (`model=` / `--arch`)."""
from __future__ import annotations

import re

from .segformer_keys import fit_to_variant, from_official

NAME = "official"
DESCRIPTION = "official NVlabs/SegFormer and EDAFormer releases"
FAMILIES = None


def detect(sd: dict) -> bool:
    return any(re.match(r"(backbone\.)?patch_embed1\.proj\.weight", k) for k in sd)


def convert(ck, variant: str, overrides: dict) -> tuple[dict, dict]:
    return fit_to_variant(*from_official(ck.sd), variant)
