"""attnseg: attention-based semantic segmentation (SegFormer, EDAFormer, SANet, Non-local, LSeg)."""
from __future__ import annotations

__version__ = "0.1.0"

from .models import create_model, list_models  # noqa: E402
from .hub import list_pretrained, load_model, save_model  # noqa: E402
from .segmenter import Segmenter  # noqa: E402

__all__ = ["create_model", "list_models", "load_model", "save_model", "list_pretrained", "Segmenter", "__version__"]
