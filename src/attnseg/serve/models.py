"""The models a server serves: loaded once at start, each with its Segmenter, ISR settings and a lock."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..deploy.graphs import is_graph_file
from ..inference.modes import InferenceConfig
from ..isr import accepted as isr_accepted, apply as apply_isr
from ..worksize import MAX_WORK_PIXELS, WorkLimit


@dataclass
class ServedModel:
    name: str
    model: object
    segmenter: object  # attnseg.Segmenter: preprocessing, class names, palette
    language: bool
    isr: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    _isr_now: str | None = None

    def set_isr(self, setting: str | None) -> None:
        """Called on the worker thread only, before each batch."""
        setting = setting or (self.isr[0] if self.isr else None)
        if not self.isr or setting == self._isr_now:
            return
        apply_isr(self.model, setting)
        self._isr_now = setting

    def info(self) -> dict:
        seg = self.segmenter
        return {"name": self.name, "architecture": getattr(self.model, "variant", None),
                "class_names": None if self.language else seg.class_names,
                "default_labels": getattr(self.model, "default_labels", None) if self.language else None,
                "palette": seg.palette[: len(seg.class_names or [])] if seg.class_names else seg.palette[:16],
                "language_driven": self.language, "isr": bool(self.isr), "isr_settings": self.isr,
                "working_short_side": seg.size, "card": _card(self.name)}


def _card(name: str) -> dict | None:
    """What the page's model picker shows of a shipped model's card (its domain and limits); None otherwise."""
    from ..pretrained import cards

    if name not in cards.names():
        return None
    c = cards.card(name)
    return {k: c[k] for k in ("title", "task", "intended_use", "limits", "training")}


def load_models(sources: list[str], backend: str = "eager", threads: int | None = None,
                max_work_pixels: int = MAX_WORK_PIXELS, dtype: str | None = None,
                verbose: bool = False) -> dict[str, ServedModel]:
    """Load every model the server will serve (name -> ServedModel), each opened by `attnseg.open` on `backend`
    (auto: measured on this machine, per model, except that a model with ISR settings runs eagerly, so that each
    request can choose its setting; a graph has one baked in); raises ValueError naming a bad source."""
    import torch

    import attnseg
    from ..models.lseg import is_language_driven

    if threads:
        torch.set_num_threads(threads)
    out: dict[str, ServedModel] = {}
    for src in sources:
        name = Path(src).stem if (Path(src).exists() and src not in attnseg.list_pretrained()) else src
        if name in out:
            raise ValueError(f"two models would be served as {name!r}; rename one of the files")
        module = src if is_graph_file(src) else attnseg.load_model(src)
        run = "eager" if backend == "auto" and not isinstance(module, str) and isr_accepted(module) else backend
        model = attnseg.open(module, backend=run, precision=dtype, threads=threads, verbose=verbose)
        settings = isr_accepted(model) if model.backend == "eager" else []  # the grid's settings it takes
        lang = is_language_driven(model)
        if lang:
            model.text_encoder.encode(["warm-up"])  # load the text encoder now, not on the first request
        work = InferenceConfig(work=WorkLimit(max_pixels=max_work_pixels))  # the working-size bound (413 past it)
        out[name] = ServedModel(name, model, attnseg.Segmenter(model, inference=work), lang, settings)
    return out
