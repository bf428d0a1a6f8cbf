"""Write the text table an LSeg training run needs: the embeddings its text encoder gives every prompt the
run can draw (each class name and data.label_names entry under each data.label_templates template) and the
dataset's class names (validation, the saved model's default labels).

With `data.text_table=FILE` the engine serves these embeddings instead of loading the encoder, so LSeg trains
on a machine without the encoder's weights (a GPU reached by a size-limited copy, say) and draws exactly
what it would have drawn with the encoder: the table holds the encoder's own output for each string.

    attnseg text-table --config configs/lseg-effnet-lite2_camvid_vocab.yaml --out table.safetensors
"""
from __future__ import annotations

from pathlib import Path


def write_text_table(config, sets: list[str], labels: list[str], out) -> tuple[Path, int, str]:
    """Write the table for the LSeg run `config` (with `sets` overrides) and the extra `labels`; returns (path,
    strings written, the encoder's spec). Raises ValueError (one line) for a config that is not LSeg's."""
    from ..data import build_dataset
    from ..engine.config import load_config
    from ..engine.vocabulary import LabelVocabulary, load_names
    from ..models import model_config
    from ..models.text import get_text_encoder, write_table

    cfg = load_config(config, sets)
    spec = model_config(cfg.model.name, **cfg.model.options).get("text_encoder")
    if not spec:
        raise ValueError(f"{cfg.model.name} is not an LSeg model (no text encoder)")
    d = cfg.data
    ds = build_dataset(d.dataset, d.root, d.train_split, None, check_labels=False)
    vocab = LabelVocabulary(ds.class_names, load_names(d.label_names), d.label_templates, cfg.train.seed)
    strings = list(dict.fromkeys(vocab.needed(ds.class_names) + list(labels)))
    return write_table(get_text_encoder(spec, None), strings, out), len(strings), spec
