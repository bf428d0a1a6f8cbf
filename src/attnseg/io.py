"""Image and label-map input/output: one reader for every path, clear errors, atomic writes.

`read_image` is the only way attnseg turns a file into pixels (predict, datasets, training, the server):
  * the pixel count is checked from the header before anything is decoded (`max_pixels`), so a
    decompression bomb costs nothing and is reported as one line;
  * EXIF orientation is applied: a phone photo is segmented as it is displayed;
  * every Pillow mode becomes RGB uint8 without clipping: 16-bit images are scaled by 1/257 (so an
    8-bit image saved as 16 bits gives back the same pixels), 32-bit integer images likewise when
    their values fit in 16 bits (else min-max), float images from [0, 1] (or min-max); modes with
    transparency (RGBA, LA, P with a transparent index) are composited over white, as a viewer shows
    them; CMYK, YCbCr, 1-bit and palette images through Pillow's conversions.
Every write is atomic (encoded in memory where it can be, written to a temp file in the target folder,
fsynced, its size checked, then renamed) with the umask's permissions; a failure raises `WriteFailed`,
one line naming the path and the cause, and leaves neither a partial file nor a temp file.
"""
from __future__ import annotations

import colorsys
import contextlib
import errno
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .notes import Note

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 250_000_000  # 250 megapixels (e.g. 20000x12500); decoding needs about 1 GB per 250 MP
MAX_LABELS = 256  # label maps are written as palette PNGs: one byte per pixel


def first_line(e: BaseException) -> str:
    """An error's first non-empty line (its type's name if it has none): what a one-line report shows."""
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)


class ImageReadError(ValueError):
    pass


class ImageTooLarge(ImageReadError):
    """More pixels than the limit (read from the header, before decoding)."""


class ImageNote(Note):
    """Something the user should know about an image that was still read (e.g. pages beyond the first)."""


def _open(source, name: str, max_pixels: int | None, what: str = "image") -> Image.Image:
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
    with _open(source, name, max_pixels) as im:
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
    im = _open(source, name, max_pixels)
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
    im = _open(path, str(path), max_pixels, what="label map")
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


def to_rgb_array(image, max_pixels: int | None = None) -> np.ndarray:
    """Accept a path, bytes, a PIL image or an (H, W[, 3|4]) uint8/uint16 array; return RGB uint8 (H, W, 3)."""
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


# -- atomic writes ---------------------------------------------------------------------------------

STOP_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}  # no later write can succeed either


class WriteFailed(OSError):
    """A file could not be written; `str()` is one line naming the path and the cause. `stop` is true when
    later writes would fail the same way (disk full, quota, read-only file system): a batch stops there."""

    def __init__(self, path, cause: str, code: int | None = None):
        super().__init__(code, f"cannot write {path}: {cause}")
        self.path, self.cause = Path(path), cause
        self.stop = code in STOP_ERRNOS

    def __str__(self) -> str:
        return self.strerror


def _cause(e: BaseException) -> tuple[str, int | None]:
    code = getattr(e, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return os.strerror(code), code
    return (str(e).splitlines() or [type(e).__name__])[0][:200], code if isinstance(code, int) else None


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], size: int | None = None) -> Path:
    """Call write(tmp_path) on a temp file beside `path`, fsync it, check it holds `size` bytes when given,
    then rename it over `path`. The file gets the umask's permissions (not mkstemp's 0600). Any failure
    raises WriteFailed (one line: the path and the cause) and leaves neither a partial file nor a temp file."""
    path = Path(path)
    if path.is_dir():
        raise WriteFailed(path, "a folder is in the way; name a file to write", errno.EISDIR)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        _fsync(tmp)  # a delayed-allocation 'no space' surfaces here, not after the rename
        if size is not None and os.path.getsize(tmp) != size:
            raise WriteFailed(path, f"wrote {os.path.getsize(tmp)} of {size} bytes (is the disk full?)",
                              errno.ENOSPC)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except WriteFailed:
        raise
    except OSError as e:
        raise WriteFailed(path, *_cause(e)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes made in memory (so an encoder that swallows a write error cannot leave a short file)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write, size=len(data))


def remove_stale_temps(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete temp files `atomic_write` left for `name` in `folder` when a process was killed mid-write."""
    removed = []
    for p in Path(folder).glob(f".{name}.*.tmp"):
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def encode_image(img: Image.Image, fmt: str, **kw) -> bytes:
    """`img` encoded as `fmt` in memory; a label PNG keeps its class names as a text chunk (`attnseg`)."""
    if fmt == "PNG" and "pnginfo" not in kw and img.info.get("attnseg"):
        from PIL.PngImagePlugin import PngInfo

        kw["pnginfo"] = PngInfo()
        kw["pnginfo"].add_text("attnseg", img.info["attnseg"])
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def atomic_save(img: Image.Image, path: str | os.PathLike, **kw) -> Path:
    """Encode `img` in memory in the format its suffix names, then write it atomically."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise WriteFailed(path, f"unknown image format {Path(path).suffix!r}")
    return atomic_write_bytes(path, encode_image(img, fmt, **kw))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


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
