"""Checkpoint formats attnseg reads: one module per format, each with the same small interface.

    NAME         the format's name (errors and `Checkpoint.fmt` use it)
    FAMILIES     the model families it converts into (None: any; the layout is already ours)
    detect(sd)   True when a state dict has this format's keys
    convert(ck, variant, overrides) -> (state dict in our names, config the tensors imply)
and, where a format has them:
    read_folder(path) -> Checkpoint fields, or None   a format stored as a folder (transformers)
    from_metadata(info) -> Checkpoint fields          a format identified by the file's metadata (attnseg's)
    RECORDS_ARCHITECTURE   the file's record of its variant wins over the caller's model= (default False)
    CLASSES_FROM_CLASSIFIER  num_classes is read from the converted classifier's weight (default True)

Our own files (`attnseg`: safetensors with the config in the metadata) are recognised by that metadata, and
transformers folders by their config.json, before any key is looked at; the others are tried in the order of
`DETECTED`, most specific first.
"""
from __future__ import annotations

from . import attnseg, lseg, mmseg, nlnet, official, transformers

DETECTED = (transformers, mmseg, nlnet, official, lseg)
OWN = attnseg  # files whose metadata names their architecture (`from_metadata`)
BY_NAME = {m.NAME: m for m in (attnseg, *DETECTED)}
DESCRIPTIONS = ", ".join(m.DESCRIPTION for m in BY_NAME.values())


def detect(sd: dict):
    """The format module whose keys `sd` has, or None."""
    return next((m for m in DETECTED if m.detect(sd)), None)
