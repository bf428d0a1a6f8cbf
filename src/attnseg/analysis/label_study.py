"""How an LSeg model responds to the words it is given: one pass over a split, scored against several
label sets (the image features are computed once per image, each label set only re-runs the tail).

Label sets are given per dataset class, in class order:
  names      the dataset's class names (what the model was trained with)
  synonyms   each class renamed (e.g. car -> automobile); same classes, new words
  reordered  the names given in a shuffled order; predictions are mapped back, so the score should not move
  removed    some classes left out of the label list; their pixels are ignored and mIoU is over the
             kept classes (compare with `names` over the same classes: the `names_on_kept` row)

    attnseg label-study --model CHECKPOINT --data-root DATA/camvid --split test

--sets FILE adds label sets from a YAML mapping {set name: [one label per class, in class order]}, e.g. the
development names configs/vocab/camvid_dev_names.yaml, scored on --split val to choose a vocabulary recipe
(each set's mIoU is also given as a share of the names' mIoU).

The images run at the model's working size (--size auto: the short side its checkpoint records and `attnseg
predict` runs it at, e.g. 540 for a model trained at 1.5x on CamVid), resized and scored at their own
resolution as `attnseg eval --scales` does (the same number as `attnseg eval --scales 1.5` for that model).
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine.evaluate import normalise
from ..engine.metrics import ConfusionMatrix
from ..models.layers import resize
from ..models.lseg import canonical_order, is_language_driven
from ..inference.segmenter import resolve_short_side, scaled_size

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


class StudyError(ValueError):
    """A study that cannot run as asked (a model with fixed classes, a bad --sets file); one line."""


def label_sets(dataset: str, names: list[str], seed: int = 0, sets_file=None) -> dict[str, list[tuple[int, str]]]:
    """The label sets a study scores: names, reordered (by `seed`), CamVid's synonyms and removed classes, and
    the sets of `sets_file` (load_label_sets)."""
    order = np.random.default_rng(seed).permutation(len(names))
    sets = {"names": list(enumerate(names)), "reordered": [(int(i), names[i]) for i in order]}
    if dataset == "camvid":
        sets["synonyms"] = list(enumerate(CAMVID_SYNONYMS))
        sets["removed"] = [(i, n) for i, n in enumerate(names) if n not in CAMVID_REMOVED]
    if sets_file:
        extra = load_label_sets(sets_file, names)
        if set(extra) & set(sets):
            raise StudyError(f"--sets {sets_file}: {sorted(set(extra) & set(sets))} clash with the built-in sets "
                             f"{sorted(sets)}; rename them")
        sets.update({k: list(enumerate(v)) for k, v in extra.items()})
    return sets


def run_study(model, dataset, dataset_name: str, size="auto", seed: int = 0, sets_file=None,
              limit: int | None = None) -> tuple[int | None, dict]:
    """The study of an LSeg `model` on `dataset`: (the short side the images ran at, results per label set)."""
    if not is_language_driven(model):
        raise StudyError("the model has fixed classes; the label study needs an LSeg model")
    short_side = resolve_short_side(model, size)
    sets = label_sets(dataset_name, list(dataset.class_names), seed, sets_file)
    return short_side, study(model, dataset, sets, limit, short_side=short_side)
