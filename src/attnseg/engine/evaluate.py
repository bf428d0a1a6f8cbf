"""Evaluation: confusion matrix over a dataset with whole / slide / multi-scale+flip inference."""
from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from ..models.layers import class_index, resize
from .distributed import is_main
from ..inference.modes import InferenceConfig, infer
from .metrics import ConfusionMatrix


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, (x - mean) / std."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() - m) / s


def evaluate(model, dataset, inference: InferenceConfig, mean, std, device="cpu", num_classes: int | None = None,
             rank: int = 0, world: int = 1, amp_dtype: torch.dtype | None = None, progress: bool = True,
             background: int | None = None, model_kwargs: dict | None = None) -> dict:
    """Metrics over `dataset` (this process evaluates indices rank::world; matrices are all-reduced)."""
    return evaluate_models([(model, mean, std, model_kwargs)], dataset, inference, device, num_classes, rank, world,
                           amp_dtype, progress, background)[0]


@torch.inference_mode()
def evaluate_models(entries: list, dataset, inference: InferenceConfig, device="cpu", num_classes: int | None = None,
                    rank: int = 0, world: int = 1, amp_dtype: torch.dtype | None = None, progress: bool = True,
                    background: int | None = None, indices=None) -> list[dict]:
    """`evaluate` for several models, each entry (model, mean, std, model_kwargs or None), on one pass over the
    dataset: each sample is read (and, for a dataset that corrupts or augments, made) once for all of them.
    `indices` evaluates those samples instead of this rank's share (a Ray actor's batch); each result's
    "confusion" can be summed with other shares' and scored by metrics.metrics_from_confusion."""
    was_training = [m.training for m, *_ in entries]
    for m, *_ in entries:
        m.eval()
    k = num_classes or dataset.num_classes
    cms = [ConfusionMatrix(k, device="cpu") for _ in entries]
    idx = list(range(rank, len(dataset), world)) if indices is None else [int(i) for i in indices]
    bar = tqdm(idx, desc="eval", unit="img", disable=not (progress and is_main() and sys.stderr.isatty()))
    for i in bar:
        s = dataset[i]
        img, lab = s["image"].unsqueeze(0).to(device), s["label"]
        for (model, mean, std, kwargs), cm in zip(entries, cms):
            x = normalise(img, mean, std)
            with torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype or torch.bfloat16,
                                enabled=amp_dtype is not None):
                scores = infer(model, x, inference, num_classes=k, **(kwargs or {}))
            cm.update(class_index(resize(scores.float(), lab.shape[-2:]), 1)[0].cpu(), lab)
    outs = []
    for (model, *_), cm, training in zip(entries, cms, was_training):
        cm.all_reduce()
        model.train(training)
        out = cm.compute(background)
        out["images"] = len(dataset) if indices is None else len(idx)
        out["confusion"] = cm.mat.long().tolist()  # rows: ground truth, columns: prediction
        outs.append(out)
    return outs


class ScoreError(ValueError):
    pass


def prediction_files(pred_dir, dataset) -> list:
    """The label map under `pred_dir` for each sample of `dataset`, matched by the image's name: NAME.png, or
    NAME.EXT.png where `attnseg predict` kept an extension, anywhere below `pred_dir` (so predicting either
    the split's folder or the dataset's root works). A name found twice or not at all is an error."""
    from pathlib import Path

    root = Path(pred_dir)
    if not root.is_dir():
        raise ScoreError(f"predictions folder {root} does not exist (write it with `attnseg predict IMAGES --out "
                         f"{root}`)")
    found: dict[str, list] = {}
    for p in root.rglob("*.png"):
        found.setdefault(p.name, []).append(p)
    files, missing = [], []
    for img_path, _ in dataset.samples:
        img_path = Path(img_path)
        hits = found.get(f"{img_path.stem}.png") or found.get(f"{img_path.name}.png") or []
        if len(hits) > 1:
            raise ScoreError(f"{len(hits)} label maps for image {img_path.name} under {root}: "
                             + ", ".join(str(h) for h in sorted(hits)[:3]) + "; score one prediction folder per run")
        if not hits:
            missing.append(img_path.name)
        files.append(hits[0] if hits else None)
    if missing:
        raise ScoreError(f"no label map under {root} for {len(missing)} of the {len(files)} {dataset.split} images "
                         f"(e.g. {', '.join(missing[:3])}); predict them all (`attnseg predict IMAGES --out {root}`) "
                         "or score the first N with --limit N")
    return files


def score_label_maps(pred_dir, dataset, progress: bool = True) -> dict:
    """Metrics of label maps already written (e.g. by `attnseg predict`) against `dataset`'s ground truth:
    what a user of the CLI gets, scored like `evaluate`. Each map must be a class-index PNG at its label's size."""
    from ..io import ImageReadError, read_label

    files = prediction_files(pred_dir, dataset)
    k = dataset.num_classes
    cm = ConfusionMatrix(k, device="cpu")
    for (_, lab_path), f in tqdm(list(zip(dataset.samples, files)), desc="score", unit="img",
                                 disable=not (progress and sys.stderr.isatty())):
        lab = dataset.map_label(read_label(lab_path), lab_path)
        try:
            pred = read_label(f)
        except ImageReadError as e:  # names the file: an RGB image (an overlay?) or a corrupt one
            raise ScoreError(str(e)) from None
        if pred.shape != lab.shape:
            raise ScoreError(f"{f} is {pred.shape[1]}x{pred.shape[0]} but its label {lab_path} is "
                             f"{lab.shape[1]}x{lab.shape[0]}: label maps must be at the image's size")
        if pred.size and int(pred.max()) >= k:
            raise ScoreError(f"{f} has class index {int(pred.max())}, but {type(dataset).__name__} has {k} classes "
                             "(was it predicted with another model or --labels list?)")
        cm.update(torch.from_numpy(pred), torch.from_numpy(lab.astype("int64")))
    out = cm.compute()
    out["images"] = len(files)
    out["confusion"] = cm.mat.long().tolist()
    return out
