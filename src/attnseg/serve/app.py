"""The FastAPI app of `attnseg serve`: `create_app(models, settings)` wires the routes, the error handlers,
the metrics and the ASGI layers; `load_models` (serve.models) loads what it serves.

Models are loaded once at start; a request picks one of them by name and never makes the server load anything.
Every error is JSON `{"error": "..."}` naming the field, with a fixed status: 413 (upload, pixel
count, working size or memory need over the limit), 415 (not an image), 422 (bad field), 503 + Retry-After
(queue full, or the memory budget busy past its wait), 504 (timeout); no response carries a traceback. Every response carries an X-Request-ID; a 500's JSON carries
it too, and the server log has the traceback under that id. /metrics counts every response, refusals by the
body limit included. /docs and /redoc load their scripts from this package (fastapi-standalone-docs), so they
work offline.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import Batcher
from .budget import MemoryBudget
from .limits import BodyLimit, Observe, log
from .models import ServedModel, load_models  # noqa: F401 (the app's public names)
from .hf import router as hf_router
from .routes import STATIC, APIError, router  # noqa: F401


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
    memory_mb: float = 2048.0  # decoding and queued work of all requests together (serve.budget)
    decode_slots: int = 2  # images decoded at once
    replica: str | None = None  # a Ray Serve replica's id: sent as X-Attnseg-Replica and in /metrics


class Metrics:
    """The Prometheus registry of one app: requests by path and status, segment latency, batch sizes, queue."""

    PATHS = ("/", "/favicon.ico", "/api/models", "/api/limits", "/api/segment", "/hf", "/hf/{model}", "/healthz", "/readyz", "/version",
             "/metrics", "/docs", "/redoc")

    def __init__(self, batcher_depth, replica: str | None = None):
        from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector,
                                       ProcessCollector)

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        PlatformCollector(registry=self.registry)
        self.requests = Counter("attnseg_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=self.registry)
        self.latency = Histogram("attnseg_request_seconds", "segment request latency (decode, queue, model, encode)",
                                 ["model"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.model_latency = Histogram("attnseg_model_seconds", "model forward time per request", ["model"],
                                       registry=self.registry,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.abandoned = Counter("attnseg_abandoned", "queued requests dropped because their client had gone",
                                 registry=self.registry)
        self.batch = Histogram("attnseg_batch_size", "requests per model batch", registry=self.registry,
                               buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
        self.depth = Gauge("attnseg_queue_depth", "requests waiting for the model", registry=self.registry)
        self.depth.set_function(batcher_depth)
        if replica:  # which replica's numbers these are (each Ray Serve replica keeps its own registry)
            Gauge("attnseg_replica", "the Ray Serve replica that answered /metrics", ["replica"],
                  registry=self.registry).labels(replica).set(1)

    def count(self, path: str, status: str) -> None:
        self.requests.labels(path, status).inc()


def create_app(models: dict[str, ServedModel], settings: Settings | None = None) -> FastAPI:
    s = settings or Settings()
    batcher = Batcher(models, s.max_batch, s.max_wait_ms, s.queue)
    budget = MemoryBudget(int(s.memory_mb * 2**20), s.decode_slots)
    metrics = Metrics(batcher.depth, s.replica)
    batcher.on_batch = metrics.batch.observe

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.ready = False
        await run_in_threadpool(_warm_up, models)  # the first request is not the cold one
        app.state.ready = True
        yield
        batcher.close()  # the worker thread ends with the server

    app = FastAPI(title="attnseg", version=__import__("attnseg").__version__, lifespan=lifespan,
                  description="Attention-based semantic segmentation: the models this server loaded, by name.",
                  docs_url=None, redoc_url=None)
    app.state.batcher, app.state.models, app.state.settings, app.state.metrics = batcher, models, s, metrics
    app.state.budget = budget
    app.add_middleware(BodyLimit, limit=int(s.max_upload_mb * 2**20))
    app.add_middleware(Observe, count=metrics.count, paths=Metrics.PATHS,
                       headers=[(b"x-attnseg-replica", s.replica.encode())] if s.replica else None,
                       tag_id=not s.replica)  # Ray Serve's proxy sends the request id it gave (and we adopted)
    if s.cors:  # added last: the outermost layer, so every answer carries it (a 413, Observe's own 500)
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=[s.cors], allow_methods=["GET", "POST"])
    _error_handlers(app)
    app.include_router(router)
    app.include_router(hf_router)
    _docs_routes(app)
    _typed_models(app, list(models))
    return app


def _typed_models(app: FastAPI, names: list[str]) -> None:
    """The schema names the loaded models: `model` is an enum of them wherever a request gives it."""
    from fastapi.openapi.utils import get_openapi

    def openapi():
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            op = spec["paths"]["/api/segment"]["post"]
            fields = [p["schema"] for p in op.get("parameters", []) if p["name"] == "model"]
            for body in op["requestBody"]["content"].values():
                fields += [body["schema"].get("properties", {}).get("model")]
            for f in fields:
                if f is not None and names:
                    f.pop("anyOf", None)
                    f.update(type="string", enum=names)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi


def _warm_up(models: dict[str, ServedModel]) -> None:
    """One forward pass per model at its working size (allocations, kernels, LSeg's label embeddings)."""
    import numpy as np

    for served in models.values():
        seg = served.segmenter
        side = seg.size or 64
        image = np.zeros((side, side * 4 // 3, 3), np.uint8)
        try:
            with served.lock:
                seg.predict(image)
        except Exception:  # a model that cannot warm up still serves; its first request will say what is wrong
            log.warning("warm-up of %s failed", served.name, exc_info=True)


def _error_handlers(app: FastAPI) -> None:
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

    # an exception that escapes the routes reaches Observe (limits.py): logged under its request id, answered 500


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

