"""attnseg's own files: safetensors whose metadata holds the architecture, its config and the labels
(written by `save_model`). Nothing to convert; a config saved before an option existed is upgraded by its
family (`registry.Family.upgrade`)."""
from __future__ import annotations

from ...models import MODELS
from ...registry import family

NAME = "attnseg"
DESCRIPTION = "attnseg (.safetensors written by save_model or attnseg train)"
FAMILIES = None


def detect(sd: dict) -> bool:  # recognised by the file's metadata, never by its keys
    return False


def config_of(info: dict) -> dict:
    """The model config the file records, upgraded to today's options."""
    variant = info["model"]
    upgrade = family(variant).upgrade if variant in MODELS else None
    return upgrade(dict(info["config"])) if upgrade else dict(info["config"])


def convert(ck, variant: str, overrides: dict) -> tuple[dict, dict]:
    return ck.sd, ck.config
