"""Where a checkpoint comes from: a shipped name, a local file or folder, or a Hugging Face hub id
(downloaded when online; offline, one line says how to pass a local copy)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..models import MODELS
from ..pretrained import PRETRAINED, PRETRAINED_DIR, list_pretrained
from .files import ModelLoadError


def from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - transformers depends on it
        raise ModelLoadError("loading from the Hugging Face hub needs `pip install huggingface_hub`") from e
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.bin"], etag_timeout=10))
    except Exception as e:
        raise ModelLoadError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "The hub is unreachable or the id is wrong. Download the checkpoint on a machine with internet "
            f"(e.g. `hf download {repo_id} --local-dir DIR`) and pass the local directory or file: "
            "attnseg.load_model('DIR') / --model DIR.") from e


CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".onnx")


def looks_like_local_path(src: str) -> bool:
    """A missing local file, not a hub id: a checkpoint suffix, a path form, or a first folder that exists."""
    first = src.split("/")[0]
    return (src.endswith(CHECKPOINT_SUFFIXES) or src.startswith((".", "/", "~")) or src.count("/") > 1
            or os.sep != "/" and os.sep in src or (bool(first) and "/" in src and os.path.isdir(first)))


def resolve_source(src: str) -> Path:
    """A shipped name, a local file or folder, or a hub id -> a local path (hub ids are downloaded)."""
    if src in PRETRAINED:
        path = PRETRAINED_DIR / PRETRAINED[src]
        if not path.is_file():
            raise ModelLoadError(f"pretrained weights {src!r} are registered but {path} is missing from the "
                                 "installation; reinstall attnseg")
        return path
    if os.path.exists(src):
        return Path(src)
    if src in MODELS:
        raise ModelLoadError(f"{src!r} is an architecture with no shipped weights. Use attnseg.create_model("
                             f"{src!r}) for random weights, or pass a checkpoint: load_model(PATH, model={src!r}). "
                             f"Shipped weights: {', '.join(list_pretrained()) or 'none'}")
    if looks_like_local_path(src):
        raise ModelLoadError(f"checkpoint not found: {src} (no such file or folder; a hub id looks like org/name)")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", src) and not src.startswith((".", "/")):
        return from_hub(src)
    raise ModelLoadError(f"{src!r} is not a file, a directory, a shipped model name "
                         f"({', '.join(list_pretrained()) or 'none shipped'}) or a hub id (org/name)")
