"""Write the text table an LSeg training run needs: the embeddings its text encoder gives every prompt the
run can draw (each class name and data.label_names entry under each data.label_templates template) and the
dataset's class names (validation, the saved model's default labels).

With `data.text_table=FILE` the engine serves these embeddings instead of loading the encoder, so LSeg trains
on a machine without the encoder's weights (a GPU reached by a size-limited copy, say) and draws exactly
what it would have drawn with the encoder: the table holds the encoder's own output for each string.

    python -m attnseg.analysis.text_table --config configs/lseg-effnet-lite2_camvid_vocab.yaml --out table.safetensors
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", required=True, help="the LSeg training config (YAML)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--labels", default="", help="more strings to include, comma-separated")
    ap.add_argument("--out", required=True, help="the table to write (.safetensors); an existing file is refused")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(args) -> int:
    from ..data import build_dataset
    from ..engine.config import ConfigError, load_config
    from ..engine.vocabulary import LabelVocabulary, VocabularyError, load_names
    from ..models import model_config
    from ..models.text import TextEncoderError, get_text_encoder, write_table

    if Path(args.out).exists() and not args.overwrite:
        print(f"error: {args.out} exists; choose another --out or pass --overwrite", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.set)
        spec = model_config(cfg.model.name, **cfg.model.options).get("text_encoder")
        if not spec:
            raise ValueError(f"{cfg.model.name} is not an LSeg model (no text encoder)")
        d = cfg.data
        ds = build_dataset(d.dataset, d.root, d.train_split, None, check_labels=False)
        vocab = LabelVocabulary(ds.class_names, load_names(d.label_names), d.label_templates, cfg.train.seed)
        extra = [s.strip() for s in args.labels.split(",") if s.strip()]
        strings = list(dict.fromkeys(vocab.needed(ds.class_names) + extra))
        path = write_table(get_text_encoder(spec, None), strings, args.out)
    except (ConfigError, VocabularyError, TextEncoderError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{path}: {len(strings)} strings from {spec!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
