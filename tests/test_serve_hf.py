"""Hugging Face's image-segmentation protocol at /hf/{model}: the real `huggingface_hub.InferenceClient` against
`attnseg serve` (a path, bytes, and parameters), its masks disjoint, covering the image and equal to the label map
`attnseg predict` writes; and the protocol's edges through FastAPI's test client."""
import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import free_port, wait_until_up

pytest.importorskip("fastapi")
hub = pytest.importorskip("huggingface_hub")
from fastapi.testclient import TestClient  # noqa: E402

from attnseg.cli import main  # noqa: E402
from attnseg.serve.app import Settings, create_app, load_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((ROOT / "examples").glob("camvid_test_*.png"))[0]
SHIPPED = "sanet-effnet-lite0-camvid"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """The label map and class names `attnseg predict --backend eager` writes for the example."""
    out = tmp_path_factory.mktemp("pred")
    assert main(["predict", str(EXAMPLE), "--model", SHIPPED, "--backend", "eager", "--out", str(out)]) == 0
    with Image.open(out / f"{EXAMPLE.stem}.png") as im:
        names = json.loads(im.info["attnseg"])["classes"]
        return np.asarray(im), names


def check_elements(elements, label, names):
    masks = [np.asarray(e.mask) for e in elements]
    assert all(e.mask.mode == "L" and e.mask.size == (label.shape[1], label.shape[0]) for e in elements)
    assert all(set(np.unique(m)) <= {0, 255} for m in masks)
    stacked = np.stack([m == 255 for m in masks])
    assert (stacked.sum(0) == 1).all()  # disjoint, and together they cover the image
    for e, m in zip(elements, stacked):
        assert np.array_equal(m, label == names.index(e.label)), e.label
    assert 0 < min(e.score for e in elements) and max(e.score for e in elements) <= 1


@pytest.mark.slow
@pytest.mark.e2e
def test_the_huggingface_client_against_attnseg_serve(predicted, tmp_path):
    label, names = predicted
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "attnseg.cli", "serve", "--port", str(port), "--backend", "eager",
                             "--model", SHIPPED], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/readyz", proc)
        client = hub.InferenceClient(model=f"http://127.0.0.1:{port}/hf/{SHIPPED}")
        from_path = client.image_segmentation(str(EXAMPLE))
        check_elements(from_path, label, names)
        from_bytes = client.image_segmentation(EXAMPLE.read_bytes())
        assert [(e.label, e.score) for e in from_bytes] == [(e.label, e.score) for e in from_path]
        check_elements(from_bytes, label, names)
        kept = client.image_segmentation(EXAMPLE.read_bytes(), threshold=0.95, subtask="semantic")  # parameters
        assert [e.label for e in kept] == [e.label for e in from_path if e.score >= 0.95]
        assert 0 < len(kept) < len(from_path)
        default = hub.InferenceClient(model=f"http://127.0.0.1:{port}/hf").image_segmentation(str(EXAMPLE))
        assert [e.label for e in default] == [e.label for e in from_path]  # /hf: the server's first model
    finally:
        proc.terminate()
        err = proc.communicate(timeout=20)[1]
    assert "Traceback" not in err, err[-2000:]


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(load_models(["lseg-effnet-lite0-camvid", SHIPPED], backend="eager"),
                               Settings(max_pixels=4_000_000))) as c:
        yield c


def test_json_inputs_parameters_and_refusals(client):
    b64 = base64.b64encode(EXAMPLE.read_bytes()).decode()
    r = client.post("/hf/lseg-effnet-lite0-camvid", json={"inputs": b64, "parameters": {"labels": ["road", "sky",
                                                                                                    "other"]}})
    assert r.status_code == 200, r.text
    assert {e["label"] for e in r.json()} <= {"road", "sky", "other"}
    mask = Image.open(io.BytesIO(base64.b64decode(r.json()[0]["mask"])))
    assert mask.mode == "L" and mask.size == (480, 360)
    no_type = client.post(f"/hf/{SHIPPED}", content=EXAMPLE.read_bytes(), headers={"Content-Type": ""})
    assert no_type.status_code == 200 and isinstance(no_type.json(), list)  # identified by its bytes
    for body, want in [({"inputs": "https://example.org/x.jpg"}, "fetches nothing"),
                       ({"inputs": "!!"}, "not valid base64"), ({"image": b64}, "inputs: missing"),
                       ({"inputs": b64, "parameters": {"threshold": 2}}, "threshold"),
                       ({"inputs": b64, "parameters": {"subtask": "panoptic"}}, "semantic segmentation only"),
                       ({"inputs": b64, "parameters": {"top_k": 1}}, "unknown top_k")]:
        r = client.post(f"/hf/{SHIPPED}", json=body)
        assert r.status_code == 422 and want in r.json()["error"], (body, r.text)
    assert client.post("/hf/nope", content=EXAMPLE.read_bytes()).status_code == 422
    assert client.post(f"/hf/{SHIPPED}", content=b"not an image").status_code == 415
    spec = client.get("/openapi.json").json()
    assert "/hf/{model}" in spec["paths"] and "application/json" in spec["paths"]["/hf/{model}"]["post"]["requestBody"]["content"]


def test_the_page_has_a_favicon(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (32, 32)
    assert 'rel="icon"' in client.get("/").text
