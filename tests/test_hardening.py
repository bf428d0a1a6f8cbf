"""The user paths as a new user meets them (issue 13): each numbered item has its reproducer here.

Real-world inputs (EXIF-rotated photos, 16-bit PNGs, bombs, huge photos), outputs that must never
replace inputs or each other, resume without unpickling, and one-line errors for every bad value.
"""
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnseg
from attnseg.cli import main
from attnseg.io import ImageReadError, read_image

ROOT = Path(__file__).resolve().parents[1]
ATTNSEG = [sys.executable, "-m", "attnseg.cli"]


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


# -- 1, 2: outputs never replace inputs or each other -------------------------------------------------

def test_1_output_folder_equal_to_input_folder_is_refused(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "same"
    d.mkdir()
    Image.fromarray(photo()).save(d / "street.png")
    before = (d / "street.png").read_bytes()
    one_line_error(capsys, main(["predict", str(d), "--model", tiny_ckpt, "--out", str(d)]), "input folder")
    assert (d / "street.png").read_bytes() == before and sorted(os.listdir(d)) == ["street.png"]
    Image.fromarray(photo()).save(tmp_path / "x.png")  # a file argument whose output would be itself
    one_line_error(capsys, main(["predict", str(tmp_path / "x.png"), "--model", tiny_ckpt, "--out", str(tmp_path)]),
                   "replace an input")


def test_1_output_folder_inside_the_input_is_not_read_back(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(photo()).save("street.png")
    for _ in range(2):
        assert main(["predict", ".", "--model", tiny_ckpt]) == 0
    assert sorted(os.listdir("outputs")) == ["street.png", "street_overlay.jpg"]


def test_2_same_names_in_two_folders_or_two_extensions_keep_both(tmp_path, tiny_ckpt, capsys):
    for sub, name, seed in (("a", "x.png", 1), ("b", "x.png", 2), ("c", "x.png", 3), ("c", "x.jpg", 4)):
        (tmp_path / sub).mkdir(exist_ok=True)
        Image.fromarray(photo(seed=seed)).save(tmp_path / sub / name)
    out = tmp_path / "dup"
    assert main(["predict", str(tmp_path / "a"), str(tmp_path / "b"), "--model", tiny_ckpt, "--out", str(out)]) == 0
    assert "wrote 2 label map(s)" in capsys.readouterr().out
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a/x.png", "b/x.png"]
    out2 = tmp_path / "ext"
    assert main(["predict", str(tmp_path / "c"), "--model", tiny_ckpt, "--out", str(out2)]) == 0
    assert sorted(p.name for p in out2.glob("*.png")) == ["x.jpg.png", "x.png.png"]
    assert main(["predict", str(tmp_path / "c"), "--model", tiny_ckpt, "--out", str(out2)]) == 0
    assert "replaced 4 existing" in capsys.readouterr().out  # a rerun says what it replaced


# -- 3: resume never unpickles code ---------------------------------------------------------------------

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_3_resume_refuses_a_pickle_payload(tmp_path, capsys):
    work = tmp_path / "run"
    work.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "iter": 1, "rng": {}, "x": Payload(str(marker))},
               work / "latest.pth")
    rc = main(["train", "--resume", "--work-dir", str(work), "--set", "model.name=segformer-tiny",
               "--set", "data.root=" + str(ROOT.parent / "shared" / "data" / "camvid")])
    err = one_line_error(capsys, rc, "refusing to resume")
    assert not marker.exists(), "the payload ran"
    assert "global getattr" in err and "add_safe_globals" not in err


def test_3_checkpoints_hold_only_plain_data(tmp_path):
    from attnseg.engine.checkpoint import atomic_torch_save, load_checkpoint, rng_state, set_rng_state

    np.random.seed(3)
    st = rng_state()
    atomic_torch_save({"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "iter": 5, "rng": st},
                      tmp_path / "latest.pth")
    ck = load_checkpoint(tmp_path / "latest.pth")  # weights_only=True inside
    a = np.random.random(3)
    set_rng_state(ck["rng"])
    assert np.array_equal(np.random.random(3), a)


# -- 4, 5: orientation and bit depth --------------------------------------------------------------------

ORIENT = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
          5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
          8: [Image.Transpose.ROTATE_270]}


@pytest.mark.parametrize("tag", range(1, 9))
def test_4_exif_orientation_is_applied(tmp_path, tag, tiny_ckpt):
    upright = Image.fromarray(photo(30, 50))
    stored = upright
    for t in ORIENT.get(tag, []):  # the inverse of what a viewer applies for the tag
        stored = stored.transpose(t)
    exif = Image.Exif()
    exif[0x0112] = tag
    stored.save(tmp_path / "p.png", exif=exif)
    got = read_image(tmp_path / "p.png")
    assert got.shape == (30, 50, 3) and np.array_equal(got, np.asarray(upright))
    seg = attnseg.Segmenter(attnseg.load_model(tiny_ckpt))
    assert np.array_equal(seg.predict(tmp_path / "p.png"), seg.predict(np.asarray(upright)))


def test_4_phone_jpeg_tag_6_gives_the_displayed_shape(tmp_path, tiny_ckpt):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo(40, 60)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert main(["predict", str(tmp_path / "phone.jpg"), "--model", tiny_ckpt, "--out", str(tmp_path / "o")]) == 0
    assert Image.open(tmp_path / "o" / "phone.png").size == (40, 60)  # displayed: 40 wide, 60 high


def test_5_16_bit_images_match_their_8_bit_twins(tmp_path, tiny_ckpt):
    rgb = photo(20, 30)
    (tmp_path / "g16.png").write_bytes(png_bytes(rgb[..., 0].astype(np.uint16) * 257, 16))
    (tmp_path / "c16.png").write_bytes(png_bytes(rgb.astype(np.uint16) * 257, 16))
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    assert np.array_equal(read_image(tmp_path / "g16.png"), np.repeat(rgb[..., :1], 3, 2))
    assert np.array_equal(read_image(tmp_path / "c16.png"), rgb)
    seg = attnseg.Segmenter(attnseg.load_model(tiny_ckpt))
    assert np.array_equal(seg.predict(tmp_path / "c16.png"), seg.predict(rgb))


def test_5_every_pillow_mode_maps_to_rgb(tmp_path):
    rgb = photo(8, 9)
    cases = {"L": Image.fromarray(rgb).convert("L"), "1": Image.fromarray(rgb).convert("1"),
             "CMYK": Image.fromarray(rgb).convert("CMYK"), "P": Image.fromarray(rgb).convert("P"),
             "I": Image.fromarray(rgb[..., 0].astype(np.int32) * 257, "I"),
             "F": Image.fromarray(rgb[..., 0].astype(np.float32) / 255.0, "F")}
    for mode, im in cases.items():
        b = io.BytesIO()
        im.save(b, format="TIFF" if mode in ("I", "F", "CMYK") else "PNG")
        got = read_image(b.getvalue())
        assert got.dtype == np.uint8 and got.shape == (8, 9, 3), mode
        if mode in ("I", "F"):
            assert np.array_equal(got[..., 0], rgb[..., 0]), mode  # scaled, not clipped
    rgba = np.dstack([rgb, np.full((8, 9), 255, np.uint8)])
    rgba[0, 0, 3] = 0  # a transparent pixel shows the (white) background
    got = read_image(png_of(Image.fromarray(rgba, "RGBA")))
    assert np.array_equal(got[1:], rgb[1:]) and (got[0, 0] == 255).all()
    la = Image.fromarray(np.dstack([rgb[..., 0], np.full((8, 9), 255, np.uint8)]), "LA")
    assert np.array_equal(read_image(png_of(la))[..., 1], rgb[..., 0])
    p = Image.fromarray(rgb).convert("P")
    p.info["transparency"] = int(np.asarray(p)[0, 0])
    assert (read_image(png_of(p, transparency=p.info["transparency"]))[0, 0] == 255).all()


def png_of(im, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, format="PNG", **kw)
    return b.getvalue()


# -- 6: a bomb among good images ------------------------------------------------------------------------

def test_6_decompression_bomb_is_named_and_skipped(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(photo()).save(d / "a_good.png")
    (d / "b_bomb.png").write_bytes(bomb_png())
    Image.fromarray(photo(seed=1)).save(d / "c_good.png")
    rc = main(["predict", str(d), "--model", tiny_ckpt, "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == 1 and "b_bomb.png" in captured.err and "pixels" in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["a_good.png", "c_good.png"]
    with pytest.raises(ImageReadError, match="limit"):
        read_image(bomb_png(2000, 2000), max_pixels=1_000_000)


# -- 7: working size and bounded memory ------------------------------------------------------------------

def test_7_predict_runs_at_the_working_size_and_upsamples_in_bands(tiny_ckpt):
    from attnseg.models.layers import resize
    from attnseg.segmenter import upsample_argmax

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
    assert attnseg.Segmenter(model, size="native").preprocess(rgb)[0].shape[-2:] == (300, 400)


@pytest.mark.slow
@pytest.mark.skipif(not attnseg.list_pretrained(), reason="no shipped model (predict's default)")
def test_7_a_6000x8000_photo_stays_under_2_gb(tmp_path):
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


# -- 8: dynamic ONNX for every architecture ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["sanet-tiny", "allmlp-tiny", "nlnet-tiny"])
def test_8_dynamic_onnx_export(tmp_path, name):
    pytest.importorskip("onnxruntime")
    from attnseg.export import OnnxModel, export_onnx

    torch.manual_seed(0)
    m = attnseg.create_model(name, num_classes=3).eval()
    export_onnx(m, tmp_path / "m.onnx", dynamic=True, example_size=(64, 96))
    o = OnnxModel(tmp_path / "m.onnx", threads=1)
    for shape in [(1, 3, 96, 128), (2, 3, 72, 100)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = m(x)
        assert (o(x) - want).abs().max() <= 1e-4
    assert not list(tmp_path.glob(".*.tmp"))


def test_8_every_architecture_is_exported_by_a_test_or_refused_in_one_line(tmp_path):
    """Families exported dynamically in tests (their tiny variants share every module with the full ones),
    and encoders, which return a feature pyramid, refused with a reason."""
    from attnseg.export import ExportError, export_onnx
    from attnseg.models import MODELS, has_classifier

    tested = {"segformer", "edaformer", "lseg", "sanet", "allmlp", "nlnet"}  # test_tools.py and above
    for name in MODELS:
        fam = name.split("-")[0]
        if has_classifier(name) or fam == "lseg":
            assert fam in tested, f"{name}: no dynamic export test for its family"
    with pytest.raises(ExportError, match="encoder"):
        export_onnx(attnseg.create_model("mit-tiny"), tmp_path / "e.onnx")
    assert not list(tmp_path.iterdir())


# -- 9, 10: one-line errors and nonsense refused -----------------------------------------------------------

def test_9_predict_errors_are_one_line(tmp_path, tiny_ckpt, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(photo()).save(img)
    (tmp_path / "file").write_text("x")
    m = ["--model", tiny_ckpt]
    one_line_error(capsys, main(["predict", str(img), *m, "--out", str(tmp_path / "file")]), "is a file")
    one_line_error(capsys, main(["predict", str(img), *m, "--device", "cuda"]), "CUDA")
    labels = ",".join(f"l{i}" for i in range(257))
    one_line_error(capsys, main(["predict", str(img), *m, "--labels", labels]), "257 labels")
    assert main(["predict", str(img), *m, "--mode", "slide", "--crop", "32", "--out", str(tmp_path / "s")]) == 0
    one_line_error(capsys, main(["predict", str(img), *m, "--mode", "slide", "--crop", "32", "--stride", "40"]),
                   "stride")
    one_line_error(capsys, main(["predict", str(img), "--model", "runs/best.safetensors"]), "not found")


def test_9_fixed_size_onnx_says_so(tmp_path, tiny_ckpt, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["export", "--model", tiny_ckpt, "--out", str(tmp_path / "f.onnx"), "--size", "64x64"]) == 0
    capsys.readouterr()
    img = tmp_path / "a.png"
    Image.fromarray(photo()).save(img)
    # a fixed graph runs every whole image resized to its size (as an int8 graph of that size does), and the
    # label map comes back at the image's size; slide windows must be its size
    assert main(["predict", str(img), "--model", str(tmp_path / "f.onnx"), "--out", str(tmp_path / "o")]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "a.png")).shape == photo().shape[:2]
    capsys.readouterr()
    one_line_error(capsys, main(["predict", str(img), "--model", str(tmp_path / "f.onnx"), "--mode", "slide",
                                 "--crop", "32", "--out", str(tmp_path / "o")]), "fixed-size")
    assert main(["predict", str(img), "--model", str(tmp_path / "f.onnx"), "--mode", "slide", "--crop", "64",
                 "--out", str(tmp_path / "o")]) == 0


def test_9_export_and_eval_out_naming_a_folder(tmp_path, tiny_ckpt, capsys, camvid_root):
    one_line_error(capsys, main(["export", "--model", tiny_ckpt, "--out", str(tmp_path)]), "is a folder")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    m3 = attnseg.save_model(attnseg.create_model("segformer-tiny", num_classes=11), tmp_path / "m11.safetensors")
    one_line_error(capsys, main(["eval", "--model", str(m3), "--dataset", "camvid", "--data-root", str(camvid_root),
                                 "--split", "test", "--out", str(tmp_path), "--plot", str(tmp_path / "p")]),
                   "is a folder")
    assert not (tmp_path / "p").exists()  # refused before anything ran or was written


BAD_FLAGS = [  # (command, flag, bad values): each must exit 2 with one line and write nothing
    ("predict", "--size", ["-5", "0", "nan", "inf", "1e9", "abc"]),
    ("predict", "--alpha", ["5", "-0.1", "nan", "inf"]),
    ("predict", "--crop", ["0", "-3", "1e9", "nan"]),
    ("predict", "--threads", ["0", "-1", "nan"]),
    ("predict", "--max-pixels", ["0", "-1", "nan", "inf"]),
    ("eval", "--scales", ["1e9", "inf", "nan", "0", "-1"]),
    ("eval", "--limit", ["0", "-2", "nan"]),
    ("benchmark", "--batch", ["0", "-1", "1e9"]),
    ("benchmark", "--iters", ["0", "inf"]),
    ("export", "--num-classes", ["0", "-1", "nan"]),
]


@pytest.mark.parametrize("cmd,flag,values", BAD_FLAGS)
def test_10_bad_numeric_flags_exit_2_in_one_line(tmp_path, cmd, flag, values, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(photo()).save(tmp_path / "a.png")
    base = {"predict": ["predict", "a.png", "--model", "segformer-tiny"],
            "eval": ["eval", "--model", "m", "--dataset", "camvid", "--data-root", "."],
            "benchmark": ["benchmark", "--model", "segformer-tiny"],
            "export": ["export", "--model", "segformer-tiny", "--out", "m.onnx"]}[cmd]
    for v in values:
        with pytest.raises(SystemExit) as e:
            main([*base, f"{flag}={v}"])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and flag in err, (v, err)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


def test_10_empty_labels_are_refused(tmp_path, tiny_ckpt, capsys):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    one_line_error(capsys, main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--labels", ""]),
                   "--labels")


@pytest.mark.parametrize("setting,needle", [
    ("optim.lr=-0.1", "optim.lr"), ("train.log_interval=0", "train.log_interval"),
    ("train.val_interval=0", "train.val_interval"), ("train.ckpt_interval=0", "train.ckpt_interval"),
    ("train.grad_accum=0", "train.grad_accum"), ("data.batch_size=0", "data.batch_size"),
    ("data.crop=[0,0]", "data.crop"), ("model.name=segformer-b9", "model.name"), ("train.iters=-5", "train.iters"),
    ("optim.lr=.nan", "optim.lr"), ("eval.scales=[1e9]", "eval.scales")])
def test_10_bad_config_values_are_one_line_and_write_nothing(tmp_path, setting, needle, capsys):
    work = tmp_path / "w"
    one_line_error(capsys, main(["train", "--work-dir", str(work), "--set", setting]), needle)
    assert not work.exists()


# -- 11: rough edges ---------------------------------------------------------------------------------------

def tiny_train(camvid_root, work, *extra):
    sets = {"model.name": "segformer-tiny", "data.root": str(camvid_root), "data.crop": "[64, 64]",
            "data.scale": "[120, 90]", "data.batch_size": 2, "data.workers": 0, "data.val_split": "''",
            "data.limit": 4, "train.iters": 2, "train.log_interval": 1, "train.ckpt_interval": 1,
            "train.tensorboard": False, "optim.warmup_iters": 1}
    return ["train", "--work-dir", str(work), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")], *extra]


def test_11_train_refuses_an_existing_run_and_cleans_stale_temps(tmp_path, camvid_root, capsys):
    work = tmp_path / "w"
    old = os.umask(0o022)
    try:
        assert main(tiny_train(camvid_root, work)) == 0
        assert oct((work / "latest.pth").stat().st_mode & 0o777) == "0o644"  # the umask's, not mkstemp's 0600
        assert oct((work / "final.safetensors").stat().st_mode & 0o777) == "0o644"
        capsys.readouterr()
        one_line_error(capsys, main(tiny_train(camvid_root, work)), "already holds a run")
        (work / ".latest.pth.abc123.tmp").write_bytes(b"partial")
        rows = (work / "metrics.csv").read_text().count("\n")
        assert main(tiny_train(camvid_root, work, "--overwrite")) == 0
        assert (work / "metrics.csv").read_text().count("\n") == rows  # replaced, not appended
        assert not list(work.glob(".*.tmp"))
        capsys.readouterr()
        one_line_error(capsys, main(tiny_train(camvid_root, work, "--resume", "--set", "model.name=sanet-tiny")),
                       "segformer-tiny run")
    finally:
        os.umask(old)


def test_11_prediction_outputs_get_the_umask_permissions(tmp_path, tiny_ckpt):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    old = os.umask(0o022)
    try:
        assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--out", str(tmp_path / "o")]) == 0
    finally:
        os.umask(old)
    for p in (tmp_path / "o").iterdir():
        assert p.stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_11_onnx_backend_leaves_no_temp_folder(tmp_path, tiny_ckpt, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    Image.fromarray(photo()).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--backend", "onnx", "--out",
                 str(tmp_path / "o")]) == 0
    assert list((tmp_path / "tmp").iterdir()) == []


def test_11_palette_for_many_labels_is_distinct(tmp_path):
    from attnseg.io import extend_palette, label_png

    base = [[128, 128, 128]] + [[i, 0, 0] for i in range(10)]
    pal = extend_palette(base, 40)
    assert len(pal) == 40 and pal[:11] == base and len({tuple(c) for c in pal}) == 40
    im = label_png(np.arange(40).reshape(5, 8), pal)
    assert len({tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3).tolist()}) == 40
    with pytest.raises(ValueError, match="256"):
        extend_palette(base, 257)


def test_11_models_lists_without_building_or_importing_torch():
    r = subprocess.run([*ATTNSEG, "models"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "lseg-vitl16" in r.stdout and "342.83" in r.stdout
    assert "Loading weights" not in r.stderr and "%|" not in r.stderr
    code = "import sys; from attnseg.cli import main; main(['models']); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.stdout.strip().endswith("False")  # the table is JSON: nothing heavy is imported (0.2 s here)


def test_11_recorded_parameter_counts_match_the_models():
    from attnseg.models import MODELS, count_parameters, has_classifier, recorded_parameters

    for name in MODELS:
        assert recorded_parameters(name, 150) == count_parameters(name, 150), name
        if has_classifier(name):
            assert recorded_parameters(name, 11) == count_parameters(name, 11), name


@pytest.mark.slow
def test_11_onnx_export_prints_no_torchvision_noise(tmp_path):
    pytest.importorskip("onnxruntime")
    r = subprocess.run([*ATTNSEG, "export", "--model", "segformer-tiny", "--num-classes", "3", "--out",
                        str(tmp_path / "m.onnx"), "--size", "64x64"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "torchvision" not in r.stderr + r.stdout


# -- kill -9 around checkpoint writes ----------------------------------------------------------------------

WRITER = """
import sys, torch
from attnseg.engine.checkpoint import atomic_torch_save
i = 0
while True:
    i += 1
    atomic_torch_save({"model": {"w": torch.full((300_000,), float(i))}, "optimizer": {}, "scheduler": {},
                       "iter": i, "rng": {}}, sys.argv[1])
"""


@pytest.mark.slow
def test_kill_9_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    from attnseg.engine.checkpoint import load_checkpoint, remove_stale_checkpoint_temps

    path = tmp_path / "latest.pth"
    rng = np.random.default_rng(0)
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        deadline = time.monotonic() + 120  # a loaded machine may take long to import torch: wait for a first file
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5 + rng.random())
        p.send_signal(signal.SIGKILL)
        p.wait()
        ck = load_checkpoint(path)
        assert ck["iter"] >= 1 and torch.equal(ck["model"]["w"], torch.full((300_000,), float(ck["iter"])))
        remove_stale_checkpoint_temps(tmp_path)
        assert sorted(os.listdir(tmp_path)) == ["latest.pth"]


def test_bf16_autocast_in_predict_and_eval(tmp_path, tiny_ckpt, capsys):
    Image.fromarray(photo(48, 64)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--dtype", "bf16", "--out",
                 str(tmp_path / "b")]) == 0
    assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--out", str(tmp_path / "f")]) == 0
    a = np.asarray(Image.open(tmp_path / "b" / "a.png"))
    b = np.asarray(Image.open(tmp_path / "f" / "a.png"))
    assert a.shape == b.shape and (a == b).mean() > 0.8  # bf16 rounding moves few argmaxes
    pytest.importorskip("onnxruntime")
    assert main(["export", "--model", tiny_ckpt, "--out", str(tmp_path / "m.onnx"), "--dynamic"]) == 0
    capsys.readouterr()
    one_line_error(capsys, main(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "m.onnx"), "--dtype",
                                 "bf16", "--out", str(tmp_path / "o")]), "bf16")
