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


@torch.inference_mode()
def evaluate(model, dataset, inference: InferenceConfig, mean, std, device="cpu", num_classes: int | None = None,
             rank: int = 0, world: int = 1, amp_dtype: torch.dtype | None = None, progress: bool = True,
             background: int | None = None, model_kwargs: dict | None = None) -> dict:
    """Metrics over `dataset` (this process evaluates indices rank::world; matrices are all-reduced)."""
    was_training = model.training
    model.eval()
    k = num_classes or dataset.num_classes
    cm = ConfusionMatrix(k, device="cpu")
    idx = list(range(rank, len(dataset), world))
    bar = tqdm(idx, desc="eval", unit="img", disable=not (progress and is_main() and sys.stderr.isatty()))
    for i in bar:
        s = dataset[i]
        x = normalise(s["image"].unsqueeze(0).to(device), mean, std)
        with torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            scores = infer(model, x, inference, num_classes=k, **(model_kwargs or {}))
        lab = s["label"]
        pred = class_index(resize(scores.float(), lab.shape[-2:]), 1)[0].cpu()
        cm.update(pred, lab)
    cm.all_reduce()
    model.train(was_training)
    out = cm.compute(background)
    out["images"] = len(dataset)
    out["confusion"] = cm.mat.long().tolist()  # rows: ground truth, columns: prediction
    return out
