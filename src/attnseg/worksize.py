"""The working size: bounds on what a model input may be after resizing, and on the threads it runs on (no torch
here: the CLI's parser reads the defaults)."""
from __future__ import annotations

import math
from dataclasses import dataclass

MAX_WORK_PIXELS = 4_194_304  # 2048 x 2048: what one forward pass may take (the default model peaks ~1.8 GB there)
MAX_WORK_SIDE = 8192  # the longest side a model input may have
MIN_WORK_SIDE = 32  # the shortest: SegFormer's stage-1 reduction needs 8 tokens (32 pixels) on each side
MAX_THREADS = 1024  # the threads a model may run on: runtimes keep state per thread (onnxruntime asked for a
# million tried to allocate 41 GB and crashed)


class WorkSizeError(ValueError):
    """An image whose model input cannot fit the working-size limits (one line, naming them)."""


@dataclass(frozen=True)
class WorkLimit:
    """Bounds on the size a model runs at: pixels of one input, its longest and its shortest side.

    The input a user hands us is bounded by the reader (`--max-pixels`); this bounds what resizing makes of
    it, so a 20000x12 strip is not scaled to 540x900000 because its short side met the working size."""
    max_pixels: int = MAX_WORK_PIXELS
    max_side: int = MAX_WORK_SIDE
    min_side: int = MIN_WORK_SIDE

    def fit(self, h: int, w: int, name: str = "input") -> tuple[int, int]:
        """(h, w) shrunk (keeping the ratio) to fit the pixel and long-side bounds, or grown to the short-side
        bound; raises WorkSizeError when no size keeps the ratio within all three."""
        if h * w <= self.max_pixels and max(h, w) <= self.max_side and min(h, w) >= self.min_side:
            return h, w
        s = 1.0
        if min(h, w) < self.min_side:
            s = self.min_side / min(h, w)
        s = min(s, self.max_side / max(h, w), math.sqrt(self.max_pixels / (h * w)))
        grow = s > 1.0
        nh, nw = (math.ceil(h * s - 1e-9), math.ceil(w * s - 1e-9)) if grow else (int(h * s), int(w * s))
        if min(nh, nw) < self.min_side or max(nh, nw) > self.max_side or nh * nw > self.max_pixels:
            raise WorkSizeError(
                f"{name}: aspect ratio {max(h, w) / min(h, w):.0f}:1 is beyond the {self.max_side // self.min_side}:1 "
                f"a model input can have (at most {self.max_side} pixels long and {self.max_pixels:,} pixels "
                f"(--max-work-pixels), at least {self.min_side} short); crop it into parts")
        return nh, nw

    def check(self, h: int, w: int, what: str = "input") -> None:
        """Refuse a model input over the bounds (inputs made elsewhere, e.g. a dataset at native size)."""
        if h * w > self.max_pixels or max(h, w) > self.max_side:
            raise WorkSizeError(f"{what} of {w}x{h} = {h * w:,} pixels is over the working-size limit of "
                                f"{self.max_pixels:,} pixels (--max-work-pixels) and {self.max_side} per side; "
                                "resize the images (e.g. eval --scale), use --mode slide, or raise the limit")


def parse_short_side(text: str) -> int | str:
    """A --size value: "auto" (the model's working size), "native" or a short side of 8..16384 pixels."""
    t = str(text).strip().lower()
    if t in ("auto", "native"):
        return t
    try:
        v = float(t)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v.is_integer() and 8 <= v <= 16384):
        raise ValueError(f"expected auto, native or a short side of 8..16384 pixels, got {text!r}")
    return int(v)
