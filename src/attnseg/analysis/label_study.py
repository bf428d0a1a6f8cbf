"""How an LSeg model responds to the words it is given: one pass over a split, scored against several
label sets (the image features are computed once per image, each label set only re-runs the tail).

Label sets are given per dataset class, in class order:
  names      the dataset's class names (what the model was trained with)
  synonyms   each class renamed (e.g. car -> automobile); same classes, new words
  reordered  the names given in a shuffled order; predictions are mapped back, so the score should not move
  removed    some classes left out of the label list; their pixels are ignored and mIoU is over the
             kept classes (compare with `names` over the same classes: the `names_on_kept` row)

    python -m attnseg.analysis.label_study --model CHECKPOINT --data-root ../shared/data/camvid --split test

--sets FILE adds label sets from a YAML mapping {set name: [one label per class, in class order]}, e.g. the
development names configs/vocab/camvid_dev_names.yaml, scored on --split val to choose a vocabulary recipe
(each set's mIoU is also given as a share of the names' mIoU).

The images run at the model's working size (--size auto: the short side its checkpoint records and `attnseg
predict` runs it at, e.g. 540 for a model trained at 1.5x on CamVid), resized and scored at their own
resolution as `attnseg eval --scales` does (the same number as `attnseg eval --scales 1.5` for that model).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from ..data import EvalTransform, build_dataset
from ..engine.evaluate import normalise
from ..engine.metrics import ConfusionMatrix
from ..io import atomic_write_text
from ..models.layers import resize
from ..models.lseg import canonical_order, is_language_driven
from ..inference.segmenter import resolve_short_side, scaled_size
from ..worksize import parse_short_side

CAMVID_SYNONYMS = ["heaven", "house", "post", "street", "sidewalk", "vegetation", "traffic sign", "barrier",
                   "automobile", "person", "cyclist"]
CAMVID_REMOVED = ["pole", "sign symbol", "fence"]  # small classes a user may simply not ask for


def study(model, dataset, label_sets: dict[str, list[tuple[int, str]]], limit: int | None = None,
          device="cpu", short_side: int | None = None) -> dict:
    """label_sets: name -> [(class index, label text), ...] in the order the model is given the labels;
    classes not listed are removed (their pixels not scored). short_side: run each image resized to it
    (bilinear, like `attnseg eval --scales`), None = at its own size; scores are resized back to the label's.
    Returns per set mIoU and per-class IoU."""
    k = dataset.num_classes
    cms = {name: ConfusionMatrix(k) for name in label_sets}
    embeds = {}
    for name, pairs in label_sets.items():
        t = model.text_encoder.encode([text for _, text in pairs])
        # the labels run in an order fixed by their embeddings (as LSeg.segment does), so the softmax taken
        # when the scores are resized sums them in the same order whatever order they were given in
        order = canonical_order(t).tolist()
        embeds[name] = ([pairs[i][0] for i in order], t[order].to(device))
    meta = getattr(model, "meta", {}) or {}
    n = len(dataset) if limit is None else min(limit, len(dataset))
    model.eval().to(device)
    with torch.inference_mode():
        for idx in range(n):
            s = dataset[idx]
            x = normalise(torch.as_tensor(s["image"])[None].to(device), meta.get("mean"), meta.get("std"))
            y = torch.as_tensor(s["label"]).to(device)
            size = x.shape[-2:]  # the image's size (the label's, unless the dataset resizes images)
            x = resize(x, scaled_size(*size, short_side))  # a no-op at the image's own size
            h = model.decoder_features(x)
            for name, (kept, t) in embeds.items():
                # scored as `attnseg eval` scores: the output at the size the model ran at, resized to the image's
                # size (as probabilities when it ran at another scale, like --scales), then to the label's
                scores = resize(model.segment(h, t, x.shape[-2:]), size)
                if x.shape[-2:] != size:
                    scores = scores.softmax(1)
                pred = resize(scores, y.shape[-2:])[0].argmax(0)
                pred = torch.as_tensor(kept, device=device)[pred]  # label index -> class index
                target = y.clone()
                for c in set(range(k)) - set(kept):
                    target[target == c] = 255  # removed classes: not scored
                cms[name].update(pred[None], target[None])
    out = {}
    for name, cm in cms.items():
        kept = sorted(embeds[name][0])  # class order, whatever order the labels ran in
        iou = cm.compute()["IoU"]
        out[name] = {"labels": [text for _, text in label_sets[name]],
                     "mIoU": float(np.nanmean([iou[i] for i in kept])) * 100,
                     "IoU": {dataset.class_names[i]: float(iou[i]) * 100 for i in kept}}
    if "removed" in out and "names" in out:
        kept = sorted(embeds["removed"][0])
        iou = cms["names"].compute()["IoU"]
        out["names_on_kept"] = {"mIoU": float(np.nanmean([iou[i] for i in kept])) * 100}
    return out


def load_label_sets(path, class_names: list[str]) -> dict[str, list[str]]:
    """--sets: a YAML mapping {set name: [one label per class, in class order]}; ValueError names the problem."""
    from pathlib import Path

    import yaml

    from .. import yamltext

    try:
        data = yamltext.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"--sets {path}: cannot read it as YAML ({e})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"--sets {path}: expected a mapping {{set name: [one label per class]}}")
    out = {}
    for key, labels in data.items():
        if not isinstance(labels, list) or len(labels) != len(class_names) or not all(
                isinstance(x, str) and x.strip() for x in labels):
            raise ValueError(f"--sets {path}: {key!r} must list {len(class_names)} labels, one per class in the order "
                             f"{', '.join(class_names)}")
        if len({x.strip().lower() for x in labels}) != len(labels):
            raise ValueError(f"--sets {path}: {key!r} repeats a label")
        out[str(key)] = [x.strip() for x in labels]
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--data-root", default="../shared/data/camvid")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--size", type=parse_short_side, default="auto", help="short side the images run at: auto (the "
                    "model's working size, the one `attnseg predict` uses), native, or pixels")
    ap.add_argument("--seed", type=int, default=0, help="shuffle of the reordered set")
    ap.add_argument("--sets", default=None, help="YAML file: {set name: [one label per class, class order]}, "
                    "extra label sets (e.g. configs/vocab/camvid_dev_names.yaml)")
    ap.add_argument("--out", default=None, help="write the results as JSON")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(args) -> int:
    from ..checkpoint import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model)
        ds = build_dataset(args.dataset, args.data_root, args.split, EvalTransform(None))
    except (ValueError, OSError) as e:  # unknown model/file, missing dataset: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not is_language_driven(model):
        print(f"error: {args.model} has fixed classes; the label study needs an LSeg model", file=sys.stderr)
        return 2
    short_side = resolve_short_side(model, args.size)
    names = list(ds.class_names)
    order = np.random.default_rng(args.seed).permutation(len(names))
    sets = {"names": list(enumerate(names)), "reordered": [(int(i), names[i]) for i in order]}
    if args.dataset == "camvid":
        sets["synonyms"] = list(enumerate(CAMVID_SYNONYMS))
        sets["removed"] = [(i, n) for i, n in enumerate(names) if n not in CAMVID_REMOVED]
    if args.sets:
        try:
            extra = load_label_sets(args.sets, names)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if set(extra) & set(sets):
            print(f"error: --sets {args.sets}: {sorted(set(extra) & set(sets))} clash with the built-in sets "
                  f"{sorted(sets)}; rename them", file=sys.stderr)
            return 2
        sets.update({k: list(enumerate(v)) for k, v in extra.items()})
    res = study(model, ds, sets, args.limit, short_side=short_side)
    for name, r in res.items():
        share = f" ({100 * r['mIoU'] / res['names']['mIoU']:5.1f}% of names)" if "labels" in r else ""
        print(f"{name:<14} mIoU {r['mIoU']:6.2f}{share}" + (f"   labels: {', '.join(str(v) for v in r['labels'])}"
                                                              if "labels" in r else ""))
    if args.out:
        atomic_write_text(args.out, json.dumps({"short_side": short_side, **res}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
