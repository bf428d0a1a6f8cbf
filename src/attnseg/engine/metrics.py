"""Segmentation metrics, all derived from one confusion matrix (torchvision references' ConfusionMatrix).

cm[t, p] counts pixels of ground-truth class t predicted as p; ignore pixels never enter it.
  aAcc   = sum_k cm[k,k] / sum cm                      (pixel accuracy)
  Acc_k  = cm[k,k] / sum_p cm[k,p]                     (nan if class k never occurs in the ground truth)
  IoU_k  = cm[k,k] / (sum_p cm[k,p] + sum_t cm[t,k] - cm[k,k])   (nan if k is in neither GT nor prediction)
  mAcc, mIoU = nan-means over classes (absent classes are excluded, reported as nan)
  FB-IoU = mean of foreground and background IoU, with every class but `background` merged into foreground
The matrix is summed across processes with all_reduce before metrics are computed.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = 255, device="cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} differ in shape")
        k = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        n = self.num_classes
        idx = target[k].to(torch.int64) * n + pred[k].to(torch.int64)
        self.mat += torch.bincount(idx, minlength=n * n).reshape(n, n).to(self.mat.device)

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)

    def compute(self, background: int | None = None) -> dict:
        return metrics_from_confusion(self.mat, background)


def metrics_from_confusion(cm: torch.Tensor, background: int | None = None) -> dict:
    cm = cm.double()
    diag = cm.diag()
    gt = cm.sum(1)
    pred = cm.sum(0)
    total = cm.sum()
    acc = diag / gt  # nan where gt == 0
    union = gt + pred - diag
    iou = diag / union  # nan where the class is absent from both
    out = {
        "aAcc": (diag.sum() / total).item() if total > 0 else math.nan,
        "mAcc": _nanmean(acc),
        "mIoU": _nanmean(iou),
        "Acc": acc.tolist(),
        "IoU": iou.tolist(),
        "pixels": int(total.item()),
    }
    if background is not None:
        bg = background
        tp_bg = cm[bg, bg]
        fg_tp = total - gt[bg] - pred[bg] + tp_bg  # fg predicted as (any) fg
        iou_bg = tp_bg / (gt[bg] + pred[bg] - tp_bg)
        iou_fg = fg_tp / (total - tp_bg)
        out["FB-IoU"] = _nanmean(torch.stack([iou_bg, iou_fg]))
    return out


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return x.mean().item() if x.numel() else math.nan


def format_table(metrics: dict, class_names: list[str] | None) -> str:
    n = len(metrics["IoU"])
    names = class_names or [str(i) for i in range(n)]
    w = max(8, max(len(s) for s in names))
    lines = [f"{'class':<{w}}  {'IoU':>7}  {'Acc':>7}", "-" * (w + 18)]
    for name, iou, acc in zip(names, metrics["IoU"], metrics["Acc"]):
        lines.append(f"{name:<{w}}  {_pct(iou):>7}  {_pct(acc):>7}")
    lines.append("-" * (w + 18))
    summary = f"aAcc {_pct(metrics['aAcc'])}  mAcc {_pct(metrics['mAcc'])}  mIoU {_pct(metrics['mIoU'])}"
    if "FB-IoU" in metrics:
        summary += f"  FB-IoU {_pct(metrics['FB-IoU'])}"
    lines.append(summary)
    return "\n".join(lines)


def _pct(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"
