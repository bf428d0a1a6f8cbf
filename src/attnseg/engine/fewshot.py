"""Few-shot / zero-shot evaluation over episodes: mIoU and FB-IoU as HSNet and LSeg report them.

For every episode the predicted binary mask is compared with the query mask (255 ignored):
    I[b, c] += |pred = b and gt = b|,  U[b, c] += |pred = b or gt = b|   for b in {background, foreground}
    mIoU   = mean over the fold's classes c of I[1, c] / U[1, c]
    FB-IoU = mean over b of (sum_c I[b, c]) / (sum_c U[b, c])
A zero-shot LSeg predicts with the label set [background, class name] and ignores the supports.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.fewshot import IGNORE, Episode, FewShotBenchmark


class FewShotMeter:
    def __init__(self, classes: list[int]):
        self.classes = list(classes)
        self.inter = {c: np.zeros(2) for c in self.classes}
        self.union = {c: np.zeros(2) for c in self.classes}
        self.count = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, c: int) -> None:
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and mask {gt.shape} differ in size")
        valid = gt != IGNORE
        p, g = pred.astype(bool)[valid], gt[valid].astype(bool)
        for b, (pb, gb) in enumerate(((~p, ~g), (p, g))):
            self.inter[c][b] += np.count_nonzero(pb & gb)
            self.union[c][b] += np.count_nonzero(pb | gb)
        self.count += 1

    def result(self) -> dict:
        seen = [c for c in self.classes if self.union[c].sum() > 0]
        if not seen:
            return {"mIoU": float("nan"), "FB-IoU": float("nan"), "episodes": 0, "per_class": {}}
        fg = {c: self.inter[c][1] / max(self.union[c][1], 1) for c in seen}
        i = sum(self.inter[c] for c in seen)
        u = sum(self.union[c] for c in seen)
        return {"mIoU": 100 * float(np.mean(list(fg.values()))), "FB-IoU": 100 * float(np.mean(i / np.maximum(u, 1))),
                "episodes": self.count, "per_class": {c: 100 * float(v) for c, v in fg.items()}}


class ZeroShotLSeg:
    """Predict an episode's mask with LSeg and the labels [background, class name]."""

    def __init__(self, model, size: int = 480, background: str = "other", device="cpu"):
        self.model, self.size, self.background, self.device = model.eval().to(device), size, background, device
        meta = getattr(model, "meta", None) or {}
        self.mean = torch.tensor(meta.get("mean", [127.5] * 3)).view(1, 3, 1, 1)
        self.std = torch.tensor(meta.get("std", [127.5] * 3)).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, ep: Episode, label: str) -> np.ndarray:
        x = torch.from_numpy(ep.query).permute(2, 0, 1)[None].float()
        x = F.interpolate((x - self.mean) / self.std, size=(self.size, self.size), mode="bilinear",
                          align_corners=False)
        logits = self.model(x.to(self.device), labels=[self.background, label])
        logits = F.interpolate(logits.float(), size=ep.query_mask.shape, mode="bilinear", align_corners=False)
        return (logits[0].argmax(0) == 1).cpu().numpy().astype(np.uint8)


def evaluate_episodes(predict, bench: FewShotBenchmark, progress: bool = False) -> dict:
    """`predict(episode, label_text) -> (H, W) {0, 1}` over every episode of `bench`."""
    meter = FewShotMeter(bench.classes)
    text = getattr(bench, "label_text", lambda c: bench.class_names[c])
    for k in tqdm(range(len(bench)), desc=f"{bench.name} fold {bench.fold}", disable=not progress):
        ep = bench[k]
        meter.update(predict(ep, text(ep.class_id)), ep.query_mask, ep.class_id)
    res = meter.result()
    res["per_class"] = {bench.class_names[c]: v for c, v in res["per_class"].items()}
    res.update(benchmark=bench.name, fold=bench.fold, split=bench.split, shots=bench.shots)
    return res
