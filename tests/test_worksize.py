"""The working size is bounded: what resizing makes of an image (not only the image itself) has a limit, so a
20000x12 panorama or a 40000x1 line is refused in one line (or shrunk to fit) instead of growing to 540x900000.

The end-to-end cases run `attnseg predict` and `attnseg serve` as children under a 6 GB address-space cap, so
a regression fails the test instead of taking the machine down; their peak RSS is read with wait4."""
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnseg
from attnseg.inference.modes import InferenceConfig, infer
from attnseg.worksize import MAX_WORK_PIXELS, MAX_WORK_SIDE, MIN_WORK_SIDE, WorkLimit, WorkSizeError
from tests.helpers import photo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((ROOT / "examples").glob("camvid_test_*.png"))[0]
CAP = 6 * 2**30
PEAK = 3 * 2**30


def strip(path: Path, w: int, h: int) -> Path:
    Image.fromarray((np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def capped(cap: int = CAP):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return limit


class _Popen(subprocess.Popen):
    """Popen whose wait records the child's own peak RSS (os.wait4), not the max over every child."""

    def _try_wait(self, wait_flags):
        try:
            pid, sts, ru = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            pid, sts = self.pid, 0
        else:
            if pid == self.pid:
                self._peak = ru.ru_maxrss * 1024
        return pid, sts



def run_child(cmd: list[str], timeout: float = 300) -> tuple[int, str, str, int]:
    p = _Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=capped(), cwd=ROOT)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err, getattr(p, "_peak", 0)


# -- the rule ------------------------------------------------------------------------------------------------

def test_fit_keeps_ordinary_sizes_and_bounds_the_rest():
    lim = WorkLimit()
    assert lim.fit(540, 720) == (540, 720)  # untouched below every bound
    h, w = lim.fit(540, 10800)  # a 20:1 panorama: long side capped, ratio kept
    assert w == MAX_WORK_SIDE and h == int(540 * MAX_WORK_SIDE / 10800)
    h, w = lim.fit(3000, 4000)  # native 12 MP: shrunk to the pixel bound
    assert h * w <= MAX_WORK_PIXELS and abs(w / h - 4 / 3) < 0.01
    assert lim.fit(8, 8) == (MIN_WORK_SIDE, MIN_WORK_SIDE)  # grown to the short-side bound
    for h, w in ((540, 900_000), (1, 40_000), (12, 20_000)):
        with pytest.raises(WorkSizeError, match=r"aspect ratio \d+:1 is beyond the 256:1"):
            lim.fit(h, w)
    assert WorkLimit(max_pixels=10_000).fit(100, 200)[0] * WorkLimit(max_pixels=10_000).fit(100, 200)[1] <= 10_000


def test_segmenter_and_infer_respect_the_limit():
    torch.manual_seed(0)
    model = attnseg.create_model("segformer-tiny", num_classes=3)
    model.meta = {"short_side": 540}
    seg = attnseg.Segmenter(model)
    with pytest.raises(WorkSizeError, match="image of 20000x12"):
        seg.preprocess(np.zeros((12, 20000, 3), np.uint8))
    x, size = seg.preprocess(np.zeros((300, 6000, 3), np.uint8))  # 20:1 runs, capped at the long side
    assert size == (300, 6000) and x.shape[-1] == MAX_WORK_SIDE
    small = attnseg.Segmenter(model, inference=InferenceConfig(work=WorkLimit(max_pixels=64 * 64)))
    x, _ = small.preprocess(np.zeros((300, 400, 3), np.uint8))
    assert x.shape[-2] * x.shape[-1] <= 64 * 64
    assert small.predict(np.zeros((300, 400, 3), np.uint8)).shape == (300, 400)  # back at the image's size
    with pytest.raises(WorkSizeError, match="--max-work-pixels"):  # eval's path: inputs made elsewhere
        infer(model, torch.zeros(1, 3, 64, 128), InferenceConfig(work=WorkLimit(max_pixels=64 * 64)))


# -- end to end, under a cap -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_panorama_and_line_through_predict_under_a_cap(tmp_path):
    pano, line = strip(tmp_path / "pano.png", 20000, 12), strip(tmp_path / "line.png", 40000, 1)
    wide = strip(tmp_path / "wide.png", 6000, 300)
    assert pano.stat().st_size > 700_000  # the 720 KB panorama of the report
    rc, out, err, peak = run_child([sys.executable, "-m", "attnseg.cli", "predict", str(pano), str(line), str(wide),
                                    "--out", str(tmp_path / "out")])
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert sum("aspect ratio" in ln for ln in lines) == 2 and all(len(ln) < 400 for ln in lines), err
    assert rc == 1 and "2 failed" in out, out
    label = np.asarray(Image.open(tmp_path / "out" / "wide.png"))
    assert label.shape == (300, 6000)  # the 20:1 one ran, at a capped working size
    assert "runs at 8192x409" in err
    assert 0 < peak < PEAK, f"peak RSS {peak / 2**30:.2f} GB"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, path: Path, timeout: float = 120) -> tuple[int, dict | bytes]:
    boundary = "attnsegboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nallmlp-effnet-lite2-camvid\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/segment", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_panorama_and_line_through_the_server_under_a_cap(tmp_path):
    pytest.importorskip("fastapi")
    pano, line = strip(tmp_path / "pano.png", 20000, 12), strip(tmp_path / "line.png", 40000, 1)
    port = _free_port()
    p = _Popen([sys.executable, "-m", "attnseg.cli", "serve", "--model", "allmlp-effnet-lite2-camvid", "--port",
                str(port), "--threads", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
               preexec_fn=capped(), cwd=ROOT)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert p.poll() is None, p.stderr.read()
                time.sleep(0.2)
        for f in (pano, line):
            status, body = _post(port, f)
            assert status == 413 and "aspect ratio" in body["error"], (status, body)
        status, png = _post(port, EXAMPLE)  # alive, and serving the next request
        assert status == 200
        assert np.asarray(Image.open(__import__("io").BytesIO(png))).shape == (360, 480)
        hwm = int(next(ln.split()[1] for ln in Path(f"/proc/{p.pid}/status").read_text().splitlines()
                       if ln.startswith("VmHWM:"))) * 1024
        assert hwm < PEAK, f"server peak RSS {hwm / 2**30:.2f} GB"
    finally:
        p.terminate()
        p.communicate(timeout=30)


def test_explain_on_a_panorama_is_one_line(tmp_path):
    pytest.importorskip("matplotlib")
    pano = strip(tmp_path / "pano.png", 20000, 12)
    rc, _, err, peak = run_child([sys.executable, "-m", "attnseg.cli", "explain", str(pano), "--model",
                                  "sanet-effnet-lite0-camvid", "--pixel", "5,100", "--out", str(tmp_path / "ex")])
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "aspect ratio 1667:1" in err and peak < PEAK


def test_predict_runs_at_the_working_size_and_upsamples_in_bands(tiny_ckpt):
    from attnseg.models.layers import resize
    from attnseg.inference.segmenter import upsample_argmax

    model = attnseg.load_model(tiny_ckpt)
    assert model.meta["short_side"] == 48
    rgb = photo(300, 400)
    seg = attnseg.Segmenter(model)
    x, hw = seg.preprocess(rgb)
    assert tuple(x.shape[-2:]) == (48, 64) and hw == (300, 400)
    small = np.asarray(Image.fromarray(rgb).resize((64, 48), Image.BILINEAR))
    assert torch.equal(seg.raw_scores(rgb)[0], seg.raw_scores(small)[0])  # = the photo at the working size
    s = torch.randn(5, 12, 17)
    full = resize(s[None], (301, 409))[0]
    banded = upsample_argmax(s, (301, 409), band_pixels=5 * 409 * 7)  # 7 rows a band
    assert (banded == full.argmax(0).numpy()).mean() > 0.999  # equal but for float ties
    whole = upsample_argmax(s, (301, 409))  # small enough to resize whole, by the two taps (video frames)
    assert (whole == banded).mean() > 0.999 and (whole == full.argmax(0).numpy()).mean() > 0.999
    assert np.array_equal(upsample_argmax(s, (301, 409), via=(301, 409)), whole)  # through the size itself
    assert attnseg.Segmenter(model, size="native").preprocess(rgb)[0].shape[-2:] == (300, 400)


@pytest.mark.slow
@pytest.mark.skipif(not attnseg.list_pretrained(), reason="no shipped model (predict's default)")
def test_a_6000x8000_photo_stays_under_2_gb(tmp_path):
    small = Image.fromarray(photo(60, 80))
    small.resize((8000, 6000), Image.BILINEAR).save(tmp_path / "big.jpg", quality=85)
    # the peak of this process's own memory (VmHWM): ru_maxrss would also count the pytest parent's peak,
    # which Linux carries across fork and exec (a suite that loaded MiniLM first read 3.3 GB here)
    code = ("import re, sys; from attnseg.cli import main; rc = main(sys.argv[1:]); "
            "print('RSS_KB', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "predict", str(tmp_path / "big.jpg"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rss_kb = int(r.stdout.split("RSS_KB")[1].split()[0])
    assert rss_kb < 2 * 1024 * 1024, f"peak RSS {rss_kb / 1024:.0f} MB"
    assert Image.open(tmp_path / "o" / "big.png").size == (8000, 6000)
