"""Few-shot / zero-shot evaluation over episodes: mIoU and FB-IoU as HSNet and LSeg report them.

For every episode the predicted binary mask is compared with the query mask (255 ignored):
    I[b, c] += |pred = b and gt = b|,  U[b, c] += |pred = b or gt = b|   for b in {background, foreground}
    mIoU   = mean over the fold's classes c of I[1, c] / max(U[1, c], 1)   (a class no episode drew: 0)
    FB-IoU = mean over b of (sum_c I[b, c]) / (sum_c U[b, c])
as HSNet's AverageMeter computes them. The query mask is scored at the benchmark's `score_size` (nearest
resize, as `F.interpolate(mode='nearest')` does in the references) or at its original size.
A zero-shot LSeg predicts with the label set [background, class word] ("others" and LSeg's words by default)
and ignores the supports; its input
is the query resized to `size` x `size` with Pillow's bilinear filter (torchvision's Resize on PIL images).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.fewshot import BACKGROUND, IGNORE, PROTOCOLS, Episode, FewShotBenchmark


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
        if not self.count:
            return {"mIoU": float("nan"), "FB-IoU": float("nan"), "episodes": 0, "per_class": {}}
        fg = {c: self.inter[c][1] / max(self.union[c][1], 1) for c in self.classes}  # unseen classes: 0
        i = sum(self.inter[c] for c in self.classes)
        u = sum(self.union[c] for c in self.classes)
        return {"mIoU": 100 * float(np.mean(list(fg.values()))), "FB-IoU": 100 * float(np.mean(i / np.maximum(u, 1))),
                "episodes": self.count, "per_class": {c: 100 * float(v) for c, v in fg.items()},
                "unseen_classes": [c for c in self.classes if self.union[c].sum() == 0]}


def resize_mask_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torch's nearest resize (source index floor(dst * in / out)), the references' mask resize."""
    if mask.shape == tuple(size):
        return mask
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(t, size=tuple(size), mode="nearest")[0, 0].numpy().astype(mask.dtype)


class ZeroShotLSeg:
    """Predict an episode's mask with LSeg and the labels [background, class name]."""

    def __init__(self, model, size: int = 480, background: str = BACKGROUND["lseg"], device="cpu"):
        self.model, self.size, self.background, self.device = model.eval().to(device), size, background, device
        meta = getattr(model, "meta", None) or {}
        self.mean = torch.tensor(meta.get("mean", [127.5] * 3)).view(1, 3, 1, 1)
        self.std = torch.tensor(meta.get("std", [127.5] * 3)).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, ep: Episode, label: str, out_size: tuple[int, int] | None = None) -> np.ndarray:
        from PIL import Image

        img = np.asarray(Image.fromarray(ep.query).resize((self.size, self.size), Image.BILINEAR))
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()
        logits = self.model(((x - self.mean) / self.std).to(self.device), labels=[self.background, label]).float()
        out_size = tuple(out_size or ep.query_mask.shape)
        if tuple(logits.shape[-2:]) != out_size:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return (logits[0].argmax(0) == 1).cpu().numpy().astype(np.uint8)


def evaluate_episodes(predict, bench: FewShotBenchmark, progress: bool = False,
                      score_size: int | None | str = "protocol", words: str | None = None) -> dict:
    """`predict(episode, label_text, out_size) -> (h, w) {0, 1}` over every episode of `bench`, scored at
    the protocol's resolution (`score_size="protocol"`), an int S (S x S), or None (original mask size).
    `words` picks the label text (see attnseg.data.fewshot): "lseg" or "readable"; None: the protocol's."""
    size = bench.score_size if score_size == "protocol" else score_size
    words = words or PROTOCOLS[bench.protocol]["words"]
    meter = FewShotMeter(bench.classes)
    for k in tqdm(range(len(bench)), desc=f"{bench.name} fold {bench.fold}", disable=not progress):
        ep = bench[k]
        gt = ep.query_mask if size is None else resize_mask_nearest(ep.query_mask, (size, size))
        meter.update(predict(ep, bench.label_text(ep.class_id, words), gt.shape), gt, ep.class_id)
    res = meter.result()
    res["per_class"] = {bench.class_names[c]: v for c, v in res["per_class"].items()}
    res["unseen_classes"] = [bench.class_names[c] for c in res.get("unseen_classes", [])]
    res.update(benchmark=bench.name, fold=bench.fold, split=bench.split, shots=bench.shots,
               protocol=bench.protocol, score_size=size, label_words=words)
    return res
