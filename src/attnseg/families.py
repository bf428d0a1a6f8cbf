"""Model families and what they imply, in one place: which variants are encoders, segmenters or language-driven,
which run their attention's element-wise ops in fp32 under int8, and which configs saved by earlier versions
need upgrading. Every registered variant is named FAMILY-..., and `family(name)` is the only place that reads
that prefix (a test keeps every registered name in a family listed here).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .models.sanet import upgrade_config as _sanet_upgrade


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "encoder" (features, no decode head) | "segmenter" (fixed classes) | "language" (LSeg: labels)
    transformer: bool = False  # int8 export keeps everything but Conv/MatMul/Gemm/Add/Mul in fp32 (measured)
    upgrade: Callable[[dict], dict] | None = None  # a config saved with older options -> the current ones


_LIST = (
    Family("mit", "encoder", transformer=True),
    Family("eft", "encoder", transformer=True),
    Family("resnet", "encoder"),
    Family("efficientnet", "encoder"),
    Family("dpt", "encoder"),
    Family("segformer", "segmenter", transformer=True),
    Family("edaformer", "segmenter", transformer=True),
    Family("allmlp", "segmenter"),
    Family("sanet", "segmenter", upgrade=_sanet_upgrade),
    Family("nlnet", "segmenter"),
    Family("lseg", "language"),
)
FAMILIES: dict[str, Family] = {f.name: f for f in _LIST}
_ALIASES = {"resnet50": "resnet", "resnet101": "resnet"}  # resnet50-d8, resnet101-d8


def family_name(name: str) -> str:
    """The family part of a variant name ("segformer-b2" -> "segformer"), also for names not registered."""
    prefix = str(name).split("-")[0]
    return _ALIASES.get(prefix, prefix)


def family(name: str) -> Family:
    """The family of a registered variant name (e.g. "segformer-b2" -> segformer)."""
    prefix = family_name(name)
    if prefix not in FAMILIES:
        raise ValueError(f"{name!r} belongs to no model family; families: {', '.join(FAMILIES)}")
    return FAMILIES[prefix]


def same_family(a: str, b: str) -> bool:
    return family_name(a) == family_name(b)
