"""Inference modes shared by `Segmenter`, `attnseg eval` and `attnseg predict`.

* whole: one forward pass, logits resized to the input size.
* slide: crop x crop windows with the given stride, run in batches, logits summed into a buffer
  and divided by the per-pixel window count; images smaller than the crop are padded. Peak memory is
  the logits buffer plus one batch of windows, whatever the image size.
* multi-scale (+flip): the image is resized by each scale (and flipped), run in the chosen mode,
  and the softmax probabilities are averaged at the input size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..models.layers import resize
from ..worksize import WorkLimit, WorkSizeError


@dataclass
class InferenceConfig:
    mode: str = "whole"  # "whole" or "slide"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    window_batch: int = 4
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    work: WorkLimit = field(default_factory=WorkLimit)

    def __post_init__(self):
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"inference mode must be 'whole' or 'slide', got {self.mode!r}")
        self.crop = _pair(self.crop, "crop")
        self.stride = _pair(self.stride, "stride")
        if any(s > c for s, c in zip(self.stride, self.crop)):
            raise ValueError(f"slide stride {self.stride} must not exceed the crop {self.crop} (gaps would be unseen)")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive numbers, got {self.scales}")


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{name} must be a positive int or (h, w), got {v}")
    return v


def forward_logits(model, x: torch.Tensor, **kw) -> torch.Tensor:
    """Model logits resized to the input size."""
    out = model(x, **kw)
    return resize(out, x.shape[-2:])


def slide_logits(model, x: torch.Tensor, num_classes: int, crop: tuple[int, int], stride: tuple[int, int],
                 window_batch: int = 4, **kw) -> torch.Tensor:
    B, _, H, W = x.shape
    ch, cw = crop
    sh, sw = stride
    ph, pw = max(ch - H, 0), max(cw - W, 0)
    if ph or pw:  # images smaller than the crop: pad (zeros = the mean after normalisation)
        x = F.pad(x, (0, pw, 0, ph))
    Hp, Wp = x.shape[-2:]
    ny = max(math.ceil((Hp - ch) / sh), 0) + 1
    nx = max(math.ceil((Wp - cw) / sw), 0) + 1
    boxes = []
    for iy in range(ny):
        for ix in range(nx):
            y0 = min(iy * sh, Hp - ch)
            x0 = min(ix * sw, Wp - cw)
            boxes.append((y0, x0))
    logits = x.new_zeros((B, num_classes, Hp, Wp))
    count = x.new_zeros((1, 1, Hp, Wp))
    for i in range(0, len(boxes), window_batch):
        chunk = boxes[i:i + window_batch]
        crops = torch.cat([x[:, :, y0:y0 + ch, x0:x0 + cw] for y0, x0 in chunk])
        out = forward_logits(model, crops, **kw).float()
        for j, (y0, x0) in enumerate(chunk):
            logits[:, :, y0:y0 + ch, x0:x0 + cw] += out[j * B:(j + 1) * B]
            count[:, :, y0:y0 + ch, x0:x0 + cw] += 1
    return logits.div_(count)[:, :, :H, :W]  # in place: the buffer is the only full-size tensor


def infer(model, x: torch.Tensor, cfg: InferenceConfig | None = None, num_classes: int | None = None,
          **kw) -> torch.Tensor:
    """Scores (B, K, H, W) at the input size: logits for one scale without flip, else mean probabilities."""
    cfg = cfg or InferenceConfig()
    H, W = x.shape[-2:]

    def run(inp):
        h, w = inp.shape[-2:]
        if cfg.mode == "whole":
            cfg.work.check(h, w)
            return forward_logits(model, inp, **kw).float()
        cfg.work.check(*cfg.crop, what="slide window")
        if h * w > 16 * cfg.work.max_pixels:  # the score buffer holds K x h x w floats
            raise WorkSizeError(f"input of {w}x{h} is over 16x the working-size limit of {cfg.work.max_pixels:,} "
                                "pixels for slide inference (--max-work-pixels); resize the images")
        k = num_classes or _num_classes(model, kw)
        return slide_logits(model, inp, k, cfg.crop, cfg.stride, cfg.window_batch, **kw)

    if cfg.scales == [1.0] and not cfg.flip:
        return run(x)
    total = None
    for s in cfg.scales:
        xs = x if s == 1.0 else resize(x, (max(int(H * s + 0.5), 1), max(int(W * s + 0.5), 1)))
        for flip in ([False, True] if cfg.flip else [False]):
            inp = xs.flip(-1) if flip else xs
            out = run(inp)
            if flip:
                out = out.flip(-1)
            p = resize(out, (H, W)).softmax(1)
            total = p if total is None else total + p
    return total / (len(cfg.scales) * (2 if cfg.flip else 1))


def _num_classes(model, kw) -> int:
    if "labels" in kw:
        return len(kw["labels"])
    n = getattr(model, "num_classes", None)
    if n is None:
        raise ValueError("slide inference needs num_classes")
    return int(n)
