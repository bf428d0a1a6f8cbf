"""The one image reader and the one writer (attnseg.io): EXIF orientation, bit depths and modes, bombs, permissions, palettes."""
import io
import os

import numpy as np
import pytest
from PIL import Image

import attnseg
from attnseg.cli import main
from attnseg.io import ImageReadError, read_image
from tests.helpers import bomb_png, photo, png_bytes



def png_of(im, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, format="PNG", **kw)
    return b.getvalue()


ORIENT = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
          5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
          8: [Image.Transpose.ROTATE_270]}


def test_palette_for_many_labels_is_distinct(tmp_path):
    from attnseg.io import extend_palette, label_png

    base = [[128, 128, 128]] + [[i, 0, 0] for i in range(10)]
    pal = extend_palette(base, 40)
    assert len(pal) == 40 and pal[:11] == base and len({tuple(c) for c in pal}) == 40
    im = label_png(np.arange(40).reshape(5, 8), pal)
    assert len({tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3).tolist()}) == 40
    with pytest.raises(ValueError, match="256"):
        extend_palette(base, 257)


@pytest.mark.parametrize("tag", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, tag, tiny_ckpt):
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


def test_phone_jpeg_tag_6_gives_the_displayed_shape(tmp_path, tiny_ckpt):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo(40, 60)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert main(["predict", str(tmp_path / "phone.jpg"), "--model", tiny_ckpt, "--backend", "eager", "--out",
                 str(tmp_path / "o")]) == 0
    assert Image.open(tmp_path / "o" / "phone.png").size == (40, 60)  # displayed: 40 wide, 60 high


def test_16_bit_images_match_their_8_bit_twins(tmp_path, tiny_ckpt):
    rgb = photo(20, 30)
    (tmp_path / "g16.png").write_bytes(png_bytes(rgb[..., 0].astype(np.uint16) * 257, 16))
    (tmp_path / "c16.png").write_bytes(png_bytes(rgb.astype(np.uint16) * 257, 16))
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    assert np.array_equal(read_image(tmp_path / "g16.png"), np.repeat(rgb[..., :1], 3, 2))
    assert np.array_equal(read_image(tmp_path / "c16.png"), rgb)
    seg = attnseg.Segmenter(attnseg.load_model(tiny_ckpt))
    assert np.array_equal(seg.predict(tmp_path / "c16.png"), seg.predict(rgb))


def test_every_pillow_mode_maps_to_rgb(tmp_path):
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


def test_decompression_bomb_is_named_and_skipped(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(photo()).save(d / "a_good.png")
    (d / "b_bomb.png").write_bytes(bomb_png())
    Image.fromarray(photo(seed=1)).save(d / "c_good.png")
    rc = main(["predict", str(d), "--model", tiny_ckpt, "--backend", "eager", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == 1 and "b_bomb.png" in captured.err and "pixels" in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["a_good.png", "c_good.png"]
    with pytest.raises(ImageReadError, match="limit"):
        read_image(bomb_png(2000, 2000), max_pixels=1_000_000)


def test_prediction_outputs_get_the_umask_permissions(tmp_path, tiny_ckpt):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    old = os.umask(0o022)
    try:
        assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--backend", "eager", "--out",
                     str(tmp_path / "o")]) == 0
    finally:
        os.umask(old)
    for p in (tmp_path / "o").iterdir():
        assert p.stat().st_mode & 0o777 == 0o644


def test_transparency_is_composited_exactly_in_bands():
    """Over white, c * a + 255 * (1 - a) rounded, for every alpha and colour value, computed in bands of rows."""
    from attnseg.io.images import _over_white

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (37, 256, 4), dtype=np.uint8)
    rgba[0, :, 3] = np.arange(256)  # every alpha, and every colour value against it
    rgba[0, :, 0] = np.arange(256)[::-1]
    im = Image.fromarray(rgba, "RGBA")
    a = rgba[..., 3:].astype(np.float64) / 255.0
    want = np.round(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    assert np.array_equal(_over_white(im, band_pixels=256 * 5), want)
    assert np.array_equal(_over_white(im), want)
    assert np.array_equal(read_image(png_of(im)), want)


@pytest.mark.slow
def test_a_large_rgba_image_decodes_in_bounded_memory(tmp_path):
    """A 40 MP RGBA PNG under a 1.2 GB address-space cap: the decoded image and the RGB result fit, as they
    do for the same image in RGB (compositing it in float32 over the whole image needed ~45 bytes a pixel)."""
    import subprocess
    import sys

    h, w = 5000, 8000
    ramp = np.linspace(0, 255, w, dtype=np.float32).astype(np.uint8)
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = ramp, ramp[::-1], 90
    rgba[..., 3] = np.linspace(0, 255, h, dtype=np.float32).astype(np.uint8)[:, None]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "big.png", compress_level=1)
    del rgba
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1200 << 20, 1200 << 20))\n"
            "from attnseg.io import read_image\n"
            f"rgb = read_image({str(tmp_path / 'big.png')!r}, max_pixels=50_000_000)\n"
            "print(rgb.shape, int(rgb[2500, 4000, 0]))\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    # alpha 128 at row 2500 of 5000 (127.5 -> 127 after the float32 -> uint8 cast), red 127 at column 4000
    assert r.stdout.split("\n")[0] == "(5000, 8000, 3) 191", r.stdout
