"""The one writer: every file attnseg writes is encoded in memory where it can be, written to a temp file in the
target folder, fsynced, its size checked, then renamed, with the umask's permissions; a failure raises
`WriteFailed`, one line naming the path and the cause, and leaves neither a partial file nor a temp file."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from pathlib import Path
from typing import Callable

from PIL import Image

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
