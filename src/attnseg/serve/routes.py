"""The HTTP routes: the page, health, metrics, the model list and `POST /api/segment`.

Routes reach what the app holds through `request.app.state` (models, batcher, settings, metrics); they turn
form fields into typed values, hand the image to the batcher and shape the answer. Errors are `APIError`s,
answered as `{"error": "FIELD: ..."}` with their status by the app's handlers.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
from functools import partial
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..inference.segmenter import label_scores
from ..io import ImageReadError, ImageTooLarge, decode_bytes, encode_image, label_png, peek_image, read_image
from ..models.text import TextEncoderError, check_labels
from ..worksize import WorkSizeError
from .batcher import Job, Overloaded
from .budget import BudgetBusy, BudgetTooSmall
from .models import ServedModel
from .schemas import FORMATS, ErrorBody, SegmentJSON, SegmentResult, SegmentsResult

STATIC = Path(__file__).parent / "static"
BUDGET_WAIT_S = 10.0  # how long a request waits for its share of the memory budget before a 503
router = APIRouter()


class APIError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers


@router.get("/", include_in_schema=False)
async def index():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    return FileResponse(STATIC / "favicon.png", media_type="image/png")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str):
    path = STATIC / name
    if not re.fullmatch(r"[\w.-]+", name) or not path.is_file():
        raise APIError(404, f"no such file: {name}")
    kind = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png"}.get(path.suffix,
                                                                                                      "text/plain")
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


SEGMENT_BODIES = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary", "description": "the image file"},
        "model": {"type": "string", "description": "one of GET /api/models' names (default: the server's first)"},
        "labels": {"type": "string", "description": "LSeg: a JSON list of labels ('[\"road\", \"car, parked\"]'), "
                   "the field repeated once per label, or comma-separated labels"},
        "isr": {"type": "string", "description": "ISR setting ENC:DEC from the model's isr_settings"},
        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
        "include_mask": {"type": "boolean", "default": False}}}},
    "application/json": {"schema": SegmentJSON.model_json_schema()},
    **{kind: {"schema": {"type": "string", "format": "binary",
                         "description": "the image file itself; other fields as query parameters"}}
       for kind in ("image/png", "image/jpeg", "application/octet-stream", "image/*")}}}}


@router.get("/api/limits", summary="what a request may hold: upload size, pixels, labels")
async def limits(request: Request) -> dict:
    s = request.app.state.settings
    return {"max_upload_mb": s.max_upload_mb, "max_pixels": s.max_pixels, "max_labels": s.max_labels,
            "max_label_chars": s.max_label_chars}


@router.post("/api/segment", summary="segment one image", openapi_extra=SEGMENT_BODIES,
             responses={200: {"model": SegmentResult | SegmentsResult,
                              "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "png: the palette label map (pixel = class/label index); json: every "
                                             "class with its colour and pixel share, image size and timings; "
                                             "segments: a binary mask per label present"},
                        413: {"model": ErrorBody, "description": "upload, pixel count, working size or the memory decoding "
                                                                "needs over the limit"},
                        415: {"model": ErrorBody,
                              "description": "not an image, or a body type other than multipart, JSON or image/*"},
                        422: {"model": ErrorBody, "description": "a bad field"},
                        500: {"model": ErrorBody, "description": "a bug: logged under the request id it carries"},
                        503: {"model": ErrorBody, "description": "queue full, or the memory budget busy; retry after the "
                                                                "Retry-After seconds"},
                        504: {"model": ErrorBody, "description": "no result within the server's timeout"}})
async def segment(request: Request, model: str | None = Query(None, include_in_schema=True),
                  labels: list[str] | None = Query(None, description="raw image body: LSeg labels, repeated"),
                  isr: str | None = Query(None),
                  format: str | None = Query(None, json_schema_extra={"enum": list(FORMATS)}),
                  include_mask: bool = Query(False)):
    """The image as a multipart form (field `image`), as the raw body (`Content-Type: image/...`, other fields as
    query parameters) or as JSON (`{"image": base64, ...}`)."""
    t0 = time.perf_counter()
    st = request.app.state
    req = await _read_request(request, {"model": model, "labels": labels, "isr": isr, "format": format,
                                        "include_mask": include_mask})
    served = _served(st.models, req["model"] or next(iter(st.models)))
    fmt = req["format"] or "png"  # one default whatever the body
    if fmt not in FORMATS:
        raise APIError(422, f"format: expected {', '.join(FORMATS)}, got {str(fmt)[:16]!r}")
    isr = _isr(served, req["isr"])
    label_tuple = _labels(req["labels"], served, st.settings)
    return await run_image(request, served, req["data"], req["filename"], label_tuple, isr,
                           partial(_answer, request, served, fmt, isr, label_tuple, req, t0))


async def run_image(request: Request, served: ServedModel, data: bytes, filename: str, label_tuple, isr, shape):
    """Decode the image within the memory budget, queue it, run it, and make the answer with `shape(result,
    size)` while the budget is still held. 413/415 for what the image is, 503 when the budget stays busy."""
    st = request.app.state
    need, keep = _memory_need(data, filename, served, st.settings.max_pixels)
    try:
        async with st.budget.reserve(need, min(BUDGET_WAIT_S, st.settings.timeout_s)) as hold:
            try:
                x, size = await run_in_threadpool(_decode, data, filename, served, st.settings.max_pixels)
            except (ImageTooLarge, WorkSizeError) as e:
                raise APIError(413, f"image: {e}") from None
            except ImageReadError as e:
                raise APIError(415, f"image: {e}") from None
            hold.decoded(keep)
            result = await _run(request, Job(served.name, x, size, label_tuple, isr))
            return await shape(result, size)
    except BudgetTooSmall as e:
        raise APIError(413, f"image: {e}") from None
    except BudgetBusy as e:
        raise APIError(503, str(e), {"Retry-After": "2"}) from None


def names_and_palette(served: ServedModel, label_tuple) -> tuple[list[str], list]:
    """The names of a result's label indices and their colours (a typed label keeps its colour)."""
    names = list(label_tuple) if label_tuple else list(
        served.segmenter.class_names if not served.language else served.model.default_labels)
    palette = (served.segmenter.palette_for_labels(names) if served.language
               else served.segmenter.palette_for(max(len(names), 1)))  # the palette `attnseg predict` uses
    return names, palette


def observe(request: Request, served: ServedModel, result, t0: float) -> tuple[float, dict]:
    """Record the request's latencies in /metrics; (total seconds, the timing headers)."""
    st = request.app.state
    total = time.perf_counter() - t0
    st.metrics.latency.labels(served.name).observe(total)
    st.metrics.model_latency.labels(served.name).observe(result.latency_ms / 1000)
    return total, {"X-Latency-Ms": f"{result.latency_ms:.1f}", "X-Queue-Ms": f"{result.queue_ms:.1f}",
                   "X-Batch-Size": str(result.batch_size), "X-Total-Ms": f"{1000 * total:.1f}"}


async def _answer(request: Request, served: ServedModel, fmt: str, isr, label_tuple, req, t0: float, result, size):
    """The answer in the format asked: the label PNG, the JSON summary or the segments."""
    names, palette = names_and_palette(served, label_tuple)
    png = await run_in_threadpool(_png_bytes, result.label, palette, names) if fmt != "segments" else None
    total, headers = observe(request, served, result, t0)
    if fmt == "png":
        return Response(png, media_type="image/png", headers=headers)
    if fmt == "segments":
        body = await run_in_threadpool(_segments, served.name, size, result, names, palette, total)
        return JSONResponse(body, headers=headers)
    body = _summary(served.name, size, result, isr, names, palette, total)
    if req["include_mask"]:
        body["label_png"] = base64.b64encode(png).decode()
    return JSONResponse(body, headers=headers)


async def _read_request(request: Request, query: dict) -> dict:
    """The image bytes and the fields, from whichever of the three bodies the client sent; a client that leaves
    while it sends them is a 499 (counted, and logged as one access line)."""
    try:
        return await _read_body(request, query)
    except ClientDisconnect:
        raise APIError(499, "client closed the request") from None


async def _read_body(request: Request, query: dict) -> dict:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    out = {**query, "data": b"", "filename": "upload", "json_body": False}
    if kind == "multipart/form-data" or kind == "application/x-www-form-urlencoded":
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str):
            raise APIError(422, "image: missing; send the file as the multipart field 'image'")
        out.update(data=await image.read(), filename=image.filename or "upload")
        for key in ("model", "isr", "format"):
            if key in form:
                out[key] = str(form[key])
        if "include_mask" in form:
            out["include_mask"] = str(form["include_mask"]).lower() in ("1", "true", "yes", "on")
        if "labels" in form:
            out["labels"] = _label_field([str(v) for v in form.getlist("labels")])
    elif kind == "application/json":
        try:
            body = SegmentJSON.model_validate_json(await request.body())
        except ValidationError as e:
            err = e.errors()[0]
            raise APIError(422, f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}") from None
        image = body.image.split(",", 1)[1] if body.image.startswith("data:") else body.image
        try:
            out["data"] = base64.b64decode(image, validate=True)
        except ValueError:
            raise APIError(422, "image: not valid base64") from None
        out.update(model=body.model, isr=body.isr, format=body.format, include_mask=body.include_mask,
                   labels=body.labels, json_body=True)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        out["data"] = await request.body()
        if query["labels"] is not None:
            out["labels"] = _label_field(query["labels"])
    else:
        raise APIError(415, f"body: Content-Type {kind or 'missing'!r}; send multipart/form-data (field 'image'), "
                            "application/json ({\"image\": base64}) or the image itself (image/jpeg, image/png, ...)")
    return out


def _label_field(values: list[str]) -> list[str] | str:
    """Labels as a form or query sends them: the field repeated (one label each), one JSON list, or one
    comma-separated string."""
    if len(values) > 1:
        return values
    value = values[0] if values else ""
    if value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: lists nested thousands deep
            raise APIError(422, "labels: not a valid JSON list of strings") from None
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise APIError(422, "labels: expected a JSON list of strings")
        return parsed
    return value


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


def _labels(raw: list[str] | str | None, served: ServedModel, s) -> tuple[str, ...] | None:
    """The labels field: absent -> the model's own labels; else the one label rule (models.text.check_labels).
    A string is comma-separated; a list holds one label per item (commas inside a label stay)."""
    if raw is None or raw == "" or raw == []:
        if raw is not None and served.language:
            raise APIError(422, "labels: empty; give comma-separated labels, e.g. 'sky, road, other'")
        if served.language and not getattr(served.model, "default_labels", None):
            raise APIError(422, "labels: this model needs labels, e.g. 'sky, road, other'")
        return None
    if not served.language:
        raise APIError(422, f"labels: model {served.name!r} has fixed classes; labels apply to language-driven models")
    try:
        items = raw.split(",") if isinstance(raw, str) else raw
        return tuple(check_labels(items, max_labels=s.max_labels, max_chars=s.max_label_chars))
    except TextEncoderError as e:
        raise APIError(422, f"labels: {e}") from None


async def _run(request: Request, job: Job):
    """Queue the job and wait for it: 503 when the queue is full, 504 past the timeout. A client that goes away
    while its job waits (a page that sent a newer request) has the job dropped from the queue."""
    st = request.app.state
    try:
        fut = st.batcher.submit(job)
    except Overloaded as e:
        raise APIError(503, str(e), {"Retry-After": "1"}) from None
    waiter = asyncio.ensure_future(asyncio.wrap_future(fut))
    deadline = time.monotonic() + st.settings.timeout_s
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=min(0.1, max(deadline - time.monotonic(), 0)))
            if done:
                return waiter.result()
            if time.monotonic() >= deadline:
                fut.cancel()
                raise APIError(504, f"no result within {st.settings.timeout_s:g} s")
            if await request.is_disconnected():
                if fut.cancel():  # still queued: the batcher skips it
                    st.metrics.abandoned.inc()
                raise APIError(499, "client closed the request")
    finally:
        waiter.cancel()


def _summary(model: str, size, result, isr, names: list[str], palette, total: float) -> dict:
    counts = np.bincount(result.label.ravel(), minlength=len(names))
    total_px = result.label.size
    return {"model": model, "width": size[1], "height": size[0], "latency_ms": round(result.latency_ms, 2),
            "queue_ms": round(result.queue_ms, 2), "total_ms": round(1000 * total, 2),
            "batch_size": result.batch_size, "isr": isr,
            "classes": [{"index": int(i), "name": names[i] if i < len(names) else str(i),
                         "color": [int(v) for v in palette[i]], "share": round(float(counts[i]) / total_px, 6)}
                        for i in np.argsort(-counts, kind="stable")]}


def segment_scores(result, n: int) -> list[tuple[int, float, float]]:
    """(label index, score, pixel share) of every label present in a result (inference.segmenter.label_scores)."""
    return label_scores(result.label, result.scores, n)


def _segments(model: str, size, result, names: list[str], palette, total: float) -> dict:
    """A 1-bit PNG mask per label present, with its score, colour and share."""
    from PIL import Image

    segments = []
    for i, score, share in segment_scores(result, len(names)):
        buf = io.BytesIO()
        Image.fromarray(result.label == i).save(buf, format="PNG")  # mode "1": a 1-bit PNG
        segments.append({"label": names[i] if i < len(names) else str(i), "index": i, "score": round(score, 6),
                         "color": [int(v) for v in palette[i]], "share": round(share, 6),
                         "mask": base64.b64encode(buf.getvalue()).decode()})
    return {"model": model, "width": size[1], "height": size[0], "latency_ms": round(result.latency_ms, 2),
            "total_ms": round(1000 * total, 2), "segments": segments}


def _memory_need(data: bytes, name: str, served: ServedModel, max_pixels: int) -> tuple[int, int]:
    """(bytes to reserve before decoding, bytes still held after it) from the image's header: decoding (the image,
    its RGB copy), the tensor at the working size and the full-size label map and its PNG."""
    try:
        w, h, mode = peek_image(data, max_pixels=max_pixels, name=name)
        wh, ww = served.segmenter.working_size(h, w)
    except (ImageTooLarge, WorkSizeError) as e:
        raise APIError(413, f"image: {e}") from None
    except ImageReadError as e:
        raise APIError(415, f"image: {e}") from None
    keep = 16 * wh * ww + 6 * w * h  # float32 input and its scores' share; int32 label map and its PNG
    return decode_bytes(w, h, mode) + keep, keep


def _decode(data: bytes, name: str, served: ServedModel, max_pixels: int):
    return served.segmenter.preprocess(read_image(data, max_pixels=max_pixels, name=name))


def _png_bytes(label: np.ndarray, palette, names: list[str]) -> bytes:
    return encode_image(label_png(label, palette, names), "PNG")
