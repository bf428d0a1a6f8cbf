"""Image and label-map input/output with clear errors and atomic writes."""
from __future__ import annotations

import colorsys
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    pass


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 (H, W, 3); raises ImageReadError naming the file if it is missing, truncated or not an image."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {e} (corrupt, truncated or not an image)") from None


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Label map as int64 (H, W); a palette PNG gives its indices, an RGB file is an error."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA"):
                raise ImageReadError(f"label map {path} is an {im.mode} image; label maps must be single-channel "
                                     "(mode L or P) with one class index per pixel")
            return np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise ImageReadError(f"label map not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageReadError(f"cannot read label map {path}: {e} (corrupt or truncated)") from None


def to_rgb_array(image) -> np.ndarray:
    """Accept a path, a PIL image or an (H, W, 3) uint8 array; return RGB uint8 (H, W, 3)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.stack([image] * 3, -1)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"image array must be (H, W, 3) RGB, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 RGB in 0..255, got dtype {image.dtype}")
        return np.ascontiguousarray(image[..., :3])
    raise TypeError(f"image must be a path, PIL.Image or numpy array, got {type(image).__name__}")


def default_palette(n: int) -> list[list[int]]:
    """n well-separated colours (golden-ratio hue walk), deterministic."""
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * ((i // 2) % 2))
        out.append([int(r * 255), int(g * 255), int(b * 255)])
    return out


def atomic_save(img: Image.Image, path: str | os.PathLike, **kw) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        img.save(tmp, **kw)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def label_png(label: np.ndarray, palette: list[list[int]]) -> Image.Image:
    """Palette PNG whose pixel values are the class indices (readable as labels, viewable as colours)."""
    if label.max(initial=0) > 255:
        raise ValueError("palette PNG holds at most 256 classes")
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [c for rgb in palette[:256] for c in rgb]
    im.putpalette(flat + [0] * (768 - len(flat)))
    return im


def overlay(image: np.ndarray, label: np.ndarray, palette: list[list[int]], alpha: float = 0.5) -> Image.Image:
    colours = np.asarray(palette, dtype=np.uint8)[np.clip(label, 0, len(palette) - 1)]
    blend = (image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha)
    return Image.fromarray(blend.round().astype(np.uint8))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
