"""Pixel losses: cross-entropy with ignore index, optional class weights, OHEM.

The mean is taken over the valid (weighted) pixels of the *global* batch: each process divides
its sum by the all-reduced denominator and multiplies by the world size (DDP averages gradients),
so N processes give the same gradients as one process with the same global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.layers import resize
from .distributed import all_reduce_sum, world_size


class PixelLoss:
    def __init__(self, ignore_index: int = 255, class_weights: list[float] | None = None, ohem: bool = False,
                 ohem_thresh: float = 0.7, ohem_min_kept: int = 100000):
        self.ignore_index = ignore_index
        self.weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.ohem = ohem
        self.thresh = ohem_thresh
        self.min_kept = ohem_min_kept

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast outputs: the loss in float32
            logits = logits.float()  # (float64 stays float64: parity checks compare in it)
        logits = resize(logits, target.shape[-2:])
        if self.weight is not None and self.weight.numel() != logits.shape[1]:
            raise ValueError(f"{self.weight.numel()} class weights for {logits.shape[1]} classes")
        w = self.weight.to(logits.device, logits.dtype) if self.weight is not None else None
        ce = F.cross_entropy(logits, target, weight=w, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        pix_w = valid.to(logits.dtype) if w is None else w[target.clamp(0, logits.shape[1] - 1)] * valid
        if self.ohem:
            pix_w = pix_w * self._ohem_mask(logits, target, valid)
        denom = all_reduce_sum(pix_w.sum().detach().clone())
        return (ce * pix_w).sum() / denom.clamp(min=1.0) * world_size()

    @torch.no_grad()
    def _ohem_mask(self, logits, target, valid):
        """mmseg's OHEMPixelSampler: keep pixels whose GT-class probability < thresh, at least min_kept."""
        prob = logits.softmax(1).gather(1, target.clamp(0, logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
        prob = torch.where(valid, prob, torch.ones_like(prob))
        thresh = self.thresh
        n_valid = int(valid.sum())
        if n_valid > 0:
            k = min(self.min_kept, n_valid) - 1
            kth = prob.flatten().kthvalue(k + 1).values.item() if k >= 0 else 0.0
            thresh = max(thresh, kth)
        return (prob < thresh) & valid
