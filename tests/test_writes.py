"""Write failures are one line and leave only complete files: a full disk (a small tmpfs, mounted in a private
mount namespace), a folder where an output file goes, export and video on a full disk, and the atomic writer
itself (every format encoded in memory, size checked, fsynced, then renamed)."""
import errno
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnseg.cli import main
from attnseg.io import WriteFailed, atomic_save, atomic_write, atomic_write_bytes
from helpers import on_small_disk

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("camvid_test_*.png"))


def assert_complete(folder: Path) -> list[Path]:
    """Every file below folder decodes whole (a truncated PNG or JPEG raises) and no temp file is left."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")], files
    for p in files:
        if p.suffix in (".png", ".jpg"):
            with Image.open(p) as im:
                im.load()
    return files


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_predict_on_a_full_disk_stops_with_one_line_and_complete_files(tmp_path):
    out = tmp_path / "disk" / "out"
    r = on_small_disk(tmp_path, 120, [sys.executable, "-m", "attnseg.cli", "predict", *map(str, EXAMPLES),
                                      "--model", "sanet-effnet-lite0-camvid", "--out", str(out)])
    line = one_line(r.stderr)
    assert r.returncode == 1 and "No space left on device" in line and "stopped" in line, r.stderr
    files = assert_complete(tmp_path / "after" / "out")
    assert 0 < len(files) < 2 * len(EXAMPLES)  # the first image fit, the rest were not attempted


@pytest.mark.slow
def test_export_and_video_on_a_full_disk_are_one_line(tmp_path):
    pytest.importorskip("onnx")
    r = on_small_disk(tmp_path, 64, [sys.executable, "-m", "attnseg.cli", "export", "--model", "segformer-tiny",
                                     "--num-classes", "3", "--out", str(tmp_path / "disk" / "m.onnx")])
    assert r.returncode == 2 and "No space left on device" in one_line(r.stderr)
    assert assert_complete(tmp_path / "after") == []

    av = pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(30):
            for pkt in s.encode(av.VideoFrame.from_ndarray((rng.random((240, 320, 3)) * 255).astype(np.uint8),
                                                           format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    sub = tmp_path / "v"
    sub.mkdir()
    r = on_small_disk(sub, 48, [sys.executable, "-m", "attnseg.cli", "predict", str(clip), "--model",
                                "sanet-effnet-lite0-camvid", "--out", str(sub / "disk" / "out"), "--save-masks"])
    assert r.returncode == 1 and "No space left on device" in one_line(r.stderr), r.stderr
    assert_complete(sub / "after")
    assert not list((sub / "after").rglob("*.mp4"))  # the video was not finished: not there at all


def test_a_folder_in_the_way_fails_that_image_only(tmp_path, tiny_ckpt, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 60, 3), 40 * i, np.uint8)).save(src / f"p{i}.png")
    (tmp_path / "out" / "p1_overlay.jpg").mkdir(parents=True)  # a folder where p1's overlay goes
    rc = main(["predict", str(src), "--model", tiny_ckpt, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1 and "p1_overlay.jpg" in lines[0] and "folder" in lines[0], err
    assert (tmp_path / "out" / "p0.png").is_file() and (tmp_path / "out" / "p2_overlay.jpg").is_file()
    assert_complete(tmp_path / "out")


def test_atomic_writer_checks_what_reached_the_disk(tmp_path, monkeypatch):
    target = tmp_path / "a.jpg"
    img = Image.fromarray(np.zeros((64, 64, 3), np.uint8))

    def short_write(tmp):  # an encoder that swallowed ENOSPC: fewer bytes than it made
        Path(tmp).write_bytes(b"\xff\xd8\xff")

    with pytest.raises(WriteFailed, match="wrote 3 of 10 bytes"):
        atomic_write(target, short_write, size=10)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    atomic_save(img, target, quality=90)
    with Image.open(target) as im:
        im.load()

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteFailed) as e:
        atomic_write(tmp_path / "b.png", full)
    assert e.value.stop and str(e.value) == f"cannot write {tmp_path / 'b.png'}: No space left on device"
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(WriteFailed, match="folder is in the way") as e:
        atomic_write_bytes(tmp_path / "dir.png", b"x")
    assert not e.value.stop


def test_out_as_a_dangling_symlink_is_named(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    rc = main(["predict", str(EXAMPLES[0]), "--model", tiny_ckpt, "--out", str(tmp_path / "link")])
    err = capsys.readouterr().err
    assert rc == 2 and "symbolic link" in err and "does not exist" in err and "File exists" not in err
