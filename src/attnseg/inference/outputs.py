"""What `attnseg predict` writes for one image, on one machine or many: the output names, the atomic write of a
label map and its overlay, and the check that an earlier run's outputs are complete (so a rerun skips them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..io import atomic_save, label_png, overlay, remove_stale_temps

_SWAPPED = (5, 6, 7, 8)  # EXIF orientations that turn the image a quarter: read_image swaps its sides


def output_files(base: Path) -> tuple[Path, Path]:
    """The label map and the overlay written for one image: BASE.png and BASE_overlay.jpg."""
    base = Path(base)
    return base.with_name(base.name + ".png"), base.with_name(base.name + "_overlay.jpg")


def write_prediction(base: Path, rgb: np.ndarray, label: np.ndarray, palette, class_names, alpha: float) -> int:
    """Write the label map (palette PNG carrying the class names) and the overlay, each encoded in memory and
    renamed into place, so a reader never sees half a file. Returns how many existing files were replaced;
    raises io.WriteFailed (one line) when a write fails."""
    lab_path, ov_path = output_files(base)
    replaced = lab_path.exists() + ov_path.exists()
    atomic_save(label_png(label, palette, class_names), lab_path)
    atomic_save(overlay(rgb, label, palette, alpha), ov_path, quality=90)
    return replaced


def oriented_size(header: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as read_image returns it (EXIF orientation applied)."""
    w, h = header.size
    try:
        turned = header.getexif().get(0x0112) in _SWAPPED
    except Exception:  # a broken EXIF block: read_image ignores it too
        turned = False
    return (h, w) if turned else (w, h)


def clear_stale_temps(base: Path) -> None:
    """Remove the temp files a killed writer left beside an image's outputs."""
    for p in output_files(base):
        remove_stale_temps(p.parent, p.name)


def outputs_complete(base: Path, size: tuple[int, int]) -> bool:
    """True when both outputs for an image of `size` (width, height) exist and decode completely at that size:
    a rerun skips the image. Anything else (missing, truncated, another size, not an image) is redone."""
    try:
        for p in output_files(base):
            with Image.open(p) as im:
                if im.size != tuple(size):
                    return False
                im.load()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return False
    return True
