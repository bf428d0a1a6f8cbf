"""Inputs the tests build by hand (PNG bytes, decompression bombs, random photos) and the one-line-error check."""
import struct
import zlib

import numpy as np


def png_bytes(a: np.ndarray, bits: int = 8) -> bytes:
    """A PNG written by hand (grey or RGB, 8 or 16 bits), so that 16-bit RGB can be made at all."""
    h, w = a.shape[:2]
    colour = 2 if a.ndim == 3 else 0
    dt = ">u2" if bits == 16 else "u1"
    raw = b"".join(b"\x00" + a[y].astype(dt).tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def bomb_png(w=30000, h=30000) -> bytes:
    """A header that promises w x h pixels (and a few bytes of data): refused before decoding."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def photo(h=40, w=60, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc, tries: int = 480) -> None:
    """Poll `url` until it answers; fail with the server's stderr if its process `proc` exits first."""
    import time
    import urllib.request

    import pytest

    for _ in range(tries):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if proc.poll() is not None:
                pytest.fail("server exited: " + proc.stderr.read()[-2000:])
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer")


def _unshare() -> list[str]:
    """A private mount namespace (as root, or as a user through a user namespace) where a tmpfs can be mounted."""
    import os
    import shutil

    import pytest

    if not shutil.which("unshare"):
        pytest.fail("util-linux's unshare is needed to mount a small tmpfs for the disk-full tests")
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]


def on_small_disk(tmp_path, kb: int, cmd: list[str]):
    """Run cmd with tmp_path/disk a tmpfs of `kb` KB; its files are copied to tmp_path/after before unmounting."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    disk, after = tmp_path / "disk", tmp_path / "after"
    disk.mkdir()
    quoted = " ".join(f"'{c}'" for c in cmd)
    script = (f"mount -t tmpfs -o size={kb}k tmpfs '{disk}' || exit 97\n{quoted}\nrc=$?\n"
              f"cp -a '{disk}/.' '{after}/' 2>/dev/null; exit $rc")
    after.mkdir()
    r = subprocess.run([*_unshare(), "sh", "-c", script], capture_output=True, text=True, cwd=root, timeout=600)
    assert r.returncode != 97, f"cannot mount a tmpfs here: {r.stderr}"
    return r
