"""Property-based tests (hypothesis): the image reader over random sizes, modes, bit depths and EXIF
orientations, and the joint transforms (the mask stays aligned with the image, nearest interpolation
never invents a label, padding uses the ignore index)."""
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from attnseg.data.transforms import EvalTransform, TrainTransform, pad_pair
from attnseg.io import read_image

IGNORE = 255
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_270}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(1, 40), w=st.integers(1, 40), tag=st.integers(1, 8), seed=st.integers(0, 2**16),
       mode=st.sampled_from(["RGB", "L", "I;16", "RGBA", "P"]))
def test_reader_gives_the_displayed_rgb_for_any_mode_size_and_orientation(h, w, tag, seed, mode):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if mode == "RGB":
        im, want = Image.fromarray(rgb), rgb
    elif mode == "L":
        im, want = Image.fromarray(rgb[..., 0]), np.repeat(rgb[..., :1], 3, 2)
    elif mode == "I;16":
        im, want = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), np.repeat(rgb[..., :1], 3, 2)
    elif mode == "RGBA":
        im, want = Image.fromarray(np.dstack([rgb, np.full((h, w), 255, np.uint8)]), "RGBA"), rgb
    else:
        im = Image.fromarray(rgb).convert("P")
        want = np.asarray(im.convert("RGB"))
    stored = im.transpose(TRANSPOSE[tag]) if tag in TRANSPOSE else im
    exif = Image.Exif()
    exif[0x0112] = tag
    b = io.BytesIO()
    stored.save(b, format="PNG", exif=exif)
    got = read_image(b.getvalue())
    assert got.dtype == np.uint8 and got.shape == (h, w, 3)
    assert np.array_equal(got, want)


def coded(h, w, k, seed):
    """A label map of k classes in blocks and an image whose colour encodes the label."""
    rng = np.random.default_rng(seed)
    bh, bw = max(h // 4, 1), max(w // 4, 1)
    blocks = rng.integers(0, k, (h // bh + 1, w // bw + 1))
    lab = np.kron(blocks, np.ones((bh, bw), np.int64))[:h, :w]
    colours = (np.arange(k)[:, None] * np.array([37, 91, 53]) % 251 + 1).astype(np.uint8)
    return colours[lab], lab, colours


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 80), w=st.integers(8, 80), ch=st.integers(4, 96), cw=st.integers(4, 96),
       k=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_crop_flip_pad_keep_the_mask_aligned_and_pad_with_ignore(h, w, ch, cw, k, seed):
    img, lab, colours = coded(h, w, k, seed)
    tf = TrainTransform(crop=(ch, cw), scale=(max(h, w), min(h, w)), ratio_range=(1.0, 1.0), cat_max_ratio=1.0,
                        photometric=False, ignore_index=IGNORE)
    # scale fits (h, w) exactly, so no resize: every step is exact and the colour must match the label
    out_img, out_lab = tf(img, lab, np.random.default_rng(seed))
    assert out_img.shape[:2] == out_lab.shape == (max(min(h, ch), ch), max(min(w, cw), cw))
    valid = out_lab != IGNORE
    assert np.array_equal(out_img[valid], colours[out_lab[valid]])
    assert (out_img[~valid] == 0).all()  # padded pixels: zeros in the image, the ignore index in the mask


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 60), w=st.integers(8, 60), k=st.integers(1, 6), seed=st.integers(0, 2**16),
       r=st.floats(0.3, 2.5))
def test_resize_never_invents_a_label(h, w, k, seed, r):
    img, lab, _ = coded(h, w, k, seed)
    tf = TrainTransform(crop=(16, 16), scale=(max(h, w), min(h, w)), ratio_range=(r, r), photometric=True,
                        ignore_index=IGNORE)
    out_img, out_lab = tf(img, lab, np.random.default_rng(seed))
    assert set(np.unique(out_lab)) <= set(np.unique(lab)) | {IGNORE}
    assert out_img.shape[:2] == out_lab.shape and out_img.dtype == np.uint8


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), ch=st.integers(1, 40), cw=st.integers(1, 40))
def test_pad_pair_uses_the_ignore_index(h, w, ch, cw):
    img = np.full((h, w, 3), 7, np.uint8)
    lab = np.zeros((h, w), np.int64)
    pi, pl = pad_pair(img, lab, (ch, cw), IGNORE)
    assert pl.shape == (max(h, ch), max(w, cw)) and (pl[:h, :w] == 0).all() and (pl[h:] == IGNORE).all()
    assert (pl[:, w:] == IGNORE).all() and (pi[h:] == 0).all() and (pi[:h, :w] == 7).all()


@pytest.mark.parametrize("scale", [None, (64, 32)])
def test_eval_transform_keeps_the_label_at_its_size(scale):
    img, lab, _ = coded(45, 70, 3, 0)
    out_img, out_lab = EvalTransform(scale)(img, lab)
    assert out_lab is lab and (out_img.shape[:2] == (45, 70) if scale is None else max(out_img.shape[:2]) <= 64)
