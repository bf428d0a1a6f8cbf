"""The trained weights shipped inside the package (name -> file here), readable without importing torch."""
from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR = Path(__file__).parent
# trained with the configs/ of the same name (allmlp-effnet-lite2-camvid: configs/allmlp-effnet-lite2_camvid.yaml,
# saved in fp16 with 540 as its working short side, the scale its validation chose; the default since issue 17)
PRETRAINED: dict[str, str] = {
    "allmlp-effnet-lite2-camvid": "allmlp-effnet-lite2-camvid.safetensors",
    "sanet-effnet-lite0-camvid": "sanet-effnet-lite0-camvid.safetensors",
    "lseg-effnet-lite0-camvid": "lseg-effnet-lite0-camvid.safetensors",
}


def list_pretrained() -> list[str]:
    """Names of trained weights shipped inside the package (load offline with load_model(name))."""
    return sorted(n for n, f in PRETRAINED.items() if (PRETRAINED_DIR / f).is_file())
