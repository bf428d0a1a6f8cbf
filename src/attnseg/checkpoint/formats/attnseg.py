"""attnseg's own files: safetensors whose metadata holds the architecture, its config and the labels
(written by `save_model`). Nothing to convert; a config saved before an option existed is upgraded by its
family (`families.Family.upgrade`)."""
from __future__ import annotations

from ...meta import meta_from
from ...models import MODELS
from ...families import family

NAME = "attnseg"
DESCRIPTION = "attnseg (.safetensors written by save_model or attnseg train)"
FAMILIES = None
RECORDS_ARCHITECTURE = True  # the file's own record of its variant wins over a model= the caller gives
CLASSES_FROM_CLASSIFIER = False  # the config records num_classes


def from_metadata(info: dict) -> dict:
    """The Checkpoint fields an attnseg file's metadata gives: variant, config (upgraded) and labels."""
    return {"variant": info["model"], "config": config_of(info), "meta": meta_from(info)}


def detect(sd: dict) -> bool:  # recognised by the file's metadata, never by its keys
    return False


def config_of(info: dict) -> dict:
    """The model config the file records, upgraded to the current options."""
    variant = info["model"]
    upgrade = family(variant).upgrade if variant in MODELS else None
    return upgrade(dict(info["config"])) if upgrade else dict(info["config"])


def convert(ck, variant: str, overrides: dict) -> tuple[dict, dict]:
    return ck.sd, ck.config
