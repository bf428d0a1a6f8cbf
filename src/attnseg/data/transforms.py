"""Joint image + label transforms (mmsegmentation's training pipeline, without mmcv).

Every random transform draws from a `numpy.random.Generator` passed in by the caller, so a sample's
augmentation depends only on (seed, epoch, index): identical across worker counts, processes and
resumed runs. Images are uint8 (H, W, 3) arrays, labels int64 (H, W); masks always use nearest
interpolation; padding of labels uses the ignore index.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def resize_pair(img: np.ndarray, lab: np.ndarray | None, size: tuple[int, int]):
    """Resize to (h, w): bilinear for the image, nearest for the label."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img, lab
    img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    if lab is not None:
        lab = np.asarray(Image.fromarray(lab.astype(np.int32)).resize((w, h), Image.NEAREST)).astype(np.int64)
    return img, lab


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmseg's keep-ratio rescale: fit (h, w) inside (long, short) edges of `scale`."""
    long_edge, short_edge = max(scale), min(scale)
    f = min(long_edge / max(h, w), short_edge / min(h, w))
    return max(int(h * f + 0.5), 1), max(int(w * f + 0.5), 1)


@dataclass
class TrainTransform:
    """RandomResize(ratio 0.5-2.0 of `scale`) -> RandomCrop(cat_max_ratio) -> Flip -> PhotoMetricDistortion -> Pad."""

    crop: tuple[int, int] = (512, 512)
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    ignore_index: int = 255

    def __call__(self, img: np.ndarray, lab: np.ndarray, rng: np.random.Generator):
        r = rng.uniform(*self.ratio_range)
        h, w = rescale_size(img.shape[0], img.shape[1], (int(self.scale[0] * r), int(self.scale[1] * r)))
        img, lab = resize_pair(img, lab, (h, w))
        img, lab = self.random_crop(img, lab, rng)
        if rng.random() < self.flip_prob:
            img, lab = img[:, ::-1], lab[:, ::-1]
        if self.photometric:
            img = photometric_distortion(img, rng)
        return pad_pair(img, lab, self.crop, self.ignore_index)

    def random_crop(self, img, lab, rng):
        ch, cw = self.crop
        h, w = lab.shape
        mh, mw = max(h - ch, 0), max(w - cw, 0)

        def box():
            y, x = int(rng.integers(0, mh + 1)), int(rng.integers(0, mw + 1))
            return y, x

        y, x = box()
        if self.cat_max_ratio < 1.0:  # retry up to 10 times so no single category fills > cat_max_ratio
            for _ in range(10):
                c = lab[y:y + ch, x:x + cw]
                vals, cnt = np.unique(c[c != self.ignore_index], return_counts=True)
                if len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio:
                    break
                y, x = box()
        return img[y:y + ch, x:x + cw], lab[y:y + ch, x:x + cw]


def pad_pair(img, lab, size, ignore_index):
    ch, cw = size
    h, w = lab.shape
    if h >= ch and w >= cw:
        return np.ascontiguousarray(img), np.ascontiguousarray(lab)
    H, W = max(h, ch), max(w, cw)
    img2 = np.zeros((H, W, 3), np.uint8)
    img2[:h, :w] = img
    lab2 = np.full((H, W), ignore_index, np.int64)
    lab2[:h, :w] = lab
    return img2, lab2


def photometric_distortion(img: np.ndarray, rng: np.random.Generator, brightness: float = 32,
                           contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue: int = 18) -> np.ndarray:
    """mmseg's PhotoMetricDistortion: brightness, contrast (before or after), saturation, hue; each p=0.5."""
    x = img.astype(np.float32)
    if rng.random() < 0.5:
        x = x + rng.uniform(-brightness, brightness)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        x = x * rng.uniform(*contrast)
    x = np.clip(x, 0, 255)
    do_sat, do_hue = rng.random() < 0.5, rng.random() < 0.5
    sat, hshift = rng.uniform(*saturation), int(rng.integers(-hue, hue + 1))
    if do_sat or do_hue:
        hsv = np.asarray(Image.fromarray(x.astype(np.uint8)).convert("HSV")).astype(np.float32)
        if do_sat:
            hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 255)
        if do_hue:  # PIL hue is 0..255 for 360 degrees; shift is in OpenCV's 0..180 units
            hsv[..., 0] = (hsv[..., 0] + hshift * 256 / 180) % 256
        x = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")).astype(np.float32)
    if not contrast_first and rng.random() < 0.5:
        x = np.clip(x * rng.uniform(*contrast), 0, 255)
    return x.round().astype(np.uint8)


@dataclass
class EvalTransform:
    """Keep-ratio resize to `scale` (None: native resolution); the label stays at its original size."""

    scale: tuple[int, int] | None = None

    def __call__(self, img: np.ndarray, lab: np.ndarray, rng=None):
        if self.scale is not None:
            img, _ = resize_pair(img, None, rescale_size(img.shape[0], img.shape[1], self.scale))
        return img, lab
