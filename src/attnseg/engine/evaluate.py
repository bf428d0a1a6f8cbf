"""Evaluation: confusion matrix over a dataset with whole / slide / multi-scale+flip inference."""
from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from ..models.layers import class_index, resize
from .distributed import is_main
from .inference import InferenceConfig, infer
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
                    background: int | None = None) -> list[dict]:
    """`evaluate` for several models, each entry (model, mean, std, model_kwargs or None), on one pass over the
    dataset: each sample is read (and, for a dataset that corrupts or augments, made) once for all of them."""
    was_training = [m.training for m, *_ in entries]
    for m, *_ in entries:
        m.eval()
    k = num_classes or dataset.num_classes
    cms = [ConfusionMatrix(k, device="cpu") for _ in entries]
    idx = list(range(rank, len(dataset), world))
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
        out["images"] = len(dataset)
        out["confusion"] = cm.mat.long().tolist()  # rows: ground truth, columns: prediction
        outs.append(out)
    return outs
