"""Colours for label maps: the model's palette extended with distinct colours, colours that follow typed labels
(LSeg), palette PNGs whose pixels are class indices, and overlays of labels on images."""
from __future__ import annotations

import colorsys
import json

import numpy as np
from PIL import Image

MAX_LABELS = 256  # label maps are written as palette PNGs: one byte per pixel

def default_palette(n: int) -> list[list[int]]:
    """n well-separated colours (golden-ratio hue walk), deterministic."""
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * ((i // 2) % 2))
        out.append([int(r * 255), int(g * 255), int(b * 255)])
    return out

def extend_palette(palette: list[list[int]] | None, n: int) -> list[list[int]]:
    """`palette` (e.g. a dataset's) followed by distinct generated colours, n in all (n <= MAX_LABELS)."""
    if n > MAX_LABELS:
        raise ValueError(f"{n} labels: label maps hold at most {MAX_LABELS} classes")
    out = [list(map(int, c)) for c in (palette or [])][:n]
    seen = {tuple(c) for c in out}
    k = 0
    while len(out) < n:
        for c in default_palette(k + 1)[k:]:
            if tuple(c) not in seen:
                out.append(c)
                seen.add(tuple(c))
        k += 1
        if k > 16 * MAX_LABELS:  # pragma: no cover - the hue walk yields thousands of distinct colours
            raise RuntimeError("could not generate distinct colours")
    return out

def label_palette(labels: list[str], class_names: list[str] | None = None,
                  palette: list[list[int]] | None = None) -> list[list[int]]:
    """Colours for typed labels (LSeg) that follow each label wherever it moves in the list: a label that names
    one of the model's classes (case and spaces aside) gets that class's colour, any other label a colour
    derived from its text (a hash to a hue), so 'road' is road's colour and 'my bike' the same colour in every
    request; a rare clash with a colour already taken moves on to the next hash."""
    import hashlib

    known = {n.strip().casefold(): list(map(int, c)) for n, c in zip(class_names or [], palette or [])}
    out, seen = [], set()
    for label in labels:
        key = label.strip().casefold()
        colour = known.get(key)
        salt = 0
        while colour is None or tuple(colour) in seen:
            d = hashlib.sha1(f"{key}#{salt}".encode()).digest()
            r, g, b = colorsys.hls_to_rgb(d[0] / 256 + d[1] / 65536, 0.42 + 0.16 * d[2] / 255, 0.55 + 0.35 * d[3] / 255)
            colour, salt = [int(r * 255), int(g * 255), int(b * 255)], salt + 1
        seen.add(tuple(colour))
        out.append(colour)
    return out

def label_png(label: np.ndarray, palette: list[list[int]], names: list[str] | None = None) -> Image.Image:
    """Palette PNG whose pixel values are the class indices (readable as labels, viewable as colours). With
    `names`, the PNG carries them and their colours as JSON in a text chunk `attnseg` ({"classes": [...],
    "palette": [...]}), so a label map says what its values mean without our palette."""
    if label.max(initial=0) >= MAX_LABELS:
        raise ValueError(f"palette PNG holds at most {MAX_LABELS} classes")
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [c for rgb in palette[:MAX_LABELS] for c in rgb]
    im.putpalette(flat + [0] * (768 - len(flat)))
    if names:
        im.info["attnseg"] = json.dumps({"classes": list(names),
                                         "palette": [list(map(int, c)) for c in palette[: len(names)]]})
    return im

def overlay(image: np.ndarray, label: np.ndarray, palette: list[list[int]], alpha: float = 0.5,
            band: int = 512) -> Image.Image:
    """Blend of the image and the label colours, computed in row bands (bounded memory on huge photos)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    colours = np.asarray(extend_palette(palette, max(int(label.max(initial=0)) + 1, len(palette[:MAX_LABELS]))),
                         dtype=np.float32)
    out = np.empty_like(image)
    for y in range(0, image.shape[0], band):
        img = image[y:y + band].astype(np.float32)
        blend = img * (1 - alpha) + colours[label[y:y + band]] * alpha
        out[y:y + band] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return Image.fromarray(out)
