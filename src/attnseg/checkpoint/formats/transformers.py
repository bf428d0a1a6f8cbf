"""transformers Segformer checkpoints: a folder with config.json and model.safetensors / pytorch_model*.bin
(what `save_pretrained` writes and the hub holds), or a bare state dict in either generation's names (key
map in `segformer_keys`). The folder's config.json names the architecture and the class names."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ...meta import default_meta
from ...models.mit import MIT_CONFIGS
from ..files import ModelLoadError, read_state_dict
from .segformer_keys import fit_to_variant, from_transformers

NAME = "transformers"
DESCRIPTION = "transformers Segformer"
FAMILIES = ("segformer", "mit")


def detect(sd: dict) -> bool:
    return any(k.startswith(("segformer.encoder.", "encoder.patch_embeddings.", "segformer.stages.", "stages.0."))
               for k in sd)


def read_folder(path: Path) -> dict | None:
    """A transformers folder (config.json beside its weights): the Checkpoint fields; None for other folders."""
    if not (path / "config.json").is_file():
        return None
    sd, hf_config, variant, meta = read_dir(path)
    return {"sd": sd, "variant": variant, "meta": meta, "hf_config": hf_config}


def read_dir(path: Path) -> tuple[dict, dict, str, dict]:
    """(tensors, config.json, variant, label metadata) of a transformers folder."""
    hf_config = json.loads((path / "config.json").read_text())
    if hf_config.get("model_type") != "segformer":
        raise ModelLoadError(f"{path}/config.json is a {hf_config.get('model_type')!r} model; attnseg loads "
                             "transformers checkpoints of model_type 'segformer'")
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise ModelLoadError(f"{path} has config.json but no model.safetensors / pytorch_model.bin")
    sd = {}
    for f in files:
        sd.update(read_state_dict(f)[0])
    meta = default_meta()
    id2label = hf_config.get("id2label")
    if id2label and not all(re.fullmatch(r"LABEL_\d+", str(v)) for v in id2label.values()):
        meta["class_names"] = [id2label[str(i)] if str(i) in id2label else id2label[i]
                               for i in range(len(id2label))]
    return sd, hf_config, variant_for(hf_config), meta


def variant_for(hf_config: dict) -> str:
    """The attnseg variant a config.json describes (segformer-bN with a head, mit-bN without)."""
    has_head = "SegformerForSemanticSegmentation" in (hf_config.get("architectures") or [])
    for k, v in MIT_CONFIGS.items():
        if list(hf_config["hidden_sizes"]) == v["embed_dims"] and list(hf_config["depths"]) == v["depths"]:
            return f"{'segformer' if has_head else 'mit'}-{k}"
    return "segformer-b0" if has_head else "mit-b0"


def convert(ck, variant: str, overrides: dict) -> tuple[dict, dict]:
    return fit_to_variant(*from_transformers(ck.sd, ck.hf_config), variant)
