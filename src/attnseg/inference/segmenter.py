"""`Segmenter`: a model with its pre- and post-processing, for images in, label maps out."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..data.transforms import resize_pair
from .modes import InferenceConfig, infer
from ..meta import default_meta
from .. import memory
from ..io import MAX_LABELS, extend_palette, label_palette, to_rgb_array
from ..models.layers import class_index, interp_taps, resize

BATCH_PIXELS = 16_000_000  # full-size pixels one batch holds at most (images, label maps, overlays)
FALLBACK_SHORT_SIDE = 512  # a model whose checkpoint records no working size (official releases, hub ids)


def working_short_side(model) -> int | None:
    """The short side a model was trained/evaluated at, as its checkpoint records it (None if it does not)."""
    v = (getattr(model, "meta", None) or {}).get("short_side")
    return int(v) if v else None


def resolve_short_side(model, size: int | str | None) -> int | None:
    """The short side images run at for `size`: "auto" the model's working size (FALLBACK_SHORT_SIDE if its
    checkpoint records none), an int that side, "native"/None their own size (None)."""
    if size is None or size == "native":
        return None
    if size == "auto":
        return working_short_side(model) or FALLBACK_SHORT_SIDE
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
        return size
    raise ValueError(f"size must be 'auto', 'native' or a short side >= 1, got {size!r}")


def scaled_size(h: int, w: int, short_side: int | None) -> tuple[int, int]:
    """(h, w) resized keeping the ratio so that the short side is `short_side` (None: unchanged)."""
    if not short_side:
        return h, w
    s = short_side / min(h, w)
    return max(round(h * s), 1), max(round(w * s), 1)


class Segmenter:
    """Wrap a model so that `Segmenter(model).predict(image)` gives an (H, W) label map at the image's size.

    image: a path, bytes, PIL image or (H, W, 3) uint8 RGB array (EXIF orientation applied).
    size: "auto" (default) runs the image with its short side at the model's working size (the one its
    checkpoint records, e.g. 360 for the CamVid models; 512 if it records none); an int sets that short
    side; "native" (or None) runs at the image's own resolution. Either is then fitted to
    `inference.work` (at most 4.2 megapixels and 8192 pixels long, at least 32 short by default): a larger
    input is shrunk, a smaller one grown, an aspect ratio beyond 256:1 refused (WorkSizeError). The result always comes back at the
    image's size: the scores are upsampled and arg-maxed in row bands, so a 6000x8000 photo never holds
    a full-size score tensor. `inference` chooses whole/slide/multi-scale. `dtype=torch.bfloat16` runs the
    model under autocast (weights stay fp32); None: bf16 for an eager model `attnseg.open` opened in bf16,
    else fp32.
    Normalisation, class names and palette come from the model's metadata (`model.meta`).
    """

    def __init__(self, model, size: int | str | None = "auto", inference: InferenceConfig | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 band_pixels: int = 4_000_000):
        self.model = model.eval()
        self.meta = dict(default_meta(), **(getattr(model, "meta", None) or {}))
        self.size = resolve_short_side(model, size)
        self.inference = inference or InferenceConfig()
        params = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        self.device = torch.device(device) if device is not None else (params.device if params is not None
                                                                       else torch.device("cpu"))
        if dtype is None:  # an eager model opened in bf16 runs under autocast; graphs run their own precision
            bf16 = isinstance(model, torch.nn.Module) and getattr(model, "precision", None) == "bf16"
            dtype = torch.bfloat16 if bf16 else torch.float32
        self.dtype = dtype
        if hasattr(self.model, "to"):
            self.model.to(self.device)
        self.band_pixels = band_pixels
        n = getattr(model, "num_classes", None)  # None for LSeg: the labels decide
        self.class_names = self.meta.get("class_names") or ([f"class {i}" for i in range(n)] if n else None)
        self.palette = extend_palette(self.meta.get("palette"), max(n or 0, len(self.meta.get("palette") or []),
                                                                    len(self.class_names or [])))
        self._mean = torch.tensor(self.meta["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.meta["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def palette_for(self, n: int) -> list[list[int]]:
        """The model's palette extended with distinct colours to n labels (LSeg: any number, at most 256)."""
        return extend_palette(self.palette, n) if n > len(self.palette) else self.palette

    def palette_for_labels(self, labels: list[str]) -> list[list[int]]:
        """LSeg: a colour per typed label that stays with the label (io.label_palette): the model's class colours
        for its own class names, a colour from the text for any other label."""
        return label_palette(labels, getattr(self.model, "default_labels", None) or self.meta.get("class_names"),
                             self.palette)

    def working_size(self, h: int, w: int) -> tuple[int, int]:
        """The size an (h, w) image runs at: its short side at `size`, then fitted to the working-size limits
        (`inference.work`: pixels, long and short side); raises WorkSizeError for ratios no size can fit."""
        fixed = getattr(self.model, "fixed_size", None)  # a graph exported for one size runs every image at it
        if fixed and self.inference.mode == "whole":
            return tuple(fixed)
        return self.inference.work.fit(*scaled_size(h, w, self.size), name=f"image of {w}x{h}")

    def preprocess(self, image) -> tuple[torch.Tensor, tuple[int, int]]:
        """Normalised (1, 3, h, w) at the working size (resized as uint8, like the datasets), and (H, W)."""
        rgb = to_rgb_array(image)
        h, w = rgb.shape[:2]
        rgb, _ = resize_pair(rgb, None, self.working_size(h, w))
        rgb = np.asarray(rgb)
        x = torch.empty((1, 3, *rgb.shape[:2]))
        x[0].copy_(torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy()).permute(2, 0, 1))  # to float
        x.sub_(self._mean).div_(self._std)  # in place: 0.8 ms at 360 x 480, against 2.4 ms for (x - mean) / std
        return x, (h, w)

    def _check_labels(self, kw):
        labels = kw.get("labels")
        if labels is not None and len(labels) > MAX_LABELS:
            raise ValueError(f"{len(labels)} labels: at most {MAX_LABELS} (label maps are one byte per pixel)")

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, native: bool = False, **kw) -> torch.Tensor:
        """Scores at the input size through `infer` (modes, TTA), or with native=True the model's own output."""
        self._check_labels(kw)
        x = x.to(self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):  # bf16
            out = self.model(x, **kw) if native else infer(self.model, x, self.inference, **kw)
        out = out.float().cpu()
        memory.after_run()  # freed heap given back above the process's ceiling (memory.py)
        return out

    def raw_scores(self, image, **kw) -> tuple[torch.Tensor, tuple[int, int]]:
        """Per-class scores (K, h, w) at the working size, and the image's (H, W)."""
        x, hw = self.preprocess(image)
        return self._forward(x, **kw)[0], hw

    def predict_batch(self, images, **kw) -> list[np.ndarray]:
        """Label maps for several images of one size (e.g. video frames) from one batched forward pass."""
        xs, sizes = zip(*(self.preprocess(im) for im in images))
        if len(set(sizes)) > 1:
            raise ValueError(f"predict_batch needs images of one size, got {sorted(set(sizes))}")
        x = torch.cat(xs)
        return [self.labels(s, sizes[0], via=x.shape[-2:]) for s in self.batch_scores(x, sizes[0], **kw)]

    def predict_images(self, images, **kw) -> list[np.ndarray]:
        """Label maps for images of one size: one image through `predict`, several in batched passes of at most
        BATCH_PIXELS full-size pixels (so four huge photos need the memory of one, not of four)."""
        if len(images) == 1:
            return [self.predict(images[0], **kw)]
        shape = getattr(images[0], "shape", None)  # arrays (as predict hands them); others in one pass
        per = max(1, BATCH_PIXELS // max(shape[0] * shape[1], 1)) if shape is not None else len(images)
        return [m for i in range(0, len(images), per) for m in
                (self.predict_batch(images[i:i + per], **kw) if len(images[i:i + per]) > 1
                 else [self.predict(images[i], **kw)])]

    def batch_scores(self, x: torch.Tensor, size: tuple[int, int], **kw) -> torch.Tensor:
        """Scores (B, K, h', w') for a preprocessed batch of images of `size`; `labels(s, size, via=x's size)`
        turns each into a map.

        With plain whole-image inference (one scale, no flip) these are the model's low-resolution logits:
        `predict` resizes them to the working size and then to the image's, and `labels` does both resizes as one
        separable product (A_h2 A_h1) S (A_w2 A_w1)^T, never holding K x working-size scores: the same bilinear
        function, so labels equal `predict`'s up to float rounding at ties.
        """
        cfg = self.inference
        native = cfg.mode == "whole" and list(cfg.scales) == [1.0] and not cfg.flip
        return self._forward(x, native=native, **kw)

    def labels(self, scores: torch.Tensor, size: tuple[int, int], via: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W) label map from one image's (K, h', w') scores; `via`: the working size they are resized to
        first (the batch's input size, for `batch_scores`' native logits)."""
        return upsample_argmax(scores, size, self.band_pixels, via=via)

    def scores(self, image, **kw) -> torch.Tensor:
        """Per-class scores (K, H, W) at the image's size (logits, or mean probabilities with TTA).
        Holds K x H x W floats: for huge images use `predict`, which never does."""
        s, (h, w) = self.raw_scores(image, **kw)
        return resize(s[None], (h, w))[0]

    def predict(self, image, **kw) -> np.ndarray:
        """Label map (H, W) of class indices at the input's size."""
        s, (h, w) = self.raw_scores(image, **kw)
        return upsample_argmax(s, (h, w), self.band_pixels)

    def segments(self, images, labels: list[str] | None = None, threshold: float | None = None):
        """What transformers' `pipeline("image-segmentation")` returns: per image, a list of
        `{"label", "score", "mask"}`, one per label present, largest first; `mask` a PIL image of mode L (255 on
        the label's pixels) at the image's size, the masks disjoint and covering it; `score` the label's mean
        probability over the pixels it won. `images`: a path, an http(s) URL, bytes, a PIL image, an (H, W, 3)
        array, or a list of them (then a list of lists comes back). `labels`: an LSeg model's labels; `threshold`
        drops labels scoring below it."""
        from PIL import Image

        single = not isinstance(images, (list, tuple))
        kw = {"labels": list(labels)} if labels is not None else {}
        names = list(labels) if labels is not None else list(self.class_names or getattr(self.model, "default_labels",
                                                                                          None) or [])
        out = []
        for image in [images] if single else images:
            scores, size = self.raw_scores(to_rgb_array(image), **kw)
            label = upsample_argmax(scores, size, self.band_pixels)
            out.append([{"label": names[i] if i < len(names) else str(i), "score": score,
                         "mask": Image.fromarray(((label == i) * 255).astype(np.uint8), mode="L")}
                        for i, score, _ in label_scores(label, scores, max(len(names), 1))
                        if threshold is None or score >= threshold])
        return out[0] if single else out


def label_scores(label: np.ndarray, scores: torch.Tensor, n: int) -> list[tuple[int, float, float]]:
    """(label index, score, pixel share) of every label present in `label`, largest first. The score is the mean
    softmax probability of the label over the pixels it won in `scores` (K, h, w), the model's output at its
    resolution: how transformers' image-segmentation pipeline scores a segment."""
    counts = np.bincount(label.ravel(), minlength=n)
    probs = scores.float().softmax(0)
    winner = probs.argmax(0)
    out = []
    for i in np.argsort(-counts, kind="stable"):
        if counts[i] == 0:
            continue
        won = winner == int(i)
        score = float(probs[int(i)][won].mean()) if bool(won.any()) else float(probs[int(i)].max())
        out.append((int(i), score, float(counts[i]) / label.size))
    return out


def upsample_argmax(scores: torch.Tensor, size: tuple[int, int], band_pixels: int = 4_000_000,
                    via: tuple[int, int] | None = None) -> np.ndarray:
    """argmax over K of the bilinear (align_corners=False) resize of `scores` (K, h, w) to `size` (first to
    `via`, then to `size`, when `via` is given). Scores whose K x H x W resize fits in `band_pixels` are read
    from their own argmax wherever the resize cannot change it (`_labels_by_taps`); larger ones are resized in
    bands of rows as A_h[band] S A_w^T (the resize is separable, and two resizes are one with A = A_2 A_1), so
    memory is K x band x W floats."""
    k, h, w = scores.shape
    H, W = size
    via = tuple(via) if via is not None and tuple(via) not in ((h, w), (H, W)) else None  # through itself: none
    if (h, w) == (H, W) and via is None:
        return class_index(scores).to(torch.int32).numpy()
    if k * H * W <= band_pixels:  # small enough to hold whole
        out = _labels_by_taps(scores, size, via)  # None where class borders cover over a third of the image
        if out is not None:
            return out
        if via is None:  # one resize by its two taps per axis, channels last (a pixel's scores side by side)
            up = resize(scores[None].contiguous(memory_format=torch.channels_last), (H, W))[0]
            return class_index(up.permute(1, 2, 0), dim=-1).to(torch.int32).numpy()
    via_h, via_w = via or (None, None)
    a_h = resize_matrix(h, H, via_h).to(scores.dtype)  # (H, h)
    a_w_t = resize_matrix(w, W, via_w).to(scores.dtype).t()  # (w, W)
    out = np.empty((H, W), np.int32)
    band = max(1, band_pixels // max(W * k, 1))
    for y0 in range(0, H, band):
        rows = torch.matmul(a_h[y0:y0 + band], scores)  # (K, b, w)
        out[y0:y0 + band] = class_index(torch.matmul(rows, a_w_t)).to(torch.int32).numpy()
    return out


def _labels_by_taps(scores: torch.Tensor, size: tuple[int, int], via: tuple[int, int] | None) -> np.ndarray | None:
    """`upsample_argmax` for scores held whole, doing the resize only where it can change the answer.

    Each output pixel is a weighted mean (weights >= 0, summing to 1) of the scores in a small window of source
    pixels: its taps along each axis (`resize_taps`); the outputs whose taps start at the same source pixel form a
    cell (4 x 4 pixels for a 4x upsampling) and share the window. Where one class leads every other by more than
    `tol` at every pixel of the window, it leads in every mean of it too, so the cell's pixels take that class
    from the low-resolution argmax. `tol` (1e-5 of the largest |score|) is far above the float rounding of a
    mean of at most a few dozen terms, so these labels are the ones the full resize gives. Only the other pixels (along class
    borders: 10-20% of a CamVid frame) are resized and compared, by their taps. Medians over 20 CamVid test
    frames on one thread: SANet's 11 x 90 x 120 logits to 480 x 360 in 2.0-2.3 ms (3.7 resizing every pixel),
    the default model's 11 x 135 x 180 through 720 x 540 to 480 x 360 in 3.9-4.2 ms (11.9 through the matrices).
    None when more than a third of the pixels are open (noise-like scores): the dense ways are faster there."""
    k, h, w = scores.shape
    H, W = size
    via_h, via_w = via or (None, None)
    iy, wy = resize_taps(h, H, via_h)
    ix, wx = resize_taps(w, W, via_w)
    cell_y, in_y = _resize_cells(h, H, via_h)
    cell_x, in_x = _resize_cells(w, W, via_w)
    top, lead = scores.max(0)  # NaN wins, as in class_index
    s, top = scores.numpy(), top.numpy()
    tol = 1e-5 * np.fmax(np.fmax.reduce(np.abs(top), axis=None), -np.fmin.reduce(s, axis=None))  # NaN skipped
    if not np.isfinite(tol):  # an inf score (or only NaN): no scale for "leads"
        return None
    alone = (s >= (top - tol)).sum(0, dtype=np.int16) == 1  # a NaN or a near tie: not alone
    v = np.where(alone, lead.numpy(), -1).astype(np.int32)
    lo, hi = v[cell_y].min(1), v[cell_y].max(1)  # over the rows of each cell's window: (cells along H, w)
    lo, hi = lo[:, cell_x].min(2), hi[:, cell_x].max(2)  # and its columns: (cells along H, cells along W)
    cells = np.where((lo == hi) & (lo >= 0), lo, -1)  # the class every pixel of the cell takes, or -1: open
    out = np.take(np.take(cells, in_y, axis=0), in_x, axis=1)  # (H, W)
    pos = np.flatnonzero(out < 0)
    if pos.size > out.size // 3:
        return None
    if pos.size:
        sc = scores.permute(1, 2, 0).contiguous().numpy()  # (h, w, K): a pixel's scores side by side
        rows = np.einsum("yt,ytwk->ywk", wy, sc[iy]).reshape(H * w, k)  # resized along H: (H * w, K)
        base, xs = (pos // W) * w, pos % W
        vals = np.take(rows, base + ix[xs, 0], axis=0) * wx[xs, 0, None]
        for t in range(1, ix.shape[1]):
            vals += np.take(rows, base + ix[xs, t], axis=0) * wx[xs, t, None]
        out.reshape(-1)[pos] = vals.argmax(1)  # first maximum on ties, NaN wins
    return out


@lru_cache(maxsize=32)
def _resize_cells(n_in: int, n_out: int, via: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The cells of `resize_taps(n_in, n_out, via)`, the runs of outputs whose taps start at the same source
    index (the taps' indices are consecutive from there, so a run shares them): each cell's taps (cells, T) and
    each output's cell (n_out,)."""
    index, _ = resize_taps(n_in, n_out, via)
    starts = np.flatnonzero(np.r_[True, index[1:, 0] != index[:-1, 0]])
    return index[starts], np.repeat(np.arange(starts.size), np.diff(np.r_[starts, n_out]))


@lru_cache(maxsize=32)
def resize_taps(n_in: int, n_out: int, via: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 1-d bilinear resize n_in -> n_out (through `via` first) by taps: (n_out, T) source indices,
    consecutive from each output's first, and their weights (T = 2 for one resize; through `via` up to 3
    upsampling). O(n_out T) memory, where its matrix (`resize_matrix`) takes O(n_out n_in)."""
    def pairs(n_i: int, n_o: int):
        i0, i1, frac = interp_taps(n_i, n_o)
        return [(i0.long().numpy(), (1 - frac).numpy()), (i1.long().numpy(), frac.numpy())]

    if via is None:
        parts = pairs(n_in, n_out)
    else:  # A = A_2 A_1: each tap j of the second resize spreads its weight over j's own taps in the first
        first = pairs(n_in, via)
        parts = [(i[j], a * b[j]) for j, a in pairs(via, n_out) for i, b in first]
    base = np.minimum.reduce([i for i, _ in parts])
    span = int(max((i - base).max() for i, _ in parts)) + 1
    weights = np.zeros((n_out, span), np.float32)
    rows = np.arange(n_out)
    for i, a in parts:
        weights[rows, i - base] += a
    index = np.minimum(base[:, None] + np.arange(span), n_in - 1)  # past the edge: weight 0
    return index, weights


def resize_matrix(n_in: int, n_out: int, via: int | None = None) -> torch.Tensor:
    """The (n_out, n_in) matrix of the 1-d bilinear resize n_in -> n_out (through `via` first). Matrices of up to
    a million entries (4 MB) are kept, 32 at most: a video or a folder of photos resizes between the same sizes
    again and again, and building one costs more than using it."""
    if n_in * n_out <= 1 << 20:
        return _kept_resize_matrix(n_in, n_out, via)
    return _resize_matrix(n_in, n_out, via)


def _resize_matrix(n_in: int, n_out: int, via: int | None) -> torch.Tensor:
    index, weight = resize_taps(n_in, n_out, via)
    a = torch.zeros(n_out, n_in)
    rows = torch.arange(n_out)
    for t in range(index.shape[1]):  # taps past the edge repeat the last index with weight 0
        a.index_put_((rows, torch.from_numpy(index[:, t])), torch.from_numpy(weight[:, t]), accumulate=True)
    return a


_kept_resize_matrix = lru_cache(maxsize=32)(_resize_matrix)
