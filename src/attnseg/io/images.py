"""The one image reader: every image a user hands attnseg (predict, datasets, training, the server) becomes
pixels here.

  * the pixel count is checked from the header before anything is decoded (`max_pixels`), so a
    decompression bomb costs nothing and is reported as one line; `peek_image` reads only the header and
    `decode_bytes` says what decoding an image will need (what a server reserves first);
  * EXIF orientation is applied: a phone photo is segmented as it is displayed;
  * every Pillow mode becomes RGB uint8 without clipping: 16-bit images are scaled by 1/257 (so an
    8-bit image saved as 16 bits gives back the same pixels), 32-bit integer images likewise when
    their values fit in 16 bits (else min-max), float images from [0, 1] (or min-max); modes with
    transparency (RGBA, LA, P with a transparent index) are composited over white, as a viewer shows
    them, in bands of rows; CMYK, YCbCr, 1-bit and palette images through Pillow's conversions.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..notes import Note

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

DEFAULT_MAX_PIXELS = 250_000_000  # 250 megapixels (e.g. 20000x12500); decoding needs about 1 GB per 250 MP

class ImageReadError(ValueError):
    pass

class ImageTooLarge(ImageReadError):
    """More pixels than the limit (read from the header, before decoding)."""

class ImageNote(Note):
    """Something the user should know about an image that was still read (e.g. pages beyond the first)."""

def open_image(source, name: str, max_pixels: int | None, what: str = "image") -> Image.Image:
    """Open (header only) and check the pixel count before any decoding."""
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check must not fire below our limit
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except FileNotFoundError:
        raise ImageReadError(f"{what} not found: {name}") from None
    except IsADirectoryError:
        raise ImageReadError(f"{what} {name} is a folder, not a file") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{what} {name} is larger than the limit of {limit:,} pixels (a decompression bomb "
                             "or a huge scan); raise --max-pixels if you trust it") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"cannot read {what} {name}: not an image file (or one in a format Pillow cannot "
                             "read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read {what} {name}: {e} (corrupt, truncated or not an image)") from None
    w, h = im.size
    if w * h > limit:
        im.close()
        raise ImageTooLarge(f"{what} {name} is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,}; "
                             "raise --max-pixels if you trust it")
    if w < 1 or h < 1:
        im.close()
        raise ImageReadError(f"{what} {name} is empty ({w}x{h})")
    return im

def _scale_to_uint8(a: np.ndarray, bits16: bool = False) -> np.ndarray:
    """Integer or float grey values -> uint8 without clipping (see the module docstring)."""
    if bits16:
        return np.round(a.astype(np.float32) / 257.0).astype(np.uint8)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
        if lo >= 0.0 and hi <= 1.0:
            return np.round(a * 255.0).astype(np.uint8)
    else:
        lo, hi = int(a.min(initial=0)), int(a.max(initial=0))
        if lo >= 0 and hi <= 255:
            return a.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return np.round(a.astype(np.float32) / 257.0).astype(np.uint8)
    span = max(hi - lo, 1e-12)
    return np.round((a.astype(np.float64) - lo) * (255.0 / span)).astype(np.uint8)

def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> RGB uint8 (H, W, 3), orientation not applied (see `read_image`)."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode == "L":
        g = np.asarray(im)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode.startswith("I;16") or mode in ("I", "F"):
        g = _scale_to_uint8(np.asarray(im), bits16=mode.startswith("I;16"))
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        return _over_white(im)
    return np.asarray(im.convert("RGB"))  # 1, P, CMYK, YCbCr, LAB, HSV

def _over_white(im: Image.Image, band_pixels: int = 1 << 20) -> np.ndarray:
    """An image with transparency composited over white, as a viewer shows it, in bands of rows: memory is the
    decoded image, the RGB result and one band (integer arithmetic, exactly round(c * a + 255 * (1 - a)))."""
    w, h = im.size
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, band_pixels // w)
    for y in range(0, h, rows):
        part = im.crop((0, y, w, min(y + rows, h)))
        rgba = np.asarray(part if part.mode == "RGBA" else part.convert("RGBA")).astype(np.uint32)
        a = rgba[..., 3:]
        # c * a/255 + 255 * (1 - a/255) = (c * a + 255 * (255 - a)) / 255, rounded: (2n + 255) // 510 (never a tie)
        n = rgba[..., :3] * a + 255 * (255 - a)
        out[y:y + rows] = ((2 * n + 255) // 510).astype(np.uint8)
    return out

def decode_bytes(width: int, height: int, mode: str = "RGB") -> int:
    """An upper estimate of the memory `read_image` needs for an image of this size and Pillow mode: the decoded
    image, its RGB result and (for transparency) one band; what a server reserves before it decodes."""
    px = int(width) * int(height)
    stored = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4,
              "F": 4, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}.get(mode, 4)
    grey_to_rgb = 8 if mode in ("I", "F") or mode.startswith("I;16") else 0  # float scaling of a grey image
    return px * (2 * stored + 3 + grey_to_rgb) + (32 << 20)  # 2x: EXIF orientation makes a rotated copy

def peek_image(source, max_pixels: int | None = None, name: str | None = None) -> tuple[int, int, str]:
    """(width, height, Pillow mode) from the header alone, with read_image's checks and errors."""
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "upload")
    with open_image(source, name, max_pixels) as im:
        return im.size[0], im.size[1], im.mode

def read_image(source: str | os.PathLike | bytes | BinaryIO, max_pixels: int | None = None,
               name: str | None = None, orient: bool = True) -> np.ndarray:
    """RGB uint8 (H, W, 3) as the image is displayed (EXIF orientation applied).

    source: a path, the file's bytes or a binary file object; `name` labels it in errors.
    orient=False reads the pixels as stored: a dataset's image must stay aligned with its label map, which
    carries no orientation (the datasets and few-shot benchmarks read both as stored, as their references do).
    Raises ImageReadError (one line, naming the file) for a missing, corrupt, truncated or too large file.
    """
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "upload")
    im = open_image(source, name, max_pixels)
    pages = getattr(im, "n_frames", 1)
    if pages > 1:
        kind = "pages" if im.format in ("TIFF", "MPO") else "frames"
        warnings.warn(f"{name} has {pages} {kind}; only the first is segmented (save each {kind[:-1]} as its own "
                      "file to segment the others)", ImageNote, stacklevel=2)
    try:
        with im:
            im.load()
            if orient:
                im = ImageOps.exif_transpose(im) or im
            out = pil_to_rgb(im)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"not enough memory to decode image {name}") from None
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as e:
        raise ImageReadError(f"cannot read image {name}: {e} (corrupt, truncated or not an image)") from None
    return np.ascontiguousarray(out)

def read_label(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Label map as int64 (H, W); a palette PNG gives its indices, an RGB file is an error."""
    im = open_image(path, str(path), max_pixels, what="label map")
    try:
        with im:
            if im.mode in ("RGB", "RGBA"):
                raise ImageReadError(f"label map {path} is an {im.mode} image; label maps must be single-channel "
                                     "(mode L or P) with one class index per pixel")
            im.load()
            return np.asarray(im).astype(np.int64)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read label map {path}: {e} (corrupt or truncated)") from None

MAX_FETCH_BYTES = 100 * 2**20  # an image fetched from a URL: at most this many bytes are read


def fetch(url: str, timeout_s: float = 30.0, max_bytes: int = MAX_FETCH_BYTES) -> bytes:
    """The bytes at an http(s) URL (at most `max_bytes`); ImageReadError, one line, when they cannot be had."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - http(s) only, checked by the caller
            data = r.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ImageReadError(f"cannot fetch {url}: {getattr(e, 'reason', None) or e}; download it and pass the "
                             "file") from None
    if len(data) > max_bytes:
        raise ImageReadError(f"{url} is over {max_bytes // 2**20} MB; download it and pass the file")
    return data


def is_url(image) -> bool:
    return isinstance(image, str) and image.startswith(("http://", "https://"))


def to_rgb_array(image, max_pixels: int | None = None) -> np.ndarray:
    """Accept a path, an http(s) URL, bytes, a PIL image or an (H, W[, 3|4]) uint8/uint16 array; return RGB
    uint8 (H, W, 3)."""
    if is_url(image):
        return read_image(fetch(image), max_pixels, name=image)
    if isinstance(image, (str, os.PathLike, bytes, bytearray)):
        return read_image(image, max_pixels)
    if isinstance(image, Image.Image):
        return np.ascontiguousarray(pil_to_rgb(ImageOps.exif_transpose(image) or image))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.stack([image] * 3, -1)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
            raise ValueError(f"image array must be (H, W, 3) RGB, got shape {image.shape}")
        if image.dtype == np.uint16:
            image = _scale_to_uint8(image, bits16=True)
        if image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 (0..255) or uint16 RGB, got dtype {image.dtype}")
        return np.ascontiguousarray(image[..., :3])
    raise TypeError(f"image must be a path, bytes, PIL.Image or numpy array, got {type(image).__name__}")
