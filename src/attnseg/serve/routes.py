"""The HTTP routes: the page, health, metrics, the model list and `POST /api/segment`.

Routes reach what the app holds through `request.app.state` (models, batcher, settings, metrics); they turn
form fields into typed values, hand the image to the batcher and shape the answer. Errors are `APIError`s,
answered as `{"error": "FIELD: ..."}` with their status by the app's handlers.
"""
from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..io import ImageReadError, ImageTooLarge, label_png, read_image
from ..models.text import TextEncoderError, check_labels
from ..worksize import WorkSizeError
from .batcher import Job, Overloaded
from .models import ServedModel

STATIC = Path(__file__).parent / "static"
router = APIRouter()


class APIError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers


@router.get("/", include_in_schema=False)
async def index():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str):
    path = STATIC / name
    if not re.fullmatch(r"[\w.-]+", name) or not path.is_file():
        raise APIError(404, f"no such file: {name}")
    kind = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}.get(path.suffix, "text/plain")
    return FileResponse(path, media_type=kind)


@router.get("/healthz", summary="liveness: the worker runs and the models are loaded")
async def healthz(request: Request) -> dict:
    st = request.app.state
    return {"status": "ok", "models": list(st.models), "queue_depth": st.batcher.depth()}


@router.get("/readyz", summary="readiness: every model loaded and warmed up (503 until then)")
async def readyz(request: Request):
    st = request.app.state
    if not getattr(st, "ready", False):
        return JSONResponse({"error": "warming up"}, status_code=503, headers={"Retry-After": "1"})
    return {"status": "ready", "models": list(st.models)}


@router.get("/version", summary="versions of attnseg and its runtime, and what each model runs on")
async def version(request: Request) -> dict:
    import platform

    import torch

    from .. import __version__

    return {"attnseg": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "models": {name: {"backend": getattr(m.model, "backend", "eager"),
                              "precision": getattr(m.model, "precision", "fp32")}
                       for name, m in request.app.state.models.items()}}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request):
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/models", summary="the loaded models: classes, palette, typed labels, ISR settings")
async def list_models(request: Request) -> list[dict]:
    return [m.info() for m in request.app.state.models.values()]


@router.post("/api/segment", summary="segment one image",
             responses={200: {"content": {"image/png": {}, "application/json": {}},
                              "description": "png: the palette label map (pixel = class/label index); json: "
                                             "class names, pixel shares, image size, latency and queue wait"},
                        413: {"description": "upload, pixel count or working size over the limit"},
                        415: {"description": "not an image"}, 422: {"description": "a bad field"},
                        503: {"description": "queue full; retry after the Retry-After seconds"}})
async def segment(request: Request, image: UploadFile = File(..., description="the image file"),
                  model: str = Form(..., description="one of GET /api/models' names"),
                  labels: str | None = Form(None, description="LSeg: comma-separated labels"),
                  isr: str | None = Form(None, description="ISR setting ENC:DEC from the model's isr_settings"),
                  format: str = Form("png", description="png | json"),
                  include_mask: bool = Form(False, description="json: add the label PNG as base64")):
    t0 = time.perf_counter()
    st = request.app.state
    served = _served(st.models, model)
    if format not in ("png", "json"):
        raise APIError(422, f"format: expected png or json, got {format[:16]!r}")
    isr = _isr(served, isr)
    form = await request.form()  # parsed once and cached: read the raw field, where "" is not "absent"
    label_tuple = _labels(form.get("labels") if "labels" in form else None, served, st.settings)
    data = await image.read()
    try:
        x, size = await run_in_threadpool(_decode, data, image.filename or "upload", served, st.settings.max_pixels)
    except (ImageTooLarge, WorkSizeError) as e:
        raise APIError(413, f"image: {e}") from None
    except ImageReadError as e:
        raise APIError(415, f"image: {e}") from None
    result = await _run(st, Job(model, x, size, label_tuple, isr))
    names = list(label_tuple) if label_tuple else list(
        served.segmenter.class_names if not served.language else served.model.default_labels)
    palette = served.segmenter.palette_for(max(len(names), 1))  # the palette `attnseg predict` uses
    headers = {"X-Latency-Ms": f"{result.latency_ms:.1f}", "X-Queue-Ms": f"{result.queue_ms:.1f}",
               "X-Batch-Size": str(result.batch_size)}
    st.metrics.latency.observe(time.perf_counter() - t0)
    png = await run_in_threadpool(_png_bytes, result.label, palette)
    if format == "png":
        return Response(png, media_type="image/png", headers=headers)
    body = _summary(model, size, result, isr, names, palette)
    if include_mask:
        body["label_png"] = base64.b64encode(png).decode()
    return JSONResponse(body, headers=headers)


def _served(models: dict[str, ServedModel], name: str) -> ServedModel:
    if name not in models:
        raise APIError(422, f"model: unknown model {name[:64]!r}; loaded: {', '.join(models)}")
    return models[name]


def _isr(served: ServedModel, isr: str | None) -> str | None:
    if isr is None or isr == "":
        return None
    if not served.isr:
        raise APIError(422, f"isr: model {served.name!r} has no spatial-reduction attention")
    if isr not in served.isr:
        raise APIError(422, f"isr: {isr[:32]!r} is not one of {', '.join(served.isr)}")
    return isr


def _labels(raw: str | None, served: ServedModel, s) -> tuple[str, ...] | None:
    """The labels field: absent -> the model's own labels; else the one label rule (models.text.check_labels)."""
    if raw is None or raw == "":
        if raw == "" and served.language:
            raise APIError(422, "labels: empty; give comma-separated labels, e.g. 'sky, road, other'")
        if served.language and not getattr(served.model, "default_labels", None):
            raise APIError(422, "labels: this model needs labels, e.g. 'sky, road, other'")
        return None
    if not served.language:
        raise APIError(422, f"labels: model {served.name!r} has fixed classes; labels apply to language-driven models")
    try:
        return tuple(check_labels(raw.split(","), max_labels=s.max_labels, max_chars=s.max_label_chars))
    except TextEncoderError as e:
        raise APIError(422, f"labels: {e}") from None


async def _run(st, job: Job):
    """Queue the job and wait for it: 503 when the queue is full, 504 past the timeout."""
    try:
        fut = st.batcher.submit(job)
    except Overloaded as e:
        raise APIError(503, str(e), {"Retry-After": "1"}) from None
    try:
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout=st.settings.timeout_s)
    except asyncio.TimeoutError:
        fut.cancel()
        raise APIError(504, f"no result within {st.settings.timeout_s:g} s") from None


def _summary(model: str, size, result, isr, names: list[str], palette) -> dict:
    counts = np.bincount(result.label.ravel(), minlength=len(names))
    total = result.label.size
    return {"model": model, "width": size[1], "height": size[0], "latency_ms": round(result.latency_ms, 2),
            "queue_ms": round(result.queue_ms, 2), "batch_size": result.batch_size, "isr": isr,
            "classes": [{"index": int(i), "name": names[i] if i < len(names) else str(i),
                         "color": [int(v) for v in palette[i]], "share": round(float(counts[i]) / total, 6)}
                        for i in np.argsort(-counts, kind="stable") if counts[i] > 0]}


def _decode(data: bytes, name: str, served: ServedModel, max_pixels: int):
    return served.segmenter.preprocess(read_image(data, max_pixels=max_pixels, name=name))


def _png_bytes(label: np.ndarray, palette) -> bytes:
    buf = io.BytesIO()
    label_png(label, palette).save(buf, format="PNG")
    return buf.getvalue()
