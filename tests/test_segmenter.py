"""`Segmenter.segments`: the shape transformers' image-segmentation pipeline returns, for every kind of input a
user has (path, URL, bytes, PIL, numpy, a list), equal to `predict`'s label map."""
import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import attnseg
from attnseg.io import ImageReadError

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
