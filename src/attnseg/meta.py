"""What a saved model records besides its weights, defined once: class names, palette, input normalisation and
the working short side. `save_model`, `load_model`, the ONNX export and `Segmenter` read and write these keys.
No torch here."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

IMAGENET_MEAN = [123.675, 116.28, 103.53]  # in 0..255 pixel units, as mmseg and the SegFormer release write them
IMAGENET_STD = [58.395, 57.12, 57.375]


@dataclass
class ModelMeta:
    class_names: list[str] | None = None  # None: "class 0", "class 1", ...
    palette: list[list[int]] | None = None  # None: generated colours
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    short_side: int | None = None  # the short side it was trained/evaluated at: `attnseg predict` runs images there


META_KEYS = tuple(ModelMeta.__dataclass_fields__)


def default_meta() -> dict:
    return asdict(ModelMeta())


def meta_from(record: dict, fallback: dict | None = None, fill_none: bool = False) -> dict:
    """The meta keys of `record` (e.g. a checkpoint's JSON), others from `fallback` (default: the defaults);
    with `fill_none`, a key recorded as null also takes the fallback's value."""
    base = fallback if fallback is not None else default_meta()
    if fill_none:
        return {k: record.get(k) or base.get(k) for k in META_KEYS}
    return {k: record.get(k, base.get(k)) for k in META_KEYS}
