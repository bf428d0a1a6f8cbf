"""attnseg: attention-based semantic segmentation (SegFormer, EDAFormer, SANet, Non-local, LSeg).

The public names are imported on first use (PEP 562), so `attnseg --version` or `attnseg models` do not pay
for importing torch.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {"create_model": "models", "list_models": "models", "list_pretrained": "pretrained",
         "load_model": "checkpoint", "save_model": "checkpoint", "Segmenter": "inference.segmenter",
         "open": "deploy.runtime:open_model"}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, _, attr = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", __name__), attr or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attnseg' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
