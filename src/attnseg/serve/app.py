"""The FastAPI app of `attnseg serve`: routes, request validation and error shapes only.

Models are loaded once at start (`load_models`); a request picks one of them by name and never makes the
server load anything. Every error is JSON `{"error": "..."}` naming the field, with the status the issue
fixes: 413 (upload, pixel count or working size over the limit), 415 (not an image), 422 (bad field), 503 +
Retry-After (queue full), 504 (timeout); no response carries a traceback. Every response carries an
X-Request-ID; a 500's JSON carries it too, and the server log has the traceback under that id. /metrics counts
every response, refusals by the body limit included. /docs and /redoc load their scripts from this package
(fastapi-standalone-docs), so they work offline.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..io import ImageReadError, ImageTooLarge, label_png, read_image
from ..worksize import WorkSizeError
from .batcher import Batcher, Job, Overloaded

log = logging.getLogger("attnseg.serve")  # access lines at INFO, failures with their traceback at ERROR

STATIC = Path(__file__).parent / "static"
ISR_SETTINGS = ["1,1,1,1:1,1,1", "2,1,1,1:1,1,1", "2,2,1,1:1,1,1", "1,1,1,1:2,2,2", "2,2,1,1:2,2,2",
                "2,2,2,1:2,2,2", "4,2,1,1:2,2,2", "4,4,2,1:4,2,2"]  # the isr-sweep grid; the first is "off"


@dataclass
class Settings:
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    max_batch: int = 8
    max_wait_ms: float = 0.0  # micro-batching off by default: slower on CPUs (benchmarks/serve_load.py)
    queue: int = 32
    timeout_s: float = 60.0
    max_labels: int = 64
    max_label_chars: int = 64
    cors: str | None = None


@dataclass
class ServedModel:
    name: str
    model: object
    segmenter: object  # attnseg.Segmenter: preprocessing, class names, palette
    language: bool
    isr: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    _isr_now: str | None = None

    def set_isr(self, setting: str | None) -> None:
        """Called on the worker thread only, before each batch."""
        setting = setting or (self.isr[0] if self.isr else None)
        if not self.isr or setting == self._isr_now:
            return
        from ..cli import parse_isr

        self.model.set_isr(**parse_isr(setting))
        self._isr_now = setting

    def info(self) -> dict:
        seg = self.segmenter
        return {"name": self.name, "architecture": getattr(self.model, "variant", None),
                "class_names": None if self.language else seg.class_names,
                "default_labels": getattr(self.model, "default_labels", None) if self.language else None,
                "palette": seg.palette[: len(seg.class_names or [])] if seg.class_names else seg.palette[:16],
                "language_driven": self.language, "isr": bool(self.isr), "isr_settings": self.isr,
                "working_short_side": seg.size}


def load_models(sources: list[str], backend: str = "eager", threads: int | None = None) -> dict[str, ServedModel]:
    """Load every model the server will serve (name -> ServedModel); raises ValueError naming a bad source."""
    import torch

    import attnseg
    from ..models.lseg import is_language_driven

    if threads:
        torch.set_num_threads(threads)
    out: dict[str, ServedModel] = {}
    for src in sources:
        model = attnseg.load_model(src)
        name = Path(src).stem if (Path(src).exists() and src not in attnseg.list_pretrained()) else src
        if name in out:
            raise ValueError(f"two models would be served as {name!r}; rename one of the files")
        isr = _isr_settings(model) if backend == "eager" else []
        if backend == "onnx":
            model = _to_onnx(model, threads)
        lang = is_language_driven(model)
        if lang:
            model.text_encoder.encode(["warm-up"])  # load the text encoder now, not on the first request
        out[name] = ServedModel(name, model, attnseg.Segmenter(model), lang, isr)
    return out


def _isr_settings(model) -> list[str]:
    """The grid settings this model accepts (SegFormer: encoder only, so decoder factors stay 1)."""
    if not hasattr(model, "set_isr"):
        return []
    from ..cli import parse_isr

    ok = []
    for setting in ISR_SETTINGS:
        try:
            model.set_isr(**parse_isr(setting))
            ok.append(setting)
        except ValueError:
            pass
    model.set_isr(**parse_isr(ISR_SETTINGS[0]))
    return ok


def _to_onnx(model, threads):
    import tempfile

    from ..export import OnnxModel, export_onnx

    with tempfile.TemporaryDirectory(prefix="attnseg_serve_") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        return OnnxModel(path, threads)


class _BodyTooLarge(Exception):
    pass


class Observe:
    """Outermost ASGI layer: gives each request an id (X-Request-ID), counts every response by path and status
    (refusals by the layers inside it included), writes an access line, and turns an exception that escaped
    everything else into a 500 JSON with the request id, logging the traceback under that id."""

    def __init__(self, app, count, paths: tuple[str, ...]):
        self.app, self.count, self.paths = app, count, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if re.fullmatch(r"[\w.-]{1,64}", given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        status = [500]
        t0 = time.perf_counter()

        async def tagged(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                msg = {**msg, "headers": [*msg.get("headers", []), (b"x-request-id", rid.encode())]}
                started[0] = True
            await send(msg)

        started = [False]
        try:
            await self.app(scope, receive, tagged)
        except Exception:
            log.exception("request %s %s %s failed", rid, scope.get("method"), scope.get("path"))
            status[0] = 500
            if not started[0]:
                await _send_json(send, 500, {"error": "internal error", "request_id": rid},
                                 [(b"x-request-id", rid.encode())])
        path = scope.get("path", "")
        self.count(path if path in self.paths else "other", str(status[0]))
        log.info("%s %s %s %d %.1fms", rid, scope.get("method"), path[:200], status[0],
                 (time.perf_counter() - t0) * 1000)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before it is read whole
    (Content-Length checked first; a chunked body is counted as it arrives and cut off)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = {"error": f"upload over the limit of {self.limit / 2**20:g} MB (--max-upload-mb)"}
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_json(send, 413, too_big)
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return msg

        async def tracked_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, too_big)


async def _send_json(send, status: int, body: dict, headers: list | None = None):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": data})


class APIError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers


def _labels(raw: str | None, served: ServedModel, s: Settings) -> tuple[str, ...] | None:
    if raw is None or raw == "":
        if raw == "" and served.language:
            raise APIError(422, "labels: empty; give comma-separated labels, e.g. 'sky, road, other'")
        if served.language and not getattr(served.model, "default_labels", None):
            raise APIError(422, "labels: this model needs labels, e.g. 'sky, road, other'")
        return None
    if not served.language:
        raise APIError(422, f"labels: model {served.name!r} has fixed classes; labels apply to language-driven models")
    items = [t.strip() for t in raw.split(",")]
    if any(not t for t in items):
        raise APIError(422, "labels: empty label in the list")
    if len(set(items)) != len(items):
        raise APIError(422, "labels: duplicate labels: " + ", ".join(sorted({t for t in items if items.count(t) > 1})))
    if len(items) > s.max_labels:
        raise APIError(422, f"labels: {len(items)} labels; at most {s.max_labels}")
    long = [t for t in items if len(t) > s.max_label_chars]
    if long:
        raise APIError(422, f"labels: label longer than {s.max_label_chars} characters: {long[0][:20]}...")
    return tuple(items)


def create_app(models: dict[str, ServedModel], settings: Settings | None = None) -> FastAPI:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    s = settings or Settings()
    registry = CollectorRegistry()
    m_requests = Counter("attnseg_requests", "HTTP requests by path and status", ["path", "status"],
                         registry=registry)
    m_latency = Histogram("attnseg_request_seconds", "request latency (segment)", registry=registry,
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    m_batch = Histogram("attnseg_batch_size", "requests per model batch", registry=registry,
                        buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
    batcher = Batcher(models, s.max_batch, s.max_wait_ms, s.queue, on_batch=m_batch.observe)
    Gauge("attnseg_queue_depth", "requests waiting for the model", registry=registry).set_function(batcher.depth)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()  # the worker thread ends with the server

    app = FastAPI(title="attnseg", version=__import__("attnseg").__version__, lifespan=lifespan,
                  description="Attention-based semantic segmentation: the models this server loaded, by name.",
                  docs_url=None, redoc_url=None)
    app.state.batcher, app.state.models, app.state.settings = batcher, models, s
    if s.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=[s.cors], allow_methods=["GET", "POST"])
    app.add_middleware(BodyLimit, limit=int(s.max_upload_mb * 2**20))
    app.add_middleware(Observe, count=lambda path, status: m_requests.labels(path, status).inc(),
                       paths=("/", "/api/models", "/api/segment", "/healthz", "/metrics", "/docs", "/redoc"))
    _docs_routes(app)

    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "form"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def crash(request, e: Exception):
        rid = request.scope.get("state", {}).get("request_id", "-")
        log.error("request %s %s %s failed", rid, request.method, request.url.path, exc_info=e)
        return JSONResponse({"error": "internal error", "request_id": rid}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        path = STATIC / name
        if not re.fullmatch(r"[\w.-]+", name) or not path.is_file():
            raise APIError(404, f"no such file: {name}")
        kind = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}.get(path.suffix, "text/plain")
        return FileResponse(path, media_type=kind)

    @app.get("/healthz", summary="liveness: the worker runs and the models are loaded")
    async def healthz() -> dict:
        return {"status": "ok", "models": list(models), "queue_depth": batcher.depth()}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/models", summary="the loaded models: classes, palette, typed labels, ISR settings")
    async def list_models() -> list[dict]:
        return [m.info() for m in models.values()]

    @app.post("/api/segment", summary="segment one image",
              responses={200: {"content": {"image/png": {}, "application/json": {}},
                               "description": "png: the palette label map (pixel = class/label index); json: "
                                              "class names, pixel shares, image size, latency and queue wait"},
                         413: {"description": "upload or pixel count over the limit"},
                         415: {"description": "not an image"}, 422: {"description": "a bad field"},
                         503: {"description": "queue full; retry after the Retry-After seconds"}})
    async def segment(request: Request, image: UploadFile = File(..., description="the image file"),
                      model: str = Form(..., description="one of GET /api/models' names"),
                      labels: str | None = Form(None, description="LSeg: comma-separated labels"),
                      isr: str | None = Form(None, description="ISR setting ENC:DEC from the model's isr_settings"),
                      format: str = Form("png", description="png | json"),
                      include_mask: bool = Form(False, description="json: add the label PNG as base64")):
        t0 = time.perf_counter()
        if model not in models:
            raise APIError(422, f"model: unknown model {model[:64]!r}; loaded: {', '.join(models)}")
        served = models[model]
        if format not in ("png", "json"):
            raise APIError(422, f"format: expected png or json, got {format[:16]!r}")
        if isr is not None and isr != "":
            if not served.isr:
                raise APIError(422, f"isr: model {model!r} has no spatial-reduction attention")
            if isr not in served.isr:
                raise APIError(422, f"isr: {isr[:32]!r} is not one of {', '.join(served.isr)}")
        else:
            isr = None
        form = await request.form()  # parsed once and cached: read the raw field, where "" is not "absent"
        label_tuple = _labels(form.get("labels") if "labels" in form else None, served, s)
        data = await image.read()
        try:
            rgb, x, size = await run_in_threadpool(_decode, data, image.filename or "upload", served, s.max_pixels)
        except (ImageTooLarge, WorkSizeError) as e:
            raise APIError(413, f"image: {e}") from None
        except ImageReadError as e:
            raise APIError(415, f"image: {e}") from None
        job = Job(model, x, size, label_tuple, isr)
        try:
            fut = batcher.submit(job)
        except Overloaded as e:
            raise APIError(503, str(e), {"Retry-After": "1"}) from None
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=s.timeout_s)
        except asyncio.TimeoutError:
            fut.cancel()
            raise APIError(504, f"no result within {s.timeout_s:g} s") from None
        names = list(label_tuple) if label_tuple else list(
            served.segmenter.class_names if not served.language else served.model.default_labels)
        palette = served.segmenter.palette_for(max(len(names), 1))  # the palette `attnseg predict` uses
        headers = {"X-Latency-Ms": f"{result.latency_ms:.1f}", "X-Queue-Ms": f"{result.queue_ms:.1f}",
                   "X-Batch-Size": str(result.batch_size)}
        m_latency.observe(time.perf_counter() - t0)
        png = await run_in_threadpool(_png_bytes, result.label, palette)
        if format == "png":
            return Response(png, media_type="image/png", headers=headers)
        counts = np.bincount(result.label.ravel(), minlength=len(names))
        total = result.label.size
        body = {"model": model, "width": size[1], "height": size[0], "latency_ms": round(result.latency_ms, 2),
                "queue_ms": round(result.queue_ms, 2), "batch_size": result.batch_size, "isr": isr,
                "classes": [{"index": int(i), "name": names[i] if i < len(names) else str(i),
                             "color": [int(v) for v in palette[i]], "share": round(float(counts[i]) / total, 6)}
                            for i in np.argsort(-counts, kind="stable") if counts[i] > 0]}
        if include_mask:
            body["label_png"] = base64.b64encode(png).decode()
        return JSONResponse(body, headers=headers)

    return app


def _docs_routes(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles served from this package, not a CDN."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    try:
        import fastapi_standalone_docs
    except ImportError:
        assets = None
    else:
        assets = Path(fastapi_standalone_docs.__file__).parent / "static"
    files = {"swagger-ui-bundle.js": "swagger/swagger-ui-bundle.js", "swagger-ui.css": "swagger/swagger-ui.css",
             "redoc.standalone.js": "redoc/redoc.standalone.js", "favicon.png": "fastapi/favicon.png"}

    def missing():
        return JSONResponse({"error": "the API docs need the serve extra's fastapi-standalone-docs: "
                                      "pip install 'attnseg[serve]'"}, status_code=503)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        if assets is None:
            return missing()
        return get_swagger_ui_html(openapi_url="/openapi.json", title="attnseg API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc():
        if assets is None:
            return missing()
        return get_redoc_html(openapi_url="/openapi.json", title="attnseg API",
                              redoc_js_url="/docs-assets/redoc.standalone.js",
                              redoc_favicon_url="/docs-assets/favicon.png", with_google_fonts=False)

    @app.get("/docs-assets/{name}", include_in_schema=False)
    async def docs_asset(name: str):
        if assets is None or name not in files:
            raise APIError(404, f"no such file: {name[:64]}")
        kind = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}[Path(name).suffix]
        return FileResponse(assets / files[name], media_type=kind)


def _decode(data: bytes, name: str, served: ServedModel, max_pixels: int):
    rgb = read_image(data, max_pixels=max_pixels, name=name)
    x, size = served.segmenter.preprocess(rgb)
    return rgb, x, size


def _png_bytes(label: np.ndarray, palette) -> bytes:
    buf = io.BytesIO()
    label_png(label, palette).save(buf, format="PNG")
    return buf.getvalue()
