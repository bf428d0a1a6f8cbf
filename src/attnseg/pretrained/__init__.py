"""The trained weights shipped inside the package (name -> file here), readable without importing torch."""
from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR = Path(__file__).parent
# trained with the configs/ of the same name; both Lite2 models are saved in fp16 with 540 as their working short
# side (1.5x CamVid, the scale their validation chose). allmlp-effnet-lite2-camvid:
# configs/allmlp-effnet-lite2_camvid.yaml with train.iters=6000; lseg-effnet-lite2-camvid:
# configs/lseg-effnet-lite2_camvid_vocab.yaml with train.iters=4000 (several names and templates per class)
PRETRAINED: dict[str, str] = {
    "allmlp-effnet-lite2-camvid": "allmlp-effnet-lite2-camvid.safetensors",
    "sanet-effnet-lite0-camvid": "sanet-effnet-lite0-camvid.safetensors",
    "lseg-effnet-lite0-camvid": "lseg-effnet-lite0-camvid.safetensors",
    "lseg-effnet-lite2-camvid": "lseg-effnet-lite2-camvid.safetensors",
}


def list_pretrained() -> list[str]:
    """Names of trained weights shipped inside the package (load offline with load_model(name))."""
    return sorted(n for n, f in PRETRAINED.items() if (PRETRAINED_DIR / f).is_file())


# `attnseg predict` without --model runs the first of these that is shipped; `attnseg serve` without --model serves
# each of them (the default, the real-time SANet, the best LSeg; lseg-effnet-lite0-camvid still loads by name)
DEFAULT_MODELS = ("allmlp-effnet-lite2-camvid", "sanet-effnet-lite0-camvid", "lseg-effnet-lite2-camvid")


def default_model() -> str | None:
    """The model `attnseg predict` runs without --model (None when no trained weights are shipped)."""
    shipped = list_pretrained()
    return next((n for n in DEFAULT_MODELS if n in shipped), shipped[0] if shipped else None)


def default_served() -> list[str]:
    """The models `attnseg serve` loads without --model."""
    shipped = list_pretrained()
    return [n for n in DEFAULT_MODELS if n in shipped]
