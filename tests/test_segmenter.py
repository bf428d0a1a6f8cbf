"""`Segmenter.segments`: the shape transformers' image-segmentation pipeline returns, for every kind of input a
user has (path, URL, bytes, PIL, numpy, a list), equal to `predict`'s label map. Labels from low-resolution
scores (`upsample_argmax`) against F.interpolate's full resize, and the normalised input against the formula."""
import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import attnseg
from attnseg.inference.segmenter import _labels_by_taps, resize_matrix, resize_taps, upsample_argmax
from attnseg.io import ImageReadError
from attnseg.models.layers import interp_matrix

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((ROOT / "examples").glob("camvid_test_*.png"))[0]


@pytest.fixture(scope="module")
def seg():
    return attnseg.Segmenter(attnseg.load_model("sanet-effnet-lite0-camvid"))


@pytest.fixture
def url():
    """The examples folder served on 127.0.0.1 by the standard library's HTTP server."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(EXAMPLE.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_segments_are_the_pipelines_shape_for_every_input(seg, url):
    label = seg.predict(str(EXAMPLE))
    rgb = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    first = seg.segments(str(EXAMPLE))
    assert [set(e) for e in first] == [{"label", "score", "mask"}] * len(first)
    masks = np.stack([np.asarray(e["mask"]) == 255 for e in first])
    assert all(e["mask"].mode == "L" and e["mask"].size == (480, 360) for e in first)
    assert (masks.sum(0) == 1).all()  # disjoint and covering
    for e, m in zip(first, masks):
        assert np.array_equal(m, label == seg.class_names.index(e["label"]))
        assert 0 < e["score"] <= 1
    for other in (url + EXAMPLE.name, EXAMPLE.read_bytes(), Image.open(EXAMPLE), rgb):
        got = seg.segments(other)
        assert [(e["label"], round(e["score"], 5)) for e in got] == [(e["label"], round(e["score"], 5)) for e in first]
    many = seg.segments([str(EXAMPLE), rgb])
    assert len(many) == 2 and [e["label"] for e in many[1]] == [e["label"] for e in first]
    assert [e["label"] for e in seg.segments(rgb, threshold=0.95)] == [e["label"] for e in first if e["score"] >= 0.95]
    with pytest.raises(ImageReadError, match="cannot fetch .*download it and pass the file"):
        seg.segments(url + "missing.png")


def test_lseg_segments_name_the_labels_given():
    seg = attnseg.Segmenter(attnseg.load_model("lseg-effnet-lite0-camvid"))
    got = seg.segments(str(EXAMPLE), labels=["road", "sky", "other"])
    assert {e["label"] for e in got} <= {"road", "sky", "other"} and got


def _full_resize(scores: torch.Tensor, size, via=None) -> torch.Tensor:
    """F.interpolate's bilinear resize (align_corners=False), through `via` first: the reference."""
    x = scores[None]
    if via is not None:
        x = F.interpolate(x, size=via, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("n_in, n_out, via", [(12, 301, None), (90, 360, None), (7, 3, None), (50, 50, None),
                                              (1, 9, None), (9, 1, None), (135, 360, 540), (30, 17, 90),
                                              (5, 40, 3), (1, 7, 4)])
def test_resize_taps_are_the_rows_of_the_resize_matrix(n_in, n_out, via):
    index, weight = resize_taps(n_in, n_out, via)
    a = np.zeros((n_out, n_in), np.float32)
    for t in range(index.shape[1]):
        np.add.at(a, (np.arange(n_out), index[:, t]), weight[:, t])
    ref = interp_matrix(n_in, n_out) if via is None else interp_matrix(via, n_out) @ interp_matrix(n_in, via)
    assert np.abs(a - ref.numpy()).max() < 1e-6  # F.interpolate's source positions, composed as matrices
    assert np.abs(resize_matrix(n_in, n_out, via).numpy() - ref.numpy()).max() < 1e-6
    assert (weight >= 0).all() and np.allclose(weight.sum(1), 1, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, size, via", [((11, 45, 60), (360, 480), None),
                                              ((11, 135, 180), (360, 480), (540, 720)),
                                              ((5, 12, 17), (301, 409), None), ((3, 40, 50), (100, 130), (80, 100)),
                                              ((4, 30, 40), (20, 25), None)])
def test_labels_are_the_full_resizes_argmax_wherever_a_class_leads(dtype, shape, size, via):
    g = torch.Generator().manual_seed(0)
    k, h, w = shape
    smooth = _full_resize(torch.randn(k, 5, 6, generator=g, dtype=dtype), (h, w))  # a model's, class regions
    noise = torch.randn(k, h, w, generator=g, dtype=dtype)  # a border at every pixel: the dense way
    for scores in (smooth, noise):
        full = _full_resize(scores.double(), size, via)
        top2 = full.topk(2, dim=0).values
        clear = ((top2[0] - top2[1]) > 1e-4).numpy()  # away from float ties
        ref = full.argmax(0).numpy()
        for got in (upsample_argmax(scores, size, via=via), upsample_argmax(scores, size, via=via, band_pixels=1)):
            assert got.shape == size and got.dtype == np.int32
            assert np.array_equal(got[clear], ref[clear])
    if h * w >= 1000:  # a model's map (not 12 x 17, where each border opens a wide band): mostly read as is
        assert _labels_by_taps(smooth, size, via) is not None
    assert _labels_by_taps(noise, size, via) is None


def test_labels_keep_nan_and_inf_where_the_full_resize_has_them():
    x = _full_resize(torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(0)), (20, 20))
    x[1, 3, 3] = float("nan")
    full = _full_resize(x, (80, 80))
    top2 = torch.nan_to_num(full, nan=float("-inf")).topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) > 1e-4).numpy() | full.isnan().any(0).numpy()
    got = _labels_by_taps(x, (80, 80), None)  # the NaN's window is resized; the rest read as before
    assert got is not None and np.array_equal(got[clear], full.max(0).indices.numpy()[clear])  # NaN wins
    assert (got[full.isnan().any(0).numpy()] == 1).all()
    x[2, 7, 7] = float("inf")  # scores without a finite scale: the dense way
    full = _full_resize(x, (80, 80))
    assert _labels_by_taps(x, (80, 80), None) is None
    assert np.array_equal(upsample_argmax(x, (80, 80)), full.max(0).indices.numpy())


def test_preprocess_is_the_normalised_image(seg):
    rgb = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    x, hw = seg.preprocess(rgb)
    mean, std = (torch.tensor(seg.meta[k], dtype=torch.float32) for k in ("mean", "std"))
    ref = ((torch.from_numpy(rgb.copy()).float() - mean) / std).permute(2, 0, 1)[None]
    assert hw == (360, 480) and x.is_contiguous() and torch.equal(x, ref)
